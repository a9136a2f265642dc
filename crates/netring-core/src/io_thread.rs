//! The loop, turn by turn.
//!
//! [`Turns`] is one IO thread's engine: its driver, its core and the
//! scratch the loop reuses. One [`Turns::step`], top to bottom: drain the
//! mailbox → dispatch the pending events to the handler (one GIL hold for
//! the whole batch) → return buffers → settle dirty connections into
//! operations → wait in the kernel (submitting those operations; the only
//! place the handler may release the GIL) → reap completions into events →
//! fire due timers. An IO thread runs `step` until it returns false (after
//! a `Shutdown` command, once every connection, listener and event is gone
//! and the kernel owns no operation of ours).
//!
//! Another owner of a thread (an asyncio event loop) drives the same
//! engine without blocking: it watches [`Turns::fd`] (readable when
//! completions are ready), calls [`Turns::run_ready`] when it is, and
//! arms a timer for [`Turns::next_deadline`].

use std::cell::RefCell;
use std::os::fd::RawFd;
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::{Backend, EngineConfig};
use crate::core::{hosted_attach, hosted_detach, hosted_turn, ActiveGuard, ThreadCore};
use crate::driver::epoll::EpollDriver;
use crate::driver::uring::UringDriver;
use crate::driver::{Completion, Driver};
use crate::event::{Batch, Handler};
use crate::housekeeping::{
    allocator_tuned, release_free_memory, shrink_vec, RELEASE_MIN_BYTES, SCRATCH_KEEP,
};
use crate::mailbox::Cmd;
use crate::shared::Shared;
use crate::stats::ThreadTimes;

/// Everything one IO thread needs; consumed by [`IoLoop::run`].
pub struct IoLoop {
    shared: Arc<Shared>,
    index: u16,
    config: EngineConfig,
    ready: Sender<Result<(), String>>,
}

impl IoLoop {
    pub(crate) fn new(
        shared: Arc<Shared>,
        index: u16,
        config: EngineConfig,
        ready: Sender<Result<(), String>>,
    ) -> Self {
        IoLoop {
            shared,
            index,
            config,
            ready,
        }
    }

    /// The engine's shared state.
    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// This thread's index in the pool.
    pub fn index(&self) -> u16 {
        self.index
    }

    /// Run the loop on the calling thread until the engine shuts down.
    pub fn run<H: Handler>(self, handler: &mut H) {
        let (buffers, size) = (self.config.buffers_per_thread, self.config.buffer_size);
        match self.shared.backend {
            Backend::IoUring => match UringDriver::new(buffers, size) {
                Ok(driver) => self.run_with(driver, handler),
                Err(why) => {
                    let _ = self.ready.send(Err(why));
                }
            },
            Backend::Epoll => match EpollDriver::new(buffers, size) {
                Ok(driver) => self.run_with(driver, handler),
                Err(why) => {
                    let _ = self.ready.send(Err(why));
                }
            },
        }
    }

    fn run_with<D: Driver + Send, H: Handler>(self, driver: D, handler: &mut H) {
        let mut turns = Turns::new(self.shared, self.index, driver);
        let _ = self.ready.send(Ok(()));
        while turns.step(handler, None) {}
    }
}

/// Rounds one [`Turns::run_ready`] makes while the kernel keeps completing
/// what the last round submitted.
const READY_ROUNDS: usize = 3;

/// The one IO thread of a hosted engine ([`crate::Engine::start_hosted`]),
/// driven by its owner (an asyncio loop's thread) through
/// [`Hosted::run_ready`], [`Hosted::fd`] and [`Hosted::next_deadline`]:
/// [`Turns`] over whichever backend the engine chose.
pub enum Hosted {
    /// On io_uring.
    Uring(Turns<UringDriver>),
    /// On epoll.
    Epoll(Turns<EpollDriver>),
}

impl Hosted {
    pub(crate) fn new(shared: Arc<Shared>, config: &EngineConfig) -> Result<Self, String> {
        let (buffers, size) = (config.buffers_per_thread, config.buffer_size);
        Ok(match shared.backend {
            Backend::IoUring => Hosted::Uring(Turns::new(
                shared,
                0,
                UringDriver::new_polled(buffers, size)?,
            )),
            Backend::Epoll => {
                Hosted::Epoll(Turns::new(shared, 0, EpollDriver::new(buffers, size)?))
            }
        })
    }

    /// See [`Turns::run_ready`]: false once the engine has shut down and
    /// nothing is left.
    pub fn run_ready<H: Handler>(&mut self, handler: &mut H) -> bool {
        hosted_turn(self.engine_id());
        match self {
            Hosted::Uring(t) => t.run_ready(handler),
            Hosted::Epoll(t) => t.run_ready(handler),
        }
    }

    /// Let handles used on this thread between turns (an asyncio task's
    /// writes) apply to the core at once instead of through the mailbox;
    /// the first one after a turn calls `kick`, which must arrange the next
    /// [`Hosted::run_ready`] soon (an asyncio loop: `call_soon`). Call it
    /// again if this `Hosted` moves; it detaches itself when dropped.
    pub fn attach_here(&self, kick: Box<dyn Fn()>) {
        let (id, core) = match self {
            Hosted::Uring(t) => (t.shared.id, &t.core),
            Hosted::Epoll(t) => (t.shared.id, &t.core),
        };
        hosted_attach(id, core, kick);
    }

    fn engine_id(&self) -> u64 {
        match self {
            Hosted::Uring(t) => t.shared.id,
            Hosted::Epoll(t) => t.shared.id,
        }
    }

    /// See [`Turns::fd`].
    pub fn fd(&self) -> RawFd {
        match self {
            Hosted::Uring(t) => t.fd(),
            Hosted::Epoll(t) => t.fd(),
        }
    }

    /// See [`Turns::next_deadline`].
    pub fn next_deadline(&self) -> Option<Instant> {
        match self {
            Hosted::Uring(t) => t.next_deadline(),
            Hosted::Epoll(t) => t.next_deadline(),
        }
    }
}

impl Drop for Hosted {
    fn drop(&mut self) {
        hosted_detach(self.engine_id());
    }
}

/// The clock a loop reads (`Instant::now`, or a test's own time).
pub type Clock = Box<dyn FnMut() -> Instant + Send>;

/// One IO thread's engine, driven one turn at a time (see the module docs).
pub struct Turns<D: Driver> {
    shared: Arc<Shared>,
    index: u16,
    driver: D,
    core: RefCell<ThreadCore>,
    cmds: Vec<Cmd>,
    completions: Vec<Completion>,
    /// The earliest listener retry (accept backoff), from the last settle.
    retry_at: Option<Instant>,
    wake_cancelled: bool,
    done: bool,
    clock: Clock,
    /// When the last wait returned: the start of the turn's busy part.
    woke: Instant,
}

impl<D: Driver + Send> Turns<D> {
    /// The engine of thread `index` over `driver` (created on this thread).
    pub(crate) fn new(shared: Arc<Shared>, index: u16, driver: D) -> Self {
        Self::with_clock(shared, index, driver, Box::new(Instant::now))
    }

    pub(crate) fn with_clock(
        shared: Arc<Shared>,
        index: u16,
        mut driver: D,
        mut clock: Clock,
    ) -> Self {
        driver.arm_wake(shared.mailboxes[usize::from(index)].fd());
        let now = clock();
        let core = ThreadCore::new(shared.clone(), index, now);
        Turns {
            shared,
            index,
            driver,
            core: RefCell::new(core),
            cmds: Vec::new(),
            completions: Vec::new(),
            retry_at: None,
            wake_cancelled: false,
            done: false,
            clock,
            woke: now,
        }
    }

    /// Do everything that is ready (commands, dispatch, settle), then wait
    /// up to `max_wait` (`None`: as long as nothing is due) for
    /// completions, submitting what settling queued, and turn them and the
    /// timers due into events for the next step. Returns false once the
    /// engine has shut down and this thread holds nothing.
    pub fn step<H: Handler>(&mut self, handler: &mut H, max_wait: Option<Duration>) -> bool {
        if !self.process(handler) {
            return false;
        }
        let timeout = self.timeout(max_wait);
        let busy_until = (self.clock)();
        self.times().turn.record(busy_until - self.woke);
        self.wait(handler, timeout);
        true
    }

    /// For an owner that waits elsewhere (an asyncio loop): take what the
    /// kernel has completed without blocking, do everything that is ready,
    /// and hand the resulting operations to the kernel now. Returns false
    /// once the engine has shut down and this thread holds nothing.
    pub fn run_ready<H: Handler>(&mut self, handler: &mut H) -> bool {
        let started = (self.clock)();
        let mut running = true;
        for _ in 0..READY_ROUNDS {
            self.wait(handler, Some(Duration::ZERO));
            running = self.process(handler);
            if let Err(e) = self.driver.submit() {
                log::error!("netring: IO thread {} submit failed: {e}", self.index);
            }
            // NOTE: sends the submit completed at once (loopback, a socket
            // with room) are reaped here, not after another trip through
            // the owner's poller.
            if !running || !self.driver.posted() {
                break;
            }
        }
        let busy_until = (self.clock)();
        self.times().turn.record(busy_until - started);
        running
    }

    /// This thread's time histograms.
    fn times(&self) -> &ThreadTimes {
        &self.shared.times[usize::from(self.index)]
    }

    /// A descriptor that becomes readable when completions are ready (the
    /// ring's or the epoll set's; mailbox wake-ups included).
    pub fn fd(&self) -> RawFd {
        self.driver.fd()
    }

    /// When the engine next has work without the kernel reporting any:
    /// now, if events or completions are pending; else the earliest timer,
    /// listener retry or shutdown deadline; `None` if nothing is scheduled.
    pub fn next_deadline(&self) -> Option<Instant> {
        let c = self.core.borrow();
        if c.has_events() || self.driver.has_pending() {
            return Some(c.now);
        }
        [
            self.retry_at,
            c.shutdown_deadline,
            c.timers.next_deadline(),
            self.driver.next_deadline(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// The core, for tests that look at its state between turns.
    #[cfg(test)]
    pub(crate) fn core(&self) -> std::cell::RefMut<'_, ThreadCore> {
        self.core.borrow_mut()
    }

    /// The driver, for tests that complete its operations.
    #[cfg(test)]
    pub(crate) fn driver(&mut self) -> &mut D {
        &mut self.driver
    }

    /// Commands → dispatch → settle; false once the thread may exit.
    fn process<H: Handler>(&mut self, handler: &mut H) -> bool {
        if self.done {
            return false;
        }
        let mailbox = &self.shared.mailboxes[usize::from(self.index)];
        let now = (self.clock)();
        self.core.borrow_mut().now = now;
        // 1. Commands from other threads.
        mailbox.take(&mut self.cmds);
        for cmd in self.cmds.drain(..) {
            self.core.borrow_mut().apply(cmd, &mut self.driver);
        }
        // 2. Dispatch, then return this batch's buffers.
        if self.core.borrow().has_events() {
            let started = (self.clock)();
            dispatch(&self.core, handler, self.shared.id, self.index);
            let took = (self.clock)() - started;
            self.times().callbacks.record(took);
        }
        let driver = &mut self.driver;
        let mut c = self.core.borrow_mut();
        for bid in c.q.chunks_out.drain(..) {
            driver.release(bid);
        }
        c.q.retired.clear();
        c.q.built.clear();
        for done in c.q.unlistened.drain(..) {
            done.store(true, std::sync::atomic::Ordering::Release);
        }
        // 3. State into operations.
        c.enforce_deadline(now);
        c.settle(driver);
        c.udp_settle(driver);
        if c.take_trim_due() {
            // NOTE: here, after dispatch, the queues are empty. A burst's
            // queues (up to a full completion ring of accepts) are kept
            // only while busy: one burst of 20,000 connects would
            // otherwise hold megabytes for good.
            let freed = c.trim(driver)
                + shrink_vec(&mut self.completions)
                + shrink_vec(&mut self.cmds)
                + mailbox.shrink();
            if freed >= RELEASE_MIN_BYTES || allocator_tuned() {
                release_free_memory();
            }
        }
        let grown =
            self.completions.capacity() > SCRATCH_KEEP || self.cmds.capacity() > SCRATCH_KEEP;
        c.schedule_trim(now, grown || driver.has_spare_buffers());
        self.retry_at = c.rearm_listeners(driver, now);
        // 4. Exit once shut down and nothing is left in the kernel.
        if c.shutdown_deadline.is_some() && c.is_empty() && driver.in_flight() == 0 {
            if !self.wake_cancelled {
                driver.cancel_wake();
                self.wake_cancelled = true;
            }
            if !driver.wake_armed() {
                self.done = true;
                return false;
            }
        }
        true
    }

    /// How long the next wait may block: not at all while events wait for
    /// dispatch, else until the next deadline, at most `max_wait`.
    fn timeout(&self, max_wait: Option<Duration>) -> Option<Duration> {
        let c = self.core.borrow();
        if c.has_events() {
            return Some(Duration::ZERO);
        }
        let until = self
            .next_deadline()
            .map(|d| d.saturating_duration_since(c.now));
        match (until, max_wait) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Wait (submitting what is queued), then completions and due timers
    /// into events.
    fn wait<H: Handler>(&mut self, handler: &mut H, timeout: Option<Duration>) {
        self.completions.clear();
        let d = &mut self.driver;
        let out = &mut self.completions;
        // NOTE: a wait that cannot block keeps the handler's lock (the GIL):
        // handing it over and back would cost more than the wait.
        let waited = if timeout == Some(Duration::ZERO) {
            d.wait(timeout, out)
        } else {
            handler.park(move || d.wait(timeout, out))
        };
        if let Err(e) = waited {
            log::error!("netring: IO thread {} wait failed: {e}", self.index);
            std::thread::sleep(Duration::from_millis(10));
        }
        let now = (self.clock)();
        self.woke = now;
        let mut c = self.core.borrow_mut();
        c.now = now;
        for comp in self.completions.drain(..) {
            c.complete(comp, &mut self.driver, now);
        }
        c.fire_timers(now);
    }
}

fn dispatch<H: Handler>(core: &RefCell<ThreadCore>, handler: &mut H, engine: u64, thread: u16) {
    let _active = ActiveGuard::enter(engine, thread, core);
    let mut batch = Batch { core };
    handler.dispatch(&mut batch);
    // Whatever the handler left undelivered is dropped here, in order.
    while batch.next().is_some() {}
    let mut c = core.borrow_mut();
    c.close_after_frame_errors();
    c.release_dispatched();
}
