//! The validated configuration the gateway runs from.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::topic::TopicFilter;

/// A whole, validated gateway configuration.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// The file it was read from (for messages), or `<inline>`.
    pub source: PathBuf,
    pub gateway: GatewaySettings,
    pub broker: BrokerConfig,
    pub devices: Vec<Device>,
    pub functions: Vec<FunctionSpec>,
    /// Durable delivery to a cloud broker, if configured.
    pub upstream: Option<UpstreamConfig>,
    /// The HTTP API, if configured (`[api]`).
    pub api: Option<ApiConfig>,
    /// Home Assistant MQTT discovery, if configured (`[homeassistant]`).
    pub homeassistant: Option<HomeAssistant>,
}

/// `[homeassistant]`: devices announced on the discovery prefix become the
/// gateway's devices; the values listed in `announce` are announced there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HomeAssistant {
    /// The discovery prefix (`homeassistant`).
    pub prefix: String,
    /// Whether devices announced there are taken on.
    pub discovery: bool,
    pub announce: Vec<Announce>,
}

/// A value functions publish, announced to Home Assistant as an entity of
/// the gateway's own device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announce {
    pub name: String,
    /// A topic name a function publishes on.
    pub topic: String,
    /// Keys into its JSON payload (`None`: the payload is the value).
    pub field: Option<Vec<String>>,
    /// `sensor` or `binary_sensor`.
    pub component: String,
    pub unit: Option<String>,
    pub device_class: Option<String>,
}

/// `[api]`: where the HTTP API listens and who may call it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiConfig {
    pub listen: SocketAddr,
    pub tokens: Vec<ApiToken>,
    /// The certificate chain and private key files (PEM) when it speaks HTTPS.
    pub tls: Option<(std::path::PathBuf, std::path::PathBuf)>,
    /// `/metrics` is answered without a token.
    pub open_metrics: bool,
}

/// A bearer token, kept as the SHA-256 of its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiToken {
    pub name: String,
    pub sha256: [u8; 32],
    pub scopes: Vec<Scope>,
    /// Requests a second it may make, with `burst` at once (`None`: no limit).
    pub rate: Option<(u32, u32)>,
    /// The function routes it may call, as `Route` writes them
    /// (`GET /rooms/{room}`); `None`: every route.
    pub routes: Option<Vec<String>>,
}

/// What a token lets its bearer do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Metrics, the functions and their counters, the gateway's status.
    Read,
    /// Call functions through their HTTP routes.
    Invoke,
    /// Deploy and remove functions.
    Deploy,
}

/// The upstream (cloud) connection, the outbox in front of it, and what to forward.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamConfig {
    /// Connection settings (mode is always external).
    pub broker: BrokerConfig,
    /// Batches go to `<topic_prefix>/<gateway id>/<stream>`.
    pub topic_prefix: String,
    pub format: crate::upstream::Format,
    pub outbox: crate::outbox::OutboxConfig,
    pub batch_max_records: usize,
    pub batch_max_bytes: usize,
    /// A partial batch waits this long for more records.
    pub linger: Duration,
    /// Records per second sent at most, so a backlog never starves local work.
    pub drain_rate: u32,
    /// Publishes awaiting PUBACK at once.
    pub max_inflight: usize,
    /// Device topics forwarded upstream with no function in between.
    pub forward: Vec<Forward>,
}

/// Messages on `topics` go upstream as records of `stream`.
#[derive(Debug, Clone, PartialEq)]
pub struct Forward {
    pub topics: Vec<TopicFilter>,
    pub stream: String,
}

/// Settings of the gateway process itself.
#[derive(Debug, Clone, PartialEq)]
pub struct GatewaySettings {
    /// Names this gateway in logs, client ids and its status topic.
    pub id: String,
    /// Threads that run wasm, taking turns at the functions with events queued.
    pub workers: usize,
    /// Events each function may have queued; when full, intake waits for room.
    pub queue_capacity: usize,
    /// Longest a new event may be expected to wait in its function's queue
    /// (queued events times the function's mean invocation time); past it the
    /// function is behind and its newest events are dropped (and counted).
    pub queue_delay: Duration,
    /// Largest module a function may have; larger ones are refused at load.
    pub max_module_bytes: usize,
    /// Public keys (hex, as `edgefn keygen` writes them) whose signed bundles
    /// `edgefn deploy` accepts; when set, nothing else is deployed.
    pub trusted_keys: Vec<String>,
    /// Memory the extra instances of scaled-out functions (`limits.instances`)
    /// may take in all, counted at their `limits.memory_bytes`.
    pub scale_memory_bytes: usize,
    /// Bound on each function's spool, where the QoS 1 events of a function
    /// that cannot keep up wait on disk (`<modules_dir>/spool/NAME`); 0: none.
    pub spool_max_bytes: u64,
    /// Free space the outbox and the spools always leave on their disk: what
    /// would eat into it is refused and counted (0: no reserve).
    pub min_free_bytes: u64,
    /// How long shutdown waits for queued and running invocations.
    pub shutdown_grace: Duration,
    /// How often `edgefn run` logs its one-line summary (`None`: never).
    pub summary_every: Option<Duration>,
    /// Where relative module paths are looked up.
    pub modules_dir: PathBuf,
    /// Retained `online`/`offline` status of this gateway (offline is the MQTT will).
    pub status_topic: String,
    /// Refuse to start when any function fails to load (default: start with the others).
    pub strict: bool,
    /// Where `edgefn deploy`, `remove` and `functions` reach the running gateway,
    /// as the file sets it; `None`: the default, which depends on who runs the
    /// gateway and is chosen when it starts (`control::socket`).
    pub control_socket: Option<PathBuf>,
}

/// How the gateway reaches the local MQTT broker.
#[derive(Debug, Clone, PartialEq)]
pub struct BrokerConfig {
    pub mode: BrokerMode,
    /// Host the client connects to (`127.0.0.1` for the embedded broker).
    pub host: String,
    pub port: u16,
    pub client_id: String,
    pub credentials: Option<(String, String)>,
    pub tls: Option<TlsFiles>,
    pub keep_alive: Duration,
    /// Largest MQTT packet accepted or sent, in bytes (rumqttc's default of 10 KiB is too small).
    pub max_packet_bytes: usize,
    /// Reconnect backoff starts here and doubles, with jitter, up to `reconnect_max`.
    pub reconnect_min: Duration,
    pub reconnect_max: Duration,
}

/// Whether the gateway connects to a broker or runs its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BrokerMode {
    /// Connect to a broker that is already running (Mosquitto, EMQX, ...).
    External,
    /// Run rumqttd in-process, listening here.
    Embedded { listen: SocketAddr },
}

/// PEM files for TLS to the broker.
#[derive(Debug, Clone, PartialEq)]
pub struct TlsFiles {
    /// CA certificate(s) the server's certificate must chain to.
    pub ca_file: PathBuf,
    /// Client certificate and key, for mutual TLS.
    pub client_auth: Option<(PathBuf, PathBuf)>,
}

/// A device the gateway knows about: its topics and payload format.
#[derive(Debug, Clone)]
pub struct Device {
    pub id: String,
    /// Topics the device publishes readings on; a message on one of them is "from" this device.
    pub telemetry: Vec<TopicFilter>,
    /// Where commands to the device go, if it takes any.
    pub command_topic: Option<String>,
    pub format: PayloadFormat,
    /// Where the device says whether it is online (its retained status and
    /// last will), if it does.
    pub availability: Option<AvailabilityTopic>,
    /// Not heard for this long, it is offline (`offline_after`).
    pub offline_after: Option<std::time::Duration>,
    /// The dialect it speaks, if one: its readings are normalised and it
    /// takes `command(device, action)`.
    pub profile: Option<crate::profile::Profile>,
}

impl Device {
    /// Every topic commands to it go to: its `command_topic` and its profile's.
    pub fn command_topics(&self) -> Vec<String> {
        let mut topics: Vec<String> = self.command_topic.iter().cloned().collect();
        for t in self.profile.iter().flat_map(|p| p.command_topics()) {
            if !topics.contains(&t) {
                topics.push(t);
            }
        }
        topics
    }
}

/// A device's availability topic and how to read it.
#[derive(Debug, Clone)]
pub struct AvailabilityTopic {
    /// A topic name (no wildcards), as a filter for the routing table.
    pub topic: TopicFilter,
    pub payloads: Announcements,
}

/// Which payloads on an availability topic say online and offline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Announcements {
    /// The forms the device projects publish (`sources::devices::announcement`).
    Usual,
    /// Exactly these (`online_payload`, `offline_payload`).
    Exactly { online: String, offline: String },
}

/// What a device's telemetry payloads look like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadFormat {
    /// JSON: payloads that do not parse are counted as malformed and not delivered.
    Json,
    /// Anything: delivered as bytes.
    Raw,
}

/// Whether `name` may name a function: 1 to 64 letters, digits, '-', '_' or
/// '.', not starting with '.'. It names files and directories (its spool, its
/// timers' last runs, its deployed table): `..` would name their parent.
pub fn valid_function_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

/// A function bound to its triggers.
#[derive(Debug, Clone, PartialEq)]
pub struct FunctionSpec {
    pub name: String,
    pub module: ModuleSource,
    /// Topic filters and timers, in the order written.
    pub triggers: Vec<crate::trigger::Trigger>,
    pub limits: Limits,
    /// Values the function reads with `config_get`, all as strings.
    pub config: BTreeMap<String, String>,
    /// What it may touch, checked at every host call.
    pub allow: Allow,
}

/// A function's capabilities (`[functions.allow]`): checked at the host-call
/// boundary, a denied call returns -2 to the function and is logged and counted.
#[derive(Debug, Clone, PartialEq)]
pub struct Allow {
    /// Topic filters it may publish to (default `#`: any topic but `$`-topics).
    pub publish: Vec<TopicFilter>,
    /// Upstream streams it may write; `None`: any.
    pub upstream: Option<Vec<String>>,
    /// Topics it may not publish to whatever `publish` says: the gateway's own
    /// status topic (for every function), and the command topics of configured
    /// devices not in its `devices` list (when it has one).
    pub reserved: Vec<String>,
    /// Devices whose last values it may read (`device_reading`); `None`: any.
    pub read_devices: Option<Vec<String>>,
    /// Devices it may command by name (`command`); `None`: any, discovered
    /// ones too.
    pub devices: Option<Vec<String>>,
}

impl Default for Allow {
    fn default() -> Self {
        // Cannot fail: "#" is a valid filter.
        Allow {
            publish: vec![TopicFilter::parse("#").expect("valid filter")],
            upstream: None,
            reserved: Vec::new(),
            read_devices: None,
            devices: None,
        }
    }
}

impl Allow {
    /// Whether a publish to `topic` is allowed: never to a `$`-topic or a reserved one.
    pub fn may_publish(&self, topic: &str) -> bool {
        !topic.starts_with('$')
            && !self.reserved.iter().any(|r| r == topic)
            && self.publish.iter().any(|f| f.matches(topic))
    }

    pub fn may_read_device(&self, device: &str) -> bool {
        self.read_devices.as_ref().is_none_or(|ids| ids.iter().any(|d| d == device))
    }

    /// Whether it may command `device` by name: a list in `devices` holds
    /// configured ones only, so a device announced for discovery is out of it.
    pub fn may_command_device(&self, device: &str) -> bool {
        self.devices.as_ref().is_none_or(|ids| ids.iter().any(|d| d == device))
    }

    pub fn may_upstream(&self, stream: &str) -> bool {
        self.upstream.as_ref().is_none_or(|streams| streams.iter().any(|s| s == stream))
    }
}

/// Where a function's wasm comes from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ModuleSource {
    /// One of the example functions built into the binary (`builtin:threshold`).
    Builtin(String),
    File(PathBuf),
}

impl std::fmt::Display for ModuleSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ModuleSource::Builtin(name) => write!(f, "builtin:{name}"),
            ModuleSource::File(path) => write!(f, "{}", path.display()),
        }
    }
}

/// Per-invocation bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Instruction budget (wasmi fuel) of one invocation.
    pub fuel: u64,
    /// Most linear memory the instance may grow to.
    pub memory_bytes: usize,
    /// Wall-clock bound, checked at host calls and on return.
    pub timeout: Duration,
    /// Most publishes one invocation may make.
    pub max_publishes: usize,
    /// Most payload bytes, summed, one invocation may publish.
    pub max_publish_bytes: usize,
    /// How long what the function publishes may wait for the broker (an
    /// outage, a slow broker) before it is dropped and counted in
    /// `commands_expired` instead of sent late; `publish_within` sets it per
    /// publish. `None`: it never expires.
    pub publish_expiry: Option<Duration>,
    /// Most bytes the function's state (`state_set`) may hold, keys and values
    /// with 32 bytes an entry; a change past it is refused (-4) and counted.
    pub state_max_bytes: usize,
    /// Quota: invocations per second, with bursts of up to `burst`; events past
    /// it are dropped (and counted). `None`: no quota.
    pub invocations_per_s: Option<u32>,
    pub burst: u32,
    /// Quota: log lines per second the function may write (bursts of twice
    /// that); more are dropped and counted in `logs_dropped`.
    pub log_lines_per_s: u32,
    /// Health: after this many failed invocations in a row the function is
    /// quarantined (its events dropped and counted) until a new version is
    /// installed. 0: never.
    pub quarantine_after: u32,
    /// Scaling: instances the function may run on at once, each with its own
    /// state; events are spread by device (or topic), so one device's events
    /// still run in order. 1: one instance, every event in arrival order.
    pub instances: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            fuel: 10_000_000,
            memory_bytes: 4 << 20,
            timeout: Duration::from_millis(1_000),
            max_publishes: 16,
            max_publish_bytes: 64 << 10,
            publish_expiry: Some(Duration::from_secs(30)),
            state_max_bytes: 256 << 10,
            invocations_per_s: None,
            burst: 0,
            log_lines_per_s: 50,
            quarantine_after: 50,
            instances: 1,
        }
    }
}
