//! Each profile against payloads as its project documents them.

use super::*;

fn profile(kind: Kind, name: &str) -> Profile {
    Profile { kind, name: name.into() }
}

fn read(p: &Profile, topic: &str, payload: &str) -> Reading {
    p.normalise(topic, payload.as_bytes()).unwrap_or_else(|| panic!("{topic} {payload} not read"))
}

fn num(r: &Reading, name: &str) -> f64 {
    match r.get(name) {
        Some(Value::Number(n)) => *n,
        other => panic!("{name}: {other:?} in {r:?}"),
    }
}

fn on(r: &Reading) -> bool {
    match r.get("on") {
        Some(Value::Bool(b)) => *b,
        other => panic!("on: {other:?} in {r:?}"),
    }
}

fn command(p: &Profile, action: &str) -> (String, String) {
    let c = p.encode(Action::parse(action).unwrap()).unwrap();
    (c.topic, String::from_utf8(c.payload).unwrap())
}

#[test]
fn zigbee2mqtt_readings_numeric_strings_state_and_commands() {
    let p = profile(Kind::Zigbee2mqtt, "greenhouse-climate");
    assert_eq!(p.telemetry(), ["zigbee2mqtt/greenhouse-climate"]);
    assert_eq!(p.availability().unwrap().0, "zigbee2mqtt/greenhouse-climate/availability");
    let r = read(
        &p,
        "zigbee2mqtt/greenhouse-climate",
        r#"{"battery":"100.00","humidity":55.2,"linkquality":120,"temperature":23.41,"voltage":3000,"state":"ON","color":{"x":0.31,"y":0.32},"action":"single"}"#,
    );
    assert_eq!((num(&r, "battery"), num(&r, "temperature"), num(&r, "color_x")), (100.0, 23.41, 0.31));
    assert!(on(&r));
    assert_eq!(r.get("action"), Some(&Value::Text("single".into())));
    assert_eq!(
        num(&read(&p, "zigbee2mqtt/greenhouse-climate", r#"{"state":"ON","brightness":127}"#), "brightness"),
        50.0
    );
    assert_eq!(p.normalise("zigbee2mqtt/greenhouse-climate", b"not json"), None);
    assert_eq!(command(&p, "on"), ("zigbee2mqtt/greenhouse-climate/set".into(), r#"{"state":"ON"}"#.into()));
    assert_eq!(command(&p, "TOGGLE").1, r#"{"state":"TOGGLE"}"#);
    assert_eq!(command(&p, "set brightness 50").1, r#"{"state":"ON","brightness":127}"#);
    assert_eq!(command(&p, "set brightness 100").1, r#"{"state":"ON","brightness":254}"#);
}

#[test]
fn tasmota_sensors_energy_power_state_and_commands() {
    let p = profile(Kind::Tasmota, "greenhouse-fan");
    assert!(p.telemetry().contains(&"tele/greenhouse-fan/SENSOR".to_owned()));
    assert_eq!(p.availability().unwrap().0, "tele/greenhouse-fan/LWT");
    let r = read(
        &p,
        "tele/greenhouse-fan/SENSOR",
        r#"{"Time":"2026-12-07T10:00:00","AM2301":{"Temperature":22.6,"Humidity":40.1,"DewPoint":8.5},"DS18B20":{"Id":"01131B","Temperature":19.0},"TempUnit":"C"}"#,
    );
    assert_eq!(num(&r, "temperature"), 22.6, "the first sensor's under the plain name");
    assert_eq!((num(&r, "am2301_temperature"), num(&r, "ds18b20_temperature")), (22.6, 19.0));
    assert_eq!((num(&r, "humidity"), num(&r, "dew_point")), (40.1, 8.5));
    assert!(r.get("time").is_none() && r.get("id").is_none());
    let energy = read(
        &p,
        "tele/greenhouse-fan/SENSOR",
        r#"{"Time":"2026-12-07T10:00:00","ENERGY":{"TotalStartTime":"2026-01-01T00:00:00","Total":12.345,"Yesterday":0.5,"Today":0.2,"Power":41,"ApparentPower":45,"ReactivePower":10,"Factor":0.91,"Voltage":231,"Current":0.18}}"#,
    );
    assert_eq!((num(&energy, "energy"), num(&energy, "power"), num(&energy, "power_factor")), (12.345, 41.0, 0.91));
    assert_eq!((num(&energy, "energy_today"), num(&energy, "voltage")), (0.2, 231.0));
    let state = read(
        &p,
        "tele/greenhouse-fan/STATE",
        r#"{"Time":"x","Uptime":"0T01:00:00","POWER":"ON","Dimmer":40,"Wifi":{"RSSI":76}}"#,
    );
    assert!(on(&state));
    assert_eq!((num(&state, "brightness"), num(&state, "rssi")), (40.0, 76.0));
    assert!(!on(&read(&p, "stat/greenhouse-fan/POWER", "OFF")));
    assert!(on(&read(&p, "stat/greenhouse-fan/RESULT", r#"{"POWER":"ON"}"#)));
    assert_eq!(read(&p, "stat/greenhouse-fan/RESULT", r#"{"POWER2":"OFF"}"#).get("on_2"), Some(&Value::Bool(false)));
    assert_eq!(command(&p, "on"), ("cmnd/greenhouse-fan/POWER".into(), "ON".into()));
    assert_eq!(command(&p, "toggle").1, "TOGGLE");
    assert_eq!(command(&p, "set brightness 30"), ("cmnd/greenhouse-fan/Dimmer".into(), "30".into()));
}

#[test]
fn shelly_gen2_status_notifications_and_rpc_commands() {
    let p = profile(Kind::Shelly, "shellyplus1pm-441793d69718");
    assert_eq!(p.availability().unwrap().0, "shellyplus1pm-441793d69718/online");
    let r = read(
        &p,
        "shellyplus1pm-441793d69718/status/switch:0",
        r#"{"id":0,"source":"MQTT","output":true,"apower":41.2,"voltage":230.1,"current":0.18,"aenergy":{"total":1234.5,"by_minute":[0,0,0],"minute_ts":1700000000},"temperature":{"tC":35.2,"tF":95.4}}"#,
    );
    assert!(on(&r));
    assert_eq!((num(&r, "power"), num(&r, "energy"), num(&r, "device_temperature")), (41.2, 1.2345, 35.2));
    assert!(r.get("temperature").is_none(), "a relay's own temperature is not the room's");
    let ht = profile(Kind::Shelly, "shellyhtg3-abc");
    assert_eq!(
        num(&read(&ht, "shellyhtg3-abc/status/temperature:0", r#"{"id":0,"tC":19.8,"tF":67.6}"#), "temperature"),
        19.8
    );
    assert_eq!(num(&read(&ht, "shellyhtg3-abc/status/humidity:0", r#"{"id":0,"rh":55}"#), "humidity"), 55.0);
    let notify = read(
        &ht,
        "shellyhtg3-abc/events/rpc",
        r#"{"src":"shellyhtg3-abc","dst":"shellyhtg3-abc/events","method":"NotifyStatus","params":{"ts":1700000000.5,"temperature:0":{"id":0,"tC":20.1},"devicepower:0":{"id":0,"battery":{"V":5.9,"percent":88}}}}"#,
    );
    assert_eq!((num(&notify, "temperature"), num(&notify, "battery")), (20.1, 88.0));
    assert_eq!(
        read(&p, "shellyplus1pm-441793d69718/status/switch:1", r#"{"id":1,"output":false}"#).get("on_1"),
        Some(&Value::Bool(false))
    );
    let (topic, payload) = command(&p, "on");
    assert_eq!(topic, "shellyplus1pm-441793d69718/rpc");
    let rpc: serde_json::Value = serde_json::from_str(&payload).unwrap();
    assert_eq!(
        (rpc["method"].as_str(), rpc["params"]["on"].as_bool(), rpc["params"]["id"].as_u64()),
        (Some("Switch.Set"), Some(true), Some(0))
    );
    assert!(rpc["id"].is_number() && rpc["src"].is_string(), "JSON-RPC needs an id and a src: {rpc}");
    let toggle: serde_json::Value = serde_json::from_str(&command(&p, "toggle").1).unwrap();
    assert_eq!(toggle["method"], "Switch.Toggle");
    let dim: serde_json::Value = serde_json::from_str(&command(&p, "set brightness 60").1).unwrap();
    assert_eq!((dim["method"].as_str(), dim["params"]["brightness"].as_u64()), (Some("Light.Set"), Some(60)));
}

#[test]
fn shelly_gen1_topics_watt_minutes_and_commands() {
    let p = profile(Kind::ShellyGen1, "shelly1pm-84CCA8A1B2C3");
    assert_eq!(p.availability().unwrap().0, "shellies/shelly1pm-84CCA8A1B2C3/online");
    assert!(on(&read(&p, "shellies/shelly1pm-84CCA8A1B2C3/relay/0", "on")));
    assert_eq!(num(&read(&p, "shellies/shelly1pm-84CCA8A1B2C3/relay/0/power", "41.50"), "power"), 41.5);
    assert_eq!(
        num(&read(&p, "shellies/shelly1pm-84CCA8A1B2C3/relay/0/energy", "60000"), "energy"),
        1.0,
        "W-min to kWh"
    );
    assert_eq!(num(&read(&p, "shellies/shelly1pm-84CCA8A1B2C3/sensor/temperature", "21.25"), "temperature"), 21.25);
    assert_eq!(p.normalise("shellies/shelly1pm-84CCA8A1B2C3/relay/0", b"maybe"), None);
    assert_eq!(command(&p, "toggle"), ("shellies/shelly1pm-84CCA8A1B2C3/relay/0/command".into(), "toggle".into()));
    assert_eq!(command(&p, "set brightness 20").1, r#"{"turn":"on","brightness":20}"#);
}

#[test]
fn esphome_plain_states_lights_and_an_entity_to_command() {
    let p = profile(Kind::Esphome, "greenhouse-node/switch/fan_relay");
    assert_eq!(p.availability().unwrap().0, "greenhouse-node/status");
    assert!(p.telemetry().contains(&"greenhouse-node/sensor/+/state".to_owned()));
    assert_eq!(num(&read(&p, "greenhouse-node/sensor/temperature/state", "23.5"), "temperature"), 23.5);
    let relay = read(&p, "greenhouse-node/switch/fan_relay/state", "ON");
    assert!(on(&relay), "the commanded entity's state is `on`");
    assert_eq!(read(&p, "greenhouse-node/binary_sensor/door/state", "OFF").get("door"), Some(&Value::Bool(false)));
    assert_eq!(p.normalise("greenhouse-node/sensor/temperature/state", b"nan"), None);
    assert_eq!(command(&p, "on"), ("greenhouse-node/switch/fan_relay/command".into(), "ON".into()));
    assert!(p.encode(Action::Brightness(10)).unwrap_err().contains("no brightness"));
    let light = profile(Kind::Esphome, "hall/light/ceiling");
    assert_eq!(
        num(&read(&light, "hall/light/ceiling/state", r#"{"state":"ON","brightness":255}"#), "brightness"),
        100.0
    );
    assert_eq!(command(&light, "set brightness 50").1, r#"{"state":"ON","brightness":128}"#);
    let bare = profile(Kind::Esphome, "node");
    assert!(bare.encode(Action::On).unwrap_err().contains("names no entity"));
    assert!(bare.command_topics().is_empty());
}

#[test]
fn generic_paths_plain_payloads_and_configured_commands() {
    let g = Generic {
        command_topic: Some("plant/boiler/set".into()),
        fields: vec![("temperature".into(), "sensors.0.t".into()), ("pressure".into(), "p".into())],
        commands: vec![("on".into(), "1".into()), ("brightness".into(), r#"{"level":{value}}"#.into())],
    };
    let p = profile(Kind::Generic(g), "boiler");
    let r = read(&p, "plant/boiler/state", r#"{"sensors":[{"t":71.5}],"p":"1.8"}"#);
    assert_eq!((num(&r, "temperature"), num(&r, "pressure")), (71.5, 1.8));
    assert_eq!(p.normalise("plant/boiler/state", br#"{"other":1}"#), None, "nothing it knows");
    assert_eq!(command(&p, "on"), ("plant/boiler/set".into(), "1".into()));
    assert_eq!(command(&p, "set brightness 40").1, r#"{"level":40}"#);
    assert!(p.encode(Action::Off).unwrap_err().contains("no \"off\""));
    let plain = profile(
        Kind::Generic(Generic { fields: vec![("temperature".into(), String::new())], ..Generic::default() }),
        "esp",
    );
    assert_eq!(num(&read(&plain, "esp/temp", " 23.5\n"), "temperature"), 23.5);
}

#[test]
fn actions_read_as_written_and_bad_ones_say_what_is_wrong() {
    assert_eq!(Action::parse(" On ").unwrap(), Action::On);
    assert_eq!(Action::parse("set brightness 50%").unwrap(), Action::Brightness(50));
    assert_eq!(Action::parse("set brightness 50").unwrap().to_string(), "set brightness 50");
    assert!(Action::parse("set brightness 150").unwrap_err().contains("0 to 100"));
    assert!(Action::parse("explode").unwrap_err().contains("on, off, toggle"));
}

#[test]
fn a_reading_is_a_flat_json_object_and_names_are_snake_case() {
    let mut r = Reading::default();
    r.set("temperature", Value::Number(22.5));
    r.set("on", Value::Bool(true));
    r.set("mode", Value::Text("auto".into()));
    r.set("temperature", Value::Number(23.0));
    assert_eq!(String::from_utf8(r.to_json()).unwrap(), r#"{"mode":"auto","on":true,"temperature":23.0}"#);
    assert_eq!(
        (snake("DewPoint"), snake("tC"), snake("linkquality"), snake("RSSI")),
        ("dew_point".into(), "t_c".into(), "linkquality".into(), "rssi".into())
    );
}
