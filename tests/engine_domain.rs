//! The engine against the numbers of the standards (DOMAIN.md): methane set-points of
//! the coal-mine safety rules, GB/T 50493 gas alarms, oxygen limits, and the alarm life
//! of ISA-18.2.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use hazgate::engine::{
    AlarmKind, AlarmState, ControlError, Engine, Event, FloodChange, RiskRule, Transition,
};
use hazgate::model::{
    AlarmId, Colour, HazardSourceId, PointId, PointKind, Quality, Reading, Timestamp,
};

/// A small driver: readings at whole seconds, events as (transition, grade name).
struct Site {
    e: Engine,
    out: Vec<Event>,
}

impl Site {
    fn new(spec: hazgate::engine::EngineSpec) -> Site {
        Site {
            e: Engine::new(spec, Timestamp(0), 1),
            out: vec![],
        }
    }

    fn read_q(
        &mut self,
        point: u32,
        t_s: f64,
        value: f64,
        quality: Quality,
    ) -> (Reading, Vec<Event>) {
        self.out.clear();
        let r = self.e.on_reading(
            Reading {
                point: PointId(point),
                ts: Timestamp((t_s * 1000.0) as i64),
                value,
                quality,
            },
            &mut self.out,
        );
        (r, self.out.clone())
    }

    fn read(&mut self, point: u32, t_s: f64, value: f64) -> Vec<(Transition, String)> {
        let (_, ev) = self.read_q(point, t_s, value, Quality::Good);
        transitions(&ev)
    }

    fn tick(&mut self, t_s: f64) -> Vec<Event> {
        self.out.clear();
        self.e.tick(Timestamp((t_s * 1000.0) as i64), &mut self.out);
        self.out.clone()
    }

    fn only_alarm(&self) -> hazgate::engine::Alarm {
        let all: Vec<_> = self.e.alarms().cloned().collect();
        assert_eq!(all.len(), 1, "expected exactly one open alarm, got {all:?}");
        all[0].clone()
    }

    fn ack(&mut self, id: AlarmId, t_s: f64) -> Vec<(Transition, String)> {
        self.out.clear();
        self.e
            .acknowledge(
                id,
                "张伟",
                "已通知瓦检员",
                Timestamp((t_s * 1000.0) as i64),
                &mut self.out,
            )
            .unwrap();
        transitions(&self.out)
    }
}

fn transitions(ev: &[Event]) -> Vec<(Transition, String)> {
    ev.iter()
        .filter_map(|e| match e {
            Event::Alarm(a) => Some((a.transition, a.alarm.grade_name.clone())),
            _ => None,
        })
        .collect()
}

fn t(tr: Transition, name: &str) -> (Transition, String) {
    (tr, name.to_owned())
}

#[test]
fn methane_working_face_alarm_cut_and_restore() {
    // T1 at a longwall face: alarm ≥1.0 %, cut ≥1.5 %, restore <1.0 %.
    let mut s = Site::new(spec(vec![methane_t1("CH4-T1")]));
    assert!(s.read(0, 0.0, 0.30).is_empty());
    assert!(
        s.read(0, 1.0, 0.99).is_empty(),
        "0.99 % is below the alarm set-point"
    );
    assert_eq!(
        s.read(0, 2.0, 1.00),
        vec![t(Transition::Raised, "报警")],
        "alarm at ≥1.0 %"
    );
    let a = s.only_alarm();
    assert_eq!(
        (a.state, a.colour, a.power_cut),
        (AlarmState::Unacked, Colour::Orange, false)
    );
    assert!(s.read(0, 3.0, 1.49).is_empty());
    assert_eq!(
        s.read(0, 4.0, 1.50),
        vec![t(Transition::Escalated, "断电")],
        "cut at ≥1.5 %"
    );
    let a = s.only_alarm();
    assert!(a.power_cut);
    assert_eq!(a.colour, Colour::Red);
    // The cut holds down to the restore value: 1.2 % is above 1.0 %.
    assert!(s.read(0, 5.0, 1.20).is_empty(), "no power restore at 1.2 %");
    assert!(
        s.read(0, 6.0, 1.00).is_empty(),
        "restore needs strictly below 1.0 %"
    );
    assert_eq!(s.only_alarm().grade_name, "断电");
    assert_eq!(
        s.read(0, 7.0, 0.99),
        vec![t(Transition::ReturnedToNormal, "断电")]
    );
    let a = s.only_alarm();
    assert_eq!(a.state, AlarmState::RtnUnacked);
    assert_eq!(a.peak, 1.50);
    assert_eq!(a.peak_at, Timestamp(4000));
    let id = a.id;
    assert_eq!(
        s.ack(id, 8.0),
        vec![
            t(Transition::Acknowledged, "断电"),
            t(Transition::Cleared, "断电")
        ]
    );
    assert_eq!(s.e.alarms().count(), 0);
}

#[test]
fn return_airway_and_intake_cut_at_the_alarm_level() {
    // T2 return airway: alarm 1.0, cut 1.0, restore <1.0. T3 intake of a high-gas face:
    // alarm 0.5, cut 0.5, restore <0.5. Equal set-points raise straight at the cut grade.
    let t2 = point(
        "CH4-T2",
        PointKind::Ch4,
        (0.0, 4.0),
        vec![high("报警", 1.0, 1.0, Colour::Orange), cut(1.0, 1.0)],
    );
    let t3 = point(
        "CH4-T3",
        PointKind::Ch4,
        (0.0, 4.0),
        vec![high("报警", 0.5, 0.5, Colour::Orange), cut(0.5, 0.5)],
    );
    let mut s = Site::new(spec(vec![t2, t3]));
    assert!(s.read(0, 0.0, 0.99).is_empty());
    assert_eq!(s.read(0, 1.0, 1.0), vec![t(Transition::Raised, "断电")]);
    assert!(s.read(1, 0.0, 0.49).is_empty());
    assert_eq!(s.read(1, 1.0, 0.50), vec![t(Transition::Raised, "断电")]);
    assert_eq!(
        s.read(1, 2.0, 0.49),
        vec![t(Transition::ReturnedToNormal, "断电")]
    );
    let open: Vec<_> = s.e.alarms().map(|a| (a.point, a.power_cut)).collect();
    assert_eq!(open, vec![(PointId(0), true), (PointId(1), true)]);
}

#[test]
fn combustible_gas_two_levels_escalate_and_de_escalate() {
    // GB/T 50493 §5.5.2: level 1 ≤25 %LEL, level 2 ≤50 %LEL.
    let lel = point(
        "LEL-TK1",
        PointKind::Combustible,
        (0.0, 100.0),
        vec![
            high("一级报警", 25.0, 25.0, Colour::Orange),
            high("二级报警", 50.0, 50.0, Colour::Red),
        ],
    );
    let mut s = Site::new(spec(vec![lel]));
    assert!(s.read(0, 0.0, 24.9).is_empty());
    assert_eq!(
        s.read(0, 1.0, 25.0),
        vec![t(Transition::Raised, "一级报警")]
    );
    let id = s.only_alarm().id;
    s.ack(id, 2.0);
    assert_eq!(s.only_alarm().state, AlarmState::Acked);
    assert_eq!(
        s.read(0, 3.0, 55.0),
        vec![t(Transition::Escalated, "二级报警")]
    );
    let a = s.only_alarm();
    assert_eq!(a.id, id, "escalation keeps the episode and its id");
    assert_eq!(
        a.state,
        AlarmState::Unacked,
        "an escalation needs a fresh acknowledgement"
    );
    assert!(a.ack.is_none());
    assert_eq!(
        s.read(0, 4.0, 40.0),
        vec![t(Transition::DeEscalated, "一级报警")]
    );
    assert_eq!(s.only_alarm().peak, 55.0);
    s.ack(id, 5.0);
    assert_eq!(
        s.read(0, 6.0, 10.0),
        vec![t(Transition::Cleared, "一级报警")]
    );
    assert_eq!(s.e.alarms().count(), 0);
}

#[test]
fn oxygen_low_and_high() {
    // GB/T 50493: O2 low 19.5 %VOL, high 23.5 %VOL. Low peak is the lowest value.
    let o2 = point(
        "O2-1",
        PointKind::O2,
        (0.0, 25.0),
        vec![
            low("缺氧", 19.5, 19.5, Colour::Red),
            high("富氧", 23.5, 23.5, Colour::Orange),
        ],
    );
    let mut s = Site::new(spec(vec![o2]));
    assert!(s.read(0, 0.0, 20.9).is_empty());
    assert!(s.read(0, 1.0, 19.6).is_empty());
    assert_eq!(s.read(0, 2.0, 19.5), vec![t(Transition::Raised, "缺氧")]);
    assert!(s.read(0, 3.0, 18.0).is_empty());
    assert!(s.read(0, 4.0, 19.0).is_empty());
    assert_eq!(s.only_alarm().peak, 18.0);
    assert_eq!(
        s.read(0, 5.0, 20.9),
        vec![t(Transition::ReturnedToNormal, "缺氧")]
    );
    // Back out the other side before anyone acknowledged: same episode, reactivated.
    assert_eq!(
        s.read(0, 6.0, 23.5),
        vec![t(Transition::Reactivated, "富氧")]
    );
    assert_eq!(s.only_alarm().state, AlarmState::Unacked);
}

#[test]
fn hysteresis_band_gives_no_events() {
    // Methane alarm 1.0 with restore 0.8: oscillation between 0.8 and 1.2 raises once.
    let p = point(
        "CH4",
        PointKind::Ch4,
        (0.0, 4.0),
        vec![high("报警", 1.0, 0.8, Colour::Orange)],
    );
    let mut s = Site::new(spec(vec![p]));
    assert_eq!(s.read(0, 0.0, 1.1).len(), 1);
    for i in 1..200 {
        let v = 0.8 + 0.4 * ((i as f64) * 0.7).sin().abs();
        assert!(
            s.read(0, i as f64, v).is_empty(),
            "value {v} is inside the band"
        );
    }
    assert_eq!(
        s.read(0, 300.0, 0.79),
        vec![t(Transition::ReturnedToNormal, "报警")]
    );
}

#[test]
fn out_of_range_is_a_sensor_fault_not_a_value_alarm() {
    let mut s = Site::new(spec(vec![methane_t1("CH4")]));
    let (r, ev) = s.read_q(0, 0.0, 5.0, Quality::Good);
    assert_eq!(r.quality, Quality::OutOfRange);
    assert_eq!(
        transitions(&ev),
        vec![t(Transition::Raised, "sensor_fault")]
    );
    let a = s.only_alarm();
    assert_eq!(a.kind, AlarmKind::SensorFault);
    assert_eq!(
        s.e.point_status(PointId(0)).unwrap().grade,
        None,
        "5 % from a broken sensor cuts nothing"
    );
    // A good in-range value ends the fault.
    assert_eq!(
        s.read(0, 1.0, 0.3),
        vec![t(Transition::ReturnedToNormal, "sensor_fault")]
    );
    let (r, _) = s.read_q(0, 2.0, f64::NAN, Quality::Good);
    assert_eq!(r.quality, Quality::BadData, "NaN is never a good value");
}

#[test]
fn bad_data_holds_an_active_alarm() {
    let mut s = Site::new(spec(vec![methane_t1("CH4")]));
    s.read(0, 0.0, 1.6);
    for (i, q) in [
        Quality::CommFail,
        Quality::DeviceException(2),
        Quality::SourceBad,
    ]
    .into_iter()
    .enumerate()
    {
        let (_, ev) = s.read_q(0, 1.0 + i as f64, 0.0, q);
        assert!(
            transitions(&ev)
                .iter()
                .all(|(tr, _)| *tr != Transition::ReturnedToNormal),
            "{q:?} must not clear the cut"
        );
    }
    let value_alarm = s.e.alarms().find(|a| a.kind == AlarmKind::Value).unwrap();
    assert_eq!(value_alarm.state, AlarmState::Unacked);
    assert!(value_alarm.power_cut);
}

#[test]
fn on_delay_suppresses_transients() {
    // CO 24 ppm with a 10 s on-delay: a 5 s excursion raises nothing, a lasting one does.
    let mut g = high("报警", 24.0, 24.0, Colour::Orange);
    g.on_delay_ms = 10_000;
    let mut s = Site::new(spec(vec![point(
        "CO",
        PointKind::Co,
        (0.0, 500.0),
        vec![g],
    )]));
    assert!(s.read(0, 0.0, 30.0).is_empty());
    assert!(s.read(0, 5.0, 30.0).is_empty());
    assert!(s.read(0, 6.0, 10.0).is_empty(), "gone before the delay");
    assert!(transitions(&s.tick(20.0)).is_empty());
    assert!(s.read(0, 30.0, 30.0).is_empty());
    assert!(transitions(&s.tick(39.9)).is_empty());
    assert_eq!(
        transitions(&s.tick(40.0)),
        vec![t(Transition::Raised, "报警")]
    );
    assert_eq!(s.only_alarm().raised_at, Timestamp(40_000));
}

#[test]
fn off_delay_holds_the_alarm() {
    let mut g = high("报警", 24.0, 24.0, Colour::Orange);
    g.off_delay_ms = 30_000;
    let mut s = Site::new(spec(vec![point(
        "CO",
        PointKind::Co,
        (0.0, 500.0),
        vec![g],
    )]));
    assert_eq!(s.read(0, 0.0, 30.0).len(), 1);
    assert!(s.read(0, 1.0, 10.0).is_empty());
    assert!(
        s.read(0, 20.0, 30.0).is_empty(),
        "came back: off-delay restarts"
    );
    assert!(s.read(0, 21.0, 10.0).is_empty());
    assert!(transitions(&s.tick(50.0)).is_empty());
    assert_eq!(
        transitions(&s.tick(51.0)),
        vec![t(Transition::ReturnedToNormal, "报警")]
    );
}

#[test]
fn stale_point_goes_stale_with_a_comm_alarm_and_recovers() {
    let mut p = methane_t1("CH4");
    p.stale_after_ms = Some(30_000);
    let mut s = Site::new(spec(vec![p]));
    s.read(0, 0.0, 0.4);
    assert!(s.tick(30.0).is_empty());
    let ev = s.tick(30.1);
    assert!(ev
        .iter()
        .any(|e| matches!(e, Event::Stale(r) if r.quality == Quality::Stale && r.value == 0.4)));
    assert_eq!(transitions(&ev), vec![t(Transition::Raised, "comm")]);
    assert!(s.e.point_status(PointId(0)).unwrap().stale);
    assert!(s.tick(100.0).is_empty(), "stale is reported once");
    assert_eq!(
        s.read(0, 101.0, 0.4),
        vec![t(Transition::ReturnedToNormal, "comm")]
    );
    assert!(!s.e.point_status(PointId(0)).unwrap().stale);
}

#[test]
fn a_point_that_never_reports_goes_stale() {
    let mut p = methane_t1("CH4");
    p.stale_after_ms = Some(10_000);
    let mut s = Site::new(spec(vec![p]));
    assert_eq!(
        transitions(&s.tick(10.5)),
        vec![t(Transition::Raised, "comm")]
    );
}

#[test]
fn sump_rising_faster_than_the_rate_limit() {
    // Water inrush: the sump rises 1.2 m/h against a limit of 0.5 m/h over 10 minutes.
    let p = with_rate(
        point(
            "SUMP",
            PointKind::WaterLevel,
            (0.0, 10.0),
            vec![high("高水位", 8.0, 8.0, Colour::Red)],
        ),
        0.5,
        600_000,
    );
    let mut s = Site::new(spec(vec![p]));
    let mut raised_at = None;
    for i in 0..120 {
        let ts = i as f64 * 30.0;
        let level = if i < 40 {
            2.0
        } else {
            2.0 + (ts - 1200.0) / 3600.0 * 1.2
        };
        let ev = s.read(0, ts, level);
        if ev.contains(&t(Transition::Raised, "rate")) {
            raised_at = Some(ts);
        }
    }
    let raised_at = raised_at.expect("a rate alarm");
    assert!(
        (1200.0..=1800.0).contains(&raised_at),
        "raised within one window of the rise starting, at {raised_at}"
    );
    let a = s.e.alarms().find(|a| a.kind == AlarmKind::Rate).unwrap();
    assert!(
        (a.value - 1.2).abs() < 0.05,
        "the rate is reported in m/h: {}",
        a.value
    );
}

#[test]
fn maintenance_flags_readings_and_holds_alarms() {
    let mut s = Site::new(spec(vec![methane_t1("CH4")]));
    s.e.set_maintenance(PointId(0), true).unwrap();
    let (r, ev) = s.read_q(0, 0.0, 2.0, Quality::Good);
    assert_eq!(r.quality, Quality::Maintenance);
    assert!(ev.is_empty(), "calibration gas raises no alarm");
    s.e.set_maintenance(PointId(0), false).unwrap();
    assert_eq!(s.read(0, 1.0, 2.0), vec![t(Transition::Raised, "断电")]);
}

#[test]
fn shelving_suppresses_annunciation_but_keeps_the_record() {
    let lel = point(
        "LEL",
        PointKind::Combustible,
        (0.0, 100.0),
        vec![
            high("一级报警", 25.0, 25.0, Colour::Orange),
            cut(50.0, 25.0),
        ],
    );
    let mut s = Site::new(spec(vec![lel]));
    s.read(0, 0.0, 30.0);
    let id = s.only_alarm().id;
    let mut out = vec![];
    s.e.shelve(id, "李强", "探头标定", 60_000, Timestamp(1_000), &mut out)
        .unwrap();
    assert_eq!(transitions(&out), vec![t(Transition::Shelved, "一级报警")]);
    let a = s.only_alarm();
    assert!(a.shelved.is_some() && !a.needs_attention());
    // Transitions are still recorded while shelved.
    assert_eq!(
        s.read(0, 2.0, 20.0),
        vec![t(Transition::ReturnedToNormal, "一级报警")]
    );
    assert_eq!(
        s.read(0, 3.0, 30.0),
        vec![t(Transition::Reactivated, "一级报警")]
    );
    // Expiry unshelves.
    assert!(transitions(&s.tick(60.0)).is_empty());
    assert_eq!(
        transitions(&s.tick(61.0)),
        vec![t(Transition::Unshelved, "一级报警")]
    );
    assert!(s.only_alarm().needs_attention());
}

#[test]
fn power_cut_alarms_cannot_be_shelved_and_escalation_unshelves() {
    let lel = point(
        "LEL",
        PointKind::Combustible,
        (0.0, 100.0),
        vec![
            high("一级报警", 25.0, 25.0, Colour::Orange),
            cut(50.0, 25.0),
        ],
    );
    let mut s = Site::new(spec(vec![lel]));
    s.read(0, 0.0, 30.0);
    let id = s.only_alarm().id;
    let mut out = vec![];
    s.e.shelve(id, "李强", "误报", 3_600_000, Timestamp(1_000), &mut out)
        .unwrap();
    assert_eq!(
        s.read(0, 2.0, 60.0),
        vec![
            t(Transition::Escalated, "断电"),
            t(Transition::Unshelved, "断电")
        ]
    );
    assert!(s.only_alarm().needs_attention());
    assert_eq!(
        s.e.shelve(id, "李强", "误报", 60_000, Timestamp(3_000), &mut out),
        Err(ControlError::PowerCutNotShelvable(id))
    );
}

#[test]
fn acknowledge_errors() {
    let mut s = Site::new(spec(vec![methane_t1("CH4")]));
    let mut out = vec![];
    assert_eq!(
        s.e.acknowledge(AlarmId(99), "x", "", Timestamp(0), &mut out),
        Err(ControlError::UnknownAlarm(AlarmId(99)))
    );
    s.read(0, 0.0, 1.2);
    let a = s.only_alarm();
    assert_eq!(s.e.alarm(a.id).map(|x| x.id), Some(a.id));
    s.ack(a.id, 1.0);
    let acked = s.only_alarm();
    let ack = acked.ack.unwrap();
    assert_eq!(
        (ack.by.as_str(), ack.comment.as_str(), ack.at),
        ("张伟", "已通知瓦检员", Timestamp(1000))
    );
    assert_eq!(
        s.e.acknowledge(a.id, "x", "", Timestamp(2), &mut out),
        Err(ControlError::AlreadyAcknowledged(a.id))
    );
}

#[test]
fn out_of_service_ends_alarms_and_stops_new_ones() {
    let mut s = Site::new(spec(vec![methane_t1("CH4")]));
    s.read(0, 0.0, 1.2);
    let mut out = vec![];
    s.e.set_out_of_service(PointId(0), true, Timestamp(1000), &mut out)
        .unwrap();
    assert_eq!(
        transitions(&out),
        vec![t(Transition::RemovedFromService, "报警")]
    );
    assert!(s.read(0, 2.0, 2.0).is_empty());
    s.e.set_out_of_service(PointId(0), false, Timestamp(3000), &mut out)
        .unwrap();
    assert_eq!(s.read(0, 4.0, 2.0), vec![t(Transition::Raised, "断电")]);
}

#[test]
fn hazard_source_colour_follows_its_points_and_rules() {
    // Two combustible detectors around one tank; rule: 2 points at orange or above → red.
    let lel = |id: &str| {
        in_source(
            point(
                id,
                PointKind::Combustible,
                (0.0, 100.0),
                vec![
                    high("一级报警", 25.0, 25.0, Colour::Orange),
                    high("二级报警", 50.0, 50.0, Colour::Red),
                ],
            ),
            0,
        )
    };
    let mut sp = spec(vec![lel("LEL-1"), lel("LEL-2"), methane_t1("elsewhere")]);
    sp.hazard_sources = vec![source(
        "TK-FARM",
        1,
        vec![RiskRule {
            min_points: 2,
            min_colour: Colour::Orange,
            colour: Colour::Red,
        }],
    )];
    let mut s = Site::new(sp);
    let risk = |ev: &[Event]| -> Vec<(Colour, Colour)> {
        ev.iter()
            .filter_map(|e| match e {
                Event::Risk(r) => Some((r.previous, r.colour)),
                _ => None,
            })
            .collect()
    };
    assert_eq!(s.e.risk(HazardSourceId(0)), Some(Colour::Blue));
    let (_, ev) = s.read_q(0, 0.0, 30.0, Quality::Good);
    assert_eq!(risk(&ev), vec![(Colour::Blue, Colour::Orange)]);
    let (_, ev) = s.read_q(1, 1.0, 26.0, Quality::Good);
    assert_eq!(
        risk(&ev),
        vec![(Colour::Orange, Colour::Red)],
        "two points at orange → red"
    );
    let (_, ev) = s.read_q(2, 2.0, 3.0, Quality::Good);
    assert!(
        risk(&ev).is_empty(),
        "a point of no source changes no colour"
    );
    let (_, ev) = s.read_q(1, 3.0, 10.0, Quality::Good);
    assert_eq!(risk(&ev), vec![(Colour::Red, Colour::Orange)]);
    let (_, ev) = s.read_q(0, 4.0, 10.0, Quality::Good);
    assert_eq!(risk(&ev), vec![(Colour::Orange, Colour::Blue)]);
}

#[test]
fn flood_and_chattering_figures() {
    let points = (0..12).map(|i| methane_t1(&format!("CH4-{i}"))).collect();
    let mut s = Site::new(spec(points));
    let mut floods = vec![];
    for i in 0..12u32 {
        let (_, ev) = s.read_q(i, i as f64, 1.2, Quality::Good);
        floods.extend(ev.iter().filter_map(|e| match e {
            Event::Flood {
                change, per_10min, ..
            } => Some((*change, *per_10min)),
            _ => None,
        }));
    }
    assert_eq!(floods, vec![(FloodChange::Started, 11)]);
    let rates = s.e.alarm_rates(Timestamp(12_000));
    assert!(rates.flood);
    assert_eq!(rates.per_10min, 12);
    let ended = s.tick(12.0 + 600.0);
    assert!(ended.iter().any(|e| matches!(
        e,
        Event::Flood {
            change: FloodChange::Ended,
            ..
        }
    )));

    // One point going in and out of alarm (acknowledged each time) chatters.
    let mut s = Site::new(spec(vec![methane_t1("CH4")]));
    for i in 0..4 {
        let t0 = i as f64 * 10.0;
        s.read(0, t0, 1.2);
        let id = s.only_alarm().id;
        s.ack(id, t0 + 1.0);
        s.read(0, t0 + 2.0, 0.3);
    }
    assert_eq!(
        s.e.alarm_rates(Timestamp(40_000)).chattering,
        vec![PointId(0)]
    );
    assert!(s.e.alarm_rates(Timestamp(200_000)).chattering.is_empty());
}

#[test]
fn late_readings_are_kept_but_do_not_move_alarms() {
    let mut s = Site::new(spec(vec![methane_t1("CH4")]));
    s.read(0, 10.0, 0.3);
    let (r, ev) = s.read_q(0, 5.0, 2.0, Quality::Good);
    assert_eq!(r.value, 2.0);
    assert!(ev.is_empty());
    assert_eq!(s.e.counters().late_readings, 1);
}

#[test]
fn alarm_ids_continue_from_the_store() {
    let mut e = Engine::new(spec(vec![methane_t1("CH4")]), Timestamp(0), 500);
    let mut out = vec![];
    e.on_reading(
        Reading {
            point: PointId(0),
            ts: Timestamp(1),
            value: 1.2,
            quality: Quality::Good,
        },
        &mut out,
    );
    assert_eq!(e.alarms().next().map(|a| a.id), Some(AlarmId(500)));
    assert_eq!(e.next_alarm_id(), AlarmId(501));
}

#[test]
fn unknown_point_index_is_bad_config_not_a_panic() {
    let mut s = Site::new(spec(vec![methane_t1("CH4")]));
    let (r, ev) = s.read_q(7, 0.0, 1.0, Quality::Good);
    assert_eq!(r.quality, Quality::BadConfig);
    assert!(ev.is_empty());
    assert_eq!(s.e.counters().unknown_point, 1);
}

#[test]
fn restored_alarms_continue_their_episodes_after_a_restart() {
    // Before the restart: a cut at the face, acknowledged; a CO alarm not yet acknowledged.
    let co = point(
        "CO",
        PointKind::Co,
        (0.0, 500.0),
        vec![high("报警", 24.0, 24.0, Colour::Orange)],
    );
    let mut s = Site::new(spec(vec![in_source(methane_t1("CH4"), 0), co.clone()]));
    let mut sp = spec(vec![in_source(methane_t1("CH4"), 0), co]);
    sp.hazard_sources = vec![source("FACE", 1, vec![])];
    s.e = Engine::new(sp.clone(), Timestamp(0), 1);
    s.read(0, 0.0, 1.7);
    let cut = s.e.alarms().next().unwrap().id;
    s.ack(cut, 1.0);
    s.read(1, 2.0, 40.0);
    let open: Vec<_> = s.e.alarms().cloned().collect();
    assert_eq!(open.len(), 2);

    // After: a fresh engine gets the open episodes back.
    let mut e = Engine::new(sp, Timestamp(10_000), 3);
    let mut out = vec![];
    let refused = e.restore(open, Timestamp(10_000), &mut out);
    assert!(refused.is_empty());
    assert_eq!(
        e.risk(HazardSourceId(0)),
        Some(Colour::Red),
        "the risk colour comes back too"
    );
    let mut s = Site { e, out: vec![] };
    // Still at the cut level: no new alarm, the acknowledgement is kept.
    assert!(s.read(0, 11.0, 1.6).is_empty());
    let a = s.e.alarm(cut).unwrap();
    assert_eq!(
        (a.state, a.grade_name.as_str()),
        (AlarmState::Acked, "断电")
    );
    assert_eq!(a.ack.as_ref().unwrap().by, "张伟");
    // Gas back below 1.0 %: the acknowledged episode clears.
    assert_eq!(s.read(0, 12.0, 0.5), vec![t(Transition::Cleared, "断电")]);
    // CO back to normal: the unacknowledged episode returns to normal, same id.
    let ev = s.read(1, 13.0, 5.0);
    assert_eq!(ev, vec![t(Transition::ReturnedToNormal, "报警")]);
    // New episodes get fresh ids after the restored ones.
    s.read(0, 14.0, 1.2);
    assert!(s.e.alarms().any(|a| a.id.0 >= 3 && a.point == PointId(0)));
}

#[test]
fn restore_refuses_alarms_of_points_that_no_longer_exist() {
    let mut s = Site::new(spec(vec![methane_t1("A"), methane_t1("B")]));
    s.read(1, 0.0, 1.2);
    let open: Vec<_> = s.e.alarms().cloned().collect();
    let mut e = Engine::new(spec(vec![methane_t1("A")]), Timestamp(0), 1);
    let refused = e.restore(open, Timestamp(0), &mut vec![]);
    assert_eq!(refused.len(), 1);
    assert_eq!(e.alarms().count(), 0);
}
