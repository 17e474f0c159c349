//! End-to-end tests: one test binary, one module per area.

mod bench_project;
mod browser;
mod cli;
mod conformance;
mod corpus;
mod demo;
mod engines;
mod identity;
mod no_panic;
mod profile;
mod registry;
mod rejects;
mod run;
mod serve;
mod stream;
mod support;
mod tracking;
mod training_set;
mod trino;
