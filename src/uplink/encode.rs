//! Pure encoders of uplink messages: the JSON schema and the legacy KJ text records.
//! No IO and no clock: everything, including the time, is an argument. The formats
//! are written down for the receiving side in `docs/uplink.md`.
//!
//! # Message ids
//!
//! Every message has an id that does not change when it is sent again (after an
//! outage, a restart or a `kill -9`), so the receiver can drop duplicates:
//!
//! | message | id |
//! | --- | --- |
//! | alarm transition | `<site>-a<alarm_events.seq>` |
//! | real-time batch | `<site>-r<first readings.seq>-<last readings.seq>`; each reading inside has `<site>-r<seq>` |
//! | statistics batch | `<site>-t<first stats seq>-<last stats seq>`; each window inside has `<site>-m<window start ms>-<point>-n<count>` |
//! | heartbeat | `<site>-h<ts ms>` |
//! | status | `<site>-s<ts ms>` |
//!
//! Batch boundaries may differ between two sends of the same readings (the batch is
//! cut at what the store holds at that moment), so receivers deduplicate real-time
//! data and statistics by the per-record id.
//!
//! A statistics record's id is its point and window plus the number of readings in
//! it: a re-send of the same figures has the same id, while a window revised by
//! later readings (a late reading, the rest of a window after a restart) gets a new
//! id with a larger count, which supersedes the earlier record.

use crate::engine::Alarm;
use crate::store::{PointRow, StoredAlarmEvent, StoredReading, StoredStat, BUCKET_MS};
use serde_json::{json, Map, Value};
use std::fmt::Write;

/// The `schema` field of every JSON message.
pub const SCHEMA: &str = "hazgate.uplink/1";

/// What a message carries; also the last segment of its MQTT topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageKind {
    Alarm,
    Realtime,
    /// 5-minute statistics.
    Stats,
    Heartbeat,
    Status,
}

impl MessageKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MessageKind::Alarm => "alarm",
            MessageKind::Realtime => "realtime",
            MessageKind::Stats => "stats",
            MessageKind::Heartbeat => "heartbeat",
            MessageKind::Status => "status",
        }
    }
}

/// Payload format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// JSON documents (`schema` = [`SCHEMA`]).
    #[default]
    Json,
    /// Legacy coal-mine networking text: `KJ;XXXX|` header, `;` fields, `~` after each
    /// record, `‖` at the end of the batch.
    KjText,
}

/// One message ready for a transport.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub id: String,
    pub kind: MessageKind,
    pub payload: Vec<u8>,
}

/// A threshold grade of a point, as configured.
#[derive(Debug, Clone, PartialEq)]
pub struct GradeInfo {
    pub name: String,
    /// `high` or `low`.
    pub direction: &'static str,
    pub trigger: f64,
    pub restore: f64,
    pub power_cut: bool,
}

/// What the encoders know of a point beyond the stored row.
pub trait Points {
    fn point(&self, pid: i64) -> Option<&PointRow>;
    /// Grade `index` of the point with configured id `point_id`.
    fn grade(&self, point_id: &str, index: u16) -> Option<&GradeInfo>;
}

fn num(v: f64) -> Value {
    serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number)
}

fn envelope(kind: MessageKind, id: &str, site: &str) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("schema".into(), SCHEMA.into());
    m.insert("type".into(), kind.as_str().into());
    m.insert("id".into(), id.into());
    m.insert("site".into(), site.into());
    m
}

fn to_bytes(v: &Map<String, Value>) -> Vec<u8> {
    // A map of strings and numbers always serialises.
    serde_json::to_vec(v).unwrap_or_default()
}

/// Id of the message carrying alarm event `seq`.
pub fn alarm_id(site: &str, seq: i64) -> String {
    format!("{site}-a{seq}")
}

/// Id of one reading.
pub fn reading_id(site: &str, seq: i64) -> String {
    format!("{site}-r{seq}")
}

/// One alarm transition. `alarm` is the event's `alarm_json` decoded (`None` when it
/// could not be: the message then still carries the stored columns).
pub fn alarm(
    format: Format,
    site: &str,
    utc_offset_min: i32,
    ev: &StoredAlarmEvent,
    alarm: Option<&Alarm>,
    points: &dyn Points,
) -> Message {
    let id = alarm_id(site, ev.seq);
    let point = ev.pid.and_then(|p| points.point(p));
    let grade = match (alarm, point) {
        (Some(a), Some(p)) => a.grade.and_then(|g| points.grade(&p.id, g)),
        _ => None,
    };
    let payload = match format {
        Format::Json => {
            let mut m = envelope(MessageKind::Alarm, &id, site);
            let mut d = Map::new();
            d.insert("seq".into(), ev.seq.into());
            d.insert("alarm_id".into(), ev.alarm_id.into());
            d.insert("transition".into(), ev.transition.as_str().into());
            d.insert("ts".into(), ev.ts.0.into());
            d.insert("kind".into(), ev.kind.as_str().into());
            d.insert(
                "point".into(),
                point.map_or(Value::Null, |p| p.id.as_str().into()),
            );
            d.insert(
                "point_kind".into(),
                point.map_or(Value::Null, |p| p.kind.as_str().into()),
            );
            d.insert(
                "unit".into(),
                point
                    .and_then(|p| p.unit.as_deref())
                    .map_or(Value::Null, Into::into),
            );
            d.insert(
                "hazard_source".into(),
                point
                    .and_then(|p| p.hazard_source.as_deref())
                    .map_or(Value::Null, Into::into),
            );
            if let Some(a) = alarm {
                d.insert("state".into(), a.state.as_str().into());
                d.insert("grade".into(), a.grade.map_or(Value::Null, Into::into));
                d.insert("grade_name".into(), a.grade_name.as_str().into());
                d.insert("colour".into(), a.colour.as_str().into());
                d.insert("power_cut".into(), a.power_cut.into());
                d.insert("value".into(), num(a.value));
                d.insert("peak".into(), num(a.peak));
                d.insert("peak_ts".into(), a.peak_at.0.into());
                d.insert("raised_ts".into(), a.raised_at.0.into());
                d.insert(
                    "ack".into(),
                    a.ack.as_ref().map_or(
                        Value::Null,
                        |k| json!({"by": k.by, "comment": k.comment, "ts": k.at.0}),
                    ),
                );
            } else {
                d.insert("grade".into(), ev.grade.map_or(Value::Null, Into::into));
            }
            d.insert(
                "threshold".into(),
                grade.map_or(Value::Null, |g| {
                    json!({
                        "name": g.name,
                        "direction": g.direction,
                        "trigger": num(g.trigger),
                        "restore": num(g.restore),
                        "power_cut": g.power_cut,
                    })
                }),
            );
            m.insert("data".into(), Value::Object(d));
            to_bytes(&m)
        }
        Format::KjText => {
            let mut s = String::with_capacity(160);
            s.push_str("KJ;GJXX|");
            let f = |x: f64| kj_num(x);
            let (state, grade_name, colour, power_cut, value, peak) = match alarm {
                Some(a) => (
                    a.state.as_str(),
                    a.grade_name.as_str(),
                    a.colour.as_str(),
                    if a.power_cut { "1" } else { "0" },
                    f(a.value),
                    f(a.peak),
                ),
                None => ("", "", "", "", String::new(), String::new()),
            };
            let fields: [&str; 15] = [
                &id,
                site,
                point.map_or("", |p| p.id.as_str()),
                point.map_or("", |p| p.kind.as_str()),
                point.and_then(|p| p.hazard_source.as_deref()).unwrap_or(""),
                &ev.kind,
                &ev.transition,
                state,
                grade_name,
                colour,
                power_cut,
                &value,
                &peak,
                &grade.map_or(String::new(), |g| kj_num(g.trigger)),
                &kj_time(ev.ts.0, utc_offset_min),
            ];
            kj_record(&mut s, &fields);
            s.push('‖');
            s.into_bytes()
        }
    };
    Message {
        id,
        kind: MessageKind::Alarm,
        payload,
    }
}

/// A batch of stored readings (non-empty, in `seq` order).
pub fn realtime(
    format: Format,
    site: &str,
    utc_offset_min: i32,
    rows: &[StoredReading],
    points: &dyn Points,
) -> Message {
    let (first, last) = (
        rows.first().map_or(0, |r| r.seq),
        rows.last().map_or(0, |r| r.seq),
    );
    let id = format!("{site}-r{first}-{last}");
    let payload = match format {
        Format::Json => {
            let mut m = envelope(MessageKind::Realtime, &id, site);
            let data: Vec<Value> = rows
                .iter()
                .map(|r| {
                    let p = points.point(r.pid);
                    let mut d = Map::new();
                    d.insert("id".into(), reading_id(site, r.seq).into());
                    d.insert(
                        "point".into(),
                        p.map_or_else(|| format!("pid:{}", r.pid).into(), |p| p.id.as_str().into()),
                    );
                    d.insert(
                        "kind".into(),
                        p.map_or(Value::Null, |p| p.kind.as_str().into()),
                    );
                    d.insert(
                        "unit".into(),
                        p.and_then(|p| p.unit.as_deref())
                            .map_or(Value::Null, Into::into),
                    );
                    d.insert(
                        "hazard_source".into(),
                        p.and_then(|p| p.hazard_source.as_deref())
                            .map_or(Value::Null, Into::into),
                    );
                    d.insert("ts".into(), r.ts.0.into());
                    d.insert("value".into(), num(r.value));
                    d.insert("quality".into(), r.quality.to_string().into());
                    Value::Object(d)
                })
                .collect();
            m.insert("data".into(), Value::Array(data));
            to_bytes(&m)
        }
        Format::KjText => {
            let mut s = String::with_capacity(16 + rows.len() * 80);
            s.push_str("KJ;AQSS|");
            let mut q = String::new();
            for r in rows {
                let p = points.point(r.pid);
                q.clear();
                let _ = write!(q, "{}", r.quality);
                let fallback = format!("pid:{}", r.pid);
                kj_record(
                    &mut s,
                    &[
                        &reading_id(site, r.seq),
                        site,
                        p.map_or(fallback.as_str(), |p| p.id.as_str()),
                        p.map_or("", |p| p.kind.as_str()),
                        &kj_num(r.value),
                        p.and_then(|p| p.unit.as_deref()).unwrap_or(""),
                        &q,
                        &kj_time(r.ts.0, utc_offset_min),
                    ],
                );
            }
            s.push('‖');
            s.into_bytes()
        }
    };
    Message {
        id,
        kind: MessageKind::Realtime,
        payload,
    }
}

/// Id of one statistics record: point, window and the number of readings in it.
pub fn stat_id(site: &str, point: &str, window_start_ms: i64, count: u64) -> String {
    format!("{site}-m{window_start_ms}-{point}-n{count}")
}

/// A batch of 5-minute statistics rows (non-empty, in stats `seq` order).
pub fn stats(
    format: Format,
    site: &str,
    utc_offset_min: i32,
    rows: &[StoredStat],
    points: &dyn Points,
) -> Message {
    let (first, last) = (
        rows.first().map_or(0, |r| r.seq),
        rows.last().map_or(0, |r| r.seq),
    );
    let id = format!("{site}-t{first}-{last}");
    let name = |r: &StoredStat| -> String {
        points
            .point(r.pid)
            .map_or_else(|| format!("pid:{}", r.pid), |p| p.id.clone())
    };
    let payload = match format {
        Format::Json => {
            let mut m = envelope(MessageKind::Stats, &id, site);
            let data: Vec<Value> = rows
                .iter()
                .map(|r| {
                    let p = points.point(r.pid);
                    let s = &r.stat;
                    let start = s.bucket_start.0;
                    let point = name(r);
                    let mut d = Map::new();
                    d.insert("id".into(), stat_id(site, &point, start, s.count).into());
                    d.insert("point".into(), point.into());
                    d.insert(
                        "kind".into(),
                        p.map_or(Value::Null, |p| p.kind.as_str().into()),
                    );
                    d.insert(
                        "unit".into(),
                        p.and_then(|p| p.unit.as_deref())
                            .map_or(Value::Null, Into::into),
                    );
                    d.insert(
                        "hazard_source".into(),
                        p.and_then(|p| p.hazard_source.as_deref())
                            .map_or(Value::Null, Into::into),
                    );
                    d.insert("window_start".into(), start.into());
                    d.insert("window_end".into(), (start + BUCKET_MS).into());
                    d.insert("min".into(), num(s.min));
                    d.insert("max".into(), num(s.max));
                    d.insert("avg".into(), num(s.avg));
                    d.insert("count".into(), s.count.into());
                    d.insert("max_ts".into(), s.max_ts.0.into());
                    Value::Object(d)
                })
                .collect();
            m.insert("data".into(), Value::Array(data));
            to_bytes(&m)
        }
        Format::KjText => {
            let mut s = String::with_capacity(16 + rows.len() * 120);
            s.push_str("KJ;AQMT|");
            for r in rows {
                let p = points.point(r.pid);
                let st = &r.stat;
                let start = st.bucket_start.0;
                let point = name(r);
                kj_record(
                    &mut s,
                    &[
                        &stat_id(site, &point, start, st.count),
                        site,
                        &point,
                        p.map_or("", |p| p.kind.as_str()),
                        p.and_then(|p| p.unit.as_deref()).unwrap_or(""),
                        &kj_time(start, utc_offset_min),
                        &kj_time(start + BUCKET_MS, utc_offset_min),
                        &kj_num(st.min),
                        &kj_num(st.max),
                        &kj_num(st.avg),
                        &st.count.to_string(),
                        &kj_time(st.max_ts.0, utc_offset_min),
                    ],
                );
            }
            s.push('‖');
            s.into_bytes()
        }
    };
    Message {
        id,
        kind: MessageKind::Stats,
        payload,
    }
}

/// Figures a heartbeat reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Heartbeat {
    pub ts: i64,
    /// Last alarm event seq the platform acknowledged.
    pub alarm_seq: i64,
    /// Last reading seq the platform acknowledged.
    pub reading_seq: i64,
    /// Readings still waiting to be sent.
    pub backlog: u64,
}

/// A heartbeat: the gateway is alive and how far the feed is.
pub fn heartbeat(format: Format, site: &str, utc_offset_min: i32, hb: Heartbeat) -> Message {
    let id = format!("{site}-h{}", hb.ts);
    let payload = match format {
        Format::Json => {
            let mut m = envelope(MessageKind::Heartbeat, &id, site);
            m.insert(
                "data".into(),
                json!({
                    "ts": hb.ts,
                    "alarm_seq": hb.alarm_seq,
                    "reading_seq": hb.reading_seq,
                    "backlog": hb.backlog,
                }),
            );
            to_bytes(&m)
        }
        Format::KjText => {
            let mut s = String::from("KJ;XTXT|");
            kj_record(
                &mut s,
                &[
                    &id,
                    site,
                    &kj_time(hb.ts, utc_offset_min),
                    &hb.alarm_seq.to_string(),
                    &hb.reading_seq.to_string(),
                    &hb.backlog.to_string(),
                ],
            );
            s.push('‖');
            s.into_bytes()
        }
    };
    Message {
        id,
        kind: MessageKind::Heartbeat,
        payload,
    }
}

/// The gateway's status (`online` / `offline`), JSON in both formats: it is the MQTT
/// retained status and last will, read by monitoring rather than by the data feed.
pub fn status(site: &str, online: bool, ts: i64) -> Message {
    let id = format!("{site}-s{ts}");
    let mut m = envelope(MessageKind::Status, &id, site);
    m.insert(
        "data".into(),
        json!({"status": if online { "online" } else { "offline" }, "ts": ts}),
    );
    Message {
        id,
        kind: MessageKind::Status,
        payload: to_bytes(&m),
    }
}

/// Append one KJ record: fields joined by `;`, then `~`. The separators `;`, `~`,
/// `|` and `‖` (and line breaks) inside a field are replaced by `_`: the legacy
/// format has no escape.
pub fn kj_record(out: &mut String, fields: &[&str]) {
    for (i, f) in fields.iter().enumerate() {
        if i > 0 {
            out.push(';');
        }
        for c in f.chars() {
            out.push(match c {
                ';' | '~' | '|' | '‖' | '\r' | '\n' => '_',
                c => c,
            });
        }
    }
    out.push('~');
}

/// A number for a KJ field: shortest exact decimal; empty when not finite.
pub fn kj_num(v: f64) -> String {
    if v.is_finite() {
        format!("{v}")
    } else {
        String::new()
    }
}

/// `YYYY-MM-DD HH:MM:SS` of `ms` since the epoch at `offset_min` minutes east of UTC
/// (+480 for Beijing time).
pub fn kj_time(ms: i64, offset_min: i32) -> String {
    let secs = ms.div_euclid(1000) + i64::from(offset_min) * 60;
    let (days, sod) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    )
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian (H. Hinnant).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Split a KJ batch into (table, records of fields). For tests and receivers.
pub fn kj_parse(text: &str) -> Option<(&str, Vec<Vec<&str>>)> {
    let body = text.strip_suffix('‖')?;
    let rest = body.strip_prefix("KJ;")?;
    let (table, records) = rest.split_once('|')?;
    let recs = records
        .split_terminator('~')
        .map(|r| r.split(';').collect())
        .collect();
    Some((table, recs))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::engine::{AlarmKind, AlarmState};
    use crate::model::{AlarmId, Colour, PointId, Quality, Timestamp};
    use std::collections::HashMap;

    struct P(HashMap<i64, PointRow>, Vec<GradeInfo>);
    impl Points for P {
        fn point(&self, pid: i64) -> Option<&PointRow> {
            self.0.get(&pid)
        }
        fn grade(&self, id: &str, i: u16) -> Option<&GradeInfo> {
            (id == "CH4-T1").then(|| self.1.get(i as usize)).flatten()
        }
    }

    fn points() -> P {
        let mut m = HashMap::new();
        m.insert(
            1,
            PointRow {
                pid: 1,
                id: "CH4-T1".into(),
                kind: "ch4".into(),
                unit: Some("%CH4".into()),
                site: Some("MINE01".into()),
                hazard_source: Some("HS;1".into()),
            },
        );
        P(
            m,
            vec![
                GradeInfo {
                    name: "报警".into(),
                    direction: "high",
                    trigger: 1.0,
                    restore: 1.0,
                    power_cut: false,
                },
                GradeInfo {
                    name: "断电".into(),
                    direction: "high",
                    trigger: 1.5,
                    restore: 1.0,
                    power_cut: true,
                },
            ],
        )
    }

    fn alarm_obj() -> Alarm {
        Alarm {
            id: AlarmId(7),
            point: PointId(0),
            kind: AlarmKind::Value,
            state: AlarmState::Unacked,
            grade: Some(1),
            grade_name: "断电".into(),
            colour: Colour::Red,
            power_cut: true,
            raised_at: Timestamp(1_700_000_000_000),
            changed_at: Timestamp(1_700_000_001_000),
            value: 1.62,
            peak: 1.62,
            peak_at: Timestamp(1_700_000_001_000),
            returned_at: None,
            ack: None,
            shelved: None,
        }
    }

    fn event(a: &Alarm) -> StoredAlarmEvent {
        StoredAlarmEvent {
            seq: 42,
            alarm_id: 7,
            pid: Some(1),
            kind: "value".into(),
            transition: "escalated".into(),
            grade: Some(1),
            ts: Timestamp(1_700_000_001_000),
            alarm_json: serde_json::to_string(a).unwrap(),
        }
    }

    #[test]
    fn alarm_json_carries_grade_colour_value_threshold_point_and_ids() {
        let a = alarm_obj();
        let m = alarm(Format::Json, "MINE01", 480, &event(&a), Some(&a), &points());
        assert_eq!(m.id, "MINE01-a42");
        let v: Value = serde_json::from_slice(&m.payload).unwrap();
        assert_eq!(v["schema"], SCHEMA);
        assert_eq!(v["type"], "alarm");
        assert_eq!(v["id"], "MINE01-a42");
        assert_eq!(v["site"], "MINE01");
        let d = &v["data"];
        assert_eq!(d["seq"], 42);
        assert_eq!(d["alarm_id"], 7);
        assert_eq!(d["transition"], "escalated");
        assert_eq!(d["point"], "CH4-T1");
        assert_eq!(d["unit"], "%CH4");
        assert_eq!(d["hazard_source"], "HS;1");
        assert_eq!(d["grade_name"], "断电");
        assert_eq!(d["colour"], "red");
        assert_eq!(d["power_cut"], true);
        assert_eq!(d["value"], 1.62);
        assert_eq!(d["threshold"]["trigger"], 1.5);
        assert_eq!(d["threshold"]["restore"], 1.0);
        assert_eq!(d["ts"], 1_700_000_001_000i64);
        assert!(d["ack"].is_null());
        // Same input, same bytes: a re-send is byte-identical.
        let again = alarm(Format::Json, "MINE01", 480, &event(&a), Some(&a), &points());
        assert_eq!(again, m);
    }

    #[test]
    fn alarm_kj_record_has_header_fields_record_end_and_batch_end() {
        let a = alarm_obj();
        let m = alarm(
            Format::KjText,
            "MINE01",
            480,
            &event(&a),
            Some(&a),
            &points(),
        );
        let text = String::from_utf8(m.payload).unwrap();
        assert!(text.starts_with("KJ;GJXX|"));
        assert!(text.ends_with("~‖"));
        let (table, recs) = kj_parse(&text).unwrap();
        assert_eq!(table, "GJXX");
        assert_eq!(recs.len(), 1);
        assert_eq!(
            recs[0],
            vec![
                "MINE01-a42",
                "MINE01",
                "CH4-T1",
                "ch4",
                "HS_1", // `;` inside a field is replaced
                "value",
                "escalated",
                "unacked",
                "断电",
                "red",
                "1",
                "1.62",
                "1.62",
                "1.5",
                "2023-11-15 06:13:21",
            ]
        );
    }

    #[test]
    fn realtime_batches_in_both_formats() {
        let rows = [
            StoredReading {
                seq: 10,
                pid: 1,
                ts: Timestamp(0),
                value: 0.42,
                quality: Quality::Good,
            },
            StoredReading {
                seq: 11,
                pid: 9,
                ts: Timestamp(1000),
                value: f64::NAN,
                quality: Quality::CommFail,
            },
        ];
        let m = realtime(Format::Json, "S", 0, &rows, &points());
        assert_eq!(m.id, "S-r10-11");
        let v: Value = serde_json::from_slice(&m.payload).unwrap();
        assert_eq!(v["type"], "realtime");
        assert_eq!(v["data"][0]["id"], "S-r10");
        assert_eq!(v["data"][0]["point"], "CH4-T1");
        assert_eq!(v["data"][0]["value"], 0.42);
        assert_eq!(v["data"][1]["point"], "pid:9");
        assert!(v["data"][1]["value"].is_null());
        assert_eq!(v["data"][1]["quality"], "comm_fail");

        let k = realtime(Format::KjText, "S", 480, &rows, &points());
        let text = String::from_utf8(k.payload).unwrap();
        assert_eq!(
            text,
            "KJ;AQSS|S-r10;S;CH4-T1;ch4;0.42;%CH4;good;1970-01-01 08:00:00~\
             S-r11;S;pid:9;;;;comm_fail;1970-01-01 08:00:01~‖"
        );
        let (table, recs) = kj_parse(&text).unwrap();
        assert_eq!((table, recs.len()), ("AQSS", 2));
        assert!(recs.iter().all(|r| r.len() == 8));
    }

    #[test]
    fn stats_batches_in_both_formats_with_point_window_count_ids() {
        use crate::store::Stat5Min;
        let rows = [
            StoredStat {
                seq: 5,
                pid: 1,
                stat: Stat5Min {
                    bucket_start: Timestamp(300_000),
                    min: 0.25,
                    max: 0.75,
                    avg: 0.5,
                    count: 300,
                    max_ts: Timestamp(301_000),
                },
            },
            StoredStat {
                seq: 7,
                pid: 9,
                stat: Stat5Min {
                    bucket_start: Timestamp(0),
                    min: 1.0,
                    max: 1.0,
                    avg: 1.0,
                    count: 1,
                    max_ts: Timestamp(0),
                },
            },
        ];
        let m = stats(Format::Json, "S", 0, &rows, &points());
        assert_eq!((m.id.as_str(), m.kind), ("S-t5-7", MessageKind::Stats));
        let v: Value = serde_json::from_slice(&m.payload).unwrap();
        assert_eq!(v["type"], "stats");
        let d = &v["data"][0];
        assert_eq!(d["id"], "S-m300000-CH4-T1-n300");
        assert_eq!(d["point"], "CH4-T1");
        assert_eq!(d["unit"], "%CH4");
        assert_eq!(
            (d["window_start"].as_i64(), d["window_end"].as_i64()),
            (Some(300_000), Some(600_000))
        );
        assert_eq!(
            (d["min"].as_f64(), d["max"].as_f64()),
            (Some(0.25), Some(0.75))
        );
        assert_eq!(
            (d["avg"].as_f64(), d["count"].as_u64()),
            (Some(0.5), Some(300))
        );
        assert_eq!(d["max_ts"], 301_000);
        assert_eq!(v["data"][1]["id"], "S-m0-pid:9-n1");
        assert_eq!(stats(Format::Json, "S", 0, &rows, &points()), m);

        let k = stats(Format::KjText, "S", 480, &rows[..1], &points());
        assert_eq!(
            String::from_utf8(k.payload).unwrap(),
            "KJ;AQMT|S-m300000-CH4-T1-n300;S;CH4-T1;ch4;%CH4;1970-01-01 08:05:00;\
             1970-01-01 08:10:00;0.25;0.75;0.5;300;1970-01-01 08:05:01~‖"
        );
    }

    #[test]
    fn heartbeat_and_status() {
        let hb = Heartbeat {
            ts: 5000,
            alarm_seq: 3,
            reading_seq: 99,
            backlog: 12,
        };
        let m = heartbeat(Format::Json, "S", 0, hb);
        let v: Value = serde_json::from_slice(&m.payload).unwrap();
        assert_eq!(
            (v["id"].as_str(), v["data"]["backlog"].as_u64()),
            (Some("S-h5000"), Some(12))
        );
        let k = heartbeat(Format::KjText, "S", 0, hb);
        assert_eq!(
            String::from_utf8(k.payload).unwrap(),
            "KJ;XTXT|S-h5000;S;1970-01-01 00:00:05;3;99;12~‖"
        );
        let s: Value = serde_json::from_slice(&status("S", false, 7).payload).unwrap();
        assert_eq!(s["data"]["status"], "offline");
    }

    #[test]
    fn kj_time_handles_offsets_leap_years_and_negative_times() {
        assert_eq!(kj_time(0, 0), "1970-01-01 00:00:00");
        assert_eq!(kj_time(951_782_400_000, 0), "2000-02-29 00:00:00");
        assert_eq!(kj_time(1_709_164_799_000, 480), "2024-02-29 07:59:59");
        assert_eq!(kj_time(-1000, 0), "1969-12-31 23:59:59");
        assert_eq!(kj_time(1_767_196_800_000 - 1, 480), "2025-12-31 23:59:59");
    }

    #[test]
    fn kj_fields_never_break_the_framing() {
        let mut s = String::new();
        kj_record(&mut s, &["a;b", "c~d", "e|f", "g‖h", "i\nj"]);
        assert_eq!(s, "a_b;c_d;e_f;g_h;i_j~");
    }
}
