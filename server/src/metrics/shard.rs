//! A front-end thread's counters: the request path's only contact with metrics (relaxed
//! adds into a shard of its own, no allocation), the tables that lay them out, and their
//! sum at scrape time.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Method classes, in label order. Index [`OTHER`] takes every method not listed.
pub(super) const METHODS: [&str; 8] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "OTHER",
];
const OTHER: usize = 7;

/// First status code with a slot of its own.
pub(super) const STATUS_MIN: u16 = 100;
/// Slots per method class: 100..=599, then one for codes outside that range.
pub(super) const STATUS_SLOTS: usize = 501;
pub(super) const STATUS_OUT_OF_RANGE: usize = STATUS_SLOTS - 1;

/// Upper bounds of the latency histogram's finite buckets, in nanoseconds, and the same
/// bounds in seconds for the `le` label (the encoder prints them as Go's client does: `0.0005`,
/// `1`, `10`, `+Inf`). A latency equal to a bound falls in that bucket
/// (Prometheus' `le` is "less than or equal").
const BUCKET_NS: [u64; 14] = [
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];
pub(super) const BUCKET_LE: [f64; 15] = [
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    f64::INFINITY,
];
pub(super) const BUCKETS: usize = BUCKET_LE.len();

/// The shards summed at render time.
pub(super) struct Totals {
    pub requests: Vec<u64>,
    pub buckets: [u64; BUCKETS],
    pub duration_sum_ns: u64,
    pub queue_depth: i64,
    pub queue_timeouts: u64,
    pub request_timeouts: u64,
    pub client_disconnects: u64,
}

impl Totals {
    /// Every shard's counters added up (once per scrape).
    pub(super) fn sum(shards: &[ThreadMetrics]) -> Self {
        let mut t = Self {
            requests: vec![0; METHODS.len() * STATUS_SLOTS],
            buckets: [0; BUCKETS],
            duration_sum_ns: 0,
            queue_depth: 0,
            queue_timeouts: 0,
            request_timeouts: 0,
            client_disconnects: 0,
        };
        for s in shards {
            let flat = s.requests.iter().flatten();
            for (sum, n) in t.requests.iter_mut().zip(flat) {
                *sum += n.load(Relaxed);
            }
            for (sum, n) in t.buckets.iter_mut().zip(&s.buckets) {
                *sum += n.load(Relaxed);
            }
            t.duration_sum_ns += s.duration_sum_ns.load(Relaxed);
            t.queue_depth += s.queue_depth.load(Relaxed);
            t.queue_timeouts += s.queue_timeouts.load(Relaxed);
            t.request_timeouts += s.request_timeouts.load(Relaxed);
            t.client_disconnects += s.client_disconnects.load(Relaxed);
        }
        t
    }
}

/// One front-end thread's counters. Only that thread writes them (relaxed adds); the
/// renderer reads them. Aligned to a cache line so shards never share one.
#[repr(align(64))]
pub struct ThreadMetrics {
    duration_sum_ns: AtomicU64,
    /// Not cumulative: each observation adds to exactly one bucket.
    buckets: [AtomicU64; BUCKETS],
    /// Enter/leave may in principle happen on different shards; only the sum is meaningful.
    queue_depth: AtomicI64,
    queue_timeouts: AtomicU64,
    request_timeouts: AtomicU64,
    client_disconnects: AtomicU64,
    requests: [[AtomicU64; STATUS_SLOTS]; METHODS.len()],
    /// HTTP/2 counters (metrics/h2.rs), 184 bytes.
    pub h2: super::h2::Counters,
}

impl ThreadMetrics {
    pub(super) fn new() -> Self {
        Self {
            duration_sum_ns: AtomicU64::new(0),
            buckets: [const { AtomicU64::new(0) }; BUCKETS],
            queue_depth: AtomicI64::new(0),
            queue_timeouts: AtomicU64::new(0),
            request_timeouts: AtomicU64::new(0),
            client_disconnects: AtomicU64::new(0),
            requests: [const { [const { AtomicU64::new(0) }; STATUS_SLOTS] }; METHODS.len()],
            h2: super::h2::Counters::default(),
        }
    }

    /// One finished request: method (raw bytes; mapped to GET/HEAD/POST/PUT/DELETE/PATCH/
    /// OPTIONS/OTHER), final status, time from head parsed to response fully written.
    #[inline]
    pub fn observe(&self, method: &[u8], status: u16, latency: Duration) {
        let slot = match status.checked_sub(STATUS_MIN) {
            Some(s) if (s as usize) < STATUS_OUT_OF_RANGE => s as usize,
            _ => STATUS_OUT_OF_RANGE,
        };
        self.requests[method_class(method)][slot].fetch_add(1, Relaxed);
        let ns = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        let bucket = BUCKET_NS
            .iter()
            .position(|&le| ns <= le)
            .unwrap_or(BUCKETS - 1);
        self.buckets[bucket].fetch_add(1, Relaxed);
        self.duration_sum_ns.fetch_add(ns, Relaxed);
    }

    /// A request starts waiting for a worker (gauge `uringapi_queue_depth` up).
    #[inline]
    pub fn queue_enter(&self) {
        self.queue_depth.fetch_add(1, Relaxed);
    }

    /// A request stops waiting for a worker, for whatever reason (gauge down).
    #[inline]
    pub fn queue_leave(&self) {
        self.queue_depth.fetch_sub(1, Relaxed);
    }

    /// A request got 503 after `--queue-timeout`.
    #[inline]
    pub fn queue_timeout(&self) {
        self.queue_timeouts.fetch_add(1, Relaxed);
    }

    /// A request got 504 after `--timeout-request`.
    #[inline]
    pub fn request_timeout(&self) {
        self.request_timeouts.fetch_add(1, Relaxed);
    }

    /// A client left before its response was complete.
    #[inline]
    pub fn client_disconnect(&self) {
        self.client_disconnects.fetch_add(1, Relaxed);
    }
}

#[inline]
fn method_class(method: &[u8]) -> usize {
    match method {
        b"GET" => 0,
        b"HEAD" => 1,
        b"POST" => 2,
        b"PUT" => 3,
        b"DELETE" => 4,
        b"PATCH" => 5,
        b"OPTIONS" => 6,
        _ => OTHER,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shard_is_cache_line_aligned_and_about_32_kib() {
        assert_eq!(std::mem::align_of::<ThreadMetrics>(), 64);
        let size = std::mem::size_of::<ThreadMetrics>();
        assert!((32_064..32_064 + 512).contains(&size), "size {size}");
        let m = super::super::Metrics::new(3);
        for t in 0..3 {
            assert_eq!(std::ptr::from_ref(m.thread(t)) as usize % 64, 0);
        }
    }
}
