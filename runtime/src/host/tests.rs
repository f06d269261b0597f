//! The sandbox, tested with small modules written as WAT.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::*;
use crate::config::{FunctionSpec, Limits, ModuleSource};
use crate::event::Event;
use crate::topic::TopicFilter;

const PUBLISH: &str = r#"(import "edgefn" "publish" (func $publish (param i32 i32 i32 i32 i32 i32) (result i32)))"#;

fn module(imports: &str, body: &str, extra: &str) -> String {
    format!(
        r#"(module {imports}
            (memory (export "memory") 1)
            (data (i32.const 16) "cmnd/fan/POWERON")
            (global $calls (mut i32) (i32.const 0))
            (func (export "edgefn_abi_version") (result i32) i32.const 1)
            {extra}
            (func (export "handle") (result i32) {body}))"#
    )
}

fn spec(limits: Limits) -> Arc<FunctionSpec> {
    Arc::new(FunctionSpec {
        name: "test".into(),
        module: ModuleSource::File("test.wasm".into()),
        triggers: vec![crate::trigger::Trigger::Topic(TopicFilter::parse("sensors/#").unwrap())],
        limits,
        config: BTreeMap::from([("field".to_owned(), "temperature".to_owned())]),
        allow: Default::default(),
    })
}

fn load_with(wat: &str, limits: Limits) -> Result<FunctionInstance, LoadError> {
    let loader = Arc::new(Loader::new());
    let module = loader.compile("test.wasm", &wat::parse_str(wat).unwrap())?;
    FunctionInstance::new(loader, module, spec(limits))
}

fn load(wat: &str) -> FunctionInstance {
    load_with(wat, Limits { fuel: 1_000_000, memory_bytes: 1 << 20, ..Limits::default() }).unwrap()
}

fn event() -> Arc<Event> {
    let mut event = Event::message("sensors/a".into(), b"{}".to_vec(), Some("a".into()));
    event.received_ms = 42;
    Arc::new(event)
}

#[track_caller]
fn check_fails(wat: &str, expected: FailReason) {
    let failure = load(wat).invoke(event(), "".into()).unwrap_err();
    assert_eq!(failure.reason, expected);
}

#[test]
fn an_endless_loop_runs_out_of_fuel() {
    check_fails(&module("", "(loop $l (br $l)) i32.const 0", ""), FailReason::OutOfFuel);
}

#[test]
fn a_loop_without_host_calls_stops_at_its_timeout_not_when_its_fuel_runs_out() {
    // Fuel for minutes of interpretation; the clock must stop it first.
    let limits = Limits {
        fuel: 1 << 40,
        memory_bytes: 1 << 20,
        timeout: std::time::Duration::from_millis(20),
        ..Limits::default()
    };
    let mut f = load_with(&module("", "(loop $l (br $l)) i32.const 0", ""), limits).unwrap();
    let failure = f.invoke(event(), "".into()).unwrap_err();
    assert_eq!(failure.reason, FailReason::Timeout);
    // It stopped at a slice's end after the deadline: nowhere near the budget.
    assert!(failure.fuel_used < 1 << 36, "used {} fuel", failure.fuel_used);
    assert!(failure.elapsed >= limits.timeout, "{:?}", failure.elapsed);
}

#[test]
fn fuel_is_counted_across_slices_and_a_budget_spent_is_out_of_fuel() {
    // Three and a half slices of fuel for a loop that counts down from far above.
    let budget = 1_750_000;
    let limits = Limits { fuel: budget, memory_bytes: 1 << 20, ..Limits::default() };
    let body = "(local $n i32) (local.set $n (i32.const 100000000))
                (loop $l (local.set $n (i32.sub (local.get $n) (i32.const 1))) (br_if $l (local.get $n)))
                i32.const 0";
    let failure = load_with(&module("", body, ""), limits).unwrap().invoke(event(), "".into()).unwrap_err();
    assert_eq!(failure.reason, FailReason::OutOfFuel);
    assert!(failure.fuel_used <= budget && failure.fuel_used > budget - 100, "used {}", failure.fuel_used);
    // A loop that ends within the budget (about 1.4 million fuel, three slices)
    // succeeds, its fuel summed over the slices.
    let short = body.replace("100000000", "200000");
    let done = load_with(&module("", &short, ""), limits).unwrap().invoke(event(), "".into()).unwrap();
    assert!(done.fuel_used > 1_000_000 && done.fuel_used < budget, "used {}", done.fuel_used);
}

#[test]
fn growing_memory_past_the_limit_traps() {
    let body = "(loop $l (br_if $l (i32.ne (memory.grow (i32.const 1)) (i32.const -1)))) i32.const 0";
    check_fails(&module("", body, ""), FailReason::MemoryLimit);
}

#[test]
fn endless_recursion_overflows_the_stack() {
    check_fails(&module("", "call $r i32.const 0", "(func $r call $r)"), FailReason::StackOverflow);
}

#[test]
fn a_publish_pointer_outside_memory_is_an_abi_violation() {
    let body =
        "(call $publish (i32.const 65530) (i32.const 14) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0))";
    let failure = load(&module(PUBLISH, body, "")).invoke(event(), "".into()).unwrap_err();
    assert!(
        matches!(&failure.reason, FailReason::Abi(m) if m.contains("65530..65544") && m.contains("65536")),
        "{:?}",
        failure.reason
    );
}

#[test]
fn negative_lengths_and_bad_qos_are_abi_violations() {
    let neg = "(call $publish (i32.const 16) (i32.const -1) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0))";
    check_fails(&module(PUBLISH, neg, ""), FailReason::Abi("publish topic: negative length -1".into()));
    let qos = "(call $publish (i32.const 16) (i32.const 14) (i32.const 30) (i32.const 2) (i32.const 3) (i32.const 0))";
    check_fails(&module(PUBLISH, qos, ""), FailReason::Abi("publish: qos 3 is not 0, 1 or 2".into()));
}

#[test]
fn a_successful_publish_is_returned_in_order() {
    let body = "(drop (call $publish (i32.const 16) (i32.const 14) (i32.const 30) (i32.const 2) (i32.const 1) (i32.const 0))) i32.const 0";
    let done = load(&module(PUBLISH, body, "")).invoke(event(), "".into()).unwrap();
    assert_eq!(done.publishes.len(), 1);
    assert_eq!(done.publishes[0].topic, "cmnd/fan/POWER");
    assert_eq!(done.publishes[0].payload, b"ON");
    assert_eq!(done.publishes[0].qos, 1);
    assert!(done.fuel_used > 0);
}

#[test]
fn a_failed_invocation_publishes_nothing() {
    // Publishes, then traps when the payload's length is 4 ("fail").
    let imports =
        format!(r#"{PUBLISH} (import "edgefn" "event_payload" (func $payload (param i32 i32) (result i32)))"#);
    let body =
        "(drop (call $publish (i32.const 16) (i32.const 14) (i32.const 30) (i32.const 2) (i32.const 1) (i32.const 0)))
                (if (i32.eq (call $payload (i32.const 0) (i32.const 0)) (i32.const 4)) (then unreachable)) i32.const 0";
    let mut f = load(&module(&imports, body, ""));
    let with = |payload: &str| Arc::new(Event::message("sensors/a".into(), payload.as_bytes().to_vec(), None));
    let failure = f.invoke(with("fail"), "".into()).unwrap_err();
    assert!(matches!(failure.reason, FailReason::Trap(_)));
    // The next invocation sends its own publish only: the failed one's was
    // dropped, not left buffered for it.
    let done = f.invoke(with("ok"), "".into()).unwrap();
    assert_eq!(done.publishes.len(), 1);
}

#[test]
fn too_many_publishes_are_refused() {
    let one =
        "(drop (call $publish (i32.const 16) (i32.const 14) (i32.const 30) (i32.const 2) (i32.const 1) (i32.const 0)))";
    let wat = module(PUBLISH, &format!("{one} {one} i32.const 0"), "");
    let limits = Limits { max_publishes: 1, ..Limits::default() };
    let failure = load_with(&wat, limits).unwrap().invoke(event(), "".into()).unwrap_err();
    assert!(matches!(&failure.reason, FailReason::Abi(m) if m.contains("max_publishes")), "{:?}", failure.reason);
}

#[test]
fn state_persists_between_invocations_until_a_trap() {
    // Returns how many times it has been called; traps on the third call.
    let body = "(global.set $calls (i32.add (global.get $calls) (i32.const 1)))
                (if (i32.eq (global.get $calls) (i32.const 3)) (then unreachable))
                (i32.sub (i32.const 0) (global.get $calls))";
    let mut f = load(&module("", body, ""));
    assert_eq!(f.invoke(event(), "".into()).unwrap_err().reason, FailReason::ErrorCode(-1));
    assert_eq!(f.invoke(event(), "".into()).unwrap_err().reason, FailReason::ErrorCode(-2));
    assert!(matches!(f.invoke(event(), "".into()).unwrap_err().reason, FailReason::Trap(_)));
    // A fresh instance: the counter starts over.
    assert_eq!(f.invoke(event(), "".into()).unwrap_err().reason, FailReason::ErrorCode(-1));
}

#[test]
fn event_and_config_reach_the_guest() {
    let imports = r#"(import "edgefn" "config_get" (func $cfg (param i32 i32 i32 i32) (result i32)))
                     (import "edgefn" "event_time_ms" (func $time (result i64)))
                     (import "edgefn" "event_device" (func $dev (param i32 i32) (result i32)))"#;
    // "field" is at 100; returns config length + time + device length: 11 + 42 + 1.
    let extra = r#"(data (i32.const 100) "field")"#;
    let body = "(i32.add (i32.add (call $cfg (i32.const 100) (i32.const 5) (i32.const 200) (i32.const 64)) (i32.wrap_i64 (call $time)))
                (call $dev (i32.const 300) (i32.const 8)))";
    let failure = load(&module(imports, body, extra)).invoke(event(), "".into()).unwrap_err();
    assert_eq!(failure.reason, FailReason::ErrorCode(54));
}

#[test]
fn modules_that_break_the_abi_are_refused_at_load_by_name() {
    let err = |wat: &str| load_with(wat, Limits::default()).err().expect("load should fail").to_string();
    let no_handle =
        r#"(module (memory (export "memory") 1) (func (export "edgefn_abi_version") (result i32) i32.const 1))"#;
    assert!(err(no_handle).contains("module test.wasm: does not export `handle`"));
    let wrong_version = module("", "i32.const 0", "").replace("(result i32) i32.const 1)", "(result i32) i32.const 7)");
    assert!(err(&wrong_version).contains("built for ABI version 7"));
    let foreign = module(r#"(import "env" "abort" (func))"#, "i32.const 0", "");
    assert!(err(&foreign).contains("imports env.abort, which edgefn does not provide"));
    let mistyped = module(r#"(import "edgefn" "log" (func (param i32)))"#, "i32.const 0", "");
    assert!(err(&mistyped).contains("imports edgefn.log with type"));
    assert!(!err(&mistyped).contains("FuncType"), "{}", err(&mistyped));
    let big_memory =
        module("", "i32.const 0", "").replace("(memory (export \"memory\") 1)", "(memory (export \"memory\") 100)");
    assert!(err(&big_memory).contains("could not be instantiated"));
}

#[test]
fn a_publish_during_init_fails_the_load_and_says_why() {
    let wat = module(
        PUBLISH,
        "i32.const 0",
        r#"(func (export "init") (result i32)
             (drop (call $publish (i32.const 16) (i32.const 8) (i32.const 16) (i32.const 2) (i32.const 0) (i32.const 0)))
             i32.const 0)"#,
    );
    let Err(LoadError::Init { reason, .. }) = load_with(&wat, Limits::default()) else { panic!("loaded") };
    assert!(reason.contains("publish during init") && reason.contains("send from handle"), "{reason}");
}

const WASI: &str = r#"
    (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
    (import "wasi_snapshot_preview1" "clock_time_get" (func $clock (param i32 i64 i32) (result i32)))
    (import "wasi_snapshot_preview1" "random_get" (func $random (param i32 i32) (result i32)))
    (import "wasi_snapshot_preview1" "path_open" (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
    (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
    (import "wasi_snapshot_preview1" "fd_fdstat_get" (func $fdstat (param i32 i32) (result i32)))"#;

/// Writes "hello\nworld\n" (at 100) to `fd` through one iovec at 200; returns fd_write's errno.
const WRITE: &str = r#"(data (i32.const 100) "hello\nworld\n")
    (func $write (param $fd i32) (result i32)
        (i32.store (i32.const 200) (i32.const 100))
        (i32.store (i32.const 204) (i32.const 12))
        (call $fd_write (local.get $fd) (i32.const 200) (i32.const 1) (i32.const 208)))"#;

#[test]
fn wasi_stdout_and_stderr_become_the_functions_log() {
    let wat = module(WASI, "(drop (call $write (i32.const 1))) (drop (call $write (i32.const 2))) i32.const 0", WRITE);
    let done = load(&wat).invoke(event(), "".into()).unwrap();
    let lines: Vec<(LogLevel, &str)> = done.logs.iter().map(|l| (l.level, l.message.as_str())).collect();
    assert_eq!(
        lines,
        [(LogLevel::Info, "hello"), (LogLevel::Info, "world"), (LogLevel::Warn, "hello"), (LogLevel::Warn, "world")]
    );
}

#[test]
fn wasi_stdout_is_a_terminal_to_libc_so_stdio_flushes_each_line() {
    // fd_fdstat_get(1): filetype character device (2), rights fd_write (64) and
    // no seek (4) or tell (32), what wasi-libc's isatty checks; the filetype and
    // rights are returned as the error code to see them. Fd 0 is no file.
    let stdout = "(drop (call $fdstat (i32.const 1) (i32.const 64))) \
                  (i32.add (i32.load8_u (i32.const 64)) (i32.mul (i32.wrap_i64 (i64.load (i32.const 72))) (i32.const 10)))";
    assert_eq!(
        load(&module(WASI, stdout, "")).invoke(event(), "".into()).unwrap_err().reason,
        FailReason::ErrorCode(642)
    );
    let stdin = "(call $fdstat (i32.const 0) (i32.const 64))";
    assert_eq!(load(&module(WASI, stdin, "")).invoke(event(), "".into()).unwrap_err().reason, FailReason::ErrorCode(8));
}

#[test]
fn wasi_calls_without_files_or_sockets_return_errors_not_traps() {
    // fd 3 is no file; path_open is not provided: EBADF (8) and ENOSYS (52),
    // handed back as the function's error code to see them.
    let bad_fd = module(WASI, "(call $write (i32.const 3))", WRITE);
    assert_eq!(load(&bad_fd).invoke(event(), "".into()).unwrap_err().reason, FailReason::ErrorCode(8));
    let open = "(call $path_open (i32.const 3) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) \
                (i64.const 0) (i64.const 0) (i32.const 0) (i32.const 0))";
    assert_eq!(load(&module(WASI, open, "")).invoke(event(), "".into()).unwrap_err().reason, FailReason::ErrorCode(52));
}

#[test]
fn wasi_clock_and_random_work_and_check_their_pointers() {
    // The realtime clock in seconds, as the error code: within a minute of now.
    let clock = "(drop (call $clock (i32.const 0) (i64.const 1) (i32.const 64))) \
                 (i32.wrap_i64 (i64.div_u (i64.load (i32.const 64)) (i64.const 1000000000)))";
    let now_s = (crate::event::unix_ms() / 1000) as i32;
    match load(&module(WASI, clock, "")).invoke(event(), "".into()).unwrap_err().reason {
        FailReason::ErrorCode(s) => assert!((s - now_s).abs() < 60, "{s} vs {now_s}"),
        other => panic!("{other:?}"),
    }
    // 64 random bytes are not all zero; a buffer past memory's end is EFAULT (21).
    let random = "(drop (call $random (i32.const 64) (i32.const 64))) \
                  (i64.or (i64.load (i32.const 64)) (i64.load (i32.const 120))) (i64.eqz) (if (then unreachable)) \
                  (call $random (i32.const 65530) (i32.const 64))";
    assert_eq!(
        load(&module(WASI, random, "")).invoke(event(), "".into()).unwrap_err().reason,
        FailReason::ErrorCode(21)
    );
}

#[test]
fn wasi_proc_exit_ends_the_invocation_with_its_code() {
    let publish_then_exit = |code: i32| {
        let imports = format!("{WASI}{PUBLISH}");
        let body = format!(
            "(drop (call $publish (i32.const 16) (i32.const 14) (i32.const 30) (i32.const 2) (i32.const 0) (i32.const 0))) \
             (call $exit (i32.const {code})) i32.const 0"
        );
        load(&module(&imports, &body, "")).invoke(event(), "".into())
    };
    // exit(0): a success, and what it published goes out.
    assert_eq!(publish_then_exit(0).unwrap().publishes.len(), 1);
    assert_eq!(publish_then_exit(3).unwrap_err().reason, FailReason::ErrorCode(3));
}

#[test]
fn a_wasi_import_with_the_wrong_type_is_refused_naming_it() {
    let wat =
        module(r#"(import "wasi_snapshot_preview1" "fd_write" (func (param i32) (result i32)))"#, "i32.const 0", "");
    let err = load_with(&wat, Limits::default()).err().unwrap().to_string();
    assert!(err.contains("wasi_snapshot_preview1.fd_write") && err.contains("(i32, i32, i32, i32) -> i32"), "{err}");
}

#[test]
fn upstream_tells_the_function_while_the_outbox_refuses_records() {
    // An outbox whose disk reserve exceeds the free space refuses its first
    // records, and its gate stays closed; `upstream` then returns -3 (as the
    // error code, to see it) and the record counts as refused, not buffered.
    let dir = tempfile::tempdir().unwrap();
    let free = crate::outbox::free_bytes(dir.path()).unwrap();
    let cfg = crate::outbox::OutboxConfig {
        role: crate::outbox::Role::Upstream,
        dir: dir.path().to_owned(),
        durability: crate::outbox::Durability::Batch,
        max_bytes: 1 << 20,
        segment_bytes: 64 << 10,
        ttl: std::time::Duration::from_secs(60),
        overflow: crate::outbox::Overflow::Refuse,
        queue: 8,
        max_record_bytes: 1024,
        commit_window: std::time::Duration::ZERO,
        min_free_bytes: free + (1 << 30),
    };
    let (outbox, _) = crate::outbox::Outbox::open(cfg).unwrap();
    let loader = Arc::new(Loader::new().with_outbox(outbox.gate()));
    let wat = module(
        r#"(import "edgefn" "upstream" (func $upstream (param i32 i32 i32 i32) (result i32)))"#,
        "(call $upstream (i32.const 16) (i32.const 4) (i32.const 20) (i32.const 2))",
        "",
    );
    let module = loader.compile("test.wasm", &wat::parse_str(&wat).unwrap()).unwrap();
    let mut instance = FunctionInstance::new(loader, module, spec(Limits::default())).unwrap();
    // Accepting: the record is buffered (0, a success).
    assert_eq!(instance.invoke(event(), "".into()).unwrap().upstream.len(), 1);
    assert!(outbox.append(vec![("cmnd".into(), b"ON".to_vec())]).is_err());
    assert_eq!(instance.invoke(event(), "".into()).unwrap_err().reason, FailReason::ErrorCode(-3));
    assert_eq!(outbox.status().refused, 2, "the refused append and the record refused at the gate");
    outbox.close();
}

#[cfg(target_os = "linux")]
#[test]
fn a_new_instance_keeps_resident_only_the_pages_of_its_memory_that_hold_data() {
    // 1 MiB of memory, as a function built with rustc's default stack has.
    let wat = r#"(module
        (memory (export "memory") 16)
        (data (i32.const 16) "hello")
        (func (export "edgefn_abi_version") (result i32) i32.const 1)
        (func (export "handle") (result i32) (i32.store8 (i32.const 524288) (i32.const 7)) i32.const 0))"#;
    let mut instance = load_with(wat, Limits { fuel: 1_000_000, memory_bytes: 2 << 20, ..Limits::default() }).unwrap();
    let pages = super::resident::resident_pages(instance.memory_for_test());
    let resident = pages.iter().filter(|&&r| r).count();
    assert!(resident <= 2, "{resident} of {} pages resident before any call", pages.len());
    instance.invoke(event(), "".into()).unwrap();
    let memory = instance.memory_for_test();
    assert_eq!(&memory[16..21], b"hello");
    assert_eq!(memory[524288], 7);
    assert_eq!(memory.iter().filter(|&&b| b != 0).count(), 6, "released pages read as zeros");
}

/// Publishes to topic `out` the 8 bytes of
/// `now_ms`, 8 random bytes and the config value of `field`.
const READS_THE_WORLD: &str = r#"(import "edgefn" "now_ms" (func $now (result i64)))
    (import "wasi_snapshot_preview1" "random_get" (func $random (param i32 i32) (result i32)))
    (import "edgefn" "config_get" (func $config (param i32 i32 i32 i32) (result i32)))"#;

fn reads_the_world() -> String {
    module(
        &format!("{READS_THE_WORLD} {PUBLISH}"),
        r#"(local $n i32)
           (i64.store (i32.const 200) (call $now))
           (drop (call $random (i32.const 208) (i32.const 8)))
           (local.set $n (call $config (i32.const 100) (i32.const 5) (i32.const 216) (i32.const 64)))
           (drop (call $publish (i32.const 120) (i32.const 3) (i32.const 200) (i32.add (i32.const 16) (local.get $n))
             (i32.const 0) (i32.const 0)))
           i32.const 0"#,
        r#"(data (i32.const 100) "field") (data (i32.const 120) "out")"#,
    )
}

#[test]
fn on_a_tape_the_clock_random_bytes_and_config_are_recorded_and_given_back() {
    let wat = reads_the_world();
    let mut live = load(&wat);
    let (done, tape) = live.invoke_on_tape(event(), "sensors/#".into(), Some(Tape::recording()));
    let recorded = done.unwrap().publishes[0].payload.clone();
    let tape = tape.unwrap();
    assert_eq!(&recorded[16..], b"temperature");
    let calls: Vec<&str> = tape.answers.iter().map(|a| a.call.as_str()).collect();
    assert_eq!(calls, ["now_ms", "random_get", "config_get", "may_publish"]);

    // Another instance, another config, a later clock: the tape's answers win.
    let loader = Arc::new(Loader::new());
    let module = loader.compile("test.wasm", &wat::parse_str(&wat).unwrap()).unwrap();
    let mut other = (*spec(Limits::default())).clone();
    other.config.insert("field".into(), "humidity".into());
    let mut replay = FunctionInstance::new(loader, module, Arc::new(other)).unwrap();
    let (again, replayed) =
        replay.invoke_on_tape(event(), "sensors/#".into(), Some(Tape::replaying(&tape.answers, 42)));
    assert_eq!(again.unwrap().publishes[0].payload, recorded);
    assert_eq!(replayed.unwrap().effects, tape.effects);

    // A replay the recording has no answers for: the event's clock, zeros for
    // random bytes, and the replaying host's own config.
    let (bare, _) = live.invoke_on_tape(event(), "sensors/#".into(), Some(Tape::replaying(&[], 42)));
    let bare = bare.unwrap().publishes[0].payload.clone();
    assert_eq!(&bare[..16], &[42, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(&bare[16..], b"temperature");
}
