//! What every front-end thread and the supervisor know about each worker's load, shared
//! through atomics: requests in flight (across all threads), requests served, and the
//! supervisor's verdicts (stalled, retiring) that keep new requests away from a worker.
//!
//! Indexed by worker slot, the same index the hubs use for their links. A slot is reused only
//! after its previous worker is gone and every thread has failed or finished its streams, so
//! the counters start each life at zero without a reset racing a late decrement.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

/// Most worker slots: `--workers` (at most 256), room for SIGTTIN, and a replacement per
/// worker during a rolling restart. A spawn past it is refused with a log line.
pub const MAX_SLOTS: usize = 1024;

/// One worker's figures, on its own cache line: every request touches `in_flight` twice.
#[repr(align(64))]
#[derive(Default)]
pub struct WorkerLoad {
    /// Requests dispatched to the worker whose response is not complete, over all threads.
    in_flight: AtomicU32,
    /// Responses completed since the worker was spawned (for --limit-max-requests).
    served: AtomicU64,
    /// Its event loop has not beaten for --stall-timeout: no new requests.
    stalled: AtomicBool,
    /// Being replaced or removed: no new requests; it stops once `in_flight` is zero.
    retiring: AtomicBool,
    /// Its WebSockets, for /metrics.
    pub ws: WsCounters,
}

/// Close codes counted one by one in `uringapi_websocket_closes_total`; others count as
/// "other".
pub const WS_CLOSE_CODES: [u16; 10] = [1000, 1001, 1002, 1003, 1005, 1006, 1007, 1008, 1009, 1011];

/// One worker's WebSocket figures (relaxed counters: only reported).
#[derive(Default)]
pub struct WsCounters {
    pub open: AtomicU32,
    pub messages_in: AtomicU64,
    pub messages_out: AtomicU64,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    /// By [`WS_CLOSE_CODES`] index; the last one is every other code.
    pub closes: [AtomicU64; WS_CLOSE_CODES.len() + 1],
}

impl WorkerLoad {
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub fn served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }

    pub fn is_stalled(&self) -> bool {
        self.stalled.load(Ordering::Relaxed)
    }

    pub fn is_retiring(&self) -> bool {
        self.retiring.load(Ordering::Relaxed)
    }

    /// Whether a new request may go to this worker, given a per-worker limit (0: none).
    pub fn accepts(&self, limit: u32) -> bool {
        !self.is_stalled() && !self.is_retiring() && (limit == 0 || self.in_flight() < limit)
    }

    pub fn dispatched(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    /// The request no longer counts: its response completed (`served`) or it was given up.
    pub fn done(&self, served: bool) {
        // Never below zero, even if a bug double-counted: a wrapped counter would keep the
        // worker "full" forever.
        let _ = self
            .in_flight
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
        if served {
            self.served.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn ws_opened(&self) {
        self.ws.open.fetch_add(1, Ordering::Relaxed);
    }

    /// A WebSocket ended with `code` (the one sent or received in the close handshake,
    /// 1006 when the connection dropped).
    pub fn ws_closed(&self, code: u16) {
        let _ = self
            .ws
            .open
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
        let i = WS_CLOSE_CODES
            .iter()
            .position(|&c| c == code)
            .unwrap_or(WS_CLOSE_CODES.len());
        self.ws.closes[i].fetch_add(1, Ordering::Relaxed);
    }

    pub fn ws_message_in(&self, len: usize) {
        self.ws.messages_in.fetch_add(1, Ordering::Relaxed);
        self.ws.bytes_in.fetch_add(len as u64, Ordering::Relaxed);
    }

    /// A record of an app message went out (`len` payload bytes; `last`: its last one).
    pub fn ws_message_out(&self, len: usize, last: bool) {
        if last {
            self.ws.messages_out.fetch_add(1, Ordering::Relaxed);
        }
        self.ws.bytes_out.fetch_add(len as u64, Ordering::Relaxed);
    }

    pub fn set_stalled(&self, stalled: bool) {
        self.stalled.store(stalled, Ordering::Relaxed);
    }

    pub fn set_retiring(&self, retiring: bool) {
        self.retiring.store(retiring, Ordering::Relaxed);
    }

    /// A new worker takes the slot.
    pub fn reset(&self) {
        self.served.store(0, Ordering::Relaxed);
        for c in [
            &self.ws.messages_in,
            &self.ws.messages_out,
            &self.ws.bytes_in,
            &self.ws.bytes_out,
        ]
        .into_iter()
        .chain(&self.ws.closes)
        {
            c.store(0, Ordering::Relaxed);
        }
        self.stalled.store(false, Ordering::Relaxed);
        self.retiring.store(false, Ordering::Relaxed);
    }
}

/// The table, one entry per worker slot.
pub struct LoadTable {
    slots: Box<[WorkerLoad]>,
    /// Open client connections over all front-end threads.
    pub connections: std::sync::atomic::AtomicUsize,
}

impl Default for LoadTable {
    fn default() -> Self {
        Self {
            slots: (0..MAX_SLOTS).map(|_| WorkerLoad::default()).collect(),
            connections: Default::default(),
        }
    }
}

impl LoadTable {
    /// Slot `i`. Panics past `MAX_SLOTS`, which the supervisor never allocates.
    pub fn get(&self, i: usize) -> &WorkerLoad {
        &self.slots[i]
    }

    /// Open WebSockets over every worker.
    pub fn websockets_open(&self) -> u32 {
        self.slots
            .iter()
            .map(|w| w.ws.open.load(Ordering::Relaxed))
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_until_the_limit_and_never_when_stalled_or_retiring() {
        let t = LoadTable::default();
        let w = t.get(3);
        assert!(w.accepts(2));
        w.dispatched();
        w.dispatched();
        assert!(!w.accepts(2));
        assert!(w.accepts(0), "0 means no limit");
        w.done(true);
        assert!(w.accepts(2));
        assert_eq!(w.served(), 1);
        w.set_stalled(true);
        assert!(!w.accepts(0));
        w.set_stalled(false);
        w.set_retiring(true);
        assert!(!w.accepts(0));
    }

    #[test]
    fn done_never_wraps_below_zero() {
        let t = LoadTable::default();
        t.get(0).done(false);
        assert_eq!(t.get(0).in_flight(), 0);
        assert!(t.get(0).accepts(1));
    }
}
