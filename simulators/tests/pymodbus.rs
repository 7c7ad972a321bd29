//! pymodbus 3.8.6 (an independent Modbus stack) reads every type and order over TCP
//! and over RTU-over-TCP framing, and sees exceptions on demand.
//!
//! Needs `python3` (override with `HAZGATE_PYTHON`) with `pymodbus==3.8.6`; fails
//! with a clear message if either is missing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;

use common::*;
use hazgate_sim::{Farm, FarmOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pymodbus_reads_every_type_order_and_framing() {
    let python = std::env::var("HAZGATE_PYTHON").unwrap_or_else(|_| "python3".into());
    let probe = Command::new(&python)
        .args(["-c", "import pymodbus; print(pymodbus.__version__)"])
        .output()
        .unwrap_or_else(|e| panic!("cannot run `{python}`: {e} (install python3)"));
    let version = String::from_utf8_lossy(&probe.stdout).trim().to_owned();
    assert!(
        probe.status.success() && version == "3.8.6",
        "this test needs pymodbus 3.8.6 for `{python}` (pip install pymodbus==3.8.6); found: {version:?} {}",
        String::from_utf8_lossy(&probe.stderr)
    );

    let orders = Farm::start(&load("byte-orders.toml"), FarmOptions::default())
        .await
        .unwrap();
    let faults = Farm::start(&load("faults.toml"), FarmOptions::default())
        .await
        .unwrap();
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/check_pymodbus.py");
    let out = Command::new(&python)
        .arg(script)
        .args(["--tcp", &orders.addr_of("bo").unwrap().to_string()])
        .args(["--rtu", &orders.addr_of("bo-rtu").unwrap().to_string()])
        .args([
            "--exceptions",
            &faults.addr_of("exceptions").unwrap().to_string(),
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "pymodbus check failed:\n{stdout}\n{stderr}"
    );
    // Sanity: the script really checked things.
    let oks = stdout.lines().filter(|l| l.starts_with("OK ")).count();
    assert!(oks >= 100, "only {oks} checks ran:\n{stdout}");
    orders.shutdown().await;
    faults.shutdown().await;
}
