//! LoRaWAN sensors through The Things Stack (v3): each uplink, whatever its
//! size (a busy network adds a `rx_metadata` entry per gateway that heard
//! it), becomes a flat reading of its `decoded_payload` on
//! `ttn/<device>/reading`, which any function or dashboard reads by name.
//!
//! ```toml
//! [[functions]]
//! name = "ttn-uplink"
//! module = "ttn_uplink.wasm"
//! triggers = ["v3/+/devices/+/up"]      # v3/<application>@<tenant>/devices/<device>/up
//! [functions.config]
//! reader = "path"                       # or "serde": the same reading, through serde
//! ```
//!
//! The device id is the topic's level 3. The reading:
//! `{"device":"soil-7","f_cnt":1234,"temperature":21.3,"moisture":41,"battery":3.1}`,
//! with the fields the decoder gave.
//!
//! Two ways to read the same uplink, chosen by `reader`: `path` looks up each
//! field where it is (`uplink_message.decoded_payload.temperature`) and builds
//! nothing; `serde` reads the uplink into the types below with
//! serde-json-core. The note in `device-configs/examples/ttn-uplink.toml`
//! gives what each costs.

// On the host (unit tests, `cargo check --target <host>`) the crate links std and its panic handler.
#![cfg_attr(target_arch = "wasm32", no_std)]

use edgefn_sdk::heapless::String;
use edgefn_sdk::json::{self, ObjectWriter};
use edgefn_sdk::{config, event, publish, Error, QoS, State};
use serde::Deserialize;

/// The decoder's fields the reading carries.
const FIELDS: [&str; 3] = ["temperature", "moisture", "battery"];

/// An uplink, as much of it as the reading needs (the rest is skipped).
#[derive(Deserialize)]
struct Uplink {
    uplink_message: Message,
}

#[derive(Deserialize)]
struct Message {
    f_cnt: Option<u32>,
    decoded_payload: Option<Decoded>,
}

#[derive(Deserialize, Default)]
struct Decoded {
    temperature: Option<f64>,
    moisture: Option<f64>,
    battery: Option<f64>,
}

/// What the uplink said.
#[derive(Default, Debug, PartialEq)]
struct Said {
    f_cnt: Option<u32>,
    values: [Option<f64>; 3],
}

fn by_path(payload: &[u8]) -> Result<Said, Error> {
    let f_cnt = json::integer_at(payload, "uplink_message.f_cnt").ok().and_then(|n| u32::try_from(n).ok());
    let mut said = Said { f_cnt, ..Said::default() };
    // The decoded part found once: each reader checks all of what it is given.
    let Ok(decoded) = json::raw_at(payload, "uplink_message.decoded_payload") else { return Ok(said) };
    for (value, field) in said.values.iter_mut().zip(FIELDS) {
        *value = json::number_at(decoded, field).ok();
    }
    Ok(said)
}

fn by_serde(payload: &[u8]) -> Result<Said, Error> {
    let up: Uplink = json::typed(payload)?;
    let d = up.uplink_message.decoded_payload.unwrap_or_default();
    Ok(Said { f_cnt: up.uplink_message.f_cnt, values: [d.temperature, d.moisture, d.battery] })
}

/// Whether `reader = "serde"`.
static SERDE: State<bool> = State::new(false);

fn handle() -> Result<(), Error> {
    let mut topic = [0u8; 256];
    let Some(device) = event::topic_level(3, &mut topic)? else {
        return Err(Error::config("triggers", "the topic has no device level (v3/<app>/devices/<device>/up)"));
    };
    let serde = SERDE.with(|s| *s);
    let said = event::with_payload(|p| if serde { by_serde(p) } else { by_path(p) })??;
    let mut reading: String<512> = String::new();
    let mut o = ObjectWriter::new(&mut reading)?;
    o.string("device", device)?;
    if let Some(n) = said.f_cnt {
        o.integer("f_cnt", n as i64)?;
    }
    for (value, field) in said.values.iter().zip(FIELDS) {
        if let Some(v) = value {
            o.number(field, *v)?;
        }
    }
    o.finish()?;
    let out: String<128> = edgefn_sdk::format!("ttn/{device}/reading");
    publish(&out, reading.as_bytes(), QoS::AtLeastOnce, false)
}

fn init() -> Result<(), Error> {
    let reader: Option<String<8>> = config::string("reader")?;
    let serde = match reader.as_deref() {
        None | Some("path") => false,
        Some("serde") => true,
        Some(other) => return Err(Error::config("reader", format_args!("{other:?}: \"path\" or \"serde\""))),
    };
    SERDE.with(|s| *s = serde);
    Ok(())
}

edgefn_sdk::handler!(handle, init = init);

#[cfg(test)]
mod tests {
    use super::*;

    /// An uplink as The Things Stack v3 publishes it (its documentation's example, trimmed).
    const UPLINK: &[u8] = br#"{"end_device_ids":{"device_id":"soil-7","application_ids":{"application_id":"greenhouse"},
        "dev_eui":"70B3D57ED005B1A2","dev_addr":"260B1234"},"correlation_ids":["as:up:01H"],"received_at":"2026-12-07T10:00:00.123Z",
        "uplink_message":{"session_key_id":"AYa1","f_port":2,"f_cnt":1234,"frm_payload":"CE0pHw==",
        "decoded_payload":{"battery":3.1,"moisture":41,"temperature":21.3},
        "rx_metadata":[{"gateway_ids":{"gateway_id":"gh-gw"},"rssi":-72,"channel_rssi":-72,"snr":9.5}],
        "settings":{"data_rate":{"lora":{"bandwidth":125000,"spreading_factor":7}},"frequency":"868100000"},
        "consumed_airtime":"0.056576s"}}"#;

    #[test]
    fn both_readers_read_the_same_uplink_alike() {
        let expected = Said { f_cnt: Some(1234), values: [Some(21.3), Some(41.0), Some(3.1)] };
        assert_eq!(by_path(UPLINK).unwrap(), expected);
        assert_eq!(by_serde(UPLINK).unwrap(), expected);
        let bare = br#"{"uplink_message":{"f_port":2}}"#;
        assert_eq!(by_path(bare).unwrap(), Said::default());
        assert_eq!(by_serde(bare).unwrap(), Said::default());
        assert!(by_serde(b"not json").is_err());
    }
}
