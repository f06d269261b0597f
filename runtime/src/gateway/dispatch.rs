//! Routing: an incoming message becomes one job per function whose trigger
//! matches, queued on the worker that owns that function. It runs inside the
//! intake connection task and never blocks: when a worker's queue is full it
//! hands the connection a [`Backpressure`] future, and the connection reads
//! nothing more until the queue has room again (the broker holds the backlog).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::mpsc::Sender;

use super::routes::Routes;
use super::stats::Stats;
use super::workers::WorkerMsg;
use crate::config::{GatewayConfig, PayloadFormat};
use crate::event::Event;
use crate::mqtt::{Backpressure, Delivery};
use crate::outbox::Outbox;

/// One invocation to run: which function, on what.
pub struct Job {
    /// The function, by name; its worker holds its instance.
    pub function: Arc<str>,
    /// Index of the trigger that matched, within the function's triggers.
    pub trigger: usize,
    pub event: Arc<Event>,
    /// The message's acknowledgement, held until this job's outcome is final
    /// (its output handed on, or the job dropped and counted). `None` for QoS 0.
    pub delivery: Option<Arc<Delivery>>,
}

/// How long intake may wait, in all, for one worker that is behind.
///
/// When a worker's queue is full, intake stops reading (the broker holds the
/// backlog) until the queue has room. A burst is absorbed whole that way. But a
/// function slower than its events would hold up every other function's events
/// for as long as it stays behind, so once intake has waited this long on one
/// worker since its queue was last empty, it stops waiting for that worker and
/// drops the worker's newest jobs instead, until it has run all it had queued.
/// Half the keep-alive at most: the intake connection sends nothing while it waits.
pub fn stall_after(keep_alive: Duration) -> Duration {
    (keep_alive / 2).min(Duration::from_secs(5))
}

/// The worker queues and what happens when one is full.
#[derive(Clone)]
struct Queues {
    senders: Arc<[Sender<WorkerMsg>]>,
    /// Per worker: microseconds intake has waited on it since its queue was last empty.
    waited_us: Arc<[AtomicU64]>,
    /// Per worker: true from when `waited_us` passed `stall_after` until its queue is empty again.
    stalled: Arc<[AtomicBool]>,
    /// Free slots a full queue must have before intake reads on: waking intake
    /// for every freed slot would cost a thread wake-up per message.
    resume_at: usize,
    stall_after: Duration,
    stats: Arc<Stats>,
    /// Per-function count of jobs dropped on a full queue (touched only on a drop).
    dropped_per_function: Arc<Mutex<HashMap<Arc<str>, u64>>>,
}

impl Queues {
    /// Forgets a worker's waiting once it has run everything queued.
    fn note_empty(&self, worker: usize) {
        let sender = &self.senders[worker];
        if sender.capacity() == sender.max_capacity() {
            self.waited_us[worker].store(0, Relaxed);
            if self.stalled[worker].swap(false, Relaxed) {
                tracing::info!(worker, "worker caught up; intake waits for it again when its queue is full");
            }
        }
    }

    fn drop_job(&self, function: &Arc<str>, topic: &str) {
        Stats::add(&self.stats.queue_full_dropped, 1);
        let mut counts = self.dropped_per_function.lock().unwrap_or_else(|p| p.into_inner());
        let count = counts.entry(function.clone()).or_insert(0);
        *count += 1;
        // Log the first drop and then every 1000th, not every one.
        if *count % 1000 == 1 {
            tracing::warn!(topic, function = %function, dropped = *count, "worker queue full; dropping newest event");
        }
    }

    /// Waits for room for each blocked job, within each worker's waiting budget.
    async fn wait_for_room(self, blocked: Vec<(usize, Job)>) {
        for (worker, job) in blocked {
            let budget = self.stall_after.saturating_sub(Duration::from_micros(self.waited_us[worker].load(Relaxed)));
            if self.stalled[worker].load(Relaxed) || budget.is_zero() {
                self.drop_job(&job.function, job.event.subject());
                continue;
            }
            let started = tokio::time::Instant::now();
            let room = tokio::time::timeout(budget, self.senders[worker].reserve_many(self.resume_at)).await;
            self.waited_us[worker].fetch_add(started.elapsed().as_micros() as u64, Relaxed);
            match room {
                Ok(Ok(mut room)) => room.next().expect("reserved at least one slot").send(WorkerMsg::Job(job)),
                Ok(Err(_closed)) => self.drop_job(&job.function, job.event.subject()),
                Err(_timeout) => {
                    self.stalled[worker].store(true, Relaxed);
                    tracing::warn!(
                        worker,
                        waited_ms = self.stall_after.as_millis() as u64,
                        "worker stayed behind; dropping its newest events until it has run all it has queued \
                         (gateway.queue_capacity)"
                    );
                    self.drop_job(&job.function, job.event.subject());
                }
            }
        }
    }
}

/// Routes messages to worker queues.
pub struct Dispatcher {
    /// The table in force; replaced between two messages when one arrives on `updates`.
    routes: Arc<Routes>,
    updates: std::sync::mpsc::Receiver<Arc<Routes>>,
    queues: Queues,
    stats: Arc<Stats>,
    /// Reused match buffers: routing allocates nothing per message but the event.
    fn_matches: Vec<usize>,
    dev_matches: Vec<usize>,
    fwd_matches: Vec<usize>,
    /// Where forwarded messages go.
    outbox: Option<Outbox>,
    forward_refused: u64,
    unrouted_logged: bool,
    /// Topic and payload bytes a message may have to reach functions or the outbox.
    max_message_bytes: usize,
}

impl Dispatcher {
    pub fn new(
        config: &GatewayConfig,
        routes: Arc<Routes>,
        updates: std::sync::mpsc::Receiver<Arc<Routes>>,
        senders: Vec<Sender<WorkerMsg>>,
        stats: Arc<Stats>,
        outbox: Option<Outbox>,
    ) -> Self {
        let queues = Queues {
            waited_us: senders.iter().map(|_| AtomicU64::new(0)).collect(),
            stalled: senders.iter().map(|_| AtomicBool::new(false)).collect(),
            senders: senders.into(),
            resume_at: (config.gateway.queue_capacity / 4).max(1),
            stall_after: stall_after(config.broker.keep_alive),
            stats: stats.clone(),
            dropped_per_function: Default::default(),
        };
        Dispatcher {
            routes,
            updates,
            queues,
            stats,
            fn_matches: Vec::new(),
            dev_matches: Vec::new(),
            fwd_matches: Vec::new(),
            outbox,
            forward_refused: 0,
            unrouted_logged: false,
            max_message_bytes: config.broker.max_packet_bytes,
        }
    }

    /// Routes one message. Never blocks: when a worker's queue is full, returns
    /// what the connection must wait for before reading the next message.
    /// `delivery` is acknowledged once every job and forward made of the message
    /// is done with it (each holds a clone); at once when there are none.
    pub fn dispatch(
        &mut self,
        topic_name: String,
        payload: &[u8],
        delivery: Option<Arc<Delivery>>,
    ) -> Option<Backpressure> {
        while let Ok(routes) = self.updates.try_recv() {
            self.routes = routes;
        }
        let routes = self.routes.clone();
        let topic = topic_name.as_str();
        self.fn_matches.clear();
        routes.functions.matches(topic, &mut self.fn_matches);
        self.fwd_matches.clear();
        routes.forwards.matches(topic, &mut self.fwd_matches);
        if self.fn_matches.is_empty() && self.fwd_matches.is_empty() {
            // A subscription this configuration no longer has, kept by the
            // broker in the persistent session: nothing here wants it.
            Stats::add(&self.stats.events_unrouted, 1);
            if !self.unrouted_logged {
                self.unrouted_logged = true;
                tracing::info!(topic, "message on a topic no function or forward wants (a subscription left in the broker's session by an earlier configuration?); acknowledged and counted in events_unrouted");
            }
            return None;
        }
        Stats::add(&self.stats.events_in, 1);
        if topic.len() + payload.len() > self.max_message_bytes {
            let before = self.stats.events_oversized.fetch_add(1, Relaxed);
            if before % 1000 == 0 {
                tracing::warn!(
                    topic,
                    bytes = payload.len(),
                    limit = self.max_message_bytes,
                    dropped = before + 1,
                    "message larger than broker.max_packet_bytes; dropped, not delivered"
                );
            }
            return None;
        }
        self.forward(&routes, topic, payload, &delivery);
        // One job per function, for the first of its triggers that matched (a
        // function's targets are adjacent, in trigger order).
        self.fn_matches.sort_unstable();
        self.fn_matches.dedup_by(|a, b| routes.targets[*a].function == routes.targets[*b].function);
        self.dev_matches.clear();
        routes.devices.matches(topic, &mut self.dev_matches);
        let device = self.dev_matches.iter().min().copied();
        if let Some(d) = device {
            if routes.device_formats[d] == PayloadFormat::Json
                && serde_json::from_slice::<serde::de::IgnoredAny>(payload).is_err()
            {
                Stats::add(&self.stats.events_malformed, 1);
                tracing::warn!(topic, device = %routes.device_ids[d], "payload is not JSON; not delivered");
                return None;
            }
        }
        let event =
            Arc::new(Event::message(topic_name, payload.to_vec(), device.map(|d| routes.device_ids[d].clone())));
        let mut blocked = Vec::new();
        for &target in &self.fn_matches {
            let target = &routes.targets[target];
            let worker = target.worker;
            let job = Job {
                function: target.function.clone(),
                trigger: target.trigger,
                event: event.clone(),
                delivery: delivery.clone(),
            };
            let queues = &self.queues;
            queues.note_empty(worker);
            match queues.senders[worker].try_send(WorkerMsg::Job(job)) {
                Ok(()) => {}
                Err(TrySendError::Full(WorkerMsg::Job(job))) if !queues.stalled[worker].load(Relaxed) => {
                    blocked.push((worker, job))
                }
                Err(TrySendError::Full(_) | TrySendError::Closed(_)) => {
                    queues.drop_job(&target.function, event.subject())
                }
            }
        }
        if blocked.is_empty() {
            return None;
        }
        Some(Box::pin(self.queues.clone().wait_for_room(blocked)))
    }
}

impl Dispatcher {
    /// Queues the message for the outbox once per stream it is forwarded to; its
    /// acknowledgement waits until the records are durable. Never blocks: a full
    /// outbox queue refuses it (the outbox counts it).
    fn forward(&mut self, routes: &Routes, topic: &str, payload: &[u8], delivery: &Option<Arc<Delivery>>) {
        let Some(outbox) = &self.outbox else { return };
        self.fwd_matches.sort_unstable();
        self.fwd_matches.dedup_by(|a, b| routes.forward_streams[*a] == routes.forward_streams[*b]);
        for &rule in &self.fwd_matches {
            let record = vec![(routes.forward_streams[rule].clone(), payload.to_vec())];
            let hold = delivery.clone().map(|d| Box::new(d) as Box<dyn Send>);
            if let Err(e) = outbox.try_append_holding(record, hold) {
                self.forward_refused += 1;
                if self.forward_refused % 1000 == 1 {
                    tracing::warn!(topic, error = %e, refused = self.forward_refused, "forwarded message not accepted by the outbox");
                }
            }
        }
    }
}
