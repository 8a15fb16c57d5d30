//! A connection after a WebSocket upgrade: the opening handshake with the app (accept, or
//! a denial response sent as plain HTTP), then one loop that drives the `ws` module from
//! the connection's buffers — frames in, whole messages to the worker under the window of
//! ring.rs rule 7; the app's messages out, acknowledged once written; pings answered here;
//! the close handshake; protocol errors closed with their code and never passed on.

use std::pin::Pin;
use std::time::{Duration, Instant};

use uringapi_protocol::record::{WS_CREDIT_AT, WS_TEXT};

use super::*;
use crate::load::WorkerLoad;
use crate::ws::close;
use crate::ws::deflate::{self, Agreed};
use crate::ws::frame::{encode_header, Opcode};
use crate::ws::handshake::{self, Refusal};
use crate::ws::message::{Event as WsIn, Held, Read, Reader};
use crate::ws::send::Writer;

/// WebSocket settings (`--ws*`); `ConnConfig::ws` is `None` with `--ws off`.
#[derive(Debug, Clone, Copy)]
pub struct WsConfig {
    /// Largest message after inflating (1009 past it).
    pub max_size: usize,
    pub ping_interval: Option<Duration>,
    pub ping_timeout: Option<Duration>,
    /// Offer permessage-deflate to clients that ask for it.
    pub deflate: bool,
    /// `--timeout-graceful-shutdown`: on a drain, open WebSockets get this long, then 1001.
    pub graceful: Duration,
}

/// How long the front end waits for the client's close frame after sending its own
/// before it drops the connection.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// A checked upgrade request, owned (the head it came from is gone once the stream opens).
pub(super) struct Upgrade {
    key: String,
    deflate: Option<Agreed>,
}

/// Checks an upgrade request: `None` when it does not ask for a WebSocket (or `--ws off`),
/// `Err` with the answer for a bad one (RFC 6455 §4.2.2: 426 for another version, 400
/// otherwise), and 503 for any during a drain: opened now, the WebSocket would only be
/// closed (1001) at the graceful timeout; refused, the client opens it elsewhere at once.
pub(super) fn upgrade(
    cfg: &ConnConfig,
    head: &parse::Head<'_>,
    draining: bool,
) -> Option<Result<Upgrade, u16>> {
    check_upgrade(cfg.ws.as_ref(), head).map(|up| if draining { Err(503) } else { up })
}

fn check_upgrade(ws: Option<&WsConfig>, head: &parse::Head<'_>) -> Option<Result<Upgrade, u16>> {
    let ws = ws?;
    let headers: Vec<(&str, &[u8])> = head
        .headers
        .iter()
        .filter_map(|(n, v)| std::str::from_utf8(n).ok().map(|n| (n, *v)))
        .collect();
    if head.minor == 0 || !handshake::wants_websocket(headers.iter().copied()) {
        return None;
    }
    let method = std::str::from_utf8(head.method).unwrap_or("");
    Some(match handshake::check(method, &headers) {
        Ok(up) => Ok(Upgrade {
            key: up.key.to_owned(),
            deflate: if ws.deflate {
                deflate::negotiate(&up.extensions)
            } else {
                None
            },
        }),
        Err(Refusal::Version) => Err(426),
        Err(e) => {
            tracing::debug!(error = %e, "bad WebSocket upgrade request");
            Err(400)
        }
    })
}

/// The 101 answer to the app's `websocket.accept` head: its `sec-websocket-protocol` is the
/// subprotocol, its other headers go out as they are, once checked like response headers.
fn accept_response(
    head: &[u8],
    up: &Upgrade,
    opts: encode::HeaderOptions,
) -> Result<Vec<u8>, String> {
    let view = ResponseView::decode(head).map_err(|e| e.to_string())?;
    let mut subprotocol = None;
    let mut extra = Vec::new();
    for &(name, value) in &view.headers {
        if name.is_empty() || !name.iter().all(|&b| encode::is_tchar(b)) {
            return Err(format!(
                "bad header name {:?}",
                String::from_utf8_lossy(name)
            ));
        }
        if value.iter().any(|&b| b == b'\r' || b == b'\n' || b == 0) {
            return Err(format!("bad value for {:?}", String::from_utf8_lossy(name)));
        }
        if name.eq_ignore_ascii_case(b"sec-websocket-protocol") {
            subprotocol = Some(String::from_utf8_lossy(value).into_owned());
        } else if !(name.eq_ignore_ascii_case(b"upgrade")
            || name.eq_ignore_ascii_case(b"connection")
            || name.eq_ignore_ascii_case(b"sec-websocket-accept")
            || name.eq_ignore_ascii_case(b"sec-websocket-extensions")
            || name.eq_ignore_ascii_case(b"content-length")
            || name.eq_ignore_ascii_case(b"transfer-encoding"))
        {
            extra.push((name, value));
        }
    }
    let ext = up.deflate.map(Agreed::response_value);
    let mut fields = Vec::new();
    opts.yielding_to(view.headers.iter().map(|&(name, _)| name))
        .write_fields(&mut fields);
    Ok(handshake::response_head(
        &fields,
        &up.key,
        subprotocol.as_deref(),
        ext.as_deref(),
        &extra,
    ))
}

/// An accepted WebSocket, handed from the request (whose state is dropped) to the
/// connection's own loop: it costs only the loop's state while it lives.
pub(super) struct Open {
    sid: StreamId,
    worker: usize,
    deflate: Option<Agreed>,
}

/// Serves an open WebSocket on a task of its own (see `serve`); `live` counts its
/// connection until it closes.
pub(super) fn spawn_session(conn: Conn, open: Open, live: Live) {
    monoio::spawn(session(conn, open, live));
}

/// The open WebSocket's task, all that an idle WebSocket costs the front end besides its
/// stream and socket: the connection (moved in), `open`, `live` and the loop's state (the
/// size test below keeps it in jemalloc's 1,280-byte class).
// Not an `async fn`: its arguments would be kept twice in its state (as passed and as
// moved into its body), 344 bytes more per open WebSocket (the size test below).
#[allow(clippy::manual_async_fn)]
fn session(mut conn: Conn, open: Open, live: Live) -> impl std::future::Future<Output = ()> {
    async move {
        conn.ws_session(&open).await;
        drop(live);
    }
}

/// What woke the loop.
enum Step {
    /// The app's event, boxed: kept inline (96 bytes), `step` took room in every state of
    /// the loop, the idle wait's too (80 bytes of each open WebSocket's task). PERF: one
    /// allocation per app event; with it and `ws_hand_on`, the echo cell
    /// (`benches/e2e/ws_echo.py --servers uringapi,granian --rounds 2`, shared machine,
    /// 2026-12-04) measured 14.7 CPU-µs/msg at 64 B and 28.3 at 16 KiB, 1.21× and 1.36×
    /// granian's msgs/s in the same rotation (the README's table: 19.8 and 41.6, 1.06× and
    /// 1.31×).
    Worker(Option<Box<Event>>),
    Readable,
    Timer,
    Drain,
}

/// The app's side of the WebSocket as the loop sends it.
#[derive(Default)]
struct Sending {
    /// An app message is half sent: its next piece is a continuation frame.
    fragmenting: bool,
    /// `WsSend` records written to the client and not yet credited back to the worker.
    owed: u32,
}

impl Sending {
    /// The opcode of the app's next message record.
    fn opcode(&self, text: bool) -> Opcode {
        match (self.fragmenting, text) {
            (true, _) => Opcode::Continuation,
            (false, true) => Opcode::Text,
            (false, false) => Opcode::Binary,
        }
    }

    /// Appends one of the app's message records to `out` as a frame, its bytes copied out
    /// of the slot (compressed under permessage-deflate, through `plain`), and counts it.
    fn encode(
        &mut self,
        (writer, load): (&mut Writer, &WorkerLoad),
        out: &mut Vec<u8>,
        plain: &mut Vec<u8>,
        data: Option<SlotLease>,
        (text, more): (bool, bool),
    ) {
        let len = data.as_ref().map_or(0, SlotLease::len);
        load.ws_message_out(len, !more);
        let opcode = self.opcode(text);
        if writer.compresses() {
            plain.clear();
            if let Some(d) = &data {
                d.copy_into(plain);
            }
            drop(data);
            writer.frame(out, opcode, !more, plain);
        } else {
            encode_header(out, !more, false, opcode, len, None);
            if let Some(d) = &data {
                d.copy_into(out);
            }
        }
        self.fragmenting = more;
    }
}

/// A message record of the app's at most this long may have the records queued behind it
/// joined to it for one write, up to `WS_GATHER_MAX` bytes of messages in all (as HTTP/1.1
/// response pieces, `download.rs` `gather`); a longer one goes out from its slot.
/// PERF: benches/e2e/ws_burst_ab.py, push (the app sends 100,000 messages of 64 bytes):
/// the front end's CPU went from 49-63 to 10-20 ticks with the window of 8 (`WS_WINDOW`),
/// which lets more queue up (benches/results/ws-burst-2026-12-07.txt); a write and an
/// io_uring enter per message were most of its time.
const WS_GATHER_SMALL: usize = 16 * 1024;
const WS_GATHER_MAX: usize = 64 * 1024;

/// How a WebSocket ended, for the log and the metrics.
struct Ended {
    code: u16,
}

impl Conn {
    /// Answers a bad upgrade request (426 names the version we speak) and closes.
    pub(super) async fn refuse_upgrade(&mut self, status: u16, minor: u8) -> Next {
        if status == 426 {
            self.served.status = 426;
            let version = [("sec-websocket-version", "13")];
            let bytes = encode::error_response(426, false, true, self.cfg.headers, &version);
            let _ = self.write(bytes).await;
            let _ = self.sock.shutdown().await;
        } else {
            self.reply_error(status, minor).await;
        }
        Next::Close
    }

    /// Serves a WebSocket whose upgrade request is encoded in `scratch` and whose stream is
    /// open on `worker`.
    pub(super) async fn websocket(
        &mut self,
        guard: StreamGuard<'_>,
        worker: usize,
        up: Upgrade,
        side: RequestSide,
    ) -> Next {
        let sid = guard.1;
        self.hub.websocket_opened(sid);
        let head_len = self.scratch.len();
        let sent = async {
            let slot = self.take_slot(worker).await?;
            self.hub
                .write_slot(worker, slot, 0, &self.scratch)
                .map_err(|_| SendEnd::WorkerLost)?;
            let (len, aux) = (head_len as u32, head_len as u32);
            let rec = Record::new(Kind::WsConnect, sid).with_slot(slot.get(), len, aux);
            self.push(worker, rec).await?;
            self.hub.flush(worker);
            Ok::<(), SendEnd>(())
        };
        if sent.await.is_err() {
            self.reply_error(502, 1).await;
            return Next::Close;
        }
        let head = match self.next_event(sid, None).await {
            Waited::Event(Event::WsAccept { head }) => head,
            Waited::Event(ev @ (Event::Head { .. } | Event::File { .. })) => {
                // A denial response (or the 403 of a close before accept): plain HTTP.
                self.hub.unget_event(sid, ev);
                let side = RequestSide {
                    keep_alive: false,
                    ..side
                };
                return self.respond(sid, side, None).await;
            }
            Waited::Event(Event::WorkerLost) => {
                self.reply_error(502, 1).await;
                return Next::Close;
            }
            Waited::Event(Event::Abort) if self.gone => return Next::Close,
            _ => {
                tracing::error!(peer = %self.peer, "worker answered a WebSocket upgrade with something else than an accept or a response");
                self.reply_error(500, 1).await;
                return Next::Close;
            }
        };
        let response = match accept_response(&head, &up, self.cfg.headers) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(peer = %self.peer, error = %e, "worker sent an invalid websocket.accept");
                self.hub.notify_ws_disconnect(sid, close::ABNORMAL, "");
                self.reply_error(500, 1).await;
                return Next::Close;
            }
        };
        self.served.status = 101;
        if self.write(response).await.is_err() {
            self.hub.notify_ws_disconnect(sid, close::ABNORMAL, "");
            return Next::Close;
        }
        self.hub.load().get(worker).ws_opened();
        // The stream outlives the request: `ws_session` closes it.
        std::mem::forget(guard);
        Next::WebSocket(Open {
            sid,
            worker,
            deflate: up.deflate,
        })
    }

    /// The open WebSocket, until it closes; then the connection closes.
    /// (`open` by reference: by value it would sit in the task twice more, 48 bytes.)
    pub(super) async fn ws_session(&mut self, open: &Open) {
        let hub = self.hub.clone();
        let _guard = StreamGuard(&hub, open.sid);
        let ended = self.ws_loop(open.sid, open.worker, open.deflate).await;
        hub.load().get(open.worker).ws_closed(ended.code);
        tracing::debug!(peer = %self.peer, code = ended.code, "websocket closed");
        let _ = self.sock.shutdown().await;
    }

    /// The open WebSocket, until it closes.
    async fn ws_loop(&mut self, sid: StreamId, worker: usize, deflate: Option<Agreed>) -> Ended {
        // Held through the connection's `Rc` (8 bytes of the loop's state, not a 64-byte copy).
        let conf = self.cfg.clone();
        let cfg = conf.ws.as_ref().expect("websocket without --ws settings");
        // The upgrade request was encoded here; nothing else uses it until the connection
        // closes.
        self.scratch = Vec::new();
        let hub = self.hub.clone();
        let load = hub.load().get(worker);
        let mut reader = Reader::new(cfg.max_size, deflate);
        let mut writer = Writer::new(deflate);
        let mut out: Vec<u8> = Vec::new();
        // The client message being handed to the worker: where its bytes are, text, offset
        // sent so far.
        let mut pending: Option<(Held, bool, usize)> = None;
        let mut sending = Sending::default();
        // We sent a close frame: the client's answer is awaited until then.
        let mut closing: Option<(Instant, u16)> = None;
        let mut next_ping = cfg.ping_interval.map(|i| Instant::now() + i);
        let mut pong_due: Option<Instant> = None;
        let mut going_away: Option<Instant> = None;
        let mut drained = false;
        // PERF: one timer for the loop's waits, kept from turn to turn while its deadline
        // stays (a new one per turn cost a clock read and an ordered-map insert and remove
        // per message; with the timer-less read below, a 64-byte echo lost two of its three
        // timer registrations per message). With the credits riding on messages too, the
        // front end's CPU per 64-byte echo went from 12.8 to 11.4 µs and the workers' from
        // 8.8 to 7.2 (medians of 3 runs alternating with main, load of `_took` in
        // websocket.py, 2026-12-04).
        let mut nap: Option<(Instant, Pin<Box<crate::deadline::Until>>)> = None;
        let slot_size = match hub.slot_size(worker) {
            Ok(n) => n,
            Err(Lost) => return self.ws_fail(&mut writer, close::INTERNAL_ERROR).await,
        };
        loop {
            // 1. Hand the client's message to the worker while its window allows.
            // MEMORY: in a function of its own, so that its record and offsets, live
            // across its awaits, sit in its state (overlapping the idle wait's) instead of
            // taking room in every state of the loop.
            let hand_on = self.ws_hand_on(sid, worker, slot_size, &mut pending, &mut sending);
            if hand_on.await.is_err() {
                return self.ws_fail(&mut writer, close::INTERNAL_ERROR).await;
            }
            hub.flush(worker);

            // 2. Frames already buffered.
            while pending.is_none() {
                let (used, event) = match reader.read_in_place(&mut self.buf) {
                    // PERF: a message of one uncompressed frame (all of the echo bench's)
                    // is unmasked where it was read and goes to the slot from there; it was
                    // copied into a Vec of its own (allocated per message), then the slot.
                    // benches/e2e/ws_echo.py, 16 KiB: the front end's CPU-µs/msg, medians of
                    // 3, went 26.8 → 26.7 (rounds 22.1–29.9 either way: one 16 KiB memcpy
                    // and a malloc are below this shared machine's noise; under perf the
                    // front end's memmove went 12% → 8% of its samples, the unmask 1% → 4%:
                    // it now takes the cache misses on the freshly read bytes).
                    Ok((used, Read::InPlace { text, at })) if closing.is_none() => {
                        load.ws_message_in(at.len());
                        pending = Some((Held::InBuf { at, used }, text, 0));
                        continue;
                    }
                    Ok((used, Read::InPlace { .. })) => (used, None),
                    Ok((used, Read::Event(event))) => (used, event),
                    Err(v) => {
                        tracing::debug!(peer = %self.peer, code = v.code, reason = v.reason, "websocket protocol error; closing");
                        writer.close(&mut out, v.code, v.reason);
                        let _ = self.write_ws(&mut out).await;
                        if closing.is_none() {
                            hub.notify_ws_disconnect(sid, v.code, "");
                        }
                        return Ended { code: v.code };
                    }
                };
                if used == 0 {
                    break;
                }
                self.buf.drain(..used);
                // Once we sent a close, data and pings are read past (RFC 6455 §5.5.1).
                match event {
                    Some(WsIn::Message { text, data }) if closing.is_none() => {
                        load.ws_message_in(data.len());
                        pending = Some((Held::Owned(data), text, 0));
                    }
                    Some(WsIn::Ping(payload)) if closing.is_none() => {
                        writer.pong(&mut out, &payload);
                    }
                    None | Some(WsIn::Message { .. } | WsIn::Ping(_)) => {}
                    Some(WsIn::Pong(_)) => pong_due = None,
                    Some(WsIn::Close(c)) => {
                        let (code, reason) = c.map_or((close::NO_STATUS, String::new()), |c| c);
                        if let Some((_, sent)) = closing {
                            // The answer to our close: the handshake is complete.
                            return Ended { code: sent };
                        }
                        // RFC 6455 §5.5.1: answer with a close frame, echoing the code.
                        writer.close(&mut out, code, "");
                        let _ = self.write_ws(&mut out).await;
                        hub.notify_ws_disconnect(sid, code, &reason);
                        return Ended { code };
                    }
                }
            }

            // 3. Control frames (pongs) queued above go out now.
            if let Err(code) = self.write_ws(&mut out).await {
                hub.notify_ws_disconnect(sid, code, "");
                return Ended { code };
            }

            // 4. Wait for the worker, the client, a timer or the drain. An idle WebSocket
            // holds no read buffer (it goes back to the thread's pool, bufpool.rs) and no
            // outsized write buffer.
            if self.buf.is_empty() && self.buf.capacity() > 0 {
                bufpool::put(std::mem::take(&mut self.buf));
            }
            if out.is_empty() {
                out = Vec::new();
            }
            hub.ws_idle(sid);
            let timer = [next_ping, pong_due, closing.map(|(t, _)| t), going_away]
                .into_iter()
                .flatten()
                .min();
            match (timer, &nap) {
                (Some(t), Some((armed, _))) if *armed == t => {}
                (Some(t), _) => nap = Some((t, Box::pin(crate::deadline::until(t)))),
                (None, _) => nap = None,
            }
            let read = pending.is_none();
            let step = if read && self.sock.buffered() {
                Step::Readable
            } else {
                let sleep = async {
                    match nap.as_mut() {
                        Some((_, until)) => until.await,
                        None => std::future::pending().await,
                    }
                };
                monoio::select! {
                    ev = hub.ws_event(sid, pending.is_some()) => Step::Worker(ev.map(Box::new)),
                    _ = self.sock.readable(), if read => Step::Readable,
                    _ = sleep => Step::Timer,
                    _ = hub.drained(), if !drained => Step::Drain,
                }
            };
            if matches!(step, Step::Timer) {
                nap = None; // fired: the next turn arms the next deadline
            }
            match step {
                Step::Worker(None) => {}
                Step::Worker(Some(ev)) => {
                    // Boxed: see write_frame (an allocation per app event, against 0.6
                    // KiB per idle WebSocket).
                    let from_app =
                        self.ws_from_app(*ev, sid, worker, &mut writer, &mut sending, &mut closing);
                    if let Some(ended) = Box::pin(from_app).await {
                        return ended;
                    }
                }
                // Boxed for its moment, like the app's events: the read is 408 bytes of
                // future, which inline would be the largest state of the loop and so size
                // every idle WebSocket's task (an allocation per read, against 112 bytes
                // per open WebSocket).
                Step::Readable => match Box::pin(self.read_ready()).await {
                    Ok(()) => {}
                    Err(_) => {
                        let code = closing.map_or(close::ABNORMAL, |(_, c)| c);
                        if closing.is_none() {
                            hub.notify_ws_disconnect(sid, close::ABNORMAL, "");
                        }
                        return Ended { code };
                    }
                },
                Step::Drain => {
                    drained = true;
                    let until = Instant::now() + cfg.graceful;
                    // One line for them all comes from the supervisor, with their number.
                    tracing::debug!(peer = %self.peer, "draining: the open WebSocket gets --timeout-graceful-shutdown ({} s), then close 1001", cfg.graceful.as_secs_f64());
                    going_away = Some(until);
                }
                Step::Timer => {
                    let now = Instant::now();
                    if let Some((t, code)) = closing {
                        if now >= t {
                            tracing::debug!(peer = %self.peer, "no close frame from the client in answer to ours; dropping the connection");
                            return Ended { code };
                        }
                    }
                    if going_away.is_some_and(|t| now >= t) && closing.is_none() {
                        hub.notify_ws_disconnect(sid, close::GOING_AWAY, "");
                        writer.close(&mut out, close::GOING_AWAY, "server shutting down");
                        let _ = self.write_ws(&mut out).await;
                        closing = Some((
                            now + CLOSE_WAIT.min(Duration::from_secs(1)),
                            close::GOING_AWAY,
                        ));
                        going_away = None;
                    }
                    if pending.is_some() {
                        // The socket is not read while the app catches up: a pong could not
                        // be seen, so keep-alive waits until reading resumes.
                        pong_due = None;
                    }
                    if pong_due.is_some_and(|t| now >= t) && closing.is_none() {
                        tracing::debug!(peer = %self.peer, "websocket keep-alive ping unanswered within --ws-ping-timeout; closing with 1011");
                        hub.notify_ws_disconnect(sid, close::INTERNAL_ERROR, "");
                        writer.close(&mut out, close::INTERNAL_ERROR, "keepalive ping timeout");
                        let _ = self.write_ws(&mut out).await;
                        return Ended {
                            code: close::INTERNAL_ERROR,
                        };
                    }
                    if next_ping.is_some_and(|t| now >= t) {
                        next_ping = cfg.ping_interval.map(|i| now + i);
                        if closing.is_none() && pending.is_none() {
                            writer.ping(&mut out, b"");
                            if pong_due.is_none() {
                                pong_due = cfg.ping_timeout.map(|t| now + t);
                            }
                        }
                    }
                }
            }
        }
    }

    /// Hands the client's pending message to the worker, a slot-sized piece per record,
    /// while the stream's window allows; `Err` when the worker is gone.
    async fn ws_hand_on(
        &mut self,
        sid: StreamId,
        worker: usize,
        slot_size: usize,
        pending: &mut Option<(Held, bool, usize)>,
        sending: &mut Sending,
    ) -> Result<(), Lost> {
        while let Some((held, text, off)) = pending.as_mut() {
            if !self.hub.ws_window_open(sid) {
                break;
            }
            let len = held.byte_len();
            let n = (len - *off).min(slot_size);
            let more = *off + n < len;
            let mut rec = Record::new(Kind::WsMessage, sid).more(more);
            rec.aux = if *text { WS_TEXT } else { 0 };
            // PERF: the send credit rides on the client's next message instead of a
            // `SendCredit` record (and often a doorbell) of its own (ring.rs rule 7):
            // with the worker's credit riding on its sends, 26.7 → 22.8 server
            // CPU-µs/msg for a 64-byte echo (websocket.py `_took` says how measured).
            rec.extra = u64::from(std::mem::take(&mut sending.owed));
            if n > 0 {
                // `take_slot` and `push` inline: waiting here costs `wait_space` alone, not
                // their states with it.
                let slot = loop {
                    match self.hub.take_slot(worker)? {
                        Some(slot) => break slot,
                        None => self.hub.wait_space(worker, Need::Slot).await,
                    }
                };
                let data = match held {
                    Held::Owned(v) => &v[..],
                    Held::InBuf { at, .. } => &self.buf[at.clone()],
                };
                self.hub
                    .write_slot(worker, slot, 0, &data[*off..*off + n])
                    .map_err(|_| Lost)?;
                rec = Record {
                    aux: rec.aux,
                    extra: rec.extra,
                    ..rec.with_slot(slot.get(), n as u32, 0)
                };
            }
            while !self.hub.send(worker, rec)? {
                self.hub.flush(worker);
                self.hub.wait_space(worker, Need::Room).await;
            }
            self.hub.body_sent(sid);
            *off += n;
            if !more {
                if let Some((Held::InBuf { used, .. }, ..)) = pending.take() {
                    self.buf.drain(..used);
                }
            }
        }
        Ok(())
    }

    /// One event from the app's side of an open WebSocket; `Some` when it ends it.
    async fn ws_from_app(
        &mut self,
        ev: Event,
        sid: StreamId,
        worker: usize,
        writer: &mut Writer,
        sending: &mut Sending,
        closing: &mut Option<(Instant, u16)>,
    ) -> Option<Ended> {
        let mut out = Vec::new();
        match ev {
            Event::WsSend { data, text, more } => {
                let len = data.as_ref().map_or(0, SlotLease::len);
                let next = if len <= WS_GATHER_SMALL {
                    self.hub.next_ws_send_now(sid, WS_GATHER_SMALL)
                } else {
                    None
                };
                let mut records = 1;
                let written = if writer.compresses() || next.is_some() {
                    // Under permessage-deflate every message is compressed, a long one
                    // piece by piece into its fragments (RFC 7692 §6.1, §7.2.1); small
                    // ones queued behind this one go out in the same write (`WS_GATHER_*`).
                    let hub = self.hub.clone();
                    let load = hub.load().get(worker);
                    let mut plain = Vec::new();
                    let mut joined = len;
                    sending.encode((writer, load), &mut out, &mut plain, data, (text, more));
                    let mut next = next;
                    while let Some((data, text, more)) = next {
                        joined += data.as_ref().map_or(0, SlotLease::len);
                        sending.encode((writer, load), &mut out, &mut plain, data, (text, more));
                        records += 1;
                        let room = WS_GATHER_MAX.saturating_sub(joined).min(WS_GATHER_SMALL);
                        next = self.hub.next_ws_send_now(sid, room);
                    }
                    self.write_frame(out, None, Some(sid)).await.map(drop)
                } else {
                    // Alone and uncompressed, the record goes out as one frame straight
                    // from the slot (no copy, nothing of the message held here).
                    self.hub.load().get(worker).ws_message_out(len, !more);
                    encode_header(&mut out, !more, false, sending.opcode(text), len, None);
                    sending.fragmenting = more;
                    self.write_frame(out, data, Some(sid)).await.map(drop)
                };
                if let Err(code) = written {
                    self.hub.notify_ws_disconnect(sid, code, "");
                    return Some(Ended { code });
                }
                // Written: the app may send one more record for each (ring.rs rule 7), said
                // on the next client message or once `WS_CREDIT_AT` are owed.
                sending.owed += records;
                if sending.owed >= WS_CREDIT_AT {
                    let credit = Record {
                        aux: std::mem::take(&mut sending.owed),
                        ..Record::new(Kind::SendCredit, sid)
                    };
                    if self.push(worker, credit).await.is_err() {
                        return Some(self.ws_fail(writer, close::INTERNAL_ERROR).await);
                    }
                    self.hub.flush(worker);
                }
                None
            }
            Event::WsClose { code, reason } => {
                let mut raw = Vec::new();
                if let Some(r) = &reason {
                    r.copy_into(&mut raw);
                }
                drop(reason);
                let code = u16::try_from(code)
                    .ok()
                    .filter(|&c| close::is_sendable(c))
                    .unwrap_or(close::NORMAL);
                let reason = std::str::from_utf8(&raw).unwrap_or("");
                writer.close(&mut out, code, reason);
                if self.write_ws(&mut out).await.is_err() {
                    return Some(Ended { code });
                }
                *closing = Some((Instant::now() + CLOSE_WAIT, code));
                None
            }
            Event::WorkerLost => {
                // The supervisor's line about the worker's exit counts them all.
                tracing::debug!(peer = %self.peer, worker, "the worker of an open WebSocket is gone; closing it with 1011");
                let mut w = Writer::new(None);
                w.close(&mut out, close::INTERNAL_ERROR, "worker lost");
                let _ = self.write_ws(&mut out).await;
                Some(Ended {
                    code: close::INTERNAL_ERROR,
                })
            }
            _ => {
                tracing::error!(peer = %self.peer, worker, "worker sent an HTTP record on an open WebSocket; closing it with 1011");
                Some(self.ws_fail(writer, close::INTERNAL_ERROR).await)
            }
        }
    }

    /// Closes with `code` on the front end's initiative, telling the app.
    async fn ws_fail(&mut self, writer: &mut Writer, code: u16) -> Ended {
        let mut out = Vec::new();
        writer.close(&mut out, code, "");
        let _ = self.write_ws(&mut out).await;
        Ended { code }
    }

    /// Writes and empties `out`; `Err` with the code the WebSocket ends with (see
    /// [`write_frame`](Self::write_frame)).
    async fn write_ws(&mut self, out: &mut Vec<u8>) -> Result<(), u16> {
        if out.is_empty() {
            return Ok(());
        }
        let mut back = self.write_frame(std::mem::take(out), None, None).await?;
        back.clear();
        *out = back;
        Ok(())
    }

    /// Writes a frame header and its payload straight from a slot; gives the header's
    /// buffer back. `Err(1006)`: the client is gone; `Err(1011)`: it read nothing for
    /// `--ws-ping-timeout` (a client that never reads would otherwise hold the connection
    /// and the app's `send()` for ever; no close frame can reach it). If the client reads
    /// slower than the app sends, the app's messages on stream `sid` are copied out of
    /// their slots from then on (as in `send_piece`).
    async fn write_frame(
        &mut self,
        header: Vec<u8>,
        data: Option<SlotLease>,
        sid: Option<StreamId>,
    ) -> Result<Vec<u8>, u16> {
        // Boxed: the write and its stall deadline are 900 bytes of future, which inline
        // would size every open WebSocket's state, idle or not. PERF: one allocation per
        // frame written, against 0.9 KiB per idle WebSocket.
        Box::pin(self.write_frame_now(header, data, sid)).await
    }

    async fn write_frame_now(
        &mut self,
        header: Vec<u8>,
        data: Option<SlotLease>,
        mut sid: Option<StreamId>,
    ) -> Result<Vec<u8>, u16> {
        let stall = self.cfg.ws.and_then(|c| c.ping_timeout);
        let frame = Frame::new(header, data, b"");
        let hub = &self.hub;
        let mut fell_behind = || {
            if let Some(sid) = sid.take() {
                hub.copy_responses(sid);
            }
        };
        match self.sock.write_frame(frame, stall, &mut fell_behind).await {
            Ok(prefix) => Ok(prefix),
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                tracing::debug!(peer = %self.peer, "websocket client read nothing for --ws-ping-timeout; dropping it (1011)");
                Err(close::INTERNAL_ERROR)
            }
            Err(_) => Err(close::ABNORMAL),
        }
    }
}

#[cfg(test)]
#[path = "websocket_tests.rs"]
mod tests;
