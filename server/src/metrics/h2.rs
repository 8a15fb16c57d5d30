//! HTTP/2 counters: connections, the GOAWAY codes the front end closed connections with,
//! and how often each defence against an abusive client fired.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// The defences, in label order (README, "HTTP/2").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Defence {
    /// Streams opened and reset at once (CVE-2023-44487).
    RapidReset,
    /// A header block split over too many CONTINUATION frames (CVE-2024-27316 class).
    ContinuationFlood,
    /// SETTINGS frames past the budget.
    SettingsFlood,
    /// PING frames past the budget.
    PingFlood,
    /// A header list past --limit-request-field-size-based bound (HPACK bomb).
    HeaderListSize,
    /// A client that keeps its flow-control window shut past --timeout-body-read.
    ZeroWindow,
    /// Other frames that cost work and carry none (empty DATA, WINDOW_UPDATE, PRIORITY).
    ControlFlood,
}

const DEFENCES: [&str; 7] = [
    "rapid_reset",
    "continuation_flood",
    "settings_flood",
    "ping_flood",
    "header_list_size",
    "zero_window",
    "control_flood",
];

/// GOAWAY error codes 0..=13 (RFC 9113 §7), then one slot for any other.
const REASONS: [&str; 15] = [
    "NO_ERROR",
    "PROTOCOL_ERROR",
    "INTERNAL_ERROR",
    "FLOW_CONTROL_ERROR",
    "SETTINGS_TIMEOUT",
    "STREAM_CLOSED",
    "FRAME_SIZE_ERROR",
    "REFUSED_STREAM",
    "CANCEL",
    "COMPRESSION_ERROR",
    "CONNECT_ERROR",
    "ENHANCE_YOUR_CALM",
    "INADEQUATE_SECURITY",
    "HTTP_1_1_REQUIRED",
    "OTHER",
];

/// One thread's HTTP/2 counters.
pub struct Counters {
    connections: AtomicU64,
    goaway: [AtomicU64; REASONS.len()],
    defences: [AtomicU64; DEFENCES.len()],
}

impl Default for Counters {
    fn default() -> Self {
        Self {
            connections: AtomicU64::new(0),
            goaway: [const { AtomicU64::new(0) }; REASONS.len()],
            defences: [const { AtomicU64::new(0) }; DEFENCES.len()],
        }
    }
}

impl Counters {
    /// An HTTP/2 connection started (h2c or ALPN).
    pub fn connection(&self) {
        self.connections.fetch_add(1, Relaxed);
    }

    /// The front end closed a connection with GOAWAY `code` (an error, not a drain).
    pub fn goaway(&self, code: u32) {
        let i = (code as usize).min(REASONS.len() - 1);
        self.goaway[i].fetch_add(1, Relaxed);
    }

    pub fn defence(&self, d: Defence) {
        self.defences[d as usize].fetch_add(1, Relaxed);
    }
}

/// Renders the HTTP/2 families summed over `shards`.
pub fn render<'a>(out: &mut super::Exposition, shards: impl Iterator<Item = &'a Counters> + Clone) {
    let sum = |f: &dyn Fn(&Counters) -> u64| shards.clone().map(f).sum::<u64>();
    let name = "uringapi_h2_connections_total";
    super::text::family(
        out,
        name,
        "counter",
        "HTTP/2 connections (h2c and ALPN h2).",
    );
    super::text::sample(out, name, &[], sum(&|c| c.connections.load(Relaxed)));
    let name = "uringapi_h2_goaway_total";
    super::text::family(
        out,
        name,
        "counter",
        "HTTP/2 connections the front end closed with an error GOAWAY, by code.",
    );
    for (i, code) in REASONS.iter().enumerate() {
        let n = sum(&|c| c.goaway[i].load(Relaxed));
        if n > 0 {
            super::text::sample(out, name, &[("code", code)], n);
        }
    }
    let name = "uringapi_h2_defence_total";
    super::text::family(
        out,
        name,
        "counter",
        "Times an HTTP/2 defence against an abusive client fired, by kind.",
    );
    for (i, kind) in DEFENCES.iter().enumerate() {
        let n = sum(&|c| c.defences[i].load(Relaxed));
        if n > 0 {
            super::text::sample(out, name, &[("kind", kind)], n);
        }
    }
}
