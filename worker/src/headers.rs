//! ASGI response headers as the worker takes them from the app, and the encoded head as it
//! goes into a slot.

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyTuple};

use uringapi_protocol::head::is_tchar;

use crate::ResponseHeadTooLarge;

/// A response head (status line and headers) must fit in one shared-memory slot.
pub(crate) fn head_too_large(len: usize, available: usize) -> PyErr {
    ResponseHeadTooLarge::new_err(format!("the response head (status line and headers) needs {len} bytes, but one shared-memory slot holds {available}: send fewer or shorter headers, or raise --slot-size"))
}

/// Copies an encoded response head (from `Worker.encode_head`), if any, to the start of
/// `buf`; returns its length.
pub(crate) fn write_head(buf: &mut [u8], head: Option<&[u8]>) -> PyResult<usize> {
    let Some(head) = head else {
        return Ok(0);
    };
    let Some(dst) = buf.get_mut(..head.len()) else {
        return Err(head_too_large(head.len(), buf.len()));
    };
    dst.copy_from_slice(head);
    Ok(head.len())
}

/// The names and values of ASGI response headers (an iterable of pairs of `bytes`), in
/// order, checked as the app sends them.
pub(crate) fn header_items<'py>(headers: &Bound<'py, PyAny>) -> PyResult<Vec<Bound<'py, PyBytes>>> {
    let mut out = Vec::with_capacity(16);
    // PERF: lists and tuples (what frameworks send) are read by index; iterating them
    // through the iterator protocol made an iterator object per header. With the head
    // checked and encoded once at `http.response.start` (it was checked in Python, then
    // read again here), the thread-0 key as a u64 and no empty list per idle poll,
    // worker_cpu noop went from 5.3 to 4.95 CPU-µs per request
    // (cargo bench -p uringapi-benches --bench worker_cpu).
    if let Ok(list) = headers.cast::<PyList>() {
        for pair in list.iter() {
            header_pair(&pair, &mut out)?;
        }
    } else if let Ok(tuple) = headers.cast::<PyTuple>() {
        for pair in tuple.iter() {
            header_pair(&pair, &mut out)?;
        }
    } else {
        for pair in headers.try_iter()? {
            header_pair(&pair?, &mut out)?;
        }
    }
    Ok(out)
}

/// One header: anything of length 2 whose items are exactly `bytes` (as uvicorn checks).
fn header_pair<'py>(pair: &Bound<'py, PyAny>, out: &mut Vec<Bound<'py, PyBytes>>) -> PyResult<()> {
    let (name, value) = if let Ok(t) = pair.cast::<PyTuple>() {
        if t.len() != 2 {
            return Err(not_a_header(pair));
        }
        (t.get_item(0)?, t.get_item(1)?)
    } else {
        if pair.len()? != 2 {
            return Err(not_a_header(pair));
        }
        (pair.get_item(0)?, pair.get_item(1)?)
    };
    if !(name.is_exact_instance_of::<PyBytes>() && value.is_exact_instance_of::<PyBytes>()) {
        return Err(not_a_header(pair));
    }
    let (name, value) = (name.cast_into::<PyBytes>()?, value.cast_into::<PyBytes>()?);
    check_field(name.as_bytes(), value.as_bytes())?;
    out.push(name);
    out.push(value);
    Ok(())
}

/// A header the app may send: the name a token (RFC 9110 §5.6.2), the value without control
/// characters other than tab (§5.5), so that no value can end the head early or smuggle
/// another header. As uvicorn, a `RuntimeError` in the app's `send()`, before the response
/// counts as started (so the client gets a 500). The front end checks again: the worker is
/// not trusted.
/// PERF: not measurable: worker_cpu noop 2.63 and 2.97 CPU-µs/req with it, 2.66 without
/// (benches/results/ab-header-check-2026-12-06.txt).
fn check_field(name: &[u8], value: &[u8]) -> PyResult<()> {
    if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
        return Err(pyo3::exceptions::PyRuntimeError::new_err(format!(
            "response header name {:?} is not an HTTP token",
            String::from_utf8_lossy(name)
        )));
    }
    if value.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
        return Err(pyo3::exceptions::PyRuntimeError::new_err(format!(
            "response header {:?}: the value has a control character",
            String::from_utf8_lossy(name)
        )));
    }
    Ok(())
}

fn not_a_header(pair: &Bound<'_, PyAny>) -> PyErr {
    let repr = pair
        .repr()
        .map(|r| r.to_string())
        .unwrap_or_else(|_| "?".into());
    pyo3::exceptions::PyTypeError::new_err(format!(
        "response header {repr}: name and value must be bytes"
    ))
}
