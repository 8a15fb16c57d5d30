//! Streaming a request (head, then body in slot-sized pieces) into a worker's channel,
//! with backpressure (the body window, `body_window.rs`: the socket is not read while the
//! app has `BODY_WINDOW` records unread), `Expect: 100-continue`, and the body deadlines.

use super::*;

/// How much of a request body has come in, and since when.
pub(super) struct Pace {
    since: Instant,
    got: u64,
}

impl Pace {
    pub(super) fn new() -> Self {
        Self {
            since: Instant::now(),
            got: 0,
        }
    }
}

impl Conn {
    /// Streams the request head (in `scratch`) and its body into the worker's channel.
    pub(super) async fn send_request(
        &mut self,
        sid: StreamId,
        worker: usize,
        framing: BodyFraming,
        slot_size: usize,
        wait_continue: bool,
        deadline: Option<Instant>,
    ) -> Result<(), SendEnd> {
        let mut body = BodyState::new(framing, self.cfg.max_body);
        let head_len = self.scratch.len();
        let mut first = true;
        let mut pace = Pace::new();
        loop {
            let slot = self.take_slot(worker).await?;
            let mut filled = if first {
                self.hub
                    .write_slot(worker, slot, 0, &self.scratch)
                    .map_err(|_| SendEnd::WorkerLost)?;
                head_len
            } else {
                0
            };
            // Fill the slot from what is buffered, reading more only while the slot is
            // still empty (so that bytes reach the app as they arrive).
            loop {
                let (consumed, copied) =
                    body.pump(&self.buf, slot_size - filled, |bytes, at| {
                        let _ = self.hub.write_slot(worker, slot, filled + at, bytes);
                    })?;
                self.buf.drain(..consumed);
                filled += copied;
                // The first record goes out at once, so the app starts before its body
                // arrives; later ones as soon as they hold anything.
                if first || body.done() || filled == slot_size || filled > 0 {
                    break;
                }
                self.read_body(&mut pace).await?;
            }
            let more = !body.done();
            let (kind, aux) = if first {
                (Kind::Request, head_len as u32)
            } else {
                (Kind::Body, 0)
            };
            let rec = if filled == 0 && !first {
                self.hub.untake_slot(worker, slot);
                Record::new(kind, sid).more(more)
            } else {
                let mut rec = Record::new(kind, sid)
                    .with_slot(slot.get(), filled as u32, aux)
                    .more(more)
                    .expect_continue(first && more && wait_continue);
                if first && !more && filled == head_len {
                    // The whole request is this record (and `scratch`): revocable.
                    rec.extra = self.hub.queue_claim(sid, worker);
                }
                rec
            };
            self.push(worker, rec).await?;
            if !first {
                self.hub.body_sent(sid);
            }
            self.hub.flush(worker);
            if !more {
                return Ok(());
            }
            if first && wait_continue {
                self.await_continue(sid).await?;
                // The client was waiting for us: its body starts now.
                pace = Pace::new();
            }
            first = false;
            // Backpressure: no more reading (nor sending) until the app has taken enough
            // of what it was sent. The wait is the app's, not the client's: it does not
            // count against --min-body-rate.
            let waited = Instant::now();
            self.await_window(sid, deadline).await?;
            pace.since += waited.elapsed();
            if self.buf.is_empty() {
                self.read_body(&mut pace).await?;
            }
        }
    }

    /// Waits until the request's body window is open again (the worker returned credit).
    async fn await_window(
        &mut self,
        sid: StreamId,
        deadline: Option<Instant>,
    ) -> Result<(), SendEnd> {
        let hub = self.hub.clone();
        let wait = hub.wait_body_window(sid);
        let res = match deadline {
            None => wait.await,
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                match monoio::time::timeout(left, wait).await {
                    Ok(r) => r,
                    Err(_) => return Err(SendEnd::TimedOut),
                }
            }
        };
        match res {
            Ok(()) => Ok(()),
            // The response started (or the worker went) while the body was held back:
            // the response is handled with the unread rest of the body left behind.
            Err(()) => match hub.next_event(sid).await {
                Event::WorkerLost => Err(SendEnd::WorkerLost),
                ev => {
                    hub.unget_event(sid, ev);
                    Err(SendEnd::Answered)
                }
            },
        }
    }

    /// Waits until the app asks for the body, then invites the client to send it.
    pub(super) async fn await_continue(&mut self, sid: StreamId) -> Result<(), SendEnd> {
        let hub = self.hub.clone();
        match hub.next_event(sid).await {
            Event::Continue => {
                self.write(b"HTTP/1.1 100 Continue\r\n\r\n".to_vec())
                    .await
                    .map_err(|_| SendEnd::Client(None))?;
                Ok(())
            }
            Event::WorkerLost => Err(SendEnd::WorkerLost),
            ev => {
                hub.unget_event(sid, ev);
                Err(SendEnd::Answered)
            }
        }
    }

    /// Reads more of the body: no pause longer than `--timeout-body-read`, and on average
    /// at least `--min-body-rate` bytes a second after a first `--timeout-body-read` of
    /// grace, so a body trickled a byte at a time cannot hold the connection (and the app's
    /// request) for ever.
    pub(super) async fn read_body(&mut self, pace: &mut Pace) -> Result<(), SendEnd> {
        let mut wait = self.cfg.body_read;
        if self.cfg.min_body_rate > 0 {
            let earned = Duration::from_secs_f64(pace.got as f64 / self.cfg.min_body_rate as f64);
            let left = (self.cfg.body_read + earned).saturating_sub(pace.since.elapsed());
            if left.is_zero() {
                tracing::debug!(peer = %self.peer, bytes = pace.got, "request body slower than --min-body-rate");
                return Err(SendEnd::Client(Some(408)));
            }
            wait = wait.min(left);
        }
        let before = self.buf.len();
        let res = self.read_more(wait).await;
        pace.got += self.buf.len().saturating_sub(before) as u64;
        match res {
            Ok(()) => Ok(()),
            Err(ReadEnd::TimedOut) => Err(SendEnd::Client(Some(408))),
            Err(_) => Err(SendEnd::Client(None)),
        }
    }

    pub(super) async fn take_slot(&self, worker: usize) -> Result<SlotIndex, SendEnd> {
        loop {
            match self.hub.take_slot(worker) {
                Ok(Some(slot)) => return Ok(slot),
                Ok(None) => self.hub.wait_space(worker, Need::Slot).await,
                Err(Lost) => return Err(SendEnd::WorkerLost),
            }
        }
    }

    pub(super) async fn push(&self, worker: usize, rec: Record) -> Result<(), SendEnd> {
        loop {
            match self.hub.send(worker, rec) {
                Ok(true) => return Ok(()),
                Ok(false) => {
                    self.hub.flush(worker);
                    self.hub.wait_space(worker, Need::Room).await;
                }
                Err(Lost) => return Err(SendEnd::WorkerLost),
            }
        }
    }
}

/// Why streaming a request stopped early.
pub(super) enum SendEnd {
    WorkerLost,
    /// The app responded before it asked for an `Expect: 100-continue` body.
    Answered,
    /// The client misbehaved (`Some(status)`: answer it) or went away (`None`).
    Client(Option<u16>),
    /// `--timeout-request` passed while the body waited for the app to read.
    TimedOut,
}

/// Request body progress.
pub(super) enum BodyState {
    Done,
    Length {
        left: u64,
    },
    Chunked {
        decoder: ChunkedDecoder,
        seen: u64,
        max: Option<u64>,
    },
}

impl BodyState {
    pub(super) fn new(framing: BodyFraming, max: Option<u64>) -> Self {
        match framing {
            BodyFraming::None => Self::Done,
            BodyFraming::Length(n) => Self::Length { left: n },
            BodyFraming::Chunked => Self::Chunked {
                decoder: ChunkedDecoder::default(),
                seen: 0,
                max,
            },
        }
    }

    pub(super) fn done(&self) -> bool {
        match self {
            Self::Done => true,
            Self::Length { left } => *left == 0,
            Self::Chunked { decoder, .. } => decoder.is_done(),
        }
    }

    /// Moves body bytes from `input` to `out(bytes, offset)`, at most `room` of them.
    /// Returns (input bytes consumed, body bytes produced).
    pub(super) fn pump(
        &mut self,
        input: &[u8],
        room: usize,
        mut out: impl FnMut(&[u8], usize),
    ) -> Result<(usize, usize), SendEnd> {
        match self {
            Self::Done => Ok((0, 0)),
            Self::Length { left } => {
                let n = (*left).min(input.len() as u64).min(room as u64) as usize;
                if n > 0 {
                    out(&input[..n], 0);
                }
                *left -= n as u64;
                Ok((n, n))
            }
            Self::Chunked { decoder, seen, max } => {
                let mut produced = 0;
                let consumed = decoder
                    .decode_limited(input, room, |bytes| {
                        out(bytes, produced);
                        produced += bytes.len();
                    })
                    .map_err(|e| {
                        tracing::debug!(error = %e, "bad chunked body");
                        SendEnd::Client(Some(400))
                    })?;
                *seen += produced as u64;
                if max.is_some_and(|m| *seen > m) {
                    return Err(SendEnd::Client(Some(413)));
                }
                Ok((consumed, produced))
            }
        }
    }
}
