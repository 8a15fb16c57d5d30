//! A hub with real workers' channels for the unit tests: real memfd segments attached
//! through the mailbox, and the worker's end of each channel (`WorkerChannel`) in the
//! test's hands. No io_uring: the tests call the poller's steps and poll futures by hand.

use std::cell::{RefCell, RefMut};
use std::future::Future;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::task::{Context, Poll, Wake, Waker};

use uringapi_protocol::doorbell::EventFd;
use uringapi_protocol::{Geometry, Segment, WorkerChannel};

use super::mailbox::{Command, Mailbox, Report};
use super::streams::{Event, StreamId};
use super::Hub;
use crate::load::LoadTable;
use crate::metrics::Metrics;

const GEOMETRY: Geometry = Geometry {
    threads: 1,
    ring_capacity: 8,
    slots: 4,
    slot_size: 4096,
};

struct Worker {
    segment: Arc<Segment>,
    doorbell: EventFd,
    chan: RefCell<WorkerChannel>,
}

pub(super) struct Rig {
    pub hub: Rc<Hub>,
    pub mailbox: Arc<Mailbox>,
    pub reports: mpsc::Receiver<Report>,
    pub load: Arc<LoadTable>,
    pub metrics: Arc<Metrics>,
    workers: Vec<Worker>,
}

impl Rig {
    /// A hub for thread 0 with `workers` workers attached (generations 1, 2, ...).
    pub fn new(workers: usize) -> Self {
        let mailbox = Arc::new(Mailbox::new().expect("eventfd"));
        let (tx, reports) = mpsc::channel();
        let load = Arc::new(LoadTable::default());
        let metrics = Metrics::new(1);
        let hub = Rc::new(Hub::new(
            0,
            mailbox.clone(),
            tx,
            load.clone(),
            0,
            metrics.clone(),
            None,
        ));
        let workers: Vec<_> = (0..workers)
            .map(|i| {
                let segment =
                    Arc::new(Segment::create(GEOMETRY, i as u64 + 1).expect("memfd segment"));
                let doorbell = EventFd::new().expect("eventfd");
                mailbox.post(Command::Attach {
                    worker: i,
                    segment: segment.clone(),
                    doorbell: doorbell.try_clone().expect("dup"),
                    pid: 1000 + i as u32,
                });
                Worker {
                    chan: RefCell::new(WorkerChannel::new(segment.clone(), 0)),
                    segment,
                    doorbell,
                }
            })
            .collect();
        assert_eq!(hub.handle_commands(), !workers.is_empty());
        Self {
            hub,
            mailbox,
            reports,
            load,
            metrics,
            workers,
        }
    }

    pub fn geometry(&self) -> Geometry {
        GEOMETRY
    }

    pub fn generation(&self, worker: usize) -> u64 {
        self.workers[worker].segment.generation()
    }

    pub fn worker_segment(&self, worker: usize) -> &Segment {
        &self.workers[worker].segment
    }

    /// The doorbell the hub rings to wake the worker.
    pub fn worker_doorbell(&self, worker: usize) -> &EventFd {
        &self.workers[worker].doorbell
    }

    /// The worker's end of its channel to this thread.
    pub fn worker_channel(&self, worker: usize) -> RefMut<'_, WorkerChannel> {
        self.workers[worker].chan.borrow_mut()
    }

    /// The stream's next event if one is queued now.
    pub fn next_event(&self, id: StreamId) -> Option<Event> {
        let (_, waker) = counting_waker();
        let fut = std::pin::pin!(self.hub.next_event(id));
        match fut.poll(&mut Context::from_waker(&waker)) {
            Poll::Ready(ev) => Some(ev),
            Poll::Pending => None,
        }
    }

    /// Parks `waker` on the stream, as a connection task waiting for its next event does.
    pub fn set_waker(&self, id: StreamId, waker: Waker) {
        self.hub
            .inner
            .borrow_mut()
            .streams
            .get_mut(id)
            .unwrap()
            .waker = Some(waker);
    }
}

/// A waker's wake-up count.
pub(super) struct Counter(AtomicUsize);

impl Counter {
    pub fn load(&self, order: Ordering) -> usize {
        self.0.load(order)
    }
}

impl Wake for Counter {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// A waker that counts its wake-ups.
pub(super) fn counting_waker() -> (Arc<Counter>, Waker) {
    let c = Arc::new(Counter(AtomicUsize::new(0)));
    (c.clone(), Waker::from(c))
}
