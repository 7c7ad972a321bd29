//! The uplink end to end against Mosquitto.
//!
//! - **alarm latency**: a reading goes into the engine, the alarm transition it
//!   causes is committed to the store (fsync, as in the gateway), the uplink is woken
//!   and publishes it with QoS 1; the time is taken when an independent MQTT
//!   subscriber in this process *receives* it (so it includes the broker hop, a
//!   stricter figure than "PUBLISH sent"). One transition at a time, idle link.
//! - **backlog drain**: `UPLINK_BENCH_BACKLOG` readings (default 1,000,000) wait in
//!   the store as after an outage; the uplink starts and drains them (batches of
//!   1000, QoS 1, acknowledged by the broker); readings/s of the drain. Meanwhile an
//!   alarm transition every 20 ms (a few hundred in all) measures alarm latency
//!   *during* the drain (alarms go first), to the subscriber's receipt, from the
//!   reading and from the commit. The subscriber counts the bulk messages' readings
//!   with a scan, so that it reads as fast as the broker sends (parsing each bulk
//!   message kept alarms queued behind them and inflated the figure).
//!
//! The broker is Mosquitto as installed: Nagle's algorithm on its client sockets, so
//! a PUBACK can be held up to 40 ms behind an earlier one (the uplink's alarm lane
//! does not wait for it). `UPLINK_BENCH_BROKER_NODELAY=1` runs the broker with
//! `set_tcp_nodelay true`.
//!
//! Run: `cargo bench --bench uplink`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../tests/support/mosquitto.rs"]
mod mosquitto;

use hazgate::engine::{Engine, Event};
use hazgate::model::{PointId, Quality, Reading, Timestamp};
use hazgate::store::{PointMeta, Store, StoreOptions};
use hazgate::uplink::{MqttUplink, UplinkOptions, UplinkSink, UplinkTransport};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SITE: &str = "BENCH";

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

/// Percentiles of `us` (µs, in the order measured), and the five slowest with their
/// place in that order (`#k`), to tell a start-up outlier from a steady tail.
fn report(name: &str, us: Vec<f64>) {
    let mut by_time: Vec<(usize, f64)> = us.iter().copied().enumerate().collect();
    by_time.sort_by(|a, b| b.1.total_cmp(&a.1));
    let slowest: Vec<String> = by_time
        .iter()
        .take(5)
        .map(|(k, v)| format!("#{k} {:.1} ms", v / 1000.0))
        .collect();
    let mut us = us;
    us.sort_by(|a, b| a.total_cmp(b));
    println!(
        "{name}: n={} p50={:.2} ms p90={:.2} ms p99={:.2} ms max={:.2} ms; slowest: {}",
        us.len(),
        percentile(&us, 0.5) / 1000.0,
        percentile(&us, 0.9) / 1000.0,
        percentile(&us, 0.99) / 1000.0,
        us.last().copied().unwrap_or(f64::NAN) / 1000.0,
        slowest.join(", ")
    );
}

/// Alarm message ids received → arrival instant.
type Arrivals = Arc<Mutex<HashMap<String, Instant>>>;

fn subscriber(port: u16, arrivals: Arrivals, readings: Arc<std::sync::atomic::AtomicU64>) {
    let mut o = rumqttc::MqttOptions::new(format!("bench-rx-{port}"), "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(30))
        .set_max_packet_size(32 << 20, 1 << 20);
    let (client, mut el) = rumqttc::AsyncClient::new(o, 64);
    tokio::spawn(async move {
        let _ = client
            .subscribe(format!("hazgate/{SITE}/#"), rumqttc::QoS::AtMostOnce)
            .await;
        loop {
            match el.poll().await {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                    let at = Instant::now();
                    if p.topic.ends_with("/alarm") {
                        let v: serde_json::Value = serde_json::from_slice(&p.payload).unwrap();
                        let id = v["id"].as_str().unwrap().to_owned();
                        arrivals.lock().unwrap().insert(id, at);
                    } else if p.topic.ends_with("/realtime") {
                        // Counted with a scan, not parsed: a subscriber slow to read
                        // would hold the alarms queued behind the bulk messages.
                        let n = p
                            .payload
                            .windows(b"\"point\":".len())
                            .filter(|w| *w == b"\"point\":")
                            .count() as u64;
                        readings.fetch_add(n, Ordering::Relaxed);
                    }
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    });
}

fn options(path: &std::path::Path, port: u16) -> UplinkOptions {
    let mut o = UplinkOptions::new(
        path.to_owned(),
        SITE,
        UplinkTransport::Mqtt(MqttUplink {
            host: "127.0.0.1".into(),
            port,
            tls: None,
            client_id: format!("hazgate-bench-{port}"),
            username: None,
            password: None,
            topic_prefix: "hazgate".into(),
            keep_alive_s: 30,
        }),
    );
    o.heartbeat_interval_ms = 0;
    o
}

/// Feed one reading through the engine and commit the transitions it causes.
/// Returns the message ids of those transitions.
fn step(engine: &mut Engine, store: &mut Store, value: f64, ts: i64) -> Vec<String> {
    let mut out = Vec::new();
    engine.on_reading(
        Reading {
            point: PointId(0),
            ts: Timestamp(ts),
            value,
            quality: Quality::Good,
        },
        &mut out,
    );
    let events: Vec<_> = out
        .into_iter()
        .filter_map(|e| match e {
            Event::Alarm(a) => Some(a),
            _ => None,
        })
        .collect();
    if events.is_empty() {
        return Vec::new();
    }
    let seqs = store.append_alarm_events(&events).unwrap();
    seqs.iter().map(|s| format!("{SITE}-a{s}")).collect()
}

async fn wait_for(arrivals: &Arrivals, id: &str, timeout: Duration) -> Option<Instant> {
    let start = Instant::now();
    loop {
        if let Some(at) = arrivals.lock().unwrap().get(id).copied() {
            return Some(at);
        }
        if start.elapsed() > timeout {
            return None;
        }
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
}

fn main() {
    // `cargo bench` passes `--bench`; under `cargo test --all-targets` this long
    // measurement is not run (benches are measurements, not tests).
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    if std::env::args()
        .skip(1)
        .any(|a| !a.starts_with('-') && !"uplink".contains(&a))
    {
        return;
    }
    let backlog: usize = std::env::var("UPLINK_BENCH_BACKLOG")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let nodelay = std::env::var("UPLINK_BENCH_BROKER_NODELAY").is_ok_and(|v| v == "1");
        let broker = mosquitto::Mosquitto::start_with(move |_| {
            let mut conf = String::from("allow_anonymous true\n");
            if nodelay {
                conf += "set_tcp_nodelay true\n";
            }
            conf
        })
        .await;
        println!(
            "broker: Mosquitto, set_tcp_nodelay {}",
            if nodelay { "true" } else { "false (default)" }
        );
        let arrivals: Arrivals = Arc::default();
        let readings_rx = Arc::new(std::sync::atomic::AtomicU64::new(0));
        subscriber(broker.port, arrivals.clone(), readings_rx.clone());

        let spec = common::spec(vec![common::methane_t1("CH4-T1")]);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bench.db");
        let mut store = Store::open(&StoreOptions {
            path: path.clone(),
            store_every_reading: true,
            ..StoreOptions::default()
        })
        .unwrap();
        store.register_points(&PointMeta::from_spec(&spec)).unwrap();
        let mut engine = Engine::new(spec, Timestamp(now_ms()), 1);

        // Phase 1: alarm latency on an idle link.
        let mut o = options(&path, broker.port);
        o.realtime = false;
        let (sink, task) = UplinkSink::spawn(o).unwrap();
        let mut ts = now_ms();
        // Warm up: connection, first store reads; also proves the subscriber is on.
        loop {
            ts += 1000;
            let ids = step(&mut engine, &mut store, 1.2, ts);
            ts += 1000;
            let ids2 = step(&mut engine, &mut store, 0.5, ts);
            sink.wake();
            if let Some(last) = ids.iter().chain(&ids2).last() {
                if wait_for(&arrivals, last, Duration::from_secs(2)).await.is_some() {
                    break;
                }
            }
        }
        let mut idle = Vec::new();
        let mut store_us = Vec::new();
        let mut after_commit = Vec::new();
        for i in 0..400 {
            ts += 1000;
            let t0 = Instant::now();
            let ids = step(&mut engine, &mut store, if i % 2 == 0 { 1.2 } else { 0.5 }, ts);
            let committed = Instant::now();
            store_us.push((committed - t0).as_secs_f64() * 1e6);
            sink.wake();
            for id in &ids {
                let at = wait_for(&arrivals, id, Duration::from_secs(5)).await.expect(id);
                idle.push((at - t0).as_secs_f64() * 1e6);
                after_commit.push((at - committed).as_secs_f64() * 1e6);
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        sink.shutdown().await;
        task.await.unwrap().unwrap();
        report("engine+store commit (fsync) of one transition", store_us);
        report("uplink alone: committed → received by a subscriber", after_commit);
        report("reading in → alarm received by a subscriber, idle link", idle);

        // Phase 2: backlog drain with alarms arriving meanwhile.
        let mut rows = Vec::with_capacity(5000);
        let base = now_ms() - backlog as i64;
        let fill = Instant::now();
        for i in 0..backlog {
            rows.push(Reading {
                point: PointId(0),
                ts: Timestamp(base + i as i64),
                value: 0.3 + (i % 40) as f64 * 0.01,
                quality: Quality::Good,
            });
            if rows.len() == 5000 {
                store.write_readings(&rows).unwrap();
                rows.clear();
            }
        }
        store.write_readings(&rows).unwrap();
        let fill_s = fill.elapsed().as_secs_f64();
        let before = readings_rx.load(Ordering::Relaxed);
        let mut o = options(&path, broker.port);
        o.realtime_batch_max = 1000;
        let (sink, task) = UplinkSink::spawn(o).unwrap();
        let start = Instant::now();
        let mut during = Vec::new();
        let mut during_after_commit = Vec::new();
        let mut next_alarm = Instant::now();
        let mut high = true;
        while sink.status().readings_sent.load(Ordering::Relaxed) < backlog as u64 {
            if Instant::now() >= next_alarm {
                next_alarm += Duration::from_millis(20);
                ts += 1000;
                let t0 = Instant::now();
                let ids = step(&mut engine, &mut store, if high { 1.2 } else { 0.5 }, ts);
                let committed = Instant::now();
                high = !high;
                sink.wake();
                for id in &ids {
                    if let Some(at) = wait_for(&arrivals, id, Duration::from_secs(5)).await {
                        during.push((at - t0).as_secs_f64() * 1e6);
                        during_after_commit.push((at - committed).as_secs_f64() * 1e6);
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let drain_s = start.elapsed().as_secs_f64();
        let status = sink.status().clone();
        sink.shutdown().await;
        task.await.unwrap().unwrap();
        let rate = backlog as f64 / drain_s;
        println!(
            "backlog: {backlog} readings written in {fill_s:.2} s; drained (broker-acknowledged) in {drain_s:.2} s = {rate:.0} readings/s; \
             subscriber got {} readings; {} alarms sent",
            readings_rx.load(Ordering::Relaxed) - before,
            status.alarms_sent.load(Ordering::Relaxed)
        );
        println!(
            "drain vs ingest: {:.1}× the Modbus target load (100 devices × 50 registers at 1 s = 5,000 readings/s)",
            rate / 5000.0
        );
        report(
            "uplink alone during the drain: committed → received",
            during_after_commit,
        );
        report("reading in → alarm received, during the backlog drain", during);
    });
}
