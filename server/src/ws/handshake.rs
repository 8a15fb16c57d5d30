//! The opening handshake (RFC 6455 §4.2): recognising an upgrade request, checking it, and
//! the 101 answer with `Sec-WebSocket-Accept`.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use sha1::{Digest, Sha1};

/// The GUID that RFC 6455 §1.3 appends to the client's key.
const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// `Sec-WebSocket-Accept` for a client's `Sec-WebSocket-Key`.
pub fn accept_key(key: &str) -> String {
    let mut sha = Sha1::new();
    sha.update(key.trim().as_bytes());
    sha.update(GUID.as_bytes());
    STANDARD.encode(sha.finalize())
}

/// Why an upgrade request cannot be accepted, and how to answer it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Answered 426 with `Sec-WebSocket-Version: 13`.
    #[error("unsupported Sec-WebSocket-Version (only 13)")]
    Version,
    /// Answered 400.
    #[error("WebSocket upgrade without a GET method")]
    Method,
    #[error("missing or malformed Sec-WebSocket-Key")]
    Key,
    #[error("Connection header lacks the upgrade token")]
    Connection,
    /// A body (`Content-Length` other than 0, or any `Transfer-Encoding`): RFC 6455 §4.1
    /// defines none, and the bytes behind the head would be read as frames.
    #[error("WebSocket upgrade request with a body")]
    Body,
}

/// A checked upgrade request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upgrade<'a> {
    /// The client's key, for [`accept_key`].
    pub key: &'a str,
    /// `Sec-WebSocket-Protocol` entries in the client's order.
    pub subprotocols: Vec<&'a str>,
    /// The raw `Sec-WebSocket-Extensions` values, for [`super::deflate::negotiate`].
    pub extensions: Vec<&'a str>,
}

fn has_token(value: &[u8], token: &str) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

/// Whether the request asks for a WebSocket (`Upgrade: websocket`); only then does
/// [`check`] apply, otherwise it is plain HTTP.
pub fn wants_websocket<'h>(headers: impl IntoIterator<Item = (&'h str, &'h [u8])>) -> bool {
    headers
        .into_iter()
        .any(|(n, v)| n.eq_ignore_ascii_case("upgrade") && has_token(v, "websocket"))
}

/// Checks an upgrade request (one that [`wants_websocket`]).
pub fn check<'h>(method: &str, headers: &[(&'h str, &'h [u8])]) -> Result<Upgrade<'h>, Refusal> {
    let mut key = None;
    let mut version_ok = false;
    let mut connection_ok = false;
    let mut body = false;
    let mut subprotocols = Vec::new();
    let mut extensions = Vec::new();
    for &(name, value) in headers {
        let text = std::str::from_utf8(value).ok();
        if name.eq_ignore_ascii_case("sec-websocket-key") {
            key = if key.is_none() {
                text.map(str::trim)
            } else {
                Some("")
            };
        } else if name.eq_ignore_ascii_case("sec-websocket-version") {
            version_ok = value.trim_ascii() == b"13";
        } else if name.eq_ignore_ascii_case("connection") {
            connection_ok |= has_token(value, "upgrade");
        } else if name.eq_ignore_ascii_case("sec-websocket-protocol") {
            let list = text
                .unwrap_or_default()
                .split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty());
            subprotocols.extend(list);
        } else if name.eq_ignore_ascii_case("sec-websocket-extensions") {
            extensions.extend(text);
        } else if name.eq_ignore_ascii_case("content-length") {
            body |= value.trim_ascii() != b"0";
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            body = true;
        }
    }
    if method != "GET" {
        return Err(Refusal::Method);
    }
    if body {
        return Err(Refusal::Body);
    }
    if !version_ok {
        return Err(Refusal::Version);
    }
    if !connection_ok {
        return Err(Refusal::Connection);
    }
    let key = key
        .filter(|k| STANDARD.decode(k).is_ok_and(|raw| raw.len() == 16))
        .ok_or(Refusal::Key)?;
    Ok(Upgrade {
        key,
        subprotocols,
        extensions,
    })
}

/// The 101 answer: `fields` the front end's own header lines (each ending in CRLF),
/// `extension` the negotiated `Sec-WebSocket-Extensions` value and `extra` the app's own
/// headers (already checked for CR/LF by the caller).
pub fn response_head(
    fields: &[u8],
    key: &str,
    subprotocol: Option<&str>,
    extension: Option<&str>,
    extra: &[(&[u8], &[u8])],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(160 + fields.len());
    out.extend_from_slice(b"HTTP/1.1 101 Switching Protocols\r\n");
    out.extend_from_slice(fields);
    out.extend_from_slice(b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ");
    out.extend_from_slice(accept_key(key).as_bytes());
    for (name, value) in [
        ("Sec-WebSocket-Protocol", subprotocol),
        ("Sec-WebSocket-Extensions", extension),
    ] {
        if let Some(value) = value {
            out.extend_from_slice(format!("\r\n{name}: {value}").as_bytes());
        }
    }
    for (name, value) in extra {
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(name);
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
    }
    out.extend_from_slice(b"\r\n\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    type Headers = Vec<(&'static str, &'static [u8])>;

    #[test]
    fn accept_key_matches_rfc_6455_example() {
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn check_table() {
        let key: (&str, &[u8]) = ("Sec-WebSocket-Key", b"dGhlIHNhbXBsZSBub25jZQ==");
        let up: (&str, &[u8]) = ("Upgrade", b"websocket");
        let conn: (&str, &[u8]) = ("Connection", b"keep-alive, Upgrade");
        let v13: (&str, &[u8]) = ("Sec-WebSocket-Version", b"13");
        let cases: Vec<(&str, Headers, Result<(), Refusal>)> = vec![
            ("GET", vec![up, conn, key, v13], Ok(())),
            ("POST", vec![up, conn, key, v13], Err(Refusal::Method)),
            (
                "GET",
                vec![up, conn, key, ("Sec-WebSocket-Version", b"8")],
                Err(Refusal::Version),
            ),
            ("GET", vec![up, conn, key], Err(Refusal::Version)),
            ("GET", vec![up, key, v13], Err(Refusal::Connection)),
            ("GET", vec![up, conn, v13], Err(Refusal::Key)),
            (
                "GET",
                vec![up, conn, ("Sec-WebSocket-Key", b"c2hvcnQ="), v13],
                Err(Refusal::Key),
            ),
            ("GET", vec![up, conn, key, key, v13], Err(Refusal::Key)),
            (
                "GET",
                vec![up, conn, key, v13, ("Content-Length", b" 0")],
                Ok(()),
            ),
            (
                "GET",
                vec![up, conn, key, v13, ("Content-Length", b"5")],
                Err(Refusal::Body),
            ),
            (
                "GET",
                vec![up, conn, key, v13, ("Transfer-Encoding", b"chunked")],
                Err(Refusal::Body),
            ),
        ];
        for (method, headers, want) in cases {
            assert_eq!(
                check(method, &headers).map(|_| ()),
                want,
                "{method} {headers:?}"
            );
        }
    }

    #[test]
    fn subprotocols_and_extensions_are_collected_in_order() {
        let headers: Vec<(&str, &[u8])> = vec![
            ("upgrade", b"WebSocket"),
            ("connection", b"upgrade"),
            ("sec-websocket-key", b"dGhlIHNhbXBsZSBub25jZQ=="),
            ("sec-websocket-version", b"13"),
            ("sec-websocket-protocol", b"chat, superchat"),
            ("sec-websocket-protocol", b"v3"),
            (
                "sec-websocket-extensions",
                b"permessage-deflate; client_max_window_bits",
            ),
        ];
        assert!(wants_websocket(headers.iter().copied()));
        let up = check("GET", &headers).unwrap();
        assert_eq!(up.subprotocols, ["chat", "superchat", "v3"]);
        assert_eq!(
            up.extensions,
            ["permessage-deflate; client_max_window_bits"]
        );
        let head = response_head(
            b"server: uringapi\r\n",
            up.key,
            Some("chat"),
            Some("permessage-deflate"),
            &[(b"x-a", b"1")],
        );
        assert_eq!(
            head,
            b"HTTP/1.1 101 Switching Protocols\r\nserver: uringapi\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nSec-WebSocket-Protocol: chat\r\nSec-WebSocket-Extensions: permessage-deflate\r\nx-a: 1\r\n\r\n"
        );
    }
}
