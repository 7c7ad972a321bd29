//! A full disk raises one storage alarm that reaches the engine (and so the dashboard
//! and the uplink), alarm transitions keep being committed while readings cannot be,
//! and the alarm returns to normal when space comes back.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod gw;

use gw::{config, point, wait_for};
use hazgate::gateway::{self, Plan, StoreOutputs};
use hazgate::model::{PointId, Quality, Reading, Timestamp};
use hazgate::store::{Store, StoreOptions, StoreWriter};
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::watch;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_raises_the_storage_alarm_and_clears_it_when_space_returns() {
    let cfg = config(
        "[[devices]]\nid = \"plc\"\nprotocol = \"modbus_tcp\"\nhost = \"127.0.0.1\"\nport = 1\npoll_interval_ms = 1000\n\n\
         [[points]]\nid = \"P\"\nname = \"p\"\nkind = \"pressure\"\nunit = \"kPa\"\nrange_min = 0\nrange_max = 1000000\ndevice = \"plc\"\nmodbus = { table = \"holding\", address = 0, data_type = \"u16\" }\n",
    );
    let plan = Plan::from_config(&cfg);
    let spec = plan.spec.clone();
    let storage = plan.storage_point;
    assert_eq!(storage, point(&spec, "system:storage"));
    let dir = tempfile::tempdir().unwrap();
    let opts = StoreOptions {
        path: dir.path().join("hazgate.db"),
        store_every_reading: true,
        disk_limit_bytes: Some(256 * 1024),
        tick_ms: 20,
        ..StoreOptions::default()
    };
    let mut store = Store::open(&opts).unwrap();
    store.register_points(&cfg.point_meta(&spec)).unwrap();
    let (writer, writer_task) = StoreWriter::spawn(store);
    let status = writer.status().clone();
    let (stop, shutdown) = watch::channel(false);
    let running = gateway::start(
        plan,
        StoreOutputs {
            writer: writer.clone(),
            wake: Vec::new(),
            lost: 0,
        },
        shutdown.clone(),
        1,
    );
    let watcher = tokio::spawn(gateway::watch_storage(
        status.clone(),
        storage,
        running.control.clone(),
        shutdown,
    ));
    let storage_alarm_active = |live: &watch::Receiver<std::sync::Arc<gateway::Snapshot>>| {
        live.borrow()
            .alarms
            .iter()
            .any(|a| a.point == storage && a.is_active())
    };

    // Fill the store past its limit with readings of the configured point.
    let mut t = 1_700_000_000_000i64;
    while !status.degraded.load(Ordering::Relaxed) {
        let batch: Vec<Reading> = (0..1000)
            .map(|i| Reading {
                point: PointId(0),
                ts: Timestamp(t + i),
                value: (t + i) as f64 % 100_000.0,
                quality: Quality::Good,
            })
            .collect();
        t += 1000;
        writer.send_readings(batch).await.unwrap();
        tokio::task::yield_now().await;
        assert!(t < 1_700_000_000_000 + 5_000_000, "the store never filled");
    }
    let live = running.live.clone();
    wait_for("the storage alarm", 30, || storage_alarm_active(&live)).await;
    // The alarm transition itself was committed despite the full disk.
    let reader = hazgate::store::Reader::open(&opts.path).unwrap();
    let open = reader.open_alarms().unwrap();
    assert!(open.iter().any(|(p, _)| p == "system:storage"), "{open:?}");

    // Space returns: the writer catches up and the alarm returns to normal.
    writer.set_disk_limit(None).await.unwrap();
    writer
        .send_readings(vec![Reading {
            point: PointId(0),
            ts: Timestamp(t + 1),
            value: 1.0,
            quality: Quality::Good,
        }])
        .await
        .unwrap();
    wait_for("storage back to normal", 30, || {
        !storage_alarm_active(&live)
    })
    .await;

    stop.send(true).unwrap();
    let _ = watcher.await;
    tokio::time::timeout(Duration::from_secs(10), running.join())
        .await
        .unwrap();
    // Stopping the gateway flushed and closed the store writer.
    writer_task.await.unwrap();
}
