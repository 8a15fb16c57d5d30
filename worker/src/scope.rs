//! Building the ASGI `http` scope from a request head, with the constant parts and the dict
//! keys made once per worker.

use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString, PyTuple};
use uringapi_protocol::head::RequestView;

/// Request header names common enough to keep one `bytes` object for (names arrive
/// lowercased). Every scope that has one of them shares that object; the others are made
/// per request. A name costs one length comparison per entry to look up. The flag says
/// whether its value tends to repeat from request to request (then the whole `(name,
/// value)` tuple is shared while the value repeats, see `ScopeBuilder::pairs`).
const COMMON_HEADERS: &[(&str, bool)] = &[
    ("host", true),
    ("user-agent", true),
    ("accept", true),
    ("accept-encoding", true),
    ("accept-language", true),
    ("connection", true),
    ("content-type", true),
    ("content-length", false),
    ("cookie", false),
    ("authorization", false),
    ("cache-control", true),
    ("origin", true),
    ("referer", false),
    ("pragma", true),
    ("upgrade-insecure-requests", true),
    ("if-none-match", false),
    ("if-modified-since", false),
    ("x-forwarded-for", true),
    ("x-forwarded-proto", true),
    ("x-forwarded-host", true),
    ("x-real-ip", true),
    ("x-request-id", false),
    ("sec-fetch-site", true),
    ("sec-fetch-mode", true),
    ("sec-fetch-dest", true),
    ("sec-fetch-user", true),
    ("sec-ch-ua", true),
    ("sec-ch-ua-mobile", true),
    ("sec-ch-ua-platform", true),
    ("priority", true),
    ("dnt", true),
    ("te", true),
    ("expect", true),
    ("transfer-encoding", true),
    ("upgrade", true),
    ("range", false),
    ("sec-websocket-key", false),
    ("sec-websocket-version", true),
    ("sec-websocket-extensions", true),
    ("sec-websocket-protocol", true),
];

/// Longest value whose `(name, value)` tuple is kept for the next scope.
const SHARED_VALUE_MAX: usize = 256;

/// Methods that get a shared `str` object.
const COMMON_METHODS: &[&str] = &["GET", "POST", "HEAD", "PUT", "DELETE", "PATCH", "OPTIONS"];

/// Builds ASGI `http` scopes. Everything that is the same in every scope is made once per
/// worker: the dict keys, the constant values, the common header names and methods, and
/// the server address; the client's address string is kept while it repeats.
pub struct ScopeBuilder {
    root_path: Py<PyString>,
    root_path_bytes: Vec<u8>,
    keys: Keys,
    /// Every key of a scope in its final order, holding the constant values and `None` for
    /// the rest. Each scope starts as a copy of it.
    // PERF: copying a dict of 14 keys is one allocation and a copy of its table; inserting
    // them one by one into a new dict resized it three times. With the shared header names,
    // methods and addresses, worker_cpu noop went from 6.4 to 5.6 CPU-µs per request
    // (cargo bench -p uringapi-benches --bench worker_cpu).
    template: Py<PyDict>,
    /// `scope["asgi"]`, copied for each scope (an app may change its copy).
    asgi: Py<PyDict>,
    state: Option<Py<PyDict>>,
    scheme_https: Py<PyString>,
    v10: Py<PyString>,
    v2: Py<PyString>,
    methods: Vec<Py<PyString>>,
    header_names: Vec<Py<PyBytes>>,
    /// Per common header name whose value tends to repeat: the last `(name, value)` tuple
    /// and its value, reused by the next scope with the same value. Tuples and bytes are
    /// immutable, so scopes can share them.
    // PERF: an open WebSocket's scope keeps its headers for the WebSocket's life; sharing
    // host, user-agent, upgrade, connection, origin and sec-websocket-version took about
    // 0.5 KiB off each idle WebSocket's worker memory (tests/e2e/test_idle_websockets.py),
    // and saves two allocations per repeated header on every request.
    pairs: Vec<Option<SharedPair>>,
    /// The last client address string, and the last server address tuple.
    client_ip: Option<(IpAddr, Py<PyString>)>,
    server: Option<(SocketAddr, Py<PyTuple>)>,
    /// `--uds`: every scope's `server`, `(path, None)`.
    unix_server: Option<Py<PyTuple>>,
    /// The last raw path with its `path` and `raw_path` objects, reused while it repeats.
    last_path: Option<SharedPath>,
    /// The `websocket` scope's own keys and values, made once (not per WebSocket: an open
    /// WebSocket keeps its scope for its whole life).
    ws: WsStrings,
    /// The last server certificate (DER) of the tls extension and its PEM `str`, reused
    /// while it repeats: every request over TLS carries it, and it changes only when the
    /// front end reloads its certificate (SIGHUP).
    server_pem: Option<(Box<[u8]>, Py<PyString>)>,
}

/// A header value and the `(name, value)` tuple made for it.
type SharedPair = (Box<[u8]>, Py<PyTuple>);
/// A raw path and the `path` and `raw_path` objects made for it.
type SharedPath = (Box<[u8]>, Py<PyString>, Py<PyBytes>);

struct WsStrings {
    websocket: Py<PyString>,
    ws: Py<PyString>,
    wss: Py<PyString>,
    subprotocols: Py<PyString>,
    http_response: Py<PyString>,
}

struct Keys {
    asgi: Py<PyString>,
    http_version: Py<PyString>,
    method: Py<PyString>,
    scheme: Py<PyString>,
    path: Py<PyString>,
    raw_path: Py<PyString>,
    query_string: Py<PyString>,
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
    /// `uds`: the path of the front end's Unix socket, empty for TCP.
    pub fn new(py: Python<'_>, root_path: String, uds: String) -> PyResult<Self> {
        let asgi = PyDict::new(py);
        asgi.set_item(s(py, "version"), s(py, "3.0"))?;
        asgi.set_item(s(py, "spec_version"), s(py, "2.4"))?;
        let mut b = Self {
            root_path_bytes: root_path.as_bytes().to_vec(),
            root_path: PyString::new(py, &root_path).unbind(),
            keys: Keys {
                asgi: s(py, "asgi"),
                http_version: s(py, "http_version"),
                method: s(py, "method"),
                scheme: s(py, "scheme"),
                path: s(py, "path"),
                raw_path: s(py, "raw_path"),
                query_string: s(py, "query_string"),
                headers: s(py, "headers"),
                client: s(py, "client"),
                server: s(py, "server"),
                state: s(py, "state"),
                extensions: s(py, "extensions"),
                pathsend: s(py, "http.response.pathsend"),
            },
            template: PyDict::new(py).unbind(),
            asgi: asgi.unbind(),
            state: None,
            scheme_https: s(py, "https"),
            v10: s(py, "1.0"),
            v2: s(py, "2"),
            methods: COMMON_METHODS.iter().map(|m| s(py, m)).collect(),
            header_names: COMMON_HEADERS
                .iter()
                .map(|(h, _)| PyBytes::new(py, h.as_bytes()).unbind())
                .collect(),
            pairs: COMMON_HEADERS.iter().map(|_| None).collect(),
            client_ip: None,
            server: None,
            last_path: None,
            ws: WsStrings {
                websocket: s(py, "websocket"),
                ws: s(py, "ws"),
                wss: s(py, "wss"),
                subprotocols: s(py, "subprotocols"),
                http_response: s(py, "websocket.http.response"),
            },
            server_pem: None,
            unix_server: if uds.is_empty() {
                None
            } else {
                Some(
                    PyTuple::new(
                        py,
                        [PyString::new(py, &uds).into_any(), py.None().into_bound(py)],
                    )?
                    .unbind(),
                )
            },
        };
        b.template = b.make_template(py)?;
        Ok(b)
    }

    /// The lifespan state; each scope gets a shallow copy of it.
    pub fn set_state(&mut self, py: Python<'_>, state: Bound<'_, PyDict>) -> PyResult<()> {
        self.state = Some(state.unbind());
        self.template = self.make_template(py)?;
        Ok(())
    }

    fn make_template(&self, py: Python<'_>) -> PyResult<Py<PyDict>> {
        let k = &self.keys;
        let none = py.None();
        let d = PyDict::new(py);
        d.set_item(s(py, "type"), s(py, "http"))?;
        d.set_item(&k.asgi, &none)?;
        d.set_item(&k.http_version, s(py, "1.1"))?;
        d.set_item(&k.method, &none)?;
        d.set_item(&k.scheme, s(py, "http"))?;
        d.set_item(&k.path, &none)?;
        d.set_item(&k.raw_path, &none)?;
        d.set_item(&k.query_string, PyBytes::new(py, b""))?;
        d.set_item(s(py, "root_path"), &self.root_path)?;
        d.set_item(&k.headers, &none)?;
        d.set_item(&k.client, &none)?;
        // A Unix socket's requests carry no server address: uvicorn's `(path, None)`.
        match &self.unix_server {
            Some(server) => d.set_item(&k.server, server)?,
            None => d.set_item(&k.server, &none)?,
        }
        if self.state.is_some() {
            d.set_item(&k.state, &none)?;
        }
        d.set_item(&k.extensions, &none)?;
        Ok(d.unbind())
    }

    pub fn build<'py>(
        &mut self,
        py: Python<'py>,
        req: &RequestView<'_>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let k = &self.keys;
        let d = self.template.bind(py).copy()?;
        d.set_item(&k.asgi, self.asgi.bind(py).copy()?)?;
        if req.http_minor == 0 {
            d.set_item(&k.http_version, &self.v10)?;
        } else if req.http_minor == uringapi_protocol::head::HTTP_2 {
            d.set_item(&k.http_version, &self.v2)?;
        }
        let method = COMMON_METHODS
            .iter()
            .position(|m| m.as_bytes() == req.method);
        match method {
            Some(i) => d.set_item(&k.method, &self.methods[i])?,
            None => d.set_item(
                &k.method,
                PyString::new(py, &String::from_utf8_lossy(req.method)),
            )?,
        }
        if req.https {
            d.set_item(&k.scheme, &self.scheme_https)?;
        }
        // As uvicorn: path and raw_path include the root path; path is percent-decoded UTF-8.
        let raw: Cow<'_, [u8]> = if self.root_path_bytes.is_empty() {
            Cow::Borrowed(req.path)
        } else {
            Cow::Owned([&self.root_path_bytes[..], req.path].concat())
        };
        match &self.last_path {
            Some((last, path, raw_path)) if **last == *raw => {
                d.set_item(&k.path, path.bind(py))?;
                d.set_item(&k.raw_path, raw_path.bind(py))?;
            }
            _ => {
                let decoded = percent_decode(&raw);
                let path = PyString::new(py, &String::from_utf8_lossy(&decoded));
                let raw_path = PyBytes::new(py, &raw);
                d.set_item(&k.path, &path)?;
                d.set_item(&k.raw_path, &raw_path)?;
                if raw.len() <= SHARED_VALUE_MAX {
                    self.last_path = Some((raw.as_ref().into(), path.unbind(), raw_path.unbind()));
                }
            }
        }
        if !req.query.is_empty() {
            d.set_item(&k.query_string, PyBytes::new(py, req.query))?;
        }
        let headers = PyList::empty(py);
        for (name, value) in req.headers() {
            let Some(i) = COMMON_HEADERS
                .iter()
                .position(|(h, _)| h.as_bytes() == name)
            else {
                let pair = [PyBytes::new(py, name), PyBytes::new(py, value)];
                headers.append(PyTuple::new(py, pair)?)?;
                continue;
            };
            if let Some((last, pair)) = &self.pairs[i] {
                if **last == *value {
                    headers.append(pair.bind(py))?;
                    continue;
                }
            }
            let name = self.header_names[i].bind(py).clone();
            let pair = PyTuple::new(py, [name, PyBytes::new(py, value)])?;
            if COMMON_HEADERS[i].1 && value.len() <= SHARED_VALUE_MAX {
                self.pairs[i] = Some((value.into(), pair.clone().unbind()));
            }
            headers.append(pair)?;
        }
        d.set_item(&k.headers, headers)?;
        if let Some(client) = req.client {
            let ip = match &self.client_ip {
                Some((ip, text)) if *ip == client.ip() => text.clone_ref(py),
                _ => {
                    let text = PyString::new(py, &client.ip().to_string()).unbind();
                    self.client_ip = Some((client.ip(), text.clone_ref(py)));
                    text
                }
            };
            d.set_item(&k.client, (ip, client.port()))?;
        }
        if let Some(server) = req.server {
            let tuple = match &self.server {
                Some((addr, tuple)) if *addr == server => tuple.clone_ref(py),
                _ => {
                    let tuple = PyTuple::new(
                        py,
                        [
                            server.ip().to_string().into_pyobject(py)?.into_any(),
                            server.port().into_pyobject(py)?.into_any(),
                        ],
                    )?
                    .unbind();
                    self.server = Some((server, tuple.clone_ref(py)));
                    tuple
                }
            };
            d.set_item(&k.server, tuple)?;
        }
        if let Some(state) = &self.state {
            d.set_item(&k.state, state.bind(py).copy()?)?;
        }
        // The server sends files named by http.response.pathsend itself.
        let ext = PyDict::new(py);
        ext.set_item(&k.pathsend, PyDict::new(py))?;
        // TLS hook: the connection's TLS facts (WebSocket scopes get the same once `wss` lands).
        if let Some(tls) = &req.tls {
            let server_cert = cached_pem(py, &mut self.server_pem, tls.server_cert);
            ext.set_item("tls", tls_extension(py, tls, server_cert)?)?;
        }
        d.set_item(&k.extensions, ext)?;
        Ok(d)
    }
}

impl ScopeBuilder {
    /// The ASGI `websocket` scope (spec 2.4) of an upgrade request the front end checked:
    /// the `http` scope's keys without `method`, scheme `ws`/`wss`, the client's
    /// `subprotocols` in its order, and the `websocket.http.response` extension (denial
    /// responses) instead of pathsend.
    pub fn build_websocket<'py>(
        &mut self,
        py: Python<'py>,
        req: &RequestView<'_>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let d = self.build(py, req)?;
        let w = &self.ws;
        d.set_item(s(py, "type"), &w.websocket)?;
        d.del_item(&self.keys.method)?;
        d.set_item(&self.keys.scheme, if req.https { &w.wss } else { &w.ws })?;
        let subprotocols = PyList::empty(py);
        for (name, value) in req.headers() {
            if name == b"sec-websocket-protocol" {
                for p in String::from_utf8_lossy(value).split(',') {
                    let p = p.trim();
                    if !p.is_empty() {
                        subprotocols.append(p)?;
                    }
                }
            }
        }
        d.set_item(&w.subprotocols, subprotocols)?;
        if let Some(ext) = d.get_item(&self.keys.extensions)? {
            let ext = ext.cast_into::<PyDict>()?;
            ext.del_item(&self.keys.pathsend)?;
            ext.set_item(&w.http_response, PyDict::new(py))?;
        }
        Ok(d)
    }
}

/// The server certificate as a PEM `str` (`None` when the front end sent none), made once
/// while it repeats.
// PERF: a PEM made per request is base64, line breaks and a new 1.4 KiB str for a 1 KiB
// certificate; compared against the last one it is a memcmp and a reference. A TLS
// request's scope went from 3.7 to 1.0-1.5 µs (`small` alone: 0.5-0.7), `cargo bench -p
// uringapi-benches --bench scope_build -- tls`, 2026-12-04, during a CI run on the machine.
fn cached_pem(
    py: Python<'_>,
    cache: &mut Option<(Box<[u8]>, Py<PyString>)>,
    der: &[u8],
) -> Option<Py<PyString>> {
    if der.is_empty() {
        return None;
    }
    match cache {
        Some((last, text)) if **last == *der => Some(text.clone_ref(py)),
        _ => {
            let text = PyString::new(py, &pem(der)).unbind();
            *cache = Some((der.into(), text.clone_ref(py)));
            Some(text)
        }
    }
}

/// The ASGI tls extension from the front end's TLS facts. rustls refuses a client
/// certificate it cannot verify during the handshake, so `client_cert_error` is always None.
fn tls_extension<'py>(
    py: Python<'py>,
    tls: &uringapi_protocol::head::TlsSection<'_>,
    server_cert: Option<Py<PyString>>,
) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("server_cert", server_cert)?;
    let chain: Vec<String> = tls.client_chain.iter().map(|c| pem(c)).collect();
    d.set_item("client_cert_chain", chain)?;
    // The front end wrote the name as UTF-8; anything else is refused, not guessed at.
    let name = match std::str::from_utf8(tls.client_name) {
        Ok("") | Err(_) => None,
        Ok(name) => Some(name),
    };
    d.set_item("client_cert_name", name)?;
    d.set_item("client_cert_error", py.None())?;
    d.set_item("tls_version", tls.version)?;
    d.set_item("cipher_suite", tls.cipher_suite)?;
    Ok(d)
}

/// A DER certificate as PEM text (base64 in 64-character lines).
fn pem(der: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut b64 = String::with_capacity(der.len().div_ceil(3) * 4);
    for chunk in der.chunks(3) {
        let n = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= chunk.len() {
                b64.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                b64.push('=');
            }
        }
    }
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

/// Percent-decodes a path; malformed escapes stay as they are (as urllib.parse.unquote).
pub fn percent_decode(raw: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    percent_encoding::percent_decode(raw).into()
}

#[cfg(test)]
mod tests {
    use super::{pem, percent_decode};

    #[test]
    fn pem_is_base64_in_lines_of_64() {
        assert_eq!(
            pem(b"foobar!"),
            "-----BEGIN CERTIFICATE-----\nZm9vYmFyIQ==\n-----END CERTIFICATE-----\n"
        );
        let long = pem(&[0u8; 60]);
        let lines: Vec<&str> = long.lines().collect();
        assert_eq!(lines[1].len(), 64);
        assert_eq!(lines[2], "AAAAAAAAAAAAAAAA");
    }

    #[test]
    fn percent_decoding_matches_unquote() {
        assert_eq!(&*percent_decode(b"/a%20b"), b"/a b");
        assert_eq!(&*percent_decode(b"/%E2%82%AC"), "/€".as_bytes());
        assert_eq!(&*percent_decode(b"/100%"), b"/100%");
        assert_eq!(&*percent_decode(b"/%zz%4"), b"/%zz%4");
    }
}
