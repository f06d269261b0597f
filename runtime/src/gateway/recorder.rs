//! Recordings in progress (`edgefn record`): whose invocations the workers
//! write to a file (`crate::recording`), and until how many or when.
//!
//! A worker asks [`Recorders::get`] before each invocation: one atomic load
//! while nothing records. A recording ends by itself at its count or its
//! time, so one left behind by a client that went away costs nothing.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::recording::{write_line, Entry, Header};
use crate::sync::lock;

/// The recordings of a gateway, by function name.
#[derive(Default)]
pub struct Recorders {
    /// How many are writing: none, and a worker looks no further.
    active: AtomicUsize,
    by_function: Mutex<HashMap<String, Arc<Recording>>>,
}

/// One function's recording.
pub struct Recording {
    path: PathBuf,
    max: u64,
    until: Instant,
    inner: Mutex<Inner>,
}

struct Inner {
    /// `None` once finished.
    out: Option<BufWriter<File>>,
    written: u64,
    error: Option<String>,
}

/// Where a recording stands, for `edgefn record`'s progress.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordingStatus {
    pub path: String,
    pub written: u64,
    pub max: u64,
    /// Finished: by its count, its time, or an error; the file is complete and synced.
    pub done: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Recorders {
    /// Starts recording the invocations of `header.function` into `path`
    /// (made anew), at most `max` of them and for at most `duration`; a
    /// recording of the same function already running is finished first.
    pub fn start(
        &self,
        header: &Header,
        path: &Path,
        max: u64,
        duration: Duration,
        now: Instant,
    ) -> std::io::Result<()> {
        let mut out = BufWriter::new(File::create(path)?);
        write_line(&mut out, header)?;
        out.flush()?;
        let recording = Arc::new(Recording {
            path: path.to_owned(),
            max,
            until: now + duration,
            inner: Mutex::new(Inner { out: Some(out), written: 0, error: None }),
        });
        let earlier = lock(&self.by_function).insert(header.function.clone(), recording);
        self.active.fetch_add(1, Ordering::Relaxed);
        if let Some(earlier) = earlier {
            earlier.finish(self);
        }
        Ok(())
    }

    /// Whether any recording is writing: one atomic load.
    pub fn any(&self) -> bool {
        self.active.load(Ordering::Relaxed) > 0
    }

    /// The recording `function`'s next invocation goes to, if one is writing.
    pub fn get(&self, function: &str, now: Instant) -> Option<Arc<Recording>> {
        if self.active.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let recording = lock(&self.by_function).get(function).cloned()?;
        if now >= recording.until {
            recording.finish(self);
            return None;
        }
        let writing = lock(&recording.inner).out.is_some();
        writing.then_some(recording)
    }

    /// Where `function`'s latest recording stands (finishing it when its time is up).
    pub fn status(&self, function: &str, now: Instant) -> Option<RecordingStatus> {
        let recording = lock(&self.by_function).get(function).cloned()?;
        if now >= recording.until {
            recording.finish(self);
        }
        let inner = lock(&recording.inner);
        Some(RecordingStatus {
            path: recording.path.display().to_string(),
            written: inner.written,
            max: recording.max,
            done: inner.out.is_none(),
            error: inner.error.clone(),
        })
    }
}

impl Recording {
    /// Writes one invocation (`entry` is given its number); the recording
    /// finishes at its count, or at the first error (kept for the status).
    pub fn write(&self, recorders: &Recorders, entry: impl FnOnce(u64) -> Entry) {
        let mut inner = lock(&self.inner);
        let inner = &mut *inner;
        let Some(out) = inner.out.as_mut() else { return };
        let n = inner.written + 1;
        // One line, flushed whole: a gateway killed meanwhile leaves whole lines.
        match write_line(out, &entry(n)).and_then(|()| out.flush()) {
            Ok(()) => inner.written = n,
            Err(e) => inner.error = Some(format!("{}: {e}", self.path.display())),
        }
        if inner.written >= self.max || inner.error.is_some() {
            close(inner, recorders);
        }
    }

    fn finish(&self, recorders: &Recorders) {
        close(&mut lock(&self.inner), recorders);
    }
}

/// Syncs and closes the file, once.
fn close(inner: &mut Inner, recorders: &Recorders) {
    let Some(out) = inner.out.take() else { return };
    recorders.active.fetch_sub(1, Ordering::Relaxed);
    let synced = out.into_inner().map_err(|e| e.into_error()).and_then(|file| file.sync_all());
    if let Err(e) = synced {
        inner.error.get_or_insert_with(|| e.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recording::{Blob, RecordedEvent};

    fn header(function: &str) -> Header {
        Header {
            edgefn_recording: crate::recording::VERSION,
            function: function.into(),
            module: "builtin:threshold".into(),
            gateway: "edgefn test".into(),
            started_ms: 0,
            fuel: 1,
            memory_bytes: 1,
            timeout_ms: 1,
        }
    }

    fn entry(n: u64) -> Entry {
        let event = RecordedEvent::of(&crate::event::Event::message("t".into(), &b"1"[..], None));
        Entry { n, trigger: "t".into(), event, answers: Vec::new(), effects: Vec::new(), fuel: n }
    }

    #[test]
    fn a_recording_stops_at_its_count_and_nothing_else_is_asked_for_after() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.jsonl");
        let recorders = Recorders::default();
        let now = Instant::now();
        assert!(recorders.get("f", now).is_none());
        recorders.start(&header("f"), &path, 2, Duration::from_secs(60), now).unwrap();
        assert!(recorders.get("other", now).is_none());
        for _ in 0..2 {
            recorders.get("f", now).expect("recording").write(&recorders, entry);
        }
        assert!(recorders.get("f", now).is_none(), "a third invocation is not recorded");
        assert_eq!(recorders.active.load(Ordering::Relaxed), 0);
        let status = recorders.status("f", now).unwrap();
        assert_eq!((status.written, status.done, status.error), (2, true, None));
        let (read_header, entries) = crate::recording::read(&path).unwrap();
        assert_eq!(read_header, header("f"));
        assert_eq!(entries.iter().map(|e| e.n).collect::<Vec<_>>(), [1, 2]);
        assert_eq!(entries[0].event.payload, Blob::Text("1".into()));
    }

    #[test]
    fn a_recording_ends_at_its_time_with_or_without_another_invocation() {
        let dir = tempfile::tempdir().unwrap();
        let recorders = Recorders::default();
        let now = Instant::now();
        recorders.start(&header("f"), &dir.path().join("f"), 100, Duration::from_secs(10), now).unwrap();
        recorders.start(&header("g"), &dir.path().join("g"), 100, Duration::from_secs(10), now).unwrap();
        recorders.get("f", now).unwrap().write(&recorders, entry);
        let later = now + Duration::from_secs(10);
        assert!(recorders.get("f", later).is_none());
        assert!(recorders.status("f", later).unwrap().done);
        // Nobody invoked g: asking where it stands ends it.
        let g = recorders.status("g", later).unwrap();
        assert_eq!((g.written, g.done), (0, true));
        assert_eq!(recorders.active.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_new_recording_of_the_same_function_finishes_the_last() {
        let dir = tempfile::tempdir().unwrap();
        let recorders = Recorders::default();
        let now = Instant::now();
        recorders.start(&header("f"), &dir.path().join("a"), 100, Duration::from_secs(10), now).unwrap();
        recorders.start(&header("f"), &dir.path().join("b"), 100, Duration::from_secs(10), now).unwrap();
        assert_eq!(recorders.active.load(Ordering::Relaxed), 1);
        assert!(recorders.status("f", now).unwrap().path.ends_with('b'));
    }
}
