//! Alarm commit under a stream of readings: how long `append_alarm_events` (a
//! `synchronous=FULL` commit, so an fsync of the WAL) takes while readings are
//! committed without fsync beside it, as the store writer does.
//!
//! An fsync of the WAL also flushes every frame the readings commits wrote since the
//! last fsync, so the alarm pays for them. `StoreOptions::readings_sync_interval_ms`
//! bounds that debt by fsyncing a readings commit at least that often. The bench runs
//! the same stream with the interval off (0) and at the default.
//!
//! Setup: a store in a temporary directory under /var/tmp (a real disk, not tmpfs)
//! with 5,000 points, every reading kept; a batch of `BENCH_BATCH` readings (default
//! 25) every 5 ms — 5,000 readings/s in 200 commits/s, the store writer's group-commit
//! cadence — and one alarm event every 500 ms, timed.
//!
//! Run: `cargo bench --bench alarm_commit` (`BENCH_SECONDS`, default 20 per setting).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/support/mod.rs"]
mod support;

use hazgate::engine::Transition;
use hazgate::store::{Store, StoreOptions};
use std::time::{Duration, Instant};

const POINTS: u32 = 5_000;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn run(sync_interval_ms: u64, secs: u64, batch: u32) -> Vec<f64> {
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let mut store = Store::open(&StoreOptions {
        path: dir.path().join("alarm_commit.db"),
        store_every_reading: true,
        readings_sync_interval_ms: sync_interval_ms,
        ..StoreOptions::default()
    })
    .unwrap();
    store
        .register_points(&support::ch4_points("P", POINTS))
        .unwrap();
    let start = Instant::now();
    let mut next_alarm = start + Duration::from_millis(500);
    let mut ts = 1_700_000_000_000i64;
    let (mut k, mut id) = (0u32, 1u64);
    let mut ms = Vec::new();
    while start.elapsed() < Duration::from_secs(secs) {
        ts += 5;
        let readings: Vec<_> = (0..batch)
            .map(|_| {
                k += 1;
                support::reading(k % POINTS, ts, f64::from(k % 977))
            })
            .collect();
        store.write_readings(&readings).unwrap();
        if Instant::now() >= next_alarm {
            next_alarm += Duration::from_millis(500);
            let event = support::alarm_event(id, 0, Transition::Raised, ts);
            let t0 = Instant::now();
            store.append_alarm_events(&[event]).unwrap();
            ms.push(t0.elapsed().as_secs_f64() * 1e3);
            id += 1;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    ms
}

fn main() {
    // `cargo bench` passes `--bench`; under `cargo test --all-targets` this
    // measurement is not run.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let secs = env("BENCH_SECONDS", 20);
    let batch = u32::try_from(env("BENCH_BATCH", 25)).unwrap_or(25);
    let default = StoreOptions::default().readings_sync_interval_ms;
    for interval in [0, default] {
        let mut ms = run(interval, secs, batch);
        ms.sort_by(|a, b| a.total_cmp(b));
        let at = |p: f64| ms[((ms.len() - 1) as f64 * p).round() as usize];
        println!(
            "alarm_commit readings_sync_interval_ms={interval:>4}: n={} p50={:.2} ms p90={:.2} ms p99={:.2} ms max={:.2} ms ({} readings every 5 ms)",
            ms.len(),
            at(0.5),
            at(0.9),
            at(0.99),
            ms[ms.len() - 1],
            batch
        );
    }
}
