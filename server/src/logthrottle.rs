//! Log lines that clients can cause by the thousand a second (connections refused past
//! `--limit-connections`, accepts failing at the fd limit, requests refused with 503 by a
//! full or slow queue): each kind is written at most once per [`LOG_EVERY`] per front-end
//! thread, with the number of events since its last line. Under overload a line per event
//! would cost CPU when there is least of it, and bury everything else in the log.

use std::time::{Duration, Instant};

/// At most one line per kind and thread in this long.
pub const LOG_EVERY: Duration = Duration::from_secs(10);

/// Counts the events of one kind, so that the log says so at most once per [`LOG_EVERY`].
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
    fn one_line_per_interval_counting_every_event() {
        let mut r = Throttle::default();
        let t0 = Instant::now();
        assert_eq!(r.count(t0), Some(1), "the first event is logged at once");
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
