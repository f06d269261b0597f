//! A greenhouse: the fan on at `above`, off at `below`, with that hysteresis
//! kept in the function's store (so a restart, a new version or a second
//! instance neither forgets the fan nor commands it twice), every command
//! confirmed by the plug's state echo, and an upstream alert when it stays
//! too hot for `alert_after_s` (and another once it has cooled down).
//!
//! ```toml
//! [[functions]]
//! name = "greenhouse"
//! module = "greenhouse.wasm"
//! triggers = ["zigbee2mqtt/greenhouse-climate"]
//! [functions.config]
//! fan = "greenhouse-fan"   # a device with a profile (Tasmota, Shelly, ...)
//! above = 28.0             # °C: the fan on, and too hot
//! below = 25.0             # °C: the fan off, and cool again
//! alert_after_s = 600      # too hot this long: an alert upstream
//! alert_stream = "alerts"  # the upstream stream alerts go to
//! confirm_s = 10           # how long the plug has to echo a command
//! ```
//!
//! The temperature is the reading's `temperature` (the device's profile's
//! normalised field, or the payload's own), whatever the sensor's project.

// On the host (unit tests, `cargo check --target <host>`) the crate links std and its panic handler.
#![cfg_attr(target_arch = "wasm32", no_std)]

mod climate;

use climate::{Alert, Greenhouse, Rules, STATE_LEN};
use edgefn_sdk::event::{self, Kind, Outcome};
use edgefn_sdk::heapless::String;
use edgefn_sdk::json::ObjectWriter;
use edgefn_sdk::{command_confirmed, config, kv, upstream, Error, State};

/// The store key the greenhouse is kept under.
const KEY: &str = "greenhouse";
/// Longest device id or stream name.
const NAME_CAP: usize = 64;

struct Settings {
    fan: String<NAME_CAP>,
    stream: String<NAME_CAP>,
    rules: Rules,
}

impl Settings {
    fn load() -> Result<Self, Error> {
        let above = config::number("above")?.unwrap_or(28.0);
        let below = config::number("below")?.unwrap_or(25.0);
        if below > above {
            return Err(Error::config("below", format_args!("({below}) must not be greater than `above` ({above})")));
        }
        let seconds = |key: &str, default: i64| -> Result<i64, Error> {
            match config::integer(key)?.unwrap_or(default) {
                s if s > 0 => Ok(s * 1000),
                s => Err(Error::config(key, format_args!("({s}) must be a number of seconds above 0"))),
            }
        };
        let rules = Rules {
            above,
            below,
            alert_after_ms: seconds("alert_after_s", 600)?,
            confirm_ms: seconds("confirm_s", 10)?,
        };
        let stream = config::string("alert_stream")?.unwrap_or_else(|| String::try_from("alerts").unwrap_or_default());
        edgefn_sdk::check_stream(&stream)?;
        Ok(Settings { fan: config::required("fan")?, stream, rules })
    }
}

static SETTINGS: State<Option<Settings>> = State::new(None);

/// Reads the greenhouse, changes it with `change`, and writes it back only if
/// no other instance wrote it meanwhile (else all again, on what that one wrote).
fn update<R>(mut change: impl FnMut(&mut Greenhouse) -> R) -> Result<R, Error> {
    loop {
        let mut buf = [0u8; STATE_LEN + 1];
        let old = kv::get(KEY, &mut buf)?.map(|n| &buf[..n.min(buf.len())]);
        let mut greenhouse = old.and_then(Greenhouse::decode).unwrap_or_default();
        let result = change(&mut greenhouse);
        if kv::compare_and_set(KEY, old, Some(&greenhouse.encode()))? {
            return Ok(result);
        }
    }
}

fn handle() -> Result<(), Error> {
    SETTINGS.with_or_init(Settings::load, |settings| match event::kind() {
        Kind::Confirmation => confirmation(settings),
        _ => reading(settings),
    })
}

fn reading(settings: &Settings) -> Result<(), Error> {
    let mut device = [0u8; NAME_CAP];
    let mut payload = [0u8; 2048];
    let Some(event::Reading { device, value }) = event::reading("temperature", &mut device, &mut payload)? else {
        return Ok(()); // logged
    };
    let now = event::time_ms();
    let step = update(|g| g.reading(value, now, &settings.rules))?;
    if let Some(on) = step.command {
        let action = if on { "on" } else { "off" };
        match command_confirmed(&settings.fan, action, settings.rules.confirm_ms as u32) {
            Ok(id) => {
                update(|g| g.sent(on, id))?;
                edgefn_sdk::info!("{device} at {}: fan {action} (command {id})", edgefn_sdk::json::Number(value));
            }
            Err(e) => {
                update(|g| g.not_sent(on))?;
                return Err(e);
            }
        }
    }
    if let Some(alert) = step.alert {
        let mut record: String<256> = String::new();
        let mut o = ObjectWriter::new(&mut record)?;
        let since = match alert {
            Alert::TooHot { since_ms } => {
                o.string("alert", "too_hot")?;
                since_ms
            }
            Alert::Recovered { since_ms } => {
                o.string("alert", "recovered")?;
                since_ms
            }
        };
        o.string("sensor", device)?.number("temperature", value)?.integer("since_ms", since)?;
        o.integer("minutes", (now - since) / 60_000)?;
        o.finish()?;
        upstream(&settings.stream, record.as_bytes())?;
    }
    Ok(())
}

fn confirmation(settings: &Settings) -> Result<(), Error> {
    let Some(c) = event::confirmation() else { return Ok(()) };
    let confirmed = c.outcome == Outcome::Confirmed;
    let ours = update(|g| g.outcome(c.id, confirmed).then_some(g.fan))?;
    if let Some(climate::Fan::On | climate::Fan::Off) = ours {
        let state = if ours == Some(climate::Fan::On) { "on" } else { "off" };
        edgefn_sdk::info!("{}: command {} confirmed: the fan is {state}", settings.fan, c.id);
    } else if ours.is_some() {
        let why = if c.outcome == Outcome::Offline { "the plug went offline" } else { "no echo in time" };
        edgefn_sdk::warn!("{}: command {} not confirmed ({why}); the next reading decides again", settings.fan, c.id);
    }
    Ok(())
}

fn load() -> Result<(), Error> {
    SETTINGS.set(Settings::load()?);
    Ok(())
}

edgefn_sdk::handler!(handle, init = load);
