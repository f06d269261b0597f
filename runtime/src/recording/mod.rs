//! Record and replay: what reached a function, what the world answered it
//! and what it did, written to a file (`edgefn record`), and run again
//! through a module (`edgefn replay`) that must do the same.
//!
//! The file is JSON lines, version 1 (documented in `docs/RECORDING.md`):
//! a [`Header`], then one [`Entry`] per invocation in the order they ran.
//! Bytes are JSON strings when they are UTF-8, else `{"hex": "..."}`.

mod replay;

use std::io::{BufRead, Write};
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::event::{Event, EventKind, HttpRequest};
pub use crate::host::tape::{Answer, Blob, Effect, Value};
pub use replay::{replay, Replayed};

/// The format's version; a reader refuses a file of another.
pub const VERSION: u32 = 1;

/// The first line: which function, run how.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Header {
    /// Always [`VERSION`] when written; the key that says what the file is.
    pub edgefn_recording: u32,
    pub function: String,
    /// The module that ran: a path (a deployed version's names its digest) or `builtin:NAME`.
    pub module: String,
    /// The gateway's version, e.g. `edgefn 0.1.0`.
    pub gateway: String,
    /// When the recording began, in milliseconds since the Unix epoch.
    pub started_ms: u64,
    /// The limits it ran under.
    pub fuel: u64,
    pub memory_bytes: usize,
    pub timeout_ms: u64,
}

/// One invocation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// Its place in the recording, from 1.
    pub n: u64,
    /// The trigger that fired, as written (`event_trigger`).
    pub trigger: String,
    pub event: RecordedEvent,
    /// The host's answers, in the order it gave them.
    pub answers: Vec<Answer>,
    /// What the function did, in order; `failed` last when it failed.
    pub effects: Vec<Effect>,
    /// Fuel it used.
    pub fuel: u64,
}

/// An event as the file holds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordedEvent {
    /// `message`, `timer`, `http`, `availability` or `confirmation`.
    pub kind: String,
    /// A message's topic, a request's path.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub subject: String,
    pub payload: Blob,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reading: Option<Blob>,
    pub received_ms: u64,
    /// An availability change: whether the device came online.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub online: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<RecordedHttp>,
}

/// What an HTTP event carries besides its path and body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordedHttp {
    pub method: String,
    #[serde(default)]
    pub query: String,
    #[serde(default)]
    pub params: Vec<(String, String)>,
    #[serde(default)]
    pub content_type: String,
    /// What `http_header` reads (never the credentials).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<(String, String)>,
    #[serde(default)]
    pub id: String,
}

impl RecordedEvent {
    pub fn of(event: &Event) -> RecordedEvent {
        let (online, http) = match &event.kind {
            EventKind::Availability { online } => (Some(*online), None),
            EventKind::Http(r) => (
                None,
                Some(RecordedHttp {
                    method: r.method.clone(),
                    query: r.query.clone(),
                    params: r.params.clone(),
                    content_type: r.content_type.clone(),
                    headers: r.headers.clone(),
                    id: r.id.clone(),
                }),
            ),
            _ => (None, None),
        };
        RecordedEvent {
            kind: event.kind.name().to_owned(),
            subject: event.subject().to_owned(),
            payload: Blob::of(&event.payload),
            device: event.device.as_deref().map(str::to_owned),
            reading: event.reading.as_deref().map(Blob::of),
            received_ms: event.received_ms,
            online,
            http,
        }
    }

    /// The event again, or what in the file is wrong.
    pub fn event(&self) -> Result<Event, String> {
        let bytes = |b: &Blob, what: &str| b.bytes().ok_or_else(|| format!("{what}: \"hex\" is not hex"));
        let kind = match self.kind.as_str() {
            "message" => EventKind::Message { topic: self.subject.clone() },
            "timer" => EventKind::Timer,
            "confirmation" => EventKind::Confirmation,
            "availability" => {
                EventKind::Availability { online: self.online.ok_or("an availability event without \"online\"")? }
            }
            "http" => {
                let h = self.http.as_ref().ok_or("an http event without \"http\"")?;
                EventKind::Http(Box::new(HttpRequest {
                    method: h.method.clone(),
                    path: self.subject.clone(),
                    query: h.query.clone(),
                    params: h.params.clone(),
                    content_type: h.content_type.clone(),
                    headers: h.headers.clone(),
                    id: h.id.clone(),
                }))
            }
            other => return Err(format!("unknown event kind {other:?}")),
        };
        Ok(Event {
            kind,
            payload: Bytes::from(bytes(&self.payload, "payload")?),
            device: self.device.as_deref().map(Arc::from),
            reading: match &self.reading {
                Some(r) => Some(Bytes::from(bytes(r, "reading")?)),
                None => None,
            },
            received_ms: self.received_ms,
        })
    }
}

/// Writes one line of JSON.
pub fn write_line(out: &mut impl Write, value: &impl Serialize) -> std::io::Result<()> {
    serde_json::to_writer(&mut *out, value)?;
    out.write_all(b"\n")
}

/// Reads a recording: its header and entries, or what is wrong and on which line.
pub fn read(path: &Path) -> anyhow::Result<(Header, Vec<Entry>)> {
    let file = std::fs::File::open(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let mut lines = std::io::BufReader::new(file).lines();
    let at = |n: usize| format!("{}:{n}", path.display());
    let first = lines.next().ok_or_else(|| anyhow::anyhow!("{}: empty, not a recording", at(1)))??;
    let version: serde_json::Value = serde_json::from_str(&first)
        .map_err(|e| anyhow::anyhow!("{}: not a recording (edgefn record writes one): {e}", at(1)))?;
    match version.get("edgefn_recording").and_then(serde_json::Value::as_u64) {
        Some(v) if v == u64::from(VERSION) => {}
        Some(v) => anyhow::bail!("{}: a recording of format {v}; this edgefn reads format {VERSION}", at(1)),
        None => anyhow::bail!("{}: not a recording: its first line has no \"edgefn_recording\"", at(1)),
    }
    let header: Header = serde_json::from_value(version).map_err(|e| anyhow::anyhow!("{}: {e}", at(1)))?;
    let mut entries = Vec::new();
    for (i, line) in lines.enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let entry: Entry = serde_json::from_str(&line).map_err(|e| anyhow::anyhow!("{}: {e}", at(i + 2)))?;
        entries.push(entry);
    }
    Ok((header, entries))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_of_event_comes_back_from_the_file_as_it_went_in() {
        let mut message = Event::message("sensors/a".into(), &b"\xff\x01"[..], Some(Arc::from("a")));
        message.reading = Some(Bytes::from_static(br#"{"t":1}"#));
        let http = Event {
            kind: EventKind::Http(Box::new(HttpRequest {
                method: "GET".into(),
                path: "/rooms/k".into(),
                query: "x=1".into(),
                params: vec![("room".into(), "k".into())],
                content_type: "text/plain".into(),
                headers: vec![("x-room".into(), "k".into())],
                id: "r-1".into(),
            })),
            payload: Bytes::from_static(b"hi"),
            device: None,
            reading: None,
            received_ms: 5,
        };
        let events = [
            message,
            Event::timer(7),
            http,
            Event::availability(Arc::from("plug"), false, 9),
            Event::confirmation(Arc::from("plug"), 3, "on", "confirmed", 11),
        ];
        for event in events {
            let line = serde_json::to_string(&RecordedEvent::of(&event)).unwrap();
            let back: RecordedEvent = serde_json::from_str(&line).unwrap();
            assert_eq!(back.event().unwrap(), event, "{line}");
        }
    }

    #[test]
    fn a_file_that_is_not_a_recording_or_of_another_version_is_named_with_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.jsonl");
        std::fs::write(&path, "{\"edgefn_recording\":2}\n").unwrap();
        let e = read(&path).unwrap_err().to_string();
        assert!(e.contains("r.jsonl:1") && e.contains("format 2"), "{e}");
        std::fs::write(&path, "hello\n").unwrap();
        assert!(read(&path).unwrap_err().to_string().contains("not a recording"));
        let header = Header {
            edgefn_recording: VERSION,
            function: "f".into(),
            module: "builtin:threshold".into(),
            gateway: "edgefn".into(),
            started_ms: 0,
            fuel: 1,
            memory_bytes: 1,
            timeout_ms: 1,
        };
        let mut text = Vec::new();
        write_line(&mut text, &header).unwrap();
        text.extend_from_slice(b"{\"n\":1}\n");
        std::fs::write(&path, text).unwrap();
        let e = read(&path).unwrap_err().to_string();
        assert!(e.contains("r.jsonl:2") && e.contains("missing field"), "{e}");
    }
}
