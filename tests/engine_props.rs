//! Property tests of the engine against simple reference models.
//!
//! - grades: per-grade hysteresis recomputed from scratch equals the engine's active
//!   grade after every reading (no delays), and once every delay has elapsed (delays);
//! - alarm life: an ISA-18.2 reference state machine driven by the same readings and
//!   acknowledgements agrees with the engine's value alarm, and an episode keeps its id;
//! - oscillation inside a hysteresis band produces no events;
//! - no alarm is ever lost: every raised id is still open, or was cleared (or removed
//!   from service) by an event.

mod common;

use common::*;
use hazgate::engine::{AlarmKind, AlarmState, Engine, Event, GradeSpec, Transition};
use hazgate::model::{AlarmId, Colour, Direction, PointId, PointKind, Quality, Reading, Timestamp};
use proptest::prelude::*;
use std::collections::{BTreeSet, HashMap};

const COLOURS: [Colour; 4] = [Colour::Blue, Colour::Yellow, Colour::Orange, Colour::Red];

/// 1–4 high grades with rising triggers in 0..100 and restores below them, plus
/// optionally 1–2 low grades below 0 (falling triggers, restores above).
fn grades() -> impl Strategy<Value = Vec<GradeSpec>> {
    (
        prop::collection::vec((1.0f64..20.0, 0.0f64..8.0), 1..=4),
        prop::collection::vec((1.0f64..20.0, 0.0f64..8.0), 0..=2),
    )
        .prop_map(|(hi, lo)| {
            let mut out = vec![];
            let mut trig = 10.0;
            for (i, (step, band)) in hi.iter().enumerate() {
                trig += step;
                out.push(high(&format!("H{i}"), trig, trig - band, COLOURS[i]));
            }
            let mut trig = -10.0;
            for (i, (step, band)) in lo.iter().enumerate() {
                trig -= step;
                out.push(low(&format!("L{i}"), trig, trig + band, COLOURS[2 + i]));
            }
            out
        })
}

/// Reference: each grade's hysteresis on its own; the active grade is the most severe
/// one on (highest colour, then latest).
struct GradeModel {
    grades: Vec<GradeSpec>,
    on: Vec<bool>,
}

impl GradeModel {
    fn new(grades: &[GradeSpec]) -> Self {
        GradeModel {
            grades: grades.to_vec(),
            on: vec![false; grades.len()],
        }
    }

    fn step(&mut self, v: f64) -> Option<u16> {
        for (g, on) in self.grades.iter().zip(self.on.iter_mut()) {
            *on = match g.direction {
                Direction::High => v >= g.trigger || (*on && v >= g.restore),
                Direction::Low => v <= g.trigger || (*on && v <= g.restore),
            };
        }
        self.active()
    }

    fn active(&self) -> Option<u16> {
        let mut best: Option<(usize, Colour)> = None;
        for (i, g) in self.grades.iter().enumerate() {
            if self.on[i] && best.is_none_or(|(_, c)| g.colour >= c) {
                best = Some((i, g.colour));
            }
        }
        best.map(|(i, _)| i as u16)
    }
}

fn reading(v: f64, ts: i64) -> Reading {
    Reading {
        point: PointId(0),
        ts: Timestamp(ts),
        value: v,
        quality: Quality::Good,
    }
}

fn engine_for(grades: Vec<GradeSpec>) -> Engine {
    Engine::new(
        spec(vec![point("P", PointKind::Other, (-200.0, 200.0), grades)]),
        Timestamp(0),
        1,
    )
}

#[derive(Debug, Clone)]
enum Op {
    Read(f64),
    Ack,
    Tick,
    OutOfService(bool),
    Bad,
    /// The gateway restarts: a fresh engine gets the open alarms back from the log.
    Restart,
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(
        prop_oneof![
            6 => (-60.0f64..90.0).prop_map(Op::Read),
            2 => Just(Op::Ack),
            1 => Just(Op::Tick),
            1 => Just(Op::Bad),
            1 => any::<bool>().prop_map(Op::OutOfService),
            1 => Just(Op::Restart),
        ],
        1..120,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn active_grade_matches_reference_hysteresis(
        g in grades(),
        picks in prop::collection::vec(prop_oneof![(-60.0f64..90.0).prop_map(Err), (0usize..12).prop_map(Ok)], 1..200),
    ) {
        // Values are random, or exactly a trigger or restore value (the edges matter).
        let edges: Vec<f64> = g.iter().flat_map(|x| [x.trigger, x.restore]).collect();
        let values: Vec<f64> = picks.iter().map(|p| match p { Ok(i) => edges[i % edges.len()], Err(v) => *v }).collect();
        let mut e = engine_for(g.clone());
        let mut m = GradeModel::new(&g);
        let mut out = vec![];
        for (i, v) in values.iter().enumerate() {
            e.on_reading(reading(*v, i as i64 * 1000), &mut out);
            let want = m.step(*v);
            prop_assert_eq!(e.point_status(PointId(0)).unwrap().grade, want, "after value {} (#{})", v, i);
        }
    }

    #[test]
    fn after_delays_elapse_the_grade_is_the_band_of_the_last_value(
        g in grades(),
        delays in prop::collection::vec((0u64..20_000, 0u64..20_000), 6),
        values in prop::collection::vec((-60.0f64..90.0, 1i64..15_000), 1..100),
    ) {
        let mut g = g;
        for (gr, (on, off)) in g.iter_mut().zip(delays) {
            gr.on_delay_ms = on;
            gr.off_delay_ms = off;
        }
        let mut e = engine_for(g.clone());
        let mut m = GradeModel::new(&g);
        let mut out = vec![];
        let mut ts = 0;
        let mut last = 0.0;
        for (v, dt) in &values {
            ts += dt;
            e.on_reading(reading(*v, ts), &mut out);
            m.step(*v);
            last = *v;
        }
        // Hold the last value past every delay.
        e.on_reading(reading(last, ts + 20_000), &mut out);
        e.tick(Timestamp(ts + 40_001), &mut out);
        prop_assert_eq!(e.point_status(PointId(0)).unwrap().grade, m.step(last));
    }

    #[test]
    fn oscillation_inside_the_band_makes_no_events(
        trigger in 1.0f64..50.0,
        band in 0.1f64..10.0,
        values in prop::collection::vec(0.0f64..1.0, 1..200),
    ) {
        let restore = trigger - band;
        let mut e = engine_for(vec![high("H", trigger, restore, Colour::Orange)]);
        let mut out = vec![];
        e.on_reading(reading(trigger, 0), &mut out);
        prop_assert_eq!(out.len(), 1);
        out.clear();
        for (i, f) in values.iter().enumerate() {
            // anywhere in [restore, trigger + band]: inside or above the band
            let v = restore + f * 2.0 * band;
            e.on_reading(reading(v, 1000 + i as i64), &mut out);
        }
        prop_assert!(out.is_empty(), "events inside the band: {:?}", out);
    }

    #[test]
    fn alarm_life_matches_the_isa_reference_and_nothing_is_lost(g in grades(), ops in ops()) {
        let mut e = engine_for(g.clone());
        let mut m = GradeModel::new(&g);
        // Reference alarm: state, id, and the grade it last reported.
        let mut state = AlarmState::Normal;
        let mut id: Option<AlarmId> = None;
        let mut grade: Option<u16> = None;
        let mut oos = false;
        let mut next_id = 1u64;
        let mut raised = BTreeSet::new();
        let mut closed = BTreeSet::new();
        let mut out = vec![];
        let mut ts = 0i64;
        for op in ops {
            ts += 1000;
            out.clear();
            match op {
                Op::Read(v) => {
                    e.on_reading(reading(v, ts), &mut out);
                    if oos { continue; }
                    let active = m.step(v);
                    match (state, active) {
                        (AlarmState::Normal, Some(a)) => {
                            state = AlarmState::Unacked;
                            id = Some(AlarmId(next_id));
                            next_id += 1;
                            grade = Some(a);
                        }
                        (AlarmState::RtnUnacked, Some(a)) => { state = AlarmState::Unacked; grade = Some(a); }
                        (AlarmState::Unacked | AlarmState::Acked, Some(a)) if Some(a) != grade => {
                            let sev = |i: u16| (g[i as usize].colour, g[i as usize].power_cut, i);
                            if grade.is_none_or(|b| sev(a) > sev(b)) { state = AlarmState::Unacked; }
                            grade = Some(a);
                        }
                        (AlarmState::Unacked, None) => state = AlarmState::RtnUnacked,
                        (AlarmState::Acked, None) => { state = AlarmState::Normal; id = None; }
                        _ => {}
                    }
                }
                Op::Ack => {
                    if let Some(i) = id {
                        let r = e.acknowledge(i, "op", "", Timestamp(ts), &mut out);
                        match state {
                            AlarmState::Unacked => { prop_assert!(r.is_ok()); state = AlarmState::Acked; }
                            AlarmState::RtnUnacked => { prop_assert!(r.is_ok()); state = AlarmState::Normal; id = None; }
                            _ => prop_assert!(r.is_err()),
                        }
                    }
                }
                Op::Tick => e.tick(Timestamp(ts), &mut out),
                Op::Restart => {
                    let open: Vec<_> = e.alarms().cloned().collect();
                    // The store seeds the new engine with one past the last id it holds.
                    let next = e.next_alarm_id().0;
                    e = Engine::new(
                        spec(vec![point("P", PointKind::Other, (-200.0, 200.0), g.clone())]),
                        Timestamp(ts),
                        next,
                    );
                    prop_assert!(e.restore(open, Timestamp(ts), &mut out).is_empty());
                    prop_assert_eq!(e.next_alarm_id().0, next);
                    // Out of service is operator state outside the log: it does not survive.
                    oos = false;
                    // The engine's grade memory restarts from the restored alarm only:
                    // the model restarts the same way.
                    m = GradeModel::new(&g);
                    if let Some(gr) = grade.filter(|_| matches!(state, AlarmState::Unacked | AlarmState::Acked)) {
                        m.on[gr as usize] = true;
                    }
                }
                Op::Bad => { e.on_reading(Reading { quality: Quality::CommFail, ..reading(0.0, ts) }, &mut out); }
                Op::OutOfService(flag) => {
                    e.set_out_of_service(PointId(0), flag, Timestamp(ts), &mut out).unwrap();
                    if flag && !oos {
                        state = AlarmState::Normal;
                        id = None;
                        grade = None;
                        m = GradeModel::new(&g);
                    }
                    oos = flag;
                }
            }
            for ev in &out {
                if let Event::Alarm(a) = ev {
                    prop_assert_eq!(a.alarm.kind, AlarmKind::Value);
                    match a.transition {
                        Transition::Raised => { prop_assert!(raised.insert(a.alarm.id)); }
                        Transition::Cleared | Transition::RemovedFromService => { prop_assert!(closed.insert(a.alarm.id)); }
                        _ => prop_assert!(raised.contains(&a.alarm.id), "transition of an unknown alarm"),
                    }
                }
            }
            let open: HashMap<AlarmId, AlarmState> = e.alarms().map(|a| (a.id, a.state)).collect();
            match id {
                Some(i) => {
                    prop_assert_eq!(open.len(), 1);
                    prop_assert_eq!(open.get(&i).copied(), Some(state), "engine alarms {:?}", open);
                }
                None => prop_assert!(open.is_empty(), "engine has {:?}, model none", open),
            }
            // Nothing lost: every raised alarm is open or was closed by an event.
            for r in &raised {
                prop_assert!(open.contains_key(r) ^ closed.contains(r), "alarm {} lost", r);
            }
        }
    }
}
