//! The `[uplink]` keys: defaults, the mapping to `UplinkOptions`, and one test per
//! check.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use hazgate::config::{Config, ConfigError, Diagnostic, Problem};
use hazgate::uplink::{Format, UplinkTransport};

const SITE: &str = r#"
[site]
id = "MINE01"
name = "test mine"
kind = "chemical_plant"
rule_profile = "test"

[[devices]]
id = "D"
protocol = "mqtt"
broker = "mqtt://127.0.0.1:1883"

[[points]]
id = "CH4-1"
name = "methane"
kind = "ch4"
unit = "%CH4"
range_min = 0.0
range_max = 4.0
device = "D"
mqtt = { topic = "t/ch4" }
  [[points.thresholds]]
  name = "报警"
  direction = "high"
  trigger = 1.0
  restore = 0.9
  colour = "orange"
"#;

fn config(uplink: &str) -> Result<Config, Vec<Diagnostic>> {
    match Config::from_toml_str(&format!("{SITE}\n[uplink]\n{uplink}"), "t.toml") {
        Ok(c) => Ok(c),
        Err(ConfigError::Invalid(d)) => Err(d.items),
        Err(other) => panic!("{other}"),
    }
}

fn assert_one(uplink: &str, problem: Problem, path: &str, needle: &str) {
    let found = config(uplink)
        .err()
        .unwrap_or_else(|| panic!("valid: {uplink}"));
    assert!(
        found.iter().any(|d| d.problem == problem
            && d.path.to_string() == path
            && d.message.contains(needle)),
        "no {problem:?} at {path} with {needle:?} in {found:#?}"
    );
}

#[test]
fn defaults_map_to_options() {
    let c = match config("transport = \"mqtt\"\nurl = \"mqtts://province.example\"\n") {
        Ok(c) => c,
        Err(d) => panic!("{d:#?}"),
    };
    let spec = c.engine_spec();
    let o = c.uplink_options(&spec).unwrap();
    assert_eq!(o.site, "MINE01");
    assert_eq!(o.format, Format::Json);
    assert_eq!(o.utc_offset_min, 480);
    assert_eq!(o.realtime_interval_ms, 30_000);
    assert_eq!(o.realtime_batch_max, 1_000);
    assert_eq!(o.heartbeat_interval_ms, 60_000);
    assert_eq!(o.retry_max_ms, 2_000);
    assert!(o.realtime);
    assert!(o.statistics);
    let UplinkTransport::Mqtt(m) = &o.transport else {
        panic!("mqtt expected")
    };
    assert_eq!((m.host.as_str(), m.port), ("province.example", 8883));
    assert!(m.tls.is_some());
    assert_eq!(m.client_id, "hazgate-MINE01");
    assert_eq!(m.topic_prefix, "hazgate");
    let g = &o.grades["CH4-1"];
    assert_eq!(
        (g[0].name.as_str(), g[0].trigger, g[0].direction),
        ("报警", 1.0, "high")
    );
}

#[test]
fn https_with_sm4_maps_to_an_encrypting_transport() {
    let c = config(
        "transport = \"https\"\nurl = \"https://feed.example/api\"\nsite_code = \"P-001\"\nformat = \"kj_text\"\n\
         appid = \"a\"\nappsecret = \"s\"\nsm4_key_hex = \"0123456789abcdeffedcba9876543210\"\n\
         sm4_iv_hex = \"00000000000000000000000000000000\"\nsend_statistics = false\n",
    )
    .unwrap();
    let o = c.uplink_options(&c.engine_spec()).unwrap();
    assert_eq!((o.site.as_str(), o.format), ("P-001", Format::KjText));
    assert!(!o.statistics);
    let UplinkTransport::Http(h) = &o.transport else {
        panic!("http expected")
    };
    assert!(h.sm4.is_some());
    assert_eq!(
        (h.appid.as_deref(), h.appsecret.as_deref()),
        (Some("a"), Some("s"))
    );
}

#[test]
fn bad_numbers_are_reported() {
    let base = "transport = \"mqtt\"\nurl = \"mqtt://p\"\n";
    assert_one(
        &format!("{base}realtime_batch_max = 0\n"),
        Problem::Value,
        "uplink.realtime_batch_max",
        "greater than 0",
    );
    assert_one(
        &format!("{base}retry_max_ms = 0\n"),
        Problem::Value,
        "uplink.retry_max_ms",
        "greater than 0",
    );
    assert_one(
        &format!("{base}request_timeout_ms = 0\n"),
        Problem::Value,
        "uplink.request_timeout_ms",
        "greater than 0",
    );
    assert_one(
        &format!("{base}utc_offset_min = 900\n"),
        Problem::Value,
        "uplink.utc_offset_min",
        "not a UTC offset",
    );
}

#[test]
fn topic_prefix_and_client_id_are_checked() {
    let base = "transport = \"mqtt\"\nurl = \"mqtt://p\"\n";
    assert_one(
        &format!("{base}topic_prefix = \"a/+/b\"\n"),
        Problem::Value,
        "uplink.topic_prefix",
        "without `+` or `#`",
    );
    assert_one(
        &format!("{base}client_id = \" \"\n"),
        Problem::Value,
        "uplink.client_id",
        "must not be empty",
    );
}

#[test]
fn client_certificate_needs_its_key_and_back() {
    let base = "transport = \"mqtt\"\nurl = \"mqtts://p\"\n";
    assert_one(
        &format!("{base}client_cert_file = \"c.pem\"\n"),
        Problem::Missing,
        "uplink.client_key_file",
        "needs `client_key_file`",
    );
    assert_one(
        &format!("{base}client_key_file = \"k.pem\"\n"),
        Problem::Missing,
        "uplink.client_cert_file",
        "needs `client_cert_file`",
    );
}

#[test]
fn sm4_key_and_iv_are_checked() {
    let https = "transport = \"https\"\nurl = \"https://p\"\n";
    assert_one(
        &format!(
            "{https}sm4_key_hex = \"0123\"\nsm4_iv_hex = \"{}\"\n",
            "0".repeat(32)
        ),
        Problem::Value,
        "uplink.sm4_key_hex",
        "32 hex digits",
    );
    assert_one(
        &format!("{https}sm4_key_hex = \"{}\"\n", "0".repeat(32)),
        Problem::Missing,
        "uplink.sm4_iv_hex",
        "needs `sm4_iv_hex`",
    );
    assert_one(
        &format!("{https}sm4_iv_hex = \"{}\"\n", "0".repeat(32)),
        Problem::Missing,
        "uplink.sm4_key_hex",
        "needs `sm4_key_hex`",
    );
    assert_one(
        &format!(
            "transport = \"mqtt\"\nurl = \"mqtt://p\"\nsm4_key_hex = \"{0}\"\nsm4_iv_hex = \"{0}\"\n",
            "0".repeat(32)
        ),
        Problem::Value,
        "uplink.sm4_key_hex",
        "`transport = \"https\"` only",
    );
}

#[test]
fn mqtt_credentials_do_not_apply_to_https() {
    assert_one(
        "transport = \"https\"\nurl = \"https://p\"\nusername = \"u\"\n",
        Problem::Value,
        "uplink.username",
        "`transport = \"mqtt\"` only",
    );
}

#[test]
fn unknown_uplink_keys_are_errors() {
    assert_one(
        "transport = \"mqtt\"\nurl = \"mqtt://p\"\ntopic_prefx = \"x\"\n",
        Problem::UnknownKey,
        "uplink.topic_prefx",
        "",
    );
}
