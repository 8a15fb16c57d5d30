//! One client connection: read a head, stream the request into a worker's channel, stream
//! the response back from shared memory, repeat while keep-alive holds.
//!
//! Requests on a connection are handled one after another, so pipelined requests are
//! answered strictly in order; bytes of the next request wait in the read buffer.

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use monoio::buf::IoBufMut;
use uringapi_protocol::arena::SlotIndex;
use uringapi_protocol::head::{RequestHead, ResponseView};
use uringapi_protocol::{Kind, Record};

use crate::dispatch::{Event, Hub, Lost, Need, StreamId, REQUEST_ID_LEN};
use crate::http1::encode::{self, Framing, RequestSide};
use crate::http1::framing::{BodyFraming, ChunkedDecoder};
use crate::http1::parse;
use crate::net::{Peer, Socket};
use crate::tls::Transport;
use crate::zerocopy::{Frame, SlotLease};

mod bufpool;
mod config;
mod download;
mod native;
mod queued;
mod read;
mod revoke;
mod served;
mod upload;
mod websocket;

use queued::{describe, Queued};

pub use config::ConnConfig;
use download::Body;
use upload::SendEnd;
pub use websocket::WsConfig;

/// How often a queued request re-checks the workers (stall and retire verdicts wake no one).
const QUEUE_POLL: Duration = Duration::from_millis(5);

/// How long a response may take before the connection is watched for the client leaving.
/// PERF: watching arms a poll on the socket (an io_uring PollAdd and its cancel); requests
/// answered sooner than this never pay for it.
const WATCH_AFTER: Duration = Duration::from_millis(2);

use bufpool::READ_CHUNK;

/// Scratch capacity kept by an idle connection (a typical request head and response
/// prefix fit; a larger one is freed between requests).
const SCRATCH_KEPT: usize = 1024;

/// Counts the connection while it lives, for the drain.
struct Live(Rc<Hub>);

impl Live {
    fn new(hub: &Rc<Hub>) -> Self {
        hub.connections.set(hub.connections.get() + 1);
        hub.load().connections.fetch_add(1, Ordering::Relaxed);
        Self(hub.clone())
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.0.connections.set(self.0.connections.get() - 1);
        self.0.load().connections.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What the metrics and the access log need to know about the request being served.
#[derive(Default)]
struct Served {
    started: Option<Instant>,
    method: Vec<u8>,
    minor: u8,
    status: u16,
    /// Response body bytes written.
    bytes: u64,
    /// Only with the access log on (made once per connection). MEMORY: boxed, it is 8
    /// bytes of every connection's state instead of 112, which an open WebSocket's task
    /// carries for its whole life (tests/e2e/test_idle_websockets.py).
    log: Option<Box<Logged>>,
}

/// What the access log line of the request being served needs beyond the metrics.
#[derive(Default)]
struct Logged {
    time: Option<std::time::SystemTime>,
    target: Vec<u8>,
    referer: Option<Vec<u8>>,
    user_agent: Option<Vec<u8>>,
    request_id: String,
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
    /// The connection is an open WebSocket now (websocket.rs).
    WebSocket(websocket::Open),
}

pub async fn serve(
    hub: Rc<Hub>,
    cfg: Rc<ConnConfig>,
    sock: Socket,
    peer: Peer,
    local: Option<SocketAddr>,
) {
    let _live = Live::new(&hub);
    // TLS hook: the handshake runs before the first read, bounded by --timeout-header-read.
    let sock = match &cfg.tls {
        None => Transport::Plain(sock),
        Some(tls) => {
            // Boxed: the handshake's state is large and would size every connection's task.
            let handshake = crate::tls::handshake(sock, tls.current(), cfg.header_read, peer);
            let Some(stream) = Box::pin(handshake).await.map(Box::new) else {
                return;
            };
            // HTTP/2 hook: ALPN chose h2.
            if stream.alpn_h2() {
                return crate::h2::serve_tls(hub, cfg.h2.clone(), stream, peer, local).await;
            }
            // kTLS hook (--ktls): the kernel may take the records now; None: it failed.
            let Some(sock) = stream.into_transport(peer) else {
                return;
            };
            sock
        }
    };
    // HTTP/2 hook: `--http 2` on a plain port speaks nothing else.
    let sock = match sock {
        Transport::Plain(tcp) if cfg.h2.mode == crate::h2::HttpMode::Two => {
            return crate::h2::serve_plain(hub, cfg.h2.clone(), tcp, Vec::new(), peer, local).await;
        }
        sock => sock,
    };
    let tls_section = sock.tls_section();
    let h2c_allowed = cfg.tls.is_none() && cfg.h2.mode == crate::h2::HttpMode::Auto;
    let mut conn = Conn {
        hub,
        cfg,
        sock,
        peer,
        local,
        // No buffer until bytes come (bufpool.rs).
        buf: Vec::new(),
        scratch: Vec::new(),
        tls_section,
        unwatched: false,
        gone: false,
        h2c: false,
        upload: None,
        h2c_allowed,
        last_worker: None,
        served: Served::default(),
    };
    if let Some(open) = conn.run().await {
        // The WebSocket gets a task of its own, sized for its loop alone, and this one
        // ends: inline, the loop would grow every connection's task (HTTP ones too), and
        // boxed it would sit beside this task's 1.3 KiB for the WebSocket's life. PERF:
        // about 1 KiB less front-end memory per open WebSocket
        // (tests/e2e/test_idle_websockets.py).
        return websocket::spawn_session(conn, open, _live);
    }
    // HTTP/2 hook: the connection opened with the client preface (h2c prior knowledge).
    if conn.h2c {
        if let Transport::Plain(tcp) = conn.sock {
            crate::h2::serve_plain(conn.hub, conn.cfg.h2.clone(), tcp, conn.buf, peer, local).await;
        }
    }
}

struct Conn {
    hub: Rc<Hub>,
    cfg: Rc<ConnConfig>,
    sock: Transport,
    /// No address on a Unix socket.
    peer: Peer,
    /// `None` on a Unix socket: the app's `server` is then the socket's path.
    local: Option<SocketAddr>,
    /// Bytes read from the client and not yet used.
    buf: Vec<u8>,
    /// Reused for encoding request heads and response prefixes.
    scratch: Vec<u8>,
    /// TLS: the tls extension facts appended to every request head of the connection.
    tls_section: Option<Vec<u8>>,
    /// Stop watching the socket for the client leaving until the next request: it left (the
    /// worker was told), or bytes of a pipelined request are waiting.
    unwatched: bool,
    /// The client closed the connection while its request ran.
    gone: bool,
    served: Served,
    /// The first bytes were the HTTP/2 client preface: `run` returned to hand over.
    h2c: bool,
    /// A request body still coming while its response goes out (upload.rs, full duplex).
    upload: Option<Box<upload::Upload>>,
    /// No request yet on a plain connection under `--http auto`: the preface may come.
    h2c_allowed: bool,
    /// The worker of the connection's previous request: the next one goes there while it
    /// is idle (policy.rs).
    last_worker: Option<usize>,
}

/// What a readable socket says while no read is pending.
enum News {
    /// EOF or an error: the client has gone.
    Gone,
    /// Data waits (a body, a pipelined request).
    Data,
    /// Nothing after all.
    Nothing,
}

/// How getting a worker for a request ended.
enum Opened {
    Stream(StreamId, usize),
    /// Queue full or --queue-timeout passed: 503.
    Rejected,
    /// The client closed the connection while the request waited.
    ClientGone,
}

/// What waiting for a stream's next event gave.
enum Waited {
    Event(Event),
    /// The request ran past `--timeout-request`.
    TimedOut,
}

/// Why reading stopped.
enum ReadEnd {
    Eof,
    TimedOut,
    Error,
}

impl Conn {
    /// Serves requests until the connection closes, or until it became a WebSocket (then
    /// returned, for a task of its own).
    async fn run(&mut self) -> Option<websocket::Open> {
        loop {
            self.idle();
            let end = match self.read_head().await {
                Ok(end) => end,
                Err(None) => return None,
                Err(Some(status)) => {
                    self.served.begin(self.hub.access_log_on());
                    self.reply_error(status, 1).await;
                    self.account();
                    self.linger().await;
                    return None;
                }
            };
            self.h2c_allowed = false;
            self.served.begin(self.hub.access_log_on());
            // Boxed: the request's state machine (streaming both ways, the response loop) is large,
            // and inline it would sit in every idle connection's task too. PERF: one allocation per
            // request, against several KiB per idle connection.
            let next = Box::pin(self.request(end)).await;
            self.account();
            match next {
                Next::KeepAlive => continue,
                Next::WebSocket(open) => return Some(open),
                _ => {
                    let _ = self.sock.shutdown().await;
                    self.linger().await;
                    return None;
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
        let head_method = self.served.method == b"HEAD";
        let bytes = encode::error_response(status, head_method, true, self.cfg.headers, extra);
        self.served.status = status;
        self.served.minor = minor;
        let _ = self.write(bytes).await;
        let _ = self.sock.shutdown().await;
    }

    /// Handles one request whose head is `buf[..end]`.
    async fn request(&mut self, end: usize) -> Next {
        parse::later_minor_as_1_1(&mut self.buf[..end]);
        let mut head = match parse::parse_complete(&self.buf[..end], &self.cfg.limits) {
            Ok(h) => h,
            Err(e) => {
                tracing::debug!(peer = %self.peer, error = %e, "bad request head");
                self.reply_error(e.status(), 1).await;
                return Next::Close;
            }
        };
        // --timeout-keep-alive 0: no keep-alive, every response closes its connection.
        let keep_alive = head.keep_alive && !self.cfg.keep_alive.is_zero();
        let (framing, minor) = (head.body, head.minor);
        self.served.note_head(&head);
        let side = RequestSide {
            minor,
            head_method: head.is_head_method(),
            keep_alive,
        };
        if let Some(native) = self.native_route(&head) {
            let side = RequestSide {
                // A body we do not read would be taken for the next request: close after.
                keep_alive: keep_alive && framing == BodyFraming::None,
                ..side
            };
            drop(head);
            self.buf.drain(..end);
            return self.answer_native(native, side).await;
        }
        let draining = self.hub.is_draining();
        let upgrade = match websocket::upgrade(&self.cfg, &head, draining).transpose() {
            Ok(up) => up,
            Err(status) => return self.refuse_upgrade(status, minor).await,
        };
        if let (Some(max), BodyFraming::Length(n)) = (self.cfg.max_body, framing) {
            if n > max {
                self.reply_error(413, minor).await;
                return Next::Close;
            }
        }
        let expect_continue = head.expect_continue && framing != BodyFraming::None;
        let what = || describe(head.method, head.target);
        let (sid, worker) = match self.open_stream(what, end).await {
            Opened::Stream(sid, worker) => {
                self.last_worker = Some(worker);
                (sid, worker)
            }
            Opened::Rejected => {
                self.reply_error(503, minor).await;
                return Next::Close;
            }
            Opened::ClientGone => {
                self.gone = true;
                return Next::Close;
            }
        };
        let hub = self.hub.clone();
        let guard = StreamGuard(&hub, sid);
        let deadline = self.cfg.request_timeout.map(|t| Instant::now() + t);
        let mut rid = [0u8; REQUEST_ID_LEN];
        if self.cfg.request_id
            && !head
                .headers
                .iter()
                .any(|(n, _)| n.eq_ignore_ascii_case(b"x-request-id"))
        {
            self.hub.new_request_id(&mut rid);
            head.headers.push((b"x-request-id", &rid));
            if let Some(log) = self.served.log.as_mut() {
                log.request_id = String::from_utf8_lossy(&rid).into_owned();
            }
        }
        let (client, https) = crate::proxy::forwarded(
            self.cfg.proxies.as_ref(),
            self.peer.addr(),
            head.headers.iter().copied(),
        );
        let https = https || matches!(self.sock, Transport::Tls(_));
        let encoded = RequestHead {
            http_minor: minor,
            https,
            method: head.method,
            path: head.path,
            query: head.query,
            client,
            server: self.local,
            headers: std::mem::take(&mut head.headers),
        };
        let Ok(slot_size) = self.hub.slot_size(worker) else {
            self.reply_error(502, minor).await;
            return Next::Close;
        };
        let tls_len = self.tls_section.as_ref().map_or(0, Vec::len);
        let head_len = encoded.encoded_len() + tls_len;
        if head_len > slot_size {
            self.reply_error(431, minor).await;
            return Next::Close;
        }
        self.scratch.clear();
        self.scratch.resize(head_len - tls_len, 0);
        let _ = encoded.encode(&mut self.scratch);
        if let Some(section) = &self.tls_section {
            self.scratch.extend_from_slice(section);
            self.scratch[1] |= uringapi_protocol::head::SCHEME_TLS_SECTION;
        }
        drop(encoded);
        drop(head);
        self.buf.drain(..end);
        if let Some(up) = upgrade {
            return self.websocket(guard, worker, up, side).await;
        }

        // RFC 9110 §10.1.1: a client that expects 100-continue waits for it before sending
        // the body; it goes out when the app first asks for the body. (HTTP/1.0 clients
        // cannot be sent a 1xx; a body already on its way needs no invitation.)
        let wait_continue = expect_continue && minor >= 1 && self.buf.is_empty();
        match self
            .send_request(sid, worker, framing, slot_size, wait_continue, deadline)
            .await
        {
            Ok(()) => {}
            Err(SendEnd::Answered) => {
                // The app answered before it had the whole body. Whatever of the body is
                // still coming goes on to the app while the response goes out (full
                // duplex, `self.upload`), unless the app answered an `Expect:
                // 100-continue` without asking for it; either way the connection closes
                // after the response, as the rest of an unread body would be taken for
                // the next request.
                let side = RequestSide {
                    keep_alive: false,
                    ..side
                };
                self.respond(sid, side, deadline).await;
                self.upload = None;
                return Next::Close;
            }
            Err(SendEnd::WorkerLost) => {
                self.reply_error(502, minor).await;
                return Next::Close;
            }
            Err(SendEnd::Client(Some(status))) => {
                self.reply_error(status, minor).await;
                return Next::Close;
            }
            Err(SendEnd::Client(None)) => return Next::Close,
            Err(SendEnd::TimedOut) => {
                self.hub.request_timed_out(sid, &self.peer, "request ran past --timeout-request while the app read its body; answering 504 and cancelling it");
                self.reply_error(504, minor).await;
                return Next::Close;
            }
        }
        self.respond(sid, side, deadline).await
    }

    /// Counts the finished request in the metrics and writes its access log line.
    fn account(&mut self) {
        let s = &self.served;
        let Some(started) = s.started else { return };
        let latency = started.elapsed();
        let status = if self.gone && s.status == 0 {
            499
        } else {
            s.status
        };
        if self.gone {
            self.hub.metrics().client_disconnect();
        }
        self.hub.metrics().observe(&s.method, status, latency);
        if let Some((log, time)) = s.log.as_ref().and_then(|l| Some((l, l.time?))) {
            self.hub.log_access(&crate::accesslog::Entry {
                peer: self.peer.ip(),
                method: &s.method,
                target: &log.target,
                http_minor: s.minor,
                status,
                bytes: s.bytes,
                referer: log.referer.as_deref(),
                user_agent: log.user_agent.as_deref(),
                request_id: &log.request_id,
                duration: latency,
                time,
            });
        }
        self.served.started = None;
    }

    /// Opens a stream on a worker that accepts work, waiting in the thread's queue while
    /// none does. `None`: the queue is full or the wait passed `--queue-timeout` (503).
    /// `head_len`: bytes of `buf` that are this request's head.
    async fn open_stream(&self, what: impl Fn() -> Box<str>, head_len: usize) -> Opened {
        // FIFO: nobody passes a request already waiting (see waitq.rs).
        if self.hub.waitq.is_empty() {
            if let Some((sid, worker)) = self.hub.open_stream(&what, self.last_worker) {
                return Opened::Stream(sid, worker);
            }
        }
        let Some(ticket) = self.hub.waitq.join(self.cfg.queue_limit) else {
            self.hub.answered_queue_full(&self.peer);
            return Opened::Rejected;
        };
        let _queued = Queued::new(&self.hub);
        let deadline = Instant::now() + self.cfg.queue_timeout;
        // While it waits, a client that leaves takes its request with it (no worker time
        // for nobody), as long as nothing of a body or next request hides the close.
        let mut watch = self.buf.len() == head_len;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                self.hub.answered_queue_timeout(&self.peer, &what());
                return Opened::Rejected;
            }
            // The front also looks again every QUEUE_POLL: stall and retire verdicts change
            // without a wake-up. Those behind it wait for their turn (or their deadline).
            let front = ticket.is_front();
            let nap = if front { left.min(QUEUE_POLL) } else { left };
            let wait = async {
                monoio::select! {
                    _ = ticket.turn() => {},
                    _ = monoio::time::sleep(nap) => {},
                }
            };
            if watch {
                monoio::select! {
                    _ = wait => {},
                    r = self.sock.readable() => match self.socket_news(r) {
                        News::Gone => {
                            tracing::debug!(peer = %self.peer, "client left while its request was queued");
                            return Opened::ClientGone;
                        }
                        News::Data => watch = false,
                        News::Nothing => {}
                    },
                }
            } else {
                wait.await;
            }
            if !ticket.is_front() {
                continue;
            }
            if let Some((sid, worker)) = self.hub.open_stream(&what, self.last_worker) {
                return Opened::Stream(sid, worker);
            }
        }
    }

    /// The stream's next event, watching for the client leaving once the response takes
    /// a while, and for the request deadline.
    async fn next_event(&mut self, sid: StreamId, deadline: Option<Instant>) -> Waited {
        if self.upload.is_some() {
            // Boxed: rare, and the connection's task is sized by its largest state.
            if let Some(waited) = Box::pin(self.duplex_event(sid, deadline)).await {
                return waited;
            }
        }
        let hub = self.hub.clone();
        let mut waited = Duration::ZERO;
        loop {
            let left = match deadline {
                Some(d) => match d.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => left,
                    _ => return Waited::TimedOut,
                },
                None => Duration::from_secs(3600),
            };
            // Only an idle socket can be watched: buffered bytes are a pipelined request, and
            // a readable socket with data says nothing about the client leaving.
            let watch = !self.unwatched && self.buf.is_empty() && waited >= WATCH_AFTER;
            let step = if watch {
                monoio::select! {
                    ev = hub.next_event(sid) => Some(ev),
                    r = self.sock.readable() => {
                        self.check_gone(sid, r);
                        None
                    },
                    _ = monoio::time::sleep(left) => None,
                }
            } else {
                let nap = if self.unwatched || !self.buf.is_empty() {
                    left
                } else {
                    left.min(WATCH_AFTER)
                };
                monoio::select! {
                    ev = hub.next_event(sid) => Some(ev),
                    _ = monoio::time::sleep(nap) => None,
                }
            };
            match step {
                // A late invitation for a body the app no longer waits for: the response
                // is under way and the connection closes after it.
                Some(Event::Continue) => {}
                Some(ev) => return Waited::Event(ev),
                None => waited = WATCH_AFTER,
            }
        }
    }

    /// What a socket that turned readable while we were not reading has to say.
    fn socket_news(&self, readable: std::io::Result<()>) -> News {
        if self.sock.buffered() {
            return News::Data;
        }
        match readable.and_then(|()| crate::sys::peek(self.sock.socket())) {
            Ok(0) => News::Gone,
            // Bytes of a body or a next request: nothing to learn until they are read.
            Ok(_) => News::Data,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => News::Nothing,
            Err(_) => News::Gone,
        }
    }

    /// The socket turned readable while a response was pending: did the client leave?
    fn check_gone(&mut self, sid: StreamId, readable: std::io::Result<()>) {
        let gone = match self.socket_news(readable) {
            News::Gone => true,
            News::Data => false,
            // Spurious: keep watching.
            News::Nothing => return,
        };
        self.unwatched = true;
        self.gone = gone;
        if gone {
            tracing::debug!(peer = %self.peer, "client closed the connection while its request ran");
            self.hub.notify_disconnect(sid);
        }
    }
}

#[cfg(test)]
mod size_probe {
    use super::*;

    /// Size and alignment of what an async fn returns, without calling it.
    fn future_of<A, B, C, D, E, F>(_: fn(A, B, C, D, E) -> F) -> (usize, usize) {
        (std::mem::size_of::<F>(), std::mem::align_of::<F>())
    }

    /// The connection's task is allocated at the size of its largest state, idle or not:
    /// large and rarely used states (the request, TLS calls, the TLS handshake) are boxed,
    /// and timeouts use `deadline::after` instead of monoio's 640-byte, 128-aligned
    /// `Sleep`. This was 3,200 bytes (128-aligned) before; growing it past the bound costs
    /// every idle keep-alive connection (tests/e2e/test_idle_connections.py). (1,416 in a
    /// debug build since `run` hands an open WebSocket back for a task of its own.)
    #[test]
    fn the_connection_task_stays_small() {
        let (size, align) = future_of(serve);
        eprintln!("connection future: {size} bytes, aligned to {align}");
        assert!(size <= 1416, "{size} bytes");
        assert!(align <= 16, "aligned to {align}");
    }
}
