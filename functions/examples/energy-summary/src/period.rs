//! The pure part: one plug's period, as kept in the function's store, and the
//! summary it makes. No host calls, so it is unit-tested on the host.

/// A period in bytes, as kept under `period/<device>`.
pub const PERIOD_LEN: usize = 36;

/// What the readings of one plug since the last summary add up to.
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub struct Period {
    /// The energy counter (kWh) when the period began: the last reading of
    /// the one before, or the period's first reading.
    pub start_kwh: f64,
    /// The counter at the last reading.
    pub last_kwh: f64,
    /// The highest power read (W).
    pub max_w: f64,
    /// Readings in the period.
    pub readings: u32,
    /// When the period began (ms since the Unix epoch).
    pub from_ms: i64,
}

impl Period {
    /// A reading of the plug's energy counter and power at `now_ms`.
    pub fn read(&mut self, kwh: Option<f64>, watts: Option<f64>, now_ms: i64) {
        if self.readings == 0 && self.from_ms == 0 {
            self.from_ms = now_ms;
        }
        if let Some(kwh) = kwh {
            // The first counter ever, or a counter that went back (the plug
            // was reset): the period counts from here.
            if self.start_kwh == 0.0 && self.last_kwh == 0.0 || kwh < self.last_kwh {
                self.start_kwh = kwh;
            }
            self.last_kwh = kwh;
        }
        if let Some(w) = watts {
            self.max_w = self.max_w.max(w);
        }
        self.readings += 1;
    }

    /// The energy used in the period, in kWh, to the watt-hour.
    pub fn kwh(&self) -> f64 {
        // `f64::round` is std's: rounded by hand, the used energy being positive.
        let wh = ((self.last_kwh - self.start_kwh) * 1000.0 + 0.5) as i64;
        wh as f64 / 1000.0
    }

    /// The next period, from `now_ms`, counting from the last reading.
    pub fn next(&self, now_ms: i64) -> Period {
        Period { start_kwh: self.last_kwh, last_kwh: self.last_kwh, max_w: 0.0, readings: 0, from_ms: now_ms }
    }

    pub fn encode(&self) -> [u8; PERIOD_LEN] {
        let mut out = [0u8; PERIOD_LEN];
        out[0..8].copy_from_slice(&self.start_kwh.to_le_bytes());
        out[8..16].copy_from_slice(&self.last_kwh.to_le_bytes());
        out[16..24].copy_from_slice(&self.max_w.to_le_bytes());
        out[24..28].copy_from_slice(&self.readings.to_le_bytes());
        out[28..36].copy_from_slice(&self.from_ms.to_le_bytes());
        out
    }

    /// What [`Period::encode`] wrote; `None` for anything else.
    pub fn decode(bytes: &[u8]) -> Option<Period> {
        let b: &[u8; PERIOD_LEN] = bytes.try_into().ok()?;
        let f = |at: usize| f64::from_le_bytes(b[at..at + 8].try_into().unwrap_or_default());
        Some(Period {
            start_kwh: f(0),
            last_kwh: f(8),
            max_w: f(16),
            readings: u32::from_le_bytes(b[24..28].try_into().unwrap_or_default()),
            from_ms: i64::from_le_bytes(b[28..36].try_into().unwrap_or_default()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_period_counts_the_energy_between_its_readings_and_the_next_starts_where_it_ended() {
        let mut p = Period::default();
        p.read(Some(12.345), Some(5.0), 1_000);
        p.read(Some(12.500), Some(1500.0), 2_000);
        p.read(Some(12.845), Some(80.0), 3_000);
        assert_eq!((p.kwh(), p.max_w, p.readings, p.from_ms), (0.5, 1500.0, 3, 1_000));
        let mut next = p.next(3_600_000);
        assert_eq!((next.kwh(), next.readings), (0.0, 0));
        next.read(Some(13.0), None, 3_601_000);
        assert_eq!((next.kwh(), next.from_ms), (0.155, 3_600_000), "counted from the last reading before");
        next.read(Some(0.010), Some(3.0), 3_602_000);
        assert_eq!(next.kwh(), 0.0, "a reset counter starts the count again");
        assert_eq!(Period::decode(&next.encode()), Some(next));
        assert_eq!(Period::decode(&[1, 2, 3]), None);
    }
}
