//! `uringapi._native`: the worker's end of the shared-memory channels, the ASGI scope built
//! in Rust, and the `uringapi` command line (the front end runs inside the process that
//! `pip install`'s console script starts).
//!
//! The Python glue (`worker/python/uringapi/worker.py`) owns the event loop and the ASGI
//! message flow; this module owns every byte that crosses shared memory.

mod fork;
mod headers;
// Public for the `scope_build` bench (benches/benches/scope_build.rs).
pub mod scope;

use std::sync::Arc;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString, PyTuple};
use uringapi_protocol::doorbell::EventFd;
use uringapi_protocol::head::{
    encode_response_head, is_final_status, response_head_len, RequestView,
};
use uringapi_protocol::record::{NO_SLOT, RESPONSE_WINDOW, WS_CREDIT_AT, WS_TEXT, WS_WINDOW};
use uringapi_protocol::{Kind, Record, Segment, WorkerChannel};

use fork::leave_if_forked;
use headers::{head_too_large, header_items, write_head};

pyo3::create_exception!(
    _native,
    ChannelBroken,
    pyo3::exceptions::PyException,
    "The shared-memory channel to the front end is corrupt or gone."
);
pyo3::create_exception!(
    _native,
    SegmentError,
    pyo3::exceptions::PyException,
    "The inherited shared-memory segment could not be opened."
);
pyo3::create_exception!(
    _native,
    ResponseHeadTooLarge,
    pyo3::exceptions::PyValueError,
    "The response status line and headers do not fit in one shared-memory slot."
);

/// Event kinds returned by `Worker.drain`, mirrored in worker.py.
const EV_REQUEST: u8 = 0;
const EV_BODY: u8 = 1;
const EV_DISCONNECT: u8 = 2;
const EV_CANCEL: u8 = 3;
const EV_WS_CONNECT: u8 = 4;
const EV_WS_MESSAGE: u8 = 5;
const EV_WS_DISCONNECT: u8 = 6;
const EV_WS_CREDIT: u8 = 7;

fn broken(e: impl std::fmt::Display) -> PyErr {
    ChannelBroken::new_err(e.to_string())
}

/// Keys name a request across all channels: `stream * threads + thread`, where `threads` is
/// the number of front-end threads (channels) in the segment. The key is a Python int: it is
/// a dict key in worker.py and goes back to every call about its request.
// PERF: keys were `thread << 64 | stream`: for every thread but the first, pyo3 (abi3)
// made and read that Python int through several Python number operations, at `drain`,
// `claim` and every `send`. Packed this way a key fits 64 bits (one C call each way) until a
// stream id passes 2^64 / threads. With the worker.py trims of the same change, hello with
// `--threads 2 --workers 2` went from 21.1 to 19.6 server CPU-µs/req, median of 6
// alternating rounds (benches/e2e/ab.py, benches/results/workerfast-2026-12-04-ab.json).
fn key_object(
    py: Python<'_>,
    threads: usize,
    thread: usize,
    stream: u64,
) -> PyResult<Bound<'_, PyAny>> {
    let k = pack_key(threads, thread, stream);
    match u64::try_from(k) {
        Ok(k) => Ok(k.into_pyobject(py)?.into_any()),
        Err(_) => Ok(k.into_pyobject(py)?.into_any()),
    }
}

/// Splits a key (from `key_object`) into thread index and stream id.
fn split_key(key: &Bound<'_, PyAny>, threads: usize) -> PyResult<(usize, u64)> {
    // PERF: the u64 extraction is one C call; a u128 one under abi3 is several Python
    // number operations (and is only needed past 2^64, see `key_object`).
    let k = match key.extract::<u64>() {
        Ok(k) => u128::from(k),
        Err(_) => key.extract::<u128>()?,
    };
    unpack_key(k, threads).ok_or_else(|| PyValueError::new_err("request key out of range"))
}

fn pack_key(threads: usize, thread: usize, stream: u64) -> u128 {
    u128::from(stream) * threads.max(1) as u128 + thread as u128
}

/// The inverse of `pack_key`; None for a key no stream of `threads` threads has.
fn unpack_key(key: u128, threads: usize) -> Option<(usize, u64)> {
    let threads = threads.max(1) as u128;
    let stream = u64::try_from(key / threads).ok()?;
    Some(((key % threads) as usize, stream))
}

/// A worker's end of every channel in its segment.
#[pyclass(unsendable, module = "uringapi._native")]
struct Worker {
    segment: Arc<Segment>,
    channels: Vec<WorkerChannel>,
    /// One doorbell per front-end thread.
    thread_bells: Vec<EventFd>,
    doorbell: EventFd,
    scope: scope::ScopeBuilder,
}

#[pymethods]
impl Worker {
    /// Adopts the inherited segment and eventfds (their numbers come from the environment).
    /// `uds`: the `--uds` path (empty for TCP), each scope's `server` as `(path, None)`.
    #[new]
    #[pyo3(signature = (segment_fd, doorbell_fd, thread_fds, root_path, uds = String::new()))]
    fn new(
        py: Python<'_>,
        segment_fd: i32,
        doorbell_fd: i32,
        thread_fds: Vec<i32>,
        root_path: String,
        uds: String,
    ) -> PyResult<Self> {
        fork::watch();
        // SAFETY: the front end passed us these descriptors for our exclusive use.
        let segment = unsafe { Segment::open(segment_fd) }
            .map_err(|e| SegmentError::new_err(e.to_string()))?;
        let threads = segment.geometry().threads;
        if thread_fds.len() != threads as usize {
            return Err(SegmentError::new_err(format!(
                "segment has {threads} channels but {} thread doorbells were given",
                thread_fds.len()
            )));
        }
        let segment = Arc::new(segment);
        let channels = (0..threads)
            .map(|t| WorkerChannel::new(segment.clone(), t))
            .collect();
        // SAFETY: inherited descriptors, owned by this object from now on.
        let thread_bells = thread_fds
            .into_iter()
            .map(|fd| unsafe { EventFd::from_raw(fd) })
            .collect();
        // SAFETY: as above.
        let doorbell = unsafe { EventFd::from_raw(doorbell_fd) };
        Ok(Self {
            segment,
            channels,
            thread_bells,
            doorbell,
            scope: scope::ScopeBuilder::new(py, root_path, uds)?,
        })
    }

    /// The eventfd the front end rings; register it with `loop.add_reader`.
    #[getter]
    fn doorbell_fd(&self) -> i32 {
        use std::os::fd::AsRawFd;
        self.doorbell.as_raw_fd()
    }

    /// Tells the front end this worker's app has started and may get requests.
    fn set_ready(&self) {
        leave_if_forked();
        self.segment.set_ready(std::process::id());
    }

    /// An outside SIGTERM: ask the front end to replace this worker (segment rule 4).
    fn ask_replacement(&self) {
        leave_if_forked();
        self.segment.ask_replacement();
    }

    /// Whether the front end decided to stop this worker: a SIGTERM now is its own.
    fn stop_requested(&self) -> bool {
        self.segment.stop_requested()
    }

    /// Once the front end decided to stop this worker: the seconds its requests in flight
    /// may still run (what its drain left of the graceful timeout); otherwise None.
    fn stop_grace(&self) -> Option<f64> {
        self.segment.stop_grace().map(|d| d.as_secs_f64())
    }

    /// The lifespan state; each request's scope gets a shallow copy.
    fn set_state(&mut self, py: Python<'_>, state: Bound<'_, PyDict>) -> PyResult<()> {
        leave_if_forked();
        self.scope.set_state(py, state)
    }

    /// Stamps the heartbeat the supervisor watches; `interval` is the beat period in seconds,
    /// so that the beat can also record how late it ran (the event-loop lag).
    fn beat(&self, interval: f64) {
        leave_if_forked();
        self.segment
            .beat(std::time::Duration::from_secs_f64(interval.max(0.0)));
    }

    /// Clears the sleeping flag and any pending doorbell rings.
    fn awake(&self) {
        leave_if_forked();
        self.segment.worker_sleeping().awake();
        self.doorbell.drain();
    }

    /// The consumer's half of ring.rs rule 4: announce sleep, then re-check every request
    /// ring. Returns True if work arrived meanwhile (then the flag is cleared again and the
    /// caller must not sleep).
    fn prepare_sleep(&mut self) -> PyResult<bool> {
        leave_if_forked();
        self.segment.worker_sleeping().prepare_sleep();
        // A wait for space still open after a wake-up (the ring may have come for ring room,
        // not for a slot) needs a new sleep number: the front end rings once per number
        // (ring.rs rule 4), so without it the slot's return would wake nobody.
        if self.segment.worker_wants_space().is_set() {
            self.segment.worker_wants_space().prepare_sleep();
            if self.has_space()? {
                self.segment.worker_sleeping().awake();
                return Ok(true);
            }
        }
        for c in &mut self.channels {
            if c.has_requests().map_err(broken)? {
                self.segment.worker_sleeping().awake();
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Takes every waiting record from every channel and returns them as event tuples:
    /// `(0, key, scope, body, more, claim, window)`, `(1, key, body, more)`, `(2, key)`,
    /// `(3, key)`.
    /// WebSocket streams: `(4, key, scope)` (the upgrade), `(5, key, data, text, more, n)`
    /// (a client message or a piece of one; n sent records written to the client, as for 7), `(6, key, code, reason)` (the client side ended),
    /// `(7, key, n)` (n sent records written to the client: the send window reopens; for
    /// HTTP streams too, response records sent with `more`).
    /// `claim` goes to `claim()` when the request's task starts; `window` is the response
    /// window the front end gave the stream (records with `more` it may have unacknowledged).
    /// For a request, `more` is 2 when the client waits for `100 Continue` before its body
    /// (answer with `send_continue` when the app first asks for the body).
    /// None when nothing waits.
    fn drain<'py>(&mut self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyList>>> {
        leave_if_forked();
        let mut events = None;
        let mut out = |item: Bound<'py, PyTuple>| -> PyResult<()> {
            events.get_or_insert_with(|| PyList::empty(py)).append(item)
        };
        for t in 0..self.channels.len() {
            let mut freed = false;
            while let Some((rec, slot)) = self.channels[t].recv().map_err(broken)? {
                // Every pop makes ring room, even for records without a slot.
                freed = true;
                let k = key_object(py, self.channels.len(), t, rec.stream)?;
                let more = rec.has_more();
                match Kind::from_u8(rec.kind) {
                    Some(Kind::Request) => {
                        let slot = slot.ok_or_else(|| broken("request record without a slot"))?;
                        let chan = &self.channels[t];
                        let bytes = chan.request_bytes(slot, rec.len as usize);
                        let head_len = rec.aux as usize;
                        let view = RequestView::decode(&bytes[..head_len]).map_err(broken)?;
                        let scope = self.scope.build(py, &view)?;
                        let body = PyBytes::new(py, &bytes[head_len..]);
                        let more = match (more, rec.expects_continue()) {
                            (true, true) => 2u8,
                            (true, false) => 1,
                            (false, _) => 0,
                        };
                        let window = rec.response_window();
                        let ev = (EV_REQUEST, k, scope, body, more, rec.extra, window);
                        out(ev.into_pyobject(py)?)?;
                        self.channels[t].free_request_slot(slot);
                        freed = true;
                    }
                    Some(Kind::Body) => {
                        let body = match slot {
                            Some(s) => {
                                let b = PyBytes::new(
                                    py,
                                    self.channels[t].request_bytes(s, rec.len as usize),
                                );
                                self.channels[t].free_request_slot(s);
                                freed = true;
                                b
                            }
                            None => PyBytes::new(py, b""),
                        };
                        out((EV_BODY, k, body, more).into_pyobject(py)?)?;
                    }
                    Some(Kind::WsConnect) => {
                        let slot = slot.ok_or_else(|| broken("websocket record without a slot"))?;
                        let bytes = self.channels[t].request_bytes(slot, rec.len as usize);
                        let head = bytes.get(..rec.aux as usize).unwrap_or(bytes);
                        let view = RequestView::decode(head).map_err(broken)?;
                        let scope = self.scope.build_websocket(py, &view)?;
                        out((EV_WS_CONNECT, k, scope).into_pyobject(py)?)?;
                        self.channels[t].free_request_slot(slot);
                    }
                    Some(Kind::WsMessage) => {
                        let data = match slot {
                            Some(s) => {
                                let b = PyBytes::new(
                                    py,
                                    self.channels[t].request_bytes(s, rec.len as usize),
                                );
                                self.channels[t].free_request_slot(s);
                                b
                            }
                            None => PyBytes::new(py, b""),
                        };
                        let text = rec.aux == WS_TEXT;
                        // The send credit riding on the message (record.rs `WsMessage`).
                        let credit = u32::try_from(rec.extra).unwrap_or(0);
                        out((EV_WS_MESSAGE, k, data, text, more, credit).into_pyobject(py)?)?;
                    }
                    Some(Kind::WsDisconnect) => {
                        // The client's close reason, when it gave one, is in the slot (the
                        // front end checked it is UTF-8; a bad one would read as "").
                        let reason = match slot {
                            Some(s) => {
                                let bytes = self.channels[t].request_bytes(s, rec.len as usize);
                                let r = PyString::new(py, std::str::from_utf8(bytes).unwrap_or(""));
                                self.channels[t].free_request_slot(s);
                                r
                            }
                            None => PyString::new(py, ""),
                        };
                        out((EV_WS_DISCONNECT, k, rec.aux, reason).into_pyobject(py)?)?
                    }
                    Some(Kind::SendCredit) => out((EV_WS_CREDIT, k, rec.aux).into_pyobject(py)?)?,
                    Some(Kind::Disconnect) => out((EV_DISCONNECT, k).into_pyobject(py)?)?,
                    Some(Kind::Cancel) => out((EV_CANCEL, k).into_pyobject(py)?)?,
                    _ => {
                        return Err(broken(format!(
                            "unexpected record kind {} from the front end",
                            rec.kind
                        )))
                    }
                }
            }
            if freed && self.channels[t].front_wants_space() {
                self.thread_bells[t].ring();
            }
        }
        Ok(events)
    }

    /// Writes a response piece. `head` is the encoded head (from `encode_head`) for the
    /// first piece, else None. Returns how many bytes of `body[offset:]` went out (the head,
    /// when given, went out too), or -1 when there is no slot or ring room: wait for space
    /// and call again.
    #[pyo3(signature = (key, head, body, offset, more))]
    fn send(
        &mut self,
        key: &Bound<'_, PyAny>,
        head: Option<&[u8]>,
        body: &Bound<'_, PyAny>,
        offset: usize,
        more: bool,
    ) -> PyResult<i64> {
        leave_if_forked();
        let (t, stream, chan) = self.channel(key, "request")?;
        let body = body_bytes(body)?;
        let body = body.get(offset..).unwrap_or(&[]);
        if !chan.has_room().map_err(broken)? {
            return Ok(-1);
        }
        if head.is_none() && body.is_empty() {
            // The end of a streamed body: a record with no slot.
            chan.send(Record::new(Kind::ResponseBody, stream).more(more))
                .map_err(broken)?;
            self.ring_front(t);
            return Ok(0);
        }
        let Some(slot) = chan.take_slot().map_err(broken)? else {
            return Ok(-1);
        };
        let buf = chan.slot_mut(slot);
        let head_len = match write_head(buf, head) {
            Ok(n) => n,
            Err(e) => {
                chan.untake_slot(slot);
                return Err(e);
            }
        };
        let n = body.len().min(buf.len() - head_len);
        buf[head_len..head_len + n].copy_from_slice(&body[..n]);
        let kind = if head.is_some() {
            Kind::Response
        } else {
            Kind::ResponseBody
        };
        let rec = Record::new(kind, stream)
            .with_slot(slot.get(), (head_len + n) as u32, head_len as u32)
            .more(more || n < body.len());
        chan.send(rec).map_err(broken)?;
        self.ring_front(t);
        Ok(n as i64)
    }

    /// Checks and encodes a response head (`http.response.start`): `headers` is an iterable
    /// of pairs of `bytes`. Raises `TypeError` for a status that is not an int or a header
    /// of another shape, `RuntimeError` for a status outside 200..=599 (101 with `upgrade`,
    /// the WebSocket accept, and only then) or an invalid header, and
    /// `ResponseHeadTooLarge` when the head does not fit a slot. The result goes to `send`
    /// or `send_path` as `head`.
    #[pyo3(signature = (status, headers, upgrade = false))]
    fn encode_head<'py>(
        &self,
        py: Python<'py>,
        status: u16,
        headers: &Bound<'py, PyAny>,
        upgrade: bool,
    ) -> PyResult<Bound<'py, PyBytes>> {
        if upgrade != (status == 101) || !(upgrade || is_final_status(status)) {
            return Err(pyo3::exceptions::PyRuntimeError::new_err(format!(
                "response status {status} is not a final status (200..=599, RFC 9110 §15)"
            )));
        }
        let items = header_items(headers)?;
        let pairs = items
            .chunks_exact(2)
            .map(|p| (p[0].as_bytes(), p[1].as_bytes()));
        let len = response_head_len(pairs.clone());
        let available = self.channels.first().map_or(0, WorkerChannel::slot_size);
        if len > available {
            return Err(head_too_large(len, available));
        }
        PyBytes::new_with(py, len, |buf| {
            encode_response_head(status, pairs, buf)
                .map(|_| ())
                .map_err(|e| ResponseHeadTooLarge::new_err(e.to_string()))
        })
    }

    /// Tells the front end the app failed after its response started. False: no room yet.
    fn abort(&mut self, key: &Bound<'_, PyAny>) -> PyResult<bool> {
        leave_if_forked();
        let (t, stream, _) = self.channel(key, "request")?;
        self.send_bare(t, Record::new(Kind::Abort, stream))
    }

    /// Ends a response with `http.response.pathsend`: the front end sends the file at `path`
    /// (absolute) as the rest of the body. `head` as for `send`. False: no slot or ring
    /// room; wait for space and call again.
    #[pyo3(signature = (key, head, path))]
    fn send_path(
        &mut self,
        key: &Bound<'_, PyAny>,
        head: Option<&[u8]>,
        path: &[u8],
    ) -> PyResult<bool> {
        leave_if_forked();
        self.send_head_and_tail(
            (key, "request"),
            Kind::PathSend,
            head,
            path,
            "pathsend path",
        )
    }

    /// Asks the front end to send `100 Continue` for request `key`. False: no ring room;
    /// wait for space and call again.
    fn send_continue(&mut self, key: &Bound<'_, PyAny>) -> PyResult<bool> {
        leave_if_forked();
        let (t, stream, _) = self.channel(key, "request")?;
        self.send_bare(t, Record::new(Kind::Continue, stream))
    }

    /// Claims request `key` as its task starts (`claim`: from its event; ring.rs rule 9).
    /// False: the front end took it back to run elsewhere; the app must not see it.
    fn claim(&self, key: &Bound<'_, PyAny>, claim: u64) -> PyResult<bool> {
        leave_if_forked();
        let (t, _) = split_key(key, self.channels.len())?;
        let chan = self
            .channels
            .get(t)
            .ok_or_else(|| PyValueError::new_err("unknown request key"))?;
        Ok(chan.claim(claim))
    }

    /// Returns `n` body records of request `key` to the front end's window (the app took
    /// them out of the buffer; body_window.rs in the front end). False: no ring room; wait
    /// for space and call again.
    fn body_credit(&mut self, key: &Bound<'_, PyAny>, n: u32) -> PyResult<bool> {
        leave_if_forked();
        let (t, stream, _) = self.channel(key, "request")?;
        let rec = Record {
            aux: n,
            ..Record::new(Kind::BodyCredit, stream)
        };
        self.send_bare(t, rec)
    }

    /// `websocket.accept`: `head` is `encode_head(101, headers)`, the chosen subprotocol
    /// among the headers as `sec-websocket-protocol`. False: no slot or ring room; wait for
    /// space and call again.
    fn ws_accept(&mut self, key: &Bound<'_, PyAny>, head: &[u8]) -> PyResult<bool> {
        leave_if_forked();
        self.send_head_and_tail(
            (key, "websocket"),
            Kind::WsAccept,
            Some(head),
            &[],
            "accept head",
        )
    }

    /// Sends one record of a WebSocket message: as much of `data[offset:]` as a slot holds
    /// (the rest follows with `more`). Returns the bytes sent, or -1 when there is no slot
    /// or ring room (wait for space and call again). The caller keeps to the send window
    /// (`WS_WINDOW` records until `SendCredit` returns them). `credit`: client messages
    /// the app took that this record returns (instead of a `body_credit` call).
    #[pyo3(signature = (key, data, text, offset, credit = 0))]
    fn ws_send(
        &mut self,
        key: &Bound<'_, PyAny>,
        data: &[u8],
        text: bool,
        offset: usize,
        credit: u32,
    ) -> PyResult<i64> {
        leave_if_forked();
        let (t, stream, chan) = self.channel(key, "websocket")?;
        let data = data.get(offset..).unwrap_or(&[]);
        if !chan.has_room().map_err(broken)? {
            return Ok(-1);
        }
        let aux = if text { WS_TEXT } else { 0 };
        let extra = u64::from(credit);
        if data.is_empty() {
            let rec = Record {
                aux,
                extra,
                ..Record::new(Kind::WsSend, stream)
            };
            chan.send(rec).map_err(broken)?;
            self.ring_front(t);
            return Ok(0);
        }
        let Some(slot) = chan.take_slot().map_err(broken)? else {
            return Ok(-1);
        };
        let buf = chan.slot_mut(slot);
        let n = data.len().min(buf.len());
        buf[..n].copy_from_slice(&data[..n]);
        let rec = Record {
            aux,
            extra,
            ..Record::new(Kind::WsSend, stream)
                .with_slot(slot.get(), n as u32, 0)
                .more(n < data.len())
        };
        chan.send(rec).map_err(broken)?;
        self.ring_front(t);
        Ok(n as i64)
    }

    /// Releases the response-slot pages a past burst touched, on every channel whose load
    /// is light now (protocol's `SlotPool::trim`); how many slots went.
    fn trim_slots(&mut self) -> PyResult<u32> {
        leave_if_forked();
        let mut released = 0;
        for chan in &mut self.channels {
            released += chan.trim_slots().map_err(broken)?;
        }
        Ok(released)
    }

    /// `websocket.close` after accept: `code` and a UTF-8 `reason` (cut to 123 bytes by
    /// the caller). False: no slot or ring room; wait for space and call again.
    fn ws_close(&mut self, key: &Bound<'_, PyAny>, code: u16, reason: &[u8]) -> PyResult<bool> {
        leave_if_forked();
        let (t, stream, chan) = self.channel(key, "websocket")?;
        if !chan.has_room().map_err(broken)? {
            return Ok(false);
        }
        let mut rec = Record {
            aux: u32::from(code),
            ..Record::new(Kind::WsClose, stream)
        };
        if !reason.is_empty() {
            let Some(slot) = chan.take_slot().map_err(broken)? else {
                return Ok(false);
            };
            let n = reason.len().min(123);
            chan.slot_mut(slot)[..n].copy_from_slice(&reason[..n]);
            rec = Record {
                aux: u32::from(code),
                ..rec.with_slot(slot.get(), n as u32, 0)
            };
        }
        chan.send(rec).map_err(broken)?;
        self.ring_front(t);
        Ok(true)
    }

    /// The "wants space" half of rule 4: announce the wait, re-check. True: space is there
    /// already (flag cleared, do not wait).
    fn prepare_space_wait(&mut self) -> PyResult<bool> {
        leave_if_forked();
        self.segment.worker_wants_space().prepare_sleep();
        if self.has_space()? {
            self.segment.worker_wants_space().awake();
            return Ok(true);
        }
        Ok(false)
    }

    /// Whether every channel has a free slot and ring room again.
    fn has_space(&mut self) -> PyResult<bool> {
        leave_if_forked();
        for c in &mut self.channels {
            if !(c.has_space().map_err(broken)? && c.has_room().map_err(broken)?) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn space_done(&self) {
        leave_if_forked();
        self.segment.worker_wants_space().awake();
    }
}

impl Worker {
    /// The channel of request or WebSocket `key` (`what` names which for the error), with
    /// the key split into thread and stream.
    fn channel(
        &mut self,
        key: &Bound<'_, PyAny>,
        what: &str,
    ) -> PyResult<(usize, u64, &mut WorkerChannel)> {
        let (t, stream) = split_key(key, self.channels.len())?;
        let chan = self
            .channels
            .get_mut(t)
            .ok_or_else(|| PyValueError::new_err(format!("unknown {what} key")))?;
        Ok((t, stream, chan))
    }

    /// Sends a record that names no slot. False: no ring room.
    fn send_bare(&mut self, t: usize, rec: Record) -> PyResult<bool> {
        let sent = self.channels[t].send(rec).map_err(broken)?;
        if sent {
            self.ring_front(t);
        }
        Ok(sent)
    }

    /// Sends one record of request or WebSocket `key` (`what` says which) whose slot holds
    /// `head` (`aux` bytes, none when None) then `tail` (`tail_name` names it when it does
    /// not fit). False: no slot or ring room.
    fn send_head_and_tail(
        &mut self,
        (key, what): (&Bound<'_, PyAny>, &str),
        kind: Kind,
        head: Option<&[u8]>,
        tail: &[u8],
        tail_name: &str,
    ) -> PyResult<bool> {
        let (t, stream, chan) = self.channel(key, what)?;
        if !chan.has_room().map_err(broken)? {
            return Ok(false);
        }
        let Some(slot) = chan.take_slot().map_err(broken)? else {
            return Ok(false);
        };
        let buf = chan.slot_mut(slot);
        let head_len = match write_head(buf, head) {
            Ok(n) => n,
            Err(e) => {
                chan.untake_slot(slot);
                return Err(e);
            }
        };
        let Some(dst) = buf.get_mut(head_len..head_len + tail.len()) else {
            chan.untake_slot(slot);
            return Err(PyValueError::new_err(format!(
                "{tail_name} too long for a slot"
            )));
        };
        dst.copy_from_slice(tail);
        let rec = Record::new(kind, stream).with_slot(
            slot.get(),
            (head_len + tail.len()) as u32,
            head_len as u32,
        );
        chan.send(rec).map_err(broken)?;
        self.ring_front(t);
        Ok(true)
    }

    fn ring_front(&self, t: usize) {
        if self.channels[t].front_asleep() {
            self.thread_bells[t].ring();
        }
    }
}

/// The bytes of a `bytes` or `bytearray` body.
fn body_bytes<'a>(obj: &'a Bound<'_, PyAny>) -> PyResult<&'a [u8]> {
    if let Ok(b) = obj.cast::<PyBytes>() {
        return Ok(b.as_bytes());
    }
    Err(pyo3::exceptions::PyTypeError::new_err(format!(
        "response body must be bytes, not {}",
        obj.get_type()
            .name()
            .map(|n| n.to_string())
            .unwrap_or_default()
    )))
}

/// Doorbell writes this process made (for benchmarks).
#[pyfunction]
fn doorbell_rings() -> u64 {
    uringapi_protocol::doorbell::rings_total()
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Worker>()?;
    m.add_function(wrap_pyfunction!(doorbell_rings, m)?)?;
    m.add("ChannelBroken", m.py().get_type::<ChannelBroken>())?;
    m.add("SegmentError", m.py().get_type::<SegmentError>())?;
    m.add(
        "ResponseHeadTooLarge",
        m.py().get_type::<ResponseHeadTooLarge>(),
    )?;
    m.add("EV_REQUEST", EV_REQUEST)?;
    m.add("EV_BODY", EV_BODY)?;
    m.add("EV_DISCONNECT", EV_DISCONNECT)?;
    m.add("EV_CANCEL", EV_CANCEL)?;
    m.add("NO_SLOT", NO_SLOT)?;
    m.add("EV_WS_CONNECT", EV_WS_CONNECT)?;
    m.add("EV_WS_MESSAGE", EV_WS_MESSAGE)?;
    m.add("EV_WS_DISCONNECT", EV_WS_DISCONNECT)?;
    m.add("EV_WS_CREDIT", EV_WS_CREDIT)?;
    m.add("WS_WINDOW", WS_WINDOW)?;
    m.add("RESPONSE_WINDOW", RESPONSE_WINDOW)?;
    m.add("WS_CREDIT_AT", WS_CREDIT_AT)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{pack_key, unpack_key};

    #[test]
    fn keys_round_trip_and_stay_distinct() {
        for threads in [1usize, 2, 3, 64] {
            let mut seen = std::collections::HashSet::new();
            for thread in 0..threads {
                for stream in [0u64, 1, 7, (9 << 32) | 5, u64::MAX / 3, u64::MAX] {
                    let k = pack_key(threads, thread, stream);
                    assert_eq!(unpack_key(k, threads), Some((thread, stream)));
                    assert!(seen.insert(k), "key {k} twice");
                }
            }
        }
        // Up to 2^64 / threads a key is a u64 (the fast conversion).
        assert!(u64::try_from(pack_key(2, 1, (u64::MAX >> 1) - 1)).is_ok());
        assert_eq!(unpack_key(u128::MAX, 2), None);
    }
}
