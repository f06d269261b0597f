//! `edgefn invoke`: one function, one event, no broker. The function author's
//! debugging loop: what did it publish, log, and cost?

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

use crate::config::{FunctionSpec, Limits, ModuleSource};
use crate::event::Event;
use crate::gateway::compile_source;
use crate::host::{Failure, FunctionInstance, Invocation, Loader};
use crate::topic::{validate_topic_name, TopicFilter};

/// One invocation to run.
#[derive(Debug, Clone)]
pub struct InvokeRequest {
    pub module: ModuleSource,
    pub topic: String,
    pub payload: Vec<u8>,
    pub device: Option<String>,
    pub config: BTreeMap<String, String>,
    pub limits: Limits,
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
}

/// Loads the module and runs the event `repeat` times on one instance. `Err`
/// is a load problem; an invocation that fails is `Ok` with `Err(failure)`
/// (a failure stops the repeats).
pub fn invoke(req: &InvokeRequest) -> anyhow::Result<Invoked> {
    validate_topic_name(&req.topic).map_err(|e| anyhow::anyhow!("--topic {:?} {e}", req.topic))?;
    // Upstream records are shown, as if the gateway had an outbox.
    let loader = Arc::new(Loader::new().with_upstream(true));
    let module = compile_source(&loader, &req.module)?;
    let trigger = TopicFilter::parse(&req.topic).map_err(|e| anyhow::anyhow!("--topic: {e}"))?;
    let spec = FunctionSpec {
        name: "invoke".into(),
        module: req.module.clone(),
        triggers: vec![trigger],
        limits: req.limits,
        config: req.config.clone(),
        allow: Default::default(),
    };
    let mut instance = FunctionInstance::new(loader, module, Arc::new(spec))?;
    let event = Arc::new(Event::message(req.topic.clone(), req.payload.clone(), req.device.as_deref().map(Arc::from)));
    let mut result = instance.invoke(event.clone(), 0);
    let mut first_fuel = None;
    for _ in 1..req.repeat.max(1) {
        let Ok(done) = &result else { break };
        first_fuel.get_or_insert(done.fuel_used);
        result = instance.invoke(event.clone(), 0);
    }
    Ok(Invoked { result, first_fuel })
}

/// The human report of the last invocation.
pub fn report(req: &InvokeRequest, invoked: &Invoked) -> String {
    let result = &invoked.result;
    let mut out = String::new();
    let fuel = req.limits.fuel;
    let (logs, fuel_used, elapsed) = match result {
        Ok(done) => (&done.logs, done.fuel_used, done.elapsed),
        Err(failed) => (&failed.logs, failed.fuel_used, failed.elapsed),
    };
    for log in logs {
        let _ = writeln!(out, "log      {:<5} {}", format!("{:?}", log.level).to_lowercase(), log.message);
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
