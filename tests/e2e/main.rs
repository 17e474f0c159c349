//! End-to-end tests: one test binary, one module per area.

mod bench_project;
mod cli;
mod conformance;
mod corpus;
mod demo;
mod engines;
mod identity;
mod no_panic;
mod run;
mod training_set;
mod trino;
