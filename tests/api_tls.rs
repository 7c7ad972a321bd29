//! The API over HTTPS and the live stream over WSS, with a certificate made by the
//! openssl CLI for this test (a throw-away CA and a leaf for 127.0.0.1 / localhost),
//! and a client that trusts only that CA. Also: `[api] tls_cert`/`tls_key` problems
//! are reported at their key.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use futures_util::StreamExt;
use hazgate::api::{self, ApiState, Catalog, TokenEntry, Tokens};
use hazgate::config::{Config, ConfigError, Role};
use hazgate::gateway::{self, LogOutputs, Plan};
use std::path::Path;
use std::process::Command;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

const TOKEN: &str = "tls-viewer-token-123";

const SITE: &str = r#"
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
"#;

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the openssl CLI");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA and a server certificate for 127.0.0.1 and localhost signed by it.
fn make_certs(dir: &Path) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509", "-days", "2", "-subj", "/CN=hazgate test CA"];
    ca.extend(ec);
    ca.extend(["-keyout", "ca.key", "-out", "ca.pem"]);
    openssl(dir, &ca);
    let mut csr = vec!["req", "-subj", "/CN=localhost"];
    csr.extend(ec);
    csr.extend(["-keyout", "key.pem", "-out", "server.csr"]);
    openssl(dir, &csr);
    std::fs::write(
        dir.join("ext.cnf"),
        "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
            "-out",
            "cert.pem",
        ],
    );
}

/// One HTTPS GET over a fresh connection (`Connection: close`); the raw answer.
async fn https_get(
    connector: &TlsConnector,
    addr: std::net::SocketAddr,
    path: &str,
    token: &str,
) -> std::io::Result<String> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = tokio::time::timeout(Duration::from_secs(10), connector.connect(name, tcp))
        .await
        .map_err(|_| std::io::Error::other("handshake timed out"))??;
    tls.write_all(
        format!(
            "GET {path} HTTP/1.1\r\nHost: localhost:{}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n",
            addr.port()
        )
        .as_bytes(),
    )
    .await?;
    let mut answer = Vec::new();
    tls.read_to_end(&mut answer).await?;
    Ok(String::from_utf8_lossy(&answer).into_owned())
}

fn trusting(ca: &Path) -> TlsConnector {
    TlsConnector::from(
        hazgate::tls::client_config(&hazgate::tls::TlsFiles {
            ca_file: Some(ca.display().to_string()),
            ..Default::default()
        })
        .unwrap(),
    )
}

fn problems(text: &str) -> Vec<String> {
    match Config::from_toml_str(text, "t.toml") {
        Ok(_) => Vec::new(),
        Err(ConfigError::Invalid(d)) => d.items.iter().map(|i| i.render("t.toml")).collect(),
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn tls_files_are_checked_at_their_key() {
    let dir = tempfile::tempdir().unwrap();
    make_certs(dir.path());
    let cert = dir.path().join("cert.pem").display().to_string();
    let key = dir.path().join("key.pem").display().to_string();
    let missing = dir.path().join("nope.pem").display().to_string();

    let ok = format!("{SITE}\n[api]\ntls_cert = \"{cert}\"\ntls_key = \"{key}\"\n");
    assert_eq!(problems(&ok), Vec::<String>::new());

    let found = problems(&format!(
        "{SITE}\n[api]\ntls_cert = \"{missing}\"\ntls_key = \"{key}\"\n"
    ));
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].contains("api.tls_cert"), "{found:?}");
    assert!(found[0].contains("cannot read"), "{found:?}");

    let found = problems(&format!("{SITE}\n[api]\ntls_cert = \"{cert}\"\n"));
    assert!(
        found
            .iter()
            .any(|p| p.contains("api.tls_key") && p.contains("needs")),
        "{found:?}"
    );

    // A certificate where the key should be: readable, but no private key in it.
    let found = problems(&format!(
        "{SITE}\n[api]\ntls_cert = \"{cert}\"\ntls_key = \"{cert}\"\n"
    ));
    assert!(
        found
            .iter()
            .any(|p| p.contains("api.tls_cert") && p.contains("no private key")),
        "{found:?}"
    );

    let found = problems(&format!(
        "{SITE}\n[api]\nrate_limit_per_s = -1.0\nrate_limit_burst = 0\n"
    ));
    assert!(
        found.iter().any(|p| p.contains("api.rate_limit_per_s")),
        "{found:?}"
    );
    assert!(
        found.iter().any(|p| p.contains("api.rate_limit_burst")),
        "{found:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_over_https_and_live_stream_over_wss() {
    let dir = tempfile::tempdir().unwrap();
    make_certs(dir.path());
    let cert = dir.path().join("cert.pem").display().to_string();
    let key = dir.path().join("key.pem").display().to_string();
    let server_tls = hazgate::tls::server_config(&cert, &key).unwrap();

    let config = Config::from_toml_str(SITE, "t.toml").unwrap();
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
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(api::serve_tls(listener, server_tls, state, shutdown));

    // A client that trusts only the test CA.
    let connector = trusting(&dir.path().join("ca.pem"));
    let connect = |name: &'static str| {
        let connector = connector.clone();
        async move {
            let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            let name = rustls::pki_types::ServerName::try_from(name).unwrap();
            tokio::time::timeout(Duration::from_secs(10), connector.connect(name, tcp))
                .await
                .expect("handshake within 10 s")
        }
    };

    // HTTPS request with the bearer token.
    let answer = https_get(&connector, addr, "/api/v1/whoami", TOKEN)
        .await
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("\"role\":\"viewer\""), "{answer}");
    // The IP address is in the certificate too.
    assert!(connect("127.0.0.1").await.is_ok());

    // Plain HTTP on the HTTPS port gets no answer from the API.
    let mut plain = tokio::net::TcpStream::connect(addr).await.unwrap();
    plain
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), plain.read_to_end(&mut got)).await;
    assert!(
        !String::from_utf8_lossy(&got).contains("HTTP/1.1 200"),
        "plain HTTP answered on the HTTPS port"
    );

    // The live stream over WSS, same origin as a browser on https:// would send.
    let tls = connect("localhost").await.unwrap();
    let mut req = format!("wss://localhost:{}/api/v1/live", addr.port())
        .into_client_request()
        .unwrap();
    req.headers_mut().insert(
        "sec-websocket-protocol",
        format!("hazgate, bearer.{TOKEN}").parse().unwrap(),
    );
    req.headers_mut().insert(
        "origin",
        format!("https://localhost:{}", addr.port())
            .parse()
            .unwrap(),
    );
    let (mut ws, _) = tokio_tungstenite::client_async(req, tls).await.unwrap();
    let first = tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .expect("a frame within 10 s")
        .unwrap()
        .unwrap();
    let Message::Text(text) = first else {
        panic!("{first:?}")
    };
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["type"], "snapshot");
    assert_eq!(v["points"][0]["id"], "LEL-1");
    drop(ws);

    let _ = stop.send(true);
    server.await.unwrap().unwrap();
    running.join().await;
}

/// `hazgate run` with `[api] tls_cert` and `tls_key` serves the API over HTTPS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_serves_https_with_the_configured_certificate() {
    let dir = tempfile::tempdir().unwrap();
    make_certs(dir.path());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let hash: String = api::hash_token(TOKEN)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let cfg = dir.path().join("run.toml");
    std::fs::write(
        &cfg,
        format!(
            "{SITE}\n[storage]\npath = \"{db}\"\n\n[api]\nlisten = \"127.0.0.1:{port}\"\ntls_cert = \"{cert}\"\ntls_key = \"{key}\"\n  [[api.tokens]]\n  name = \"wall\"\n  role = \"viewer\"\n  sha256 = \"{hash}\"\n",
            db = dir.path().join("run.db").display(),
            cert = dir.path().join("cert.pem").display(),
            key = dir.path().join("key.pem").display(),
        ),
    )
    .unwrap();
    let check = Command::new(env!("CARGO_BIN_EXE_hazgate"))
        .args(["check", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_hazgate"))
        .args(["run", "--config"])
        .arg(&cfg)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let connector = trusting(&dir.path().join("ca.pem"));
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let t0 = std::time::Instant::now();
    let answer = loop {
        if let Ok(a) = https_get(&connector, addr, "/api/v1/points", TOKEN).await {
            break a;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "HTTPS API not up within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait().unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("LEL-1"), "{answer}");
    assert!(status.success(), "exit status {status}");
}
