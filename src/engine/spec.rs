//! What the engine is told about each point and hazard source: the compiled,
//! already-validated form of the configuration. The config module builds an
//! [`EngineSpec`]; the engine never sees TOML.
//!
//! Invariants the config validation guarantees before a spec is built (the engine
//! relies on them and does not re-check on the hot path):
//! - within one direction, grades are sorted by severity, least severe first, and
//!   their triggers never go backwards (rising for `High`, falling for `Low`; equal
//!   triggers are allowed, e.g. a return airway that alarms and cuts at 1.0 %);
//! - `restore` is on the normal side of `trigger` (or equal to it);
//! - a power-cut grade has no on-delay, no off-delay and no deadband;
//! - every point's `hazard_source`, if any, indexes into `hazard_sources`.

use crate::model::{Colour, Direction, HazardGrade, HazardSourceId, PointKind};

/// Everything the engine needs to evaluate readings.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EngineSpec {
    /// Points in index order: `PointId(i)` is `points[i]`.
    pub points: Vec<PointSpec>,
    /// Hazard sources in index order: `HazardSourceId(i)` is `hazard_sources[i]`.
    pub hazard_sources: Vec<HazardSourceSpec>,
    /// Alarm-rate (flood and chattering) settings.
    pub alarm_rate: AlarmRateSpec,
}

/// One point as the engine sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct PointSpec {
    /// The configured id (e.g. `CH4-T1-1201`), for events and logs.
    pub id: String,
    pub kind: PointKind,
    /// Sensor measuring range; a value outside it is a sensor fault, not a process value.
    pub range_min: f64,
    pub range_max: f64,
    /// Graded thresholds, high and low, least severe first within each direction.
    pub grades: Vec<GradeSpec>,
    /// Optional rate-of-change rule.
    pub rate: Option<RateSpec>,
    /// The point is stale when no reading arrived for this long (ms); `None` disables
    /// stale detection. Usually `stale_factor × expected interval`.
    pub stale_after_ms: Option<u64>,
    pub hazard_source: Option<HazardSourceId>,
}

/// One threshold grade (预警, 一级报警, 二级报警, 断电 …).
#[derive(Debug, Clone, PartialEq)]
pub struct GradeSpec {
    /// Display name, e.g. `报警` or `断电`.
    pub name: String,
    pub direction: Direction,
    /// Enter the grade when the value reaches this (≥ for high, ≤ for low).
    pub trigger: f64,
    /// Leave the grade when the value is strictly past this back toward normal
    /// (< for high, > for low). Equal to `trigger` means no hysteresis.
    pub restore: f64,
    /// The condition must hold this long before the grade becomes active.
    pub on_delay_ms: u64,
    /// The condition must be gone this long before the grade becomes inactive.
    pub off_delay_ms: u64,
    pub colour: Colour,
    /// This grade cuts power (断电). No delay or deadband is ever allowed on it.
    pub power_cut: bool,
}

/// Rate-of-change rule: e.g. sump level rising faster than 0.5 m/h.
#[derive(Debug, Clone, PartialEq)]
pub struct RateSpec {
    /// Alarm when the value rises faster than this many units per hour.
    pub rise_per_h: Option<f64>,
    /// Alarm when the value falls faster than this many units per hour.
    pub fall_per_h: Option<f64>,
    /// The rate is measured over this window (ms).
    pub window_ms: u64,
    pub colour: Colour,
}

/// One hazard source (重大危险源).
#[derive(Debug, Clone, PartialEq)]
pub struct HazardSourceSpec {
    pub id: String,
    pub grade: HazardGrade,
    /// Extra escalation rules, applied on top of the default (the colour of the
    /// highest active grade of any of its points).
    pub rules: Vec<RiskRule>,
}

/// "When at least `min_points` points of the source have an active value alarm at
/// `min_colour` or above, the source is `colour`."
#[derive(Debug, Clone, PartialEq)]
pub struct RiskRule {
    pub min_points: u32,
    pub min_colour: Colour,
    pub colour: Colour,
}

/// Alarm-rate figures, after EEMUA 191 / ISA-18.2.
#[derive(Debug, Clone, PartialEq)]
pub struct AlarmRateSpec {
    /// Flood starts when more than this many alarms were raised in the last 10 minutes.
    pub flood_start_per_10min: u32,
    /// Flood ends when fewer than this many were raised in the last 10 minutes.
    pub flood_end_per_10min: u32,
    /// A point chatters when it raises more than `chatter_count` alarms within
    /// `chatter_window_ms`.
    pub chatter_count: u32,
    pub chatter_window_ms: u64,
}

impl Default for AlarmRateSpec {
    fn default() -> Self {
        AlarmRateSpec {
            flood_start_per_10min: 10,
            flood_end_per_10min: 5,
            chatter_count: 3,
            chatter_window_ms: 60_000,
        }
    }
}
