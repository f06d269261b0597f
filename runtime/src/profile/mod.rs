//! Device profiles: what edgefn knows of the MQTT dialects devices already
//! speak, one file per project. Pure: topics, payloads and actions in, topics,
//! payloads and readings out; no I/O.
//!
//! A profile, given the device's own name in its project (Zigbee2MQTT's
//! friendly name, Tasmota's `Topic`, a Shelly's id, an ESPHome node's name),
//! knows:
//! - its telemetry topics and its availability topic ([`Profile::telemetry`],
//!   [`Profile::availability`]), which the device's configuration takes unless
//!   it gives its own;
//! - how to read a telemetry payload into a normalised reading
//!   ([`Profile::normalise`]): flat fields in snake_case, numbers, booleans and
//!   strings, the same names whatever the project (`temperature`, `humidity`,
//!   `power` (W), `energy` (kWh), `on` for a relay's state, ...);
//! - how to carry out an action ([`Action`]: on, off, toggle, set brightness)
//!   as a topic and a payload ([`Profile::encode`]).
//!
//! Each file cites the documentation it follows.

mod directory;
mod esphome;
mod generic;
pub mod homeassistant;
mod shelly;
mod tasmota;
mod zigbee2mqtt;

use std::fmt;

pub use directory::Directory;
pub use generic::Generic;

use crate::config::Announcements;

/// A device's dialect, and its own name in it.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    pub kind: Kind,
    /// The device's name in its project: the topic level its messages carry.
    pub name: String,
}

/// The projects edgefn speaks.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    Zigbee2mqtt,
    Tasmota,
    /// Shelly Gen2 and later (Plus, Pro, Gen3): status topics and JSON-RPC.
    Shelly,
    /// Shelly Gen1 (`shellies/<id>/...`).
    ShellyGen1,
    Esphome,
    /// Topics, JSON paths and command payloads given in the configuration.
    Generic(Generic),
    /// Announced on Home Assistant's discovery prefix, not configured.
    Homeassistant(homeassistant::Entities),
}

/// The names `profile = "..."` takes.
pub const NAMES: &[&str] = &["zigbee2mqtt", "tasmota", "shelly", "shelly-gen1", "esphome", "generic"];

impl Kind {
    /// `profile = "..."`; `generic` comes with its own settings.
    pub fn parse(name: &str, generic: Generic) -> Option<Kind> {
        Some(match name {
            "zigbee2mqtt" => Kind::Zigbee2mqtt,
            "tasmota" => Kind::Tasmota,
            "shelly" => Kind::Shelly,
            "shelly-gen1" => Kind::ShellyGen1,
            "esphome" => Kind::Esphome,
            "generic" => Kind::Generic(generic),
            _ => return None,
        })
    }
}

/// A value of a normalised reading.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Number(f64),
    Bool(bool),
    Text(String),
}

/// A normalised reading: fields in the order found, each name once.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reading(pub Vec<(String, Value)>);

impl Reading {
    /// Sets `name` (a later value of the same name replaces the earlier one).
    pub fn set(&mut self, name: impl Into<String>, value: Value) {
        let name = name.into();
        match self.0.iter_mut().find(|(n, _)| *n == name) {
            Some(slot) => slot.1 = value,
            None => self.0.push((name, value)),
        }
    }

    pub fn get(&self, name: &str) -> Option<&Value> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    /// The reading as a flat JSON object, fields in name order: what `event_reading` hands a function.
    pub fn to_json(&self) -> Vec<u8> {
        let mut map = serde_json::Map::new();
        for (name, value) in &self.0 {
            let v = match value {
                Value::Number(n) => serde_json::Number::from_f64(*n).map_or(serde_json::Value::Null, Into::into),
                Value::Bool(b) => (*b).into(),
                Value::Text(t) => t.clone().into(),
            };
            map.insert(name.clone(), v);
        }
        serde_json::to_vec(&map).unwrap_or_default()
    }
}

/// What a function asks a device to do (`command(device, action)`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Action {
    On,
    Off,
    Toggle,
    /// Brightness in percent, 0 to 100.
    Brightness(u8),
}

impl Action {
    /// `on`, `off`, `toggle`, `set brightness 50` (any case, spaces trimmed).
    pub fn parse(text: &str) -> Result<Action, String> {
        let words: Vec<String> = text.split_whitespace().map(str::to_ascii_lowercase).collect();
        let words: Vec<&str> = words.iter().map(String::as_str).collect();
        match words.as_slice() {
            ["on"] => Ok(Action::On),
            ["off"] => Ok(Action::Off),
            ["toggle"] => Ok(Action::Toggle),
            ["set", "brightness", n] => match n.trim_end_matches('%').parse::<u8>() {
                Ok(n) if n <= 100 => Ok(Action::Brightness(n)),
                _ => Err(format!("brightness {n:?} is not a percentage from 0 to 100")),
            },
            _ => Err(format!("{text:?} is not an action: on, off, toggle or set brightness N (0-100)")),
        }
    }

    /// The name `generic` devices' `commands` are keyed by.
    pub fn key(&self) -> &'static str {
        match self {
            Action::On => "on",
            Action::Off => "off",
            Action::Toggle => "toggle",
            Action::Brightness(_) => "brightness",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Brightness(n) => write!(f, "set brightness {n}"),
            other => f.write_str(other.key()),
        }
    }
}

/// An action encoded for the device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    pub topic: String,
    pub payload: Vec<u8>,
}

impl Profile {
    /// The topic filters the device publishes telemetry on.
    pub fn telemetry(&self) -> Vec<String> {
        let n = &self.name;
        match &self.kind {
            Kind::Zigbee2mqtt => zigbee2mqtt::telemetry(n),
            Kind::Tasmota => tasmota::telemetry(n),
            Kind::Shelly => shelly::telemetry(n),
            Kind::ShellyGen1 => shelly::gen1_telemetry(n),
            Kind::Esphome => esphome::telemetry(n),
            Kind::Generic(_) => Vec::new(),
            Kind::Homeassistant(e) => e.telemetry(),
        }
    }

    /// Where the device says whether it is online, and in which words.
    pub fn availability(&self) -> Option<(String, Announcements)> {
        let n = &self.name;
        let topic = match &self.kind {
            Kind::Zigbee2mqtt => format!("zigbee2mqtt/{n}/availability"),
            Kind::Tasmota => format!("tele/{n}/LWT"),
            Kind::Shelly => format!("{n}/online"),
            Kind::ShellyGen1 => format!("shellies/{n}/online"),
            Kind::Esphome => esphome::availability_topic(n),
            Kind::Generic(_) => return None,
            Kind::Homeassistant(e) => return e.availability(),
        };
        Some((topic, Announcements::Usual))
    }

    /// Every topic its commands go to, for the functions not allowed to
    /// command it (`[functions.allow] devices`).
    pub fn command_topics(&self) -> Vec<String> {
        let n = &self.name;
        match &self.kind {
            Kind::Zigbee2mqtt => vec![format!("zigbee2mqtt/{n}/set")],
            Kind::Tasmota => vec![format!("cmnd/{n}/POWER"), format!("cmnd/{n}/Dimmer")],
            Kind::Shelly => vec![format!("{n}/rpc")],
            Kind::ShellyGen1 => vec![format!("shellies/{n}/relay/0/command"), format!("shellies/{n}/light/0/set")],
            Kind::Esphome => esphome::command_topics(n),
            Kind::Generic(g) => g.command_topic.iter().cloned().collect(),
            Kind::Homeassistant(e) => e.command_topics(),
        }
    }

    /// Reads a telemetry message; `None` when the payload is not what the
    /// project publishes there (counted as unreadable by the caller).
    pub fn normalise(&self, topic: &str, payload: &[u8]) -> Option<Reading> {
        let n = &self.name;
        match &self.kind {
            Kind::Zigbee2mqtt => zigbee2mqtt::normalise(payload),
            Kind::Tasmota => tasmota::normalise(n, topic, payload),
            Kind::Shelly => shelly::normalise(n, topic, payload),
            Kind::ShellyGen1 => shelly::gen1_normalise(n, topic, payload),
            Kind::Esphome => esphome::normalise(n, topic, payload),
            Kind::Generic(g) => g.normalise(payload),
            Kind::Homeassistant(e) => e.normalise(topic, payload),
        }
    }

    /// The action as the device takes it, or why it cannot.
    pub fn encode(&self, action: Action) -> Result<Command, String> {
        let n = &self.name;
        match &self.kind {
            Kind::Zigbee2mqtt => Ok(zigbee2mqtt::encode(n, action)),
            Kind::Tasmota => Ok(tasmota::encode(n, action)),
            Kind::Shelly => Ok(shelly::encode(n, action)),
            Kind::ShellyGen1 => Ok(shelly::gen1_encode(n, action)),
            Kind::Esphome => esphome::encode(n, action),
            Kind::Generic(g) => g.encode(action),
            Kind::Homeassistant(e) => e.encode(action),
        }
    }
}

/// `CamelCase` or `Title` to `snake_case`: `DewPoint` -> `dew_point`, `tC` -> `t_c`.
pub(crate) fn snake(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 4);
    let mut prev_lower = false;
    for c in name.chars() {
        if c.is_ascii_uppercase() {
            if prev_lower {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
            prev_lower = false;
        } else if c == ' ' || c == '-' {
            out.push('_');
            prev_lower = false;
        } else {
            out.push(c);
            prev_lower = c.is_ascii_lowercase() || c.is_ascii_digit();
        }
    }
    out
}

/// A JSON scalar as a reading's value: numbers, numeric strings (`"100.00"`,
/// as older Zigbee2MQTT sends), `ON`/`OFF` and booleans, other strings.
pub(crate) fn scalar(v: &serde_json::Value) -> Option<Value> {
    match v {
        serde_json::Value::Number(n) => n.as_f64().map(Value::Number),
        serde_json::Value::Bool(b) => Some(Value::Bool(*b)),
        serde_json::Value::String(s) => Some(text(s)),
        _ => None,
    }
}

/// A plain-text payload or JSON string as a value: a number when it reads as
/// one, `ON`/`OFF`/`on`/`off`/`true`/`false` as booleans, else the text.
pub(crate) fn text(s: &str) -> Value {
    let t = s.trim();
    if let Ok(n) = t.parse::<f64>() {
        if n.is_finite() {
            return Value::Number(n);
        }
    }
    match t.to_ascii_lowercase().as_str() {
        "on" | "true" => Value::Bool(true),
        "off" | "false" => Value::Bool(false),
        _ => Value::Text(t.to_owned()),
    }
}

/// A relay state as `on`: `ON`/`OFF` and booleans.
pub(crate) fn on_off(v: &serde_json::Value) -> Option<Value> {
    match scalar(v)? {
        b @ Value::Bool(_) => Some(b),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
