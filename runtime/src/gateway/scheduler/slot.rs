//! A function's place in the scheduler: its lanes, its spool's bookkeeping,
//! and its queue's state, which `policy.rs` rules on.

use super::*;

pub(super) struct Slot {
    /// One lane per instance the function may run on (`limits.instances`);
    /// lane 0 always has one, the others get one when they get work.
    pub(super) lanes: Vec<Lane>,
    /// What the queue's rules read and keep (`policy.rs`).
    pub(super) queue: Queue,
    /// The version in force, not instantiated: what a lane's new instance is made of.
    pub(super) template: FunctionInstance,
    /// New versions queued and not yet reached.
    pub(super) replacing: usize,
    /// Notified when the queue has room again after being full.
    pub(super) room: Arc<Notify>,
    pub(super) counters: Arc<FunctionCounters>,
    /// How long its invocations take, all its versions and lanes together.
    pub(super) durations: Arc<crate::counters::Durations>,
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
    /// Of those, the first ones were spooled before this start (by another
    /// configuration, perhaps): each runs only if the function still has the
    /// trigger it came by.
    pub(super) from_before: u64,
    /// The spool thread is reading it (or was asked to).
    pub(super) reading: bool,
    /// Changes queued behind the events spooled before them: each goes into the
    /// queue once `settled` reaches its count.
    pub(super) pending: VecDeque<(u64, Item)>,
}

impl SlotSpool {
    pub(super) fn new(spool: Spool, held: u64) -> SlotSpool {
        SlotSpool {
            spool,
            appended: held,
            settled: 0,
            durable: held,
            from_before: held,
            reading: false,
            pending: VecDeque::new(),
        }
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
    pub(super) fn new(instance: Box<FunctionInstance>, route_lanes: usize) -> Slot {
        let now = std::time::Instant::now();
        let queue = Queue::new(&instance.spec().limits, route_lanes, now);
        let logs = log_quota(&instance.spec().limits, now);
        let template = instance.sibling();
        let mut lanes: Vec<Lane> = (0..route_lanes).map(|_| Lane::default()).collect();
        lanes[0].instance = Some(instance);
        Slot {
            queue,
            logs: Arc::new(Mutex::new(logs)),
            lanes,
            template,
            replacing: 0,
            room: Arc::new(Notify::new()),
            counters: Arc::default(),
            durations: Arc::default(),
            spool: None,
            spool_failed: false,
            spool_opening: false,
        }
    }

    /// Queues a job in its lane; returns the lane.
    pub(super) fn enqueue(&mut self, job: Job) -> usize {
        self.queue.jobs += 1;
        let index = lane_of(&job, self.queue.lanes);
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

    /// What the queue's rules need to know of a job arriving now.
    pub(super) fn arrival(&self, job: &Job, may_spill: bool, now: std::time::Instant) -> Arrival {
        Arrival {
            holds_ack: job.delivery.is_some(),
            awaited: job.event.kind.awaited(),
            spell: self.spool.as_ref().is_some_and(|sp| sp.outstanding() > 0),
            stuck: self.lanes.iter().any(|l| l.invoking_since.is_some_and(|t| now.saturating_duration_since(t) > TURN)),
            may_spill,
        }
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

/// A function's log-line bucket (`limits.log_lines_per_s`).
pub(super) fn log_quota(limits: &Limits, now: std::time::Instant) -> TokenBucket {
    let lines = f64::from(limits.log_lines_per_s);
    TokenBucket::new(lines, 2.0 * lines, now)
}
