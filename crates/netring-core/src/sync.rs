//! Locking without poisoning, for every mutex of the engine and its
//! bindings (`netring_core::sync::lock`).

use std::sync::{Mutex, MutexGuard};

/// Lock `m`, ignoring poisoning.
///
/// The mutexes this is for (a mailbox's queue, a listener's per-IP counts,
/// the engine's thread list, the bindings' registries and per-transport
/// state) guard plain data: each critical section is one push, swap,
/// insert, remove, take or clone, and no user code runs under them. A panic
/// inside one therefore cannot leave the data half-updated, and refusing
/// the lock afterwards would only turn one bug into a panic in every later
/// operation, taking the whole pool down.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
