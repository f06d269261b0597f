//! edgefn: serverless WebAssembly functions for IoT gateways.
//!
//! A gateway subscribes to the topics its devices publish on, runs sandboxed wasm
//! functions (interpreted by wasmi, bounded in fuel, memory, stack and time) on
//! each message, and publishes what they decide: commands to actuators, derived
//! telemetry. See ARCHITECTURE.md for the code map and the invariants.
//!
//! ```no_run
//! # async fn example() -> anyhow::Result<()> {
//! let config = edgefn::config::load_file("device-configs/greenhouse.toml".as_ref())?;
//! // Reloads come on this channel (`edgefn run` sends one per SIGHUP).
//! let (_reload, reloads) = tokio::sync::mpsc::unbounded_channel();
//! // The control socket: None is gateway.control_socket, else the default.
//! let stopped = async { tokio::signal::ctrl_c().await.ok(); };
//! let stats = edgefn::gateway::run(config, None, stopped, reloads).await?;
//! println!("{}", stats.one_line());
//! # Ok(()) }
//! ```

pub mod api;
pub mod builtin;
pub mod bundle;
pub mod config;
pub mod control;
pub mod counters;
pub mod demo;
pub mod durable;
pub mod event;
pub mod gateway;
pub mod host;
pub mod invoke;
pub mod journal;
pub mod mqtt;
pub mod outbox;
pub mod profile;
pub mod recording;
pub mod scaffold;
pub mod sources;
pub mod state;
pub mod sync;
pub mod systemd;
pub mod topic;
pub mod trigger;
pub mod upstream;

/// Loads a configuration and every module it names, without running anything:
/// what `edgefn check` does. Every function that does not load is named, one a line.
pub fn check(path: &std::path::Path) -> anyhow::Result<config::GatewayConfig> {
    let config = config::load_file(path)?;
    let loader = std::sync::Arc::new(
        host::Loader::new()
            .with_upstream(config.upstream.is_some())
            .with_max_module_bytes(config.gateway.max_module_bytes),
    );
    let loaded = gateway::load_each(&loader, &config.functions);
    if !loaded.failed.is_empty() {
        let problems: Vec<String> =
            loaded.failed.iter().map(|(name, e)| format!("{}: function {name}: {e}", path.display())).collect();
        anyhow::bail!(
            "{} of {} functions do not load:\n{}",
            problems.len(),
            config.functions.len(),
            problems.join("\n")
        );
    }
    Ok(config)
}
