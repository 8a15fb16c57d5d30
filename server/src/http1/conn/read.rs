//! Reading from the client: a request head under its deadlines, what the socket has (for a
//! body or a WebSocket), the wait of an idle keep-alive connection, and the lingering read
//! after a close of our own.

use super::*;

/// How long an idle keep-alive connection stays open in a drain (`Conn::idle_wait`).
const DRAIN_LINGER: Duration = Duration::from_secs(1);

/// A close of our own (RFC 9112 §9.6): after the FIN, what the client still sends is read
/// and dropped until it closes too, for at most `LINGER_TOTAL`, each read waiting at most
/// `LINGER_IDLE`. Closed with its bytes unread, the socket would answer them with a reset,
/// which can destroy the response before the client reads it (a client still sending an
/// upload the app refused, a request pipelined after `Connection: close`).
const LINGER_TOTAL: Duration = Duration::from_secs(5);
const LINGER_IDLE: Duration = Duration::from_secs(2);

impl Conn {
    /// After a close of our own has sent its FIN: reads and drops what the client still
    /// sends until it closes (`LINGER_TOTAL`, `LINGER_IDLE`). Not when it has gone already.
    pub(super) async fn linger(&mut self) {
        if self.gone {
            return;
        }
        let end = Instant::now() + LINGER_TOTAL;
        loop {
            self.buf.clear();
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() || self.read_more(left.min(LINGER_IDLE)).await.is_err() {
                return;
            }
        }
    }

    /// Between requests: with nothing of a next request buffered, the read buffer goes back
    /// to the thread's pool and an outsized scratch is freed, so that an idle keep-alive
    /// connection holds neither (bufpool.rs).
    pub(super) fn idle(&mut self) {
        if self.buf.is_empty() && self.buf.capacity() > 0 {
            bufpool::put(std::mem::take(&mut self.buf));
        }
        if self.scratch.capacity() > SCRATCH_KEPT {
            self.scratch = Vec::new();
        }
    }

    /// Waits, holding no buffer of its own, until an idle connection has data or EOF, at
    /// most `wait`. `Err`: close (drain, keep-alive timeout or error).
    /// PERF: one io_uring poll before the read of each request on a keep-alive connection
    /// is what keeps an idle connection at a few hundred bytes instead of a 16 KiB buffer
    /// (TLS reads its records instead: `Transport::idle_read`). Draining, it waits at most
    /// `DRAIN_LINGER`: a client using the connection sends its next request within that and
    /// is answered with `Connection: close`, where closing at once would lose that request.
    pub(super) async fn idle_wait(&mut self, wait: Duration) -> Result<(), ()> {
        let hub = self.hub.clone();
        let start = Instant::now();
        // One wait throughout: a TLS one reads records, which a dropped read would lose.
        let mut readable = std::pin::pin!(self.sock.idle_read());
        if !hub.is_draining() {
            monoio::select! {
                _ = hub.drained() => {},
                _ = crate::deadline::after(wait) => return Err(()),
                r = &mut readable => return r.map_err(|_| ()),
            }
        }
        let left = wait.saturating_sub(start.elapsed());
        monoio::select! {
            _ = crate::deadline::after(DRAIN_LINGER.min(left)) => Err(()),
            r = &mut readable => r.map_err(|_| ()),
        }
    }

    /// Reads until a whole head is buffered; returns its length. `Err(Some(status))`: answer
    /// and close; `Err(None)`: just close.
    pub(super) async fn read_head(&mut self) -> Result<usize, Option<u16>> {
        let mut started: Option<Instant> = None;
        loop {
            if !self.buf.is_empty() {
                started.get_or_insert_with(Instant::now);
                // HTTP/2 hook: prior knowledge, on a fresh plain connection only.
                let sniff = crate::h2::sniff_if(self.h2c_allowed, &self.buf);
                if sniff == crate::h2::Sniff::H2 {
                    self.h2c = true;
                    return Err(None);
                }
                let partial = sniff == crate::h2::Sniff::Partial;
                match if partial {
                    Ok(None)
                } else {
                    parse::scan(&self.buf, &self.cfg.limits)
                } {
                    Ok(Some(end)) => return Ok(end),
                    Ok(None) => {}
                    Err(e) => {
                        tracing::debug!(peer = %self.peer, error = %e, "bad request head");
                        return Err(Some(e.status()));
                    }
                }
            }
            let mut wait = match started {
                // RFC 9112 §9.5 leaves idle timeouts to us: idle between requests (with no
                // keep-alive, 0, only a new connection waits: as long as a head may take)...
                None if self.cfg.keep_alive.is_zero() => self.cfg.header_read,
                None => self.cfg.keep_alive,
                // ...and an absolute deadline for a head once it started (slowloris).
                Some(t) => match self.cfg.header_read.checked_sub(t.elapsed()) {
                    Some(left) if !left.is_zero() => left,
                    _ => return Err(Some(408)),
                },
            };
            if started.is_none() {
                // Between requests (`buf` is empty) a drain closes the connection after
                // DRAIN_LINGER, not the graceful timeout: a request may never come.
                let since = Instant::now();
                self.idle_wait(wait).await.map_err(|()| None)?;
                wait = wait.saturating_sub(since.elapsed());
                if wait.is_zero() {
                    return Err(None);
                }
            }
            // After `idle_wait` the socket is readable: this returns at once.
            let read = self.read_more(wait).await;
            match read {
                Ok(()) => {}
                Err(ReadEnd::TimedOut) if started.is_some() => return Err(Some(408)),
                Err(_) => return Err(None),
            }
        }
    }

    /// Appends what the socket has to `buf`, waiting at most `wait`.
    pub(super) async fn read_more(&mut self, wait: Duration) -> Result<(), ReadEnd> {
        let mut buf = std::mem::take(&mut self.buf);
        if buf.capacity() == 0 {
            buf = bufpool::take();
        } else if buf.capacity() - buf.len() < READ_CHUNK / 2 {
            buf.reserve(READ_CHUNK);
        }
        let read = self.sock.read(buf);
        monoio::select! {
            _ = crate::deadline::after(wait) => Err(ReadEnd::TimedOut),
            (res, buf) = read => {
                self.buf = buf;
                match res {
                    Ok(0) => Err(ReadEnd::Eof),
                    Ok(_) => Ok(()),
                    Err(_) => Err(ReadEnd::Error),
                }
            }
        }
    }

    /// Appends what a socket that said it is readable has to `buf` (a WebSocket's). A plain socket has
    /// data or EOF waiting, so no timer guards the read; over TLS a record may be partial,
    /// and the read keeps `read_more`'s bound (an hour: ping timeouts end a stalled
    /// WebSocket long before).
    pub(super) async fn read_ready(&mut self) -> Result<(), ReadEnd> {
        if self.sock.is_tls() {
            return self.read_more(Duration::from_secs(3600)).await;
        }
        let mut buf = std::mem::take(&mut self.buf);
        if buf.capacity() == 0 {
            // PERF: room for a 16 KiB message and its frame header in one read (a pool
            // buffer took two reads, two polls and a grow per message); back to its own
            // pool once empty, so an idle WebSocket still holds none (freed and allocated
            // per message instead, the 64-byte echo lost its gain). With this and the changes
            // of websocket.rs, a 16 KiB echo cost the front end 25.1–26.7 CPU-µs/msg against
            // main's 28.5–31.9 (2 runs each, alternating, 2026-12-04).
            buf = bufpool::take_ws();
        } else if buf.capacity() - buf.len() < READ_CHUNK / 2 {
            buf.reserve(READ_CHUNK);
        }
        let (res, buf) = self.sock.read(buf).await;
        self.buf = buf;
        match res {
            Ok(0) => Err(ReadEnd::Eof),
            Ok(_) => Ok(()),
            Err(_) => Err(ReadEnd::Error),
        }
    }
}
