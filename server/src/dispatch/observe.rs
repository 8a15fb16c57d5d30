//! What a thread records about its requests: its metrics shard, its batch of access log
//! lines, the request ids it makes up for requests that bring none, and the (throttled)
//! log lines of the 503s its queue answers.

use std::fmt::Display;
use std::time::Instant;

use super::{Hub, StreamId};
use crate::accesslog;
use crate::load::LoadTable;
use crate::metrics::ThreadMetrics;

/// Length of a generated X-Request-ID: 32 hex digits (128 bits).
pub const REQUEST_ID_LEN: usize = 32;

impl Hub {
    pub fn metrics(&self) -> &ThreadMetrics {
        self.metrics.thread(self.thread as usize)
    }

    pub fn load(&self) -> &LoadTable {
        &self.load
    }

    pub fn access_log_on(&self) -> bool {
        self.access_log.borrow().is_some()
    }

    /// Adds a line to this thread's access log batch (written at 32 KiB or by the timer).
    pub fn log_access(&self, entry: &accesslog::Entry<'_>) {
        if let Some((buf, fmt)) = self.access_log.borrow_mut().as_mut() {
            buf.push(*fmt, entry);
        }
    }

    pub fn flush_access_log(&self) {
        if let Some((buf, _)) = self.access_log.borrow_mut().as_mut() {
            buf.flush();
        }
    }

    /// A request answered 503 at once: `--limit-queue` requests already wait. Logged at
    /// most once per 10 s per thread, with the number since the last line
    /// (`crate::logthrottle`); each one is in the access log and the metrics.
    pub fn answered_queue_full(&self, peer: &dyn Display) {
        if let Some(refused) = self.queue_full_lines.borrow_mut().count(Instant::now()) {
            tracing::warn!(
                %peer,
                refused,
                "request queue full; answering 503 (this line at most every 10 s per thread)"
            );
        }
    }

    /// A request answered 503 after waiting `--queue-timeout` for a worker: counted in the
    /// metrics, and logged as [`Hub::answered_queue_full`] is (the line names the latest
    /// such request).
    pub fn answered_queue_timeout(&self, peer: &dyn Display, request: &dyn Display) {
        self.metrics().queue_timeout();
        if let Some(timed_out) = self.queue_timeout_lines.borrow_mut().count(Instant::now()) {
            tracing::warn!(
                %peer,
                %request,
                timed_out,
                "no worker accepted the request within --queue-timeout; answering 503 (this line at most every 10 s per thread)"
            );
        }
    }

    /// A request that ran past --timeout-request: counted, its stream cancelled (the
    /// worker cancels the app's task), and logged as [`Hub::answered_queue_full`] is, with
    /// `what` (what happens to the request) of the latest one: a backend that hangs times
    /// out every request, and a line each was thousands a second.
    pub fn request_timed_out(&self, sid: StreamId, peer: &dyn Display, what: &str) {
        self.metrics().request_timeout();
        self.cancel_stream(sid);
        if let Some(timed_out) = self
            .request_timeout_lines
            .borrow_mut()
            .count(Instant::now())
        {
            tracing::warn!(
                %peer,
                timed_out,
                "{what} (this line at most every 10 s per thread)"
            );
        }
    }

    /// Writes a fresh request id (32 lowercase hex digits) into `out`.
    pub fn new_request_id(&self, out: &mut [u8; REQUEST_ID_LEN]) {
        let n = self.id_counter.get().wrapping_add(1);
        self.id_counter.set(n);
        write_request_id(self.id_prefix, n, out);
    }
}

/// Request id number `n` of a thread whose random prefix is `prefix`, as hex.
fn write_request_id(prefix: u64, n: u64, out: &mut [u8; REQUEST_ID_LEN]) {
    let id = (u128::from(prefix) << 64) | u128::from(n);
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in out.iter_mut().enumerate() {
        *b = HEX[((id >> (124 - 4 * i)) & 0xf) as usize];
    }
}

/// 64 random bits (fastrand's per-thread generator, seeded from the OS at first use).
pub(super) fn random_u64() -> u64 {
    fastrand::u64(..)
}

#[cfg(test)]
mod tests {
    use super::super::testkit::Rig;
    use super::*;

    #[test]
    fn a_request_id_is_the_prefix_then_the_counter_in_hex() {
        let mut out = [0u8; REQUEST_ID_LEN];
        write_request_id(0x0123_4567_89ab_cdef, 0x2a, &mut out);
        assert_eq!(&out, b"0123456789abcdef000000000000002a");
    }

    #[test]
    fn request_ids_do_not_repeat_within_or_across_threads() {
        let (a, b) = (Rig::new(1), Rig::new(1));
        let mut seen = std::collections::HashSet::new();
        for rig in [&a, &b] {
            for _ in 0..1000 {
                let mut out = [0u8; REQUEST_ID_LEN];
                rig.hub.new_request_id(&mut out);
                assert!(out
                    .iter()
                    .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
                assert!(
                    seen.insert(out),
                    "repeated id {}",
                    String::from_utf8_lossy(&out)
                );
            }
        }
    }

    #[test]
    fn the_metrics_shard_is_the_threads_own() {
        let rig = Rig::new(1);
        assert!(std::ptr::eq(rig.hub.metrics(), rig.metrics.thread(0)));
        assert!(!rig.hub.access_log_on());
    }
}
