//! Deploying to a running gateway: `edgefn deploy`, `remove` and `functions`
//! talk to it over a Unix socket (`gateway.control_socket`, mode 0660: root and
//! the service's group), and every request ends in the registry operation a
//! reload uses (`Gateway::apply`). What was deployed is kept in
//! `<modules_dir>/deployed/` (`store.rs`) and comes back after a restart.
//!
//! The protocol: one JSON line with the request, then, for a deploy, exactly
//! `module_len` bytes of wasm; one JSON line back with the answer.

pub mod socket;
mod store;

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, oneshot};

pub use store::{function_of, load_config, table, valid_name, version_of, Deployed, Store};

/// Largest module a deploy accepts, before any parsing.
pub const MAX_MODULE_BYTES: usize = 16 << 20;

/// What a client asks of the gateway.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Install or replace function `name` with the module that follows the request line.
    Deploy {
        name: String,
        /// Topic filters (strings) and timers (objects), as the configuration writes them.
        triggers: Vec<crate::trigger::RawTrigger>,
        #[serde(default)]
        config: BTreeMap<String, String>,
        /// `[functions.limits]` keys (fuel, memory_bytes, timeout_ms, ...), as the file takes them.
        #[serde(default)]
        limits: BTreeMap<String, i64>,
        module_len: usize,
        /// The bytes that follow are a bundle (`edgefn bundle`): name, triggers,
        /// limits and config come from its manifest, and the fields above are empty.
        #[serde(default)]
        bundle: bool,
        /// The file the user deployed, as they named it, for the answer's
        /// messages (empty from older clients: the gateway's copy is named then).
        #[serde(default, skip_serializing_if = "String::is_empty")]
        file: String,
    },
    Remove {
        name: String,
    },
    List,
    /// The functions and the gateway's counters (the HTTP API's metrics).
    Status,
    /// Every configured device's availability and last seen.
    Devices,
    /// Record the function's next invocations (at most `max`, for at most
    /// `seconds`) into the file at `path`, made anew by the gateway.
    Record {
        name: String,
        path: String,
        max: u64,
        seconds: u64,
    },
    /// Where the function's latest recording stands.
    Recording {
        name: String,
    },
}

/// The gateway's answer.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    pub message: String,
    #[serde(default)]
    pub functions: Vec<FunctionRow>,
    /// For [`Request::Devices`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<crate::sources::devices::DeviceRow>,
    /// The gateway's counters, for [`Request::Status`]: handed over in the
    /// process (to the HTTP API), not over the socket.
    #[serde(skip)]
    pub stats: Option<Box<crate::gateway::stats::StatsSnapshot>>,
    /// For [`Request::Status`]: the counters in one line, as the log's minute line.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub summary: String,
    /// For [`Request::Record`] and [`Request::Recording`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recording: Option<crate::gateway::recorder::RecordingStatus>,
}

/// One line of `edgefn functions`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FunctionRow {
    pub name: String,
    /// The version its bundle gave, else the module's digest.
    pub version: String,
    pub module: String,
    pub triggers: Vec<String>,
    /// Its queue and counters.
    #[serde(flatten)]
    pub status: crate::gateway::status::FunctionStatus,
    /// What happened to it by itself, e.g. "rolled back from version X: ...".
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub note: String,
    /// `config` (from the configuration file) or `deployed`.
    pub source: String,
}

/// A request as the gateway's run loop receives it.
pub struct Command {
    pub request: Request,
    pub module: Vec<u8>,
    pub reply: oneshot::Sender<Response>,
}

/// Listens on `path` and hands every request to `commands`. Returns `None`
/// (with a warning) when the socket cannot be made: the gateway runs without
/// live deploys then.
pub fn serve(path: &Path, commands: mpsc::Sender<Command>) -> Option<tokio::task::JoinHandle<()>> {
    let listener = match socket::prepare_dir(path).and_then(|()| bind(path)) {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(socket = %path.display(), error = %e, "no control socket: edgefn deploy, remove and functions are unavailable (edgefn run --socket PATH, or gateway.control_socket)");
            return None;
        }
    };
    tracing::info!(socket = %path.display(), "control socket ready for edgefn deploy, remove and functions");
    Some(tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let commands = commands.clone();
            tokio::spawn(async move {
                if let Err(e) = answer(stream, commands).await {
                    tracing::debug!(error = %e, "control connection ended early");
                }
            });
        }
    }))
}

fn bind(path: &Path) -> std::io::Result<tokio::net::UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    // A socket file left by an earlier run that nobody answers on.
    if path.exists() && std::os::unix::net::UnixStream::connect(path).is_err() {
        std::fs::remove_file(path)?;
    }
    let listener = tokio::net::UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    Ok(listener)
}

async fn answer(stream: tokio::net::UnixStream, commands: mpsc::Sender<Command>) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    let mut line = String::new();
    read.read_line(&mut line).await?;
    let response = match serde_json::from_str::<Request>(&line) {
        Err(e) => {
            Response { ok: false, message: format!("not a request edgefn understands: {e}"), ..Default::default() }
        }
        Ok(Request::Deploy { module_len, .. }) if module_len > MAX_MODULE_BYTES => Response {
            ok: false,
            message: format!("module of {module_len} bytes refused: at most {MAX_MODULE_BYTES}"),
            ..Default::default()
        },
        Ok(request) => {
            let mut module = Vec::new();
            if let Request::Deploy { module_len, .. } = &request {
                module.resize(*module_len, 0);
                read.read_exact(&mut module).await?;
            }
            let (reply, answer) = oneshot::channel();
            let gone = || Response { ok: false, message: "the gateway is shutting down".into(), ..Default::default() };
            match commands.send(Command { request, module, reply }).await {
                Ok(()) => answer.await.unwrap_or_else(|_| gone()),
                Err(_) => gone(),
            }
        }
    };
    let mut out = serde_json::to_vec(&response).map_err(std::io::Error::other)?;
    out.push(b'\n');
    write.write_all(&out).await
}

/// Sends one request (and the module, for a deploy) and returns the answer: the
/// client side, for the CLI.
pub fn request(socket: &Path, request: &Request, module: &[u8]) -> anyhow::Result<Response> {
    use std::io::{BufRead, Write};
    let mut stream = std::os::unix::net::UnixStream::connect(socket).map_err(|e| {
        anyhow::anyhow!(
            "cannot reach the gateway at {}: {e}. Is `edgefn run` up, and are you root or in the edgefn group? \
             Pass the socket it logged at start with --socket PATH (or EDGEFN_SOCKET); by itself this \
             command tries {} and then {}",
            socket.display(),
            socket::user().display(),
            socket::SYSTEM
        )
    })?;
    let mut line = serde_json::to_vec(request)?;
    line.push(b'\n');
    stream.write_all(&line)?;
    stream.write_all(module)?;
    let mut reply = String::new();
    std::io::BufReader::new(stream).read_line(&mut reply)?;
    Ok(serde_json::from_str(&reply)?)
}
