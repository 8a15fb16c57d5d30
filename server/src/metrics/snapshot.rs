//! What the supervisor knows at scrape time, handed to [`super::Metrics::render`] rather
//! than mirrored in the shards.

/// What the supervisor knows about one worker when a scrape comes in.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WorkerSnapshot {
    pub index: usize,
    pub pid: u32,
    pub ready: bool,
    pub stalled: bool,
    pub in_flight: u64,
    pub served: u64,
    /// Request ring occupancy, 0..=1.
    pub ring_occupancy: f64,
    pub loop_lag_seconds: f64,
    pub rss_bytes: u64,
}

/// Process-wide figures the supervisor and dispatchers keep.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcessSnapshot {
    pub worker_restarts: u64,
    pub worker_stalls: u64,
    pub doorbells: u64,
    pub connections: u64,
    /// Access log lines lost: its writer did not keep up, or writing failed.
    pub access_log_dropped_lines: u64,
}
