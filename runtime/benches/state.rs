//! Function state (`edgefn::state`) against SQLite doing the same job: a
//! counter read, incremented and written back (compare-and-set in edgefn, an
//! UPDATE in a transaction in SQLite), durable before the next one, as a
//! function whose every invocation changes state and publishes a command.
//!
//! Two cases: every change synced on its own (one invocation per worker
//! release, the worst case), and 16 changes per sync (a worker releasing 16
//! invocations' output at once, as under load). Run it under an SD card's
//! fsync delay with `runtime/benches/with-fsync-delay.sh 5 cargo bench --bench state`.
//! Prints a table with the ratio edgefn / SQLite; asserts nothing about time.
//!
//! `cargo bench --bench state` (add `-- --quick` for CI's short run).

use std::time::{Duration, Instant};

use edgefn::state::Store;

fn edgefn_run(dir: &std::path::Path, ops: u64, per_sync: u64) -> Duration {
    let store = Store::open(&dir.join("bench.kv"), 1 << 20).unwrap();
    let started = Instant::now();
    for i in 0..ops {
        let old = store.with("count", |v| v.map(|v| u64::from_le_bytes(v.try_into().unwrap())));
        let new = old.unwrap_or(0) + 1;
        let swapped = store
            .compare_and_set("count", old.map(u64::to_le_bytes).as_ref().map(|b| &b[..]), Some(&new.to_le_bytes()))
            .unwrap();
        assert!(swapped);
        if (i + 1) % per_sync == 0 {
            store.sync().unwrap();
        }
    }
    store.sync().unwrap();
    let took = started.elapsed();
    assert_eq!(store.with("count", |v| v.map(|v| u64::from_le_bytes(v.try_into().unwrap()))), Some(ops));
    took
}

fn sqlite_run(dir: &std::path::Path, ops: u64, per_sync: u64) -> Duration {
    let mut conn = rusqlite::Connection::open(dir.join("bench.db")).unwrap();
    conn.pragma_update(None, "journal_mode", "WAL").unwrap();
    conn.pragma_update(None, "synchronous", "FULL").unwrap();
    conn.execute("CREATE TABLE kv (key TEXT PRIMARY KEY, value BLOB NOT NULL)", []).unwrap();
    let started = Instant::now();
    let mut done = 0;
    while done < ops {
        let txn = conn.transaction().unwrap();
        for _ in 0..per_sync.min(ops - done) {
            let old: Option<i64> = txn.query_row("SELECT value FROM kv WHERE key = 'count'", [], |r| r.get(0)).ok();
            txn.execute(
                "INSERT INTO kv (key, value) VALUES ('count', ?1) ON CONFLICT(key) DO UPDATE SET value = ?1",
                [old.unwrap_or(0) + 1],
            )
            .unwrap();
            done += 1;
        }
        txn.commit().unwrap();
    }
    let took = started.elapsed();
    let count: i64 = conn.query_row("SELECT value FROM kv WHERE key = 'count'", [], |r| r.get(0)).unwrap();
    assert_eq!(count as u64, ops);
    took
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick") || std::env::var_os("EDGEFN_BENCH_QUICK").is_some();
    let ops: u64 = if quick { 400 } else { 4_000 };
    // Set by with-fsync-delay.sh.
    let fsync_delay =
        std::env::var("EDGEFN_FSYNC_DELAY_US").ok().and_then(|us| us.parse::<u64>().ok()).unwrap_or(0) / 1000;
    println!("edgefn function state vs SQLite {} (WAL, synchronous=FULL)", rusqlite::version());
    println!("  a counter read, incremented and written back {ops} times; fsync delay {fsync_delay} ms");
    println!("  {:<16} {:>14} {:>14} {:>8}", "changes a sync", "edgefn op/s", "sqlite op/s", "ratio");
    for per_sync in [1u64, 16] {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let e = edgefn_run(a.path(), ops, per_sync);
        let s = sqlite_run(b.path(), ops, per_sync);
        let rate = |d: Duration| ops as f64 / d.as_secs_f64();
        println!("  {:<16} {:>14.0} {:>14.0} {:>7.2}x", per_sync, rate(e), rate(s), rate(e) / rate(s));
    }
}
