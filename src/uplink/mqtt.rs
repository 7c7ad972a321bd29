//! The MQTT link: QoS 1 PUBLISH on a persistent session, a retained `online` status
//! on every connect, and a retained `offline` last will.
//!
//! # How acknowledgements are tracked
//!
//! rumqttc's event loop runs in its own task and is never cancelled half-way (a
//! cancelled write could corrupt the stream). It reports what the sink needs over a
//! bounded channel ([`EVENT_CAPACITY`]; the loop waits when it is full, which only
//! slows the connection): CONNACK, each outgoing PUBLISH with its packet id (in the
//! order they were requested), each PUBACK, and a failure.
//!
//! After a failure the loop *stops* until the link says to go on. Then it drops
//! everything rumqttc kept for re-sending (its `pending` list and requests still in
//! its channel): the link re-publishes, itself and in order, every message not yet
//! acknowledged. So the packet-id bookkeeping starts clean on every connection, and
//! a message is never in two places at once. Duplicates across a reconnect are
//! possible (a PUBACK lost with the connection); the stable ids let the receiver drop
//! them.
//!
//! # Alarms beside a bulk message
//!
//! A bulk message (a batch of real-time values or statistics) can be left in flight
//! ([`MqttLink::start_bulk`]) while alarms are published and acknowledged with
//! [`MqttLink::send`] — QoS 1 allows several messages in flight — so an alarm does
//! not wait for the PUBACK of a large message ahead of it. [`MqttLink::bulk_finished`]
//! tells when the bulk's PUBACKs are in. Alarms are published as soon as they are committed
//! ([`MqttLink::publish_alarm`]), without waiting for the
//! PUBACK of the alarm before them: a broker that holds a PUBACK (Nagle's algorithm
//! against the gateway's delayed ACK can hold one for 40 ms) must not hold the next
//! alarm. [`MqttLink::take_alarm_acks`] reports their PUBACKs, whichever wait
//! read them. Each kind keeps its own
//! order (alarms are published in store order); a failure fails both, and the caller
//! sends again whatever was not acknowledged.

use super::encode::{self, Message};
use super::options::MqttUplink;
use super::UplinkError;
use rumqttc::{AsyncClient, Event, EventLoop, LastWill, MqttOptions, Outgoing, Packet, QoS};
use std::collections::{HashMap, VecDeque};
use std::time::Duration;
use tokio::sync::mpsc;

/// Capacity of the event channel from the event-loop task to the link.
pub const EVENT_CAPACITY: usize = 4096;

/// Capacity of rumqttc's request channel beyond `max_in_flight`: the link never has
/// more than `max_in_flight` + [`BULK_MAX`] + 1 requests outstanding (a send, a bulk
/// message, the status), so `try_publish` always finds room.
const REQUEST_SLACK: usize = BULK_MAX + 16;

/// Most messages [`MqttLink::start_bulk`] leaves in flight at once.
pub const BULK_MAX: usize = 4;

#[derive(Debug)]
enum LinkEvent {
    Connected,
    Sent(u16),
    Acked(u16),
    Down(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tag {
    /// Message `i` of the batch being sent.
    Msg(usize),
    /// A message of the bulk batch in flight.
    Bulk,
    /// An alarm published by [`MqttLink::publish_alarm`]: its event's store `seq`.
    Alarm(i64),
    /// The retained status (not tracked beyond its ack).
    Status,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Connecting,
    Connected,
    /// The loop stopped after a failure and waits for `resume`.
    Down,
}

/// One MQTT connection to the platform.
pub struct MqttLink {
    client: AsyncClient,
    events: mpsc::Receiver<LinkEvent>,
    resume: mpsc::Sender<()>,
    task: tokio::task::JoinHandle<()>,
    base: String,
    site: String,
    state: State,
    issued: VecDeque<Tag>,
    in_flight: HashMap<u16, Tag>,
    max_in_flight: usize,
    /// The bulk batch in flight, if any.
    bulk: Option<Bulk>,
    /// `seq`s of alarms published with [`MqttLink::publish_alarm`] whose PUBACK came,
    /// whichever call read it, until [`MqttLink::take_alarm_acks`].
    alarm_acks: Vec<i64>,
    /// Counts connects and failures: alarms published under another generation
    /// can no longer be acknowledged.
    generation: u64,
    last_error: String,
}

/// A bulk batch left in flight by [`MqttLink::start_bulk`].
#[derive(Debug, Clone, Copy)]
struct Bulk {
    /// Messages not yet acknowledged.
    waiting: usize,
    /// The connection failed before every message was acknowledged.
    failed: bool,
}

impl Drop for MqttLink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

impl MqttLink {
    /// Build the client and start its event loop (it connects at once).
    pub fn start(
        o: &MqttUplink,
        site: &str,
        max_in_flight: usize,
    ) -> Result<MqttLink, UplinkError> {
        let base = format!("{}/{}", o.topic_prefix.trim_end_matches('/'), site);
        let max_in_flight = max_in_flight.clamp(1, u16::MAX as usize / 2);
        let mut mo = MqttOptions::new(&o.client_id, &o.host, o.port);
        mo.set_keep_alive(Duration::from_secs(o.keep_alive_s.max(5)))
            .set_clean_session(false)
            .set_inflight(u16::try_from(max_in_flight + BULK_MAX + 2).unwrap_or(u16::MAX))
            .set_max_packet_size(16 << 20, 1 << 20)
            .set_max_request_batch(max_in_flight + REQUEST_SLACK)
            .set_last_will(LastWill::new(
                format!("{base}/status"),
                encode::status(site, false, 0).payload,
                QoS::AtLeastOnce,
                true,
            ));
        if let Some(user) = &o.username {
            mo.set_credentials(user, o.password.clone().unwrap_or_default());
        }
        if let Some(tls) = &o.tls {
            let cfg = super::tls::client_config(tls)?;
            mo.set_transport(rumqttc::Transport::tls_with_config(
                rumqttc::TlsConfiguration::Rustls(cfg),
            ));
        }
        let (client, mut el) = AsyncClient::new(mo, max_in_flight + REQUEST_SLACK);
        let mut net = rumqttc::NetworkOptions::new();
        net.set_tcp_nodelay(true);
        net.set_connection_timeout(5);
        el.set_network_options(net);
        let (tx, events) = mpsc::channel(EVENT_CAPACITY);
        let (resume, resume_rx) = mpsc::channel(1);
        let task = tokio::spawn(event_loop(el, tx, resume_rx));
        Ok(MqttLink {
            client,
            events,
            resume,
            task,
            base,
            site: site.to_owned(),
            state: State::Connecting,
            issued: VecDeque::new(),
            in_flight: HashMap::new(),
            max_in_flight,
            bulk: None,
            alarm_acks: Vec::new(),
            generation: 0,
            last_error: String::new(),
        })
    }

    /// The connection failed and waits for [`MqttLink::resume`].
    pub fn is_down(&self) -> bool {
        self.state == State::Down
    }

    pub fn is_connected(&self) -> bool {
        self.state == State::Connected
    }

    /// The topic of a message kind.
    pub fn topic(&self, kind: encode::MessageKind) -> String {
        format!("{}/{}", self.base, kind.as_str())
    }

    /// Let a stopped loop reconnect (call after the backoff delay).
    pub fn resume(&mut self) {
        if self.state == State::Down && self.resume.try_send(()).is_ok() {
            self.state = State::Connecting;
        }
    }

    fn forget(&mut self) {
        self.issued.clear();
        self.in_flight.clear();
        self.alarm_acks.clear();
        self.generation += 1;
        if let Some(b) = &mut self.bulk {
            // Its PUBACKs can no longer come: it must be sent again.
            b.failed |= b.waiting > 0;
        }
    }

    fn publish(&mut self, tag: Tag, topic: String, payload: Vec<u8>, retain: bool) -> bool {
        match self
            .client
            .try_publish(topic, QoS::AtLeastOnce, retain, payload)
        {
            Ok(()) => {
                self.issued.push_back(tag);
                true
            }
            Err(e) => {
                self.last_error = e.to_string();
                false
            }
        }
    }

    /// Handle one event; returns the acked tag if any.
    fn on_event(&mut self, ev: LinkEvent) -> Option<Tag> {
        match ev {
            LinkEvent::Connected => {
                self.forget();
                self.state = State::Connected;
                tracing::info!(broker_topic = %self.base, "uplink connected");
                let status = encode::status(&self.site, true, now_ms());
                self.publish(Tag::Status, self.topic(status.kind), status.payload, true);
                None
            }
            LinkEvent::Sent(pkid) => {
                if let Some(tag) = self.issued.pop_front() {
                    self.in_flight.insert(pkid, tag);
                }
                None
            }
            LinkEvent::Acked(pkid) => {
                let tag = self.in_flight.remove(&pkid);
                if let Some(Tag::Alarm(seq)) = tag {
                    self.alarm_acks.push(seq);
                }
                if let (Some(Tag::Bulk), Some(b)) = (tag, &mut self.bulk) {
                    b.waiting = b.waiting.saturating_sub(1);
                }
                tag
            }
            LinkEvent::Down(e) => {
                if self.state != State::Down {
                    tracing::warn!(error = %e, "uplink connection lost");
                }
                self.last_error = e;
                self.forget();
                self.state = State::Down;
                None
            }
        }
    }

    /// Drive the connection while nothing is being sent (cancel-safe).
    pub async fn idle(&mut self) {
        match self.events.recv().await {
            Some(ev) => {
                self.on_event(ev);
            }
            None => std::future::pending().await,
        }
    }

    async fn next(&mut self) -> Result<LinkEvent, UplinkError> {
        self.events
            .recv()
            .await
            .ok_or_else(|| UplinkError::Link("the MQTT event loop stopped".into()))
    }

    /// Publish `msgs` in order with QoS 1 and wait until the broker acknowledged all.
    /// On failure, `Err((acked, error))`: the first `acked` messages were
    /// acknowledged; the rest must be sent again.
    pub async fn send(&mut self, msgs: &[Message]) -> Result<(), (usize, UplinkError)> {
        self.connected().await.map_err(|e| (0, e))?;
        let n = msgs.len();
        let mut acked = vec![false; n];
        let mut prefix = 0usize;
        let mut next = 0usize;
        let mut outstanding = 0usize;
        while prefix < n {
            while next < n && outstanding < self.max_in_flight {
                let m = &msgs[next];
                if !self.publish(Tag::Msg(next), self.topic(m.kind), m.payload.clone(), false) {
                    break;
                }
                next += 1;
                outstanding += 1;
            }
            let ev = self.next().await.map_err(|e| (prefix, e))?;
            let down = matches!(ev, LinkEvent::Down(_));
            match self.on_event(ev) {
                Some(Tag::Msg(i)) if i < n => {
                    acked[i] = true;
                    outstanding = outstanding.saturating_sub(1);
                    while prefix < n && acked[prefix] {
                        prefix += 1;
                    }
                }
                _ => {}
            }
            if down || self.state != State::Connected {
                return Err((prefix, UplinkError::Link(self.last_error.clone())));
            }
        }
        Ok(())
    }

    /// Wait until connected; Err when the connection failed (see [`MqttLink::resume`]).
    pub async fn connected(&mut self) -> Result<(), UplinkError> {
        loop {
            match self.state {
                State::Connected => return Ok(()),
                State::Down => return Err(UplinkError::Link(self.last_error.clone())),
                State::Connecting => {
                    let ev = self.next().await?;
                    self.on_event(ev);
                }
            }
        }
    }

    /// Publish `msgs` (at most [`BULK_MAX`]) with QoS 1 and leave them in flight:
    /// [`MqttLink::send`] may publish other messages meanwhile, and
    /// [`MqttLink::bulk_finished`] tells when their PUBACKs are in. Only one bulk batch
    /// at a time.
    pub async fn start_bulk(&mut self, msgs: &[Message]) -> Result<(), UplinkError> {
        debug_assert!(self.bulk.is_none() && msgs.len() <= BULK_MAX);
        self.connected().await?;
        self.bulk = Some(Bulk {
            waiting: msgs.len(),
            failed: false,
        });
        for m in msgs {
            if !self.publish(Tag::Bulk, self.topic(m.kind), m.payload.clone(), false) {
                self.bulk = None;
                return Err(UplinkError::Link(self.last_error.clone()));
            }
        }
        Ok(())
    }

    /// Most messages in flight at once.
    pub fn max_in_flight(&self) -> usize {
        self.max_in_flight
    }

    /// Publish one alarm message without waiting for its PUBACK, beside whatever is
    /// in flight ([`MqttLink::take_alarm_acks`] reports it). False when the
    /// connection is not up or the message could not be queued. An alarm published
    /// under an older [`MqttLink::generation`] will not be acknowledged.
    pub fn publish_alarm(&mut self, msg: &Message, seq: i64) -> bool {
        self.state == State::Connected
            && self.publish(
                Tag::Alarm(seq),
                self.topic(msg.kind),
                msg.payload.clone(),
                false,
            )
    }

    /// Where the bulk batch stands, without waiting: `None` while in flight (or when
    /// there is none), `Some(Ok)` once every message was acknowledged, `Some(Err)` when
    /// the connection failed first (send it all again). A finished batch is cleared.
    pub fn bulk_finished(&mut self) -> Option<Result<(), UplinkError>> {
        let b = self.bulk?;
        if b.failed {
            self.bulk = None;
            Some(Err(UplinkError::Link(self.last_error.clone())))
        } else if b.waiting == 0 {
            self.bulk = None;
            Some(Ok(()))
        } else {
            None
        }
    }

    /// Wait for the next event of the connection and handle it; Err when the
    /// connection failed. Acknowledgements of alarms are kept for
    /// [`MqttLink::take_alarm_acks`], bulk PUBACKs counted for
    /// [`MqttLink::bulk_finished`]. Cancel-safe.
    pub async fn event(&mut self) -> Result<(), UplinkError> {
        let ev = self.next().await?;
        let down = matches!(ev, LinkEvent::Down(_));
        self.on_event(ev);
        if down || self.state != State::Connected {
            return Err(UplinkError::Link(self.last_error.clone()));
        }
        Ok(())
    }

    /// The `seq`s of alarms acknowledged since the last call.
    pub fn take_alarm_acks(&mut self) -> Vec<i64> {
        std::mem::take(&mut self.alarm_acks)
    }

    /// Alarms were acknowledged and not yet taken.
    pub fn has_alarm_acks(&self) -> bool {
        !self.alarm_acks.is_empty()
    }

    /// Changes on every connect and failure (see [`MqttLink::publish_alarm`]).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Publish the retained `offline` status (waiting up to `wait` for its ack), then
    /// disconnect cleanly (a clean DISCONNECT keeps the broker from sending the will,
    /// which says the same).
    pub async fn close(&mut self, wait: Duration) {
        if self.state == State::Connected {
            let status = encode::status(&self.site, false, now_ms());
            let topic = self.topic(status.kind);
            // Tracked as message 0 so its PUBACK is recognised.
            if self.publish(Tag::Msg(0), topic, status.payload, true) {
                let _ = tokio::time::timeout(wait, async {
                    while let Some(ev) = self.events.recv().await {
                        let down = matches!(ev, LinkEvent::Down(_));
                        if down || self.on_event(ev) == Some(Tag::Msg(0)) {
                            break;
                        }
                    }
                })
                .await;
            }
        }
        if self.client.try_disconnect().is_ok() {
            // The event loop ends once the DISCONNECT is written.
            let _ = tokio::time::timeout(wait, &mut self.task).await;
        }
    }
}

async fn event_loop(
    mut el: EventLoop,
    tx: mpsc::Sender<LinkEvent>,
    mut resume: mpsc::Receiver<()>,
) {
    loop {
        let ev = match el.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => LinkEvent::Connected,
            Ok(Event::Incoming(Packet::PubAck(a))) => LinkEvent::Acked(a.pkid),
            Ok(Event::Outgoing(Outgoing::Publish(pkid))) => LinkEvent::Sent(pkid),
            Ok(Event::Outgoing(Outgoing::Disconnect)) => return,
            Ok(_) => continue,
            Err(e) => {
                if tx.send(LinkEvent::Down(e.to_string())).await.is_err() {
                    return;
                }
                if resume.recv().await.is_none() {
                    return;
                }
                // The link re-publishes what was not acknowledged; drop rumqttc's copies.
                el.clean();
                el.pending.clear();
                continue;
            }
        };
        if tx.send(ev).await.is_err() {
            return;
        }
    }
}
