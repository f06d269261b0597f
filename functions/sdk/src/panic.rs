//! The panic handler for wasm32 modules: log the panic's message and where it
//! happened, then trap.
//!
//! A trap fails the invocation and makes the gateway start a fresh instance for
//! the next event, so no state a panic left half-updated is reused. The line is
//! cut at [`LINE_CAP`](crate::log::LINE_CAP) bytes. Formatting the message links
//! the formatting code of the module's panic sites (about 8.5 KB); without the
//! `panic-message` feature only the location is logged.

use core::panic::PanicInfo;

#[panic_handler]
fn panic(info: &PanicInfo<'_>) -> ! {
    #[cfg(feature = "panic-message")]
    match info.location() {
        Some(at) => crate::error!("panicked at {}:{}: {}", at.file(), at.line(), info.message()),
        None => crate::error!("panicked: {}", info.message()),
    }
    #[cfg(not(feature = "panic-message"))]
    match info.location() {
        Some(at) => crate::error!("panicked at {}:{}", at.file(), at.line()),
        None => crate::log::error("panicked"),
    }
    core::arch::wasm32::unreachable()
}
