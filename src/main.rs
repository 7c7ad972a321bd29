//! The `hazgate` command line.
//!
//! `hazgate check --config FILE` validates a configuration and prints every problem,
//! one per line, as `FILE:LINE:COL: key.path: message`; it exits 2 when anything is
//! wrong. `hazgate replay --config FILE --input CSV` feeds recorded readings through
//! the engine and prints every event as a JSON line. `hazgate run --config FILE` runs
//! the gateway: Modbus polling → engine → the embedded store (and InfluxDB when
//! configured), until SIGINT or SIGTERM. `hazgate verify-store --config FILE` checks
//! the store's integrity and hash chains. `hazgate demo [--listen ADDR]` runs a
//! simulated coal mine and tank farm, the gateway, an embedded store and the dashboard
//! in one process and prints fresh access tokens. When `run`'s config has `[api]`
//! tokens, the HTTP API and dashboard are served on `api.listen`.

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
    /// Run everything in one process: simulated site, gateway, store, dashboard.
    Demo {
        /// Where the dashboard and API listen.
        #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR")]
        listen: std::net::SocketAddr,
        /// Keep the store in this file instead of a temporary directory.
        #[arg(long, value_name = "FILE")]
        db: Option<PathBuf>,
        /// Scenario speed factor (1: the site's two-minute story takes two minutes).
        #[arg(long, default_value_t = 1.0)]
        speed: f64,
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
    // Once, before any TLS or HTTP client exists (library code would install it too).
    hazgate::tls::ensure_provider();
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
        Command::Demo { listen, db, speed } => match demo(listen, db, speed) {
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
    init_logging();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async move {
        let mut plan = hazgate::gateway::Plan::from_config(&config);
        let options = config.store_options();
        let mut store = hazgate::store::Store::open(&options)
            .with_context(|| format!("opening the store {}", options.path.display()))?;
        store
            .register_points(&config.point_meta(&plan.spec))
            .context("registering points in the store")?;
        let first_alarm_id = store.next_alarm_id().context("reading the last alarm id")?;
        // Alarms still open when the gateway last stopped continue under their ids.
        let open = hazgate::store::Reader::open(&options.path)
            .and_then(|r| r.open_alarms())
            .context("reading the open alarms")?;
        for (point_id, mut alarm) in open {
            match plan.spec.points.iter().position(|p| p.id == point_id) {
                Some(i) => {
                    alarm.point = hazgate::model::PointId(i as u32);
                    plan.restore.push(alarm);
                }
                None => tracing::warn!(
                    alarm = alarm.id.0,
                    point = %point_id,
                    "an open alarm's point is no longer configured; it stays open in the log"
                ),
            }
        }
        let (writer, writer_task) = hazgate::store::StoreWriter::spawn(store);
        let sink = match config.influx_options() {
            Some(opts) => Some(
                hazgate::sinks::influxdb::InfluxSink::spawn(opts)
                    .context("starting the InfluxDB sink")?,
            ),
            None => None,
        };
        let uplink = match config.uplink_options(&plan.spec) {
            Some(opts) => {
                Some(hazgate::uplink::UplinkSink::spawn(opts).context("starting the uplink")?)
            }
            None => None,
        };
        let mut linkage = Vec::new();
        for opts in config.linkage_options(&plan.spec) {
            let name = opts.name.clone();
            linkage.push(
                hazgate::uplink::UplinkSink::spawn(opts)
                    .with_context(|| format!("starting {name}"))?,
            );
        }
        tracing::info!(
            site = %config.site.id,
            points = config.points.len(),
            links = plan.links.len(),
            devices = plan.links.iter().map(|l| l.devices.len()).sum::<usize>(),
            store = %options.path.display(),
            influxdb = sink.is_some(),
            uplink = uplink.is_some(),
            linkage = linkage.len(),
            actions = plan.actions.len(),
            restored_alarms = plan.restore.len(),
            first_alarm_id,
            "hazgate starting"
        );
        let (stop, shutdown) = tokio::sync::watch::channel(false);
        let catalog = hazgate::api::Catalog::new(&config, &plan.spec);
        let api_writer = writer.clone();
        let storage_point = plan.storage_point;
        let storage_status = writer.status().clone();
        let outputs = hazgate::gateway::StoreOutputs {
            writer,
            wake: uplink
                .iter()
                .chain(&linkage)
                .map(|(u, _)| u.clone())
                .collect(),
            lost: 0,
        };
        let running = hazgate::gateway::start(plan, outputs, shutdown.clone(), first_alarm_id);
        let storage_watch = tokio::spawn(hazgate::gateway::watch_storage(
            storage_status,
            storage_point,
            running.control.clone(),
            shutdown.clone(),
        ));
        let server = if config.api.tokens.is_empty() {
            tracing::info!("no [[api.tokens]] configured: HTTP API not started");
            None
        } else {
            let tokens = hazgate::api::Tokens::from_config(&config.api.tokens);
            let state = hazgate::api::ApiState::new(
                catalog,
                &running,
                tokens,
                Some(hazgate::api::StoreAccess {
                    path: options.path.clone(),
                    writer: api_writer,
                }),
            )
            .with_rate_limit(hazgate::api::RateLimit {
                per_s: config.api.rate_limit_per_s,
                burst: f64::from(config.api.rate_limit_burst),
            });
            let tls = match (&config.api.tls_cert, &config.api.tls_key) {
                (Some(cert), Some(key)) => Some(
                    hazgate::tls::server_config(cert, key).context("the API's TLS certificate")?,
                ),
                _ => None,
            };
            let listener = tokio::net::TcpListener::bind(&config.api.listen)
                .await
                .with_context(|| format!("listening on {}", config.api.listen))?;
            tracing::info!(listen = %config.api.listen, https = tls.is_some(), "HTTP API and dashboard");
            Some(match tls {
                Some(tls) => tokio::spawn(hazgate::api::serve_tls(listener, tls, state, shutdown)),
                None => tokio::spawn(hazgate::api::serve(listener, state, shutdown)),
            })
        };
        // Everything the run needs has been taken out of the configuration; with
        // 10,000 points it is megabytes.
        drop(config);
        wait_for_signal().await?;
        tracing::info!("shutting down");
        let _ = stop.send(true);
        if let Some(server) = server {
            if let Ok(Err(e)) = server.await {
                tracing::error!(error = %e, "http server");
            }
        }
        let _ = storage_watch.await;
        running.join().await;
        let _ = writer_task.await;
        if let Some((sink, task)) = sink {
            sink.shutdown().await;
            let _ = task.await;
        }
        for (sink, task) in uplink.into_iter().chain(linkage) {
            sink.shutdown().await;
            let _ = task.await;
        }
        tracing::info!("stopped");
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Default log filter. rumqttd is the demo's embedded broker; its link handler logs
/// every client's disconnect as an ERROR (`router-drop`), which at a demo's stop
/// (the gateway and the simulated sensors disconnecting) would read as a fault. Its
/// clients are the demo's own, so its link messages are left out.
const LOG_FILTER: &str = "info,rumqttd=warn,rumqttd::server::broker=off";

fn init_logging() {
    tracing_subscriber::fmt()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("HAZGATE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(LOG_FILTER)),
        )
        .init();
}

fn demo(listen: std::net::SocketAddr, db: Option<PathBuf>, speed: f64) -> anyhow::Result<ExitCode> {
    if !(speed > 0.0 && speed <= 1000.0) {
        anyhow::bail!("--speed must be in (0, 1000]");
    }
    init_logging();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async {
        let demo = hazgate::demo::Demo::start(hazgate::demo::DemoOptions { listen, db, speed })
            .await
            .context("starting the demo")?;
        // Listening on every interface (0.0.0.0 or ::): a browser on this machine
        // reaches it on loopback.
        let shown = if demo.addr.ip().is_unspecified() {
            std::net::SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, demo.addr.port()))
        } else {
            demo.addr
        };
        println!();
        println!(
            "hazgate demo — 演示 (simulated coal heading, sump, tank farm; loops every {:.0} s)",
            120.0 / speed
        );
        println!(
            "  dashboard (operator): http://{}/#token={}",
            shown, demo.operator_token
        );
        println!("  admin token:    {}", demo.admin_token);
        println!("  operator token: {}", demo.operator_token);
        println!("  viewer token:   {}", demo.viewer_token);
        println!("  store:          {}", demo.db.display());
        println!(
            "  API example:    curl -H 'Authorization: Bearer {}' http://{}/api/v1/alarms",
            demo.viewer_token, shown
        );
        println!("Ctrl-C stops.");
        wait_for_signal().await?;
        tracing::info!("shutting down");
        demo.shutdown().await;
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
            let mut summary = format!(
                "{file}: ok — {} devices, {} points, {} hazard sources",
                config.devices.len(),
                config.points.len(),
                config.hazard_sources.len()
            );
            if !config.actions.is_empty() {
                summary += &format!(", {} safety actions", config.actions.len());
            }
            if !config.linkage.is_empty() {
                summary += &format!(", {} linkage", config.linkage.len());
            }
            println!("{summary}");
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
