//! The examples in `functions/examples` run from their configurations in
//! `device-configs/examples`, as shipped but for where the brokers are, against
//! Mosquitto with simulated devices that speak their projects' formats.

mod support;

use std::path::{Path, PathBuf};

use support::broker::TestBroker;
use support::gateway::GatewayProcess;
use support::probe::{Message, Probe};

/// Builds the example crate `name` for wasm32, as its configuration's comment says.
fn build(name: &str) -> PathBuf {
    let functions = support::repo_root().join("functions");
    let built = std::process::Command::new("cargo")
        .args(["build", "--release", "--quiet", "-p", name, "--target", "wasm32-unknown-unknown"])
        .current_dir(&functions)
        .output()
        .unwrap();
    assert!(built.status.success(), "building {name}: {}", String::from_utf8_lossy(&built.stderr));
    functions.join(format!("target/wasm32-unknown-unknown/release/{name}.wasm"))
}

/// A site as the configuration's comment lays it out: `dir/gateway.toml` (the
/// shipped file with the test's brokers and a control socket of its own, and
/// `changes` made: timings only) and the built module in `dir/functions`.
fn site(
    file: &str,
    module: &str,
    broker: &TestBroker,
    cloud: Option<&TestBroker>,
    changes: &[(&str, &str)],
) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let shipped = std::fs::read_to_string(support::repo_root().join("device-configs/examples").join(file)).unwrap();
    let start = shipped.find("[broker]\n").expect("a [broker] section");
    let end = start + shipped[start..].find("\n[").expect("a section after [broker]") + 1;
    let mut text = format!("{}{}\n{}", &shipped[..start], broker.gateway_toml(), &shipped[end..]);
    let socket = format!("[gateway]\ncontrol_socket = {:?}\n", dir.path().join("control.sock"));
    text = text.replacen("[gateway]\n", &socket, 1);
    if let Some(cloud) = cloud {
        text =
            text.replacen("url = \"mqtt://localhost:1884\"", &format!("url = \"mqtt://127.0.0.1:{}\"", cloud.port), 1);
    }
    for (from, to) in changes {
        assert!(text.contains(from), "{file} has no {from:?}");
        text = text.replacen(from, to, 1);
    }
    std::fs::create_dir_all(dir.path().join("functions")).unwrap();
    std::fs::copy(build(module), dir.path().join(format!("functions/{module}.wasm"))).unwrap();
    std::fs::write(dir.path().join("gateway.toml"), text).unwrap();
    dir
}

fn start(dir: &Path) -> GatewayProcess {
    GatewayProcess::start_in(dir, Path::new("gateway.toml"), &[])
}

/// The records of a JSON upstream batch (JSON payloads embedded as they are).
fn records(message: &Message) -> Vec<serde_json::Value> {
    let batch: serde_json::Value = serde_json::from_str(&message.payload).unwrap();
    batch["records"].as_array().unwrap().iter().map(|r| r["payload"].clone()).collect()
}

#[test]
#[cfg_attr(edgefn_missing_mosquitto, ignore = "needs mosquitto: apt-get install mosquitto (bash .ci/run runs it)")]
#[cfg_attr(
    edgefn_missing_wasm32_unknown_unknown,
    ignore = "needs the wasm32-unknown-unknown target (bash .ci/run adds it)"
)]
fn the_greenhouse_keeps_its_fan_through_a_kill_9_confirms_each_command_and_alerts_upstream() {
    let broker = TestBroker::mosquitto();
    let cloud = TestBroker::mosquitto();
    let dir =
        site("greenhouse.toml", "greenhouse", &broker, Some(&cloud), &[("alert_after_s = 600", "alert_after_s = 1")]);
    let consumer = Probe::connect(cloud.port, "cloud", &["edgefn/greenhouse-2/alerts"]);
    // The Tasmota plug: it takes POWER and answers with its new state, as Tasmota does.
    let plug = Probe::connect(broker.port, "plug", &["cmnd/greenhouse-fan/POWER", "edgefn/+/status"]);
    let sensor =
        |t: f64| format!(r#"{{"battery":97,"humidity":58.2,"linkquality":102,"temperature":{t},"voltage":3005}}"#);
    let command = |plug: &Probe| -> String {
        let (_, c) = plug.wait_for("a fan command", |m| m.topic == "cmnd/greenhouse-fan/POWER");
        plug.publish("stat/greenhouse-fan/RESULT", &format!(r#"{{"POWER":"{}"}}"#, c.payload));
        c.payload
    };

    let gateway = start(dir.path());
    plug.wait_online("greenhouse-2");
    plug.publish("zigbee2mqtt/greenhouse-climate", &sensor(30.5));
    assert_eq!(command(&plug), "ON");
    gateway.wait_for_log("the plug's echo confirming it", |l| l.contains("confirmed: the fan is on"));

    // A power cut: what the function decided is on disk.
    gateway.kill9();
    let gateway = start(dir.path());
    plug.wait_online("greenhouse-2");
    // Still too hot, and too hot for longer than the alert time since the first
    // reading, before the cut: the alert, and no second ON.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let alert = loop {
        assert!(std::time::Instant::now() < deadline, "no alert upstream");
        plug.publish("zigbee2mqtt/greenhouse-climate", &sensor(31.0));
        if let Some(m) = consumer.next_within(std::time::Duration::from_millis(300)) {
            break records(&m).remove(0);
        }
    };
    assert_eq!(
        (alert["alert"].as_str(), alert["sensor"].as_str()),
        (Some("too_hot"), Some("greenhouse-climate")),
        "{alert}"
    );
    assert_eq!(alert["temperature"].as_f64(), Some(31.0), "{alert}");
    // Cool again: the fan off (the next command the plug gets: no ON came
    // after the restart), and the recovery told upstream.
    plug.publish("zigbee2mqtt/greenhouse-climate", &sensor(24.0));
    assert_eq!(command(&plug), "OFF");
    let (_, recovered) = consumer.wait_for("the recovery", |m| records(m).iter().any(|r| r["alert"] == "recovered"));
    assert_eq!(records(&recovered)[0]["sensor"], "greenhouse-climate");
    gateway.wait_for_log("the OFF confirmed", |l| l.contains("confirmed: the fan is off"));

    let summary = gateway.stop().summary();
    assert_eq!(summary["commands_confirmed"].as_u64(), Some(1), "{summary}");
    assert_eq!(summary["commands_out"].as_u64(), Some(1), "one command after the restart: {summary}");
}
