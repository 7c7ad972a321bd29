//! Helpers shared by the benches that run `hazgate run` as a separate process against
//! a farm in another one: the farm process itself, and CPU and memory of a process read
//! from /proc.
#![allow(dead_code)]

use std::io::Write as _;
use std::process::Command;

/// This binary, re-executed, serves the farm and prints its ports.
pub fn run_farm(path: &str, devices: usize) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let sc =
            hazgate_sim::scenario::Scenario::load(std::path::Path::new(path)).expect("scenario");
        let farm = hazgate_sim::farm::Farm::start(&sc, hazgate_sim::farm::FarmOptions::default())
            .await
            .expect("farm");
        let ports: Vec<String> = (0..devices)
            .map(|d| {
                farm.addr_of(&format!("d{d}"))
                    .expect("port")
                    .port()
                    .to_string()
            })
            .collect();
        println!("PORTS {}", ports.join(","));
        std::io::stdout().flush().expect("flush");
        std::future::pending::<()>().await;
    });
}

pub fn clk_tck() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// User + system CPU seconds of a process.
pub fn cpu_s(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let after = &stat[stat.rfind(')').expect("comm") + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>().expect("utime") + f[12].parse::<f64>().expect("stime");
    ticks / clk_tck()
}

pub fn status_kb(pid: &str, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("status")
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}
