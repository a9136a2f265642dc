//! Connection identifiers.
//!
//! A [`ConnId`] names one connection for its whole life: the IO thread that
//! owns it, its slot in that thread's slab, and the slot's generation. A slot
//! is reused only after its connection's last completion, and every reuse
//! bumps the generation, so a stale id (held by Python after the connection
//! closed) can never reach the socket that later reuses the slot or the
//! descriptor: every operation compares the generation first.

/// The identity of one connection: owner thread, slab slot and generation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnId {
    /// Index of the IO thread that owns the connection.
    pub thread: u16,
    /// Slot in the owner's connection slab.
    pub index: u32,
    /// Generation of the slot when the connection was opened.
    pub generation: u32,
}

impl ConnId {
    /// Pack into one integer, e.g. for a Python-side dictionary key.
    pub fn to_u64(self) -> u64 {
        (u64::from(self.thread) << 48)
            | (u64::from(self.generation & 0xFFFF) << 32)
            | u64::from(self.index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packed_ids_differ_by_generation_and_thread() {
        let a = ConnId {
            thread: 0,
            index: 7,
            generation: 1,
        };
        let b = ConnId { generation: 2, ..a };
        let c = ConnId { thread: 1, ..a };
        assert_ne!(a.to_u64(), b.to_u64());
        assert_ne!(a.to_u64(), c.to_u64());
        assert_ne!(a, b);
    }
}
