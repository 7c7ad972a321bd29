//! kill -9 durability: a child process (this test binary re-run in writer mode) writes
//! readings and alarm events continuously and prints what it committed; it is killed
//! with SIGKILL six times. After each kill nothing reported committed is missing, the
//! file passes `PRAGMA integrity_check`, and the hash chain verifies. After the last
//! restart, the sink ships everything to VictoriaMetrics exactly once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use hazgate::engine::Transition;
use hazgate::sinks::influxdb::{InfluxApi, InfluxSink};
use hazgate::store::{PointMeta, Reader, Store, StoreOptions};
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;
use support::{alarm_event, now_ms, reading, sink_opts, wait_for, VictoriaMetrics};

const POINTS: u32 = 10;
const CHILD_ENV: &str = "HAZGATE_CRASH_CHILD_STORE";

fn opts(path: &std::path::Path) -> StoreOptions {
    StoreOptions {
        path: path.to_owned(),
        store_every_reading: true,
        ..StoreOptions::default()
    }
}

fn metas() -> Vec<PointMeta> {
    support::ch4_points("P", POINTS)
}

/// Writer mode: only does something when started by the parent test.
#[test]
fn crash_child_writer() {
    let Ok(path) = std::env::var(CHILD_ENV) else {
        return;
    };
    let t0: i64 = std::env::var("HAZGATE_CRASH_T0").unwrap().parse().unwrap();
    let mut store = Store::open(&opts(path.as_ref())).unwrap();
    store.register_points(&metas()).unwrap();
    // Continue after what is already stored: reading k of point p has ts = t0 + k s.
    let mut k = store.reader().last_reading_seq().unwrap() / POINTS as i64;
    let mut alarm = store.next_alarm_id().unwrap();
    let out = std::io::stdout();
    loop {
        let batch: Vec<_> = (0..5)
            .flat_map(|j| {
                (0..POINTS).map(move |p| reading(p, t0 + (k + j) * 1_000, (k + j) as f64))
            })
            .collect();
        store.write_readings(&batch).unwrap();
        k += 5;
        store
            .append_alarm_events(&[alarm_event(
                alarm,
                (alarm % POINTS as u64) as u32,
                Transition::Raised,
                t0 + k * 1_000,
            )])
            .unwrap();
        let mut o = out.lock();
        writeln!(o, "COMMITTED readings_k={k} alarm={alarm}").unwrap();
        o.flush().unwrap();
        alarm += 1;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_nothing_committed_and_everything_reaches_the_sink() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let t0 = now_ms() - 6 * 3_600_000;
    let exe = std::env::current_exe().unwrap();
    let mut last_k = 0i64;
    let mut last_alarm = 0u64;
    for round in 0..6 {
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "crash_child_writer",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, &path)
            .env("HAZGATE_CRASH_T0", t0.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let want = 20 + round * 37;
        let mut seen = 0;
        while let Some(Ok(line)) = lines.next() {
            if let Some(rest) = line.strip_prefix("COMMITTED readings_k=") {
                let (k, a) = rest.split_once(" alarm=").unwrap();
                last_k = k.parse().unwrap();
                last_alarm = a.parse().unwrap();
                seen += 1;
                if seen >= want {
                    break;
                }
            }
        }
        assert!(seen >= want, "round {round}: the writer stopped early");
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        // Drain what it printed between our read and the kill: also committed.
        for line in lines.map_while(Result::ok) {
            if let Some(rest) = line.strip_prefix("COMMITTED readings_k=") {
                let (k, a) = rest.split_once(" alarm=").unwrap();
                last_k = k.parse().unwrap();
                last_alarm = a.parse().unwrap();
            }
        }

        let store = Store::open(&opts(&path)).unwrap();
        let r = store.reader();
        r.integrity_check().unwrap();
        assert_eq!(store.verify_chain().unwrap(), None, "round {round}");
        let rows = r.read_readings_after(0, usize::MAX >> 1).unwrap();
        assert!(
            rows.len() as i64 >= last_k * POINTS as i64,
            "round {round}: {} rows < {} committed",
            rows.len(),
            last_k * POINTS as i64
        );
        for p in 0..POINTS {
            let got = r
                .history_readings(
                    &format!("P{p}"),
                    hazgate::model::Timestamp(t0),
                    hazgate::model::Timestamp(t0 + last_k * 1_000),
                    usize::MAX >> 1,
                )
                .unwrap();
            assert_eq!(
                got.len() as i64,
                last_k,
                "round {round}: point {p} lost readings"
            );
        }
        assert!(
            store.next_alarm_id().unwrap() > last_alarm,
            "round {round}: alarm {last_alarm} lost"
        );
        for a in 1..=last_alarm {
            assert_eq!(
                r.alarm_history(a as i64).unwrap().len(),
                1,
                "round {round}: alarm {a}"
            );
        }
    }

    // Everything reaches the database after the last restart.
    let vm = VictoriaMetrics::start().await;
    let reader = Reader::open(&path).unwrap();
    let last = reader.last_reading_seq().unwrap() as u64;
    let total = reader
        .read_readings_after(0, usize::MAX >> 1)
        .unwrap()
        .len();
    let (sink, task) = InfluxSink::spawn(sink_opts(
        &path,
        vm.url(),
        InfluxApi::V2 {
            org: "o".into(),
            bucket: "b".into(),
            token: String::new(),
        },
    ))
    .unwrap();
    let status = sink.status().clone();
    wait_for(
        Duration::from_secs(60),
        "the sink to ship the store",
        || {
            let s = status.clone();
            async move { s.cursor_seq.load(std::sync::atomic::Ordering::Relaxed) >= last }
        },
    )
    .await;
    sink.shutdown().await;
    task.await.unwrap().unwrap();
    let start = std::time::Instant::now();
    loop {
        let got = vm.export(r#"{__name__="reading_value"}"#).await;
        let n: usize = got.iter().map(|(_, ts, _)| ts.len()).sum();
        if n >= total {
            assert_eq!(n, total, "duplicates in VictoriaMetrics");
            for (labels, ts, _) in &got {
                let uniq: std::collections::BTreeSet<_> = ts.iter().collect();
                assert_eq!(uniq.len(), ts.len(), "{labels}: a timestamp arrived twice");
            }
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "only {n} of {total} samples arrived"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
