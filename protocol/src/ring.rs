//! Single-producer / single-consumer rings in shared memory.
//!
//! # The protocol
//!
//! ## Layout
//! A ring is a [`RingHeader`] followed by `capacity` cells of `T` (`capacity` a power of two).
//! The header holds two monotonically increasing 64-bit counters, each on its own 64-byte
//! cache line: `head` (cells consumed so far, written only by the consumer) and `tail`
//! (cells published so far, written only by the producer). Cell `i % capacity` holds the
//! `i`-th item. Counters never wrap in practice (2^64 items).
//!
//! ## Ownership
//! - Cells `[head, tail)` belong to the consumer; cells `[tail, head + capacity)` to the
//!   producer. Nobody else writes either.
//! - `tail` is stored only by the producer, `head` only by the consumer. Each side keeps its
//!   own counter in a local variable and never reads it back from shared memory.
//!
//! ## Ordering rules (cited in the code as `SYNC: rule N`)
//! 1. The producer writes cell `tail % capacity`, then stores `tail + 1` with `Release`.
//! 2. The consumer loads `tail` with `Acquire` (pairs with rule 1), so every cell below it is
//!    fully written; it copies a cell out, then stores `head + 1` with `Release`.
//! 3. The producer loads `head` with `Acquire` (pairs with rule 2) before it reuses a cell, so
//!    the consumer's copy has finished before the cell is overwritten.
//! 4. Sleeping (the doorbell, see `doorbell.rs`): a consumer about to block stores its
//!    sleeping flag = 1, issues `fence(SeqCst)`, then reloads `tail`. A producer stores `tail`
//!    (rule 1), issues `fence(SeqCst)`, then loads the flag. The two fences are totally
//!    ordered, so either the producer sees flag = 1 and rings the eventfd, or the consumer's
//!    reload sees the new `tail` and does not block. No wake-up is lost; a spurious one costs a
//!    read of the eventfd. Producers ring only when the flag is set, so a consumer that never
//!    sleeps (a busy system) costs no syscalls at all. The flag also numbers the consumer's
//!    sleeps, and a producer rings once per sleep: records it publishes before the consumer
//!    is up again are covered by that ring (the woken consumer drains before it sleeps
//!    again, and its next sleep re-checks under this same rule). So a consumer may block
//!    only right after its own announce-and-re-check: one that was woken and still has to
//!    wait must announce again (a new number) before it blocks again.
//!    The same handshake, on a second flag ("wants space"), covers a producer that blocks
//!    for room: it sets the flag, fences, re-checks the consumer's `head` (or the
//!    slot-return ring); a consumer that popped anything fences and loads the flag, and
//!    rings when it is set.
//!
//! ## Trust
//! The worker runs user code and may write anything anywhere in its segment. Therefore:
//! 5. Each load of the peer's counter is validated: `0 <= tail - head <= capacity` (wrapping
//!    arithmetic, so a counter that moves backwards shows up as a huge distance). A violation
//!    is [`Corrupt`], never a panic or an out-of-bounds access. Cell contents are copied out
//!    once (`T: Copy`, volatile read) and validated by the caller before use.
//!
//! ## Crash and reset
//! 6. A ring is never repaired. When a worker dies or breaks rule 5 the front end drops every
//!    handle onto its segment, fails the requests in flight on it, and the replacement worker
//!    gets a freshly created and zeroed segment with the next generation number. Nothing a
//!    dead peer held can block the front end: there are no locks, and no operation waits for
//!    the peer except an explicit sleep on an eventfd, which the supervisor can always ring.
//!
//! ## Request body window (records, not a shared counter)
//! 7. The front end sends at most `BODY_WINDOW` (4) `Body` records of one request that the
//!    worker has not returned; the worker returns them with a `BodyCredit` record (kind 28,
//!    no slot, `aux` = records returned, ≥ 1) as the app's `receive()` takes them. With the
//!    window full the connection does not read its socket, so TCP pushes back on the client
//!    and an upload costs at most `BODY_WINDOW` slots of body in the worker, whatever its
//!    size. The credit is untrusted (rule 5): the front end checks it against its own count
//!    of records sent and treats more as a contract violation; credit for a finished stream
//!    is dropped.
//!
//!    Why a record and not a per-stream counter in shared memory: a record needs no new
//!    shared state (no stream table to size, index, validate and reset), it arrives in order
//!    with the stream's response records (so "the response started while the body was held
//!    back" is seen in one place), and it rides the existing wake-ups (rule 4): a counter
//!    would need its own doorbell handshake for the blocked connection. It costs one
//!    32-byte record per slot-sized body piece (64 KiB by default), which is noise beside
//!    copying the piece. The same record, keyed by stream, is meant for HTTP/2 stream
//!    windows (a returned credit becomes a WINDOW_UPDATE there).
//!
//!    WebSockets use the window both ways, `WS_WINDOW` (8) records each. Client messages:
//!    `WsMessage` records count like `Body` ones and come back in `BodyCredit` (the worker
//!    returns a piece of a long message as it copies it into the message being assembled,
//!    the last piece when the app's `receive()` takes the message); with the window full the
//!    front end does not read that socket. App messages: the worker sends at most
//!    `WS_WINDOW` `WsSend` records the front end has not acknowledged, and the front end
//!    acknowledges them with `SendCredit` (kind 8, `aux` ≥ 1) once their bytes are written
//!    to the socket, so a client that does not read holds the app's `send()` instead of
//!    slots and memory. Both credits are checked like the body credit: a worker returning
//!    more than it was sent breaks the contract; the worker trusts the front end's.
//!    A credit may also ride on a record going the same way (`extra` of `WsMessage` for
//!    the send window, of `WsSend` for the message window), and each side holds back what
//!    it owes until it owes `WS_CREDIT_AT` (4) records: an echo then costs two records, not
//!    four, and no wake-up carries a credit alone. Held-back credit cannot stall a window:
//!    a side whose window is shut is owed all `WS_WINDOW` records once the other side has
//!    taken or written them, and that is past `WS_CREDIT_AT`.
//!
//!    HTTP responses use the send window too, `RESPONSE_WINDOW` (8) records: the worker
//!    sends at most that many records with `MORE` (`Response` or `ResponseBody`) that the
//!    front end has not acknowledged, and the front end acknowledges them with
//!    `SendCredit` once written to the client, half a window (4) at a time. A
//!    response's last record (no `MORE`) is not counted: the stream ends with it. Without
//!    the window a response to a slow client took every response slot of its worker, and
//!    every other response on that worker waited for that client. A stream the front end
//!    gives up early gets `Disconnect`, which ends the app's wait for credit. A `Request`
//!    may give its stream a smaller window (`Record::window`, 1 to `RESPONSE_WINDOW`), which
//!    the front end then acknowledges at half of it (at least 1 record): it does when many
//!    streams are open on its thread, or on one HTTP/2 connection, since the records of a
//!    client that reads slowly wait in the front end's memory (`response_window_share`).
//!
//! ## Revocable dispatch (claim words, `claim.rs`)
//! A request sent whole in one `Request` record may be taken back while it waits in the
//! ring of a worker whose loop is blocked. Each channel has `ring_capacity` 64-bit claim
//! words (after the rings, `layout.rs`); a word is `tag << 2 | state`, state QUEUED (1),
//! RUNNING (2) or REVOKED (3). The front end alone hands out words and tags (never 0).
//! 8. Queue: before publishing the `Request` record the front end stores QUEUED(tag) in a
//!    free word and names (index, tag) in the record's `extra` (`extra == 0`: no word, the
//!    worker just runs it). The store is ordered before the record by rule 1 and seen by the
//!    worker through rule 2. A word is handed out again (with a new tag) only once its
//!    request is over for the front end: answered, revoked, or its stream closed.
//! 9. Claim or revoke: the worker claims a request as its task starts, by one CAS
//!    QUEUED(tag) -> RUNNING(tag); the front end, told a worker stalled (`--stall-timeout`),
//!    revokes each request of that worker that has no event yet by one CAS QUEUED(tag) ->
//!    REVOKED(tag). Both CAS the same word from the same value, which the front end writes
//!    once per tag, so exactly one wins (loom: `exactly_one_of_claim_and_revoke_wins`).
//!    A worker whose claim fails drops the request without running it; a front end whose
//!    revoke succeeds sends it to another worker under a new stream id. A late claim on a
//!    word that was revoked and handed out again sees another tag and fails
//!    (`a_late_claim_on_a_reused_word_never_wins`). So no request runs twice.
//! 10. Trust and crashes: the worker can write any word. The front end only ever CASes from
//!    the exact QUEUED(tag) it wrote; anything else means "leave the request with the
//!    worker", which is what happens without revocation, so garbage cannot make a request
//!    run twice on compliant workers nor lose one. No one waits on a word: a peer that
//!    crashes between any two steps leaves nothing held (its segment, words included, is
//!    dropped under rule 6, and its requests fail with 502 as before). A worker that
//!    answers a revoked request anyway is refused (a record after the stream's end) or,
//!    once the stream closed, its records are dropped.

use std::marker::PhantomData;

use crate::sync::{fence, AtomicU64, Cell, Ordering};

/// A counter on its own cache line, so that producer and consumer do not false-share.
#[repr(C, align(64))]
pub struct Padded<T>(pub T);

/// The two counters of a ring, on separate cache lines.
#[repr(C)]
pub struct RingHeader {
    head: Padded<AtomicU64>,
    tail: Padded<AtomicU64>,
}

#[cfg(not(loom))]
const _: () = assert!(std::mem::size_of::<RingHeader>() == 128);

impl RingHeader {
    /// Records waiting in the ring, as a third party (metrics) sees it: a snapshot of
    /// both counters with no ordering promise, clamped to `[0, capacity]` so that a
    /// corrupt counter cannot produce a nonsense figure.
    pub fn depth(&self, capacity: u64) -> u64 {
        // SYNC: relaxed on purpose; nobody acts on this figure, it is only reported.
        // `head` first: `tail` only grows and never passes below `head`, so a later load of
        // `tail` is at least the `head` just read, and the difference is what waits.
        let head = self.head.0.load(Ordering::Relaxed);
        let tail = self.tail.0.load(Ordering::Relaxed);
        tail.wrapping_sub(head).min(capacity)
    }
}

/// The peer broke ring rule 5: its counter is outside `[0, capacity]` of ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("ring counters out of range: head {head}, tail {tail}, capacity {capacity}")]
pub struct Corrupt {
    pub head: u64,
    pub tail: u64,
    pub capacity: u64,
}

/// Why a push did not happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PushError {
    #[error("ring is full")]
    Full,
    #[error(transparent)]
    Corrupt(#[from] Corrupt),
}

/// Bytes a ring of `capacity` cells of `T` occupies, header included, rounded up to 64 so
/// that whatever follows it starts on a fresh cache line.
pub const fn ring_bytes<T>(capacity: usize) -> usize {
    (std::mem::size_of::<RingHeader>() + capacity * std::mem::size_of::<Cell<T>>()).div_ceil(64)
        * 64
}

/// A view of a ring placed in a memory region. Only [`Producer`] and [`Consumer`] use it.
struct RawRing<T> {
    header: *const RingHeader,
    cells: *const Cell<T>,
    mask: u64,
    _t: PhantomData<T>,
}

impl<T: Copy> RawRing<T> {
    /// # Safety
    /// `base` points to `ring_bytes::<T>(capacity)` bytes, 64-byte aligned, that stay mapped
    /// while the returned value lives and were initialised by [`init`]. `capacity` is a power
    /// of two.
    unsafe fn new(base: *mut u8, capacity: usize) -> Self {
        debug_assert!(capacity.is_power_of_two());
        debug_assert_eq!(base as usize % 64, 0);
        Self {
            header: base.cast(),
            // SAFETY: the cells start right after the header, inside the region (caller).
            cells: unsafe { base.add(std::mem::size_of::<RingHeader>()) }.cast(),
            mask: capacity as u64 - 1,
            _t: PhantomData,
        }
    }

    fn header(&self) -> &RingHeader {
        // SAFETY: valid and initialised for our lifetime (constructor contract).
        unsafe { &*self.header }
    }

    fn cell(&self, index: u64) -> &Cell<T> {
        // SAFETY: `index & mask < capacity`, so the cell lies inside the region.
        unsafe { &*self.cells.add((index & self.mask) as usize) }
    }

    fn capacity(&self) -> u64 {
        self.mask + 1
    }

    fn check(&self, head: u64, tail: u64) -> Result<u64, Corrupt> {
        let used = tail.wrapping_sub(head);
        if used > self.capacity() {
            return Err(Corrupt {
                head,
                tail,
                capacity: self.capacity(),
            });
        }
        Ok(used)
    }
}

/// Writes the initial, empty state of a ring. Only the segment's creator calls it.
///
/// # Safety
/// As for the ring views: `base` is 64-byte aligned and `ring_bytes::<T>(capacity)` long, and
/// nothing else accesses it during the call.
pub unsafe fn init<T: Copy + Default>(base: *mut u8, capacity: usize) {
    let header: *mut RingHeader = base.cast();
    // SAFETY: the region is ours alone and large enough (caller); writes do not read the
    // (uninitialised or zeroed) previous contents.
    unsafe {
        header.write(RingHeader {
            head: Padded(AtomicU64::new(0)),
            tail: Padded(AtomicU64::new(0)),
        });
        let cells: *mut Cell<T> = base.add(std::mem::size_of::<RingHeader>()).cast();
        for i in 0..capacity {
            cells.add(i).write(Cell::new(T::default()));
        }
    }
}

/// The producing end of a ring. Not `Sync`: one owner at a time.
pub struct Producer<T> {
    ring: RawRing<T>,
    tail: u64,
    head_cache: u64,
    /// The consumer's sleep this producer last rang for (rule 4); 0 names none.
    rung_for: std::cell::Cell<u32>,
}

// SAFETY: the handle is the single producer; moving it to another thread moves that role
// with it. The region it points into is shared memory that outlives the handle (contract
// of `Producer::attach`).
unsafe impl<T: Send> Send for Producer<T> {}

impl<T: Copy> Producer<T> {
    /// # Safety
    /// `base` satisfies [`init`]'s layout, was initialised, stays mapped while the producer
    /// lives, and no other producer exists for this ring.
    pub unsafe fn attach(base: *mut u8, capacity: usize) -> Self {
        // SAFETY: forwarded contract.
        let ring = unsafe { RawRing::new(base, capacity) };
        // Our own counter is read once, at attach; afterwards only the local copy counts
        // (rule 5). A fresh ring has both counters at zero.
        let tail = ring.header().tail.0.load(Ordering::Relaxed);
        Self {
            head_cache: tail,
            tail,
            ring,
            rung_for: std::cell::Cell::new(0),
        }
    }

    /// Items the consumer has not taken yet, as far as we know without reloading `head`.
    pub fn len_cached(&self) -> u64 {
        self.tail - self.head_cache
    }

    /// Free cells, reloading the consumer's `head`.
    pub fn free(&mut self) -> Result<u64, Corrupt> {
        self.refresh()?;
        Ok(self.ring.capacity() - (self.tail - self.head_cache))
    }

    fn refresh(&mut self) -> Result<(), Corrupt> {
        // SYNC: rule 3, pairs with the Release store in `Consumer::pop`.
        let head = self.ring.header().head.0.load(Ordering::Acquire);
        self.ring.check(head, self.tail)?;
        // A head that moved backwards but stays in range is the peer's own loss; keep the
        // larger one so that our view never goes backwards.
        if head.wrapping_sub(self.head_cache) <= self.ring.capacity() {
            self.head_cache = head;
        }
        Ok(())
    }

    /// Publishes one item, or reports the ring full (backpressure) or the peer corrupt.
    pub fn try_push(&mut self, item: T) -> Result<(), PushError> {
        if self.tail - self.head_cache == self.ring.capacity() {
            self.refresh()?;
            if self.tail - self.head_cache == self.ring.capacity() {
                return Err(PushError::Full);
            }
        }
        // SAFETY: the cell at `tail` is the producer's (ownership: [tail, head + capacity)).
        unsafe { self.ring.cell(self.tail).write(item) };
        self.tail += 1;
        // SYNC: rule 1, pairs with the Acquire load in `Consumer::pop`.
        self.ring
            .header()
            .tail
            .0
            .store(self.tail, Ordering::Release);
        Ok(())
    }

    /// The producer's half of rule 4: after publishing, tell whether the consumer may be
    /// asleep and this producer has not rung for that sleep yet. The caller rings the
    /// doorbell when this returns true.
    pub fn consumer_sleeping(&self, flag: &crate::doorbell::SleepFlag) -> bool {
        // SYNC: rule 4, pairs with the fence in `SleepFlag::prepare_sleep`.
        fence(Ordering::SeqCst);
        match flag.sleep_number() {
            Some(n) if n != self.rung_for.get() => {
                self.rung_for.set(n);
                true
            }
            _ => false,
        }
    }
}

/// The consuming end of a ring. Not `Sync`: one owner at a time.
pub struct Consumer<T> {
    ring: RawRing<T>,
    head: u64,
    tail_cache: u64,
}

// SAFETY: see `Producer`.
unsafe impl<T: Send> Send for Consumer<T> {}

impl<T: Copy> Consumer<T> {
    /// # Safety
    /// As for [`Producer::attach`], with "consumer" for "producer".
    pub unsafe fn attach(base: *mut u8, capacity: usize) -> Self {
        // SAFETY: forwarded contract.
        let ring = unsafe { RawRing::new(base, capacity) };
        let head = ring.header().head.0.load(Ordering::Relaxed);
        Self {
            tail_cache: head,
            head,
            ring,
        }
    }

    fn refresh(&mut self) -> Result<(), Corrupt> {
        // SYNC: rule 2, pairs with the Release store in `Producer::try_push`.
        let tail = self.ring.header().tail.0.load(Ordering::Acquire);
        self.ring.check(self.head, tail)?;
        self.tail_cache = tail;
        Ok(())
    }

    /// Takes the oldest item, if any.
    pub fn pop(&mut self) -> Result<Option<T>, Corrupt> {
        if self.head == self.tail_cache {
            self.refresh()?;
            if self.head == self.tail_cache {
                return Ok(None);
            }
        }
        // SAFETY: cells in [head, tail) are the consumer's (rule 2 made them visible).
        let item = unsafe { self.ring.cell(self.head).read() };
        self.head += 1;
        // SYNC: rule 2, pairs with the Acquire load in `Producer::refresh` (rule 3).
        self.ring
            .header()
            .head
            .0
            .store(self.head, Ordering::Release);
        Ok(Some(item))
    }

    /// Whether anything is waiting, reloading the producer's `tail`. The consumer's half of
    /// rule 4 calls this after `SleepFlag::prepare_sleep`.
    pub fn has_items(&mut self) -> Result<bool, Corrupt> {
        if self.head != self.tail_cache {
            return Ok(true);
        }
        self.refresh()?;
        Ok(self.head != self.tail_cache)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::region::HeapRegion;

    fn pair(capacity: usize) -> (HeapRegion, Producer<u64>, Consumer<u64>) {
        let region = HeapRegion::new(ring_bytes::<u64>(capacity));
        // SAFETY: the region is fresh, aligned and large enough; one producer, one consumer.
        unsafe {
            init::<u64>(region.base(), capacity);
            let p = Producer::attach(region.base(), capacity);
            let c = Consumer::attach(region.base(), capacity);
            (region, p, c)
        }
    }

    #[test]
    fn depth_counts_the_records_waiting() {
        let (_r, mut p, mut c) = pair(8);
        let depth = |p: &Producer<u64>| p.ring.header().depth(8);
        assert_eq!(depth(&p), 0);
        for i in 0..5u64 {
            p.try_push(i).unwrap();
        }
        assert_eq!(depth(&p), 5);
        c.pop().unwrap();
        c.pop().unwrap();
        assert_eq!(depth(&p), 3, "between empty and full, not 0 or capacity");
        while c.pop().unwrap().is_some() {}
        assert_eq!(depth(&p), 0);
    }

    #[test]
    fn items_come_out_in_order_across_wrap_around() {
        let (_r, mut p, mut c) = pair(4);
        let mut next_out = 0;
        for i in 0..100u64 {
            p.try_push(i).unwrap();
            if i % 3 == 2 {
                while let Some(v) = c.pop().unwrap() {
                    assert_eq!(v, next_out);
                    next_out += 1;
                }
            }
        }
        while let Some(v) = c.pop().unwrap() {
            assert_eq!(v, next_out);
            next_out += 1;
        }
        assert_eq!(next_out, 100);
    }

    #[test]
    fn a_full_ring_refuses_and_recovers() {
        let (_r, mut p, mut c) = pair(4);
        for i in 0..4 {
            p.try_push(i).unwrap();
        }
        assert_eq!(p.try_push(9), Err(PushError::Full));
        assert_eq!(c.pop().unwrap(), Some(0));
        p.try_push(4).unwrap();
        let rest: Vec<_> = std::iter::from_fn(|| c.pop().unwrap()).collect();
        assert_eq!(rest, vec![1, 2, 3, 4]);
    }

    #[test]
    fn a_scribbled_tail_is_reported_not_followed() {
        let (r, _p, mut c) = pair(4);
        // The producer's counter is the second cache line of the header.
        // SAFETY: offset 64 is inside the header; u64 aligned.
        unsafe { r.base().add(64).cast::<u64>().write(1_000) };
        assert!(matches!(c.pop(), Err(Corrupt { tail: 1_000, .. })));
    }

    #[test]
    fn a_head_running_ahead_of_tail_is_reported() {
        let (r, mut p, _c) = pair(4);
        for i in 0..4 {
            p.try_push(i).unwrap();
        }
        // SAFETY: offset 0 is the consumer's counter.
        unsafe { r.base().cast::<u64>().write(7) };
        assert!(matches!(p.try_push(5), Err(PushError::Corrupt(_))));
    }
}
