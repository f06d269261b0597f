//! Shelly. Gen2 and later (shelly-api-docs.shelly.cloud, gen2 "MQTT"): with
//! `<id>` the device's MQTT prefix, status on `<id>/status/<component>:<n>`
//! (`switch:0` {"output":true,"apower":41.2,"voltage":230.1,"current":0.18,
//! "aenergy":{"total":12.3},"temperature":{"tC":35.2}}, `temperature:0`
//! {"tC":19.8}, `humidity:0` {"rh":55}, `devicepower:0` {"battery":{"percent":
//! 90}}), the same inside `NotifyStatus` on `<id>/events/rpc`; `<id>/online`
//! `true`/`false`; JSON-RPC requests on `<id>/rpc` (`Switch.Set`,
//! `Switch.Toggle`, `Light.Set`).
//!
//! Gen1 ("shellies/<id>/..."): `relay/<n>` on/off, `relay/<n>/power` W,
//! `relay/<n>/energy` in watt-minutes, `sensor/temperature`,
//! `sensor/humidity`, `sensor/battery`; `online` true/false; commands on
//! `relay/0/command` (on, off, toggle) and `light/0/set` (JSON).

use super::{scalar, text, Action, Command, Reading, Value};

pub fn telemetry(id: &str) -> Vec<String> {
    vec![format!("{id}/status/+"), format!("{id}/events/rpc")]
}

/// One component's status: `switch:0` {"output":..} and the rest.
fn component(reading: &mut Reading, name: &str, status: &serde_json::Value) {
    let (kind, n) = name.split_once(':').unwrap_or((name, "0"));
    let suffix = if n == "0" { String::new() } else { format!("_{n}") };
    let field = |f: &str| status.get(f).and_then(scalar);
    // Shelly counts Wh; every profile's `energy` is kWh.
    let kwh = |v: Option<Value>| match v {
        Some(Value::Number(wh)) => Some(Value::Number(wh / 1000.0)),
        _ => None,
    };
    let mut put = |name: &str, v: Option<Value>| {
        if let Some(v) = v {
            reading.set(format!("{name}{suffix}"), v);
        }
    };
    match kind {
        "switch" | "light" => {
            put("on", status.get("output").and_then(|v| v.as_bool()).map(Value::Bool));
            put("power", field("apower"));
            put("voltage", field("voltage"));
            put("current", field("current"));
            put("energy", kwh(status.get("aenergy").and_then(|e| e.get("total")).and_then(scalar)));
            put("brightness", field("brightness"));
            put("device_temperature", status.get("temperature").and_then(|t| t.get("tC")).and_then(scalar));
        }
        "temperature" => put("temperature", field("tC")),
        "humidity" => put("humidity", field("rh")),
        "illuminance" => put("illuminance", field("lux")),
        "devicepower" => put("battery", status.get("battery").and_then(|b| b.get("percent")).and_then(scalar)),
        "pm1" => {
            put("power", field("apower"));
            put("voltage", field("voltage"));
            put("current", field("current"));
            put("energy", kwh(status.get("aenergy").and_then(|e| e.get("total")).and_then(scalar)));
        }
        _ => {}
    }
}

pub fn normalise(id: &str, topic: &str, payload: &[u8]) -> Option<Reading> {
    let value: serde_json::Value = serde_json::from_slice(payload).ok()?;
    let mut reading = Reading::default();
    if let Some(name) = topic.strip_prefix(&format!("{id}/status/")) {
        component(&mut reading, name, &value);
    } else {
        // NotifyStatus / NotifyFullStatus: {"method":..,"params":{"switch:0":{..},..}}
        let params = value.get("params")?.as_object()?;
        for (name, status) in params {
            if status.is_object() {
                component(&mut reading, name, status);
            }
        }
    }
    Some(reading)
}

pub fn encode(id: &str, action: Action) -> Command {
    let (method, params) = match action {
        Action::On => ("Switch.Set", r#"{"id":0,"on":true}"#.to_owned()),
        Action::Off => ("Switch.Set", r#"{"id":0,"on":false}"#.to_owned()),
        Action::Toggle => ("Switch.Toggle", r#"{"id":0}"#.to_owned()),
        Action::Brightness(p) => ("Light.Set", format!(r#"{{"id":0,"on":{},"brightness":{p}}}"#, p > 0)),
    };
    let payload = format!(r#"{{"id":1,"src":"edgefn","method":"{method}","params":{params}}}"#);
    Command { topic: format!("{id}/rpc"), payload: payload.into_bytes() }
}

pub fn gen1_telemetry(id: &str) -> Vec<String> {
    ["relay/+", "relay/+/power", "relay/+/energy", "sensor/+", "temperature", "light/+/status"]
        .iter()
        .map(|t| format!("shellies/{id}/{t}"))
        .collect()
}

pub fn gen1_normalise(id: &str, topic: &str, payload: &[u8]) -> Option<Reading> {
    let rest = topic.strip_prefix(&format!("shellies/{id}/"))?;
    let levels: Vec<&str> = rest.split('/').collect();
    let plain = std::str::from_utf8(payload).ok()?;
    let mut reading = Reading::default();
    let suffix = |n: &str| if n == "0" { String::new() } else { format!("_{n}") };
    match levels.as_slice() {
        ["relay", n] => match text(plain) {
            on @ Value::Bool(_) => reading.set(format!("on{}", suffix(n)), on),
            _ => return None,
        },
        ["relay", n, "power"] => reading.set(format!("power{}", suffix(n)), text(plain)),
        // Watt-minutes, as Gen1 counts them: to kWh like every other profile.
        ["relay", n, "energy"] => match text(plain) {
            Value::Number(wmin) => reading.set(format!("energy{}", suffix(n)), Value::Number(wmin / 60_000.0)),
            _ => return None,
        },
        ["sensor", name] => reading.set((*name).to_owned(), text(plain)),
        ["temperature"] => reading.set("device_temperature", text(plain)),
        ["light", n, "status"] => {
            let status: serde_json::Value = serde_json::from_str(plain).ok()?;
            if let Some(on) = status.get("ison").and_then(|v| v.as_bool()) {
                reading.set(format!("on{}", suffix(n)), Value::Bool(on));
            }
            if let Some(b) = status.get("brightness").and_then(scalar) {
                reading.set(format!("brightness{}", suffix(n)), b);
            }
        }
        _ => return None,
    }
    Some(reading)
}

pub fn gen1_encode(id: &str, action: Action) -> Command {
    match action {
        Action::Brightness(p) => Command {
            topic: format!("shellies/{id}/light/0/set"),
            payload: format!(r#"{{"turn":"{}","brightness":{p}}}"#, if p > 0 { "on" } else { "off" }).into_bytes(),
        },
        other => Command { topic: format!("shellies/{id}/relay/0/command"), payload: other.key().as_bytes().to_vec() },
    }
}
