//! Reading the log: sink cursors, rows after a cursor, history for the API, quarantine.
//!
//! A [`Reader`] is its own SQLite connection. WAL mode lets readers run beside the one
//! writer ([`super::Store`]) without blocking it; each sink opens its own.

use super::{schema, StoreError, StoreOptions};
use crate::model::{Quality, Timestamp};
use rusqlite::{params, Connection, OptionalExtension};
use std::path::Path;

/// One stored reading as a sink or the API sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StoredReading {
    pub seq: i64,
    /// Row of the point in `points` (see [`Reader::points`]).
    pub pid: i64,
    pub ts: Timestamp,
    /// `NaN` when the source had no value.
    pub value: f64,
    pub quality: Quality,
}

/// One 5-minute statistics row.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stat5Min {
    pub bucket_start: Timestamp,
    pub min: f64,
    pub max: f64,
    pub avg: f64,
    pub count: u64,
    /// Time of the maximum.
    pub max_ts: Timestamp,
}

/// One 5-minute statistics row as a sink sees it: [`Reader::read_stats_after`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StoredStat {
    /// When the row was last written (`stats_5min.seq`): a row merged again later
    /// (a late reading, the rest of a window after a restart) comes back with a
    /// higher `seq` and a higher `count`.
    pub seq: i64,
    pub pid: i64,
    pub stat: Stat5Min,
}

/// One stored alarm transition.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredAlarmEvent {
    pub seq: i64,
    pub alarm_id: i64,
    pub pid: Option<i64>,
    pub kind: String,
    pub transition: String,
    pub grade: Option<i64>,
    pub ts: Timestamp,
    /// The full `Alarm` after the transition, as JSON.
    pub alarm_json: String,
}

/// One row of `points`.
#[derive(Debug, Clone, PartialEq)]
pub struct PointRow {
    pub pid: i64,
    pub id: String,
    pub kind: String,
    pub unit: Option<String>,
    pub site: Option<String>,
    pub hazard_source: Option<String>,
}

/// How far a sink has shipped: every row with `seq` ≤ these has been accepted by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SinkCursor {
    pub readings_seq: i64,
    pub events_seq: i64,
}

/// A read connection to the store (also commits cursors and quarantines lines).
pub struct Reader {
    pub(super) conn: Connection,
    /// Declared after `conn`: dropped once the connection is closed.
    _open: schema::OpenFile,
}

fn reading_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(i64, i64, i64, Option<f64>, i64)> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
}

fn event_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<StoredAlarmEvent> {
    Ok(StoredAlarmEvent {
        seq: r.get(0)?,
        alarm_id: r.get(1)?,
        pid: r.get(2)?,
        kind: r.get(3)?,
        transition: r.get(4)?,
        grade: r.get(5)?,
        ts: Timestamp(r.get(6)?),
        alarm_json: r.get(7)?,
    })
}

fn to_reading(
    (seq, pid, ts, value, quality): (i64, i64, i64, Option<f64>, i64),
) -> Result<StoredReading, StoreError> {
    let quality = schema::quality_from_code(quality).ok_or_else(|| StoreError::BadRow {
        table: "readings",
        seq,
        reason: format!("unknown quality code {quality}"),
    })?;
    Ok(StoredReading {
        seq,
        pid,
        ts: Timestamp(ts),
        value: value.unwrap_or(f64::NAN),
        quality,
    })
}

impl Reader {
    /// Open a reader on the store at `path` (refusing foreign files like
    /// [`super::Store::open`]; a missing file is created empty).
    pub fn open(path: &Path) -> Result<Reader, StoreError> {
        let opts = StoreOptions {
            path: path.to_owned(),
            ..StoreOptions::default()
        };
        Ok(Reader::from_open(schema::open(&opts)?))
    }

    pub(super) fn from_open((conn, _open): (Connection, schema::OpenFile)) -> Reader {
        Reader { conn, _open }
    }

    /// All known points.
    pub fn points(&self) -> Result<Vec<PointRow>, StoreError> {
        let mut st = self.conn.prepare_cached(
            "SELECT pid, id, kind, unit, site, hazard_source FROM points ORDER BY pid",
        )?;
        let rows = st.query_map([], |r| {
            Ok(PointRow {
                pid: r.get(0)?,
                id: r.get(1)?,
                kind: r.get(2)?,
                unit: r.get(3)?,
                site: r.get(4)?,
                hazard_source: r.get(5)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Up to `limit` readings with `seq > after`, in `seq` order.
    pub fn read_readings_after(
        &self,
        after: i64,
        limit: usize,
    ) -> Result<Vec<StoredReading>, StoreError> {
        let mut st = self.conn.prepare_cached(
            "SELECT seq, pid, ts, value, quality FROM readings WHERE seq > ?1 ORDER BY seq LIMIT ?2",
        )?;
        let rows = st.query_map(params![after, limit as i64], reading_row)?;
        let mut out = Vec::with_capacity(limit.min(65_536));
        for row in rows {
            out.push(to_reading(row?)?);
        }
        Ok(out)
    }

    /// Up to `limit` alarm events with `seq > after`, in `seq` order.
    pub fn read_events_after(
        &self,
        after: i64,
        limit: usize,
    ) -> Result<Vec<StoredAlarmEvent>, StoreError> {
        let mut st = self.conn.prepare_cached(
            "SELECT seq, alarm_id, pid, kind, transition, grade, ts, alarm_json FROM alarm_events \
             WHERE seq > ?1 ORDER BY seq LIMIT ?2",
        )?;
        let rows = st.query_map(params![after, limit as i64], event_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Up to `limit` statistics rows written after `after` (`stats_5min.seq`), in
    /// the order they were last written. Rows of schema-2 stores (`seq` 0) are never
    /// returned.
    pub fn read_stats_after(
        &self,
        after: i64,
        limit: usize,
    ) -> Result<Vec<StoredStat>, StoreError> {
        let mut st = self.conn.prepare_cached(
            "SELECT seq, pid, bucket, min, max, sum, count, max_ts FROM stats_5min \
             WHERE seq > ?1 ORDER BY seq LIMIT ?2",
        )?;
        let rows = st.query_map(params![after.max(0), limit as i64], |r| {
            let sum: f64 = r.get(5)?;
            let count: i64 = r.get(6)?;
            Ok(StoredStat {
                seq: r.get(0)?,
                pid: r.get(1)?,
                stat: Stat5Min {
                    bucket_start: Timestamp(r.get(2)?),
                    min: r.get(3)?,
                    max: r.get(4)?,
                    avg: sum / count.max(1) as f64,
                    count: count.max(0) as u64,
                    max_ts: Timestamp(r.get(7)?),
                },
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The highest `stats_5min.seq` present (0 when none).
    pub fn last_stats_seq(&self) -> Result<i64, StoreError> {
        let seq: i64 = self
            .conn
            .prepare_cached("SELECT coalesce(max(seq), 0) FROM stats_5min")?
            .query_row([], |r| r.get(0))?;
        Ok(seq)
    }

    /// The statistics cursor of `sink`: every statistics row with `seq` ≤ it has been
    /// accepted (0 when it never shipped any).
    pub fn stats_cursor(&self, sink: &str) -> Result<i64, StoreError> {
        let c = self
            .conn
            .query_row(
                "SELECT stats_seq FROM sink_cursors WHERE sink = ?1",
                [sink],
                |r| r.get(0),
            )
            .optional()?;
        Ok(c.unwrap_or(0))
    }

    /// Persist `sink`'s statistics cursor (after the server accepted the rows).
    pub fn commit_stats_cursor(
        &self,
        sink: &str,
        seq: i64,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(
                "INSERT INTO sink_cursors(sink, readings_seq, events_seq, updated_ms, stats_seq) \
                 VALUES (?1, 0, 0, ?2, ?3) \
                 ON CONFLICT(sink) DO UPDATE SET stats_seq = excluded.stats_seq, \
                 updated_ms = excluded.updated_ms",
            )?
            .execute(params![sink, now.0, seq])?;
        Ok(())
    }

    /// The highest `seq` ever given to a committed reading (0 when none). The newest
    /// reading is never pruned (see the module docs), so this is the largest `seq`.
    pub fn last_reading_seq(&self) -> Result<i64, StoreError> {
        let seq: i64 = self
            .conn
            .prepare_cached("SELECT coalesce(max(seq), 0) FROM readings")?
            .query_row([], |r| r.get(0))?;
        Ok(seq)
    }

    /// The cursor of `sink` (zero when it never shipped anything).
    pub fn cursor(&self, sink: &str) -> Result<SinkCursor, StoreError> {
        let c = self
            .conn
            .query_row(
                "SELECT readings_seq, events_seq FROM sink_cursors WHERE sink = ?1",
                [sink],
                |r| {
                    Ok(SinkCursor {
                        readings_seq: r.get(0)?,
                        events_seq: r.get(1)?,
                    })
                },
            )
            .optional()?;
        Ok(c.unwrap_or_default())
    }

    /// Register `sink` (so pruning waits for it) without moving its cursor.
    pub fn register_sink(&self, sink: &str) -> Result<SinkCursor, StoreError> {
        self.conn.execute(
            "INSERT OR IGNORE INTO sink_cursors(sink, readings_seq, events_seq, updated_ms) VALUES (?1, 0, 0, 0)",
            [sink],
        )?;
        self.cursor(sink)
    }

    /// Persist `sink`'s cursor. Commit only after the server accepted the rows.
    pub fn commit_cursor(
        &self,
        sink: &str,
        cursor: SinkCursor,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(
                "INSERT INTO sink_cursors(sink, readings_seq, events_seq, updated_ms) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT(sink) DO UPDATE SET readings_seq = excluded.readings_seq, \
                 events_seq = excluded.events_seq, updated_ms = excluded.updated_ms",
            )?
            .execute(params![sink, cursor.readings_seq, cursor.events_seq, now.0])?;
        Ok(())
    }

    /// Keep lines a server refused, with its error, for an operator to look at.
    pub fn quarantine(
        &self,
        sink: &str,
        lines: &[(i64, String)],
        error: &str,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let tx = self.conn.unchecked_transaction()?;
        {
            let mut st = tx.prepare_cached(
                "INSERT INTO quarantine(sink, reading_seq, line, error, ts) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            for (seq, line) in lines {
                st.execute(params![sink, seq, line, error, now.0])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Quarantined lines of `sink`: (reading seq, line, error), oldest first.
    pub fn quarantined(&self, sink: &str) -> Result<Vec<(i64, String, String)>, StoreError> {
        let mut st = self.conn.prepare_cached(
            "SELECT reading_seq, line, error FROM quarantine WHERE sink = ?1 ORDER BY id",
        )?;
        let rows = st.query_map([sink], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn pid_of(&self, point_id: &str) -> Result<Option<i64>, StoreError> {
        Ok(self
            .conn
            .query_row("SELECT pid FROM points WHERE id = ?1", [point_id], |r| {
                r.get(0)
            })
            .optional()?)
    }

    /// Raw readings of a point with `from ≤ ts < to`, oldest first, at most `limit`.
    pub fn history_readings(
        &self,
        point_id: &str,
        from: Timestamp,
        to: Timestamp,
        limit: usize,
    ) -> Result<Vec<StoredReading>, StoreError> {
        let Some(pid) = self.pid_of(point_id)? else {
            return Ok(Vec::new());
        };
        if from.0 >= to.0 {
            return Ok(Vec::new());
        }
        // One index range per time slice, oldest first: within a slice the index
        // `(ts / 10000, pid, ts)` yields the point's rows in (ts, seq) order.
        // `ts / 10000` must be written exactly as in the index for SQLite to use it.
        let mut st = self.conn.prepare_cached(
            "SELECT seq, pid, ts, value, quality FROM readings \
             WHERE ts / 10000 = ?1 AND pid = ?2 AND ts >= ?3 AND ts < ?4 ORDER BY ts, seq LIMIT ?5",
        )?;
        let mut out = Vec::new();
        // Integer division truncates toward zero; it is monotonic, so the slices of
        // [from, to) are exactly first..=last, narrowed to the slices that hold rows
        // (read off the index's ends) so an open-ended range costs no empty probes.
        let ends = self
            .conn
            .prepare_cached(
                "SELECT (SELECT ts / 10000 FROM readings ORDER BY ts / 10000 LIMIT 1), \
                    (SELECT ts / 10000 FROM readings ORDER BY ts / 10000 DESC LIMIT 1)",
            )?
            .query_row([], |r| {
                Ok((r.get::<_, Option<i64>>(0)?, r.get::<_, Option<i64>>(1)?))
            })?;
        let (Some(oldest), Some(newest)) = ends else {
            return Ok(out);
        };
        let first = (from.0 / schema::SLICE_MS).max(oldest);
        let last = ((to.0 - 1) / schema::SLICE_MS).min(newest);
        for slice in first..=last {
            if out.len() >= limit {
                break;
            }
            let left = (limit - out.len()) as i64;
            let rows = st.query_map(params![slice, pid, from.0, to.0, left], reading_row)?;
            for r in rows {
                out.push(to_reading(r?)?);
            }
        }
        Ok(out)
    }

    /// 5-minute statistics of a point for buckets starting in `[from, to)`.
    pub fn history_stats(
        &self,
        point_id: &str,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<Stat5Min>, StoreError> {
        let Some(pid) = self.pid_of(point_id)? else {
            return Ok(Vec::new());
        };
        let mut st = self.conn.prepare_cached(
            "SELECT bucket, min, max, sum, count, max_ts FROM stats_5min \
             WHERE pid = ?1 AND bucket >= ?2 AND bucket < ?3 ORDER BY bucket",
        )?;
        let rows = st.query_map(params![pid, from.0, to.0], |r| {
            let sum: f64 = r.get(3)?;
            let count: i64 = r.get(4)?;
            Ok(Stat5Min {
                bucket_start: Timestamp(r.get(0)?),
                min: r.get(1)?,
                max: r.get(2)?,
                avg: sum / count.max(1) as f64,
                count: count.max(0) as u64,
                max_ts: Timestamp(r.get(5)?),
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Alarm events of one alarm, oldest first.
    pub fn alarm_history(&self, alarm_id: i64) -> Result<Vec<StoredAlarmEvent>, StoreError> {
        let mut st = self.conn.prepare_cached(
            "SELECT seq, alarm_id, pid, kind, transition, grade, ts, alarm_json FROM alarm_events \
             WHERE alarm_id = ?1 ORDER BY seq",
        )?;
        let rows = st.query_map([alarm_id], event_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Alarm episodes still open in the log — their last transition is neither
    /// `cleared` nor `removed_from_service` — with the configured id of their point,
    /// oldest first. The gateway gives them back to the engine at start.
    pub fn open_alarms(&self) -> Result<Vec<(String, crate::engine::Alarm)>, StoreError> {
        let mut st = self.conn.prepare(
            "SELECT p.id, e.seq, e.alarm_json FROM alarm_events e \
             JOIN (SELECT alarm_id, MAX(seq) AS seq FROM alarm_events GROUP BY alarm_id) last \
               ON last.seq = e.seq \
             JOIN points p ON p.pid = e.pid \
             WHERE e.transition NOT IN ('cleared', 'removed_from_service') \
             ORDER BY e.alarm_id",
        )?;
        let rows = st.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, String>(2)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (point, seq, json) = row?;
            let alarm = serde_json::from_str(&json).map_err(|e| StoreError::BadRow {
                table: "alarm_events",
                seq,
                reason: format!("alarm JSON: {e}"),
            })?;
            out.push((point, alarm));
        }
        Ok(out)
    }

    /// Recompute the alarm-event and audit hash chains; the first broken row if any.
    /// (What `hazgate verify-store` runs.)
    pub fn verify_chain(&self) -> Result<Option<super::ChainBreak>, StoreError> {
        super::db::verify_chain(self)
    }

    /// `PRAGMA integrity_check`: `Ok(())` when SQLite says `ok`, else the problems.
    pub fn integrity_check(&self) -> Result<(), StoreError> {
        let mut st = self.conn.prepare("PRAGMA integrity_check")?;
        let msgs: Vec<String> = st.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?;
        if msgs.len() == 1 && msgs[0] == "ok" {
            Ok(())
        } else {
            Err(StoreError::Corrupt(msgs.join("; ")))
        }
    }

    /// Rows counted in `storage_loss` (readings lost to the disk limit), all time.
    pub fn readings_lost(&self) -> Result<u64, StoreError> {
        let n: i64 = self.conn.query_row(
            "SELECT coalesce(sum(rows), 0) FROM storage_loss WHERE what = 'readings'",
            [],
            |r| r.get(0),
        )?;
        Ok(n.max(0) as u64)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::model::{PointId, Reading};
    use crate::store::{PointMeta, Store, BUCKET_MS};

    fn store(path: &Path) -> Store {
        let mut s = Store::open(&StoreOptions {
            path: path.to_owned(),
            ..StoreOptions::default()
        })
        .unwrap();
        let points: Vec<PointMeta> = (0..2)
            .map(|i| PointMeta {
                id: format!("P{i}"),
                kind: "ch4".into(),
                unit: None,
                site: None,
                hazard_source: None,
                deadband: None,
            })
            .collect();
        s.register_points(&points).unwrap();
        s
    }

    fn r(point: u32, ts: i64, value: f64) -> Reading {
        Reading {
            point: PointId(point),
            ts: Timestamp(ts),
            value,
            quality: Quality::Good,
        }
    }

    #[test]
    fn statistics_come_back_in_write_order_and_again_when_revised() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let mut s = store(&path);
        s.write_readings(&[r(0, 1_000, 1.0), r(1, 2_000, 2.0), r(0, 3_000, 3.0)])
            .unwrap();
        assert!(s.reader().read_stats_after(0, 10).unwrap().is_empty());
        // Window 0 closes for both points.
        assert_eq!(s.close_buckets(Timestamp(BUCKET_MS)).unwrap(), 2);
        let rows = s.reader().read_stats_after(0, 10).unwrap();
        assert_eq!(rows.len(), 2);
        assert!(rows[0].seq < rows[1].seq);
        let p0 = rows.iter().find(|x| x.pid == 1).unwrap();
        assert_eq!((p0.stat.count, p0.stat.min, p0.stat.max), (2, 1.0, 3.0));
        let cursor = rows[1].seq;
        assert!(s.reader().read_stats_after(cursor, 10).unwrap().is_empty());
        assert_eq!(s.reader().last_stats_seq().unwrap(), cursor);

        // A late reading revises window 0 of point 1: the row comes back after the
        // cursor with its merged figures.
        s.write_readings(&[r(1, BUCKET_MS + 5, 7.0), r(1, 4_000, 9.0)])
            .unwrap();
        let again = s.reader().read_stats_after(cursor, 10).unwrap();
        assert_eq!(again.len(), 1);
        assert_eq!((again[0].pid, again[0].stat.count), (2, 2));
        assert_eq!(again[0].stat.max, 9.0);

        // Cursors are durable and separate per sink.
        s.reader()
            .commit_stats_cursor("up", cursor, Timestamp(1))
            .unwrap();
        assert_eq!(s.reader().stats_cursor("up").unwrap(), cursor);
        assert_eq!(s.reader().stats_cursor("other").unwrap(), 0);
        s.reader()
            .commit_cursor(
                "up",
                SinkCursor {
                    readings_seq: 3,
                    events_seq: 0,
                },
                Timestamp(2),
            )
            .unwrap();
        assert_eq!(s.reader().stats_cursor("up").unwrap(), cursor);
        let high = again[0].seq;
        drop(s);
        // Numbers keep rising across a reopen, even when the newest rows are gone.
        let s = store(&path);
        s.reader()
            .conn
            .execute("DELETE FROM stats_5min WHERE seq = ?1", [high])
            .unwrap();
        drop(s);
        let mut s = store(&path);
        s.write_readings(&[r(0, 3 * BUCKET_MS, 1.0)]).unwrap();
        s.close_buckets(Timestamp(4 * BUCKET_MS)).unwrap();
        let rows = s.reader().read_stats_after(0, 10).unwrap();
        assert!(rows.last().unwrap().seq > high);
    }

    #[test]
    fn a_schema_2_store_is_upgraded_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let mut s = store(&path);
        s.write_readings(&[r(0, 1_000, 1.0)]).unwrap();
        s.close_buckets(Timestamp(BUCKET_MS)).unwrap();
        // Make it what a schema-2 build wrote.
        s.reader()
            .conn
            .execute_batch(
                "DROP INDEX stats_5min_seq; ALTER TABLE stats_5min DROP COLUMN seq; \
                 ALTER TABLE sink_cursors DROP COLUMN stats_seq; \
                 DELETE FROM meta WHERE key = 'stats_seq_high'; PRAGMA user_version = 2;",
            )
            .unwrap();
        drop(s);
        let mut s = store(&path);
        let v: i64 = s
            .reader()
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, crate::store::SCHEMA_VERSION);
        // The old row is kept but not shipped; new windows are.
        assert_eq!(
            s.reader()
                .history_stats("P0", Timestamp(0), Timestamp(BUCKET_MS))
                .unwrap()
                .len(),
            1
        );
        assert!(s.reader().read_stats_after(0, 10).unwrap().is_empty());
        s.write_readings(&[r(0, BUCKET_MS + 1, 1.0)]).unwrap();
        s.close_buckets(Timestamp(2 * BUCKET_MS)).unwrap();
        assert_eq!(s.reader().read_stats_after(0, 10).unwrap().len(), 1);
        assert_eq!(s.reader().stats_cursor("x").unwrap(), 0);
    }
}
