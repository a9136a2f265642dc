//! Small helpers shared by the binding modules.

use std::sync::{Mutex, MutexGuard};

/// Lock `m`, ignoring poisoning.
///
/// The bindings' mutexes (the `Registry` maps, a transport's rare state, a
/// UDP endpoint's protocol and address cache) guard plain data: each
/// critical section is one insert, remove, take or clone, and no Python code
/// runs under them (the lock order is the GIL first, then these). A panic
/// inside one therefore cannot leave the data half-updated, and refusing
/// the lock afterwards would only turn one bug into a panic in every later
/// callback of that IO thread, taking the whole pool down.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
