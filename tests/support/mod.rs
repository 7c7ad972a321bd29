//! Helpers for store and sink tests: builders, and real VictoriaMetrics / InfluxDB 1.x
//! servers started on free loopback ports with their data in a temp dir, killed on drop.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use hazgate::engine::{Alarm, AlarmEvent, AlarmKind, AlarmState, Transition};
use hazgate::model::{AlarmId, Colour, PointId, Quality, Reading, Timestamp};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn reading(point: u32, ts: i64, value: f64) -> Reading {
    Reading {
        point: PointId(point),
        ts: Timestamp(ts),
        value,
        quality: Quality::Good,
    }
}

/// `n` methane points `{prefix}0`, `{prefix}1`, … with nothing else set.
pub fn ch4_points(prefix: &str, n: u32) -> Vec<hazgate::store::PointMeta> {
    (0..n)
        .map(|i| hazgate::store::PointMeta {
            id: format!("{prefix}{i}"),
            kind: "ch4".into(),
            unit: None,
            site: None,
            hazard_source: None,
            deadband: None,
        })
        .collect()
}

pub fn alarm_event(id: u64, point: u32, transition: Transition, ts: i64) -> AlarmEvent {
    AlarmEvent {
        transition,
        ts: Timestamp(ts),
        alarm: Alarm {
            id: AlarmId(id),
            point: PointId(point),
            kind: AlarmKind::Value,
            state: AlarmState::Unacked,
            grade: Some(1),
            grade_name: "断电".into(),
            colour: Colour::Red,
            power_cut: true,
            raised_at: Timestamp(ts),
            changed_at: Timestamp(ts),
            value: 1.6,
            peak: 1.7,
            peak_at: Timestamp(ts),
            returned_at: None,
            ack: None,
            shelved: None,
        },
    }
}

/// Store + sink options for a test against `url`.
pub fn sink_opts(
    store: &Path,
    url: String,
    api: hazgate::sinks::influxdb::InfluxApi,
) -> hazgate::sinks::influxdb::InfluxOptions {
    hazgate::sinks::influxdb::InfluxOptions {
        store_path: store.to_owned(),
        url,
        api,
        batch_max_lines: 500,
        flush_interval_ms: 100,
        poll_interval_ms: 50,
        request_timeout_ms: 5_000,
        retry_initial_ms: 50,
        retry_max_ms: 1_000,
        ..Default::default()
    }
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Send SIGTERM to `child` and wait, at most `within`, for it to exit; its status.
pub fn stop_with_sigterm(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    assert!(Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap()
        .success());
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "did not stop within {within:?} of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A free loopback port: bind port 0, read the port, release it for the server.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Poll `cond` until it holds or `timeout` passes (then panic with `what`).
pub async fn wait_for<F, Fut>(timeout: Duration, what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !cond().await {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// SIGTERM and wait up to 20 s, then SIGKILL.
fn terminate(child: Option<Child>) {
    let Some(mut c) = child else { return };
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(c.id().to_string())
        .status();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(20) {
        if let Ok(Some(_)) = c.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = c.kill();
    let _ = c.wait();
}

fn binary(name: &str, package: &str) -> PathBuf {
    for dir in std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .chain(["/usr/bin", "/usr/sbin"])
    {
        let p = Path::new(dir).join(name);
        if p.is_file() {
            return p;
        }
    }
    panic!("`{name}` not found on PATH: install the Debian package `{package}` (apt-get install -y {package})");
}

async fn http_ok(url: &str) -> bool {
    match hazgate::tls::http_client_builder()
        .build()
        .unwrap()
        .get(url)
        .send()
        .await
    {
        Ok(r) => r.status().is_success(),
        Err(_) => false,
    }
}

/// A VictoriaMetrics server of our own.
pub struct VictoriaMetrics {
    pub port: u16,
    pub dir: tempfile::TempDir,
    child: Option<Child>,
}

impl VictoriaMetrics {
    pub async fn start() -> VictoriaMetrics {
        let mut vm = VictoriaMetrics {
            port: free_port(),
            dir: tempfile::tempdir().unwrap(),
            child: None,
        };
        vm.resume().await;
        vm
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Start (again) on the same port and data dir.
    pub async fn resume(&mut self) {
        assert!(self.child.is_none());
        let bin = binary("victoria-metrics", "victoria-metrics");
        let child = Command::new(bin)
            .arg(format!("-httpListenAddr=127.0.0.1:{}", self.port))
            .arg(format!(
                "-storageDataPath={}",
                self.dir.path().join("data").display()
            ))
            .arg("-retentionPeriod=100y")
            .arg("-search.disableCache")
            .arg("-loggerLevel=ERROR")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let url = format!("{}/health", self.url());
        wait_for(Duration::from_secs(30), "victoria-metrics /health", || {
            http_ok(&url)
        })
        .await;
    }

    /// Stop it (SIGTERM, so it flushes what it accepted): an outage.
    pub fn stop(&mut self) {
        terminate(self.child.take());
    }

    /// Every sample of metrics matching `selector`: (labels, timestamps, values).
    pub async fn export(&self, selector: &str) -> Vec<(serde_json::Value, Vec<i64>, Vec<f64>)> {
        let url = format!("{}/api/v1/export", self.url());
        let body = hazgate::tls::http_client_builder()
            .build()
            .unwrap()
            .post(url)
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(format!("match[]={}", urlencode(selector)))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        body.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                let ts = v["timestamps"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|t| t.as_i64().unwrap())
                    .collect();
                let vals = v["values"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|t| t.as_f64().unwrap_or(f64::NAN))
                    .collect();
                (v["metric"].clone(), ts, vals)
            })
            .collect()
    }
}

impl Drop for VictoriaMetrics {
    fn drop(&mut self) {
        self.stop();
    }
}

pub fn urlencode(s: &str) -> String {
    let mut o = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            o.push(b as char);
        } else {
            o.push_str(&format!("%{b:02X}"));
        }
    }
    o
}

/// An InfluxDB 1.x server of our own.
pub struct Influx1 {
    pub port: u16,
    pub dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Influx1 {
    pub async fn start() -> Influx1 {
        let mut i = Influx1 {
            port: free_port(),
            dir: tempfile::tempdir().unwrap(),
            child: None,
        };
        i.resume().await;
        i
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub async fn resume(&mut self) {
        assert!(self.child.is_none());
        let bin = binary("influxd", "influxdb");
        let d = self.dir.path();
        let conf = d.join("influxdb.conf");
        std::fs::write(
            &conf,
            format!(
                r#"reporting-disabled = true
bind-address = "127.0.0.1:{rpc}"
[meta]
  dir = "{d}/meta"
[data]
  dir = "{d}/data"
  wal-dir = "{d}/wal"
  query-log-enabled = false
[monitor]
  store-enabled = false
[http]
  enabled = true
  bind-address = "127.0.0.1:{port}"
  log-enabled = false
[logging]
  level = "error"
[continuous_queries]
  enabled = false
[subscriber]
  enabled = false
"#,
                rpc = free_port(),
                d = d.display(),
                port = self.port
            ),
        )
        .unwrap();
        let child = Command::new(bin)
            .arg("-config")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let url = format!("{}/ping", self.url());
        wait_for(Duration::from_secs(30), "influxd /ping", || http_ok(&url)).await;
    }

    pub fn stop(&mut self) {
        terminate(self.child.take());
    }

    /// Run an InfluxQL statement; returns the JSON answer.
    pub async fn query(&self, db: &str, q: &str) -> serde_json::Value {
        let url = format!(
            "{}/query?db={}&epoch=ms&q={}",
            self.url(),
            urlencode(db),
            urlencode(q)
        );
        let r = hazgate::tls::http_client_builder()
            .build()
            .unwrap()
            .post(url)
            .send()
            .await
            .unwrap();
        serde_json::from_str(&r.text().await.unwrap()).unwrap()
    }
}

impl Drop for Influx1 {
    fn drop(&mut self) {
        self.stop();
    }
}
