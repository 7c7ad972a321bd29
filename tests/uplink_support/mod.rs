//! Helpers for the uplink tests: a store with points, alarm events and readings;
//! `mosquitto_sub` as an independent receiver; a small HTTP receiver.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

#[path = "../support/mosquitto.rs"]
pub mod mosquitto;
#[path = "../support/mod.rs"]
mod store_support;

use hazgate::engine::{AlarmEvent, Transition};
use hazgate::model::{PointId, Quality, Reading, Timestamp};
use hazgate::store::{PointMeta, Store, StoreOptions};
use std::io::BufRead;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

pub const SITE: &str = "MINE01";

/// A store with points `CH4-0` … `CH4-{n-1}` (every reading kept).
pub fn store(path: &Path, n: usize) -> Store {
    let mut s = Store::open(&StoreOptions {
        path: path.to_owned(),
        store_every_reading: true,
        ..StoreOptions::default()
    })
    .unwrap();
    let points: Vec<PointMeta> = (0..n)
        .map(|i| PointMeta {
            id: format!("CH4-{i}"),
            kind: "ch4".into(),
            unit: Some("%CH4".into()),
            site: Some(SITE.into()),
            hazard_source: Some(format!("HS-{}", i % 2)),
            deadband: None,
        })
        .collect();
    s.register_points(&points).unwrap();
    s
}

/// The store tests' alarm event builder.
pub use store_support::alarm_event;

/// Append `n` alarm events (alarm ids from `first`), return their seqs.
pub fn add_alarms(s: &mut Store, first: u64, n: u64) -> Vec<i64> {
    let ev: Vec<AlarmEvent> = (first..first + n)
        .map(|i| {
            alarm_event(
                i,
                (i % 2) as u32,
                Transition::Raised,
                1_700_000_000_000 + i as i64,
            )
        })
        .collect();
    s.append_alarm_events(&ev).unwrap()
}

/// Write `n` readings spread over 2 points.
pub fn add_readings(s: &mut Store, start_ts: i64, n: usize) {
    let rs: Vec<Reading> = (0..n)
        .map(|i| Reading {
            point: PointId((i % 2) as u32),
            ts: Timestamp(start_ts + i as i64),
            value: 0.1 + (i % 50) as f64 * 0.01,
            quality: Quality::Good,
        })
        .collect();
    for chunk in rs.chunks(5000) {
        s.write_readings(chunk).unwrap();
    }
}

/// Start of a 5-minute window (aligned), `k` windows after a fixed base.
pub fn window(k: i64) -> i64 {
    let b = hazgate::store::BUCKET_MS;
    1_700_000_000_000 / b * b + k * b
}

/// Write `n` readings per point for points 0 and 1 inside window `start`, then close
/// the window (as the store's writer does once it is over). Returns the ids the two
/// statistics records must have.
pub fn add_window(s: &mut Store, start: i64, n: usize) -> Vec<String> {
    let rs: Vec<Reading> = (0..2 * n)
        .map(|i| Reading {
            point: PointId((i % 2) as u32),
            ts: Timestamp(start + 1 + i as i64 * 10),
            value: 0.2 + (i % 7) as f64 * 0.1,
            quality: Quality::Good,
        })
        .collect();
    s.write_readings(&rs).unwrap();
    s.close_buckets(Timestamp(start + hazgate::store::BUCKET_MS))
        .unwrap();
    (0..2)
        .map(|p| format!("{SITE}-m{start}-CH4-{p}-n{n}"))
        .collect()
}

/// Record ids inside statistics messages (JSON), in arrival order.
pub fn stat_ids(payloads: &[serde_json::Value]) -> Vec<String> {
    payloads
        .iter()
        .filter(|v| v["type"] == "stats")
        .flat_map(|v| v["data"].as_array().cloned().unwrap_or_default())
        .filter_map(|r| r["id"].as_str().map(str::to_owned))
        .collect()
}

/// `mosquitto_sub` on a persistent session (QoS 1), its lines collected.
pub struct Sub {
    child: Child,
    pub lines: Arc<Mutex<Vec<String>>>,
}

impl Sub {
    pub fn start(port: u16, client_id: &str, filter: &str) -> Sub {
        let mut child = Command::new(mosquitto::tool("mosquitto_sub", "mosquitto-clients"))
            .args(["-h", "127.0.0.1", "-p", &port.to_string()])
            .args(["-q", "1", "-c", "-i", client_id, "-v", "-t", filter])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let l2 = lines.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                l2.lock().unwrap().push(line);
            }
        });
        Sub { child, lines }
    }

    /// (topic, payload) pairs so far.
    pub fn messages(&self) -> Vec<(String, String)> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| l.split_once(' ').map(|(t, p)| (t.to_owned(), p.to_owned())))
            .collect()
    }
}

impl Drop for Sub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Ids of the JSON messages, in arrival order.
pub fn ids(msgs: &[(String, String)], topic_suffix: &str) -> Vec<String> {
    msgs.iter()
        .filter(|(t, _)| t.ends_with(topic_suffix))
        .filter_map(|(_, p)| serde_json::from_str::<serde_json::Value>(p).ok())
        .filter_map(|v| v["id"].as_str().map(str::to_owned))
        .collect()
}

/// Drop repeats, keeping first arrivals (what a receiver does with the ids).
pub fn dedup(ids: &[String]) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    ids.iter()
        .filter(|i| seen.insert((*i).clone()))
        .cloned()
        .collect()
}

/// One request the HTTP receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The status it answered.
    pub status: u16,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A small HTTP/1.1 receiver on a loopback port: records every POST and answers 200,
/// or 503 while `failing` is set. `stop` closes it (connection refused); `start_on`
/// opens it again on the same port. [`Receiver::start_tls`] serves HTTPS.
pub struct Receiver {
    pub port: u16,
    pub got: Arc<Mutex<Vec<Received>>>,
    pub failing: Arc<std::sync::atomic::AtomicBool>,
    /// TLS handshakes that failed (e.g. the client refused our certificate).
    pub tls_failures: Arc<std::sync::atomic::AtomicU64>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    task: Option<tokio::task::JoinHandle<()>>,
}

/// Server TLS from `make_certs` files in `dir`: `server.crt`/`server.key`, and, when
/// `client_ca` is set, a required client certificate signed by `dir/ca.crt`.
pub fn server_tls(dir: &Path, client_ca: bool) -> tokio_rustls::TlsAcceptor {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let pem = std::fs::read(dir.join("server.crt")).unwrap();
    let certs = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let pem = std::fs::read(dir.join("server.key")).unwrap();
    let key = rustls_pemfile::private_key(&mut pem.as_slice())
        .unwrap()
        .unwrap();
    let b = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap();
    let b = if client_ca {
        let mut roots = rustls::RootCertStore::empty();
        let pem = std::fs::read(dir.join("ca.crt")).unwrap();
        for c in rustls_pemfile::certs(&mut pem.as_slice()) {
            roots.add(c.unwrap()).unwrap();
        }
        let v =
            rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .unwrap();
        b.with_client_cert_verifier(v)
    } else {
        b.with_no_client_auth()
    };
    let cfg = b.with_single_cert(certs, key).unwrap();
    tokio_rustls::TlsAcceptor::from(Arc::new(cfg))
}

impl Receiver {
    pub async fn start() -> Receiver {
        Self::start_with(None).await
    }

    /// An HTTPS receiver (see [`server_tls`]).
    pub async fn start_tls(tls: tokio_rustls::TlsAcceptor) -> Receiver {
        Self::start_with(Some(tls)).await
    }

    async fn start_with(tls: Option<tokio_rustls::TlsAcceptor>) -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut r = Receiver {
            port,
            got: Arc::default(),
            failing: Arc::default(),
            tls_failures: Arc::default(),
            tls,
            task: None,
        };
        r.serve(listener);
        r
    }

    fn serve(&mut self, listener: tokio::net::TcpListener) {
        let (got, failing) = (self.got.clone(), self.failing.clone());
        let (tls, tls_failures) = (self.tls.clone(), self.tls_failures.clone());
        self.task = Some(tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    return;
                };
                let (got, failing) = (got.clone(), failing.clone());
                match &tls {
                    None => {
                        conns.spawn(connection(sock, got, failing));
                    }
                    Some(acceptor) => {
                        let (acceptor, fails) = (acceptor.clone(), tls_failures.clone());
                        conns.spawn(async move {
                            match acceptor.accept(sock).await {
                                Ok(s) => connection(s, got, failing).await,
                                Err(_) => {
                                    fails.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                                }
                            }
                        });
                    }
                }
            }
        }));
    }

    pub fn stop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }

    pub async fn restart(&mut self) {
        self.stop();
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", self.port))
            .await
            .unwrap();
        self.serve(listener);
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}/upload", self.port)
    }

    pub fn accepted(&self) -> Vec<Received> {
        self.got
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.status == 200)
            .cloned()
            .collect()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn connection<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    mut sock: S,
    got: Arc<Mutex<Vec<Received>>>,
    failing: Arc<std::sync::atomic::AtomicBool>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = Vec::new();
    loop {
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 8192];
            match sock.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
        let headers: Vec<(String, String)> = head
            .lines()
            .skip(1)
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
            .collect();
        let len: usize = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        while buf.len() < head_end + len {
            let mut chunk = [0u8; 65536];
            match sock.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let body = buf[head_end..head_end + len].to_vec();
        buf.drain(..head_end + len);
        let status = if failing.load(std::sync::atomic::Ordering::SeqCst) {
            503
        } else {
            200
        };
        got.lock().unwrap().push(Received {
            headers,
            body,
            status,
        });
        let reply = if status == 200 {
            "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_owned()
        } else {
            "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 4\r\n\r\nbusy".to_owned()
        };
        if sock.write_all(reply.as_bytes()).await.is_err() {
            return;
        }
    }
}
