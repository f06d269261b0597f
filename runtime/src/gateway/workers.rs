//! The worker pool: plain threads that run wasm, so no invocation ever holds up
//! an I/O task. Each takes turns at the functions the scheduler has ready
//! (`scheduler/`: which function runs where and in what order) and hands on
//! what their invocations made.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use super::quota::TokenBucket;
use super::scheduler::{Item, Scheduler, Turn, HOLD_INVOCATIONS, TURN};
use super::stats::Stats;
use super::status::FunctionCounters;
use crate::event::Publish;
use crate::host::{FailReason, Failure, FunctionInstance, Invocation, LogLevel, LogLine};
use crate::mqtt::Tag;
use crate::sources::{Job, Receipt};
use rumqttc::QoS;

/// Shared by all workers: where output goes and when to give up on the queue.
#[derive(Clone)]
pub struct WorkerContext {
    pub stats: Arc<Stats>,
    /// The output connection's queue. Pushing may block while it is full (the
    /// connection task keeps draining it; what expires meanwhile makes room).
    pub output: crate::mqtt::Outgoing,
    /// Device command topics: a publish to one of these counts as a command
    /// (replaced when the configuration is reloaded).
    pub command_topics: Arc<RwLock<Arc<HashSet<String>>>>,
    /// Where upstream records go; `None` when upstream delivery is not configured.
    pub outbox: Option<crate::outbox::Outbox>,
    /// Set when the shutdown grace period ends: queued jobs are dropped, not run.
    pub abandon: Arc<AtomicBool>,
    /// Each worker sends its index here when it exits.
    pub done: Sender<usize>,
    /// Where commands waiting for confirmation go once sent.
    pub devices: Option<crate::sources::devices::Devices>,
    /// The functions whose invocations are being recorded (`edgefn record`).
    pub recordings: Arc<super::recorder::Recorders>,
}

/// A worker's native stack. wasmi runs a straight run of wasm instructions as
/// handlers that tail-call each other: constant stack when the handlers are
/// optimized, but in a debug build (the tests') they are compiled into this
/// crate unoptimized and every instruction of a long straight run takes a frame:
/// a C function with wasi-libc's `printf` overflowed 2 MiB. Address space only:
/// untouched pages cost no memory.
const WORKER_STACK: usize = if cfg!(debug_assertions) { 256 << 20 } else { 8 << 20 };

/// Spawns one worker thread that runs functions' turns until the scheduler closes.
pub fn spawn_worker(index: usize, scheduler: Arc<Scheduler>, cx: WorkerContext) -> std::io::Result<()> {
    std::thread::Builder::new().name(format!("wasm-worker-{index}")).stack_size(WORKER_STACK).spawn(move || {
        let mut held = Held::default();
        let mut denials = HashMap::new();
        while let Some(mut turn) = scheduler.next_turn() {
            let started = Instant::now();
            while let Some(item) = scheduler.pop(&turn) {
                let job = match item {
                    Item::Job(job) => job,
                    Item::Replace(instance) => {
                        // What the old version made is handed on before the new one runs.
                        held.release(&cx);
                        turn.instance = Some(instance);
                        for counter in
                            [&turn.counters.version_ok, &turn.counters.version_failed, &turn.counters.failing_in_a_row]
                        {
                            counter.store(0, Ordering::Relaxed);
                        }
                        continue;
                    }
                    Item::Remove => {
                        held.release(&cx);
                        turn.instance = None;
                        continue;
                    }
                };
                if cx.abandon.load(Ordering::Relaxed) {
                    // Not acknowledged (the gateway stopped acknowledging before it
                    // abandoned the queue): the broker delivers it again after the
                    // restart, or its spool keeps it (counted there): its receipt is
                    // never released, so the spool never consumes it (nor, in order,
                    // anything after it).
                    if job.spooled {
                        std::mem::forget(job.delivery);
                        continue;
                    }
                    Stats::add(&cx.stats.shutdown_dropped, 1);
                    Stats::add(&turn.counters.dropped_shutdown, 1);
                    continue;
                }
                let Some(instance) = turn.instance.as_deref_mut() else {
                    // Cannot happen: no job is queued behind a removal. Counted, not silent.
                    Stats::add(&cx.stats.unknown_function_dropped, 1);
                    tracing::error!(function = %job.function, "gateway bug: a job for a function already removed");
                    continue;
                };
                let delivery = job.delivery.clone();
                let began = Instant::now();
                let done = run_job(instance, job, &cx, &turn.counters, &turn.logs, &mut denials);
                let took = began.elapsed();
                turn.durations.observe(took);
                turn.busy += took;
                turn.ran += 1;
                // Acknowledged once this invocation's output has been handed on.
                held.add(turn.name.clone(), done, delivery);
                if let Some(state) = instance.state() {
                    held.add_state(state);
                }
                if held.invocations >= HOLD_INVOCATIONS || started.elapsed() >= TURN || quarantine_due(&turn) {
                    break;
                }
            }
            // A turn's output goes out before anyone else's invocation runs.
            scheduler.invocations_done(&turn);
            held.release(&cx);
            scheduler.give_back(turn);
        }
        let _ = cx.done.send(index);
    })?;
    Ok(())
}

/// Whether the function just failed `limits.quarantine_after` times in a row:
/// the turn ends there, and the scheduler quarantines it.
fn quarantine_due(turn: &Turn) -> bool {
    let after = turn.instance.as_ref().map_or(0, |i| i.spec().limits.quarantine_after);
    after > 0 && turn.counters.failing_in_a_row.load(Ordering::Relaxed) >= u64::from(after)
}

/// The output of finished invocations not yet released, in the order it was made.
#[derive(Default)]
struct Held {
    /// Jobs run since the last release, failed ones included (their acknowledgements wait too).
    invocations: usize,
    /// Upstream records, and the name of each function that sent some.
    records: Vec<(String, Vec<u8>)>,
    record_functions: Vec<Arc<str>>,
    /// Publishes, with the function that made each and whether that invocation
    /// also sent upstream records (then they go out only if the records are safe).
    publishes: Vec<(Arc<str>, Publish, bool)>,
    /// The acknowledgements of the held jobs' messages: released (dropped) only
    /// after their records are durable and their publishes handed to the client.
    deliveries: Vec<Receipt>,
    /// The state stores of the held jobs' functions: synced before anything else
    /// of theirs leaves the gateway.
    states: Vec<Arc<crate::state::Store>>,
    /// Commands waiting for confirmation, by function: waited on once sent.
    confirmations: Vec<(Arc<str>, Vec<crate::host::Confirm>)>,
}

impl Held {
    /// Holds one finished job: its output if it succeeded, and its acknowledgement.
    fn add(&mut self, function: Arc<str>, done: Option<Invocation>, delivery: Option<Receipt>) {
        self.invocations += 1;
        self.deliveries.extend(delivery);
        let Some(done) = done else { return };
        let has_records = !done.upstream.is_empty();
        if has_records {
            self.records.extend(done.upstream);
            self.record_functions.push(function.clone());
        }
        if !done.confirmations.is_empty() {
            self.confirmations.push((function.clone(), done.confirmations));
        }
        self.publishes.extend(done.publishes.into_iter().map(|p| (function.clone(), p, has_records)));
    }

    fn add_state(&mut self, state: Arc<crate::state::Store>) {
        if !self.states.iter().any(|s| Arc::ptr_eq(s, &state)) {
            self.states.push(state);
        }
    }

    /// Syncs the state the held invocations changed, appends the held records
    /// (waiting until they are durable), then hands the
    /// publishes to the connection: a command seen on the broker implies the
    /// records of the same invocation are safe.
    fn release(&mut self, cx: &WorkerContext) {
        self.invocations = 0;
        // Nothing that depends on a state change (a command, a record, the
        // acknowledgement of the event that made it) is seen before it is durable.
        for state in self.states.drain(..) {
            if let Err(e) = state.sync() {
                // The kernel holds the change (a kill -9 keeps it); a power cut may not.
                tracing::error!(error = %e, "function state could not be synced to disk");
            }
        }
        let mut records_refused = false;
        if let (false, Some(outbox)) = (self.records.is_empty(), &cx.outbox) {
            if let Err(e) = outbox.append(std::mem::take(&mut self.records)) {
                records_refused = true;
                self.record_functions.sort_unstable();
                self.record_functions.dedup();
                for function in &self.record_functions {
                    tracing::warn!(%function, error = %e, "upstream records refused; the same invocations' publishes are withheld");
                }
            }
        }
        self.records.clear();
        self.record_functions.clear();
        let command_topics = crate::sync::read(&cx.command_topics).clone();
        let check_commands = !command_topics.is_empty();
        let mut batch = Vec::with_capacity(self.publishes.len());
        let mut commands = Vec::with_capacity(self.publishes.len());
        for (function, publish, has_records) in self.publishes.drain(..) {
            if has_records && records_refused {
                // A command seen on the broker must imply its invocation's records are safe.
                Stats::add(&cx.stats.publishes_withheld, 1);
                continue;
            }
            commands.push(check_commands && command_topics.contains(&publish.topic));
            let qos = match publish.qos {
                0 => QoS::AtMostOnce,
                1 => QoS::AtLeastOnce,
                _ => QoS::ExactlyOnce,
            };
            let mut out = rumqttc::Publish::new(publish.topic, qos, publish.payload);
            out.retain = publish.retain;
            batch.push((out, Tag { expires_ms: publish.expires_ms, function: Some(function) }));
        }
        // Waited on before they leave, so no echo can come first; a command
        // withheld above, or refused below, times out.
        for (function, confirms) in self.confirmations.drain(..) {
            if let Some(devices) = &cx.devices {
                devices.expect(&function, confirms);
            }
        }
        // Refused only once the connection is closing, so the refused are the last.
        let refused = cx.output.push_all(batch);
        let queued = commands.len() - refused;
        Stats::add(&cx.stats.publishes_out, queued as u64);
        Stats::add(&cx.stats.commands_out, commands[..queued].iter().filter(|c| **c).count() as u64);
        if refused > 0 {
            Stats::add(&cx.stats.publish_errors, refused as u64);
            tracing::warn!(refused, "publishes made after the output connection began to close; not sent");
        }
        self.deliveries.clear();
    }
}

/// Runs one job; returns a successful invocation's output.
/// `denials`: per function, calls its capabilities refused so far (for the log's pace).
fn run_job(
    instance: &mut FunctionInstance,
    job: Job,
    cx: &WorkerContext,
    counters: &FunctionCounters,
    log_quota: &Mutex<TokenBucket>,
    denials: &mut HashMap<Arc<str>, u64>,
) -> Option<Invocation> {
    let function = job.function.clone();
    let event = job.event.clone();
    let answer = job.answer.clone();
    let recording = if cx.recordings.any() { cx.recordings.get(&function, Instant::now()) } else { None };
    let trigger = job.trigger.clone();
    let tape = recording.as_ref().map(|_| crate::host::Tape::recording());
    // A panic here would be a bug in edgefn or wasmi, not in the guest; it must
    // still cost one invocation, not the worker and every function on it.
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        instance.invoke_on_tape(job.event, job.trigger, tape)
    }));
    let (result, tape) = match result {
        Ok((result, tape)) => (Ok(result), tape),
        Err(panic) => (Err(panic), None),
    };
    let result = result.unwrap_or_else(|panic| {
        instance.reset();
        let what =
            panic.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| panic.downcast_ref::<String>().cloned());
        let reason = FailReason::Trap(format!(
            "gateway bug, please report: panic while running the function: {}",
            what.unwrap_or_default()
        ));
        Err(Failure {
            reason,
            logs: Vec::new(),
            logs_dropped: 0,
            fuel_used: 0,
            elapsed: Default::default(),
            denied: Vec::new(),
            outbox_refused: 0,
        })
    });
    let fuel = match &result {
        Ok(done) => done.fuel_used,
        Err(failure) => failure.fuel_used,
    };
    Stats::add(&counters.fuel, fuel);
    if let (Some(recording), Some(tape)) = (recording, tape) {
        recording.write(&cx.recordings, |n| crate::recording::Entry {
            n,
            trigger: trigger.to_string(),
            event: crate::recording::RecordedEvent::of(&event),
            answers: tape.answers,
            effects: tape.effects,
            fuel,
        });
    }
    let mut result = result;
    if let Some(answer) = &answer {
        use crate::sources::http::Outcome;
        answer.set(match &mut result {
            Ok(done) => Outcome::Ran(done.reply.take()),
            Err(failure) => Outcome::Failed(failure.reason.to_string()),
        });
    }
    let name = &instance.spec().name;
    let denied = match &result {
        Ok(done) => &done.denied,
        Err(failure) => &failure.denied,
    };
    if !denied.is_empty() {
        Stats::add(&cx.stats.capability_denied, denied.len() as u64);
        let count = denials.entry(function).or_insert(0);
        let before = *count;
        *count += denied.len() as u64;
        // A function's first denial, then about one in a thousand: a function
        // that keeps trying must not flood the journal.
        if before == 0 || before / 1000 != *count / 1000 {
            tracing::warn!(
                function = %name,
                denied = %denied.join(", "),
                total = *count,
                "call refused: not in the function's [functions.allow]"
            );
        }
    }
    // The function's own lines and its failure are written inside a span that
    // says which invocation they belong to; an invocation with nothing to say
    // (the common case) costs no span.
    let says_something = match &result {
        Ok(done) => !done.logs.is_empty(),
        Err(_) => true,
    };
    let span = says_something.then(|| {
        let span = tracing::info_span!(
            "invocation",
            function = %name,
            module = %instance.module_name(),
            trigger = %event.kind.name(),
            subject = %event.subject(),
            device = tracing::field::Empty,
            request = tracing::field::Empty,
        );
        if let Some(device) = &event.device {
            span.record("device", tracing::field::display(device));
        }
        if let crate::event::EventKind::Http(request) = &event.kind {
            span.record("request", tracing::field::display(&request.id));
        }
        span
    });
    let _inside = span.as_ref().map(|s| s.enter());
    match result {
        Ok(done) => {
            emit_within_quota(name, &done.logs, done.logs_dropped, log_quota, counters, cx);
            Stats::add(&cx.stats.invocations_ok, 1);
            Stats::add(&counters.ok, 1);
            Stats::add(&counters.version_ok, 1);
            counters.failing_in_a_row.store(0, Ordering::Relaxed);
            Some(done)
        }
        Err(failure) if failure.outbox_refused > 0 && matches!(failure.reason, FailReason::ErrorCode(_)) => {
            // It gave up because its records were refused (a full disk or
            // outbox): the invocation failed, the function did not. Neither
            // quarantine nor rollback counts it, and its run of failures stands.
            emit_within_quota(name, &failure.logs, failure.logs_dropped, log_quota, counters, cx);
            Stats::add(&cx.stats.invocations_failed, 1);
            Stats::add(&cx.stats.failed_outbox_refused, 1);
            Stats::add(&counters.failed, 1);
            tracing::debug!(
                function = %name,
                topic = %event.subject(),
                "invocation failed after the outbox refused its records ({}): not the function's fault",
                failure.reason
            );
            None
        }
        Err(failure) => {
            emit_within_quota(name, &failure.logs, failure.logs_dropped, log_quota, counters, cx);
            cx.stats.failed(&failure.reason);
            Stats::add(&counters.failed, 1);
            Stats::add(&counters.version_failed, 1);
            Stats::add(&counters.failing_in_a_row, 1);
            tracing::warn!(
                function = %name,
                topic = %event.subject(),
                kind = failure.reason.kind(),
                fuel_used = failure.fuel_used,
                "invocation failed: {}",
                failure.reason
            );
            None
        }
    }
}

/// Writes the log lines the function's quota allows; counts the rest (and
/// those past the per-invocation budget, `already_dropped`) in `logs_dropped`.
fn emit_within_quota(
    function: &str,
    logs: &[LogLine],
    already_dropped: u32,
    quota: &Mutex<TokenBucket>,
    counters: &FunctionCounters,
    cx: &WorkerContext,
) {
    let allowed = match logs.is_empty() {
        true => 0,
        false => {
            let now = Instant::now();
            let mut quota = crate::sync::lock(quota);
            logs.iter().take_while(|_| quota.take(now)).count()
        }
    };
    emit_logs(function, &logs[..allowed]);
    let dropped = (logs.len() - allowed) as u64 + u64::from(already_dropped);
    if dropped > 0 {
        Stats::add(&cx.stats.logs_dropped, dropped);
        let before = counters.logs_dropped.fetch_add(dropped, Ordering::Relaxed);
        // The first time, then about once in ten thousand lines.
        if before == 0 || before / 10_000 != (before + dropped) / 10_000 {
            tracing::warn!(
                function,
                dropped = before + dropped,
                "log lines over the function's quota (limits.log_lines_per_s, 32 an invocation) dropped"
            );
        }
    }
}

/// Writes a function's log lines under target `edgefn::function`.
pub fn emit_logs(function: &str, logs: &[LogLine]) {
    for line in logs {
        let msg = &line.message;
        match line.level {
            LogLevel::Error => tracing::error!(target: "edgefn::function", function, "{msg}"),
            LogLevel::Warn => tracing::warn!(target: "edgefn::function", function, "{msg}"),
            LogLevel::Info => tracing::info!(target: "edgefn::function", function, "{msg}"),
            LogLevel::Debug => tracing::debug!(target: "edgefn::function", function, "{msg}"),
            LogLevel::Trace => tracing::trace!(target: "edgefn::function", function, "{msg}"),
        }
    }
}
