//! Loom models of the ring protocol (the contract at the top of `protocol/src/ring.rs`).
//!
//! Run with `make loom`, or `RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom cargo test -p
//! uringapi-protocol --release --test loom_ring`. Without `--cfg loom` this file compiles to
//! nothing. `make loom` bounds preemptions (`LOOM_MAX_PREEMPTIONS=3`): about a second for
//! all models. Unbounded, `wrap_around_capacity_two` alone explores for about two minutes.
//!
//! The region is heap memory standing in for the memfd segment (`protocol::segment` does not
//! exist under loom). `ring::init` writes loom atomics and cells into it with `ptr::write`:
//! loom's objects are handles into the current execution, so this works as long as the region
//! is initialised inside the model closure, once per execution, which every model here does.
//! Loom objects have no `Drop` of their own, so never dropping them is fine.
//!
//! Nothing here adds synchronisation the real peers would not have: the only extra atomics
//! are a `Relaxed` gate in the full-ring model and the modelled eventfd, whose Release/Acquire
//! stands for the kernel's own locking around an eventfd write and read.
#![cfg(loom)]

use loom::sync::atomic::{AtomicBool, Ordering};
use loom::sync::Arc;
use loom::thread;

use uringapi_protocol::doorbell::SleepFlag;
use uringapi_protocol::ring::{init, ring_bytes, Consumer, Producer, PushError};

/// One cache line of zeroes; a `Vec` of these is 64-byte aligned memory for a ring.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([u8; 64]);

/// Heap memory holding one initialised ring of `capacity` `u64` cells, with both handles.
/// The `Vec` must outlive the handles: every model keeps it on the model's main thread and
/// joins the spawned threads before it is dropped.
fn ring(capacity: usize) -> (Vec<Line>, Producer<u64>, Consumer<u64>) {
    let mut region = vec![Line([0; 64]); ring_bytes::<u64>(capacity).div_ceil(64)];
    let base = region.as_mut_ptr().cast::<u8>();
    // SAFETY: (1) `base` is 64-byte aligned (`Line`) and spans `ring_bytes::<u64>(capacity)`
    // bytes; (2) nothing else sees the region while `init` runs; (3) we are inside a loom
    // execution, so the atomics `init` creates belong to it; (4) one producer and one
    // consumer are attached, and the region outlives both (see above).
    unsafe {
        init::<u64>(base, capacity);
        (
            region,
            Producer::attach(base, capacity),
            Consumer::attach(base, capacity),
        )
    }
}

/// Pushes `item`, yielding to the consumer while the ring is full.
fn push_spin(p: &mut Producer<u64>, item: u64) {
    loop {
        match p.try_push(item) {
            Ok(()) => return,
            Err(PushError::Full) => thread::yield_now(),
            Err(e) => panic!("push: {e}"),
        }
    }
}

/// Pops the next item, yielding to the producer while the ring is empty.
fn pop_spin(c: &mut Consumer<u64>) -> u64 {
    loop {
        match c.pop().expect("pop") {
            Some(v) => return v,
            None => thread::yield_now(),
        }
    }
}

/// Rules 1 and 2: three items cross in order, and loom's cell tracking proves that the
/// consumer never reads a cell the producer is still writing.
#[test]
fn push_pop_in_order() {
    loom::model(|| {
        let (_region, mut p, mut c) = ring(4);
        let producer = thread::spawn(move || {
            for i in 0..3 {
                p.try_push(i).expect("a ring of 4 holds 3 items");
            }
        });
        for i in 0..3 {
            assert_eq!(pop_spin(&mut c), i);
        }
        producer.join().unwrap();
        assert_eq!(c.pop().unwrap(), None);
    });
}

/// Rules 1 to 3 across wrap-around: four items through two cells, so every cell is reused
/// and the producer's overwrite must wait for the consumer's copy.
#[test]
fn wrap_around_capacity_two() {
    loom::model(|| {
        let (_region, mut p, mut c) = ring(2);
        let producer = thread::spawn(move || {
            for i in 0..4 {
                push_spin(&mut p, i);
            }
        });
        for i in 0..4 {
            assert_eq!(pop_spin(&mut c), i);
        }
        producer.join().unwrap();
        assert_eq!(c.pop().unwrap(), None);
    });
}

/// Rule 4: the consumer announces its sleep and re-checks; the producer publishes and checks
/// the flag. If the consumer decided to block, the producer must have rung, and the item must
/// still be there for the woken consumer.
#[test]
fn sleeping_flag_loses_no_wake_up() {
    loom::model(|| {
        let (_region, mut p, mut c) = ring(2);
        let flag = Arc::new(SleepFlag::new());
        // The eventfd, reduced to "was it written".
        let rang = Arc::new(AtomicBool::new(false));

        let producer = {
            let (flag, rang) = (flag.clone(), rang.clone());
            thread::spawn(move || {
                p.try_push(7).unwrap();
                if p.consumer_sleeping(&flag) {
                    rang.store(true, Ordering::Release);
                }
            })
        };
        let consumer = {
            let flag = flag.clone();
            thread::spawn(move || {
                // The fast path: something is already there.
                if let Some(v) = c.pop().unwrap() {
                    return (false, Some(v), c);
                }
                flag.prepare_sleep();
                if c.has_items().unwrap() {
                    flag.awake();
                    let v = c.pop().unwrap();
                    assert_eq!(v, Some(7), "has_items said yes");
                    return (false, v, c);
                }
                // Here the real consumer would block in poll() on the eventfd.
                (true, None, c)
            })
        };
        producer.join().unwrap();
        let (blocked, got, mut c) = consumer.join().unwrap();
        if blocked {
            assert!(
                rang.load(Ordering::Acquire),
                "consumer blocked and nobody rang: lost wake-up"
            );
            flag.awake();
            assert_eq!(c.pop().unwrap(), Some(7), "woken consumer finds the item");
        } else {
            assert_eq!(got, Some(7));
        }
        assert_eq!(c.pop().unwrap(), None);
    });
}

/// Rule 4 over two rounds, with the consumer really waiting on the modelled eventfd: its
/// `awake()` after the first round must not hide the second `prepare_sleep` from the producer.
/// A lost wake-up shows up as the consumer waiting forever, which loom reports as exceeding
/// its branch limit.
#[test]
fn sleeping_flag_two_rounds() {
    loom::model(|| {
        let (_region, mut p, mut c) = ring(2);
        let flag = Arc::new(SleepFlag::new());
        let rang = Arc::new(AtomicBool::new(false));

        let producer = {
            let (flag, rang) = (flag.clone(), rang.clone());
            thread::spawn(move || {
                for i in 0..2 {
                    p.try_push(i).unwrap();
                    if p.consumer_sleeping(&flag) {
                        rang.store(true, Ordering::Release);
                    }
                }
            })
        };
        let mut got = Vec::new();
        while got.len() < 2 {
            if let Some(v) = c.pop().unwrap() {
                got.push(v);
                continue;
            }
            flag.prepare_sleep();
            if !c.has_items().unwrap() {
                // Block until the doorbell rings, then drain it (`EventFd::drain`). A failed
                // read of an eventfd leaves it alone, hence a compare-exchange rather than a
                // swap; loom also cannot make progress on a spin of writing swaps.
                while rang
                    .compare_exchange(true, false, Ordering::Acquire, Ordering::Relaxed)
                    .is_err()
                {
                    thread::yield_now();
                }
            }
            flag.awake();
        }
        producer.join().unwrap();
        assert_eq!(got, [0, 1]);
    });
}

/// Rule 4 with one flag shared by two producers on two rings (a worker fed by two front-end
/// threads): the swap lets only the first producer after a sleep ring, and the other's item
/// must still be found, either by the re-check or after the wake-up.
#[test]
fn one_flag_two_producers_lose_no_wake_up() {
    loom::model(|| {
        let (_r1, mut p1, mut c1) = ring(2);
        let (_r2, mut p2, mut c2) = ring(2);
        let flag = Arc::new(SleepFlag::new());
        let rang = Arc::new(AtomicBool::new(false));
        let producers: Vec<_> = [(p1, 1u64), (p2, 2u64)]
            .into_iter()
            .map(|(mut p, item)| {
                let (flag, rang) = (flag.clone(), rang.clone());
                // Moved into the thread; the Vec keeps the handles apart from the consumer's.
                let _ = &mut p;
                thread::spawn(move || {
                    p.try_push(item).unwrap();
                    if p.consumer_sleeping(&flag) {
                        rang.store(true, Ordering::Release);
                    }
                })
            })
            .collect();
        let mut got = Vec::new();
        while got.len() < 2 {
            let mut any = false;
            for c in [&mut c1, &mut c2] {
                if let Some(v) = c.pop().unwrap() {
                    got.push(v);
                    any = true;
                }
            }
            if any {
                continue;
            }
            flag.prepare_sleep();
            if !c1.has_items().unwrap() && !c2.has_items().unwrap() {
                while rang
                    .compare_exchange(true, false, Ordering::Acquire, Ordering::Relaxed)
                    .is_err()
                {
                    thread::yield_now();
                }
            }
            flag.awake();
        }
        for p in producers {
            p.join().unwrap();
        }
        got.sort_unstable();
        assert_eq!(got, [1, 2]);
    });
}

/// Backpressure (rule 3): a full ring refuses a push, and the same push succeeds once the
/// consumer has copied an item out, without the producer overwriting a cell still unread.
#[test]
fn full_ring_refuses_then_recovers() {
    loom::model(|| {
        let (_region, mut p, mut c) = ring(2);
        // Holds the consumer back until the producer has seen `Full`. Relaxed on purpose: it
        // must not order anything, so that the cells are handed over by the ring alone.
        let filled = Arc::new(AtomicBool::new(false));

        let producer = {
            let filled = filled.clone();
            thread::spawn(move || {
                p.try_push(0).unwrap();
                p.try_push(1).unwrap();
                assert_eq!(p.try_push(2), Err(PushError::Full));
                filled.store(true, Ordering::Relaxed);
                push_spin(&mut p, 2);
            })
        };
        while !filled.load(Ordering::Relaxed) {
            thread::yield_now();
        }
        for i in 0..3 {
            assert_eq!(pop_spin(&mut c), i);
        }
        producer.join().unwrap();
        assert_eq!(c.pop().unwrap(), None);
    });
}

// ---- claim words (ring.rs rules 8 to 10) ----

use loom::sync::atomic::AtomicU64;
use uringapi_protocol::claim;

/// Rule 9: the worker's claim and the front end's revoke race on a queued request; in every
/// interleaving exactly one of them wins. The request is queued (rule 8) and published
/// through a real ring, as on the front end, so the worker claims only what it popped.
#[test]
fn exactly_one_of_claim_and_revoke_wins() {
    loom::model(|| {
        let (_region, mut p, mut c) = ring(2);
        let word = Arc::new(AtomicU64::new(0));
        claim::queue(&word, 5);
        p.try_push(claim::encode(0, 5)).unwrap();

        let worker = {
            let word = word.clone();
            thread::spawn(move || {
                let extra = pop_spin(&mut c);
                let (_, tag) = claim::decode(extra).unwrap();
                claim::claim(&word, tag)
            })
        };
        let revoked = claim::revoke(&word, 5);
        let claimed = worker.join().unwrap();
        assert!(claimed ^ revoked, "claimed {claimed}, revoked {revoked}");
    });
}

/// Rules 8 and 9 with reuse: the front end revokes a request, frees its word and queues the
/// next request on it under a new tag while the stalled worker, late, claims the old one.
/// The late claim never wins (the revoked request never runs), and the new request is
/// still claimable by its own tag.
#[test]
fn a_late_claim_on_a_reused_word_never_wins() {
    loom::model(|| {
        let word = Arc::new(AtomicU64::new(0));
        claim::queue(&word, 1);
        let late = {
            let word = word.clone();
            thread::spawn(move || claim::claim(&word, 1))
        };
        let revoked = claim::revoke(&word, 1);
        if revoked {
            claim::queue(&word, 2);
        }
        let stale = late.join().unwrap();
        assert!(stale ^ revoked, "claimed {stale}, revoked {revoked}");
        if revoked {
            assert!(
                claim::claim(&word, 2),
                "the next use of the word must be claimable"
            );
        }
    });
}
