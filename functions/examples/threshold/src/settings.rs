//! The threshold function's configuration, read and validated in one place.

use edgefn_sdk::heapless::String;
use edgefn_sdk::{check_topic, config, Error, QoS};

use crate::hysteresis::Level;

/// Longest configured string (topic template, payloads).
const TEXT_CAP: usize = 256;

/// Longest payload field name or path.
const FIELD_CAP: usize = 64;

/// Where the commands go.
pub enum Target {
    /// `command_topic`, where `{device}` is replaced by the device id; the
    /// payloads are `high_payload` and `low_payload`.
    Topic(String<TEXT_CAP>),
    /// `command_device`: a configured device, commanded `on` and `off` by
    /// name; its profile makes the topic and payload.
    Device(String<TEXT_CAP>),
}

/// Validated configuration; every default is already applied.
pub struct Settings {
    /// Where the reading is in the JSON payload: a field name, or a path into
    /// nested objects and arrays (`AM2301.Temperature`).
    pub field: String<FIELD_CAP>,
    /// Readings at or above this switch to HIGH.
    pub above: f64,
    /// Readings at or below this switch to LOW; never greater than `above`.
    pub below: f64,
    /// Where commands go.
    pub target: Target,
    /// Payload of the HIGH command.
    pub high_payload: String<TEXT_CAP>,
    /// Payload of the LOW command.
    pub low_payload: String<TEXT_CAP>,
    /// QoS of the commands.
    pub qos: QoS,
    /// Whether the broker retains the commands.
    pub retain: bool,
}

impl Settings {
    /// Reads every key; an error names the first key that is missing or invalid.
    pub fn load() -> Result<Self, Error> {
        let field = config::required("field")?;
        let above: f64 = config::required("above")?;
        let below: f64 = config::required("below")?;
        if below > above {
            return Err(Error::config("below", format_args!("({below}) must not be greater than `above` ({above})")));
        }
        let target = match (config::string::<TEXT_CAP>("command_topic")?, config::string::<TEXT_CAP>("command_device")?)
        {
            (Some(_), Some(_)) => {
                return Err(Error::config("command_device", format_args!("and `command_topic` are both set: give one")))
            }
            (Some(topic), None) => {
                check_topic(&topic)
                    .map_err(|err| Error::config("command_topic", format_args!("is not a valid topic: {err}")))?;
                Target::Topic(topic)
            }
            (None, Some(device)) => Target::Device(device),
            (None, None) => {
                return Err(Error::config(
                    "command_topic",
                    format_args!("is missing: give it, or command_device (a configured device with a profile)"),
                ))
            }
        };
        Ok(Self {
            field,
            above,
            below,
            target,
            high_payload: config::string("high_payload")?.unwrap_or_else(|| text("ON")),
            low_payload: config::string("low_payload")?.unwrap_or_else(|| text("OFF")),
            qos: config::value("qos")?.unwrap_or(QoS::AtLeastOnce),
            retain: config::boolean("retain")?.unwrap_or(false),
        })
    }

    /// The command payload for `level`.
    pub fn payload(&self, level: Level) -> &str {
        match level {
            Level::High => &self.high_payload,
            Level::Low => &self.low_payload,
        }
    }
}

/// A default string; the literals passed in are far below `TEXT_CAP`.
fn text(default: &str) -> String<TEXT_CAP> {
    let mut out = String::new();
    let _ = out.push_str(default);
    out
}
