//! Reading received → alarm frame on the WebSocket, with 10,000 points at 1 s.
//!
//! The gateway runs in-process with no sources; every second 10,000 readings are handed
//! to the engine (control channel, batches of 50 like one Modbus block each), one of
//! them above its alarm threshold. A WebSocket client (same process, over
//! 127.0.0.1) receives the live stream; the latency is from handing over the batch
//! with the alarm reading to receiving the delta frame that carries the new alarm.
//! Prints p50 / p99 / max and the process RSS (gateway + API + the client). The
//! first second, when every point enters the live state, is a warm-up: printed on
//! its own and not counted.
//!
//! `cargo bench --bench ws_latency` (HAZGATE_BENCH_SECONDS, default 30).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use futures_util::StreamExt;
use hazgate::api::{self, ApiState, Catalog, TokenEntry, Tokens};
use hazgate::config::{Config, Role};
use hazgate::gateway::{self, Command, LogOutputs, Plan};
use hazgate::model::{PointId, Quality, Reading};
use std::fmt::Write as _;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

const BATCH: usize = 50;

/// Points in the generated site (HAZGATE_BENCH_POINTS, default 10,000; a multiple of
/// the batch size).
fn points() -> usize {
    std::env::var("HAZGATE_BENCH_POINTS")
        .ok()
        .and_then(|s| s.parse::<usize>().ok())
        .map_or(10_000, |n| (n / BATCH).max(1) * BATCH)
}

fn config(points: usize) -> String {
    let mut s = String::from(
        "[site]\nid = \"1\"\nname = \"bench\"\nkind = \"chemical_plant\"\nrule_profile = \"b\"\n\n\
         [[devices]]\nid = \"PLC\"\nprotocol = \"modbus_tcp\"\nhost = \"127.0.0.1\"\nport = 1\n\n",
    );
    for i in 0..points {
        let _ = write!(
            s,
            "[[points]]\nid = \"P{i}\"\nname = \"p{i}\"\nkind = \"ch4\"\nrange_min = 0.0\nrange_max = 4.0\n\
             device = \"PLC\"\nmodbus = {{ table = \"input\", address = {i}, data_type = \"u16\" }}\n\
             [[points.thresholds]]\nname = \"alarm\"\ndirection = \"high\"\ntrigger = 1.0\nrestore = 1.0\ncolour = \"orange\"\n\n"
        );
    }
    s
}

fn rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn main() {
    // `cargo bench` passes `--bench`; under `cargo test --all-targets` this long
    // measurement is not run (benches are measurements, not tests).
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let seconds: u64 = std::env::var("HAZGATE_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    let points = points();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let config = Config::from_toml_str(&config(points), "bench.toml").unwrap();
        let mut plan = Plan::from_config(&config);
        plan.links.clear();
        let catalog = Catalog::new(&config, &plan.spec);
        let (stop, shutdown) = tokio::sync::watch::channel(false);
        let running = gateway::start(plan, LogOutputs::default(), shutdown.clone(), 1);
        let token = "bench-token";
        let tokens = Tokens::new(vec![TokenEntry {
            name: "b".into(),
            role: Role::Viewer,
            sha256: api::hash_token(token),
        }]);
        let state = ApiState::new(catalog, &running, tokens, None);
        let control = state.control.clone();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(api::serve(listener, state, shutdown));
        let mut req = format!("ws://{addr}/api/v1/live").into_client_request().unwrap();
        req.headers_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        let (ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
        let (_, mut read) = ws.split();

        // The client notes when each alarm point first shows up unacknowledged.
        let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel::<(u64, Instant)>();
        tokio::spawn(async move {
            let mut known = std::collections::HashSet::new();
            while let Some(Ok(msg)) = read.next().await {
                let Message::Text(t) = msg else { continue };
                let at = Instant::now();
                let v: serde_json::Value = serde_json::from_str(&t).unwrap();
                if let Some(alarms) = v.get("alarms").and_then(|a| a.as_array()) {
                    for a in alarms {
                        let id = a["id"].as_u64().unwrap();
                        if known.insert(id) {
                            let _ = seen_tx.send((a["point"].as_u64().unwrap(), at));
                        }
                    }
                }
            }
        });

        let mut latencies = Vec::new();
        // (latency, second) to say when the slowest frames came.
        let mut worst = Vec::new();
        let mut warmup = None;
        let mut cpu_ms = Vec::new();
        let start = Instant::now();
        for s in 0..seconds {
            let tick = Instant::now();
            let alarm_point = (s as usize * 7919) % points;
            let now = gateway::now();
            let mut sent_at = None;
            for chunk in 0..points / BATCH {
                let batch: Vec<Reading> = (chunk * BATCH..(chunk + 1) * BATCH)
                    .map(|i| Reading {
                        point: PointId(i as u32),
                        ts: now,
                        value: if i == alarm_point {
                            1.2
                        } else {
                            0.3 + (i % 10) as f64 * 0.01 + (s % 3) as f64 * 0.001
                        },
                        quality: Quality::Good,
                    })
                    .collect();
                let has_alarm = (chunk * BATCH..(chunk + 1) * BATCH).contains(&alarm_point);
                let t = Instant::now();
                control.send(Command::Inject(batch)).await.unwrap();
                if has_alarm {
                    sent_at = Some(t);
                }
            }
            let sent = sent_at.unwrap();
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                match tokio::time::timeout_at(deadline.into(), seen_rx.recv()).await {
                    Ok(Some((p, at))) if p as usize == alarm_point => {
                        if s == 0 {
                            // The first second fills the live state for every point.
                            warmup = Some(at.duration_since(sent));
                        } else {
                            latencies.push(at.duration_since(sent));
                            worst.push((at.duration_since(sent), s));
                        }
                        break;
                    }
                    Ok(Some(_)) => {}
                    _ => panic!("no alarm frame for point {alarm_point} within 5 s"),
                }
            }
            cpu_ms.push(tick.elapsed().as_secs_f64() * 1000.0);
            let next = start + Duration::from_secs(s + 1);
            tokio::time::sleep_until(next.into()).await;
        }
        latencies.sort();
        let pct = |q: f64| latencies[((latencies.len() as f64 - 1.0) * q).round() as usize];
        println!(
            "ws_latency: {points} points at 1 s, {} alarms: reading → WebSocket alarm frame p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; RSS {:.1} MB (gateway + API + client in one process)",
            latencies.len(),
            pct(0.5).as_secs_f64() * 1000.0,
            pct(0.99).as_secs_f64() * 1000.0,
            latencies.last().unwrap().as_secs_f64() * 1000.0,
            rss_mb()
        );
        worst.sort();
        let slowest: Vec<String> = worst
            .iter()
            .rev()
            .take(3)
            .map(|(d, s)| format!("{:.1} ms at second {s}", d.as_secs_f64() * 1000.0))
            .collect();
        println!(
            "ws_latency: slowest: {}; second 0 (warm-up: every point enters the live state, not counted): {:.1} ms",
            slowest.join(", "),
            warmup.unwrap_or_default().as_secs_f64() * 1000.0
        );
        let mean_busy = cpu_ms.iter().sum::<f64>() / cpu_ms.len() as f64;
        println!("ws_latency: wall time to hand over {points} readings and see the alarm: mean {mean_busy:.1} ms per second");
        let _ = stop.send(true);
        server.await.unwrap().unwrap();
        running.join().await;
    });
}
