//! Scenario files: every shipped file is valid; a broken file is rejected with every
//! error and its place.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use hazgate_sim::scenario::ScenarioIssue;
use hazgate_sim::{Scenario, ScenarioError};

#[test]
fn every_shipped_scenario_is_valid() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    let mut n = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            Scenario::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            n += 1;
        }
    }
    assert!(n >= 6, "expected the shipped scenarios, found {n}");
}

const BAD: &str = r#"name = "bad"
colour = "red"

[[signals]]
id = "a"
keyframes = [[0, 1.0]]
noise_std = "loud"

[[signals]]
id = "b"
keyframes = [[0, 1.0], [0, 2.0]]

[[devices]]
id = "d1"
unit_id = 300

[[devices]]
id = "d2"
[[devices.points]]
id = "p"
table = "holding"
address = 0
type = "f32"
order = "xyzw"
signal = "b"

[[devices]]
id = "d3"
exceptions = [{ code = 9 }]
[[devices.points]]
id = "p"
table = "coil"
address = 0
type = "u16"
signal = "nope"
[[devices.points]]
id = "q"
table = "holding"
address = 0
type = "u32"
value = 1
[[devices.points]]
id = "r"
table = "holding"
address = 1
value = 1
[[devices.relays]]
id = "k"
coil = 5
feed_input = 0
bogus = true

[mqtt]
qos = 2
sensors = [{ device = "d", point = "p", signal = "zzz" }]
"#;

fn issues(text: &str) -> Vec<ScenarioIssue> {
    match Scenario::parse(text) {
        Err(ScenarioError::Invalid(i)) => i,
        other => panic!("expected invalid, got {other:?}"),
    }
}

fn find<'a>(issues: &'a [ScenarioIssue], path: &str) -> &'a ScenarioIssue {
    issues
        .iter()
        .find(|i| i.path == path)
        .unwrap_or_else(|| panic!("no issue at {path}; got:\n{issues:#?}"))
}

#[test]
fn every_error_is_reported_with_its_place() {
    let all = issues(BAD);
    let expect = [
        ("colour", 2, "unknown field"),
        ("signals[0].noise_std", 7, "expected f64"),
        ("signals[1].keyframes", 11, "strictly increasing"),
        ("devices[0].unit_id", 15, "expected u8"),
        ("devices[1].points[0].order", 24, "unknown variant"),
        (
            "devices[2].exceptions[0].code",
            29,
            "not a Modbus exception code",
        ),
        ("devices[2].points[0].type", 34, "must be bool"),
        ("devices[2].points[0].signal", 35, "unknown signal `nope`"),
        ("devices[2].points[2].address", 45, "already used by `q`"),
        ("devices[2].relays[0].bogus", 51, "unknown field"),
        ("mqtt.qos", 54, "0 or 1"),
        ("mqtt.sensors[0].signal", 55, "unknown signal `zzz`"),
    ];
    for (path, line, msg) in expect {
        let i = find(&all, path);
        assert_eq!(i.line, Some(line), "{i}");
        assert!(i.column.is_some(), "{i}");
        assert!(i.message.contains(msg), "{i}");
    }
    assert_eq!(all.len(), expect.len(), "{all:#?}");
    // The rendered error names every issue.
    let text = Scenario::parse(BAD).unwrap_err().to_string();
    assert!(text.contains("12 error(s)"), "{text}");
    assert!(
        text.contains("line 45, column 11: devices[2].points[2].address"),
        "{text}"
    );
}

#[test]
fn syntax_errors_have_line_and_column() {
    let all = issues("name = \"x\"\n[[devices]\nid = 3\nfoo = = 1\n");
    assert!(all.len() >= 2, "{all:#?}");
    assert_eq!(all[0].line, Some(2));
    assert!(all.iter().any(|i| i.line == Some(4)));
}

#[test]
fn missing_name_and_wrong_shapes() {
    let all = issues("devices = 3\n[mqtt]\ninterval_ms = 0\n");
    find(&all, "devices");
    find(&all, "mqtt.interval_ms");
    assert!(
        all.iter()
            .any(|i| i.message.contains("missing field `name`")),
        "{all:#?}"
    );
}

#[test]
fn endpoint_conflicts() {
    let all = issues(
        r#"name = "x"
[[devices]]
id = "a"
endpoint = "gw"
port = 1
[[devices]]
id = "b"
endpoint = "gw"
port = 2
framing = "rtu_over_tcp"
[[devices]]
id = "a"
endpoint = "gw"
port = 1
"#,
    );
    find(&all, "devices[1].framing");
    find(&all, "devices[1].port");
    find(&all, "devices[2]");
    find(&all, "devices[2].unit_id");
}

#[test]
fn scenarios_built_in_code_are_validated() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/faults.toml");
    let mut s = Scenario::load(&path).unwrap();
    s.validate().unwrap();
    s.devices[0].points[0].signal = Some("missing".into());
    let err = s.validate().unwrap_err().to_string();
    assert!(
        err.contains("devices[0].points[0].signal: unknown signal `missing`"),
        "{err}"
    );
}

#[test]
fn readme_example_scenario_is_valid() {
    let readme =
        std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
            .unwrap();
    let start = readme
        .find("```toml\n")
        .expect("a toml block in the README")
        + 8;
    let end = start + readme[start..].find("```").unwrap();
    Scenario::parse(&readme[start..end]).unwrap_or_else(|e| panic!("README example: {e}"));
}
