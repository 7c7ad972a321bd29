//! The `hazgate-sim` binary: `check` and `farm` with its status endpoint.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_hazgate-sim");

#[test]
fn check_accepts_good_and_lists_every_error_of_bad() {
    let ok = Command::new(BIN)
        .args(["check", "--scenario"])
        .arg(common::scenario_path("coal-gas-leak.toml"))
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "name = 1\nwat = 2\n[[devices]]\nid = \"d\"\nport = \"x\"\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["check", "--scenario"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("3 error(s)"), "{err}");
    assert!(err.contains("line 1, column 8: name"), "{err}");
    assert!(err.contains("line 2, column 1: wat"), "{err}");
    assert!(err.contains("line 5, column 8: devices[0].port"), "{err}");
}

#[test]
fn farm_prints_endpoints_and_serves_status() {
    let mut child = Command::new(BIN)
        .args([
            "farm",
            "--ephemeral-ports",
            "--speed",
            "60",
            "--seed",
            "9",
            "--status",
            "127.0.0.1:0",
            "--scenario",
        ])
        .arg(common::scenario_path("relay.toml"))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let endpoint: serde_json::Value =
        serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(endpoint["name"], "power-cut");
    let status: serde_json::Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    let url = status["status"].as_str().unwrap();
    let hostport = url
        .trim_start_matches("http://")
        .trim_end_matches("/status");
    let mut http = std::net::TcpStream::connect(hostport).unwrap();
    http.write_all(b"GET /status HTTP/1.1\r\n\r\n").unwrap();
    let mut resp = String::new();
    http.read_to_string(&mut resp).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let body: serde_json::Value =
        serde_json::from_str(resp.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(body["seed"], 9);
    assert_eq!(body["speed"], 60.0);
    assert_eq!(body["devices"][0]["relays"][0]["id"], "face-feeder");
}
