//! One front-end thread's view of the workers: its channels, the requests in flight on
//! them, the choice of worker for each new request, and the poller that drains responses.
//!
//! Everything here lives on one thread (`Rc`, `RefCell`); the only cross-thread inputs are
//! the supervisor's [`Mailbox`] and the workers' rings. The [`Hub`] holds the state; its
//! methods are grouped by job:
//!
//! | file | job |
//! |---|---|
//! | `mailbox.rs` | supervisor → thread commands, thread → supervisor reports |
//! | `policy.rs` | which worker gets a new request (a pure function) |
//! | `streams.rs` | the stream table; open, feed, end a request's stream; its events |
//! | `links.rs` | attach/detach a worker; slots, records, claims, doorbells towards it |
//! | `responses.rs` | drain the response rings, route each record to its stream |
//! | `health.rs` | violations, lost workers, stalled workers (log, revoke) |
//! | `wake.rs` | the poller and the futures tasks park on (space, drain) |
//! | `observe.rs` | metrics shard, access log batch, request ids |
//!
//! The wait queue for requests no worker accepts yet is `crate::waitq`. Each part has unit
//! tests that run on real memfd segments without io_uring (`testkit.rs`).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::sync::{mpsc, Arc};
use std::task::Waker;

use crate::accesslog;
use crate::load::LoadTable;
use crate::metrics::Metrics;

mod health;
mod links;
mod mailbox;
mod observe;
mod policy;
mod responses;
mod streams;
#[cfg(test)]
mod testkit;
mod wake;

pub use mailbox::{Command, Mailbox, Report};
pub use observe::REQUEST_ID_LEN;
pub use streams::{Event, StreamId};
pub use wake::Need;

use links::Link;
use streams::StreamTable;

#[derive(Default)]
struct Inner {
    links: Vec<Option<Link>>,
    streams: StreamTable,
    /// Responses this thread has seen complete, as a clock for `Link::last_done`.
    completions: u64,
    /// Advances per new stream: whose turn it is among idle workers.
    rotation: usize,
    space_waiters: Vec<Waker>,
    /// Futures waiting in [`Hub::drained`], by id: one entry each, removed when the future
    /// ends or is dropped (a keep-alive connection waits once per request).
    drain_waiters: HashMap<u64, Waker>,
    next_drain_waiter: u64,
    draining: bool,
    /// Told to stop now: the thread stops waiting for its connections.
    forced: bool,
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
    /// The 503 lines of a full queue and of `--queue-timeout` (observe.rs).
    queue_full_lines: RefCell<crate::logthrottle::Throttle>,
    queue_timeout_lines: RefCell<crate::logthrottle::Throttle>,
    request_timeout_lines: RefCell<crate::logthrottle::Throttle>,
    /// Random per thread and start, so that generated request ids never repeat.
    id_prefix: u64,
    id_counter: Cell<u64>,
}

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
            queue_full_lines: RefCell::default(),
            queue_timeout_lines: RefCell::default(),
            request_timeout_lines: RefCell::default(),
            id_prefix: observe::random_u64(),
            id_counter: Cell::new(0),
        }
    }

    pub fn thread(&self) -> u32 {
        self.thread
    }
}

/// The worker behind a stream is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lost;
