//! The window-average function's configuration, read and validated in one place.

use edgefn_sdk::heapless::String;
use edgefn_sdk::{check_stream, check_topic, config, Error, QoS, MAX_STREAM_LEN};

use crate::window::MAX_WINDOW;

/// Longest topic template.
const TOPIC_CAP: usize = 256;

/// Longest payload field name or path.
const FIELD_CAP: usize = 64;

/// The topic used when `topic` is not set.
const DEFAULT_TOPIC: &str = "edgefn/derived/{device}/{field}_avg";

/// Validated configuration; every default is already applied.
pub struct Settings {
    /// Where the value to average is in the JSON payload: a field name, or a
    /// path into nested objects and arrays (`AM2301.Temperature`).
    pub field: String<FIELD_CAP>,
    /// How many recent readings the average covers, 1..=`MAX_WINDOW`.
    pub window: usize,
    /// Where averages go; `{device}` and `{field}` are filled in.
    pub topic: String<TOPIC_CAP>,
    /// QoS of the published averages.
    pub qos: QoS,
    /// Upstream stream that also gets every average, if set.
    pub upstream_stream: Option<String<MAX_STREAM_LEN>>,
}

impl Settings {
    /// Reads every key; an error names the first key that is missing or invalid.
    pub fn load() -> Result<Self, Error> {
        let field = config::required("field")?;
        let window = config::integer("window")?.unwrap_or(10);
        let window = match usize::try_from(window) {
            Ok(window @ 1..=MAX_WINDOW) => window,
            _ => return Err(Error::config("window", format_args!("must be between 1 and {MAX_WINDOW}, not {window}"))),
        };
        let topic = match config::string("topic")? {
            Some(topic) => topic,
            None => {
                let mut topic = String::new();
                // The default is far shorter than `TOPIC_CAP`.
                let _ = topic.push_str(DEFAULT_TOPIC);
                topic
            }
        };
        check_topic(&topic).map_err(|err| Error::config("topic", format_args!("is not a valid topic: {err}")))?;
        let qos = config::value("qos")?.unwrap_or(QoS::AtMostOnce);
        let upstream_stream = config::string::<MAX_STREAM_LEN>("upstream_stream")?;
        if let Some(stream) = &upstream_stream {
            check_stream(stream)
                .map_err(|err| Error::config("upstream_stream", format_args!("is not a valid stream: {err}")))?;
        }
        Ok(Self { field, window, topic, qos, upstream_stream })
    }
}
