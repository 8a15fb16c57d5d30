//! Response heads: the worker's status and headers, re-validated, plus the framing headers
//! the front end owns (Content-Length or Transfer-Encoding, Connection, Date, Server).

use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

use uringapi_protocol::head::is_final_status;

use crate::response::{declare_length, BadResponse};

/// How the response body goes on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body at all (HEAD, 204, 304).
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked coding (HTTP/1.1, length unknown up front).
    Chunked,
    /// Body until close (HTTP/1.0, length unknown up front).
    UntilClose,
}

/// What the request said that shapes the response.
#[derive(Debug, Clone, Copy)]
pub struct RequestSide {
    pub minor: u8,
    pub head_method: bool,
    pub keep_alive: bool,
}

impl RequestSide {
    /// During a drain the response says `Connection: close`, so that the client sends its
    /// next request on a new connection (to another server) instead of on this one, which
    /// closes after the response (RFC 9112 §9.6), racing that request.
    pub fn closing_if(self, draining: bool) -> Self {
        Self {
            keep_alive: self.keep_alive && !draining,
            ..self
        }
    }
}

/// Options for the headers the front end adds.
#[derive(Debug, Clone, Copy)]
pub struct HeaderOptions {
    pub date: bool,
    pub server: bool,
    /// `--header` lines, encoded once at start-up (`name: value\r\n` each), written into
    /// every response after Server and Date.
    pub extra: &'static [u8],
}

impl HeaderOptions {
    /// The fields the front end puts in every response, its own answers and the 101 of a
    /// WebSocket too: Server, Date, then the `--header` lines.
    pub fn write_fields(&self, out: &mut Vec<u8>) {
        if self.server {
            out.extend_from_slice(b"server: uringapi\r\n");
        }
        if self.date {
            out.extend_from_slice(b"date: ");
            with_date(|d| out.extend_from_slice(d));
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(self.extra);
    }

    /// These options less the Server and Date fields the app sets itself: the app's own
    /// value is sent (a custom or blank Server is what OWASP advises), once, not beside ours.
    pub fn yielding_to<'a>(mut self, app: impl IntoIterator<Item = &'a [u8]>) -> Self {
        for name in app {
            if name.eq_ignore_ascii_case(b"server") {
                self.server = false;
            } else if name.eq_ignore_ascii_case(b"date") {
                self.date = false;
            }
        }
        self
    }

    /// Encodes `--header` pairs (already checked by the CLI) for [`HeaderOptions::extra`].
    /// The bytes live as long as the process: the configuration never changes.
    pub fn encode_extra(pairs: &[(String, String)]) -> &'static [u8] {
        let mut out = Vec::new();
        for (name, value) in pairs {
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        Box::leak(out.into_boxed_slice())
    }
}

/// The outcome of encoding a head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Encoded {
    pub framing: Framing,
    /// Whether the connection stays open after this response.
    pub keep_alive: bool,
}

pub(crate) use uringapi_protocol::head::is_tchar;

/// The reason phrase of a status line: RFC 9110's names for the statuses our own answers
/// and most apps use, the `http` crate's table of registered codes for the rest, and none
/// (allowed by RFC 9112 §4) for an unregistered code.
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        206 => "Partial Content",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        422 => "Unprocessable Content",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => http::StatusCode::from_u16(status)
            .ok()
            .and_then(|code| code.canonical_reason())
            .unwrap_or(""),
    }
}

/// Writes the head for a worker's response into `out`.
///
/// `complete_len` is `Some(n)` when the whole body (n bytes) is already known, so a
/// Content-Length can be given even when the app set none.
pub fn response_head(
    status: u16,
    headers: &[(&[u8], &[u8])],
    req: RequestSide,
    complete_len: Option<u64>,
    opts: HeaderOptions,
    out: &mut Vec<u8>,
) -> Result<Encoded, BadResponse> {
    if !is_final_status(status) {
        return Err(BadResponse::Status(status));
    }
    // RFC 9110 §15.3.6: a 205 has no content either, but unlike 204 and 304 a client does
    // not know that from the status (RFC 9112 §6.3): it gets `content-length: 0`.
    let no_body_status = matches!(status, 204 | 205 | 304);
    let mut app_length = None;
    let mut app_close = false;
    for (name, value) in headers {
        if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
            return Err(BadResponse::Name(
                String::from_utf8_lossy(name).into_owned(),
            ));
        }
        if value.iter().any(|&b| b == b'\r' || b == b'\n' || b == 0) {
            return Err(BadResponse::Value(
                String::from_utf8_lossy(name).into_owned(),
            ));
        }
        if name.eq_ignore_ascii_case(b"content-length") {
            declare_length(&mut app_length, value)?;
        } else if name.eq_ignore_ascii_case(b"connection") {
            app_close |= value
                .split(|&b| b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"));
        }
    }
    let mut keep_alive = req.keep_alive && !app_close;
    let framing = if no_body_status {
        Framing::Empty
    } else if let Some(n) = app_length {
        Framing::Length(n)
    } else if let Some(n) = complete_len {
        Framing::Length(n)
    } else if req.minor >= 1 {
        Framing::Chunked
    } else {
        keep_alive = false;
        Framing::UntilClose
    };

    // RFC 9110 §2.5: answer with the highest version we conform to (1.1), even to a 1.0
    // client; the framing above already keeps to what a 1.0 client understands.
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(itoa3(status).as_slice());
    out.push(b' ');
    out.extend_from_slice(reason(status).as_bytes());
    out.extend_from_slice(b"\r\n");
    opts.yielding_to(headers.iter().map(|&(name, _)| name))
        .write_fields(out);
    for (name, value) in headers {
        // The front end owns framing: the app's Transfer-Encoding is dropped, and its
        // Content-Length is written once below; Connection is ours too.
        if name.eq_ignore_ascii_case(b"transfer-encoding")
            || name.eq_ignore_ascii_case(b"content-length")
            || name.eq_ignore_ascii_case(b"connection")
        {
            continue;
        }
        out.extend_from_slice(name);
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    match framing {
        Framing::Length(n) => {
            out.extend_from_slice(b"content-length: ");
            out.extend_from_slice(n.to_string().as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        Framing::Chunked if !req.head_method => {
            out.extend_from_slice(b"transfer-encoding: chunked\r\n")
        }
        Framing::Empty if status == 304 => {
            if let Some(n) = app_length {
                out.extend_from_slice(format!("content-length: {n}\r\n").as_bytes());
            }
        }
        Framing::Empty if status == 205 => out.extend_from_slice(b"content-length: 0\r\n"),
        _ => {}
    }
    if !keep_alive {
        out.extend_from_slice(b"connection: close\r\n");
    } else if req.minor == 0 {
        out.extend_from_slice(b"connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
    let framing = if req.head_method {
        Framing::Empty
    } else {
        framing
    };
    Ok(Encoded {
        framing,
        keep_alive,
    })
}

/// A short error response the front end makes itself (4xx for bad requests, 502/503/504).
/// To a HEAD request it is the head alone, with the Content-Length a GET would get
/// (RFC 9110 §9.3.2).
pub fn error_response(
    status: u16,
    head_method: bool,
    close: bool,
    opts: HeaderOptions,
    extra: &[(&str, &str)],
) -> Vec<u8> {
    let body = format!("{} {}\n", status, reason(status));
    let mut out = Vec::with_capacity(160);
    // RFC 9110 §2.5: answer with the highest version we conform to (1.1), even to a 1.0
    // client; the framing above already keeps to what a 1.0 client understands.
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(format!("{} {}\r\n", status, reason(status)).as_bytes());
    opts.write_fields(&mut out);
    for (k, v) in extra {
        out.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
    }
    out.extend_from_slice(b"content-type: text/plain; charset=utf-8\r\n");
    out.extend_from_slice(format!("content-length: {}\r\n", body.len()).as_bytes());
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if !head_method {
        out.extend_from_slice(body.as_bytes());
    }
    out
}

fn itoa3(v: u16) -> [u8; 3] {
    [
        b'0' + (v / 100 % 10) as u8,
        b'0' + (v / 10 % 10) as u8,
        b'0' + (v % 10) as u8,
    ]
}

thread_local! {
    static DATE: RefCell<(u64, [u8; 29])> = const { RefCell::new((u64::MAX, [0; 29])) };
}

/// Calls `f` with the IMF-fixdate for now, formatted at most once a second per thread.
pub fn with_date(f: impl FnOnce(&[u8])) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    DATE.with(|cell| {
        let mut c = cell.borrow_mut();
        if c.0 != now {
            c.1 = imf_fixdate(now);
            c.0 = now;
        }
        f(&c.1);
    });
}

/// RFC 9110 §5.6.7 IMF-fixdate, e.g. "Sun, 06 Nov 1994 08:49:37 GMT".
pub fn imf_fixdate(secs: u64) -> [u8; 29] {
    let text = httpdate::fmt_http_date(UNIX_EPOCH + std::time::Duration::from_secs(secs));
    let mut out = [b' '; 29];
    // IMF-fixdate is always 29 bytes for years 1000..=9999 (httpdate's range).
    let n = text.len().min(29);
    out[..n].copy_from_slice(&text.as_bytes()[..n]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_registered_status_has_its_reason_phrase() {
        for (status, phrase) in [
            (200, "OK"),
            (205, "Reset Content"),
            (410, "Gone"),
            (413, "Content Too Large"),
            (416, "Range Not Satisfiable"),
            (426, "Upgrade Required"),
            (451, "Unavailable For Legal Reasons"),
            (511, "Network Authentication Required"),
            (299, ""),
        ] {
            assert_eq!(reason(status), phrase, "{status}");
        }
        for status in 100..=599 {
            let registered = http::StatusCode::from_u16(status)
                .ok()
                .and_then(|c| c.canonical_reason());
            assert_eq!(reason(status).is_empty(), registered.is_none(), "{status}");
        }
    }

    const OPTS: HeaderOptions = HeaderOptions {
        date: false,
        server: false,
        extra: b"",
    };
    const REQ11: RequestSide = RequestSide {
        minor: 1,
        head_method: false,
        keep_alive: true,
    };

    fn head(
        status: u16,
        h: &[(&[u8], &[u8])],
        req: RequestSide,
        len: Option<u64>,
    ) -> (String, Encoded) {
        let mut out = Vec::new();
        let e = response_head(status, h, req, len, OPTS, &mut out).unwrap();
        (String::from_utf8(out).unwrap(), e)
    }

    #[test]
    fn the_date_is_imf_fixdate() {
        assert_eq!(&imf_fixdate(784_111_777), b"Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(
            &imf_fixdate(1_709_210_096),
            b"Thu, 29 Feb 2024 12:34:56 GMT"
        );
    }

    #[test]
    fn only_a_final_status_reaches_the_wire() {
        // A 1xx would leave the client waiting for the final response, then reading the
        // next request's response as this one's; 600 and up are no status (RFC 9110 §15).
        for status in [0, 99, 100, 101, 103, 199, 600, 999] {
            let mut out = Vec::new();
            let res = response_head(status, &[], REQ11, Some(0), OPTS, &mut out);
            assert_eq!(res, Err(BadResponse::Status(status)));
        }
        assert!(head(200, &[], REQ11, Some(0))
            .0
            .starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(head(599, &[], REQ11, Some(0))
            .0
            .starts_with("HTTP/1.1 599 \r\n"));
    }

    #[test]
    fn framing_follows_what_is_known() {
        let (s, e) = head(200, &[(b"content-type", b"text/plain")], REQ11, Some(5));
        assert_eq!(
            s,
            "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 5\r\n\r\n"
        );
        assert_eq!(e.framing, Framing::Length(5));
        let (s, e) = head(200, &[(b"transfer-encoding", b"gzip")], REQ11, None);
        assert_eq!(s, "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n");
        assert_eq!(e.framing, Framing::Chunked);
        let (s, e) = head(
            200,
            &[],
            RequestSide {
                minor: 0,
                head_method: false,
                keep_alive: true,
            },
            None,
        );
        assert_eq!(s, "HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n");
        assert_eq!(
            e,
            Encoded {
                framing: Framing::UntilClose,
                keep_alive: false
            }
        );
        let (s, e) = head(204, &[], REQ11, Some(0));
        assert_eq!(s, "HTTP/1.1 204 No Content\r\n\r\n");
        assert_eq!(e.framing, Framing::Empty);
        let (s, e) = head(205, &[(b"content-length", b"5")], REQ11, Some(5));
        assert_eq!(s, "HTTP/1.1 205 Reset Content\r\ncontent-length: 0\r\n\r\n");
        assert_eq!(e.framing, Framing::Empty);
        let (s, e) = head(
            200,
            &[(b"content-length", b"3")],
            RequestSide {
                head_method: true,
                ..REQ11
            },
            None,
        );
        assert_eq!(s, "HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\n");
        assert_eq!(e.framing, Framing::Empty);
    }

    #[test]
    fn unsafe_heads_are_refused() {
        let mut out = Vec::new();
        type Headers<'a> = &'a [(&'a [u8], &'a [u8])];
        let bad: &[(u16, Headers)] = &[
            (99, &[]),
            (200, &[(b"x\r\ny", b"1")]),
            (200, &[(b"x", b"a\r\nb: c")]),
            (200, &[(b"x", b"a\0")]),
            (200, &[(b"content-length", b"-1")]),
            (200, &[(b"content-length", b"1"), (b"content-length", b"2")]),
        ];
        for (status, h) in bad {
            assert!(
                response_head(*status, h, REQ11, None, OPTS, &mut out).is_err(),
                "{status} {h:?}"
            );
        }
        let twice: Headers = &[(b"content-length", b"3"), (b"content-length", b"4")];
        let err = response_head(200, twice, REQ11, None, OPTS, &mut out).unwrap_err();
        assert_eq!(err.to_string(), "content-length given twice, as 3 and 4");
    }

    #[test]
    fn error_responses_to_head_have_no_body() {
        let get = String::from_utf8(error_response(503, false, true, OPTS, &[])).unwrap();
        let head = String::from_utf8(error_response(503, true, true, OPTS, &[])).unwrap();
        assert!(get.ends_with("\r\n\r\n503 Service Unavailable\n"), "{get}");
        assert!(head.ends_with("\r\n\r\n"), "{head}");
        assert!(head.contains("content-length: 24\r\n"), "{head}");
        assert_eq!(&get[..head.len()], head);
    }
}
