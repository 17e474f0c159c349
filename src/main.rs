//! `cdp`: the command-line entry point. Everything runs inside a panic guard so that a bug in
//! cdp shows the user a short "internal error" and exit code 2, never a raw backtrace.

use std::io::Write;
use std::panic;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};

use cdp::cli::{self, EXIT_INTERNAL};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    cdp::allocator::tune();
    panic::set_hook(Box::new(report_internal_error));
    let code = panic::catch_unwind(|| {
        // stderr stays unlocked: the panic hook writes to it, possibly from another thread.
        cli::run(
            std::env::args_os(),
            &mut std::io::stdout().lock(),
            &mut std::io::stderr(),
        )
    })
    .unwrap_or(EXIT_INTERNAL);
    ExitCode::from(code)
}

/// Replaces Rust's default panic message: users get what happened and where to report it;
/// developers get the backtrace when they ask for it with `RUST_BACKTRACE=1`.
fn report_internal_error(info: &panic::PanicHookInfo<'_>) {
    // The first panic is the bug; any later one (a retry, a thread joining a panicked one) is noise.
    static REPORTED: AtomicBool = AtomicBool::new(false);
    if REPORTED.swap(true, Ordering::SeqCst) {
        return;
    }
    let message = info
        .payload()
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| info.payload().downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_string());
    let location = info
        .location()
        .map(|l| format!(" (at {}:{})", l.file(), l.line()))
        .unwrap_or_default();
    let mut err = std::io::stderr().lock();
    let _ = writeln!(
        err,
        "internal error: {message}{location}\n\
         This is a bug in cdp, not in your project; please report it with the command you ran \
         and the files involved."
    );
    if std::env::var_os("RUST_BACKTRACE").is_some_and(|v| !v.is_empty() && v != "0") {
        let _ = writeln!(err, "{}", std::backtrace::Backtrace::force_capture());
    }
}
