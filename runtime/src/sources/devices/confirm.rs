//! Confirmed commands, the pure core: what a command's sender waits to see
//! from the device (its state echo, as its profile reads it), until when, and
//! the outcome each pending command comes to: confirmed, timed out, or the
//! device gone offline first. No I/O, no clock.

use std::sync::Arc;

use crate::profile::{Action, Reading, Value};

/// Most commands waiting for confirmation at once: a function confirming
/// commands to a device that never answers cannot grow the gateway's memory.
pub const MAX_PENDING: usize = 1024;

/// What confirms an action.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Expect {
    /// The relay's state is this.
    On(bool),
    /// The brightness is this percentage, give or take one.
    Brightness(u8),
}

impl Expect {
    /// What confirms `action`; a toggle needs the state it was sent from
    /// (`None`: unknown, so no echo can confirm it).
    pub fn of(action: Action, was_on: Option<bool>) -> Option<Expect> {
        Some(match action {
            Action::On => Expect::On(true),
            Action::Off | Action::Brightness(0) => Expect::On(false),
            Action::Toggle => Expect::On(!was_on?),
            Action::Brightness(p) => Expect::Brightness(p),
        })
    }

    fn met(&self, reading: &Reading) -> bool {
        match (self, reading.get("on"), reading.get("brightness")) {
            (Expect::On(want), Some(Value::Bool(on)), _) => on == want,
            (Expect::Brightness(want), _, Some(Value::Number(b))) => (b - f64::from(*want)).abs() <= 1.0,
            _ => false,
        }
    }
}

/// How a confirmed command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Confirmed,
    TimedOut,
    /// The device went offline before it confirmed.
    Offline,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Confirmed => "confirmed",
            Outcome::TimedOut => "timed_out",
            Outcome::Offline => "offline",
        }
    }
}

/// A command waiting for its device's echo.
#[derive(Debug, Clone)]
pub struct Pending {
    pub id: u64,
    /// The function that sent it, which is told the outcome.
    pub function: Arc<str>,
    pub device: Arc<str>,
    pub action: Action,
    /// `None`: nothing can confirm it (a toggle from an unknown state); it times out.
    pub expect: Option<Expect>,
    pub deadline_ms: u64,
}

/// A pending command's outcome.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub pending: Pending,
    pub outcome: Outcome,
    pub at_ms: u64,
}

/// Every command waiting for confirmation.
#[derive(Debug, Default)]
pub struct Confirmations {
    pending: Vec<Pending>,
}

impl Confirmations {
    /// Waits for `pending`'s echo; refused (handed back) when [`MAX_PENDING`] wait already.
    pub fn add(&mut self, pending: Pending) -> Result<(), Pending> {
        if self.pending.len() >= MAX_PENDING {
            return Err(pending);
        }
        self.pending.push(pending);
        Ok(())
    }

    /// `device` reported `reading`: the commands it confirms.
    pub fn read(&mut self, device: &str, reading: &Reading, now_ms: u64) -> Vec<Resolved> {
        self.take(now_ms, Outcome::Confirmed, |p| &*p.device == device && p.expect.is_some_and(|e| e.met(reading)))
    }

    /// `device` went offline: its commands will not be confirmed.
    pub fn offline(&mut self, device: &str, now_ms: u64) -> Vec<Resolved> {
        self.take(now_ms, Outcome::Offline, |p| &*p.device == device)
    }

    /// Commands past their deadline.
    pub fn expire(&mut self, now_ms: u64) -> Vec<Resolved> {
        self.take(now_ms, Outcome::TimedOut, |p| now_ms >= p.deadline_ms)
    }

    pub fn next_deadline(&self) -> Option<u64> {
        self.pending.iter().map(|p| p.deadline_ms).min()
    }

    /// Whether any command waits on `device`: else a reading need not be looked at.
    pub fn waits_on(&self, device: &str) -> bool {
        self.pending.iter().any(|p| &*p.device == device)
    }

    fn take(&mut self, now_ms: u64, outcome: Outcome, done: impl Fn(&Pending) -> bool) -> Vec<Resolved> {
        let mut resolved = Vec::new();
        let mut i = 0;
        while i < self.pending.len() {
            if done(&self.pending[i]) {
                resolved.push(Resolved { pending: self.pending.remove(i), outcome, at_ms: now_ms });
            } else {
                i += 1;
            }
        }
        resolved
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(id: u64, device: &str, action: Action, was_on: Option<bool>, deadline_ms: u64) -> Pending {
        Pending {
            id,
            function: "f".into(),
            device: device.into(),
            action,
            expect: Expect::of(action, was_on),
            deadline_ms,
        }
    }

    fn reading(fields: &[(&str, Value)]) -> Reading {
        Reading(fields.iter().map(|(n, v)| (n.to_string(), v.clone())).collect())
    }

    fn outcomes(resolved: Vec<Resolved>) -> Vec<(u64, Outcome)> {
        resolved.into_iter().map(|r| (r.pending.id, r.outcome)).collect()
    }

    #[test]
    fn the_state_echo_confirms_only_what_was_asked_of_that_device() {
        let mut c = Confirmations::default();
        c.add(pending(1, "fan", Action::On, None, 1_000)).unwrap();
        c.add(pending(2, "lamp", Action::Brightness(50), None, 1_000)).unwrap();
        assert_eq!(outcomes(c.read("fan", &reading(&[("on", Value::Bool(false))]), 10)), []);
        assert_eq!(outcomes(c.read("lamp", &reading(&[("on", Value::Bool(true))]), 10)), [], "no brightness yet");
        assert_eq!(outcomes(c.read("fan", &reading(&[("power", Value::Number(4.0))]), 20)), [], "no state in it");
        assert_eq!(outcomes(c.read("fan", &reading(&[("on", Value::Bool(true))]), 30)), [(1, Outcome::Confirmed)]);
        assert_eq!(
            outcomes(c.read("lamp", &reading(&[("brightness", Value::Number(51.0))]), 40)),
            [(2, Outcome::Confirmed)]
        );
        assert_eq!(c.next_deadline(), None);
    }

    #[test]
    fn a_toggle_is_confirmed_by_the_opposite_of_the_state_it_was_sent_from() {
        assert_eq!(Expect::of(Action::Toggle, Some(true)), Some(Expect::On(false)));
        assert_eq!(Expect::of(Action::Toggle, None), None, "unknown before: nothing can confirm it");
        assert_eq!(Expect::of(Action::Brightness(0), None), Some(Expect::On(false)));
        let mut c = Confirmations::default();
        c.add(pending(3, "fan", Action::Toggle, None, 500)).unwrap();
        assert_eq!(outcomes(c.read("fan", &reading(&[("on", Value::Bool(true))]), 10)), []);
        assert_eq!(outcomes(c.expire(500)), [(3, Outcome::TimedOut)]);
    }

    #[test]
    fn silence_times_out_and_going_offline_ends_every_command_to_the_device() {
        let mut c = Confirmations::default();
        c.add(pending(1, "fan", Action::On, None, 1_000)).unwrap();
        c.add(pending(2, "fan", Action::Off, None, 5_000)).unwrap();
        c.add(pending(3, "lamp", Action::On, None, 2_000)).unwrap();
        assert_eq!(c.next_deadline(), Some(1_000));
        assert_eq!(outcomes(c.expire(999)), []);
        assert_eq!(outcomes(c.expire(1_000)), [(1, Outcome::TimedOut)]);
        assert_eq!(outcomes(c.offline("fan", 1_500)), [(2, Outcome::Offline)]);
        assert!(c.waits_on("lamp") && !c.waits_on("fan"));
    }

    #[test]
    fn at_most_max_pending_wait_at_once() {
        let mut c = Confirmations::default();
        for id in 0..MAX_PENDING as u64 {
            c.add(pending(id, "fan", Action::On, None, 1_000)).unwrap();
        }
        assert_eq!(c.add(pending(9_999, "fan", Action::On, None, 1_000)).unwrap_err().id, 9_999);
    }
}
