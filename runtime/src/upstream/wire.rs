//! The upstream wire format (UPSTREAM.md): one MQTT publish carries a batch of
//! records of one stream, on `<prefix>/<gateway>/<stream>`, as JSON (default) or
//! postcard. Pure encoding and decoding.

use serde::{Deserialize, Serialize};

use crate::outbox::Record;

/// How batches are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Postcard,
}

/// A decoded batch, whichever format it came in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Batch {
    pub gateway: String,
    pub stream: String,
    pub records: Vec<WireRecord>,
}

/// One record on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireRecord {
    /// Per-stream sequence number; with gateway and stream, the deduplication key.
    pub seq: u64,
    /// Acceptance time at the gateway, milliseconds since the Unix epoch.
    pub ts: u64,
    pub payload: Vec<u8>,
}

/// The topic a stream's batches are published on.
pub fn topic(prefix: &str, gateway: &str, stream: &str) -> String {
    format!("{prefix}/{gateway}/{stream}")
}

/// Encodes records (all of one stream) as one publish payload.
pub fn encode(format: Format, gateway: &str, records: &[Record]) -> Vec<u8> {
    let stream = records.first().map(|r| r.stream.as_str()).unwrap_or("");
    match format {
        Format::Postcard => {
            let batch = Batch {
                gateway: gateway.to_owned(),
                stream: stream.to_owned(),
                records: records
                    .iter()
                    .map(|r| WireRecord { seq: r.seq, ts: r.accepted_ms, payload: r.payload.clone() })
                    .collect(),
            };
            // Cannot fail: encoding into a Vec.
            postcard::to_allocvec(&batch).expect("postcard encodes into a Vec")
        }
        Format::Json => {
            let mut out = String::with_capacity(64 + records.iter().map(|r| r.payload.len() + 48).sum::<usize>());
            out.push_str("{\"gateway\":");
            out.push_str(&serde_json::to_string(gateway).expect("strings encode"));
            out.push_str(",\"stream\":");
            out.push_str(&serde_json::to_string(stream).expect("strings encode"));
            out.push_str(",\"records\":[");
            for (i, r) in records.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&format!("{{\"seq\":{},\"ts\":{},", r.seq, r.accepted_ms));
                // JSON payloads are embedded as they are, so cloud rules can read them;
                // anything else travels base64-encoded.
                match std::str::from_utf8(&r.payload)
                    .ok()
                    .filter(|s| serde_json::from_str::<serde::de::IgnoredAny>(s).is_ok())
                {
                    Some(json) => {
                        out.push_str("\"payload\":");
                        out.push_str(json.trim());
                    }
                    None => {
                        out.push_str("\"payload_b64\":\"");
                        out.push_str(&base64(&r.payload));
                        out.push('"');
                    }
                }
                out.push('}');
            }
            out.push_str("]}");
            out.into_bytes()
        }
    }
}

/// Decodes a batch: JSON if it starts with `{`, postcard otherwise.
pub fn decode(bytes: &[u8]) -> Result<Batch, String> {
    if bytes.first() == Some(&b'{') {
        #[derive(Deserialize)]
        struct JsonBatch {
            gateway: String,
            stream: String,
            records: Vec<JsonRecord>,
        }
        #[derive(Deserialize)]
        struct JsonRecord {
            seq: u64,
            ts: u64,
            payload: Option<Box<serde_json::value::RawValue>>,
            payload_b64: Option<String>,
        }
        let b: JsonBatch = serde_json::from_slice(bytes).map_err(|e| format!("not an edgefn JSON batch: {e}"))?;
        let records = b
            .records
            .into_iter()
            .map(|r| {
                let payload = match (r.payload, r.payload_b64) {
                    (Some(raw), _) => raw.get().as_bytes().to_vec(),
                    (None, Some(b64)) => unbase64(&b64).ok_or("bad payload_b64")?,
                    (None, None) => return Err("a record has no payload".to_string()),
                };
                Ok(WireRecord { seq: r.seq, ts: r.ts, payload })
            })
            .collect::<Result<_, String>>()?;
        Ok(Batch { gateway: b.gateway, stream: b.stream, records })
    } else {
        postcard::from_bytes(bytes).map_err(|e| format!("not an edgefn postcard batch: {e}"))
    }
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn base64(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let n =
            (chunk[0] as u32) << 16 | (*chunk.get(1).unwrap_or(&0) as u32) << 8 | *chunk.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn unbase64(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let bytes = text.trim_end_matches('=').as_bytes();
    for chunk in bytes.chunks(4) {
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            let v = B64.iter().position(|&b| b == c)? as u32;
            n |= v << (18 - 6 * i);
        }
        let take = chunk.len().checked_sub(1)?;
        out.extend_from_slice(&n.to_be_bytes()[1..1 + take]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(seq: u64, payload: &[u8]) -> Record {
        Record {
            id: seq,
            stream: "climate".into(),
            seq,
            accepted_ms: 1_700_000_000_000 + seq,
            payload: payload.to_vec(),
        }
    }

    #[test]
    fn json_batches_embed_json_payloads_and_base64_the_rest() {
        let records = [record(1, br#"{"t":21.5}"#), record(2, b"\x00\xffbinary")];
        let bytes = encode(Format::Json, "gh-1", &records);
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["gateway"], "gh-1");
        assert_eq!(v["stream"], "climate");
        assert_eq!(v["records"][0]["payload"]["t"], 21.5);
        assert_eq!(v["records"][1]["payload_b64"], "AP9iaW5hcnk=");
        let back = decode(&bytes).unwrap();
        assert_eq!(back.records[1].payload, b"\x00\xffbinary");
        assert_eq!(back.records[0].seq, 1);
    }

    #[test]
    fn postcard_round_trips() {
        let records = [record(7, b"abc"), record(8, b"")];
        let back = decode(&encode(Format::Postcard, "gw", &records)).unwrap();
        assert_eq!(back.stream, "climate");
        assert_eq!(
            back.records.iter().map(|r| (r.seq, r.payload.clone())).collect::<Vec<_>>(),
            [(7, b"abc".to_vec()), (8, vec![])]
        );
    }

    #[test]
    fn base64_round_trips_every_length() {
        for n in 0..20u8 {
            let data: Vec<u8> = (0..n).map(|i| i.wrapping_mul(37)).collect();
            assert_eq!(unbase64(&base64(&data)).unwrap(), data, "length {n}");
        }
        assert_eq!(base64(b"Man"), "TWFu");
        assert_eq!(base64(b"Ma"), "TWE=");
    }
}
