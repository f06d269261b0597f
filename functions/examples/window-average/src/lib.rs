//! Rolling average: for every reading that has the configured field, publishes
//! the average of that device's last `window` readings as derived telemetry:
//! `{"device":"gh-1","field":"temperature","avg":21.4,"n":10,"ts":1700000000000}`.
//!
//! Configuration (see `settings.rs`): `field`, `window` (10, 1..=64), `topic`
//! (`edgefn/derived/{device}/{field}_avg`), `qos` (0), `upstream_stream` (unset:
//! when set, the same JSON also goes upstream as a record on that stream).

// On the host (unit tests, `cargo check --target <host>`) the crate links std and its panic handler.
#![cfg_attr(target_arch = "wasm32", no_std)]

mod settings;
mod window;

use edgefn_sdk::heapless::String;
use edgefn_sdk::json::ObjectWriter;
use edgefn_sdk::{event, publish, text, upstream, warn, Error, State};

use settings::Settings;
use window::{Windows, DEVICE_ID_CAP, MAX_DEVICES};

/// Largest payload read; bigger messages are skipped with a warning.
const PAYLOAD_CAP: usize = 4096;

/// Longest topic after `{device}` and `{field}` are filled in.
const TOPIC_CAP: usize = 256;

/// Longest derived message.
const OUTPUT_CAP: usize = 512;

/// The configuration, read and validated once by `init`: the host hands an
/// instance the same values every time, so events never read it again.
static SETTINGS: State<Option<Settings>> = State::new(None);

/// Each device's recent readings, kept for the instance's lifetime.
static WINDOWS: State<Windows> = State::new(Windows::new());

/// Handles one reading: add it to the device's window and publish the average.
fn on_reading() -> Result<(), Error> {
    // Loads only if the host skipped `init`, which ABI v1 never does.
    SETTINGS.with_or_init(Settings::load, |settings| handle_reading(settings))
}

/// Handles one reading with the instance's settings.
///
/// The interpreter charges a function's whole body on every call, taken
/// branches or not, so the steps live in functions of their own and the rare
/// paths (warnings, errors) stay out of line.
fn handle_reading(settings: &Settings) -> Result<(), Error> {
    let mut device_buf = [0u8; DEVICE_ID_CAP];
    let mut payload_buf = [0u8; PAYLOAD_CAP];
    let Some(event::Reading { device, value }) = event::reading(&settings.field, &mut device_buf, &mut payload_buf)?
    else {
        return Ok(()); // skipped, and logged
    };
    WINDOWS.with(|windows| {
        let Some(window) = windows.get_or_insert(device) else {
            warn_table_full(device);
            return Ok(());
        };
        // Work on a copy so a failed publish leaves the window as it was.
        let mut next = window.clone();
        next.push(value);
        let (avg, n) = next.average(settings.window);
        let vars = [("{device}", device), ("{field}", settings.field.as_str())];
        let topic = text::substitute::<TOPIC_CAP>(&settings.topic, &vars)?;
        let mut out: String<OUTPUT_CAP> = String::new();
        write_average(&mut out, device, &settings.field, avg, n)?;
        publish(&topic, out.as_bytes(), settings.qos, false)?;
        if let Some(stream) = &settings.upstream_stream {
            // `Sent::NotConfigured` (no upstream on this gateway) is fine: the
            // local publish above is the function's main output.
            upstream(stream, out.as_bytes())?;
        }
        *window = next;
        Ok(())
    })
}

/// Writes the derived message:
/// `{"device":"gh-1","field":"temperature","avg":21.4,"n":10,"ts":1700000000000}`.
#[inline(never)]
fn write_average(out: &mut String<OUTPUT_CAP>, device: &str, field: &str, avg: f64, n: usize) -> Result<(), Error> {
    let mut object = ObjectWriter::new(out)?;
    object.string("device", device)?.string("field", field)?;
    object.number("avg", avg)?.integer("n", n as i64)?.integer("ts", event::time_ms())?;
    object.finish()
}

/// Logs a reading dropped because the device table is full.
#[cold]
#[inline(never)]
fn warn_table_full(device: &str) {
    warn!("`{device}` ignored: already tracking {MAX_DEVICES} devices");
}

/// Reads and validates the configuration once per instance, so a bad one fails
/// the load, and keeps it for the events.
fn load_settings() -> Result<(), Error> {
    SETTINGS.set(Settings::load()?);
    Ok(())
}

edgefn_sdk::handler!(on_reading, init = load_settings);
