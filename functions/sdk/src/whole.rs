//! Room for a whole payload, however large, without an allocator: the SDK
//! grows the module's memory by the pages a payload needs the first time one
//! that large arrives, and reuses them for every later event. The gateway
//! bounds the payload (`broker.max_packet_bytes`), the function's memory limit
//! bounds the growth (`limits.memory_bytes`).

use crate::{Error, ErrorKind};

/// One wasm page.
#[cfg(target_arch = "wasm32")]
const PAGE: usize = 65_536;

/// The grown region: where it starts and how long it is, and whether a
/// caller holds it now.
struct Scratch {
    start: usize,
    len: usize,
    lent: bool,
}

static mut SCRATCH: Scratch = Scratch { start: 0, len: 0, lent: false };

/// Gives `f` a buffer of at least `len` bytes; fails when the module's memory
/// cannot grow that far, or when `f` asks again from inside.
pub(crate) fn with_room<R>(len: usize, f: impl FnOnce(&mut [u8]) -> Result<R, Error>) -> Result<R, Error> {
    // SAFETY: a module runs one event at a time on one thread, and `lent`
    // keeps a nested call from taking the region a caller holds.
    let scratch = unsafe { &mut *core::ptr::addr_of_mut!(SCRATCH) };
    if scratch.lent {
        return Err(Error::new(ErrorKind::Other, "the whole payload is already being read"));
    }
    if scratch.len < len {
        grow(scratch, len)?;
    }
    scratch.lent = true;
    // SAFETY: [start, start + len) is memory this module grew for it and
    // nothing else uses; `lent` keeps it to one borrower.
    let buf = unsafe { core::slice::from_raw_parts_mut(scratch.start as *mut u8, scratch.len) };
    let result = f(&mut buf[..len]);
    scratch.lent = false;
    result
}

#[cfg(target_arch = "wasm32")]
fn grow(scratch: &mut Scratch, len: usize) -> Result<(), Error> {
    let pages_now = core::arch::wasm32::memory_size(0);
    // The region at the end of memory grows in place; else a new one at the end.
    let at_end = scratch.len > 0 && scratch.start + scratch.len == pages_now * PAGE;
    let have = if at_end { scratch.len } else { 0 };
    let pages = (len - have).div_ceil(PAGE);
    if core::arch::wasm32::memory_grow(0, pages) == usize::MAX {
        return Err(Error::format(
            ErrorKind::Capacity,
            format_args!("a payload of {len} bytes does not fit the function's memory limit (limits.memory_bytes)"),
        ));
    }
    if !at_end {
        scratch.start = pages_now * PAGE;
    }
    scratch.len = have + pages * PAGE;
    Ok(())
}

/// Off wasm32 (unit tests) the host calls give empty events: no room is needed.
#[cfg(not(target_arch = "wasm32"))]
fn grow(_: &mut Scratch, len: usize) -> Result<(), Error> {
    Err(Error::format(ErrorKind::Capacity, format_args!("no room for {len} bytes off wasm32")))
}
