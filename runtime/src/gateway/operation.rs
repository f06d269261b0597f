//! What a caller asks of the running gateway (a deploy, a remove, a
//! rollback), and why a change was refused: typed, so that the control
//! socket, the HTTP API and a fleet rollout can each answer by kind.

/// Why a change to the running gateway was refused; nothing changed.
#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    /// A section a running gateway cannot change.
    #[error("{section} changed: that needs a restart (`systemctl restart edgefn`)")]
    NeedsRestart { section: &'static str },
    /// The version asked for (a deploy's, a rollback's) does not load.
    #[error("{error}")]
    DoesNotLoad { function: String, error: String },
    /// Some function does not load and `gateway.strict` refuses the whole change.
    #[error("{0} (gateway.strict = true)")]
    Strict(String),
    /// A task of the gateway's own failed (a bug: logged with it).
    #[error("{0}")]
    Internal(String),
}

/// What a deploy, a remove and a rollback ask of the running gateway, typed:
/// the control socket's requests end here (and so will the HTTP API's and a
/// fleet rollout's).
pub enum Operation {
    /// Install or replace this function; its module must load, or nothing changes.
    Put(Box<crate::config::FunctionSpec>),
    /// Remove the function of this name, once what it has queued has run.
    Remove(String),
}
