//! The InfluxDB sink: ships stored readings as line protocol to InfluxDB 2.x/3.x
//! (`/api/v2/write`), InfluxDB 1.x (`/write`) or anything that speaks them
//! (VictoriaMetrics).
//!
//! # Invariants
//!
//! - **The store is the queue.** The sink reads `readings` after its own cursor
//!   ([`crate::store::SinkCursor`], kept under [`InfluxOptions::name`]) and commits the
//!   cursor only after the server accepted (or the sink quarantined) every line of the
//!   batch. A server outage just makes the cursor wait; on restart the sink resumes
//!   from the committed cursor, so delivery is at-least-once, in `seq` order, with the
//!   readings' original (device) timestamps. A re-sent line has the same series and
//!   timestamp, so the database keeps one point per series and time.
//! - **Nothing blocks the queue forever, nothing is dropped.** A 400 means some lines
//!   are bad: the lines the error body names (InfluxDB 2.x/3.x give line numbers) are
//!   quarantined, otherwise the batch is bisected until the bad lines are alone; each
//!   is kept in the store's `quarantine` table with the server's error, counted in
//!   [`SinkStatus::quarantined_rows`] and logged, and the rest goes on. Transport
//!   errors, 5xx, 429 and any other status are retried with exponential backoff and
//!   jitter, honouring `Retry-After` (delay-seconds) on 429 and 503; 401/403/404 are
//!   retried too (fix the config; the rows wait).
//! - Batches hold at most [`InfluxOptions::batch_max_lines`] lines; a partial batch is
//!   sent once its oldest row waited [`InfluxOptions::flush_interval_ms`].
//!
//! # Line format
//!
//! See [`encode`]: measurement [`InfluxOptions::measurement`], tags `point` (the
//! configured id), `kind`, and `unit`, `site`, `hazard_source` when known; fields
//! `value` (float; absent when the value is not finite) and `quality` (string);
//! timestamp in ms with `precision=ms`.
//!
//! # Task
//!
//! [`InfluxSink::spawn`] starts the driver; the [`InfluxSink`] handle talks to it over
//! a bounded command channel of capacity 4. [`InfluxSink::wake`] uses `try_send`: when
//! the channel is full a wake is already pending, so nothing is lost by skipping it.
//! [`InfluxSink::shutdown`] waits for room. Dropping every handle stops the sink at
//! its next safe point (as a shutdown does): between requests, never between an
//! accepted request and its cursor commit.

pub mod client;
pub mod config;
pub mod encode;

pub use client::{InfluxClient, WriteOutcome};
pub use config::{InfluxApi, InfluxOptions};

use crate::model::Timestamp;
use crate::store::{PointRow, Reader, SinkCursor, StoreError, StoredReading};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Errors of the InfluxDB sink.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("bad server URL {0}")]
    Url(String),
    #[error("http client: {0}")]
    Http(String),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("the sink's store connection was lost")]
    Stopped,
}

/// Counters a metrics endpoint can read.
#[derive(Debug, Default)]
pub struct SinkStatus {
    /// Rows the server accepted (or that were quarantined) and the cursor moved past.
    pub shipped_rows: AtomicU64,
    /// Rows in the store after the cursor (gauge).
    pub backlog_rows: AtomicU64,
    /// Lines refused by the server and kept in the quarantine table.
    pub quarantined_rows: AtomicU64,
    /// HTTP requests sent.
    pub requests: AtomicU64,
    /// Requests that failed and were retried.
    pub retries: AtomicU64,
    /// The committed cursor (last shipped `readings.seq`).
    pub cursor_seq: AtomicU64,
    /// Shipping rate over the last progress interval, in rows per second.
    pub rate_rows_per_s: AtomicU64,
    /// Estimated time to drain the backlog at that rate, in seconds (0 when idle).
    pub eta_s: AtomicU64,
}

enum Command {
    Wake,
    Shutdown,
}

/// Handle to a running InfluxDB sink.
#[derive(Clone)]
pub struct InfluxSink {
    cmd: mpsc::Sender<Command>,
    status: Arc<SinkStatus>,
}

impl InfluxSink {
    /// Open the store and start the sink's driver task.
    pub fn spawn(
        opts: InfluxOptions,
    ) -> Result<(InfluxSink, tokio::task::JoinHandle<Result<(), SinkError>>), SinkError> {
        let client = InfluxClient::new(&opts)?;
        let reader = Reader::open(&opts.store_path)?;
        let cursor = reader.register_sink(&opts.name)?;
        let (cmd, cmd_rx) = mpsc::channel(4);
        let status = Arc::new(SinkStatus::default());
        status
            .cursor_seq
            .store(cursor.readings_seq.max(0) as u64, Ordering::Relaxed);
        let driver = Driver {
            opts,
            client,
            reader: Some(reader),
            cursor,
            prefixes: HashMap::new(),
            status: status.clone(),
            cmd: cmd_rx,
            stop: false,
        };
        let span = tracing::info_span!("sink", sink = %driver.opts.name, kind = "influxdb");
        let task = tokio::spawn(tracing::Instrument::instrument(driver.run(), span));
        Ok((InfluxSink { cmd, status }, task))
    }

    /// Counters for metrics.
    pub fn status(&self) -> &Arc<SinkStatus> {
        &self.status
    }

    /// New rows were stored: look now instead of at the next poll.
    pub fn wake(&self) {
        let _ = self.cmd.try_send(Command::Wake);
    }

    /// Ask the sink to stop at its next safe point (await the join handle to wait).
    pub async fn shutdown(&self) {
        let _ = self.cmd.send(Command::Shutdown).await;
    }
}

/// One encoded batch: the body and where each line ends.
struct Batch {
    body: String,
    ends: Vec<usize>,
    seqs: Vec<i64>,
}

impl Batch {
    fn line(&self, i: usize) -> &str {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.body[start..self.ends[i]]
    }

    fn subset(&self, idx: &[usize]) -> String {
        let mut s = String::new();
        for &i in idx {
            s.push_str(self.line(i));
        }
        s
    }
}

struct Driver {
    opts: InfluxOptions,
    client: InfluxClient,
    reader: Option<Reader>,
    cursor: SinkCursor,
    prefixes: HashMap<i64, String>,
    status: Arc<SinkStatus>,
    cmd: mpsc::Receiver<Command>,
    stop: bool,
}

fn wall_clock() -> Timestamp {
    Timestamp(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0),
    )
}

fn prefix_for(measurement: &str, p: &PointRow) -> String {
    let tags = [
        ("point", p.id.as_str()),
        ("kind", p.kind.as_str()),
        ("unit", p.unit.as_deref().unwrap_or("")),
        ("site", p.site.as_deref().unwrap_or("")),
        ("hazard_source", p.hazard_source.as_deref().unwrap_or("")),
    ];
    encode::series_prefix(measurement, &tags)
}

impl Driver {
    async fn db<R: Send + 'static>(
        &mut self,
        f: impl FnOnce(&Reader) -> Result<R, StoreError> + Send + 'static,
    ) -> Result<R, SinkError> {
        let reader = self.reader.take().ok_or(SinkError::Stopped)?;
        let (reader, r) = tokio::task::spawn_blocking(move || {
            let r = f(&reader);
            (reader, r)
        })
        .await
        .map_err(|_| SinkError::Stopped)?;
        self.reader = Some(reader);
        Ok(r?)
    }

    /// Sleep for `d`, waking early only for a shutdown. Returns false when stopping.
    async fn sleep(&mut self, d: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + d;
        self.wait_until(deadline, false).await
    }

    async fn wait_until(&mut self, deadline: tokio::time::Instant, wake_early: bool) -> bool {
        loop {
            if self.stop {
                return false;
            }
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => return true,
                c = self.cmd.recv() => match c {
                    Some(Command::Wake) if wake_early => return true,
                    Some(Command::Wake) => {}
                    Some(Command::Shutdown) | None => self.stop = true,
                },
            }
        }
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let base = self
            .opts
            .retry_initial_ms
            .max(1)
            .saturating_mul(1u64 << attempt.min(20));
        let capped = base.min(self.opts.retry_max_ms.max(1)) as f64;
        let jittered = capped * (0.5 + fastrand::f64());
        Duration::from_millis((jittered as u64).min(self.opts.retry_max_ms.max(1)))
    }

    async fn run(mut self) -> Result<(), SinkError> {
        let poll = Duration::from_millis(self.opts.poll_interval_ms.max(1));
        let flush = Duration::from_millis(self.opts.flush_interval_ms);
        let progress_every = Duration::from_secs(self.opts.progress_log_interval_s.max(1));
        let mut progress_at = Instant::now();
        let mut progress_shipped = 0u64;
        let mut waiting_since: Option<Instant> = None;
        let limit = self.opts.batch_max_lines.max(1);
        while !self.stop {
            let after = self.cursor.readings_seq;
            let read = self
                .db(move |r| Ok((r.read_readings_after(after, limit)?, r.last_reading_seq()?)))
                .await;
            let (rows, last_seq) = match read {
                Ok(v) => v,
                Err(SinkError::Stopped) => return Err(SinkError::Stopped),
                Err(e) => {
                    tracing::warn!(error = %e, "reading the store failed; retrying");
                    self.sleep(poll).await;
                    continue;
                }
            };
            let backlog = (last_seq - after).max(0) as u64;
            self.status.backlog_rows.store(backlog, Ordering::Relaxed);
            if progress_at.elapsed() >= progress_every {
                let shipped = self.status.shipped_rows.load(Ordering::Relaxed);
                let secs = progress_at.elapsed().as_secs_f64();
                let rate = (shipped - progress_shipped) as f64 / secs.max(1e-3);
                let eta = if rate > 0.0 {
                    backlog as f64 / rate
                } else {
                    0.0
                };
                self.status
                    .rate_rows_per_s
                    .store(rate as u64, Ordering::Relaxed);
                self.status.eta_s.store(eta as u64, Ordering::Relaxed);
                if backlog as usize > limit {
                    tracing::info!(
                        backlog_rows = backlog,
                        rate_rows_per_s = rate as u64,
                        eta_s = eta as u64,
                        "catching up"
                    );
                }
                progress_at = Instant::now();
                progress_shipped = shipped;
            }
            if rows.is_empty() {
                waiting_since = None;
                let deadline = tokio::time::Instant::now() + poll;
                self.wait_until(deadline, true).await;
                continue;
            }
            if rows.len() < limit {
                let since = *waiting_since.get_or_insert_with(Instant::now);
                if since.elapsed() < flush {
                    let deadline = tokio::time::Instant::from_std(since + flush);
                    self.wait_until(deadline, false).await;
                    continue;
                }
            }
            waiting_since = None;
            let batch = self.encode(&rows).await?;
            if !self.deliver(&batch).await? {
                break;
            }
            let Some(last) = rows.last() else { continue };
            self.cursor.readings_seq = last.seq;
            let (name, cursor) = (self.opts.name.clone(), self.cursor);
            if let Err(e) = self
                .db(move |r| r.commit_cursor(&name, cursor, wall_clock()))
                .await
            {
                // The rows will be sent again after a restart: at-least-once.
                tracing::warn!(error = %e, "committing the sink cursor failed");
            }
            self.status
                .shipped_rows
                .fetch_add(rows.len() as u64, Ordering::Relaxed);
            self.status
                .cursor_seq
                .store(last.seq.max(0) as u64, Ordering::Relaxed);
        }
        tracing::info!(cursor = self.cursor.readings_seq, "sink stopped");
        Ok(())
    }

    async fn encode(&mut self, rows: &[StoredReading]) -> Result<Batch, SinkError> {
        if rows.iter().any(|r| !self.prefixes.contains_key(&r.pid)) {
            let points = self.db(|r| r.points()).await?;
            for p in &points {
                self.prefixes
                    .insert(p.pid, prefix_for(&self.opts.measurement, p));
            }
        }
        let mut body = String::with_capacity(rows.len() * 96);
        let mut ends = Vec::with_capacity(rows.len());
        let mut seqs = Vec::with_capacity(rows.len());
        let mut quality = String::new();
        for r in rows {
            let fallback;
            let prefix = match self.prefixes.get(&r.pid) {
                Some(p) => p.as_str(),
                None => {
                    fallback = encode::series_prefix(
                        &self.opts.measurement,
                        &[("point", &format!("pid:{}", r.pid))],
                    );
                    fallback.as_str()
                }
            };
            quality.clear();
            use std::fmt::Write;
            let _ = write!(quality, "{}", r.quality);
            encode::write_reading(&mut body, prefix, r.value, &quality, r.ts.0);
            ends.push(body.len());
            seqs.push(r.seq);
        }
        Ok(Batch { body, ends, seqs })
    }

    /// Send a batch until every line is accepted or quarantined. `Ok(false)`: stopping.
    async fn deliver(&mut self, batch: &Batch) -> Result<bool, SinkError> {
        let n = batch.ends.len();
        let mut work: Vec<Vec<usize>> = vec![(0..n).collect()];
        let mut attempt = 0u32;
        while let Some(idx) = work.pop() {
            let body = if idx.len() == n {
                std::borrow::Cow::Borrowed(batch.body.as_str())
            } else {
                std::borrow::Cow::Owned(batch.subset(&idx))
            };
            loop {
                if self.stop {
                    return Ok(false);
                }
                self.status.requests.fetch_add(1, Ordering::Relaxed);
                match self.client.write(&body).await {
                    WriteOutcome::Accepted => {
                        attempt = 0;
                        break;
                    }
                    WriteOutcome::BadRequest { body: err } => {
                        attempt = 0;
                        let named: Vec<usize> = client::error_lines(&err)
                            .into_iter()
                            .filter(|&l| l <= idx.len())
                            .map(|l| idx[l - 1])
                            .collect();
                        if idx.len() == 1 {
                            self.quarantine(batch, &idx, &err).await?;
                        } else if !named.is_empty() {
                            self.quarantine(batch, &named, &err).await?;
                            let rest: Vec<usize> =
                                idx.iter().copied().filter(|i| !named.contains(i)).collect();
                            if !rest.is_empty() {
                                work.push(rest);
                            }
                        } else {
                            let (a, b) = idx.split_at(idx.len() / 2);
                            work.push(b.to_vec());
                            work.push(a.to_vec());
                        }
                        break;
                    }
                    WriteOutcome::TooLarge => {
                        if idx.len() == 1 {
                            self.quarantine(batch, &idx, "413 request entity too large")
                                .await?;
                        } else {
                            let (a, b) = idx.split_at(idx.len() / 2);
                            work.push(b.to_vec());
                            work.push(a.to_vec());
                        }
                        break;
                    }
                    WriteOutcome::Retry {
                        status,
                        retry_after,
                        reason,
                    } => {
                        self.status.retries.fetch_add(1, Ordering::Relaxed);
                        let max = Duration::from_millis(self.opts.retry_max_ms.max(1));
                        let delay = match (status, retry_after) {
                            (Some(429 | 503), Some(d)) => d.min(max),
                            _ => self.backoff(attempt),
                        };
                        if attempt == 0 || attempt % 10 == 0 {
                            tracing::warn!(
                                status = status.unwrap_or(0),
                                error = %reason,
                                attempt,
                                retry_in_ms = delay.as_millis() as u64,
                                "write failed; rows stay in the store and will be retried"
                            );
                        }
                        attempt = attempt.saturating_add(1);
                        if !self.sleep(delay).await {
                            return Ok(false);
                        }
                    }
                }
            }
        }
        Ok(true)
    }

    async fn quarantine(
        &mut self,
        batch: &Batch,
        idx: &[usize],
        error: &str,
    ) -> Result<(), SinkError> {
        let lines: Vec<(i64, String)> = idx
            .iter()
            .map(|&i| (batch.seqs[i], batch.line(i).trim_end().to_owned()))
            .collect();
        let n = lines.len() as u64;
        let (name, err) = (
            self.opts.name.clone(),
            error.chars().take(1000).collect::<String>(),
        );
        tracing::warn!(lines = n, error = %err, "server refused lines; quarantined them");
        self.db(move |r| r.quarantine(&name, &lines, &err, wall_clock()))
            .await?;
        self.status.quarantined_rows.fetch_add(n, Ordering::Relaxed);
        Ok(())
    }
}
