//! The threshold function's configuration, read and validated in one place.

use edgefn_sdk::heapless::String;
use edgefn_sdk::{check_topic, config, Error, QoS};

use crate::hysteresis::Level;

/// Longest configured string (topic template, payloads).
const TEXT_CAP: usize = 256;

/// Longest payload field name or path.
const FIELD_CAP: usize = 64;

/// Validated configuration; every default is already applied.
pub struct Settings {
    /// Where the reading is in the JSON payload: a field name, or a path into
    /// nested objects and arrays (`AM2301.Temperature`).
    pub field: String<FIELD_CAP>,
    /// Readings at or above this switch to HIGH.
    pub above: f64,
    /// Readings at or below this switch to LOW; never greater than `above`.
    pub below: f64,
    /// Where commands go; `{device}` is replaced by the device id.
    pub command_topic: String<TEXT_CAP>,
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
        let command_topic: String<TEXT_CAP> = config::required("command_topic")?;
        check_topic(&command_topic)
            .map_err(|err| Error::config("command_topic", format_args!("is not a valid topic: {err}")))?;
        Ok(Self {
            field,
            above,
            below,
            command_topic,
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
