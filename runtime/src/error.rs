//! The runtime's errors, by whose fault they are: the user's data or configuration, the SQL the
//! compiler produced (or a feature the engine lacks), or a bug of the runtime itself.

use std::fmt;
use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Where one bad value sits in a data file.
#[derive(Debug, Clone, PartialEq)]
pub struct BadValue {
    /// 1-based line of the record (CSV, JSON-lines) or 1-based row (Parquet).
    pub line: u64,
    pub column: String,
    /// The offending text, cut to a readable length.
    pub value: String,
    pub problem: String,
}

#[derive(Debug)]
pub enum Error {
    /// A data file could not be read at all (missing, unreadable, not the declared format).
    File { path: PathBuf, message: String },
    /// Rows of a data file do not fit the source's declared columns. Nothing was loaded.
    BadRows {
        source: String,
        path: PathBuf,
        /// Up to a handful of examples, in file order.
        examples: Vec<BadValue>,
        /// How many rows are bad in total.
        count: u64,
        /// Whether the lines are Parquet row numbers rather than text lines.
        rows_not_lines: bool,
    },
    /// The project's configuration does not say where a source's data is.
    Config(String),
    /// The engine rejected or failed a statement of the program (a compiler bug, or a feature the
    /// engine lacks): names the table being built and carries the statement.
    Sql {
        table: Option<String>,
        sql: String,
        message: String,
    },
    /// A loop reached its round limit while its convergence query still counted changes.
    NotConverged { rounds: u32, last_changes: i64 },
    /// A convergence query did not return one row with one integer.
    BadConvergenceQuery { sql: String, message: String },
    /// A table that the caller asked for does not exist.
    NoSuchTable(String),
    /// A bug in the runtime.
    Internal(String),
    /// A workflow step still failed after its retries.
    StepFailed {
        step: String,
        attempts: u32,
        cause: Box<Error>,
    },
    /// An output table failed a check (duplicate keys, missing values).
    CheckFailed { table: String, message: String },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::File { path, message } => write!(f, "{}: {message}", path.display()),
            Error::BadRows {
                source,
                path,
                examples,
                count,
                rows_not_lines,
            } => {
                let what = if *rows_not_lines { "row" } else { "line" };
                let plural = if *count == 1 { "" } else { "s" };
                write!(
                    f,
                    "{}: {count} row{plural} of source `{source}` do not fit its declared columns; nothing was loaded",
                    path.display()
                )?;
                for e in examples {
                    write!(
                        f,
                        "\n  {}:{what} {}: column `{}`: {} (found {:?})",
                        path.display(),
                        e.line,
                        e.column,
                        e.problem,
                        e.value
                    )?;
                }
                if (examples.len() as u64) < *count {
                    write!(f, "\n  … and {} more", *count - examples.len() as u64)?;
                }
                Ok(())
            }
            Error::Config(m) => f.write_str(m),
            Error::Sql {
                table,
                sql,
                message,
            } => {
                match table {
                    Some(t) => write!(f, "building table `{t}` failed: {message}")?,
                    None => write!(f, "query failed: {message}")?,
                }
                write!(f, "\n  statement: {}", one_line(sql, 400))
            }
            Error::NotConverged {
                rounds,
                last_changes,
            } => write!(
                f,
                "loop did not converge in {rounds} rounds ({last_changes} changes in the last round)"
            ),
            Error::BadConvergenceQuery { sql, message } => write!(
                f,
                "convergence query must return one row with one integer: {message}\n  statement: {}",
                one_line(sql, 400)
            ),
            Error::NoSuchTable(t) => write!(f, "no table `{t}`"),
            Error::Internal(m) => write!(f, "internal error (a bug in cdp): {m}"),
            Error::StepFailed {
                step,
                attempts,
                cause,
            } => write!(
                f,
                "step `{step}` failed after {attempts} attempt{}: {cause}",
                if *attempts == 1 { "" } else { "s" }
            ),
            Error::CheckFailed { table, message } => {
                write!(f, "check of table `{table}` failed: {message}")
            }
        }
    }
}

impl std::error::Error for Error {}

/// The text on one line, cut to `max` characters, for messages.
pub(crate) fn one_line(text: &str, max: usize) -> String {
    let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() <= max {
        flat
    } else {
        let cut: String = flat.chars().take(max).collect();
        format!("{cut}…")
    }
}
