//! The uplink to the provincial safety-supervision / emergency command platform:
//! alarm transitions, real-time values, 5-minute statistics and a heartbeat, read
//! from the durable log by the uplink's own cursors and sent over MQTT or HTTP(S), as JSON or as the legacy
//! KJ text records. The message formats are in [`encode`] and `docs/uplink.md`.
//!
//! # Invariants
//!
//! - **The store is the queue.** Alarm events (`alarm_events.seq`) and readings
//!   (`readings.seq`) are read after the uplink's [`SinkCursor`] (kept under
//!   [`UplinkOptions::name`]); the cursor moves only past messages the platform
//!   acknowledged (MQTT PUBACK, HTTP 2xx). A failed send hands nothing over: the rows
//!   stay in the store and are sent again, in the same order, after a backoff.
//!   Delivery is at-least-once, in store order (so in order per hazard source), with
//!   stable message ids ([`encode`]) the receiver uses to drop duplicates.
//! - **5-minute statistics** (`stats_5min`) are read after their own cursor
//!   (`sink_cursors.stats_seq`, in the order the rows were last written), so a window
//!   goes up once it is over and again, with a new id, only if later readings revise
//!   it. Same at-least-once rule: the cursor moves past acknowledged rows only.
//! - **Alarms go first.** Each round sends every pending alarm event before one
//!   bulk batch (at most [`UplinkOptions::realtime_batch_max`] readings or
//!   [`UplinkOptions::stats_batch_max`] statistics rows; the two take turns while
//!   both have a backlog), so a new alarm waits at most one bulk message even while
//!   hours of backlog drain. A wake that arrives while a bulk batch is being read and
//!   encoded makes the driver set that batch aside and send the alarms first. Over
//!   MQTT alarms go in an alarm lane: each is published as soon as the driver is
//!   woken for it, several in flight (QoS 1), beside a bulk message or not, so an
//!   alarm never waits for a PUBACK. The readings or statistics cursor still moves
//!   only once the bulk message is acknowledged, the alarm cursor over the
//!   acknowledged prefix of the lane; a new connection starts the lane again from
//!   the cursor.
//! - **Real-time values** are sent every [`UplinkOptions::realtime_interval_ms`] when
//!   caught up, and back to back while there is a backlog.
//! - **Heartbeats** are not stored: one that cannot be sent is counted
//!   ([`UplinkStatus::heartbeats_missed`]) and the next one is due an interval later.
//! - MQTT: a retained `online` status on every connect; a retained `offline` last will
//!   (the broker publishes it when the gateway vanishes) and the same message on a
//!   clean shutdown.
//!
//! # Task
//!
//! [`UplinkSink::spawn`] starts the driver; the [`UplinkSink`] handle talks to it over
//! a bounded command channel of capacity 4. [`UplinkSink::wake`] uses `try_send`:
//! when the channel is full a wake is already pending, so skipping it loses nothing.
//! [`UplinkSink::shutdown`] waits for room. Dropping every handle stops the sink at
//! its next safe point, as a shutdown does.

pub mod encode;
pub mod http;
pub mod mqtt;
pub mod options;
pub mod sm4;
mod tls;

pub use encode::{Format, GradeInfo, Message, MessageKind};
pub use options::{AlarmFilter, HttpUplink, MqttUplink, TlsFiles, UplinkOptions, UplinkTransport};

use crate::engine::Alarm;
use crate::model::Timestamp;
use crate::store::{PointRow, Reader, SinkCursor, StoreError};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Errors of the uplink.
#[derive(Debug, thiserror::Error)]
pub enum UplinkError {
    #[error("bad URL {0}")]
    Url(String),
    #[error("TLS set-up: {0}")]
    Tls(String),
    /// The connection failed or was lost.
    #[error("link: {0}")]
    Link(String),
    /// The platform answered but did not accept the message.
    #[error("refused: {0}")]
    Refused(String),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("the uplink's store connection was lost")]
    Stopped,
}

/// Counters a metrics endpoint can read.
#[derive(Debug, Default)]
pub struct UplinkStatus {
    /// Alarm transitions the platform acknowledged.
    pub alarms_sent: AtomicU64,
    /// Readings the platform acknowledged.
    pub readings_sent: AtomicU64,
    /// Messages acknowledged (alarms, real-time batches, heartbeats).
    pub messages_sent: AtomicU64,
    pub heartbeats_sent: AtomicU64,
    /// Heartbeats that could not be sent (not retried: the next one replaces them).
    pub heartbeats_missed: AtomicU64,
    /// Failed sends (each is retried after a backoff).
    pub send_failures: AtomicU64,
    /// Alarm events whose stored JSON could not be decoded (sent with the stored
    /// columns only).
    pub bad_alarm_json: AtomicU64,
    /// Committed cursor: last acknowledged `alarm_events.seq`.
    pub alarm_cursor: AtomicU64,
    /// Committed cursor: last acknowledged `readings.seq`.
    pub reading_cursor: AtomicU64,
    /// Readings in the store after the cursor (gauge).
    pub backlog_readings: AtomicU64,
    /// Statistics records (point × 5-minute window) the platform acknowledged.
    pub stats_sent: AtomicU64,
    /// Committed cursor: last acknowledged `stats_5min.seq`.
    pub stats_cursor: AtomicU64,
    /// The link is up (MQTT connected; HTTP: the last request succeeded).
    pub connected: AtomicBool,
}

enum Command {
    Wake,
    Shutdown,
}

/// Handle to a running uplink.
#[derive(Clone)]
pub struct UplinkSink {
    cmd: mpsc::Sender<Command>,
    status: Arc<UplinkStatus>,
}

enum Link {
    Mqtt(mqtt::MqttLink),
    Http(http::HttpLink),
}

impl Link {
    async fn send(&mut self, msgs: &[Message]) -> Result<(), (usize, UplinkError)> {
        match self {
            Link::Mqtt(l) => l.send(msgs).await,
            Link::Http(l) => l.send(msgs).await,
        }
    }

    async fn idle(&mut self) {
        match self {
            Link::Mqtt(l) => l.idle().await,
            Link::Http(_) => std::future::pending().await,
        }
    }

    fn resume(&mut self) {
        if let Link::Mqtt(l) = self {
            l.resume();
        }
    }

    fn is_down(&self) -> bool {
        matches!(self, Link::Mqtt(l) if l.is_down())
    }

    fn is_connected(&self) -> Option<bool> {
        match self {
            Link::Mqtt(l) => Some(l.is_connected()),
            Link::Http(_) => None,
        }
    }
}

impl UplinkSink {
    /// Open the store, start the link and the driver task.
    pub fn spawn(
        opts: UplinkOptions,
    ) -> Result<(UplinkSink, tokio::task::JoinHandle<Result<(), UplinkError>>), UplinkError> {
        let reader = Reader::open(&opts.store_path)?;
        let cursor = reader.register_sink(&opts.name)?;
        let stats_cursor = reader.stats_cursor(&opts.name)?;
        let link = match &opts.transport {
            UplinkTransport::Mqtt(m) => Link::Mqtt(mqtt::MqttLink::start(
                m,
                &opts.site,
                opts.alarm_batch_max.max(64),
            )?),
            UplinkTransport::Http(h) => {
                Link::Http(http::HttpLink::new(h, opts.format == Format::Json)?)
            }
        };
        let (cmd, cmd_rx) = mpsc::channel(4);
        let status = Arc::new(UplinkStatus::default());
        status
            .alarm_cursor
            .store(cursor.events_seq.max(0) as u64, Ordering::Relaxed);
        status
            .reading_cursor
            .store(cursor.readings_seq.max(0) as u64, Ordering::Relaxed);
        status
            .stats_cursor
            .store(stats_cursor.max(0) as u64, Ordering::Relaxed);
        let driver = Driver {
            known: Known {
                points: HashMap::new(),
                grades: opts.grades.clone(),
            },
            opts,
            link,
            reader: Some(reader),
            cursor,
            stats_cursor,
            stats_turn: true,
            status: status.clone(),
            cmd: cmd_rx,
            stop: false,
            attempt: 0,
            lane: Lane {
                read_to: cursor.events_seq,
                ..Lane::default()
            },
        };
        let span = tracing::info_span!("sink", sink = %driver.opts.name, kind = "uplink");
        let task = tokio::spawn(tracing::Instrument::instrument(driver.run(), span));
        Ok((UplinkSink { cmd, status }, task))
    }

    /// Counters for metrics.
    pub fn status(&self) -> &Arc<UplinkStatus> {
        &self.status
    }

    /// New rows (an alarm event) were stored: look now instead of at the next poll.
    pub fn wake(&self) {
        let _ = self.cmd.try_send(Command::Wake);
    }

    /// Ask the sink to stop at its next safe point (await the join handle to wait).
    pub async fn shutdown(&self) {
        let _ = self.cmd.send(Command::Shutdown).await;
    }
}

struct Known {
    points: HashMap<i64, PointRow>,
    grades: HashMap<String, Vec<GradeInfo>>,
}

impl encode::Points for Known {
    fn point(&self, pid: i64) -> Option<&PointRow> {
        self.points.get(&pid)
    }
    fn grade(&self, point_id: &str, index: u16) -> Option<&GradeInfo> {
        self.grades.get(point_id)?.get(usize::from(index))
    }
}

struct Driver {
    opts: UplinkOptions,
    link: Link,
    reader: Option<Reader>,
    cursor: SinkCursor,
    /// Last acknowledged `stats_5min.seq`.
    stats_cursor: i64,
    /// While both statistics and readings wait, they take turns; true: statistics next.
    stats_turn: bool,
    known: Known,
    status: Arc<UplinkStatus>,
    cmd: mpsc::Receiver<Command>,
    stop: bool,
    attempt: u32,
    /// MQTT only: alarms in flight.
    lane: Lane,
}

fn wall_clock() -> Timestamp {
    Timestamp(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0),
    )
}

/// Alarm events read from the store for sending.
struct AlarmBatch {
    /// The events the alarm filter keeps, encoded.
    msgs: Vec<Message>,
    /// Their `seq`s.
    seqs: Vec<i64>,
    /// The last `seq` read (kept or not).
    last: i64,
    /// As many events were read as asked for: more may be waiting.
    full: bool,
}

/// The alarm lane of an MQTT link: alarms published in store order as soon as they
/// are committed, several in flight, until acknowledged. The alarm cursor moves
/// over the acknowledged prefix only.
#[derive(Debug, Default)]
struct Lane {
    /// `(seq, done)`: published alarms, and ranges the alarm filter passed over
    /// (done from the start). The cursor moves past the done ones at the front.
    queue: VecDeque<(i64, bool)>,
    /// The last event `seq` read (published or passed over).
    read_to: i64,
    /// Published and not yet acknowledged.
    outstanding: usize,
    /// The link's generation the lane's alarms were published under.
    generation: u64,
}

/// What a send round was about, for the bookkeeping after it.
enum Sent {
    Alarms(Vec<i64>),
    Readings(i64, u64),
    Stats(i64, u64),
    Heartbeat,
}

impl Driver {
    async fn db<R: Send + 'static>(
        &mut self,
        f: impl FnOnce(&Reader) -> Result<R, StoreError> + Send + 'static,
    ) -> Result<R, UplinkError> {
        let reader = self.reader.take().ok_or(UplinkError::Stopped)?;
        let (reader, r) = tokio::task::spawn_blocking(move || {
            let r = f(&reader);
            (reader, r)
        })
        .await
        .map_err(|_| UplinkError::Stopped)?;
        self.reader = Some(reader);
        Ok(r?)
    }

    /// A failed connection or send: counted, logged (the first and every tenth
    /// attempt), and retried after the backoff; returns when.
    fn failed(&mut self, e: &UplinkError, what: &str) -> Instant {
        self.status.send_failures.fetch_add(1, Ordering::Relaxed);
        self.status.connected.store(false, Ordering::Relaxed);
        let delay = self.backoff();
        if self.attempt == 0 || self.attempt % 10 == 0 {
            tracing::warn!(
                error = %e,
                attempt = self.attempt,
                retry_in_ms = delay.as_millis() as u64,
                "{what}; the rows stay in the store and will be sent again"
            );
        }
        self.attempt = self.attempt.saturating_add(1);
        Instant::now() + delay
    }

    fn backoff(&self) -> Duration {
        let max = self.opts.retry_max_ms.max(1);
        let base = self
            .opts
            .retry_initial_ms
            .max(1)
            .saturating_mul(1u64 << self.attempt.min(20));
        let jittered = base.min(max) as f64 * (0.5 + fastrand::f64());
        Duration::from_millis((jittered as u64).clamp(1, max))
    }

    /// Wait until `deadline`, a wake (when `wake_early`) or a shutdown, driving the
    /// link meanwhile. Returns false when stopping.
    async fn wait_until(&mut self, deadline: Instant, wake_early: bool) -> bool {
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
                _ = self.link.idle() => {
                    if let Some(up) = self.link.is_connected() {
                        self.status.connected.store(up, Ordering::Relaxed);
                    }
                    if self.link.is_down() {
                        // Lost while idle: the main loop reconnects after a backoff.
                        return true;
                    }
                    if let Link::Mqtt(link) = &self.link {
                        if link.has_alarm_acks() {
                            // Alarms acknowledged: move the cursor (and publish any
                            // alarms that waited for room).
                            self.lane_drain().await;
                            self.lane_publish().await;
                        }
                    }
                }
            }
        }
    }

    async fn commit(&mut self) {
        let (name, cursor) = (self.opts.name.clone(), self.cursor);
        if let Err(e) = self
            .db(move |r| r.commit_cursor(&name, cursor, wall_clock()))
            .await
        {
            // The rows will be sent again after a restart: at-least-once.
            tracing::warn!(error = %e, "committing the uplink cursor failed");
        }
        self.status
            .alarm_cursor
            .store(self.cursor.events_seq.max(0) as u64, Ordering::Relaxed);
        self.status
            .reading_cursor
            .store(self.cursor.readings_seq.max(0) as u64, Ordering::Relaxed);
    }

    /// Whether a wake (new alarm events) is waiting; takes it. A shutdown found on
    /// the way is remembered.
    fn woken(&mut self) -> bool {
        let mut woken = false;
        while let Ok(c) = self.cmd.try_recv() {
            match c {
                Command::Wake => woken = true,
                Command::Shutdown => self.stop = true,
            }
        }
        woken
    }

    async fn commit_stats(&mut self) {
        let (name, seq) = (self.opts.name.clone(), self.stats_cursor);
        if let Err(e) = self
            .db(move |r| r.commit_stats_cursor(&name, seq, wall_clock()))
            .await
        {
            tracing::warn!(error = %e, "committing the uplink statistics cursor failed");
        }
        self.status
            .stats_cursor
            .store(self.stats_cursor.max(0) as u64, Ordering::Relaxed);
    }

    /// The alarm events after the cursor (at most `alarm_batch_max`), encoded, with
    /// their `seq`s; `None` when there are none. Events the alarm filter drops are
    /// passed over: the cursor moves past them.
    async fn pending_alarms(&mut self) -> Result<Option<(Vec<Message>, Vec<i64>)>, UplinkError> {
        loop {
            let limit = self.opts.alarm_batch_max.max(1);
            match self.read_alarms(self.cursor.events_seq, limit).await? {
                None => return Ok(None),
                Some(batch) if !batch.msgs.is_empty() => {
                    return Ok(Some((batch.msgs, batch.seqs)));
                }
                Some(batch) => {
                    // Nothing for this receiver: move past it and read on.
                    self.cursor.events_seq = batch.last;
                    self.commit().await;
                }
            }
        }
    }

    /// Up to `limit` alarm events after `after`: those the alarm filter keeps,
    /// encoded; `None` when there are none.
    async fn read_alarms(
        &mut self,
        after: i64,
        limit: usize,
    ) -> Result<Option<AlarmBatch>, UplinkError> {
        let full;
        let (events, last) = {
            let events = self.db(move |r| r.read_events_after(after, limit)).await?;
            let Some(last) = events.last().map(|e| e.seq) else {
                return Ok(None);
            };
            full = events.len() >= limit;
            self.refresh_points(events.iter().filter_map(|e| e.pid))
                .await?;
            match &self.opts.alarm_filter {
                None => (events, last),
                Some(filter) => {
                    let known = &self.known.points;
                    let kept: Vec<_> = events
                        .into_iter()
                        .filter(|e| {
                            let point = e.pid.and_then(|p| known.get(&p)).map(|p| p.id.as_str());
                            filter.matches(point.unwrap_or(""), &e.kind, &e.transition)
                        })
                        .collect();
                    (kept, last)
                }
            }
        };
        let (site, format, offset) = (&self.opts.site, self.opts.format, self.opts.utc_offset_min);
        let mut msgs = Vec::with_capacity(events.len());
        for ev in &events {
            let alarm: Option<Alarm> = serde_json::from_str(&ev.alarm_json).ok();
            if alarm.is_none() {
                self.status.bad_alarm_json.fetch_add(1, Ordering::Relaxed);
            }
            msgs.push(encode::alarm(
                format,
                site,
                offset,
                ev,
                alarm.as_ref(),
                &self.known,
            ));
        }
        Ok(Some(AlarmBatch {
            msgs,
            seqs: events.iter().map(|e| e.seq).collect(),
            last,
            full,
        }))
    }

    /// The first `ok` of the alarm events `seqs` were acknowledged: move the cursor
    /// past them.
    async fn alarms_acked(&mut self, seqs: &[i64], ok: usize) {
        if ok > 0 {
            self.cursor.events_seq = seqs[ok - 1];
            // Counted once the cursor is committed: a sink stopped right after it
            // reads them as sent starts after them.
            self.commit().await;
            self.status
                .alarms_sent
                .fetch_add(ok as u64, Ordering::Relaxed);
        }
    }

    /// Send a bulk message (real-time values or statistics). Over MQTT it stays in
    /// flight while alarms committed meanwhile are published beside it, each as soon
    /// as it is woken for; Err as [`Link::send`]. Returns once the bulk message is
    /// acknowledged (or the connection failed: it is sent again); alarms still in
    /// flight stay in the alarm lane.
    async fn send_bulk(&mut self, msgs: &[Message]) -> Result<(), (usize, UplinkError)> {
        let Link::Mqtt(link) = &mut self.link else {
            return self.link.send(msgs).await;
        };
        if msgs.len() > mqtt::BULK_MAX {
            let r = link.send(msgs).await;
            self.lane_drain().await;
            return r;
        }
        link.start_bulk(msgs).await.map_err(|e| (0, e))?;
        loop {
            let Link::Mqtt(link) = &mut self.link else {
                return Ok(());
            };
            if let Some(done) = link.bulk_finished() {
                self.lane_drain().await;
                return done.map_err(|e| (0, e));
            }
            tokio::select! {
                ev = link.event() => {
                    let failed = ev.is_err();
                    self.lane_drain().await;
                    if !failed {
                        // Room again: alarms read while the window was full.
                        self.lane_publish().await;
                    }
                },
                c = self.cmd.recv(), if !self.stop => match c {
                    Some(Command::Wake) => self.lane_publish().await,
                    // Stop once the bulk message is acknowledged (or failed).
                    Some(Command::Shutdown) | None => self.stop = true,
                },
            }
        }
    }

    /// The alarm lane (MQTT): start it afresh from the cursor when the connection
    /// it published on is gone (its alarms will not be acknowledged: they are
    /// published again).
    fn lane_check(&mut self) {
        let Link::Mqtt(link) = &self.link else {
            return;
        };
        if self.lane.generation != link.generation() {
            self.lane = Lane {
                read_to: self.cursor.events_seq,
                generation: link.generation(),
                ..Lane::default()
            };
        }
    }

    /// Publish the alarms committed after those already in the lane, as many as
    /// the in-flight window has room for, without waiting for acknowledgements. A
    /// failure is left to the next round (the connection is down, or the store read
    /// is tried again).
    async fn lane_publish(&mut self) {
        self.lane_check();
        loop {
            let Link::Mqtt(link) = &self.link else {
                return;
            };
            let room = link.max_in_flight().saturating_sub(self.lane.outstanding);
            if room == 0 {
                return;
            }
            let limit = room.min(self.opts.alarm_batch_max.max(1));
            let AlarmBatch {
                msgs,
                seqs,
                last,
                full,
            } = match self.read_alarms(self.lane.read_to, limit).await {
                Ok(Some(v)) => v,
                Ok(None) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "reading alarm events failed; retrying");
                    return;
                }
            };
            self.lane_check();
            let Link::Mqtt(link) = &mut self.link else {
                return;
            };
            for (m, &seq) in msgs.iter().zip(&seqs) {
                if seq <= self.lane.read_to || !link.publish_alarm(m, seq) {
                    return;
                }
                self.lane.queue.push_back((seq, false));
                self.lane.outstanding += 1;
                self.lane.read_to = seq;
            }
            if last > self.lane.read_to {
                // Events the alarm filter passed over: done once those before are.
                self.lane.queue.push_back((last, true));
                self.lane.read_to = last;
                self.lane_drain().await;
            }
            if !full {
                // Fewer than asked for: nothing more is pending.
                return;
            }
        }
    }

    /// Take the acknowledgements the link collected: mark those alarms done and
    /// move the alarm cursor past every done one at the front of the lane, in order.
    async fn lane_drain(&mut self) {
        let Link::Mqtt(link) = &mut self.link else {
            return;
        };
        let acks = link.take_alarm_acks();
        self.lane_check();
        let mut acked = 0u64;
        for seq in acks {
            if let Some(entry) = self
                .lane
                .queue
                .iter_mut()
                .find(|(s, done)| *s == seq && !*done)
            {
                entry.1 = true;
                self.lane.outstanding = self.lane.outstanding.saturating_sub(1);
                acked += 1;
            }
        }
        let mut moved = false;
        while let Some(&(front, true)) = self.lane.queue.front() {
            self.lane.queue.pop_front();
            self.cursor.events_seq = front;
            moved = true;
        }
        if moved {
            self.commit().await;
        }
        // Counted after the commit, as in `alarms_acked`.
        self.status.alarms_sent.fetch_add(acked, Ordering::Relaxed);
        self.status
            .messages_sent
            .fetch_add(acked, Ordering::Relaxed);
    }

    async fn refresh_points(&mut self, pids: impl Iterator<Item = i64>) -> Result<(), UplinkError> {
        let mut missing = false;
        for p in pids {
            missing |= !self.known.points.contains_key(&p);
        }
        if missing {
            let points = self.db(|r| r.points()).await?;
            self.known.points = points.into_iter().map(|p| (p.pid, p)).collect();
        }
        Ok(())
    }

    async fn run(mut self) -> Result<(), UplinkError> {
        let alarm_poll = Duration::from_millis(self.opts.alarm_poll_interval_ms.max(1));
        let rt_every = Duration::from_millis(self.opts.realtime_interval_ms.max(1));
        let hb_every = Duration::from_millis(self.opts.heartbeat_interval_ms);
        let stats_every = Duration::from_millis(self.opts.stats_poll_interval_ms.max(1));
        let mut next_stats = Instant::now();
        let mut next_rt = Instant::now();
        let mut next_hb = Instant::now();
        let mut next_try = Instant::now();
        let (site, format, offset) = (
            self.opts.site.clone(),
            self.opts.format,
            self.opts.utc_offset_min,
        );
        while !self.stop {
            if self.link.is_down() && next_try <= Instant::now() {
                // Lost while idle (a failed send sets `next_try` itself).
                next_try = Instant::now() + self.backoff();
                self.attempt = self.attempt.saturating_add(1);
            }
            if Instant::now() < next_try && !self.wait_until(next_try, false).await {
                break;
            }
            self.link.resume();
            // 1. Every pending alarm event, before anything else. Over MQTT they go
            //    into the alarm lane: published now, acknowledged whenever.
            if let Link::Mqtt(link) = &mut self.link {
                let ready = link.connected().await;
                self.lane_drain().await;
                if let Err(e) = ready {
                    next_try = self.failed(&e, "uplink connection failed");
                    continue;
                }
                self.lane_publish().await;
            }
            // Over HTTP: sent and acknowledged as one batch, below.
            let http_alarms = match self.link {
                Link::Mqtt(_) => Ok(None),
                Link::Http(_) => self.pending_alarms().await,
            };
            let alarms = match http_alarms {
                Ok(v) => v,
                Err(UplinkError::Stopped) => return Err(UplinkError::Stopped),
                Err(e) => {
                    tracing::warn!(error = %e, "reading alarm events failed; retrying");
                    next_try = Instant::now() + alarm_poll;
                    continue;
                }
            };
            let now = Instant::now();
            let (msgs, sent) = if let Some((msgs, seqs)) = alarms {
                (msgs, Sent::Alarms(seqs))
            } else if !hb_every.is_zero() && now >= next_hb {
                // 2. The heartbeat, when due.
                next_hb = now + hb_every;
                let hb = encode::Heartbeat {
                    ts: wall_clock().0,
                    alarm_seq: self.cursor.events_seq,
                    reading_seq: self.cursor.readings_seq,
                    backlog: self.status.backlog_readings.load(Ordering::Relaxed),
                };
                (
                    vec![encode::heartbeat(format, &site, offset, hb)],
                    Sent::Heartbeat,
                )
            } else if self.opts.statistics
                && now >= next_stats
                && (self.stats_turn || !(self.opts.realtime && now >= next_rt))
            {
                // 3. One batch of statistics (taking turns with readings).
                self.stats_turn = false;
                let after = self.stats_cursor;
                let limit = self.opts.stats_batch_max.max(1);
                let rows = match self.db(move |r| r.read_stats_after(after, limit)).await {
                    Ok(v) => v,
                    Err(UplinkError::Stopped) => return Err(UplinkError::Stopped),
                    Err(e) => {
                        tracing::warn!(error = %e, "reading statistics failed; retrying");
                        next_try = Instant::now() + alarm_poll;
                        continue;
                    }
                };
                if rows.len() < limit {
                    next_stats = now + stats_every;
                }
                let Some(last_row) = rows.last() else {
                    continue;
                };
                let last_seq = last_row.seq;
                self.refresh_points(rows.iter().map(|r| r.pid)).await?;
                let m = encode::stats(format, &site, offset, &rows, &self.known);
                (vec![m], Sent::Stats(last_seq, rows.len() as u64))
            } else if self.opts.realtime && now >= next_rt {
                // 4. One batch of readings.
                self.stats_turn = true;
                let after = self.cursor.readings_seq;
                let limit = self.opts.realtime_batch_max.max(1);
                let read = self
                    .db(move |r| Ok((r.read_readings_after(after, limit)?, r.last_reading_seq()?)))
                    .await;
                let (rows, last) = match read {
                    Ok(v) => v,
                    Err(UplinkError::Stopped) => return Err(UplinkError::Stopped),
                    Err(e) => {
                        tracing::warn!(error = %e, "reading readings failed; retrying");
                        next_try = Instant::now() + alarm_poll;
                        continue;
                    }
                };
                self.status
                    .backlog_readings
                    .store((last - after).max(0) as u64, Ordering::Relaxed);
                if rows.len() < limit {
                    // Caught up after this batch: the next one is due an interval later.
                    next_rt = now + rt_every;
                }
                let Some(last_row) = rows.last() else {
                    continue;
                };
                let last_seq = last_row.seq;
                self.refresh_points(rows.iter().map(|r| r.pid)).await?;
                let m = encode::realtime(format, &site, offset, &rows, &self.known);
                (vec![m], Sent::Readings(last_seq, rows.len() as u64))
            } else {
                // 5. Nothing due: wait for a wake, the next poll or the next deadline.
                let mut deadline = now + alarm_poll;
                if self.opts.realtime {
                    deadline = deadline.min(next_rt);
                }
                if self.opts.statistics {
                    deadline = deadline.min(next_stats);
                }
                if !hb_every.is_zero() {
                    deadline = deadline.min(next_hb);
                }
                self.wait_until(deadline, true).await;
                continue;
            };
            if matches!(sent, Sent::Readings(..) | Sent::Stats(..)) && self.woken() {
                // An alarm was committed while this bulk batch was read and encoded:
                // it goes first; the batch is read again next round.
                match sent {
                    Sent::Readings(..) => next_rt = now,
                    _ => next_stats = now,
                }
                continue;
            }
            let result = if matches!(sent, Sent::Readings(..) | Sent::Stats(..)) {
                self.send_bulk(&msgs).await
            } else {
                self.link.send(&msgs).await
            };
            let (ok, err) = match result {
                Ok(()) => (msgs.len(), None),
                Err((ok, e)) => (ok, Some(e)),
            };
            match sent {
                Sent::Alarms(seqs) => self.alarms_acked(&seqs, ok).await,
                Sent::Readings(last, n) => {
                    if err.is_none() {
                        self.cursor.readings_seq = last;
                        self.commit().await;
                        self.status.readings_sent.fetch_add(n, Ordering::Relaxed);
                    }
                }
                Sent::Stats(last, n) => {
                    if err.is_none() {
                        self.stats_cursor = last;
                        self.commit_stats().await;
                        self.status.stats_sent.fetch_add(n, Ordering::Relaxed);
                    }
                }
                Sent::Heartbeat => {
                    let c = if err.is_none() {
                        &self.status.heartbeats_sent
                    } else {
                        &self.status.heartbeats_missed
                    };
                    c.fetch_add(1, Ordering::Relaxed);
                }
            }
            self.status
                .messages_sent
                .fetch_add(ok as u64, Ordering::Relaxed);
            match err {
                None => {
                    self.attempt = 0;
                    self.status.connected.store(true, Ordering::Relaxed);
                }
                Some(e) => next_try = self.failed(&e, "uplink send failed"),
            }
        }
        if let Link::Mqtt(l) = &mut self.link {
            l.close(Duration::from_secs(2)).await;
            // Alarms acknowledged while closing: not sent again after a restart.
            self.lane_drain().await;
        }
        tracing::info!(
            alarm_cursor = self.cursor.events_seq,
            reading_cursor = self.cursor.readings_seq,
            stats_cursor = self.stats_cursor,
            "uplink stopped"
        );
        Ok(())
    }
}
