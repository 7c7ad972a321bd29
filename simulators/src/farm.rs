//! The Modbus device farm: one TCP listener per endpoint, devices behind it by unit id.
//!
//! Each endpoint runs an accept task; each connection runs its own task that reads
//! whatever arrived, answers every complete frame in it, and writes all answers in
//! one write (pipelined clients get pipelined answers). Devices are shared between
//! connections behind a short-held mutex; nothing awaits while holding it.
//!
//! Offline windows: `refuse` closes the listener of an endpoint whose devices are all
//! refusing (and closes connections on their next request), then binds the same port
//! again when the window ends; on a shared endpoint a refusing unit answers 0B like a
//! serial gateway whose target is gone. `silent` reads requests and never answers.
//!
//! A broken MBAP header closes that connection only; the farm keeps serving.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::clock::Clock;
use crate::device::{Device, DeviceStatus};
use crate::frame::{self, Parsed};
use crate::pdu::{self, ExceptionCode};
use crate::scenario::{Framing, OfflineMode, Scenario};
use crate::signal::Signals;

/// How often the accept loop looks at the clock for offline windows (real time).
const OFFLINE_POLL: Duration = Duration::from_millis(20);

/// Options of a farm run.
#[derive(Debug, Clone)]
pub struct FarmOptions {
    /// Address to bind every endpoint on.
    pub bind_ip: IpAddr,
    /// Ignore the ports in the scenario and bind every endpoint on a free port
    /// (tests, and several farms on one machine).
    pub ephemeral_ports: bool,
    /// Noise seed; `None` uses the scenario's seed.
    pub seed: Option<u64>,
    /// Scenario clock; `None` starts a real clock at the scenario's `start_s`
    /// running at `speed`.
    pub clock: Option<Clock>,
    /// Speed factor of the real clock (60 replays an hour in a minute).
    pub speed: f64,
}

impl Default for FarmOptions {
    fn default() -> Self {
        FarmOptions {
            bind_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            ephemeral_ports: true,
            seed: None,
            clock: None,
            speed: 1.0,
        }
    }
}

/// Errors starting a farm.
#[derive(Debug, thiserror::Error)]
pub enum FarmError {
    /// The scenario is not valid.
    #[error(transparent)]
    Scenario(#[from] crate::scenario::ScenarioError),
    /// An endpoint could not be bound.
    #[error("cannot listen for endpoint `{endpoint}` on {addr}: {source}")]
    Bind {
        /// Endpoint name.
        endpoint: String,
        /// Address tried.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// Where an endpoint listens and what it serves.
#[derive(Debug, Clone, Serialize)]
pub struct EndpointInfo {
    /// Endpoint name.
    pub name: String,
    /// Bound address.
    pub addr: SocketAddr,
    /// Framing.
    pub framing: Framing,
    /// Device ids with their unit ids.
    pub devices: Vec<(String, u8)>,
}

/// A snapshot of the whole farm.
#[derive(Debug, Clone, Serialize)]
pub struct FarmStatus {
    /// Scenario name.
    pub scenario: String,
    /// Scenario time now, seconds.
    pub t_s: f64,
    /// Speed factor.
    pub speed: f64,
    /// Seed in use.
    pub seed: u64,
    /// Endpoints.
    pub endpoints: Vec<EndpointInfo>,
    /// Devices.
    pub devices: Vec<DeviceStatus>,
    /// Connections accepted since start.
    pub connections_accepted: u64,
    /// Connections closed by the farm because of a broken frame.
    pub connections_broken: u64,
    /// RTU frames dropped for a bad CRC.
    pub crc_errors: u64,
}

#[derive(Debug, Default)]
struct FarmCounters {
    accepted: u64,
    broken: u64,
    crc_errors: u64,
}

struct Shared {
    scenario_name: String,
    seed: u64,
    clock: Clock,
    signals: Signals,
    /// In scenario order.
    devices: Vec<(String, Arc<Mutex<Device>>)>,
    endpoints: Vec<EndpointInfo>,
    counters: Mutex<FarmCounters>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave a device half-updated in a way
    // that matters to a simulator; keep serving.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The farm (see the module docs). Start it with [`Farm::start`].
pub struct Farm;

/// A running farm: addresses, status, shutdown.
pub struct FarmHandle {
    shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

struct Endpoint {
    info_index: usize,
    framing: Framing,
    units: HashMap<u8, Arc<Mutex<Device>>>,
    /// Some device has a `refuse` window: the accept loop must watch the clock.
    watches_clock: bool,
}

impl Farm {
    /// Validate `scenario`, bind every endpoint and start serving. Must be called
    /// inside a tokio runtime.
    pub async fn start(scenario: &Scenario, options: FarmOptions) -> Result<FarmHandle, FarmError> {
        scenario.validate()?;
        let seed = options.seed.unwrap_or(scenario.seed);
        let clock = options
            .clock
            .clone()
            .unwrap_or_else(|| Clock::real(scenario.start_s, options.speed));
        let signals = Signals::new(&scenario.signals, seed);

        // Group devices by endpoint, in order of first appearance.
        let mut order: Vec<String> = Vec::new();
        let mut groups: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, d) in scenario.devices.iter().enumerate() {
            let e = d.endpoint_name().to_owned();
            if !groups.contains_key(&e) {
                order.push(e.clone());
            }
            groups.entry(e).or_default().push(i);
        }

        let devices: Vec<(String, Arc<Mutex<Device>>)> = scenario
            .devices
            .iter()
            .map(|d| (d.id.clone(), Arc::new(Mutex::new(Device::new(d, &signals)))))
            .collect();

        let mut listeners = Vec::new();
        let mut infos = Vec::new();
        let mut endpoints = Vec::new();
        for name in &order {
            let members = groups.get(name).cloned().unwrap_or_default();
            let Some(&first) = members.first() else {
                continue;
            };
            let spec = &scenario.devices[first];
            let port = if options.ephemeral_ports {
                0
            } else {
                spec.port
            };
            let addr = SocketAddr::new(options.bind_ip, port);
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|source| FarmError::Bind {
                    endpoint: name.clone(),
                    addr,
                    source,
                })?;
            let bound = listener.local_addr().map_err(|source| FarmError::Bind {
                endpoint: name.clone(),
                addr,
                source,
            })?;
            infos.push(EndpointInfo {
                name: name.clone(),
                addr: bound,
                framing: spec.framing,
                devices: members
                    .iter()
                    .map(|&i| (scenario.devices[i].id.clone(), scenario.devices[i].unit_id))
                    .collect(),
            });
            endpoints.push(Endpoint {
                info_index: infos.len() - 1,
                framing: spec.framing,
                units: members
                    .iter()
                    .map(|&i| (scenario.devices[i].unit_id, devices[i].1.clone()))
                    .collect(),
                watches_clock: members.iter().any(|&i| {
                    scenario.devices[i]
                        .offline
                        .iter()
                        .any(|w| w.mode == OfflineMode::Refuse)
                }),
            });
            listeners.push(listener);
        }

        let shared = Arc::new(Shared {
            scenario_name: scenario.name.clone(),
            seed,
            clock,
            signals,
            devices,
            endpoints: infos,
            counters: Mutex::new(FarmCounters::default()),
        });
        let (shutdown, rx) = watch::channel(false);
        let tasks = endpoints
            .into_iter()
            .zip(listeners)
            .map(|(ep, l)| tokio::spawn(run_endpoint(shared.clone(), Arc::new(ep), l, rx.clone())))
            .collect();
        Ok(FarmHandle {
            shared,
            shutdown,
            tasks,
        })
    }
}

impl FarmHandle {
    /// Endpoints and their bound addresses.
    pub fn endpoints(&self) -> &[EndpointInfo] {
        &self.shared.endpoints
    }

    /// Bound address of the endpoint serving `device_id`.
    pub fn addr_of(&self, device_id: &str) -> Option<SocketAddr> {
        self.shared
            .endpoints
            .iter()
            .find(|e| e.devices.iter().any(|(d, _)| d == device_id))
            .map(|e| e.addr)
    }

    /// The scenario clock (set it by hand if the farm runs on a manual clock).
    pub fn clock(&self) -> &Clock {
        &self.shared.clock
    }

    /// What the farm serves right now.
    pub fn status(&self) -> FarmStatus {
        status_of(&self.shared)
    }

    /// A cheap, clonable function returning the status, for the status server.
    pub fn status_source(&self) -> StatusSource {
        StatusSource(self.shared.clone())
    }

    /// Stop accepting, close every connection, wait for the tasks to end.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// A handle that produces [`FarmStatus`] snapshots (kept alive by the status server).
#[derive(Clone)]
pub struct StatusSource(Arc<Shared>);

impl StatusSource {
    /// A snapshot now.
    pub fn status(&self) -> FarmStatus {
        status_of(&self.0)
    }
}

fn status_of(shared: &Shared) -> FarmStatus {
    let t = shared.clock.now_s();
    let c = lock(&shared.counters);
    FarmStatus {
        scenario: shared.scenario_name.clone(),
        t_s: t,
        speed: shared.clock.speed(),
        seed: shared.seed,
        endpoints: shared.endpoints.clone(),
        devices: shared
            .devices
            .iter()
            .map(|(_, d)| lock(d).status(t, &shared.signals))
            .collect(),
        connections_accepted: c.accepted,
        connections_broken: c.broken,
        crc_errors: c.crc_errors,
    }
}

fn endpoint_refusing(ep: &Endpoint, t: f64) -> bool {
    !ep.units.is_empty()
        && ep
            .units
            .values()
            .all(|d| lock(d).offline_mode(t) == Some(OfflineMode::Refuse))
}

async fn run_endpoint(
    shared: Arc<Shared>,
    ep: Arc<Endpoint>,
    listener: TcpListener,
    mut shutdown: watch::Receiver<bool>,
) {
    let addr = shared.endpoints[ep.info_index].addr;
    let mut listener = Some(listener);
    loop {
        let refusing = ep.watches_clock && endpoint_refusing(&ep, shared.clock.now_s());
        if refusing {
            listener = None;
        } else if listener.is_none() {
            // Port comes back; if someone else took it meanwhile, try again later.
            listener = TcpListener::bind(addr).await.ok();
        }
        let accept = async {
            match &listener {
                Some(l) => l.accept().await.ok(),
                None => std::future::pending().await,
            }
        };
        // Endpoints without refuse windows sleep in accept; no idle wake-ups.
        let tick = async {
            if ep.watches_clock {
                tokio::time::sleep(OFFLINE_POLL).await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            conn = accept => {
                if let Some((stream, _)) = conn {
                    lock(&shared.counters).accepted += 1;
                    let _ = stream.set_nodelay(true);
                    tokio::spawn(serve_connection(shared.clone(), ep.clone(), stream, shutdown.clone()));
                }
            }
            _ = tick => {}
            _ = shutdown.changed() => break,
        }
    }
}

enum Answer {
    /// Responses appended to the output buffer (possibly none).
    Continue { delay_ms: u64 },
    /// Close the connection.
    Close { broken: bool },
}

/// Answer every complete frame at the start of `buf`; returns bytes consumed.
fn answer_frames(shared: &Shared, ep: &Endpoint, buf: &[u8], out: &mut Vec<u8>) -> (usize, Answer) {
    let mut consumed = 0;
    let mut delay_ms = 0;
    let t = shared.clock.now_s();
    loop {
        let rest = &buf[consumed..];
        let parsed = match ep.framing {
            Framing::Tcp => frame::parse_tcp(rest),
            Framing::RtuOverTcp => frame::parse_rtu(rest),
        };
        let (transaction, unit, pdu_range, len) = match parsed {
            Parsed::Incomplete => return (consumed, Answer::Continue { delay_ms }),
            Parsed::Broken => return (consumed, Answer::Close { broken: true }),
            Parsed::BadCrc { len } => {
                lock(&shared.counters).crc_errors += 1;
                consumed += len;
                continue;
            }
            Parsed::Frame {
                transaction,
                unit,
                pdu,
                len,
            } => (transaction, unit, pdu, len),
        };
        let pdu_bytes = &rest[pdu_range];
        consumed += len;
        let begin = |out: &mut Vec<u8>| match ep.framing {
            Framing::Tcp => frame::begin_tcp(out, transaction, unit),
            Framing::RtuOverTcp => frame::begin_rtu(out, unit),
        };
        let finish = |out: &mut Vec<u8>, at: usize| match ep.framing {
            Framing::Tcp => frame::finish_tcp(out, at),
            Framing::RtuOverTcp => frame::finish_rtu(out, at),
        };
        let fc = pdu_bytes.first().copied().unwrap_or(0);
        let Some(device) = ep.units.get(&unit) else {
            // No such unit: a gateway says so on TCP; on a serial line nobody answers.
            if ep.framing == Framing::Tcp {
                let at = begin(out);
                pdu::write_exception(out, fc, ExceptionCode::GatewayTargetFailedToRespond);
                finish(out, at);
            }
            continue;
        };
        let mut dev = lock(device);
        match dev.offline_mode(t) {
            Some(OfflineMode::Silent) => {
                dev.count_unanswered();
                continue;
            }
            Some(OfflineMode::Refuse) => {
                dev.count_unanswered();
                if ep.units.len() == 1 {
                    return (consumed, Answer::Close { broken: false });
                }
                let at = begin(out);
                pdu::write_exception(out, fc, ExceptionCode::GatewayTargetFailedToRespond);
                finish(out, at);
                continue;
            }
            None => {}
        }
        delay_ms = delay_ms.max(dev.spec().response_delay_ms);
        let at = begin(out);
        dev.handle(pdu_bytes, t, &shared.signals, out);
        finish(out, at);
    }
}

async fn serve_connection(
    shared: Arc<Shared>,
    ep: Arc<Endpoint>,
    mut stream: TcpStream,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut buf: Vec<u8> = Vec::with_capacity(8192);
    let mut out: Vec<u8> = Vec::with_capacity(8192);
    let mut chunk = [0u8; 8192];
    loop {
        let n = tokio::select! {
            r = stream.read(&mut chunk) => match r {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            _ = shutdown.changed() => return,
        };
        buf.extend_from_slice(&chunk[..n]);
        out.clear();
        let (consumed, answer) = answer_frames(&shared, &ep, &buf, &mut out);
        buf.drain(..consumed);
        // A client that never completes a frame cannot make us buffer forever.
        if buf.len() > 4 * 1024 {
            lock(&shared.counters).broken += 1;
            return;
        }
        match answer {
            Answer::Continue { delay_ms } => {
                if delay_ms > 0 {
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(delay_ms)) => {}
                        _ = shutdown.changed() => return,
                    }
                }
                if !out.is_empty() && stream.write_all(&out).await.is_err() {
                    return;
                }
            }
            Answer::Close { broken } => {
                if !out.is_empty() {
                    let _ = stream.write_all(&out).await;
                }
                if broken {
                    lock(&shared.counters).broken += 1;
                }
                return;
            }
        }
    }
}
