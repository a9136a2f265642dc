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
