//! Builders for engine specs in tests.
#![allow(dead_code)]

use hazgate::engine::{
    AlarmRateSpec, EngineSpec, GradeSpec, HazardSourceSpec, PointSpec, RateSpec, RiskRule,
};
use hazgate::model::{Colour, Direction, HazardGrade, HazardSourceId, PointKind};

pub fn grade(
    name: &str,
    direction: Direction,
    trigger: f64,
    restore: f64,
    colour: Colour,
) -> GradeSpec {
    GradeSpec {
        name: name.to_owned(),
        direction,
        trigger,
        restore,
        on_delay_ms: 0,
        off_delay_ms: 0,
        colour,
        power_cut: false,
    }
}

pub fn high(name: &str, trigger: f64, restore: f64, colour: Colour) -> GradeSpec {
    grade(name, Direction::High, trigger, restore, colour)
}

pub fn low(name: &str, trigger: f64, restore: f64, colour: Colour) -> GradeSpec {
    grade(name, Direction::Low, trigger, restore, colour)
}

pub fn cut(trigger: f64, restore: f64) -> GradeSpec {
    GradeSpec {
        power_cut: true,
        ..high("断电", trigger, restore, Colour::Red)
    }
}

pub fn point(id: &str, kind: PointKind, range: (f64, f64), grades: Vec<GradeSpec>) -> PointSpec {
    PointSpec {
        id: id.to_owned(),
        kind,
        range_min: range.0,
        range_max: range.1,
        grades,
        rate: None,
        stale_after_ms: None,
        hazard_source: None,
    }
}

/// Methane at a longwall working face (T1): alarm ≥1.0, cut ≥1.5, restore <1.0.
pub fn methane_t1(id: &str) -> PointSpec {
    point(
        id,
        PointKind::Ch4,
        (0.0, 4.0),
        vec![high("报警", 1.0, 1.0, Colour::Orange), cut(1.5, 1.0)],
    )
}

pub fn with_rate(mut p: PointSpec, rise_per_h: f64, window_ms: u64) -> PointSpec {
    p.rate = Some(RateSpec {
        rise_per_h: Some(rise_per_h),
        fall_per_h: None,
        window_ms,
        colour: Colour::Yellow,
    });
    p
}

pub fn in_source(mut p: PointSpec, source: u32) -> PointSpec {
    p.hazard_source = Some(HazardSourceId(source));
    p
}

pub fn source(id: &str, grade: u8, rules: Vec<RiskRule>) -> HazardSourceSpec {
    HazardSourceSpec {
        id: id.to_owned(),
        grade: HazardGrade(grade),
        rules,
    }
}

pub fn spec(points: Vec<PointSpec>) -> EngineSpec {
    EngineSpec {
        points,
        hazard_sources: vec![],
        alarm_rate: AlarmRateSpec::default(),
    }
}
