//! The HTTP API through `oneshot` (no socket): the gateway's control channel and live
//! state, every route, the role matrix, bad input, audit and security headers. The
//! gateway runs with no sources; readings are injected over the control channel.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use hazgate::api::{self, ApiState, Catalog, StoreAccess, TokenEntry, Tokens};
use hazgate::config::{Config, Role};
use hazgate::engine::AlarmState;
use hazgate::gateway::{self, Command, ControlRequestError, Plan, Running, StoreOutputs};
use hazgate::model::{AlarmId, PointId, Quality, Reading, Timestamp};
use hazgate::store::{Reader, Store, StoreWriter};
use serde_json::{json, Value};
use std::time::Duration;
use tower::ServiceExt;

const VIEWER: &str = "viewer-token-0123456789";
const OPERATOR: &str = "operator-token-0123456789";
const ADMIN: &str = "admin-token-0123456789";

fn config_text(db: &std::path::Path) -> String {
    format!(
        r#"
[site]
id = "140000000001"
name = "测试矿"
kind = "coal_mine"
rule_profile = "coal-2022"

[storage]
path = "{}"

[[hazard_sources]]
id = "HS-FACE"
name = "工作面"
grade = 1

[[devices]]
id = "KJ-1"
protocol = "modbus_tcp"
host = "127.0.0.1"
port = 1
poll_interval_ms = 1000

[[points]]
id = "CH4-T1"
name = "工作面甲烷"
kind = "ch4"
unit = "%CH4"
range_min = 0.0
range_max = 4.0
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

[[points]]
id = "CO-1"
name = "一氧化碳"
kind = "co"
unit = "ppm"
range_min = 0.0
range_max = 500.0
device = "KJ-1"
modbus = {{ table = "input", address = 1, data_type = "u16" }}
  [[points.thresholds]]
  name = "报警"
  direction = "high"
  trigger = 24.0
  restore = 24.0
  colour = "orange"
"#,
        db.display()
    )
}

struct Site {
    state: ApiState,
    running: Option<Running>,
    stop: tokio::sync::watch::Sender<bool>,
    store_task: Option<tokio::task::JoinHandle<()>>,
    db: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Site {
    async fn start() -> Site {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("t.db");
        let config = Config::from_toml_str(&config_text(&db), "t.toml").unwrap();
        let mut plan = Plan::from_config(&config);
        // No sources: readings are injected over the control channel.
        plan.links.clear();
        plan.mqtt.clear();
        let catalog = Catalog::new(&config, &plan.spec);
        let mut store = Store::open(&config.store_options()).unwrap();
        store
            .register_points(&config.point_meta(&plan.spec))
            .unwrap();
        let first = store.next_alarm_id().unwrap();
        let (writer, store_task) = StoreWriter::spawn(store);
        let (stop, shutdown) = tokio::sync::watch::channel(false);
        let running = gateway::start(
            plan,
            StoreOutputs {
                writer: writer.clone(),
                wake: Vec::new(),
                lost: 0,
            },
            shutdown,
            first,
        );
        let tokens = Tokens::new(vec![
            TokenEntry {
                name: "v".into(),
                role: Role::Viewer,
                sha256: api::hash_token(VIEWER),
            },
            TokenEntry {
                name: "o".into(),
                role: Role::Operator,
                sha256: api::hash_token(OPERATOR),
            },
            TokenEntry {
                name: "a".into(),
                role: Role::Admin,
                sha256: api::hash_token(ADMIN),
            },
        ]);
        let state = ApiState::new(
            catalog,
            &running,
            tokens,
            Some(StoreAccess {
                path: db.clone(),
                writer,
            }),
        );
        Site {
            state,
            running: Some(running),
            stop,
            store_task: Some(store_task),
            db,
            _dir: dir,
        }
    }

    fn point(&self, id: &str) -> PointId {
        PointId(self.state.catalog.point_index(id).unwrap())
    }

    async fn inject(&self, id: &str, value: f64) {
        let r = Reading {
            point: self.point(id),
            ts: gateway::now(),
            value,
            quality: Quality::Good,
        };
        self.state
            .control
            .send(Command::Inject(vec![r]))
            .await
            .unwrap();
    }

    /// Inject a value that raises an alarm and return its id.
    async fn raise(&self, id: &str, value: f64) -> u64 {
        self.inject(id, value).await;
        let p = self.point(id);
        let snap = self.state.live.borrow().clone();
        snap.alarms
            .iter()
            .find(|a| a.point == p)
            .map(|a| a.id.0)
            .expect("alarm raised")
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut b = Request::builder().method(method).uri(path);
        if let Some(t) = token {
            b = b.header("authorization", format!("Bearer {t}"));
        }
        let req = match body {
            Some(v) => b
                .header("content-type", "application/json")
                .body(Body::from(v.to_string()))
                .unwrap(),
            None => b.body(Body::empty()).unwrap(),
        };
        let resp = api::router(self.state.clone()).oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 24)
            .await
            .unwrap();
        let v = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
        (status, v)
    }

    async fn stop(mut self) {
        let _ = self.stop.send(true);
        self.running.take().unwrap().join().await;
        self.store_task.take().unwrap().await.unwrap();
    }
}

#[tokio::test]
async fn control_channel_acknowledges_commits_and_the_live_state_follows() {
    let site = Site::start().await;
    let id = site.raise("CH4-T1", 1.2).await;
    let snap = site.state.live.borrow().clone();
    let a = snap.alarms.iter().find(|a| a.id.0 == id).unwrap();
    assert_eq!(a.state, AlarmState::Unacked);
    assert_eq!(a.grade_name, "报警");
    assert_eq!(
        snap.hazard_sources[0].colour,
        hazgate::model::Colour::Orange
    );

    site.state
        .control
        .send(Command::Acknowledge {
            alarm: AlarmId(id),
            by: "张三".into(),
            comment: "已通知".into(),
        })
        .await
        .unwrap();
    // The reply comes after the live state shows it and the store committed it.
    let snap = site.state.live.borrow().clone();
    let a = snap.alarms.iter().find(|a| a.id.0 == id).unwrap();
    assert_eq!(a.state, AlarmState::Acked);
    assert_eq!(a.ack.as_ref().unwrap().by, "张三");
    let events = Reader::open(&site.db)
        .unwrap()
        .alarm_history(id as i64)
        .unwrap();
    let transitions: Vec<_> = events.iter().map(|e| e.transition.as_str()).collect();
    assert_eq!(transitions, ["raised", "acknowledged"]);

    // Refusals come back as engine errors.
    let again = site
        .state
        .control
        .send(Command::Acknowledge {
            alarm: AlarmId(id),
            by: "x".into(),
            comment: String::new(),
        })
        .await;
    assert!(matches!(again, Err(ControlRequestError::Refused(_))));
    let unknown = site
        .state
        .control
        .send(Command::Unshelve {
            alarm: AlarmId(999_999),
        })
        .await;
    assert!(matches!(unknown, Err(ControlRequestError::Refused(_))));

    let control = site.state.control.clone();
    site.stop().await;
    assert!(matches!(
        control.send(Command::Unshelve { alarm: AlarmId(id) }).await,
        Err(ControlRequestError::Stopped)
    ));
}

/// Every endpoint × anonymous / viewer / operator / admin.
#[tokio::test]
async fn role_matrix() {
    let site = Site::start().await;
    let ack_id = site.raise("CO-1", 30.0).await;
    let routes: Vec<(Method, String, Option<Value>, Option<Role>)> = vec![
        (
            Method::GET,
            "/api/v1/whoami".into(),
            None,
            Some(Role::Viewer),
        ),
        (
            Method::GET,
            "/api/v1/points".into(),
            None,
            Some(Role::Viewer),
        ),
        (
            Method::GET,
            "/api/v1/points/CH4-T1".into(),
            None,
            Some(Role::Viewer),
        ),
        (
            Method::GET,
            "/api/v1/points/CH4-T1/history".into(),
            None,
            Some(Role::Viewer),
        ),
        (
            Method::GET,
            "/api/v1/points/CH4-T1/stats".into(),
            None,
            Some(Role::Viewer),
        ),
        (
            Method::GET,
            "/api/v1/alarms".into(),
            None,
            Some(Role::Viewer),
        ),
        (
            Method::GET,
            "/api/v1/alarms/history".into(),
            None,
            Some(Role::Viewer),
        ),
        (
            Method::GET,
            format!("/api/v1/alarms/{ack_id}"),
            None,
            Some(Role::Viewer),
        ),
        (
            Method::GET,
            "/api/v1/hazard-sources".into(),
            None,
            Some(Role::Viewer),
        ),
        (
            Method::GET,
            "/api/v1/devices".into(),
            None,
            Some(Role::Viewer),
        ),
        (Method::GET, "/api/v1/live".into(), None, Some(Role::Viewer)),
        (
            Method::POST,
            "/api/v1/alarms/999999/ack".into(),
            Some(json!({"name": "n"})),
            Some(Role::Operator),
        ),
        (
            Method::POST,
            "/api/v1/alarms/999999/shelve".into(),
            Some(json!({"duration_s": 60, "reason": "r"})),
            Some(Role::Operator),
        ),
        (
            Method::POST,
            "/api/v1/alarms/999999/unshelve".into(),
            None,
            Some(Role::Operator),
        ),
        (
            Method::POST,
            "/api/v1/points/CO-1/maintenance".into(),
            Some(json!({"maintenance": false})),
            Some(Role::Admin),
        ),
        (
            Method::POST,
            "/api/v1/points/CO-1/out-of-service".into(),
            Some(json!({"out_of_service": false})),
            Some(Role::Admin),
        ),
        (Method::GET, "/api/v1/audit".into(), None, Some(Role::Admin)),
        (
            Method::GET,
            "/api/v1/actions".into(),
            None,
            Some(Role::Viewer),
        ),
        (
            Method::POST,
            "/api/v1/actions/nope/cut".into(),
            Some(json!({"reason": "r"})),
            Some(Role::Admin),
        ),
        (
            Method::POST,
            "/api/v1/actions/nope/release".into(),
            Some(json!({"reason": "r"})),
            Some(Role::Admin),
        ),
        (Method::GET, "/healthz".into(), None, None),
        (Method::GET, "/readyz".into(), None, None),
        (Method::GET, "/metrics".into(), None, None),
        (Method::GET, "/api/v1/openapi.json".into(), None, None),
        (Method::GET, "/".into(), None, None),
        (Method::GET, "/app.js".into(), None, None),
        (Method::GET, "/app.css".into(), None, None),
    ];
    let users = [
        (None, None),
        (Some(VIEWER), Some(Role::Viewer)),
        (Some(OPERATOR), Some(Role::Operator)),
        (Some(ADMIN), Some(Role::Admin)),
    ];
    for (method, path, body, need) in &routes {
        for (token, role) in &users {
            let (status, v) = site.call(method.clone(), path, *token, body.clone()).await;
            let ctx = format!("{method} {path} as {role:?}: {status} {v}");
            match (need, role) {
                (None, _) => assert!(status.is_success(), "{ctx}"),
                (Some(_), None) => assert_eq!(status, StatusCode::UNAUTHORIZED, "{ctx}"),
                (Some(n), Some(r)) if r < n => assert_eq!(status, StatusCode::FORBIDDEN, "{ctx}"),
                (Some(_), Some(_)) => assert!(
                    status != StatusCode::UNAUTHORIZED && status != StatusCode::FORBIDDEN,
                    "{ctx}"
                ),
            }
        }
    }
    site.stop().await;
}

#[tokio::test]
async fn acknowledge_through_the_api_is_stored_and_audited_and_bad_input_gets_4xx() {
    let site = Site::start().await;
    let id = site.raise("CH4-T1", 1.2).await;
    let path = format!("/api/v1/alarms/{id}/ack");

    let (s, v) = site
        .call(Method::GET, "/api/v1/alarms", Some(VIEWER), None)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["alarms"][0]["id"], id);
    assert_eq!(v["alarms"][0]["point_id"], "CH4-T1");
    assert_eq!(v["alarms"][0]["state"], "unacked");

    // Bad input first: nothing changes.
    let (s, v) = site
        .call(
            Method::POST,
            &path,
            Some(OPERATOR),
            Some(json!({"comment": "no name"})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert!(v["error"].as_str().unwrap().contains("name"));
    let (s, _) = site
        .call(
            Method::POST,
            &path,
            Some(OPERATOR),
            Some(json!({"name": "x", "bogus": 1})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = site
        .call(
            Method::POST,
            "/api/v1/alarms/abc/ack",
            Some(OPERATOR),
            Some(json!({"name": "x"})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = site
        .call(
            Method::POST,
            "/api/v1/alarms/424242/ack",
            Some(OPERATOR),
            Some(json!({"name": "x"})),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let req = Request::builder()
        .method(Method::POST)
        .uri(&path)
        .header("authorization", format!("Bearer {OPERATOR}"))
        .header("content-type", "application/json")
        .body(Body::from("{\"name\": "))
        .unwrap();
    let resp = api::router(site.state.clone()).oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let big = json!({"name": "x", "comment": "c".repeat(100_000)});
    let (s, _) = site
        .call(Method::POST, &path, Some(OPERATOR), Some(big))
        .await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);

    let (s, v) = site
        .call(
            Method::POST,
            &path,
            Some(OPERATOR),
            Some(json!({"name": "李四", "comment": "已撤人"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, _) = site
        .call(
            Method::POST,
            &path,
            Some(OPERATOR),
            Some(json!({"name": "李四"})),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT);

    let (_, v) = site
        .call(
            Method::GET,
            &format!("/api/v1/alarms/{id}"),
            Some(VIEWER),
            None,
        )
        .await;
    assert_eq!(v["open"]["state"], "acked");
    assert_eq!(v["open"]["ack"]["by"], "李四");
    assert_eq!(v["open"]["ack"]["comment"], "已撤人");
    let transitions: Vec<&str> = v["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["transition"].as_str().unwrap())
        .collect();
    assert_eq!(transitions, ["acknowledged", "raised"]);

    let (_, v) = site
        .call(
            Method::GET,
            "/api/v1/alarms/history?point=CH4-T1",
            Some(VIEWER),
            None,
        )
        .await;
    assert_eq!(v["events"].as_array().unwrap().len(), 2);

    let (s, v) = site
        .call(Method::GET, "/api/v1/audit", Some(ADMIN), None)
        .await;
    assert_eq!(s, StatusCode::OK);
    let ack = v["audit"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["action"] == "acknowledge")
        .expect("audited");
    assert_eq!(ack["who"], "o");
    assert_eq!(ack["target"], format!("alarm:{id}"));
    assert!(ack["detail"].as_str().unwrap().contains("李四"));
    site.stop().await;
}

#[tokio::test]
async fn shelve_unshelve_and_out_of_service() {
    let site = Site::start().await;
    let id = site.raise("CO-1", 30.0).await;
    let (s, v) = site
        .call(
            Method::POST,
            &format!("/api/v1/alarms/{id}/shelve"),
            Some(OPERATOR),
            Some(json!({"duration_s": 0, "reason": "r"})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    let (s, v) = site
        .call(
            Method::POST,
            &format!("/api/v1/alarms/{id}/shelve"),
            Some(OPERATOR),
            Some(json!({"duration_s": 600, "reason": "标定"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let snap = site.state.live.borrow().clone();
    assert!(snap
        .alarms
        .iter()
        .find(|a| a.id.0 == id)
        .unwrap()
        .shelved
        .is_some());
    let (s, _) = site
        .call(
            Method::POST,
            &format!("/api/v1/alarms/{id}/unshelve"),
            Some(OPERATOR),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = site
        .call(
            Method::POST,
            &format!("/api/v1/alarms/{id}/unshelve"),
            Some(OPERATOR),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT);

    // A power-cut alarm cannot be shelved.
    let cut = site.raise("CH4-T1", 1.8).await;
    let (s, _) = site
        .call(
            Method::POST,
            &format!("/api/v1/alarms/{cut}/shelve"),
            Some(OPERATOR),
            Some(json!({"duration_s": 60, "reason": "r"})),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT);

    let (s, v) = site
        .call(
            Method::POST,
            "/api/v1/points/CO-1/out-of-service",
            Some(ADMIN),
            Some(json!({"out_of_service": true, "reason": "更换探头"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["live"]["out_of_service"], true);
    let snap = site.state.live.borrow().clone();
    assert!(
        snap.alarms.iter().all(|a| a.id.0 != id),
        "out of service ends the alarm"
    );
    let (s, _) = site
        .call(
            Method::POST,
            "/api/v1/points/NOPE/out-of-service",
            Some(ADMIN),
            Some(json!({"out_of_service": true})),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    let (_, v) = site
        .call(Method::GET, "/api/v1/audit", Some(ADMIN), None)
        .await;
    let actions: Vec<&str> = v["audit"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["action"].as_str().unwrap())
        .collect();
    for a in ["shelve", "unshelve", "out_of_service"] {
        assert!(actions.contains(&a), "{a} audited: {actions:?}");
    }
    site.stop().await;
}

#[tokio::test]
async fn failed_logins_are_audited_and_rate_limited() {
    let site = Site::start().await;
    let (s, v) = site
        .call(Method::GET, "/api/v1/points", Some("wrong"), None)
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{v}");
    let mut last = s;
    for _ in 0..40 {
        last = site
            .call(Method::GET, "/api/v1/points", Some("wrong"), None)
            .await
            .0;
    }
    assert_eq!(last, StatusCode::TOO_MANY_REQUESTS);
    // Valid tokens are never locked out by someone else's guessing.
    assert_eq!(
        site.call(Method::GET, "/api/v1/points", Some(ADMIN), None)
            .await
            .0,
        StatusCode::OK
    );
    let reader = rusqlite::Connection::open(&site.db).unwrap();
    let n: i64 = reader
        .query_row(
            "SELECT count(*) FROM audit WHERE action = 'login_failed'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!((1..=30).contains(&n), "{n} failed logins audited");
    site.stop().await;
}

#[tokio::test]
async fn history_stats_and_invalid_ranges() {
    let site = Site::start().await;
    for v in [0.3, 0.4, 0.5] {
        site.inject("CH4-T1", v).await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Readings reach the store through the writer's batches: poll until they are in.
    let mut got = Value::Null;
    for _ in 0..100 {
        let (s, v) = site
            .call(
                Method::GET,
                "/api/v1/points/CH4-T1/history",
                Some(VIEWER),
                None,
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        if v["readings"].as_array().unwrap().len() >= 3 {
            got = v;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let values: Vec<f64> = got["readings"]
        .as_array()
        .expect("readings stored")
        .iter()
        .map(|r| r["value"].as_f64().unwrap())
        .collect();
    assert_eq!(values, [0.3, 0.4, 0.5]);
    let (s, v) = site
        .call(
            Method::GET,
            "/api/v1/points/CH4-T1/stats",
            Some(VIEWER),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["bucket_ms"], 300_000);
    let (s, v) = site
        .call(
            Method::GET,
            "/api/v1/points/CH4-T1/history?from=2000&to=1000",
            Some(VIEWER),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(v["error"].as_str().unwrap().contains("time range"));
    let (s, _) = site
        .call(
            Method::GET,
            "/api/v1/points/CH4-T1/history?from=abc",
            Some(VIEWER),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = site
        .call(
            Method::GET,
            "/api/v1/points/CH4-T1/history?limit=0",
            Some(VIEWER),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = site
        .call(
            Method::GET,
            "/api/v1/points/NOPE/history",
            Some(VIEWER),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = site
        .call(Method::GET, "/api/v1/nothing-here", Some(VIEWER), None)
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let _ = Timestamp(0);
    site.stop().await;
}

#[tokio::test]
async fn points_hazards_devices_health_metrics_and_headers() {
    let site = Site::start().await;
    site.raise("CH4-T1", 1.6).await;
    let (_, v) = site
        .call(Method::GET, "/api/v1/points", Some(VIEWER), None)
        .await;
    let p = &v["points"][0];
    assert_eq!(p["id"], "CH4-T1");
    assert_eq!(p["name"], "工作面甲烷");
    assert_eq!(p["value"], 1.6);
    assert_eq!(p["quality"], "good");
    assert_eq!(p["grade"], "断电");
    assert_eq!(p["colour"], "red");
    let (_, v) = site
        .call(Method::GET, "/api/v1/hazard-sources", Some(VIEWER), None)
        .await;
    assert_eq!(v["hazard_sources"][0]["colour"], "red");
    assert_eq!(v["hazard_sources"][0]["name"], "工作面");
    assert_eq!(v["hazard_sources"][0]["open_alarms"], 1);
    let (_, v) = site
        .call(Method::GET, "/api/v1/devices", Some(VIEWER), None)
        .await;
    assert_eq!(v["devices"][0]["id"], "KJ-1");
    assert_eq!(v["devices"][0]["address"], "127.0.0.1:1");

    let (s, v) = site.call(Method::GET, "/metrics", None, None).await;
    assert_eq!(s, StatusCode::OK);
    let text = v.as_str().unwrap();
    assert!(text.contains("hazgate_readings_total 1"), "{text}");
    assert!(text.contains("hazgate_alarms_open 1"));
    assert!(text.contains("hazgate_hazard_source_risk{source=\"HS-FACE\"} 4"));
    assert!(text.contains("hazgate_store_alarm_events_total"));

    let req = Request::builder()
        .uri("/api/v1/points")
        .header("authorization", format!("Bearer {VIEWER}"))
        .header("origin", "https://evil.example")
        .body(Body::empty())
        .unwrap();
    let resp = api::router(site.state.clone()).oneshot(req).await.unwrap();
    let h = resp.headers();
    assert!(
        h.get("access-control-allow-origin").is_none(),
        "CORS stays closed"
    );
    assert_eq!(h.get("content-security-policy").unwrap(), api::CSP);
    assert_eq!(h.get("x-content-type-options").unwrap(), "nosniff");

    let req = Request::builder().uri("/").body(Body::empty()).unwrap();
    let resp = api::router(site.state.clone()).oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let html = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    let html = String::from_utf8(html.to_vec()).unwrap();
    assert!(html.contains("调度室") && html.contains("/app.js"));
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "no CDN"
    );

    let (s, _) = site.call(Method::GET, "/readyz", None, None).await;
    assert_eq!(s, StatusCode::OK);
    let state = site.state.clone();
    site.stop().await;
    let resp = api::router(state)
        .oneshot(
            Request::builder()
                .uri("/readyz")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn every_route_is_rate_limited_per_client_with_retry_after() {
    let mut site = Site::start().await;
    site.state = site.state.clone().with_rate_limit(api::RateLimit {
        per_s: 0.5,
        burst: 3.0,
    });
    let from = |ip: [u8; 4], path: &str, token: Option<&str>| {
        let mut b = Request::builder().uri(path);
        if let Some(t) = token {
            b = b.header("authorization", format!("Bearer {t}"));
        }
        let mut req = b.body(Body::empty()).unwrap();
        req.extensions_mut()
            .insert(axum::extract::ConnectInfo(std::net::SocketAddr::from((
                ip, 40000,
            ))));
        req
    };
    let router = api::router(site.state.clone());
    // The burst: any route counts, the dashboard and health checks too.
    for path in ["/", "/healthz", "/api/v1/points"] {
        let resp = router
            .clone()
            .oneshot(from([10, 0, 0, 7], path, Some(VIEWER)))
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
    }
    let resp = router
        .clone()
        .oneshot(from([10, 0, 0, 7], "/api/v1/alarms", Some(VIEWER)))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    // One token comes back every 2 s.
    assert_eq!(resp.headers()["retry-after"], "2");
    assert!(resp.headers().contains_key("content-security-policy"));
    let body = axum::body::to_bytes(resp.into_body(), 1 << 16)
        .await
        .unwrap();
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert!(
        v["error"].as_str().unwrap().contains("too many requests"),
        "{v}"
    );
    // Another client has its own bucket.
    let resp = router
        .clone()
        .oneshot(from([10, 0, 0, 8], "/api/v1/alarms", Some(VIEWER)))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    // Counted in /metrics.
    let (s, v) = site.call(Method::GET, "/metrics", None, None).await;
    assert_eq!(s, StatusCode::OK);
    let text = v.as_str().unwrap().to_owned();
    assert!(
        text.lines()
            .any(|l| l == "hazgate_api_rate_limited_total 1"),
        "{text}"
    );
    site.stop().await;
}
