//! The sender's session logic without I/O: whether a batch may go out now (the
//! in-flight window and the drain rate), which packet id belongs to which batch,
//! and how far a PUBACK lets the outbox's acknowledged position move. Time comes
//! in as an argument, so the tests below drive it by hand.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::outbox::Cursor;

/// What the sender may do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Read and publish a batch of at most this many records.
    Send { max_records: usize },
    /// The drain rate allows the next record at this instant.
    WaitUntil(Instant),
    /// `max_inflight` batches await their PUBACKs.
    Full,
}

/// A contiguous run of acknowledged batches at the front: everything before
/// `to` may leave the outbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Released {
    pub to: Cursor,
    pub records: u64,
}

/// One publish awaiting its PUBACK.
#[derive(Debug)]
struct InFlight {
    /// Numbers batches in send order.
    number: u64,
    /// Outbox position after its last record.
    end: Cursor,
    records: u64,
    acked: bool,
}

/// The batches of one connection, from publish to PUBACK.
#[derive(Debug)]
pub struct Window {
    max_inflight: usize,
    /// Records per second; the bucket holds at most one full batch.
    rate: f64,
    burst: f64,
    tokens: f64,
    refilled: Instant,
    inflight: VecDeque<InFlight>,
    /// Batches published whose packet id the client has not reported yet, in order.
    awaiting_pkid: VecDeque<u64>,
    by_pkid: HashMap<u16, u64>,
    next_number: u64,
}

impl Window {
    pub fn new(max_inflight: usize, batch_max_records: usize, drain_rate: u32, now: Instant) -> Self {
        Window {
            max_inflight: max_inflight.max(1),
            rate: f64::from(drain_rate.max(1)),
            burst: batch_max_records.max(1) as f64,
            tokens: batch_max_records.max(1) as f64,
            refilled: now,
            inflight: VecDeque::new(),
            awaiting_pkid: VecDeque::new(),
            by_pkid: HashMap::new(),
            next_number: 0,
        }
    }

    /// Whether a batch may be published now, and how big.
    pub fn next(&mut self, now: Instant) -> Next {
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.refilled = now;
        if self.inflight.len() >= self.max_inflight {
            return Next::Full;
        }
        if self.tokens < 1.0 {
            return Next::WaitUntil(now + Duration::from_secs_f64((1.0 - self.tokens) / self.rate));
        }
        Next::Send { max_records: (self.tokens as usize).clamp(1, self.burst as usize) }
    }

    /// A batch of `records` ending at `end` was handed to the client.
    pub fn sent(&mut self, records: u64, end: Cursor) {
        self.tokens -= records as f64;
        let number = self.next_number;
        self.next_number += 1;
        self.awaiting_pkid.push_back(number);
        self.inflight.push_back(InFlight { number, end, records, acked: false });
    }

    /// The client put the oldest batch not yet numbered on the wire as `pkid`.
    pub fn published(&mut self, pkid: u16) {
        if let Some(number) = self.awaiting_pkid.pop_front() {
            self.by_pkid.insert(pkid, number);
        }
    }

    /// A PUBACK for `pkid`: marks its batch, and releases the acknowledged run at
    /// the front, if any. An unknown or repeated packet id releases nothing.
    pub fn acknowledged(&mut self, pkid: u16) -> Option<Released> {
        let number = self.by_pkid.remove(&pkid)?;
        if let Some(batch) = self.inflight.iter_mut().find(|b| b.number == number) {
            batch.acked = true;
        }
        let mut released: Option<Released> = None;
        while self.inflight.front().is_some_and(|b| b.acked) {
            let batch = self.inflight.pop_front().expect("front exists");
            let records = released.map_or(0, |r| r.records) + batch.records;
            released = Some(Released { to: batch.end, records });
        }
        released
    }

    /// Batches published and not yet acknowledged.
    pub fn in_flight(&self) -> usize {
        self.inflight.len()
    }
}

/// How long to hold a partial batch (`records` of `max`, the newest `age` old)
/// for more records to join it; `None` to send it now.
pub fn linger(records: usize, max: usize, age: Duration, linger: Duration) -> Option<Duration> {
    (records < max && age < linger).then(|| linger - age)
}

/// Counts resends across connections: a record at or below the highest id ever
/// handed to a publish was sent before (by this run, or maybe by an earlier one).
#[derive(Debug, Clone, Copy)]
pub struct Resends {
    /// The id after the highest id sent.
    sent_end: u64,
}

impl Resends {
    /// `durable_end`: every record an earlier run may have sent is below it.
    pub fn new(durable_end: u64) -> Self {
        Resends { sent_end: durable_end }
    }

    /// Records a batch of these ids; returns how many of them are resends.
    pub fn sent(&mut self, ids: impl IntoIterator<Item = u64>) -> u64 {
        let mut resent = 0;
        for id in ids {
            if id < self.sent_end {
                resent += 1;
            } else {
                self.sent_end = id + 1;
            }
        }
        resent
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(id: u64) -> Cursor {
        Cursor { segment: 0, offset: id * 10, id }
    }

    /// Sends a batch of `n` records ending before `end_id` and numbers it `pkid`.
    fn send(w: &mut Window, n: u64, end_id: u64, pkid: u16) {
        w.sent(n, at(end_id));
        w.published(pkid);
    }

    #[test]
    fn the_window_holds_at_most_max_inflight_batches() {
        let t = Instant::now();
        let mut w = Window::new(2, 100, 1_000_000, t);
        assert_eq!(w.next(t), Next::Send { max_records: 100 });
        send(&mut w, 1, 1, 1);
        assert!(matches!(w.next(t), Next::Send { .. }));
        send(&mut w, 1, 2, 2);
        assert_eq!(w.next(t), Next::Full);
        assert_eq!(w.acknowledged(1), Some(Released { to: at(1), records: 1 }));
        assert!(matches!(w.next(t), Next::Send { .. }));
    }

    #[test]
    fn pubacks_out_of_order_release_only_the_contiguous_run_at_the_front() {
        let t = Instant::now();
        let mut w = Window::new(8, 100, 1_000_000, t);
        send(&mut w, 3, 3, 10);
        send(&mut w, 2, 5, 11);
        send(&mut w, 4, 9, 12);
        // The third and second first: nothing may leave while the first is unacknowledged.
        assert_eq!(w.acknowledged(12), None);
        assert_eq!(w.acknowledged(11), None);
        assert_eq!(w.in_flight(), 3);
        // The first releases all three at once, up to the end of the third.
        assert_eq!(w.acknowledged(10), Some(Released { to: at(9), records: 9 }));
        assert_eq!(w.in_flight(), 0);
    }

    #[test]
    fn duplicate_and_unsolicited_pubacks_release_nothing() {
        let t = Instant::now();
        let mut w = Window::new(8, 100, 1_000_000, t);
        send(&mut w, 1, 1, 1);
        send(&mut w, 1, 2, 2);
        assert_eq!(w.acknowledged(7), None, "a packet id never used");
        assert_eq!(w.acknowledged(1), Some(Released { to: at(1), records: 1 }));
        assert_eq!(w.acknowledged(1), None, "the same PUBACK twice");
        assert_eq!(w.in_flight(), 1);
        assert_eq!(w.acknowledged(2), Some(Released { to: at(2), records: 1 }));
    }

    #[test]
    fn a_packet_id_is_matched_to_the_batch_it_was_given_to_even_when_reused() {
        let t = Instant::now();
        let mut w = Window::new(8, 100, 1_000_000, t);
        send(&mut w, 1, 1, 1);
        assert_eq!(w.acknowledged(1), Some(Released { to: at(1), records: 1 }));
        // The client reuses id 1 for the next batch once the first is acknowledged.
        send(&mut w, 5, 6, 1);
        assert_eq!(w.acknowledged(1), Some(Released { to: at(6), records: 5 }));
    }

    #[test]
    fn a_puback_before_the_client_reported_the_packet_id_is_not_guessed() {
        let t = Instant::now();
        let mut w = Window::new(8, 100, 1_000_000, t);
        w.sent(1, at(1));
        assert_eq!(w.acknowledged(1), None);
        w.published(1);
        assert_eq!(w.acknowledged(1), Some(Released { to: at(1), records: 1 }));
    }

    #[test]
    fn the_drain_rate_spaces_batches_and_refills_over_time() {
        let t = Instant::now();
        // 10 records a second, batches of at most 5: a full batch at once, then one record per 100 ms.
        let mut w = Window::new(100, 5, 10, t);
        assert_eq!(w.next(t), Next::Send { max_records: 5 });
        send(&mut w, 5, 5, 1);
        assert_eq!(w.next(t), Next::WaitUntil(t + Duration::from_millis(100)));
        assert_eq!(w.next(t + Duration::from_millis(250)), Next::Send { max_records: 2 });
        send(&mut w, 2, 7, 2);
        // Tokens never exceed one batch, however long the sender was idle.
        assert_eq!(w.next(t + Duration::from_secs(60)), Next::Send { max_records: 5 });
    }

    #[test]
    fn a_partial_batch_lingers_only_while_it_is_young() {
        let ms = Duration::from_millis;
        assert_eq!(linger(3, 10, ms(20), ms(50)), Some(ms(30)));
        assert_eq!(linger(3, 10, ms(50), ms(50)), None);
        assert_eq!(linger(10, 10, ms(0), ms(50)), None, "a full batch goes at once");
        assert_eq!(linger(3, 10, ms(0), Duration::ZERO), None, "no linger configured");
    }

    #[test]
    fn resends_count_records_sent_before_by_this_run_or_an_earlier_one() {
        // An earlier run left records 0..4 durable: it may have sent them.
        let mut r = Resends::new(4);
        assert_eq!(r.sent(2..6), 2);
        assert_eq!(r.sent(6..8), 0);
        // After a reconnect the sender starts again from the first unacknowledged record.
        assert_eq!(r.sent(5..10), 3);
        assert_eq!(r.sent(10..11), 0);
    }
}
