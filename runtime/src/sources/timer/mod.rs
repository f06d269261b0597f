//! The timer source: runs functions on intervals, cron expressions and at
//! start. A shell around [`plan`] (which decides): one tokio task owns the
//! plan, reads the wall clock, sleeps until the next run, offers each run's job
//! to the sink and keeps last runs on disk (`state.rs`, on the blocking pool).
//!
//! A timer whose previous run is still queued or running is not queued again:
//! each run's job holds the timer's token as its receipt, and a timer whose
//! token is held is counted as `timer_skipped` instead. So a slow function
//! never piles up timer events.

mod plan;
mod state;

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::{Change, Job, Receipt, Sink, Source, Tally};
use crate::event::{unix_ms, Event};
use crate::trigger::Timer;
use plan::{Plan, Run};

/// Longest the task sleeps between two looks at the clock: a wall clock that
/// steps (NTP on a Pi with no real-time clock) is noticed within this.
const LOOK_EVERY: Duration = Duration::from_secs(1);

enum Command {
    Set(Arc<str>, Vec<(Arc<str>, Timer)>),
    Remove(Arc<str>),
}

/// The running timer source.
pub struct TimerSource {
    commands: mpsc::UnboundedSender<Command>,
    task: tokio::task::JoinHandle<()>,
}

impl TimerSource {
    /// Starts the source on the current tokio runtime; last runs are kept in `dir`.
    pub fn start(sink: Arc<dyn Sink>, dir: PathBuf) -> TimerSource {
        let (commands, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(Task::new(sink, dir).run(rx));
        TimerSource { commands, task }
    }
}

impl Source for TimerSource {
    fn change(&mut self, change: Change<'_>) {
        let command = match change {
            Change::Set(spec) => {
                let timers: Vec<_> = spec
                    .triggers
                    .iter()
                    .filter_map(|t| t.timer().map(|timer| (Arc::from(t.text()), timer.clone())))
                    .collect();
                Command::Set(Arc::from(spec.name.as_str()), timers)
            }
            Change::Remove(name) => Command::Remove(Arc::from(name)),
        };
        // The task ends only when this source is stopped.
        let _ = self.commands.send(command);
    }

    fn stop(self: Box<Self>) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        let TimerSource { commands, task } = *self;
        drop(commands);
        Box::pin(async move {
            let _ = task.await;
        })
    }
}

struct Task {
    sink: Arc<dyn Sink>,
    dir: PathBuf,
    plan: Plan,
    /// Each timer's token: held by its run's job until the run's outcome is final.
    tokens: HashMap<(Arc<str>, Arc<str>), Arc<()>>,
    /// Functions whose last runs changed since written, and when each was last written.
    unwritten: HashMap<Arc<str>, bool>,
    written_at: HashMap<Arc<str>, u64>,
    rng: u64,
}

impl Task {
    fn new(sink: Arc<dyn Sink>, dir: PathBuf) -> Task {
        let seed = unix_ms() ^ (u64::from(std::process::id()) << 32) ^ 0x9e37_79b9_7f4a_7c15;
        Task {
            sink,
            dir,
            plan: Plan::default(),
            tokens: HashMap::new(),
            unwritten: HashMap::new(),
            written_at: HashMap::new(),
            rng: seed,
        }
    }

    async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>) {
        loop {
            let now = unix_ms();
            let mut rng = self.rng;
            let runs = self.plan.due(now, &mut |bound| random_up_to(&mut rng, bound));
            self.rng = rng;
            self.start_runs(runs);
            self.write_due(now, false).await;
            let wait = self.plan.next_fire().map_or(LOOK_EVERY, |at| Duration::from_millis(at.saturating_sub(now)));
            tokio::select! {
                command = commands.recv() => match command {
                    None => break,
                    Some(Command::Set(function, timers)) => self.set(function, timers).await,
                    Some(Command::Remove(function)) => self.remove(function).await,
                },
                _ = tokio::time::sleep(wait.min(LOOK_EVERY)) => {}
            }
        }
        self.write_due(unix_ms(), true).await;
    }

    async fn set(&mut self, function: Arc<str>, timers: Vec<(Arc<str>, Timer)>) {
        let (dir, name) = (self.dir.clone(), function.clone());
        let last = tokio::task::spawn_blocking(move || state::read(&dir, &name)).await.unwrap_or_default();
        let mut rng = self.rng;
        let runs = self
            .plan
            .set(&function, timers, &|t| last.get(t).copied(), unix_ms(), &mut |bound| random_up_to(&mut rng, bound));
        self.rng = rng;
        self.start_runs(runs);
    }

    async fn remove(&mut self, function: Arc<str>) {
        self.plan.remove(&function);
        self.tokens.retain(|(f, _), _| *f != function);
        self.unwritten.remove(&function);
        self.written_at.remove(&function);
        let dir = self.dir.clone();
        let _ = tokio::task::spawn_blocking(move || state::forget(&dir, &function)).await;
    }

    fn start_runs(&mut self, runs: Vec<Run>) {
        for run in runs {
            let token = self.tokens.entry((run.function.clone(), run.trigger.clone())).or_default();
            if Arc::strong_count(token) > 1 {
                self.sink.tally(Tally::TimerSkipped);
                tracing::debug!(function = %run.function, trigger = %run.trigger, "timer due while its previous run is still queued or running; skipped");
            } else {
                self.sink.tally(Tally::TimerRun);
                let receipt: Receipt = token.clone();
                self.sink.offer_or_drop(Job {
                    function: run.function.clone(),
                    trigger: run.trigger,
                    event: Arc::new(Event::timer(run.due_ms)),
                    delivery: Some(receipt),
                    spooled: false,
                    answer: None,
                });
            }
            if !self.plan.last_runs(&run.function).is_empty() {
                self.unwritten.insert(run.function, true);
            }
        }
    }

    /// Writes the last runs of functions that have waited [`state::WRITE_EVERY`]
    /// (all of them when `all`).
    async fn write_due(&mut self, now: u64, all: bool) {
        let every = state::WRITE_EVERY.as_millis() as u64;
        let due: Vec<Arc<str>> = self
            .unwritten
            .keys()
            .filter(|f| all || self.written_at.get(*f).is_none_or(|at| now.saturating_sub(*at) >= every))
            .cloned()
            .collect();
        for function in due {
            self.unwritten.remove(&function);
            self.written_at.insert(function.clone(), now);
            let (dir, runs) = (self.dir.clone(), self.plan.last_runs(&function));
            let name = function.clone();
            let written = tokio::task::spawn_blocking(move || state::write(&dir, &name, &runs)).await;
            if let Ok(Err(e)) = written {
                tracing::warn!(function = %function, dir = %self.dir.display(), error = %e, "cannot write the timers' last runs; a restart may take runs as missed");
            }
        }
    }
}

/// A random number in `0..=bound` (splitmix64: jitter needs spread, not secrecy).
fn random_up_to(state: &mut u64, bound: u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    z % (bound + 1)
}
