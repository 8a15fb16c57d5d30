//! `uringapi._native`: the worker's end of the shared-memory channels, the ASGI scope built
//! in Rust, and the `uringapi` command line (the front end runs inside the process that
//! `pip install`'s console script starts).
//!
//! The Python glue (`worker/python/uringapi/worker.py`) owns the event loop and the ASGI
//! message flow; this module owns every byte that crosses shared memory.

mod scope;

use std::sync::Arc;

use pyo3::exceptions::{PyOSError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList};
use uringapi_protocol::doorbell::EventFd;
use uringapi_protocol::head::{encode_response_head, RequestView};
use uringapi_protocol::record::NO_SLOT;
use uringapi_protocol::{Kind, Record, Segment, WorkerChannel};

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

fn broken(e: impl std::fmt::Display) -> PyErr {
    ChannelBroken::new_err(e.to_string())
}

/// Keys name a request across all channels: thread index in the high 64 bits, the front
/// end's stream id in the low 64.
fn key(thread: u32, stream: u64) -> u128 {
    (u128::from(thread) << 64) | u128::from(stream)
}

fn split_key(key: u128) -> (usize, u64) {
    ((key >> 64) as usize, key as u64)
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
    #[new]
    fn new(
        py: Python<'_>,
        segment_fd: i32,
        doorbell_fd: i32,
        thread_fds: Vec<i32>,
        root_path: String,
    ) -> PyResult<Self> {
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
            scope: scope::ScopeBuilder::new(py, root_path)?,
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
        self.segment.set_ready(std::process::id());
    }

    /// The lifespan state; each request's scope gets a shallow copy.
    fn set_state(&mut self, py: Python<'_>, state: Bound<'_, PyDict>) -> PyResult<()> {
        self.scope.set_state(py, state)
    }

    /// Stamps the heartbeat the supervisor watches; `interval` is the beat period in seconds,
    /// so that the beat can also record how late it ran (the event-loop lag).
    fn beat(&self, interval: f64) {
        self.segment
            .beat(std::time::Duration::from_secs_f64(interval.max(0.0)));
    }

    /// Clears the sleeping flag and any pending doorbell rings.
    fn awake(&self) {
        self.segment.worker_sleeping().awake();
        self.doorbell.drain();
    }

    /// The consumer's half of ring.rs rule 4: announce sleep, then re-check every request
    /// ring. Returns True if work arrived meanwhile (then the flag is cleared again and the
    /// caller must not sleep).
    fn prepare_sleep(&mut self) -> PyResult<bool> {
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
    /// `(0, key, scope, body, more)`, `(1, key, body, more)`, `(2, key)`, `(3, key)`.
    /// For a request, `more` is 2 when the client waits for `100 Continue` before its body
    /// (answer with `send_continue` when the app first asks for the body).
    fn drain<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let out = PyList::empty(py);
        for t in 0..self.channels.len() {
            let mut freed = false;
            while let Some((rec, slot)) = self.channels[t].recv().map_err(broken)? {
                // Every pop makes ring room, even for records without a slot.
                freed = true;
                let k = key(t as u32, rec.stream);
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
                        out.append((EV_REQUEST, k, scope, body, more))?;
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
                        out.append((EV_BODY, k, body, more))?;
                    }
                    Some(Kind::Disconnect) => out.append((EV_DISCONNECT, k))?,
                    Some(Kind::Cancel) => out.append((EV_CANCEL, k))?,
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
        Ok(out)
    }

    /// Writes a response piece. `head` is `(status, headers)` for the first piece, else
    /// None. Returns how many bytes of `body[offset:]` went out (the head, when given, went
    /// out too), or -1 when there is no slot or ring room: wait for space and call again.
    #[pyo3(signature = (key, head, body, offset, more))]
    fn send(
        &mut self,
        key: u128,
        head: Option<(u16, Bound<'_, PyAny>)>,
        body: &Bound<'_, PyAny>,
        offset: usize,
        more: bool,
    ) -> PyResult<i64> {
        let (t, stream) = split_key(key);
        let chan = self
            .channels
            .get_mut(t)
            .ok_or_else(|| PyValueError::new_err("unknown request key"))?;
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
        let head_len = match write_head(buf, head.as_ref()) {
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

    /// Tells the front end the app failed after its response started. False: no room yet.
    fn abort(&mut self, key: u128) -> PyResult<bool> {
        let (t, stream) = split_key(key);
        let chan = self
            .channels
            .get_mut(t)
            .ok_or_else(|| PyValueError::new_err("unknown request key"))?;
        let sent = chan
            .send(Record::new(Kind::Abort, stream))
            .map_err(broken)?;
        if sent {
            self.ring_front(t);
        }
        Ok(sent)
    }

    /// Ends a response with `http.response.pathsend`: the front end sends the file at `path`
    /// (absolute) as the rest of the body. `head` as for `send`. False: no slot or ring
    /// room; wait for space and call again.
    #[pyo3(signature = (key, head, path))]
    fn send_path(
        &mut self,
        key: u128,
        head: Option<(u16, Bound<'_, PyAny>)>,
        path: &[u8],
    ) -> PyResult<bool> {
        let (t, stream) = split_key(key);
        let chan = self
            .channels
            .get_mut(t)
            .ok_or_else(|| PyValueError::new_err("unknown request key"))?;
        if !chan.has_room().map_err(broken)? {
            return Ok(false);
        }
        let Some(slot) = chan.take_slot().map_err(broken)? else {
            return Ok(false);
        };
        let buf = chan.slot_mut(slot);
        let head_len = match write_head(buf, head.as_ref()) {
            Ok(n) => n,
            Err(e) => {
                chan.untake_slot(slot);
                return Err(e);
            }
        };
        if head_len + path.len() > buf.len() {
            chan.untake_slot(slot);
            return Err(PyValueError::new_err("pathsend path too long for a slot"));
        }
        buf[head_len..head_len + path.len()].copy_from_slice(path);
        let rec = Record::new(Kind::PathSend, stream).with_slot(
            slot.get(),
            (head_len + path.len()) as u32,
            head_len as u32,
        );
        chan.send(rec).map_err(broken)?;
        self.ring_front(t);
        Ok(true)
    }

    /// Asks the front end to send `100 Continue` for request `key`. False: no ring room;
    /// wait for space and call again.
    fn send_continue(&mut self, key: u128) -> PyResult<bool> {
        let (t, stream) = split_key(key);
        let chan = self
            .channels
            .get_mut(t)
            .ok_or_else(|| PyValueError::new_err("unknown request key"))?;
        let sent = chan
            .send(Record::new(Kind::Continue, stream))
            .map_err(broken)?;
        if sent {
            self.ring_front(t);
        }
        Ok(sent)
    }

    /// The "wants space" half of rule 4: announce the wait, re-check. True: space is there
    /// already (flag cleared, do not wait).
    fn prepare_space_wait(&mut self) -> PyResult<bool> {
        self.segment.worker_wants_space().prepare_sleep();
        if self.has_space()? {
            self.segment.worker_wants_space().awake();
            return Ok(true);
        }
        Ok(false)
    }

    /// Whether every channel has a free slot and ring room again.
    fn has_space(&mut self) -> PyResult<bool> {
        for c in &mut self.channels {
            if !(c.has_space().map_err(broken)? && c.has_room().map_err(broken)?) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn space_done(&self) {
        self.segment.worker_wants_space().awake();
    }
}

impl Worker {
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

/// ASGI headers: an iterable of two-item iterables of bytes.
/// Encodes the response head, if any, at the start of `buf`; returns its length.
fn write_head(buf: &mut [u8], head: Option<&(u16, Bound<'_, PyAny>)>) -> PyResult<usize> {
    let Some((status, headers)) = head else {
        return Ok(0);
    };
    let pairs = header_pairs(headers)?;
    let refs: Vec<(&[u8], &[u8])> = pairs
        .iter()
        .map(|(n, v)| (n.as_bytes(), v.as_bytes()))
        .collect();
    encode_response_head(*status, refs.iter().copied(), buf)
        .map_err(|e| ResponseHeadTooLarge::new_err(e.to_string()))
}

fn header_pairs<'py>(
    headers: &Bound<'py, PyAny>,
) -> PyResult<Vec<(Bound<'py, PyBytes>, Bound<'py, PyBytes>)>> {
    let not_pair = || {
        pyo3::exceptions::PyTypeError::new_err("each header must be a (name, value) pair of bytes")
    };
    let as_bytes = |o: Bound<'py, PyAny>| {
        o.cast_into::<PyBytes>().map_err(|_| {
            pyo3::exceptions::PyTypeError::new_err("header names and values must be bytes")
        })
    };
    let mut out = Vec::new();
    for item in headers.try_iter()? {
        let mut parts = item?.try_iter()?;
        let name = parts.next().ok_or_else(not_pair)??;
        let value = parts.next().ok_or_else(not_pair)??;
        if parts.next().is_some() {
            return Err(not_pair());
        }
        out.push((as_bytes(name)?, as_bytes(value)?));
    }
    Ok(out)
}

/// Runs the `uringapi` command line with the GIL released; returns the exit code.
#[pyfunction]
fn run_cli(py: Python<'_>, argv: Vec<String>) -> PyResult<u8> {
    if argv.is_empty() {
        return Err(PyOSError::new_err("argv is empty"));
    }
    let args: Vec<std::ffi::OsString> = argv.into_iter().map(Into::into).collect();
    Ok(py.detach(move || uringapi_server::main_from_args(args)))
}

/// Doorbell writes this process made (for benchmarks).
#[pyfunction]
fn doorbell_rings() -> u64 {
    uringapi_protocol::doorbell::rings_total()
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Worker>()?;
    m.add_function(wrap_pyfunction!(run_cli, m)?)?;
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
    Ok(())
}
