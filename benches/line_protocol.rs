//! Line-protocol encoding throughput (target ≥ 2 million points/s on one core).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use hazgate::sinks::influxdb::encode;

fn bench(c: &mut Criterion) {
    let prefixes: Vec<String> = (0..1000)
        .map(|i| {
            encode::series_prefix(
                "reading",
                &[
                    ("point", &format!("CH4-T1-{i}")),
                    ("kind", "ch4"),
                    ("unit", "%"),
                    ("hazard_source", "HS-1"),
                ],
            )
        })
        .collect();
    let rows: Vec<(usize, f64, i64)> = (0..10_000)
        .map(|i| {
            (
                i % 1000,
                0.3 + (i as f64) * 1e-4,
                1_700_000_000_000 + i as i64,
            )
        })
        .collect();
    let mut g = c.benchmark_group("line_protocol");
    g.throughput(Throughput::Elements(rows.len() as u64));
    let mut out = String::with_capacity(rows.len() * 100);
    g.bench_function("encode_10k_readings", |b| {
        b.iter(|| {
            out.clear();
            for &(p, v, ts) in &rows {
                encode::write_reading(&mut out, &prefixes[p], v, "good", ts);
            }
            std::hint::black_box(out.len())
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
