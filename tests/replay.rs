//! Replaying recorded readings through the engine.

mod common;

use common::*;
use hazgate::replay::replay;

#[test]
fn a_recorded_gas_leak_raises_escalates_and_returns() {
    let csv = "\
ts_ms,point,value
# a heading face: methane rising through alarm and cut, then falling
1700000000000,CH4-T1,0.40
1700000001000,CH4-T1,0.95
1700000002000,CH4-T1,1.05
1700000003000,CH4-T1,1.62
1700000004000,CH4-T1,1.10
1700000005000,CH4-T1,0.80
";
    let mut out = Vec::new();
    let summary = replay(spec(vec![methane_t1("CH4-T1")]), csv.as_bytes(), &mut out).unwrap();
    assert_eq!(summary.readings, 6);
    assert_eq!(summary.alarms_raised, 1);
    assert!(summary.bad_lines.is_empty());
    let lines: Vec<serde_json::Value> = String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let transitions: Vec<(&str, &str, f64)> = lines
        .iter()
        .map(|l| {
            (
                l["transition"].as_str().unwrap(),
                l["alarm"]["grade_name"].as_str().unwrap(),
                l["alarm"]["value"].as_f64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        transitions,
        vec![
            ("raised", "报警", 1.05),
            ("escalated", "断电", 1.62),
            ("returned_to_normal", "断电", 0.80)
        ]
    );
    assert_eq!(lines[0]["point"], "CH4-T1");
    assert_eq!(lines[0]["ts"], 1_700_000_002_000i64);
}

#[test]
fn malformed_lines_are_reported_and_skipped_and_bad_values_kept_as_bad_quality() {
    let csv = "\
1000,CH4-T1,0.4
2000,CH4-T1
x,CH4-T1,0.4
3000,NOPE,0.4
4000,CH4-T1,abc
5000,CH4-T1,0.4,cosmic
6000,CH4-T1,1.2,comm_fail
7000,CH4-T1,1.2,good
";
    let mut out = Vec::new();
    let summary = replay(spec(vec![methane_t1("CH4-T1")]), csv.as_bytes(), &mut out).unwrap();
    let bad: Vec<usize> = summary.bad_lines.iter().map(|(n, _)| *n).collect();
    assert_eq!(bad, vec![2, 3, 4, 6]);
    assert!(summary.bad_lines[2].1.contains("unknown point `NOPE`"));
    // `abc` is a reading with bad data (a sensor fault), and comm_fail raises nothing.
    assert_eq!(summary.readings, 4);
    let text = String::from_utf8(out).unwrap();
    assert!(text.contains("\"sensor_fault\""));
    assert!(
        text.contains("\"报警\""),
        "the good 1.2 raises the value alarm"
    );
}

#[test]
fn the_cli_replays_the_bundled_heading_gas_surge_against_the_coal_mine_example() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hazgate"))
        .args([
            "replay",
            "--config",
            "config/coal-mine.toml",
            "--input",
            "config/replay/heading-gas-surge.csv",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let events: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let face: Vec<(&str, &str)> = events
        .iter()
        .filter(|e| e["point"] == "CH4-2203-T1")
        .map(|e| {
            (
                e["transition"].as_str().unwrap(),
                e["alarm"]["grade_name"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        face,
        vec![
            ("raised", "报警"),
            ("escalated", "断电"),
            ("returned_to_normal", "断电")
        ]
    );
    // Points absent from the recording are not reported stale.
    assert!(events.iter().all(|e| e["event"] != "stale"));
    let colours: Vec<&str> = events
        .iter()
        .filter(|e| e["event"] == "risk")
        .map(|e| e["colour"].as_str().unwrap())
        .collect();
    assert_eq!(colours, vec!["orange", "red", "blue"]);
}

#[test]
fn the_cli_exits_non_zero_on_malformed_lines_and_names_them() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("bad.csv");
    std::fs::write(&csv, "1000,CH4-2203-T1,0.3\n2000,CH4-2203-T1\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hazgate"))
        .args(["replay", "--config", "config/coal-mine.toml", "--input"])
        .arg(&csv)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.csv:2: expected `ts_ms,point,value[,quality]`"),
        "{err}"
    );
}
