//! The front end's reading of what a worker writes, fed arbitrary bytes.
//!
//! A worker runs user code and may write anything anywhere in its segment (ring.rs, "Trust").
//! Here the test plays such a worker on a real memfd [`Segment`]: it publishes arbitrary
//! records into the response ring, rewrites cells, stores any value into the ring counters,
//! scribbles over the rings and the response arena, and returns arbitrary slot indices
//! through the request-return ring. After each step the front end's [`FrontChannel`] reads,
//! and:
//!
//! - it never panics, and each read is one bounded call (no loop that a worker can stretch);
//! - every `Ok(Some(Incoming))` is in bounds: a response kind, slot index below `slots`,
//!   `head_len <= len <= slot_size`, a slot the front end does not hold already;
//! - its answer equals the contract's: a model of what the front end must see (the ring
//!   rules 1-5 and the checks `FrontChannel::recv` documents) predicts every result, so an
//!   out-of-contract record is the exact typed `ChannelError`, never a silent accept.
//!
//! What the contract leaves to the worker is passed through, not judged: the stream id (the
//! dispatcher matches it against its streams), flag bits other than `MORE`, the reserved
//! fields, and `len`/`aux` of a record without a slot (nothing is read for them).
//!
//! The model ([`ResponsesModel::validate`], [`ConsumerModel`]) writes the contract down a
//! second time, from `record.rs` and `ring.rs` rather than from the code: a new record kind
//! or a new check in `FrontChannel::recv` must be added there as well, or these tests fail.
//!
//! A last test lets a forked process scribble over the response ring and arena *while* the
//! front end reads, so that a field read twice (checked once, used later) would show.
//!
//! `PROPTEST_CASES=10000 cargo test -p uringapi-protocol --test channel_untrusted` runs a
//! longer search than the default 256 cases.
#![cfg(not(loom))]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use proptest::prelude::*;
use uringapi_protocol::arena::{BadReturn, SlotIndex};
use uringapi_protocol::layout::ChannelOffsets;
use uringapi_protocol::record::{MORE, NO_SLOT, WS_WINDOW};
use uringapi_protocol::region::Region;
use uringapi_protocol::ring::{ring_bytes, Corrupt, RingHeader};
use uringapi_protocol::{ChannelError, FrontChannel, Geometry, Incoming, Kind, Record, Segment};

const SLOTS: u32 = 4;
const SLOT_SIZE: u32 = 4096;
const CAPACITY: u64 = 8;

const GEOMETRY: Geometry = Geometry {
    threads: 1,
    ring_capacity: CAPACITY as u32,
    slots: SLOTS,
    slot_size: SLOT_SIZE,
};

/// Cells in a slot-return ring for `GEOMETRY` (`Geometry::free_capacity`).
const RETURN_CAPACITY: u64 = SLOTS.next_power_of_two() as u64;

// ---- the misbehaving worker: raw writes into the segment ----

/// One of the rings the worker writes into, by its place in the segment.
#[derive(Debug, Clone, Copy)]
enum RingAt {
    /// Worker → front end: response records.
    Responses,
    /// Worker → front end: request slots handed back.
    RequestReturns,
    /// Front end → worker: response slots handed back (the worker consumes it and writes
    /// its `head`; the front end's `release` reads that).
    ResponseReturns,
}

/// A worker that writes into the segment without going through `WorkerChannel`.
struct Scribbler {
    seg: Arc<Segment>,
    at: ChannelOffsets,
}

impl Scribbler {
    fn new(seg: Arc<Segment>) -> Self {
        let at = seg.geometry().channel(0);
        Self { seg, at }
    }

    fn ring(&self, ring: RingAt) -> (usize, usize) {
        match ring {
            RingAt::Responses => (self.at.resp_ring, ring_bytes::<Record>(CAPACITY as usize)),
            RingAt::RequestReturns => (
                self.at.req_free,
                ring_bytes::<u32>(RETURN_CAPACITY as usize),
            ),
            RingAt::ResponseReturns => (
                self.at.resp_free,
                ring_bytes::<u32>(RETURN_CAPACITY as usize),
            ),
        }
    }

    /// The ring's `head` (first cache line) or `tail` (second) counter.
    fn counter(&self, ring: RingAt, tail: bool) -> &AtomicU64 {
        let offset = self.ring(ring).0 + if tail { 64 } else { 0 };
        // SAFETY: the ring header lies inside the mapping at this offset (layout), 64-byte
        // aligned, and holds an `AtomicU64` there; the `Arc<Segment>` keeps it mapped.
        unsafe { &*Region::base(&*self.seg).add(offset).cast::<AtomicU64>() }
    }

    fn tail(&self, ring: RingAt) -> u64 {
        self.counter(ring, true).load(Ordering::Acquire)
    }

    fn set_counter(&self, ring: RingAt, tail: bool, value: u64) {
        self.counter(ring, tail).store(value, Ordering::Release);
    }

    /// Address of the cell for item `index`, for cells of `size` bytes.
    fn cell(&self, ring: RingAt, index: u64, size: usize, capacity: u64) -> *mut u8 {
        let offset = self.ring(ring).0
            + std::mem::size_of::<RingHeader>()
            + (index % capacity) as usize * size;
        // SAFETY: `index % capacity` names a cell inside the ring (layout).
        unsafe { Region::base(&*self.seg).add(offset) }
    }

    fn write_record(&self, index: u64, rec: Record) {
        let cell = self.cell(
            RingAt::Responses,
            index,
            std::mem::size_of::<Record>(),
            CAPACITY,
        );
        // SAFETY: an aligned cell of the response ring; nothing reads it during the write
        // (single-threaded test).
        unsafe { cell.cast::<Record>().write_volatile(rec) }
    }

    fn read_record(&self, index: u64) -> Record {
        let cell = self.cell(
            RingAt::Responses,
            index,
            std::mem::size_of::<Record>(),
            CAPACITY,
        );
        // SAFETY: as for `write_record`.
        unsafe { cell.cast::<Record>().read_volatile() }
    }

    fn write_return(&self, index: u64, slot: u32) {
        let cell = self.cell(RingAt::RequestReturns, index, 4, RETURN_CAPACITY);
        // SAFETY: an aligned cell of the request-return ring; single-threaded.
        unsafe { cell.cast::<u32>().write_volatile(slot) }
    }

    fn read_return(&self, index: u64) -> u32 {
        let cell = self.cell(RingAt::RequestReturns, index, 4, RETURN_CAPACITY);
        // SAFETY: as for `write_return`.
        unsafe { cell.cast::<u32>().read_volatile() }
    }

    /// What a correct worker does: write the cell at the tail, then move the tail on. With a
    /// scribbled tail it writes wherever that tail points.
    fn publish(&self, rec: Record) {
        let tail = self.tail(RingAt::Responses);
        self.write_record(tail, rec);
        self.set_counter(RingAt::Responses, true, tail.wrapping_add(1));
    }

    fn publish_return(&self, slot: u32) {
        let tail = self.tail(RingAt::RequestReturns);
        self.write_return(tail, slot);
        self.set_counter(RingAt::RequestReturns, true, tail.wrapping_add(1));
    }

    /// Arbitrary bytes over a ring, header included, clipped to the ring's extent.
    fn scribble_ring(&self, ring: RingAt, offset: usize, bytes: &[u8]) {
        let (start, len) = self.ring(ring);
        self.scribble(start, len, offset, bytes);
    }

    /// Arbitrary bytes over the response arena (the slots the front end sends from).
    fn scribble_arena(&self, offset: usize, bytes: &[u8]) {
        let len = (SLOTS * SLOT_SIZE) as usize;
        self.scribble(self.at.resp_arena, len, offset, bytes);
    }

    fn scribble(&self, start: usize, len: usize, offset: usize, bytes: &[u8]) {
        let offset = offset % len;
        let n = bytes.len().min(len - offset);
        // SAFETY: `[start + offset, start + offset + n)` lies inside the part (clipped above),
        // which lies inside the mapping; these parts hold only atomics, cells and raw bytes,
        // which tolerate any bit pattern; single-threaded, so nothing reads meanwhile.
        unsafe {
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                Region::base(&*self.seg).add(start + offset),
                n,
            )
        }
    }
}

fn fixture() -> (FrontChannel, Scribbler) {
    let seg = Arc::new(Segment::create(GEOMETRY, 1).expect("create segment"));
    (FrontChannel::new(seg.clone(), 0), Scribbler::new(seg))
}

// ---- the contract, as a model ----

/// What the front end's consumer of a ring must do (ring.rs rules 2 and 5): keep its own
/// `head`, reload the peer's `tail` only once it has caught up with the last one it saw,
/// and refuse a `tail` more than `capacity` ahead of (or behind) its `head`.
#[derive(Debug)]
struct ConsumerModel {
    head: u64,
    tail_seen: u64,
    capacity: u64,
}

impl ConsumerModel {
    fn new(capacity: u64) -> Self {
        Self {
            head: 0,
            tail_seen: 0,
            capacity,
        }
    }

    /// The index of the next item to take, if any; `tail` reads the peer's counter now.
    fn pop(&mut self, tail: impl FnOnce() -> u64) -> Result<Option<u64>, Corrupt> {
        if self.head == self.tail_seen {
            let tail = tail();
            if tail.wrapping_sub(self.head) > self.capacity {
                return Err(Corrupt {
                    head: self.head,
                    tail,
                    capacity: self.capacity,
                });
            }
            self.tail_seen = tail;
            if self.head == tail {
                return Ok(None);
            }
        }
        self.head += 1;
        Ok(Some(self.head - 1))
    }
}

/// An `Incoming` as plain values (a `SlotIndex` cannot be made outside the crate).
type Seen = (Kind, u64, bool, Option<(u32, usize)>, usize);

fn seen(inc: &Incoming) -> Seen {
    (
        inc.kind,
        inc.stream,
        inc.more,
        inc.slot.map(|(s, len)| (s.get(), len)),
        inc.head_len,
    )
}

/// The front end's side of the response ring, as the contract has it.
#[derive(Debug)]
struct ResponsesModel {
    ring: ConsumerModel,
    held: [bool; SLOTS as usize],
}

impl ResponsesModel {
    fn new() -> Self {
        Self {
            ring: ConsumerModel::new(CAPACITY),
            held: [false; SLOTS as usize],
        }
    }

    /// What `FrontChannel::recv` must return, given what the worker left in the segment.
    fn recv(&mut self, w: &Scribbler) -> Result<Option<Seen>, ChannelError> {
        let Some(index) = self.ring.pop(|| w.tail(RingAt::Responses))? else {
            return Ok(None);
        };
        self.validate(w.read_record(index)).map(Some)
    }

    /// The checks `FrontChannel::recv` documents, in its order.
    fn validate(&mut self, rec: Record) -> Result<Seen, ChannelError> {
        let kind = match rec.kind {
            16 => Kind::Response,
            17 => Kind::ResponseBody,
            18 => Kind::Abort,
            19 => Kind::Continue,
            20 => Kind::PathSend,
            21 => Kind::WsAccept,
            22 => Kind::WsSend,
            23 => Kind::WsClose,
            28 => Kind::BodyCredit,
            other => return Err(ChannelError::Kind(other)),
        };
        if kind == Kind::PathSend && rec.flags & MORE != 0 {
            return Err(ChannelError::PathSendMore);
        }
        if matches!(kind, Kind::Continue | Kind::BodyCredit) && rec.slot != NO_SLOT {
            return Err(ChannelError::UnexpectedSlot(kind));
        }
        if kind == Kind::BodyCredit && (rec.aux == 0 || rec.flags & MORE != 0) {
            return Err(ChannelError::Credit(rec.aux));
        }
        let more = rec.flags & MORE != 0;
        if kind == Kind::WsSend && rec.aux > 1 {
            return Err(ChannelError::WsType(rec.aux));
        }
        // The client-message credit a WsSend carries: at most a window.
        if kind == Kind::WsSend && rec.extra > u64::from(WS_WINDOW) {
            return Err(ChannelError::WsCredit(rec.extra));
        }
        if kind == Kind::WsClose && (more || (rec.slot != NO_SLOT && rec.len > 123)) {
            return Err(ChannelError::WsClose);
        }
        let has_head = matches!(kind, Kind::Response | Kind::PathSend | Kind::WsAccept);
        // WsSend and WsClose carry a number in `aux`, not a head length.
        let head = if matches!(kind, Kind::WsSend | Kind::WsClose) {
            0
        } else {
            rec.aux
        };
        if rec.slot == NO_SLOT {
            if has_head {
                return Err(ChannelError::MissingSlot(kind));
            }
            return Ok((kind, rec.stream, more, None, 0));
        }
        if rec.slot >= SLOTS {
            return Err(ChannelError::SlotRange {
                slot: rec.slot,
                slots: SLOTS,
            });
        }
        if rec.len > SLOT_SIZE || head > rec.len {
            return Err(ChannelError::Length {
                len: rec.len,
                head,
                slot_size: SLOT_SIZE as usize,
            });
        }
        let held = &mut self.held[rec.slot as usize];
        if *held {
            return Err(ChannelError::SlotBusy(rec.slot));
        }
        *held = true;
        let head_len = if has_head { head } else { 0 };
        Ok((
            kind,
            rec.stream,
            more,
            Some((rec.slot, rec.len as usize)),
            head_len as usize,
        ))
    }
}

/// Checks that hold for every accepted record whatever the model says: the front end may
/// build slices from these values.
fn assert_in_bounds(f: &FrontChannel, inc: &Incoming, held: &[SlotIndex]) {
    let (slotted, slotless) = match inc.kind {
        Kind::Response | Kind::PathSend | Kind::WsAccept => (true, false),
        Kind::ResponseBody | Kind::Abort | Kind::WsSend | Kind::WsClose => (true, true),
        Kind::Continue | Kind::BodyCredit => (false, true),
        _ => panic!("accepted a non-response kind: {inc:?}"),
    };
    if inc.kind == Kind::PathSend {
        assert!(!inc.more, "a file that does not end its response: {inc:?}");
    }
    match inc.slot {
        Some((slot, len)) => {
            assert!(slotted, "a slot on a kind that has none: {inc:?}");
            assert!(slot.get() < SLOTS, "slot out of range: {inc:?}");
            assert!(
                inc.head_len <= len && len <= SLOT_SIZE as usize,
                "lengths out of the slot: {inc:?}"
            );
            assert!(!held.contains(&slot), "slot handed out twice: {inc:?}");
            // The bytes can be taken without touching anything outside the slot.
            let mut out = Vec::new();
            f.copy_out(slot, 0..len, &mut out);
            assert_eq!(out.len(), len);
        }
        None => {
            assert!(slotless, "no slot on a kind that needs one: {inc:?}");
            assert_eq!(inc.head_len, 0, "a head length without a slot: {inc:?}");
        }
    }
}

// ---- arbitrary worker behaviour ----

fn arb_kind() -> impl Strategy<Value = u8> {
    prop_oneof![
        6 => prop::sample::select(vec![16u8, 17, 18, 19, 20]),
        1 => prop::sample::select(vec![1u8, 2, 3, 4]),
        1 => any::<u8>(),
    ]
}

/// Mostly plausible slot indices, and the edges around them.
fn arb_slot() -> impl Strategy<Value = u32> {
    prop_oneof![
        6 => 0..SLOTS + 2,
        2 => Just(NO_SLOT),
        1 => any::<u32>(),
    ]
}

fn arb_len() -> impl Strategy<Value = u32> {
    prop_oneof![
        3 => 0u32..64,
        3 => 0..=SLOT_SIZE,
        1 => SLOT_SIZE - 1..=SLOT_SIZE + 1,
        1 => any::<u32>(),
    ]
}

fn arb_record() -> impl Strategy<Value = Record> {
    (
        arb_kind(),
        prop_oneof![3 => 0u8..2, 1 => any::<u8>()],
        any::<u16>(),
        arb_slot(),
        arb_len(),
        arb_len(),
        any::<u64>(),
        any::<u64>(),
    )
        .prop_map(
            |(kind, flags, window, slot, len, aux, stream, extra)| Record {
                kind,
                flags,
                window,
                slot,
                len,
                aux,
                stream,
                extra,
            },
        )
}

/// A counter value: near the front end's own position (where off-by-ones hide) or any.
#[derive(Debug, Clone, Copy)]
enum Counter {
    /// The front end's `head` plus this (wrapping).
    Near(i64),
    Any(u64),
}

impl Counter {
    fn value(self, head: u64) -> u64 {
        match self {
            Counter::Near(d) => head.wrapping_add_signed(d),
            Counter::Any(v) => v,
        }
    }
}

fn arb_counter(capacity: u64) -> impl Strategy<Value = Counter> {
    let reach = capacity as i64 + 2;
    prop_oneof![
        4 => (-reach..=reach).prop_map(Counter::Near),
        1 => any::<u64>().prop_map(Counter::Any),
    ]
}

fn arb_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 1..24)
}

/// One step of the response-ring scenario.
#[derive(Debug, Clone)]
enum Step {
    /// The worker publishes a record (cell at its tail, then tail + 1).
    Publish(Record),
    /// The worker rewrites a cell without moving the tail: maybe one already published.
    Rewrite { ahead: u8, rec: Record },
    /// The worker stores any value into the response ring's `tail`.
    SetTail(Counter),
    /// The worker stores into the front end's own `head`, which the front end never trusts.
    SetHead(u64),
    /// Arbitrary bytes over the response ring, header included.
    ScribbleRing { offset: usize, bytes: Vec<u8> },
    /// Arbitrary bytes over the response-return ring, which `release` pushes into.
    ScribbleReturns { offset: usize, bytes: Vec<u8> },
    /// Arbitrary bytes over the response arena.
    ScribbleArena { offset: usize, bytes: Vec<u8> },
    /// The front end reads the next response record.
    Recv,
    /// The front end is done with one of the slots it holds.
    Release(usize),
}

fn arb_step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => arb_record().prop_map(Step::Publish),
        1 => (any::<u8>(), arb_record()).prop_map(|(ahead, rec)| Step::Rewrite { ahead, rec }),
        1 => arb_counter(CAPACITY).prop_map(Step::SetTail),
        1 => any::<u64>().prop_map(Step::SetHead),
        1 => (any::<usize>(), arb_bytes())
            .prop_map(|(offset, bytes)| Step::ScribbleRing { offset, bytes }),
        1 => (any::<usize>(), arb_bytes())
            .prop_map(|(offset, bytes)| Step::ScribbleReturns { offset, bytes }),
        1 => (any::<usize>(), arb_bytes())
            .prop_map(|(offset, bytes)| Step::ScribbleArena { offset, bytes }),
        7 => Just(Step::Recv),
        2 => any::<usize>().prop_map(Step::Release),
    ]
}

/// Runs `steps` against a fresh segment; panics on the first departure from the contract.
fn run_responses(steps: &[Step]) {
    let (mut f, w) = fixture();
    let mut model = ResponsesModel::new();
    let mut held: Vec<SlotIndex> = Vec::new();
    for (i, step) in steps.iter().enumerate() {
        match step {
            Step::Publish(rec) => w.publish(*rec),
            Step::Rewrite { ahead, rec } => {
                w.write_record(model.ring.head.wrapping_add(u64::from(*ahead)), *rec)
            }
            Step::SetTail(c) => w.set_counter(RingAt::Responses, true, c.value(model.ring.head)),
            Step::SetHead(v) => w.set_counter(RingAt::Responses, false, *v),
            Step::ScribbleRing { offset, bytes } => {
                w.scribble_ring(RingAt::Responses, *offset, bytes)
            }
            Step::ScribbleReturns { offset, bytes } => {
                w.scribble_ring(RingAt::ResponseReturns, *offset, bytes)
            }
            Step::ScribbleArena { offset, bytes } => w.scribble_arena(*offset, bytes),
            Step::Recv => {
                let expected = model.recv(&w);
                let actual = f.recv();
                if let Ok(Some(inc)) = &actual {
                    assert_in_bounds(&f, inc, &held);
                }
                let got = actual.map(|inc| {
                    inc.map(|inc| {
                        if let Some((slot, _)) = inc.slot {
                            held.push(slot);
                        }
                        seen(&inc)
                    })
                });
                assert_eq!(got, expected, "step {i}: {step:?}");
            }
            Step::Release(pick) => {
                if !held.is_empty() {
                    let slot = held.swap_remove(pick % held.len());
                    model.held[slot.get() as usize] = false;
                    f.release(slot);
                }
            }
        }
    }
}

/// One step of the request-return scenario.
#[derive(Debug, Clone)]
enum ReturnStep {
    /// The front end takes a request slot (reclaiming every waiting return first).
    Take,
    /// The worker returns a slot the front end has out (maybe one it returned already).
    ReturnLent(usize),
    /// The worker returns any index.
    ReturnAny(u32),
    /// The worker stores any value into the return ring's `tail`.
    SetTail(Counter),
    /// Arbitrary bytes over the return ring, header included.
    Scribble { offset: usize, bytes: Vec<u8> },
}

fn arb_return_step() -> impl Strategy<Value = ReturnStep> {
    prop_oneof![
        5 => Just(ReturnStep::Take),
        5 => any::<usize>().prop_map(ReturnStep::ReturnLent),
        1 => prop_oneof![0..SLOTS + 2, any::<u32>()].prop_map(ReturnStep::ReturnAny),
        1 => arb_counter(RETURN_CAPACITY).prop_map(ReturnStep::SetTail),
        1 => (any::<usize>(), arb_bytes())
            .prop_map(|(offset, bytes)| ReturnStep::Scribble { offset, bytes }),
    ]
}

/// Runs `steps`; the front end must never lend a request slot that is still out, and must
/// name every return of a slot it has not lent.
fn run_returns(steps: &[ReturnStep]) {
    let (mut f, w) = fixture();
    let mut ring = ConsumerModel::new(RETURN_CAPACITY);
    let mut lent = [false; SLOTS as usize];
    for (i, step) in steps.iter().enumerate() {
        match step {
            ReturnStep::Take => {
                let expected = (|| {
                    // Every waiting return is reclaimed before each take.
                    while let Some(index) = ring.pop(|| w.tail(RingAt::RequestReturns))? {
                        let raw = w.read_return(index);
                        match lent.get_mut(raw as usize) {
                            Some(l @ true) => *l = false,
                            _ => return Err(ChannelError::Return(BadReturn(raw))),
                        }
                    }
                    Ok(lent.iter().any(|&l| !l))
                })();
                match (f.take_slot(), expected) {
                    (Ok(Some(slot)), Ok(true)) => {
                        let l = lent
                            .get_mut(slot.get() as usize)
                            .unwrap_or_else(|| panic!("step {i}: slot {slot:?} out of range"));
                        assert!(!*l, "step {i}: slot {slot:?} lent twice");
                        *l = true;
                    }
                    (Ok(None), Ok(false)) => {}
                    (Err(actual), Err(expected)) if actual == expected => {}
                    (actual, expected) => panic!(
                        "step {i}: take_slot gave {actual:?}, the contract says {expected:?}"
                    ),
                }
            }
            ReturnStep::ReturnLent(pick) => {
                let out: Vec<u32> = (0..SLOTS).filter(|&s| lent[s as usize]).collect();
                if !out.is_empty() {
                    w.publish_return(out[pick % out.len()]);
                }
            }
            ReturnStep::ReturnAny(raw) => w.publish_return(*raw),
            ReturnStep::SetTail(c) => {
                w.set_counter(RingAt::RequestReturns, true, c.value(ring.head))
            }
            ReturnStep::Scribble { offset, bytes } => {
                w.scribble_ring(RingAt::RequestReturns, *offset, bytes)
            }
        }
    }
}

proptest! {
    #[test]
    fn the_front_end_reads_any_response_ring_within_the_contract(
        steps in prop::collection::vec(arb_step(), 0..80)
    ) {
        run_responses(&steps);
    }

    #[test]
    fn the_front_end_reclaims_any_request_returns_within_the_contract(
        steps in prop::collection::vec(arb_return_step(), 0..80)
    ) {
        run_returns(&steps);
    }
}

// ---- named cases ----

fn body(slot: u32, len: u32) -> Record {
    Record::new(Kind::ResponseBody, 1).with_slot(slot, len, 0)
}

#[test]
fn a_tail_that_jumps_past_a_full_ring_is_corrupt_and_stays_so() {
    let (mut f, w) = fixture();
    w.set_counter(RingAt::Responses, true, CAPACITY + 1);
    let corrupt = ChannelError::Ring(Corrupt {
        head: 0,
        tail: CAPACITY + 1,
        capacity: CAPACITY,
    });
    assert_eq!(f.recv(), Err(corrupt.clone()));
    assert_eq!(f.recv(), Err(corrupt));
    // Exactly full is not corrupt.
    let (mut f, w) = fixture();
    for i in 0..CAPACITY {
        w.write_record(i, Record::new(Kind::Abort, i));
    }
    w.set_counter(RingAt::Responses, true, CAPACITY);
    for i in 0..CAPACITY {
        assert_eq!(f.recv().unwrap().map(|inc| inc.stream), Some(i));
    }
    assert_eq!(f.recv(), Ok(None));
}

#[test]
fn a_tail_that_moves_backwards_is_corrupt() {
    let (mut f, w) = fixture();
    w.publish(body(0, 1));
    w.publish(Record::new(Kind::Abort, 2));
    assert!(f.recv().unwrap().is_some());
    assert!(f.recv().unwrap().is_some());
    w.set_counter(RingAt::Responses, true, 1);
    assert_eq!(
        f.recv(),
        Err(ChannelError::Ring(Corrupt {
            head: 2,
            tail: 1,
            capacity: CAPACITY,
        }))
    );
}

#[test]
fn the_front_ends_own_counter_in_shared_memory_is_not_trusted() {
    let (mut f, w) = fixture();
    w.publish(body(0, 3));
    w.set_counter(RingAt::Responses, false, 1_000_000);
    let inc = f.recv().unwrap().unwrap();
    assert_eq!(inc.slot.map(|(s, len)| (s.get(), len)), Some((0, 3)));
    assert_eq!(f.recv(), Ok(None));
}

#[test]
fn lengths_past_the_slot_are_refused() {
    for (len, aux) in [(SLOT_SIZE + 1, 0), (u32::MAX, 0), (10, 11), (0, u32::MAX)] {
        let (mut f, w) = fixture();
        w.publish(Record::new(Kind::Response, 1).with_slot(0, len, aux));
        assert_eq!(
            f.recv(),
            Err(ChannelError::Length {
                len,
                head: aux,
                slot_size: SLOT_SIZE as usize,
            }),
            "len {len}, head {aux}"
        );
    }
    // The whole slot is fine.
    let (mut f, w) = fixture();
    w.publish(Record::new(Kind::Response, 1).with_slot(0, SLOT_SIZE, SLOT_SIZE));
    let inc = f.recv().unwrap().unwrap();
    assert_eq!((inc.head_len, inc.slot.unwrap().1), (4096, 4096));
}

#[test]
fn a_slot_named_again_before_release_is_busy_and_free_after() {
    let (mut f, w) = fixture();
    w.publish(body(3, 1));
    w.publish(body(3, 2));
    let (slot, _) = f.recv().unwrap().unwrap().slot.unwrap();
    assert_eq!(f.recv(), Err(ChannelError::SlotBusy(3)));
    f.release(slot);
    w.publish(body(3, 2));
    assert_eq!(f.recv().unwrap().unwrap().slot.map(|(s, _)| s), Some(slot));
}

#[test]
fn a_slot_index_past_the_arena_is_refused() {
    for slot in [SLOTS, NO_SLOT - 1] {
        let (mut f, w) = fixture();
        w.publish(body(slot, 1));
        assert_eq!(
            f.recv(),
            Err(ChannelError::SlotRange { slot, slots: SLOTS })
        );
    }
}

#[test]
fn a_cell_rewritten_before_the_read_is_read_once_as_rewritten() {
    let (mut f, w) = fixture();
    w.publish(body(0, 1));
    w.write_record(0, Record::new(Kind::Request, 1).with_slot(0, 1, 0));
    assert_eq!(f.recv(), Err(ChannelError::Kind(Kind::Request as u8)));
}

#[test]
fn a_request_slot_returned_twice_is_named() {
    let (mut f, w) = fixture();
    let taken: Vec<u32> = (0..SLOTS)
        .map(|_| f.take_slot().unwrap().unwrap().get())
        .collect();
    assert_eq!(f.take_slot(), Ok(None));
    w.publish_return(taken[0]);
    w.publish_return(taken[0]);
    assert_eq!(
        f.take_slot(),
        Err(ChannelError::Return(BadReturn(taken[0])))
    );
}

#[test]
fn a_request_slot_never_lent_cannot_be_returned() {
    let (mut f, w) = fixture();
    let taken: Vec<u32> = (0..SLOTS)
        .map(|_| f.take_slot().unwrap().unwrap().get())
        .collect();
    w.publish_return(SLOTS);
    assert_eq!(f.take_slot(), Err(ChannelError::Return(BadReturn(SLOTS))));
    // A legitimate return after the bad one is still honoured, and only that slot comes back.
    w.publish_return(taken[1]);
    assert_eq!(f.take_slot().unwrap().map(|s| s.get()), Some(taken[1]));
}

// ---- a worker that scribbles while the front end reads ----

/// SplitMix64 (Steele, Lea, Flood 2014): a few lines, no allocation, fine after `fork`.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The child's side: for as long as it lives, publish mostly plausible records, rewrite
/// cells the front end may be reading, move the tail around the front end's position and
/// scribble over the ring and the arena. Writes only; never allocates or locks.
fn scribble_forever(w: &Scribbler) -> ! {
    let mut rng = Rng(0x5eed);
    loop {
        let front_head = w.counter(RingAt::Responses, false).load(Ordering::Acquire);
        let rec = Record {
            kind: [16, 17, 18, 19, 20, 1, rng.next() as u8][rng.below(7) as usize],
            flags: rng.below(4) as u8,
            window: 0,
            slot: [rng.below(u64::from(SLOTS) + 1) as u32, NO_SLOT][rng.below(2) as usize],
            len: [rng.below(64), rng.below(u64::from(SLOT_SIZE) + 2)][rng.below(2) as usize] as u32,
            aux: rng.below(80) as u32,
            stream: rng.next(),
            extra: rng.next(),
        };
        match rng.below(16) {
            // Like a worker that respects a full ring, mostly; the counter moves below.
            0..=7 if w.tail(RingAt::Responses).wrapping_sub(front_head) < CAPACITY => {
                w.publish(rec)
            }
            0..=7 => {}
            8..=10 => w.write_record(front_head.wrapping_add(rng.below(CAPACITY)), rec),
            11..=13 => w.set_counter(
                RingAt::Responses,
                true,
                front_head.wrapping_add(rng.below(CAPACITY + 2)),
            ),
            14 => {
                // Cells only: scribbled counters are the sequential property's business, and
                // a scribbled `head` would hide from this writer where the front end reads.
                let bytes = rng.next().to_le_bytes();
                let cells = std::mem::size_of::<RingHeader>();
                let offset = cells + rng.below(CAPACITY * 32) as usize;
                w.scribble_ring(RingAt::Responses, offset, &bytes);
            }
            _ => {
                let bytes = rng.next().to_le_bytes();
                w.scribble_arena(rng.next() as usize, &bytes);
            }
        }
    }
}

#[test]
fn a_worker_scribbling_from_another_process_never_moves_the_front_end_out_of_bounds() {
    let (mut f, w) = fixture();
    // SAFETY: fork has no preconditions. The child only writes into the shared mapping it
    // inherited (no locks, no allocation, no unwinding into the test harness: it loops until
    // killed), and dies with the test process through PDEATHSIG.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        // SAFETY: plain syscalls; an orphan exits at once.
        unsafe {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0
                || libc::getppid() == 1
            {
                libc::_exit(1);
            }
        }
        scribble_forever(&w);
    }
    struct Kill(libc::pid_t);
    impl Drop for Kill {
        fn drop(&mut self) {
            // SAFETY: kills and reaps our own child, once.
            unsafe {
                libc::kill(self.0, libc::SIGKILL);
                libc::waitpid(self.0, std::ptr::null_mut(), 0);
            }
        }
    }
    let _child = Kill(pid);

    // Read until both accepted and refused records were seen many times over; the bounds
    // only keep a descheduled child from stretching the test.
    let (mut accepted, mut refused) = (0u64, 0u64);
    let mut held: Vec<SlotIndex> = Vec::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut reads = 0u64;
    while (accepted < 10_000 || refused < 10_000)
        && reads < 10_000_000
        && std::time::Instant::now() < deadline
    {
        reads += 1;
        match f.recv() {
            Ok(Some(inc)) => {
                assert_in_bounds(&f, &inc, &held);
                accepted += 1;
                if let Some((slot, _)) = inc.slot {
                    held.push(slot);
                }
            }
            Ok(None) => {}
            // Every refusal is one of the typed contract breaches, by construction of the
            // return type; a real front end would now drop the worker.
            Err(_) => refused += 1,
        }
        if held.len() == SLOTS as usize {
            for slot in held.drain(..) {
                f.release(slot);
            }
        }
    }
    eprintln!("{accepted} accepted, {refused} refused in {reads} reads");
    assert!(
        accepted > 0 && refused > 0,
        "the scribbling worker was not seen at work: {accepted} accepted, {refused} refused \
         in {reads} reads"
    );
}
