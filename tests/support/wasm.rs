//! Hostile and minimal functions written as WAT, for sandboxing tests.

/// The exports every ABI v1 module needs, around a `handle` body.
pub fn module(imports: &str, body: &str, extra: &str) -> Vec<u8> {
    let text = format!(
        r#"(module
            {imports}
            (memory (export "memory") 1)
            (func (export "edgefn_abi_version") (result i32) i32.const 1)
            {extra}
            (func (export "handle") (result i32) {body}))"#
    );
    wat::parse_str(&text).unwrap()
}

/// A WAT function for `module`'s `extra`: `(call $dec VALUE END)` writes the
/// unsigned i64 VALUE in decimal into the bytes just before END and returns
/// where the digits start (their length is END minus that).
#[allow(dead_code)]
pub const DECIMAL: &str = r#"(func $dec (param $v i64) (param $end i32) (result i32) (local $p i32)
  (local.set $p (local.get $end))
  (loop $l
    (local.set $p (i32.sub (local.get $p) (i32.const 1)))
    (i64.store8 (local.get $p) (i64.add (i64.const 48) (i64.rem_u (local.get $v) (i64.const 10))))
    (local.set $v (i64.div_u (local.get $v) (i64.const 10)))
    (br_if $l (i64.ne (local.get $v) (i64.const 0))))
  (local.get $p))"#;

/// Loops forever: only fuel stops it.
pub fn infinite_loop() -> Vec<u8> {
    module("", "(loop $l (br $l)) i32.const 0", "")
}

/// Grows its memory a page at a time until something says no.
pub fn memory_hog() -> Vec<u8> {
    module("", "(loop $l (br_if $l (i32.ne (memory.grow (i32.const 1)) (i32.const -1)))) i32.const 0", "")
}

/// Recurses without end.
pub fn deep_recursion() -> Vec<u8> {
    module("", "call $recurse i32.const 0", "(func $recurse call $recurse)")
}

/// Hands `publish` a topic pointer far outside its one page of memory.
pub fn out_of_bounds_publish() -> Vec<u8> {
    module(
        r#"(import "edgefn" "publish" (func $publish (param i32 i32 i32 i32 i32 i32) (result i32)))"#,
        "(call $publish (i32.const 1000000) (i32.const 8) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0))",
        "",
    )
}

/// Counts down from `spin` (about 4 instructions a turn), then publishes the
/// event's payload (up to 1 KiB) to `echo` at QoS 1: a function with a known,
/// steady cost per event.
pub fn slow_echo(spin: u32) -> Vec<u8> {
    module(
        r#"(import "edgefn" "event_payload" (func $payload (param i32 i32) (result i32)))
           (import "edgefn" "publish" (func $publish (param i32 i32 i32 i32 i32 i32) (result i32)))"#,
        &format!(
            "(local $len i32) (local $n i32)
             (local.set $len (call $payload (i32.const 0) (i32.const 1024)))
             (local.set $n (i32.const {spin}))
             (loop $l (br_if $l (local.tee $n (i32.sub (local.get $n) (i32.const 1)))))
             (drop (call $publish (i32.const 2048) (i32.const 4) (i32.const 0) (local.get $len) (i32.const 1) (i32.const 0)))
             i32.const 0"
        ),
        r#"(data (i32.const 2048) "echo")"#,
    )
}

/// Like `slow_echo`, and first logs the payload at info: the gateway's own log
/// then shows every event the function handled, whatever becomes of its echo.
pub fn logging_echo(spin: u32) -> Vec<u8> {
    module(
        r#"(import "edgefn" "event_payload" (func $payload (param i32 i32) (result i32)))
           (import "edgefn" "log" (func $log (param i32 i32 i32)))
           (import "edgefn" "publish" (func $publish (param i32 i32 i32 i32 i32 i32) (result i32)))"#,
        &format!(
            "(local $len i32) (local $n i32)
             (local.set $len (call $payload (i32.const 0) (i32.const 1024)))
             (call $log (i32.const 2) (i32.const 0) (local.get $len))
             (local.set $n (i32.const {spin}))
             (loop $l (br_if $l (local.tee $n (i32.sub (local.get $n) (i32.const 1)))))
             (drop (call $publish (i32.const 2048) (i32.const 4) (i32.const 0) (local.get $len) (i32.const 1) (i32.const 0)))
             i32.const 0"
        ),
        r#"(data (i32.const 2048) "echo")"#,
    )
}

/// Tries to publish `offline` to the gateway's status topic (`edgefn/gh-test/status`,
/// retained), to `$SYS/x` and to `secret/x`, then to `allowed/x`. Returns 0 only if
/// each of the first three publishes returned -2 (denied), else a non-zero code.
pub fn overreaching_publisher() -> Vec<u8> {
    module(
        r#"(import "edgefn" "publish" (func $publish (param i32 i32 i32 i32 i32 i32) (result i32)))"#,
        "(local $codes i32)
         (local.set $codes (i32.add (i32.const 6) (i32.add
             (call $publish (i32.const 0) (i32.const 21) (i32.const 80) (i32.const 7) (i32.const 1) (i32.const 1))
             (i32.add
                 (call $publish (i32.const 32) (i32.const 6) (i32.const 80) (i32.const 7) (i32.const 0) (i32.const 0))
                 (call $publish (i32.const 48) (i32.const 8) (i32.const 80) (i32.const 7) (i32.const 0) (i32.const 0))))))
         (drop (call $publish (i32.const 64) (i32.const 9) (i32.const 80) (i32.const 7) (i32.const 0) (i32.const 0)))
         local.get $codes",
        r#"(data (i32.const 0) "edgefn/gh-test/status")
           (data (i32.const 32) "$SYS/x")
           (data (i32.const 48) "secret/x")
           (data (i32.const 64) "allowed/x")
           (data (i32.const 80) "offline")"#,
    )
}

/// Publishes each event's payload (up to 1 KiB) to `topic` at QoS 1.
pub fn echo_to(topic: &str) -> Vec<u8> {
    module(
        r#"(import "edgefn" "event_payload" (func $payload (param i32 i32) (result i32)))
           (import "edgefn" "publish" (func $publish (param i32 i32 i32 i32 i32 i32) (result i32)))"#,
        &format!(
            "(drop (call $publish (i32.const 2048) (i32.const {}) (i32.const 0)
                 (call $payload (i32.const 0) (i32.const 1024)) (i32.const 1) (i32.const 0)))
             i32.const 0",
            topic.len()
        ),
        &format!(r#"(data (i32.const 2048) "{topic}")"#),
    )
}

/// Logs `lines` warnings ("chatty N") per event, then traps when `trap` is set
/// (so that its logs come with a failure).
pub fn chatty_logger(lines: u32, trap: bool) -> Vec<u8> {
    module(
        r#"(import "edgefn" "log" (func $log (param i32 i32 i32)))"#,
        &format!(
            "(local $n i32)
             (local.set $n (i32.const {lines}))
             (loop $l
                 (call $log (i32.const 1) (i32.const 2048) (i32.const 6))
                 (br_if $l (local.tee $n (i32.sub (local.get $n) (i32.const 1)))))
             {}
             i32.const 0",
            if trap { "unreachable" } else { "" }
        ),
        r#"(data (i32.const 2048) "chatty")"#,
    )
}

/// Traps on every event (`unreachable`), as a broken build would.
pub fn always_traps() -> Vec<u8> {
    module("", "unreachable", "")
}

/// Answers an HTTP request with `201 text/plain` and "ROOM:BODY" (the route's
/// `room` parameter and the request's body); traps when the query string is
/// not empty (`?fail`), and answers nothing when the method is DELETE.
pub fn http_echo() -> Vec<u8> {
    module(
        r#"(import "edgefn" "event_payload" (func $payload (param i32 i32) (result i32)))
           (import "edgefn" "http_method" (func $method (param i32 i32) (result i32)))
           (import "edgefn" "http_param" (func $param (param i32 i32 i32 i32) (result i32)))
           (import "edgefn" "http_query" (func $query (param i32 i32) (result i32)))
           (import "edgefn" "http_respond" (func $respond (param i32 i32 i32 i32 i32) (result i32)))"#,
        "(local $room i32) (local $body i32)
         (if (i32.gt_s (call $query (i32.const 900) (i32.const 64)) (i32.const 0)) (then unreachable))
         ;; DELETE: six bytes, answered with nothing (204).
         (if (i32.eq (call $method (i32.const 960) (i32.const 16)) (i32.const 6)) (then (return (i32.const 0))))
         (local.set $room (call $param (i32.const 512) (i32.const 4) (i32.const 1024) (i32.const 64)))
         (i32.store8 (i32.add (i32.const 1024) (local.get $room)) (i32.const 58))
         (local.set $body (call $payload (i32.add (i32.const 1025) (local.get $room)) (i32.const 1024)))
         (drop (call $respond (i32.const 201) (i32.const 520) (i32.const 10) (i32.const 1024)
               (i32.add (i32.add (local.get $room) (i32.const 1)) (local.get $body))))
         i32.const 0",
        r#"(data (i32.const 512) "room") (data (i32.const 520) "text/plain")"#,
    )
}

/// Answers an HTTP request `200 text/plain` with the value of its `X-Room`
/// header (asked for as `X-ROOM`: names are matched in any case), or with
/// nothing when it has none; traps if it is given the request's
/// `Authorization` or `Cookie` header.
pub fn http_header_echo() -> Vec<u8> {
    module(
        r#"(import "edgefn" "http_header" (func $header (param i32 i32 i32 i32) (result i32)))
           (import "edgefn" "http_respond" (func $respond (param i32 i32 i32 i32 i32) (result i32)))"#,
        "(local $len i32)
         (if (i32.ge_s (call $header (i32.const 540) (i32.const 13) (i32.const 1024) (i32.const 64)) (i32.const 0))
           (then unreachable))
         (if (i32.ge_s (call $header (i32.const 560) (i32.const 6) (i32.const 1024) (i32.const 64)) (i32.const 0))
           (then unreachable))
         (local.set $len (call $header (i32.const 512) (i32.const 6) (i32.const 1024) (i32.const 64)))
         (drop (call $respond (i32.const 200) (i32.const 520) (i32.const 10) (i32.const 1024)
               (select (local.get $len) (i32.const 0) (i32.ge_s (local.get $len) (i32.const 0)))))
         i32.const 0",
        r#"(data (i32.const 512) "X-ROOM") (data (i32.const 520) "text/plain")
           (data (i32.const 540) "authorization") (data (i32.const 560) "cookie")"#,
    )
}

/// On every event, adds one to the 8-byte counter under `count` with
/// `state_cas` (reading it again when another instance got there first), then
/// publishes the new value in decimal to `count` at QoS 1. `tag` only changes
/// the module's bytes: a new version that does the same.
pub fn counter(tag: &str) -> Vec<u8> {
    counter_by(1, tag)
}

/// [`counter`] adding `step` instead of one: a version that does otherwise.
pub fn counter_by(step: i64, tag: &str) -> Vec<u8> {
    module(
        r#"(import "edgefn" "state_get" (func $get (param i32 i32 i32 i32) (result i32)))
           (import "edgefn" "state_cas" (func $cas (param i32 i32 i32 i32 i32 i32) (result i32)))
           (import "edgefn" "publish" (func $publish (param i32 i32 i32 i32 i32 i32) (result i32)))"#,
        &"(local $len i32) (local $r i32) (local $p i32)
         (loop $retry
           ;; the old value at 1008 (8 bytes), or none
           (local.set $len (call $get (i32.const 2048) (i32.const 5) (i32.const 1008) (i32.const 8)))
           (if (i32.lt_s (local.get $len) (i32.const 0)) (then (i64.store (i32.const 1008) (i64.const 0))))
           (i64.store (i32.const 1016) (i64.add (i64.load (i32.const 1008)) (i64.const STEP)))
           (local.set $r (call $cas (i32.const 2048) (i32.const 5) (i32.const 1008)
             (select (i32.const 8) (i32.const -1) (i32.ge_s (local.get $len) (i32.const 0)))
             (i32.const 1016) (i32.const 8)))
           (br_if $retry (i32.eqz (local.get $r))))
         (if (i32.ne (local.get $r) (i32.const 1)) (then (return (i32.const 7))))
         (local.set $p (call $dec (i64.load (i32.const 1016)) (i32.const 1000)))
         (drop (call $publish (i32.const 2048) (i32.const 5) (local.get $p)
               (i32.sub (i32.const 1000) (local.get $p)) (i32.const 1) (i32.const 0)))
         i32.const 0"
            .replace("STEP", &step.to_string()),
        &format!(
            r#"(data (i32.const 2048) "count")
               (data (i32.const 3000) "{tag}") {dec}"#,
            dec = DECIMAL
        ),
    )
}
