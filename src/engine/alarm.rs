//! The life of one alarm, after ISA-18.2 / IEC 62682.
//!
//! ```text
//!            condition on                 acknowledge
//!   Normal ───────────────► Unacked ─────────────────► Acked
//!     ▲                       │  ▲                        │
//!     │        condition off  │  │ condition on           │ condition off
//!     │                       ▼  │ (same episode)         ▼
//!     └──── acknowledge ── RtnUnacked               Normal (cleared)
//! ```
//!
//! An *episode* lasts from the first raise until the alarm is both inactive and
//! acknowledged; its [`AlarmId`] is stable for all of it. Within an episode a value
//! alarm may escalate and de-escalate between grades; an escalation needs a fresh
//! acknowledgement. Shelving and out-of-service are *suppressions*, not states: the
//! state machine keeps running and every transition is still recorded, so nothing is
//! lost; the dashboard just does not annunciate a shelved alarm. A power-cut alarm
//! cannot be shelved, and a shelved alarm that escalates to a power-cut grade is
//! unshelved at once.

use crate::model::{AlarmId, Colour, PointId, Timestamp};
use serde::{Deserialize, Serialize};

/// Which condition of a point an alarm is about. Each point has one slot per kind, so
/// at most one episode of each kind is open per point at any time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlarmKind {
    /// The value is beyond a threshold grade.
    Value,
    /// The value changes faster than the point's rate-of-change rule allows.
    Rate,
    /// The sensor reports nonsense: out of its range, undecodable, or an exception.
    SensorFault,
    /// No reading arrived within the stale window.
    Comm,
}

impl AlarmKind {
    pub const ALL: [AlarmKind; 4] = [
        AlarmKind::Value,
        AlarmKind::Rate,
        AlarmKind::SensorFault,
        AlarmKind::Comm,
    ];

    pub(crate) fn slot(self) -> usize {
        self as usize
    }

    pub fn as_str(self) -> &'static str {
        match self {
            AlarmKind::Value => "value",
            AlarmKind::Rate => "rate",
            AlarmKind::SensorFault => "sensor_fault",
            AlarmKind::Comm => "comm",
        }
    }
}

/// ISA-18.2 alarm state. `Normal` means no open episode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlarmState {
    Normal,
    /// Active, not yet acknowledged (blinks and sounds on the board).
    Unacked,
    /// Active and acknowledged.
    Acked,
    /// Returned to normal before anyone acknowledged it.
    RtnUnacked,
}

impl AlarmState {
    pub fn as_str(self) -> &'static str {
        match self {
            AlarmState::Normal => "normal",
            AlarmState::Unacked => "unacked",
            AlarmState::Acked => "acked",
            AlarmState::RtnUnacked => "rtn_unacked",
        }
    }
}

/// What happened to an alarm. Every one of these is an event the durable log keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Transition {
    /// A new episode started.
    Raised,
    /// The condition came back during a returned-unacknowledged episode.
    Reactivated,
    /// Moved to a more severe grade within the episode.
    Escalated,
    /// Moved to a less severe grade within the episode.
    DeEscalated,
    /// Someone acknowledged it.
    Acknowledged,
    /// The condition went away before acknowledgement.
    ReturnedToNormal,
    /// The episode ended (inactive and acknowledged).
    Cleared,
    /// Suppressed for a while by an operator.
    Shelved,
    /// Shelving ended (expiry, by hand, or escalation to a power-cut grade).
    Unshelved,
    /// The point was taken out of service: its open episode ended.
    RemovedFromService,
}

impl Transition {
    pub fn as_str(self) -> &'static str {
        match self {
            Transition::Raised => "raised",
            Transition::Reactivated => "reactivated",
            Transition::Escalated => "escalated",
            Transition::DeEscalated => "de_escalated",
            Transition::Acknowledged => "acknowledged",
            Transition::ReturnedToNormal => "returned_to_normal",
            Transition::Cleared => "cleared",
            Transition::Shelved => "shelved",
            Transition::Unshelved => "unshelved",
            Transition::RemovedFromService => "removed_from_service",
        }
    }
}

/// Who acknowledged an alarm, when, and what they said.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ack {
    pub by: String,
    pub comment: String,
    pub at: Timestamp,
}

/// An active shelve: the alarm is not annunciated until `until`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Shelve {
    pub by: String,
    pub reason: String,
    pub at: Timestamp,
    pub until: Timestamp,
}

/// One alarm episode as everyone outside the engine sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alarm {
    pub id: AlarmId,
    pub point: PointId,
    pub kind: AlarmKind,
    pub state: AlarmState,
    /// For value alarms: index of the active grade in the point's grade list (the
    /// last active one once the alarm has returned to normal).
    pub grade: Option<u16>,
    /// Name of that grade (e.g. `断电`), or the kind for non-value alarms.
    pub grade_name: String,
    pub colour: Colour,
    /// The active grade cuts power.
    pub power_cut: bool,
    pub raised_at: Timestamp,
    /// Time of the last transition.
    pub changed_at: Timestamp,
    /// Last value seen in the episode.
    pub value: f64,
    /// Most severe value of the episode (highest for high grades, lowest for low ones).
    pub peak: f64,
    pub peak_at: Timestamp,
    pub returned_at: Option<Timestamp>,
    pub ack: Option<Ack>,
    pub shelved: Option<Shelve>,
}

impl Alarm {
    /// Active means the condition is present now.
    pub fn is_active(&self) -> bool {
        matches!(self.state, AlarmState::Unacked | AlarmState::Acked)
    }

    /// Whether the board should blink and sound for it.
    pub fn needs_attention(&self) -> bool {
        matches!(self.state, AlarmState::Unacked | AlarmState::RtnUnacked) && self.shelved.is_none()
    }
}

/// One recorded transition with the alarm as it stands after it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlarmEvent {
    pub transition: Transition,
    pub ts: Timestamp,
    pub alarm: Alarm,
}
