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

use rumqttc::{AsyncClient, Publish, QoS};

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
    /// PUBACKs handed to the client.
    pub acknowledged: AtomicU64,
    /// Messages left unacknowledged when their connection was lost or the
    /// gateway stopped: the broker delivers them again.
    pub left_to_broker: AtomicU64,
    /// PUBACKs the client refused (its request queue full or its task gone).
    pub ack_errors: AtomicU64,
}

/// Sends the PUBACKs of the intake connection, in order, as messages finish.
pub struct Acker {
    /// False when the client acknowledges on its own (no manual acks): then no
    /// message gets a [`Delivery`].
    manual: bool,
    order: Mutex<State>,
    client: AsyncClient,
    pub stats: AckStats,
}

struct State {
    order: AckOrder,
    /// Set at shutdown: nothing more is acknowledged.
    closed: bool,
    ready: Vec<u16>,
}

impl Acker {
    /// `manual`: whether the client was set up with manual acknowledgements.
    pub fn new(client: AsyncClient, manual: bool) -> Arc<Acker> {
        Arc::new(Acker {
            manual,
            order: Mutex::new(State { order: AckOrder::default(), closed: false, ready: Vec::new() }),
            client,
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

    /// Called by the connection task when the connection is lost.
    pub fn connection_lost(&self) {
        let mut state = self.lock();
        if state.closed {
            return;
        }
        let forgotten = state.order.connection_lost();
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
    /// comes again after the restart.
    pub fn close(&self) {
        let mut state = self.lock();
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
        order.finish(ticket, ready);
        // Under the lock, so that acknowledgements reach the client in order.
        for pkid in ready.drain(..) {
            let mut ack = Publish::new("", QoS::AtLeastOnce, Vec::new());
            ack.pkid = pkid;
            match self.client.try_ack(&ack) {
                Ok(()) => Self::count(&self.stats.acknowledged, 1),
                Err(e) => {
                    // Cannot happen while the client's queue is sized for every
                    // message the gateway may hold (gateway::intake_client_queue).
                    if self.stats.ack_errors.fetch_add(1, Relaxed) == 0 {
                        tracing::error!(error = %e, pkid, "could not queue a PUBACK; the broker sends the message again after a reconnect");
                    }
                }
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock leaves the queue consistent (each
        // method changes it in one step), so a poisoned lock is still usable.
        self.order.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
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
