//! Occupancy lighting: the light on when someone is in the room and it is
//! dark, off when they have left, and never off when someone else switched
//! it on. Whether the function lit it is kept in its store, so a restart
//! neither leaves its light on for good nor switches off someone's.
//!
//! ```toml
//! [[functions]]
//! name = "hall-lighting"
//! module = "occupancy_lighting.wasm"
//! triggers = ["zigbee2mqtt/hall-motion"]   # a sensor reporting `occupancy` and `illuminance_lux`
//! [functions.config]
//! light = "hall-light"     # a device with a profile (Shelly, Tasmota, Zigbee2MQTT, ...)
//! dark_below = 50          # lux: darker than this, the light goes on
//! ```
//!
//! The illuminance is the reading's `illuminance_lux` (Zigbee2MQTT's for
//! Aqara sensors), else its `illuminance`.

// On the host (unit tests, `cargo check --target <host>`) the crate links std and its panic handler.
#![cfg_attr(target_arch = "wasm32", no_std)]

use edgefn_sdk::heapless::String;
use edgefn_sdk::json::{number_at, Number};
use edgefn_sdk::{command, config, device, event, kv, Error, State};

/// The store key: `1` while the light is on because of the function.
const LIT: &str = "lit";
const NAME_CAP: usize = 64;

struct Settings {
    light: String<NAME_CAP>,
    dark_below: f64,
}

static SETTINGS: State<Option<Settings>> = State::new(None);

/// What to do about the light, and why.
#[derive(Debug, PartialEq, Eq)]
enum Decision {
    /// Someone there, and dark.
    On,
    /// Nobody there any more, and the light is the function's.
    Off,
    /// Someone there, and bright enough.
    Bright,
    /// Someone there, and the light on by someone else's hand: theirs.
    Theirs,
    /// Nothing to decide (the light already the function's, or nobody there
    /// and the light not its).
    Nothing,
}

/// The rule, pure: `present` someone there, `lux` the light level if known,
/// `lit` whether the function has the light on, `on` whether it is on.
fn decide(present: bool, lux: Option<f64>, dark_below: f64, lit: bool, on: Option<bool>) -> Decision {
    match (present, lit) {
        // Someone switched it on already: theirs, not ours to switch off later.
        (true, false) if on == Some(true) => Decision::Theirs,
        (true, false) if lux.is_some_and(|l| l < dark_below) => Decision::On,
        (true, false) if lux.is_some() => Decision::Bright,
        (false, true) => Decision::Off,
        _ => Decision::Nothing,
    }
}

fn handle() -> Result<(), Error> {
    SETTINGS.with_or_init(load_settings, |settings| {
        let mut buf = [0u8; 2048];
        let reading = match event::normalised(&mut buf)? {
            Some(r) => r,
            None => return Ok(()), // not a sensor reading
        };
        let Ok(present) = number_at(reading, "occupancy").map(|o| o != 0.0) else { return Ok(()) };
        let lux = number_at(reading, "illuminance_lux").or_else(|_| number_at(reading, "illuminance")).ok();
        let mut flag = [0u8; 1];
        let lit_before = kv::get(LIT, &mut flag)?.is_some();
        let mut values = [0u8; 1024];
        let on = device::last(&settings.light, &mut values)?.and_then(|v| number_at(v, "on").ok()).map(|on| on != 0.0);
        let lux = lux.unwrap_or(-1.0);
        let light = &settings.light;
        match decide(present, Some(lux).filter(|l| *l >= 0.0), settings.dark_below, lit_before, on) {
            Decision::On => {
                // Claimed first: of two instances on two readings, one lights it.
                if kv::compare_and_set(LIT, None, Some(b"1"))? {
                    command(light, "on")?;
                    edgefn_sdk::info!("{light} on: someone there at {} lx", Number(lux));
                }
            }
            Decision::Off => {
                if kv::compare_and_set(LIT, Some(b"1"), None)? {
                    command(light, "off")?;
                    edgefn_sdk::info!("{light} off: nobody there");
                }
            }
            Decision::Bright => edgefn_sdk::info!("{light} left off: {} lx is bright enough", Number(lux)),
            Decision::Theirs => edgefn_sdk::info!("{light} left alone: switched on by hand"),
            Decision::Nothing => {}
        }
        Ok(())
    })
}

fn load_settings() -> Result<Settings, Error> {
    let dark_below = config::number("dark_below")?.unwrap_or(50.0);
    Ok(Settings { light: config::required("light")?, dark_below })
}

fn init() -> Result<(), Error> {
    SETTINGS.set(load_settings()?);
    Ok(())
}

edgefn_sdk::handler!(handle, init = init);

#[cfg(test)]
mod tests {
    use super::{decide, Decision};

    #[test]
    fn on_when_present_and_dark_off_when_gone_and_someone_elses_light_left_alone() {
        assert_eq!(decide(true, Some(12.0), 50.0, false, Some(false)), Decision::On);
        assert_eq!(decide(true, Some(12.0), 50.0, false, None), Decision::On, "the light not heard from yet");
        assert_eq!(decide(true, Some(400.0), 50.0, false, Some(false)), Decision::Bright);
        assert_eq!(decide(true, None, 50.0, false, Some(false)), Decision::Nothing, "no light level: no guess");
        assert_eq!(
            decide(true, Some(80.0), 50.0, true, Some(true)),
            Decision::Nothing,
            "its own light brightens the room"
        );
        assert_eq!(decide(false, Some(80.0), 50.0, true, Some(true)), Decision::Off);
        assert_eq!(decide(true, Some(12.0), 50.0, false, Some(true)), Decision::Theirs, "someone switched it on");
        assert_eq!(decide(false, Some(12.0), 50.0, false, Some(true)), Decision::Nothing, "theirs: left on");
    }
}
