//! Safety actions: cut the power of an area when methane reaches the cut level, check
//! the feedback (馈电) sensor that the cut happened, lock out on sensor faults
//! (故障闭锁), and restore — automatically or only after an operator's release.
//!
//! The [`Controller`] is pure like the engine: it is told about engine events,
//! readings of feedback points, write results and the time, and answers with
//! [`Output`]s — writes to send to relays, and readings of each action's two points.
//! IO (the Modbus writes) lives in the gateway ([`crate::gateway`]); the configuration
//! is compiled by [`build`].
//!
//! Every action has two points the engine treats like any other:
//! - `cut:<id>` reads 1 while the action wants the power cut (its grade `断电` raises
//!   an alarm, so every cut is an alarm episode in the durable log, on the board and
//!   upstream), 0 while it is restored;
//! - `action:<id>` reads 1 while every relay does what it was told and 0 on a feedback
//!   fault or a write that cannot be delivered (grade `馈电异常`, red).
//!
//! Invariants:
//! - The cut path has no delay and no deadband: the event that puts a trigger point at
//!   its cut grade produces the cut writes in the same call (the standard's limit
//!   from reading to cut is 2 s).
//! - An action wants the power cut while any trigger point is at a cut grade, or (with
//!   fault lockout) while any trigger point has a sensor fault, is stale, or its device
//!   or serial link is offline, or while an operator's manual cut stands. With manual
//!   restore it stays cut after the cause is gone until an operator releases it.
//! - Every relay has an expected feed: cut → feed 0, restored → feed 1. A feed that
//!   does not reach the expected state within the relay's feedback timeout, or that
//!   leaves it with no command, is a feedback fault (馈电异常). It clears once the feed
//!   is back in the expected state.
//! - A failed write is retried once at once and then on every tick; if the relay is
//!   still not written [`CUT_BUDGET_MS`] after the command, that is a fault too. A
//!   write result that belongs to an older command (the action changed its mind while
//!   the write was in flight) is ignored. Nothing is dropped silently.

pub mod build;

use crate::engine::{Alarm, AlarmKind, Event};
use crate::model::{PointId, Quality, Reading, Timestamp};
use crate::sources::modbus::poller::Write;
use std::collections::HashMap;

/// The standard's budget from a cut-level reading to the cut being executed.
pub const CUT_BUDGET_MS: i64 = 2_000;

/// How an action comes back after its cause is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Restore {
    /// Restore as soon as no trigger wants the cut.
    Auto,
    /// Stay cut until an operator releases the action.
    Manual,
}

/// Where a relay is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "table", content = "address")]
pub enum RelayTarget {
    /// A coil, function code 5; values 0/1.
    Coil(u16),
    /// A holding register, function code 6.
    Holding(u16),
}

/// One controlled switch: the coil or register written to cut, and the feed-status
/// point that shows whether power is on.
#[derive(Debug, Clone, PartialEq)]
pub struct RelaySpec {
    /// Modbus device id of the relay.
    pub device: String,
    pub target: RelayTarget,
    /// The value that cuts the power.
    pub cut_value: u16,
    /// The value that restores it.
    pub restore_value: u16,
    /// Feed-status point: 1 = powered, 0 = cut. `None`: no feedback check.
    pub feedback: Option<PointId>,
    pub feedback_timeout_ms: u64,
}

impl RelaySpec {
    /// The Modbus write that puts this relay in the cut (`true`) or restored state.
    pub fn write(&self, cut: bool) -> Write {
        let value = if cut {
            self.cut_value
        } else {
            self.restore_value
        };
        match self.target {
            RelayTarget::Coil(address) => Write::Coil {
                address,
                value: value != 0,
            },
            RelayTarget::Holding(address) => Write::Register { address, value },
        }
    }
}

/// A point whose grades trigger an action.
#[derive(Debug, Clone, PartialEq)]
pub struct Trigger {
    pub point: PointId,
    /// Indices into the point's grades (engine spec order) that cut.
    pub grades: Vec<u16>,
}

/// One safety action.
#[derive(Debug, Clone, PartialEq)]
pub struct ActionSpec {
    pub id: String,
    pub name: String,
    /// Points whose cut grades trigger the action.
    pub triggers: Vec<Trigger>,
    /// Points whose faults lock the action out (the triggers, and the status points of
    /// their devices and links). Empty: no fault lockout.
    pub lockout: Vec<PointId>,
    pub restore: Restore,
    pub relays: Vec<RelaySpec>,
    /// `action:<id>`: 1 while the relays do what they were told, 0 on a fault.
    pub status_point: PointId,
    /// `cut:<id>`: 1 while the action wants the power cut.
    pub cut_point: PointId,
}

/// What the controller wants done.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Send `write` to `device`; report the result with [`Controller::write_result`],
    /// passing `command` back.
    Write {
        action: usize,
        relay: usize,
        /// Identifies the command this write carries out.
        command: u64,
        device: String,
        write: Write,
        /// `true` for a cut, `false` for a restore.
        cut: bool,
        /// Time of the reading (or request) that caused it, to measure reading → write.
        cause_ts: Timestamp,
    },
    /// A reading of an action's status or cut point, for the engine.
    Status(Reading),
}

/// Why an operator request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ActionError {
    #[error("no safety action `{0}`")]
    Unknown(String),
    #[error("action `{0}` cannot be released while its cause is present: {1}")]
    CausePresent(String, String),
    #[error("action `{0}` is not cut: there is nothing to release")]
    NotCut(String),
}

#[derive(Debug, Clone, Default)]
struct RelayState {
    /// The last command: `Some(true)` cut, `Some(false)` restore.
    commanded: Option<bool>,
    /// Number of the last command (unique within the controller).
    command: u64,
    commanded_at: i64,
    /// The command reached the relay.
    written: bool,
    /// A write of the current command is on its way (no retry until it answers).
    in_flight: bool,
    /// Failed writes of the current command answered by an immediate retry.
    immediate_retries: u32,
    /// Last good feed reading: true = powered.
    feed: Option<bool>,
    /// The feed showed the expected state since the last command.
    confirmed: bool,
    /// The feed is not where it should be (timeout, or it moved on its own).
    feed_fault: bool,
    /// The command could not be written within the budget.
    write_fault: bool,
    last_error: Option<String>,
}

impl RelayState {
    /// The feed this relay should show: powered unless cut.
    fn expected_feed(&self) -> bool {
        !self.commanded.unwrap_or(false)
    }
    fn fault(&self) -> bool {
        self.feed_fault || self.write_fault
    }
}

#[derive(Debug, Clone, Default)]
struct ActionState {
    /// Trigger points now at a cut grade.
    cutting: Vec<PointId>,
    /// Lockout points now faulted.
    faulted: Vec<PointId>,
    manual_cut: bool,
    /// Stays cut until released (manual restore, or a cut carried over a restart).
    latched: bool,
    relays: Vec<RelayState>,
    status_ok: Option<bool>,
    cut_published: Option<bool>,
    /// Time of the last change of `wants_cut`.
    since: Option<Timestamp>,
}

/// One action as the API shows it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ActionView {
    pub id: String,
    pub name: String,
    pub restore: Restore,
    /// The action wants the power cut.
    pub cut: bool,
    /// Since when `cut` has its value (ms since the epoch), if it ever changed.
    pub since: Option<i64>,
    /// Trigger points at a cut grade.
    pub cutting: Vec<String>,
    /// Lockout points faulted (故障闭锁).
    pub faulted: Vec<String>,
    pub manual_cut: bool,
    /// Waits for an operator's release.
    pub latched: bool,
    /// Every relay does what it was told.
    pub ok: bool,
    pub relays: Vec<RelayView>,
}

/// One relay as the API shows it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RelayView {
    pub device: String,
    #[serde(flatten)]
    pub target: RelayTarget,
    /// `cut`, `restore`, or `null` before the first command.
    pub commanded: Option<&'static str>,
    pub written: bool,
    /// The feed: true = powered; `null` without feedback or before its first reading.
    pub feed: Option<bool>,
    pub feedback_fault: bool,
    pub write_fault: bool,
    pub last_error: Option<String>,
}

/// The safety-action state machine. See the module docs.
pub struct Controller {
    specs: Vec<ActionSpec>,
    state: Vec<ActionState>,
    /// Feedback point → (action, relay).
    feedback: HashMap<PointId, Vec<(usize, usize)>>,
    /// Points that matter to `on_event` (triggers, lockout points).
    watched: HashMap<PointId, Vec<usize>>,
    next_command: u64,
    /// Point ids by index, for messages and views (`#<index>` when unknown).
    names: Vec<String>,
    /// Something a view shows changed since [`Controller::take_changed`].
    changed: bool,
}

impl Controller {
    pub fn new(specs: Vec<ActionSpec>) -> Controller {
        let state = specs
            .iter()
            .map(|s| ActionState {
                relays: vec![RelayState::default(); s.relays.len()],
                ..ActionState::default()
            })
            .collect();
        let mut feedback: HashMap<PointId, Vec<(usize, usize)>> = HashMap::new();
        let mut watched: HashMap<PointId, Vec<usize>> = HashMap::new();
        for (i, s) in specs.iter().enumerate() {
            for (k, r) in s.relays.iter().enumerate() {
                if let Some(p) = r.feedback {
                    feedback.entry(p).or_default().push((i, k));
                }
            }
            let points = s
                .triggers
                .iter()
                .map(|t| t.point)
                .chain(s.lockout.iter().copied());
            for p in points {
                let list = watched.entry(p).or_default();
                if !list.contains(&i) {
                    list.push(i);
                }
            }
        }
        Controller {
            specs,
            state,
            feedback,
            watched,
            next_command: 1,
            names: Vec::new(),
            changed: true,
        }
    }

    /// Whether anything a [`Controller::view`] shows changed since the last call.
    pub fn take_changed(&mut self) -> bool {
        std::mem::replace(&mut self.changed, false)
    }

    /// Name points by these ids (index = `PointId`) in messages and views.
    pub fn with_names(mut self, names: Vec<String>) -> Controller {
        self.names = names;
        self
    }

    fn name(&self, p: PointId) -> String {
        self.names
            .get(p.0 as usize)
            .cloned()
            .unwrap_or_else(|| format!("#{}", p.0))
    }

    pub fn specs(&self) -> &[ActionSpec] {
        &self.specs
    }

    /// Whether action `i` wants the power cut now.
    pub fn wants_cut(&self, i: usize) -> bool {
        let s = &self.state[i];
        !s.cutting.is_empty() || !s.faulted.is_empty() || s.manual_cut || s.latched
    }

    /// Start: take over the open alarms the engine restored from the store, so a cut
    /// that stood when the gateway stopped is asserted again, and publish every
    /// action's points. An action whose `cut:<id>` alarm was active stays cut until
    /// released when it has manual restore or its cause is gone (power never comes
    /// back by itself across a restart).
    pub fn start<'a>(
        &mut self,
        open: impl IntoIterator<Item = &'a Alarm>,
        now: Timestamp,
        out: &mut Vec<Output>,
    ) {
        let open: Vec<&Alarm> = open.into_iter().collect();
        for a in &open {
            self.track(a);
        }
        for i in 0..self.specs.len() {
            let was_cut = open
                .iter()
                .any(|a| a.point == self.specs[i].cut_point && a.is_active());
            let st = &mut self.state[i];
            if was_cut
                && (self.specs[i].restore == Restore::Manual
                    || (st.cutting.is_empty() && st.faulted.is_empty()))
            {
                st.latched = true;
            }
            self.apply(i, now, now, out);
            self.publish_cut(i, now, out);
        }
    }

    /// Feed engine events: cut grades entered and left, faults of lockout points.
    pub fn on_event(&mut self, event: &Event, _now: Timestamp, out: &mut Vec<Output>) {
        let Event::Alarm(e) = event else {
            return;
        };
        for i in self.track(&e.alarm) {
            self.apply(i, e.ts, e.ts, out);
        }
    }

    /// Update trigger and lockout membership from one alarm; the actions that changed.
    fn track(&mut self, a: &Alarm) -> Vec<usize> {
        let Some(actions) = self.watched.get(&a.point) else {
            return Vec::new();
        };
        let mut changed: Vec<usize> = Vec::new();
        for &i in actions {
            let spec = &self.specs[i];
            let st = &mut self.state[i];
            let mut touched = false;
            let trigger = spec.triggers.iter().find(|t| t.point == a.point);
            if let (Some(t), AlarmKind::Value) = (trigger, a.kind) {
                let cut = a.is_active() && a.grade.is_some_and(|g| t.grades.contains(&g));
                touched |= set_member(&mut st.cutting, a.point, cut);
                if cut && spec.restore == Restore::Manual {
                    st.latched = true;
                }
            }
            if spec.lockout.contains(&a.point) {
                // Faults of a trigger are its sensor-fault and communication alarms; a
                // device or link status point's value alarm means it is offline.
                let lockout_kind = match a.kind {
                    AlarmKind::SensorFault | AlarmKind::Comm => true,
                    AlarmKind::Value => trigger.is_none(),
                    AlarmKind::Rate => false,
                };
                if lockout_kind {
                    let fault = a.is_active();
                    touched |= set_member(&mut st.faulted, a.point, fault);
                    if fault && spec.restore == Restore::Manual {
                        st.latched = true;
                    }
                }
            }
            if touched {
                changed.push(i);
            }
        }
        self.changed |= !changed.is_empty();
        changed
    }

    /// Feed readings: the feedback (馈电) points.
    pub fn on_reading(&mut self, r: &Reading, now: Timestamp, out: &mut Vec<Output>) {
        if r.quality != Quality::Good {
            return;
        }
        let Some(relays) = self.feedback.get(&r.point) else {
            return;
        };
        let feed = r.value >= 0.5;
        let mut touched: Vec<usize> = Vec::new();
        for &(i, k) in relays {
            let rs = &mut self.state[i].relays[k];
            let previous = rs.feed.replace(feed);
            let fault_before = rs.feed_fault;
            if feed == rs.expected_feed() {
                rs.confirmed = true;
                rs.feed_fault = false;
            } else if rs.confirmed || (rs.commanded.is_none() && previous == Some(true)) {
                // The feed left the expected state with no command.
                rs.feed_fault = true;
            }
            self.changed |= previous != Some(feed) || fault_before != rs.feed_fault;
            if !touched.contains(&i) {
                touched.push(i);
            }
        }
        for i in touched {
            self.check(i, now, out);
        }
    }

    /// Let time pass: feedback timeouts, write retries.
    pub fn tick(&mut self, now: Timestamp, out: &mut Vec<Output>) {
        for i in 0..self.specs.len() {
            for k in 0..self.specs[i].relays.len() {
                let rs = &self.state[i].relays[k];
                if let Some(cut) = rs.commanded {
                    if !rs.written && !rs.in_flight {
                        let cause = Timestamp(rs.commanded_at);
                        self.emit(i, k, cut, cause, out);
                    }
                }
            }
            self.check(i, now, out);
        }
    }

    /// The result of a write the controller asked for: `Ok` or the error text.
    pub fn write_result(
        &mut self,
        action: usize,
        relay: usize,
        command: u64,
        result: Result<(), String>,
        now: Timestamp,
        out: &mut Vec<Output>,
    ) {
        let Some(rs) = self
            .state
            .get_mut(action)
            .and_then(|s| s.relays.get_mut(relay))
        else {
            return;
        };
        if rs.command != command || rs.written {
            // An older command's write, or a retry of one already delivered.
            return;
        }
        rs.in_flight = false;
        self.changed = true;
        match result {
            Ok(()) => {
                rs.written = true;
                rs.write_fault = false;
                rs.last_error = None;
            }
            Err(e) => {
                rs.last_error = Some(e);
                // Retry once at once while inside the cut budget; `tick` keeps retrying
                // after that, so a dead link cannot spin the controller.
                if now.0 - rs.commanded_at < CUT_BUDGET_MS && rs.immediate_retries == 0 {
                    rs.immediate_retries += 1;
                    if let Some(cut) = rs.commanded {
                        let cause = Timestamp(rs.commanded_at);
                        self.emit(action, relay, cut, cause, out);
                    }
                }
            }
        }
        self.check(action, now, out);
    }

    /// An operator cuts the power of an action by hand.
    pub fn manual_cut(
        &mut self,
        id: &str,
        now: Timestamp,
        out: &mut Vec<Output>,
    ) -> Result<(), ActionError> {
        let i = self.index(id)?;
        self.changed = true;
        self.state[i].manual_cut = true;
        self.apply(i, now, now, out);
        Ok(())
    }

    /// An operator releases an action: ends a manual cut and the latch. Refused while
    /// a trigger or a fault still wants the cut.
    pub fn release(
        &mut self,
        id: &str,
        now: Timestamp,
        out: &mut Vec<Output>,
    ) -> Result<(), ActionError> {
        let i = self.index(id)?;
        let st = &self.state[i];
        if !st.cutting.is_empty() || !st.faulted.is_empty() {
            let names = |ps: &[PointId]| {
                ps.iter()
                    .map(|p| self.name(*p))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let why = if st.cutting.is_empty() {
                format!("fault lockout (points {})", names(&st.faulted))
            } else {
                format!("cut grade (points {})", names(&st.cutting))
            };
            return Err(ActionError::CausePresent(id.to_owned(), why));
        }
        if !self.wants_cut(i) {
            return Err(ActionError::NotCut(id.to_owned()));
        }
        let st = &mut self.state[i];
        st.manual_cut = false;
        st.latched = false;
        self.apply(i, now, now, out);
        Ok(())
    }

    /// The state of every action, for the API.
    pub fn view(&self) -> Vec<ActionView> {
        let point_id = |p: PointId| self.name(p);
        self.specs
            .iter()
            .enumerate()
            .map(|(i, spec)| {
                let st = &self.state[i];
                ActionView {
                    id: spec.id.clone(),
                    name: spec.name.clone(),
                    restore: spec.restore,
                    cut: self.wants_cut(i),
                    since: st.since.map(|t| t.0),
                    cutting: st.cutting.iter().map(|p| point_id(*p)).collect(),
                    faulted: st.faulted.iter().map(|p| point_id(*p)).collect(),
                    manual_cut: st.manual_cut,
                    latched: st.latched,
                    ok: st.relays.iter().all(|r| !r.fault()),
                    relays: spec
                        .relays
                        .iter()
                        .zip(&st.relays)
                        .map(|(r, rs)| RelayView {
                            device: r.device.clone(),
                            target: r.target,
                            commanded: rs.commanded.map(|c| if c { "cut" } else { "restore" }),
                            written: rs.written,
                            feed: rs.feed.filter(|_| r.feedback.is_some()),
                            feedback_fault: rs.feed_fault,
                            write_fault: rs.write_fault,
                            last_error: rs.last_error.clone(),
                        })
                        .collect(),
                }
            })
            .collect()
    }

    /// Index of the action called `id`.
    pub fn index(&self, id: &str) -> Result<usize, ActionError> {
        self.specs
            .iter()
            .position(|s| s.id == id)
            .ok_or_else(|| ActionError::Unknown(id.to_owned()))
    }

    /// Ask for a write of relay `k` of action `i`.
    fn emit(&mut self, i: usize, k: usize, cut: bool, cause_ts: Timestamp, out: &mut Vec<Output>) {
        let relay = &self.specs[i].relays[k];
        let rs = &mut self.state[i].relays[k];
        rs.in_flight = true;
        out.push(Output::Write {
            action: i,
            relay: k,
            command: rs.command,
            device: relay.device.clone(),
            write: relay.write(cut),
            cut,
            cause_ts,
        });
    }

    /// Command every relay to the state the action wants, if it differs.
    fn apply(&mut self, i: usize, cause_ts: Timestamp, now: Timestamp, out: &mut Vec<Output>) {
        let cut = self.wants_cut(i);
        for k in 0..self.specs[i].relays.len() {
            let rs = &mut self.state[i].relays[k];
            if rs.commanded == Some(cut) || (rs.commanded.is_none() && !cut) {
                continue;
            }
            self.changed = true;
            rs.commanded = Some(cut);
            rs.command = self.next_command;
            self.next_command += 1;
            rs.commanded_at = now.0;
            rs.written = false;
            rs.write_fault = false;
            rs.immediate_retries = 0;
            rs.confirmed = false;
            self.emit(i, k, cut, cause_ts, out);
        }
        self.publish_cut(i, now, out);
        self.check(i, now, out);
    }

    fn publish_cut(&mut self, i: usize, now: Timestamp, out: &mut Vec<Output>) {
        let cut = self.wants_cut(i);
        let st = &mut self.state[i];
        if st.cut_published == Some(cut) {
            return;
        }
        if st.cut_published.is_some() {
            st.since = Some(now);
        }
        st.cut_published = Some(cut);
        self.changed = true;
        out.push(Output::Status(Reading {
            point: self.specs[i].cut_point,
            ts: now,
            value: if cut { 1.0 } else { 0.0 },
            quality: Quality::Good,
        }));
    }

    /// Recompute faults and publish the status point when it changes.
    fn check(&mut self, i: usize, now: Timestamp, out: &mut Vec<Output>) {
        for k in 0..self.specs[i].relays.len() {
            let relay = &self.specs[i].relays[k];
            let rs = &mut self.state[i].relays[k];
            if rs.commanded.is_none() {
                continue;
            }
            let late = now.0 - rs.commanded_at;
            if !rs.written && late >= CUT_BUDGET_MS {
                rs.write_fault = true;
            }
            if relay.feedback.is_some() && !rs.confirmed && late >= relay.feedback_timeout_ms as i64
            {
                rs.feed_fault = true;
            }
        }
        let ok = self.state[i].relays.iter().all(|r| !r.fault());
        if self.state[i].status_ok != Some(ok) {
            self.changed = true;
            self.state[i].status_ok = Some(ok);
            out.push(Output::Status(Reading {
                point: self.specs[i].status_point,
                ts: now,
                value: if ok { 1.0 } else { 0.0 },
                quality: Quality::Good,
            }));
        }
    }
}

/// Add or remove `p`; whether the set changed.
fn set_member(set: &mut Vec<PointId>, p: PointId, present: bool) -> bool {
    match (set.iter().position(|x| *x == p), present) {
        (None, true) => {
            set.push(p);
            true
        }
        (Some(k), false) => {
            set.swap_remove(k);
            true
        }
        _ => false,
    }
}
