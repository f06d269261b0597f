//! The events functions run on, whatever their source, and what functions publish.
//!
//! Every source (the MQTT intake, timers, HTTP requests, device availability)
//! makes an [`Event`] of its own [`EventKind`] and hands it to the same
//! scheduler, limits and counters: a new source adds a kind here and a
//! producer, not a new path.

use std::sync::Arc;

use bytes::Bytes;

/// Where an event came from, and what is specific to that source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventKind {
    /// An MQTT message on a trigger topic, from a device or anything else.
    Message { topic: String },
    /// A timer's run (`sources::timer`): no payload, no device; its time is
    /// when the run was due.
    Timer,
    /// An HTTP request on one of the function's routes (`sources::http`); the
    /// payload is its body.
    Http(Box<HttpRequest>),
    /// A configured device went online or offline (`sources::devices`):
    /// the payload is `online` or `offline`, the device its id, the time when
    /// the gateway learnt it.
    Availability { online: bool },
    /// A command the function sent with `command_confirmed` came to its
    /// outcome: the payload is `{"id":N,"action":"on","outcome":"confirmed"}`
    /// (`timed_out`, `offline`), the device the one commanded.
    Confirmation,
}

/// What a function sees of an HTTP request beside its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRequest {
    pub method: String,
    /// The path as requested (percent-escapes left as they came).
    pub path: String,
    /// The query string without its `?` (empty when none).
    pub query: String,
    /// The route's parameters, by name (`{room}` -> `kitchen`).
    pub params: Vec<(String, String)>,
    /// The `Content-Type` header, if any.
    pub content_type: String,
    /// The request's headers, names in lowercase (`http_header`), but never
    /// its credentials: `authorization`, `cookie` and `proxy-authorization`
    /// are left out.
    pub headers: Vec<(String, String)>,
    /// The `X-Request-Id` its answer carries (empty outside the API).
    pub id: String,
}

impl EventKind {
    /// What `event_kind` returns: 0 a message, 1 a timer, 2 an HTTP request,
    /// 3 a device's availability change, 4 a confirmed command's outcome.
    pub fn code(&self) -> i32 {
        match self {
            EventKind::Message { .. } => 0,
            EventKind::Timer => 1,
            EventKind::Http(_) => 2,
            EventKind::Availability { .. } => 3,
            EventKind::Confirmation => 4,
        }
    }

    /// What kind of event it is, as logs name it.
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::Message { .. } => "message",
            EventKind::Timer => "timer",
            EventKind::Http(_) => "http",
            EventKind::Availability { .. } => "availability",
            EventKind::Confirmation => "confirmation",
        }
    }

    /// Whether the event never goes to a spool: someone waits for its own run
    /// (a timer for its next run, an HTTP client for its answer), or nothing
    /// holds it (an availability change, which a newer one supersedes; a
    /// command's outcome).
    pub fn awaited(&self) -> bool {
        !matches!(self, EventKind::Message { .. })
    }
}

/// One event for a function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    /// One buffer per message: every function the message reaches and every
    /// stream it is forwarded to share it (a clone is a reference count).
    pub payload: Bytes,
    /// The configured device the event concerns, if any (for a message: the
    /// device whose telemetry filter matched its topic).
    pub device: Option<Arc<str>>,
    /// The payload as the device's profile reads it (`profile::Reading`, a
    /// flat JSON object), when the device has a profile and it could.
    pub reading: Option<Bytes>,
    /// When the gateway received it (a timer: when the run was due), in
    /// milliseconds since the Unix epoch.
    pub received_ms: u64,
}

impl Event {
    /// An MQTT message received now.
    pub fn message(topic: String, payload: impl Into<Bytes>, device: Option<Arc<str>>) -> Event {
        Event {
            kind: EventKind::Message { topic },
            payload: payload.into(),
            device,
            reading: None,
            received_ms: unix_ms(),
        }
    }

    /// A device's availability change, learnt at `at_ms`.
    pub fn availability(device: Arc<str>, online: bool, at_ms: u64) -> Event {
        let payload = Bytes::from_static(if online { b"online" } else { b"offline" });
        Event {
            kind: EventKind::Availability { online },
            payload,
            device: Some(device),
            reading: None,
            received_ms: at_ms,
        }
    }

    /// A confirmed command's outcome, reached at `at_ms`.
    pub fn confirmation(device: Arc<str>, id: u64, action: &str, outcome: &str, at_ms: u64) -> Event {
        let payload = format!(r#"{{"id":{id},"action":"{action}","outcome":"{outcome}"}}"#);
        Event {
            kind: EventKind::Confirmation,
            payload: Bytes::from(payload),
            device: Some(device),
            reading: None,
            received_ms: at_ms,
        }
    }

    /// A timer's run, due at `due_ms`.
    pub fn timer(due_ms: u64) -> Event {
        Event { kind: EventKind::Timer, payload: Bytes::new(), device: None, reading: None, received_ms: due_ms }
    }

    /// What a function reads with `event_topic`, and what logs name the event
    /// by: a message's topic, a request's path; empty for a timer's run and
    /// an availability change.
    pub fn subject(&self) -> &str {
        match &self.kind {
            EventKind::Message { topic } => topic,
            EventKind::Timer | EventKind::Availability { .. } | EventKind::Confirmation => "",
            EventKind::Http(request) => &request.path,
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
    /// When it expires, in milliseconds since the Unix epoch: not handed to the
    /// broker by then, it is dropped and counted, never sent late. `None`: never.
    pub expires_ms: Option<u64>,
}

/// A function's answer to an HTTP request (`http_respond`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpReply {
    pub status: u16,
    pub content_type: String,
    pub body: Vec<u8>,
}

/// The current wall-clock time in milliseconds since the Unix epoch.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}
