//! Which worker gets a new request: the routing policy, as a pure function of what the
//! thread knows about each attached worker.
//!
//! Least outstanding requests (over all threads) among the workers that accept work (not
//! stalled, not retiring, under `--limit-concurrency`). Ties: among busy workers, the one
//! that finished a response most recently (a loop stuck in a blocking call finishes
//! nothing); among idle ones, round-robin from a rotating start, so that light sequential
//! traffic still spreads over every worker.

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
/// length of the link table (turns are counted over it); `rotation`: advances per request.
pub(super) fn pick(
    candidates: impl IntoIterator<Item = Candidate>,
    slots: usize,
    rotation: usize,
) -> Option<usize> {
    let n = slots.max(1);
    candidates
        .into_iter()
        .filter(|c| c.accepts)
        .map(|c| {
            let recent = if c.in_flight > 0 { c.last_done } else { 0 };
            let turn = (c.index + n - rotation % n) % n;
            (c.in_flight, std::cmp::Reverse(recent), turn, c.index)
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
    fn idle_workers_take_turns() {
        // A stale `last_done` does not count for idle workers: only the rotation does.
        let ws = [c(0, 0, 5), c(1, 0, 0), c(2, 0, 9)];
        let picked: Vec<_> = (0..6).map(|r| pick(ws, 3, r).unwrap()).collect();
        assert_eq!(picked, [0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn turns_skip_empty_link_slots() {
        // Slots 1 and 3 are empty (a worker gone, not yet replaced).
        let ws = [c(0, 0, 0), c(2, 0, 0)];
        let picked: Vec<_> = (0..4).map(|r| pick(ws, 4, r).unwrap()).collect();
        assert_eq!(picked, [0, 2, 2, 0]);
    }
}
