//! MQTT ingest end to end: publishers → Mosquitto → hazgate (MQTT source → engine →
//! durable store), counted at the store.
//!
//! Setup: a Mosquitto started here on a free loopback port (persistence off,
//! unlimited queue), `PUBLISHERS` publisher processes each feeding one topic from a
//! file of JSON lines (`{"value":N,"ts":<ms>,"quality":"good"}`) as QoS 1 messages,
//! and in this process the gateway as
//! `hazgate run` builds it: `Plan::from_config`, the engine task, and `StoreOutputs`
//! over a `StoreWriter` on a SQLite store in a temporary directory (the config's
//! `[storage]` defaults). The device has `point_topic = "bench/{point}"` with JSON
//! value, timestamp and quality paths. Every value differs, so every reading is a row.
//!
//! Two kinds of publisher: `mosquitto_pub -l -q 1 -M 1000`, which spends about as
//! much CPU per message as the broker, and a lean one (this binary re-executed,
//! [`lean_publish`]) that writes many PUBLISH packets per system call and costs about
//! 1 µs per message, so the broker and the gateway get the two cores.
//!
//! Three phases per broker in-flight window (`max_inflight_messages`, Mosquitto's
//! default 20, and 1000):
//! - **live** and **live/lean**: the gateway is subscribed, the publishers
//!   (`mosquitto_pub`, then the lean ones) run; messages/s from the first message
//!   received to the last reading stored;
//! - **backlog**: the gateway is stopped, the publishers fill its persistent session,
//!   the gateway starts and drains it; messages/s of the drain alone.
//!
//! CPU: this process's user+system time (`/proc/self/stat`) over the phase, divided
//! by the messages — the gateway's CPU per message, engine and SQLite included (the
//! publishers and the broker are other processes; their CPU is shown for context).
//!
//! Run: `cargo bench --bench mqtt_ingest` (`MQTT_BENCH_MESSAGES` to change the count).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use hazgate::config::Config;
use hazgate::gateway::{self, Plan, Running, StoreOutputs};
use hazgate::sources::mqtt::MqttStats;
use hazgate::store::{Store, StoreStatus, StoreWriter};
use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

const PUBLISHERS: usize = 4;

fn ticks_per_s() -> f64 {
    let out = Command::new("getconf").arg("CLK_TCK").output();
    out.ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// User + system CPU seconds of a process.
fn cpu_s(pid: &str, tck: f64) -> f64 {
    own_cpu_s(
        &std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default(),
        tck,
    )
}

/// Two fields of a `/proc/<pid>/stat` line, counted from the one after `(comm)`,
/// added up and converted from clock ticks to seconds.
fn stat_s(stat: &str, fields: [usize; 2], tck: f64) -> f64 {
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let t = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (t(fields[0]) + t(fields[1])) / tck
}

/// User + system CPU seconds (utime, stime) of the process whose stat line this is.
fn own_cpu_s(stat: &str, tck: f64) -> f64 {
    stat_s(stat, [11, 12], tck)
}

/// User + system CPU seconds (cutime, cstime) of a process's waited-for children.
fn children_cpu_s(stat: &str, tck: f64) -> f64 {
    stat_s(stat, [13, 14], tck)
}

/// Read and write system calls of this process so far (`/proc/self/io`).
fn syscalls() -> (u64, u64) {
    let io = std::fs::read_to_string("/proc/self/io").unwrap_or_default();
    let field = |name: &str| {
        io.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    (field("syscr:"), field("syscw:"))
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

/// Start the publishers; each sends the lines of `file` to `bench/p<k>`. Each runs
/// under a shell that prints its own `/proc` stat line when the publisher is done, so
/// the publishers' CPU can be read ([`Publishers::wait`]).
fn publish(port: u16, file: &std::path::Path) -> Publishers {
    let children = (0..PUBLISHERS)
        .map(|k| {
            Command::new("sh")
                .args(["-c", "mosquitto_pub \"$@\"; cat /proc/$$/stat", "sh"])
                .args(["-h", "127.0.0.1", "-p", &port.to_string()])
                .args(["-q", "1", "-M", "1000", "-l", "-t", &format!("bench/p{k}")])
                .args(["-i", &format!("bench-pub-{k}")])
                .stdin(std::fs::File::open(file).unwrap())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .expect("mosquitto_pub (Debian package `mosquitto-clients`)")
        })
        .collect();
    Publishers {
        children,
        lean: false,
    }
}

/// Start the lean publishers: this bench binary again, one process per topic, each
/// sending the lines of `file` to `bench/p<k>` as QoS 1 PUBLISH packets ([`lean_publish`]).
fn publish_lean(port: u16, file: &std::path::Path) -> Publishers {
    let me = std::env::current_exe().unwrap();
    let children = (0..PUBLISHERS)
        .map(|k| {
            Command::new(&me)
                .env(
                    LEAN_PUBLISHER,
                    format!("{port},bench/p{k},bench-lean-{k},{}", file.display()),
                )
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .unwrap()
        })
        .collect();
    Publishers {
        children,
        lean: true,
    }
}

/// Set in a re-executed bench binary that is to run [`lean_publish`]:
/// `port,topic,client id,file of payload lines`.
const LEAN_PUBLISHER: &str = "HAZGATE_BENCH_LEAN_PUBLISHER";

/// PUBLISH packets a lean publisher may have sent and not yet had acknowledged, as
/// `mosquitto_pub -M 1000`.
const LEAN_WINDOW: usize = 1000;

/// The MQTT remaining-length encoding.
fn remaining_length(out: &mut Vec<u8>, mut n: usize) {
    loop {
        let byte = (n % 128) as u8;
        n /= 128;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// A publisher that costs little CPU, so that the broker and the gateway get most of
/// the two cores: one MQTT 3.1.1 connection (clean session) over which every line of
/// the file goes out as a QoS 1 PUBLISH, with up to [`LEAN_WINDOW`] unacknowledged,
/// written many packets per system call, as a sensor gateway sends a burst. Every
/// PUBACK is checked. Prints this process's CPU seconds (`/proc/self/stat` format)
/// when all are acknowledged.
fn lean_publish(arg: &str) {
    use std::io::Read;
    let mut parts = arg.splitn(4, ',');
    let mut next = || parts.next().expect("port,topic,client,file");
    let (port, topic, client, file) = (next(), next(), next(), next());
    let lines = std::fs::read_to_string(file).unwrap();
    let payloads: Vec<&str> = lines.lines().collect();
    let mut stream =
        std::net::TcpStream::connect(("127.0.0.1", port.parse::<u16>().unwrap())).expect("broker");
    stream.set_nodelay(true).unwrap();
    // CONNECT: protocol "MQTT" level 4, clean session, keep-alive 60 s.
    let mut connect = vec![0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 60];
    connect.extend_from_slice(&(client.len() as u16).to_be_bytes());
    connect.extend_from_slice(client.as_bytes());
    let mut packet = vec![0x10];
    remaining_length(&mut packet, connect.len());
    packet.extend_from_slice(&connect);
    stream.write_all(&packet).unwrap();
    let mut connack = [0u8; 4];
    stream.read_exact(&mut connack).unwrap();
    assert_eq!(connack, [0x20, 2, 0, 0], "CONNACK refused");

    let (n, mut sent, mut acked) = (payloads.len(), 0usize, 0usize);
    let mut out = Vec::with_capacity(1 << 17);
    let mut input = vec![0u8; 1 << 16];
    let mut carry = 0usize;
    loop {
        // Refill the window once half of it is acknowledged, many packets per write.
        if sent < n && sent - acked <= LEAN_WINDOW / 2 {
            out.clear();
            while sent < n && sent - acked < LEAN_WINDOW {
                let payload = payloads[sent].as_bytes();
                // Packet ids 1..=65535, never 0; the window keeps them unique in flight.
                let id = (sent % 65_535 + 1) as u16;
                out.push(0x32);
                remaining_length(&mut out, 2 + topic.len() + 2 + payload.len());
                out.extend_from_slice(&(topic.len() as u16).to_be_bytes());
                out.extend_from_slice(topic.as_bytes());
                out.extend_from_slice(&id.to_be_bytes());
                out.extend_from_slice(payload);
                sent += 1;
            }
            stream.write_all(&out).unwrap();
        }
        if acked == n {
            break;
        }
        // Let PUBACKs gather rather than read them a few at a time.
        std::thread::sleep(Duration::from_micros(500));
        let got = stream.read(&mut input[carry..]).unwrap();
        assert!(got > 0, "broker closed the connection");
        let have = carry + got;
        let whole = have / 4 * 4;
        for puback in input[..whole].chunks_exact(4) {
            let id = (acked % 65_535 + 1) as u16;
            assert_eq!(puback[..2], [0x40, 2], "expected a PUBACK");
            assert_eq!(puback[2..], id.to_be_bytes(), "PUBACK out of order");
            acked += 1;
        }
        input.copy_within(whole..have, 0);
        carry = have - whole;
    }
    stream.write_all(&[0xe0, 0]).unwrap();
    print!("{}", std::fs::read_to_string("/proc/self/stat").unwrap());
}

/// Publisher processes; each prints a `/proc/<pid>/stat` line when done: its own
/// (`lean`) or its shell's, whose waited-for child it was.
struct Publishers {
    children: Vec<Child>,
    lean: bool,
}

impl Publishers {
    /// Wait for every publisher; their CPU seconds together.
    fn wait(self, tck: f64) -> f64 {
        self.children
            .into_iter()
            .map(|c| {
                let out = c.wait_with_output().unwrap();
                assert!(out.status.success(), "a publisher failed");
                let stat = String::from_utf8_lossy(&out.stdout);
                if self.lean {
                    own_cpu_s(&stat, tck)
                } else {
                    children_cpu_s(&stat, tck)
                }
            })
            .sum()
    }
}

/// The gateway as `hazgate run` builds it (sources, engine, store), without the API.
struct Gateway {
    running: Running,
    store: Arc<StoreStatus>,
    store_task: tokio::task::JoinHandle<()>,
    stop: watch::Sender<bool>,
    _dir: tempfile::TempDir,
}

impl Gateway {
    fn start(port: u16, client: &str) -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        let mut text = format!(
            "[site]\nid = \"B\"\nname = \"bench\"\nkind = \"chemical_plant\"\nrule_profile = \"b\"\n[storage]\npath = \"{}\"\n[[devices]]\nid = \"D\"\nprotocol = \"mqtt\"\nbroker = \"mqtt://127.0.0.1:{port}\"\nclient_id = \"{client}\"\npoint_topic = \"bench/{{point}}\"\n",
            dir.path().join("bench.db").display()
        );
        for k in 0..PUBLISHERS {
            text += &format!("[[points]]\nid = \"p{k}\"\nname = \"p{k}\"\nkind = \"other\"\nrange_min = 0.0\nrange_max = 1e9\ndevice = \"D\"\nmqtt = {{ ts_path = \"ts\", quality_path = \"quality\" }}\n");
        }
        let config = Config::from_toml_str(&text, "bench.toml").unwrap();
        let plan = Plan::from_config(&config);
        let mut store = Store::open(&config.store_options()).unwrap();
        store
            .register_points(&config.point_meta(&plan.spec))
            .unwrap();
        let first = store.next_alarm_id().unwrap();
        let (writer, store_task) = StoreWriter::spawn(store);
        let status = writer.status().clone();
        let (stop, shutdown) = watch::channel(false);
        let outputs = StoreOutputs {
            writer,
            wake: Vec::new(),
            lost: 0,
        };
        let running = gateway::start(plan, outputs, shutdown, first);
        Gateway {
            running,
            store: status,
            store_task,
            stop,
            _dir: dir,
        }
    }

    /// Messages received and rows stored so far.
    fn counts(&self) -> (u64, u64) {
        (
            self.mqtt().messages.load(Relaxed),
            self.store.readings_stored.load(Relaxed),
        )
    }

    fn mqtt(&self) -> Arc<MqttStats> {
        self.running.mqtt_stats[0].1.clone()
    }

    async fn subscribed(&self) {
        let stats = self.mqtt();
        while stats.subacks.load(Relaxed) == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    async fn stop(self) {
        self.stop.send(true).unwrap();
        self.running.join().await;
        let _ = self.store_task.await;
    }
}

struct Figures {
    messages: u64,
    stored: u64,
    wall_s: f64,
    gateway_cpu_s: f64,
    broker_cpu_s: f64,
    publishers_cpu_s: Option<f64>,
    /// Read and write system calls of the gateway.
    reads: u64,
    writes: u64,
    /// Batches the source handed to the engine.
    batches: u64,
    /// Readings transactions the store committed.
    commits: u64,
}

/// Wait until `n` messages were received and their readings stored; time and CPU
/// from the first message received.
/// `base`: [`Gateway::counts`] before the first message could arrive.
async fn receive(gw: &Gateway, base: (u64, u64), n: u64, tck: f64, broker_pid: &str) -> Figures {
    let mqtt = gw.mqtt();
    let (m0, s0) = base;
    while mqtt.messages.load(Relaxed) == m0 {
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    let t0 = Instant::now();
    let cpu0 = cpu_s("self", tck);
    let b0 = cpu_s(broker_pid, tck);
    let (r0, w0) = syscalls();
    // Every message is one reading and every reading differs from the last: one row
    // each (plus the device's status reading, stored before the first message).
    let batches0 = mqtt.batches.load(Relaxed);
    let commits0 = gw.store.readings_commits.load(Relaxed);
    let mut last = (0, Instant::now());
    loop {
        let stored = gw.store.readings_stored.load(Relaxed) - s0;
        if stored >= n && mqtt.messages.load(Relaxed) - m0 >= n {
            break;
        }
        if stored != last.0 {
            last = (stored, Instant::now());
        }
        assert!(
            last.1.elapsed() < Duration::from_secs(20),
            "stalled after {stored} of {n} rows: {mqtt:?} {:?}",
            gw.store
        );
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
    Figures {
        messages: mqtt.messages.load(Relaxed) - m0,
        stored: gw.store.readings_stored.load(Relaxed) - s0,
        wall_s: t0.elapsed().as_secs_f64(),
        gateway_cpu_s: cpu_s("self", tck) - cpu0,
        broker_cpu_s: cpu_s(broker_pid, tck) - b0,
        publishers_cpu_s: None,
        reads: syscalls().0 - r0,
        writes: syscalls().1 - w0,
        batches: mqtt.batches.load(Relaxed) - batches0,
        commits: gw.store.readings_commits.load(Relaxed) - commits0,
    }
}

fn report(phase: &str, inflight: u32, f: &Figures) {
    let per = |cpu_s: f64| cpu_s * 1e6 / f.messages as f64;
    let publishers = f.publishers_cpu_s.map_or(String::new(), |p| {
        format!("; publishers {:5.2} µs/msg", per(p))
    });
    println!(
        "mqtt_ingest/{phase:<9} inflight {inflight:>4}: {:>8} msgs ({} rows stored) in {:6.2} s = {:>8.0} msg/s; gateway CPU {:5.2} s = {:5.2} µs/msg ({:3.0} % of a core); mosquitto {:5.2} µs/msg{publishers}; gateway syscalls/msg {:.2} read {:.2} write; {:.1} msgs/batch, {:.1} rows/commit",
        f.messages,
        f.stored,
        f.wall_s,
        f.messages as f64 / f.wall_s,
        f.gateway_cpu_s,
        per(f.gateway_cpu_s),
        100.0 * f.gateway_cpu_s / f.wall_s,
        per(f.broker_cpu_s),
        f.reads as f64 / f.messages as f64,
        f.writes as f64 / f.messages as f64,
        f.messages as f64 / f.batches.max(1) as f64,
        f.stored as f64 / f.commits.max(1) as f64,
    );
}

fn main() {
    if let Ok(arg) = std::env::var(LEAN_PUBLISHER) {
        lean_publish(&arg);
        return;
    }
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
            // Live, with either publisher.
            let b = broker(inflight);
            let pid = b.child.id().to_string();
            for (phase, lean) in [("live", false), ("live/lean", true)] {
                let gw = Gateway::start(b.port, &format!("bench-{}", phase.replace('/', "-")));
                gw.subscribed().await;
                let base = gw.counts();
                let pubs = if lean {
                    publish_lean(b.port, &lines)
                } else {
                    publish(b.port, &lines)
                };
                let mut f = receive(&gw, base, total, tck, &pid).await;
                f.publishers_cpu_s = Some(pubs.wait(tck));
                report(phase, inflight, &f);
                gw.stop().await;
            }

            // Backlog: fill the stopped gateway's session, then drain it.
            let gw = Gateway::start(b.port, "bench-backlog");
            gw.subscribed().await;
            gw.stop().await;
            let publishers_cpu_s = publish(b.port, &lines).wait(tck);
            let gw = Gateway::start(b.port, "bench-backlog");
            let base = gw.counts();
            let mut f = receive(&gw, base, total, tck, &pid).await;
            f.publishers_cpu_s = Some(publishers_cpu_s);
            report("backlog", inflight, &f);
            gw.stop().await;
        }
    });
}
