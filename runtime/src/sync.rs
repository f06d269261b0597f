//! The one policy for poisoned locks. A lock is poisoned only when a thread
//! panicked while holding it, which is a gateway bug (the panic hook has logged
//! it). Every critical section here leaves its data consistent before anything
//! in it can panic: they run no wasm, do no I/O under the lock unless stated,
//! and unwrap no input. So the data behind a poisoned lock is whole, and the
//! gateway goes on with it rather than turning one bug into a crash of every
//! thread that touches the lock (a worker, intake, the outbox writer).

use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Locks `mutex`, poisoned or not.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Reads `lock`, poisoned or not.
pub fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Writes `lock`, poisoned or not.
pub fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lock_poisoned_by_a_panicking_holder_still_gives_its_data() {
        let shared = std::sync::Arc::new(Mutex::new(vec![1, 2]));
        let held = shared.clone();
        let _ = std::thread::spawn(move || {
            let _guard = held.lock().unwrap();
            panic!("a bug while holding the lock");
        })
        .join();
        assert!(shared.is_poisoned());
        lock(&shared).push(3);
        assert_eq!(*lock(&shared), [1, 2, 3]);
    }
}
