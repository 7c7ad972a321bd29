//! `hazgate demo` in-process: the farm, the embedded MQTT broker, gateway, store and
//! HTTP server start with no outside service, a sensor fed over MQTT has live values, a scenario alarm appears on the API within its first minute, and
//! an acknowledgement over HTTP is stored and audited, and the heading's gas surge cuts
//! and restores the heading's power through the configured safety action.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use hazgate::demo::{Demo, DemoOptions};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

async fn get(client: &reqwest::Client, url: &str, token: &str) -> Value {
    let text = client
        .get(url)
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    serde_json::from_str(&text).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_raises_alarms_that_can_be_acknowledged_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let demo = Demo::start(DemoOptions {
        listen: "127.0.0.1:0".parse().unwrap(),
        db: Some(dir.path().join("demo.db")),
        // The two-minute story in 30 s.
        speed: 4.0,
    })
    .await
    .unwrap();
    let base = format!("http://{}", demo.addr);
    let client = hazgate::tls::http_client_builder().build().unwrap();

    let t0 = Instant::now();
    let alarm = loop {
        let v = get(
            &client,
            &format!("{base}/api/v1/alarms"),
            &demo.viewer_token,
        )
        .await;
        if let Some(a) = v["alarms"]
            .as_array()
            .and_then(|a| a.iter().find(|a| a["state"] == "unacked"))
        {
            break a.clone();
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "no alarm within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let id = alarm["id"].as_u64().unwrap();

    let points = get(
        &client,
        &format!("{base}/api/v1/points"),
        &demo.viewer_token,
    )
    .await;
    let good = points["points"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["quality"] == "good")
        .count();
    assert!(good >= 5, "points read over Modbus: {points}");
    // The wireless detector arrives over MQTT, through the embedded broker.
    let t1 = Instant::now();
    loop {
        let p = get(
            &client,
            &format!("{base}/api/v1/points/LEL-DIKE"),
            &demo.viewer_token,
        )
        .await;
        if p["live"]["quality"] == "good" && p["live"]["value"].as_f64().is_some() {
            break;
        }
        assert!(
            t1.elapsed() < Duration::from_secs(20),
            "no MQTT reading of LEL-DIKE: {p}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let devices = get(
        &client,
        &format!("{base}/api/v1/devices"),
        &demo.viewer_token,
    )
    .await;
    assert!(
        devices["devices"]
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["online"] == true),
        "{devices}"
    );

    // A viewer may not acknowledge; the operator may.
    let url = format!("{base}/api/v1/alarms/{id}/ack");
    let body = json!({"name": "王五", "comment": "demo test"}).to_string();
    let r = client
        .post(&url)
        .bearer_auth(&demo.viewer_token)
        .header("content-type", "application/json")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = client
        .post(&url)
        .bearer_auth(&demo.operator_token)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());

    let v = get(
        &client,
        &format!("{base}/api/v1/alarms/{id}"),
        &demo.viewer_token,
    )
    .await;
    let events = v["events"].as_array().unwrap();
    assert!(
        events
            .iter()
            .any(|e| e["transition"] == "acknowledged" && e["alarm"]["ack"]["by"] == "王五"),
        "{v}"
    );
    let audit = get(&client, &format!("{base}/api/v1/audit"), &demo.admin_token).await;
    assert!(audit["audit"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["action"] == "acknowledge" && r["who"] == "demo-operator"));
    let html = client
        .get(format!("{base}/"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(html.contains("调度室"));

    // The heading's methane passes 1.5 %: the safety action cuts the heading's power,
    // the relay's feed confirms it (no 馈电异常), and below 1.0 % the power comes back.
    let action = |v: &Value| v["actions"][0].clone();
    let t0 = Instant::now();
    loop {
        let a = action(
            &get(
                &client,
                &format!("{base}/api/v1/actions"),
                &demo.viewer_token,
            )
            .await,
        );
        assert_eq!(a["id"], "cut-2203");
        if a["cut"] == true && a["relays"][0]["feed"] == false {
            assert_eq!(a["ok"], true, "{a}");
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "no cut within 60 s: {a}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    loop {
        let a = action(
            &get(
                &client,
                &format!("{base}/api/v1/actions"),
                &demo.viewer_token,
            )
            .await,
        );
        if a["cut"] == false && a["relays"][0]["feed"] == true {
            assert_eq!(a["ok"], true, "{a}");
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(90), "not restored: {a}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    demo.shutdown().await;
}
