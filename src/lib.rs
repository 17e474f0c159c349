//! The `cdp` command-line tool as a library: the commands behind `src/main.rs`, and the
//! synthetic project that the compile benchmark and the end-to-end tests share.

pub mod allocator;
pub mod cli;
pub mod demo;
pub mod serve;
/// The generated benchmark project lives in the compiler crate (its benchmark needs no engine).
pub use cdp_compiler::synthetic;
