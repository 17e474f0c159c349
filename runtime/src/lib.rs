//! Executes compiled cdp plans. Today: the embedded batch engine ([`batch`]) that loads a
//! project's sources with their declared types ([`load`], [`schema`]) and runs a compiled SQL
//! [`Program`] on Apache DataFusion as a workflow ([`workflow`]), with identity resolved natively
//! ([`identity`], [`native`]), committing to the offline store ([`store`]).

pub mod activate;
pub mod batch;
pub mod error;
pub mod eventlog;
pub mod history;
pub mod identity;
pub mod load;
pub mod native;
pub mod online;
pub mod program;
pub mod schema;
pub mod stats;
pub mod store;
pub mod stream;
pub mod tracking;
pub mod transitions;
pub mod webhook;
pub mod workflow;

pub use batch::{BatchEngine, RunReport, StepDone, Table};
pub use error::{Error, Result};
pub use load::SourceFiles;
pub use program::{Dialect, Program, Statement, Step};
