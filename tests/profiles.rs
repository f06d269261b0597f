//! Device profiles, against the real gateway process and a real broker, with
//! simulated devices publishing what their projects document: a Tasmota
//! sensor's `tele/<t>/SENSOR` (`{"AM2301":{"Temperature":..}}`) and an ESPHome
//! node's plain `23.5` drive the built-in `threshold` by the field name
//! `temperature` alone, which commands a Shelly Gen2 relay (JSON-RPC) and a
//! Zigbee2MQTT lamp by name and action. A function may command only the
//! devices it is allowed; a payload a profile cannot read is counted per device.

mod support;

use std::path::Path;

use support::broker::TestBroker;
use support::gateway::{edgefn_command, GatewayProcess};
use support::probe::{Message, Probe};
use support::wasm::module;

/// Publishes the event's normalised reading to `readings/<device>`.
fn echo_reading() -> Vec<u8> {
    module(
        r#"(import "edgefn" "event_device" (func $device (param i32 i32) (result i32)))
           (import "edgefn" "event_reading" (func $reading (param i32 i32) (result i32)))
           (import "edgefn" "publish" (func $publish (param i32 i32 i32 i32 i32 i32) (result i32)))"#,
        "(local $d i32)
         (local.set $d (call $device (i32.const 2057) (i32.const 200)))
         (drop (call $publish (i32.const 2048) (i32.add (i32.const 9) (local.get $d))
               (i32.const 4096) (call $reading (i32.const 4096) (i32.const 4096)) (i32.const 1) (i32.const 0)))
         i32.const 0",
        r#"(data (i32.const 2048) "readings/")"#,
    )
}

/// Commands the fan `on` (which it may not) and the lamp `toggle` (which it
/// may), and publishes both answers to `rogue/result`: "<fan> <lamp>".
fn rogue() -> Vec<u8> {
    module(
        r#"(import "edgefn" "command" (func $command (param i32 i32 i32 i32) (result i32)))
           (import "edgefn" "publish" (func $publish (param i32 i32 i32 i32 i32 i32) (result i32)))"#,
        "(local $fan i32) (local $lamp i32)
         (local.set $fan (call $command (i32.const 2048) (i32.const 3) (i32.const 2064) (i32.const 2)))
         (local.set $lamp (call $command (i32.const 2052) (i32.const 4) (i32.const 2068) (i32.const 6)))
         ;; Each answer as one character: '0' + 0 - code (0 sent, 2 denied, 6 cannot).
         (i32.store8 (i32.const 3000) (i32.sub (i32.const 48) (local.get $fan)))
         (i32.store8 (i32.const 3001) (i32.const 32))
         (i32.store8 (i32.const 3002) (i32.sub (i32.const 48) (local.get $lamp)))
         (drop (call $publish (i32.const 2080) (i32.const 12) (i32.const 3000) (i32.const 3) (i32.const 1) (i32.const 0)))
         i32.const 0",
        r#"(data (i32.const 2048) "fan") (data (i32.const 2052) "lamp")
           (data (i32.const 2064) "on") (data (i32.const 2068) "toggle")
           (data (i32.const 2080) "rogue/result")"#,
    )
}

/// The next message on `topic`: one already received while waiting for
/// another (the functions' outputs arrive in any order), else the next to come.
fn next_on(probe: &Probe, early: &mut Vec<Message>, topic: &str) -> Message {
    if let Some(i) = early.iter().position(|m| m.topic == topic) {
        return early.remove(i);
    }
    let (before, found) = probe.wait_for(topic, |m| m.topic == topic);
    early.extend(before);
    found
}

/// Publishes the climate sensor's last values to `peek/climate` and its
/// answer for the fan (which it may not read) to `peek/fan`, as a digit.
fn peek() -> Vec<u8> {
    module(
        r#"(import "edgefn" "device_reading" (func $last (param i32 i32 i32 i32) (result i32)))
           (import "edgefn" "publish" (func $publish (param i32 i32 i32 i32 i32 i32) (result i32)))"#,
        "(local $n i32)
         (local.set $n (call $last (i32.const 2048) (i32.const 7) (i32.const 4096) (i32.const 4096)))
         (if (i32.lt_s (local.get $n) (i32.const 0)) (then (local.set $n (i32.const 0))))
         (drop (call $publish (i32.const 2064) (i32.const 12) (i32.const 4096) (local.get $n) (i32.const 1) (i32.const 0)))
         (local.set $n (call $last (i32.const 2056) (i32.const 3) (i32.const 4096) (i32.const 4096)))
         (i32.store8 (i32.const 3000) (i32.sub (i32.const 48) (local.get $n)))
         (drop (call $publish (i32.const 2080) (i32.const 8) (i32.const 3000) (i32.const 1) (i32.const 1) (i32.const 0)))
         i32.const 0",
        r#"(data (i32.const 2048) "climate") (data (i32.const 2056) "fan")
           (data (i32.const 2064) "peek/climate") (data (i32.const 2080) "peek/fan")"#,
    )
}

/// On `confirm/go`, by the payload's first byte: `1` the fan on (10 s to
/// confirm), `2` the fan off (300 ms), `3` the lamp on (10 s); publishes the
/// command's id to `confirm/id`. On a confirmation (kind 4), publishes its
/// payload to `confirm/outcome`.
fn confirmer() -> Vec<u8> {
    module(
        r#"(import "edgefn" "event_kind" (func $kind (result i32)))
           (import "edgefn" "event_payload" (func $payload (param i32 i32) (result i32)))
           (import "edgefn" "command_confirmed" (func $cc (param i32 i32 i32 i32 i32) (result i32)))
           (import "edgefn" "publish" (func $publish (param i32 i32 i32 i32 i32 i32) (result i32)))"#,
        "(local $k i32) (local $id i32) (local $p i32)
         (if (i32.eq (call $kind) (i32.const 4)) (then
           (drop (call $publish (i32.const 2048) (i32.const 15) (i32.const 4096)
                 (call $payload (i32.const 4096) (i32.const 1024)) (i32.const 1) (i32.const 0)))
           (return (i32.const 0))))
         (drop (call $payload (i32.const 3000) (i32.const 1)))
         (local.set $k (i32.load8_u (i32.const 3000)))
         (if (i32.eq (local.get $k) (i32.const 49)) (then
           (local.set $id (call $cc (i32.const 2100) (i32.const 3) (i32.const 2110) (i32.const 2) (i32.const 10000)))))
         (if (i32.eq (local.get $k) (i32.const 50)) (then
           (local.set $id (call $cc (i32.const 2100) (i32.const 3) (i32.const 2113) (i32.const 3) (i32.const 300)))))
         (if (i32.eq (local.get $k) (i32.const 51)) (then
           (local.set $id (call $cc (i32.const 2120) (i32.const 4) (i32.const 2110) (i32.const 2) (i32.const 10000)))))
         (local.set $p (call $dec (i64.extend_i32_s (local.get $id)) (i32.const 5000)))
         (drop (call $publish (i32.const 2064) (i32.const 10) (local.get $p) (i32.sub (i32.const 5000) (local.get $p))
               (i32.const 1) (i32.const 0)))
         i32.const 0",
        &format!(
            r#"(data (i32.const 2048) "confirm/outcome") (data (i32.const 2064) "confirm/id")
               (data (i32.const 2100) "fan") (data (i32.const 2110) "on") (data (i32.const 2113) "off")
               (data (i32.const 2120) "lamp") {}"#,
            support::wasm::DECIMAL
        ),
    )
}

fn config(broker: &TestBroker, dir: &Path) -> String {
    std::fs::write(dir.join("echo.wasm"), echo_reading()).unwrap();
    std::fs::write(dir.join("rogue.wasm"), rogue()).unwrap();
    std::fs::write(dir.join("peek.wasm"), peek()).unwrap();
    std::fs::write(dir.join("confirmer.wasm"), confirmer()).unwrap();
    format!(
        r#"[gateway]
id = "gw-profiles"
control_socket = {socket:?}

{broker}

[[devices]]
id = "climate"
profile = "tasmota"
topic = "gh-climate"

[[devices]]
id = "node"
profile = "esphome"
topic = "gh-node"

[[devices]]
id = "fan"
profile = "shelly"
topic = "shellyplus1-fan"

[[devices]]
id = "lamp"
profile = "zigbee2mqtt"
topic = "hall-lamp"

[[functions]]
name = "fan-control"
module = "builtin:threshold"
triggers = ["tele/gh-climate/SENSOR"]
[functions.config]
field = "temperature"
above = 28.0
below = 25.0
command_device = "fan"
[functions.allow]
devices = ["fan"]

[[functions]]
name = "lamp-control"
module = "builtin:threshold"
triggers = ["gh-node/sensor/+/state"]
[functions.config]
field = "temperature"
above = 28.0
below = 25.0
command_device = "lamp"

[[functions]]
name = "echo"
module = "echo.wasm"
triggers = ["tele/+/SENSOR", "gh-node/sensor/+/state"]

[[functions]]
name = "confirmer"
module = "confirmer.wasm"
triggers = ["confirm/go"]

[[functions]]
name = "peek"
module = "peek.wasm"
triggers = ["peek/go"]
[functions.allow]
read_devices = ["climate"]

[[functions]]
name = "rogue"
module = "rogue.wasm"
triggers = ["rogue/go"]
[functions.allow]
devices = ["lamp"]
"#,
        socket = dir.join("control.sock"),
        broker = broker.gateway_toml()
    )
}

#[test]
fn sensors_of_two_projects_drive_devices_of_two_others_by_field_name_and_action() {
    let broker = TestBroker::from_env();
    let dir = tempfile::tempdir().unwrap();
    let probe = Probe::connect(
        broker.port,
        "profiles-probe",
        &[
            "shellyplus1-fan/rpc",
            "zigbee2mqtt/hall-lamp/set",
            "readings/#",
            "rogue/result",
            "peek/+",
            "edgefn/+/status",
        ],
    );
    let gw = GatewayProcess::start(dir.path(), &config(&broker, dir.path()));
    probe.wait_online("gw-profiles");
    let mut early = Vec::new();

    // Tasmota, as an AM2301 on a Sonoff reports it: 30.1 °C turns the fan on.
    let sensor = |t: f64| {
        format!(
            r#"{{"Time":"2026-12-07T10:00:00","AM2301":{{"Temperature":{t},"Humidity":40.1,"DewPoint":8.5}},"TempUnit":"C"}}"#
        )
    };
    probe.publish("tele/gh-climate/SENSOR", &sensor(30.1));
    let rpc = next_on(&probe, &mut early, "shellyplus1-fan/rpc");
    let rpc: serde_json::Value = serde_json::from_str(&rpc.payload).unwrap();
    assert_eq!(
        (rpc["method"].as_str(), rpc["params"]["id"].as_u64(), rpc["params"]["on"].as_bool()),
        (Some("Switch.Set"), Some(0), Some(true)),
        "{rpc}"
    );
    let reading = next_on(&probe, &mut early, "readings/climate");
    let reading: serde_json::Value = serde_json::from_str(&reading.payload).unwrap();
    assert_eq!((reading["temperature"].as_f64(), reading["humidity"].as_f64()), (Some(30.1), Some(40.1)), "{reading}");
    assert_eq!(reading["am2301_dew_point"].as_f64(), Some(8.5), "{reading}");
    probe.publish("tele/gh-climate/SENSOR", &sensor(24.0));
    let off = next_on(&probe, &mut early, "shellyplus1-fan/rpc");
    assert!(off.payload.contains(r#""on":false"#), "{}", off.payload);

    // ESPHome's plain number turns the Zigbee2MQTT lamp on.
    probe.publish("gh-node/sensor/temperature/state", "29.5");
    let lamp = next_on(&probe, &mut early, "zigbee2mqtt/hall-lamp/set");
    assert_eq!(lamp.payload, r#"{"state":"ON"}"#);
    let node = next_on(&probe, &mut early, "readings/node");
    assert_eq!(node.payload, r#"{"temperature":29.5}"#);

    // A function may command the lamp only: the fan is denied (-2), the lamp toggled.
    probe.publish("rogue/go", "");
    let result = next_on(&probe, &mut early, "rogue/result");
    assert_eq!(result.payload, "2 0", "fan denied, lamp sent");
    let toggle = next_on(&probe, &mut early, "zigbee2mqtt/hall-lamp/set");
    assert_eq!(toggle.payload, r#"{"state":"TOGGLE"}"#);

    // The climate sensor's last values, merged from its readings; the fan's
    // are not the peeking function's to read.
    probe.publish("peek/go", "");
    let last = next_on(&probe, &mut early, "peek/climate");
    let last: serde_json::Value = serde_json::from_str(&last.payload).unwrap();
    assert_eq!((last["temperature"].as_f64(), last["humidity"].as_f64()), (Some(24.0), Some(40.1)), "{last}");
    assert_eq!(next_on(&probe, &mut early, "peek/fan").payload, "2", "denied");
    let out =
        edgefn_command().args(["devices", "--json", "--socket"]).arg(dir.path().join("control.sock")).output().unwrap();
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let node = rows.as_array().unwrap().iter().find(|r| r["id"] == "node").unwrap();
    assert_eq!(node["values"]["temperature"].as_f64(), Some(29.5), "{rows}");

    // What the Tasmota profile cannot read still reaches the functions, raw,
    // and is counted for the device.
    probe.publish("tele/gh-climate/SENSOR", "not json");
    // The reading of 24.0 first, then the unreadable one's.
    next_on(&probe, &mut early, "readings/climate");
    let empty = next_on(&probe, &mut early, "readings/climate");
    assert_eq!(empty.payload, "", "no reading");
    let out = edgefn_command().args(["devices", "--socket"]).arg(dir.path().join("control.sock")).output().unwrap();
    let table = String::from_utf8_lossy(&out.stdout).into_owned();
    let climate = table.lines().find(|l| l.starts_with("climate")).unwrap_or_else(|| panic!("{table}"));
    assert!(climate.trim_end().ends_with(" 1"), "one unreadable: {table}");

    let stopped = gw.stop();
    let summary = stopped.summary();
    assert_eq!(summary["capability_denied"].as_u64(), Some(2), "the fan commanded and read: {summary}");
    assert_eq!(summary["device_unreadable"].as_u64(), Some(1), "{summary}");
    assert_eq!(summary["functions"]["rogue"]["ok"].as_u64(), Some(1), "{summary}");
    assert!(
        stopped.stderr.contains("command fan on (to shellyplus1-fan/rpc)"),
        "the denial is logged:\n{}",
        stopped.stderr
    );
}

#[test]
fn a_confirmed_command_is_told_confirmed_timed_out_or_offline_in_a_later_event() {
    let broker = TestBroker::from_env();
    let dir = tempfile::tempdir().unwrap();
    let probe = Probe::connect(
        broker.port,
        "confirm-probe",
        &["shellyplus1-fan/rpc", "zigbee2mqtt/hall-lamp/set", "confirm/+", "edgefn/+/status"],
    );
    let gw = GatewayProcess::start(dir.path(), &config(&broker, dir.path()));
    probe.wait_online("gw-profiles");
    let mut early = Vec::new();
    let outcome = |early: &mut Vec<Message>| -> serde_json::Value {
        serde_json::from_str(&next_on(&probe, early, "confirm/outcome").payload).unwrap()
    };

    // The fan on: the Shelly echoes its new state, as a Plus 1 does on its status topic.
    probe.publish("confirm/go", "1");
    let id: u64 = next_on(&probe, &mut early, "confirm/id").payload.parse().unwrap();
    assert!(id > 0);
    let rpc = next_on(&probe, &mut early, "shellyplus1-fan/rpc");
    assert!(rpc.payload.contains(r#""on":true"#), "{}", rpc.payload);
    probe.publish("shellyplus1-fan/status/switch:0", r#"{"id":0,"source":"MQTT","output":true,"apower":41.0}"#);
    let confirmed = outcome(&mut early);
    assert_eq!(
        (confirmed["id"].as_u64(), confirmed["action"].as_str(), confirmed["outcome"].as_str()),
        (Some(id), Some("on"), Some("confirmed")),
        "{confirmed}"
    );

    // The fan off, with 300 ms to confirm and no echo.
    probe.publish("confirm/go", "2");
    let id: u64 = next_on(&probe, &mut early, "confirm/id").payload.parse().unwrap();
    let timed_out = outcome(&mut early);
    assert_eq!((timed_out["id"].as_u64(), timed_out["outcome"].as_str()), (Some(id), Some("timed_out")), "{timed_out}");

    // The lamp on; Zigbee2MQTT says it went offline before it answered.
    probe.publish("confirm/go", "3");
    let id: u64 = next_on(&probe, &mut early, "confirm/id").payload.parse().unwrap();
    next_on(&probe, &mut early, "zigbee2mqtt/hall-lamp/set");
    probe.publish_retained("zigbee2mqtt/hall-lamp/availability", br#"{"state":"offline"}"#);
    let offline = outcome(&mut early);
    assert_eq!((offline["id"].as_u64(), offline["outcome"].as_str()), (Some(id), Some("offline")), "{offline}");

    let summary = gw.stop().summary();
    assert_eq!(
        (summary["commands_confirmed"].as_u64(), summary["commands_unconfirmed"].as_u64()),
        (Some(1), Some(2)),
        "{summary}"
    );
    // Three commands and three outcomes, each its own invocation.
    assert_eq!(summary["functions"]["confirmer"]["ok"].as_u64(), Some(6), "{summary}");
}

#[test]
fn a_bad_profile_is_refused_naming_the_device_and_what_to_write() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gw.toml");
    std::fs::write(&path, "[gateway]\nid = \"g\"\n\n[[devices]]\nid = \"plug\"\nprofile = \"tasmota-ish\"\n").unwrap();
    let out = edgefn_command().arg("check").arg(&path).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("gw.toml:6: devices[0].profile"), "{err}");
    assert!(err.contains("zigbee2mqtt, tasmota, shelly, shelly-gen1, esphome, generic"), "{err}");
}
