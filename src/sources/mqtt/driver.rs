//! The MQTT subscriber: one task per device (one broker connection each).
//!
//! Invariants:
//! - **Persistent session, QoS 1.** The client id is stable and the session is kept
//!   (clean session off; on MQTT 5 clean start off with a 7-day session expiry), and
//!   every filter is subscribed at QoS 1, so messages published while hazgate is
//!   stopped or disconnected wait in the broker and are delivered when it is back
//!   (up to the broker's queue limit: Mosquitto's `max_queued_messages`, 1000 by
//!   default — raise it for long outages).
//! - **Acknowledged once stored.** PUBACK is sent manually, only after the store
//!   has committed the message's readings: each batch goes out with a
//!   [`Receipt`](crate::model::Receipt) the store writer confirms after the commit,
//!   and the packet ids of its messages wait until then (PUBACKs keep the order the
//!   messages came in). A crash (`kill -9` included) or a lost connection before
//!   that commit means the broker delivers the message again, not that it is lost.
//!   A stop waits up to [`STOP_WAIT`] for the store to confirm what was handed on,
//!   sends those PUBACKs and a DISCONNECT, so a restart does not bring them again.
//!   The price is at-least-once: a message stored whose PUBACK did not reach the
//!   broker arrives again (DUP set, counted as `redelivered`) and gives the same
//!   reading twice. While the store cannot write (disk full) nothing is
//!   acknowledged, so the broker keeps the messages. Throughput per connection is
//!   bounded by the broker's window of unacknowledged messages (Mosquitto's
//!   `max_inflight_messages`; on MQTT 5 also the client's receive maximum) per
//!   commit round trip; the store commits batches awaiting a receipt every
//!   [`RECEIPT_GATHER`](crate::store::writer::RECEIPT_GATHER) or so (`cargo bench
//!   --bench mqtt_ingest` measures it).
//! - **Backpressure, never a drop.** Readings go out in batches (at most
//!   [`BATCH_MAX`], handed on as soon as no more messages are already buffered) on a
//!   bounded channel. When the channel is full the task waits; meanwhile it reads
//!   nothing, and since nothing is acknowledged the broker holds the messages (its
//!   in-flight window stops it sending more).
//! - **Reconnect and resubscribe.** After a failed connection the task retries with
//!   exponential backoff (100 ms to 5 s, ±20 % jitter) and subscribes every filter
//!   again after every CONNACK, whatever `session_present` says (MQTT 5 asks the
//!   broker not to replay retained messages for a subscription it already has). A
//!   session the broker did not keep is counted (`sessions_lost`) and logged:
//!   messages sent during that outage are gone.
//! - **Offline as one alarm.** When the connection has been down for
//!   `offline_after_ms` the device's status point reads 0 (one parent alarm) and
//!   each of its points gets a `comm_fail` reading (NaN); on the next CONNACK the
//!   status point reads 1.
//! - **Bad input never stops the stream.** A message for an unknown topic, or whose
//!   payload is too large, not UTF-8, too deeply nested, malformed or of the wrong
//!   type, is counted by kind and logged at most once per kind every
//!   [`LOG_EVERY`] with a sample (topic and the payload's first bytes) and the number
//!   suppressed; where its points are known each gets a `bad_data` reading (NaN, time
//!   of arrival). Such a message is acknowledged like any other: sending it again
//!   would not make it better.
//! - Readings carry the device's timestamp when the payload has one, else the time
//!   of arrival (see [`decode`](super::decode)).

use super::client::{Conn, Incoming, Message};
use super::decode::{self, DecodeError, Limits};
use super::topic::{Miss, Router};
use crate::model::{Batch, PointId, Quality, Reading, Receipts, Timestamp};
use crate::sources::wall_now;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::time::{sleep_until, Instant};

/// Most readings in one batch on the channel.
pub const BATCH_MAX: usize = 512;

/// Bad input is logged at most once per kind and device in this window.
pub const LOG_EVERY: Duration = Duration::from_secs(10);

const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// At a stop, how long to wait for the store to confirm what was handed on (and for
/// the PUBACKs and the DISCONNECT to leave).
pub const STOP_WAIT: Duration = Duration::from_secs(2);

/// MQTT protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MqttVersion {
    /// MQTT 3.1.1.
    V3,
    /// MQTT 5.
    V5,
}

/// TLS files (PEM).
pub use crate::tls::TlsFiles as TlsSpec;

/// Where the broker is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerSpec {
    pub host: String,
    pub port: u16,
    /// `Some` for `mqtts://`.
    pub tls: Option<TlsSpec>,
}

/// One MQTT device: a broker connection and the points its messages feed.
#[derive(Debug, Clone)]
pub struct MqttDeviceSpec {
    pub id: String,
    pub broker: BrokerSpec,
    pub version: MqttVersion,
    /// Stable, so the broker keeps the session across restarts.
    pub client_id: String,
    pub username: Option<String>,
    pub password: Option<String>,
    pub connect_timeout_ms: u64,
    pub router: Router,
    pub limits: Limits,
    /// Connection down this long → the device is offline.
    pub offline_after_ms: u64,
    /// Reads 1 while connected, 0 once offline.
    pub status_point: Option<PointId>,
}

impl MqttDeviceSpec {
    /// Largest packet the client reads. Payloads between `max_payload_bytes` and
    /// this are received, counted and rejected; on MQTT 5 the broker is told this
    /// limit and does not send larger packets; on MQTT 3.1.1 a larger packet breaks
    /// the connection (set the broker's `message_size_limit` below it).
    pub fn transport_limit_bytes(&self) -> usize {
        let payload = self.limits.max_payload_bytes;
        match self.version {
            // Room for the topic (at most 64 KiB) and the header.
            MqttVersion::V5 => payload.saturating_add(65_536 + 16),
            MqttVersion::V3 => payload.saturating_mul(16).max(1 << 20),
        }
    }
}

/// Live figures of one MQTT device, shared with metrics and the API.
#[derive(Debug, Default)]
pub struct MqttStats {
    /// PUBLISH packets received.
    pub messages: AtomicU64,
    /// Readings handed to the channel (status readings included).
    pub readings: AtomicU64,
    /// Batches handed to the channel.
    pub batches: AtomicU64,
    /// PUBACKs handed to the client.
    pub acks: AtomicU64,
    /// QoS 1 messages received and not yet acknowledged: mostly waiting for the
    /// store's commit (gauge).
    pub unacknowledged: AtomicU64,
    /// Messages with the DUP flag: sent again by the broker.
    pub redelivered: AtomicU64,
    /// Retained messages received.
    pub retained: AtomicU64,
    /// Messages whose topic names no point.
    pub unknown_topic: AtomicU64,
    pub too_large: AtomicU64,
    pub not_utf8: AtomicU64,
    pub too_deep: AtomicU64,
    pub malformed: AtomicU64,
    /// Point values missing or not numbers.
    pub wrong_type: AtomicU64,
    pub bad_timestamp: AtomicU64,
    /// Readings the payload's quality flag marked bad.
    pub source_bad: AtomicU64,
    /// CONNACKs received.
    pub connects: AtomicU64,
    /// Failed connection attempts and lost connections.
    pub connection_errors: AtomicU64,
    /// Reconnects where the broker kept the session.
    pub sessions_resumed: AtomicU64,
    /// Reconnects where the broker had lost the session.
    pub sessions_lost: AtomicU64,
    /// SUBACKs received (one per SUBSCRIBE of at most 64 filters).
    pub subacks: AtomicU64,
    /// Topic filters the broker refused.
    pub subscribe_refused: AtomicU64,
    pub online: AtomicBool,
    pub last_error: Mutex<Option<String>>,
}

impl MqttStats {
    /// Messages (or point values) rejected as bad input, all kinds.
    pub fn rejected(&self) -> u64 {
        [
            &self.unknown_topic,
            &self.too_large,
            &self.not_utf8,
            &self.too_deep,
            &self.malformed,
            &self.wrong_type,
            &self.bad_timestamp,
        ]
        .iter()
        .map(|c| c.load(Relaxed))
        .sum()
    }

    fn counter(&self, e: DecodeError) -> &AtomicU64 {
        match e {
            DecodeError::TooLarge(_) => &self.too_large,
            DecodeError::NotUtf8 => &self.not_utf8,
            DecodeError::TooDeep => &self.too_deep,
            DecodeError::Malformed => &self.malformed,
            DecodeError::WrongType => &self.wrong_type,
            DecodeError::BadTimestamp => &self.bad_timestamp,
        }
    }

    fn error(&self, e: String) {
        if let Ok(mut g) = self.last_error.lock() {
            *g = Some(e);
        }
    }
}

/// A running set of MQTT devices.
pub struct MqttSource {
    pub stats: Vec<(String, Arc<MqttStats>)>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl MqttSource {
    /// Start one task per device. Readings go to `tx` in batches; when it is full the
    /// tasks wait (and the broker holds the messages). `shutdown` set to `true` stops
    /// every task at a safe point: the readings already decoded are handed on first.
    pub fn start(
        devices: Vec<MqttDeviceSpec>,
        tx: mpsc::Sender<Batch>,
        shutdown: watch::Receiver<bool>,
    ) -> MqttSource {
        let mut stats = Vec::new();
        let mut tasks = Vec::new();
        for spec in devices {
            let s = Arc::new(MqttStats::default());
            stats.push((spec.id.clone(), s.clone()));
            let span = tracing::info_span!("mqtt_device", device = %spec.id);
            let task = DeviceTask::new(spec, s, tx.clone(), shutdown.clone());
            tasks.push(tokio::spawn(tracing::Instrument::instrument(
                task.run(),
                span,
            )));
        }
        MqttSource { stats, tasks }
    }

    /// Wait for every device task to finish (after shutdown).
    pub async fn join(self) {
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// At most one log line per kind per [`LOG_EVERY`], with how many were not logged.
struct Throttle {
    last: Vec<(&'static str, Instant, u64)>,
}

impl Throttle {
    /// `Some(suppressed since the last line)` when a line may be logged now.
    fn allow(&mut self, kind: &'static str) -> Option<u64> {
        let now = Instant::now();
        match self.last.iter_mut().find(|(k, _, _)| *k == kind) {
            None => {
                self.last.push((kind, now, 0));
                Some(0)
            }
            Some((_, at, suppressed)) => {
                if now.duration_since(*at) >= LOG_EVERY {
                    let n = *suppressed;
                    *at = now;
                    *suppressed = 0;
                    Some(n)
                } else {
                    *suppressed += 1;
                    None
                }
            }
        }
    }
}

/// The first bytes of a payload, printable.
fn sample(payload: &[u8]) -> String {
    const SHOWN: usize = 64;
    let head = &payload[..payload.len().min(SHOWN)];
    let mut s: String = String::from_utf8_lossy(head).escape_debug().collect();
    if payload.len() > SHOWN {
        s.push('…');
    }
    s
}

struct DeviceTask {
    spec: MqttDeviceSpec,
    filters: Vec<String>,
    points: Vec<PointId>,
    stats: Arc<MqttStats>,
    tx: mpsc::Sender<Batch>,
    shutdown: watch::Receiver<bool>,
    batch: Vec<Reading>,
    /// Packet ids of the messages in `batch`, acknowledged once it is stored.
    batch_acks: Vec<u16>,
    /// How far the batches handed on are stored, and the last batch number issued.
    receipts: Arc<Receipts>,
    issued: u64,
    /// Packet ids waiting for their batch (by number) to be stored.
    unstored: VecDeque<(u64, u16)>,
    /// PUBACKs due, not yet taken by the client's request channel.
    owed: VecDeque<u16>,
    throttle: Throttle,
    rng: u64,
}

/// Pending forever when there is no connection.
async fn poll(conn: &mut Option<Conn>) -> Result<Incoming, String> {
    match conn {
        Some(c) => c.poll().await,
        None => std::future::pending().await,
    }
}

impl DeviceTask {
    fn new(
        spec: MqttDeviceSpec,
        stats: Arc<MqttStats>,
        tx: mpsc::Sender<Batch>,
        shutdown: watch::Receiver<bool>,
    ) -> DeviceTask {
        let seed = spec.id.bytes().fold(0x9E37_79B9_7F4A_7C15u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01B3)
        });
        DeviceTask {
            filters: spec.router.filters(),
            points: spec.router.points(),
            spec,
            stats,
            tx,
            shutdown,
            batch: Vec::with_capacity(BATCH_MAX),
            batch_acks: Vec::with_capacity(BATCH_MAX),
            receipts: Arc::new(Receipts::default()),
            issued: 0,
            unstored: VecDeque::new(),
            owed: VecDeque::new(),
            throttle: Throttle { last: Vec::new() },
            rng: seed | 1,
        }
    }

    fn jitter(&mut self, d: Duration) -> Duration {
        // xorshift64: ±20 % so many gateways do not reconnect in lockstep.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        d.mul_f64(0.8 + (self.rng % 1000) as f64 / 2500.0)
    }

    async fn run(mut self) {
        let offline_after = Duration::from_millis(self.spec.offline_after_ms.max(1));
        let mut conn: Option<Conn> = None;
        let mut down_since = Some(Instant::now());
        let mut online: Option<bool> = None;
        let mut retry_at: Option<Instant> = None;
        let mut backoff = BACKOFF_MIN;
        let mut subscribe_pending = false;
        let mut ever_connected = false;
        let receipts = self.receipts.clone();
        tracing::info!(
            host = %self.spec.broker.host,
            port = self.spec.broker.port,
            tls = self.spec.broker.tls.is_some(),
            version = ?self.spec.version,
            client_id = %self.spec.client_id,
            filters = ?self.filters,
            "starting MQTT subscriber"
        );
        loop {
            if *self.shutdown.borrow() {
                break;
            }
            let now = Instant::now();
            if retry_at.is_some_and(|t| now >= t) {
                retry_at = None;
            }
            if conn.is_none() && retry_at.is_none() {
                match Conn::new(&self.spec) {
                    Ok(c) => conn = Some(c),
                    Err(e) => {
                        tracing::error!(error = %e, "cannot set up the MQTT client");
                        self.stats.error(e.to_string());
                        self.stats.connection_errors.fetch_add(1, Relaxed);
                        retry_at = Some(now + self.jitter(BACKOFF_MAX));
                    }
                }
            }
            self.settle();
            if let Some(c) = &conn {
                self.drain_owed(c);
                if subscribe_pending && c.subscribe(&self.filters).is_ok() {
                    subscribe_pending = false;
                }
            }
            let unacknowledged = self.batch_acks.len() + self.unstored.len() + self.owed.len();
            self.stats
                .unacknowledged
                .store(unacknowledged as u64, Relaxed);
            let offline_at = match (online, down_since) {
                (Some(false), _) | (_, None) => None,
                (_, Some(t)) => Some(t + offline_after),
            };
            let can_poll = conn.is_some() && retry_at.is_none();
            let far = now + Duration::from_secs(3600);
            tokio::select! {
                biased;
                _ = self.shutdown.changed() => {}
                _ = sleep_until(offline_at.unwrap_or(far)), if offline_at.is_some() => {
                    online = Some(false);
                    if self.go_offline(offline_after).await.is_err() {
                        break;
                    }
                }
                _ = sleep_until(retry_at.unwrap_or(far)), if retry_at.is_some() => {}
                event = poll(&mut conn), if can_poll => {
                    // A `&Conn` is not `Send`: never held across an await.
                    match event {
                        Ok(Incoming::Message(msg)) => {
                            self.take_message(&msg);
                            // The rest of the read, without a turn of the loop each.
                            while self.batch.len() < BATCH_MAX {
                                match conn.as_mut().and_then(Conn::next_buffered_message) {
                                    Some(msg) => self.take_message(&msg),
                                    None => break,
                                }
                            }
                        }
                        Ok(Incoming::Connected { session_present }) => {
                            self.stats.connects.fetch_add(1, Relaxed);
                            backoff = BACKOFF_MIN;
                            down_since = None;
                            self.unstored.clear();
                            self.owed.clear();
                            if ever_connected {
                                if session_present {
                                    self.stats.sessions_resumed.fetch_add(1, Relaxed);
                                } else {
                                    self.stats.sessions_lost.fetch_add(1, Relaxed);
                                    tracing::warn!("the broker did not keep the session: messages published while disconnected are lost");
                                }
                            }
                            ever_connected = true;
                            tracing::info!(session_present, "connected");
                            subscribe_pending = conn
                                .as_ref()
                                .is_none_or(|c| c.subscribe(&self.filters).is_err());
                            if online != Some(true) {
                                if online == Some(false) {
                                    tracing::info!("device back online");
                                }
                                online = Some(true);
                                self.stats.online.store(true, Relaxed);
                                self.push_status(1.0);
                                if self.flush().await.is_err() {
                                    break;
                                }
                            }
                        }
                        Ok(Incoming::Subscribed { refused }) => {
                            self.stats.subacks.fetch_add(1, Relaxed);
                            if refused > 0 {
                                self.stats.subscribe_refused.fetch_add(refused as u64, Relaxed);
                                tracing::error!(refused, filters = ?self.filters, "the broker refused subscriptions (check its ACL)");
                                self.stats.error(format!("{refused} subscriptions refused"));
                            }
                        }
                        Ok(Incoming::Other) => {}
                        Err(e) => {
                            self.stats.connection_errors.fetch_add(1, Relaxed);
                            let first = down_since.is_none();
                            if first {
                                down_since = Some(Instant::now());
                            }
                            // Not acknowledged: the broker sends these again.
                            self.batch_acks.clear();
                            self.unstored.clear();
                            self.owed.clear();
                            if self.flush().await.is_err() {
                                break;
                            }
                            if first {
                                tracing::warn!(error = %e, "connection to the broker lost");
                            } else if let Some(suppressed) = self.throttle.allow("connect") {
                                tracing::warn!(error = %e, suppressed, "cannot reach the broker");
                            }
                            self.stats.error(e);
                            retry_at = Some(Instant::now() + self.jitter(backoff));
                            backoff = (backoff * 2).min(BACKOFF_MAX);
                        }
                    }
                    // Whatever the packet, the batch goes on once nothing more is
                    // buffered: the last message of a read may be followed by a SUBACK
                    // or a PINGRESP, and must not wait for the next message (with the
                    // broker's window full, none would come).
                    let buffered = conn.as_ref().is_some_and(Conn::has_buffered);
                    let waiting = !self.batch.is_empty() || !self.batch_acks.is_empty();
                    if waiting && (self.batch.len() >= BATCH_MAX || !buffered) {
                        if self.flush().await.is_err() {
                            break;
                        }
                        self.ack(conn.as_ref());
                    }
                }
                // A batch was stored: its PUBACKs go out at the top of the loop.
                // Last, so a stream of messages does not pay for it each turn.
                _ = receipts.changed(), if !self.unstored.is_empty() => {}
            }
        }
        // Stop at a safe point: what was decoded goes on, and while connected the
        // task waits (at most STOP_WAIT) for the store to confirm it, acknowledges
        // it and disconnects, so the next start does not get it again. What is not
        // acknowledged by then is sent again by the broker next time.
        let handed = self.flush().await.is_ok();
        let connected = down_since.is_none() && retry_at.is_none();
        if let Some(mut c) = conn {
            if handed && connected {
                self.finish(&mut c).await;
            }
            c.try_disconnect();
            if connected {
                // The PUBACKs and the DISCONNECT leave when the client is polled;
                // the broker then closes the connection.
                let _ = tokio::time::timeout(STOP_WAIT, async { while c.poll().await.is_ok() {} })
                    .await;
            }
        }
    }

    /// At a stop: wait for the store to confirm the batches handed on and queue
    /// their PUBACKs. Messages arriving meanwhile are left unacknowledged.
    async fn finish(&mut self, c: &mut Conn) {
        let deadline = Instant::now() + STOP_WAIT;
        let receipts = self.receipts.clone();
        loop {
            self.settle();
            self.drain_owed(c);
            if self.unstored.is_empty() && self.owed.is_empty() {
                return;
            }
            tokio::select! {
                _ = receipts.changed() => {}
                _ = sleep_until(deadline) => return,
                event = c.poll() => if event.is_err() {
                    return;
                },
            }
        }
    }

    /// One message into the batch: its readings, and its packet id to acknowledge.
    fn take_message(&mut self, msg: &Message) {
        self.on_message(msg, wall_now());
        if let Some(pkid) = msg.ack {
            self.batch_acks.push(pkid);
        }
    }

    /// Decode one message into readings on the batch.
    fn on_message(&mut self, msg: &Message, arrival: Timestamp) {
        let s = &*self.stats;
        s.messages.fetch_add(1, Relaxed);
        if msg.dup {
            s.redelivered.fetch_add(1, Relaxed);
        }
        if msg.retain {
            s.retained.fetch_add(1, Relaxed);
        }
        let topic = msg.topic().unwrap_or("");
        let targets = match self.spec.router.route(topic) {
            Ok(t) => t,
            Err(miss) => {
                s.unknown_topic.fetch_add(1, Relaxed);
                if let Some(suppressed) = self.throttle.allow("unknown_topic") {
                    let why = match miss {
                        Miss::NoMatch => "no point reads this topic",
                        Miss::UnknownKey => "the {point} level names no point of this device",
                    };
                    tracing::warn!(topic, payload = %sample(&msg.payload), suppressed, "unknown topic: {why}");
                }
                return;
            }
        };
        let payload = match decode::parse(&msg.payload, self.spec.limits) {
            Ok(p) => p,
            Err(e) => {
                s.counter(e).fetch_add(1, Relaxed);
                if let Some(suppressed) = self.throttle.allow(e.as_str()) {
                    tracing::warn!(topic, kind = e.as_str(), payload = %sample(&msg.payload), bytes = msg.payload.len(), suppressed, "bad payload: {e}; its points read bad_data");
                }
                for t in targets {
                    self.batch.push(Reading {
                        point: t.point,
                        ts: arrival,
                        value: f64::NAN,
                        quality: Quality::BadData,
                    });
                }
                return;
            }
        };
        for t in targets {
            let reading = match decode::extract(&payload, &t.fields, arrival) {
                Ok(sample) => {
                    if sample.quality == Quality::SourceBad {
                        s.source_bad.fetch_add(1, Relaxed);
                    }
                    Reading {
                        point: t.point,
                        ts: sample.ts,
                        value: sample.value,
                        quality: sample.quality,
                    }
                }
                Err(e) => {
                    s.counter(e).fetch_add(1, Relaxed);
                    if let Some(suppressed) = self.throttle.allow(e.as_str()) {
                        tracing::warn!(topic, point = t.point.0, kind = e.as_str(), payload = %sample(&msg.payload), suppressed, "bad value: {e}; the point reads bad_data");
                    }
                    Reading {
                        point: t.point,
                        ts: arrival,
                        value: f64::NAN,
                        quality: Quality::BadData,
                    }
                }
            };
            self.batch.push(reading);
        }
    }

    fn push_status(&mut self, value: f64) {
        if let Some(p) = self.spec.status_point {
            self.batch.push(Reading {
                point: p,
                ts: wall_now(),
                value,
                quality: Quality::Good,
            });
        }
    }

    async fn go_offline(&mut self, after: Duration) -> Result<(), ()> {
        tracing::warn!(
            down_ms = after.as_millis() as u64,
            "device offline: no broker connection"
        );
        self.stats.online.store(false, Relaxed);
        let ts = wall_now();
        for &point in &self.points {
            self.batch.push(Reading {
                point,
                ts,
                value: f64::NAN,
                quality: Quality::CommFail,
            });
        }
        self.push_status(0.0);
        self.flush().await
    }

    /// Hand the batch to the channel with a receipt, waiting while it is full; its
    /// messages are acknowledged once the store confirms the receipt
    /// ([`DeviceTask::settle`]). Messages that gave no reading (unknown topic) are
    /// acknowledged after the messages before them. Err when the channel is closed
    /// (the gateway is gone).
    async fn flush(&mut self) -> Result<(), ()> {
        if self.batch.is_empty() {
            match self.unstored.back() {
                Some(&(seq, _)) => self
                    .unstored
                    .extend(self.batch_acks.drain(..).map(|p| (seq, p))),
                None => self.owed.extend(self.batch_acks.drain(..)),
            }
            return Ok(());
        }
        let n = self.batch.len() as u64;
        let readings = std::mem::replace(&mut self.batch, Vec::with_capacity(BATCH_MAX));
        let seq = self.issued + 1;
        let batch = Batch {
            readings,
            receipt: Some(self.receipts.receipt(seq)),
        };
        if self.tx.send(batch).await.is_err() {
            return Err(());
        }
        self.issued = seq;
        self.stats.readings.fetch_add(n, Relaxed);
        self.stats.batches.fetch_add(1, Relaxed);
        self.unstored
            .extend(self.batch_acks.drain(..).map(|p| (seq, p)));
        Ok(())
    }

    /// Packet ids whose batch is stored become due PUBACKs.
    fn settle(&mut self) {
        let stored = self.receipts.stored();
        while let Some(&(seq, pkid)) = self.unstored.front() {
            if seq > stored {
                break;
            }
            self.unstored.pop_front();
            self.owed.push_back(pkid);
        }
    }

    /// Acknowledge what is stored, as far as the client's channel takes it.
    fn ack(&mut self, conn: Option<&Conn>) {
        self.settle();
        if let Some(c) = conn {
            self.drain_owed(c);
        }
    }

    fn drain_owed(&mut self, conn: &Conn) {
        while let Some(&pkid) = self.owed.front() {
            if conn.try_ack(pkid).is_err() {
                break;
            }
            self.owed.pop_front();
            self.stats.acks.fetch_add(1, Relaxed);
        }
    }
}
