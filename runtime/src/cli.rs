//! The command line, declared once: `main.rs` parses it, and
//! `examples/generate-docs.rs` turns it into the man page and shell completions.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use edgefn::config;

#[derive(Parser)]
#[command(
    name = "edgefn",
    version,
    about = "Serverless WebAssembly functions for IoT gateways: MQTT in, sandboxed wasm, device commands out."
)]
pub struct Cli {
    /// Log filter, e.g. `info` or `info,edgefn::function=debug` (overrides RUST_LOG).
    #[arg(long, global = true)]
    pub log: Option<String>,
    /// How log lines are written: `text` for people, `json` for log shippers (one
    /// object a line: time, level, target, message and the event's fields).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "EDGEFN_LOG_FORMAT")]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the gateway: connect to the broker (or start the embedded one), run functions on device messages and timers.
    Run {
        /// Gateway configuration (TOML). See device-configs/ for examples.
        #[arg(long, short, env = "EDGEFN_CONFIG", default_value = config::DEFAULT_CONFIG_PATH)]
        config: PathBuf,
        /// Where to listen for `edgefn deploy`, `remove` and `functions` [default:
        /// gateway.control_socket, else /run/edgefn/control.sock where this user may
        /// write /run/edgefn (the packaged service), else $XDG_RUNTIME_DIR/edgefn/control.sock
        /// or /tmp/edgefn-UID/control.sock]. The client commands find the default by themselves.
        #[arg(long, env = "EDGEFN_SOCKET")]
        socket: Option<PathBuf>,
    },
    /// Validate a configuration and every module it names, without running anything. Exits 1 on error.
    Check {
        /// Gateway configuration (TOML); the same as `--config FILE`, and wins over it.
        file: Option<PathBuf>,
        /// Gateway configuration (TOML), as `edgefn run` takes it.
        #[arg(long, short, env = "EDGEFN_CONFIG", default_value = config::DEFAULT_CONFIG_PATH)]
        config: PathBuf,
    },
    /// Run the demo: embedded broker, example functions, the UCI occupancy dataset replayed as a sensor.
    Demo {
        /// Stop after this long: `90s`, `5m`, `500ms` (or at the end of the dataset, or on Ctrl-C).
        #[arg(long, default_value = "60s", value_parser = parse_duration)]
        duration: Duration,
        /// Replay speed; the dataset has one reading a minute, so 1200 sends 20 readings a second.
        #[arg(long, default_value_t = 1200.0)]
        speed: f64,
        /// Address for the embedded broker (default: a free loopback port).
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
    },
    /// Run one function once on one event, with no broker, and show what it did.
    Invoke(InvokeArgs),
    /// Record what reaches a function on the running gateway, what the gateway answered it
    /// (clock, random bytes, config, state reads, device values) and what it did, into a
    /// file that `edgefn replay` runs again. The recording ends by itself at --events or
    /// --seconds, whichever comes first, even if this command is interrupted.
    Record {
        /// The function's name (`edgefn functions` lists them).
        name: String,
        /// The file to write, made anew. The gateway writes it, so it must be somewhere
        /// the gateway's user may write (the packaged service: /var/lib/edgefn or /tmp).
        #[arg(long, short = 'o', value_name = "FILE")]
        out: PathBuf,
        /// Stop after this many invocations.
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..))]
        events: u64,
        /// Stop after this many seconds, however many invocations were recorded.
        #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..))]
        seconds: u64,
        #[command(flatten)]
        socket: SocketArg,
    },
    /// Run a recording's events again, in order, through a module, giving it the answers the
    /// gateway gave, and compare what it does with what was recorded, side by side. Exits 1
    /// when anything differs: a new version checked in CI against yesterday's traffic.
    Replay {
        /// The recording (`edgefn record`).
        file: PathBuf,
        /// What to replay through: a .wasm file, a bundle, or builtin:NAME
        /// [default: the module the recording names].
        #[arg(long)]
        module: Option<String>,
    },
    /// Start a function project of its own: builds into a module with one command.
    New {
        /// The function's name (and the project's directory).
        name: String,
        /// The language: rust (the SDK, wasm32-unknown-unknown), c (wasi-libc and edgefn.h) or
        /// assemblyscript (npm's compiler and edgefn.ts).
        #[arg(long, value_enum, default_value = "rust")]
        lang: edgefn::scaffold::Lang,
        /// Where to create the project.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// The edgefn Rust SDK [default: $EDGEFN_SDK, else /usr/share/edgefn/sdk beside an
        /// installed /usr/bin/edgefn, else functions/sdk of the checkout this binary was built from].
        #[arg(long)]
        sdk: Option<PathBuf>,
    },
    /// Install a function on the running gateway, or replace it, without a restart.
    Deploy(DeployArgs),
    /// Package a module with its manifest (name, version, triggers, limits, config, capabilities, SHA-256), signed or not.
    Bundle(BundleArgs),
    /// Make an ed25519 key pair for signing bundles: PATH (secret, mode 0600) and PATH.pub (for gateway.trusted_keys).
    Keygen {
        /// Where to write the secret key; the public key goes to PATH.pub.
        path: PathBuf,
    },
    /// Make a bearer token for the HTTP API: prints the token (for the client) and the
    /// `[[api.tokens]]` table with its SHA-256 (for the gateway, which keeps no token itself).
    Token {
        /// A name for the token, shown in the API's refusals and logs.
        name: String,
        /// What it may do (repeat for more): read (metrics, functions), invoke, deploy.
        #[arg(long = "scope", default_value = "read", value_parser = ["read", "invoke", "deploy"])]
        scopes: Vec<String>,
    },
    /// Take a deployed function off the running gateway.
    Remove {
        /// The function's name.
        name: String,
        #[command(flatten)]
        socket: SocketArg,
    },
    /// List the running gateway's functions: name, version, triggers, where from.
    Functions {
        #[command(flatten)]
        socket: SocketArg,
    },
    /// The running gateway's devices: online or offline, since when, when last seen.
    Devices {
        /// Print the rows as JSON, with each device's last values (what /api/devices answers).
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        socket: SocketArg,
    },
    /// The running gateway at a glance: its counters in one line, then its functions.
    Status {
        /// Print it again every SECS seconds until interrupted: a live view
        /// (on a terminal, in place of the last).
        #[arg(long, value_name = "SECS")]
        watch: Option<u64>,
        #[command(flatten)]
        socket: SocketArg,
    },
    /// Tools for the upstream (cloud) side.
    #[command(subcommand)]
    Upstream(UpstreamCommand),
}

/// Where the running gateway listens (`edgefn run --socket`, `gateway.control_socket`).
#[derive(Args)]
pub struct SocketArg {
    /// The running gateway's control socket [default: the first that answers of
    /// $XDG_RUNTIME_DIR/edgefn/control.sock (or /tmp/edgefn-UID/control.sock), where
    /// `edgefn run` listens for a user, and /run/edgefn/control.sock, the packaged service's].
    #[arg(long = "socket", env = "EDGEFN_SOCKET")]
    path: Option<PathBuf>,
}

impl SocketArg {
    /// The socket to talk to: `--socket`, else the default that answers.
    pub fn path(&self) -> PathBuf {
        self.path.clone().unwrap_or_else(edgefn::control::socket::to_reach)
    }
}

#[derive(Args)]
pub struct DeployArgs {
    /// The function's module (.wasm), or a bundle (`edgefn bundle`), which carries its name, triggers and the rest.
    pub module: PathBuf,
    /// The function's name: deploying a name again replaces that function (not with a bundle).
    #[arg(long)]
    pub name: Option<String>,
    /// What runs it (repeat for more; not with a bundle): an MQTT topic filter (`+` and `#` work),
    /// or a timer as a TOML inline table: '{ every = "10s" }', '{ cron = "0 */5 * * * *" }', '{ start = true }'.
    #[arg(long = "trigger", value_name = "FILTER|TIMER", value_parser = parse_trigger)]
    pub triggers: Vec<edgefn::trigger::RawTrigger>,
    /// A value the function reads with config_get (repeatable): `--set limit=28`.
    #[arg(long = "set", value_parser = parse_key_value)]
    pub config: Vec<(String, String)>,
    /// Fuel per invocation (default as in [functions.limits]).
    #[arg(long)]
    pub fuel: Option<i64>,
    /// Linear memory cap in bytes.
    #[arg(long)]
    pub memory_bytes: Option<i64>,
    /// Wall-clock limit per invocation, in milliseconds.
    #[arg(long)]
    pub timeout_ms: Option<i64>,
    #[command(flatten)]
    pub socket: SocketArg,
}

#[derive(Args)]
pub struct BundleArgs {
    /// The function's module (.wasm).
    pub module: PathBuf,
    /// Where to write the bundle [default: NAME-VERSION.edgefn next to the module].
    #[arg(long, short)]
    pub output: Option<PathBuf>,
    /// The function's name on the gateway.
    #[arg(long)]
    pub name: String,
    /// Its version, shown by `edgefn functions` and in logs.
    #[arg(long)]
    pub version: String,
    /// What runs it (repeat for more): an MQTT topic filter, or a timer as a TOML
    /// inline table: '{ every = "10s" }', '{ cron = "0 */5 * * * *" }', '{ start = true }'.
    #[arg(long = "trigger", value_name = "FILTER|TIMER", required = true, value_parser = parse_trigger)]
    pub triggers: Vec<edgefn::trigger::RawTrigger>,
    /// A value the function reads with config_get (repeatable): `--set limit=28`.
    #[arg(long = "set", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub config: Vec<(String, String)>,
    /// A [functions.limits] value (repeatable): `--limit fuel=5000000`.
    #[arg(long = "limit", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub limits: Vec<(String, String)>,
    /// A topic filter it may publish to (repeatable; default: anywhere but `$`-topics and the gateway's status).
    #[arg(long = "allow-publish", value_name = "FILTER")]
    pub allow_publish: Vec<String>,
    /// An upstream stream it may write (repeatable; default: any).
    #[arg(long = "allow-upstream", value_name = "STREAM")]
    pub allow_upstream: Vec<String>,
    /// Sign it with this secret key (from `edgefn keygen`).
    #[arg(long, value_name = "KEY")]
    pub sign: Option<PathBuf>,
}

#[derive(Subcommand)]
pub enum UpstreamCommand {
    /// Subscribe to an upstream broker and print the edgefn records arriving there,
    /// deduplicated, reporting gaps and duplicates per stream. Ends on Ctrl-C or after --count.
    Tail(TailArgs),
}

#[derive(Args)]
pub struct TailArgs {
    /// The upstream broker: mqtt://host[:port] or mqtts://host[:port].
    #[arg(long)]
    pub broker: String,
    /// Topic filter to watch.
    #[arg(long, default_value = "edgefn/#")]
    pub topic: String,
    /// CA certificate (PEM) for mqtts://.
    #[arg(long)]
    pub ca: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS.
    #[arg(long, requires = "key")]
    pub cert: Option<PathBuf>,
    /// Client key (PEM) for mutual TLS.
    #[arg(long, requires = "cert")]
    pub key: Option<PathBuf>,
    #[arg(long)]
    pub username: Option<String>,
    #[arg(long, requires = "username")]
    pub password: Option<String>,
    /// Stop once this many distinct records have arrived.
    #[arg(long)]
    pub count: Option<u64>,
    /// Print only gaps, duplicates and the summary.
    #[arg(long)]
    pub quiet: bool,
}

#[derive(Args)]
pub struct InvokeArgs {
    /// The function: a .wasm file, `builtin:threshold` / `builtin:window-average`, or a
    /// bundle (`edgefn bundle`), run as a gateway deploys it: with its manifest's limits,
    /// config and allow list, and only on a topic its triggers match.
    #[arg(long)]
    pub module: String,
    /// Topic the event arrived on.
    #[arg(long, required_unless_present_any = ["timer", "http"])]
    pub topic: Option<String>,
    /// Run it as a timer's run instead of a message (no topic, payload or device):
    /// a bundle's first timer trigger, or `{ start = true }` for a module.
    #[arg(long, conflicts_with_all = ["topic", "payload", "payload_file", "device"])]
    pub timer: bool,
    /// Run it as an HTTP request on one of its routes: 'POST /rooms/kitchen/note?x=1'
    /// (`--payload` is the body); its answer is shown.
    #[arg(long, conflicts_with_all = ["topic", "timer", "device"])]
    pub http: Option<String>,
    /// The route a module (not a bundle) has, for --http: 'POST /rooms/{room}/note'
    /// [default: the request's own method and path].
    #[arg(long, requires = "http")]
    pub route: Option<String>,
    /// Payload as text.
    #[arg(long, conflicts_with = "payload_file")]
    pub payload: Option<String>,
    /// Payload read from a file.
    #[arg(long)]
    pub payload_file: Option<PathBuf>,
    /// Device id the event comes from.
    #[arg(long)]
    pub device: Option<String>,
    /// The device's profile, as `profile` and `topic` in [[devices]]: `tasmota:gh-climate`,
    /// `zigbee2mqtt:hall-motion`, `shelly:shellyplus1-fan`, `shelly-gen1:<id>`,
    /// `esphome:<node>`. The function gets the normalised reading a gateway would give
    /// it (`event_reading`), shown as `reading`. The name defaults to --device.
    #[arg(long, value_name = "PROFILE[:NAME]", requires = "topic")]
    pub profile: Option<String>,
    /// A config value the function reads with config_get (repeatable): `--set field=temperature`.
    /// With a bundle, over its manifest's.
    #[arg(long = "set", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub set: Vec<(String, String)>,
    /// Fuel (instruction budget) for the invocation [default: the bundle's, else 10000000].
    #[arg(long)]
    pub fuel: Option<u64>,
    /// Memory limit in bytes [default: the bundle's, else 4194304].
    #[arg(long)]
    pub memory_bytes: Option<usize>,
    /// Run the event this many times on the same instance and report the last
    /// run: what an event costs on a running gateway, where the first one also
    /// pays for translating the code it runs.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub repeat: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

pub fn parse_key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())).ok_or_else(|| format!("{s:?} is not KEY=VALUE"))
}

/// `--trigger`: a topic filter, or a timer as a TOML inline table. Its
/// meaning is checked where it is used (the gateway, `edgefn bundle`), whose
/// messages name it (`triggers[0]`).
pub fn parse_trigger(s: &str) -> Result<edgefn::trigger::RawTrigger, String> {
    edgefn::trigger::RawTrigger::from_arg(s)
}

/// `90s`, `5m`, `1h`, `250ms`, or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (number, unit) = s.find(|c: char| !c.is_ascii_digit() && c != '.').map(|i| s.split_at(i)).unwrap_or((s, "s"));
    let n: f64 = number.parse().map_err(|_| format!("{s:?} is not a duration like 90s, 5m or 500ms"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (use ms, s, m or h)")),
    };
    Ok(Duration::from_secs_f64(secs))
}

/// `--profile tasmota:gh-climate`: a profile and the device's name in its project.
pub fn parse_profile(text: &str, device: Option<&str>) -> Result<edgefn::profile::Profile, String> {
    let (kind, name) = match text.split_once(':') {
        Some((kind, name)) => (kind, name.to_owned()),
        None => (text, device.unwrap_or_default().to_owned()),
    };
    if kind == "generic" {
        return Err(
            "--profile generic needs its fields and commands: run it on a gateway with its [[devices]] table".into()
        );
    }
    let kind = edgefn::profile::Kind::parse(kind, Default::default()).ok_or_else(|| {
        let names: Vec<&str> = edgefn::profile::NAMES.iter().copied().filter(|n| *n != "generic").collect();
        format!("--profile {kind:?} is not a profile: {}", names.join(", "))
    })?;
    if name.is_empty() || name.contains(['/', '+', '#']) {
        return Err(format!(
            "--profile {text:?}: give the device's name in its project, as {}:NAME",
            text.split(':').next().unwrap_or(text)
        ));
    }
    Ok(edgefn::profile::Profile { kind, name })
}
