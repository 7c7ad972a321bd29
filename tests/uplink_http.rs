//! The HTTP uplink against a receiver written here: SM4-encrypted bodies with
//! appid/appsecret headers, retries through a forced outage (503, then connection
//! refused), every alarm delivered in order with its id; KJ text bodies; 5-minute
//! statistics once their window is over, across a restart; HTTPS with a CA file the
//! test makes (openssl CLI), with and without SM4 and a client certificate; a wrong CA
//! is a clear error, retried, never a drop.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod uplink_support;

use hazgate::uplink::sm4::{base64_decode, Sm4Key};
use hazgate::uplink::{Format, HttpUplink, TlsFiles, UplinkOptions, UplinkSink, UplinkTransport};
use std::sync::atomic::Ordering;
use std::time::Duration;
use uplink_support::mosquitto::wait_until;
use uplink_support::*;

const KEY: &str = "0123456789abcdeffedcba9876543210";
const IV: &str = "00112233445566778899aabbccddeeff";

fn opts(store: &std::path::Path, url: String, sm4: bool) -> UplinkOptions {
    let mut o = UplinkOptions::new(
        store.to_owned(),
        SITE,
        UplinkTransport::Http(HttpUplink {
            url,
            tls: TlsFiles::default(),
            appid: Some("app-123".into()),
            appsecret: Some("s3cret".into()),
            sm4: sm4.then(|| Sm4Key::from_hex(KEY, IV).unwrap()),
            request_timeout_ms: 2_000,
        }),
    );
    o.realtime = false;
    o.heartbeat_interval_ms = 0;
    o.retry_initial_ms = 10;
    o.retry_max_ms = 100;
    o
}

/// Decrypt an accepted body into the message JSON.
fn open(r: &Received) -> serde_json::Value {
    let outer: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(outer["appid"], "app-123");
    let c = base64_decode(outer["data"].as_str().unwrap()).unwrap();
    let plain = Sm4Key::from_hex(KEY, IV).unwrap().decrypt(&c).unwrap();
    serde_json::from_slice(&plain).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sm4_alarms_survive_a_forced_outage_in_order_with_ids() {
    let mut rx = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let mut store = store(&path, 2);
    let mut seqs = add_alarms(&mut store, 1, 10);
    let (sink, task) = UplinkSink::spawn(opts(&path, rx.url(), true)).unwrap();
    wait_until(Duration::from_secs(30), "10 alarms accepted", || {
        rx.accepted().len() >= 10
    })
    .await;

    // Outage 1: the platform answers 503.
    rx.failing.store(true, Ordering::SeqCst);
    seqs.extend(add_alarms(&mut store, 11, 5));
    wait_until(Duration::from_secs(30), "503s retried", || {
        sink.status().send_failures.load(Ordering::Relaxed) >= 3
    })
    .await;
    // Outage 2: nobody listens.
    rx.stop();
    let failures = sink.status().send_failures.load(Ordering::Relaxed);
    seqs.extend(add_alarms(&mut store, 16, 5));
    wait_until(
        Duration::from_secs(30),
        "refused connections retried",
        || sink.status().send_failures.load(Ordering::Relaxed) >= failures + 3,
    )
    .await;
    rx.failing.store(false, Ordering::SeqCst);
    rx.restart().await;

    let expected: Vec<String> = seqs.iter().map(|s| format!("{SITE}-a{s}")).collect();
    wait_until(Duration::from_secs(20), "all 20 alarms accepted", || {
        let got: Vec<String> = rx
            .accepted()
            .iter()
            .map(|r| open(r)["id"].as_str().unwrap().to_owned())
            .collect();
        dedup(&got) == expected
    })
    .await;
    let all = rx.accepted();
    for r in &all {
        assert_eq!(r.header("appid"), Some("app-123"));
        assert_eq!(r.header("appsecret"), Some("s3cret"));
        let m = open(r);
        assert_eq!(r.header("x-message-id"), m["id"].as_str());
        assert_eq!(m["type"], "alarm");
        assert_eq!(m["data"]["grade_name"], "断电");
    }
    // The counter moves once the cursor is committed, after the receiver's answer.
    wait_until(Duration::from_secs(30), "the twenty alarms counted", || {
        sink.status().alarms_sent.load(Ordering::Relaxed) >= 20
    })
    .await;
    sink.shutdown().await;
    task.await.unwrap().unwrap();
    assert_eq!(sink.status().alarms_sent.load(Ordering::Relaxed), 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kj_text_bodies_carry_alarms_and_realtime_records() {
    let rx = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let mut store = store(&path, 2);
    add_alarms(&mut store, 1, 2);
    add_readings(&mut store, 1_700_000_000_000, 25);
    let mut o = opts(&path, rx.url(), false);
    o.format = Format::KjText;
    o.realtime = true;
    o.realtime_batch_max = 10;
    o.realtime_interval_ms = 60_000;
    o.heartbeat_interval_ms = 60_000;
    let (sink, task) = UplinkSink::spawn(o).unwrap();
    wait_until(
        Duration::from_secs(30),
        "alarms and readings accepted",
        || {
            sink.status().readings_sent.load(Ordering::Relaxed) == 25
                && sink.status().heartbeats_sent.load(Ordering::Relaxed) == 1
        },
    )
    .await;
    let bodies: Vec<String> = rx
        .accepted()
        .iter()
        .map(|r| String::from_utf8(r.body.clone()).unwrap())
        .collect();
    // Alarms first, then the heartbeat, then real-time batches of at most 10.
    assert!(bodies[0].starts_with("KJ;GJXX|MINE01-a1;MINE01;CH4-1;ch4;HS-1;value;raised;"));
    assert!(bodies[1].starts_with("KJ;GJXX|MINE01-a2;"));
    assert!(bodies[2].starts_with("KJ;XTXT|"));
    let rt: Vec<&String> = bodies
        .iter()
        .filter(|b| b.starts_with("KJ;AQSS|"))
        .collect();
    assert_eq!(rt.len(), 3);
    for b in &bodies {
        assert!(b.ends_with("~‖"), "{b}");
    }
    let records: usize = rt.iter().map(|b| b.matches('~').count()).sum();
    assert_eq!(records, 25);
    assert!(rt[0].contains("~MINE01-r2;MINE01;CH4-1;ch4;"));
    assert_eq!(
        rx.accepted()[0].header("content-type"),
        Some("text/plain; charset=utf-8")
    );
    sink.shutdown().await;
    task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_sink_resumes_from_its_cursor_without_loss() {
    let rx = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let mut store = store(&path, 2);
    let mut seqs = add_alarms(&mut store, 1, 5);
    let (sink, task) = UplinkSink::spawn(opts(&path, rx.url(), false)).unwrap();
    wait_until(Duration::from_secs(30), "5 alarms accepted", || {
        sink.status().alarms_sent.load(Ordering::Relaxed) == 5
    })
    .await;
    // Killed, not shut down: the cursor is what was committed.
    task.abort();
    let _ = task.await;
    drop(sink);
    seqs.extend(add_alarms(&mut store, 6, 5));
    let (sink, task) = UplinkSink::spawn(opts(&path, rx.url(), false)).unwrap();
    assert_eq!(
        sink.status().alarm_cursor.load(Ordering::Relaxed),
        seqs[4] as u64
    );
    let expected: Vec<String> = seqs.iter().map(|s| format!("{SITE}-a{s}")).collect();
    wait_until(Duration::from_secs(30), "all 10 alarms accepted", || {
        let got: Vec<String> = rx
            .accepted()
            .iter()
            .map(|r| {
                let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
                v["id"].as_str().unwrap().to_owned()
            })
            .collect();
        dedup(&got) == expected
    })
    .await;
    // Plain JSON body when SM4 is off.
    assert_eq!(
        rx.accepted()[0].header("content-type"),
        Some("application/json")
    );
    sink.shutdown().await;
    task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statistics_go_up_once_a_window_is_over_and_survive_a_restart() {
    let rx = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let mut store = store(&path, 2);
    let mut o = opts(&path, rx.url(), false);
    o.stats_poll_interval_ms = 20;
    o.heartbeat_interval_ms = 100;
    let bodies = |rx: &Receiver| -> Vec<serde_json::Value> {
        rx.accepted()
            .iter()
            .map(|r| serde_json::from_slice(&r.body).unwrap())
            .collect()
    };
    // Readings of window 0, which is still open: no statistics yet.
    let w0 = window(0);
    let rs: Vec<hazgate::model::Reading> = (0..4)
        .map(|i| hazgate::model::Reading {
            point: hazgate::model::PointId(i % 2),
            ts: hazgate::model::Timestamp(w0 + 1 + i64::from(i)),
            value: 0.5,
            quality: hazgate::model::Quality::Good,
        })
        .collect();
    store.write_readings(&rs).unwrap();
    let (sink, task) = UplinkSink::spawn(o.clone()).unwrap();
    wait_until(Duration::from_secs(30), "three heartbeats", || {
        sink.status().heartbeats_sent.load(Ordering::Relaxed) >= 3
    })
    .await;
    assert!(stat_ids(&bodies(&rx)).is_empty());

    // The window is over while the sink is stopped, and an alarm is raised at the same
    // time: once it is back, both points' statistics arrive after the alarm (alarms
    // first). Both wait in the store before the sink looks, so the order is the
    // sink's choice, not a race with this test.
    task.abort();
    let _ = task.await;
    drop(sink);
    store
        .close_buckets(hazgate::model::Timestamp(w0 + hazgate::store::BUCKET_MS))
        .unwrap();
    let mut expected: Vec<String> = (0..2).map(|p| format!("{SITE}-m{w0}-CH4-{p}-n2")).collect();
    let seq = add_alarms(&mut store, 1, 1)[0];
    let (sink, task) = UplinkSink::spawn(o.clone()).unwrap();
    wait_until(Duration::from_secs(30), "window 0 statistics", || {
        stat_ids(&bodies(&rx)) == expected
    })
    .await;
    let all = bodies(&rx);
    let alarm_at = all
        .iter()
        .position(|v| v["type"] == "alarm")
        .unwrap_or_else(|| panic!("no alarm among the bodies received: {all:?}"));
    let stats_at = all.iter().position(|v| v["type"] == "stats").unwrap();
    assert!(alarm_at < stats_at, "the alarm went first");
    assert_eq!(all[alarm_at]["id"], format!("{SITE}-a{seq}"));
    let rec = &all[stats_at]["data"][0];
    assert_eq!(rec["point"], "CH4-0");
    assert_eq!(rec["hazard_source"], "HS-0");
    assert_eq!(rec["window_start"], w0);
    assert_eq!(rec["window_end"], w0 + hazgate::store::BUCKET_MS);
    assert_eq!(
        (rec["count"].as_u64(), rec["avg"].as_f64()),
        (Some(2), Some(0.5))
    );
    assert_eq!(
        rx.accepted()[stats_at].header("x-message-id"),
        all[stats_at]["id"].as_str()
    );
    let reader = hazgate::store::Reader::open(&path).unwrap();
    wait_until(
        Duration::from_secs(30),
        "statistics cursor committed",
        || reader.stats_cursor("uplink").unwrap() == reader.last_stats_seq().unwrap(),
    )
    .await;

    // Killed; two more windows close meanwhile; the restarted sink sends only them.
    task.abort();
    let _ = task.await;
    drop(sink);
    expected.extend(add_window(&mut store, window(1), 30));
    expected.extend(add_window(&mut store, window(2), 5));
    let (sink, task) = UplinkSink::spawn(o).unwrap();
    wait_until(Duration::from_secs(30), "windows 1 and 2", || {
        dedup(&stat_ids(&bodies(&rx))) == expected
    })
    .await;
    assert_eq!(
        stat_ids(&bodies(&rx)),
        expected,
        "nothing sent twice across the restart"
    );
    // The counter moves once the cursor is committed, after the receiver's answer.
    wait_until(
        Duration::from_secs(30),
        "the four statistics counted",
        || sink.status().stats_sent.load(Ordering::Relaxed) >= 4,
    )
    .await;
    sink.shutdown().await;
    task.await.unwrap().unwrap();
    assert_eq!(sink.status().stats_sent.load(Ordering::Relaxed), 4);
}

fn cert_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    uplink_support::mosquitto::make_certs(dir.path());
    dir
}

fn with_tls(mut o: UplinkOptions, tls: TlsFiles) -> UplinkOptions {
    if let UplinkTransport::Http(h) = &mut o.transport {
        h.tls = tls;
    }
    o
}

fn file(dir: &tempfile::TempDir, name: &str) -> Option<String> {
    Some(dir.path().join(name).display().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_the_configured_ca_with_and_without_sm4_and_a_client_certificate() {
    let certs = cert_dir();
    let ca_only = TlsFiles {
        ca_file: file(&certs, "ca.crt"),
        ..TlsFiles::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let mut store = store(&path, 2);
    let seqs = add_alarms(&mut store, 1, 3);

    // Plain JSON over HTTPS, server certificate checked against the CA file.
    let rx = Receiver::start_tls(server_tls(certs.path(), false)).await;
    assert!(rx.url().starts_with("https://127.0.0.1:"));
    let (sink, task) =
        UplinkSink::spawn(with_tls(opts(&path, rx.url(), false), ca_only.clone())).unwrap();
    wait_until(Duration::from_secs(30), "3 alarms over https", || {
        rx.accepted().len() >= 3
    })
    .await;
    let got: Vec<String> = rx
        .accepted()
        .iter()
        .map(|r| {
            let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
            v["id"].as_str().unwrap().to_owned()
        })
        .collect();
    let expected: Vec<String> = seqs.iter().map(|s| format!("{SITE}-a{s}")).collect();
    assert_eq!(dedup(&got), expected);
    sink.shutdown().await;
    task.await.unwrap().unwrap();

    // SM4 bodies to a receiver that requires a client certificate.
    let rx = Receiver::start_tls(server_tls(certs.path(), true)).await;
    let mut o = opts(&path, rx.url(), true);
    o.name = "uplink-sm4".into();
    let (sink, task) = UplinkSink::spawn(with_tls(
        o.clone(),
        TlsFiles {
            ca_file: file(&certs, "ca.crt"),
            client_cert_file: file(&certs, "client.crt"),
            client_key_file: file(&certs, "client.key"),
        },
    ))
    .unwrap();
    wait_until(Duration::from_secs(30), "3 SM4 alarms over https", || {
        rx.accepted().len() >= 3
    })
    .await;
    let got: Vec<String> = rx
        .accepted()
        .iter()
        .map(|r| open(r)["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(dedup(&got), expected);
    sink.shutdown().await;
    task.await.unwrap().unwrap();

    // Without the client certificate that receiver refuses the handshake.
    o.name = "uplink-no-client-cert".into();
    let (sink, task) = UplinkSink::spawn(with_tls(o, ca_only)).unwrap();
    wait_until(
        Duration::from_secs(30),
        "refused handshakes retried",
        || sink.status().send_failures.load(Ordering::Relaxed) >= 2,
    )
    .await;
    assert_eq!(sink.status().alarms_sent.load(Ordering::Relaxed), 0);
    sink.shutdown().await;
    task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_a_wrong_ca_is_a_clear_error_retried_and_nothing_is_dropped() {
    let certs = cert_dir();
    let other = cert_dir();
    let rx = Receiver::start_tls(server_tls(certs.path(), false)).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let mut store = store(&path, 2);
    let seqs = add_alarms(&mut store, 1, 4);
    let wrong = TlsFiles {
        ca_file: file(&other, "ca.crt"),
        ..TlsFiles::default()
    };

    // The error names the certificate problem.
    let o = with_tls(opts(&path, rx.url(), true), wrong.clone());
    let UplinkTransport::Http(h) = &o.transport else {
        unreachable!()
    };
    let mut link = hazgate::uplink::http::HttpLink::new(h, true).unwrap();
    let msg = hazgate::uplink::Message {
        id: "probe".into(),
        kind: hazgate::uplink::MessageKind::Heartbeat,
        payload: b"{}".to_vec(),
    };
    let (accepted, err) = link.send(&[msg]).await.unwrap_err();
    assert_eq!(accepted, 0);
    let text = err.to_string();
    // (The other CA has the same name, so rustls finds it and the signature fails.)
    assert!(text.contains("invalid peer certificate"), "{text}");

    // The sink retries and keeps its cursor: nothing is acknowledged, nothing lost.
    let (sink, task) = UplinkSink::spawn(o.clone()).unwrap();
    wait_until(Duration::from_secs(30), "failed handshakes retried", || {
        sink.status().send_failures.load(Ordering::Relaxed) >= 3
    })
    .await;
    assert_eq!(sink.status().alarms_sent.load(Ordering::Relaxed), 0);
    assert!(rx.accepted().is_empty());
    assert!(rx.tls_failures.load(Ordering::SeqCst) >= 3);
    let reader = hazgate::store::Reader::open(&path).unwrap();
    assert_eq!(reader.cursor("uplink").unwrap().events_seq, 0);
    sink.shutdown().await;
    task.await.unwrap().unwrap();

    // With the right CA every alarm goes, in order.
    let right = TlsFiles {
        ca_file: file(&certs, "ca.crt"),
        ..TlsFiles::default()
    };
    let (sink, task) = UplinkSink::spawn(with_tls(o, right)).unwrap();
    let expected: Vec<String> = seqs.iter().map(|s| format!("{SITE}-a{s}")).collect();
    wait_until(Duration::from_secs(30), "all alarms after the fix", || {
        let got: Vec<String> = rx
            .accepted()
            .iter()
            .map(|r| open(r)["id"].as_str().unwrap().to_owned())
            .collect();
        dedup(&got) == expected
    })
    .await;
    sink.shutdown().await;
    task.await.unwrap().unwrap();
}
