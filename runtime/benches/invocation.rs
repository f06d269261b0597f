//! Prints what running functions costs on this machine, as tables of figures to
//! watch, never a pass/fail test (this machine is shared; compare ratios measured in
//! one run, not absolute times across runs):
//!
//! 1. invocation overhead: `FunctionInstance::invoke` on the built-in `threshold`
//!    against a raw wasmi call of the same module's `handle` (a bare linker whose
//!    host functions only copy preset bytes), with and without fuel metering;
//! 2. cold start: compile + instantiate (ABI check, init) + first invoke, for a tiny
//!    ABI v1 module, the built-in `threshold`, and a generated ~500 KB module;
//! 3. routing: `topic::Router` against a linear scan of `TopicFilter::matches`
//!    for 1 to 10,000 filters.
//!
//! `cargo bench --bench invocation` (quick: `-- --quick` or `EDGEFN_BENCH_QUICK=1`).
//! For callgrind: `EDGEFN_BENCH_ONLY=edgefn|raw EDGEFN_BENCH_ITERS=N` runs just that
//! invocation loop (`edgefn_loop` / `raw_loop`, never inlined) and exits.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use edgefn::config::{FunctionSpec, Limits, ModuleSource};
use edgefn::event::Event;
use edgefn::host::{FunctionInstance, Loader};
use edgefn::topic::{Router, TopicFilter};

/// Rounds per measurement; the best (least disturbed) round counts.
const ROUNDS: usize = 5;

fn main() {
    let quick = std::env::args().any(|a| a == "--quick")
        || std::env::var("EDGEFN_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
    if let Ok(only) = std::env::var("EDGEFN_BENCH_ONLY") {
        let iters = std::env::var("EDGEFN_BENCH_ITERS").ok().and_then(|v| v.parse().ok()).unwrap_or(20_000);
        profile_only(&only, iters);
        return;
    }
    print_machine(quick);
    invocation_overhead(quick);
    cold_start(quick);
    routing(quick);
}

fn print_machine(quick: bool) {
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("model name")).map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into());
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load: Vec<&str> = load.split_whitespace().take(3).collect();
    println!("edgefn invocation bench{}", if quick { " (QUICK mode: fewer iterations)" } else { "" });
    println!(
        "machine: nproc {cpus}, CPU {model}, load average {} (shared machine: compare ratios within this run)",
        load.join(" ")
    );
    println!("reproduce: cargo bench --bench invocation   (quick: cargo bench --bench invocation -- --quick)");
    println!();
}

// ---------------------------------------------------------------------------
// 1. Invocation overhead

const TEMPERATURES: [f64; 4] = [24.0, 26.5, 29.0, 27.0];
const TOPIC: &str = "zigbee2mqtt/climate";
const TRIGGER: &str = "zigbee2mqtt/+";
const DEVICE: &str = "climate";

fn payload(t: f64) -> Vec<u8> {
    format!(r#"{{"temperature":{t},"humidity":61.5,"linkquality":120}}"#).into_bytes()
}

fn threshold_config() -> BTreeMap<String, String> {
    [("field", "temperature"), ("above", "28"), ("below", "25"), ("command_topic", "cmnd/fan/POWER")]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn spec(name: &str, module: ModuleSource, config: BTreeMap<String, String>) -> Arc<FunctionSpec> {
    Arc::new(FunctionSpec {
        name: name.into(),
        module,
        triggers: vec![edgefn::trigger::Trigger::Topic(TopicFilter::parse(TRIGGER).unwrap())],
        limits: Limits::default(),
        config,
        allow: Default::default(),
    })
}

fn threshold_bytes() -> &'static [u8] {
    edgefn::builtin::module("threshold").expect("builtin threshold exists")
}

/// The edgefn side: the built-in threshold behind `FunctionInstance::invoke`.
struct EdgefnBench {
    instance: FunctionInstance,
    events: Vec<Arc<Event>>,
}

impl EdgefnBench {
    fn new() -> Self {
        let loader = Arc::new(Loader::new());
        let module = loader.compile("builtin:threshold", threshold_bytes()).unwrap();
        let spec = spec("threshold", ModuleSource::Builtin("threshold".into()), threshold_config());
        let instance = FunctionInstance::new(loader, module, spec).unwrap();
        let events = TEMPERATURES
            .iter()
            .map(|&t| Arc::new(Event::message(TOPIC.into(), payload(t), Some(DEVICE.into()))))
            .collect();
        EdgefnBench { instance, events }
    }
}

/// Runs `n` invocations; returns (publishes, logs, fuel) summed.
#[inline(never)]
fn edgefn_loop(b: &mut EdgefnBench, n: usize) -> (usize, usize, u64) {
    let (mut publishes, mut logs, mut fuel) = (0, 0, 0);
    for i in 0..n {
        let done = b.instance.invoke(b.events[i % b.events.len()].clone(), "".into()).unwrap();
        publishes += done.publishes.len();
        logs += done.logs.len();
        fuel += done.fuel_used;
        black_box(&done);
    }
    (publishes, logs, fuel)
}

/// The raw side's store data: preset event bytes, one per temperature, and a sink the
/// host functions fold the bytes they read into.
struct RawState {
    memory: Option<wasmi::Memory>,
    payloads: Vec<Vec<u8>>,
    current: usize,
    config: Vec<(Vec<u8>, Vec<u8>)>,
    publishes: usize,
    logs: usize,
    sink: u64,
}

/// The ABI's copy rule, without the checks: copies `value` if it fits, returns its length.
fn copy_in(mem: &mut [u8], buf: i32, cap: i32, value: &[u8]) -> i32 {
    if cap >= 0 && value.len() <= cap as usize {
        let start = buf as u32 as usize;
        mem[start..start + value.len()].copy_from_slice(value);
    }
    value.len() as i32
}

fn read(mem: &[u8], ptr: i32, len: i32) -> &[u8] {
    let start = ptr as u32 as usize;
    &mem[start..start + len as usize]
}

fn fold(sink: &mut u64, bytes: &[u8]) {
    *sink = sink.wrapping_add(bytes.len() as u64).wrapping_add(bytes.first().copied().unwrap_or(0) as u64);
    black_box(bytes);
}

/// The raw side: one engine, a linker with the most direct ABI v1 imports, one store,
/// instantiated once, `init` called once.
struct RawBench {
    store: wasmi::Store<RawState>,
    handle: wasmi::TypedFunc<(), i32>,
    fuel: bool,
}

impl RawBench {
    fn new(fuel: bool) -> Self {
        use wasmi::{Caller, CompilationMode, Config, EnforcedLimits, Engine, Linker, Module, Store};
        let mut config = Config::default();
        // The loader's configuration, with fuel on or off.
        config
            .consume_fuel(fuel)
            .set_max_recursion_depth(1024)
            .compilation_mode(CompilationMode::LazyTranslation)
            .enforced_limits(EnforcedLimits::strict());
        let engine = Engine::new(&config);
        let module = Module::new(&engine, threshold_bytes()).unwrap();
        let mut linker = Linker::<RawState>::new(&engine);
        let m = "edgefn";
        fn mem_state<'a>(c: &'a mut Caller<'_, RawState>) -> (&'a mut [u8], &'a mut RawState) {
            let memory = c.data().memory.expect("memory cached");
            memory.data_and_store_mut(c)
        }
        linker
            .func_wrap(m, "event_topic", |mut c: Caller<'_, RawState>, buf: i32, cap: i32| {
                let (mem, _) = mem_state(&mut c);
                copy_in(mem, buf, cap, TOPIC.as_bytes())
            })
            .unwrap()
            .func_wrap(m, "event_payload", |mut c: Caller<'_, RawState>, buf: i32, cap: i32| {
                let (mem, st) = mem_state(&mut c);
                copy_in(mem, buf, cap, &st.payloads[st.current])
            })
            .unwrap()
            .func_wrap(m, "event_device", |mut c: Caller<'_, RawState>, buf: i32, cap: i32| {
                let (mem, _) = mem_state(&mut c);
                copy_in(mem, buf, cap, DEVICE.as_bytes())
            })
            .unwrap()
            .func_wrap(m, "event_trigger", |mut c: Caller<'_, RawState>, buf: i32, cap: i32| {
                let (mem, _) = mem_state(&mut c);
                copy_in(mem, buf, cap, TRIGGER.as_bytes())
            })
            .unwrap()
            .func_wrap(m, "event_time_ms", |_: Caller<'_, RawState>| 0i64)
            .unwrap()
            .func_wrap(m, "now_ms", |_: Caller<'_, RawState>| 0i64)
            .unwrap()
            .func_wrap(m, "config_get", |mut c: Caller<'_, RawState>, key: i32, key_len: i32, buf: i32, cap: i32| {
                let (mem, st) = mem_state(&mut c);
                let key = read(mem, key, key_len).to_vec();
                match st.config.iter().find(|(k, _)| *k == key) {
                    Some((_, v)) => copy_in(mem, buf, cap, v),
                    None => -1,
                }
            })
            .unwrap()
            .func_wrap(
                m,
                "publish",
                |mut c: Caller<'_, RawState>,
                 topic: i32,
                 topic_len: i32,
                 payload: i32,
                 payload_len: i32,
                 _qos: i32,
                 _retain: i32| {
                    let (mem, st) = mem_state(&mut c);
                    fold(&mut st.sink, read(mem, topic, topic_len));
                    fold(&mut st.sink, read(mem, payload, payload_len));
                    st.publishes += 1;
                    0i32
                },
            )
            .unwrap()
            .func_wrap(m, "upstream", |_: Caller<'_, RawState>, _: i32, _: i32, _: i32, _: i32| -1i32)
            .unwrap()
            // The built-in reads a device profile's reading first: the bench's
            // device has none (length 0), as a plain JSON device on a gateway.
            .func_wrap(m, "event_reading", |_: Caller<'_, RawState>, _: i32, _: i32| 0i32)
            .unwrap()
            // `command_device` is not configured here: never called.
            .func_wrap(m, "command", |_: Caller<'_, RawState>, _: i32, _: i32, _: i32, _: i32| -6i32)
            .unwrap()
            .func_wrap(m, "log", |mut c: Caller<'_, RawState>, _level: i32, msg: i32, msg_len: i32| {
                let (mem, st) = mem_state(&mut c);
                fold(&mut st.sink, read(mem, msg, msg_len));
                st.logs += 1;
            })
            .unwrap();
        let state = RawState {
            memory: None,
            payloads: TEMPERATURES.iter().map(|&t| payload(t)).collect(),
            current: 0,
            config: threshold_config().into_iter().map(|(k, v)| (k.into_bytes(), v.into_bytes())).collect(),
            publishes: 0,
            logs: 0,
            sink: 0,
        };
        let mut store = Store::new(&engine, state);
        if fuel {
            // One budget for the whole run, set once: metering stays on in the
            // interpreter, but no per-call host bookkeeping.
            store.set_fuel(u64::MAX / 2).unwrap();
        }
        let instance = linker.instantiate_and_start(&mut store, &module).unwrap();
        store.data_mut().memory = instance.get_memory(&store, "memory");
        let init = instance.get_typed_func::<(), i32>(&store, "init").unwrap();
        assert_eq!(init.call(&mut store, ()).unwrap(), 0);
        let handle = instance.get_typed_func::<(), i32>(&store, "handle").unwrap();
        RawBench { store, handle, fuel }
    }
}

/// Runs `n` raw calls of `handle`; returns (publishes, logs) made by them.
#[inline(never)]
fn raw_loop(b: &mut RawBench, n: usize) -> (usize, usize) {
    let (p0, l0) = (b.store.data().publishes, b.store.data().logs);
    for i in 0..n {
        b.store.data_mut().current = i % TEMPERATURES.len();
        let code = b.handle.call(&mut b.store, ()).unwrap();
        debug_assert_eq!(code, 0);
        black_box(code);
    }
    let st = b.store.data();
    (st.publishes - p0, st.logs - l0)
}

fn per_call(d: Duration, n: usize) -> f64 {
    d.as_secs_f64() * 1e9 / n as f64
}

fn invocation_overhead(quick: bool) {
    let n = if quick { 20_000 } else { 200_000 };
    let mut edge = EdgefnBench::new();
    let mut raw_fuel = RawBench::new(true);
    let mut raw_plain = RawBench::new(false);
    assert!(raw_fuel.fuel && !raw_plain.fuel);

    // Warm up (and check both sides do the same work per 4 events).
    let (ep, el, _) = edgefn_loop(&mut edge, 4_000);
    let (rp, rl) = raw_loop(&mut raw_fuel, 4_000);
    let (np, nl) = raw_loop(&mut raw_plain, 4_000);
    assert_eq!((ep, el), (rp, rl), "edgefn and raw must publish and log the same");
    assert_eq!((rp, rl), (np, nl));

    // Each round runs `n` invocations of every variant, interleaved in chunks of
    // CHUNK so that the three see the same machine load (this machine is shared).
    const CHUNK: usize = 1_000;
    let mut best = [f64::INFINITY; 3];
    let mut fuel_per = 0;
    let mut publishes = [0usize; 3];
    for _ in 0..ROUNDS {
        let mut spent = [Duration::ZERO; 3];
        let (mut fuel, mut p) = (0u64, [0usize; 3]);
        for _ in 0..n / CHUNK {
            let t = Instant::now();
            let (ep, _, ef) = edgefn_loop(&mut edge, CHUNK);
            spent[0] += t.elapsed();
            let t = Instant::now();
            let (fp, _) = raw_loop(&mut raw_fuel, CHUNK);
            spent[1] += t.elapsed();
            let t = Instant::now();
            let (np, _) = raw_loop(&mut raw_plain, CHUNK);
            spent[2] += t.elapsed();
            fuel += ef;
            p[0] += ep;
            p[1] += fp;
            p[2] += np;
        }
        for (b, s) in best.iter_mut().zip(spent) {
            *b = b.min(per_call(s, n / CHUNK * CHUNK));
        }
        fuel_per = fuel / n as u64;
        publishes = p;
    }
    assert!(publishes.iter().all(|&p| p == publishes[0]));
    let [edge_ns, fuel_ns, plain_ns] = best;
    let overhead = edge_ns - fuel_ns;

    println!(
        "1. Invocation overhead: builtin threshold ({} bytes), {n} invocations per variant x best of {ROUNDS} rounds, variants interleaved every 1,000",
        threshold_bytes().len()
    );
    println!("   same input cycled: temperature 24, 26.5, 29, 27 -> {} publishes + {} logs per 4 events; {fuel_per} fuel/invocation", ep * 4 / 4_000, el * 4 / 4_000);
    println!("   {:<62} {:>10} {:>8}", "variant", "us/call", "x raw");
    let row = |name: &str, ns: f64| println!("   {:<62} {:>10.3} {:>8.2}", name, ns / 1e3, ns / fuel_ns);
    row("edgefn FunctionInstance::invoke (fuel reset per call)", edge_ns);
    row("raw wasmi handle.call, fuel metered (budget set once)", fuel_ns);
    row("raw wasmi handle.call, no fuel metering", plain_ns);
    println!(
        "   overhead = edgefn - raw(fuel)    = {:>7.3} us/invocation  (target <= 2 us: {})",
        overhead / 1e3,
        if overhead <= 2_000.0 { "met" } else { "NOT met" }
    );
    println!(
        "   overhead = edgefn - raw(no fuel) = {:>7.3} us/invocation  (includes fuel metering in the interpreter)",
        (edge_ns - plain_ns) / 1e3
    );
    println!(
        "   fuel metering in the interpreter = {:>7.3} us/invocation  (raw fuel - raw no fuel)",
        (fuel_ns - plain_ns) / 1e3
    );
    println!(
        "   for scale: Instant::now() = {:.1} ns here (invoke reads the clock 2x, plus once per host call)",
        instant_now_ns(n)
    );
    println!();
}

/// What one `Instant::now()` costs, best of the rounds.
fn instant_now_ns(n: usize) -> f64 {
    let mut best = f64::INFINITY;
    for _ in 0..ROUNDS {
        let t = Instant::now();
        for _ in 0..n {
            black_box(Instant::now());
        }
        best = best.min(per_call(t.elapsed(), n));
    }
    best
}

/// Runs one of the invocation loops alone, for `valgrind --tool=callgrind
/// --toggle-collect=*edgefn_loop*` (or `*raw_loop*`).
fn profile_only(which: &str, iters: usize) {
    match which {
        "edgefn" => {
            let mut b = EdgefnBench::new();
            println!("edgefn_loop x {iters}: {:?}", edgefn_loop(&mut b, iters));
        }
        "raw" => {
            let mut b = RawBench::new(true);
            println!("raw_loop (fuel) x {iters}: {:?}", raw_loop(&mut b, iters));
        }
        "raw-nofuel" => {
            let mut b = RawBench::new(false);
            println!("raw_loop (no fuel) x {iters}: {:?}", raw_loop(&mut b, iters));
        }
        other => panic!("EDGEFN_BENCH_ONLY={other}: expected edgefn, raw or raw-nofuel"),
    }
}

// ---------------------------------------------------------------------------
// 2. Cold start

/// The smallest useful ABI v1 module: handle publishes "ON" to cmnd/small once.
const SMALL_WAT: &str = r#"(module
  (import "edgefn" "publish" (func $publish (param i32 i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "cmnd/smallON")
  (func (export "edgefn_abi_version") (result i32) i32.const 1)
  (func (export "handle") (result i32)
    (drop (call $publish (i32.const 16) (i32.const 10) (i32.const 26) (i32.const 2) (i32.const 0) (i32.const 0)))
    i32.const 0))"#;

/// An ABI v1 module of about `target` bytes: many arithmetic functions (about 3/4 of the
/// bytes) and one data segment (the rest); `init` and `handle` call into the code, and
/// `handle` publishes once.
fn big_wat(functions: usize, data_bytes: usize) -> String {
    let mut w = String::with_capacity(functions * 700 + data_bytes * 3 + 1024);
    w.push_str("(module\n");
    w.push_str("  (import \"edgefn\" \"publish\" (func $publish (param i32 i32 i32 i32 i32 i32) (result i32)))\n");
    w.push_str("  (import \"edgefn\" \"config_get\" (func $config_get (param i32 i32 i32 i32) (result i32)))\n");
    w.push_str("  (memory (export \"memory\") 4)\n");
    w.push_str("  (global $state (mut i32) (i32.const 0))\n");
    w.push_str("  (data (i32.const 16) \"cmnd/bigON\")\n");
    // Pseudo-random bytes so the segment is not trivially compressible.
    w.push_str("  (data (i32.const 1024) \"");
    let mut x: u32 = 0x9e37_79b9;
    for _ in 0..data_bytes {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        let _ = write!(w, "\\{:02x}", x as u8);
    }
    w.push_str("\")\n");
    for i in 0..functions {
        let _ = writeln!(w, "  (func $f{i} (param i32) (result i32) (local i32)");
        for k in 0..14u32 {
            let c1 = (i as u32).wrapping_mul(2_654_435_761).wrapping_add(k * 97_531) & 0x0fff_ffff;
            let c2 = (k + 3) * 1_000_003 + i as u32;
            let _ = writeln!(
                w,
                "    local.get 0 i32.const {c1} i32.xor i32.const {c2} i32.mul local.get 1 i32.add local.set 0 local.get 0 i32.const 7 i32.rotl local.set 1"
            );
        }
        // Each function calls the next one, so the code forms one chain.
        if i + 1 < functions {
            let _ = write!(w, "    local.get 0 i32.const 1 i32.and (if (result i32) (then local.get 1) (else local.get 0 call $f{}))\n  )\n", i + 1);
        } else {
            w.push_str("    local.get 1\n  )\n");
        }
    }
    w.push_str("  (func (export \"edgefn_abi_version\") (result i32) i32.const 1)\n");
    w.push_str("  (func (export \"init\") (result i32) (global.set $state (call $f0 (i32.const 41))) i32.const 0)\n");
    w.push_str(
        "  (func (export \"handle\") (result i32)
    (global.set $state (call $f0 (global.get $state)))
    (drop (call $publish (i32.const 16) (i32.const 8) (i32.const 24) (i32.const 2) (i32.const 0) (i32.const 0)))
    i32.const 0)\n",
    );
    w.push_str(")\n");
    w
}

/// A big module as close to `target` bytes as a few tries get.
fn big_module(target: usize) -> Vec<u8> {
    let data = target / 4;
    let mut functions = 1_000;
    let mut bytes = wat::parse_str(big_wat(functions, data)).unwrap();
    for _ in 0..3 {
        let code = bytes.len() - data;
        functions = (functions as f64 * (target - data) as f64 / code as f64).round() as usize;
        bytes = wat::parse_str(big_wat(functions, data)).unwrap();
    }
    bytes
}

struct ColdRun {
    compile: Duration,
    instantiate: Duration,
    first: Duration,
    total: Duration,
}

fn cold_once(bytes: &[u8], spec: &Arc<FunctionSpec>, event: &Arc<Event>) -> ColdRun {
    // One loader per run (the gateway has one per process): no run reuses another's
    // compiled code. Its creation (engine + linker) is outside the timed span.
    let loader = Arc::new(Loader::new());
    let t0 = Instant::now();
    let module = loader.compile(&spec.name, bytes).unwrap();
    let t1 = Instant::now();
    let mut instance = FunctionInstance::new(loader.clone(), module, spec.clone()).unwrap();
    let t2 = Instant::now();
    let done = instance.invoke(event.clone(), "".into()).unwrap();
    let t3 = Instant::now();
    assert_eq!(done.publishes.len(), 1, "{}: first invocation must publish once", spec.name);
    black_box(&done);
    drop(instance);
    ColdRun { compile: t1 - t0, instantiate: t2 - t1, first: t3 - t2, total: t3 - t0 }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn cold_start(quick: bool) {
    let runs = if quick { 7 } else { 21 };
    let small = wat::parse_str(SMALL_WAT).unwrap();
    let big = big_module(500 * 1024);
    let threshold_event = Arc::new(Event::message(TOPIC.into(), payload(29.0), Some(DEVICE.into())));
    let plain_event = Arc::new(Event::message("zigbee2mqtt/x".into(), b"{}".to_vec(), None));
    let file = |n: &str| ModuleSource::File(n.into());
    type Case = (&'static str, Vec<u8>, Arc<FunctionSpec>, Arc<Event>);
    let cases: Vec<Case> = vec![
        (
            "tiny WAT module (handle publishes once)",
            small,
            spec("small", file("small.wasm"), BTreeMap::new()),
            plain_event.clone(),
        ),
        (
            "builtin threshold (Rust SDK)",
            threshold_bytes().to_vec(),
            spec("threshold", ModuleSource::Builtin("threshold".into()), threshold_config()),
            threshold_event,
        ),
        ("generated big module (code + data)", big, spec("big", file("big.wasm"), BTreeMap::new()), plain_event),
    ];
    // Warm-up: page in the code paths once.
    for (_, bytes, spec, event) in &cases {
        cold_once(bytes, spec, event);
    }
    println!("2. Cold start: Loader::compile + FunctionInstance::new (instantiate, ABI check, init) + first invoke");
    println!("   median of {runs} runs (runs interleaved across modules); a fresh Loader per run, created outside the timing");
    println!(
        "   {:<42} {:>9} {:>11} {:>11} {:>11} {:>11} {:>11}",
        "module", "bytes", "compile ms", "instant. ms", "1st inv ms", "total ms", "(min..max)"
    );
    let mut results: Vec<Vec<ColdRun>> = cases.iter().map(|_| Vec::new()).collect();
    for _ in 0..runs {
        for (i, (_, bytes, spec, event)) in cases.iter().enumerate() {
            results[i].push(cold_once(bytes, spec, event));
        }
    }
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let mut small_total = Duration::ZERO;
    for (i, (name, bytes, _, _)) in cases.iter().enumerate() {
        let r = &results[i];
        let total = median(r.iter().map(|c| c.total).collect());
        let (lo, hi) = (r.iter().map(|c| c.total).min().unwrap(), r.iter().map(|c| c.total).max().unwrap());
        if i == 0 {
            small_total = total;
        }
        println!(
            "   {:<42} {:>9} {:>11.3} {:>11.3} {:>11.3} {:>11.3} {:>5.2}..{:.2}",
            name,
            bytes.len(),
            ms(median(r.iter().map(|c| c.compile).collect())),
            ms(median(r.iter().map(|c| c.instantiate).collect())),
            ms(median(r.iter().map(|c| c.first).collect())),
            ms(total),
            ms(lo),
            ms(hi),
        );
    }
    let started = Instant::now();
    let loaders: Vec<Loader> = (0..runs).map(|_| Loader::new()).collect();
    let loader_new = started.elapsed() / runs as u32;
    drop(loaders);
    println!(
        "   small module total {:.3} ms (target <= 5 ms: {}); per-column medians need not add up to the total's median",
        ms(small_total),
        if ms(small_total) <= 5.0 { "met" } else { "NOT met" }
    );
    println!("   (for reference, Loader::new, once per gateway: {:.3} ms)", ms(loader_new));
    println!();
}

// ---------------------------------------------------------------------------
// 3. Routing

/// `n` filters: three that match `sensors/dev0/reading` (exact, `+`, `#`), the rest
/// the same three shapes for other devices or readings, so they do not match.
fn filters(n: usize) -> Vec<TopicFilter> {
    (0..n)
        .map(|i| {
            let text = match (i, i % 3) {
                (0, _) => "sensors/dev0/reading".to_owned(),
                (1, _) => "sensors/+/reading".to_owned(),
                (2, _) => "sensors/dev0/#".to_owned(),
                (_, 0) => format!("sensors/dev{i}/reading"),
                (_, 1) => format!("sensors/+/reading{i}"),
                _ => format!("sensors/dev{i}/#"),
            };
            TopicFilter::parse(&text).unwrap()
        })
        .collect()
}

#[inline(never)]
fn trie_lookups(router: &Router<usize>, topic: &str, n: usize, out: &mut Vec<usize>) -> usize {
    let mut found = 0;
    for _ in 0..n {
        out.clear();
        router.matches(black_box(topic), out);
        found += out.len();
    }
    found
}

#[inline(never)]
fn linear_lookups(filters: &[TopicFilter], topic: &str, n: usize, out: &mut Vec<usize>) -> usize {
    let mut found = 0;
    for _ in 0..n {
        out.clear();
        let topic = black_box(topic);
        out.extend(filters.iter().enumerate().filter(|(_, f)| f.matches(topic)).map(|(i, _)| i));
        found += out.len();
    }
    found
}

fn routing(quick: bool) {
    let topic = "sensors/dev0/reading";
    let trie_n = if quick { 100_000 } else { 1_000_000 };
    // About this many filter evaluations per linear round.
    let linear_budget = if quick { 2_000_000 } else { 20_000_000 };
    let sizes = [1usize, 10, 100, 1_000, 10_000];
    println!("3. Routing: one lookup of {topic:?}, best of {ROUNDS} rounds");
    println!(
        "   filters: sensors/devN/reading, sensors/+/readingN, sensors/devN/# (N varies) plus the three matching ones"
    );
    println!(
        "   {:>8} {:>8} {:>14} {:>16} {:>14}",
        "filters", "matches", "trie ns/lookup", "linear ns/lookup", "linear / trie"
    );
    let mut first: Option<(f64, f64)> = None;
    let mut second: Option<(f64, f64)> = None;
    let mut last = (0.0, 0.0);
    for &size in &sizes {
        let filters = filters(size);
        let mut router = Router::new();
        for (i, f) in filters.iter().enumerate() {
            router.insert(f, i);
        }
        let mut out = Vec::new();
        // Both must agree.
        let mut a = Vec::new();
        router.matches(topic, &mut a);
        a.sort();
        let mut b = Vec::new();
        linear_lookups(&filters, topic, 1, &mut b);
        assert_eq!(a, b, "trie and linear scan disagree for {size} filters");
        let linear_n = (linear_budget / size).max(200);
        let (mut trie, mut linear) = (f64::INFINITY, f64::INFINITY);
        for _ in 0..ROUNDS {
            let t = Instant::now();
            black_box(trie_lookups(&router, topic, trie_n, &mut out));
            trie = trie.min(per_call(t.elapsed(), trie_n));
            let t = Instant::now();
            black_box(linear_lookups(&filters, topic, linear_n, &mut out));
            linear = linear.min(per_call(t.elapsed(), linear_n));
        }
        println!("   {:>8} {:>8} {:>14.1} {:>16.1} {:>14.1}", size, a.len(), trie, linear, linear / trie);
        if size == 10 {
            second = Some((trie, linear));
        }
        first.get_or_insert((trie, linear));
        last = (trie, linear);
    }
    let (t1, l1) = first.unwrap();
    let (t10, l10) = second.unwrap();
    println!("   growth 1 -> 10,000 filters (x10,000): trie x{:.2}, linear scan x{:.0}", last.0 / t1, last.1 / l1);
    println!(
        "   growth 10 -> 10,000 filters (x1,000, same 3 matches): trie x{:.2}, linear scan x{:.0}",
        last.0 / t10,
        last.1 / l10
    );
    println!();
}
