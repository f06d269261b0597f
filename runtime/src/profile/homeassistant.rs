//! Home Assistant MQTT discovery: devices that announce themselves on the
//! discovery prefix become devices of the gateway with no configuration.
//! Zigbee2MQTT, ESPHome, Tasmota (with its discovery add-on) and many other
//! projects publish these announcements, retained.
//!
//! Follows <https://www.home-assistant.io/integrations/mqtt/#mqtt-discovery>:
//! an entity is announced on `<prefix>/<component>/[<node_id>/]<object_id>/config`
//! with a JSON configuration (abbreviated keys and the `~` base topic
//! included); an empty payload there removes it. Entities of one device share
//! its `device.identifiers`; the gateway makes one device of them, named after
//! the device's `name` in snake_case (`Greenhouse Sensor` -> `greenhouse_sensor`).
//!
//! What is read, per entity: `state_topic` with its `value_template` when that
//! is a plain path (`{{ value_json.temperature }}`, `{{ value_json['temperature:0'].tC }}`,
//! `{{ value }}`, filters such as `| float` ignored), into one field of the
//! device's reading, named after the path's last key, else the entity's
//! `device_class`, else its object id; `switch`, `light` and `fan` states are
//! the `on` field, read against `state_on`/`payload_on`. What is commanded: the
//! first entity with a `command_topic` (`payload_on`, `payload_off`; a light's
//! brightness through its JSON schema or `brightness_command_topic`, scaled
//! to its `brightness_scale`). Availability: `availability_topic` or the first
//! of `availability`, with its payloads.

use std::collections::BTreeMap;

use serde_json::{Map, Value as Json};

use super::{scalar, snake, Action, Command, Reading, Value};
use crate::config::{Announcements, AvailabilityTopic, Device, PayloadFormat};
use crate::topic::TopicFilter;

/// Longest discovery payload read: Home Assistant's are a few KB at most.
pub const MAX_CONFIG_BYTES: usize = 16 * 1024;
/// Most entities remembered: a flood of announcements cannot grow memory.
pub const MAX_ENTITIES: usize = 1024;

/// Components whose state is on or off, read into the `on` field and
/// commanded with `payload_on`/`payload_off`.
const SWITCHING: &[&str] = &["switch", "light", "fan"];

/// How a value is taken from a state payload.
#[derive(Debug, Clone, PartialEq)]
pub enum Template {
    /// `{{ value }}`, or no template: the payload as text.
    Whole,
    /// `{{ value_json.a.b[0] }}`: keys and indices into the JSON payload.
    Path(Vec<String>),
}

impl Template {
    /// A `value_template` the gateway can follow, or `None` (any other Jinja).
    pub fn parse(template: &str) -> Option<Template> {
        let inner = template.trim().strip_prefix("{{")?.strip_suffix("}}")?;
        // Filters (`| float`, `| round(1)`, `| int`) change nothing a reading keeps.
        let expr = inner.split('|').next()?.trim();
        if expr == "value" {
            return Some(Template::Whole);
        }
        let mut rest = expr.strip_prefix("value_json")?;
        let mut path = Vec::new();
        while !rest.is_empty() {
            if let Some(r) = rest.strip_prefix('.') {
                let end = r.find(['.', '[']).unwrap_or(r.len());
                let key = &r[..end];
                if key.is_empty() || !key.chars().all(|c| c.is_alphanumeric() || c == '_') {
                    return None;
                }
                path.push(key.to_owned());
                rest = &r[end..];
            } else if let Some(r) = rest.strip_prefix('[') {
                let end = r.find(']')?;
                let inside = r[..end].trim();
                let key = match inside.as_bytes().first()? {
                    b'\'' | b'"' if inside.len() >= 2 && inside.ends_with(&inside[..1]) => &inside[1..inside.len() - 1],
                    b'0'..=b'9' if inside.bytes().all(|b| b.is_ascii_digit()) => inside,
                    _ => return None,
                };
                path.push(key.to_owned());
                rest = &r[end + 1..];
            } else {
                return None;
            }
        }
        (!path.is_empty()).then_some(Template::Path(path))
    }

    /// The value in `payload` as sent, if there: a plain payload as a string.
    fn read(&self, payload: &[u8]) -> Option<Json> {
        match self {
            Template::Whole => std::str::from_utf8(payload).ok().map(|t| Json::String(t.trim().to_owned())),
            Template::Path(path) => {
                let json: Json = serde_json::from_slice(payload).ok()?;
                let value = path.iter().try_fold(&json, |v, key| match v {
                    Json::Object(o) => o.get(key),
                    Json::Array(a) => a.get(key.parse::<usize>().ok()?),
                    _ => None,
                })?;
                Some(value.clone())
            }
        }
    }
}

/// One announced entity, as far as the gateway uses it.
#[derive(Debug, Clone, PartialEq)]
pub struct Entity {
    /// `sensor`, `binary_sensor`, `switch`, `light`, ...
    pub component: String,
    /// The reading's field it fills.
    pub field: String,
    pub state_topic: Option<String>,
    /// `None`: a template the gateway cannot follow (the entity is not read).
    pub template: Option<Template>,
    /// What the state reads as when on and off (binary sensors, switches).
    pub state_on: String,
    pub state_off: String,
    pub command_topic: Option<String>,
    pub payload_on: String,
    pub payload_off: String,
    /// A light taking `{"state":"ON","brightness":N}` on its command topic.
    pub json_schema: bool,
    pub brightness_command_topic: Option<String>,
    pub brightness_scale: u32,
    pub availability: Option<(String, Announcements)>,
}

/// An entity with the device it belongs to.
#[derive(Debug, Clone, PartialEq)]
pub struct Announced {
    /// What groups entities into a device: its first identifier, else the
    /// node id, else the entity's unique id or object id.
    pub device_key: String,
    /// The device's id in the gateway.
    pub device_id: String,
    pub entity: Entity,
}

/// A configuration value as text: strings as they are, `true`, numbers as written.
fn as_text(v: &Json) -> Option<String> {
    match v {
        Json::String(s) => Some(s.clone()),
        Json::Bool(b) => Some(b.to_string()),
        Json::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The value of `long` or its abbreviation `short`.
fn get<'m>(m: &'m Map<String, Json>, long: &str, short: &str) -> Option<&'m Json> {
    m.get(long).or_else(|| m.get(short))
}

/// A topic value with the `~` base topic put in, at its start or end.
fn topic_at(m: &Map<String, Json>, long: &str, short: &str) -> Option<String> {
    let t = get(m, long, short)?.as_str()?;
    let base = m.get("~").and_then(Json::as_str).unwrap_or("");
    let t = if let Some(rest) = t.strip_prefix('~') {
        format!("{base}{rest}")
    } else if let Some(rest) = t.strip_suffix('~') {
        format!("{rest}{base}")
    } else {
        t.to_owned()
    };
    (!t.is_empty() && !t.contains(['+', '#'])).then_some(t)
}

/// A device id from a name: snake_case, no topic separators or wildcards.
pub fn device_id(name: &str) -> String {
    let id: String = snake(name.trim())
        .chars()
        .map(|c| if c.is_alphanumeric() || c == '_' || c == '-' || c == '.' { c } else { '_' })
        .collect();
    id.trim_matches('_').to_owned()
}

/// Where `topic` announces an entity under `prefix`: its component, node id
/// and object id; `None` for any other topic.
fn place<'t>(prefix: &str, topic: &'t str) -> Option<(&'t str, Option<&'t str>, &'t str)> {
    let rest = topic.strip_prefix(prefix)?.strip_prefix('/')?.strip_suffix("/config")?;
    let levels: Vec<&str> = rest.split('/').collect();
    match levels.as_slice() {
        [component, object] => Some((component, None, object)),
        [component, node, object] => Some((component, Some(node), object)),
        _ => None,
    }
}

/// The discovery filters to subscribe to under `prefix`.
pub fn subscriptions(prefix: &str) -> Vec<String> {
    vec![format!("{prefix}/+/+/config"), format!("{prefix}/+/+/+/config")]
}

/// Reads one announcement: `Ok(None)` for an empty payload (the entity is
/// removed), `Err` with what is wrong.
pub fn parse(prefix: &str, topic: &str, payload: &[u8]) -> Result<Option<Announced>, String> {
    let (component, node, object) = place(prefix, topic).ok_or("not a discovery topic")?;
    if payload.is_empty() {
        return Ok(None);
    }
    if payload.len() > MAX_CONFIG_BYTES {
        return Err(format!("{} bytes, more than the {MAX_CONFIG_BYTES} read", payload.len()));
    }
    let json: Json = serde_json::from_slice(payload).map_err(|e| format!("not JSON: {e}"))?;
    let m = json.as_object().ok_or("not a JSON object")?;
    let device = get(m, "device", "dev").and_then(Json::as_object);
    let identifier = device.and_then(|d| get(d, "identifiers", "ids")).and_then(|ids| match ids {
        Json::Array(a) => a.first().and_then(as_text),
        other => as_text(other),
    });
    let unique = get(m, "unique_id", "uniq_id").and_then(as_text);
    let device_key =
        identifier.or_else(|| node.map(str::to_owned)).or_else(|| unique.clone()).unwrap_or_else(|| object.to_owned());
    let device_name = device.and_then(|d| d.get("name")).and_then(Json::as_str);
    let device_id = device_id(device_name.or(node).unwrap_or(unique.as_deref().unwrap_or(object)));
    if device_id.is_empty() {
        return Err("no usable device name".into());
    }
    let template = match get(m, "value_template", "val_tpl").and_then(Json::as_str) {
        Some(t) => Template::parse(t),
        None if component == "light" && get(m, "schema", "schema").and_then(Json::as_str) == Some("json") => {
            Some(Template::Path(vec!["state".into()]))
        }
        None => Some(Template::Whole),
    };
    let class = get(m, "device_class", "dev_cla").and_then(Json::as_str);
    let field = if SWITCHING.contains(&component) {
        "on".to_owned()
    } else {
        match &template {
            Some(Template::Path(path)) => snake(path.last().map(String::as_str).unwrap_or(object)),
            _ => snake(class.unwrap_or(object)),
        }
    };
    let payload_on = get(m, "payload_on", "pl_on").and_then(as_text).unwrap_or_else(|| "ON".into());
    let payload_off = get(m, "payload_off", "pl_off").and_then(as_text).unwrap_or_else(|| "OFF".into());
    let availability = availability(m);
    let entity = Entity {
        component: component.to_owned(),
        field,
        state_topic: topic_at(m, "state_topic", "stat_t"),
        template,
        state_on: get(m, "state_on", "stat_on").and_then(as_text).unwrap_or_else(|| payload_on.clone()),
        state_off: get(m, "state_off", "stat_off").and_then(as_text).unwrap_or_else(|| payload_off.clone()),
        command_topic: topic_at(m, "command_topic", "cmd_t"),
        payload_on,
        payload_off,
        json_schema: get(m, "schema", "schema").and_then(Json::as_str) == Some("json"),
        brightness_command_topic: topic_at(m, "brightness_command_topic", "bri_cmd_t"),
        brightness_scale: get(m, "brightness_scale", "bri_scl")
            .and_then(Json::as_u64)
            .filter(|s| (1..=65535).contains(s))
            .unwrap_or(255) as u32,
        availability,
    };
    Ok(Some(Announced { device_key, device_id, entity }))
}

/// `availability_topic`, or the first of `availability`, with its payloads.
fn availability(m: &Map<String, Json>) -> Option<(String, Announcements)> {
    let (topic, on, off) = match topic_at(m, "availability_topic", "avty_t") {
        Some(t) => (t, get(m, "payload_available", "pl_avail"), get(m, "payload_not_available", "pl_not_avail")),
        None => {
            let first = get(m, "availability", "avty")?.as_array()?.first()?.as_object()?;
            let mut with_base = first.clone();
            if let Some(base) = m.get("~") {
                with_base.insert("~".into(), base.clone());
            }
            let t = topic_at(&with_base, "topic", "t")?;
            (t, get(first, "payload_available", "pl_avail"), get(first, "payload_not_available", "pl_not_avail"))
        }
    };
    let payloads = match (on.and_then(as_text), off.and_then(as_text)) {
        (None, None) => Announcements::Usual,
        (on, off) => Announcements::Exactly {
            online: on.unwrap_or_else(|| "online".into()),
            offline: off.unwrap_or_else(|| "offline".into()),
        },
    };
    Some((topic, payloads))
}

/// A discovered device's entities: how its profile reads and commands it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Entities(pub Vec<Entity>);

impl Entities {
    pub fn telemetry(&self) -> Vec<String> {
        let mut topics: Vec<String> = Vec::new();
        for t in self.0.iter().filter_map(|e| e.state_topic.clone()) {
            if !topics.contains(&t) {
                topics.push(t);
            }
        }
        topics
    }

    pub fn availability(&self) -> Option<(String, Announcements)> {
        self.0.iter().find_map(|e| e.availability.clone())
    }

    /// The entity commands go to.
    fn commanded(&self) -> Option<&Entity> {
        let takes = |e: &&Entity| e.command_topic.is_some();
        self.0.iter().filter(takes).find(|e| SWITCHING.contains(&e.component.as_str()))
    }

    pub fn command_topics(&self) -> Vec<String> {
        let mut topics = Vec::new();
        for t in self.0.iter().flat_map(|e| e.command_topic.iter().chain(&e.brightness_command_topic)) {
            if !topics.contains(t) {
                topics.push(t.clone());
            }
        }
        topics
    }

    /// Every entity whose state topic this is, each into its field.
    pub fn normalise(&self, topic: &str, payload: &[u8]) -> Option<Reading> {
        let mut reading = Reading::default();
        for e in self.0.iter().filter(|e| e.state_topic.as_deref() == Some(topic)) {
            let Some(value) = e.template.as_ref().and_then(|t| t.read(payload)) else { continue };
            let value = if SWITCHING.contains(&e.component.as_str()) || e.component == "binary_sensor" {
                let Some(said) = as_text(&value) else { continue };
                if said.eq_ignore_ascii_case(&e.state_on) {
                    Value::Bool(true)
                } else if said.eq_ignore_ascii_case(&e.state_off) {
                    Value::Bool(false)
                } else {
                    continue;
                }
            } else {
                match scalar(&value) {
                    Some(v) => v,
                    None => continue,
                }
            };
            reading.set(e.field.clone(), value);
            if e.json_schema {
                let json: Option<Json> = serde_json::from_slice(payload).ok();
                if let Some(level) = json.as_ref().and_then(|j| j.get("brightness")).and_then(Json::as_f64) {
                    let percent = (level * 100.0 / e.brightness_scale as f64).round();
                    reading.set("brightness", Value::Number(percent));
                }
            }
        }
        (!reading.0.is_empty()).then_some(reading)
    }

    /// `toggle` is decided by the caller from the last state (Home
    /// Assistant's entities take on and off only).
    pub fn encode(&self, action: Action) -> Result<Command, String> {
        let e = self.commanded().ok_or("none of its announced entities takes commands")?;
        let topic = e.command_topic.clone().unwrap_or_default();
        let payload = match action {
            Action::On if e.json_schema => r#"{"state":"ON"}"#.to_owned(),
            Action::Off if e.json_schema => r#"{"state":"OFF"}"#.to_owned(),
            Action::On => e.payload_on.clone(),
            Action::Off => e.payload_off.clone(),
            Action::Toggle => return Err("its state is not known yet, so it cannot be toggled".into()),
            Action::Brightness(p) => {
                let level = (p as u32 * e.brightness_scale + 50) / 100;
                if e.json_schema {
                    format!(r#"{{"state":"ON","brightness":{level}}}"#)
                } else if let Some(t) = &e.brightness_command_topic {
                    return Ok(Command { topic: t.clone(), payload: level.to_string().into_bytes() });
                } else {
                    return Err("it announced no brightness command".into());
                }
            }
        };
        Ok(Command { topic, payload: payload.into_bytes() })
    }
}

/// Every entity announced so far, by its discovery topic: the devices they make.
#[derive(Debug, Default)]
pub struct Discovered {
    entities: BTreeMap<String, Announced>,
    /// The gateway's own device key: what it announces itself is not taken back.
    own: String,
}

/// What one announcement did.
#[derive(Debug, PartialEq)]
pub enum Learnt {
    /// The devices changed.
    Changed,
    /// Said again as before (a retained announcement after a reconnect).
    Same,
    /// Not kept: why.
    Refused(String),
}

impl Discovered {
    /// Announcements of `gateway_id`'s own values will be passed over.
    pub fn new(gateway_id: &str) -> Discovered {
        Discovered { entities: BTreeMap::new(), own: gateway_key(gateway_id) }
    }

    /// Takes one message on a discovery topic.
    pub fn learn(&mut self, prefix: &str, topic: &str, payload: &[u8]) -> Learnt {
        match parse(prefix, topic, payload) {
            Err(why) => Learnt::Refused(why),
            Ok(None) => match self.entities.remove(topic) {
                Some(_) => Learnt::Changed,
                None => Learnt::Same,
            },
            Ok(Some(announced)) => {
                if self.entities.get(topic) == Some(&announced) || announced.device_key == self.own {
                    return Learnt::Same;
                }
                if self.entities.len() >= MAX_ENTITIES && !self.entities.contains_key(topic) {
                    return Learnt::Refused(format!("already {MAX_ENTITIES} entities known"));
                }
                self.entities.insert(topic.to_owned(), announced);
                Learnt::Changed
            }
        }
    }

    /// The devices the entities make, but those whose id a configured
    /// device already has (the configuration wins), and with it the ids so
    /// passed over. Entities of one device are in the order of their topics.
    pub fn devices(&self, configured: &[Device]) -> (Vec<Device>, Vec<String>) {
        let mut by_key: BTreeMap<&str, (&str, Vec<Entity>)> = BTreeMap::new();
        for a in self.entities.values() {
            by_key.entry(&a.device_key).or_insert((&a.device_id, Vec::new())).1.push(a.entity.clone());
        }
        let mut devices: Vec<Device> = Vec::new();
        let mut passed = Vec::new();
        for (id, entities) in by_key.into_values() {
            if configured.iter().chain(&devices).any(|d| d.id == id) {
                passed.push(id.to_owned());
                continue;
            }
            let entities = Entities(entities);
            let telemetry = entities.telemetry().iter().filter_map(|t| TopicFilter::parse(t).ok()).collect();
            let availability = entities.availability().and_then(|(t, payloads)| {
                TopicFilter::parse(&t).ok().map(|topic| AvailabilityTopic { topic, payloads })
            });
            devices.push(Device {
                id: id.to_owned(),
                telemetry,
                command_topic: None,
                format: PayloadFormat::Raw,
                availability,
                offline_after: None,
                profile: Some(super::Profile { kind: super::Kind::Homeassistant(entities), name: id.to_owned() }),
            });
        }
        (devices, passed)
    }
}

/// The device key (first identifier) the gateway announces its own values under.
pub fn gateway_key(gateway_id: &str) -> String {
    format!("edgefn_{}", device_id(gateway_id))
}

/// A value functions publish, as a retained discovery message: its topic and
/// payload. The entity belongs to the gateway's own device and is available
/// while the gateway's retained status says `online`.
pub fn announcement(
    prefix: &str,
    gateway_id: &str,
    status_topic: &str,
    a: &crate::config::Announce,
) -> (String, Vec<u8>) {
    let node = gateway_key(gateway_id);
    let object = device_id(&a.name);
    let binary = a.component == "binary_sensor";
    let mut m = Map::new();
    m.insert("name".into(), a.name.clone().into());
    m.insert("unique_id".into(), format!("{node}_{object}").into());
    m.insert("state_topic".into(), a.topic.clone().into());
    let value = match &a.field {
        Some(path) => format!("value_json{}", path.iter().map(|k| format!("['{k}']")).collect::<String>()),
        None => "value".into(),
    };
    // A JSON `true` renders as `True` in Home Assistant's templates: lowered,
    // it is the `true` the payloads below name.
    let template = if binary { format!("{{{{ {value} | lower }}}}") } else { format!("{{{{ {value} }}}}") };
    m.insert("value_template".into(), template.into());
    if binary {
        m.insert("payload_on".into(), "true".into());
        m.insert("payload_off".into(), "false".into());
    }
    if let Some(unit) = &a.unit {
        m.insert("unit_of_measurement".into(), unit.clone().into());
    }
    if let Some(class) = &a.device_class {
        m.insert("device_class".into(), class.clone().into());
    }
    m.insert("availability_topic".into(), status_topic.into());
    m.insert("payload_available".into(), "online".into());
    m.insert("payload_not_available".into(), "offline".into());
    m.insert(
        "device".into(),
        serde_json::json!({
            "identifiers": [node],
            "name": format!("edgefn {gateway_id}"),
            "manufacturer": "edgefn",
            "sw_version": env!("CARGO_PKG_VERSION"),
        }),
    );
    let topic = format!("{prefix}/{}/{node}/{object}/config", a.component);
    (topic, serde_json::to_vec(&Json::Object(m)).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Zigbee2MQTT climate sensor's temperature entity, as Zigbee2MQTT 1.x announces it.
    const Z2M_TEMPERATURE: &str = r#"{"availability":[{"topic":"zigbee2mqtt/bridge/state","value_template":"{{ value_json.state }}"}],
        "device":{"identifiers":["zigbee2mqtt_0x00158d0001a2b3c4"],"manufacturer":"Aqara","model":"WSDCGQ11LM","name":"Greenhouse Sensor"},
        "device_class":"temperature","enabled_by_default":true,"object_id":"greenhouse_sensor_temperature",
        "state_class":"measurement","state_topic":"zigbee2mqtt/Greenhouse Sensor","unique_id":"0x00158d0001a2b3c4_temperature_zigbee2mqtt",
        "unit_of_measurement":"°C","value_template":"{{ value_json.temperature }}"}"#;
    const Z2M_OCCUPANCY: &str = r#"{"device":{"identifiers":["zigbee2mqtt_0x00158d0001a2b3c4"],"name":"Greenhouse Sensor"},
        "device_class":"occupancy","payload_off":false,"payload_on":true,"state_topic":"zigbee2mqtt/Greenhouse Sensor",
        "value_template":"{{ value_json.occupancy }}"}"#;

    #[test]
    fn templates_that_are_paths_are_followed_and_others_are_not() {
        let path = |t: &str| match Template::parse(t) {
            Some(Template::Path(p)) => Some(p),
            _ => None,
        };
        assert_eq!(path("{{ value_json.temperature }}").unwrap(), ["temperature"]);
        assert_eq!(path("{{value_json.AM2301.Temperature | float}}").unwrap(), ["AM2301", "Temperature"]);
        assert_eq!(path("{{ value_json['temperature:0'].tC }}").unwrap(), ["temperature:0", "tC"]);
        assert_eq!(path("{{ value_json.sensors[1].t | round(1) }}").unwrap(), ["sensors", "1", "t"]);
        assert_eq!(Template::parse("{{ value | float }}"), Some(Template::Whole));
        assert_eq!(Template::parse("{{ (value_json.t * 1.8 + 32) }}"), None);
        assert_eq!(Template::parse("{% if value_json.on %}ON{% endif %}"), None);
        assert_eq!(Template::parse("{{ value_json[x] }}"), None);
    }

    #[test]
    fn a_zigbee2mqtt_sensor_announced_in_two_entities_is_one_device_reading_both() {
        let mut found = Discovered::new("gw");
        let learnt = found.learn(
            "homeassistant",
            "homeassistant/sensor/0x00158d0001a2b3c4/temperature/config",
            Z2M_TEMPERATURE.as_bytes(),
        );
        assert_eq!(learnt, Learnt::Changed);
        let topic = "homeassistant/binary_sensor/0x00158d0001a2b3c4/occupancy/config";
        assert_eq!(found.learn("homeassistant", topic, Z2M_OCCUPANCY.as_bytes()), Learnt::Changed);
        assert_eq!(found.learn("homeassistant", topic, Z2M_OCCUPANCY.as_bytes()), Learnt::Same);
        let (devices, passed) = found.devices(&[]);
        assert!(passed.is_empty());
        let [sensor] = devices.as_slice() else { panic!("{devices:?}") };
        assert_eq!(sensor.id, "greenhouse_sensor");
        assert_eq!(sensor.telemetry.iter().map(|t| t.as_str()).collect::<Vec<_>>(), ["zigbee2mqtt/Greenhouse Sensor"]);
        let availability = sensor.availability.as_ref().unwrap();
        assert_eq!(
            (availability.topic.as_str(), &availability.payloads),
            ("zigbee2mqtt/bridge/state", &Announcements::Usual)
        );
        let profile = sensor.profile.as_ref().unwrap();
        let reading = profile
            .normalise("zigbee2mqtt/Greenhouse Sensor", br#"{"temperature":27.4,"occupancy":true,"linkquality":120}"#);
        // Entities in the order of their discovery topics.
        assert_eq!(
            reading.unwrap().0,
            [("occupancy".to_owned(), Value::Bool(true)), ("temperature".to_owned(), Value::Number(27.4))]
        );
        assert!(profile.encode(Action::On).is_err(), "a sensor takes no commands");
        // An empty retained payload removes the entity; the last one, the device.
        assert_eq!(found.learn("homeassistant", topic, b""), Learnt::Changed);
        assert_eq!(
            found.learn("homeassistant", "homeassistant/sensor/0x00158d0001a2b3c4/temperature/config", b""),
            Learnt::Changed
        );
        assert!(found.devices(&[]).0.is_empty());
    }

    #[test]
    fn a_switch_in_abbreviations_with_a_base_topic_is_read_and_commanded() {
        // As Tasmota's discovery and ESPHome write them: abbreviated, with `~`.
        let config = br#"{"~":"tasmota/fan_plug","name":"Fan","uniq_id":"A1B2C3_RL_1","cmd_t":"~/cmnd/POWER",
            "stat_t":"~/stat/RESULT","val_tpl":"{{value_json.POWER}}","pl_on":"ON","pl_off":"OFF",
            "avty_t":"~/tele/LWT","pl_avail":"Online","pl_not_avail":"Offline","dev":{"ids":["A1B2C3"],"name":"Fan Plug"}}"#;
        let mut found = Discovered::new("gw");
        assert_eq!(found.learn("homeassistant", "homeassistant/switch/A1B2C3_RL_1/config", config), Learnt::Changed);
        let (devices, _) = found.devices(&[]);
        let plug = &devices[0];
        assert_eq!(plug.id, "fan_plug");
        let availability = plug.availability.as_ref().unwrap();
        assert_eq!(availability.topic.as_str(), "tasmota/fan_plug/tele/LWT");
        assert_eq!(
            availability.payloads,
            Announcements::Exactly { online: "Online".into(), offline: "Offline".into() }
        );
        let profile = plug.profile.as_ref().unwrap();
        assert_eq!(profile.command_topics(), ["tasmota/fan_plug/cmnd/POWER"]);
        let on = profile.encode(Action::On).unwrap();
        assert_eq!((on.topic.as_str(), on.payload.as_slice()), ("tasmota/fan_plug/cmnd/POWER", &b"ON"[..]));
        assert_eq!(profile.encode(Action::Off).unwrap().payload, b"OFF");
        let reading = profile.normalise("tasmota/fan_plug/stat/RESULT", br#"{"POWER":"OFF"}"#).unwrap();
        assert_eq!(reading.get("on"), Some(&Value::Bool(false)));
        assert!(profile.encode(Action::Brightness(50)).is_err());
    }

    #[test]
    fn a_json_schema_light_takes_brightness_scaled_to_its_scale() {
        let config = br#"{"schema":"json","command_topic":"zigbee2mqtt/Desk Lamp/set","state_topic":"zigbee2mqtt/Desk Lamp",
            "brightness":true,"brightness_scale":254,"device":{"identifiers":["zigbee2mqtt_0x01"],"name":"Desk Lamp"}}"#;
        let mut found = Discovered::new("gw");
        found.learn("homeassistant", "homeassistant/light/0x01/light/config", config);
        let lamp = found.devices(&[]).0.remove(0);
        let profile = lamp.profile.unwrap();
        let half = profile.encode(Action::Brightness(50)).unwrap();
        assert_eq!(half.topic, "zigbee2mqtt/Desk Lamp/set");
        assert_eq!(half.payload, br#"{"state":"ON","brightness":127}"#);
        assert_eq!(profile.encode(Action::Off).unwrap().payload, br#"{"state":"OFF"}"#);
        let reading = profile.normalise("zigbee2mqtt/Desk Lamp", br#"{"state":"ON","brightness":254}"#).unwrap();
        assert_eq!(reading.0, [("on".to_owned(), Value::Bool(true)), ("brightness".to_owned(), Value::Number(100.0))]);
    }

    #[test]
    fn a_value_announced_reads_back_as_home_assistant_would_and_is_not_taken_back() {
        let announce = |name: &str, field: Option<&str>, component: &str| crate::config::Announce {
            name: name.into(),
            topic: "greenhouse/summary".into(),
            field: field.map(|f| f.split('.').map(str::to_owned).collect()),
            component: component.into(),
            unit: Some("°C".into()),
            device_class: Some("temperature".into()),
        };
        let (topic, payload) = announcement(
            "homeassistant",
            "gw-1",
            "edgefn/gw-1/status",
            &announce("Average temperature", Some("climate.avg"), "sensor"),
        );
        assert_eq!(topic, "homeassistant/sensor/edgefn_gw_1/average_temperature/config");
        let json: Json = serde_json::from_slice(&payload).unwrap();
        assert_eq!(json["value_template"], "{{ value_json['climate']['avg'] }}");
        assert_eq!(json["unique_id"], "edgefn_gw_1_average_temperature");
        assert_eq!(json["availability_topic"], "edgefn/gw-1/status");
        assert_eq!(json["unit_of_measurement"], "°C");
        // Another gateway reads it as a device with that field...
        let mut other = Discovered::new("gw-2");
        assert_eq!(other.learn("homeassistant", &topic, &payload), Learnt::Changed);
        let (devices, _) = other.devices(&[]);
        assert_eq!(devices[0].id, "edgefn_gw_1");
        let profile = devices[0].profile.as_ref().unwrap();
        let reading = profile.normalise("greenhouse/summary", br#"{"climate":{"avg":26.5}}"#).unwrap();
        assert_eq!(reading.0, [("avg".to_owned(), Value::Number(26.5))]);
        // ...and the gateway itself does not take its own back.
        let mut own = Discovered::new("gw-1");
        assert_eq!(own.learn("homeassistant", &topic, &payload), Learnt::Same);
        assert!(own.devices(&[]).0.is_empty());
        let (_, payload) =
            announcement("homeassistant", "gw-1", "s", &announce("Too hot", Some("too_hot"), "binary_sensor"));
        let json: Json = serde_json::from_slice(&payload).unwrap();
        assert_eq!(
            (json["value_template"].as_str(), json["payload_on"].as_str()),
            (Some("{{ value_json['too_hot'] | lower }}"), Some("true"))
        );
    }

    #[test]
    fn bad_announcements_are_refused_with_why_and_configured_ids_win() {
        let mut found = Discovered::new("gw");
        let refused = |l: Learnt| matches!(l, Learnt::Refused(_));
        assert!(refused(found.learn("homeassistant", "homeassistant/sensor/x/config", b"{not json")));
        assert!(refused(found.learn("homeassistant", "homeassistant/sensor/x/config", b"[1,2]")));
        let huge = vec![b' '; MAX_CONFIG_BYTES + 1];
        assert!(refused(found.learn("homeassistant", "homeassistant/sensor/x/config", &huge)));
        assert!(refused(found.learn("homeassistant", "homeassistant/a/b/c/d/config", b"{}")));
        let wildcard = br#"{"state_topic":"plant/+/t","device":{"identifiers":"p","name":"Boiler"}}"#;
        assert_eq!(found.learn("homeassistant", "homeassistant/sensor/boiler/config", wildcard), Learnt::Changed);
        let configured = found.devices(&[]).0;
        assert!(configured[0].telemetry.is_empty(), "a wildcard state topic is not read");
        let (devices, passed) = found.devices(&configured);
        assert!(devices.is_empty());
        assert_eq!(passed, ["boiler"]);
        for i in 0..MAX_ENTITIES + 5 {
            found.learn("homeassistant", &format!("homeassistant/sensor/n{i}/config"), br#"{"name":"x"}"#);
        }
        assert_eq!(found.entities.len(), MAX_ENTITIES);
    }
}
