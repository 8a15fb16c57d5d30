//! The FIFO queue of requests waiting for a worker, one per front-end thread.
//!
//! Requests that find no worker accepting work take a ticket and wait in arrival order.
//! Only the request at the front may try to open a stream; a freed slot wakes that one
//! request and nobody else. When the front leaves (it got a stream, timed out, or its client
//! left), the next one becomes the front and is woken once, so a burst of freed slots is
//! handed down the queue one request at a time. Each ticket holds at most one waker (a
//! re-poll replaces it), so wakers never pile up however often a waiter polls.
//!
//! Single-threaded (a front-end thread's tasks share it); no io_uring needed, so the unit
//! tests below drive it with hand-made wakers.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::Future;
use std::task::{Context, Poll, Waker};

struct Entry {
    ticket: u64,
    waker: Option<Waker>,
    /// Told it is its turn and not yet seen it.
    notified: bool,
}

#[derive(Default)]
struct Inner {
    next: u64,
    /// Ordered by ticket (tickets only grow and entries are pushed at the back).
    entries: VecDeque<Entry>,
}

#[derive(Default)]
pub struct WaitQueue {
    inner: RefCell<Inner>,
}

/// A place in the queue; dropping it leaves the queue (and hands the turn on if it was the
/// front).
pub struct Ticket<'q> {
    queue: &'q WaitQueue,
    id: u64,
}

impl WaitQueue {
    pub fn len(&self) -> usize {
        self.inner.borrow().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Joins the back of the queue, unless `limit` requests already wait (`None`).
    pub fn join(&self, limit: usize) -> Option<Ticket<'_>> {
        let mut inner = self.inner.borrow_mut();
        if inner.entries.len() >= limit {
            return None;
        }
        let id = inner.next;
        inner.next += 1;
        inner.entries.push_back(Entry {
            ticket: id,
            waker: None,
            notified: false,
        });
        Some(Ticket { queue: self, id })
    }

    /// A slot may have been freed (a response completed, a worker attached): wakes the
    /// request at the front, only that one.
    pub fn notify_front(&self) {
        let waker = {
            let mut inner = self.inner.borrow_mut();
            let Some(front) = inner.entries.front_mut() else {
                return;
            };
            front.notified = true;
            front.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    fn position(inner: &Inner, id: u64) -> Option<usize> {
        inner.entries.binary_search_by_key(&id, |e| e.ticket).ok()
    }

    fn leave(&self, id: u64) {
        let was_front = {
            let mut inner = self.inner.borrow_mut();
            let Some(at) = Self::position(&inner, id) else {
                return;
            };
            inner.entries.remove(at);
            at == 0
        };
        // The turn (and whatever slot came with it) passes to the next in line.
        if was_front {
            self.notify_front();
        }
    }

    /// Wakers currently held (at most one per waiting request).
    #[cfg(test)]
    fn wakers(&self) -> usize {
        let inner = self.inner.borrow();
        inner.entries.iter().filter(|e| e.waker.is_some()).count()
    }
}

impl Ticket<'_> {
    /// Whether this request is at the front: the only one that may try to open a stream.
    pub fn is_front(&self) -> bool {
        let inner = self.queue.inner.borrow();
        inner.entries.front().is_some_and(|e| e.ticket == self.id)
    }

    /// Resolves once this request is told it is its turn (at the front and a slot may be
    /// free). Not cancel-unsafe: a notice that arrives while nobody polls is kept.
    pub fn turn(&self) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(move |cx: &mut Context<'_>| {
            let mut inner = self.queue.inner.borrow_mut();
            let Some(at) = WaitQueue::position(&inner, self.id) else {
                return Poll::Ready(());
            };
            let e = &mut inner.entries[at];
            if std::mem::take(&mut e.notified) {
                e.waker = None;
                return Poll::Ready(());
            }
            match &mut e.waker {
                Some(w) if w.will_wake(cx.waker()) => {}
                slot => *slot = Some(cx.waker().clone()),
            }
            Poll::Pending
        })
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        self.queue.leave(self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::pin::pin;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::Wake;

    #[derive(Default)]
    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn waker() -> (Arc<Count>, Waker) {
        let c = Arc::new(Count::default());
        (c.clone(), Waker::from(c))
    }

    fn woken(c: &Count) -> usize {
        c.0.load(Ordering::Relaxed)
    }

    #[test]
    fn a_freed_slot_wakes_only_the_front() {
        let q = WaitQueue::default();
        let tickets: Vec<_> = (0..3).map(|_| q.join(10).unwrap()).collect();
        let counts: Vec<_> = tickets
            .iter()
            .map(|t| {
                let (c, w) = waker();
                let mut cx = Context::from_waker(&w);
                assert!(pin!(t.turn()).poll(&mut cx).is_pending());
                c
            })
            .collect();
        q.notify_front();
        let seen: Vec<_> = counts.iter().map(|c| woken(c)).collect();
        assert_eq!(seen, [1, 0, 0]);
        assert!(tickets[0].is_front() && !tickets[1].is_front());
    }

    #[test]
    fn the_turn_passes_down_in_arrival_order() {
        let q = WaitQueue::default();
        let mut tickets: VecDeque<_> = (0..5).map(|_| q.join(10).unwrap()).collect();
        let ids: Vec<u64> = tickets.iter().map(|t| t.id).collect();
        let mut served = Vec::new();
        q.notify_front();
        while let Some(t) = tickets.pop_front() {
            // Only the front has its turn; nobody behind it does.
            let (_c, w) = waker();
            let mut cx = Context::from_waker(&w);
            assert!(t.is_front());
            assert!(pin!(t.turn()).poll(&mut cx).is_ready(), "front told");
            for other in &tickets {
                assert!(pin!(other.turn()).poll(&mut cx).is_pending());
            }
            served.push(t.id);
            drop(t); // served: hands the turn on
        }
        assert_eq!(served, ids);
        assert!(q.is_empty());
    }

    #[test]
    fn a_front_that_leaves_unserved_hands_its_turn_on() {
        let q = WaitQueue::default();
        let first = q.join(10).unwrap();
        let second = q.join(10).unwrap();
        let (c, w) = waker();
        assert!(pin!(second.turn())
            .poll(&mut Context::from_waker(&w))
            .is_pending());
        q.notify_front();
        drop(first); // timed out or its client left
        assert_eq!(woken(&c), 1);
        assert!(second.is_front());
    }

    #[test]
    fn polling_often_keeps_one_waker_per_request() {
        let q = WaitQueue::default();
        let t = q.join(10).unwrap();
        let u = q.join(10).unwrap();
        for _ in 0..1000 {
            for t in [&t, &u] {
                let (_c, w) = waker();
                assert!(pin!(t.turn())
                    .poll(&mut Context::from_waker(&w))
                    .is_pending());
            }
        }
        assert_eq!(q.wakers(), 2);
    }

    #[test]
    fn bounded_by_the_limit_and_a_notice_is_not_lost() {
        let q = WaitQueue::default();
        let a = q.join(2).unwrap();
        let _b = q.join(2).unwrap();
        assert!(q.join(2).is_none(), "--limit-queue reached");
        // Notified before anyone polls: the next poll sees it.
        q.notify_front();
        let (_c, w) = waker();
        assert!(pin!(a.turn()).poll(&mut Context::from_waker(&w)).is_ready());
        drop(a);
        assert!(q.join(2).is_some());
    }
}
