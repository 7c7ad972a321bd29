//! The MQTT device and binding keys: defaults, and one test per check.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use hazgate::config::{Config, ConfigError, Diagnostic, Problem};
use hazgate::engine::EngineSpec;
use hazgate::sources::mqtt::{self, driver::MqttVersion};

const SITE: &str = r#"
[site]
id = "T"
name = "test plant"
kind = "chemical_plant"
rule_profile = "test"
"#;

fn text(device: &str, points: &str) -> String {
    format!("{SITE}\n[[devices]]\nid = \"D\"\nprotocol = \"mqtt\"\n{device}\n{points}")
}

fn point(id: &str, mqtt: &str) -> String {
    let binding = if mqtt.is_empty() {
        String::new()
    } else {
        format!("mqtt = {mqtt}\n")
    };
    format!("[[points]]\nid = \"{id}\"\nname = \"{id}\"\nkind = \"other\"\nrange_min = 0.0\nrange_max = 100.0\ndevice = \"D\"\n{binding}")
}

fn problems(device: &str, points: &str) -> Vec<Diagnostic> {
    match Config::from_toml_str(&text(device, points), "t.toml") {
        Ok(_) => panic!("should be invalid:\n{device}\n{points}"),
        Err(ConfigError::Invalid(d)) => d.items,
        Err(other) => panic!("{other}"),
    }
}

fn assert_one(found: &[Diagnostic], problem: Problem, path: &str, needle: &str) {
    assert!(
        found.iter().any(|d| d.problem == problem
            && d.path.to_string() == path
            && d.message.contains(needle)),
        "no {problem:?} at {path} containing {needle:?} in {found:#?}"
    );
}

#[test]
fn defaults_and_build() {
    let config = Config::from_toml_str(
        &text(
            "broker = \"mqtts://broker.example\"\ntopic_prefix = \"p/\"\npoint_topic = \"+/{point}\"",
            &[point("A", r#"{ topic = "a" }"#), point("B", ""), point("C", r#"{ key = "c" }"#)].join("\n"),
        ),
        "t.toml",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let d = &config.devices[0];
    assert_eq!(d.mqtt_version(), 3);
    assert_eq!(d.max_payload_bytes(), 65_536);
    assert_eq!(d.max_json_depth(), 16);
    let mut spec: EngineSpec = config.engine_spec();
    let n = spec.points.len();
    let devices = mqtt::subscriptions(&config, &mut spec);
    assert_eq!(devices.len(), 1);
    let dev = &devices[0];
    assert_eq!(spec.points.len(), n + 1);
    assert_eq!(spec.points[n].id, "device:D");
    assert_eq!(dev.client_id, "hazgate-T-D");
    assert_eq!(
        (dev.broker.host.as_str(), dev.broker.port),
        ("broker.example", 8883)
    );
    assert!(dev.broker.tls.is_some());
    assert_eq!(dev.version, MqttVersion::V3);
    assert_eq!(dev.offline_after_ms, 2 * 10_000);
    assert_eq!(dev.router.filters(), vec!["p/a", "p/+/+"]);
    assert_eq!(dev.router.route("p/a").unwrap()[0].point.0, 0);
    assert_eq!(dev.router.route("p/x/B").unwrap()[0].point.0, 1);
    assert_eq!(dev.router.route("p/x/c").unwrap()[0].point.0, 2);
}

#[test]
fn mqtt_version_must_be_3_or_5() {
    let found = problems(
        "broker = \"mqtt://h\"\nmqtt_version = 4",
        &point("A", r#"{ topic = "a" }"#),
    );
    assert_one(
        &found,
        Problem::Value,
        "devices[0].mqtt_version",
        "3 (3.1.1) or 5",
    );
}

#[test]
fn tls_files_need_mqtts_and_come_in_pairs() {
    let found = problems(
        "broker = \"mqtt://h\"\nca_file = \"ca.pem\"\nclient_cert_file = \"c.pem\"",
        &point("A", r#"{ topic = "a" }"#),
    );
    assert_one(&found, Problem::Value, "devices[0].ca_file", "mqtts://");
    assert_one(
        &found,
        Problem::Value,
        "devices[0].client_cert_file",
        "mqtts://",
    );
    assert_one(
        &found,
        Problem::Missing,
        "devices[0].client_key_file",
        "needs `client_key_file`",
    );
    let found = problems(
        "broker = \"mqtts://h\"\nclient_key_file = \"k.pem\"",
        &point("A", r#"{ topic = "a" }"#),
    );
    assert_one(
        &found,
        Problem::Missing,
        "devices[0].client_cert_file",
        "needs `client_cert_file`",
    );
}

#[test]
fn mqtt_keys_do_not_apply_to_modbus() {
    let t = format!(
        "{SITE}\n[[devices]]\nid = \"M\"\nprotocol = \"modbus_tcp\"\nhost = \"h\"\nmqtt_version = 5\nca_file = \"x\"\npoint_topic = \"{{point}}\"\noffline_after_ms = 5\nmax_payload_bytes = 5\nmax_json_depth = 5\nclient_cert_file = \"c\"\nclient_key_file = \"k\"\n"
    );
    let Err(ConfigError::Invalid(d)) = Config::from_toml_str(&t, "t.toml") else {
        panic!("should be invalid")
    };
    for key in [
        "mqtt_version",
        "ca_file",
        "client_cert_file",
        "client_key_file",
        "point_topic",
        "offline_after_ms",
        "max_payload_bytes",
        "max_json_depth",
    ] {
        assert_one(
            &d.items,
            Problem::Binding,
            &format!("devices[0].{key}"),
            "does not apply",
        );
    }
}

#[test]
fn point_topic_needs_one_whole_point_level() {
    for (filter, needle) in [
        ("a/+", "exactly one level `{point}`"),
        ("a/{point}/{point}", "exactly one level"),
        ("#/{point}", "only be the last level"),
        ("a/x{point}", "whole levels"),
    ] {
        let found = problems(
            &format!("broker = \"mqtt://h\"\npoint_topic = \"{filter}\""),
            &point("A", ""),
        );
        assert_one(&found, Problem::Value, "devices[0].point_topic", needle);
    }
}

#[test]
fn points_need_a_topic_or_a_point_topic() {
    let found = problems(
        "broker = \"mqtt://h\"",
        &point("A", r#"{ value_path = "v" }"#),
    );
    assert_one(
        &found,
        Problem::Missing,
        "points[0].mqtt.topic",
        "point_topic",
    );
    let found = problems("broker = \"mqtt://h\"", &point("A", ""));
    assert_one(
        &found,
        Problem::Binding,
        "points[0].mqtt",
        "needs a [points.mqtt] binding",
    );
}

#[test]
fn keys_belong_to_point_topics_and_are_unique_levels() {
    let found = problems(
        "broker = \"mqtt://h\"",
        &point("A", r#"{ topic = "a", key = "k" }"#),
    );
    assert_one(&found, Problem::Binding, "points[0].mqtt.key", "has none");
    let found = problems(
        "broker = \"mqtt://h\"\npoint_topic = \"s/{point}\"",
        &[
            point("A", r#"{ key = "a/b" }"#),
            point("B", r#"{ key = "x" }"#),
            point("C", r#"{ key = "x" }"#),
            point("D/1", ""),
        ]
        .join("\n"),
    );
    assert_one(
        &found,
        Problem::Value,
        "points[0].mqtt.key",
        "not one topic level",
    );
    assert_one(
        &found,
        Problem::Duplicate,
        "points[2].mqtt.key",
        "already names point",
    );
    assert_one(
        &found,
        Problem::Binding,
        "points[3].id",
        "give the point an `mqtt.key`",
    );
}

#[test]
fn limits_must_be_positive() {
    let found = problems(
        "broker = \"mqtt://h\"\noffline_after_ms = 0\nmax_payload_bytes = 0\nmax_json_depth = 200",
        &point("A", r#"{ topic = "a" }"#),
    );
    assert_one(
        &found,
        Problem::Value,
        "devices[0].offline_after_ms",
        "greater than 0",
    );
    assert_one(
        &found,
        Problem::Value,
        "devices[0].max_payload_bytes",
        "greater than 0",
    );
    assert_one(
        &found,
        Problem::Value,
        "devices[0].max_json_depth",
        "1..=128",
    );
}
