//! Timers' last runs on disk: `<gateway.modules_dir>/timers/NAME.json`, a JSON
//! object from trigger text to the last run's due time (ms since the Unix
//! epoch), so a restart keeps each schedule's phase and knows what it missed.
//!
//! Written whole to a temporary file, flushed, and renamed over the old one:
//! a power cut leaves the old file or the new, never half of one. Written at
//! most once a minute per function ([`WRITE_EVERY`]) and at stop: a timer
//! running every second does not write an SD card every second. A crash may
//! so forget up to a minute of runs; a forgotten run counts as missed, so under
//! `run_once` it may run once more after the restart (at least once, never lost).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Longest a function's last runs wait in memory before they are written.
pub const WRITE_EVERY: Duration = Duration::from_secs(60);

/// A function's timers' last runs, by trigger text.
pub type LastRuns = BTreeMap<String, u64>;

fn file(dir: &Path, function: &str) -> PathBuf {
    dir.join(format!("{function}.json"))
}

/// Reads a function's last runs; none when the file is missing. A file that
/// does not parse is set aside (`NAME.json.bad`) and logged: its timers start
/// afresh rather than not at all.
pub fn read(dir: &Path, function: &str) -> LastRuns {
    let path = file(dir, function);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return LastRuns::new(),
        Err(e) => {
            tracing::warn!(function, file = %path.display(), error = %e, "cannot read the timers' last runs; they start afresh");
            return LastRuns::new();
        }
    };
    match serde_json::from_slice(&bytes) {
        Ok(runs) => runs,
        Err(e) => {
            let aside = path.with_extension("json.bad");
            let _ = std::fs::rename(&path, &aside);
            tracing::warn!(function, file = %path.display(), moved_to = %aside.display(), error = %e, "the timers' last runs do not parse; set aside, they start afresh");
            LastRuns::new()
        }
    }
}

/// Writes a function's last runs, replacing the file atomically.
pub fn write(dir: &Path, function: &str, runs: &LastRuns) -> std::io::Result<()> {
    crate::durable::create_dir_all(dir)?;
    crate::durable::replace(&file(dir, function), &serde_json::to_vec(runs).map_err(std::io::Error::other)?)
}

/// Deletes a removed function's last runs.
pub fn forget(dir: &Path, function: &str) {
    let _ = std::fs::remove_file(file(dir, function));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_runs_read_back_and_a_damaged_file_is_set_aside() {
        let dir = tempfile::tempdir().unwrap();
        let timers = dir.path().join("timers");
        assert!(read(&timers, "f").is_empty());
        let runs: LastRuns = [("{ every = \"10s\" }".to_owned(), 42)].into();
        write(&timers, "f", &runs).unwrap();
        assert_eq!(read(&timers, "f"), runs);
        std::fs::write(timers.join("f.json"), b"{\"trunc").unwrap();
        assert!(read(&timers, "f").is_empty());
        assert!(timers.join("f.json.bad").exists());
        forget(&timers, "f");
        assert!(read(&timers, "f").is_empty());
    }
}
