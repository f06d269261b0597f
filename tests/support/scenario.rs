//! What several suites share: the greenhouse configuration, readings as a
//! climate sensor sends them, and assertions on the summary.

use super::broker::TestBroker;
use super::probe::Probe;

/// A greenhouse: a Zigbee2MQTT climate sensor, a Tasmota fan plug, and the
/// threshold example switching the fan at 28 °C / 25 °C.
pub fn greenhouse(broker: &TestBroker, extra_functions: &str) -> String {
    format!(
        r#"
[gateway]
id = "gh-test"
workers = 2
shutdown_grace_ms = 5000

{broker}

[[devices]]
id = "climate"
telemetry = ["zigbee2mqtt/climate"]
format = "json"

[[devices]]
id = "fan"
telemetry = ["stat/fan/POWER"]
command_topic = "cmnd/fan/POWER"
format = "raw"

[[functions]]
name = "fan-control"
module = "builtin:threshold"
triggers = ["zigbee2mqtt/+"]
[functions.config]
field = "temperature"
above = 28
below = 25
command_topic = "cmnd/fan/POWER"

{extra_functions}
"#,
        broker = broker.gateway_toml()
    )
}

pub fn reading(temperature: f64) -> String {
    format!(r#"{{"temperature":{temperature},"humidity":61.5,"linkquality":120}}"#)
}

/// A press line sending numbered readings to one function that needs about
/// 0.2 ms each, with room for only `queue_capacity` events in its queue.
/// `extra` goes at the end of the `[broker]` section, and may start new ones.
pub fn press_line(broker: &TestBroker, queue_capacity: usize, extra: &str) -> String {
    format!(
        r#"
[gateway]
id = "line-test"
workers = 2
queue_capacity = {queue_capacity}
shutdown_grace_ms = 10000

{broker}
{extra}

[[functions]]
name = "slow-echo"
module = "slow-echo.wasm"
triggers = ["line/+/reading"]
[functions.limits]
fuel = 100_000_000
"#,
        broker = broker.gateway_toml()
    )
}

/// Publishes readings 0..n on `line/press-1/reading` as fast as the probe can,
/// and returns the numbers echoed on `echo`, in arrival order, once there are n.
pub fn numbered_readings_echoed(probe: &Probe, n: usize, what: &str) -> Vec<usize> {
    for i in 0..n {
        probe.publish("line/press-1/reading", &i.to_string());
    }
    let mut echoed = Vec::with_capacity(n);
    probe.collect_until(what, |m| {
        if m.topic == "echo" {
            echoed.push(m.payload.parse::<usize>().unwrap());
        }
        echoed.len() == n
    });
    echoed
}
