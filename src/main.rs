//! The `hazgate` command line.
//!
//! `hazgate check --config FILE` validates a configuration and prints every problem,
//! one per line, as `FILE:LINE:COL: key.path: message`; it exits 2 when anything is
//! wrong. `hazgate replay --config FILE --input CSV` feeds recorded readings through
//! the engine and prints every event as a JSON line. `hazgate run --config FILE` runs
//! the gateway: Modbus polling → engine → the embedded store (and InfluxDB when
//! configured), until SIGINT or SIGTERM. `hazgate verify-store --config FILE` checks
//! the store's integrity and hash chains.

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
    /// Run the gateway until SIGINT or SIGTERM.
    Run {
        /// The TOML configuration file.
        #[arg(long, short = 'c', value_name = "FILE")]
        config: PathBuf,
    },
    /// Check the store named in the config: SQLite integrity and the hash chains of
    /// alarm events and audit records. Exit 1 when anything was altered.
    VerifyStore {
        /// The TOML configuration file.
        #[arg(long, short = 'c', value_name = "FILE")]
        config: PathBuf,
    },
    /// Replay recorded readings through the engine and print every event as JSON.
    ///
    /// The input is CSV, one reading per line: `ts_ms,point,value[,quality]`.
    /// Malformed lines are reported on stderr with their line number and skipped;
    /// the exit status is then 1.
    Replay {
        /// The TOML configuration file whose points and thresholds to use.
        #[arg(long, short = 'c', value_name = "FILE")]
        config: PathBuf,
        /// The CSV file of readings, or `-` for standard input.
        #[arg(long, short = 'i', value_name = "CSV")]
        input: PathBuf,
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
        Command::Run { config } => match run(&config) {
            Ok(code) => code,
            Err(error) => {
                eprintln!("error: {error:#}");
                ExitCode::FAILURE
            }
        },
        Command::VerifyStore { config } => match verify_store(&config) {
            Ok(code) => code,
            Err(error) => {
                eprintln!("error: {error:#}");
                ExitCode::FAILURE
            }
        },
        Command::Replay { config, input } => match replay(&config, &input) {
            Ok(code) => code,
            Err(error) => {
                eprintln!("error: {error:#}");
                ExitCode::FAILURE
            }
        },
    }
}

/// Load a config, or print its problems and give the exit status to use.
fn load_or_report(path: &std::path::Path) -> anyhow::Result<Result<Config, ExitCode>> {
    let loaded = Config::load(path);
    let file = path.display().to_string();
    match loaded {
        Ok(config) => Ok(Ok(config)),
        Err(ConfigError::Invalid(diagnostics)) => {
            for item in &diagnostics.items {
                eprintln!("{}", item.render(&file));
            }
            eprintln!("{} error(s)", diagnostics.items.len());
            Ok(Err(ExitCode::from(EXIT_INVALID)))
        }
        Err(error @ ConfigError::Read { .. }) => Err(error).context("loading the configuration"),
    }
}

fn run(path: &std::path::Path) -> anyhow::Result<ExitCode> {
    let config = match load_or_report(path)? {
        Ok(config) => config,
        Err(code) => return Ok(code),
    };
    tracing_subscriber::fmt()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("HAZGATE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async {
        let plan = hazgate::gateway::Plan::from_config(&config);
        let options = config.store_options();
        let mut store = hazgate::store::Store::open(&options)
            .with_context(|| format!("opening the store {}", options.path.display()))?;
        store
            .register_points(&config.point_meta(&plan.spec))
            .context("registering points in the store")?;
        let first_alarm_id = store.next_alarm_id().context("reading the last alarm id")?;
        let (writer, writer_task) = hazgate::store::StoreWriter::spawn(store);
        let sink = match config.influx_options() {
            Some(opts) => Some(
                hazgate::sinks::influxdb::InfluxSink::spawn(opts)
                    .context("starting the InfluxDB sink")?,
            ),
            None => None,
        };
        tracing::info!(
            site = %config.site.id,
            points = config.points.len(),
            links = plan.links.len(),
            devices = plan.links.iter().map(|l| l.devices.len()).sum::<usize>(),
            store = %options.path.display(),
            influxdb = sink.is_some(),
            first_alarm_id,
            "hazgate starting"
        );
        let (stop, shutdown) = tokio::sync::watch::channel(false);
        let outputs = hazgate::gateway::StoreOutputs { writer, lost: 0 };
        let running = hazgate::gateway::start(plan, outputs, shutdown, first_alarm_id);
        wait_for_signal().await?;
        tracing::info!("shutting down");
        let _ = stop.send(true);
        running.join().await;
        let _ = writer_task.await;
        if let Some((sink, task)) = sink {
            sink.shutdown().await;
            let _ = task.await;
        }
        tracing::info!("stopped");
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Check the store's hash chain and SQLite integrity.
fn verify_store(path: &std::path::Path) -> anyhow::Result<ExitCode> {
    let config = match load_or_report(path)? {
        Ok(config) => config,
        Err(code) => return Ok(code),
    };
    let db = config.store_options().path;
    if !db.exists() {
        anyhow::bail!("no store at {}", db.display());
    }
    let reader = hazgate::store::Reader::open(&db)
        .with_context(|| format!("opening the store {}", db.display()))?;
    reader
        .integrity_check()
        .with_context(|| format!("{}: SQLite integrity check failed", db.display()))?;
    match reader.verify_chain().context("verifying the hash chain")? {
        None => {
            println!(
                "{}: ok — integrity check passed, alarm and audit hash chains intact",
                db.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Some(bad) => {
            println!("{}: TAMPERED — {bad}", db.display());
            Ok(ExitCode::FAILURE)
        }
    }
}

/// SIGINT (Ctrl-C) or SIGTERM (systemd, docker stop).
async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("waiting for SIGINT")?,
        _ = term.recv() => {}
    }
    Ok(())
}

fn replay(config: &std::path::Path, input: &std::path::Path) -> anyhow::Result<ExitCode> {
    let config = match load_or_report(config)? {
        Ok(config) => config,
        Err(code) => return Ok(code),
    };
    let stdout = std::io::stdout().lock();
    let summary = if input.as_os_str() == "-" {
        hazgate::replay::replay(config.engine_spec(), std::io::stdin().lock(), stdout)?
    } else {
        let file =
            std::fs::File::open(input).with_context(|| format!("opening {}", input.display()))?;
        hazgate::replay::replay(config.engine_spec(), std::io::BufReader::new(file), stdout)?
    };
    for (line, message) in &summary.bad_lines {
        eprintln!("{}:{line}: {message}", input.display());
    }
    eprintln!(
        "{} readings, {} events, {} alarms raised, {} malformed lines",
        summary.readings,
        summary.events,
        summary.alarms_raised,
        summary.bad_lines.len()
    );
    Ok(if summary.bad_lines.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
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
