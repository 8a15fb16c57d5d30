//! Encodings of request and response heads inside arena slots.
//!
//! Both are flat, little-endian, length-prefixed byte strings that the reader uses in place
//! (no allocation to decode). The request head is written by the front end and read by the
//! worker; the response head is written by the worker and read — untrusted — by the front
//! end, so its decoder checks every length against the slice it was given and never panics.
//!
//! Request head:
//! ```text
//! u8  http version (0: 1.0, 1: 1.1, HTTP_2: 2)   u8  scheme (0 http, 1 https)
//! u16 method len   u16 path len   u16 query len   u16 header count
//! u16 client port  u16 server port
//! u8  client ip len (0, 4, 16)  u8 server ip len   16 B client ip   16 B server ip
//! method, path, query bytes
//! header count × (u16 name len, u16 value len), then all names and values interleaved
//! [TLS section, when bit 1 of the scheme byte is set (see `TlsSection`)]
//! ```
//! Response head:
//! ```text
//! u16 status   u16 header count   count × (u16 name len, u16 value len, name, value)
//! ```

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The version byte of an HTTP/2 request (the byte is the minor version for HTTP/1.x).
pub const HTTP_2: u8 = 2;

/// A request head to encode: borrowed from the front end's read buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead<'a> {
    pub http_minor: u8,
    pub https: bool,
    pub method: &'a [u8],
    /// The raw path (target up to `?`, or the whole target when there is no `?`).
    pub path: &'a [u8],
    /// The raw query (after `?`), without the `?`.
    pub query: &'a [u8],
    pub client: Option<SocketAddr>,
    pub server: Option<SocketAddr>,
    pub headers: Vec<(&'a [u8], &'a [u8])>,
}

/// Fixed part of an encoded request head.
const REQ_FIXED: usize = 2 + 2 * 6 + 2 + 32;

/// The head does not fit in the slot, or a field exceeds its u16 length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("encoded head needs {needed} bytes, {available} available")]
pub struct TooLarge {
    pub needed: usize,
    pub available: usize,
}

/// A head that does not decode: truncated or with lengths that point past its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed head at byte {at}")]
pub struct Malformed {
    pub at: usize,
}

fn put_u16(out: &mut [u8], at: &mut usize, v: usize) -> Result<(), TooLarge> {
    let v = u16::try_from(v).map_err(|_| TooLarge {
        needed: v,
        available: u16::MAX as usize,
    })?;
    out[*at..*at + 2].copy_from_slice(&v.to_le_bytes());
    *at += 2;
    Ok(())
}

fn put_bytes(out: &mut [u8], at: &mut usize, b: &[u8]) {
    out[*at..*at + b.len()].copy_from_slice(b);
    *at += b.len();
}

fn ip_bytes(addr: Option<SocketAddr>) -> ([u8; 16], u8, u16) {
    let mut raw = [0u8; 16];
    match addr {
        Some(SocketAddr::V4(a)) => {
            raw[..4].copy_from_slice(&a.ip().octets());
            (raw, 4, a.port())
        }
        Some(SocketAddr::V6(a)) => {
            raw.copy_from_slice(&a.ip().octets());
            (raw, 16, a.port())
        }
        None => (raw, 0, 0),
    }
}

impl RequestHead<'_> {
    /// Bytes [`encode`](Self::encode) will write.
    pub fn encoded_len(&self) -> usize {
        REQ_FIXED
            + self.method.len()
            + self.path.len()
            + self.query.len()
            + self
                .headers
                .iter()
                .map(|(n, v)| 4 + n.len() + v.len())
                .sum::<usize>()
    }

    /// Writes the head at the start of `out`; returns the bytes written.
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, TooLarge> {
        let needed = self.encoded_len();
        if needed > out.len() {
            return Err(TooLarge {
                needed,
                available: out.len(),
            });
        }
        let (cip, clen, cport) = ip_bytes(self.client);
        let (sip, slen, sport) = ip_bytes(self.server);
        let mut at = 0;
        out[0] = self.http_minor;
        out[1] = self.https as u8;
        at += 2;
        put_u16(out, &mut at, self.method.len())?;
        put_u16(out, &mut at, self.path.len())?;
        put_u16(out, &mut at, self.query.len())?;
        put_u16(out, &mut at, self.headers.len())?;
        put_u16(out, &mut at, cport as usize)?;
        put_u16(out, &mut at, sport as usize)?;
        out[at] = clen;
        out[at + 1] = slen;
        at += 2;
        put_bytes(out, &mut at, &cip);
        put_bytes(out, &mut at, &sip);
        put_bytes(out, &mut at, self.method);
        put_bytes(out, &mut at, self.path);
        put_bytes(out, &mut at, self.query);
        for (n, v) in &self.headers {
            put_u16(out, &mut at, n.len())?;
            put_u16(out, &mut at, v.len())?;
            // Names go out lowercased: ASGI scopes carry them so, and doing it here costs
            // nothing extra since the bytes are copied anyway.
            for (dst, src) in out[at..at + n.len()].iter_mut().zip(n.iter()) {
                *dst = src.to_ascii_lowercase();
            }
            at += n.len();
            put_bytes(out, &mut at, v);
        }
        debug_assert_eq!(at, needed);
        Ok(at)
    }
}

/// A cursor over untrusted bytes: every read is checked.
struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn bytes(&mut self, n: usize) -> Result<&'a [u8], Malformed> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.buf.len());
        let end = end.ok_or(Malformed { at: self.at })?;
        let b = &self.buf[self.at..end];
        self.at = end;
        Ok(b)
    }

    fn u8(&mut self) -> Result<u8, Malformed> {
        Ok(self.bytes(1)?[0])
    }

    fn u16(&mut self) -> Result<usize, Malformed> {
        let b = self.bytes(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]) as usize)
    }
}

fn addr(raw: &[u8], len: u8, port: usize) -> Option<SocketAddr> {
    let ip = match len {
        4 => IpAddr::V4(Ipv4Addr::new(raw[0], raw[1], raw[2], raw[3])),
        16 => IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(raw).ok()?)),
        _ => return None,
    };
    Some(SocketAddr::new(ip, port as u16))
}

/// A decoded request head, borrowing the slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestView<'a> {
    pub http_minor: u8,
    pub https: bool,
    pub method: &'a [u8],
    pub path: &'a [u8],
    pub query: &'a [u8],
    pub client: Option<SocketAddr>,
    pub server: Option<SocketAddr>,
    /// The connection's TLS facts (the ASGI tls extension); `None` on plain HTTP.
    pub tls: Option<TlsSection<'a>>,
    header_count: usize,
    header_bytes: &'a [u8],
}

impl<'a> RequestView<'a> {
    pub fn decode(buf: &'a [u8]) -> Result<Self, Malformed> {
        let mut r = Reader { buf, at: 0 };
        let http_minor = r.u8()?;
        let scheme = r.u8()?;
        let https = scheme != 0;
        let (ml, pl, ql, hc) = (r.u16()?, r.u16()?, r.u16()?, r.u16()?);
        let (cport, sport) = (r.u16()?, r.u16()?);
        let (clen, slen) = (r.u8()?, r.u8()?);
        let cip = r.bytes(16)?;
        let sip = r.bytes(16)?;
        let method = r.bytes(ml)?;
        let path = r.bytes(pl)?;
        let query = r.bytes(ql)?;
        let header_bytes = &buf[r.at..];
        let mut view = Self {
            http_minor,
            https,
            method,
            path,
            query,
            client: addr(cip, clen, cport),
            server: addr(sip, slen, sport),
            tls: None,
            header_count: hc,
            header_bytes,
        };
        // Validate the header table once so that iteration can stay infallible.
        let mut n = 0;
        for h in view.headers_checked() {
            h?;
            n += 1;
        }
        debug_assert_eq!(n, hc);
        if scheme & SCHEME_TLS_SECTION != 0 {
            let mut end = Reader {
                buf: header_bytes,
                at: 0,
            };
            for _ in 0..hc {
                let (nl, vl) = (end.u16()?, end.u16()?);
                end.bytes(nl + vl)?;
            }
            let base = buf.len() - header_bytes.len() + end.at;
            view.tls = Some(
                TlsSection::decode(&header_bytes[end.at..])
                    .map_err(|m| Malformed { at: base + m.at })?,
            );
        }
        Ok(view)
    }

    pub fn header_count(&self) -> usize {
        self.header_count
    }

    fn headers_checked(&self) -> impl Iterator<Item = Result<(&'a [u8], &'a [u8]), Malformed>> {
        let mut r = Reader {
            buf: self.header_bytes,
            at: 0,
        };
        (0..self.header_count).map(move |_| {
            let (nl, vl) = (r.u16()?, r.u16()?);
            Ok((r.bytes(nl)?, r.bytes(vl)?))
        })
    }

    /// Headers in the order the client sent them (validated by `decode`).
    pub fn headers(&self) -> impl Iterator<Item = (&'a [u8], &'a [u8])> {
        self.headers_checked().map_while(Result::ok)
    }
}

/// Bit of the request head's scheme byte: a TLS section follows the header table. Older
/// readers see a non-zero scheme byte (https) and ignore the bytes after the headers.
pub const SCHEME_TLS_SECTION: u8 = 2;

/// What the front end knows about a TLS connection, appended to each of its request heads
/// (the worker builds the ASGI tls extension from it):
/// ```text
/// u16 TLS version (0x0303, 0x0304)   u16 IANA cipher suite
/// u16 len, server certificate (DER)
/// u16 len, client certificate subject (RFC 4514, UTF-8; empty: none)
/// u8  client chain count, count × (u16 len, certificate DER), leaf first
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSection<'a> {
    pub version: u16,
    pub cipher_suite: u16,
    pub server_cert: &'a [u8],
    pub client_name: &'a [u8],
    pub client_chain: Vec<&'a [u8]>,
}

impl<'a> TlsSection<'a> {
    /// The section's bytes, made once per connection and appended to each request head.
    pub fn encode(&self) -> Result<Vec<u8>, TooLarge> {
        let len = 9
            + self.server_cert.len()
            + self.client_name.len()
            + self.client_chain.iter().map(|c| 2 + c.len()).sum::<usize>();
        let mut out = vec![0u8; len];
        let mut at = 0;
        put_u16(&mut out, &mut at, self.version as usize)?;
        put_u16(&mut out, &mut at, self.cipher_suite as usize)?;
        put_u16(&mut out, &mut at, self.server_cert.len())?;
        put_bytes(&mut out, &mut at, self.server_cert);
        put_u16(&mut out, &mut at, self.client_name.len())?;
        put_bytes(&mut out, &mut at, self.client_name);
        out[at] = u8::try_from(self.client_chain.len()).map_err(|_| TooLarge {
            needed: self.client_chain.len(),
            available: u8::MAX as usize,
        })?;
        at += 1;
        for cert in &self.client_chain {
            put_u16(&mut out, &mut at, cert.len())?;
            put_bytes(&mut out, &mut at, cert);
        }
        debug_assert_eq!(at, len);
        Ok(out)
    }

    /// Decodes a section written by `encode`; every length is checked and nothing may follow.
    pub fn decode(buf: &'a [u8]) -> Result<Self, Malformed> {
        let mut r = Reader { buf, at: 0 };
        let version = r.u16()? as u16;
        let cipher_suite = r.u16()? as u16;
        let n = r.u16()?;
        let server_cert = r.bytes(n)?;
        let n = r.u16()?;
        let client_name = r.bytes(n)?;
        let count = r.u8()?;
        let mut client_chain = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let n = r.u16()?;
            client_chain.push(r.bytes(n)?);
        }
        if r.at != buf.len() {
            return Err(Malformed { at: r.at });
        }
        Ok(Self {
            version,
            cipher_suite,
            server_cert,
            client_name,
            client_chain,
        })
    }
}

/// Whether `b` may appear in a token (RFC 9110 §5.6.2): what a header name is made of. The
/// worker checks the app's response header names with it, and the front end again.
pub fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Whether `status` may end a request as its response: RFC 9110 §15 puts every valid code
/// in 100..=599, and a 1xx is interim (a client goes on waiting for the final one, then
/// takes the next request's response for it). The worker refuses the app any other status
/// and the front end checks again.
pub fn is_final_status(status: u16) -> bool {
    (200..=599).contains(&status)
}

/// Encodes a response head (worker side).
pub fn encode_response_head<'h>(
    status: u16,
    headers: impl ExactSizeIterator<Item = (&'h [u8], &'h [u8])> + Clone,
    out: &mut [u8],
) -> Result<usize, TooLarge> {
    let needed = 4 + headers
        .clone()
        .map(|(n, v)| 4 + n.len() + v.len())
        .sum::<usize>();
    if needed > out.len() {
        return Err(TooLarge {
            needed,
            available: out.len(),
        });
    }
    let mut at = 0;
    put_u16(out, &mut at, status as usize)?;
    put_u16(out, &mut at, headers.len())?;
    for (n, v) in headers {
        put_u16(out, &mut at, n.len())?;
        put_u16(out, &mut at, v.len())?;
        put_bytes(out, &mut at, n);
        put_bytes(out, &mut at, v);
    }
    Ok(at)
}

/// Bytes a response head with these headers takes.
pub fn response_head_len<'h>(headers: impl Iterator<Item = (&'h [u8], &'h [u8])>) -> usize {
    4 + headers.map(|(n, v)| 4 + n.len() + v.len()).sum::<usize>()
}

/// A decoded response head (front end side; the caller re-validates names and values).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseView<'a> {
    pub status: u16,
    pub headers: Vec<(&'a [u8], &'a [u8])>,
}

impl<'a> ResponseView<'a> {
    pub fn decode(buf: &'a [u8]) -> Result<Self, Malformed> {
        let mut r = Reader { buf, at: 0 };
        let status = r.u16()? as u16;
        let count = r.u16()?;
        let mut headers = Vec::with_capacity(count.min(64));
        for _ in 0..count {
            let (nl, vl) = (r.u16()?, r.u16()?);
            headers.push((r.bytes(nl)?, r.bytes(vl)?));
        }
        if r.at != buf.len() {
            return Err(Malformed { at: r.at });
        }
        Ok(Self { status, headers })
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn request_head_round_trips() {
        let head = RequestHead {
            http_minor: 1,
            https: false,
            method: b"POST",
            path: b"/a%20b",
            query: b"x=1&y=2",
            client: Some("127.0.0.1:5000".parse().unwrap()),
            server: Some("[::1]:8000".parse().unwrap()),
            headers: vec![(b"Host", b"example"), (b"x-a", b"1"), (b"X-A", b"2")],
        };
        let mut buf = vec![0u8; 512];
        let n = head.encode(&mut buf).unwrap();
        assert_eq!(n, head.encoded_len());
        let v = RequestView::decode(&buf[..n]).unwrap();
        assert_eq!(v.method, b"POST");
        assert_eq!(v.path, b"/a%20b");
        assert_eq!(v.query, b"x=1&y=2");
        assert_eq!(v.client, head.client);
        assert_eq!(v.server, head.server);
        let hs: Vec<_> = v.headers().collect();
        let want: Vec<(&[u8], &[u8])> = vec![(b"host", b"example"), (b"x-a", b"1"), (b"x-a", b"2")];
        assert_eq!(hs, want);
    }

    #[test]
    fn tls_section_rides_after_the_headers_and_old_readers_see_https() {
        let head = RequestHead {
            http_minor: 1,
            https: true,
            method: b"GET",
            path: b"/",
            query: b"",
            client: None,
            server: None,
            headers: vec![(b"Host", b"example")],
        };
        let tls = TlsSection {
            version: 0x0304,
            cipher_suite: 0x1301,
            server_cert: b"server-der",
            client_name: b"CN=alice",
            client_chain: vec![b"leaf", b"ca"],
        };
        let section = tls.encode().unwrap();
        let mut buf = vec![0u8; head.encoded_len()];
        let n = head.encode(&mut buf).unwrap();
        let plain = RequestView::decode(&buf[..n]).unwrap();
        assert_eq!(plain.tls, None);
        buf.extend_from_slice(&section);
        buf[1] |= SCHEME_TLS_SECTION;
        let v = RequestView::decode(&buf).unwrap();
        assert!(v.https);
        assert_eq!(v.tls.as_ref(), Some(&tls));
        assert_eq!(v.headers().count(), 1);
        // Every truncation of the section is refused, and so is a byte too many.
        for cut in n..buf.len() {
            assert!(RequestView::decode(&buf[..cut]).is_err(), "cut at {cut}");
        }
        buf.push(0);
        assert!(RequestView::decode(&buf).is_err());
    }

    #[test]
    fn a_head_too_large_for_the_slot_is_refused() {
        let head = RequestHead {
            http_minor: 1,
            https: false,
            method: b"GET",
            path: b"/",
            query: b"",
            client: None,
            server: None,
            headers: vec![(b"x", &[b'a'; 100])],
        };
        let mut buf = vec![0u8; 64];
        assert!(head.encode(&mut buf).is_err());
    }

    proptest! {
        #[test]
        fn response_decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = ResponseView::decode(&bytes);
            let _ = RequestView::decode(&bytes);
        }

        #[test]
        fn response_head_round_trips(status in 100u16..600, hs in proptest::collection::vec(
            (proptest::collection::vec(any::<u8>(), 0..20), proptest::collection::vec(any::<u8>(), 0..40)), 0..10)) {
            let pairs: Vec<(&[u8], &[u8])> = hs.iter().map(|(n, v)| (n.as_slice(), v.as_slice())).collect();
            let mut buf = vec![0u8; 4096];
            let n = encode_response_head(status, pairs.iter().copied(), &mut buf).unwrap();
            prop_assert_eq!(n, response_head_len(pairs.iter().copied()));
            let v = ResponseView::decode(&buf[..n]).unwrap();
            prop_assert_eq!(v.status, status);
            prop_assert_eq!(v.headers, pairs);
        }
    }
}
