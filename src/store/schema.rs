//! Opening the file: refuse what is not ours, create the schema when new.

use super::{StoreError, StoreOptions};
use crate::model::Quality;
use rusqlite::{Connection, OpenFlags};
use std::io::Read;
use std::path::Path;
use std::sync::Mutex;

/// Store files this process has open through SQLite, by device and inode, once per
/// connection. Their header is never read with a plain file handle while one is open:
/// closing any handle on a file drops every POSIX lock the process holds on it,
/// SQLite's own among them. Another process closing its connection (an inspector's
/// `sqlite3`, `hazgate verify-store`) would then take itself for the last connection,
/// checkpoint and delete the WAL that this process still writes to: every commit
/// after that is invisible to others and lost in a crash.
static OPENED: Mutex<Vec<(u64, u64)>> = Mutex::new(Vec::new());

/// A connection's entry in [`OPENED`], removed when it is dropped. Held next to the
/// connection and declared after it, so the connection closes first.
#[derive(Debug)]
pub(super) struct OpenFile(Option<(u64, u64)>);

impl OpenFile {
    fn new(path: &Path) -> OpenFile {
        let id = file_id(path);
        if let Some(id) = id {
            opened().push(id);
        }
        OpenFile(id)
    }
}

impl Drop for OpenFile {
    fn drop(&mut self) {
        if let Some(id) = self.0 {
            let mut ids = opened();
            if let Some(i) = ids.iter().position(|x| *x == id) {
                ids.swap_remove(i);
            }
        }
    }
}

/// The device and inode of `path`, from its metadata (no handle on the file).
fn file_id(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

fn opened() -> std::sync::MutexGuard<'static, Vec<(u64, u64)>> {
    OPENED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// `PRAGMA application_id` of a hazgate store: ASCII `HZGT`.
pub const APPLICATION_ID: i64 = 0x485A_4754;
/// Width of the time slices that lead the readings history index (ms). The index is
/// `(ts / SLICE_MS, pid, ts)`: readings of the present go into the index region of the
/// present slice, which stays small enough for the page cache (5,000 points at 1 Hz
/// make 50,000 entries, ~1.5 MB). A `(pid, ts)` index instead has one insertion point
/// per point, each on its own leaf page: 5,000 points touch 20 MB of leaves per
/// batch, four times the 8 MB cache, and every insert read a page back from disk. The
/// literal `10000` in the index and in the history query must stay equal to this.
pub(super) const SLICE_MS: i64 = 10_000;

/// `PRAGMA user_version` of the schema this build writes.
///
/// - 1: `readings.seq` `AUTOINCREMENT`, `readings.quality` as text. Never deployed;
///   refused with [`StoreError::OldSchema`].
/// - 2: `readings.seq` a plain rowid, `readings.quality` an integer code
///   ([`quality_code`]), history index `(ts / 10000, pid, ts)` instead of `(pid, ts)`.
/// - 3: `stats_5min.seq` (the order statistics rows were last written in, for sinks
///   that ship them) with its index, `sink_cursors.stats_seq`. A version-2 file is
///   upgraded in place on open ([`UPGRADABLE_FROM`]); its existing statistics rows
///   get `seq` 0, so no sink ships them.
pub const SCHEMA_VERSION: i64 = 3;

/// The oldest `user_version` [`open`] upgrades (additively, in one transaction).
pub const UPGRADABLE_FROM: i64 = 2;

const SQLITE_MAGIC: &[u8; 16] = b"SQLite format 3\0";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS points (
    pid INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    unit TEXT,
    site TEXT,
    hazard_source TEXT
);
CREATE TABLE IF NOT EXISTS readings (
    seq INTEGER PRIMARY KEY,
    pid INTEGER NOT NULL,
    ts INTEGER NOT NULL,
    value REAL,
    quality INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS readings_slice_pid_ts ON readings(ts / 10000, pid, ts);
CREATE TABLE IF NOT EXISTS stats_5min (
    pid INTEGER NOT NULL,
    bucket INTEGER NOT NULL,
    min REAL NOT NULL,
    max REAL NOT NULL,
    sum REAL NOT NULL,
    count INTEGER NOT NULL,
    max_ts INTEGER NOT NULL,
    seq INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (pid, bucket)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS stats_5min_seq ON stats_5min(seq);
CREATE TABLE IF NOT EXISTS alarm_events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    alarm_id INTEGER NOT NULL,
    pid INTEGER,
    kind TEXT NOT NULL,
    transition TEXT NOT NULL,
    grade INTEGER,
    ts INTEGER NOT NULL,
    alarm_json TEXT NOT NULL,
    prev_hash BLOB NOT NULL,
    hash BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS alarm_events_alarm ON alarm_events(alarm_id);
CREATE INDEX IF NOT EXISTS alarm_events_ts ON alarm_events(ts);
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    ts INTEGER NOT NULL,
    who TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    detail TEXT NOT NULL,
    prev_hash BLOB NOT NULL,
    hash BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS chain_anchor (
    chain TEXT PRIMARY KEY,
    seq INTEGER NOT NULL,
    hash BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS sink_cursors (
    sink TEXT PRIMARY KEY,
    readings_seq INTEGER NOT NULL,
    events_seq INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL,
    stats_seq INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS quarantine (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    sink TEXT NOT NULL,
    reading_seq INTEGER NOT NULL,
    line TEXT NOT NULL,
    error TEXT NOT NULL,
    ts INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS storage_loss (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts INTEGER NOT NULL,
    what TEXT NOT NULL,
    rows INTEGER NOT NULL,
    reason TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
";

/// Check that `path` is absent, empty, or a hazgate store, before SQLite touches it.
/// Reading the header ourselves means a foreign file is never opened read-write.
///
/// A file this process has open is not read again (see [`OPENED`]); it was checked
/// when first opened, and SQLite's own check in [`open`] still applies.
fn check_header(path: &Path) -> Result<bool, StoreError> {
    if file_id(path).is_some_and(|id| opened().contains(&id)) {
        return Ok(true);
    }
    let foreign = |reason: String| StoreError::Foreign {
        path: path.to_owned(),
        reason,
    };
    let mut file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(foreign(format!("cannot read it: {e}"))),
    };
    let mut header = [0u8; 100];
    let mut got = 0;
    while got < header.len() {
        match file.read(&mut header[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) => return Err(foreign(format!("cannot read it: {e}"))),
        }
    }
    if got == 0 {
        return Ok(false);
    }
    if got < 100 || &header[..16] != SQLITE_MAGIC {
        return Err(foreign("not an SQLite database".into()));
    }
    // Offsets 60 and 68 of the header hold user_version and application_id (big-endian).
    let user_version = i64::from(i32::from_be_bytes([
        header[60], header[61], header[62], header[63],
    ]));
    let app_id = i64::from(i32::from_be_bytes([
        header[68], header[69], header[70], header[71],
    ]));
    if app_id != APPLICATION_ID {
        return Err(foreign(format!(
            "application_id is {app_id:#x}, expected {APPLICATION_ID:#x}"
        )));
    }
    if user_version > SCHEMA_VERSION {
        return Err(StoreError::NewerSchema {
            path: path.to_owned(),
            found: user_version,
            expected: SCHEMA_VERSION,
        });
    }
    if user_version < 1 {
        return Err(foreign(format!("user_version is {user_version}")));
    }
    if user_version < UPGRADABLE_FROM {
        return Err(StoreError::OldSchema {
            path: path.to_owned(),
            found: user_version,
            expected: SCHEMA_VERSION,
        });
    }
    Ok(true)
}

/// Open (or create) the store file and bring the schema up; the connection comes with
/// its entry in [`OPENED`].
pub(super) fn open(opts: &StoreOptions) -> Result<(Connection, OpenFile), StoreError> {
    let path = opts.path.as_path();
    let existed = check_header(path)?;
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    // From here on SQLite holds the file open (and created it if it was missing).
    let open = OpenFile::new(path);
    conn.busy_timeout(std::time::Duration::from_millis(opts.busy_timeout_ms))?;
    // The header check above ran before SQLite; re-check through SQLite too (it sees a
    // hot journal or WAL the raw header may not reflect).
    let app_id: i64 = conn.query_row("PRAGMA application_id", [], |r| r.get(0))?;
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if existed && (app_id != APPLICATION_ID || version < 1) {
        return Err(StoreError::Foreign {
            path: path.to_owned(),
            reason: format!("application_id {app_id:#x}, user_version {version}"),
        });
    }
    if existed && !(UPGRADABLE_FROM..=SCHEMA_VERSION).contains(&version) {
        let (found, expected, path) = (version, SCHEMA_VERSION, path.to_owned());
        return Err(if version < SCHEMA_VERSION {
            StoreError::OldSchema {
                path,
                found,
                expected,
            }
        } else {
            StoreError::NewerSchema {
                path,
                found,
                expected,
            }
        });
    }
    if !existed {
        let tables: i64 = conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))?;
        if tables > 0 || app_id != 0 {
            return Err(StoreError::Foreign {
                path: path.to_owned(),
                reason: "a database appeared while opening".into(),
            });
        }
    }
    let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Sqlite(rusqlite::Error::InvalidQuery));
    }
    // A 2 MB page cache, for the gateway's memory budget (< 50 MB with 10,000
    // points). The write path needs only the right edge of `readings` and the present
    // slice of its index to stay cached (see `SLICE_MS`), so it does not grow with the
    // number of points.
    conn.execute_batch(
        "PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=OFF; PRAGMA cache_size=-2000;",
    )?;
    conn.execute_batch("BEGIN IMMEDIATE;")?;
    let created = (|| {
        // Re-read under the write lock: another connection may have upgraded the file
        // since the check above.
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if existed && version == 2 {
            // 2 → 3: additive. The new columns must exist before SCHEMA indexes them.
            conn.execute_batch(
                "ALTER TABLE stats_5min ADD COLUMN seq INTEGER NOT NULL DEFAULT 0; \
                 ALTER TABLE sink_cursors ADD COLUMN stats_seq INTEGER NOT NULL DEFAULT 0;",
            )?;
            tracing::info!(path = %path.display(), "store upgraded from schema 2 to 3");
        }
        conn.execute_batch(&format!(
            "{SCHEMA} PRAGMA application_id={APPLICATION_ID}; PRAGMA user_version={SCHEMA_VERSION}; COMMIT;"
        ))
    })();
    if let Err(e) = created {
        let _ = conn.execute_batch("ROLLBACK;");
        return Err(e.into());
    }
    // Make the new file's identity durable at once.
    if !existed {
        conn.execute_batch("PRAGMA wal_checkpoint(FULL);")?;
    }
    set_disk_limit(&conn, opts.disk_limit_bytes)?;
    Ok((conn, open))
}

/// Apply a disk limit as SQLite's `max_page_count` (never below the current size).
pub(super) fn set_disk_limit(conn: &Connection, limit: Option<u64>) -> Result<(), StoreError> {
    let page_size: i64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
    let pages = match limit {
        Some(bytes) => (i64::try_from(bytes).unwrap_or(i64::MAX) / page_size.max(1)).max(1),
        // SQLite's own maximum.
        None => 4_294_967_294,
    };
    // SQLite clamps to the current page count when the file is already larger.
    let _: i64 = conn.query_row(&format!("PRAGMA max_page_count={pages}"), [], |r| r.get(0))?;
    Ok(())
}

/// The stored code of a quality (`readings.quality`). Part of the file format: codes
/// are never renumbered, new qualities get new codes.
///
/// ```text
/// 0 good   1 stale   2 comm_fail   3 out_of_range   4 bad_data   5 bad_config
/// 6 maintenance   7 source_bad   0x100 + c  device_exception(c), c = 0..=255
/// ```
pub(super) fn quality_code(q: Quality) -> i64 {
    match q {
        Quality::Good => 0,
        Quality::Stale => 1,
        Quality::CommFail => 2,
        Quality::OutOfRange => 3,
        Quality::BadData => 4,
        Quality::BadConfig => 5,
        Quality::Maintenance => 6,
        Quality::SourceBad => 7,
        Quality::DeviceException(c) => 0x100 + i64::from(c),
    }
}

/// The quality of a stored code; `None` for a code this build does not know.
pub(super) fn quality_from_code(code: i64) -> Option<Quality> {
    Some(match code {
        0 => Quality::Good,
        1 => Quality::Stale,
        2 => Quality::CommFail,
        3 => Quality::OutOfRange,
        4 => Quality::BadData,
        5 => Quality::BadConfig,
        6 => Quality::Maintenance,
        7 => Quality::SourceBad,
        0x100..=0x1ff => Quality::DeviceException(u8::try_from(code - 0x100).ok()?),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quality_codes_round_trip_and_unknown_codes_are_refused() {
        let mut all = vec![
            Quality::Good,
            Quality::Stale,
            Quality::CommFail,
            Quality::OutOfRange,
            Quality::BadData,
            Quality::BadConfig,
            Quality::Maintenance,
            Quality::SourceBad,
        ];
        all.extend((0..=255).map(Quality::DeviceException));
        let mut codes: Vec<i64> = all.iter().map(|&q| quality_code(q)).collect();
        for (&q, &c) in all.iter().zip(&codes) {
            assert_eq!(quality_from_code(c), Some(q));
        }
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), all.len(), "codes are distinct");
        for bad in [-1, 8, 0xff, 0x200, i64::MAX] {
            assert_eq!(quality_from_code(bad), None, "{bad}");
        }
    }
}
