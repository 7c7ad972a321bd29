//! The running gateway: sources → engine → outputs.
//!
//! ```text
//!  Modbus links, MQTT devices
//!  (one task each)            ──► mpsc (bounded, backpressure) ──► engine task
//!                                                                     │ readings, events
//!                                                                     ▼
//!                                                                  outputs
//! ```
//!
//! The engine task owns the [`Engine`]: it takes batches of readings from the sources,
//! ticks the engine every `TICK` so delays, stale detection and shelve expiry happen
//! without readings, and hands every settled reading and event to the outputs. On
//! shutdown (SIGINT/SIGTERM, or the shutdown signal in tests) the sources stop at a
//! safe point, the engine drains what they already sent, and the outputs flush.
//!
//! Two doors lead into the engine task without a lock on its hot path:
//! - the **control channel** ([`Control`]): acknowledge, shelve, unshelve, out of
//!   service, maintenance (and injected readings). Each request carries a oneshot
//!   for the answer; the events a request causes go through the same [`Outputs`] as
//!   every other event, so an acknowledgement is committed to the store before the
//!   caller hears `Ok`.
//! - the **live state** ([`LiveState`], [`LiveFeed`]): the engine task keeps a
//!   [`Snapshot`] table up to date in place and broadcasts each change as a [`Delta`]:
//!   alarm transitions and risk changes at once in small frames of their own,
//!   value-only changes at most every [`LIVE_MIN_INTERVAL`]. Readers (API,
//!   WebSocket) clone an `Arc` and never block the engine (see `gateway/live.rs`).

use crate::config::Config;
use crate::engine::{AlarmEvent, ControlError, Engine, EngineSpec, Event};
use crate::model::{AlarmId, PointId, Reading, Timestamp};
use crate::sources::modbus::build;
use crate::sources::modbus::poller::{DeviceStats, LinkSpec, ModbusSource, WriteHandle};
use crate::sources::mqtt::{self, MqttDeviceSpec, MqttSource, MqttStats};
use crate::store::StoreWriter;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};

/// How often the engine is ticked when no reading arrives.
const TICK: Duration = Duration::from_millis(250);

/// Batches of readings waiting for the engine. When full, sources wait.
const READING_QUEUE: usize = 1024;

/// Control requests waiting for the engine. When full, callers wait (`Control`'s
/// methods are async); nothing is dropped.
const CONTROL_QUEUE: usize = 64;

/// Where settled readings and engine events go. The gateway calls these from the
/// engine task, in order, and waits for each: an output that is slow slows the engine
/// and, through the bounded queue, the sources — nothing is dropped.
pub trait Outputs: Send + 'static {
    /// A batch of readings, with the quality the engine settled.
    fn readings(&mut self, readings: Vec<Reading>) -> impl Future<Output = ()> + Send;
    /// Engine events (alarm transitions, risk changes, floods, stale points). Alarm
    /// transitions must be durable when this returns.
    fn events(&mut self, spec: &EngineSpec, events: &[Event]) -> impl Future<Output = ()> + Send;
    /// Shutdown: flush whatever is buffered.
    fn flush(&mut self) -> impl Future<Output = ()> + Send {
        async {}
    }
}

/// Structured log lines: every alarm transition, risk change and flood at warn,
/// readings at debug.
#[derive(Debug, Default)]
pub struct LogOutputs {
    pub readings: u64,
}

impl Outputs for LogOutputs {
    async fn readings(&mut self, readings: Vec<Reading>) {
        self.readings += readings.len() as u64;
        for r in &readings {
            tracing::debug!(point = r.point.0, ts = r.ts.0, value = r.value, quality = %r.quality, "reading");
        }
    }

    async fn events(&mut self, spec: &EngineSpec, events: &[Event]) {
        for e in events {
            log_event(spec, e);
        }
    }
}

/// The embedded store: readings to the durable log (on change + heartbeat), alarm
/// transitions committed with fsync before `events` returns, then logged.
pub struct StoreOutputs {
    pub writer: StoreWriter,
    /// Sinks to wake as soon as alarm transitions are committed (the uplink), so an
    /// alarm leaves without waiting for their next look at the log.
    pub wake: Vec<crate::uplink::UplinkSink>,
    /// Readings the store refused because its writer stopped (logged once).
    pub lost: u64,
}

impl Outputs for StoreOutputs {
    async fn readings(&mut self, readings: Vec<Reading>) {
        if let Err(back) = self.writer.send_readings(readings).await {
            if self.lost == 0 {
                tracing::error!("the store writer stopped: readings can no longer be stored");
            }
            self.lost += back.len() as u64;
        }
    }

    async fn events(&mut self, spec: &EngineSpec, events: &[Event]) {
        let alarms: Vec<AlarmEvent> = events
            .iter()
            .filter_map(|e| match e {
                Event::Alarm(a) => Some(a.clone()),
                _ => None,
            })
            .collect();
        if !alarms.is_empty() {
            match self.writer.commit_alarms(alarms).await {
                Ok(_) => self.wake.iter().for_each(|s| s.wake()),
                Err(e) => {
                    tracing::error!(error = %e, "alarm transitions could not be committed to the store")
                }
            }
        }
        let stale: Vec<Reading> = events
            .iter()
            .filter_map(|e| match e {
                Event::Stale(r) => Some(*r),
                _ => None,
            })
            .collect();
        if !stale.is_empty() {
            self.readings(stale).await;
        }
        for e in events {
            log_event(spec, e);
        }
    }

    async fn flush(&mut self) {
        if let Err(e) = self.writer.shutdown().await {
            tracing::error!(error = %e, "closing the store");
        }
    }
}

/// Log one event as a structured line.
pub fn log_event(spec: &EngineSpec, e: &Event) {
    let point_id = |p: u32| spec.points.get(p as usize).map_or("?", |p| p.id.as_str());
    match e {
        Event::Alarm(a) => {
            let al = &a.alarm;
            tracing::warn!(
                alarm = al.id.0,
                point = point_id(al.point.0),
                kind = al.kind.as_str(),
                transition = a.transition.as_str(),
                state = al.state.as_str(),
                grade = %al.grade_name,
                colour = al.colour.as_str(),
                power_cut = al.power_cut,
                value = al.value,
                ts = a.ts.0,
                "alarm"
            );
        }
        Event::Risk(r) => {
            let source = spec
                .hazard_sources
                .get(r.source.0 as usize)
                .map_or("?", |h| h.id.as_str());
            tracing::warn!(
                hazard_source = source,
                previous = r.previous.as_str(),
                colour = r.colour.as_str(),
                ts = r.ts.0,
                "risk colour"
            );
        }
        Event::Flood {
            change,
            per_10min,
            ts,
        } => {
            tracing::warn!(change = ?change, per_10min, ts = ts.0, "alarm flood");
        }
        Event::Stale(r) => {
            tracing::warn!(
                point = point_id(r.point.0),
                ts = r.ts.0,
                "point stale: no reading in its window"
            );
        }
    }
}

/// Wall-clock now, in engine time.
pub fn now() -> Timestamp {
    crate::sources::wall_now()
}

/// A gateway built from a configuration, before it runs.
pub struct Plan {
    pub spec: EngineSpec,
    pub links: Vec<LinkSpec>,
    pub mqtt: Vec<MqttDeviceSpec>,
    /// Alarm episodes open in the durable log when the gateway last stopped, with
    /// `point` already mapped to this spec; the engine continues them.
    pub restore: Vec<crate::engine::Alarm>,
    /// `system:storage`: 1 while the store writes normally, 0 while it is degraded
    /// (disk full or the disk limit forced a loss) — one alarm for the dispatch room.
    pub storage_point: PointId,
}

impl Plan {
    pub fn from_config(config: &Config) -> Plan {
        let mut spec = config.engine_spec();
        let links = build::links(config, &mut spec);
        let mqtt = mqtt::subscriptions(config, &mut spec);
        let storage_point =
            crate::sources::push_status_point(&mut spec, "system:storage".into(), "存储降级");
        Plan {
            spec,
            links,
            mqtt,
            restore: Vec::new(),
            storage_point,
        }
    }
}

// ---- control channel ----

/// A request to the engine task.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Acknowledge an alarm: operator name and comment.
    Acknowledge {
        alarm: AlarmId,
        by: String,
        comment: String,
    },
    /// Shelve an alarm for `duration_ms` (power-cut alarms cannot be shelved).
    Shelve {
        alarm: AlarmId,
        by: String,
        reason: String,
        duration_ms: u64,
    },
    /// End a shelve.
    Unshelve { alarm: AlarmId },
    /// Take a point out of service, or put it back.
    OutOfService {
        point: PointId,
        out_of_service: bool,
    },
    /// Put a point into maintenance (calibration) mode, or take it out.
    Maintenance { point: PointId, maintenance: bool },
    /// Evaluate these readings as if a source had sent them (tests, manual entry).
    Inject(Vec<Reading>),
}

/// Why a control request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlRequestError {
    /// The engine refused it (unknown alarm, already acknowledged, …).
    #[error(transparent)]
    Refused(#[from] ControlError),
    /// The engine task has stopped (shutdown): the request was not applied.
    #[error("the engine has stopped")]
    Stopped,
}

struct ControlRequest {
    command: Command,
    reply: oneshot::Sender<Result<(), ControlError>>,
}

/// Handle on the engine task's control channel. Cheap to clone.
#[derive(Clone)]
pub struct Control {
    tx: mpsc::Sender<ControlRequest>,
}

impl Control {
    /// Send a command and wait until the engine applied it and its events went
    /// through the outputs (committed to the store for [`StoreOutputs`]).
    pub async fn send(&self, command: Command) -> Result<(), ControlRequestError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(ControlRequest { command, reply })
            .await
            .map_err(|_| ControlRequestError::Stopped)?;
        match answer.await {
            Ok(r) => r.map_err(ControlRequestError::Refused),
            Err(_) => Err(ControlRequestError::Stopped),
        }
    }

    /// The engine task has ended (or is ending): requests will fail.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    /// Requests waiting in the channel (for metrics).
    pub fn queued(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }
}

// ---- live state (see `live`) ----

mod live;
pub use live::{
    snapshot, Delta, HazardLive, LiveFeed, LiveState, PointLive, Snapshot, Subscription,
    LIVE_MIN_INTERVAL,
};
use live::{LiveSender, Publisher};

/// A running gateway.
pub struct Running {
    pub device_stats: Vec<(String, Arc<DeviceStats>)>,
    pub mqtt_stats: Vec<(String, Arc<MqttStats>)>,
    pub writer: WriteHandle,
    /// Requests into the engine task (acknowledge, shelve, …).
    pub control: Control,
    /// The live state the engine task keeps (REST, new WebSocket clients).
    pub live: LiveState,
    /// The live changes as they happen (WebSocket clients).
    pub feed: LiveFeed,
    engine_task: tokio::task::JoinHandle<Engine>,
    modbus: ModbusSource,
    mqtt: MqttSource,
}

impl Running {
    /// Wait until shutdown completed; returns the engine in its final state.
    pub async fn join(self) -> Option<Engine> {
        self.modbus.join().await;
        self.mqtt.join().await;
        self.engine_task.await.ok()
    }
}

/// Start the sources and the engine task. Stop by setting `shutdown` to `true`.
pub fn start<O: Outputs + 'static>(
    plan: Plan,
    outputs: O,
    shutdown: watch::Receiver<bool>,
    first_alarm_id: u64,
) -> Running {
    let (tx, rx) = mpsc::channel(READING_QUEUE);
    let modbus = ModbusSource::start(plan.links, tx.clone(), shutdown.clone());
    let mqtt = MqttSource::start(plan.mqtt, tx, shutdown.clone());
    let mut engine = Engine::new(plan.spec, now(), first_alarm_id);
    if !plan.restore.is_empty() {
        let mut restored_events = Vec::new();
        let count = plan.restore.len();
        let refused = engine.restore(plan.restore, now(), &mut restored_events);
        tracing::info!(
            restored = count - refused.len(),
            refused = refused.len(),
            "open alarms restored from the store"
        );
    }
    let (live_tx, live, feed) = LiveSender::new(&mut engine, now());
    let (control_tx, control_rx) = mpsc::channel(CONTROL_QUEUE);
    let engine_task = tokio::spawn(engine_loop(
        engine, rx, control_rx, live_tx, outputs, shutdown,
    ));
    Running {
        device_stats: modbus.stats.clone(),
        mqtt_stats: mqtt.stats.clone(),
        writer: modbus.writer.clone(),
        control: Control { tx: control_tx },
        live,
        feed,
        engine_task,
        modbus,
        mqtt,
    }
}

/// Apply one control command to the engine.
fn apply(
    engine: &mut Engine,
    command: Command,
    events: &mut Vec<Event>,
) -> Result<(), ControlError> {
    let t = now();
    match command {
        Command::Acknowledge { alarm, by, comment } => {
            engine.acknowledge(alarm, &by, &comment, t, events)
        }
        Command::Shelve {
            alarm,
            by,
            reason,
            duration_ms,
        } => engine.shelve(alarm, &by, &reason, duration_ms, t, events),
        Command::Unshelve { alarm } => engine.unshelve(alarm, t, events),
        Command::OutOfService {
            point,
            out_of_service,
        } => engine.set_out_of_service(point, out_of_service, t, events),
        Command::Maintenance { point, maintenance } => engine.set_maintenance(point, maintenance),
        Command::Inject(_) => Ok(()),
    }
}

async fn engine_loop<O: Outputs>(
    mut engine: Engine,
    mut rx: mpsc::Receiver<Vec<Reading>>,
    mut control: mpsc::Receiver<ControlRequest>,
    live: LiveSender,
    mut outputs: O,
    mut shutdown: watch::Receiver<bool>,
) -> Engine {
    let mut events = Vec::new();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sources_open = true;
    let mut control_open = true;
    let mut stopping = *shutdown.borrow();
    let mut publisher = Publisher {
        tx: live,
        seq: 0,
        dirty: false,
        last: tokio::time::Instant::now(),
    };
    loop {
        let mut reply = None;
        let mut control_urgent = false;
        tokio::select! {
            batch = rx.recv(), if sources_open => match batch {
                Some(batch) => {
                    let settled: Vec<Reading> =
                        batch.into_iter().map(|r| engine.on_reading(r, &mut events)).collect();
                    // Alarm transitions first: they are committed before the readings
                    // that caused them are queued behind bulk data.
                    if !events.is_empty() {
                        outputs.events(engine.spec(), &events).await;
                        events.clear();
                        publisher.publish(&mut engine, true);
                    }
                    outputs.readings(settled).await;
                    publisher.dirty = true;
                }
                None => sources_open = false,
            },
            request = control.recv(), if control_open => match request {
                Some(ControlRequest { command, reply: answer }) => {
                    // Injected readings publish like source batches (at once only
                    // with events); every other command shows on the board at once.
                    control_urgent = !matches!(command, Command::Inject(_));
                    let result = match command {
                        Command::Inject(batch) => {
                            let settled: Vec<Reading> = batch
                                .into_iter()
                                .map(|r| engine.on_reading(r, &mut events))
                                .collect();
                            if !events.is_empty() {
                                outputs.events(engine.spec(), &events).await;
                                events.clear();
                                publisher.publish(&mut engine, true);
                            }
                            outputs.readings(settled).await;
                            Ok(())
                        }
                        other => apply(&mut engine, other, &mut events),
                    };
                    publisher.dirty = true;
                    reply = Some((answer, result));
                }
                None => control_open = false,
            },
            _ = tick.tick() => engine.tick(now(), &mut events),
            changed = shutdown.changed(), if !stopping => {
                // Sources stop at their next safe point and close the channel; the
                // loop drains what they sent before it ends.
                stopping = changed.is_err() || *shutdown.borrow();
            }
        }
        let urgent = !events.is_empty() || control_urgent;
        if !events.is_empty() {
            outputs.events(engine.spec(), &events).await;
            events.clear();
        }
        publisher.publish(&mut engine, urgent);
        // The answer goes out only after the events are through the outputs (durable)
        // and the live state shows the change. A caller that gave up is no error.
        if let Some((answer, result)) = reply {
            let _ = answer.send(result);
        }
        if stopping && !sources_open {
            break;
        }
    }
    outputs.flush().await;
    engine
}

/// Reports the store's state to the engine as the `system:storage` point: 1 while it
/// writes normally, 0 while degraded (disk full, or the disk limit forced a loss), so a
/// degraded store raises one alarm that reaches the dashboard and the uplink.
pub async fn watch_storage(
    status: std::sync::Arc<crate::store::StoreStatus>,
    point: crate::model::PointId,
    control: Control,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut last = None;
    let mut every = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = shutdown.changed() => return,
        }
        let degraded = status.degraded.load(std::sync::atomic::Ordering::Relaxed);
        if last == Some(degraded) {
            continue;
        }
        if degraded {
            tracing::error!("storage degraded: the disk is full or its limit forced a loss");
        } else if last.is_some() {
            tracing::info!("storage back to normal");
        }
        let reading = crate::model::Reading {
            point,
            ts: now(),
            value: if degraded { 0.0 } else { 1.0 },
            quality: crate::model::Quality::Good,
        };
        if control.send(Command::Inject(vec![reading])).await.is_err() {
            return;
        }
        last = Some(degraded);
    }
}
