//! `hazgate demo`: the whole system in one process, no outside service.
//!
//! ```text
//!  hazgate-sim farm (in-process, 127.0.0.1:ephemeral, looping 120 s timeline)
//!     │ Modbus TCP / RTU over TCP
//!     ▼
//!  gateway (sources → engine → safety action) ──► embedded store (temp dir) ──► HTTP API + dashboard
//!     └─ heading methane ≥ 1.5 % ──► action `cut-2203` ──► coil write back to the farm,
//!        feed (馈电) checked, restored below 1.0 %
//! ```
//!
//! The simulated site ([`SCENARIO`]) runs a coal heading gas surge through alarm and
//! power cut, a water inrush in the sump, a broken CH4 sensor, a tank over-pressure and
//! a combustible leak, all within two minutes and then again. Most sensors are read
//! over Modbus; a wireless combustible-gas detector at the tank dike publishes JSON
//! over MQTT (hazgate-sim's publisher) to an embedded broker (`broker`, rumqttd on a
//! loopback port) that the gateway subscribes to.
//!
//! Tokens are generated fresh at every start from the OS random source and printed;
//! only their SHA-256 is kept.

mod broker;

use crate::api::{self, ApiState, Catalog, StoreAccess, TokenEntry, Tokens};
use crate::config::{Config, Role};
use crate::gateway::{self, Plan, Running, StoreOutputs};
use crate::store::{Store, StoreWriter};
use hazgate_sim::farm::{Farm, FarmHandle, FarmOptions};
use hazgate_sim::scenario::Scenario;
use std::net::SocketAddr;
use std::path::PathBuf;
use tokio::sync::watch;

/// The simulated site.
pub const SCENARIO: &str = include_str!("scenario.toml");
/// The gateway configuration template for it.
pub const CONFIG: &str = include_str!("config.toml");

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("demo scenario: {0}")]
    Scenario(String),
    #[error("starting the simulator farm: {0}")]
    Farm(String),
    #[error("embedded MQTT broker: {0}")]
    Broker(String),
    #[error("simulated MQTT sensors: {0}")]
    Publisher(String),
    #[error("the farm has no endpoint for `{0}`")]
    NoEndpoint(&'static str),
    #[error("demo configuration: {0}")]
    Config(String),
    #[error("demo store: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
}

/// How to run the demo.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Where the dashboard listens (`127.0.0.1:0` in tests).
    pub listen: SocketAddr,
    /// The store file; `None`: a fresh temporary directory, removed at shutdown.
    pub db: Option<PathBuf>,
    /// Scenario speed factor (1.0: the two-minute loop takes two minutes).
    pub speed: f64,
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            db: None,
            speed: 1.0,
        }
    }
}

/// A running demo.
pub struct Demo {
    /// Where the dashboard and API answer.
    pub addr: SocketAddr,
    pub admin_token: String,
    pub operator_token: String,
    pub viewer_token: String,
    pub db: PathBuf,
    temp_dir: Option<PathBuf>,
    stop: watch::Sender<bool>,
    running: Running,
    farm: FarmHandle,
    publisher: hazgate_sim::mqtt::PublisherHandle,
    store_task: tokio::task::JoinHandle<()>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
}

fn random_token() -> Result<String, DemoError> {
    use std::io::Read;
    let mut bytes = [0u8; 24];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|source| DemoError::Io {
            what: "reading /dev/urandom for a token".into(),
            source,
        })?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

impl Demo {
    /// Start the farm, the store, the gateway and the HTTP server.
    pub async fn start(opts: DemoOptions) -> Result<Demo, DemoError> {
        let scenario = Scenario::parse(SCENARIO).map_err(|e| DemoError::Scenario(e.to_string()))?;
        let farm = Farm::start(
            &scenario,
            FarmOptions {
                ephemeral_ports: true,
                speed: opts.speed,
                ..FarmOptions::default()
            },
        )
        .await
        .map_err(|e| DemoError::Farm(e.to_string()))?;
        let broker = tokio::task::spawn_blocking(broker::start)
            .await
            .map_err(|e| DemoError::Broker(e.to_string()))??;
        let publisher = hazgate_sim::mqtt::Publisher::start(
            &scenario,
            hazgate_sim::mqtt::PublisherOptions {
                host: broker.ip().to_string(),
                port: broker.port(),
                client_id: "hazgate-demo-sensors".into(),
                clock: Some(farm.clock().clone()),
                ..hazgate_sim::mqtt::PublisherOptions::default()
            },
        )
        .map_err(|e| DemoError::Publisher(e.to_string()))?;
        let port = |d: &'static str| {
            farm.addr_of(d)
                .map(|a| a.port())
                .ok_or(DemoError::NoEndpoint(d))
        };
        let (db, temp_dir) = match &opts.db {
            Some(p) => (p.clone(), None),
            None => {
                let nanos = gateway::now().0;
                let dir = std::env::temp_dir()
                    .join(format!("hazgate-demo-{}-{nanos}", std::process::id()));
                std::fs::create_dir_all(&dir).map_err(|source| DemoError::Io {
                    what: format!("creating {}", dir.display()),
                    source,
                })?;
                (dir.join("hazgate-demo.db"), Some(dir))
            }
        };
        let text = CONFIG
            .replace("@KJ@", &port("kj-substation")?.to_string())
            .replace("@PUMP@", &port("pump-house")?.to_string())
            .replace("@PLC@", &port("tank-plc")?.to_string())
            .replace("@SERIAL@", &port("lel-detector-1")?.to_string())
            .replace("@MQTT@", &broker.port().to_string())
            .replace("@DB@", &db.display().to_string().replace('\\', "\\\\"));
        let config = Config::from_toml_str(&text, "demo.toml").map_err(|e| match e {
            crate::config::ConfigError::Invalid(d) => DemoError::Config(
                d.items
                    .iter()
                    .map(|i| i.render("demo.toml"))
                    .collect::<Vec<_>>()
                    .join("; "),
            ),
            other => DemoError::Config(other.to_string()),
        })?;

        let plan = Plan::from_config(&config);
        let catalog = Catalog::new(&config, &plan.spec);
        let mut store = Store::open(&config.store_options())?;
        store.register_points(&config.point_meta(&plan.spec))?;
        let first_alarm_id = store.next_alarm_id()?;
        let (writer, store_task) = StoreWriter::spawn(store);
        let outputs = StoreOutputs {
            writer: writer.clone(),
            wake: Vec::new(),
            lost: 0,
        };
        let (stop, shutdown) = watch::channel(false);
        let running = gateway::start(plan, outputs, shutdown.clone(), first_alarm_id);

        let admin_token = random_token()?;
        let operator_token = random_token()?;
        let viewer_token = random_token()?;
        let tokens = Tokens::new(vec![
            TokenEntry {
                name: "demo-admin".into(),
                role: Role::Admin,
                sha256: api::hash_token(&admin_token),
            },
            TokenEntry {
                name: "demo-operator".into(),
                role: Role::Operator,
                sha256: api::hash_token(&operator_token),
            },
            TokenEntry {
                name: "demo-viewer".into(),
                role: Role::Viewer,
                sha256: api::hash_token(&viewer_token),
            },
        ]);
        let state = ApiState::new(
            catalog,
            &running,
            tokens,
            Some(StoreAccess {
                path: db.clone(),
                writer,
            }),
        );
        let listener = tokio::net::TcpListener::bind(opts.listen)
            .await
            .map_err(|source| DemoError::Io {
                what: format!("listening on {}", opts.listen),
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| DemoError::Io {
            what: "reading the bound address".into(),
            source,
        })?;
        let server = tokio::spawn(api::serve(listener, state, shutdown));
        Ok(Demo {
            addr,
            admin_token,
            operator_token,
            viewer_token,
            db,
            temp_dir,
            stop,
            running,
            farm,
            publisher,
            store_task,
            server,
        })
    }

    /// Stop everything in order: HTTP server and gateway, store flushed, farm down,
    /// temporary store removed.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        match self.server.await {
            Ok(Err(e)) => tracing::error!(error = %e, "http server"),
            Err(e) => tracing::error!(error = %e, "http server task"),
            Ok(Ok(())) => {}
        }
        self.running.join().await;
        let _ = self.store_task.await;
        self.publisher.shutdown().await;
        self.farm.shutdown().await;
        if let Some(dir) = self.temp_dir {
            if let Err(e) = std::fs::remove_dir_all(&dir) {
                tracing::warn!(error = %e, dir = %dir.display(), "removing the demo store");
            }
        }
    }
}
