//! The `edgefn` command: parses arguments, sets up logging, calls the library.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use edgefn::config::{self, ModuleSource};

mod cli;
mod math;
use cli::{Cli, Command, UpstreamCommand};

fn main() -> ExitCode {
    limit_malloc_arenas();
    let cli = Cli::parse();
    let default_filter = match cli.command {
        Command::Demo { .. } => "warn,rumqttd=off,rumqttc=error",
        _ => "info,rumqttd=warn",
    };
    let filter = cli.log.clone().or_else(|| std::env::var("RUST_LOG").ok()).unwrap_or_else(|| default_filter.into());
    let lines = match cli.log_format {
        cli::LogFormat::Text => edgefn::journal::Lines::Text(tracing_subscriber::fmt::format()),
        cli::LogFormat::Json => edgefn::journal::Lines::Json(edgefn::journal::JsonLines),
    };
    let json = cli.log_format == cli::LogFormat::Json;
    let format = edgefn::journal::WithPriority { enabled: edgefn::journal::stderr_is_journal(), inner: lines };
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;
    let lines = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        // Colour only for people: not in journald, files or pipes.
        .with_ansi(!json && std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .event_format(format)
        .fmt_fields(edgefn::journal::SpanFields { json })
        .with_filter(tracing_subscriber::filter::filter_fn(|meta| !edgefn::mqtt::is_connection_chatter(meta)));
    tracing_subscriber::registry()
        .with(tracing_subscriber::EnvFilter::try_new(&filter).unwrap_or_else(|_| default_filter.into()))
        .with(lines)
        // The last warnings and errors, for the status page (not the embedded
        // broker's reports of ordinary connects, as above).
        .with(
            edgefn::journal::Recent
                .with_filter(tracing_subscriber::filter::filter_fn(|meta| !edgefn::mqtt::is_connection_chatter(meta))),
        )
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
        Command::Run { config, socket } => {
            let cfg = edgefn::control::load_config(&config)?;
            let stats = runtime()?
                .block_on(async { edgefn::gateway::run(cfg, socket, shutdown_signal(), reload_signal()).await })?;
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
        Command::New { name, lang, dir, sdk } => {
            let sdk = sdk.or_else(edgefn::scaffold::default_sdk);
            let root = edgefn::scaffold::new_project(&dir, &name, lang, sdk.as_deref())?;
            println!("created {}: cd {0} && ./test.sh", root.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Deploy(args) => {
            let module = std::fs::read(&args.module)
                .map_err(|e| anyhow::anyhow!("cannot read the module {}: {e}", args.module.display()))?;
            let limits: BTreeMap<String, i64> =
                [("fuel", args.fuel), ("memory_bytes", args.memory_bytes), ("timeout_ms", args.timeout_ms)]
                    .into_iter()
                    .filter_map(|(k, v)| Some((k.to_owned(), v?)))
                    .collect();
            let bundle = edgefn::bundle::is_bundle(&module);
            let request = if bundle {
                anyhow::ensure!(
                    args.name.is_none() && args.triggers.is_empty() && args.config.is_empty() && limits.is_empty(),
                    "{} is a bundle: its name, triggers, config and limits come from its manifest (make a new \
                     bundle to change them)",
                    args.module.display()
                );
                edgefn::control::Request::Deploy {
                    name: String::new(),
                    triggers: Vec::new(),
                    config: BTreeMap::new(),
                    limits,
                    module_len: module.len(),
                    bundle,
                    file: args.module.display().to_string(),
                }
            } else {
                let name = args.name.ok_or_else(|| anyhow::anyhow!("--name NAME is needed to deploy a bare module"))?;
                anyhow::ensure!(!args.triggers.is_empty(), "--trigger FILTER is needed to deploy a bare module");
                edgefn::control::Request::Deploy {
                    name,
                    triggers: args.triggers,
                    config: args.config.into_iter().collect(),
                    limits,
                    module_len: module.len(),
                    bundle,
                    file: args.module.display().to_string(),
                }
            };
            answered(edgefn::control::request(&args.socket.path(), &request, &module)?)
        }
        Command::Bundle(args) => {
            let module = std::fs::read(&args.module)
                .map_err(|e| anyhow::anyhow!("cannot read the module {}: {e}", args.module.display()))?;
            let limits = args
                .limits
                .into_iter()
                .map(|(k, v)| {
                    let n = v
                        .replace('_', "")
                        .parse::<i64>()
                        .map_err(|_| anyhow::anyhow!("--limit {k}={v}: not a number"))?;
                    Ok((k, n))
                })
                .collect::<anyhow::Result<_>>()?;
            let key = match &args.sign {
                Some(path) => Some(
                    std::fs::read_to_string(path)
                        .map_err(|e| anyhow::anyhow!("cannot read the key {}: {e}", path.display()))?,
                ),
                None => None,
            };
            let manifest = edgefn::bundle::Manifest {
                name: args.name.clone(),
                version: args.version.clone(),
                module_sha256: String::new(),
                triggers: args.triggers,
                limits,
                config: args.config.into_iter().collect(),
                allow_publish: (!args.allow_publish.is_empty()).then_some(args.allow_publish),
                allow_upstream: (!args.allow_upstream.is_empty()).then_some(args.allow_upstream),
            };
            // Checked as a deploy would check it: a bundle no gateway takes is not made.
            edgefn::control::function_of(&edgefn::control::Deployed::from(manifest.clone()))
                .map_err(|e| anyhow::anyhow!("{}: {}", e.key.trim_start_matches("functions[0]."), e.message))?;
            let bytes = edgefn::bundle::Bundle::build(manifest, module, key.as_deref()).map_err(anyhow::Error::msg)?;
            let output = args
                .output
                .unwrap_or_else(|| args.module.with_file_name(format!("{}-{}.edgefn", args.name, args.version)));
            std::fs::write(&output, bytes).map_err(|e| anyhow::anyhow!("cannot write {}: {e}", output.display()))?;
            println!("{} ({})", output.display(), if key.is_some() { "signed" } else { "unsigned" });
            Ok(ExitCode::SUCCESS)
        }
        Command::Token { name, scopes } => {
            let mut secret = [0u8; 32];
            ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut secret)
                .map_err(|_| anyhow::anyhow!("the system's random source failed"))?;
            let token: String = secret.iter().map(|b| format!("{b:02x}")).collect();
            let scopes = scopes.iter().map(|s| format!("{s:?}")).collect::<Vec<_>>().join(", ");
            println!("# The token, for the client (the gateway keeps only its SHA-256):\n{token}\n");
            println!("# Under [api] in the gateway's configuration:");
            println!(
                "[[api.tokens]]\nname = {name:?}\nsha256 = \"{}\"\nscopes = [{scopes}]",
                edgefn::api::auth::sha256_hex(&token)
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Keygen { path } => {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let (secret, public) = edgefn::bundle::keygen().map_err(anyhow::Error::msg)?;
            let mut file =
                std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path).map_err(|e| {
                    anyhow::anyhow!("cannot create {} (an existing key is never overwritten): {e}", path.display())
                })?;
            file.write_all(format!("{secret}\n").as_bytes())?;
            let public_path = PathBuf::from(format!("{}.pub", path.display()));
            std::fs::write(&public_path, format!("{public}\n"))?;
            println!("secret key: {} (keep it off the gateways)", path.display());
            println!("public key: {} (put it in gateway.trusted_keys):\n{public}", public_path.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Remove { name, socket } => {
            answered(edgefn::control::request(&socket.path(), &edgefn::control::Request::Remove { name }, &[])?)
        }
        Command::Functions { socket } => {
            let response = edgefn::control::request(&socket.path(), &edgefn::control::Request::List, &[])?;
            print_functions(&response);
            answered(response)
        }
        Command::Devices { json, socket } => {
            let response = edgefn::control::request(&socket.path(), &edgefn::control::Request::Devices, &[])?;
            if json {
                println!("{}", serde_json::to_string_pretty(&response.devices)?);
            } else {
                print_devices(&response.devices, edgefn::event::unix_ms());
            }
            answered(response)
        }
        Command::Record { name, out, events, seconds, socket } => record(name, out, events, seconds, &socket.path()),
        Command::Replay { file, module } => {
            let module = match module {
                Some(m) => module_source(&m)?,
                None => {
                    let (header, _) = edgefn::recording::read(&file)?;
                    let named = module_source(&header.module)?;
                    if let ModuleSource::File(path) = &named {
                        anyhow::ensure!(
                            path.exists(),
                            "{}: the module it was recorded with, {}, is not here: give the one to replay \
                             through with --module FILE",
                            file.display(),
                            path.display()
                        );
                    }
                    named
                }
            };
            let replayed = edgefn::recording::replay(&file, &module)?;
            print!("{}", replayed.report(&module.to_string()));
            Ok(if replayed.differ.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        Command::Status { watch, socket } => {
            let in_place = watch.is_some() && std::io::IsTerminal::is_terminal(&std::io::stdout());
            loop {
                let response = edgefn::control::request(&socket.path(), &edgefn::control::Request::Status, &[])?;
                if in_place {
                    // Clear the screen and go home: the new view replaces the last.
                    print!("\x1b[2J\x1b[H");
                }
                println!("{}\n", response.summary);
                print_functions(&response);
                let Some(every) = watch else { return answered(response) };
                anyhow::ensure!(response.ok, "{}", response.message);
                println!();
                std::io::Write::flush(&mut std::io::stdout())?;
                std::thread::sleep(std::time::Duration::from_secs(every.max(1)));
            }
        }
        Command::Invoke(args) => {
            let payload = match (&args.payload, &args.payload_file) {
                (Some(p), _) => p.clone().into_bytes(),
                (None, Some(f)) => {
                    std::fs::read(f).map_err(|e| anyhow::anyhow!("--payload-file {}: {e}", f.display()))?
                }
                (None, None) => Vec::new(),
            };
            let module = module_source(&args.module)?;
            let req = edgefn::invoke::InvokeRequest {
                module,
                topic: args.topic,
                http: args.http,
                route: args.route,
                payload,
                profile: match &args.profile {
                    Some(p) => Some(cli::parse_profile(p, args.device.as_deref()).map_err(|e| anyhow::anyhow!(e))?),
                    None => None,
                },
                device: args.device,
                config: args.set.into_iter().collect::<BTreeMap<_, _>>(),
                fuel: args.fuel,
                memory_bytes: args.memory_bytes,
                repeat: args.repeat,
            };
            let invoked = edgefn::invoke::invoke(&req)?;
            print!("{}", edgefn::invoke::report(&invoked));
            Ok(if invoked.result.is_ok() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
    }
}

/// `--module`'s value: `builtin:NAME` or a file.
fn module_source(arg: &str) -> anyhow::Result<ModuleSource> {
    Ok(match arg.strip_prefix("builtin:") {
        Some(name) => {
            anyhow::ensure!(
                edgefn::builtin::module(name).is_some(),
                "--module: no built-in function {name:?}; built in are {}",
                edgefn::builtin::names().join(", ")
            );
            ModuleSource::Builtin(name.to_owned())
        }
        None => ModuleSource::File(PathBuf::from(arg)),
    })
}

/// `edgefn record`: starts the recording, shows its progress, and returns once it ended.
fn record(name: String, out: PathBuf, events: u64, seconds: u64, socket: &Path) -> anyhow::Result<ExitCode> {
    use edgefn::control::{request, Request};
    // The gateway runs elsewhere: it is given the path as this shell means it.
    let out = if out.is_absolute() { out } else { std::env::current_dir()?.join(out) };
    let path = out.to_str().ok_or_else(|| anyhow::anyhow!("--out {}: not UTF-8", out.display()))?.to_owned();
    let started = request(socket, &Request::Record { name: name.clone(), path, max: events, seconds }, &[])?;
    anyhow::ensure!(started.ok, "{}", started.message);
    eprintln!("{} (for at most {seconds} s)", started.message);
    let mut shown = 0;
    loop {
        let response = request(socket, &Request::Recording { name: name.clone() }, &[])?;
        anyhow::ensure!(response.ok, "{}", response.message);
        let status = response.recording.unwrap_or_default();
        if let Some(error) = status.error {
            anyhow::bail!("recording stopped after {} invocations: {error}", status.written);
        }
        if status.done {
            println!("recorded {} invocation{} of {name} into {}", status.written, plural(status.written), status.path);
            return Ok(ExitCode::SUCCESS);
        }
        if status.written != shown {
            shown = status.written;
            eprintln!("  {shown} of {events}");
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

fn plural(n: u64) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// The table `edgefn functions` and `edgefn status` print.
fn print_functions(response: &edgefn::control::Response) {
    println!(
        "{:<24} {:<16} {:<9} {:>6} {:>9} {:>7} {:>7} {:>8} {:<24} TRIGGERS",
        "NAME", "VERSION", "SOURCE", "QUEUED", "OK", "FAILED", "DROPPED", "MEAN_MS", "MODULE"
    );
    for f in &response.functions {
        let module = f.module.rsplit('/').next().unwrap_or(&f.module);
        let s = &f.status;
        println!(
            "{:<24} {:<16} {:<9} {:>6} {:>9} {:>7} {:>7} {:>8.2} {:<24} {}{}",
            f.name,
            f.version,
            f.source,
            s.queued,
            s.ok,
            s.failed,
            s.dropped(),
            s.mean_us as f64 / 1000.0,
            module,
            f.triggers.join(", "),
            if s.quarantined {
                "  (quarantined: failing; deploy a fixed version)"
            } else if s.behind {
                "  (behind: dropping its newest events)"
            } else {
                ""
            }
        );
        if !f.note.is_empty() {
            println!("{:<24} {}", "", f.note);
        }
    }
}

/// The table `edgefn devices` prints; times as ages at `now_ms`.
fn print_devices(devices: &[edgefn::sources::devices::DeviceRow], now_ms: u64) {
    let ago = |at: Option<u64>| match at {
        None => "-".to_owned(),
        Some(at) => {
            format!("{} ago", edgefn::trigger::format_duration(Duration::from_secs(now_ms.saturating_sub(at) / 1000)))
        }
    };
    println!("{:<24} {:<8} {:>12} {:>12} {:>9} {:>10}", "ID", "STATE", "SINCE", "LAST_SEEN", "MESSAGES", "UNREADABLE");
    for d in devices {
        println!(
            "{:<24} {:<8} {:>12} {:>12} {:>9} {:>10}",
            d.id,
            d.state.as_str(),
            ago(d.since_ms),
            ago(d.last_seen_ms),
            d.messages,
            d.unreadable
        );
    }
    if devices.is_empty() {
        println!("(no [[devices]] in the configuration)");
    }
}

/// glibc gives every thread that allocates its own malloc arena, each holding on
/// to freed memory; a gateway with a dozen threads pays megabytes of resident
/// memory for that. Two arenas are plenty for its allocation rate.
/// Prints the gateway's answer; a refusal is an error (exit 1).
fn answered(response: edgefn::control::Response) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(response.ok, "{}", response.message);
    if !response.message.is_empty() {
        println!("{}", response.message);
    }
    Ok(ExitCode::SUCCESS)
}

fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// One thread for all the gateway's I/O (the MQTT connections, the upstream
/// sender, the control socket): wasm runs on the worker threads, disk I/O on the
/// blocking pool, so no task here ever computes or blocks for long. A second
/// thread only added wake-ups between the two: on the QoS 1 burst, edgefn spent
/// 41-42 us of CPU a reading with one against 48-53 us with two
/// (docs/decisions/30-one-thread-for-async-io.md).
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?)
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
