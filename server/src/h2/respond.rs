//! One stream's response: from the worker's records (or a pathsend file) to HEADERS and
//! DATA frames under the client's flow-control window, and the answers the front end
//! makes itself (errors).

use std::future::poll_fn;
use std::mem;
use std::task::Poll;
use std::time::Instant;

use bytes::Bytes;
use h2::server::SendResponse;
use h2::{Reason, SendStream};
use http::{HeaderName, HeaderValue, Response};
use uringapi_protocol::head::{is_final_status, ResponseView};

use super::stream::Outcome;
use super::Shared;
use crate::dispatch::{Event, Hub, StreamId};
use crate::metrics::h2::Defence;
use crate::response::{declare_length, open_file, BadResponse};

/// Sends a response the front end makes itself (errors), ending the stream: the same
/// status, fields and `"<status> <reason>\n"` body as over HTTP/1.1 (a HEAD gets the head).
pub(super) fn reply(
    sh: &Shared,
    respond: &mut SendResponse<Bytes>,
    status: u16,
    head_method: bool,
) -> Outcome {
    let code = http::StatusCode::from_u16(status).unwrap_or_default();
    let body = format!("{} {}\n", status, code.canonical_reason().unwrap_or(""));
    let mut resp = Response::new(());
    *resp.status_mut() = code;
    let map = resp.headers_mut();
    front_end_fields(map, &sh.cfg);
    if status == 503 {
        map.insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    map.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    map.insert(http::header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    let sent = match respond.send_response(resp, head_method) {
        // A few bytes: h2 buffers them whatever the window (they go out as it opens).
        Ok(mut out) if !head_method => out.send_data(Bytes::from(body), true).is_ok(),
        Ok(_) => true,
        Err(_) => false,
    };
    match sent {
        true => Outcome { status, bytes: 0 },
        false => Outcome::gone(0),
    }
}

/// The fields the front end adds to every response, as over HTTP/1.1: Server and Date
/// (unless `--no-server-header`/`--no-date-header`) and the `--header` lines.
pub(super) fn front_end_fields(map: &mut http::HeaderMap, opts: &super::Settings) {
    if opts.server {
        map.insert(http::header::SERVER, HeaderValue::from_static("uringapi"));
    }
    if opts.date {
        map.insert(http::header::DATE, date());
    }
    // `--header` lines, as encoded for HTTP/1.1 (`name: value\r\n` each), sent beside
    // the app's own fields of the same name as HTTP/1.1 does.
    let extra = opts.extra.split(|&b| b == b'\n').filter_map(|line| {
        let line = line.strip_suffix(b"\r")?;
        let at = line.windows(2).position(|w| w == b": ")?;
        Some((&line[..at], &line[at + 2..]))
    });
    for (name, value) in extra {
        if let (Ok(name), Ok(value)) =
            (HeaderName::from_bytes(name), HeaderValue::from_bytes(value))
        {
            map.append(name, value);
        }
    }
}

thread_local! {
    /// The Date value of the current second (seconds since the epoch, value).
    static DATE: std::cell::RefCell<(u64, HeaderValue)> =
        const { std::cell::RefCell::new((0, HeaderValue::from_static(""))) };
}

/// The Date field's value, formatted once a second per thread (a clone shares the bytes).
/// PERF: was an httpdate format and a HeaderValue allocation per response (part of the
/// cuts measured in `Sender::data`).
fn date() -> HeaderValue {
    let now = std::time::SystemTime::now();
    let secs = now
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    DATE.with_borrow_mut(|(at, value)| {
        if *at != secs {
            let text = httpdate::fmt_http_date(now);
            if let Ok(v) = HeaderValue::from_str(&text) {
                *value = v;
                *at = secs;
            }
        }
        value.clone()
    })
}

/// What waiting for the stream's next event gave.
pub(super) enum Waited {
    Event(Event),
    TimedOut,
    /// The client reset the stream.
    Reset,
}

/// The stream's next event, watching for the client resetting the stream (`reset`: the
/// response's or, once the head went out, the body's poll_reset) and for the deadline.
pub(super) async fn next_event(
    hub: &Hub,
    sid: StreamId,
    mut reset: impl FnMut(&mut std::task::Context<'_>) -> Poll<Result<Reason, h2::Error>>,
    deadline: Option<Instant>,
) -> Waited {
    // No deadline, no timer: most requests have none. PERF: was a one-year monoio Sleep per
    // response wait (see `Sender::data` for the figures).
    let timer = async {
        match deadline {
            Some(d) => crate::deadline::until(d).await,
            None => std::future::pending().await,
        }
    };
    monoio::select! {
        ev = hub.next_event(sid) => Waited::Event(ev),
        _ = poll_fn(&mut reset) => Waited::Reset,
        _ = timer => Waited::TimedOut,
    }
}

/// How answering a stream from its worker ended.
pub(super) enum Responded {
    Done(Outcome),
    /// The request was taken back from a stalled worker before it started: send it again.
    Revoked,
}

/// Streams the response from the worker to the client; `window`: the response window
/// the stream's request gave its worker (ring.rs rule 7).
pub(super) async fn respond_from(
    sh: &Shared,
    sid: StreamId,
    head_method: bool,
    window: u32,
    respond: &mut SendResponse<Bytes>,
    deadline: Option<Instant>,
) -> Responded {
    let waited = next_event(&sh.hub, sid, |cx| respond.poll_reset(cx), deadline).await;
    if let Waited::Event(Event::Revoked) = waited {
        return Responded::Revoked;
    }
    let credit_at = uringapi_protocol::record::response_credit_at(window);
    Responded::Done(answer(sh, sid, head_method, credit_at, respond, deadline, waited).await)
}

/// Sends the response whose first event (or timeout, or reset) is `waited`; acknowledges
/// written records `credit_at` at a time.
async fn answer(
    sh: &Shared,
    sid: StreamId,
    head_method: bool,
    credit_at: u32,
    respond: &mut SendResponse<Bytes>,
    deadline: Option<Instant>,
    waited: Waited,
) -> Outcome {
    let hub = &sh.hub;
    let gone = Outcome::gone(0);
    let (head, first, mut more, file) = match waited {
        Waited::Event(Event::Head { head, body, more }) => (head, body, more, None),
        // The file is opened before the head goes out, so that a missing one (or a
        // directory, a device) can still be answered with a 500, as over HTTP/1.1.
        Waited::Event(Event::File {
            head: Some(head),
            path,
        }) => match open_file(&path).await {
            Ok(file) => (head, None, false, Some(file)),
            Err(e) => {
                tracing::error!(peer = %sh.peer, path = %String::from_utf8_lossy(&path), "http.response.pathsend: {e}");
                return reply(sh, respond, 500, head_method);
            }
        },
        Waited::Event(Event::WorkerLost | Event::Revoked) => {
            return reply(sh, respond, 502, head_method)
        }
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
            return reply(sh, respond, 500, head_method);
        }
        Waited::TimedOut => {
            hub.request_timed_out(
                sid,
                &sh.peer,
                "request ran past --timeout-request; answering 504 and cancelling it",
            );
            return reply(sh, respond, 504, head_method);
        }
        Waited::Reset => {
            hub.notify_disconnect(sid);
            return gone;
        }
    };
    let Ok(view) = ResponseView::decode(&head) else {
        tracing::error!(peer = %sh.peer, "worker sent an undecodable response head");
        return reply(sh, respond, 502, head_method);
    };
    let (resp, declared) = match build_response(&view, &sh.cfg) {
        Ok(built) => built,
        Err(e) => {
            tracing::error!(peer = %sh.peer, error = %e, "worker sent an invalid response head");
            return reply(sh, respond, 502, head_method);
        }
    };
    let status = view.status;
    // RFC 9110 §6.4.1, §15.3.6: a HEAD, 204, 205 or 304 response has no content; a body
    // the app sends anyway is counted and dropped, as over HTTP/1.1 (a DATA frame would be
    // a protocol error to the client after a 204 or 304, RFC 9113 §8.1.1).
    let bodiless = head_method || matches!(status, 204 | 205 | 304);
    let first_empty = first.as_ref().is_none_or(|b| b.is_empty());
    let empty = bodiless || (!more && first_empty && file.is_none());
    let Ok(mut out) = respond.send_response(resp, empty) else {
        return gone;
    };
    let mut sender = Sender {
        sh,
        out: &mut out,
        sent: 0,
        skip: bodiless,
    };
    let mut ok = true;
    if !empty {
        ok = match (&file, first) {
            (Some((file, len)), _) => sender.range(file, 0, *len).await,
            (None, Some(b)) => sender.data(leased(b), !more).await,
            (None, None) => more || sender.data(Bytes::new(), true).await,
        };
    }
    // Records handled with `more` that the worker has not been told of: its response
    // window (ring.rs rule 7) reopens by them, before we wait for the next one.
    let mut owed = u32::from(ok && more);
    while ok && more {
        if owed >= credit_at {
            hub.credit_response(sid, std::mem::take(&mut owed));
        }
        match next_event(hub, sid, |cx| sender.out.poll_reset(cx), deadline).await {
            Waited::Event(Event::Body { body, more: m }) => {
                more = m;
                let bytes = body.map(leased).unwrap_or_default();
                ok = sender.data(bytes, !more).await;
                owed += u32::from(more);
            }
            Waited::Event(Event::File { head: None, path }) => {
                more = false;
                ok = sender.file(&path).await;
            }
            // An app that answered an `expect: 100-continue` request before asking for its
            // body, and asks for it now: the response is under way, no 100 goes out (the
            // body is not read, as over HTTP/1.1).
            Waited::Event(Event::Continue) => {}
            Waited::TimedOut => {
                hub.request_timed_out(
                    sid,
                    &sh.peer,
                    "response ran past --timeout-request; resetting the stream and cancelling it",
                );
                ok = false;
            }
            Waited::Reset => {
                hub.notify_disconnect(sid);
                return Outcome::gone(sender.sent);
            }
            Waited::Event(_) => {
                tracing::warn!(peer = %sh.peer, "response aborted after it started; resetting the stream");
                ok = false;
            }
        }
    }
    if ok && !bodiless && declared.is_some_and(|n| n != sender.sent) {
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
/// §8.2.2) are dropped; `Err`: a status or field h2 cannot carry, as HTTP/1.1 names it.
/// Also returns the declared content-length.
fn build_response(
    view: &ResponseView<'_>,
    opts: &super::Settings,
) -> Result<(Response<()>, Option<u64>), BadResponse> {
    let mut resp = Response::new(());
    *resp.status_mut() = http::StatusCode::from_u16(view.status)
        .ok()
        .filter(|_| is_final_status(view.status))
        .ok_or(BadResponse::Status(view.status))?;
    let map = resp.headers_mut();
    front_end_fields(map, opts);
    // Whether the map still holds the front end's Server and Date.
    let mut ours = (opts.server, opts.date);
    let mut declared = None;
    for (name, value) in &view.headers {
        let name = HeaderName::from_bytes(name)
            .map_err(|_| BadResponse::Name(String::from_utf8_lossy(name).into_owned()))?;
        if matches!(
            name.as_str(),
            "connection" | "keep-alive" | "proxy-connection" | "transfer-encoding" | "upgrade"
        ) {
            continue;
        }
        // The app's own Server or Date replaces the front end's (as over HTTP/1.1).
        if (name == http::header::SERVER && mem::take(&mut ours.0))
            || (name == http::header::DATE && mem::take(&mut ours.1))
        {
            map.remove(&name);
        }
        if name == http::header::CONTENT_LENGTH {
            // RFC 9110 §8.6: never in a 204, 0 in a 205 (set below); a 304's describes the
            // selected representation.
            if matches!(view.status, 204 | 205) {
                continue;
            }
            // Sent once however often the app gave it (two that differ are refused).
            if !declare_length(&mut declared, value)? {
                continue;
            }
        }
        let value = HeaderValue::from_bytes(value)
            .map_err(|_| BadResponse::Value(name.as_str().to_owned()))?;
        map.append(name, value);
    }
    if view.status == 205 {
        map.insert(http::header::CONTENT_LENGTH, HeaderValue::from_static("0"));
    }
    Ok((resp, declared))
}

/// A response slot's bytes as a DATA payload: owned bytes (h2 needs them), copied out
/// when the poller routed the record (`Hub::copy_responses`), so the slot is back with
/// the worker already.
fn leased(lease: crate::zerocopy::SlotLease) -> Bytes {
    Bytes::from(lease.into_vec())
}

/// Writes response body bytes under the client's flow-control window.
pub(super) struct Sender<'a> {
    pub sh: &'a Shared,
    pub out: &'a mut SendStream<Bytes>,
    pub sent: u64,
    /// HEAD: count, do not send.
    pub skip: bool,
}

impl Sender<'_> {
    /// Sends `bytes` (copied out of the slot, which goes back to the worker at once), the
    /// last piece when `end`. `false`: the stream is gone or stalled.
    pub async fn data(&mut self, mut data: Bytes, end: bool) -> bool {
        self.sent += data.len() as u64;
        if self.skip {
            return true;
        }
        if data.is_empty() {
            return !end || self.out.send_data(data, true).is_ok();
        }
        while !data.is_empty() {
            self.out.reserve_capacity(data.len());
            // PERF: h2 assigns capacity at once while the window is open; the wait (and its
            // timer) is only for a shut window. `make bench` h2 cell (README, "HTTP/2"), a
            // timeout armed per DATA frame (monoio's 640-byte Sleep in the stream's task)
            // was part of the front end's 0.98 (1×100 streams) and 0.83 (8×100) of the
            // workers' CPU per request; with this and the cuts in stream.rs, 0.86 and 0.75.
            let mut n = self.out.capacity();
            if n == 0 {
                let stall = crate::deadline::after(self.sh.cfg.body_read);
                let granted = poll_fn(|cx| self.out.poll_capacity(cx));
                n = monoio::select! {
                    g = granted => match g {
                        Some(Ok(n)) => n,
                        _ => return false,
                    },
                    _ = stall => {
                        // Zero window for ever: the client takes no data and holds the stream.
                        // One line per connection: its other streams' waits run out too.
                        if self.sh.killed.get().is_none() {
                            tracing::info!(peer = %self.sh.peer, "HTTP/2 client kept its flow-control window shut past --timeout-body-read; closing the connection");
                        }
                        self.sh.kill(Reason::ENHANCE_YOUR_CALM, Defence::ZeroWindow);
                        return false;
                    },
                };
            }
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

    /// Sends a file named by `http.response.pathsend` after body pieces (the head is out:
    /// a file that cannot be sent resets the stream).
    pub async fn file(&mut self, path: &[u8]) -> bool {
        match open_file(path).await {
            Ok((file, len)) => self.range(&file, 0, len).await,
            Err(e) => {
                tracing::error!(peer = %self.sh.peer, path = %String::from_utf8_lossy(path), "http.response.pathsend: {e}; resetting the stream");
                false
            }
        }
    }

    /// Sends `len` bytes of `file` from `start` as the rest of the body, one read per DATA
    /// batch, each read's buffer handed to h2 as it is.
    pub async fn range(&mut self, file: &monoio::fs::File, start: u64, len: u64) -> bool {
        let mut pos = 0u64;
        loop {
            let want = (len - pos).min(FILE_CHUNK as u64);
            if want == 0 {
                return self.data(Bytes::new(), true).await;
            }
            let buf = Vec::with_capacity(want as usize);
            let (res, buf) = file.read_at(buf, start + pos).await;
            match res {
                Ok(0) => {
                    tracing::error!(peer = %self.sh.peer, "the file shrank while it was sent; resetting the stream");
                    return false;
                }
                Ok(n) => {
                    pos += n as u64;
                    let last = pos == len;
                    if !self.data(Bytes::from(buf), last).await {
                        return false;
                    }
                    if last {
                        return true;
                    }
                }
                Err(e) => {
                    tracing::error!(peer = %self.sh.peer, error = %e, "cannot read the file; resetting the stream");
                    return false;
                }
            }
        }
    }
}

/// Bytes read from a file per DATA batch (`http.response.pathsend`, `--static-mount`).
const FILE_CHUNK: usize = 64 * 1024;
