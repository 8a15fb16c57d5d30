//! Arenas of fixed-size payload slots, and the allocator the producing side keeps.
//!
//! Each direction of a channel has its own arena. The producer of records owns the free
//! slots: it takes one, fills it, names it in a record. The consumer hands the index back
//! through the direction's slot-return ring once it is done with the bytes. A return ring
//! holds as many cells as there are slots, so returning never waits.

/// A slot index that has been checked against its arena's size. Only [`Arena::check`] makes
/// one, so a slice built from it is always in bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SlotIndex(u32);

impl SlotIndex {
    pub fn get(self) -> u32 {
        self.0
    }
}

/// One direction's arena: `slots` slots of `slot_size` bytes at `base`.
#[derive(Debug, Clone, Copy)]
pub struct Arena {
    base: *mut u8,
    slots: u32,
    slot_size: u32,
}

// SAFETY: a description of shared memory; accesses are governed by slot ownership.
unsafe impl Send for Arena {}

impl Arena {
    /// # Safety
    /// `base .. base + slots * slot_size` is mapped for as long as the arena is used.
    pub unsafe fn new(base: *mut u8, slots: u32, slot_size: u32) -> Self {
        Self {
            base,
            slots,
            slot_size,
        }
    }

    pub fn slots(&self) -> u32 {
        self.slots
    }

    pub fn slot_size(&self) -> usize {
        self.slot_size as usize
    }

    /// Validates an index read from shared memory.
    pub fn check(&self, raw: u32) -> Option<SlotIndex> {
        (raw < self.slots).then_some(SlotIndex(raw))
    }

    /// Start of a slot. In bounds by construction of `SlotIndex`.
    pub fn ptr(&self, slot: SlotIndex) -> *mut u8 {
        // SAFETY: `slot.0 < slots`, so the offset stays inside the arena (constructor).
        unsafe { self.base.add(slot.0 as usize * self.slot_size as usize) }
    }
}

/// The producer's free list plus a record of which slots are lent out, so that a peer that
/// returns a slot twice, or one it never got, is caught.
///
/// A stack: the slot given back last goes out next. With returns reclaimed before every
/// take (`take_slot` in channel.rs), the slots a channel touches, and so the shared memory
/// it makes resident, follow the requests really in flight rather than `--channel-slots`.
#[derive(Debug)]
pub struct SlotPool {
    free: Vec<u32>,
    lent: Vec<bool>,
}

/// A returned slot index that is out of range or was not lent out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("slot {0} returned but not lent out")]
pub struct BadReturn(pub u32);

impl SlotPool {
    pub fn new(slots: u32) -> Self {
        // Reversed so that slot 0 goes out first; LIFO reuse keeps hot slots in cache.
        Self {
            free: (0..slots).rev().collect(),
            lent: vec![false; slots as usize],
        }
    }

    pub fn take(&mut self, arena: &Arena) -> Option<SlotIndex> {
        let raw = self.free.pop()?;
        self.lent[raw as usize] = true;
        arena.check(raw)
    }

    pub fn give_back(&mut self, raw: u32) -> Result<(), BadReturn> {
        match self.lent.get_mut(raw as usize) {
            Some(lent @ true) => {
                *lent = false;
                self.free.push(raw);
                Ok(())
            }
            _ => Err(BadReturn(raw)),
        }
    }

    pub fn available(&self) -> usize {
        self.free.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Whatever order slots come back in, a slot is never lent twice and returns of
        /// slots that are not out are refused.
        #[test]
        fn a_slot_is_never_lent_twice(ops in proptest::collection::vec(any::<(bool, u8)>(), 0..400)) {
            let mut region = vec![0u8; 8 * 4096];
            // SAFETY: the Vec outlives the arena in this test.
            let arena = unsafe { Arena::new(region.as_mut_ptr(), 8, 4096) };
            let mut pool = SlotPool::new(8);
            let mut out: Vec<u32> = Vec::new();
            for (take, pick) in ops {
                if take {
                    match pool.take(&arena) {
                        Some(s) => {
                            prop_assert!(!out.contains(&s.get()));
                            out.push(s.get());
                        }
                        None => prop_assert_eq!(out.len(), 8),
                    }
                } else if !out.is_empty() {
                    let s = out.swap_remove(pick as usize % out.len());
                    prop_assert!(pool.give_back(s).is_ok());
                    prop_assert!(pool.give_back(s).is_err());
                } else {
                    prop_assert!(pool.give_back(pick as u32).is_err());
                }
                prop_assert_eq!(pool.available() + out.len(), 8);
            }
        }
    }
}
