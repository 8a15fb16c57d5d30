//! Which worker gets a new request: the routing policy, as a pure function of what the
//! thread knows about each attached worker.
//!
//! Among the workers that accept work (not stalled, not retiring, under
//! `--limit-concurrency`), a request goes to the *warm* worker when it may: the one that
//! finished a response most recently, provided it is idle, or has fewer than
//! [`PACK_LIMIT`] requests in flight and finished one within [`PACK_WINDOW`] (so its loop
//! is running, not stuck in a blocking call). Otherwise: least outstanding requests (over
//! all threads); ties among busy workers go to the one that finished a response most
//! recently (a loop stuck in a blocking call finishes nothing), among idle ones to a
//! rotating start.
//!
//! Why warm first: below saturation a worker sleeps between requests, and each request sent
//! to a sleeping worker costs a doorbell and a wake-up of its process (tens of CPU-µs on a
//! VM); a second worker woken for a request the first would have served a few µs later is
//! pure cost. So light traffic stays on one worker, as on a one-worker server, and spills
//! over to the others as the warm one's queue grows. Under load every worker has more than
//! [`PACK_LIMIT`] in flight and the rule is plain least-outstanding.
//! PERF: `hello` at a fixed 24,490 req/s (half of the best peer's peak), 2 workers, 5
//! alternating runs each on the shared machine: front end + workers 39.8 CPU-µs/req
//! (median) against 47.8 for plain least-outstanding, the workers' share 15.1 against 22.3,
//! doorbells 0.77 against 1.01 per request (`benches/results/halfload2-2026-12-05.json`);
//! a limit of 4 and a window of 250 µs saved about half as much (the same file's sweep).

use std::time::Duration;

/// Most requests in flight on the warm worker before new ones go to the least loaded
/// worker instead: what a request may wait behind on a worker that is known to be moving.
pub(super) const PACK_LIMIT: u32 = 8;

/// How recently the warm worker must have finished a response for a request to join a
/// non-empty queue on it. A worker whose loop just blocked has finished nothing since, so
/// at most the requests arriving within this window after its last response wait for it.
pub(super) const PACK_WINDOW: Duration = Duration::from_micros(500);

/// One attached worker as the policy sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Candidate {
    /// The worker's slot (its index in the thread's links).
    pub index: usize,
    /// Whether it takes new work at all (`WorkerLoad::accepts`).
    pub accepts: bool,
    /// Requests in flight on it, over all threads.
    pub in_flight: u32,
    /// The thread's completion clock when it last finished a response (`Link::last_done`).
    pub last_done: u64,
    /// It finished a response within [`PACK_WINDOW`].
    pub moving: bool,
}

/// Orders workers for plain least-outstanding: in flight, then the most recent finisher
/// among busy ones, then the rotating turn.
type LeastKey = (u32, std::cmp::Reverse<u64>, usize);

/// The worker for the next request, or `None` if no candidate accepts work. `slots`: the
/// length of the link table (turns are counted over it); `rotation`: advances per request.
pub(super) fn pick(
    candidates: impl IntoIterator<Item = Candidate>,
    slots: usize,
    rotation: usize,
) -> Option<usize> {
    let n = slots.max(1);
    let mut warm: Option<Candidate> = None;
    let mut least: Option<(LeastKey, usize)> = None;
    for c in candidates.into_iter().filter(|c| c.accepts) {
        if c.last_done > 0 && warm.is_none_or(|w| c.last_done > w.last_done) {
            warm = Some(c);
        }
        let recent = if c.in_flight > 0 { c.last_done } else { 0 };
        let turn = (c.index + n - rotation % n) % n;
        let key = (c.in_flight, std::cmp::Reverse(recent), turn);
        if least.is_none_or(|(k, _)| key < k) {
            least = Some((key, c.index));
        }
    }
    match warm {
        Some(w) if w.in_flight == 0 || (w.moving && w.in_flight < PACK_LIMIT) => Some(w.index),
        _ => least.map(|(_, index)| index),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(index: usize, in_flight: u32, last_done: u64) -> Candidate {
        Candidate {
            index,
            accepts: true,
            in_flight,
            last_done,
            moving: false,
        }
    }

    #[test]
    fn fewest_in_flight_wins() {
        let ws = [c(0, 3, 0), c(1, 1, 0), c(2, 2, 0)];
        for rotation in 0..6 {
            assert_eq!(pick(ws, 3, rotation), Some(1));
        }
    }

    #[test]
    fn workers_that_refuse_work_are_skipped_and_none_is_none() {
        let mut ws = [c(0, 0, 0), c(1, 5, 0)];
        ws[0].accepts = false; // stalled, retiring or at the limit
        assert_eq!(pick(ws, 2, 0), Some(1));
        ws[1].accepts = false;
        assert_eq!(pick(ws, 2, 0), None);
        assert_eq!(pick([], 0, 0), None, "no worker attached");
    }

    #[test]
    fn among_busy_ties_the_most_recent_finisher_wins() {
        // Worker 0 finished at clock 10, worker 2 at clock 40: 0 may be stuck.
        let ws = [c(0, 2, 10), c(1, 4, 99), c(2, 2, 40)];
        for rotation in 0..6 {
            assert_eq!(pick(ws, 3, rotation), Some(2));
        }
    }

    #[test]
    fn idle_workers_that_never_finished_take_turns() {
        let ws = [c(0, 0, 0), c(1, 0, 0), c(2, 0, 0)];
        let picked: Vec<_> = (0..6).map(|r| pick(ws, 3, r).unwrap()).collect();
        assert_eq!(picked, [0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn an_idle_warm_worker_takes_light_traffic() {
        // Worker 2 finished last: sequential requests stay on it, whatever the rotation.
        let ws = [c(0, 0, 5), c(1, 0, 0), c(2, 0, 9)];
        for rotation in 0..6 {
            assert_eq!(pick(ws, 3, rotation), Some(2));
        }
    }

    #[test]
    fn a_moving_warm_worker_takes_requests_up_to_the_limit() {
        let mut warm = c(0, 1, 9);
        warm.moving = true;
        let idle = c(1, 0, 3);
        for in_flight in 1..PACK_LIMIT {
            warm.in_flight = in_flight;
            assert_eq!(pick([warm, idle], 2, 0), Some(0), "{in_flight} in flight");
        }
        warm.in_flight = PACK_LIMIT;
        assert_eq!(
            pick([warm, idle], 2, 0),
            Some(1),
            "at the limit: least loaded"
        );
    }

    #[test]
    fn a_busy_warm_worker_that_finished_nothing_lately_is_passed_over() {
        // Its loop may be stuck in a blocking call: the request goes to the idle worker.
        let warm = c(0, 1, 9);
        let idle = c(1, 0, 3);
        for rotation in 0..4 {
            assert_eq!(pick([warm, idle], 2, rotation), Some(1));
        }
    }

    #[test]
    fn a_warm_worker_that_refuses_work_is_not_warm() {
        let mut warm = c(0, 0, 9);
        warm.accepts = false;
        let other = c(1, 2, 3);
        assert_eq!(pick([warm, other], 2, 0), Some(1));
    }

    #[test]
    fn turns_skip_empty_link_slots() {
        // Slots 1 and 3 are empty (a worker gone, not yet replaced).
        let ws = [c(0, 0, 0), c(2, 0, 0)];
        let picked: Vec<_> = (0..4).map(|r| pick(ws, 4, r).unwrap()).collect();
        assert_eq!(picked, [0, 2, 2, 0]);
    }
}
