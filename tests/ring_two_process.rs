//! A front end and a worker in two real processes, sharing a real memfd segment: the parent
//! creates it and plays the front end, a forked child maps it through the inherited
//! descriptor and plays the worker. Every byte of every message is checked in both
//! directions, in order, and every slot must come home.
//!
//! Two ways of waiting: busy polling (the throughput path, no syscalls) and sleeping on
//! eventfds under ring.rs rule 4, where a lost wake-up would leave one side asleep with work
//! waiting. Each sleep polls with a timeout only to turn such a hang into a failure: a side
//! that has seen work sit unrung for `LOST_AFTER_MS` reports a lost wake-up. That bound is a
//! liveness watchdog, not a speed assertion.
#![deny(unsafe_code)]

mod support;

use std::sync::Arc;

use support::process::{fork, open_inherited, wait_readable, Child};
use support::traffic::{
    request_payload, response_for, SplitMix64, HEAD_LEN, MAX_PAYLOAD, MAX_RESPONSE,
};
use uringapi_protocol::arena::SlotIndex;
use uringapi_protocol::doorbell::EventFd;
use uringapi_protocol::{
    ChannelError, FrontChannel, Geometry, Incoming, Kind, Record, Segment, WorkerChannel,
};

const GEOMETRY: Geometry = Geometry {
    threads: 1,
    ring_capacity: 1024,
    slots: 64,
    slot_size: 4096,
};

/// How long one `poll` on a doorbell lasts before the sleeper looks around.
const POLL_MS: i32 = 1_000;
/// Work visible this long without a ring is a lost wake-up.
const LOST_AFTER_MS: i32 = 10_000;
/// Idle spins between checks that the worker child is still alive. A power of two (masked).
const SPINS_PER_LIVENESS_CHECK: u32 = 1 << 16;

/// What the front end sends.
struct Plan {
    messages: u64,
    /// Send at most this many requests, then wait until all are answered before the next
    /// burst (sizes drawn from 1..=max). Makes both sides run dry and sleep again and again.
    /// `None`: keep every slot busy.
    max_burst: Option<u64>,
    /// Keep response slots until there is nothing else to do, so that a burst larger than
    /// the arena runs the worker out of response slots.
    hold_responses: bool,
}

/// What a side does when it cannot make progress.
enum Waiting<'a> {
    /// Spin, then yield. No syscalls, no doorbells.
    Spin,
    /// Sleep on an eventfd under ring.rs rule 4; ring the peer's when its flag says so.
    Doorbells {
        front: &'a EventFd,
        worker: &'a EventFd,
    },
}

#[derive(Debug, Default)]
struct FrontStats {
    /// Sleeps waiting for responses only.
    sleeps: u64,
    /// Sleeps waiting for responses or returned request slots.
    space_sleeps: u64,
    rings: u64,
}

#[derive(Debug, Default, PartialEq)]
struct WorkerStats {
    request_sleeps: u64,
    space_sleeps: u64,
    rings: u64,
}

impl WorkerStats {
    fn to_bytes(&self) -> Vec<u8> {
        [self.request_sleeps, self.space_sleeps, self.rings]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect()
    }

    fn from_bytes(b: &[u8]) -> Self {
        assert_eq!(b.len(), 24, "worker report has {} bytes", b.len());
        let v = |i: usize| u64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().unwrap());
        Self {
            request_sleeps: v(0),
            space_sleeps: v(1),
            rings: v(2),
        }
    }
}

#[test]
fn two_million_messages_cross_intact_and_in_order_busy_polling() {
    let messages = std::env::var("URINGAPI_TWO_PROCESS_N")
        .map(|v| v.parse().expect("URINGAPI_TWO_PROCESS_N must be a number"))
        .unwrap_or(2_000_000);
    let plan = Plan {
        messages,
        max_burst: None,
        hold_responses: false,
    };
    let (front, worker) = exchange(&plan, &Waiting::Spin);
    assert_eq!((front.sleeps, front.space_sleeps, front.rings), (0, 0, 0));
    assert_eq!(worker, WorkerStats::default());
}

#[test]
fn ten_thousand_messages_with_both_sides_sleeping_on_eventfds() {
    let front_bell = EventFd::new().unwrap();
    let worker_bell = EventFd::new().unwrap();
    let wait = Waiting::Doorbells {
        front: &front_bell,
        worker: &worker_bell,
    };
    let plan = Plan {
        messages: 10_000,
        max_burst: Some(100),
        hold_responses: true,
    };
    let (front, worker) = exchange(&plan, &wait);
    eprintln!("front end {front:?}, worker {worker:?}");
    // Every burst ends with both sides out of work; over some two hundred bursts each side
    // must have gone to sleep, or this test proved nothing about wake-ups. (Typical counts:
    // front 70 + 20 for slots, worker 140 + 100 for slots.)
    assert!(front.sleeps > 0, "front end never slept: {front:?}");
    assert!(worker.request_sleeps > 0, "worker never slept: {worker:?}");
    assert!(
        front.rings > 0 && worker.rings > 0,
        "a side never rang: {front:?} {worker:?}"
    );
}

#[test]
fn payloads_cover_every_length_from_zero_to_sixty_four() {
    let mut buf = [0; MAX_PAYLOAD];
    let mut seen = [false; MAX_PAYLOAD + 1];
    for stream in 0..10_000 {
        seen[request_payload(stream, &mut buf)] = true;
    }
    assert!(seen.iter().all(|&s| s), "a length in 0..=64 never occurs");
}

/// Creates the segment, forks the worker, runs the front end, and checks the end state.
fn exchange(plan: &Plan, wait: &Waiting) -> (FrontStats, WorkerStats) {
    let seg = Arc::new(Segment::create(GEOMETRY, 1).expect("create segment"));
    let seg_fd = seg.fd();
    let mut child = fork(|| {
        let seg = Arc::new(open_inherited(seg_fd)?);
        run_worker(seg, plan, wait).map(|stats| stats.to_bytes())
    });
    let mut ch = FrontChannel::new(seg, 0);
    let front = run_front_end(&mut ch, &mut child, plan, wait);
    let report = child
        .wait()
        .unwrap_or_else(|e| panic!("worker failed: {e}"));
    let worker = WorkerStats::from_bytes(&report);
    // Every request slot came back exactly once (`take_slot` refuses double returns).
    let mut slots = 0;
    while ch.take_slot().expect("request slot returns").is_some() {
        slots += 1;
    }
    assert_eq!(slots, GEOMETRY.slots, "request slots lost");
    (front, worker)
}

// ---- the front end (parent) ----

fn run_front_end(
    ch: &mut FrontChannel,
    child: &mut Child,
    plan: &Plan,
    wait: &Waiting,
) -> FrontStats {
    let mut stats = FrontStats::default();
    let mut bursts = SplitMix64::new(0xb0b5);
    let (mut next_send, mut next_recv, mut burst_end) = (0u64, 0u64, 0u64);
    let mut request = [0u8; MAX_PAYLOAD];
    let mut copied = Vec::with_capacity(MAX_RESPONSE);
    let mut held = Vec::with_capacity(GEOMETRY.slots as usize);
    let mut idle = 0u32;

    while next_recv < plan.messages {
        if next_send == burst_end && next_recv == next_send {
            let size = plan.max_burst.map_or(u64::MAX, |max| 1 + bursts.below(max));
            burst_end = next_send.saturating_add(size).min(plan.messages);
        }

        // Send as much of the burst as slots allow.
        let sent_from = next_send;
        let mut out_of_slots = false;
        while next_send < burst_end {
            let Some(slot) = ch.take_slot().expect("take request slot") else {
                out_of_slots = true;
                break;
            };
            let len = request_payload(next_send, &mut request);
            ch.write_slot(slot, 0, &request[..len]);
            let rec = Record::new(Kind::Request, next_send).with_slot(slot.get(), len as u32, 0);
            assert!(
                ch.send(rec).expect("send request"),
                "request ring full with only 64 slots"
            );
            next_send += 1;
        }
        let sent = next_send > sent_from;
        if let (true, Waiting::Doorbells { worker, .. }) = (sent, wait) {
            if ch.worker_asleep() {
                worker.ring();
                stats.rings += 1;
            }
        }

        // Take every response there is, then hand their slots back in one go.
        let held_before = held.len();
        while let Some(inc) = ch.recv().expect("worker broke the channel contract") {
            held.push(check_response(ch, &inc, next_recv, &mut copied));
            next_recv += 1;
        }
        let received = held.len() > held_before;
        let released = !held.is_empty() && (!plan.hold_responses || !(sent || received));
        if released {
            release_all(ch, &mut held, wait, &mut stats);
        }

        if sent || received || released {
            idle = 0;
            continue;
        }
        match wait {
            Waiting::Spin => {
                idle = idle.wrapping_add(1);
                if idle & (SPINS_PER_LIVENESS_CHECK - 1) == 0 {
                    if let Some(r) = child.try_wait() {
                        panic!(
                            "worker ended with {next_recv} of {} answered: {r:?}",
                            plan.messages
                        );
                    }
                }
                if idle < 64 {
                    std::hint::spin_loop();
                } else {
                    std::thread::yield_now();
                }
            }
            Waiting::Doorbells { front: bell, .. } => {
                // Rule 4, consumer's half: announce, then re-check all that we wait for.
                ch.my_sleep_flag().prepare_sleep();
                if out_of_slots {
                    ch.my_space_flag().prepare_sleep();
                }
                if !front_has_work(ch, out_of_slots) {
                    if out_of_slots {
                        stats.space_sleeps += 1;
                    } else {
                        stats.sleeps += 1;
                    }
                    let mut unrung_ms = 0;
                    while !wait_readable(*bell, POLL_MS).expect("poll front doorbell") {
                        if let Some(r) = child.try_wait() {
                            panic!("worker ended while the front end slept: {r:?}");
                        }
                        if front_has_work(ch, out_of_slots) {
                            unrung_ms += POLL_MS;
                            assert!(
                                unrung_ms < LOST_AFTER_MS,
                                "lost wake-up: the front end slept {unrung_ms} ms with work waiting \
                                 (out_of_slots {out_of_slots}, {next_recv}/{next_send} answered)"
                            );
                        }
                    }
                    bell.drain();
                }
                ch.my_sleep_flag().awake();
                ch.my_space_flag().awake();
            }
        }
    }
    // The worker waits for all its response slots before it exits.
    release_all(ch, &mut held, wait, &mut stats);
    stats
}

/// Hands response slots back to the worker, waking it if it waits for them.
fn release_all(
    ch: &mut FrontChannel,
    held: &mut Vec<SlotIndex>,
    wait: &Waiting,
    stats: &mut FrontStats,
) {
    for slot in held.drain(..) {
        ch.release(slot);
    }
    if let Waiting::Doorbells { worker, .. } = wait {
        if ch.worker_wants_space() {
            worker.ring();
            stats.rings += 1;
        }
    }
}

fn front_has_work(ch: &mut FrontChannel, out_of_slots: bool) -> bool {
    ch.has_responses().expect("response ring")
        || (out_of_slots && ch.has_returns().expect("return ring"))
}

/// Checks that `inc` answers request `stream` byte for byte; returns its slot to release.
fn check_response(
    ch: &FrontChannel,
    inc: &Incoming,
    stream: u64,
    copied: &mut Vec<u8>,
) -> SlotIndex {
    assert_eq!(
        (inc.kind, inc.stream, inc.more, inc.head_len),
        (Kind::Response, stream, false, HEAD_LEN),
        "response {stream} out of order or malformed: {inc:?}"
    );
    let (slot, len) = inc.slot.expect("a validated Response has a slot");
    let mut request = [0u8; MAX_PAYLOAD];
    let request_len = request_payload(stream, &mut request);
    let mut expected = [0u8; MAX_RESPONSE];
    let expected_len = response_for(stream, &request[..request_len], &mut expected);
    copied.clear();
    ch.copy_out(slot, 0..len, copied);
    assert_eq!(
        &copied[..],
        &expected[..expected_len],
        "response {stream}: bytes differ"
    );
    slot
}

// ---- the worker (child) ----
//
// Everything here returns errors instead of panicking; `fork` turns a stray panic into a
// failed exit all the same.

fn run_worker(seg: Arc<Segment>, plan: &Plan, wait: &Waiting) -> Result<WorkerStats, String> {
    let channel = |e: ChannelError| format!("channel: {e}");
    let mut ch = WorkerChannel::new(seg.clone(), 0);
    let mut stats = WorkerStats::default();
    let (mut next_request, mut answered) = (0u64, 0u64);
    // A response computed but not yet published (no free response slot).
    let mut pending: Option<(u64, usize)> = None;
    let mut expected = [0u8; MAX_PAYLOAD];
    let mut response = [0u8; MAX_RESPONSE];
    let mut idle = 0u32;

    while answered < plan.messages {
        let (mut freed, mut sent, mut out_of_slots) = (false, false, false);
        loop {
            let (stream, len) = match pending {
                Some(p) => p,
                None => {
                    let Some((rec, slot)) = ch.recv().map_err(channel)? else {
                        break;
                    };
                    let slot = check_request(&rec, slot, next_request)?;
                    let expected_len = request_payload(rec.stream, &mut expected);
                    let bytes = ch.request_bytes(slot, rec.len as usize);
                    if bytes != &expected[..expected_len] {
                        return Err(format!("request {}: bytes differ: {bytes:?}", rec.stream));
                    }
                    let len = response_for(rec.stream, bytes, &mut response);
                    ch.free_request_slot(slot);
                    freed = true;
                    next_request += 1;
                    *pending.insert((rec.stream, len))
                }
            };
            let Some(slot) = ch.take_slot().map_err(channel)? else {
                out_of_slots = true;
                break;
            };
            ch.slot_mut(slot)[..len].copy_from_slice(&response[..len]);
            let rec = Record::new(Kind::Response, stream).with_slot(
                slot.get(),
                len as u32,
                HEAD_LEN as u32,
            );
            if !ch.send(rec).map_err(channel)? {
                return Err("response ring full with only 64 slots".into());
            }
            pending = None;
            answered += 1;
            sent = true;
        }
        if let Waiting::Doorbells { front, .. } = wait {
            if (freed && ch.front_wants_space()) || (sent && ch.front_asleep()) {
                front.ring();
                stats.rings += 1;
            }
        }
        if freed || sent {
            idle = 0;
            continue;
        }
        worker_wait(&mut ch, &seg, wait, out_of_slots, &mut idle, &mut stats)?;
    }

    // Every response slot comes back exactly once (`take_slot` refuses double returns).
    let mut slots = 0;
    while slots < GEOMETRY.slots {
        if ch.take_slot().map_err(channel)?.is_some() {
            slots += 1;
        } else {
            worker_wait(&mut ch, &seg, wait, true, &mut idle, &mut stats)?;
        }
    }
    Ok(stats)
}

/// Checks a request record against what the front end must have sent next.
fn check_request(rec: &Record, slot: Option<SlotIndex>, stream: u64) -> Result<SlotIndex, String> {
    let well_formed = rec.kind == Kind::Request as u8 && !rec.has_more() && rec.aux == 0;
    match slot {
        Some(slot) if well_formed && rec.stream == stream && rec.len as usize <= MAX_PAYLOAD => {
            Ok(slot)
        }
        _ => Err(format!("expected request {stream}, got {rec:?}")),
    }
}

/// The worker's idle step: spin, or sleep on its doorbell for requests or for response slots.
fn worker_wait(
    ch: &mut WorkerChannel,
    seg: &Segment,
    wait: &Waiting,
    out_of_slots: bool,
    idle: &mut u32,
    stats: &mut WorkerStats,
) -> Result<(), String> {
    let Waiting::Doorbells { worker: bell, .. } = wait else {
        *idle = idle.wrapping_add(1);
        if *idle < 64 {
            std::hint::spin_loop();
        } else {
            std::thread::yield_now();
        }
        return Ok(());
    };
    // Rule 4, consumer's half, on the flag that names what we wait for.
    let flag = if out_of_slots {
        seg.worker_wants_space()
    } else {
        seg.worker_sleeping()
    };
    flag.prepare_sleep();
    if !worker_has_work(ch, out_of_slots)? {
        if out_of_slots {
            stats.space_sleeps += 1;
        } else {
            stats.request_sleeps += 1;
        }
        let mut unrung_ms = 0;
        while !wait_readable(*bell, POLL_MS).map_err(|e| format!("poll worker doorbell: {e}"))? {
            if worker_has_work(ch, out_of_slots)? {
                unrung_ms += POLL_MS;
                if unrung_ms >= LOST_AFTER_MS {
                    return Err(format!(
                        "lost wake-up: the worker slept {unrung_ms} ms with work waiting (out_of_slots {out_of_slots})"
                    ));
                }
            }
        }
        bell.drain();
    }
    flag.awake();
    Ok(())
}

fn worker_has_work(ch: &mut WorkerChannel, out_of_slots: bool) -> Result<bool, String> {
    let r = if out_of_slots {
        ch.has_space()
    } else {
        ch.has_requests()
    };
    r.map_err(|e| format!("channel: {e}"))
}
