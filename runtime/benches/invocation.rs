//! Prints what one invocation of the built-in `threshold` function costs on this
//! machine, host side included (event setup, fuel, host calls, publish buffering).
//! `cargo bench --bench invocation`. A figure to watch, not a pass/fail test.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use edgefn::config::{FunctionSpec, Limits, ModuleSource};
use edgefn::event::Event;
use edgefn::gateway::compile_source;
use edgefn::host::{FunctionInstance, Loader};
use edgefn::topic::TopicFilter;

fn main() {
    let loader = Arc::new(Loader::new());
    let source = ModuleSource::Builtin("threshold".into());
    let started = Instant::now();
    let module = compile_source(&loader, &source).unwrap();
    let config: BTreeMap<String, String> =
        [("field", "temperature"), ("above", "28"), ("below", "25"), ("command_topic", "cmnd/fan/POWER")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
    let spec = FunctionSpec {
        name: "threshold".into(),
        module: source,
        triggers: vec![TopicFilter::parse("zigbee2mqtt/+").unwrap()],
        limits: Limits::default(),
        config,
    };
    let mut instance = FunctionInstance::new(loader, module, Arc::new(spec)).unwrap();
    let cold = started.elapsed();
    let events: Vec<Arc<Event>> = [24.0, 26.5, 29.0, 27.0]
        .iter()
        .map(|t| {
            Arc::new(Event {
                topic: "zigbee2mqtt/climate".into(),
                payload: format!(r#"{{"temperature":{t},"humidity":61.5,"linkquality":120}}"#).into_bytes(),
                device: Some("climate".into()),
                received_ms: 0,
            })
        })
        .collect();
    let n = 20_000;
    let (mut fuel, mut publishes) = (0u64, 0usize);
    let started = Instant::now();
    for i in 0..n {
        let done = instance.invoke(events[i % events.len()].clone(), 0).unwrap();
        fuel += done.fuel_used;
        publishes += done.publishes.len();
    }
    let per = started.elapsed() / n as u32;
    println!("threshold (builtin): compile + instantiate + init {:>8.1} us", cold.as_secs_f64() * 1e6);
    println!(
        "threshold (builtin): one invocation            {:>8.2} us  ({} fuel, {} publishes in {n})",
        per.as_secs_f64() * 1e6,
        fuel / n as u64,
        publishes
    );
}
