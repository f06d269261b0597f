//! Capped exponential backoff with jitter, for reconnects. Pure: the caller
//! supplies the randomness, so tests are exact.

use std::time::Duration;

/// Delays between reconnect attempts: doubling from `min` up to `max`, each
/// jittered into the upper half of its step so a fleet that lost one broker does
/// not reconnect in lockstep.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    /// Failed attempts since the last success.
    attempts: u32,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Self {
        Backoff { min, max: max.max(min), attempts: 0 }
    }

    /// The delay before the next attempt; `unit` is a random number in `[0, 1)`.
    pub fn next_delay(&mut self, unit: f64) -> Duration {
        let step = self.min.saturating_mul(1u32 << self.attempts.min(20)).min(self.max);
        self.attempts = self.attempts.saturating_add(1);
        step.mul_f64(0.5 + 0.5 * unit.clamp(0.0, 1.0))
    }

    /// Call after a successful connection: the next failure starts from `min` again.
    pub fn reset(&mut self) {
        self.attempts = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn doubles_up_to_the_cap() {
        let mut b = Backoff::new(ms(100), ms(1_000));
        let delays: Vec<_> = (0..6).map(|_| b.next_delay(1.0)).collect();
        assert_eq!(delays, [ms(100), ms(200), ms(400), ms(800), ms(1_000), ms(1_000)]);
    }

    #[test]
    fn jitter_stays_in_the_upper_half() {
        let mut b = Backoff::new(ms(100), ms(1_000));
        assert_eq!(b.next_delay(0.0), ms(50));
        assert_eq!(b.next_delay(0.5), ms(150));
    }

    #[test]
    fn reset_starts_over() {
        let mut b = Backoff::new(ms(100), ms(1_000));
        b.next_delay(1.0);
        b.next_delay(1.0);
        b.reset();
        assert_eq!(b.next_delay(1.0), ms(100));
    }

    #[test]
    fn many_failures_do_not_overflow() {
        let mut b = Backoff::new(ms(100), ms(30_000));
        for _ in 0..1_000 {
            assert!(b.next_delay(1.0) <= ms(30_000));
        }
    }
}
