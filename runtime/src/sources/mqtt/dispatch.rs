//! Routing: an incoming message becomes one job per function whose trigger
//! matches, offered to that function's queue. It runs inside the intake
//! connection task and never blocks: when a function's queue is full it hands
//! the connection a [`Backpressure`] future, and the connection reads nothing
//! more until the queue has room again (the broker holds the backlog), for
//! `stall_after` at most.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use super::routes::Routes;
use crate::config::{GatewayConfig, PayloadFormat};
use crate::event::Event;
use crate::mqtt::{Backpressure, Delivery};
use crate::outbox::{Outbox, Then};
use crate::sources::devices::discovery::Discovery;
use crate::sources::devices::{announcement, Devices, Heard};
use crate::sources::{Job, Offer, Receipt, Sink, Tally};

/// How long intake waits for room in one function's full queue, in all since
/// it was last empty, before that function counts as behind (its newest events
/// dropped until it has caught up).
/// Half the keep-alive at most: the intake connection sends nothing while it waits.
pub fn stall_after(keep_alive: Duration) -> Duration {
    (keep_alive / 2).min(Duration::from_secs(5))
}

/// Waits for room for each job whose function's queue was full, each within
/// what is left of its function's waiting budget, and offers it again.
async fn wait_for_room(scheduler: Arc<dyn Sink>, blocked: Vec<(Job, Arc<Notify>, Duration)>) {
    for (mut job, mut room, mut budget) in blocked {
        loop {
            let started = tokio::time::Instant::now();
            let _ = tokio::time::timeout(budget, room.notified()).await;
            scheduler.waited(&job.function, started.elapsed());
            // Offered again with or without room: the scheduler then drops it
            // (budget spent) or takes it.
            match scheduler.offer(job) {
                Offer::Full(again, notify, left) => (job, room, budget) = (again, notify, left),
                Offer::Queued | Offer::Dropped => break,
            }
        }
    }
}

/// Routes messages to function queues.
pub struct Dispatcher {
    /// The table in force; replaced between two messages when one arrives on `updates`.
    routes: Arc<Routes>,
    updates: std::sync::mpsc::Receiver<Arc<Routes>>,
    scheduler: Arc<dyn Sink>,
    /// Reused match buffers: routing allocates nothing per message but the event.
    fn_matches: Vec<usize>,
    dev_matches: Vec<usize>,
    fwd_matches: Vec<usize>,
    ann_matches: Vec<usize>,
    /// Where forwarded messages go.
    outbox: Option<Outbox>,
    forward_refused: u64,
    /// Oversized messages dropped, for the pace of their log line.
    oversized: u64,
    unrouted_logged: bool,
    /// Topic and payload bytes a message may have to reach functions or the outbox.
    max_message_bytes: usize,
    /// Whether the scheduler holds worker wake-ups for this burst of messages.
    holding_wakes: bool,
    /// The devices' availability and last seen.
    devices: Devices,
    /// Where the last values read from each device are kept.
    directory: Option<Arc<crate::profile::Directory>>,
    /// Availability payloads not understood, for the pace of their log line.
    unreadable: u64,
    /// Where announcements on Home Assistant's discovery prefix go, if read.
    discovery: Option<Arc<Discovery>>,
}

impl Dispatcher {
    pub fn new(
        config: &GatewayConfig,
        routes: Arc<Routes>,
        updates: std::sync::mpsc::Receiver<Arc<Routes>>,
        scheduler: Arc<dyn Sink>,
        outbox: Option<Outbox>,
        devices: Devices,
        directory: Option<Arc<crate::profile::Directory>>,
    ) -> Self {
        Dispatcher {
            routes,
            updates,
            scheduler,
            oversized: 0,
            fn_matches: Vec::new(),
            dev_matches: Vec::new(),
            fwd_matches: Vec::new(),
            ann_matches: Vec::new(),
            outbox,
            forward_refused: 0,
            unrouted_logged: false,
            max_message_bytes: config.broker.max_packet_bytes,
            holding_wakes: false,
            devices,
            directory,
            unreadable: 0,
            discovery: None,
        }
    }

    /// Reads Home Assistant's discovery announcements too.
    pub fn with_discovery(mut self, discovery: Option<Arc<Discovery>>) -> Self {
        self.discovery = discovery;
        self
    }

    /// The connection has handed over everything it read: the workers owed a
    /// wake-up for this burst get it now.
    pub fn caught_up(&mut self) {
        if std::mem::take(&mut self.holding_wakes) {
            self.scheduler.release_wakes();
        }
    }

    /// Routes one message. Never blocks: when a function's queue is full, returns
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
        self.dev_matches.clear();
        routes.devices.matches(topic, &mut self.dev_matches);
        let device = self.dev_matches.iter().min().copied();
        let mut announced = self.announcement(&routes, topic, payload);
        if let Some(discovery) = self.discovery.as_ref().filter(|d| d.covers(topic)) {
            if !discovery.learn(topic, payload) {
                self.scheduler.tally(Tally::DeviceUnreadable);
            }
            announced = true;
        }
        if let Some(d) = device {
            self.devices.heard(&routes.device_ids[d], Heard::Traffic);
        }
        if self.fn_matches.is_empty() && self.fwd_matches.is_empty() {
            if device.is_some() || announced {
                // It told when a device was last seen, or whether it is online,
                // and what its profile reads from it: its last values, and the
                // echo a confirmed command waits for.
                if let Some(d) = device.filter(|_| topic.len() + payload.len() <= self.max_message_bytes) {
                    self.read(&routes, d, topic, payload);
                }
                self.scheduler.tally(Tally::DeviceMessage);
                return None;
            }
            // A subscription this configuration no longer has, kept by the
            // broker in the persistent session: nothing here wants it.
            self.scheduler.tally(Tally::MessageUnrouted);
            if !self.unrouted_logged {
                self.unrouted_logged = true;
                tracing::info!(topic, "message on a topic no function or forward wants (a subscription left in the broker's session by an earlier configuration?); acknowledged and counted in events_unrouted");
            }
            return None;
        }
        self.scheduler.tally(Tally::MessageIn);
        if topic.len() + payload.len() > self.max_message_bytes {
            self.scheduler.tally(Tally::MessageOversized);
            let before = self.oversized;
            self.oversized += 1;
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
        // The message's one buffer: its functions and forwards share it.
        let payload = bytes::Bytes::copy_from_slice(payload);
        self.forward(&routes, topic, &payload, &delivery);
        // One job per function, for the first of its triggers that matched (a
        // function's targets are adjacent, in trigger order).
        self.fn_matches.sort_unstable();
        self.fn_matches.dedup_by(|a, b| routes.targets[*a].function == routes.targets[*b].function);
        if let Some(d) = device {
            if routes.device_formats[d] == PayloadFormat::Json
                && serde_json::from_slice::<serde::de::IgnoredAny>(&payload).is_err()
            {
                self.scheduler.tally(Tally::MessageMalformed);
                tracing::warn!(topic, device = %routes.device_ids[d], "payload is not JSON; not delivered");
                return None;
            }
        }
        let reading = device.and_then(|d| self.read(&routes, d, topic, &payload));
        let mut event = Event::message(topic_name, payload, device.map(|d| routes.device_ids[d].clone()));
        event.reading = reading;
        let event = Arc::new(event);
        let delivery = delivery.map(|d| d as Receipt);
        if !self.holding_wakes {
            self.holding_wakes = true;
            self.scheduler.hold_wakes();
        }
        let mut blocked = Vec::new();
        for &target in &self.fn_matches {
            let target = &routes.targets[target];
            let job = Job {
                function: target.function.clone(),
                trigger: target.trigger.clone(),
                event: event.clone(),
                delivery: delivery.clone(),
                spooled: false,
                answer: None,
            };
            if let Offer::Full(job, room, budget) = self.scheduler.offer(job) {
                blocked.push((job, room, budget));
            }
        }
        if blocked.is_empty() {
            return None;
        }
        Some(Box::pin(wait_for_room(self.scheduler.clone(), blocked)))
    }
}

impl Dispatcher {
    /// The device's profile's reading of a payload, if it has a profile; one
    /// it cannot read is counted for the device and logged at a pace, and the
    /// event goes on with its raw payload alone.
    fn read(&mut self, routes: &Routes, d: usize, topic: &str, payload: &[u8]) -> Option<bytes::Bytes> {
        let profile = routes.device_profiles[d].as_ref()?;
        match profile.normalise(topic, payload) {
            Some(reading) => {
                if let Some(directory) = &self.directory {
                    directory.remember(&routes.device_ids[d], &reading);
                }
                self.devices.read(&routes.device_ids[d], &reading);
                Some(reading.to_json().into())
            }
            None => {
                self.unreadable_payload(routes, d, topic, payload, "its profile cannot read this payload");
                None
            }
        }
    }

    fn unreadable_payload(&mut self, routes: &Routes, d: usize, topic: &str, payload: &[u8], why: &str) {
        self.scheduler.tally(Tally::DeviceUnreadable);
        self.devices.unreadable(&routes.device_ids[d]);
        self.unreadable += 1;
        if self.unreadable % 100 == 1 {
            tracing::warn!(
                topic,
                device = %routes.device_ids[d],
                payload = %String::from_utf8_lossy(&payload[..payload.len().min(64)]),
                unreadable = self.unreadable,
                "{why}; nothing read from it (counted in device_unreadable, and per device in edgefn devices)"
            );
        }
    }

    /// Tells the devices whose availability topic this is what it says; true
    /// when it was one.
    fn announcement(&mut self, routes: &Routes, topic: &str, payload: &[u8]) -> bool {
        if routes.announcers.is_empty() {
            return false;
        }
        let mut announcers = std::mem::take(&mut self.ann_matches);
        announcers.clear();
        routes.announcers.matches(topic, &mut announcers);
        for &d in &announcers {
            let Some(said) = &routes.device_payloads[d] else { continue };
            match announcement(payload, said) {
                Some(online) => self.devices.heard(&routes.device_ids[d], Heard::Announced(online)),
                None => self.unreadable_payload(
                    routes,
                    d,
                    topic,
                    payload,
                    "availability payload says neither online nor offline (set online_payload and offline_payload \
                     for this device)",
                ),
            }
        }
        let any = !announcers.is_empty();
        self.ann_matches = announcers;
        any
    }

    /// Queues the message for the outbox once per stream it is forwarded to; its
    /// acknowledgement waits until the records are durable. Never blocks: a full
    /// outbox queue refuses it (the outbox counts it).
    fn forward(&mut self, routes: &Routes, topic: &str, payload: &bytes::Bytes, delivery: &Option<Arc<Delivery>>) {
        let Some(outbox) = &self.outbox else { return };
        self.fwd_matches.sort_unstable();
        self.fwd_matches.dedup_by(|a, b| routes.forward_streams[*a] == routes.forward_streams[*b]);
        for &rule in &self.fwd_matches {
            let record = vec![(routes.forward_streams[rule].clone(), payload.clone())];
            // Acknowledged once the record is durable (or counted as refused).
            let then = delivery.clone().map(|d| Box::new(move |_| drop(d)) as Then);
            if let Err(e) = outbox.try_append_shared(record, then) {
                self.forward_refused += 1;
                if self.forward_refused % 1000 == 1 {
                    tracing::warn!(topic, error = %e, refused = self.forward_refused, "forwarded message not accepted by the outbox");
                }
            }
        }
    }
}
