//! Device availability, against the real gateway process and a real broker,
//! with simulated devices speaking their projects' formats:
//! - a Tasmota plug: retained `Online` on `tele/<t>/LWT`, its last will
//!   `Offline`, telemetry on `tele/<t>/SENSOR`; it reaches the broker through
//!   a proxy, so cutting the proxy drops it as a power cut would;
//! - a Zigbee2MQTT water-leak sensor: JSON availability (`{"state":"offline"}`)
//!   published by the bridge;
//! - a sensor with no availability topic, offline after 1 s of silence.
//!
//! A function triggered by `{ availability = "*" }` publishes every change it
//! is given; `edgefn devices` shows each device's state and last seen. Against
//! Mosquitto, the broker also restarts (forgetting everything): the gateway's
//! own retained status is back right after, and a device that keeps talking
//! is not taken for offline while the gateway heard nothing.

mod support;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{Client, Event, LastWill, MqttOptions, Packet, QoS};
use support::broker::TestBroker;
use support::gateway::{edgefn_command, GatewayProcess};
use support::probe::Probe;
use support::proxy::Proxy;
use support::wasm::module;

/// Publishes `"<kind> <payload>"` to `seen/<device>` at QoS 1 for every event.
fn watcher() -> Vec<u8> {
    module(
        r#"(import "edgefn" "event_kind" (func $kind (result i32)))
           (import "edgefn" "event_device" (func $device (param i32 i32) (result i32)))
           (import "edgefn" "event_payload" (func $payload (param i32 i32) (result i32)))
           (import "edgefn" "publish" (func $publish (param i32 i32 i32 i32 i32 i32) (result i32)))"#,
        "(local $d i32) (local $p i32)
         (local.set $d (call $device (i32.const 2053) (i32.const 200)))
         (i32.store8 (i32.const 3000) (i32.add (i32.const 48) (call $kind)))
         (i32.store8 (i32.const 3001) (i32.const 32))
         (local.set $p (call $payload (i32.const 3002) (i32.const 1000)))
         (drop (call $publish (i32.const 2048) (i32.add (i32.const 5) (local.get $d))
               (i32.const 3000) (i32.add (i32.const 2) (local.get $p)) (i32.const 1) (i32.const 0)))
         i32.const 0",
        r#"(data (i32.const 2048) "seen/")"#,
    )
}

/// A Tasmota device: connects with its last will, announces itself `Online`
/// (retained) on every connect, as Tasmota does.
struct Tasmota {
    client: Client,
    done: Arc<AtomicBool>,
}

impl Tasmota {
    fn connect(port: u16, topic: &str) -> Tasmota {
        let lwt = format!("tele/{topic}/LWT");
        let mut options = MqttOptions::new(format!("tasmota-{topic}"), "127.0.0.1", port);
        options.set_keep_alive(Duration::from_secs(5)).set_last_will(LastWill::new(
            &lwt,
            "Offline",
            QoS::AtLeastOnce,
            true,
        ));
        let (client, mut connection) = Client::new(options, 100);
        let (announcer, done) = (client.clone(), Arc::new(AtomicBool::new(false)));
        let stop = done.clone();
        std::thread::spawn(move || {
            for event in connection.iter() {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                match event {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        announcer.try_publish(&lwt, QoS::AtLeastOnce, true, "Online").unwrap();
                    }
                    Ok(_) => {}
                    // Refused while the proxy is cut: paces the reconnects.
                    Err(_) => std::thread::sleep(Duration::from_millis(50)),
                }
            }
        });
        Tasmota { client, done }
    }

    fn telemetry(&self, topic: &str) {
        let payload = r#"{"Time":"2026-12-07T10:00:00","ENERGY":{"Power":41,"Voltage":231}}"#;
        self.client.publish(format!("tele/{topic}/SENSOR"), QoS::AtLeastOnce, false, payload).unwrap();
    }
}

impl Drop for Tasmota {
    fn drop(&mut self) {
        self.done.store(true, Ordering::SeqCst);
        let _ = self.client.try_disconnect();
    }
}

fn config(broker: &TestBroker, dir: &Path, socket: &Path, sensor_offline_after: &str) -> String {
    std::fs::write(dir.join("watch.wasm"), watcher()).unwrap();
    format!(
        "[gateway]\nid = \"gw-avail\"\ncontrol_socket = {socket:?}\n\n{}\n\
         [[devices]]\nid = \"plug\"\ntelemetry = [\"tele/plug/SENSOR\"]\ncommand_topic = \"cmnd/plug/POWER\"\n\
         availability = \"tele/plug/LWT\"\n\n\
         [[devices]]\nid = \"leak\"\ntelemetry = [\"zigbee2mqtt/leak\"]\navailability = \"zigbee2mqtt/leak/availability\"\n\n\
         [[devices]]\nid = \"sensor\"\ntelemetry = [\"sensors/sensor/reading\"]\noffline_after = \"{sensor_offline_after}\"\n\n\
         [[functions]]\nname = \"watch\"\nmodule = \"watch.wasm\"\ntriggers = [{{ availability = \"*\" }}]\n",
        broker.gateway_toml()
    )
}

/// `edgefn devices`, as a table: (id, state, messages) per line (the ages
/// between are one word or two).
fn devices(socket: &Path) -> Vec<(String, String, u64)> {
    let out = edgefn_command().args(["devices", "--socket"]).arg(socket).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let mut lines = text.lines();
    assert!(lines.next().unwrap().starts_with("ID"), "{text}");
    lines
        .map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            (cols[0].to_owned(), cols[1].to_owned(), cols[cols.len() - 2].parse().unwrap())
        })
        .collect()
}

fn state_of(socket: &Path, id: &str) -> String {
    devices(socket).into_iter().find(|(d, ..)| d == id).map(|(_, s, _)| s).unwrap()
}

#[test]
fn devices_going_offline_and_online_are_events_and_edgefn_devices_shows_them() {
    let broker = TestBroker::from_env();
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("control.sock");
    let probe = Probe::connect(broker.port, "avail-probe", &["seen/#", "edgefn/+/status"]);
    let gw = GatewayProcess::start(dir.path(), &config(&broker, dir.path(), &socket, "1s"));
    probe.wait_online("gw-avail");

    // The Tasmota plug, through a proxy: its retained Online is a change from unknown.
    let proxy = Proxy::start(broker.port);
    let plug = Tasmota::connect(proxy.port, "plug");
    probe.wait_for("the plug online", |m| m.topic == "seen/plug" && m.payload == "3 online");
    plug.telemetry("plug");

    // The Zigbee2MQTT bridge says the leak sensor is offline, in its JSON form.
    probe.publish_retained("zigbee2mqtt/leak/availability", br#"{"state":"offline"}"#);
    probe.wait_for("the leak sensor offline", |m| m.topic == "seen/leak" && m.payload == "3 offline");

    // The sensor with no availability topic: online with its first reading,
    // offline after a second of silence, back with its next reading.
    probe.publish("sensors/sensor/reading", r#"{"temperature":21.5}"#);
    probe.wait_for("the sensor online", |m| m.topic == "seen/sensor" && m.payload == "3 online");
    probe.wait_for("the sensor offline after its silence", |m| m.topic == "seen/sensor" && m.payload == "3 offline");
    assert_eq!(state_of(&socket, "sensor"), "offline");
    probe.publish("sensors/sensor/reading", r#"{"temperature":21.6}"#);
    probe.wait_for("the sensor back", |m| m.topic == "seen/sensor" && m.payload == "3 online");

    // The plug loses its connection as in a power cut: the broker sends its will.
    proxy.cut();
    let (before, _) =
        probe.wait_for("the plug offline by its will", |m| m.topic == "seen/plug" && m.payload == "3 offline");
    assert!(!before.iter().any(|m| m.topic == "seen/plug"), "no other plug event first: {before:?}");
    assert_eq!(state_of(&socket, "plug"), "offline");
    proxy.restore();
    probe.wait_for("the plug back online", |m| m.topic == "seen/plug" && m.payload == "3 online");

    let rows = devices(&socket);
    let row = |id: &str| rows.iter().find(|(d, ..)| d == id).cloned().unwrap();
    assert_eq!(row("plug").1, "online", "{rows:?}");
    assert_eq!(row("leak").1, "offline", "{rows:?}");
    assert_eq!(row("sensor").1, "online", "{rows:?}");
    // The plug: Online, its reading, Offline (its will), Online again.
    assert!(row("plug").2 >= 4, "{rows:?}");
    drop(plug);

    let stopped = gw.stop();
    let summary = stopped.summary();
    // plug online, offline, online; leak offline; sensor online, offline, online.
    assert_eq!(summary["device_changes"].as_u64(), Some(7), "{summary}");
    assert_eq!(summary["functions"]["watch"]["ok"].as_u64(), Some(7), "{summary}");
    assert!(summary["device_messages"].as_u64().unwrap() >= 6, "{summary}");
}

#[test]
#[cfg_attr(edgefn_missing_mosquitto, ignore = "needs mosquitto: apt-get install mosquitto (bash .ci/run runs it)")]
fn after_a_broker_restart_the_gateway_is_online_again_and_a_device_that_kept_talking_never_went_offline() {
    // The broker must restart on its own: Mosquitto, whatever EDGEFN_TEST_BROKER says.
    let mut broker = TestBroker::mosquitto();
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("control.sock");
    let probe = Probe::connect(broker.port, "restart-probe", &["seen/#", "edgefn/+/status"]);
    let gw = GatewayProcess::start(dir.path(), &config(&broker, dir.path(), &socket, "2s"));
    probe.wait_online("gw-avail");

    // The sensor reports every 100 ms whenever the broker is there (its client reconnects).
    let talking = Arc::new(AtomicBool::new(true));
    let sensor = {
        let (talking, port) = (talking.clone(), broker.port);
        std::thread::spawn(move || {
            let device = Probe::connect(port, "chatty-sensor", &[]);
            while talking.load(Ordering::SeqCst) {
                device.publish_qos0("sensors/sensor/reading", r#"{"temperature":20.1}"#);
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    probe.wait_for("the sensor online", |m| m.topic == "seen/sensor" && m.payload == "3 online");

    // The broker goes away for longer than the sensor's offline_after: the
    // gateway hears nothing, and that silence is not the sensor's.
    broker.stop_mosquitto();
    gw.wait_for_log("the intake connection lost", |l| l.contains("MQTT connection failed") && l.contains("intake"));
    std::thread::sleep(Duration::from_millis(2_500));
    broker.start_mosquitto();
    // A new subscriber after the restart sees the gateway's retained status:
    // the broker forgot everything, so the gateway must have published it again.
    let after = Probe::connect(broker.port, "after-restart", &["edgefn/gw-avail/status"]);
    after.wait_online("gw-avail");
    // The gateway hears the sensor again for longer than its offline_after
    // (40 readings, about 4 s): an offline decided while the broker was away,
    // or counted from before it, would have been published by now.
    let sensor_messages = |socket: &Path| devices(socket).into_iter().find(|(d, ..)| d == "sensor").unwrap().2;
    let back_at = sensor_messages(&socket);
    let deadline = std::time::Instant::now() + support::probe::WAIT;
    while sensor_messages(&socket) < back_at + 40 {
        assert!(std::time::Instant::now() < deadline, "the sensor's readings stopped reaching the gateway");
        std::thread::sleep(Duration::from_millis(100));
    }
    talking.store(false, Ordering::SeqCst);
    sensor.join().unwrap();
    assert_eq!(state_of(&socket, "sensor"), "online");

    let stopped = gw.stop();
    let summary = stopped.summary();
    // The sensor's first reading and nothing more: the restart was no change.
    assert_eq!(summary["functions"]["watch"]["ok"].as_u64(), Some(1), "{summary}");
    assert_eq!(summary["device_changes"].as_u64(), Some(1), "{summary}");
    drop((probe, after));
}
