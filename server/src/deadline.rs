//! Connection and stream deadlines on two registers per thread: exact ones ([`until`]:
//! WebSocket pings, HTTP/2 request deadlines and naps) and coarse timeouts ([`after`]).
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
//!
//! Timeouts on socket waits ([`after`]: keep-alive, head and body reads, a client that
//! reads nothing of its response) are almost always cancelled, once per request each, and
//! their precision matters little; they use a cheaper register: a slab entry rounded up to
//! a [`TICK`], and a sweeper task per thread that sleeps until the earliest one is due.
//! PERF: registering and cancelling one such wait costs 19-106 ns (mean 79) against
//! 166-244 ns (mean 223) in the ordered map (`cost_of_a_cancelled_timeout`, release build,
//! 64 other waits registered, 5 rounds of a million, 2026-12-06). A keep-alive HTTP/1.1
//! request makes up to three (idle wait, head read, response write): about 0.4 µs of the ~23 µs
//! of server CPU a hello request costs. Too little for the end-to-end A/B to resolve
//! (benches/results/ab-coarse-timeouts-2026-12-06.json, hello, 8 alternating rounds:
//! 23.5 against 23.6 CPU-µs/req, 0.974x the req/s, single rounds 20-27 µs for both).

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
        if let Some(id) = self.id {
            // Polled again by the same task (a timer kept across a loop's turns): already
            // registered, and the timer task already knows the deadline.
            let same = DEADLINES.with(|d| {
                d.borrow()
                    .waiting
                    .get(&(deadline, id))
                    .is_some_and(|w| w.will_wake(cx.waker()))
            });
            if same {
                return Poll::Pending;
            }
        }
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
        kick(spawn, timer, wake_timer);
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
        nap(next, |w| {
            DEADLINES.with(|d| d.borrow_mut().timer = Some((next, w)))
        })
        .await;
        DEADLINES.with(|d| d.borrow_mut().timer = None);
    }
}

/// A register's task between rounds: sleeps until `next` (for ever if `None`) or until
/// woken through the waker handed to `park`, which a wait due earlier wakes.
async fn nap(next: Option<Instant>, park: impl FnOnce(Waker)) {
    let mut park = Some(park);
    let woken = std::future::poll_fn(|cx| match park.take() {
        Some(park) => {
            park(cx.waker().clone());
            Poll::Pending
        }
        None => Poll::Ready(()),
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
}

/// After a wait registered: the register's task is spawned on the thread's first wait, and
/// woken when it sleeps past the new one.
fn kick<F: Future<Output = ()> + 'static>(spawn: bool, task: fn() -> F, wake: Option<Waker>) {
    if spawn {
        monoio::spawn(task());
    }
    if let Some(w) = wake {
        w.wake();
    }
}

/// The granularity of [`after`]: a timeout fires up to one tick late, never early.
pub(crate) const TICK: std::time::Duration = std::time::Duration::from_millis(100);

#[derive(Default)]
struct Timeouts {
    /// Pending timeouts: the tick each is due at, and whom to wake (`None` once fired).
    entries: slab::Slab<(u64, Option<Waker>)>,
    /// Tick 0 (the thread's first timeout).
    epoch: Option<Instant>,
    /// The sweeper task: the tick it sleeps until (`u64::MAX`: nothing pending), and its
    /// waker for an earlier one.
    sweeper: Option<(u64, Waker)>,
    started: bool,
}

/// As [`Deadlines`]: a waker dropped at thread exit could run a task's destructors without
/// its runtime.
impl Drop for Timeouts {
    fn drop(&mut self) {
        for (_, (_, waker)) in std::mem::take(&mut self.entries) {
            std::mem::forget(waker);
        }
        if let Some((_, waker)) = self.sweeper.take() {
            std::mem::forget(waker);
        }
    }
}

impl Timeouts {
    fn epoch(&mut self) -> Instant {
        *self.epoch.get_or_insert_with(Instant::now)
    }
}

thread_local! {
    static TIMEOUTS: RefCell<Timeouts> = RefCell::new(Timeouts::default());
}

/// Resolves no sooner than `wait` from the first poll, and at most about one [`TICK`]
/// later. For timeouts on socket waits, which are nearly always cancelled. Must be awaited
/// inside the thread's monoio runtime (the first use spawns the sweeper task).
pub(crate) fn after(wait: std::time::Duration) -> After {
    After { wait, key: None }
}

pub(crate) struct After {
    wait: std::time::Duration,
    /// Its slab entry while pending.
    key: Option<usize>,
}

impl Future for After {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.wait.is_zero() {
            return Poll::Ready(());
        }
        if let Some(key) = self.key {
            let fired = TIMEOUTS.with(|t| {
                let mut t = t.borrow_mut();
                let (_, waker) = &mut t.entries[key];
                match waker {
                    None => true,
                    Some(w) => {
                        if !w.will_wake(cx.waker()) {
                            *w = cx.waker().clone();
                        }
                        false
                    }
                }
            });
            if fired {
                self.deregister();
                return Poll::Ready(());
            }
            return Poll::Pending;
        }
        let wait = self.wait;
        let (key, wake_sweeper, spawn) = TIMEOUTS.with(|t| {
            let mut t = t.borrow_mut();
            let epoch = t.epoch();
            // Rounded up: the sweeper fires a tick once the whole of it has passed.
            let due = ticks_ceil((Instant::now() + wait).saturating_duration_since(epoch));
            let key = t.entries.insert((due, Some(cx.waker().clone())));
            let spawn = !std::mem::replace(&mut t.started, true);
            let wake_sweeper = match &t.sweeper {
                Some((planned, waker)) if due < *planned => Some(waker.clone()),
                _ => None,
            };
            (key, wake_sweeper, spawn)
        });
        self.key = Some(key);
        kick(spawn, sweeper, wake_sweeper);
        Poll::Pending
    }
}

impl After {
    fn deregister(&mut self) {
        if let Some(key) = self.key.take() {
            let _ = TIMEOUTS.try_with(|t| t.borrow_mut().entries.remove(key));
        }
    }
}

impl Drop for After {
    fn drop(&mut self) {
        self.deregister();
    }
}

fn ticks_ceil(d: std::time::Duration) -> u64 {
    let tick = TICK.as_nanos();
    u64::try_from(d.as_nanos().div_ceil(tick)).unwrap_or(u64::MAX)
}

/// The thread's sweeper: fires every timeout whose tick has passed, then sleeps until the
/// earliest one left (or until a timeout due earlier wakes it).
async fn sweeper() {
    loop {
        let (due, next, epoch) = TIMEOUTS.with(|t| {
            let mut t = t.borrow_mut();
            let epoch = t.epoch();
            let now =
                u64::try_from(epoch.elapsed().as_nanos() / TICK.as_nanos()).unwrap_or(u64::MAX);
            let mut due = Vec::new();
            let mut next = u64::MAX;
            for (_, (tick, waker)) in t.entries.iter_mut() {
                if *tick <= now {
                    due.extend(waker.take());
                } else if waker.is_some() {
                    next = next.min(*tick);
                }
            }
            (due, next, epoch)
        });
        for w in due {
            w.wake();
        }
        let at = (next != u64::MAX)
            .then(|| epoch + TICK.saturating_mul(u32::try_from(next).unwrap_or(u32::MAX)));
        nap(at, |w| {
            TIMEOUTS.with(|t| t.borrow_mut().sweeper = Some((next, w)))
        })
        .await;
        TIMEOUTS.with(|t| t.borrow_mut().sweeper = None);
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

    fn pending_timeouts() -> usize {
        TIMEOUTS.with(|t| t.borrow().entries.len())
    }

    #[test]
    fn a_timeout_fires_after_its_wait_within_a_tick_and_leaves_nothing() {
        block_on(async {
            for wait in [Duration::from_millis(1), Duration::from_millis(130), TICK] {
                let start = Instant::now();
                after(wait).await;
                let took = start.elapsed();
                assert!(took >= wait, "{wait:?} fired after {took:?}");
                // A hang guard, not a speed claim: a loaded machine may run the sweeper late.
                assert!(
                    took < wait + TICK + Duration::from_secs(2),
                    "{wait:?} took {took:?}"
                );
                assert_eq!(pending_timeouts(), 0);
            }
            after(Duration::ZERO).await;
            assert_eq!(pending_timeouts(), 0);
        });
    }

    #[test]
    fn an_earlier_timeout_wakes_the_sweeper_and_a_cancelled_one_is_gone() {
        block_on(async {
            let start = Instant::now();
            let late = monoio::spawn(async move {
                after(Duration::from_secs(3)).await;
                start.elapsed()
            });
            monoio::time::sleep(Duration::from_millis(20)).await;
            // The sweeper sleeps toward the 3 s timeout: the 200 ms one must wake it.
            monoio::select! {
                _ = after(Duration::from_millis(200)) => {},
                _ = monoio::time::sleep_until((start + Duration::from_millis(2500)).into()) => {
                    panic!("the early timeout waited for the late one")
                },
            }
            assert!(start.elapsed() >= Duration::from_millis(220));
            monoio::select! {
                _ = after(Duration::from_secs(3600)) => panic!("an hour passed"),
                _ = monoio::time::sleep(Duration::from_millis(10)) => {},
            }
            assert_eq!(pending_timeouts(), 1); // only the 3 s one
            assert!(late.await >= Duration::from_secs(3));
            assert_eq!(pending_timeouts(), 0);
        });
    }

    /// A future that is pending once (as a socket write is until its completion arrives).
    struct PendingOnce(bool);

    impl Future for PendingOnce {
        type Output = ();

        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            if std::mem::replace(&mut self.0, true) {
                return Poll::Ready(());
            }
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }

    /// What a cancelled timeout costs in each register (a measurement, not a test: run it
    /// with `cargo test --release -p uringapi-server --lib cost_of_a_cancelled_timeout --
    /// --ignored --nocapture`). 64 other waits are registered, as under load.
    #[test]
    #[ignore = "a measurement"]
    fn cost_of_a_cancelled_timeout() {
        const N: u32 = 1_000_000;
        fn per_op(t: Instant) -> f64 {
            t.elapsed().as_nanos() as f64 / f64::from(N)
        }
        block_on(async {
            let now = Instant::now();
            let others: Vec<_> = (0..64u64)
                .map(|i| {
                    monoio::spawn(async move {
                        monoio::select! {
                            _ = until(now + Duration::from_secs(30 + i)) => {},
                            _ = after(Duration::from_secs(30 + i)) => {},
                        }
                    })
                })
                .collect();
            monoio::time::sleep(Duration::from_millis(5)).await;
            for round in 0..5 {
                let t = Instant::now();
                for _ in 0..N {
                    PendingOnce(false).await;
                }
                let bare = per_op(t);
                let t = Instant::now();
                for _ in 0..N {
                    monoio::select! {
                        _ = PendingOnce(false) => {},
                        _ = until(Instant::now() + Duration::from_secs(60)) => {},
                    }
                }
                let ordered = per_op(t) - bare;
                let t = Instant::now();
                for _ in 0..N {
                    monoio::select! {
                        _ = PendingOnce(false) => {},
                        _ = after(Duration::from_secs(60)) => {},
                    }
                }
                let coarse = per_op(t) - bare;
                println!("round {round}: until {ordered:.0} ns, after {coarse:.0} ns (bare wait {bare:.0} ns)");
            }
            drop(others);
        });
    }
}
