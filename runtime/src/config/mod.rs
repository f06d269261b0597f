//! Gateway configuration: the TOML files in `device-configs/`.
//!
//! `raw` mirrors the file with serde (`deny_unknown_fields`), `load` validates it
//! into the `model` types the rest of the gateway uses, where every default has
//! been applied and every `Option` that validation could settle is gone: the
//! whole and `[gateway]` in `load`, each other section in its own file
//! (`broker`, `upstream`, `functions` with `[[devices]]`, `api`, `homeassistant`).

mod api;
mod broker;
pub(crate) mod disk;
mod error;
mod functions;
mod homeassistant;
mod load;
mod model;
mod raw;
mod syntax;
mod upstream;

pub use api::{parse_sha256, DEFAULT_LISTEN as DEFAULT_API_LISTEN};
pub use broker::parse_broker_url;
pub use error::ConfigError;
pub use load::{load_file, parse_function, parse_str};
pub use model::{
    valid_function_name, Allow, Announce, Announcements, ApiConfig, ApiToken, AvailabilityTopic, BrokerConfig,
    BrokerMode, Device, Forward, FunctionSpec, GatewayConfig, GatewaySettings, HomeAssistant, Limits, ModuleSource,
    PayloadFormat, Scope, TlsFiles, UpstreamConfig,
};

/// Where `edgefn run` and `edgefn check` look when no `--config` is given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/edgefn/gateway.toml";

#[cfg(test)]
mod tests;
