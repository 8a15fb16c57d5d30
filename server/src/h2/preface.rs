//! Telling an HTTP/2 connection from an HTTP/1.1 one on a plain port: the client preface
//! (RFC 9113 §3.4, "prior knowledge") is a request line no HTTP/1.1 client sends.

/// The client connection preface, RFC 9113 §3.4.
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// What the first bytes of a connection say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sniff {
    /// The whole preface: HTTP/2.
    H2,
    /// A strict beginning of the preface: read more before deciding.
    Partial,
    /// Anything else: HTTP/1.x.
    Http1,
}

pub fn sniff(buf: &[u8]) -> Sniff {
    let n = buf.len().min(PREFACE.len());
    if buf[..n] != PREFACE[..n] {
        Sniff::Http1
    } else if n == PREFACE.len() {
        Sniff::H2
    } else {
        Sniff::Partial
    }
}

/// [`sniff`] where prior knowledge is `allowed` (a fresh plain connection under
/// `--http auto`); HTTP/1.x otherwise.
pub fn sniff_if(allowed: bool, buf: &[u8]) -> Sniff {
    if allowed {
        sniff(buf)
    } else {
        Sniff::Http1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_preface_and_its_beginnings_are_told_from_http1() {
        let cases: &[(&[u8], Sniff)] = &[
            (PREFACE, Sniff::H2),
            (
                b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x12\x04",
                Sniff::H2,
            ),
            (b"PRI * HTTP/2.0\r\n\r\n", Sniff::Partial),
            (b"P", Sniff::Partial),
            (b"POST / HTTP/1.1\r\n", Sniff::Http1),
            (b"PRI * HTTP/1.1\r\n\r\n", Sniff::Http1),
            (b"GET / HTTP/1.1\r\n\r\n", Sniff::Http1),
        ];
        for (bytes, want) in cases {
            assert_eq!(sniff(bytes), *want, "{:?}", String::from_utf8_lossy(bytes));
        }
    }
}
