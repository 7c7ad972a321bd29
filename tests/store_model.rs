//! The durable log against a simple in-memory model (STYLE habit 10): random sequences
//! of readings batches, alarm events, cursor commits, pruning and restarts — clean
//! closes and abandoned connections ("restart in the middle"). After every step the
//! rows after every cursor, the cursors, the next alarm id and the hash chain match.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use hazgate::engine::Transition;
use hazgate::model::{PointId, Quality, Reading, Timestamp};
use hazgate::store::{PointMeta, SinkCursor, Store, StoreOptions};
use proptest::prelude::*;
use std::collections::BTreeMap;

const DAY: i64 = 86_400_000;
const BASE: i64 = 1_000 * DAY;
const POINTS: u32 = 3;
const SINKS: [&str; 2] = ["influx", "uplink"];
const READINGS_DAYS: u32 = 10;
const EVENTS_DAYS: u32 = 20;

#[derive(Debug, Clone)]
enum Op {
    /// Readings: (point, day offset, ms, value index, quality index).
    Write(Vec<(u32, i64, i64, usize, usize)>),
    /// Alarm events at these day offsets.
    Alarms(Vec<i64>),
    /// Move a sink's cursor forward to this share (0..=100 %) of the rows so far.
    Commit {
        sink: usize,
        readings: i64,
        events: i64,
    },
    /// Prune as of this day offset.
    Prune(i64),
    /// Close the store and open it again; `clean: false` abandons the connection.
    Restart { clean: bool },
}

const VALUES: [f64; 5] = [0.0, 0.5, -1.25, 1e9, f64::NAN];
const QUALITIES: [Quality; 5] = [
    Quality::Good,
    Quality::CommFail,
    Quality::DeviceException(2),
    Quality::DeviceException(255),
    Quality::Maintenance,
];

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => prop::collection::vec(
            (0..POINTS, 0i64..60, 0i64..DAY, 0..VALUES.len(), 0..QUALITIES.len()),
            0..40,
        )
        .prop_map(Op::Write),
        2 => prop::collection::vec(0i64..60, 1..4).prop_map(Op::Alarms),
        2 => (0..SINKS.len(), 0i64..=100, 0i64..=100)
            .prop_map(|(sink, readings, events)| Op::Commit { sink, readings, events }),
        2 => (0i64..90).prop_map(Op::Prune),
        1 => any::<bool>().prop_map(|clean| Op::Restart { clean }),
    ]
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Row {
    seq: i64,
    point: u32,
    ts: i64,
    value: f64,
    quality: Quality,
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Event {
    seq: i64,
    alarm_id: i64,
    ts: i64,
}

/// The reference: what the log must hold.
#[derive(Default)]
struct Model {
    readings: Vec<Row>,
    events: Vec<Event>,
    /// Highest seq ever handed out (never reused, even after pruning).
    readings_seq: i64,
    events_seq: i64,
    alarm_id: i64,
    cursors: BTreeMap<usize, SinkCursor>,
}

impl Model {
    fn prune(&mut self, now: i64) {
        let shipped =
            |f: fn(&SinkCursor) -> i64| self.cursors.values().map(f).min().unwrap_or(i64::MAX);
        let (shipped_r, shipped_e) = (shipped(|c| c.readings_seq), shipped(|c| c.events_seq));
        let newest = self.readings.last().map_or(0, |r| r.seq);
        let cut = now - i64::from(READINGS_DAYS) * DAY;
        self.readings
            .retain(|r| !(r.seq <= shipped_r && r.ts < cut && r.seq < newest));
        // The chain is pruned as a prefix: up to the first row that must stay.
        let cut = now - i64::from(EVENTS_DAYS) * DAY;
        let keep_from = self
            .events
            .iter()
            .position(|e| e.ts >= cut || e.seq > shipped_e)
            .unwrap_or(self.events.len());
        self.events.drain(..keep_from);
    }
}

fn options(dir: &tempfile::TempDir) -> StoreOptions {
    StoreOptions {
        path: dir.path().join("model.db"),
        store_every_reading: true,
        readings_retention_days: READINGS_DAYS,
        events_retention_days: EVENTS_DAYS,
        ..StoreOptions::default()
    }
}

fn open(o: &StoreOptions) -> Store {
    let mut s = Store::open(o).unwrap();
    let metas: Vec<_> = (0..POINTS)
        .map(|i| PointMeta {
            id: format!("P{i}"),
            kind: "ch4".into(),
            unit: None,
            site: None,
            hazard_source: None,
            deadband: None,
        })
        .collect();
    s.register_points(&metas).unwrap();
    s
}

fn same_value(a: f64, b: f64) -> bool {
    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
}

fn check(store: &Store, m: &Model, pids: &[i64]) -> Result<(), TestCaseError> {
    let r = store.reader();
    let mut afters = vec![0, m.readings_seq];
    afters.extend(m.cursors.values().map(|c| c.readings_seq));
    for after in afters {
        let got = r.read_readings_after(after, usize::MAX >> 1).unwrap();
        let want: Vec<_> = m.readings.iter().filter(|x| x.seq > after).collect();
        prop_assert_eq!(got.len(), want.len(), "readings after {}", after);
        for (g, w) in got.iter().zip(want) {
            prop_assert_eq!(
                (g.seq, g.pid, g.ts.0, g.quality),
                (w.seq, pids[w.point as usize], w.ts, w.quality)
            );
            prop_assert!(same_value(g.value, w.value), "{:?} vs {:?}", g, w);
        }
    }
    let mut afters = vec![0];
    afters.extend(m.cursors.values().map(|c| c.events_seq));
    for after in afters {
        let got: Vec<_> = r
            .read_events_after(after, usize::MAX >> 1)
            .unwrap()
            .iter()
            .map(|e| Event {
                seq: e.seq,
                alarm_id: e.alarm_id,
                ts: e.ts.0,
            })
            .collect();
        let want: Vec<_> = m.events.iter().filter(|e| e.seq > after).copied().collect();
        prop_assert_eq!(got, want, "events after {}", after);
    }
    for (&i, c) in &m.cursors {
        prop_assert_eq!(r.cursor(SINKS[i]).unwrap(), *c);
    }
    prop_assert_eq!(r.last_reading_seq().unwrap(), m.readings_seq);
    prop_assert_eq!(store.next_alarm_id().unwrap(), m.alarm_id as u64 + 1);
    prop_assert_eq!(store.verify_chain().unwrap(), None);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn the_log_matches_the_model_across_restarts(ops in prop::collection::vec(op(), 1..30)) {
        let dir = tempfile::tempdir().unwrap();
        let o = options(&dir);
        let mut store = open(&o);
        let pids: Vec<i64> = store.reader().points().unwrap().iter().map(|p| p.pid).collect();
        let mut m = Model::default();
        // Connections left open by "crashes", closed at the end of the case.
        let mut abandoned = Vec::new();
        for op in ops {
            match op {
                Op::Write(rows) => {
                    let batch: Vec<Reading> = rows
                        .iter()
                        .map(|&(p, d, ms, v, q)| Reading {
                            point: PointId(p),
                            ts: Timestamp(BASE + d * DAY + ms),
                            value: VALUES[v],
                            quality: QUALITIES[q],
                        })
                        .collect();
                    let w = store.write_readings(&batch).unwrap();
                    prop_assert_eq!(w.stored, batch.len());
                    for r in batch {
                        m.readings_seq += 1;
                        m.readings.push(Row {
                            seq: m.readings_seq,
                            point: r.point.0,
                            ts: r.ts.0,
                            value: r.value,
                            quality: r.quality,
                        });
                    }
                }
                Op::Alarms(days) => {
                    let events: Vec<_> = days
                        .iter()
                        .enumerate()
                        .map(|(k, d)| {
                            support::alarm_event(
                                (m.alarm_id + 1 + k as i64) as u64,
                                0,
                                Transition::Raised,
                                BASE + d * DAY,
                            )
                        })
                        .collect();
                    let seqs = store.append_alarm_events(&events).unwrap();
                    for (e, seq) in events.iter().zip(seqs) {
                        m.events_seq += 1;
                        prop_assert_eq!(seq, m.events_seq, "event seqs are never reused");
                        m.alarm_id += 1;
                        m.events.push(Event { seq, alarm_id: m.alarm_id, ts: e.ts.0 });
                    }
                }
                Op::Commit { sink, readings, events } => {
                    let old = m.cursors.get(&sink).copied().unwrap_or_default();
                    let c = SinkCursor {
                        readings_seq: old.readings_seq.max(m.readings_seq * readings / 100),
                        events_seq: old.events_seq.max(m.events_seq * events / 100),
                    };
                    store.reader().commit_cursor(SINKS[sink], c, Timestamp(BASE)).unwrap();
                    m.cursors.insert(sink, c);
                }
                Op::Prune(d) => {
                    let rep = store.prune(Timestamp(BASE + d * DAY)).unwrap();
                    prop_assert!(!rep.degraded);
                    prop_assert_eq!(rep.readings_lost_unshipped, 0);
                    m.prune(BASE + d * DAY);
                }
                Op::Restart { clean } => {
                    if clean {
                        store.flush().unwrap();
                        drop(store);
                    } else {
                        abandoned.push(store);
                    }
                    store = open(&o);
                }
            }
            check(&store, &m, &pids)?;
        }
        drop(abandoned);
    }
}
