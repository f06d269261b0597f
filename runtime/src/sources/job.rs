//! A job: one invocation to run, and what it owes once its outcome is final.

use std::sync::Arc;

use crate::event::Event;

/// What a job owes once its outcome is final: the broker's PUBACK (shared by
/// every job and forward made of one message), the function spool's
/// acknowledgement (shared by the jobs of one batch read back), or a timer's
/// leave to run again. Whoever holds the last clone and drops it releases it.
pub type Receipt = Arc<dyn Send + Sync>;

/// One invocation to run: which function, on what, fired by which trigger.
pub struct Job {
    /// The function, by name.
    pub function: Arc<str>,
    /// The trigger that fired, as written (`Trigger::text`): what the function
    /// reads with `event_trigger`. By value, so a job spooled before a replace
    /// that reorders or drops triggers still names its own.
    pub trigger: Arc<str>,
    pub event: Arc<Event>,
    /// What it holds until its outcome is final (its output handed on, or the
    /// job dropped and counted). `None` when nobody waits (QoS 0 messages).
    pub delivery: Option<Receipt>,
    /// Read back from the function's spool (`gateway::spool`): left there, not
    /// lost, when the gateway stops before running it.
    pub spooled: bool,
    /// Where the worker puts the invocation's answer to an HTTP request
    /// (`sources::http`); the same answer is the job's `delivery`, so it goes
    /// to the client once the invocation's output has been handed on.
    pub answer: Option<Arc<crate::sources::http::Answer>>,
}
