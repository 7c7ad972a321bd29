//! The farm never crashes: random PDUs into every device model, random bytes into
//! both framings, and random bytes over sockets, after which the farm still serves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use hazgate_sim::device::Device;
use hazgate_sim::frame::{parse_rtu, parse_tcp, Parsed};
use hazgate_sim::signal::{splitmix64, Signals};
use hazgate_sim::{Farm, FarmOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = splitmix64(self.0);
        self.0
    }
    fn bytes(&mut self, max: usize) -> Vec<u8> {
        let n = (self.next() as usize) % (max + 1);
        (0..n).map(|_| self.next() as u8).collect()
    }
}

#[test]
fn random_pdus_get_an_answer_and_never_panic() {
    let mut rng = Rng(1);
    for file in [
        "byte-orders.toml",
        "faults.toml",
        "relay.toml",
        "coal-gas-leak.toml",
    ] {
        let s = load(file);
        let signals = Signals::new(&s.signals, s.seed);
        for spec in &s.devices {
            let mut dev = Device::new(spec, &signals);
            for i in 0..20_000 {
                let mut pdu = rng.bytes(40);
                // Bias towards known function codes so the deeper paths run.
                if let Some(fc) = pdu.first_mut() {
                    if i % 2 == 0 {
                        *fc = [1, 2, 3, 4, 5, 6, 15, 16][(*fc % 8) as usize];
                    }
                }
                let mut out = Vec::new();
                dev.handle(&pdu, f64::from(i) * 0.1, &signals, &mut out);
                assert!(out.len() >= 2 && out.len() <= 253, "{pdu:?} -> {out:?}");
                let fc = pdu.first().copied().unwrap_or(0);
                assert_eq!(out[0] & 0x7F, fc & 0x7F, "{pdu:?} -> {out:?}");
            }
        }
    }
}

#[test]
fn random_bytes_into_both_framings() {
    let mut rng = Rng(2);
    for _ in 0..200_000 {
        let buf = rng.bytes(300);
        for parsed in [parse_tcp(&buf), parse_rtu(&buf)] {
            match parsed {
                Parsed::Frame { pdu, len, .. } => {
                    assert!(pdu.end <= len && len <= buf.len());
                }
                Parsed::BadCrc { len } => assert!(len > 0 && len <= buf.len()),
                Parsed::Incomplete | Parsed::Broken => {}
            }
        }
    }
}

#[tokio::test]
async fn random_bytes_over_sockets_then_still_serving() {
    let s = load("byte-orders.toml");
    let farm = Farm::start(&s, FarmOptions::default()).await.unwrap();
    let mut rng = Rng(3);
    for device in ["bo", "bo-rtu"] {
        let addr = farm.addr_of(device).unwrap();
        for _ in 0..50 {
            let mut st = TcpStream::connect(addr).await.unwrap();
            let junk = rng.bytes(600);
            let _ = st.write_all(&junk).await;
            let _ = st.shutdown().await;
            // Drain whatever comes back until the farm or the timeout ends it.
            let mut sink = Vec::new();
            let _ =
                tokio::time::timeout(Duration::from_millis(200), st.read_to_end(&mut sink)).await;
        }
    }
    let mut c = TcpClient::connect(farm.addr_of("bo").unwrap()).await;
    assert_eq!(c.read_holding(1, 0, 1).await, Ok(vec![4660]));
    let mut st = TcpStream::connect(farm.addr_of("bo-rtu").unwrap())
        .await
        .unwrap();
    let r = rtu_request(&mut st, 1, &read_pdu(3, 0, 1), Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(&r[..5], &[1, 3, 2, 0x12, 0x34]);
    farm.shutdown().await;
}
