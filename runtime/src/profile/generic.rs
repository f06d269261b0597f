//! A device no profile knows: its fields as JSON paths into its payload, its
//! commands as payloads for its `command_topic`, all from the configuration:
//!
//! ```toml
//! [[devices]]
//! id = "boiler"
//! profile = "generic"
//! telemetry = ["plant/boiler/state"]
//! command_topic = "plant/boiler/set"
//! fields = { temperature = "sensors.0.t", pressure = "p" }
//! commands = { on = "1", off = "0", brightness = "{\"level\":{value}}" }
//! ```

use super::{scalar, text, Action, Command, Reading};

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Generic {
    pub command_topic: Option<String>,
    /// Reading field -> dotted path into the JSON payload (`""`: the whole
    /// payload, for plain-text ones).
    pub fields: Vec<(String, String)>,
    /// Action (`on`, `off`, `toggle`, `brightness`) -> payload; `{value}` in
    /// the brightness one is the percentage.
    pub commands: Vec<(String, String)>,
}

/// The value at a dotted path (`a.b.0.c`): object keys, array indices.
fn at<'v>(value: &'v serde_json::Value, path: &str) -> Option<&'v serde_json::Value> {
    path.split('.').try_fold(value, |v, key| match v {
        serde_json::Value::Object(o) => o.get(key),
        serde_json::Value::Array(a) => a.get(key.parse::<usize>().ok()?),
        _ => None,
    })
}

impl Generic {
    pub fn normalise(&self, payload: &[u8]) -> Option<Reading> {
        let json: Option<serde_json::Value> = serde_json::from_slice(payload).ok();
        let mut reading = Reading::default();
        for (name, path) in &self.fields {
            let value = match (&json, path.as_str()) {
                (_, "") => std::str::from_utf8(payload).ok().map(text),
                (Some(json), path) => at(json, path).and_then(scalar),
                (None, _) => None,
            };
            if let Some(v) = value {
                reading.set(name.clone(), v);
            }
        }
        (!reading.0.is_empty()).then_some(reading)
    }

    pub fn encode(&self, action: Action) -> Result<Command, String> {
        let topic = self.command_topic.clone().ok_or("the device has no command_topic")?;
        let (_, payload) = self
            .commands
            .iter()
            .find(|(a, _)| a == action.key())
            .ok_or_else(|| format!("the device's commands have no {:?}", action.key()))?;
        let payload = match action {
            Action::Brightness(p) => payload.replace("{value}", &p.to_string()),
            _ => payload.clone(),
        };
        Ok(Command { topic, payload: payload.into_bytes() })
    }
}
