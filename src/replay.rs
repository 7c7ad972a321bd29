//! Replay recorded readings through the engine: check a site's thresholds against
//! real data before they go live, or see what an incident would have raised.
//!
//! Input is CSV, one reading per line: `ts_ms,point,value[,quality]`, where `ts_ms`
//! is milliseconds since the Unix epoch, `point` a configured point id, `value` a
//! number, and `quality` optionally one of the `Quality` names (default `good`).
//! Blank lines and lines starting with `#` are skipped; a header line starting with
//! `ts` is allowed. Before each reading the engine is ticked to its time, so delays,
//! stale detection and shelve expiry happen as they would live.
//!
//! Points that never appear in the input are left out of stale detection, so a
//! recording of a few points does not report the rest of the site as silent.
//!
//! Output is one JSON object per line per engine event. A malformed line is reported
//! with its line number, counted, and skipped; it never stops the replay and is never
//! turned into a value.

use crate::engine::{Engine, EngineSpec, Event};
use crate::model::{PointId, Quality, Reading, Timestamp};
use serde_json::json;
use std::collections::HashMap;
use std::io::{BufRead, Write};

/// What a replay did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplaySummary {
    pub readings: u64,
    pub events: u64,
    pub alarms_raised: u64,
    /// Malformed lines, each `(line number, message)`.
    pub bad_lines: Vec<(usize, String)>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("reading input: {0}")]
    Read(std::io::Error),
    #[error("writing events: {0}")]
    Write(std::io::Error),
}

/// Replay `input` through a fresh engine built from `spec`, writing events to `out`.
pub fn replay(
    mut spec: EngineSpec,
    input: impl BufRead,
    mut out: impl Write,
) -> Result<ReplaySummary, ReplayError> {
    let lines: Vec<String> = input
        .lines()
        .collect::<Result<_, _>>()
        .map_err(ReplayError::Read)?;
    let mentioned: std::collections::HashSet<&str> = lines
        .iter()
        .filter_map(|l| l.split(',').nth(1).map(str::trim))
        .collect();
    for p in &mut spec.points {
        if !mentioned.contains(p.id.as_str()) {
            p.stale_after_ms = None;
        }
    }
    let ids: HashMap<String, PointId> = spec
        .points
        .iter()
        .enumerate()
        .map(|(i, p)| (p.id.clone(), PointId(i as u32)))
        .collect();
    let names: Vec<String> = spec.points.iter().map(|p| p.id.clone()).collect();
    let sources: Vec<String> = spec.hazard_sources.iter().map(|h| h.id.clone()).collect();
    let mut engine: Option<Engine> = None;
    let mut spec = Some(spec);
    let mut summary = ReplaySummary::default();
    let mut events = Vec::new();
    let mut last_ts = i64::MIN;
    for (n, line) in lines.iter().enumerate() {
        let line_no = n + 1;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || (line_no == 1 && line.starts_with("ts")) {
            continue;
        }
        let reading = match parse_line(line, &ids) {
            Ok(r) => r,
            Err(msg) => {
                summary.bad_lines.push((line_no, msg));
                continue;
            }
        };
        let e = match engine.as_mut() {
            Some(e) => e,
            None => engine.insert(Engine::new(spec.take().unwrap_or_default(), reading.ts, 1)),
        };
        if reading.ts.0 > last_ts {
            e.tick(reading.ts, &mut events);
            last_ts = reading.ts.0;
        }
        e.on_reading(reading, &mut events);
        summary.readings += 1;
        write_events(&mut events, &names, &sources, &mut summary, &mut out)?;
    }
    if let Some(e) = engine.as_mut() {
        // Let the last delays elapse.
        let end = Timestamp(last_ts).plus_ms(1);
        e.tick(end, &mut events);
        write_events(&mut events, &names, &sources, &mut summary, &mut out)?;
    }
    out.flush().map_err(ReplayError::Write)?;
    Ok(summary)
}

fn parse_line(line: &str, ids: &HashMap<String, PointId>) -> Result<Reading, String> {
    let fields: Vec<&str> = line.split(',').map(str::trim).collect();
    if !(3..=4).contains(&fields.len()) {
        return Err(format!(
            "expected `ts_ms,point,value[,quality]`, found {} field(s)",
            fields.len()
        ));
    }
    let ts: i64 = fields[0]
        .parse()
        .map_err(|_| format!("`{}` is not a timestamp in milliseconds", fields[0]))?;
    let point = *ids
        .get(fields[1])
        .ok_or_else(|| format!("unknown point `{}`", fields[1]))?;
    let (value, mut quality) = match fields[2].parse::<f64>() {
        Ok(v) => (v, Quality::Good),
        // Kept as a reading with bad quality: the point's history shows the gap.
        Err(_) => (f64::NAN, Quality::BadData),
    };
    if let Some(q) = fields.get(3) {
        if quality == Quality::Good {
            quality = if q.is_empty() {
                Quality::Good
            } else {
                q.parse()?
            };
        }
    }
    Ok(Reading {
        point,
        ts: Timestamp(ts),
        value,
        quality,
    })
}

fn write_events(
    events: &mut Vec<Event>,
    names: &[String],
    sources: &[String],
    summary: &mut ReplaySummary,
    out: &mut impl Write,
) -> Result<(), ReplayError> {
    for ev in events.drain(..) {
        summary.events += 1;
        let line = match &ev {
            Event::Alarm(a) => {
                if a.transition == crate::engine::Transition::Raised {
                    summary.alarms_raised += 1;
                }
                json!({
                    "ts": a.ts,
                    "event": "alarm",
                    "transition": a.transition,
                    "point": names.get(a.alarm.point.0 as usize),
                    "alarm": a.alarm,
                })
            }
            Event::Risk(r) => json!({
                "ts": r.ts,
                "event": "risk",
                "hazard_source": sources.get(r.source.0 as usize),
                "previous": r.previous,
                "colour": r.colour,
            }),
            Event::Flood {
                change,
                per_10min,
                ts,
            } => json!({
                "ts": ts,
                "event": "flood",
                "started": *change == crate::engine::FloodChange::Started,
                "per_10min": per_10min,
            }),
            Event::Stale(r) => json!({
                "ts": r.ts,
                "event": "stale",
                "point": names.get(r.point.0 as usize),
                "last_value": r.value,
            }),
        };
        writeln!(out, "{line}").map_err(ReplayError::Write)?;
    }
    Ok(())
}
