//! ESPHome (esphome.io, "MQTT Client Component"): with the node's topic
//! prefix (its name by default), each entity's state on
//! `<node>/<component>/<object id>/state` (a sensor's `23.5`, a binary sensor's
//! or a switch's `ON`/`OFF`, a light's JSON `{"state":"ON","brightness":255}`),
//! commands on `<node>/<component>/<object id>/command`; the node's
//! availability on `<node>/status` (`online`/`offline`). The name is
//! `node` or `node/switch/<object id>` (`node/light/<object id>`): the entity
//! a command goes to.

use super::{text, Action, Command, Reading, Value};

/// The node, and the entity commands go to (`switch/relay`), if named.
fn split(name: &str) -> (&str, Option<&str>) {
    match name.split_once('/') {
        Some((node, entity)) => (node, Some(entity)),
        None => (name, None),
    }
}

pub fn telemetry(name: &str) -> Vec<String> {
    let (node, _) = split(name);
    ["sensor", "binary_sensor", "switch", "light"].iter().map(|c| format!("{node}/{c}/+/state")).collect()
}

pub fn availability_topic(name: &str) -> String {
    format!("{}/status", split(name).0)
}

pub fn command_topics(name: &str) -> Vec<String> {
    match split(name) {
        (node, Some(entity)) => vec![format!("{node}/{entity}/command")],
        (_, None) => Vec::new(),
    }
}

pub fn normalise(name: &str, topic: &str, payload: &[u8]) -> Option<Reading> {
    let (node, entity) = split(name);
    let rest = topic.strip_prefix(node)?.strip_prefix('/')?;
    let [component, object, "state"] = rest.split('/').collect::<Vec<_>>()[..] else { return None };
    let plain = std::str::from_utf8(payload).ok()?;
    let mut reading = Reading::default();
    let is_entity = entity == Some(&format!("{component}/{object}")[..]);
    match component {
        "sensor" => match text(plain) {
            n @ Value::Number(_) => reading.set(object, n),
            _ => return None,
        },
        "binary_sensor" | "switch" => match text(plain) {
            b @ Value::Bool(_) => {
                if is_entity {
                    reading.set("on", b.clone());
                }
                reading.set(object, b);
            }
            _ => return None,
        },
        "light" => {
            let state: serde_json::Value = serde_json::from_str(plain).ok()?;
            if let Some(Value::Bool(on)) = state.get("state").and_then(|s| s.as_str()).map(text) {
                reading.set(if is_entity { "on".to_owned() } else { object.to_owned() }, Value::Bool(on));
            }
            if let Some(b) = state.get("brightness").and_then(|b| b.as_f64()) {
                // 0-255 on the wire; percent like every other profile.
                reading.set("brightness", Value::Number((b * 100.0 / 255.0).round()));
            }
        }
        _ => return None,
    }
    Some(reading)
}

pub fn encode(name: &str, action: Action) -> Result<Command, String> {
    let (node, Some(entity)) = split(name) else {
        return Err(format!(
            "ESPHome node {name:?} names no entity to command: give the device topic = \"{name}/switch/<object id>\""
        ));
    };
    let topic = format!("{node}/{entity}/command");
    let light = entity.starts_with("light/");
    let payload = match (action, light) {
        (Action::On, false) => "ON".to_owned(),
        (Action::Off, false) => "OFF".to_owned(),
        (Action::Toggle, false) => "TOGGLE".to_owned(),
        (Action::Brightness(_), false) => return Err(format!("{entity} is a switch: it has no brightness")),
        (Action::On, true) => r#"{"state":"ON"}"#.to_owned(),
        (Action::Off, true) => r#"{"state":"OFF"}"#.to_owned(),
        (Action::Toggle, true) => r#"{"state":"TOGGLE"}"#.to_owned(),
        (Action::Brightness(p), true) => {
            format!(
                r#"{{"state":"{}","brightness":{}}}"#,
                if p > 0 { "ON" } else { "OFF" },
                (u32::from(p) * 255).div_ceil(100)
            )
        }
    };
    Ok(Command { topic, payload: payload.into_bytes() })
}
