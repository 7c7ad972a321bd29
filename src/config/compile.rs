//! A valid configuration → the engine's [`EngineSpec`].
//!
//! Point `i` is `points[i]` and hazard source `j` is `hazard_sources[j]`. Grades keep
//! their listed order within each direction (validation made that least severe first
//! with triggers that never go backwards); high grades come before low ones.

use super::*;
use crate::engine::{
    AlarmRateSpec, EngineSpec, GradeSpec, HazardSourceSpec, PointSpec, RateSpec, RiskRule,
};
use crate::model::{HazardGrade, HazardSourceId};
use std::collections::HashMap;

impl Config {
    /// Compiles this configuration for the engine. Call it on a configuration that
    /// passed validation ([`Config::load`] or [`Config::validate`]); on an invalid one
    /// the engine's invariants are not guaranteed (an unknown hazard source, for
    /// instance, is left out).
    pub fn engine_spec(&self) -> EngineSpec {
        let source_index: HashMap<&str, u32> = self
            .hazard_sources
            .iter()
            .enumerate()
            .map(|(i, source)| (source.id.as_str(), i as u32))
            .collect();
        let points = self
            .points
            .iter()
            .enumerate()
            .map(|(i, point)| {
                let mut grades: Vec<GradeSpec> = point
                    .thresholds
                    .iter()
                    .map(|grade| GradeSpec {
                        name: grade.name.clone(),
                        direction: grade.direction,
                        trigger: grade.trigger,
                        restore: grade.effective_restore(),
                        on_delay_ms: grade.on_delay_ms,
                        off_delay_ms: grade.off_delay_ms,
                        colour: grade.colour,
                        power_cut: grade.power_cut,
                    })
                    .collect();
                // Stable: listed order is kept within each direction.
                grades.sort_by_key(|grade| match grade.direction {
                    Direction::High => 0,
                    Direction::Low => 1,
                });
                PointSpec {
                    id: point.id.clone(),
                    kind: point.kind,
                    range_min: point.range_min,
                    range_max: point.range_max,
                    grades,
                    rate: point.rate.as_ref().map(|rate| RateSpec {
                        rise_per_h: rate.rise_per_h,
                        fall_per_h: rate.fall_per_h,
                        window_ms: rate.window_ms,
                        colour: rate.colour,
                    }),
                    stale_after_ms: match point.stale_factor {
                        0 => None,
                        factor => {
                            Some(u64::from(factor).saturating_mul(point_interval_ms(self, i)))
                        }
                    },
                    hazard_source: point
                        .hazard_source
                        .as_deref()
                        .and_then(|id| source_index.get(id))
                        .map(|&index| HazardSourceId(index)),
                }
            })
            .collect();
        let hazard_sources = self
            .hazard_sources
            .iter()
            .map(|source| HazardSourceSpec {
                id: source.id.clone(),
                grade: HazardGrade(source.grade),
                rules: source
                    .rules
                    .iter()
                    .map(|rule| RiskRule {
                        min_points: rule.min_points,
                        min_colour: rule.min_colour,
                        colour: rule.colour,
                    })
                    .collect(),
            })
            .collect();
        EngineSpec {
            points,
            hazard_sources,
            alarm_rate: AlarmRateSpec {
                flood_start_per_10min: self.alarm_rate.flood_start_per_10min,
                flood_end_per_10min: self.alarm_rate.flood_end_per_10min,
                chatter_count: self.alarm_rate.chatter_count,
                chatter_window_ms: self.alarm_rate.chatter_window_ms,
            },
        }
    }
}

/// Poll interval of a hazard source: its own, else the default of its grade.
pub(crate) fn hazard_source_poll_interval_ms(source: &HazardSourceConfig) -> u64 {
    source
        .poll_interval_ms
        .unwrap_or_else(|| HazardGrade(source.grade).default_poll_interval_ms())
}

/// Poll interval of device `index`: its own, else the shortest of the hazard sources
/// of the points it serves (the device is polled as often as its most dangerous
/// source needs), else [`DEFAULT_POLL_INTERVAL_MS`].
pub(crate) fn device_poll_interval_ms(config: &Config, index: usize) -> u64 {
    let Some(device) = config.devices.get(index) else {
        return DEFAULT_POLL_INTERVAL_MS;
    };
    if let Some(interval) = device.poll_interval_ms {
        return interval;
    }
    config
        .points
        .iter()
        .filter(|point| point.device == device.id)
        .filter_map(|point| point.hazard_source.as_deref())
        .filter_map(|id| config.hazard_sources.iter().find(|source| source.id == id))
        .map(hazard_source_poll_interval_ms)
        .min()
        .unwrap_or(DEFAULT_POLL_INTERVAL_MS)
}

/// Expected interval between readings of point `index`: its own `interval_ms`, else
/// its device's poll interval.
pub(crate) fn point_interval_ms(config: &Config, index: usize) -> u64 {
    let Some(point) = config.points.get(index) else {
        return DEFAULT_POLL_INTERVAL_MS;
    };
    point.interval_ms.unwrap_or_else(|| {
        config
            .devices
            .iter()
            .position(|device| device.id == point.device)
            .map_or(DEFAULT_POLL_INTERVAL_MS, |device| {
                device_poll_interval_ms(config, device)
            })
    })
}

impl Config {
    /// The embedded store's options from `[storage]`.
    pub fn store_options(&self) -> crate::store::StoreOptions {
        let s = &self.storage;
        crate::store::StoreOptions {
            path: std::path::PathBuf::from(&s.path),
            store_every_reading: s.mode == StorageMode::Every,
            heartbeat_s: s.heartbeat_s,
            readings_retention_days: s.raw_retention_days,
            stats_retention_days: s.event_retention_days,
            events_retention_days: s.event_retention_days,
            disk_limit_bytes: s.max_size_mb.map(|mb| mb.saturating_mul(1024 * 1024)),
            ..crate::store::StoreOptions::default()
        }
    }

    /// What the store records about each point of `spec` (configured points carry
    /// their unit; status points appended by the sources do not have one).
    pub fn point_meta(&self, spec: &EngineSpec) -> Vec<crate::store::PointMeta> {
        let mut meta = crate::store::PointMeta::from_spec(spec);
        for (m, p) in meta.iter_mut().zip(&self.points) {
            m.unit = Some(p.unit.clone()).filter(|u| !u.is_empty());
        }
        for m in &mut meta {
            m.site = Some(self.site.id.clone());
        }
        meta
    }

    /// The InfluxDB sink's options from `[sinks.influxdb]`, if configured.
    pub fn influx_options(&self) -> Option<crate::sinks::influxdb::InfluxOptions> {
        use crate::sinks::influxdb::{InfluxApi as Api, InfluxOptions};
        let c = self.sinks.influxdb.as_ref()?;
        let api = match c.api {
            InfluxApi::V2 => Api::V2 {
                org: c.org.clone().unwrap_or_default(),
                bucket: c.bucket.clone().unwrap_or_default(),
                token: c.token.clone().unwrap_or_default(),
            },
            InfluxApi::V1 => Api::V1 {
                database: c.database.clone().unwrap_or_default(),
                retention_policy: c.retention_policy.clone(),
                username: c.username.clone(),
                password: c.password.clone(),
            },
        };
        Some(InfluxOptions {
            store_path: std::path::PathBuf::from(&self.storage.path),
            url: c.url.clone(),
            api,
            batch_max_lines: c.batch_size as usize,
            flush_interval_ms: c.flush_interval_ms,
            ..InfluxOptions::default()
        })
    }

    /// The uplink's options from `[uplink]`, if configured, with the grades of `spec`
    /// for the thresholds in alarm messages. Call on a validated configuration.
    pub fn uplink_options(&self, spec: &EngineSpec) -> Option<crate::uplink::UplinkOptions> {
        use crate::uplink as up;
        let c = self.uplink.as_ref()?;
        let site = c.site_code.clone().unwrap_or_else(|| self.site.id.clone());
        let tls = up::TlsFiles {
            ca_file: c.ca_file.clone(),
            client_cert_file: c.client_cert_file.clone(),
            client_key_file: c.client_key_file.clone(),
        };
        let transport = match c.transport {
            UplinkTransport::Mqtt => up::UplinkTransport::Mqtt(mqtt_uplink(
                &c.url,
                tls,
                c.client_id
                    .clone()
                    .unwrap_or_else(|| format!("hazgate-{site}")),
                (&c.username, &c.password),
                &c.topic_prefix,
            )),
            UplinkTransport::Https => {
                let sm4 = match (&c.sm4_key_hex, &c.sm4_iv_hex) {
                    (Some(k), Some(iv)) => up::sm4::Sm4Key::from_hex(k, iv).ok(),
                    _ => None,
                };
                up::UplinkTransport::Http(up::HttpUplink {
                    url: c.url.clone(),
                    tls,
                    appid: c.appid.clone(),
                    appsecret: c.appsecret.clone(),
                    sm4,
                    request_timeout_ms: c.request_timeout_ms,
                })
            }
        };
        let mut o = up::UplinkOptions::new(
            std::path::PathBuf::from(&self.storage.path),
            &site,
            transport,
        );
        o.format = match c.format {
            UplinkFormat::Json => up::Format::Json,
            UplinkFormat::KjText => up::Format::KjText,
        };
        o.utc_offset_min = c.utc_offset_min;
        o.realtime = c.send_realtime;
        o.realtime_interval_ms = c.realtime_interval_ms;
        o.realtime_batch_max = c.realtime_batch_max as usize;
        o.statistics = c.send_statistics;
        o.heartbeat_interval_ms = c.heartbeat_interval_ms;
        o.retry_max_ms = c.retry_max_ms;
        // `hazgate run` wakes the uplink after every alarm commit, so its own look at
        // the log is only a safety net: once a second, not 200 times.
        o.alarm_poll_interval_ms = 1_000;
        o.grades = uplink_grades(spec);
        Some(o)
    }

    /// One uplink per `[[linkage]]`: alarm messages only, filtered to what the
    /// linkage asks for, under its own cursor `linkage:<id>`.
    pub fn linkage_options(&self, spec: &EngineSpec) -> Vec<crate::uplink::UplinkOptions> {
        use crate::uplink as up;
        let grades = uplink_grades(spec);
        self.linkage
            .iter()
            .map(|l| {
                let tls = up::TlsFiles {
                    ca_file: l.ca_file.clone(),
                    client_cert_file: None,
                    client_key_file: None,
                };
                let transport = if l.url.starts_with("mqtt") {
                    up::UplinkTransport::Mqtt(mqtt_uplink(
                        &l.url,
                        tls,
                        l.client_id
                            .clone()
                            .unwrap_or_else(|| format!("hazgate-{}-{}", self.site.id, l.id)),
                        (&l.username, &l.password),
                        &l.topic_prefix,
                    ))
                } else {
                    up::UplinkTransport::Http(up::HttpUplink {
                        url: l.url.clone(),
                        tls,
                        appid: None,
                        appsecret: None,
                        sm4: None,
                        request_timeout_ms: l.request_timeout_ms,
                    })
                };
                let mut o = up::UplinkOptions::new(
                    std::path::PathBuf::from(&self.storage.path),
                    &self.site.id,
                    transport,
                );
                o.name = format!("linkage:{}", l.id);
                o.realtime = false;
                o.statistics = false;
                o.heartbeat_interval_ms = 0;
                o.alarm_poll_interval_ms = 1_000;
                o.grades = grades.clone();
                o.alarm_filter = Some(up::AlarmFilter {
                    over_limit: l.on.contains(&LinkageEvent::OverLimit),
                    cut: l.on.contains(&LinkageEvent::Cut),
                    feed_fault: l.on.contains(&LinkageEvent::FeedFault),
                    points: l.points.clone(),
                });
                o
            })
            .collect()
    }
}

/// An uplink's MQTT transport to the broker at `url` (`mqtt://` or `mqtts://`).
fn mqtt_uplink(
    url: &str,
    tls: crate::uplink::TlsFiles,
    client_id: String,
    (username, password): (&Option<String>, &Option<String>),
    topic_prefix: &str,
) -> crate::uplink::MqttUplink {
    let (host, port, secure) = crate::sources::mqtt::build::parse_broker(url);
    crate::uplink::MqttUplink {
        host,
        port,
        tls: secure.then_some(tls),
        client_id,
        username: username.clone(),
        password: password.clone(),
        topic_prefix: topic_prefix.to_owned(),
        keep_alive_s: 15,
    }
}

/// The grades of every point, for the thresholds in alarm messages.
fn uplink_grades(spec: &EngineSpec) -> HashMap<String, Vec<crate::uplink::encode::GradeInfo>> {
    spec.points
        .iter()
        .map(|p| {
            let grades = p
                .grades
                .iter()
                .map(|g| crate::uplink::encode::GradeInfo {
                    name: g.name.clone(),
                    direction: match g.direction {
                        crate::model::Direction::High => "high",
                        crate::model::Direction::Low => "low",
                    },
                    trigger: g.trigger,
                    restore: g.restore,
                    power_cut: g.power_cut,
                })
                .collect();
            (p.id.clone(), grades)
        })
        .collect()
}
