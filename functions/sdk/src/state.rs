//! State that lives in the instance between events: a `static` the handler can
//! mutate without `static mut`.

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, Ordering};

/// A value kept across events, for a `static`: `static SEEN: State<u32> = State::new(0);`.
///
/// The gateway runs one event at a time per instance, so access is never
/// contended; a busy flag still makes nested use a panic instead of aliasing.
pub struct State<T> {
    /// Set while a [`State::with`] closure runs.
    busy: AtomicBool,
    /// The value itself.
    value: UnsafeCell<T>,
}

// SAFETY: the `busy` flag hands out at most one `&mut T` at a time, like a
// try-lock, so sharing a `State` only ever moves access to `T` between threads.
unsafe impl<T: Send> Sync for State<T> {}

impl<T> State<T> {
    /// A state holding `value`; `const`, so it can initialise a `static`.
    pub const fn new(value: T) -> Self {
        Self {
            busy: AtomicBool::new(false),
            value: UnsafeCell::new(value),
        }
    }

    /// Runs `f` with exclusive access to the value.
    ///
    /// # Panics
    ///
    /// If called again from inside `f` (on wasm32 a panic traps the invocation and
    /// the gateway starts a fresh instance).
    pub fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        let taken = self
            .busy
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed);
        assert!(
            taken.is_ok(),
            "State::with called while the state is already in use"
        );
        let _release = Release(&self.busy);
        // SAFETY: `busy` was false and is now ours until `_release` drops, so no
        // other reference to the value exists.
        f(unsafe { &mut *self.value.get() })
    }
}

/// Clears the busy flag when the closure returns (or unwinds, in host tests).
struct Release<'a>(&'a AtomicBool);

impl Drop for Release<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static COUNT: State<u32> = State::new(0);

    #[test]
    fn keeps_values_between_calls() {
        COUNT.with(|n| *n += 1);
        assert_eq!(COUNT.with(|n| *n), 1);
    }

    #[test]
    #[should_panic(expected = "already in use")]
    fn nested_use_panics() {
        let state = State::new(0);
        state.with(|_| state.with(|n| *n += 1));
    }
}
