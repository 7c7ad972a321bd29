//! Farm throughput: Modbus TCP requests per second served on one core.
//!
//! The farm runs on a single-threaded tokio runtime on its own thread (one core);
//! the client is a small blocking, pipelined client on the bench thread. Each
//! iteration sends a batch of "read 10 holding registers" requests over one or
//! several connections and reads every answer; throughput is in requests/s.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::mpsc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use hazgate_sim::{Farm, FarmOptions, Scenario};

const RESPONSE_LEN: usize = 7 + 2 + 20;

fn start_farm() -> SocketAddr {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/byte-orders.toml");
    let scenario = Scenario::load(&path).unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let farm = Farm::start(&scenario, FarmOptions::default())
                .await
                .unwrap();
            tx.send(farm.addr_of("bo").unwrap()).unwrap();
            std::future::pending::<()>().await;
        });
    });
    rx.recv().unwrap()
}

fn batch(n: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(n * 12);
    for i in 0..n {
        out.extend_from_slice(&(i as u16).to_be_bytes());
        // Read holding registers 0..10 (u16, i16s, bool, u32, i32, f32 halves).
        out.extend_from_slice(&[0, 0, 0, 6, 1, 3, 0, 0, 0, 10]);
    }
    out
}

fn bench(c: &mut Criterion) {
    let addr = start_farm();
    let mut group = c.benchmark_group("farm");
    for (conns, depth) in [(1usize, 1usize), (16, 1), (1, 64), (4, 32)] {
        let mut streams: Vec<TcpStream> = (0..conns)
            .map(|_| {
                let s = TcpStream::connect(addr).unwrap();
                s.set_nodelay(true).unwrap();
                s
            })
            .collect();
        let req = batch(depth);
        let mut resp = vec![0u8; depth * RESPONSE_LEN];
        group.throughput(Throughput::Elements((conns * depth) as u64));
        group.bench_function(format!("read10_{conns}conn_depth{depth}"), |b| {
            b.iter(|| {
                for s in streams.iter_mut() {
                    s.write_all(&req).unwrap();
                }
                for s in streams.iter_mut() {
                    s.read_exact(&mut resp).unwrap();
                    assert_eq!(resp[7], 3);
                }
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
