//! The cdp language front end: grammar, syntax tree with spans, parser, diagnostics, formatter.
//!
//! This crate knows nothing of SQL or engines; the compiler reads what it produces.

pub mod ast;
pub mod diag;
pub mod format;
pub mod parser;
pub mod span;
#[cfg(test)]
mod testgen;

pub use diag::{Diagnostic, Severity};
pub use format::{format_source, print_file};
pub use parser::{parse_file, Parsed};
pub use span::{FileId, SourceMap, Span};
