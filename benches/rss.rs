//! Memory of the whole gateway with 10,000 points at 1 s, measured the way DESIGN.md
//! states the target (< 50 MB RSS).
//!
//! A simulated site of 200 Modbus TCP devices × 50 f32 values (HAZGATE_BENCH_POINTS,
//! default 10,000, in devices of 50) runs in a separate process: this bench binary
//! re-executed as a `hazgate-sim` farm, so its memory is not counted. The real
//! `hazgate run` binary polls every device once a second, stores every change in its
//! SQLite store, serves the API and dashboard, and streams the live state to one
//! WebSocket client (a dashboard). After a warm-up (HAZGATE_BENCH_WARMUP_SECS, default
//! 20 s) the gateway's `VmRSS` is sampled once a second for HAZGATE_BENCH_SECS
//! (default 20 s); the bench prints the last and the largest sample, `VmHWM`, and the
//! gateway's CPU share over the window.
//!
//! `cargo bench --bench rss`.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use futures_util::StreamExt;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

#[path = "support/process.rs"]
mod process;
use process::{cpu_s, run_farm, status_kb};

const VALUES: usize = 50;
const TOKEN: &str = "rss-bench-viewer-token";

fn env_or(key: &str, default: u64) -> u64 {
    std::env::var(key)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn scenario(devices: usize) -> String {
    let mut s = String::from("name = \"rss\"\nseed = 7\n");
    for v in 0..VALUES {
        s += &format!(
            "[[signals]]\nid = \"s{v}\"\nkeyframes = [[0, {}]]\nnoise_std = 0.05\nnoise_period_ms = 500\n",
            10.0 + v as f64
        );
    }
    for d in 0..devices {
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

fn config(ports: &[u16], db: &std::path::Path, listen: &str) -> String {
    let mut s = format!(
        "[site]\nid = \"B\"\nname = \"rss\"\nkind = \"chemical_plant\"\nrule_profile = \"bench\"\n\n\
         [storage]\npath = \"{}\"\n\n[api]\nlisten = \"{listen}\"\n\n\
         [[api.tokens]]\nname = \"bench\"\nrole = \"viewer\"\nsha256 = \"{}\"\n\n",
        db.display(),
        hex(&hazgate::api::hash_token(TOKEN))
    );
    for (d, port) in ports.iter().enumerate() {
        s += &format!(
            "[[devices]]\nid = \"d{d}\"\nprotocol = \"modbus_tcp\"\nhost = \"127.0.0.1\"\nport = {port}\npoll_interval_ms = 1000\n\n"
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

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn main() {
    let points = env_or("HAZGATE_BENCH_POINTS", 10_000) as usize;
    let devices = (points / VALUES).max(1);
    if let Ok(path) = std::env::var("HAZGATE_BENCH_FARM") {
        run_farm(&path, devices);
        return;
    }
    // `cargo bench` passes `--bench`; under `cargo test --all-targets` this long
    // measurement is not run.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let warmup = env_or("HAZGATE_BENCH_WARMUP_SECS", 20);
    let secs = env_or("HAZGATE_BENCH_SECS", 20).max(1);
    let dir = tempfile::tempdir().expect("tempdir");
    let sc_path = dir.path().join("farm.toml");
    std::fs::write(&sc_path, scenario(devices)).expect("write scenario");
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

    let listen = format!("127.0.0.1:{}", free_port());
    let cfg_path = dir.path().join("rss.toml");
    std::fs::write(
        &cfg_path,
        config(&ports, &dir.path().join("rss.db"), &listen),
    )
    .expect("write config");
    let mut gw = Command::new(env!("CARGO_BIN_EXE_hazgate"))
        .args(["run", "--config"])
        .arg(&cfg_path)
        .env("HAZGATE_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("start hazgate run");
    let pid = gw.id().to_string();

    // One dashboard: a WebSocket client that reads every frame.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let frames = rt.block_on(async {
        let url = format!("ws://{listen}/api/v1/live");
        let deadline = Instant::now() + Duration::from_secs(30);
        let ws = loop {
            let mut req = url.as_str().into_client_request().unwrap();
            req.headers_mut()
                .insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
            match tokio_tungstenite::connect_async(req).await {
                Ok((ws, _)) => break ws,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("the gateway's API did not answer: {e}"),
            }
        };
        let (_, mut read) = ws.split();
        let frames = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let n = frames.clone();
        tokio::spawn(async move {
            while let Some(Ok(_)) = read.next().await {
                n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        });
        frames
    });
    // Keep the client reading on a thread of its own.
    std::thread::spawn(move || rt.block_on(std::future::pending::<()>()));

    std::thread::sleep(Duration::from_secs(warmup));
    let (c0, t0) = (cpu_s(&pid), Instant::now());
    let mut max_rss = 0;
    let mut rss = 0;
    for _ in 0..secs {
        std::thread::sleep(Duration::from_secs(1));
        rss = status_kb(&pid, "VmRSS:");
        max_rss = max_rss.max(rss);
    }
    let (c1, t1) = (cpu_s(&pid), Instant::now());
    let hwm = status_kb(&pid, "VmHWM:");
    let frames = frames.load(std::sync::atomic::Ordering::Relaxed);
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    let _ = gw.wait();
    let _ = farm.kill();
    let _ = farm.wait();
    let share = (c1 - c0) / (t1 - t0).as_secs_f64() * 100.0;
    println!(
        "rss: hazgate run, {} points on {devices} Modbus TCP devices at 1 s, store + API + one WebSocket client ({frames} frames): RSS {:.1} MB (largest sample {:.1} MB, VmHWM {:.1} MB) after {warmup} s, {share:.2} % of one core",
        devices * VALUES,
        rss as f64 / 1024.0,
        max_rss as f64 / 1024.0,
        hwm as f64 / 1024.0,
    );
}
