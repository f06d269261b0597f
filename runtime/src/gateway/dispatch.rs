//! Routing: an incoming message becomes one job per function whose trigger
//! matches, queued on the worker that owns that function. Synchronous and
//! non-blocking, because it runs inside the MQTT connection task.

use std::sync::atomic::AtomicU64;
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::Arc;

use super::stats::Stats;
use crate::config::{GatewayConfig, PayloadFormat};
use crate::event::{unix_ms, Event};
use crate::outbox::Outbox;
use crate::topic::Router;

/// One invocation to run: which function (by its slot on the worker), on what.
pub struct Job {
    /// Index of the function among its worker's instances.
    pub slot: usize,
    /// Index of the trigger that matched, within the function's triggers.
    pub trigger: usize,
    pub event: Arc<Event>,
}

/// Where a function runs: its worker and its slot there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    pub worker: usize,
    pub slot: usize,
}

/// Spreads functions over `workers` round-robin, in configuration order.
pub fn place(functions: usize, workers: usize) -> Vec<Placement> {
    let mut next_slot = vec![0; workers];
    (0..functions)
        .map(|i| {
            let worker = i % workers;
            let slot = next_slot[worker];
            next_slot[worker] += 1;
            Placement { worker, slot }
        })
        .collect()
}

/// Routes messages to worker queues.
pub struct Dispatcher {
    /// Trigger filters -> (function index, trigger index).
    functions: Router<(usize, usize)>,
    /// Telemetry filters -> device index.
    devices: Router<usize>,
    device_ids: Vec<Arc<str>>,
    device_formats: Vec<PayloadFormat>,
    placements: Vec<Placement>,
    queues: Vec<SyncSender<Job>>,
    stats: Arc<Stats>,
    /// Per-function count of jobs dropped on a full queue.
    dropped_per_function: Vec<AtomicU64>,
    /// Reused match buffers: routing allocates nothing per message but the event.
    fn_matches: Vec<(usize, usize)>,
    dev_matches: Vec<usize>,
    /// Forwarded topics -> stream, and the outbox they go to.
    forwards: Router<usize>,
    forward_streams: Vec<String>,
    fwd_matches: Vec<usize>,
    outbox: Option<Outbox>,
    forward_refused: u64,
}

impl Dispatcher {
    pub fn new(
        config: &GatewayConfig,
        placements: Vec<Placement>,
        queues: Vec<SyncSender<Job>>,
        stats: Arc<Stats>,
        outbox: Option<Outbox>,
    ) -> Self {
        let mut forwards = Router::new();
        let mut forward_streams = Vec::new();
        for (i, f) in config.upstream.iter().flat_map(|u| &u.forward).enumerate() {
            for filter in &f.topics {
                forwards.insert(filter, i);
            }
            forward_streams.push(f.stream.clone());
        }
        let mut functions = Router::new();
        for (f, spec) in config.functions.iter().enumerate() {
            for (t, filter) in spec.triggers.iter().enumerate() {
                functions.insert(filter, (f, t));
            }
        }
        let mut devices = Router::new();
        for (d, device) in config.devices.iter().enumerate() {
            for filter in &device.telemetry {
                devices.insert(filter, d);
            }
        }
        Dispatcher {
            functions,
            devices,
            device_ids: config.devices.iter().map(|d| Arc::from(d.id.as_str())).collect(),
            device_formats: config.devices.iter().map(|d| d.format).collect(),
            dropped_per_function: (0..config.functions.len()).map(|_| AtomicU64::new(0)).collect(),
            placements,
            queues,
            stats,
            fn_matches: Vec::new(),
            dev_matches: Vec::new(),
            forwards,
            forward_streams,
            fwd_matches: Vec::new(),
            outbox,
            forward_refused: 0,
        }
    }

    /// Routes one message. Never blocks: a full queue drops the job and counts it.
    pub fn dispatch(&mut self, topic_name: String, payload: &[u8]) {
        let topic = topic_name.as_str();
        self.fn_matches.clear();
        self.functions.matches(topic, &mut self.fn_matches);
        self.fwd_matches.clear();
        self.forwards.matches(topic, &mut self.fwd_matches);
        if self.fn_matches.is_empty() && self.fwd_matches.is_empty() {
            return;
        }
        Stats::add(&self.stats.events_in, 1);
        self.forward(topic, payload);
        // One job per function, for the first of its triggers that matched.
        self.fn_matches.sort_unstable();
        self.fn_matches.dedup_by_key(|m| m.0);
        self.dev_matches.clear();
        self.devices.matches(topic, &mut self.dev_matches);
        let device = self.dev_matches.iter().min().copied();
        if let Some(d) = device {
            if self.device_formats[d] == PayloadFormat::Json
                && serde_json::from_slice::<serde::de::IgnoredAny>(payload).is_err()
            {
                Stats::add(&self.stats.events_malformed, 1);
                tracing::warn!(topic, device = %self.device_ids[d], "payload is not JSON; not delivered");
                return;
            }
        }
        let event = Arc::new(Event {
            topic: topic_name,
            payload: payload.to_vec(),
            device: device.map(|d| self.device_ids[d].clone()),
            received_ms: unix_ms(),
        });
        for &(function, trigger) in &self.fn_matches {
            let placement = self.placements[function];
            let job = Job { slot: placement.slot, trigger, event: event.clone() };
            match self.queues[placement.worker].try_send(job) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                    Stats::add(&self.stats.queue_full_dropped, 1);
                    let before = self.dropped_per_function[function].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    // Log the first drop and then every 1000th, not every one.
                    if before % 1000 == 0 {
                        tracing::warn!(
                            topic = %event.topic,
                            function,
                            dropped = before + 1,
                            "worker queue full; dropping newest event (gateway.queue_capacity)"
                        );
                    }
                }
            }
        }
    }
}

impl Dispatcher {
    /// Queues the message for the outbox once per stream it is forwarded to.
    /// Never blocks: a full outbox queue refuses it (the outbox counts it).
    fn forward(&mut self, topic: &str, payload: &[u8]) {
        let Some(outbox) = &self.outbox else { return };
        self.fwd_matches.sort_unstable();
        self.fwd_matches.dedup_by(|a, b| self.forward_streams[*a] == self.forward_streams[*b]);
        for &rule in &self.fwd_matches {
            let record = vec![(self.forward_streams[rule].clone(), payload.to_vec())];
            if let Err(e) = outbox.try_append(record) {
                self.forward_refused += 1;
                if self.forward_refused % 1000 == 1 {
                    tracing::warn!(topic, error = %e, refused = self.forward_refused, "forwarded message not accepted by the outbox");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placement_is_round_robin_with_dense_slots() {
        let p = place(5, 2);
        let pairs: Vec<_> = p.iter().map(|p| (p.worker, p.slot)).collect();
        assert_eq!(pairs, [(0, 0), (1, 0), (0, 1), (1, 1), (0, 2)]);
    }
}
