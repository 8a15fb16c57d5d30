//! Request head parsing (httparse) plus the RFC 9112 checks httparse leaves to us.
//!
//! Every rejection is a [`HeadError`] with exactly one status code; the connection answers
//! it and closes without looking at the bytes that follow.

use crate::http1::framing::BodyFraming;

/// Limits on a request head (CLI: `--limit-request-*`).
#[derive(Debug, Clone, Copy)]
pub struct HeadLimits {
    /// Longest request line, in bytes, without its CRLF (414 past it).
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
    #[error("request body framing cannot be trusted ({0})")]
    BadFraming(&'static str),
    #[error("invalid request target ({0})")]
    BadTarget(&'static str),
    #[error("invalid Host header value")]
    BadHost,
    #[error("CONNECT is not supported")]
    Connect,
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
            // RFC 9112 §6.1: a transfer coding we do not implement (chunked being the
            // final one, so the framing itself is sound) → 501.
            Self::UnsupportedCoding => 501,
            // RFC 9112 §6.3 (4): chunked not the final coding → 400 and close (MUST);
            // §6.1: Transfer-Encoding in HTTP/1.0 is faulty framing; §7: chunked applied
            // more than once is not a valid message.
            Self::BadFraming(_) => 400,
            // RFC 9112 §3.2: a request-target in none of the four forms (or a form its
            // method may not use) makes the request line invalid → 400.
            Self::BadTarget(_) => 400,
            // RFC 9112 §3.2: "a Host header field with an invalid field value" → 400.
            Self::BadHost => 400,
            // RFC 9110 §9.3.6, §15.6.2: an ASGI http scope cannot carry a tunnel, so the
            // method is not implemented → 501.
            Self::Connect => 501,
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

/// What the Transfer-Encoding fields say, taken together: several fields are one list
/// (RFC 9110 §5.3), applied in order.
#[derive(Debug, Default)]
struct Codings {
    present: bool,
    /// How many times "chunked" is listed.
    chunked: u32,
    last_chunked: bool,
    /// Any coding other than chunked (gzip, deflate, compress or unknown).
    other: bool,
}

impl Codings {
    fn add(&mut self, value: &[u8]) {
        self.present = true;
        for element in value.split(|&b| b == b',') {
            // transfer-coding = token *( OWS ";" OWS transfer-parameter )
            let name = element.split(|&b| b == b';').next().unwrap_or(b"");
            let name = name.trim_ascii();
            // RFC 9110 §5.6.1: empty list elements are ignored.
            if name.is_empty() {
                continue;
            }
            let chunked = name.eq_ignore_ascii_case(b"chunked");
            self.chunked += u32::from(chunked);
            self.other |= !chunked;
            self.last_chunked = chunked;
        }
    }
}

/// Scans for the end of the head without parsing; used to apply the size limits before
/// httparse runs and to tell "incomplete" from "too large".
fn head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4)
}

/// The empty lines (CRLFs) before the request line: RFC 9112 §2.2 asks a server to ignore
/// them (some clients send one after a request body), and uvicorn ignores any number.
/// httparse skips them too; they still count against the head's size limit.
fn empty_lines(buf: &[u8]) -> usize {
    buf.chunks_exact(2).take_while(|p| *p == b"\r\n").count() * 2
}

/// RFC 9110 §2.5: a request in a later minor version of HTTP/1 (`HTTP/1.2` … `HTTP/1.9`)
/// is to be processed as the highest one we implement, 1.1; httparse knows only 1.0 and
/// 1.1 and would refuse it. Rewrites the minor digit of a well-formed request line in
/// place (so the app sees `http_version` "1.1" and the response says HTTP/1.1); anything
/// else is left to the parser's own errors.
pub fn later_minor_as_1_1(head: &mut [u8]) {
    let start = empty_lines(head);
    let Some(nl) = head[start..].iter().position(|&b| b == b'\n') else {
        return;
    };
    let Some(line_end) = (start + nl).checked_sub(1).filter(|&i| head[i] == b'\r') else {
        return;
    };
    let Some(v) = line_end.checked_sub(9).filter(|&v| v >= start) else {
        return;
    };
    let version = &head[v..line_end];
    if version.starts_with(b" HTTP/1.") && (b'2'..=b'9').contains(&version[8]) {
        head[line_end - 1] = b'1';
    }
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
    let skip = empty_lines(buf);
    let rest = &buf[skip..];
    let end = head_end(rest).map(|end| skip + end);
    // RFC 9112 §3 / §2.3: enforce the request-line limit even while the line is incomplete.
    // The line's length is without its CRLF (as gunicorn counts --limit-request-line).
    let line = &rest[..rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len())];
    let line_len = line.len() - usize::from(line.last() == Some(&b'\r'));
    if line_len > limits.request_line {
        return Err(HeadError::RequestLineTooLong(limits.request_line));
    }
    // RFC 9112 §2.2 lets a recipient accept a bare LF as a line end; we do not (a proxy in
    // front may split lines differently, the stuff of request smuggling), and §5.5 forbids
    // LF inside a field value: 400, at once rather than at the head-read deadline.
    let head = &buf[..end.unwrap_or(buf.len())];
    if head
        .iter()
        .enumerate()
        .any(|(i, &b)| b == b'\n' && (i == 0 || head[i - 1] != b'\r'))
    {
        return Err(HeadError::Malformed("bare LF in the request head"));
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
    // A head has fewer fields than lines: no more room than that, however high the limit
    // (`--limit-request-fields 0` is usize::MAX).
    let lines = buf.iter().filter(|&&b| b == b'\n').count();
    let mut storage = vec![httparse::EMPTY_HEADER; limits.fields.min(lines)];
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
    let Target {
        path,
        query,
        authority,
    } = request_target(method, target)?;
    let mut headers = Vec::with_capacity(req.headers.len());
    let (mut host, mut te, mut cl) = (0, Codings::default(), None::<u64>);
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
            if !valid_authority(value.trim_ascii(), true) {
                return Err(HeadError::BadHost);
            }
            host += 1;
        } else if name.eq_ignore_ascii_case(b"content-length") {
            // RFC 9112 §6.3 (5): several Content-Length fields are refused, even if equal.
            if cl.is_some() {
                return Err(HeadError::DuplicateContentLength);
            }
            cl = Some(parse_content_length(value)?);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            te.add(value);
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
    let body = if te.present {
        // RFC 9112 §6.1: Content-Length beside Transfer-Encoding is smuggling bait.
        if cl.is_some() {
            return Err(HeadError::LengthAndChunked);
        }
        // RFC 9112 §6.1: an HTTP/1.0 message with Transfer-Encoding has faulty framing.
        if minor == 0 {
            return Err(HeadError::BadFraming("Transfer-Encoding in HTTP/1.0"));
        }
        // RFC 9112 §6.3 (4): without chunked last, the body length cannot be known.
        if !te.last_chunked {
            return Err(HeadError::BadFraming("chunked is not the final coding"));
        }
        // RFC 9112 §6.1: a sender MUST NOT apply chunked more than once.
        if te.chunked > 1 {
            return Err(HeadError::BadFraming("chunked more than once"));
        }
        // RFC 9112 §6.1: sound framing, but a coding (gzip, ...) we do not decode.
        if te.other {
            return Err(HeadError::UnsupportedCoding);
        }
        BodyFraming::Chunked
    } else {
        match cl {
            Some(0) | None => BodyFraming::None,
            Some(n) => BodyFraming::Length(n),
        }
    };
    if let Some(authority) = authority {
        // RFC 9112 §3.2.2: with an absolute-form target the server MUST ignore the Host
        // field and use the target's authority, so that is the Host the app sees. (A
        // 1.0 request may have sent none; the app gets one all the same.)
        match headers
            .iter_mut()
            .find(|(n, _)| n.eq_ignore_ascii_case(b"host"))
        {
            Some((_, value)) => *value = authority,
            None => headers.push((b"host", authority)),
        }
    }
    let keep_alive = if minor == 1 {
        !conn_close
    } else {
        conn_keep && !conn_close
    };
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

/// A request target taken apart (RFC 9112 §3.2).
struct Target<'b> {
    path: &'b [u8],
    query: &'b [u8],
    /// The authority of an absolute-form target; it overrides the Host field.
    authority: Option<&'b [u8]>,
}

/// Tells the four forms of request-target apart (RFC 9112 §3.2) and splits the ones an
/// ASGI app can be given into path and query.
fn request_target<'b>(method: &[u8], target: &'b [u8]) -> Result<Target<'b>, HeadError> {
    // RFC 9112 §3.2.3: authority-form is CONNECT's alone, and CONNECT asks for a tunnel.
    if method == b"CONNECT" {
        return Err(HeadError::Connect);
    }
    // RFC 9112 §3.2: no form has a fragment (a client strips it, RFC 9110 §7.1), and
    // every form is ASCII (RFC 3986 §2). httparse lets '#' and bytes >= 0x80 through.
    // The other characters RFC 3986 leaves out ("<>\^`{|}) are accepted: clients in
    // the wild send them unencoded and they cannot change where a path or query ends.
    if target.contains(&b'#') {
        return Err(HeadError::BadTarget("fragment"));
    }
    if !target.is_ascii() {
        return Err(HeadError::BadTarget("non-ASCII byte"));
    }
    // RFC 9112 §3.2.4: asterisk-form, for a server-wide OPTIONS only.
    if target == b"*" {
        if method != b"OPTIONS" {
            return Err(HeadError::BadTarget("'*' is for OPTIONS only"));
        }
        return Ok(Target {
            path: target,
            query: b"",
            authority: None,
        });
    }
    // RFC 9112 §3.2.1: origin-form = absolute-path [ "?" query ].
    if target.first() == Some(&b'/') {
        let (path, query) = split_query(target);
        return Ok(Target {
            path,
            query,
            authority: None,
        });
    }
    // RFC 9112 §3.2.2: absolute-form = absolute-URI; only http(s) URIs name this server
    // (the scheme is case-insensitive, RFC 3986 §3.1).
    let colon = target
        .iter()
        .position(|&b| b == b':')
        .ok_or(HeadError::BadTarget(
            "neither origin-form nor absolute-form",
        ))?;
    let scheme = &target[..colon];
    if !(scheme.eq_ignore_ascii_case(b"http") || scheme.eq_ignore_ascii_case(b"https")) {
        return Err(HeadError::BadTarget("scheme other than http or https"));
    }
    let rest = target[colon + 1..]
        .strip_prefix(b"//")
        .ok_or(HeadError::BadTarget("absolute URI without an authority"))?;
    let end = rest
        .iter()
        .position(|&b| b == b'/' || b == b'?')
        .unwrap_or(rest.len());
    let authority = &rest[..end];
    // RFC 9110 §4.2.1: an http URI with an empty host is invalid and MUST be rejected;
    // §4.2.4: userinfo ("user@") is to be treated as an error.
    if authority.contains(&b'@') {
        return Err(HeadError::BadTarget("userinfo in the authority"));
    }
    if !valid_authority(authority, false) {
        return Err(HeadError::BadTarget("invalid authority"));
    }
    let (path, query) = match &rest[end..] {
        // RFC 9112 §3.3: an empty path in an absolute-form target is "/".
        [] => (b"/" as &[u8], b"" as &[u8]),
        [b'?', query @ ..] => (b"/" as &[u8], query),
        path_and_query => split_query(path_and_query),
    };
    Ok(Target {
        path,
        query,
        authority: Some(authority),
    })
}

fn split_query(t: &[u8]) -> (&[u8], &[u8]) {
    match t.iter().position(|&b| b == b'?') {
        Some(i) => (&t[..i], &t[i + 1..]),
        None => (t, b""),
    }
}

/// `uri-host [ ":" port ]` (RFC 9110 §7.2, RFC 3986 §3.2.2-3): a bracketed IP literal or
/// a reg-name/IPv4 of unreserved, sub-delims and %-escapes, then an optional all-digit
/// port. `empty_ok`: the Host field may be empty (RFC 9110 §7.2), a URI's host may not.
fn valid_authority(a: &[u8], empty_ok: bool) -> bool {
    if a.is_empty() {
        return empty_ok;
    }
    let (host_ok, rest) = if let Some(inner) = a.strip_prefix(b"[") {
        match inner.iter().position(|&b| b == b']') {
            Some(close) => (
                close > 0
                    && inner[..close]
                        .iter()
                        .all(|&b| b.is_ascii_hexdigit() || b == b':' || b == b'.'),
                &inner[close + 1..],
            ),
            None => (false, &b""[..]),
        }
    } else {
        let end = a.iter().position(|&b| b == b':').unwrap_or(a.len());
        let host = &a[..end];
        let chars_ok = host
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=%".contains(&b));
        (!host.is_empty() && chars_ok && escapes_ok(host), &a[end..])
    };
    let port_ok = match rest {
        [] => true,
        [b':', port @ ..] => port.iter().all(u8::is_ascii_digit),
        _ => false,
    };
    host_ok && port_ok
}

/// Every '%' starts a pct-encoded triplet (RFC 3986 §2.1).
fn escapes_ok(s: &[u8]) -> bool {
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%' {
            match s.get(i + 1..i + 3) {
                Some([h, l]) if h.is_ascii_hexdigit() && l.is_ascii_hexdigit() => i += 3,
                _ => return false,
            }
        } else {
            i += 1;
        }
    }
    true
}

/// httparse reports any version other than 1.0/1.1 as `Version`, and also a line whose
/// tokens are split wrongly (`GE T / HTTP/1.1`, `GET /  HTTP/1.1`). RFC 9112 §3: only a
/// well-formed request-line (method SP target SP "HTTP/x.y") with an unsupported version
/// gets 505; anything else is an invalid request-line → 400.
fn version_error(buf: &[u8]) -> HeadError {
    let line = buf.split(|&b| b == b'\n').next().unwrap_or(b"");
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let parts: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
    let [method, target, v] = parts[..] else {
        return HeadError::Malformed("request line");
    };
    let ok = !method.is_empty()
        && !target.is_empty()
        && v.len() == 8
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
#[path = "parse_tests.rs"]
mod tests;
