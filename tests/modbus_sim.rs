//! The Modbus source against hazgate-sim's device farm, in process: every data type
//! and byte order, exceptions and block splitting, offline and slow devices, RTU over
//! TCP, graded polling, parent alarms, and writes to a power-cut relay.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod gw;

use gw::{config, point, wait_for, Capture};
use hazgate::engine::Transition;
use hazgate::gateway::{self, Plan};
use hazgate::model::{PointId, Quality};
use hazgate::sources::modbus::poller::Write;
use hazgate_sim::clock::Clock;
use hazgate_sim::farm::{Farm, FarmHandle, FarmOptions};
use hazgate_sim::scenario::Scenario;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::watch;

async fn farm(scenario: &Scenario, clock: Option<Clock>) -> FarmHandle {
    Farm::start(
        scenario,
        FarmOptions {
            clock,
            ..FarmOptions::default()
        },
    )
    .await
    .unwrap()
}

fn scenario_file(name: &str) -> Scenario {
    Scenario::load(Path::new(&format!("simulators/scenarios/{name}.toml"))).unwrap()
}

struct Gw {
    plan_spec: hazgate::engine::EngineSpec,
    cap: Capture,
    stop: watch::Sender<bool>,
    running: gateway::Running,
}

fn start(cfg: &hazgate::config::Config) -> Gw {
    let plan = Plan::from_config(cfg);
    let plan_spec = plan.spec.clone();
    let cap = Capture::default();
    let (stop, shutdown) = watch::channel(false);
    let running = gateway::start(plan, cap.clone(), shutdown, 1);
    Gw {
        plan_spec,
        cap,
        stop,
        running,
    }
}

impl Gw {
    fn p(&self, id: &str) -> PointId {
        point(&self.plan_spec, id)
    }
    async fn stop(self) {
        self.stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(10), self.running.join())
            .await
            .expect("the gateway stops within 10 s");
    }
    fn stats(&self, device: &str) -> std::sync::Arc<hazgate::sources::modbus::poller::DeviceStats> {
        self.running
            .device_stats
            .iter()
            .find(|(d, _)| d == device)
            .unwrap()
            .1
            .clone()
    }
}

/// The documented values of the byte-orders scenario (see its header).
const KNOWN: [(&str, u16, &str, f64, f64); 10] = [
    ("u16", 0, "u16", 4660.0, 1.0),
    ("i16", 1, "i16", -1234.0, 1.0),
    ("i16s", 2, "i16", -56.78, 0.01),
    ("bool", 3, "u16", 1.0, 1.0),
    ("u32", 4, "u32", 305_419_896.0, 1.0),
    ("i32", 6, "i32", -123_456_789.0, 1.0),
    ("f32", 8, "f32", 123.456, 1.0),
    ("f64", 10, "f64", 12345.6789, 1.0),
    ("u64", 14, "u64", 1_234_567_890_123.0, 1.0),
    ("i64", 18, "i64", -1_234_567_890_123.0, 1.0),
];
const ORDERS: [(&str, u16); 4] = [("ABCD", 0), ("CDAB", 100), ("BADC", 200), ("DCBA", 300)];

fn byte_order_points(device: &str, tables: bool) -> String {
    let mut s = String::new();
    for (order, base) in ORDERS {
        for (name, off, ty, _, scale) in KNOWN {
            s += &format!(
                "[[points]]\nid = \"{name}-{order}\"\nname = \"{name}\"\nkind = \"other\"\nunit = \"\"\nrange_min = -1e13\nrange_max = 1e13\ndevice = \"{device}\"\nmodbus = {{ table = \"holding\", address = {}, data_type = \"{ty}\", byte_order = \"{order}\", scale = {scale} }}\n\n",
                base + off
            );
        }
    }
    if tables {
        for i in 0..8 {
            s += &format!("[[points]]\nid = \"coil{i}\"\nname = \"c\"\nkind = \"switch\"\nunit = \"\"\nrange_min = 0\nrange_max = 1\ndevice = \"{device}\"\nmodbus = {{ table = \"coil\", address = {i}, data_type = \"bool\" }}\n\n");
            s += &format!("[[points]]\nid = \"di{i}\"\nname = \"d\"\nkind = \"switch\"\nunit = \"\"\nrange_min = 0\nrange_max = 1\ndevice = \"{device}\"\nmodbus = {{ table = \"discrete_input\", address = {i}, data_type = \"bool\" }}\n\n");
        }
        s += &format!("[[points]]\nid = \"in-f32\"\nname = \"i\"\nkind = \"other\"\nunit = \"\"\nrange_min = -1e6\nrange_max = 1e6\ndevice = \"{device}\"\nmodbus = {{ table = \"input\", address = 8, data_type = \"f32\" }}\n\n");
    }
    s
}

fn check_known(gw: &Gw, orders: &[(&str, u16)]) {
    for (order, _) in orders {
        for (name, _, ty, want, _) in KNOWN {
            let id = format!("{name}-{order}");
            let got = gw.cap.last_good(gw.p(&id)).unwrap_or(f64::NAN);
            let tol = if ty == "f32" { 1e-4 } else { 1e-9 };
            assert!(
                (got - want).abs() <= tol * want.abs().max(1.0),
                "{id}: got {got}, want {want}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_data_type_and_byte_order_with_few_requests() {
    let sc = scenario_file("byte-orders");
    let farm = farm(&sc, None).await;
    let addr = farm.addr_of("bo").unwrap();
    let cfg = config(&format!(
        "[[devices]]\nid = \"bo\"\nprotocol = \"modbus_tcp\"\nhost = \"127.0.0.1\"\nport = {}\npoll_interval_ms = 200\n\n{}",
        addr.port(),
        byte_order_points("bo", true)
    ));
    let gw = start(&cfg);
    let (f64_dcba, di7) = (gw.p("f64-DCBA"), gw.p("di7"));
    wait_for("the first complete poll", 30, || {
        gw.cap.last_good(f64_dcba).is_some() && gw.cap.last_good(di7).is_some()
    })
    .await;
    check_known(&gw, &ORDERS);
    let coils: Vec<f64> = (0..8)
        .map(|i| gw.cap.last_good(gw.p(&format!("coil{i}"))).unwrap())
        .collect();
    assert_eq!(coils, [1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 0.0]);
    let dis: Vec<f64> = (0..8)
        .map(|i| gw.cap.last_good(gw.p(&format!("di{i}"))).unwrap())
        .collect();
    assert_eq!(dis, [0.0, 1.0, 1.0, 0.0, 1.0, 0.0, 0.0, 1.0]);
    assert!((gw.cap.last_good(gw.p("in-f32")).unwrap() - 123.456).abs() < 1e-4);
    // 57 points in 7 requests: 4 holding blocks (one per order), input, coils, discrete.
    let st = gw.stats("bo");
    assert_eq!(st.blocks.load(Ordering::Relaxed), 7);
    let (polls, requests) = (
        st.polls.load(Ordering::Relaxed),
        st.requests.load(Ordering::Relaxed),
    );
    assert!(
        requests <= polls * 7,
        "{requests} requests for {polls} polls"
    );
    gw.stop().await;
    farm.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtu_over_tcp_reads_the_same_values() {
    let sc = scenario_file("byte-orders");
    let farm = farm(&sc, None).await;
    let addr = farm.addr_of("bo-rtu").unwrap();
    let cfg = config(&format!(
        "[[devices]]\nid = \"rtu\"\nprotocol = \"modbus_rtu_over_tcp\"\nhost = \"127.0.0.1\"\nport = {}\npoll_interval_ms = 200\n\n{}",
        addr.port(),
        byte_order_points("rtu", false)
    ));
    let gw = start(&cfg);
    let p = gw.p("i64-DCBA");
    wait_for("a poll over RTU framing", 30, || {
        gw.cap.last_good(p).is_some()
    })
    .await;
    check_known(&gw, &ORDERS);
    gw.stop().await;
    farm.shutdown().await;
}

const SPLIT_SCENARIO: &str = r#"
name = "split"
seed = 1
[[devices]]
id = "plc"
port = 1
points = [
  { id = "a", table = "holding", address = 0, value = 11 },
  { id = "b", table = "holding", address = 1, value = 12 },
  { id = "c", table = "holding", address = 2, value = 13 },
  { id = "d", table = "holding", address = 3, value = 14 },
  { id = "e", table = "holding", address = 10, value = 15 },
]
exceptions = [
  { code = 2, table = "holding", start = 2, count = 1 },
  { code = 6, table = "holding", start = 10, count = 1 },
]
"#;

fn plc_points(addresses: &[(&str, u16)]) -> String {
    addresses
        .iter()
        .map(|(id, a)| format!("[[points]]\nid = \"{id}\"\nname = \"{id}\"\nkind = \"other\"\nunit = \"\"\nrange_min = 0\nrange_max = 100\ndevice = \"plc\"\nmodbus = {{ table = \"holding\", address = {a}, data_type = \"u16\" }}\n\n"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_bad_address_does_not_blank_its_neighbours() {
    let sc = Scenario::parse(SPLIT_SCENARIO).unwrap();
    let farm = farm(&sc, None).await;
    let addr = farm.addr_of("plc").unwrap();
    let cfg = config(&format!(
        "[[devices]]\nid = \"plc\"\nprotocol = \"modbus_tcp\"\nhost = \"127.0.0.1\"\nport = {}\npoll_interval_ms = 100\nmax_gap_registers = 2\n\n{}",
        addr.port(),
        plc_points(&[("a", 0), ("b", 1), ("c", 2), ("d", 3), ("e", 10)])
    ));
    let gw = start(&cfg);
    let (a, b, c, d, e) = (gw.p("a"), gw.p("b"), gw.p("c"), gw.p("d"), gw.p("e"));
    let last = |p: PointId| gw.cap.readings_of(p).last().map(|r| (r.value, r.quality));
    wait_for("the bad address isolated", 30, || {
        last(c).is_some_and(|(_, q)| q == Quality::DeviceException(2))
            && last(d).is_some_and(|(_, q)| q == Quality::Good)
    })
    .await;
    assert_eq!(last(a), Some((11.0, Quality::Good)));
    assert_eq!(last(b), Some((12.0, Quality::Good)));
    assert_eq!(last(d), Some((14.0, Quality::Good)));
    // Busy (06) is not an address problem: no split, the point carries the code.
    assert!(matches!(last(e), Some((v, Quality::DeviceException(6))) if v.is_nan()));
    let st = gw.stats("plc");
    // [a b c d] → [a b] [c d] → [c] [d], plus [e]: 4 blocks after 2 splits.
    assert_eq!(st.splits.load(Ordering::Relaxed), 2);
    assert_eq!(st.blocks.load(Ordering::Relaxed), 4);
    // The split is remembered: no further splits on later polls.
    let polls = st.polls.load(Ordering::Relaxed);
    wait_for("two more polls", 30, || {
        st.polls.load(Ordering::Relaxed) >= polls + 2
    })
    .await;
    assert_eq!(st.splits.load(Ordering::Relaxed), 2);
    // The device answered (exceptions are answers): it is online, no offline alarm.
    assert!(st.online.load(Ordering::Relaxed));
    assert!(gw
        .cap
        .alarm_transitions()
        .iter()
        .all(|(_, p)| *p != gw.p("device:plc")));
    gw.stop().await;
    farm.shutdown().await;
}

const OFFLINE_SCENARIO: &str = r#"
name = "offline"
seed = 1
[[signals]]
id = "ch4"
keyframes = [[0, 0.30]]
[[devices]]
id = "refused"
port = 1
offline = [{ from_s = 10, to_s = 20, mode = "refuse" }]
points = [{ id = "a", table = "holding", address = 0, scale = 100, signal = "ch4" }, { id = "b", table = "holding", address = 1, scale = 100, signal = "ch4" }]
[[devices]]
id = "silent"
port = 2
offline = [{ from_s = 10, to_s = 20, mode = "silent" }]
points = [{ id = "a", table = "holding", address = 0, scale = 100, signal = "ch4" }]
[[devices]]
id = "healthy"
port = 3
points = [{ id = "a", table = "holding", address = 0, scale = 100, signal = "ch4" }]
"#;

fn device(id: &str, port: u16, extra: &str) -> String {
    format!("[[devices]]\nid = \"{id}\"\nprotocol = \"modbus_tcp\"\nhost = \"127.0.0.1\"\nport = {port}\npoll_interval_ms = 100\ntimeout_ms = 300\nretries = 0\noffline_retry_ms = 300\n{extra}\n")
}

fn ch4_point(id: &str, device: &str, address: u16) -> String {
    format!("[[points]]\nid = \"{id}\"\nname = \"{id}\"\nkind = \"ch4\"\nunit = \"%CH4\"\nrange_min = 0\nrange_max = 4\ndevice = \"{device}\"\nmodbus = {{ table = \"holding\", address = {address}, data_type = \"u16\", scale = 0.01 }}\n  [[points.thresholds]]\n  name = \"报警\"\n  direction = \"high\"\n  trigger = 1.0\n  restore = 1.0\n  colour = \"orange\"\n\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_devices_raise_one_parent_alarm_each_and_never_delay_other_links() {
    let sc = Scenario::parse(OFFLINE_SCENARIO).unwrap();
    let clock = Clock::manual(0.0);
    let farm = farm(&sc, Some(clock.clone())).await;
    let port = |d: &str| farm.addr_of(d).unwrap().port();
    let cfg = config(&format!(
        "{}{}{}{}{}{}{}",
        device("refused", port("refused"), ""),
        device("silent", port("silent"), ""),
        device("healthy", port("healthy"), ""),
        ch4_point("r-a", "refused", 0),
        ch4_point("r-b", "refused", 1),
        ch4_point("s-a", "silent", 0),
        ch4_point("h-a", "healthy", 0),
    ));
    let gw = start(&cfg);
    let (ra, rb, sa, ha) = (gw.p("r-a"), gw.p("r-b"), gw.p("s-a"), gw.p("h-a"));
    wait_for("first readings", 30, || {
        [ra, rb, sa, ha]
            .iter()
            .all(|p| gw.cap.last_good(*p) == Some(0.3))
    })
    .await;
    gw.cap.clear();

    clock.set_s(10.0); // both devices die
    let (dev_r, dev_s) = (gw.p("device:refused"), gw.p("device:silent"));
    wait_for("two parent alarms", 30, || {
        let t = gw.cap.alarm_transitions();
        t.contains(&(Transition::Raised, dev_r)) && t.contains(&(Transition::Raised, dev_s))
    })
    .await;
    // Within two poll cycles: at most two failed polls before the alarm.
    let raised_at = |dev: PointId| {
        gw.cap
            .0
            .lock()
            .unwrap()
            .events
            .iter()
            .find_map(|e| match e {
                hazgate::engine::Event::Alarm(a)
                    if a.alarm.point == dev && a.transition == Transition::Raised =>
                {
                    Some(a.ts)
                }
                _ => None,
            })
            .unwrap()
    };
    for (dev, p) in [(dev_r, ra), (dev_s, sa)] {
        let at = raised_at(dev);
        let failed = gw
            .cap
            .readings_of(p)
            .iter()
            .filter(|r| r.quality == Quality::CommFail && r.ts <= at)
            .count();
        assert!(
            (1..=2).contains(&failed),
            "{failed} failed polls before the device alarm"
        );
    }
    // One parent alarm per device, none per point.
    let raised: Vec<PointId> = gw
        .cap
        .alarm_transitions()
        .iter()
        .filter(|(t, _)| *t == Transition::Raised)
        .map(|(_, p)| *p)
        .collect();
    assert_eq!(raised.len(), 2, "exactly the two device alarms: {raised:?}");
    // The silent device times out (bounded by timeout_ms) and does not hold up the healthy link.
    let healthy_before = gw.cap.readings_of(ha).len();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let healthy_polls = gw.cap.readings_of(ha).len() - healthy_before;
    assert!(
        healthy_polls >= 5,
        "healthy link kept polling: {healthy_polls} readings in 1 s"
    );
    assert!(gw.stats("silent").timeouts.load(Ordering::Relaxed) >= 1);

    clock.set_s(25.0); // both back
    wait_for("both devices back", 30, || {
        let t = gw.cap.alarm_transitions();
        t.contains(&(Transition::ReturnedToNormal, dev_r))
            && t.contains(&(Transition::ReturnedToNormal, dev_s))
    })
    .await;
    wait_for("good values again", 30, || {
        gw.cap
            .readings_of(ra)
            .last()
            .is_some_and(|r| r.quality == Quality::Good)
    })
    .await;
    gw.stop().await;
    farm.shutdown().await;
}

const GATEWAY_SCENARIO: &str = r#"
name = "serial-server"
seed = 1
[[devices]]
id = "u1"
endpoint = "gw"
port = 1
unit_id = 1
offline = [{ from_s = 10, mode = "refuse" }]
points = [{ id = "a", table = "holding", address = 0, value = 30 }]
[[devices]]
id = "u2"
endpoint = "gw"
port = 1
unit_id = 2
offline = [{ from_s = 20, mode = "refuse" }]
points = [{ id = "a", table = "holding", address = 0, value = 40 }]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_serial_server_with_every_device_dead_raises_a_link_alarm() {
    let sc = Scenario::parse(GATEWAY_SCENARIO).unwrap();
    let clock = Clock::manual(0.0);
    let farm = farm(&sc, Some(clock.clone())).await;
    let port = farm.addr_of("u1").unwrap().port();
    let dev = |id: &str, unit: u8| {
        format!("[[devices]]\nid = \"{id}\"\nprotocol = \"modbus_tcp\"\nhost = \"127.0.0.1\"\nport = {port}\nunit_id = {unit}\npoll_interval_ms = 100\ntimeout_ms = 300\noffline_retry_ms = 200\n\n")
    };
    let pt = |id: &str, d: &str| {
        format!("[[points]]\nid = \"{id}\"\nname = \"{id}\"\nkind = \"other\"\nunit = \"\"\nrange_min = 0\nrange_max = 100\ndevice = \"{d}\"\nmodbus = {{ table = \"holding\", address = 0, data_type = \"u16\" }}\n\n")
    };
    let cfg = config(&format!(
        "{}{}{}{}",
        dev("u1", 1),
        dev("u2", 2),
        pt("p1", "u1"),
        pt("p2", "u2")
    ));
    let gw = start(&cfg);
    let link = gw.p(&format!("link:tcp://127.0.0.1:{port}"));
    let (p1, p2) = (gw.p("p1"), gw.p("p2"));
    wait_for("both units answer", 30, || {
        gw.cap.last_good(p1) == Some(30.0) && gw.cap.last_good(p2) == Some(40.0)
    })
    .await;

    clock.set_s(10.0); // unit 1 dead behind the server: 0B
    wait_for("unit 1 offline", 30, || {
        gw.cap
            .alarm_transitions()
            .contains(&(Transition::Raised, gw.p("device:u1")))
    })
    .await;
    assert!(gw
        .cap
        .readings_of(p1)
        .iter()
        .any(|r| r.quality == Quality::DeviceException(0x0B)));
    assert!(
        !gw.cap.alarm_transitions().iter().any(|(_, p)| *p == link),
        "one unit left: the link is up"
    );

    clock.set_s(20.0); // unit 2 too: the whole server is down
    wait_for("link alarm", 30, || {
        gw.cap
            .alarm_transitions()
            .contains(&(Transition::Raised, link))
    })
    .await;
    gw.stop().await;
    farm.shutdown().await;
}

const SLOW_SCENARIO: &str = r#"
name = "slow"
seed = 1
[[devices]]
id = "slow"
port = 1
response_delay_ms = 700
points = [{ id = "a", table = "holding", address = 0, value = 7 }]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_device_answers_within_a_long_timeout_and_fails_a_short_one() {
    let sc = Scenario::parse(SLOW_SCENARIO).unwrap();
    let farm = farm(&sc, None).await;
    let port = farm.addr_of("slow").unwrap().port();
    let dev = |id: &str, timeout: u64| {
        format!("[[devices]]\nid = \"{id}\"\nprotocol = \"modbus_tcp\"\nhost = \"127.0.0.1\"\nport = {port}\npoll_interval_ms = 1000\ntimeout_ms = {timeout}\nretries = 0\n\n")
    };
    let pt = |id: &str, d: &str| {
        format!("[[points]]\nid = \"{id}\"\nname = \"{id}\"\nkind = \"other\"\nunit = \"\"\nrange_min = 0\nrange_max = 100\ndevice = \"{d}\"\nmodbus = {{ table = \"holding\", address = 0, data_type = \"u16\" }}\n\n")
    };
    let cfg = config(&format!(
        "{}{}{}{}",
        dev("patient", 2000),
        dev("hasty", 200),
        pt("p", "patient"),
        pt("h", "hasty")
    ));
    let gw = start(&cfg);
    let (p, h) = (gw.p("p"), gw.p("h"));
    wait_for("the patient poll answered", 30, || {
        gw.cap.last_good(p) == Some(7.0)
    })
    .await;
    wait_for("the hasty poll timed out", 30, || {
        gw.cap
            .readings_of(h)
            .iter()
            .any(|r| r.quality == Quality::CommFail)
    })
    .await;
    let rtt = gw.stats("patient").last_rtt_us.load(Ordering::Relaxed);
    assert!(rtt >= 650_000, "round trip measured: {rtt} µs");
    assert!(gw.stats("hasty").timeouts.load(Ordering::Relaxed) >= 1);
    assert!(
        gw.cap
            .readings_of(h)
            .iter()
            .all(|r| r.quality != Quality::Good),
        "a timed-out read is never passed on as good"
    );
    gw.stop().await;
    farm.shutdown().await;
}

const GRADED_SCENARIO: &str = r#"
name = "graded"
seed = 1
[[devices]]
id = "quiet"
port = 1
points = [{ id = "a", table = "holding", address = 0, value = 30 }]
[[devices]]
id = "near"
port = 2
points = [{ id = "a", table = "holding", address = 0, value = 95 }]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_point_near_its_threshold_polls_its_device_fast() {
    let sc = Scenario::parse(GRADED_SCENARIO).unwrap();
    let farm = farm(&sc, None).await;
    let dev = |id: &str| {
        format!(
            "[[devices]]\nid = \"{id}\"\nprotocol = \"modbus_tcp\"\nhost = \"127.0.0.1\"\nport = {}\npoll_interval_ms = 2000\nfast_poll_interval_ms = 100\nfast_margin_pct = 10\n\n",
            farm.addr_of(id).unwrap().port()
        )
    };
    // Threshold 100 on a 0–200 range: margin 20, so ≥ 80 polls fast.
    let pt = |id: &str, d: &str| {
        format!("[[points]]\nid = \"{id}\"\nname = \"{id}\"\nkind = \"pressure\"\nunit = \"kPa\"\nrange_min = 0\nrange_max = 200\ndevice = \"{d}\"\nmodbus = {{ table = \"holding\", address = 0, data_type = \"u16\" }}\n  [[points.thresholds]]\n  name = \"高压\"\n  direction = \"high\"\n  trigger = 100\n  restore = 100\n  colour = \"orange\"\n\n")
    };
    let cfg = config(&format!(
        "{}{}{}{}",
        dev("quiet"),
        dev("near"),
        pt("q", "quiet"),
        pt("n", "near")
    ));
    let gw = start(&cfg);
    let (q, n) = (gw.p("q"), gw.p("n"));
    wait_for("first polls", 30, || {
        gw.cap.last_good(q).is_some() && gw.cap.last_good(n).is_some()
    })
    .await;
    let (q0, n0) = (gw.cap.readings_of(q).len(), gw.cap.readings_of(n).len());
    wait_for("ten fast polls", 30, || {
        gw.cap.readings_of(n).len() >= n0 + 10
    })
    .await;
    assert!(gw.stats("near").fast.load(Ordering::Relaxed));
    assert!(!gw.stats("quiet").fast.load(Ordering::Relaxed));
    assert!(
        gw.cap.readings_of(q).len() <= q0 + 1,
        "the quiet device stays on its 2 s grid"
    );
    gw.stop().await;
    farm.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writing_the_power_cut_coil_drops_the_feed() {
    let sc = scenario_file("relay");
    let clock = Clock::manual(0.0);
    let farm = farm(&sc, Some(clock.clone())).await;
    let port = farm.addr_of("power-cut").unwrap().port();
    let cfg = config(&format!(
        "[[devices]]\nid = \"relay\"\nprotocol = \"modbus_tcp\"\nhost = \"127.0.0.1\"\nport = {port}\npoll_interval_ms = 100\n\n\
         [[points]]\nid = \"feed\"\nname = \"馈电\"\nkind = \"switch\"\nunit = \"\"\nrange_min = 0\nrange_max = 1\ndevice = \"relay\"\nmodbus = {{ table = \"discrete_input\", address = 0, data_type = \"bool\" }}\n"
    ));
    let gw = start(&cfg);
    let feed = gw.p("feed");
    wait_for("feed powered", 30, || gw.cap.last_good(feed) == Some(1.0)).await;
    gw.running
        .writer
        .write(
            "relay",
            Write::Coil {
                address: 0,
                value: true,
            },
        )
        .await
        .unwrap();
    clock.advance_s(1.5); // past the relay's 1000 ms cut delay
    wait_for("feed dropped", 30, || gw.cap.last_good(feed) == Some(0.0)).await;
    let err = gw
        .running
        .writer
        .write(
            "nope",
            Write::Coil {
                address: 0,
                value: true,
            },
        )
        .await;
    assert!(err.is_err());
    gw.stop().await;
    farm.shutdown().await;
}

const WRITABLE_SCENARIO: &str = r#"
name = "writable"
seed = 1
[[devices]]
id = "plc"
port = 1
points = [
  { id = "a", table = "holding", address = 0, value = 1 },
  { id = "b", table = "holding", address = 1, value = 2 },
  { id = "c", table = "holding", address = 2, value = 3 },
  { id = "k0", table = "coil", address = 0, value = 0 },
  { id = "k1", table = "coil", address = 1, value = 0 },
]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_write_function_code_reaches_the_device() {
    let sc = Scenario::parse(WRITABLE_SCENARIO).unwrap();
    let farm = farm(&sc, None).await;
    let port = farm.addr_of("plc").unwrap().port();
    let pt = |id: &str, table: &str, address: u16, ty: &str| {
        format!("[[points]]\nid = \"{id}\"\nname = \"{id}\"\nkind = \"other\"\nunit = \"\"\nrange_min = 0\nrange_max = 1000\ndevice = \"plc\"\nmodbus = {{ table = \"{table}\", address = {address}, data_type = \"{ty}\" }}\n\n")
    };
    let cfg = config(&format!(
        "[[devices]]\nid = \"plc\"\nprotocol = \"modbus_tcp\"\nhost = \"127.0.0.1\"\nport = {port}\npoll_interval_ms = 100\n\n{}{}{}{}{}",
        pt("a", "holding", 0, "u16"),
        pt("b", "holding", 1, "u16"),
        pt("c", "holding", 2, "u16"),
        pt("k0", "coil", 0, "bool"),
        pt("k1", "coil", 1, "bool"),
    ));
    let gw = start(&cfg);
    let v = |id: &str| gw.cap.last_good(gw.p(id));
    wait_for("first poll", 30, || {
        v("c") == Some(3.0) && v("k1") == Some(0.0)
    })
    .await;
    let w = &gw.running.writer;
    w.write(
        "plc",
        Write::Register {
            address: 0,
            value: 100,
        },
    )
    .await
    .unwrap(); // 06
    w.write(
        "plc",
        Write::Registers {
            address: 1,
            values: vec![200, 300],
        },
    )
    .await
    .unwrap(); // 16
    w.write(
        "plc",
        Write::Coils {
            address: 0,
            values: vec![true, true],
        },
    )
    .await
    .unwrap(); // 15
    wait_for("the written values polled back", 30, || {
        v("a") == Some(100.0)
            && v("b") == Some(200.0)
            && v("c") == Some(300.0)
            && v("k0") == Some(1.0)
            && v("k1") == Some(1.0)
    })
    .await;
    // A write to an address the device does not have comes back as its exception.
    match w
        .write(
            "plc",
            Write::Register {
                address: 500,
                value: 1,
            },
        )
        .await
    {
        Err(hazgate::sources::modbus::poller::WriteError::Exception(_, code)) => {
            assert_eq!(code, 2)
        }
        other => panic!("expected exception 02, got {other:?}"),
    }
    gw.stop().await;
    farm.shutdown().await;
}
