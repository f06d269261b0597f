//! Function state (issue 23, item 5), against the real gateway process and
//! Mosquitto: a counter kept with `state_get` and `state_cas` survives a
//! kill -9 of the gateway and a new version of the function, and two instances
//! incrementing it at once lose no update.

mod support;

use std::path::Path;

use support::broker::TestBroker;
use support::gateway::GatewayProcess;
use support::probe::Probe;
use support::wasm::counter;

fn config(broker: &TestBroker, dir: &Path, module: &str, triggers: &str, instances: u32) -> String {
    format!(
        "[gateway]\nid = \"gw-state\"\nworkers = 2\nmodules_dir = \"{}\"\n\n{}\n\
         [[functions]]\nname = \"counter\"\nmodule = \"{module}\"\ntriggers = {triggers}\n\
         [functions.limits]\ninstances = {instances}\n",
        dir.display(),
        broker.gateway_toml()
    )
}

/// Collects counts until one reaches `n`.
fn counts_until(probe: &Probe, n: u64) -> Vec<u64> {
    let mut counts = Vec::new();
    probe.collect_until(&format!("the count to reach {n}"), |m| {
        if m.topic == "count" {
            counts.push(m.payload.parse().unwrap());
        }
        counts.last() == Some(&n)
    });
    counts
}

#[test]
#[cfg_attr(edgefn_missing_mosquitto, ignore = "needs mosquitto: apt-get install mosquitto (bash .ci/run runs it)")]
fn state_survives_a_kill_9_of_the_gateway_and_a_new_version_of_the_function() {
    // The broker must outlive the gateway's kill: Mosquitto.
    if support::require_tool("mosquitto", &["/usr/sbin/mosquitto", "/usr/bin/mosquitto"]).is_none() {
        return;
    }
    let broker = TestBroker::mosquitto();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("v1.wasm"), counter("v1")).unwrap();
    std::fs::write(dir.path().join("v2.wasm"), counter("v2")).unwrap();
    let probe = Probe::connect(broker.port, "state-probe", &["count", "edgefn/gw-state/status"]);
    let v1 = config(&broker, dir.path(), "v1.wasm", r#"["tick"]"#, 1);
    let gateway = GatewayProcess::start(dir.path(), &v1);
    probe.wait_online("gw-state");
    for _ in 0..5 {
        probe.publish("tick", "");
    }
    assert_eq!(counts_until(&probe, 5), [1, 2, 3, 4, 5]);
    // The count was published, so its state was on disk first.
    gateway.kill9();

    let gateway = GatewayProcess::start(dir.path(), &v1);
    probe.wait_online("gw-state");
    probe.publish("tick", "");
    // A tick whose acknowledgement the kill cut off may come again: at least 6,
    // never a count started afresh.
    let first_after_kill = probe.wait_for("a count after the restart", |m| m.topic == "count").1;
    let after: u64 = first_after_kill.payload.parse().unwrap();
    assert!(after >= 6, "the count started again after a kill -9: {after}");

    // A new version of the function reads the same state.
    gateway.reload(dir.path(), "gateway.toml", &config(&broker, dir.path(), "v2.wasm", r#"["tick"]"#, 1));
    gateway.wait_for_log("the new version", |l| l.contains("counter") && l.contains("replaced"));
    probe.publish("tick", "");
    let next =
        probe.wait_for("a count from the new version", |m| m.topic == "count" && m.payload != after.to_string()).1;
    assert!(next.payload.parse::<u64>().unwrap() > after, "{} after {after}", next.payload);
    let summary = gateway.stop().summary();
    assert_eq!(summary["functions"]["counter"]["state_refused"].as_u64(), Some(0), "{summary}");
    assert!(dir.path().join("state/counter.kv").exists());
}

#[test]
fn two_instances_incrementing_one_counter_with_compare_and_set_lose_no_update() {
    let broker = TestBroker::from_env();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("counter.wasm"), counter("")).unwrap();
    let gateway = GatewayProcess::start(dir.path(), &config(&broker, dir.path(), "counter.wasm", r#"["tick/+"]"#, 2));
    let probe = Probe::connect(broker.port, "state-probe", &["count", "edgefn/gw-state/status"]);
    probe.wait_online("gw-state");
    const N: u64 = 1_000;
    for i in 0..N {
        probe.publish(&format!("tick/{}", i % 8), "");
    }
    let mut counts = Vec::new();
    probe.collect_until("a count for every tick", |m| {
        if m.topic == "count" {
            counts.push(m.payload.parse::<u64>().unwrap());
        }
        counts.len() as u64 == N
    });
    counts.sort_unstable();
    assert_eq!(counts.last(), Some(&N), "the counter ended below the number of ticks");
    // Each increment saw a value no other one saw: no two counts alike.
    let before = counts.len();
    counts.dedup();
    assert_eq!(counts.len(), before, "two invocations counted the same value");
    let summary = gateway.stop().summary();
    assert_eq!(summary["functions"]["counter"]["ok"].as_u64(), Some(N), "{summary}");
}
