//! The InfluxDB sink against a real VictoriaMetrics (`/api/v2/write`): every reading
//! arrives exactly once per series and timestamp, with its tags and time — also after
//! the database was down for a while (the sink backfills from its cursor).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use hazgate::sinks::influxdb::{InfluxApi, InfluxSink};
use hazgate::store::{PointMeta, Reader, Store, StoreOptions};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use support::{now_ms, reading, sink_opts, wait_for, VictoriaMetrics};

const POINTS: u32 = 20;

fn metas() -> Vec<PointMeta> {
    (0..POINTS)
        .map(|i| PointMeta {
            id: format!("CH4 T1,{i}"), // space and comma: escaping on the wire
            kind: "ch4".into(),
            unit: Some("%CH4".into()),
            site: Some("mine-1".into()),
            hazard_source: (i % 2 == 0).then(|| "HS=1".into()),
            deadband: None,
        })
        .collect()
}

async fn wait_shipped(sink: &InfluxSink, reader: &Reader) {
    let last = reader.last_reading_seq().unwrap() as u64;
    let status = sink.status().clone();
    wait_for(
        Duration::from_secs(60),
        "the sink to ship every row",
        || {
            let s = status.clone();
            async move { s.cursor_seq.load(std::sync::atomic::Ordering::Relaxed) >= last }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readings_reach_victoria_metrics_exactly_once_across_an_outage() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let mut store = Store::open(&StoreOptions {
        path: path.clone(),
        store_every_reading: true,
        ..StoreOptions::default()
    })
    .unwrap();
    store.register_points(&metas()).unwrap();
    let t0 = now_ms() - 3_600_000;
    let mut expected: BTreeMap<String, BTreeMap<i64, f64>> = BTreeMap::new();
    let mut write = |store: &mut Store, from: i64, to: i64| {
        let mut batch = Vec::new();
        for k in from..to {
            for p in 0..POINTS {
                let ts = t0 + k * 1_000;
                let v = (p as f64) + (k as f64) / 1000.0;
                batch.push(reading(p, ts, v));
                expected
                    .entry(format!("CH4 T1,{p}"))
                    .or_default()
                    .insert(ts, v);
            }
        }
        store.write_readings(&batch).unwrap();
    };
    write(&mut store, 0, 100);

    let mut vm = VictoriaMetrics::start().await;
    let reader = Reader::open(&path).unwrap();
    let api = InfluxApi::V2 {
        org: "hazgate".into(),
        bucket: "hazgate".into(),
        token: "secret".into(),
    };
    let (sink, task) = InfluxSink::spawn(sink_opts(&path, vm.url(), api)).unwrap();
    wait_shipped(&sink, &reader).await;

    // Outage: the database goes away, readings keep coming, the cursor waits.
    vm.stop();
    let retries_before = sink
        .status()
        .retries
        .load(std::sync::atomic::Ordering::Relaxed);
    write(&mut store, 100, 250);
    let status = sink.status().clone();
    wait_for(
        Duration::from_secs(30),
        "the sink to notice the outage",
        || {
            let s = status.clone();
            async move { s.retries.load(std::sync::atomic::Ordering::Relaxed) > retries_before + 2 }
        },
    )
    .await;
    assert!(
        status
            .backlog_rows
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0
    );
    vm.resume().await;
    write(&mut store, 250, 300);
    wait_shipped(&sink, &reader).await;
    sink.shutdown().await;
    task.await.unwrap().unwrap();

    // VictoriaMetrics keeps string fields out; `value` becomes `reading_value`.
    let total: usize = expected.values().map(|m| m.len()).sum();
    let start = std::time::Instant::now();
    let got = loop {
        let got = vm.export(r#"{__name__="reading_value"}"#).await;
        if got.iter().map(|(_, ts, _)| ts.len()).sum::<usize>() >= total {
            break got;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "VictoriaMetrics never showed all {total} samples"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(got.len(), POINTS as usize, "one series per point");
    for (labels, ts, vals) in &got {
        let point = labels["point"].as_str().unwrap();
        assert_eq!(labels["kind"], "ch4");
        assert_eq!(labels["unit"], "%CH4");
        assert_eq!(labels["site"], "mine-1");
        let idx: u32 = point.rsplit(',').next().unwrap().parse().unwrap();
        if idx % 2 == 0 {
            assert_eq!(labels["hazard_source"], "HS=1");
        } else {
            assert!(labels.get("hazard_source").is_none());
        }
        let want = &expected[point];
        let uniq: BTreeSet<i64> = ts.iter().copied().collect();
        assert_eq!(uniq.len(), ts.len(), "{point}: a timestamp arrived twice");
        assert_eq!(
            uniq,
            want.keys().copied().collect::<BTreeSet<_>>(),
            "{point}: timestamps differ"
        );
        for (t, v) in ts.iter().zip(vals) {
            assert!(
                (want[t] - v).abs() < 1e-9,
                "{point} at {t}: {v} != {}",
                want[t]
            );
        }
    }
}
