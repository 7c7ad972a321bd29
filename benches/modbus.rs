//! Modbus polling cost, measured the way DESIGN.md states the targets.
//!
//! A simulated site of 100 devices × 50 holding registers (25 f32 values each) runs in
//! a separate process (this bench binary re-executed as the farm), so its CPU is not
//! counted. Then:
//!
//! 1. **Steady load**: the real `hazgate run` binary polls every device once a second
//!    and stores every change in its SQLite store. Its CPU share and RSS are read from
//!    `/proc/<pid>` over a measured window. Targets: < 2 % of one core, < 30 MB RSS.
//! 2. **Maximum rate**: the gateway (sources + engine, outputs counting only) runs in
//!    this process with a 1 ms poll interval, so every link polls back to back; readings
//!    per CPU-second of this process. Target: ≥ 500,000.
//! 3. **Planning**: Modbus requests per poll cycle with request planning, and with one
//!    request per point as naive pollers do.
//!
//! Run with `cargo bench --bench modbus`. `HAZGATE_BENCH_SECS` sets the measured
//! window (default 20 s).

#![allow(clippy::expect_used, clippy::unwrap_used)]

use hazgate::config::Config;
use hazgate::engine::{EngineSpec, Event};
use hazgate::gateway::{self, Outputs, Plan};
use hazgate::model::Reading;
use hazgate::sources::modbus::plan::{plan, Limits};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[path = "support/process.rs"]
mod process;
use process::{cpu_s, status_kb};

const DEVICES: usize = 100;
const VALUES: usize = 25;

fn scenario() -> String {
    let mut s = String::from("name = \"bench\"\nseed = 7\n");
    for v in 0..VALUES {
        s += &format!(
            "[[signals]]\nid = \"s{v}\"\nkeyframes = [[0, {}]]\nnoise_std = 0.05\nnoise_period_ms = 500\n",
            10.0 + v as f64
        );
    }
    for d in 0..DEVICES {
        s += &format!("[[devices]]\nid = \"d{d}\"\nport = {}\n", 20000 + d);
        for v in 0..VALUES {
            s += &format!(
                "[[devices.points]]\nid = \"p{v}\"\ntable = \"holding\"\naddress = {}\ntype = \"f32\"\nsignal = \"s{v}\"\n",
                v * 2
            );
        }
    }
    s
}

fn config(ports: &[u16], poll_ms: u64, db: &std::path::Path) -> String {
    let mut s = format!(
        "[site]\nid = \"B\"\nname = \"bench\"\nkind = \"chemical_plant\"\nrule_profile = \"bench\"\n\n[storage]\npath = \"{}\"\n\n",
        db.display()
    );
    for (d, port) in ports.iter().enumerate() {
        s += &format!(
            "[[devices]]\nid = \"d{d}\"\nprotocol = \"modbus_tcp\"\nhost = \"127.0.0.1\"\nport = {port}\npoll_interval_ms = {poll_ms}\nfast_poll_interval_ms = {poll_ms}\n\n"
        );
    }
    for d in 0..ports.len() {
        for v in 0..VALUES {
            s += &format!(
                "[[points]]\nid = \"d{d}-p{v}\"\nname = \"p\"\nkind = \"pressure\"\nunit = \"kPa\"\nrange_min = 0\nrange_max = 100\ndevice = \"d{d}\"\nmodbus = {{ table = \"holding\", address = {}, data_type = \"f32\" }}\n  [[points.thresholds]]\n  name = \"高\"\n  direction = \"high\"\n  trigger = 90\n  restore = 88\n  colour = \"orange\"\n\n",
                v * 2
            );
        }
    }
    s
}

#[derive(Clone)]
struct Count(Arc<AtomicU64>);
impl Outputs for Count {
    async fn readings(&mut self, readings: Vec<Reading>) {
        self.0.fetch_add(readings.len() as u64, Ordering::Relaxed);
    }
    async fn events(&mut self, _spec: &EngineSpec, _events: &[Event]) {}
}

fn main() {
    if let Ok(path) = std::env::var("HAZGATE_BENCH_FARM") {
        process::run_farm(&path, DEVICES);
        return;
    }
    // `cargo bench` passes `--bench`; under `cargo test --all-targets` this long
    // measurement is not run (benches are measurements, not tests).
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let secs: u64 = std::env::var("HAZGATE_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let dir = tempfile::tempdir().expect("tempdir");
    let sc_path = dir.path().join("farm.toml");
    std::fs::write(&sc_path, scenario()).expect("write scenario");
    let mut farm = Command::new(std::env::current_exe().expect("exe"))
        .env("HAZGATE_BENCH_FARM", &sc_path)
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the farm");
    let mut line = String::new();
    BufReader::new(farm.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("farm ports");
    let ports: Vec<u16> = line
        .trim()
        .strip_prefix("PORTS ")
        .expect("PORTS line")
        .split(',')
        .map(|p| p.parse().expect("port"))
        .collect();

    // 3. Planning.
    let cfg_text = config(&ports, 1000, &dir.path().join("steady.db"));
    let cfg = Config::from_toml_str(&cfg_text, "bench.toml").expect("bench config");
    let planned = Plan::from_config(&cfg);
    let with: usize = planned
        .links
        .iter()
        .flat_map(|l| &l.devices)
        .map(|d| d.blocks.len())
        .sum();
    let naive: usize = planned
        .links
        .iter()
        .flat_map(|l| &l.devices)
        .map(|d| {
            let items: Vec<_> = d.blocks.iter().flat_map(|b| b.items.clone()).collect();
            plan(
                &items,
                Limits {
                    max_registers: 2,
                    max_gap_registers: 0,
                    ..Limits::default()
                },
                &[],
            )
            .len()
        })
        .sum();
    println!(
        "planning: {with} requests per cycle with planning, {naive} with one request per point"
    );

    // 1. Steady load through the real binary.
    let cfg_path = dir.path().join("steady.toml");
    std::fs::write(&cfg_path, &cfg_text).expect("write config");
    let mut gw = Command::new(env!("CARGO_BIN_EXE_hazgate"))
        .args(["run", "--config"])
        .arg(&cfg_path)
        .env("HAZGATE_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("start hazgate run");
    let pid = gw.id().to_string();
    std::thread::sleep(Duration::from_secs(5));
    let (c0, t0) = (cpu_s(&pid), Instant::now());
    std::thread::sleep(Duration::from_secs(secs));
    let (c1, t1) = (cpu_s(&pid), Instant::now());
    let rss = status_kb(&pid, "VmRSS:");
    let hwm = status_kb(&pid, "VmHWM:");
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    let _ = gw.wait();
    let share = (c1 - c0) / (t1 - t0).as_secs_f64() * 100.0;
    println!(
        "steady: {DEVICES} devices x {} registers at 1 s ({} readings/s, every change stored): {share:.2} % of one core, RSS {:.1} MB (peak {:.1} MB)",
        VALUES * 2,
        DEVICES * VALUES,
        rss as f64 / 1024.0,
        hwm as f64 / 1024.0
    );

    // 2. Maximum rate, in process.
    let cfg = Config::from_toml_str(&config(&ports, 1, &dir.path().join("max.db")), "bench.toml")
        .expect("config");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let count = Count(Arc::new(AtomicU64::new(0)));
    let me = std::process::id().to_string();
    let (rate, per_cpu) = rt.block_on(async {
        let (stop, shutdown) = tokio::sync::watch::channel(false);
        let running = gateway::start(Plan::from_config(&cfg), count.clone(), shutdown, 1);
        tokio::time::sleep(Duration::from_secs(3)).await;
        let (n0, c0, t0) = (count.0.load(Ordering::Relaxed), cpu_s(&me), Instant::now());
        tokio::time::sleep(Duration::from_secs(secs)).await;
        let (n1, c1, t1) = (count.0.load(Ordering::Relaxed), cpu_s(&me), Instant::now());
        let _ = stop.send(true);
        running.join().await;
        let n = (n1 - n0) as f64;
        (n / (t1 - t0).as_secs_f64(), n / (c1 - c0))
    });
    println!(
        "max rate: {rate:.0} readings/s, {per_cpu:.0} readings per CPU-second of the gateway (farm on the other core)"
    );
    let _ = farm.kill();
    let _ = farm.wait();
}
