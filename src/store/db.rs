//! The one writer of the store: readings batches, statistics, alarm events, audit,
//! chain verification and pruning. Blocking (SQLite); the tokio side is
//! [`super::writer`].

use super::chain::{self, ChainBreak, ChainName, Hash, GENESIS};
use super::filter::{Bucket, FilterRule, PointState};
use super::query::Reader;
use super::{schema, AuditEntry, PointMeta, StoreError, StoreOptions};
use crate::engine::AlarmEvent;
use crate::model::{Reading, Timestamp};
use rusqlite::{params, OptionalExtension, Transaction, TransactionBehavior};

/// What one readings batch did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReadingsWritten {
    /// Readings handed in.
    pub received: usize,
    /// Raw rows stored (after the deadband/heartbeat filter).
    pub stored: usize,
    /// Statistics buckets merged into `stats_5min`.
    pub buckets: usize,
}

/// What one [`Store::prune`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PruneReport {
    pub readings_deleted: u64,
    /// Readings deleted before every sink shipped them (only when the disk limit forced it).
    pub readings_lost_unshipped: u64,
    pub stats_deleted: u64,
    pub events_deleted: u64,
    pub audit_deleted: u64,
    /// The disk limit forced deletion: storage is degraded.
    pub degraded: bool,
}

/// The durable store (one writer). See the module docs for the formats.
pub struct Store {
    reader: Reader,
    opts: StoreOptions,
    /// `PointId` index → `points.pid`.
    pids: Vec<Option<i64>>,
    deadbands: Vec<f64>,
    states: Vec<PointState>,
    /// Old states of the points a failing batch touched, to roll back (one per point).
    undo: Vec<(usize, PointState)>,
    /// Per point: the batch number that last saved its state in `undo`, so a batch
    /// saves each point once, not once per reading.
    saved_in: Vec<u64>,
    /// Number of the current readings batch.
    batch_no: u64,
    alarm_head: Hash,
    audit_head: Hash,
    sync_full: Option<bool>,
    /// When a transaction last started with `synchronous=FULL` (its commit fsyncs the
    /// WAL, and with it every frame written before).
    last_sync: std::time::Instant,
    degraded: bool,
    /// The last `stats_5min.seq` given out. Every merge into a statistics row gives the
    /// row the next number, so sinks read rows in the order they were (last) written.
    /// Persisted as `meta.stats_seq_high` in the same transaction, so numbers never
    /// come back even when retention deletes the rows that carried the highest.
    stats_seq: i64,
}

const DAY_MS: i64 = 86_400_000;

fn immediate(conn: &rusqlite::Connection) -> Result<Transaction<'_>, StoreError> {
    Ok(Transaction::new_unchecked(
        conn,
        TransactionBehavior::Immediate,
    )?)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

impl Store {
    /// Open (or create) the store. A foreign or corrupt file is refused and left as is.
    pub fn open(opts: &StoreOptions) -> Result<Store, StoreError> {
        let reader = Reader::from_open(schema::open(opts)?);
        let alarm_head = Self::chain_head(&reader, ChainName::AlarmEvents)?;
        let audit_head = Self::chain_head(&reader, ChainName::Audit)?;
        let stats_seq: i64 = reader.conn.query_row(
            "SELECT max(coalesce((SELECT max(seq) FROM stats_5min), 0), \
                        coalesce((SELECT value FROM meta WHERE key = 'stats_seq_high'), 0))",
            [],
            |r| r.get(0),
        )?;
        Ok(Store {
            reader,
            opts: opts.clone(),
            pids: Vec::new(),
            deadbands: Vec::new(),
            states: Vec::new(),
            undo: Vec::new(),
            saved_in: Vec::new(),
            batch_no: 0,
            alarm_head,
            audit_head,
            sync_full: None,
            last_sync: std::time::Instant::now(),
            degraded: false,
            stats_seq,
        })
    }

    fn chain_head(reader: &Reader, chain: ChainName) -> Result<Hash, StoreError> {
        let sql = format!(
            "SELECT seq, hash FROM {} ORDER BY seq DESC LIMIT 1",
            chain.as_str()
        );
        let last: Option<(i64, Vec<u8>)> = reader
            .conn
            .query_row(&sql, [], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        match last {
            Some((seq, h)) => chain::from_blob(&h).ok_or(StoreError::BadRow {
                table: chain.as_str(),
                seq,
                reason: "hash is not 32 bytes".into(),
            }),
            None => Ok(Self::anchor(reader, chain)?.map_or(GENESIS, |(_, h)| h)),
        }
    }

    fn anchor(reader: &Reader, chain: ChainName) -> Result<Option<(i64, Hash)>, StoreError> {
        let a: Option<(i64, Vec<u8>)> = reader
            .conn
            .query_row(
                "SELECT seq, hash FROM chain_anchor WHERE chain = ?1",
                [chain.as_str()],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        Ok(a.and_then(|(s, h)| chain::from_blob(&h).map(|h| (s, h))))
    }

    /// Read access on the writer's own connection (history, cursors, integrity check).
    pub fn reader(&self) -> &Reader {
        &self.reader
    }

    /// The options the store was opened with.
    pub fn options(&self) -> &StoreOptions {
        &self.opts
    }

    /// A readings write or the disk limit failed and has not recovered yet.
    pub fn degraded(&self) -> bool {
        self.degraded
    }

    /// Change the disk limit (e.g. when space came back).
    pub fn set_disk_limit(&mut self, limit: Option<u64>) -> Result<(), StoreError> {
        self.opts.disk_limit_bytes = limit;
        schema::set_disk_limit(&self.reader.conn, limit)
    }

    fn set_sync(&mut self, full: bool) -> Result<(), StoreError> {
        if full {
            self.last_sync = std::time::Instant::now();
        }
        if self.sync_full != Some(full) {
            let mode = if full { "FULL" } else { "NORMAL" };
            self.reader
                .conn
                .execute_batch(&format!("PRAGMA synchronous={mode}"))?;
            self.sync_full = Some(full);
        }
        Ok(())
    }

    /// Tell the store the configured points, in `PointId` order. Points are matched by
    /// their configured id, so reordering the config keeps history attached.
    pub fn register_points(&mut self, points: &[PointMeta]) -> Result<(), StoreError> {
        let tx = immediate(&self.reader.conn)?;
        let mut pids = Vec::with_capacity(points.len());
        {
            let mut up = tx.prepare_cached(
                "INSERT INTO points(id, kind, unit, site, hazard_source) VALUES (?1, ?2, ?3, ?4, ?5) \
                 ON CONFLICT(id) DO UPDATE SET kind = excluded.kind, unit = excluded.unit, \
                 site = excluded.site, hazard_source = excluded.hazard_source",
            )?;
            let mut get = tx.prepare_cached("SELECT pid FROM points WHERE id = ?1")?;
            for p in points {
                up.execute(params![p.id, p.kind, p.unit, p.site, p.hazard_source])?;
                let pid: i64 = get.query_row([&p.id], |r| r.get(0))?;
                pids.push(Some(pid));
            }
        }
        tx.commit()?;
        self.pids = pids;
        self.deadbands = points
            .iter()
            .map(|p| p.deadband.unwrap_or(self.opts.default_deadband))
            .collect();
        self.states.resize(points.len(), PointState::default());
        self.saved_in.resize(points.len(), 0);
        Ok(())
    }

    /// Give readings of unconfigured point indices a placeholder point `#<index>`.
    fn ensure_points(&mut self, readings: &[Reading]) -> Result<(), StoreError> {
        let missing: Vec<usize> = readings
            .iter()
            .map(|r| r.point.0 as usize)
            .filter(|&i| self.pids.get(i).is_none_or(|p| p.is_none()))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let tx = immediate(&self.reader.conn)?;
        for i in missing {
            if self.pids.get(i).is_some_and(|p| p.is_some()) {
                continue;
            }
            let id = format!("#{i}");
            tx.execute(
                "INSERT OR IGNORE INTO points(id, kind) VALUES (?1, 'other')",
                [&id],
            )?;
            let pid: i64 =
                tx.query_row("SELECT pid FROM points WHERE id = ?1", [&id], |r| r.get(0))?;
            if self.pids.len() <= i {
                self.pids.resize(i + 1, None);
                self.deadbands.resize(i + 1, self.opts.default_deadband);
                self.states.resize(i + 1, PointState::default());
                self.saved_in.resize(i + 1, 0);
            }
            self.pids[i] = Some(pid);
        }
        tx.commit()?;
        Ok(())
    }

    /// Store one batch of readings in one transaction: filtered by deadband and
    /// heartbeat, statistics advanced. All or nothing: on error nothing was stored and
    /// the caller still holds the batch to hand in again.
    pub fn write_readings(&mut self, readings: &[Reading]) -> Result<ReadingsWritten, StoreError> {
        let every = std::time::Duration::from_millis(self.opts.readings_sync_interval_ms);
        let due = !every.is_zero() && self.last_sync.elapsed() >= every;
        self.set_sync(self.opts.fsync_readings || due)?;
        self.ensure_points(readings)?;
        self.undo.clear();
        self.batch_no += 1;
        let result = self.write_readings_tx(readings);
        match result {
            Ok(w) => {
                self.degraded = false;
                Ok(w)
            }
            Err(e) => {
                for (i, old) in self.undo.drain(..).rev() {
                    self.states[i] = old;
                }
                if e.is_full() {
                    self.degraded = true;
                }
                Err(e)
            }
        }
    }

    fn write_readings_tx(&mut self, readings: &[Reading]) -> Result<ReadingsWritten, StoreError> {
        let tx = immediate(&self.reader.conn)?;
        let mut out = ReadingsWritten {
            received: readings.len(),
            ..ReadingsWritten::default()
        };
        {
            let mut ins = tx.prepare_cached(
                "INSERT INTO readings(pid, ts, value, quality) VALUES (?1, ?2, ?3, ?4)",
            )?;
            let mut stat = tx.prepare_cached(STATS_UPSERT)?;
            let heartbeat_ms =
                i64::try_from(self.opts.heartbeat_s.saturating_mul(1000)).unwrap_or(i64::MAX);
            for r in readings {
                let i = r.point.0 as usize;
                let (Some(Some(pid)), Some(state), Some(saved)) = (
                    self.pids.get(i),
                    self.states.get_mut(i),
                    self.saved_in.get_mut(i),
                ) else {
                    continue; // unreachable: ensure_points registered every index
                };
                let rule = FilterRule {
                    every: self.opts.store_every_reading,
                    deadband: self.deadbands.get(i).copied().unwrap_or(0.0),
                    heartbeat_ms,
                };
                if *saved != self.batch_no {
                    *saved = self.batch_no;
                    self.undo.push((i, *state));
                }
                let step = state.step(r, rule);
                if step.store {
                    let value = r.value.is_finite().then_some(r.value);
                    ins.execute(params![pid, r.ts.0, value, schema::quality_code(r.quality)])?;
                    out.stored += 1;
                }
                if let Some(b) = step.emit {
                    self.stats_seq += 1;
                    exec_stat(&mut stat, *pid, &b, self.stats_seq)?;
                    out.buckets += 1;
                }
            }
            if out.buckets > 0 {
                save_stats_seq(&tx, self.stats_seq)?;
            }
        }
        tx.commit()?;
        Ok(out)
    }

    /// Commit every open statistics bucket that ended at or before `now`.
    pub fn close_buckets(&mut self, now: Timestamp) -> Result<usize, StoreError> {
        self.write_buckets(|s| s.close_before(now.0))
    }

    /// Commit every open bucket (at shutdown) and checkpoint the WAL.
    pub fn flush(&mut self) -> Result<(), StoreError> {
        self.write_buckets(|s| s.bucket.take())?;
        self.reader
            .conn
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))?;
        Ok(())
    }

    fn write_buckets(
        &mut self,
        mut take: impl FnMut(&mut PointState) -> Option<Bucket>,
    ) -> Result<usize, StoreError> {
        self.undo.clear();
        let mut closed = Vec::new();
        for (i, s) in self.states.iter_mut().enumerate() {
            let old = *s;
            if let Some(b) = take(s) {
                self.undo.push((i, old));
                if let Some(Some(pid)) = self.pids.get(i) {
                    closed.push((*pid, b));
                }
            }
        }
        if closed.is_empty() {
            return Ok(0);
        }
        let res = (|| {
            let tx = immediate(&self.reader.conn)?;
            {
                let mut st = tx.prepare_cached(STATS_UPSERT)?;
                for (pid, b) in &closed {
                    self.stats_seq += 1;
                    exec_stat(&mut st, *pid, b, self.stats_seq)?;
                }
                save_stats_seq(&tx, self.stats_seq)?;
            }
            tx.commit()?;
            Ok(closed.len())
        })();
        if res.is_err() {
            for (i, old) in self.undo.drain(..).rev() {
                self.states[i] = old;
            }
        }
        res
    }

    /// Append alarm transitions to the hash chain and make them durable (fsync) before
    /// returning their `seq`s. When the disk limit is reached, the oldest readings are
    /// deleted to make room (alarms take priority; the loss is counted and logged).
    pub fn append_alarm_events(&mut self, events: &[AlarmEvent]) -> Result<Vec<i64>, StoreError> {
        match self.append_alarm_events_once(events) {
            Err(e) if e.is_full() => {
                self.make_room("alarm events need room")?;
                self.append_alarm_events_once(events)
            }
            r => r,
        }
    }

    fn append_alarm_events_once(&mut self, events: &[AlarmEvent]) -> Result<Vec<i64>, StoreError> {
        self.set_sync(true)?;
        let tx = immediate(&self.reader.conn)?;
        let mut head = self.alarm_head;
        let mut seqs = Vec::with_capacity(events.len());
        let mut high = 0u64;
        {
            let mut ins = tx.prepare_cached(
                "INSERT INTO alarm_events(alarm_id, pid, kind, transition, grade, ts, alarm_json, prev_hash, hash) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8)",
            )?;
            let mut set = tx.prepare_cached("UPDATE alarm_events SET hash = ?2 WHERE seq = ?1")?;
            for e in events {
                let json = serde_json::to_string(&e.alarm)?;
                let alarm_id = i64::try_from(e.alarm.id.0).unwrap_or(i64::MAX);
                let pid = self.pids.get(e.alarm.point.0 as usize).copied().flatten();
                let kind = e.alarm.kind.as_str();
                let transition = e.transition.as_str();
                let grade = e.alarm.grade.map(i64::from);
                ins.execute(params![
                    alarm_id,
                    pid,
                    kind,
                    transition,
                    grade,
                    e.ts.0,
                    json,
                    &head[..]
                ])?;
                let seq = tx.last_insert_rowid();
                head = chain::alarm_event_hash(
                    &head, seq, alarm_id, pid, kind, transition, grade, e.ts.0, &json,
                );
                set.execute(params![seq, &head[..]])?;
                seqs.push(seq);
                high = high.max(e.alarm.id.0);
            }
            tx.execute(
                "INSERT INTO meta(key, value) VALUES ('alarm_id_high', ?1) \
                 ON CONFLICT(key) DO UPDATE SET value = max(value, excluded.value)",
                [i64::try_from(high).unwrap_or(i64::MAX)],
            )?;
        }
        tx.commit()?;
        self.alarm_head = head;
        Ok(seqs)
    }

    /// Append audit rows to their hash chain, durable (fsync) before returning.
    pub fn append_audit(&mut self, entries: &[AuditEntry]) -> Result<Vec<i64>, StoreError> {
        match self.append_audit_once(entries) {
            Err(e) if e.is_full() => {
                self.make_room("audit rows need room")?;
                self.append_audit_once(entries)
            }
            r => r,
        }
    }

    fn append_audit_once(&mut self, entries: &[AuditEntry]) -> Result<Vec<i64>, StoreError> {
        self.set_sync(true)?;
        let tx = immediate(&self.reader.conn)?;
        let mut head = self.audit_head;
        let mut seqs = Vec::with_capacity(entries.len());
        {
            let mut ins = tx.prepare_cached(
                "INSERT INTO audit(ts, who, action, target, detail, prev_hash, hash) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)",
            )?;
            let mut set = tx.prepare_cached("UPDATE audit SET hash = ?2 WHERE seq = ?1")?;
            for a in entries {
                ins.execute(params![
                    a.ts.0,
                    a.who,
                    a.action,
                    a.target,
                    a.detail,
                    &head[..]
                ])?;
                let seq = tx.last_insert_rowid();
                head =
                    chain::audit_hash(&head, seq, a.ts.0, &a.who, &a.action, &a.target, &a.detail);
                set.execute(params![seq, &head[..]])?;
                seqs.push(seq);
            }
        }
        tx.commit()?;
        self.audit_head = head;
        Ok(seqs)
    }

    /// One past the highest alarm id ever stored (1 for a new store), so the engine's
    /// ids never repeat across restarts — even after old events were pruned.
    pub fn next_alarm_id(&self) -> Result<u64, StoreError> {
        let stored: Option<i64> =
            self.reader
                .conn
                .query_row("SELECT max(alarm_id) FROM alarm_events", [], |r| r.get(0))?;
        let high: Option<i64> = self
            .reader
            .conn
            .query_row(
                "SELECT value FROM meta WHERE key = 'alarm_id_high'",
                [],
                |r| r.get(0),
            )
            .optional()?;
        let max = stored.unwrap_or(0).max(high.unwrap_or(0)).max(0);
        Ok(max as u64 + 1)
    }

    /// Recompute both hash chains. `Ok(None)`: intact; `Ok(Some(b))`: the first row
    /// that does not verify (edited, inserted, reordered or deleted before it).
    pub fn verify_chain(&self) -> Result<Option<ChainBreak>, StoreError> {
        verify_chain(&self.reader)
    }

    /// Delete what retention allows: readings older than the raw retention that every
    /// sink shipped, statistics, alarm events (shipped) and audit rows older than
    /// theirs. When a disk limit is set and the store is above 90 % of it, the oldest
    /// readings go even when unshipped: counted, logged, recorded, degraded.
    pub fn prune(&mut self, now: Timestamp) -> Result<PruneReport, StoreError> {
        self.set_sync(false)?;
        let mut rep = PruneReport::default();
        let conn = &self.reader.conn;
        let (min_readings, min_events): (Option<i64>, Option<i64>) = conn.query_row(
            "SELECT min(readings_seq), min(events_seq) FROM sink_cursors",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        // The newest reading is never deleted: its seq is what the next one counts from.
        let newest: i64 =
            conn.query_row("SELECT coalesce(max(seq), 0) FROM readings", [], |r| {
                r.get(0)
            })?;
        let shipped_readings = min_readings.unwrap_or(i64::MAX).min(newest - 1);
        let shipped_events = min_events.unwrap_or(i64::MAX);
        let cutoff = |days: u32| now.0.saturating_sub(i64::from(days) * DAY_MS);

        let raw_cut = cutoff(self.opts.readings_retention_days);
        loop {
            let n = conn.execute(
                "DELETE FROM readings WHERE seq IN (SELECT seq FROM readings \
                 WHERE seq <= ?1 AND ts < ?2 ORDER BY seq LIMIT 50000)",
                params![shipped_readings, raw_cut],
            )?;
            rep.readings_deleted += n as u64;
            if n < 50_000 {
                break;
            }
        }
        rep.stats_deleted = conn.execute(
            "DELETE FROM stats_5min WHERE bucket < ?1",
            [cutoff(self.opts.stats_retention_days)],
        )? as u64;
        let ev_cut = cutoff(self.opts.events_retention_days);
        rep.events_deleted =
            prune_chain(&self.reader, ChainName::AlarmEvents, ev_cut, shipped_events)?;
        rep.audit_deleted = prune_chain(&self.reader, ChainName::Audit, ev_cut, i64::MAX)?;

        if let Some(limit) = self.opts.disk_limit_bytes {
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            let mut guard = 0;
            while self.used_bytes()? > limit / 10 * 9 && guard < 100 {
                let (deleted, lost) = self.delete_oldest_readings("disk limit reached (prune)")?;
                if deleted == 0 {
                    break;
                }
                rep.readings_deleted += deleted;
                rep.readings_lost_unshipped += lost;
                rep.degraded = true;
                guard += 1;
            }
        }
        if rep.degraded {
            self.degraded = true;
        }
        Ok(rep)
    }

    /// Bytes of the database in use (pages in use × page size; free pages excluded).
    pub fn used_bytes(&self) -> Result<i64, StoreError> {
        let c = &self.reader.conn;
        let pages: i64 = c.query_row("PRAGMA page_count", [], |r| r.get(0))?;
        let free: i64 = c.query_row("PRAGMA freelist_count", [], |r| r.get(0))?;
        let size: i64 = c.query_row("PRAGMA page_size", [], |r| r.get(0))?;
        Ok((pages - free) * size)
    }

    fn make_room(&mut self, why: &str) -> Result<(), StoreError> {
        let (deleted, _) = self.delete_oldest_readings(why)?;
        self.degraded = true;
        if deleted == 0 {
            return Err(StoreError::Full(format!(
                "{why}, and no readings are left to delete"
            )));
        }
        Ok(())
    }

    /// Delete the oldest tenth of the readings (at least 1000). Returns (deleted,
    /// unshipped among them); a loss of unshipped rows is logged and recorded.
    fn delete_oldest_readings(&mut self, why: &str) -> Result<(u64, u64), StoreError> {
        self.set_sync(true)?;
        let conn = &self.reader.conn;
        let (count, min_seq, max_seq): (i64, Option<i64>, Option<i64>) = conn.query_row(
            "SELECT count(*), min(seq), max(seq) FROM readings",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )?;
        let (Some(min_seq), Some(max_seq)) = (min_seq, max_seq) else {
            return Ok((0, 0));
        };
        let n = (count / 10).max(1000);
        let upto: i64 = conn.query_row(
            "SELECT max(seq) FROM (SELECT seq FROM readings ORDER BY seq LIMIT ?1)",
            [n],
            |r| r.get(0),
        )?;
        // The newest reading stays: its seq is what the next one counts from.
        let upto = upto.min(max_seq - 1);
        if upto < min_seq {
            return Ok((0, 0));
        }
        let shipped: Option<i64> =
            conn.query_row("SELECT min(readings_seq) FROM sink_cursors", [], |r| {
                r.get(0)
            })?;
        let shipped = shipped.unwrap_or(i64::MAX);
        let tx = immediate(conn)?;
        let lost: i64 = tx.query_row(
            "SELECT count(*) FROM readings WHERE seq <= ?1 AND seq > ?2",
            params![upto, shipped],
            |r| r.get(0),
        )?;
        let deleted = tx.execute("DELETE FROM readings WHERE seq <= ?1", [upto])?;
        if lost > 0 {
            tx.execute(
                "INSERT INTO storage_loss(ts, what, rows, reason) VALUES (?1, 'readings', ?2, ?3)",
                params![now_ms(), lost, why],
            )?;
        }
        tx.commit()?;
        if lost > 0 {
            tracing::error!(
                lost,
                deleted,
                from_seq = min_seq,
                to_seq = upto,
                reason = why,
                "storage degraded: deleted readings no sink has shipped yet"
            );
        } else {
            tracing::warn!(
                deleted,
                reason = why,
                "storage degraded: deleted oldest shipped readings"
            );
        }
        Ok((deleted as u64, lost.max(0) as u64))
    }
}

const STATS_UPSERT: &str =
    "INSERT INTO stats_5min(pid, bucket, min, max, sum, count, max_ts, seq) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT(pid, bucket) DO UPDATE SET \
     min = min(min, excluded.min), \
     max_ts = CASE WHEN excluded.max > max THEN excluded.max_ts ELSE max_ts END, \
     max = max(max, excluded.max), sum = sum + excluded.sum, count = count + excluded.count, \
     seq = excluded.seq";

fn exec_stat(
    st: &mut rusqlite::CachedStatement<'_>,
    pid: i64,
    b: &Bucket,
    seq: i64,
) -> Result<(), StoreError> {
    st.execute(params![
        pid,
        b.start,
        b.min,
        b.max,
        b.sum,
        i64::try_from(b.count).unwrap_or(i64::MAX),
        b.max_ts,
        seq
    ])?;
    Ok(())
}

/// Persist the highest statistics `seq` given out (inside the writing transaction).
fn save_stats_seq(tx: &rusqlite::Connection, seq: i64) -> Result<(), StoreError> {
    tx.prepare_cached(
        "INSERT INTO meta(key, value) VALUES ('stats_seq_high', ?1) \
         ON CONFLICT(key) DO UPDATE SET value = max(value, excluded.value)",
    )?
    .execute([seq])?;
    Ok(())
}

/// Delete the prefix of a chain older than `cut` (and ≤ `shipped`), keeping the hash of
/// the last deleted row as the chain's anchor.
fn prune_chain(
    reader: &Reader,
    chain: ChainName,
    cut: i64,
    shipped: i64,
) -> Result<u64, StoreError> {
    let t = chain.as_str();
    let conn = &reader.conn;
    // The prefix ends just before the first row that must stay.
    let first_kept: Option<i64> = conn.query_row(
        &format!("SELECT min(seq) FROM {t} WHERE ts >= ?1 OR seq > ?2"),
        params![cut, shipped],
        |r| r.get(0),
    )?;
    let upto = match first_kept {
        Some(s) => s - 1,
        None => conn.query_row(&format!("SELECT coalesce(max(seq), 0) FROM {t}"), [], |r| {
            r.get(0)
        })?,
    };
    let last: Option<(i64, Vec<u8>)> = conn
        .query_row(
            &format!("SELECT seq, hash FROM {t} WHERE seq <= ?1 ORDER BY seq DESC LIMIT 1"),
            [upto],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let Some((seq, hash)) = last else {
        return Ok(0);
    };
    let tx = immediate(conn)?;
    tx.execute(
        "INSERT INTO chain_anchor(chain, seq, hash) VALUES (?1, ?2, ?3) \
         ON CONFLICT(chain) DO UPDATE SET seq = excluded.seq, hash = excluded.hash",
        params![t, seq, hash],
    )?;
    let n = tx.execute(&format!("DELETE FROM {t} WHERE seq <= ?1"), [seq])?;
    tx.commit()?;
    Ok(n as u64)
}

/// Recompute both chains (see the module docs for the definition).
pub(super) fn verify_chain(reader: &Reader) -> Result<Option<ChainBreak>, StoreError> {
    for chain in [ChainName::AlarmEvents, ChainName::Audit] {
        let (anchor_seq, mut prev) = Store::anchor(reader, chain)?.unwrap_or((0, GENESIS));
        let sql = match chain {
            ChainName::AlarmEvents => {
                "SELECT seq, prev_hash, hash, alarm_id, pid, kind, transition, grade, ts, alarm_json \
                 FROM alarm_events ORDER BY seq"
            }
            ChainName::Audit => {
                "SELECT seq, prev_hash, hash, ts, who, action, target, detail FROM audit ORDER BY seq"
            }
        };
        let mut st = reader.conn.prepare(sql)?;
        let mut rows = st.query([])?;
        let mut last_seq = anchor_seq;
        while let Some(r) = rows.next()? {
            let seq: i64 = r.get(0)?;
            let broken = |reason: &str| {
                Ok(Some(ChainBreak {
                    chain,
                    seq,
                    reason: reason.to_owned(),
                }))
            };
            if seq <= last_seq {
                return broken("sequence number at or below the anchor");
            }
            let stored_prev: Vec<u8> = r.get(1)?;
            let stored: Vec<u8> = r.get(2)?;
            if stored_prev[..] != prev[..] {
                return broken("prev_hash does not match the previous row (a row before it was removed, added or changed)");
            }
            let computed = match chain {
                ChainName::AlarmEvents => chain::alarm_event_hash(
                    &prev,
                    seq,
                    r.get(3)?,
                    r.get(4)?,
                    &r.get::<_, String>(5)?,
                    &r.get::<_, String>(6)?,
                    r.get(7)?,
                    r.get(8)?,
                    &r.get::<_, String>(9)?,
                ),
                ChainName::Audit => chain::audit_hash(
                    &prev,
                    seq,
                    r.get(3)?,
                    &r.get::<_, String>(4)?,
                    &r.get::<_, String>(5)?,
                    &r.get::<_, String>(6)?,
                    &r.get::<_, String>(7)?,
                ),
            };
            if stored[..] != computed[..] {
                return broken("hash does not match the row's content (the row was changed)");
            }
            prev = computed;
            last_seq = seq;
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::model::{PointId, Quality};
    use crate::store::PointMeta;
    use std::time::Duration;

    fn store(dir: &tempfile::TempDir, readings_sync_interval_ms: u64) -> Store {
        let mut s = Store::open(&StoreOptions {
            path: dir.path().join("s.db"),
            store_every_reading: true,
            readings_sync_interval_ms,
            ..StoreOptions::default()
        })
        .unwrap();
        let p = PointMeta {
            id: "P0".into(),
            kind: "ch4".into(),
            unit: None,
            site: None,
            hazard_source: None,
            deadband: None,
        };
        s.register_points(&[p]).unwrap();
        s
    }

    fn write(s: &mut Store, ts: i64) {
        let r = Reading {
            point: PointId(0),
            ts: Timestamp(ts),
            value: ts as f64,
            quality: Quality::Good,
        };
        s.write_readings(&[r]).unwrap();
    }

    /// SQLite's own `synchronous` setting of the connection the last commit used:
    /// 2 (FULL) when that commit fsynced the WAL, 1 (NORMAL) when it did not.
    fn synchronous(s: &Store) -> i64 {
        s.reader
            .conn
            .query_row("PRAGMA synchronous", [], |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn a_readings_commit_is_fsynced_once_the_sync_interval_is_over() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = store(&dir, 60_000);
        write(&mut s, 1);
        assert_eq!(synchronous(&s), 1, "within the interval: no fsync");
        // The last fsync a minute ago: the next readings commit fsyncs, and restarts
        // the interval.
        s.last_sync = std::time::Instant::now()
            .checked_sub(Duration::from_secs(61))
            .unwrap();
        write(&mut s, 2);
        assert_eq!(synchronous(&s), 2);
        write(&mut s, 3);
        assert_eq!(synchronous(&s), 1);
    }

    #[test]
    fn an_alarm_commit_restarts_the_sync_interval_and_zero_turns_it_off() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = store(&dir, 60_000);
        s.last_sync = std::time::Instant::now()
            .checked_sub(Duration::from_secs(61))
            .unwrap();
        s.set_sync(true).unwrap(); // what an alarm or audit commit does first
        write(&mut s, 1);
        assert_eq!(synchronous(&s), 1, "the alarm's fsync counts");

        let dir = tempfile::tempdir().unwrap();
        let mut s = store(&dir, 0);
        s.last_sync = std::time::Instant::now()
            .checked_sub(Duration::from_secs(3_600))
            .unwrap();
        write(&mut s, 1);
        assert_eq!(synchronous(&s), 1, "0: readings never fsync on their own");
    }
}
