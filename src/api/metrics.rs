//! `GET /metrics`: Prometheus text format. Counters come from the published
//! snapshot, the sources' atomic stats and the API itself — never from the engine.

use super::ApiState;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

/// One per-device metric: name, type, how to read it.
type DeviceMetric = (
    &'static str,
    &'static str,
    fn(&crate::sources::modbus::poller::DeviceStats) -> f64,
);

/// One per-MQTT-device metric: name, type, help, how to read it.
type MqttMetric = (
    &'static str,
    &'static str,
    &'static str,
    fn(&crate::sources::mqtt::MqttStats) -> u64,
);

/// Counters of the API itself.
#[derive(Debug, Default)]
pub struct ApiMetrics {
    pub failed_logins: AtomicU64,
    pub audit_failures: AtomicU64,
    pub ws_clients: AtomicU64,
    /// WebSocket clients that fell behind the live stream and got a fresh snapshot.
    pub ws_resyncs: AtomicU64,
    /// Requests refused by the per-client rate limit.
    pub rate_limited: AtomicU64,
}

fn esc(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

pub async fn metrics(State(s): State<ApiState>) -> impl IntoResponse {
    let snap = s.live.borrow().clone();
    let mut o = String::with_capacity(4096);
    let mut g = |name: &str, kind: &str, help: &str, v: f64| {
        let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}");
    };
    g(
        "hazgate_readings_total",
        "counter",
        "Readings evaluated by the engine.",
        snap.readings as f64,
    );
    g(
        "hazgate_alarms_raised_total",
        "counter",
        "Alarm episodes raised.",
        snap.raised as f64,
    );
    g(
        "hazgate_unknown_point_readings_total",
        "counter",
        "Readings for unknown points.",
        snap.unknown_point as f64,
    );
    g(
        "hazgate_bad_quality_readings_total",
        "counter",
        "Readings with a bad quality.",
        snap.bad_quality as f64,
    );
    g(
        "hazgate_alarms_open",
        "gauge",
        "Open alarms.",
        snap.alarms.len() as f64,
    );
    g(
        "hazgate_alarms_per_10min",
        "gauge",
        "Alarms raised in the last 10 minutes.",
        f64::from(snap.alarms_per_10min),
    );
    g(
        "hazgate_alarm_flood",
        "gauge",
        "1 while in an alarm flood.",
        if snap.flood { 1.0 } else { 0.0 },
    );
    g(
        "hazgate_control_queue_depth",
        "gauge",
        "Control requests waiting for the engine.",
        s.control.queued() as f64,
    );
    g(
        "hazgate_api_failed_logins_total",
        "counter",
        "Requests with an unknown token.",
        s.metrics.failed_logins.load(Ordering::Relaxed) as f64,
    );
    g(
        "hazgate_api_audit_failures_total",
        "counter",
        "Audit records the store refused.",
        s.metrics.audit_failures.load(Ordering::Relaxed) as f64,
    );
    g(
        "hazgate_api_rate_limited_total",
        "counter",
        "Requests refused with 429 by the per-client rate limit.",
        s.metrics.rate_limited.load(Ordering::Relaxed) as f64,
    );
    g(
        "hazgate_ws_clients",
        "gauge",
        "Connected WebSocket clients.",
        s.metrics.ws_clients.load(Ordering::Relaxed) as f64,
    );
    g(
        "hazgate_ws_resyncs_total",
        "counter",
        "WebSocket clients that fell behind the live stream and were sent a fresh snapshot.",
        s.metrics.ws_resyncs.load(Ordering::Relaxed) as f64,
    );
    if let Some(store) = &s.store {
        let st = store.writer.status();
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed) as f64;
        let mut g = |name: &str, kind: &str, help: &str, v: f64| {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}");
        };
        g(
            "hazgate_store_readings_received_total",
            "counter",
            "Readings handed to the store.",
            l(&st.readings_received),
        );
        g(
            "hazgate_store_readings_stored_total",
            "counter",
            "Raw rows stored after the change filter.",
            l(&st.readings_stored),
        );
        g(
            "hazgate_store_readings_commits_total",
            "counter",
            "Readings transactions committed (several batches each under load).",
            l(&st.readings_commits),
        );
        g(
            "hazgate_store_readings_held",
            "gauge",
            "Readings held in memory while the store cannot take them.",
            l(&st.readings_held),
        );
        g(
            "hazgate_store_readings_lost_total",
            "counter",
            "Held readings dropped on overflow.",
            l(&st.readings_lost),
        );
        g(
            "hazgate_store_write_errors_total",
            "counter",
            "Failed store calls.",
            l(&st.write_errors),
        );
        g(
            "hazgate_store_alarm_events_total",
            "counter",
            "Alarm events committed.",
            l(&st.alarm_events),
        );
        g(
            "hazgate_store_audit_rows_total",
            "counter",
            "Audit rows committed.",
            l(&st.audit_rows),
        );
        g(
            "hazgate_store_degraded",
            "gauge",
            "1 while storage is degraded.",
            if st.degraded.load(Ordering::Relaxed) {
                1.0
            } else {
                0.0
            },
        );
    }
    let per_device: [DeviceMetric; 10] = [
        ("hazgate_device_polls_total", "counter", |d| {
            d.polls.load(Ordering::Relaxed) as f64
        }),
        ("hazgate_device_failed_polls_total", "counter", |d| {
            d.failed_polls.load(Ordering::Relaxed) as f64
        }),
        ("hazgate_device_timeouts_total", "counter", |d| {
            d.timeouts.load(Ordering::Relaxed) as f64
        }),
        ("hazgate_device_exceptions_total", "counter", |d| {
            d.exceptions.load(Ordering::Relaxed) as f64
        }),
        ("hazgate_device_rtt_seconds", "gauge", |d| {
            d.last_rtt_us.load(Ordering::Relaxed) as f64 / 1e6
        }),
        ("hazgate_device_max_rtt_seconds", "gauge", |d| {
            d.max_rtt_us.load(Ordering::Relaxed) as f64 / 1e6
        }),
        ("hazgate_device_poll_jitter_seconds", "gauge", |d| {
            d.last_jitter_us.load(Ordering::Relaxed) as f64 / 1e6
        }),
        ("hazgate_device_max_poll_jitter_seconds", "gauge", |d| {
            d.max_jitter_us.load(Ordering::Relaxed) as f64 / 1e6
        }),
        ("hazgate_device_poll_overruns_total", "counter", |d| {
            d.overruns.load(Ordering::Relaxed) as f64
        }),
        ("hazgate_device_online", "gauge", |d| {
            if d.online.load(Ordering::Relaxed) {
                1.0
            } else {
                0.0
            }
        }),
    ];
    for (name, kind, f) in per_device {
        let _ = writeln!(o, "# TYPE {name} {kind}");
        for (id, d) in s.devices.iter() {
            let _ = writeln!(o, "{name}{{device=\"{}\"}} {}", esc(id), f(d));
        }
    }
    mqtt(&s, &mut o);
    let _ = writeln!(o, "# TYPE hazgate_hazard_source_risk gauge");
    for h in &snap.hazard_sources {
        let level = match h.colour {
            crate::model::Colour::Blue => 1,
            crate::model::Colour::Yellow => 2,
            crate::model::Colour::Orange => 3,
            crate::model::Colour::Red => 4,
        };
        let _ = writeln!(
            o,
            "hazgate_hazard_source_risk{{source=\"{}\"}} {level}",
            esc(&h.id)
        );
    }
    actions(&s, &mut o);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        o,
    )
}

/// MQTT devices: traffic, acknowledgements, bad input by kind, the connection.
fn mqtt(s: &ApiState, o: &mut String) {
    use crate::sources::mqtt::MqttStats;
    let per_device: [MqttMetric; 11] = [
        ("hazgate_mqtt_messages_total", "counter", "PUBLISH packets received.", |m| m.messages.load(Ordering::Relaxed)),
        ("hazgate_mqtt_acks_total", "counter", "PUBACKs sent, each after the message's reading was committed.", |m| m.acks.load(Ordering::Relaxed)),
        ("hazgate_mqtt_unacknowledged", "gauge", "Messages received, not yet acknowledged (waiting for the store's commit).", |m| m.unacknowledged.load(Ordering::Relaxed)),
        ("hazgate_mqtt_redelivered_total", "counter", "Messages the broker sent again (DUP).", |m| m.redelivered.load(Ordering::Relaxed)),
        ("hazgate_mqtt_rejected_total", "counter", "Messages or values rejected as bad input (unknown topic, too large, not UTF-8, too deep, malformed, wrong type, bad timestamp).", MqttStats::rejected),
        ("hazgate_mqtt_source_bad_total", "counter", "Readings the payload's own quality flag marked bad.", |m| m.source_bad.load(Ordering::Relaxed)),
        ("hazgate_mqtt_connects_total", "counter", "CONNACKs received.", |m| m.connects.load(Ordering::Relaxed)),
        ("hazgate_mqtt_connection_errors_total", "counter", "Failed connection attempts and lost connections.", |m| m.connection_errors.load(Ordering::Relaxed)),
        ("hazgate_mqtt_sessions_lost_total", "counter", "Reconnects where the broker had not kept the session.", |m| m.sessions_lost.load(Ordering::Relaxed)),
        ("hazgate_mqtt_subscribe_refused_total", "counter", "Topic filters the broker refused.", |m| m.subscribe_refused.load(Ordering::Relaxed)),
        ("hazgate_mqtt_online", "gauge", "1 while connected to the broker.", |m| u64::from(m.online.load(Ordering::Relaxed))),
    ];
    for (name, kind, help, f) in per_device {
        let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (id, m) in s.mqtt.iter() {
            let _ = writeln!(o, "{name}{{device=\"{}\"}} {}", esc(id), f(m));
        }
    }
}

/// Safety actions: cut state and feedback per action, write counters, and the
/// reading → relay-acknowledged cut latency as a histogram.
fn actions(s: &ApiState, o: &mut String) {
    let st = &s.action_stats;
    let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let _ = writeln!(
        o,
        "# HELP hazgate_action_cut 1 while the safety action wants the power cut.\n# TYPE hazgate_action_cut gauge"
    );
    let view = s.actions.borrow().clone();
    for a in view.iter() {
        let _ = writeln!(
            o,
            "hazgate_action_cut{{action=\"{}\"}} {}",
            esc(&a.id),
            u8::from(a.cut)
        );
    }
    let _ = writeln!(
        o,
        "# HELP hazgate_action_ok 0 on a feedback fault (馈电异常) or an undelivered write.\n# TYPE hazgate_action_ok gauge"
    );
    for a in view.iter() {
        let _ = writeln!(
            o,
            "hazgate_action_ok{{action=\"{}\"}} {}",
            esc(&a.id),
            u8::from(a.ok)
        );
    }
    for (name, help, v) in [
        (
            "hazgate_action_cuts_total",
            "Cut writes the relays acknowledged.",
            l(&st.cuts),
        ),
        (
            "hazgate_action_restores_total",
            "Restore writes the relays acknowledged.",
            l(&st.restores),
        ),
        (
            "hazgate_action_write_failures_total",
            "Relay writes that failed (each try).",
            l(&st.write_failures),
        ),
    ] {
        let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
    }
    let name = "hazgate_action_cut_latency_seconds";
    let _ = writeln!(
        o,
        "# HELP {name} From the reading that reached the cut grade to the relay acknowledging the cut write.\n# TYPE {name} histogram"
    );
    let mut cumulative = 0;
    for (k, bound) in crate::gateway::CUT_LATENCY_BUCKETS_MS.iter().enumerate() {
        cumulative += l(&st.cut_latency_buckets[k]);
        let _ = writeln!(
            o,
            "{name}_bucket{{le=\"{}\"}} {cumulative}",
            *bound as f64 / 1000.0
        );
    }
    cumulative += l(&st.cut_latency_buckets[crate::gateway::CUT_LATENCY_BUCKETS_MS.len()]);
    let _ = writeln!(o, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
    let _ = writeln!(
        o,
        "{name}_sum {}",
        l(&st.cut_latency_sum_ms) as f64 / 1000.0
    );
    let _ = writeln!(o, "{name}_count {}", l(&st.cut_latency_count));
    let max = "hazgate_action_cut_latency_max_seconds";
    let _ = writeln!(
        o,
        "# HELP {max} Longest reading → cut acknowledged so far.\n# TYPE {max} gauge\n{max} {}",
        l(&st.cut_latency_max_ms) as f64 / 1000.0
    );
}
