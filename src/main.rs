//! `sramlm`: command-line entry point. See `sramlm --help`.

mod cli;

fn main() {
    restore_sigpipe();
    quiet_stdout_failures();
    if let Err(e) = cli::run() {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

/// Rust ignores SIGPIPE, so a write to a closed pipe (`sramlm generate … | head`)
/// fails with EPIPE and `println!` panics. Restore the default action: the
/// process ends at the first write after the reader has gone, quietly, with the
/// conventional status (128 + SIGPIPE in a shell), like any Unix filter.
fn restore_sigpipe() {
    #[cfg(unix)]
    // SAFETY: setting a signal's disposition to SIG_DFL at the start of main,
    // before any other thread exists, is async-signal-safe and has no
    // preconditions.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Any other failed write to standard output (a full disk, a closed
/// descriptor) ends the program with one line on stderr instead of a panic
/// message.
fn quiet_stdout_failures() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let msg = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if let Some(rest) = msg.strip_prefix("failed printing to stdout: ") {
            eprintln!("error: cannot write to standard output: {rest}");
            std::process::exit(1);
        }
        default(info);
    }));
}
