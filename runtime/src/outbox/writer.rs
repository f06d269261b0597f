//! The writer thread: the one owner of the active segment. It takes whatever
//! appends are queued, frames them, writes them in one go and syncs once (group
//! commit), then answers every producer in the group.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::files;
use super::frame;
use super::record::RecordOut;
use super::{Append, Durability, OutboxError, Overflow, Refusing, Shared};
use crate::event::unix_ms;

/// How often an idle writer wakes to sync (interval mode) and expire old segments.
const TICK: Duration = Duration::from_millis(100);
/// How often, at most, the writer itself records the acknowledged position
/// (`Writer::persist_acked`).
pub const PERSIST_ACKED_EVERY: Duration = Duration::from_secs(1);
/// Most appends taken into one group.
const MAX_GROUP: usize = 4096;
/// The active segment is allocated this far ahead of the data. An fsync of data
/// written inside the file need not also commit a new file size, which makes each
/// group commit markedly cheaper; the size changes once per step. Allocation is
/// `posix_fallocate` (reads back as zeros, writes nothing to the device), so an SD
/// card is not written twice; zeros are written only where the filesystem cannot
/// allocate, never where it has no room (that refuses the records instead).
const PREALLOCATE: u64 = 1 << 20;
/// An active segment whose records are all acknowledged is replaced by a new,
/// empty one (and deleted) once it holds this much, or at once while records
/// are refused: the space upstream drained comes back without waiting for the
/// segment to fill (`segment_bytes` may be larger than the disk).
const DRAINED_ROLL: u64 = PREALLOCATE;

pub fn spawn(shared: Arc<Shared>, active: File, rx: Receiver<Append>) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new().name("outbox-writer".into()).spawn(move || Writer::new(shared, active).run(rx))
}

struct Writer {
    shared: Arc<Shared>,
    active: File,
    /// Written but not yet synced (interval mode): bytes, records, newest time.
    unsynced: Option<Unsynced>,
    last_sync: Instant,
    /// Where the next frame goes in the active segment.
    write_pos: u64,
    /// The active segment is zero-filled (and its size durable) up to here.
    zeroed_until: u64,
    /// Records refused by failed writes since the last one that succeeded: a
    /// full disk is logged once when it starts and once when it ends, not per group.
    failing: u64,
    /// Appends refused for a record too large to send.
    too_large: u64,
    /// The outbox's size when it last refused a group for being full: the
    /// gate opens again once acknowledgements have freed a segment.
    full_at_bytes: u64,
    /// When a write last failed.
    failed_at: Instant,
    /// The `refused` counter when the current refusal began.
    refused_before: u64,
    /// When the refusal state was last checked against its cause.
    rechecked: Instant,
}

#[derive(Clone, Copy)]
struct Unsynced {
    bytes: u64,
    records: u64,
    oldest_ms: u64,
    newest_ms: u64,
}

impl Writer {
    fn new(shared: Arc<Shared>, active: File) -> Self {
        Writer {
            shared,
            active,
            unsynced: None,
            last_sync: Instant::now(),
            write_pos: 0,
            zeroed_until: 0,
            failing: 0,
            too_large: 0,
            full_at_bytes: 0,
            failed_at: Instant::now(),
            refused_before: 0,
            rechecked: Instant::now(),
        }
    }

    /// Says, through the gate, why records are refused now (or that they are
    /// not), with one log line when a refusal for a full outbox or disk starts
    /// and one when it ends (failed writes log their own, with the error).
    fn set_refusing(&mut self, why: Refusing) {
        let was = Refusing::from_byte(self.shared.refusing.swap(why as u8, Relaxed));
        if was == why {
            return;
        }
        let refused = self.shared.stats.refused.load(Relaxed);
        let cfg = &self.shared.cfg;
        match why {
            Refusing::Full => {
                tracing::warn!(max_bytes = cfg.max_bytes, dir = %cfg.dir.display(), "{}", cfg.role.full())
            }
            Refusing::DiskReserve => tracing::error!(
                min_free_bytes = cfg.min_free_bytes,
                free_bytes = files::free_bytes(&cfg.dir).unwrap_or(0),
                dir = %cfg.dir.display(),
                "{}",
                cfg.role.short_of_reserve()
            ),
            Refusing::No if was != Refusing::WriteFailed => tracing::info!(
                refused = refused - self.refused_before,
                dir = %cfg.dir.display(),
                "{}: {}; accepting again",
                cfg.role.name(),
                if was == Refusing::Full { "space freed" } else { "disk space returned" }
            ),
            _ => {}
        }
        if was == Refusing::No {
            self.refused_before = refused;
        }
    }

    /// Opens the gate once the cause of a refusal is gone, checked at most once
    /// a tick: acknowledgements freed a segment of a full outbox, the disk has
    /// the reserve free again (and a preallocation step), or a second has passed
    /// since a write failed (the next records try again). With a reserve, also
    /// closes it when the disk falls short of it.
    fn recheck_refusing(&mut self) {
        let why = Refusing::from_byte(self.shared.refusing.load(Relaxed));
        let cfg = &self.shared.cfg;
        if self.rechecked.elapsed() < TICK || (why == Refusing::No && cfg.min_free_bytes == 0) {
            return;
        }
        self.rechecked = Instant::now();
        if why == Refusing::No {
            // Something else may fill the disk: close the gate before a
            // function's records are refused at hand-off (and its commands withheld).
            if files::free_bytes(&cfg.dir).is_ok_and(|free| free < cfg.min_free_bytes) {
                self.set_refusing(Refusing::DiskReserve);
            }
            return;
        }
        let gone = match why {
            Refusing::Full => crate::sync::lock(&self.shared.index).bytes() < self.full_at_bytes,
            Refusing::DiskReserve => {
                files::free_bytes(&cfg.dir).is_ok_and(|free| free >= cfg.min_free_bytes + PREALLOCATE)
            }
            Refusing::WriteFailed => self.failed_at.elapsed() >= Duration::from_secs(1),
            Refusing::No => false,
        };
        if gone {
            self.set_refusing(Refusing::No);
        }
    }

    /// An append received leaves the producers' queue bound.
    fn take<E>(&self, received: Result<Append, E>) -> Result<Append, E> {
        if received.is_ok() {
            self.shared.queued.fetch_sub(1, Relaxed);
        }
        received
    }

    fn run(mut self, rx: Receiver<Append>) {
        loop {
            let first = match self.take(rx.recv_timeout(TICK)) {
                Ok(a) if a.records.is_empty() && a.reply.is_none() => break,
                Ok(a) => a,
                Err(RecvTimeoutError::Timeout) => {
                    self.idle();
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => break,
            };
            // The window gathers records that arrive on their own (forwarded
            // messages). A producer that waits for its answer is never kept
            // waiting for others: once the group holds such an append, only what
            // is already queued joins it. (Waiting producers cannot add anything
            // while they wait, so a window would only cost them its length.)
            let mut someone_waits = first.reply.is_some();
            let mut group = vec![first];
            let mut stop = false;
            let window_ends = Instant::now() + self.shared.cfg.commit_window;
            while group.len() < MAX_GROUP {
                let left = window_ends.saturating_duration_since(Instant::now());
                let next = if left.is_zero() || someone_waits {
                    self.take(rx.try_recv().map_err(|_| ()))
                } else {
                    self.take(rx.recv_timeout(left).map_err(|_| ()))
                };
                match next {
                    Ok(a) if a.records.is_empty() && a.reply.is_none() => {
                        stop = true;
                        break;
                    }
                    Ok(a) => {
                        someone_waits |= a.reply.is_some();
                        group.push(a);
                    }
                    Err(_) => break,
                }
            }
            self.write_group(group);
            // Under sustained load the idle branch never runs: keep the interval here too.
            self.sync_if_due();
            if let Err(e) = self.roll_if_drained() {
                tracing::debug!(error = %e, "outbox: could not replace the drained segment yet");
            }
            self.recheck_refusing();
            if stop {
                break;
            }
        }
        // Closing: make everything written durable, give back the preallocated
        // space, and remember where we are.
        if let Err(e) = self.sync().and_then(|_| self.trim()) {
            tracing::error!(error = %e, "outbox: final sync failed");
        }
        if let Err(e) = self.shared.write_state() {
            tracing::error!(error = %e, "outbox: could not persist state on close");
        }
    }

    fn idle(&mut self) {
        self.persist_acked();
        self.sync_if_due();
        self.expire();
        if let Err(e) = self.roll_if_drained() {
            tracing::debug!(error = %e, "outbox: could not replace the drained segment yet");
        }
        self.recheck_refusing();
    }

    /// Replaces the active segment by a new one, and deletes it, once upstream
    /// has acknowledged everything in it (see [`DRAINED_ROLL`]). The state is
    /// persisted first (its sequence numbers must outlive the records that
    /// carried them); where it cannot be, the segment stays and this tries again.
    fn roll_if_drained(&mut self) -> std::io::Result<()> {
        if self.unsynced.is_some() {
            return Ok(());
        }
        let refusing = self.shared.refusing.load(Relaxed) != Refusing::No as u8;
        let (drained, kept) = {
            let ix = crate::sync::lock(&self.shared.index);
            // Acknowledged segments a failed deletion put back (see `delete`).
            let kept = ix.segments.len() > 1 && ix.segments[0].end_id <= ix.state.acked.id;
            (ix.depth() == 0, kept)
        };
        let roll = drained && self.write_pos > 0 && (self.write_pos >= DRAINED_ROLL || refusing);
        if roll {
            self.trim()?;
            self.start_segment()?;
        }
        if roll || kept {
            let removed = {
                let mut ix = crate::sync::lock(&self.shared.index);
                let acked = ix.state.acked;
                ix.ack_to(acked)
            };
            self.delete(removed);
        }
        Ok(())
    }

    /// In interval mode, syncs once `every` has passed since the last sync.
    fn sync_if_due(&mut self) {
        if let Durability::Interval { every } = self.shared.cfg.durability {
            if self.unsynced.is_some() && self.last_sync.elapsed() >= every {
                if let Err(e) = self.sync() {
                    tracing::error!(error = %e, "outbox: sync failed");
                }
            }
        }
    }

    /// Writes an acknowledged position the state file lacks, at most once a
    /// [`PERSIST_ACKED_EVERY`]: those who acknowledge (the upstream sender, a
    /// spool's consumer) write it themselves at most every 200 ms while
    /// acknowledgements come, so the last ones of a burst would wait for the
    /// next burst, and a crash meanwhile would send or run the whole burst again.
    fn persist_acked(&self) {
        let (on_disk, written) = *crate::sync::lock(&self.shared.persisted);
        let acked = crate::sync::lock(&self.shared.index).state.acked.id;
        if acked != on_disk && written.elapsed() >= PERSIST_ACKED_EVERY {
            if let Err(e) = self.shared.write_state() {
                tracing::debug!(error = %e, "outbox: could not persist the acknowledged position yet");
            }
        }
    }

    /// Drops whole old segments past the TTL.
    fn expire(&mut self) {
        let oldest_allowed = unix_ms().saturating_sub(self.shared.cfg.ttl.as_millis() as u64);
        let mut dropped = Vec::new();
        {
            let mut ix = crate::sync::lock(&self.shared.index);
            while ix.segments.len() > 1 && ix.segments[0].newest_ms < oldest_allowed {
                match ix.drop_oldest() {
                    Some((s, unacked)) => {
                        self.shared.stats.expired.fetch_add(unacked, Relaxed);
                        dropped.push(s);
                    }
                    None => break,
                }
            }
        }
        self.delete(dropped);
    }

    /// Deletes segments the index no longer holds, once the state that
    /// forgets them is persisted. Where it cannot be (a full disk), they go
    /// back to the index, to be deleted by a later call.
    fn delete(&self, segments: Vec<super::index::Segment>) {
        if segments.is_empty() {
            return;
        }
        if let Err(e) = self.shared.write_state() {
            tracing::debug!(error = %e, "outbox: could not persist state; segments kept for now");
            crate::sync::lock(&self.shared.index).restore(segments);
            return;
        }
        for s in segments {
            let _ = std::fs::remove_file(files::segment_path(&self.shared.cfg.dir, s.first_id));
        }
    }

    fn write_group(&mut self, group: Vec<Append>) {
        let shared = self.shared.clone();
        let cfg = &shared.cfg;
        let now = unix_ms();
        let mut buf = Vec::new();
        // One encoding buffer for the group's records.
        let mut scratch = Vec::new();
        // Per append: its reply, its answer, and what to call once it is known.
        let mut answers = Vec::with_capacity(group.len());
        let mut dropped = Vec::new();
        let mut written = 0u64;
        // Where ids and sequence numbers stood before this group: a write that
        // fails gives them back, so the file never holds an id gap (recovery
        // took one for the end of the data and discarded what followed) and a
        // refused record never uses up a sequence number.
        let mut rollback: Option<(u64, Vec<(String, u64)>)> = None;
        // Free space, asked once a group (a statvfs: microseconds).
        let free = match cfg.min_free_bytes {
            0 => None,
            _ => files::free_bytes(&cfg.dir).ok(),
        };
        {
            let mut ix = crate::sync::lock(&shared.index);
            for append in group {
                if let Some((stream, payload)) = append.records.iter().find(|(_, p)| p.len() > cfg.max_record_bytes) {
                    // Logged (the first and every 1000th): a refusal nobody waits for is otherwise silent.
                    if self.too_large % 1000 == 0 {
                        tracing::warn!(
                            stream = &**stream,
                            bytes = payload.len(),
                            max = cfg.max_record_bytes,
                            refused = self.too_large + 1,
                            dir = %cfg.dir.display(),
                            "outbox: record larger than it takes (upstream: half of upstream.max_packet_bytes); refused"
                        );
                    }
                    self.too_large += 1;
                    self.shared.stats.refused.fetch_add(append.records.len() as u64, Relaxed);
                    answers.push((append.reply, Err(OutboxError::TooLarge), append.then));
                    continue;
                }
                let incoming: u64 = append.records.iter().map(|(s, p)| (s.len() + p.len() + 40) as u64).sum();
                let mut fits = ix.bytes() + buf.len() as u64 + incoming <= cfg.max_bytes;
                while !fits && cfg.overflow == Overflow::DropOldest {
                    match ix.drop_oldest() {
                        Some((s, unacked)) => {
                            self.shared.stats.dropped.fetch_add(unacked, Relaxed);
                            dropped.push(s);
                            fits = ix.bytes() + buf.len() as u64 + incoming <= cfg.max_bytes;
                        }
                        None => break,
                    }
                }
                if !fits {
                    self.full_at_bytes = ix.bytes();
                    self.set_refusing(Refusing::Full);
                    self.shared.stats.refused.fetch_add(append.records.len() as u64, Relaxed);
                    answers.push((append.reply, Err(OutboxError::Full), append.then));
                    continue;
                }
                // The preallocated segment may already hold the bytes, but the
                // next one will not: count them against the reserve anyway.
                if free.is_some_and(|free| free < buf.len() as u64 + incoming + cfg.min_free_bytes) {
                    self.set_refusing(Refusing::DiskReserve);
                    self.shared.stats.refused.fetch_add(append.records.len() as u64, Relaxed);
                    answers.push((append.reply, Err(OutboxError::DiskReserve), append.then));
                    continue;
                }
                for (stream, payload) in &append.records {
                    let (first_id, seqs) = rollback.get_or_insert_with(|| (ix.next_id, Vec::new()));
                    debug_assert!(*first_id <= ix.next_id);
                    if !seqs.iter().any(|(s, _)| **s == **stream) {
                        seqs.push((stream.to_string(), ix.next_seq(stream)));
                    }
                    let (id, seq) = ix.assign(stream);
                    scratch.clear();
                    RecordOut { id, stream, seq, accepted_ms: now, payload }.encode_into(&mut scratch);
                    frame::encode(&scratch, &mut buf);
                    written += 1;
                }
                answers.push((append.reply, Ok(()), append.then));
            }
        }
        self.delete(dropped);
        let before = self.write_pos;
        let result = self.write(&buf, written, now);
        if let (Err(_), true, Some((first_id, seqs))) = (&result, self.write_pos == before, rollback) {
            let mut ix = crate::sync::lock(&self.shared.index);
            ix.next_id = first_id;
            for (stream, seq) in seqs {
                ix.state.next_seq.insert(stream, seq);
            }
        }
        // Counters first, so that a producer that sees its answer also sees them.
        match &result {
            Ok(()) => {
                self.shared.stats.accepted.fetch_add(written, Relaxed);
                if written > 0 {
                    self.set_refusing(Refusing::No);
                }
                if written > 0 && self.failing > 0 {
                    tracing::info!(refused = self.failing, "outbox: writes succeed again; accepting records");
                    self.failing = 0;
                }
            }
            Err(e) => {
                if self.failing == 0 {
                    tracing::error!(error = %e, "outbox: write failed; refusing records until a write succeeds (counted in refused)");
                }
                self.failing += written;
                self.failed_at = Instant::now();
                self.set_refusing(Refusing::WriteFailed);
                self.shared.stats.refused.fetch_add(written, Relaxed);
            }
        }
        for (reply, answer, then) in answers {
            let answer = match (&result, answer) {
                (Err(e), Ok(())) => Err(OutboxError::Io(e.to_string())),
                (_, a) => a,
            };
            let durable = answer.is_ok();
            if let Some(reply) = reply {
                let _ = reply.send(answer);
            }
            if let Some(then) = then {
                then(durable);
            }
        }
        if let Err(e) = self.maybe_roll() {
            tracing::error!(error = %e, "outbox: could not start a new segment");
        }
    }

    fn write(&mut self, buf: &[u8], records: u64, now: u64) -> std::io::Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        let end = self.write_pos + buf.len() as u64;
        if end > self.zeroed_until {
            let until = end.div_ceil(PREALLOCATE) * PREALLOCATE;
            preallocate(&self.active, self.zeroed_until, until)?;
            self.active.sync_data()?;
            self.zeroed_until = until;
        }
        self.active.write_all_at(buf, self.write_pos)?;
        self.write_pos = end;
        let pending = self.unsynced.get_or_insert(Unsynced { bytes: 0, records: 0, oldest_ms: now, newest_ms: now });
        pending.bytes += buf.len() as u64;
        pending.records += records;
        pending.newest_ms = now;
        if self.shared.cfg.durability == Durability::Batch {
            self.sync()?;
        }
        Ok(())
    }

    /// Syncs the active segment and publishes what became durable to readers.
    fn sync(&mut self) -> std::io::Result<()> {
        let Some(pending) = self.unsynced.take() else { return Ok(()) };
        if let Err(e) = self.active.sync_data() {
            self.unsynced = Some(pending);
            return Err(e);
        }
        self.last_sync = Instant::now();
        self.shared.stats.fsyncs.fetch_add(1, Relaxed);
        {
            let mut ix = crate::sync::lock(&self.shared.index);
            if let Some(active) = ix.segments.back_mut() {
                if active.end_id == active.first_id {
                    active.oldest_ms = pending.oldest_ms;
                }
                active.durable_bytes += pending.bytes;
                active.end_id += pending.records;
                active.newest_ms = pending.newest_ms;
            }
        }
        self.shared.durable.notify_one();
        Ok(())
    }

    /// Cuts the active segment's preallocated space off.
    fn trim(&mut self) -> std::io::Result<()> {
        if self.zeroed_until > self.write_pos {
            self.active.set_len(self.write_pos)?;
            self.active.sync_all()?;
            self.zeroed_until = self.write_pos;
        }
        Ok(())
    }

    /// Starts a new segment once the active one is full.
    fn maybe_roll(&mut self) -> std::io::Result<()> {
        let full = {
            let ix = crate::sync::lock(&self.shared.index);
            let active = ix.segments.back().map(|s| s.durable_bytes).unwrap_or(0);
            active + self.unsynced.map(|u| u.bytes).unwrap_or(0) >= self.shared.cfg.segment_bytes
        };
        if !full {
            return Ok(());
        }
        self.sync()?;
        self.trim()?;
        self.start_segment()
    }

    /// Makes a new, empty segment the active one.
    fn start_segment(&mut self) -> std::io::Result<()> {
        let first_id = crate::sync::lock(&self.shared.index).next_id;
        self.active = files::create_segment(&self.shared.cfg.dir, first_id)?;
        self.write_pos = 0;
        self.zeroed_until = 0;
        let mut ix = crate::sync::lock(&self.shared.index);
        ix.segments.push_back(super::index::Segment {
            first_id,
            durable_bytes: 0,
            end_id: first_id,
            newest_ms: 0,
            oldest_ms: 0,
        });
        Ok(())
    }
}

/// Makes `[from, to)` of `file` allocated and reading as zeros.
fn preallocate(file: &File, from: u64, to: u64) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: posix_fallocate only reads its integer arguments; the descriptor is
    // owned by `file`, which outlives the call.
    let err = unsafe { libc::posix_fallocate(file.as_raw_fd(), from as libc::off_t, (to - from) as libc::off_t) };
    match err {
        0 => Ok(()),
        // No room: the records are refused. Zeros would take what room there
        // is (what others free, too) for nothing.
        libc::ENOSPC | libc::EDQUOT | libc::EFBIG => Err(std::io::Error::from_raw_os_error(err)),
        // Not every filesystem can allocate ahead; zeros give the same layout.
        _ => file.write_all_at(&vec![0u8; (to - from) as usize], from),
    }
}
