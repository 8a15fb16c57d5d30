//! Prometheus metrics: counters the front-end threads bump on the request path, and a small
//! blocking HTTP endpoint (`/metrics`, `/healthz`, `/readyz`) on a std thread of its own
//! (`metrics/endpoint.rs`).
//!
//! # Cost on the request path
//!
//! Each front-end thread owns one [`ThreadMetrics`] shard (cache-line aligned, so two
//! threads never write the same line) and only ever adds to it with relaxed atomics. Nothing
//! is shared between threads until [`Metrics::render`] sums the shards, which happens once
//! per scrape. [`ThreadMetrics::observe`] is three relaxed adds and no allocation: the
//! `(method, status)` counter, one histogram bucket, and the histogram's sum. The histogram's
//! `_count` and the bucket totals are derived from the bucket counters at render time, so a
//! scrape can never see `+Inf` and `_count` disagree.
//!
//! # Status codes
//!
//! Counters are kept in a flat table per method class: one slot for each code 100..=599 plus
//! one for anything outside that range (rendered as `status="other"`; the front end
//! validates worker statuses, so it stays 0 in practice). 8 method classes × 501 slots × 8
//! bytes = 32,064 bytes per front-end thread, about 32 KiB: a direct index, no hashing, no
//! lock, and every code keeps its exact number as its label. Only non-zero counters are
//! rendered.
//!
//! # Exposition
//!
//! Text format 0.0.4, written by prometheus-client's encoder from what we summed
//! (`text.rs`): every family has `# HELP` and `# TYPE`, its samples follow it contiguously,
//! counters end in `_total`. The per-worker and process figures the
//! supervisor knows (in flight, readiness, restarts, ...) come in as [`WorkerSnapshot`] and
//! [`ProcessSnapshot`] at render time rather than being mirrored here.

use std::sync::Arc;

mod endpoint;
#[cfg(test)]
mod exposition_check;
pub mod h2;
mod shard;
mod snapshot;
mod text;
pub mod websocket;

pub use endpoint::{spawn_endpoint, Source};
pub use shard::ThreadMetrics;
pub use snapshot::{ProcessSnapshot, WorkerSnapshot};
pub use text::{Exposition, CONTENT_TYPE};

use shard::{Totals, BUCKET_LE, METHODS, STATUS_MIN, STATUS_OUT_OF_RANGE, STATUS_SLOTS};
// The writer's helpers, also for the families other modules append (`super::sample`).
use text::{family, sample, sample_f64, Value};

/// All metrics of the front end: one shard per front-end thread.
pub struct Metrics {
    shards: Box<[ThreadMetrics]>,
}

impl Metrics {
    /// Metrics for `threads` front-end threads (at least one shard is always made).
    pub fn new(threads: usize) -> Arc<Self> {
        let shards = (0..threads.max(1)).map(|_| ThreadMetrics::new()).collect();
        Arc::new(Self { shards })
    }

    /// The shard of front-end thread `t`.
    ///
    /// # Panics
    /// If `t` is not below the `threads` given to [`Metrics::new`].
    pub fn thread(&self, t: usize) -> &ThreadMetrics {
        &self.shards[t]
    }

    /// Every family in Prometheus text exposition format 0.0.4 ([`CONTENT_TYPE`]).
    pub fn render(&self, workers: &[WorkerSnapshot], process: &ProcessSnapshot) -> String {
        self.exposition(workers, process).into_text()
    }

    /// Every family, for others to append to before [`Exposition::into_text`].
    pub fn exposition(&self, workers: &[WorkerSnapshot], process: &ProcessSnapshot) -> Exposition {
        let totals = Totals::sum(&self.shards);
        let mut out = Exposition::default();

        family(
            &mut out,
            "uringapi_requests_total",
            "counter",
            "Requests answered, by method and final status code.",
        );
        for (m, method) in METHODS.iter().enumerate() {
            for slot in 0..STATUS_SLOTS {
                let n = totals.requests[m * STATUS_SLOTS + slot];
                if n == 0 {
                    continue;
                }
                if slot == STATUS_OUT_OF_RANGE {
                    sample(
                        &mut out,
                        "uringapi_requests_total",
                        &[("method", method), ("status", "other")],
                        n,
                    );
                } else {
                    let status = (STATUS_MIN as usize + slot).to_string();
                    sample(
                        &mut out,
                        "uringapi_requests_total",
                        &[("method", method), ("status", &status)],
                        n,
                    );
                }
            }
        }

        out.histogram(
            "uringapi_request_duration_seconds",
            "Time from a request's head being parsed to its response being fully written.",
            BUCKET_LE.iter().copied().zip(totals.buckets).collect(),
            totals.duration_sum_ns as f64 / 1e9,
        );

        family(
            &mut out,
            "uringapi_queue_depth",
            "gauge",
            "Requests waiting for a worker.",
        );
        sample(
            &mut out,
            "uringapi_queue_depth",
            &[],
            totals.queue_depth.max(0) as u64,
        );
        let counters = [
            (
                "uringapi_queue_timeouts_total",
                "Requests answered 503 after waiting --queue-timeout for a worker.",
                totals.queue_timeouts,
            ),
            (
                "uringapi_request_timeouts_total",
                "Requests answered 504 (or cut off) after --timeout-request.",
                totals.request_timeouts,
            ),
            (
                "uringapi_client_disconnects_total",
                "Requests whose client left before the response was complete.",
                totals.client_disconnects,
            ),
        ];
        for (name, help, n) in counters {
            family(&mut out, name, "counter", help);
            sample(&mut out, name, &[], n);
        }

        h2::render(&mut out, self.shards.iter().map(|s| &s.h2));
        self::workers(&mut out, workers);

        let process_families = [
            (
                "uringapi_worker_restarts_total",
                "counter",
                "Workers started to replace one that died or was recycled.",
                process.worker_restarts,
            ),
            (
                "uringapi_worker_stalls_total",
                "counter",
                "Times a worker was marked stalled (no progress for --stall-timeout).",
                process.worker_stalls,
            ),
            (
                "uringapi_doorbells_total",
                "counter",
                "Doorbells (eventfd writes) rung to wake a sleeping peer.",
                process.doorbells,
            ),
            (
                "uringapi_connections",
                "gauge",
                "Open client connections.",
                process.connections,
            ),
            (
                "uringapi_access_log_dropped_lines_total",
                "counter",
                "Access log lines lost: the log's destination did not keep up, or writing failed (a full disk).",
                process.access_log_dropped_lines,
            ),
        ];
        for (name, kind, help, n) in process_families {
            family(&mut out, name, kind, help);
            sample(&mut out, name, &[], n);
        }
        out
    }
}

fn workers(out: &mut Exposition, workers: &[WorkerSnapshot]) {
    type Get = fn(&WorkerSnapshot) -> Value;
    let families: [(&str, &str, &str, Get); 8] = [
        (
            "uringapi_worker_in_flight",
            "gauge",
            "Requests in flight on the worker.",
            |w| Value::Int(w.in_flight),
        ),
        (
            "uringapi_worker_requests_served_total",
            "counter",
            "Requests the worker answered (restarts from 0 when the worker is replaced).",
            |w| Value::Int(w.served),
        ),
        (
            "uringapi_worker_ready",
            "gauge",
            "1 when the worker is up and takes requests.",
            |w| Value::Int(u64::from(w.ready)),
        ),
        (
            "uringapi_worker_stalled",
            "gauge",
            "1 while the worker's event loop makes no progress (it gets no new requests).",
            |w| Value::Int(u64::from(w.stalled)),
        ),
        (
            "uringapi_worker_ring_occupancy_ratio",
            "gauge",
            "Fraction of the worker's request ring in use, 0 to 1.",
            |w| Value::Float(w.ring_occupancy),
        ),
        (
            "uringapi_worker_loop_lag_seconds",
            "gauge",
            "How far the worker's event loop is behind (time since its last heartbeat).",
            |w| Value::Float(w.loop_lag_seconds),
        ),
        (
            "uringapi_worker_rss_bytes",
            "gauge",
            "Resident memory of the worker process.",
            |w| Value::Int(w.rss_bytes),
        ),
        (
            "uringapi_worker_pid",
            "gauge",
            "Process id of the worker (0 while none runs).",
            |w| Value::Int(u64::from(w.pid)),
        ),
    ];
    for (name, kind, help, get) in families {
        family(out, name, kind, help);
        for w in workers {
            let index = w.index.to_string();
            match get(w) {
                Value::Int(v) => sample(out, name, &[("worker", &index)], v),
                Value::Float(v) => sample_f64(out, name, &[("worker", &index)], v),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::exposition_check::{check_exposition, value};
    use super::*;

    fn workers() -> Vec<WorkerSnapshot> {
        vec![
            WorkerSnapshot {
                index: 0,
                pid: 4242,
                ready: true,
                stalled: false,
                in_flight: 3,
                served: 1000,
                ring_occupancy: 0.25,
                loop_lag_seconds: 0.002,
                rss_bytes: 52_428_800,
            },
            WorkerSnapshot {
                index: 1,
                pid: 4243,
                ready: false,
                stalled: true,
                in_flight: 0,
                served: 7,
                ring_occupancy: 0.0,
                loop_lag_seconds: 1.5,
                rss_bytes: 1,
            },
        ]
    }

    const PROCESS: ProcessSnapshot = ProcessSnapshot {
        worker_restarts: 2,
        worker_stalls: 5,
        doorbells: 123_456,
        connections: 17,
        access_log_dropped_lines: 9,
    };

    #[test]
    fn empty_metrics_render_valid_exposition_with_every_family() {
        let m = Metrics::new(2);
        let text = m.render(&[], &ProcessSnapshot::default());
        check_exposition(&text);
        for family in [
            "uringapi_requests_total counter",
            "uringapi_request_duration_seconds histogram",
            "uringapi_queue_depth gauge",
            "uringapi_queue_timeouts_total counter",
            "uringapi_request_timeouts_total counter",
            "uringapi_client_disconnects_total counter",
            "uringapi_worker_in_flight gauge",
            "uringapi_worker_requests_served_total counter",
            "uringapi_worker_ready gauge",
            "uringapi_worker_stalled gauge",
            "uringapi_worker_ring_occupancy_ratio gauge",
            "uringapi_worker_loop_lag_seconds gauge",
            "uringapi_worker_rss_bytes gauge",
            "uringapi_worker_restarts_total counter",
            "uringapi_worker_stalls_total counter",
            "uringapi_doorbells_total counter",
            "uringapi_connections gauge",
            "uringapi_access_log_dropped_lines_total counter",
        ] {
            assert!(
                text.contains(&format!("# TYPE {family}\n")),
                "missing {family}"
            );
        }
        assert!(text.contains("uringapi_request_duration_seconds_bucket{le=\"+Inf\"} 0\n"));
        assert!(text.contains("uringapi_request_duration_seconds_count 0\n"));
    }

    #[test]
    fn observations_on_several_threads_add_up() {
        let m = Metrics::new(2);
        let (a, b) = (m.thread(0), m.thread(1));
        a.observe(b"GET", 200, Duration::from_millis(1)); // le=0.001 exactly
        b.observe(b"GET", 200, Duration::from_micros(400)); // le=0.0005
        a.observe(b"POST", 404, Duration::from_millis(3)); // le=0.005
        a.observe(b"get", 200, Duration::from_secs(20)); // OTHER, +Inf
        b.observe(b"BREW", 418, Duration::from_millis(30)); // OTHER, le=0.05
        b.observe(b"DELETE", 599, Duration::ZERO);
        b.observe(b"PATCH", 100, Duration::ZERO);
        a.observe(b"OPTIONS", 42, Duration::ZERO); // outside 100..=599
        a.observe(b"HEAD", 600, Duration::ZERO);
        for _ in 0..3 {
            a.queue_enter();
        }
        b.queue_leave(); // another shard: only the sum counts
        a.queue_timeout();
        b.request_timeout();
        b.request_timeout();
        a.client_disconnect();

        let text = m.render(&workers(), &PROCESS);
        let s = check_exposition(&text);
        let req = |m: &str, st: &str| {
            value(
                &s,
                "uringapi_requests_total",
                &[("method", m), ("status", st)],
            )
        };
        assert_eq!(req("GET", "200"), Some(2.0));
        assert_eq!(req("POST", "404"), Some(1.0));
        assert_eq!(req("OTHER", "200"), Some(1.0));
        assert_eq!(req("OTHER", "418"), Some(1.0));
        assert_eq!(req("DELETE", "599"), Some(1.0));
        assert_eq!(req("PATCH", "100"), Some(1.0));
        assert_eq!(req("OPTIONS", "other"), Some(1.0));
        assert_eq!(req("HEAD", "other"), Some(1.0));
        assert_eq!(req("PUT", "200"), None, "zero counters are not rendered");
        let total: f64 = s
            .iter()
            .filter(|x| x.name == "uringapi_requests_total")
            .map(|x| x.value)
            .sum();
        assert_eq!(total, 9.0);

        let bucket = |le: &str| {
            value(
                &s,
                "uringapi_request_duration_seconds_bucket",
                &[("le", le)],
            )
        };
        // Cumulative: 400 µs and the four zero latencies, then 1 ms, 3 ms, 30 ms, 20 s.
        for (le, n) in [
            ("0.0005", 5.0),
            ("0.001", 6.0),
            ("0.0025", 6.0),
            ("0.005", 7.0),
            ("0.01", 7.0),
            ("0.025", 7.0),
            ("0.05", 8.0),
            ("10", 8.0),
            ("+Inf", 9.0),
        ] {
            assert_eq!(bucket(le), Some(n), "le={le}");
        }
        assert_eq!(
            value(&s, "uringapi_request_duration_seconds_count", &[]),
            Some(9.0)
        );
        let sum = value(&s, "uringapi_request_duration_seconds_sum", &[]).unwrap();
        assert!((sum - 20.0344).abs() < 1e-9, "sum {sum}");

        assert_eq!(value(&s, "uringapi_queue_depth", &[]), Some(2.0));
        assert_eq!(value(&s, "uringapi_queue_timeouts_total", &[]), Some(1.0));
        assert_eq!(value(&s, "uringapi_request_timeouts_total", &[]), Some(2.0));
        assert_eq!(
            value(&s, "uringapi_client_disconnects_total", &[]),
            Some(1.0)
        );
    }

    #[test]
    fn worker_and_process_snapshots_are_rendered_per_worker() {
        let m = Metrics::new(1);
        let s = check_exposition(&m.render(&workers(), &PROCESS));
        let w = |name: &str, i: &str| value(&s, name, &[("worker", i)]);
        assert_eq!(w("uringapi_worker_in_flight", "0"), Some(3.0));
        assert_eq!(w("uringapi_worker_in_flight", "1"), Some(0.0));
        assert_eq!(
            w("uringapi_worker_requests_served_total", "0"),
            Some(1000.0)
        );
        assert_eq!(w("uringapi_worker_ready", "0"), Some(1.0));
        assert_eq!(w("uringapi_worker_ready", "1"), Some(0.0));
        assert_eq!(w("uringapi_worker_stalled", "1"), Some(1.0));
        assert_eq!(w("uringapi_worker_ring_occupancy_ratio", "0"), Some(0.25));
        assert_eq!(w("uringapi_worker_loop_lag_seconds", "1"), Some(1.5));
        assert_eq!(w("uringapi_worker_rss_bytes", "0"), Some(52_428_800.0));
        assert_eq!(w("uringapi_worker_pid", "1"), Some(4243.0));
        assert_eq!(value(&s, "uringapi_worker_restarts_total", &[]), Some(2.0));
        assert_eq!(value(&s, "uringapi_worker_stalls_total", &[]), Some(5.0));
        assert_eq!(value(&s, "uringapi_doorbells_total", &[]), Some(123_456.0));
        assert_eq!(value(&s, "uringapi_connections", &[]), Some(17.0));
        assert_eq!(
            value(&s, "uringapi_access_log_dropped_lines_total", &[]),
            Some(9.0)
        );
    }

    #[test]
    fn odd_float_values_still_parse() {
        let m = Metrics::new(1);
        let mut ws = workers();
        ws[0].loop_lag_seconds = f64::INFINITY;
        ws[1].loop_lag_seconds = f64::NAN;
        ws[1].ring_occupancy = 1e-12;
        let text = m.render(&ws, &PROCESS);
        let s = check_exposition(&text);
        assert!(text.contains("uringapi_worker_loop_lag_seconds{worker=\"0\"} +Inf\n"));
        assert!(text.contains("uringapi_worker_loop_lag_seconds{worker=\"1\"} NaN\n"));
        assert_eq!(
            value(
                &s,
                "uringapi_worker_ring_occupancy_ratio",
                &[("worker", "1")]
            ),
            Some(1e-12)
        );
    }
}
