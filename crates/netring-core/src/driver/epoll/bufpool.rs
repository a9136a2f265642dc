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
//! sees more than a few reads in flight never pays for the whole pool.

/// Fixed-size buffers identified by `u16` ids.
pub struct BufPool {
    /// Allocated buffers; id = index.
    bufs: Vec<Box<[u8]>>,
    /// Ids of allocated buffers that are not lent out (used LIFO: the most
    /// recently returned buffer is the most likely to be in cache).
    free: Vec<u16>,
    count: usize,
    size: usize,
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
            free: Vec::new(),
            count,
            size,
        })
    }

    /// Size of every buffer, in bytes.
    pub fn buf_size(&self) -> usize {
        self.size
    }

    /// Lend out a buffer, or `None` if all of them are lent.
    pub fn take(&mut self) -> Option<u16> {
        if let Some(bid) = self.free.pop() {
            return Some(bid);
        }
        if self.bufs.len() < self.count {
            let bid = self.bufs.len() as u16;
            self.bufs.push(vec![0u8; self.size].into_boxed_slice());
            return Some(bid);
        }
        None
    }

    /// The whole of lent buffer `bid`, to read into.
    pub fn buf_mut(&mut self, bid: u16) -> &mut [u8] {
        &mut self.bufs[usize::from(bid)]
    }

    /// Where buffer `bid` starts; valid until the pool is dropped.
    pub fn ptr(&self, bid: u16) -> *const u8 {
        self.bufs[usize::from(bid)].as_ptr()
    }

    /// Give buffer `bid` back.
    pub fn put(&mut self, bid: u16) {
        debug_assert!(usize::from(bid) < self.bufs.len(), "unknown buffer {bid}");
        debug_assert!(!self.free.contains(&bid), "buffer {bid} released twice");
        self.free.push(bid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        pool.buf_mut(ids[0])[..3].copy_from_slice(b"abc");
        pool.put(ids[1]);
        let again = pool.take().unwrap();
        assert_eq!(again, ids[1], "most recently returned buffer first");
        pool.buf_mut(again).fill(0xFF);
        assert_eq!(pool.ptr(ids[0]), p);
        assert_eq!(&pool.buf_mut(ids[0])[..3], b"abc");
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
