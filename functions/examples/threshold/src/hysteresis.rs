//! The pure part: classifying readings and remembering, per device, the last
//! command sent. No host calls, so it is unit-tested on the host.

use edgefn_sdk::heapless::{LinearMap, String};

/// Most devices whose state is tracked; readings from further devices are ignored.
pub const MAX_DEVICES: usize = 32;

/// Longest device id, in bytes.
pub const DEVICE_ID_CAP: usize = 128;

/// Which command a device should have.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    /// The reading reached `above`.
    High,
    /// The reading fell to `below`.
    Low,
}

/// What to do about a reading.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Publish the command for this level, then [`Devices::commit`] it.
    Send(Level),
    /// Nothing: the level is unchanged, or the reading lies between the thresholds.
    Keep,
    /// Nothing: the device is new and the table is full.
    TooManyDevices,
}

/// The level a reading asks for: HIGH at or above `above`, LOW at or below
/// `below`, `None` strictly between (keep the current state). With
/// `below == above`, everything below `above` is LOW.
pub fn classify(value: f64, above: f64, below: f64) -> Option<Level> {
    if value >= above {
        Some(Level::High)
    } else if value <= below {
        Some(Level::Low)
    } else {
        None
    }
}

/// The last command sent to each device.
pub struct Devices {
    /// Device id to the level last commanded.
    sent: LinearMap<String<DEVICE_ID_CAP>, Level, MAX_DEVICES>,
}

impl Devices {
    /// No device seen yet.
    pub const fn new() -> Self {
        Self { sent: LinearMap::new() }
    }

    /// Decides whether `device` needs a command for a reading classified `level`.
    pub fn decide(&self, device: &str, level: Option<Level>) -> Decision {
        let Some(level) = level else {
            return Decision::Keep;
        };
        match self.sent.iter().find(|(id, _)| id.as_str() == device) {
            Some((_, &last)) if last == level => Decision::Keep,
            Some(_) => Decision::Send(level),
            None if self.sent.is_full() => Decision::TooManyDevices,
            None => Decision::Send(level),
        }
    }

    /// Records that `level` was commanded to `device` (after a `Send` decision).
    pub fn commit(&mut self, device: &str, level: Level) {
        let mut id = String::new();
        // The id was read into a buffer of `DEVICE_ID_CAP` bytes, so it fits; and
        // `decide` said there is room, so the insert cannot fail either.
        if id.push_str(device).is_ok() {
            let _ = self.sent.insert(id, level);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `readings` for one device, returning the commands that would be sent.
    fn run(devices: &mut Devices, device: &str, readings: &[f64], above: f64, below: f64) -> Vec<Level> {
        let mut sent = Vec::new();
        for &value in readings {
            if let Decision::Send(level) = devices.decide(device, classify(value, above, below)) {
                devices.commit(device, level);
                sent.push(level);
            }
        }
        sent
    }

    #[test]
    fn hysteresis_band_keeps_the_state() {
        let mut devices = Devices::new();
        let sent = run(&mut devices, "gh-1", &[25.0, 29.0, 30.0, 31.0, 29.0, 26.0, 25.0, 24.0, 29.0], 30.0, 25.0);
        assert_eq!(sent, [Level::Low, Level::High, Level::Low]);
    }

    #[test]
    fn first_reading_in_the_band_sends_nothing() {
        let mut devices = Devices::new();
        assert_eq!(run(&mut devices, "gh-1", &[27.0, 28.0, 31.0], 30.0, 25.0), [Level::High]);
    }

    #[test]
    fn equal_thresholds_split_at_above() {
        assert_eq!(classify(30.0, 30.0, 30.0), Some(Level::High));
        assert_eq!(classify(29.9, 30.0, 30.0), Some(Level::Low));
    }

    #[test]
    fn devices_are_independent() {
        let mut devices = Devices::new();
        assert_eq!(run(&mut devices, "a", &[31.0], 30.0, 25.0), [Level::High]);
        assert_eq!(run(&mut devices, "b", &[31.0, 20.0], 30.0, 25.0), [Level::High, Level::Low]);
        assert_eq!(run(&mut devices, "a", &[32.0], 30.0, 25.0), []);
    }

    #[test]
    fn the_table_is_bounded() {
        let mut devices = Devices::new();
        for n in 0..MAX_DEVICES {
            run(&mut devices, &format!("d{n}"), &[31.0], 30.0, 25.0);
        }
        assert_eq!(devices.decide("new", Some(Level::High)), Decision::TooManyDevices);
        assert_eq!(devices.decide("d0", Some(Level::Low)), Decision::Send(Level::Low));
    }
}
