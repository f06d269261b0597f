//! Sending MQTT messages: the way a function commands devices.

use crate::{sys, Error, ErrorKind};

/// MQTT delivery guarantee of a publish.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum QoS {
    /// QoS 0: fire and forget.
    #[default]
    AtMostOnce = 0,
    /// QoS 1: delivered, possibly more than once.
    AtLeastOnce = 1,
    /// QoS 2: delivered exactly once.
    ExactlyOnce = 2,
}

impl QoS {
    /// The QoS with MQTT level `level` (0, 1 or 2).
    pub fn from_level(level: i64) -> Option<Self> {
        match level {
            0 => Some(Self::AtMostOnce),
            1 => Some(Self::AtLeastOnce),
            2 => Some(Self::ExactlyOnce),
            _ => None,
        }
    }

    /// The MQTT level, 0, 1 or 2.
    pub fn level(self) -> u8 {
        self as u8
    }
}

/// Queues an MQTT message; the gateway sends it only if this invocation succeeds,
/// and only within the function's `limits.publish_expiry_ms` (30 s unless
/// configured): one the broker could not be given by then (an outage) is
/// dropped and counted in `commands_expired`, never sent late.
///
/// A topic that is empty or holds `+`, `#` or NUL is refused here with
/// [`ErrorKind::Publish`] rather than left to trap in the host.
pub fn publish(topic: &str, payload: &[u8], qos: QoS, retain: bool) -> Result<(), Error> {
    check_topic(topic)?;
    match sys::publish(topic, payload, qos.level(), retain) {
        0 => Ok(()),
        code => Err(publish_failed(topic, code)),
    }
}

/// [`publish`] with this message's own expiry: dropped and counted unless the
/// broker is given it within `expiry_ms` of this call; `0` never expires (a
/// reading, say, that is worth having late). A command to a device should
/// expire once acting on it could do harm: "fan on" an hour late is wrong.
pub fn publish_within(topic: &str, payload: &[u8], qos: QoS, retain: bool, expiry_ms: u32) -> Result<(), Error> {
    check_topic(topic)?;
    // The ABI takes an i32: past it, as good as never.
    let expiry = i32::try_from(expiry_ms).unwrap_or(0);
    match sys::publish_within(topic, payload, qos.level(), retain, expiry) {
        0 => Ok(()),
        code => Err(publish_failed(topic, code)),
    }
}

/// Commands a configured device by its id: `on`, `off`, `toggle` or
/// `set brightness N` (0-100). The device's profile (`profile = "tasmota"`,
/// `"zigbee2mqtt"`, `"shelly"`, ...) encodes it into the topic and payload the
/// device takes; it is sent as [`publish`] sends (QoS 1, only if this
/// invocation succeeds, within `limits.publish_expiry_ms`).
///
/// Fails with [`ErrorKind::Publish`] when the function may not command the
/// device (`[functions.allow] devices`), or there is no such device, it has no
/// profile, or its profile cannot do that action (the gateway logs why).
pub fn command(device: &str, action: &str) -> Result<(), Error> {
    match sys::command(device, action) {
        0 => Ok(()),
        code => Err(command_failed(device, action, code)),
    }
}

/// [`command`], then waits up to `timeout_ms` for the device to confirm it
/// (its state echo, as its profile reads it: `on` for on and off, the new
/// state for a toggle, `brightness` for a brightness). The function runs again
/// with [`crate::event::Kind::Confirmation`] once the outcome is known:
/// confirmed, timed out, or the device went offline first
/// ([`crate::event::confirmation`] reads it). Returns the command's id, which
/// that event carries.
pub fn command_confirmed(device: &str, action: &str, timeout_ms: u32) -> Result<u32, Error> {
    let timeout = i32::try_from(timeout_ms.max(1)).unwrap_or(i32::MAX);
    match sys::command_confirmed(device, action, timeout) {
        id if id > 0 => Ok(id as u32),
        code => Err(command_failed(device, action, code)),
    }
}

#[cold]
#[inline(never)]
fn command_failed(device: &str, action: &str, code: i32) -> Error {
    let why = if code == -2 { "not allowed" } else { "not possible, see the gateway's log" };
    Error::format(ErrorKind::Publish, format_args!("command `{action}` to `{device}`: {why} (code {code})"))
}

/// The error for a publish the host refused; out of line, as it is rare and
/// the interpreter charges a function's whole body on every call.
#[cold]
#[inline(never)]
fn publish_failed(topic: &str, code: i32) -> Error {
    Error::format(ErrorKind::Publish, format_args!("publish to `{topic}` failed with code {code}"))
}

/// Checks `topic` against the ABI's rules for publish topics: not empty, at most
/// 65,535 bytes, no `+`, `#` or NUL. Useful to validate a configured topic early.
pub fn check_topic(topic: &str) -> Result<(), Error> {
    let problem = if topic.is_empty() {
        "is empty"
    } else if topic.len() > usize::from(u16::MAX) {
        "is longer than 65535 bytes"
    } else if has_wildcard_or_nul(topic.as_bytes()) {
        "holds `+`, `#` or NUL"
    } else {
        return Ok(());
    };
    Err(bad_topic(topic, problem))
}

/// Whether `topic` holds `+`, `#` or NUL. All three are ASCII, so a byte scan
/// finds them, in a loop of its own: the interpreter charges every pass of a
/// loop for its whole body.
#[inline(never)]
fn has_wildcard_or_nul(topic: &[u8]) -> bool {
    let mut at = 0;
    while let Some(&byte) = topic.get(at) {
        if byte == b'+' || byte == b'#' || byte == 0 {
            return true;
        }
        at += 1;
    }
    false
}

/// The error for a topic `check_topic` refused.
#[cold]
#[inline(never)]
fn bad_topic(topic: &str, problem: &str) -> Error {
    Error::format(ErrorKind::Publish, format_args!("publish topic `{topic}` {problem}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_topics_the_host_would_trap_on() {
        for bad in ["", "a/+/b", "a/#", "a\0b"] {
            let err = publish(bad, b"x", QoS::AtMostOnce, false).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Publish, "{bad:?}");
        }
        assert!(publish("greenhouse/fan/set", b"ON", QoS::AtLeastOnce, true).is_ok());
        assert_eq!(publish_within("a/#", b"x", QoS::AtMostOnce, false, 5_000).unwrap_err().kind(), ErrorKind::Publish);
        assert!(publish_within("greenhouse/fan/set", b"ON", QoS::AtLeastOnce, false, 5_000).is_ok());
    }

    #[test]
    fn qos_levels_round_trip() {
        for level in 0..=2 {
            assert_eq!(i64::from(QoS::from_level(level).unwrap().level()), level);
        }
        assert_eq!(QoS::from_level(3), None);
    }
}
