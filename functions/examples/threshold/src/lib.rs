//! Threshold with hysteresis: turns a device (a greenhouse fan, say) on when a
//! reading reaches `above` and off when it falls to `below`, and publishes a
//! command only when that decision changes, per device.
//!
//! Configuration (see `settings.rs`): `field`, `above`, `below`, `command_topic`
//! (may hold `{device}`), `high_payload` ("ON"), `low_payload` ("OFF"), `qos` (1),
//! `retain` (false); or, instead of the topic and payloads, `command_device`: a
//! configured device with a profile, commanded `on` and `off` by name.

// On the host (unit tests, `cargo check --target <host>`) the crate links std and its panic handler.
#![cfg_attr(target_arch = "wasm32", no_std)]

mod hysteresis;
mod settings;

use edgefn_sdk::{command, event, json, publish, text, warn, Error, State};

use hysteresis::{Decision, Devices};
use settings::{Settings, Target};

/// Largest payload read; bigger messages are skipped with a warning.
const PAYLOAD_CAP: usize = 4096;

/// Longest command topic after `{device}` is filled in.
const TOPIC_CAP: usize = 256;

/// The configuration, read and validated once by `init`: the host hands an
/// instance the same values every time, so events never read it again.
static SETTINGS: State<Option<Settings>> = State::new(None);

/// The last command sent to each device, kept for the instance's lifetime.
static DEVICES: State<Devices> = State::new(Devices::new());

/// Handles one reading: classify it, and command the device if its state changed.
fn on_reading() -> Result<(), Error> {
    // Loads only if the host skipped `init`, which ABI v1 never does.
    SETTINGS.with_or_init(Settings::load, |settings| handle_reading(settings))
}

/// Handles one reading with the instance's settings.
fn handle_reading(settings: &Settings) -> Result<(), Error> {
    let mut device_buf = [0u8; hysteresis::DEVICE_ID_CAP];
    let mut payload_buf = [0u8; PAYLOAD_CAP];
    let Some(event::Reading { device, value }) = event::reading(&settings.field, &mut device_buf, &mut payload_buf)?
    else {
        return Ok(()); // skipped, and logged
    };
    let level = hysteresis::classify(value, settings.above, settings.below);
    DEVICES.with(|devices| match devices.decide(device, level) {
        Decision::Send(level) => {
            match &settings.target {
                Target::Topic(template) => {
                    let topic = text::substitute::<TOPIC_CAP>(template, &[("{device}", device)])?;
                    let payload = settings.payload(level);
                    publish(&topic, payload.as_bytes(), settings.qos, settings.retain)?;
                    sent(device, settings, value, payload, &topic);
                }
                Target::Device(target) => {
                    let action = if level == hysteresis::Level::High { "on" } else { "off" };
                    command(target, action)?;
                    sent(device, settings, value, action, target);
                }
            }
            // Only now: a failed command leaves the device's state as it was.
            devices.commit(device, level);
            Ok(())
        }
        Decision::Keep => Ok(()),
        Decision::TooManyDevices => {
            warn!("`{device}` ignored: already tracking {} devices", hysteresis::MAX_DEVICES);
            Ok(())
        }
    })
}

/// Logs a command sent.
fn sent(device: &str, settings: &Settings, value: f64, what: &str, to: &str) {
    edgefn_sdk::info!(
        "`{device}` {}={}: sent {what} to {to}",
        settings.field,
        // Same text as `{value}`, cheaper for the interpreter.
        json::Number(value)
    );
}

/// Reads and validates the configuration once per instance, so a bad one fails
/// the load, and keeps it for the events.
fn load_settings() -> Result<(), Error> {
    SETTINGS.set(Settings::load()?);
    Ok(())
}

edgefn_sdk::handler!(on_reading, init = load_settings);
