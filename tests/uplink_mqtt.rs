//! The MQTT uplink against a real Mosquitto, with `mosquitto_sub` as the independent
//! receiver: every alarm transition arrives, in order, with its stable id, across a
//! broker outage; the retained status says `online`, and the last will `offline`
//! when the gateway vanishes; alarms overtake a real-time backlog; 5-minute statistics
//! with their ids, behind alarms, across a restart.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod uplink_support;

use hazgate::uplink::{MqttUplink, UplinkOptions, UplinkSink, UplinkTransport};
use std::sync::atomic::Ordering;
use std::time::Duration;
use uplink_support::mosquitto::{wait_until, Mosquitto};
use uplink_support::*;

fn opts(store: &std::path::Path, port: u16, client: &str) -> UplinkOptions {
    let mut o = UplinkOptions::new(
        store.to_owned(),
        SITE,
        UplinkTransport::Mqtt(MqttUplink {
            host: "127.0.0.1".into(),
            port,
            tls: None,
            client_id: client.into(),
            username: None,
            password: None,
            topic_prefix: "hazgate".into(),
            keep_alive_s: 5,
        }),
    );
    o.realtime = false;
    o.heartbeat_interval_ms = 0;
    o.retry_initial_ms = 20;
    o.retry_max_ms = 200;
    o
}

/// Wait until `mosquitto_sub` is subscribed: a probe it receives proves it.
async fn ready(broker: &Mosquitto, sub: &Sub, probe_topic: &str) {
    let mut n = 0;
    wait_until(Duration::from_secs(30), "mosquitto_sub subscribed", || {
        n += 1;
        if n % 40 == 1 {
            broker.publish(probe_topic, b"probe", 1);
        }
        sub.messages().iter().any(|(t, _)| t == probe_topic)
    })
    .await;
}

fn retained_status(broker: &Mosquitto) -> String {
    let out = std::process::Command::new(mosquitto::tool("mosquitto_sub", "mosquitto-clients"))
        .args(["-h", "127.0.0.1", "-p", &broker.port.to_string()])
        .args([
            "-t",
            &format!("hazgate/{SITE}/status"),
            "-C",
            "1",
            "-W",
            "5",
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_alarm_arrives_in_order_with_ids_across_a_broker_outage() {
    let mut broker = Mosquitto::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let mut store = store(&path, 2);
    let sub = Sub::start(
        broker.port,
        "province-receiver",
        &format!("hazgate/{SITE}/#"),
    );
    ready(&broker, &sub, &format!("hazgate/{SITE}/probe")).await;

    let mut seqs = add_alarms(&mut store, 1, 20);
    let (sink, task) = UplinkSink::spawn(opts(&path, broker.port, "hazgate-MINE01")).unwrap();
    wait_until(
        Duration::from_secs(30),
        "first 20 alarms acknowledged",
        || sink.status().alarms_sent.load(Ordering::Relaxed) >= 20,
    )
    .await;
    assert!(retained_status(&broker).contains("\"online\""));

    // Broker outage: alarms keep coming into the store meanwhile.
    broker.stop();
    seqs.extend(add_alarms(&mut store, 21, 15));
    wait_until(
        Duration::from_secs(30),
        "the uplink noticed the outage",
        || sink.status().send_failures.load(Ordering::Relaxed) > 0,
    )
    .await;
    assert_eq!(sink.status().alarms_sent.load(Ordering::Relaxed), 20);
    broker.run().await;
    seqs.extend(add_alarms(&mut store, 36, 5));

    let expected: Vec<String> = seqs.iter().map(|s| format!("{SITE}-a{s}")).collect();
    wait_until(
        Duration::from_secs(20),
        "all 40 alarms at mosquitto_sub",
        || dedup(&ids(&sub.messages(), "/alarm")) == expected,
    )
    .await;
    // Counter and cursor move once the PUBACKs are in and the cursor is committed,
    // which may be after the subscriber has the messages.
    wait_until(
        Duration::from_secs(20),
        "the 40 alarms acknowledged",
        || sink.status().alarms_sent.load(Ordering::Relaxed) >= 40,
    )
    .await;
    assert_eq!(sink.status().alarms_sent.load(Ordering::Relaxed), 40);
    // The cursor is durable: a second sink with the same name has nothing to resend.
    let reader = hazgate::store::Reader::open(&path).unwrap();
    assert_eq!(
        reader.cursor("uplink").unwrap().events_seq,
        *seqs.last().unwrap()
    );

    // Payloads carry what the province needs.
    let first = sub
        .messages()
        .into_iter()
        .find(|(t, _)| t.ends_with("/alarm"))
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&first.1).unwrap();
    assert_eq!(v["schema"], "hazgate.uplink/1");
    assert_eq!(v["data"]["point"], "CH4-1");
    assert_eq!(v["data"]["hazard_source"], "HS-1");
    assert_eq!(v["data"]["colour"], "red");
    assert_eq!(v["data"]["transition"], "raised");

    // The gateway vanishes (no DISCONNECT): the broker publishes the last will.
    task.abort();
    let _ = task.await;
    drop(sink);
    let mut status = String::new();
    wait_until(Duration::from_secs(30), "retained status offline", || {
        status = retained_status(&broker);
        status.contains("\"offline\"")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alarms_overtake_a_realtime_backlog_and_the_backlog_drains() {
    let broker = Mosquitto::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let mut store = store(&path, 2);
    let sub = Sub::start(broker.port, "province-rt", &format!("hazgate/{SITE}/#"));
    ready(&broker, &sub, &format!("hazgate/{SITE}/probe")).await;
    add_readings(&mut store, 1_700_000_000_000, 50_000);

    let mut o = opts(&path, broker.port, "hazgate-rt");
    o.realtime = true;
    o.realtime_batch_max = 500;
    o.realtime_interval_ms = 60_000;
    let (sink, task) = UplinkSink::spawn(o).unwrap();
    wait_until(Duration::from_secs(30), "draining started", || {
        sink.status().readings_sent.load(Ordering::Relaxed) > 0
    })
    .await;
    let seq = add_alarms(&mut store, 1, 1)[0];
    sink.wake();
    let id = format!("{SITE}-a{seq}");
    wait_until(Duration::from_secs(30), "the alarm arrived", || {
        ids(&sub.messages(), "/alarm").contains(&id)
    })
    .await;
    let at_alarm = sink.status().readings_sent.load(Ordering::Relaxed);
    assert!(
        at_alarm < 50_000,
        "the alarm waited for the whole backlog ({at_alarm} readings first)"
    );
    wait_until(Duration::from_secs(60), "backlog drained", || {
        sink.status().readings_sent.load(Ordering::Relaxed) == 50_000
    })
    .await;
    // Every reading arrived once at least, each with its own id.
    wait_until(
        Duration::from_secs(20),
        "all readings at mosquitto_sub",
        || {
            let mut seen = std::collections::HashSet::new();
            for (t, p) in sub.messages() {
                if t.ends_with("/realtime") {
                    let v: serde_json::Value = serde_json::from_str(&p).unwrap();
                    for r in v["data"].as_array().unwrap() {
                        seen.insert(r["id"].as_str().unwrap().to_owned());
                    }
                }
            }
            seen.len() == 50_000
        },
    )
    .await;
    sink.shutdown().await;
    task.await.unwrap().unwrap();
    assert!(retained_status(&broker).contains("\"offline\""));
}

/// Bursts of alarms larger than the in-flight window, committed while a backlog
/// drains: the alarm lane publishes them as they come, in store order, never more
/// than the window at once, and the cursor ends past the last one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bursts_of_alarms_beside_a_backlog_arrive_in_order_and_the_cursor_follows() {
    let broker = Mosquitto::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let mut store = store(&path, 2);
    let sub = Sub::start(broker.port, "province-burst", &format!("hazgate/{SITE}/#"));
    ready(&broker, &sub, &format!("hazgate/{SITE}/probe")).await;
    add_readings(&mut store, 1_700_000_000_000, 30_000);

    let mut o = opts(&path, broker.port, "hazgate-burst");
    o.realtime = true;
    o.realtime_batch_max = 500;
    o.realtime_interval_ms = 60_000;
    // Read 8 at a time; the window is 64 alarms in flight.
    o.alarm_batch_max = 8;
    let (sink, task) = UplinkSink::spawn(o).unwrap();
    wait_until(Duration::from_secs(30), "draining started", || {
        sink.status().readings_sent.load(Ordering::Relaxed) > 0
    })
    .await;
    let mut seqs = Vec::new();
    for burst in 0..6 {
        seqs.extend(add_alarms(&mut store, 1 + burst * 100, 100));
        sink.wake();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let want: Vec<String> = seqs.iter().map(|s| format!("{SITE}-a{s}")).collect();
    wait_until(Duration::from_secs(60), "all 600 alarms arrived", || {
        let got = ids(&sub.messages(), "/alarm");
        want.iter().all(|id| got.contains(id))
    })
    .await;
    // First arrivals are in store order.
    let mut first = Vec::new();
    for id in ids(&sub.messages(), "/alarm") {
        if !first.contains(&id) {
            first.push(id);
        }
    }
    assert_eq!(first, want, "alarms out of store order");
    let last = *seqs.last().unwrap() as u64;
    wait_until(
        Duration::from_secs(20),
        "the alarm cursor past the last",
        || sink.status().alarm_cursor.load(Ordering::Relaxed) == last,
    )
    .await;
    assert!(sink.status().alarms_sent.load(Ordering::Relaxed) >= 600);
    wait_until(Duration::from_secs(60), "backlog drained", || {
        sink.status().readings_sent.load(Ordering::Relaxed) == 30_000
    })
    .await;
    sink.shutdown().await;
    task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtts_with_ca_client_certificate_and_password() {
    let mut certs = None;
    let broker = Mosquitto::start_with(|dir| {
        mosquitto::make_certs(dir);
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
    let certs = certs.unwrap();
    let f = |name: &str| Some(certs.join(name).display().to_string());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let mut store = store(&path, 2);
    let seqs = add_alarms(&mut store, 1, 5);
    let mut o = opts(&path, broker.port, "hazgate-tls");
    if let UplinkTransport::Mqtt(m) = &mut o.transport {
        m.tls = Some(hazgate::uplink::TlsFiles {
            ca_file: f("ca.crt"),
            client_cert_file: f("client.crt"),
            client_key_file: f("client.key"),
        });
        m.username = Some("gateway".into());
        m.password = Some("s3cret".into());
    }
    let (sink, task) = UplinkSink::spawn(o).unwrap();
    wait_until(
        Duration::from_secs(30),
        "5 alarms acknowledged over TLS",
        || sink.status().alarms_sent.load(Ordering::Relaxed) == 5,
    )
    .await;
    let reader = hazgate::store::Reader::open(&path).unwrap();
    assert_eq!(reader.cursor("uplink").unwrap().events_seq, seqs[4]);
    sink.shutdown().await;
    task.await.unwrap().unwrap();

    // A wrong CA: the link never comes up, nothing is acknowledged, the cursor waits.
    add_alarms(&mut store, 6, 1);
    let mut o = opts(&path, broker.port, "hazgate-tls");
    if let UplinkTransport::Mqtt(m) = &mut o.transport {
        m.tls = Some(hazgate::uplink::TlsFiles {
            ca_file: f("client.crt"),
            client_cert_file: f("client.crt"),
            client_key_file: f("client.key"),
        });
    }
    let (sink, task) = UplinkSink::spawn(o).unwrap();
    wait_until(Duration::from_secs(30), "TLS failures counted", || {
        sink.status().send_failures.load(Ordering::Relaxed) >= 2
    })
    .await;
    assert_eq!(sink.status().alarms_sent.load(Ordering::Relaxed), 0);
    assert_eq!(reader.cursor("uplink").unwrap().events_seq, seqs[4]);
    sink.shutdown().await;
    task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statistics_arrive_with_ids_behind_alarms_and_survive_a_restart() {
    let broker = Mosquitto::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let mut store = store(&path, 2);
    let sub = Sub::start(broker.port, "province-stats", &format!("hazgate/{SITE}/#"));
    ready(&broker, &sub, &format!("hazgate/{SITE}/probe")).await;
    let payloads = |sub: &Sub| -> Vec<serde_json::Value> {
        sub.messages()
            .iter()
            .filter(|(t, _)| t.ends_with("/stats") || t.ends_with("/alarm"))
            .map(|(_, p)| serde_json::from_str(p).unwrap())
            .collect()
    };
    // Twelve windows closed during an outage, and an alarm committed after them.
    let mut expected = Vec::new();
    for k in 0..12 {
        expected.extend(add_window(&mut store, window(k), 3 + k as usize));
    }
    let alarm = add_alarms(&mut store, 1, 1)[0];
    let mut o = opts(&path, broker.port, "hazgate-stats");
    o.stats_batch_max = 5;
    o.stats_poll_interval_ms = 20;
    let (sink, task) = UplinkSink::spawn(o.clone()).unwrap();
    wait_until(Duration::from_secs(30), "24 statistics records", || {
        stat_ids(&payloads(&sub)) == expected
    })
    .await;
    let all = payloads(&sub);
    assert_eq!(
        all[0]["id"],
        format!("{SITE}-a{alarm}"),
        "the alarm went first"
    );
    assert!(all[1..].iter().all(|v| v["type"] == "stats"));
    assert_eq!(all.len(), 1 + 24usize.div_ceil(5));
    let topics: Vec<String> = sub
        .messages()
        .into_iter()
        .filter(|(t, _)| t.ends_with("/stats"))
        .map(|(t, _)| t)
        .collect();
    assert!(topics.iter().all(|t| t == &format!("hazgate/{SITE}/stats")));
    let reader = hazgate::store::Reader::open(&path).unwrap();
    wait_until(
        Duration::from_secs(30),
        "statistics cursor committed",
        || reader.stats_cursor("uplink").unwrap() == reader.last_stats_seq().unwrap(),
    )
    .await;

    // The gateway is killed; a window closes; after the restart only it goes up.
    task.abort();
    let _ = task.await;
    drop(sink);
    expected.extend(add_window(&mut store, window(12), 4));
    let (sink, task) = UplinkSink::spawn(o).unwrap();
    wait_until(Duration::from_secs(30), "window 12", || {
        dedup(&stat_ids(&payloads(&sub))) == expected
    })
    .await;
    assert_eq!(stat_ids(&payloads(&sub)), expected, "nothing re-sent");
    sink.shutdown().await;
    task.await.unwrap().unwrap();
}
