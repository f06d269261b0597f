//! A function's place in the scheduler: its lanes, its spool's bookkeeping,
//! and the rules of one queue (where a job goes, when it spills).

use super::*;

pub(super) struct Slot {
    /// One lane per instance the function may run on (`limits.instances`);
    /// lane 0 always has one, the others get one when they get work.
    pub(super) lanes: Vec<Lane>,
    /// Lanes new jobs are spread over (the newest version's `limits.instances`).
    pub(super) route_lanes: usize,
    /// The version in force, not instantiated: what a lane's new instance is made of.
    pub(super) template: FunctionInstance,
    /// Jobs in all lanes.
    pub(super) jobs: usize,
    /// A removal is queued: new jobs are refused.
    pub(super) removing: bool,
    /// Dropping its newest jobs until it has run everything queued.
    pub(super) behind: bool,
    /// Dropping every job until a new version is installed.
    pub(super) quarantined: bool,
    /// New versions queued and not yet reached.
    pub(super) replacing: usize,
    /// `limits.quarantine_after` of the version in force.
    pub(super) quarantine_after: u32,
    /// Mean invocation time, microseconds, and the invocations it is made of.
    pub(super) mean_us: f64,
    pub(super) runs: u64,
    /// How long intake has waited for room here since the queue was last empty.
    pub(super) waited: Duration,
    /// Notified when the queue has room again after being full.
    pub(super) room: Arc<Notify>,
    pub(super) counters: Arc<FunctionCounters>,
    /// `limits.invocations_per_s`, if set.
    pub(super) rate: Option<TokenBucket>,
    /// `limits.log_lines_per_s`, shared by its lanes.
    pub(super) logs: Arc<Mutex<TokenBucket>>,
    /// Its spool, once it needed one.
    pub(super) spool: Option<SlotSpool>,
    /// Its spool could not be opened (logged once).
    pub(super) spool_failed: bool,
    /// The spool thread is opening its spool: events that would spill take the
    /// queue (or make intake wait) meanwhile.
    pub(super) spool_opening: bool,
}

/// A function's spool and what the scheduler knows of it.
pub(super) struct SlotSpool {
    pub(super) spool: Spool,
    /// Events appended to it (or on their way), and of those, read back or refused.
    pub(super) appended: u64,
    pub(super) settled: u64,
    /// Durable and not yet read back.
    pub(super) durable: u64,
    /// The spool thread is reading it (or was asked to).
    pub(super) reading: bool,
    /// Changes queued behind the events spooled before them: each goes into the
    /// queue once `settled` reaches its count.
    pub(super) pending: VecDeque<(u64, Item)>,
}

impl SlotSpool {
    pub(super) fn new(spool: Spool, held: u64) -> SlotSpool {
        SlotSpool { spool, appended: held, settled: 0, durable: held, reading: false, pending: VecDeque::new() }
    }

    /// Events written and not yet back in the queue: while there are any, every
    /// new event goes the same way, behind them.
    pub(super) fn outstanding(&self) -> u64 {
        self.appended - self.settled
    }
}

/// One instance of a function and the jobs queued for it, run in order.
#[derive(Default)]
pub(super) struct Lane {
    pub(super) items: VecDeque<Item>,
    /// `None` while a worker holds it, and in a lane that has not needed one yet.
    pub(super) instance: Option<Box<FunctionInstance>>,
    pub(super) running: bool,
    /// When the worker running it began the job it runs now.
    pub(super) invoking_since: Option<std::time::Instant>,
    pub(super) in_ready: bool,
    /// When it last ran out of work, for giving idle instances back.
    pub(super) idle_since: Option<std::time::Instant>,
}

impl Slot {
    /// A function whose invocations outlast a turn, or that is behind: at most
    /// all workers but one run such functions at once.
    pub(super) fn heavy(&self) -> bool {
        self.behind || self.mean_us >= TURN.as_micros() as f64
    }

    pub(super) fn new(instance: Box<FunctionInstance>, route_lanes: usize) -> Slot {
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
    pub(super) fn enqueue(&mut self, job: Job) -> usize {
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
    pub(super) fn change(&mut self, change: Item) {
        match &mut self.spool {
            Some(sp) if sp.outstanding() > 0 => sp.pending.push_back((sp.appended, change)),
            _ => self.queue_change(change),
        }
    }

    pub(super) fn queue_change(&mut self, change: Item) {
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
    pub(super) fn queue_due_changes(&mut self) {
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
    pub(super) fn spills(&self, job: &Job, capacity: usize) -> bool {
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
pub(super) fn lane_of(job: &Job, lanes: usize) -> usize {
    if lanes <= 1 {
        return 0;
    }
    let key = job.event.device.as_deref().unwrap_or(job.event.subject());
    (crate::gateway::registry::module_digest(key.as_bytes()) % lanes as u64) as usize
}

/// A function's buckets: invocations (if it has that quota) and log lines.
pub(super) fn quotas(limits: &Limits) -> (Option<TokenBucket>, TokenBucket) {
    let now = std::time::Instant::now();
    let rate = limits.invocations_per_s.map(|r| TokenBucket::new(f64::from(r), f64::from(limits.burst.max(1)), now));
    let lines = f64::from(limits.log_lines_per_s);
    (rate, TokenBucket::new(lines, 2.0 * lines, now))
}
