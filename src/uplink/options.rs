//! Options of the uplink. The `[uplink]` config section maps onto [`UplinkOptions`]
//! through `Config::uplink_options`.

use super::encode::{Format, GradeInfo};
use super::sm4::Sm4Key;
use std::collections::HashMap;
use std::path::PathBuf;

/// TLS files (PEM) for `mqtts://` and `https://`.
pub use crate::tls::TlsFiles;

/// MQTT transport: QoS 1 PUBLISH, persistent session, last will and retained status.
#[derive(Debug, Clone, PartialEq)]
pub struct MqttUplink {
    pub host: String,
    pub port: u16,
    /// `Some` for `mqtts://`.
    pub tls: Option<TlsFiles>,
    /// Stable across restarts so the broker keeps the session.
    pub client_id: String,
    pub username: Option<String>,
    pub password: Option<String>,
    /// Messages go to `<topic_prefix>/<site>/<alarm|realtime|stats|heartbeat|status>`.
    pub topic_prefix: String,
    /// Keep-alive (s).
    pub keep_alive_s: u64,
}

/// HTTP(S) transport: one POST per message.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpUplink {
    /// Endpoint URL (`https://`; `http://` is accepted by the sink for tests and
    /// closed networks, the config check asks for `https://`).
    pub url: String,
    pub tls: TlsFiles,
    /// Sent as the `appid` header (and in the body when SM4 is on).
    pub appid: Option<String>,
    /// Sent as the `appsecret` header.
    pub appsecret: Option<String>,
    /// When set, the body is `{"appid": …, "data": base64(SM4-CBC(message))}`.
    pub sm4: Option<Sm4Key>,
    /// Timeout of one request (ms).
    pub request_timeout_ms: u64,
}

/// Where messages go.
#[derive(Debug, Clone, PartialEq)]
pub enum UplinkTransport {
    Mqtt(MqttUplink),
    Http(HttpUplink),
}

/// How the uplink runs.
#[derive(Debug, Clone, PartialEq)]
pub struct UplinkOptions {
    /// The sink's name: its cursor in the store is kept under it.
    pub name: String,
    /// The store file to read from (the same as `StoreOptions::path`).
    pub store_path: PathBuf,
    /// Site code the platform knows this site by (first part of every message id).
    pub site: String,
    pub transport: UplinkTransport,
    pub format: Format,
    /// Minutes east of UTC for the KJ text times. Default: 480 (Beijing time).
    pub utc_offset_min: i32,
    /// Configured grades per point id (for the `threshold` of alarm messages).
    pub grades: HashMap<String, Vec<GradeInfo>>,
    /// How often the store is checked for new alarm events when not woken (ms).
    pub alarm_poll_interval_ms: u64,
    /// Real-time values are sent at this interval when caught up (ms); a backlog is
    /// sent back to back, with alarms first between batches.
    pub realtime_interval_ms: u64,
    /// Send real-time values at all.
    pub realtime: bool,
    /// Most readings per real-time message.
    pub realtime_batch_max: usize,
    /// Send the 5-minute statistics (read after their own cursor, behind alarms).
    pub statistics: bool,
    /// Most statistics rows per statistics message.
    pub stats_batch_max: usize,
    /// How often the store is checked for new statistics when caught up (ms). They
    /// appear once a window is over (the store closes windows about once a second).
    pub stats_poll_interval_ms: u64,
    /// Most alarm events read per round.
    pub alarm_batch_max: usize,
    /// Heartbeat interval (ms); 0 = none.
    pub heartbeat_interval_ms: u64,
    /// First retry delay (ms); doubles per failed attempt, with ±50 % jitter.
    pub retry_initial_ms: u64,
    /// Longest retry delay (ms).
    pub retry_max_ms: u64,
    /// Only alarm events this filter accepts are sent (linkage); the others are
    /// skipped and the cursor moves past them. `None`: every alarm event.
    pub alarm_filter: Option<AlarmFilter>,
}

/// Which alarm events a linkage passes on. Point ids name the class: `cut:<action>`
/// is a power cut, `action:<action>` a feedback fault (馈电异常), and the configured
/// points' value alarms are over-limits; status points (`device:`, `link:`,
/// `system:`) and acknowledgements, shelving and the like are never passed on.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AlarmFilter {
    pub over_limit: bool,
    pub cut: bool,
    pub feed_fault: bool,
    /// Over-limits only of these points; empty: every configured point.
    pub points: Vec<String>,
}

impl AlarmFilter {
    /// Whether an event of `kind` and `transition` on `point` is passed on.
    pub fn matches(&self, point: &str, kind: &str, transition: &str) -> bool {
        let life = matches!(
            transition,
            "raised" | "reactivated" | "escalated" | "de_escalated" | "returned_to_normal"
        );
        if !life {
            return false;
        }
        if point.starts_with("cut:") {
            return self.cut;
        }
        if point.starts_with("action:") {
            return self.feed_fault;
        }
        let status = ["device:", "link:", "system:"]
            .iter()
            .any(|p| point.starts_with(p));
        self.over_limit
            && kind == "value"
            && !status
            && (self.points.is_empty() || self.points.iter().any(|p| p == point))
    }
}

impl UplinkOptions {
    /// Defaults around a transport.
    pub fn new(store_path: PathBuf, site: &str, transport: UplinkTransport) -> UplinkOptions {
        UplinkOptions {
            name: "uplink".into(),
            store_path,
            site: site.to_owned(),
            transport,
            format: Format::Json,
            utc_offset_min: 480,
            grades: HashMap::new(),
            alarm_poll_interval_ms: 5,
            realtime_interval_ms: 30_000,
            realtime: true,
            realtime_batch_max: 1_000,
            statistics: true,
            stats_batch_max: 1_000,
            stats_poll_interval_ms: 1_000,
            alarm_batch_max: 256,
            heartbeat_interval_ms: 60_000,
            retry_initial_ms: 100,
            // Short, so an alarm goes out within about 2 s of the link coming back.
            retry_max_ms: 2_000,
            alarm_filter: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::AlarmFilter;

    #[test]
    fn linkage_filter_passes_only_what_was_asked() {
        let all = AlarmFilter {
            over_limit: true,
            cut: true,
            feed_fault: true,
            points: vec![],
        };
        assert!(all.matches("CH4-1", "value", "raised"));
        assert!(all.matches("cut:face", "value", "returned_to_normal"));
        assert!(all.matches("action:face", "value", "escalated"));
        assert!(
            !all.matches("CH4-1", "value", "acknowledged"),
            "not the life of the condition"
        );
        assert!(
            !all.matches("CH4-1", "sensor_fault", "raised"),
            "a fault is no over-limit"
        );
        assert!(!all.matches("device:kj", "value", "raised"));
        assert!(!all.matches("system:storage", "value", "raised"));
        let cuts = AlarmFilter {
            cut: true,
            ..AlarmFilter::default()
        };
        assert!(cuts.matches("cut:face", "value", "raised"));
        assert!(!cuts.matches("action:face", "value", "raised"));
        assert!(!cuts.matches("CH4-1", "value", "raised"));
        let one = AlarmFilter {
            over_limit: true,
            points: vec!["CH4-1".into()],
            ..AlarmFilter::default()
        };
        assert!(one.matches("CH4-1", "value", "raised"));
        assert!(!one.matches("CH4-2", "value", "raised"));
    }
}
