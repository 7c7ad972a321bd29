//! Shared helpers for gateway tests: a capturing output, a config builder, and
//! waiting on a condition.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use hazgate::config::Config;
use hazgate::engine::{EngineSpec, Event, Transition};
use hazgate::gateway::Outputs;
use hazgate::model::{PointId, Quality, Reading};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Everything the gateway emitted, shared with the test.
#[derive(Clone, Default)]
pub struct Capture(pub Arc<Mutex<Captured>>);

#[derive(Default)]
pub struct Captured {
    pub readings: Vec<Reading>,
    pub events: Vec<Event>,
}

impl Outputs for Capture {
    async fn readings(&mut self, readings: Vec<Reading>) {
        self.0.lock().unwrap().readings.extend_from_slice(&readings);
    }
    async fn events(&mut self, _spec: &EngineSpec, events: &[Event]) {
        self.0.lock().unwrap().events.extend_from_slice(events);
    }
}

impl Capture {
    pub fn readings_of(&self, p: PointId) -> Vec<Reading> {
        self.0
            .lock()
            .unwrap()
            .readings
            .iter()
            .filter(|r| r.point == p)
            .copied()
            .collect()
    }

    pub fn last_good(&self, p: PointId) -> Option<f64> {
        self.readings_of(p)
            .iter()
            .rev()
            .find(|r| r.quality == Quality::Good)
            .map(|r| r.value)
    }

    /// (transition, point) of every alarm event so far.
    pub fn alarm_transitions(&self) -> Vec<(Transition, PointId)> {
        self.0
            .lock()
            .unwrap()
            .events
            .iter()
            .filter_map(|e| match e {
                Event::Alarm(a) => Some((a.transition, a.alarm.point)),
                _ => None,
            })
            .collect()
    }

    pub fn clear(&self) {
        let mut g = self.0.lock().unwrap();
        g.readings.clear();
        g.events.clear();
    }
}

/// A site config with the given `[[devices]]` and `[[points]]` text.
pub fn config(body: &str) -> Config {
    let text = format!(
        "[site]\nid = \"T\"\nname = \"test site\"\nkind = \"chemical_plant\"\nrule_profile = \"test\"\n\n{body}"
    );
    match Config::from_toml_str(&text, "test.toml") {
        Ok(c) => c,
        Err(e) => panic!("test config invalid: {e:?}\n{text}"),
    }
}

/// Index of a point (configured or synthetic) by id.
pub fn point(spec: &EngineSpec, id: &str) -> PointId {
    let i = spec
        .points
        .iter()
        .position(|p| p.id == id)
        .unwrap_or_else(|| panic!("no point {id}"));
    PointId(i as u32)
}

/// Poll `cond` every 10 ms until it holds, or fail after `secs`.
pub async fn wait_for(what: &str, secs: u64, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while !cond() {
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {secs} s waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
