//! One record in the outbox, as postcard encodes it inside a frame.

use serde::{Deserialize, Serialize};

/// A record the gateway accepted for upstream delivery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Position in the outbox: strictly increasing, never reused while the outbox lives.
    pub id: u64,
    pub stream: String,
    /// Per-stream sequence number from 1: the receiver's deduplication key with the stream.
    pub seq: u64,
    /// When it was accepted, in milliseconds since the Unix epoch.
    pub accepted_ms: u64,
    pub payload: Vec<u8>,
}

/// The same record borrowed from a buffer, so recovery can scan without copying.
#[derive(Debug, Deserialize)]
pub struct RecordRef<'a> {
    pub id: u64,
    pub stream: &'a str,
    pub seq: u64,
    pub accepted_ms: u64,
    #[allow(dead_code)]
    pub payload: &'a [u8],
}

/// A record being written, borrowed from the append that carries it: encoded
/// exactly as [`Record`] (postcard writes a byte string as its length and its
/// bytes, however serde hands it over), without copying its stream or payload.
pub struct RecordOut<'a> {
    pub id: u64,
    pub stream: &'a str,
    pub seq: u64,
    pub accepted_ms: u64,
    pub payload: &'a [u8],
}

impl Serialize for RecordOut<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        struct AsBytes<'a>(&'a [u8]);
        impl Serialize for AsBytes<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_bytes(self.0)
            }
        }
        let mut r = s.serialize_struct("Record", 5)?;
        r.serialize_field("id", &self.id)?;
        r.serialize_field("stream", self.stream)?;
        r.serialize_field("seq", &self.seq)?;
        r.serialize_field("accepted_ms", &self.accepted_ms)?;
        r.serialize_field("payload", &AsBytes(self.payload))?;
        r.end()
    }
}

impl RecordOut<'_> {
    /// Appends the encoded record to `out` (reused between records).
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        // Cannot fail: postcard only fails on a full fixed buffer, and this extends a Vec.
        *out = postcard::to_extend(self, std::mem::take(out)).expect("postcard encodes into a Vec");
    }
}

impl Record {
    pub fn encode(&self) -> Vec<u8> {
        // Cannot fail: postcard only fails on a full fixed buffer, and this allocates.
        postcard::to_allocvec(self).expect("postcard encodes into a Vec")
    }

    pub fn decode(body: &[u8]) -> Option<Record> {
        postcard::from_bytes(body).ok()
    }
}

impl<'a> RecordRef<'a> {
    pub fn decode(body: &'a [u8]) -> Option<RecordRef<'a>> {
        postcard::from_bytes(body).ok()
    }
}

/// A stream name: it becomes an MQTT topic level, so letters, digits, `-`, `_`, `.`.
pub fn valid_stream(name: &str) -> bool {
    !name.is_empty() && name.len() <= 64 && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn borrowed_and_owned_decode_agree() {
        let r = Record { id: 7, stream: "telemetry".into(), seq: 3, accepted_ms: 99, payload: b"{\"t\":1}".to_vec() };
        let bytes = r.encode();
        assert_eq!(Record::decode(&bytes), Some(r.clone()));
        let b = RecordRef::decode(&bytes).unwrap();
        let mut out = vec![0xaa];
        RecordOut { id: 7, stream: "telemetry", seq: 3, accepted_ms: 99, payload: &r.payload }.encode_into(&mut out);
        assert_eq!(out[1..], bytes[..], "a borrowed record encodes as the owned one");
        assert_eq!((b.id, b.stream, b.seq, b.accepted_ms, b.payload), (7, "telemetry", 3, 99, &r.payload[..]));
    }

    #[test]
    fn stream_names() {
        assert!(valid_stream("greenhouse.climate-1"));
        assert!(!valid_stream(""));
        assert!(!valid_stream("a/b"));
        assert!(!valid_stream("a+"));
    }
}
