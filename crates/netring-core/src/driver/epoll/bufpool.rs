//! The epoll driver's receive buffers: a per-thread pool of fixed-size
//! buffers, the readiness-based counterpart of io_uring's provided-buffer
//! ring (same count and size, same `u16` buffer ids).
//!
//! The driver takes a buffer only when a socket is readable and it is about
//! to read, so an idle connection owns no buffer. A buffer that received
//! bytes is lent to the loop as a [`super::Chunk`] and is not handed out
//! again until the loop gives it back with [`BufPool::put`]; a buffer whose
//! read brought nothing (EOF, EAGAIN, error) goes straight back.
//!
//! Invariants: a buffer id is either in `free` or lent out, never both; a
//! buffer's memory never moves (each is its own heap allocation), so a
//! pointer to a lent buffer stays valid until the buffer is put back.
//! Buffers are allocated on first use, up to `count`: a thread that never
//! sees more than a few reads in flight never pays for the whole pool; and
//! `trim` (once a second, from the thread's spare trimming) frees the free
//! buffers beyond the most that were lent at once since the previous trim,
//! so a burst's buffers do not stay resident after it.

use std::collections::VecDeque;
use std::mem::MaybeUninit;

/// Buffers a trim always leaves allocated (the hot ones).
const KEEP_MIN: usize = 16;

/// Fixed-size buffers identified by `u16` ids.
pub struct BufPool {
    /// Buffers by id; `None` once trimmed (allocated again when needed).
    /// Not zeroed: the kernel writes before anyone reads, and untouched
    /// pages of a fresh allocation cost no memory.
    bufs: Vec<Option<Box<[MaybeUninit<u8>]>>>,
    /// Ids of allocated buffers that are not lent out, coldest first (used
    /// LIFO from the back: the most recently returned buffer is the most
    /// likely to be in cache; trimmed from the front).
    free: VecDeque<u16>,
    /// Ids whose buffer was trimmed.
    trimmed: Vec<u16>,
    /// Buffers lent out now, and the most at once since the last trim.
    lent: usize,
    peak: usize,
    count: usize,
    size: usize,
    /// Buffers a trim always leaves allocated.
    keep_min: usize,
}

impl BufPool {
    /// A pool of up to `count` buffers of `size` bytes. `count` must fit
    /// buffer ids (≤ 65,536).
    pub fn new(count: usize, size: usize) -> Result<Self, String> {
        if count == 0 || count > usize::from(u16::MAX) + 1 {
            return Err(format!("buffer pool: {count} buffers do not fit u16 ids"));
        }
        if size == 0 {
            return Err("buffer pool: zero-sized buffers".into());
        }
        Ok(BufPool {
            bufs: Vec::new(),
            free: VecDeque::new(),
            trimmed: Vec::new(),
            lent: 0,
            peak: 0,
            count,
            size,
            keep_min: KEEP_MIN,
        })
    }

    /// Let trims free every buffer not lent (a pool of large buffers, used
    /// only by streams, should not stay resident after one).
    pub fn keeping_none(mut self) -> Self {
        self.keep_min = 0;
        self
    }

    /// Size of every buffer, in bytes.
    pub fn buf_size(&self) -> usize {
        self.size
    }

    /// Lend out a buffer, or `None` if all of them are lent.
    pub fn take(&mut self) -> Option<u16> {
        let bid = if let Some(bid) = self.free.pop_back() {
            bid
        } else if let Some(bid) = self.trimmed.pop() {
            self.bufs[usize::from(bid)] = Some(Box::new_uninit_slice(self.size));
            bid
        } else if self.bufs.len() < self.count {
            self.bufs.push(Some(Box::new_uninit_slice(self.size)));
            (self.bufs.len() - 1) as u16
        } else {
            return None;
        };
        self.lent += 1;
        self.peak = self.peak.max(self.lent);
        Some(bid)
    }

    /// The whole of lent buffer `bid`, to read into.
    pub fn buf_mut(&mut self, bid: u16) -> &mut [MaybeUninit<u8>] {
        self.bufs[usize::from(bid)]
            .as_deref_mut()
            .expect("a lent buffer is allocated")
    }

    /// Where buffer `bid` starts; valid until it is put back.
    pub fn ptr(&self, bid: u16) -> *const u8 {
        self.bufs[usize::from(bid)]
            .as_deref()
            .expect("a lent buffer is allocated")
            .as_ptr()
            .cast()
    }

    /// Give buffer `bid` back.
    pub fn put(&mut self, bid: u16) {
        debug_assert!(
            self.bufs.get(usize::from(bid)).is_some_and(Option::is_some),
            "unknown buffer {bid}"
        );
        debug_assert!(!self.free.contains(&bid), "buffer {bid} released twice");
        self.free.push_back(bid);
        self.lent -= 1;
    }

    /// Whether a trim could free something (now, or at the next trim if
    /// this interval's peak still covers the free buffers).
    pub fn has_spares(&self) -> bool {
        self.lent + self.free.len() > self.keep_min.max(self.lent)
    }

    /// Free the coldest free buffers beyond the most that were lent at once
    /// since the last trim (at least [`KEEP_MIN`] stay). Returns the bytes
    /// freed. Lent buffers are never touched.
    pub fn trim(&mut self) -> usize {
        let keep = self.peak.max(self.keep_min);
        let mut freed = 0;
        while self.lent + self.free.len() > keep {
            let Some(bid) = self.free.pop_front() else {
                break;
            };
            self.bufs[usize::from(bid)] = None;
            self.trimmed.push(bid);
            freed += self.size;
        }
        self.peak = self.lent;
        freed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(pool: &mut BufPool, bid: u16, data: &[u8]) {
        for (d, s) in pool.buf_mut(bid).iter_mut().zip(data) {
            d.write(*s);
        }
    }

    /// The first three bytes of lent buffer `bid` (written by the caller).
    fn read3(pool: &BufPool, bid: u16) -> [u8; 3] {
        let mut out = [0; 3];
        // SAFETY: `bid` is lent, so its allocation is live and at least 3
        // bytes long, and each caller wrote these three bytes first.
        out.copy_from_slice(unsafe { std::slice::from_raw_parts(pool.ptr(bid), 3) });
        out
    }

    #[test]
    fn trim_frees_cold_free_buffers_beyond_the_peak_and_never_lent_ones() {
        let mut pool = BufPool::new(1024, 4096).unwrap();
        let burst: Vec<u16> = (0..100).map(|_| pool.take().unwrap()).collect();
        // Still lent: nothing can go.
        assert_eq!(pool.trim(), 0);
        for &b in &burst[..90] {
            pool.put(b);
        }
        // 100 were lent at once in this interval: they stay.
        assert!(pool.has_spares());
        assert_eq!(pool.trim(), 0);
        // A quiet interval (at most 10 lent): everything free beyond 16
        // buffers goes, the coldest first.
        assert_eq!(pool.trim(), (100 - KEEP_MIN) * 4096);
        assert!(!pool.has_spares());
        assert_eq!(pool.free.len() + pool.lent, KEEP_MIN);
        // The ten still lent are intact and can be written and put back.
        write(&mut pool, burst[95], b"xyz");
        assert_eq!(&read3(&pool, burst[95]), b"xyz");
        for &b in &burst[90..] {
            pool.put(b);
        }
        // Trimmed ids are reused (reallocated) before the pool grows.
        let again: Vec<u16> = (0..100).map(|_| pool.take().unwrap()).collect();
        assert_eq!(pool.bufs.len(), 100);
        let mut sorted = again.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), 100);
        for b in again {
            pool.put(b);
        }
        // A busy second (peak 100) keeps its buffers; a quiet one frees them.
        assert_eq!(pool.trim(), 0);
        assert_eq!(pool.trim(), (100 - KEEP_MIN) * 4096);
    }

    #[test]
    fn lends_each_buffer_once_and_takes_it_back() {
        let mut pool = BufPool::new(4, 512).unwrap();
        let ids: Vec<u16> = (0..4).map(|_| pool.take().unwrap()).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(sorted, [0, 1, 2, 3]);
        assert_eq!(pool.take(), None, "a dry pool must say so");

        // Memory of a lent buffer stays put while others are used.
        let p = pool.ptr(ids[0]);
        write(&mut pool, ids[0], b"abc");
        pool.put(ids[1]);
        let again = pool.take().unwrap();
        assert_eq!(again, ids[1], "most recently returned buffer first");
        pool.buf_mut(again).fill(MaybeUninit::new(0xFF));
        assert_eq!(pool.ptr(ids[0]), p);
        assert_eq!(&read3(&pool, ids[0]), b"abc");
        assert_eq!(pool.buf_mut(ids[0]).len(), 512);
        assert_eq!(pool.buf_size(), 512);
    }

    #[test]
    fn allocates_only_on_demand_and_rejects_impossible_sizes() {
        let mut pool = BufPool::new(32768, 16 * 1024).unwrap();
        let a = pool.take().unwrap();
        pool.put(a);
        assert_eq!(pool.take(), Some(a), "reuses before allocating");
        assert_eq!(pool.bufs.len(), 1);
        assert!(BufPool::new(0, 512).is_err());
        assert!(BufPool::new(65537, 512).is_err());
        assert!(BufPool::new(2, 0).is_err());
    }
}
