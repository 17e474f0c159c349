//! End-to-end tests: one test binary, one module per area.

mod bench_project;
mod cli;
mod corpus;
mod no_panic;
