//! The broker a test runs against: the gateway's embedded one (default) or a
//! Mosquitto process started for the test (`EDGEFN_TEST_BROKER=mosquitto`).

use std::process::{Child, Command, Stdio};

use super::{free_port, require_tool};

/// A broker for one test. Mosquitto is killed when this is dropped.
pub struct TestBroker {
    pub port: u16,
    /// Set when the gateway must run the broker itself.
    pub embedded: bool,
    mosquitto: Option<Child>,
    /// Holds mosquitto.conf.
    dir: Option<tempfile::TempDir>,
}

impl TestBroker {
    /// The broker `EDGEFN_TEST_BROKER` names: `embedded` (default) or `mosquitto`.
    pub fn from_env() -> TestBroker {
        match std::env::var("EDGEFN_TEST_BROKER").as_deref() {
            Ok("mosquitto") => Self::mosquitto(),
            Ok("embedded") | Err(_) => Self::embedded(),
            Ok(other) => panic!("EDGEFN_TEST_BROKER={other:?}: use embedded or mosquitto"),
        }
    }

    pub fn embedded() -> TestBroker {
        TestBroker { port: free_port(), embedded: true, mosquitto: None, dir: None }
    }

    /// Starts Mosquitto on a free loopback port with a generated configuration.
    pub fn mosquitto() -> TestBroker {
        let bin = require_tool("mosquitto", &["/usr/sbin/mosquitto", "/usr/bin/mosquitto"])
            .expect("EDGEFN_TEST_BROKER=mosquitto needs mosquitto installed");
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let conf = dir.path().join("mosquitto.conf");
        std::fs::write(&conf, format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nlog_dest stderr\n")).unwrap();
        let child = spawn_mosquitto(&bin, &conf);
        TestBroker { port, embedded: false, mosquitto: Some(child), dir: Some(dir) }
    }

    /// Kills Mosquitto and starts it again on the same port (it forgets everything).
    pub fn restart_mosquitto(&mut self) {
        let child = self.mosquitto.as_mut().expect("only a Mosquitto broker can be restarted");
        child.kill().unwrap();
        child.wait().unwrap();
        let bin = require_tool("mosquitto", &["/usr/sbin/mosquitto", "/usr/bin/mosquitto"]).unwrap();
        let conf = self.dir.as_ref().unwrap().path().join("mosquitto.conf");
        self.mosquitto = Some(spawn_mosquitto(&bin, &conf));
    }

    /// The `[broker]` section of a gateway configuration that uses this broker.
    pub fn gateway_toml(&self) -> String {
        if self.embedded {
            format!("[broker]\nmode = \"embedded\"\nlisten = \"127.0.0.1:{}\"\nreconnect_min_ms = 20\nreconnect_max_ms = 200\n", self.port)
        } else {
            format!("[broker]\nmode = \"external\"\nhost = \"127.0.0.1\"\nport = {}\nreconnect_min_ms = 20\nreconnect_max_ms = 200\n", self.port)
        }
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        if let Some(child) = &mut self.mosquitto {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn spawn_mosquitto(bin: &std::path::Path, conf: &std::path::Path) -> Child {
    Command::new(bin).arg("-c").arg(conf).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap()
}
