//! The domain model shared by every part of hazgate: points, readings, quality,
//! grades, colours, alarms and hazard sources.
//!
//! Names follow `DESIGN.md`: a `Point` (测点) is one measured quantity, a `Reading`
//! is one value of a point at one time with its `Quality`, an `Alarm` is one episode
//! of a point outside its normal band, a `HazardSource` (重大危险源) groups points and
//! carries a live risk colour.
//!
//! Invariants:
//! - A reading is never dropped silently and never invented: a bad value becomes a
//!   reading with a bad quality, and its `value` is then whatever the source saw
//!   (or `f64::NAN` when it saw nothing).
//! - Timestamps are milliseconds since the Unix epoch (UTC), passed in from the edge.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Milliseconds since the Unix epoch, UTC. Time is always passed in, never read by the
/// engine, so every decision is reproducible in tests and benches.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// Milliseconds elapsed from `earlier` to `self` (negative if `earlier` is later).
    pub fn since(self, earlier: Timestamp) -> i64 {
        self.0.saturating_sub(earlier.0)
    }

    /// This timestamp moved forward by `ms` milliseconds.
    pub fn plus_ms(self, ms: u64) -> Timestamp {
        Timestamp(self.0.saturating_add(i64::try_from(ms).unwrap_or(i64::MAX)))
    }
}

/// Dense index of a point inside one gateway (position in the configured point list).
/// The engine works on indices so the hot path never hashes a string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PointId(pub u32);

/// Dense index of a hazard source (position in the configured list).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct HazardSourceId(pub u32);

/// Stable identifier of one alarm episode. Allocated by the engine from a counter that
/// the durable store seeds on start, so ids never repeat across restarts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct AlarmId(pub u64);

impl fmt::Display for AlarmId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// How far a reading can be trusted.
///
/// "The link failed" (`CommFail`) is kept apart from "the device answered with an
/// exception" (`DeviceException`) all the way here, as the Modbus standard does.
///
/// Written as its snake_case name (`good`, `comm_fail`, …); a device exception as
/// `device_exception(0x02)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Quality {
    /// A fresh value from a working sensor.
    Good,
    /// No reading arrived within the point's stale window; the value is the last one seen.
    Stale,
    /// The link to the device failed (timeout, refused, reset); no value was read.
    CommFail,
    /// The device answered with a Modbus exception (the code is kept).
    DeviceException(u8),
    /// The value lies outside the sensor's measuring range: a sensor fault, not a process value.
    OutOfRange,
    /// The raw data could not be decoded (malformed payload, wrong type, NaN).
    BadData,
    /// The point's configuration does not allow a value to be produced.
    BadConfig,
    /// The point is in calibration or maintenance: the value is kept but flagged, and
    /// value alarms are held.
    Maintenance,
    /// The source reported the value as bad (e.g. a `quality` field in an MQTT payload).
    SourceBad,
}

impl Quality {
    /// Whether a value with this quality may drive value alarms.
    pub fn is_good(self) -> bool {
        matches!(self, Quality::Good)
    }

    /// Short stable name, used in logs, line protocol and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Quality::Good => "good",
            Quality::Stale => "stale",
            Quality::CommFail => "comm_fail",
            Quality::DeviceException(_) => "device_exception",
            Quality::OutOfRange => "out_of_range",
            Quality::BadData => "bad_data",
            Quality::BadConfig => "bad_config",
            Quality::Maintenance => "maintenance",
            Quality::SourceBad => "source_bad",
        }
    }
}

impl std::str::FromStr for Quality {
    type Err = String;

    fn from_str(s: &str) -> Result<Quality, String> {
        Ok(match s {
            "good" => Quality::Good,
            "stale" => Quality::Stale,
            "comm_fail" => Quality::CommFail,
            "out_of_range" => Quality::OutOfRange,
            "bad_data" => Quality::BadData,
            "bad_config" => Quality::BadConfig,
            "maintenance" => Quality::Maintenance,
            "source_bad" => Quality::SourceBad,
            other => {
                let code = other
                    .strip_prefix("device_exception(")
                    .and_then(|c| c.strip_suffix(')'))
                    .ok_or_else(|| format!("unknown quality `{other}`"))?;
                let code = match code.strip_prefix("0x") {
                    Some(hex) => u8::from_str_radix(hex, 16),
                    None => code.parse(),
                }
                .map_err(|_| format!("bad exception code in `{other}`"))?;
                Quality::DeviceException(code)
            }
        })
    }
}

impl Serialize for Quality {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Quality::DeviceException(_) => s.collect_str(self),
            q => s.serialize_str(q.as_str()),
        }
    }
}

impl<'de> Deserialize<'de> for Quality {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Quality, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for Quality {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Quality::DeviceException(code) => write!(f, "device_exception({code:#04x})"),
            q => f.write_str(q.as_str()),
        }
    }
}

/// One value of one point at one time.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Reading {
    pub point: PointId,
    /// Time of the measurement (the device's time when it sends one, else the time the
    /// response arrived).
    pub ts: Timestamp,
    pub value: f64,
    pub quality: Quality,
}

/// A batch of readings on its way from a source to the store, with an optional
/// [`Receipt`] the store confirms once every reading of the batch is committed; such
/// readings are never dropped to make room, and a receipt left unconfirmed at a stop
/// is dropped. A source that must not let go of its input before that — the MQTT
/// source, which acknowledges a message to the broker only then — sends one; a
/// source that can read its input again (Modbus) sends none.
#[derive(Debug, Default)]
pub struct Batch {
    pub readings: Vec<Reading>,
    pub receipt: Option<Receipt>,
}

impl From<Vec<Reading>> for Batch {
    fn from(readings: Vec<Reading>) -> Batch {
        Batch {
            readings,
            receipt: None,
        }
    }
}

/// A source's record of how far its batches are stored. The source numbers its
/// batches 1, 2, 3… ([`Receipts::receipt`]); each confirmed receipt raises
/// [`Receipts::stored`] to its number and wakes [`Receipts::changed`]. Batches of one
/// source reach the store in order, so "stored up to n" covers every batch ≤ n.
#[derive(Debug, Default)]
pub struct Receipts {
    stored: AtomicU64,
    notify: tokio::sync::Notify,
}

impl Receipts {
    /// The receipt for batch number `seq`.
    pub fn receipt(self: &Arc<Self>, seq: u64) -> Receipt {
        Receipt {
            book: self.clone(),
            seq,
        }
    }

    /// The highest batch number confirmed so far (0: none).
    pub fn stored(&self) -> u64 {
        self.stored.load(Ordering::Acquire)
    }

    /// Resolves after a receipt was confirmed (possibly before this call: a
    /// confirmation nobody waited for is kept for the next caller).
    pub async fn changed(&self) {
        self.notify.notified().await;
    }
}

/// Handed back by the store when its batch is committed. Dropping it without
/// [`Receipt::confirm`] (the store stopped, the batch was not written) confirms
/// nothing: the source keeps what it would otherwise let go.
#[derive(Debug)]
pub struct Receipt {
    book: Arc<Receipts>,
    seq: u64,
}

impl Receipt {
    /// The batch is stored.
    pub fn confirm(self) {
        self.book.stored.fetch_max(self.seq, Ordering::AcqRel);
        self.book.notify.notify_one();
    }
}

/// The four-colour scale used for both warning grades and hazard-source risk
/// (一级 red > 二级 orange > 三级 yellow > 四级 blue). Ordered from least to most severe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Colour {
    /// 蓝: low risk / 四级.
    Blue,
    /// 黄: general risk / 三级.
    Yellow,
    /// 橙: major risk / 二级.
    Orange,
    /// 红: severe risk / 一级.
    Red,
}

impl Colour {
    pub fn as_str(self) -> &'static str {
        match self {
            Colour::Blue => "blue",
            Colour::Yellow => "yellow",
            Colour::Orange => "orange",
            Colour::Red => "red",
        }
    }
}

impl fmt::Display for Colour {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which side of the normal band a threshold grade watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Alarm when the value rises to or above the trigger (methane, CO, level, pressure).
    High,
    /// Alarm when the value falls to or below the trigger (oxygen, wind speed).
    Low,
}

/// What kind of quantity a point measures. Used for display, defaults and the
/// coal-mine safety checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PointKind {
    /// Methane, % CH4.
    Ch4,
    /// Carbon monoxide, ppm.
    Co,
    /// Oxygen, % VOL.
    O2,
    /// Carbon dioxide, % VOL.
    Co2,
    /// Hydrogen sulphide, ppm.
    H2s,
    /// Combustible gas, % LEL.
    Combustible,
    /// Any other toxic gas, ppm.
    Toxic,
    /// Water level, m.
    WaterLevel,
    /// Liquid level in a tank, m or %.
    TankLevel,
    /// Pressure (kPa, MPa) or negative pressure.
    Pressure,
    /// Temperature, °C.
    Temperature,
    /// Flow, m³/h.
    Flow,
    /// Wind (air) speed, m/s.
    WindSpeed,
    /// Dust concentration, mg/m³.
    Dust,
    /// Switch state: power feed (馈电), door, fan on/off. 1 = on/closed, 0 = off/open.
    Switch,
    /// Anything else.
    Other,
}

impl PointKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PointKind::Ch4 => "ch4",
            PointKind::Co => "co",
            PointKind::O2 => "o2",
            PointKind::Co2 => "co2",
            PointKind::H2s => "h2s",
            PointKind::Combustible => "combustible",
            PointKind::Toxic => "toxic",
            PointKind::WaterLevel => "water_level",
            PointKind::TankLevel => "tank_level",
            PointKind::Pressure => "pressure",
            PointKind::Temperature => "temperature",
            PointKind::Flow => "flow",
            PointKind::WindSpeed => "wind_speed",
            PointKind::Dust => "dust",
            PointKind::Switch => "switch",
            PointKind::Other => "other",
        }
    }
}

/// Major-hazard-source grade per GB 18218 (一级 is the most dangerous).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct HazardGrade(pub u8);

impl HazardGrade {
    /// Default poll interval for points of a source of this grade: the more dangerous
    /// the source, the closer it is watched. All within the 30 s coal-mine limit.
    pub fn default_poll_interval_ms(self) -> u64 {
        match self.0 {
            1 => 1_000,
            2 => 2_000,
            3 => 5_000,
            _ => 10_000,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quality_names_round_trip() {
        for q in [
            Quality::Good,
            Quality::Stale,
            Quality::CommFail,
            Quality::DeviceException(0x0b),
            Quality::OutOfRange,
            Quality::BadData,
            Quality::BadConfig,
            Quality::Maintenance,
            Quality::SourceBad,
        ] {
            let text = q.to_string();
            assert_eq!(text.parse::<Quality>(), Ok(q), "{text}");
        }
        assert_eq!(
            Quality::DeviceException(2).to_string(),
            "device_exception(0x02)"
        );
        assert!("fine".parse::<Quality>().is_err());
        assert!("device_exception(0xzz)".parse::<Quality>().is_err());
    }
}
