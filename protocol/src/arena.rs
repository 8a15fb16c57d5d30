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

    /// Gives the pages of slots `from..to` back to the kernel (`MADV_REMOVE`: the memfd's
    /// pages are freed, in both processes' mappings); they read as zeros when next touched.
    /// Only the whole pages inside the range go. The caller owns those slots (they are
    /// free in its pool), so no peer reads or writes them meanwhile.
    pub fn release(&self, from: u32, to: u32) {
        let to = to.min(self.slots);
        if from >= to {
            return;
        }
        const PAGE: usize = 4096;
        let start = self.base as usize + from as usize * self.slot_size as usize;
        let end = self.base as usize + to as usize * self.slot_size as usize;
        let (start, end) = (start.div_ceil(PAGE) * PAGE, end / PAGE * PAGE);
        if start < end {
            // SAFETY: the range lies inside the mapping (constructor) and is page-aligned;
            // MADV_REMOVE only drops contents, which the pool's owner no longer needs. A
            // failure (a kernel without it) leaves the pages as they were.
            unsafe {
                libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_REMOVE);
            }
        }
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
    /// Per slot: touched since the last [`trim`](Self::trim) (kept for slots at or above
    /// [`TRIM_FLOOR`] only), and how many are.
    touched: Vec<bool>,
    touched_above: u32,
    out: u32,
    /// Takes since the last [`trim`](Self::trim) call: the load over that period.
    takes: u32,
}

/// Slots below this index keep their pages through [`SlotPool::trim`]: the light load
/// after a burst reuses them.
pub const TRIM_FLOOR: u32 = 8;

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
            touched: vec![false; slots as usize],
            touched_above: 0,
            out: 0,
            takes: 0,
        }
    }

    pub fn take(&mut self, arena: &Arena) -> Option<SlotIndex> {
        let raw = self.free.pop()?;
        self.lent[raw as usize] = true;
        self.out += 1;
        self.takes = self.takes.wrapping_add(1);
        if raw >= TRIM_FLOOR && !self.touched[raw as usize] {
            self.touched[raw as usize] = true;
            self.touched_above += 1;
        }
        arena.check(raw)
    }

    /// Slots lent out now.
    pub fn lent_out(&self) -> u32 {
        self.out
    }

    /// Called periodically. After a burst, once the load is light (since the last call at
    /// most `TRIM_FLOOR` takes, and now at most `TRIM_FLOOR / 2` slots out): gives the pages of the
    /// free slots at or above `TRIM_FLOOR` that the burst touched back to the kernel
    /// ([`Arena::release`]) and puts the lowest free slots on top of the stack, so that
    /// the load that follows touches only the first slots again. Returns how many slots
    /// were released (0 when the pool saw no burst, or the load is not light yet).
    // MEMORY: a burst of handshakes or requests (10,000 idle WebSockets opened 250 at a
    // time, an h2 8 x 100 burst) touches every slot of both arenas; without this their
    // pages, 1 MiB per worker with the 128-slot default, stayed resident in the front end
    // and in the worker for the process's life (tests/e2e/test_idle_websockets.py).
    pub fn trim(&mut self, arena: &Arena) -> u32 {
        // PERF: gated on the takes of the whole period, not only the slots out now: at
        // the instant of a call, a saturated hello (wrk -c64) often has few slots out, and
        // trimming then (every call) released and re-faulted pages and, in the front end,
        // purged jemalloc under load (32 trims in 6 s, seen with strace).
        let recent = std::mem::take(&mut self.takes);
        if self.touched_above == 0 || self.out > TRIM_FLOOR / 2 || recent > TRIM_FLOOR {
            return 0;
        }
        let mut released = 0;
        let mut run: Option<u32> = None;
        for raw in TRIM_FLOOR..=self.touched.len() as u32 {
            let i = raw as usize;
            let free_touched = i < self.touched.len() && self.touched[i] && !self.lent[i];
            if free_touched {
                self.touched[i] = false;
                self.touched_above -= 1;
                released += 1;
                run.get_or_insert(raw);
            } else if let Some(from) = run.take() {
                arena.release(from, raw);
            }
        }
        self.free.sort_unstable_by(|a, b| b.cmp(a));
        released
    }

    pub fn give_back(&mut self, raw: u32) -> Result<(), BadReturn> {
        match self.lent.get_mut(raw as usize) {
            Some(lent @ true) => {
                *lent = false;
                self.out -= 1;
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

    /// After a burst, a light load lets the pool release the slots above the floor that the
    /// burst touched (and only free ones), and the next takes start from slot 0 again.
    #[test]
    fn a_burst_is_trimmed_once_the_load_is_light() {
        let mut region = vec![0u8; 32 * 64];
        // SAFETY: the Vec outlives the arena in this test (madvise on it fails harmlessly).
        let arena = unsafe { Arena::new(region.as_mut_ptr(), 32, 64) };
        let mut pool = SlotPool::new(32);
        let taken: Vec<u32> = (0..20).map(|_| pool.take(&arena).unwrap().get()).collect();
        assert_eq!(pool.trim(&arena), 0, "20 slots out: not light");
        assert_eq!(pool.trim(&arena), 0, "still 20 out");
        // The burst ends in any order; one slot above the floor (15) is still held.
        for &raw in taken.iter().rev().filter(|&&r| r != 15) {
            pool.give_back(raw).unwrap();
        }
        assert_eq!(pool.lent_out(), 1);
        assert_eq!(pool.trim(&arena), 11, "16..20 and 8..15 go, 15 is lent");
        pool.give_back(15).unwrap();
        for _ in 0..=TRIM_FLOOR {
            let s = pool.take(&arena).unwrap();
            pool.give_back(s.get()).unwrap();
        }
        assert_eq!(pool.trim(&arena), 0, "busy since the last call: not light");
        assert_eq!(
            pool.trim(&arena),
            1,
            "15 goes once returned and the load is light"
        );
        assert_eq!(pool.trim(&arena), 0, "nothing new touched");
        assert_eq!(
            pool.take(&arena).unwrap().get(),
            0,
            "lowest first after a trim"
        );
        assert_eq!(pool.available() + pool.lent_out() as usize, 32);
    }

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
