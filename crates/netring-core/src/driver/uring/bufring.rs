//! A provided-buffer ring (`IORING_REGISTER_PBUF_RING`, Linux 5.19+).
//!
//! The kernel picks a buffer from this ring for each multishot recv
//! completion, so an idle connection owns no buffer: memory is taken only
//! when bytes arrive. The loop gives each buffer back with
//! [`BufRing::release`] after the batch that used it was dispatched, and
//! puts buffers in the ring once per loop turn with [`BufRing::publish`].
//! When the ring is empty the kernel ends the multishot recv with
//! `ENOBUFS`; the loop re-arms the recv after publishing, so a dry pool
//! delays a connection but never fails it.
//!
//! The ring is kept only as deep as the reads need (`depth`), refilled
//! with the buffers given back last, which are still in the CPU's caches:
//! the kernel takes buffers from the ring's head in order, so a ring of
//! all 512 would make every buffer wait for the other 511 (8 MiB) and
//! arrive cold, for the kernel's copy into it and ours out of it. The rest
//! wait in a stack. The depth doubles when the ring runs dry and follows
//! twice the most taken in one turn at each trim (once a second).
//!
//! A bundle recv (`IORING_RECVSEND_BUNDLE`, Linux 6.10) fills several
//! buffers in one completion: the ones at consecutive ring entries from the
//! head, first to last. The completion names only the first;
//! [`BufRing::filled`] finds the rest from where each buffer was put
//! (buffers come back in any order, so a buffer's id says nothing about
//! its neighbours) and how much each holds.

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::io;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::types::BufRingEntry;
use io_uring::IoUring;
use rustix::mm;

const PAGE_BYTES: usize = 4096;

/// The least a ring is kept filled with, in bytes of buffers (64 of the
/// default 16 KiB): what a turn of a few busy streams takes.
const DEPTH_MIN_BYTES: usize = 1 << 20;

/// The ring of entries plus the buffers it hands out.
pub struct BufRing {
    ring: *mut BufRingEntry,
    ring_layout: Layout,
    /// The buffers: an anonymous mapping, so a page costs memory only once
    /// the kernel writes into it (the hot ring keeps most never touched).
    bufs: *mut u8,
    bufs_len: usize,
    entries: u16,
    buf_size: usize,
    /// Tail not yet published to the kernel.
    local_tail: u16,
    /// Buffers put in the ring since the last publish.
    pending: usize,
    /// The buffer at each ring entry (by entry index), as last put.
    bid_at: Vec<u16>,
    /// The ring entry each buffer was last put at (by buffer id).
    entry_of: Vec<u16>,
    /// Buffers given back and not in the ring; the last given back on top.
    spare: Vec<u16>,
    /// Buffers in the ring that the kernel has not taken (as far as the
    /// completions tell; reset when the kernel finds the ring empty).
    in_ring: usize,
    /// How many buffers the ring is kept filled with.
    depth: usize,
    /// The least `depth` (`DEPTH_MIN_BYTES`, at most every buffer).
    floor: usize,
    /// Buffers taken since the last publish.
    taken: usize,
    /// The most taken between two publishes since the last `adapt` (while
    /// deeper than the floor).
    peak: usize,
    /// The ring ran dry since the last publish.
    dry: bool,
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
        let bufs_len = usize::from(entries) * buf_size;
        // SAFETY: a fresh private anonymous mapping (no address hint, no
        // file): it aliases nothing; unmapped in `Drop`.
        let bufs = unsafe {
            mm::mmap_anonymous(
                std::ptr::null_mut(),
                bufs_len,
                mm::ProtFlags::READ | mm::ProtFlags::WRITE,
                mm::MapFlags::PRIVATE,
            )
        }? as *mut u8;
        // SAFETY: the layout has non-zero size (entries ≥ 2).
        let ring_mem = unsafe { alloc_zeroed(ring_layout) } as *mut BufRingEntry;
        if ring_mem.is_null() {
            // SAFETY: mapped just above, with this length; nothing uses it.
            let _ = unsafe { mm::munmap(bufs.cast(), bufs_len) };
            return Err(io::Error::from(io::ErrorKind::OutOfMemory));
        }
        let floor = (DEPTH_MIN_BYTES / buf_size).clamp(1, usize::from(entries));
        let mut me = BufRing {
            ring: ring_mem,
            ring_layout,
            bufs,
            bufs_len,
            entries,
            buf_size,
            local_tail: 0,
            pending: 0,
            bid_at: vec![0; usize::from(entries)],
            entry_of: vec![0; usize::from(entries)],
            // Buffer 0 on top: the first ones used are the lowest.
            spare: (0..entries).rev().collect(),
            in_ring: 0,
            depth: floor,
            floor,
            taken: 0,
            peak: 0,
            dry: false,
        };
        // SAFETY: the ring memory is page-aligned, sized for `entries`, and
        // lives until `Drop`, which runs after the io_uring instance is gone
        // (the driver drops the ring first) or after unregistering.
        unsafe {
            ring.submitter()
                .register_buf_ring_with_flags(ring_mem as u64, entries, bgid, 0)?;
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

    /// Give buffer `bid` back (it goes into the ring at a `publish`).
    pub fn release(&mut self, bid: u16) {
        debug_assert!(self.spare.len() < usize::from(self.entries));
        self.spare.push(bid);
    }

    /// The kernel took `n` buffers (a completion said so).
    pub fn taken(&mut self, n: usize) {
        self.in_ring = self.in_ring.saturating_sub(n);
        self.taken += n;
    }

    /// The kernel found the ring empty (`ENOBUFS`): keep it deeper (twice
    /// as deep once per publish, however many recvs found it empty).
    pub fn ran_dry(&mut self) {
        // NOTE: also the one point where the count is known exactly.
        self.in_ring = 0;
        if !self.dry {
            self.dry = true;
            self.depth = (self.depth * 2).min(usize::from(self.entries));
        }
    }

    /// Whether the ring is kept deeper than its floor (`adapt` may make
    /// it shallower again).
    pub fn deepened(&self) -> bool {
        self.depth > self.floor
    }

    /// Follow the reads of the last while: twice the most taken in one
    /// turn, at least the floor.
    pub fn adapt(&mut self) {
        let peak = std::mem::take(&mut self.peak).max(self.taken);
        self.depth = (peak * 2).clamp(self.floor, usize::from(self.entries));
    }

    /// The buffers a completion of `len` bytes starting with buffer `first`
    /// filled, in order, each with the bytes it holds: `first` and the
    /// buffers put after it (a bundle), each holding its ring entry's
    /// length or what is left, whichever is less. NOTE: not `buf_size`:
    /// the kernel may shorten an entry's length in place (the first of a
    /// bundle, when it expected fewer bytes; kernels before 7.0 and its
    /// stable backports), and the entry keeps it, even through a recv that
    /// read nothing and left the buffer in the ring, until `put` again.
    pub fn filled(&self, first: u16, len: usize) -> impl Iterator<Item = (u16, usize)> + '_ {
        let mask = self.entries - 1;
        let mut at = self.entry_of[usize::from(first)];
        let mut left = len;
        let mut steps = 0;
        std::iter::from_fn(move || {
            if left == 0 || steps == self.entries {
                return None;
            }
            let idx = usize::from(at & mask);
            // SAFETY: idx < entries; the kernel wrote this entry, if at
            // all, before posting the completion being read.
            let room = unsafe { (*self.ring.add(idx)).len() } as usize;
            debug_assert!(room > 0, "a zero-length ring entry was filled");
            if room == 0 {
                return None;
            }
            let n = left.min(room);
            left -= n;
            at = at.wrapping_add(1);
            steps += 1;
            Some((self.bid_at[idx], n))
        })
    }

    /// (tests) Shorten the entry at the ring's head as the kernel may.
    #[cfg(test)]
    pub fn shorten_head(&mut self, len: u32) {
        let idx =
            usize::from(self.local_tail.wrapping_sub(self.in_ring as u16) & (self.entries - 1));
        // SAFETY: idx < entries; the test's ring is idle (no recv armed).
        unsafe { (*self.ring.add(idx)).set_len(len) };
    }

    /// Put buffer `bid` at the ring's tail (visible after `publish`).
    fn put(&mut self, bid: u16) {
        let mask = self.entries - 1;
        let idx = usize::from(self.local_tail & mask);
        // SAFETY: idx < entries; the kernel does not read entries past the
        // published tail, and fewer than `entries` buffers are ever in the
        // ring (there are no more), so this entry is not one it may still
        // take: writing it races with nothing.
        let entry = unsafe { &mut *self.ring.add(idx) };
        entry.set_addr(self.buf_ptr(bid) as u64);
        entry.set_len(self.buf_size as u32);
        entry.set_bid(bid);
        self.bid_at[idx] = bid;
        self.entry_of[usize::from(bid)] = idx as u16;
        self.local_tail = self.local_tail.wrapping_add(1);
        self.pending += 1;
        self.in_ring += 1;
    }

    /// Fill the ring to its depth with the buffers given back last, and
    /// publish them to the kernel.
    pub fn publish(&mut self) {
        let taken = std::mem::take(&mut self.taken);
        // NOTE: at the floor no `adapt` is due: a peak kept from then would
        // hold a later deepening for longer than its own load asks.
        self.peak = if self.depth > self.floor {
            self.peak.max(taken)
        } else {
            0
        };
        self.dry = false;
        while self.in_ring < self.depth {
            let Some(bid) = self.spare.pop() else { break };
            self.put(bid);
        }
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
        // SAFETY: allocated and mapped in `new` with exactly this layout and
        // length; the ring that used them has been dropped or the group
        // unregistered by now.
        unsafe {
            dealloc(self.ring as *mut u8, self.ring_layout);
            let _ = mm::munmap(self.bufs.cast(), self.bufs_len);
        }
    }
}
