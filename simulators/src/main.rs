//! `hazgate-sim`: run a Modbus device farm or an MQTT publisher from a scenario file,
//! or check a scenario file.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use hazgate_sim::farm::{Farm, FarmOptions};
use hazgate_sim::mqtt::{Publisher, PublisherOptions};
use hazgate_sim::scenario::{PayloadFormat, Scenario};
use hazgate_sim::status::StatusServer;

#[derive(Parser)]
#[command(
    name = "hazgate-sim",
    about = "Simulated coal-mine and chemical-site sensors for hazgate"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum Payload {
    Json,
    Plain,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the scenario's Modbus devices.
    Farm {
        /// Scenario file (TOML).
        #[arg(long)]
        scenario: PathBuf,
        /// Address to bind every endpoint on.
        #[arg(long, default_value = "127.0.0.1")]
        bind: IpAddr,
        /// Scenario seconds per real second.
        #[arg(long, default_value_t = 1.0)]
        speed: f64,
        /// Noise seed (default: the scenario's).
        #[arg(long)]
        seed: Option<u64>,
        /// Serve `GET /status` JSON on this address.
        #[arg(long)]
        status: Option<SocketAddr>,
        /// Bind every endpoint on a free port instead of the scenario's ports.
        #[arg(long)]
        ephemeral_ports: bool,
    },
    /// Publish the scenario's MQTT sensors to a broker.
    Mqtt {
        /// Scenario file (TOML).
        #[arg(long)]
        scenario: PathBuf,
        /// Broker as HOST:PORT.
        #[arg(long)]
        broker: String,
        /// CA certificate (PEM); enables TLS.
        #[arg(long)]
        ca_file: Option<PathBuf>,
        /// User name.
        #[arg(long)]
        username: Option<String>,
        /// Password.
        #[arg(long)]
        password: Option<String>,
        /// MQTT client id.
        #[arg(long, default_value = "hazgate-sim")]
        client_id: String,
        /// Topic template (default: the scenario's), e.g. `site/{device}/{point}`.
        #[arg(long)]
        topic: Option<String>,
        /// Payload format (default: the scenario's).
        #[arg(long, value_enum)]
        payload: Option<Payload>,
        /// QoS 0 or 1 (default: the scenario's).
        #[arg(long)]
        qos: Option<u8>,
        /// Real milliseconds between rounds (default: the scenario's).
        #[arg(long)]
        interval_ms: Option<u64>,
        /// Scenario seconds per real second.
        #[arg(long, default_value_t = 1.0)]
        speed: f64,
        /// Noise seed (default: the scenario's).
        #[arg(long)]
        seed: Option<u64>,
    },
    /// Validate a scenario file; print every error with its place.
    Check {
        /// Scenario file (TOML).
        #[arg(long)]
        scenario: PathBuf,
    },
}

fn split_broker(broker: &str) -> Option<(String, u16)> {
    let (host, port) = broker.rsplit_once(':')?;
    Some((host.trim_matches(['[', ']']).to_owned(), port.parse().ok()?))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn check_speed(speed: f64) -> anyhow::Result<f64> {
    if speed.is_finite() && speed > 0.0 {
        Ok(speed)
    } else {
        anyhow::bail!("--speed must be a positive number, got {speed}")
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Check { scenario } => {
            let s = Scenario::load(&scenario)?;
            println!(
                "{}: ok ({} signals, {} devices, {} mqtt sensors)",
                scenario.display(),
                s.signals.len(),
                s.devices.len(),
                s.mqtt.as_ref().map_or(0, |m| m.sensors.len())
            );
        }
        Command::Farm {
            scenario,
            bind,
            speed,
            seed,
            status,
            ephemeral_ports,
        } => {
            let speed = check_speed(speed)?;
            let s = Scenario::load(&scenario)?;
            let farm = Farm::start(
                &s,
                FarmOptions {
                    bind_ip: bind,
                    ephemeral_ports,
                    seed,
                    clock: None,
                    speed,
                },
            )
            .await?;
            // One JSON line per endpoint, so scripts can find the ports.
            for e in farm.endpoints() {
                println!("{}", serde_json::to_string(e)?);
            }
            let status_server = match status {
                Some(addr) => {
                    let srv = StatusServer::start(addr, farm.status_source()).await?;
                    println!(
                        "{}",
                        serde_json::json!({ "status": format!("http://{}/status", srv.addr()) })
                    );
                    Some(srv)
                }
                None => None,
            };
            tokio::signal::ctrl_c().await?;
            if let Some(srv) = status_server {
                srv.shutdown().await;
            }
            farm.shutdown().await;
        }
        Command::Mqtt {
            scenario,
            broker,
            ca_file,
            username,
            password,
            client_id,
            topic,
            payload,
            qos,
            interval_ms,
            speed,
            seed,
        } => {
            let speed = check_speed(speed)?;
            let s = Scenario::load(&scenario)?;
            let (host, port) = split_broker(&broker)
                .ok_or_else(|| anyhow::anyhow!("--broker must be HOST:PORT, got `{broker}`"))?;
            let handle = Publisher::start(
                &s,
                PublisherOptions {
                    host,
                    port,
                    client_id,
                    username,
                    password,
                    ca_file,
                    seed,
                    clock: None,
                    speed,
                    epoch_ms: None,
                    topic,
                    payload: payload.map(|p| match p {
                        Payload::Json => PayloadFormat::Json,
                        Payload::Plain => PayloadFormat::Plain,
                    }),
                    qos,
                    interval_ms,
                },
            )?;
            tokio::signal::ctrl_c().await?;
            let st = handle.status();
            handle.shutdown().await;
            println!("{}", serde_json::to_string(&st)?);
        }
    }
    Ok(())
}
