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
}

/// Loads the module and runs it once. `Err` is a load problem; an invocation
/// that fails is `Ok(Err(failure))`.
pub fn invoke(req: &InvokeRequest) -> anyhow::Result<Result<Invocation, Failure>> {
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
    let event = Event::message(req.topic.clone(), req.payload.clone(), req.device.as_deref().map(Arc::from));
    Ok(instance.invoke(Arc::new(event), 0))
}

/// The human report of one invocation.
pub fn report(req: &InvokeRequest, result: &Result<Invocation, Failure>) -> String {
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
    let _ = writeln!(out, "time     {} us", elapsed.as_micros());
    out
}
