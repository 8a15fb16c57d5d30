//! Connection and stream deadlines (keep-alive, head and body reads, HTTP/2 waits) on one
//! timer per thread.
//!
//! monoio's `Sleep` is 640 bytes, 128-aligned (its timer entry is cache-padded), and every
//! `timeout` around a socket wait put one inline in the connection's task: the largest
//! part of an idle keep-alive connection. Here a connection registers its deadline with its
//! thread's [`Deadlines`] (an ordered map entry of about 40 bytes, taken out again when the
//! wait ends) and one task per thread sleeps until the earliest deadline and wakes whoever
//! is due. An [`Until`] future is 32 bytes.
//! PERF: with this and the TLS states boxed, the connection future went from 3,200 bytes
//! aligned to 128 to 1,312 aligned to 8 (`size_probe` in mod.rs), and the front end's RSS
//! per idle keep-alive connection from 3.8-4.8 KiB to 1.87-1.88 KiB
//! (tests/e2e/test_idle_connections.py, 10,000 connections, 2026-12-04).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

#[derive(Default)]
struct Deadlines {
    /// Waiting futures by (deadline, id): the first one is the next to fire.
    waiting: BTreeMap<(Instant, u64), Waker>,
    next_id: u64,
    /// The thread's timer task: when it sleeps, and how to wake it for an earlier deadline.
    timer: Option<(Option<Instant>, Waker)>,
    /// The timer task was spawned on this thread.
    started: bool,
}

/// At thread exit the runtime is gone: a waker dropped now could free a task left pending
/// and run its destructors without a runtime. monoio leaks such tasks itself; so do we.
impl Drop for Deadlines {
    fn drop(&mut self) {
        for (_, waker) in std::mem::take(&mut self.waiting) {
            std::mem::forget(waker);
        }
        if let Some((_, waker)) = self.timer.take() {
            std::mem::forget(waker);
        }
    }
}

thread_local! {
    static DEADLINES: RefCell<Deadlines> = RefCell::new(Deadlines::default());
}

/// Resolves at `deadline` (at once if it passed). Must be awaited inside the thread's
/// monoio runtime (the first use spawns the timer task).
pub(crate) fn until(deadline: Instant) -> Until {
    Until { deadline, id: None }
}

pub(crate) struct Until {
    deadline: Instant,
    /// Registered under (deadline, id) while pending.
    id: Option<u64>,
}

impl Future for Until {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if Instant::now() >= self.deadline {
            self.deregister();
            return Poll::Ready(());
        }
        let deadline = self.deadline;
        let (id, wake_timer, spawn) = DEADLINES.with(|d| {
            let mut d = d.borrow_mut();
            let id = match self.id {
                Some(id) => id,
                None => {
                    d.next_id += 1;
                    d.next_id
                }
            };
            d.waiting.insert((deadline, id), cx.waker().clone());
            let spawn = !std::mem::replace(&mut d.started, true);
            // The timer sleeps past this deadline (or not at all): it must look again.
            let wake_timer = match &d.timer {
                Some((armed, waker)) if armed.is_none_or(|t| deadline < t) => Some(waker.clone()),
                _ => None,
            };
            (id, wake_timer, spawn)
        });
        self.id = Some(id);
        if spawn {
            monoio::spawn(timer());
        }
        if let Some(w) = wake_timer {
            w.wake();
        }
        Poll::Pending
    }
}

impl Until {
    fn deregister(&mut self) {
        if let Some(id) = self.id.take() {
            let deadline = self.deadline;
            // A thread-local being torn down has nothing left to deregister from.
            let _ = DEADLINES.try_with(|d| d.borrow_mut().waiting.remove(&(deadline, id)));
        }
    }
}

impl Drop for Until {
    fn drop(&mut self) {
        self.deregister();
    }
}

/// The thread's timer task: wakes every due waiter, then sleeps until the next deadline
/// (or until a waiter with an earlier one wakes it).
async fn timer() {
    loop {
        let now = Instant::now();
        let (due, next) = DEADLINES.with(|d| {
            let mut d = d.borrow_mut();
            let mut due = Vec::new();
            while let Some(entry) = d.waiting.first_entry() {
                if entry.key().0 > now {
                    break;
                }
                due.push(entry.remove());
            }
            (due, d.waiting.first_key_value().map(|(k, _)| k.0))
        });
        for w in due {
            w.wake();
        }
        let mut armed = false;
        let woken = std::future::poll_fn(|cx| {
            if armed {
                return Poll::Ready(());
            }
            armed = true;
            DEADLINES.with(|d| d.borrow_mut().timer = Some((next, cx.waker().clone())));
            Poll::Pending
        });
        match next {
            Some(t) => {
                monoio::select! {
                    _ = monoio::time::sleep_until(t.into()) => {},
                    _ = woken => {},
                }
            }
            None => woken.await,
        }
        DEADLINES.with(|d| d.borrow_mut().timer = None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn block_on<F: Future>(f: F) -> F::Output {
        monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .expect("runtime")
            .block_on(f)
    }

    fn registered() -> usize {
        DEADLINES.with(|d| d.borrow().waiting.len())
    }

    #[test]
    fn fires_at_its_deadline_in_order_and_an_earlier_one_rearms_the_timer() {
        block_on(async {
            let start = Instant::now();
            let order = std::rc::Rc::new(RefCell::new(Vec::new()));
            // The timer first sleeps toward the late deadline; the early one, registered
            // afterwards, must wake it.
            let late = {
                let order = order.clone();
                monoio::spawn(async move {
                    until(start + Duration::from_millis(300)).await;
                    order.borrow_mut().push("late");
                })
            };
            monoio::time::sleep(Duration::from_millis(20)).await;
            let early = {
                let order = order.clone();
                monoio::spawn(async move {
                    until(start + Duration::from_millis(60)).await;
                    order.borrow_mut().push("early");
                })
            };
            // An ordering on one clock, not a speed claim: a timer still asleep toward the
            // late deadline would let this 200 ms sleep end first.
            monoio::select! {
                _ = early => {},
                _ = monoio::time::sleep_until((start + Duration::from_millis(200)).into()) => {
                    panic!("the early deadline waited for the late one")
                },
            }
            assert!(start.elapsed() >= Duration::from_millis(60));
            late.await;
            assert!(start.elapsed() >= Duration::from_millis(300));
            assert_eq!(*order.borrow(), ["early", "late"]);
            assert_eq!(registered(), 0);
        });
    }

    #[test]
    fn a_dropped_wait_leaves_nothing_behind_and_a_past_deadline_is_ready() {
        block_on(async {
            let far = Instant::now() + Duration::from_secs(3600);
            monoio::select! {
                _ = until(far) => panic!("an hour passed"),
                _ = monoio::time::sleep(Duration::from_millis(10)) => {},
            }
            assert_eq!(registered(), 0);
            until(Instant::now() - Duration::from_millis(1)).await;
            assert_eq!(registered(), 0);
        });
    }
}
