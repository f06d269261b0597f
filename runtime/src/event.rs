//! The event a function runs on: one MQTT message, as the gateway received it.

use std::sync::Arc;

/// One message from a device (or from anything else publishing on a trigger topic).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub topic: String,
    pub payload: Vec<u8>,
    /// The configured device whose telemetry filter matched the topic, if any.
    pub device: Option<Arc<str>>,
    /// When the gateway received it, in milliseconds since the Unix epoch.
    pub received_ms: u64,
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
