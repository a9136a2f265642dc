//! The generational slab: one IO thread's table of connections (or UDP
//! endpoints). A slot is reused after its entry is removed, but the slot's
//! generation moves on, so an id ([`ConnId`]) held from before can never
//! reach the entry that reuses it: every lookup by id checks the
//! generation, in this one place.

use slab::Slab;

use super::ConnId;

/// An entry that knows its own id.
pub(crate) trait Identified {
    fn id(&self) -> ConnId;
}

/// Entries of one thread, addressed by generation-checked ids.
pub(crate) struct GenSlab<T> {
    thread: u16,
    entries: Slab<T>,
    generations: Vec<u32>,
}

impl<T: Identified> GenSlab<T> {
    /// An empty table of IO thread `thread`.
    pub(crate) fn new(thread: u16) -> Self {
        GenSlab {
            thread,
            entries: Slab::new(),
            generations: Vec::new(),
        }
    }

    /// Insert the entry `make` builds for its new id; returns the id.
    pub(crate) fn insert_with(&mut self, make: impl FnOnce(ConnId) -> T) -> ConnId {
        let entry = self.entries.vacant_entry();
        let index = entry.key();
        if self.generations.len() <= index {
            self.generations.resize(index + 1, 0);
        }
        let id = ConnId {
            thread: self.thread,
            index: index as u32,
            generation: self.generations[index],
        };
        entry.insert(make(id));
        id
    }

    /// The live entry `id` names, if it is still the same one.
    #[cfg(test)]
    pub(crate) fn get(&self, id: ConnId) -> Option<&T> {
        self.entries.get(id.index as usize).filter(|e| e.id() == id)
    }

    /// As [`GenSlab::get`], mutably.
    pub(crate) fn get_mut(&mut self, id: ConnId) -> Option<&mut T> {
        self.entries
            .get_mut(id.index as usize)
            .filter(|e| e.id() == id)
    }

    /// The entry in `slot`, whatever its generation (driver completions
    /// name slots: the kernel holds no operation on a freed slot).
    pub(crate) fn slot_mut(&mut self, slot: usize) -> Option<&mut T> {
        self.entries.get_mut(slot)
    }

    /// Remove the entry in `slot`; its generation moves on.
    pub(crate) fn remove(&mut self, slot: usize) -> T {
        let entry = self.entries.remove(slot);
        self.generations[slot] = self.generations[slot].wrapping_add(1);
        entry
    }

    /// The ids of every entry.
    pub(crate) fn ids(&self) -> Vec<ConnId> {
        self.entries.iter().map(|(_, e)| e.id()).collect()
    }

    /// Every entry.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &T> {
        self.entries.iter().map(|(_, e)| e)
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct E(ConnId);
    impl Identified for E {
        fn id(&self) -> ConnId {
            self.0
        }
    }

    #[test]
    fn a_reused_slot_has_a_new_generation_and_old_ids_miss() {
        let mut s = GenSlab::new(3);
        let a = s.insert_with(E);
        assert_eq!((a.thread, a.index, a.generation), (3, 0, 0));
        assert!(s.get(a).is_some());
        s.remove(a.index as usize);
        let b = s.insert_with(E);
        assert_eq!(
            (b.index, b.generation),
            (0, 1),
            "same slot, next generation"
        );
        assert!(
            s.get(a).is_none() && s.get_mut(a).is_none(),
            "the old id misses"
        );
        assert!(s.get(b).is_some());
        assert_eq!(s.slot_mut(0).map(|e| e.0), Some(b));
        assert_eq!(s.ids(), [b]);
    }
}
