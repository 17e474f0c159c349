//! The batch program an engine runs: the SQL back end's output (`cdp_compiler::sql`), output
//! tables built by `CREATE TABLE AS` statements and loops re-run until a convergence query counts
//! no more changes. The runtime executes it; it never rewrites the SQL.

pub use cdp_compiler::sql::{compile, Dialect, Program, Statement, Step};
