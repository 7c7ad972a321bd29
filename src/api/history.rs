//! Read-only queries on the store for the API: raw and 5-minute history (through
//! [`crate::store::Reader`]), alarm history and the audit log (read-only SQLite
//! connections; WAL lets them run beside the writer). Blocking: run them in
//! `spawn_blocking`.

use crate::model::Timestamp;
use crate::store::Reader;
use rusqlite::{params, Connection, OpenFlags};
use serde::Serialize;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    #[error("alarm_json of event {0} is not valid: {1}")]
    BadJson(i64, String),
}

#[derive(Debug, Clone, Serialize)]
pub struct RawPoint {
    pub ts: i64,
    pub value: Option<f64>,
    pub quality: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct StatRow {
    pub bucket_start: i64,
    pub min: f64,
    pub max: f64,
    pub avg: f64,
    pub count: u64,
    pub max_ts: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct AlarmEventRow {
    pub seq: i64,
    pub alarm_id: i64,
    pub kind: String,
    pub transition: String,
    pub grade: Option<i64>,
    pub ts: i64,
    pub alarm: serde_json::Value,
}

#[derive(Debug, Clone, Serialize)]
pub struct AuditRow {
    pub seq: i64,
    pub ts: i64,
    pub who: String,
    pub action: String,
    pub target: String,
    pub detail: String,
}

fn read_only(path: &Path) -> Result<Connection, rusqlite::Error> {
    let c = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    c.busy_timeout(std::time::Duration::from_secs(5))?;
    Ok(c)
}

pub fn raw(
    path: &Path,
    point: &str,
    from: i64,
    to: i64,
    limit: usize,
) -> Result<Vec<RawPoint>, HistoryError> {
    let r = Reader::open(path)?;
    Ok(
        r.history_readings(point, Timestamp(from), Timestamp(to), limit)?
            .into_iter()
            .map(|r| RawPoint {
                ts: r.ts.0,
                value: Some(r.value).filter(|v| v.is_finite()),
                quality: r.quality.to_string(),
            })
            .collect(),
    )
}

pub fn stats(path: &Path, point: &str, from: i64, to: i64) -> Result<Vec<StatRow>, HistoryError> {
    let r = Reader::open(path)?;
    Ok(r.history_stats(point, Timestamp(from), Timestamp(to))?
        .into_iter()
        .map(|s| StatRow {
            bucket_start: s.bucket_start.0,
            min: s.min,
            max: s.max,
            avg: s.avg,
            count: s.count,
            max_ts: s.max_ts.0,
        })
        .collect())
}

fn event_rows(
    rows: impl Iterator<Item = rusqlite::Result<(i64, i64, String, String, Option<i64>, i64, String)>>,
) -> Result<Vec<AlarmEventRow>, HistoryError> {
    rows.map(|r| {
        let (seq, alarm_id, kind, transition, grade, ts, json) = r?;
        let alarm =
            serde_json::from_str(&json).map_err(|e| HistoryError::BadJson(seq, e.to_string()))?;
        Ok(AlarmEventRow {
            seq,
            alarm_id,
            kind,
            transition,
            grade,
            ts,
            alarm,
        })
    })
    .collect()
}

/// Alarm transitions with `from ≤ ts < to`, newest first; optionally of one point
/// (configured id) or one alarm.
pub fn alarm_events(
    path: &Path,
    from: i64,
    to: i64,
    point: Option<&str>,
    alarm: Option<i64>,
    limit: usize,
) -> Result<Vec<AlarmEventRow>, HistoryError> {
    let c = read_only(path)?;
    let mut st = c.prepare(
        "SELECT e.seq, e.alarm_id, e.kind, e.transition, e.grade, e.ts, e.alarm_json \
         FROM alarm_events e LEFT JOIN points p ON p.pid = e.pid \
         WHERE e.ts >= ?1 AND e.ts < ?2 AND (?3 IS NULL OR p.id = ?3) \
         AND (?4 IS NULL OR e.alarm_id = ?4) ORDER BY e.seq DESC LIMIT ?5",
    )?;
    let rows = st.query_map(params![from, to, point, alarm, limit as i64], |r| {
        Ok((
            r.get(0)?,
            r.get(1)?,
            r.get(2)?,
            r.get(3)?,
            r.get(4)?,
            r.get(5)?,
            r.get(6)?,
        ))
    })?;
    event_rows(rows)
}

/// Audit records with `from ≤ ts < to`, newest first.
pub fn audit(path: &Path, from: i64, to: i64, limit: usize) -> Result<Vec<AuditRow>, HistoryError> {
    let c = read_only(path)?;
    let mut st = c.prepare(
        "SELECT seq, ts, who, action, target, detail FROM audit \
         WHERE ts >= ?1 AND ts < ?2 ORDER BY seq DESC LIMIT ?3",
    )?;
    let rows = st.query_map(params![from, to, limit as i64], |r| {
        Ok(AuditRow {
            seq: r.get(0)?,
            ts: r.get(1)?,
            who: r.get(2)?,
            action: r.get(3)?,
            target: r.get(4)?,
            detail: r.get(5)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}
