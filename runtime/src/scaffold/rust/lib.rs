#![no_std] // the SDK brings what a function needs; std would double its panic handler
use edgefn_sdk::{config, event, json, publish, Error, QoS};

/// Sends "ON" to `command_topic` whenever a reading's temperature exceeds `limit`.
fn on_reading() -> Result<(), Error> {
    let limit: f64 = config::required("limit")?;
    let topic: edgefn_sdk::heapless::String<128> = config::required("command_topic")?;
    let mut buf = [0u8; 1024];
    match json::number_field(event::payload(&mut buf)?, "temperature") {
        Ok(t) if t > limit => publish(&topic, b"ON", QoS::AtLeastOnce, false),
        _ => Ok(()),
    }
}
edgefn_sdk::handler!(on_reading);
