use super::slot::lane_of;
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
        answer: None,
    }
}

fn scheduler(capacity: usize, max_delay_ms: u64) -> (Arc<Scheduler>, Arc<Stats>) {
    scheduler_with(capacity, max_delay_ms, None)
}

fn scheduler_with(capacity: usize, max_delay_ms: u64, spool: Option<SpoolConfig>) -> (Arc<Scheduler>, Arc<Stats>) {
    let stats = Arc::new(Stats::default());
    let limits = QueueLimits {
        bounds: Bounds {
            capacity,
            max_delay: Duration::from_millis(max_delay_ms),
            stall_after: Duration::from_millis(100),
        },
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
    let lanes = |name: &str| s.lock().slots[name].queue.lanes;
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
    for n in 0..policy::WARM_RUNS as usize {
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
    let spool = SpoolConfig { root: dir.to_path_buf(), max_bytes: 1 << 20, max_event_bytes: 4096, min_free_bytes: 0 };
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
fn events_spooled_before_a_restart_by_a_trigger_the_new_version_lacks_are_dropped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let acked = Arc::new(AtomicU64::new(0));
    {
        let (s, _) = spooling_scheduler(dir.path());
        s.install(instance("slow", 1));
        make_slow(&s, "slow");
        spool_opened(&s, "slow");
        for n in 1..=20 {
            // Every other one by a second trigger of the version running then.
            let trigger = if n % 2 == 0 { "u/#" } else { "t/#" };
            assert!(queued(s.offer(Job { trigger: trigger.into(), ..qos1_job("slow", n, &acked) })));
        }
        s.close();
        s.close_spools();
    }
    // The version at the next start has only t/#: the u/# events do not run.
    let (s, stats) = spooling_scheduler(dir.path());
    s.install(instance("slow", 2));
    let odd: Vec<String> = (1..=20).step_by(2).map(|n| format!("t/{n}@v2")).collect();
    assert_eq!(run_jobs(&s, 10), odd);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while s.status()["slow"].spool_depth > 0 {
        assert!(std::time::Instant::now() < deadline, "the spool never emptied: {:?}", s.status()["slow"]);
        std::thread::sleep(Duration::from_millis(1));
    }
    let status = &s.status()["slow"];
    assert_eq!((status.dropped_orphaned, status.dropped_spool, status.ok), (10, 0, 0), "{status:?}");
    assert_eq!(stats.spool_orphaned.load(Relaxed), 10);
    // Events spooled in this run are not checked: they run on the version in
    // force at their place in the queue (the test below).
    assert_eq!(s.status()["slow"].dropped(), 10);
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
