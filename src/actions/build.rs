//! `[[actions]]` → [`ActionSpec`]s, appending each action's two points to the engine
//! spec (after the sources' status points, so configured point ids never move).

use super::{ActionSpec, RelaySpec, RelayTarget, Restore, Trigger};
use crate::config::{ActionConfig, Config, RegisterTable, RestoreMode};
use crate::engine::{EngineSpec, GradeSpec, PointSpec};
use crate::model::{Colour, Direction, PointId, PointKind};
use crate::sources::modbus::poller::LinkSpec;

/// Shortest default feedback timeout: a feed-status relay needs some time to settle.
const MIN_FEEDBACK_TIMEOUT_MS: u64 = 1_000;

/// Compile the safety actions of a validated `config`. `spec` must already hold the
/// sources' status points (`device:<id>`, `link:<id>`); `links` are the Modbus links
/// built from the same config.
pub fn actions(config: &Config, spec: &mut EngineSpec, links: &[LinkSpec]) -> Vec<ActionSpec> {
    let index = |spec: &EngineSpec, id: &str| {
        spec.points
            .iter()
            .position(|p| p.id == id)
            .map(|i| PointId(i as u32))
    };
    let mut out = Vec::new();
    for action in &config.actions {
        let mut triggers: Vec<Trigger> = Vec::new();
        let sourced = config
            .points
            .iter()
            .filter(|p| action.hazard_source.is_some() && p.hazard_source == action.hazard_source);
        let named = config
            .points
            .iter()
            .filter(|p| action.triggers.contains(&p.id));
        for p in named.chain(sourced) {
            let Some(point) = index(spec, &p.id) else {
                continue;
            };
            if triggers.iter().any(|t| t.point == point) {
                continue;
            }
            let grades = trigger_grades(&spec.points[point.0 as usize], action);
            if !grades.is_empty() {
                triggers.push(Trigger { point, grades });
            }
        }
        let mut lockout = Vec::new();
        if action.fault_lockout {
            for t in &triggers {
                lockout.push(t.point);
                let device = &config.points[t.point.0 as usize].device;
                if let Some(p) = index(spec, &format!("device:{device}")) {
                    lockout.push(p);
                }
                let link = links
                    .iter()
                    .find(|l| l.devices.iter().any(|d| &d.id == device));
                if let Some(p) = link.and_then(|l| l.status_point) {
                    lockout.push(p);
                }
            }
            lockout.sort();
            lockout.dedup();
        }
        let relays = action
            .relays
            .iter()
            .map(|r| {
                let feedback = r.feedback.as_deref().and_then(|id| index(spec, id));
                let feedback_index = r
                    .feedback
                    .as_deref()
                    .and_then(|id| config.points.iter().position(|p| p.id == id));
                let default_timeout = feedback_index.map_or(MIN_FEEDBACK_TIMEOUT_MS, |i| {
                    (2 * config.point_interval_ms(i)).max(MIN_FEEDBACK_TIMEOUT_MS)
                });
                RelaySpec {
                    device: r.device.clone(),
                    target: match r.table {
                        RegisterTable::Holding => RelayTarget::Holding(r.address),
                        _ => RelayTarget::Coil(r.address),
                    },
                    cut_value: r.cut_value,
                    restore_value: r.restore_value,
                    feedback,
                    feedback_timeout_ms: r.feedback_timeout_ms.unwrap_or(default_timeout),
                }
            })
            .collect();
        let cut_point = push_point(
            spec,
            format!("cut:{}", action.id),
            "断电",
            Direction::High,
            true,
        );
        let status_point = push_point(
            spec,
            format!("action:{}", action.id),
            "馈电异常",
            Direction::Low,
            false,
        );
        out.push(ActionSpec {
            id: action.id.clone(),
            name: action.name.clone(),
            triggers,
            lockout,
            restore: match action.restore {
                RestoreMode::Auto => Restore::Auto,
                RestoreMode::Manual => Restore::Manual,
            },
            relays,
            status_point,
            cut_point,
        });
    }
    out
}

/// Indices of `point`'s grades (engine order) that make `action` cut: the named grade
/// and every more severe grade of its direction, else the power-cut grades.
fn trigger_grades(point: &PointSpec, action: &ActionConfig) -> Vec<u16> {
    let picked = |pred: &dyn Fn(&GradeSpec) -> bool| {
        point
            .grades
            .iter()
            .enumerate()
            .filter(|(_, g)| pred(g))
            .map(|(k, _)| k as u16)
            .collect()
    };
    match &action.grade {
        None => picked(&|g| g.power_cut),
        Some(name) => {
            let Some(named) = point.grades.iter().find(|g| &g.name == name) else {
                return Vec::new();
            };
            let severity = |g: &GradeSpec| match g.direction {
                Direction::High => g.trigger,
                Direction::Low => -g.trigger,
            };
            picked(&|g| g.direction == named.direction && severity(g) >= severity(named))
        }
    }
}

/// A 0/1 point of the action with one red grade: `断电` while it reads 1 (high, a
/// power-cut grade, so it cannot be shelved), or `馈电异常` while it reads 0 (low).
fn push_point(
    spec: &mut EngineSpec,
    id: String,
    grade: &str,
    direction: Direction,
    power_cut: bool,
) -> PointId {
    let index = PointId(spec.points.len() as u32);
    let (trigger, restore) = match direction {
        Direction::High => (1.0, 0.5),
        Direction::Low => (0.0, 0.5),
    };
    spec.points.push(PointSpec {
        id,
        kind: PointKind::Switch,
        range_min: 0.0,
        range_max: 1.0,
        grades: vec![GradeSpec {
            name: grade.to_owned(),
            direction,
            trigger,
            restore,
            on_delay_ms: 0,
            off_delay_ms: 0,
            colour: Colour::Red,
            power_cut,
        }],
        rate: None,
        stale_after_ms: None,
        hazard_source: None,
    });
    index
}
