//! The examples in `functions/examples` run from their configurations in
//! `device-configs/examples`, as shipped but for where the brokers are, against
//! Mosquitto with simulated devices that speak their projects' formats.

mod support;

use std::path::{Path, PathBuf};

use support::broker::TestBroker;
use support::gateway::GatewayProcess;
use support::probe::{Message, Probe};

/// Whether the wasm32 target is here: the README's first commands do without
/// it; `.ci/run` adds it and sets EDGEFN_REQUIRE_WASM32, and then it must be.
fn wasm32() -> bool {
    if support::rust_target_installed("wasm32-unknown-unknown") {
        return true;
    }
    assert!(std::env::var_os("EDGEFN_REQUIRE_WASM32").is_none(), "the wasm32-unknown-unknown target is missing");
    eprintln!("SKIPPED: the wasm32-unknown-unknown target is not installed; .ci/run adds it and runs this test");
    false
}

/// Builds the example crate `name` for wasm32, as its configuration's comment says.
fn build(name: &str) -> PathBuf {
    let artifact = name.replace('-', "_");
    let functions = support::repo_root().join("functions");
    let built = std::process::Command::new("cargo")
        .args(["build", "--release", "--quiet", "-p", name, "--target", "wasm32-unknown-unknown"])
        .current_dir(&functions)
        .output()
        .unwrap();
    assert!(built.status.success(), "building {name}: {}", String::from_utf8_lossy(&built.stderr));
    functions.join(format!("target/wasm32-unknown-unknown/release/{artifact}.wasm"))
}

/// A site as the configuration's comment lays it out: `dir/gateway.toml` (the
/// shipped file with the test's brokers and a control socket of its own, and
/// `changes` made: timings only) and the example `package`, built, in `dir/functions`.
fn site(
    file: &str,
    package: &str,
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
    let module = build(package);
    std::fs::copy(&module, dir.path().join("functions").join(module.file_name().unwrap())).unwrap();
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
    if !wasm32() {
        return;
    }
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

#[test]
#[cfg_attr(edgefn_missing_mosquitto, ignore = "needs mosquitto: apt-get install mosquitto (bash .ci/run runs it)")]
#[cfg_attr(
    edgefn_missing_wasm32_unknown_unknown,
    ignore = "needs the wasm32-unknown-unknown target (bash .ci/run adds it)"
)]
fn the_hall_light_follows_occupancy_in_the_dark_and_a_light_switched_on_by_hand_is_left_alone() {
    if !wasm32() {
        return;
    }
    let broker = TestBroker::mosquitto();
    let dir = site("occupancy-lighting.toml", "occupancy-lighting", &broker, None, &[]);
    // One connection for both devices, so the gateway hears them in the order written.
    let devices = Probe::connect(broker.port, "devices", &["shellyplus1-hall/rpc", "edgefn/+/status"]);
    let motion = |occupancy: bool, lux: u32| {
        let m = format!(
            r#"{{"battery":100,"illuminance":{lux},"illuminance_lux":{lux},"linkquality":90,"occupancy":{occupancy}}}"#
        );
        devices.publish("zigbee2mqtt/hall-motion", &m);
    };
    // The Shelly's switch status, as a Plus 1 publishes it after any change.
    let status = |on: bool| {
        let s = format!(r#"{{"id":0,"source":"button","output":{on},"temperature":{{"tC":41.2,"tF":106.2}}}}"#);
        devices.publish("shellyplus1-hall/status/switch:0", &s);
    };
    // Each Switch.Set the Shelly receives, answered with its new status.
    let switched = || -> bool {
        let (_, rpc) = devices.wait_for("a Switch.Set", |m| m.topic == "shellyplus1-hall/rpc");
        let rpc: serde_json::Value = serde_json::from_str(&rpc.payload).unwrap();
        assert_eq!((rpc["method"].as_str(), rpc["params"]["id"].as_u64()), (Some("Switch.Set"), Some(0)), "{rpc}");
        let on = rpc["params"]["on"].as_bool().unwrap();
        status(on);
        on
    };
    let gateway = start(dir.path());
    devices.wait_online("hall-1");
    // Each step waits for the function's word on the one before: it reads
    // the light's state when it runs, which must be the state of that step.
    status(false);
    motion(true, 500);
    gateway.wait_for_log("bright enough", |l| l.contains("hall-light left off: 500 lx is bright enough"));
    motion(true, 12);
    assert!(switched(), "someone in the dark hall: on");
    gateway.wait_for_log("on", |l| l.contains("hall-light on: someone there at 12 lx"));
    motion(false, 80);
    assert!(!switched(), "nobody there: off");
    gateway.wait_for_log("off", |l| l.contains("hall-light off: nobody there"));

    // Someone switches it on by hand: theirs, neither commanded on nor off.
    status(true);
    motion(true, 10);
    gateway.wait_for_log("theirs", |l| l.contains("hall-light left alone: switched on by hand"));
    motion(false, 10);
    // And off by hand: from now on the function's again.
    status(false);
    motion(true, 10);
    assert!(switched(), "on, the function's again");

    let summary = gateway.stop().summary();
    assert_eq!(summary["commands_out"].as_u64(), Some(3), "on, off, on: {summary}");
    assert_eq!(summary["functions"]["hall-lighting"]["ok"].as_u64(), Some(6), "{summary}");
}

#[test]
#[cfg_attr(edgefn_missing_mosquitto, ignore = "needs mosquitto: apt-get install mosquitto (bash .ci/run runs it)")]
#[cfg_attr(
    edgefn_missing_wasm32_unknown_unknown,
    ignore = "needs the wasm32-unknown-unknown target (bash .ci/run adds it)"
)]
fn plugs_energy_is_summarised_on_schedule_and_announced_to_home_assistant() {
    if !wasm32() {
        return;
    }
    let broker = TestBroker::mosquitto();
    // The hourly schedule, every second here.
    let dir = site(
        "energy-summary.toml",
        "energy-summary",
        &broker,
        None,
        &[("{ cron = \"0 * * * *\" }", "{ every = \"1s\" }")],
    );
    let probe = Probe::connect(broker.port, "probe", &["energy/+/summary", "homeassistant/#", "edgefn/+/status"]);
    let gateway = start(dir.path());
    probe.wait_online("utility-1");
    let (_, announced) = probe.wait_for("the washer's announcement", |m| {
        m.topic == "homeassistant/sensor/edgefn_utility_1/washer_energy_last_hour/config"
    });
    let announced: serde_json::Value = serde_json::from_str(&announced.payload).unwrap();
    assert_eq!(
        (
            announced["state_topic"].as_str(),
            announced["value_template"].as_str(),
            announced["unit_of_measurement"].as_str()
        ),
        (Some("energy/washer-plug/summary"), Some("{{ value_json['kwh'] }}"), Some("kWh")),
        "{announced}"
    );

    // Tasmota's SENSOR telemetry, as a Sonoff POW R2 sends it every TelePeriod.
    let sensor = |total: f64, power: u32| {
        format!(
            r#"{{"Time":"2026-12-07T17:00:00","ENERGY":{{"TotalStartTime":"2026-01-02T10:11:12","Total":{total},"Yesterday":1.201,"Today":0.412,"Period":3,"Power":{power},"ApparentPower":{power},"ReactivePower":0,"Factor":1.00,"Voltage":231,"Current":1.234}}}}"#
        )
    };
    probe.publish("tele/washer-plug/SENSOR", &sensor(12.345, 5));
    probe.publish("tele/washer-plug/SENSOR", &sensor(12.595, 1500));
    probe.publish("tele/dryer-plug/SENSOR", &sensor(3.0, 2100));
    // The schedule may fall between two readings: the summaries add up.
    let (mut kwh, mut max_w, mut readings, mut dryer) = (0.0, 0.0f64, 0, None);
    while readings < 2 || dryer.is_none() {
        let (_, m) = probe.wait_for("the plugs' summaries", |m| m.topic.starts_with("energy/"));
        let s: serde_json::Value = serde_json::from_str(&m.payload).unwrap();
        assert!(s["to_ms"].as_i64() >= s["from_ms"].as_i64(), "{s}");
        match m.topic.as_str() {
            "energy/washer-plug/summary" => {
                assert_eq!(s["device"], "washer-plug", "{s}");
                kwh += s["kwh"].as_f64().unwrap();
                max_w = max_w.max(s["max_w"].as_f64().unwrap());
                readings += s["readings"].as_u64().unwrap();
            }
            "energy/dryer-plug/summary" => dryer = Some(s),
            other => panic!("a summary on {other}"),
        }
    }
    assert_eq!((readings, max_w), (2, 1500.0));
    assert!((kwh - 0.25).abs() < 1e-9, "{kwh}");
    let dryer = dryer.unwrap();
    assert_eq!(
        (dryer["readings"].as_u64(), dryer["max_w"].as_f64(), dryer["kwh"].as_f64()),
        (Some(1), Some(2100.0), Some(0.0)),
        "{dryer}"
    );
    let summary = gateway.stop().summary();
    assert_eq!(summary["functions"]["energy-summary"]["failed"].as_u64().unwrap_or(0), 0, "{summary}");
}

/// An uplink as The Things Stack v3 publishes it, heard by `gateways` LoRa
/// gateways (each adds its `rx_metadata` entry: ~200 bytes).
fn ttn_uplink(device: &str, f_cnt: u32, gateways: usize) -> String {
    let heard: Vec<String> = (0..gateways)
        .map(|g| {
            format!(
                r#"{{"gateway_ids":{{"gateway_id":"gw-{g:04}","eui":"B827EBFFFE{g:06X}"}},"time":"2026-12-07T10:00:00.1Z","timestamp":{ts},"rssi":-{rssi},"channel_rssi":-{rssi},"snr":{snr}.5,"location":{{"latitude":52.1,"longitude":4.4,"source":"SOURCE_REGISTRY"}},"uplink_token":"ChIKEAoOZ3ctMDAwMRIIuCfr"}}"#,
                ts = 1_000_000 + g,
                rssi = 60 + g % 50,
                snr = g % 12
            )
        })
        .collect();
    format!(
        r#"{{"end_device_ids":{{"device_id":"{device}","application_ids":{{"application_id":"greenhouse"}},"dev_eui":"70B3D57ED005B1A2","dev_addr":"260B1234"}},"correlation_ids":["as:up:01HABC"],"received_at":"2026-12-07T10:00:00.123Z","uplink_message":{{"session_key_id":"AYa1b2","f_port":2,"f_cnt":{f_cnt},"frm_payload":"CE0pHw==","decoded_payload":{{"battery":3.1,"moisture":41,"temperature":21.3}},"rx_metadata":[{}],"settings":{{"data_rate":{{"lora":{{"bandwidth":125000,"spreading_factor":7,"coding_rate":"4/5"}}}},"frequency":"868100000"}},"received_at":"2026-12-07T10:00:00.120Z","consumed_airtime":"0.056576s"}}}}"#,
        heard.join(",")
    )
}

#[test]
#[cfg_attr(edgefn_missing_mosquitto, ignore = "needs mosquitto: apt-get install mosquitto (bash .ci/run runs it)")]
#[cfg_attr(
    edgefn_missing_wasm32_unknown_unknown,
    ignore = "needs the wasm32-unknown-unknown target (bash .ci/run adds it)"
)]
fn a_64_kb_lorawan_uplink_is_read_whole_into_a_reading_by_either_reader() {
    if !wasm32() {
        return;
    }
    let broker = TestBroker::mosquitto();
    let dir = site("ttn-uplink.toml", "ttn-uplink", &broker, None, &[]);
    let probe = Probe::connect(broker.port, "probe", &["ttn/+/reading", "edgefn/+/status"]);
    let gateway = start(dir.path());
    probe.wait_online("lora-1");
    let big = ttn_uplink("soil-7", 1234, 300);
    assert!(big.len() > 64 * 1024, "{} bytes", big.len());
    let expected = r#"{"device":"soil-7","f_cnt":1234,"temperature":21.3,"moisture":41,"battery":3.1}"#;
    probe.publish("v3/greenhouse@ttn/devices/soil-7/up", &big);
    let (_, reading) = probe.wait_for("the reading", |m| m.topic == "ttn/soil-7/reading");
    assert_eq!(reading.payload, expected);
    let small = ttn_uplink("soil-8", 7, 1);
    probe.publish("v3/greenhouse@ttn/devices/soil-8/up", &small);
    let (_, reading) = probe.wait_for("the small one's reading", |m| m.topic == "ttn/soil-8/reading");
    assert!(reading.payload.starts_with(r#"{"device":"soil-8","f_cnt":7,"#), "{}", reading.payload);
    let summary = gateway.stop().summary();
    assert_eq!(summary["functions"]["ttn-uplink"]["ok"].as_u64(), Some(2), "{summary}");

    // The serde reader reads the same 64 KB uplink alike.
    let file = dir.path().join("big.json");
    std::fs::write(&file, &big).unwrap();
    let module = dir.path().join("functions/ttn_uplink.wasm");
    let out = support::gateway::edgefn_command()
        .args([
            "invoke",
            "--set",
            "reader=serde",
            "--fuel",
            "30000000",
            "--topic",
            "v3/greenhouse@ttn/devices/soil-7/up",
        ])
        .arg("--module")
        .arg(&module)
        .arg("--payload-file")
        .arg(&file)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{said}{}", String::from_utf8_lossy(&out.stderr));
    assert!(said.contains(&format!("publish  ttn/soil-7/reading qos=1 retain=false {expected}")), "{said}");
}
