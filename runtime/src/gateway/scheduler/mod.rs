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
//! These rules are `policy.rs`: one function's queue state, the time passed
//! in, a decision returned, unit-tested without instances or threads. This
//! file and its siblings are the shell that keeps the lock, the condition
//! variable and the spool thread, and carries the decisions out.
//!
//! Changes to a function travel through its queue ([`Item::Replace`],
//! [`Item::Remove`]), so every job queued before a change runs on the old
//! version and every later one on the new (behind its spooled events too).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;

mod policy;
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
use crate::host::FunctionInstance;
use crate::sources::{Job, Offer, Sink, Tally};
pub use policy::Bounds;
use policy::{Admit, Arrival, FellBehind, Queue, Refused, REFILL_TO};
use slot::{log_quota, Lane, Slot, SlotSpool};

/// Most jobs of one function a worker runs in one turn: the output of a turn is
/// released together (one outbox group, one wake-up of the output connection).
pub const HOLD_INVOCATIONS: usize = 64;
/// Longest a worker keeps one function before the next ready one gets its turn
/// (a turn that has started an invocation finishes it).
pub const TURN: Duration = Duration::from_millis(5);

/// What a function's queue carries.
pub enum Item {
    Job(Job),
    /// The next version: jobs after this run on it.
    Replace(Box<FunctionInstance>),
    /// The function goes: nothing after this but a new install.
    Remove,
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
    pub durations: Arc<crate::counters::Durations>,
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
    /// Each queue's capacity, delay and intake's waiting budget.
    pub bounds: Bounds,
    /// Memory the extra instances of scaled-out functions may take in all, at
    /// their `limits.memory_bytes` each (`gateway.scale_memory_bytes`).
    pub scale_memory: usize,
    /// Where QoS 1 events wait on disk; `None` when nobody waits for their
    /// acknowledgement (the embedded broker) or `gateway.spool_max_bytes` is 0.
    pub spool: Option<SpoolConfig>,
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
        crate::sync::lock(&self.state)
    }

    /// Adds a function, or queues its next version behind the jobs it has. A
    /// function new here may have a spool left from before the start, which
    /// is read: call it off the I/O thread.
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
                let now = std::time::Instant::now();
                let limits = &instance.spec().limits;
                if slot.queue.new_version(limits, route_lanes, now) {
                    tracing::info!(function = %name, "new version installed: out of quarantine");
                }
                *crate::sync::lock(&slot.logs) = log_quota(limits, now);
                slot.template = instance.sibling();
                while slot.lanes.len() < route_lanes {
                    slot.lanes.push(Lane::default());
                }
                slot.change(Item::Replace(Box::new(instance)));
                for lane in 0..slot.lanes.len() {
                    self.make_ready(&mut state, &name, lane);
                }
            }
        }
    }

    /// The lanes a function gets (`policy::lanes_for`), told when fewer than asked.
    fn lanes_for(&self, state: &State, name: &str, limits: &Limits) -> usize {
        let others: usize = state
            .slots
            .iter()
            .filter(|(n, _)| &***n != name)
            .map(|(_, s)| (s.queue.lanes - 1) * s.template.spec().limits.memory_bytes)
            .sum();
        let lanes = policy::lanes_for(limits, others, self.limits.scale_memory);
        if lanes < limits.instances as usize {
            tracing::warn!(
                function = name,
                instances = lanes,
                asked = limits.instances,
                "fewer instances than limits.instances: gateway.scale_memory_bytes holds no more at limits.memory_bytes each"
            );
        }
        lanes
    }

    /// Removes a function once the jobs queued (and spooled) for it have run.
    pub fn remove(&self, name: &Arc<str>) {
        let mut state = self.lock();
        if let Some(slot) = state.slots.get_mut(name) {
            slot.queue.removing = true;
            slot.change(Item::Remove);
            // Intake, if it waits for room here, finds the function gone.
            slot.room.notify_one();
            for lane in 0..slot.lanes.len() {
                self.make_ready(&mut state, name, lane);
            }
        }
    }

    /// Queues a job for its function, or says why not. Never blocks. The
    /// decision is the queue's rules' (`policy.rs`); this carries it out.
    pub fn offer(&self, job: Job) -> Offer {
        let mut state = self.lock();
        let may_spill = self.limits.spool.is_some() && !state.closed;
        let bounds = &self.limits.bounds;
        let Some(slot) = state.slots.get_mut(&job.function) else {
            return self.refuse(state, job, Refused::Removed);
        };
        let now = std::time::Instant::now();
        let mut admit = slot.queue.admit(slot.arrival(&job, may_spill, now), bounds, now);
        let mut job = job;
        if admit == Admit::Spill {
            match self.spill(&mut state, job) {
                Ok(offer) => return offer,
                Err(back) => job = back,
            }
            let slot = state.slots.get_mut(&job.function).expect("spilling keeps the function");
            admit = slot.queue.admit_to_queue(bounds);
        }
        let slot = state.slots.get_mut(&job.function).expect("the function is installed");
        match admit {
            Admit::Queue | Admit::Spill => {
                let name = job.function.clone();
                let index = slot.enqueue(job);
                self.make_ready(&mut state, &name, index);
                Offer::Queued
            }
            Admit::Wait(budget) => Offer::Full(job, slot.room.clone(), budget),
            Admit::Refuse(why) => {
                if let Refused::Behind(Some(fell)) = why {
                    let (queued, mean_ms) = (slot.queue.jobs, slot.queue.mean_us / 1000.0);
                    let waited_ms = slot.queue.waited.as_millis() as u64;
                    let function = &*job.function;
                    match fell {
                        FellBehind::Delay => tracing::warn!(
                            function,
                            queued,
                            mean_ms,
                            "function behind: its queued events would wait over gateway.queue_delay_ms; dropping its \
                             newest events until it has run all it has queued"
                        ),
                        FellBehind::Stalled => tracing::warn!(
                            function,
                            waited_ms,
                            mean_ms,
                            "function behind: its queue is full and does not empty fast enough for intake to wait \
                             for it; dropping its newest events until it has run all it has queued \
                             (gateway.queue_capacity)"
                        ),
                    }
                }
                self.refuse(state, job, why)
            }
        }
    }

    /// Queues a job, or drops it as behind when its function's queue is full.
    pub fn offer_or_drop(&self, job: Job) {
        if let Offer::Full(job, _, _) = self.offer(job) {
            let state = self.lock();
            self.refuse(state, job, Refused::Behind(None));
        }
    }

    /// Intake waited this long for room in the function's queue.
    pub fn waited(&self, function: &str, waited: Duration) {
        if let Some(slot) = self.lock().slots.get_mut(function) {
            slot.queue.waited += waited;
        }
    }

    /// Drops a job, counted under its reason for the gateway and its function.
    fn refuse(&self, state: MutexGuard<'_, State>, job: Job, why: Refused) -> Offer {
        let counters = state.slots.get(&job.function).map(|s| s.counters.clone());
        drop(state);
        let (global, what) = match why {
            // A job racing a removal (routed by the table from before it).
            Refused::Removed => (&self.stats.unknown_function_dropped, "function removed; event dropped"),
            Refused::Behind(_) => (&self.stats.queue_full_dropped, "function behind; event dropped"),
            Refused::Quota => (&self.stats.quota_dropped, "over its quota (limits.invocations_per_s); event dropped"),
            Refused::Quarantine => (&self.stats.quarantine_dropped, "function quarantined; event dropped"),
        };
        Stats::add(global, 1);
        let counter = counters.as_ref().and_then(|c| match why {
            Refused::Removed => None,
            Refused::Behind(_) => Some(&c.dropped_queue),
            Refused::Quota => Some(&c.dropped_quota),
            Refused::Quarantine => Some(&c.dropped_quarantine),
        });
        if let Some(counter) = counter {
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
                let mut status = FunctionStatus {
                    queued: slot.queue.jobs as u64,
                    spool_depth: slot.spool.as_ref().map_or(0, |sp| sp.outstanding()),
                    mean_us: slot.queue.mean_us as u64,
                    instances: slot.lanes.iter().filter(|l| l.instance.is_some() || l.running).count() as u64,
                    quarantined: slot.queue.quarantined,
                    updating: slot.replacing > 0 || slot.spool.as_ref().is_some_and(|sp| !sp.pending.is_empty()),
                    behind: slot.queue.behind,
                    durations: slot.durations.snapshot(),
                    ..FunctionStatus::default()
                };
                slot.counters.load_into(&mut status);
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
            Tally::RequestIn => &self.stats.requests_in,
            Tally::DeviceMessage => &self.stats.device_messages,
            Tally::DeviceChange => &self.stats.device_changes,
            Tally::DeviceUnreadable => &self.stats.device_unreadable,
            Tally::CommandConfirmed => &self.stats.commands_confirmed,
            Tally::CommandUnconfirmed => &self.stats.commands_unconfirmed,
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
