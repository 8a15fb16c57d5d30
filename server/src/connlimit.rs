//! `--limit-connections`: the default derived from the fd limit, and the log lines when a
//! front-end thread refuses connections past it or cannot accept them at all.
//!
//! Every connection costs a file descriptor. Past the process's fd limit `accept` fails
//! with EMFILE, and so does every other open: the static file a request asks for, the
//! access log on reopen, a worker's respawn. So by default a thread stops taking
//! connections while the process still has fds in reserve: the soft limit (raised to the
//! hard one at start-up) minus [`FD_RESERVE`], split evenly over the front-end threads.

use std::time::{Duration, Instant};

/// File descriptors kept out of the connection budget: listeners, each worker's segment,
/// doorbells and pipes, the metrics endpoint, log files, static files being sent.
pub const FD_RESERVE: u64 = 256;

/// At most one "limit reached" (or "accept failed") line per thread in this long.
pub const LOG_EVERY: Duration = Duration::from_secs(10);

/// The default per-thread connection limit for an fd limit of `nofile` (at least 1).
pub fn default_per_thread(nofile: u64, threads: u32) -> usize {
    let per = nofile.saturating_sub(FD_RESERVE) / u64::from(threads.max(1));
    usize::try_from(per.max(1)).unwrap_or(usize::MAX)
}

/// Counts events that any client can cause many of a second (connections refused, accepts
/// failing at the fd limit) so that the log says so at most once per [`LOG_EVERY`].
#[derive(Debug, Default)]
pub struct Throttle {
    since_line: u64,
    last_line: Option<Instant>,
}

impl Throttle {
    /// One event at `now`; `Some(n)`: time for a log line covering `n` events.
    pub fn count(&mut self, now: Instant) -> Option<u64> {
        self.since_line += 1;
        if self
            .last_line
            .is_some_and(|t| now.saturating_duration_since(t) < LOG_EVERY)
        {
            return None;
        }
        self.last_line = Some(now);
        Some(std::mem::take(&mut self.since_line))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_splits_what_the_reserve_leaves() {
        assert_eq!(default_per_thread(1024, 1), 768);
        assert_eq!(default_per_thread(1024, 2), 384);
        assert_eq!(default_per_thread(65_536, 4), 16_320);
        assert_eq!(
            default_per_thread(100, 2),
            1,
            "never 0, which would mean no limit"
        );
        assert_eq!(default_per_thread(1024, 0), 768);
    }

    #[test]
    fn one_line_per_interval_counting_every_refusal() {
        let mut r = Throttle::default();
        let t0 = Instant::now();
        assert_eq!(r.count(t0), Some(1), "the first refusal is logged at once");
        for i in 1..100u64 {
            assert_eq!(r.count(t0 + Duration::from_millis(i)), None);
        }
        assert_eq!(
            r.count(t0 + LOG_EVERY),
            Some(100),
            "the next line counts the rest"
        );
        assert_eq!(r.count(t0 + LOG_EVERY + Duration::from_secs(1)), None);
    }
}
