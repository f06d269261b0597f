//! The output connection's queue, the gateway's own: what functions publish
//! waits here, oldest first, each publish with the time it expires, until the
//! output connection task takes it to write. A publish still unwritten when it
//! expires is dropped and counted (`commands_expired`), never sent late: a
//! "fan on" decided during an outage must not reach the plug after it.
//!
//! rumqttc's own request queue cannot do this: what waits in it carries no
//! time, and what it holds at a connection loss comes back at the reconnect
//! with no age. So publishes never enter it: the connection task takes them
//! from here only as far as the in-flight window has room and writes them
//! itself (`carry.rs`), and what rumqttc holds at a loss is only what was
//! written, whose expiry `carry.rs` keeps by packet id.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use rumqttc::Publish;

/// What a publish carries beside itself: when it expires and who made it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tag {
    /// Milliseconds since the Unix epoch after which it is not written; `None`: never.
    pub expires_ms: Option<u64>,
    /// The function that published it, for its `commands_expired`.
    pub function: Option<Arc<str>>,
}

impl Tag {
    pub fn expired(&self, now_ms: u64) -> bool {
        self.expires_ms.is_some_and(|at| now_ms > at)
    }
}

/// Publishes dropped as expired, in all and by function.
#[derive(Debug, Default)]
pub struct Expired {
    total: AtomicU64,
    by_function: Mutex<HashMap<Arc<str>, u64>>,
}

impl Expired {
    pub fn count(&self, tag: &Tag) {
        self.total.fetch_add(1, Relaxed);
        if let Some(function) = &tag.function {
            *crate::sync::lock(&self.by_function).entry(function.clone()).or_default() += 1;
        }
        // Logged at a pace: the first, then every 100th.
        let n = self.total.load(Relaxed);
        if n % 100 == 1 {
            tracing::warn!(
                function = tag.function.as_deref().unwrap_or(""),
                expired = n,
                "a publish expired before the broker could be given it; dropped, not sent late (commands_expired)"
            );
        }
    }

    pub fn total(&self) -> u64 {
        self.total.load(Relaxed)
    }

    pub fn of(&self, function: &str) -> u64 {
        crate::sync::lock(&self.by_function).get(function).copied().unwrap_or(0)
    }
}

/// Why a publish was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("the output connection is closing")]
    Closing,
}

/// The queue's state, with no threads and no clock: `now_ms` is passed in.
#[derive(Debug, Default)]
pub struct Queue {
    waiting: VecDeque<(Publish, Tag)>,
    closing: bool,
}

/// What [`Queue::push`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Pushed {
    Queued,
    /// No room: the producer waits and tries again.
    Full(Publish, Tag),
    Refused(Refused),
}

impl Queue {
    /// Queues one publish unless `cap` are waiting; when full, first drops
    /// (and returns through `expired`) those already expired.
    pub fn push(&mut self, publish: Publish, tag: Tag, cap: usize, now_ms: u64, expired: &mut Vec<Tag>) -> Pushed {
        if self.closing {
            return Pushed::Refused(Refused::Closing);
        }
        if self.waiting.len() >= cap {
            self.waiting.retain(|(_, t)| match t.expired(now_ms) {
                true => {
                    expired.push(t.clone());
                    false
                }
                false => true,
            });
        }
        if self.waiting.len() >= cap {
            return Pushed::Full(publish, tag);
        }
        self.waiting.push_back((publish, tag));
        Pushed::Queued
    }

    /// Takes up to `n` publishes, oldest first, for the connection to write.
    /// Expiry is checked when each is written, not here.
    pub fn take(&mut self, n: usize, into: &mut VecDeque<(Publish, Tag)>) -> usize {
        let n = n.min(self.waiting.len());
        into.extend(self.waiting.drain(..n));
        n
    }

    pub fn len(&self) -> usize {
        self.waiting.len()
    }

    pub fn close(&mut self) {
        self.closing = true;
    }

    /// Closes and hands back everything still waiting (the stop gave up on the broker).
    pub fn abandon(&mut self) -> usize {
        self.closing = true;
        std::mem::take(&mut self.waiting).len()
    }
}

/// The queue shared by the workers that fill it and the connection task that
/// empties it: cheap to clone.
#[derive(Clone)]
pub struct Outgoing {
    inner: Arc<Inner>,
}

struct Inner {
    queue: Mutex<Queue>,
    /// Producers wait on it while the queue is full.
    room: Condvar,
    /// Tells the connection task that publishes wait (or that the queue is closing).
    ready: tokio::sync::Notify,
    cap: usize,
    expired: Expired,
}

impl Outgoing {
    /// A queue that holds up to `cap` publishes before producers wait.
    pub fn new(cap: usize) -> Outgoing {
        Outgoing {
            inner: Arc::new(Inner {
                queue: Mutex::new(Queue::default()),
                room: Condvar::new(),
                ready: tokio::sync::Notify::new(),
                cap: cap.max(1),
                expired: Expired::default(),
            }),
        }
    }

    /// Queues publishes in order, waiting while the queue is full (the broker
    /// away or slow: the workers slow down rather than pile up). Returns how
    /// many were refused because the connection is closing (the rest queued or
    /// counted as expired while they waited for room). Blocks: call it from a
    /// worker thread, not the async runtime.
    pub fn push_all(&self, publishes: impl IntoIterator<Item = (Publish, Tag)>) -> usize {
        let inner = &*self.inner;
        let mut refused = 0;
        let mut expired = Vec::new();
        let mut queue = crate::sync::lock(&inner.queue);
        for (publish, tag) in publishes {
            let mut item = (publish, tag);
            loop {
                match queue.push(item.0, item.1, inner.cap, crate::event::unix_ms(), &mut expired) {
                    Pushed::Queued => break,
                    Pushed::Refused(_) => {
                        refused += 1;
                        break;
                    }
                    Pushed::Full(publish, tag) => {
                        if tag.expired(crate::event::unix_ms()) {
                            expired.push(tag);
                            break;
                        }
                        item = (publish, tag);
                        // What is queued must get out: wake the connection task, then
                        // wait for room, or for the front's expiry (checked again).
                        inner.ready.notify_one();
                        queue = match inner.room.wait_timeout(queue, Duration::from_millis(250)) {
                            Ok((q, _)) => q,
                            Err(poisoned) => poisoned.into_inner().0,
                        };
                    }
                }
            }
        }
        drop(queue);
        inner.ready.notify_one();
        for tag in &expired {
            inner.expired.count(tag);
        }
        refused
    }

    /// Moves up to `n` publishes into the connection's own queue.
    pub fn take(&self, n: usize, into: &mut VecDeque<(Publish, Tag)>) -> usize {
        if n == 0 {
            return 0;
        }
        let taken = crate::sync::lock(&self.inner.queue).take(n, into);
        if taken > 0 {
            self.inner.room.notify_all();
        }
        taken
    }

    /// Waits until publishes may be waiting (a permit is kept if nobody waits).
    pub async fn notified(&self) {
        self.inner.ready.notified().await
    }

    pub fn len(&self) -> usize {
        crate::sync::lock(&self.inner.queue).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Refuses new publishes; the connection task writes what waits, then disconnects.
    pub fn close(&self) {
        crate::sync::lock(&self.inner.queue).close();
        self.inner.room.notify_all();
        self.inner.ready.notify_one();
    }

    pub fn closing(&self) -> bool {
        crate::sync::lock(&self.inner.queue).closing
    }

    /// Drops everything still waiting and returns how many (counted by the caller).
    pub fn abandon(&self) -> usize {
        let n = crate::sync::lock(&self.inner.queue).abandon();
        self.inner.room.notify_all();
        n
    }

    pub fn expired(&self) -> &Expired {
        &self.inner.expired
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rumqttc::QoS;

    fn publish(n: u8) -> Publish {
        Publish::new("t", QoS::AtLeastOnce, vec![n])
    }

    fn expiring(at: u64) -> Tag {
        Tag { expires_ms: Some(at), function: Some(Arc::from("fan")) }
    }

    #[test]
    fn a_full_queue_makes_room_by_dropping_what_has_expired_and_only_that() {
        let mut q = Queue::default();
        let mut expired = Vec::new();
        assert_eq!(q.push(publish(1), expiring(100), 2, 50, &mut expired), Pushed::Queued);
        assert_eq!(q.push(publish(2), Tag::default(), 2, 50, &mut expired), Pushed::Queued);
        // Full, nothing expired yet: the producer waits.
        assert!(matches!(q.push(publish(3), expiring(500), 2, 60, &mut expired), Pushed::Full(..)));
        assert!(expired.is_empty());
        // Past the first one's expiry: it goes, and the new one takes its place.
        assert_eq!(q.push(publish(3), expiring(500), 2, 101, &mut expired), Pushed::Queued);
        assert_eq!(expired, [expiring(100)]);
        let mut taken = VecDeque::new();
        assert_eq!(q.take(10, &mut taken), 2);
        assert_eq!(taken.iter().map(|(p, _)| p.payload[0]).collect::<Vec<_>>(), [2, 3]);
    }

    #[test]
    fn the_connection_takes_no_more_than_it_is_offered_room_for_oldest_first() {
        let mut q = Queue::default();
        let mut expired = Vec::new();
        for n in 0..5 {
            q.push(publish(n), Tag::default(), 10, 0, &mut expired);
        }
        let mut taken = VecDeque::new();
        assert_eq!(q.take(3, &mut taken), 3);
        assert_eq!(q.len(), 2);
        assert_eq!(taken.iter().map(|(p, _)| p.payload[0]).collect::<Vec<_>>(), [0, 1, 2]);
    }

    #[test]
    fn a_closing_queue_refuses_new_publishes_and_a_stop_abandons_what_waits() {
        let mut q = Queue::default();
        let mut expired = Vec::new();
        q.push(publish(1), Tag::default(), 10, 0, &mut expired);
        q.close();
        assert_eq!(q.push(publish(2), Tag::default(), 10, 0, &mut expired), Pushed::Refused(Refused::Closing));
        assert_eq!(q.abandon(), 1);
        assert_eq!(q.len(), 0);
    }

    #[test]
    fn a_tag_without_an_expiry_never_expires() {
        assert!(!Tag::default().expired(u64::MAX));
        assert!(!expiring(10).expired(10));
        assert!(expiring(10).expired(11));
    }

    #[test]
    fn expired_publishes_are_counted_in_all_and_by_function() {
        let e = Expired::default();
        e.count(&expiring(1));
        e.count(&Tag { expires_ms: Some(1), function: None });
        assert_eq!((e.total(), e.of("fan"), e.of("pump")), (2, 1, 0));
    }
}
