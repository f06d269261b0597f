//! Zigbee2MQTT (zigbee2mqtt.io, "MQTT Topics and Messages"): a device's state
//! is one JSON object on `zigbee2mqtt/<friendly name>`; its availability, with
//! availability enabled, on `zigbee2mqtt/<friendly name>/availability`
//! (`{"state":"online"}` since 2.0, plain `online` before); it is set through
//! `zigbee2mqtt/<friendly name>/set` (`{"state":"ON"}`, `{"state":"TOGGLE"}`,
//! `{"brightness":0..254}`).

use super::{on_off, scalar, snake, Action, Command, Reading, Value};

pub fn telemetry(name: &str) -> Vec<String> {
    vec![format!("zigbee2mqtt/{name}")]
}

/// Every scalar field under its own name (Zigbee2MQTT's are snake_case
/// already: `temperature`, `illuminance_lux`, `water_leak`), numeric strings as
/// numbers (older versions send `"battery":"100.00"`), `state` ON/OFF as `on`,
/// `brightness` in percent, and one level of nesting joined by `_` (`color.x`
/// as `color_x`).
pub fn normalise(payload: &[u8]) -> Option<Reading> {
    let serde_json::Value::Object(object) = serde_json::from_slice(payload).ok()? else { return None };
    let mut reading = Reading::default();
    for (key, value) in &object {
        if key == "state" {
            if let Some(on) = on_off(value) {
                reading.set("on", on);
                continue;
            }
        }
        if key == "brightness" {
            // 0-254 on the wire; percent like every other profile.
            if let Some(b) = value.as_f64() {
                reading.set("brightness", Value::Number((b * 100.0 / 254.0).round()));
                continue;
            }
        }
        match value {
            serde_json::Value::Object(inner) => {
                for (k, v) in inner {
                    if let Some(v) = scalar(v) {
                        reading.set(format!("{}_{}", snake(key), snake(k)), v);
                    }
                }
            }
            other => {
                if let Some(v) = scalar(other) {
                    reading.set(snake(key), v);
                }
            }
        }
    }
    Some(reading)
}

pub fn encode(name: &str, action: Action) -> Command {
    let payload = match action {
        Action::On => r#"{"state":"ON"}"#.to_owned(),
        Action::Off => r#"{"state":"OFF"}"#.to_owned(),
        Action::Toggle => r#"{"state":"TOGGLE"}"#.to_owned(),
        // 0-254 is Zigbee's level; 0 % is off.
        Action::Brightness(0) => r#"{"state":"OFF"}"#.to_owned(),
        Action::Brightness(p) => format!(r#"{{"state":"ON","brightness":{}}}"#, (u32::from(p) * 254).div_ceil(100)),
    };
    Command { topic: format!("zigbee2mqtt/{name}/set"), payload: payload.into_bytes() }
}
