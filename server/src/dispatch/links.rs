//! The thread's channels to its workers: attaching and detaching a worker, and the calls a
//! connection task makes to put a request into a worker's ring (slots, records, claims,
//! doorbells).

use std::sync::Arc;

use uringapi_protocol::arena::SlotIndex;
use uringapi_protocol::doorbell::EventFd;
use uringapi_protocol::{ChannelError, FrontChannel, Record, Segment};

use super::{Hub, Inner, Lost};

/// One attached worker, as this thread sees it.
pub(super) struct Link {
    pub chan: FrontChannel,
    pub doorbell: EventFd,
    pub generation: u64,
    pub pid: u32,
    /// Records were sent since the last doorbell check.
    pub unflushed: bool,
    /// `Inner::completions` when this thread last saw the worker finish a response: among
    /// workers with as many requests in flight, the one that finished most recently is
    /// the least likely to be blocked (a loop stuck in `time.sleep` finishes nothing).
    pub last_done: u64,
    /// Records that must not be lost but found the ring full, sent on the poller's next
    /// rounds: notices (`Disconnect`, `Cancel`, a `WsDisconnect` without its reason) and
    /// response credits (`SendCredit`). Lost, the app would never learn that its client
    /// left, or a response waiting on its window would wait for ever.
    pub notices: Vec<Record>,
}

impl Link {
    /// Sends a record that must not be lost (see `notices`), now or once there is room.
    pub fn notice(&mut self, rec: Record) {
        match self.chan.send(rec) {
            Ok(true) => self.unflushed = true,
            Ok(false) => self.notices.push(rec),
            Err(_) => {} // a corrupt ring: the worker is being replaced
        }
    }

    /// Sends the notices still waiting, as far as there is room; whether any went.
    pub fn retry_notices(&mut self) -> bool {
        let mut sent = false;
        while let Some(&rec) = self.notices.first() {
            match self.chan.send(rec) {
                Ok(true) => {
                    self.unflushed = true;
                    self.notices.remove(0);
                    sent = true;
                }
                _ => break,
            }
        }
        sent
    }
}

impl Hub {
    pub(super) fn attach(&self, worker: usize, segment: Arc<Segment>, doorbell: EventFd, pid: u32) {
        let generation = segment.generation();
        let chan = FrontChannel::new(segment, self.thread);
        let mut inner = self.inner.borrow_mut();
        if inner.links.len() <= worker {
            inner.links.resize_with(worker + 1, || None);
        }
        let link = Link {
            chan,
            doorbell,
            generation,
            pid,
            unflushed: false,
            last_done: 0,
            notices: Vec::new(),
        };
        let replaced = inner.links[worker].replace(link).is_some();
        drop(inner);
        if replaced {
            self.fail_streams_of(worker);
        }
        self.wake_queue();
        tracing::debug!(
            thread = self.thread,
            worker,
            generation,
            pid,
            "worker attached"
        );
    }

    /// Forgets a worker and fails its requests in flight on this thread.
    pub(super) fn detach(&self, worker: usize, generation: u64) {
        self.forget(worker, generation, false);
    }

    /// Forgets a worker that has exited: the requests it had not started go to another
    /// worker (its claim words can no longer change), the rest fail. Not for a worker that
    /// broke the contract: its claim words are not to be believed.
    pub(super) fn detach_exited(&self, worker: usize, generation: u64) {
        self.forget(worker, generation, true);
    }

    fn forget(&self, worker: usize, generation: u64, take_back: bool) {
        let matches = self
            .inner
            .borrow()
            .links
            .get(worker)
            .and_then(Option::as_ref)
            .is_some_and(|l| l.generation == generation);
        if matches {
            if take_back {
                self.revoke_queued(worker, "the exited worker");
            }
            self.inner.borrow_mut().links[worker] = None;
            self.fail_streams_of(worker);
        }
    }

    /// Runs `f` on `worker`'s link. A contract breach it reports makes the worker a
    /// violator; a missing link (the worker is gone) is `Lost` either way.
    fn with_link<R>(
        &self,
        worker: usize,
        f: impl FnOnce(&mut Link) -> Result<R, ChannelError>,
    ) -> Result<R, Lost> {
        let res = {
            let mut inner = self.inner.borrow_mut();
            let link = inner
                .links
                .get_mut(worker)
                .and_then(Option::as_mut)
                .ok_or(Lost)?;
            f(link)
        };
        res.map_err(|e| {
            self.violation(worker, &e);
            Lost
        })
    }

    /// Releases the request-slot pages a past burst touched, on every worker's channel
    /// whose load is light now (`SlotPool::trim`); how many slots went.
    pub fn trim_slots(&self) -> u32 {
        let workers = self.inner.borrow().links.len();
        (0..workers)
            .filter_map(|worker| self.with_link(worker, |link| link.chan.trim_slots()).ok())
            .sum()
    }

    /// Takes a request slot on `worker`. `Ok(None)`: none free, wait with `wait_space`.
    pub fn take_slot(&self, worker: usize) -> Result<Option<SlotIndex>, Lost> {
        self.with_link(worker, |link| link.chan.take_slot())
    }

    pub fn untake_slot(&self, worker: usize, slot: SlotIndex) {
        let _ = self.with_link(worker, |link| {
            link.chan.untake_slot(slot);
            Ok(())
        });
    }

    pub fn slot_size(&self, worker: usize) -> Result<usize, Lost> {
        self.with_link(worker, |link| Ok(link.chan.slot_size()))
    }

    pub fn write_slot(
        &self,
        worker: usize,
        slot: SlotIndex,
        offset: usize,
        bytes: &[u8],
    ) -> Result<(), Lost> {
        self.with_link(worker, |link| {
            link.chan.write_slot(slot, offset, bytes);
            Ok(())
        })
    }

    /// Whether the worker's request ring has room for a record now.
    pub fn has_room(&self, worker: usize) -> Result<bool, Lost> {
        self.with_link(worker, |link| link.chan.has_room())
    }

    /// Publishes a record. `Ok(false)`: the ring is full, wait with `wait_space`.
    pub fn send(&self, worker: usize, rec: Record) -> Result<bool, Lost> {
        self.with_link(worker, |link| {
            let sent = link.chan.send(rec)?;
            link.unflushed |= sent;
            Ok(sent)
        })
    }

    /// Rings the worker's doorbell if records were sent and it is asleep (rule 4).
    pub fn flush(&self, worker: usize) {
        let mut inner = self.inner.borrow_mut();
        if let Some(link) = inner.links.get_mut(worker).and_then(Option::as_mut) {
            if link.unflushed {
                link.unflushed = false;
                if link.chan.worker_asleep() {
                    link.doorbell.ring();
                }
            }
        }
    }

    /// Returns a response slot to its worker (from `SlotLease::drop`, through `SlotOwner`).
    pub fn release_slot(&self, worker: usize, generation: u64, slot: SlotIndex) {
        let mut inner = self.inner.borrow_mut();
        if let Some(link) = inner.links.get_mut(worker).and_then(Option::as_mut) {
            if link.generation == generation {
                link.chan.release(slot);
                if link.chan.worker_wants_space() {
                    link.doorbell.ring();
                }
            }
        }
    }

    /// Makes a request about to be sent whole in one record revocable (ring.rs rule 8):
    /// returns the `Record::extra` to send with it (0: not revocable, every word in use).
    pub fn queue_claim(&self, id: super::StreamId, worker: usize) -> u64 {
        let mut inner = self.inner.borrow_mut();
        let Inner { links, streams, .. } = &mut *inner;
        let Some(link) = links.get_mut(worker).and_then(Option::as_mut) else {
            return 0;
        };
        let Some(s) = streams.get_mut(id).filter(|s| s.worker == worker) else {
            return 0;
        };
        link.chan.free_claim(std::mem::take(&mut s.claim));
        s.claim = link.chan.queue_claim();
        s.claim
    }
}

impl crate::zerocopy::SlotOwner for Hub {
    fn release_slot(&self, worker: usize, generation: u64, slot: SlotIndex) {
        Hub::release_slot(self, worker, generation, slot);
    }
}
