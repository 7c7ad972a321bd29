//! Store throughput: batched readings into SQLite (target ≥ 200,000 readings/s on one
//! core), and backlog drain from the store to a real VictoriaMetrics through the
//! InfluxDB sink (target ≥ 25,000 rows/s, 5× the ingest of 100 devices × 50 registers
//! at 1 s). The drain bench needs the `victoria-metrics` binary.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/support/mod.rs"]
mod support;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use hazgate::model::Timestamp;
use hazgate::sinks::influxdb::{InfluxApi, InfluxSink};
use hazgate::store::{PointMeta, Reader, SinkCursor, Store, StoreOptions};
use std::time::{Duration, Instant};

const POINTS: u32 = 5_000;

fn metas() -> Vec<PointMeta> {
    support::ch4_points("P", POINTS)
}

fn write(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(&StoreOptions {
        path: dir.path().join("b.db"),
        store_every_reading: true,
        ..StoreOptions::default()
    })
    .unwrap();
    store.register_points(&metas()).unwrap();
    let mut ts = 1_700_000_000_000i64;
    let mut g = c.benchmark_group("store");
    g.throughput(Throughput::Elements(20_000));
    g.sample_size(20);
    g.bench_function("write_20k_readings_one_transaction", |b| {
        b.iter(|| {
            ts += 4_000;
            let batch: Vec<_> = (0..20_000u32)
                .map(|i| support::reading(i % POINTS, ts + (i / POINTS) as i64 * 1_000, i as f64))
                .collect();
            store.write_readings(&batch).unwrap()
        })
    });
    g.finish();
    // History of one point over the last hour of what was just written (~3,600 rows
    // out of 5,000 points' worth): the slice-by-slice index walk.
    let mut g = c.benchmark_group("store");
    g.sample_size(20);
    let to = Timestamp(ts + 4_000);
    let from = Timestamp(to.0 - 3_600_000);
    g.bench_function("history_one_point_one_hour", |b| {
        b.iter(|| {
            store
                .reader()
                .history_readings("P7", from, to, 100_000)
                .unwrap()
                .len()
        })
    });
    g.finish();
}

fn drain(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let vm = rt.block_on(support::VictoriaMetrics::start());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("drain.db");
    let mut store = Store::open(&StoreOptions {
        path: path.clone(),
        store_every_reading: true,
        ..StoreOptions::default()
    })
    .unwrap();
    store.register_points(&metas()).unwrap();
    let reader = Reader::open(&path).unwrap();
    let rows = 100_000u32;
    let mut ts = support::now_ms() - 86_400_000;
    let mut g = c.benchmark_group("sink");
    g.throughput(Throughput::Elements(rows as u64));
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(20));
    let mut n = 0;
    g.bench_function("drain_100k_rows_to_victoria_metrics", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                // The backlog (not timed): 100k rows after a fresh sink's cursor.
                let start_seq = reader.last_reading_seq().unwrap();
                for chunk in 0..(rows / 20_000) {
                    let batch: Vec<_> = (0..20_000u32).map(|i| support::reading(i % POINTS, ts + ((chunk * 20_000 + i) / POINTS) as i64 * 1_000, i as f64)).collect();
                    store.write_readings(&batch).unwrap();
                }
                ts += (rows / POINTS) as i64 * 1_000;
                n += 1;
                let name = format!("bench{n}");
                reader.commit_cursor(&name, SinkCursor { readings_seq: start_seq, events_seq: 0 }, Timestamp(0)).unwrap();
                let last = reader.last_reading_seq().unwrap() as u64;
                let mut opts = support::sink_opts(&path, vm.url(), InfluxApi::V2 { org: "o".into(), bucket: "b".into(), token: String::new() });
                opts.name = name;
                opts.batch_max_lines = 10_000;
                let started = Instant::now();
                rt.block_on(async {
                    let (sink, task) = InfluxSink::spawn(opts).unwrap();
                    let status = sink.status().clone();
                    support::wait_for(Duration::from_secs(120), "drain", || {
                        let s = status.clone();
                        async move { s.cursor_seq.load(std::sync::atomic::Ordering::Relaxed) >= last }
                    })
                    .await;
                    sink.shutdown().await;
                    task.await.unwrap().unwrap();
                });
                total += started.elapsed();
            }
            total
        })
    });
    g.finish();
}

criterion_group!(benches, write, drain);
criterion_main!(benches);
