//! `--limit-connections`: the default derived from the fd limit.
//!
//! Every connection costs a file descriptor. Past the process's fd limit `accept` fails
//! with EMFILE, and so does every other open: the static file a request asks for, the
//! access log on reopen, a worker's respawn. So by default a thread stops taking
//! connections while the process still has fds in reserve: the soft limit (raised to the
//! hard one at start-up) minus [`reserve`], split evenly over the front-end threads.

/// File descriptors kept out of the connection budget: listeners, each worker's segment,
/// doorbells and pipes, the metrics endpoint, log files, static files being sent.
pub const FD_RESERVE: u64 = 256;

/// The reserve for an fd limit of `nofile`: [`FD_RESERVE`], or a quarter of a limit too
/// small for it (the front end itself holds about 10 fds and 4 per worker; a limit of 256
/// left no connections at all).
pub fn reserve(nofile: u64) -> u64 {
    FD_RESERVE.min(nofile / 4)
}

/// The default per-thread connection limit for an fd limit of `nofile` (at least 1).
pub fn default_per_thread(nofile: u64, threads: u32) -> usize {
    let per = nofile.saturating_sub(reserve(nofile)) / u64::from(threads.max(1));
    usize::try_from(per.max(1)).unwrap_or(usize::MAX)
}

/// Below this many connections in all, start-up warns that the fd limit is low.
pub const FEW_CONNECTIONS: u64 = 1000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_splits_what_the_reserve_leaves() {
        assert_eq!(default_per_thread(1024, 1), 768);
        assert_eq!(default_per_thread(1024, 2), 384);
        assert_eq!(default_per_thread(65_536, 4), 16_320);
        assert_eq!(default_per_thread(1024, 0), 768);
    }

    #[test]
    fn a_small_limit_keeps_a_quarter() {
        assert_eq!(default_per_thread(128, 1), 96);
        assert_eq!(default_per_thread(256, 1), 192);
        assert_eq!(default_per_thread(512, 2), 192);
        assert_eq!(
            default_per_thread(3, 4),
            1,
            "never 0, which would mean no limit"
        );
    }
}
