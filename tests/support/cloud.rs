//! The cloud's side of store-and-forward: what a function sends upstream, and
//! the batches the upstream broker receives.

use super::probe::Message;

/// Decodes upstream batches into (stream, seq, payload) triples.
pub fn records(message: &Message) -> Vec<(String, u64, String)> {
    if message.topic == "edgefn/subscribed" {
        return Vec::new();
    }
    let batch =
        edgefn::upstream::decode(message.payload.as_bytes()).unwrap_or_else(|e| panic!("{}: {e}", message.topic));
    assert_eq!(message.topic, format!("edgefn/{}/{}", batch.gateway, batch.stream));
    batch.records.into_iter().map(|r| (batch.stream.clone(), r.seq, String::from_utf8(r.payload).unwrap())).collect()
}

/// A function that sends each reading upstream and then acknowledges it locally
/// on `test/ack`: an ack seen by the test means the record was accepted. When
/// `upstream` says the outbox refuses records now (-3), it says so on
/// `test/refused` instead; any other answer fails the invocation.
pub fn upstream_and_ack() -> Vec<u8> {
    wat::parse_str(
        r#"(module
            (import "edgefn" "event_payload" (func $payload (param i32 i32) (result i32)))
            (import "edgefn" "upstream" (func $upstream (param i32 i32 i32 i32) (result i32)))
            (import "edgefn" "publish" (func $publish (param i32 i32 i32 i32 i32 i32) (result i32)))
            (memory (export "memory") 1)
            (data (i32.const 0) "readings")
            (data (i32.const 16) "test/ack")
            (data (i32.const 32) "test/refused")
            (func (export "edgefn_abi_version") (result i32) i32.const 1)
            (func (export "handle") (result i32) (local $len i32) (local $sent i32)
                (local.set $len (call $payload (i32.const 1024) (i32.const 60000)))
                (local.set $sent (call $upstream (i32.const 0) (i32.const 8) (i32.const 1024) (local.get $len)))
                (if (i32.eq (local.get $sent) (i32.const -3))
                    (then
                        (drop (call $publish (i32.const 32) (i32.const 12) (i32.const 1024) (local.get $len) (i32.const 1) (i32.const 0)))
                        (return (i32.const 0))))
                (if (i32.ne (local.get $sent) (i32.const 0))
                    (then (return (i32.const 7))))
                (drop (call $publish (i32.const 16) (i32.const 8) (i32.const 1024) (local.get $len) (i32.const 1) (i32.const 0)))
                i32.const 0))"#,
    )
    .unwrap()
}

/// A slow function that sends each reading upstream on `stream` after spinning
/// `spin` times: it falls behind under load, so its QoS 1 events wait in its
/// spool. An upstream refusal fails the invocation.
pub fn slow_upstream(stream: &str, spin: u32) -> Vec<u8> {
    super::wasm::module(
        r#"(import "edgefn" "event_payload" (func $payload (param i32 i32) (result i32)))
           (import "edgefn" "upstream" (func $upstream (param i32 i32 i32 i32) (result i32)))"#,
        &format!(
            "(local $len i32) (local $n i32)
             (local.set $len (call $payload (i32.const 1024) (i32.const 60000)))
             (local.set $n (i32.const {spin}))
             (loop $l (br_if $l (local.tee $n (i32.sub (local.get $n) (i32.const 1)))))
             (if (i32.ne (call $upstream (i32.const 0) (i32.const {len}) (i32.const 1024) (local.get $len)) (i32.const 0))
               (then (return (i32.const 7))))
             i32.const 0",
            len = stream.len()
        ),
        &format!(r#"(data (i32.const 0) "{stream}")"#),
    )
}
