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
        Self { busy: AtomicBool::new(false), value: UnsafeCell::new(value) }
    }

    /// Runs `f` with exclusive access to the value.
    ///
    /// # Panics
    ///
    /// If called again from inside `f` (on wasm32 a panic traps the invocation and
    /// the gateway starts a fresh instance).
    pub fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        let taken = self.busy.compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed);
        assert!(taken.is_ok(), "State::with called while the state is already in use");
        let _release = Release(&self.busy);
        // SAFETY: `busy` was false and is now ours until `_release` drops, so no
        // other reference to the value exists.
        f(unsafe { &mut *self.value.get() })
    }
}

impl<T> State<Option<T>> {
    /// Stores `value`, as an `init` does with the settings it has read and checked.
    pub fn set(&self, value: T) {
        self.with(|slot| *slot = Some(value));
    }

    /// Runs `f` with the value, first making it with `make` if none was stored.
    /// An error from `make` is returned and nothing is stored.
    ///
    /// For settings read once: `init` calls [`State::set`], and `handle` uses
    /// `SETTINGS.with_or_init(Settings::load, |settings| ...)`, which loads only
    /// if the host never ran `init`.
    pub fn with_or_init<R, E>(
        &self,
        make: impl FnOnce() -> Result<T, E>,
        f: impl FnOnce(&mut T) -> Result<R, E>,
    ) -> Result<R, E> {
        self.with(|slot| {
            let value = match slot {
                Some(value) => value,
                None => slot.insert(make()?),
            };
            f(value)
        })
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
    fn with_or_init_makes_the_value_once_and_keeps_it() {
        let state: State<Option<u32>> = State::new(None);
        let mut made = 0;
        for _ in 0..3 {
            let got = state.with_or_init(
                || {
                    made += 1;
                    Ok::<_, ()>(7)
                },
                |n| {
                    *n += 1;
                    Ok(*n)
                },
            );
            assert!(got.is_ok());
        }
        assert_eq!(made, 1);
        assert_eq!(state.with(|n| *n), Some(10));
    }

    #[test]
    fn a_failed_make_stores_nothing_and_set_replaces() {
        let state: State<Option<u32>> = State::new(None);
        let got = state.with_or_init(|| Err("bad config"), |n| Ok(*n));
        assert_eq!(got, Err("bad config"));
        assert_eq!(state.with(|n| *n), None);
        state.set(3);
        assert_eq!(state.with_or_init(|| Ok(99), |n| Ok::<_, &str>(*n)), Ok(3));
    }

    #[test]
    #[should_panic(expected = "already in use")]
    fn nested_use_panics() {
        let state = State::new(0);
        state.with(|_| state.with(|n| *n += 1));
    }
}
