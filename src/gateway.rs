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
//! A source's batch may carry a [`Receipt`]: the engine hands it to the outputs with
//! the batch's settled readings ([`Outputs::readings_with_receipt`]), and the store
//! confirms it once they are committed. The MQTT source acknowledges its messages to
//! the broker only then, so a `kill -9` anywhere on the way loses nothing.
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

use crate::actions::{ActionError, ActionSpec, ActionView, Controller, Output};
use crate::config::Config;
use crate::engine::{AlarmEvent, ControlError, Engine, EngineSpec, Event};
use crate::model::{AlarmId, Batch, PointId, Reading, Receipt, Timestamp};
use crate::sources::modbus::build;
use crate::sources::modbus::poller::{DeviceStats, LinkSpec, ModbusSource, WriteHandle};
use crate::sources::mqtt::{self, MqttDeviceSpec, MqttSource, MqttStats};
use crate::store::StoreWriter;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};

/// How often the engine is ticked when no reading arrives.
const TICK: Duration = Duration::from_millis(250);

/// Batches of readings waiting for the engine. When full, sources wait.
const READING_QUEUE: usize = 1024;

/// Relay write answers waiting for the engine task.
const WRITE_ANSWERS: usize = 256;

/// Control requests waiting for the engine. When full, callers wait (`Control`'s
/// methods are async); nothing is dropped.
const CONTROL_QUEUE: usize = 64;

/// Where settled readings and engine events go. The gateway calls these from the
/// engine task, in order, and waits for each: an output that is slow slows the engine
/// and, through the bounded queue, the sources — nothing is dropped.
pub trait Outputs: Send + 'static {
    /// A batch of readings, with the quality the engine settled.
    fn readings(&mut self, readings: Vec<Reading>) -> impl Future<Output = ()> + Send;
    /// A source's batch, settled, with the source's receipt: confirm it once the
    /// readings are as safe as this output makes them (durable, for the store). By
    /// default: after [`Outputs::readings`].
    fn readings_with_receipt(
        &mut self,
        readings: Vec<Reading>,
        receipt: Option<Receipt>,
    ) -> impl Future<Output = ()> + Send {
        async move {
            self.readings(readings).await;
            if let Some(r) = receipt {
                r.confirm();
            }
        }
    }
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
        self.readings_with_receipt(readings, None).await;
    }

    /// The receipt is confirmed by the store writer after the commit; when the writer
    /// has stopped it is dropped unconfirmed.
    async fn readings_with_receipt(&mut self, readings: Vec<Reading>, receipt: Option<Receipt>) {
        if let Err(back) = self.writer.send_batch(Batch { readings, receipt }).await {
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
    /// Safety actions (power cut, feedback check, fault lockout).
    pub actions: Vec<ActionSpec>,
}

impl Plan {
    pub fn from_config(config: &Config) -> Plan {
        let mut spec = config.engine_spec();
        let links = build::links(config, &mut spec);
        let mqtt = mqtt::subscriptions(config, &mut spec);
        let storage_point =
            crate::sources::push_status_point(&mut spec, "system:storage".into(), "存储降级");
        let actions = crate::actions::build::actions(config, &mut spec, &links);
        Plan {
            spec,
            links,
            mqtt,
            restore: Vec::new(),
            storage_point,
            actions,
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
    /// Cut the power of a safety action by hand.
    ManualCut { action: String },
    /// Release a safety action: end a manual cut, or restore a latched one.
    Release { action: String },
}

/// Why a control request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlRequestError {
    /// The engine refused it (unknown alarm, already acknowledged, …).
    #[error(transparent)]
    Refused(#[from] ControlError),
    /// The safety-action controller refused it (unknown action, cause present, …).
    #[error(transparent)]
    Action(#[from] ActionError),
    /// The engine task has stopped (shutdown): the request was not applied.
    #[error("the engine has stopped")]
    Stopped,
}

struct ControlRequest {
    command: Command,
    reply: oneshot::Sender<Result<(), ControlRequestError>>,
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
        answer.await.unwrap_or(Err(ControlRequestError::Stopped))
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

// ---- safety actions ----

/// Upper bounds (ms) of the reading → cut-write histogram buckets.
pub const CUT_LATENCY_BUCKETS_MS: [u64; 11] = [1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2000];

/// Counters of the safety actions, for `/metrics`.
#[derive(Debug, Default)]
pub struct ActionStats {
    /// Cut writes the relays acknowledged.
    pub cuts: AtomicU64,
    /// Restore writes the relays acknowledged.
    pub restores: AtomicU64,
    /// Writes that failed (each retry counts).
    pub write_failures: AtomicU64,
    /// Reading that caused a cut → the relay acknowledged the write: histogram over
    /// [`CUT_LATENCY_BUCKETS_MS`] (cumulative counts are built when exported), sum
    /// and count, and the largest seen.
    pub cut_latency_buckets: [AtomicU64; CUT_LATENCY_BUCKETS_MS.len() + 1],
    pub cut_latency_sum_ms: AtomicU64,
    pub cut_latency_count: AtomicU64,
    pub cut_latency_max_ms: AtomicU64,
}

impl ActionStats {
    fn record_cut(&self, ms: u64) {
        let slot = CUT_LATENCY_BUCKETS_MS
            .iter()
            .position(|b| ms <= *b)
            .unwrap_or(CUT_LATENCY_BUCKETS_MS.len());
        self.cut_latency_buckets[slot].fetch_add(1, Ordering::Relaxed);
        self.cut_latency_sum_ms.fetch_add(ms, Ordering::Relaxed);
        self.cut_latency_count.fetch_add(1, Ordering::Relaxed);
        self.cut_latency_max_ms.fetch_max(ms, Ordering::Relaxed);
    }
}

/// The answer to one relay write, back to the engine task.
struct WriteDone {
    action: usize,
    relay: usize,
    command: u64,
    cut: bool,
    cause_ts: Timestamp,
    result: Result<(), String>,
}

/// Live view of the safety actions.
pub type ActionsLive = watch::Receiver<Arc<Vec<ActionView>>>;

/// The safety-action controller and its IO, owned by the engine task.
struct Safety {
    ctl: Controller,
    writer: WriteHandle,
    done_tx: mpsc::Sender<WriteDone>,
    /// Answers that did not need a round trip (the write could not be queued).
    immediate: Vec<WriteDone>,
    stats: Arc<ActionStats>,
    view: watch::Sender<Arc<Vec<ActionView>>>,
}

impl Safety {
    /// Carry out the controller's outputs: writes go to their links (in order, without
    /// waiting), status readings are returned for the engine.
    fn dispatch(&mut self, out: Vec<Output>) -> Vec<Reading> {
        let mut readings = Vec::new();
        for o in out {
            match o {
                Output::Status(r) => readings.push(r),
                Output::Write {
                    action,
                    relay,
                    command,
                    device,
                    write,
                    cut,
                    cause_ts,
                } => {
                    let id = &self.ctl.specs()[action].id;
                    tracing::warn!(
                        action = %id,
                        device = %device,
                        write = ?write,
                        cut,
                        since_reading_ms = now().0 - cause_ts.0,
                        "safety action: writing relay"
                    );
                    let done = move |result| WriteDone {
                        action,
                        relay,
                        command,
                        cut,
                        cause_ts,
                        result,
                    };
                    match self.writer.submit(&device, write) {
                        Ok(answer) => {
                            let tx = self.done_tx.clone();
                            tokio::spawn(async move {
                                let result = match answer.await {
                                    Ok(r) => r.map_err(|e| e.to_string()),
                                    Err(_) => Err("the link ended before the write".to_owned()),
                                };
                                let _ = tx.send(done(result)).await;
                            });
                        }
                        Err(e) => self.immediate.push(done(Err(e.to_string()))),
                    }
                }
            }
        }
        readings
    }

    /// Take one write answer.
    fn write_done(&mut self, d: WriteDone, out: &mut Vec<Output>) {
        let id = &self.ctl.specs()[d.action].id;
        match &d.result {
            Ok(()) => {
                let ms = (now().0 - d.cause_ts.0).max(0) as u64;
                if d.cut {
                    self.stats.cuts.fetch_add(1, Ordering::Relaxed);
                    self.stats.record_cut(ms);
                } else {
                    self.stats.restores.fetch_add(1, Ordering::Relaxed);
                }
                tracing::warn!(action = %id, cut = d.cut, since_reading_ms = ms, "safety action: relay written");
            }
            Err(e) => {
                self.stats.write_failures.fetch_add(1, Ordering::Relaxed);
                tracing::error!(action = %id, cut = d.cut, error = %e, "safety action: relay write failed");
            }
        }
        self.ctl
            .write_result(d.action, d.relay, d.command, d.result, now(), out);
    }

    fn publish(&self) {
        self.view.send_replace(Arc::new(self.ctl.view()));
    }
}

/// Feed `batch` through the engine and the safety controller until nothing more
/// follows: readings → events → controller → writes and status readings → engine.
/// Returns the settled readings (status readings included); events collect in
/// `events`.
fn evaluate(
    engine: &mut Engine,
    safety: &mut Option<Safety>,
    batch: Vec<Reading>,
    mut out: Vec<Output>,
    events: &mut Vec<Event>,
) -> Vec<Reading> {
    let Some(safety) = safety.as_mut() else {
        return batch
            .into_iter()
            .map(|r| engine.on_reading(r, events))
            .collect();
    };
    let t = now();
    let mark = events.len();
    let mut settled = Vec::with_capacity(batch.len());
    for r in batch {
        let r = engine.on_reading(r, events);
        safety.ctl.on_reading(&r, t, &mut out);
        settled.push(r);
    }
    let mut seen = mark;
    loop {
        for e in &events[seen..] {
            safety.ctl.on_event(e, t, &mut out);
        }
        seen = events.len();
        for d in std::mem::take(&mut safety.immediate) {
            safety.write_done(d, &mut out);
        }
        if out.is_empty() {
            break;
        }
        for r in safety.dispatch(std::mem::take(&mut out)) {
            let r = engine.on_reading(r, events);
            settled.push(r);
        }
    }
    if safety.ctl.take_changed() {
        safety.publish();
    }
    settled
}

/// A running gateway.
pub struct Running {
    pub device_stats: Vec<(String, Arc<DeviceStats>)>,
    pub mqtt_stats: Vec<(String, Arc<MqttStats>)>,
    pub writer: WriteHandle,
    /// Requests into the engine task (acknowledge, shelve, …).
    pub control: Control,
    /// The live state the engine task keeps (REST, new WebSocket clients).
    pub live: LiveState,
    /// The safety actions' live state.
    pub actions: ActionsLive,
    pub action_stats: Arc<ActionStats>,
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
    let action_stats = Arc::new(ActionStats::default());
    let (view_tx, actions) = watch::channel(Arc::new(Vec::new()));
    let (done_tx, done_rx) = mpsc::channel(WRITE_ANSWERS);
    let safety = (!plan.actions.is_empty()).then(|| {
        let names = engine.spec().points.iter().map(|p| p.id.clone()).collect();
        Safety {
            ctl: Controller::new(plan.actions).with_names(names),
            writer: modbus.writer.clone(),
            done_tx,
            immediate: Vec::new(),
            stats: action_stats.clone(),
            view: view_tx,
        }
    });
    let (live_tx, live, feed) = LiveSender::new(&mut engine, now());
    let (control_tx, control_rx) = mpsc::channel(CONTROL_QUEUE);
    let engine_task = tokio::spawn(engine_loop(
        engine, safety, done_rx, rx, control_rx, live_tx, outputs, shutdown,
    ));
    Running {
        device_stats: modbus.stats.clone(),
        mqtt_stats: mqtt.stats.clone(),
        writer: modbus.writer.clone(),
        control: Control { tx: control_tx },
        live,
        actions,
        action_stats,
        feed,
        engine_task,
        modbus,
        mqtt,
    }
}

/// Apply one control command to the engine (and the safety controller); controller
/// outputs collect in `out`.
fn apply(
    engine: &mut Engine,
    safety: &mut Option<Safety>,
    command: Command,
    events: &mut Vec<Event>,
    out: &mut Vec<Output>,
) -> Result<(), ControlRequestError> {
    let t = now();
    let no_action = |id: &str| ControlRequestError::Action(ActionError::Unknown(id.to_owned()));
    match command {
        Command::Acknowledge { alarm, by, comment } => {
            engine.acknowledge(alarm, &by, &comment, t, events)?
        }
        Command::Shelve {
            alarm,
            by,
            reason,
            duration_ms,
        } => engine.shelve(alarm, &by, &reason, duration_ms, t, events)?,
        Command::Unshelve { alarm } => engine.unshelve(alarm, t, events)?,
        Command::OutOfService {
            point,
            out_of_service,
        } => engine.set_out_of_service(point, out_of_service, t, events)?,
        Command::Maintenance { point, maintenance } => {
            engine.set_maintenance(point, maintenance)?
        }
        Command::Inject(_) => {}
        Command::ManualCut { action } => match safety {
            Some(s) => s.ctl.manual_cut(&action, t, out)?,
            None => return Err(no_action(&action)),
        },
        Command::Release { action } => match safety {
            Some(s) => s.ctl.release(&action, t, out)?,
            None => return Err(no_action(&action)),
        },
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn engine_loop<O: Outputs>(
    mut engine: Engine,
    mut safety: Option<Safety>,
    mut write_answers: mpsc::Receiver<WriteDone>,
    mut rx: mpsc::Receiver<Batch>,
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
    // Take over the cuts that stood when the gateway stopped, publish every action's
    // points.
    if let Some(s) = safety.as_mut() {
        let mut out = Vec::new();
        let open: Vec<crate::engine::Alarm> = engine.alarms().cloned().collect();
        s.ctl.start(&open, now(), &mut out);
        let settled = evaluate(&mut engine, &mut safety, Vec::new(), out, &mut events);
        if !events.is_empty() {
            outputs.events(engine.spec(), &events).await;
            events.clear();
        }
        outputs.readings(settled).await;
    }
    loop {
        let mut reply = None;
        let mut control_urgent = false;
        // Readings that are not from a source batch (controller status, write answers).
        let mut extra: Vec<Reading> = Vec::new();
        tokio::select! {
            batch = rx.recv(), if sources_open => match batch {
                Some(Batch { readings, receipt }) => {
                    let settled = evaluate(&mut engine, &mut safety, readings, Vec::new(), &mut events);
                    // Alarm transitions first: they are committed before the readings
                    // that caused them are queued behind bulk data.
                    if !events.is_empty() {
                        outputs.events(engine.spec(), &events).await;
                        events.clear();
                        publisher.publish(&mut engine, true);
                    }
                    outputs.readings_with_receipt(settled, receipt).await;
                    publisher.dirty = true;
                }
                None => sources_open = false,
            },
            Some(done) = write_answers.recv() => {
                let mut out = Vec::new();
                if let Some(s) = safety.as_mut() {
                    s.write_done(done, &mut out);
                }
                extra = evaluate(&mut engine, &mut safety, Vec::new(), out, &mut events);
            },
            request = control.recv(), if control_open => match request {
                Some(ControlRequest { command, reply: answer }) => {
                    // Injected readings publish like source batches (at once only
                    // with events); every other command shows on the board at once.
                    control_urgent = !matches!(command, Command::Inject(_));
                    let result = match command {
                        Command::Inject(batch) => {
                            let settled = evaluate(&mut engine, &mut safety, batch, Vec::new(), &mut events);
                            if !events.is_empty() {
                                outputs.events(engine.spec(), &events).await;
                                events.clear();
                                publisher.publish(&mut engine, true);
                            }
                            outputs.readings(settled).await;
                            Ok(())
                        }
                        other => {
                            let mut out = Vec::new();
                            let result = apply(&mut engine, &mut safety, other, &mut events, &mut out);
                            extra = evaluate(&mut engine, &mut safety, Vec::new(), out, &mut events);
                            result
                        }
                    };
                    publisher.dirty = true;
                    reply = Some((answer, result));
                }
                None => control_open = false,
            },
            _ = tick.tick() => {
                let t = now();
                engine.tick(t, &mut events);
                let mut out = Vec::new();
                if let Some(s) = safety.as_mut() {
                    s.ctl.tick(t, &mut out);
                }
                extra = evaluate(&mut engine, &mut safety, Vec::new(), out, &mut events);
            },
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
        if !extra.is_empty() {
            outputs.readings(extra).await;
            publisher.dirty = true;
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
