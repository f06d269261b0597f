//! `edgefn invoke`: one function, one event, no broker. The function author's
//! debugging loop: what did it publish, log, and cost? Given a bundle, it runs
//! the function as a gateway would deploy it: the manifest's limits, config and
//! allow list, and only on a topic its triggers match (or, with `--timer`, as
//! a run of its first timer; with `--http`, as a request on one of its routes).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

use crate::config::{FunctionSpec, Limits, ModuleSource};
use crate::event::Event;
use crate::gateway::compile_source;
use crate::host::{Failure, FunctionInstance, Invocation, Loader};
use crate::topic::{validate_topic_name, TopicFilter};
use crate::trigger::Trigger;

/// One invocation to run.
#[derive(Debug, Clone)]
pub struct InvokeRequest {
    /// A module, or a file holding a bundle (`edgefn bundle`).
    pub module: ModuleSource,
    /// The message's topic; `None`: a timer's run (of a bundle's first timer),
    /// or the request in `http`.
    pub topic: Option<String>,
    /// An HTTP request instead: `"POST /rooms/kitchen/note?x=1"`; a module's
    /// route is `route`, a bundle's the first of its routes that matches.
    pub http: Option<String>,
    /// The route a module (not a bundle) is triggered by, for `http`.
    pub route: Option<String>,
    pub payload: Vec<u8>,
    pub device: Option<String>,
    /// The device's dialect (`--profile tasmota:gh-climate`): the payload is
    /// read into the normalised reading a gateway would give the function.
    pub profile: Option<crate::profile::Profile>,
    /// Values for config_get; with a bundle, over its manifest's.
    pub config: BTreeMap<String, String>,
    /// Fuel and memory; with a bundle, over its manifest's (else the defaults).
    pub fuel: Option<u64>,
    pub memory_bytes: Option<usize>,
    /// How many times to run the event on the same instance (at least 1).
    pub repeat: u32,
}

/// What `invoke` did: the last invocation, and the first one's fuel when there
/// were several.
pub struct Invoked {
    pub result: Result<Invocation, Failure>,
    /// The first invocation's fuel, which includes translating the code it ran
    /// (wasmi does that once per instance, on a function's first call).
    pub first_fuel: Option<u64>,
    /// The limits it ran under.
    pub limits: Limits,
    /// The bundle's name and version, when it was one.
    pub bundle: Option<String>,
    /// What `--profile` read from the payload: `Some(None)` when it could not.
    pub reading: Option<Option<String>>,
}

/// Loads the module and runs the event `repeat` times on one instance. `Err`
/// is a load problem; an invocation that fails is `Ok` with `Err(failure)`
/// (a failure stops the repeats).
pub fn invoke(req: &InvokeRequest) -> anyhow::Result<Invoked> {
    if let Some(topic) = &req.topic {
        validate_topic_name(topic).map_err(|e| anyhow::anyhow!("--topic {topic:?} {e}"))?;
    }
    // Upstream records are shown, as if the gateway had an outbox.
    let loader = Arc::new(Loader::new().with_upstream(true));
    let request = match &req.http {
        Some(line) => Some(request_line(line)?),
        None => None,
    };
    let (mut spec, module, bundle, trigger) = match bundle_in(&loader, &req.module)? {
        Some(bundle) => {
            let name = format!("{} {}", bundle.manifest.name, bundle.manifest.version);
            let mut spec = crate::control::function_of(&crate::control::Deployed::from(bundle.manifest))
                .map_err(|e| anyhow::anyhow!("{}: {}: {}", req.module, e.key, e.message))?;
            let listed = || spec.triggers.iter().map(|t| t.text()).collect::<Vec<_>>().join(", ");
            let matched = match (&req.topic, &request) {
                (Some(topic), _) => spec.triggers.iter().find(|t| t.topic().is_some_and(|f| f.matches(topic))),
                (None, Some((method, path, _))) => {
                    spec.triggers.iter().find(|t| t.http().is_some_and(|r| r.matches(method, path).is_some()))
                }
                (None, None) => spec.triggers.iter().find(|t| t.timer().is_some()),
            };
            let Some(matched) = matched else {
                if let Some(line) = &req.http {
                    anyhow::bail!("--http {line}: none of the bundle's routes takes it ({})", listed());
                }
                match &req.topic {
                    Some(topic) => anyhow::bail!(
                        "--topic {topic}: none of the bundle's triggers matches it ({}), so the gateway would never run it on this topic",
                        listed()
                    ),
                    None => anyhow::bail!("--timer: the bundle has no timer trigger ({})", listed()),
                }
            };
            let trigger = Arc::from(matched.text());
            spec.module = req.module.clone();
            (spec, loader.compile(&req.module.to_string(), &bundle.module)?, Some(name), trigger)
        }
        None => {
            let trigger = match (&req.topic, &req.http) {
                (Some(topic), _) => {
                    Trigger::Topic(TopicFilter::parse(topic).map_err(|e| anyhow::anyhow!("--topic: {e}"))?)
                }
                (None, Some(line)) => {
                    // Without --route, the request's own method and path.
                    let route = req.route.clone().unwrap_or_else(|| line.split('?').next().unwrap_or(line).to_owned());
                    let raw = crate::trigger::RawTrigger { http: Some(route), ..Default::default() };
                    Trigger::parse(&raw).map_err(|e| anyhow::anyhow!("--route: {e}"))?
                }
                (None, None) => Trigger::parse(&crate::trigger::RawTrigger { start: Some(true), ..Default::default() })
                    .map_err(anyhow::Error::msg)?,
            };
            let spec = FunctionSpec {
                name: "invoke".into(),
                module: req.module.clone(),
                triggers: vec![trigger.clone()],
                limits: Limits::default(),
                config: BTreeMap::new(),
                allow: Default::default(),
            };
            (spec, compile_source(&loader, &req.module)?, None, Arc::from(trigger.text()))
        }
    };
    spec.config.extend(req.config.clone());
    spec.limits.fuel = req.fuel.unwrap_or(spec.limits.fuel);
    spec.limits.memory_bytes = req.memory_bytes.unwrap_or(spec.limits.memory_bytes);
    let limits = spec.limits;
    let mut instance = FunctionInstance::new(loader, module, Arc::new(spec))?;
    let event = Arc::new(match (&req.topic, request) {
        (Some(topic), _) => {
            let mut event = Event::message(topic.clone(), req.payload.clone(), req.device.as_deref().map(Arc::from));
            event.reading =
                req.profile.as_ref().and_then(|p| p.normalise(topic, &req.payload)).map(|r| r.to_json().into());
            event
        }
        (None, Some((method, path, query))) => {
            let route = instance.spec().triggers.iter().find_map(|t| t.http().filter(|r| r.method == method));
            let params = route.and_then(|r| r.matches(&method, &path));
            let Some(params) = params else {
                anyhow::bail!("--http {method} {path}: the route {trigger} does not take it");
            };
            let request = crate::event::HttpRequest {
                method,
                path,
                query,
                params,
                content_type: String::new(),
                headers: Vec::new(),
                id: String::new(),
            };
            Event {
                kind: crate::event::EventKind::Http(Box::new(request)),
                payload: req.payload.clone().into(),
                device: None,
                reading: None,
                received_ms: crate::event::unix_ms(),
            }
        }
        (None, None) => Event::timer(crate::event::unix_ms()),
    });
    let mut result = instance.invoke(event.clone(), Arc::clone(&trigger));
    let mut first_fuel = None;
    for _ in 1..req.repeat.max(1) {
        let Ok(done) = &result else { break };
        first_fuel.get_or_insert(done.fuel_used);
        result = instance.invoke(event.clone(), Arc::clone(&trigger));
    }
    let reading =
        req.profile.as_ref().map(|_| event.reading.as_deref().map(|r| String::from_utf8_lossy(r).into_owned()));
    Ok(Invoked { result, first_fuel, limits, bundle, reading })
}

/// `"POST /rooms/kitchen/note?x=1"` as (method, path, query).
fn request_line(line: &str) -> anyhow::Result<(String, String, String)> {
    let (method, target) = line
        .trim()
        .split_once(' ')
        .ok_or_else(|| anyhow::anyhow!("--http {line:?}: a method and a path, e.g. \"POST /rooms/kitchen/note\""))?;
    let target = target.trim();
    anyhow::ensure!(target.starts_with('/'), "--http {line:?}: the path must start with '/'");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    Ok((method.trim().to_owned(), path.to_owned(), query.to_owned()))
}

/// The bundle `source` holds, if it is a file that holds one.
pub(crate) fn bundle_in(loader: &Loader, source: &ModuleSource) -> anyhow::Result<Option<crate::bundle::Bundle>> {
    let ModuleSource::File(path) = source else { return Ok(None) };
    let bytes = crate::gateway::read_source(loader, source)?;
    if !crate::bundle::is_bundle(&bytes) {
        return Ok(None);
    }
    let bundle = crate::bundle::Bundle::parse(&bytes).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok(Some(bundle))
}

/// The human report of the last invocation.
pub fn report(invoked: &Invoked) -> String {
    let result = &invoked.result;
    let mut out = String::new();
    let fuel = invoked.limits.fuel;
    let (logs, denied, fuel_used, elapsed) = match result {
        Ok(done) => (&done.logs, &done.denied, done.fuel_used, done.elapsed),
        Err(failed) => (&failed.logs, &failed.denied, failed.fuel_used, failed.elapsed),
    };
    if let Some(bundle) = &invoked.bundle {
        let _ = writeln!(out, "bundle   {bundle}: its limits, config and allow list");
    }
    match &invoked.reading {
        Some(Some(reading)) => {
            let _ = writeln!(out, "reading  {reading}");
        }
        Some(None) => {
            let _ = writeln!(out, "reading  (none: the profile cannot read this payload on this topic)");
        }
        None => {}
    }
    for log in logs {
        let _ = writeln!(out, "log      {:<5} {}", format!("{:?}", log.level).to_lowercase(), log.message);
    }
    for call in denied {
        let _ = writeln!(out, "denied   {call}: not in the function's allow list (the call returned -2)");
    }
    match result {
        Ok(done) => {
            for p in &done.publishes {
                let _ = writeln!(
                    out,
                    "publish  {} qos={} retain={} {}",
                    p.topic,
                    p.qos,
                    p.retain,
                    String::from_utf8_lossy(&p.payload)
                );
            }
            if done.publishes.is_empty() {
                let _ = writeln!(out, "publish  (nothing)");
            }
            if let Some(reply) = &done.reply {
                let body = String::from_utf8_lossy(&reply.body);
                let _ = writeln!(out, "answer   {} {} {body}", reply.status, reply.content_type);
            }
            for (stream, payload) in &done.upstream {
                let _ = writeln!(out, "upstream {stream} {}", String::from_utf8_lossy(payload));
            }
            let _ = writeln!(out, "result   ok");
        }
        Err(failed) => {
            let _ = writeln!(out, "result   FAILED: {} (nothing it published is sent)", failed.reason);
        }
    }
    let _ = writeln!(out, "fuel     {fuel_used} of {fuel}");
    if let Some(first) = invoked.first_fuel {
        let _ = writeln!(out, "first    {first} fuel (the first event also pays for translating the code it runs)");
    }
    let _ = writeln!(out, "time     {} us", elapsed.as_micros());
    out
}
