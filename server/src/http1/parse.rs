//! Request head parsing (httparse) plus the RFC 9112 checks httparse leaves to us.
//!
//! Every rejection is a [`HeadError`] with exactly one status code; the connection answers
//! it and closes without looking at the bytes that follow.

use crate::http1::framing::BodyFraming;

/// Limits on a request head (CLI: `--limit-request-*`).
#[derive(Debug, Clone, Copy)]
pub struct HeadLimits {
    /// Longest request line, in bytes (414 past it).
    pub request_line: usize,
    /// Most header fields (431 past it).
    pub fields: usize,
    /// Longest single header field, name + value (431 past it).
    pub field_size: usize,
    /// Whole head, request line and fields (431 past it).
    pub head_size: usize,
}

impl Default for HeadLimits {
    fn default() -> Self {
        Self {
            request_line: 8190,
            fields: 100,
            field_size: 8190,
            head_size: 64 * 1024,
        }
    }
}

/// Why a head was refused. Each maps to one status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    #[error("malformed request line or header field ({0})")]
    Malformed(&'static str),
    #[error("request line longer than {0} bytes")]
    RequestLineTooLong(usize),
    #[error("header block too large")]
    HeadTooLarge,
    #[error("more than {0} header fields")]
    TooManyFields(usize),
    #[error("HTTP version not supported")]
    Version,
    #[error("missing Host header")]
    MissingHost,
    #[error("more than one Host header")]
    DuplicateHost,
    #[error("both Content-Length and Transfer-Encoding")]
    LengthAndChunked,
    #[error("invalid Content-Length")]
    BadContentLength,
    #[error("more than one Content-Length")]
    DuplicateContentLength,
    #[error("unsupported transfer coding")]
    UnsupportedCoding,
}

impl HeadError {
    pub fn status(&self) -> u16 {
        match self {
            // RFC 9112 §3: a request line that cannot be parsed → 400.
            Self::Malformed(_) => 400,
            // RFC 9112 §3: a request-target longer than the server will parse → 414.
            Self::RequestLineTooLong(_) => 414,
            // RFC 6585 §5: header fields too large → 431.
            Self::HeadTooLarge | Self::TooManyFields(_) => 431,
            // RFC 9110 §15.6.6: major version not supported → 505.
            Self::Version => 505,
            // RFC 9112 §3.2: a 1.1 request without exactly one Host → 400.
            Self::MissingHost | Self::DuplicateHost => 400,
            // RFC 9112 §6.1: CL with TE is smuggling bait → 400 and close.
            Self::LengthAndChunked => 400,
            // RFC 9112 §6.3 (5): invalid or conflicting Content-Length → 400.
            Self::BadContentLength | Self::DuplicateContentLength => 400,
            // RFC 9112 §6.1: unknown transfer coding → 501.
            Self::UnsupportedCoding => 501,
        }
    }
}

/// A parsed request head, borrowing the connection's read buffer.
#[derive(Debug)]
pub struct Head<'b> {
    pub method: &'b [u8],
    pub target: &'b [u8],
    pub path: &'b [u8],
    pub query: &'b [u8],
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor: u8,
    pub headers: Vec<(&'b [u8], &'b [u8])>,
    /// Bytes of the head including the blank line.
    pub len: usize,
    pub body: BodyFraming,
    /// The client asked to keep the connection open (1.1 default, 1.0 with keep-alive).
    pub keep_alive: bool,
    pub expect_continue: bool,
}

impl Head<'_> {
    pub fn is_head_method(&self) -> bool {
        self.method == b"HEAD"
    }
}

fn has_token(value: &[u8], token: &str) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

/// Content-Length: 1*DIGIT, no sign, no spaces inside, no overflow (RFC 9110 §8.6).
fn parse_content_length(v: &[u8]) -> Result<u64, HeadError> {
    let v = v.trim_ascii();
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return Err(HeadError::BadContentLength);
    }
    v.iter()
        .try_fold(0u64, |acc, d| {
            acc.checked_mul(10)?.checked_add(u64::from(d - b'0'))
        })
        .ok_or(HeadError::BadContentLength)
}

/// Scans for the end of the head without parsing; used to apply the size limits before
/// httparse runs and to tell "incomplete" from "too large".
fn head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4)
}

/// Parses a head from the start of `buf`. `Ok(None)`: need more bytes.
pub fn parse<'b>(buf: &'b [u8], limits: &HeadLimits) -> Result<Option<Head<'b>>, HeadError> {
    match scan(buf, limits)? {
        Some(end) => parse_complete(&buf[..end], limits).map(Some),
        None => Ok(None),
    }
}

/// Applies the size limits to a possibly incomplete head and finds its end.
/// `Ok(None)`: need more bytes.
pub fn scan(buf: &[u8], limits: &HeadLimits) -> Result<Option<usize>, HeadError> {
    let end = head_end(buf);
    // RFC 9112 §3 / §2.3: enforce the request-line limit even while the line is incomplete.
    let line_len = buf.iter().position(|&b| b == b'\n').unwrap_or(buf.len());
    if line_len > limits.request_line {
        return Err(HeadError::RequestLineTooLong(limits.request_line));
    }
    let Some(end) = end else {
        if buf.len() > limits.head_size {
            return Err(HeadError::HeadTooLarge);
        }
        return Ok(None);
    };
    if end > limits.head_size {
        return Err(HeadError::HeadTooLarge);
    }
    Ok(Some(end))
}

/// Parses a complete head (`buf` ends with its blank line, as found by [`scan`]).
pub fn parse_complete<'b>(buf: &'b [u8], limits: &HeadLimits) -> Result<Head<'b>, HeadError> {
    let end = buf.len();
    let mut storage = vec![httparse::EMPTY_HEADER; limits.fields];
    let mut req = httparse::Request::new(&mut storage);
    let status = httparse::ParserConfig::default().parse_request(&mut req, &buf[..end]);
    match status {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err(HeadError::Malformed("incomplete head")),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(HeadError::TooManyFields(limits.fields))
        }
        Err(httparse::Error::Version) => return Err(version_error(buf)),
        Err(e) => return Err(HeadError::Malformed(error_name(e))),
    }
    let method = req.method.ok_or(HeadError::Malformed("method"))?.as_bytes();
    let target = req.path.ok_or(HeadError::Malformed("target"))?.as_bytes();
    let minor = req.version.ok_or(HeadError::Version)?;
    let mut headers = Vec::with_capacity(req.headers.len());
    let (mut host, mut te, mut cl) = (0, None::<&[u8]>, None::<u64>);
    let (mut conn_close, mut conn_keep, mut expect_continue) = (false, false, false);
    for h in req.headers.iter() {
        let (name, value) = (h.name.as_bytes(), h.value);
        if name.len() + value.len() > limits.field_size {
            return Err(HeadError::HeadTooLarge);
        }
        // RFC 9110 §5.5: NUL, CR and LF are never allowed in a field value. httparse
        // already refuses CR/LF; it lets NUL through.
        if value.contains(&0) {
            return Err(HeadError::Malformed("NUL in field value"));
        }
        if name.eq_ignore_ascii_case(b"host") {
            host += 1;
        } else if name.eq_ignore_ascii_case(b"content-length") {
            // RFC 9112 §6.3 (5): several Content-Length fields are refused, even if equal.
            if cl.is_some() {
                return Err(HeadError::DuplicateContentLength);
            }
            cl = Some(parse_content_length(value)?);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            if te.is_some() {
                // Several TE fields combine into one list; we accept only a single
                // "chunked", so a second field can only be wrong.
                return Err(HeadError::UnsupportedCoding);
            }
            te = Some(value);
        } else if name.eq_ignore_ascii_case(b"connection") {
            conn_close |= has_token(value, "close");
            conn_keep |= has_token(value, "keep-alive");
        } else if name.eq_ignore_ascii_case(b"expect") {
            expect_continue = value.trim_ascii().eq_ignore_ascii_case(b"100-continue");
        }
        headers.push((name, value));
    }
    // RFC 9112 §3.2: a 1.1 request needs exactly one Host; a 1.0 request may have none.
    if host > 1 {
        return Err(HeadError::DuplicateHost);
    }
    if host == 0 && minor == 1 {
        return Err(HeadError::MissingHost);
    }
    let body = match (te, cl) {
        (Some(_), Some(_)) => return Err(HeadError::LengthAndChunked),
        // RFC 9112 §6.1: only "chunked", once and last, is a coding we can frame.
        (Some(te), None) => {
            if !te.trim_ascii().eq_ignore_ascii_case(b"chunked") || minor == 0 {
                return Err(HeadError::UnsupportedCoding);
            }
            BodyFraming::Chunked
        }
        (None, Some(0)) | (None, None) => BodyFraming::None,
        (None, Some(n)) => BodyFraming::Length(n),
    };
    let keep_alive = if minor == 1 {
        !conn_close
    } else {
        conn_keep && !conn_close
    };
    let (path, query) = split_target(target);
    Ok(Head {
        method,
        target,
        path,
        query,
        minor,
        headers,
        len: end,
        body,
        keep_alive,
        expect_continue,
    })
}

/// Splits a request target into path and query. Absolute-form targets
/// (RFC 9112 §3.2.2) keep only their path.
fn split_target(target: &[u8]) -> (&[u8], &[u8]) {
    let mut t = target;
    if let Some(rest) = t
        .strip_prefix(b"http://")
        .or_else(|| t.strip_prefix(b"https://"))
    {
        t = rest
            .iter()
            .position(|&b| b == b'/' || b == b'?')
            .map_or(b"/" as &[u8], |i| &rest[i..]);
        if t.first() == Some(&b'?') {
            // "http://host?q" has an empty path; RFC 9112 §3.2.2 says use "/".
            return (b"/", &t[1..]);
        }
    }
    match t.iter().position(|&b| b == b'?') {
        Some(i) => (&t[..i], &t[i + 1..]),
        None => (t, b""),
    }
}

/// httparse reports any version other than 1.0/1.1 as `Version`; tell a well-formed
/// "HTTP/x.y" (505) from garbage (400).
fn version_error(buf: &[u8]) -> HeadError {
    let line = buf.split(|&b| b == b'\n').next().unwrap_or(b"");
    let v = line
        .trim_ascii_end()
        .rsplit(|&b| b == b' ')
        .next()
        .unwrap_or(b"");
    let ok = v.len() == 8
        && v.starts_with(b"HTTP/")
        && v[5].is_ascii_digit()
        && v[6] == b'.'
        && v[7].is_ascii_digit();
    if ok {
        HeadError::Version
    } else {
        HeadError::Malformed("version")
    }
}

fn error_name(e: httparse::Error) -> &'static str {
    match e {
        httparse::Error::HeaderName => "header name",
        httparse::Error::HeaderValue => "header value",
        httparse::Error::NewLine => "line ending",
        httparse::Error::Status => "status",
        httparse::Error::Token => "method token",
        httparse::Error::TooManyHeaders => "too many headers",
        httparse::Error::Version => "version",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(raw: &str) -> Result<Option<Head<'_>>, HeadError> {
        parse(raw.as_bytes(), &HeadLimits::default())
    }

    #[test]
    fn heads_and_their_framing() {
        let h = p("GET /a/b?x=1 HTTP/1.1\r\nHost: h\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(
            (h.path, h.query, h.minor, h.keep_alive),
            (&b"/a/b"[..], &b"x=1"[..], 1, true)
        );
        assert_eq!(h.body, BodyFraming::None);
        let h = p("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 12\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(h.body, BodyFraming::Length(12));
        let h = p("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(h.body, BodyFraming::Chunked);
        let h = p("GET / HTTP/1.0\r\n\r\n").unwrap().unwrap();
        assert!(!h.keep_alive);
        let h = p("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(h.keep_alive);
        let h = p("GET http://example.com/x?y HTTP/1.1\r\nHost: example.com\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!((h.path, h.query), (&b"/x"[..], &b"y"[..]));
        assert!(p("GET / HTTP/1.1\r\nHost: h\r\n").unwrap().is_none());
    }

    #[test]
    fn refusals_and_their_status() {
        let cases: &[(&str, u16)] = &[
            ("GET / HTTP/1.1\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: +1\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 99999999999999999999999\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
            ("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", 501),
            ("GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n b\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost : h\r\n\r\n", 400),
            ("GET / HTTP/2.0\r\nHost: h\r\n\r\n", 505),
            ("GET / FOO\r\nHost: h\r\n\r\n", 400),
            ("G(T / HTTP/1.1\r\nHost: h\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: h\r\nX: a\0b\r\n\r\n", 400),
        ];
        for (raw, status) in cases {
            let err = p(raw).expect_err(raw);
            assert_eq!(err.status(), *status, "{raw:?} gave {err:?}");
        }
        let long = format!("GET /{} HTTP/1.1\r\n", "a".repeat(9000));
        assert_eq!(p(&long).unwrap_err().status(), 414);
        let many = format!(
            "GET / HTTP/1.1\r\nHost: h\r\n{}\r\n",
            "X: y\r\n".repeat(200)
        );
        assert_eq!(p(&many).unwrap_err().status(), 431);
    }
}
