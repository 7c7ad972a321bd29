//! The `hazgate` command line.
//!
//! `hazgate check --config FILE` validates a configuration and prints every problem,
//! one per line, as `FILE:LINE:COL: key.path: message`; it exits 2 when anything is
//! wrong. `run` and `demo` come with the runtime; they are not offered before they work.

use anyhow::Context;
use clap::{Parser, Subcommand};
use hazgate::config::{Config, ConfigError};
use std::path::PathBuf;
use std::process::ExitCode;

/// Exit status when the configuration has problems (or cannot be read).
const EXIT_INVALID: u8 = 2;

#[derive(Debug, Parser)]
#[command(
    name = "hazgate",
    version,
    about = "Real-time sensor monitoring gateway for coal mines and hazardous-chemical sites"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Validate a configuration file and report every problem with its place.
    Check {
        /// The TOML configuration file.
        #[arg(long, short = 'c', value_name = "FILE")]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config } => match check(&config) {
            Ok(code) => code,
            Err(error) => {
                eprintln!("error: {error:#}");
                ExitCode::from(EXIT_INVALID)
            }
        },
    }
}

fn check(path: &std::path::Path) -> anyhow::Result<ExitCode> {
    let file = path.display().to_string();
    match Config::load(path) {
        Ok(config) => {
            println!(
                "{file}: ok — {} devices, {} points, {} hazard sources",
                config.devices.len(),
                config.points.len(),
                config.hazard_sources.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(ConfigError::Invalid(diagnostics)) => {
            for item in &diagnostics.items {
                eprintln!("{}", item.render(&file));
            }
            eprintln!("{} error(s)", diagnostics.items.len());
            Ok(ExitCode::from(EXIT_INVALID))
        }
        Err(error @ ConfigError::Read { .. }) => Err(error).context("checking the configuration"),
    }
}
