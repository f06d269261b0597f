//! The durable store-and-forward outbox: records for upstream are appended to
//! segment files on disk, each framed with its length and a CRC32, and counted as
//! accepted only once on stable storage (group commit: whatever arrives while one
//! fsync runs shares the next). Whole segments are deleted once everything in them
//! is acknowledged upstream. Only this module touches the disk for the outbox.

mod files;
pub(crate) mod frame;
mod index;
mod record;
mod writer;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering::Relaxed};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use serde::Serialize;

pub use files::{free_bytes, Recovery};
pub use index::Cursor;
pub use record::{valid_stream, Record};

/// When a record counts as accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// After the fsync of the group it was written with (the default).
    Batch,
    /// After it is written; fsync runs every `every`, so a power cut can lose up to that much.
    Interval { every: Duration },
}

/// What happens when the outbox is full (`max_bytes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overflow {
    /// Delete the oldest segment, acknowledged or not, counting its records as dropped.
    DropOldest,
    /// Refuse new records (producers see an error), counting them as refused.
    Refuse,
}

/// What an outbox holds, for what its log lines say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Records for the upstream broker.
    Upstream,
    /// A function's spooled events (`gateway::spool`).
    Spool,
}

impl Role {
    /// The name of its size bound and what a refusal means, for log lines.
    fn full(self) -> &'static str {
        match self {
            Role::Upstream => {
                "outbox: full (upstream.max_bytes, overflow = \"refuse\"); refusing records until acknowledgements free space (counted in refused; functions' upstream returns -3)"
            }
            Role::Spool => "spool: full (gateway.spool_max_bytes); refusing events until the function catches up",
        }
    }

    fn short_of_reserve(self) -> &'static str {
        match self {
            Role::Upstream => {
                "outbox: the disk is nearly full (gateway.min_free_bytes); refusing records until space returns (counted in refused; functions' upstream returns -3)"
            }
            Role::Spool => "spool: the disk is nearly full (gateway.min_free_bytes); refusing events until space returns",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Role::Upstream => "outbox",
            Role::Spool => "spool",
        }
    }
}

/// Outbox settings.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxConfig {
    /// What it holds (upstream records or spooled events), for its log lines.
    pub role: Role,
    pub dir: PathBuf,
    pub durability: Durability,
    /// Bound on the bytes of all segments.
    pub max_bytes: u64,
    /// A segment is closed and a new one started past this size.
    pub segment_bytes: u64,
    /// Records older than this are dropped unsent (counted as expired).
    pub ttl: Duration,
    pub overflow: Overflow,
    /// Appends that may wait for the writer before producers are refused.
    pub queue: usize,
    /// Larger payloads could never be sent upstream: they are refused.
    pub max_record_bytes: usize,
    /// After the first append of a group, how long the writer waits for more
    /// before it writes and syncs: fewer fsyncs (and SD-card writes) at steady
    /// rates, for at most this much added acceptance latency. Zero: no waiting.
    pub commit_window: Duration,
    /// Free space the outbox always leaves on its filesystem: records that
    /// would eat into it are refused (and counted), so that the gateway's own
    /// files never fill the card. Zero: none.
    pub min_free_bytes: u64,
}

/// Why records were not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OutboxError {
    #[error("outbox full (upstream.max_bytes, overflow = \"refuse\")")]
    Full,
    #[error("the disk is nearly full (less free than gateway.min_free_bytes)")]
    DiskReserve,
    #[error("record too large for the upstream connection (upstream.max_packet_bytes)")]
    TooLarge,
    #[error("outbox queue full: the disk cannot keep up")]
    QueueFull,
    #[error("outbox write failed: {0}")]
    Io(String),
    #[error("outbox closed")]
    Closed,
}

crate::counters::counters! {
    /// Counters of everything the outbox accepted, sent and lost, for logs and metrics.
    pub struct OutboxStats;
    /// A point-in-time status of the outbox.
    #[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
    pub struct OutboxStatus {
        live {
            /// Records accepted: durable on disk (or written, with interval durability).
            accepted: Total,
            /// Records refused: the outbox full, the disk short of its reserve, a write failed.
            refused: Dropped,
            /// Records dropped unsent to make room (`overflow = "drop_oldest"`).
            dropped: Dropped,
            /// Records dropped unsent past their time to live (`upstream.ttl_s`).
            expired: Dropped,
            /// Records sent upstream (resends included).
            sent: Total,
            /// Records the upstream broker acknowledged.
            acknowledged: Total,
            /// Records sent again after a reconnect or a restart.
            resent: Total,
            /// Syncs of the outbox to disk (group commits).
            fsyncs: Total,
            /// 1 while connected to the upstream broker.
            connected: Gauge,
            /// Connections made to the upstream broker: the first, then one per reconnect.
            connects: Total,
        }
        copied {
            /// Records accepted and not yet acknowledged upstream.
            depth: Gauge,
            /// Age of the oldest record not yet acknowledged, milliseconds.
            oldest_age_ms: Gauge,
            /// Bytes of the outbox's segment files.
            bytes_on_disk: Gauge,
        }
    }
}

/// State shared by the writer thread, producers and the upstream sender.
pub(crate) struct Shared {
    pub cfg: OutboxConfig,
    pub index: Mutex<index::Index>,
    pub stats: OutboxStats,
    /// Wakes the upstream sender when new records become durable.
    pub durable: tokio::sync::Notify,
    /// Serializes writes of the state file.
    pub state_lock: Mutex<()>,
    /// The acknowledged id the state file holds, and when it was written.
    pub persisted: Mutex<(u64, std::time::Instant)>,
    /// Why the writer refuses records now (a [`Refusing`] as a byte), for the [`Gate`].
    pub refusing: AtomicU8,
    /// Appends sent to the writer and not yet taken by it: the bound on
    /// `cfg.queue` is kept here, not by the channel, whose bounded flavour
    /// would write a slot for every place at open (256 KiB resident for 4,096).
    pub queued: AtomicUsize,
}

impl Shared {
    /// Writes the index's state to the state file, one writer at a time, and
    /// notes which acknowledged position is on disk.
    pub fn write_state(&self) -> std::io::Result<()> {
        let _guard = crate::sync::lock(&self.state_lock);
        let state = crate::sync::lock(&self.index).state.clone();
        files::write_state(&self.cfg.dir, &state)?;
        *crate::sync::lock(&self.persisted) = (state.acked.id, std::time::Instant::now());
        Ok(())
    }
}

/// Why the outbox refuses records now: a state, set by the writer when it
/// refuses a group, cleared when it accepts one or sees the cause gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Refusing {
    No = 0,
    /// Full, with `overflow = "refuse"`, until acknowledgements free a segment.
    Full = 1,
    /// Less free disk than `gateway.min_free_bytes`, until space returns.
    DiskReserve = 2,
    /// The last write failed; the writer lets records try again after a while.
    WriteFailed = 3,
}

impl Refusing {
    fn from_byte(byte: u8) -> Self {
        match byte {
            1 => Self::Full,
            2 => Self::DiskReserve,
            3 => Self::WriteFailed,
            _ => Self::No,
        }
    }
}

/// What a producer asks before it makes records: whether the outbox refuses
/// them now. Functions learn it from `upstream`'s return value (ABI.md), so a
/// full disk is news to them, not a silent loss. Cheap to clone and to ask.
#[derive(Clone)]
pub struct Gate(Arc<Shared>);

impl Gate {
    pub fn refusing(&self) -> Refusing {
        Refusing::from_byte(self.0.refusing.load(Relaxed))
    }

    /// Counts a record refused at the gate, before it reached the outbox.
    pub fn count_refused(&self) {
        self.0.stats.refused.fetch_add(1, Relaxed);
    }
}

/// Records on their way to the writer: a stream name and a payload each, both
/// shared rather than copied (a forwarded message's buffer is the one its
/// functions read; a forward rule's stream name is the routes' own).
pub type Records = Vec<(Arc<str>, bytes::Bytes)>;

fn to_shared(records: Vec<(String, Vec<u8>)>) -> Records {
    records.into_iter().map(|(stream, payload)| (Arc::from(stream), bytes::Bytes::from(payload))).collect()
}

/// A request to the writer thread.
pub(crate) struct Append {
    pub records: Records,
    /// Where to say whether they were accepted; `None` for fire-and-forget producers.
    pub reply: Option<mpsc::SyncSender<Result<(), OutboxError>>>,
    /// Called once the records are answered (true: durable; false: refused),
    /// for a producer that does not wait but owes someone an acknowledgement.
    /// Dropped uncalled when [`Outbox::try_append_then`] refuses at once.
    pub then: Option<Then>,
}

/// What a producer that does not wait wants done once its records are answered.
pub type Then = Box<dyn FnOnce(bool) + Send>;

/// The outbox: cheap to clone, shared by producers and the sender.
#[derive(Clone)]
pub struct Outbox {
    shared: Arc<Shared>,
    tx: mpsc::Sender<Append>,
    writer: Arc<Mutex<Option<std::thread::JoinHandle<()>>>>,
}

impl Outbox {
    /// Opens (or creates) the outbox, recovering what a crash left behind.
    pub fn open(cfg: OutboxConfig) -> std::io::Result<(Outbox, Recovery)> {
        let (index, active, recovery) = files::open(&cfg.dir)?;
        let acked_on_disk = index.state.acked.id;
        let (tx, rx) = mpsc::channel();
        let shared = Arc::new(Shared {
            cfg,
            index: Mutex::new(index),
            stats: OutboxStats::default(),
            durable: tokio::sync::Notify::new(),
            state_lock: Mutex::new(()),
            persisted: Mutex::new((acked_on_disk, std::time::Instant::now())),
            refusing: AtomicU8::new(Refusing::No as u8),
            queued: AtomicUsize::new(0),
        });
        let writer = writer::spawn(shared.clone(), active, rx)?;
        Ok((Outbox { shared, tx, writer: Arc::new(Mutex::new(Some(writer))) }, recovery))
    }

    /// Appends records and waits until they are accepted (durable, per the policy).
    pub fn append(&self, records: Vec<(String, Vec<u8>)>) -> Result<(), OutboxError> {
        let (reply, answer) = mpsc::sync_channel(1);
        // A producer that waits adds one append at a time: no bound needed.
        self.send(Append { records: to_shared(records), reply: Some(reply), then: None })?;
        answer.recv().map_err(|_| OutboxError::Closed)?
    }

    /// Queues records without waiting (for the MQTT intake, which must not block).
    /// Refused, and counted, when the writer's queue is full.
    pub fn try_append(&self, records: Vec<(String, Vec<u8>)>) -> Result<(), OutboxError> {
        self.try_append_then(records, None)
    }

    /// [`Outbox::try_append`], calling `then` once the records are durable
    /// (`true`) or refused by the writer (`false`). Refused here, it is dropped
    /// uncalled and the error returned.
    pub fn try_append_then(&self, records: Vec<(String, Vec<u8>)>, then: Option<Then>) -> Result<(), OutboxError> {
        self.try_append_shared(to_shared(records), then)
    }

    /// [`Outbox::try_append_then`] for records already shared: nothing is copied
    /// before the writer encodes them.
    pub fn try_append_shared(&self, records: Records, then: Option<Then>) -> Result<(), OutboxError> {
        let n = records.len() as u64;
        let cap = self.shared.cfg.queue.max(1);
        let room = take_place(&self.shared.queued, cap);
        let sent = match room {
            true => self.send_counted(Append { records, reply: None, then }),
            false => Err(OutboxError::QueueFull),
        };
        sent.inspect_err(|_| {
            self.shared.stats.refused.fetch_add(n, Relaxed);
        })
    }

    fn send(&self, append: Append) -> Result<(), OutboxError> {
        self.shared.queued.fetch_add(1, Relaxed);
        self.send_counted(append)
    }

    /// Sends an append already counted in `queued`.
    fn send_counted(&self, append: Append) -> Result<(), OutboxError> {
        self.tx.send(append).map_err(|_| {
            self.shared.queued.fetch_sub(1, Relaxed);
            OutboxError::Closed
        })
    }

    /// Current depth, age, size and counters.
    pub fn status(&self) -> OutboxStatus {
        let (depth, segment_oldest, bytes, acked) = {
            let ix = crate::sync::lock(&self.shared.index);
            (ix.depth(), ix.oldest_unacked_ms(), ix.bytes(), ix.normalize(ix.state.acked))
        };
        // The index knows when its segment's first record came; the oldest
        // unacknowledged record itself says when it came (one small read).
        let oldest = match depth {
            0 => None,
            _ => self
                .reader()
                .read_each(acked, 1, 0)
                .ok()
                .and_then(|(records, _)| records.first().map(|(r, _)| r.accepted_ms))
                .or(segment_oldest),
        };
        let mut status = OutboxStatus {
            depth,
            oldest_age_ms: oldest.map(|t| crate::event::unix_ms().saturating_sub(t)).unwrap_or(0),
            bytes_on_disk: bytes,
            ..OutboxStatus::default()
        };
        self.shared.stats.load_into(&mut status);
        status
    }

    /// The producers' view: whether records are refused now.
    pub fn gate(&self) -> Gate {
        Gate(self.shared.clone())
    }

    /// The sender's view: reading, acknowledging, waiting for new records.
    pub fn reader(&self) -> Reader {
        Reader { shared: self.shared.clone() }
    }

    /// Stops accepting, writes and syncs what is queued, persists the state.
    pub fn close(&self) {
        // Dropping our sender is not enough (clones exist): an empty, unanswered
        // append asks the writer to finish what is queued before it and stop.
        let _ = self.send(Append { records: Vec::new(), reply: None, then: None });
        if let Some(handle) = crate::sync::lock(&self.writer).take() {
            let _ = handle.join();
        }
    }
}

/// What the upstream sender uses.
#[derive(Clone)]
pub struct Reader {
    shared: Arc<Shared>,
}

impl Reader {
    /// The id after the last durable record: what an earlier run may have sent.
    pub fn durable_end(&self) -> u64 {
        crate::sync::lock(&self.shared.index).durable_end()
    }

    /// The first unacknowledged position.
    pub fn acked(&self) -> Cursor {
        let ix = crate::sync::lock(&self.shared.index);
        ix.normalize(ix.state.acked)
    }

    /// Reads the next batch (one stream, bounded) from `from`; returns the records
    /// and the cursor after them. Expired records are skipped and counted.
    pub fn read_batch(
        &self,
        from: Cursor,
        max_records: usize,
        max_bytes: usize,
    ) -> std::io::Result<(Vec<Record>, Cursor)> {
        let (records, next) = self.read_each(from, max_records, max_bytes)?;
        let mut records: Vec<Record> = records.into_iter().map(|(r, _)| r).collect();
        let oldest_allowed = crate::event::unix_ms().saturating_sub(self.shared.cfg.ttl.as_millis() as u64);
        let before = records.len();
        records.retain(|r| r.accepted_ms >= oldest_allowed);
        self.shared.stats.expired.fetch_add((before - records.len()) as u64, Relaxed);
        Ok((records, next))
    }

    /// Reads the next batch like [`Reader::read_batch`], each record with the
    /// cursor after it, expired ones too.
    pub fn read_each(
        &self,
        from: Cursor,
        max_records: usize,
        max_bytes: usize,
    ) -> std::io::Result<(Vec<(Record, Cursor)>, Cursor)> {
        let (segments, from) = {
            let ix = crate::sync::lock(&self.shared.index);
            (ix.segments.iter().cloned().collect::<Vec<_>>(), ix.normalize(from))
        };
        files::read_batch(&self.shared.cfg.dir, &segments, from, max_records, max_bytes)
    }

    /// Everything before `to` is acknowledged upstream: persist that and delete
    /// the segments it empties.
    pub fn ack_to(&self, to: Cursor) -> std::io::Result<()> {
        let removed = {
            let mut ix = crate::sync::lock(&self.shared.index);
            ix.ack_to(to)
        };
        if !removed.is_empty() {
            if let Err(e) = self.persist_state() {
                // Kept until their deletion can be recorded: a later call retries.
                crate::sync::lock(&self.shared.index).restore(removed);
                return Err(e);
            }
            for s in removed {
                let _ = std::fs::remove_file(files::segment_path(&self.shared.cfg.dir, s.first_id));
            }
        }
        Ok(())
    }

    /// Writes the acknowledged position and sequence numbers to the state file.
    pub fn persist_state(&self) -> std::io::Result<()> {
        self.shared.write_state()
    }

    /// Completes when new records may have become durable.
    pub async fn durable(&self) {
        self.shared.durable.notified().await
    }

    pub fn stats(&self) -> &OutboxStats {
        &self.shared.stats
    }
}

/// Counts one more queued append unless `cap` are queued already; whether it did.
/// (`fetch_update` by hand: newer toolchains deprecate it for `try_update`,
/// which the minimum supported Rust, 1.85, does not have.)
fn take_place(queued: &AtomicUsize, cap: usize) -> bool {
    let mut now = queued.load(Relaxed);
    while now < cap {
        match queued.compare_exchange_weak(now, now + 1, Relaxed, Relaxed) {
            Ok(_) => return true,
            Err(seen) => now = seen,
        }
    }
    false
}

#[cfg(test)]
mod tests;
