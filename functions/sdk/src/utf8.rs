//! UTF-8 validation shaped for the interpreter: `core::str::from_utf8` is one
//! large function, and the interpreter charges for all of it on every call, so
//! short texts (device ids, JSON strings) are checked here with small loops.

/// Bytes that are ASCII (below 0x80) need no further check.
const ASCII_END: u8 = 0x80;

/// The length of the UTF-8 sequence at the start of `bytes`, whose first byte is
/// not ASCII; `None` when it is not a valid sequence (a stray continuation byte,
/// an overlong form, a surrogate, past U+10FFFF, or cut short).
pub(crate) fn sequence_len(bytes: &[u8]) -> Option<usize> {
    // The second byte's range depends on the first: these are the rows of the
    // "well-formed byte sequences" table of the Unicode standard (section 3.9).
    let (len, second) = match *bytes.first()? {
        0xC2..=0xDF => (2, 0x80..=0xBF),
        0xE0 => (3, 0xA0..=0xBF),
        0xE1..=0xEC | 0xEE..=0xEF => (3, 0x80..=0xBF),
        0xED => (3, 0x80..=0x9F),
        0xF0 => (4, 0x90..=0xBF),
        0xF1..=0xF3 => (4, 0x80..=0xBF),
        0xF4 => (4, 0x80..=0x8F),
        _ => return None,
    };
    let (&first_tail, rest) = bytes.get(1..len)?.split_first()?;
    let continues = rest.iter().all(|&byte| byte & 0xC0 == 0x80);
    (second.contains(&first_tail) && continues).then_some(len)
}

/// `bytes` as text, or `None` where `core::str::from_utf8` would fail.
pub(crate) fn to_str(bytes: &[u8]) -> Option<&str> {
    let mut at = ascii_run(bytes, 0);
    while let Some(rest) = bytes.get(at..).filter(|rest| !rest.is_empty()) {
        at += sequence_len(rest)?;
        at = ascii_run(bytes, at);
    }
    // SAFETY: every byte was checked above: ASCII, or part of a sequence that
    // `sequence_len` accepted, which admits exactly the well-formed UTF-8 ones
    // (the tests compare it with `core::str::from_utf8` on every short sequence).
    Some(unsafe { core::str::from_utf8_unchecked(bytes) })
}

/// The end of the run of ASCII bytes at `at`. A loop in a function of its own:
/// the interpreter charges every pass for the whole loop body, so it holds
/// nothing but the one comparison.
#[inline(never)]
fn ascii_run(bytes: &[u8], mut at: usize) -> usize {
    while let Some(&byte) = bytes.get(at) {
        if byte >= ASCII_END {
            break;
        }
        at += 1;
    }
    at
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `core` says about `bytes` starting with one whole sequence.
    fn core_len(bytes: &[u8]) -> Option<usize> {
        match core::str::from_utf8(bytes) {
            Ok(text) => text.chars().next().map(char::len_utf8),
            Err(err) if err.valid_up_to() > 0 => Some(err.valid_up_to()),
            Err(_) => None,
        }
    }

    #[test]
    fn agrees_with_core_on_every_two_and_three_byte_sequence() {
        for first in 0x80..=0xFFu8 {
            for second in 0..=0xFFu8 {
                let pair = [first, second];
                assert_eq!(sequence_len(&pair), core_len(&pair), "{pair:x?}");
                for third in 0..=0xFFu8 {
                    let triple = [first, second, third];
                    assert_eq!(sequence_len(&triple), core_len(&triple), "{triple:x?}");
                }
            }
        }
    }

    #[test]
    fn agrees_with_core_on_four_byte_sequences() {
        for first in 0xEF..=0xFFu8 {
            for second in 0..=0xFFu8 {
                for third in [0x00, 0x7F, 0x80, 0xBF, 0xC0] {
                    for fourth in [0x00, 0x41, 0x80, 0x9F, 0xBF, 0xC0, 0xFF] {
                        let quad = [first, second, third, fourth];
                        assert_eq!(sequence_len(&quad), core_len(&quad), "{quad:x?}");
                    }
                }
            }
        }
    }

    #[test]
    fn checks_whole_texts() {
        for text in ["", "gh-1", "é", "gh-é-1", "温室", "🌡 t", "a\u{10FFFF}"] {
            assert_eq!(to_str(text.as_bytes()), Some(text));
        }
        for bad in [&b"\xff"[..], b"a\x80", b"\xc3", b"ok\xe2\x82", b"\xed\xa0\x80", b"\xc0\xaf"] {
            assert_eq!(to_str(bad), None, "{bad:x?}");
        }
    }
}
