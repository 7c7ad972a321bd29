//! The store file shared with other processes while hazgate runs: an inspector's
//! `sqlite3`, `hazgate verify-store` or a backup opening and closing the database must
//! not take the write-ahead log away from the running store. (Before the fix, any
//! second handle this process opened on the file and closed dropped its POSIX locks;
//! the other process then took itself for the last connection and deleted the WAL,
//! and every later commit was invisible to others and lost in a crash.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use hazgate::store::{Reader, Store, StoreOptions};
use std::path::Path;
use std::process::Command;
use support::reading;

const T0: i64 = 1_700_000_000_000;

/// Rows in `readings`, as a separate process (Python's sqlite3) sees them; it opens
/// the database, reads and closes it, as an inspector would.
fn rows_seen_by_another_process(db: &Path) -> i64 {
    let out = Command::new("python3")
        .args([
            "-c",
            "import sqlite3, sys\n\
             c = sqlite3.connect(sys.argv[1])\n\
             print(c.execute('SELECT count(*) FROM readings').fetchone()[0])\n\
             c.close()",
        ])
        .arg(db)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

#[test]
fn another_process_closing_the_database_leaves_a_running_store_its_wal() {
    let dir = tempfile::tempdir().unwrap();
    let opts = StoreOptions {
        path: dir.path().join("store.db"),
        store_every_reading: true,
        ..StoreOptions::default()
    };
    let mut store = Store::open(&opts).unwrap();
    store
        .register_points(&support::ch4_points("CH4-", 1))
        .unwrap();
    store.write_readings(&[reading(0, T0, 0.5)]).unwrap();
    // Readers in the same process, as the API, the uplink and the InfluxDB sink open
    // theirs while the store writes.
    let _api = Reader::open(&opts.path).unwrap();
    let _uplink = Reader::open(&opts.path).unwrap();

    // Another process opens, reads and closes the database.
    assert_eq!(rows_seen_by_another_process(&opts.path), 1);
    let wal = dir.path().join("store.db-wal");
    assert!(
        wal.exists(),
        "another process deleted the running store's WAL"
    );

    // What the store commits next reaches the file others read (and a crash keeps).
    for k in 1..=3 {
        store
            .write_readings(&[reading(0, T0 + 1_000 * k, 0.5 + k as f64)])
            .unwrap();
        assert_eq!(rows_seen_by_another_process(&opts.path), 1 + k);
    }
    assert!(wal.exists());
}
