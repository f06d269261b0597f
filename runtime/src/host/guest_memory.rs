//! Bounds checks for pointers and lengths a guest hands the host. Pure functions,
//! so every edge case is unit-tested without running wasm.

use std::ops::Range;

/// A pointer or length the guest passed that the host refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BoundsError {
    #[error("{what}: negative length {len}")]
    NegativeLength { what: &'static str, len: i32 },
    #[error("{what}: range {start}..{end} lies outside linear memory of {memory} bytes")]
    OutOfBounds { what: &'static str, start: u64, end: u64, memory: usize },
}

/// The byte range `[ptr, ptr + len)` if it lies inside a memory of `memory_len`
/// bytes. Pointers are unsigned (wasm32 addresses); lengths must be non-negative.
pub fn guest_range(memory_len: usize, ptr: i32, len: i32, what: &'static str) -> Result<Range<usize>, BoundsError> {
    if len < 0 {
        return Err(BoundsError::NegativeLength { what, len });
    }
    let start = ptr as u32 as u64;
    let end = start + len as u64;
    if end > memory_len as u64 {
        return Err(BoundsError::OutOfBounds { what, start, end, memory: memory_len });
    }
    Ok(start as usize..end as usize)
}

/// Copies `value` into `memory[buf..buf + cap]` if it fits, per ABI v1's copy rule:
/// the return value is always the full length; nothing is copied when `cap` is too small.
pub fn copy_out(memory: &mut [u8], buf: i32, cap: i32, value: &[u8], what: &'static str) -> Result<i32, BoundsError> {
    let range = guest_range(memory.len(), buf, cap, what)?;
    if value.len() <= range.len() {
        memory[range.start..range.start + value.len()].copy_from_slice(value);
    }
    Ok(value.len().min(i32::MAX as usize) as i32)
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// Whatever a guest passes: an accepted range lies inside memory and is
        /// exactly the bytes asked for; a refused one was negative or outside.
        #[test]
        fn a_range_is_accepted_exactly_when_it_lies_inside_memory(
            memory_len in 0usize..(1 << 20),
            ptr in proptest::prelude::any::<i32>(),
            len in proptest::prelude::any::<i32>(),
        ) {
            let inside = len >= 0 && (ptr as u32 as u64) + len as u64 <= memory_len as u64;
            match guest_range(memory_len, ptr, len, "x") {
                Ok(range) => {
                    proptest::prop_assert!(inside);
                    proptest::prop_assert_eq!(range.start, ptr as u32 as usize);
                    proptest::prop_assert_eq!(range.len(), len as usize);
                }
                Err(_) => proptest::prop_assert!(!inside),
            }
        }

        /// copy_out never writes outside its buffer, always returns the full
        /// length, and copies only when the whole value fits.
        #[test]
        fn copy_out_copies_whole_values_into_the_buffer_or_nothing(
            buf in 0i32..96,
            cap in -4i32..96,
            value in proptest::collection::vec(1u8..=255, 0..64),
        ) {
            let mut memory = vec![0u8; 128];
            let result = copy_out(&mut memory, buf, cap, &value, "x");
            let fits = cap >= 0 && buf as usize + cap as usize <= memory.len();
            proptest::prop_assert_eq!(result.is_ok(), fits);
            if fits {
                proptest::prop_assert_eq!(result.unwrap(), value.len() as i32);
            }
            let copied = fits && value.len() <= cap as usize;
            let written = memory.iter().filter(|&&b| b != 0).count();
            proptest::prop_assert_eq!(written, if copied { value.len() } else { 0 });
            if copied {
                proptest::prop_assert_eq!(&memory[buf as usize..buf as usize + value.len()], &value[..]);
            }
        }
    }

    #[test]
    fn ranges_inside_memory_are_accepted() {
        assert_eq!(guest_range(100, 0, 100, "x"), Ok(0..100));
        assert_eq!(guest_range(100, 100, 0, "x"), Ok(100..100));
        assert_eq!(guest_range(100, 10, 5, "x"), Ok(10..15));
        assert_eq!(guest_range(0, 0, 0, "x"), Ok(0..0));
    }

    #[test]
    fn ranges_past_the_end_are_refused() {
        assert!(matches!(guest_range(100, 96, 5, "x"), Err(BoundsError::OutOfBounds { end: 101, .. })));
        assert!(matches!(guest_range(100, 101, 0, "x"), Err(BoundsError::OutOfBounds { .. })));
    }

    #[test]
    fn high_pointers_do_not_wrap_around() {
        // -1 as a wasm32 address is 4 GiB - 1, never a small offset.
        assert!(matches!(guest_range(100, -1, 1, "x"), Err(BoundsError::OutOfBounds { start: 4_294_967_295, .. })));
        assert!(guest_range(usize::MAX, i32::MAX, i32::MAX, "x").is_ok());
    }

    #[test]
    fn negative_lengths_are_refused() {
        assert_eq!(guest_range(100, 0, -1, "topic"), Err(BoundsError::NegativeLength { what: "topic", len: -1 }));
    }

    #[test]
    fn copy_out_follows_the_copy_rule() {
        let mut mem = [0u8; 8];
        assert_eq!(copy_out(&mut mem, 2, 4, b"abc", "x"), Ok(3));
        assert_eq!(&mem[..6], b"\0\0abc\0");
        // Too small: length reported, nothing written.
        let mut mem = [0u8; 8];
        assert_eq!(copy_out(&mut mem, 0, 2, b"abc", "x"), Ok(3));
        assert_eq!(mem, [0u8; 8]);
        // Asking for the length with an empty buffer is fine.
        assert_eq!(copy_out(&mut mem, 0, 0, b"abc", "x"), Ok(3));
        // A buffer that does not fit in memory traps even if the value would be short.
        assert!(copy_out(&mut mem, 6, 4, b"a", "x").is_err());
    }
}
