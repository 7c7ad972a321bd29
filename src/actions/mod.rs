//! Safety actions: cut the power of an area when methane reaches the cut level, check
//! the feedback (馈电) sensor that the cut happened, lock out on sensor faults
//! (故障闭锁), and restore — automatically or only after an operator's release.
//!
//! The [`Controller`] is pure like the engine: it is told about engine events,
//! readings of feedback points, write results and the time, and answers with
//! [`Output`]s — writes to send to relays, and readings of each action's status point.
//! IO (the Modbus writes) lives in the gateway.
//!
//! Invariants:
//! - The cut path has no delay and no deadband: the event that puts a trigger point at
//!   a power-cut grade produces the cut writes in the same call (the standard's limit
//!   from reading to cut is 2 s).
//! - An action wants the power cut while any trigger point is at a power-cut grade,
//!   or (with fault lockout) while any trigger point has a sensor fault, is stale, or
//!   its device is offline, or while an operator's manual cut stands. With manual
//!   restore it stays cut after the cause is gone until an operator releases it.
//! - Every relay has an expected feed: cut → feed 0, restored → feed 1. A feed that
//!   does not reach the expected state within the relay's feedback timeout, or that
//!   changes with no command, is a feedback fault (馈电异常): the action's status point
//!   reads 0, which the engine raises as an alarm at the highest grade. It reads 1
//!   again once every relay's feed matches its command.
//! - A failed write is retried once at once and then on every tick; if the relay is still not
//!   written 2 s after the command, that is a fault too. Nothing is dropped silently.

use crate::engine::{AlarmKind, Event};
use crate::model::{PointId, Quality, Reading, Timestamp};

/// The standard's budget from a cut-level reading to the cut being executed.
pub const CUT_BUDGET_MS: i64 = 2_000;

/// How an action comes back after its cause is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restore {
    /// Restore as soon as no trigger wants the cut.
    Auto,
    /// Stay cut until an operator releases the action.
    Manual,
}

/// One controlled switch: a coil written to cut, and the feed-status point that
/// shows whether power is on.
#[derive(Debug, Clone, PartialEq)]
pub struct RelaySpec {
    /// Modbus device id of the relay.
    pub device: String,
    /// Coil address (0-based).
    pub coil: u16,
    /// The coil value that cuts the power.
    pub cut_value: bool,
    /// Feed-status point: 1 = powered, 0 = cut. `None`: no feedback check.
    pub feedback: Option<PointId>,
    pub feedback_timeout_ms: u64,
}

/// One safety action.
#[derive(Debug, Clone, PartialEq)]
pub struct ActionSpec {
    pub id: String,
    /// Points whose power-cut grades trigger the action.
    pub triggers: Vec<PointId>,
    /// Points whose faults lock the action out (the triggers, and the status points of
    /// their devices). Empty: no fault lockout.
    pub lockout: Vec<PointId>,
    pub restore: Restore,
    pub relays: Vec<RelaySpec>,
    /// Reads 1 while the action's relays do what they were told, 0 on a feedback
    /// fault or a write that cannot be delivered.
    pub status_point: PointId,
}

/// What the controller wants done.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Write `value` to `coil` on `device`; report the result with
    /// [`Controller::write_result`].
    Write {
        action: usize,
        relay: usize,
        device: String,
        coil: u16,
        value: bool,
        /// `true` for a cut, `false` for a restore.
        cut: bool,
        /// Time of the reading that caused it (to measure reading → write).
        cause_ts: Timestamp,
    },
    /// A reading of an action's status point, for the engine.
    Status(Reading),
}

/// Why an operator request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ActionError {
    #[error("no safety action `{0}`")]
    Unknown(String),
    #[error("action `{0}` cannot be released while its cause is present")]
    CausePresent(String),
}

#[derive(Debug, Clone, Default)]
struct RelayState {
    /// The last command: `Some(true)` cut, `Some(false)` restore.
    commanded: Option<bool>,
    commanded_at: i64,
    /// The command reached the relay.
    written: bool,
    /// Failed writes of the current command answered by an immediate retry.
    immediate_retries: u32,
    /// Last good feed reading: 1 powered.
    feed: Option<bool>,
    /// The feed showed the commanded state since the command.
    confirmed: bool,
    fault: bool,
}

#[derive(Debug, Clone, Default)]
struct ActionState {
    /// Trigger points now at a power-cut grade.
    cutting: Vec<PointId>,
    /// Lockout points now faulted.
    faulted: Vec<PointId>,
    manual_cut: bool,
    /// Manual restore: cut until released.
    latched: bool,
    relays: Vec<RelayState>,
    status_ok: Option<bool>,
}

/// The safety-action state machine. See the module docs.
pub struct Controller {
    specs: Vec<ActionSpec>,
    state: Vec<ActionState>,
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
        Controller { specs, state }
    }

    pub fn specs(&self) -> &[ActionSpec] {
        &self.specs
    }

    /// Whether action `i` wants the power cut now.
    pub fn wants_cut(&self, i: usize) -> bool {
        let s = &self.state[i];
        !s.cutting.is_empty() || !s.faulted.is_empty() || s.manual_cut || s.latched
    }

    /// Feed engine events: power-cut grades entered and left, faults of lockout points.
    pub fn on_event(&mut self, event: &Event, now: Timestamp, out: &mut Vec<Output>) {
        let Event::Alarm(e) = event else {
            return;
        };
        let a = &e.alarm;
        for i in 0..self.specs.len() {
            let spec = &self.specs[i];
            let st = &mut self.state[i];
            let mut changed = false;
            if spec.triggers.contains(&a.point) && a.kind == AlarmKind::Value {
                let cut = a.is_active() && a.power_cut;
                changed |= set_member(&mut st.cutting, a.point, cut);
                if cut && spec.restore == Restore::Manual {
                    st.latched = true;
                }
            }
            if spec.lockout.contains(&a.point) {
                let fault = a.is_active()
                    && match a.kind {
                        AlarmKind::SensorFault | AlarmKind::Comm => true,
                        // A device status point's value alarm: the device is offline.
                        AlarmKind::Value => !spec.triggers.contains(&a.point),
                        AlarmKind::Rate => false,
                    };
                // Only the kinds that can lock out may also release the lockout.
                if matches!(a.kind, AlarmKind::SensorFault | AlarmKind::Comm)
                    || (a.kind == AlarmKind::Value && !spec.triggers.contains(&a.point))
                {
                    changed |= set_member(&mut st.faulted, a.point, fault);
                    if fault && spec.restore == Restore::Manual {
                        st.latched = true;
                    }
                }
            }
            if changed {
                self.apply(i, e.ts, now, out);
            }
        }
    }

    /// Feed readings: feedback points and, for lockout, bad qualities of triggers.
    pub fn on_reading(&mut self, r: &Reading, now: Timestamp, out: &mut Vec<Output>) {
        for i in 0..self.specs.len() {
            let mut touched = false;
            for (k, relay) in self.specs[i].relays.iter().enumerate() {
                if relay.feedback != Some(r.point) || r.quality != Quality::Good {
                    continue;
                }
                let feed = r.value >= 0.5;
                let rs = &mut self.state[i].relays[k];
                let previous = rs.feed.replace(feed);
                match rs.commanded {
                    Some(cut) if feed != cut => rs.confirmed = true,
                    Some(_) if rs.confirmed && previous != Some(feed) => {
                        // The feed left the commanded state with no command.
                        rs.fault = true;
                    }
                    None if previous.is_some_and(|p| p != feed) => rs.fault = true,
                    _ => {}
                }
                if rs.confirmed && rs.commanded.is_some_and(|cut| feed != cut) {
                    rs.fault = false;
                }
                touched = true;
            }
            if touched {
                self.check(i, now, out);
            }
        }
    }

    /// Let time pass: feedback timeouts, write retries.
    pub fn tick(&mut self, now: Timestamp, out: &mut Vec<Output>) {
        for i in 0..self.specs.len() {
            for k in 0..self.specs[i].relays.len() {
                let rs = &self.state[i].relays[k];
                if let Some(cut) = rs.commanded {
                    if !rs.written {
                        let relay = &self.specs[i].relays[k];
                        out.push(write(i, k, relay, cut, Timestamp(rs.commanded_at)));
                    }
                }
            }
            self.check(i, now, out);
        }
    }

    /// The result of a write the controller asked for.
    pub fn write_result(
        &mut self,
        action: usize,
        relay: usize,
        ok: bool,
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
        rs.written = ok;
        if ok && self.specs[action].relays[relay].feedback.is_none() {
            // No feedback to wait for: a delivered write is all there is to check.
            rs.fault = false;
        }
        if !ok {
            // Retry once at once while inside the cut budget; `tick` keeps retrying
            // after that, so a dead link cannot spin the controller.
            if now.0 - rs.commanded_at < CUT_BUDGET_MS && rs.immediate_retries == 0 {
                rs.immediate_retries += 1;
                if let Some(cut) = rs.commanded {
                    out.push(write(
                        action,
                        relay,
                        &self.specs[action].relays[relay],
                        cut,
                        Timestamp(rs.commanded_at),
                    ));
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
        self.state[i].manual_cut = true;
        self.apply(i, now, now, out);
        Ok(())
    }

    /// An operator releases an action: ends a manual cut and, with manual restore,
    /// the latch. Refused while a trigger or a fault still wants the cut.
    pub fn release(
        &mut self,
        id: &str,
        now: Timestamp,
        out: &mut Vec<Output>,
    ) -> Result<(), ActionError> {
        let i = self.index(id)?;
        let st = &mut self.state[i];
        if !st.cutting.is_empty() || !st.faulted.is_empty() {
            return Err(ActionError::CausePresent(id.to_owned()));
        }
        st.manual_cut = false;
        st.latched = false;
        self.apply(i, now, now, out);
        Ok(())
    }

    fn index(&self, id: &str) -> Result<usize, ActionError> {
        self.specs
            .iter()
            .position(|s| s.id == id)
            .ok_or_else(|| ActionError::Unknown(id.to_owned()))
    }

    /// Command every relay to the state the action wants, if it differs.
    fn apply(&mut self, i: usize, cause_ts: Timestamp, now: Timestamp, out: &mut Vec<Output>) {
        let cut = self.wants_cut(i);
        for k in 0..self.specs[i].relays.len() {
            let rs = &mut self.state[i].relays[k];
            let current = rs.commanded.unwrap_or(false);
            if rs.commanded.is_some() && current == cut {
                continue;
            }
            if rs.commanded.is_none() && !cut {
                continue;
            }
            rs.commanded = Some(cut);
            rs.commanded_at = now.0;
            rs.written = false;
            rs.immediate_retries = 0;
            rs.confirmed = false;
            out.push(write(i, k, &self.specs[i].relays[k], cut, cause_ts));
        }
        self.check(i, now, out);
    }

    /// Recompute faults and publish the status point when it changes.
    fn check(&mut self, i: usize, now: Timestamp, out: &mut Vec<Output>) {
        for k in 0..self.specs[i].relays.len() {
            let relay = &self.specs[i].relays[k];
            let rs = &mut self.state[i].relays[k];
            let Some(_) = rs.commanded else {
                continue;
            };
            let late = now.0 - rs.commanded_at;
            if !rs.written && late >= CUT_BUDGET_MS {
                rs.fault = true;
            }
            if relay.feedback.is_some() && !rs.confirmed && late >= relay.feedback_timeout_ms as i64
            {
                rs.fault = true;
            }
        }
        let ok = self.state[i].relays.iter().all(|r| !r.fault);
        if self.state[i].status_ok != Some(ok) {
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

fn write(action: usize, relay: usize, spec: &RelaySpec, cut: bool, cause_ts: Timestamp) -> Output {
    Output::Write {
        action,
        relay,
        device: spec.device.clone(),
        coil: spec.coil,
        value: if cut { spec.cut_value } else { !spec.cut_value },
        cut,
        cause_ts,
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
