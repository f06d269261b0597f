//! The real `edgefn` binary, run as a child process on a generated configuration.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::probe::WAIT;

/// Path of the binary cargo built for these tests.
pub fn edgefn_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_edgefn"))
}

/// A running `edgefn run`, its log lines streamed as they are written.
pub struct GatewayProcess {
    child: Option<Child>,
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
}

impl GatewayProcess {
    /// Writes `config` to `dir/gateway.toml` and starts `edgefn run` on it.
    pub fn start(dir: &Path, config: &str) -> GatewayProcess {
        Self::start_named(dir, "gateway.toml", config)
    }

    /// Like `start`, with the configuration written to `dir/file`.
    pub fn start_named(dir: &Path, file: &str, config: &str) -> GatewayProcess {
        let path = dir.join(file);
        std::fs::write(&path, config).unwrap();
        let mut child = Command::new(edgefn_bin())
            .args(["run", "--config"])
            .arg(&path)
            .env("RUST_LOG", "info,rumqttd=warn")
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
        GatewayProcess { child: Some(child), log_lines, log, log_reader: Some(log_reader) }
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

    /// Kills the process with SIGKILL, as a power cut would, and waits for it.
    pub fn kill9(mut self) {
        let mut child = self.child.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
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
        Stopped { status, stdout, stderr }
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
