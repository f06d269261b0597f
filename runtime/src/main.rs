//! The `edgefn` command: parses arguments, sets up logging, calls the library.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use edgefn::config::{self, Limits, ModuleSource};

#[derive(Parser)]
#[command(
    name = "edgefn",
    version,
    about = "Serverless WebAssembly functions for IoT gateways: MQTT in, sandboxed wasm, device commands out."
)]
struct Cli {
    /// Log filter, e.g. `info` or `info,edgefn::function=debug` (overrides RUST_LOG).
    #[arg(long, global = true)]
    log: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway: connect to the broker (or start the embedded one), run functions on device messages.
    Run {
        /// Gateway configuration (TOML). See device-configs/ for examples.
        #[arg(long, short, env = "EDGEFN_CONFIG", default_value = config::DEFAULT_CONFIG_PATH)]
        config: PathBuf,
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
    /// Tools for the upstream (cloud) side.
    #[command(subcommand)]
    Upstream(UpstreamCommand),
}

#[derive(Subcommand)]
enum UpstreamCommand {
    /// Subscribe to an upstream broker and print the edgefn records arriving there,
    /// deduplicated, reporting gaps and duplicates per stream. Ends on Ctrl-C or after --count.
    Tail(TailArgs),
}

#[derive(Args)]
struct TailArgs {
    /// The upstream broker: mqtt://host[:port] or mqtts://host[:port].
    #[arg(long)]
    broker: String,
    /// Topic filter to watch.
    #[arg(long, default_value = "edgefn/#")]
    topic: String,
    /// CA certificate (PEM) for mqtts://.
    #[arg(long)]
    ca: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS.
    #[arg(long, requires = "key")]
    cert: Option<PathBuf>,
    /// Client key (PEM) for mutual TLS.
    #[arg(long, requires = "cert")]
    key: Option<PathBuf>,
    #[arg(long)]
    username: Option<String>,
    #[arg(long, requires = "username")]
    password: Option<String>,
    /// Stop once this many distinct records have arrived.
    #[arg(long)]
    count: Option<u64>,
    /// Print only gaps, duplicates and the summary.
    #[arg(long)]
    quiet: bool,
}

#[derive(Args)]
struct InvokeArgs {
    /// The function: a .wasm file, or `builtin:threshold` / `builtin:window-average`.
    #[arg(long)]
    module: String,
    /// Topic the event arrived on.
    #[arg(long)]
    topic: String,
    /// Payload as text.
    #[arg(long, conflicts_with = "payload_file")]
    payload: Option<String>,
    /// Payload read from a file.
    #[arg(long)]
    payload_file: Option<PathBuf>,
    /// Device id the event comes from.
    #[arg(long)]
    device: Option<String>,
    /// A config value the function reads with config_get (repeatable): `--set field=temperature`.
    #[arg(long = "set", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    set: Vec<(String, String)>,
    /// Fuel (instruction budget) for the invocation.
    #[arg(long, default_value_t = Limits::default().fuel)]
    fuel: u64,
    /// Memory limit in bytes.
    #[arg(long, default_value_t = Limits::default().memory_bytes)]
    memory_bytes: usize,
}

fn main() -> ExitCode {
    limit_malloc_arenas();
    let cli = Cli::parse();
    let default_filter = match cli.command {
        Command::Demo { .. } => "warn,rumqttd=off,rumqttc=error",
        _ => "info,rumqttd=warn",
    };
    let filter = cli.log.clone().or_else(|| std::env::var("RUST_LOG").ok()).unwrap_or_else(|| default_filter.into());
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_new(&filter).unwrap_or_else(|_| default_filter.into()))
        .with_writer(std::io::stderr)
        // Colour only for people: not in journald, files or pipes.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match execute(cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("edgefn: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn execute(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Check { file, config } => {
            let config = file.unwrap_or(config);
            let cfg = edgefn::check(&config)?;
            println!(
                "{}: ok ({} devices, {} functions, broker {})",
                config.display(),
                cfg.devices.len(),
                cfg.functions.len(),
                match cfg.broker.mode {
                    config::BrokerMode::Embedded { listen } => format!("embedded on {listen}"),
                    config::BrokerMode::External => format!("{}:{}", cfg.broker.host, cfg.broker.port),
                }
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Run { config } => {
            let cfg = config::load_file(&config)?;
            let stats =
                runtime()?.block_on(async { edgefn::gateway::run(cfg, shutdown_signal(), reload_signal()).await })?;
            tracing::info!("stopped: {}", stats.one_line());
            println!("{}", serde_json::to_string(&stats)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo { duration, speed, listen } => {
            anyhow::ensure!(speed > 0.0 && speed.is_finite(), "--speed must be a positive number");
            let options = edgefn::demo::DemoOptions { duration, speed, listen };
            let report = runtime()?.block_on(async { edgefn::demo::run(options, shutdown_signal()).await })?;
            println!(
                "edgefn demo finished: readings sent {}, device commands seen {}",
                report.readings_sent, report.commands_seen
            );
            println!("  {}", report.stats.one_line());
            let s = &report.stats;
            println!(
                "  failures: out of fuel {}, memory {}, stack {}, timeout {}, ABI {}, trap {}, error code {}",
                s.failed_out_of_fuel,
                s.failed_memory_limit,
                s.failed_stack_overflow,
                s.failed_timeout,
                s.failed_abi_violation,
                s.failed_trap,
                s.failed_error_code
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Upstream(UpstreamCommand::Tail(args)) => {
            let (tls, host, port) =
                config::parse_broker_url(&args.broker).map_err(|e| anyhow::anyhow!("--broker: {e}"))?;
            let tls = match (tls, args.ca) {
                (true, Some(ca_file)) => Some(config::TlsFiles { ca_file, client_auth: args.cert.zip(args.key) }),
                (true, None) => anyhow::bail!("--broker is mqtts://: pass the CA certificate with --ca FILE"),
                (false, _) => None,
            };
            let broker = config::BrokerConfig {
                mode: config::BrokerMode::External,
                host,
                port,
                client_id: String::new(),
                credentials: args.username.map(|u| (u, args.password.unwrap_or_default())),
                tls,
                keep_alive: Duration::from_secs(20),
                max_packet_bytes: 256 << 20,
                reconnect_min: Duration::from_millis(200),
                reconnect_max: Duration::from_secs(5),
            };
            let opts =
                edgefn::upstream::tail::TailOptions { broker, topic: args.topic, count: args.count, quiet: args.quiet };
            let tracker = runtime()?.block_on(async { edgefn::upstream::tail::run(opts, shutdown_signal()).await })?;
            for (name, t) in &tracker.streams {
                eprintln!(
                    "{name}: {} records (#{}..#{}), {} duplicates, {} missing, {} out of order",
                    t.received, t.first, t.last, t.duplicates, t.missing, t.out_of_order
                );
            }
            println!("{}", serde_json::to_string(&tracker.streams)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Invoke(args) => {
            let payload = match (&args.payload, &args.payload_file) {
                (Some(p), _) => p.clone().into_bytes(),
                (None, Some(f)) => {
                    std::fs::read(f).map_err(|e| anyhow::anyhow!("--payload-file {}: {e}", f.display()))?
                }
                (None, None) => Vec::new(),
            };
            let module = match args.module.strip_prefix("builtin:") {
                Some(name) => {
                    anyhow::ensure!(
                        edgefn::builtin::module(name).is_some(),
                        "--module: no built-in function {name:?}; built in are {}",
                        edgefn::builtin::names().join(", ")
                    );
                    ModuleSource::Builtin(name.to_owned())
                }
                None => ModuleSource::File(PathBuf::from(&args.module)),
            };
            let limits = Limits { fuel: args.fuel, memory_bytes: args.memory_bytes, ..Limits::default() };
            let req = edgefn::invoke::InvokeRequest {
                module,
                topic: args.topic,
                payload,
                device: args.device,
                config: args.set.into_iter().collect::<BTreeMap<_, _>>(),
                limits,
            };
            let result = edgefn::invoke::invoke(&req)?;
            print!("{}", edgefn::invoke::report(&req, &result));
            Ok(if result.is_ok() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
    }
}

/// glibc gives every thread that allocates its own malloc arena, each holding on
/// to freed memory; a gateway with a dozen threads pays megabytes of resident
/// memory for that. Two arenas are plenty for its allocation rate.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?)
}

/// A message for every SIGHUP (`systemctl reload edgefn`): reload the configuration.
/// The handler is installed when this is called, before the gateway starts.
fn reload_signal() -> tokio::sync::mpsc::UnboundedReceiver<()> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::hangup()) {
            Ok(mut hup) => {
                tokio::spawn(async move {
                    while hup.recv().await.is_some() {
                        if tx.send(()).is_err() {
                            return;
                        }
                    }
                });
            }
            Err(e) => tracing::warn!(error = %e, "cannot listen for SIGHUP; reload by restarting"),
        }
    }
    rx
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM. The handlers are installed when this
/// is called, not when the future is first polled, so a signal that arrives while
/// the gateway is still starting is not lost (nor fatal). Call it inside the runtime.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let term = signal(SignalKind::terminate());
        let int = signal(SignalKind::interrupt());
        async move {
            match (term, int) {
                (Ok(mut term), Ok(mut int)) => {
                    tokio::select! {
                        _ = term.recv() => {}
                        _ = int.recv() => {}
                    }
                }
                _ => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())).ok_or_else(|| format!("{s:?} is not KEY=VALUE"))
}

/// `90s`, `5m`, `1h`, `250ms`, or a bare number of seconds.
fn parse_duration(s: &str) -> Result<Duration, String> {
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
