//! A periodic energy summary: each Tasmota (or Shelly, or any profiled) plug's
//! energy used, peak power and number of readings since the last summary,
//! published on a cron schedule to `energy/<device>/summary`. The periods
//! are kept in the function's store, so a restart loses none of the count.
//!
//! ```toml
//! [[functions]]
//! name = "energy-summary"
//! module = "energy_summary.wasm"
//! triggers = ["tele/+/SENSOR", { cron = "0 * * * *" }]   # readings, and the summary each hour
//! ```
//!
//! A reading's `energy` (kWh, the plug's running total) and `power` (W) are
//! its profile's normalised fields. The summary, retained:
//! `{"device":"washer-plug","kwh":0.25,"max_w":1500,"readings":24,"from_ms":..,"to_ms":..}`.

// On the host (unit tests, `cargo check --target <host>`) the crate links std and its panic handler.
#![cfg_attr(target_arch = "wasm32", no_std)]

mod period;

use edgefn_sdk::event::{self, Kind};
use edgefn_sdk::heapless::String;
use edgefn_sdk::json::{number_at, ObjectWriter};
use edgefn_sdk::{kv, publish, Error, QoS};

use period::{Period, PERIOD_LEN};

const PREFIX: &str = "period/";
/// Longest store key: the prefix and a device id.
const KEY_CAP: usize = 96;

/// Changes the period under `key` with `change`, atomically among the
/// function's instances (a reading and the schedule may run at once).
fn update<R>(key: &str, mut change: impl FnMut(&mut Period) -> R) -> Result<R, Error> {
    loop {
        let mut buf = [0u8; PERIOD_LEN + 1];
        let old = kv::get(key, &mut buf)?.map(|n| &buf[..n.min(buf.len())]);
        let mut period = old.and_then(Period::decode).unwrap_or_default();
        let result = change(&mut period);
        if kv::compare_and_set(key, old, Some(&period.encode()))? {
            return Ok(result);
        }
    }
}

fn key_of(device: &str) -> Result<String<KEY_CAP>, Error> {
    let mut key = String::new();
    key.push_str(PREFIX).and_then(|_| key.push_str(device)).map_err(|_| Error::config("device", "id too long"))?;
    Ok(key)
}

fn handle() -> Result<(), Error> {
    match event::kind() {
        Kind::Timer => summarise(),
        _ => reading(),
    }
}

fn reading() -> Result<(), Error> {
    let mut device = [0u8; 64];
    let Some(device) = event::device(&mut device)? else { return Ok(()) };
    let mut buf = [0u8; 2048];
    let Some(reading) = event::normalised(&mut buf)? else { return Ok(()) };
    let (kwh, watts) = (number_at(reading, "energy").ok(), number_at(reading, "power").ok());
    if kwh.is_none() && watts.is_none() {
        return Ok(()); // a plug's state, not its energy
    }
    let now = event::time_ms();
    update(&key_of(device)?, |p| p.read(kwh, watts, now))
}

/// Publishes every plug's period with readings, and starts the next.
fn summarise() -> Result<(), Error> {
    let now = event::time_ms();
    let mut keys = [0u8; 2048];
    let len = kv::keys(PREFIX, &mut keys)?;
    let keys = core::str::from_utf8(keys.get(..len).unwrap_or_default()).unwrap_or_default();
    for key in keys.lines() {
        let ended = update(key, |p| {
            let ended = *p;
            *p = p.next(now);
            ended
        })?;
        if ended.readings == 0 {
            continue;
        }
        let device = &key[PREFIX.len()..];
        let mut summary: String<256> = String::new();
        let mut o = ObjectWriter::new(&mut summary)?;
        o.string("device", device)?.number("kwh", ended.kwh())?.number("max_w", ended.max_w)?;
        o.integer("readings", ended.readings as i64)?.integer("from_ms", ended.from_ms)?.integer("to_ms", now)?;
        o.finish()?;
        let topic: String<128> = edgefn_sdk::format!("energy/{device}/summary");
        publish(&topic, summary.as_bytes(), QoS::AtLeastOnce, true)?;
    }
    Ok(())
}

edgefn_sdk::handler!(handle);
