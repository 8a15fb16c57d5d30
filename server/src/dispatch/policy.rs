//! Which worker gets a new request: the routing policy, as a pure function of what the
//! thread knows about each attached worker.
//!
//! Least outstanding requests (over all threads) among the workers that accept work (not
//! stalled, not retiring, under `--limit-concurrency`). Ties: among busy workers, the one
//! that finished a response most recently (a loop stuck in a blocking call finishes
//! nothing); among idle ones, the worker that served the connection's previous request if
//! it is one of them (a keep-alive client stays on one process while that costs no wait, as
//! a connection does under uvicorn or gunicorn with several workers, so an app's
//! in-process state looks the same to it from request to request), else round-robin from
//! a rotating start, so that light traffic on new connections still spreads over every
//! worker. The preference never outranks a worker with fewer requests in flight: it cannot
//! queue a request behind a busy or blocked handler.

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
}

/// The worker for the next request, or `None` if no candidate accepts work. `slots`: the
/// length of the link table (turns are counted over it); `rotation`: advances per request;
/// `prefer`: the worker of the connection's previous request, taken if it is idle.
pub(super) fn pick(
    candidates: impl IntoIterator<Item = Candidate>,
    slots: usize,
    rotation: usize,
    prefer: Option<usize>,
) -> Option<usize> {
    let n = slots.max(1);
    candidates
        .into_iter()
        .filter(|c| c.accepts)
        .map(|c| {
            let recent = if c.in_flight > 0 { c.last_done } else { 0 };
            let other = !(c.in_flight == 0 && prefer == Some(c.index));
            let turn = (c.index + n - rotation % n) % n;
            (c.in_flight, std::cmp::Reverse(recent), other, turn, c.index)
        })
        .min()
        .map(|(.., index)| index)
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
        }
    }

    #[test]
    fn fewest_in_flight_wins() {
        let ws = [c(0, 3, 0), c(1, 1, 0), c(2, 2, 0)];
        for rotation in 0..6 {
            assert_eq!(pick(ws, 3, rotation, None), Some(1));
        }
    }

    #[test]
    fn workers_that_refuse_work_are_skipped_and_none_is_none() {
        let mut ws = [c(0, 0, 0), c(1, 5, 0)];
        ws[0].accepts = false; // stalled, retiring or at the limit
        assert_eq!(pick(ws, 2, 0, None), Some(1));
        ws[1].accepts = false;
        assert_eq!(pick(ws, 2, 0, None), None);
        assert_eq!(pick([], 0, 0, None), None, "no worker attached");
    }

    #[test]
    fn among_busy_ties_the_most_recent_finisher_wins() {
        // Worker 0 finished at clock 10, worker 2 at clock 40: 0 may be stuck.
        let ws = [c(0, 2, 10), c(1, 4, 99), c(2, 2, 40)];
        for rotation in 0..6 {
            assert_eq!(pick(ws, 3, rotation, None), Some(2));
        }
    }

    #[test]
    fn idle_workers_take_turns() {
        // A stale `last_done` does not count for idle workers: only the rotation does.
        let ws = [c(0, 0, 5), c(1, 0, 0), c(2, 0, 9)];
        let picked: Vec<_> = (0..6).map(|r| pick(ws, 3, r, None).unwrap()).collect();
        assert_eq!(picked, [0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn an_idle_preferred_worker_keeps_the_connection() {
        let ws = [c(0, 0, 5), c(1, 0, 0), c(2, 0, 9)];
        for rotation in 0..6 {
            assert_eq!(pick(ws, 3, rotation, Some(1)), Some(1));
        }
        // Gone from the table, or refusing work: the turns decide as without a preference.
        let turns: Vec<_> = (0..3).map(|r| pick(ws, 4, r, Some(3)).unwrap()).collect();
        assert_eq!(turns, [0, 1, 2]);
        let mut refusing = ws;
        refusing[1].accepts = false;
        assert_ne!(pick(refusing, 3, 1, Some(1)), Some(1));
    }

    #[test]
    fn a_busy_preferred_worker_does_not_outrank_an_idle_one() {
        // A request never waits behind a handler that may be blocking to stay put.
        let ws = [c(0, 1, 50), c(1, 0, 0)];
        assert_eq!(pick(ws, 2, 0, Some(0)), Some(1));
        // Among busy ones the most recent finisher still wins (a stuck loop finishes
        // nothing), preferred or not.
        let busy = [c(0, 2, 10), c(1, 2, 40)];
        assert_eq!(pick(busy, 2, 0, Some(0)), Some(1));
    }

    #[test]
    fn turns_skip_empty_link_slots() {
        // Slots 1 and 3 are empty (a worker gone, not yet replaced).
        let ws = [c(0, 0, 0), c(2, 0, 0)];
        let picked: Vec<_> = (0..4).map(|r| pick(ws, 4, r, None).unwrap()).collect();
        assert_eq!(picked, [0, 2, 2, 0]);
    }
}
