//! The workers' side of the scheduler: ready functions taking turns, worker
//! wake-ups, and giving a function back after its turn.

use super::*;

impl Scheduler {
    pub(super) fn make_ready(&self, state: &mut State, name: &Arc<str>, lane: usize) {
        let Some(l) = state.slots.get_mut(name).and_then(|slot| slot.lanes.get_mut(lane)) else { return };
        if !l.running && !l.in_ready && !l.items.is_empty() {
            l.in_ready = true;
            state.ready.push_back((name.clone(), lane));
            if state.idle > 0 {
                if state.holding_wakes {
                    state.wakes_owed += 1;
                } else {
                    self.work.notify_one();
                }
            }
        }
    }

    /// Intake is about to hand over several jobs in a row (one socket read's
    /// worth): idle workers are woken once, at [`Scheduler::release_wakes`],
    /// rather than per job. A woken worker that finds the queue empty again
    /// after each job and goes back to sleep costs two system calls a message
    /// and makes its turns (and their output) one job long.
    pub fn hold_wakes(&self) {
        self.lock().holding_wakes = true;
    }

    /// Wakes the idle workers owed since [`Scheduler::hold_wakes`]. Must follow
    /// it before intake waits for anything.
    pub fn release_wakes(&self) {
        let mut state = self.lock();
        state.holding_wakes = false;
        let owed = std::mem::take(&mut state.wakes_owed).min(state.idle);
        drop(state);
        for _ in 0..owed {
            self.work.notify_one();
        }
    }

    /// Blocks until a function is ready and hands it to the calling worker;
    /// `None` once closed with nothing ready.
    pub fn next_turn(&self) -> Option<Turn> {
        let mut state = self.lock();
        loop {
            // The first ready function, passing over heavy ones while as many
            // workers as may run them are busy with heavy ones.
            let heavy_full = state.heavy_running >= self.heavy_limit;
            let pick = state
                .ready
                .iter()
                .position(|(name, _)| !heavy_full || !state.slots.get(name).is_some_and(|slot| slot.queue.heavy()));
            if let Some((name, index)) = pick.and_then(|i| state.ready.remove(i)) {
                let Some(slot) = state.slots.get_mut(&name) else { continue };
                let heavy = slot.queue.heavy();
                let counters = slot.counters.clone();
                let durations = slot.durations.clone();
                let logs = slot.logs.clone();
                let lane = &mut slot.lanes[index];
                lane.in_ready = false;
                lane.running = true;
                let instance = lane.instance.take();
                state.heavy_running += usize::from(heavy);
                return Some(Turn {
                    name,
                    lane: index,
                    instance,
                    counters,
                    durations,
                    heavy,
                    logs,
                    ran: 0,
                    busy: Duration::ZERO,
                });
            }
            if state.closed && state.ready.is_empty() {
                return None;
            }
            state.idle += 1;
            state = self.work.wait(state).unwrap_or_else(|p| p.into_inner());
            state.idle -= 1;
        }
    }

    /// The next item of the function a worker holds, if any.
    pub fn pop(&self, turn: &Turn) -> Option<Item> {
        let mut state = self.lock();
        let slot = state.slots.get_mut(&turn.name)?;
        let item = slot.lanes[turn.lane].items.pop_front()?;
        if matches!(item, Item::Replace(_)) {
            slot.replacing -= 1;
        }
        // Only a job's own run counts as invoking (a version change does not).
        let job = matches!(item, Item::Job(_));
        slot.lanes[turn.lane].invoking_since = job.then(std::time::Instant::now);
        let took = slot.queue.took(job, &self.limits.bounds);
        if took.room {
            // Intake may be waiting for room here. (notify_one keeps the
            // permit if it is not waiting yet, so no wake-up is lost.)
            slot.room.notify_one();
        }
        if took.caught_up {
            tracing::info!(function = %turn.name, "function caught up; its events are queued again");
        }
        if slot.spool.is_some() {
            self.ask_refill(&mut state, &turn.name);
        }
        Some(item)
    }

    /// The worker has finished the turn's invocations and now hands on their
    /// output (an outbox fsync, publishes): that time is not the function's
    /// invocation running long, so it must not make its QoS 1 events spill.
    pub fn invocations_done(&self, turn: &Turn) {
        if let Some(slot) = self.lock().slots.get_mut(&turn.name) {
            slot.lanes[turn.lane].invoking_since = None;
        }
    }

    /// Ends a worker's turn: the function gets its instance back and, if it has
    /// more queued, goes to the end of the line. A removed function with
    /// nothing queued is forgotten.
    pub fn give_back(&self, turn: Turn) {
        let mut state = self.lock();
        if turn.heavy {
            state.heavy_running -= 1;
            if state.idle > 0 && !state.ready.is_empty() {
                // A heavy function passed over for want of a worker may run now.
                self.work.notify_one();
            }
        }
        let Some(slot) = state.slots.get_mut(&turn.name) else { return };
        slot.lanes[turn.lane].running = false;
        slot.lanes[turn.lane].invoking_since = None;
        slot.queue.ran(turn.ran, turn.busy);
        let removed = turn.instance.is_none();
        slot.lanes[turn.lane].instance = turn.instance;
        if removed
            && slot.queue.removing
            && slot.lanes.iter().all(|l| l.items.is_empty() && !l.running && l.instance.is_none())
        {
            let spool = state.slots.remove(&turn.name).and_then(|slot| slot.spool);
            drop(state);
            if let (Some(sp), Some(cfg)) = (spool, &self.limits.spool) {
                // Everything it held has run: the spool goes with the function.
                sp.spool.closer().delete(cfg, &turn.name);
            }
            return;
        }
        let failing = turn.counters.failing_in_a_row.load(Relaxed);
        if slot.queue.quarantines(failing) {
            // What it has queued goes the way of what comes next; a new version
            // queued behind stays, and ends the quarantine when it is reached.
            let mut dropped = 0;
            for lane in &mut slot.lanes {
                lane.items.retain(|item| {
                    let job = matches!(item, Item::Job(_));
                    dropped += u64::from(job);
                    !job
                });
            }
            slot.queue.jobs = 0;
            slot.counters.dropped_quarantine.fetch_add(dropped, Relaxed);
            Stats::add(&self.stats.quarantine_dropped, dropped);
            tracing::error!(
                function = %turn.name,
                failed_in_a_row = failing,
                "function quarantined: it failed limits.quarantine_after times in a row; its events are dropped \
                 (quarantine_dropped) until a new version is deployed or the configuration changes it"
            );
        }
        let lane = &mut slot.lanes[turn.lane];
        if lane.items.is_empty() {
            lane.idle_since = Some(std::time::Instant::now());
        }
        self.make_ready(&mut state, &turn.name, turn.lane);
    }

    /// Gives back the instances of lanes (but the first) idle for `idle_for`:
    /// a function scaled out shrinks back when its backlog is gone.
    pub fn shrink_idle(&self, idle_for: Duration) -> usize {
        let mut state = self.lock();
        let mut dropped = 0;
        for slot in state.slots.values_mut() {
            for lane in slot.lanes.iter_mut().skip(1) {
                let idle =
                    !lane.running && lane.items.is_empty() && lane.idle_since.is_some_and(|t| t.elapsed() >= idle_for);
                if idle && lane.instance.take().is_some() {
                    dropped += 1;
                }
            }
        }
        dropped
    }
}
