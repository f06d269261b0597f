//! The pure part: a fixed ring of recent readings per device. No host calls, so
//! it is unit-tested on the host.

use edgefn_sdk::heapless::{LinearMap, String};
use edgefn_sdk::text;

/// Most devices tracked; readings from further devices are ignored.
pub const MAX_DEVICES: usize = 32;

/// Longest device id, in bytes.
pub const DEVICE_ID_CAP: usize = 128;

/// Largest `window` setting, and the readings kept per device.
pub const MAX_WINDOW: usize = 64;

/// The last `MAX_WINDOW` readings of one device.
#[derive(Clone)]
pub struct Window {
    /// Readings in a ring; `next` is where the next one goes.
    values: [f64; MAX_WINDOW],
    /// Index of the slot the next reading overwrites.
    next: usize,
    /// How many slots hold readings (at most `MAX_WINDOW`).
    len: usize,
}

impl Window {
    /// An empty window.
    pub const fn new() -> Self {
        Self { values: [0.0; MAX_WINDOW], next: 0, len: 0 }
    }

    /// Adds a reading, dropping the oldest once the ring is full.
    pub fn push(&mut self, value: f64) {
        self.values[self.next] = value;
        self.next = (self.next + 1) % MAX_WINDOW;
        self.len = (self.len + 1).min(MAX_WINDOW);
    }

    /// The mean of the latest `window` readings (fewer if fewer were seen) and
    /// how many that was; `(NaN, 0)` before the first reading.
    pub fn average(&self, window: usize) -> (f64, usize) {
        let n = window.min(self.len);
        // Summed afresh each time: no drift from adding and subtracting floats.
        let sum: f64 = (1..=n).map(|back| self.values[(self.next + MAX_WINDOW - back) % MAX_WINDOW]).sum();
        (sum / n as f64, n)
    }
}

/// One window per device, up to `MAX_DEVICES`.
pub struct Windows {
    /// Device id to its readings.
    by_device: LinearMap<String<DEVICE_ID_CAP>, Window, MAX_DEVICES>,
}

impl Windows {
    /// No device seen yet.
    pub const fn new() -> Self {
        Self { by_device: LinearMap::new() }
    }

    /// The window of `device`, created if there is room; `None` when the table is full.
    pub fn get_or_insert(&mut self, device: &str) -> Option<&mut Window> {
        let at = match self.position(device) {
            Some(at) => at,
            None => {
                let mut id = String::new();
                id.push_str(device).ok()?;
                self.by_device.insert(id, Window::new()).ok()?;
                self.position(device)?
            }
        };
        self.by_device.values_mut().nth(at)
    }

    /// Where `device` is in the table. Compared with `same_bytes`: `==` on
    /// strings calls `memcmp`, which costs the interpreter more than the rest
    /// of the lookup.
    fn position(&self, device: &str) -> Option<usize> {
        self.by_device.keys().position(|id| text::same_bytes(id.as_bytes(), device.as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn averages_the_latest_readings() {
        let mut window = Window::new();
        assert_eq!(window.average(3).1, 0);
        window.push(1.0);
        assert_eq!(window.average(3), (1.0, 1));
        for value in [2.0, 3.0, 4.0] {
            window.push(value);
        }
        assert_eq!(window.average(3), (3.0, 3));
        assert_eq!(window.average(64), (2.5, 4));
    }

    #[test]
    fn wraps_around_the_ring() {
        let mut window = Window::new();
        for value in 0..200 {
            window.push(f64::from(value));
        }
        assert_eq!(window.average(2), (198.5, 2));
        assert_eq!(window.average(MAX_WINDOW), ((136..200).sum::<i32>() as f64 / 64.0, 64));
    }

    #[test]
    fn bounds_the_devices() {
        let mut windows = Windows::new();
        for n in 0..MAX_DEVICES {
            windows.get_or_insert(&format!("d{n}")).unwrap().push(1.0);
        }
        assert!(windows.get_or_insert("new").is_none());
        assert_eq!(windows.get_or_insert("d3").unwrap().average(10), (1.0, 1));
    }
}
