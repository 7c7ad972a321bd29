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

use crate::config::Config;
use crate::engine::{AlarmEvent, Engine, EngineSpec, Event};
use crate::model::{Reading, Timestamp};
use crate::sources::modbus::build;
use crate::sources::modbus::poller::{DeviceStats, LinkSpec, ModbusSource, WriteHandle};
use crate::sources::mqtt::{self, MqttDeviceSpec, MqttSource, MqttStats};
use crate::store::StoreWriter;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// How often the engine is ticked when no reading arrives.
const TICK: Duration = Duration::from_millis(250);

/// Batches of readings waiting for the engine. When full, sources wait.
const READING_QUEUE: usize = 1024;

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
            if let Err(e) = self.writer.commit_alarms(alarms).await {
                tracing::error!(error = %e, "alarm transitions could not be committed to the store");
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
}

impl Plan {
    pub fn from_config(config: &Config) -> Plan {
        let mut spec = config.engine_spec();
        let links = build::links(config, &mut spec);
        let mqtt = mqtt::subscriptions(config, &mut spec);
        Plan { spec, links, mqtt }
    }
}

/// A running gateway.
pub struct Running {
    pub device_stats: Vec<(String, Arc<DeviceStats>)>,
    pub mqtt_stats: Vec<(String, Arc<MqttStats>)>,
    pub writer: WriteHandle,
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
    let engine = Engine::new(plan.spec, now(), first_alarm_id);
    let engine_task = tokio::spawn(engine_loop(engine, rx, outputs, shutdown));
    Running {
        device_stats: modbus.stats.clone(),
        mqtt_stats: mqtt.stats.clone(),
        writer: modbus.writer.clone(),
        engine_task,
        modbus,
        mqtt,
    }
}

async fn engine_loop<O: Outputs>(
    mut engine: Engine,
    mut rx: mpsc::Receiver<Vec<Reading>>,
    mut outputs: O,
    mut shutdown: watch::Receiver<bool>,
) -> Engine {
    let mut events = Vec::new();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sources_open = true;
    let mut stopping = *shutdown.borrow();
    loop {
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
                    }
                    outputs.readings(settled).await;
                }
                None => sources_open = false,
            },
            _ = tick.tick() => engine.tick(now(), &mut events),
            changed = shutdown.changed(), if !stopping => {
                // Sources stop at their next safe point and close the channel; the
                // loop drains what they sent before it ends.
                stopping = changed.is_err() || *shutdown.borrow();
            }
        }
        if !events.is_empty() {
            outputs.events(engine.spec(), &events).await;
            events.clear();
        }
        if stopping && !sources_open {
            break;
        }
    }
    outputs.flush().await;
    engine
}
