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

use super::quota::TokenBucket;
use super::spool::{Spool, SpoolConfig};
use super::stats::Stats;
use super::status::{FunctionCounters, FunctionStatus};
use crate::config::Limits;
use crate::event::EventKind;
use crate::host::FunctionInstance;
use crate::sources::{Job, Offer, Sink, Tally};

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

struct Slot {
    /// One lane per instance the function may run on (`limits.instances`);
    /// lane 0 always has one, the others get one when they get work.
    lanes: Vec<Lane>,
    /// Lanes new jobs are spread over (the newest version's `limits.instances`).
    route_lanes: usize,
    /// The version in force, not instantiated: what a lane's new instance is made of.
    template: FunctionInstance,
    /// Jobs in all lanes.
    jobs: usize,
    /// A removal is queued: new jobs are refused.
    removing: bool,
    /// Dropping its newest jobs until it has run everything queued.
    behind: bool,
    /// Dropping every job until a new version is installed.
    quarantined: bool,
    /// New versions queued and not yet reached.
    replacing: usize,
    /// `limits.quarantine_after` of the version in force.
    quarantine_after: u32,
    /// Mean invocation time, microseconds, and the invocations it is made of.
    mean_us: f64,
    runs: u64,
    /// How long intake has waited for room here since the queue was last empty.
    waited: Duration,
    /// Notified when the queue has room again after being full.
    room: Arc<Notify>,
    counters: Arc<FunctionCounters>,
    /// `limits.invocations_per_s`, if set.
    rate: Option<TokenBucket>,
    /// `limits.log_lines_per_s`, shared by its lanes.
    logs: Arc<Mutex<TokenBucket>>,
    /// Its spool, once it needed one.
    spool: Option<SlotSpool>,
    /// Its spool could not be opened (logged once).
    spool_failed: bool,
    /// The spool thread is opening its spool: events that would spill take the
    /// queue (or make intake wait) meanwhile.
    spool_opening: bool,
}

/// A function's spool and what the scheduler knows of it.
struct SlotSpool {
    spool: Spool,
    /// Events appended to it (or on their way), and of those, read back or refused.
    appended: u64,
    settled: u64,
    /// Durable and not yet read back.
    durable: u64,
    /// The spool thread is reading it (or was asked to).
    reading: bool,
    /// Changes queued behind the events spooled before them: each goes into the
    /// queue once `settled` reaches its count.
    pending: VecDeque<(u64, Item)>,
}

impl SlotSpool {
    fn new(spool: Spool, held: u64) -> SlotSpool {
        SlotSpool { spool, appended: held, settled: 0, durable: held, reading: false, pending: VecDeque::new() }
    }

    /// Events written and not yet back in the queue: while there are any, every
    /// new event goes the same way, behind them.
    fn outstanding(&self) -> u64 {
        self.appended - self.settled
    }
}

/// One instance of a function and the jobs queued for it, run in order.
#[derive(Default)]
struct Lane {
    items: VecDeque<Item>,
    /// `None` while a worker holds it, and in a lane that has not needed one yet.
    instance: Option<Box<FunctionInstance>>,
    running: bool,
    /// When the worker running it began the job it runs now.
    invoking_since: Option<std::time::Instant>,
    in_ready: bool,
    /// When it last ran out of work, for giving idle instances back.
    idle_since: Option<std::time::Instant>,
}

impl Slot {
    /// A function whose invocations outlast a turn, or that is behind: at most
    /// all workers but one run such functions at once.
    fn heavy(&self) -> bool {
        self.behind || self.mean_us >= TURN.as_micros() as f64
    }

    fn new(instance: Box<FunctionInstance>, route_lanes: usize) -> Slot {
        let (rate, logs) = quotas(&instance.spec().limits);
        let quarantine_after = instance.spec().limits.quarantine_after;
        let template = instance.sibling();
        let mut lanes: Vec<Lane> = (0..route_lanes).map(|_| Lane::default()).collect();
        lanes[0].instance = Some(instance);
        Slot {
            rate,
            logs: Arc::new(Mutex::new(logs)),
            lanes,
            route_lanes,
            template,
            jobs: 0,
            removing: false,
            behind: false,
            quarantined: false,
            replacing: 0,
            quarantine_after,
            mean_us: 0.0,
            runs: 0,
            waited: Duration::ZERO,
            room: Arc::new(Notify::new()),
            counters: Arc::default(),
            spool: None,
            spool_failed: false,
            spool_opening: false,
        }
    }

    /// Queues a job in its lane; returns the lane.
    fn enqueue(&mut self, job: Job) -> usize {
        self.jobs += 1;
        let index = lane_of(&job, self.route_lanes);
        let lane = &mut self.lanes[index];
        if lane.instance.is_none() && !lane.running && lane.items.is_empty() {
            // Scaling out: a lane's first job gets it an instance, which is
            // instantiated where it first runs (on a worker).
            lane.instance = Some(Box::new(self.template.sibling()));
        }
        lane.items.push_back(Item::Job(job));
        index
    }

    /// Queues a change behind everything queued (and spooled) before it.
    fn change(&mut self, change: Item) {
        match &mut self.spool {
            Some(sp) if sp.outstanding() > 0 => sp.pending.push_back((sp.appended, change)),
            _ => self.queue_change(change),
        }
    }

    fn queue_change(&mut self, change: Item) {
        match change {
            Item::Replace(instance) => {
                // Lane 0 gets the new version itself; every other lane that has
                // an instance (or may get one back) one of its own.
                let mut first = Some(instance);
                for (i, lane) in self.lanes.iter_mut().enumerate() {
                    if i == 0 || lane.instance.is_some() || lane.running || !lane.items.is_empty() {
                        let next = first.take().unwrap_or_else(|| Box::new(self.template.sibling()));
                        self.replacing += 1;
                        lane.items.push_back(Item::Replace(next));
                    }
                }
            }
            Item::Remove => {
                for lane in &mut self.lanes {
                    lane.items.push_back(Item::Remove);
                }
            }
            Item::Job(job) => {
                self.enqueue(job);
            }
        }
    }

    /// Moves the changes whose spooled predecessors are all back in the queue.
    fn queue_due_changes(&mut self) {
        while let Some(sp) = &mut self.spool {
            match sp.pending.front() {
                Some((at, _)) if *at <= sp.settled => {
                    let (_, change) = sp.pending.pop_front().expect("front exists");
                    self.queue_change(change);
                }
                _ => break,
            }
        }
    }

    /// Whether a job goes to the spool rather than the queue: behind earlier
    /// spooled events, or a QoS 1 event that would keep the broker's
    /// acknowledgements waiting: its invocations outlast a turn (by their mean,
    /// or the one running now), those queued before it would take over
    /// [`SPILL_WAIT`], or the function is behind, or full. (Until a function's first turn ends its
    /// mean is unknown: its first events are queued, and a slow one holds the
    /// acknowledgements for one invocation.)
    fn spills(&self, job: &Job, capacity: usize) -> bool {
        // Only a message holds the broker's acknowledgement. A timer's run
        // holds its timer's leave to run again: spooled, it would give that
        // leave back at once and the timer would pile runs up on disk.
        if job.event.kind == EventKind::Timer {
            return false;
        }
        if self.spool.as_ref().is_some_and(|sp| sp.outstanding() > 0) {
            return true;
        }
        if job.delivery.is_none() {
            return false;
        }
        let waits_us = self.jobs as f64 / self.route_lanes as f64 * self.mean_us;
        let stuck = self.lanes.iter().any(|l| l.invoking_since.is_some_and(|t| t.elapsed() > TURN));
        let heavy = self.mean_us >= TURN.as_micros() as f64;
        self.behind || self.jobs >= capacity || stuck || heavy || waits_us >= SPILL_WAIT.as_micros() as f64
    }
}

/// The lane a job goes to: by device (or topic, when no device is known), so
/// one device's events stay in one lane, in order.
fn lane_of(job: &Job, lanes: usize) -> usize {
    if lanes <= 1 {
        return 0;
    }
    let key = job.event.device.as_deref().unwrap_or(job.event.subject());
    (super::registry::module_digest(key.as_bytes()) % lanes as u64) as usize
}

/// A function's buckets: invocations (if it has that quota) and log lines.
fn quotas(limits: &Limits) -> (Option<TokenBucket>, TokenBucket) {
    let now = std::time::Instant::now();
    let rate = limits.invocations_per_s.map(|r| TokenBucket::new(f64::from(r), f64::from(limits.burst.max(1)), now));
    let lines = f64::from(limits.log_lines_per_s);
    (rate, TokenBucket::new(lines, 2.0 * lines, now))
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

    /// Events a function's spool holds from before this start: read back first.
    fn recover_spool(&self, name: &str) -> Option<SlotSpool> {
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

    /// Writes a job's event to its function's spool, opening the spool first
    /// if need be. The job comes back when no spool can be opened.
    fn spill(&self, state: &mut State, job: Job) -> Result<Offer, Job> {
        let slot = state.slots.get_mut(&job.function).expect("offered to an existing function");
        if slot.spool.is_none() {
            // Opened by the spool thread, never here: this runs on intake,
            // under the lock. Until it is open the job takes the queue.
            if !slot.spool_failed && !slot.spool_opening {
                if let Some(refill) = &self.refill {
                    slot.spool_opening = true;
                    let work = SpoolWork::Open(job.function.clone());
                    let _ = refill.lock().unwrap_or_else(|p| p.into_inner()).send(work);
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
            slot.jobs -= queued.len();
            for earlier in queued {
                self.append_to_spool(slot, earlier);
            }
        }
        Ok(self.append_to_spool(slot, job))
    }

    fn append_to_spool(&self, slot: &mut Slot, mut job: Job) -> Offer {
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

    fn spool_refused(stats: &Stats, counters: &FunctionCounters, function: &str, why: &str) {
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
    fn spool_written(&self, name: &Arc<str>, durable: bool) {
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
    fn ask_refill(&self, state: &mut State, name: &Arc<str>) {
        let closed = state.closed;
        let Some(slot) = state.slots.get_mut(name) else { return };
        let jobs = slot.jobs;
        let Some(sp) = slot.spool.as_mut() else { return };
        if closed || sp.reading || sp.durable == 0 || jobs >= REFILL_TO / 2 {
            return;
        }
        if let Some(refill) = &self.refill {
            sp.reading = true;
            let _ = refill.lock().unwrap_or_else(|p| p.into_inner()).send(SpoolWork::Refill(name.clone()));
        }
    }

    /// Opens a function's spool for its first spill (run by the spool thread,
    /// the lock taken only to hand the spool over).
    fn open_spool(&self, name: &Arc<str>) {
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
    fn refill_from_spool(&self, name: &Arc<str>) {
        loop {
            let (plan, max) = {
                let mut state = self.lock();
                let closed = state.closed;
                let Some(slot) = state.slots.get_mut(name) else { return };
                let jobs = slot.jobs;
                let Some(sp) = slot.spool.as_mut() else { return };
                // Never past a change waiting for the events before it.
                let before_change = sp.pending.front().map_or(u64::MAX, |(at, _)| at - sp.settled);
                let max = REFILL_TO.saturating_sub(jobs).min(sp.durable.min(before_change) as usize);
                if closed || max == 0 {
                    sp.reading = false;
                    return;
                }
                let triggers = slot.template.spec().triggers.iter().map(|t| Arc::from(t.text())).collect();
                (sp.spool.read_plan(triggers), max)
            };
            let read = plan.read(name, max);
            let mut state = self.lock();
            let Some(slot) = state.slots.get_mut(name) else { return };
            let Some(sp) = slot.spool.as_mut() else { return };
            let batch = match read {
                Ok(batch) if !batch.jobs.is_empty() || batch.undecodable > 0 => batch,
                other => {
                    sp.reading = false;
                    let error = other.err().map(|e| e.to_string()).unwrap_or_else(|| "nothing to read".into());
                    tracing::error!(function = %name, error, "cannot read the function's spool; its spooled events wait there");
                    return;
                }
            };
            sp.spool.advance(batch.next);
            let read = batch.jobs.len() as u64 + batch.undecodable;
            sp.durable -= read;
            sp.settled += read;
            for _ in 0..batch.undecodable {
                Self::spool_refused(&self.stats, &slot.counters, name, "a spooled event does not decode");
            }
            if slot.quarantined {
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

    fn make_ready(&self, state: &mut State, name: &Arc<str>, lane: usize) {
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
                .position(|(name, _)| !heavy_full || !state.slots.get(name).is_some_and(|slot| slot.heavy()));
            if let Some((name, index)) = pick.and_then(|i| state.ready.remove(i)) {
                let Some(slot) = state.slots.get_mut(&name) else { continue };
                let heavy = slot.heavy();
                let counters = slot.counters.clone();
                let logs = slot.logs.clone();
                let lane = &mut slot.lanes[index];
                lane.in_ready = false;
                lane.running = true;
                let instance = lane.instance.take();
                state.heavy_running += usize::from(heavy);
                return Some(Turn { name, lane: index, instance, counters, heavy, logs, ran: 0, busy: Duration::ZERO });
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
        if job {
            slot.jobs -= 1;
            if slot.jobs == self.limits.capacity - self.limits.resume_at() {
                // Intake may be waiting for room here. (notify_one keeps the
                // permit if it is not waiting yet, so no wake-up is lost.)
                slot.room.notify_one();
            }
        }
        if slot.jobs == 0 {
            slot.waited = Duration::ZERO;
            if slot.behind {
                slot.behind = false;
                tracing::info!(function = %turn.name, "function caught up; its events are queued again");
            }
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
        if turn.ran > 0 {
            let sample = turn.busy.as_micros() as f64 / f64::from(turn.ran);
            slot.mean_us = if slot.runs == 0 { sample } else { 0.7 * slot.mean_us + 0.3 * sample };
            slot.runs += u64::from(turn.ran);
        }
        let removed = turn.instance.is_none();
        slot.lanes[turn.lane].instance = turn.instance;
        if removed
            && slot.removing
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
        if !slot.quarantined && slot.quarantine_after > 0 && failing >= u64::from(slot.quarantine_after) {
            slot.quarantined = true;
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
            slot.jobs = 0;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{FunctionSpec, Limits, ModuleSource};
    use crate::event::Event;
    use crate::host::Loader;
    use std::sync::atomic::AtomicU64;

    const WAT: &str = r#"(module (memory (export "memory") 1)
        (func (export "edgefn_abi_version") (result i32) i32.const 1)
        (func (export "handle") (result i32) i32.const 0))"#;

    fn instance(name: &str, fuel: u64) -> FunctionInstance {
        let loader = Arc::new(Loader::new());
        let module = loader.compile("t.wasm", &wat::parse_str(WAT).unwrap()).unwrap();
        let spec = FunctionSpec {
            name: name.into(),
            module: ModuleSource::File("t.wasm".into()),
            triggers: vec![crate::trigger::Trigger::Topic(crate::topic::TopicFilter::parse("t/#").unwrap())],
            // The fuel tells versions apart in these tests.
            limits: Limits { fuel, ..Limits::default() },
            config: Default::default(),
            allow: Default::default(),
        };
        FunctionInstance::new(loader, module, Arc::new(spec)).unwrap()
    }

    fn job(function: &str, n: usize) -> Job {
        Job {
            function: function.into(),
            trigger: "t/#".into(),
            event: Arc::new(Event::message(format!("t/{n}"), Vec::new(), None)),
            delivery: None,
            spooled: false,
        }
    }

    fn scheduler(capacity: usize, max_delay_ms: u64) -> (Arc<Scheduler>, Arc<Stats>) {
        scheduler_with(capacity, max_delay_ms, None)
    }

    fn scheduler_with(capacity: usize, max_delay_ms: u64, spool: Option<SpoolConfig>) -> (Arc<Scheduler>, Arc<Stats>) {
        let stats = Arc::new(Stats::default());
        let limits = QueueLimits {
            capacity,
            max_delay: Duration::from_millis(max_delay_ms),
            stall_after: Duration::from_millis(100),
            scale_memory: 64 << 20,
            spool,
        };
        (Scheduler::new(limits, 2, stats.clone()).unwrap(), stats)
    }

    /// Runs one turn of up to `max` items; returns the events' subjects (and
    /// "v<fuel>" for each replace), pretending each job took `each`.
    fn turn(s: &Scheduler, max: usize, each: Duration) -> (String, Vec<String>) {
        let mut turn = s.next_turn().expect("a function is ready");
        let mut seen = Vec::new();
        for _ in 0..max {
            match s.pop(&turn) {
                Some(Item::Job(job)) => {
                    let version = turn.instance.as_ref().map_or(0, |i| i.spec().limits.fuel);
                    seen.push(format!("{}@v{version}", job.event.subject()));
                    turn.ran += 1;
                    turn.busy += each;
                }
                Some(Item::Replace(i)) => turn.instance = Some(i),
                Some(Item::Remove) => turn.instance = None,
                None => break,
            }
        }
        let name = turn.name.to_string();
        s.give_back(turn);
        (name, seen)
    }

    #[test]
    fn a_function_with_instances_runs_devices_side_by_side_each_in_order() {
        let (s, _) = scheduler(100, 5_000);
        let mut spec = (**instance("scaled", 1).spec()).clone();
        spec.limits.instances = 4;
        let loader = Arc::new(Loader::new());
        let module = loader.compile("t.wasm", &wat::parse_str(WAT).unwrap()).unwrap();
        s.install(FunctionInstance::new(loader, module, Arc::new(spec)).unwrap());
        let device_job = |device: &str, n: usize| {
            let mut job = job("scaled", n);
            job.event = Arc::new(Event::message(format!("t/{device}/{n}"), Vec::new(), Some(device.into())));
            job
        };
        // Two devices whose events fall in different lanes.
        let lanes = |d: &str| lane_of(&device_job(d, 0), 4);
        let other = (0..100).map(|i| format!("dev-{i}")).find(|d| lanes(d) != lanes("dev-a")).unwrap();
        for n in 0..3 {
            assert!(queued(s.offer(device_job("dev-a", n))));
            assert!(queued(s.offer(device_job(&other, n))));
        }
        // Two workers each hold one lane of the same function at once.
        let first = s.next_turn().unwrap();
        let second = s.next_turn().unwrap();
        assert_ne!(first.lane, second.lane);
        let subjects = |turn: &Turn| {
            let mut seen = Vec::new();
            while let Some(Item::Job(job)) = s.pop(turn) {
                seen.push(job.event.subject().to_owned());
            }
            seen
        };
        let (a, b) = (subjects(&first), subjects(&second));
        let (dev_a, dev_other) = if a[0].contains("dev-a") { (a, b) } else { (b, a) };
        assert_eq!(dev_a, ["t/dev-a/0", "t/dev-a/1", "t/dev-a/2"]);
        assert_eq!(dev_other, [format!("t/{other}/0"), format!("t/{other}/1"), format!("t/{other}/2")]);
        s.give_back(first);
        s.give_back(second);
        // Lane 0 always has its instance; each lane that got work has one too.
        let used: std::collections::BTreeSet<usize> = [0, lanes("dev-a"), lanes(&other)].into();
        assert_eq!(s.status()["scaled"].instances, used.len() as u64);
        // Idle, the extra instances go back; the first lane keeps its own.
        assert_eq!(s.shrink_idle(Duration::ZERO), used.len() - 1);
        assert_eq!(s.status()["scaled"].instances, 1);
    }

    #[test]
    fn scaling_out_stops_at_the_memory_budget() {
        let (s, _) = scheduler(100, 5_000);
        let scaled = |name: &str| {
            let mut spec = (**instance(name, 1).spec()).clone();
            // 16 MiB each: the 64 MiB budget holds four extra instances in all.
            spec.limits.instances = 4;
            spec.limits.memory_bytes = 16 << 20;
            let loader = Arc::new(Loader::new());
            let module = loader.compile("t.wasm", &wat::parse_str(WAT).unwrap()).unwrap();
            FunctionInstance::new(loader, module, Arc::new(spec)).unwrap()
        };
        s.install(scaled("first"));
        s.install(scaled("second"));
        let lanes = |name: &str| s.lock().slots[name].route_lanes;
        assert_eq!((lanes("first"), lanes("second")), (4, 2));
        // A new version of the first keeps its own share.
        s.install(scaled("first"));
        assert_eq!(lanes("first"), 4);
    }

    #[test]
    fn a_burst_handed_over_wakes_an_idle_worker_once_and_it_runs_the_whole_burst() {
        let (s, _) = scheduler(100, 60_000);
        s.install(instance("f", 1));
        let (tx, rx) = std::sync::mpsc::channel();
        let worker = {
            let s = s.clone();
            std::thread::spawn(move || tx.send(turn(&s, 100, Duration::ZERO)).unwrap())
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while s.lock().idle == 0 {
            assert!(std::time::Instant::now() < deadline, "the worker never waited for work");
            std::thread::yield_now();
        }
        s.hold_wakes();
        for n in 0..3 {
            assert!(queued(s.offer(job("f", n))));
        }
        // One wake-up owed for the burst, none given yet.
        assert_eq!(s.lock().wakes_owed, 1);
        s.release_wakes();
        let (name, seen) = rx.recv_timeout(Duration::from_secs(10)).expect("the idle worker is woken at release");
        assert_eq!(name, "f");
        assert_eq!(seen, ["t/0@v1", "t/1@v1", "t/2@v1"]);
        assert_eq!(s.lock().wakes_owed, 0);
        worker.join().unwrap();
    }

    #[test]
    fn heavy_functions_leave_one_worker_to_the_others() {
        let (s, _) = scheduler(100, 60_000);
        for name in ["heavy-1", "heavy-2", "light"] {
            s.install(instance(name, 1));
        }
        // Each heavy one has shown it takes 50 ms an invocation.
        for name in ["heavy-1", "heavy-2"] {
            assert!(queued(s.offer(job(name, 0))));
            assert_eq!(turn(&s, 1, Duration::from_millis(50)).0, name);
        }
        for name in ["heavy-1", "heavy-2", "light"] {
            assert!(queued(s.offer(job(name, 1))));
        }
        // Two workers: one runs heavy-1; heavy-2 must wait, and light goes first.
        let first = s.next_turn().unwrap();
        assert_eq!(&*first.name, "heavy-1");
        let second = s.next_turn().unwrap();
        assert_eq!(&*second.name, "light");
        s.give_back(second);
        s.give_back(first);
        assert_eq!(&*s.next_turn().unwrap().name, "heavy-2");
    }

    fn queued(offer: Offer) -> bool {
        matches!(offer, Offer::Queued)
    }

    #[test]
    fn functions_take_turns_and_each_runs_its_events_in_order() {
        let (s, _) = scheduler(100, 5_000);
        s.install(instance("busy", 1));
        s.install(instance("quiet", 1));
        for n in 0..6 {
            assert!(queued(s.offer(job("busy", n))));
        }
        assert!(queued(s.offer(job("quiet", 100))));
        // busy got work first, but after one turn quiet is next, not busy again.
        assert_eq!(turn(&s, 2, Duration::ZERO), ("busy".into(), vec!["t/0@v1".into(), "t/1@v1".into()]));
        assert_eq!(turn(&s, 2, Duration::ZERO), ("quiet".into(), vec!["t/100@v1".into()]));
        assert_eq!(turn(&s, 10, Duration::ZERO).1, ["t/2@v1", "t/3@v1", "t/4@v1", "t/5@v1"]);
    }

    #[test]
    fn a_function_is_never_run_by_two_workers_at_once() {
        let (s, _) = scheduler(100, 5_000);
        s.install(instance("f", 1));
        assert!(queued(s.offer(job("f", 0))));
        let held = s.next_turn().unwrap();
        assert!(queued(s.offer(job("f", 1))));
        // Another worker finds nothing ready while the first holds f.
        assert!(s.lock().ready.is_empty());
        s.give_back(held);
        assert_eq!(s.lock().ready.len(), 1);
    }

    #[test]
    fn a_replace_takes_effect_between_the_jobs_before_and_after_it() {
        let (s, _) = scheduler(100, 5_000);
        s.install(instance("f", 1));
        assert!(queued(s.offer(job("f", 0))));
        s.install(instance("f", 2));
        assert!(queued(s.offer(job("f", 1))));
        assert_eq!(turn(&s, 10, Duration::ZERO).1, ["t/0@v1", "t/1@v2"]);
    }

    #[test]
    fn a_removed_function_runs_what_was_queued_then_refuses_and_is_forgotten() {
        let (s, stats) = scheduler(100, 5_000);
        s.install(instance("f", 1));
        assert!(queued(s.offer(job("f", 0))));
        s.remove(&Arc::from("f"));
        assert!(matches!(s.offer(job("f", 1)), Offer::Dropped));
        assert_eq!(stats.unknown_function_dropped.load(Relaxed), 1);
        assert_eq!(turn(&s, 10, Duration::ZERO).1, ["t/0@v1"]);
        assert!(s.status().is_empty());
    }

    #[test]
    fn a_function_whose_events_would_wait_too_long_drops_its_newest_until_it_caught_up() {
        let (s, stats) = scheduler(1_000, 100);
        s.install(instance("slow", 1));
        // Warm up: WARM_RUNS invocations of 20 ms each.
        for n in 0..WARM_RUNS as usize {
            assert!(queued(s.offer(job("slow", n))));
        }
        turn(&s, 100, Duration::from_millis(20));
        // 100 ms of budget at 20 ms an event: 5 queued wait 100 ms; the next would wait longer.
        let offers: Vec<bool> = (0..8).map(|n| queued(s.offer(job("slow", 100 + n)))).collect();
        assert_eq!(offers, [true, true, true, true, true, true, false, false]);
        assert_eq!(stats.queue_full_dropped.load(Relaxed), 2);
        assert!(s.status()["slow"].behind);
        // Still behind with room in the queue, until all it had queued has run.
        turn(&s, 3, Duration::from_millis(20));
        assert!(!queued(s.offer(job("slow", 200))));
        turn(&s, 100, Duration::from_millis(20));
        assert!(queued(s.offer(job("slow", 201))));
        let status = &s.status()["slow"];
        assert_eq!((status.dropped_queue, status.behind), (3, false));
    }

    #[test]
    fn a_function_over_its_invocation_quota_loses_the_excess_at_once() {
        let (s, stats) = scheduler(100, 5_000);
        let mut spec = (**instance("limited", 1).spec()).clone();
        spec.limits.invocations_per_s = Some(1);
        spec.limits.burst = 3;
        let loader = Arc::new(Loader::new());
        let module = loader.compile("t.wasm", &wat::parse_str(WAT).unwrap()).unwrap();
        s.install(FunctionInstance::new(loader, module, Arc::new(spec)).unwrap());
        let offers: Vec<bool> = (0..5).map(|n| queued(s.offer(job("limited", n)))).collect();
        assert_eq!(offers, [true, true, true, false, false]);
        assert_eq!(stats.quota_dropped.load(Relaxed), 2);
        assert_eq!(s.status()["limited"].dropped_quota, 2);
    }

    #[test]
    fn a_full_queue_makes_intake_wait_within_its_budget_then_drops() {
        let (s, stats) = scheduler(2, 5_000);
        s.install(instance("f", 1));
        assert!(queued(s.offer(job("f", 0))));
        assert!(queued(s.offer(job("f", 1))));
        let Offer::Full(job2, _, budget) = s.offer(job("f", 2)) else { panic!("not full") };
        assert_eq!(budget, Duration::from_millis(100));
        s.waited("f", Duration::from_millis(100));
        assert!(matches!(s.offer(job2), Offer::Dropped));
        assert_eq!(stats.queue_full_dropped.load(Relaxed), 1);
        // Once it has run everything queued, intake waits for it again.
        turn(&s, 10, Duration::ZERO);
        assert!(queued(s.offer(job("f", 3))));
        assert!(queued(s.offer(job("f", 4))));
        assert!(matches!(s.offer(job("f", 5)), Offer::Full(..)));
    }

    fn spooling_scheduler(dir: &std::path::Path) -> (Arc<Scheduler>, Arc<Stats>) {
        let spool =
            SpoolConfig { root: dir.to_path_buf(), max_bytes: 1 << 20, max_event_bytes: 4096, min_free_bytes: 0 };
        scheduler_with(100, 5_000, Some(spool))
    }

    /// A broker's acknowledgement: counts itself when released.
    struct Ack(Arc<AtomicU64>);

    impl Drop for Ack {
        fn drop(&mut self) {
            self.0.fetch_add(1, Relaxed);
        }
    }

    fn qos1_job(function: &str, n: usize, acked: &Arc<AtomicU64>) -> Job {
        Job { delivery: Some(Arc::new(Ack(acked.clone()))), ..job(function, n) }
    }

    /// Makes `name` slow: one job that took two turns.
    fn make_slow(s: &Scheduler, name: &str) {
        assert!(queued(s.offer(job(name, 0))));
        turn(s, 1, TURN * 2);
    }

    /// Asks the spool thread to open `name`'s spool, as a first spill does,
    /// and waits until it has.
    fn spool_opened(s: &Scheduler, name: &str) {
        {
            let mut state = s.lock();
            let slot = state.slots.get_mut(name).unwrap();
            if slot.spool.is_some() {
                return;
            }
            slot.spool_opening = true;
        }
        let work = SpoolWork::Open(Arc::from(name));
        s.refill.as_ref().unwrap().lock().unwrap().send(work).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while s.lock().slots[name].spool.is_none() {
            assert!(std::time::Instant::now() < deadline, "the spool thread never opened {name}'s spool");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Runs turns until `n` jobs ran; returns what they saw.
    fn run_jobs(s: &Scheduler, n: usize) -> Vec<String> {
        let mut seen = Vec::new();
        while seen.len() < n {
            seen.extend(turn(s, 64, TURN * 2).1);
        }
        seen
    }

    #[test]
    fn a_slow_functions_qos1_events_are_spooled_acknowledged_once_on_disk_and_run_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let (s, stats) = spooling_scheduler(dir.path());
        s.install(instance("slow", 1));
        make_slow(&s, "slow");
        spool_opened(&s, "slow");
        let acked = Arc::new(AtomicU64::new(0));
        for n in 1..=50 {
            assert!(queued(s.offer(qos1_job("slow", n, &acked))));
        }
        // A QoS 0 event behind them waits behind them.
        assert!(queued(s.offer(job("slow", 51))));
        assert_eq!(stats.events_spooled.load(Relaxed), 51);
        let seen = run_jobs(&s, 51);
        assert_eq!(seen, (1..=51).map(|n| format!("t/{n}@v1")).collect::<Vec<_>>());
        // Each was acknowledged to the broker once on disk, before it could be read back.
        assert_eq!(acked.load(Relaxed), 50);
        let status = &s.status()["slow"];
        assert_eq!((status.spooled, status.spool_depth, status.dropped_spool), (51, 0, 0));
    }

    #[test]
    fn the_first_spill_leaves_opening_the_spool_to_the_spool_thread() {
        let dir = tempfile::tempdir().unwrap();
        let (s, stats) = spooling_scheduler(dir.path());
        s.install(instance("slow", 1));
        make_slow(&s, "slow");
        let acked = Arc::new(AtomicU64::new(0));
        // Offered on intake, under the lock: no disk I/O there. It is queued
        // while the spool thread opens the spool.
        assert!(queued(s.offer(qos1_job("slow", 1, &acked))));
        assert_eq!(stats.events_spooled.load(Relaxed), 0);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while s.lock().slots["slow"].spool.is_none() {
            assert!(std::time::Instant::now() < deadline, "the spool thread never opened the spool");
            std::thread::sleep(Duration::from_millis(1));
        }
        // Open: the next ones spill, behind the one queued before.
        assert!(queued(s.offer(qos1_job("slow", 2, &acked))));
        assert!(stats.events_spooled.load(Relaxed) >= 1);
        assert_eq!(run_jobs(&s, 2), ["t/1@v1", "t/2@v1"]);
    }

    #[test]
    fn events_read_back_from_the_spool_are_never_written_to_it_again() {
        let dir = tempfile::tempdir().unwrap();
        let (s, stats) = spooling_scheduler(dir.path());
        s.install(instance("slow", 1));
        make_slow(&s, "slow");
        spool_opened(&s, "slow");
        let acked = Arc::new(AtomicU64::new(0));
        for n in 1..=10 {
            assert!(queued(s.offer(qos1_job("slow", n, &acked))));
        }
        // One runs, and the rest are read back into its queue: none is left on disk.
        assert_eq!(turn(&s, 1, TURN * 2).1, ["t/1@v1"]);
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while s.status()["slow"].queued < 9 {
            assert!(std::time::Instant::now() < deadline, "the spool was never read back");
            std::thread::yield_now();
        }
        // A new event starts a new spell while those nine wait in the queue:
        // only the new one is written.
        assert!(queued(s.offer(qos1_job("slow", 11, &acked))));
        assert_eq!(stats.events_spooled.load(Relaxed), 11, "events read back were spooled again");
        let seen = run_jobs(&s, 10);
        assert_eq!(seen, (2..=11).map(|n| format!("t/{n}@v1")).collect::<Vec<_>>());
        assert_eq!(acked.load(Relaxed), 11);
    }

    #[test]
    fn bursts_handed_over_with_held_wake_ups_all_run_while_a_spool_fills_and_drains() {
        let dir = tempfile::tempdir().unwrap();
        let (s, stats) = spooling_scheduler(dir.path());
        s.install(instance("slow", 1));
        make_slow(&s, "slow");
        spool_opened(&s, "slow");
        let (acked, ran) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        // Two workers, as a gateway on two cores has, running whatever is ready.
        let workers: Vec<_> = (0..2)
            .map(|_| {
                let (s, ran) = (s.clone(), ran.clone());
                std::thread::spawn(move || {
                    while let Some(mut turn) = s.next_turn() {
                        while let Some(item) = s.pop(&turn) {
                            if matches!(item, Item::Job(_)) {
                                turn.ran += 1;
                                ran.fetch_add(1, Relaxed);
                            }
                        }
                        s.give_back(turn);
                    }
                })
            })
            .collect();
        // Intake's pattern: a socket read's worth of messages offered with the
        // wake-ups held, then released; meanwhile the spool thread reads back.
        let total = 2_000;
        for burst in 0..total / 10 {
            s.hold_wakes();
            for n in 0..10 {
                assert!(queued(s.offer(qos1_job("slow", burst * 10 + n, &acked))));
            }
            s.release_wakes();
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while ran.load(Relaxed) < total as u64 {
            let waiting = s.status()["slow"].clone();
            assert!(std::time::Instant::now() < deadline, "stalled: ran {ran:?} of {total}; {waiting:?}");
            std::thread::yield_now();
        }
        s.close();
        for worker in workers {
            worker.join().unwrap();
        }
        assert!(stats.events_spooled.load(Relaxed) > 0, "the spool was never used");
        assert_eq!(acked.load(Relaxed), total as u64);
        assert_eq!(s.status()["slow"].spool_depth, 0);
    }

    #[test]
    fn spooled_events_left_at_a_stop_run_after_the_next_start() {
        let dir = tempfile::tempdir().unwrap();
        let acked = Arc::new(AtomicU64::new(0));
        {
            let (s, stats) = spooling_scheduler(dir.path());
            s.install(instance("slow", 1));
            make_slow(&s, "slow");
            spool_opened(&s, "slow");
            for n in 1..=20 {
                assert!(queued(s.offer(qos1_job("slow", n, &acked))));
            }
            s.close();
            s.close_spools();
            assert_eq!(stats.spool_kept.load(Relaxed), 20);
            assert_eq!(s.status()["slow"].spool_kept, 20);
        }
        assert_eq!(acked.load(Relaxed), 20);
        let (s, _) = spooling_scheduler(dir.path());
        s.install(instance("slow", 1));
        assert_eq!(run_jobs(&s, 20), (1..=20).map(|n| format!("t/{n}@v1")).collect::<Vec<_>>());
    }

    #[test]
    fn a_new_version_runs_after_the_events_spooled_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let (s, _) = spooling_scheduler(dir.path());
        s.install(instance("slow", 1));
        make_slow(&s, "slow");
        spool_opened(&s, "slow");
        let acked = Arc::new(AtomicU64::new(0));
        for n in 1..=5 {
            assert!(queued(s.offer(qos1_job("slow", n, &acked))));
        }
        s.install(instance("slow", 2));
        for n in 6..=10 {
            assert!(queued(s.offer(qos1_job("slow", n, &acked))));
        }
        let expected: Vec<_> = (1..=10).map(|n| format!("t/{n}@v{}", if n <= 5 { 1 } else { 2 })).collect();
        assert_eq!(run_jobs(&s, 10), expected);
    }
}
