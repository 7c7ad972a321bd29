//! `hazgate run` with `[api]` tokens serves the API and dashboard; without a token
//! nothing under `/api/v1` answers; SIGTERM stops the server with the gateway.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const TOKEN: &str = "run-viewer-token-5f2c";

fn sha256_hex(s: &str) -> String {
    hazgate::api::hash_token(s)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_serves_the_api_when_tokens_are_configured() {
    let dir = tempfile::tempdir().unwrap();
    // A free port: bound, read, released (the gateway binds it again right after).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = dir.path().join("run.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"
[site]
id = "1"
name = "run test"
kind = "chemical_plant"
rule_profile = "t"

[storage]
path = "{db}"

[api]
listen = "127.0.0.1:{port}"
  [[api.tokens]]
  name = "wall-screen"
  role = "viewer"
  sha256 = "{hash}"

[[devices]]
id = "PLC"
protocol = "modbus_tcp"
host = "127.0.0.1"
port = 1

[[points]]
id = "PT-1"
name = "压力"
kind = "pressure"
unit = "MPa"
range_min = 0.0
range_max = 2.5
device = "PLC"
modbus = {{ table = "holding", address = 0, data_type = "u16" }}
"#,
            db = dir.path().join("run.db").display(),
            hash = sha256_hex(TOKEN),
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_hazgate"))
        .args(["run", "--config"])
        .arg(&cfg)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || for _ in BufReader::new(stdout).lines() {});

    let client = hazgate::tls::http_client_builder().build().unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let t0 = Instant::now();
    loop {
        if let Ok(r) = client.get(format!("{base}/healthz")).send().await {
            if r.status() == 200 {
                break;
            }
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "API not up within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = client
        .get(format!("{base}/api/v1/points"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = client
        .get(format!("{base}/api/v1/points"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    assert_eq!(v["points"][0]["id"], "PT-1");
    assert_eq!(v["points"][0]["name"], "压力");
    let r = client
        .get(format!("{base}/api/v1/audit"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "a viewer token cannot read the audit log");

    let status = support::stop_with_sigterm(&mut child, Duration::from_secs(15));
    assert!(status.success(), "exit status {status}");
}
