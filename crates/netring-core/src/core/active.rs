//! The core being dispatched on this thread, reachable through a scoped
//! thread-local while the dispatch runs, so that a handle (`ConnRef`) used
//! on its own IO thread applies at once, without the mailbox.
//!
//! A hosted engine's thread (an asyncio loop's) also runs user code between
//! turns (tasks, other callbacks): there the hosted core is reachable too
//! (`HostedSlot`), and the first operation after a turn calls the owner's
//! `kick` (the loop schedules the next turn, which settles and submits what
//! the operations queued: one submission per loop iteration).

use std::cell::{Cell, RefCell};

use super::ThreadCore;

/// The core being dispatched on this thread, if any: (engine id, thread, core).
type Active = (u64, u16, *const RefCell<ThreadCore>);

/// A hosted core between turns, and what to call when an operation makes
/// it need one.
struct HostedSlot {
    engine: u64,
    core: *const RefCell<ThreadCore>,
    kick: Box<dyn Fn()>,
    /// `kick` was called since the last turn.
    kicked: Cell<bool>,
}

thread_local! {
    static ACTIVE: Cell<Option<Active>> = const { Cell::new(None) };
    static HOSTED: RefCell<Option<HostedSlot>> = const { RefCell::new(None) };
}

/// Make the hosted `core` of `engine` reachable from this thread between
/// turns; `kick` is called (once per turn) when an operation applied there
/// needs the next turn. The caller keeps `core` in place until
/// [`hosted_detach`].
pub(crate) fn hosted_attach(engine: u64, core: &RefCell<ThreadCore>, kick: Box<dyn Fn()>) {
    HOSTED.with(|h| {
        *h.borrow_mut() = Some(HostedSlot {
            engine,
            core: core as *const _,
            kick,
            kicked: Cell::new(false),
        })
    });
}

/// A turn starts: the next operation outside it kicks again.
pub(crate) fn hosted_turn(engine: u64) {
    HOSTED.with(|h| {
        if let Some(slot) = h.borrow().as_ref().filter(|s| s.engine == engine) {
            slot.kicked.set(false);
        }
    });
}

/// Forget the hosted core of `engine` on this thread (before it moves or
/// goes).
pub(crate) fn hosted_detach(engine: u64) {
    HOSTED.with(|h| {
        let mut h = h.borrow_mut();
        if h.as_ref().is_some_and(|s| s.engine == engine) {
            *h = None;
        }
    });
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
    let Some((e, t, ptr)) = ACTIVE.with(|a| a.get()) else {
        return with_hosted(engine, thread, f);
    };
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

/// Run `f` on the hosted core of `engine` if this is its thread (between
/// turns), kicking the owner for the next turn.
fn with_hosted<R>(engine: u64, thread: u16, f: impl FnOnce(&mut ThreadCore) -> R) -> Option<R> {
    if thread != 0 {
        return None;
    }
    HOSTED.with(|h| {
        let h = h.try_borrow().ok()?;
        let slot = h.as_ref().filter(|s| s.engine == engine)?;
        // SAFETY: `hosted_attach`'s caller keeps the core in place until
        // `hosted_detach` (the `Hosted` that owns it detaches on drop), and
        // RefCell catches an overlapping borrow (a turn running: then the
        // operation takes the mailbox).
        let core = unsafe { &*slot.core };
        let mut core = core.try_borrow_mut().ok()?;
        let r = f(&mut core);
        drop(core);
        if !slot.kicked.replace(true) {
            (slot.kick)();
        }
        Some(r)
    })
}
