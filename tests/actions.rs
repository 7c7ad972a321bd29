//! The safety-action controller driven by the real engine: a gas leak cuts the power in
//! the same step, the feed (馈电) confirms it, the gas falls and the power comes back;
//! a faulty relay, a feed that drops on its own, sensor faults and offline devices, manual
//! restore and release, and writes that fail.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use hazgate::actions::{
    ActionError, ActionSpec, Controller, Output, RelaySpec, RelayTarget, Restore, Trigger,
};
use hazgate::engine::Engine;
use hazgate::model::{PointId, PointKind, Quality, Reading, Timestamp};
use hazgate::sources::modbus::poller::Write;

const CH4: PointId = PointId(0);
const FEED: PointId = PointId(1);
const DEVICE: PointId = PointId(2);
const STATUS: PointId = PointId(3);
const CUT: PointId = PointId(4);

/// Engine + controller wired as the gateway wires them.
struct Rig {
    engine: Engine,
    ctl: Controller,
    writes: Vec<(bool, Timestamp, i64)>,
    status: Vec<f64>,
    fail_writes: bool,
}

impl Rig {
    fn new(restore: Restore, feedback: bool) -> Rig {
        let mut feed = point("FEED", PointKind::Switch, (0.0, 1.0), vec![]);
        feed.grades.clear();
        let device = point(
            "device:kj",
            PointKind::Switch,
            (0.0, 1.0),
            vec![low("设备离线", 0.0, 0.0, hazgate::model::Colour::Orange)],
        );
        let status = point(
            "action:cut",
            PointKind::Switch,
            (0.0, 1.0),
            vec![low("馈电异常", 0.0, 0.0, hazgate::model::Colour::Red)],
        );
        let cut = point(
            "cut:cut",
            PointKind::Switch,
            (0.0, 1.0),
            vec![high("断电", 1.0, 0.5, hazgate::model::Colour::Red)],
        );
        let methane = methane_t1("CH4");
        let cut_grades = methane
            .grades
            .iter()
            .enumerate()
            .filter(|(_, g)| g.power_cut)
            .map(|(k, _)| k as u16)
            .collect();
        let engine = Engine::new(
            spec(vec![methane, feed, device, status, cut]),
            Timestamp(0),
            1,
        );
        let ctl = Controller::new(vec![ActionSpec {
            id: "cut".into(),
            name: "face".into(),
            triggers: vec![Trigger {
                point: CH4,
                grades: cut_grades,
            }],
            lockout: vec![CH4, DEVICE],
            restore,
            relays: vec![RelaySpec {
                device: "kj".into(),
                target: RelayTarget::Coil(0),
                cut_value: 1,
                restore_value: 0,
                feedback: feedback.then_some(FEED),
                feedback_timeout_ms: 1_500,
            }],
            status_point: STATUS,
            cut_point: CUT,
        }]);
        Rig {
            engine,
            ctl,
            writes: vec![],
            status: vec![],
            fail_writes: false,
        }
    }

    /// One reading through engine and controller, at time `t` ms; returns the writes
    /// the controller asked for in this step.
    fn read(&mut self, p: PointId, t: i64, value: f64, quality: Quality) -> Vec<bool> {
        let now = Timestamp(t);
        let mut events = vec![];
        let r = self.engine.on_reading(
            Reading {
                point: p,
                ts: now,
                value,
                quality,
            },
            &mut events,
        );
        let mut out = vec![];
        for e in &events {
            self.ctl.on_event(e, now, &mut out);
        }
        self.ctl.on_reading(&r, now, &mut out);
        self.settle(out, now)
    }

    fn tick(&mut self, t: i64) -> Vec<bool> {
        let now = Timestamp(t);
        let mut events = vec![];
        self.engine.tick(now, &mut events);
        let mut out = vec![];
        for e in &events {
            self.ctl.on_event(e, now, &mut out);
        }
        self.ctl.tick(now, &mut out);
        self.settle(out, now)
    }

    /// Deliver the controller's outputs: writes succeed unless `fail_writes`; status
    /// readings go back into the engine.
    fn settle(&mut self, mut out: Vec<Output>, now: Timestamp) -> Vec<bool> {
        let mut cuts = vec![];
        while let Some(o) = out.pop() {
            match o {
                Output::Write {
                    action,
                    relay,
                    command,
                    write,
                    cut,
                    cause_ts,
                    ..
                } => {
                    assert_eq!(
                        write,
                        Write::Coil {
                            address: 0,
                            value: cut
                        },
                        "cut_value = 1: the coil is written ON to cut"
                    );
                    cuts.push(cut);
                    self.writes.push((cut, cause_ts, now.0));
                    let mut more = vec![];
                    let result = if self.fail_writes {
                        Err("timeout".to_owned())
                    } else {
                        Ok(())
                    };
                    self.ctl
                        .write_result(action, relay, command, result, now, &mut more);
                    out.extend(more);
                }
                Output::Status(r) => {
                    if r.point == STATUS {
                        self.status.push(r.value);
                    }
                    let mut events = vec![];
                    self.engine.on_reading(r, &mut events);
                }
            }
        }
        cuts
    }

    fn feedback_alarm(&self) -> bool {
        self.engine
            .alarms()
            .any(|a| a.point == STATUS && a.is_active() && a.grade_name == "馈电异常")
    }
}

#[test]
fn gas_leak_cuts_in_the_same_step_and_restores_below_the_restore_level() {
    let mut rig = Rig::new(Restore::Auto, true);
    rig.read(FEED, 0, 1.0, Quality::Good);
    assert!(rig.read(CH4, 1_000, 0.8, Quality::Good).is_empty());
    assert!(
        rig.read(CH4, 2_000, 1.2, Quality::Good).is_empty(),
        "alarm grade only"
    );
    assert_eq!(
        rig.read(CH4, 3_000, 1.55, Quality::Good),
        vec![true],
        "cut at ≥ 1.5 %"
    );
    let (_, cause, sent) = rig.writes[0];
    assert_eq!(
        (cause, sent),
        (Timestamp(3_000), 3_000),
        "no delay on the cut path"
    );
    // The feed drops within its timeout: no feedback fault.
    rig.read(FEED, 3_800, 0.0, Quality::Good);
    rig.tick(6_000);
    assert!(!rig.feedback_alarm());
    // Still above the restore level: stays cut.
    assert!(rig.read(CH4, 7_000, 1.1, Quality::Good).is_empty());
    assert_eq!(
        rig.read(CH4, 8_000, 0.9, Quality::Good),
        vec![false],
        "restore below 1.0 %"
    );
    rig.read(FEED, 8_500, 1.0, Quality::Good);
    rig.tick(12_000);
    assert!(!rig.feedback_alarm());
    assert!(rig.status.iter().all(|v| *v == 1.0));
}

#[test]
fn a_relay_whose_feed_does_not_drop_raises_the_feedback_fault() {
    let mut rig = Rig::new(Restore::Auto, true);
    rig.read(FEED, 0, 1.0, Quality::Good);
    assert_eq!(rig.read(CH4, 1_000, 2.0, Quality::Good), vec![true]);
    rig.read(FEED, 2_000, 1.0, Quality::Good); // still powered
    rig.tick(2_400);
    assert!(!rig.feedback_alarm(), "inside the 1.5 s feedback window");
    rig.tick(2_600);
    assert!(rig.feedback_alarm(), "馈电异常 after the window");
}

#[test]
fn a_feed_that_drops_without_a_command_is_a_fault() {
    let mut rig = Rig::new(Restore::Auto, true);
    rig.read(FEED, 0, 1.0, Quality::Good);
    rig.read(CH4, 500, 0.3, Quality::Good);
    rig.read(FEED, 1_000, 0.0, Quality::Good);
    assert!(rig.feedback_alarm());
    assert!(rig.writes.is_empty());
}

#[test]
fn sensor_faults_and_offline_devices_lock_out() {
    let mut rig = Rig::new(Restore::Auto, false);
    rig.read(CH4, 0, 0.3, Quality::Good);
    // Out of range: a sensor fault, not a value — but the cut happens (故障闭锁).
    assert_eq!(rig.read(CH4, 1_000, 9.0, Quality::Good), vec![true]);
    assert_eq!(rig.read(CH4, 2_000, 0.3, Quality::Good), vec![false]);
    // The sensor's device goes offline.
    rig.read(DEVICE, 2_500, 1.0, Quality::Good);
    assert_eq!(rig.read(DEVICE, 3_000, 0.0, Quality::Good), vec![true]);
    assert_eq!(rig.read(DEVICE, 4_000, 1.0, Quality::Good), vec![false]);
}

#[test]
fn manual_restore_waits_for_a_release_and_refuses_it_while_gas_is_high() {
    let mut rig = Rig::new(Restore::Manual, false);
    assert_eq!(rig.read(CH4, 0, 1.6, Quality::Good), vec![true]);
    let mut out = vec![];
    assert_eq!(
        rig.ctl.release("cut", Timestamp(500), &mut out),
        Err(ActionError::CausePresent(
            "cut".into(),
            "cut grade (points #0)".into()
        ))
    );
    assert!(
        rig.read(CH4, 1_000, 0.5, Quality::Good).is_empty(),
        "latched"
    );
    rig.ctl.release("cut", Timestamp(2_000), &mut out).unwrap();
    assert_eq!(rig.settle(out, Timestamp(2_000)), vec![false]);
}

#[test]
fn manual_cut_and_release() {
    let mut rig = Rig::new(Restore::Auto, false);
    let mut out = vec![];
    rig.ctl.manual_cut("cut", Timestamp(0), &mut out).unwrap();
    assert_eq!(rig.settle(out, Timestamp(0)), vec![true]);
    let mut out = vec![];
    rig.ctl.release("cut", Timestamp(1_000), &mut out).unwrap();
    assert_eq!(rig.settle(out, Timestamp(1_000)), vec![false]);
    assert_eq!(
        rig.ctl.manual_cut("nope", Timestamp(0), &mut vec![]),
        Err(ActionError::Unknown("nope".into()))
    );
}

#[test]
fn failed_writes_are_retried_and_become_a_fault_after_two_seconds() {
    let mut rig = Rig::new(Restore::Auto, false);
    rig.fail_writes = true;
    rig.read(CH4, 0, 2.0, Quality::Good);
    assert!(rig.writes.len() >= 2, "retried at once: {:?}", rig.writes);
    rig.tick(1_000);
    assert!(!rig.feedback_alarm());
    rig.tick(2_000);
    assert!(rig.feedback_alarm(), "not written within the 2 s budget");
    rig.fail_writes = false;
    rig.tick(2_250);
    rig.tick(2_500);
    assert!(
        !rig.feedback_alarm(),
        "written on a retry: the fault returns to normal"
    );
}

/// One cut range of two relays — a coil and a holding register — on one action.
fn two_relay_controller() -> (Engine, Controller) {
    let feed = |id: &str| {
        let mut p = point(id, PointKind::Switch, (0.0, 1.0), vec![]);
        p.grades.clear();
        p
    };
    let status = point(
        "action:range",
        PointKind::Switch,
        (0.0, 1.0),
        vec![low("馈电异常", 0.0, 0.5, hazgate::model::Colour::Red)],
    );
    let cut = point(
        "cut:range",
        PointKind::Switch,
        (0.0, 1.0),
        vec![high("断电", 1.0, 0.5, hazgate::model::Colour::Red)],
    );
    let methane = methane_t1("CH4");
    let grades = methane
        .grades
        .iter()
        .enumerate()
        .filter(|(_, g)| g.power_cut)
        .map(|(k, _)| k as u16)
        .collect();
    let engine = Engine::new(
        spec(vec![methane, feed("FEED-A"), feed("FEED-B"), status, cut]),
        Timestamp(0),
        1,
    );
    let relay = |target, cut_value, restore_value, feedback| RelaySpec {
        device: "kj".into(),
        target,
        cut_value,
        restore_value,
        feedback: Some(feedback),
        feedback_timeout_ms: 1_000,
    };
    let ctl = Controller::new(vec![ActionSpec {
        id: "range".into(),
        name: "face and return airway".into(),
        triggers: vec![Trigger { point: CH4, grades }],
        lockout: vec![],
        restore: Restore::Auto,
        relays: vec![
            relay(RelayTarget::Coil(4), 1, 0, PointId(1)),
            relay(RelayTarget::Holding(10), 0xA5, 0x5A, PointId(2)),
        ],
        status_point: PointId(3),
        cut_point: PointId(4),
    }]);
    (engine, ctl)
}

fn step(engine: &mut Engine, ctl: &mut Controller, p: u32, t: i64, v: f64) -> Vec<Output> {
    let mut events = vec![];
    let r = engine.on_reading(
        Reading {
            point: PointId(p),
            ts: Timestamp(t),
            value: v,
            quality: Quality::Good,
        },
        &mut events,
    );
    let mut out = vec![];
    for e in &events {
        ctl.on_event(e, Timestamp(t), &mut out);
    }
    ctl.on_reading(&r, Timestamp(t), &mut out);
    out
}

fn writes(out: &[Output]) -> Vec<Write> {
    out.iter()
        .filter_map(|o| match o {
            Output::Write { write, .. } => Some(write.clone()),
            _ => None,
        })
        .collect()
}

fn status_value(out: &[Output], p: u32) -> Option<f64> {
    out.iter().rev().find_map(|o| match o {
        Output::Status(r) if r.point == PointId(p) => Some(r.value),
        _ => None,
    })
}

#[test]
fn one_cut_writes_every_relay_of_the_range_and_a_feed_that_returns_unbidden_is_a_fault() {
    let (mut engine, mut ctl) = two_relay_controller();
    step(&mut engine, &mut ctl, 1, 0, 1.0);
    step(&mut engine, &mut ctl, 2, 0, 1.0);
    let out = step(&mut engine, &mut ctl, 0, 1_000, 1.7);
    assert_eq!(
        writes(&out),
        vec![
            Write::Coil {
                address: 4,
                value: true
            },
            Write::Register {
                address: 10,
                value: 0xA5
            },
        ],
        "both relays of the cut range, in the same step"
    );
    assert_eq!(status_value(&out, 4), Some(1.0), "cut:range reads 1");
    for (k, o) in out.iter().enumerate() {
        if let Output::Write {
            action,
            relay,
            command,
            ..
        } = o
        {
            let mut more = vec![];
            ctl.write_result(
                *action,
                *relay,
                *command,
                Ok(()),
                Timestamp(1_000 + k as i64),
                &mut more,
            );
        }
    }
    // Both feeds drop: confirmed, no fault.
    step(&mut engine, &mut ctl, 1, 1_500, 0.0);
    let out = step(&mut engine, &mut ctl, 2, 1_500, 0.0);
    assert_eq!(status_value(&out, 3), None, "no change of the status point");
    let view = &ctl.view()[0];
    assert!(view.cut && view.ok, "{view:?}");
    // The return airway's feed comes back while the cut stands: 馈电异常.
    let out = step(&mut engine, &mut ctl, 2, 2_000, 1.0);
    assert_eq!(status_value(&out, 3), Some(0.0), "{out:?}");
    assert!(ctl.view()[0].relays[1].feedback_fault);
    // Gas falls below the restore level: both relays are restored.
    let out = step(&mut engine, &mut ctl, 0, 3_000, 0.8);
    assert_eq!(
        writes(&out),
        vec![
            Write::Coil {
                address: 4,
                value: false
            },
            Write::Register {
                address: 10,
                value: 0x5A
            },
        ]
    );
    assert_eq!(status_value(&out, 4), Some(0.0), "cut:range reads 0");
}

#[test]
fn a_write_answer_of_an_older_command_is_ignored() {
    let (mut engine, mut ctl) = two_relay_controller();
    let cut = step(&mut engine, &mut ctl, 0, 1_000, 1.7);
    let restore = step(&mut engine, &mut ctl, 0, 1_200, 0.5);
    let command_of = |out: &[Output]| {
        out.iter()
            .find_map(|o| match o {
                Output::Write {
                    command, relay: 0, ..
                } => Some(*command),
                _ => None,
            })
            .unwrap()
    };
    let (old, new) = (command_of(&cut), command_of(&restore));
    assert_ne!(old, new);
    let mut out = vec![];
    // The cut's write answers late: it says nothing about the restore.
    ctl.write_result(0, 0, old, Ok(()), Timestamp(1_300), &mut out);
    assert!(!ctl.view()[0].relays[0].written);
    ctl.write_result(0, 0, new, Ok(()), Timestamp(1_350), &mut out);
    assert!(ctl.view()[0].relays[0].written);
}
