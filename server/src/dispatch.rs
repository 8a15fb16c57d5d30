//! One front-end thread's view of the workers: its channels, the requests in flight on
//! them, the choice of worker for each new request, and the poller that drains responses.
//!
//! Everything here lives on one thread (`Rc`, `RefCell`); the only cross-thread inputs are
//! the supervisor's [`Mailbox`] and the workers' rings.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::task::{Poll, Waker};
use std::time::Instant;

use uringapi_protocol::arena::SlotIndex;
use uringapi_protocol::doorbell::EventFd;
use uringapi_protocol::{ChannelError, FrontChannel, Kind, Record, Segment};

use crate::accesslog;
use crate::body_window::Window;
use crate::load::LoadTable;
use crate::metrics::{Metrics, ThreadMetrics};
use crate::zerocopy::SlotLease;

/// Messages from the supervisor to a front-end thread.
pub enum Command {
    /// Start using worker `worker` (new, or a replacement under a new generation).
    Attach {
        worker: usize,
        segment: Arc<Segment>,
        doorbell: EventFd,
        pid: u32,
    },
    /// Worker `worker` is gone: fail its requests in flight with 502 and forget it.
    Detach { worker: usize, generation: u64 },
    /// Stop accepting connections; finish what is in flight.
    Drain,
    /// Worker `worker`'s loop has not run for `silent`: log what this thread has in flight
    /// on it, so that the stuck request can be found.
    Stalled {
        worker: usize,
        silent: std::time::Duration,
    },
}

/// Messages from a front-end thread to the supervisor.
#[derive(Debug)]
pub enum Report {
    /// A worker broke the channel contract; the supervisor kills it.
    Violation {
        worker: usize,
        generation: u64,
        reason: String,
    },
}

/// A front-end thread's inbox. The supervisor pushes and rings the thread's doorbell.
pub struct Mailbox {
    pending: AtomicBool,
    queue: Mutex<Vec<Command>>,
    doorbell: EventFd,
}

impl Mailbox {
    pub fn new() -> std::io::Result<Self> {
        Ok(Self {
            pending: AtomicBool::new(false),
            queue: Mutex::new(Vec::new()),
            doorbell: EventFd::new()?,
        })
    }

    pub fn post(&self, cmd: Command) {
        self.queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(cmd);
        self.pending.store(true, Ordering::Release);
        self.doorbell.ring();
    }

    fn take(&self) -> Vec<Command> {
        if !self.pending.swap(false, Ordering::Acquire) {
            return Vec::new();
        }
        std::mem::take(&mut *self.queue.lock().unwrap_or_else(|p| p.into_inner()))
    }

    pub fn doorbell(&self) -> &EventFd {
        &self.doorbell
    }
}

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

/// A request in flight, from the thread's point of view.
struct Stream {
    worker: usize,
    seq: u32,
    /// "METHOD /path", for the log line that names a stalled worker's requests.
    what: Box<str>,
    since: Instant,
    inbox: VecDeque<Event>,
    waker: Option<Waker>,
    /// The worker has sent the last record for this stream.
    finished: bool,
    /// Request body records on their way to the app (body_window.rs).
    body: Window,
    /// The request's claim word while it may still be taken back (`Record::extra`; 0:
    /// none). Only requests sent whole in one record get one (revoke.rs in http1/conn).
    claim: u64,
}

/// `Stream::worker` once the stream no longer counts against any worker (its response is
/// complete, or its worker is gone).
const NO_WORKER: usize = usize::MAX;

/// Stream ids carry a slab index and a sequence number, so that a late record for a stream
/// that was closed and whose index was reused is recognised and dropped.
pub type StreamId = u64;

fn stream_id(index: usize, seq: u32) -> StreamId {
    (u64::from(seq) << 32) | index as u64
}

struct Link {
    chan: FrontChannel,
    doorbell: EventFd,
    generation: u64,
    pid: u32,
    /// Records were sent since the last doorbell check.
    unflushed: bool,
    /// `Inner::completions` when this thread last saw the worker finish a response: among
    /// workers with as many requests in flight, the one that finished most recently is
    /// the least likely to be blocked (a loop stuck in `time.sleep` finishes nothing).
    last_done: u64,
}

#[derive(Default)]
struct Inner {
    links: Vec<Option<Link>>,
    streams: Vec<Option<Stream>>,
    free_streams: Vec<usize>,
    next_seq: u32,
    /// Responses this thread has seen complete, as a clock for `Link::last_done`.
    completions: u64,
    /// Advances per new stream: whose turn it is among idle workers.
    rotation: usize,
    space_waiters: Vec<Waker>,
    /// Futures waiting in [`Hub::drained`], by id: one entry each, removed when the future
    /// ends or is dropped (a keep-alive connection waits once per request).
    drain_waiters: std::collections::HashMap<u64, Waker>,
    next_drain_waiter: u64,
    draining: bool,
}

/// A front-end thread's hub.
pub struct Hub {
    thread: u32,
    inner: RefCell<Inner>,
    mailbox: Arc<Mailbox>,
    reports: mpsc::Sender<Report>,
    load: Arc<LoadTable>,
    /// Most requests in flight per worker (`--limit-concurrency`); 0: no limit.
    limit: u32,
    metrics: Arc<Metrics>,
    /// This thread's batch of access log lines, when the log is on.
    access_log: RefCell<Option<(accesslog::Buffer, accesslog::Format)>>,
    /// Live connections, for the drain.
    pub connections: Cell<usize>,
    /// Requests waiting for a worker.
    pub queued: Cell<usize>,
    /// Those requests in arrival order (all workers stalled, retiring or at the limit).
    pub waitq: crate::waitq::WaitQueue,
    /// Random per thread and start, so that generated request ids never repeat.
    id_prefix: u64,
    id_counter: Cell<u64>,
}

/// Most records taken from one worker's ring per poll round.
const DRAIN_BATCH: usize = 256;

impl Hub {
    pub fn new(
        thread: u32,
        mailbox: Arc<Mailbox>,
        reports: mpsc::Sender<Report>,
        load: Arc<LoadTable>,
        limit: u32,
        metrics: Arc<Metrics>,
        access_log: Option<(Arc<accesslog::Sink>, accesslog::Format)>,
    ) -> Self {
        Self {
            thread,
            inner: RefCell::new(Inner::default()),
            mailbox,
            reports,
            load,
            limit,
            metrics,
            access_log: RefCell::new(
                access_log.map(|(sink, fmt)| (accesslog::Buffer::new(sink), fmt)),
            ),
            connections: Cell::new(0),
            queued: Cell::new(0),
            waitq: crate::waitq::WaitQueue::default(),
            id_prefix: random_u64(),
            id_counter: Cell::new(0),
        }
    }

    pub fn metrics(&self) -> &ThreadMetrics {
        self.metrics.thread(self.thread as usize)
    }

    pub fn load(&self) -> &LoadTable {
        &self.load
    }

    pub fn access_log_on(&self) -> bool {
        self.access_log.borrow().is_some()
    }

    /// Adds a line to this thread's access log batch (written at 32 KiB or by the timer).
    pub fn log_access(&self, entry: &accesslog::Entry<'_>) {
        if let Some((buf, fmt)) = self.access_log.borrow_mut().as_mut() {
            buf.push(*fmt, entry);
        }
    }

    pub fn flush_access_log(&self) {
        if let Some((buf, _)) = self.access_log.borrow_mut().as_mut() {
            buf.flush();
        }
    }

    /// Writes a fresh request id (32 lowercase hex digits) into `out`.
    pub fn new_request_id(&self, out: &mut [u8; crate::http1::conn::REQUEST_ID_LEN]) {
        let n = self.id_counter.get().wrapping_add(1);
        self.id_counter.set(n);
        let id = (u128::from(self.id_prefix) << 64) | u128::from(n);
        const HEX: &[u8; 16] = b"0123456789abcdef";
        for (i, b) in out.iter_mut().enumerate() {
            *b = HEX[((id >> (124 - 4 * i)) & 0xf) as usize];
        }
    }

    pub fn thread(&self) -> u32 {
        self.thread
    }

    fn attach(&self, worker: usize, segment: Arc<Segment>, doorbell: EventFd, pid: u32) {
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
    fn detach(&self, worker: usize, generation: u64) {
        let mut inner = self.inner.borrow_mut();
        let matches = inner
            .links
            .get(worker)
            .and_then(Option::as_ref)
            .is_some_and(|l| l.generation == generation);
        if matches {
            inner.links[worker] = None;
            drop(inner);
            self.fail_streams_of(worker);
        }
    }

    fn fail_streams_of(&self, worker: usize) {
        let mut inner = self.inner.borrow_mut();
        let load = self.load.get(worker);
        for s in inner.streams.iter_mut().flatten() {
            if s.worker == worker && !s.finished {
                s.finished = true;
                load.done(false);
                s.worker = NO_WORKER;
                s.inbox.push_back(Event::WorkerLost);
                if let Some(w) = s.waker.take() {
                    w.wake();
                }
            }
        }
    }

    /// A worker broke the contract: report it, stop using it, fail its requests.
    fn violation(&self, worker: usize, err: &dyn std::fmt::Display) {
        let generation = match self
            .inner
            .borrow()
            .links
            .get(worker)
            .and_then(Option::as_ref)
        {
            Some(l) => l.generation,
            None => return,
        };
        let reason = err.to_string();
        tracing::error!(worker, generation, %reason, "worker broke the channel contract; it will be replaced");
        let _ = self.reports.send(Report::Violation {
            worker,
            generation,
            reason,
        });
        self.detach(worker, generation);
    }

    /// Opens a stream for request `what` on the worker with the fewest requests in flight
    /// (over all threads) among those that accept work: attached, not stalled, not retiring,
    /// under `--limit-concurrency`. `None`: no worker accepts now; wait with `wait_queue`.
    pub fn open_stream(&self, what: impl FnOnce() -> Box<str>) -> Option<(StreamId, usize)> {
        let mut inner = self.inner.borrow_mut();
        // Ties: among busy workers, the one that finished a response most recently (a loop
        // stuck in a blocking call finishes nothing); among idle ones, round-robin, so that
        // light sequential traffic still spreads over every worker.
        inner.rotation = inner.rotation.wrapping_add(1);
        let (n, start) = (inner.links.len().max(1), inner.rotation);
        let worker = inner
            .links
            .iter()
            .enumerate()
            .filter_map(|(i, l)| l.as_ref().map(|l| (i, l)))
            .filter(|(i, _)| self.load.get(*i).accepts(self.limit))
            .map(|(i, l)| {
                let in_flight = self.load.get(i).in_flight();
                let recent = if in_flight > 0 { l.last_done } else { 0 };
                let turn = (i + n - start % n) % n;
                (in_flight, std::cmp::Reverse(recent), turn, i)
            })
            .min()?
            .3;
        self.load.get(worker).dispatched();
        inner.next_seq = inner.next_seq.wrapping_add(1);
        let seq = inner.next_seq;
        let stream = Stream {
            worker,
            seq,
            what: what(),
            since: Instant::now(),
            inbox: VecDeque::new(),
            waker: None,
            finished: false,
            body: Window::default(),
            claim: 0,
        };
        let index = match inner.free_streams.pop() {
            Some(i) => {
                inner.streams[i] = Some(stream);
                i
            }
            None => {
                inner.streams.push(Some(stream));
                inner.streams.len() - 1
            }
        };
        Some((stream_id(index, seq), worker))
    }

    fn stream_mut(inner: &mut Inner, id: StreamId) -> Option<&mut Stream> {
        let (index, seq) = ((id & 0xffff_ffff) as usize, (id >> 32) as u32);
        inner
            .streams
            .get_mut(index)?
            .as_mut()
            .filter(|s| s.seq == seq)
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
        let Some(s) = Self::stream_mut(&mut inner, id) else {
            return;
        };
        let (worker, finished, claim) = (s.worker, s.finished, s.claim);
        let index = (id & 0xffff_ffff) as usize;
        // Events still queued for the stream may hold slot leases, whose drop borrows
        // `inner` to hand the slot back: the stream is dropped only after `inner` is.
        let stream = inner.streams[index].take();
        inner.free_streams.push(index);
        if worker == NO_WORKER {
            drop(inner);
            drop(stream);
            return;
        }
        self.load.get(worker).done(false);
        if let Some(link) = inner.links.get_mut(worker).and_then(Option::as_mut) {
            link.chan.free_claim(claim);
            if !finished {
                // Best effort: a full ring means the worker is far behind; it will see the
                // stream's records dropped on our side either way.
                if let Ok(true) = link.chan.send(Record::new(notice, id)) {
                    link.unflushed = true;
                }
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
        let Some(s) = Self::stream_mut(&mut inner, id) else {
            return;
        };
        let worker = s.worker;
        if s.finished || worker == NO_WORKER {
            return;
        }
        if let Some(link) = inner.links.get_mut(worker).and_then(Option::as_mut) {
            if let Ok(true) = link.chan.send(Record::new(Kind::Disconnect, id)) {
                link.unflushed = true;
            }
        }
        drop(inner);
        self.flush(worker);
    }

    /// Tells the worker behind a WebSocket that the client side ended with `code` (unless
    /// the app closed it first).
    pub fn notify_ws_disconnect(&self, id: StreamId, code: u16) {
        let mut inner = self.inner.borrow_mut();
        let Some(s) = Self::stream_mut(&mut inner, id) else {
            return;
        };
        let worker = s.worker;
        if s.finished || worker == NO_WORKER {
            return;
        }
        // The stream stays open (and counted) until the connection closes it, so that
        // records the worker sent meanwhile are still recognised and dropped.
        if let Some(link) = inner.links.get_mut(worker).and_then(Option::as_mut) {
            let rec = Record {
                aux: u32::from(code),
                ..Record::new(Kind::WsDisconnect, id)
            };
            // Best effort, as for Disconnect: a full ring means the worker is far behind.
            if let Ok(true) = link.chan.send(rec) {
                link.unflushed = true;
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
            let Some(s) = Self::stream_mut(&mut inner, id) else {
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

    /// Whether a WebSocket may send another client message record to its worker.
    pub fn ws_window_open(&self, id: StreamId) -> bool {
        Self::stream_mut(&mut self.inner.borrow_mut(), id)
            .is_some_and(|s| s.body.open_for(uringapi_protocol::record::WS_WINDOW))
    }

    /// A worker may accept a queued request (a response completed, a worker was attached):
    /// the request at the front of the wait queue tries, only that one.
    fn wake_queue(&self) {
        self.waitq.notify_front();
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

    /// Waits until the worker may have freed slots (`Need::Slot`) or ring room
    /// (`Need::Room`), or is gone.
    pub async fn wait_space(&self, worker: usize, need: Need) {
        let mut registered = false;
        std::future::poll_fn(|cx| {
            if registered {
                return Poll::Ready(());
            }
            registered = true;
            let mut inner = self.inner.borrow_mut();
            match inner.links.get_mut(worker).and_then(Option::as_mut) {
                None => Poll::Ready(()),
                Some(link) => {
                    link.chan.my_space_flag().prepare_sleep();
                    let ready = match need {
                        Need::Slot => link.chan.has_returns(),
                        Need::Room => link.chan.has_room(),
                    };
                    if ready.unwrap_or(true) {
                        link.chan.my_space_flag().awake();
                        return Poll::Ready(());
                    }
                    inner.space_waiters.push(cx.waker().clone());
                    Poll::Pending
                }
            }
        })
        .await
    }

    /// Puts an event back at the front of a stream's inbox.
    pub fn unget_event(&self, id: StreamId, ev: Event) {
        if let Some(s) = Self::stream_mut(&mut self.inner.borrow_mut(), id) {
            s.inbox.push_front(ev);
        }
    }

    /// The next event for a stream.
    pub async fn next_event(&self, id: StreamId) -> Event {
        std::future::poll_fn(|cx| {
            let mut inner = self.inner.borrow_mut();
            let Some(s) = Self::stream_mut(&mut inner, id) else {
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

    /// Returns a response slot to its worker (from `SlotLease::drop`).
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

    /// Drains every channel once; returns whether anything arrived.
    fn poll_rings(self: &Rc<Self>) -> bool {
        let mut got = false;
        let n = self.inner.borrow().links.len();
        for worker in 0..n {
            let mut popped = false;
            // At most a batch per worker per round, so a worker that floods its ring (with
            // records for streams long gone, say) cannot starve the others or the sockets.
            for _ in 0..DRAIN_BATCH {
                let step = {
                    let mut inner = self.inner.borrow_mut();
                    let Some(link) = inner.links.get_mut(worker).and_then(Option::as_mut) else {
                        break;
                    };
                    link.chan
                        .recv()
                        .map(|inc| inc.map(|inc| (inc, link.generation)))
                };
                match step {
                    Ok(Some((inc, generation))) => {
                        got = true;
                        popped = true;
                        if let Err(e) = self.route(worker, generation, inc) {
                            self.violation(worker, &e);
                            break;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        self.violation(worker, &e);
                        break;
                    }
                }
            }
            if popped {
                // Popping made ring room: a worker blocked for room must hear of it
                // (ring.rs rule 4, applied to "wants space").
                if let Some(link) = self
                    .inner
                    .borrow()
                    .links
                    .get(worker)
                    .and_then(Option::as_ref)
                {
                    if link.chan.worker_wants_space() {
                        link.doorbell.ring();
                    }
                }
            }
        }
        got
    }

    /// Hands one validated response record to its stream.
    fn route(
        self: &Rc<Self>,
        worker: usize,
        generation: u64,
        inc: uringapi_protocol::Incoming,
    ) -> Result<(), RouteError> {
        let mut head = Vec::new();
        let mut path = Vec::new();
        // Build the lease first so that every early return hands the slot back.
        let mut body = {
            let inner = self.inner.borrow();
            let chan = &inner.links[worker]
                .as_ref()
                .expect("link checked by caller")
                .chan;
            if matches!(inc.kind, Kind::Response | Kind::PathSend | Kind::WsAccept) {
                let (slot, len) = inc.slot.expect("these records carry a slot (validated)");
                chan.copy_out(slot, 0..inc.head_len, &mut head);
                if inc.kind == Kind::PathSend {
                    chan.copy_out(slot, inc.head_len..len, &mut path);
                }
            }
            inc.slot.map(|(slot, len)| {
                SlotLease::new(self.clone(), worker, generation, chan, slot, len)
            })
        };
        if matches!(inc.kind, Kind::Response | Kind::WsAccept) {
            body = body.map(|lease| lease.skip(inc.head_len));
        }
        if inc.kind == Kind::PathSend {
            // Head and path are copied out: the slot goes back now.
            body = None;
        }
        let body = body.filter(|b| !b.is_empty());
        let mut inner = self.inner.borrow_mut();
        let Some(s) = Self::stream_mut(&mut inner, inc.stream) else {
            // The client left and the stream closed; the lease drops and frees the slot.
            return Ok(());
        };
        if inc.kind == Kind::BodyCredit {
            return Self::route_credit(s, worker, inc);
        }
        if s.finished {
            return Err(RouteError::AfterEnd(inc.stream));
        }
        if s.worker != worker {
            return Err(RouteError::ForeignStream(inc.stream));
        }
        if inc.kind == Kind::Continue {
            s.inbox.push_back(Event::Continue);
            if let Some(w) = s.waker.take() {
                w.wake();
            }
            return Ok(());
        }
        let ev = match inc.kind {
            Kind::Response => Event::Head {
                head,
                body,
                more: inc.more,
            },
            Kind::ResponseBody => Event::Body {
                body,
                more: inc.more,
            },
            Kind::PathSend => Event::File {
                head: (!head.is_empty()).then_some(head),
                path,
            },
            Kind::WsAccept => Event::WsAccept { head },
            Kind::WsSend => Event::WsSend {
                data: body,
                text: inc.value == uringapi_protocol::record::WS_TEXT,
                more: inc.more,
            },
            Kind::WsClose => Event::WsClose {
                code: inc.value,
                reason: body,
            },
            _ => Event::Abort,
        };
        // A WebSocket's stream lasts until the app closes it (or the client leaves).
        s.finished = match inc.kind {
            Kind::WsAccept | Kind::WsSend => false,
            Kind::WsClose => true,
            _ => !inc.more || inc.kind == Kind::Abort,
        };
        let finished = s.finished;
        s.inbox.push_back(ev);
        if let Some(w) = s.waker.take() {
            w.wake();
        }
        if finished {
            self.load.get(worker).done(inc.kind != Kind::Abort);
            // The stream stays open until its connection task closes it; mark the worker's
            // side done so that close does not send a Disconnect nor count it twice.
            s.worker = NO_WORKER;
            let claim = std::mem::take(&mut s.claim);
            inner.completions += 1;
            let now = inner.completions;
            if let Some(link) = inner.links[worker].as_mut() {
                link.last_done = now;
                link.chan.free_claim(claim);
            }
            drop(inner);
            self.wake_queue();
        }
        Ok(())
    }

    /// A `BodyCredit` from the worker: the app took body records; the connection may send
    /// more. Late credit (the response is complete) is dropped.
    fn route_credit(
        s: &mut Stream,
        worker: usize,
        inc: uringapi_protocol::Incoming,
    ) -> Result<(), RouteError> {
        if s.finished || s.worker == NO_WORKER {
            return Ok(());
        }
        if s.worker != worker {
            return Err(RouteError::ForeignStream(inc.stream));
        }
        s.body
            .credit(inc.credit)
            .map_err(|o| RouteError::Overcredit(inc.stream, o.credit, o.unreturned))?;
        if let Some(w) = s.waker.take() {
            w.wake();
        }
        Ok(())
    }

    /// Counts a body record sent on a stream against its window.
    pub fn body_sent(&self, id: StreamId) {
        if let Some(s) = Self::stream_mut(&mut self.inner.borrow_mut(), id) {
            s.body.sent();
        }
    }

    /// Waits until the stream's body window is open (`Ok`), or an event arrives first
    /// (`Err`: the response started, or the worker is gone; the event stays queued).
    pub async fn wait_body_window(&self, id: StreamId) -> Result<(), ()> {
        std::future::poll_fn(|cx| {
            let mut inner = self.inner.borrow_mut();
            let Some(s) = Self::stream_mut(&mut inner, id) else {
                return Poll::Ready(Err(()));
            };
            if !s.inbox.is_empty() {
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

    fn wake_space_waiters(&self) {
        let waiters = std::mem::take(&mut self.inner.borrow_mut().space_waiters);
        if waiters.is_empty() {
            return;
        }
        for link in self.inner.borrow().links.iter().flatten() {
            link.chan.my_space_flag().awake();
        }
        waiters.into_iter().for_each(Waker::wake);
    }

    fn handle_commands(&self) -> bool {
        let cmds = self.mailbox.take();
        let any = !cmds.is_empty();
        for cmd in cmds {
            match cmd {
                Command::Attach {
                    worker,
                    segment,
                    doorbell,
                    pid,
                } => self.attach(worker, segment, doorbell, pid),
                Command::Detach { worker, generation } => self.detach(worker, generation),
                Command::Drain => {
                    let mut inner = self.inner.borrow_mut();
                    inner.draining = true;
                    inner.drain_waiters.drain().for_each(|(_, w)| w.wake());
                }
                Command::Stalled { worker, silent } => {
                    self.log_stalled(worker, silent);
                    self.revoke_queued(worker);
                }
            }
        }
        any
    }

    /// Makes a request about to be sent whole in one record revocable (ring.rs rule 8):
    /// returns the `Record::extra` to send with it (0: not revocable, every word in use).
    pub fn queue_claim(&self, id: StreamId, worker: usize) -> u64 {
        let mut inner = self.inner.borrow_mut();
        let Inner { links, streams, .. } = &mut *inner;
        let Some(link) = links.get_mut(worker).and_then(Option::as_mut) else {
            return 0;
        };
        let index = (id & 0xffff_ffff) as usize;
        let Some(s) = streams
            .get_mut(index)
            .and_then(Option::as_mut)
            .filter(|s| s.seq == (id >> 32) as u32 && s.worker == worker)
        else {
            return 0;
        };
        link.chan.free_claim(std::mem::take(&mut s.claim));
        s.claim = link.chan.queue_claim();
        s.claim
    }

    /// Takes back the requests of a stalled worker that it has not started (ring.rs rule
    /// 9), so that their connections send them to another worker; returns how many.
    fn revoke_queued(&self, worker: usize) -> usize {
        let mut inner = self.inner.borrow_mut();
        let Inner { links, streams, .. } = &mut *inner;
        let Some(link) = links.get_mut(worker).and_then(Option::as_mut) else {
            return 0;
        };
        let load = self.load.get(worker);
        let mut revoked = 0;
        for s in streams.iter_mut().flatten() {
            if s.worker != worker || s.finished || s.claim == 0 || !s.inbox.is_empty() {
                continue;
            }
            // Anything but a clean QUEUED -> REVOKED leaves the request with the worker,
            // as without revocation (rule 10).
            if !link.chan.revoke_claim(s.claim) {
                continue;
            }
            link.chan.free_claim(std::mem::take(&mut s.claim));
            // The worker will not run it: no record of its may follow (one would be a
            // contract violation), and it no longer counts against the worker.
            s.worker = NO_WORKER;
            s.finished = true;
            load.done(false);
            s.inbox.push_back(Event::Revoked);
            if let Some(w) = s.waker.take() {
                w.wake();
            }
            revoked += 1;
        }
        drop(inner);
        if revoked > 0 {
            tracing::info!(
                worker,
                thread = self.thread,
                revoked,
                "took back requests the stalled worker had not started; sending them to another"
            );
            self.wake_queue();
        }
        revoked
    }

    /// "METHOD /path" of a stream, for the log lines of a request sent again.
    pub fn stream_what(&self, id: StreamId) -> Box<str> {
        Self::stream_mut(&mut self.inner.borrow_mut(), id)
            .map_or_else(|| "?".into(), |s| s.what.clone())
    }

    fn log_stalled(&self, worker: usize, silent: std::time::Duration) {
        let inner = self.inner.borrow();
        let pid = inner
            .links
            .get(worker)
            .and_then(Option::as_ref)
            .map_or(0, |l| l.pid);
        let mut stuck: Vec<&Stream> = inner
            .streams
            .iter()
            .flatten()
            .filter(|s| s.worker == worker)
            .collect();
        // Oldest first: with one request in flight it is the culprit; with several, the
        // blocking one is usually the oldest.
        stuck.sort_by_key(|s| s.since);
        for s in stuck.iter().take(5) {
            tracing::warn!(
                worker,
                pid,
                thread = self.thread,
                "worker's loop silent for {} ms; in flight on it: {} (running {} ms)",
                silent.as_millis(),
                s.what,
                s.since.elapsed().as_millis()
            );
        }
        if stuck.len() > 5 {
            tracing::warn!(worker, pid, "... and {} more in flight", stuck.len() - 5);
        }
    }

    pub fn is_draining(&self) -> bool {
        self.inner.borrow().draining
    }

    /// Resolves once the supervisor asks this thread to drain.
    pub async fn drained(&self) {
        /// This future's entry in `drain_waiters`, taken out again when it is dropped.
        struct Entry<'a>(&'a Hub, Option<u64>);
        impl Drop for Entry<'_> {
            fn drop(&mut self) {
                if let Some(id) = self.1 {
                    self.0.inner.borrow_mut().drain_waiters.remove(&id);
                }
            }
        }
        let mut entry = Entry(self, None);
        std::future::poll_fn(|cx| {
            let mut inner = self.inner.borrow_mut();
            if inner.draining {
                return Poll::Ready(());
            }
            let id = *entry.1.get_or_insert_with(|| {
                inner.next_drain_waiter += 1;
                inner.next_drain_waiter
            });
            inner.drain_waiters.insert(id, cx.waker().clone());
            Poll::Pending
        })
        .await
    }

    /// Whether anything is waiting: responses, returns wanted by a waiter, or commands.
    fn recheck(&self) -> bool {
        let mut inner = self.inner.borrow_mut();
        let want_space = !inner.space_waiters.is_empty();
        let mut any = false;
        for link in inner.links.iter_mut().flatten() {
            any |= link.chan.has_responses().unwrap_or(true);
            if want_space {
                any |= link.chan.has_returns().unwrap_or(true);
            }
        }
        any
    }

    fn set_sleeping(&self, asleep: bool) {
        let inner = self.inner.borrow();
        let want_space = !inner.space_waiters.is_empty();
        for link in inner.links.iter().flatten() {
            if asleep {
                link.chan.my_sleep_flag().prepare_sleep();
                if want_space {
                    link.chan.my_space_flag().prepare_sleep();
                }
            } else {
                link.chan.my_sleep_flag().awake();
            }
        }
    }

    /// The response poller: drains rings while they give records, then sleeps on the
    /// thread's doorbell with the sleeping flags set (ring.rs rule 4).
    ///
    /// It does not spin on empty rings. PERF: every yield is a turn of monoio's loop, and a
    /// turn with a task ready costs an io_uring_enter even with nothing to submit, so 64
    /// empty rounds cost about 64 syscalls per wait. Without them the front end's CPU per
    /// request under fastapi-json went from about 27 to 23 µs, hello unchanged (A/B runs of
    /// `benches/e2e/run.py --servers uringapi --apps hello,fastapi-json`, 2026-12-03).
    pub async fn poller(self: Rc<Self>, doorbell: monoio::net::UnixStream) {
        loop {
            let cmds = self.handle_commands();
            let got = self.poll_rings();
            self.wake_space_waiters();
            if got || cmds {
                yield_now().await;
                continue;
            }
            self.set_sleeping(true);
            if self.recheck() || self.mailbox.pending.load(Ordering::Acquire) {
                self.set_sleeping(false);
                continue;
            }
            // The eventfd is polled for readability, then drained by hand (see frontend.rs).
            let _ = doorbell.readable(false).await;
            self.mailbox.doorbell.drain();
            self.set_sleeping(false);
        }
    }
}

/// 64 random bits (fastrand's per-thread generator, seeded from the OS at first use).
fn random_u64() -> u64 {
    fastrand::u64(..)
}

/// Lets the other tasks of this thread (and the driver's completions) run once.
async fn yield_now() {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if yielded {
            return Poll::Ready(());
        }
        yielded = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    })
    .await
}

/// What a producer is waiting for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    Slot,
    Room,
}

/// The worker behind a stream is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lost;

#[derive(Debug, thiserror::Error)]
enum RouteError {
    #[error("record for stream {0:#x}, which belongs to another worker")]
    ForeignStream(u64),
    #[error("record for stream {0:#x} after its last record")]
    AfterEnd(u64),
    #[error("body credit {1} for stream {0:#x}, which has {2} body records unreturned")]
    Overcredit(u64, u32, u32),
}
