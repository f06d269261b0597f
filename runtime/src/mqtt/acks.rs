//! Acknowledging QoS 1 messages only once the gateway has done what it owes them.
//!
//! The intake connection reads with manual acknowledgements and a persistent
//! session. Every QoS 1 message it takes gets a [`Delivery`]; whoever takes on a
//! duty for the message (a queued job, a record on its way to the outbox) holds a
//! clone, and the PUBACK goes out when the last clone is dropped: after the
//! function ran and its output was handed on, or after the records are durable,
//! or after the message was dropped and counted. MQTT asks that PUBACKs follow
//! the order the messages arrived in (MQTT 3.1.1, 4.6), so a finished message
//! waits for every earlier one before it is acknowledged ([`AckOrder`]).
//!
//! What is not acknowledged stays the broker's: after a crash, a restart or a
//! lost connection it sends it again, so a function may see a message twice
//! (never zero times). A message whose connection was lost before its turn came
//! is not acknowledged on the next connection: the broker has already sent it
//! again, and acknowledging the first copy would let the broker reuse its packet
//! id while the second copy is still on its way.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use rumqttc::{Publish, QoS};

/// The order in which received messages may be acknowledged: a pure queue of
/// (what to acknowledge, finished) in arrival order, with an epoch per
/// connection. `T` is a packet id for MQTT, a position for the function spool.
#[derive(Debug)]
pub struct AckOrder<T = u16> {
    /// Bumped when the connection is lost: older entries can no longer be acknowledged.
    epoch: u64,
    /// Sequence number of the front of `waiting`.
    front: u64,
    waiting: VecDeque<(T, bool)>,
}

impl<T> Default for AckOrder<T> {
    fn default() -> Self {
        AckOrder { epoch: 0, front: 0, waiting: VecDeque::new() }
    }
}

/// Identifies one received message within [`AckOrder`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket {
    epoch: u64,
    seq: u64,
}

impl<T: Copy> AckOrder<T> {
    /// Registers a message as it arrives.
    pub fn arrive(&mut self, pkid: T) -> Ticket {
        let seq = self.front + self.waiting.len() as u64;
        self.waiting.push_back((pkid, false));
        Ticket { epoch: self.epoch, seq }
    }

    /// Marks a message finished; appends to `ready` the packet ids that may now
    /// be acknowledged, in order. A ticket of an earlier connection is ignored.
    pub fn finish(&mut self, ticket: Ticket, ready: &mut Vec<T>) {
        if ticket.epoch != self.epoch || ticket.seq < self.front {
            return;
        }
        if let Some(entry) = self.waiting.get_mut((ticket.seq - self.front) as usize) {
            entry.1 = true;
        }
        while let Some(&(pkid, true)) = self.waiting.front() {
            ready.push(pkid);
            self.waiting.pop_front();
            self.front += 1;
        }
    }

    /// Forgets every message of the connection that was lost: the broker sends
    /// them again on the next one.
    pub fn connection_lost(&mut self) -> usize {
        let forgotten = self.waiting.len();
        self.front += forgotten as u64;
        self.waiting.clear();
        self.epoch += 1;
        forgotten
    }

    /// Messages received and not yet acknowledged.
    pub fn unacknowledged(&self) -> usize {
        self.waiting.len()
    }
}

/// Counters of the acknowledgements the intake connection owes.
#[derive(Debug, Default)]
pub struct AckStats {
    /// PUBACKs written to the broker.
    pub acknowledged: AtomicU64,
    /// Messages left unacknowledged when their connection was lost or the
    /// gateway stopped: the broker delivers them again.
    pub left_to_broker: AtomicU64,
    /// PUBACKs lost because the connection failed while they were being
    /// written: the broker delivers those messages again too.
    pub ack_errors: AtomicU64,
}

/// Collects the PUBACKs of the intake connection, in order, as messages finish;
/// the connection task takes them in batches ([`Acker::take_ready`]) and writes
/// each batch with one flush, woken by [`Acker::ready`].
pub struct Acker {
    /// False when the client acknowledges on its own (no manual acks): then no
    /// message gets a [`Delivery`].
    manual: bool,
    order: Mutex<State>,
    /// Notified when the first PUBACK of a batch is ready.
    ready: tokio::sync::Notify,
    pub stats: AckStats,
}

struct State {
    order: AckOrder,
    /// Set at shutdown: nothing more is acknowledged.
    closed: bool,
    /// Packet ids that may be acknowledged, in order, not yet taken.
    ready: Vec<u16>,
}

impl Acker {
    /// `manual`: whether the client was set up with manual acknowledgements.
    pub fn new(manual: bool) -> Arc<Acker> {
        Arc::new(Acker {
            manual,
            order: Mutex::new(State { order: AckOrder::default(), closed: false, ready: Vec::new() }),
            ready: tokio::sync::Notify::new(),
            stats: AckStats::default(),
        })
    }

    /// The delivery of a message just read, or `None` when it needs no
    /// acknowledgement from us (QoS 0, or the client acknowledges on its own).
    pub fn arrive(self: &Arc<Self>, publish: &Publish) -> Option<Arc<Delivery>> {
        if !self.manual || publish.qos == QoS::AtMostOnce {
            return None;
        }
        let ticket = self.lock().order.arrive(publish.pkid);
        Some(Arc::new(Delivery { acker: self.clone(), ticket }))
    }

    /// Completes once PUBACKs are ready to be taken (or were, since the last
    /// wait: a readiness that comes while nobody waits is kept for the next).
    pub async fn ready(&self) {
        self.ready.notified().await
    }

    /// Moves the packet ids ready to be acknowledged, in order, into `into`.
    pub fn take_ready(&self, into: &mut Vec<u16>) {
        into.append(&mut self.lock().ready);
    }

    /// Counts PUBACKs written to the broker.
    pub fn written(&self, n: usize) {
        Self::count(&self.stats.acknowledged, n);
    }

    /// Counts PUBACKs that were taken but not written, the connection having
    /// failed under them.
    pub fn not_written(&self, n: usize) {
        Self::count(&self.stats.ack_errors, n);
    }

    /// Called by the connection task when the connection is lost: what was not
    /// acknowledged on it, written or not, the broker sends again.
    pub fn connection_lost(&self) {
        let mut state = self.lock();
        let unfinished = state.order.connection_lost();
        let unwritten = std::mem::take(&mut state.ready).len();
        // After `close`, what was unfinished is counted already.
        let forgotten = if state.closed { unwritten } else { unfinished + unwritten };
        drop(state);
        if forgotten > 0 {
            Self::count(&self.stats.left_to_broker, forgotten);
            tracing::info!(
                messages = forgotten,
                "connection lost before these were handled; the broker sends them again"
            );
        }
    }

    /// Stops acknowledging: what is still in progress stays the broker's and
    /// comes again after the restart. What was done before is still taken by
    /// the connection, ahead of its DISCONNECT.
    pub fn close(&self) {
        let mut state = self.lock();
        if state.closed {
            return;
        }
        state.closed = true;
        let left = state.order.unacknowledged();
        drop(state);
        Self::count(&self.stats.left_to_broker, left);
    }

    fn finish(&self, ticket: Ticket) {
        let mut state = self.lock();
        if state.closed {
            return;
        }
        let State { order, ready, .. } = &mut *state;
        let was_empty = ready.is_empty();
        order.finish(ticket, ready);
        let wake = was_empty && !ready.is_empty();
        drop(state);
        // One wake-up per batch: later ones join the batch until it is taken.
        if wake {
            self.ready.notify_one();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock leaves the queue consistent (each
        // method changes it in one step), so a poisoned lock is still usable.
        crate::sync::lock(&self.order)
    }

    fn count(counter: &AtomicU64, n: usize) {
        counter.fetch_add(n as u64, Relaxed);
    }
}

/// The duty to acknowledge one message. Clone the `Arc` for everyone who must
/// finish with the message first; the PUBACK goes out (in arrival order) once
/// the last clone is dropped.
pub struct Delivery {
    acker: Arc<Acker>,
    ticket: Ticket,
}

impl Drop for Delivery {
    fn drop(&mut self) {
        self.acker.finish(self.ticket);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;

    #[track_caller]
    fn finish(order: &mut AckOrder, ticket: Ticket, expected: &[u16]) {
        let mut ready = Vec::new();
        order.finish(ticket, &mut ready);
        assert_eq!(ready, expected);
    }

    #[test]
    fn acknowledgements_follow_arrival_order() {
        let mut order = AckOrder::default();
        let a = order.arrive(7);
        let b = order.arrive(3);
        let c = order.arrive(9);
        finish(&mut order, c, &[]);
        finish(&mut order, b, &[]);
        finish(&mut order, a, &[7, 3, 9]);
        assert_eq!(order.unacknowledged(), 0);
        let d = order.arrive(7);
        finish(&mut order, d, &[7]);
    }

    #[test]
    fn a_lost_connection_forgets_what_was_not_acknowledged() {
        let mut order = AckOrder::default();
        let a = order.arrive(1);
        let b = order.arrive(2);
        finish(&mut order, b, &[]);
        assert_eq!(order.connection_lost(), 2);
        // The broker sends 1 and 2 again; the first copies finishing late must
        // not acknowledge anything on the new connection.
        let a2 = order.arrive(1);
        finish(&mut order, a, &[]);
        finish(&mut order, a2, &[1]);
    }

    fn qos1(pkid: u16) -> Publish {
        let mut publish = Publish::new("t", QoS::AtLeastOnce, Vec::new());
        publish.pkid = pkid;
        publish
    }

    /// Whether the connection task waiting on `ready` would wake now.
    fn wakes(acker: &Acker) -> bool {
        let mut ready = std::pin::pin!(acker.ready());
        ready.as_mut().poll(&mut std::task::Context::from_waker(std::task::Waker::noop())).is_ready()
    }

    fn taken(acker: &Acker) -> Vec<u16> {
        let mut batch = Vec::new();
        acker.take_ready(&mut batch);
        batch
    }

    #[test]
    fn pubacks_become_ready_in_arrival_order_and_wake_the_connection_once_a_batch() {
        let acker = Acker::new(true);
        let [a, b, c] = [7, 3, 9].map(|pkid| acker.arrive(&qos1(pkid)).expect("QoS 1 is acknowledged by hand"));
        drop(c);
        assert!(!wakes(&acker), "9 must wait for 7 and 3");
        assert_eq!(taken(&acker), Vec::<u16>::new());
        drop(a);
        assert!(wakes(&acker));
        drop(b);
        assert!(!wakes(&acker), "3 and 9 join the batch not yet taken");
        assert_eq!(taken(&acker), [7, 3, 9]);
        assert!(acker.arrive(&Publish::new("t", QoS::AtMostOnce, Vec::new())).is_none());
    }

    #[test]
    fn pubacks_not_written_when_the_connection_is_lost_are_left_to_the_broker() {
        let acker = Acker::new(true);
        let [a, b] = [1, 2].map(|pkid| acker.arrive(&qos1(pkid)).unwrap());
        drop(a);
        acker.connection_lost();
        assert_eq!(taken(&acker), Vec::<u16>::new(), "1 was for the lost connection");
        drop(b);
        assert_eq!(taken(&acker), Vec::<u16>::new(), "2 was for the lost connection");
        assert_eq!(acker.stats.left_to_broker.load(Relaxed), 2);
    }

    #[test]
    fn closing_keeps_what_was_done_and_counts_what_is_left_once() {
        let acker = Acker::new(true);
        let [a, b] = [1, 2].map(|pkid| acker.arrive(&qos1(pkid)).unwrap());
        drop(a);
        acker.close();
        // Shutdown closes once when it abandons the queue and again before the DISCONNECT.
        acker.close();
        drop(b);
        assert_eq!(taken(&acker), [1], "done before the close: still acknowledged");
        assert_eq!(acker.stats.left_to_broker.load(Relaxed), 1);
        acker.connection_lost();
        assert_eq!(acker.stats.left_to_broker.load(Relaxed), 1);
    }

    #[test]
    fn finishing_twice_or_out_of_range_is_harmless() {
        let mut order = AckOrder::default();
        let a = order.arrive(5);
        finish(&mut order, a, &[5]);
        finish(&mut order, a, &[]);
        let b = order.arrive(6);
        finish(&mut order, b, &[6]);
    }
}
