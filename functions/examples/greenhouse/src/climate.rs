//! The pure part: the greenhouse as the function keeps it in its store, and
//! what a reading or a command's outcome does to it. No host calls, so it is
//! unit-tested on the host.

/// The greenhouse's state in bytes, as kept under one key.
pub const STATE_LEN: usize = 24;

/// The fan as the plug last confirmed it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Fan {
    /// Not confirmed since the function first ran, or a command went unconfirmed.
    #[default]
    Unknown,
    Off,
    On,
}

/// A command sent and not yet confirmed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pending {
    /// On (true) or off.
    pub on: bool,
    /// The id `command_confirmed` returned (0 until it has).
    pub id: u32,
    /// When it was decided.
    pub since_ms: i64,
}

/// Everything the function remembers, across events, restarts and versions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Greenhouse {
    pub fan: Fan,
    pub pending: Option<Pending>,
    /// Since when it has been too hot; 0 when it is not.
    pub hot_since_ms: i64,
    /// Whether this hot spell has been alerted.
    pub alerted: bool,
}

/// The thresholds and times, from the configuration.
#[derive(Clone, Copy, Debug)]
pub struct Rules {
    /// At or above: the fan on, and the greenhouse too hot.
    pub above: f64,
    /// At or below: the fan off, and the hot spell over.
    pub below: f64,
    /// Too hot for this long: alert.
    pub alert_after_ms: i64,
    /// How long a command waits for the plug's echo.
    pub confirm_ms: i64,
}

/// What a reading asks of the function.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Step {
    /// Command the fan on (true) or off.
    pub command: Option<bool>,
    pub alert: Option<Alert>,
}

/// An upstream alert.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Alert {
    /// Too hot since `since_ms`, for longer than `alert_after`.
    TooHot { since_ms: i64 },
    /// The hot spell that began at `since_ms`, alerted, is over.
    Recovered { since_ms: i64 },
}

impl Greenhouse {
    /// A reading of `temperature` at `now_ms`.
    pub fn reading(&mut self, temperature: f64, now_ms: i64, rules: &Rules) -> Step {
        let mut step = Step::default();
        // An outcome that never came (the gateway restarted while the command
        // waited): the plug's state is not known, and the command may go again.
        if self.pending.is_some_and(|p| now_ms - p.since_ms > 2 * rules.confirm_ms) {
            self.pending = None;
            self.fan = Fan::Unknown;
        }
        let want = if temperature >= rules.above {
            Some(true)
        } else if temperature <= rules.below {
            Some(false)
        } else {
            None
        };
        if let Some(on) = want {
            let have = match self.pending {
                Some(p) => Some(p.on),
                None => match self.fan {
                    Fan::On => Some(true),
                    Fan::Off => Some(false),
                    Fan::Unknown => None,
                },
            };
            if have != Some(on) {
                step.command = Some(on);
                self.pending = Some(Pending { on, id: 0, since_ms: now_ms });
            }
        }
        if temperature >= rules.above {
            if self.hot_since_ms == 0 {
                self.hot_since_ms = now_ms;
            }
            if !self.alerted && now_ms - self.hot_since_ms >= rules.alert_after_ms {
                self.alerted = true;
                step.alert = Some(Alert::TooHot { since_ms: self.hot_since_ms });
            }
        } else if temperature <= rules.below && self.hot_since_ms != 0 {
            if self.alerted {
                step.alert = Some(Alert::Recovered { since_ms: self.hot_since_ms });
            }
            self.hot_since_ms = 0;
            self.alerted = false;
        }
        step
    }

    /// The command decided for `on` went out as `id`.
    pub fn sent(&mut self, on: bool, id: u32) {
        if let Some(p) = self.pending.as_mut().filter(|p| p.on == on && p.id == 0) {
            p.id = id;
        }
    }

    /// The command decided for `on` could not be sent: it may be decided again.
    pub fn not_sent(&mut self, on: bool) {
        if self.pending.is_some_and(|p| p.on == on && p.id == 0) {
            self.pending = None;
        }
    }

    /// Command `id` was confirmed or not; false when it is not the command
    /// waited for (an older one, superseded).
    pub fn outcome(&mut self, id: u32, confirmed: bool) -> bool {
        let Some(p) = self.pending.filter(|p| p.id == id) else { return false };
        self.pending = None;
        self.fan = match (confirmed, p.on) {
            (true, true) => Fan::On,
            (true, false) => Fan::Off,
            // Unconfirmed: the next reading decides again.
            (false, _) => Fan::Unknown,
        };
        true
    }

    pub fn encode(&self) -> [u8; STATE_LEN] {
        let mut out = [0u8; STATE_LEN];
        out[0] = match self.fan {
            Fan::Unknown => 0,
            Fan::Off => 1,
            Fan::On => 2,
        };
        if let Some(p) = self.pending {
            out[1] = 1 + p.on as u8;
            out[4..8].copy_from_slice(&p.id.to_le_bytes());
            out[8..16].copy_from_slice(&p.since_ms.to_le_bytes());
        }
        out[2] = self.alerted as u8;
        out[16..24].copy_from_slice(&self.hot_since_ms.to_le_bytes());
        out
    }

    /// What [`Greenhouse::encode`] wrote; `None` for anything else (then the
    /// function starts afresh rather than act on a misread state).
    pub fn decode(bytes: &[u8]) -> Option<Greenhouse> {
        let bytes: &[u8; STATE_LEN] = bytes.try_into().ok()?;
        let i64_at = |at: usize| i64::from_le_bytes(bytes[at..at + 8].try_into().unwrap_or_default());
        let fan = match bytes[0] {
            0 => Fan::Unknown,
            1 => Fan::Off,
            2 => Fan::On,
            _ => return None,
        };
        let pending = match bytes[1] {
            0 => None,
            1 | 2 => Some(Pending {
                on: bytes[1] == 2,
                id: u32::from_le_bytes(bytes[4..8].try_into().unwrap_or_default()),
                since_ms: i64_at(8),
            }),
            _ => return None,
        };
        Some(Greenhouse { fan, pending, hot_since_ms: i64_at(16), alerted: bytes[2] == 1 })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULES: Rules = Rules { above: 28.0, below: 25.0, alert_after_ms: 600_000, confirm_ms: 10_000 };
    const MIN: i64 = 60_000;

    #[test]
    fn the_fan_is_commanded_once_per_change_with_hysteresis_and_only_confirmed_state_counts() {
        let mut g = Greenhouse::default();
        assert_eq!(g.reading(24.0, 0, &RULES).command, Some(false), "an unknown fan is told off");
        g.sent(false, 1);
        assert_eq!(g.reading(24.5, 1_000, &RULES).command, None, "waiting for its echo");
        assert!(g.outcome(1, true));
        assert_eq!(g.fan, Fan::Off);
        assert_eq!(g.reading(27.9, 2_000, &RULES).command, None, "between the thresholds");
        assert_eq!(g.reading(28.0, 3_000, &RULES).command, Some(true));
        g.sent(true, 2);
        assert_eq!(g.reading(26.0, 4_000, &RULES).command, None);
        assert!(g.outcome(2, false), "timed out");
        assert_eq!(g.fan, Fan::Unknown);
        assert_eq!(g.reading(28.5, 5_000, &RULES).command, Some(true), "unconfirmed: asked again");
        g.sent(true, 3);
        assert!(!g.outcome(2, true), "an old command's outcome changes nothing");
        assert_eq!(g.reading(29.0, 60_000, &RULES).command, Some(true), "its outcome was lost: asked again");
    }

    #[test]
    fn staying_too_hot_past_the_alert_time_alerts_once_and_recovery_is_told() {
        const T0: i64 = 1_765_000_000_000;
        let mut g = Greenhouse::default();
        assert_eq!(g.reading(29.0, T0, &RULES).alert, None);
        assert_eq!(g.reading(27.0, T0 + 5 * MIN, &RULES).alert, None, "between the thresholds: still the same spell");
        assert_eq!(g.reading(28.5, T0 + 10 * MIN, &RULES).alert, Some(Alert::TooHot { since_ms: T0 }));
        assert_eq!(g.reading(30.0, T0 + 11 * MIN, &RULES).alert, None, "once per spell");
        assert_eq!(g.reading(25.0, T0 + 12 * MIN, &RULES).alert, Some(Alert::Recovered { since_ms: T0 }));
        assert_eq!(g.reading(29.0, T0 + 13 * MIN, &RULES).alert, None, "a new spell starts");
        assert_eq!(g.reading(24.0, T0 + 14 * MIN, &RULES).alert, None, "not alerted: no recovery to tell");
    }

    #[test]
    fn the_state_reads_back_as_written_and_a_misread_one_is_refused() {
        let mut g = Greenhouse { fan: Fan::On, hot_since_ms: 1_765_000_000_000, alerted: true, ..Default::default() };
        g.pending = Some(Pending { on: false, id: 77, since_ms: -5 });
        assert_eq!(Greenhouse::decode(&g.encode()), Some(g));
        assert_eq!(Greenhouse::decode(&Greenhouse::default().encode()), Some(Greenhouse::default()));
        assert_eq!(Greenhouse::decode(&[9; STATE_LEN]), None);
        assert_eq!(Greenhouse::decode(&[0; 3]), None);
    }
}
