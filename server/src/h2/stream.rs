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
use h2::{Reason, RecvStream, SendStream};
use http::{HeaderName, HeaderValue, Response};
use uringapi_protocol::arena::SlotIndex;
use uringapi_protocol::head::{RequestHead, ResponseView, HTTP_2};
use uringapi_protocol::{Kind, Record};

use super::Shared;
use crate::dispatch::REQUEST_ID_LEN;
use crate::dispatch::{Event, Hub, Lost, Need, StreamId};
use crate::metrics::h2::Defence;

/// How often a queued request re-checks the workers (as HTTP/1.1's queue does).
const QUEUE_POLL: Duration = Duration::from_millis(5);

/// How a stream's request ended, for the metrics.
struct Outcome {
    status: u16,
    bytes: u64,
}

/// Why sending a request or response stopped early.
enum Stop {
    /// The worker went away (502 when nothing was sent).
    Worker,
    /// The app answered before it read the whole body.
    Answered,
    /// The client reset the stream or the connection broke.
    Client,
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

/// The `--health-path` answer: "ok" with 200, an empty body otherwise.
fn health(respond: &mut SendResponse<Bytes>, status: u16, head: bool) -> Outcome {
    let mut resp = Response::new(());
    *resp.status_mut() = http::StatusCode::from_u16(status).unwrap_or_default();
    let body: &'static [u8] = if status == 200 { b"ok" } else { b"" };
    let map = resp.headers_mut();
    map.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain"),
    );
    map.insert(http::header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    if status == 405 {
        map.insert(http::header::ALLOW, HeaderValue::from_static("GET, HEAD"));
    }
    let end = head || body.is_empty();
    let sent = match respond.send_response(resp, end) {
        Ok(mut out) if !end => out.send_data(Bytes::from_static(body), true).is_ok(),
        Ok(_) => true,
        Err(_) => false,
    };
    Outcome {
        status: if sent { status } else { 499 },
        bytes: if sent && !head { body.len() as u64 } else { 0 },
    }
}

/// Sends a response the front end makes itself (errors), ending the stream.
fn reply(respond: &mut SendResponse<Bytes>, status: u16) -> Outcome {
    let mut resp = Response::new(());
    *resp.status_mut() = http::StatusCode::from_u16(status).unwrap_or_default();
    if status == 503 {
        resp.headers_mut()
            .insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    let _ = respond.send_response(resp, true);
    Outcome { status, bytes: 0 }
}

async fn run(
    sh: &Rc<Shared>,
    parts: &http::request::Parts,
    mut body: RecvStream,
    respond: &mut SendResponse<Bytes>,
    request_id: Option<&[u8]>,
) -> Outcome {
    let hub = &sh.hub;
    let cfg = &sh.cfg;
    let (path, query) = match parts.uri.path_and_query() {
        Some(pq) => (pq.path(), pq.query().unwrap_or("")),
        None => ("/", ""),
    };
    // `--health-path`: answered here, as over HTTP/1.1 (503 while draining).
    if cfg.health_path.as_deref() == Some(path) {
        let status = match parts.method {
            http::Method::GET | http::Method::HEAD if hub.is_draining() => 503,
            http::Method::GET | http::Method::HEAD => 200,
            _ => 405,
        };
        return health(respond, status, parts.method == http::Method::HEAD);
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
            return reply(respond, 413);
        }
    }
    let what = || describe(parts.method.as_str(), path);
    let Some((sid, worker)) = open(sh, &what).await else {
        return reply(respond, 503);
    };
    let _closing = Closing(hub, sid);
    let deadline = cfg.request_timeout.map(|t| Instant::now() + t);
    let Ok(slot_size) = hub.slot_size(worker) else {
        return reply(respond, 502);
    };
    let encoded = RequestHead {
        http_minor: HTTP_2,
        https: sh.tls_section.is_some(),
        method: parts.method.as_str().as_bytes(),
        path: path.as_bytes(),
        query: query.as_bytes(),
        client: sh.peer.addr(),
        server: sh.local,
        headers,
    };
    let tls_len = sh.tls_section.as_ref().map_or(0, Vec::len);
    let head_len = encoded.encoded_len() + tls_len;
    if head_len > slot_size {
        return reply(respond, 431);
    }
    let mut head = vec![0; head_len - tls_len];
    let _ = encoded.encode(&mut head);
    if let Some(section) = &sh.tls_section {
        head.extend_from_slice(section);
        head[1] |= uringapi_protocol::head::SCHEME_TLS_SECTION;
    }
    drop(encoded);
    let end = body.is_end_stream();
    let first = async {
        let slot = take_slot(hub, worker).await?;
        hub.write_slot(worker, slot, 0, &head)
            .map_err(|Lost| Stop::Worker)?;
        let rec = Record::new(Kind::Request, sid)
            .with_slot(slot.get(), head_len as u32, head_len as u32)
            .more(!end);
        push(hub, worker, rec).await?;
        hub.flush(worker);
        Ok::<(), Stop>(())
    };
    if first.await.is_err() {
        return reply(respond, 502);
    }
    if !end {
        match send_body(sh, sid, worker, slot_size, &mut body).await {
            Ok(()) | Err(Stop::Answered) => {}
            Err(Stop::Worker) => return reply(respond, 502),
            Err(Stop::Client) => {
                hub.notify_disconnect(sid);
                return Outcome {
                    status: 499,
                    bytes: 0,
                };
            }
        }
    }
    drop(body);
    respond_from(
        sh,
        sid,
        parts.method == http::Method::HEAD,
        respond,
        deadline,
    )
    .await
}

/// "METHOD path" for log lines, cut to a sane length.
fn describe(method: &str, path: &str) -> Box<str> {
    let path = path.get(..200).unwrap_or(path);
    format!("{method} {path}").into_boxed_str()
}

/// Opens a dispatch stream on a worker that accepts work, waiting in the thread's FIFO
/// queue while none does. `None`: the queue is full or `--queue-timeout` passed (503).
async fn open(sh: &Shared, what: &impl Fn() -> Box<str>) -> Option<(StreamId, usize)> {
    let hub = &sh.hub;
    if hub.waitq.is_empty() {
        if let Some(found) = hub.open_stream(what) {
            return Some(found);
        }
    }
    let Some(ticket) = hub.waitq.join(sh.cfg.queue_limit) else {
        tracing::warn!(peer = %sh.peer, "request queue full; answering 503");
        return None;
    };
    let _queued = Queued::new(hub);
    let deadline = Instant::now() + sh.cfg.queue_timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            hub.metrics().queue_timeout();
            tracing::warn!(peer = %sh.peer, request = %what(), "no worker accepted the request within --queue-timeout; answering 503");
            return None;
        }
        let nap = if ticket.is_front() {
            left.min(QUEUE_POLL)
        } else {
            left
        };
        monoio::select! {
            _ = ticket.turn() => {},
            _ = monoio::time::sleep(nap) => {},
        }
        if ticket.is_front() {
            if let Some(found) = hub.open_stream(what) {
                return Some(found);
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

/// Waits until the stream's body window is open. `Err(Answered)`: the response started
/// first (its event stays queued); `Err(Worker)`: the worker is gone.
async fn await_window(hub: &Hub, sid: StreamId) -> Result<(), Stop> {
    if hub.wait_body_window(sid).await.is_ok() {
        return Ok(());
    }
    match hub.next_event(sid).await {
        Event::WorkerLost => Err(Stop::Worker),
        ev => {
            hub.unget_event(sid, ev);
            Err(Stop::Answered)
        }
    }
}

/// The next DATA of the request body, or the response starting first.
async fn next_data(hub: &Hub, sid: StreamId, body: &mut RecvStream) -> Result<Option<Bytes>, Stop> {
    monoio::select! {
        data = body.data() => match data {
            None => Ok(None),
            Some(Ok(data)) => Ok(Some(data)),
            Some(Err(_)) => Err(Stop::Client),
        },
        ev = hub.next_event(sid) => {
            let lost = matches!(ev, Event::WorkerLost);
            hub.unget_event(sid, ev);
            Err(if lost { Stop::Worker } else { Stop::Answered })
        },
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
) -> Result<(), Stop> {
    let hub = &sh.hub;
    let mut seen: u64 = 0;
    let mut carry: Option<Bytes> = None;
    loop {
        await_window(hub, sid).await?;
        let mut data = match carry.take() {
            Some(d) => d,
            None => match next_data(hub, sid, body).await? {
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
        let slot = take_slot(hub, worker).await?;
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
                Some(d) => data = d?,
                None => break,
            }
        }
        seen += filled as u64;
        if sh.cfg.max_body.is_some_and(|m| seen > m) {
            hub.untake_slot(worker, slot);
            return Err(Stop::Client);
        }
        let more = carry.is_some() || !body.is_end_stream();
        let rec = Record::new(Kind::Body, sid)
            .with_slot(slot.get(), filled as u32, 0)
            .more(more);
        push(hub, worker, rec).await?;
        hub.body_sent(sid);
        hub.flush(worker);
        let _ = body.flow_control().release_capacity(released);
        if !more {
            return Ok(());
        }
    }
}

/// What waiting for the stream's next event gave.
enum Waited {
    Event(Event),
    TimedOut,
    /// The client reset the stream.
    Reset,
}

/// The stream's next event, watching for the client resetting the stream (`reset`: the
/// response's or, once the head went out, the body's poll_reset) and for the deadline.
async fn next_event(
    hub: &Hub,
    sid: StreamId,
    mut reset: impl FnMut(&mut std::task::Context<'_>) -> Poll<Result<Reason, h2::Error>>,
    deadline: Option<Instant>,
) -> Waited {
    let left = match deadline {
        Some(d) => d.saturating_duration_since(Instant::now()),
        None => Duration::from_secs(86400 * 365),
    };
    if left.is_zero() {
        return Waited::TimedOut;
    }
    monoio::select! {
        ev = hub.next_event(sid) => Waited::Event(ev),
        _ = poll_fn(&mut reset) => Waited::Reset,
        _ = monoio::time::sleep(left) => Waited::TimedOut,
    }
}

/// Streams the response from the worker to the client.
async fn respond_from(
    sh: &Shared,
    sid: StreamId,
    head_method: bool,
    respond: &mut SendResponse<Bytes>,
    deadline: Option<Instant>,
) -> Outcome {
    let hub = &sh.hub;
    let gone = Outcome {
        status: 499,
        bytes: 0,
    };
    let waited = next_event(hub, sid, |cx| respond.poll_reset(cx), deadline).await;
    let (head, first, mut more, file) = match waited {
        Waited::Event(Event::Head { head, body, more }) => (head, body, more, None),
        Waited::Event(Event::File {
            head: Some(head),
            path,
        }) => (head, None, false, Some(path)),
        Waited::Event(Event::WorkerLost | Event::Revoked) => return reply(respond, 502),
        Waited::Event(Event::Abort) => {
            respond.send_reset(Reason::INTERNAL_ERROR);
            return Outcome {
                status: 500,
                bytes: 0,
            };
        }
        // A body before the head, or WebSocket records on an HTTP/2 stream (no WebSocket
        // scope is ever opened over HTTP/2).
        Waited::Event(_) => {
            tracing::error!(peer = %sh.peer, "worker sent a body or WebSocket records before the response head");
            return reply(respond, 500);
        }
        Waited::TimedOut => {
            tracing::warn!(peer = %sh.peer, "request ran past --timeout-request; answering 504 and cancelling it");
            hub.metrics().request_timeout();
            hub.cancel_stream(sid);
            return reply(respond, 504);
        }
        Waited::Reset => {
            hub.notify_disconnect(sid);
            return gone;
        }
    };
    let Ok(view) = ResponseView::decode(&head) else {
        tracing::error!(peer = %sh.peer, "worker sent an undecodable response head");
        return reply(respond, 502);
    };
    let Some((resp, declared)) = build_response(&view, &sh.cfg) else {
        tracing::error!(peer = %sh.peer, "worker sent an invalid response head");
        return reply(respond, 502);
    };
    let status = view.status;
    let first_empty = first.as_ref().is_none_or(|b| b.is_empty());
    let empty = head_method || (!more && first_empty && file.is_none());
    let Ok(mut out) = respond.send_response(resp, empty) else {
        return gone;
    };
    let mut sender = Sender {
        sh,
        out: &mut out,
        sent: 0,
        skip: head_method,
    };
    let mut ok = true;
    if !empty {
        ok = match (&file, first) {
            (Some(path), _) => sender.file(path).await,
            (None, Some(b)) => sender.data(leased(&b), !more).await,
            (None, None) => more || sender.data(Bytes::new(), true).await,
        };
    }
    while ok && more {
        match next_event(hub, sid, |cx| sender.out.poll_reset(cx), deadline).await {
            Waited::Event(Event::Body { body, more: m }) => {
                more = m;
                let bytes = body.as_ref().map(leased).unwrap_or_default();
                ok = sender.data(bytes, !more).await;
            }
            Waited::Event(Event::File { head: None, path }) => {
                more = false;
                ok = sender.file(&path).await;
            }
            Waited::TimedOut => {
                tracing::warn!(peer = %sh.peer, "response ran past --timeout-request; resetting the stream and cancelling it");
                hub.metrics().request_timeout();
                hub.cancel_stream(sid);
                ok = false;
            }
            Waited::Reset => {
                hub.notify_disconnect(sid);
                return Outcome {
                    status: 499,
                    bytes: sender.sent,
                };
            }
            Waited::Event(_) => {
                tracing::warn!(peer = %sh.peer, "response aborted after it started; resetting the stream");
                ok = false;
            }
        }
    }
    if ok && !head_method && declared.is_some_and(|n| n != sender.sent) {
        tracing::error!(peer = %sh.peer, declared = ?declared, sent = sender.sent, "response body length differs from its content-length; resetting the stream");
        ok = false;
    }
    let sent = sender.sent;
    if !ok {
        out.send_reset(Reason::INTERNAL_ERROR);
    }
    Outcome {
        status: if ok { status } else { 500.max(status) },
        bytes: sent,
    }
}

/// The worker's response head as an h2 response. Connection-specific fields (RFC 9113
/// §8.2.2) are dropped; `None`: a status or field h2 cannot carry. Also returns the
/// declared content-length.
fn build_response(
    view: &ResponseView<'_>,
    opts: &super::Settings,
) -> Option<(Response<()>, Option<u64>)> {
    let mut resp = Response::new(());
    *resp.status_mut() = http::StatusCode::from_u16(view.status).ok()?;
    if view.status < 200 {
        return None;
    }
    let map = resp.headers_mut();
    let mut declared = None;
    let (mut has_date, mut has_server) = (false, false);
    for (name, value) in &view.headers {
        let name = HeaderName::from_bytes(name).ok()?;
        if matches!(
            name.as_str(),
            "connection" | "keep-alive" | "proxy-connection" | "transfer-encoding" | "upgrade"
        ) {
            continue;
        }
        if name == http::header::CONTENT_LENGTH {
            declared = Some(
                std::str::from_utf8(value)
                    .ok()?
                    .trim()
                    .parse::<u64>()
                    .ok()?,
            );
        }
        has_date |= name == http::header::DATE;
        has_server |= name == http::header::SERVER;
        map.append(name, HeaderValue::from_bytes(value).ok()?);
    }
    if opts.server && !has_server {
        map.insert(http::header::SERVER, HeaderValue::from_static("uringapi"));
    }
    if opts.date && !has_date {
        let now = httpdate::fmt_http_date(std::time::SystemTime::now());
        map.insert(http::header::DATE, HeaderValue::from_str(&now).ok()?);
    }
    // `--header` lines, as encoded for HTTP/1.1 (`name: value\r\n` each).
    let extra = opts.extra.split(|&b| b == b'\n').filter_map(|line| {
        let line = line.strip_suffix(b"\r")?;
        let at = line.windows(2).position(|w| w == b": ")?;
        Some((&line[..at], &line[at + 2..]))
    });
    for (name, value) in extra {
        let name = HeaderName::from_bytes(name).ok()?;
        if !map.contains_key(&name) {
            map.insert(name, HeaderValue::from_bytes(value).ok()?);
        }
    }
    Some((resp, declared))
}

/// A response slot's bytes as a DATA payload: copied out (h2 needs owned bytes, and the
/// slot goes back to the worker when the lease drops).
fn leased(lease: &crate::zerocopy::SlotLease) -> Bytes {
    let mut v = Vec::with_capacity(lease.len());
    lease.copy_into(&mut v);
    Bytes::from(v)
}

/// Writes response body bytes under the client's flow-control window.
struct Sender<'a> {
    sh: &'a Shared,
    out: &'a mut SendStream<Bytes>,
    sent: u64,
    /// HEAD: count, do not send.
    skip: bool,
}

impl Sender<'_> {
    /// Sends `bytes` (copied out of the slot, which goes back to the worker at once), the
    /// last piece when `end`. `false`: the stream is gone or stalled.
    async fn data(&mut self, mut data: Bytes, end: bool) -> bool {
        self.sent += data.len() as u64;
        if self.skip {
            return true;
        }
        if data.is_empty() {
            return !end || self.out.send_data(data, true).is_ok();
        }
        while !data.is_empty() {
            self.out.reserve_capacity(data.len());
            let stall = self.sh.cfg.body_read;
            let granted = monoio::time::timeout(stall, poll_fn(|cx| self.out.poll_capacity(cx)));
            let n = match granted.await {
                Ok(Some(Ok(n))) => n,
                Ok(_) => return false,
                Err(_) => {
                    // Zero window for ever: the client takes no data and holds the stream.
                    tracing::info!(peer = %self.sh.peer, "HTTP/2 client kept its flow-control window shut past --timeout-body-read; closing the connection");
                    self.sh.kill(Reason::ENHANCE_YOUR_CALM, Defence::ZeroWindow);
                    return false;
                }
            };
            if n == 0 {
                continue;
            }
            let piece = data.split_to(n.min(data.len()));
            if self.out.send_data(piece, end && data.is_empty()).is_err() {
                return false;
            }
        }
        true
    }

    /// Sends a file named by `http.response.pathsend` as the rest of the body.
    async fn file(&mut self, path: &[u8]) -> bool {
        use std::os::unix::ffi::OsStrExt;
        let path = std::path::Path::new(std::ffi::OsStr::from_bytes(path));
        if !path.is_absolute() {
            tracing::error!(peer = %self.sh.peer, "http.response.pathsend: the path is not absolute");
            return false;
        }
        let Ok(file) = monoio::fs::File::open(path).await else {
            tracing::error!(peer = %self.sh.peer, path = %path.display(), "http.response.pathsend: cannot open the file");
            return false;
        };
        let mut pos = 0u64;
        let mut buf = Vec::with_capacity(FILE_CHUNK);
        loop {
            buf.clear();
            let (res, b) = file.read_at(buf, pos).await;
            buf = b;
            match res {
                Ok(0) => return self.data(Bytes::new(), true).await,
                Ok(n) => {
                    pos += n as u64;
                    if !self.data(Bytes::copy_from_slice(&buf[..n]), false).await {
                        return false;
                    }
                }
                Err(e) => {
                    tracing::error!(peer = %self.sh.peer, error = %e, "http.response.pathsend: cannot read the file");
                    return false;
                }
            }
        }
    }
}

/// Bytes read from a file per DATA batch for `http.response.pathsend`.
const FILE_CHUNK: usize = 64 * 1024;
