//! The collector binary: flags, logging, then [`collector::app::run`].
use std::process::ExitCode;

use clap::Parser as _;
use collector::{app, cli, cli::Cli};

fn main() -> ExitCode {
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
