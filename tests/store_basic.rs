//! The durable store against a real SQLite file: refusal of foreign files, the change
//! filter, statistics, the hash chain, cursors, retention and the full-disk path.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use hazgate::engine::Transition;
use hazgate::model::{Quality, Timestamp};
use hazgate::store::{AuditEntry, PointMeta, Store, StoreError, StoreOptions, BUCKET_MS};
use support::{alarm_event, reading};

fn points(n: usize) -> Vec<PointMeta> {
    (0..n)
        .map(|i| PointMeta {
            id: format!("CH4-{i}"),
            kind: "ch4".into(),
            unit: Some("%".into()),
            site: None,
            hazard_source: Some("HS-1".into()),
            deadband: None,
        })
        .collect()
}

fn opts(dir: &tempfile::TempDir) -> StoreOptions {
    StoreOptions {
        path: dir.path().join("store.db"),
        ..StoreOptions::default()
    }
}

#[test]
fn refuses_foreign_and_corrupt_files_without_touching_them() {
    let dir = tempfile::tempdir().unwrap();
    // Not SQLite at all.
    let junk = dir.path().join("junk.db");
    let content = b"this is a CSV file, not a database\n1,2,3\n".repeat(10);
    std::fs::write(&junk, &content).unwrap();
    let err = Store::open(&StoreOptions {
        path: junk.clone(),
        ..StoreOptions::default()
    })
    .err()
    .unwrap();
    assert!(matches!(err, StoreError::Foreign { .. }), "{err}");
    assert!(err.to_string().contains("not a hazgate store"), "{err}");
    assert_eq!(std::fs::read(&junk).unwrap(), content);

    // Another program's SQLite database.
    let other = dir.path().join("other.db");
    {
        let c = rusqlite::Connection::open(&other).unwrap();
        c.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1);")
            .unwrap();
    }
    let before = std::fs::read(&other).unwrap();
    let err = Store::open(&StoreOptions {
        path: other.clone(),
        ..StoreOptions::default()
    })
    .err()
    .unwrap();
    assert!(matches!(err, StoreError::Foreign { .. }), "{err}");
    assert!(err.to_string().contains("application_id"), "{err}");
    assert_eq!(std::fs::read(&other).unwrap(), before);

    // A hazgate store with its header smashed.
    let ours = dir.path().join("ours.db");
    {
        let mut s = Store::open(&StoreOptions {
            path: ours.clone(),
            ..StoreOptions::default()
        })
        .unwrap();
        s.register_points(&points(1)).unwrap();
        s.flush().unwrap();
    }
    let mut bytes = std::fs::read(&ours).unwrap();
    bytes[..16].copy_from_slice(b"garbage garbage!");
    std::fs::write(&ours, &bytes).unwrap();
    let err = Store::open(&StoreOptions {
        path: ours.clone(),
        ..StoreOptions::default()
    })
    .err()
    .unwrap();
    assert!(matches!(err, StoreError::Foreign { .. }), "{err}");
    assert_eq!(std::fs::read(&ours).unwrap(), bytes);
}

#[test]
fn readings_filter_statistics_history_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let o = StoreOptions {
        default_deadband: 0.0625,
        heartbeat_s: 60,
        ..opts(&dir)
    };
    let mut s = Store::open(&o).unwrap();
    s.register_points(&points(2)).unwrap();
    let t0 = 1_700_000_100_000 - 1_700_000_100_000 % BUCKET_MS;
    let mut batch = Vec::new();
    for i in 0..300 {
        // Point 0 flat at 0.30 (only heartbeats are stored); point 1 ramps.
        batch.push(reading(0, t0 + i * 1_000, 0.30));
        batch.push(reading(1, t0 + i * 1_000, i as f64 / 64.0));
    }
    let w = s.write_readings(&batch).unwrap();
    assert_eq!(w.received, 600);
    // Point 0: first + one per 60 s heartbeat = 5; point 1: change 1/64 per s, deadband
    // 1/16 (4 steps are not beyond it) → every 5th reading.
    let r0 = s
        .reader()
        .history_readings("CH4-0", Timestamp(t0), Timestamp(t0 + BUCKET_MS), 1000)
        .unwrap();
    assert_eq!(
        r0.iter().map(|r| r.ts.0 - t0).collect::<Vec<_>>(),
        vec![0, 60_000, 120_000, 180_000, 240_000]
    );
    let r1 = s
        .reader()
        .history_readings("CH4-1", Timestamp(t0), Timestamp(t0 + BUCKET_MS), 1000)
        .unwrap();
    assert_eq!(r1.len(), 60);
    // A quality change is stored even with the same value.
    s.write_readings(&[hazgate::model::Reading {
        quality: Quality::CommFail,
        ..reading(0, t0 + 300_500, 0.30)
    }])
    .unwrap();
    // The next bucket's reading closes bucket 0.
    s.write_readings(&[reading(1, t0 + BUCKET_MS + 1, 9.0)])
        .unwrap();
    let st = s
        .reader()
        .history_stats("CH4-1", Timestamp(t0), Timestamp(t0 + 2 * BUCKET_MS))
        .unwrap();
    assert_eq!(st.len(), 1, "only the closed bucket is committed");
    assert_eq!((st[0].min, st[0].max, st[0].count), (0.0, 4.671875, 300));
    assert_eq!(st[0].max_ts, Timestamp(t0 + 299_000));
    assert!((st[0].avg - 2.3359375).abs() < 1e-9);
    s.flush().unwrap();
    let st0 = s
        .reader()
        .history_stats("CH4-0", Timestamp(t0), Timestamp(t0 + 2 * BUCKET_MS))
        .unwrap();
    assert_eq!(st0.len(), 1);
    assert_eq!(
        st0[0].count, 300,
        "statistics count every good reading, stored or not"
    );
    drop(s);

    let s = Store::open(&o).unwrap();
    let rows = s.reader().read_readings_after(0, 10_000).unwrap();
    assert_eq!(rows.len(), 5 + 60 + 1 + 1);
    assert!(rows.windows(2).all(|w| w[0].seq < w[1].seq));
    s.reader().integrity_check().unwrap();
}

#[test]
fn failed_batch_is_all_or_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Store::open(&StoreOptions {
        store_every_reading: true,
        ..opts(&dir)
    })
    .unwrap();
    s.register_points(&points(1)).unwrap();
    // Hold a write lock from another connection so the batch cannot commit.
    let other = rusqlite::Connection::open(dir.path().join("store.db")).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    let mut o2 = s.options().clone();
    o2.busy_timeout_ms = 50;
    drop(s);
    let mut s = Store::open(&o2);
    // Opening needs the lock too; release it and reopen, then lock again.
    assert!(s.is_err());
    other.execute_batch("ROLLBACK").unwrap();
    s = Store::open(&o2);
    let mut s = s.unwrap();
    s.register_points(&points(1)).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    let batch = vec![reading(0, 1_000, 1.0), reading(0, 2_000, 1.0)];
    assert!(s.write_readings(&batch).is_err());
    other.execute_batch("ROLLBACK").unwrap();
    s.write_readings(&batch).unwrap();
    assert_eq!(s.reader().read_readings_after(0, 10).unwrap().len(), 2);
}

#[test]
fn hash_chain_verifies_and_finds_the_first_tampered_row() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Store::open(&opts(&dir)).unwrap();
    s.register_points(&points(3)).unwrap();
    assert_eq!(s.next_alarm_id().unwrap(), 1);
    for i in 0..10u64 {
        s.append_alarm_events(&[alarm_event(
            i + 1,
            (i % 3) as u32,
            Transition::Raised,
            1_000 + i as i64,
        )])
        .unwrap();
        s.append_audit(&[AuditEntry {
            ts: Timestamp(2_000 + i as i64),
            who: "张三".into(),
            action: "acknowledge".into(),
            target: format!("{}", i + 1),
            detail: "checked the sensor, ventilation ok".into(),
        }])
        .unwrap();
    }
    assert_eq!(s.verify_chain().unwrap(), None);
    assert_eq!(s.next_alarm_id().unwrap(), 11);
    let hist = s.reader().alarm_history(4).unwrap();
    assert_eq!(hist.len(), 1);
    assert_eq!(hist[0].transition, "raised");
    drop(s);

    let c = rusqlite::Connection::open(dir.path().join("store.db")).unwrap();
    c.execute(
        "UPDATE alarm_events SET alarm_json = replace(alarm_json, '1.7', '0.7') WHERE seq = 6",
        [],
    )
    .unwrap();
    let s = Store::open(&opts(&dir)).unwrap();
    let b = s.verify_chain().unwrap().unwrap();
    assert_eq!((b.chain.as_str(), b.seq), ("alarm_events", 6), "{b}");
    c.execute("DELETE FROM alarm_events WHERE seq = 6", [])
        .unwrap();
    let b = s.verify_chain().unwrap().unwrap();
    assert_eq!(b.seq, 7, "{b}");
    c.execute("UPDATE audit SET who = 'nobody' WHERE seq = 2", [])
        .unwrap();
    c.execute("DELETE FROM alarm_events", []).unwrap();
    let b = s.verify_chain().unwrap().unwrap();
    assert_eq!((b.chain.as_str(), b.seq), ("audit", 2));
    // Ids are not reused even though every event row is gone.
    assert_eq!(s.next_alarm_id().unwrap(), 11);
}

#[test]
fn prune_keeps_unshipped_rows_and_anchors_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Store::open(&StoreOptions {
        store_every_reading: true,
        ..opts(&dir)
    })
    .unwrap();
    s.register_points(&points(1)).unwrap();
    let day = 86_400_000i64;
    let now = 1_000 * day;
    let old: Vec<_> = (0..100)
        .map(|i| reading(0, now - 100 * day + i, 1.0))
        .collect();
    s.write_readings(&old).unwrap();
    s.write_readings(&[reading(0, now - day, 2.0)]).unwrap();
    for i in 0..5 {
        s.append_alarm_events(&[alarm_event(
            i + 1,
            0,
            Transition::Raised,
            now - 800 * day + i as i64,
        )])
        .unwrap();
    }
    s.append_alarm_events(&[alarm_event(6, 0, Transition::Raised, now - day)])
        .unwrap();
    let sink = s.reader().register_sink("influx").unwrap();
    assert_eq!(sink.readings_seq, 0);
    // Nothing shipped: nothing deleted.
    let rep = s.prune(Timestamp(now)).unwrap();
    assert_eq!((rep.readings_deleted, rep.events_deleted), (0, 0));
    s.reader()
        .commit_cursor(
            "influx",
            hazgate::store::SinkCursor {
                readings_seq: 50,
                events_seq: 3,
            },
            Timestamp(now),
        )
        .unwrap();
    let rep = s.prune(Timestamp(now)).unwrap();
    assert_eq!(
        (
            rep.readings_deleted,
            rep.events_deleted,
            rep.readings_lost_unshipped
        ),
        (50, 3, 0)
    );
    assert!(!rep.degraded);
    assert_eq!(
        s.verify_chain().unwrap(),
        None,
        "the anchor keeps the pruned chain verifiable"
    );
    s.reader()
        .commit_cursor(
            "influx",
            hazgate::store::SinkCursor {
                readings_seq: 101,
                events_seq: 6,
            },
            Timestamp(now),
        )
        .unwrap();
    let rep = s.prune(Timestamp(now)).unwrap();
    assert_eq!((rep.readings_deleted, rep.events_deleted), (50, 2));
    assert_eq!(
        s.reader().read_readings_after(0, 1000).unwrap().len(),
        1,
        "recent reading stays"
    );
    assert_eq!(s.verify_chain().unwrap(), None);
    assert_eq!(s.next_alarm_id().unwrap(), 7);
}

#[test]
fn full_disk_degrades_keeps_alarms_flowing_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let limit = 1024 * 1024;
    let mut s = Store::open(&StoreOptions {
        store_every_reading: true,
        disk_limit_bytes: Some(limit),
        ..opts(&dir)
    })
    .unwrap();
    s.register_points(&points(10)).unwrap();
    s.reader().register_sink("influx").unwrap();
    let mut ts = 0;
    let mut stored = 0usize;
    let err = loop {
        let batch: Vec<_> = (0..1000)
            .map(|i| {
                ts += 1;
                reading(i % 10, ts, ts as f64)
            })
            .collect();
        match s.write_readings(&batch) {
            Ok(w) => stored += w.stored,
            Err(e) => break e,
        }
        assert!(stored < 1_000_000, "the limit never hit");
    };
    assert!(err.is_full(), "{err}");
    assert!(s.degraded());
    // Fill the last pages one reading at a time.
    while s
        .write_readings(&[{
            ts += 1;
            reading(0, ts, ts as f64)
        }])
        .is_ok()
    {
        stored += 1;
    }
    assert_eq!(
        s.reader()
            .read_readings_after(0, usize::MAX >> 1)
            .unwrap()
            .len(),
        stored,
        "the failed batch left nothing"
    );
    // Alarms still get in: the oldest readings make room, and the loss is recorded.
    let events: Vec<_> = (1..=20)
        .map(|i| alarm_event(i, 0, Transition::Raised, ts))
        .collect();
    let seqs = s.append_alarm_events(&events).unwrap();
    assert_eq!(seqs.len(), 20);
    assert!(s.reader().readings_lost().unwrap() >= 1000);
    assert_eq!(s.verify_chain().unwrap(), None);
    // Space comes back: writes succeed and the degraded flag clears.
    s.set_disk_limit(Some(64 * limit)).unwrap();
    s.write_readings(&[reading(0, ts + 1, 1.0)]).unwrap();
    assert!(!s.degraded());
    s.reader().integrity_check().unwrap();
}

#[test]
fn refuses_stores_of_other_schema_versions_without_touching_them() {
    let dir = tempfile::tempdir().unwrap();
    for (version, old) in [(1, true), (hazgate::store::SCHEMA_VERSION + 1, false)] {
        let path = dir.path().join(format!("v{version}.db"));
        {
            let c = rusqlite::Connection::open(&path).unwrap();
            c.execute_batch(&format!(
                "PRAGMA application_id={}; PRAGMA user_version={version}; \
                 CREATE TABLE readings(seq INTEGER PRIMARY KEY AUTOINCREMENT, quality TEXT);",
                hazgate::store::APPLICATION_ID
            ))
            .unwrap();
        }
        let before = std::fs::read(&path).unwrap();
        let err = Store::open(&StoreOptions {
            path: path.clone(),
            ..StoreOptions::default()
        })
        .err()
        .unwrap();
        if old {
            assert!(
                matches!(err, StoreError::OldSchema { found: 1, .. }),
                "{err}"
            );
            assert!(err.to_string().contains("move the file aside"), "{err}");
        } else {
            assert!(matches!(err, StoreError::NewerSchema { .. }), "{err}");
        }
        assert!(hazgate::store::Reader::open(&path).is_err());
        assert_eq!(std::fs::read(&path).unwrap(), before, "version {version}");
    }
}
