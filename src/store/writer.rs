//! The store's writer task: a handle ([`StoreWriter`]) and a driver that owns the
//! [`Store`] and runs its blocking SQLite calls on a thread of its own.
//!
//! Two bounded channels feed the driver, and it always serves the first before the
//! second (alarms take priority over readings):
//!
//! - **control** (alarm events, audit rows, disk limit, shutdown), capacity
//!   [`StoreOptions::control_queue`]: when full, [`StoreWriter::commit_alarms`] waits —
//!   an alarm is never dropped, the engine is slowed instead. The reply comes after
//!   the fsync, so the caller reports an alarm as raised only once it is durable.
//! - **readings** (batches), capacity [`StoreOptions::readings_queue_batches`]: when
//!   full, [`StoreWriter::try_send_readings`] hands the batch back to the caller.
//!
//! Readings are committed in groups: a batch that finds the last readings commit at
//! least [`StoreOptions::min_commit_interval_ms`] old is written at once, and batches
//! arriving sooner are gathered and written together when that interval is over. A
//! steady stream of small batches (MQTT messages a few at a time) then costs one
//! transaction per interval rather than one per batch, and a reading after a quiet
//! spell waits for nothing.
//!
//! A batch may carry a source's [`Receipt`]: it is confirmed once every reading of the
//! batch and of the batches before it is committed (the MQTT source acknowledges
//! messages to the broker only then). Such a source may be holding back until then (a
//! broker sends only so many unacknowledged messages), so a batch with a receipt waits
//! [`RECEIPT_GATHER`] after the last commit rather than the whole interval: after a
//! quiet spell it is written at once, and under a stream of messages the batches of
//! 1–2 ms go in one commit (about 200 rows at 100,000 messages/s, rather than one
//! commit per read of the socket, 15–20 rows). Meanwhile they wait in the channel
//! rather than wake the writer one by one. Batches that arrive while a commit runs
//! also go together in the next one.
//!
//! Readings the store could not write (disk full, limit reached) are kept in memory,
//! in order, and retried every tick; the store reports itself degraded meanwhile. Past
//! [`StoreOptions::max_held_readings`] the oldest held readings without a receipt are
//! dropped — counted in [`StoreStatus::readings_lost`] and logged, never silently.
//! Readings whose source waits for a receipt are never dropped: an MQTT source would
//! acknowledge them, and the broker would forget them. They need no bound of their
//! own: a broker sends a client only so many unacknowledged messages, and keeps the
//! rest until the store can write again.

use super::{AuditEntry, Store, StoreError, StoreOptions};
use crate::engine::AlarmEvent;
use crate::model::{Batch, Reading, Receipt, Timestamp};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Group commit for batches whose source waits for their receipt: written this long
/// after the last commit began (or [`StoreOptions::min_commit_interval_ms`] when that
/// is shorter), rounded up to the timer's millisecond, so 1–2 ms. Short, because the
/// source's broker may send nothing more until it is acknowledged: a broker holding
/// 20 unacknowledged messages per client caps such a client at 20 messages per
/// gather, 10,000–20,000 messages/s.
pub const RECEIPT_GATHER: Duration = Duration::from_millis(1);

/// Counters of the writer, readable by a metrics endpoint.
#[derive(Debug, Default)]
pub struct StoreStatus {
    /// Readings handed to the store.
    pub readings_received: AtomicU64,
    /// Raw rows stored after the change filter.
    pub readings_stored: AtomicU64,
    /// Readings transactions committed.
    pub readings_commits: AtomicU64,
    /// Readings waiting in memory because the store could not take them (gauge).
    pub readings_held: AtomicU64,
    /// Held readings dropped because the hold buffer overflowed.
    pub readings_lost: AtomicU64,
    /// Failed store calls (any kind).
    pub write_errors: AtomicU64,
    /// Alarm events committed.
    pub alarm_events: AtomicU64,
    /// Audit rows committed.
    pub audit_rows: AtomicU64,
    /// The disk is full or the disk limit forced a loss; cleared on the next good write.
    pub degraded: AtomicBool,
}

enum Command {
    Alarms(
        Vec<AlarmEvent>,
        oneshot::Sender<Result<Vec<i64>, StoreError>>,
    ),
    Audit(
        Vec<AuditEntry>,
        oneshot::Sender<Result<Vec<i64>, StoreError>>,
    ),
    DiskLimit(Option<u64>, oneshot::Sender<Result<(), StoreError>>),
    Shutdown(oneshot::Sender<Result<(), StoreError>>),
}

/// The handle to the store's writer task. Cheap to clone.
#[derive(Clone)]
pub struct StoreWriter {
    control: mpsc::Sender<Command>,
    readings: mpsc::Sender<Batch>,
    status: Arc<StoreStatus>,
}

impl StoreWriter {
    /// Start the writer (a thread of its own) for `store`. Needs a tokio runtime.
    pub fn spawn(store: Store) -> (StoreWriter, tokio::task::JoinHandle<()>) {
        let opts = store.options();
        let (control, control_rx) = mpsc::channel(opts.control_queue.max(1));
        let (readings, readings_rx) = mpsc::channel(opts.readings_queue_batches.max(1));
        let driver = Driver::new(store, control_rx, readings_rx);
        let status = driver.status.clone();
        let span = tracing::info_span!("store_writer", path = %opts_path(&driver));
        // The writer owns a thread: its SQLite calls run there inline, with no hand-off
        // to a pool thread and back for every commit. The returned task ends with it.
        let (ended, end) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("hazgate-store".into())
            .spawn(move || {
                match tokio::runtime::Builder::new_current_thread()
                    .enable_time()
                    .build()
                {
                    Ok(rt) => rt.block_on(tracing::Instrument::instrument(driver.run(), span)),
                    Err(e) => tracing::error!(error = %e, "store writer runtime"),
                }
                let _ = ended.send(());
            });
        if let Err(e) = thread {
            // The driver is gone with the closure: every call answers WriterStopped.
            tracing::error!(error = %e, "cannot start the store writer thread");
        }
        let task = tokio::spawn(async move {
            let _ = end.await;
        });
        (
            StoreWriter {
                control,
                readings,
                status,
            },
            task,
        )
    }

    /// Counters for metrics.
    pub fn status(&self) -> &Arc<StoreStatus> {
        &self.status
    }

    /// Commit alarm transitions; returns their `seq`s once they are fsynced.
    pub async fn commit_alarms(&self, events: Vec<AlarmEvent>) -> Result<Vec<i64>, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.control
            .send(Command::Alarms(events, tx))
            .await
            .map_err(|_| StoreError::WriterStopped)?;
        rx.await.map_err(|_| StoreError::WriterStopped)?
    }

    /// Commit audit rows; returns their `seq`s once they are fsynced.
    pub async fn audit(&self, entries: Vec<AuditEntry>) -> Result<Vec<i64>, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.control
            .send(Command::Audit(entries, tx))
            .await
            .map_err(|_| StoreError::WriterStopped)?;
        rx.await.map_err(|_| StoreError::WriterStopped)?
    }

    /// Queue a batch of readings without waiting. When the queue is full (or the
    /// writer stopped) the batch is handed back.
    pub fn try_send_readings(&self, batch: Vec<Reading>) -> Result<(), Vec<Reading>> {
        self.readings
            .try_send(Batch::from(batch))
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(b) | mpsc::error::TrySendError::Closed(b) => {
                    b.readings
                }
            })
    }

    /// Queue a batch of readings, waiting for room. Hands the batch back when the
    /// writer stopped.
    pub async fn send_readings(&self, batch: Vec<Reading>) -> Result<(), Vec<Reading>> {
        self.send_batch(Batch::from(batch)).await
    }

    /// Queue a batch with its source's receipt, waiting for room; the receipt is
    /// confirmed after the commit. Hands the readings back when the writer stopped
    /// (the receipt is then dropped unconfirmed).
    pub async fn send_batch(&self, batch: Batch) -> Result<(), Vec<Reading>> {
        self.readings.send(batch).await.map_err(|e| e.0.readings)
    }

    /// Change the disk limit (e.g. an operator freed space or raised it). Held
    /// readings are retried at once.
    pub async fn set_disk_limit(&self, limit: Option<u64>) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        self.control
            .send(Command::DiskLimit(limit, tx))
            .await
            .map_err(|_| StoreError::WriterStopped)?;
        rx.await.map_err(|_| StoreError::WriterStopped)?
    }

    /// Write everything queued, commit open statistics buckets, checkpoint, stop.
    pub async fn shutdown(&self) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        self.control
            .send(Command::Shutdown(tx))
            .await
            .map_err(|_| StoreError::WriterStopped)?;
        rx.await.map_err(|_| StoreError::WriterStopped)?
    }
}

struct Driver {
    store: Store,
    opts: StoreOptions,
    control: mpsc::Receiver<Command>,
    readings: mpsc::Receiver<Batch>,
    held: VecDeque<Reading>,
    /// Receipts waiting for their batch, in order.
    receipts: VecDeque<Awaited>,
    /// The numbers of the held readings: `held` holds `settled..taken`. Both grow as
    /// readings are taken and written; dropping readings renumbers those after them.
    taken: u64,
    settled: u64,
    /// When the last readings write started (group commit).
    last_write: tokio::time::Instant,
    /// A write failed; wait for the next tick before retrying.
    blocked: bool,
    status: Arc<StoreStatus>,
}

/// A batch whose source waits for its receipt: its readings are numbered
/// `start..end` (as `Driver::taken` counts them) and are never dropped.
struct Awaited {
    start: u64,
    end: u64,
    receipt: Receipt,
}

fn opts_path(d: &Driver) -> String {
    d.opts.path.display().to_string()
}

fn wall_clock() -> Timestamp {
    Timestamp(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0),
    )
}

impl Driver {
    fn new(
        store: Store,
        control: mpsc::Receiver<Command>,
        readings: mpsc::Receiver<Batch>,
    ) -> Driver {
        let opts = store.options().clone();
        // As if the last commit were an interval ago: the first batch goes at once.
        let now = tokio::time::Instant::now();
        let last_write = now
            .checked_sub(Duration::from_millis(opts.min_commit_interval_ms))
            .unwrap_or(now);
        Driver {
            store,
            opts,
            control,
            readings,
            held: VecDeque::new(),
            receipts: VecDeque::new(),
            taken: 0,
            settled: 0,
            last_write,
            blocked: false,
            status: Arc::new(StoreStatus::default()),
        }
    }

    /// Run a store call (inline: the writer owns its thread) and publish whether the
    /// store is degraded after it.
    fn call<R>(&mut self, f: impl FnOnce(&mut Store) -> R) -> R {
        let r = f(&mut self.store);
        self.note_degraded();
        r
    }

    fn note_degraded(&self) {
        self.status
            .degraded
            .store(self.store.degraded(), Ordering::Relaxed);
    }

    async fn run(mut self) {
        let mut tick = tokio::time::interval(Duration::from_millis(self.opts.tick_ms.max(10)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let prune_every = Duration::from_secs(self.opts.prune_interval_s.max(1));
        let mut last_prune = tokio::time::Instant::now();
        loop {
            let next_write = self.next_write();
            let gathering = !self.held.is_empty() && !self.blocked;
            // While a receipt gather runs, batches wait in the channel rather than wake
            // this thread one by one; the timer takes them all.
            let receipt_gather = gathering && !self.receipts.is_empty();
            tokio::select! {
                biased;
                cmd = self.control.recv() => match cmd {
                    Some(Command::Alarms(events, reply)) => {
                        let n = events.len() as u64;
                        let r = self.call(|s| s.append_alarm_events(&events));
                        self.count(&r, &self.status.alarm_events, n);
                        let _ = reply.send(r);
                    }
                    Some(Command::Audit(entries, reply)) => {
                        let n = entries.len() as u64;
                        let r = self.call(|s| s.append_audit(&entries));
                        self.count(&r, &self.status.audit_rows, n);
                        let _ = reply.send(r);
                    }
                    Some(Command::DiskLimit(limit, reply)) => {
                        let r = self.call(|s| s.set_disk_limit(limit));
                        let ok = r.is_ok();
                        let _ = reply.send(r);
                        if ok {
                            self.blocked = false;
                            self.write_held();
                        }
                    }
                    Some(Command::Shutdown(reply)) => {
                        let r = self.shutdown().await;
                        let _ = reply.send(r);
                        return;
                    }
                    None => {
                        if let Err(e) = self.shutdown().await {
                            tracing::error!(error = %e, "store shutdown failed");
                        }
                        return;
                    }
                },
                // Readings gathered by the group commit: written once the interval is over.
                _ = tokio::time::sleep_until(next_write), if gathering => {
                    self.take_queued();
                    self.write_held();
                }
                batch = self.readings.recv(), if !receipt_gather => {
                    if let Some(batch) = batch {
                        self.take(batch);
                        self.take_queued();
                        if !self.blocked {
                            self.write_or_gather();
                        }
                    }
                }
                _ = tick.tick() => {
                    self.blocked = false;
                    self.write_held();
                    let now = wall_clock();
                    let r = self.call(|s| s.close_buckets(now));
                    if let Err(e) = r {
                        self.status.write_errors.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(error = %e, "closing statistics buckets failed; will retry");
                    }
                    if last_prune.elapsed() >= prune_every {
                        last_prune = tokio::time::Instant::now();
                        match self.call(|s| s.prune(now)) {
                            Ok(rep) if rep.readings_lost_unshipped > 0 => {
                                self.status.readings_lost.fetch_add(rep.readings_lost_unshipped, Ordering::Relaxed);
                            }
                            Ok(_) => {}
                            Err(e) => {
                                self.status.write_errors.fetch_add(1, Ordering::Relaxed);
                                tracing::warn!(error = %e, "pruning failed");
                            }
                        }
                    }
                }
            }
        }
    }

    fn count<T>(&self, r: &Result<T, StoreError>, ok: &AtomicU64, n: u64) {
        match r {
            Ok(_) => {
                ok.fetch_add(n, Ordering::Relaxed);
            }
            Err(e) => {
                self.status.write_errors.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, "committing alarm/audit rows failed");
            }
        }
    }

    /// Accept a batch into the hold buffer; past the bound, drop (counted) the oldest
    /// readings that no source waits for.
    fn take(&mut self, batch: Batch) {
        let n = batch.readings.len() as u64;
        self.status
            .readings_received
            .fetch_add(n, Ordering::Relaxed);
        let start = self.taken;
        self.held.extend(batch.readings);
        self.taken += n;
        if let Some(receipt) = batch.receipt {
            self.receipts.push_back(Awaited {
                start,
                end: self.taken,
                receipt,
            });
        }
        let max = self.opts.max_held_readings.max(1);
        let excess = self.held.len().saturating_sub(max);
        if excess > 0 {
            let dropped = self.drop_oldest_unawaited(excess);
            if dropped > 0 {
                self.status
                    .readings_lost
                    .fetch_add(dropped as u64, Ordering::Relaxed);
                tracing::error!(
                    dropped,
                    held = self.held.len(),
                    bound = max,
                    "store cannot keep up and the hold buffer is full: dropped the oldest readings"
                );
            }
        }
        // Confirms an empty batch's receipt once nothing is held before it.
        self.settle(0);
        self.status
            .readings_held
            .store(self.held.len() as u64, Ordering::Relaxed);
    }

    /// Drop up to `want` of the oldest held readings that no receipt waits for, keeping
    /// the order of the rest; how many were dropped.
    fn drop_oldest_unawaited(&mut self, mut want: usize) -> usize {
        let mut dropped = 0;
        // The number of the first held reading not yet known to be awaited.
        let mut num = self.settled;
        while want > 0 && num < self.taken {
            // Readings from `num` up to the next awaited batch (or the end) are free.
            let free_end = match self.receipts.iter().find(|a| a.end > num) {
                Some(a) if a.start <= num => {
                    num = a.end; // awaited: skip the batch
                    continue;
                }
                Some(a) => a.start,
                None => self.taken,
            };
            let k = (free_end - num).min(want as u64);
            let at = (num - self.settled) as usize;
            self.held.drain(at..at + k as usize);
            // The batches after the dropped readings move up by `k`.
            for a in self.receipts.iter_mut().filter(|a| a.start >= num + k) {
                a.start -= k;
                a.end -= k;
            }
            self.taken -= k;
            want -= k as usize;
            dropped += k as usize;
        }
        dropped
    }

    /// Take the batches already queued, up to a transaction's worth.
    fn take_queued(&mut self) {
        while self.held.len() < self.opts.max_batch_readings {
            match self.readings.try_recv() {
                Ok(b) => self.take(b),
                Err(_) => break,
            }
        }
    }

    /// Group commit: when held readings may be written next; sooner when a source
    /// waits for a receipt.
    fn next_write(&self) -> tokio::time::Instant {
        let interval = Duration::from_millis(self.opts.min_commit_interval_ms);
        let interval = if self.receipts.is_empty() {
            interval
        } else {
            interval.min(RECEIPT_GATHER)
        };
        self.last_write + interval
    }

    /// `n` more held readings are written: confirm the receipts of every batch now
    /// wholly written.
    fn settle(&mut self, n: u64) {
        self.settled += n;
        while self.receipts.front().is_some_and(|a| a.end <= self.settled) {
            if let Some(a) = self.receipts.pop_front() {
                a.receipt.confirm();
            }
        }
    }

    /// Group commit: write the held readings now when a full batch is waiting or the
    /// last write is old enough ([`Driver::next_write`]); otherwise they wait for the
    /// timer branch of `run`.
    fn write_or_gather(&mut self) {
        if self.held.len() >= self.opts.max_batch_readings.max(1)
            || tokio::time::Instant::now() >= self.next_write()
        {
            self.write_held();
        }
    }

    /// Write held readings in batches until none are left or a write fails.
    fn write_held(&mut self) {
        if !self.held.is_empty() {
            self.last_write = tokio::time::Instant::now();
        }
        while !self.held.is_empty() {
            let n = self.held.len().min(self.opts.max_batch_readings.max(1));
            // Written from the front of the queue, and taken off it only once stored.
            let batch = &self.held.make_contiguous()[..n];
            let written = self.store.write_readings(batch);
            self.note_degraded();
            match written {
                Ok(w) => {
                    self.held.drain(..n);
                    self.status
                        .readings_stored
                        .fetch_add(w.stored as u64, Ordering::Relaxed);
                    self.status.readings_commits.fetch_add(1, Ordering::Relaxed);
                    self.settle(n as u64);
                }
                Err(e) => {
                    self.status.write_errors.fetch_add(1, Ordering::Relaxed);
                    if e.is_full() {
                        self.status.degraded.store(true, Ordering::Relaxed);
                    }
                    tracing::warn!(error = %e, held = self.held.len(), "readings write failed; keeping them and retrying");
                    self.blocked = true;
                    break;
                }
            }
        }
        self.status
            .readings_held
            .store(self.held.len() as u64, Ordering::Relaxed);
    }

    async fn shutdown(&mut self) -> Result<(), StoreError> {
        self.readings.close();
        while let Some(b) = self.readings.recv().await {
            self.take(b);
        }
        self.blocked = false;
        self.write_held();
        self.call(|s| s.flush())?;
        if !self.held.is_empty() {
            let n = self.held.len();
            self.status
                .readings_lost
                .fetch_add(n as u64, Ordering::Relaxed);
            tracing::error!(lost = n, "store shut down with readings it could not write");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::model::{PointId, Quality, Receipts};

    /// A writer that only takes batches (never writes), with a bound of `max`.
    fn driver(dir: &tempfile::TempDir, max: usize) -> Driver {
        let opts = StoreOptions {
            path: dir.path().join("s.db"),
            max_held_readings: max,
            ..StoreOptions::default()
        };
        let (_, control) = mpsc::channel(1);
        let (_, readings) = mpsc::channel(1);
        Driver::new(Store::open(&opts).unwrap(), control, readings)
    }

    /// Random batches, plain and awaited (some empty), into a small bound, with some
    /// held readings written now and then: after every step the held readings are the
    /// awaited ones and the newest plain ones, in order, and every receipt covers
    /// exactly its batch.
    #[test]
    fn past_the_bound_only_the_oldest_plain_readings_go() {
        let dir = tempfile::tempdir().unwrap();
        let mut d = driver(&dir, 50);
        let book = Arc::new(Receipts::default());
        let mut rng = 0x2545_F491_4F6C_DD1Du64;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        // Every reading's value is its number in arrival order.
        let (mut sent, mut seq) = (0u64, 0u64);
        let mut plain: Vec<u64> = Vec::new();
        // Awaited batches not yet confirmed, in order: (number, its readings).
        let mut pending: VecDeque<(u64, Vec<u64>)> = VecDeque::new();
        for _ in 0..2_000 {
            let n = next() % 12;
            let readings: Vec<Reading> = (sent..sent + n)
                .map(|k| Reading {
                    point: PointId(0),
                    ts: Timestamp(k as i64),
                    value: k as f64,
                    quality: Quality::Good,
                })
                .collect();
            let receipt = if next() % 3 == 0 {
                seq += 1;
                pending.push_back((seq, (sent..sent + n).collect()));
                Some(book.receipt(seq))
            } else {
                plain.extend(sent..sent + n);
                None
            };
            sent += n;
            d.take(Batch { readings, receipt });
            // Now and then the store writes some of the front.
            if next() % 10 == 0 {
                let k = (next() % 20).min(d.held.len() as u64);
                d.held.drain(..k as usize);
                d.settle(k);
            }

            while pending.front().is_some_and(|(s, _)| *s <= book.stored()) {
                pending.pop_front();
            }
            assert_eq!(pending.len(), d.receipts.len());
            let held: Vec<u64> = d.held.iter().map(|r| r.value as u64).collect();
            assert_eq!(held.len() as u64, d.taken - d.settled);
            assert!(held.windows(2).all(|w| w[0] < w[1]), "out of order");
            let mut awaited = std::collections::HashSet::new();
            let mut last_end = d.settled;
            for (a, (_, batch)) in d.receipts.iter().zip(&pending) {
                // The front batch may be partly written already: it starts before
                // `settled`.
                let start = a.start.max(d.settled);
                assert!(
                    last_end <= start && start <= a.end && a.end <= d.taken,
                    "{last_end} {} {} {} {}",
                    a.start,
                    a.end,
                    d.settled,
                    d.taken
                );
                last_end = a.end;
                let range = (start - d.settled) as usize..(a.end - d.settled) as usize;
                if a.start >= d.settled {
                    assert_eq!(&held[range.clone()], &batch[..], "receipt off its batch");
                } else {
                    // Partly written: the rest of the batch.
                    assert!(
                        batch.ends_with(&held[range.clone()]),
                        "receipt off its batch"
                    );
                }
                awaited.extend(held[range].iter().copied());
            }
            let kept_plain: Vec<u64> = held
                .iter()
                .copied()
                .filter(|v| !awaited.contains(v))
                .collect();
            // The plain readings kept are the newest not yet written.
            assert!(
                plain.ends_with(&kept_plain),
                "a newer plain reading went first"
            );
            if held.len() > 50 {
                assert!(kept_plain.is_empty(), "over the bound with plain readings");
            }
        }
        assert!(d.status.readings_lost.load(Ordering::Relaxed) > 0);
    }
}
