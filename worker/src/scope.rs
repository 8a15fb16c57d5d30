//! Building the ASGI `http` scope from a request head, with the constant parts and the dict
//! keys made once per worker.

use std::net::SocketAddr;

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString, PyTuple};
use uringapi_protocol::head::RequestView;

/// Interned keys and cached constant values.
pub struct ScopeBuilder {
    pub state: Option<Py<PyDict>>,
    root_path: Py<PyString>,
    root_path_bytes: Vec<u8>,
    keys: Keys,
    http: Py<PyString>,
    scheme_http: Py<PyString>,
    scheme_https: Py<PyString>,
    v10: Py<PyString>,
    v11: Py<PyString>,
}

struct Keys {
    type_: Py<PyString>,
    asgi: Py<PyString>,
    version: Py<PyString>,
    spec_version: Py<PyString>,
    http_version: Py<PyString>,
    method: Py<PyString>,
    scheme: Py<PyString>,
    path: Py<PyString>,
    raw_path: Py<PyString>,
    query_string: Py<PyString>,
    root_path: Py<PyString>,
    headers: Py<PyString>,
    client: Py<PyString>,
    server: Py<PyString>,
    state: Py<PyString>,
    extensions: Py<PyString>,
    pathsend: Py<PyString>,
}

fn s(py: Python<'_>, v: &str) -> Py<PyString> {
    PyString::intern(py, v).unbind()
}

impl ScopeBuilder {
    pub fn new(py: Python<'_>, root_path: String) -> Self {
        Self {
            state: None,
            root_path_bytes: root_path.as_bytes().to_vec(),
            root_path: PyString::new(py, &root_path).unbind(),
            keys: Keys {
                type_: s(py, "type"),
                asgi: s(py, "asgi"),
                version: s(py, "version"),
                spec_version: s(py, "spec_version"),
                http_version: s(py, "http_version"),
                method: s(py, "method"),
                scheme: s(py, "scheme"),
                path: s(py, "path"),
                raw_path: s(py, "raw_path"),
                query_string: s(py, "query_string"),
                root_path: s(py, "root_path"),
                headers: s(py, "headers"),
                client: s(py, "client"),
                server: s(py, "server"),
                state: s(py, "state"),
                extensions: s(py, "extensions"),
                pathsend: s(py, "http.response.pathsend"),
            },
            http: s(py, "http"),
            scheme_http: s(py, "http"),
            scheme_https: s(py, "https"),
            v10: s(py, "1.0"),
            v11: s(py, "1.1"),
        }
    }

    pub fn build<'py>(
        &self,
        py: Python<'py>,
        req: &RequestView<'_>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let k = &self.keys;
        let d = PyDict::new(py);
        d.set_item(&k.type_, &self.http)?;
        let asgi = PyDict::new(py);
        asgi.set_item(&k.version, "3.0")?;
        asgi.set_item(&k.spec_version, "2.4")?;
        d.set_item(&k.asgi, asgi)?;
        d.set_item(
            &k.http_version,
            if req.http_minor == 0 {
                &self.v10
            } else {
                &self.v11
            },
        )?;
        d.set_item(
            &k.method,
            PyString::new(py, &String::from_utf8_lossy(req.method)),
        )?;
        d.set_item(
            &k.scheme,
            if req.https {
                &self.scheme_https
            } else {
                &self.scheme_http
            },
        )?;
        // As uvicorn: path and raw_path include the root path; path is percent-decoded UTF-8.
        let mut raw = Vec::with_capacity(self.root_path_bytes.len() + req.path.len());
        raw.extend_from_slice(&self.root_path_bytes);
        raw.extend_from_slice(req.path);
        let decoded = percent_decode(&raw);
        d.set_item(
            &k.path,
            PyString::new(py, &String::from_utf8_lossy(&decoded)),
        )?;
        d.set_item(&k.raw_path, PyBytes::new(py, &raw))?;
        d.set_item(&k.query_string, PyBytes::new(py, req.query))?;
        d.set_item(&k.root_path, &self.root_path)?;
        let headers = PyList::empty(py);
        for (name, value) in req.headers() {
            headers.append(PyTuple::new(
                py,
                [PyBytes::new(py, name), PyBytes::new(py, value)],
            )?)?;
        }
        d.set_item(&k.headers, headers)?;
        d.set_item(&k.client, addr(py, req.client)?)?;
        d.set_item(&k.server, addr(py, req.server)?)?;
        if let Some(state) = &self.state {
            d.set_item(&k.state, state.bind(py).copy()?)?;
        }
        // The server sends files named by http.response.pathsend itself.
        let ext = PyDict::new(py);
        ext.set_item(&k.pathsend, PyDict::new(py))?;
        d.set_item(&k.extensions, ext)?;
        Ok(d)
    }
}

fn addr<'py>(py: Python<'py>, a: Option<SocketAddr>) -> PyResult<Bound<'py, PyAny>> {
    match a {
        Some(a) => Ok(PyTuple::new(
            py,
            [
                a.ip().to_string().into_pyobject(py)?.into_any(),
                a.port().into_pyobject(py)?.into_any(),
            ],
        )?
        .into_any()),
        None => Ok(py.None().into_bound(py)),
    }
}

/// Percent-decodes a path; malformed escapes stay as they are (as urllib.parse.unquote).
pub fn percent_decode(raw: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    if !raw.contains(&b'%') {
        return std::borrow::Cow::Borrowed(raw);
    }
    let hex = |b: u8| (b as char).to_digit(16).map(|v| v as u8);
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'%' && i + 2 < raw.len() {
            if let (Some(h), Some(l)) = (hex(raw[i + 1]), hex(raw[i + 2])) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(raw[i]);
        i += 1;
    }
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::percent_decode;

    #[test]
    fn percent_decoding_matches_unquote() {
        assert_eq!(&*percent_decode(b"/a%20b"), b"/a b");
        assert_eq!(&*percent_decode(b"/%E2%82%AC"), "/€".as_bytes());
        assert_eq!(&*percent_decode(b"/100%"), b"/100%");
        assert_eq!(&*percent_decode(b"/%zz%4"), b"/%zz%4");
    }
}
