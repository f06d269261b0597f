//! The real `edgefn` binary, run as a child process on a generated configuration.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::probe::WAIT;

/// The binary under test: the one cargo built for these tests, or the one
/// `EDGEFN_TEST_BIN` names (a cross-built ARM binary, say).
pub fn edgefn_bin() -> PathBuf {
    match std::env::var_os("EDGEFN_TEST_BIN") {
        Some(bin) => PathBuf::from(bin),
        None => PathBuf::from(env!("CARGO_BIN_EXE_edgefn")),
    }
}

/// A command that runs the binary under test, through `EDGEFN_TEST_RUNNER` when
/// set (e.g. `qemu-aarch64 -L /usr/aarch64-linux-gnu` for an ARM binary).
pub fn edgefn_command() -> Command {
    match std::env::var("EDGEFN_TEST_RUNNER") {
        Ok(runner) if !runner.trim().is_empty() => {
            let mut parts = runner.split_whitespace();
            let mut cmd = Command::new(parts.next().expect("runner is not empty"));
            cmd.args(parts).arg(edgefn_bin());
            cmd
        }
        _ => Command::new(edgefn_bin()),
    }
}

/// A running `edgefn run`, its log lines streamed as they are written.
pub struct GatewayProcess {
    child: Option<Child>,
    /// The memory cgroup it runs in, with `EDGEFN_TEST_MEMORY_CAP`.
    cgroup: Option<PathBuf>,
    log_lines: Receiver<String>,
    log: Arc<Mutex<Vec<String>>>,
    log_reader: Option<std::thread::JoinHandle<()>>,
}

/// What a stopped gateway left behind.
pub struct Stopped {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Stopped {
    /// The JSON counters `edgefn run` prints on stdout when it exits.
    pub fn summary(&self) -> serde_json::Value {
        let line =
            self.stdout.lines().last().unwrap_or_else(|| panic!("no summary on stdout; stderr:\n{}", self.stderr));
        serde_json::from_str(line).unwrap_or_else(|e| panic!("summary {line:?} is not JSON: {e}"))
    }

    /// Events each function ran to completion or kept in its spool for after
    /// the restart, in all: the outcomes a test that does not wait for every
    /// invocation may count on. A QoS 1 event spills to the spool, rather than
    /// queue, when its function is slow (a debug build's first invocation on a
    /// busy machine takes longer than a turn), and a stop keeps it there.
    #[allow(dead_code)]
    pub fn ran_or_kept(&self) -> u64 {
        let summary = self.summary();
        let functions = summary["functions"].as_object().cloned().unwrap_or_default();
        functions.values().map(|f| f["ok"].as_u64().unwrap_or(0) + f["spool_kept"].as_u64().unwrap_or(0)).sum()
    }
}

impl GatewayProcess {
    /// Writes `config` to `dir/gateway.toml` and starts `edgefn run` on it.
    pub fn start(dir: &Path, config: &str) -> GatewayProcess {
        Self::start_named(dir, "gateway.toml", config)
    }

    /// Like `start`, with the configuration written to `dir/file`.
    pub fn start_named(dir: &Path, file: &str, config: &str) -> GatewayProcess {
        Self::start_with_env(dir, file, config, &[])
    }

    /// Like `start_named`, with extra environment variables.
    pub fn start_with_env(dir: &Path, file: &str, config: &str, env: &[(&str, &Path)]) -> GatewayProcess {
        let path = dir.join(file);
        std::fs::write(&path, config).unwrap();
        Self::spawn(&path, None, env)
    }

    /// `edgefn run --config CONFIG` as a user types it: in working directory
    /// `cwd`, with `config` as given (relative to `cwd`, say), already written.
    pub fn start_in(cwd: &Path, config: &Path, env: &[(&str, &Path)]) -> GatewayProcess {
        Self::spawn(config, Some(cwd), env)
    }

    fn spawn(path: &Path, cwd: Option<&Path>, env: &[(&str, &Path)]) -> GatewayProcess {
        let cgroup = memory_cap().map(memory_cgroup);
        let mut command = match &cgroup {
            // Join the capped cgroup first, then become the gateway.
            Some(cg) => {
                let inner = edgefn_command();
                let mut wrapped = Command::new("sh");
                wrapped
                    .arg("-c")
                    .arg(r#"echo $$ > "$0/cgroup.procs" && exec "$@""#)
                    .arg(cg)
                    .arg(inner.get_program())
                    .args(inner.get_args());
                wrapped
            }
            None => edgefn_command(),
        };
        if let Some(cwd) = cwd {
            command.current_dir(cwd);
        }
        let mut child = command
            .args(["run", "--config"])
            .arg(path)
            .env("RUST_LOG", "info,rumqttd=warn")
            .envs(env.iter().map(|(k, v)| (*k, *v)))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, log_lines) = mpsc::channel();
        let keep = log.clone();
        let log_reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                keep.lock().unwrap().push(line.clone());
                let _ = tx.send(line);
            }
        });
        GatewayProcess { child: Some(child), cgroup, log_lines, log, log_reader: Some(log_reader) }
    }

    /// Waits until the gateway logs a line matching `pred`, and returns it.
    pub fn wait_for_log(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            match self.log_lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) if pred(&line) => return line,
                Ok(_) => {}
                Err(_) => panic!(
                    "waited {WAIT:?} for the gateway to log {what}; it logged:\n{}",
                    self.log.lock().unwrap().join("\n")
                ),
            }
        }
    }

    /// How many lines logged so far contain `text`.
    pub fn logged(&self, text: &str) -> usize {
        self.log.lock().unwrap().iter().filter(|l| l.contains(text)).count()
    }

    /// Writes `config` to `dir/file` and sends SIGHUP, as `systemctl reload` does.
    pub fn reload(&self, dir: &Path, file: &str, config: &str) {
        std::fs::write(dir.join(file), config).unwrap();
        let pid = self.child.as_ref().unwrap().id().to_string();
        assert!(Command::new("kill").args(["-HUP", &pid]).status().unwrap().success(), "could not signal the gateway");
    }

    /// Stops the process where it stands (SIGSTOP), as a power cut stops the
    /// CPU; `kill9` then ends it.
    pub fn freeze(&self) {
        let pid = self.child.as_ref().unwrap().id().to_string();
        assert!(Command::new("kill").args(["-STOP", &pid]).status().unwrap().success(), "could not stop the gateway");
    }

    /// The gateway's process id (for its memory in /proc).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Kills the process with SIGKILL, as a power cut would, and waits for it.
    pub fn kill9(mut self) {
        let mut child = self.child.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
        if let Some(cg) = self.cgroup.take() {
            let _ = std::fs::remove_dir(cg);
        }
    }

    /// Sends SIGTERM and waits for the process to exit.
    pub fn stop(mut self) -> Stopped {
        let mut child = self.child.take().unwrap();
        let ok = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success();
        assert!(ok, "could not signal the gateway");
        let mut stdout = String::new();
        child.stdout.take().unwrap().read_to_string(&mut stdout).unwrap();
        let status = child.wait().unwrap();
        self.log_reader.take().unwrap().join().unwrap();
        let stderr = self.log.lock().unwrap().join("\n");
        if let Some(cg) = self.cgroup.take() {
            let read = |f: &str| std::fs::read_to_string(cg.join(f)).unwrap_or_default();
            let peak: u64 = read("memory.max_usage_in_bytes").trim().parse().unwrap_or(0);
            let oom_kills = read("memory.oom_control")
                .lines()
                .find_map(|l| l.strip_prefix("oom_kill ").map(|n| n.trim().to_owned()));
            eprintln!("memory cgroup: peak {} KiB, oom kills {}", peak / 1024, oom_kills.as_deref().unwrap_or("?"));
            assert_eq!(oom_kills.as_deref().unwrap_or("0"), "0", "the gateway hit its memory cap");
            let _ = std::fs::remove_dir(&cg);
        }
        Stopped { status, stdout, stderr }
    }
}

/// The memory cap `EDGEFN_TEST_MEMORY_CAP` asks for, in bytes (`64M` works too).
fn memory_cap() -> Option<u64> {
    let text = std::env::var("EDGEFN_TEST_MEMORY_CAP").ok()?;
    let text = text.trim();
    let (number, unit) = match text.strip_suffix('M') {
        Some(n) => (n, 1 << 20),
        None => (text, 1),
    };
    Some(number.parse::<u64>().expect("EDGEFN_TEST_MEMORY_CAP: bytes, or megabytes with M") * unit)
}

/// Creates a cgroup (v1 memory controller) limited to `bytes`.
fn memory_cgroup(bytes: u64) -> PathBuf {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let cg = PathBuf::from(format!("/sys/fs/cgroup/memory/edgefn-test-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&cg).unwrap_or_else(|e| {
        panic!("EDGEFN_TEST_MEMORY_CAP needs a writable cgroup v1 memory controller: {}: {e}", cg.display())
    });
    std::fs::write(cg.join("memory.limit_in_bytes"), bytes.to_string()).unwrap();
    // No swap to hide in, where the kernel offers the knob.
    let _ = std::fs::write(cg.join("memory.memsw.limit_in_bytes"), bytes.to_string());
    cg
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
            if std::thread::panicking() {
                // A test failed while the gateway ran: what it logged says why.
                eprintln!("gateway stderr:\n{}", self.log.lock().unwrap_or_else(|p| p.into_inner()).join("\n"));
            }
        }
        if let Some(cg) = self.cgroup.take() {
            let _ = std::fs::remove_dir(cg);
        }
    }
}
