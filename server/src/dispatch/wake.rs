//! Waking: the thread's poller (commands, response rings, then sleep on the doorbell with
//! the sleeping flags set), and the futures connection tasks park on: room in a worker's
//! ring or arena, the drain, and (through the wait queue) a worker that accepts work.

use std::rc::Rc;
use std::task::{Poll, Waker};

use super::mailbox::Command;
use super::Hub;

/// What a producer is waiting for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    Slot,
    Room,
}

impl Hub {
    /// Runs the supervisor's commands; returns whether there were any.
    pub(super) fn handle_commands(&self) -> bool {
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
                Command::Detach { worker, generation } => self.detach_exited(worker, generation),
                Command::Drain | Command::Force => {
                    let mut inner = self.inner.borrow_mut();
                    inner.draining = true;
                    inner.forced |= matches!(cmd, Command::Force);
                    inner.drain_waiters.drain().for_each(|(_, w)| w.wake());
                }
                Command::Stalled { worker, silent } => {
                    self.log_stalled(worker, silent);
                    self.revoke_queued(worker, "the stalled worker");
                }
            }
        }
        any
    }

    /// A worker may accept a queued request (a response completed, a worker was attached):
    /// the request at the front of the wait queue tries, only that one.
    pub(super) fn wake_queue(&self) {
        self.waitq.notify_front();
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

    pub fn is_draining(&self) -> bool {
        self.inner.borrow().draining
    }

    /// Whether the supervisor said to stop now rather than drain.
    pub fn is_forced(&self) -> bool {
        self.inner.borrow().forced
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

    /// One round of the poller without the sleep: commands, response rings, space waiters.
    /// Returns whether it did anything (then the poller yields and goes again).
    pub(super) fn poll_once(self: &Rc<Self>) -> bool {
        // What a worker wrote before it exited reaches its streams before its Detach is
        // handled (a retiring worker's WebSocket closes 1001, not 1011 "worker lost").
        let early = self.mailbox.pending() && self.poll_rings();
        let cmds = self.handle_commands();
        let got = self.poll_rings() || early;
        self.wake_space_waiters();
        got || cmds
    }

    /// Sets the sleeping flags and re-checks (ring.rs rule 4, the consumer's half): `true`
    /// if the thread may now block on its doorbell, `false` (flags cleared again) if
    /// something arrived meanwhile.
    pub(super) fn prepare_sleep(&self) -> bool {
        self.set_sleeping(true);
        if self.recheck() || self.mailbox.pending() {
            self.set_sleeping(false);
            return false;
        }
        true
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
            if self.poll_once() {
                yield_now().await;
                continue;
            }
            if !self.prepare_sleep() {
                continue;
            }
            // The eventfd is polled for readability, then drained by hand (see frontend.rs).
            let _ = doorbell.readable(false).await;
            self.mailbox.doorbell().drain();
            self.set_sleeping(false);
        }
    }
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

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::pin::pin;
    use std::sync::atomic::Ordering;
    use std::task::Context;

    use uringapi_protocol::{Kind, Record};

    use super::super::testkit::{counting_waker, Rig};
    use super::*;

    #[test]
    fn drain_wakes_every_waiter_and_dropped_waiters_leave_no_waker() {
        let rig = Rig::new(1);
        let (c1, w1) = counting_waker();
        let (c2, w2) = counting_waker();
        let mut a = Box::pin(rig.hub.drained());
        {
            // Polled many times (a keep-alive connection waits once per request), then
            // dropped: its entry goes with it.
            let mut b = pin!(rig.hub.drained());
            for _ in 0..100 {
                assert!(b.as_mut().poll(&mut Context::from_waker(&w2)).is_pending());
            }
        }
        assert!(a.as_mut().poll(&mut Context::from_waker(&w1)).is_pending());
        assert_eq!(rig.hub.inner.borrow().drain_waiters.len(), 1);

        rig.mailbox.post(Command::Drain);
        assert!(rig.hub.poll_once(), "a command ran");
        assert!(rig.hub.is_draining());
        assert_eq!(c1.load(Ordering::SeqCst), 1);
        assert_eq!(
            c2.load(Ordering::SeqCst),
            0,
            "the dropped future is not woken"
        );
        assert!(a.as_mut().poll(&mut Context::from_waker(&w1)).is_ready());
        assert!(pin!(rig.hub.drained())
            .poll(&mut Context::from_waker(&w1))
            .is_ready());
    }

    #[test]
    fn sleep_is_refused_while_a_response_or_command_waits() {
        let rig = Rig::new(1);
        assert!(!rig.hub.poll_once(), "nothing to do");
        assert!(rig.hub.prepare_sleep(), "idle: may sleep");
        rig.hub.set_sleeping(false);

        let (id, w) = rig.hub.open_stream(|| "GET /".into(), None).unwrap();
        {
            let mut wc = rig.worker_channel(w);
            assert!(wc.send(Record::new(Kind::Abort, id)).unwrap());
        }
        assert!(!rig.hub.prepare_sleep(), "a response is in the ring");
        assert!(rig.hub.poll_once());
        assert!(rig.hub.prepare_sleep());
        rig.hub.set_sleeping(false);

        rig.mailbox.post(Command::Drain);
        assert!(!rig.hub.prepare_sleep(), "a command is pending");
    }

    #[test]
    fn a_worker_that_sleeps_is_rung_once_records_are_flushed() {
        let rig = Rig::new(1);
        let (id, w) = rig.hub.open_stream(|| "GET /".into(), None).unwrap();
        let doorbell = rig.worker_doorbell(w);
        rig.worker_segment(w).worker_sleeping().prepare_sleep();
        rig.hub.send(w, Record::new(Kind::Request, id)).unwrap();
        assert!(!doorbell.drain(), "send alone does not ring");
        rig.hub.flush(w);
        assert!(doorbell.drain(), "flush rang the sleeping worker");
        rig.hub.flush(w);
        assert!(!doorbell.drain(), "nothing new: no second ring");
    }

    #[test]
    fn a_space_waiter_is_woken_when_the_worker_returns_a_slot() {
        let rig = Rig::new(1);
        let w = 0;
        let mut held = Vec::new();
        while let Some(slot) = rig.hub.take_slot(w).unwrap() {
            held.push(slot);
        }
        let (id, _) = rig.hub.open_stream(|| "POST /".into(), None).unwrap();
        rig.hub
            .send(
                w,
                Record::new(Kind::Request, id).with_slot(held[0].get(), 1, 1),
            )
            .unwrap();
        let (count, waker) = counting_waker();
        let mut wait = Box::pin(rig.hub.wait_space(w, Need::Slot));
        assert!(wait
            .as_mut()
            .poll(&mut Context::from_waker(&waker))
            .is_pending());
        {
            let mut wc = rig.worker_channel(w);
            let (_, slot) = wc.recv().unwrap().unwrap();
            wc.free_request_slot(slot.unwrap());
        }
        assert_eq!(count.load(Ordering::SeqCst), 0);
        rig.hub.poll_once();
        assert_eq!(count.load(Ordering::SeqCst), 1, "woken by the poller");
        assert!(wait
            .as_mut()
            .poll(&mut Context::from_waker(&waker))
            .is_ready());
        assert!(rig.hub.take_slot(w).unwrap().is_some(), "the slot is back");
    }
}
