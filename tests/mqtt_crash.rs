//! `kill -9` of `hazgate run` in the middle of an MQTT stream loses nothing.
//!
//! A publisher (`mosquitto_pub -l -q 1`) sends numbered messages to a real Mosquitto
//! at a steady rate; the gateway, the real binary on a persistent session, is killed
//! with SIGKILL three times while they flow and started again at once. Once every
//! message has reached the broker and the gateway has caught up, the store must hold
//! every number: a message is acknowledged to the broker only after its reading is
//! committed, so what a kill takes from the gateway the broker sends again. The last
//! run's `/metrics` then shows every message it received acknowledged.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/mosquitto.rs"]
mod mosquitto;

use mosquitto::Mosquitto;
use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Messages in the stream.
const MESSAGES: u64 = 12_000;
/// Sent in slices of this many every 10 ms: 4,000 messages/s.
const SLICE: u64 = 40;

const TOKEN: &str = "crash-test-viewer-5e0c";

fn config(port: u16, api_port: u16, db: &Path) -> String {
    let sha: String = hazgate::api::hash_token(TOKEN)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!(
        r#"
[site]
id = "140000000077"
name = "crash test site"
kind = "chemical_plant"
rule_profile = "gb-2022"

[storage]
path = "{}"

[api]
listen = "127.0.0.1:{api_port}"
  [[api.tokens]]
  name = "viewer"
  role = "viewer"
  sha256 = "{sha}"

[[devices]]
id = "GW-1"
protocol = "mqtt"
broker = "mqtt://127.0.0.1:{port}"
client_id = "hazgate-crash-test"
point_topic = "crash/{{point}}"

[[points]]
id = "seq"
name = "sequence"
kind = "other"
range_min = 0.0
range_max = 1e9
device = "GW-1"
mqtt = {{ ts_path = "ts" }}
"#,
        db.display()
    )
}

fn start(cfg: &Path, log: &Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    Command::new(env!("CARGO_BIN_EXE_hazgate"))
        .args(["run", "--config"])
        .arg(cfg)
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap()
}

/// The distinct values of point `seq` in the store (read while the gateway runs).
fn stored(db: &Path) -> Vec<u64> {
    let Ok(conn) = rusqlite::Connection::open_with_flags(
        db,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    ) else {
        return Vec::new();
    };
    let _ = conn.busy_timeout(Duration::from_secs(5));
    let Ok(mut st) = conn.prepare(
        "SELECT DISTINCT r.value FROM readings r JOIN points p ON p.pid = r.pid \
         WHERE p.id = 'seq' AND r.value IS NOT NULL ORDER BY r.value",
    ) else {
        return Vec::new();
    };
    st.query_map([], |r| r.get::<_, f64>(0))
        .unwrap()
        .map(|v| v.unwrap() as u64)
        .collect()
}

/// `GET /metrics` of the gateway.
fn metrics(api_port: u16) -> String {
    use std::io::Read;
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", api_port)) else {
        return String::new();
    };
    let _ = s.write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    text
}

/// The value of one sample line (`name{labels}`) in a metrics text.
fn metric(text: &str, sample: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(sample)?.trim().parse().ok())
}

fn missing(values: &[u64]) -> Vec<u64> {
    let have: std::collections::HashSet<u64> = values.iter().copied().collect();
    (1..=MESSAGES).filter(|v| !have.contains(v)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_an_mqtt_stream_loses_no_message() {
    let broker = Mosquitto::start().await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("crash.db");
    let cfg = dir.path().join("crash.toml");
    let log = dir.path().join("gateway.log");
    let api_port = mosquitto::free_port();
    std::fs::write(&cfg, config(broker.port, api_port, &db)).unwrap();

    // First run: subscribe (the session and its subscription now live in the broker).
    let mut gw = start(&cfg, &log);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !broker.log().contains("hazgate-crash-test")
        || !std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("connected")
    {
        assert!(Instant::now() < deadline, "gateway did not connect");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    let mut publisher = broker
        .pub_cmd()
        .args(["-t", "crash/seq", "-q", "1", "-l"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = publisher.stdin.take().unwrap();
    // Device timestamps one millisecond apart from now.
    let t0 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let feeder = std::thread::spawn(move || {
        let start = Instant::now();
        let mut sent = 0;
        while sent < MESSAGES {
            let mut chunk = String::new();
            for _ in 0..SLICE.min(MESSAGES - sent) {
                sent += 1;
                chunk += &format!("{{\"value\":{sent},\"ts\":{}}}\n", t0 + sent);
            }
            input.write_all(chunk.as_bytes()).unwrap();
            let due = start + Duration::from_millis(10 * sent / SLICE);
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
        }
        // Closing stdin ends mosquitto_pub once its messages are acknowledged.
    });

    // Three kills while the stream flows (it lasts about 3 s), each followed by a
    // restart at once.
    let mut kills = 0;
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(750)).await;
        let before = stored(&db).len();
        gw.kill().unwrap(); // SIGKILL
        gw.wait().unwrap();
        kills += 1;
        assert!(before > 0, "nothing stored before kill {kills}");
        gw = start(&cfg, &log);
    }

    feeder.join().unwrap();
    let status = publisher.wait().unwrap();
    assert!(status.success(), "mosquitto_pub failed: {status}");

    // Every message is in the broker; the gateway catches up.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut values = stored(&db);
    while !missing(&values).is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        values = stored(&db);
    }
    // The last run acknowledged every message it received, once stored.
    let device = "{device=\"GW-1\"}";
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut text = metrics(api_port);
    while metric(&text, &format!("hazgate_mqtt_unacknowledged{device}")) != Some(0.0)
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
        text = metrics(api_port);
    }
    let _ = Command::new("kill")
        .args(["-TERM", &gw.id().to_string()])
        .status();
    let exit = gw.wait().unwrap();
    let gone = missing(&stored(&db));
    if !gone.is_empty() {
        let broker_log = broker.log();
        let tail: Vec<&str> = broker_log
            .lines()
            .filter(|l| l.contains("hazgate-crash-test") || l.contains("New client"))
            .rev()
            .take(150)
            .collect();
        panic!(
            "{} of {MESSAGES} messages missing after {kills} kills (first: {:?}); gateway log:\n{}\nbroker log (last lines):\n{}",
            gone.len(),
            &gone[..gone.len().min(20)],
            std::fs::read_to_string(&log).unwrap_or_default(),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    assert!(exit.success(), "gateway exit after SIGTERM: {exit}");
    let m = |name: &str| metric(&text, &format!("{name}{device}"));
    assert_eq!(m("hazgate_mqtt_unacknowledged"), Some(0.0), "{text}");
    let received = m("hazgate_mqtt_messages_total").unwrap();
    assert!(received > 0.0, "{text}");
    assert_eq!(m("hazgate_mqtt_acks_total"), Some(received), "{text}");
    assert_eq!(m("hazgate_mqtt_rejected_total"), Some(0.0), "{text}");
    assert_eq!(m("hazgate_mqtt_online"), Some(1.0), "{text}");
}
