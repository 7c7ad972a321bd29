//! End to end in headless Chromium (Debian package `chromium`): open the dashboard of
//! a running demo, wait for a scenario alarm on the board, acknowledge it through the
//! page (button, name, comment, submit), check the acknowledgement through the API,
//! and save a screenshot (`$CARGO_TARGET_TMPDIR/demo-dashboard.png`).
//!
//! Chromium is driven over its DevTools protocol with a small client on the
//! WebSocket below; no playwright, no driver binary.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use base64::Engine as _;
use futures_util::{SinkExt, StreamExt};
use hazgate::demo::{Demo, DemoOptions};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

struct Cdp {
    ws: Ws,
    next_id: u64,
    session: Option<String>,
}

impl Cdp {
    async fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({ "id": id, "method": method, "params": params });
        if let Some(s) = &self.session {
            msg["sessionId"] = json!(s);
        }
        self.ws
            .send(Message::Text(msg.to_string().into()))
            .await
            .unwrap();
        loop {
            let frame = tokio::time::timeout(Duration::from_secs(30), self.ws.next())
                .await
                .expect("DevTools answered within 30 s")
                .expect("DevTools socket open")
                .unwrap();
            let Message::Text(t) = frame else { continue };
            let v: Value = serde_json::from_str(&t).unwrap();
            if v["id"] == id {
                assert!(v.get("error").is_none(), "{method}: {v}");
                return v["result"].clone();
            }
        }
    }

    async fn eval(&mut self, expression: &str) -> Value {
        let r = self
            .call(
                "Runtime.evaluate",
                json!({ "expression": expression, "returnByValue": true, "awaitPromise": true }),
            )
            .await;
        assert!(r.get("exceptionDetails").is_none(), "{expression}: {r}");
        r["result"]["value"].clone()
    }
}

struct Browser(Child);

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Start headless Chromium and return it with its DevTools WebSocket address.
fn chromium(profile: &std::path::Path) -> (Browser, String) {
    let mut child = Command::new("chromium")
        .args([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-extensions",
            "--remote-debugging-port=0",
            "--window-size=1500,1100",
            "--autoplay-policy=no-user-gesture-required",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("about:blank")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the `chromium` binary (Debian package `chromium`) must be installed");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(url) = line.strip_prefix("DevTools listening on ") {
                let _ = tx.send(url.trim().to_owned());
            }
        }
    });
    let url = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("Chromium printed its DevTools address");
    (Browser(child), url)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_acknowledges_a_scenario_alarm_in_headless_chromium() {
    let dir = tempfile::tempdir().unwrap();
    let demo = Demo::start(DemoOptions {
        listen: "127.0.0.1:0".parse().unwrap(),
        db: Some(dir.path().join("demo.db")),
        speed: 4.0,
    })
    .await
    .unwrap();
    let (_browser, devtools) = chromium(&dir.path().join("profile"));
    let (ws, _) = tokio_tungstenite::connect_async(devtools.as_str())
        .await
        .unwrap();
    let mut cdp = Cdp {
        ws,
        next_id: 0,
        session: None,
    };
    let page_url = format!("http://{}/#token={}", demo.addr, demo.operator_token);
    let target = cdp
        .call("Target.createTarget", json!({ "url": page_url }))
        .await;
    let attached = cdp
        .call(
            "Target.attachToTarget",
            json!({ "targetId": target["targetId"], "flatten": true }),
        )
        .await;
    cdp.session = Some(attached["sessionId"].as_str().unwrap().to_owned());
    cdp.call("Runtime.enable", json!({})).await;

    // Wait for an alarm row with an acknowledge button, painted from the live stream.
    let t0 = Instant::now();
    let id: u64 = loop {
        let v = cdp
            .eval("(() => { const b = document.querySelector('#alarm-body tr.unacked .ack-btn'); return b ? b.dataset.alarm : ''; })()")
            .await;
        if let Some(id) = v.as_str().and_then(|s| s.parse().ok()) {
            break id;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(90),
            "no alarm on the board within 90 s"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    // The board is in Chinese by default and the row is coloured by grade.
    let heading = cdp
        .eval("document.querySelector('.alarms h2').textContent")
        .await;
    assert!(heading.as_str().unwrap().contains("实时报警"), "{heading}");
    let class = cdp
        .eval(&format!(
            "document.querySelector('#alarm-body tr[data-alarm=\"{id}\"]').className"
        ))
        .await;
    assert!(class.as_str().unwrap().starts_with("g-"), "{class}");

    // Acknowledge through the page: button, dialog, name and comment, submit.
    cdp.eval(&format!(
        "(() => {{ document.querySelector('#alarm-body .ack-btn[data-alarm=\"{id}\"]').click();
                   document.getElementById('ack-name').value = '浏览器值班员';
                   document.getElementById('ack-comment').value = '已通知现场撤人';
                   document.getElementById('ack-submit').click(); return true; }})()"
    ))
    .await;

    // The acknowledgement is in the store, seen through the API.
    let client = hazgate::tls::http_client_builder().build().unwrap();
    let url = format!("http://{}/api/v1/alarms/{id}", demo.addr);
    let t1 = Instant::now();
    loop {
        let text = client
            .get(&url)
            .bearer_auth(&demo.viewer_token)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let v: Value = serde_json::from_str(&text).unwrap();
        let acked = v["events"].as_array().is_some_and(|e| {
            e.iter().any(|e| {
                e["transition"] == "acknowledged"
                    && e["alarm"]["ack"]["by"] == "浏览器值班员"
                    && e["alarm"]["ack"]["comment"] == "已通知现场撤人"
            })
        });
        if acked {
            break;
        }
        assert!(
            t1.elapsed() < Duration::from_secs(15),
            "acknowledgement not stored: {v}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The handler writes its audit record after the engine has taken the
    // acknowledgement, so the record may land a moment after the alarm event.
    let t2 = Instant::now();
    loop {
        let audit: Value = serde_json::from_str(
            &client
                .get(format!("http://{}/api/v1/audit", demo.addr))
                .bearer_auth(&demo.admin_token)
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap(),
        )
        .unwrap();
        let rows = audit["audit"].as_array().unwrap();
        if rows
            .iter()
            .any(|r| r["action"] == "acknowledge" && r["target"] == format!("alarm:{id}"))
        {
            break;
        }
        assert!(
            t2.elapsed() < Duration::from_secs(10),
            "no audit record of the acknowledgement: {audit}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The board shows who acknowledged; the English toggle relabels it.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let row = cdp.eval(&format!("(document.querySelector('#alarm-body tr[data-alarm=\"{id}\"]') || {{textContent: ''}}).textContent")).await;
    let row = row.as_str().unwrap().to_owned();
    assert!(row.is_empty() || row.contains("浏览器值班员"), "{row}");
    let heading = cdp.eval("document.getElementById('lang').click(); document.querySelector('.alarms h2').textContent").await;
    assert!(
        heading.as_str().unwrap().contains("Active alarms"),
        "{heading}"
    );
    cdp.eval("document.getElementById('lang').click(); true")
        .await;

    // The power-cut control panel lists the demo's safety action.
    let t2 = Instant::now();
    loop {
        let row = cdp
            .eval("(() => { const p = document.getElementById('actions-panel'); const r = document.querySelector('#action-body tr[data-action=\"cut-2203\"]'); return p && !p.classList.contains('hidden') && r ? r.textContent : ''; })()")
            .await;
        if row
            .as_str()
            .is_some_and(|r| r.contains("2203 掘进工作面断电"))
        {
            break;
        }
        assert!(
            t2.elapsed() < Duration::from_secs(10),
            "no safety action on the board: {row}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Keep a picture of the board.
    let shot = cdp
        .call("Page.captureScreenshot", json!({ "format": "png" }))
        .await;
    let png = base64::engine::general_purpose::STANDARD
        .decode(shot["data"].as_str().unwrap())
        .unwrap();
    assert!(png.starts_with(b"\x89PNG"));
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("demo-dashboard.png");
    std::fs::write(&path, &png).unwrap();
    println!("screenshot: {}", path.display());

    let _ = cdp
        .call(
            "Target.closeTarget",
            json!({ "targetId": target["targetId"] }),
        )
        .await;
    demo.shutdown().await;
}
