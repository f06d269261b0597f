//! The real `edgefn` binary, run as a child process on a generated configuration.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};

/// Path of the binary cargo built for these tests.
pub fn edgefn_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_edgefn"))
}

/// A running `edgefn run`.
pub struct GatewayProcess {
    child: Option<Child>,
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
        let line = self.stdout.lines().last().unwrap_or_else(|| panic!("no summary on stdout; stderr:\n{}", self.stderr));
        serde_json::from_str(line).unwrap_or_else(|e| panic!("summary {line:?} is not JSON: {e}"))
    }
}

impl GatewayProcess {
    /// Writes `config` to `dir/gateway.toml` and starts `edgefn run` on it.
    pub fn start(dir: &Path, config: &str) -> GatewayProcess {
        let path = dir.join("gateway.toml");
        std::fs::write(&path, config).unwrap();
        let child = Command::new(edgefn_bin())
            .args(["run", "--config"])
            .arg(&path)
            .env("RUST_LOG", "info,rumqttd=warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        GatewayProcess { child: Some(child) }
    }

    /// Sends SIGTERM and waits for the process to exit.
    pub fn stop(mut self) -> Stopped {
        let mut child = self.child.take().unwrap();
        let ok = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success();
        assert!(ok, "could not signal the gateway");
        let mut stdout = String::new();
        let mut stderr = String::new();
        child.stdout.take().unwrap().read_to_string(&mut stdout).unwrap();
        child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
        let status = child.wait().unwrap();
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
