//! The batch program a SQL back end hands to an engine: output tables built by `CREATE TABLE AS`
//! statements, and loops re-run until a convergence query counts no more changes.
//!
//! These are the types of the compiler's SQL back end contract; the runtime only executes them.

/// One output table: `sql` is a complete `CREATE TABLE <table> AS …` statement in the dialect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    pub table: String,
    pub sql: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Create(Statement),
    /// Re-run `body` until `converged` (a query returning one row, one integer column: the number
    /// of changes in the last round) returns 0, at most `max_rounds` times.
    Loop {
        body: Vec<Statement>,
        converged: String,
        max_rounds: u32,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Program {
    pub steps: Vec<Step>,
}
