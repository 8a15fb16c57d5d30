//! One client connection: read a head, stream the request into a worker's channel, stream
//! the response back from shared memory, repeat while keep-alive holds.
//!
//! Requests on a connection are handled one after another, so pipelined requests are
//! answered strictly in order; bytes of the next request wait in the read buffer.

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};
use monoio::net::TcpStream;
use uringapi_protocol::arena::SlotIndex;
use uringapi_protocol::head::{RequestHead, ResponseView};
use uringapi_protocol::{Kind, Record};

use crate::dispatch::{Event, Hub, Lost, Need, StreamId};
use crate::http1::encode::{self, Framing, HeaderOptions, RequestSide};
use crate::http1::framing::{BodyFraming, ChunkedDecoder};
use crate::http1::parse::{self, HeadLimits};
use crate::zerocopy::{Frame, SlotLease};

/// Per-connection settings, shared by all connections of a thread.
#[derive(Debug, Clone)]
pub struct ConnConfig {
    pub limits: HeadLimits,
    pub headers: HeaderOptions,
    /// Largest request body accepted (413 past it); `None`: unlimited.
    pub max_body: Option<u64>,
    /// How long an idle keep-alive connection is kept.
    pub keep_alive: Duration,
    /// Deadline for a whole request head, from its first byte.
    pub header_read: Duration,
    /// Longest wait for the next piece of a request body.
    pub body_read: Duration,
}

const READ_CHUNK: usize = 16 * 1024;

/// Counts the connection while it lives, for the drain.
struct Live(Rc<Hub>);

impl Live {
    fn new(hub: &Rc<Hub>) -> Self {
        hub.connections.set(hub.connections.get() + 1);
        Self(hub.clone())
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.0.connections.set(self.0.connections.get() - 1);
    }
}

/// Closes the stream however the request ends.
struct StreamGuard<'h>(&'h Hub, StreamId);

impl Drop for StreamGuard<'_> {
    fn drop(&mut self) {
        self.0.close_stream(self.1);
    }
}

/// How a request ended, for the connection loop.
enum Next {
    KeepAlive,
    Close,
}

pub async fn serve(
    hub: Rc<Hub>,
    cfg: Rc<ConnConfig>,
    sock: TcpStream,
    peer: SocketAddr,
    local: SocketAddr,
) {
    let _live = Live::new(&hub);
    let _ = sock.set_nodelay(true);
    let mut conn = Conn {
        hub,
        cfg,
        sock,
        peer,
        local,
        buf: Vec::with_capacity(READ_CHUNK),
        scratch: Vec::new(),
    };
    conn.run().await;
}

struct Conn {
    hub: Rc<Hub>,
    cfg: Rc<ConnConfig>,
    sock: TcpStream,
    peer: SocketAddr,
    local: SocketAddr,
    /// Bytes read from the client and not yet used.
    buf: Vec<u8>,
    /// Reused for encoding request heads and response prefixes.
    scratch: Vec<u8>,
}

/// Why reading stopped.
enum ReadEnd {
    Eof,
    TimedOut,
    Error,
}

impl Conn {
    async fn run(&mut self) {
        loop {
            if self.hub.is_draining() && self.buf.is_empty() {
                return;
            }
            let end = match self.read_head().await {
                Ok(end) => end,
                Err(None) => return,
                Err(Some(status)) => {
                    self.reply_error(status, 1).await;
                    return;
                }
            };
            match self.request(end).await {
                Next::KeepAlive if !self.hub.is_draining() || !self.buf.is_empty() => continue,
                _ => {
                    let _ = self.sock.shutdown().await;
                    return;
                }
            }
        }
    }

    /// Reads until a whole head is buffered; returns its length. `Err(Some(status))`: answer
    /// and close; `Err(None)`: just close.
    async fn read_head(&mut self) -> Result<usize, Option<u16>> {
        let mut started: Option<Instant> = None;
        loop {
            if !self.buf.is_empty() {
                started.get_or_insert_with(Instant::now);
                match parse::scan(&self.buf, &self.cfg.limits) {
                    Ok(Some(end)) => return Ok(end),
                    Ok(None) => {}
                    Err(e) => {
                        tracing::debug!(peer = %self.peer, error = %e, "bad request head");
                        return Err(Some(e.status()));
                    }
                }
            }
            let wait = match started {
                // RFC 9112 §9.5 leaves idle timeouts to us: idle between requests...
                None => self.cfg.keep_alive,
                // ...and an absolute deadline for a head once it started (slowloris).
                Some(t) => match self.cfg.header_read.checked_sub(t.elapsed()) {
                    Some(left) if !left.is_zero() => left,
                    _ => return Err(Some(408)),
                },
            };
            match self.read_more(wait).await {
                Ok(()) => {}
                Err(ReadEnd::TimedOut) if started.is_some() => return Err(Some(408)),
                Err(_) => return Err(None),
            }
        }
    }

    /// Appends what the socket has to `buf`, waiting at most `wait`.
    async fn read_more(&mut self, wait: Duration) -> Result<(), ReadEnd> {
        let mut buf = std::mem::take(&mut self.buf);
        if buf.capacity() - buf.len() < READ_CHUNK / 2 {
            buf.reserve(READ_CHUNK);
        }
        let (len, cap) = (buf.len(), buf.capacity());
        let read = self.sock.read(buf.slice_mut(len..cap));
        match monoio::time::timeout(wait, read).await {
            Err(_) => Err(ReadEnd::TimedOut),
            Ok((res, slice)) => {
                self.buf = slice.into_inner();
                match res {
                    Ok(0) => Err(ReadEnd::Eof),
                    Ok(_) => Ok(()),
                    Err(_) => Err(ReadEnd::Error),
                }
            }
        }
    }

    async fn write(&mut self, bytes: Vec<u8>) -> Result<Vec<u8>, ()> {
        let (res, bytes) = self.sock.write_all(bytes).await;
        res.map(|_| bytes).map_err(|_| ())
    }

    async fn reply_error(&mut self, status: u16, minor: u8) {
        let extra: &[(&str, &str)] = if status == 503 {
            &[("retry-after", "1")]
        } else {
            &[]
        };
        let bytes = encode::error_response(status, minor, true, self.cfg.headers, extra);
        let _ = self.write(bytes).await;
        let _ = self.sock.shutdown().await;
    }

    /// Handles one request whose head is `buf[..end]`.
    async fn request(&mut self, end: usize) -> Next {
        let mut head = match parse::parse_complete(&self.buf[..end], &self.cfg.limits) {
            Ok(h) => h,
            Err(e) => {
                tracing::debug!(peer = %self.peer, error = %e, "bad request head");
                self.reply_error(e.status(), 1).await;
                return Next::Close;
            }
        };
        let (framing, minor, keep_alive) = (head.body, head.minor, head.keep_alive);
        let side = RequestSide {
            minor,
            head_method: head.is_head_method(),
            keep_alive,
        };
        if let (Some(max), BodyFraming::Length(n)) = (self.cfg.max_body, framing) {
            if n > max {
                self.reply_error(413, minor).await;
                return Next::Close;
            }
        }
        let expect_continue = head.expect_continue && framing != BodyFraming::None;
        let Some((sid, worker)) = self.hub.open_stream() else {
            self.reply_error(503, minor).await;
            return Next::Close;
        };
        let hub = self.hub.clone();
        let _guard = StreamGuard(&hub, sid);
        let encoded = RequestHead {
            http_minor: minor,
            https: false,
            method: head.method,
            path: head.path,
            query: head.query,
            client: Some(self.peer),
            server: Some(self.local),
            headers: std::mem::take(&mut head.headers),
        };
        let Ok(slot_size) = self.hub.slot_size(worker) else {
            self.reply_error(502, minor).await;
            return Next::Close;
        };
        let head_len = encoded.encoded_len();
        if head_len > slot_size {
            self.reply_error(431, minor).await;
            return Next::Close;
        }
        self.scratch.clear();
        self.scratch.resize(head_len, 0);
        let _ = encoded.encode(&mut self.scratch);
        drop(encoded);
        drop(head);
        self.buf.drain(..end);

        if expect_continue && self.buf.is_empty() {
            // RFC 9110 §10.1.1: tell the client to go on with the body.
            let cont = if minor >= 1 {
                b"HTTP/1.1 100 Continue\r\n\r\n".to_vec()
            } else {
                Vec::new()
            };
            if !cont.is_empty() && self.write(cont).await.is_err() {
                return Next::Close;
            }
        }
        match self.send_request(sid, worker, framing, slot_size).await {
            Ok(()) => {}
            Err(SendEnd::WorkerLost) => {
                self.reply_error(502, minor).await;
                return Next::Close;
            }
            Err(SendEnd::Client(Some(status))) => {
                self.reply_error(status, minor).await;
                return Next::Close;
            }
            Err(SendEnd::Client(None)) => return Next::Close,
        }
        self.respond(sid, side).await
    }

    /// Streams the request head (in `scratch`) and its body into the worker's channel.
    async fn send_request(
        &mut self,
        sid: StreamId,
        worker: usize,
        framing: BodyFraming,
        slot_size: usize,
    ) -> Result<(), SendEnd> {
        let mut body = BodyState::new(framing, self.cfg.max_body);
        let head_len = self.scratch.len();
        let mut first = true;
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
                self.read_body().await?;
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
                Record::new(kind, sid)
                    .with_slot(slot.get(), filled as u32, aux)
                    .more(more)
            };
            self.push(worker, rec).await?;
            self.hub.flush(worker);
            if !more {
                return Ok(());
            }
            first = false;
            if self.buf.is_empty() {
                self.read_body().await?;
            }
        }
    }

    async fn read_body(&mut self) -> Result<(), SendEnd> {
        match self.read_more(self.cfg.body_read).await {
            Ok(()) => Ok(()),
            Err(ReadEnd::TimedOut) => Err(SendEnd::Client(Some(408))),
            Err(_) => Err(SendEnd::Client(None)),
        }
    }

    async fn take_slot(&self, worker: usize) -> Result<SlotIndex, SendEnd> {
        loop {
            match self.hub.take_slot(worker) {
                Ok(Some(slot)) => return Ok(slot),
                Ok(None) => self.hub.wait_space(worker, Need::Slot).await,
                Err(Lost) => return Err(SendEnd::WorkerLost),
            }
        }
    }

    async fn push(&self, worker: usize, rec: Record) -> Result<(), SendEnd> {
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

    /// Streams the response from the worker to the client.
    async fn respond(&mut self, sid: StreamId, side: RequestSide) -> Next {
        let (head, body, more) = match self.hub.next_event(sid).await {
            Event::Head { head, body, more } => (head, body, more),
            Event::WorkerLost => {
                self.reply_error(502, side.minor).await;
                return Next::Close;
            }
            Event::Abort | Event::Body { .. } => {
                tracing::error!(peer = %self.peer, "worker sent a body or an abort before the response head");
                self.reply_error(500, side.minor).await;
                return Next::Close;
            }
        };
        let view = match ResponseView::decode(&head) {
            Ok(v) => v,
            Err(e) => {
                tracing::error!(peer = %self.peer, error = %e, "worker sent an undecodable response head");
                self.reply_error(502, side.minor).await;
                return Next::Close;
            }
        };
        let complete = (!more).then(|| body.as_ref().map_or(0, |b| b.len() as u64));
        let mut prefix = std::mem::take(&mut self.scratch);
        prefix.clear();
        let encoded = match encode::response_head(
            view.status,
            &view.headers,
            side,
            complete,
            self.cfg.headers,
            &mut prefix,
        ) {
            Ok(e) => e,
            Err(e) => {
                tracing::error!(peer = %self.peer, error = %e, "worker sent an invalid response head");
                self.scratch = prefix;
                self.reply_error(502, side.minor).await;
                return Next::Close;
            }
        };
        let mut out = Body {
            framing: encoded.framing,
            sent: 0,
            prefix,
        };
        let mut ok = self.send_body(&mut out, body, more).await;
        let mut more = more;
        while ok && more {
            match self.hub.next_event(sid).await {
                Event::Body { body, more: m } => {
                    more = m;
                    ok = self.send_body(&mut out, body, more).await;
                }
                Event::Head { .. } => {
                    tracing::error!(peer = %self.peer, "worker sent a second response head");
                    ok = false;
                }
                Event::Abort | Event::WorkerLost => {
                    tracing::warn!(peer = %self.peer, "response aborted after it started; closing the connection");
                    ok = false;
                }
            }
        }
        if let Framing::Length(n) = out.framing {
            if ok && out.sent != n {
                tracing::error!(peer = %self.peer, declared = n, sent = out.sent, "response body shorter than its content-length; closing");
                ok = false;
            }
        }
        self.scratch = std::mem::take(&mut out.prefix);
        if ok && encoded.keep_alive && out.framing != Framing::UntilClose {
            Next::KeepAlive
        } else {
            Next::Close
        }
    }

    /// Writes one piece of response body (and, the first time, the head in `out.prefix`).
    async fn send_body(&mut self, out: &mut Body, body: Option<SlotLease>, more: bool) -> bool {
        let len = body.as_ref().map_or(0, |b| b.len());
        let mut prefix = std::mem::take(&mut out.prefix);
        let (body, suffix): (Option<SlotLease>, &'static [u8]) = match out.framing {
            Framing::Empty => (None, b""),
            Framing::Length(n) => {
                if out.sent + len as u64 > n {
                    tracing::error!(peer = %self.peer, declared = n, "response body longer than its content-length; closing");
                    return false;
                }
                (body, b"")
            }
            Framing::UntilClose => (body, b""),
            Framing::Chunked => {
                if len > 0 {
                    prefix.extend_from_slice(format!("{len:x}\r\n").as_bytes());
                }
                match (len > 0, more) {
                    (true, true) => (body, b"\r\n"),
                    (true, false) => (body, b"\r\n0\r\n\r\n"),
                    (false, true) => (None, b""),
                    (false, false) => (None, b"0\r\n\r\n"),
                }
            }
        };
        out.sent += len as u64;
        let mut frame = Frame::new(prefix, body, suffix);
        let mut ok = true;
        while frame.total_len() > 0 {
            let (res, f) = self.sock.writev(frame).await;
            frame = f;
            match res {
                Ok(0) => ok = false,
                Ok(n) => {
                    frame.advance(n);
                    continue;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => ok = false,
            }
            break;
        }
        let mut prefix = frame.into_prefix();
        prefix.clear();
        out.prefix = prefix;
        ok
    }
}

/// Response body progress.
struct Body {
    framing: Framing,
    sent: u64,
    /// Bytes to send before the next body piece (the head, then chunk-size lines).
    prefix: Vec<u8>,
}

/// Why streaming a request stopped early.
enum SendEnd {
    WorkerLost,
    /// The client misbehaved (`Some(status)`: answer it) or went away (`None`).
    Client(Option<u16>),
}

/// Request body progress.
enum BodyState {
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
    fn new(framing: BodyFraming, max: Option<u64>) -> Self {
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

    fn done(&self) -> bool {
        match self {
            Self::Done => true,
            Self::Length { left } => *left == 0,
            Self::Chunked { decoder, .. } => decoder.is_done(),
        }
    }

    /// Moves body bytes from `input` to `out(bytes, offset)`, at most `room` of them.
    /// Returns (input bytes consumed, body bytes produced).
    fn pump(
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
