//! The MQTT sensor publisher: publishes the scenario's `[mqtt]` sensors to a broker.
//!
//! A publish round runs every `interval_ms` of real time; each sensor not inside an
//! offline window publishes its signal's value at the current scenario time. The
//! payload is JSON (`{"value":..,"ts":..,"quality":..}`, `ts` in Unix milliseconds of
//! scenario time) or the plain number. `quality` is `good`, `out_of_range` when the
//! value lies outside the signal's sensor range, or `bad` when it is not a number.
//!
//! Two tasks: the publisher (rounds) and the driver of the rumqttc event loop, joined
//! by rumqttc's bounded request channel (capacity [`REQUEST_CAPACITY`]); when it is
//! full the publisher waits, so nothing is dropped on our side. While the broker is
//! unreachable the driver retries every 500 ms and counts the errors.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, TlsConfiguration, Transport};
use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::clock::Clock;
use crate::scenario::{in_window, MqttSpec, PayloadFormat, Scenario};
use crate::signal::Signals;

/// Capacity of the request channel between the publisher and the event loop.
pub const REQUEST_CAPACITY: usize = 1024;

/// Options of a publisher run.
#[derive(Debug, Clone)]
pub struct PublisherOptions {
    /// Broker host name or address.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// MQTT client id.
    pub client_id: String,
    /// User name, if the broker wants one.
    pub username: Option<String>,
    /// Password (with `username`).
    pub password: Option<String>,
    /// PEM file of the CA that signed the broker's certificate; set = TLS.
    pub ca_file: Option<PathBuf>,
    /// Noise seed; `None` uses the scenario's seed.
    pub seed: Option<u64>,
    /// Scenario clock; `None` starts a real clock at `start_s` running at `speed`.
    pub clock: Option<Clock>,
    /// Speed factor of the real clock.
    pub speed: f64,
    /// Unix milliseconds that scenario time 0 maps to in `ts`; `None` = now minus
    /// the scenario's `start_s`.
    pub epoch_ms: Option<u64>,
    /// Override of the scenario's topic template.
    pub topic: Option<String>,
    /// Override of the scenario's payload format.
    pub payload: Option<PayloadFormat>,
    /// Override of the scenario's QoS (0 or 1).
    pub qos: Option<u8>,
    /// Override of the scenario's interval between rounds, real milliseconds.
    pub interval_ms: Option<u64>,
}

impl Default for PublisherOptions {
    fn default() -> Self {
        PublisherOptions {
            host: "127.0.0.1".into(),
            port: 1883,
            client_id: "hazgate-sim".into(),
            username: None,
            password: None,
            ca_file: None,
            seed: None,
            clock: None,
            speed: 1.0,
            epoch_ms: None,
            topic: None,
            payload: None,
            qos: None,
            interval_ms: None,
        }
    }
}

/// Errors starting a publisher.
#[derive(Debug, thiserror::Error)]
pub enum MqttError {
    /// The scenario has no `[mqtt]` section.
    #[error("the scenario has no [mqtt] section")]
    NoSensors,
    /// The QoS is not 0 or 1.
    #[error("QoS {0} is not supported (0 or 1)")]
    Qos(u8),
    /// The CA file could not be read or holds no certificate.
    #[error("CA file {path}: {reason}")]
    Ca {
        /// File.
        path: String,
        /// Why.
        reason: String,
    },
    /// TLS configuration failed.
    #[error("TLS configuration: {0}")]
    Tls(String),
}

/// Counters of a publisher.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct PublisherStatus {
    /// A CONNACK was received and no error since.
    pub connected: bool,
    /// Publish rounds done.
    pub rounds: u64,
    /// Messages handed to the client.
    pub published: u64,
    /// PUBACKs received (QoS 1).
    pub acked: u64,
    /// Connection errors.
    pub errors: u64,
    /// The last connection error.
    pub last_error: Option<String>,
}

/// The publisher (see the module docs). Start it with [`Publisher::start`].
pub struct Publisher;

/// A running publisher.
pub struct PublisherHandle {
    status: Arc<Mutex<PublisherStatus>>,
    client: AsyncClient,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The topic for a sensor: `{device}` and `{point}` replaced.
pub fn render_topic(template: &str, device: &str, point: &str) -> String {
    template
        .replace("{device}", device)
        .replace("{point}", point)
}

/// The payload for a value.
pub fn render_payload(
    format: PayloadFormat,
    value: f64,
    ts_ms: u64,
    quality: &str,
    decimals: u8,
) -> String {
    let number = if value.is_finite() {
        format!("{value:.prec$}", prec = usize::from(decimals))
    } else {
        "null".to_owned()
    };
    match format {
        PayloadFormat::Plain => number,
        PayloadFormat::Json => {
            format!(r#"{{"value":{number},"ts":{ts_ms},"quality":"{quality}"}}"#)
        }
    }
}

/// The quality a sensor reports for `value` given its range.
pub fn quality(value: f64, range_min: Option<f64>, range_max: Option<f64>) -> &'static str {
    if !value.is_finite() {
        "bad"
    } else if range_min.is_some_and(|lo| value < lo) || range_max.is_some_and(|hi| value > hi) {
        "out_of_range"
    } else {
        "good"
    }
}

fn tls_config(path: &PathBuf) -> Result<TlsConfiguration, MqttError> {
    let ca_err = |reason: String| MqttError::Ca {
        path: path.display().to_string(),
        reason,
    };
    let pem = std::fs::read(path).map_err(|e| ca_err(e.to_string()))?;
    let mut roots = rustls::RootCertStore::empty();
    let mut reader = std::io::BufReader::new(pem.as_slice());
    for cert in rustls_pemfile::certs(&mut reader) {
        let cert = cert.map_err(|e| ca_err(e.to_string()))?;
        roots.add(cert).map_err(|e| ca_err(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(ca_err("no certificate found".into()));
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| MqttError::Tls(e.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(TlsConfiguration::Rustls(Arc::new(config)))
}

impl Publisher {
    /// Connect to the broker and start publishing. Must be called inside a tokio runtime.
    pub fn start(
        scenario: &Scenario,
        options: PublisherOptions,
    ) -> Result<PublisherHandle, MqttError> {
        let spec: MqttSpec = scenario.mqtt.clone().ok_or(MqttError::NoSensors)?;
        let qos = match options.qos.unwrap_or(spec.qos) {
            0 => QoS::AtMostOnce,
            1 => QoS::AtLeastOnce,
            q => return Err(MqttError::Qos(q)),
        };
        let mut mqtt = MqttOptions::new(&options.client_id, &options.host, options.port);
        mqtt.set_keep_alive(Duration::from_secs(15));
        if let Some(user) = &options.username {
            mqtt.set_credentials(user, options.password.clone().unwrap_or_default());
        }
        if let Some(ca) = &options.ca_file {
            mqtt.set_transport(Transport::tls_with_config(tls_config(ca)?));
        }
        let (client, mut eventloop) = AsyncClient::new(mqtt, REQUEST_CAPACITY);
        let status = Arc::new(Mutex::new(PublisherStatus::default()));
        let (shutdown, rx) = watch::channel(false);

        let st = status.clone();
        let mut stop = rx.clone();
        let driver = tokio::spawn(async move {
            loop {
                let event = tokio::select! {
                    e = eventloop.poll() => e,
                    _ = stop.changed() => break,
                };
                match event {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => lock(&st).connected = true,
                    Ok(Event::Incoming(Packet::PubAck(_))) => lock(&st).acked += 1,
                    Ok(_) => {}
                    Err(e) => {
                        {
                            let mut s = lock(&st);
                            s.connected = false;
                            s.errors += 1;
                            s.last_error = Some(e.to_string());
                        }
                        tokio::select! {
                            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                            _ = stop.changed() => break,
                        }
                    }
                }
            }
        });

        let clock = options
            .clock
            .clone()
            .unwrap_or_else(|| Clock::real(scenario.start_s, options.speed));
        let epoch_ms = options.epoch_ms.unwrap_or_else(|| {
            let now_ms = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            now_ms.saturating_sub((scenario.start_s.max(0.0) * 1000.0) as u64)
        });
        let signals = Signals::new(&scenario.signals, options.seed.unwrap_or(scenario.seed));
        let template = options.topic.clone().unwrap_or(spec.topic.clone());
        let format = options.payload.unwrap_or(spec.payload);
        let interval =
            Duration::from_millis(options.interval_ms.unwrap_or(spec.interval_ms).max(1));
        let retain = spec.retain;
        let sensors: Vec<_> = spec
            .sensors
            .iter()
            .filter_map(|s| Some((s.clone(), signals.index(&s.signal)?)))
            .collect();
        let st = status.clone();
        let pub_client = client.clone();
        let mut stop = rx;
        let publisher = tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = ticker.tick() => {}
                    _ = stop.changed() => break,
                }
                let t = clock.now_s();
                let ts_ms = (epoch_ms as f64 + t * 1000.0).max(0.0) as u64;
                for (sensor, idx) in &sensors {
                    if sensor
                        .offline
                        .iter()
                        .any(|w| in_window(t, w.from_s, w.to_s))
                    {
                        continue;
                    }
                    let value = signals.value(*idx, t);
                    let (lo, hi) = signals
                        .spec(*idx)
                        .map_or((None, None), |s| (s.range_min, s.range_max));
                    let payload = render_payload(
                        format,
                        value,
                        ts_ms,
                        quality(value, lo, hi),
                        sensor.decimals,
                    );
                    let topic = render_topic(&template, &sensor.device, &sensor.point);
                    if pub_client
                        .publish(topic, qos, retain, payload)
                        .await
                        .is_ok()
                    {
                        lock(&st).published += 1;
                    }
                }
                lock(&st).rounds += 1;
            }
        });
        Ok(PublisherHandle {
            status,
            client,
            shutdown,
            tasks: vec![publisher, driver],
        })
    }
}

impl PublisherHandle {
    /// Counters now.
    pub fn status(&self) -> PublisherStatus {
        lock(&self.status).clone()
    }

    /// Disconnect and stop both tasks.
    pub async fn shutdown(self) {
        let _ = self.client.try_disconnect();
        // Give the event loop a moment to send DISCONNECT, bounded.
        let _ = tokio::time::timeout(Duration::from_millis(200), async {
            while lock(&self.status).connected && self.client.try_disconnect().is_ok() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        let _ = self.shutdown.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_and_payloads() {
        assert_eq!(
            render_topic("site/{device}/{point}", "face-1", "ch4"),
            "site/face-1/ch4"
        );
        assert_eq!(
            render_payload(PayloadFormat::Json, 0.31234, 1700, "good", 2),
            r#"{"value":0.31,"ts":1700,"quality":"good"}"#
        );
        assert_eq!(
            render_payload(PayloadFormat::Plain, 1.5, 0, "good", 1),
            "1.5"
        );
        assert_eq!(
            render_payload(PayloadFormat::Json, f64::NAN, 5, "bad", 1),
            r#"{"value":null,"ts":5,"quality":"bad"}"#
        );
        assert_eq!(quality(5.0, Some(0.0), Some(4.0)), "out_of_range");
        assert_eq!(quality(2.0, Some(0.0), Some(4.0)), "good");
    }
}
