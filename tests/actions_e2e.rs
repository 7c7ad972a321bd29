//! Safety actions end to end: `hazgate run` (the real binary) against hazgate-sim's
//! relay model on a scenario clock the test moves by hand.
//!
//! Gas leak → alarm → cut written within 2 s → the feed drops → gas falls → restore
//! below the restore value; a faulty relay (feed never drops) raises 馈电异常; a trigger
//! whose device goes offline cuts (故障闭锁); a manual cut and release through the API
//! need the admin role and land in the audit log; a restart with a latched cut keeps
//! the power cut. Linkage: the cuts and the 馈电异常 reach a broadcast system over MQTT
//! (a real Mosquitto, `mosquitto_sub` as the receiver), the face methane over-limits a
//! personnel-location webhook over HTTP, each only what it asked for.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod uplink_support;

use hazgate_sim::clock::Clock;
use hazgate_sim::farm::{Farm, FarmHandle, FarmOptions};
use hazgate_sim::scenario::Scenario;
use serde_json::Value;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const ADMIN: &str = "e2e-admin-token-71c4";
const VIEWER: &str = "e2e-viewer-token-03aa";

/// Methane 0.5 % until 10 s, 1.6 % (above the 1.5 % cut level) from 11 s to 30 s,
/// 0.6 % (below the 1.0 % restore level) from 31 s. `kj` carries the relays: coil 0
/// (good, feed drops 1 s after the cut, returns 0.5 s after the restore), coil 1
/// (faulty: the feed never drops), coil 2 (good). `kj2` carries a second methane
/// sensor and goes offline (connection refused) at 60 s.
const SCENARIO: &str = r#"
name = "actions-e2e"
seed = 11

[[signals]]
id = "ch4"
unit = "%CH4"
keyframes = [[0, 0.5], [10, 0.5], [11, 1.6], [30, 1.6], [31, 0.6]]

[[devices]]
id = "kj"
port = 1
points = [{ id = "ch4", table = "input", address = 0, scale = 100, signal = "ch4" }]
relays = [
  { id = "face", coil = 0, feed_input = 0, cut_delay_ms = 1000, restore_delay_ms = 500 },
  { id = "heading", coil = 1, feed_input = 1, cut_delay_ms = 1000, faulty = true },
  { id = "district", coil = 2, feed_input = 2, cut_delay_ms = 500, restore_delay_ms = 500 },
]

[[devices]]
id = "kj2"
port = 1
offline = [{ from_s = 60, mode = "refuse" }]
points = [{ id = "ch4b", table = "input", address = 0, value = 30 }]
"#;

fn sha256_hex(s: &str) -> String {
    hazgate::api::hash_token(s)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn methane(id: &str, device: &str) -> String {
    format!(
        r#"
[[points]]
id = "{id}"
name = "甲烷 {id}"
kind = "ch4"
unit = "%CH4"
range_min = 0.0
range_max = 4.0
safety = true
device = "{device}"
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
"#
    )
}

fn bit(id: &str, table: &str, address: u16) -> String {
    format!(
        r#"
[[points]]
id = "{id}"
name = "{id}"
kind = "switch"
unit = ""
range_min = 0.0
range_max = 1.0
device = "kj"
modbus = {{ table = "{table}", address = {address}, data_type = "bool" }}
"#
    )
}

fn config(farm: &FarmHandle, db: &Path, api_port: u16, face_restore: &str) -> String {
    config_with(farm, db, api_port, face_restore, "")
}

fn config_with(
    farm: &FarmHandle,
    db: &Path,
    api_port: u16,
    face_restore: &str,
    extra: &str,
) -> String {
    let port = |d: &str| farm.addr_of(d).unwrap().port();
    let mut c = format!(
        r#"
[site]
id = "140000000042"
name = "actions e2e colliery"
kind = "coal_mine"
rule_profile = "coal-2022"

[storage]
path = "{db}"

[api]
listen = "127.0.0.1:{api_port}"
# The test polls the API far faster than a dispatch room; no request limit.
rate_limit_per_s = 0
  [[api.tokens]]
  name = "duty-engineer"
  role = "admin"
  sha256 = "{admin}"
  [[api.tokens]]
  name = "wall-screen"
  role = "viewer"
  sha256 = "{viewer}"

[[devices]]
id = "kj"
protocol = "modbus_tcp"
host = "127.0.0.1"
port = {kj}
poll_interval_ms = 200
timeout_ms = 500

[[devices]]
id = "kj2"
protocol = "modbus_tcp"
host = "127.0.0.1"
port = {kj2}
poll_interval_ms = 200
timeout_ms = 300
offline_after_failures = 2
offline_retry_ms = 300
"#,
        db = db.display(),
        admin = sha256_hex(ADMIN),
        viewer = sha256_hex(VIEWER),
        kj = port("kj"),
        kj2 = port("kj2"),
    );
    c += &methane("CH4-FACE", "kj");
    c += &methane("CH4-DISTRICT", "kj2");
    for k in 0..3u16 {
        c += &bit(&format!("RELAY-{k}"), "coil", k);
        c += &bit(&format!("FEED-{k}"), "discrete_input", k);
    }
    c += &format!(
        r#"
[[actions]]
id = "cut-face"
name = "工作面断电"
triggers = ["CH4-FACE"]
restore = "{face_restore}"
  [[actions.relays]]
  device = "kj"
  address = 0
  feedback = "FEED-0"
  feedback_timeout_ms = 1500

[[actions]]
id = "cut-heading"
name = "掘进断电"
triggers = ["CH4-FACE"]
  [[actions.relays]]
  device = "kj"
  address = 1
  feedback = "FEED-1"
  feedback_timeout_ms = 1500

[[actions]]
id = "cut-district"
name = "采区断电"
triggers = ["CH4-DISTRICT"]
  [[actions.relays]]
  device = "kj"
  address = 2
  feedback = "FEED-2"
  feedback_timeout_ms = 1500
"#
    );
    c + extra
}

struct Gateway {
    child: Child,
    base: String,
    http: reqwest::Client,
}

impl Gateway {
    async fn start(cfg: &Path, port: u16) -> Gateway {
        let child = Command::new(env!("CARGO_BIN_EXE_hazgate"))
            .args(["run", "--config"])
            .arg(cfg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let gw = Gateway {
            child,
            base: format!("http://127.0.0.1:{port}"),
            http: hazgate::tls::http_client_builder().build().unwrap(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ok = gw
                .http
                .get(format!("{}/healthz", gw.base))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ok {
                break;
            }
            assert!(Instant::now() < deadline, "gateway API did not come up");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        gw
    }

    async fn get(&self, path: &str, token: &str) -> Value {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "GET {path}: {}", r.status());
        serde_json::from_slice(&r.bytes().await.unwrap()).unwrap()
    }

    async fn post(&self, path: &str, token: &str, body: Value) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (
            status,
            serde_json::from_slice(&r.bytes().await.unwrap()).unwrap_or(Value::Null),
        )
    }

    async fn action(&self, id: &str) -> Value {
        self.get(&format!("/api/v1/actions/{id}"), VIEWER).await
    }

    /// Open alarms of `point` (with their grade names).
    async fn alarms_of(&self, point: &str) -> Vec<String> {
        let v = self.get("/api/v1/alarms", VIEWER).await;
        v["alarms"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["point_id"] == point || a["point"] == point)
            .filter(|a| a["state"] == "unacked" || a["state"] == "acked")
            .map(|a| a["grade_name"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    async fn metric(&self, name: &str) -> f64 {
        let text = self
            .http
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no metric {name}"))
    }

    fn stop(mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if self.child.try_wait().unwrap().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        panic!("gateway did not stop on SIGTERM");
    }
}

async fn wait_until<F, Fut>(what: &str, secs: u64, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !cond().await {
        assert!(
            Instant::now() < deadline,
            "timed out after {secs} s: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn relay(farm: &FarmHandle, coil: u16) -> (bool, bool) {
    let st = farm.status();
    let r = st
        .devices
        .iter()
        .flat_map(|d| d.relays.iter())
        .find(|r| r.coil == coil)
        .unwrap();
    (r.coil_on, r.feed_on)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn site() -> (FarmHandle, Clock) {
    let clock = Clock::manual(0.0);
    let farm = Farm::start(
        &Scenario::parse(SCENARIO).unwrap(),
        FarmOptions {
            clock: Some(clock.clone()),
            ..FarmOptions::default()
        },
    )
    .await
    .unwrap();
    (farm, clock)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gas_leak_cuts_checks_the_feed_restores_and_locks_out_on_offline() {
    let (farm, clock) = site().await;
    let broker = uplink_support::mosquitto::Mosquitto::start().await;
    let sub = uplink_support::Sub::start(broker.port, "broadcast-system", "linkage/#");
    let webhook = uplink_support::Receiver::start().await;
    let linkage = format!(
        r#"
[[linkage]]
id = "broadcast"
url = "mqtt://127.0.0.1:{mq}"
on = ["cut", "feed_fault"]

[[linkage]]
id = "personnel"
url = "http://127.0.0.1:{hook}/hook"
on = ["over_limit"]
points = ["CH4-FACE"]
"#,
        mq = broker.port,
        hook = webhook.port,
    );
    let dir = tempfile::tempdir().unwrap();
    let api_port = free_port();
    let cfg = dir.path().join("gw.toml");
    std::fs::write(
        &cfg,
        config_with(&farm, &dir.path().join("gw.db"), api_port, "auto", &linkage),
    )
    .unwrap();
    let gw = Gateway::start(&cfg, api_port).await;

    clock.set_s(5.0);
    wait_until("actions published, nothing cut", 20, || async {
        let a = gw.action("cut-face").await;
        a["cut"] == false && a["ok"] == true
    })
    .await;
    assert_eq!(relay(&farm, 0), (false, true), "powered before the leak");

    // The leak: 1.6 % ≥ the 1.5 % cut level.
    clock.set_s(20.0);
    wait_until("cut-face cut", 20, || async {
        gw.action("cut-face").await["cut"] == true
    })
    .await;
    wait_until("the relay's coil is ON", 10, || async { relay(&farm, 0).0 }).await;
    // Written in the same engine step, but each relay over its own request.
    wait_until("the heading relay is told to cut too", 10, || async {
        relay(&farm, 1).0
    })
    .await;
    // The relays are written ahead of the store commit; the board shows the cut once
    // its alarm is committed.
    wait_until("the cut is an alarm on the board", 10, || async {
        gw.alarms_of("cut:cut-face")
            .await
            .contains(&"断电".to_owned())
    })
    .await;
    // Reading → relay acknowledged: within the standard's 2 s.
    wait_until("cut latency exported", 10, || async {
        gw.metric("hazgate_action_cut_latency_seconds_count").await >= 2.0
    })
    .await;
    let max = gw.metric("hazgate_action_cut_latency_max_seconds").await;
    assert!(max <= 2.0, "reading → cut took {max} s");

    // The good relay's feed drops 1 s (scenario) after the cut; the faulty one never.
    clock.set_s(21.5);
    wait_until("face feed drops", 10, || async {
        let a = gw.action("cut-face").await;
        a["relays"][0]["feed"] == false
    })
    .await;
    wait_until("馈电异常 on the faulty relay", 10, || async {
        gw.alarms_of("action:cut-heading")
            .await
            .contains(&"馈电异常".to_owned())
    })
    .await;
    let face = gw.action("cut-face").await;
    assert_eq!(
        face["ok"], true,
        "the good relay is no feedback fault: {face}"
    );
    assert!(gw.alarms_of("action:cut-face").await.is_empty());

    // Still above the restore level at 25 s; below it (0.6 %) from 31 s.
    clock.set_s(25.0);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(gw.action("cut-face").await["cut"], true, "1.6 % stays cut");
    clock.set_s(35.0);
    wait_until("restored below 1.0 %", 20, || async {
        gw.action("cut-face").await["cut"] == false
    })
    .await;
    wait_until("the coil is OFF again", 10, || async { !relay(&farm, 0).0 }).await;
    clock.set_s(36.0);
    wait_until("feed back", 10, || async {
        gw.action("cut-face").await["relays"][0]["feed"] == true
    })
    .await;
    wait_until(
        "the faulty relay's fault clears once the feed matches",
        10,
        || async { gw.alarms_of("action:cut-heading").await.is_empty() },
    )
    .await;
    wait_until("the cut alarm has cleared", 10, || async {
        gw.alarms_of("cut:cut-face").await.is_empty()
    })
    .await;

    // kj2 goes offline: its methane sensor can no longer be trusted → cut (故障闭锁).
    assert!(!relay(&farm, 2).0);
    clock.set_s(61.0);
    wait_until("lockout cut", 20, || async {
        let a = gw.action("cut-district").await;
        a["cut"] == true && a["faulted"].as_array().is_some_and(|f| !f.is_empty())
    })
    .await;
    wait_until("district coil ON", 10, || async { relay(&farm, 2).0 }).await;

    // Linkage, over MQTT: the cuts and restores, and the 馈电异常, nothing else.
    let transitions = |msgs: Vec<Value>| -> Vec<(String, String)> {
        msgs.iter()
            .map(|m| {
                (
                    m["data"]["point"].as_str().unwrap_or("?").to_owned(),
                    m["data"]["transition"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    let mqtt_msgs = || {
        sub.messages()
            .into_iter()
            .filter(|(t, _)| t.ends_with("/alarm"))
            .map(|(_, p)| serde_json::from_str::<Value>(&p).unwrap())
            .collect::<Vec<_>>()
    };
    let pair = |p: &str, t: &str| (p.to_owned(), t.to_owned());
    wait_until("broadcast system told of the lockout cut", 20, || async {
        transitions(mqtt_msgs()).contains(&pair("cut:cut-district", "raised"))
    })
    .await;
    let got = transitions(mqtt_msgs());
    for want in [
        pair("cut:cut-face", "raised"),
        pair("cut:cut-heading", "raised"),
        pair("action:cut-heading", "raised"),
        pair("cut:cut-face", "returned_to_normal"),
        pair("action:cut-heading", "returned_to_normal"),
    ] {
        assert!(got.contains(&want), "{want:?} missing from {got:?}");
    }
    assert!(
        got.iter()
            .all(|(p, _)| p.starts_with("cut:") || p.starts_with("action:")),
        "only cuts and feedback faults: {got:?}"
    );
    // Over HTTP: the face methane's over-limits only.
    let hook: Vec<Value> = webhook
        .got
        .lock()
        .unwrap()
        .iter()
        .map(|r| serde_json::from_slice(&r.body).unwrap())
        .collect();
    // The scenario jumps from 0.5 % to 1.6 %: raised straight at 断电.
    let raised = hook
        .iter()
        .find(|m| m["data"]["transition"] == "raised")
        .unwrap();
    assert_eq!(raised["data"]["grade_name"], "断电", "{raised}");
    let got = transitions(hook);
    assert!(
        got.contains(&pair("CH4-FACE", "returned_to_normal")),
        "{got:?}"
    );
    assert!(
        got.iter().all(|(p, _)| p == "CH4-FACE"),
        "nothing but CH4-FACE: {got:?}"
    );
    gw.stop();
    farm.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_cut_and_release_need_admin_are_audited_and_a_latched_cut_survives_restart() {
    let (farm, clock) = site().await;
    clock.set_s(5.0);
    let dir = tempfile::tempdir().unwrap();
    let api_port = free_port();
    let cfg = dir.path().join("gw.toml");
    std::fs::write(
        &cfg,
        config(&farm, &dir.path().join("gw.db"), api_port, "manual"),
    )
    .unwrap();
    let gw = Gateway::start(&cfg, api_port).await;
    wait_until("actions published", 20, || async {
        gw.action("cut-face").await["ok"] == true
    })
    .await;

    let reason = serde_json::json!({ "reason": "gas drill at the face" });
    let (status, _) = gw
        .post("/api/v1/actions/cut-face/cut", VIEWER, reason.clone())
        .await;
    assert_eq!(status, 403, "a viewer cannot cut");
    let (status, body) = gw
        .post("/api/v1/actions/cut-face/cut", ADMIN, serde_json::json!({}))
        .await;
    assert_eq!(status, 400, "a cut needs a reason: {body}");
    let (status, _) = gw
        .post("/api/v1/actions/nope/cut", ADMIN, reason.clone())
        .await;
    assert_eq!(status, 404);

    let (status, body) = gw
        .post("/api/v1/actions/cut-face/cut", ADMIN, reason.clone())
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["action"]["manual_cut"], true);
    wait_until("coil ON", 10, || async { relay(&farm, 0).0 }).await;
    let (status, body) = gw
        .post(
            "/api/v1/actions/cut-face/release",
            ADMIN,
            serde_json::json!({ "reason": "drill over", "name": "张工" }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    wait_until("coil OFF", 10, || async { !relay(&farm, 0).0 }).await;

    let audit = gw.get("/api/v1/audit", ADMIN).await;
    let rows = audit["audit"].as_array().unwrap();
    let has = |action: &str, detail: &str| {
        rows.iter().any(|r| {
            r["action"] == action
                && r["target"] == "action:cut-face"
                && r["who"] == "duty-engineer"
                && r["detail"].as_str().unwrap().contains(detail)
        })
    };
    assert!(has("manual_cut", "gas drill at the face"), "{audit}");
    assert!(has("release", "name=张工"), "{audit}");

    // Manual restore: the leak cuts, the gas falls, the power stays cut until released.
    clock.set_s(20.0);
    wait_until("leak cuts", 20, || async { relay(&farm, 0).0 }).await;
    let (status, body) = gw
        .post("/api/v1/actions/cut-face/release", ADMIN, reason.clone())
        .await;
    assert_eq!(status, 409, "no release while the gas is high: {body}");
    clock.set_s(35.0);
    wait_until("gas below the restore level", 20, || async {
        gw.action("cut-face").await["cutting"]
            .as_array()
            .is_some_and(|c| c.is_empty())
    })
    .await;
    let face = gw.action("cut-face").await;
    assert_eq!(face["cut"], true, "latched: {face}");
    assert_eq!(face["latched"], true);

    // A restart does not bring the power back by itself.
    gw.stop();
    let gw = Gateway::start(&cfg, api_port).await;
    wait_until("restarted gateway holds the cut", 20, || async {
        let a = gw.action("cut-face").await;
        a["cut"] == true && a["latched"] == true
    })
    .await;
    assert!(relay(&farm, 0).0, "still cut after the restart");
    let (status, body) = gw
        .post("/api/v1/actions/cut-face/release", ADMIN, reason.clone())
        .await;
    assert_eq!(status, 200, "{body}");
    wait_until("restored after the release", 10, || async {
        !relay(&farm, 0).0
    })
    .await;
    gw.stop();
    farm.shutdown().await;
}
