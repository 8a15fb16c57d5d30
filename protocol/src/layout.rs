//! Where everything sits inside a worker's segment.
//!
//! ```text
//! [0, 4096)        SegmentHeader: magic, version, geometry, generation, worker control
//! per channel t:   ChannelControl (front-end sleeping flag for thread t)
//!                  request ring     (Record × ring_capacity)   front end → worker
//!                  request returns  (u32 × free_capacity)      worker → front end: freed slots
//!                  response ring    (Record × ring_capacity)   worker → front end
//!                  response returns (u32 × free_capacity)      front end → worker: freed slots
//!                  claim words      (u64 × ring_capacity)      requests' claim/revoke (claim.rs)
//!                  (padding to 4096)
//!                  request arena    (slots × slot_size)
//!                  response arena   (slots × slot_size)
//! ```

use crate::record::Record;
use crate::ring::{ring_bytes, Padded};

/// Bumped whenever anything in this file, `ring.rs`, `record.rs` or `head.rs` changes shape.
pub const LAYOUT_VERSION: u32 = 5;
/// "URINGAPI" in ASCII.
pub const MAGIC: u64 = u64::from_le_bytes(*b"URINGAPI");
pub const HEADER_BYTES: usize = 4096;
const PAGE: usize = 4096;

/// Upper bounds that keep a geometry's arithmetic far from overflow.
pub const MAX_THREADS: u32 = 1024;
pub const MAX_RING_CAPACITY: u32 = 1 << 16;
pub const MAX_SLOTS: u32 = 1 << 16;
pub const MAX_SLOT_SIZE: u32 = 16 << 20;

/// The shape of one worker's segment. Chosen by the front end, recorded in the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    /// Front-end threads: one channel each.
    pub threads: u32,
    /// Records per ring (a power of two).
    pub ring_capacity: u32,
    /// Slots per arena (each direction has its own arena).
    pub slots: u32,
    /// Bytes per slot (a multiple of 64). A request head must fit into one slot.
    pub slot_size: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GeometryError {
    #[error("threads must be 1..={MAX_THREADS}, got {0}")]
    Threads(u32),
    #[error("ring capacity must be a power of two in 2..={MAX_RING_CAPACITY}, got {0}")]
    RingCapacity(u32),
    #[error("slots must be 1..={MAX_SLOTS}, got {0}")]
    Slots(u32),
    #[error("slot size must be a multiple of 64 in 4096..={MAX_SLOT_SIZE}, got {0}")]
    SlotSize(u32),
}

/// Byte offsets of one channel's parts, relative to the segment start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelOffsets {
    pub control: usize,
    pub req_ring: usize,
    pub req_free: usize,
    pub resp_ring: usize,
    pub resp_free: usize,
    /// `ring_capacity` claim words (ring.rs rules 8 to 10), 64-byte aligned.
    pub claims: usize,
    pub req_arena: usize,
    pub resp_arena: usize,
}

/// Per-channel control block: thread t's sleeping flag, as seen from this segment.
#[repr(C)]
pub struct ChannelControl {
    /// Thread t is about to block and wants a ring when a response record arrives.
    pub front_sleeping: Padded<crate::doorbell::SleepFlag>,
    /// Thread t is blocked for ring space or slots and wants a ring when some come back.
    pub front_wants_space: Padded<crate::doorbell::SleepFlag>,
}

fn round_up(v: usize, to: usize) -> usize {
    v.div_ceil(to) * to
}

impl Geometry {
    pub fn validate(&self) -> Result<(), GeometryError> {
        if self.threads == 0 || self.threads > MAX_THREADS {
            return Err(GeometryError::Threads(self.threads));
        }
        if !self.ring_capacity.is_power_of_two()
            || self.ring_capacity < 2
            || self.ring_capacity > MAX_RING_CAPACITY
        {
            return Err(GeometryError::RingCapacity(self.ring_capacity));
        }
        if self.slots == 0 || self.slots > MAX_SLOTS {
            return Err(GeometryError::Slots(self.slots));
        }
        if !self.slot_size.is_multiple_of(64)
            || self.slot_size < 4096
            || self.slot_size > MAX_SLOT_SIZE
        {
            return Err(GeometryError::SlotSize(self.slot_size));
        }
        Ok(())
    }

    /// Cells in a slot-return ring: enough for every slot at once, so a return never waits.
    pub fn free_capacity(&self) -> usize {
        (self.slots as usize).next_power_of_two().max(2)
    }

    fn rings_bytes(&self) -> usize {
        let cap = self.ring_capacity as usize;
        round_up(
            std::mem::size_of::<ChannelControl>()
                + 2 * ring_bytes::<Record>(cap)
                + 2 * ring_bytes::<u32>(self.free_capacity())
                + 64
                + cap * 8,
            PAGE,
        )
    }

    fn arena_bytes(&self) -> usize {
        round_up(self.slots as usize * self.slot_size as usize, PAGE)
    }

    fn channel_bytes(&self) -> usize {
        self.rings_bytes() + 2 * self.arena_bytes()
    }

    /// Total segment size for this geometry.
    pub fn segment_bytes(&self) -> usize {
        HEADER_BYTES + self.threads as usize * self.channel_bytes()
    }

    pub fn channel(&self, t: u32) -> ChannelOffsets {
        assert!(t < self.threads, "channel {t} of {}", self.threads);
        let base = HEADER_BYTES + t as usize * self.channel_bytes();
        let cap = self.ring_capacity as usize;
        let control = base;
        let req_ring = control + round_up(std::mem::size_of::<ChannelControl>(), 64);
        let req_free = req_ring + ring_bytes::<Record>(cap);
        let resp_ring = req_free + ring_bytes::<u32>(self.free_capacity());
        let resp_free = resp_ring + ring_bytes::<Record>(cap);
        let claims = round_up(resp_free + ring_bytes::<u32>(self.free_capacity()), 64);
        let req_arena = base + self.rings_bytes();
        let resp_arena = req_arena + self.arena_bytes();
        ChannelOffsets {
            control,
            req_ring,
            req_free,
            resp_ring,
            resp_free,
            claims,
            req_arena,
            resp_arena,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g() -> Geometry {
        Geometry {
            threads: 3,
            ring_capacity: 256,
            slots: 100,
            slot_size: 65536,
        }
    }

    #[test]
    fn channels_do_not_overlap_and_fit() {
        let g = g();
        g.validate().unwrap();
        let mut prev_end = HEADER_BYTES;
        for t in 0..g.threads {
            let c = g.channel(t);
            assert!(c.control >= prev_end);
            assert!(c.resp_free + ring_bytes::<u32>(g.free_capacity()) <= c.claims);
            assert!(c.claims + 8 * g.ring_capacity as usize <= c.req_arena);
            assert_eq!(c.claims % 64, 0);
            assert_eq!(c.req_arena % 4096, 0);
            prev_end = c.resp_arena + g.slots as usize * g.slot_size as usize;
        }
        assert!(prev_end <= g.segment_bytes());
    }

    #[test]
    fn bad_geometries_are_named() {
        let mut bad = g();
        bad.ring_capacity = 100;
        assert_eq!(bad.validate(), Err(GeometryError::RingCapacity(100)));
        let mut bad = g();
        bad.slot_size = 1000;
        assert_eq!(bad.validate(), Err(GeometryError::SlotSize(1000)));
    }
}
