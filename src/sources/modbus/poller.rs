//! The Modbus poller: one task per link (a TCP connection, an RTU-over-TCP serial
//! server, or a serial port), polling the devices (unit ids) behind it in turn.
//!
//! Invariants:
//! - One request in flight per link, ever: devices on one RS-485 bus or behind one
//!   serial server are polled one after another, with the RTU inter-frame gap kept
//!   between requests. Different links are different tasks and never wait on each
//!   other, so a dead or slow device delays only its own link.
//! - Every request is bounded by the link's `timeout_ms` (tokio-modbus has no timeout
//!   of its own) and retried at most `retries` times; a timed-out or failed transport
//!   is dropped and reconnected (exponential backoff with jitter) because a late
//!   answer would otherwise be taken for the next request's.
//! - "The link failed" and "the device answered with an exception" stay apart: a
//!   failed request gives its points readings with quality `comm_fail`; an exception
//!   gives `device_exception(code)`. A value that cannot be decoded is `bad_data`.
//!   Exceptions 0A and 0B (gateway path unavailable, gateway target failed to
//!   respond) keep their code in the quality but count as a failed poll of the
//!   device behind the gateway.
//!   A value is never repeated or invented.
//! - A merged block that answers exception 02 or 03 is split in halves and re-read at
//!   once, down to single points, so one bad address never blanks its neighbours; the
//!   split plan is kept.
//! - A device failing `offline_after_failures` polls in a row is offline: its status
//!   point (if configured) reads 0 — one parent alarm for the device, not one per
//!   point — and it is retried every `offline_retry_ms` instead of every poll. When
//!   every device of a link is offline, the link's status point reads 0 too.
//! - Polls run on a fixed grid (`start + k × interval`), so there is no drift; a slot
//!   missed because the link was busy is skipped and counted as an overrun. Jitter
//!   (start of the poll after its slot) and round-trip time are measured.
//! - A device polls at its fast interval while any of its points is within its fast
//!   zone (in alarm, or within a margin of its first threshold).
//! - Readings carry the time the response arrived.
//!
//! Output: batches of readings on a bounded channel. When the channel is full the
//! poller waits (backpressure); it never drops a reading.

use super::decode::{decode_bit, decode_registers, Table};
use super::plan::Block;
use crate::model::{Batch, PointId, Quality, Reading, Timestamp};
use crate::sources::wall_now;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{sleep_until, timeout, Instant};
use tokio_modbus::client::{Client, Context, Reader, Writer};
use tokio_modbus::slave::SlaveContext;
use tokio_modbus::Slave;

/// How to reach a link.
#[derive(Debug, Clone, PartialEq)]
pub enum Transport {
    /// Modbus TCP to `host:port`.
    Tcp(String),
    /// Modbus RTU frames over a TCP connection to a serial device server.
    RtuOverTcp(String),
    /// Modbus RTU over a local serial port.
    Rtu(SerialSpec),
}

/// Serial line settings.
#[derive(Debug, Clone, PartialEq)]
pub struct SerialSpec {
    pub path: String,
    pub baud_rate: u32,
    pub data_bits: u8,
    /// `'N'`, `'E'` or `'O'`.
    pub parity: char,
    pub stop_bits: u8,
}

impl SerialSpec {
    /// The RTU inter-frame gap: 3.5 character times, at least 1.75 ms above 19200 baud
    /// (Modbus over serial line v1.02, §2.5.1.1).
    pub fn inter_frame_gap(&self) -> Duration {
        if self.baud_rate > 19_200 {
            return Duration::from_micros(1_750);
        }
        let bits_per_char = 1
            + u64::from(self.data_bits)
            + u64::from(self.parity != 'N')
            + u64::from(self.stop_bits);
        Duration::from_micros(35 * bits_per_char * 100_000 / u64::from(self.baud_rate.max(1)))
    }
}

/// One link and the devices behind it, ready to poll.
#[derive(Debug, Clone)]
pub struct LinkSpec {
    pub id: String,
    pub transport: Transport,
    /// Reads 1 while any device of the link answers, 0 when all are offline.
    pub status_point: Option<PointId>,
    pub devices: Vec<DeviceSpec>,
}

/// One device (unit id) on a link.
#[derive(Debug, Clone)]
pub struct DeviceSpec {
    pub id: String,
    pub unit_id: u8,
    /// Bound on one request (and on connecting, for the link's first device).
    pub timeout_ms: u64,
    /// Extra attempts after a failed request within one poll.
    pub retries: u32,
    /// Consecutive failed polls after which the device is offline.
    pub offline_after_failures: u32,
    pub interval_ms: u64,
    /// Interval while a point is in its fast zone (≤ `interval_ms`).
    pub fast_interval_ms: u64,
    /// Interval between attempts while the device is offline.
    pub offline_retry_ms: u64,
    pub blocks: Vec<Block>,
    pub fast_zones: Vec<FastZone>,
    /// Reads 1 while the device answers, 0 once it is offline.
    pub status_point: Option<PointId>,
}

/// "Poll fast while this point is at or above `above` (or at or below `below`)."
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FastZone {
    pub point: PointId,
    pub above: Option<f64>,
    pub below: Option<f64>,
}

impl FastZone {
    fn contains(&self, v: f64) -> bool {
        self.above.is_some_and(|a| v >= a) || self.below.is_some_and(|b| v <= b)
    }
}

/// Live figures of one device, shared with metrics and the API.
#[derive(Debug, Default)]
pub struct DeviceStats {
    pub polls: AtomicU64,
    pub failed_polls: AtomicU64,
    pub requests: AtomicU64,
    pub timeouts: AtomicU64,
    pub exceptions: AtomicU64,
    pub decode_errors: AtomicU64,
    pub splits: AtomicU64,
    pub overruns: AtomicU64,
    pub last_rtt_us: AtomicU64,
    pub max_rtt_us: AtomicU64,
    pub last_jitter_us: AtomicU64,
    pub max_jitter_us: AtomicU64,
    pub fast: AtomicBool,
    pub online: AtomicBool,
    /// Blocks currently planned (grows as bad addresses are isolated).
    pub blocks: AtomicU64,
    pub last_error: Mutex<Option<String>>,
}

impl DeviceStats {
    fn error(&self, e: String) {
        if let Ok(mut g) = self.last_error.lock() {
            *g = Some(e);
        }
    }
}

/// A write to a device, for safety actions (power-cut relays) and operators.
#[derive(Debug, Clone, PartialEq)]
pub enum Write {
    /// Function code 5.
    Coil { address: u16, value: bool },
    /// Function code 6.
    Register { address: u16, value: u16 },
    /// Function code 15.
    Coils { address: u16, values: Vec<bool> },
    /// Function code 16.
    Registers { address: u16, values: Vec<u16> },
}

/// Why a write did not happen. The write is handed back so it can be kept.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("no Modbus device `{0}`")]
    UnknownDevice(String),
    #[error("the link is shut down")]
    LinkClosed(Write),
    #[error("the device did not answer within the timeout")]
    Timeout(Write),
    #[error("transport failed: {1}")]
    Transport(Write, String),
    #[error("the device answered with exception {1:#04x}")]
    Exception(Write, u8),
    #[error("the link's write queue is full")]
    Busy(Write),
}

struct WriteRequest {
    /// Index of the device on its link.
    device: usize,
    write: Write,
    reply: oneshot::Sender<Result<(), WriteError>>,
}

/// Sends writes to the link task that owns a device. Cloneable.
#[derive(Clone)]
pub struct WriteHandle {
    links: Arc<Vec<(String, usize, mpsc::Sender<WriteRequest>)>>,
}

impl WriteHandle {
    /// Write to the device with this id. Writes go ahead of polls on their link.
    pub async fn write(&self, device: &str, write: Write) -> Result<(), WriteError> {
        let Some((_, index, tx)) = self.links.iter().find(|(d, _, _)| d == device) else {
            return Err(WriteError::UnknownDevice(device.to_owned()));
        };
        let (reply, rx) = oneshot::channel();
        if let Err(mpsc::error::SendError(req)) = tx
            .send(WriteRequest {
                device: *index,
                write,
                reply,
            })
            .await
        {
            return Err(WriteError::LinkClosed(req.write));
        }
        match rx.await {
            Ok(result) => result,
            // The link task ended while the write waited; it did not happen.
            Err(_) => Err(WriteError::LinkClosed(Write::Coils {
                address: 0,
                values: vec![],
            })),
        }
    }
}

impl WriteHandle {
    /// Queue a write without waiting: writes submitted one after another reach their
    /// link in that order. The answer comes on the returned channel; a link that ends
    /// first drops it (the write did not happen).
    pub fn submit(
        &self,
        device: &str,
        write: Write,
    ) -> Result<oneshot::Receiver<Result<(), WriteError>>, WriteError> {
        let Some((_, index, tx)) = self.links.iter().find(|(d, _, _)| d == device) else {
            return Err(WriteError::UnknownDevice(device.to_owned()));
        };
        let (reply, rx) = oneshot::channel();
        match tx.try_send(WriteRequest {
            device: *index,
            write,
            reply,
        }) {
            Ok(()) => Ok(rx),
            Err(mpsc::error::TrySendError::Full(req)) => Err(WriteError::Busy(req.write)),
            Err(mpsc::error::TrySendError::Closed(req)) => Err(WriteError::LinkClosed(req.write)),
        }
    }
}

/// A running set of links.
pub struct ModbusSource {
    pub stats: Vec<(String, Arc<DeviceStats>)>,
    pub writer: WriteHandle,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl ModbusSource {
    /// Start one task per link. Readings go to `tx` in batches; `shutdown` set to
    /// `true` stops every link at a safe point (between requests).
    pub fn start(
        links: Vec<LinkSpec>,
        tx: mpsc::Sender<Batch>,
        shutdown: watch::Receiver<bool>,
    ) -> ModbusSource {
        let mut stats = Vec::new();
        let mut writers = Vec::new();
        let mut tasks = Vec::new();
        for link in links {
            let (wtx, wrx) = mpsc::channel(16);
            let dev_stats: Vec<Arc<DeviceStats>> = link
                .devices
                .iter()
                .enumerate()
                .map(|(k, d)| {
                    let s = Arc::new(DeviceStats::default());
                    s.blocks.store(d.blocks.len() as u64, Ordering::Relaxed);
                    stats.push((d.id.clone(), s.clone()));
                    writers.push((d.id.clone(), k, wtx.clone()));
                    s
                })
                .collect();
            let span = tracing::info_span!("modbus_link", link = %link.id);
            let fut = LinkTask::new(link, dev_stats, tx.clone(), wrx, shutdown.clone()).run();
            tasks.push(tokio::spawn(tracing::Instrument::instrument(fut, span)));
        }
        ModbusSource {
            stats,
            writer: WriteHandle {
                links: Arc::new(writers),
            },
            tasks,
        }
    }

    /// Wait for every link task to finish (after shutdown).
    pub async fn join(self) {
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

enum Outcome {
    Regs(Vec<u16>),
    Bits(Vec<bool>),
    Exception(u8),
    Timeout,
    Transport(String),
}

struct DevState {
    next_due: Instant,
    /// The grid origin and interval the next slots are computed from.
    grid_origin: Instant,
    failures: u32,
    online: Option<bool>,
    fast: bool,
}

struct LinkTask {
    spec: LinkSpec,
    stats: Vec<Arc<DeviceStats>>,
    tx: mpsc::Sender<Batch>,
    writes: mpsc::Receiver<WriteRequest>,
    shutdown: watch::Receiver<bool>,
    conn: Option<Context>,
    /// Do not try to connect before this instant (backoff).
    reconnect_at: Instant,
    backoff: Duration,
    rng: u64,
    gap: Duration,
    last_request_end: Instant,
    link_online: Option<bool>,
    state: Vec<DevState>,
}

const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(10);

impl LinkTask {
    fn new(
        spec: LinkSpec,
        stats: Vec<Arc<DeviceStats>>,
        tx: mpsc::Sender<Batch>,
        writes: mpsc::Receiver<WriteRequest>,
        shutdown: watch::Receiver<bool>,
    ) -> LinkTask {
        let now = Instant::now();
        let gap = match &spec.transport {
            Transport::Rtu(s) => s.inter_frame_gap(),
            Transport::RtuOverTcp(_) => Duration::from_micros(1_750),
            Transport::Tcp(_) => Duration::ZERO,
        };
        let state = spec
            .devices
            .iter()
            .map(|_| DevState {
                next_due: now,
                grid_origin: now,
                failures: 0,
                online: None,
                fast: false,
            })
            .collect();
        let seed = spec.id.bytes().fold(0x9E37_79B9_7F4A_7C15u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01B3)
        });
        LinkTask {
            spec,
            stats,
            tx,
            writes,
            shutdown,
            conn: None,
            reconnect_at: now,
            backoff: BACKOFF_MIN,
            rng: seed | 1,
            gap,
            last_request_end: now,
            link_online: None,
            state,
        }
    }

    fn jitter(&mut self, d: Duration) -> Duration {
        // xorshift64: ±20 % so many gateways do not reconnect in lockstep.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let f = 0.8 + (self.rng % 1000) as f64 / 2500.0;
        d.mul_f64(f)
    }

    async fn run(mut self) {
        if self.spec.devices.is_empty() {
            return;
        }
        loop {
            if *self.shutdown.borrow() {
                break;
            }
            let (k, due) = self
                .state
                .iter()
                .enumerate()
                .map(|(k, s)| (k, s.next_due))
                .min_by_key(|(_, d)| *d)
                .unwrap_or((0, Instant::now()));
            tokio::select! {
                biased;
                _ = self.shutdown.changed() => {}
                Some(w) = self.writes.recv() => self.handle_write(w).await,
                _ = sleep_until(due) => {
                    if self.poll_device(k, due).await.is_err() {
                        break;
                    }
                }
            }
        }
        if let Some(mut c) = self.conn.take() {
            let _ = c.disconnect().await;
        }
    }

    async fn ensure_conn(&mut self, timeout_ms: u64) -> Result<(), String> {
        if self.conn.is_some() {
            return Ok(());
        }
        let now = Instant::now();
        if now < self.reconnect_at {
            return Err("reconnect backoff".into());
        }
        let t = Duration::from_millis(timeout_ms.max(1));
        let result = match timeout(t, connect(&self.spec.transport)).await {
            Ok(Ok(ctx)) => Ok(ctx),
            Ok(Err(e)) => Err(format!("connect: {e}")),
            Err(_) => Err("connect: timed out".into()),
        };
        match result {
            Ok(ctx) => {
                self.conn = Some(ctx);
                self.backoff = BACKOFF_MIN;
                tracing::info!(transport = ?self.spec.transport, "connected");
                Ok(())
            }
            Err(e) => {
                let wait = self.jitter(self.backoff);
                self.reconnect_at = Instant::now() + wait;
                self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
                Err(e)
            }
        }
    }

    /// One request, bounded by the timeout, with the inter-frame gap kept.
    async fn request(&mut self, k: usize, table: Table, start: u16, count: u16) -> Outcome {
        let (unit_id, timeout_ms) = (
            self.spec.devices[k].unit_id,
            self.spec.devices[k].timeout_ms,
        );
        if let Err(e) = self.ensure_conn(timeout_ms).await {
            return Outcome::Transport(e);
        }
        let gap_end = self.last_request_end + self.gap;
        if Instant::now() < gap_end {
            sleep_until(gap_end).await;
        }
        let Some(ctx) = self.conn.as_mut() else {
            return Outcome::Transport("not connected".into());
        };
        ctx.set_slave(Slave(unit_id));
        let t = Duration::from_millis(timeout_ms.max(1));
        let outcome = match table {
            Table::Coil => map_bits(timeout(t, ctx.read_coils(start, count)).await),
            Table::DiscreteInput => {
                map_bits(timeout(t, ctx.read_discrete_inputs(start, count)).await)
            }
            Table::Holding => map_regs(timeout(t, ctx.read_holding_registers(start, count)).await),
            Table::Input => map_regs(timeout(t, ctx.read_input_registers(start, count)).await),
        };
        self.last_request_end = Instant::now();
        if matches!(outcome, Outcome::Timeout | Outcome::Transport(_)) {
            // A late answer would be matched to the next request: start afresh.
            self.conn = None;
        }
        outcome
    }

    /// Poll device `k` for its slot `due`. Err only when the output channel closed.
    async fn poll_device(&mut self, k: usize, due: Instant) -> Result<(), ()> {
        let started = Instant::now();
        let stats = self.stats[k].clone();
        let jitter_us = started.saturating_duration_since(due).as_micros() as u64;
        stats.last_jitter_us.store(jitter_us, Ordering::Relaxed);
        stats.max_jitter_us.fetch_max(jitter_us, Ordering::Relaxed);
        stats.polls.fetch_add(1, Ordering::Relaxed);
        let retries = self.spec.devices[k].retries;
        let mut readings = Vec::new();
        let mut answered = false;
        let mut link_failed = false;
        let mut b = 0;
        while b < self.spec.devices[k].blocks.len() {
            let block = self.spec.devices[k].blocks[b].clone();
            if link_failed {
                push_quality(&mut readings, &block, wall_now(), Quality::CommFail);
                b += 1;
                continue;
            }
            let mut attempt = 0;
            let outcome = loop {
                let t0 = Instant::now();
                stats.requests.fetch_add(1, Ordering::Relaxed);
                let o = self.request(k, block.table, block.start, block.count).await;
                let rtt = t0.elapsed().as_micros() as u64;
                match &o {
                    Outcome::Timeout => {
                        stats.timeouts.fetch_add(1, Ordering::Relaxed);
                    }
                    Outcome::Transport(_) => {}
                    _ => {
                        stats.last_rtt_us.store(rtt, Ordering::Relaxed);
                        stats.max_rtt_us.fetch_max(rtt, Ordering::Relaxed);
                    }
                }
                let retry =
                    matches!(o, Outcome::Timeout | Outcome::Transport(_)) && attempt < retries;
                if !retry {
                    break o;
                }
                attempt += 1;
            };
            let ts = wall_now();
            match outcome {
                Outcome::Regs(regs) => {
                    answered = true;
                    for it in &block.items {
                        let off = usize::from(it.address - block.start);
                        let (value, quality) =
                            match regs.get(off..).map(|r| decode_registers(r, &it.layout)) {
                                Some(Ok(v)) => (v, Quality::Good),
                                _ => {
                                    stats.decode_errors.fetch_add(1, Ordering::Relaxed);
                                    (f64::NAN, Quality::BadData)
                                }
                            };
                        readings.push(Reading {
                            point: it.point,
                            ts,
                            value,
                            quality,
                        });
                    }
                }
                Outcome::Bits(bits) => {
                    answered = true;
                    for it in &block.items {
                        let off = usize::from(it.address - block.start);
                        let (value, quality) = match bits.get(off) {
                            Some(bit) => (decode_bit(*bit, &it.layout), Quality::Good),
                            None => {
                                stats.decode_errors.fetch_add(1, Ordering::Relaxed);
                                (f64::NAN, Quality::BadData)
                            }
                        };
                        readings.push(Reading {
                            point: it.point,
                            ts,
                            value,
                            quality,
                        });
                    }
                }
                Outcome::Exception(code) => {
                    // 0A/0B come from a gateway in front of the device: the device
                    // itself did not answer, so it counts towards offline.
                    if !matches!(code, 0x0A | 0x0B) {
                        answered = true;
                    }
                    stats.exceptions.fetch_add(1, Ordering::Relaxed);
                    if matches!(code, 0x02 | 0x03) {
                        if let Some((left, right)) = block.split() {
                            tracing::info!(
                                device = %self.spec.devices[k].id,
                                table = ?block.table,
                                start = block.start,
                                count = block.count,
                                code,
                                "block answered an address exception; split to isolate the bad address"
                            );
                            stats.splits.fetch_add(1, Ordering::Relaxed);
                            let blocks = &mut self.spec.devices[k].blocks;
                            blocks.splice(b..=b, [left, right]);
                            stats.blocks.store(blocks.len() as u64, Ordering::Relaxed);
                            // Re-read the halves now, in this poll.
                            continue;
                        }
                    }
                    stats.error(format!(
                        "exception {code:#04x} reading {:?} {}+{}",
                        block.table, block.start, block.count
                    ));
                    push_quality(&mut readings, &block, ts, Quality::DeviceException(code));
                }
                Outcome::Timeout => {
                    stats.error(format!(
                        "timeout reading {:?} {}+{}",
                        block.table, block.start, block.count
                    ));
                    link_failed = true;
                    push_quality(&mut readings, &block, ts, Quality::CommFail);
                }
                Outcome::Transport(e) => {
                    stats.error(e);
                    link_failed = true;
                    push_quality(&mut readings, &block, ts, Quality::CommFail);
                }
            }
            b += 1;
        }

        // Offline bookkeeping and the device's status point.
        let st = &mut self.state[k];
        if answered {
            st.failures = 0;
        } else {
            st.failures += 1;
            stats.failed_polls.fetch_add(1, Ordering::Relaxed);
        }
        let offline_after = self.spec.devices[k].offline_after_failures.max(1);
        let online = if answered {
            true
        } else if st.failures >= offline_after {
            false
        } else {
            st.online.unwrap_or(true)
        };
        let ts = wall_now();
        if st.online != Some(online) {
            if st.online.is_some() || !online {
                if online {
                    tracing::info!(device = %self.spec.devices[k].id, "device back online");
                } else {
                    tracing::warn!(device = %self.spec.devices[k].id, failures = st.failures, "device offline");
                }
            }
            st.online = Some(online);
            stats.online.store(online, Ordering::Relaxed);
        }
        if let Some(p) = self.spec.devices[k].status_point {
            readings.push(Reading {
                point: p,
                ts,
                value: if online { 1.0 } else { 0.0 },
                quality: Quality::Good,
            });
        }
        // The link's status: online while any device of it is online.
        let link_online = self.state.iter().any(|s| s.online != Some(false));
        if self.link_online != Some(link_online) {
            self.link_online = Some(link_online);
            if !link_online {
                tracing::warn!("every device on the link is offline");
            }
        }
        if let Some(p) = self.spec.status_point {
            readings.push(Reading {
                point: p,
                ts,
                value: if link_online { 1.0 } else { 0.0 },
                quality: Quality::Good,
            });
        }

        // Graded polling: fast while any point is in its fast zone.
        let dev = &self.spec.devices[k];
        let fast = readings.iter().any(|r| {
            r.quality == Quality::Good
                && dev
                    .fast_zones
                    .iter()
                    .any(|z| z.point == r.point && z.contains(r.value))
        });
        let st = &mut self.state[k];
        // Keep the fast mode through bad polls: no news is not good news.
        if answered {
            st.fast = fast;
        }
        stats.fast.store(st.fast, Ordering::Relaxed);
        let interval = if st.online == Some(false) {
            dev.offline_retry_ms
        } else if st.fast {
            dev.fast_interval_ms
        } else {
            dev.interval_ms
        };
        let interval = Duration::from_millis(interval.max(1));
        // Next slot on the grid after now; slots passed while busy are overruns.
        let now = Instant::now();
        let mut next = if st.grid_origin <= due {
            due + interval
        } else {
            st.grid_origin + interval
        };
        let mut missed = 0u64;
        while next <= now {
            next += interval;
            missed += 1;
        }
        if missed > 0 {
            stats.overruns.fetch_add(missed, Ordering::Relaxed);
        }
        st.grid_origin = due;
        st.next_due = next;

        if readings.is_empty() {
            return Ok(());
        }
        self.tx.send(Batch::from(readings)).await.map_err(|_| ())
    }

    async fn handle_write(&mut self, req: WriteRequest) {
        let result = self.write(req.device, req.write).await;
        let _ = req.reply.send(result);
    }

    async fn write(&mut self, k: usize, write: Write) -> Result<(), WriteError> {
        let Some(dev) = self.spec.devices.get(k) else {
            return Err(WriteError::UnknownDevice(format!("#{k}")));
        };
        let (unit_id, timeout_ms, retries) = (dev.unit_id, dev.timeout_ms, dev.retries);
        let mut attempt = 0;
        loop {
            if let Err(e) = self.ensure_conn(timeout_ms).await {
                if attempt >= retries {
                    return Err(WriteError::Transport(write, e));
                }
                attempt += 1;
                // Writes do not wait for the poll backoff: the cut budget is 2 s.
                self.reconnect_at = Instant::now();
                continue;
            }
            let gap_end = self.last_request_end + self.gap;
            if Instant::now() < gap_end {
                sleep_until(gap_end).await;
            }
            let Some(ctx) = self.conn.as_mut() else {
                return Err(WriteError::Transport(write, "not connected".into()));
            };
            ctx.set_slave(Slave(unit_id));
            let t = Duration::from_millis(timeout_ms.max(1));
            let r = match &write {
                Write::Coil { address, value } => {
                    timeout(t, ctx.write_single_coil(*address, *value)).await
                }
                Write::Register { address, value } => {
                    timeout(t, ctx.write_single_register(*address, *value)).await
                }
                Write::Coils { address, values } => {
                    timeout(t, ctx.write_multiple_coils(*address, values)).await
                }
                Write::Registers { address, values } => {
                    timeout(t, ctx.write_multiple_registers(*address, values)).await
                }
            };
            self.last_request_end = Instant::now();
            let failure = match r {
                Ok(Ok(Ok(()))) => return Ok(()),
                Ok(Ok(Err(code))) => return Err(WriteError::Exception(write, u8::from(code))),
                Ok(Err(e)) => WriteError::Transport(write.clone(), e.to_string()),
                Err(_) => WriteError::Timeout(write.clone()),
            };
            self.conn = None;
            if attempt >= retries {
                return Err(failure);
            }
            attempt += 1;
            self.reconnect_at = Instant::now();
        }
    }
}

fn push_quality(readings: &mut Vec<Reading>, block: &Block, ts: Timestamp, quality: Quality) {
    readings.extend(block.items.iter().map(|it| Reading {
        point: it.point,
        ts,
        value: f64::NAN,
        quality,
    }));
}

type Timed<T> = Result<tokio_modbus::Result<T>, tokio::time::error::Elapsed>;

fn map_regs(r: Timed<Vec<u16>>) -> Outcome {
    match r {
        Ok(Ok(Ok(v))) => Outcome::Regs(v),
        Ok(Ok(Err(code))) => Outcome::Exception(u8::from(code)),
        Ok(Err(e)) => Outcome::Transport(e.to_string()),
        Err(_) => Outcome::Timeout,
    }
}

fn map_bits(r: Timed<Vec<bool>>) -> Outcome {
    match r {
        Ok(Ok(Ok(v))) => Outcome::Bits(v),
        Ok(Ok(Err(code))) => Outcome::Exception(u8::from(code)),
        Ok(Err(e)) => Outcome::Transport(e.to_string()),
        Err(_) => Outcome::Timeout,
    }
}

async fn connect(transport: &Transport) -> io::Result<Context> {
    match transport {
        Transport::Tcp(addr) => {
            let stream = tokio::net::TcpStream::connect(addr.as_str()).await?;
            stream.set_nodelay(true)?;
            Ok(tokio_modbus::client::tcp::attach(stream))
        }
        Transport::RtuOverTcp(addr) => {
            let stream = tokio::net::TcpStream::connect(addr.as_str()).await?;
            stream.set_nodelay(true)?;
            Ok(tokio_modbus::client::rtu::attach(stream))
        }
        Transport::Rtu(s) => {
            use tokio_serial::SerialPortBuilderExt;
            let parity = match s.parity {
                'E' => tokio_serial::Parity::Even,
                'O' => tokio_serial::Parity::Odd,
                _ => tokio_serial::Parity::None,
            };
            let data_bits = match s.data_bits {
                5 => tokio_serial::DataBits::Five,
                6 => tokio_serial::DataBits::Six,
                7 => tokio_serial::DataBits::Seven,
                _ => tokio_serial::DataBits::Eight,
            };
            let stop_bits = if s.stop_bits == 2 {
                tokio_serial::StopBits::Two
            } else {
                tokio_serial::StopBits::One
            };
            let port = tokio_serial::new(&s.path, s.baud_rate)
                .data_bits(data_bits)
                .parity(parity)
                .stop_bits(stop_bits)
                .open_native_async()
                .map_err(io::Error::other)?;
            Ok(tokio_modbus::client::rtu::attach(port))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inter_frame_gap_follows_the_serial_line_spec() {
        let s = |baud| SerialSpec {
            path: String::new(),
            baud_rate: baud,
            data_bits: 8,
            parity: 'E',
            stop_bits: 1,
        };
        // 11 bits per character at 9600 baud: 3.5 × 11 / 9600 s ≈ 4.01 ms.
        assert_eq!(s(9600).inter_frame_gap(), Duration::from_micros(4010));
        assert_eq!(s(115_200).inter_frame_gap(), Duration::from_micros(1750));
    }
}
