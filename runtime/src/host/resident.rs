//! Gives the kernel back the pages of a new instance's linear memory that hold
//! nothing but zeros.
//!
//! wasmi writes every byte of a memory it creates (it extends a `Vec` with
//! zeros), so each instance was resident in full from birth: 128 KiB for a
//! builtin (a 64 KiB stack and its data), a megabyte for a function built with
//! rustc's default stack, although a call touches a few pages of it. Released
//! pages read as zeros again, as before, and come back one by one when the
//! guest first writes them: nothing a function can observe changes, and the
//! gateway's resident memory is what its functions use.

/// Releases every whole page of `memory` that holds only zeros; returns how many
/// bytes were released. `memory` must be private anonymous memory (a heap
/// allocation, as wasmi's linear memories are): there, a released page reads as
/// zeros, which is what it held.
#[cfg(target_os = "linux")]
pub fn release_zero_pages(memory: &mut [u8]) -> usize {
    let page = page_size();
    let base = memory.as_mut_ptr() as usize;
    // Only pages wholly inside `memory`: the allocator's own bytes around it stay.
    let first = base.next_multiple_of(page) - base;
    let end = (base + memory.len()) / page * page;
    let end = end.saturating_sub(base).max(first);
    let mut released = 0;
    let mut at = first;
    while at < end {
        let zero = |p: usize| memory[p..p + page].iter().all(|&b| b == 0);
        if !zero(at) {
            at += page;
            continue;
        }
        let mut run_end = at + page;
        while run_end < end && zero(run_end) {
            run_end += page;
        }
        // SAFETY: `at..run_end` is page-aligned, lies inside `memory` (borrowed
        // mutably, so nothing else reads it meanwhile) and holds only zeros; on
        // private anonymous memory MADV_DONTNEED makes it read as zeros again.
        let done = unsafe { libc::madvise(memory.as_mut_ptr().add(at).cast(), run_end - at, libc::MADV_DONTNEED) };
        if done == 0 {
            released += run_end - at;
        }
        at = run_end;
    }
    released
}

#[cfg(not(target_os = "linux"))]
pub fn release_zero_pages(_memory: &mut [u8]) -> usize {
    0
}

#[cfg(target_os = "linux")]
fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if size > 0 {
        size as usize
    } else {
        4096
    }
}

/// Which pages of `bytes` (whole pages only, from its first page boundary) are resident.
#[cfg(all(test, target_os = "linux"))]
pub fn resident_pages(bytes: &[u8]) -> Vec<bool> {
    let page = page_size();
    let base = bytes.as_ptr() as usize;
    let first = base.next_multiple_of(page);
    let count = (base + bytes.len() - first) / page;
    let mut vec = vec![0u8; count];
    // SAFETY: the range is page-aligned and inside `bytes`; `vec` has one byte per page.
    let rc = unsafe { libc::mincore(first as *mut libc::c_void, count * page, vec.as_mut_ptr()) };
    assert_eq!(rc, 0, "mincore: {}", std::io::Error::last_os_error());
    vec.iter().map(|b| b & 1 == 1).collect()
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn zero_pages_are_released_and_still_read_as_zeros_while_written_ones_keep_their_bytes() {
        let page = page_size();
        // Written in full, as wasmi creates a memory.
        let mut memory = Vec::new();
        memory.extend(std::iter::repeat_n(0u8, 64 * page));
        let offset = (memory.as_ptr() as usize).next_multiple_of(page) - memory.as_ptr() as usize;
        // Data in the third whole page, and one byte at the very end of the fifth.
        memory[offset + 2 * page + 10] = 7;
        memory[offset + 5 * page - 1] = 9;
        assert!(resident_pages(&memory).iter().all(|&r| r), "not resident before: the test proves nothing");

        let released = release_zero_pages(&mut memory);

        let resident = resident_pages(&memory);
        assert!(resident[2] && resident[4], "written pages stay: {resident:?}");
        assert_eq!(resident.iter().filter(|&&r| r).count(), 2, "{resident:?}");
        assert_eq!(released, (resident.len() - 2) * page);
        assert_eq!(memory[offset + 2 * page + 10], 7);
        assert_eq!(memory[offset + 5 * page - 1], 9);
        assert_eq!(memory.iter().filter(|&&b| b != 0).count(), 2, "a released page no longer reads as zeros");
        // The guest writes a released page: it comes back, holding what was written.
        memory[offset + 40 * page] = 1;
        assert!(resident_pages(&memory)[40]);
        assert_eq!(memory[offset + 40 * page], 1);
    }

    #[test]
    fn a_memory_smaller_than_a_page_or_empty_is_left_alone() {
        let mut small = vec![0u8; 100];
        assert_eq!(release_zero_pages(&mut small), 0);
        assert_eq!(release_zero_pages(&mut []), 0);
    }
}
