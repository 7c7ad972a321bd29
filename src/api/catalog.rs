//! What the configuration says about points, hazard sources and devices (names,
//! units, places): static for the life of the gateway, joined with the live state
//! by index.

use crate::config::Config;
use crate::engine::EngineSpec;
use serde::Serialize;
use std::collections::HashMap;

/// One point's static description.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PointInfo {
    pub index: u32,
    pub id: String,
    pub name: String,
    pub kind: String,
    pub unit: String,
    pub location: String,
    pub hazard_source: Option<String>,
    pub device: Option<String>,
    pub range_min: f64,
    pub range_max: f64,
    /// Grade names and triggers, least severe first.
    pub grades: Vec<GradeInfo>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GradeInfo {
    pub name: String,
    pub direction: String,
    pub trigger: f64,
    pub colour: crate::model::Colour,
    pub power_cut: bool,
}

/// One hazard source's static description.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HazardInfo {
    pub index: u32,
    pub id: String,
    pub name: String,
    pub grade: u8,
    pub points: Vec<String>,
}

/// One device's static description.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeviceInfo {
    pub id: String,
    pub name: String,
    pub protocol: String,
    pub address: String,
}

/// The static half of the API's answers.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Catalog {
    pub site_id: String,
    pub site_name: String,
    pub points: Vec<PointInfo>,
    pub hazard_sources: Vec<HazardInfo>,
    pub devices: Vec<DeviceInfo>,
    #[serde(skip)]
    by_id: HashMap<String, u32>,
}

impl Catalog {
    /// From the configuration and the engine spec built from it (which adds status
    /// points for devices and links after the configured ones).
    pub fn new(config: &Config, spec: &EngineSpec) -> Catalog {
        let cfg_points: HashMap<&str, &crate::config::PointConfig> =
            config.points.iter().map(|p| (p.id.as_str(), p)).collect();
        let points: Vec<PointInfo> = spec
            .points
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let c = cfg_points.get(p.id.as_str());
                PointInfo {
                    index: i as u32,
                    id: p.id.clone(),
                    name: c.map_or_else(|| p.id.clone(), |c| c.name.clone()),
                    kind: p.kind.as_str().to_owned(),
                    unit: c.map_or_else(String::new, |c| c.unit.clone()),
                    location: c.map_or_else(String::new, |c| c.location.clone()),
                    hazard_source: p
                        .hazard_source
                        .and_then(|h| spec.hazard_sources.get(h.0 as usize))
                        .map(|h| h.id.clone()),
                    device: c.map(|c| c.device.clone()),
                    range_min: p.range_min,
                    range_max: p.range_max,
                    grades: p
                        .grades
                        .iter()
                        .map(|g| GradeInfo {
                            name: g.name.clone(),
                            direction: format!("{:?}", g.direction).to_lowercase(),
                            trigger: g.trigger,
                            colour: g.colour,
                            power_cut: g.power_cut,
                        })
                        .collect(),
                }
            })
            .collect();
        let hazard_sources = spec
            .hazard_sources
            .iter()
            .enumerate()
            .map(|(i, h)| {
                let c = config.hazard_sources.iter().find(|c| c.id == h.id);
                HazardInfo {
                    index: i as u32,
                    id: h.id.clone(),
                    name: c.map_or_else(|| h.id.clone(), |c| c.name.clone()),
                    grade: c.map_or(0, |c| c.grade),
                    points: points
                        .iter()
                        .filter(|p| p.hazard_source.as_deref() == Some(h.id.as_str()))
                        .map(|p| p.id.clone())
                        .collect(),
                }
            })
            .collect();
        let devices = config
            .devices
            .iter()
            .map(|d| DeviceInfo {
                id: d.id.clone(),
                name: d.name.clone(),
                protocol: d.protocol.as_str().to_owned(),
                address: match (&d.host, d.port, &d.broker, &d.serial_port) {
                    (Some(h), Some(p), _, _) => format!("{h}:{p}"),
                    (Some(h), None, _, _) => h.clone(),
                    (None, _, Some(broker), _) => broker.clone(),
                    (None, _, None, Some(serial)) => serial.clone(),
                    _ => String::new(),
                },
            })
            .collect();
        let by_id = points.iter().map(|p| (p.id.clone(), p.index)).collect();
        Catalog {
            site_id: config.site.id.clone(),
            site_name: config.site.name.clone(),
            points,
            hazard_sources,
            devices,
            by_id,
        }
    }

    /// Index of a point by its configured id.
    pub fn point_index(&self, id: &str) -> Option<u32> {
        self.by_id.get(id).copied()
    }
}
