//! The events functions run on, whatever their source, and what functions publish.
//!
//! Every source (the MQTT intake and timers today; HTTP requests and device
//! availability next) makes an [`Event`] of its own [`EventKind`] and hands it
//! to the same scheduler, limits and counters: a new source adds a kind here and
//! a producer, not a new path.

use std::sync::Arc;

/// Where an event came from, and what is specific to that source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventKind {
    /// An MQTT message on a trigger topic, from a device or anything else.
    Message { topic: String },
    /// A timer's run (`sources::timer`): no payload, no device; its time is
    /// when the run was due.
    Timer,
}

impl EventKind {
    /// What `event_kind` returns: 0 a message, 1 a timer.
    pub fn code(&self) -> i32 {
        match self {
            EventKind::Message { .. } => 0,
            EventKind::Timer => 1,
        }
    }
}

/// One event for a function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    pub payload: Vec<u8>,
    /// The configured device the event concerns, if any (for a message: the
    /// device whose telemetry filter matched its topic).
    pub device: Option<Arc<str>>,
    /// When the gateway received it (a timer: when the run was due), in
    /// milliseconds since the Unix epoch.
    pub received_ms: u64,
}

impl Event {
    /// An MQTT message received now.
    pub fn message(topic: String, payload: Vec<u8>, device: Option<Arc<str>>) -> Event {
        Event { kind: EventKind::Message { topic }, payload, device, received_ms: unix_ms() }
    }

    /// A timer's run, due at `due_ms`.
    pub fn timer(due_ms: u64) -> Event {
        Event { kind: EventKind::Timer, payload: Vec::new(), device: None, received_ms: due_ms }
    }

    /// What a function reads with `event_topic`, and what logs name the event
    /// by: a message's topic; empty for a timer's run.
    pub fn subject(&self) -> &str {
        match &self.kind {
            EventKind::Message { topic } => topic,
            EventKind::Timer => "",
        }
    }
}

/// A message a function asked the gateway to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    pub topic: String,
    pub payload: Vec<u8>,
    /// 0, 1 or 2.
    pub qos: u8,
    pub retain: bool,
}

/// The current wall-clock time in milliseconds since the Unix epoch.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}
