//! One broker connection over rumqttc, MQTT 3.1.1 or 5 behind one face, and its TLS
//! set-up. The driver only sees [`Incoming`] events and acknowledges by packet id.
//!
//! Settings common to both versions: persistent session (clean session / clean
//! start off, session expiry [`SESSION_EXPIRY_S`] on MQTT 5), manual acknowledgement,
//! QoS 1 subscriptions, keep-alive [`KEEP_ALIVE`], `TCP_NODELAY` (a PUBACK must not
//! wait behind Nagle's algorithm: the broker's in-flight window waits for it).

use super::driver::{BrokerSpec, MqttDeviceSpec, MqttVersion};
use rumqttc::v5;
use std::time::Duration;

/// Keep-alive: a half-open connection is noticed within about 1.5 × this.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// MQTT 5 session expiry: how long the broker keeps the session (subscriptions and
/// queued QoS 1 messages) while hazgate is away: 7 days.
pub const SESSION_EXPIRY_S: u32 = 7 * 24 * 3600;

/// Capacity of rumqttc's request channel (subscriptions and PUBACKs from the driver
/// to the event loop). The driver never waits on it: it hands PUBACKs over with
/// `try_ack` and keeps the rest in its own queue until there is room.
pub const REQUEST_CAPACITY: usize = 4096;

/// Why a connection could not be set up (before any network traffic).
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("reading {path}: {reason}")]
    File { path: String, reason: String },
    #[error("TLS set-up: {0}")]
    Tls(String),
    /// The request channel to the event loop is full (or closed); try again after
    /// the next `poll`.
    #[error("the client's request channel is full")]
    Busy,
}

/// An event of the connection, the same for both versions.
#[derive(Debug)]
pub enum Incoming {
    /// CONNACK accepted; whether the broker kept our session.
    Connected { session_present: bool },
    /// A message.
    Message(Message),
    /// SUBACK: how many filters the broker refused.
    Subscribed { refused: usize },
    /// Anything else (pings, our own outgoing packets).
    Other,
}

/// One received PUBLISH.
#[derive(Debug)]
pub struct Message {
    topic: Topic,
    pub payload: bytes::Bytes,
    /// Packet id to acknowledge, for QoS ≥ 1.
    pub ack: Option<u16>,
    /// Sent again by the broker (DUP flag).
    pub dup: bool,
    /// A retained message, sent because of our subscription.
    pub retain: bool,
}

#[derive(Debug)]
enum Topic {
    V3(String),
    V5(bytes::Bytes),
}

impl Message {
    /// The topic, if it is UTF-8 (MQTT requires it; a broker should never send other).
    pub fn topic(&self) -> Option<&str> {
        match &self.topic {
            Topic::V3(s) => Some(s),
            Topic::V5(b) => std::str::from_utf8(b).ok(),
        }
    }
}

/// A connection (client handle plus event loop).
pub enum Conn {
    V3(rumqttc::AsyncClient, Box<rumqttc::EventLoop>),
    V5(v5::AsyncClient, Box<v5::EventLoop>),
}

impl Conn {
    /// Build the client; no network traffic yet (the first `poll` connects).
    pub fn new(spec: &MqttDeviceSpec) -> Result<Conn, ClientError> {
        let b = &spec.broker;
        let transport = match &b.tls {
            Some(_) => Some(rumqttc::Transport::tls_with_config(tls_config(b)?)),
            None => None,
        };
        let connect_timeout_s = spec.connect_timeout_ms.div_ceil(1000).max(1);
        let transport_limit = spec.transport_limit_bytes();
        Ok(match spec.version {
            MqttVersion::V3 => {
                let mut o = rumqttc::MqttOptions::new(&spec.client_id, &b.host, b.port);
                o.set_keep_alive(KEEP_ALIVE)
                    .set_clean_session(false)
                    .set_manual_acks(true)
                    .set_max_request_batch(REQUEST_CAPACITY)
                    .set_max_packet_size(transport_limit, 64 * 1024);
                if let Some(user) = &spec.username {
                    o.set_credentials(user, spec.password.clone().unwrap_or_default());
                }
                if let Some(t) = transport {
                    o.set_transport(t);
                }
                let (client, mut events) = rumqttc::AsyncClient::new(o, REQUEST_CAPACITY);
                let mut net = rumqttc::NetworkOptions::new();
                net.set_tcp_nodelay(true);
                net.set_connection_timeout(connect_timeout_s);
                events.set_network_options(net);
                Conn::V3(client, Box::new(events))
            }
            MqttVersion::V5 => {
                let mut o = v5::MqttOptions::new(&spec.client_id, &b.host, b.port);
                o.set_keep_alive(KEEP_ALIVE)
                    .set_clean_start(false)
                    .set_session_expiry_interval(Some(SESSION_EXPIRY_S))
                    .set_max_packet_size(Some(u32::try_from(transport_limit).unwrap_or(u32::MAX)))
                    .set_manual_acks(true)
                    .set_max_request_batch(REQUEST_CAPACITY)
                    .set_connection_timeout(connect_timeout_s);
                if let Some(user) = &spec.username {
                    o.set_credentials(user, spec.password.clone().unwrap_or_default());
                }
                if let Some(t) = transport {
                    o.set_transport(t);
                }
                let mut net = rumqttc::NetworkOptions::new();
                net.set_tcp_nodelay(true);
                net.set_connection_timeout(connect_timeout_s);
                o.set_network_options(net);
                let (client, events) = v5::AsyncClient::new(o, REQUEST_CAPACITY);
                Conn::V5(client, Box::new(events))
            }
        })
    }

    /// The next event. Reconnects when called after an error.
    pub async fn poll(&mut self) -> Result<Incoming, String> {
        match self {
            Conn::V3(_, events) => {
                use rumqttc::{Event, Packet, SubscribeReasonCode};
                match events.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(c))) => Ok(Incoming::Connected {
                        session_present: c.session_present,
                    }),
                    Ok(Event::Incoming(Packet::Publish(p))) => Ok(Incoming::Message(message_v3(p))),
                    Ok(Event::Incoming(Packet::SubAck(s))) => Ok(Incoming::Subscribed {
                        refused: s
                            .return_codes
                            .iter()
                            .filter(|c| matches!(c, SubscribeReasonCode::Failure))
                            .count(),
                    }),
                    Ok(_) => Ok(Incoming::Other),
                    Err(e) => Err(e.to_string()),
                }
            }
            Conn::V5(_, events) => {
                use v5::mqttbytes::v5::{Packet, SubscribeReasonCode};
                use v5::Event;
                match events.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(c))) => Ok(Incoming::Connected {
                        session_present: c.session_present,
                    }),
                    Ok(Event::Incoming(Packet::Publish(p))) => Ok(Incoming::Message(message_v5(p))),
                    Ok(Event::Incoming(Packet::SubAck(s))) => Ok(Incoming::Subscribed {
                        refused: s
                            .return_codes
                            .iter()
                            .filter(|c| !matches!(c, SubscribeReasonCode::Success(_)))
                            .count(),
                    }),
                    Ok(_) => Ok(Incoming::Other),
                    Err(e) => Err(e.to_string()),
                }
            }
        }
    }

    /// Whether events already read from the socket wait to be returned by `poll`
    /// (rumqttc reads up to 256 packets at a time). The driver hands its batch on
    /// when none do, so a batch never waits for the network.
    pub fn has_buffered(&self) -> bool {
        match self {
            Conn::V3(_, events) => !events.state.events.is_empty(),
            Conn::V5(_, events) => !events.state.events.is_empty(),
        }
    }

    /// The next message already read from the socket, when the next buffered event
    /// is one: what `poll` would return next, without a turn of the caller's loop.
    pub fn next_buffered_message(&mut self) -> Option<Message> {
        match self {
            Conn::V3(_, events) => {
                use rumqttc::{Event, Packet};
                let q = &mut events.state.events;
                match q.pop_front()? {
                    Event::Incoming(Packet::Publish(p)) => Some(message_v3(p)),
                    other => {
                        q.push_front(other);
                        None
                    }
                }
            }
            Conn::V5(_, events) => {
                use v5::mqttbytes::v5::Packet;
                use v5::Event;
                let q = &mut events.state.events;
                match q.pop_front()? {
                    Event::Incoming(Packet::Publish(p)) => Some(message_v5(p)),
                    other => {
                        q.push_front(other);
                        None
                    }
                }
            }
        }
    }

    /// Queue QoS 1 subscriptions of `filters` (at most 64 per SUBSCRIBE). Err when
    /// the request channel is full; call again later.
    pub fn subscribe(&self, filters: &[String]) -> Result<(), ClientError> {
        for chunk in filters.chunks(64) {
            let r = match self {
                Conn::V3(client, _) => client
                    .try_subscribe_many(chunk.iter().map(|f| {
                        rumqttc::SubscribeFilter::new(f.clone(), rumqttc::QoS::AtLeastOnce)
                    }))
                    .map_err(|_| ClientError::Busy),
                Conn::V5(client, _) => client
                    .try_subscribe_many(chunk.iter().map(|f| {
                        let mut filter = v5::mqttbytes::v5::Filter::new(
                            f.clone(),
                            v5::mqttbytes::QoS::AtLeastOnce,
                        );
                        // A resubscription must not replay retained messages.
                        filter.retain_forward_rule =
                            v5::mqttbytes::v5::RetainForwardRule::OnNewSubscribe;
                        filter
                    }))
                    .map_err(|_| ClientError::Busy),
            };
            r?;
        }
        Ok(())
    }

    /// Hand a PUBACK for `pkid` to the event loop without waiting. Err when the
    /// request channel is full; try again after the next `poll`.
    pub fn try_ack(&self, pkid: u16) -> Result<(), ClientError> {
        match self {
            Conn::V3(client, _) => {
                let mut p = rumqttc::Publish::new("", rumqttc::QoS::AtLeastOnce, Vec::new());
                p.pkid = pkid;
                client.try_ack(&p).map_err(|_| ClientError::Busy)
            }
            Conn::V5(client, _) => {
                let mut p = v5::mqttbytes::v5::Publish::new(
                    "",
                    v5::mqttbytes::QoS::AtLeastOnce,
                    Vec::new(),
                    None,
                );
                p.pkid = pkid;
                client.try_ack(&p).map_err(|_| ClientError::Busy)
            }
        }
    }

    /// Send DISCONNECT (best effort, for a clean stop).
    pub fn try_disconnect(&self) {
        let _ = match self {
            Conn::V3(client, _) => client.try_disconnect().map_err(|_| ()),
            Conn::V5(client, _) => client.try_disconnect().map_err(|_| ()),
        };
    }
}

/// A received MQTT 3.1.1 PUBLISH as the driver sees it.
fn message_v3(p: rumqttc::Publish) -> Message {
    Message {
        ack: (p.qos != rumqttc::QoS::AtMostOnce).then_some(p.pkid),
        dup: p.dup,
        retain: p.retain,
        topic: Topic::V3(p.topic),
        payload: p.payload,
    }
}

/// A received MQTT 5 PUBLISH as the driver sees it.
fn message_v5(p: v5::mqttbytes::v5::Publish) -> Message {
    Message {
        ack: (p.qos != v5::mqttbytes::QoS::AtMostOnce).then_some(p.pkid),
        dup: p.dup,
        retain: p.retain,
        topic: Topic::V5(p.topic),
        payload: p.payload,
    }
}

/// rustls on the `ring` provider: roots from `ca_file` (else the system's), and a
/// client certificate when one is configured.
fn tls_config(b: &BrokerSpec) -> Result<rumqttc::TlsConfiguration, ClientError> {
    let Some(tls) = &b.tls else {
        return Err(ClientError::Tls("no TLS settings".into()));
    };
    let config = crate::tls::client_config(tls).map_err(|e| match e {
        crate::tls::TlsError::File { path, reason } => ClientError::File { path, reason },
        crate::tls::TlsError::Tls(reason) => ClientError::Tls(reason),
    })?;
    Ok(rumqttc::TlsConfiguration::Rustls(config))
}
