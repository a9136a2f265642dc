//! A connection's ordered write queue.
//!
//! Writes are appended as owned buffers; small writes are coalesced into the
//! tail buffer so that 100,000 tiny writes cost a few allocations, not
//! 100,000. At most one send is in flight per socket: [`SendQueue::fill_iovecs`]
//! describes the front of the queue (up to [`MAX_IOVECS`] buffers) and *pins*
//! those buffers; nothing pinned is moved or appended to until
//! [`SendQueue::advance`] reports how many bytes the kernel took. A short send
//! simply leaves the rest at the front for the next round.
//!
//! A large write may instead be queued by reference ([`SharedBytes`]: a
//! Python `bytes`, say): the kernel reads it from the object itself and the
//! reference is released once every byte of it was sent, so a large
//! payload is copied only by the kernel.
//!
//! A send may go zero-copy (io_uring `SEND_ZC`): the kernel then reads the
//! queued buffers after the send's completion, until its notification. The
//! thread's [`BufCache`] keeps every buffer that leaves such a connection's
//! queue meanwhile (sent, or dropped by an abort), per slot, and lets them
//! go once every notification owed for that slot has arrived: kept too
//! long rather than freed under the kernel, whatever order notifications
//! come in and even when the connection is gone.
//!
//! Coalescing buffers come from, and return to, a per-thread [`BufCache`], so
//! steady traffic allocates nothing: allocating and freeing a 16 KiB buffer
//! per send per connection made glibc grow and trim its heap constantly
//! (page faults and TLB flushes were 10 % of the server's CPU in the echo
//! benchmark before the cache).

use std::collections::VecDeque;

use std::os::fd::{AsRawFd, OwnedFd};

use crate::driver::file::FILE_WINDOW_BYTES;
use crate::driver::{FileSpan, SendState, SEQ_MASK};

/// Buffers described by one vectored send.
pub const MAX_IOVECS: usize = 64; // fits `SendQueue::pinned` (u8)
/// Writes up to this size are copied into the tail buffer when it has room;
/// larger ones are queued as they are (by reference when shared).
pub const COALESCE_MAX_BYTES: usize = 8 * 1024;
/// Capacity of a buffer that small writes are coalesced into.
const TAIL_CAPACITY_BYTES: usize = 16 * 1024;
/// Coalescing buffers kept for reuse per IO thread (at most 4 MiB).
const CACHED_BUFFERS_MAX: usize = 256;
/// Empty queues and send states kept for reuse per IO thread: what
/// connections with writes in progress use, so that an idle connection
/// holds neither (about 200 bytes less each).
const CACHED_STATES_MAX: usize = 256;
/// A queue's ring keeps its capacity in the spares up to this many entries.
const CACHED_DEQUE_CAPACITY_MAX: usize = 16;

/// Bytes queued by reference, sent from where they are: their address and
/// contents must not change while the value lives; dropping it releases
/// them (after the kernel has taken the last byte, or the queue was dropped).
pub trait SharedBytes: Send + std::fmt::Debug {
    fn as_bytes(&self) -> &[u8];
}

impl SharedBytes for Vec<u8> {
    fn as_bytes(&self) -> &[u8] {
        self
    }
}

/// One queued buffer: owned (coalescing, or copied), shared, or a range
/// of a file.
#[derive(Debug)]
enum Chunk {
    Owned(Vec<u8>),
    Shared(Box<dyn SharedBytes>),
    File(FileChunk),
}

/// A file range queued by `sendfile`: the descriptor is the queue's own
/// (a duplicate), closed when the range is sent or the queue dropped.
#[derive(Debug)]
struct FileChunk {
    fd: OwnedFd,
    /// The next byte to send.
    offset: u64,
    /// Bytes left to send.
    left: u64,
}

impl Chunk {
    fn bytes(&self) -> &[u8] {
        match self {
            Chunk::Owned(v) => v,
            Chunk::Shared(s) => s.as_bytes(),
            Chunk::File(_) => &[],
        }
    }
}

/// The most of a file read into a stream layer (TLS) per settle: the
/// encrypted bytes wait in the send queue, so this bounds their memory.
pub const FILE_LAYER_WINDOW_BYTES: usize = 256 * 1024;

/// Spares of one IO thread: coalescing buffers, the rings of empty write
/// queues, and send states.
#[derive(Default)]
pub struct BufCache {
    spare: Vec<Vec<u8>>,
    /// The fewest spare buffers seen since the last `trim`: that many went
    /// unused for the whole interval.
    low: usize,
    deques: Vec<VecDeque<Chunk>>,
    // NOTE: boxed on purpose: a state moves between the spares and a
    // connection as a pointer, and its address is what the kernel reads.
    #[allow(clippy::vec_box)]
    states: Vec<Box<SendState>>,
    /// Zero-copy sends and what they may still read, by slot.
    zerocopy: std::collections::HashMap<u32, SlotZeroCopy>,
    /// What `put` keeps now, and for which sends (see `hold_for`).
    holding: Option<(u32, u64, u64)>,
}

impl Drop for BufCache {
    fn drop(&mut self) {
        // NOTE: the kernel may still read what zero-copy sends whose
        // notifications never came (the IO thread exits without waiting
        // for them) kept: freed, that memory could be reused and its new
        // contents sent. Leaked instead (only at an engine's end).
        for (_, slot) in self.zerocopy.drain() {
            std::mem::forget(slot.kept);
        }
    }
}

/// One slot's zero-copy sends: the notifications owed (in the order the
/// sends were made; they may arrive in any order), the buffers kept for
/// them, and whether its connection must stop sending zero-copy.
#[derive(Default)]
struct SlotZeroCopy {
    /// The connection (its slot generation) these flags are about: the
    /// slot's latest to send zero-copy.
    generation: u32,
    /// Its first zero-copy send.
    first: u64,
    /// Its last zero-copy send: what leaves its queue may be read by its
    /// sends `first..=last`.
    last: Option<u64>,
    /// Its send in flight is zero-copy (one send in flight per slot).
    in_flight: bool,
    /// The kernel copied one of its sends: it sends normally from now on.
    copied: bool,
    /// The next send's sequence number (per slot, never reused).
    next: u64,
    /// Notifications owed: (send, its connection's generation, whether the
    /// send took any bytes), oldest first.
    owed: VecDeque<(u64, u32, bool)>,
    /// Buffers kept, each with the sends that may read it (`first..=last`
    /// of the connection it left): a previous connection's owed
    /// notifications do not hold the next one's buffers.
    kept: Vec<(u64, u64, Chunk)>,
}

impl SlotZeroCopy {
    /// Whether a notification of a send in `first..=last` is owed.
    fn owes(&self, first: u64, last: u64) -> bool {
        self.owed.iter().any(|o| (first..=last).contains(&o.0))
    }

    /// Hand back the buffers no owed notification covers any more.
    fn release(&mut self, out: &mut Vec<Chunk>) {
        // NOTE: few entries (what zero-copy sends of at least the
        // threshold have in flight): a scan per notification.
        let mut i = 0;
        while i < self.kept.len() {
            let (first, last, _) = self.kept[i];
            if self.owes(first, last) {
                i += 1;
            } else {
                out.push(self.kept.swap_remove(i).2);
            }
        }
    }
}

impl BufCache {
    /// A send state for a connection that starts sending.
    pub fn get_state(&mut self) -> Box<SendState> {
        self.states.pop().unwrap_or_default()
    }

    /// Take back the send state of a connection whose queue drained.
    pub fn put_state(&mut self, state: Box<SendState>) {
        if self.states.len() < CACHED_STATES_MAX {
            self.states.push(state);
        }
    }

    fn get_deque(&mut self) -> VecDeque<Chunk> {
        self.deques.pop().unwrap_or_default()
    }

    fn put_deque(&mut self, deque: VecDeque<Chunk>) {
        debug_assert!(deque.is_empty());
        if deque.capacity() <= CACHED_DEQUE_CAPACITY_MAX && self.deques.len() < CACHED_STATES_MAX {
            self.deques.push(deque);
        }
    }

    fn get(&mut self) -> Vec<u8> {
        let buf = self
            .spare
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(TAIL_CAPACITY_BYTES));
        self.low = self.low.min(self.spare.len());
        buf
    }

    /// Whether any spare buffer is kept (a trim is worth scheduling).
    pub fn has_spares(&self) -> bool {
        !self.spare.is_empty()
    }

    /// Free the spare buffers that went unused since the last trim (all of
    /// them after an idle interval; none while traffic keeps using them).
    /// Returns the bytes freed.
    pub fn trim(&mut self) -> usize {
        let unused = self.low.min(self.spare.len());
        self.spare.truncate(self.spare.len() - unused);
        if self.spare.is_empty() {
            self.spare = Vec::new();
        }
        self.low = self.spare.len();
        unused * TAIL_CAPACITY_BYTES
    }

    /// Whether the connection in `slot` (of slot generation `generation`)
    /// may send zero-copy: not once the kernel reported copying one.
    pub fn zerocopy_allowed(&self, slot: u32, generation: u32) -> bool {
        self.zerocopy
            .get(&slot)
            .is_none_or(|z| z.generation != generation || !z.copied)
    }

    /// The connection in `slot` sends zero-copy now: the send's sequence
    /// number (its low 24 bits tag the kernel operation).
    pub fn zerocopy_issue(&mut self, slot: u32, generation: u32) -> u32 {
        let z = self.zerocopy.entry(slot).or_default();
        let seq = z.next;
        if z.generation != generation || z.last.is_none() {
            z.generation = generation;
            z.copied = false;
            z.first = seq;
        }
        z.next += 1;
        z.owed.push_back((seq, generation, false));
        z.last = Some(seq);
        z.in_flight = true;
        seq as u32 & SEQ_MASK
    }

    /// The send in flight on `slot` completed; `notify`: the kernel will
    /// send a notification (a zero-copy send's), `took`: it took bytes.
    /// Returns whether it was a zero-copy send.
    #[inline]
    pub fn zerocopy_completed(&mut self, slot: u32, notify: bool, took: bool) -> bool {
        // NOTE: every send of an engine without zero-copy: a length check.
        !self.zerocopy.is_empty() && self.zerocopy_completed_slow(slot, notify, took)
    }

    #[cold]
    fn zerocopy_completed_slow(&mut self, slot: u32, notify: bool, took: bool) -> bool {
        let Some(z) = self.zerocopy.get_mut(&slot) else {
            return false;
        };
        if !std::mem::take(&mut z.in_flight) {
            return false; // a plain send
        }
        if notify {
            if let Some(owed) = z.owed.back_mut() {
                owed.2 = took;
            }
        } else {
            // No notification follows (it failed before the kernel took
            // anything): nothing is owed for it.
            z.owed.pop_back();
            let mut free = Vec::new();
            z.release(&mut free);
            self.tidy(slot);
            for chunk in free {
                self.put(chunk);
            }
        }
        true
    }

    /// The socket in `slot` refused a zero-copy send (not TCP or UDP: a
    /// Unix socket): its connection sends normally from now on.
    pub fn zerocopy_refused(&mut self, slot: u32, generation: u32) {
        let z = self.zerocopy.entry(slot).or_default();
        if z.generation != generation {
            z.generation = generation;
            z.last = None;
        }
        z.copied = true;
    }

    /// Forget a slot's state once it holds nothing and says nothing.
    fn tidy(&mut self, slot: u32) {
        if self
            .zerocopy
            .get(&slot)
            .is_some_and(|z| z.owed.is_empty() && z.kept.is_empty() && !z.copied && !z.in_flight)
        {
            self.zerocopy.remove(&slot);
        }
    }

    /// The notification of zero-copy send `seq` (its low 24 bits) on
    /// `slot` arrived; `copied`: the kernel did not send in place. Returns
    /// whether it was copied, for a send that took bytes (a failed or
    /// cancelled one reports "copied" too, and says nothing about the
    /// path). Buffers no owed notification covers any more go.
    pub fn zerocopy_notified(&mut self, slot: u32, seq: u32, copied: bool) -> Option<bool> {
        let z = self.zerocopy.get_mut(&slot)?;
        let at = z.owed.iter().position(|o| o.0 as u32 & SEQ_MASK == seq)?;
        debug_assert_eq!(
            z.owed
                .iter()
                .filter(|o| o.0 as u32 & SEQ_MASK == seq)
                .count(),
            1,
            "16 million zero-copy sends owed on one slot"
        );
        let (_, generation, took) = z.owed.remove(at)?;
        if copied && took && generation == z.generation {
            z.copied = true;
        }
        let mut free = Vec::new();
        z.release(&mut free);
        self.tidy(slot);
        for chunk in free {
            self.put(chunk);
        }
        took.then_some(copied)
    }

    /// The notification of zero-copy send `seq` on `slot` will never come:
    /// the buffers it may read are leaked (never freed: the kernel may
    /// still send from them), and it is owed no more.
    #[cold]
    pub fn zerocopy_abandoned(&mut self, slot: u32, seq: u32) {
        let Some(z) = self.zerocopy.get_mut(&slot) else {
            return;
        };
        let Some(at) = z.owed.iter().position(|o| o.0 as u32 & SEQ_MASK == seq) else {
            return;
        };
        let (full, _, _) = z.owed.remove(at).expect("found");
        let mut i = 0;
        while i < z.kept.len() {
            let (first, last, _) = z.kept[i];
            if (first..=last).contains(&full) {
                std::mem::forget(z.kept.swap_remove(i).2);
            } else {
                i += 1;
            }
        }
        let mut free = Vec::new();
        z.release(&mut free);
        self.tidy(slot);
        for chunk in free {
            self.put(chunk);
        }
    }

    /// Whether any zero-copy send is owed a notification or any buffer is
    /// kept for one.
    pub fn zerocopy_active(&self) -> bool {
        !self.zerocopy.is_empty()
    }

    /// The connection in `slot` is gone (buffers kept for its
    /// notifications stay until they arrive).
    #[inline]
    pub fn forget_slot(&mut self, slot: u32) {
        if !self.zerocopy.is_empty() {
            self.forget_slot_slow(slot);
        }
    }

    #[cold]
    fn forget_slot_slow(&mut self, slot: u32) {
        if let Some(z) = self.zerocopy.get_mut(&slot) {
            z.copied = false;
            z.last = None;
        }
        self.tidy(slot);
    }

    /// From now until `hold_none`, buffers leaving the queue of the
    /// connection in `slot` (`advance`, `clear`) are kept while any
    /// zero-copy send it made may still read them.
    /// Returns whether it holds (then `hold_none` ends it).
    #[inline]
    pub fn hold_for(&mut self, slot: u32, generation: u32) -> bool {
        // NOTE: the common case, a length check per send (`holding` is
        // None outside `hold_for`..`hold_none`).
        !self.zerocopy.is_empty() && self.hold_for_slow(slot, generation)
    }

    #[cold]
    fn hold_for_slow(&mut self, slot: u32, generation: u32) -> bool {
        self.holding = self.zerocopy.get(&slot).and_then(|z| {
            let last = z.last.filter(|_| z.generation == generation)?;
            z.owes(z.first, last).then_some((slot, z.first, last))
        });
        self.holding.is_some()
    }

    /// See `hold_for`.
    pub fn hold_none(&mut self) {
        self.holding = None;
    }

    /// Keep `chunk` for the zero-copy sends `hold_for` named (a file range,
    /// never sent zero-copy, goes at once).
    #[cold]
    fn put_held(&mut self, chunk: Chunk) {
        if let (Some((slot, first, last)), false) = (self.holding, matches!(chunk, Chunk::File(_)))
        {
            if let Some(z) = self.zerocopy.get_mut(&slot) {
                z.kept.push((first, last, chunk));
                return;
            }
        }
        self.recycle(chunk);
    }

    #[inline(always)]
    fn put(&mut self, chunk: Chunk) {
        if self.holding.is_some() {
            self.put_held(chunk);
        } else {
            self.recycle(chunk);
        }
    }

    /// Keep a coalescing buffer for reuse; anything else is dropped here (a
    /// shared chunk's reference released, a file's duplicate closed).
    // NOTE: always inlined: it runs per buffer sent and folds into
    // `advance` (out of line it cost ~20 instructions per message more,
    // by callgrind).
    #[inline(always)]
    fn recycle(&mut self, chunk: Chunk) {
        let Chunk::Owned(mut buf) = chunk else {
            return;
        };
        if buf.capacity() == TAIL_CAPACITY_BYTES && self.spare.len() < CACHED_BUFFERS_MAX {
            buf.clear();
            self.spare.push(buf);
        }
    }
}

/// Ordered queue of bytes waiting for the socket.
#[derive(Default, Debug)]
pub struct SendQueue {
    bufs: VecDeque<Chunk>,
    /// Bytes of `bufs[0]` already sent.
    head_offset: usize,
    /// Unsent bytes in total.
    len: usize,
    /// Front buffers referenced by the in-flight send.
    // NOTE: the three counts below fit in one word (an idle connection's
    // size is watched: conn::size_tests).
    pinned: u8,
    /// File ranges sent completely since the last `take_files_done`.
    files_done: u8,
    /// File ranges queued (their bytes are in `len`, not in memory).
    files: u32,
}

impl SendQueue {
    /// Unsent bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Of [`SendQueue::len`], the bytes in memory (not in queued files).
    pub fn memory(&self) -> usize {
        if self.files == 0 {
            return self.len;
        }
        let in_files: u64 = self
            .bufs
            .iter()
            .map(|c| match c {
                Chunk::File(f) => f.left,
                _ => 0,
            })
            .sum();
        self.len - in_files as usize
    }

    /// Queue `len` bytes of the file `fd` from `offset` (the queue owns
    /// `fd` and closes it once they are sent). Nothing is appended to the
    /// buffer before it afterwards, so it is sent after everything queued
    /// before it and before everything queued after it.
    pub fn push_file(&mut self, fd: OwnedFd, offset: u64, len: u64, cache: &mut BufCache) {
        if len == 0 {
            return; // nothing to send, nothing to report
        }
        self.ensure_ring(cache);
        self.len += len as usize;
        self.files += 1;
        self.bufs.push_back(Chunk::File(FileChunk {
            fd,
            offset,
            left: len,
        }));
    }

    /// How many queued file ranges were sent completely since last asked.
    pub fn take_files_done(&mut self) -> u8 {
        std::mem::take(&mut self.files_done)
    }

    /// Append a copy of `data`.
    pub fn push_slice(&mut self, data: &[u8], cache: &mut BufCache) {
        if data.is_empty() {
            return;
        }
        self.ensure_ring(cache);
        self.len += data.len();
        if data.len() <= COALESCE_MAX_BYTES {
            if let Some(tail) = self.open_tail(data.len()) {
                tail.extend_from_slice(data);
                return;
            }
            let mut buf = cache.get();
            buf.extend_from_slice(data);
            self.bufs.push_back(Chunk::Owned(buf));
        } else {
            self.bufs.push_back(Chunk::Owned(data.to_vec()));
        }
    }

    /// The tail buffer, when it is owned, not pinned by a send and has room
    /// for `more` bytes.
    fn open_tail(&mut self, more: usize) -> Option<&mut Vec<u8>> {
        let n = self.bufs.len();
        if n <= usize::from(self.pinned) {
            return None;
        }
        match &mut self.bufs[n - 1] {
            Chunk::Owned(tail) if tail.len() + more <= tail.capacity() => Some(tail),
            _ => None,
        }
    }

    /// Append `data` by reference when it is larger than what is coalesced
    /// (sent from the object itself, released once sent), else a copy of it.
    pub fn push_shared(&mut self, data: Box<dyn SharedBytes>, cache: &mut BufCache) {
        let len = data.as_bytes().len();
        if len <= COALESCE_MAX_BYTES {
            self.push_slice(data.as_bytes(), cache);
            return;
        }
        self.ensure_ring(cache);
        self.len += len;
        self.bufs.push_back(Chunk::Shared(data));
    }

    /// Append a copy of the concatenation of `parts` (a length header and
    /// its payload, a line and its delimiter): one look at the tail buffer
    /// when they fit in it together.
    pub fn push_parts(&mut self, parts: &[&[u8]], cache: &mut BufCache) {
        let total: usize = parts.iter().map(|p| p.len()).sum();
        if total == 0 {
            return;
        }
        if total <= COALESCE_MAX_BYTES {
            self.ensure_ring(cache);
            if let Some(tail) = self.open_tail(total) {
                for part in parts {
                    tail.extend_from_slice(part);
                }
                self.len += total;
                return;
            }
        }
        for part in parts {
            self.push_slice(part, cache);
        }
    }

    /// Append an owned buffer without copying.
    pub fn push_vec(&mut self, data: Vec<u8>, cache: &mut BufCache) {
        if data.len() <= COALESCE_MAX_BYTES {
            self.push_slice(&data, cache);
        } else {
            self.ensure_ring(cache);
            self.len += data.len();
            self.bufs.push_back(Chunk::Owned(data));
        }
    }

    /// An empty queue holds no ring: take one from the spares.
    fn ensure_ring(&mut self, cache: &mut BufCache) {
        if self.bufs.capacity() == 0 {
            self.bufs = cache.get_deque();
        }
    }

    /// A drained queue gives its ring back to the spares.
    fn release_ring(&mut self, cache: &mut BufCache) {
        if self.bufs.is_empty() && self.bufs.capacity() != 0 {
            cache.put_deque(std::mem::take(&mut self.bufs));
        }
    }

    /// Describe the front of the queue for the next send and pin it: the
    /// buffers before the first file range as iovecs, or, when a file range
    /// is first, (a window of) that range. Returns the bytes described.
    pub fn fill(&mut self, state: &mut SendState) -> usize {
        state.file = None;
        if let Some(Chunk::File(f)) = self.bufs.front() {
            state.iov.clear();
            let len = f.left.min(FILE_WINDOW_BYTES as u64) as usize;
            state.file = Some(FileSpan {
                fd: f.fd.as_raw_fd(),
                offset: f.offset,
                len,
            });
            self.pinned = 1;
            return len;
        }
        self.fill_iovecs(&mut state.iov)
    }

    /// Describe the buffers at the front of the queue (up to the first file
    /// range) as iovecs and pin them. Returns the number of bytes described.
    pub fn fill_iovecs(&mut self, iov: &mut Vec<libc::iovec>) -> usize {
        iov.clear();
        let mut total = 0;
        for (i, buf) in self.bufs.iter().take(MAX_IOVECS).enumerate() {
            if matches!(buf, Chunk::File(_)) {
                break;
            }
            let start = if i == 0 { self.head_offset } else { 0 };
            let part = &buf.bytes()[start..];
            iov.push(libc::iovec {
                iov_base: part.as_ptr() as *mut libc::c_void,
                iov_len: part.len(),
            });
            total += part.len();
        }
        self.pinned = iov.len() as u8; // at most MAX_IOVECS
        total
    }

    /// The kernel took `n` bytes from the front; unpin everything.
    pub fn advance(&mut self, mut n: usize, cache: &mut BufCache) {
        debug_assert!(n <= self.len);
        self.pinned = 0;
        self.len -= n;
        while n > 0 {
            if let Some(Chunk::File(f)) = self.bufs.front_mut() {
                // A file send covers only its range.
                debug_assert!(n as u64 <= f.left);
                f.offset += n as u64;
                f.left -= n as u64;
                if f.left == 0 {
                    self.bufs.pop_front(); // closes the duplicate
                    self.files -= 1;
                    self.files_done += 1;
                }
                break;
            }
            let front = self
                .bufs
                .front()
                .expect("advance past the end of the queue");
            let left = front.bytes().len() - self.head_offset;
            if n >= left {
                n -= left;
                if let Some(done) = self.bufs.pop_front() {
                    cache.put(done);
                }
                self.head_offset = 0;
            } else {
                self.head_offset += n;
                n = 0;
            }
        }
        self.release_ring(cache);
    }

    /// Drop everything (abort). Must not be called while a send is in flight.
    pub fn clear(&mut self, cache: &mut BufCache) {
        debug_assert_eq!(self.pinned, 0, "clearing a pinned send queue");
        for buf in self.bufs.drain(..) {
            cache.put(buf);
        }
        self.head_offset = 0;
        self.len = 0;
        self.files = 0;
        self.release_ring(cache);
    }

    /// Hand queued bytes to `f`, in order, and take them off the queue (a
    /// stream layer's plaintext, which is never pinned by a send): all of
    /// them up to the first file range; that range is read in windows of
    /// [`FILE_LAYER_WINDOW_BYTES`], one per call and only with `read_file`,
    /// and what follows it waits for later calls. An error reading the file
    /// is returned (what was handed over stays handed over).
    pub fn drain_with(
        &mut self,
        cache: &mut BufCache,
        read_file: bool,
        mut f: impl FnMut(&[u8]),
    ) -> std::io::Result<()> {
        debug_assert_eq!(self.pinned, 0, "draining a pinned send queue");
        while let Some(chunk) = self.bufs.front() {
            if let Chunk::File(file) = chunk {
                if read_file {
                    let want = file.left.min(FILE_LAYER_WINDOW_BYTES as u64) as usize;
                    let mut buf = vec![0u8; want];
                    let n = read_file_at(&file.fd, &mut buf, file.offset)?;
                    f(&buf[..n]);
                    self.advance(n, cache);
                }
                return Ok(());
            }
            let bytes = &chunk.bytes()[self.head_offset..];
            let n = bytes.len();
            f(bytes);
            self.advance(n, cache);
        }
        Ok(())
    }

    /// Release the pin without consuming (the send failed or was cancelled).
    pub fn unpin(&mut self) {
        self.pinned = 0;
    }
}

/// Read up to `buf.len()` bytes of `fd` at `offset` (all of them unless
/// the file ends); a file that ends first is an error.
fn read_file_at(fd: &OwnedFd, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match rustix::io::pread(fd, &mut buf[got..], offset + got as u64) {
            Ok(0) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!(
                        "the file ended at byte {} before the range sendfile was given",
                        offset + got as u64
                    ),
                ))
            }
            Ok(n) => got += n,
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(got)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(q: &mut SendQueue, step: usize) -> Vec<u8> {
        let mut cache = BufCache::default();
        let mut out = Vec::new();
        let mut iov = Vec::new();
        while !q.is_empty() {
            let n = q.fill_iovecs(&mut iov).min(step);
            let mut left = n;
            for v in &iov {
                let take = v.iov_len.min(left);
                // SAFETY: the iovecs point into buffers pinned in `q`, alive
                // and unmodified until `advance`.
                out.extend_from_slice(unsafe {
                    std::slice::from_raw_parts(v.iov_base as *const u8, take)
                });
                left -= take;
            }
            q.advance(n, &mut cache);
        }
        out
    }

    #[test]
    fn short_sends_resume_in_order() {
        let mut q = SendQueue::default();
        let c = &mut BufCache::default();
        let mut expect = Vec::new();
        for i in 0..1000u32 {
            let chunk: Vec<u8> = (0..(i % 97) as u8).map(|b| b ^ i as u8).collect();
            expect.extend_from_slice(&chunk);
            q.push_slice(&chunk, c);
        }
        q.push_vec(vec![7; 100_000], c);
        expect.extend(std::iter::repeat_n(7, 100_000));
        assert_eq!(q.len(), expect.len());
        assert_eq!(drain(&mut q, 13), expect);
        assert!(q.is_empty());
    }

    #[test]
    fn pinned_buffers_are_not_appended_to() {
        let mut q = SendQueue::default();
        let c = &mut BufCache::default();
        q.push_slice(b"abc", c);
        let mut iov = Vec::new();
        assert_eq!(q.fill_iovecs(&mut iov), 3);
        let base = iov[0].iov_base;
        q.push_slice(b"def", c); // must go to a new buffer: "abc" is in flight
        assert_eq!(q.fill_iovecs(&mut iov), 6);
        assert_eq!(iov[0].iov_base, base);
        assert_eq!(iov.len(), 2);
        q.advance(4, c);
        q.push_slice(b"g", c);
        assert_eq!(drain(&mut q, 100), b"efg");
    }

    #[test]
    fn parts_coalesce_in_order_and_respect_the_pinned_buffer() {
        let mut q = SendQueue::default();
        let c = &mut BufCache::default();
        let mut expect = Vec::new();
        // Header + payload + delimiter, of every size around the coalescing
        // limit and the tail buffer's capacity, and empty parts.
        for i in 0..300usize {
            let payload = vec![(i % 251) as u8; (i * 37) % (COALESCE_MAX_BYTES + 100)];
            let header = (payload.len() as u32).to_be_bytes();
            let parts: [&[u8]; 4] = [&header, &payload, b"", b"\r\n"];
            q.push_parts(&parts, c);
            parts.iter().for_each(|p| expect.extend_from_slice(p));
            if i == 150 {
                // A send in flight pins what is queued: later parts may not
                // be appended to it.
                let mut iov = Vec::new();
                let pinned = q.fill_iovecs(&mut iov);
                q.push_parts(&[b"pin", b"ned"], c);
                expect.extend_from_slice(b"pinned");
                let mut again = Vec::new();
                assert_eq!(q.fill_iovecs(&mut again), pinned + 6);
                assert_eq!(again[..iov.len()].len(), iov.len());
                assert_eq!(again[iov.len() - 1].iov_len, iov[iov.len() - 1].iov_len);
            }
        }
        q.push_parts(&[b"", b""], c);
        assert_eq!(q.len(), expect.len());
        assert_eq!(drain(&mut q, 4093), expect);
        assert!(q.is_empty());
    }

    #[test]
    fn small_writes_coalesce_and_buffers_are_reused() {
        let mut q = SendQueue::default();
        let c = &mut BufCache::default();
        for _ in 0..10_000 {
            q.push_slice(b"x", c);
        }
        let mut iov = Vec::new();
        q.fill_iovecs(&mut iov);
        assert_eq!(iov.len(), 1);
        let first = iov[0].iov_base;
        q.advance(10_000, c);
        q.push_slice(b"y", c);
        q.fill_iovecs(&mut iov);
        assert_eq!(iov[0].iov_base, first, "the drained buffer was not reused");
    }

    /// Shared bytes that count how many of them are alive.
    #[derive(Debug)]
    struct Counted(Vec<u8>, std::sync::Arc<std::sync::atomic::AtomicUsize>);

    impl SharedBytes for Counted {
        fn as_bytes(&self) -> &[u8] {
            &self.0
        }
    }

    impl Drop for Counted {
        fn drop(&mut self) {
            self.1.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    #[test]
    fn buffers_a_zero_copy_send_read_stay_until_its_notifications_are_in() {
        use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
        let alive = std::sync::Arc::new(AtomicUsize::new(0));
        let shared = |n: usize| {
            alive.fetch_add(1, SeqCst);
            Box::new(Counted(vec![7; n], alive.clone()))
        };
        let c = &mut BufCache::default();
        let (slot, generation) = (4, 1);
        let mut q = SendQueue::default();
        for _ in 0..4 {
            q.push_shared(shared(50_000), c);
        }
        let mut iov = Vec::new();
        // Zero-copy send 0 takes one and a half buffers.
        q.fill_iovecs(&mut iov);
        let s0 = c.zerocopy_issue(slot, generation);
        c.zerocopy_completed(slot, true, true);
        c.hold_for(slot, generation);
        q.advance(75_000, c);
        c.hold_none();
        assert_eq!(
            alive.load(SeqCst),
            4,
            "sent, but the kernel may still read it"
        );
        // Send 1 takes the rest of the second and the third.
        q.fill_iovecs(&mut iov);
        let s1 = c.zerocopy_issue(slot, generation);
        c.zerocopy_completed(slot, true, true);
        c.hold_for(slot, generation);
        q.advance(75_000, c);
        c.hold_none();
        assert_eq!(alive.load(SeqCst), 4);
        // Send 0's notification: the first buffer goes; the second stays
        // (send 1 read it too), and so does the third.
        assert_eq!(c.zerocopy_notified(slot, s0, false), Some(false));
        assert_eq!(alive.load(SeqCst), 3, "what only send 0 read is released");
        // A stream goes on: what stays held is what owed sends may read.
        q.fill_iovecs(&mut iov);
        let s2 = c.zerocopy_issue(slot, generation);
        c.zerocopy_completed(slot, true, true);
        c.hold_for(slot, generation);
        q.advance(50_000, c);
        q.clear(c);
        c.hold_none();
        // Out of order: send 2's notification before send 1's.
        assert_eq!(c.zerocopy_notified(slot, s2, false), Some(false));
        assert_eq!(alive.load(SeqCst), 3, "send 1 is still owed");
        assert!(c.zerocopy_allowed(slot, generation));
        assert_eq!(c.zerocopy_notified(slot, s1, true), Some(true));
        assert_eq!(alive.load(SeqCst), 0);
        assert!(
            !c.zerocopy_allowed(slot, generation),
            "the kernel copied: off for this connection"
        );
        assert!(
            c.zerocopy_allowed(slot, generation + 1),
            "not for the next one"
        );
        // A connection that never sent zero-copy has nothing held.
        let mut other = SendQueue::default();
        other.push_shared(shared(50_000), c);
        c.hold_for(5, 1);
        other.clear(c);
        c.hold_none();
        assert_eq!(alive.load(SeqCst), 0);
        // A failed zero-copy send (no notification) owes nothing.
        let mut q = SendQueue::default();
        q.push_shared(shared(50_000), c);
        q.fill_iovecs(&mut iov);
        c.zerocopy_issue(6, 1);
        c.zerocopy_completed(6, false, false);
        q.unpin();
        c.hold_for(6, 1);
        q.clear(c);
        c.hold_none();
        assert_eq!(alive.load(SeqCst), 0);
        // A cancelled one's notification says "copied": not held against
        // the connection.
        let mut q = SendQueue::default();
        q.push_shared(shared(50_000), c);
        q.fill_iovecs(&mut iov);
        let s = c.zerocopy_issue(7, 1);
        c.zerocopy_completed(7, true, false);
        q.unpin();
        c.hold_for(7, 1);
        q.clear(c);
        c.hold_none();
        assert_eq!(alive.load(SeqCst), 1);
        c.forget_slot(7);
        assert_eq!(c.zerocopy_notified(7, s, true), None);
        assert_eq!(alive.load(SeqCst), 0);
        assert!(c.zerocopy_allowed(7, 1));
        c.forget_slot(slot);
        // A connection that left notifications owed does not hold its
        // successor's buffers in the same slot.
        let mut q = SendQueue::default();
        q.push_shared(shared(50_000), c);
        q.fill_iovecs(&mut iov);
        let old = c.zerocopy_issue(8, 1);
        c.zerocopy_completed(8, true, true);
        c.hold_for(8, 1);
        q.advance(50_000, c);
        c.hold_none();
        c.forget_slot(8);
        assert_eq!(
            alive.load(SeqCst),
            1,
            "the old connection's send may still read it"
        );
        let mut q = SendQueue::default();
        q.push_shared(shared(50_000), c);
        q.fill_iovecs(&mut iov);
        let new = c.zerocopy_issue(8, 2);
        c.zerocopy_completed(8, true, true);
        c.hold_for(8, 2);
        q.advance(50_000, c);
        c.hold_none();
        assert_eq!(alive.load(SeqCst), 2);
        assert_eq!(c.zerocopy_notified(8, new, false), Some(false));
        assert_eq!(
            alive.load(SeqCst),
            1,
            "released though the old send is still owed"
        );
        assert_eq!(c.zerocopy_notified(8, old, false), Some(false));
        assert_eq!(alive.load(SeqCst), 0);
        // A socket that refuses zero-copy turns it off for its connection.
        c.zerocopy_issue(9, 1);
        assert!(c.zerocopy_completed(9, false, false));
        c.zerocopy_refused(9, 1);
        assert!(!c.zerocopy_allowed(9, 1));
        c.forget_slot(9);
        assert!(c.zerocopy.is_empty(), "nothing left behind");
    }

    #[test]
    fn an_abandoned_notification_leaks_what_its_send_may_read_and_owes_nothing_more() {
        use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
        let alive = std::sync::Arc::new(AtomicUsize::new(0));
        let shared = |n: usize| {
            alive.fetch_add(1, SeqCst);
            Box::new(Counted(vec![7; n], alive.clone()))
        };
        let c = &mut BufCache::default();
        let mut q = SendQueue::default();
        let mut iov = Vec::new();
        q.push_shared(shared(50_000), c);
        q.fill_iovecs(&mut iov);
        let lost = c.zerocopy_issue(3, 1);
        c.zerocopy_completed(3, true, true);
        c.hold_for(3, 1);
        q.advance(50_000, c);
        c.hold_none();
        c.forget_slot(3);
        // Its socket had to be closed: the notification never comes.
        c.zerocopy_abandoned(3, lost);
        assert_eq!(
            alive.load(SeqCst),
            1,
            "leaked: the kernel may still send from it"
        );
        assert!(c.zerocopy.is_empty(), "nothing owed any more");
        // 65,536 sends later a 16-bit sequence would come round: the
        // sequence has 24 bits, and the first send (still owed) is not
        // mistaken for the latest.
        let first = c.zerocopy_issue(5, 1);
        c.zerocopy_completed(5, true, true);
        for _ in 0..(1u32 << 16) {
            let s = c.zerocopy_issue(5, 1);
            c.zerocopy_completed(5, true, true);
            assert_eq!(c.zerocopy_notified(5, s, false), Some(false));
        }
        assert_eq!(c.zerocopy_notified(5, first, false), Some(false));
        assert!(c.zerocopy.is_empty());
    }

    #[test]
    fn shared_bytes_are_sent_in_place_and_released_once_sent() {
        use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
        let alive = std::sync::Arc::new(AtomicUsize::new(0));
        let shared = |fill: u8, n: usize| {
            alive.fetch_add(1, SeqCst);
            Box::new(Counted(vec![fill; n], alive.clone()))
        };
        let mut q = SendQueue::default();
        let c = &mut BufCache::default();
        let big = shared(1, 100_000);
        let at = big.0.as_ptr();
        q.push_slice(b"head", c);
        q.push_shared(big, c);
        q.push_slice(b"tail", c); // a new owned buffer after the shared one
        q.push_shared(shared(2, 10), c); // small: copied, released at once
        assert_eq!(alive.load(SeqCst), 1);
        let mut iov = Vec::new();
        assert_eq!(q.fill_iovecs(&mut iov), 4 + 100_000 + 4 + 10);
        assert_eq!(iov.len(), 3);
        assert_eq!(
            iov[1].iov_base as *const u8, at,
            "the shared bytes were copied"
        );
        q.advance(50_000, c); // a short send: still referenced
        assert_eq!(alive.load(SeqCst), 1);
        q.fill_iovecs(&mut iov);
        assert_eq!(iov[0].iov_base as *const u8, at.wrapping_add(49_996));
        q.advance(50_004, c);
        assert_eq!(
            alive.load(SeqCst),
            0,
            "released once the kernel took it all"
        );
        let mut expect = b"tail".to_vec();
        expect.extend_from_slice(&[2; 10]);
        assert_eq!(drain(&mut q, 100), expect);
        // Dropping a queue (abort) releases what it still holds.
        q.push_shared(shared(3, 20_000), c);
        assert_eq!(alive.load(SeqCst), 1);
        q.clear(c);
        assert_eq!(alive.load(SeqCst), 0);
    }

    #[test]
    fn a_file_range_is_sent_between_the_writes_around_it() {
        let c = &mut BufCache::default();
        let mut q = SendQueue::default();
        let file = OwnedFd::from(std::fs::File::open("/dev/null").expect("a descriptor to queue"));
        q.push_slice(b"before", c);
        q.push_file(file, 10, 3 << 20, c);
        q.push_slice(b"after", c); // not coalesced into "before": the file is between
        assert_eq!(q.len(), 6 + (3 << 20) + 5);
        assert_eq!(q.memory(), 11);
        let mut state = SendState::default();
        assert_eq!(
            q.fill(&mut state),
            6,
            "the bytes before the file go first, alone"
        );
        assert!(state.file.is_none());
        q.advance(6, c);
        assert_eq!(q.fill(&mut state), FILE_WINDOW_BYTES);
        let span = state.file.expect("the file's window is next");
        assert_eq!((span.offset, span.len), (10, FILE_WINDOW_BYTES));
        q.advance(1000, c); // a short file send
        q.fill(&mut state);
        assert_eq!(state.file.map(|f| f.offset), Some(1010));
        assert_eq!(q.take_files_done(), 0);
        q.advance((3 << 20) - 1000, c);
        assert_eq!(q.take_files_done(), 1, "the range's end is reported once");
        assert_eq!(q.take_files_done(), 0);
        assert_eq!(q.memory(), 5);
        assert_eq!(q.fill(&mut state), 5);
        assert!(state.file.is_none());
        q.advance(5, c);
        assert!(q.is_empty());
        q.push_file(
            OwnedFd::from(std::fs::File::open("/dev/null").expect("open")),
            0,
            0,
            c,
        );
        assert!(q.is_empty(), "an empty range queues nothing");
    }

    #[test]
    fn spares_unused_for_an_interval_are_trimmed() {
        let c = &mut BufCache::default();
        let bufs: Vec<Vec<u8>> = (0..3).map(|_| c.get()).collect();
        for b in bufs {
            c.put(Chunk::Owned(b));
        }
        // All three were in use during this interval: none is freed.
        assert_eq!(c.trim(), 0);
        assert!(c.has_spares());
        // One is used in the next interval: the other two go.
        let b = c.get();
        c.put(Chunk::Owned(b));
        assert_eq!(c.trim(), 2 * TAIL_CAPACITY_BYTES);
        // Idle for a whole interval: the last one goes.
        assert_eq!(c.trim(), TAIL_CAPACITY_BYTES);
        assert!(!c.has_spares());
    }
}
