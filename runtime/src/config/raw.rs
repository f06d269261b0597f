//! The configuration file exactly as written. Every struct refuses unknown keys so
//! that a typo is an error, not a silently ignored setting.

use serde::Deserialize;
use toml::Spanned;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub gateway: Spanned<RawGateway>,
    #[serde(default)]
    pub broker: Option<Spanned<RawBroker>>,
    #[serde(default)]
    pub devices: Vec<Spanned<RawDevice>>,
    #[serde(default)]
    pub functions: Vec<Spanned<RawFunction>>,
    #[serde(default)]
    pub upstream: Option<Spanned<RawUpstream>>,
    #[serde(default)]
    pub api: Option<Spanned<RawApi>>,
    #[serde(default)]
    pub homeassistant: Option<Spanned<RawHomeAssistant>>,
}

/// `[homeassistant]`: MQTT discovery, both ways.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHomeAssistant {
    pub prefix: Option<Spanned<String>>,
    pub discovery: Option<bool>,
    #[serde(default)]
    pub announce: Vec<Spanned<RawAnnounce>>,
}

/// `[[homeassistant.announce]]`: a value a function publishes, announced.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAnnounce {
    pub name: Spanned<String>,
    pub topic: Spanned<String>,
    pub field: Option<Spanned<String>>,
    pub component: Option<Spanned<String>>,
    pub unit: Option<String>,
    pub device_class: Option<String>,
}

/// `[api]`: the HTTP front door.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawApi {
    pub listen: Option<Spanned<String>>,
    /// PEM certificate chain and private key: the API speaks HTTPS.
    pub cert_file: Option<Spanned<String>>,
    pub key_file: Option<Spanned<String>>,
    /// `/metrics` without a token (a Prometheus on a trusted network).
    pub open_metrics: Option<bool>,
    #[serde(default)]
    pub tokens: Vec<Spanned<RawToken>>,
}

/// `[[api.tokens]]`: who may call what.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawToken {
    pub name: Spanned<String>,
    pub sha256: Spanned<String>,
    pub scopes: Spanned<Vec<Spanned<String>>>,
    pub rate_per_s: Option<Spanned<i64>>,
    pub burst: Option<Spanned<i64>>,
    /// The function routes it may call (`"GET /hello"`, as a trigger writes them); none: all.
    pub routes: Option<Spanned<Vec<Spanned<String>>>>,
}

/// A file of `[[functions]]` tables alone: a deployed function's (`control/store.rs`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFunctions {
    #[serde(default)]
    pub functions: Vec<Spanned<RawFunction>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    pub url: Spanned<String>,
    pub client_id: Option<Spanned<String>>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub ca_file: Option<Spanned<String>>,
    pub cert_file: Option<Spanned<String>>,
    pub key_file: Option<Spanned<String>>,
    pub keep_alive_s: Option<Spanned<i64>>,
    pub max_packet_bytes: Option<Spanned<i64>>,
    pub reconnect_min_ms: Option<Spanned<i64>>,
    pub reconnect_max_ms: Option<Spanned<i64>>,
    pub topic_prefix: Option<Spanned<String>>,
    pub format: Option<Spanned<String>>,
    pub data_dir: Option<Spanned<String>>,
    pub durability: Option<Spanned<String>>,
    pub fsync_interval_ms: Option<Spanned<i64>>,
    pub commit_window_ms: Option<Spanned<i64>>,
    pub max_bytes: Option<Spanned<i64>>,
    pub ttl_s: Option<Spanned<i64>>,
    pub overflow: Option<Spanned<String>>,
    pub batch_max_records: Option<Spanned<i64>>,
    pub batch_max_bytes: Option<Spanned<i64>>,
    pub linger_ms: Option<Spanned<i64>>,
    pub drain_rate: Option<Spanned<i64>>,
    pub max_inflight: Option<Spanned<i64>>,
    #[serde(default)]
    pub forward: Vec<Spanned<RawForward>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawForward {
    pub topics: Spanned<Vec<Spanned<String>>>,
    pub stream: Spanned<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGateway {
    pub id: Spanned<String>,
    pub workers: Option<Spanned<i64>>,
    pub queue_capacity: Option<Spanned<i64>>,
    pub queue_delay_ms: Option<Spanned<i64>>,
    pub max_module_bytes: Option<Spanned<i64>>,
    pub trusted_keys: Option<Vec<Spanned<String>>>,
    pub scale_memory_bytes: Option<Spanned<i64>>,
    pub spool_max_bytes: Option<Spanned<i64>>,
    pub min_free_bytes: Option<Spanned<i64>>,
    pub shutdown_grace_ms: Option<Spanned<i64>>,
    pub summary_every: Option<Spanned<String>>,
    pub modules_dir: Option<Spanned<String>>,
    pub status_topic: Option<Spanned<String>>,
    pub strict: Option<Spanned<bool>>,
    pub control_socket: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBroker {
    pub mode: Option<Spanned<String>>,
    pub listen: Option<Spanned<String>>,
    pub host: Option<Spanned<String>>,
    pub port: Option<Spanned<i64>>,
    pub client_id: Option<Spanned<String>>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub keep_alive_s: Option<Spanned<i64>>,
    pub max_packet_bytes: Option<Spanned<i64>>,
    pub reconnect_min_ms: Option<Spanned<i64>>,
    pub reconnect_max_ms: Option<Spanned<i64>>,
    pub tls: Option<Spanned<RawTls>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    pub ca_file: Option<Spanned<String>>,
    pub cert_file: Option<Spanned<String>>,
    pub key_file: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDevice {
    pub id: Spanned<String>,
    #[serde(default)]
    pub telemetry: Vec<Spanned<String>>,
    pub command_topic: Option<Spanned<String>>,
    pub format: Option<Spanned<String>>,
    /// Where the device says whether it is online: a topic name.
    pub availability: Option<Spanned<String>>,
    pub online_payload: Option<Spanned<String>>,
    pub offline_payload: Option<Spanned<String>>,
    /// A duration ("5m"): not heard for this long, the device is offline.
    pub offline_after: Option<Spanned<String>>,
    /// The dialect it speaks (`profile::NAMES`).
    pub profile: Option<Spanned<String>>,
    /// Its name in its project (Zigbee2MQTT friendly name, Tasmota Topic, ...); default: the id.
    pub topic: Option<Spanned<String>>,
    /// `generic` only: reading field -> JSON path.
    pub fields: Option<Spanned<toml::Table>>,
    /// `generic` only: action -> payload for `command_topic`.
    pub commands: Option<Spanned<toml::Table>>,
    /// Free text for people reading the file; the gateway ignores it.
    #[allow(dead_code)]
    pub description: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFunction {
    pub name: Spanned<String>,
    pub module: Spanned<String>,
    pub triggers: Spanned<Vec<Spanned<crate::trigger::RawTrigger>>>,
    #[serde(default)]
    pub limits: Option<Spanned<RawLimits>>,
    #[serde(default)]
    pub config: Option<Spanned<toml::Table>>,
    #[serde(default)]
    pub allow: Option<Spanned<RawAllow>>,
}

/// What a function may touch (`[functions.allow]`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAllow {
    /// Topic filters it may publish to.
    pub publish: Option<Spanned<Vec<Spanned<String>>>>,
    /// Upstream streams it may write.
    pub upstream: Option<Spanned<Vec<Spanned<String>>>>,
    /// Configured devices it may command (publish to their `command_topic`).
    pub devices: Option<Spanned<Vec<Spanned<String>>>>,
    /// Configured devices whose last values it may read (`device_reading`).
    pub read_devices: Option<Spanned<Vec<Spanned<String>>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    pub fuel: Option<Spanned<i64>>,
    pub memory_bytes: Option<Spanned<i64>>,
    pub timeout_ms: Option<Spanned<i64>>,
    pub max_publishes: Option<Spanned<i64>>,
    pub max_publish_bytes: Option<Spanned<i64>>,
    pub publish_expiry_ms: Option<Spanned<i64>>,
    pub state_max_bytes: Option<Spanned<i64>>,
    pub invocations_per_s: Option<Spanned<i64>>,
    pub burst: Option<Spanned<i64>>,
    pub log_lines_per_s: Option<Spanned<i64>>,
    pub quarantine_after: Option<Spanned<i64>>,
    pub instances: Option<Spanned<i64>>,
}
