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

/// A request body still coming in while the app's response goes out (full duplex): what
/// `Conn::next_event` needs to go on feeding the app while it waits for the response.
pub(super) struct Upload {
    sid: StreamId,
    worker: usize,
    slot_size: usize,
    body: BodyState,
    pace: Pace,
    /// Since when the body window has been shut (the app's time, not the client's).
    shut: Option<Instant>,
}

impl Conn {
    /// Streams the request head (in `scratch`) and its body into the worker's channel.
    /// `Err(Answered)` with `self.upload` set: the response started while the body was
    /// still coming; `next_event` goes on sending it.
    pub(super) async fn send_request(
        &mut self,
        sid: StreamId,
        worker: usize,
        framing: BodyFraming,
        slot_size: usize,
        wait_continue: bool,
        deadline: Option<Instant>,
    ) -> Result<(), SendEnd> {
        let mut up = Upload {
            sid,
            worker,
            slot_size,
            body: BodyState::new(framing, self.cfg.max_body),
            pace: Pace::new(),
            shut: None,
        };
        if self.push_body(&mut up, Some(wait_continue), true).await? {
            return Ok(());
        }
        if wait_continue {
            self.await_continue(sid).await?;
            // The client was waiting for us: its body starts now.
            up.pace = Pace::new();
        }
        loop {
            // Backpressure: no more reading (nor sending) until the app has taken enough
            // of what it was sent. The wait is the app's, not the client's: it does not
            // count against --min-body-rate.
            let waited = Instant::now();
            match self.await_window(sid, deadline).await {
                Ok(()) => {}
                Err(SendEnd::Answered) => {
                    self.upload = Some(Box::new(up));
                    return Err(SendEnd::Answered);
                }
                Err(e) => return Err(e),
            }
            up.pace.since += waited.elapsed();
            if self.buf.is_empty() {
                match self.await_body(sid, &up.pace, deadline).await {
                    Ok(()) => {}
                    Err(SendEnd::Answered) => {
                        self.upload = Some(Box::new(up));
                        return Err(SendEnd::Answered);
                    }
                    Err(e) => return Err(e),
                }
                self.read_body(&mut up.pace).await?;
            }
            if self.push_body(&mut up, None, true).await? {
                return Ok(());
            }
        }
    }

    /// Sends the next record of the request: the head (`first`: `Some(expect_continue)`)
    /// with what of the body fits beside it, else one slot of body from `buf`, reading
    /// more while the slot is empty if `may_read`. Returns whether the body is done.
    /// Without `may_read`, a slot that `buf` cannot fill with a single body byte (a chunk
    /// header cut short) goes back unsent.
    async fn push_body(
        &mut self,
        up: &mut Upload,
        first: Option<bool>,
        may_read: bool,
    ) -> Result<bool, SendEnd> {
        let (sid, worker, slot_size) = (up.sid, up.worker, up.slot_size);
        let head_len = if first.is_some() {
            self.scratch.len()
        } else {
            0
        };
        // Fill a slot from what is buffered, reading more only while the slot would still
        // be empty (so that bytes reach the app as they arrive). A slot goes back to the
        // pool on every way out but its record: one kept by a failed body (a bad chunk, a
        // client gone) would be lost to the worker for good, and 128 such requests (the
        // default --channel-slots) left it no slot for any request at all.
        let (slot, filled) = loop {
            let slot = self.take_slot(worker).await?;
            if first.is_some() && self.hub.write_slot(worker, slot, 0, &self.scratch).is_err() {
                return Err(SendEnd::WorkerLost);
            }
            let pumped = up.body.pump(&self.buf, slot_size - head_len, |bytes, at| {
                let _ = self.hub.write_slot(worker, slot, head_len + at, bytes);
            });
            let (consumed, copied) = match pumped {
                Ok(pumped) => pumped,
                Err(e) => {
                    self.hub.untake_slot(worker, slot);
                    return Err(e);
                }
            };
            self.buf.drain(..consumed);
            // The first record goes out at once, so the app starts before its body
            // arrives; later ones as soon as they hold anything.
            if first.is_some() || up.body.done() || copied > 0 {
                break (slot, head_len + copied);
            }
            self.hub.untake_slot(worker, slot);
            if !may_read {
                return Ok(false);
            }
            self.read_body(&mut up.pace).await?;
        };
        let more = !up.body.done();
        let rec = match first {
            Some(expect_continue) => {
                let mut rec = Record::new(Kind::Request, sid)
                    .with_slot(slot.get(), filled as u32, head_len as u32)
                    .more(more)
                    .expect_continue(more && expect_continue)
                    .with_response_window(self.hub.response_window(sid));
                if !more && filled == head_len {
                    // The whole request is this record (and `scratch`): revocable.
                    rec.extra = self.hub.queue_claim(sid, worker);
                }
                rec
            }
            None if filled == 0 => {
                self.hub.untake_slot(worker, slot);
                Record::new(Kind::Body, sid).more(more)
            }
            None => Record::new(Kind::Body, sid)
                .with_slot(slot.get(), filled as u32, 0)
                .more(more),
        };
        self.push(worker, rec).await?;
        if first.is_none() {
            self.hub.body_sent(sid);
        }
        self.hub.flush(worker);
        Ok(!more)
    }

    /// Waits for the stream's next event while the request body is still coming (the
    /// app answered first, `self.upload`): body bytes go on to the app as they arrive and
    /// as its body window allows, so an app that streams its answer while it reads (an
    /// echo, a transform, a proxy) works as under uvicorn. `None` once the body is done or
    /// has failed: the caller waits as usual. A body that fails now cannot be answered
    /// with a status any more (the response has begun): the app is told the client left
    /// and the connection closes after the response.
    pub(super) async fn duplex_event(
        &mut self,
        sid: StreamId,
        deadline: Option<Instant>,
    ) -> Option<Waited> {
        let mut up = self.upload.take()?;
        let hub = self.hub.clone();
        let failed = loop {
            let left = match deadline {
                Some(d) => match d.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => left,
                    _ => {
                        self.upload = Some(up);
                        return Some(Waited::TimedOut);
                    }
                },
                None => Duration::from_secs(3600),
            };
            if !hub.body_window_open(sid) {
                up.shut.get_or_insert_with(Instant::now);
                let step = monoio::select! {
                    ev = hub.next_event(sid) => Some(ev),
                    _ = hub.wait_body_window(sid, false) => None,
                    _ = monoio::time::sleep(left) => None,
                };
                match step {
                    // A late invitation: the body is coming anyway.
                    Some(Event::Continue) | None => continue,
                    Some(ev) => {
                        self.upload = Some(up);
                        return Some(Waited::Event(ev));
                    }
                }
            }
            if let Some(shut) = up.shut.take() {
                up.pace.since += shut.elapsed();
            }
            // Body bytes already here go first.
            if !self.buf.is_empty() {
                let before = self.buf.len();
                match self.push_body(&mut up, None, false).await {
                    Ok(true) => return None,
                    Ok(false) if self.buf.len() != before => continue,
                    Ok(false) => {}
                    Err(e) => break e,
                }
            }
            // Decrypted bytes that the socket's readiness does not show.
            if self.sock.buffered() {
                if let Err(e) = self.read_body(&mut up.pace).await {
                    break e;
                }
                continue;
            }
            // Nothing usable buffered: wait for the client's next bytes or the app.
            let pause = match self.body_pause(&up.pace) {
                Ok(pause) => pause,
                Err(e) => break e,
            };
            let since = Instant::now();
            let step = monoio::select! {
                ev = hub.next_event(sid) => Some(Some(ev)),
                _ = self.sock.readable() => None,
                _ = monoio::time::sleep(left.min(pause)) => Some(None),
            };
            match step {
                Some(Some(Event::Continue)) => {}
                Some(Some(ev)) => {
                    self.upload = Some(up);
                    return Some(Waited::Event(ev));
                }
                Some(None) if since.elapsed() >= pause => break SendEnd::Client(Some(408)),
                Some(None) => {}
                None => {
                    if let Err(e) = self.read_body(&mut up.pace).await {
                        break e;
                    }
                }
            }
        };
        match failed {
            SendEnd::WorkerLost => {}
            e => {
                tracing::debug!(peer = %self.peer, reason = e.describe(), "request body ended early while the response was under way; closing after it");
                self.unwatched = true;
                self.gone = matches!(e, SendEnd::Client(None));
                self.hub.notify_disconnect(sid);
            }
        }
        None
    }

    /// Waits until the client's next body bytes can be read, watching for the app's
    /// response beginning meanwhile (`Err(Answered)`, its event left queued: an app that
    /// answers first must not wait for a client that waits for its answer).
    async fn await_body(
        &mut self,
        sid: StreamId,
        pace: &Pace,
        deadline: Option<Instant>,
    ) -> Result<(), SendEnd> {
        // PERF: bytes already waiting are read at once. With a readiness poll before every
        // read, a 300 MB upload (curl to tests/apps/echo_app.py's mode=count, 2 workers)
        // cost the server a median 31.5 CPU ticks against 26 before full duplex (6 runs
        // each, alternating builds, 2026-12-05); with this peek first, 33 against 32.
        if self.sock.buffered() {
            return Ok(());
        }
        match crate::sys::peek(self.sock.socket()) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            // Bytes, EOF or an error: the read says which.
            _ => return Ok(()),
        }
        let pause = self.body_pause(pace)?;
        let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        let hub = self.hub.clone();
        monoio::select! {
            _ = hub.event_waiting(sid) => match hub.next_event(sid).await {
                Event::WorkerLost => Err(SendEnd::WorkerLost),
                ev => {
                    hub.unget_event(sid, ev);
                    Err(SendEnd::Answered)
                }
            },
            _ = self.sock.readable() => Ok(()),
            _ = monoio::time::sleep(left.map_or(pause, |l| l.min(pause))) => {
                if left.is_some_and(|l| l < pause) {
                    Err(SendEnd::TimedOut)
                } else {
                    tracing::debug!(peer = %self.peer, bytes = pace.got, "request body paused past --timeout-body-read");
                    Err(SendEnd::Client(Some(408)))
                }
            },
        }
    }

    /// Waits until the request's body window is open again (the worker returned credit).
    async fn await_window(
        &mut self,
        sid: StreamId,
        deadline: Option<Instant>,
    ) -> Result<(), SendEnd> {
        let hub = self.hub.clone();
        let wait = hub.wait_body_window(sid, true);
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
        let wait = self.body_pause(pace)?;
        if self.buf.is_empty() && self.buf.capacity() < bufpool::WS_READ_CHUNK {
            // PERF: a read can fill a whole default slot: a body record per 64 KiB that
            // has arrived, not per 16 KiB, so a fast upload reaches the app in a quarter
            // of the messages (and the worker joins the ones the app has not taken yet).
            // benches/e2e/upload_ab.sh, 200 MB (medians of 3, server CPU ticks): a FastAPI
            // UploadFile 2.48 s / 261 ticks before, 0.58 s / 67 after (uvicorn 0.58 / 55);
            // request.stream() 0.38 / 49 before, 0.23 / 28 after (uvicorn 0.22 / 22).
            // benches/results/upload-2026-12-07.txt.
            bufpool::put(std::mem::replace(&mut self.buf, bufpool::take_ws()));
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

    /// The longest the client may now pause its body: `--timeout-body-read`, less once
    /// `--min-body-rate` runs short. `Err(408)` when it has run out.
    fn body_pause(&self, pace: &Pace) -> Result<Duration, SendEnd> {
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
        Ok(wait)
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
#[derive(Debug)]
pub(super) enum SendEnd {
    WorkerLost,
    /// The app responded before it asked for an `Expect: 100-continue` body.
    Answered,
    /// The client misbehaved (`Some(status)`: answer it) or went away (`None`).
    Client(Option<u16>),
    /// `--timeout-request` passed while the body waited for the app to read.
    TimedOut,
}

impl SendEnd {
    /// For a log line.
    fn describe(&self) -> &'static str {
        match self {
            Self::WorkerLost => "worker lost",
            Self::Answered => "answered",
            Self::Client(Some(408)) => "body too slow",
            Self::Client(Some(413)) => "body too large",
            Self::Client(Some(_)) => "bad body",
            Self::Client(None) => "client gone",
            Self::TimedOut => "request timed out",
        }
    }
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
