//! The MQTT source against a real Mosquitto started by each test (free port, config
//! and persistence in a temp dir), with `mosquitto_pub` as the independent publisher.
//! Needs the Debian packages `mosquitto`, `mosquitto-clients` and `openssl`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/mosquitto.rs"]
mod mosquitto;

use hazgate::config::Config;
use hazgate::engine::EngineSpec;
use hazgate::model::{Batch, PointId, Quality, Reading, Receipt, Timestamp};
use hazgate::sources::mqtt::{self, MqttSource, MqttStats};
use mosquitto::{make_certs, wait_until, Mosquitto};
use std::collections::BTreeSet;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

const SITE: &str = r#"
[site]
id = "T"
name = "test plant"
kind = "chemical_plant"
rule_profile = "test"
"#;

/// A point on device `D`, with an optional inline `mqtt = {…}`.
fn point(id: &str, mqtt: &str) -> String {
    let binding = if mqtt.is_empty() {
        String::new()
    } else {
        format!("mqtt = {mqtt}\n")
    };
    format!(
        "[[points]]\nid = \"{id}\"\nname = \"{id}\"\nkind = \"other\"\nrange_min = -1000.0\nrange_max = 100000.0\ndevice = \"D\"\n{binding}"
    )
}

/// The MQTT source of one device `D`, as the gateway would run it.
struct Gateway {
    source: Option<MqttSource>,
    rx: mpsc::Receiver<Batch>,
    stop: watch::Sender<bool>,
    spec: EngineSpec,
    got: Vec<Reading>,
    /// `Some`: receipts are kept here instead of confirmed (a store that has not
    /// committed yet).
    held: Option<Vec<Receipt>>,
}

impl Gateway {
    fn start(device: &str, points: &[String], queue: usize) -> Gateway {
        let text = format!(
            "{SITE}\n[[devices]]\nid = \"D\"\nprotocol = \"mqtt\"\n{device}\n{}",
            points.join("\n")
        );
        let config = Config::from_toml_str(&text, "test.toml").unwrap_or_else(|e| panic!("{e}"));
        let mut spec = config.engine_spec();
        let devices = mqtt::subscriptions(&config, &mut spec);
        let (tx, rx) = mpsc::channel(queue);
        let (stop, shutdown) = watch::channel(false);
        let source = MqttSource::start(devices, tx, shutdown);
        Gateway {
            source: Some(source),
            rx,
            stop,
            spec,
            got: Vec::new(),
            held: None,
        }
    }

    fn stats(&self) -> Arc<MqttStats> {
        self.source.as_ref().unwrap().stats[0].1.clone()
    }

    fn id(&self, point: &str) -> PointId {
        PointId(self.spec.points.iter().position(|p| p.id == point).unwrap() as u32)
    }

    /// Subscribed: the broker answered our SUBSCRIBE.
    async fn ready(&self) {
        let stats = self.stats();
        wait_until(Duration::from_secs(30), "SUBACK", || {
            stats.subacks.load(Relaxed) >= 1
        })
        .await;
    }

    /// Receive batches until `cond` holds on everything received so far.
    async fn until(&mut self, what: &str, cond: impl Fn(&[Reading]) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !cond(&self.got) {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.rx.recv()).await {
                Ok(Some(batch)) => self.take(batch),
                Ok(None) => panic!("channel closed waiting for {what}"),
                Err(_) => panic!(
                    "timed out waiting for {what}; got {} readings, stats {:?}",
                    self.got.len(),
                    self.stats()
                ),
            }
        }
    }

    /// Keep a batch and, as the store would after its commit, confirm its receipt.
    fn take(&mut self, batch: Batch) {
        self.got.extend(batch.readings);
        if let Some(r) = batch.receipt {
            match &mut self.held {
                Some(held) => held.push(r),
                None => r.confirm(),
            }
        }
    }

    fn of(&self, point: PointId) -> Vec<Reading> {
        self.got
            .iter()
            .filter(|r| r.point == point)
            .copied()
            .collect()
    }

    /// Stop the source and drain what it still hands on.
    async fn stop(mut self) -> Vec<Reading> {
        let _ = self.stop.send(true); // the source may have stopped already
        let source = self.source.take().unwrap();
        let join = tokio::spawn(source.join());
        while let Some(batch) = self.rx.recv().await {
            self.take(batch);
        }
        join.await.unwrap();
        self.got
    }
}

fn values(readings: &[Reading]) -> Vec<f64> {
    readings.iter().map(|r| r.value).collect()
}

async fn mapping_and_decoders(version: u8) {
    let broker = Mosquitto::start().await;
    let device = format!(
        "broker = \"mqtt://127.0.0.1:{}\"\ntopic_prefix = \"plant/\"\npoint_topic = \"area/+/{{point}}/data\"\nclient_id = \"hazgate-test-mapping-v{version}\"\nmqtt_version = {version}\n",
        broker.port
    );
    let mut gw = Gateway::start(
        &device,
        &[
            point(
                "H2S-1",
                r#"{ topic = "h2s/TK-201", value_path = "data.v", ts_path = "data.ts", quality_path = "data.q" }"#,
            ),
            point("T-1", r#"{ topic = "h2s/TK-201", value_path = "data.t" }"#),
            point("LEL-3", ""),
            point("LEL-4", r#"{ key = "lel4", ts_path = "ts" }"#),
            point("LVL", r#"{ topic = "level/TK-201" }"#),
        ],
        64,
    );
    gw.ready().await;
    let status = gw.id("device:D");
    gw.until("status 1", |r| {
        r.iter().any(|r| r.point == status && r.value == 1.0)
    })
    .await;
    let before = Timestamp(hazgate::gateway::now().0 - 1);
    broker.publish(
        "plant/h2s/TK-201",
        br#"{"data":{"v":3.5,"t":21.0,"ts":1714521600250,"q":"good"}}"#,
        1,
    );
    broker.publish("plant/area/north/LEL-3/data", br#"{"value": 12}"#, 1);
    broker.publish(
        "plant/area/south/lel4/data",
        br#"{"value": 7.5, "ts": "2024-05-01T08:00:00+08:00"}"#,
        1,
    );
    broker.publish("plant/level/TK-201", b"14.25\n", 1);
    broker.publish("plant/h2s/TK-201", br#"{"data":{"v":99,"q":"bad"}}"#, 1);
    let (h2s, t1, lel3, lel4, lvl) = (
        gw.id("H2S-1"),
        gw.id("T-1"),
        gw.id("LEL-3"),
        gw.id("LEL-4"),
        gw.id("LVL"),
    );
    gw.until("all readings", |r| {
        r.iter().filter(|r| r.point == h2s).count() == 2 && r.iter().any(|r| r.point == lvl)
    })
    .await;
    let got = gw.of(h2s);
    assert_eq!(
        (got[0].value, got[0].ts, got[0].quality),
        (3.5, Timestamp(1_714_521_600_250), Quality::Good),
        "device timestamp kept"
    );
    assert_eq!((got[1].value, got[1].quality), (99.0, Quality::SourceBad));
    let t = gw.of(t1);
    assert_eq!(t[0].value, 21.0);
    assert!(t[0].ts >= before, "no ts_path: time of arrival");
    assert_eq!(
        t[1].quality,
        Quality::BadData,
        "no data.t in the second message"
    );
    assert_eq!(values(&gw.of(lel3)), vec![12.0]);
    let l4 = gw.of(lel4);
    assert_eq!((l4[0].value, l4[0].ts), (7.5, Timestamp(1_714_521_600_000)));
    assert_eq!(values(&gw.of(lvl)), vec![14.25]);
    let stats = gw.stats();
    assert_eq!(stats.messages.load(Relaxed), 5);
    assert_eq!(stats.source_bad.load(Relaxed), 1);
    assert_eq!(stats.wrong_type.load(Relaxed), 1);
    let stats = gw.stats();
    gw.stop().await;
    assert_eq!(
        stats.acks.load(Relaxed),
        5,
        "every QoS 1 message acknowledged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_mapping_and_decoders_mqtt_3() {
    mapping_and_decoders(3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_mapping_and_decoders_mqtt_5() {
    mapping_and_decoders(5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_counted_and_marked_bad_while_good_messages_flow() {
    let broker = Mosquitto::start().await;
    let device = format!(
        "broker = \"mqtt://127.0.0.1:{}\"\npoint_topic = \"k/{{point}}\"\nclient_id = \"hazgate-test-bad\"\n",
        broker.port
    );
    let mut gw = Gateway::start(
        &device,
        &[
            point("A", r#"{ topic = "s/a", ts_path = "ts" }"#),
            point("K", ""),
        ],
        64,
    );
    gw.ready().await;
    let a = gw.id("A");
    let huge = format!(r#"{{"value":1,"pad":"{}"}}"#, "x".repeat(100 * 1024));
    let deep = format!("{}1{}", "[".repeat(20), "]".repeat(20));
    let payloads: Vec<&[u8]> = vec![
        br#"{"value":1}"#,
        br#"{"value":"#,
        huge.as_bytes(),
        deep.as_bytes(),
        b"\xff\xfe\x00\x01",
        br#"{"value":{"v":1}}"#,
        br#"{"value":3,"ts":"soon"}"#,
        br#"{"value":2}"#,
    ];
    for p in &payloads {
        broker.publish("s/a", p, 1);
    }
    broker.publish("k/NOPE", b"5", 1);
    broker.publish("k/K", b"6", 1);
    let k = gw.id("K");
    gw.until("the last good values", |r| {
        r.iter().any(|r| r.point == a && r.value == 2.0) && r.iter().any(|r| r.point == k)
    })
    .await;
    let got = gw.of(a);
    assert_eq!(got.len(), payloads.len(), "{got:?}");
    assert_eq!((got[0].value, got[0].quality), (1.0, Quality::Good));
    for r in &got[1..7] {
        assert_eq!(r.quality, Quality::BadData, "{got:?}");
        assert!(r.value.is_nan(), "never a made-up value: {r:?}");
    }
    assert_eq!((got[7].value, got[7].quality), (2.0, Quality::Good));
    assert_eq!(values(&gw.of(k)), vec![6.0]);
    let s = gw.stats();
    for (name, counter) in [
        ("malformed", &s.malformed),
        ("too_large", &s.too_large),
        ("too_deep", &s.too_deep),
        ("not_utf8", &s.not_utf8),
        ("wrong_type", &s.wrong_type),
        ("bad_timestamp", &s.bad_timestamp),
        ("unknown_topic", &s.unknown_topic),
    ] {
        assert_eq!(counter.load(Relaxed), 1, "{name}");
    }
    assert_eq!(s.rejected(), 7);
    assert_eq!(s.messages.load(Relaxed), 10);
    gw.stop().await;
}

fn seq_device(port: u16, client_id: &str, extra: &str) -> String {
    format!("broker = \"mqtt://127.0.0.1:{port}\"\nclient_id = \"{client_id}\"\n{extra}")
}

fn seq_lines(range: std::ops::Range<u32>) -> Vec<String> {
    range.map(|i| format!(r#"{{"value":{i}}}"#)).collect()
}

fn distinct(readings: &[Reading], point: PointId) -> BTreeSet<u32> {
    readings
        .iter()
        .filter(|r| r.point == point && r.quality == Quality::Good)
        .map(|r| r.value as u32)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_session_delivers_what_was_sent_while_stopped() {
    let broker = Mosquitto::start().await;
    let device = seq_device(broker.port, "hazgate-test-persist", "");
    let points = [point("SEQ", r#"{ topic = "seq" }"#)];
    let gw = Gateway::start(&device, &points, 64);
    gw.ready().await;
    let seq = gw.id("SEQ");
    gw.stop().await;
    // hazgate is stopped: the broker queues for its session.
    broker.publish_lines("seq", &seq_lines(0..500), 1);
    let mut gw = Gateway::start(&device, &points, 64);
    gw.until("500 queued messages", |r| distinct(r, seq).len() == 500)
        .await;
    assert_eq!(distinct(&gw.got, seq), (0..500).collect());
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restart_mid_stream_loses_nothing_and_resubscribes() {
    let mut broker = Mosquitto::start().await;
    let device = seq_device(broker.port, "hazgate-test-restart", "");
    // A queue of one batch: the test does not read at first, so the source waits
    // and the broker holds most of the stream, unacknowledged.
    let mut gw = Gateway::start(&device, &[point("SEQ", r#"{ topic = "seq" }"#)], 1);
    gw.ready().await;
    let seq = gw.id("SEQ");
    broker.publish_lines("seq", &seq_lines(0..1000), 1);
    let stats = gw.stats();
    gw.until("part of the stream", |r| distinct(r, seq).len() >= 100)
        .await;
    let before = distinct(&gw.got, seq).len();
    assert!(before < 1000, "the restart must come mid-stream");
    broker.restart().await;
    gw.until("the stream before the restart", |r| {
        distinct(r, seq).len() == 1000
    })
    .await;
    // Resubscribed: new messages after the restart arrive too.
    wait_until(Duration::from_secs(30), "reconnected", || {
        stats.connects.load(Relaxed) >= 2 && stats.subacks.load(Relaxed) >= 2
    })
    .await;
    broker.publish_lines("seq", &seq_lines(1000..1500), 1);
    gw.until("the stream after the restart", |r| {
        distinct(r, seq).len() == 1500
    })
    .await;
    assert_eq!(distinct(&gw.got, seq), (0..1500).collect());
    assert!(stats.sessions_resumed.load(Relaxed) >= 1, "{stats:?}");
    assert_eq!(stats.sessions_lost.load(Relaxed), 0);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_point_reads_0_while_the_broker_is_gone_and_1_when_back() {
    let mut broker = Mosquitto::start().await;
    let device = seq_device(
        broker.port,
        "hazgate-test-status",
        "offline_after_ms = 300\n",
    );
    let mut gw = Gateway::start(&device, &[point("P", r#"{ topic = "p" }"#)], 64);
    let (status, p) = (gw.id("device:D"), gw.id("P"));
    let stat = move |r: &[Reading]| -> Vec<f64> {
        r.iter()
            .filter(|r| r.point == status)
            .map(|r| r.value)
            .collect()
    };
    gw.until("online", |r| stat(r) == [1.0]).await;
    broker.stop();
    gw.until("offline", |r| stat(r) == [1.0, 0.0]).await;
    let failed = gw.of(p);
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].quality, Quality::CommFail);
    assert!(failed[0].value.is_nan());
    broker.restart().await;
    gw.until("back online", |r| stat(r) == [1.0, 0.0, 1.0])
        .await;
    gw.ready().await;
    broker.publish("p", b"4.5", 1);
    gw.until("a value after the outage", |r| {
        r.iter().any(|r| r.point == p && r.value == 4.5)
    })
    .await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_ca_client_certificate_and_password() {
    let mut certs = None;
    let broker = Mosquitto::start_with(|dir| {
        make_certs(dir);
        let passwd = mosquitto::tool("mosquitto_passwd", "mosquitto");
        let ok = std::process::Command::new(passwd)
            .args(["-b", "-c"])
            .arg(dir.join("passwd"))
            .args(["gateway", "s3cret"])
            .status()
            .unwrap();
        assert!(ok.success());
        certs = Some(dir.to_path_buf());
        format!(
            "allow_anonymous false\npassword_file {}\ncafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate true\n",
            dir.join("passwd").display(),
            dir.join("ca.crt").display(),
            dir.join("server.crt").display(),
            dir.join("server.key").display(),
        )
    })
    .await;
    let dir = certs.unwrap();
    let f = |name: &str| dir.join(name).display().to_string();
    let tls_device = |client: &str, cert: bool| {
        let mut d = format!(
            "broker = \"mqtts://127.0.0.1:{}\"\nclient_id = \"{client}\"\nusername = \"gateway\"\npassword = \"s3cret\"\nca_file = \"{}\"\nmqtt_version = 5\n",
            broker.port,
            f("ca.crt")
        );
        if cert {
            d += &format!(
                "client_cert_file = \"{}\"\nclient_key_file = \"{}\"\n",
                f("client.crt"),
                f("client.key")
            );
        }
        d
    };
    let mut gw = Gateway::start(
        &tls_device("hazgate-test-tls", true),
        &[point("P", r#"{ topic = "tls/p" }"#)],
        64,
    );
    gw.ready().await;
    let (ca, crt, key) = (f("ca.crt"), f("client.crt"), f("client.key"));
    broker.publish_with(
        "tls/p",
        b"7.25",
        1,
        &[
            "--cafile", &ca, "--cert", &crt, "--key", &key, "-u", "gateway", "-P", "s3cret",
        ],
    );
    let p = gw.id("P");
    gw.until("a value over TLS", |r| {
        r.iter().any(|r| r.point == p && r.value == 7.25)
    })
    .await;
    gw.stop().await;

    // Without a client certificate the broker refuses; counted, not fatal.
    let gw = Gateway::start(
        &tls_device("hazgate-test-tls-nocert", false),
        &[point("P", r#"{ topic = "tls/p" }"#)],
        64,
    );
    let stats = gw.stats();
    wait_until(
        Duration::from_secs(30),
        "refused connection counted",
        || stats.connection_errors.load(Relaxed) >= 1,
    )
    .await;
    assert_eq!(stats.connects.load(Relaxed), 0);
    gw.stop().await;
}

/// A source whose store has not committed yet (receipts held), subscribed.
async fn start_unstored(device: &str, points: &[String]) -> Gateway {
    let mut gw = Gateway::start(device, points, 64);
    gw.held = Some(Vec::new());
    gw.ready().await;
    gw
}

/// A broker and a source of point `SEQ` whose store has not committed yet, once
/// messages 0..n arrived there — none of them acknowledged.
async fn unstored_messages(
    client_id: &str,
    points: &[String],
    n: u32,
) -> (Mosquitto, String, Gateway, PointId) {
    let broker = Mosquitto::start().await;
    let device = seq_device(broker.port, client_id, "");
    let mut gw = start_unstored(&device, points).await;
    let seq = gw.id("SEQ");
    broker.publish_lines("seq", &seq_lines(0..n), 1);
    gw.until("the messages", |r| distinct(r, seq).len() == n as usize)
        .await;
    let stats = gw.stats();
    assert_eq!(stats.acks.load(Relaxed), 0, "{stats:?}");
    (broker, device, gw, seq)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_is_acknowledged_only_once_its_batch_is_stored() {
    let points = [point("SEQ", r#"{ topic = "seq" }"#)];
    let (broker, device, gw, seq) = unstored_messages("hazgate-test-receipts", &points, 5).await;
    // Handed on but not stored: nothing acknowledged, however long we wait.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stats = gw.stats();
    assert_eq!(stats.acks.load(Relaxed), 0, "{stats:?}");
    // Stopped before the store confirms: the broker still holds the five and sends
    // them again to the next run.
    gw.stop().await;
    let mut gw = Gateway::start(&device, &points, 64);
    gw.until("the 5 messages again", |r| distinct(r, seq).len() == 5)
        .await;
    let stats = gw.stats();
    wait_until(Duration::from_secs(10), "5 PUBACKs", || {
        stats.acks.load(Relaxed) >= 5
    })
    .await;
    assert_eq!(stats.redelivered.load(Relaxed), 5, "{stats:?}");
    gw.stop().await;

    // Confirmed later: acknowledged then, and not sent again.
    let mut gw = start_unstored(&device, &points).await;
    broker.publish_lines("seq", &seq_lines(5..8), 1);
    gw.until("3 more", |r| distinct(r, seq).len() == 3).await;
    let stats = gw.stats();
    assert_eq!(stats.acks.load(Relaxed), 0, "{stats:?}");
    for r in gw.held.take().unwrap() {
        r.confirm();
    }
    wait_until(Duration::from_secs(10), "3 PUBACKs", || {
        stats.acks.load(Relaxed) >= 3
    })
    .await;
    gw.stop().await;
    nothing_comes_again(&device, &points, seq, "sent again after PUBACK").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_stop_acknowledges_what_the_store_confirms_and_nothing_comes_again() {
    let points = [point("SEQ", r#"{ topic = "seq" }"#)];
    let (_broker, device, mut gw, seq) =
        unstored_messages("hazgate-test-clean-stop", &points, 20).await;
    let stats = gw.stats();
    // Stop; the store confirms only after the stop began.
    let _ = gw.stop.send(true);
    tokio::time::sleep(Duration::from_millis(100)).await;
    for r in gw.held.take().unwrap() {
        r.confirm();
    }
    gw.stop().await;
    assert_eq!(stats.acks.load(Relaxed), 20, "{stats:?}");
    nothing_comes_again(&device, &points, seq, "sent again after a clean stop").await;
}

/// The next run with the same session gets none of `seq`'s messages again.
async fn nothing_comes_again(device: &str, points: &[String], seq: PointId, what: &str) {
    let gw = Gateway::start(device, points, 64);
    gw.ready().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got = gw.stop().await;
    assert_eq!(distinct(&got, seq), BTreeSet::new(), "{what}");
}

/// Read one MQTT packet from a raw socket: (first byte, body).
async fn read_packet(sock: &mut tokio::net::TcpStream) -> (u8, Vec<u8>) {
    use tokio::io::AsyncReadExt;
    let first = sock.read_u8().await.unwrap();
    let (mut len, mut shift) = (0usize, 0);
    loop {
        let b = sock.read_u8().await.unwrap();
        len |= usize::from(b & 0x7f) << shift;
        shift += 7;
        if b & 0x80 == 0 {
            break;
        }
    }
    let mut body = vec![0; len];
    sock.read_exact(&mut body).await.unwrap();
    (first, body)
}

/// The last message of a read followed, in the same read, by another packet: the
/// batch must go on at once, not wait for a next message (which a broker whose
/// in-flight window is full never sends). Mosquitto does this only by chance of
/// timing (a SUBACK right behind a session's queued messages), so a raw MQTT peer on
/// a loopback socket writes CONNACK, one QoS 1 PUBLISH and a PINGRESP in one write,
/// then waits for the PUBACK.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_followed_by_another_packet_in_one_read_is_not_held_back() {
    use tokio::io::AsyncWriteExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let peer = tokio::spawn(async move {
        let (mut sock, _) = listener.accept().await.unwrap();
        let (connect, _) = read_packet(&mut sock).await;
        assert_eq!(connect >> 4, 1, "CONNECT first");
        let (topic, payload) = (b"seq".as_slice(), br#"{"value":42}"#.as_slice());
        let mut out = vec![0x20, 0x02, 0x01, 0x00]; // CONNACK, session present
        out.push(0x32); // PUBLISH, QoS 1
        out.push((2 + topic.len() + 2 + payload.len()) as u8);
        out.extend((topic.len() as u16).to_be_bytes());
        out.extend(topic);
        out.extend(7u16.to_be_bytes()); // packet id
        out.extend(payload);
        out.extend([0xD0, 0x00]); // PINGRESP
        sock.write_all(&out).await.unwrap();
        // SUBSCRIBE may come first (never answered); then the PUBACK.
        loop {
            let (kind, body) = read_packet(&mut sock).await;
            if kind >> 4 == 4 {
                return body;
            }
        }
    });
    let device = seq_device(port, "hazgate-test-raw", "");
    let mut gw = Gateway::start(&device, &[point("SEQ", r#"{ topic = "seq" }"#)], 64);
    let seq = gw.id("SEQ");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !gw.got.iter().any(|r| r.point == seq && r.value == 42.0) {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, gw.rx.recv()).await {
            Ok(Some(batch)) => gw.take(batch),
            _ => panic!("the reading was held back: {:?}", gw.stats()),
        }
    }
    let puback = tokio::time::timeout(Duration::from_secs(5), peer)
        .await
        .expect("no PUBACK")
        .unwrap();
    assert_eq!(puback, 7u16.to_be_bytes());
    gw.stop().await;
}
