//! The InfluxDB sink against a real InfluxDB 1.x (`/write`): exactly-once delivery with
//! tags, `value` and `quality`, backfill after the server was down, and a 400 partial
//! write (field type conflict) quarantining only the offending lines.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use hazgate::model::{Quality, Reading};
use hazgate::sinks::influxdb::{InfluxApi, InfluxSink};
use hazgate::store::{PointMeta, Reader, Store, StoreOptions};
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::Duration;
use support::{now_ms, reading, sink_opts, wait_for, Influx1};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn influx1_exactly_once_backfill_and_partial_write_quarantine() {
    let mut influx = Influx1::start().await;
    let created = influx.query("", "CREATE DATABASE hazgate").await;
    assert!(created["results"][0].get("error").is_none(), "{created}");

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let mut store = Store::open(&StoreOptions {
        path: path.clone(),
        store_every_reading: true,
        ..StoreOptions::default()
    })
    .unwrap();
    let metas: Vec<PointMeta> = (0..5)
        .map(|i| PointMeta {
            id: format!("P{i}"),
            kind: "co".into(),
            unit: None,
            site: None,
            hazard_source: None,
            deadband: None,
        })
        .collect();
    store.register_points(&metas).unwrap();

    // A shard a month ago where `value` already is a string: our float `value` lines
    // for that time are refused (a 400 "partial write"), the others are written.
    let old = now_ms() - 30 * 86_400_000;
    let seed = hazgate::tls::http_client_builder()
        .build()
        .unwrap()
        .post(format!("{}/write?db=hazgate&precision=ms", influx.url()))
        .body(format!(
            "reading,point=seed value=\"text\" {}\n",
            old - 1_000
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(seed.status().as_u16(), 204);

    let t0 = now_ms() - 600_000;
    let mut expected: BTreeMap<String, BTreeMap<i64, (f64, String)>> = BTreeMap::new();
    let mut batch = Vec::new();
    for k in 0..200i64 {
        for p in 0..5u32 {
            let q = if k % 50 == 7 {
                Quality::CommFail
            } else {
                Quality::Good
            };
            let r = Reading {
                quality: q,
                ..reading(p, t0 + k * 1_000, p as f64 * 10.0 + k as f64 * 0.5)
            };
            expected
                .entry(format!("P{p}"))
                .or_default()
                .insert(r.ts.0, (r.value, q.to_string()));
            batch.push(r);
            if k == 100 && p == 0 {
                // Three bad lines in the middle of the queue.
                for j in 0..3 {
                    batch.push(reading(1, old + j, 1.0));
                }
            }
        }
    }
    store.write_readings(&batch).unwrap();

    let reader = Reader::open(&path).unwrap();
    let api = InfluxApi::V1 {
        database: "hazgate".into(),
        retention_policy: None,
        username: Some("gw".into()),
        password: Some("pw".into()),
    };
    let (sink, task) = InfluxSink::spawn(sink_opts(&path, influx.url(), api)).unwrap();
    let status = sink.status().clone();
    let wait_all = |status: std::sync::Arc<hazgate::sinks::influxdb::SinkStatus>, last: u64| async move {
        wait_for(
            Duration::from_secs(60),
            "the sink to ship every row",
            || {
                let s = status.clone();
                async move { s.cursor_seq.load(Ordering::Relaxed) >= last }
            },
        )
        .await;
    };
    wait_all(status.clone(), reader.last_reading_seq().unwrap() as u64).await;
    assert_eq!(status.quarantined_rows.load(Ordering::Relaxed), 3);
    let q = reader.quarantined("influxdb").unwrap();
    assert_eq!(q.len(), 3);
    for (_, line, err) in &q {
        assert!(
            line.starts_with("reading,kind=other,point=#")
                || line.starts_with("reading,kind=co,point=P1"),
            "{line}"
        );
        assert!(err.contains("field type conflict"), "{err}");
    }

    // Outage and backfill.
    influx.stop();
    let more: Vec<Reading> = (200..260i64)
        .flat_map(|k| (0..5u32).map(move |p| reading(p, t0 + k * 1_000, k as f64)))
        .collect();
    for r in &more {
        expected
            .get_mut(&format!("P{}", r.point.0))
            .unwrap()
            .insert(r.ts.0, (r.value, "good".into()));
    }
    store.write_readings(&more).unwrap();
    let retries = status.retries.load(Ordering::Relaxed);
    let st = status.clone();
    wait_for(Duration::from_secs(30), "retries during the outage", || {
        let s = st.clone();
        async move { s.retries.load(Ordering::Relaxed) > retries + 1 }
    })
    .await;
    influx.resume().await;
    wait_all(status.clone(), reader.last_reading_seq().unwrap() as u64).await;
    sink.shutdown().await;
    task.await.unwrap().unwrap();

    for (point, want) in &expected {
        let ans = influx
            .query("hazgate", &format!("SELECT value, quality, kind FROM reading WHERE point = '{point}' AND time > now() - 1d"))
            .await;
        let rows = ans["results"][0]["series"][0]["values"]
            .as_array()
            .unwrap_or_else(|| panic!("{point}: {ans}"));
        assert_eq!(rows.len(), want.len(), "{point}: row count");
        for row in rows {
            let ts = row[0].as_i64().unwrap();
            let (v, q) = &want[&ts];
            assert!((row[1].as_f64().unwrap() - v).abs() < 1e-9, "{point} {ts}");
            assert_eq!(row[2].as_str().unwrap(), q);
            assert_eq!(row[3].as_str().unwrap(), "co");
        }
    }
}
