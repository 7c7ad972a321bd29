//! The durable log: an embedded SQLite file (WAL mode) that keeps every reading worth
//! keeping, 5-minute statistics, every alarm transition and every operator action.
//! Every sink (InfluxDB, the provincial uplink) reads from it by its own persisted
//! cursor, so a sink that is down only means its cursor waits.
//!
//! # Invariants
//!
//! - **Alarm events and audit rows are durable before the call returns.** They are
//!   committed with `PRAGMA synchronous=FULL` (the WAL is fsynced at commit), so the
//!   caller may report an alarm as raised once [`Store::append_alarm_events`] returns.
//! - **Readings are committed in batches**, one transaction per
//!   [`Store::write_readings`] call, with `synchronous=NORMAL`: a committed batch
//!   survives `kill -9` of the process (the WAL is in the OS page cache); a power loss
//!   may lose the batches of the last [`StoreOptions::readings_sync_interval_ms`]
//!   (100 ms: a readings commit is fsynced at least that often, which also keeps an
//!   alarm's own fsync short), or none with [`StoreOptions::fsync_readings`]. A batch
//!   is all-or-nothing: when it fails, nothing of it is stored and the in-memory
//!   deadband/statistics state is rolled back, so the caller can hand it in again.
//! - **Sequence numbers never go backwards or get reused**, so a sink cursor
//!   ("everything with `seq` ≤ cursor has been shipped") stays meaningful even after
//!   pruning. `readings.seq` is a plain rowid, not `AUTOINCREMENT` (which updates
//!   `sqlite_sequence` on every insert): SQLite numbers a new row max(`seq`) + 1, so a
//!   number could only come back if the rows with the highest `seq` were deleted.
//!   Nothing does that: pruning deletes from the oldest end, and **the newest reading
//!   is never deleted** (neither by retention nor by the disk limit), so max(`seq`)
//!   never decreases. A batch that rolls back frees its numbers, but no reader ever
//!   saw them. `alarm_events` and `audit` keep `AUTOINCREMENT` (few rows; their
//!   chains may be pruned down to the anchor).
//! - **Pruning never deletes a row a sink has not shipped**, except when the disk limit
//!   is hit; then the loss is counted, logged, recorded in `storage_loss` and the store
//!   reports itself degraded.
//! - **The file is ours or it is refused**: a file that is not SQLite, or whose
//!   `application_id` / `user_version` are not hazgate's, is refused at open with
//!   [`StoreError::Foreign`] and never written to.
//! - `SQLITE_FULL` is an error value ([`StoreError::Full`]), never a panic.
//!
//! # Tables
//!
//! ```text
//! points        pid INTEGER PK, id TEXT UNIQUE, kind, unit, site, hazard_source
//! readings      seq INTEGER PK (rowid), pid, ts (ms), value REAL (NULL = NaN),
//!               quality INTEGER (code below)      index (ts / 10000, pid, ts)
//! stats_5min    (pid, bucket) PK, bucket = start ms (multiple of 300 000), min, max,
//!               sum, count, max_ts (time of max), seq (write order, index). Good,
//!               finite values only.
//! alarm_events  seq PK AUTOINCREMENT, alarm_id, pid, kind, transition, grade, ts,
//!               alarm_json (the full `Alarm` after the transition), prev_hash, hash
//! audit         seq PK AUTOINCREMENT, ts, who, action, target, detail, prev_hash, hash
//! chain_anchor  chain ('alarm_events' | 'audit') PK, seq, hash — the last pruned row
//! sink_cursors  sink PK, readings_seq, events_seq, updated_ms, stats_seq
//! quarantine    id PK, sink, reading_seq, line, error, ts — lines a sink's server
//!               refused (HTTP 400), kept for an operator, never retried automatically
//! storage_loss  id PK, ts, what, rows, reason — every loss forced by the disk limit
//! meta          key PK, value INTEGER — e.g. `alarm_id_high`
//! ```
//!
//! `readings.quality` codes: 0 good, 1 stale, 2 comm_fail, 3 out_of_range, 4 bad_data,
//! 5 bad_config, 6 maintenance, 7 source_bad, 0x100 + c device_exception(c). A code this
//! build does not know is a [`StoreError::BadRow`], never a guessed quality.
//!
//! `PRAGMA application_id` is [`APPLICATION_ID`] and `user_version` is
//! [`SCHEMA_VERSION`]; a version-2 store is upgraded in place (two added columns and
//! an index, one transaction); a store of any other version is refused
//! ([`StoreError::OldSchema`], [`StoreError::NewerSchema`]) and left as it is.
//!
//! # Readings: what is stored
//!
//! With [`StoreOptions::store_every_reading`] off (the default), a reading is stored
//! when its quality differs from the last stored one of its point, when its value moved
//! strictly more than the point's deadband from the last stored value, or when
//! [`StoreOptions::heartbeat_s`] passed since the last stored reading. Statistics are
//! computed over *every* good reading handed in, not only the stored ones.
//!
//! # Statistics
//!
//! Each point has one open 5-minute bucket in memory. It is committed (merged into
//! `stats_5min` with an upsert that combines min/max/sum/count) when a reading of a
//! later bucket arrives, when [`Store::close_buckets`] finds it over, and on
//! [`Store::flush`]. A late reading for an older bucket is merged straight away. After
//! a `kill -9` the pre-crash part of the buckets open at that moment is missing.
//!
//! Every merge gives the row the next statistics sequence number (`stats_5min.seq`,
//! high-water mark in `meta.stats_seq_high`), so a sink reads statistics after its own
//! cursor (`sink_cursors.stats_seq`, [`Reader::read_stats_after`]) like readings: a
//! row merged again after it was shipped comes back with its new figures.
//!
//! # Hash chain
//!
//! `alarm_events` and `audit` are each a chain. For row `n`:
//!
//! ```text
//! hash_n = SHA-256( hash_{n-1} ‖ field_1 ‖ field_2 ‖ … )   each field = u32 BE length ‖ bytes
//! ```
//!
//! `hash_0` (before the first row) is 32 zero bytes, or the anchor of the last pruned
//! row. Fields are the table name, then the row's columns as decimal text / stored
//! text, in the column order above (`grade` NULL = empty). [`Store::verify_chain`]
//! recomputes both chains and returns the first broken row.
//!
//! # Cursors
//!
//! A [`SinkCursor`] names the last `readings.seq` and `alarm_events.seq` a sink has
//! shipped. [`Reader::read_readings_after`] returns rows with `seq` > cursor in `seq`
//! order with their original timestamps; a sink commits its cursor only after the
//! server accepted the rows, so delivery is at-least-once and in order.

mod chain;
mod db;
mod filter;
mod query;
mod schema;
pub mod writer;

pub use chain::{ChainBreak, ChainName};
pub use db::{PruneReport, ReadingsWritten, Store};
pub use filter::BUCKET_MS;
pub use query::{
    PointRow, Reader, SinkCursor, Stat5Min, StoredAlarmEvent, StoredReading, StoredStat,
};
pub use schema::{APPLICATION_ID, SCHEMA_VERSION};
pub use writer::{StoreStatus, StoreWriter};

use crate::engine::EngineSpec;
use std::path::PathBuf;

/// Errors of the durable store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The file exists but is not a hazgate store (another program's SQLite file, or
    /// not SQLite at all). It is never written to.
    #[error(
        "{path}: not a hazgate store ({reason}); refusing to open it (the file was not changed)"
    )]
    Foreign { path: PathBuf, reason: String },
    /// The file is a hazgate store of an older schema this build cannot read. Schema 1
    /// was only ever written by development builds; there is no upgrade path.
    #[error(
        "{path}: store schema version {found} is older than this hazgate ({expected}) and cannot be upgraded; \
         move the file aside to start a new store (the file was not changed)"
    )]
    OldSchema {
        path: PathBuf,
        found: i64,
        expected: i64,
    },
    /// The file is a hazgate store of a newer schema than this build knows.
    #[error("{path}: store schema version {found} is newer than this hazgate ({expected})")]
    NewerSchema {
        path: PathBuf,
        found: i64,
        expected: i64,
    },
    /// The disk (or the configured disk limit) is full.
    #[error("storage full: {0}")]
    Full(String),
    /// `PRAGMA integrity_check` found damage.
    #[error("store integrity check failed: {0}")]
    Corrupt(String),
    /// A stored row could not be decoded (e.g. an unknown quality name).
    #[error("bad stored row in {table} seq {seq}: {reason}")]
    BadRow {
        table: &'static str,
        seq: i64,
        reason: String,
    },
    /// Any other SQLite error.
    #[error("sqlite: {0}")]
    Sqlite(rusqlite::Error),
    /// An alarm could not be serialised.
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
    /// The store's writer task is gone.
    #[error("store writer stopped")]
    WriterStopped,
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> StoreError {
        if let rusqlite::Error::SqliteFailure(f, ref msg) = e {
            if f.code == rusqlite::ErrorCode::DiskFull {
                return StoreError::Full(msg.clone().unwrap_or_else(|| f.to_string()));
            }
            if matches!(
                f.code,
                rusqlite::ErrorCode::NotADatabase | rusqlite::ErrorCode::DatabaseCorrupt
            ) {
                return StoreError::Corrupt(msg.clone().unwrap_or_else(|| f.to_string()));
            }
        }
        StoreError::Sqlite(e)
    }
}

impl StoreError {
    /// The disk (or the configured limit) is full.
    pub fn is_full(&self) -> bool {
        matches!(self, StoreError::Full(_))
    }
}

/// How the store keeps data. The `[storage]` config section maps onto this.
#[derive(Debug, Clone, PartialEq)]
pub struct StoreOptions {
    /// The SQLite file. Created when missing; refused when it belongs to someone else.
    pub path: PathBuf,
    /// Store every reading instead of changes beyond the deadband plus a heartbeat.
    pub store_every_reading: bool,
    /// Deadband (in the point's unit) used for points without their own
    /// ([`PointMeta::deadband`]). 0 stores every change.
    pub default_deadband: f64,
    /// Store a reading at least this often per point even when it did not change (s).
    pub heartbeat_s: u64,
    /// Keep raw readings at least this long (days). Coal mines need ≥ 90.
    pub readings_retention_days: u32,
    /// Keep 5-minute statistics at least this long (days).
    pub stats_retention_days: u32,
    /// Keep alarm events and audit rows at least this long (days).
    pub events_retention_days: u32,
    /// Upper bound on the database size (bytes), enforced by SQLite's `max_page_count`.
    /// When reached, readings writes fail with [`StoreError::Full`] (the writer keeps
    /// them and retries), alarm events make room by deleting the oldest readings
    /// (counted as lost when unshipped), and [`Store::prune`] deletes unshipped readings
    /// above 90 % of the limit. `None`: no limit but the disk.
    pub disk_limit_bytes: Option<u64>,
    /// Also fsync every readings batch (`synchronous=FULL`); slower, survives power loss.
    pub fsync_readings: bool,
    /// Fsync a readings commit at least this often (ms) even without
    /// `fsync_readings`. An alarm's fsync also flushes every WAL frame written since
    /// the last one, so under a stream of readings it would otherwise pay for all of
    /// them (5–20 ms here at 200–5,000 readings/s, against 1.5 ms with none); this
    /// bounds that debt, and what a power loss can take, to this interval. 0: only
    /// alarms, audit rows and checkpoints fsync.
    pub readings_sync_interval_ms: u64,
    /// How long a writer waits for a lock held by another connection (ms).
    pub busy_timeout_ms: u64,
    /// Capacity of the writer's control queue (alarm events, audit), in requests.
    /// When full, committing an alarm waits: alarms are never dropped.
    pub control_queue: usize,
    /// Capacity of the writer's readings queue, in batches. When full,
    /// [`StoreWriter::try_send_readings`] hands the batch back.
    pub readings_queue_batches: usize,
    /// Most readings written in one transaction.
    pub max_batch_readings: usize,
    /// Most readings kept in memory while the store cannot write them (disk full);
    /// beyond it the oldest are dropped, counted and logged. Readings whose source
    /// waits for the commit (MQTT) are kept beyond it: their broker holds the rest.
    pub max_held_readings: usize,
    /// Group commit: the writer commits readings at once when its last commit is at
    /// least this old (ms), and otherwise gathers them until it is, so under a steady
    /// stream there is at most one readings transaction per interval, while a reading
    /// after a quiet spell is committed without delay. Batches whose source waits for
    /// the commit (MQTT messages are acknowledged after it) wait only
    /// [`writer::RECEIPT_GATHER`], 1–2 ms. 0: commit every batch as it comes.
    pub min_commit_interval_ms: u64,
    /// How often the writer retries held readings and closes finished buckets (ms).
    pub tick_ms: u64,
    /// How often the writer prunes by retention (s).
    pub prune_interval_s: u64,
}

impl Default for StoreOptions {
    fn default() -> StoreOptions {
        StoreOptions {
            path: PathBuf::from("hazgate.db"),
            store_every_reading: false,
            default_deadband: 0.0,
            heartbeat_s: 60,
            readings_retention_days: 90,
            stats_retention_days: 730,
            events_retention_days: 730,
            disk_limit_bytes: None,
            fsync_readings: false,
            readings_sync_interval_ms: 100,
            busy_timeout_ms: 5_000,
            control_queue: 256,
            readings_queue_batches: 1_024,
            max_batch_readings: 20_000,
            max_held_readings: 2_000_000,
            min_commit_interval_ms: 5,
            tick_ms: 1_000,
            prune_interval_s: 600,
        }
    }
}

/// What the store (and the sinks, for tags) keep about a point.
#[derive(Debug, Clone, PartialEq)]
pub struct PointMeta {
    /// The configured id, e.g. `CH4-T1-1201`. Stable across config edits.
    pub id: String,
    /// `PointKind` name, e.g. `ch4`.
    pub kind: String,
    pub unit: Option<String>,
    pub site: Option<String>,
    /// Configured id of the hazard source the point belongs to.
    pub hazard_source: Option<String>,
    /// Store a change only when it exceeds this (point's unit); `None`: the default.
    pub deadband: Option<f64>,
}

impl PointMeta {
    /// The points of an engine spec, in `PointId` order.
    pub fn from_spec(spec: &EngineSpec) -> Vec<PointMeta> {
        spec.points
            .iter()
            .map(|p| PointMeta {
                id: p.id.clone(),
                kind: p.kind.as_str().to_owned(),
                unit: None,
                site: None,
                hazard_source: p
                    .hazard_source
                    .and_then(|h| spec.hazard_sources.get(h.0 as usize))
                    .map(|h| h.id.clone()),
                deadband: None,
            })
            .collect()
    }
}

/// One operator or system action for the audit log.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEntry {
    pub ts: crate::model::Timestamp,
    /// User name (or `system`).
    pub who: String,
    /// e.g. `acknowledge`, `shelve`, `config_change`.
    pub action: String,
    /// What it was done to, e.g. an alarm id or a point id.
    pub target: String,
    /// Free text: comment, reason, diff.
    pub detail: String,
}
