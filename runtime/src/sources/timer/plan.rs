//! When each timer runs next: the timer source's decisions, with no clock, no
//! disk and no randomness of its own. Time comes in as `now` (milliseconds
//! since the Unix epoch), jitter from the caller, and runs go out as values.
//!
//! The rules:
//! - `every` runs one interval after the function was installed, then every
//!   interval; with a recorded last run, one interval after it (the phase
//!   survives a restart).
//! - `cron` runs at each time its expression matches, in its zone.
//! - `start` runs once each time the function is set (installed, replaced, or
//!   the gateway started).
//! - Runs due while the gateway was down are *missed*: under `skip` none of
//!   them runs; under `run_once` one run at once stands in for them all.
//! - Runs due while the gateway ran but could not keep up (a suspended
//!   machine, a clock stepped forward) are skipped alike: a timer never runs
//!   twice in a row to catch up.
//! - A clock stepped back does not stall a timer: a run planned further ahead
//!   than its schedule allows from `now` is planned again from `now`.
//! - Jitter delays each run by up to its bound; the next run is planned from
//!   the due time, not from the delayed one, so jitter never drifts a schedule.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::trigger::{Missed, Schedule, Timer};

/// One timer run: the function, the trigger (its text), and when it was due
/// (before jitter): what `event_time_ms` reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    pub function: Arc<str>,
    pub trigger: Arc<str>,
    pub due_ms: u64,
}

/// A random delay of at most the given milliseconds.
pub type Jitter<'a> = &'a mut dyn FnMut(u64) -> u64;

struct Planned {
    timer: Timer,
    /// Next run, before jitter; `None`: nothing more (past a cron expression's end).
    due_ms: Option<u64>,
    /// `due_ms` plus this run's jitter.
    fire_at_ms: u64,
    /// The last run's due time, kept across restarts (`state.rs`).
    last_ms: Option<u64>,
}

/// Every timer of every function, by function and trigger text.
#[derive(Default)]
pub struct Plan {
    timers: BTreeMap<(Arc<str>, Arc<str>), Planned>,
}

impl Plan {
    /// Serves `function`'s timers as they are now (installed or replaced):
    /// a timer it had already keeps its plan, a new one is planned from its
    /// recorded last run (`last`), timers it no longer has go. Returns the runs
    /// due at once: its start triggers, and a missed run under `run_once`.
    pub fn set(
        &mut self,
        function: &Arc<str>,
        timers: Vec<(Arc<str>, Timer)>,
        last: &dyn Fn(&str) -> Option<u64>,
        now: u64,
        jitter: Jitter<'_>,
    ) -> Vec<Run> {
        let mut runs = Vec::new();
        let mut kept = BTreeMap::new();
        for (trigger, timer) in timers {
            let key = (function.clone(), trigger.clone());
            if let Schedule::Start = timer.schedule {
                runs.push(Run { function: function.clone(), trigger, due_ms: now });
                continue;
            }
            if let Some(planned) = self.timers.remove(&key) {
                kept.insert(key, planned);
                continue;
            }
            let mut last_ms = last(&trigger);
            let (missed, due_ms) = first_due(&timer, last_ms, now);
            if let (Some(missed), Missed::RunOnce) = (missed, timer.missed) {
                runs.push(Run { function: function.clone(), trigger, due_ms: missed });
                last_ms = Some(missed);
            }
            let fire_at_ms = with_jitter(due_ms, &timer, jitter);
            kept.insert(key, Planned { timer, due_ms, fire_at_ms, last_ms });
        }
        self.remove(function);
        self.timers.extend(kept);
        runs
    }

    /// Forgets a function's timers.
    pub fn remove(&mut self, function: &str) {
        self.timers.retain(|(f, _), _| &**f != function);
    }

    /// The runs due by `now`, each timer's next run planned after it.
    pub fn due(&mut self, now: u64, jitter: Jitter<'_>) -> Vec<Run> {
        let mut runs = Vec::new();
        for ((function, trigger), p) in &mut self.timers {
            let Some(due) = p.due_ms else { continue };
            // A clock stepped back: plan from now, not from a time far ahead.
            if let Some(soonest) = p.timer.next_after(now) {
                if due > soonest {
                    p.due_ms = Some(soonest);
                    p.fire_at_ms = with_jitter(Some(soonest), &p.timer, jitter);
                    continue;
                }
            }
            if p.fire_at_ms > now {
                continue;
            }
            runs.push(Run { function: function.clone(), trigger: trigger.clone(), due_ms: due });
            p.last_ms = Some(due);
            p.due_ms = next_due(&p.timer, due, now);
            p.fire_at_ms = with_jitter(p.due_ms, &p.timer, jitter);
        }
        runs
    }

    /// When the next run fires (with its jitter), if any timer has one.
    pub fn next_fire(&self) -> Option<u64> {
        self.timers.values().filter(|p| p.due_ms.is_some()).map(|p| p.fire_at_ms).min()
    }

    /// A function's timers' last runs, by trigger text: what `state.rs` keeps.
    pub fn last_runs(&self, function: &str) -> BTreeMap<String, u64> {
        self.timers
            .iter()
            .filter(|((f, _), _)| &**f == function)
            .filter_map(|((_, t), p)| p.last_ms.map(|ms| (t.to_string(), ms)))
            .collect()
    }
}

/// A new timer's first due time, and the latest run it missed while the
/// gateway was down, if any.
fn first_due(timer: &Timer, last: Option<u64>, now: u64) -> (Option<u64>, Option<u64>) {
    let Some(last) = last.filter(|l| *l <= now) else { return (None, timer.next_after(now)) };
    match timer.next_after(last) {
        Some(next) if next <= now => {
            let missed = match &timer.schedule {
                Schedule::Every(d) => {
                    let d = d.as_millis() as u64;
                    last + (now - last) / d * d
                }
                _ => timer.last_at_or_before(now).unwrap_or(next),
            };
            (Some(missed), next_due(timer, missed, now))
        }
        next => (None, next),
    }
}

/// The run after `due`, strictly after `now` (runs in between are skipped).
fn next_due(timer: &Timer, due: u64, now: u64) -> Option<u64> {
    let next = timer.next_after(due)?;
    if next > now {
        return Some(next);
    }
    match &timer.schedule {
        // Keep the phase: the first run of the series after now.
        Schedule::Every(d) => {
            let d = d.as_millis() as u64;
            Some(due + ((now - due) / d + 1) * d)
        }
        _ => timer.next_after(now),
    }
}

fn with_jitter(due: Option<u64>, timer: &Timer, jitter: Jitter<'_>) -> u64 {
    let Some(due) = due else { return u64::MAX };
    let bound = timer.jitter.as_millis() as u64;
    due + if bound == 0 { 0 } else { jitter(bound).min(bound) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trigger::{RawTrigger, Trigger};

    /// 2026-12-07T10:00:00Z.
    const T0: u64 = 1_796_637_600_000;

    fn timers(texts: &[&str]) -> Vec<(Arc<str>, Timer)> {
        texts
            .iter()
            .map(|t| {
                let trigger = Trigger::parse(&RawTrigger::from_arg(t).unwrap()).unwrap();
                (Arc::from(trigger.text()), trigger.timer().unwrap().clone())
            })
            .collect()
    }

    fn no_jitter(_: u64) -> u64 {
        0
    }

    fn never(_: &str) -> Option<u64> {
        None
    }

    fn f() -> Arc<str> {
        Arc::from("f")
    }

    fn due_times(runs: &[Run]) -> Vec<u64> {
        runs.iter().map(|r| r.due_ms).collect()
    }

    #[test]
    fn an_interval_runs_one_interval_after_install_then_every_interval() {
        let mut plan = Plan::default();
        assert!(plan.set(&f(), timers(&["{ every = \"10s\" }"]), &never, T0, &mut no_jitter).is_empty());
        assert_eq!(plan.next_fire(), Some(T0 + 10_000));
        assert!(plan.due(T0 + 9_999, &mut no_jitter).is_empty());
        let runs = plan.due(T0 + 10_000, &mut no_jitter);
        assert_eq!(runs, [Run { function: f(), trigger: "{ every = \"10s\" }".into(), due_ms: T0 + 10_000 }]);
        assert_eq!(due_times(&plan.due(T0 + 20_003, &mut no_jitter)), [T0 + 20_000]);
        assert_eq!(plan.next_fire(), Some(T0 + 30_000));
        assert_eq!(plan.last_runs("f").into_values().collect::<Vec<_>>(), [T0 + 20_000]);
    }

    #[test]
    fn a_gateway_that_could_not_keep_up_runs_once_not_once_per_missed_interval() {
        let mut plan = Plan::default();
        plan.set(&f(), timers(&["{ every = \"10s\" }"]), &never, T0, &mut no_jitter);
        // Suspended for a minute.
        assert_eq!(due_times(&plan.due(T0 + 65_000, &mut no_jitter)), [T0 + 10_000]);
        assert!(plan.due(T0 + 65_000, &mut no_jitter).is_empty());
        // The phase holds: the next run is on the 10 s grid.
        assert_eq!(plan.next_fire(), Some(T0 + 70_000));
    }

    #[test]
    fn a_cron_expression_runs_at_each_match() {
        let mut plan = Plan::default();
        plan.set(&f(), timers(&["{ cron = \"*/15 * * * * *\" }"]), &never, T0 + 1, &mut no_jitter);
        assert_eq!(plan.next_fire(), Some(T0 + 15_000));
        assert_eq!(due_times(&plan.due(T0 + 15_000, &mut no_jitter)), [T0 + 15_000]);
        assert_eq!(plan.next_fire(), Some(T0 + 30_000));
    }

    #[test]
    fn jitter_delays_each_run_within_its_bound_and_never_drifts_the_schedule() {
        let mut plan = Plan::default();
        let mut asked = Vec::new();
        let mut jitter = |bound: u64| {
            asked.push(bound);
            // An out-of-range random value is held to the bound.
            if asked.len() == 2 {
                bound * 3
            } else {
                bound / 2
            }
        };
        plan.set(&f(), timers(&["{ every = \"10s\", jitter = \"4s\" }"]), &never, T0, &mut jitter);
        assert_eq!(plan.next_fire(), Some(T0 + 12_000));
        assert!(plan.due(T0 + 11_999, &mut jitter).is_empty());
        let runs = plan.due(T0 + 12_000, &mut jitter);
        // Due at 10 s (what the function reads), fired at 12 s.
        assert_eq!(due_times(&runs), [T0 + 10_000]);
        assert_eq!(plan.next_fire(), Some(T0 + 20_000 + 4_000));
        plan.due(T0 + 24_000, &mut jitter);
        assert_eq!(plan.next_fire(), Some(T0 + 30_000 + 2_000));
        assert_eq!(asked, [4_000, 4_000, 4_000]);
    }

    #[test]
    fn start_runs_each_time_the_function_is_set() {
        let mut plan = Plan::default();
        let both = || timers(&["{ start = true }", "{ every = \"1h\" }"]);
        let runs = plan.set(&f(), both(), &never, T0, &mut no_jitter);
        assert_eq!(runs, [Run { function: f(), trigger: "{ start = true }".into(), due_ms: T0 }]);
        // Replaced: start runs again; the interval keeps its plan.
        let runs = plan.set(&f(), both(), &never, T0 + 5_000, &mut no_jitter);
        assert_eq!(due_times(&runs), [T0 + 5_000]);
        assert_eq!(plan.next_fire(), Some(T0 + 3_600_000));
        assert!(plan.last_runs("f").is_empty(), "start runs are not kept");
    }

    #[test]
    fn a_missed_run_is_skipped_by_default_and_the_phase_kept() {
        let mut plan = Plan::default();
        let last = |_: &str| Some(T0);
        // Down for 35 minutes; every 10 minutes.
        let runs = plan.set(&f(), timers(&["{ every = \"10m\" }"]), &last, T0 + 35 * 60_000, &mut no_jitter);
        assert!(runs.is_empty());
        assert_eq!(plan.next_fire(), Some(T0 + 40 * 60_000));
    }

    #[test]
    fn missed_runs_under_run_once_run_once_at_start() {
        let mut plan = Plan::default();
        let last = |_: &str| Some(T0);
        let now = T0 + 35 * 60_000;
        let runs = plan.set(&f(), timers(&["{ every = \"10m\", missed = \"run_once\" }"]), &last, now, &mut no_jitter);
        // One run, for the latest missed time (30 min), then on the grid.
        assert_eq!(due_times(&runs), [T0 + 30 * 60_000]);
        assert_eq!(plan.next_fire(), Some(T0 + 40 * 60_000));
        assert_eq!(plan.last_runs("f").into_values().collect::<Vec<_>>(), [T0 + 30 * 60_000]);
        // Not missed: nothing at start.
        let mut plan = Plan::default();
        let recent = |_: &str| Some(now - 60_000);
        let runs =
            plan.set(&f(), timers(&["{ every = \"10m\", missed = \"run_once\" }"]), &recent, now, &mut no_jitter);
        assert!(runs.is_empty());
        assert_eq!(plan.next_fire(), Some(now + 9 * 60_000));
    }

    #[test]
    fn a_missed_cron_run_under_run_once_names_the_latest_match() {
        let mut plan = Plan::default();
        // Hourly at :00; last run at 10:00; back at 13:20.
        let last = |_: &str| Some(T0);
        let now = T0 + 3 * 3_600_000 + 20 * 60_000;
        let runs =
            plan.set(&f(), timers(&["{ cron = \"0 * * * *\", missed = \"run_once\" }"]), &last, now, &mut no_jitter);
        assert_eq!(due_times(&runs), [T0 + 3 * 3_600_000]);
        assert_eq!(plan.next_fire(), Some(T0 + 4 * 3_600_000));
        let mut plan = Plan::default();
        let runs = plan.set(&f(), timers(&["{ cron = \"0 * * * *\" }"]), &last, now, &mut no_jitter);
        assert!(runs.is_empty());
    }

    #[test]
    fn a_clock_stepped_back_does_not_stall_an_interval() {
        let mut plan = Plan::default();
        plan.set(&f(), timers(&["{ every = \"10s\" }"]), &never, T0, &mut no_jitter);
        // The clock goes back an hour (a Pi without a real-time clock, before NTP).
        let back = T0 - 3_600_000;
        assert!(plan.due(back, &mut no_jitter).is_empty());
        assert_eq!(plan.next_fire(), Some(back + 10_000));
        assert_eq!(due_times(&plan.due(back + 10_000, &mut no_jitter)), [back + 10_000]);
    }

    #[test]
    fn a_replaced_function_loses_the_timers_it_no_longer_has_and_a_removed_one_all() {
        let mut plan = Plan::default();
        plan.set(&f(), timers(&["{ every = \"10s\" }", "{ every = \"1m\" }"]), &never, T0, &mut no_jitter);
        plan.set(&"g".into(), timers(&["{ every = \"5s\" }"]), &never, T0, &mut no_jitter);
        plan.set(&f(), timers(&["{ every = \"1m\" }"]), &never, T0 + 1_000, &mut no_jitter);
        let runs = plan.due(T0 + 60_000, &mut no_jitter);
        let fired: Vec<_> = runs.iter().map(|r| (&*r.function, &*r.trigger)).collect();
        assert_eq!(fired, [("f", "{ every = \"1m\" }"), ("g", "{ every = \"5s\" }")]);
        plan.remove("f");
        let runs = plan.due(T0 + 120_000, &mut no_jitter);
        assert_eq!(runs.iter().map(|r| &*r.function).collect::<Vec<_>>(), ["g"]);
    }
}
