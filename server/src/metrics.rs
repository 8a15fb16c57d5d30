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
//! rendered. The HTTP/2 counters (`metrics/h2.rs`) add 184 bytes.
//!
//! # Exposition
//!
//! Text format 0.0.4: every family has `# HELP` and `# TYPE`, its samples follow it
//! contiguously, counters end in `_total`. The per-worker and process figures the
//! supervisor knows (in flight, readiness, restarts, ...) come in as [`WorkerSnapshot`] and
//! [`ProcessSnapshot`] at render time rather than being mirrored here.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

mod endpoint;
pub mod h2;

pub use endpoint::{spawn_endpoint, Source};

/// Method classes, in label order. Index [`OTHER`] takes every method not listed.
const METHODS: [&str; 8] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "OTHER",
];
const OTHER: usize = 7;

/// First status code with a slot of its own.
const STATUS_MIN: u16 = 100;
/// Slots per method class: 100..=599, then one for codes outside that range.
const STATUS_SLOTS: usize = 501;
const STATUS_OUT_OF_RANGE: usize = STATUS_SLOTS - 1;

/// Upper bounds of the latency histogram's finite buckets, in nanoseconds, and the same
/// bounds as the `le` label prints them. A latency equal to a bound falls in that bucket
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
const BUCKET_LE: [&str; 15] = [
    "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1",
    "2.5", "5", "10", "+Inf",
];
const BUCKETS: usize = BUCKET_LE.len();

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

    /// Every family in Prometheus text exposition format 0.0.4.
    pub fn render(&self, workers: &[WorkerSnapshot], process: &ProcessSnapshot) -> String {
        let totals = self.sum_shards();
        let mut out = String::with_capacity(4096 + 1024 * workers.len());

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

        family(
            &mut out,
            "uringapi_request_duration_seconds",
            "histogram",
            "Time from a request's head being parsed to its response being fully written.",
        );
        let mut cumulative = 0u64;
        for (le, n) in BUCKET_LE.iter().zip(totals.buckets) {
            cumulative += n;
            sample(
                &mut out,
                "uringapi_request_duration_seconds_bucket",
                &[("le", le)],
                cumulative,
            );
        }
        sample_f64(
            &mut out,
            "uringapi_request_duration_seconds_sum",
            &[],
            totals.duration_sum_ns as f64 / 1e9,
        );
        sample(
            &mut out,
            "uringapi_request_duration_seconds_count",
            &[],
            cumulative,
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
                "Access log lines dropped because the log's destination did not keep up.",
                process.access_log_dropped_lines,
            ),
        ];
        for (name, kind, help, n) in process_families {
            family(&mut out, name, kind, help);
            sample(&mut out, name, &[], n);
        }
        out
    }

    fn sum_shards(&self) -> Totals {
        let mut t = Totals {
            requests: vec![0; METHODS.len() * STATUS_SLOTS],
            buckets: [0; BUCKETS],
            duration_sum_ns: 0,
            queue_depth: 0,
            queue_timeouts: 0,
            request_timeouts: 0,
            client_disconnects: 0,
        };
        for s in self.shards.iter() {
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

/// The shards summed at render time.
struct Totals {
    requests: Vec<u64>,
    buckets: [u64; BUCKETS],
    duration_sum_ns: u64,
    queue_depth: i64,
    queue_timeouts: u64,
    request_timeouts: u64,
    client_disconnects: u64,
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
    pub h2: h2::Counters,
}

impl ThreadMetrics {
    fn new() -> Self {
        Self {
            duration_sum_ns: AtomicU64::new(0),
            buckets: [const { AtomicU64::new(0) }; BUCKETS],
            queue_depth: AtomicI64::new(0),
            queue_timeouts: AtomicU64::new(0),
            request_timeouts: AtomicU64::new(0),
            client_disconnects: AtomicU64::new(0),
            requests: [const { [const { AtomicU64::new(0) }; STATUS_SLOTS] }; METHODS.len()],
            h2: h2::Counters::default(),
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

/// Methods are case-sensitive (RFC 9110 §9.1): `get` is not `GET`, so it counts as OTHER.
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
    /// Access log lines dropped because its writer did not keep up.
    pub access_log_dropped_lines: u64,
}

fn workers(out: &mut String, workers: &[WorkerSnapshot]) {
    type Get = fn(&WorkerSnapshot) -> f64;
    let families: [(&str, &str, &str, Get); 8] = [
        (
            "uringapi_worker_in_flight",
            "gauge",
            "Requests in flight on the worker.",
            |w| w.in_flight as f64,
        ),
        (
            "uringapi_worker_requests_served_total",
            "counter",
            "Requests the worker answered (restarts from 0 when the worker is replaced).",
            |w| w.served as f64,
        ),
        (
            "uringapi_worker_ready",
            "gauge",
            "1 when the worker is up and takes requests.",
            |w| f64::from(u8::from(w.ready)),
        ),
        (
            "uringapi_worker_stalled",
            "gauge",
            "1 while the worker's event loop makes no progress (it gets no new requests).",
            |w| f64::from(u8::from(w.stalled)),
        ),
        (
            "uringapi_worker_ring_occupancy_ratio",
            "gauge",
            "Fraction of the worker's request ring in use, 0 to 1.",
            |w| w.ring_occupancy,
        ),
        (
            "uringapi_worker_loop_lag_seconds",
            "gauge",
            "How far the worker's event loop is behind (time since its last heartbeat).",
            |w| w.loop_lag_seconds,
        ),
        (
            "uringapi_worker_rss_bytes",
            "gauge",
            "Resident memory of the worker process.",
            |w| w.rss_bytes as f64,
        ),
        (
            "uringapi_worker_pid",
            "gauge",
            "Process id of the worker (0 while none runs).",
            |w| f64::from(w.pid),
        ),
    ];
    for (name, kind, help, get) in families {
        family(out, name, kind, help);
        for w in workers {
            let index = w.index.to_string();
            sample_f64(out, name, &[("worker", &index)], get(w));
        }
    }
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    // Writing to a String cannot fail.
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn labels(out: &mut String, name: &str, labels: &[(&str, &str)]) {
    out.push_str(name);
    if labels.is_empty() {
        return;
    }
    out.push('{');
    for (i, (k, v)) in labels.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        // Label values here are method names, numbers and bucket bounds: nothing to escape.
        let _ = write!(out, "{k}=\"{v}\"");
    }
    out.push('}');
}

fn sample(out: &mut String, name: &str, l: &[(&str, &str)], value: u64) {
    labels(out, name, l);
    let _ = writeln!(out, " {value}");
}

fn sample_f64(out: &mut String, name: &str, l: &[(&str, &str)], value: f64) {
    labels(out, name, l);
    // Rust prints infinities as `inf`; the format wants `+Inf`/`-Inf`. Display never uses an
    // exponent, which the format accepts either way.
    if value.is_nan() {
        out.push_str(" NaN\n");
    } else if value.is_infinite() {
        out.push_str(if value > 0.0 { " +Inf\n" } else { " -Inf\n" });
    } else {
        let _ = writeln!(out, " {value}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{HashMap, HashSet};

    // ---- a checker for the text exposition format 0.0.4 ---------------------------------

    #[derive(Debug)]
    struct Sample {
        name: String,
        labels: Vec<(String, String)>,
        value: f64,
    }

    fn is_metric_name(s: &str) -> bool {
        let mut c = s.chars();
        matches!(c.next(), Some(ch) if ch.is_ascii_alphabetic() || ch == '_' || ch == ':')
            && c.all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == ':')
    }

    fn is_label_name(s: &str) -> bool {
        let mut c = s.chars();
        matches!(c.next(), Some(ch) if ch.is_ascii_alphabetic() || ch == '_')
            && c.all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
    }

    fn parse_value(s: &str) -> Result<f64, String> {
        match s {
            "+Inf" => Ok(f64::INFINITY),
            "-Inf" => Ok(f64::NEG_INFINITY),
            "NaN" => Ok(f64::NAN),
            _ => s.parse::<f64>().map_err(|_| format!("bad value {s:?}")),
        }
    }

    /// `name{a="b",c="d"} value`, with the format's label value escapes.
    fn parse_sample(line: &str) -> Result<Sample, String> {
        let name_end = line.find(['{', ' ']).ok_or("no value")?;
        let name = &line[..name_end];
        if !is_metric_name(name) {
            return Err(format!("bad metric name {name:?}"));
        }
        let mut rest = &line[name_end..];
        let mut labels = Vec::new();
        if let Some(r) = rest.strip_prefix('{') {
            rest = r;
            loop {
                if let Some(r) = rest.strip_prefix('}') {
                    rest = r;
                    break;
                }
                let eq = rest.find('=').ok_or("label without =")?;
                let key = &rest[..eq];
                if !is_label_name(key) {
                    return Err(format!("bad label name {key:?}"));
                }
                let r = rest[eq + 1..]
                    .strip_prefix('"')
                    .ok_or("label value not quoted")?;
                let mut value = String::new();
                let mut chars = r.char_indices();
                let end = loop {
                    match chars.next().ok_or("unterminated label value")? {
                        (i, '"') => break i,
                        (_, '\\') => match chars.next().ok_or("dangling escape")?.1 {
                            '\\' => value.push('\\'),
                            '"' => value.push('"'),
                            'n' => value.push('\n'),
                            c => return Err(format!("bad escape \\{c}")),
                        },
                        (_, '\n') => return Err("newline in label value".into()),
                        (_, c) => value.push(c),
                    }
                };
                labels.push((key.to_string(), value));
                rest = &r[end + 1..];
                if let Some(r) = rest.strip_prefix(',') {
                    rest = r;
                }
            }
        }
        let rest = rest.strip_prefix(' ').ok_or("no space before the value")?;
        let mut fields = rest.split(' ');
        let value = parse_value(fields.next().ok_or("no value")?)?;
        if let Some(ts) = fields.next() {
            ts.parse::<i64>()
                .map_err(|_| format!("bad timestamp {ts:?}"))?;
        }
        if fields.next().is_some() {
            return Err("trailing fields".into());
        }
        Ok(Sample {
            name: name.to_string(),
            labels,
            value,
        })
    }

    /// Checks the whole exposition and returns its samples. Panics with the offending line.
    fn check_exposition(text: &str) -> Vec<Sample> {
        assert!(text.ends_with('\n'), "exposition must end with a newline");
        let mut types: HashMap<String, String> = HashMap::new();
        let mut helps: HashSet<String> = HashSet::new();
        let mut finished: HashSet<String> = HashSet::new();
        let mut current: Option<String> = None;
        let mut samples = Vec::new();
        for line in text.lines() {
            assert!(!line.is_empty(), "empty line in exposition");
            if let Some(rest) = line.strip_prefix("# ") {
                let mut parts = rest.splitn(3, ' ');
                let (kw, name) = (parts.next().unwrap(), parts.next().unwrap_or(""));
                assert!(is_metric_name(name), "bad family name in {line:?}");
                match kw {
                    "HELP" => assert!(helps.insert(name.into()), "second HELP for {name}"),
                    "TYPE" => {
                        let t = parts.next().unwrap_or("");
                        assert!(
                            ["counter", "gauge", "histogram", "summary", "untyped"].contains(&t),
                            "bad type in {line:?}"
                        );
                        assert!(
                            types.insert(name.into(), t.into()).is_none(),
                            "second TYPE for {name}"
                        );
                    }
                    _ => {}
                }
                continue;
            }
            assert!(!line.starts_with('#'), "comment without a space: {line:?}");
            let s = parse_sample(line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .filter_map(|suffix| s.name.strip_suffix(suffix))
                .find(|base| types.get(*base).is_some_and(|t| t == "histogram"))
                .unwrap_or(&s.name)
                .to_string();
            assert!(
                types.contains_key(&family),
                "sample before/without # TYPE: {line:?}"
            );
            assert!(helps.contains(&family), "sample without # HELP: {line:?}");
            if current.as_deref() != Some(family.as_str()) {
                if let Some(prev) = current.take() {
                    finished.insert(prev);
                }
                assert!(
                    !finished.contains(&family),
                    "family {family} is not contiguous"
                );
                current = Some(family);
            }
            samples.push(s);
        }
        // Histograms: buckets in increasing le, cumulative, ending at +Inf == _count.
        for (name, t) in &types {
            if t != "histogram" {
                continue;
            }
            let bucket_name = format!("{name}_bucket");
            let buckets: Vec<(f64, f64)> = samples
                .iter()
                .filter(|s| s.name == bucket_name)
                .map(|s| {
                    let le = &s
                        .labels
                        .iter()
                        .find(|(k, _)| k == "le")
                        .expect("bucket without le")
                        .1;
                    (parse_value(le).unwrap(), s.value)
                })
                .collect();
            assert!(!buckets.is_empty(), "{name} has no buckets");
            for w in buckets.windows(2) {
                assert!(w[0].0 < w[1].0, "{name}: le not increasing");
                assert!(w[0].1 <= w[1].1, "{name}: buckets not cumulative");
            }
            let (last_le, inf) = *buckets.last().unwrap();
            assert_eq!(last_le, f64::INFINITY, "{name}: last bucket is not +Inf");
            let count = samples
                .iter()
                .find(|s| s.name == format!("{name}_count"))
                .unwrap();
            assert_eq!(inf, count.value, "{name}: +Inf bucket != _count");
            assert!(
                samples.iter().any(|s| s.name == format!("{name}_sum")),
                "{name}: no _sum"
            );
        }
        samples
    }

    fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        samples
            .iter()
            .find(|s| {
                s.name == name
                    && s.labels.len() == labels.len()
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.iter().any(|(a, b)| a == k && b == v))
            })
            .map(|s| s.value)
    }

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

    #[test]
    fn the_checker_rejects_what_it_should() {
        for bad in [
            "x 1\n",                                          // no HELP/TYPE
            "# HELP x h\n# TYPE x gauge\nx{a=\"1} 1\n",       // unterminated label value
            "# HELP x h\n# TYPE x gauge\nx one\n",            // bad value
            "# HELP x h\n# TYPE x gauge\n# HELP y h\n# TYPE y gauge\nx 1\ny 1\nx 2\n", // split family
            "# HELP h h\n# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n",
            "# HELP h h\n# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 1\n",
        ] {
            let r = std::panic::catch_unwind(|| check_exposition(bad));
            assert!(r.is_err(), "accepted {bad:?}");
        }
    }

    #[test]
    fn a_shard_is_cache_line_aligned_and_about_32_kib() {
        assert_eq!(std::mem::align_of::<ThreadMetrics>(), 64);
        let size = std::mem::size_of::<ThreadMetrics>();
        assert!((32_064..32_064 + 512).contains(&size), "size {size}");
        let m = Metrics::new(3);
        for t in 0..3 {
            assert_eq!(std::ptr::from_ref(m.thread(t)) as usize % 64, 0);
        }
    }
}
