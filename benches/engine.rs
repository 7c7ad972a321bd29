//! Engine throughput: 10,000 points with 3–4 graded thresholds each, fed random-walk
//! values (with the occasional excursion through every grade), evaluated on one core.
//! Target: at least 5 million readings per second.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use hazgate::engine::{
    AlarmRateSpec, Engine, EngineSpec, Event, GradeSpec, HazardSourceSpec, PointSpec,
};
use hazgate::model::{
    Colour, Direction, HazardGrade, HazardSourceId, PointId, PointKind, Quality, Reading, Timestamp,
};
use std::hint::black_box;

const POINTS: usize = 10_000;
const ROUNDS: usize = 100;

/// splitmix64: a tiny deterministic generator, so runs are comparable.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn grade(name: &str, trigger: f64, restore: f64, colour: Colour, power_cut: bool) -> GradeSpec {
    GradeSpec {
        name: name.into(),
        direction: Direction::High,
        trigger,
        restore,
        on_delay_ms: 0,
        off_delay_ms: 0,
        colour,
        power_cut,
    }
}

fn spec() -> EngineSpec {
    let points = (0..POINTS)
        .map(|i| {
            let mut grades = vec![
                grade("预警", 0.8, 0.7, Colour::Blue, false),
                grade("报警", 1.0, 1.0, Colour::Orange, false),
                grade("断电", 1.5, 1.0, Colour::Red, true),
            ];
            if i % 2 == 0 {
                grades.insert(2, grade("二级报警", 1.2, 1.1, Colour::Orange, false));
            }
            PointSpec {
                id: format!("CH4-{i:05}"),
                kind: PointKind::Ch4,
                range_min: 0.0,
                range_max: 4.0,
                grades,
                rate: None,
                stale_after_ms: Some(30_000),
                hazard_source: Some(HazardSourceId((i % 50) as u32)),
            }
        })
        .collect();
    let hazard_sources = (0..50)
        .map(|i| HazardSourceSpec {
            id: format!("HS-{i}"),
            grade: HazardGrade(1 + (i % 4) as u8),
            rules: vec![],
        })
        .collect();
    EngineSpec {
        points,
        hazard_sources,
        alarm_rate: AlarmRateSpec::default(),
    }
}

/// `ROUNDS` rounds of one reading per point, one round per second. Values walk around
/// 0.4 % with small steps; about one point in a thousand is in an excursion above
/// 1.5 % at any time, so alarms are raised, escalated and returned during the run.
fn readings() -> Vec<Reading> {
    let mut rng = Rng(42);
    let mut v = vec![0.4f64; POINTS];
    let mut out = Vec::with_capacity(POINTS * ROUNDS);
    for round in 0..ROUNDS {
        for (i, x) in v.iter_mut().enumerate() {
            *x += (rng.unit() - 0.5) * 0.02;
            if rng.next() % 20_000 == 0 {
                *x = 1.6;
            }
            *x = if *x > 1.0 {
                *x * 0.97
            } else {
                x.clamp(0.05, 3.9)
            };
            out.push(Reading {
                point: PointId(i as u32),
                ts: Timestamp(1_700_000_000_000 + round as i64 * 1000),
                value: *x,
                quality: Quality::Good,
            });
        }
    }
    out
}

fn bench(c: &mut Criterion) {
    let readings = readings();
    // The workload must exercise alarms, not only quiet evaluation.
    let mut probe = Engine::new(spec(), Timestamp(1_700_000_000_000), 1);
    let mut events = vec![];
    for r in &readings {
        probe.on_reading(*r, &mut events);
    }
    let transitions = events
        .iter()
        .filter(|e| matches!(e, Event::Alarm(_)))
        .count();
    assert!(
        probe.counters().raised > 10,
        "the workload raised too few alarms"
    );
    eprintln!(
        "workload: {} readings, {} alarms raised, {} alarm transitions",
        readings.len(),
        probe.counters().raised,
        transitions
    );
    let mut g = c.benchmark_group("engine");
    g.throughput(Throughput::Elements(readings.len() as u64));
    g.sample_size(20);
    g.bench_function("10k_points_random_walk", |b| {
        b.iter_batched_ref(
            || {
                (
                    Engine::new(spec(), Timestamp(1_700_000_000_000), 1),
                    Vec::<Event>::with_capacity(1024),
                )
            },
            |(engine, out)| {
                for r in &readings {
                    black_box(engine.on_reading(*r, out));
                    if out.len() > 512 {
                        out.clear();
                    }
                }
            },
            criterion::BatchSize::LargeInput,
        )
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
