//! The Modbus source against an implementation hazgate did not write: pymodbus's
//! server (PyPI `pymodbus==3.8.6`), over TCP and over RTU on a virtual serial pair
//! made by socat (Debian `socat`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod gw;

use gw::{config, point, wait_for, Capture};
use hazgate::gateway::{self, Plan};
use hazgate::model::Quality;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tokio::sync::watch;

/// Kills the child process when dropped.
struct Guard(Child);
impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn python() -> String {
    std::env::var("HAZGATE_PYTHON").unwrap_or_else(|_| "python3".into())
}

fn pymodbus_server(args: &[&str]) -> Guard {
    let ok = Command::new(python())
        .args(["-c", "import pymodbus, serial"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(
        ok,
        "this test needs pymodbus and pyserial: pip install pymodbus==3.8.6 pyserial"
    );
    let child = Command::new(python())
        .arg("tests/py/modbus_server.py")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the pymodbus server");
    Guard(child)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn points(device: &str) -> String {
    let mut s = String::new();
    let mut add = |id: &str, table: &str, address: u16, ty: &str, order: &str, scale: f64| {
        s += &format!(
            "[[points]]\nid = \"{id}\"\nname = \"{id}\"\nkind = \"other\"\nunit = \"\"\nrange_min = -1e6\nrange_max = 1e6\ndevice = \"{device}\"\nmodbus = {{ table = \"{table}\", address = {address}, data_type = \"{ty}\", byte_order = \"{order}\", scale = {scale} }}\n\n"
        );
    };
    add("f32", "holding", 0, "f32", "ABCD", 1.0);
    add("f32-cdab", "holding", 2, "f32", "CDAB", 1.0);
    add("i16", "holding", 4, "i16", "ABCD", 1.0);
    add("u16-scaled", "holding", 5, "u16", "ABCD", 0.01);
    add("u32", "holding", 6, "u32", "ABCD", 1.0);
    add("f64", "holding", 8, "f64", "ABCD", 1.0);
    add("unmapped", "holding", 14, "u16", "ABCD", 1.0);
    add("input", "input", 0, "u16", "ABCD", 1.0);
    for i in 0..4 {
        add(&format!("coil{i}"), "coil", i, "bool", "ABCD", 1.0);
    }
    add("di1", "discrete_input", 1, "bool", "ABCD", 1.0);
    s
}

async fn check_values(device_toml: String) {
    let cfg = config(&format!("{device_toml}\n{}", points("plc")));
    let plan = Plan::from_config(&cfg);
    let spec = plan.spec.clone();
    let cap = Capture::default();
    let (stop, shutdown) = watch::channel(false);
    let running = gateway::start(plan, cap.clone(), shutdown, 1);
    let p = |id: &str| point(&spec, id);
    wait_for("values from pymodbus", 30, || {
        cap.last_good(p("f64")).is_some() && cap.last_good(p("di1")).is_some()
    })
    .await;
    let near = |id: &str, want: f64| {
        let got = cap.last_good(p(id)).unwrap();
        assert!((got - want).abs() < 1e-6, "{id}: got {got}, want {want}");
    };
    near("f32", 1.5);
    near("f32-cdab", -2.25);
    near("i16", -300.0);
    near("u16-scaled", 12.34);
    near("u32", 70000.0);
    near("f64", 6.02214);
    near("input", 42.0);
    near("coil0", 1.0);
    near("coil1", 0.0);
    near("coil2", 1.0);
    near("coil3", 1.0);
    near("di1", 1.0);
    // The unmapped register answers 02; it is isolated and its neighbours stay good.
    wait_for("the unmapped register isolated", 30, || {
        cap.readings_of(p("unmapped"))
            .last()
            .is_some_and(|r| r.quality == Quality::DeviceException(2))
    })
    .await;
    stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(10), running.join())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_a_pymodbus_tcp_server() {
    let port = free_port();
    let _server = pymodbus_server(&["tcp", &port.to_string()]);
    check_values(format!(
        "[[devices]]\nid = \"plc\"\nprotocol = \"modbus_tcp\"\nhost = \"127.0.0.1\"\nport = {port}\npoll_interval_ms = 200\nmax_gap_registers = 4\n"
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_a_pymodbus_rtu_server_over_a_virtual_serial_line() {
    let dir = tempfile::tempdir().unwrap();
    let ours = dir.path().join("hazgate");
    let theirs = dir.path().join("server");
    let socat = Command::new("socat")
        .arg(format!("pty,raw,echo=0,link={}", ours.display()))
        .arg(format!("pty,raw,echo=0,link={}", theirs.display()))
        .stderr(Stdio::null())
        .spawn()
        .expect("this test needs socat (Debian package socat)");
    let _socat = Guard(socat);
    wait_for("the serial pair", 10, || ours.exists() && theirs.exists()).await;
    // A pty accepts no parity setting from pyserial, so the line runs 8N1.
    let _server = pymodbus_server(&["rtu", theirs.to_str().unwrap()]);
    check_values(format!(
        "[[devices]]\nid = \"plc\"\nprotocol = \"modbus_rtu\"\nserial_port = \"{}\"\nbaud_rate = 19200\nparity = \"none\"\npoll_interval_ms = 300\ntimeout_ms = 1000\nmax_gap_registers = 4\n",
        ours.display()
    ))
    .await;
}
