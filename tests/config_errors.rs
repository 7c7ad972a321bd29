//! One fixture per class of problem: the exact key path, line and column are
//! reported, and a file with many problems has all of them reported at once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use hazgate::config::{Config, ConfigError, Diagnostic, Problem};

fn fixture(name: &str) -> String {
    format!(
        "{}/tests/fixtures/config/{name}.toml",
        env!("CARGO_MANIFEST_DIR")
    )
}

fn problems(name: &str) -> Vec<Diagnostic> {
    match Config::load_with_env(fixture(name), Vec::new()) {
        Ok(_) => panic!("{name} should be invalid"),
        Err(ConfigError::Invalid(diagnostics)) => diagnostics.items,
        Err(other) => panic!("{name}: {other}"),
    }
}

/// Asserts that `name` reports exactly one problem of this class, at this path and line.
fn assert_single(name: &str, problem: Problem, path: &str, line: usize, needle: &str) {
    let found = problems(name);
    assert_eq!(found.len(), 1, "{name}: {found:#?}");
    assert_has(&found, problem, path, line, needle);
}

fn assert_has(found: &[Diagnostic], problem: Problem, path: &str, line: usize, needle: &str) {
    let hit = found
        .iter()
        .find(|d| d.path.to_string() == path && d.problem == problem);
    let Some(hit) = hit else {
        panic!("no {problem:?} at {path} in {found:#?}");
    };
    assert_eq!(hit.location.map(|l| l.line), Some(line), "{hit:?}");
    assert!(
        hit.message.contains(needle),
        "{:?} lacks {needle:?}",
        hit.message
    );
}

#[test]
fn minimal_fixture_is_valid() {
    Config::load_with_env(fixture("valid-minimal"), Vec::new()).unwrap();
}

#[test]
fn syntax_error_has_the_parser_place() {
    let found = problems("syntax");
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].problem, Problem::Syntax);
    let location = found[0].location.unwrap();
    assert_eq!((location.line, location.column), (37, 13));
}

#[test]
fn unknown_key_with_hint() {
    // The removed `restore` also leaves the power-cut grade without one: both reported.
    let found = problems("unknown-key");
    assert_eq!(found.len(), 2, "{found:#?}");
    assert_has(
        &found,
        Problem::UnknownKey,
        "points[0].thresholds[1].restor",
        38,
        "did you mean `restore`",
    );
    assert_has(
        &found,
        Problem::PowerCut,
        "points[0].thresholds[1]",
        34,
        "explicit `restore`",
    );
    assert_eq!(found[1].location.unwrap().column, 3);
}

#[test]
fn wrong_type() {
    assert_single(
        "wrong-type",
        Problem::Type,
        "points[0].range_max",
        23,
        "expected f64",
    );
}

#[test]
fn missing_required_key_points_at_its_table() {
    assert_single(
        "missing-key",
        Problem::Missing,
        "points[0].device",
        17,
        "`device`",
    );
}

#[test]
fn duplicate_point_id() {
    assert_single(
        "duplicate-id",
        Problem::Duplicate,
        "points[1].id",
        43,
        "points[0]",
    );
}

#[test]
fn unknown_device_reference() {
    assert_single(
        "unknown-reference",
        Problem::Reference,
        "points[0].device",
        25,
        "`D9`",
    );
}

#[test]
fn grades_out_of_order() {
    let found = problems("grade-order");
    assert_has(
        &found,
        Problem::GradeOrder,
        "points[0].thresholds[1].trigger",
        37,
        "must be above",
    );
}

#[test]
fn restore_on_the_wrong_side() {
    assert_single(
        "restore-side",
        Problem::Restore,
        "points[0].thresholds[1].restore",
        38,
        "wrong side",
    );
}

#[test]
fn power_cut_with_delay_and_deadband() {
    let found = problems("power-cut-delay");
    assert_eq!(found.len(), 3, "{found:#?}");
    assert_has(
        &found,
        Problem::PowerCut,
        "points[0].thresholds[1].deadband",
        38,
        "deadband",
    );
    assert_has(
        &found,
        Problem::PowerCut,
        "points[0].thresholds[1].off_delay_ms",
        39,
        "2 s",
    );
    assert_has(
        &found,
        Problem::PowerCut,
        "points[0].thresholds[1]",
        34,
        "explicit `restore`",
    );
}

#[test]
fn coal_safety_point_polled_too_slowly() {
    assert_single(
        "poll-interval",
        Problem::PollInterval,
        "points[0].device",
        26,
        "30000 ms",
    );
}

#[test]
fn forced_modbus_block_too_large() {
    assert_single(
        "modbus-block",
        Problem::ModbusBlock,
        "devices[0].blocks[0].count",
        19,
        "126 registers",
    );
}

#[test]
fn overlapping_addresses_with_different_types() {
    assert_single(
        "address-overlap",
        Problem::AddressOverlap,
        "points[1].modbus.address",
        49,
        "`CH4`",
    );
}

#[test]
fn binding_does_not_match_protocol() {
    let found = problems("binding");
    assert_eq!(found.len(), 2, "{found:#?}");
    assert_has(
        &found,
        Problem::Binding,
        "points[1].mqtt",
        49,
        "MQTT binding on Modbus device",
    );
    assert_has(
        &found,
        Problem::Binding,
        "points[1].modbus",
        42,
        "needs a [points.modbus]",
    );
}

#[test]
fn threshold_outside_sensor_range() {
    assert_single(
        "threshold-range",
        Problem::Range,
        "points[0].thresholds[1].trigger",
        37,
        "sensor range",
    );
}

#[test]
fn bit_number_out_of_register() {
    assert_single(
        "bit",
        Problem::ModbusBinding,
        "points[1].modbus.bit",
        49,
        "0–15",
    );
}

#[test]
fn data_type_not_allowed_in_table() {
    assert_single(
        "table-type",
        Problem::ModbusBinding,
        "points[1].modbus.data_type",
        49,
        "only `bool`",
    );
}

#[test]
fn many_problems_are_all_reported_at_once() {
    let found = problems("many-errors");
    let expected: &[(Problem, &str, usize)] = &[
        (Problem::Value, "hazard_sources[0].grade", 11),
        (Problem::ModbusBlock, "devices[0].max_block_registers", 17),
        (Problem::Duplicate, "devices[1].id", 20),
        // Point 0: an unknown key AND three grade problems in the same point.
        (Problem::UnknownKey, "points[0].colour", 31),
        (Problem::GradeOrder, "points[0].thresholds[1].trigger", 42),
        (Problem::Restore, "points[0].thresholds[1].restore", 43),
        (Problem::PowerCut, "points[0].thresholds[1].on_delay_ms", 44),
        // Point 1: two type errors and three semantic ones in the same point.
        (Problem::Range, "points[1].range_max", 53),
        (Problem::Reference, "points[1].device", 54),
        (Problem::Reference, "points[1].hazard_source", 55),
        (Problem::Type, "points[1].stale_factor", 56),
        (Problem::Type, "points[1].interval_ms", 57),
        (Problem::Value, "api.listen", 60),
        (Problem::Value, "api.tokens[0].sha256", 64),
    ];
    for (problem, path, line) in expected {
        assert_has(&found, *problem, path, *line, "");
    }
    assert_eq!(found.len(), expected.len(), "{found:#?}");
    // Sorted by place in the file.
    let lines: Vec<usize> = found.iter().map(|d| d.location.unwrap().line).collect();
    let mut sorted = lines.clone();
    sorted.sort();
    assert_eq!(lines, sorted);
}

#[test]
fn errors_in_later_sections() {
    let text = r#"
[site]
id = "S"
name = "plant"
kind = "chemical_plant"
rule_profile = "p"

[sinks.influxdb]
url = "ftp://db"
api = "v2"
database = "x"

[uplink]
transport = "https"
url = "mqtt://province"

[storage]
raw_retention_days = 7

[alarm_rate]
flood_start_per_10min = 4
flood_end_per_10min = 5
"#;
    let Err(ConfigError::Invalid(diagnostics)) = Config::from_toml_str(text, "inline.toml") else {
        panic!("should be invalid");
    };
    let found = diagnostics.items;
    assert_has(
        &found,
        Problem::Value,
        "sinks.influxdb.url",
        9,
        "scheme `ftp`",
    );
    assert_has(
        &found,
        Problem::Missing,
        "sinks.influxdb.org",
        8,
        "needs `org`",
    );
    assert_has(
        &found,
        Problem::Missing,
        "sinks.influxdb.bucket",
        8,
        "needs `bucket`",
    );
    assert_has(
        &found,
        Problem::Value,
        "sinks.influxdb.database",
        11,
        "does not apply",
    );
    assert_has(&found, Problem::Value, "uplink.url", 15, "scheme `mqtt`");
    assert_has(
        &found,
        Problem::Value,
        "storage.raw_retention_days",
        18,
        "30",
    );
    assert_has(
        &found,
        Problem::Value,
        "alarm_rate.flood_end_per_10min",
        22,
        "cannot end above",
    );
    assert_eq!(found.len(), 7, "{found:#?}");
}

#[test]
fn equal_triggers_need_a_more_severe_later_grade() {
    // T2 return airway: alarm and cut both at 1.0 % is valid …
    let base = std::fs::read_to_string("tests/fixtures/config/grade-order.toml").unwrap();
    let equal_cut = base.replace("trigger = 0.8", "trigger = 1.0");
    let config = hazgate::config::Config::from_toml_str(&equal_cut, "equal-cut.toml");
    assert!(config.is_ok(), "{:?}", config.err());
    // … but a second grade at the same trigger that is no more severe is not.
    let equal_plain = equal_cut
        .replace("power_cut = true", "")
        .replace("colour = \"red\"", "colour = \"orange\"");
    let err = hazgate::config::Config::from_toml_str(&equal_plain, "equal-plain.toml")
        .expect_err("an error");
    assert!(
        err.to_string().contains("thresholds[1].trigger")
            || format!("{err:?}").contains("thresholds[1].trigger"),
        "{err:?}"
    );
}

#[test]
fn store_size_limit_maps_to_the_store_and_is_checked() {
    let base = std::fs::read_to_string("tests/fixtures/config/valid-minimal.toml").unwrap();
    let ok = hazgate::config::Config::from_toml_str(
        &format!("{base}\n[storage]\nmax_size_mb = 512\n"),
        "limit.toml",
    )
    .unwrap();
    assert_eq!(ok.store_options().disk_limit_bytes, Some(512 * 1024 * 1024));
    let err = hazgate::config::Config::from_toml_str(
        &format!("{base}\n[storage]\nmax_size_mb = 1\n"),
        "tiny.toml",
    )
    .expect_err("too small");
    assert!(format!("{err:?}").contains("max_size_mb"), "{err:?}");
}

#[test]
fn safety_actions_that_could_not_act_and_bad_linkage_are_rejected() {
    let found = problems("actions");
    // The first action is fine: nothing is reported under actions[0].
    assert!(
        !found
            .iter()
            .any(|d| d.path.to_string().starts_with("actions[0]")),
        "{found:#?}"
    );
    assert_has(
        &found,
        Problem::Reference,
        "actions[1].triggers[0]",
        72,
        "no point with id `NOPE`",
    );
    assert_has(
        &found,
        Problem::Action,
        "actions[1].triggers[1]",
        72,
        "point `FEED` has no power-cut grade",
    );
    assert_has(
        &found,
        Problem::Reference,
        "actions[1].relays[0].device",
        74,
        "no device with id `GHOST`",
    );
    assert_has(
        &found,
        Problem::Action,
        "actions[1].relays[1].table",
        78,
        "read-only area",
    );
    assert_has(
        &found,
        Problem::Action,
        "actions[1].relays[2].address",
        82,
        "no point describes coil 7 on device `D`",
    );
    assert_has(
        &found,
        Problem::Value,
        "actions[1].relays[2].cut_value",
        83,
        "a coil is 0 or 1, not 2",
    );
    assert_has(
        &found,
        Problem::Action,
        "actions[1].relays[3].address",
        86,
        "already driven by actions[0].relays[0]",
    );
    assert_has(
        &found,
        Problem::Reference,
        "actions[1].relays[3].feedback",
        87,
        "no point with id `NO-FEED`",
    );
    assert_has(
        &found,
        Problem::Missing,
        "actions[2].triggers",
        89,
        "needs `triggers`",
    );
    assert_has(
        &found,
        Problem::Missing,
        "actions[2].relays",
        89,
        "at least one",
    );
    assert_has(
        &found,
        Problem::Value,
        "linkage[0].url",
        94,
        "scheme `ftp` is not allowed",
    );
    assert_has(&found, Problem::Value, "linkage[0].on", 95, "at least one");
    assert_has(
        &found,
        Problem::Reference,
        "linkage[0].points[0]",
        96,
        "no point with id `NOPE2`",
    );
    assert_eq!(found.len(), 13, "{found:#?}");
}
