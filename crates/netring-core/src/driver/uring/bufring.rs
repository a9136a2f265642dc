//! A provided-buffer ring (`IORING_REGISTER_PBUF_RING`, Linux 5.19+).
//!
//! The kernel picks a buffer from this ring for each multishot recv
//! completion, so an idle connection owns no buffer: memory is taken only
//! when bytes arrive. The loop returns each buffer with [`BufRing::push`]
//! after the batch that used it was dispatched, and publishes the new tail
//! once per loop turn with [`BufRing::publish`]. When the ring is empty the
//! kernel ends the multishot recv with `ENOBUFS`; the loop re-arms the recv
//! after publishing, so a dry pool delays a connection but never fails it.

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::io;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::types::BufRingEntry;
use io_uring::IoUring;

const PAGE_BYTES: usize = 4096;

/// The ring of entries plus the buffers it hands out.
pub struct BufRing {
    ring: *mut BufRingEntry,
    ring_layout: Layout,
    bufs: *mut u8,
    bufs_layout: Layout,
    entries: u16,
    buf_size: usize,
    /// Tail not yet published to the kernel.
    local_tail: u16,
    /// Buffers pushed since the last publish.
    pending: usize,
}

// SAFETY: the ring and buffers are plain heap memory owned by this struct;
// they are only touched from the thread that owns the io_uring instance.
unsafe impl Send for BufRing {}

impl BufRing {
    /// Allocate `entries` buffers of `buf_size` bytes and register them as
    /// group `bgid` on `ring`. `entries` must be a power of two ≤ 32768.
    pub fn new(ring: &IoUring, entries: u16, buf_size: usize, bgid: u16) -> io::Result<Self> {
        assert!(entries.is_power_of_two());
        let ring_layout =
            Layout::from_size_align(usize::from(entries) * size_of::<BufRingEntry>(), PAGE_BYTES)
                .map_err(io::Error::other)?;
        let bufs_layout = Layout::from_size_align(usize::from(entries) * buf_size, PAGE_BYTES)
            .map_err(io::Error::other)?;
        // SAFETY: both layouts have non-zero size (entries ≥ 2, buf_size ≥ 512).
        let ring_mem = unsafe { alloc_zeroed(ring_layout) } as *mut BufRingEntry;
        // SAFETY: as above.
        let bufs = unsafe { alloc_zeroed(bufs_layout) };
        if ring_mem.is_null() || bufs.is_null() {
            return Err(io::Error::from(io::ErrorKind::OutOfMemory));
        }
        let mut me = BufRing {
            ring: ring_mem,
            ring_layout,
            bufs,
            bufs_layout,
            entries,
            buf_size,
            local_tail: 0,
            pending: 0,
        };
        // SAFETY: the ring memory is page-aligned, sized for `entries`, and
        // lives until `Drop`, which runs after the io_uring instance is gone
        // (the driver drops the ring first) or after unregistering.
        unsafe {
            ring.submitter()
                .register_buf_ring_with_flags(ring_mem as u64, entries, bgid, 0)?;
        }
        for bid in 0..entries {
            me.push(bid);
        }
        me.publish();
        Ok(me)
    }

    /// Address of buffer `bid`.
    pub fn buf_ptr(&self, bid: u16) -> *const u8 {
        debug_assert!(bid < self.entries);
        // SAFETY: bid < entries, so the offset stays inside the allocation.
        unsafe { self.bufs.add(usize::from(bid) * self.buf_size) }
    }

    /// Queue buffer `bid` for return to the kernel (visible after `publish`).
    pub fn push(&mut self, bid: u16) {
        let mask = self.entries - 1;
        let idx = usize::from(self.local_tail & mask);
        // SAFETY: idx < entries; the kernel does not read entries past the
        // published tail, so writing this one races with nothing.
        let entry = unsafe { &mut *self.ring.add(idx) };
        entry.set_addr(self.buf_ptr(bid) as u64);
        entry.set_len(self.buf_size as u32);
        entry.set_bid(bid);
        self.local_tail = self.local_tail.wrapping_add(1);
        self.pending += 1;
    }

    /// Publish pushed buffers to the kernel.
    pub fn publish(&mut self) {
        if self.pending == 0 {
            return;
        }
        self.pending = 0;
        // SAFETY: `ring` is the first entry of a registered buf ring; the
        // tail is a u16 the kernel reads with acquire semantics, so a release
        // store makes the entries written above visible before the new tail.
        unsafe {
            let tail = BufRingEntry::tail(self.ring) as *const AtomicU16;
            (*tail).store(self.local_tail, Ordering::Release);
        }
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with exactly these layouts; the ring that
        // used them has been dropped or the group unregistered by now.
        unsafe {
            dealloc(self.ring as *mut u8, self.ring_layout);
            dealloc(self.bufs, self.bufs_layout);
        }
    }
}
