//! Tasmota (tasmota.github.io, "MQTT"): with `%topic%` the device's Topic,
//! sensors report on `tele/%topic%/SENSOR` (`{"Time":..,"AM2301":{"Temperature":
//! 22.6,"Humidity":40.1},"ENERGY":{"Power":41,...}}`), the state on
//! `tele/%topic%/STATE` (`{"POWER":"ON","Dimmer":50,...}`), answers on
//! `stat/%topic%/RESULT` and `stat/%topic%/POWER`; the last will on
//! `tele/%topic%/LWT` (`Online`/`Offline`); commands on `cmnd/%topic%/<Command>`
//! (`POWER` ON/OFF/TOGGLE, `Dimmer` 0-100).

use super::{on_off, scalar, snake, text, Action, Command, Reading, Value};

pub fn telemetry(topic: &str) -> Vec<String> {
    ["tele/{}/SENSOR", "tele/{}/STATE", "stat/{}/RESULT", "stat/{}/POWER"]
        .iter()
        .map(|t| t.replace("{}", topic))
        .collect()
}

/// ENERGY's fields by the names every profile uses.
fn energy_name(key: &str) -> String {
    match key {
        "Total" => "energy".into(),
        "Today" => "energy_today".into(),
        "Yesterday" => "energy_yesterday".into(),
        "Factor" => "power_factor".into(),
        other => snake(other),
    }
}

/// `POWER`/`POWER1` as `on`/`on_1`..., `Dimmer` as `brightness`, other
/// scalars by their snake_case name (`Time` left out).
fn top_level(reading: &mut Reading, key: &str, value: &serde_json::Value) {
    match key {
        "Time" | "TempUnit" | "PressureUnit" => {}
        "POWER" => {
            if let Some(on) = on_off(value) {
                reading.set("on", on);
            }
        }
        _ if key.starts_with("POWER") && key[5..].parse::<u8>().is_ok() => {
            if let Some(on) = on_off(value) {
                reading.set(format!("on_{}", &key[5..]), on);
            }
        }
        "Dimmer" => {
            if let Some(v) = scalar(value) {
                reading.set("brightness", v);
            }
        }
        _ => {
            if let Some(v) = scalar(value) {
                reading.set(snake(key), v);
            }
        }
    }
}

pub fn normalise(topic_name: &str, topic: &str, payload: &[u8]) -> Option<Reading> {
    let mut reading = Reading::default();
    if topic == format!("stat/{topic_name}/POWER") {
        match text(std::str::from_utf8(payload).ok()?) {
            on @ Value::Bool(_) => reading.set("on", on),
            _ => return None,
        }
        return Some(reading);
    }
    let serde_json::Value::Object(object) = serde_json::from_slice(payload).ok()? else { return None };
    // Sensors' fields under their plain names, the first sensor's winning,
    // and under `<sensor>_<field>` too (`ds18b20_temperature`).
    for (key, value) in &object {
        match value {
            serde_json::Value::Object(inner) if key == "ENERGY" => {
                for (k, v) in inner {
                    if let Some(v) = scalar(v) {
                        reading.set(energy_name(k), v);
                    }
                }
            }
            serde_json::Value::Object(inner) => {
                for (k, v) in inner {
                    let Some(v) = scalar(v) else { continue };
                    if k == "Id" {
                        continue;
                    }
                    let plain = snake(k);
                    if reading.get(&plain).is_none() {
                        reading.set(plain.clone(), v.clone());
                    }
                    reading.set(format!("{}_{plain}", key.to_ascii_lowercase().replace('-', "_")), v);
                }
            }
            other => top_level(&mut reading, key, other),
        }
    }
    Some(reading)
}

pub fn encode(topic: &str, action: Action) -> Command {
    let (command, payload) = match action {
        Action::On => ("POWER", "ON".to_owned()),
        Action::Off => ("POWER", "OFF".to_owned()),
        Action::Toggle => ("POWER", "TOGGLE".to_owned()),
        Action::Brightness(p) => ("Dimmer", p.to_string()),
    };
    Command { topic: format!("cmnd/{topic}/{command}"), payload: payload.into_bytes() }
}
