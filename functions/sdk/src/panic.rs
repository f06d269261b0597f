//! The panic handler for wasm32 modules: log where the panic happened, then trap.
//!
//! A trap fails the invocation and makes the gateway start a fresh instance for
//! the next event, so no state a panic left half-updated is reused. Only the
//! location is logged: formatting panic messages would link the formatting code
//! of every panic site in core, about 10 KB per module.

use core::panic::PanicInfo;

#[panic_handler]
fn panic(info: &PanicInfo<'_>) -> ! {
    match info.location() {
        Some(at) => crate::error!("panicked at {}:{}", at.file(), at.line()),
        None => crate::log::error("panicked"),
    }
    core::arch::wasm32::unreachable()
}
