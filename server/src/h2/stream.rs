//! One HTTP/2 stream: a request dispatched through the channel exactly like an HTTP/1.1
//! request (its own worker, picked per stream), its body flow-controlled by the channel's
//! body window, its response streamed back under the client's flow-control window.
//!
//! Flow control both ways is the channel's, seen from the client:
//! - Request body: capacity of a DATA frame goes back to the client (WINDOW_UPDATE) only
//!   once its bytes are in a slot on the worker's ring and the stream's body window
//!   (`body_window.rs`) is open, so a slow app closes the client's window instead of
//!   growing memory here: at most the stream window per stream, and the connection window
//!   over all of them, sits in the front end.
//! - Response body: the next response record is taken from the worker only once h2 granted
//!   capacity for the previous one, i.e. once the client's window had room; a client that
//!   never opens its window gets the stream reset after `--timeout-body-read` and the
//!   connection closed (ENHANCE_YOUR_CALM).

use std::future::poll_fn;
use std::rc::Rc;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::Bytes;
use h2::server::SendResponse;
use h2::RecvStream;
use http::HeaderValue;
use uringapi_protocol::arena::SlotIndex;
use uringapi_protocol::head::{RequestHead, HTTP_2};
use uringapi_protocol::{Kind, Record};

use super::respond::{next_event, reply, respond_from, Responded, Waited};
use super::Shared;
use crate::dispatch::REQUEST_ID_LEN;
use crate::dispatch::{Event, Hub, Lost, Need, StreamId};

/// How often a queued request re-checks the workers (as HTTP/1.1's queue does).
const QUEUE_POLL: Duration = Duration::from_millis(5);

/// How a stream's request ended, for the metrics and the access log.
pub(super) struct Outcome {
    pub status: u16,
    /// Response body bytes sent.
    pub bytes: u64,
}

impl Outcome {
    /// The client reset the stream (or left) after `bytes` of the body.
    pub fn gone(bytes: u64) -> Self {
        Self { status: 499, bytes }
    }
}

/// Why sending a request or response stopped early.
#[derive(Debug)]
enum Stop {
    /// The worker went away (502 when nothing was sent).
    Worker,
    /// The app answered before it read the whole body.
    Answered,
    /// The client reset the stream or the connection broke.
    Client,
    /// Answer with this status: 413 (body past `--limit-request-body`), 408 (no body
    /// byte for `--timeout-body-read`, or slower than `--min-body-rate`).
    Status(u16),
    /// The request ran past `--timeout-request` (504).
    TimedOut,
}

/// Counts the stream as open on its connection while it lives.
struct Active(Rc<Shared>);

impl Drop for Active {
    fn drop(&mut self) {
        self.0.active.set(self.0.active.get() - 1);
        self.0.wake_driver();
    }
}

/// Ends the dispatch stream however the request ends.
struct Closing<'h>(&'h Hub, StreamId);

impl Drop for Closing<'_> {
    fn drop(&mut self) {
        self.0.close_stream(self.1);
    }
}

/// Counts a request in the thread's queue while it waits for a worker.
struct Queued<'h>(&'h Hub);

impl<'h> Queued<'h> {
    fn new(hub: &'h Hub) -> Self {
        hub.queued.set(hub.queued.get() + 1);
        hub.metrics().queue_enter();
        Self(hub)
    }
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.0.queued.set(self.0.queued.get() - 1);
        self.0.metrics().queue_leave();
    }
}

/// Serves one stream, from its request head to the end of its response.
pub(super) async fn serve(
    sh: Rc<Shared>,
    req: http::Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
) {
    sh.active.set(sh.active.get() + 1);
    let _active = Active(sh.clone());
    let started = Instant::now();
    let time = sh.hub.access_log_on().then(std::time::SystemTime::now);
    let (parts, body) = req.into_parts();
    // `--request-id`: the client's X-Request-ID, else a generated one.
    let mut generated = [0u8; REQUEST_ID_LEN];
    let client_id = parts.headers.get("x-request-id").map(HeaderValue::as_bytes);
    let rid = match (sh.cfg.request_id, client_id) {
        (true, None) => {
            sh.hub.new_request_id(&mut generated);
            Some(&generated[..])
        }
        _ => None,
    };
    let out = run(&sh, &parts, body, &mut respond, rid).await;
    let latency = started.elapsed();
    let method = parts.method.as_str().as_bytes();
    if out.status == 499 {
        sh.hub.metrics().client_disconnect();
    }
    sh.hub.metrics().observe(method, out.status, latency);
    if let Some(time) = time {
        let target = parts
            .uri
            .path_and_query()
            .map_or("/", |pq| pq.as_str())
            .as_bytes();
        let header = |name| parts.headers.get(name).map(HeaderValue::as_bytes);
        sh.hub.log_access(&crate::accesslog::Entry {
            peer: sh.peer.ip(),
            method,
            target,
            http_minor: HTTP_2,
            status: out.status,
            bytes: out.bytes,
            referer: header(http::header::REFERER),
            user_agent: header(http::header::USER_AGENT),
            request_id: &String::from_utf8_lossy(rid.or(client_id).unwrap_or_default()),
            duration: latency,
            time,
        });
    }
}

/// A request that names two hosts: Host given twice (a 400 over HTTP/1.1 too, RFC 9112
/// §3.2), or a Host that is not its :authority (RFC 9113 §8.3.1: malformed). The app would
/// see the Host field while whatever routed the request went by :authority.
fn two_hosts(parts: &http::request::Parts) -> bool {
    let mut hosts = parts.headers.get_all(http::header::HOST).iter();
    let Some(host) = hosts.next() else {
        return false;
    };
    hosts.next().is_some()
        || parts
            .uri
            .authority()
            .is_some_and(|a| !a.as_str().as_bytes().eq_ignore_ascii_case(host.as_bytes()))
}

async fn run(
    sh: &Rc<Shared>,
    parts: &http::request::Parts,
    body: RecvStream,
    respond: &mut SendResponse<Bytes>,
    request_id: Option<&[u8]>,
) -> Outcome {
    let hub = &sh.hub;
    let cfg = &sh.cfg;
    let (path, query) = match parts.uri.path_and_query() {
        Some(pq) => (pq.path(), pq.query().unwrap_or("")),
        None => ("/", ""),
    };
    let head_method = parts.method == http::Method::HEAD;
    if let Some(status) = over_limits(cfg, parts) {
        tracing::debug!(peer = %sh.peer, status, "request head past a --limit-request-* bound");
        return reply(sh, respond, status, head_method);
    }
    if two_hosts(parts) {
        tracing::debug!(peer = %sh.peer, "request with two Host fields, or one that is not its :authority");
        return reply(sh, respond, 400, head_method);
    }
    // Native routes, as over HTTP/1.1: `--health-path` and `--static-mount` (statics/).
    let field = |name: &[u8]| {
        let name = std::str::from_utf8(name).ok()?;
        parts.headers.get(name).map(HeaderValue::as_bytes)
    };
    let method = parts.method.as_str().as_bytes();
    if let Some(native) = crate::statics::route(
        &cfg.mounts,
        cfg.health_path.as_deref(),
        method,
        path.as_bytes(),
        field,
    ) {
        // Boxed, as the other rare paths below: the stream's task is allocated (and its
        // future moved) at the size of its largest state, on every stream. PERF: 3,328
        // bytes before, 2,232 after (with deadline.rs instead of monoio's Sleep); a profile
        // of the `make bench` h2 cell (8×100 streams) had 13 % of the front end in memmove
        // and ~15 % in malloc/free (README, "HTTP/2").
        return Box::pin(super::native::answer(sh, native, head_method, respond)).await;
    }
    // The request head as HTTP/1.1 would carry it: :authority becomes Host (RFC 9113
    // §8.3.1), and cookie fields split for compression are joined again (§8.2.3).
    let mut headers: Vec<(&[u8], &[u8])> = Vec::with_capacity(parts.headers.len() + 1);
    if !parts.headers.contains_key(http::header::HOST) {
        if let Some(authority) = parts.uri.authority() {
            headers.push((b"host", authority.as_str().as_bytes()));
        }
    }
    let mut cookie: Vec<u8> = Vec::new();
    for (name, value) in &parts.headers {
        if name == http::header::COOKIE {
            if !cookie.is_empty() {
                cookie.extend_from_slice(b"; ");
            }
            cookie.extend_from_slice(value.as_bytes());
        } else {
            headers.push((name.as_str().as_bytes(), value.as_bytes()));
        }
    }
    if !cookie.is_empty() {
        headers.push((b"cookie", &cookie));
    }
    if let Some(id) = request_id {
        headers.push((b"x-request-id", id));
    }
    let declared = parts
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if let (Some(max), Some(n)) = (cfg.max_body, declared) {
        if n > max {
            return reply(sh, respond, 413, head_method);
        }
    }
    // `--proxy-headers`: the client and scheme from X-Forwarded-For/-Proto when the peer
    // is a trusted proxy, exactly as for an HTTP/1.1 request.
    let (client, forwarded_https) = crate::proxy::forwarded(
        cfg.proxies.as_ref(),
        sh.peer.addr(),
        headers.iter().copied(),
    );
    let encoded = RequestHead {
        http_minor: HTTP_2,
        https: forwarded_https || sh.tls_section.is_some(),
        method,
        path: path.as_bytes(),
        query: query.as_bytes(),
        client,
        server: sh.local,
        headers,
    };
    let tls_len = sh.tls_section.as_ref().map_or(0, Vec::len);
    let head_len = encoded.encoded_len() + tls_len;
    let mut head = vec![0; head_len - tls_len];
    let _ = encoded.encode(&mut head);
    if let Some(section) = &sh.tls_section {
        head.extend_from_slice(section);
        head[1] |= uringapi_protocol::head::SCHEME_TLS_SECTION;
    }
    drop(encoded);
    let end = body.is_end_stream();
    // RFC 9110 §10.1.1: a client that sent `expect: 100-continue` with a body waits for a
    // 100 before sending it; as over HTTP/1.1 (http1/conn/upload.rs) it goes out when the
    // app first asks for the body (a client that sends it anyway is read as usual).
    let wait_continue = !end
        && parts
            .headers
            .get(http::header::EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    // Without a body the stream's receiving half is done with at once.
    let mut body = (!end).then_some(body);
    let what = || describe(parts.method.as_str(), path);
    let mut deadline = None;
    let mut attempt = 0u32;
    // A request without a body is revocable: when its worker stalls before starting it,
    // it is taken back (dispatch/health.rs) and sent again from `head`, as over HTTP/1.1
    // (http1/conn/revoke.rs). One with a body was partly handed over and is not.
    loop {
        let opened = match open_now(sh, &what) {
            Some((sid, worker)) => Opened::Stream(sid, worker),
            None => Box::pin(open(sh, &what, respond)).await,
        };
        let (sid, worker) = match opened {
            Opened::Stream(sid, worker) => {
                sh.last_worker.set(Some(worker));
                (sid, worker)
            }
            Opened::Rejected => return reply(sh, respond, 503, head_method),
            Opened::Reset => return Outcome::gone(0),
        };
        let _closing = Closing(hub, sid);
        hub.copy_responses(sid);
        if attempt == 0 {
            deadline = cfg.request_timeout.map(|t| Instant::now() + t);
        }
        attempt += 1;
        let Ok(slot_size) = hub.slot_size(worker) else {
            return reply(sh, respond, 502, head_method);
        };
        if head_len > slot_size {
            return reply(sh, respond, 431, head_method);
        }
        let window = super::response_window(sh.active.get()).min(hub.response_window(sid));
        let first = async {
            let slot = take_sendable_slot(hub, worker).await?;
            hub.write_slot(worker, slot, 0, &head)
                .map_err(|Lost| Stop::Worker)?;
            let mut rec = Record::new(Kind::Request, sid)
                .with_slot(slot.get(), head_len as u32, head_len as u32)
                .more(!end)
                .expect_continue(wait_continue)
                .with_response_window(window);
            if end {
                rec.extra = hub.queue_claim(sid, worker);
            }
            send_now(hub, worker, rec)?;
            hub.flush(worker);
            Ok::<(), Stop>(())
        };
        if first.await.is_err() {
            return reply(sh, respond, 502, head_method);
        }
        if let Some(body) = body.as_mut() {
            let invited = if wait_continue {
                Box::pin(await_continue(hub, sid, respond, deadline)).await
            } else {
                Ok(())
            };
            let sent = match invited {
                Ok(()) => {
                    let upload = send_body(sh, sid, worker, slot_size, body, deadline);
                    let mut upload = Box::pin(upload);
                    monoio::select! {
                        sent = &mut upload => sent,
                        _ = hub.event_waiting(sid) => {
                            // The app answered while its body was still coming.
                            let answer = duplex(sh, sid, head_method, window, respond, deadline, upload);
                            return Box::pin(answer).await;
                        },
                    }
                }
                Err(stop) => Err(stop),
            };
            match sent {
                Ok(()) | Err(Stop::Answered) => {}
                Err(Stop::Worker) => return reply(sh, respond, 502, head_method),
                Err(Stop::Status(status)) => return reply(sh, respond, status, head_method),
                Err(Stop::TimedOut) => {
                    hub.request_timed_out(sid, &sh.peer, "request ran past --timeout-request while the app read its body; answering 504 and cancelling it");
                    return reply(sh, respond, 504, head_method);
                }
                Err(Stop::Client) => {
                    hub.notify_disconnect(sid);
                    return Outcome::gone(0);
                }
            }
        }
        match respond_from(sh, sid, head_method, window, respond, deadline).await {
            Responded::Done(out) => return out,
            Responded::Revoked if end => {
                tracing::debug!(peer = %sh.peer, request = %hub.stream_what(sid), "request taken back from a stalled worker; sending it again");
            }
            Responded::Revoked => return reply(sh, respond, 502, head_method),
        }
    }
}

/// 414 or 431 when the head is past a `--limit-request-*` bound, measured on the
/// HTTP/1.1 head the stream stands for (its request line, its fields with the cookie
/// pieces as one field), as an HTTP/1.1 request is.
fn over_limits(cfg: &super::Settings, parts: &http::request::Parts) -> Option<u16> {
    let target = parts.uri.path_and_query().map_or(1, |pq| pq.as_str().len());
    // "METHOD target HTTP/1.1"
    if parts.method.as_str().len() + 1 + target + 9 > cfg.max_request_line {
        return Some(414);
    }
    let cookies = parts.headers.get_all(http::header::COOKIE).iter().count();
    let fields = parts.headers.len() - cookies.saturating_sub(1);
    if fields > cfg.max_fields {
        return Some(431);
    }
    let too_long = |(name, value): (&http::HeaderName, &HeaderValue)| {
        name.as_str().len() + value.len() > cfg.max_field_size
    };
    if parts.headers.iter().any(too_long) {
        return Some(431);
    }
    None
}

/// "METHOD path" for log lines, cut to a sane length.
fn describe(method: &str, path: &str) -> Box<str> {
    let path = path.get(..200).unwrap_or(path);
    format!("{method} {path}").into_boxed_str()
}

/// How getting a worker for a stream ended.
enum Opened {
    Stream(StreamId, usize),
    /// The queue is full or `--queue-timeout` passed (503).
    Rejected,
    /// The client reset the stream while it waited.
    Reset,
}

/// A dispatch stream on a worker that accepts work now, when nobody waits in the queue.
fn open_now(sh: &Shared, what: &impl Fn() -> Box<str>) -> Option<(StreamId, usize)> {
    if sh.hub.waitq.is_empty() {
        sh.hub.open_stream(what, sh.last_worker.get())
    } else {
        None
    }
}

/// Opens a dispatch stream on a worker that accepts work, waiting in the thread's FIFO
/// queue while none does; a client that resets the stream meanwhile takes its request
/// with it (no worker time for nobody), as an HTTP/1.1 client that closes does.
async fn open(
    sh: &Shared,
    what: &impl Fn() -> Box<str>,
    respond: &mut SendResponse<Bytes>,
) -> Opened {
    let hub = &sh.hub;
    let Some(ticket) = hub.waitq.join(sh.cfg.queue_limit) else {
        hub.answered_queue_full(&sh.peer);
        return Opened::Rejected;
    };
    let _queued = Queued::new(hub);
    let deadline = Instant::now() + sh.cfg.queue_timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            hub.answered_queue_timeout(&sh.peer, &what());
            return Opened::Rejected;
        }
        let nap = if ticket.is_front() {
            left.min(QUEUE_POLL)
        } else {
            left
        };
        monoio::select! {
            _ = ticket.turn() => {},
            _ = crate::deadline::until(Instant::now() + nap) => {},
            _ = poll_fn(|cx| respond.poll_reset(cx)) => {
                tracing::debug!(peer = %sh.peer, "client reset the stream while its request was queued");
                return Opened::Reset;
            },
        }
        if ticket.is_front() {
            if let Some((sid, worker)) = hub.open_stream(what, sh.last_worker.get()) {
                return Opened::Stream(sid, worker);
            }
        }
    }
}

async fn take_slot(hub: &Hub, worker: usize) -> Result<SlotIndex, Stop> {
    loop {
        match hub.take_slot(worker) {
            Ok(Some(slot)) => return Ok(slot),
            Ok(None) => hub.wait_space(worker, Need::Slot).await,
            Err(Lost) => return Err(Stop::Worker),
        }
    }
}

async fn push(hub: &Hub, worker: usize, rec: Record) -> Result<(), Stop> {
    loop {
        match hub.send(worker, rec) {
            Ok(true) => return Ok(()),
            Ok(false) => {
                hub.flush(worker);
                hub.wait_space(worker, Need::Room).await;
            }
            Err(Lost) => return Err(Stop::Worker),
        }
    }
}

/// Waits until the app asks for the body, then sends the client the 100 (informational
/// HEADERS) it waits for. `Err(Answered)`: the response started first (its event stays
/// queued); `Err(Worker)`: the worker is gone; `Err(Client)`: the client reset the stream;
/// `Err(TimedOut)`: past `--timeout-request`.
async fn await_continue(
    hub: &Hub,
    sid: StreamId,
    respond: &mut SendResponse<Bytes>,
    deadline: Option<Instant>,
) -> Result<(), Stop> {
    match next_event(hub, sid, |cx| respond.poll_reset(cx), deadline).await {
        Waited::Event(Event::Continue) => {
            let mut invite = http::Response::new(());
            *invite.status_mut() = http::StatusCode::CONTINUE;
            respond.send_informational(invite).map_err(|_| Stop::Client)
        }
        Waited::Event(Event::WorkerLost) => Err(Stop::Worker),
        Waited::Event(ev) => {
            hub.unget_event(sid, ev);
            Err(Stop::Answered)
        }
        Waited::Reset => Err(Stop::Client),
        Waited::TimedOut => Err(Stop::TimedOut),
    }
}

/// The app answered while its body was still coming (`upload`, `send_body` under way):
/// the response goes out while the body goes on to the app as it arrives and as its body
/// window allows (full duplex, as under uvicorn: an echo, a transform, a gRPC-style
/// stream). Once the response is done, a body still coming is left unread (the stream's
/// receiving half is dropped with the stream's task, as when an app answers without
/// reading its body). A body that fails now cannot be answered with a status any
/// more: the app is told the client left, and the response goes on as far as it can.
async fn duplex(
    sh: &Shared,
    sid: StreamId,
    head_method: bool,
    window: u32,
    respond: &mut SendResponse<Bytes>,
    deadline: Option<Instant>,
    mut upload: std::pin::Pin<Box<impl std::future::Future<Output = Result<(), Stop>>>>,
) -> Outcome {
    let response = respond_from(sh, sid, head_method, window, respond, deadline);
    let mut response = std::pin::pin!(response);
    let mut uploading = true;
    loop {
        monoio::select! {
            done = &mut response => return match done {
                Responded::Done(out) => out,
                // Only a request without a body is taken back from a stalled worker.
                Responded::Revoked => Outcome { status: 502, bytes: 0 },
            },
            sent = &mut upload, if uploading => {
                uploading = false;
                match sent {
                    Ok(()) | Err(Stop::Worker | Stop::Answered) => {}
                    Err(stop) => {
                        tracing::debug!(peer = %sh.peer, reason = ?stop, "request body ended early while the response was under way");
                        sh.hub.notify_disconnect(sid);
                    }
                }
            },
        }
    }
}

/// Waits until the stream's body window is open, whatever events arrive meanwhile (the
/// caller watches for the response). `Err(Worker)`: the stream or its worker is gone.
async fn await_window(hub: &Hub, sid: StreamId, deadline: Option<Instant>) -> Result<(), Stop> {
    let opened = match deadline {
        None => hub.wait_body_window(sid, false).await,
        Some(d) => monoio::select! {
            opened = hub.wait_body_window(sid, false) => opened,
            _ = crate::deadline::until(d) => return Err(Stop::TimedOut),
        },
    };
    opened.map_err(|()| Stop::Worker)
}

/// The next DATA of the request body. `wait`: the longest wait for it
/// (`--timeout-body-read`, or less to the request's deadline).
async fn next_data(
    body: &mut RecvStream,
    wait: Duration,
    timeout: Stop,
) -> Result<Option<Bytes>, Stop> {
    monoio::select! {
        _ = crate::deadline::after(wait) => Err(timeout),
        data = body.data() => match data {
            None => Ok(None),
            Some(Ok(data)) => Ok(Some(data)),
            Some(Err(_)) => Err(Stop::Client),
        },
    }
}

/// A request slot on `worker` with room in its ring for the record that will carry it, so
/// that nothing awaits between taking the slot and sending it: a stream's task dropped at
/// an await (an upload whose response finished first, `duplex`) holds no slot.
async fn take_sendable_slot(hub: &Hub, worker: usize) -> Result<SlotIndex, Stop> {
    loop {
        let slot = take_slot(hub, worker).await?;
        if hub.has_room(worker).map_err(|Lost| Stop::Worker)? {
            return Ok(slot);
        }
        hub.untake_slot(worker, slot);
        hub.flush(worker);
        hub.wait_space(worker, Need::Room).await;
    }
}

/// Sends a record for which `take_sendable_slot` made room (a full ring, impossible then,
/// is a lost worker).
fn send_now(hub: &Hub, worker: usize, rec: Record) -> Result<(), Stop> {
    match hub.send(worker, rec) {
        Ok(true) => Ok(()),
        Ok(false) | Err(Lost) => Err(Stop::Worker),
    }
}

/// DATA already received and waiting in h2, without waiting for more.
fn ready_data(body: &mut RecvStream) -> Option<Result<Bytes, Stop>> {
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    match body.poll_data(&mut cx) {
        Poll::Ready(Some(Ok(data))) => Some(Ok(data)),
        Poll::Ready(Some(Err(_))) => Some(Err(Stop::Client)),
        Poll::Ready(None) | Poll::Pending => None,
    }
}

/// Streams the request body into the worker's channel, one slot per record, filling each
/// slot with what has arrived, and hands capacity back to the client as slots go out.
async fn send_body(
    sh: &Shared,
    sid: StreamId,
    worker: usize,
    slot_size: usize,
    body: &mut RecvStream,
    deadline: Option<Instant>,
) -> Result<(), Stop> {
    let hub = &sh.hub;
    let cfg = &sh.cfg;
    let mut seen: u64 = 0;
    let mut carry: Option<Bytes> = None;
    let started = Instant::now();
    // The app's waits (a shut body window) do not count against --min-body-rate.
    let mut app_time = Duration::ZERO;
    loop {
        let waited = Instant::now();
        await_window(hub, sid, deadline).await?;
        app_time += waited.elapsed();
        // Each piece of the body within --timeout-body-read, and on average at least
        // --min-body-rate bytes a second after a first --timeout-body-read of grace (408);
        // the whole request within its deadline (504): as over HTTP/1.1 (upload.rs).
        let mut wait = cfg.body_read;
        if cfg.min_body_rate > 0 {
            let earned = Duration::from_secs_f64(seen as f64 / cfg.min_body_rate as f64);
            let spent = started.elapsed().saturating_sub(app_time);
            let left = (cfg.body_read + earned).saturating_sub(spent);
            if left.is_zero() {
                tracing::debug!(peer = %sh.peer, bytes = seen, "request body slower than --min-body-rate");
                return Err(Stop::Status(408));
            }
            wait = wait.min(left);
        }
        let (wait, timeout) = match deadline.map(|d| d.saturating_duration_since(Instant::now())) {
            Some(left) if left < wait => (left, Stop::TimedOut),
            _ => (wait, Stop::Status(408)),
        };
        let mut data = match carry.take() {
            Some(d) => d,
            None => match next_data(body, wait, timeout).await? {
                Some(d) => d,
                None => {
                    // End of the body: an empty last record, as HTTP/1.1 sends.
                    push(hub, worker, Record::new(Kind::Body, sid).more(false)).await?;
                    hub.body_sent(sid);
                    hub.flush(worker);
                    return Ok(());
                }
            },
        };
        let slot = take_sendable_slot(hub, worker).await?;
        let mut filled = 0;
        let mut released = 0;
        loop {
            let n = data.len().min(slot_size - filled);
            hub.write_slot(worker, slot, filled, &data[..n])
                .map_err(|Lost| Stop::Worker)?;
            filled += n;
            released += n;
            let _ = data.split_to(n);
            if !data.is_empty() {
                carry = Some(data);
                break;
            }
            if filled == slot_size {
                break;
            }
            match ready_data(body) {
                Some(Ok(d)) => data = d,
                Some(Err(stop)) => {
                    // The slot goes back: kept, it would be lost to the worker for good.
                    hub.untake_slot(worker, slot);
                    return Err(stop);
                }
                None => break,
            }
        }
        seen += filled as u64;
        if cfg.max_body.is_some_and(|m| seen > m) {
            hub.untake_slot(worker, slot);
            return Err(Stop::Status(413));
        }
        let more = carry.is_some() || !body.is_end_stream();
        let rec = Record::new(Kind::Body, sid)
            .with_slot(slot.get(), filled as u32, 0)
            .more(more);
        send_now(hub, worker, rec)?;
        hub.body_sent(sid);
        hub.flush(worker);
        let _ = body.flow_control().release_capacity(released);
        if !more {
            return Ok(());
        }
    }
}
