//! MQTT ingest end to end: publishers → Mosquitto → hazgate MQTT source → readings
//! channel, counted at the receiver.
//!
//! Setup: a Mosquitto started here on a free loopback port (persistence off,
//! unlimited queue), `PUBLISHERS` × `mosquitto_pub -l -q 1 -M 1000` processes each
//! feeding one topic from a file of JSON lines
//! (`{"value":N,"ts":<ms>,"quality":"good"}`), and the source in this process with a
//! `point_topic = "bench/{point}"` device (JSON value, timestamp and quality paths),
//! readings channel of 1024 batches as in the gateway.
//!
//! Two phases per broker in-flight window (`max_inflight_messages`, Mosquitto's
//! default 20, and 1000):
//! - **live**: the source is subscribed, the publishers run; messages/s from the
//!   first to the last reading;
//! - **backlog**: the source is stopped, the publishers fill its persistent session,
//!   the source starts and drains it; messages/s of the drain alone.
//!
//! CPU: this process's user+system time (`/proc/self/stat`) over the phase, divided
//! by the messages — that is the gateway's CPU per message (the publishers and the
//! broker are other processes; their CPU is shown for context).
//!
//! Run: `cargo bench --bench mqtt_ingest` (`MQTT_BENCH_MESSAGES` to change the count).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use hazgate::config::Config;
use hazgate::model::Reading;
use hazgate::sources::mqtt::{self, MqttSource, MqttStats};
use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

const PUBLISHERS: usize = 4;

fn ticks_per_s() -> f64 {
    let out = Command::new("getconf").arg("CLK_TCK").output();
    out.ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// User + system CPU seconds of a process.
fn cpu_s(pid: &str, tck: f64) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the `(comm)`; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let t = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (t(11) + t(12)) / tck
}

struct Broker {
    port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn broker(inflight: u32) -> Broker {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let user = Command::new("id").arg("-un").output().unwrap();
    let conf = dir.path().join("m.conf");
    std::fs::write(
        &conf,
        format!(
            "user {}\nlistener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nmax_queued_messages 0\nmax_inflight_messages {inflight}\n",
            String::from_utf8_lossy(&user.stdout).trim()
        ),
    )
    .unwrap();
    let child = Command::new("mosquitto")
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("mosquitto (Debian package `mosquitto`)");
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "mosquitto not up"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    Broker {
        port,
        child,
        _dir: dir,
    }
}

/// Start the publishers; each sends `per` lines of `file` to `bench/p<k>`.
fn publish(port: u16, file: &std::path::Path) -> Vec<Child> {
    (0..PUBLISHERS)
        .map(|k| {
            Command::new("mosquitto_pub")
                .args(["-h", "127.0.0.1", "-p", &port.to_string()])
                .args(["-q", "1", "-M", "1000", "-l", "-t", &format!("bench/p{k}")])
                .args(["-i", &format!("bench-pub-{k}")])
                .stdin(std::fs::File::open(file).unwrap())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("mosquitto_pub (Debian package `mosquitto-clients`)")
        })
        .collect()
}

fn source(
    port: u16,
    client: &str,
) -> (
    MqttSource,
    mpsc::Receiver<Vec<Reading>>,
    watch::Sender<bool>,
    u32,
) {
    let mut text = format!(
        "[site]\nid = \"B\"\nname = \"bench\"\nkind = \"chemical_plant\"\nrule_profile = \"b\"\n[[devices]]\nid = \"D\"\nprotocol = \"mqtt\"\nbroker = \"mqtt://127.0.0.1:{port}\"\nclient_id = \"{client}\"\npoint_topic = \"bench/{{point}}\"\n"
    );
    for k in 0..PUBLISHERS {
        text += &format!("[[points]]\nid = \"p{k}\"\nname = \"p{k}\"\nkind = \"other\"\nrange_min = 0.0\nrange_max = 1e9\ndevice = \"D\"\nmqtt = {{ ts_path = \"ts\", quality_path = \"quality\" }}\n");
    }
    let config = Config::from_toml_str(&text, "bench.toml").unwrap();
    let mut spec = config.engine_spec();
    let devices = mqtt::subscriptions(&config, &mut spec);
    let status = (spec.points.len() - 1) as u32;
    let (tx, rx) = mpsc::channel(1024);
    let (stop, shutdown) = watch::channel(false);
    (MqttSource::start(devices, tx, shutdown), rx, stop, status)
}

struct Figures {
    messages: u64,
    wall_s: f64,
    gateway_cpu_s: f64,
    broker_cpu_s: f64,
}

/// Receive until `n` data readings arrived; time from the first.
async fn receive(
    rx: &mut mpsc::Receiver<Vec<Reading>>,
    status: u32,
    n: u64,
    tck: f64,
    broker_pid: &str,
    stats: &MqttStats,
) -> Figures {
    let mut got = 0u64;
    let mut t0 = None;
    let (mut cpu0, mut b0) = (0.0, 0.0);
    while got < n {
        let Ok(batch) = tokio::time::timeout(Duration::from_secs(20), rx.recv()).await else {
            panic!("stalled after {got} of {n} readings: {stats:?}");
        };
        let batch = batch.expect("closed");
        if t0.is_none() {
            t0 = Some(Instant::now());
            cpu0 = cpu_s("self", tck);
            b0 = cpu_s(broker_pid, tck);
        }
        got += batch.iter().filter(|r| r.point.0 != status).count() as u64;
    }
    Figures {
        messages: got,
        wall_s: t0.map_or(0.0, |t| t.elapsed().as_secs_f64()),
        gateway_cpu_s: cpu_s("self", tck) - cpu0,
        broker_cpu_s: cpu_s(broker_pid, tck) - b0,
    }
}

fn report(phase: &str, inflight: u32, f: &Figures) {
    println!(
        "mqtt_ingest/{phase:<7} inflight {inflight:>4}: {:>8} msgs in {:6.2} s = {:>8.0} msg/s; gateway CPU {:5.2} s = {:5.2} µs/msg ({:3.0} % of a core); mosquitto {:5.2} µs/msg",
        f.messages,
        f.wall_s,
        f.messages as f64 / f.wall_s,
        f.gateway_cpu_s,
        f.gateway_cpu_s * 1e6 / f.messages as f64,
        100.0 * f.gateway_cpu_s / f.wall_s,
        f.broker_cpu_s * 1e6 / f.messages as f64,
    );
}

fn main() {
    // `cargo bench` passes `--bench`; under `cargo test --all-targets` this long
    // measurement is not run (benches are measurements, not tests).
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    // `cargo bench` passes `--bench`; a filter argument that does not match skips.
    if std::env::args()
        .skip(1)
        .any(|a| !a.starts_with('-') && !"mqtt_ingest".contains(&a))
    {
        return;
    }
    let total: u64 = std::env::var("MQTT_BENCH_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let per = total / PUBLISHERS as u64;
    let total = per * PUBLISHERS as u64;
    let dir = tempfile::tempdir().unwrap();
    let lines = dir.path().join("lines.txt");
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&lines).unwrap());
        for i in 0..per {
            writeln!(
                f,
                r#"{{"value":{i},"ts":{},"quality":"good"}}"#,
                1_714_521_600_000u64 + i
            )
            .unwrap();
        }
    }
    let tck = ticks_per_s();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        for inflight in [20u32, 1000] {
            // Live.
            let b = broker(inflight);
            let pid = b.child.id().to_string();
            let (src, mut rx, stop, status) = source(b.port, "bench-live");
            let stats = src.stats[0].1.clone();
            while stats.subacks.load(std::sync::atomic::Ordering::Relaxed) == 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let mut pubs = publish(b.port, &lines);
            let f = receive(&mut rx, status, total, tck, &pid, &stats).await;
            report("live", inflight, &f);
            for p in &mut pubs {
                let _ = p.wait();
            }
            stop.send(true).unwrap();
            drop(rx);
            src.join().await;

            // Backlog: fill the stopped source's session, then drain it.
            let (src, rx, stop, _) = source(b.port, "bench-backlog");
            let stats = src.stats[0].1.clone();
            while stats.subacks.load(std::sync::atomic::Ordering::Relaxed) == 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            stop.send(true).unwrap();
            drop(rx);
            src.join().await;
            for mut p in publish(b.port, &lines) {
                let _ = p.wait();
            }
            let (src, mut rx, stop, status) = source(b.port, "bench-backlog");
            let stats = src.stats[0].1.clone();
            let f = receive(&mut rx, status, total, tck, &pid, &stats).await;
            report("backlog", inflight, &f);
            stop.send(true).unwrap();
            drop(rx);
            src.join().await;
        }
    });
}
