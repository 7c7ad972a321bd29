//! mbpoll (a Modbus master hazgate did not write) reads the documented values of
//! byte-orders.toml, writes a relay coil, and sees exceptions.
//!
//! Needs the Debian package `mbpoll`; fails with a clear message if it is missing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;

use common::*;
use hazgate_sim::{Clock, Farm, FarmOptions};

/// Run mbpoll once (0-based references) and return `address → printed value`, or
/// the whole output on failure. Values to write follow `--` in `args`.
fn mbpoll(bin: &Path, addr: SocketAddr, args: &[&str]) -> Result<BTreeMap<u32, String>, String> {
    let split = args.iter().position(|a| *a == "--").unwrap_or(args.len());
    let out = Command::new(bin)
        .args(["-1", "-0", "-o", "2", "-p", &addr.port().to_string()])
        .args(&args[..split])
        .arg(addr.ip().to_string())
        .args(&args[split..])
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() {
        return Err(text);
    }
    let mut values = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix('[') {
            if let Some((a, v)) = rest.split_once("]:") {
                values.insert(a.trim().parse().unwrap(), v.trim().to_owned());
            }
        }
    }
    Ok(values)
}

fn get(v: &BTreeMap<u32, String>, a: u32) -> &str {
    v.get(&a)
        .map(String::as_str)
        .unwrap_or_else(|| panic!("no value at {a}: {v:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mbpoll_reads_every_documented_value() {
    let bin = find_tool("mbpoll", "mbpoll");
    let s = load("byte-orders.toml");
    let farm = Farm::start(&s, FarmOptions::default()).await.unwrap();
    let addr = farm.addr_of("bo").unwrap();

    // 16-bit registers, holding (FC 3) and input (FC 4).
    for table in ["4", "3"] {
        let v = mbpoll(&bin, addr, &["-t", table, "-r", "0", "-c", "4"]).unwrap();
        assert_eq!(get(&v, 0), "4660");
        assert_eq!(get(&v, 1), "64302 (-1234)");
        assert_eq!(get(&v, 2), "59858 (-5678)");
        assert_eq!(get(&v, 3), "1");
    }
    // Byte-swapped 16-bit values (BADC block), raw.
    let v = mbpoll(&bin, addr, &["-t", "4:hex", "-r", "200", "-c", "3"]).unwrap();
    assert_eq!(get(&v, 200), "0x3412");
    assert_eq!(get(&v, 201), "0x2EFB");
    assert_eq!(get(&v, 202), "0xD2E9");

    // 32-bit: -B = big-endian words (ABCD); default = little-endian words (CDAB).
    for (base, big) in [(0u32, true), (100, false)] {
        let mut args = vec!["-t", "4:float", "-r"];
        let r = (base + 8).to_string();
        args.push(&r);
        if big {
            args.push("-B");
        }
        let v = mbpoll(&bin, addr, &args).unwrap();
        assert_eq!(get(&v, base + 8), "123.456", "f32 at {base}");

        let r = (base + 4).to_string();
        let mut args = vec!["-t", "4:int", "-r", &r, "-c", "2"];
        if big {
            args.push("-B");
        }
        let v = mbpoll(&bin, addr, &args).unwrap();
        assert_eq!(get(&v, base + 4), "305419896", "u32 at {base}");
        assert_eq!(get(&v, base + 6), "-123456789", "i32 at {base}");
    }
    // Input registers as float, big-endian words.
    let v = mbpoll(&bin, addr, &["-t", "3:float", "-B", "-r", "8"]).unwrap();
    assert_eq!(get(&v, 8), "123.456");

    // mbpoll cannot swap bytes inside words: check BADC and DCBA raw words, and the
    // 64-bit values in every order.
    let cases: [(u32, [&str; 2]); 4] = [
        (8, ["0x42F6", "0xE979"]),
        (108, ["0xE979", "0x42F6"]),
        (208, ["0xF642", "0x79E9"]),
        (308, ["0x79E9", "0xF642"]),
    ];
    for (a, want) in cases {
        let r = a.to_string();
        let v = mbpoll(&bin, addr, &["-t", "4:hex", "-r", &r, "-c", "2"]).unwrap();
        assert_eq!([get(&v, a), get(&v, a + 1)], want, "f32 words at {a}");
    }
    let f64_words = [
        (10, ["0x40C8", "0x1CD6", "0xE631", "0xF8A1"]),
        (110, ["0xF8A1", "0xE631", "0x1CD6", "0x40C8"]),
        (210, ["0xC840", "0xD61C", "0x31E6", "0xA1F8"]),
        (310, ["0xA1F8", "0x31E6", "0xD61C", "0xC840"]),
    ];
    for (a, want) in f64_words {
        let r = a.to_string();
        let v = mbpoll(&bin, addr, &["-t", "4:hex", "-r", &r, "-c", "4"]).unwrap();
        let got: Vec<&str> = (0..4).map(|i| get(&v, a + i)).collect();
        assert_eq!(got, want, "f64 words at {a}");
    }

    // Coils and discrete inputs.
    let v = mbpoll(&bin, addr, &["-t", "0", "-r", "0", "-c", "8"]).unwrap();
    let coils: Vec<&str> = (0..8).map(|a| get(&v, a)).collect();
    assert_eq!(coils, ["1", "0", "1", "1", "0", "0", "1", "0"]);
    let v = mbpoll(&bin, addr, &["-t", "1", "-r", "0", "-c", "8"]).unwrap();
    let inputs: Vec<&str> = (0..8).map(|a| get(&v, a)).collect();
    assert_eq!(inputs, ["0", "1", "1", "0", "1", "0", "0", "1"]);

    // An unmapped address: mbpoll reports the exception.
    let err = mbpoll(&bin, addr, &["-t", "4", "-r", "50"]).unwrap_err();
    assert!(err.contains("Illegal data address"), "{err}");
    farm.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mbpoll_cuts_power_through_the_relay() {
    let bin = find_tool("mbpoll", "mbpoll");
    let s = load("relay.toml");
    let clock = Clock::manual(10.0);
    let opts = FarmOptions {
        clock: Some(clock.clone()),
        ..FarmOptions::default()
    };
    let farm = Farm::start(&s, opts).await.unwrap();
    let addr = farm.addr_of("power-cut").unwrap();
    // Write coil 0 ON (FC 5) and coil 1 ON.
    mbpoll(&bin, addr, &["-t", "0", "-r", "0", "--", "1"]).unwrap();
    mbpoll(&bin, addr, &["-t", "0", "-r", "1", "--", "1"]).unwrap();
    let v = mbpoll(&bin, addr, &["-t", "1", "-r", "0", "-c", "2"]).unwrap();
    assert_eq!(
        (get(&v, 0), get(&v, 1)),
        ("1", "1"),
        "feed still on before the delay"
    );
    clock.advance_s(1.0);
    let v = mbpoll(&bin, addr, &["-t", "1", "-r", "0", "-c", "2"]).unwrap();
    assert_eq!(
        (get(&v, 0), get(&v, 1)),
        ("0", "1"),
        "good relay cut, faulty relay did not"
    );
    let v = mbpoll(&bin, addr, &["-t", "0", "-r", "0", "-c", "2"]).unwrap();
    assert_eq!((get(&v, 0), get(&v, 1)), ("1", "1"));
    farm.shutdown().await;
}
