//! The outbox against real files in temporary directories.

use std::time::Duration;

use super::*;

fn config(dir: &std::path::Path) -> OutboxConfig {
    OutboxConfig {
        role: Role::Upstream,
        dir: dir.to_owned(),
        durability: Durability::Batch,
        max_bytes: 64 << 20,
        segment_bytes: 4 << 10,
        ttl: Duration::from_secs(3600),
        overflow: Overflow::DropOldest,
        queue: 64,
        max_record_bytes: 64 << 10,
        commit_window: Duration::ZERO,
        min_free_bytes: 0,
    }
}

fn records(stream: &str, range: std::ops::Range<u32>) -> Vec<(String, Vec<u8>)> {
    range.map(|i| (stream.to_owned(), payload(i))).collect()
}

/// Fixed-width payloads, so every record of a test has the same size on disk.
fn payload(i: u32) -> Vec<u8> {
    format!("{{\"n\":{i:05}}}").into_bytes()
}

/// Reads everything unacknowledged, in order.
fn drain(outbox: &Outbox) -> Vec<Record> {
    let reader = outbox.reader();
    let mut at = reader.acked();
    let mut all = Vec::new();
    loop {
        let (batch, next) = reader.read_batch(at, 50, 1 << 20).unwrap();
        if batch.is_empty() && next == at {
            return all;
        }
        all.extend(batch);
        at = next;
    }
}

fn payloads(records: &[Record]) -> Vec<String> {
    records.iter().map(|r| String::from_utf8_lossy(&r.payload).into_owned()).collect()
}

#[test]
fn appended_records_read_back_in_order_with_per_stream_sequences() {
    let dir = tempfile::tempdir().unwrap();
    let (outbox, _) = Outbox::open(config(dir.path())).unwrap();
    outbox.append(records("a", 0..3)).unwrap();
    outbox.append(records("b", 0..2)).unwrap();
    outbox.append(records("a", 3..4)).unwrap();
    let all = drain(&outbox);
    let seqs: Vec<(&str, u64)> = all.iter().map(|r| (r.stream.as_str(), r.seq)).collect();
    assert_eq!(seqs, [("a", 1), ("a", 2), ("a", 3), ("b", 1), ("b", 2), ("a", 4)]);
    assert_eq!(outbox.status().accepted, 6);
    assert_eq!(outbox.status().depth, 6);
}

#[test]
fn a_batch_holds_one_stream_and_respects_its_bounds() {
    let dir = tempfile::tempdir().unwrap();
    let (outbox, _) = Outbox::open(config(dir.path())).unwrap();
    outbox.append(records("a", 0..5)).unwrap();
    outbox.append(records("b", 0..5)).unwrap();
    let reader = outbox.reader();
    let (batch, next) = reader.read_batch(reader.acked(), 3, 1 << 20).unwrap();
    assert_eq!(payloads(&batch), ["{\"n\":00000}", "{\"n\":00001}", "{\"n\":00002}"]);
    let (batch, next) = reader.read_batch(next, 10, 1 << 20).unwrap();
    assert_eq!(batch.len(), 2, "stops where stream b starts");
    let (batch, _) = reader.read_batch(next, 10, 1 << 20).unwrap();
    assert!(batch.iter().all(|r| r.stream == "b") && batch.len() == 5);
}

#[test]
fn unacknowledged_records_survive_a_reopen_and_sequences_are_never_reused() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (outbox, _) = Outbox::open(config(dir.path())).unwrap();
        outbox.append(records("a", 0..200)).unwrap();
        let reader = outbox.reader();
        let (batch, next) = reader.read_batch(reader.acked(), 150, 1 << 20).unwrap();
        assert_eq!(batch.len(), 150);
        reader.ack_to(next).unwrap();
        reader.persist_state().unwrap();
        // No close(): as if the power went.
    }
    let (outbox, recovery) = Outbox::open(config(dir.path())).unwrap();
    assert!(recovery.problems.is_empty(), "{:?}", recovery.problems);
    let left = drain(&outbox);
    assert_eq!(left.len(), 50);
    assert_eq!(left[0].seq, 151);
    outbox.append(records("a", 0..1)).unwrap();
    let reader = outbox.reader();
    let all = drain(&outbox);
    assert_eq!(all.last().unwrap().seq, 201);
    // Acknowledge everything, so every segment with stream a goes away: the
    // sequence must still continue after a reopen.
    reader.ack_to(outbox.reader().read_batch(reader.acked(), 1000, 1 << 30).map(|_| end_of(&outbox)).unwrap()).unwrap();
    outbox.close();
    let (outbox, _) = Outbox::open(config(dir.path())).unwrap();
    assert_eq!(drain(&outbox).len(), 0);
    outbox.append(records("a", 0..1)).unwrap();
    assert_eq!(drain(&outbox)[0].seq, 202);
}

fn end_of(outbox: &Outbox) -> Cursor {
    let reader = outbox.reader();
    let mut at = reader.acked();
    loop {
        let (batch, next) = reader.read_batch(at, 1000, 1 << 30).unwrap();
        if batch.is_empty() && next == at {
            return at;
        }
        at = next;
    }
}

#[test]
fn acknowledged_segments_are_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let (outbox, _) = Outbox::open(config(dir.path())).unwrap();
    for i in 0..20 {
        outbox.append(records("a", i * 50..i * 50 + 50)).unwrap();
    }
    let segments = || {
        std::fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "seg"))
            .count()
    };
    assert!(segments() > 3, "4 KiB segments should have rolled");
    outbox.reader().ack_to(end_of(&outbox)).unwrap();
    assert_eq!(segments(), 1, "only the active segment is left");
    assert_eq!(outbox.status().depth, 0);
}

/// The last segment's file and its full length, after writing `n` records.
fn written_outbox(n: u32) -> (tempfile::TempDir, std::path::PathBuf, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.segment_bytes = 1 << 20;
    let (outbox, _) = Outbox::open(cfg).unwrap();
    outbox.append(records("a", 0..n)).unwrap();
    outbox.close();
    let mut segs: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    segs.sort();
    let path = segs.into_iter().find(|p| std::fs::metadata(p).unwrap().len() > 0).unwrap();
    let data = std::fs::read(&path).unwrap();
    (dir, path, data)
}

/// Removes everything in `dir` but `keep`: undoes what an open created.
fn keep_only(dir: &std::path::Path, keep: &std::path::Path) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p != keep {
            std::fs::remove_file(p).unwrap();
        }
    }
}

#[test]
fn a_truncated_segment_keeps_every_whole_record_before_the_cut() {
    let (dir, path, data) = written_outbox(20);
    let record_len = data.len() / 20;
    for cut in 0..data.len() {
        std::fs::write(&path, &data[..cut]).unwrap();
        let (outbox, recovery) = Outbox::open(config(dir.path())).unwrap();
        let got = drain(&outbox);
        assert_eq!(got.len(), cut / record_len, "cut at {cut}");
        assert_eq!(recovery.skipped_bytes as usize, cut % record_len, "cut at {cut}");
        for (i, r) in got.iter().enumerate() {
            assert_eq!(r.payload, payload(i as u32));
        }
        outbox.close();
        keep_only(dir.path(), &path);
    }
}

#[test]
fn a_flipped_bit_loses_only_the_damaged_record_and_recovery_names_it() {
    let (dir, path, data) = written_outbox(10);
    let record_len = data.len() / 10;
    for byte in (0..data.len()).step_by(5) {
        let mut bad = data.clone();
        bad[byte] ^= 0x10;
        std::fs::write(&path, &bad).unwrap();
        let (outbox, recovery) = Outbox::open(config(dir.path())).unwrap();
        let got = drain(&outbox);
        let damaged = byte / record_len;
        let expected: Vec<Vec<u8>> = (0..10).filter(|&i| i != damaged).map(|i| payload(i as u32)).collect();
        assert_eq!(got.iter().map(|r| r.payload.clone()).collect::<Vec<_>>(), expected, "flip at {byte}");
        assert_eq!(recovery.records, 9, "flip at {byte}: {recovery:?}");
        let said = recovery.problems.join("; ");
        if damaged < 9 {
            // Inside the data: named in records.
            assert!(said.contains("1 damaged record(s)"), "flip at {byte}: {said}");
        }
        if (1..9).contains(&damaged) {
            // With the stream's number missing between two intact records.
            let seq = format!("sequence numbers a {}..{}", damaged + 1, damaged + 2);
            assert!(said.contains(&seq), "flip at {byte}: {said}");
        }
        // Read again, the rewritten segment holds the nine intact records.
        outbox.close();
        let (again, recovery) = Outbox::open(config(dir.path())).unwrap();
        assert_eq!(drain(&again).len(), 9, "flip at {byte}: {recovery:?}");
        again.close();
        keep_only(dir.path(), &path);
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 48, ..Default::default() })]

    /// Bytes flipped anywhere in a segment and the file cut anywhere: recovery never fails, and it keeps exactly the records
    /// whose frames are whole and untouched, in order.
    #[test]
    fn recovery_keeps_exactly_the_untouched_records_whatever_the_damage(
        flips in proptest::collection::vec((proptest::prelude::any::<proptest::sample::Index>(), 1..=255u8), 0..5),
        cut in proptest::option::of(proptest::prelude::any::<proptest::sample::Index>()),
    ) {
        let (dir, path, data) = written_outbox(30);
        // Fixed-width payloads: every frame has the same length.
        let record_len = data.len() / 30;
        let mut bad = data.clone();
        let mut touched = std::collections::BTreeSet::new();
        for (at, mask) in &flips {
            let at = at.index(bad.len());
            bad[at] ^= mask;
            touched.insert(at / record_len);
        }
        let end = cut.map_or(bad.len(), |c| c.index(bad.len() + 1));
        bad.truncate(end);
        std::fs::write(&path, &bad).unwrap();
        let (outbox, _) = Outbox::open(config(dir.path())).unwrap();
        let got: Vec<Vec<u8>> = drain(&outbox).into_iter().map(|r| r.payload).collect();
        let expected: Vec<Vec<u8>> = (0..30usize)
            .filter(|i| !touched.contains(i) && (i + 1) * record_len <= end)
            .map(|i| payload(i as u32))
            .collect();
        proptest::prop_assert_eq!(got, expected);
        outbox.close();
    }
}

#[test]
fn damage_past_the_acknowledged_cursor_costs_one_record_and_the_cursor_stays_on_its_record() {
    let (dir, path, data) = written_outbox(10);
    let record_len = data.len() / 10;
    // Four records acknowledged, then a bit flips in the seventh.
    let (outbox, _) = Outbox::open(config(dir.path())).unwrap();
    let reader = outbox.reader();
    let (_, after_four) = reader.read_batch(reader.acked(), 4, 1 << 20).unwrap();
    reader.ack_to(after_four).unwrap();
    outbox.close();
    let mut bad = std::fs::read(&path).unwrap();
    bad[6 * record_len + 10] ^= 0x01;
    // And one in the second record, already acknowledged: the cursor must move with the rewrite.
    bad[record_len + 10] ^= 0x01;
    std::fs::write(&path, &bad).unwrap();
    let (outbox, recovery) = Outbox::open(config(dir.path())).unwrap();
    let got: Vec<Vec<u8>> = drain(&outbox).into_iter().map(|r| r.payload).collect();
    let expected: Vec<Vec<u8>> = [4, 5, 7, 8, 9].iter().map(|&i| payload(i)).collect();
    assert_eq!(got, expected, "{recovery:?}");
    outbox.close();
}

#[test]
fn when_full_drop_oldest_deletes_old_records_and_counts_them() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.max_bytes = 16 << 10;
    cfg.segment_bytes = 2 << 10;
    let (outbox, _) = Outbox::open(cfg).unwrap();
    for i in 0..100 {
        outbox.append(records("a", i * 10..i * 10 + 10)).unwrap();
    }
    let status = outbox.status();
    assert!(status.bytes_on_disk <= 16 << 10, "{status:?}");
    assert!(status.dropped > 0, "{status:?}");
    assert_eq!(status.accepted, 1000);
    assert_eq!(status.depth + status.dropped, 1000, "{status:?}");
    // What is left is the newest records, in order.
    let left = drain(&outbox);
    assert_eq!(left.last().unwrap().seq, 1000);
    assert!(left.windows(2).all(|w| w[1].seq == w[0].seq + 1));
}

#[test]
fn when_full_refuse_turns_producers_away_and_counts_them() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.max_bytes = 8 << 10;
    cfg.overflow = Overflow::Refuse;
    let (outbox, _) = Outbox::open(cfg).unwrap();
    let mut refused = 0;
    for i in 0..100 {
        if outbox.append(records("a", i * 10..i * 10 + 10)) == Err(OutboxError::Full) {
            refused += 10;
        }
    }
    let status = outbox.status();
    assert!(refused > 0);
    assert_eq!(status.refused, refused);
    assert_eq!(status.accepted + status.refused, 1000);
    assert_eq!(drain(&outbox).len() as u64, status.accepted, "nothing accepted was lost");
}

/// Polls `done` until it holds, for up to 5 s (the writer rechecks every tick).
fn wait_until(what: &str, done: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !done() {
        assert!(std::time::Instant::now() < deadline, "waited 5 s for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn the_gate_closes_while_the_outbox_is_full_and_opens_once_acknowledgements_free_a_segment() {
    let dir = tempfile::tempdir().unwrap();
    let (outbox, _) =
        Outbox::open(OutboxConfig { max_bytes: 8 << 10, overflow: Overflow::Refuse, ..config(dir.path()) }).unwrap();
    let gate = outbox.gate();
    assert_eq!(gate.refusing(), Refusing::No);
    let mut next = 0;
    while outbox.append(records("a", next..next + 10)).is_ok() {
        assert_eq!(gate.refusing(), Refusing::No);
        next += 10;
        assert!(next < 10_000, "an 8 KiB outbox never filled");
    }
    assert_eq!(gate.refusing(), Refusing::Full);
    // No producer has to knock: acknowledgements alone open the gate.
    outbox.reader().ack_to(end_of(&outbox)).unwrap();
    wait_until("the gate to open", || gate.refusing() == Refusing::No);
    outbox.append(records("a", next..next + 10)).unwrap();
}

#[test]
fn records_past_their_ttl_are_not_sent_and_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.ttl = Duration::ZERO;
    let (outbox, _) = Outbox::open(cfg).unwrap();
    outbox.append(records("a", 0..5)).unwrap();
    // With a zero TTL every record is already too old by the time it is read.
    std::thread::sleep(Duration::from_millis(2));
    assert!(drain(&outbox).is_empty());
    assert_eq!(outbox.status().expired, 5);
}

#[test]
fn records_too_large_to_send_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (outbox, _) = Outbox::open(config(dir.path())).unwrap();
    assert_eq!(outbox.append(vec![("a".into(), vec![0; 65 << 10])]), Err(OutboxError::TooLarge));
    assert_eq!(outbox.status().refused, 1);
    assert_eq!(outbox.status().accepted, 0);
}

#[test]
fn interval_durability_syncs_on_schedule_under_sustained_load() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.durability = Durability::Interval { every: Duration::from_millis(20) };
    let (outbox, _) = Outbox::open(cfg).unwrap();
    let started = std::time::Instant::now();
    // Appends without a pause longer than the interval, for well over one interval.
    while started.elapsed() < Duration::from_millis(150) {
        outbox.append(records("a", 0..1)).unwrap();
    }
    let status = outbox.status();
    assert!(status.fsyncs >= 2, "{status:?}");
    // What was synced is visible to the sender while the load goes on.
    assert!(status.depth > 0 && !drain(&outbox).is_empty(), "{status:?}");
}

#[test]
fn forwarded_records_within_the_commit_window_share_one_fsync() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.commit_window = Duration::from_secs(5);
    let (outbox, _) = Outbox::open(cfg).unwrap();
    // Records that nobody waits for (forward rules) are gathered for the window;
    // the waiting append that follows closes the group without waiting it out.
    for i in 0..5 {
        outbox.try_append(records("fwd", i..i + 1)).unwrap();
    }
    let started = std::time::Instant::now();
    outbox.append(records("fn", 0..1)).unwrap();
    let status = outbox.status();
    assert_eq!(status.accepted, 6);
    assert_eq!(status.fsyncs, 1, "{status:?}");
    assert!(started.elapsed() < Duration::from_secs(5), "the waiting append sat out the window");
}

#[test]
fn a_waiting_producer_never_waits_for_the_commit_window() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.commit_window = Duration::from_secs(10);
    let (outbox, _) = Outbox::open(cfg).unwrap();
    // One producer that waits for each answer (a worker) can never be joined by
    // another record while it waits: its appends are written at once.
    let started = std::time::Instant::now();
    for i in 0..3 {
        outbox.append(records("fn", i..i + 1)).unwrap();
    }
    assert!(started.elapsed() < Duration::from_secs(10), "appends waited for the window");
    let status = outbox.status();
    assert_eq!((status.accepted, status.fsyncs), (3, 3), "{status:?}");
}

#[test]
fn an_id_gap_left_by_a_failed_write_is_not_the_end_of_the_data() {
    // What a write that failed on a full disk left behind before ids were given
    // back: records 0..3, then 7..10 (ids 3..7 were assigned to the failed write).
    let (dir, path, _) = written_outbox(1);
    let mut data = Vec::new();
    let now = crate::event::unix_ms();
    for (id, n) in [(0, 0), (1, 1), (2, 2), (7, 3), (8, 4), (9, 5)] {
        let record = Record { id, stream: "a".into(), seq: n + 1, accepted_ms: now, payload: payload(n as u32) };
        frame::encode(&record.encode(), &mut data);
    }
    std::fs::write(&path, &data).unwrap();
    keep_only(dir.path(), &path);
    let (outbox, recovery) = Outbox::open(config(dir.path())).unwrap();
    let got = drain(&outbox);
    assert_eq!(payloads(&got), (0..6).map(|i| String::from_utf8(payload(i)).unwrap()).collect::<Vec<_>>());
    assert_eq!(recovery.records, 6);
    assert_eq!(recovery.skipped_bytes, 0, "{:?}", recovery.problems);
    assert!(recovery.problems.iter().any(|p| p.contains("ids 3..7")), "{:?}", recovery.problems);
    // New records follow the last id and sequence number on disk.
    outbox.append(records("a", 6..7)).unwrap();
    let last = drain(&outbox).pop().unwrap();
    assert_eq!((last.id, last.seq), (10, 7));
}

#[path = "../../../tests/support/tmpfs.rs"]
mod tmpfs;
use tmpfs::Tmpfs as SmallDisk;

#[test]
#[cfg_attr(edgefn_missing_root, ignore = "needs root to mount a tmpfs (bash .ci/run runs it as root)")]
fn a_full_disk_refuses_records_without_losing_ids_or_sequence_numbers() {
    let Some(disk) = SmallDisk::mount(4 << 20) else { return };
    let (outbox, _) = Outbox::open(config(disk.path())).unwrap();
    let mut accepted = Vec::new();
    let mut next = 0u32;
    let mut append = |outbox: &Outbox, accepted: &mut Vec<u32>| {
        let result = outbox.append(records("a", next..next + 20));
        if result.is_ok() {
            accepted.extend(next..next + 20);
        }
        next += 20;
        result
    };
    append(&outbox, &mut accepted).unwrap();
    let filler = disk.fill();
    // Appends go on until the preallocated space runs out; then they are refused.
    let mut refused = 0;
    for _ in 0..2_000 {
        if append(&outbox, &mut accepted).is_err() {
            refused += 1;
            if refused == 3 {
                break;
            }
        }
    }
    assert_eq!(refused, 3, "the full disk never refused an append");
    // Space comes back: the outbox accepts again, without a restart.
    std::fs::remove_file(filler).unwrap();
    append(&outbox, &mut accepted).expect("accepting again once space returned");
    outbox.close();

    let (outbox, recovery) = Outbox::open(config(disk.path())).unwrap();
    assert!(recovery.problems.is_empty(), "{:?}", recovery.problems);
    let got = drain(&outbox);
    let expected: Vec<String> = accepted.iter().map(|&i| String::from_utf8(payload(i)).unwrap()).collect();
    assert_eq!(payloads(&got), expected, "every accepted record, in order");
    let seqs: Vec<u64> = got.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, (1..=got.len() as u64).collect::<Vec<_>>(), "refused records used up sequence numbers");
    outbox.close();
}

#[test]
#[cfg_attr(edgefn_missing_root, ignore = "needs root to mount a tmpfs (bash .ci/run runs it as root)")]
fn the_gate_closes_while_the_disk_reserve_is_short_and_opens_when_space_returns() {
    let Some(disk) = SmallDisk::mount(8 << 20) else { return };
    let (outbox, _) = Outbox::open(OutboxConfig { min_free_bytes: 2 << 20, ..config(disk.path()) }).unwrap();
    let gate = outbox.gate();
    outbox.append(records("a", 0..10)).unwrap();
    let filler = disk.fill();
    assert_eq!(outbox.append(records("a", 10..20)), Err(OutboxError::DiskReserve));
    assert_eq!(gate.refusing(), Refusing::DiskReserve);
    std::fs::remove_file(filler).unwrap();
    wait_until("the gate to open", || gate.refusing() == Refusing::No);
    outbox.append(records("a", 10..20)).unwrap();
    assert_eq!(payloads(&drain(&outbox)).len(), 20);
    outbox.close();
}

#[test]
fn sequence_numbers_never_go_backwards_after_a_damaged_state_file() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (outbox, _) = Outbox::open(config(dir.path())).unwrap();
        outbox.append(records("a", 0..100)).unwrap();
        outbox.append(records("b", 0..100)).unwrap();
        // Everything sent and acknowledged: no segment holds a or b any more.
        outbox.reader().ack_to(end_of(&outbox)).unwrap();
        outbox.close();
    }
    std::fs::write(dir.path().join("state"), b"\x07\x00\x00\x00garbage!").unwrap();
    let (outbox, recovery) = Outbox::open(config(dir.path())).unwrap();
    assert!(recovery.problems.iter().any(|p| p.contains("state file unreadable")), "{:?}", recovery.problems);
    assert!(recovery.problems.iter().any(|p| p.contains("never a reused number")), "{:?}", recovery.problems);
    outbox.append(records("a", 0..1)).unwrap();
    outbox.append(records("b", 0..1)).unwrap();
    // What the lost state no longer says was acknowledged is sent again (as it
    // was, duplicates); the two new records come last.
    let all = drain(&outbox);
    let seqs: Vec<u64> = all[all.len() - 2..].iter().map(|r| r.seq).collect();
    assert!(seqs.iter().all(|&s| s > 100), "a sequence number went backwards: {seqs:?}");
    outbox.close();
    // The floor is kept: a later clean start does not fall back either.
    let (outbox, recovery) = Outbox::open(config(dir.path())).unwrap();
    assert!(recovery.problems.is_empty(), "{:?}", recovery.problems);
    outbox.append(records("c", 0..1)).unwrap();
    assert!(drain(&outbox).last().unwrap().seq >= seqs[0], "a new stream starts below the floor");
}

#[test]
fn a_torn_tail_after_a_crash_does_not_move_sequence_numbers() {
    let (dir, path, data) = written_outbox(10);
    std::fs::write(&path, &data[..data.len() - 3]).unwrap();
    let (outbox, recovery) = Outbox::open(config(dir.path())).unwrap();
    assert!(!recovery.damaged, "{:?}", recovery.problems);
    outbox.append(records("a", 10..11)).unwrap();
    // No jump: the numbers continue from the state file.
    assert_eq!(drain(&outbox).last().unwrap().seq, 11);
}

#[test]
fn the_status_ages_the_oldest_unacknowledged_record_not_its_segment() {
    let dir = tempfile::tempdir().unwrap();
    let (outbox, _) = Outbox::open(config(dir.path())).unwrap();
    outbox.append(records("a", 0..2)).unwrap();
    // Acceptance times a second apart (pacing, not waiting for anything).
    std::thread::sleep(Duration::from_millis(1000));
    outbox.append(records("a", 2..3)).unwrap();
    let reader = outbox.reader();
    let (_, after_two) = reader.read_batch(reader.acked(), 2, 1 << 20).unwrap();
    reader.ack_to(after_two).unwrap();
    // The third record is younger than its segment's first.
    let status = outbox.status();
    assert_eq!(status.depth, 1);
    assert!(status.oldest_age_ms < 1000, "oldest {} ms", status.oldest_age_ms);
    reader.ack_to(end_of(&outbox)).unwrap();
    assert_eq!(outbox.status().oldest_age_ms, 0);
}

#[test]
fn records_that_would_eat_into_the_disk_reserve_are_refused_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let free = files::free_bytes(dir.path()).unwrap();
    // A reserve bigger than the disk's free space: nothing fits.
    let (outbox, _) = Outbox::open(OutboxConfig { min_free_bytes: free + (1 << 30), ..config(dir.path()) }).unwrap();
    assert_eq!(outbox.append(records("a", 0..2)), Err(OutboxError::DiskReserve));
    assert_eq!(outbox.status().refused, 2);
    assert_eq!(outbox.status().depth, 0);
    outbox.close();
    // Without the reserve the same files accept again: the refusals used up
    // no id and no sequence number.
    let (outbox, _) = Outbox::open(config(dir.path())).unwrap();
    outbox.append(records("a", 0..2)).unwrap();
    let seqs: Vec<u64> = drain(&outbox).iter().map(|r| r.seq).collect();
    assert_eq!(seqs, [1, 2]);
}

#[test]
fn appends_past_the_queue_bound_are_refused_and_counted_while_the_writer_is_busy_and_the_queued_ones_are_written() {
    let dir = tempfile::tempdir().unwrap();
    let (outbox, _) = Outbox::open(OutboxConfig { queue: 2, ..config(dir.path()) }).unwrap();
    // The writer calls `then` once the first record is durable: held there, it takes nothing more.
    let (entered, writer_in_then) = std::sync::mpsc::channel();
    let (release, released) = std::sync::mpsc::channel::<()>();
    let hold: Then = Box::new(move |_| {
        entered.send(()).unwrap();
        released.recv().unwrap();
    });
    outbox.try_append_then(records("a", 0..1), Some(hold)).unwrap();
    writer_in_then.recv().unwrap();
    outbox.try_append(records("a", 1..2)).unwrap();
    outbox.try_append(records("a", 2..3)).unwrap();
    assert_eq!(outbox.try_append(records("a", 3..5)), Err(OutboxError::QueueFull));
    assert_eq!(outbox.status().refused, 2);
    release.send(()).unwrap();
    // Room again once the writer took the queued ones.
    outbox.append(records("a", 5..6)).unwrap();
    let written: Vec<String> = payloads(&drain(&outbox));
    assert_eq!(written, [0, 1, 2, 5].map(|i| String::from_utf8(payload(i)).unwrap()));
    assert_eq!(outbox.status().accepted, 4);
}

/// Bytes the outbox's segment files take on disk (allocated blocks, not length).
fn segment_blocks(dir: &std::path::Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "seg"))
        .map(|e| e.metadata().unwrap().blocks() * 512)
        .sum()
}

#[test]
fn an_active_segment_that_upstream_drained_gives_its_space_back_without_filling_up() {
    let dir = tempfile::tempdir().unwrap();
    // Segments as large as the default's: larger than many a disk's free space.
    let cfg = OutboxConfig { segment_bytes: 16 << 20, ..config(dir.path()) };
    let (outbox, _) = Outbox::open(cfg.clone()).unwrap();
    let kib = |i: u32| ("a".to_owned(), format!("{i:01024}").into_bytes());
    for batch in 0..30 {
        outbox.append((batch * 50..batch * 50 + 50).map(kib).collect()).unwrap();
    }
    assert!(segment_blocks(dir.path()) >= 1_500 << 10, "{} bytes", segment_blocks(dir.path()));
    outbox.reader().ack_to(end_of(&outbox)).unwrap();
    wait_until("the drained segment to go", || segment_blocks(dir.path()) < 64 << 10);
    // Writing goes on in the new segment, numbered on from the old one, also
    // after a restart (the state outlived the records that carried it).
    outbox.append(vec![kib(1_500)]).unwrap();
    outbox.close();
    let (outbox, recovery) = Outbox::open(cfg).unwrap();
    assert!(recovery.problems.is_empty(), "{:?}", recovery.problems);
    let left = drain(&outbox);
    assert_eq!(left.iter().map(|r| (r.id, r.seq)).collect::<Vec<_>>(), [(1_500, 1_501)]);
    outbox.close();
}

#[test]
#[cfg_attr(edgefn_missing_root, ignore = "needs root to mount a tmpfs (bash .ci/run runs it as root)")]
fn space_freed_on_a_full_disk_is_not_filled_with_zeros_when_a_segment_cannot_grow() {
    let Some(disk) = SmallDisk::mount(4 << 20) else { return };
    let (outbox, _) = Outbox::open(config(disk.path())).unwrap();
    let filler = disk.fill();
    let mut next = 0;
    // Appends go on into what the segment had allocated, then are refused.
    while outbox.append(records("a", next..next + 20)).is_ok() {
        next += 20;
        assert!(next < 100_000, "a full disk never refused an append");
    }
    // Another program frees 800 KiB: less than one allocation step.
    let f = std::fs::OpenOptions::new().write(true).open(&filler).unwrap();
    f.set_len(f.metadata().unwrap().len() - (800 << 10)).unwrap();
    let freed = files::free_bytes(disk.path()).unwrap();
    assert!(freed >= 700 << 10, "{freed}");
    for _ in 0..3 {
        // The writer lets records try again a second after a failed write.
        wait_until("the gate to let records try again", || outbox.gate().refusing() != Refusing::WriteFailed);
        assert!(outbox.append(records("a", next..next + 20)).is_err());
    }
    let free = files::free_bytes(disk.path()).unwrap();
    assert!(free + (64 << 10) >= freed, "the outbox took {} of the {freed} bytes freed", freed - free);
    outbox.close();
}

#[test]
fn the_last_acknowledgements_of_a_burst_reach_the_state_file_without_another_acknowledgement() {
    // Those who acknowledge write the state at most every 200 ms while
    // acknowledgements come: the writer records what the last ones left, so a
    // crash after the burst does not send the whole burst again.
    let dir = tempfile::tempdir().unwrap();
    let (outbox, _) = Outbox::open(config(dir.path())).unwrap();
    outbox.append(records("a", 0..3)).unwrap();
    let end = end_of(&outbox);
    outbox.reader().ack_to(end).unwrap();
    let on_disk = || files::read_state(dir.path(), &mut Recovery::default()).unwrap().acked.id;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while on_disk() != end.id {
        assert!(std::time::Instant::now() < deadline, "the state file still says {} after 30 s", on_disk());
        std::thread::sleep(Duration::from_millis(20));
    }
    outbox.close();
}
