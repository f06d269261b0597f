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
        Self::mosquitto_with("")
    }

    /// Mosquitto that keeps sessions and queued messages on disk across restarts
    /// (stopped with SIGTERM, it saves them).
    pub fn mosquitto_persistent() -> TestBroker {
        Self::mosquitto_with("persistence true\nautosave_interval 0\nmax_queued_messages 100000\n")
    }

    /// Mosquitto with extra configuration lines; `{dir}` in them is its own directory.
    pub fn mosquitto_with(extra: &str) -> TestBroker {
        let bin = require_tool("mosquitto", &["/usr/sbin/mosquitto", "/usr/bin/mosquitto"])
            .expect("EDGEFN_TEST_BROKER=mosquitto needs mosquitto installed");
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let conf = dir.path().join("mosquitto.conf");
        let persistence = if extra.contains("persistence true") {
            // Run as whoever started it, so that Mosquitto can write its database here.
            let user = std::env::var("USER").unwrap_or_else(|_| "root".into());
            format!("persistence_location {}/\nuser {user}\n", dir.path().display())
        } else {
            "persistence false\n".to_owned()
        };
        let text = format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\nlog_dest stderr\nset_tcp_nodelay true\n{persistence}{extra}"
        );
        std::fs::write(&conf, text).unwrap();
        let child = spawn_mosquitto(&bin, &conf, port);
        TestBroker { port, embedded: false, mosquitto: Some(child), dir: Some(dir) }
    }

    /// Mosquitto with a plain listener on `port` (for probes) and a TLS listener
    /// on the returned port, using PEM files `ca.crt`, `server.crt`, `server.key`
    /// in `certs` (and, with `require_client_cert`, demanding a client certificate).
    pub fn mosquitto_tls(certs: &std::path::Path, require_client_cert: bool) -> (TestBroker, u16) {
        let bin =
            require_tool("mosquitto", &["/usr/sbin/mosquitto", "/usr/bin/mosquitto"]).expect("mosquitto is needed");
        let dir = tempfile::tempdir().unwrap();
        let (port, tls_port) = (free_port(), free_port());
        let conf = dir.path().join("mosquitto.conf");
        let c = |f: &str| certs.join(f).display().to_string();
        std::fs::write(
            &conf,
            format!(
                "# Run as whoever started it: run as root, Mosquitto would otherwise switch to\n\
                 # its own user, which cannot read the test's private keys.\nuser {}\n\
                 allow_anonymous true\npersistence false\nlog_dest stderr\nlistener {port} 127.0.0.1\n\
                 listener {tls_port} 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate {require_client_cert}\n",
                std::env::var("USER").unwrap_or_else(|_| "root".into()),
                c("ca.crt"),
                c("server.crt"),
                c("server.key")
            ),
        )
        .unwrap();
        let child = spawn_mosquitto(&bin, &conf, port);
        (TestBroker { port, embedded: false, mosquitto: Some(child), dir: Some(dir) }, tls_port)
    }

    /// Kills Mosquitto and starts it again on the same port (it forgets everything).
    pub fn restart_mosquitto(&mut self) {
        self.stop_mosquitto();
        self.start_mosquitto();
    }

    /// Stops Mosquitto with SIGTERM (a persistent one saves its state) and waits.
    pub fn stop_mosquitto(&mut self) {
        let mut child = self.mosquitto.take().expect("only a Mosquitto broker can be stopped");
        std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
        child.wait().unwrap();
    }

    /// Starts Mosquitto again on the same port and configuration.
    pub fn start_mosquitto(&mut self) {
        assert!(self.mosquitto.is_none(), "already running");
        let bin = require_tool("mosquitto", &["/usr/sbin/mosquitto", "/usr/bin/mosquitto"]).unwrap();
        let conf = self.dir.as_ref().unwrap().path().join("mosquitto.conf");
        self.mosquitto = Some(spawn_mosquitto(&bin, &conf, self.port));
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

/// Starts Mosquitto and returns once it accepts connections on `port`, so that
/// a test never talks to whatever else might answer there, and a Mosquitto that
/// could not start is named at once.
fn spawn_mosquitto(bin: &std::path::Path, conf: &std::path::Path, port: u16) -> Child {
    let mut child = Command::new(bin).arg("-c").arg(conf).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("mosquitto exited at start ({status}); configuration:\n{}", std::fs::read_to_string(conf).unwrap());
        }
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return child;
        }
        assert!(std::time::Instant::now() < deadline, "mosquitto did not listen on port {port} within 20 s");
        // Polling for the listener, the event waited for.
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}
