//! Sources turn the outside world into [`Reading`](crate::model::Reading)s. They own
//! connections, scheduling, retries and decoding; they know nothing about alarms.

pub mod modbus;
pub mod mqtt;

use crate::engine::{EngineSpec, GradeSpec, PointSpec};
use crate::model::{Colour, Direction, PointId, PointKind, Timestamp};
use std::time::{SystemTime, UNIX_EPOCH};

/// Wall-clock time for reading timestamps (the edges read the clock; the engine never
/// does).
pub fn wall_now() -> Timestamp {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    Timestamp(ms)
}

/// Append a 0/1 status point (1 = up) with one low grade `grade_name` at 0 and return
/// its id: a dead device, link or connection raises one parent alarm through the
/// ordinary alarm life. Appended after the configured points, so their ids do not move.
pub fn push_status_point(spec: &mut EngineSpec, id: String, grade_name: &str) -> PointId {
    push_switch_point(spec, id, grade_name, Direction::Low, Colour::Orange, false)
}

/// Append a 0/1 point with one grade `grade_name`: raised while it reads 0 (`Low`) or
/// while it reads 1 (`High`). Appended after the configured points.
pub fn push_switch_point(
    spec: &mut EngineSpec,
    id: String,
    grade_name: &str,
    direction: Direction,
    colour: Colour,
    power_cut: bool,
) -> PointId {
    let index = PointId(spec.points.len() as u32);
    let level = match direction {
        Direction::Low => 0.0,
        Direction::High => 1.0,
    };
    spec.points.push(PointSpec {
        id,
        kind: PointKind::Switch,
        range_min: 0.0,
        range_max: 1.0,
        grades: vec![GradeSpec {
            name: grade_name.to_owned(),
            direction,
            trigger: level,
            restore: level,
            on_delay_ms: 0,
            off_delay_ms: 0,
            colour,
            power_cut,
        }],
        rate: None,
        stale_after_ms: None,
        hazard_source: None,
    });
    index
}
