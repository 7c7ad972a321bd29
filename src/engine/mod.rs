//! The engine: readings in, graded alarms out. Pure — no IO, no clock, no tokio; every
//! call carries its time, so the same inputs always give the same events.
//!
//! One [`Engine`] owns all point state (the gateway runs it in one task, so the hot
//! path takes no locks and never hashes: points are dense [`PointId`] indices).
//!
//! For each reading, [`Engine::on_reading`]:
//! 1. settles the quality: a non-finite value is `bad_data`, a value outside the
//!    sensor range is `out_of_range` (a sensor fault, never a process value), a point
//!    in maintenance flags good readings `maintenance`;
//! 2. on a good value, evaluates every threshold grade with hysteresis (enter at
//!    `trigger`, leave strictly past `restore`) and its on-/off-delay, and takes the
//!    most severe active grade; on a bad value it *holds* the alarm state (a failed
//!    sensor never clears an alarm, and never raises one) and cancels pending delays;
//! 3. steps the ISA-18.2 alarm of each kind ([`AlarmKind`]) for the point;
//! 4. recomputes the hazard source's risk colour when a value alarm changed grade;
//! 5. counts raises for the flood and chattering figures.
//!
//! [`Engine::tick`] lets time pass without readings: delays complete, points with no
//! reading in their stale window become `stale` with a communication alarm, shelves
//! expire, floods end. The gateway calls it a few times a second.
//!
//! A reading older than the last one evaluated for its point (out of order, e.g. a
//! late MQTT message with a device timestamp) is returned for storage but does not
//! move alarms; it is counted in [`Counters::late_readings`].
//!
//! Power-cut grades never carry a delay or deadband (config validation refuses them),
//! so a reading at the cut level produces the escalation event in the same call.

mod alarm;
pub mod rate;
pub mod spec;

pub use alarm::{Ack, Alarm, AlarmEvent, AlarmKind, AlarmState, Shelve, Transition};
pub use rate::FloodChange;
pub use spec::*;

use crate::model::{
    AlarmId, Colour, Direction, HazardSourceId, PointId, Quality, Reading, Timestamp,
};
use rate::{AlarmRate, Chatter, RateOfChange};
use std::collections::HashMap;

/// Something the engine wants the rest of the gateway to know.
///
/// Events are rare next to readings (transitions only), so the alarm variant is kept
/// inline rather than boxed: no allocation per event beyond the alarm's own strings.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// An alarm transition, to be committed to the durable log before it is shown.
    Alarm(AlarmEvent),
    /// A hazard source's risk colour changed.
    Risk(RiskChange),
    /// The gateway entered or left an alarm flood.
    Flood {
        change: FloodChange,
        per_10min: u32,
        ts: Timestamp,
    },
    /// A point went stale: no reading within its window. The reading carries the last
    /// value seen with quality `stale`, so it can be stored like any other.
    Stale(Reading),
}

/// A hazard source changed colour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RiskChange {
    pub source: HazardSourceId,
    pub previous: Colour,
    pub colour: Colour,
    pub ts: Timestamp,
}

/// Why a control request (acknowledge, shelve, …) was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    #[error("no open alarm with id {0}")]
    UnknownAlarm(AlarmId),
    #[error("no point with index {0}")]
    UnknownPoint(u32),
    #[error("alarm {0} is already acknowledged")]
    AlreadyAcknowledged(AlarmId),
    #[error("alarm {0} is at a power-cut grade and cannot be shelved")]
    PowerCutNotShelvable(AlarmId),
    #[error("alarm {0} is not shelved")]
    NotShelved(AlarmId),
    #[error("a shelve needs a positive duration")]
    InvalidDuration,
}

/// Plain counters for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Readings evaluated by the engine.
    pub readings: u64,
    /// Readings for an index that is no configured point (returned as `bad_config`).
    pub unknown_point: u64,
    /// Readings older than the last one of their point: stored, not evaluated.
    pub late_readings: u64,
    /// Readings whose quality was not good after evaluation.
    pub bad_quality: u64,
    /// Alarm episodes raised.
    pub raised: u64,
}

/// Alarm-rate figures for metrics and the dashboard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlarmRates {
    /// Alarms raised in the last 10 minutes.
    pub per_10min: u32,
    /// More than the flood threshold in the last 10 minutes.
    pub flood: bool,
    /// Floods started since the engine was built.
    pub floods_started: u64,
    /// Points that raised more than the chatter count within the chatter window.
    pub chattering: Vec<PointId>,
}

/// The live state of one point, for the API and the dashboard.
#[derive(Debug, Clone, PartialEq)]
pub struct PointStatus {
    pub point: PointId,
    /// Last reading (with its settled quality), if any arrived.
    pub last: Option<Reading>,
    /// Index of the active threshold grade, if any.
    pub grade: Option<u16>,
    pub maintenance: bool,
    pub out_of_service: bool,
    pub stale: bool,
}

const NO_PENDING: i64 = i64::MIN;

/// Runtime copy of a grade's numbers, laid out flat for the hot loop.
#[derive(Debug, Clone, Copy)]
struct GradeRt {
    high: bool,
    trigger: f64,
    restore: f64,
    on_delay_ms: i64,
    off_delay_ms: i64,
    colour: Colour,
}

#[derive(Debug, Clone, Copy)]
struct GradeState {
    /// The condition with hysteresis, before delays.
    raw: bool,
    /// The condition after delays: the grade is active.
    on: bool,
    /// When `raw` first differed from `on`, or `NO_PENDING`.
    pending_since: i64,
}

#[derive(Debug, Default)]
struct PointRt {
    grades_start: usize,
    grades_len: usize,
    range_min: f64,
    range_max: f64,
    stale_after_ms: i64,
    hazard: Option<u32>,
    last_ts: i64,
    last_value: f64,
    last_quality: Option<Quality>,
    /// Time the stale window counts from (last reading, or engine start).
    seen_ts: i64,
    stale: bool,
    active_grade: Option<u16>,
    pending: u16,
    maintenance: bool,
    out_of_service: bool,
    slots: [Option<Box<Alarm>>; 4],
    rate: Option<Box<RateOfChange>>,
    chatter: Chatter,
}

/// What a slot's condition is right now.
#[derive(Debug, Clone, Copy)]
struct Cond {
    grade: Option<u16>,
    /// Orders grades for escalation: colour first, then position in the list.
    severity: (Colour, bool, u16),
    colour: Colour,
    power_cut: bool,
    high: bool,
}

/// The graded alarm engine. See the module docs.
pub struct Engine {
    spec: EngineSpec,
    points: Vec<PointRt>,
    grade_rt: Vec<GradeRt>,
    grade_state: Vec<GradeState>,
    source_points: Vec<Vec<u32>>,
    risk: Vec<Colour>,
    alarm_index: HashMap<AlarmId, (u32, AlarmKind)>,
    shelves: HashMap<(u32, AlarmKind), Shelve>,
    next_alarm_id: u64,
    alarm_rate: AlarmRate,
    counters: Counters,
}

impl Engine {
    /// Build an engine for `spec`, starting at `now`. Alarm ids start at
    /// `first_alarm_id` (the durable store passes one past the last id it holds, so ids
    /// never repeat across restarts).
    pub fn new(spec: EngineSpec, now: Timestamp, first_alarm_id: u64) -> Engine {
        let mut grade_rt = Vec::new();
        let mut points = Vec::with_capacity(spec.points.len());
        let mut source_points = vec![Vec::new(); spec.hazard_sources.len()];
        for (i, p) in spec.points.iter().enumerate() {
            let grades_start = grade_rt.len();
            for g in &p.grades {
                grade_rt.push(GradeRt {
                    high: g.direction == Direction::High,
                    trigger: g.trigger,
                    restore: g.restore,
                    on_delay_ms: ms(g.on_delay_ms),
                    off_delay_ms: ms(g.off_delay_ms),
                    colour: g.colour,
                });
            }
            let hazard = p
                .hazard_source
                .map(|h| h.0)
                .filter(|&h| (h as usize) < source_points.len());
            if let Some(h) = hazard {
                source_points[h as usize].push(i as u32);
            }
            points.push(PointRt {
                grades_start,
                grades_len: p.grades.len(),
                range_min: p.range_min,
                range_max: p.range_max,
                stale_after_ms: p.stale_after_ms.map(ms).unwrap_or(0),
                hazard,
                last_ts: i64::MIN,
                last_value: f64::NAN,
                seen_ts: now.0,
                rate: p.rate.as_ref().map(|_| Box::default()),
                ..PointRt::default()
            });
        }
        let grade_state = vec![
            GradeState {
                raw: false,
                on: false,
                pending_since: NO_PENDING,
            };
            grade_rt.len()
        ];
        let risk = vec![Colour::Blue; spec.hazard_sources.len()];
        Engine {
            spec,
            points,
            grade_rt,
            grade_state,
            source_points,
            risk,
            alarm_index: HashMap::new(),
            shelves: HashMap::new(),
            next_alarm_id: first_alarm_id.max(1),
            alarm_rate: AlarmRate::default(),
            counters: Counters::default(),
        }
    }

    /// The spec the engine was built from.
    pub fn spec(&self) -> &EngineSpec {
        &self.spec
    }

    /// Evaluate one reading. Events go to `out`; the reading is returned with its
    /// settled quality, ready to be stored.
    pub fn on_reading(&mut self, reading: Reading, out: &mut Vec<Event>) -> Reading {
        let idx = reading.point.0 as usize;
        if idx >= self.points.len() {
            self.counters.unknown_point += 1;
            return Reading {
                quality: Quality::BadConfig,
                ..reading
            };
        }
        self.counters.readings += 1;
        let ts = reading.ts.0;
        let value = reading.value;
        let p = &mut self.points[idx];
        let mut quality = reading.quality;
        if quality == Quality::Good {
            if !value.is_finite() {
                quality = Quality::BadData;
            } else if value < p.range_min || value > p.range_max {
                quality = Quality::OutOfRange;
            } else if p.maintenance {
                quality = Quality::Maintenance;
            }
        }
        let settled = Reading { quality, ..reading };
        if quality != Quality::Good {
            self.counters.bad_quality += 1;
        }
        if ts < p.last_ts {
            self.counters.late_readings += 1;
            return settled;
        }
        p.last_ts = ts;
        p.last_value = value;
        p.last_quality = Some(quality);
        p.seen_ts = ts;
        let was_stale = std::mem::replace(&mut p.stale, false);
        if p.out_of_service {
            return settled;
        }
        if was_stale {
            self.step_slot(idx, AlarmKind::Comm, None, value, reading.ts, out);
        }
        let p = &mut self.points[idx];
        if p.maintenance {
            return settled;
        }
        match quality {
            Quality::Good => {
                if p.slots[AlarmKind::SensorFault.slot()].is_some() {
                    self.step_slot(idx, AlarmKind::SensorFault, None, value, reading.ts, out);
                }
                self.evaluate_grades(idx, ts, value, out);
                if self.points[idx].rate.is_some() {
                    self.evaluate_rate(idx, reading.ts, value, out);
                }
            }
            Quality::OutOfRange
            | Quality::BadData
            | Quality::DeviceException(_)
            | Quality::SourceBad => {
                self.hold(idx);
                let cond = Cond {
                    grade: None,
                    severity: (Colour::Orange, false, 0),
                    colour: Colour::Orange,
                    power_cut: false,
                    high: true,
                };
                self.step_slot(
                    idx,
                    AlarmKind::SensorFault,
                    Some(cond),
                    value,
                    reading.ts,
                    out,
                );
            }
            _ => self.hold(idx),
        }
        settled
    }

    /// Let time pass to `now`: complete delays, detect stale points, expire shelves,
    /// end floods.
    pub fn tick(&mut self, now: Timestamp, out: &mut Vec<Event>) {
        for idx in 0..self.points.len() {
            let p = &self.points[idx];
            if p.out_of_service {
                continue;
            }
            if p.pending > 0 && !p.maintenance && p.last_quality == Some(Quality::Good) {
                let v = p.last_value;
                self.evaluate_grades(idx, now.0, v, out);
            }
            let p = &mut self.points[idx];
            // A point whose source reports the link down (`comm_fail`) is not
            // silent: its device carries the one parent alarm, so the point does not
            // add a communication alarm of its own.
            if p.stale_after_ms > 0
                && !p.stale
                && p.last_quality != Some(Quality::CommFail)
                && now.0.saturating_sub(p.seen_ts) > p.stale_after_ms
            {
                p.stale = true;
                p.pending = 0;
                let (gs, gl) = (p.grades_start, p.grades_len);
                let value = p.last_value;
                for s in &mut self.grade_state[gs..gs + gl] {
                    s.pending_since = NO_PENDING;
                }
                out.push(Event::Stale(Reading {
                    point: PointId(idx as u32),
                    ts: now,
                    value,
                    quality: Quality::Stale,
                }));
                let cond = Cond {
                    grade: None,
                    severity: (Colour::Orange, false, 0),
                    colour: Colour::Orange,
                    power_cut: false,
                    high: true,
                };
                self.step_slot(idx, AlarmKind::Comm, Some(cond), value, now, out);
            }
        }
        if !self.shelves.is_empty() {
            let expired: Vec<(u32, AlarmKind)> = self
                .shelves
                .iter()
                .filter(|(_, s)| s.until <= now)
                .map(|(k, _)| *k)
                .collect();
            for key in expired {
                self.shelves.remove(&key);
                if let Some(a) = self.points[key.0 as usize].slots[key.1.slot()].as_deref_mut() {
                    if a.shelved.take().is_some() {
                        a.changed_at = now;
                        out.push(Event::Alarm(AlarmEvent {
                            transition: Transition::Unshelved,
                            ts: now,
                            alarm: a.clone(),
                        }));
                    }
                }
            }
        }
        let rs = &self.spec.alarm_rate;
        if let Some(change) =
            self.alarm_rate
                .update(now, rs.flood_start_per_10min, rs.flood_end_per_10min)
        {
            out.push(Event::Flood {
                change,
                per_10min: self.alarm_rate.per_10min(),
                ts: now,
            });
        }
    }

    /// Acknowledge an alarm: `by` is the operator's name, `comment` what they say.
    pub fn acknowledge(
        &mut self,
        id: AlarmId,
        by: &str,
        comment: &str,
        now: Timestamp,
        out: &mut Vec<Event>,
    ) -> Result<(), ControlError> {
        let (idx, kind) = *self
            .alarm_index
            .get(&id)
            .ok_or(ControlError::UnknownAlarm(id))?;
        let slot = &mut self.points[idx as usize].slots[kind.slot()];
        let a = slot.as_deref_mut().ok_or(ControlError::UnknownAlarm(id))?;
        let ack = Ack {
            by: by.to_owned(),
            comment: comment.to_owned(),
            at: now,
        };
        match a.state {
            AlarmState::Unacked => {
                a.state = AlarmState::Acked;
                a.ack = Some(ack);
                a.changed_at = now;
                out.push(Event::Alarm(AlarmEvent {
                    transition: Transition::Acknowledged,
                    ts: now,
                    alarm: a.clone(),
                }));
            }
            AlarmState::RtnUnacked => {
                a.ack = Some(ack);
                a.changed_at = now;
                out.push(Event::Alarm(AlarmEvent {
                    transition: Transition::Acknowledged,
                    ts: now,
                    alarm: a.clone(),
                }));
                a.state = AlarmState::Normal;
                out.push(Event::Alarm(AlarmEvent {
                    transition: Transition::Cleared,
                    ts: now,
                    alarm: a.clone(),
                }));
                *slot = None;
                self.alarm_index.remove(&id);
            }
            AlarmState::Acked | AlarmState::Normal => {
                return Err(ControlError::AlreadyAcknowledged(id))
            }
        }
        Ok(())
    }

    /// Shelve an alarm for `duration_ms`: it keeps being evaluated and recorded, but
    /// is not annunciated. Further episodes of the same point and kind within the
    /// duration start shelved too. Power-cut alarms cannot be shelved.
    pub fn shelve(
        &mut self,
        id: AlarmId,
        by: &str,
        reason: &str,
        duration_ms: u64,
        now: Timestamp,
        out: &mut Vec<Event>,
    ) -> Result<(), ControlError> {
        if duration_ms == 0 {
            return Err(ControlError::InvalidDuration);
        }
        let (idx, kind) = *self
            .alarm_index
            .get(&id)
            .ok_or(ControlError::UnknownAlarm(id))?;
        let a = self.points[idx as usize].slots[kind.slot()]
            .as_deref_mut()
            .ok_or(ControlError::UnknownAlarm(id))?;
        if a.power_cut {
            return Err(ControlError::PowerCutNotShelvable(id));
        }
        let shelve = Shelve {
            by: by.to_owned(),
            reason: reason.to_owned(),
            at: now,
            until: now.plus_ms(duration_ms),
        };
        a.shelved = Some(shelve.clone());
        a.changed_at = now;
        out.push(Event::Alarm(AlarmEvent {
            transition: Transition::Shelved,
            ts: now,
            alarm: a.clone(),
        }));
        self.shelves.insert((idx, kind), shelve);
        Ok(())
    }

    /// End a shelve by hand.
    pub fn unshelve(
        &mut self,
        id: AlarmId,
        now: Timestamp,
        out: &mut Vec<Event>,
    ) -> Result<(), ControlError> {
        let (idx, kind) = *self
            .alarm_index
            .get(&id)
            .ok_or(ControlError::UnknownAlarm(id))?;
        let a = self.points[idx as usize].slots[kind.slot()]
            .as_deref_mut()
            .ok_or(ControlError::UnknownAlarm(id))?;
        if a.shelved.take().is_none() {
            return Err(ControlError::NotShelved(id));
        }
        self.shelves.remove(&(idx, kind));
        a.changed_at = now;
        out.push(Event::Alarm(AlarmEvent {
            transition: Transition::Unshelved,
            ts: now,
            alarm: a.clone(),
        }));
        Ok(())
    }

    /// Take a point out of service (its open alarms end with `removed_from_service` and
    /// no new ones are raised) or put it back (the next reading is evaluated afresh).
    pub fn set_out_of_service(
        &mut self,
        point: PointId,
        out_of_service: bool,
        now: Timestamp,
        out: &mut Vec<Event>,
    ) -> Result<(), ControlError> {
        let idx = point.0 as usize;
        let p = self
            .points
            .get_mut(idx)
            .ok_or(ControlError::UnknownPoint(point.0))?;
        if p.out_of_service == out_of_service {
            return Ok(());
        }
        p.out_of_service = out_of_service;
        self.reset_point(idx);
        if out_of_service {
            for kind in AlarmKind::ALL {
                if let Some(mut a) = self.points[idx].slots[kind.slot()].take() {
                    a.state = AlarmState::Normal;
                    a.changed_at = now;
                    self.alarm_index.remove(&a.id);
                    out.push(Event::Alarm(AlarmEvent {
                        transition: Transition::RemovedFromService,
                        ts: now,
                        alarm: *a,
                    }));
                }
            }
            self.recompute_risk(idx, now, out);
        }
        Ok(())
    }

    /// Put a point into calibration / maintenance mode or take it out. In
    /// maintenance its readings are kept but flagged `maintenance`, and its alarms
    /// are held as they are. Leaving maintenance evaluates the next reading afresh.
    pub fn set_maintenance(
        &mut self,
        point: PointId,
        maintenance: bool,
    ) -> Result<(), ControlError> {
        let idx = point.0 as usize;
        let p = self
            .points
            .get_mut(idx)
            .ok_or(ControlError::UnknownPoint(point.0))?;
        if p.maintenance != maintenance {
            p.maintenance = maintenance;
            self.hold(idx);
            if let Some(r) = self.points[idx].rate.as_deref_mut() {
                r.reset();
            }
        }
        Ok(())
    }

    /// Open alarm episodes (active, or returned but not yet acknowledged).
    pub fn alarms(&self) -> impl Iterator<Item = &Alarm> {
        self.points
            .iter()
            .flat_map(|p| p.slots.iter().filter_map(|s| s.as_deref()))
    }

    /// One open alarm by id.
    pub fn alarm(&self, id: AlarmId) -> Option<&Alarm> {
        let (idx, kind) = self.alarm_index.get(&id)?;
        self.points[*idx as usize].slots[kind.slot()].as_deref()
    }

    /// The live state of a point.
    pub fn point_status(&self, point: PointId) -> Option<PointStatus> {
        let p = self.points.get(point.0 as usize)?;
        Some(PointStatus {
            point,
            last: p.last_quality.map(|quality| Reading {
                point,
                ts: Timestamp(p.last_ts),
                value: p.last_value,
                quality: if p.stale { Quality::Stale } else { quality },
            }),
            grade: p.active_grade,
            maintenance: p.maintenance,
            out_of_service: p.out_of_service,
            stale: p.stale,
        })
    }

    /// The live risk colour of a hazard source.
    pub fn risk(&self, source: HazardSourceId) -> Option<Colour> {
        self.risk.get(source.0 as usize).copied()
    }

    /// Alarm-rate figures as of `now`.
    pub fn alarm_rates(&mut self, now: Timestamp) -> AlarmRates {
        let rs = self.spec.alarm_rate.clone();
        let mut chattering = Vec::new();
        for (i, p) in self.points.iter_mut().enumerate() {
            if p.chatter
                .is_chattering(now, rs.chatter_count, rs.chatter_window_ms)
            {
                chattering.push(PointId(i as u32));
            }
        }
        AlarmRates {
            per_10min: self.alarm_rate.per_10min(),
            flood: self.alarm_rate.in_flood(),
            floods_started: self.alarm_rate.floods_started(),
            chattering,
        }
    }

    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// Put back alarm episodes that were open when the gateway stopped (read from the
    /// durable log at start), so a restart neither re-raises them under new ids nor
    /// forgets who acknowledged them. The next reading of each point continues the
    /// episode: a value still in the same grade changes nothing, a value back in its
    /// band returns it to normal, a new grade escalates or de-escalates it.
    ///
    /// Alarms for points the spec does not have (the config changed) are handed back,
    /// as are closed ones and second alarms for an occupied slot.
    pub fn restore(
        &mut self,
        alarms: Vec<Alarm>,
        now: Timestamp,
        out: &mut Vec<Event>,
    ) -> Vec<Alarm> {
        let mut refused = Vec::new();
        let mut touched = Vec::new();
        for a in alarms {
            let idx = a.point.0 as usize;
            let valid = match self.points.get(idx) {
                None => false,
                Some(p) => {
                    a.state != AlarmState::Normal
                        && p.slots[a.kind.slot()].is_none()
                        && a.grade.is_none_or(|g| (g as usize) < p.grades_len)
                }
            };
            if !valid {
                refused.push(a);
                continue;
            }
            let p = &mut self.points[idx];
            if a.is_active() {
                match a.kind {
                    AlarmKind::Value => {
                        if let Some(g) = a.grade {
                            p.active_grade = Some(g);
                            let s = &mut self.grade_state[p.grades_start + g as usize];
                            s.raw = true;
                            s.on = true;
                        }
                    }
                    AlarmKind::Comm => p.stale = true,
                    AlarmKind::Rate | AlarmKind::SensorFault => {}
                }
            }
            if let Some(sh) = a.shelved.as_ref().filter(|s| s.until > now) {
                self.shelves.insert((idx as u32, a.kind), sh.clone());
            }
            self.next_alarm_id = self.next_alarm_id.max(a.id.0 + 1);
            self.alarm_index.insert(a.id, (idx as u32, a.kind));
            let slot = a.kind.slot();
            p.slots[slot] = Some(Box::new(a));
            touched.push(idx);
        }
        for idx in touched {
            self.recompute_risk(idx, now, out);
        }
        refused
    }

    /// The id the next new alarm episode will get.
    pub fn next_alarm_id(&self) -> AlarmId {
        AlarmId(self.next_alarm_id)
    }

    // ---- internals ----

    /// Bad data: keep every grade as it is and cancel pending delays, so nothing is
    /// raised or cleared on a value nobody can trust.
    fn hold(&mut self, idx: usize) {
        let p = &mut self.points[idx];
        if p.pending == 0 {
            return;
        }
        p.pending = 0;
        let (gs, gl) = (p.grades_start, p.grades_len);
        for s in &mut self.grade_state[gs..gs + gl] {
            s.pending_since = NO_PENDING;
        }
    }

    /// Forget grade conditions (out of service): the next reading starts afresh.
    fn reset_point(&mut self, idx: usize) {
        let p = &mut self.points[idx];
        p.pending = 0;
        p.active_grade = None;
        let (gs, gl) = (p.grades_start, p.grades_len);
        for s in &mut self.grade_state[gs..gs + gl] {
            *s = GradeState {
                raw: false,
                on: false,
                pending_since: NO_PENDING,
            };
        }
        if let Some(r) = p.rate.as_deref_mut() {
            r.reset();
        }
    }

    /// The hot path: hysteresis and delays for every grade of one point.
    #[inline]
    fn evaluate_grades(&mut self, idx: usize, ts: i64, value: f64, out: &mut Vec<Event>) {
        let p = &mut self.points[idx];
        let (gs, gl) = (p.grades_start, p.grades_len);
        let rts = &self.grade_rt[gs..gs + gl];
        let states = &mut self.grade_state[gs..gs + gl];
        let mut pending = 0u16;
        let mut top: Option<(u16, Colour)> = None;
        for (i, (g, s)) in rts.iter().zip(states.iter_mut()).enumerate() {
            let raw = if g.high {
                value >= g.trigger || (s.raw && value >= g.restore)
            } else {
                value <= g.trigger || (s.raw && value <= g.restore)
            };
            s.raw = raw;
            if raw == s.on {
                s.pending_since = NO_PENDING;
            } else {
                let delay = if raw { g.on_delay_ms } else { g.off_delay_ms };
                if delay == 0 {
                    s.on = raw;
                    s.pending_since = NO_PENDING;
                } else {
                    if s.pending_since == NO_PENDING {
                        s.pending_since = ts;
                    }
                    if ts.saturating_sub(s.pending_since) >= delay {
                        s.on = raw;
                        s.pending_since = NO_PENDING;
                    } else {
                        pending += 1;
                    }
                }
            }
            if s.on {
                // The most severe active grade: highest colour, then latest in the list.
                top = match top {
                    Some((_, c)) if c > g.colour => top,
                    _ => Some((i as u16, g.colour)),
                };
            }
        }
        p.pending = pending;
        let top = top.map(|(i, _)| i);
        let changed = p.active_grade != top;
        let has_open = p.slots[AlarmKind::Value.slot()].is_some();
        if !changed {
            if let (Some(_), true) = (top, has_open) {
                // Same grade: only the value and the peak move. No event.
                if let Some(a) = p.slots[AlarmKind::Value.slot()].as_deref_mut() {
                    let high = self.spec.points[idx].grades[top.unwrap_or(0) as usize].direction
                        == Direction::High;
                    track_peak(a, value, Timestamp(ts), high);
                }
            }
            return;
        }
        p.active_grade = top;
        let cond = top.map(|t| {
            let g = &self.spec.points[idx].grades[t as usize];
            Cond {
                grade: Some(t),
                severity: (g.colour, g.power_cut, t),
                colour: g.colour,
                power_cut: g.power_cut,
                high: g.direction == Direction::High,
            }
        });
        self.step_slot(idx, AlarmKind::Value, cond, value, Timestamp(ts), out);
        self.recompute_risk(idx, Timestamp(ts), out);
    }

    fn evaluate_rate(&mut self, idx: usize, ts: Timestamp, value: f64, out: &mut Vec<Event>) {
        let Some(spec) = self.spec.points[idx].rate.as_ref() else {
            return;
        };
        let (window, rise, fall, colour) = (
            spec.window_ms,
            spec.rise_per_h,
            spec.fall_per_h,
            spec.colour,
        );
        let Some(r) = self.points[idx].rate.as_deref_mut() else {
            return;
        };
        let Some(rate) = r.push(ts, value, window) else {
            return;
        };
        let rising = rise.is_some_and(|lim| rate >= lim);
        let falling = fall.is_some_and(|lim| -rate >= lim);
        let cond = (rising || falling).then_some(Cond {
            grade: None,
            severity: (colour, false, 0),
            colour,
            power_cut: false,
            high: rising,
        });
        self.step_slot(idx, AlarmKind::Rate, cond, rate, ts, out);
    }

    /// Step one alarm slot of a point given its condition now.
    fn step_slot(
        &mut self,
        idx: usize,
        kind: AlarmKind,
        cond: Option<Cond>,
        value: f64,
        ts: Timestamp,
        out: &mut Vec<Event>,
    ) {
        let grade_name = |spec: &EngineSpec, c: &Cond| match c.grade {
            Some(g) => spec.points[idx].grades[g as usize].name.clone(),
            None => kind.as_str().to_owned(),
        };
        let p = &mut self.points[idx];
        let slot = &mut p.slots[kind.slot()];
        match (slot.as_deref_mut(), cond) {
            (None, None) => {}
            (None, Some(c)) => {
                let id = AlarmId(self.next_alarm_id);
                self.next_alarm_id += 1;
                let mut shelved = self
                    .shelves
                    .get(&(idx as u32, kind))
                    .filter(|s| s.until > ts)
                    .cloned();
                if c.power_cut && shelved.is_some() {
                    self.shelves.remove(&(idx as u32, kind));
                    shelved = None;
                }
                let a = Alarm {
                    id,
                    point: PointId(idx as u32),
                    kind,
                    state: AlarmState::Unacked,
                    grade: c.grade,
                    grade_name: grade_name(&self.spec, &c),
                    colour: c.colour,
                    power_cut: c.power_cut,
                    raised_at: ts,
                    changed_at: ts,
                    value,
                    peak: value,
                    peak_at: ts,
                    returned_at: None,
                    ack: None,
                    shelved,
                };
                out.push(Event::Alarm(AlarmEvent {
                    transition: Transition::Raised,
                    ts,
                    alarm: a.clone(),
                }));
                *slot = Some(Box::new(a));
                self.alarm_index.insert(id, (idx as u32, kind));
                self.counters.raised += 1;
                let rs = &self.spec.alarm_rate;
                p.chatter
                    .on_raise(ts, rs.chatter_count, rs.chatter_window_ms);
                if let Some(change) =
                    self.alarm_rate
                        .on_raise(ts, rs.flood_start_per_10min, rs.flood_end_per_10min)
                {
                    out.push(Event::Flood {
                        change,
                        per_10min: self.alarm_rate.per_10min(),
                        ts,
                    });
                }
            }
            (Some(a), Some(c)) => {
                let before = a.grade.map(|g| {
                    let gs = &self.spec.points[idx].grades[g as usize];
                    (gs.colour, gs.power_cut, g)
                });
                let reactivated = a.state == AlarmState::RtnUnacked;
                if reactivated {
                    a.state = AlarmState::Unacked;
                    a.returned_at = None;
                    a.ack = None;
                }
                let transition = if reactivated {
                    // A new excursion inside the same episode starts a fresh peak.
                    a.peak = value;
                    a.peak_at = ts;
                    Some(Transition::Reactivated)
                } else if c.grade != a.grade {
                    if before.is_none_or(|b| c.severity > b) {
                        if a.state == AlarmState::Acked {
                            a.state = AlarmState::Unacked;
                            a.ack = None;
                        }
                        Some(Transition::Escalated)
                    } else {
                        Some(Transition::DeEscalated)
                    }
                } else {
                    None
                };
                track_peak(a, value, ts, c.high);
                a.value = value;
                if let Some(t) = transition {
                    a.grade = c.grade;
                    a.grade_name = grade_name(&self.spec, &c);
                    a.colour = c.colour;
                    a.power_cut = c.power_cut;
                    a.changed_at = ts;
                    out.push(Event::Alarm(AlarmEvent {
                        transition: t,
                        ts,
                        alarm: a.clone(),
                    }));
                    if c.power_cut && a.shelved.take().is_some() {
                        self.shelves.remove(&(idx as u32, kind));
                        out.push(Event::Alarm(AlarmEvent {
                            transition: Transition::Unshelved,
                            ts,
                            alarm: a.clone(),
                        }));
                    }
                }
            }
            (Some(a), None) => match a.state {
                AlarmState::Unacked => {
                    a.state = AlarmState::RtnUnacked;
                    a.returned_at = Some(ts);
                    a.value = value;
                    a.changed_at = ts;
                    out.push(Event::Alarm(AlarmEvent {
                        transition: Transition::ReturnedToNormal,
                        ts,
                        alarm: a.clone(),
                    }));
                }
                AlarmState::Acked => {
                    a.state = AlarmState::Normal;
                    a.returned_at = Some(ts);
                    a.value = value;
                    a.changed_at = ts;
                    let id = a.id;
                    out.push(Event::Alarm(AlarmEvent {
                        transition: Transition::Cleared,
                        ts,
                        alarm: a.clone(),
                    }));
                    *slot = None;
                    self.alarm_index.remove(&id);
                }
                AlarmState::RtnUnacked | AlarmState::Normal => {}
            },
        }
    }

    /// Recompute the risk colour of the point's hazard source after its value alarm
    /// changed.
    fn recompute_risk(&mut self, idx: usize, ts: Timestamp, out: &mut Vec<Event>) {
        let Some(h) = self.points[idx].hazard else {
            return;
        };
        let h = h as usize;
        let mut colour = Colour::Blue;
        let rules = &self.spec.hazard_sources[h].rules;
        let mut counts = [0u32; 4];
        for &pi in &self.source_points[h] {
            if let Some(a) = self.points[pi as usize].slots[AlarmKind::Value.slot()].as_deref() {
                if a.is_active() {
                    colour = colour.max(a.colour);
                    counts[a.colour as usize] += 1;
                }
            }
        }
        for rule in rules {
            let n: u32 = counts[rule.min_colour as usize..].iter().sum();
            if n >= rule.min_points {
                colour = colour.max(rule.colour);
            }
        }
        let previous = self.risk[h];
        if previous != colour {
            self.risk[h] = colour;
            out.push(Event::Risk(RiskChange {
                source: HazardSourceId(h as u32),
                previous,
                colour,
                ts,
            }));
        }
    }
}

fn track_peak(a: &mut Alarm, value: f64, ts: Timestamp, high: bool) {
    let worse = if high { value > a.peak } else { value < a.peak };
    if worse || a.peak.is_nan() {
        a.peak = value;
        a.peak_at = ts;
    }
}

fn ms(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}
