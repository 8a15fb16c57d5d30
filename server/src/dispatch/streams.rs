//! A request's life on the thread: the stream table, the events a connection task reads
//! from it, and the calls that open, feed and end a stream.

use std::collections::VecDeque;
use std::task::{Poll, Waker};
use std::time::Instant;

use uringapi_protocol::record::{response_window_share, RESPONSE_WINDOW};
use uringapi_protocol::{Kind, Record};

use super::{policy, Hub};
use crate::body_window::Window;
use crate::zerocopy::SlotLease;

/// What a connection task learns about its request.
pub enum Event {
    /// The response head (encoded by the worker, copied out, not yet validated) and the
    /// first body bytes. `more`: body records follow.
    Head {
        head: Vec<u8>,
        body: Option<SlotLease>,
        more: bool,
    },
    Body {
        body: Option<SlotLease>,
        more: bool,
    },
    /// The app failed after the response started: close the connection.
    Abort,
    /// The app asked for the body of an `Expect: 100-continue` request.
    Continue,
    /// `http.response.pathsend`: the rest of the body is this file (raw path bytes, not
    /// yet checked). `head`: the response head, unless a `Head` event brought it.
    File {
        head: Option<Vec<u8>>,
        path: Vec<u8>,
    },
    /// The worker is gone or broke the contract: answer 502 if nothing was sent.
    WorkerLost,
    /// The request was taken back from a stalled worker before it started (ring.rs rule 9):
    /// send it again, to another worker.
    Revoked,
    /// WebSocket: the app accepted; the head it sent (subprotocol and extra headers), not
    /// yet validated.
    WsAccept {
        head: Vec<u8>,
    },
    /// WebSocket: an app message, or a slot-sized piece of one (`more`: it continues).
    WsSend {
        data: Option<SlotLease>,
        text: bool,
        more: bool,
    },
    /// WebSocket: the app closed with this code (unchecked) and reason (unchecked bytes).
    WsClose {
        code: u32,
        reason: Option<SlotLease>,
    },
}

impl Event {
    /// The same event with its shared-memory bytes copied out and their slot given back.
    fn detach(self) -> Self {
        let detach = |lease: Option<SlotLease>| lease.map(SlotLease::detach);
        match self {
            Event::Head { head, body, more } => Event::Head {
                head,
                body: detach(body),
                more,
            },
            Event::Body { body, more } => Event::Body {
                body: detach(body),
                more,
            },
            Event::WsSend { data, text, more } => Event::WsSend {
                data: detach(data),
                text,
                more,
            },
            Event::WsClose { code, reason } => Event::WsClose {
                code,
                reason: detach(reason),
            },
            other => other,
        }
    }
}

/// A request in flight, from the thread's point of view.
pub(super) struct Stream {
    pub worker: usize,
    seq: u32,
    /// "METHOD /path", for the log line that names a stalled worker's requests.
    pub what: Box<str>,
    pub since: Instant,
    pub inbox: VecDeque<Event>,
    pub waker: Option<Waker>,
    /// The worker has sent the last record for this stream.
    pub finished: bool,
    /// Request body records on their way to the app (body_window.rs).
    pub body: Window,
    /// The request's claim word while it may still be taken back (`Record::extra`; 0:
    /// none). Only requests sent whole in one record get one (revoke.rs in http1/conn).
    pub claim: u64,
    /// Response bytes are copied out of their slot as the record arrives and the slot
    /// goes back at once (`Hub::copy_responses`).
    pub copy: bool,
    /// The response window its request gives the worker (`THREAD_RESPONSE_BUDGET`).
    pub window: u32,
    /// A WebSocket (`Hub::websocket_opened`): its messages have windows of their own, and
    /// it does not count against the thread's response budget.
    websocket: bool,
}

impl Stream {
    /// Queues an event and wakes the connection task waiting on the stream.
    pub fn deliver(&mut self, ev: Event) {
        self.inbox.push_back(ev);
        self.wake();
    }

    pub fn wake(&mut self) {
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }
}

/// `Stream::worker` once the stream no longer counts against any worker (its response is
/// complete, or its worker is gone).
pub(super) const NO_WORKER: usize = usize::MAX;

/// Stream ids carry a slab index and a sequence number, so that a late record for a stream
/// that was closed and whose index was reused is recognised and dropped.
pub type StreamId = u64;

fn stream_id(index: usize, seq: u32) -> StreamId {
    (u64::from(seq) << 32) | index as u64
}

fn split(id: StreamId) -> (usize, u32) {
    ((id & 0xffff_ffff) as usize, (id >> 32) as u32)
}

/// Response records (ring.rs rule 7) that a front-end thread's streams may have
/// unacknowledged, shared out as they open. A client that reads slowly, or not at all,
/// makes its stream's records wait in this process's memory (copied out of their slots,
/// `Hub::copy_responses`): with the full window each, a crowd of such clients held 512 KiB
/// apiece. Up to 32 streams open on the thread get the full window (8 records), then each
/// new one a share, down to 1 record (64 KiB at the default slot) from 256 streams on.
/// WebSockets do not count (their messages have their own window, `WS_WINDOW`).
// PERF: wrk -t1 -c64 and -c300, echo_app 1 MiB downloads, 2 alternating runs of 4 s, GB/s
// before → after: c64 1.10–1.32 → 1.12–1.20, c300 1.10–1.35 → 1.21–1.37 (noise of this
// 2-CPU VM; no steady loss).
pub(super) const THREAD_RESPONSE_BUDGET: u32 = 256;

/// The thread's streams: a slab whose indices are reused, with a sequence number per use.
#[derive(Default)]
pub(super) struct StreamTable {
    slots: Vec<Option<Stream>>,
    free: Vec<usize>,
    next_seq: u32,
    /// Open streams that are WebSockets.
    websockets: usize,
}

impl StreamTable {
    /// Opens a stream on `worker`.
    pub fn open(&mut self, worker: usize, what: Box<str>) -> StreamId {
        self.next_seq = self.next_seq.wrapping_add(1);
        let seq = self.next_seq;
        let http = self.len() - self.websockets;
        let window = response_window_share(THREAD_RESPONSE_BUDGET, http + 1);
        let stream = Stream {
            worker,
            seq,
            what,
            since: Instant::now(),
            inbox: VecDeque::new(),
            waker: None,
            finished: false,
            body: Window::default(),
            claim: 0,
            copy: false,
            window,
            websocket: false,
        };
        let index = match self.free.pop() {
            Some(i) => {
                self.slots[i] = Some(stream);
                i
            }
            None => {
                self.slots.push(Some(stream));
                self.slots.len() - 1
            }
        };
        stream_id(index, seq)
    }

    /// The stream `id` names, unless it was closed (its index may now serve another).
    pub fn get_mut(&mut self, id: StreamId) -> Option<&mut Stream> {
        let (index, seq) = split(id);
        self.slots.get_mut(index)?.as_mut().filter(|s| s.seq == seq)
    }

    /// Takes the stream out of the table; its index is free for reuse.
    pub fn remove(&mut self, id: StreamId) -> Option<Stream> {
        if self.get_mut(id)?.websocket {
            self.websockets -= 1;
        }
        let index = split(id).0;
        self.free.push(index);
        self.slots[index].take()
    }

    /// The stream turned into a WebSocket.
    pub fn websocket_opened(&mut self, id: StreamId) {
        if let Some(s) = self.get_mut(id).filter(|s| !s.websocket) {
            s.websocket = true;
            self.websockets += 1;
        }
    }

    /// Streams open.
    pub fn len(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Stream> {
        self.slots.iter().flatten()
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut Stream> {
        self.slots.iter_mut().flatten()
    }
}

impl Hub {
    /// Opens a stream for request `what` on the worker the routing policy picks (policy.rs)
    /// among those that accept work: attached, not stalled, not retiring, under
    /// `--limit-concurrency`. `prefer`: the worker of the connection's previous request,
    /// which gets this one if it is idle. `None`: no worker accepts now; wait with
    /// `wait_queue`.
    pub fn open_stream(
        &self,
        what: impl FnOnce() -> Box<str>,
        prefer: Option<usize>,
    ) -> Option<(StreamId, usize)> {
        let mut inner = self.inner.borrow_mut();
        inner.rotation = inner.rotation.wrapping_add(1);
        let candidates = inner.links.iter().enumerate().filter_map(|(i, l)| {
            let l = l.as_ref()?;
            let load = self.load.get(i);
            Some(policy::Candidate {
                index: i,
                accepts: load.accepts(self.limit),
                in_flight: load.in_flight(),
                last_done: l.last_done,
            })
        });
        let worker = policy::pick(candidates, inner.links.len(), inner.rotation, prefer)?;
        self.load.get(worker).dispatched();
        let id = inner.streams.open(worker, what());
        Some((id, worker))
    }

    /// Has the stream's response bytes copied out of their slots as the poller routes them,
    /// so that each slot goes back to the worker in the same poller round instead of when
    /// the connection task gets to the event: for HTTP/2, whose DATA frames are owned copies
    /// anyway, and for an HTTP/1.1 response whose client reads slower than the app writes.
    /// Records already waiting for the connection task are copied out now.
    pub fn copy_responses(&self, id: StreamId) {
        let queued = match self.inner.borrow_mut().streams.get_mut(id) {
            Some(s) if !s.copy => {
                s.copy = true;
                std::mem::take(&mut s.inbox)
            }
            _ => return,
        };
        if queued.is_empty() {
            return;
        }
        // Detaching gives slots back through the hub: not while it is borrowed.
        let mut detached: VecDeque<Event> = queued.into_iter().map(Event::detach).collect();
        if let Some(s) = self.inner.borrow_mut().streams.get_mut(id) {
            detached.append(&mut s.inbox);
            s.inbox = detached;
        }
    }

    /// Ends a stream. If the worker has not finished it, tell the worker the client is gone.
    pub fn close_stream(&self, id: StreamId) {
        self.end_stream(id, Kind::Disconnect);
    }

    /// Ends a stream whose request ran out of time: the worker cancels the app's task.
    pub fn cancel_stream(&self, id: StreamId) {
        self.end_stream(id, Kind::Cancel);
    }

    fn end_stream(&self, id: StreamId, notice: Kind) {
        let mut inner = self.inner.borrow_mut();
        // Events still queued for the stream may hold slot leases, whose drop borrows
        // `inner` to hand the slot back: the stream is dropped only after `inner` is.
        let Some(stream) = inner.streams.remove(id) else {
            return;
        };
        let (worker, finished, claim) = (stream.worker, stream.finished, stream.claim);
        if worker == NO_WORKER {
            drop(inner);
            drop(stream);
            return;
        }
        self.load.get(worker).done(false);
        if let Some(link) = inner.links.get_mut(worker).and_then(Option::as_mut) {
            link.chan.free_claim(claim);
            if !finished {
                link.notice(Record::new(notice, id));
            }
        }
        drop(inner);
        drop(stream);
        self.flush(worker);
        self.wake_queue();
    }

    /// Tells the worker behind a stream that its client has gone (the stream stays open, so
    /// that the worker's last records are still recognised and dropped).
    pub fn notify_disconnect(&self, id: StreamId) {
        let mut inner = self.inner.borrow_mut();
        let Some(s) = inner.streams.get_mut(id) else {
            return;
        };
        let worker = s.worker;
        if s.finished || worker == NO_WORKER {
            return;
        }
        if let Some(link) = inner.links.get_mut(worker).and_then(Option::as_mut) {
            link.notice(Record::new(Kind::Disconnect, id));
        }
        drop(inner);
        self.flush(worker);
    }

    /// Tells the worker behind a WebSocket that the client side ended with `code` and
    /// `reason` (unless the app closed it first). The stream stays open (and counted) until
    /// the connection closes it, so that records the worker sent meanwhile are recognised
    /// and dropped.
    pub fn notify_ws_disconnect(&self, id: StreamId, code: u16, reason: &str) {
        let mut inner = self.inner.borrow_mut();
        let Some(s) = inner.streams.get_mut(id) else {
            return;
        };
        let worker = s.worker;
        if s.finished || worker == NO_WORKER {
            return;
        }
        if let Some(link) = inner.links.get_mut(worker).and_then(Option::as_mut) {
            let mut rec = Record {
                aux: u32::from(code),
                ..Record::new(Kind::WsDisconnect, id)
            };
            // The reason (≤ 123 bytes, UTF-8 checked by the reader) rides in a slot when
            // one is free; without one the app still gets the code.
            let reason = reason.as_bytes();
            let slot = if reason.is_empty() || reason.len() > link.chan.slot_size() {
                None
            } else {
                link.chan.take_slot().ok().flatten()
            };
            if let Some(slot) = slot {
                link.chan.write_slot(slot, 0, reason);
                rec = rec.with_slot(slot.get(), reason.len() as u32, u32::from(code));
            }
            match link.chan.send(rec) {
                Ok(true) => link.unflushed = true,
                _ => {
                    // A full ring: the code goes later, without its reason.
                    if let Some(slot) = slot {
                        link.chan.untake_slot(slot);
                    }
                    link.notice(Record {
                        aux: rec.aux,
                        ..Record::new(Kind::WsDisconnect, id)
                    });
                }
            }
        }
        drop(inner);
        self.flush(worker);
    }

    /// A WebSocket's next event; with `window`, `None` as soon as its window for client
    /// messages is open again (ring.rs rule 7).
    pub async fn ws_event(&self, id: StreamId, window: bool) -> Option<Event> {
        std::future::poll_fn(|cx| {
            let mut inner = self.inner.borrow_mut();
            let Some(s) = inner.streams.get_mut(id) else {
                return Poll::Ready(Some(Event::WorkerLost));
            };
            if let Some(ev) = s.inbox.pop_front() {
                return Poll::Ready(Some(ev));
            }
            if window && s.body.open_for(uringapi_protocol::record::WS_WINDOW) {
                return Poll::Ready(None);
            }
            s.waker = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }

    /// A WebSocket goes idle: its emptied inbox gives its memory back (events are 96
    /// bytes; an inbox that held a few keeps room for them for the WebSocket's life).
    pub fn ws_idle(&self, id: StreamId) {
        if let Some(s) = self.inner.borrow_mut().streams.get_mut(id) {
            if s.inbox.is_empty() && s.inbox.capacity() > 0 {
                s.inbox = VecDeque::new();
            }
        }
    }

    /// Whether a WebSocket may send another client message record to its worker.
    pub fn ws_window_open(&self, id: StreamId) -> bool {
        self.inner
            .borrow_mut()
            .streams
            .get_mut(id)
            .is_some_and(|s| s.body.open_for(uringapi_protocol::record::WS_WINDOW))
    }

    /// Puts an event back at the front of a stream's inbox.
    pub fn unget_event(&self, id: StreamId, ev: Event) {
        if let Some(s) = self.inner.borrow_mut().streams.get_mut(id) {
            s.inbox.push_front(ev);
        }
    }

    /// The stream's next event if it is a piece of response body of at most `room` bytes
    /// that has arrived already (never waits): its lease and `more`.
    pub fn next_body_now(&self, id: StreamId, room: usize) -> Option<(Option<SlotLease>, bool)> {
        match self.next_piece_now(id, room)? {
            Event::Body { body, more } => Some((body, more)),
            other => {
                self.unget_event(id, other);
                None
            }
        }
    }

    /// The stream's next event if it is a WebSocket message record of at most `room` bytes
    /// that has arrived already (never waits): its lease, whether text, and `more`.
    pub fn next_ws_send_now(
        &self,
        id: StreamId,
        room: usize,
    ) -> Option<(Option<SlotLease>, bool, bool)> {
        match self.next_piece_now(id, room)? {
            Event::WsSend { data, text, more } => Some((data, text, more)),
            other => {
                self.unget_event(id, other);
                None
            }
        }
    }

    /// The stream's next event if it is a body piece or a WebSocket message record of at
    /// most `room` bytes that has arrived already.
    fn next_piece_now(&self, id: StreamId, room: usize) -> Option<Event> {
        let mut inner = self.inner.borrow_mut();
        let inbox = &mut inner.streams.get_mut(id)?.inbox;
        let len = match inbox.front()? {
            Event::Body { body: lease, .. } | Event::WsSend { data: lease, .. } => {
                lease.as_ref().map_or(0, SlotLease::len)
            }
            _ => return None,
        };
        if len > room {
            return None;
        }
        inbox.pop_front()
    }

    /// The next event for a stream.
    pub async fn next_event(&self, id: StreamId) -> Event {
        std::future::poll_fn(|cx| {
            let mut inner = self.inner.borrow_mut();
            let Some(s) = inner.streams.get_mut(id) else {
                return Poll::Ready(Event::WorkerLost);
            };
            match s.inbox.pop_front() {
                Some(ev) => Poll::Ready(ev),
                None => {
                    s.waker = Some(cx.waker().clone());
                    Poll::Pending
                }
            }
        })
        .await
    }

    /// Counts a body record sent on a stream against its window.
    pub fn body_sent(&self, id: StreamId) {
        if let Some(s) = self.inner.borrow_mut().streams.get_mut(id) {
            s.body.sent();
        }
    }

    /// The stream is a WebSocket from now on: it leaves the thread's response budget.
    pub fn websocket_opened(&self, id: StreamId) {
        self.inner.borrow_mut().streams.websocket_opened(id);
    }

    /// The response window the stream's request gives its worker (ring.rs rule 7), in
    /// records; the full window for a stream that is gone.
    pub fn response_window(&self, id: StreamId) -> u32 {
        let mut inner = self.inner.borrow_mut();
        inner
            .streams
            .get_mut(id)
            .map_or(RESPONSE_WINDOW, |s| s.window)
    }

    /// Acknowledges `n` response records of a stream that were written to the client
    /// (ring.rs rule 7, the response window): its worker may send as many more. Nothing
    /// for a stream that is gone or whose worker has sent its last record. A full ring
    /// keeps the credit on the link until there is room (`Link::notice`).
    pub fn credit_response(&self, id: StreamId, n: u32) {
        let mut inner = self.inner.borrow_mut();
        let worker = match inner.streams.get_mut(id) {
            Some(s) if !s.finished && s.worker != NO_WORKER => s.worker,
            _ => return,
        };
        if let Some(link) = inner.links.get_mut(worker).and_then(Option::as_mut) {
            link.notice(Record {
                aux: n,
                ..Record::new(Kind::SendCredit, id)
            });
        }
        drop(inner);
        self.flush(worker);
    }

    /// Waits until the stream's body window is open (`Ok`). `Err`: the stream is gone or,
    /// with `or_event`, an event arrived first (the response started, or the worker is
    /// gone; the event stays queued). Without `or_event` events are left to the caller,
    /// which watches them itself (a full-duplex body: the response is under way).
    pub async fn wait_body_window(&self, id: StreamId, or_event: bool) -> Result<(), ()> {
        std::future::poll_fn(|cx| {
            let mut inner = self.inner.borrow_mut();
            let Some(s) = inner.streams.get_mut(id) else {
                return Poll::Ready(Err(()));
            };
            if or_event && !s.inbox.is_empty() {
                return Poll::Ready(Err(()));
            }
            if s.body.open() {
                return Poll::Ready(Ok(()));
            }
            s.waker = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }

    /// Resolves once an event waits for the stream (left queued for `next_event`), or the
    /// stream is gone.
    pub async fn event_waiting(&self, id: StreamId) {
        std::future::poll_fn(|cx| {
            let mut inner = self.inner.borrow_mut();
            match inner.streams.get_mut(id) {
                Some(s) if s.inbox.is_empty() => {
                    s.waker = Some(cx.waker().clone());
                    Poll::Pending
                }
                _ => Poll::Ready(()),
            }
        })
        .await
    }

    /// Whether the stream's body window is open (a gone stream's is not).
    pub fn body_window_open(&self, id: StreamId) -> bool {
        let mut inner = self.inner.borrow_mut();
        inner.streams.get_mut(id).is_some_and(|s| s.body.open())
    }

    /// "METHOD /path" of a stream, for the log lines of a request sent again.
    pub fn stream_what(&self, id: StreamId) -> Box<str> {
        self.inner
            .borrow_mut()
            .streams
            .get_mut(id)
            .map_or_else(|| "?".into(), |s| s.what.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_closed_streams_id_is_refused_after_its_index_is_reused() {
        let mut t = StreamTable::default();
        let a = t.open(0, "GET /a".into());
        assert!(t.remove(a).is_some());
        let b = t.open(1, "GET /b".into());
        assert_eq!(split(a).0, split(b).0, "index reused");
        assert_ne!(a, b);
        assert!(t.get_mut(a).is_none(), "a late record for the old stream");
        assert!(t.remove(a).is_none(), "and it cannot close the new one");
        assert_eq!(&*t.get_mut(b).unwrap().what, "GET /b");
    }

    #[test]
    fn ids_stay_unique_while_streams_are_open() {
        let mut t = StreamTable::default();
        let ids: Vec<_> = (0..100).map(|i| t.open(i % 3, "x".into())).collect();
        let mut sorted = ids.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), ids.len());
        assert_eq!(t.iter().count(), 100);
        for id in &ids[..50] {
            t.remove(*id).unwrap();
        }
        assert_eq!(t.iter().count(), 50);
        assert!(ids[50..].iter().all(|id| t.get_mut(*id).is_some()));
    }

    #[test]
    fn streams_share_the_threads_response_budget_as_they_open() {
        let mut t = StreamTable::default();
        let ids: Vec<_> = (0..300).map(|_| t.open(0, "x".into())).collect();
        let window = |t: &mut StreamTable, id| t.get_mut(id).unwrap().window;
        assert_eq!(t.len(), 300);
        assert!(ids[..32].iter().all(|&id| window(&mut t, id) == 8));
        assert_eq!(window(&mut t, ids[33]), 7); // 256 / 34
        assert_eq!(window(&mut t, ids[127]), 2); // 256 / 128
        assert!(ids[255..].iter().all(|&id| window(&mut t, id) == 1));
        // Closed streams give their share back to the next ones.
        for id in &ids[1..] {
            t.remove(*id).unwrap();
        }
        let next = t.open(0, "x".into());
        assert_eq!((t.len(), window(&mut t, next)), (2, 8));
        // WebSockets do not count, while they are open.
        let sockets: Vec<_> = (0..300).map(|_| t.open(0, "ws".into())).collect();
        sockets.iter().for_each(|&id| t.websocket_opened(id));
        let beside = t.open(0, "x".into());
        assert_eq!(window(&mut t, beside), 8);
        sockets.iter().for_each(|&id| drop(t.remove(id)));
        assert_eq!((t.len(), t.websockets), (3, 0));
    }

    #[test]
    fn deliver_queues_in_order_and_wakes_the_reader_once() {
        let mut t = StreamTable::default();
        let id = t.open(0, "x".into());
        let s = t.get_mut(id).unwrap();
        let (count, waker) = super::super::testkit::counting_waker();
        s.waker = Some(waker);
        s.deliver(Event::Continue);
        s.deliver(Event::Abort);
        assert_eq!(count.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert!(matches!(s.inbox.pop_front(), Some(Event::Continue)));
        assert!(matches!(s.inbox.pop_front(), Some(Event::Abort)));
    }
}
