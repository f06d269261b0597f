//! The worker pool: plain threads that run wasm, so no invocation ever holds up
//! an I/O task. Each function lives on one worker and its events are run in the
//! order they were queued, which keeps one device's messages in arrival order.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender, TryRecvError};
use std::sync::Arc;

use super::dispatch::Job;
use super::stats::Stats;
use crate::event::Publish;
use crate::host::{FailReason, Failure, FunctionInstance, LogLevel, LogLine};

/// Sends what functions publish. Called from worker threads; may block briefly
/// when the MQTT client's queue is full (its connection task keeps draining it).
pub type Publisher = Arc<dyn Fn(Publish) -> Result<(), String> + Send + Sync>;

/// Most publishes a worker holds back while more jobs are already queued.
///
/// Handing publishes to the connection task one by one wakes that task once per
/// message, which under a burst costs more than writing the message. A worker
/// that finds another job waiting keeps its output until the queue runs dry or
/// this many are held, then hands them over together: one wake-up for the lot.
/// A quiet gateway never holds anything (the queue is empty after each job), so
/// this adds latency only under load, bounded by this many invocations.
pub const PUBLISH_BATCH: usize = 64;

/// Shared by all workers: where output goes and when to give up on the queue.
#[derive(Clone)]
pub struct WorkerContext {
    pub stats: Arc<Stats>,
    pub publisher: Publisher,
    /// Device command topics: a publish to one of these counts as a command.
    pub command_topics: Arc<HashSet<String>>,
    /// Where upstream records go; `None` when upstream delivery is not configured.
    pub outbox: Option<crate::outbox::Outbox>,
    /// Set when the shutdown grace period ends: queued jobs are dropped, not run.
    pub abandon: Arc<AtomicBool>,
    /// Each worker sends its index here when it exits.
    pub done: Sender<usize>,
}

/// Spawns one worker thread that runs `instances` until its queue closes.
pub fn spawn_worker(
    index: usize,
    mut instances: Vec<FunctionInstance>,
    queue: Receiver<Job>,
    cx: WorkerContext,
) -> std::io::Result<()> {
    std::thread::Builder::new().name(format!("wasm-worker-{index}")).spawn(move || {
        // Publishes of finished invocations not yet handed to the connection,
        // with the slot of the function that made each.
        let mut held: Vec<(usize, Publish)> = Vec::new();
        loop {
            let job = if held.is_empty() {
                match queue.recv() {
                    Ok(job) => job,
                    Err(_) => break,
                }
            } else {
                match queue.try_recv() {
                    Ok(job) => job,
                    Err(TryRecvError::Empty) => {
                        send_held(&mut held, &instances, &cx);
                        continue;
                    }
                    Err(TryRecvError::Disconnected) => break,
                }
            };
            if cx.abandon.load(Ordering::Relaxed) {
                Stats::add(&cx.stats.shutdown_dropped, 1);
                continue;
            }
            let slot = job.slot;
            run_job(&mut instances[slot], job, &cx, |publish| held.push((slot, publish)));
            if held.len() >= PUBLISH_BATCH {
                send_held(&mut held, &instances, &cx);
            }
        }
        send_held(&mut held, &instances, &cx);
        let _ = cx.done.send(index);
    })?;
    Ok(())
}

/// Hands the held publishes to the connection, in the order they were made.
fn send_held(held: &mut Vec<(usize, Publish)>, instances: &[FunctionInstance], cx: &WorkerContext) {
    let check_commands = !cx.command_topics.is_empty();
    for (slot, publish) in held.drain(..) {
        let command = check_commands && cx.command_topics.contains(&publish.topic);
        let topic = check_commands.then(|| publish.topic.clone());
        match (cx.publisher)(publish) {
            Ok(()) => {
                Stats::add(&cx.stats.publishes_out, 1);
                if command {
                    Stats::add(&cx.stats.commands_out, 1);
                }
            }
            Err(e) => {
                Stats::add(&cx.stats.publish_errors, 1);
                let function = &instances[slot].spec().name;
                tracing::warn!(%function, topic = topic.as_deref().unwrap_or(""), error = %e, "publish failed");
            }
        }
    }
}

/// Runs one job; a successful invocation's publishes go to `hold`, in order.
fn run_job(instance: &mut FunctionInstance, job: Job, cx: &WorkerContext, mut hold: impl FnMut(Publish)) {
    let event = job.event.clone();
    // A panic here would be a bug in edgefn or wasmi, not in the guest; it must
    // still cost one invocation, not the worker and every function on it.
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| instance.invoke(job.event, job.trigger)));
    let result = result.unwrap_or_else(|panic| {
        instance.reset();
        let what =
            panic.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| panic.downcast_ref::<String>().cloned());
        let reason = FailReason::Trap(format!(
            "gateway bug, please report: panic while running the function: {}",
            what.unwrap_or_default()
        ));
        Err(Failure { reason, logs: Vec::new(), fuel_used: 0, elapsed: Default::default() })
    });
    let name = &instance.spec().name;
    match result {
        Ok(done) => {
            emit_logs(name, &done.logs);
            Stats::add(&cx.stats.logs_dropped, done.logs_dropped as u64);
            Stats::add(&cx.stats.invocations_ok, 1);
            // Upstream records are accepted (durable) before the invocation's
            // publishes go out, so a command seen locally implies its records are safe.
            if let (false, Some(outbox)) = (done.upstream.is_empty(), &cx.outbox) {
                if let Err(e) = outbox.append(done.upstream) {
                    tracing::warn!(function = %name, error = %e, "upstream records refused");
                }
            }
            done.publishes.into_iter().for_each(&mut hold);
        }
        Err(failure) => {
            emit_logs(name, &failure.logs);
            cx.stats.failed(&failure.reason);
            tracing::warn!(
                function = %name,
                topic = %event.topic,
                kind = failure.reason.kind(),
                fuel_used = failure.fuel_used,
                "invocation failed: {}",
                failure.reason
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
