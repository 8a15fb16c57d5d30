//! The two ends of one (front-end thread, worker) channel.
//!
//! [`FrontChannel`] is the front end's end: it produces request records, consumes response
//! records and treats everything the worker wrote as untrusted. [`WorkerChannel`] is the
//! worker's end. Both are single-owner (`!Sync`): each lives on one thread.

use std::sync::Arc;

use crate::arena::{Arena, BadReturn, SlotIndex, SlotPool};
use crate::claim;
use crate::record::{Kind, Record, NO_SLOT};
use crate::ring::{Consumer, Corrupt, Producer, PushError};
use crate::segment::Segment;

mod trim;

/// A breach of the channel contract by the peer. For the front end, each of these means:
/// log it, kill the worker, fail its requests, start over with a new segment.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChannelError {
    #[error(transparent)]
    Ring(#[from] Corrupt),
    #[error("record names unknown kind {0}")]
    Kind(u8),
    #[error("record names slot {slot}, arena has {slots}")]
    SlotRange { slot: u32, slots: u32 },
    #[error("record names slot {0} which is still in use")]
    SlotBusy(u32),
    #[error("record claims {len} bytes (head {head}) in a slot of {slot_size}")]
    Length {
        len: u32,
        head: u32,
        slot_size: usize,
    },
    #[error("record of kind {0:?} is missing its slot")]
    MissingSlot(Kind),
    #[error("record of kind {0:?} must not carry a slot")]
    UnexpectedSlot(Kind),
    #[error("a PathSend record must end its response (MORE set)")]
    PathSendMore,
    #[error("a BodyCredit record must return at least one record, without MORE (aux {0})")]
    Credit(u32),
    #[error("a WsSend record carries a credit of {0} records, more than a window")]
    WsCredit(u64),
    #[error("a WsSend record names {0} for its message type (0 binary, 1 text)")]
    WsType(u32),
    #[error("a WsClose record must end its stream (MORE set) and carry at most 123 bytes")]
    WsClose,
    #[error(transparent)]
    Return(#[from] BadReturn),
}

/// A response record that passed validation: kind known, slot in range and not in use,
/// lengths inside the slot. Built only by [`FrontChannel::recv`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Incoming {
    pub kind: Kind,
    pub stream: u64,
    pub more: bool,
    /// The slot and the bytes used in it; the front end must release it when done.
    pub slot: Option<(SlotIndex, usize)>,
    /// Bytes of encoded head at the start of the slot (`Response` only).
    pub head_len: usize,
    /// Body records returned (`BodyCredit`: at least 1; `WsSend`: the credit it carries,
    /// at most `WS_WINDOW`; 0 otherwise). Checked against what was sent by the front end's
    /// stream table, not here.
    pub credit: u32,
    /// `WsSend`: [`crate::record::WS_TEXT`] or 0; `WsClose`: the close code (not checked
    /// here: the front end maps a code nobody may send to an empty close). 0 otherwise.
    pub value: u32,
}

fn view<T: Copy>(
    seg: &Segment,
    offset: usize,
    capacity: usize,
    produce: bool,
) -> (Option<Producer<T>>, Option<Consumer<T>>) {
    // SAFETY: offsets come from the segment's own geometry (in bounds, aligned, initialised by
    // `Segment::create`); the channel that calls this is the only producer or consumer of the
    // ring on its side, and holds an `Arc<Segment>` that keeps the mapping alive.
    unsafe {
        let base = seg.base().add(offset);
        if produce {
            (Some(Producer::attach(base, capacity)), None)
        } else {
            (None, Some(Consumer::attach(base, capacity)))
        }
    }
}

fn producer<T: Copy>(seg: &Segment, offset: usize, capacity: usize) -> Producer<T> {
    view(seg, offset, capacity, true).0.expect("producer")
}

fn consumer<T: Copy>(seg: &Segment, offset: usize, capacity: usize) -> Consumer<T> {
    view(seg, offset, capacity, false).1.expect("consumer")
}

fn arenas(seg: &Segment, thread: u32) -> (Arena, Arena) {
    let g = seg.geometry();
    let c = g.channel(thread);
    // SAFETY: both arenas lie inside the mapping per the geometry, and the `Arc<Segment>`
    // the channel holds keeps it mapped.
    unsafe {
        (
            Arena::new(seg.base().add(c.req_arena), g.slots, g.slot_size),
            Arena::new(seg.base().add(c.resp_arena), g.slots, g.slot_size),
        )
    }
}

/// The front end's end of a channel.
pub struct FrontChannel {
    seg: Arc<Segment>,
    thread: u32,
    requests: Producer<Record>,
    request_returns: Consumer<u32>,
    responses: Consumer<Record>,
    response_returns: Producer<u32>,
    req_arena: Arena,
    resp_arena: Arena,
    req_pool: SlotPool,
    /// Response slots the front end is still reading or sending from.
    resp_held: Vec<bool>,
    /// Claim words not naming a queued request (ring.rs rule 8).
    claims_free: Vec<u32>,
    /// The last claim tag handed out.
    claim_tag: u32,
}

impl FrontChannel {
    /// The channel for front-end thread `thread` inside `seg`. One per (segment, thread).
    pub fn new(seg: Arc<Segment>, thread: u32) -> Self {
        let g = seg.geometry();
        let c = g.channel(thread);
        let (cap, fcap) = (g.ring_capacity as usize, g.free_capacity());
        let (req_arena, resp_arena) = arenas(&seg, thread);
        Self {
            requests: producer(&seg, c.req_ring, cap),
            request_returns: consumer(&seg, c.req_free, fcap),
            responses: consumer(&seg, c.resp_ring, cap),
            response_returns: producer(&seg, c.resp_free, fcap),
            req_pool: SlotPool::new(g.slots),
            resp_held: vec![false; g.slots as usize],
            claims_free: (0..g.ring_capacity).rev().collect(),
            claim_tag: 0,
            req_arena,
            resp_arena,
            thread,
            seg,
        }
    }

    pub fn segment(&self) -> &Arc<Segment> {
        &self.seg
    }

    pub fn slot_size(&self) -> usize {
        self.req_arena.slot_size()
    }

    /// Takes a free request slot, reclaiming the ones the worker returned first, so that
    /// the most recently returned slot goes out again (see [`SlotPool`]).
    pub fn take_slot(&mut self) -> Result<Option<SlotIndex>, ChannelError> {
        while let Some(raw) = self.request_returns.pop()? {
            self.req_pool.give_back(raw)?;
        }
        Ok(self.req_pool.take(&self.req_arena))
    }

    /// Gives back a slot that was taken but never sent.
    pub fn untake_slot(&mut self, slot: SlotIndex) {
        let _ = self.req_pool.give_back(slot.get());
    }

    /// Copies `bytes` into a request slot at `offset`. Panics if it does not fit: callers
    /// size their writes by [`slot_size`](Self::slot_size).
    pub fn write_slot(&mut self, slot: SlotIndex, offset: usize, bytes: &[u8]) {
        assert!(
            offset + bytes.len() <= self.req_arena.slot_size(),
            "write past slot end"
        );
        // SAFETY: in bounds (checked above, `SlotIndex` is in range); the slot was taken
        // from our pool so the worker does not own it; raw copy, no reference to shared
        // memory is formed.
        unsafe {
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                self.req_arena.ptr(slot).add(offset),
                bytes.len(),
            )
        }
    }

    /// Room for another record in the request ring.
    pub fn has_room(&mut self) -> Result<bool, ChannelError> {
        Ok(
            self.requests.len_cached() < self.seg.geometry().ring_capacity as u64
                || self.requests.free()? > 0,
        )
    }

    /// Publishes a request record. `Ok(false)`: the ring is full, try again later.
    pub fn send(&mut self, rec: Record) -> Result<bool, ChannelError> {
        match self.requests.try_push(rec) {
            Ok(()) => Ok(true),
            Err(PushError::Full) => Ok(false),
            Err(PushError::Corrupt(c)) => Err(c.into()),
        }
    }

    /// Makes a claim word say "queued" for a request about to be sent (ring.rs rule 8);
    /// returns the `Record::extra` that names it, or 0 (not revocable) when every word is
    /// in use.
    pub fn queue_claim(&mut self) -> u64 {
        let Some(index) = self.claims_free.pop() else {
            return 0;
        };
        self.claim_tag = claim::next_tag(self.claim_tag);
        claim::queue(
            &self.seg.claims(self.thread)[index as usize],
            self.claim_tag,
        );
        claim::encode(index, self.claim_tag)
    }

    /// Takes back a queued request (ring.rs rule 9): true if the worker will not run it.
    pub fn revoke_claim(&self, extra: u64) -> bool {
        claim::decode(extra).is_some_and(|(index, tag)| {
            claim::revoke(&self.seg.claims(self.thread)[index as usize], tag)
        })
    }

    /// The request named by `extra` is over (answered, revoked or abandoned): its word may
    /// name the next one. A stale claim by the worker then fails on the new tag (rule 9).
    pub fn free_claim(&mut self, extra: u64) {
        if let Some((index, _)) = claim::decode(extra) {
            debug_assert!(!self.claims_free.contains(&index));
            self.claims_free.push(index);
        }
    }

    /// After one or more `send`s: whether the worker must be woken (ring.rs rule 4).
    pub fn worker_asleep(&self) -> bool {
        self.requests.consumer_sleeping(self.seg.worker_sleeping())
    }

    /// Takes the next response record, validated.
    pub fn recv(&mut self) -> Result<Option<Incoming>, ChannelError> {
        let Some(rec) = self.responses.pop()? else {
            return Ok(None);
        };
        let kind = match Kind::from_u8(rec.kind) {
            Some(
                k @ (Kind::Response
                | Kind::ResponseBody
                | Kind::Abort
                | Kind::Continue
                | Kind::PathSend
                | Kind::BodyCredit
                | Kind::WsAccept
                | Kind::WsSend
                | Kind::WsClose),
            ) => k,
            _ => return Err(ChannelError::Kind(rec.kind)),
        };
        if kind == Kind::PathSend && rec.has_more() {
            return Err(ChannelError::PathSendMore);
        }
        if matches!(kind, Kind::Continue | Kind::BodyCredit) && rec.slot != NO_SLOT {
            return Err(ChannelError::UnexpectedSlot(kind));
        }
        if kind == Kind::BodyCredit && (rec.aux == 0 || rec.has_more()) {
            return Err(ChannelError::Credit(rec.aux));
        }
        if kind == Kind::WsSend && rec.aux > crate::record::WS_TEXT {
            return Err(ChannelError::WsType(rec.aux));
        }
        // A `WsSend` carries the client-message credit in `extra` (0: none); more than a
        // window is a violation whatever the stream table says.
        let carried = if kind == Kind::WsSend {
            match u32::try_from(rec.extra) {
                Ok(n) if n <= crate::record::WS_WINDOW => n,
                _ => return Err(ChannelError::WsCredit(rec.extra)),
            }
        } else {
            0
        };
        if kind == Kind::WsClose && (rec.has_more() || (rec.slot != NO_SLOT && rec.len > 123)) {
            return Err(ChannelError::WsClose);
        }
        // WsSend and WsClose carry a number of their own in `aux`; for every other kind with
        // a slot it is a head length that must fit the bytes used (0 when there is none).
        let has_head = matches!(kind, Kind::Response | Kind::PathSend | Kind::WsAccept);
        let numbered = matches!(kind, Kind::WsSend | Kind::WsClose);
        let (len, head) = (rec.len, if numbered { 0 } else { rec.aux });
        let slot = if rec.slot == NO_SLOT {
            if matches!(kind, Kind::Response | Kind::PathSend | Kind::WsAccept) {
                return Err(ChannelError::MissingSlot(kind));
            }
            None
        } else {
            let slots = self.resp_arena.slots();
            let idx = self
                .resp_arena
                .check(rec.slot)
                .ok_or(ChannelError::SlotRange {
                    slot: rec.slot,
                    slots,
                })?;
            let slot_size = self.resp_arena.slot_size();
            if len as usize > slot_size || head > len {
                return Err(ChannelError::Length {
                    len,
                    head,
                    slot_size,
                });
            }
            let held = &mut self.resp_held[idx.get() as usize];
            if *held {
                return Err(ChannelError::SlotBusy(idx.get()));
            }
            *held = true;
            Some((idx, len as usize))
        };
        let head_len = if has_head { head as usize } else { 0 };
        Ok(Some(Incoming {
            kind,
            stream: rec.stream,
            more: rec.has_more(),
            slot,
            head_len,
            credit: if kind == Kind::BodyCredit {
                rec.aux
            } else {
                carried
            },
            value: if matches!(kind, Kind::WsSend | Kind::WsClose) {
                rec.aux
            } else {
                0
            },
        }))
    }

    /// Copies bytes out of a held response slot (for the head, which is validated after the
    /// copy so that the worker cannot change it between check and use).
    pub fn copy_out(&self, slot: SlotIndex, range: std::ops::Range<usize>, out: &mut Vec<u8>) {
        assert!(range.end <= self.resp_arena.slot_size() && range.start <= range.end);
        out.reserve(range.len());
        // SAFETY: in bounds (asserted); `out` has room for `range.len()` more bytes after
        // `reserve`; the copy is raw, so a concurrent write by a misbehaving worker changes
        // only the bytes we copy, never our memory safety.
        unsafe {
            let src = self.resp_arena.ptr(slot).add(range.start);
            std::ptr::copy_nonoverlapping(src, out.as_mut_ptr().add(out.len()), range.len());
            out.set_len(out.len() + range.len());
        }
    }

    /// Address of a held response slot's bytes, for sending them without a copy. Valid while
    /// the slot is held and the segment mapped (the `Arc` from [`segment`](Self::segment)).
    pub fn slot_ptr(&self, slot: SlotIndex) -> *const u8 {
        self.resp_arena.ptr(slot)
    }

    /// Hands a response slot back to the worker once its bytes were sent.
    pub fn release(&mut self, slot: SlotIndex) {
        let held = &mut self.resp_held[slot.get() as usize];
        debug_assert!(*held, "releasing a slot that is not held");
        *held = false;
        // A return ring has a cell for every slot, so this cannot be full unless the worker
        // corrupted the counters; then the worker is being torn down anyway.
        let _ = self.response_returns.try_push(slot.get());
    }

    /// After releases: whether the worker is blocked for space and must be woken.
    pub fn worker_wants_space(&self) -> bool {
        self.response_returns
            .consumer_sleeping(self.seg.worker_wants_space())
    }

    /// This thread's sleeping flag in this segment.
    pub fn my_sleep_flag(&self) -> &crate::doorbell::SleepFlag {
        self.seg.front_sleeping(self.thread)
    }

    /// This thread's "wants space" flag in this segment.
    pub fn my_space_flag(&self) -> &crate::doorbell::SleepFlag {
        self.seg.front_wants_space(self.thread)
    }

    /// Whether a response record is waiting (the re-check of rule 4).
    pub fn has_responses(&mut self) -> Result<bool, ChannelError> {
        Ok(self.responses.has_items()?)
    }

    /// Whether returned request slots are waiting (the re-check for "wants space").
    pub fn has_returns(&mut self) -> Result<bool, ChannelError> {
        Ok(self.request_returns.has_items()?)
    }
}

/// The worker's end of a channel.
pub struct WorkerChannel {
    seg: Arc<Segment>,
    thread: u32,
    requests: Consumer<Record>,
    request_returns: Producer<u32>,
    responses: Producer<Record>,
    response_returns: Consumer<u32>,
    req_arena: Arena,
    resp_arena: Arena,
    resp_pool: SlotPool,
}

impl WorkerChannel {
    pub fn new(seg: Arc<Segment>, thread: u32) -> Self {
        let g = seg.geometry();
        let c = g.channel(thread);
        let (cap, fcap) = (g.ring_capacity as usize, g.free_capacity());
        let (req_arena, resp_arena) = arenas(&seg, thread);
        Self {
            requests: consumer(&seg, c.req_ring, cap),
            request_returns: producer(&seg, c.req_free, fcap),
            responses: producer(&seg, c.resp_ring, cap),
            response_returns: consumer(&seg, c.resp_free, fcap),
            resp_pool: SlotPool::new(g.slots),
            req_arena,
            resp_arena,
            thread,
            seg,
        }
    }

    /// Claims a request as its task starts (ring.rs rule 9). `extra` is the `Request`
    /// record's: 0 (no claim word) runs. False: the front end took the request back (or the
    /// word names another use); it must not run.
    pub fn claim(&self, extra: u64) -> bool {
        let Some((index, tag)) = claim::decode(extra) else {
            return true;
        };
        self.seg
            .claims(self.thread)
            .get(index as usize)
            .is_some_and(|w| claim::claim(w, tag))
    }

    pub fn thread(&self) -> u32 {
        self.thread
    }

    pub fn slot_size(&self) -> usize {
        self.resp_arena.slot_size()
    }

    /// The next request record. The front end is trusted, but slot and length are still
    /// checked so that a bug there cannot make the worker read out of bounds.
    pub fn recv(&mut self) -> Result<Option<(Record, Option<SlotIndex>)>, ChannelError> {
        let Some(rec) = self.requests.pop()? else {
            return Ok(None);
        };
        if rec.slot == NO_SLOT {
            return Ok(Some((rec, None)));
        }
        let slots = self.req_arena.slots();
        let idx = self
            .req_arena
            .check(rec.slot)
            .ok_or(ChannelError::SlotRange {
                slot: rec.slot,
                slots,
            })?;
        let slot_size = self.req_arena.slot_size();
        // `aux` is a head length only for the kinds that start a stream; a `WsDisconnect`
        // carries its close code there (and the reason in the slot).
        let head = match Kind::from_u8(rec.kind) {
            Some(Kind::Request | Kind::WsConnect) => rec.aux,
            _ => 0,
        };
        if rec.len as usize > slot_size || head > rec.len {
            return Err(ChannelError::Length {
                len: rec.len,
                head,
                slot_size,
            });
        }
        Ok(Some((rec, Some(idx))))
    }

    /// The bytes of a request slot the worker currently owns.
    pub fn request_bytes(&self, slot: SlotIndex, len: usize) -> &[u8] {
        assert!(len <= self.req_arena.slot_size());
        // SAFETY: in bounds; the front end does not write a slot between publishing it and
        // getting it back, and we hand it back only through `free_request_slot`, which takes
        // `&mut self` and so ends this borrow first.
        unsafe { std::slice::from_raw_parts(self.req_arena.ptr(slot), len) }
    }

    pub fn free_request_slot(&mut self, slot: SlotIndex) {
        // Cannot be full: the return ring has a cell for every slot.
        let _ = self.request_returns.try_push(slot.get());
    }

    /// Whether the front-end thread is blocked for space and must be woken.
    pub fn front_wants_space(&self) -> bool {
        self.request_returns
            .consumer_sleeping(self.seg.front_wants_space(self.thread))
    }

    /// A free response slot, reclaiming the ones the front end returned first (most
    /// recently returned out first, see [`SlotPool`]).
    pub fn take_slot(&mut self) -> Result<Option<SlotIndex>, ChannelError> {
        while let Some(raw) = self.response_returns.pop()? {
            self.resp_pool.give_back(raw)?;
        }
        Ok(self.resp_pool.take(&self.resp_arena))
    }

    pub fn untake_slot(&mut self, slot: SlotIndex) {
        let _ = self.resp_pool.give_back(slot.get());
    }

    /// The writable bytes of a response slot the worker took.
    pub fn slot_mut(&mut self, slot: SlotIndex) -> &mut [u8] {
        // SAFETY: in bounds; the slot came from our pool, so the front end holds no lease on
        // it and will not read it until we publish a record naming it.
        unsafe {
            std::slice::from_raw_parts_mut(self.resp_arena.ptr(slot), self.resp_arena.slot_size())
        }
    }

    /// Room for another response record.
    pub fn has_room(&mut self) -> Result<bool, ChannelError> {
        Ok(self.responses.free()? > 0)
    }

    /// Publishes a response record. `Ok(false)`: the ring is full.
    pub fn send(&mut self, rec: Record) -> Result<bool, ChannelError> {
        match self.responses.try_push(rec) {
            Ok(()) => Ok(true),
            Err(PushError::Full) => Ok(false),
            Err(PushError::Corrupt(c)) => Err(c.into()),
        }
    }

    /// After `send`s: whether the front-end thread must be woken (rule 4).
    pub fn front_asleep(&self) -> bool {
        self.responses
            .consumer_sleeping(self.seg.front_sleeping(self.thread))
    }

    /// Whether request records wait (the worker's re-check of rule 4).
    pub fn has_requests(&mut self) -> Result<bool, ChannelError> {
        Ok(self.requests.has_items()?)
    }

    /// Whether a response slot is free or returned ones wait (re-check for "wants space";
    /// ring room is `has_room`).
    pub fn has_space(&mut self) -> Result<bool, ChannelError> {
        Ok(self.resp_pool.available() > 0 || self.response_returns.has_items()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::Geometry;

    fn pair() -> (FrontChannel, WorkerChannel) {
        let g = Geometry {
            threads: 1,
            ring_capacity: 4,
            slots: 2,
            slot_size: 4096,
        };
        let seg = Arc::new(Segment::create(g, 1).unwrap());
        (
            FrontChannel::new(seg.clone(), 0),
            WorkerChannel::new(seg, 0),
        )
    }

    #[test]
    fn a_request_and_its_response_cross_and_slots_come_back() {
        let (mut f, mut w) = pair();
        let s = f.take_slot().unwrap().unwrap();
        f.write_slot(s, 0, b"hello");
        assert!(f
            .send(Record::new(Kind::Request, 9).with_slot(s.get(), 5, 0))
            .unwrap());
        let (rec, slot) = w.recv().unwrap().unwrap();
        assert_eq!(rec.stream, 9);
        assert_eq!(w.request_bytes(slot.unwrap(), 5), b"hello");
        w.free_request_slot(slot.unwrap());

        let r = w.take_slot().unwrap().unwrap();
        w.slot_mut(r)[..2].copy_from_slice(b"ok");
        assert!(w
            .send(Record::new(Kind::Response, 9).with_slot(r.get(), 2, 0))
            .unwrap());
        let inc = f.recv().unwrap().unwrap();
        assert_eq!(inc.kind, Kind::Response);
        let (rs, len) = inc.slot.unwrap();
        let mut out = Vec::new();
        f.copy_out(rs, 0..len, &mut out);
        assert_eq!(out, b"ok");
        f.release(rs);
        // Both request slots are available again once the return is reclaimed.
        assert!(f.take_slot().unwrap().is_some());
        assert!(f.take_slot().unwrap().is_some());
        assert!(f.take_slot().unwrap().is_none());
    }

    /// Sequential requests reuse one slot in each direction instead of walking the whole
    /// arena, so a channel's resident shared memory follows what is in flight.
    #[test]
    fn one_request_at_a_time_reuses_the_same_slots() {
        let (mut f, mut w) = pair();
        let mut seen = (Vec::new(), Vec::new());
        for stream in 0..6 {
            let s = f.take_slot().unwrap().unwrap();
            seen.0.push(s.get());
            assert!(f
                .send(Record::new(Kind::Request, stream).with_slot(s.get(), 1, 0))
                .unwrap());
            let (_, slot) = w.recv().unwrap().unwrap();
            w.free_request_slot(slot.unwrap());
            let r = w.take_slot().unwrap().unwrap();
            seen.1.push(r.get());
            assert!(w
                .send(Record::new(Kind::Response, stream).with_slot(r.get(), 1, 0))
                .unwrap());
            let inc = f.recv().unwrap().unwrap();
            f.release(inc.slot.unwrap().0);
        }
        assert_eq!(seen.0, vec![seen.0[0]; 6], "request slots");
        assert_eq!(seen.1, vec![seen.1[0]; 6], "response slots");
    }

    #[test]
    fn worker_records_that_break_the_contract_are_named() {
        type Expect = fn(&ChannelError) -> bool;
        let cases: Vec<(Record, Expect)> = vec![
            (
                Record {
                    kind: 99,
                    ..Record::default()
                },
                |e| matches!(e, ChannelError::Kind(99)),
            ),
            (Record::new(Kind::Response, 1), |e| {
                matches!(e, ChannelError::MissingSlot(_))
            }),
            (Record::new(Kind::Continue, 1).with_slot(0, 0, 0), |e| {
                matches!(e, ChannelError::UnexpectedSlot(Kind::Continue))
            }),
            (Record::new(Kind::ResponseBody, 1).with_slot(7, 1, 0), |e| {
                matches!(e, ChannelError::SlotRange { slot: 7, .. })
            }),
            (
                Record::new(Kind::ResponseBody, 1).with_slot(0, 5000, 0),
                |e| matches!(e, ChannelError::Length { .. }),
            ),
            (Record::new(Kind::Response, 1).with_slot(0, 4, 8), |e| {
                matches!(e, ChannelError::Length { .. })
            }),
            (Record::new(Kind::Request, 1), |e| {
                matches!(e, ChannelError::Kind(1))
            }),
            (Record::new(Kind::BodyCredit, 1).with_slot(0, 0, 1), |e| {
                matches!(e, ChannelError::UnexpectedSlot(Kind::BodyCredit))
            }),
            (Record::new(Kind::BodyCredit, 1), |e| {
                matches!(e, ChannelError::Credit(0))
            }),
            (
                Record {
                    aux: 1,
                    ..Record::new(Kind::BodyCredit, 1).more(true)
                },
                |e| matches!(e, ChannelError::Credit(1)),
            ),
            (Record::new(Kind::WsAccept, 1), |e| {
                matches!(e, ChannelError::MissingSlot(Kind::WsAccept))
            }),
            (
                Record {
                    aux: 2,
                    ..Record::new(Kind::WsSend, 1)
                },
                |e| matches!(e, ChannelError::WsType(2)),
            ),
            (
                Record {
                    extra: u64::from(crate::record::WS_WINDOW) + 1,
                    ..Record::new(Kind::WsSend, 1)
                },
                |e| matches!(e, ChannelError::WsCredit(n) if *n == u64::from(crate::record::WS_WINDOW) + 1),
            ),
            (
                Record {
                    extra: 1 << 32,
                    ..Record::new(Kind::WsSend, 1)
                },
                |e| matches!(e, ChannelError::WsCredit(_)),
            ),
            (Record::new(Kind::WsClose, 1).more(true), |e| {
                matches!(e, ChannelError::WsClose)
            }),
            (Record::new(Kind::WsClose, 1).with_slot(0, 124, 1000), |e| {
                matches!(e, ChannelError::WsClose)
            }),
            (Record::new(Kind::WsConnect, 1), |e| {
                matches!(e, ChannelError::Kind(5))
            }),
        ];
        for (rec, expect) in cases {
            let (mut f, mut w) = pair();
            assert!(w.send(rec).unwrap());
            let err = f.recv().unwrap_err();
            assert!(expect(&err), "{rec:?} gave {err:?}");
        }
    }

    #[test]
    fn a_slot_named_twice_while_held_is_refused() {
        let (mut f, mut w) = pair();
        let rec = Record::new(Kind::ResponseBody, 1).with_slot(0, 1, 0);
        assert!(w.send(rec).unwrap());
        assert!(w.send(rec).unwrap());
        assert!(f.recv().unwrap().is_some());
        assert_eq!(f.recv().unwrap_err(), ChannelError::SlotBusy(0));
    }

    #[test]
    fn websocket_records_carry_their_number_not_a_head_length() {
        let (mut f, mut w) = pair();
        let slot = w.take_slot().unwrap().unwrap();
        w.slot_mut(slot)[..3].copy_from_slice(b"bye");
        let close = Record {
            aux: 4001,
            ..Record::new(Kind::WsClose, 3).with_slot(slot.get(), 3, 0)
        };
        assert!(w.send(close).unwrap());
        let text = Record {
            aux: crate::record::WS_TEXT,
            ..Record::new(Kind::WsSend, 3).more(true)
        };
        assert!(w.send(text).unwrap());
        let inc = f.recv().unwrap().unwrap();
        assert_eq!(
            (inc.kind, inc.value, inc.head_len),
            (Kind::WsClose, 4001, 0)
        );
        assert_eq!(inc.slot.map(|(_, len)| len), Some(3));
        let inc = f.recv().unwrap().unwrap();
        assert_eq!((inc.kind, inc.value, inc.more), (Kind::WsSend, 1, true));
        assert_eq!(inc.credit, 0);
        let carrying = Record {
            extra: 2,
            ..Record::new(Kind::WsSend, 3)
        };
        assert!(w.send(carrying).unwrap());
        let inc = f.recv().unwrap().unwrap();
        assert_eq!((inc.kind, inc.credit), (Kind::WsSend, 2));
    }

    #[test]
    fn a_client_close_reason_rides_in_a_slot_beside_its_code() {
        let (mut f, mut w) = pair();
        let s = f.take_slot().unwrap().unwrap();
        f.write_slot(s, 0, b"done");
        let rec = Record::new(Kind::WsDisconnect, 5).with_slot(s.get(), 4, 4000);
        assert!(f.send(rec).unwrap());
        let (rec, slot) = w.recv().unwrap().unwrap();
        assert_eq!(rec.aux, 4000);
        assert_eq!(w.request_bytes(slot.unwrap(), rec.len as usize), b"done");
        // A stream-starting record still has its head length checked.
        let s2 = f.take_slot().unwrap().unwrap();
        assert!(f
            .send(Record::new(Kind::WsConnect, 6).with_slot(s2.get(), 4, 5))
            .unwrap());
        assert!(matches!(
            w.recv().unwrap_err(),
            ChannelError::Length { head: 5, .. }
        ));
    }
}
