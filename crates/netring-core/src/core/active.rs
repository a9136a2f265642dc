//! The core being dispatched on this thread, reachable through a scoped
//! thread-local while the dispatch runs, so that a handle (`ConnRef`) used
//! on its own IO thread applies at once, without the mailbox.

use std::cell::{Cell, RefCell};

use super::ThreadCore;

/// The core being dispatched on this thread, if any: (engine id, thread, core).
type Active = (u64, u16, *const RefCell<ThreadCore>);

thread_local! {
    static ACTIVE: Cell<Option<Active>> = const { Cell::new(None) };
}

/// Marks `core` as reachable from this thread for the guard's lifetime.
pub(crate) struct ActiveGuard;

impl ActiveGuard {
    pub(crate) fn enter(engine: u64, thread: u16, core: &RefCell<ThreadCore>) -> Self {
        ACTIVE.with(|a| a.set(Some((engine, thread, core as *const _))));
        ActiveGuard
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        ACTIVE.with(|a| a.set(None));
    }
}

/// Run `f` on the core of (`engine`, `thread`) if this thread is that IO
/// thread and is dispatching now; `None` otherwise.
pub(crate) fn with_active<R>(
    engine: u64,
    thread: u16,
    f: impl FnOnce(&mut ThreadCore) -> R,
) -> Option<R> {
    let (e, t, ptr) = ACTIVE.with(|a| a.get())?;
    if e != engine || t != thread {
        return None;
    }
    // SAFETY: the pointer was set by an `ActiveGuard` that is still alive
    // (it clears the slot on drop), and the guard borrows the RefCell, so
    // the core outlives this call. RefCell catches any overlapping borrow.
    let core = unsafe { &*ptr };
    let mut core = core.try_borrow_mut().ok()?;
    Some(f(&mut core))
}
