//! The MQTT source: subscribes to sensor and gateway topics on a broker and turns
//! messages into readings.
//!
//! ## Invariants
//!
//! - Persistent session with QoS 1 subscriptions and a stable client id: messages
//!   published while hazgate restarts or is disconnected are delivered when it is
//!   back (within the broker's queue limit).
//! - A QoS 1 message is acknowledged (PUBACK) only after its readings were accepted
//!   by the readings channel: a crash before that means redelivery, never loss.
//!   Delivery is therefore at-least-once; a redelivered message repeats a reading.
//! - When the readings channel is full the subscriber waits and acknowledges
//!   nothing; the broker holds the rest. Nothing is dropped on our side.
//! - Bad input (unknown topic, too large, not UTF-8, too deep, malformed, wrong type,
//!   unreadable timestamp) is counted by kind, logged rate-limited with a sample, and
//!   — where the point is known — becomes a `bad_data` reading with NaN. A value is
//!   never invented, and bad input never stops the stream.
//! - A connection down for `offline_after_ms` makes the device's status point read 0
//!   (one parent alarm) and its points `comm_fail`; the next CONNACK makes it 1.
//!
//! ## Topic mapping
//!
//! A point reads a fixed topic (`[points.mqtt] topic`), or its device has one
//! filter `point_topic` with a `{point}` level naming the point (by `mqtt.key`, else
//! the point id), e.g. `site/+/{point}/data`. Both after the device's
//! `topic_prefix`. Details in [`topic`].
//!
//! ## Payloads
//!
//! A plain number (or `true`/`false`), or a JSON object with dotted paths for the
//! value, the device's timestamp (ms or s since the epoch, or RFC 3339) and a quality
//! flag. Details in [`decode`].
//!
//! ## Modules
//!
//! - [`decode`]: payload → value, timestamp, quality (pure).
//! - [`topic`]: topic → points, and the filters to subscribe (pure).
//! - [`build`]: configuration → [`MqttDeviceSpec`]s, and the `device:<id>` status
//!   points.
//! - [`client`]: one rumqttc connection, MQTT 3.1.1 or 5, TLS.
//! - [`driver`]: the subscriber task per device, [`MqttSource`] and [`MqttStats`].

pub mod build;
pub mod client;
pub mod decode;
pub mod driver;
pub mod topic;

pub use build::subscriptions;
pub use driver::{MqttDeviceSpec, MqttSource, MqttStats};
