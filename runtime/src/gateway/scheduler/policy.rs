//! The rules of one function's queue, with no threads, no instances and no
//! disk: what the queue knows of itself, the time passed in, and a decision
//! returned, which the scheduler (the shell around it) carries out under its
//! lock. The rules are told in `mod.rs`; the tests below are named after them.

use std::time::{Duration, Instant};

use super::{HOLD_INVOCATIONS, TURN};
use crate::config::Limits;
use crate::gateway::quota::TokenBucket;

/// Invocations a function's mean time is made of before its queue is judged by
/// it: the first ones include compiling the module's code (wasmi translates a
/// function on its first call) and say little about the next.
pub const WARM_RUNS: u64 = 16;

/// A QoS 1 event expected to wait longer than this behind the jobs queued
/// before it goes to the function's spool (as does every event of a function
/// whose invocations outlast a turn). Shorter waits are a quick function's
/// burst running its course: its acknowledgements wait no longer than that.
pub const SPILL_WAIT: Duration = Duration::from_millis(50);

/// Jobs a function with spooled events gets read back into its queue at a time:
/// read back when it has fewer than half of this queued.
pub const REFILL_TO: usize = 2 * HOLD_INVOCATIONS;

/// The gateway's bounds on every queue (`[gateway]`).
#[derive(Debug, Clone)]
pub struct Bounds {
    pub capacity: usize,
    pub max_delay: Duration,
    /// Most intake waits, in all, for room in one function's queue since it was last empty.
    pub stall_after: Duration,
}

impl Bounds {
    /// Free slots a full queue has when intake is woken to fill it again:
    /// waking intake for every freed slot would cost a wake-up per message.
    pub fn resume_at(&self) -> usize {
        (self.capacity / 4).max(1)
    }
}

/// One function's queue as the rules see it.
pub struct Queue {
    /// Jobs queued, in all its lanes.
    pub jobs: usize,
    /// Lanes new jobs are spread over (the newest version's `limits.instances`).
    pub lanes: usize,
    /// A removal is queued: new jobs are refused.
    pub removing: bool,
    /// Dropping its newest jobs until it has run everything queued.
    pub behind: bool,
    /// Dropping every job until a new version is installed.
    pub quarantined: bool,
    /// `limits.quarantine_after` of the version in force (0: never).
    pub quarantine_after: u32,
    /// Mean invocation time, microseconds, and the invocations it is made of.
    pub mean_us: f64,
    pub runs: u64,
    /// How long intake has waited for room here since the queue was last empty.
    pub waited: Duration,
    /// `limits.invocations_per_s`, if set.
    pub rate: Option<TokenBucket>,
}

/// What the shell knows of an event arriving, beyond its queue.
#[derive(Debug, Clone, Copy, Default)]
pub struct Arrival {
    /// A QoS 1 message: the broker's acknowledgements wait for it.
    pub holds_ack: bool,
    /// Someone waits for its own run: a timer (to run again), an HTTP client
    /// (for its answer). It never spills.
    pub awaited: bool,
    /// Events of the function are on their way to its spool or in it.
    pub spell: bool,
    /// One of its invocations has been running for over a turn.
    pub stuck: bool,
    /// A spool may be used (configured, and the gateway not stopping).
    pub may_spill: bool,
}

/// Where an arriving event goes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Admit {
    /// Into its queue.
    Queue,
    /// To its spool; [`Queue::admit_to_queue`] decides instead when no spool opens.
    Spill,
    /// The queue is full: intake may wait this long for room.
    Wait(Duration),
    /// Dropped, for this reason.
    Refuse(Refused),
}

/// Why an event was dropped when offered.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Refused {
    /// Its function is going.
    Removed,
    /// Over `limits.invocations_per_s`.
    Quota,
    Quarantine,
    /// Behind already, or fell behind now for this reason.
    Behind(Option<FellBehind>),
}

/// Why a function fell behind.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FellBehind {
    /// A new event would wait over `gateway.queue_delay_ms`.
    Delay,
    /// Its queue is full and will not have room within intake's waiting budget.
    Stalled,
}

/// What taking an item off the queue changed.
#[derive(Debug, Default, PartialEq)]
pub struct Took {
    /// A quarter of a full queue has run: wake intake if it waits for room.
    pub room: bool,
    /// It had fallen behind and has now run everything queued.
    pub caught_up: bool,
}

impl Queue {
    pub fn new(limits: &Limits, lanes: usize, now: Instant) -> Queue {
        Queue {
            jobs: 0,
            lanes,
            removing: false,
            behind: false,
            quarantined: false,
            quarantine_after: limits.quarantine_after,
            mean_us: 0.0,
            runs: 0,
            waited: Duration::ZERO,
            rate: rate(limits, now),
        }
    }

    /// A new version's limits apply at once; a removal queued is called off.
    /// Returns whether that ended a quarantine.
    pub fn new_version(&mut self, limits: &Limits, lanes: usize, now: Instant) -> bool {
        self.rate = rate(limits, now);
        self.quarantine_after = limits.quarantine_after;
        self.lanes = lanes;
        self.removing = false;
        std::mem::take(&mut self.quarantined)
    }

    /// A function whose invocations outlast a turn, or that is behind: at most
    /// all workers but one run such functions at once.
    pub fn heavy(&self) -> bool {
        self.behind || self.mean_us >= TURN.as_micros() as f64
    }

    /// How long a new event would wait behind those queued, by the mean.
    fn waits_us(&self) -> f64 {
        self.jobs as f64 * self.mean_us / self.lanes.max(1) as f64
    }

    /// Where an arriving event goes. Refusals by removal, quota and quarantine
    /// come first; then the spool, for an event that would keep the broker's
    /// acknowledgements waiting; then the queue's own bounds.
    pub fn admit(&mut self, event: Arrival, bounds: &Bounds, now: Instant) -> Admit {
        if self.removing {
            return Admit::Refuse(Refused::Removed);
        }
        if self.rate.as_mut().is_some_and(|rate| !rate.take(now)) {
            return Admit::Refuse(Refused::Quota);
        }
        if self.quarantined {
            return Admit::Refuse(Refused::Quarantine);
        }
        if event.may_spill && self.spills(event, bounds) {
            return Admit::Spill;
        }
        self.admit_to_queue(bounds)
    }

    /// Whether an event goes to the spool rather than the queue: behind earlier
    /// spooled events, or a QoS 1 event that would keep the broker's
    /// acknowledgements waiting: its function's invocations outlast a turn (by
    /// their mean, or the one running now), those queued before it would take
    /// over [`SPILL_WAIT`], or the function is behind, or full. (Until a
    /// function's first turn ends its mean is unknown: its first events are
    /// queued, and a slow one holds the acknowledgements for one invocation.)
    /// An awaited event never spills: a timer's run holds its timer's leave to
    /// run again (spooled, it would give that leave back at once and pile runs
    /// up on disk), and an HTTP client waits for its answer.
    pub fn spills(&self, event: Arrival, bounds: &Bounds) -> bool {
        if event.awaited {
            return false;
        }
        if event.spell {
            return true;
        }
        if !event.holds_ack {
            return false;
        }
        let heavy = self.mean_us >= TURN.as_micros() as f64;
        self.behind
            || self.jobs >= bounds.capacity
            || event.stuck
            || heavy
            || self.waits_us() >= SPILL_WAIT.as_micros() as f64
    }

    /// The queue's bounds alone: a function behind drops its newest events
    /// until it has run all it queued; one whose next event would wait over
    /// `max_delay` (once its mean is known) falls behind; a full one makes
    /// intake wait for room as long as what is left of its budget allows, and
    /// falls behind when room is not expected within it.
    pub fn admit_to_queue(&mut self, bounds: &Bounds) -> Admit {
        if self.behind {
            return Admit::Refuse(Refused::Behind(None));
        }
        let warm = self.runs >= WARM_RUNS;
        if warm && self.waits_us() > bounds.max_delay.as_micros() as f64 {
            self.behind = true;
            return Admit::Refuse(Refused::Behind(Some(FellBehind::Delay)));
        }
        if self.jobs >= bounds.capacity {
            let budget = bounds.stall_after.saturating_sub(self.waited);
            // Room for intake comes when a quarter of the queue has run.
            let mean = if warm { self.mean_us } else { 0.0 };
            let expected = Duration::from_micros((bounds.resume_at() as f64 * mean) as u64);
            if budget.is_zero() || expected > budget {
                self.behind = true;
                return Admit::Refuse(Refused::Behind(Some(FellBehind::Stalled)));
            }
            return Admit::Wait(budget);
        }
        Admit::Queue
    }

    /// An item was taken off the queue (`job`: one of its events).
    pub fn took(&mut self, job: bool, bounds: &Bounds) -> Took {
        let mut took = Took::default();
        if job {
            self.jobs -= 1;
            took.room = self.jobs == bounds.capacity - bounds.resume_at();
        }
        if self.jobs == 0 {
            self.waited = Duration::ZERO;
            took.caught_up = std::mem::take(&mut self.behind);
        }
        took
    }

    /// A turn ran `ran` invocations in `busy`: the mean follows, recent turns weighing most.
    pub fn ran(&mut self, ran: u32, busy: Duration) {
        if ran == 0 {
            return;
        }
        let sample = busy.as_micros() as f64 / f64::from(ran);
        self.mean_us = if self.runs == 0 { sample } else { 0.7 * self.mean_us + 0.3 * sample };
        self.runs += u64::from(ran);
    }

    /// Whether it goes into quarantine now, having failed `failing` times in a
    /// row: at `limits.quarantine_after` (0: never). Its queued jobs go the way
    /// of the next ones: the shell drops them and reports how many.
    pub fn quarantines(&mut self, failing: u64) -> bool {
        let now = !self.quarantined && self.quarantine_after > 0 && failing >= u64::from(self.quarantine_after);
        if now {
            self.quarantined = true;
        }
        now
    }
}

/// A function's invocation bucket, if it has that quota.
pub fn rate(limits: &Limits, now: Instant) -> Option<TokenBucket> {
    limits.invocations_per_s.map(|r| TokenBucket::new(f64::from(r), f64::from(limits.burst.max(1)), now))
}

/// The lanes a function gets: `limits.instances`, as far as the memory the
/// other functions' extra instances (`others` bytes) leave of `budget`
/// (`gateway.scale_memory_bytes`), at `limits.memory_bytes` each.
pub fn lanes_for(limits: &Limits, others: usize, budget: usize) -> usize {
    let wanted = limits.instances.max(1) as usize;
    if wanted == 1 {
        return 1;
    }
    let left = budget.saturating_sub(others);
    wanted.min(1 + left / limits.memory_bytes.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn bounds() -> Bounds {
        Bounds { capacity: 8, max_delay: 100 * MS, stall_after: 1000 * MS }
    }

    fn queue() -> Queue {
        Queue::new(&Limits::default(), 1, Instant::now())
    }

    /// A queue whose mean is known: `runs` invocations of `mean` each.
    fn warm(mean: Duration) -> Queue {
        let mut q = queue();
        q.ran(WARM_RUNS as u32, mean * WARM_RUNS as u32);
        q
    }

    fn fill(q: &mut Queue, n: usize) {
        fill_within(q, n, &bounds())
    }

    fn fill_within(q: &mut Queue, n: usize, b: &Bounds) {
        for _ in 0..n {
            assert_eq!(q.admit(Arrival::default(), b, Instant::now()), Admit::Queue);
            q.jobs += 1;
        }
    }

    #[test]
    fn a_quick_function_takes_every_event_up_to_its_capacity() {
        let mut q = warm(MS / 10);
        fill(&mut q, 8);
        assert_eq!(q.jobs, 8);
        assert!(!q.behind);
    }

    #[test]
    fn events_that_would_wait_over_the_queue_delay_drop_until_everything_queued_has_run() {
        let mut q = warm(30 * MS);
        fill(&mut q, 4); // 4 x 30 ms = 120 ms ahead of the next: over 100 ms
        let b = bounds();
        assert_eq!(q.admit_to_queue(&b), Admit::Refuse(Refused::Behind(Some(FellBehind::Delay))));
        assert!(q.heavy(), "a function behind is heavy");
        assert_eq!(q.admit_to_queue(&b), Admit::Refuse(Refused::Behind(None)), "the warning is told once");
        for left in (1..4).rev() {
            assert_eq!(q.took(true, &b), Took::default());
            assert_eq!(q.jobs, left);
            assert_eq!(q.admit_to_queue(&b), Admit::Refuse(Refused::Behind(None)), "still behind with {left} queued");
        }
        assert_eq!(q.took(true, &b), Took { room: false, caught_up: true });
        assert_eq!(q.admit_to_queue(&b), Admit::Queue);
    }

    #[test]
    fn the_delay_is_shared_by_the_lanes_a_function_has() {
        let mut q = warm(30 * MS);
        q.lanes = 2;
        fill(&mut q, 6); // 6 x 30 ms over 2 lanes = 90 ms: under 100 ms
        assert_eq!(q.admit_to_queue(&bounds()), Admit::Queue);
    }

    #[test]
    fn a_function_is_not_judged_by_its_first_invocations() {
        let mut q = queue();
        q.ran(WARM_RUNS as u32 - 1, (WARM_RUNS as u32 - 1) * 500 * MS);
        fill(&mut q, 7);
        assert!(!q.behind);
        q.ran(1, 500 * MS);
        assert_eq!(q.admit_to_queue(&bounds()), Admit::Refuse(Refused::Behind(Some(FellBehind::Delay))));
    }

    #[test]
    fn a_full_queue_makes_intake_wait_for_what_is_left_of_its_budget() {
        let b = bounds();
        let mut q = warm(MS / 100);
        fill(&mut q, 8);
        assert_eq!(q.admit_to_queue(&b), Admit::Wait(1000 * MS));
        q.waited += 600 * MS;
        assert_eq!(q.admit_to_queue(&b), Admit::Wait(400 * MS));
        q.waited += 400 * MS;
        assert_eq!(q.admit_to_queue(&b), Admit::Refuse(Refused::Behind(Some(FellBehind::Stalled))));
    }

    #[test]
    fn a_full_queue_that_would_not_have_room_within_the_budget_drops_at_once() {
        // A quarter of 8 is 2 jobs; at 600 ms each room comes in 1.2 s, after
        // the 1 s budget. (The delay rule would catch it first with the
        // default delay: it is set high here to show this rule alone.)
        let b = Bounds { max_delay: Duration::from_secs(60), ..bounds() };
        let mut q = warm(600 * MS);
        fill_within(&mut q, 8, &b);
        assert_eq!(q.admit_to_queue(&b), Admit::Refuse(Refused::Behind(Some(FellBehind::Stalled))));
    }

    #[test]
    fn intakes_budget_comes_back_when_the_queue_is_empty() {
        let b = bounds();
        let mut q = warm(MS / 100);
        fill(&mut q, 2);
        q.waited = 900 * MS;
        q.took(true, &b);
        assert_eq!(q.waited, 900 * MS, "not empty yet");
        q.took(true, &b);
        assert_eq!(q.waited, Duration::ZERO);
    }

    #[test]
    fn room_is_told_once_a_quarter_of_a_full_queue_has_run() {
        let b = bounds();
        let mut q = warm(MS / 100);
        fill(&mut q, 8);
        let told: Vec<bool> = (0..8).map(|_| q.took(true, &b).room).collect();
        assert_eq!(told, [false, true, false, false, false, false, false, false], "at 6 of 8 queued");
        assert!(!q.took(false, &b).room, "a version change is not room");
    }

    #[test]
    fn over_its_quota_an_event_is_refused_before_anything_else_is_decided() {
        let limits = Limits { invocations_per_s: Some(10), burst: 2, ..Limits::default() };
        let t0 = Instant::now();
        let mut q = Queue::new(&limits, 1, t0);
        let qos1 = Arrival { holds_ack: true, may_spill: true, ..Arrival::default() };
        q.mean_us = 1e6; // heavy: a QoS 1 event would spill
        assert_eq!(q.admit(qos1, &bounds(), t0), Admit::Spill);
        assert_eq!(q.admit(qos1, &bounds(), t0), Admit::Spill);
        assert_eq!(q.admit(qos1, &bounds(), t0), Admit::Refuse(Refused::Quota));
        assert_eq!(q.admit(qos1, &bounds(), t0 + 100 * MS), Admit::Spill, "10 a second");
    }

    #[test]
    fn a_function_quarantined_after_failing_in_a_row_refuses_all_until_its_next_version() {
        let limits = Limits { quarantine_after: 3, ..Limits::default() };
        let now = Instant::now();
        let mut q = Queue::new(&limits, 1, now);
        assert!(!q.quarantines(2));
        assert!(q.quarantines(3));
        assert!(!q.quarantines(4), "once");
        assert_eq!(q.admit(Arrival::default(), &bounds(), now), Admit::Refuse(Refused::Quarantine));
        assert!(q.new_version(&limits, 1, now), "a new version ends it");
        assert_eq!(q.admit(Arrival::default(), &bounds(), now), Admit::Queue);
        let never = Limits { quarantine_after: 0, ..Limits::default() };
        let mut q = Queue::new(&never, 1, now);
        assert!(!q.quarantines(u64::MAX), "quarantine_after = 0 never quarantines");
    }

    #[test]
    fn a_removed_function_refuses_until_it_is_installed_again() {
        let now = Instant::now();
        let mut q = queue();
        q.removing = true;
        assert_eq!(q.admit(Arrival::default(), &bounds(), now), Admit::Refuse(Refused::Removed));
        q.new_version(&Limits::default(), 1, now);
        assert_eq!(q.admit(Arrival::default(), &bounds(), now), Admit::Queue);
    }

    #[test]
    fn a_qos1_event_spills_when_it_would_keep_the_acknowledgements_waiting() {
        let b = bounds();
        let qos1 = Arrival { holds_ack: true, may_spill: true, ..Arrival::default() };
        let qos0 = Arrival { may_spill: true, ..Arrival::default() };
        let quick = warm(MS);
        assert!(!quick.spills(qos1, &b), "a quick function with nothing queued");
        assert!(quick.spills(Arrival { stuck: true, ..qos1 }, &b), "an invocation running past a turn");
        let slow = warm(TURN);
        assert!(slow.spills(qos1, &b), "invocations that outlast a turn");
        assert!(!slow.spills(qos0, &b), "nobody waits for a QoS 0 event");
        assert!(quick.spills(qos1, &Bounds { capacity: 0, ..b.clone() }), "a full queue");
        let b = Bounds { capacity: 100, ..b };
        let mut queued = warm(MS);
        queued.jobs = 50; // 50 ms ahead of it
        assert!(queued.spills(qos1, &b));
        queued.jobs = 49;
        assert!(!queued.spills(qos1, &b));
    }

    #[test]
    fn in_a_spell_every_message_spills_and_a_timer_run_never_does() {
        let b = bounds();
        let q = warm(MS);
        let spell = Arrival { spell: true, may_spill: true, ..Arrival::default() };
        assert!(q.spills(spell, &b), "a QoS 0 message follows the spooled ones, in order");
        assert!(!q.spills(Arrival { awaited: true, ..spell }, &b));
        let slow = warm(TURN);
        let timer = Arrival { awaited: true, holds_ack: true, may_spill: true, ..Arrival::default() };
        assert!(!slow.spills(timer, &b));
        let mut q = warm(TURN);
        let no_spool = Arrival { holds_ack: true, ..Arrival::default() };
        assert_eq!(q.admit(no_spool, &b, Instant::now()), Admit::Queue, "no spool: the queue decides");
    }

    #[test]
    fn the_mean_follows_recent_turns_most() {
        let mut q = queue();
        q.ran(0, Duration::from_secs(1));
        assert_eq!(q.runs, 0, "a turn that ran nothing says nothing");
        q.ran(2, 20 * MS);
        assert_eq!(q.mean_us, 10_000.0, "the first turn sets it");
        q.ran(1, 20 * MS);
        assert_eq!(q.mean_us, 13_000.0, "then 0.7 old + 0.3 new");
        assert_eq!(q.runs, 3);
        assert!(q.heavy(), "13 ms outlasts a 5 ms turn");
    }

    #[test]
    fn extra_instances_stop_at_the_memory_budget() {
        let limits = Limits { instances: 4, memory_bytes: 1 << 20, ..Limits::default() };
        assert_eq!(lanes_for(&limits, 0, 8 << 20), 4);
        assert_eq!(lanes_for(&limits, 6 << 20, 8 << 20), 3, "2 MiB left: two extra");
        assert_eq!(lanes_for(&limits, 8 << 20, 8 << 20), 1, "the first instance is never refused");
        let one = Limits { instances: 1, ..limits };
        assert_eq!(lanes_for(&one, 1 << 30, 0), 1);
    }
}
