//! 429 and 503 with `Retry-After` against a tiny hand-written HTTP responder (real
//! databases do not answer 429 on demand): the sink waits as told, then delivers every
//! line once, gzip-compressed, with its token.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use hazgate::sinks::influxdb::{InfluxApi, InfluxSink};
use hazgate::store::{PointMeta, Store, StoreOptions};
use std::io::Read;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::{reading, sink_opts, wait_for};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Debug)]
struct Seen {
    at: Instant,
    head: String,
    body: String,
}

async fn serve(listener: tokio::net::TcpListener, seen: Arc<Mutex<Vec<Seen>>>) {
    let statuses = ["503 Service Unavailable", "429 Too Many Requests"];
    let mut n = 0usize;
    loop {
        let (mut sock, _) = listener.accept().await.unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 8192];
        let (head, body) = loop {
            // A connection closed before a whole request arrived (the client gave up,
            // e.g. its timeout under load) is no request: wait for the next one.
            let k = sock.read(&mut chunk).await.unwrap_or(0);
            if k == 0 {
                break (String::new(), Vec::new());
            }
            buf.extend_from_slice(&chunk[..k]);
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map(|v| v.trim().parse().unwrap())
                    .unwrap_or(0);
                while buf.len() < end + 4 + len {
                    let k = sock.read(&mut chunk).await.unwrap_or(0);
                    if k == 0 {
                        break;
                    }
                    buf.extend_from_slice(&chunk[..k]);
                }
                if buf.len() < end + 4 + len {
                    break (String::new(), Vec::new());
                }
                break (head, buf[end + 4..end + 4 + len].to_vec());
            }
        };
        if head.is_empty() {
            continue;
        }
        let mut text = String::new();
        flate2::read::GzDecoder::new(&body[..])
            .read_to_string(&mut text)
            .unwrap();
        seen.lock().unwrap().push(Seen {
            at: Instant::now(),
            head,
            body: text,
        });
        let resp = if n < statuses.len() {
            format!(
                "HTTP/1.1 {}\r\nRetry-After: 1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                statuses[n]
            )
        } else {
            "HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n".to_owned()
        };
        n += 1;
        sock.write_all(resp.as_bytes()).await.unwrap();
        let _ = sock.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_is_honoured_on_503_and_429() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    tokio::spawn(serve(listener, seen.clone()));

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let mut store = Store::open(&StoreOptions {
        path: path.clone(),
        store_every_reading: true,
        ..StoreOptions::default()
    })
    .unwrap();
    store
        .register_points(&[PointMeta {
            id: "LEVEL-1".into(),
            kind: "water_level".into(),
            unit: Some("m".into()),
            site: None,
            hazard_source: None,
            deadband: None,
        }])
        .unwrap();
    store
        .write_readings(
            &(0..10)
                .map(|i| reading(0, 1_000 + i, i as f64))
                .collect::<Vec<_>>(),
        )
        .unwrap();

    // Backoff alone would retry after ~10 ms; Retry-After says 1 s.
    let mut opts = sink_opts(
        &path,
        url,
        InfluxApi::V2 {
            org: "o".into(),
            bucket: "b".into(),
            token: "abc".into(),
        },
    );
    opts.retry_initial_ms = 10;
    opts.retry_max_ms = 5_000;
    let (sink, task) = InfluxSink::spawn(opts).unwrap();
    let status = sink.status().clone();
    wait_for(
        Duration::from_secs(20),
        "delivery after two refusals",
        || {
            let s = status.clone();
            async move { s.cursor_seq.load(std::sync::atomic::Ordering::Relaxed) >= 10 }
        },
    )
    .await;
    sink.shutdown().await;
    task.await.unwrap().unwrap();

    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert!(
        seen[1].at - seen[0].at >= Duration::from_millis(950),
        "503 Retry-After ignored"
    );
    assert!(
        seen[2].at - seen[1].at >= Duration::from_millis(950),
        "429 Retry-After ignored"
    );
    for s in seen.iter() {
        assert!(
            s.head
                .starts_with("post /api/v2/write?org=o&bucket=b&precision=ms "),
            "{}",
            s.head
        );
        assert!(s.head.contains("authorization: token abc"));
        assert!(s.head.contains("content-encoding: gzip"));
        assert_eq!(s.body.lines().count(), 10);
    }
    assert_eq!(
        seen[2].body.lines().next().unwrap(),
        "reading,kind=water_level,point=LEVEL-1,unit=m value=0,quality=\"good\" 1000"
    );
    assert_eq!(status.retries.load(std::sync::atomic::Ordering::Relaxed), 2);
}
