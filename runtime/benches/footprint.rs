//! Prints the gateway's footprint, measured on the real `edgefn` binary run as a
//! child process: binary size, resident memory idle and under load, messages per
//! second achieved, and bytes written to storage with and without `[upstream]`.
//!
//! `cargo bench --bench footprint` (add `-- --quick`, or set EDGEFN_BENCH_QUICK=1,
//! for a 3 s load instead of 10 s; EDGEFN_BENCH_LOAD_S=N for N s). Figures to watch, not a pass/fail test:
//! nothing here asserts a time or a size. It exits non-zero only when the
//! scenario itself breaks (the gateway never comes online, exits early, prints
//! no summary, or processes no message). EDGEFN_BENCH_DIR picks where the temp
//! dirs go (default: cargo's target tmp dir, i.e. the disk the project is on).
//!
//! The scenario, run twice, (a) without and (b) with an `[upstream]` section:
//! - a configuration with the embedded broker on a free loopback port and 10
//!   functions, alternately `builtin:threshold` and `builtin:window-average`, all
//!   triggered by `sensors/+/reading` (no `[[devices]]`: every reading counts as
//!   device "unknown");
//! - `edgefn run --config FILE`, online once its retained `online` status arrives;
//! - idle: 2 s after online, VmRSS and VmHWM from /proc/PID/status (during the
//!   first second of it, the 1 s baseline of the storage write counter);
//! - load: 1,000 QoS 0 messages a second (~100 B JSON, temperature swinging
//!   23-30 °C over 2 s so the thresholds flip) on `sensors/devN/reading`,
//!   N = 0..99, paced by per-message deadlines; VmRSS sampled every 250 ms;
//!   the storage write counter bracketed by `sync -f` around the load window;
//! - 1 s to drain, VmHWM, SIGTERM, and the JSON summary from the last stdout line.
//!
//! (b) adds `[upstream]` pointing at the same embedded broker (standing in for
//! the cloud broker) with `[[upstream.forward]] topics = ["sensors/#"]`, so every
//! message is also appended to the durable outbox (group commit + fsync) and sent
//! upstream at QoS 1.
//!
//! The soak (issue 22, item 8): `EDGEFN_BENCH_SOAK_MIN=60` runs (b) only, for
//! that many minutes, at QoS 1, with one more function that spools: it spins in
//! proportion to the payload's length on dev0's readings (10 a second), and
//! every 2,000th reading is 2 KB long, so every 2 s it stalls for tens of
//! milliseconds, falls behind, spools and drains its spool. Resident memory is
//! printed each minute as it runs, and the trace is by the minute.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use rumqttc::{Client, Event, MqttOptions, Packet, QoS};

const GATEWAY_ID: &str = "footprint";
const FUNCTIONS: usize = 10;
const DEVICES: usize = 100;
const RATE: u64 = 1_000;
const SAMPLE_EVERY: Duration = Duration::from_millis(250);
const IDLE_WAIT: Duration = Duration::from_secs(2);
const DRAIN_WAIT: Duration = Duration::from_secs(1);
const ONLINE_TIMEOUT: Duration = Duration::from_secs(30);
const TARGET_IDLE_MB: f64 = 10.0;
const TARGET_LOADED_MB: f64 = 20.0;

fn main() {
    let quick = std::env::args().any(|a| a == "--quick")
        || std::env::var("EDGEFN_BENCH_QUICK").map(|v| v == "1").unwrap_or(false);
    // EDGEFN_BENCH_LOAD_S=N replaces the load duration (for exploring, e.g. whether RSS levels off).
    let load_s = std::env::var("EDGEFN_BENCH_LOAD_S").ok().and_then(|v| v.parse().ok()).filter(|&s: &u64| s > 0);
    let load = match soak_minutes() {
        Some(minutes) => Duration::from_secs(minutes * 60),
        None => Duration::from_secs(load_s.unwrap_or(if quick { 3 } else { 10 })),
    };
    // EDGEFN_FOOTPRINT_BIN measures another build of the same binary, such as the
    // size-optimized `pi` profile for the host (`cargo build --profile pi`).
    let bin = std::env::var_os("EDGEFN_FOOTPRINT_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_edgefn")));
    let base = std::env::var_os("EDGEFN_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("bench-footprint"));
    std::fs::create_dir_all(&base).unwrap_or_else(|e| fail(&format!("cannot create {}: {e}", base.display())));
    let disk = DiskCounter::find(&base);

    println!("edgefn footprint{}", if quick && load_s.is_none() { " (quick: 3 s load)" } else { "" });
    println!("  binary:   {}", bin.display());
    println!(
        "  temp dir: {} (device stat: {})",
        base.display(),
        disk.as_ref().map(|d| d.describe()).unwrap_or_else(|| "n/a".into())
    );
    println!(
        "  cpus: {}, scenario: {FUNCTIONS} functions (threshold / window-average alternating) on sensors/+/reading, \
         {DEVICES} publishers' topics, {RATE} msg/s QoS {} for {} s",
        thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        if soak_minutes().is_some() { "1, a spooling function, Mosquitto" } else { "0" },
        load.as_secs()
    );
    println!();

    let mut runs = Vec::new();
    let scenarios: &[bool] = if soak_minutes().is_some() { &[true] } else { &[false, true] };
    for &upstream in scenarios {
        let label = if upstream { "(b) + upstream" } else { "(a) local only" };
        eprintln!("footprint: running {label} ...");
        match run_scenario(&bin, &base, upstream, load, disk.as_ref()) {
            Ok(r) => runs.push((label, r)),
            Err(e) => fail(&format!("{label}: {e}")),
        }
    }

    print_report(&bin, load, &runs, disk.as_ref());
}

/// The soak's length, when `EDGEFN_BENCH_SOAK_MIN` asks for one.
fn soak_minutes() -> Option<u64> {
    std::env::var("EDGEFN_BENCH_SOAK_MIN").ok().and_then(|v| v.parse().ok()).filter(|&m: &u64| m > 0)
}

/// The soak's spooling function: spins 2,000 times a payload byte.
const SPOOLER_WAT: &str = r#"(module
  (import "edgefn" "event_payload" (func $payload (param i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "edgefn_abi_version") (result i32) i32.const 1)
  (func (export "handle") (result i32) (local $n i32)
    (local.set $n (i32.mul (call $payload (i32.const 0) (i32.const 4096)) (i32.const 2000)))
    (loop $l (br_if $l (local.tee $n (i32.sub (local.get $n) (i32.const 1)))))
    i32.const 0))"#;

fn fail(msg: &str) -> ! {
    eprintln!("footprint: SCENARIO BROKE: {msg}");
    std::process::exit(1);
}

// ---------------------------------------------------------------------------
// One scenario

struct Run {
    rss_idle_kb: u64,
    /// Idle RssAnon and RssFile.
    anon_idle_kb: u64,
    file_idle_kb: u64,
    hwm_idle_kb: u64,
    rss_peak_kb: u64,
    rss_last_kb: u64,
    hwm_end_kb: u64,
    /// VmRSS samples during load and drain, (seconds since load start, kB).
    samples: Vec<(f64, u64)>,
    sent: u64,
    load_secs: f64,
    summary: serde_json::Value,
    exit: String,
    /// Device bytes during a 1 s idle window (gateway running, no load).
    disk_idle: Option<u64>,
    /// Device bytes during the load window (sync -f ... sync -f).
    disk_load: Option<u64>,
    /// /proc/PID/io write_bytes growth during the load window.
    proc_write_bytes: Option<u64>,
    outbox_bytes_on_disk: Option<u64>,
    log_lines: usize,
    log_warnings: Vec<String>,
}

fn run_scenario(
    bin: &Path,
    base: &Path,
    upstream: bool,
    load: Duration,
    disk: Option<&DiskCounter>,
) -> Result<Run, String> {
    let dir = tempfile::Builder::new()
        .prefix(if upstream { "fp-upstream-" } else { "fp-local-" })
        .tempdir_in(base)
        .map_err(|e| format!("temp dir: {e}"))?;
    let port = free_port();
    let data_dir = dir.path().join("data");
    std::fs::create_dir_all(&data_dir).map_err(|e| format!("data dir: {e}"))?;
    let config_path = dir.path().join("gateway.toml");
    let mut config = gateway_toml(port, upstream.then_some(data_dir.as_path()));
    // The soak's broker: Mosquitto, so that QoS 1 reaches the gateway as QoS 1
    // (acknowledged only once handled or spooled) and the spooler spools.
    let _mosquitto = match soak_minutes() {
        Some(_) => Some(Mosquitto::start(dir.path(), port)?),
        None => None,
    };
    if soak_minutes().is_some() {
        config = config.replace(
            &format!("[broker]\nmode = \"embedded\"\nlisten = \"127.0.0.1:{port}\"\n"),
            &format!("[broker]\nmode = \"external\"\nhost = \"127.0.0.1\"\nport = {port}\n"),
        );
        let spooler = dir.path().join("spooler.wasm");
        std::fs::write(&spooler, wat::parse_str(SPOOLER_WAT).map_err(|e| e.to_string())?)
            .map_err(|e| format!("write the spooler: {e}"))?;
        config.push_str(&format!(
            "\n[[functions]]\nname = \"spooler\"\nmodule = \"{}\"\ntriggers = [\"sensors/dev0/reading\"]\n\
             [functions.limits]\nfuel = 100000000\n",
            spooler.display()
        ));
    }
    std::fs::write(&config_path, config).map_err(|e| format!("write config: {e}"))?;

    // Status probe first: the status is retained, so order does not matter, but
    // the probe retries until the embedded broker listens.
    let mut gw = Gateway::start(bin, &config_path)?;
    let status = StatusProbe::connect(port);
    let online_by = Instant::now() + ONLINE_TIMEOUT;
    loop {
        if let Some(code) = gw.exited() {
            return Err(format!("the gateway exited ({code}) before coming online; stderr:\n{}", gw.stderr_tail()));
        }
        match status.rx.recv_timeout(Duration::from_millis(100)) {
            Ok(p) if p == "online" => break,
            _ if Instant::now() > online_by => {
                return Err(format!(
                    "no retained \"online\" on edgefn/{GATEWAY_ID}/status within {ONLINE_TIMEOUT:?}; stderr:\n{}",
                    gw.stderr_tail()
                ))
            }
            _ => {}
        }
    }
    let online_at = Instant::now();
    let pid = gw.pid();

    // Idle: a 1 s baseline of the device counter, then VmRSS at online + 2 s.
    let disk_idle = disk.and_then(|d| {
        let w = d.window_start(&data_dir);
        thread::sleep(Duration::from_secs(1));
        d.window_end(&data_dir, w)
    });
    thread::sleep(IDLE_WAIT.saturating_sub(online_at.elapsed()));
    let (rss_idle_kb, hwm_idle_kb) = vm(pid).ok_or("cannot read /proc/PID/status")?;
    let (anon_idle_kb, file_idle_kb) = rss_parts(pid).unwrap_or((0, 0));

    // Load, with a sampler thread.
    let publisher = Publisher::connect(port)?;
    let disk_start = disk.map(|d| d.window_start(&data_dir));
    let io_start = proc_write_bytes(pid);
    let stop = Arc::new(AtomicBool::new(false));
    let t0 = Instant::now();
    let sampler = {
        let stop = stop.clone();
        thread::spawn(move || {
            let mut samples = Vec::new();
            let mut next = Instant::now();
            let mut minute = 0;
            while !stop.load(Ordering::Relaxed) {
                if let Some((rss, _)) = vm(pid) {
                    let t = t0.elapsed().as_secs_f64();
                    if soak_minutes().is_some() && t >= (minute * 60) as f64 {
                        eprintln!("soak: minute {minute}: RSS {:.2} MB", mb(rss));
                        minute += 1;
                    }
                    samples.push((t, rss));
                }
                next += SAMPLE_EVERY;
                thread::sleep(next.saturating_duration_since(Instant::now()));
            }
            samples
        })
    };
    let sent = publisher.run(load, || gw.exited().is_none());
    let load_secs = t0.elapsed().as_secs_f64();
    if let Some(code) = gw.exited() {
        stop.store(true, Ordering::Relaxed);
        return Err(format!("the gateway exited ({code}) during the load; stderr:\n{}", gw.stderr_tail()));
    }
    let io_end = proc_write_bytes(pid);
    let disk_load = match (disk, disk_start) {
        (Some(d), Some(w)) => d.window_end(&data_dir, w),
        _ => None,
    };
    thread::sleep(DRAIN_WAIT);
    stop.store(true, Ordering::Relaxed);
    let samples = sampler.join().map_err(|_| "sampler panicked")?;
    let (rss_last_kb, hwm_end_kb) = vm(pid).ok_or("cannot read /proc/PID/status after the load")?;
    publisher.disconnect();
    status.disconnect();

    let stopped = gw.stop()?;
    let summary: serde_json::Value = stopped
        .stdout
        .lines()
        .last()
        .ok_or_else(|| format!("no summary on stdout ({}); stderr:\n{}", stopped.exit, stopped.stderr_tail))
        .and_then(|l| serde_json::from_str(l).map_err(|e| format!("summary {l:?} is not JSON: {e}")))?;
    let n = |k: &str| summary[k].as_u64().unwrap_or(0);
    if n("events_in") == 0 || n("invocations_ok") == 0 {
        return Err(format!("no message processed: {summary}; stderr:\n{}", stopped.stderr_tail));
    }
    if upstream && summary["upstream"]["accepted"].as_u64().unwrap_or(0) == 0 {
        return Err(format!("nothing accepted by the outbox: {summary}; stderr:\n{}", stopped.stderr_tail));
    }

    Ok(Run {
        rss_idle_kb,
        anon_idle_kb,
        file_idle_kb,
        hwm_idle_kb,
        rss_peak_kb: samples.iter().map(|s| s.1).max().unwrap_or(0).max(rss_last_kb),
        rss_last_kb,
        hwm_end_kb,
        samples,
        sent,
        load_secs,
        exit: stopped.exit,
        disk_idle,
        disk_load,
        proc_write_bytes: io_start.zip(io_end).map(|(a, b)| b.saturating_sub(a)),
        outbox_bytes_on_disk: summary["upstream"]["bytes_on_disk"].as_u64(),
        summary,
        log_lines: stopped.log_lines,
        log_warnings: stopped.warnings,
    })
}

fn gateway_toml(port: u16, upstream_data: Option<&Path>) -> String {
    let mut s = format!(
        "[gateway]\nid = \"{GATEWAY_ID}\"\nshutdown_grace_ms = 10000\n\n\
         [broker]\nmode = \"embedded\"\nlisten = \"127.0.0.1:{port}\"\n"
    );
    for i in 0..FUNCTIONS {
        s.push_str(&format!("\n[[functions]]\nname = \"f{i}\"\n"));
        if i % 2 == 0 {
            s.push_str(
                "module = \"builtin:threshold\"\ntriggers = [\"sensors/+/reading\"]\n[functions.config]\n\
                 field = \"temperature\"\nabove = 28.0\nbelow = 25.0\ncommand_topic = \"cmnd/{device}/POWER\"\n",
            );
        } else {
            s.push_str(
                "module = \"builtin:window-average\"\ntriggers = [\"sensors/+/reading\"]\n[functions.config]\n\
                 field = \"temperature\"\nwindow = 10\n",
            );
        }
    }
    if let Some(data) = upstream_data {
        s.push_str(&format!(
            "\n[upstream]\nurl = \"mqtt://127.0.0.1:{port}\"\ndata_dir = \"{}\"\n\n\
             [[upstream.forward]]\ntopics = [\"sensors/#\"]\nstream = \"telemetry\"\n",
            data.display()
        ));
    }
    s
}

/// One reading, ~100 bytes; the temperature swings 23-30 °C over 2 s so the
/// threshold functions cross 28 and 25 about once a second each.
fn payload(i: u64) -> String {
    let t = i as f64 / RATE as f64;
    let temp = 26.5 + 3.5 * (t * std::f64::consts::PI).sin() + ((i % 7) as f64 - 3.0) * 0.05;
    let hum = 55.0 + (i % 130) as f64 / 10.0;
    format!(
        "{{\"temperature\":{temp:.2},\"humidity\":{hum:.1},\"pressure\":1013.2,\"battery\":97,\"linkquality\":{}}}",
        100 + i % 60
    )
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind a free port").local_addr().expect("local addr").port()
}

// ---------------------------------------------------------------------------
// The gateway process

/// Mosquitto on `port`, killed when dropped.
struct Mosquitto(Child);

impl Mosquitto {
    fn start(dir: &Path, port: u16) -> Result<Mosquitto, String> {
        let conf = dir.join("mosquitto.conf");
        std::fs::write(&conf, format!("listener {port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 100000\n"))
            .map_err(|e| e.to_string())?;
        let bin = ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .ok_or("the soak needs mosquitto (apt-get install mosquitto)")?;
        let child = Command::new(bin)
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("mosquitto: {e}"))?;
        let by = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > by {
                return Err("mosquitto did not listen".into());
            }
            thread::sleep(Duration::from_millis(20));
        }
        Ok(Mosquitto(child))
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Gateway {
    child: Child,
    stdout: Option<thread::JoinHandle<String>>,
    stderr: Option<thread::JoinHandle<()>>,
    log: Arc<Mutex<Log>>,
}

#[derive(Default)]
struct Log {
    tail: VecDeque<String>,
    lines: usize,
    warnings: Vec<String>,
}

struct Stopped {
    exit: String,
    stdout: String,
    stderr_tail: String,
    log_lines: usize,
    warnings: Vec<String>,
}

impl Gateway {
    fn start(bin: &Path, config: &Path) -> Result<Gateway, String> {
        let mut child = Command::new(bin)
            .args(["run", "--config"])
            .arg(config)
            .env_remove("RUST_LOG")
            .env_remove("EDGEFN_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
        let out = child.stdout.take().expect("piped stdout");
        let err = child.stderr.take().expect("piped stderr");
        let stdout = thread::spawn(move || {
            let mut s = String::new();
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                s.push_str(&line);
                s.push('\n');
            }
            s
        });
        let log = Arc::new(Mutex::new(Log::default()));
        let keep = log.clone();
        let stderr = thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let mut l = keep.lock().unwrap();
                l.lines += 1;
                if (line.contains("WARN") || line.contains("ERROR")) && l.warnings.len() < 20 {
                    l.warnings.push(line.clone());
                }
                l.tail.push_back(line);
                if l.tail.len() > 40 {
                    l.tail.pop_front();
                }
            }
        });
        Ok(Gateway { child, stdout: Some(stdout), stderr: Some(stderr), log })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn exited(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(Some(status)) => Some(status.to_string()),
            Ok(None) => None,
            Err(e) => Some(format!("wait failed: {e}")),
        }
    }

    fn stderr_tail(&self) -> String {
        self.log.lock().unwrap().tail.iter().cloned().collect::<Vec<_>>().join("\n")
    }

    /// SIGTERM, then wait (up to 30 s; SIGKILL after that) and collect the output.
    fn stop(mut self) -> Result<Stopped, String> {
        let _ = Command::new("kill").arg("-TERM").arg(self.pid().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        let exit = loop {
            if let Some(code) = self.exited() {
                break code;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return Err(format!(
                    "the gateway did not exit within 30 s of SIGTERM; stderr:\n{}",
                    self.stderr_tail()
                ));
            }
            thread::sleep(Duration::from_millis(20));
        };
        let stdout = self.stdout.take().and_then(|h| h.join().ok()).unwrap_or_default();
        if let Some(h) = self.stderr.take() {
            let _ = h.join();
        }
        let log = std::mem::take(&mut *self.log.lock().unwrap());
        Ok(Stopped {
            exit,
            stdout,
            stderr_tail: log.tail.into_iter().collect::<Vec<_>>().join("\n"),
            log_lines: log.lines,
            warnings: log.warnings,
        })
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// RssAnon (private memory) and RssFile (pages of the mapped binary and
/// libraries, shared and reclaimable) of `pid`, in kB.
fn rss_parts(pid: u32) -> Option<(u64, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        s.lines().find(|l| l.starts_with(name)).and_then(|l| l.split_whitespace().nth(1)).and_then(|v| v.parse().ok())
    };
    Some((field("RssAnon:")?, field("RssFile:")?))
}

/// VmRSS and VmHWM of `pid`, in kB.
fn vm(pid: u32) -> Option<(u64, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        s.lines().find(|l| l.starts_with(name)).and_then(|l| l.split_whitespace().nth(1)).and_then(|v| v.parse().ok())
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// `write_bytes` of /proc/PID/io.
fn proc_write_bytes(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/io")).ok()?;
    s.lines()
        .find(|l| l.starts_with("write_bytes:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

// ---------------------------------------------------------------------------
// MQTT clients

/// Watches the gateway's status topic; retries until the broker listens.
struct StatusProbe {
    client: Client,
    rx: mpsc::Receiver<String>,
}

impl StatusProbe {
    fn connect(port: u16) -> StatusProbe {
        let mut options = MqttOptions::new("footprint-status", "127.0.0.1", port);
        options.set_keep_alive(Duration::from_secs(5));
        let (client, mut connection) = Client::new(options, 64);
        let (tx, rx) = mpsc::channel();
        let subscriber = client.clone();
        let topic = format!("edgefn/{GATEWAY_ID}/status");
        thread::spawn(move || {
            for event in connection.iter() {
                match event {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        let _ = subscriber.try_subscribe(topic.clone(), QoS::AtLeastOnce);
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let _ = tx.send(String::from_utf8_lossy(&p.payload).into_owned());
                    }
                    Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => return,
                    Ok(_) => {}
                    Err(_) => thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        StatusProbe { client, rx }
    }

    fn disconnect(self) {
        let _ = self.client.disconnect();
    }
}

/// The load generator: one MQTT connection publishing as 100 devices would.
struct Publisher {
    client: Client,
    done: mpsc::Receiver<()>,
}

impl Publisher {
    fn connect(port: u16) -> Result<Publisher, String> {
        let mut options = MqttOptions::new("footprint-load", "127.0.0.1", port);
        options.set_keep_alive(Duration::from_secs(5));
        let (client, mut connection) = Client::new(options, 10_000);
        let (connected_tx, connected) = mpsc::channel();
        let (done_tx, done) = mpsc::channel();
        thread::spawn(move || {
            for event in connection.iter() {
                match event {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        let _ = connected_tx.send(());
                    }
                    Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => break,
                    Ok(_) => {}
                    Err(_) => thread::sleep(Duration::from_millis(20)),
                }
            }
            let _ = done_tx.send(());
        });
        connected.recv_timeout(Duration::from_secs(10)).map_err(|_| "the load generator could not connect")?;
        Ok(Publisher { client, done })
    }

    /// Publishes RATE messages a second for `load`; returns how many were queued.
    fn run(&self, load: Duration, mut alive: impl FnMut() -> bool) -> u64 {
        let total = RATE * load.as_secs();
        let start = Instant::now();
        let mut sent = 0;
        for i in 0..total {
            let due = start + Duration::from_micros(i * 1_000_000 / RATE);
            let now = Instant::now();
            if due > now {
                thread::sleep(due - now);
            }
            if i % RATE == 0 && !alive() {
                break;
            }
            let topic = format!("sensors/dev{}/reading", i % DEVICES as u64);
            let (qos, mut body) = match soak_minutes() {
                Some(_) => (QoS::AtLeastOnce, payload(i)),
                None => (QoS::AtMostOnce, payload(i)),
            };
            if qos == QoS::AtLeastOnce && i % 2_000 == 0 {
                // The spooler's stall: a long reading (a JSON string field).
                body.insert_str(1, &format!("\"note\":\"{}\",", "x".repeat(1_900)));
            }
            if self.client.publish(topic, qos, false, body.into_bytes()).is_err() {
                break;
            }
            sent += 1;
        }
        sent
    }

    /// Disconnects once everything queued has gone out.
    fn disconnect(self) {
        let _ = self.client.disconnect();
        let _ = self.done.recv_timeout(Duration::from_secs(10));
    }
}

// ---------------------------------------------------------------------------
// Bytes written to the storage device

/// Sectors-written counter of the whole disk holding a directory.
struct DiskCounter {
    stat: PathBuf,
    name: String,
}

impl DiskCounter {
    fn find(dir: &Path) -> Option<DiskCounter> {
        use std::os::unix::fs::MetadataExt;
        let dev = std::fs::metadata(dir).ok()?.dev();
        let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
        let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
        let sys = std::fs::canonicalize(format!("/sys/dev/block/{major}:{minor}")).ok()?;
        // A partition's counters are a subset of its disk's: use the whole disk.
        let disk = if sys.join("partition").exists() { sys.parent()?.to_path_buf() } else { sys };
        let stat = disk.join("stat");
        std::fs::read_to_string(&stat).ok()?;
        let name = disk.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        Some(DiskCounter { stat, name: format!("{name} ({major}:{minor})") })
    }

    fn describe(&self) -> String {
        format!("{} {}", self.name, self.stat.display())
    }

    /// Bytes written so far: field 7 (sectors written) x 512.
    fn bytes(&self) -> Option<u64> {
        let s = std::fs::read_to_string(&self.stat).ok()?;
        s.split_whitespace().nth(6)?.parse::<u64>().ok().map(|sectors| sectors * 512)
    }

    fn window_start(&self, dir: &Path) -> Option<u64> {
        sync_fs(dir);
        self.bytes()
    }

    fn window_end(&self, dir: &Path, start: Option<u64>) -> Option<u64> {
        sync_fs(dir);
        Some(self.bytes()?.saturating_sub(start?))
    }
}

/// `sync -f DIR`: flush the filesystem holding DIR (all of it, `sync`, if that fails).
fn sync_fs(dir: &Path) {
    let ok = Command::new("sync").arg("-f").arg(dir).status().map(|s| s.success()).unwrap_or(false);
    if !ok {
        let _ = Command::new("sync").status();
    }
}

// ---------------------------------------------------------------------------
// The report

fn mb(kb: u64) -> f64 {
    kb as f64 * 1024.0 / 1e6
}

fn file_size(p: &Path) -> Option<u64> {
    std::fs::metadata(p).ok().map(|m| m.len())
}

fn fmt_size(bytes: Option<u64>) -> String {
    match bytes {
        Some(b) => format!("{:.2} MB ({b} B)", b as f64 / 1e6),
        None => "not built".into(),
    }
}

fn rate(bytes: Option<u64>, secs: f64) -> String {
    match bytes {
        Some(b) => format!("{:.1} KB/s", b as f64 / secs / 1e3),
        None => "n/a".into(),
    }
}

fn print_report(bin: &Path, load: Duration, runs: &[(&str, Run)], disk: Option<&DiskCounter>) {
    // target/<profile>/edgefn -> target/
    let target = bin.parent().and_then(Path::parent).map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("target"));
    println!("== binary size ==");
    // The profile is the directory the binary was built into (release, pi), not assumed.
    let profile = bin.parent().and_then(Path::file_name).map(|p| p.to_string_lossy().into_owned()).unwrap_or_default();
    println!("  {:<52} {}", format!("benchmarked ({profile} profile: {})", bin.display()), fmt_size(file_size(bin)));
    for triple in ["aarch64-unknown-linux-gnu", "armv7-unknown-linux-gnueabihf"] {
        let p = target.join(triple).join("pi").join("edgefn");
        println!(
            "  {:<52} {}",
            format!("Pi: {}", p.strip_prefix(target.parent().unwrap_or(&target)).unwrap_or(&p).display()),
            fmt_size(file_size(&p))
        );
    }

    println!();
    println!("== memory (MB = 10^6 B; VmRSS/VmHWM from /proc/PID/status) ==");
    println!(
        "  {:<16} {:>10} {:>10} {:>14} {:>12} {:>12} {:>12}",
        "scenario", "RSS idle", "HWM idle", "RSS peak load", "RSS end", "HWM end", "targets"
    );
    for (label, r) in runs {
        let idle_ok = if mb(r.rss_idle_kb) <= TARGET_IDLE_MB { "ok" } else { "OVER" };
        let load_ok = if mb(r.rss_peak_kb) <= TARGET_LOADED_MB { "ok" } else { "OVER" };
        println!(
            "  {:<16} {:>7.2} MB {:>7.2} MB {:>11.2} MB {:>9.2} MB {:>9.2} MB   idle<={TARGET_IDLE_MB} {idle_ok}, load<={TARGET_LOADED_MB} {load_ok}",
            label,
            mb(r.rss_idle_kb),
            mb(r.hwm_idle_kb),
            mb(r.rss_peak_kb),
            mb(r.rss_last_kb),
            mb(r.hwm_end_kb),
        );
    }
    for (label, r) in runs {
        println!(
            "  idle RSS of {label}: {:.2} MB private (RssAnon) + {:.2} MB file-backed (RssFile: pages of the {} binary, shared and reclaimable)",
            mb(r.anon_idle_kb),
            mb(r.file_idle_kb),
            std::env::consts::ARCH
        );
    }
    // Every second of the load, or every minute of a soak.
    let step = if soak_minutes().is_some() { 60 } else { 1 };
    for (label, r) in runs {
        let mut last = None;
        let trace: Vec<String> = r
            .samples
            .iter()
            .filter(|(t, _)| {
                let at = *t as u64 / step;
                (last != Some(at)).then(|| last = Some(at)).is_some()
            })
            .map(|(t, kb)| format!("{:.0}s:{:.2}", t, mb(*kb)))
            .collect();
        println!("  RSS trace {label} (MB, every {step} s of load + drain): {}", trace.join(" "));
    }

    println!();
    println!(
        "== throughput ({} s load, offered {RATE} msg/s QoS 0; each message triggers {FUNCTIONS} invocations) ==",
        load.as_secs()
    );
    println!(
        "  {:<16} {:>9} {:>9} {:>9} {:>12} {:>12} {:>8} {:>8} {:>9} {:>9}",
        "scenario", "sent", "sent/s", "events_in", "events_in/s", "invoc ok", "failed", "q-drop", "invoc/s", "exit"
    );
    for (label, r) in runs {
        let n = |k: &str| r.summary[k].as_u64().unwrap_or(0);
        println!(
            "  {:<16} {:>9} {:>9.0} {:>9} {:>12.0} {:>12} {:>8} {:>8} {:>9.0} {:>9}",
            label,
            r.sent,
            r.sent as f64 / r.load_secs,
            n("events_in"),
            n("events_in") as f64 / r.load_secs,
            n("invocations_ok"),
            n("invocations_failed"),
            n("queue_full_dropped"),
            n("invocations_ok") as f64 / r.load_secs,
            r.exit
        );
    }

    println!();
    println!("== bytes written to storage ==");
    match disk {
        Some(d) => println!(
            "  device: sectors written (field 7) x 512 of {}; windows bracketed by `sync -f <data dir>`;\n  \
             includes the filesystem journal and ANY other process writing to that device meanwhile",
            d.describe()
        ),
        None => println!("  device: n/a (the temp dir is not on a block device with /sys/dev/block stats)"),
    }
    println!(
        "  {:<16} {:>16} {:>16} {:>14} {:>26}",
        "scenario", "idle 1 s baseline", "load window", "device B/msg", "write_bytes/s (/proc io)*"
    );
    for (label, r) in runs {
        let per_msg = match r.disk_load {
            Some(b) if r.sent > 0 => format!("{:.0}", b as f64 / r.sent as f64),
            _ => "n/a".into(),
        };
        println!(
            "  {:<16} {:>16} {:>16} {:>14} {:>26}",
            label,
            rate(r.disk_idle, 1.0),
            rate(r.disk_load, r.load_secs),
            per_msg,
            rate(r.proc_write_bytes, r.load_secs)
        );
    }
    println!("  * /proc/PID/io write_bytes is inflated on this kernel (a whole 1 MiB page-cache folio is counted");
    println!("    each time it is re-dirtied): secondary figure only, not bytes that reached the device.");
    for (label, r) in runs {
        if let Some(up) = r.summary.get("upstream").filter(|u| u.is_object()) {
            let n = |k: &str| up[k].as_u64().unwrap_or(0);
            println!(
                "  outbox {label}: accepted {}, acknowledged {}, fsyncs {} ({:.1} records/fsync), sent {}, resent {}, \
                 refused {}, depth at exit {}, bytes_on_disk {}",
                n("accepted"),
                n("acknowledged"),
                n("fsyncs"),
                n("accepted") as f64 / n("fsyncs").max(1) as f64,
                n("sent"),
                n("resent"),
                n("refused"),
                n("depth"),
                r.outbox_bytes_on_disk.unwrap_or(0)
            );
        }
    }

    println!();
    println!("== gateway logs ==");
    for (label, r) in runs {
        println!("  {label}: {} stderr lines, {} WARN/ERROR (first shown)", r.log_lines, r.log_warnings.len());
        for w in r.log_warnings.iter().take(3) {
            println!("    {w}");
        }
    }
    for (label, r) in runs {
        println!("  summary {label}: {}", r.summary);
    }

    println!();
    println!("reproduce: cargo bench --bench footprint   (quick, 3 s load: cargo bench --bench footprint -- --quick)");
}
