//! The outbox's bookkeeping: which segments exist, what has been acknowledged,
//! the next id and per-stream sequence numbers, and the size bound. No I/O.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

/// A position in the outbox: a byte offset in the segment whose first record id is
/// `segment`, and the id of the record that starts there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Cursor {
    pub segment: u64,
    pub offset: u64,
    pub id: u64,
}

/// One segment file, as the index knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// Id of its first record; also its file name.
    pub first_id: u64,
    /// Bytes known to be on stable storage: readers never look past this.
    pub durable_bytes: u64,
    /// Id the next record appended here would get (`first_id` + records).
    pub end_id: u64,
    /// Acceptance time of its newest record, for the TTL.
    pub newest_ms: u64,
    /// Acceptance time of its oldest record, for the status.
    pub oldest_ms: u64,
}

/// What is persisted in the state file besides the segments themselves.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// Everything before this has been acknowledged upstream.
    pub acked: Cursor,
    /// Next sequence number of each stream: never handed out twice.
    pub next_seq: BTreeMap<String, u64>,
    /// Where a stream not in `next_seq` starts: raised past every number that
    /// may have been used when recovery found damage (see `files::open`).
    pub seq_floor: u64,
}

/// The state file as versions before `seq_floor` wrote it.
#[derive(Debug, Deserialize)]
pub struct StateV1 {
    pub acked: Cursor,
    pub next_seq: BTreeMap<String, u64>,
}

impl From<StateV1> for State {
    fn from(v1: StateV1) -> State {
        State { acked: v1.acked, next_seq: v1.next_seq, seq_floor: 0 }
    }
}

/// The in-memory index.
#[derive(Debug, Default)]
pub struct Index {
    /// Oldest first; the last one is the active segment the writer appends to.
    pub segments: VecDeque<Segment>,
    pub next_id: u64,
    pub state: State,
}

impl Index {
    /// Bytes of all segments together (durable part).
    pub fn bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.durable_bytes).sum()
    }

    /// Id after the last durable record.
    pub fn durable_end(&self) -> u64 {
        self.segments.back().map(|s| s.end_id).unwrap_or(self.next_id)
    }

    /// Records accepted and not yet acknowledged (ids are contiguous).
    pub fn depth(&self) -> u64 {
        self.durable_end().saturating_sub(self.state.acked.id)
    }

    /// The sequence number the next record of `stream` would get.
    pub fn next_seq(&self, stream: &str) -> u64 {
        self.state.next_seq.get(stream).copied().unwrap_or(self.state.seq_floor.max(1))
    }

    /// Hands out the id and per-stream sequence number of a new record.
    pub fn assign(&mut self, stream: &str) -> (u64, u64) {
        let id = self.next_id;
        self.next_id += 1;
        // Looked up before inserting: a stream already known costs no allocation.
        let floor = self.state.seq_floor.max(1);
        let seq = match self.state.next_seq.get_mut(stream) {
            Some(seq) => seq,
            None => self.state.next_seq.entry(stream.to_owned()).or_insert(floor),
        };
        let assigned = *seq;
        *seq += 1;
        (id, assigned)
    }

    /// Moves `c` onto a segment that exists: a cursor into a deleted segment moves
    /// to the start of the next one (or the durable end).
    pub fn normalize(&self, c: Cursor) -> Cursor {
        if self.segments.iter().any(|s| s.first_id == c.segment) {
            return c;
        }
        match self.segments.iter().find(|s| s.first_id > c.segment) {
            Some(s) => Cursor { segment: s.first_id, offset: 0, id: s.first_id },
            None => self.end_cursor(),
        }
    }

    /// The position after the last durable record.
    pub fn end_cursor(&self) -> Cursor {
        match self.segments.back() {
            Some(s) => Cursor { segment: s.first_id, offset: s.durable_bytes, id: s.end_id },
            None => Cursor { segment: self.next_id, offset: 0, id: self.next_id },
        }
    }

    /// Records the acknowledged position and removes the segments wholly before it
    /// (never the active one). Returns the removed segments, for the caller to
    /// delete once the state is persisted.
    pub fn ack_to(&mut self, c: Cursor) -> Vec<Segment> {
        if c.id > self.state.acked.id {
            self.state.acked = c;
        }
        let mut removed = Vec::new();
        while self.segments.len() > 1 && self.segments[0].end_id <= self.state.acked.id {
            removed.extend(self.segments.pop_front());
        }
        removed
    }

    /// Puts back, at the front, segments taken off by [`Index::ack_to`] (or
    /// dropped) whose deletion could not be recorded: they go again next time.
    pub fn restore(&mut self, segments: Vec<Segment>) {
        for s in segments.into_iter().rev() {
            self.segments.push_front(s);
        }
    }

    /// Removes the oldest non-active segment regardless of acknowledgement (size
    /// bound or TTL). Returns it and how many unacknowledged records it held.
    pub fn drop_oldest(&mut self) -> Option<(Segment, u64)> {
        if self.segments.len() < 2 {
            return None;
        }
        let s = self.segments.pop_front()?;
        let unacked = s.end_id.saturating_sub(self.state.acked.id.max(s.first_id));
        if self.state.acked.id < s.end_id {
            let next = &self.segments[0];
            self.state.acked = Cursor { segment: next.first_id, offset: 0, id: next.first_id };
        }
        Some((s, unacked))
    }

    /// Acceptance time of the oldest unacknowledged record's segment.
    pub fn oldest_unacked_ms(&self) -> Option<u64> {
        if self.depth() == 0 {
            return None;
        }
        self.segments.iter().find(|s| s.end_id > self.state.acked.id).map(|s| s.oldest_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(first_id: u64, end_id: u64) -> Segment {
        Segment { first_id, durable_bytes: (end_id - first_id) * 10, end_id, newest_ms: end_id, oldest_ms: first_id }
    }

    fn index(segments: &[(u64, u64)]) -> Index {
        let segments: VecDeque<Segment> = segments.iter().map(|&(a, b)| seg(a, b)).collect();
        let next_id = segments.back().map(|s| s.end_id).unwrap_or(0);
        Index { segments, next_id, state: State::default() }
    }

    #[test]
    fn sequence_numbers_are_per_stream_from_one() {
        let mut ix = index(&[]);
        assert_eq!(ix.assign("a"), (0, 1));
        assert_eq!(ix.assign("b"), (1, 1));
        assert_eq!(ix.assign("a"), (2, 2));
    }

    #[test]
    fn acking_removes_whole_segments_but_never_the_active_one() {
        let mut ix = index(&[(0, 10), (10, 20), (20, 25)]);
        assert!(ix.ack_to(Cursor { segment: 0, offset: 50, id: 5 }).is_empty());
        assert_eq!(ix.depth(), 20);
        let removed = ix.ack_to(Cursor { segment: 20, offset: 0, id: 20 });
        assert_eq!(removed.iter().map(|s| s.first_id).collect::<Vec<_>>(), [0, 10]);
        let removed = ix.ack_to(Cursor { segment: 20, offset: 50, id: 25 });
        assert!(removed.is_empty(), "the active segment stays");
        assert_eq!(ix.depth(), 0);
    }

    #[test]
    fn acks_never_move_backwards() {
        let mut ix = index(&[(0, 10)]);
        ix.ack_to(Cursor { segment: 0, offset: 50, id: 5 });
        ix.ack_to(Cursor { segment: 0, offset: 20, id: 2 });
        assert_eq!(ix.state.acked.id, 5);
    }

    #[test]
    fn dropping_the_oldest_counts_what_was_unacked() {
        let mut ix = index(&[(0, 10), (10, 20), (20, 25)]);
        ix.ack_to(Cursor { segment: 0, offset: 40, id: 4 });
        let (s, unacked) = ix.drop_oldest().unwrap();
        assert_eq!((s.first_id, unacked), (0, 6));
        assert_eq!(ix.state.acked, Cursor { segment: 10, offset: 0, id: 10 });
        ix.drop_oldest().unwrap();
        assert!(ix.drop_oldest().is_none(), "the active segment is never dropped");
    }

    #[test]
    fn cursors_into_deleted_segments_move_forward() {
        let ix = index(&[(10, 20), (20, 25)]);
        assert_eq!(ix.normalize(Cursor { segment: 0, offset: 99, id: 3 }), Cursor { segment: 10, offset: 0, id: 10 });
        assert_eq!(ix.normalize(Cursor { segment: 30, offset: 0, id: 30 }), Cursor { segment: 20, offset: 50, id: 25 });
    }
}
