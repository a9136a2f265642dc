//! Giving memory back: the helpers every layer uses to shrink what a burst
//! grew (per-thread queues keep [`SCRATCH_KEEP`] entries once empty) and to
//! hand free heap pages back to the kernel. The per-thread trim that calls
//! them on a timer is `core/trim.rs`.

use std::collections::VecDeque;

/// Freeing at least this much also hands free heap pages back to the kernel.
pub(crate) const RELEASE_MIN_BYTES: usize = 256 << 10;
/// Entries a per-thread queue keeps when it is shrunk after a burst.
pub(crate) const SCRATCH_KEEP: usize = 256;

/// Hand the allocator's free pages back to the kernel (glibc keeps freed
/// small chunks resident otherwise); elsewhere a no-op.
pub(crate) fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory of the allocator's own
    // arenas; it takes their locks and touches no live allocation.
    unsafe {
        libc::malloc_trim(0);
    }
}
/// glibc's heap-top trim threshold once [`tune_allocator`] ran.
const TRIM_THRESHOLD_BYTES: i32 = 32 << 20;
/// glibc's mmap threshold once [`tune_allocator`] ran.
const MMAP_THRESHOLD_BYTES: i32 = 4 << 20;

static TUNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Keep glibc from giving heap pages back on every free (the IO threads'
/// trim does it, once a second after traffic): unless `NETRING_MALLOC_TUNING`
/// is `0`, the first engine sets `M_TRIM_THRESHOLD` to 32 MiB and
/// `M_MMAP_THRESHOLD` to 4 MiB for the process.
///
/// Why: large payloads are `bytes` of up to 256 KiB (joined reads) or
/// more (packets), alive until their send completes. With glibc's dynamic
/// thresholds (trim above 2x the last freed mmap chunk, 512 KiB here) the
/// heap top was trimmed and grown again all the time: page faults took
/// ~10 % of the server's CPU at 256 KiB messages (bulk_bench.py: 830 µs/MB
/// against 480 with these settings, 575 before bytes were sent in place).
pub(crate) fn tune_allocator() {
    use std::sync::atomic::Ordering;
    if std::env::var_os("NETRING_MALLOC_TUNING").is_some_and(|v| v == "0") {
        return;
    }
    if TUNED.swap(true, Ordering::AcqRel) {
        return;
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes the allocator's thresholds; it is
    // thread-safe (it takes the arenas' locks).
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES);
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES);
    }
}

/// Whether [`tune_allocator`] changed the thresholds: free heap pages then
/// go back only when an IO thread's trim asks.
pub(crate) fn allocator_tuned() -> bool {
    TUNED.load(std::sync::atomic::Ordering::Acquire)
}

/// Give back the capacity of an empty `v` beyond [`SCRATCH_KEEP`] entries;
/// returns the bytes freed.
pub(crate) fn shrink_vec<T>(v: &mut Vec<T>) -> usize {
    let before = v.capacity();
    if v.is_empty() && before > SCRATCH_KEEP {
        v.shrink_to(SCRATCH_KEEP);
    }
    (before - v.capacity()) * std::mem::size_of::<T>()
}

/// [`shrink_vec`] for a deque.
pub(crate) fn shrink_deque<T>(v: &mut VecDeque<T>) -> usize {
    let before = v.capacity();
    if v.is_empty() && before > SCRATCH_KEEP {
        v.shrink_to(SCRATCH_KEEP);
    }
    (before - v.capacity()) * std::mem::size_of::<T>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queues_grown_by_a_burst_are_shrunk_only_when_empty() {
        let mut v: Vec<u64> = Vec::with_capacity(10_000);
        v.push(1);
        assert_eq!(shrink_vec(&mut v), 0, "in use: kept");
        v.clear();
        let freed = shrink_vec(&mut v);
        assert!(v.capacity() >= SCRATCH_KEEP && v.capacity() < 10_000);
        assert_eq!(freed, (10_000 - v.capacity()) * 8);
        assert_eq!(shrink_vec(&mut v), 0, "already small");
        let mut d: VecDeque<u32> = VecDeque::with_capacity(5_000);
        assert!(shrink_deque(&mut d) > 0 && d.capacity() < 5_000);
    }
}
