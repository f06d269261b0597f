//! Running a started gateway: until shutdown it applies reloads (SIGHUP),
//! answers `edgefn deploy`, `remove` and `functions` from the control socket, and
//! tells systemd how it is doing. Every change ends in [`Gateway::apply`].

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::watch;

use super::{registry, Gateway, Operation, StatsSnapshot};
use crate::config::{parse_function, GatewayConfig};

/// How long a start waits for the broker before it tells systemd it is ready anyway.
const READY_WAIT: Duration = Duration::from_secs(10);

/// Runs the gateway until `shutdown` completes, then shuts it down cleanly.
/// Each message on `reload` re-reads the configuration file the gateway was
/// started from and applies the difference ([`Gateway::apply`]); a file that
/// does not validate is refused with the message `edgefn check` prints.
/// The control socket is `socket` when given (`edgefn run --socket`), else
/// `gateway.control_socket`, else the default ([`crate::control::socket::to_serve`]).
pub async fn run(
    config: GatewayConfig,
    socket: Option<PathBuf>,
    shutdown: impl Future<Output = ()>,
    mut reload: tokio::sync::mpsc::UnboundedReceiver<()>,
) -> anyhow::Result<StatsSnapshot> {
    let (commands, mut control) = tokio::sync::mpsc::channel(8);
    let socket =
        socket.or_else(|| config.gateway.control_socket.clone()).unwrap_or_else(crate::control::socket::to_serve);
    let config_api = config.api.clone();
    let summary_every = config.gateway.summary_every;
    let mut gateway = Gateway::start(config).await?;
    let api = config_api.and_then(|cfg| crate::api::serve(cfg, commands.clone(), gateway.requests()));
    let server = crate::control::serve(&socket, commands);
    tokio::spawn(tell_systemd_when_ready(gateway.ready()));
    let mut tick = tokio::time::interval(summary_every.unwrap_or(Duration::from_secs(3600)));
    tick.tick().await;
    let mut scale_in = tokio::time::interval(SCALE_IN_AFTER / 3);
    let mut health = tokio::time::interval(HEALTH_EVERY);
    health.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    let mut reloads_open = true;
    let mut discoveries = gateway.discoveries();
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = tick.tick(), if summary_every.is_some() => tracing::info!("{}", gateway.snapshot().one_line()),
            _ = health.tick(), if !gateway.probation.is_empty() => check_health(&mut gateway).await,
            _ = scale_in.tick() => {
                let dropped = gateway.scheduler.shrink_idle(SCALE_IN_AFTER);
                if dropped > 0 {
                    tracing::debug!(instances = dropped, "idle instances given back");
                }
            }
            request = reload.recv(), if reloads_open => match request {
                Some(()) => {
                    crate::systemd::reloading();
                    reload_from_file(&mut gateway).await;
                    crate::systemd::notify("READY=1");
                }
                None => reloads_open = false,
            },
            Ok(()) = changed(&mut discoveries) => gateway.rediscover(),
            Some(command) = control.recv() => {
                let response = control_request(&mut gateway, command.request, &command.module).await;
                let _ = command.reply.send(response);
            }
        }
    }
    crate::systemd::notify("STOPPING=1");
    if let Some(api) = api {
        api.abort();
    }
    if let Some(server) = server {
        server.abort();
        let _ = std::fs::remove_file(&socket);
    }
    Ok(gateway.shutdown().await)
}

/// The next change of the devices discovered; never without discovery.
async fn changed(discoveries: &mut Option<watch::Receiver<u64>>) -> Result<(), watch::error::RecvError> {
    match discoveries {
        Some(d) => d.changed().await,
        None => std::future::pending().await,
    }
}

/// `READY=1` once subscribed; if the broker cannot be reached within
/// [`READY_WAIT`], `READY=1` all the same (the gateway keeps retrying on its own,
/// and a start must not hang on a broker that is down), with a status that says so.
async fn tell_systemd_when_ready(mut ready: watch::Receiver<bool>) {
    if let Ok(Ok(_)) = tokio::time::timeout(READY_WAIT, ready.wait_for(|r| *r)).await {
        crate::systemd::notify("READY=1\nSTATUS=subscribed to the broker");
        return;
    }
    crate::systemd::notify("READY=1\nSTATUS=broker not reachable yet; retrying");
    if ready.wait_for(|r| *r).await.is_ok() {
        crate::systemd::notify("STATUS=subscribed to the broker");
    }
}

/// Carries out one `edgefn deploy`, `remove` or `functions`.
async fn control_request(
    gateway: &mut Gateway,
    request: crate::control::Request,
    module: &[u8],
) -> crate::control::Response {
    use crate::control::{Deployed, Request, Response, Store};
    let fail = |message: String| Response { ok: false, message, ..Default::default() };
    let store = Store::of(&gateway.config);
    let path = gateway.config.source.clone();
    let from_file = |name: &str| gateway.registry.get(name).is_some() && !store.holds(name);
    match request {
        Request::List => Response { ok: true, functions: gateway.function_rows(&store), ..Default::default() },
        Request::Devices => Response { ok: true, devices: gateway.device_rows(), ..Default::default() },
        Request::Record { name, path, max, seconds } => {
            match gateway.record(&name, path.as_ref(), max.max(1), Duration::from_secs(seconds.max(1))) {
                Ok(message) => {
                    Response { ok: true, message, recording: gateway.recording(&name), ..Default::default() }
                }
                Err(message) => fail(message),
            }
        }
        Request::Recording { name } => match gateway.recording(&name) {
            Some(status) => Response { ok: true, recording: Some(status), ..Default::default() },
            None => fail(format!("{name} has not been recorded since the gateway started")),
        },
        Request::Status => {
            let stats = gateway.snapshot();
            Response {
                ok: true,
                functions: gateway.function_rows(&store),
                summary: stats.one_line(),
                stats: Some(Box::new(stats)),
                ..Default::default()
            }
        }
        Request::Deploy { name, triggers, config, limits, bundle, file, .. } => {
            let trusted = &gateway.config.gateway.trusted_keys;
            let (spec, module) = if bundle {
                match crate::bundle::Bundle::parse(module).and_then(|b| b.verify(trusted).map(|()| b)) {
                    Ok(b) => (Deployed::from(b.manifest), b.module),
                    Err(e) => return fail(format!("bundle refused, nothing changed: {e}")),
                }
            } else if !trusted.is_empty() {
                return fail(
                    "deploy refused, nothing changed: this gateway takes only bundles signed by one of \
                     gateway.trusted_keys (edgefn bundle --sign KEY), not bare modules"
                        .into(),
                );
            } else {
                (Deployed { name, triggers, config, limits, ..Default::default() }, module.to_vec())
            };
            deploy(gateway, &store, spec, &module, &file).await
        }
        Request::Remove { name } => {
            if from_file(&name) {
                return fail(format!("{name} is defined in {}: remove it there and reload", path.display()));
            }
            if !store.holds(&name) {
                return fail(format!("there is no deployed function {name:?} (edgefn functions lists them)"));
            }
            let outcome = gateway.operate(Operation::Remove(name.clone())).await.map_err(|e| format!("{e:#}"));
            match outcome {
                Ok(done) => {
                    if let Err(e) = store.forget(&name) {
                        return fail(format!("{done}, but it will come back at the next start: {e}"));
                    }
                    tracing::info!(function = %name, "removed: {done}");
                    Response { ok: true, message: done, ..Default::default() }
                }
                Err(e) => fail(format!("remove refused, nothing changed: {e}")),
            }
        }
    }
}

/// How long an extra instance of a scaled-out function may sit idle before it
/// is given back.
const SCALE_IN_AFTER: Duration = Duration::from_secs(30);
/// How often versions on probation are looked at.
const HEALTH_EVERY: Duration = Duration::from_secs(1);
/// How long a deployed version is on probation.
pub const PROBATION: Duration = Duration::from_secs(300);
/// Failed invocations a version on probation needs, at half its invocations
/// or more, to be rolled back.
pub const ROLLBACK_FAILURES: u64 = 10;

/// Rolls back, to the version each replaced, deployed versions that fail too
/// often in their first minutes ([`PROBATION`], [`ROLLBACK_FAILURES`]).
async fn check_health(gateway: &mut Gateway) {
    let status = gateway.scheduler.status();
    let mut failing = Vec::new();
    gateway.probation.retain(|name, since| {
        let Some(s) = status.get(name.as_str()) else { return false };
        if s.updating {
            // The counters are still the old version's.
            return true;
        }
        if s.version_failed >= ROLLBACK_FAILURES && s.version_failed >= s.version_ok {
            failing.push((name.clone(), s.version_failed, s.version_ok, since.elapsed()));
            return false;
        }
        since.elapsed() < PROBATION
    });
    for (name, failed, ok, after) in failing {
        let store = crate::control::Store::of(&gateway.config);
        let from = gateway.registry.get(&name).map(|e| format!("{:016x}", e.digest)).unwrap_or_default();
        let outcome = match store.previous(&name) {
            None => Err("the version it replaced is gone".to_owned()),
            Some(previous) => match parse_function(&previous, &store.table_path(&name), &gateway.config) {
                Ok(spec) => gateway.operate(Operation::Put(Box::new(spec))).await.map_err(|e| format!("{e:#}")),
                Err(e) => Err(e.to_string()),
            },
        };
        let why = format!("{failed} of its first {} invocations failed in {} s", failed + ok, after.as_secs());
        match outcome.and_then(|_| store.roll_back(&name).map_err(|e| format!("could not record it: {e}"))) {
            Ok(()) => {
                let to = gateway.registry.get(&name).map(|e| format!("{:016x}", e.digest)).unwrap_or_default();
                tracing::error!(function = %name, from = %from, to = %to, "rolled back by itself: {why}");
                gateway.rolled_back.insert(name, format!("rolled back from version {from} to {to}: {why}"));
            }
            Err(e) => {
                tracing::error!(function = %name, version = %from, "failing ({why}) but could not be rolled back: {e}")
            }
        }
    }
}

/// Installs or replaces a deployed function: stores its module, checks that
/// it loads, applies the change and records it for the next start.
async fn deploy(
    gateway: &mut Gateway,
    store: &crate::control::Store,
    spec: crate::control::Deployed,
    module: &[u8],
    file: &str,
) -> crate::control::Response {
    use crate::control::Response;
    let fail = |message: String| Response { ok: false, message, ..Default::default() };
    let path = gateway.config.source.clone();
    let name = spec.name.clone();
    if !crate::control::valid_name(&name) {
        return fail(format!(
            "function name {name:?}: must be 1 to 64 letters, digits, '-', '_' or '.', not starting with '.'"
        ));
    }
    if gateway.registry.get(&name).is_some() && !store.holds(&name) {
        return fail(format!("{name} is defined in {}: change it there and reload", path.display()));
    }
    if let Err(e) = store.room_for(module.len(), gateway.config.gateway.min_free_bytes) {
        return fail(format!("deploy refused, nothing changed: {e}"));
    }
    let digest = registry::module_digest(module);
    let saved = match store.save_module(&name, digest, module) {
        Ok(p) => p,
        Err(e) => return fail(format!("could not store the module: {e}")),
    };
    let table = crate::control::table(&spec, &saved);
    let outcome = match parse_function(&table, &store.table_path(&name), &gateway.config) {
        // The version asked for must load: a reload keeps a running version
        // whose new module fails, a deploy says why instead.
        Ok(spec) => gateway.operate(Operation::Put(Box::new(spec))).await.map_err(|e| format!("{e:#}")),
        // Named by the key the user gave (`triggers[0]`), not the table's
        // (`functions[0].triggers[0]`).
        Err(e) => {
            let key = e.key.split_once("].").map_or(e.key.as_str(), |(_, k)| k);
            Err(format!("{key}: {}", e.message))
        }
    };
    // Messages name the file the user deployed, not the gateway's copy of it.
    let outcome = match file {
        "" => outcome,
        file => outcome.map_err(|e| e.replace(&saved.display().to_string(), file)),
    };
    match outcome {
        Ok(done) => match store.commit(&name, &table, &saved) {
            Ok(()) => {
                gateway.rolled_back.remove(&name);
                if store.previous(&name).is_some() {
                    gateway.probation.insert(name.clone(), std::time::Instant::now());
                }
                let version = match &spec.version {
                    Some(v) => format!("version {v}, module {digest:016x}"),
                    None => format!("version {digest:016x}"),
                };
                tracing::info!(function = %name, version = %version, "deployed: {done}");
                Response { ok: true, message: format!("{done} ({version})"), ..Default::default() }
            }
            Err(e) => fail(format!("{done}, but could not record it for the next start: {e}")),
        },
        Err(e) => {
            // Nothing changed: keep the module file the running version
            // uses (if any), drop the one just written.
            if gateway.registry.get(&name).map(|e| e.digest) != Some(digest) {
                let _ = std::fs::remove_file(&saved);
            }
            fail(format!("deploy refused, nothing changed: {e}"))
        }
    }
}

async fn reload_from_file(gateway: &mut Gateway) {
    let path = gateway.config.source.clone();
    tracing::info!(config = %path.display(), "reloading the configuration");
    let next = match crate::control::load_config(&path) {
        Ok(next) => next,
        Err(e) => {
            tracing::error!("reload refused, nothing changed: {e}");
            return;
        }
    };
    match gateway.apply(next, None).await {
        Ok(done) => tracing::info!(functions = gateway.registry().len(), "reloaded: {done}"),
        Err(e) => tracing::error!("reload refused, nothing changed: {e:#}"),
    }
}
