//! The MQTT publisher through a real Mosquitto broker, received by `mosquitto_sub`.
//!
//! The test starts its own `mosquitto` on a free loopback port (config in a temp
//! dir) and stops it at the end. Needs the Debian packages `mosquitto` and
//! `mosquitto-clients`; fails with a clear message if they are missing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::*;
use hazgate_sim::scenario::PayloadFormat;
use hazgate_sim::{Clock, Publisher, PublisherOptions};

/// Kills the child process (started by this test) when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Broker {
    port: u16,
    _proc: Killed,
    _dir: tempfile::TempDir,
}

async fn start_broker() -> Broker {
    start_broker_with(|_| "allow_anonymous true\n".to_owned()).await
}

/// Start mosquitto; `extra` gets the temp dir and returns more config lines.
async fn start_broker_with(extra: impl FnOnce(&Path) -> String) -> Broker {
    let bin = find_tool("mosquitto", "mosquitto");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("mosquitto.conf");
    let more = extra(dir.path());
    std::fs::write(
        &conf,
        format!("listener {port} 127.0.0.1\npersistence false\n{more}"),
    )
    .unwrap();
    let log = std::fs::File::create(dir.path().join("mosquitto.log")).unwrap();
    let child = Command::new(bin)
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let proc = Killed(child);
    wait_until(
        Duration::from_secs(10),
        "mosquitto listening",
        || async move {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
        },
    )
    .await;
    Broker {
        port,
        _proc: proc,
        _dir: dir,
    }
}

/// Start `mosquitto_sub` for `topic`, exiting after `count` messages, and return its
/// output lines (`topic payload`). Its stdout is a pipe, so lines arrive when it
/// exits; the publisher publishes continuously, so messages sent before the
/// subscription is in place are simply not counted.
fn subscribe(port: u16, topic: &str, count: usize) -> (Killed, mpsc::Receiver<String>) {
    subscribe_with(port, topic, count, &[])
}

fn subscribe_with(
    port: u16,
    topic: &str,
    count: usize,
    extra: &[&str],
) -> (Killed, mpsc::Receiver<String>) {
    let bin = find_tool("mosquitto_sub", "mosquitto-clients");
    let mut child = Command::new(bin)
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-t",
            topic,
            "-v",
        ])
        .args(extra)
        .args(["-C", &count.to_string(), "-W", "30"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (Killed(child), rx)
}

fn messages(rx: &mpsc::Receiver<String>, prefix: &str, n: usize) -> Vec<(String, String)> {
    let mut out = Vec::new();
    while out.len() < n {
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("only {} of {n} messages arrived: {out:?}", out.len()));
        if let Some((topic, payload)) = line.split_once(' ') {
            if topic.starts_with(prefix) {
                out.push((topic.to_owned(), payload.to_owned()));
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_payloads_at_qos1_through_mosquitto() {
    let broker = start_broker().await;
    let (_sub, rx) = subscribe(broker.port, "mine/#", 9);
    let s = load("coal-gas-leak.toml");
    let clock = Clock::manual(1300.0);
    let handle = Publisher::start(
        &s,
        PublisherOptions {
            port: broker.port,
            client_id: "hazgate-sim-test-json".into(),
            clock: Some(clock),
            epoch_ms: Some(1_700_000_000_000),
            interval_ms: Some(50),
            ..PublisherOptions::default()
        },
    )
    .unwrap();
    let msgs = messages(&rx, "mine/", 9);
    let mut seen = std::collections::BTreeSet::new();
    for (topic, payload) in &msgs {
        seen.insert(topic.clone());
        let v: serde_json::Value =
            serde_json::from_str(payload).unwrap_or_else(|e| panic!("{payload}: {e}"));
        assert_eq!(v["ts"], 1_700_001_300_000u64, "{payload}");
        assert_eq!(v["quality"], "good", "{payload}");
        let value = v["value"].as_f64().unwrap();
        if topic.ends_with("/ch4_t1") {
            assert!((1.6..1.8).contains(&value), "face CH4 at 1300 s: {value}");
        }
    }
    let want: std::collections::BTreeSet<String> = ["ch4_t1", "ch4_heading", "co"]
        .iter()
        .map(|p| format!("mine/kj-substation-1/{p}"))
        .collect();
    assert_eq!(seen, want);
    // QoS 1: the broker acknowledges.
    wait_until(Duration::from_secs(10), "PUBACKs", || async {
        handle.status().acked >= 3
    })
    .await;
    assert!(handle.status().connected);
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_payloads_and_topic_override() {
    let broker = start_broker().await;
    let (_sub, rx) = subscribe(broker.port, "test/#", 6);
    let s = load("chemical-tank-farm.toml");
    let handle = Publisher::start(
        &s,
        PublisherOptions {
            port: broker.port,
            client_id: "hazgate-sim-test-plain".into(),
            clock: Some(Clock::manual(1100.0)),
            topic: Some("test/{point}/{device}".into()),
            payload: Some(PayloadFormat::Plain),
            qos: Some(0),
            interval_ms: Some(50),
            ..PublisherOptions::default()
        },
    )
    .unwrap();
    for (topic, payload) in messages(&rx, "test/", 6) {
        let value: f64 = payload
            .parse()
            .unwrap_or_else(|e| panic!("{topic} {payload}: {e}"));
        match topic.as_str() {
            "test/lel/lel-detector-1" => assert!((45.0..55.0).contains(&value), "%LEL {value}"),
            "test/h2s/h2s-detector-1" => assert!(value < 1.5, "H2S {value}"),
            "test/t101_pressure/tank-plc" => assert!((1.3..1.5).contains(&value), "MPa {value}"),
            other => panic!("unexpected topic {other}"),
        }
    }
    handle.shutdown().await;
}

#[tokio::test]
async fn unreachable_broker_is_counted_not_fatal() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let s = load("coal-gas-leak.toml");
    let handle = Publisher::start(
        &s,
        PublisherOptions {
            port,
            interval_ms: Some(20),
            ..PublisherOptions::default()
        },
    )
    .unwrap();
    wait_until(
        Duration::from_secs(10),
        "connection errors counted",
        || async { handle.status().errors >= 1 },
    )
    .await;
    assert!(!handle.status().connected);
    handle.shutdown().await;
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A test CA and a server certificate for 127.0.0.1, made with the openssl CLI.
fn make_certs(dir: &Path) {
    let openssl = find_tool("openssl", "openssl");
    let p = |f: &str| dir.join(f);
    run(Command::new(&openssl)
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=hazgate-sim test CA", "-keyout"])
        .arg(p("ca.key"))
        .arg("-out")
        .arg(p("ca.crt")));
    run(Command::new(&openssl)
        .args([
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
        ])
        .arg(p("server.key"))
        .arg("-out")
        .arg(p("server.csr")));
    std::fs::write(p("san.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    run(Command::new(&openssl)
        .args(["x509", "-req", "-days", "1", "-CAcreateserial", "-in"])
        .arg(p("server.csr"))
        .arg("-CA")
        .arg(p("ca.crt"))
        .arg("-CAkey")
        .arg(p("ca.key"))
        .arg("-out")
        .arg(p("server.crt"))
        .arg("-extfile")
        .arg(p("san.ext")));
    let passwd = find_tool("mosquitto_passwd", "mosquitto");
    run(Command::new(passwd)
        .args(["-b", "-c"])
        .arg(p("passwd"))
        .args(["sim", "s3cret"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_ca_file_and_password() {
    let mut certs = None;
    let broker = start_broker_with(|dir| {
        make_certs(dir);
        certs = Some(dir.to_path_buf());
        // The broker runs as the test's user, so it can read the temp dir.
        format!(
            "user {}\nallow_anonymous false\npassword_file {}\ncafile {}\ncertfile {}\nkeyfile {}\n",
            std::env::var("USER").unwrap_or_else(|_| "root".into()),
            dir.join("passwd").display(),
            dir.join("ca.crt").display(),
            dir.join("server.crt").display(),
            dir.join("server.key").display(),
        )
    })
    .await;
    let dir = certs.unwrap();
    let ca = dir.join("ca.crt");
    let ca_arg = ca.to_string_lossy().into_owned();
    let (_sub, rx) = subscribe_with(
        broker.port,
        "mine/#",
        3,
        &["--cafile", &ca_arg, "-u", "sim", "-P", "s3cret"],
    );
    let s = load("coal-gas-leak.toml");
    let handle = Publisher::start(
        &s,
        PublisherOptions {
            port: broker.port,
            client_id: "hazgate-sim-test-tls".into(),
            username: Some("sim".into()),
            password: Some("s3cret".into()),
            ca_file: Some(ca.clone()),
            interval_ms: Some(50),
            ..PublisherOptions::default()
        },
    )
    .unwrap();
    let msgs = messages(&rx, "mine/", 3);
    assert!(
        msgs.iter().all(|(_, p)| p.contains("\"quality\":\"good\"")),
        "{msgs:?}"
    );
    assert!(handle.status().connected);
    handle.shutdown().await;

    // A wrong password is refused and counted, not fatal.
    let bad = Publisher::start(
        &s,
        PublisherOptions {
            port: broker.port,
            client_id: "hazgate-sim-test-badpw".into(),
            username: Some("sim".into()),
            password: Some("wrong".into()),
            ca_file: Some(ca),
            interval_ms: Some(50),
            ..PublisherOptions::default()
        },
    )
    .unwrap();
    wait_until(
        Duration::from_secs(10),
        "refused connection counted",
        || async { bad.status().errors >= 1 },
    )
    .await;
    assert!(!bad.status().connected);
    bad.shutdown().await;
}
