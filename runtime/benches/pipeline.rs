//! End-to-end pipeline benchmark: device -> Mosquitto -> X -> Mosquitto -> actuator,
//! where X is (a) the real `edgefn` release binary running `builtin:window-average`
//! or (b) a native Rust forwarder doing the same work (rumqttc + serde_json, no
//! wasm). Both run as separate processes on the same broker, one after the other,
//! in the same run, so every figure is reported as a ratio edgefn / forwarder.
//!
//! `cargo bench --bench pipeline` (add `-- --quick`, or set EDGEFN_BENCH_QUICK=1,
//! for the short version CI runs; `-- --only burst,latency` runs some sections). Nothing here asserts a time: it prints a table
//! and exits non-zero only when a pipeline breaks (X never comes online, exits
//! early, or no derived message ever arrives). Without Mosquitto it prints
//! SKIPPED and exits 0, unless CI is set, where it fails.
//!
//! The work X does per reading on `sensors/devN/reading` (JSON like
//! `{"temperature":1234,"humidity":61.2,...}`, ~95 bytes): parse it, push the
//! `temperature` into the device's window of 10, publish
//! `{"device":"devN","field":"temperature","avg":..,"n":..,"ts":..}` on
//! `actuators/devN/derived`. The k-th reading of a device carries temperature k,
//! so the average of the latest n is k - (n-1)/2: the subscriber recovers which
//! reading each derived message belongs to, and latency is arrival minus that
//! reading's send time (same process, same clock).
//!
//! Cases: 1. burst throughput at QoS 0 and QoS 1; 2. added latency at a fixed
//! 1,000 msg/s; 2b. the same beside two functions that burn their whole fuel on
//! every event (baseline: edgefn alone, in the same run); 4. one CPU-bound
//! function with 1 and N instances (baseline: 1 instance); 3. scaling with 1 / 10 / 100 functions on the same trigger and
//! with 10 vs 10,000 device topics. In the full run each measurement is repeated
//! 3 times, alternating which pipeline goes first, and the median is reported.
//!
//! The forwarder is this binary re-executed with `--forwarder`: one connection
//! for input whose task polls it and does the work inline, one connection for
//! output polled by its own task (the field notes' "separate connections"), so
//! the input task may wait on the output queue without any cycle.

use std::collections::{HashMap, VecDeque};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};

const FIELD: &str = "temperature";
const WINDOW: usize = 10;
const TRIGGER: &str = "sensors/+/reading";
const ONLINE_TIMEOUT: Duration = Duration::from_secs(30);
/// A QoS 0 stream that has been quiet this long is over.
const IDLE_END: Duration = Duration::from_secs(1);
/// No derived message at all this long after the last send: the pipeline is broken.
const NOTHING_TIMEOUT: Duration = Duration::from_secs(20);
const LATENCY_RATE: u64 = 1_000;
/// Noise events a second for each burner in the neighbours case: far more
/// than a function that burns 10 M fuel on each can take.
const NOISE_RATE: u64 = 500;
/// Readings at the start of the latency run left out of the percentiles.
const LATENCY_WARMUP: usize = 100;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--forwarder") {
        forwarder::main(&args[i + 1..]);
        return;
    }
    let quick =
        args.iter().any(|a| a == "--quick") || std::env::var("EDGEFN_BENCH_QUICK").map(|v| v == "1").unwrap_or(false);
    let Some(mosquitto) = ["/usr/sbin/mosquitto", "/usr/bin/mosquitto", "/usr/local/sbin/mosquitto"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
    else {
        if std::env::var_os("CI").is_some() {
            eprintln!("pipeline: mosquitto is not installed (CI is set, so this is a failure)");
            std::process::exit(1);
        }
        println!("pipeline: SKIPPED (mosquitto is not installed; apt-get install mosquitto)");
        return;
    };
    let mut plan = Plan::new(quick);
    if let Some(i) = args.iter().position(|a| a == "--only") {
        let list = args.get(i + 1).unwrap_or_else(|| fail("--only needs a list, e.g. --only burst,latency"));
        plan.only = list.split(',').map(str::to_owned).collect();
        for name in &plan.only {
            if !SECTIONS.contains(&name.as_str()) {
                fail(&format!("--only: unknown section {name:?} (sections: {})", SECTIONS.join(", ")));
            }
        }
    }
    header(&mosquitto, &plan);

    let dir = tempfile::Builder::new()
        .prefix("bench-pipeline-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap_or_else(|e| fail(&format!("temp dir: {e}")));
    let broker = Broker::start(&mosquitto, dir.path());
    // The neighbours case's burner: runs every event out of its fuel.
    let burner = wat::parse_str(
        r#"(module (memory (export "memory") 1)
            (func (export "edgefn_abi_version") (result i32) i32.const 1)
            (func (export "handle") (result i32) (loop $l (br $l)) i32.const 0))"#,
    )
    .unwrap_or_else(|e| fail(&format!("burner module: {e}")));
    std::fs::write(dir.path().join("burner.wasm"), burner).unwrap_or_else(|e| fail(&format!("burner.wasm: {e}")));
    // The instances case's function: a fixed amount of work, then the reading
    // published on actuators/spin/derived.
    let spin = wat::parse_str(
        r#"(module
            (import "edgefn" "event_payload" (func $payload (param i32 i32) (result i32)))
            (import "edgefn" "publish" (func $publish (param i32 i32 i32 i32 i32 i32) (result i32)))
            (memory (export "memory") 1)
            (data (i32.const 2048) "actuators/spin/derived")
            (func (export "edgefn_abi_version") (result i32) i32.const 1)
            (func (export "handle") (result i32)
                (local $len i32) (local $n i32)
                (local.set $len (call $payload (i32.const 0) (i32.const 1024)))
                (local.set $n (i32.const 300000))
                (loop $l (br_if $l (local.tee $n (i32.sub (local.get $n) (i32.const 1)))))
                (drop (call $publish (i32.const 2048) (i32.const 22) (i32.const 0) (local.get $len) (i32.const 0) (i32.const 0)))
                i32.const 0))"#,
    )
    .unwrap_or_else(|e| fail(&format!("spin module: {e}")));
    std::fs::write(dir.path().join("spin.wasm"), spin).unwrap_or_else(|e| fail(&format!("spin.wasm: {e}")));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| fail(&format!("tokio runtime: {e}")));
    let cx =
        Cx { port: broker.port, broker_pid: broker.child.id(), dir: dir.path().to_owned(), next_id: Mutex::new(0) };
    let started = Instant::now();
    rt.block_on(run_all(&cx, &plan));
    println!();
    println!("total {:.0} s; load average now {}", started.elapsed().as_secs_f64(), loadavg());
    drop(broker);
}

fn fail(msg: &str) -> ! {
    eprintln!("pipeline: BROKEN: {msg}");
    std::process::exit(1);
}

/// Nanoseconds since the process's first call: the one clock of generator and subscriber.
fn now_ns() -> u64 {
    static BASE: OnceLock<Instant> = OnceLock::new();
    BASE.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

// ---------------------------------------------------------------------------
// Plan and header

/// The sections of the run, in the order they run; `-- --only a,b` picks some.
const SECTIONS: [&str; 6] = ["latency", "neighbours", "burst", "functions", "devices", "instances"];

struct Plan {
    quick: bool,
    /// Sections to run; empty means all.
    only: Vec<String>,
    rounds: usize,
    burst_n: usize,
    latency_secs: u64,
    /// (functions, input readings)
    functions: Vec<(usize, usize)>,
    /// (device topics, input readings)
    devices: Vec<(usize, usize)>,
}

impl Plan {
    fn wants(&self, section: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|s| s == section)
    }

    fn new(quick: bool) -> Plan {
        if quick {
            Plan {
                quick,
                only: Vec::new(),
                rounds: 1,
                burst_n: 5_000,
                latency_secs: 2,
                functions: vec![(1, 5_000), (10, 1_000), (100, 200)],
                devices: vec![(10, 10_000), (10_000, 10_000)],
            }
        } else {
            Plan {
                quick,
                only: Vec::new(),
                rounds: 5,
                burst_n: 50_000,
                latency_secs: 10,
                functions: vec![(1, 50_000), (10, 10_000), (100, 2_000)],
                devices: vec![(10, 50_000), (10_000, 50_000)],
            }
        }
    }
}

fn header(mosquitto: &Path, plan: &Plan) {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("model name")).map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into());
    let version = Command::new(mosquitto)
        .arg("-h")
        .output()
        .ok()
        .and_then(|o| {
            let text = String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr);
            text.lines().find(|l| l.contains("version")).map(|l| l.trim().to_owned())
        })
        .unwrap_or_else(|| "mosquitto (version unknown)".into());
    println!("edgefn pipeline benchmark{}", if plan.quick { " (quick)" } else { "" });
    let mut flags = Vec::new();
    if plan.quick {
        flags.push("--quick".to_owned());
    }
    if !plan.only.is_empty() {
        flags.push(format!("--only {}", plan.only.join(",")));
    }
    let flags = if flags.is_empty() { String::new() } else { format!(" -- {}", flags.join(" ")) };
    println!("  reproduce: cargo bench --bench pipeline{flags}");
    println!("  sockets:   TCP_NODELAY on every connection (edgefn, the forwarder, the bench's clients, Mosquitto's set_tcp_nodelay)");
    println!(
        "  machine:   {} cpus, {cpu}; load average at start {}",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        loadavg()
    );
    println!("  broker:    {version} ({}) on loopback", mosquitto.display());
    println!("  edgefn:    {}", env!("CARGO_BIN_EXE_edgefn"));
    println!(
        "  pipeline:  device -> broker -> X -> broker -> actuator; X = edgefn (builtin:window-average, window {WINDOW}) \
         or a native forwarder (rumqttc + serde_json, same rolling average), separate processes, same broker"
    );
    println!(
        "  rounds:    {} per measurement{}; throughput = derived messages received / (first publish -> last derived message)",
        plan.rounds,
        if plan.rounds > 1 { " (alternating which pipeline goes first), median shown" } else { "" }
    );
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

// ---------------------------------------------------------------------------
// The broker

struct Broker {
    port: u16,
    child: Child,
}

impl Broker {
    fn start(bin: &Path, dir: &Path) -> Broker {
        let port = free_port();
        let conf = dir.join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nlog_dest none\n\
                 max_queued_messages 1000000\nmax_inflight_messages 0\nset_tcp_nodelay true\n"
            ),
        )
        .unwrap_or_else(|e| fail(&format!("write {}: {e}", conf.display())));
        let child = Command::new(bin)
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| fail(&format!("cannot start {}: {e}", bin.display())));
        let mut broker = Broker { port, child };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = broker.child.try_wait() {
                fail(&format!("mosquitto exited at start ({status})"));
            }
            if Instant::now() > deadline {
                fail("mosquitto does not accept connections after 10 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        broker
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| fail(&format!("free port: {e}")))
}

// ---------------------------------------------------------------------------
// What runs as X

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Edgefn,
    Forwarder,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Edgefn => "edgefn",
            Kind::Forwarder => "forwarder",
        }
    }
}

/// Where the device id comes from.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Devices {
    /// `[[devices]] devN` with telemetry `sensors/devN/reading`, format json: the
    /// device id is the configured one and each device has its own window.
    Declared(usize),
    /// No `[[devices]]`: every reading is device "unknown" (one window), on this
    /// many distinct `sensors/devN/reading` topics.
    Anonymous(usize),
}

impl Devices {
    fn topics(self) -> usize {
        match self {
            Devices::Declared(n) | Devices::Anonymous(n) => n,
        }
    }
}

#[derive(Clone, Copy)]
struct Setup {
    functions: usize,
    qos: QoS,
    devices: Devices,
    /// edgefn's `gateway.queue_capacity`; `None` keeps the default (1,024).
    queue_capacity: Option<usize>,
    /// Functions beside the measured ones that burn their whole fuel on every
    /// event, each flooded with QoS 0 noise on `noise/N` at `NOISE_RATE` during the load.
    burners: usize,
    /// `Some(n)`: the one function is `spin.wasm` (a fixed loop an event, about
    /// 1.5 ms here) with `limits.instances = n`, instead of window-average.
    spin_instances: Option<u32>,
}

fn qos_level(qos: QoS) -> u8 {
    match qos {
        QoS::AtMostOnce => 0,
        QoS::AtLeastOnce => 1,
        QoS::ExactlyOnce => 2,
    }
}

/// The output topic template of function `k` (all distinct).
fn output_template(k: usize) -> String {
    if k == 0 {
        "actuators/{device}/derived".to_owned()
    } else {
        format!("actuators/{{device}}/derived/{k}")
    }
}

fn gateway_toml(id: &str, port: u16, s: &Setup) -> String {
    let mut t = format!(
        "[gateway]\nid = \"{id}\"\nshutdown_grace_ms = 2000\n{}\n\
         [broker]\nmode = \"external\"\nhost = \"127.0.0.1\"\nport = {port}\nclient_id = \"{id}\"\n",
        s.queue_capacity.map(|q| format!("queue_capacity = {q}\n")).unwrap_or_default()
    );
    if let Devices::Declared(n) = s.devices {
        for d in 0..n {
            t.push_str(&format!(
                "\n[[devices]]\nid = \"dev{d}\"\ntelemetry = [\"sensors/dev{d}/reading\"]\nformat = \"json\"\n"
            ));
        }
    }
    for n in 1..=s.burners {
        t.push_str(&format!(
            "\n[[functions]]\nname = \"burner-{n}\"\nmodule = \"burner.wasm\"\ntriggers = [\"noise/{n}\"]\n\
             [functions.limits]\nquarantine_after = 0\n"
        ));
    }
    if let Some(n) = s.spin_instances {
        t.push_str(&format!(
            "\n[[functions]]\nname = \"spin\"\nmodule = \"spin.wasm\"\ntriggers = [\"{TRIGGER}\"]\n\
             [functions.limits]\ninstances = {n}\n"
        ));
        return t;
    }
    for k in 0..s.functions {
        t.push_str(&format!(
            "\n[[functions]]\nname = \"avg{k}\"\nmodule = \"builtin:window-average\"\ntriggers = [\"{TRIGGER}\"]\n\
             [functions.config]\nfield = \"{FIELD}\"\nwindow = {WINDOW}\ntopic = \"{}\"\nqos = {}\n",
            output_template(k),
            qos_level(s.qos)
        ));
    }
    t
}

struct Cx {
    port: u16,
    broker_pid: u32,
    dir: PathBuf,
    next_id: Mutex<usize>,
}

/// A running X process.
struct Proc {
    kind: Kind,
    child: Child,
    status_topic: String,
    stderr_path: PathBuf,
}

impl Proc {
    fn launch(cx: &Cx, kind: Kind, s: &Setup) -> Proc {
        let n = {
            let mut next = cx.next_id.lock().unwrap();
            *next += 1;
            *next
        };
        let id = format!("bench-{}-{n}", kind.name());
        let stderr_path = cx.dir.join(format!("{id}.stderr"));
        let stderr = std::fs::File::create(&stderr_path).unwrap_or_else(|e| fail(&format!("stderr file: {e}")));
        let (mut cmd, status_topic) = match kind {
            Kind::Edgefn => {
                let config = cx.dir.join(format!("{id}.toml"));
                std::fs::write(&config, gateway_toml(&id, cx.port, s))
                    .unwrap_or_else(|e| fail(&format!("write config: {e}")));
                let mut cmd = Command::new(env!("CARGO_BIN_EXE_edgefn"));
                cmd.args(["run", "--config"]).arg(config).env("RUST_LOG", "warn").env_remove("EDGEFN_CONFIG");
                (cmd, format!("edgefn/{id}/status"))
            }
            Kind::Forwarder => {
                let exe = std::env::current_exe().unwrap_or_else(|e| fail(&format!("current_exe: {e}")));
                let mut cmd = Command::new(exe);
                let devices = match s.devices {
                    Devices::Declared(n) => format!("declared:{n}"),
                    Devices::Anonymous(_) => "anonymous".to_owned(),
                };
                cmd.args([
                    "--forwarder",
                    &cx.port.to_string(),
                    &id,
                    &s.functions.to_string(),
                    &qos_level(s.qos).to_string(),
                    &devices,
                ]);
                (cmd, format!("forwarder/{id}/status"))
            }
        };
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| fail(&format!("cannot start {}: {e}", kind.name())));
        Proc { kind, child, status_topic, stderr_path }
    }

    fn stderr_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.stderr_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    fn check_alive(&mut self) -> Result<(), String> {
        match self.child.try_wait() {
            Ok(Some(status)) => {
                Err(format!("{} exited early ({status}); stderr:\n{}", self.kind.name(), self.stderr_tail()))
            }
            _ => Ok(()),
        }
    }

    /// SIGTERM, wait (SIGKILL after 30 s), and the JSON counters from the last stdout line.
    fn stop(mut self) -> Result<serde_json::Value, String> {
        // SAFETY: kill(2) on our own child's pid, which we have not waited for yet.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) => break,
                _ if Instant::now() > deadline => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    return Err(format!("{} did not exit within 30 s of SIGTERM", self.kind.name()));
                }
                _ => std::thread::sleep(Duration::from_millis(10)),
            }
        }
        let mut out = String::new();
        if let Some(mut stdout) = self.child.stdout.take() {
            let _ = stdout.read_to_string(&mut out);
        }
        let line = out.lines().last().unwrap_or("");
        serde_json::from_str(line).map_err(|e| {
            format!("{} printed no JSON counters ({e}): {out:?}; stderr:\n{}", self.kind.name(), self.stderr_tail())
        })
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

// ---------------------------------------------------------------------------
// CPU accounting from /proc

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// utime + stime of a process's threads in seconds, summed by thread name.
fn thread_cpu(pid: u32) -> HashMap<String, f64> {
    let mut by_name = HashMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return by_name;
    };
    for task in tasks.flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else { continue };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else { continue };
        let name: String = stat[open + 1..close].trim_end_matches(|c: char| c.is_ascii_digit()).to_owned();
        let fields: Vec<&str> = stat[close + 2..].split_whitespace().collect();
        // After the comm: state is field 3, utime 14, stime 15 (1-based) -> 11 and 12 here.
        let ticks: u64 = fields.get(11).and_then(|f| f.parse().ok()).unwrap_or(0)
            + fields.get(12).and_then(|f| f.parse().ok()).unwrap_or(0);
        *by_name.entry(name).or_insert(0.0) += ticks as f64 / clock_ticks();
    }
    by_name
}

fn process_cpu(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return 0.0 };
    let Some(close) = stat.rfind(')') else { return 0.0 };
    let fields: Vec<&str> = stat[close + 2..].split_whitespace().collect();
    let ticks: u64 = fields.get(11).and_then(|f| f.parse().ok()).unwrap_or(0)
        + fields.get(12).and_then(|f| f.parse().ok()).unwrap_or(0);
    ticks as f64 / clock_ticks()
}

fn diff_cpu(after: &HashMap<String, f64>, before: &HashMap<String, f64>) -> Vec<(String, f64)> {
    let mut v: Vec<(String, f64)> = after
        .iter()
        .map(|(k, a)| (k.clone(), a - before.get(k).copied().unwrap_or(0.0)))
        .filter(|(_, d)| *d > 0.0)
        .collect();
    v.sort_by(|a, b| b.1.total_cmp(&a.1));
    v
}

// ---------------------------------------------------------------------------
// MQTT clients of the bench: the actuator (subscriber) and the devices (generator)

fn options(id: &str, port: u16) -> MqttOptions {
    let mut o = MqttOptions::new(id, "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(30)).set_clean_session(true).set_max_packet_size(64 << 10, 64 << 10);
    o
}

/// A client of the bench or of the forwarder, with the socket options edgefn's
/// own connections use (TCP_NODELAY): without it Nagle's algorithm holds small
/// packets for the peer's ACK and every latency in the run gains milliseconds
/// that belong to neither pipeline.
fn client(id: &str, port: u16, cap: usize) -> (AsyncClient, EventLoop) {
    edgefn::mqtt::new_client(options(id, port), cap)
}

/// Per-device send times of the latency run, indexed by the device's sequence number.
struct Sends {
    per_device: usize,
    ns: Vec<AtomicU64>,
}

#[derive(Default)]
struct SubShared {
    online: AtomicBool,
    count: AtomicU64,
    last_ns: AtomicU64,
}

struct SubResult {
    latencies_ns: Vec<u64>,
    undecodable: u64,
}

/// The actuator side: subscribed to `actuators/#` and X's status topic.
struct Subscriber {
    shared: Arc<SubShared>,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<SubResult>,
}

impl Subscriber {
    async fn start(port: u16, id: &str, status_topic: &str, qos: QoS, sends: Option<Arc<Sends>>) -> Subscriber {
        let (client, eventloop) = client(&format!("{id}-actuator"), port, 64);
        let shared = Arc::new(SubShared::default());
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(subscriber_loop(
            client,
            eventloop,
            status_topic.to_owned(),
            qos,
            sends,
            shared.clone(),
            stop_rx,
        ));
        Subscriber { shared, stop, task }
    }

    async fn finish(self) -> SubResult {
        let _ = self.stop.send(true);
        self.task.await.unwrap_or(SubResult { latencies_ns: Vec::new(), undecodable: 0 })
    }
}

async fn subscriber_loop(
    client: AsyncClient,
    mut eventloop: EventLoop,
    status_topic: String,
    qos: QoS,
    sends: Option<Arc<Sends>>,
    shared: Arc<SubShared>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> SubResult {
    let mut result = SubResult { latencies_ns: Vec::new(), undecodable: 0 };
    loop {
        let event = tokio::select! {
            biased;
            _ = stop.changed() => break,
            event = eventloop.poll() => event,
        };
        match event {
            Ok(Event::Incoming(Packet::Publish(p))) => {
                let at = now_ns();
                if p.topic == status_topic {
                    if &p.payload[..] == b"online" {
                        shared.online.store(true, Relaxed);
                    }
                    continue;
                }
                shared.count.fetch_add(1, Relaxed);
                shared.last_ns.store(at, Relaxed);
                if let Some(sends) = &sends {
                    match decode(&p.payload).and_then(|(d, seq)| {
                        (seq < sends.per_device).then(|| sends.ns[d * sends.per_device + seq].load(Relaxed))
                    }) {
                        Some(sent) if sent > 0 && at >= sent => result.latencies_ns.push(at - sent),
                        _ => result.undecodable += 1,
                    }
                }
            }
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                let _ = client.try_subscribe(status_topic.clone(), QoS::AtLeastOnce);
                let _ = client.try_subscribe("actuators/#", qos);
            }
            Ok(_) => {}
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    let _ = client.try_disconnect();
    result
}

/// (device index, sequence number) of a derived message: the k-th reading of a
/// device has temperature k, so k = avg + (n - 1) / 2.
fn decode(payload: &[u8]) -> Option<(usize, usize)> {
    let v: serde_json::Value = serde_json::from_slice(payload).ok()?;
    let device: usize = v["device"].as_str()?.strip_prefix("dev")?.parse().ok()?;
    let avg = v["avg"].as_f64()?;
    let n = v["n"].as_f64()?;
    let seq = avg + (n - 1.0) / 2.0;
    (seq >= 0.0).then_some((device, seq.round() as usize))
}

fn reading(seq: usize, t_us: u64) -> Vec<u8> {
    format!("{{\"temperature\":{seq},\"humidity\":61.2,\"pressure\":1013.25,\"linkquality\":120,\"battery\":97,\"t_us\":{t_us}}}")
        .into_bytes()
}

fn device_topics(n: usize) -> Vec<String> {
    (0..n).map(|d| format!("sensors/dev{d}/reading")).collect()
}

/// The devices: one connection, its event loop polled by its own task.
struct Generator {
    client: AsyncClient,
    task: tokio::task::JoinHandle<()>,
}

impl Generator {
    async fn connect(port: u16, id: &str) -> Result<Generator, String> {
        let (client, mut eventloop) = client(&format!("{id}-devices"), port, 1024);
        let (tx, rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let mut tx = Some(tx);
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        if let Some(tx) = tx.take() {
                            let _ = tx.send(());
                        }
                    }
                    Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => return,
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(10), rx)
            .await
            .map_err(|_| "the device generator could not connect to the broker".to_string())?
            .map_err(|_| "generator task ended".to_string())?;
        Ok(Generator { client, task })
    }

    async fn close(self) {
        let _ = self.client.disconnect().await;
        let _ = tokio::time::timeout(Duration::from_secs(5), self.task).await;
    }
}

// ---------------------------------------------------------------------------
// One measurement

enum Load {
    /// Publish `n` readings round-robin over the device topics as fast as possible.
    Burst { n: usize },
    /// 1,000 readings/s for this long, each stamped with its send time.
    Paced { secs: u64 },
}

#[derive(Clone, Default)]
struct Measured {
    kind: Option<Kind>,
    /// Readings published.
    sent: usize,
    /// Derived messages expected (sent x functions) and received.
    expected: usize,
    received: usize,
    /// First publish -> last derived message.
    elapsed: f64,
    /// Derived messages per second.
    rate: f64,
    latencies_ns: Vec<u64>,
    undecodable: u64,
    /// CPU seconds of X during the load, by thread name, and of the broker.
    cpu: Vec<(String, f64)>,
    broker_cpu: f64,
    counters: Option<serde_json::Value>,
    /// Noise events sent to each burner.
    noise_sent: u64,
}

impl Measured {
    fn x_cpu(&self) -> f64 {
        self.cpu.iter().map(|c| c.1).sum()
    }
}

async fn measure(cx: &Cx, kind: Kind, s: Setup, load: &Load) -> Result<Measured, String> {
    let mut proc = Proc::launch(cx, kind, &s);
    let topics = device_topics(s.devices.topics());
    let sends = match load {
        Load::Paced { secs } => {
            let per_device = (*secs * LATENCY_RATE) as usize / topics.len() + 1;
            Some(Arc::new(Sends {
                per_device,
                ns: (0..per_device * topics.len()).map(|_| AtomicU64::new(0)).collect(),
            }))
        }
        Load::Burst { .. } => None,
    };
    let tag = proc.status_topic.split('/').nth(1).unwrap_or("bench").to_owned();
    let sub = Subscriber::start(cx.port, &tag, &proc.status_topic, s.qos, sends.clone()).await;
    let online_by = Instant::now() + ONLINE_TIMEOUT;
    while !sub.shared.online.load(Relaxed) {
        proc.check_alive()?;
        if Instant::now() > online_by {
            return Err(format!(
                "{} did not announce \"online\" on {} within {ONLINE_TIMEOUT:?}; stderr:\n{}",
                kind.name(),
                proc.status_topic,
                proc.stderr_tail()
            ));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let gen = Generator::connect(cx.port, &tag).await?;
    // Let the subscriptions settle before the clock starts.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let pid = proc.child.id();
    let cpu_before = thread_cpu(pid);
    let broker_before = process_cpu(cx.broker_pid);

    let noise = (s.burners > 0).then(|| Noise::start(cx.port, &tag, s.burners));
    let (sent, t0) = match load {
        Load::Burst { n } => {
            let batch: Vec<(String, Vec<u8>)> =
                (0..*n).map(|i| (topics[i % topics.len()].clone(), reading(i / topics.len(), 0))).collect();
            let t0 = now_ns();
            for (topic, payload) in batch {
                gen.client.publish(topic, s.qos, false, payload).await.map_err(|e| format!("publish: {e}"))?;
            }
            (*n, t0)
        }
        Load::Paced { secs } => {
            let sends = sends.as_ref().expect("paced load has a send table");
            let total = (*secs * LATENCY_RATE) as usize;
            let start = tokio::time::Instant::now();
            let t0 = now_ns();
            for i in 0..total {
                let due = start + Duration::from_micros(i as u64 * 1_000_000 / LATENCY_RATE);
                tokio::time::sleep_until(due).await;
                let (d, seq) = (i % topics.len(), i / topics.len());
                let at = now_ns();
                sends.ns[d * sends.per_device + seq].store(at, Relaxed);
                gen.client
                    .publish(topics[d].clone(), s.qos, false, reading(seq, at / 1_000))
                    .await
                    .map_err(|e| format!("publish: {e}"))?;
            }
            (total, t0)
        }
    };
    let noise_sent = match noise {
        Some(noise) => noise.stop().await,
        None => 0,
    };
    let sent_done = Instant::now();
    let sent_done_ns = now_ns();
    let expected = sent * s.functions;
    // Wait for everything, or for the stream to go quiet.
    loop {
        tokio::time::sleep(Duration::from_millis(5)).await;
        let count = sub.shared.count.load(Relaxed) as usize;
        if count >= expected {
            break;
        }
        proc.check_alive()?;
        if count == 0 {
            if sent_done.elapsed() > NOTHING_TIMEOUT {
                return Err(format!(
                    "no derived message arrived within {NOTHING_TIMEOUT:?} of the last of {sent} readings ({}); stderr:\n{}",
                    kind.name(),
                    proc.stderr_tail()
                ));
            }
            continue;
        }
        let last = sub.shared.last_ns.load(Relaxed);
        let quiet_since = last.max(sent_done_ns);
        if now_ns().saturating_sub(quiet_since) > IDLE_END.as_nanos() as u64 {
            break;
        }
    }
    let cpu = diff_cpu(&thread_cpu(pid), &cpu_before);
    let broker_cpu = process_cpu(cx.broker_pid) - broker_before;
    let received = sub.shared.count.load(Relaxed) as usize;
    let last = sub.shared.last_ns.load(Relaxed);
    gen.close().await;
    let sub_result = sub.finish().await;
    let counters = proc.stop()?;
    let elapsed = last.saturating_sub(t0) as f64 / 1e9;
    Ok(Measured {
        kind: Some(kind),
        sent,
        expected,
        received,
        elapsed,
        rate: if elapsed > 0.0 { received as f64 / elapsed } else { 0.0 },
        latencies_ns: sub_result.latencies_ns,
        undecodable: sub_result.undecodable,
        cpu,
        broker_cpu,
        counters: Some(counters),
        noise_sent,
    })
}

/// QoS 0 noise for the burners, from a connection of its own, until stopped.
struct Noise {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<u64>,
}

impl Noise {
    fn start(port: u16, tag: &str, burners: usize) -> Noise {
        let stop = Arc::new(AtomicBool::new(false));
        let (client, mut eventloop) = client(&format!("{tag}-noise"), port, 4096);
        tokio::spawn(async move { while eventloop.poll().await.is_ok() {} });
        let task = tokio::spawn({
            let stop = stop.clone();
            async move {
                let mut sent = 0;
                let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / NOISE_RATE));
                while !stop.load(Relaxed) {
                    tick.tick().await;
                    for n in 1..=burners {
                        let _ = client.publish(format!("noise/{n}"), QoS::AtMostOnce, false, b"x".to_vec()).await;
                    }
                    sent += 1;
                }
                let _ = client.disconnect().await;
                sent
            }
        });
        Noise { stop, task }
    }

    /// Stops the noise; returns the events sent to each burner.
    async fn stop(self) -> u64 {
        self.stop.store(true, Relaxed);
        self.task.await.unwrap_or(0)
    }
}

/// Runs one measurement for both pipelines, `rounds` times (alternating which goes
/// first), and returns (edgefn, forwarder), each the median by `key`.
async fn both(
    cx: &Cx,
    plan: &Plan,
    what: &str,
    s: Setup,
    load: Load,
    key: fn(&Measured) -> f64,
) -> (Measured, Measured, Vec<f64>, Vec<f64>) {
    let mut runs: HashMap<&'static str, Vec<Measured>> = HashMap::new();
    for round in 0..plan.rounds {
        let order = if round % 2 == 0 { [Kind::Edgefn, Kind::Forwarder] } else { [Kind::Forwarder, Kind::Edgefn] };
        for kind in order {
            eprintln!("pipeline: {what}: {} (round {}/{})", kind.name(), round + 1, plan.rounds);
            let m =
                measure(cx, kind, s, &load).await.unwrap_or_else(|e| fail(&format!("{what}, {}: {e}", kind.name())));
            runs.entry(kind.name()).or_default().push(m);
        }
    }
    let mut pick = |kind: Kind| {
        let mut v = runs.remove(kind.name()).unwrap_or_default();
        let keys: Vec<f64> = v.iter().map(key).collect();
        v.sort_by(|a, b| key(a).total_cmp(&key(b)));
        let mid = v.len() / 2;
        (v.swap_remove(mid), keys)
    };
    let (e, ek) = pick(Kind::Edgefn);
    let (f, fk) = pick(Kind::Forwarder);
    (e, f, ek, fk)
}

/// edgefn alone, `rounds` times; the median by throughput.
async fn edgefn_only(cx: &Cx, plan: &Plan, what: &str, s: Setup, load: Load) -> (Measured, Vec<f64>) {
    let mut v = Vec::new();
    for round in 0..plan.rounds {
        eprintln!("pipeline: {what}: edgefn (round {}/{})", round + 1, plan.rounds);
        v.push(measure(cx, Kind::Edgefn, s, &load).await.unwrap_or_else(|e| fail(&format!("{what}: {e}"))));
    }
    let keys = v.iter().map(|m| m.rate).collect();
    v.sort_by(|a, b| a.rate.total_cmp(&b.rate));
    let mid = v.len() / 2;
    (v.swap_remove(mid), keys)
}

// ---------------------------------------------------------------------------
// The cases and the report

const BIG_QUEUE: usize = 1 << 20;

fn k(rate: f64) -> String {
    if rate >= 10_000.0 {
        format!("{:.1}k", rate / 1000.0)
    } else {
        format!("{rate:.0}")
    }
}

fn pct(m: &Measured) -> String {
    format!("{:.1}%", 100.0 * m.received as f64 / m.expected.max(1) as f64)
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "MISSED"
    }
}

fn rounds_note(plan: &Plan, keys: &[f64], fmt: fn(f64) -> String) -> String {
    if plan.rounds > 1 {
        format!(" [{}]", keys.iter().map(|v| fmt(*v)).collect::<Vec<_>>().join(" "))
    } else {
        String::new()
    }
}

fn cpu_line(m: &Measured, per: usize) -> String {
    let per = per.max(1) as f64;
    let threads: Vec<String> = m.cpu.iter().take(4).map(|(name, s)| format!("{name} {:.1}", s * 1e6 / per)).collect();
    format!(
        "{:.1} us/reading, {:.1} us/derived msg ({}); broker {:.1} us/reading; {:.2} s",
        m.x_cpu() * 1e6 / per,
        m.x_cpu() * 1e6 / m.received.max(1) as f64,
        threads.join(", "),
        m.broker_cpu * 1e6 / per,
        m.elapsed
    )
}

fn counters_line(m: &Measured) -> String {
    let Some(c) = &m.counters else { return String::new() };
    let keys = [
        "events_in",
        "invocations_ok",
        "invocations_failed",
        "queue_full_dropped",
        "shutdown_dropped",
        "publishes_out",
        "publish_errors",
        "logs_dropped",
        "events_spooled",
        "spool_kept",
    ];
    let mut shown: Vec<String> =
        keys.iter().filter_map(|k| c.get(*k).and_then(|v| v.as_u64()).map(|v| format!("{k} {v}"))).collect();
    // Any other outcome that happened, so that every event taken in is
    // accounted for on the line (quota, quarantine, spool, left to the broker...).
    if let Some(all) = c.as_object() {
        for (k, v) in all {
            let outcome = k.contains("dropped") || k.contains("spool") || k.starts_with("acks_left");
            if let (true, false, Some(n @ 1..)) = (outcome, keys.contains(&k.as_str()), v.as_u64()) {
                shown.push(format!("{k} {n}"));
            }
        }
    }
    shown.join(", ")
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1e6
}

async fn run_all(cx: &Cx, plan: &Plan) {
    let declared10 = Devices::Declared(10);

    if plan.wants("latency") {
        // 2. Added latency, first: a quiet broker, no backlog from the bursts.
        println!();
        println!(
            "2. Added latency: {LATENCY_RATE} readings/s for {} s over 10 device topics, QoS 0, 1 function; send -> derived \
             arrival per reading (first {LATENCY_WARMUP} left out); target edgefn p99 <= forwarder p99 + 1 ms",
            plan.latency_secs
        );
        let s = Setup {
            functions: 1,
            qos: QoS::AtMostOnce,
            devices: declared10,
            queue_capacity: None,
            burners: 0,
            spin_instances: None,
        };
        let p99 = |m: &Measured| {
            let mut l = m.latencies_ns.iter().skip(LATENCY_WARMUP).copied().collect::<Vec<_>>();
            l.sort_unstable();
            percentile(&l, 0.99)
        };
        let (e, f, ek, fk) = both(cx, plan, "latency", s, Load::Paced { secs: plan.latency_secs }, p99).await;
        println!("   {:<10} {:>9} {:>9} {:>9} {:>9} {:>12}", "", "p50 ms", "p90 ms", "p99 ms", "max ms", "recv/N");
        let mut stats = Vec::new();
        for m in [&e, &f] {
            let mut l = m.latencies_ns.iter().skip(LATENCY_WARMUP).copied().collect::<Vec<_>>();
            l.sort_unstable();
            let (p50, p90, p99, max) =
                (percentile(&l, 0.5), percentile(&l, 0.9), percentile(&l, 0.99), percentile(&l, 1.0));
            println!(
                "   {:<10} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>12}{}",
                m.kind.map(Kind::name).unwrap_or(""),
                p50,
                p90,
                p99,
                max,
                pct(m),
                if m.undecodable > 0 {
                    format!("  ({} not matched to a reading)", m.undecodable)
                } else {
                    String::new()
                }
            );
            stats.push((p50, p99));
        }
        let (d50, d99) = (stats[0].0 - stats[1].0, stats[0].1 - stats[1].1);
        println!("   {:<10} {:>9.3} {:>9} {:>9.3}   p99 target {}", "edgefn - fwd", d50, "", d99, verdict(d99 <= 1.0));
        if plan.rounds > 1 {
            let ms = |v: f64| format!("{v:.2}");
            println!("   p99 by round: edgefn{} forwarder{}", rounds_note(plan, &ek, ms), rounds_note(plan, &fk, ms));
        }
        println!("   CPU at 1,000/s  edgefn:    {}", cpu_line(&e, e.sent));
        println!("   CPU at 1,000/s  forwarder: {}", cpu_line(&f, f.sent));
    }
    if plan.wants("neighbours") {
        neighbours(cx, plan).await;
    }
    if plan.wants("instances") {
        instances(cx, plan).await;
    }
    if plan.wants("burst") {
        // 1. Burst throughput.
        println!();
        println!(
            "1. Burst throughput: {} readings (~95 B JSON) over 10 device topics as fast as one rumqttc client publishes; \
             1 function; target edgefn >= 0.90 x forwarder",
            plan.burst_n
        );
        println!(
            "   {:<6} {:>26} {:>26} {:>16}",
            "QoS", "edgefn msg/s (recv/N)", "forwarder msg/s (recv/N)", "edgefn/forwarder"
        );
        let mut details = Vec::new();
        for qos in [QoS::AtMostOnce, QoS::AtLeastOnce] {
            let s = Setup {
                functions: 1,
                qos,
                devices: declared10,
                queue_capacity: None,
                burners: 0,
                spin_instances: None,
            };
            let (e, f, ek, fk) =
                both(cx, plan, &format!("burst QoS {}", qos_level(qos)), s, Load::Burst { n: plan.burst_n }, |m| {
                    m.rate
                })
                .await;
            let ratio = e.rate / f.rate;
            // At QoS 1 the broker holds what edgefn cannot take yet: every
            // reading must arrive, however fast. (At QoS 0 a full queue drops
            // the newest, as documented.)
            let whole = |m: &Measured| qos == QoS::AtMostOnce || m.received == m.expected;
            println!(
                "   {:<6} {:>26} {:>26} {:>9.2} {}",
                qos_level(qos),
                format!("{} ({})", k(e.rate), pct(&e)),
                format!("{} ({})", k(f.rate), pct(&f)),
                ratio,
                verdict(ratio >= 0.90 && whole(&e))
            );
            if plan.rounds > 1 {
                println!(
                    "   {:<6} rounds: edgefn{} forwarder{}",
                    "",
                    rounds_note(plan, &ek, k),
                    rounds_note(plan, &fk, k)
                );
            }
            // The same, with a queue big enough that edgefn never drops: how much of
            // the gap is the drop-newest policy rather than the processing itself.
            let big = Setup { queue_capacity: Some(BIG_QUEUE), ..s };
            let (eb, bk) = edgefn_only(
                cx,
                plan,
                &format!("burst QoS {} big queue", qos_level(qos)),
                big,
                Load::Burst { n: plan.burst_n },
            )
            .await;
            let ratio = eb.rate / f.rate;
            println!(
                "   {:<6} {:>26} {:>26} {:>9.2} {}   <- edgefn with gateway.queue_capacity = {BIG_QUEUE}",
                format!("{} big", qos_level(qos)),
                format!("{} ({})", k(eb.rate), pct(&eb)),
                "(same as above)",
                ratio,
                verdict(ratio >= 0.90 && whole(&eb))
            );
            if plan.rounds > 1 {
                println!("   {:<6} rounds: edgefn{}", "", rounds_note(plan, &bk, k));
            }
            details.push((qos, e, f, eb));
        }
        for (qos, e, f, eb) in &details {
            let q = qos_level(*qos);
            println!("   QoS {q} CPU  edgefn:    {}", cpu_line(e, e.sent));
            println!("   QoS {q} CPU  edgefn big queue: {}", cpu_line(eb, eb.sent));
            println!("   QoS {q} CPU  forwarder: {}", cpu_line(f, f.sent));
            println!("   QoS {q} edgefn counters: {}", counters_line(e));
            println!("   QoS {q} edgefn big-queue counters: {}", counters_line(eb));
        }
    }
    if plan.wants("functions") {
        // 3a. Functions.
        println!();
        println!(
            "3a. Scaling with functions: QoS 0 burst over 10 device topics; every function is window-average on \
             {TRIGGER} publishing to its own topic (output = functions x input)"
        );
        println!(
            "   {:<5} {:>7} | {:>9} {:>10} {:>7} | {:>9} {:>10} {:>7} | {:>7}",
            "fns", "input", "edgefn", "invoc/s", "recv", "forwarder", "invoc/s", "recv", "ratio"
        );
        println!(
            "   {:<5} {:>7} | {:>9} {:>10} {:>7} | {:>9} {:>10} {:>7} |",
            "", "N", "input/s", "", "", "input/s", "", ""
        );
        let mut fn_details = Vec::new();
        for &(functions, n) in &plan.functions {
            let s = Setup {
                functions,
                qos: QoS::AtMostOnce,
                devices: declared10,
                queue_capacity: None,
                burners: 0,
                spin_instances: None,
            };
            let (e, f, _, _) =
                both(cx, plan, &format!("{functions} functions"), s, Load::Burst { n }, |m| m.rate).await;
            let input = |m: &Measured| m.rate / functions as f64;
            println!(
                "   {:<5} {:>7} | {:>9} {:>10} {:>7} | {:>9} {:>10} {:>7} | {:>7.2}",
                functions,
                n,
                k(input(&e)),
                k(e.rate),
                pct(&e),
                k(input(&f)),
                k(f.rate),
                pct(&f),
                e.rate / f.rate
            );
            fn_details.push((functions, e, f));
        }
        for (functions, e, f) in &fn_details {
            println!("   {functions} fns CPU  edgefn:    {}", cpu_line(e, e.sent));
            println!("   {functions} fns CPU  forwarder: {}", cpu_line(f, f.sent));
            println!("   {functions} fns edgefn counters: {}", counters_line(e));
        }
    }
    if plan.wants("devices") {
        // 3b. Devices.
        println!();
        println!(
            "3b. Scaling with device topics: QoS 0 burst, 1 function, no [[devices]] declared (window-average keeps at \
             most 32 device windows, so every reading counts as device \"unknown\" in both pipelines)"
        );
        println!(
            "   {:<8} {:>7} | {:>18} | {:>18} | {:>7}",
            "topics", "N", "edgefn msg/s recv", "forwarder msg/s recv", "ratio"
        );
        let mut dev_details = Vec::new();
        for &(devices, n) in &plan.devices {
            let s = Setup {
                functions: 1,
                qos: QoS::AtMostOnce,
                devices: Devices::Anonymous(devices),
                queue_capacity: None,
                burners: 0,
                spin_instances: None,
            };
            let (e, f, _, _) =
                both(cx, plan, &format!("{devices} device topics"), s, Load::Burst { n }, |m| m.rate).await;
            println!(
                "   {:<8} {:>7} | {:>18} | {:>18} | {:>7.2}",
                devices,
                n,
                format!("{} {}", k(e.rate), pct(&e)),
                format!("{} {}", k(f.rate), pct(&f)),
                e.rate / f.rate
            );
            dev_details.push((devices, e, f));
        }
        for (devices, e, f) in &dev_details {
            println!("   {devices} topics CPU  edgefn:    {}", cpu_line(e, e.sent));
            println!("   {devices} topics CPU  forwarder: {}", cpu_line(f, f.sent));
        }
    }
    println!();
    println!(
        "CPU columns: CPU time of X's threads during the load (from /proc, {} ticks/s, so short runs are coarse), \
         per input reading, biggest threads named; broker = Mosquitto's CPU over the same window.",
        clock_ticks()
    );
}

// ---------------------------------------------------------------------------
// The native forwarder (this binary with --forwarder PORT ID FUNCTIONS QOS DEVICES)

mod forwarder {
    use super::*;

    #[derive(serde::Serialize)]
    struct Derived<'a> {
        device: &'a str,
        field: &'a str,
        avg: f64,
        n: usize,
        ts: u64,
    }

    struct Counters {
        events_in: AtomicU64,
        publishes_out: AtomicU64,
        skipped: AtomicU64,
    }

    pub fn main(args: &[String]) {
        let arg = |i: usize| args.get(i).cloned().unwrap_or_else(|| fail(&format!("forwarder: argument {i} missing")));
        let port: u16 = arg(0).parse().unwrap_or_else(|_| fail("forwarder: bad port"));
        let id = arg(1);
        let functions: usize = arg(2).parse().unwrap_or_else(|_| fail("forwarder: bad function count"));
        let qos = match arg(3).as_str() {
            "0" => QoS::AtMostOnce,
            _ => QoS::AtLeastOnce,
        };
        // Topic -> device id, as the gateway's [[devices]] table would name it.
        let devices: HashMap<String, String> = match arg(4).strip_prefix("declared:") {
            Some(n) => {
                let n: usize = n.parse().unwrap_or(0);
                (0..n).map(|d| (format!("sensors/dev{d}/reading"), format!("dev{d}"))).collect()
            }
            None => HashMap::new(),
        };
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap_or_else(|e| fail(&format!("forwarder runtime: {e}")));
        rt.block_on(run(port, id, functions, qos, devices));
    }

    async fn run(port: u16, id: String, functions: usize, qos: QoS, devices: HashMap<String, String>) {
        let counters = Arc::new(Counters {
            events_in: AtomicU64::new(0),
            publishes_out: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
        });
        let status_topic = format!("forwarder/{id}/status");
        // Output: its own connection, polled by its own task.
        let (out, mut out_loop) = client(&format!("{id}-out"), port, 1024);
        tokio::spawn(async move {
            loop {
                if out_loop.poll().await.is_err() {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        });
        // Input: the task that polls it does the work and queues the output.
        let (input, mut in_loop) = client(&format!("{id}-in"), port, 64);
        let templates: Vec<String> = (0..functions).map(output_template).collect();
        let c = counters.clone();
        tokio::spawn(async move {
            // Per device, one window per function.
            let mut windows: HashMap<String, Vec<VecDeque<f64>>> = HashMap::new();
            loop {
                match in_loop.poll().await {
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        c.events_in.fetch_add(1, Relaxed);
                        let device = devices.get(&p.topic).map(String::as_str).unwrap_or("unknown");
                        let ts = std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .map(|d| d.as_millis() as u64)
                            .unwrap_or(0);
                        if !windows.contains_key(device) {
                            windows.insert(device.to_owned(), vec![VecDeque::with_capacity(WINDOW + 1); functions]);
                        }
                        let per_fn = windows.get_mut(device).expect("inserted above");
                        for (k, template) in templates.iter().enumerate() {
                            // Each function parses the reading itself, as each wasm function does.
                            let value = serde_json::from_slice::<serde_json::Value>(&p.payload)
                                .ok()
                                .and_then(|v| v.get(FIELD).and_then(serde_json::Value::as_f64));
                            let Some(value) = value else {
                                c.skipped.fetch_add(1, Relaxed);
                                continue;
                            };
                            let window = &mut per_fn[k];
                            window.push_back(value);
                            if window.len() > WINDOW {
                                window.pop_front();
                            }
                            let avg = window.iter().sum::<f64>() / window.len() as f64;
                            let body = serde_json::to_vec(&Derived { device, field: FIELD, avg, n: window.len(), ts })
                                .unwrap_or_default();
                            let topic = template.replace("{device}", device);
                            // Waits only on the output connection's queue, which another task drains.
                            if out.publish(topic, qos, false, body).await.is_ok() {
                                c.publishes_out.fetch_add(1, Relaxed);
                            }
                        }
                    }
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        let _ = input.try_subscribe(TRIGGER, QoS::AtLeastOnce);
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        let _ = out.try_publish(status_topic.clone(), QoS::AtLeastOnce, true, "online");
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        });
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .unwrap_or_else(|e| fail(&format!("forwarder: SIGTERM handler: {e}")));
        term.recv().await;
        println!(
            "{{\"events_in\":{},\"publishes_out\":{},\"skipped\":{}}}",
            counters.events_in.load(Relaxed),
            counters.publishes_out.load(Relaxed),
            counters.skipped.load(Relaxed)
        );
        std::process::exit(0);
    }
}

/// 2b. The latency case again, edgefn alone and then beside two functions that
/// burn their whole fuel on every event while QoS 0 noise floods them.
async fn neighbours(cx: &Cx, plan: &Plan) {
    println!();
    println!(
        "2b. Noisy neighbours: the latency case ({LATENCY_RATE} readings/s for {} s, QoS 0, window-average) with edgefn \
         alone, then beside 2 functions that burn their 10 M fuel on every event, each sent {NOISE_RATE} events/s \
         (QoS 0) meanwhile; default workers ({}); target: no reading lost, p99 within 2 x alone",
        plan.latency_secs,
        std::thread::available_parallelism().map_or(1, |n| n.get().min(4))
    );
    let alone = Setup {
        functions: 1,
        qos: QoS::AtMostOnce,
        devices: Devices::Declared(10),
        queue_capacity: None,
        burners: 0,
        spin_instances: None,
    };
    let beside = Setup { burners: 2, ..alone };
    let load = || Load::Paced { secs: plan.latency_secs };
    let p99 = |m: &Measured| {
        let mut l = m.latencies_ns.iter().skip(LATENCY_WARMUP).copied().collect::<Vec<_>>();
        l.sort_unstable();
        percentile(&l, 0.99)
    };
    let mut pairs = Vec::new();
    for round in 0..plan.rounds {
        eprintln!("pipeline: neighbours: alone and beside burners (round {}/{})", round + 1, plan.rounds);
        let a = measure(cx, Kind::Edgefn, alone, &load())
            .await
            .unwrap_or_else(|e| fail(&format!("neighbours, alone: {e}")));
        let b = measure(cx, Kind::Edgefn, beside, &load())
            .await
            .unwrap_or_else(|e| fail(&format!("neighbours, beside: {e}")));
        pairs.push((a, b));
    }
    pairs.sort_by(|x, y| (p99(&x.1) / p99(&x.0)).total_cmp(&(p99(&y.1) / p99(&y.0))));
    let ratios: Vec<f64> = pairs.iter().map(|(a, b)| p99(b) / p99(a)).collect();
    let mid = pairs.len() / 2;
    let (a, b) = pairs.swap_remove(mid);
    println!("   {:<22} {:>9} {:>9} {:>9} {:>12}", "edgefn", "p50 ms", "p99 ms", "max ms", "recv/N");
    for (what, m) in [("alone", &a), ("beside 2 fuel burners", &b)] {
        let mut l = m.latencies_ns.iter().skip(LATENCY_WARMUP).copied().collect::<Vec<_>>();
        l.sort_unstable();
        println!(
            "   {:<22} {:>9.3} {:>9.3} {:>9.3} {:>12}",
            what,
            percentile(&l, 0.5),
            percentile(&l, 0.99),
            percentile(&l, 1.0),
            pct(m)
        );
    }
    let ratio = p99(&b) / p99(&a);
    println!(
        "   p99 beside / alone: {ratio:.2} {}{}",
        verdict(ratio <= 2.0 && b.received == b.expected),
        rounds_note(plan, &ratios, |v| format!("{v:.2}"))
    );
    if let Some(functions) = b.counters.as_ref().and_then(|c| c.get("functions")) {
        for n in 1..=2 {
            let f = &functions[format!("burner-{n}")];
            println!(
                "   burner-{n}: sent {}, out of fuel {}, dropped as behind {}, at shutdown {}, mean invocation {:.1} ms",
                b.noise_sent,
                f["failed"],
                f["dropped_queue"],
                f["dropped_shutdown"],
                f["mean_us"].as_f64().unwrap_or(0.0) / 1000.0
            );
        }
    }
}

/// Section 4, scaling out: one function with a fixed 300,000-iteration loop an
/// event and a burst over 10 devices, with 1 and with N instances.
async fn instances(cx: &Cx, plan: &Plan) {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get().min(4));
    let n = (cores as u32).max(2);
    // About 3 s of work for one instance: under gateway.queue_delay_ms, so
    // nothing is dropped and the rate is the function's, not the drop policy's.
    let readings = 2_000;
    println!();
    println!(
        "4. Scaling out: {readings} readings over 10 devices as fast as one client publishes, QoS 0, to one function \
         looping 300,000 times an event (about 1.5 ms here); limits.instances = 1 and {n}, default workers ({cores}); \
         baseline: 1 instance, same run"
    );
    println!("   {:<12} {:>12} {:>10} {:>10}", "instances", "msg/s", "recv/N", "x 1");
    let mut base = 0.0;
    for instances in [1, n] {
        let s = Setup {
            functions: 1,
            qos: QoS::AtMostOnce,
            devices: Devices::Declared(10),
            queue_capacity: None,
            burners: 0,
            spin_instances: Some(instances),
        };
        let (m, keys) = edgefn_only(cx, plan, &format!("instances {instances}"), s, Load::Burst { n: readings }).await;
        if instances == 1 {
            base = m.rate;
        }
        println!(
            "   {:<12} {:>12} {:>10} {:>10.2}{}",
            instances,
            k(m.rate),
            pct(&m),
            m.rate / base.max(1e-9),
            rounds_note(plan, &keys, k)
        );
    }
}
