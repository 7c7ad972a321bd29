//! The store's writer task on a real tokio runtime and a real SQLite file: alarms are
//! durable when `commit_alarms` returns, overtake queued readings, a full readings
//! queue hands the batch back, readings held through a full disk are written once
//! space returns (and any loss is counted), shutdown flushes, and a source's receipt
//! is confirmed only after its batch is committed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use hazgate::engine::Transition;
use hazgate::model::{Batch, Reading, Receipts, Timestamp};
use hazgate::store::{PointMeta, Reader, Store, StoreError, StoreOptions, StoreWriter};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use support::{alarm_event, reading, wait_for};

const T0: i64 = 1_700_000_000_000;

fn points(n: u32) -> Vec<PointMeta> {
    support::ch4_points("CH4-", n)
}

fn opts(dir: &tempfile::TempDir) -> StoreOptions {
    StoreOptions {
        path: dir.path().join("store.db"),
        store_every_reading: true,
        tick_ms: 20,
        prune_interval_s: 3_600,
        ..StoreOptions::default()
    }
}

fn spawn(o: &StoreOptions, n_points: u32) -> (StoreWriter, tokio::task::JoinHandle<()>) {
    let mut store = Store::open(o).unwrap();
    store.register_points(&points(n_points)).unwrap();
    StoreWriter::spawn(store)
}

/// `n` readings of 10 points from `first` on, 1 ms apart, value = index.
fn batch(first: i64, n: i64) -> Vec<Reading> {
    batch_at(T0, first, n)
}

fn batch_at(t0: i64, first: i64, n: i64) -> Vec<Reading> {
    (first..first + n)
        .map(|k| reading((k % 10) as u32, t0 + k, k as f64))
        .collect()
}

fn stored_values(o: &StoreOptions) -> Vec<f64> {
    let reader = Reader::open(&o.path).unwrap();
    reader
        .read_readings_after(0, usize::MAX >> 1)
        .unwrap()
        .iter()
        .map(|r| r.value)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alarms_are_durable_when_commit_returns() {
    let dir = tempfile::tempdir().unwrap();
    let o = opts(&dir);
    let (writer, task) = spawn(&o, 2);
    let events: Vec<_> = (1..=3)
        .map(|i| alarm_event(i, 0, Transition::Raised, T0 + i as i64))
        .collect();
    let seqs = writer.commit_alarms(events).await.unwrap();
    assert_eq!(seqs, vec![1, 2, 3]);
    assert_eq!(writer.status().alarm_events.load(Ordering::Relaxed), 3);

    // What a crash right now would leave: copy the files while the writer still runs
    // (no shutdown, no checkpoint) and open the copy as a new store.
    let copy = tempfile::tempdir().unwrap();
    for suffix in ["", "-wal"] {
        let from = format!("{}{suffix}", o.path.display());
        if std::path::Path::new(&from).exists() {
            std::fs::copy(
                &from,
                format!("{}{suffix}", copy.path().join("store.db").display()),
            )
            .unwrap();
        }
    }
    let reopened = Store::open(&StoreOptions {
        path: copy.path().join("store.db"),
        ..StoreOptions::default()
    })
    .unwrap();
    let got = reopened.reader().read_events_after(0, 100).unwrap();
    assert_eq!(got.iter().map(|e| e.seq).collect::<Vec<_>>(), seqs);
    assert_eq!(
        got.iter().map(|e| e.alarm_id).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    assert_eq!(reopened.verify_chain().unwrap(), None);
    assert_eq!(reopened.next_alarm_id().unwrap(), 4);

    writer.shutdown().await.unwrap();
    task.await.unwrap();
}

/// Another connection holds the database's write lock, so the writer is stuck in its
/// first write (SQLite's busy wait) and the queue fills deterministically.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_hands_the_batch_back_and_alarms_overtake_it() {
    let dir = tempfile::tempdir().unwrap();
    let o = StoreOptions {
        readings_queue_batches: 8,
        max_batch_readings: 1_000,
        ..opts(&dir)
    };
    let (writer, task) = spawn(&o, 10);
    let lock = rusqlite::Connection::open(&o.path).unwrap();
    lock.execute_batch("BEGIN IMMEDIATE").unwrap();
    writer.try_send_readings(batch(0, 1_000)).unwrap();
    let status = writer.status().clone();
    wait_for(Duration::from_secs(10), "the first batch taken", || {
        let s = status.clone();
        async move { s.readings_received.load(Ordering::Relaxed) == 1_000 }
    })
    .await;
    for b in 1..9 {
        writer.try_send_readings(batch(b * 1_000, 1_000)).unwrap();
    }
    let extra = batch(9_000, 1_000);
    let back = writer.try_send_readings(extra.clone()).unwrap_err();
    assert_eq!(back, extra, "the refused batch comes back whole");

    // The writer's counters move on its thread in the order of its commits: a watcher
    // notes how many readings were stored when the alarm's count moved.
    let watcher = std::thread::spawn({
        let s = status.clone();
        move || {
            let start = std::time::Instant::now();
            while s.alarm_events.load(Ordering::SeqCst) == 0 {
                assert!(start.elapsed() < Duration::from_secs(30), "no alarm");
                std::hint::spin_loop();
            }
            s.readings_stored.load(Ordering::SeqCst)
        }
    });
    // The alarm queues behind the stuck write, then the lock goes.
    let alarm = tokio::spawn({
        let w = writer.clone();
        async move {
            w.commit_alarms(vec![alarm_event(1, 0, Transition::Raised, T0)])
                .await
        }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    lock.execute_batch("ROLLBACK").unwrap();
    let seqs = alarm.await.unwrap().unwrap();
    let total = 9_000;
    assert_eq!(seqs, vec![1]);
    // The alarm was served before the queued readings: only the batch that was stuck
    // is written (with room for one commit the watcher may see late; served last,
    // it would see all nine).
    let stored = watcher.join().unwrap();
    assert!(
        stored <= 2_000,
        "{stored} of {total} readings went before the alarm"
    );

    // The queue drains and every accepted reading is stored, in order.
    wait_for(Duration::from_secs(30), "queued readings written", || {
        let s = status.clone();
        async move { s.readings_stored.load(Ordering::Relaxed) == total }
    })
    .await;
    writer.shutdown().await.unwrap();
    task.await.unwrap();
    let values = stored_values(&o);
    assert_eq!(values, (0..total).map(|k| k as f64).collect::<Vec<_>>());
    assert_eq!(status.readings_lost.load(Ordering::Relaxed), 0);
}

/// Fill the store's disk limit through the writer; returns how many readings were sent.
async fn fill_until_held(writer: &StoreWriter) -> i64 {
    let mut sent = 0;
    loop {
        writer.send_readings(batch(sent, 1_000)).await.unwrap();
        sent += 1_000;
        let s = writer.status();
        if s.degraded.load(Ordering::Relaxed) && s.readings_held.load(Ordering::Relaxed) > 0 {
            return sent;
        }
        assert!(sent < 2_000_000, "the disk limit never hit");
        // Let the writer work through the batch before judging again.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readings_held_through_a_full_disk_are_written_when_space_returns() {
    let dir = tempfile::tempdir().unwrap();
    let o = StoreOptions {
        disk_limit_bytes: Some(256 * 1024),
        max_batch_readings: 1_000,
        ..opts(&dir)
    };
    let (writer, task) = spawn(&o, 10);
    Reader::open(&o.path)
        .unwrap()
        .register_sink("influx")
        .unwrap();
    let mut sent = fill_until_held(&writer).await;
    // More arrive while the disk is full; they are held, not lost.
    for _ in 0..5 {
        writer.send_readings(batch(sent, 1_000)).await.unwrap();
        sent += 1_000;
    }
    let status = writer.status().clone();
    wait_for(Duration::from_secs(10), "readings held", || {
        let s = status.clone();
        async move { s.readings_held.load(Ordering::Relaxed) >= 5_000 }
    })
    .await;
    assert!(status.degraded.load(Ordering::Relaxed));

    // Alarms still get in (if the last pages are too few, by deleting the oldest
    // readings — recorded as lost).
    writer
        .commit_alarms(vec![alarm_event(1, 0, Transition::Raised, T0)])
        .await
        .unwrap();

    writer.set_disk_limit(None).await.unwrap();
    wait_for(Duration::from_secs(30), "held readings written", || {
        let s = status.clone();
        async move { s.readings_held.load(Ordering::Relaxed) == 0 }
    })
    .await;
    writer.shutdown().await.unwrap();
    task.await.unwrap();
    assert!(
        !status.degraded.load(Ordering::Relaxed),
        "a good write clears it"
    );
    assert_eq!(status.readings_stored.load(Ordering::Relaxed), sent as u64);
    assert_eq!(
        status.readings_lost.load(Ordering::Relaxed),
        0,
        "none dropped while held"
    );

    // On disk: every reading but those the alarm's room took (if any), in order, and
    // the deleted ones are exactly the recorded loss.
    let reader = Reader::open(&o.path).unwrap();
    let values = stored_values(&o);
    let lost = reader.readings_lost().unwrap() as i64;
    assert_eq!(values.len() as i64, sent - lost);
    assert_eq!(
        values,
        (lost..sent).map(|k| k as f64).collect::<Vec<_>>(),
        "the oldest went, the rest is whole and in order"
    );
    assert_eq!(reader.verify_chain().unwrap(), None);
    reader.integrity_check().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_readings_beyond_the_bound_are_dropped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let o = StoreOptions {
        disk_limit_bytes: Some(256 * 1024),
        max_batch_readings: 1_000,
        max_held_readings: 3_000,
        ..opts(&dir)
    };
    let (writer, task) = spawn(&o, 10);
    let mut sent = fill_until_held(&writer).await;
    for _ in 0..10 {
        writer.send_readings(batch(sent, 1_000)).await.unwrap();
        sent += 1_000;
    }
    let status = writer.status().clone();
    wait_for(Duration::from_secs(10), "overflow counted", || {
        let s = status.clone();
        async move {
            s.readings_held.load(Ordering::Relaxed) == 3_000
                && s.readings_stored.load(Ordering::Relaxed)
                    + s.readings_lost.load(Ordering::Relaxed)
                    + 3_000
                    == sent as u64
        }
    })
    .await;

    writer.set_disk_limit(None).await.unwrap();
    writer.shutdown().await.unwrap();
    task.await.unwrap();
    let lost = status.readings_lost.load(Ordering::Relaxed) as i64;
    assert!(lost > 0);
    let values = stored_values(&o);
    assert_eq!(
        values.len() as i64 + lost,
        sent,
        "stored + counted loss = sent"
    );
    // The newest 3,000 were kept; the drop took the oldest held ones.
    assert_eq!(
        values[values.len() - 3_000..],
        (sent - 3_000..sent).map(|k| k as f64).collect::<Vec<_>>()[..]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_writes_the_queue_and_the_open_buckets() {
    let dir = tempfile::tempdir().unwrap();
    let o = StoreOptions {
        // One tick at the start, none after.
        tick_ms: 3_600_000,
        ..opts(&dir)
    };
    let (writer, task) = spawn(&o, 10);
    // Readings of now: the bucket they open is not over, so nothing but the shutdown
    // commits it.
    let t0 = support::now_ms();
    for b in 0..20 {
        writer
            .send_readings(batch_at(t0, b * 1_000, 1_000))
            .await
            .unwrap();
    }
    writer.shutdown().await.unwrap();
    task.await.unwrap();
    assert_eq!(
        writer.try_send_readings(batch(0, 1)).unwrap_err().len(),
        1,
        "a stopped writer hands the batch back"
    );
    assert!(matches!(
        writer.commit_alarms(Vec::new()).await,
        Err(StoreError::WriterStopped)
    ));

    assert_eq!(
        stored_values(&o),
        (0..20_000).map(|k| k as f64).collect::<Vec<_>>()
    );
    let reader = Reader::open(&o.path).unwrap();
    let stats = reader
        .history_stats("CH4-3", Timestamp(t0 - 600_000), Timestamp(t0 + 600_000))
        .unwrap();
    assert_eq!(stats.iter().map(|s| s.count).sum::<u64>(), 2_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_of_small_batches_is_committed_in_groups() {
    let dir = tempfile::tempdir().unwrap();
    let o = StoreOptions {
        min_commit_interval_ms: 1_500,
        // No tick within the test: only the group commit decides when readings go.
        tick_ms: 600_000,
        ..opts(&dir)
    };
    let (writer, task) = spawn(&o, 10);
    let st = writer.status().clone();
    // `n` rows stored and at least `commits` commits counted.
    let stored = |n: u64, commits: u64| {
        let st = st.clone();
        move || {
            let st = st.clone();
            async move {
                st.readings_stored.load(Ordering::Relaxed) == n
                    && st.readings_commits.load(Ordering::Relaxed) >= commits
            }
        }
    };

    // After a quiet spell a batch is committed by itself.
    writer.send_readings(batch(0, 5)).await.unwrap();
    wait_for(Duration::from_secs(30), "the first batch", stored(5, 1)).await;
    assert_eq!(st.readings_commits.load(Ordering::Relaxed), 1);

    // Twenty more, a few ms apart, within the interval: gathered into one commit
    // (one each without grouping).
    for k in 0..20 {
        writer.send_readings(batch(5 + 5 * k, 5)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    wait_for(
        Duration::from_secs(30),
        "the gathered batches",
        stored(105, 2),
    )
    .await;
    assert_eq!(st.readings_commits.load(Ordering::Relaxed), 2);

    // Readings still gathering when the writer shuts down are written, not lost.
    writer.send_readings(batch(105, 5)).await.unwrap();
    writer.shutdown().await.unwrap();
    task.await.unwrap();
    assert_eq!(st.readings_lost.load(Ordering::Relaxed), 0);
    let expected: Vec<f64> = (0..110).map(|k| k as f64).collect();
    assert_eq!(stored_values(&o), expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receipt_is_confirmed_after_its_commit_and_not_while_the_disk_is_full() {
    let dir = tempfile::tempdir().unwrap();
    let o = StoreOptions {
        // Without a receipt a batch right after a commit would wait ten minutes.
        min_commit_interval_ms: 600_000,
        disk_limit_bytes: Some(256 * 1024),
        max_batch_readings: 1_000,
        ..opts(&dir)
    };
    let (writer, task) = spawn(&o, 10);
    let book = Arc::new(Receipts::default());
    let stored = |seq: u64| {
        let book = book.clone();
        move || {
            let book = book.clone();
            async move { book.stored() >= seq }
        }
    };
    writer.send_readings(batch(0, 5)).await.unwrap();
    let send = |first: i64, n: i64, seq: u64| Batch {
        readings: batch(first, n),
        receipt: Some(book.receipt(seq)),
    };
    writer.send_batch(send(5, 5, 1)).await.unwrap();
    wait_for(Duration::from_secs(30), "receipt 1", stored(1)).await;
    // Confirmed means committed: another connection sees the rows.
    assert_eq!(stored_values(&o).len(), 10);
    // A batch with no readings left is confirmed behind the ones before it.
    writer.send_batch(send(10, 0, 2)).await.unwrap();
    wait_for(Duration::from_secs(30), "receipt 2", stored(2)).await;

    // Disk full: the batch is held, its receipt waits.
    let sent = 10 + fill_until_held(&writer).await;
    writer.send_batch(send(sent, 100, 3)).await.unwrap();
    let status = writer.status().clone();
    wait_for(Duration::from_secs(10), "the batch held", || {
        let s = status.clone();
        async move { s.readings_received.load(Ordering::Relaxed) as i64 == sent + 100 }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        book.stored(),
        2,
        "confirmed while its readings were not written"
    );
    writer.set_disk_limit(None).await.unwrap();
    wait_for(Duration::from_secs(30), "receipt 3", stored(3)).await;
    assert_eq!(status.readings_held.load(Ordering::Relaxed), 0);
    writer.shutdown().await.unwrap();
    task.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_with_receipts_in_a_stream_are_committed_together_and_soon() {
    let dir = tempfile::tempdir().unwrap();
    let o = StoreOptions {
        // Sources waiting for receipts never wait this interval, only RECEIPT_GATHER.
        min_commit_interval_ms: 600_000,
        tick_ms: 600_000,
        ..opts(&dir)
    };
    let (writer, task) = spawn(&o, 10);
    let status = writer.status().clone();
    let book = Arc::new(Receipts::default());
    // 200 batches of 2 readings, one every 200 µs (40 ms in all), as an MQTT source
    // hands on each read of its socket. Committed one by one, that would be about
    // 200 commits; gathered for 1–2 ms, 20–40.
    const BATCHES: u64 = 200;
    let sender = {
        let (writer, book) = (writer.clone(), book.clone());
        let rt = tokio::runtime::Handle::current();
        std::thread::spawn(move || {
            let start = std::time::Instant::now();
            for k in 0..BATCHES {
                while start.elapsed() < Duration::from_micros(200 * k) {
                    std::hint::spin_loop();
                }
                let batch = Batch {
                    readings: batch(2 * k as i64, 2),
                    receipt: Some(book.receipt(k + 1)),
                };
                rt.block_on(writer.send_batch(batch)).unwrap();
            }
        })
    };
    let confirmed = {
        let book = book.clone();
        move || {
            let book = book.clone();
            async move { book.stored() == BATCHES }
        }
    };
    // Not the ten-minute interval: confirmed within a few ms of the last batch.
    wait_for(Duration::from_secs(30), "every receipt", confirmed).await;
    sender.join().unwrap();
    let commits = status.readings_commits.load(Ordering::Relaxed);
    assert!(
        commits <= BATCHES / 2,
        "{commits} commits for {BATCHES} batches: not gathered"
    );
    assert_eq!(
        stored_values(&o),
        (0..2 * BATCHES).map(|k| k as f64).collect::<Vec<_>>()
    );
    writer.shutdown().await.unwrap();
    task.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readings_awaited_by_a_receipt_are_kept_past_the_bound_and_confirmed_once_stored() {
    let dir = tempfile::tempdir().unwrap();
    let o = StoreOptions {
        disk_limit_bytes: Some(256 * 1024),
        max_batch_readings: 1_000,
        max_held_readings: 3_000,
        ..opts(&dir)
    };
    let (writer, task) = spawn(&o, 10);
    let book = Arc::new(Receipts::default());
    let mut sent = fill_until_held(&writer).await;
    // The disk is full. Batches an MQTT source waits for (their messages are not
    // acknowledged until stored), between plain ones (Modbus) that overflow the
    // bound: 1,500 awaited readings and an empty awaited batch among 6,000 plain.
    let mut awaited = Vec::new();
    for (seq, n) in [(1u64, 500i64), (2, 500), (3, 0), (4, 500)] {
        writer
            .send_batch(Batch {
                readings: batch(sent, n),
                receipt: Some(book.receipt(seq)),
            })
            .await
            .unwrap();
        awaited.extend((sent..sent + n).map(|k| k as f64));
        sent += n;
        writer.send_readings(batch(sent, 2_000)).await.unwrap();
        sent += 2_000;
    }
    let status = writer.status().clone();
    wait_for(Duration::from_secs(10), "every batch taken", || {
        let s = status.clone();
        async move { s.readings_received.load(Ordering::Relaxed) == sent as u64 }
    })
    .await;
    assert_eq!(status.readings_held.load(Ordering::Relaxed), 3_000);
    assert!(status.readings_lost.load(Ordering::Relaxed) > 0);
    assert_eq!(book.stored(), 0, "confirmed while not stored");

    // Space again: every awaited reading is stored and every receipt confirmed.
    writer.set_disk_limit(None).await.unwrap();
    let confirmed = {
        let book = book.clone();
        move || {
            let book = book.clone();
            async move { book.stored() == 4 }
        }
    };
    wait_for(Duration::from_secs(30), "every receipt", confirmed).await;
    writer.shutdown().await.unwrap();
    task.await.unwrap();
    let values = stored_values(&o);
    let kept: std::collections::HashSet<u64> = values.iter().map(|v| v.to_bits()).collect();
    let missing = awaited
        .iter()
        .filter(|v| !kept.contains(&v.to_bits()))
        .count();
    assert_eq!(missing, 0, "awaited readings dropped");
    let lost = status.readings_lost.load(Ordering::Relaxed) as i64;
    assert_eq!(
        values.len() as i64 + lost,
        sent,
        "stored + counted loss = sent"
    );
    assert!(
        values.windows(2).all(|w| w[0] < w[1]),
        "what is kept is in order"
    );
}
