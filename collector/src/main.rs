//! The collector binary: flags, logging, then [`collector::app::run`].
use std::process::ExitCode;

use clap::Parser as _;
use collector::{app, cli, cli::Cli};

fn main() -> ExitCode {
    tune_allocator();
    let cli = Cli::parse();
    init_logging(&cli);
    match app::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line a user can act on.
            eprintln!("collector: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(cli: &Cli) {
    let level = match cli.log_level {
        cli::LogLevel::Debug => "debug",
        cli::LogLevel::Info => "info",
        cli::LogLevel::Warn => "warn",
        cli::LogLevel::Error => "error",
    };
    let filter = tracing_subscriber::EnvFilter::new(format!("warn,collector={level}"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match cli.log_format {
        cli::LogFormat::Text => builder.init(),
        cli::LogFormat::Json => builder.json().init(),
    }
}

/// glibc's allocator: one arena for all threads instead of one per thread that has allocated
/// (each keeps what it freed, and which thread runs a scrape varies), for a daemon whose
/// memory is mostly each scrape's short-lived buffers (docs/performance.md, "Attempts"). A
/// fixed trim threshold, tried too, gave memory back after every scrape and cost its page
/// faults again on the next (+15–20% CPU per scrape), so it is left at glibc's default.
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: `mallopt` only sets an allocator parameter; it is called first thing in
        // `main`, before any other thread exists, with a parameter and value glibc documents.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 1);
        }
    }
}
