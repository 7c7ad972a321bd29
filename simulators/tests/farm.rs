//! In-process tests of the device farm with a raw client: encodings, exceptions,
//! malformed input, offline modes, slow devices, relays, determinism, speed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use hazgate_sim::codec::{decode, DataType, WordOrder};
use hazgate_sim::scenario::OfflineMode;
use hazgate_sim::{Clock, Farm, FarmOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const W: Duration = Duration::from_secs(5);

fn manual(t: f64) -> (Clock, FarmOptions) {
    let clock = Clock::manual(t);
    let opts = FarmOptions {
        clock: Some(clock.clone()),
        ..FarmOptions::default()
    };
    (clock, opts)
}

/// Every documented value of byte-orders.toml, decoded from the wire.
#[tokio::test]
async fn byte_orders_every_type_and_order() {
    let s = load("byte-orders.toml");
    let farm = Farm::start(&s, FarmOptions::default()).await.unwrap();
    let mut c = TcpClient::connect(farm.addr_of("bo").unwrap()).await;
    let cases: [(u16, DataType, f64, f64); 10] = [
        (0, DataType::U16, 4660.0, 1.0),
        (1, DataType::I16, -1234.0, 1.0),
        (2, DataType::I16, -56.78, 100.0),
        (3, DataType::Bool, 1.0, 1.0),
        (4, DataType::U32, 305_419_896.0, 1.0),
        (6, DataType::I32, -123_456_789.0, 1.0),
        (8, DataType::F32, 123.456, 1.0),
        (10, DataType::F64, 12_345.678_9, 1.0),
        (14, DataType::U64, 1_234_567_890_123.0, 1.0),
        (18, DataType::I64, -1_234_567_890_123.0, 1.0),
    ];
    for (k, order) in WordOrder::ALL.into_iter().enumerate() {
        let base = k as u16 * 100;
        let block = c.read_holding(1, base, 22).await.unwrap();
        for (off, t, want, scale) in cases {
            let n = t.register_count() as usize;
            let got = decode(&block[off as usize..off as usize + n], t, order, scale).unwrap();
            let tol = if t == DataType::F32 { 1e-4 } else { 1e-9 };
            assert!(
                (got - want).abs() <= tol * want.abs().max(1.0),
                "{order:?} {t:?}: {got} != {want}"
            );
        }
    }
    // The documented raw words.
    assert_eq!(c.read_holding(1, 8, 2).await.unwrap(), vec![0x42F6, 0xE979]);
    assert_eq!(
        c.read_holding(1, 108, 2).await.unwrap(),
        vec![0xE979, 0x42F6]
    );
    assert_eq!(
        c.read_holding(1, 208, 2).await.unwrap(),
        vec![0xF642, 0x79E9]
    );
    assert_eq!(
        c.read_holding(1, 308, 2).await.unwrap(),
        vec![0x79E9, 0xF642]
    );
    assert_eq!(
        c.read_holding(1, 10, 4).await.unwrap(),
        vec![0x40C8, 0x1CD6, 0xE631, 0xF8A1]
    );
    assert_eq!(c.read_holding(1, 2, 1).await.unwrap(), vec![0xE9D2]);
    // Input registers repeat the ABCD block; bits.
    assert_eq!(
        c.read_input(1, 0, 10).await.unwrap(),
        c.read_holding(1, 0, 10).await.unwrap()
    );
    assert_eq!(
        c.read_bits(1, 1, 0, 8).await.unwrap(),
        [1, 0, 1, 1, 0, 0, 1, 0].map(|b| b == 1).to_vec()
    );
    assert_eq!(
        c.read_bits(1, 2, 0, 8).await.unwrap(),
        [0, 1, 1, 0, 1, 0, 0, 1].map(|b| b == 1).to_vec()
    );
    // Unmapped → 02.
    assert_eq!(c.read_holding(1, 50, 1).await, Err(2));
    assert_eq!(c.read_holding(1, 20, 3).await, Err(2));
    farm.shutdown().await;
}

#[tokio::test]
async fn writes_are_remembered() {
    let s = load("byte-orders.toml");
    let farm = Farm::start(&s, FarmOptions::default()).await.unwrap();
    let mut c = TcpClient::connect(farm.addr_of("bo").unwrap()).await;
    // FC 6 and FC 16 echo, then read back.
    assert_eq!(
        c.request(1, &[6, 0, 0, 0xAB, 0xCD]).await,
        Reply::Pdu(vec![6, 0, 0, 0xAB, 0xCD])
    );
    assert_eq!(
        c.request(1, &[16, 0, 4, 0, 2, 4, 0, 1, 0, 2]).await,
        Reply::Pdu(vec![16, 0, 4, 0, 2])
    );
    assert_eq!(c.read_holding(1, 0, 1).await.unwrap(), vec![0xABCD]);
    assert_eq!(c.read_holding(1, 4, 2).await.unwrap(), vec![1, 2]);
    // FC 5 and FC 15.
    assert_eq!(
        c.write_coil(1, 1, true).await,
        Reply::Pdu(vec![5, 0, 1, 0xFF, 0])
    );
    assert_eq!(
        c.request(1, &[15, 0, 4, 0, 2, 1, 0b11]).await,
        Reply::Pdu(vec![15, 0, 4, 0, 2])
    );
    assert_eq!(
        c.read_bits(1, 1, 0, 8).await.unwrap(),
        [1, 1, 1, 1, 1, 1, 1, 0].map(|b| b == 1).to_vec()
    );
    // Writes to unmapped addresses → 02; to an input table there is no function.
    assert_eq!(regs(c.request(1, &[6, 0, 50, 0, 1]).await), Err(2));
    farm.shutdown().await;
}

#[tokio::test]
async fn exceptions_on_demand() {
    let s = load("faults.toml");
    let (clock, opts) = manual(10.0);
    let farm = Farm::start(&s, opts).await.unwrap();
    let mut c = TcpClient::connect(farm.addr_of("exceptions").unwrap()).await;
    assert_eq!(c.read_holding(1, 0, 1).await, Ok(vec![30]));
    for (addr, code) in [
        (10, 1),
        (20, 2),
        (30, 3),
        (45, 4),
        (60, 6),
        (100, 0x0A),
        (119, 0x0B),
    ] {
        assert_eq!(
            c.read_holding(1, addr, 1).await,
            Err(code),
            "address {addr}"
        );
    }
    // A range overlapping a rule gets the rule's exception; writes too.
    assert_eq!(c.read_holding(1, 55, 10).await, Err(6));
    assert_eq!(regs(c.request(1, &[6, 0, 25, 0, 1]).await), Err(2));
    // Busy window of the whole device, 300–330 s.
    clock.set_s(310.0);
    assert_eq!(c.read_holding(1, 0, 1).await, Err(6));
    assert_eq!(c.read_bits(1, 1, 0, 1).await, Err(6));
    clock.set_s(330.0);
    assert_eq!(c.read_holding(1, 0, 1).await, Ok(vec![30]));
    let st = farm.status();
    let d = st.devices.iter().find(|d| d.id == "exceptions").unwrap();
    assert!(d.counters.exceptions >= 9, "{:?}", d.counters);
    farm.shutdown().await;
}

async fn closed(stream: &mut TcpStream) -> bool {
    let mut b = [0u8; 16];
    matches!(
        tokio::time::timeout(W, stream.read(&mut b)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

#[tokio::test]
async fn malformed_requests_never_stop_the_farm() {
    let s = load("byte-orders.toml");
    let farm = Farm::start(&s, FarmOptions::default()).await.unwrap();
    let addr = farm.addr_of("bo").unwrap();
    let mut keep = TcpClient::connect(addr).await;
    let mut c = TcpClient::connect(addr).await;
    // Unknown function → 01; quantity too large → 03; zero quantity → 03;
    // bad byte count → 03; bad coil value → 03; past 65535 → 02; short PDU → 03.
    assert_eq!(c.request(1, &[0x2B, 0x0E, 1, 0]).await, Reply::Exception(1));
    assert_eq!(c.request(1, &[0x07]).await, Reply::Exception(1));
    assert_eq!(
        c.request(1, &read_pdu(3, 0, 126)).await,
        Reply::Exception(3)
    );
    assert_eq!(
        c.request(1, &read_pdu(4, 0, 126)).await,
        Reply::Exception(3)
    );
    assert_eq!(
        c.request(1, &read_pdu(1, 0, 2001)).await,
        Reply::Exception(3)
    );
    assert_eq!(c.request(1, &read_pdu(2, 0, 0)).await, Reply::Exception(3));
    assert_eq!(
        c.request(1, &[16, 0, 0, 0, 2, 3, 0, 1, 0]).await,
        Reply::Exception(3)
    );
    assert_eq!(
        c.request(1, &[5, 0, 0, 0x12, 0x34]).await,
        Reply::Exception(3)
    );
    assert_eq!(
        c.request(1, &read_pdu(3, 0xFFFF, 2)).await,
        Reply::Exception(2)
    );
    assert_eq!(c.request(1, &[3, 0, 0]).await, Reply::Exception(3));
    // Unknown unit on a TCP endpoint → 0B (gateway target failed to respond).
    assert_eq!(
        c.request(9, &read_pdu(3, 0, 1)).await,
        Reply::Exception(0x0B)
    );

    // Bad MBAP length (0) → closed.
    let mut bad = TcpStream::connect(addr).await.unwrap();
    bad.write_all(&[0, 1, 0, 0, 0, 0, 1, 3]).await.unwrap();
    assert!(
        closed(&mut bad).await,
        "bad length must close the connection"
    );
    // Length larger than a PDU can be → closed.
    let mut bad = TcpStream::connect(addr).await.unwrap();
    bad.write_all(&[0, 1, 0, 0, 0x10, 0, 1, 3]).await.unwrap();
    assert!(closed(&mut bad).await);
    // Garbage bytes → closed.
    let mut bad = TcpStream::connect(addr).await.unwrap();
    bad.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert!(closed(&mut bad).await, "garbage must close the connection");

    // The other connections still work, and new ones too.
    assert_eq!(keep.read_holding(1, 0, 1).await, Ok(vec![4660]));
    assert_eq!(c.read_holding(1, 0, 1).await, Ok(vec![4660]));
    let mut fresh = TcpClient::connect(addr).await;
    assert_eq!(fresh.read_holding(1, 0, 1).await, Ok(vec![4660]));
    assert!(farm.status().connections_broken >= 3);
    farm.shutdown().await;
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    let s = load("byte-orders.toml");
    let farm = Farm::start(&s, FarmOptions::default()).await.unwrap();
    let mut c = TcpClient::connect(farm.addr_of("bo").unwrap()).await;
    let mut batch = Vec::new();
    for txn in 0..50u16 {
        batch.extend_from_slice(&txn.to_be_bytes());
        batch.extend_from_slice(&[0, 0, 0, 6, 1, 3, 0, (txn % 3) as u8, 0, 1]);
    }
    // Split the batch mid-frame to check reassembly.
    c.send_raw(&batch[..33]).await;
    c.send_raw(&batch[33..]).await;
    for txn in 0..50u16 {
        let (t, _, pdu) = c.recv().await.unwrap();
        assert_eq!(t, txn);
        assert_eq!(pdu[0], 3);
    }
    farm.shutdown().await;
}

#[tokio::test]
async fn rtu_over_tcp_framing() {
    let s = load("byte-orders.toml");
    let farm = Farm::start(&s, FarmOptions::default()).await.unwrap();
    let mut st = TcpStream::connect(farm.addr_of("bo-rtu").unwrap())
        .await
        .unwrap();
    let r = rtu_request(&mut st, 1, &read_pdu(3, 108, 2), W)
        .await
        .unwrap();
    assert_eq!(&r[..7], &[1, 3, 4, 0xE9, 0x79, 0x42, 0xF6]);
    // Exception over RTU.
    let r = rtu_request(&mut st, 1, &read_pdu(3, 0, 200), W)
        .await
        .unwrap();
    assert_eq!(&r[..3], &[1, 0x83, 3]);
    // Bad CRC: no answer; the next good frame is answered.
    let mut f = rtu_frame(1, &read_pdu(3, 0, 1));
    f[7] ^= 0xFF;
    st.write_all(&f).await.unwrap();
    let r = rtu_request(&mut st, 1, &read_pdu(3, 0, 1), W)
        .await
        .unwrap();
    assert_eq!(&r[..5], &[1, 3, 2, 0x12, 0x34]);
    // Another unit on a serial line: silence.
    assert!(
        rtu_request(&mut st, 7, &read_pdu(3, 0, 1), Duration::from_millis(200))
            .await
            .is_none()
    );
    // Unknown function with a valid CRC → 01.
    let r = rtu_request(&mut st, 1, &[0x41, 1, 2, 3], W).await.unwrap();
    assert_eq!(&r[..3], &[1, 0xC1, 1]);
    assert_eq!(farm.status().crc_errors, 1);
    farm.shutdown().await;
}

#[tokio::test]
async fn shared_endpoints_dispatch_by_unit_id() {
    let s = load("chemical-tank-farm.toml");
    let (_clock, opts) = manual(1300.0);
    let farm = Farm::start(&s, opts).await.unwrap();
    let addr = farm.addr_of("lel-detector-1").unwrap();
    assert_eq!(Some(addr), farm.addr_of("h2s-detector-1"));
    let mut st = TcpStream::connect(addr).await.unwrap();
    let lel = rtu_request(&mut st, 1, &read_pdu(4, 0, 1), W)
        .await
        .unwrap();
    let h2s = rtu_request(&mut st, 2, &read_pdu(4, 0, 1), W)
        .await
        .unwrap();
    let lel = f64::from(u16::from_be_bytes([lel[3], lel[4]])) / 10.0;
    let h2s = f64::from(u16::from_be_bytes([h2s[3], h2s[4]])) / 10.0;
    // At 1300 s: %LEL on its way down from 60, H2S on its way up to 25.
    assert!((35.0..55.0).contains(&lel), "lel {lel}");
    assert!((8.0..16.0).contains(&h2s), "h2s {h2s}");

    // A dead unit behind a TCP gateway answers 0B; its neighbour keeps working.
    let s = load("faults.toml");
    let (_clock, opts) = manual(10.0);
    let farm = Farm::start(&s, opts).await.unwrap();
    let mut c = TcpClient::connect(farm.addr_of("gw-ok").unwrap()).await;
    assert_eq!(c.read_holding(2, 0, 1).await, Err(0x0B));
    assert_eq!(c.read_holding(1, 0, 1).await, Ok(vec![30]));
}

#[tokio::test]
async fn offline_refused_closes_the_port_and_comes_back() {
    let s = load("faults.toml");
    let (clock, opts) = manual(100.0);
    let farm = Farm::start(&s, opts).await.unwrap();
    let addr = farm.addr_of("offline-refused").unwrap();
    let mut c = TcpClient::connect(addr).await;
    assert_eq!(c.read_holding(1, 0, 1).await, Ok(vec![30]));
    clock.set_s(130.0);
    wait_until(W, "connection refused", || async {
        TcpStream::connect(addr).await.is_err()
    })
    .await;
    // An old connection is closed on its next request.
    c.send_raw(&[0, 9, 0, 0, 0, 6, 1, 3, 0, 0, 0, 1]).await;
    assert!(closed(&mut c.stream).await);
    assert_eq!(
        farm.status()
            .devices
            .iter()
            .find(|d| d.id == "offline-refused")
            .unwrap()
            .offline,
        Some(OfflineMode::Refuse)
    );
    clock.set_s(240.0);
    wait_until(W, "port open again", || async {
        TcpStream::connect(addr).await.is_ok()
    })
    .await;
    let mut c = TcpClient::connect(addr).await;
    assert_eq!(c.read_holding(1, 0, 1).await, Ok(vec![30]));
    farm.shutdown().await;
}

#[tokio::test]
async fn offline_silent_accepts_but_never_answers() {
    let s = load("faults.toml");
    let (clock, opts) = manual(130.0);
    let farm = Farm::start(&s, opts).await.unwrap();
    let addr = farm.addr_of("offline-silent").unwrap();
    let mut c = TcpClient::connect(addr).await;
    c.send_raw(&[0, 1, 0, 0, 0, 6, 1, 3, 0, 0, 0, 1]).await;
    assert!(tokio::time::timeout(Duration::from_millis(300), c.recv())
        .await
        .is_err());
    wait_until(W, "unanswered counted", || async {
        farm.status()
            .devices
            .iter()
            .any(|d| d.id == "offline-silent" && d.counters.unanswered == 1)
    })
    .await;
    clock.set_s(240.0);
    assert_eq!(c.read_holding(1, 0, 1).await, Ok(vec![30]));
    farm.shutdown().await;
}

#[tokio::test]
async fn slow_device_answers_late() {
    let mut s = load("faults.toml");
    // Keep the test short: 300 ms instead of the scenario's 1500 ms.
    for d in &mut s.devices {
        if d.id == "slow-device" {
            assert_eq!(d.response_delay_ms, 1500);
            d.response_delay_ms = 300;
        }
    }
    let farm = Farm::start(&s, FarmOptions::default()).await.unwrap();
    let mut c = TcpClient::connect(farm.addr_of("slow-device").unwrap()).await;
    let start = Instant::now();
    assert_eq!(c.read_holding(1, 0, 1).await, Ok(vec![30]));
    assert!(
        start.elapsed() >= Duration::from_millis(300),
        "{:?}",
        start.elapsed()
    );
    // Other devices are not slowed down.
    let mut fast = TcpClient::connect(farm.addr_of("stuck-sensor").unwrap()).await;
    let start = Instant::now();
    fast.read_holding(1, 0, 1).await.unwrap();
    assert!(start.elapsed() < Duration::from_millis(300));
    farm.shutdown().await;
}

#[tokio::test]
async fn stuck_and_out_of_range_sensors() {
    let s = load("faults.toml");
    let (clock, opts) = manual(0.0);
    let farm = Farm::start(&s, opts).await.unwrap();
    let mut stuck = TcpClient::connect(farm.addr_of("stuck-sensor").unwrap()).await;
    let mut broken = TcpClient::connect(farm.addr_of("broken-sensor").unwrap()).await;
    let mut before = Vec::new();
    for t in 0..30 {
        clock.set_s(f64::from(t) * 2.0);
        before.push(stuck.read_holding(1, 0, 1).await.unwrap()[0]);
    }
    before.sort_unstable();
    before.dedup();
    assert!(
        before.len() > 3,
        "noise expected before the fault: {before:?}"
    );
    clock.set_s(60.0);
    let frozen = stuck.read_holding(1, 0, 1).await.unwrap();
    for t in 61..120 {
        clock.set_s(f64::from(t));
        assert_eq!(stuck.read_holding(1, 0, 1).await.unwrap(), frozen);
        assert_eq!(broken.read_holding(1, 0, 1).await.unwrap(), vec![450]);
    }
    let st = farm.status();
    let d = st.devices.iter().find(|d| d.id == "broken-sensor").unwrap();
    assert_eq!(d.points[0].faults, vec!["out_of_range"]);
    farm.shutdown().await;
}

#[tokio::test]
async fn relay_cuts_after_delay_and_faulty_relay_does_not() {
    let s = load("relay.toml");
    let (clock, opts) = manual(10.0);
    let farm = Farm::start(&s, opts).await.unwrap();
    let mut c = TcpClient::connect(farm.addr_of("power-cut").unwrap()).await;
    assert_eq!(c.read_bits(1, 2, 0, 2).await, Ok(vec![true, true]));
    // Cut both.
    c.write_coil(1, 0, true).await;
    c.write_coil(1, 1, true).await;
    assert_eq!(c.read_bits(1, 1, 0, 2).await, Ok(vec![true, true]));
    clock.set_s(10.9);
    assert_eq!(
        c.read_bits(1, 2, 0, 2).await,
        Ok(vec![true, true]),
        "before the delay"
    );
    clock.set_s(11.0);
    assert_eq!(
        c.read_bits(1, 2, 0, 2).await,
        Ok(vec![false, true]),
        "good relay dropped, faulty did not"
    );
    clock.set_s(100.0);
    assert_eq!(c.read_bits(1, 2, 0, 2).await, Ok(vec![false, true]));
    let st = farm.status();
    let relays = &st.devices[0].relays;
    assert!(relays[0].coil_on && !relays[0].feed_on);
    assert!(relays[1].coil_on && relays[1].feed_on && relays[1].faulty);
    // Restore after 500 ms.
    c.write_coil(1, 0, false).await;
    clock.set_s(100.4);
    assert_eq!(c.read_bits(1, 2, 0, 1).await, Ok(vec![false]));
    clock.set_s(100.5);
    assert_eq!(c.read_bits(1, 2, 0, 1).await, Ok(vec![true]));
    // Writing the feed input is not possible.
    assert_eq!(c.read_input(1, 0, 1).await.map(|r| r[0] > 150), Ok(true));
    farm.shutdown().await;
}

async fn sample(seed: u64, times: &[f64]) -> Vec<Vec<u16>> {
    let s = load("coal-gas-leak.toml");
    let (clock, mut opts) = manual(0.0);
    opts.seed = Some(seed);
    let farm = Farm::start(&s, opts).await.unwrap();
    let mut c = TcpClient::connect(farm.addr_of("kj-substation-1").unwrap()).await;
    let mut out = Vec::new();
    for &t in times {
        clock.set_s(t);
        out.push(c.read_input(1, 0, 8).await.unwrap());
    }
    farm.shutdown().await;
    out
}

#[tokio::test]
async fn same_seed_same_values() {
    let times: Vec<f64> = (0..40).map(|i| f64::from(i) * 61.3).collect();
    let a = sample(11, &times).await;
    let b = sample(11, &times).await;
    let c = sample(12, &times).await;
    assert_eq!(a, b);
    assert_ne!(a, c);
}

#[tokio::test]
async fn gas_leak_profile_crosses_the_set_points() {
    let times = [300.0, 1000.0, 1300.0, 1825.0, 2200.0];
    let v = sample(2024, &times).await;
    let ch4 = |row: &Vec<u16>, i: usize| f64::from(row[i]) / 100.0;
    assert!(
        (0.2..0.4).contains(&ch4(&v[0], 1)),
        "steady {}",
        ch4(&v[0], 1)
    );
    assert!(
        (1.0..1.5).contains(&ch4(&v[1], 1)),
        "alarm band {}",
        ch4(&v[1], 1)
    );
    assert!(ch4(&v[2], 1) >= 1.5, "power cut band {}", ch4(&v[2], 1));
    assert!(ch4(&v[3], 3) > 1.5, "heading surge {}", ch4(&v[3], 3));
    assert!(ch4(&v[4], 1) < 1.0, "restored {}", ch4(&v[4], 1));
}

#[tokio::test]
async fn speed_factor_replays_an_hour_quickly() {
    let s = load("coal-gas-leak.toml");
    let opts = FarmOptions {
        speed: 3600.0,
        ..FarmOptions::default()
    };
    let farm = Farm::start(&s, opts).await.unwrap();
    let mut c = TcpClient::connect(farm.addr_of("kj-substation-1").unwrap()).await;
    let start = Instant::now();
    // At 3600× the face passes 1.5 % CH4 about 0.3 s after start.
    let mut peak = 0;
    while peak < 150 {
        peak = peak.max(c.read_input(1, 1, 1).await.unwrap()[0]);
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "never crossed 1.5 %"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(farm.status().t_s > 1000.0);
    farm.shutdown().await;
}

#[tokio::test]
async fn status_endpoint_serves_json() {
    use hazgate_sim::status::StatusServer;
    let s = load("relay.toml");
    let farm = Farm::start(&s, FarmOptions::default()).await.unwrap();
    let mut c = TcpClient::connect(farm.addr_of("power-cut").unwrap()).await;
    c.write_coil(1, 0, true).await;
    let srv = StatusServer::start("127.0.0.1:0".parse().unwrap(), farm.status_source())
        .await
        .unwrap();
    let mut http = TcpStream::connect(srv.addr()).await.unwrap();
    http.write_all(b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut resp = String::new();
    http.read_to_string(&mut resp).await.unwrap();
    assert!(resp.starts_with("HTTP/1.1 200 OK\r\n"), "{resp}");
    let body = resp.split("\r\n\r\n").nth(1).unwrap();
    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(v["scenario"], "relay");
    let dev = &v["devices"][0];
    assert_eq!(dev["id"], "power-cut");
    assert_eq!(dev["counters"]["writes"], 1);
    assert_eq!(dev["relays"][0]["coil_on"], true);
    assert_eq!(dev["relays"][1]["faulty"], true);
    assert!(dev["points"][0]["value"].as_f64().unwrap() > 1.5);
    assert!(v["endpoints"][0]["addr"]
        .as_str()
        .unwrap()
        .starts_with("127.0.0.1:"));
    let mut http = TcpStream::connect(srv.addr()).await.unwrap();
    http.write_all(b"GET /nope HTTP/1.1\r\n\r\n").await.unwrap();
    let mut resp = String::new();
    http.read_to_string(&mut resp).await.unwrap();
    assert!(resp.starts_with("HTTP/1.1 404"));
    srv.shutdown().await;
    farm.shutdown().await;
}
