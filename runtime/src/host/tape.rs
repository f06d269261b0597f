//! What an invocation took from the world and did to it, for record and
//! replay (`crate::recording`): every host call whose answer comes from
//! outside the function (the clock, random bytes, config, state reads, a
//! device's last values, a capability check, the outbox's gate) is an
//! [`Answer`]; every call that changes something outside it (a publish, a
//! record, a command, a state change, a log line, an HTTP reply) is an
//! [`Effect`], in the order the function made them.
//!
//! Recording, the answers are taken live and written down. Replaying, they
//! are read back in the order they were given, per call and key, so the same
//! module makes the same calls and gets the same answers: its effects are
//! the same, or the new version's differ.

use std::collections::{HashMap, VecDeque};

use serde::{Deserialize, Serialize};

/// Bytes as a recording holds them: a JSON string when they are UTF-8,
/// else `{"hex": "..."}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Blob {
    Text(String),
    Hex { hex: String },
}

impl Blob {
    pub fn of(bytes: &[u8]) -> Blob {
        // Text that reads as text: no control characters but line breaks and tabs.
        let readable = |t: &str| !t.chars().any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'));
        match std::str::from_utf8(bytes) {
            Ok(text) if readable(text) => Blob::Text(text.to_owned()),
            _ => Blob::Hex { hex: bytes.iter().map(|b| format!("{b:02x}")).collect() },
        }
    }

    /// The bytes; `None` when the hex is not hex.
    pub fn bytes(&self) -> Option<Vec<u8>> {
        match self {
            Blob::Text(text) => Some(text.as_bytes().to_vec()),
            Blob::Hex { hex } => {
                if hex.len() % 2 != 0 {
                    return None;
                }
                (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok()).collect()
            }
        }
    }
}

impl std::fmt::Display for Blob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Blob::Text(text) => write!(f, "{text:?}"),
            Blob::Hex { hex } => write!(f, "hex:{hex}"),
        }
    }
}

/// A host call's answer: a number, bytes, nothing (`-1`: absent), or a
/// refusal with its reason (a command no profile can encode).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Value {
    Int(i64),
    Bytes(#[serde(with = "as_blob")] Vec<u8>),
    Absent,
    Refused(String),
}

impl Value {
    pub fn int(&self) -> Option<i64> {
        match self {
            Value::Int(v) => Some(*v),
            _ => None,
        }
    }
}

/// Bytes written as a [`Blob`]: raw while the host works with them, text or
/// hex only in the file.
mod as_blob {
    use super::Blob;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        Blob::of(bytes).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        Blob::deserialize(d)?
            .bytes()
            .ok_or_else(|| serde::de::Error::custom("\"hex\" holds a character that is not hex"))
    }
}

/// One answer from outside the function: which call, about what (a state
/// key, a config key, a device, a topic; empty for the clock), and the value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer {
    pub call: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub key: String,
    pub value: Value,
}

/// Something the function did that reaches outside it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Effect {
    Publish {
        topic: String,
        payload: Blob,
        qos: u8,
        retain: bool,
    },
    Upstream {
        stream: String,
        payload: Blob,
    },
    Command {
        device: String,
        action: String,
    },
    StateSet {
        key: String,
        value: Blob,
    },
    StateDelete {
        key: String,
    },
    StateCas {
        key: String,
        expected: Option<Blob>,
        value: Option<Blob>,
    },
    Log {
        level: String,
        message: String,
    },
    Reply {
        status: u16,
        content_type: String,
        body: Blob,
    },
    /// The invocation failed: the last effect, when it did.
    Failed {
        reason: String,
    },
}

impl std::fmt::Display for Effect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let opt = |b: &Option<Blob>| b.as_ref().map_or("(none)".to_owned(), Blob::to_string);
        match self {
            Effect::Publish { topic, payload, qos, retain } => {
                write!(f, "publish {topic} {payload} qos {qos}{}", if *retain { " retained" } else { "" })
            }
            Effect::Upstream { stream, payload } => write!(f, "upstream {stream} {payload}"),
            Effect::Command { device, action } => write!(f, "command {device} {action}"),
            Effect::StateSet { key, value } => write!(f, "state set {key} = {value}"),
            Effect::StateDelete { key } => write!(f, "state delete {key}"),
            Effect::StateCas { key, expected, value } => {
                write!(f, "state cas {key}: {} -> {}", opt(expected), opt(value))
            }
            Effect::Log { level, message } => write!(f, "log {level} {message:?}"),
            Effect::Reply { status, content_type, body } => write!(f, "reply {status} {content_type} {body}"),
            Effect::Failed { reason } => write!(f, "failed: {reason}"),
        }
    }
}

/// The tape one invocation runs with: answers taken live (recording) or read
/// back (replaying), and the effects made.
#[derive(Debug, Default)]
pub struct Tape {
    /// Replaying: the clock a call the recording lacks reads (the event's time).
    pub fixed_clock_ms: Option<u64>,
    /// Replaying: the recorded answers still to give, per call and key.
    replay: Option<HashMap<(String, String), VecDeque<Value>>>,
    /// The answers given, in order.
    pub answers: Vec<Answer>,
    pub effects: Vec<Effect>,
}

impl Tape {
    /// A tape that takes every answer live and writes it down.
    pub fn recording() -> Tape {
        Tape::default()
    }

    /// A tape that gives back `answers`, each (call, key) in the order they
    /// were recorded. A call the recording does not hold is answered live,
    /// from what the replaying host has (no state, no devices, the clock of
    /// the event: see `crate::recording`).
    pub fn replaying(answers: &[Answer], clock_ms: u64) -> Tape {
        let mut queues: HashMap<(String, String), VecDeque<Value>> = HashMap::new();
        for a in answers {
            queues.entry((a.call.clone(), a.key.clone())).or_default().push_back(a.value.clone());
        }
        Tape { replay: Some(queues), fixed_clock_ms: Some(clock_ms), ..Tape::default() }
    }

    /// Whether it replays a recording (a call it lacks gets no live randomness).
    pub fn replaying_now(&self) -> bool {
        self.replay.is_some()
    }

    /// The answer to `call` about `key`: the recorded one when replaying and
    /// there is one, else `live()`. Written down either way.
    pub fn answer(&mut self, call: &str, key: &str, live: impl FnOnce() -> Value) -> Value {
        let recorded = self
            .replay
            .as_mut()
            .and_then(|queues| queues.get_mut(&(call.to_owned(), key.to_owned())))
            .and_then(VecDeque::pop_front);
        let value = recorded.unwrap_or_else(live);
        self.answers.push(Answer { call: call.to_owned(), key: key.to_owned(), value: value.clone() });
        value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_that_are_not_utf8_round_trip_as_hex() {
        let blob = Blob::of(&[0xff, 0x00, b'a']);
        assert_eq!(blob, Blob::Hex { hex: "ff0061".into() });
        assert_eq!(blob.bytes().unwrap(), vec![0xff, 0x00, b'a']);
        let json = serde_json::to_string(&blob).unwrap();
        assert_eq!(serde_json::from_str::<Blob>(&json).unwrap(), blob);
        // A little-endian integer is UTF-8, but not text.
        assert_eq!(Blob::of(&3u64.to_le_bytes()), Blob::Hex { hex: "0300000000000000".into() });
        assert_eq!(Blob::of(b"a\tb\n"), Blob::Text("a\tb\n".into()));
        assert_eq!(serde_json::from_str::<Blob>("\"héllo\"").unwrap().bytes().unwrap(), "héllo".as_bytes());
        assert_eq!(Blob::Hex { hex: "f".into() }.bytes(), None);
    }

    #[test]
    fn a_replay_gives_each_calls_answers_back_in_the_order_they_were_recorded() {
        let mut recorded = Tape::recording();
        let mut clock = 100;
        for _ in 0..2 {
            recorded.answer("now_ms", "", || {
                clock += 1;
                Value::Int(clock)
            });
        }
        recorded.answer("state_get", "count", || Value::Bytes(b"7".to_vec()));
        let mut replay = Tape::replaying(&recorded.answers, 0);
        let live = || panic!("answered live although it was recorded");
        assert_eq!(replay.answer("state_get", "count", live), Value::Bytes(b"7".to_vec()));
        assert_eq!(replay.answer("now_ms", "", live), Value::Int(101));
        assert_eq!(replay.answer("now_ms", "", live), Value::Int(102));
        // A call past what was recorded is answered live.
        assert_eq!(replay.answer("now_ms", "", || Value::Int(5)), Value::Int(5));
        assert_eq!(replay.answer("state_get", "other", || Value::Absent), Value::Absent);
    }
}
