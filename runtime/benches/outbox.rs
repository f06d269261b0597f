//! Prints what the durable outbox costs on this machine, next to SQLite doing the
//! same job: accepted records per second with concurrent producers under the
//! default durability policy (group commit, `Durability::Batch`), and the time to
//! reopen an outbox holding a million records.
//!
//! `cargo bench --bench outbox` (add `-- --quick`, or set EDGEFN_BENCH_QUICK=1,
//! for a short run). Figures to watch, not a pass/fail test: nothing here asserts
//! a time. For exploring: EDGEFN_BENCH_PRODUCERS=1,2,8,64 replaces the producer
//! counts, EDGEFN_BENCH_RECORDS=N the records per case.
//!
//! The SQLite baseline does "the same batching" as the outbox: one writer thread
//! takes whatever requests are queued on a channel, inserts them in ONE
//! transaction (WAL mode, `synchronous=FULL`, so the commit is SQLite's fsync) and
//! then answers each producer. Producers are identical for both: each call appends
//! one ~100-byte JSON record and waits until it is accepted, as a wasm worker does.
//!
//! At equal batching both are fsync-bound (one fsync per group), so records/s
//! mostly measures the device. What differs is what reaches the disk: section 1b
//! prints, for the same cases, the bytes written to the storage device per
//! accepted record, as a delta per case (the cases run one after another in this
//! process): sectors written by the bench dir's block device (the figure the
//! ratio uses) and `write_bytes` of `/proc/self/io`. The latter counts a whole
//! page-cache folio each time one turns dirty; where the kernel uses large
//! folios (ext4 on recent kernels) a 100-byte overwrite of the outbox's
//! zero-filled segment counts as up to 1 MiB, so a probe line says how it
//! behaves here. For SQLite the window includes its checkpoints, with a final
//! `PRAGMA wal_checkpoint(TRUNCATE)` at the end of each case. Section 1c compares a different durability policy on both sides:
//! `Durability::Interval` (100 ms) against SQLite WAL with `synchronous=NORMAL`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{mpsc, Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use edgefn::outbox::{Durability, Outbox, OutboxConfig, Overflow};

/// Producer thread counts, one case each (EDGEFN_BENCH_PRODUCERS overrides).
const PRODUCERS: [usize; 3] = [1, 4, 16];
/// Records per append in the worker-shaped case: a gateway worker under a burst
/// appends the records of up to this many held invocations at once
/// (`gateway::workers::HOLD_INVOCATIONS`).
const WORKER_BATCH: usize = 64;

fn case_label(producers: usize, per_call: usize) -> String {
    if per_call == 1 {
        format!("P={producers} producers")
    } else {
        format!("P={producers} x{per_call}/call")
    }
}
/// Stream every record is appended to.
const STREAM: &str = "telemetry";
/// Same bound as the outbox's writer: at most this many requests per group.
const MAX_GROUP: usize = 4096;

fn main() {
    let quick = std::env::args().any(|a| a == "--quick")
        || std::env::var("EDGEFN_BENCH_QUICK").map(|v| v == "1").unwrap_or(false);
    let per_case: usize = std::env::var("EDGEFN_BENCH_RECORDS").ok().and_then(|v| v.parse().ok()).unwrap_or(if quick {
        2_000
    } else {
        20_000
    });
    let producers: Vec<usize> = std::env::var("EDGEFN_BENCH_PRODUCERS")
        .ok()
        .map(|v| v.split(',').filter_map(|p| p.trim().parse().ok()).filter(|&p| p > 0).collect())
        .filter(|v: &Vec<usize>| !v.is_empty())
        .unwrap_or_else(|| PRODUCERS.to_vec());
    let reopen_records: u64 = if quick { 100_000 } else { 1_000_000 };
    let base = bench_dir();
    let _ = DEVICE_STAT.set(find_device_stat(&base));

    print_machine(&base, quick);

    // 1. Accepted records per second, outbox vs SQLite, P concurrent producers.
    println!();
    println!(
        "== 1. accepted records/s, Durability::Batch (group commit, the default), {per_case} records per case, \
         1 record per call (and {WORKER_BATCH} in the last case), ~{} B payload ==",
        payload(123).len()
    );
    println!("   (each engine warmed up with 200 records first; fsyncs = outbox status().fsyncs / sqlite commits)");
    println!();
    println!(
        "{:<18} {:>14} {:>14} {:>8}   {:>17}   {:>17}",
        "case", "outbox rec/s", "sqlite rec/s", "ratio", "fsyncs ob/sqlite", "rec/fsync ob/sql"
    );
    let mut rows = Vec::new();
    let mut runs = Vec::new();
    // The producer cases, then the shape a gateway worker produces under a burst:
    // one producer handing over the records of up to 64 held invocations at once.
    let cases: Vec<(usize, usize)> =
        producers.iter().map(|&p| (p, 1)).chain(std::iter::once((1, WORKER_BATCH))).collect();
    for &(p, per_call) in &cases {
        let ob = run_outbox(&base, p, per_case, per_call, Durability::Batch);
        let sq = run_sqlite(&base, p, per_case, per_call, Synchronous::Full);
        let ratio = ob.rate() / sq.rate();
        let label = case_label(p, per_call);
        println!(
            "{:<18} {:>14.0} {:>14.0} {:>7.2}x   {:>17}   {:>17}",
            label,
            ob.rate(),
            sq.rate(),
            ratio,
            format!("{} / {}", ob.fsyncs, sq.fsyncs),
            format!(
                "{:.1} / {:.1}",
                ob.records as f64 / ob.fsyncs.max(1) as f64,
                sq.records as f64 / sq.fsyncs.max(1) as f64
            ),
        );
        rows.push((label.clone(), ratio));
        runs.push((label, ob, sq));
    }
    println!();
    for (label, ratio) in rows {
        let verdict = if ratio >= 2.0 { "meets" } else { "BELOW" };
        println!("{label:<22} outbox/sqlite = {ratio:.2}x  ({verdict} the >= 2x target)");
    }

    // 1b. What reached the disk for those same cases.
    let payload_len = payload(123).len();
    println!();
    println!("== 1b. bytes written to the storage device per accepted record, same cases as 1 ==");
    println!("   (window per case: `sync -f`, release of the producers ... clean close of the store, `sync -f`;");
    println!("    the cases run one after another in this process, so each delta belongs to its case.");
    println!("    device B/rec = sectors written x 512 (/sys/dev/block/MAJ:MIN/stat of the bench dir's device):");
    println!("    file data + filesystem journal + anything else writing to that device meanwhile.");
    println!("    write_bytes B/rec = /proc/self/io write_bytes of this process: file data only, counted per");
    println!("    page-cache folio each time it turns dirty (see the probe line below).");
    println!("    SQLite: includes its auto-checkpoints and a final PRAGMA wal_checkpoint(TRUNCATE) run inside");
    println!("    the window, since a real SQLite store has to checkpoint the WAL into the database file");
    println!("    eventually; that final checkpoint is not in the rec/s of 1. Outbox: includes close() (final");
    println!("    sync, trim, state file). sqlite/outbox = SQLite's write amplification vs outbox, device bytes)");
    print_write_counters(&base);
    println!();
    print_bytes_header();
    for (label, ob, sq) in &runs {
        print_bytes_row(label, payload_len, ob, sq);
    }
    print_checkpoints(runs.iter().map(|(_, _, sq)| sq));

    // 1c. A different durability policy on both sides: accepted once written,
    // fsync later.
    println!();
    println!(
        "== 1c. DIFFERENT DURABILITY POLICY: outbox Durability::Interval {{ every: 100 ms }} vs SQLite WAL \
         synchronous=NORMAL, {per_case} records per case =="
    );
    println!("   (outbox: accepted after write(), fsync every 100 ms, a power cut can lose up to ~100 ms of records;");
    println!("    sqlite: commit writes the WAL without fsync, WAL fsynced at checkpoints only; same producers and");
    println!("    group-commit batching as 1. Not comparable with the rows of 1: nothing here waits for an fsync.");
    println!("    fsyncs = outbox status().fsyncs during the load / sqlite commits (which do not fsync here);");
    println!("    bytes as in 1b)");
    println!();
    println!(
        "{:<22} {:>14} {:>14} {:>8}   {:>17}",
        "case", "outbox rec/s", "sqlite rec/s", "ratio", "fsyncs ob/sqlite"
    );
    let mut interval_runs = Vec::new();
    for p in [1usize, 16] {
        let ob = run_outbox(&base, p, per_case, 1, Durability::Interval { every: Duration::from_millis(100) });
        let sq = run_sqlite(&base, p, per_case, 1, Synchronous::Normal);
        println!(
            "{:<22} {:>14.0} {:>14.0} {:>7.2}x   {:>17}",
            format!("P={p} interval/NORMAL"),
            ob.rate(),
            sq.rate(),
            ob.rate() / sq.rate(),
            format!("{} / {}", ob.fsyncs, sq.fsyncs),
        );
        interval_runs.push((p, ob, sq));
    }
    println!();
    print_bytes_header();
    for (p, ob, sq) in &interval_runs {
        print_bytes_row(&format!("P={p} interval/NORMAL"), payload_len, ob, sq);
    }
    print_checkpoints(interval_runs.iter().map(|(_, _, sq)| sq));
    for (p, ob, _) in &interval_runs {
        let expected = (ob.elapsed.as_secs_f64() / 0.1).floor() as u64;
        println!(
            "P={p:<3} outbox made {} fsyncs in {:.0} ms of load (one per 100 ms would be ~{expected}){}",
            ob.fsyncs,
            ob.elapsed.as_secs_f64() * 1e3,
            if expected >= 2 && ob.fsyncs * 2 < expected {
                "  <- FEWER: the writer syncs only after 100 ms with no appends, so under sustained load \
                 nothing is fsynced (or visible to the sender) until the load pauses or close()"
            } else {
                ""
            },
        );
    }

    // 2. Reopen time with a large backlog.
    println!();
    println!("== 2. Outbox::open with {reopen_records} records on disk (~{} B payloads) ==", payload(123).len());
    reopen(&base, reopen_records);
    println!();
    println!("reproduce: cd {} && cargo bench --bench outbox", workspace_root().display());
}

/// What the byte counters are worth on this machine: the device, the background
/// rate on it, and how /proc/self/io counts the outbox's kind of write.
fn print_write_counters(base: &Path) {
    match DEVICE_STAT.get().and_then(|p| p.as_ref()) {
        Some(p) => {
            let start = window_start(base);
            thread::sleep(Duration::from_secs(1));
            let idle = window_end(base, start).device.unwrap_or(0);
            println!("device: {} ; background while idle: {idle} B written in 1 s (sync included)", p.display());
        }
        None => println!("device: stat file not found; device B/rec shown as n/a"),
    }
    match probe_write_bytes(base) {
        Some(n) if n > 4096 => println!(
            "probe: a 100 B overwrite inside a zero-filled, fdatasync'ed 1 MiB region (the outbox's pattern) \
             adds {n} B to write_bytes: this kernel counts a whole large folio per re-dirty, so write_bytes \
             overstates the outbox's device writes; use device B/rec"
        ),
        Some(n) => {
            println!("probe: a 100 B overwrite inside a zero-filled, fdatasync'ed region adds {n} B to write_bytes")
        }
        None => println!("probe: /proc/self/io unavailable; write_bytes shown as n/a"),
    }
}

fn print_bytes_header() {
    println!(
        "{:<22} {:>9} {:>23} {:>16} {:>13}   {:>28}",
        "case",
        "payload B",
        "outbox dev B/rec (xpay)",
        "sqlite dev B/rec",
        "sqlite/outbox",
        "write_bytes B/rec ob / sql"
    );
}

fn print_bytes_row(case: &str, payload_len: usize, ob: &Run, sq: &Run) {
    let ob_bytes = match ob.device_per_record() {
        Some(b) => format!("{b:.1} ({:.1}x)", b / payload_len as f64),
        None => "n/a".into(),
    };
    println!(
        "{:<22} {:>9} {:>23} {:>16} {:>13}   {:>28}",
        case,
        payload_len,
        ob_bytes,
        fmt_opt(sq.device_per_record(), 1),
        amplification(ob, sq),
        format!("{} / {}", fmt_opt(ob.process_per_record(), 1), fmt_opt(sq.process_per_record(), 1)),
    );
}

fn print_checkpoints<'a>(sqlite_runs: impl Iterator<Item = &'a Run>) {
    let took: Vec<String> =
        sqlite_runs.filter_map(|r| r.checkpoint).map(|d| format!("{:.1}", d.as_secs_f64() * 1e3)).collect();
    println!("sqlite final wal_checkpoint(TRUNCATE), ms per case (in bytes, not in rec/s): {}", took.join(", "));
}

// ---------------------------------------------------------------------------
// Shared pieces

struct Run {
    records: u64,
    elapsed: Duration,
    fsyncs: u64,
    /// Bytes written from release of the producers to the clean close of the
    /// store (outbox: `close()`; SQLite: final checkpoint + close) and a `sync`.
    written: Written,
    /// SQLite only: the final `wal_checkpoint(TRUNCATE)` (in `written`, not in `elapsed`).
    checkpoint: Option<Duration>,
}

impl Run {
    fn rate(&self) -> f64 {
        self.records as f64 / self.elapsed.as_secs_f64()
    }

    /// Bytes the block device wrote per accepted record.
    fn device_per_record(&self) -> Option<f64> {
        self.written.device.map(|w| w as f64 / self.records as f64)
    }

    /// `/proc/self/io` `write_bytes` per accepted record.
    fn process_per_record(&self) -> Option<f64> {
        self.written.process.map(|w| w as f64 / self.records as f64)
    }
}

// ---------------------------------------------------------------------------
// Bytes written

/// Two counters of bytes written, either unavailable (None) on this machine.
#[derive(Clone, Copy, Default)]
struct Written {
    /// `write_bytes` of `/proc/self/io`: bytes this process (all threads, live
    /// and exited) caused to be sent to the storage layer, counted when a page
    /// cache folio turns dirty.
    process: Option<u64>,
    /// Sectors written x 512 from `/sys/dev/block/MAJ:MIN/stat` of the device
    /// holding the bench dir: what the device was asked to write, filesystem
    /// journal included, but from every process on that device.
    device: Option<u64>,
}

impl Written {
    fn now() -> Written {
        let process = std::fs::read_to_string("/proc/self/io")
            .ok()
            .and_then(|io| io.lines().find_map(|l| l.strip_prefix("write_bytes:")?.trim().parse().ok()));
        let device = DEVICE_STAT
            .get()
            .and_then(|p| p.as_ref())
            .and_then(|p| std::fs::read_to_string(p).ok())
            .and_then(|s| s.split_whitespace().nth(6)?.parse::<u64>().ok())
            .map(|sectors| sectors * 512);
        Written { process, device }
    }

    fn since(self, before: Written) -> Written {
        let d = |a: Option<u64>, b: Option<u64>| Some(a?.saturating_sub(b?));
        Written { process: d(self.process, before.process), device: d(self.device, before.device) }
    }
}

/// The `stat` file of the block device the bench dir lives on, if any.
static DEVICE_STAT: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();

fn find_device_stat(dir: &Path) -> Option<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let dev = std::fs::metadata(dir).ok()?.dev();
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    let path = PathBuf::from(format!("/sys/dev/block/{major}:{minor}/stat"));
    std::fs::read_to_string(&path).ok()?;
    Some(path)
}

/// Flushes whatever is dirty on the bench dir's filesystem (`sync -f`), so a
/// byte window starts clean and ends with everything the case left behind
/// actually written. Not part of any timing.
fn settle(dir: &Path) {
    let ok = std::process::Command::new("sync").arg("-f").arg(dir).status().map(|s| s.success()).unwrap_or(false);
    if !ok {
        let _ = std::process::Command::new("sync").status();
    }
}

/// Starts a byte window: flush, then read the counters.
fn window_start(dir: &Path) -> Written {
    settle(dir);
    Written::now()
}

/// Ends a byte window: flush, then the counters' growth since `start`.
fn window_end(dir: &Path, start: Written) -> Written {
    settle(dir);
    Written::now().since(start)
}

/// What a 100-byte overwrite (inside a zero-filled, fdatasync'ed 1 MiB region,
/// as the outbox writes) adds to `/proc/self/io` write_bytes on this kernel.
/// 4096 means one page; more means the page cache uses large folios there and
/// write_bytes counts the whole folio each time it is dirtied again.
fn probe_write_bytes(base: &Path) -> Option<u64> {
    let tmp = tempdir(base, "probe-");
    let path = tmp.path().join("probe");
    let f = std::fs::OpenOptions::new().create(true).truncate(true).read(true).write(true).open(&path).ok()?;
    use std::os::unix::fs::FileExt;
    f.write_all_at(&vec![0u8; 1 << 20], 0).ok()?;
    f.sync_data().ok()?;
    let before = Written::now().process?;
    f.write_all_at(&[b'x'; 100], 4096).ok()?;
    let after = Written::now().process?;
    Some(after - before)
}

/// "1234.5" or "n/a".
fn fmt_opt(v: Option<f64>, decimals: usize) -> String {
    v.map(|v| format!("{v:.decimals$}")).unwrap_or_else(|| "n/a".into())
}

/// Write amplification of `sqlite` relative to `outbox` (device bytes), e.g. "3.10x" or "n/a".
fn amplification(outbox: &Run, sqlite: &Run) -> String {
    match (outbox.device_per_record(), sqlite.device_per_record()) {
        (Some(o), Some(s)) if o > 0.0 => format!("{:.2}x", s / o),
        _ => "n/a".into(),
    }
}

/// A ~100-byte JSON reading, as a climate sensor would send.
fn payload(seq: u64) -> Vec<u8> {
    format!(
        r#"{{"temperature":21.5,"humidity":40.1,"device":"climate-7","battery":97,"linkquality":120,"seq":{seq:08}}}"#
    )
    .into_bytes()
}

fn outbox_config(dir: PathBuf) -> OutboxConfig {
    outbox_config_with(dir, Durability::Batch)
}

fn outbox_config_with(dir: PathBuf, durability: Durability) -> OutboxConfig {
    OutboxConfig {
        role: edgefn::outbox::Role::Upstream,
        dir,
        durability,
        max_bytes: 4 << 30,
        segment_bytes: 16 << 20,
        ttl: Duration::from_secs(7 * 24 * 3600),
        overflow: Overflow::DropOldest,
        queue: 4096,
        max_record_bytes: 64 << 10,
        // The default `upstream.commit_window_ms`; every producer here waits for
        // its answer, so the writer never waits the window out for them.
        commit_window: Duration::from_millis(5),
        min_free_bytes: 0,
    }
}

/// Runs `total` appends spread over `producers` threads, all
/// released at once; returns the wall time from release to the last answer.
fn drive<F>(producers: usize, total: usize, append: F) -> Duration
where
    F: Fn(u64) + Send + Sync + 'static,
{
    let append = Arc::new(append);
    let start = Arc::new(Barrier::new(producers + 1));
    let mut handles = Vec::new();
    for t in 0..producers {
        let n = total / producers + usize::from(t < total % producers);
        let (append, start) = (append.clone(), start.clone());
        handles.push(thread::spawn(move || {
            start.wait();
            for i in 0..n {
                append((t * 1_000_000 + i) as u64);
            }
        }));
    }
    start.wait();
    let began = Instant::now();
    for h in handles {
        h.join().expect("producer panicked");
    }
    began.elapsed()
}

fn tempdir(base: &Path, prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new().prefix(prefix).tempdir_in(base).expect("temp dir")
}

// ---------------------------------------------------------------------------
// The outbox

/// `total` records (rounded down to whole calls) in appends of `per_call` records.
fn run_outbox(base: &Path, producers: usize, total: usize, per_call: usize, durability: Durability) -> Run {
    let tmp = tempdir(base, "outbox-rate-");
    let (outbox, _) = Outbox::open(outbox_config_with(tmp.path().join("outbox"), durability)).expect("open outbox");
    for i in 0..200 {
        outbox.append(vec![(STREAM.to_string(), payload(i))]).expect("warm-up append");
    }
    let before = outbox.status();
    let io_before = window_start(base);
    let ob = outbox.clone();
    let calls = total / per_call;
    let elapsed = drive(producers, calls, move |call| {
        let first = call * per_call as u64;
        ob.append((first..first + per_call as u64).map(|seq| (STREAM.to_string(), payload(seq))).collect())
            .expect("append");
    });
    let total = calls * per_call;
    let after = outbox.status();
    // Byte window ends after close: the final sync, trim and state file are part
    // of what this run put on the disk.
    outbox.close();
    let written = window_end(base, io_before);
    assert_eq!(after.accepted - before.accepted, total as u64, "every append accepted");
    Run { records: total as u64, elapsed, fsyncs: after.fsyncs - before.fsyncs, written, checkpoint: None }
}

// ---------------------------------------------------------------------------
// The SQLite baseline: same producers, same group-commit shape.

struct Request {
    stream: String,
    payloads: Vec<Vec<u8>>,
    reply: mpsc::SyncSender<Result<(), String>>,
}

#[derive(Clone)]
struct Sqlite {
    tx: mpsc::SyncSender<Request>,
}

impl Sqlite {
    fn append(&self, stream: String, payloads: Vec<Vec<u8>>) -> Result<(), String> {
        let (reply, answer) = mpsc::sync_channel(1);
        self.tx.send(Request { stream, payloads, reply }).map_err(|_| "closed".to_string())?;
        answer.recv().map_err(|_| "closed".to_string())?
    }
}

/// SQLite's `synchronous` setting for a case (always in WAL mode).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Synchronous {
    /// Every commit fsyncs the WAL.
    Full,
    /// Commits only write the WAL; it is fsynced at checkpoints.
    Normal,
}

impl Synchronous {
    fn pragma(self) -> (&'static str, i64) {
        match self {
            Synchronous::Full => ("FULL", 2),
            Synchronous::Normal => ("NORMAL", 1),
        }
    }
}

/// Opens the database and starts its writer; the writer stops once every
/// `Sqlite` handle is dropped, then runs `PRAGMA wal_checkpoint(TRUNCATE)`
/// (returning how long it took) and closes the connection.
fn open_sqlite(
    path: &Path,
    synchronous: Synchronous,
    commits: Arc<AtomicU64>,
) -> (Sqlite, thread::JoinHandle<Duration>) {
    let conn = rusqlite::Connection::open(path).expect("open sqlite");
    let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0)).expect("wal");
    assert_eq!(mode.to_lowercase(), "wal");
    let (name, level) = synchronous.pragma();
    conn.execute_batch(&format!(
        "PRAGMA synchronous={name};
         CREATE TABLE outbox (id INTEGER PRIMARY KEY, stream TEXT NOT NULL, seq INTEGER NOT NULL,
                              ts INTEGER NOT NULL, payload BLOB NOT NULL);"
    ))
    .expect("schema");
    let sync: i64 = conn.query_row("PRAGMA synchronous", [], |r| r.get(0)).expect("synchronous");
    assert_eq!(sync, level, "synchronous={name}");
    let (tx, rx) = mpsc::sync_channel::<Request>(4096);
    let writer = thread::Builder::new()
        .name("sqlite-writer".into())
        .spawn(move || sqlite_writer(conn, rx, commits))
        .expect("spawn sqlite writer");
    (Sqlite { tx }, writer)
}

fn sqlite_writer(mut conn: rusqlite::Connection, rx: mpsc::Receiver<Request>, commits: Arc<AtomicU64>) -> Duration {
    let mut next_seq: HashMap<String, i64> = HashMap::new();
    while let Ok(first) = rx.recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(r) => group.push(r),
                Err(_) => break,
            }
        }
        let now = unix_ms();
        let result = (|| -> rusqlite::Result<()> {
            let txn = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            {
                let mut insert =
                    txn.prepare_cached("INSERT INTO outbox (stream, seq, ts, payload) VALUES (?1, ?2, ?3, ?4)")?;
                for r in &group {
                    let seq = next_seq.entry(r.stream.clone()).or_insert(0);
                    for payload in &r.payloads {
                        insert.execute(rusqlite::params![r.stream, *seq, now, payload])?;
                        *seq += 1;
                    }
                }
            }
            txn.commit()
        })();
        commits.fetch_add(1, Relaxed);
        for r in group {
            let _ = r.reply.send(result.as_ref().map(|_| ()).map_err(|e| e.to_string()));
        }
    }
    // A real store has to move the WAL into the database file eventually; do it
    // here so those bytes are counted (auto-checkpoints during the run already are).
    let began = Instant::now();
    let (busy, log, done): (i64, i64, i64) = conn
        .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .expect("wal_checkpoint");
    assert_eq!(busy, 0, "checkpoint not blocked");
    assert_eq!(log, done, "whole WAL checkpointed");
    let took = began.elapsed();
    drop(conn);
    took
}

/// As [`run_outbox`]: `per_call` rows per request, one transaction per group of requests.
fn run_sqlite(base: &Path, producers: usize, total: usize, per_call: usize, synchronous: Synchronous) -> Run {
    let tmp = tempdir(base, "sqlite-rate-");
    let commits = Arc::new(AtomicU64::new(0));
    let (db, writer) = open_sqlite(&tmp.path().join("outbox.db"), synchronous, commits.clone());
    for i in 0..200 {
        db.append(STREAM.to_string(), vec![payload(i)]).expect("warm-up insert");
    }
    let before = commits.load(Relaxed);
    let io_before = window_start(base);
    let handle = db.clone();
    let calls = total / per_call;
    let elapsed = drive(producers, calls, move |call| {
        let first = call * per_call as u64;
        handle.append(STREAM.to_string(), (first..first + per_call as u64).map(payload).collect()).expect("insert");
    });
    let total = calls * per_call;
    let fsyncs = commits.load(Relaxed) - before;
    drop(db);
    // Byte window ends after the writer's final checkpoint and close.
    let checkpoint = writer.join().expect("sqlite writer panicked");
    let written = window_end(base, io_before);
    let conn = rusqlite::Connection::open(tmp.path().join("outbox.db")).expect("reopen sqlite");
    let rows: i64 = conn.query_row("SELECT count(*) FROM outbox", [], |r| r.get(0)).expect("count");
    assert_eq!(rows as usize, total + 200, "every insert committed");
    Run { records: total as u64, elapsed, fsyncs, written, checkpoint: Some(checkpoint) }
}

// ---------------------------------------------------------------------------
// Reopen

fn reopen(base: &Path, records: u64) {
    const PER_APPEND: u64 = 1000;
    let tmp = tempdir(base, "outbox-reopen-");
    let dir = tmp.path().join("outbox");
    let began = Instant::now();
    {
        let (outbox, _) = Outbox::open(outbox_config(dir.clone())).expect("open outbox");
        let mut seq = 0;
        while seq < records {
            let n = PER_APPEND.min(records - seq);
            let batch = (seq..seq + n).map(|s| (STREAM.to_string(), payload(s))).collect();
            outbox.append(batch).expect("bulk append");
            seq += n;
        }
        outbox.close();
    }
    let (files, bytes) = std::fs::read_dir(&dir)
        .expect("list outbox dir")
        .filter_map(|e| e.ok()?.metadata().ok())
        .fold((0u64, 0u64), |(f, b), m| (f + 1, b + m.len()));
    println!(
        "setup: {records} records in appends of {PER_APPEND} + close: {:.1} s; {files} files, {:.1} MiB on disk",
        began.elapsed().as_secs_f64(),
        bytes as f64 / (1 << 20) as f64
    );
    for attempt in 1..=2 {
        let began = Instant::now();
        let (outbox, recovery) = Outbox::open(outbox_config(dir.clone())).expect("reopen outbox");
        let took = began.elapsed();
        let depth = outbox.status().depth;
        println!(
            "reopen #{attempt}: Outbox::open {:>8.1} ms  recovered {} records in {} segments, \
             skipped {} B, {} problems; depth {depth}{}",
            took.as_secs_f64() * 1e3,
            recovery.records,
            recovery.segments,
            recovery.skipped_bytes,
            recovery.problems.len(),
            if attempt == 1 { "  (page cache warm: files were just written)" } else { "" },
        );
        outbox.close();
    }
    println!("target: under 1000 ms");
}

// ---------------------------------------------------------------------------
// Machine facts

fn bench_dir() -> PathBuf {
    let dir = std::env::var_os("EDGEFN_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("bench-outbox"));
    std::fs::create_dir_all(&dir).expect("bench dir");
    dir
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap_or(Path::new(".")).to_path_buf()
}

fn print_machine(dir: &Path, quick: bool) {
    let cpus = thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let kernel =
        std::fs::read_to_string("/proc/sys/kernel/osrelease").map(|s| s.trim().to_string()).unwrap_or_default();
    let fs = std::process::Command::new("df")
        .args(["--output=fstype,source"])
        .arg(dir)
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.lines().nth(1).map(|l| l.split_whitespace().collect::<Vec<_>>().join(" on ")))
        .unwrap_or_else(|| "unknown".into());
    println!("edgefn outbox benchmark{}", if quick { " (QUICK mode)" } else { "" });
    println!("machine: nproc {cpus}, cpu {model}, linux {kernel}");
    println!("temp dir: {} (filesystem {fs})", dir.display());
    println!("sqlite {} (bundled, rusqlite), WAL, synchronous=FULL (1, 1b) / NORMAL (1c)", rusqlite::version());
    if Written::now().process.is_none() {
        println!("/proc/self/io: unavailable, write_bytes shown as n/a");
    }
    println!("command: cargo bench --bench outbox{}", if quick { " -- --quick" } else { "" });
}

fn unix_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}
