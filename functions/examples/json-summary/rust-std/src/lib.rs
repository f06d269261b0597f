//! Sums the numeric fields of a JSON reading with `serde_json` and publishes
//! `{"device":..,"fields":N,"sum":X}` to the configured `topic`; says what it
//! did with `println!`, which the gateway's WASI subset turns into a log line.

use edgefn_sdk::{config, event, publish, Error, QoS};

fn on_reading() -> Result<(), Error> {
    let mut payload = vec![0u8; event::payload_len()];
    let payload = event::payload(&mut payload)?;
    let mut device = [0u8; 128];
    let device = event::device(&mut device)?.unwrap_or("").to_owned();
    let reading: serde_json::Value =
        serde_json::from_slice(payload).map_err(|e| Error::msg(&format!("not JSON: {e}")))?;
    let numbers: Vec<f64> = match &reading {
        serde_json::Value::Object(fields) => fields.values().filter_map(serde_json::Value::as_f64).collect(),
        _ => Vec::new(),
    };
    // Folded from +0.0: `Sum` starts from -0.0, so an empty reading would give `-0`.
    let sum = numbers.iter().fold(0.0, |sum, x| sum + x);
    let summary = serde_json::json!({ "device": device, "fields": numbers.len(), "sum": sum });
    let mut topic = [0u8; 256];
    let topic = config::get("topic", &mut topic)?.ok_or_else(|| Error::config("topic", "is not set"))?;
    publish(topic, summary.to_string().as_bytes(), QoS::AtMostOnce, false)?;
    println!("{device}: {} numeric fields, sum {sum}", numbers.len());
    Ok(())
}

edgefn_sdk::handler!(on_reading);
