//! Home Assistant MQTT discovery, against the real gateway process and a real
//! broker: a simulated Zigbee2MQTT announces a climate sensor and a lamp,
//! retained, as Zigbee2MQTT does; with no `[[devices]]` at all, the built-in
//! `threshold` reads the sensor's temperature by name and commands the lamp by
//! name, `edgefn devices` lists both with their last values and availability,
//! an empty announcement removes the lamp, and a value a function publishes is
//! announced to Home Assistant as an entity of the gateway's own device. A
//! function watching every device's availability hears the discovered ones.

mod support;

use std::path::Path;

use support::broker::TestBroker;
use support::gateway::{edgefn_command, GatewayProcess};
use support::probe::Probe;
use support::wasm::module;

/// Publishes an availability change's payload to `avail/<device>`.
fn watcher() -> Vec<u8> {
    module(
        r#"(import "edgefn" "event_device" (func $device (param i32 i32) (result i32)))
           (import "edgefn" "event_payload" (func $payload (param i32 i32) (result i32)))
           (import "edgefn" "publish" (func $publish (param i32 i32 i32 i32 i32 i32) (result i32)))"#,
        "(local $d i32)
         (local.set $d (call $device (i32.const 2054) (i32.const 200)))
         (drop (call $publish (i32.const 2048) (i32.add (i32.const 6) (local.get $d))
               (i32.const 4096) (call $payload (i32.const 4096) (i32.const 64)) (i32.const 1) (i32.const 0)))
         i32.const 0",
        r#"(data (i32.const 2048) "avail/")"#,
    )
}

const SENSOR_TEMPERATURE: &str = "homeassistant/sensor/0x00158d0001a2b3c4/temperature/config";
const SENSOR_OCCUPANCY: &str = "homeassistant/binary_sensor/0x00158d0001a2b3c4/occupancy/config";
const LAMP: &str = "homeassistant/light/0x000b57fffe1d2e3f/light/config";

/// What Zigbee2MQTT announces for an Aqara sensor's temperature and
/// occupancy and an IKEA bulb (trimmed of keys the gateway does not read).
fn announcements() -> [(&'static str, String); 3] {
    let availability =
        r#""availability":[{"topic":"zigbee2mqtt/bridge/state","value_template":"{{ value_json.state }}"}]"#;
    let sensor = r#""device":{"identifiers":["zigbee2mqtt_0x00158d0001a2b3c4"],"manufacturer":"Aqara","model":"RTCGQ11LM","name":"Greenhouse Sensor"}"#;
    [
        (
            SENSOR_TEMPERATURE,
            format!(
                r#"{{{availability},{sensor},"device_class":"temperature","state_class":"measurement","state_topic":"zigbee2mqtt/Greenhouse Sensor","unique_id":"0x00158d0001a2b3c4_temperature_zigbee2mqtt","unit_of_measurement":"°C","value_template":"{{{{ value_json.temperature }}}}"}}"#
            ),
        ),
        (
            SENSOR_OCCUPANCY,
            format!(
                r#"{{{availability},{sensor},"device_class":"occupancy","payload_off":false,"payload_on":true,"state_topic":"zigbee2mqtt/Greenhouse Sensor","unique_id":"0x00158d0001a2b3c4_occupancy_zigbee2mqtt","value_template":"{{{{ value_json.occupancy }}}}"}}"#
            ),
        ),
        (
            LAMP,
            format!(
                r#"{{{availability},"brightness":true,"brightness_scale":254,"command_topic":"zigbee2mqtt/Desk Lamp/set","device":{{"identifiers":["zigbee2mqtt_0x000b57fffe1d2e3f"],"manufacturer":"IKEA","name":"Desk Lamp"}},"schema":"json","state_topic":"zigbee2mqtt/Desk Lamp","unique_id":"0x000b57fffe1d2e3f_light_zigbee2mqtt"}}"#
            ),
        ),
    ]
}

fn config(broker: &TestBroker, dir: &Path) -> String {
    std::fs::write(dir.join("watcher.wasm"), watcher()).unwrap();
    format!(
        r#"[gateway]
id = "gw-discovery"
control_socket = {socket:?}

{broker}

[homeassistant]

[[homeassistant.announce]]
name = "Greenhouse average"
topic = "greenhouse/summary"
field = "climate.average"
unit = "°C"
device_class = "temperature"

[[functions]]
name = "lamp-control"
module = "builtin:threshold"
triggers = ["zigbee2mqtt/Greenhouse Sensor"]
[functions.config]
field = "temperature"
above = 28.0
below = 25.0
command_device = "desk_lamp"

[[functions]]
name = "watcher"
module = "watcher.wasm"
triggers = [{{ availability = "*" }}]
"#,
        socket = dir.join("control.sock"),
        broker = broker.gateway_toml()
    )
}

/// `edgefn devices --json`, by id.
fn devices(dir: &Path) -> serde_json::Map<String, serde_json::Value> {
    let out = edgefn_command().args(["devices", "--json", "--socket"]).arg(dir.join("control.sock")).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    rows.as_array().unwrap().iter().map(|r| (r["id"].as_str().unwrap().to_owned(), r.clone())).collect()
}

// Retained announcements made before the gateway starts need a broker that
// runs before it: Mosquitto.
#[test]
#[cfg_attr(edgefn_missing_mosquitto, ignore = "needs mosquitto: apt-get install mosquitto (bash .ci/run runs it)")]
fn devices_announced_for_home_assistant_are_read_and_commanded_with_no_device_config() {
    let broker = TestBroker::mosquitto();
    let dir = tempfile::tempdir().unwrap();
    let probe = Probe::connect(
        broker.port,
        "discovery-probe",
        &["homeassistant/#", "zigbee2mqtt/Desk Lamp/set", "edgefn/+/status", "avail/+"],
    );
    // Zigbee2MQTT announced its devices, retained, before the gateway started.
    for (topic, payload) in announcements() {
        probe.publish_retained(topic, payload.as_bytes());
        probe.wait_for(topic, |m| m.topic == topic);
    }
    probe.publish_retained("zigbee2mqtt/bridge/state", br#"{"state":"online"}"#);
    let gw = GatewayProcess::start(dir.path(), &config(&broker, dir.path()));
    gw.wait_for_log("both devices discovered", |l| {
        l.contains("discovery prefix") && l.contains("desk_lamp") && l.contains("greenhouse_sensor")
    });
    probe.wait_online("gw-discovery");

    // The gateway's own value, announced as Home Assistant reads it.
    let (_, announced) = probe.wait_for("the gateway's announcement", |m| {
        m.topic == "homeassistant/sensor/edgefn_gw_discovery/greenhouse_average/config"
    });
    let announced: serde_json::Value = serde_json::from_str(&announced.payload).unwrap();
    assert_eq!(announced["state_topic"], "greenhouse/summary", "{announced}");
    assert_eq!(announced["value_template"], "{{ value_json['climate']['average'] }}", "{announced}");
    assert_eq!(announced["availability_topic"], "edgefn/gw-discovery/status", "{announced}");
    assert_eq!(announced["device"]["identifiers"][0], "edgefn_gw_discovery", "{announced}");

    // The sensor's temperature, read by the field name its announcement gives,
    // turns the lamp on through its announced command topic and schema.
    probe.publish("zigbee2mqtt/Greenhouse Sensor", r#"{"temperature":30.2,"occupancy":true,"linkquality":87}"#);
    let (_, on) = probe.wait_for("the lamp on", |m| m.topic == "zigbee2mqtt/Desk Lamp/set");
    assert_eq!(on.payload, r#"{"state":"ON"}"#);
    let rows = devices(dir.path());
    let sensor = &rows["greenhouse_sensor"];
    assert_eq!(sensor["values"]["temperature"].as_f64(), Some(30.2), "{sensor}");
    assert_eq!(sensor["values"]["occupancy"].as_bool(), Some(true), "{sensor}");
    assert_eq!(sensor["state"], "online", "Zigbee2MQTT's bridge said online: {sensor}");

    // Zigbee2MQTT's bridge going offline takes its devices with it, and a
    // function watching every device (`*`, with none configured) hears it.
    probe.publish_retained("zigbee2mqtt/bridge/state", br#"{"state":"offline"}"#);
    for device in ["desk_lamp", "greenhouse_sensor"] {
        let topic = format!("avail/{device}");
        probe.wait_for(&topic, |m| m.topic == topic && m.payload == "offline");
    }

    // A discovery message that is not JSON is counted, and nothing changes.
    probe.publish("homeassistant/sensor/broken/config", "{not json");
    // The lamp's announcement removed, as Zigbee2MQTT does when a device leaves.
    probe.publish_retained(LAMP, b"");
    gw.wait_for_log("the lamp gone", |l| l.contains("discovery prefix") && !l.contains("desk_lamp"));
    let rows = devices(dir.path());
    assert!(rows.contains_key("greenhouse_sensor") && !rows.contains_key("desk_lamp"), "{rows:?}");

    let stopped = gw.stop();
    let summary = stopped.summary();
    assert_eq!(summary["device_unreadable"].as_u64(), Some(1), "{summary}");
    assert_eq!(summary["functions"]["lamp-control"]["ok"].as_u64(), Some(1), "{summary}");
    assert!(stopped.stderr.contains("homeassistant/sensor/broken/config"), "the refusal is logged");
}
