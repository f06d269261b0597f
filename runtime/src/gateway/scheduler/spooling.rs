//! The scheduler's side of the spools: spilling a function's QoS 1 events to
//! disk, opening spools and reading events back, on the spool thread.

use super::*;

impl Scheduler {
    /// Events a function's spool holds from before this start: read back first.
    pub(super) fn recover_spool(&self, name: &str) -> Option<SlotSpool> {
        let cfg = self.limits.spool.as_ref()?;
        if !cfg.root.join(name).is_dir() {
            return None;
        }
        match Spool::open(cfg, name) {
            Ok((spool, 0)) => {
                spool.closer().close();
                None
            }
            Ok((spool, held)) => {
                tracing::info!(
                    function = name,
                    events = held,
                    "spooled events from before the restart; running them first"
                );
                Some(SlotSpool::new(spool, held))
            }
            Err(e) => {
                tracing::error!(function = name, dir = %cfg.root.join(name).display(), error = %e, "cannot open the function's spool; the events it holds wait there");
                None
            }
        }
    }

    /// Writes a job's event to its function's spool, opening the spool first
    /// if need be. The job comes back when no spool can be opened.
    pub(super) fn spill(&self, state: &mut State, job: Job) -> Result<Offer, Job> {
        let slot = state.slots.get_mut(&job.function).expect("offered to an existing function");
        if slot.spool.is_none() {
            // Opened by the spool thread, never here: this runs on intake,
            // under the lock. Until it is open the job takes the queue.
            if !slot.spool_failed && !slot.spool_opening {
                if let Some(refill) = &self.refill {
                    slot.spool_opening = true;
                    let work = SpoolWork::Open(job.function.clone());
                    let _ = crate::sync::lock(refill).send(work);
                }
            }
            return Err(job);
        }
        if slot.spool.as_ref().is_some_and(|sp| sp.outstanding() == 0) {
            // A spell begins: the events already queued go first, so that none
            // of them holds the acknowledgements either (lanes with a version
            // change queued keep theirs, in order with it). Events read back
            // from the spool hold none and stay: they are at the front of their
            // lane (nothing else is queued while a spell lasts), and writing
            // them again would only wear the disk.
            let mut queued = Vec::new();
            for lane in &mut slot.lanes {
                if lane.items.iter().all(|item| matches!(item, Item::Job(_))) {
                    let first_new = lane
                        .items
                        .iter()
                        .position(|item| matches!(item, Item::Job(job) if !job.spooled))
                        .unwrap_or(lane.items.len());
                    queued.extend(lane.items.drain(first_new..).filter_map(|item| match item {
                        Item::Job(job) => Some(job),
                        _ => None,
                    }));
                }
            }
            slot.queue.jobs -= queued.len();
            for earlier in queued {
                self.append_to_spool(slot, earlier);
            }
        }
        Ok(self.append_to_spool(slot, job))
    }

    pub(super) fn append_to_spool(&self, slot: &mut Slot, mut job: Job) -> Offer {
        let sp = slot.spool.as_mut().expect("spilling into an open spool");
        let (me, name, delivery) = (self.me.clone(), job.function.clone(), job.delivery.take());
        let then = Box::new(move |durable| {
            // The broker's acknowledgement, once the event is on disk (or
            // refused, and counted next), and before it can be read back.
            drop(delivery);
            if let Some(scheduler) = me.upgrade() {
                scheduler.spool_written(&name, durable);
            }
        });
        match sp.spool.append(&job, then) {
            Ok(()) => {
                sp.appended += 1;
                Stats::add(&slot.counters.spooled, 1);
                Stats::add(&self.stats.events_spooled, 1);
                Offer::Queued
            }
            Err(e) => {
                Self::spool_refused(&self.stats, &slot.counters, &job.function, &e.to_string());
                Offer::Dropped
            }
        }
    }

    pub(super) fn spool_refused(stats: &Stats, counters: &FunctionCounters, function: &str, why: &str) {
        Stats::add(&stats.spool_dropped, 1);
        let before = counters.dropped_spool.fetch_add(1, Relaxed);
        if before % 1000 == 0 {
            tracing::warn!(
                function,
                dropped = before + 1,
                error = why,
                "spool refused an event (gateway.spool_max_bytes, or the disk); dropped"
            );
        }
    }

    /// The writer answered a spooled event: durable, or refused (dropped, counted).
    pub(super) fn spool_written(&self, name: &Arc<str>, durable: bool) {
        let mut state = self.lock();
        let Some(slot) = state.slots.get_mut(name) else { return };
        let Some(sp) = slot.spool.as_mut() else { return };
        if durable {
            sp.durable += 1;
        } else {
            sp.settled += 1;
            Self::spool_refused(&self.stats, &slot.counters, name, "refused by the writer");
            slot.queue_due_changes();
            for lane in 0..slot.lanes.len() {
                self.make_ready(&mut state, name, lane);
            }
        }
        self.ask_refill(&mut state, name);
    }

    /// Asks the spool thread to read events back if the function has some on
    /// disk and room for them in its queue.
    pub(super) fn ask_refill(&self, state: &mut State, name: &Arc<str>) {
        let closed = state.closed;
        let Some(slot) = state.slots.get_mut(name) else { return };
        let jobs = slot.queue.jobs;
        let Some(sp) = slot.spool.as_mut() else { return };
        if closed || sp.reading || sp.durable == 0 || jobs >= REFILL_TO / 2 {
            return;
        }
        if let Some(refill) = &self.refill {
            sp.reading = true;
            let _ = crate::sync::lock(refill).send(SpoolWork::Refill(name.clone()));
        }
    }

    /// Opens a function's spool for its first spill (run by the spool thread,
    /// the lock taken only to hand the spool over).
    pub(super) fn open_spool(&self, name: &Arc<str>) {
        let cfg = self.limits.spool.as_ref().expect("spool work needs a spool");
        let opened = Spool::open(cfg, name);
        let mut state = self.lock();
        let closed = state.closed;
        let Some(slot) = state.slots.get_mut(name).filter(|s| s.spool.is_none() && !closed) else {
            drop(state);
            if let Ok((spool, _)) = opened {
                spool.closer().close();
            }
            return;
        };
        slot.spool_opening = false;
        match opened {
            Ok((spool, held)) => {
                slot.spool = Some(SlotSpool::new(spool, held));
                if held > 0 {
                    self.ask_refill(&mut state, name);
                }
            }
            Err(e) => {
                slot.spool_failed = true;
                tracing::error!(function = %name, dir = %cfg.root.display(), error = %e, "cannot open the function's spool; its QoS 1 events wait in the broker");
            }
        }
    }

    /// Reads a function's spooled events back into its queue, as far as it has
    /// room (run by the spool thread, never under the lock while reading).
    pub(super) fn refill_from_spool(&self, name: &Arc<str>) {
        loop {
            let (plan, max) = {
                let mut state = self.lock();
                let closed = state.closed;
                let Some(slot) = state.slots.get_mut(name) else { return };
                let jobs = slot.queue.jobs;
                let Some(sp) = slot.spool.as_mut() else { return };
                // Never past a change waiting for the events before it.
                let before_change = sp.pending.front().map_or(u64::MAX, |(at, _)| at - sp.settled);
                let max = REFILL_TO.saturating_sub(jobs).min(sp.durable.min(before_change) as usize);
                if closed || max == 0 {
                    sp.reading = false;
                    return;
                }
                let triggers = slot.template.spec().triggers.iter().map(|t| Arc::from(t.text())).collect();
                (sp.spool.read_plan(triggers, sp.from_before), max)
            };
            let read = plan.read(name, max);
            let mut state = self.lock();
            let Some(slot) = state.slots.get_mut(name) else { return };
            let Some(sp) = slot.spool.as_mut() else { return };
            let batch = match read {
                Ok(batch) if !batch.jobs.is_empty() || batch.undecodable + batch.orphaned > 0 => batch,
                other => {
                    sp.reading = false;
                    let error = other.err().map(|e| e.to_string()).unwrap_or_else(|| "nothing to read".into());
                    tracing::error!(function = %name, error, "cannot read the function's spool; its spooled events wait there");
                    return;
                }
            };
            sp.spool.advance(batch.next);
            let read = batch.jobs.len() as u64 + batch.undecodable + batch.orphaned;
            sp.durable -= read;
            sp.settled += read;
            sp.from_before = sp.from_before.saturating_sub(read);
            if batch.orphaned > 0 {
                Stats::add(&self.stats.spool_orphaned, batch.orphaned);
                let before = slot.counters.dropped_orphaned.fetch_add(batch.orphaned, Relaxed);
                if before == 0 {
                    tracing::warn!(
                        function = %name,
                        dropped = batch.orphaned,
                        "events spooled before the restart came by a trigger this version no longer has; dropped, \
                         not run (counted in spool_orphaned)"
                    );
                }
            }
            for _ in 0..batch.undecodable {
                Self::spool_refused(&self.stats, &slot.counters, name, "a spooled event does not decode");
            }
            if slot.queue.quarantined {
                let dropped = batch.jobs.len() as u64;
                slot.counters.dropped_quarantine.fetch_add(dropped, Relaxed);
                Stats::add(&self.stats.quarantine_dropped, dropped);
            } else {
                for job in batch.jobs {
                    slot.enqueue(job);
                }
            }
            slot.queue_due_changes();
            for lane in 0..slot.lanes.len() {
                self.make_ready(&mut state, name, lane);
            }
        }
    }

    /// At shutdown, once the workers are done: stops reading spools back and
    /// closes them; what they hold is counted as kept (run after the next start).
    pub fn close_spools(&self) {
        let closers: Vec<_> = {
            let mut state = self.lock();
            state.closed = true;
            state.slots.values().filter_map(|slot| slot.spool.as_ref().map(|sp| sp.spool.closer())).collect()
        };
        // Unlocked: the writes still queued are answered (and counted) first.
        for closer in closers {
            closer.close();
        }
        let mut state = self.lock();
        for slot in state.slots.values_mut() {
            if let Some(sp) = slot.spool.take() {
                let kept = sp.spool.depth();
                Stats::add(&slot.counters.spool_kept, kept);
                Stats::add(&self.stats.spool_kept, kept);
            }
        }
    }
}
