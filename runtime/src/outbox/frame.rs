//! Record framing on disk: `[len: u32 LE][crc32: u32 LE][body: len bytes]`, the
//! CRC covering the length and the body, so a flipped bit anywhere is caught.
//! Pure: encodes into and scans byte slices.

/// Header bytes before each body.
pub const HEADER: usize = 8;
/// The largest body a frame may carry; a larger length read back is damage.
pub const MAX_BODY: usize = 4 << 20;

/// Appends one frame holding `body` to `out`.
pub fn encode(body: &[u8], out: &mut Vec<u8>) {
    let len = (body.len() as u32).to_le_bytes();
    out.extend_from_slice(&len);
    out.extend_from_slice(&checksum(&len, body).to_le_bytes());
    out.extend_from_slice(body);
}

fn checksum(len: &[u8; 4], body: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(len);
    hasher.update(body);
    hasher.finalize()
}

/// What scanning found after the last intact frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tail {
    /// The data ended exactly after a frame.
    Clean,
    /// The data ends partway through a frame (a write cut short).
    Truncated { offset: usize, bytes: usize },
    /// A frame's checksum or length is wrong: everything from `offset` is unreadable.
    Corrupt { offset: usize, bytes: usize },
}

/// Scans `data` from the start, calling `each(offset, body)` for every intact
/// frame, and stops at the first damaged or incomplete one. Zero bytes from the
/// first all-zero header to the end are preallocated space, not damage: no frame
/// has an empty body, so a zero length never starts a real one.
pub fn scan(data: &[u8], mut each: impl FnMut(usize, &[u8])) -> Tail {
    let mut at = 0;
    while at < data.len() {
        let rest = &data[at..];
        if rest.len() >= HEADER && rest[..HEADER] == [0; HEADER] && rest.iter().all(|&b| b == 0) {
            return Tail::Clean;
        }
        if rest.len() < HEADER {
            return Tail::Truncated { offset: at, bytes: rest.len() };
        }
        let len_bytes: [u8; 4] = rest[..4].try_into().expect("4 bytes");
        let len = u32::from_le_bytes(len_bytes) as usize;
        let crc = u32::from_le_bytes(rest[4..8].try_into().expect("4 bytes"));
        if len > MAX_BODY {
            return Tail::Corrupt { offset: at, bytes: rest.len() };
        }
        if rest.len() < HEADER + len {
            return Tail::Truncated { offset: at, bytes: rest.len() };
        }
        let body = &rest[HEADER..HEADER + len];
        if checksum(&len_bytes, body) != crc {
            return Tail::Corrupt { offset: at, bytes: rest.len() };
        }
        each(at, body);
        at += HEADER + len;
    }
    Tail::Clean
}

/// The first offset at or after `from` where an intact, non-empty frame starts
/// and `accept(body)` agrees: where reading resumes after a damaged stretch.
/// A checksum matching by chance at a wrong offset is a 1 in 2^32 event per
/// offset; `accept` (the record decodes, its id follows) narrows it further.
pub fn resync(data: &[u8], from: usize, mut accept: impl FnMut(&[u8]) -> bool) -> Option<usize> {
    (from..data.len().saturating_sub(HEADER)).find(|&at| {
        let rest = &data[at..];
        let len_bytes: [u8; 4] = rest[..4].try_into().expect("4 bytes");
        let len = u32::from_le_bytes(len_bytes) as usize;
        if len == 0 || len > MAX_BODY || rest.len() < HEADER + len {
            return false;
        }
        let crc = u32::from_le_bytes(rest[4..8].try_into().expect("4 bytes"));
        let body = &rest[HEADER..HEADER + len];
        checksum(&len_bytes, body) == crc && accept(body)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(bodies: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for b in bodies {
            encode(b, &mut out);
        }
        out
    }

    fn read(data: &[u8]) -> (Vec<Vec<u8>>, Tail) {
        let mut got = Vec::new();
        let tail = scan(data, |_, b| got.push(b.to_vec()));
        (got, tail)
    }

    #[test]
    fn round_trip() {
        let data = frames(&[b"one", b"", b"three"]);
        assert_eq!(read(&data), (vec![b"one".to_vec(), vec![], b"three".to_vec()], Tail::Clean));
    }

    #[test]
    fn truncation_at_every_offset_keeps_every_whole_frame_before_it() {
        let bodies: [&[u8]; 3] = [b"alpha", b"beta", b"gamma-gamma"];
        let data = frames(&bodies);
        let ends = [8 + 5, 8 + 5 + 8 + 4, data.len()];
        for cut in 0..data.len() {
            let (got, tail) = read(&data[..cut]);
            let whole = ends.iter().filter(|&&e| e <= cut).count();
            assert_eq!(got.len(), whole, "cut at {cut}");
            assert_eq!(tail == Tail::Clean, ends.contains(&cut) || cut == 0, "cut at {cut}: {tail:?}");
        }
    }

    #[test]
    fn a_flipped_bit_anywhere_is_caught() {
        let data = frames(&[b"alpha", b"beta"]);
        for byte in 0..data.len() {
            for bit in 0..8 {
                let mut bad = data.clone();
                bad[byte] ^= 1 << bit;
                let (got, tail) = read(&bad);
                // Frames before the damaged one survive intact; nothing damaged is returned.
                let damaged_frame = if byte < 13 { 0 } else { 1 };
                assert_eq!(got.len(), damaged_frame, "byte {byte} bit {bit}");
                assert!(got.iter().all(|b| b == b"alpha"), "byte {byte} bit {bit}");
                assert_ne!(tail, Tail::Clean, "byte {byte} bit {bit}");
            }
        }
    }

    #[test]
    fn a_zeroed_tail_is_preallocated_space_but_zeros_before_data_are_damage() {
        let mut data = frames(&[b"one"]);
        data.extend_from_slice(&[0; 64]);
        assert_eq!(read(&data), (vec![b"one".to_vec()], Tail::Clean));
        let mut gap = frames(&[b"one"]);
        gap.extend_from_slice(&[0; 16]);
        gap.extend_from_slice(&frames(&[b"two"]));
        assert!(matches!(read(&gap).1, Tail::Corrupt { offset: 11, .. }));
    }

    #[test]
    fn reading_resumes_at_the_next_intact_frame_after_damage() {
        let mut data = frames(&[b"alpha", b"beta", b"gamma"]);
        data[13 + 9] ^= 0x04; // inside beta's body
        assert!(matches!(read(&data).1, Tail::Corrupt { offset: 13, .. }));
        assert_eq!(resync(&data, 14, |_| true), Some(13 + 12));
        assert_eq!(resync(&data, 14, |body| body != b"gamma"), None);
    }

    #[test]
    fn an_absurd_length_is_corruption_not_an_allocation() {
        let mut data = vec![0xff, 0xff, 0xff, 0x7f, 0, 0, 0, 0];
        data.extend_from_slice(&[0; 16]);
        assert_eq!(read(&data).1, Tail::Corrupt { offset: 0, bytes: 24 });
    }
}
