//! MQTT-fed gas detectors through the whole gateway: a combustible-gas reading
//! published to a real Mosquitto raises the GB/T 50493 level-1 and level-2 alarms in
//! the engine, and a broker outage raises one device alarm.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod gw;
#[path = "support/mosquitto.rs"]
mod mosquitto;

use gw::{config, point, wait_for, Capture};
use hazgate::engine::Transition;
use hazgate::gateway::{self, Plan};
use mosquitto::Mosquitto;
use std::time::Duration;
use tokio::sync::watch;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn combustible_gas_over_mqtt_raises_graded_alarms() {
    let mut broker = Mosquitto::start().await;
    let cfg = config(&format!(
        r#"
[[devices]]
id = "lel-gw"
protocol = "mqtt"
broker = "mqtt://127.0.0.1:{}"
topic_prefix = "plant/tankfarm/"
point_topic = "{{point}}/data"
poll_interval_ms = 500
offline_after_ms = 500

[[points]]
id = "LEL-TK1"
name = "储罐区可燃气体"
kind = "combustible"
unit = "%LEL"
range_min = 0
range_max = 100
device = "lel-gw"
  [[points.thresholds]]
  name = "一级报警"
  direction = "high"
  trigger = 25
  restore = 25
  colour = "orange"
  [[points.thresholds]]
  name = "二级报警"
  direction = "high"
  trigger = 50
  restore = 50
  colour = "red"
"#,
        broker.port
    ));
    let plan = Plan::from_config(&cfg);
    let spec = plan.spec.clone();
    let cap = Capture::default();
    let (stop, shutdown) = watch::channel(false);
    let running = gateway::start(plan, cap.clone(), shutdown, 1);
    let lel = point(&spec, "LEL-TK1");
    let device = point(&spec, "device:lel-gw");

    // Publish until the subscription is in place and the reading arrives.
    wait_for("the first reading over MQTT", 20, || {
        broker.publish("plant/tankfarm/LEL-TK1/data", br#"{"value": 12.5}"#, 1);
        cap.last_good(lel) == Some(12.5)
    })
    .await;
    broker.publish("plant/tankfarm/LEL-TK1/data", br#"{"value": 30}"#, 1);
    wait_for("level 1", 30, || {
        cap.alarm_transitions().contains(&(Transition::Raised, lel))
    })
    .await;
    broker.publish("plant/tankfarm/LEL-TK1/data", b"55", 1);
    wait_for("level 2", 30, || {
        cap.alarm_transitions()
            .contains(&(Transition::Escalated, lel))
    })
    .await;

    // The broker goes away: one device alarm, and it clears when the broker is back.
    broker.stop();
    wait_for("device offline alarm", 20, || {
        cap.alarm_transitions()
            .contains(&(Transition::Raised, device))
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let raised = cap
        .alarm_transitions()
        .iter()
        .filter(|(t, _)| *t == Transition::Raised)
        .count();
    assert_eq!(raised, 2, "the value alarm and the one device alarm");
    broker.run().await;
    wait_for("device back", 20, || {
        cap.alarm_transitions()
            .contains(&(Transition::ReturnedToNormal, device))
    })
    .await;

    stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(10), running.join())
        .await
        .unwrap();
}
