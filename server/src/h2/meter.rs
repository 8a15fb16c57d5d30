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
//! The meter also catches the frames h2 rejects with the wrong error code (h2 answers
//! every frame it cannot load with PROTOCOL_ERROR): a first frame that is not SETTINGS
//! (RFC 9113 §3.4: PROTOCOL_ERROR, which h2 does not check at all), a fixed-size frame
//! of another length (§6.3-§6.9) or a DATA/HEADERS frame too short for the padding and
//! priority fields its flags announce (§4.2: FRAME_SIZE_ERROR), a SETTINGS_INITIAL_WINDOW_SIZE
//! above 2^31-1 (§6.5.2: FLOW_CONTROL_ERROR), DATA or HEADERS on a stream the client
//! already ended with END_STREAM (§5.1, §6.1: STREAM_CLOSED; h2 says PROTOCOL_ERROR while
//! it still answers the stream). Such a frame is held back before its last
//! header (or settings) byte reaches h2, so h2 never answers it, and the driver closes
//! the connection with the code RFC 9113 names (tests/conformance/check_h2.py).
//!
//! It keeps an HPACK mirror too (hpack.rs): every header block is collected and walked
//! before h2 gets its last byte. One that does not decode closes the connection with
//! COMPRESSION_ERROR (§4.3; h2 says PROTOCOL_ERROR). A HEADERS frame with END_STREAM on a
//! stream already open (trailers) is held back from its flags octet until its block is
//! walked; with a pseudo-header field in it (§8.1: malformed, which h2 lets through with
//! the field dropped) it reaches h2 without END_STREAM, and h2 resets the stream with
//! PROTOCOL_ERROR. Released bytes wait in `pending`, which io.rs hands over first.
//!
//! PERF: a few compares per frame header; payload bytes only move a counter, but header
//! blocks are copied once and walked (about 0.25 µs for a typical repeat request, the
//! h2_hpack bench); a request's own HEADERS passes in place.

use std::cell::Cell;
use std::collections::{HashSet, VecDeque};
use std::rc::Rc;
use std::task::Waker;
use std::time::Instant;

use h2::Reason;

use super::hpack::Mirror;
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

/// Streams the client ended (END_STREAM) that are remembered: past it the oldest is
/// forgotten, and a DATA or HEADERS frame on it is left to h2 (PROTOCOL_ERROR while the
/// stream is answered, STREAM_CLOSED after; a connection error either way). Above the
/// default stream limit (200), a few KiB per connection at most.
const ENDED_KEPT: usize = 256;

/// The largest header block (HEADERS and its CONTINUATIONs, compressed) the meter collects
/// for the HPACK mirror; past it the connection is closed (ENHANCE_YOUR_CALM, counted as
/// `header_list_size`). Far above h2's own bounds on a block (the CONTINUATION count and
/// the decoded list size), which close such a connection first.
const BLOCK_MAX: usize = 1024 * 1024;

/// The streams whose request the client ended, bounded by [`ENDED_KEPT`].
#[derive(Default)]
struct Ended {
    set: HashSet<u32>,
    order: VecDeque<u32>,
}

impl Ended {
    fn insert(&mut self, id: u32) {
        if self.set.insert(id) {
            self.order.push_back(id);
            if self.order.len() > ENDED_KEPT {
                if let Some(old) = self.order.pop_front() {
                    self.set.remove(&old);
                }
            }
        }
    }
}

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
    /// Frames seen (of every type).
    frames: Cell<u64>,
    /// A frame that breaks RFC 9113 in a way h2 would report with the wrong code.
    wrong: Cell<Option<Reason>>,
}

impl Trip {
    /// The GOAWAY code to close with, and the defence that fired (`None`: a malformed
    /// frame, not a flood).
    pub fn tripped(&self) -> Option<(Reason, Option<Defence>)> {
        if let Some(reason) = self.wrong.get() {
            return Some((reason, None));
        }
        self.hit.get().map(|d| (Reason::ENHANCE_YOUR_CALM, Some(d)))
    }

    /// How many frames the client has sent so far.
    pub fn frames(&self) -> u64 {
        self.frames.get()
    }

    pub fn set_waker(&self, waker: &Waker) {
        self.waker.set(Some(waker.clone()));
    }

    fn fire(&self, d: Defence) {
        if self.hit.get().is_none() {
            self.hit.set(Some(d));
        }
        self.wake();
    }

    fn reject(&self, reason: Reason) {
        if self.wrong.get().is_none() {
            self.wrong.set(Some(reason));
        }
        self.wake();
    }

    fn wake(&self) {
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
    /// A frame header was seen after the preface.
    started: bool,
    /// SETTINGS payload bytes still to check, and the entry being read.
    settings_left: usize,
    entry: [u8; 6],
    entry_have: usize,
    ended: Ended,
    /// The HPACK mirror (hpack.rs): the client's dynamic table as h2 will see it.
    hpack: Mirror,
    /// The header block in progress: its fragments so far (padding and priority fields
    /// taken out), the payload bytes of the current frame still to copy into it, where the
    /// current frame's payload starts in it, that frame's flags and type, and whether a
    /// CONTINUATION is expected.
    block: Vec<u8>,
    collect: usize,
    frame_at: usize,
    frame_flags: u8,
    frame_kind: u8,
    in_block: bool,
    /// The block is a trailer section: a HEADERS frame on a stream opened before it.
    trailers: bool,
    /// The stream of the block in progress.
    block_stream: u32,
    /// The mirror stopped following: a frame h2 closes the connection for came (one
    /// inside a header block, a CONTINUATION out of place, padding past the payload).
    lost: bool,
    /// The highest stream the client opened (client streams only go up, §5.1.1).
    max_stream: u32,
    /// A HEADERS frame with END_STREAM that may be trailers is held back from its flags
    /// octet on, until its block is walked: trailers with a pseudo-header field reach h2
    /// without END_STREAM, which h2 answers with RST_STREAM PROTOCOL_ERROR (RFC 9113 §8.1),
    /// the stream alone reset and its request never ended for the app. `held`: bytes
    /// absorbed in earlier calls; `hold_from`: where absorbing began in the current call;
    /// `flags_at`: the flags octet's index among the absorbed bytes; `fixes`: flags octets
    /// to clear END_STREAM in; `pending`: released bytes h2 gets before any new ones.
    holding: bool,
    held: Vec<u8>,
    hold_from: Option<usize>,
    flags_at: usize,
    fixes: Vec<usize>,
    pending: Vec<u8>,
    pending_at: usize,
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
            started: false,
            settings_left: 0,
            entry: [0; 6],
            entry_have: 0,
            ended: Ended::default(),
            hpack: Mirror::default(),
            block: Vec::new(),
            collect: 0,
            frame_at: 0,
            frame_flags: 0,
            frame_kind: 0,
            in_block: false,
            trailers: false,
            block_stream: 0,
            lost: false,
            max_stream: 0,
            holding: false,
            held: Vec::new(),
            hold_from: None,
            flags_at: 0,
            fixes: Vec::new(),
            pending: Vec::new(),
            pending_at: 0,
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
        self.trip.tripped().is_some()
    }

    /// Follows `bytes`, the next bytes for h2; returns how many of them h2 may have. Fewer
    /// than all once a frame is malformed: h2 gets none of its last header byte (or of
    /// the SETTINGS entry at fault) onwards, so it cannot answer the frame itself.
    /// The caller hands h2 the [`pending`](Self::pending) bytes first, and feeds more only
    /// once they are all taken.
    pub fn feed(&mut self, bytes: &[u8]) -> usize {
        if self.trip.wrong.get().is_some() {
            return 0;
        }
        debug_assert!(self.pending.is_empty());
        self.hold_from = self.holding.then_some(0);
        let scanned = self.scan(bytes);
        let Some(from) = self.hold_from.take() else {
            return scanned;
        };
        if self.trip.wrong.get().is_some() {
            self.held.clear();
            return from.min(scanned);
        }
        self.held.extend_from_slice(&bytes[from..scanned]);
        for i in self.fixes.drain(..) {
            self.held[i] &= !0x1; // END_STREAM
        }
        if !self.holding {
            std::mem::swap(&mut self.pending, &mut self.held);
            self.pending_at = 0;
        }
        from
    }

    /// Bytes released from a hold, for h2 before any others.
    pub fn pending(&self) -> &[u8] {
        &self.pending[self.pending_at..]
    }

    /// `n` of the [`pending`](Self::pending) bytes were handed to h2.
    pub fn took_pending(&mut self, n: usize) {
        self.pending_at += n;
        if self.pending_at >= self.pending.len() {
            self.pending.clear();
            self.pending_at = 0;
        }
    }

    /// Starts holding back a HEADERS frame with END_STREAM at its flags octet (`pos`).
    fn hold(&mut self, pos: usize) {
        self.holding = true;
        let from = *self.hold_from.get_or_insert(pos);
        self.flags_at = self.held.len() + (pos - from);
    }

    /// Ends the hold; `fix`: the frame reaches h2 without END_STREAM. A hold begun in this
    /// call and released unchanged costs nothing: its bytes pass as they are.
    fn release(&mut self, fix: bool) {
        if !self.holding {
            return;
        }
        self.holding = false;
        if fix {
            self.fixes.push(self.flags_at);
        } else if self.held.is_empty() && self.fixes.is_empty() {
            self.hold_from = None;
        }
    }

    /// [`feed`](Self::feed)'s walk: how far the bytes may go (the last byte of a rejected
    /// frame excluded).
    fn scan(&mut self, bytes: &[u8]) -> usize {
        let mut at = 0;
        while at < bytes.len() {
            let rest = &bytes[at..];
            if self.settings_left > 0 {
                let n = (6 - self.entry_have)
                    .min(rest.len())
                    .min(self.settings_left);
                self.entry[self.entry_have..self.entry_have + n].copy_from_slice(&rest[..n]);
                self.entry_have += n;
                self.settings_left -= n;
                at += n;
                if self.entry_have == 6 {
                    self.entry_have = 0;
                    self.setting();
                    if self.trip.wrong.get().is_some() {
                        return at - 1;
                    }
                }
                continue;
            }
            if self.collect > 0 {
                let n = self.collect.min(rest.len());
                self.block.extend_from_slice(&rest[..n]);
                self.collect -= n;
                at += n;
                if self.collect == 0 {
                    self.fragment_end();
                    if self.trip.wrong.get().is_some() {
                        return at - 1;
                    }
                }
                continue;
            }
            if self.skip > 0 {
                let n = self.skip.min(rest.len());
                self.skip -= n;
                at += n;
                continue;
            }
            let n = (9 - self.have).min(rest.len());
            let had = self.have;
            self.header[self.have..self.have + n].copy_from_slice(&rest[..n]);
            self.have += n;
            if had <= 4 && self.have > 4 && self.started && !self.lost {
                // The flags octet: HEADERS that ends a stream may be trailers.
                if self.header[3] == 0x1 && self.header[4] & 0x1 != 0 {
                    self.hold(at + 4 - had);
                }
            }
            at += n;
            if self.have == 9 {
                self.have = 0;
                let h = self.header;
                let len = usize::from(h[0]) << 16 | usize::from(h[1]) << 8 | usize::from(h[2]);
                self.skip = len;
                let stream = u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff;
                self.frame(h[3], h[4], stream, len);
                if self.trip.wrong.get().is_some() {
                    return at - 1;
                }
            }
        }
        at
    }

    /// One SETTINGS entry (RFC 9113 §6.5.1): identifier, value. The other bounds h2
    /// checks with the right code itself.
    fn setting(&mut self) {
        const INITIAL_WINDOW_SIZE: u16 = 0x4;
        let id = u16::from_be_bytes([self.entry[0], self.entry[1]]);
        let value =
            u32::from_be_bytes([self.entry[2], self.entry[3], self.entry[4], self.entry[5]]);
        if id == INITIAL_WINDOW_SIZE && value > 0x7fff_ffff {
            // RFC 9113 §6.5.2.
            self.trip.reject(Reason::FLOW_CONTROL_ERROR);
        }
    }

    /// The RFC 9113 rules on a frame header that h2 gets wrong or leaves out, with the
    /// code each names.
    fn check(&mut self, kind: u8, flags: u8, stream: u32, len: usize) -> Option<Reason> {
        const ACK: u8 = 0x1;
        const END_STREAM: u8 = 0x1;
        if !self.started {
            self.started = true;
            // §3.4: the client preface goes on with a SETTINGS frame (not an ACK).
            if kind != 0x4 || flags & ACK != 0 {
                return Some(Reason::PROTOCOL_ERROR);
            }
        }
        const PADDED: u8 = 0x8;
        const PRIORITY: u8 = 0x20;
        let size_ok = match kind {
            // §4.2: too small for the Pad Length field (and the priority fields) announced.
            0x0 => flags & PADDED == 0 || len >= 1,
            0x1 => len >= usize::from(flags & PADDED != 0) + 5 * usize::from(flags & PRIORITY != 0),
            0x2 => len == 5,                     // PRIORITY, §6.3
            0x3 | 0x8 => len == 4,               // RST_STREAM §6.4, WINDOW_UPDATE §6.9
            0x4 if flags & ACK != 0 => len == 0, // SETTINGS ACK, §6.5
            0x4 => len.is_multiple_of(6),        // SETTINGS, §6.5
            0x6 => len == 8,                     // PING, §6.7
            0x7 => len >= 8,                     // GOAWAY, §6.8 (§4.2: too small)
            _ => true,
        };
        if !size_ok {
            return Some(Reason::FRAME_SIZE_ERROR);
        }
        if kind <= 0x1 && stream != 0 && self.trip.block.get() == 0 {
            // DATA or HEADERS: §5.1, a stream the client ended is half-closed (remote) or
            // closed, where both are STREAM_CLOSED errors. (Inside a header block any
            // frame but CONTINUATION is h2's PROTOCOL_ERROR, §6.10.)
            if self.ended.set.contains(&stream) {
                return Some(Reason::STREAM_CLOSED);
            }
            if flags & END_STREAM != 0 {
                self.ended.insert(stream);
            }
        }
        None
    }

    /// One frame header: type, flags, stream, payload length.
    fn frame(&mut self, kind: u8, flags: u8, stream: u32, len: usize) {
        const ACK: u8 = 0x1;
        const END_STREAM: u8 = 0x1;
        const END_HEADERS: u8 = 0x4;
        if let Some(reason) = self.check(kind, flags, stream, len) {
            self.trip.reject(reason);
            return;
        }
        if kind == 0x4 && flags & ACK == 0 {
            // Its entries are read (setting()), not skipped.
            self.skip = 0;
            self.settings_left = len;
        }
        self.follow_block(kind, flags, stream, len);
        let t = &self.trip;
        t.last.set(kind);
        t.frames.set(t.frames.get() + 1);
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

    /// Starts collecting the payload of a HEADERS frame, or of a CONTINUATION of the block
    /// in progress, for the HPACK mirror. Any other frame inside a block is h2's
    /// PROTOCOL_ERROR (§6.10), as are CONTINUATIONs out of place and HEADERS on stream 0:
    /// h2 closes the connection for them, and the mirror stops following.
    fn follow_block(&mut self, kind: u8, flags: u8, stream: u32, len: usize) {
        if self.lost {
            return;
        }
        let fits = match kind {
            0x9 => self.in_block && stream == self.block_stream,
            _ if self.in_block => false,
            0x1 => stream != 0,
            _ => return,
        };
        if !fits {
            self.lost = true;
            self.release(false);
            return;
        }
        if kind == 0x1 {
            self.trailers = stream <= self.max_stream;
            self.max_stream = self.max_stream.max(stream);
            self.block_stream = stream;
            self.block.clear();
            if !self.trailers {
                self.release(false);
            }
        }
        if self.block.len() + len > BLOCK_MAX {
            self.lost = true;
            self.release(false);
            self.trip.fire(Defence::HeaderListSize);
            return;
        }
        self.skip = 0;
        self.collect = len;
        self.frame_at = self.block.len();
        self.frame_flags = flags;
        self.frame_kind = kind;
        self.in_block = true;
        if len == 0 {
            self.fragment_end();
        }
    }

    /// The current frame's payload is in `block`: its padding and priority fields are
    /// taken out, and a block that ends here is decoded by the mirror (before h2 gets the
    /// frame's last byte). One that does not decode closes the connection with
    /// COMPRESSION_ERROR (RFC 9113 §4.3); trailers with a pseudo-header field are
    /// malformed (§8.1), closed with PROTOCOL_ERROR (a stream error that §5.4.1 lets an
    /// endpoint treat as a connection error; h2 would drop the field and end the stream).
    fn fragment_end(&mut self) {
        const END_HEADERS: u8 = 0x4;
        const PADDED: u8 = 0x8;
        const PRIORITY: u8 = 0x20;
        let flags = self.frame_flags;
        if self.frame_kind == 0x1 {
            let payload = &self.block[self.frame_at..];
            // (check() made sure a PADDED frame has its Pad Length octet.)
            let pad = if flags & PADDED != 0 {
                payload.first().map_or(0, |&p| usize::from(p))
            } else {
                0
            };
            let prefix = usize::from(flags & PADDED != 0) + 5 * usize::from(flags & PRIORITY != 0);
            if prefix + pad > payload.len() {
                // §6.2: padding as long as the payload, h2's PROTOCOL_ERROR.
                self.lost = true;
                self.release(false);
                return;
            }
            let end = self.block.len() - pad;
            self.block.truncate(end);
            self.block.drain(self.frame_at..self.frame_at + prefix);
        }
        if flags & END_HEADERS == 0 {
            return;
        }
        self.in_block = false;
        match self.hpack.decode(&self.block) {
            Err(_) => self.trip.reject(Reason::COMPRESSION_ERROR),
            Ok(b) => self.release(b.pseudo && self.trailers),
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
#[path = "meter_tests.rs"]
mod tests;
