//! The `cdp` command-line tool as a library: the commands behind `src/main.rs`, and the
//! synthetic project that the compile benchmark and the end-to-end tests share.

pub mod cli;
pub mod synthetic;
