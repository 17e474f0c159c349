//! The command line: argument parsing, dispatch to one module per command, and exit codes.
//!
//! Commands write to the `out`/`err` they are given rather than to the process's streams, so
//! that a closed pipe (`cdp graph | head`) is an ordinary write error and tests can run them
//! in process.

mod check;
mod compile;
mod demo;
mod fmt;
mod graph;
mod init;
mod profile;
mod registry;
mod run;
mod serve;
mod stream;
mod training_set;

use std::ffi::OsString;
use std::io::{self, Write};
use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

/// Everything was fine (warnings allowed).
pub const EXIT_OK: u8 = 0;
/// The user's input is wrong: a bad project, a bad argument, a file that would change under
/// `fmt --check`.
pub const EXIT_USER: u8 = 1;
/// cdp itself failed: a bug, or the machine refused something cdp needed.
pub const EXIT_INTERNAL: u8 = 2;

#[derive(Debug, Parser)]
#[command(
    name = "cdp",
    version,
    about = "A customer data platform built like a feature store: one definition, the same numbers everywhere.",
    arg_required_else_help = true
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create a new project (sources with sample data, an entity, features, a segment).
    Init {
        /// Directory to create; it must not exist or be empty.
        dir: PathBuf,
    },
    /// Check a project and report every problem in every file.
    Check {
        /// Project directory (holding cdp.toml and .cdp files).
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// `text` for people, `json` (one array of diagnostics on stdout) for editors.
        #[arg(long, value_enum, default_value_t = DiagnosticFormat::Text)]
        format: DiagnosticFormat,
    },
    /// Format every .cdp file of a project in place.
    Fmt {
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// Change nothing; list the files that are not formatted and exit 1 if there are any.
        #[arg(long)]
        check: bool,
    },
    /// Print the dependency graph of a project's definitions.
    Graph {
        #[arg(default_value = ".")]
        dir: PathBuf,
        #[arg(long, value_enum, default_value_t = GraphFormat::Text)]
        format: GraphFormat,
    },
    /// Print the SQL of a project in one dialect (or write it, one file per table).
    Compile {
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// datafusion, trino, spark, postgres or duckdb.
        #[arg(long, default_value = "datafusion")]
        dialect: String,
        /// The as-of time, `YYYY-MM-DD[ HH:MM:SS]` (default: the project's `as_of`, else now).
        #[arg(long)]
        as_of: Option<String>,
        /// Write one file per statement (and program.json) into this directory.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Only the statements that implement this definition.
        #[arg(long)]
        only: Option<String>,
    },
    /// Print the order of the batch program, or with --streaming the streaming operator graph.
    Plan {
        #[arg(default_value = ".")]
        dir: PathBuf,
        #[arg(long)]
        streaming: bool,
    },
    /// Run the project on the embedded engine and commit its outputs to the offline store.
    Run {
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// The as-of time, `YYYY-MM-DD[ HH:MM:SS]` (default: the project's `as_of`, else now).
        #[arg(long)]
        as_of: Option<String>,
        /// Extra attempts of a failing step before the run stops.
        #[arg(long, default_value_t = 2)]
        retries: u32,
        /// `native`: identity by union-find in Rust; `sql`: the compiled SQL program's rounds.
        #[arg(long, value_enum, default_value_t = run::Identity::Native)]
        identity: run::Identity,
    },
    /// Write a demo project with generated data (retail definitions), run it, say what's next.
    Demo {
        /// Where to write it (run again: the project there is run once more).
        #[arg(default_value = "cdp-demo")]
        dir: PathBuf,
        /// People to generate (identity resolution finds about this many profiles).
        #[arg(long, default_value_t = 100_000)]
        profiles: usize,
        /// Rows of the event sources together (orders, web and email events), approximately.
        #[arg(long, default_value_t = 2_000_000)]
        events: usize,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Then record the definitions in the registry and serve it (pages and API).
        #[arg(long)]
        serve: bool,
        /// Where `--serve` listens.
        #[arg(long, default_value = "127.0.0.1:8080")]
        addr: String,
    },
    /// Serve the registry: web pages and the JSON API (with online features) of a project.
    Serve {
        #[arg(default_value = ".")]
        dir: PathBuf,
        #[arg(long, default_value = "127.0.0.1:8080")]
        addr: String,
    },
    /// Manage the API keys `cdp serve` checks.
    Keys {
        #[command(subcommand)]
        action: KeysAction,
    },
    /// Point-in-time features for each (key, ts) row of a spine file, as Parquet or CSV.
    TrainingSet {
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// A .csv, .parquet or .jsonl file with a column named after an identity key and `ts`.
        #[arg(long)]
        spine: PathBuf,
        /// The entity (needed when the project has several).
        #[arg(long)]
        entity: Option<String>,
        /// Identity as of this time, `YYYY-MM-DD[ HH:MM:SS]` (default: the project's `as_of`).
        #[arg(long)]
        as_of: Option<String>,
        /// Write here (`.parquet`, else CSV) instead of CSV on stdout.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Record the project's definitions in the registry as a new snapshot, after showing the plan.
    Apply {
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// Why: kept with the snapshot.
        #[arg(short, long)]
        message: Option<String>,
        /// Who (default: `git config user.name`, else $USER).
        #[arg(long)]
        author: Option<String>,
        /// Apply without asking (without a terminal, cdp never asks).
        #[arg(long)]
        yes: bool,
    },
    /// Show what `cdp apply` would record: added, changed (with diffs) and removed definitions.
    Diff {
        #[arg(default_value = ".")]
        dir: PathBuf,
    },
    /// List the versions of one definition in the registry.
    History {
        name: String,
        #[arg(long, default_value = ".")]
        dir: PathBuf,
    },
    /// Write an old version of a definition back into the project and apply it.
    Rollback {
        name: String,
        version: u32,
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        #[arg(short, long)]
        message: Option<String>,
        /// Who (default: `git config user.name`, else $USER).
        #[arg(long)]
        author: Option<String>,
    },
    /// Show one profile from the online store: identity keys, attributes, features, segments,
    /// journey positions, as of the last committed run.
    Profile {
        /// `key=value` (e.g. `email=ana@example.com`, normalized as the entity declares),
        /// `canonical_id=…`, or a bare value tried against every key and canonical id.
        key: String,
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        #[arg(long, value_enum, default_value_t = profile::Format::Text)]
        format: profile::Format,
    },
    /// Replay a file of Segment-format events (JSON lines, each with its `type`) into the
    /// project's durable event log, as the tracking API (`/v1/batch`) would take them.
    Stream {
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// The JSON-lines file of events.
        #[arg(long)]
        from: PathBuf,
    },
    /// Fails on purpose, so that tests see what a user sees when cdp has a bug.
    #[command(hide = true)]
    InternalPanic,
}

#[derive(Debug, Subcommand)]
enum KeysAction {
    /// Make a key; it is printed once.
    Add {
        name: String,
        #[arg(long, value_enum, default_value_t = KeyRole::Read)]
        role: KeyRole,
        /// The key may see values that show personal data.
        #[arg(long)]
        pii: bool,
        #[arg(long, default_value = ".")]
        dir: PathBuf,
    },
    /// List keys (names, roles, rights; never the keys).
    List {
        #[arg(long, default_value = ".")]
        dir: PathBuf,
    },
    /// Revoke a key.
    Revoke {
        name: String,
        #[arg(long, default_value = ".")]
        dir: PathBuf,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum KeyRole {
    /// Only sends events to the tracking API (`/v1/track`, …): the key for websites and apps.
    Write,
    Read,
    Admin,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum DiagnosticFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum GraphFormat {
    Text,
    Dot,
    Mermaid,
}

/// Why a command could not do its job, and so which exit code it ends with.
#[derive(Debug)]
pub enum Failure {
    /// The user's input is wrong; the message says how (exit 1).
    User(String),
    /// Problems were already printed as diagnostics or a list; nothing more to say (exit 1).
    Reported,
    /// Writing the output failed; a reader that went away (`cdp graph | head`) is no failure.
    Output(io::Error),
    /// cdp could not do something it should always be able to do (exit 2).
    Internal(String),
}

impl From<io::Error> for Failure {
    fn from(error: io::Error) -> Failure {
        Failure::Output(error)
    }
}

type Outcome = Result<(), Failure>;

/// Parses `args` (program name first) and runs the command; returns the process exit code.
pub fn run(
    args: impl IntoIterator<Item = impl Into<OsString> + Clone>,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> u8 {
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => return usage(&e, out, err),
    };
    let outcome = match cli.command {
        Command::Init { dir } => init::run(&dir, out),
        Command::Check { dir, format } => check::run(&dir, format, out),
        Command::Fmt { dir, check } => fmt::run(&dir, check, out, err),
        Command::Graph { dir, format } => graph::run(&dir, format, out, err),
        Command::Compile {
            dir,
            dialect,
            as_of,
            out: out_dir,
            only,
        } => {
            let options = compile::Options {
                dialect: &dialect,
                as_of: as_of.as_deref(),
                out_dir: out_dir.as_deref(),
                only: only.as_deref(),
            };
            compile::run(&dir, &options, out, err)
        }
        Command::Plan { dir, streaming } => compile::plan(&dir, streaming, out, err),
        Command::Run {
            dir,
            as_of,
            retries,
            identity,
        } => {
            use std::io::IsTerminal;
            let options = run::Options {
                as_of: as_of.as_deref(),
                retries,
                identity,
                progress: std::io::stderr().is_terminal(),
            };
            run::run(&dir, &options, out, err)
        }
        Command::Demo {
            dir,
            profiles,
            events,
            seed,
            serve,
            addr,
        } => {
            let options = demo::Options {
                demo: crate::demo::DemoOptions {
                    profiles,
                    events,
                    seed,
                },
                run: run::Identity::Native,
                serve: serve.then_some(addr),
            };
            demo::run(&dir, &options, out, err)
        }
        Command::Serve { dir, addr } => serve::serve(&dir, &addr, out),
        Command::Keys { action } => match action {
            KeysAction::Add {
                name,
                role,
                pii,
                dir,
            } => {
                let role = match role {
                    KeyRole::Write => crate::serve::auth::Role::Write,
                    KeyRole::Read => crate::serve::auth::Role::Read,
                    KeyRole::Admin => crate::serve::auth::Role::Admin,
                };
                serve::keys_add(&dir, &name, role, pii, out)
            }
            KeysAction::List { dir } => serve::keys_list(&dir, out),
            KeysAction::Revoke { name, dir } => serve::keys_revoke(&dir, &name, out),
        },
        Command::TrainingSet {
            dir,
            spine,
            entity,
            as_of,
            out: out_path,
        } => {
            let options = training_set::Options {
                spine: &spine,
                entity: entity.as_deref(),
                as_of: as_of.as_deref(),
                out: out_path.as_deref(),
            };
            training_set::run(&dir, &options, out, err)
        }
        Command::Apply {
            dir,
            message,
            author,
            yes,
        } => {
            let options = registry::ApplyOptions {
                message: message.as_deref(),
                author: author.as_deref(),
                yes,
            };
            registry::apply(&dir, &options, out, err)
        }
        Command::Diff { dir } => registry::diff(&dir, out, err),
        Command::History { name, dir } => registry::history(&dir, &name, out),
        Command::Rollback {
            name,
            version,
            dir,
            message,
            author,
        } => {
            let options = registry::ApplyOptions {
                message: message.as_deref(),
                author: author.as_deref(),
                yes: true,
            };
            registry::rollback(&dir, &name, version, &options, out, err)
        }
        Command::Profile { key, dir, format } => profile::run(&dir, &key, format, out, err),
        Command::Stream { dir, from } => stream::run(&dir, &from, out, err),
        Command::InternalPanic => panic!("`cdp internal-panic` fails on purpose"),
    };
    let outcome = outcome.and_then(|()| out.flush().map_err(Failure::from));
    match outcome {
        Ok(()) => EXIT_OK,
        Err(Failure::Reported) => EXIT_USER,
        Err(Failure::User(message)) => {
            let _ = writeln!(err, "error: {message}");
            EXIT_USER
        }
        Err(Failure::Output(e)) if e.kind() == io::ErrorKind::BrokenPipe => EXIT_OK,
        Err(Failure::Output(e)) => {
            let _ = writeln!(err, "internal error: cannot write output: {e}");
            EXIT_INTERNAL
        }
        Err(Failure::Internal(message)) => {
            let _ = writeln!(err, "internal error: {message}");
            EXIT_INTERNAL
        }
    }
}

/// `--help` and `--version` are successes; every other argument mistake is the user's (exit 1,
/// where clap alone would use 2, which cdp keeps for its own failures).
fn usage(e: &clap::Error, out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    use clap::error::ErrorKind;
    let text = e.render().to_string();
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = write!(out, "{text}");
            EXIT_OK
        }
        _ => {
            let _ = write!(err, "{text}");
            EXIT_USER
        }
    }
}

/// Reads a project from disk; a directory that is not a readable project is the user's mistake.
pub(super) fn load(dir: &std::path::Path) -> Result<cdp_compiler::ProjectSources, Failure> {
    cdp_compiler::load_project(dir).map_err(|e| Failure::User(e.to_string()))
}

/// The project's `cdp.toml`; without one, the user is told that `command` needs it `for_what`.
pub(super) fn project_config(
    dir: &std::path::Path,
    command: &str,
    for_what: &str,
) -> Result<cdp_compiler::config::ProjectConfig, Failure> {
    let checked = cdp_compiler::check(&load(dir)?);
    checked.config.ok_or_else(|| {
        Failure::User(format!(
            "{} has no cdp.toml: `cdp {command}` needs it {for_what}",
            dir.display()
        ))
    })
}

/// "1 error", "3 errors": counts in messages read as English.
fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("{n} {word}")
    } else {
        format!("{n} {word}s")
    }
}
