//! The outbox's files: segment naming, recovery on open, reading records back,
//! and the atomically replaced state file. The only code that touches the disk.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::frame::{self, Tail};
use super::index::{Cursor, Index, Segment, State};
use super::record::{Record, RecordRef};
use crate::durable;

const STATE_FILE: &str = "state";
const SEGMENT_EXT: &str = "seg";

/// What recovery found wrong and skipped.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovery {
    pub segments: usize,
    pub records: u64,
    /// Bytes that could not be read back (a torn write at the tail, or damage).
    pub skipped_bytes: u64,
    /// One line per damaged segment.
    pub problems: Vec<String>,
    /// Damage beyond a torn tail (a bad frame inside a segment, an unreadable
    /// state file): sequence numbers that went upstream may be gone from disk.
    pub damaged: bool,
}

/// Bytes an unprivileged writer may still use on the filesystem holding `dir`.
pub fn free_bytes(dir: &Path) -> io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL in the outbox directory's path"))?;
    // SAFETY: `path` is a valid C string that outlives the call, and `stat` is
    // a plain struct statvfs writes into before we read it.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(path.as_ptr(), &mut stat) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((stat.f_bavail as u64).saturating_mul(stat.f_frsize as u64))
}

pub fn segment_path(dir: &Path, first_id: u64) -> PathBuf {
    dir.join(format!("{first_id:020}.{SEGMENT_EXT}"))
}

/// Writes `state` to a temp file, syncs it, renames it over the state file and
/// syncs the directory: the file is always either the old or the new state.
pub fn write_state(dir: &Path, state: &State) -> io::Result<()> {
    let bytes = postcard::to_allocvec(state).map_err(io::Error::other)?;
    let mut framed = Vec::with_capacity(bytes.len() + frame::HEADER);
    frame::encode(&bytes, &mut framed);
    durable::replace(&dir.join(STATE_FILE), &framed)
}

pub(super) fn read_state(dir: &Path, recovery: &mut Recovery) -> io::Result<State> {
    let data = match fs::read(dir.join(STATE_FILE)) {
        Ok(d) => d,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(State::default()),
        Err(e) => return Err(e),
    };
    let mut state = None;
    let tail = frame::scan(&data, |_, body| {
        state = postcard::from_bytes::<State>(body)
            .ok()
            .or_else(|| postcard::from_bytes::<super::index::StateV1>(body).ok().map(State::from))
    });
    match (state, tail) {
        (Some(s), Tail::Clean) => Ok(s),
        _ => {
            // Only reachable by outside damage (it is replaced atomically): start
            // over from the segments; records may be sent again, never lost.
            recovery.problems.push("state file unreadable; resending everything on disk".into());
            recovery.damaged = true;
            Ok(State::default())
        }
    }
}

/// Opens (creating) the outbox in `dir`: reads the state, scans every segment,
/// truncates a torn tail, deletes what was acknowledged, and starts a fresh
/// active segment. Returns the index, the active segment's file and a report.
pub fn open(dir: &Path) -> io::Result<(Index, File, Recovery)> {
    durable::create_dir_all(dir)?;
    let mut recovery = Recovery::default();
    let state = read_state(dir, &mut recovery)?;
    let mut ids: Vec<u64> = fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            name.strip_suffix(&format!(".{SEGMENT_EXT}"))?.parse().ok()
        })
        .collect();
    ids.sort_unstable();
    let mut index = Index { segments: VecDeque::new(), next_id: 0, state };
    for (i, &first_id) in ids.iter().enumerate() {
        let path = segment_path(dir, first_id);
        let segment = scan_segment(&path, first_id, &mut index, &mut recovery, i + 1 == ids.len())?;
        if segment.end_id == segment.first_id || segment.end_id <= index.state.acked.id {
            fs::remove_file(&path)?;
            continue;
        }
        index.next_id = index.next_id.max(segment.end_id);
        recovery.segments += 1;
        index.segments.push_back(segment);
    }
    index.next_id = index.next_id.max(index.state.acked.id);
    if recovery.damaged {
        raise_seq_floor(&mut index.state, crate::event::unix_ms(), &mut recovery);
    }
    let active = create_segment(dir, index.next_id)?;
    index.segments.push_back(Segment {
        first_id: index.next_id,
        durable_bytes: 0,
        end_id: index.next_id,
        newest_ms: 0,
        oldest_ms: 0,
    });
    index.state.acked = index.normalize(index.state.acked);
    Ok((index, active, recovery))
}

/// Sequence numbers never go backwards, whatever file is damaged: a receiver
/// deduplicates on (gateway, stream, seq) and would drop new records that reuse
/// one. After damage the numbers that went upstream may be gone from disk (an
/// unreadable state file, a lost stretch of a segment), so every stream, known
/// or not, continues from a floor above anything it can have used: 2^32 past the
/// highest number still known, and at least the time in milliseconds x 1024
/// (more than a stream can count to). Receivers see a gap, never a reuse.
fn raise_seq_floor(state: &mut State, now_ms: u64, recovery: &mut Recovery) {
    let highest = state.next_seq.values().copied().chain([state.seq_floor]).max().unwrap_or(0);
    let floor = highest.saturating_add(1 << 32).max(now_ms.saturating_mul(1024));
    state.seq_floor = floor;
    for next in state.next_seq.values_mut() {
        *next = (*next).max(floor);
    }
    recovery.problems.push(format!(
        "sequence numbers continue from {floor} in every stream: a gap after damage, never a reused number"
    ));
}

/// Creates an empty segment file and makes its name durable.
pub fn create_segment(dir: &Path, first_id: u64) -> io::Result<File> {
    let file = OpenOptions::new().create(true).truncate(true).write(true).open(segment_path(dir, first_id))?;
    durable::sync_dir(dir)?;
    Ok(file)
}

fn scan_segment(
    path: &Path,
    first_id: u64,
    index: &mut Index,
    recovery: &mut Recovery,
    last: bool,
) -> io::Result<Segment> {
    let data = fs::read(path)?;
    let mut segment = Segment { first_id, durable_bytes: 0, end_id: first_id, newest_ms: 0, oldest_ms: u64::MAX };
    let mut bad_record = None;
    let mut gaps = Vec::new();
    // Intact frames (id, byte range), and the damaged stretches read past.
    let mut kept: Vec<(u64, std::ops::Range<usize>)> = Vec::new();
    let mut stretches: Vec<Stretch> = Vec::new();
    let mut last_seq: std::collections::HashMap<String, u64> = Default::default();
    let mut pos = 0;
    let tail = loop {
        let tail = frame::scan(&data[pos..], |offset, body| {
            if bad_record.is_some() {
                return;
            }
            let offset = pos + offset;
            match RecordRef::decode(body) {
                // Ids only grow. A jump is a gap a failed write left (older versions
                // did not give its ids back): the records after it are intact.
                Some(r) if r.id >= segment.end_id => {
                    if let Some(stretch) = stretches.last_mut().filter(|s| s.ids.end == 0) {
                        stretch.ids.end = r.id;
                    } else if r.id > segment.end_id {
                        gaps.push((segment.end_id, r.id));
                    }
                    if let Some(stretch) = stretches.last_mut() {
                        // The first record of a stream after the damage tells which of its numbers went.
                        if let Some(&last) = last_seq.get(r.stream) {
                            if r.seq > last + 1 && stretch.seen.insert(r.stream.to_owned()) {
                                stretch.seqs.push(format!("{} {}..{}", r.stream, last + 1, r.seq));
                            }
                        }
                    }
                    last_seq.insert(r.stream.to_owned(), r.seq);
                    segment.end_id = r.id + 1;
                    segment.durable_bytes = (offset + frame::HEADER + body.len()) as u64;
                    segment.newest_ms = segment.newest_ms.max(r.accepted_ms);
                    segment.oldest_ms = segment.oldest_ms.min(r.accepted_ms);
                    kept.push((r.id, offset..offset + frame::HEADER + body.len()));
                    let next = index.state.next_seq.entry(r.stream.to_owned()).or_insert(1);
                    *next = (*next).max(r.seq + 1);
                }
                _ => bad_record = Some(offset),
            }
        });
        // A damaged frame inside the data: read on from the next intact record
        // (one that decodes and continues the ids) rather than give up the rest.
        // A frame whose length runs past the end looks like a torn write, but a
        // torn write is the last thing written: an intact record after it means
        // its length was damaged.
        let (Tail::Corrupt { offset, .. } | Tail::Truncated { offset, .. }) = tail else { break tail };
        if bad_record.is_some() {
            break tail;
        }
        let at = pos + offset;
        let end_id = segment.end_id;
        let accept = |body: &[u8]| RecordRef::decode(body).is_some_and(|r| r.id >= end_id);
        match frame::resync(&data, at + 1, accept) {
            Some(next) => {
                stretches.push(Stretch { offset: at, bytes: next - at, ids: end_id..0, ..Stretch::default() });
                pos = next;
            }
            None if matches!(tail, Tail::Truncated { .. }) => break tail,
            None => break Tail::Corrupt { offset: at, bytes: data.len() - at },
        }
    };
    if !stretches.is_empty() {
        rewrite_without_damage(path, &data, &kept, &mut segment, &mut index.state)?;
        recovery.damaged = true;
        for stretch in &stretches {
            recovery.skipped_bytes += stretch.bytes as u64;
            let lost = stretch.ids.end - stretch.ids.start;
            let seqs = match stretch.seqs.is_empty() {
                true => String::new(),
                false => format!(" (sequence numbers {})", stretch.seqs.join(", ")),
            };
            recovery.problems.push(format!(
                "{}: {lost} damaged record(s), ids {}..{}, in {} bytes at offset {}{seqs}; the records after them are kept",
                path.display(),
                stretch.ids.start,
                stretch.ids.end,
                stretch.bytes,
                stretch.offset
            ));
        }
    }
    if segment.oldest_ms == u64::MAX {
        segment.oldest_ms = 0;
    }
    recovery.records += segment.end_id - first_id;
    for stretch in &stretches {
        recovery.records -= stretch.ids.end - stretch.ids.start;
    }
    for (from, to) in gaps {
        recovery.records -= to - from;
        recovery.problems.push(format!(
            "{}: no records with ids {from}..{to} (a write that failed there); the records after them are kept",
            path.display()
        ));
    }
    // The end of the last intact record in the data as read (a rewrite moved it in the file).
    let good = kept.last().map_or(0, |(_, r)| r.end as u64);
    if !stretches.is_empty() {
        if good < data.len() as u64 && !data[good as usize..].iter().all(|&b| b == 0) {
            let skipped = data.len() as u64 - good;
            recovery.skipped_bytes += skipped;
            recovery
                .problems
                .push(format!("{}: skipped {skipped} bytes after offset {good}: damaged bytes", path.display()));
        }
    } else if good < data.len() as u64 && bad_record.is_none() && data[good as usize..].iter().all(|&b| b == 0) {
        // Preallocated space after the last record (a crash left it): give it back.
        let f = OpenOptions::new().write(true).open(path)?;
        f.set_len(good)?;
        f.sync_all()?;
    } else if good < data.len() as u64 {
        let torn = matches!((&tail, bad_record), (Tail::Truncated { .. }, None));
        let what = match (tail, bad_record) {
            (_, Some(_)) => "a record that does not decode",
            (Tail::Truncated { .. }, _) => "a torn write",
            _ => "damaged bytes (checksum mismatch)",
        };
        let skipped = data.len() as u64 - good;
        recovery.skipped_bytes += skipped;
        // A torn write at the end of the last segment is what a crash leaves: those
        // records were never accepted, so never sent. Anything else is damage.
        recovery.damaged |= !(last && torn);
        recovery.problems.push(format!("{}: skipped {skipped} bytes after offset {good}: {what}", path.display()));
        if last {
            // The tail of the last segment is where a crash tears a write: cut it
            // off so the file ends on a whole record.
            let f = OpenOptions::new().write(true).open(path)?;
            f.set_len(good)?;
            f.sync_all()?;
        }
    }
    Ok(segment)
}

/// A damaged stretch of a segment that recovery read past.
#[derive(Debug, Default)]
struct Stretch {
    offset: usize,
    bytes: usize,
    /// Ids of the records lost in it (the end is set by the first record after it).
    ids: std::ops::Range<u64>,
    /// "stream a..b" for each stream whose numbers show a gap across it.
    seqs: Vec<String>,
    seen: std::collections::HashSet<String>,
}

/// Replaces a segment with its intact records only, contiguous, so that readers
/// never meet the damage; moves the acknowledged cursor if it pointed into it.
fn rewrite_without_damage(
    path: &Path,
    data: &[u8],
    kept: &[(u64, std::ops::Range<usize>)],
    segment: &mut Segment,
    state: &mut State,
) -> io::Result<()> {
    let mut clean = Vec::with_capacity(data.len());
    let mut acked_offset = None;
    for (id, range) in kept {
        if state.acked.segment == segment.first_id && acked_offset.is_none() && *id >= state.acked.id {
            acked_offset = Some(clean.len() as u64);
        }
        clean.extend_from_slice(&data[range.clone()]);
    }
    durable::replace(path, &clean)?;
    segment.durable_bytes = clean.len() as u64;
    if state.acked.segment == segment.first_id {
        state.acked.offset = acked_offset.unwrap_or(segment.durable_bytes);
    }
    Ok(())
}

/// Reads up to `max_records` records (and at least one, if any) of one stream,
/// starting at `from` and never past what the index says is durable.
/// Returns them and the cursor after the last one.
pub fn read_batch(
    dir: &Path,
    index_view: &[Segment],
    from: Cursor,
    max_records: usize,
    max_bytes: usize,
) -> io::Result<(Vec<(Record, Cursor)>, Cursor)> {
    let mut out = Vec::new();
    let mut bytes = 0usize;
    let mut at = from;
    let start = from.segment;
    for segment in index_view.iter().skip_while(|s| s.first_id != start) {
        if segment.first_id != at.segment {
            at = Cursor { segment: segment.first_id, offset: 0, id: segment.first_id };
        }
        if at.offset >= segment.durable_bytes {
            continue;
        }
        let mut file = match File::open(segment_path(dir, segment.first_id)) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        file.seek(SeekFrom::Start(at.offset))?;
        let mut reader = io::BufReader::with_capacity(64 << 10, file.take(segment.durable_bytes - at.offset));
        while at.offset < segment.durable_bytes {
            let mut header = [0u8; frame::HEADER];
            reader.read_exact(&mut header)?;
            let len = u32::from_le_bytes(header[..4].try_into().expect("4 bytes")) as usize;
            // Bounded before anything is allocated: a damaged length must not
            // become a huge allocation.
            if len > frame::MAX_BODY {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("damaged record length {len} at {at:?}"),
                ));
            }
            let mut framed = header.to_vec();
            framed.resize(frame::HEADER + len, 0);
            reader.read_exact(&mut framed[frame::HEADER..])?;
            let mut record = None;
            frame::scan(&framed, |_, body| record = Record::decode(body));
            let record = record
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("damaged record at {at:?}")))?;
            let stream_changed = out.first().is_some_and(|(f, _): &(Record, Cursor)| f.stream != record.stream);
            if !out.is_empty() && (stream_changed || out.len() >= max_records || bytes + len > max_bytes) {
                return Ok((out, at));
            }
            bytes += len;
            at = Cursor { segment: segment.first_id, offset: at.offset + framed.len() as u64, id: record.id + 1 };
            out.push((record, at));
        }
    }
    Ok((out, at))
}
