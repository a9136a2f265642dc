//! The IO thread's loop.
//!
//! One turn, top to bottom: drain the mailbox → dispatch events to the
//! handler (one GIL hold for the whole batch) → return buffers → settle
//! dirty connections into operations → wait in the kernel (the only place
//! the handler may release the GIL) → reap completions into events → fire
//! due timers. Exit
//! happens after a `Shutdown` command once every connection, listener and
//! event is gone and the kernel owns no operation of ours.

use std::cell::RefCell;
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::{Backend, EngineConfig};
use crate::core::{release_free_memory, shrink_vec, ThreadCore, RELEASE_MIN_BYTES, SCRATCH_KEEP};
use crate::driver::epoll::EpollDriver;
use crate::driver::uring::UringDriver;
use crate::driver::{Completion, Driver};
use crate::engine::Shared;
use crate::event::{ActiveGuard, Batch, Handler};
use crate::mailbox::Cmd;

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

    /// This thread's index in the pool.
    pub fn index(&self) -> u16 {
        self.index
    }

    /// Run the loop on the calling thread until the engine shuts down.
    pub fn run<H: Handler>(self, handler: &mut H) {
        match self.shared.backend {
            Backend::IoUring => {
                match UringDriver::new(self.config.buffers_per_thread, self.config.buffer_size) {
                    Ok(driver) => self.run_with(driver, handler),
                    Err(why) => {
                        let _ = self.ready.send(Err(why));
                    }
                }
            }
            Backend::Epoll => {
                match EpollDriver::new(self.config.buffers_per_thread, self.config.buffer_size) {
                    Ok(driver) => self.run_with(driver, handler),
                    Err(why) => {
                        let _ = self.ready.send(Err(why));
                    }
                }
            }
        }
    }

    fn run_with<D: Driver + Send, H: Handler>(self, mut driver: D, handler: &mut H) {
        let mailbox = &self.shared.mailboxes[usize::from(self.index)];
        driver.arm_wake(mailbox.fd());
        let _ = self.ready.send(Ok(()));
        let core = RefCell::new(ThreadCore::new(self.shared.clone(), self.index));
        let mut cmds: Vec<Cmd> = Vec::new();
        let mut completions: Vec<Completion> = Vec::new();
        let mut wake_cancelled = false;
        loop {
            // 1. Commands from other threads.
            mailbox.take(&mut cmds);
            for cmd in cmds.drain(..) {
                core.borrow_mut().apply(cmd, &mut driver);
            }
            // 2. Dispatch, then return this batch's buffers.
            if !core.borrow().events.is_empty() || !core.borrow().urgent.is_empty() {
                dispatch(&core, handler, self.shared.id, self.index);
            }
            let now = Instant::now();
            let mut c = core.borrow_mut();
            for bid in c.chunks_out.drain(..) {
                driver.release(bid);
            }
            c.retired.clear();
            // 3. State into operations.
            c.enforce_deadline(now);
            c.settle(&mut driver);
            c.udp_settle(&mut driver);
            if c.take_trim_due() {
                // NOTE: here, after dispatch, the queues are empty. A burst's
                // queues (up to a full completion ring of accepts) are kept
                // only while busy: one burst of 20,000 connects would
                // otherwise hold megabytes for good.
                let freed = c.trim(&mut driver)
                    + shrink_vec(&mut completions)
                    + shrink_vec(&mut cmds)
                    + mailbox.shrink();
                if freed >= RELEASE_MIN_BYTES {
                    release_free_memory();
                }
            }
            let grown = completions.capacity() > SCRATCH_KEEP || cmds.capacity() > SCRATCH_KEEP;
            c.schedule_trim(now, grown || driver.has_spare_buffers());
            let retry_at = c.rearm_listeners(&mut driver, now);
            // 4. Exit once shut down and nothing is left in the kernel.
            if c.shutdown_deadline.is_some() && c.is_empty() && driver.in_flight() == 0 {
                if !wake_cancelled {
                    driver.cancel_wake();
                    wake_cancelled = true;
                }
                if !driver.wake_armed() {
                    break;
                }
            }
            // 5. Wait.
            let mut deadline = retry_at;
            for d in [c.shutdown_deadline, c.timers.next_deadline()]
                .into_iter()
                .flatten()
            {
                deadline = Some(deadline.map_or(d, |x| x.min(d)));
            }
            let timeout = if !c.events.is_empty() || !c.urgent.is_empty() {
                Some(Duration::ZERO)
            } else {
                deadline.map(|d| d.saturating_duration_since(now))
            };
            drop(c);
            completions.clear();
            let d = &mut driver;
            let out = &mut completions;
            if let Err(e) = handler.park(move || d.wait(timeout, out)) {
                log::error!("netring: IO thread {} wait failed: {e}", self.index);
                std::thread::sleep(Duration::from_millis(10));
            }
            // 6. Completions into events.
            let now = Instant::now();
            let mut c = core.borrow_mut();
            for comp in completions.drain(..) {
                c.complete(comp, &mut driver, now);
            }
            // 7. Timers due.
            c.fire_timers(now);
        }
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
