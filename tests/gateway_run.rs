//! `hazgate run` as a user runs it: a config file, a simulated site, the real binary.
//! Methane above the cut level is read over Modbus, the power-cut alarm is committed
//! to the store, SIGTERM stops the gateway cleanly, `verify-store` vouches for the
//! store and catches tampering, and a restart continues the open alarm under its id.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use hazgate_sim::farm::{Farm, FarmOptions};
use hazgate_sim::scenario::Scenario;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

fn config(port: u16, db: &Path) -> String {
    format!(
        r#"
[site]
id = "140000000001"
name = "test colliery"
kind = "coal_mine"
rule_profile = "coal-2022"

[storage]
path = "{}"

[[hazard_sources]]
id = "HS-FACE"
name = "face"
grade = 1

[[devices]]
id = "KJ-1"
protocol = "modbus_tcp"
host = "127.0.0.1"
port = {port}
poll_interval_ms = 200

[[points]]
id = "CH4-T1"
name = "工作面甲烷"
kind = "ch4"
unit = "%CH4"
range_min = 0.0
range_max = 4.0
safety = true
device = "KJ-1"
hazard_source = "HS-FACE"
modbus = {{ table = "input", address = 0, data_type = "u16", scale = 0.01 }}
  [[points.thresholds]]
  name = "报警"
  direction = "high"
  trigger = 1.0
  restore = 1.0
  colour = "orange"
  [[points.thresholds]]
  name = "断电"
  direction = "high"
  trigger = 1.5
  restore = 1.0
  colour = "red"
  power_cut = true
"#,
        db.display()
    )
}

/// A running `hazgate run` whose stdout lines arrive on a channel.
struct Gateway {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Gateway {
    fn start(cfg: &Path) -> Gateway {
        let mut child = Command::new(env!("CARGO_BIN_EXE_hazgate"))
            .args(["run", "--config"])
            .arg(cfg)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, lines) = mpsc::channel();
        for out in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    let _ = tx.send(line);
                }
            });
        }
        Gateway {
            child,
            lines,
            seen: vec![],
        }
    }

    fn wait_line(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if pred(&line) {
                        return line;
                    }
                }
                Err(_) => panic!("no line {what} within 20 s; saw:\n{}", self.seen.join("\n")),
            }
        }
    }

    fn terminate(mut self) {
        let status = support::stop_with_sigterm(&mut self.child, Duration::from_secs(15));
        assert!(status.success(), "exit status {status}");
        self.wait_line("saying it stopped", |l| l.contains("stopped"));
    }
}

/// Whether the store holds any event of alarm `id`.
fn gw_seen_raise(db: &Path, id: i64) -> bool {
    let reader = hazgate::store::Reader::open(db).unwrap();
    !reader.alarm_history(id).unwrap().is_empty()
}

fn verify(cfg: &Path) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_hazgate"))
        .args(["verify-store", "--config"])
        .arg(cfg)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_cuts_power_in_the_store_stops_on_sigterm_and_keeps_alarm_ids() {
    // The relay scenario serves methane at a steady 1.60 % on input register 0.
    let scenario = Scenario::load(Path::new("simulators/scenarios/relay.toml")).unwrap();
    let farm = Farm::start(&scenario, FarmOptions::default())
        .await
        .unwrap();
    let port = farm.addr_of("power-cut").unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("hazgate.db");
    let cfg = dir.path().join("site.toml");
    std::fs::write(&cfg, config(port, &db)).unwrap();

    let mut gw = Gateway::start(&cfg);
    gw.wait_line("announcing the start", |l| l.contains("hazgate starting"));
    let raised = gw.wait_line("with the power-cut alarm", |l| {
        l.contains("alarm") && l.contains("raised") && l.contains("断电")
    });
    assert!(
        raised.contains("CH4-T1") && raised.contains("power_cut=true"),
        "{raised}"
    );
    gw.terminate();

    let reader = hazgate::store::Reader::open(&db).unwrap();
    let history = reader.alarm_history(1).unwrap();
    assert!(!history.is_empty(), "the alarm was committed to the store");
    let (ok, out) = verify(&cfg);
    assert!(ok, "{out}");
    assert!(out.contains("ok"), "{out}");

    // A restart continues the open episode: the still-high methane is alarm 1, under
    // its id, and no second alarm is raised for it.
    let mut gw = Gateway::start(&cfg);
    let start = gw.wait_line("announcing the start", |l| l.contains("hazgate starting"));
    assert!(start.contains("first_alarm_id=2"), "{start}");
    assert!(start.contains("restored_alarms=1"), "{start}");
    // Give it ten polls to (wrongly) raise a new episode.
    std::thread::sleep(Duration::from_secs(2));
    gw.terminate();
    assert!(
        !gw_seen_raise(&db, 2),
        "the restored episode must not be raised again under a new id"
    );
    let raised: Vec<String> = reader
        .alarm_history(1)
        .unwrap()
        .into_iter()
        .map(|e| e.transition)
        .filter(|t| t == "raised")
        .collect();
    assert_eq!(
        raised.len(),
        1,
        "alarm 1 was raised once, across the restart"
    );

    // Tampering with a committed alarm is caught.
    {
        let conn = rusqlite::Connection::open(&db).unwrap();
        let n = conn
            .execute("UPDATE alarm_events SET ts = ts + 1 WHERE alarm_id = 1", [])
            .unwrap();
        assert!(n >= 1);
    }
    let (ok, out) = verify(&cfg);
    assert!(!ok, "tampering must fail the check: {out}");
    assert!(out.contains("TAMPERED"), "{out}");
    farm.shutdown().await;
}

#[test]
fn run_refuses_a_foreign_database_file_and_leaves_it_alone() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("hazgate.db");
    std::fs::write(&db, b"this is somebody's spreadsheet, not a hazgate store").unwrap();
    let before = std::fs::read(&db).unwrap();
    let cfg = dir.path().join("site.toml");
    std::fs::write(&cfg, config(1, &db)).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_hazgate"))
        .args(["run", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("opening the store"), "{err}");
    assert_eq!(std::fs::read(&db).unwrap(), before, "the file is untouched");
}
