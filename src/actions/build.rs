//! `[[actions]]` → [`ActionSpec`]s, appending each action's two points to the engine
//! spec (after the sources' status points, so configured point ids never move).

use super::{ActionSpec, RelaySpec, RelayTarget, Restore, Trigger};
use crate::config::{ActionConfig, Config, RegisterTable, RestoreMode};
use crate::engine::{EngineSpec, PointSpec};
use crate::model::{Colour, Direction, PointId};
use crate::sources::modbus::poller::LinkSpec;
use crate::sources::push_switch_point;

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
        // `cut:<id>` carries a power-cut grade, so it cannot be shelved.
        let cut_point = push_switch_point(
            spec,
            format!("cut:{}", action.id),
            "断电",
            Direction::High,
            Colour::Red,
            true,
        );
        let status_point = push_switch_point(
            spec,
            format!("action:{}", action.id),
            "馈电异常",
            Direction::Low,
            Colour::Red,
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

/// One grade as [`cut_grades`] sees it: name, direction, trigger, power cut.
pub type GradeView<'a> = (&'a str, Direction, f64, bool);

/// Positions of the grades that make an action cut: the grade named `wanted` and every
/// more severe grade of its direction, else (no name) the power-cut grades. Empty when
/// there are none. Used on the configured thresholds (by `hazgate check`) and on the
/// engine's grades (to compile the triggers).
pub fn cut_grades<'a>(
    grades: impl Iterator<Item = GradeView<'a>> + Clone,
    wanted: Option<&str>,
) -> Vec<u16> {
    let positions = |keep: &dyn Fn(&GradeView) -> bool| {
        grades
            .clone()
            .enumerate()
            .filter(|(_, g)| keep(g))
            .map(|(k, _)| k as u16)
            .collect()
    };
    match wanted {
        None => positions(&|g| g.3),
        Some(name) => {
            let Some(named) = grades.clone().find(|g| g.0 == name) else {
                return Vec::new();
            };
            let severity = |g: &GradeView| match g.1 {
                Direction::High => g.2,
                Direction::Low => -g.2,
            };
            positions(&|g| g.1 == named.1 && severity(g) >= severity(&named))
        }
    }
}

/// [`cut_grades`] of an engine point.
fn trigger_grades(point: &PointSpec, action: &ActionConfig) -> Vec<u16> {
    let grades = point
        .grades
        .iter()
        .map(|g| (g.name.as_str(), g.direction, g.trigger, g.power_cut));
    cut_grades(grades, action.grade.as_deref())
}
