//! Function state: a key-value store per function, namespaced by its name,
//! bounded in bytes, kept across restarts, new versions, kill -9 and power loss.
//!
//! One file per function (`<state_dir>/<name>.kv`): a log of framed records
//! (the outbox's frame: length, CRC32, body), each a key and its new value or
//! its deletion, replayed into memory at open. Every change is written to the
//! file when it is made, so the kernel has it (a kill -9 loses nothing); the
//! worker syncs a store an invocation changed before that invocation's
//! publishes, upstream records and acknowledgement leave the gateway, so
//! nothing outside ever depends on state a power cut could take back. A torn
//! last record (a write cut short) is dropped at open. When the log holds more
//! than twice the live data it is rewritten to a new file, synced, and renamed
//! over the old one.
//!
//! Changes take effect when made, for every instance of the function at once
//! (compare-and-set is atomic under the store's lock), and are not undone if
//! the invocation later fails ([decision 32](../../../docs/decisions/32-function-state.md)).

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::outbox::frame;

/// Longest key, in bytes.
pub const MAX_KEY_BYTES: usize = 256;
/// What an entry costs beside its key and value (its share of the map).
const ENTRY_OVERHEAD: usize = 32;

/// Why a change was refused (the function is told: -4).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("the function's state would hold more than limits.state_max_bytes ({max} bytes)")]
    Full { max: usize },
    #[error("the state file could not be written: {0}")]
    Disk(String),
}

/// A key a function may use: 1 to 256 bytes of UTF-8, no newline or NUL
/// (`state_keys` separates keys with newlines).
pub fn check_key(key: &str) -> Result<(), String> {
    if key.is_empty() || key.len() > MAX_KEY_BYTES {
        return Err(format!("a key is 1 to {MAX_KEY_BYTES} bytes, not {}", key.len()));
    }
    if key.contains(['\n', '\0']) {
        return Err("a key may not hold a newline or NUL".into());
    }
    Ok(())
}

/// One change as the log stores it.
#[derive(Debug, Serialize, Deserialize)]
struct Change<'a> {
    key: &'a str,
    /// The new value; `None`: deleted.
    value: Option<&'a [u8]>,
}

/// Every function's store, opened once and shared by its instances and versions.
pub struct Stores {
    dir: PathBuf,
    open: Mutex<HashMap<Arc<str>, Arc<Store>>>,
}

impl Stores {
    pub fn new(dir: PathBuf) -> Stores {
        Stores { dir, open: Mutex::new(HashMap::new()) }
    }

    /// The store of `function` if it has been opened (by a state call).
    pub fn get(&self, function: &str) -> Option<Arc<Store>> {
        crate::sync::lock(&self.open).get(function).cloned()
    }

    /// The store of `function`, opened (and recovered) on first use, its bound
    /// set to `max_bytes` (a new version's limit applies from its install).
    pub fn open(&self, function: &str, max_bytes: usize) -> std::io::Result<Arc<Store>> {
        let mut open = crate::sync::lock(&self.open);
        if let Some(store) = open.get(function) {
            crate::sync::lock(&store.inner).max_bytes = max_bytes;
            return Ok(store.clone());
        }
        crate::durable::create_dir_all(&self.dir)?;
        let store = Arc::new(Store::open(&self.dir.join(format!("{function}.kv")), max_bytes)?);
        open.insert(Arc::from(function), store.clone());
        Ok(store)
    }
}

/// One function's state.
pub struct Store {
    inner: Mutex<Inner>,
    /// Changes refused (over the bound, or the disk failed): `state_refused`.
    refused: std::sync::atomic::AtomicU64,
}

struct Inner {
    map: BTreeMap<String, Vec<u8>>,
    /// What the entries cost, counted against `max_bytes`.
    bytes: usize,
    max_bytes: usize,
    path: PathBuf,
    file: File,
    /// Bytes in the log file.
    log_bytes: u64,
    /// Written since the last sync.
    dirty: bool,
    /// Reused encoding buffer.
    scratch: Vec<u8>,
}

fn cost(key: &str, value: &[u8]) -> usize {
    key.len() + value.len() + ENTRY_OVERHEAD
}

impl Store {
    /// Opens the log at `path` (created if absent), replays it, and cuts off a
    /// torn or damaged tail.
    pub fn open(path: &Path, max_bytes: usize) -> std::io::Result<Store> {
        let mut file = OpenOptions::new().read(true).append(true).create(true).open(path)?;
        // A log created now must keep its name through a power cut.
        if let Some(dir) = path.parent() {
            crate::durable::sync_dir(dir)?;
        }
        let mut data = Vec::new();
        file.read_to_end(&mut data)?;
        let mut map = BTreeMap::new();
        let mut good = 0;
        let tail = frame::scan(&data, |at, body| {
            if let Ok(change) = postcard::from_bytes::<Change>(body) {
                match change.value {
                    Some(v) => map.insert(change.key.to_owned(), v.to_vec()),
                    None => map.remove(change.key),
                };
            }
            good = at + frame::HEADER + body.len();
        });
        if tail != frame::Tail::Clean {
            tracing::warn!(path = %path.display(), ?tail, "function state: a damaged or torn last write was dropped");
            file.set_len(good as u64)?;
            file.sync_data()?;
        }
        let bytes = map.iter().map(|(k, v)| cost(k, v)).sum();
        let inner = Inner {
            map,
            bytes,
            max_bytes,
            path: path.to_owned(),
            file,
            log_bytes: good as u64,
            dirty: false,
            scratch: Vec::new(),
        };
        Ok(Store { inner: Mutex::new(inner), refused: Default::default() })
    }

    /// Calls `read` with the value of `key`, if any.
    pub fn with<R>(&self, key: &str, read: impl FnOnce(Option<&[u8]>) -> R) -> R {
        read(crate::sync::lock(&self.inner).map.get(key).map(|v| &v[..]))
    }

    /// Sets `key` to `value`.
    pub fn set(&self, key: &str, value: &[u8]) -> Result<(), Refused> {
        crate::sync::lock(&self.inner).change(key, Some(value))
    }

    /// Deletes `key`; whether it was there.
    pub fn delete(&self, key: &str) -> Result<bool, Refused> {
        let mut inner = crate::sync::lock(&self.inner);
        if !inner.map.contains_key(key) {
            return Ok(false);
        }
        inner.change(key, None).map(|()| true)
    }

    /// Sets `key` to `new` (deletes it if `None`) only if its value is now
    /// `expected` (`None`: absent), atomically; whether it did.
    pub fn compare_and_set(&self, key: &str, expected: Option<&[u8]>, new: Option<&[u8]>) -> Result<bool, Refused> {
        let mut inner = crate::sync::lock(&self.inner);
        if inner.map.get(key).map(|v| &v[..]) != expected {
            return Ok(false);
        }
        if new.is_none() && expected.is_none() {
            return Ok(true);
        }
        inner.change(key, new).map(|()| true)
    }

    /// The keys that start with `prefix`, in order.
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        let inner = crate::sync::lock(&self.inner);
        inner
            .map
            .range(prefix.to_owned()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Counts a refused change, and logs it at a pace (the first, then every 100th).
    pub fn count_refused(&self, why: &Refused) {
        let n = self.refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        if n % 100 == 1 {
            let path = crate::sync::lock(&self.inner).path.clone();
            tracing::warn!(path = %path.display(), refused = n, "function state: change refused ({why}); the function was told (-4)");
        }
    }

    /// Changes refused so far.
    pub fn refused(&self) -> u64 {
        self.refused.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Bytes the entries cost now (of `limits.state_max_bytes`), and how many there are.
    pub fn usage(&self) -> (usize, usize) {
        let inner = crate::sync::lock(&self.inner);
        (inner.bytes, inner.map.len())
    }

    /// Makes every change so far durable (one `fdatasync`, none if nothing changed).
    pub fn sync(&self) -> std::io::Result<()> {
        let mut inner = crate::sync::lock(&self.inner);
        if inner.dirty {
            inner.file.sync_data()?;
            inner.dirty = false;
        }
        Ok(())
    }
}

impl Inner {
    /// Writes the change to the log, then applies it.
    fn change(&mut self, key: &str, value: Option<&[u8]>) -> Result<(), Refused> {
        let old = self.map.get(key).map_or(0, |v| cost(key, v));
        let new = value.map_or(0, |v| cost(key, v));
        if new > old && self.bytes - old + new > self.max_bytes {
            return Err(Refused::Full { max: self.max_bytes });
        }
        let mut body = std::mem::take(&mut self.scratch);
        body.clear();
        body = postcard::to_extend(&Change { key, value }, body).expect("postcard encodes into a Vec");
        let mut framed = Vec::with_capacity(body.len() + frame::HEADER);
        frame::encode(&body, &mut framed);
        self.scratch = body;
        if let Err(e) = self.file.write_all(&framed) {
            // A partial write is a torn tail the next open drops; cut it now so
            // later records do not follow it.
            let _ = self.file.set_len(self.log_bytes);
            return Err(Refused::Disk(e.to_string()));
        }
        self.log_bytes += framed.len() as u64;
        self.dirty = true;
        match value {
            Some(v) => self.map.insert(key.to_owned(), v.to_vec()),
            None => self.map.remove(key),
        };
        self.bytes = self.bytes - old + new;
        if self.log_bytes > 2 * self.bytes as u64 + (64 << 10) {
            if let Err(e) = self.compact() {
                tracing::warn!(path = %self.path.display(), error = %e, "function state: could not compact the log; it keeps growing until it can");
            }
        }
        Ok(())
    }

    /// Rewrites the log with one record per live entry: a new file, synced,
    /// renamed over the old one, and the directory synced.
    fn compact(&mut self) -> std::io::Result<()> {
        let tmp = self.path.with_extension("kv.new");
        let mut out = Vec::new();
        for (key, value) in &self.map {
            let body = postcard::to_allocvec(&Change { key, value: Some(value) }).expect("postcard encodes into a Vec");
            frame::encode(&body, &mut out);
        }
        let mut file = File::create(&tmp)?;
        file.write_all(&out)?;
        file.sync_all()?;
        std::fs::rename(&tmp, &self.path)?;
        if let Some(dir) = self.path.parent() {
            crate::durable::sync_dir(dir)?;
        }
        self.file = OpenOptions::new().append(true).open(&self.path)?;
        self.log_bytes = out.len() as u64;
        self.dirty = false;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
