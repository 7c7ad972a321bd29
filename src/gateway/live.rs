//! The live state: what the dispatch room sees, kept by the engine task without a
//! rebuild of every point on the alarm path.
//!
//! ```text
//!  engine task ── Publisher ──┬─► table: watch<Arc<Snapshot>>, patched in place (REST, new clients)
//!                             ├─► alarm frames: broadcast<Arc<Delta>>   (at once, small)
//!                             └─► value frames: broadcast<Arc<Delta>>   (≤ every LIVE_MIN_INTERVAL)
//! ```
//!
//! Invariants:
//! - every [`Delta`] has a `seq` one above the previous one (alarm and value frames
//!   share the counter) and is applied to the table *before* it is broadcast, and the
//!   table's `seq` is the last applied one. A subscriber that subscribes first and then
//!   reads the table (seq `S`) is complete by applying every frame with `seq > S`.
//! - an alarm frame (open alarms, changed hazard colours, flood) costs O(open alarms +
//!   hazard sources) on the engine task: no point is copied, no string is allocated
//!   per point. Point ids and grade names are `Arc<str>` shared from start.
//! - value frames carry only the points whose visible state changed since the last
//!   value frame, found by one allocation-free pass over the engine's point states,
//!   at most every [`LIVE_MIN_INTERVAL`] (and at once after alarms and control
//!   requests), split into frames of at most [`VALUE_FRAME_POINTS`] points so a
//!   WebSocket writer can put an alarm frame between two of them.
//! - the table is patched through `Arc::make_mut`: it copies the point list only while
//!   a reader (a REST request) still holds the previous `Arc`.
//! - each frame is serialized to JSON at most once, by the first WebSocket that sends
//!   it ([`Delta::json`]).
//! - both broadcast channels are bounded ([`ALARM_FRAMES`], [`VALUE_FRAMES`]); a
//!   subscriber that falls further behind is told so (`Lagged`) and starts again from
//!   the table. Nothing waits on a slow subscriber.

use crate::engine::{Alarm, Engine};
use crate::model::{Colour, HazardSourceId, PointId, Quality, Timestamp};
use bytes::Bytes;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::sync::{broadcast, watch};

/// Value-only changes are published to the live state at most this often; alarm
/// transitions and risk changes are published at once.
pub const LIVE_MIN_INTERVAL: Duration = Duration::from_millis(200);

/// Most points in one value frame.
pub const VALUE_FRAME_POINTS: usize = 1000;

/// Alarm frames kept for subscribers that have not read them yet; when full, the
/// oldest is overwritten and a subscriber that had not read it gets `Lagged`.
pub const ALARM_FRAMES: usize = 64;

/// Value frames kept for subscribers (about three seconds of changes at 10,000
/// points); when full, as for [`ALARM_FRAMES`].
pub const VALUE_FRAMES: usize = 32;

/// One point as the dashboard sees it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PointLive {
    /// Index (`PointId`).
    pub index: u32,
    pub id: Arc<str>,
    /// Last value; `None` before the first reading or when the source had none.
    pub value: Option<f64>,
    pub ts: Option<i64>,
    pub quality: Option<Quality>,
    /// Name of the active grade, if any.
    pub grade: Option<Arc<str>>,
    /// Colour of the active grade, if any.
    pub colour: Option<Colour>,
    pub maintenance: bool,
    pub out_of_service: bool,
    pub stale: bool,
    /// Index of the active grade (to compare without comparing names).
    #[serde(skip)]
    pub grade_index: Option<u16>,
}

/// Live risk colour of one hazard source.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct HazardLive {
    pub index: u32,
    pub id: Arc<str>,
    pub colour: Colour,
}

/// Everything live, as of `ts`. Readers clone the `Arc` out of the [`LiveState`] and
/// never see it change.
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize)]
pub struct Snapshot {
    /// The `seq` of the last frame applied.
    pub seq: u64,
    pub ts: i64,
    pub points: Vec<PointLive>,
    /// Open alarms (active, or returned but unacknowledged), most severe first.
    pub alarms: Arc<[Alarm]>,
    pub hazard_sources: Vec<HazardLive>,
    /// Alarms raised in the last 10 minutes.
    pub alarms_per_10min: u32,
    pub flood: bool,
    /// Readings evaluated since start.
    pub readings: u64,
    /// Alarm episodes raised since start.
    pub raised: u64,
    /// Readings for unknown points, bad-quality readings (counters for /metrics).
    pub unknown_point: u64,
    pub bad_quality: u64,
}

/// Receiver of the live table; `borrow()` only clones an `Arc`.
pub type LiveState = watch::Receiver<Arc<Snapshot>>;

/// One change of the live state, as sent on the WebSocket:
/// `{"type":"delta","seq","ts","points":[changed points],"alarms":[all open
/// alarms] (only when they changed),"hazard_sources":[changed sources],
/// "alarms_per_10min","flood"}`.
#[derive(Debug, serde::Serialize)]
pub struct Delta {
    #[serde(rename = "type")]
    kind: &'static str,
    pub seq: u64,
    pub ts: i64,
    pub points: Vec<PointLive>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alarms: Option<Arc<[Alarm]>>,
    pub hazard_sources: Vec<HazardLive>,
    pub alarms_per_10min: u32,
    pub flood: bool,
    #[serde(skip)]
    json: OnceLock<Bytes>,
}

impl Delta {
    fn new(seq: u64, ts: i64, alarms_per_10min: u32, flood: bool) -> Delta {
        Delta {
            kind: "delta",
            seq,
            ts,
            points: Vec::new(),
            alarms: None,
            hazard_sources: Vec::new(),
            alarms_per_10min,
            flood,
            json: OnceLock::new(),
        }
    }

    /// The frame as JSON text, serialized on first use and shared after.
    pub fn json(&self) -> Bytes {
        self.json
            .get_or_init(|| serde_json::to_vec(self).map_or_else(|_| Bytes::new(), Bytes::from))
            .clone()
    }
}

/// Where WebSocket clients subscribe. Holds no sender alive: once the engine task
/// ends, subscribing fails and subscriptions see `Closed`.
#[derive(Debug, Clone)]
pub struct LiveFeed {
    alarms: broadcast::WeakSender<Arc<Delta>>,
    values: broadcast::WeakSender<Arc<Delta>>,
}

/// The two streams of one subscriber. Read `alarms` first.
#[derive(Debug)]
pub struct Subscription {
    pub alarms: broadcast::Receiver<Arc<Delta>>,
    pub values: broadcast::Receiver<Arc<Delta>>,
}

impl LiveFeed {
    /// Subscribe to both streams; `None` once the engine task has ended. Read the
    /// table *after* this and skip frames with a `seq` at or below the table's.
    pub fn subscribe(&self) -> Option<Subscription> {
        Some(Subscription {
            alarms: self.alarms.upgrade()?.subscribe(),
            values: self.values.upgrade()?.subscribe(),
        })
    }
}

/// The engine task's side: the table and the two streams, and the names shared by
/// every copy of a point.
pub struct LiveSender {
    table: watch::Sender<Arc<Snapshot>>,
    alarms: broadcast::Sender<Arc<Delta>>,
    values: broadcast::Sender<Arc<Delta>>,
    /// Grade names per point, in grade order.
    grade_names: Vec<Box<[Arc<str>]>>,
}

impl LiveSender {
    /// The live state of `engine` as it is now (seq 0), and the handles on it.
    pub fn new(engine: &mut Engine, now: Timestamp) -> (LiveSender, LiveState, LiveFeed) {
        let grade_names: Vec<Box<[Arc<str>]>> = engine
            .spec()
            .points
            .iter()
            .map(|p| {
                p.grades
                    .iter()
                    .map(|g| Arc::from(g.name.as_str()))
                    .collect()
            })
            .collect();
        let (alarms, _) = broadcast::channel(ALARM_FRAMES);
        let (values, _) = broadcast::channel(VALUE_FRAMES);
        let first = build(engine, &grade_names, 0, now);
        let (table, state) = watch::channel(Arc::new(first));
        let feed = LiveFeed {
            alarms: alarms.downgrade(),
            values: values.downgrade(),
        };
        (
            LiveSender {
                table,
                alarms,
                values,
                grade_names,
            },
            state,
            feed,
        )
    }

    /// Anybody reading the table or the streams.
    fn watched(&self) -> bool {
        self.table.receiver_count() > 0
            || self.alarms.receiver_count() > 0
            || self.values.receiver_count() > 0
    }

    /// Publish alarm changes (when `alarms`), then value changes; `seq` counts
    /// frames. The alarm frame leaves before the pass over the points.
    fn publish(&self, engine: &mut Engine, seq: &mut u64, alarms: bool, now: Timestamp) {
        let rates = engine.alarm_rates(now);
        if alarms {
            let mut frame = None;
            self.table.send_modify(|snap| {
                frame = alarm_delta(engine, snap, seq, now, rates.per_10min, rates.flood);
            });
            // Applied first, sent after (see the module invariants). No subscriber
            // is no error.
            if let Some(d) = frame {
                let _ = self.alarms.send(d);
            }
        }
        let counters = engine.counters();
        let mut frames = Vec::new();
        self.table.send_modify(|snap| {
            let changed = changed_points(engine, &self.grade_names, snap);
            let s = Arc::make_mut(snap);
            s.ts = now.0;
            s.alarms_per_10min = rates.per_10min;
            s.flood = rates.flood;
            s.readings = counters.readings;
            s.raised = counters.raised;
            s.unknown_point = counters.unknown_point;
            s.bad_quality = counters.bad_quality;
            for chunk in changed.chunks(VALUE_FRAME_POINTS) {
                *seq += 1;
                let mut d = Delta::new(*seq, now.0, rates.per_10min, rates.flood);
                d.points = chunk.to_vec();
                frames.push(Arc::new(d));
            }
            for p in changed {
                if let Some(slot) = s.points.get_mut(p.index as usize) {
                    *slot = p;
                }
            }
            s.seq = *seq;
        });
        for d in frames {
            let _ = self.values.send(d);
        }
    }
}

/// The alarm frame bringing `snap` to the engine's open alarms, hazard colours and
/// flood state, applied to `snap`; `None` when none of them changed.
fn alarm_delta(
    engine: &Engine,
    snap: &mut Arc<Snapshot>,
    seq: &mut u64,
    now: Timestamp,
    per_10min: u32,
    flood: bool,
) -> Option<Arc<Delta>> {
    let mut open: Vec<&Alarm> = engine.alarms().collect();
    open.sort_by(|a, b| {
        b.colour
            .cmp(&a.colour)
            .then(b.raised_at.cmp(&a.raised_at))
            .then(b.id.cmp(&a.id))
    });
    let alarms_changed = open.len() != snap.alarms.len()
        || open.iter().zip(snap.alarms.iter()).any(|(a, b)| *a != b);
    let hazards: Vec<HazardLive> = snap
        .hazard_sources
        .iter()
        .filter_map(|h| {
            let colour = engine.risk(HazardSourceId(h.index)).unwrap_or(Colour::Blue);
            (colour != h.colour).then(|| HazardLive {
                colour,
                ..h.clone()
            })
        })
        .collect();
    if !alarms_changed && hazards.is_empty() && flood == snap.flood {
        return None;
    }
    *seq += 1;
    let mut d = Delta::new(*seq, now.0, per_10min, flood);
    let s = Arc::make_mut(snap);
    if alarms_changed {
        let list: Arc<[Alarm]> = open.into_iter().cloned().collect();
        s.alarms = list.clone();
        d.alarms = Some(list);
    }
    for h in &hazards {
        if let Some(slot) = s.hazard_sources.get_mut(h.index as usize) {
            slot.colour = h.colour;
        }
    }
    d.hazard_sources = hazards;
    s.flood = flood;
    s.seq = *seq;
    Some(Arc::new(d))
}

/// Points whose visible state differs from `snap`, with names filled in. One pass,
/// no allocation for a point that did not change.
fn changed_points(
    engine: &Engine,
    grade_names: &[Box<[Arc<str>]>],
    snap: &Snapshot,
) -> Vec<PointLive> {
    let spec = engine.spec();
    let mut out = Vec::new();
    for (i, old) in snap.points.iter().enumerate() {
        let Some(st) = engine.point_status(PointId(i as u32)) else {
            continue;
        };
        let last = st.last;
        let value = last.map(|r| r.value).filter(|v| v.is_finite());
        let same = old.value.map(f64::to_bits) == value.map(f64::to_bits)
            && old.ts == last.map(|r| r.ts.0)
            && old.quality == last.map(|r| r.quality)
            && old.grade_index == st.grade
            && old.maintenance == st.maintenance
            && old.out_of_service == st.out_of_service
            && old.stale == st.stale;
        if same {
            continue;
        }
        let grade = st.grade.map(usize::from);
        out.push(PointLive {
            index: i as u32,
            id: old.id.clone(),
            value,
            ts: last.map(|r| r.ts.0),
            quality: last.map(|r| r.quality),
            grade: grade.and_then(|g| grade_names.get(i)?.get(g).cloned()),
            colour: grade.and_then(|g| Some(spec.points.get(i)?.grades.get(g)?.colour)),
            maintenance: st.maintenance,
            out_of_service: st.out_of_service,
            stale: st.stale,
            grade_index: st.grade,
        });
    }
    out
}

/// A whole snapshot of the engine (O(points + alarms)); only at start.
fn build(
    engine: &mut Engine,
    grade_names: &[Box<[Arc<str>]>],
    seq: u64,
    now: Timestamp,
) -> Snapshot {
    let spec = engine.spec();
    let points = spec
        .points
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let st = engine.point_status(PointId(i as u32));
            let last = st.as_ref().and_then(|s| s.last);
            let grade_index = st.as_ref().and_then(|s| s.grade);
            let g = grade_index.map(usize::from);
            PointLive {
                index: i as u32,
                id: Arc::from(p.id.as_str()),
                value: last.map(|r| r.value).filter(|v| v.is_finite()),
                ts: last.map(|r| r.ts.0),
                quality: last.map(|r| r.quality),
                grade: g.and_then(|g| grade_names.get(i)?.get(g).cloned()),
                colour: g.and_then(|g| Some(p.grades.get(g)?.colour)),
                maintenance: st.as_ref().is_some_and(|s| s.maintenance),
                out_of_service: st.as_ref().is_some_and(|s| s.out_of_service),
                stale: st.as_ref().is_some_and(|s| s.stale),
                grade_index,
            }
        })
        .collect();
    let hazard_sources = spec
        .hazard_sources
        .iter()
        .enumerate()
        .map(|(i, h)| HazardLive {
            index: i as u32,
            id: Arc::from(h.id.as_str()),
            colour: engine
                .risk(HazardSourceId(i as u32))
                .unwrap_or(Colour::Blue),
        })
        .collect();
    let mut alarms: Vec<Alarm> = engine.alarms().cloned().collect();
    alarms.sort_by(|a, b| {
        b.colour
            .cmp(&a.colour)
            .then(b.raised_at.cmp(&a.raised_at))
            .then(b.id.cmp(&a.id))
    });
    let rates = engine.alarm_rates(now);
    let c = engine.counters();
    Snapshot {
        seq,
        ts: now.0,
        points,
        alarms: alarms.into(),
        hazard_sources,
        alarms_per_10min: rates.per_10min,
        flood: rates.flood,
        readings: c.readings,
        raised: c.raised,
        unknown_point: c.unknown_point,
        bad_quality: c.bad_quality,
    }
}

/// Build a whole snapshot of the engine (O(points + alarms)), e.g. for a report; the
/// running gateway keeps its table up to date instead of calling this.
pub fn snapshot(engine: &mut Engine, seq: u64, now: Timestamp) -> Snapshot {
    let grade_names: Vec<Box<[Arc<str>]>> = engine
        .spec()
        .points
        .iter()
        .map(|p| {
            p.grades
                .iter()
                .map(|g| Arc::from(g.name.as_str()))
                .collect()
        })
        .collect();
    build(engine, &grade_names, seq, now)
}

/// Publishes the live state from the engine task: alarm frames at once after events,
/// value frames throttled to [`LIVE_MIN_INTERVAL`].
pub struct Publisher {
    pub(super) tx: LiveSender,
    pub(super) seq: u64,
    /// Something may have changed since the last value frame.
    pub(super) dirty: bool,
    pub(super) last: tokio::time::Instant,
}

impl Publisher {
    /// `urgent`: events or a control request happened; publish alarms and values
    /// now. Otherwise publish values if something changed and the interval passed.
    pub(super) fn publish(&mut self, engine: &mut Engine, urgent: bool) {
        if !(urgent || self.dirty && self.last.elapsed() >= LIVE_MIN_INTERVAL) {
            return;
        }
        // Nobody watching (all receivers gone): skip the work, stay dirty.
        if !self.tx.watched() {
            return;
        }
        self.tx.publish(engine, &mut self.seq, urgent, super::now());
        self.dirty = false;
        self.last = tokio::time::Instant::now();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::config::Config;
    use crate::model::Reading;

    const SITE: &str = r#"
[site]
id = "1"
name = "t"
kind = "chemical_plant"
rule_profile = "t"

[[hazard_sources]]
id = "HS"
name = "tank farm"
grade = 1

[[devices]]
id = "PLC"
protocol = "modbus_tcp"
host = "127.0.0.1"
port = 1

[[points]]
id = "LEL-1"
name = "a"
kind = "combustible"
range_min = 0.0
range_max = 100.0
hazard_source = "HS"
device = "PLC"
modbus = { table = "input", address = 0, data_type = "u16" }
  [[points.thresholds]]
  name = "一级报警"
  direction = "high"
  trigger = 25.0
  restore = 24.0
  colour = "yellow"

[[points]]
id = "LEL-2"
name = "b"
kind = "combustible"
range_min = 0.0
range_max = 100.0
device = "PLC"
modbus = { table = "input", address = 1, data_type = "u16" }
"#;

    fn reading(point: u32, ts: i64, value: f64) -> Reading {
        Reading {
            point: PointId(point),
            ts: Timestamp(ts),
            value,
            quality: Quality::Good,
        }
    }

    #[test]
    fn frames_carry_only_changes_and_the_table_is_complete_at_every_seq() {
        let config = Config::from_toml_str(SITE, "t.toml").unwrap();
        let mut engine = Engine::new(config.engine_spec(), Timestamp(0), 1);
        let (tx, table, feed) = LiveSender::new(&mut engine, Timestamp(0));
        assert_eq!(table.borrow().seq, 0);
        assert_eq!(&*table.borrow().points[0].id, "LEL-1");
        let mut sub = feed.subscribe().unwrap();
        let mut seq = 0;
        let mut events = Vec::new();

        // A value change: one value frame with that point only, no alarm frame.
        engine.on_reading(reading(1, 1000, 3.0), &mut events);
        tx.publish(&mut engine, &mut seq, false, Timestamp(1000));
        let d = sub.values.try_recv().unwrap();
        assert_eq!(d.seq, 1);
        assert_eq!(d.points.len(), 1);
        assert_eq!(d.points[0].index, 1);
        assert_eq!(d.points[0].value, Some(3.0));
        assert!(sub.alarms.try_recv().is_err());
        assert_eq!(table.borrow().seq, 1);
        assert_eq!(table.borrow().points[1].value, Some(3.0));
        // Nothing changed: no frame, same seq.
        tx.publish(&mut engine, &mut seq, false, Timestamp(1100));
        assert!(sub.values.try_recv().is_err());
        assert_eq!(table.borrow().seq, 1);

        // An alarm: the alarm frame (alarms + colour, no points) comes first, then the
        // point with its grade.
        engine.on_reading(reading(0, 2000, 30.0), &mut events);
        assert!(!events.is_empty());
        tx.publish(&mut engine, &mut seq, true, Timestamp(2000));
        let a = sub.alarms.try_recv().unwrap();
        assert_eq!(a.seq, 2);
        assert!(a.points.is_empty());
        let alarms = a.alarms.as_ref().unwrap();
        assert_eq!(alarms.len(), 1);
        assert_eq!(alarms[0].grade_name, "一级报警");
        assert_eq!(a.hazard_sources.len(), 1);
        assert_eq!(a.hazard_sources[0].colour, Colour::Yellow);
        let v = sub.values.try_recv().unwrap();
        assert_eq!(v.seq, 3);
        assert_eq!(v.points.len(), 1);
        assert_eq!(v.points[0].grade.as_deref(), Some("一级报警"));
        assert_eq!(v.points[0].colour, Some(Colour::Yellow));
        let snap = table.borrow().clone();
        assert_eq!(snap.seq, 3);
        assert_eq!(snap.alarms.len(), 1);
        assert_eq!(snap.hazard_sources[0].colour, Colour::Yellow);
        assert_eq!(snap.points[0].grade.as_deref(), Some("一级报警"));

        // The table equals a full rebuild of the engine (ts and seq aside).
        let mut full = snapshot(&mut engine, snap.seq, Timestamp(snap.ts));
        full.readings = snap.readings;
        assert_eq!(*snap, full);

        // JSON of a frame: the wire format the dashboard reads.
        let j: serde_json::Value = serde_json::from_slice(&a.json()).unwrap();
        assert_eq!(j["type"], "delta");
        assert_eq!(j["alarms"][0]["state"], "unacked");
        assert_eq!(j["hazard_sources"][0]["id"], "HS");
        let j: serde_json::Value = serde_json::from_slice(&v.json()).unwrap();
        assert!(j.get("alarms").is_none());
        assert_eq!(j["points"][0]["quality"], "good");
        assert_eq!(j["points"][0]["id"], "LEL-1");
        assert!(j["points"][0].get("grade_index").is_none());
    }

    #[test]
    fn value_frames_are_split() {
        let mut toml = String::from(
            "[site]\nid = \"1\"\nname = \"t\"\nkind = \"chemical_plant\"\nrule_profile = \"t\"\n\
             [[devices]]\nid = \"PLC\"\nprotocol = \"modbus_tcp\"\nhost = \"127.0.0.1\"\nport = 1\n",
        );
        let n = VALUE_FRAME_POINTS + 10;
        for i in 0..n {
            toml.push_str(&format!(
                "[[points]]\nid = \"P{i}\"\nname = \"p\"\nkind = \"ch4\"\nrange_min = 0.0\nrange_max = 4.0\n\
                 device = \"PLC\"\nmodbus = {{ table = \"input\", address = {i}, data_type = \"u16\" }}\n"
            ));
        }
        let config = Config::from_toml_str(&toml, "t.toml").unwrap();
        let mut engine = Engine::new(config.engine_spec(), Timestamp(0), 1);
        let (tx, table, feed) = LiveSender::new(&mut engine, Timestamp(0));
        let mut sub = feed.subscribe().unwrap();
        let mut events = Vec::new();
        for i in 0..n {
            engine.on_reading(reading(i as u32, 1000, 0.5), &mut events);
        }
        let mut seq = 0;
        tx.publish(&mut engine, &mut seq, false, Timestamp(1000));
        let a = sub.values.try_recv().unwrap();
        let b = sub.values.try_recv().unwrap();
        assert_eq!((a.points.len(), b.points.len()), (VALUE_FRAME_POINTS, 10));
        assert_eq!((a.seq, b.seq), (1, 2));
        assert_eq!(table.borrow().seq, 2);
        // The engine task dropping its sender ends every subscription.
        drop(tx);
        assert!(matches!(
            sub.values.try_recv(),
            Err(broadcast::error::TryRecvError::Closed)
        ));
        assert!(feed.subscribe().is_none());
    }
}
