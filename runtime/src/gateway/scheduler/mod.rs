//! Per-function queues and the worker pool that serves them fairly.
//!
//! Every function has a queue of its own. A function with queued work waits in
//! one round-robin line of *ready* functions; a free worker takes the function
//! at the front, runs its jobs in order for one turn (up to
//! [`HOLD_INVOCATIONS`] jobs or [`TURN`] of time), gives it back and, if it still
//! has work, puts it at the end of the line. A function is run by one worker at a
//! time, so its events run one at a time in arrival order (one device's messages
//! reach it in order), and a slow function holds at most one worker. Functions
//! whose invocations outlast a turn (or that are behind) are *heavy*: all
//! workers but one at most run heavy functions at once, so however many slow
//! neighbours it has, a quick function finds a worker within about a turn.
//!
//! What a function that cannot keep up gets (its own queue, nobody else's):
//! - its queue holds at most `gateway.queue_capacity` jobs; when full, intake
//!   waits for room (the broker holds the backlog), which absorbs a burst for a
//!   function that is quick but briefly outrun, for `stall_after` in all (half
//!   the keep-alive, at most 5 s) until its queue is empty again;
//! - it is *behind* when a new event would wait longer than
//!   `gateway.queue_delay_ms` in its queue (queued jobs times its mean
//!   invocation time), or its queue is full and will not have room within what
//!   is left of intake's waiting budget. Then
//!   its newest events are dropped at once (counted under `queue_full_dropped`
//!   and by its name) until it has run everything queued. Intake never waits
//!   long for a slow function, and the deliveries its queue holds stay few, so
//!   in-order acknowledgements are held up by it for about `queue_delay_ms` at most.
//!
//! QoS 1 events are different: one the function holds unacknowledged holds the
//! broker's acknowledgements of everything after it. With a spool configured
//! (`spool.rs`), a QoS 1 event for a function that would keep it waiting (its
//! invocations, or those queued before it, outlast a turn; or it is behind, or
//! full) goes to the function's spool on disk instead, and every later event
//! of that function follows it there until the spool is empty again, so its
//! order holds. Jobs are read back from the spool as the queue empties.
//!
//! Changes to a function travel through its queue ([`Item::Replace`],
//! [`Item::Remove`]), so every job queued before a change runs on the old
//! version and every later one on the new (behind its spooled events too).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;

mod slot;
mod spooling;
#[cfg(test)]
mod tests;
mod turns;

use super::quota::TokenBucket;
use super::spool::{Spool, SpoolConfig};
use super::stats::Stats;
use super::status::{FunctionCounters, FunctionStatus};
use crate::config::Limits;
use crate::event::EventKind;
use crate::host::FunctionInstance;
use crate::sources::{Job, Offer, Sink, Tally};
use slot::{quotas, Lane, Slot, SlotSpool};

/// Most jobs of one function a worker runs in one turn: the output of a turn is
/// released together (one outbox group, one wake-up of the output connection).
pub const HOLD_INVOCATIONS: usize = 64;
/// Longest a worker keeps one function before the next ready one gets its turn
/// (a turn that has started an invocation finishes it).
pub const TURN: Duration = Duration::from_millis(5);

/// Invocations a function's mean time is made of before its queue is judged by
/// it: the first ones include compiling the module's code (wasmi translates a
/// function on its first call) and say little about the next.
const WARM_RUNS: u64 = 16;

/// A QoS 1 event expected to wait longer than this behind the jobs queued
/// before it goes to the function's spool (as does every event of a function
/// whose invocations outlast a turn). Shorter waits are a quick function's
/// burst running its course: its acknowledgements wait no longer than that.
const SPILL_WAIT: Duration = Duration::from_millis(50);

/// Jobs a function with spooled events gets read back into its queue at a time:
/// read back when it has fewer than half of this queued.
const REFILL_TO: usize = 2 * HOLD_INVOCATIONS;

/// What a function's queue carries.
pub enum Item {
    Job(Job),
    /// The next version: jobs after this run on it.
    Replace(Box<FunctionInstance>),
    /// The function goes: nothing after this but a new install.
    Remove,
}

/// Why a job was dropped when offered.
#[derive(Clone, Copy)]
enum Refused {
    Behind,
    Quota,
    Quarantine,
}

/// A worker's hold on one function for one turn: the function's instance is
/// the worker's until [`Scheduler::give_back`].
pub struct Turn {
    pub name: Arc<str>,
    /// Which of the function's instances (see [`Lane`]).
    pub lane: usize,
    /// `None` once an [`Item::Remove`] was run.
    pub instance: Option<Box<FunctionInstance>>,
    pub counters: Arc<FunctionCounters>,
    /// Whether the function was heavy when the turn began.
    heavy: bool,
    /// The function's log quota, shared by its instances.
    pub logs: Arc<Mutex<TokenBucket>>,
    /// Jobs run and time spent running them, for the function's mean.
    pub ran: u32,
    pub busy: Duration,
}

/// How big a queue may grow and how long its events may wait.
#[derive(Debug, Clone)]
pub struct QueueLimits {
    pub capacity: usize,
    pub max_delay: Duration,
    /// Most intake waits, in all, for room in one function's queue since it was last empty.
    pub stall_after: Duration,
    /// Memory the extra instances of scaled-out functions may take in all, at
    /// their `limits.memory_bytes` each (`gateway.scale_memory_bytes`).
    pub scale_memory: usize,
    /// Where QoS 1 events wait on disk; `None` when nobody waits for their
    /// acknowledgement (the embedded broker) or `gateway.spool_max_bytes` is 0.
    pub spool: Option<SpoolConfig>,
}

impl QueueLimits {
    /// Free slots a full queue has when intake is woken to fill it again:
    /// waking intake for every freed slot would cost a wake-up per message.
    fn resume_at(&self) -> usize {
        (self.capacity / 4).max(1)
    }
}

pub struct Scheduler {
    /// Itself, for the callbacks of spool writes.
    me: std::sync::Weak<Scheduler>,
    /// Asks the spool thread to read a function's spooled events back.
    refill: Option<Mutex<std::sync::mpsc::Sender<SpoolWork>>>,
    state: Mutex<State>,
    /// Workers that may run heavy functions at once: all but one, so that
    /// light functions always find a worker soon.
    heavy_limit: usize,
    /// Signalled when a function becomes ready, and at close.
    work: Condvar,
    limits: QueueLimits,
    stats: Arc<Stats>,
}

/// What the spool thread is asked to do for a function.
enum SpoolWork {
    /// Open its spool (its first spill).
    Open(Arc<str>),
    /// Read its spooled events back into its queue.
    Refill(Arc<str>),
}

#[derive(Default)]
struct State {
    slots: HashMap<Arc<str>, Slot>,
    /// Lanes (function, lane) with queued work and no worker, in the order they got it.
    ready: VecDeque<(Arc<str>, usize)>,
    /// Workers waiting for a function to become ready: waking one costs a
    /// system call, so it is done only when one waits.
    idle: usize,
    /// Workers running a heavy function's turn (see [`Slot::heavy`]).
    heavy_running: usize,
    closed: bool,
    /// Set while intake hands over a burst ([`Scheduler::hold_wakes`]).
    holding_wakes: bool,
    /// Idle workers owed a wake-up once the burst is handed over.
    wakes_owed: usize,
}

impl Scheduler {
    pub fn new(limits: QueueLimits, workers: usize, stats: Arc<Stats>) -> std::io::Result<Arc<Scheduler>> {
        let heavy_limit = workers.saturating_sub(1).max(1);
        let (refill, asked) = std::sync::mpsc::channel::<SpoolWork>();
        let spooling = limits.spool.is_some();
        let scheduler = Arc::new_cyclic(|me| Scheduler {
            me: me.clone(),
            refill: spooling.then(|| Mutex::new(refill)),
            state: Mutex::default(),
            heavy_limit,
            work: Condvar::new(),
            limits,
            stats,
        });
        if spooling {
            // Opens spools and reads spooled events back as functions need
            // them: disk I/O never runs on intake, and never under the
            // scheduler's lock.
            let me = Arc::downgrade(&scheduler);
            std::thread::Builder::new().name("spool-reader".into()).stack_size(256 << 10).spawn(move || {
                for work in asked {
                    let Some(scheduler) = me.upgrade() else { break };
                    match work {
                        SpoolWork::Open(name) => scheduler.open_spool(&name),
                        SpoolWork::Refill(name) => scheduler.refill_from_spool(&name),
                    }
                }
            })?;
        }
        Ok(scheduler)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every method leaves the state consistent before anything can panic.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a function, or queues its next version behind the jobs it has.
    pub fn install(&self, instance: FunctionInstance) {
        let name: Arc<str> = Arc::from(instance.spec().name.as_str());
        let installed = self.lock().slots.contains_key(&name);
        let recovered = if installed { None } else { self.recover_spool(&name) };
        let mut state = self.lock();
        let route_lanes = self.lanes_for(&state, &name, &instance.spec().limits);
        match state.slots.get_mut(&name) {
            None => {
                let mut slot = Slot::new(Box::new(instance), route_lanes);
                slot.spool = recovered;
                state.slots.insert(name.clone(), slot);
                self.ask_refill(&mut state, &name);
            }
            Some(slot) => {
                // The new version's quotas apply at once, its code from its place in the queue.
                let (rate, logs) = quotas(&instance.spec().limits);
                slot.rate = rate;
                slot.quarantine_after = instance.spec().limits.quarantine_after;
                if slot.quarantined {
                    slot.quarantined = false;
                    tracing::info!(function = %name, "new version installed: out of quarantine");
                }
                *slot.logs.lock().unwrap_or_else(|p| p.into_inner()) = logs;
                slot.removing = false;
                slot.template = instance.sibling();
                slot.route_lanes = route_lanes;
                while slot.lanes.len() < slot.route_lanes {
                    slot.lanes.push(Lane::default());
                }
                slot.change(Item::Replace(Box::new(instance)));
                for lane in 0..slot.lanes.len() {
                    self.make_ready(&mut state, &name, lane);
                }
            }
        }
    }

    /// The lanes a function gets: `limits.instances`, as far as the memory the
    /// other functions' extra instances leave in `gateway.scale_memory_bytes`.
    fn lanes_for(&self, state: &State, name: &str, limits: &Limits) -> usize {
        let wanted = limits.instances.max(1) as usize;
        if wanted == 1 {
            return 1;
        }
        let others: usize = state
            .slots
            .iter()
            .filter(|(n, _)| &***n != name)
            .map(|(_, s)| (s.route_lanes - 1) * s.template.spec().limits.memory_bytes)
            .sum();
        let left = self.limits.scale_memory.saturating_sub(others);
        let lanes = wanted.min(1 + left / limits.memory_bytes.max(1));
        if lanes < wanted {
            tracing::warn!(
                function = name,
                instances = lanes,
                asked = wanted,
                "fewer instances than limits.instances: gateway.scale_memory_bytes holds no more at limits.memory_bytes each"
            );
        }
        lanes
    }

    /// Removes a function once the jobs queued (and spooled) for it have run.
    pub fn remove(&self, name: &Arc<str>) {
        let mut state = self.lock();
        if let Some(slot) = state.slots.get_mut(name) {
            slot.removing = true;
            slot.change(Item::Remove);
            // Intake, if it waits for room here, finds the function gone.
            slot.room.notify_one();
            for lane in 0..slot.lanes.len() {
                self.make_ready(&mut state, name, lane);
            }
        }
    }

    /// Queues a job for its function, or says why not. Never blocks.
    pub fn offer(&self, job: Job) -> Offer {
        let mut state = self.lock();
        let closed = state.closed;
        let Some(slot) = state.slots.get_mut(&job.function).filter(|s| !s.removing) else {
            // A job racing a removal (routed by the table from before it).
            drop(state);
            Stats::add(&self.stats.unknown_function_dropped, 1);
            return Offer::Dropped;
        };
        if slot.rate.as_mut().is_some_and(|rate| !rate.take(std::time::Instant::now())) {
            return self.refuse(state, job, Refused::Quota);
        }
        if slot.quarantined {
            return self.refuse(state, job, Refused::Quarantine);
        }
        let job = if self.limits.spool.is_some() && !closed && slot.spills(&job, self.limits.capacity) {
            match self.spill(&mut state, job) {
                Ok(offer) => return offer,
                Err(job) => job,
            }
        } else {
            job
        };
        let Some(slot) = state.slots.get_mut(&job.function) else { return Offer::Dropped };
        if slot.behind {
            return self.refuse(state, job, Refused::Behind);
        }
        let waits_us = slot.jobs as f64 * slot.mean_us / slot.route_lanes as f64;
        if slot.runs >= WARM_RUNS && waits_us > self.limits.max_delay.as_micros() as f64 {
            slot.behind = true;
            tracing::warn!(
                function = %job.function,
                queued = slot.jobs,
                mean_ms = slot.mean_us / 1000.0,
                "function behind: its queued events would wait over gateway.queue_delay_ms; dropping its newest \
                 events until it has run all it has queued"
            );
            return self.refuse(state, job, Refused::Behind);
        }
        if slot.jobs >= self.limits.capacity {
            let budget = self.limits.stall_after.saturating_sub(slot.waited);
            // Room for intake comes when a quarter of the queue has run: if that
            // is not expected within the budget, waiting would only hold up the others.
            let mean = if slot.runs >= WARM_RUNS { slot.mean_us } else { 0.0 };
            let expected = Duration::from_micros((self.limits.resume_at() as f64 * mean) as u64);
            if budget.is_zero() || expected > budget {
                slot.behind = true;
                tracing::warn!(
                    function = %job.function,
                    waited_ms = slot.waited.as_millis() as u64,
                    mean_ms = slot.mean_us / 1000.0,
                    "function behind: its queue is full and does not empty fast enough for intake to wait for it; \
                     dropping its newest events until it has run all it has queued (gateway.queue_capacity)"
                );
                return self.refuse(state, job, Refused::Behind);
            }
            return Offer::Full(job, slot.room.clone(), budget);
        }
        let name = job.function.clone();
        let index = slot.enqueue(job);
        self.make_ready(&mut state, &name, index);
        Offer::Queued
    }

    /// Queues a job, or drops it as behind when its function's queue is full.
    pub fn offer_or_drop(&self, job: Job) {
        if let Offer::Full(job, _, _) = self.offer(job) {
            let state = self.lock();
            self.refuse(state, job, Refused::Behind);
        }
    }

    /// Intake waited this long for room in the function's queue.
    pub fn waited(&self, function: &str, waited: Duration) {
        if let Some(slot) = self.lock().slots.get_mut(function) {
            slot.waited += waited;
        }
    }

    /// Drops a job, counted under its reason for the gateway and its function.
    fn refuse(&self, state: MutexGuard<'_, State>, job: Job, why: Refused) -> Offer {
        let counters = state.slots.get(&job.function).map(|s| s.counters.clone());
        drop(state);
        let (global, what) = match why {
            Refused::Behind => (&self.stats.queue_full_dropped, "function behind; event dropped"),
            Refused::Quota => (&self.stats.quota_dropped, "over its quota (limits.invocations_per_s); event dropped"),
            Refused::Quarantine => (&self.stats.quarantine_dropped, "function quarantined; event dropped"),
        };
        Stats::add(global, 1);
        if let Some(counters) = counters {
            let counter = match why {
                Refused::Behind => &counters.dropped_queue,
                Refused::Quota => &counters.dropped_quota,
                Refused::Quarantine => &counters.dropped_quarantine,
            };
            let before = counter.fetch_add(1, Relaxed);
            // The first drop and then every 1000th, not every one.
            if before % 1000 == 0 {
                tracing::warn!(function = %job.function, topic = job.event.subject(), dropped = before + 1, "{what}");
            }
        }
        // Dropping the job releases its acknowledgement: dropped is its outcome.
        drop(job);
        Offer::Dropped
    }

    /// No more jobs come: workers exit once nothing is ready.
    pub fn close(&self) {
        self.lock().closed = true;
        self.work.notify_all();
    }

    /// Each function's counters and queue.
    pub fn status(&self) -> HashMap<Arc<str>, FunctionStatus> {
        let state = self.lock();
        state
            .slots
            .iter()
            .map(|(name, slot)| {
                let c = &slot.counters;
                let status = FunctionStatus {
                    queued: slot.jobs as u64,
                    ok: c.ok.load(Relaxed),
                    failed: c.failed.load(Relaxed),
                    dropped_queue: c.dropped_queue.load(Relaxed),
                    dropped_quota: c.dropped_quota.load(Relaxed),
                    dropped_quarantine: c.dropped_quarantine.load(Relaxed),
                    version_ok: c.version_ok.load(Relaxed),
                    version_failed: c.version_failed.load(Relaxed),
                    quarantined: slot.quarantined,
                    updating: slot.replacing > 0 || slot.spool.as_ref().is_some_and(|sp| !sp.pending.is_empty()),
                    logs_dropped: c.logs_dropped.load(Relaxed),
                    dropped_shutdown: c.dropped_shutdown.load(Relaxed),
                    spooled: c.spooled.load(Relaxed),
                    dropped_spool: c.dropped_spool.load(Relaxed),
                    spool_kept: c.spool_kept.load(Relaxed),
                    spool_depth: slot.spool.as_ref().map_or(0, |sp| sp.outstanding()),
                    mean_us: slot.mean_us as u64,
                    behind: slot.behind,
                    instances: slot.lanes.iter().filter(|l| l.instance.is_some() || l.running).count() as u64,
                };
                (name.clone(), status)
            })
            .collect()
    }
}

/// Where sources offer their jobs.
impl Sink for Scheduler {
    fn offer(&self, job: Job) -> Offer {
        Scheduler::offer(self, job)
    }

    fn offer_or_drop(&self, job: Job) {
        Scheduler::offer_or_drop(self, job)
    }

    fn tally(&self, tally: Tally) {
        let counter = match tally {
            Tally::MessageIn => &self.stats.events_in,
            Tally::MessageUnrouted => &self.stats.events_unrouted,
            Tally::MessageOversized => &self.stats.events_oversized,
            Tally::MessageMalformed => &self.stats.events_malformed,
            Tally::TimerRun => &self.stats.timer_runs,
            Tally::TimerSkipped => &self.stats.timer_skipped,
        };
        Stats::add(counter, 1);
    }

    fn waited(&self, function: &str, waited: Duration) {
        Scheduler::waited(self, function, waited)
    }

    fn hold_wakes(&self) {
        Scheduler::hold_wakes(self)
    }

    fn release_wakes(&self) {
        Scheduler::release_wakes(self)
    }
}
