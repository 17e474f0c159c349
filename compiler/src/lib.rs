//! The cdp compiler: checks a project (names, types, dependencies, journeys) and, in later
//! stages, lowers it to the IR that the SQL and streaming back ends read.
//!
//! Stages, each callable on its own: [`load_project`] → [`check`] → (IR, back ends).

pub mod check;
pub mod config;
pub mod graph;
pub mod ir;
pub mod journey;
pub mod lower;
pub mod pii;
pub mod project;
pub mod sql;
pub mod stream;
pub mod synthetic;
pub mod types;

pub use check::{check, Checked};
pub use graph::{DepGraph, GraphFormat};
pub use lower::{lower, LowerError};
pub use project::{load_project, project_from_texts, LoadError, ProjectSources};
