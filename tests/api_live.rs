//! The WebSocket live stream over a real socket on 127.0.0.1:0: authentication by
//! sub-protocol, the Origin check, a snapshot first, then deltas carrying new alarms.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use futures_util::{SinkExt, StreamExt};
use hazgate::api::{self, ApiState, Catalog, TokenEntry, Tokens};
use hazgate::config::{Config, Role};
use hazgate::gateway::{self, Command, LogOutputs, Plan};
use hazgate::model::{PointId, Quality, Reading};
use serde_json::Value;
use std::time::Duration;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

const TOKEN: &str = "live-viewer-token-123";

const CONFIG: &str = r#"
[site]
id = "1"
name = "t"
kind = "chemical_plant"
rule_profile = "t"

[[devices]]
id = "PLC"
protocol = "modbus_tcp"
host = "127.0.0.1"
port = 1

[[points]]
id = "LEL-1"
name = "可燃气体"
kind = "combustible"
unit = "%LEL"
range_min = 0.0
range_max = 100.0
device = "PLC"
modbus = { table = "input", address = 0, data_type = "u16" }
  [[points.thresholds]]
  name = "一级报警"
  direction = "high"
  trigger = 25.0
  restore = 24.0
  colour = "yellow"
"#;

async fn next_json(
    ws: &mut (impl StreamExt<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin),
) -> Value {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("a frame within 10 s")
            .expect("stream open")
            .expect("frame");
        if let Message::Text(t) = msg {
            return serde_json::from_str(&t).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_stream_sends_a_snapshot_then_alarm_deltas_and_checks_origin() {
    let config = Config::from_toml_str(CONFIG, "t.toml").unwrap();
    let mut plan = Plan::from_config(&config);
    plan.links.clear();
    let catalog = Catalog::new(&config, &plan.spec);
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let running = gateway::start(plan, LogOutputs::default(), shutdown.clone(), 1);
    let tokens = Tokens::new(vec![TokenEntry {
        name: "v".into(),
        role: Role::Viewer,
        sha256: api::hash_token(TOKEN),
    }]);
    let state = ApiState::new(catalog, &running, tokens, None);
    let control = state.control.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(api::serve(listener, state, shutdown));
    let url = format!("ws://{addr}/api/v1/live");

    // No token: refused before the upgrade.
    assert!(tokio_tungstenite::connect_async(url.as_str())
        .await
        .is_err());
    // Another site's page: refused.
    let mut req = url.as_str().into_client_request().unwrap();
    req.headers_mut().insert(
        "sec-websocket-protocol",
        format!("hazgate, bearer.{TOKEN}").parse().unwrap(),
    );
    req.headers_mut()
        .insert("origin", "http://evil.example".parse().unwrap());
    assert!(tokio_tungstenite::connect_async(req).await.is_err());

    // Same origin, token as a sub-protocol, as the dashboard does it.
    let mut req = url.as_str().into_client_request().unwrap();
    req.headers_mut().insert(
        "sec-websocket-protocol",
        format!("hazgate, bearer.{TOKEN}").parse().unwrap(),
    );
    req.headers_mut()
        .insert("origin", format!("http://{addr}").parse().unwrap());
    let (mut ws, resp) = tokio_tungstenite::connect_async(req).await.unwrap();
    assert_eq!(
        resp.headers().get("sec-websocket-protocol").unwrap(),
        "hazgate"
    );
    let first = next_json(&mut ws).await;
    assert_eq!(first["type"], "snapshot");
    assert_eq!(first["points"][0]["id"], "LEL-1");
    assert_eq!(first["alarms"].as_array().unwrap().len(), 0);

    let r = Reading {
        point: PointId(0),
        ts: gateway::now(),
        value: 30.0,
        quality: Quality::Good,
    };
    control.send(Command::Inject(vec![r])).await.unwrap();
    let mut alarm = None;
    for _ in 0..20 {
        let d = next_json(&mut ws).await;
        assert_eq!(d["type"], "delta");
        if let Some(a) = d
            .get("alarms")
            .and_then(|a| a.as_array())
            .filter(|a| !a.is_empty())
        {
            alarm = Some(a[0].clone());
            break;
        }
    }
    let alarm = alarm.expect("an alarm delta");
    assert_eq!(alarm["grade_name"], "一级报警");
    assert_eq!(alarm["colour"], "yellow");
    assert_eq!(alarm["state"], "unacked");

    ws.send(Message::Close(None)).await.unwrap();
    let _ = stop.send(true);
    server.await.unwrap().unwrap();
    running.join().await;
}
