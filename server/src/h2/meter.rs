//! The frame meter: bounds the floods h2 itself only slows down.
//!
//! h2 answers every PING and SETTINGS before it reads the next frame, so a flood of them
//! costs the client as much as us, but never ends; it lets a client cancel streams as
//! fast as it opens them as long as each was accepted. The meter reads the 9-byte frame
//! headers as the bytes pass from the socket to h2 (the payloads are skipped, not parsed),
//! keeps a token bucket per kind of frame that costs work and carries no request, and
//! trips when one runs dry: the driver then closes the connection with GOAWAY
//! ENHANCE_YOUR_CALM and counts the defence. What h2 bounds itself (CONTINUATION
//! frames per header block, the decoded header list size, resets of streams not yet
//! accepted, floods of small DATA frames) closes the connection from inside h2 with the
//! same code; `classify` tells which from the GOAWAY's debug data.
//!
//! PERF: a few compares per frame header; payload bytes only move a counter.

use std::cell::Cell;
use std::rc::Rc;
use std::task::Waker;
use std::time::Instant;

use h2::Reason;

use super::preface::PREFACE;
use crate::metrics::h2::Defence;

/// A token bucket: `burst` frames at once, `rate` more per second.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    burst: f64,
    rate: f64,
}

impl Bucket {
    const fn new(burst: f64, rate: f64) -> Self {
        Self {
            tokens: burst,
            burst,
            rate,
        }
    }

    fn refill(&mut self, secs: f64) {
        self.tokens = (self.tokens + secs * self.rate).min(self.burst);
    }

    /// Takes one token; `false`: the bucket is dry.
    fn take(&mut self) -> bool {
        if self.tokens < 1.0 {
            return false;
        }
        self.tokens -= 1.0;
        true
    }
}

// The budgets: far above what browsers, curl, gRPC and h2load send, far below a flood.
/// SETTINGS frames (not ACKs): a client sends one, maybe a few.
const SETTINGS: Bucket = Bucket::new(50.0, 5.0);
/// PING frames (not ACKs): keep-alives and RTT probes, a few a second at most.
const PING: Bucket = Bucket::new(100.0, 20.0);
/// RST_STREAM frames: a browser cancels some streams when a page changes.
const RESETS: Bucket = Bucket::new(400.0, 200.0);
/// WINDOW_UPDATE, PRIORITY and empty DATA (without END_STREAM) frames.
const CONTROL: Bucket = Bucket::new(4000.0, 2000.0);

/// What the driver sees of the meter: set when a bucket ran dry.
#[derive(Default)]
pub struct Trip {
    hit: Cell<Option<Defence>>,
    waker: Cell<Option<Waker>>,
    /// Frames of the header block in progress (HEADERS and its CONTINUATIONs so far).
    block: Cell<usize>,
    /// Type of the last frame seen.
    last: Cell<u8>,
    /// RST_STREAM frames seen.
    resets: Cell<u64>,
}

impl Trip {
    /// The defence that fired, with the GOAWAY code to close with.
    pub fn tripped(&self) -> Option<(Reason, Defence)> {
        self.hit.get().map(|d| (Reason::ENHANCE_YOUR_CALM, d))
    }

    pub fn set_waker(&self, waker: &Waker) {
        self.waker.set(Some(waker.clone()));
    }

    fn fire(&self, d: Defence) {
        if self.hit.get().is_none() {
            self.hit.set(Some(d));
        }
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }
}

/// Follows the frame headers of the client's byte stream.
pub struct Meter {
    trip: Rc<Trip>,
    /// Bytes still to skip: the preface, then each frame's payload.
    skip: usize,
    header: [u8; 9],
    have: usize,
    last: Instant,
    settings: Bucket,
    ping: Bucket,
    resets: Bucket,
    control: Bucket,
}

impl Meter {
    pub fn new() -> Self {
        Self {
            trip: Rc::default(),
            skip: PREFACE.len(),
            header: [0; 9],
            have: 0,
            last: Instant::now(),
            settings: SETTINGS,
            ping: PING,
            resets: RESETS,
            control: CONTROL,
        }
    }

    pub fn trip(&self) -> Rc<Trip> {
        self.trip.clone()
    }

    pub fn tripped(&self) -> bool {
        self.trip.hit.get().is_some()
    }

    /// Follows `bytes`, the next bytes h2 reads.
    pub fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.skip > 0 {
                let n = self.skip.min(bytes.len());
                self.skip -= n;
                bytes = &bytes[n..];
                continue;
            }
            let n = (9 - self.have).min(bytes.len());
            self.header[self.have..self.have + n].copy_from_slice(&bytes[..n]);
            self.have += n;
            bytes = &bytes[n..];
            if self.have == 9 {
                self.have = 0;
                let h = self.header;
                let len = usize::from(h[0]) << 16 | usize::from(h[1]) << 8 | usize::from(h[2]);
                self.skip = len;
                self.frame(h[3], h[4], len);
            }
        }
    }

    /// One frame header: type, flags, payload length.
    fn frame(&mut self, kind: u8, flags: u8, len: usize) {
        const ACK: u8 = 0x1;
        const END_STREAM: u8 = 0x1;
        const END_HEADERS: u8 = 0x4;
        let t = &self.trip;
        t.last.set(kind);
        match kind {
            0x1 => t.block.set(usize::from(flags & END_HEADERS == 0)),
            0x9 if flags & END_HEADERS == 0 => t.block.set(t.block.get() + 1),
            0x9 => t.block.set(0),
            0x3 => t.resets.set(t.resets.get() + 1),
            _ => {}
        }
        self.refill(Instant::now());
        let bucket = match kind {
            // DATA: only empty ones that do not end the stream cost without carrying.
            0x0 if len == 0 && flags & END_STREAM == 0 => {
                (&mut self.control, Defence::ControlFlood)
            }
            0x2 | 0x8 => (&mut self.control, Defence::ControlFlood),
            0x3 => (&mut self.resets, Defence::RapidReset),
            0x4 if flags & ACK == 0 => (&mut self.settings, Defence::SettingsFlood),
            0x6 if flags & ACK == 0 => (&mut self.ping, Defence::PingFlood),
            _ => return,
        };
        let (b, defence) = bucket;
        if !b.take() {
            self.trip.fire(defence);
        }
    }

    /// Every bucket refilled for the time since the last frame that counted.
    fn refill(&mut self, now: Instant) {
        let secs = now.duration_since(self.last).as_secs_f64();
        for b in [
            &mut self.settings,
            &mut self.ping,
            &mut self.resets,
            &mut self.control,
        ] {
            b.refill(secs);
        }
        self.last = now;
    }
}

/// The defence behind an ENHANCE_YOUR_CALM GOAWAY h2 sent itself, from what the meter saw
/// last (h2 does not hand its debug data back): a header block still open after several
/// CONTINUATIONs (too_many_continuations), a stream of resets (too_many_resets), or a
/// HEADERS frame whose list decoded past h2's abuse bound (header_list_way_too_large).
pub fn classify(e: &h2::Error, trip: &Trip) -> Option<Defence> {
    if let Some(hit) = trip.hit.get() {
        return Some(hit);
    }
    if e.reason() != Some(Reason::ENHANCE_YOUR_CALM) {
        return None;
    }
    Some(if trip.block.get() >= 3 {
        Defence::ContinuationFlood
    } else if trip.resets.get() >= 10 {
        Defence::RapidReset
    } else if trip.last.get() == 0x1 {
        Defence::HeaderListSize
    } else {
        Defence::ControlFlood
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, payload: &[u8]) -> Vec<u8> {
        let len = payload.len();
        let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
        f.extend_from_slice(&1u32.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn a_ping_flood_trips_and_acks_and_requests_do_not() {
        let mut m = Meter::new();
        m.feed(PREFACE);
        m.feed(&frame(0x4, 0, &[0; 6]));
        for _ in 0..1000 {
            m.feed(&frame(0x4, 1, &[]));
            m.feed(&frame(0x6, 1, &[0; 8]));
            m.feed(&frame(0x0, 0, &[7; 100]));
        }
        assert!(!m.tripped());
        for _ in 0..200 {
            m.feed(&frame(0x6, 0, &[0; 8]));
        }
        assert_eq!(
            m.trip.tripped(),
            Some((Reason::ENHANCE_YOUR_CALM, Defence::PingFlood))
        );
    }

    #[test]
    fn headers_split_anywhere_are_followed() {
        let mut m = Meter::new();
        let mut bytes = PREFACE.to_vec();
        for _ in 0..100 {
            bytes.extend(frame(0x4, 0, &[0; 6]));
        }
        for b in bytes.chunks(5) {
            m.feed(b);
        }
        assert_eq!(
            m.trip.tripped(),
            Some((Reason::ENHANCE_YOUR_CALM, Defence::SettingsFlood))
        );
    }

    #[test]
    fn resets_past_the_budget_trip() {
        let mut m = Meter::new();
        m.feed(PREFACE);
        for _ in 0..(RESETS.burst as usize + 50) {
            m.feed(&frame(0x3, 0, &[0; 4]));
        }
        assert_eq!(m.trip.tripped().map(|t| t.1), Some(Defence::RapidReset));
    }
}
