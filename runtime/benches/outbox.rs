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

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{mpsc, Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use edgefn::outbox::{Durability, Outbox, OutboxConfig, Overflow};

/// Producer thread counts, one case each (EDGEFN_BENCH_PRODUCERS overrides).
const PRODUCERS: [usize; 3] = [1, 4, 16];
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

    print_machine(&base, quick);

    // 1. Accepted records per second, outbox vs SQLite, P concurrent producers.
    println!();
    println!(
        "== 1. accepted records/s, Durability::Batch (group commit), {per_case} records per case, \
         1 record per call, ~{} B payload ==",
        payload(123).len()
    );
    println!("   (each engine warmed up with 200 records first; fsyncs = outbox status().fsyncs / sqlite commits)");
    println!();
    println!(
        "{:<14} {:>14} {:>14} {:>8}   {:>17}   {:>17}",
        "case", "outbox rec/s", "sqlite rec/s", "ratio", "fsyncs ob/sqlite", "rec/fsync ob/sql"
    );
    let mut rows = Vec::new();
    for &p in &producers {
        let ob = run_outbox(&base, p, per_case);
        let sq = run_sqlite(&base, p, per_case);
        let ratio = ob.rate() / sq.rate();
        println!(
            "{:<14} {:>14.0} {:>14.0} {:>7.2}x   {:>17}   {:>17}",
            format!("P={p} producers"),
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
        rows.push((p, ratio));
    }
    println!();
    for (p, ratio) in rows {
        let verdict = if ratio >= 2.0 { "meets" } else { "BELOW" };
        println!("P={p:<3} outbox/sqlite = {ratio:.2}x  ({verdict} the >= 2x target)");
    }

    // 2. Reopen time with a large backlog.
    println!();
    println!("== 2. Outbox::open with {reopen_records} records on disk (~{} B payloads) ==", payload(123).len());
    reopen(&base, reopen_records);
    println!();
    println!("reproduce: cd {} && cargo bench --bench outbox", workspace_root().display());
}

// ---------------------------------------------------------------------------
// Shared pieces

struct Run {
    records: u64,
    elapsed: Duration,
    fsyncs: u64,
}

impl Run {
    fn rate(&self) -> f64 {
        self.records as f64 / self.elapsed.as_secs_f64()
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
    OutboxConfig {
        dir,
        durability: Durability::Batch,
        max_bytes: 4 << 30,
        segment_bytes: 16 << 20,
        ttl: Duration::from_secs(7 * 24 * 3600),
        overflow: Overflow::DropOldest,
        queue: 4096,
        max_record_bytes: 64 << 10,
    }
}

/// Runs `total` single-record appends spread over `producers` threads, all
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

fn run_outbox(base: &Path, producers: usize, total: usize) -> Run {
    let tmp = tempdir(base, "outbox-rate-");
    let (outbox, _) = Outbox::open(outbox_config(tmp.path().join("outbox"))).expect("open outbox");
    for i in 0..200 {
        outbox.append(vec![(STREAM.to_string(), payload(i))]).expect("warm-up append");
    }
    let before = outbox.status();
    let ob = outbox.clone();
    let elapsed = drive(producers, total, move |seq| {
        ob.append(vec![(STREAM.to_string(), payload(seq))]).expect("append");
    });
    let after = outbox.status();
    outbox.close();
    assert_eq!(after.accepted - before.accepted, total as u64, "every append accepted");
    Run { records: total as u64, elapsed, fsyncs: after.fsyncs - before.fsyncs }
}

// ---------------------------------------------------------------------------
// The SQLite baseline: same producers, same group-commit shape.

struct Request {
    stream: String,
    payload: Vec<u8>,
    reply: mpsc::SyncSender<Result<(), String>>,
}

#[derive(Clone)]
struct Sqlite {
    tx: mpsc::SyncSender<Request>,
}

impl Sqlite {
    fn append(&self, stream: String, payload: Vec<u8>) -> Result<(), String> {
        let (reply, answer) = mpsc::sync_channel(1);
        self.tx.send(Request { stream, payload, reply }).map_err(|_| "closed".to_string())?;
        answer.recv().map_err(|_| "closed".to_string())?
    }
}

/// Opens the database and starts its writer; the writer stops once every
/// `Sqlite` handle is dropped.
fn open_sqlite(path: &Path, commits: Arc<AtomicU64>) -> (Sqlite, thread::JoinHandle<()>) {
    let conn = rusqlite::Connection::open(path).expect("open sqlite");
    let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0)).expect("wal");
    assert_eq!(mode.to_lowercase(), "wal");
    conn.execute_batch(
        "PRAGMA synchronous=FULL;
         CREATE TABLE outbox (id INTEGER PRIMARY KEY, stream TEXT NOT NULL, seq INTEGER NOT NULL,
                              ts INTEGER NOT NULL, payload BLOB NOT NULL);",
    )
    .expect("schema");
    let sync: i64 = conn.query_row("PRAGMA synchronous", [], |r| r.get(0)).expect("synchronous");
    assert_eq!(sync, 2, "synchronous=FULL");
    let (tx, rx) = mpsc::sync_channel::<Request>(4096);
    let writer = thread::Builder::new()
        .name("sqlite-writer".into())
        .spawn(move || sqlite_writer(conn, rx, commits))
        .expect("spawn sqlite writer");
    (Sqlite { tx }, writer)
}

fn sqlite_writer(mut conn: rusqlite::Connection, rx: mpsc::Receiver<Request>, commits: Arc<AtomicU64>) {
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
                    insert.execute(rusqlite::params![r.stream, *seq, now, r.payload])?;
                    *seq += 1;
                }
            }
            txn.commit()
        })();
        commits.fetch_add(1, Relaxed);
        for r in group {
            let _ = r.reply.send(result.as_ref().map(|_| ()).map_err(|e| e.to_string()));
        }
    }
}

fn run_sqlite(base: &Path, producers: usize, total: usize) -> Run {
    let tmp = tempdir(base, "sqlite-rate-");
    let commits = Arc::new(AtomicU64::new(0));
    let (db, writer) = open_sqlite(&tmp.path().join("outbox.db"), commits.clone());
    for i in 0..200 {
        db.append(STREAM.to_string(), payload(i)).expect("warm-up insert");
    }
    let before = commits.load(Relaxed);
    let handle = db.clone();
    let elapsed = drive(producers, total, move |seq| {
        handle.append(STREAM.to_string(), payload(seq)).expect("insert");
    });
    let fsyncs = commits.load(Relaxed) - before;
    drop(db);
    writer.join().expect("sqlite writer panicked");
    let conn = rusqlite::Connection::open(tmp.path().join("outbox.db")).expect("reopen sqlite");
    let rows: i64 = conn.query_row("SELECT count(*) FROM outbox", [], |r| r.get(0)).expect("count");
    assert_eq!(rows as usize, total + 200, "every insert committed");
    Run { records: total as u64, elapsed, fsyncs }
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
    println!("sqlite {} (bundled, rusqlite), WAL, synchronous=FULL", rusqlite::version());
    println!("command: cargo bench --bench outbox{}", if quick { " -- --quick" } else { "" });
}

fn unix_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}
