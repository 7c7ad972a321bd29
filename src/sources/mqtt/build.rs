//! A valid configuration → the MQTT devices the subscriber runs.
//!
//! Each MQTT device gets a status point `device:<id>` (1 connected, 0 offline) with
//! a low grade `设备离线` at 0, the same shape as the Modbus devices' status points, so
//! a broker connection that stays down raises one parent alarm. The status points are
//! appended after the configured points (and after any the Modbus build appended),
//! so configured indices do not move.

use super::decode::{FieldPath, Fields, Limits};
use super::driver::{BrokerSpec, MqttDeviceSpec, MqttVersion, TlsSpec};
use super::topic::{Router, Target};
use crate::config::{Config, MqttBinding, Protocol};
use crate::engine::EngineSpec;
use crate::model::PointId;
use crate::sources::push_status_point;

/// Build the MQTT devices from `config`, appending their status points to `spec`
/// (which must be `config.engine_spec()`, possibly extended by other sources).
pub fn subscriptions(config: &Config, spec: &mut EngineSpec) -> Vec<MqttDeviceSpec> {
    let mut out = Vec::new();
    for (d, dev) in config.devices.iter().enumerate() {
        if dev.protocol != Protocol::Mqtt {
            continue;
        }
        let prefix = dev.topic_prefix.as_deref().unwrap_or("");
        let mut router = Router::new();
        if let Some(filter) = &dev.point_topic {
            if let Err(e) = router.set_pattern(&format!("{prefix}{filter}")) {
                // Validation rejects this; keep the device without its keyed points.
                tracing::error!(device = %dev.id, error = %e, "bad point_topic");
            }
        }
        for (i, p) in config.points.iter().enumerate() {
            if p.device != dev.id {
                continue;
            }
            let binding = p.mqtt.as_ref();
            let target = Target {
                point: PointId(i as u32),
                fields: binding.map(fields).unwrap_or_default(),
            };
            match binding.and_then(|b| b.topic.as_ref()) {
                Some(topic) => router.add_fixed(format!("{prefix}{topic}"), target),
                None if dev.point_topic.is_some() => {
                    let key = binding.and_then(|b| b.key.clone()).unwrap_or(p.id.clone());
                    router.add_keyed(key, target);
                }
                None => {}
            }
        }
        let broker = parse_broker(dev.broker.as_deref().unwrap_or(""));
        let broker = BrokerSpec {
            tls: broker.2.then(|| TlsSpec {
                ca_file: dev.ca_file.clone(),
                client_cert_file: dev.client_cert_file.clone(),
                client_key_file: dev.client_key_file.clone(),
            }),
            host: broker.0,
            port: broker.1,
        };
        let interval_ms = config.device_poll_interval_ms(d);
        let status_point = push_status_point(spec, format!("device:{}", dev.id), "设备离线");
        out.push(MqttDeviceSpec {
            id: dev.id.clone(),
            broker,
            version: if dev.mqtt_version() == 5 {
                MqttVersion::V5
            } else {
                MqttVersion::V3
            },
            client_id: dev
                .client_id
                .clone()
                .unwrap_or_else(|| format!("hazgate-{}-{}", config.site.id, dev.id)),
            username: dev.username.clone(),
            password: dev.password.clone(),
            connect_timeout_ms: dev.timeout_ms,
            router,
            limits: Limits {
                max_payload_bytes: dev.max_payload_bytes() as usize,
                max_json_depth: dev.max_json_depth(),
            },
            offline_after_ms: dev
                .offline_after_ms
                .unwrap_or(interval_ms.saturating_mul(2)),
            status_point: Some(status_point),
        });
    }
    out
}

fn fields(b: &MqttBinding) -> Fields {
    Fields {
        value: FieldPath::parse(&b.value_path),
        ts: b.ts_path.as_deref().map(FieldPath::parse),
        quality: b.quality_path.as_deref().map(FieldPath::parse),
    }
}

/// `mqtt://host[:port][/…]` or `mqtts://…` → (host, port, tls). Default ports 1883
/// and 8883. The URL was checked by validation.
pub fn parse_broker(url: &str) -> (String, u16, bool) {
    let (scheme, rest) = url.split_once("://").unwrap_or(("mqtt", url));
    let tls = scheme.eq_ignore_ascii_case("mqtts");
    let default_port = if tls { 8883 } else { 1883 };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host_port = authority.rsplit('@').next().unwrap_or("");
    let (host, port) = match host_port.strip_prefix('[') {
        Some(v6) => match v6.split_once(']') {
            Some((host, after)) => (host, after.strip_prefix(':')),
            None => (v6, None),
        },
        None => match host_port.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (host_port, None),
        },
    };
    let port = port.and_then(|p| p.parse().ok()).unwrap_or(default_port);
    (host.to_owned(), port, tls)
}

#[cfg(test)]
mod tests {
    use super::parse_broker;

    #[test]
    fn broker_urls() {
        assert_eq!(
            parse_broker("mqtt://10.0.0.5"),
            ("10.0.0.5".into(), 1883, false)
        );
        assert_eq!(
            parse_broker("mqtts://broker.example"),
            ("broker.example".into(), 8883, true)
        );
        assert_eq!(
            parse_broker("MQTTS://[::1]:9883/x"),
            ("::1".into(), 9883, true)
        );
        assert_eq!(parse_broker("mqtt://u@h:1884"), ("h".into(), 1884, false));
    }
}
