//! What a connection was handed and had not delivered when it was lost, carried
//! over to the next connection instead of being cleared.
//!
//! When a connection fails, rumqttc moves the QoS 1 publishes awaiting their
//! PUBACK, and the requests it takes off its queue, to `EventLoop::pending`; at
//! the reconnect it resends them if the broker kept the session and clears them
//! if not. A clean-session connection (the gateway's output) would so lose every
//! publish in flight at each outage, although the readings that made them were
//! handled and acknowledged. Here they are taken at the failure and, on a
//! connection without the session, written again with fresh packet ids, oldest
//! first, before rumqttc reads anything newer off its queue.
//!
//! The output connection's publishes never enter rumqttc's queue: they come
//! from the gateway's own (`outgoing.rs`) into this queue, as far as the window
//! has room, each with the time it expires, and are written here. A written
//! publish's expiry is kept by its packet id, so one carried over a reconnect
//! past its expiry is dropped and counted rather than sent late.
//!
//! rumqttc resends its own pending list regardless of its in-flight window, and
//! a second packet-id collision there overwrites the first (a lost publish), so
//! the carried publishes are written here, one at a time, only while the window
//! has room and no collision waits: when the window is full rumqttc reads no new
//! request either, so nothing newer overtakes them.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use rumqttc::{ConnectionError, EventLoop, Packet, Publish, QoS, Request};

use super::outgoing::{Expired, Tag};

/// At most this many publishes wait to be carried over (the client's queue holds
/// as many): past it, the oldest are dropped and counted.
pub const CARRY_MAX: usize = 1_024;

#[derive(Default)]
pub struct CarryOver {
    /// What rumqttc held when the connection was last lost, as it held it: it
    /// goes back to rumqttc unchanged if the broker kept the session.
    /// Each with its tag when known here (the publish rumqttc held back for a
    /// collision); the others' tags are in `sent`.
    held: VecDeque<(Request, Option<Tag>)>,
    /// Publishes to write (carried over, or taken from the output's queue), oldest first.
    queue: VecDeque<(Publish, Tag)>,
    /// The tags of publishes written here, by packet id (an id's entry is
    /// replaced when the id is used again).
    sent: HashMap<u16, Tag>,
    /// The publish rumqttc holds back for a packet-id collision: its id and tag.
    collided: Option<(u16, Tag)>,
}

impl CarryOver {
    /// The connection was lost: takes what rumqttc moved to its pending list.
    pub fn lost(&mut self, eventloop: &mut EventLoop) {
        self.collision_written(eventloop);
        self.held.extend(eventloop.pending.drain(..).map(|r| (r, None)));
        // A publish whose packet id collided waits for that id's PUBACK, which
        // never comes now; rumqttc's `clean` leaves it there.
        if let Some(publish) = eventloop.state.collision.take() {
            let tag = self.collided.take().map(|(_, tag)| tag).unwrap_or_default();
            self.held.push_back((Request::Publish(publish), Some(tag)));
        }
    }

    /// Once rumqttc has written the publish it held back for a collision, its
    /// tag belongs to its packet id.
    fn collision_written(&mut self, eventloop: &EventLoop) {
        if eventloop.state.collision.is_none() {
            if let Some((pkid, tag)) = self.collided.take() {
                self.sent.insert(pkid, tag);
            }
        }
    }

    /// The broker answered the reconnect. With the session kept, rumqttc resends
    /// what it held itself; without it, the publishes among it are queued here.
    /// Returns (publishes to carry over, publishes dropped as over [`CARRY_MAX`]).
    pub fn connected(&mut self, eventloop: &mut EventLoop, session_present: bool) -> (usize, usize) {
        if session_present {
            eventloop.pending.extend(self.held.drain(..).map(|(r, _)| r));
            return (self.queue.len(), 0);
        }
        // rumqttc lists what awaited a PUBACK (packet id set) before what it took
        // off its queue (none yet): the first went out before anything still
        // queued here, the second after.
        let mut in_flight = Vec::new();
        let mut taken = Vec::new();
        for (request, tag) in self.held.drain(..) {
            if let Request::Publish(publish) = request {
                if publish.pkid != 0 {
                    let tag = tag.or_else(|| self.sent.remove(&publish.pkid)).unwrap_or_default();
                    in_flight.push((fresh(publish), tag))
                } else {
                    taken.push((fresh(publish), tag.unwrap_or_default()))
                }
            }
        }
        self.sent.clear();
        let older = std::mem::take(&mut self.queue);
        self.queue = in_flight.into_iter().chain(older).chain(taken).collect();
        let dropped = self.queue.len().saturating_sub(CARRY_MAX);
        self.queue.drain(..dropped);
        (self.queue.len(), dropped)
    }

    /// Whether publishes wait to be written.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Publishes still held or queued, never to be sent if the task ends now.
    pub fn left(&self) -> usize {
        self.queue.len() + self.held.iter().filter(|(r, _)| matches!(r, Request::Publish(_))).count()
    }

    /// Room in the in-flight window for publishes taken from the output's queue
    /// (none while carried or taken ones wait, which go first).
    pub fn room(&self, eventloop: &EventLoop) -> usize {
        match self.queue.is_empty() && eventloop.state.collision.is_none() {
            true => (eventloop.mqtt_options.inflight() as usize).saturating_sub(eventloop.state.inflight() as usize),
            false => 0,
        }
    }

    /// Where publishes taken from the output's queue go, to be written next.
    pub fn queue(&mut self) -> &mut VecDeque<(Publish, Tag)> {
        &mut self.queue
    }

    /// Writes queued publishes while the in-flight window has room, with one
    /// flush. A failure leaves the connection to be handled as lost (the caller
    /// passes the error on): what was written is then in flight again.
    /// A publish whose expiry has passed is dropped and counted in `expired` instead.
    pub async fn write(&mut self, eventloop: &mut EventLoop, expired: Option<&Expired>) -> Result<(), ConnectionError> {
        self.collision_written(eventloop);
        let now = crate::event::unix_ms();
        let window = eventloop.mqtt_options.inflight();
        let timeout = Duration::from_secs(eventloop.network_options.connection_timeout());
        let Some(network) = eventloop.network.as_mut() else { return Ok(()) };
        let state = &mut eventloop.state;
        let mut written = false;
        let mut result = Ok(());
        while state.collision.is_none() && (state.inflight() < window || self.queue.front().is_some_and(is_qos0)) {
            let Some((publish, tag)) = self.queue.pop_front() else { break };
            if tag.expired(now) {
                if let Some(expired) = expired {
                    expired.count(&tag);
                }
                continue;
            }
            match state.handle_outgoing_packet(Request::Publish(publish)) {
                // `None`: its packet id collided; rumqttc sends it once that id is acknowledged.
                Ok(None) => self.collided = state.collision.as_ref().map(|p| (p.pkid, tag)),
                Ok(Some(packet)) => {
                    if let Packet::Publish(p) = &packet {
                        if p.pkid != 0 {
                            self.sent.insert(p.pkid, tag);
                        }
                    }
                    written = true;
                    if let Err(e) = network.write(packet).await {
                        result = Err(ConnectionError::MqttState(e));
                        break;
                    }
                }
                Err(e) => {
                    result = Err(ConnectionError::MqttState(e));
                    break;
                }
            }
        }
        if result.is_ok() && written {
            result = match tokio::time::timeout(timeout, network.flush()).await {
                Ok(flushed) => flushed.map_err(ConnectionError::MqttState),
                Err(_) => Err(ConnectionError::FlushTimeout),
            };
        }
        if result.is_err() {
            eventloop.clean();
        }
        result
    }
}

/// A publish as a new session sees it: no packet id yet, not a duplicate.
fn fresh(mut publish: Publish) -> Publish {
    publish.pkid = 0;
    publish.dup = false;
    publish
}

fn is_qos0(item: &(Publish, Tag)) -> bool {
    item.0.qos == QoS::AtMostOnce
}

#[cfg(test)]
mod tests {
    use super::*;
    use rumqttc::MqttOptions;

    fn eventloop() -> EventLoop {
        EventLoop::new(MqttOptions::new("test", "127.0.0.1", 1883), 10)
    }

    fn publish(n: u8, pkid: u16) -> Request {
        let mut p = Publish::new("t", QoS::AtLeastOnce, vec![n]);
        p.pkid = pkid;
        p.dup = pkid != 0;
        Request::Publish(p)
    }

    fn payloads(carry: &CarryOver) -> Vec<u8> {
        carry.queue.iter().map(|(p, _)| p.payload[0]).collect()
    }

    #[test]
    fn without_the_session_what_was_in_flight_goes_first_with_fresh_ids_and_older_queued_ones_before_newer() {
        let mut carry = CarryOver::default();
        let mut el = eventloop();
        // A first outage: 1 and 2 in flight, 3 taken off the queue.
        el.pending.extend([publish(1, 7), publish(2, 8), publish(3, 0), Request::PingReq(rumqttc::PingReq)]);
        carry.lost(&mut el);
        assert!(el.pending.is_empty());
        assert_eq!(carry.connected(&mut el, false), (3, 0));
        assert_eq!(payloads(&carry), [1, 2, 3]);
        assert!(carry.queue.iter().all(|(p, _)| p.pkid == 0 && !p.dup));
        // Lost again before any was written: 4 was in flight (written before
        // them, say by rumqttc), 5 was taken off the queue after them.
        el.pending.extend([publish(4, 1), publish(5, 0)]);
        carry.lost(&mut el);
        assert_eq!(carry.left(), 5);
        assert_eq!(carry.connected(&mut el, false), (5, 0));
        assert_eq!(payloads(&carry), [4, 1, 2, 3, 5]);
    }

    #[test]
    fn with_the_session_kept_rumqttc_gets_back_what_it_held_unchanged() {
        let mut carry = CarryOver::default();
        let mut el = eventloop();
        el.pending.extend([publish(1, 7), publish(2, 0)]);
        carry.lost(&mut el);
        assert_eq!(carry.connected(&mut el, true), (0, 0));
        let back: Vec<u16> =
            el.pending.iter().map(|r| if let Request::Publish(p) = r { p.pkid } else { u16::MAX }).collect();
        assert_eq!(back, [7, 0]);
        assert!(carry.is_empty());
    }

    #[test]
    fn past_the_limit_the_oldest_are_dropped_and_counted() {
        let mut carry = CarryOver::default();
        let mut el = eventloop();
        el.pending.extend((0..CARRY_MAX + 3).map(|i| publish((i % 250) as u8, 0)));
        carry.lost(&mut el);
        assert_eq!(carry.connected(&mut el, false), (CARRY_MAX, 3));
        assert_eq!(carry.queue.front().unwrap().0.payload[0], 3);
    }
}
