//! The function spool: where the QoS 1 events of a function that cannot keep up
//! wait on disk instead of in the broker.
//!
//! With in-order acknowledgements, an event a slow function holds unacknowledged
//! holds the acknowledgement of every message after it, and the broker sends a
//! client only so many unacknowledged messages (Mosquitto:
//! `max_inflight_messages`, 20): a slow function flooded at QoS 1 would fill that
//! window and its neighbours' events would wait in the broker behind it. So the
//! scheduler writes such events to the function's spool, and acknowledges them
//! to the broker once they are durable; the function reads them back, in order,
//! as it gets through its queue, and an event leaves the spool only once its
//! invocation's output has been handed on (at least once, like the broker's own
//! redelivery). A spool is one outbox (`outbox/`: framed, checksummed, group
//! committed segment files) under `<gateway.modules_dir>/spool/NAME`, bounded by
//! `gateway.spool_max_bytes`; what it holds when the gateway stops is run after
//! the next start.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::event::{Event, EventKind};
use crate::mqtt::{AckOrder, Ticket};
use crate::outbox::{Cursor, Durability, Outbox, OutboxConfig, OutboxError, Overflow, Reader, Role, Then};
use crate::sources::{Job, Receipt};

/// The stream of a spool's records: [`Spooled`] events.
const STREAM: &str = "events.3";
/// The stream of records written before events carried their device's
/// normalised reading ([`SpooledV2`]): still read, never written.
const STREAM_V2: &str = "events.2";
/// The stream of records written before triggers were kept by value
/// ([`SpooledV1`]): still read, never written.
const STREAM_V1: &str = "events";
/// How often consumed positions are made durable while a spool drains (and at
/// every emptied segment): a crash runs at most this much again.
const PERSIST_EVERY: Duration = Duration::from_millis(200);

/// Where spools live and how big they may grow.
#[derive(Debug, Clone)]
pub struct SpoolConfig {
    /// `<gateway.modules_dir>/spool`: one directory per function.
    pub root: PathBuf,
    /// Bound on each function's spool (`gateway.spool_max_bytes`).
    pub max_bytes: u64,
    /// Largest event it takes (`broker.max_packet_bytes`, with room for the framing).
    pub max_event_bytes: usize,
    /// Free space spools leave on the disk (`gateway.min_free_bytes`).
    pub min_free_bytes: u64,
}

/// Logs the spools of functions that are not installed: their events wait
/// there, unrun, until a function of that name is installed again.
pub fn report_orphans(cfg: &SpoolConfig, installed: impl Fn(&str) -> bool) {
    let Ok(entries) = std::fs::read_dir(&cfg.root) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !entry.path().is_dir() || installed(&name) {
            continue;
        }
        let bytes: u64 = std::fs::read_dir(entry.path())
            .map(|files| files.flatten().filter_map(|f| f.metadata().ok()).map(|m| m.len()).sum())
            .unwrap_or(0);
        if bytes > 0 {
            tracing::warn!(
                function = name,
                dir = %entry.path().display(),
                bytes,
                "the spool of a function that is not installed: what it has not run waits there until a function \
                 of that name is installed again (delete the directory to drop it)"
            );
        }
    }
}

/// One function's spool.
pub struct Spool {
    outbox: Outbox,
    reader: Reader,
    /// Where the next read starts.
    next: Cursor,
    acks: Arc<Acks>,
}

/// A spooled event, as written to disk: the trigger by its text, so a replace
/// that reorders or drops triggers leaves it naming its own.
#[derive(Serialize, Deserialize)]
struct Spooled {
    trigger: String,
    kind: Kind,
    device: Option<String>,
    received_ms: u64,
    payload: Vec<u8>,
    /// The device's profile's reading of the payload (`Event::reading`).
    reading: Option<Vec<u8>>,
}

/// How spools were written before readings: [`Spooled`] without its last field.
#[derive(Serialize, Deserialize)]
struct SpooledV2 {
    trigger: String,
    kind: Kind,
    device: Option<String>,
    received_ms: u64,
    payload: Vec<u8>,
}

/// How spools were written before: the trigger as an index into the
/// function's triggers, read as the version in force has them.
#[derive(Serialize, Deserialize)]
struct SpooledV1 {
    trigger: u32,
    kind: Kind,
    device: Option<String>,
    received_ms: u64,
    payload: Vec<u8>,
}

/// [`EventKind`], as spooled: a new kind adds a variant at the end.
#[derive(Serialize, Deserialize)]
enum Kind {
    Message { topic: String },
    Timer,
}

impl Kind {
    fn of(kind: &EventKind) -> Kind {
        match kind {
            EventKind::Message { topic } => Kind::Message { topic: topic.clone() },
            // Never spooled (`EventKind::awaited`): kept as a run with no topic.
            EventKind::Timer | EventKind::Http(_) | EventKind::Availability { .. } | EventKind::Confirmation => {
                Kind::Timer
            }
        }
    }

    fn event_kind(self) -> EventKind {
        match self {
            Kind::Message { topic } => EventKind::Message { topic },
            Kind::Timer => EventKind::Timer,
        }
    }
}

impl Spool {
    /// Opens (or creates) `name`'s spool; returns it with the events it holds
    /// from before (a crash or a stop with events still spooled).
    pub fn open(cfg: &SpoolConfig, name: &str) -> std::io::Result<(Spool, u64)> {
        let dir = cfg.root.join(name);
        let (outbox, recovery) = Outbox::open(OutboxConfig {
            role: Role::Spool,
            dir: dir.clone(),
            durability: Durability::Batch,
            max_bytes: cfg.max_bytes,
            segment_bytes: (cfg.max_bytes / 8).clamp(64 << 10, 4 << 20),
            // Spooled events wait as long as it takes: only the size is bounded.
            ttl: Duration::from_secs(100 * 365 * 24 * 3600),
            overflow: Overflow::Refuse,
            queue: 4096,
            max_record_bytes: cfg.max_event_bytes,
            // The broker's acknowledgements wait for this: short.
            commit_window: Duration::from_millis(2),
            min_free_bytes: cfg.min_free_bytes,
        })?;
        for problem in &recovery.problems {
            tracing::warn!(function = name, dir = %dir.display(), "spool recovery: {problem}");
        }
        let reader = outbox.reader();
        let next = reader.acked();
        let depth = outbox.status().depth;
        let acks = Arc::new(Acks {
            reader: reader.clone(),
            state: Mutex::new(AckState {
                order: AckOrder::default(),
                closed: false,
                persisted: Instant::now(),
                ready: Vec::new(),
            }),
        });
        Ok((Spool { outbox, reader, next, acks }, depth))
    }

    /// Queues a job's event for the disk without waiting; `then` is called once
    /// it is durable (`true`) or refused by the writer (`false`).
    pub fn append(&self, job: &Job, then: Then) -> Result<(), OutboxError> {
        let event = &job.event;
        let spooled = Spooled {
            trigger: job.trigger.to_string(),
            kind: Kind::of(&event.kind),
            device: event.device.as_deref().map(str::to_owned),
            received_ms: event.received_ms,
            payload: event.payload.to_vec(),
            reading: event.reading.as_ref().map(|r| r.to_vec()),
        };
        let bytes = postcard::to_allocvec(&spooled).map_err(|e| OutboxError::Io(e.to_string()))?;
        self.outbox.try_append_then(vec![(STREAM.to_owned(), bytes)], Some(then))
    }

    /// What a read needs, taken out so that it can run without the scheduler's lock.
    /// `triggers`: the function's triggers as the version in force has them
    /// (their text), for records of the old format, which name them by index.
    /// A read from where the last one ended. `triggers` are the function's now:
    /// the first `check` events (spooled before this start) run only if they
    /// came by one of them.
    pub fn read_plan(&self, triggers: Vec<Arc<str>>, check: u64) -> ReadPlan {
        ReadPlan { reader: self.reader.clone(), acks: self.acks.clone(), from: self.next, triggers, check }
    }

    /// A read ended at `next`.
    pub fn advance(&mut self, next: Cursor) {
        self.next = next;
    }

    /// What closes it, usable without the scheduler's lock.
    pub fn closer(&self) -> Closer {
        Closer { outbox: self.outbox.clone(), acks: self.acks.clone() }
    }

    /// Events it holds that have not been consumed.
    pub fn depth(&self) -> u64 {
        self.outbox.status().depth
    }
}

/// Closes a spool.
pub struct Closer {
    outbox: Outbox,
    acks: Arc<Acks>,
}

impl Closer {
    /// Stops consuming (jobs read back and not run stay in the spool for the
    /// next start) and closes the files once what is queued for them is
    /// written (and answered).
    pub fn close(self) {
        self.acks.lock().closed = true;
        self.outbox.close();
    }

    /// Closes the spool of a function that was removed with nothing left in
    /// it, and deletes its directory.
    pub fn delete(self, cfg: &SpoolConfig, name: &str) {
        self.close();
        let dir = cfg.root.join(name);
        if let Err(e) = std::fs::remove_dir_all(&dir) {
            tracing::warn!(function = name, dir = %dir.display(), error = %e, "could not delete the spool of a removed function");
        }
    }
}

/// A read of a spool, made outside the scheduler's lock.
pub struct ReadPlan {
    reader: Reader,
    acks: Arc<Acks>,
    from: Cursor,
    triggers: Vec<Arc<str>>,
    check: u64,
}

/// Events read back: jobs for `function`, the cursor after them, how many
/// records could not be decoded and how many came by a trigger the function no
/// longer has (both skipped, counted by the caller).
pub struct Batch {
    pub jobs: Vec<Job>,
    pub next: Cursor,
    pub undecodable: u64,
    pub orphaned: u64,
}

impl ReadPlan {
    /// Reads up to `max` events. Each job has a receipt: the spool consumes an
    /// event once it is done with, and every earlier one too.
    pub fn read(self, function: &Arc<str>, max: usize) -> std::io::Result<Batch> {
        let (records, next) = self.reader.read_each(self.from, max, 1 << 20)?;
        let mut jobs = Vec::with_capacity(records.len());
        let (mut undecodable, mut orphaned, mut checked) = (0, 0, 0);
        for (record, after) in records {
            let check = checked < self.check;
            checked += 1;
            let ticket = self.acks.lock().order.arrive(after);
            let receipt: Receipt = Arc::new(Consumed { ticket, acks: self.acks.clone() });
            let decoded = match record.stream.as_str() {
                STREAM => postcard::from_bytes::<Spooled>(&record.payload).ok(),
                STREAM_V2 => postcard::from_bytes::<SpooledV2>(&record.payload).ok().map(|old| Spooled {
                    trigger: old.trigger,
                    kind: old.kind,
                    device: old.device,
                    received_ms: old.received_ms,
                    payload: old.payload,
                    reading: None,
                }),
                STREAM_V1 => postcard::from_bytes::<SpooledV1>(&record.payload).ok().map(|old| Spooled {
                    trigger: self.triggers.get(old.trigger as usize).map(|t| t.to_string()).unwrap_or_default(),
                    kind: old.kind,
                    device: old.device,
                    received_ms: old.received_ms,
                    payload: old.payload,
                    reading: None,
                }),
                _ => None,
            };
            let Some(spooled) = decoded else {
                undecodable += 1;
                continue;
            };
            if check && !self.triggers.iter().any(|t| **t == *spooled.trigger) {
                orphaned += 1;
                continue;
            }
            let event = Event {
                kind: spooled.kind.event_kind(),
                payload: spooled.payload.into(),
                device: spooled.device.map(Arc::from),
                reading: spooled.reading.map(Into::into),
                received_ms: spooled.received_ms,
            };
            jobs.push(Job {
                function: function.clone(),
                trigger: Arc::from(spooled.trigger),
                event: Arc::new(event),
                delivery: Some(receipt),
                spooled: true,
                answer: None,
            });
        }
        Ok(Batch { jobs, next, undecodable, orphaned })
    }
}

/// Consumes a spool's batches in the order they were read, as they are done.
struct Acks {
    reader: Reader,
    state: Mutex<AckState>,
}

struct AckState {
    order: AckOrder<Cursor>,
    /// Set when the gateway stops: what is not done stays in the spool.
    closed: bool,
    persisted: Instant,
    ready: Vec<Cursor>,
}

impl Acks {
    fn lock(&self) -> std::sync::MutexGuard<'_, AckState> {
        crate::sync::lock(&self.state)
    }

    fn finish(&self, ticket: Ticket) {
        let mut state = self.lock();
        if state.closed {
            return;
        }
        let AckState { order, ready, .. } = &mut *state;
        order.finish(ticket, ready);
        let Some(&to) = ready.last() else { return };
        ready.clear();
        let result = self.reader.ack_to(to).and_then(|()| {
            if state.persisted.elapsed() < PERSIST_EVERY {
                return Ok(());
            }
            state.persisted = Instant::now();
            self.reader.persist_state()
        });
        if let Err(e) = result {
            tracing::warn!(error = %e, "spool: could not record consumed events; they may run again after a restart");
        }
    }
}

/// The receipt of a batch read back from a spool.
struct Consumed {
    acks: Arc<Acks>,
    ticket: Ticket,
}

impl Drop for Consumed {
    fn drop(&mut self) {
        self.acks.finish(self.ticket);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn durable(tx: &std::sync::mpsc::Sender<bool>) -> Then {
        let tx = tx.clone();
        Box::new(move |ok| tx.send(ok).unwrap())
    }

    #[test]
    fn a_spool_of_the_old_format_reads_back_naming_each_events_trigger() {
        let dir = tempfile::tempdir().unwrap();
        let cfg =
            SpoolConfig { root: dir.path().into(), max_bytes: 1 << 20, max_event_bytes: 64 << 10, min_free_bytes: 0 };
        let (mut spool, _) = Spool::open(&cfg, "f").unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        // Written before triggers were kept by value: trigger 1 of the function.
        let old = SpooledV1 {
            trigger: 1,
            kind: Kind::Message { topic: "a/1".into() },
            device: Some("d".into()),
            received_ms: 5,
            payload: b"x".to_vec(),
        };
        let bytes = postcard::to_allocvec(&old).unwrap();
        spool.outbox.try_append_then(vec![(STREAM_V1.to_owned(), bytes)], Some(durable(&tx))).unwrap();
        let timer = Job {
            function: "f".into(),
            trigger: "{ every = \"10s\" }".into(),
            event: Arc::new(Event::timer(7)),
            delivery: None,
            spooled: false,
            answer: None,
        };
        spool.append(&timer, durable(&tx)).unwrap();
        assert!(rx.recv().unwrap() && rx.recv().unwrap());
        // The writer's index may publish the second record just after its callback.
        let mut jobs = Vec::new();
        let give_up = Instant::now() + Duration::from_secs(10);
        while jobs.len() < 2 && Instant::now() < give_up {
            let triggers = vec!["zero/#".into(), "a/+".into(), "{ every = \"10s\" }".into()];
            let batch = spool.read_plan(triggers, u64::MAX).read(&"f".into(), 10).unwrap();
            assert_eq!(batch.undecodable, 0);
            spool.next = batch.next;
            jobs.extend(batch.jobs);
            std::thread::yield_now();
        }
        let read: Vec<_> = jobs.iter().map(|j| (&*j.trigger, j.event.subject(), j.event.received_ms)).collect();
        assert_eq!(read, [("a/+", "a/1", 5), ("{ every = \"10s\" }", "", 7)]);
        assert_eq!(jobs[1].event.kind, EventKind::Timer);
        spool.closer().close();
    }

    #[test]
    fn events_spooled_before_readings_read_back_and_new_ones_keep_their_reading() {
        let dir = tempfile::tempdir().unwrap();
        let cfg =
            SpoolConfig { root: dir.path().into(), max_bytes: 1 << 20, max_event_bytes: 64 << 10, min_free_bytes: 0 };
        let (mut spool, _) = Spool::open(&cfg, "f").unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let old = SpooledV2 {
            trigger: "a/+".into(),
            kind: Kind::Message { topic: "a/1".into() },
            device: Some("d".into()),
            received_ms: 5,
            payload: b"x".to_vec(),
        };
        let bytes = postcard::to_allocvec(&old).unwrap();
        spool.outbox.try_append_then(vec![(STREAM_V2.to_owned(), bytes)], Some(durable(&tx))).unwrap();
        let mut event = Event::message("tele/plug/SENSOR".into(), &b"{}"[..], Some("plug".into()));
        event.reading = Some(bytes::Bytes::from_static(br#"{"power":41}"#));
        let job = Job {
            function: "f".into(),
            trigger: "tele/+/SENSOR".into(),
            event: Arc::new(event),
            delivery: None,
            spooled: false,
            answer: None,
        };
        spool.append(&job, durable(&tx)).unwrap();
        assert!(rx.recv().unwrap() && rx.recv().unwrap());
        let mut jobs = Vec::new();
        let give_up = Instant::now() + Duration::from_secs(10);
        while jobs.len() < 2 && Instant::now() < give_up {
            let triggers = vec!["a/+".into(), "tele/+/SENSOR".into()];
            let batch = spool.read_plan(triggers, u64::MAX).read(&"f".into(), 10).unwrap();
            assert_eq!(batch.undecodable, 0);
            spool.next = batch.next;
            jobs.extend(batch.jobs);
            std::thread::yield_now();
        }
        assert_eq!((jobs[0].event.subject(), jobs[0].event.reading.as_deref()), ("a/1", None));
        assert_eq!(jobs[1].event.reading.as_deref(), Some(&br#"{"power":41}"#[..]));
        spool.closer().close();
    }
}
