//! Streaming a response from shared memory (or a file, for pathsend and native routes)
//! to the client: framing, zero-copy writes, the request deadline.

use super::*;
use std::io::Write as _;
use uringapi_protocol::record::response_credit_at;

use crate::net::SENDFILE_MAX;
use crate::response::open_file;

impl Conn {
    /// Streams the response from the worker to the client.
    pub(super) async fn respond(
        &mut self,
        sid: StreamId,
        side: RequestSide,
        deadline: Option<Instant>,
    ) -> Next {
        self.unwatched = false;
        self.gone = false;
        let (head, body, more, file) = match self.next_event(sid, deadline).await {
            Waited::TimedOut => {
                self.hub.request_timed_out(
                    sid,
                    &self.peer,
                    "request ran past --timeout-request; answering 504 and cancelling it",
                );
                self.reply_error(504, side.minor).await;
                return Next::Close;
            }
            Waited::Event(Event::Head { head, body, more }) => (head, body, more, None),
            Waited::Event(Event::File {
                head: Some(head),
                path,
            }) => match open_file(&path).await {
                Ok(file) => (head, None, false, Some(file)),
                Err(e) => {
                    tracing::error!(peer = %self.peer, path = %String::from_utf8_lossy(&path), "http.response.pathsend: {e}");
                    self.reply_error(500, side.minor).await;
                    return Next::Close;
                }
            },
            Waited::Event(Event::WorkerLost) => {
                self.reply_error(502, side.minor).await;
                return Next::Close;
            }
            Waited::Event(Event::Revoked) => {
                return Box::pin(self.redispatch(sid, side, deadline)).await;
            }
            // The app saw http.disconnect and ended without a response.
            Waited::Event(Event::Abort) if self.gone => return Next::Close,
            Waited::Event(
                Event::Abort
                | Event::Body { .. }
                | Event::Continue
                | Event::File { .. }
                | Event::WsAccept { .. }
                | Event::WsSend { .. }
                | Event::WsClose { .. },
            ) => {
                tracing::error!(peer = %self.peer, "worker sent a body or an abort before the response head");
                self.reply_error(500, side.minor).await;
                return Next::Close;
            }
        };
        let view = match ResponseView::decode(&head) {
            Ok(v) => {
                self.served.status = v.status;
                v
            }
            Err(e) => {
                tracing::error!(peer = %self.peer, error = %e, "worker sent an undecodable response head");
                self.reply_error(502, side.minor).await;
                return Next::Close;
            }
        };
        let complete = match &file {
            Some((_, len)) => Some(*len),
            None => (!more).then(|| body.as_ref().map_or(0, |b| b.len() as u64)),
        };
        let mut prefix = std::mem::take(&mut self.scratch);
        prefix.clear();
        let encoded = match encode::response_head(
            view.status,
            &view.headers,
            side.closing_if(self.hub.is_draining()),
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
            slow_reader: Some(sid),
        };
        let mut ok = match file {
            Some((file, len)) => self.send_file(&mut out, file, 0, len).await,
            None => self.send_body(&mut out, body, more).await,
        };
        let mut more = more;
        // Records written with `more` that the worker has not been told of: its response
        // window (ring.rs rule 7) reopens by them, before we wait for the next one.
        let mut owed = u32::from(ok && more);
        let credit_at = response_credit_at(self.hub.response_window(sid));
        while ok && more {
            if owed >= credit_at {
                self.hub.credit_response(sid, std::mem::take(&mut owed));
            }
            match self.next_event(sid, deadline).await {
                Waited::Event(Event::Body { body, more: m }) => {
                    more = m;
                    ok = match self.gather(sid, &body, &mut more, out.framing) {
                        Some(joined) => {
                            drop(body);
                            // Records sent with more to come reopen the worker's window:
                            // all joined ones but the last, counted below as for one.
                            owed += joined.records - 1;
                            self.send_joined(&mut out, joined, more).await
                        }
                        None => self.send_body(&mut out, body, more).await,
                    };
                    owed += u32::from(more);
                }
                Waited::Event(Event::File { head: None, path }) => {
                    more = false;
                    ok = match open_file(&path).await {
                        Ok((file, len)) => self.send_file(&mut out, file, 0, len).await,
                        Err(e) => {
                            tracing::error!(peer = %self.peer, path = %String::from_utf8_lossy(&path), "http.response.pathsend: {e}; closing");
                            false
                        }
                    };
                }
                Waited::Event(Event::Head { .. } | Event::File { head: Some(_), .. }) => {
                    tracing::error!(peer = %self.peer, "worker sent a second response head");
                    ok = false;
                }
                Waited::Event(Event::Abort) if self.gone => ok = false,
                Waited::Event(
                    Event::Abort
                    | Event::WorkerLost
                    | Event::Continue
                    | Event::Revoked
                    | Event::WsAccept { .. }
                    | Event::WsSend { .. }
                    | Event::WsClose { .. },
                ) => {
                    tracing::warn!(peer = %self.peer, "response aborted after it started; closing the connection");
                    ok = false;
                }
                Waited::TimedOut => {
                    self.hub.request_timed_out(sid, &self.peer, "response ran past --timeout-request; closing the connection and cancelling it");
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
        self.served.bytes = out.sent;
        if ok && encoded.keep_alive && out.framing != Framing::UntilClose {
            Next::KeepAlive
        } else {
            Next::Close
        }
    }

    /// Sends `len` bytes of `file` from `start` as the rest of the body (and the head, if
    /// still pending).
    pub(super) async fn send_file(
        &mut self,
        out: &mut Body,
        file: monoio::fs::File,
        start: u64,
        len: u64,
    ) -> bool {
        if len == 0 || out.framing == Framing::Empty {
            return self.send_piece(out, None, &[], false).await;
        }
        // Where the kernel writes the socket's bytes (plain TCP, kTLS) and the length is
        // declared, what is in the page cache goes out with sendfile: no copy through this
        // process. What is not is read through the ring first (a sendfile of it would wait
        // for the disk on this thread, holding up its other connections), which also brings
        // it, and the kernel's readahead behind it, into the cache. The head goes out with
        // the first piece read, so a small file is still one write (and one packet).
        // PERF: benches/e2e/file_send_ab.sh, 4 alternating rounds on loopback (raw rows in
        // benches/results/file-send-sendfile-ab-2026-12-06.txt): 256 KiB files 48-61
        // against 74-92 front-end CPU-µs per request (1.2-1.6x the requests), 4 MiB
        // 819-1018 against 1161-1334; but one 1 GiB download at a time cost 110-153 ticks
        // against 92-121, and took longer: on loopback the receiver copies anyway, and
        // splicing pages costs more per byte there than the copy it saves. Over a NIC no
        // copy is left at all; not measured here.
        let zero_copy = self.sock.can_send_file()
            && matches!(out.framing, Framing::Length(n) if out.sent + len <= n);
        let mut buf = Vec::new();
        let mut pos = 0u64;
        while pos < len {
            let want = (len - pos).min(SENDFILE_MAX);
            let head_sent = out.prefix.is_empty();
            if zero_copy && head_sent && crate::sys::in_page_cache(&file, start + pos, want) {
                match self
                    .sock
                    .send_file(&file, start + pos, want, self.cfg.send_stall)
                    .await
                {
                    Some(Ok(())) => {}
                    Some(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                        tracing::error!(peer = %self.peer, "the file shrank while it was sent; closing");
                        return false;
                    }
                    Some(Err(e)) if e.kind() == std::io::ErrorKind::TimedOut => {
                        stalled(&self.peer);
                        return false;
                    }
                    Some(Err(e)) => {
                        tracing::debug!(peer = %self.peer, error = %e, "sendfile failed; closing");
                        return false;
                    }
                    None => return false,
                }
                pos += want;
                out.sent += want;
                continue;
            }
            let want = (len - pos).min(FILE_CHUNK as u64) as usize;
            buf.clear();
            buf.reserve(want);
            let (res, slice) = file.read_at(buf.slice_mut(0..want), start + pos).await;
            buf = slice.into_inner();
            let n = match res {
                Ok(0) => {
                    tracing::error!(peer = %self.peer, "http.response.pathsend: the file shrank while it was sent; closing");
                    return false;
                }
                Ok(n) => n,
                Err(e) => {
                    tracing::error!(peer = %self.peer, error = %e, "http.response.pathsend: cannot read the file; closing");
                    return false;
                }
            };
            pos += n as u64;
            if !self.send_piece(out, None, &buf[..n], pos < len).await {
                return false;
            }
        }
        true
    }

    /// Small pieces of body that have arrived behind `first` (a piece with more to come),
    /// copied out with it to go out in one write: an app that streams many small pieces
    /// faster than they are written (a CSV export a row per `send`, a flood of events) costs
    /// a write per batch instead of per piece. Their slots go back at once. Each piece stays
    /// a chunk of its own under chunked framing, as under uvicorn (a client may read a
    /// chunk per message). `None` when nothing is waiting, or `first` is large (it goes out
    /// from its slot as it lies). `more` becomes the last piece's.
    /// PERF: benches/e2e/stream_window_ab.py, 3 x 50,000 pieces of 100 bytes, 3 alternating
    /// rounds: server CPU 179-206 ticks before, 139-161 after (a write and an io_uring
    /// enter per piece were most of the front end's time); 1 MiB pieces unchanged
    /// (benches/results/ab-response-gather-2026-12-07.txt).
    fn gather(
        &self,
        sid: StreamId,
        first: &Option<SlotLease>,
        more: &mut bool,
        framing: Framing,
    ) -> Option<Joined> {
        let len = first.as_ref().map_or(0, SlotLease::len);
        if !*more || len > GATHER_SMALL {
            return None;
        }
        let mut next = self.hub.next_body_now(sid, GATHER_MAX - len)?;
        let mut joined = Joined {
            bytes: Vec::with_capacity(GATHER_MAX.min(4 * len.max(256))),
            body_len: 0,
            records: 0,
            chunked: framing == Framing::Chunked,
        };
        joined.add(first.as_ref());
        loop {
            let (body, m) = next;
            joined.add(body.as_ref());
            *more = m;
            if !m {
                break;
            }
            match self.hub.next_body_now(sid, GATHER_MAX - joined.body_len) {
                Some(n) => next = n,
                None => break,
            }
        }
        Some(joined)
    }

    /// Writes one piece of response body (and, the first time, the head in `out.prefix`).
    pub(super) async fn send_body(
        &mut self,
        out: &mut Body,
        body: Option<SlotLease>,
        more: bool,
    ) -> bool {
        self.send_piece(out, body, &[], more).await
    }

    /// Writes one piece of response body, from a slot (`body`) or from memory (`bytes`, a
    /// file's; copied behind the prefix). Only one of the two is non-empty.
    pub(super) async fn send_piece(
        &mut self,
        out: &mut Body,
        body: Option<SlotLease>,
        bytes: &[u8],
        more: bool,
    ) -> bool {
        let len = body.as_ref().map_or(bytes.len(), |b| b.len());
        let mut prefix = std::mem::take(&mut out.prefix);
        let (body, suffix): (Option<SlotLease>, &'static [u8]) = match out.framing {
            Framing::Empty => (None, b""),
            Framing::Length(n) => {
                if out.sent + len as u64 > n {
                    tracing::error!(peer = %self.peer, declared = n, "response body longer than its content-length; closing");
                    if out.sent == 0 && !prefix.is_empty() {
                        // Not a byte of this response has gone out (the head is still in
                        // the prefix): the client can still get a whole answer.
                        self.reply_error(500, self.served.minor).await;
                    }
                    out.prefix = prefix;
                    return false;
                }
                prefix.extend_from_slice(bytes);
                (body, b"")
            }
            Framing::UntilClose => {
                prefix.extend_from_slice(bytes);
                (body, b"")
            }
            Framing::Chunked => {
                if len > 0 {
                    prefix.extend_from_slice(format!("{len:x}\r\n").as_bytes());
                }
                prefix.extend_from_slice(bytes);
                match (len > 0, more) {
                    (true, true) => (body, b"\r\n"),
                    (true, false) => (body, b"\r\n0\r\n\r\n"),
                    (false, true) => (None, b""),
                    (false, false) => (None, b"0\r\n\r\n"),
                }
            }
        };
        out.sent += len as u64;
        self.write_out(out, Frame::new(prefix, body, suffix)).await
    }

    /// Writes pieces joined by [`Conn::gather`] in one write.
    async fn send_joined(&mut self, out: &mut Body, joined: Joined, more: bool) -> bool {
        if !joined.chunked {
            return self.send_piece(out, None, &joined.bytes, more).await;
        }
        let mut prefix = std::mem::take(&mut out.prefix);
        if prefix.is_empty() {
            prefix = joined.bytes;
        } else {
            prefix.extend_from_slice(&joined.bytes);
        }
        if !more {
            prefix.extend_from_slice(b"0\r\n\r\n");
        }
        out.sent += joined.body_len as u64;
        self.write_out(out, Frame::new(prefix, None, b"")).await
    }

    /// Writes a frame of the response; false when the client is gone or stalled.
    async fn write_out(&mut self, out: &mut Body, frame: Frame) -> bool {
        // The client reads slower than the app writes: the response's bytes wait in our
        // memory from here on, not in the worker's slots, which other requests need (the
        // response window, ring.rs rule 7, bounds how much).
        let hub = &self.hub;
        let slow = &mut out.slow_reader;
        let mut fell_behind = || {
            if let Some(sid) = slow.take() {
                hub.copy_responses(sid);
            }
        };
        // PERF: the stall timeout is registered for every write. benches/e2e/ab.py, hello,
        // 6 alternating rounds (benches/results/ab-send-stall-2026-12-06.json): 0.966x the
        // req/s and 24.7 against 23.6 server CPU-us/req (medians; single rounds ranged over
        // 20-32 for both builds), with the ordered-map deadline; now a coarse timeout
        // (`deadline::after`, ~80 ns a write against ~220, module doc of deadline.rs).
        match self
            .sock
            .write_frame(frame, self.cfg.send_stall, &mut fell_behind)
            .await
        {
            Ok(mut prefix) => {
                prefix.clear();
                out.prefix = prefix;
                true
            }
            Err(e) => {
                if e.kind() == std::io::ErrorKind::TimedOut {
                    stalled(&self.peer);
                }
                false
            }
        }
    }
}

/// A client that read nothing of its response for `--timeout-body-read`: the connection
/// closes, and with it what the response held (its slot, or up to a window of memory).
fn stalled(peer: &impl std::fmt::Display) {
    tracing::debug!(%peer, "the client read nothing of its response for --timeout-body-read; closing");
}

/// A response piece at most this long may have the pieces queued behind it joined to it
/// (`Conn::gather`), up to `GATHER_MAX` bytes in all; longer ones go out from their slots.
const GATHER_SMALL: usize = 16 * 1024;
const GATHER_MAX: usize = 64 * 1024;

/// Response pieces joined for one write.
struct Joined {
    /// Their bytes end to end; under chunked framing each one a chunk of its own.
    bytes: Vec<u8>,
    /// Body bytes in them (without the chunk framing).
    body_len: usize,
    /// Records joined.
    records: u32,
    chunked: bool,
}

impl Joined {
    fn add(&mut self, piece: Option<&SlotLease>) {
        self.records += 1;
        let Some(piece) = piece.filter(|p| !p.is_empty()) else {
            return;
        };
        if self.chunked {
            let _ = write!(self.bytes, "{:x}\r\n", piece.len());
        }
        piece.copy_into(&mut self.bytes);
        if self.chunked {
            self.bytes.extend_from_slice(b"\r\n");
        }
        self.body_len += piece.len();
    }
}

/// Bytes read from a file per write where sendfile cannot serve (over rustls, a body of
/// unknown length, pages not yet in the page cache).
pub(super) const FILE_CHUNK: usize = 64 * 1024;

/// Response body progress.
pub(super) struct Body {
    pub(super) framing: Framing,
    pub(super) sent: u64,
    /// Bytes to send before the next body piece (the head, then chunk-size lines).
    pub(super) prefix: Vec<u8>,
    /// The worker's stream this body comes from, until the client first falls behind and
    /// the stream's records are copied out of their slots (`Hub::copy_responses`).
    pub(super) slow_reader: Option<StreamId>,
}
