//! Tests of the WebSocket connection code (websocket.rs): upgrade checks, the 101, and
//! the size of an open WebSocket's task.

use super::*;
use crate::http1::parse::HeadLimits;

const OPTS: encode::HeaderOptions = encode::HeaderOptions {
    server: false,
    date: false,
    extra: b"",
};

const CFG: WsConfig = WsConfig {
    max_size: 1 << 20,
    ping_interval: None,
    ping_timeout: None,
    deflate: true,
    graceful: Duration::from_secs(1),
};

fn head_of(raw: &[u8]) -> parse::Head<'_> {
    parse::parse_complete(raw, &HeadLimits::default()).unwrap()
}

const UP: &str = "Host: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";

#[test]
fn upgrade_requests_table() {
    let deflate = "Sec-WebSocket-Extensions: permessage-deflate\r\n";
    // None: plain http; Ok(deflate agreed); Err(status).
    type Want = Option<Result<bool, u16>>;
    let cases: Vec<(String, Option<&WsConfig>, Want)> = vec![
        (
            format!("GET / HTTP/1.1\r\n{UP}Sec-WebSocket-Version: 13\r\n\r\n"),
            Some(&CFG),
            Some(Ok(false)),
        ),
        (
            format!("GET / HTTP/1.1\r\n{UP}Sec-WebSocket-Version: 13\r\n{deflate}\r\n"),
            Some(&CFG),
            Some(Ok(true)),
        ),
        (
            format!("GET / HTTP/1.1\r\n{UP}Sec-WebSocket-Version: 13\r\n\r\n"),
            None,
            None,
        ),
        (
            format!("GET / HTTP/1.0\r\n{UP}Sec-WebSocket-Version: 13\r\n\r\n"),
            Some(&CFG),
            None,
        ),
        (
            "GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_owned(),
            Some(&CFG),
            None,
        ),
        (
            format!("GET / HTTP/1.1\r\n{UP}Sec-WebSocket-Version: 8\r\n\r\n"),
            Some(&CFG),
            Some(Err(426)),
        ),
        (
            format!(
                "POST / HTTP/1.1\r\n{UP}Sec-WebSocket-Version: 13\r\nContent-Length: 0\r\n\r\n"
            ),
            Some(&CFG),
            Some(Err(400)),
        ),
    ];
    for (raw, ws, want) in cases {
        let head = head_of(raw.as_bytes());
        let got = check_upgrade(ws, &head).map(|r| r.map(|up| up.deflate.is_some()));
        assert_eq!(got, want, "{raw:?}");
    }
    let off = WsConfig {
        deflate: false,
        ..CFG
    };
    let raw = format!("GET / HTTP/1.1\r\n{UP}Sec-WebSocket-Version: 13\r\n{deflate}\r\n");
    let up = check_upgrade(Some(&off), &head_of(raw.as_bytes()))
        .unwrap()
        .unwrap();
    assert!(
        up.deflate.is_none(),
        "--ws-per-message-deflate false declines the offer"
    );
}

/// An open WebSocket's task is its loop's state: what is live across its idle wait.
/// The writes and the app's events are boxed (an allocation each), and so are the
/// deflate states, so that an idle WebSocket costs about a kilobyte here; it was 2,576
/// bytes beside the connection task's 1,408 (debug build sizes, release ones are the
/// same here; tests/e2e/test_idle_websockets.py measures the whole). The loop was
/// 1,024 bytes after wsmem; wsidle2 made it 856 (the app's event boxed out of the
/// loop's step, the hand-over of a client message in a function of its own with
/// `take_slot`/`push` inline, `Open` by reference). MEMORY: the whole task (the
/// connection's state moved in, 312 bytes since the access log's fields are boxed,
/// and monoio's 48 bytes of header, stage and trailer) must stay within 1,280 bytes,
/// jemalloc's size class below 1,536: past it, every open WebSocket costs 256 bytes
/// more.
#[test]
fn an_open_websocket_task_stays_small() {
    fn future_of<A, B, F>(_: fn(A, B) -> F) -> usize {
        std::mem::size_of::<F>()
    }
    fn task_of<A, B, C, F>(_: fn(A, B, C) -> F) -> usize {
        std::mem::size_of::<F>()
    }
    let size = future_of(Conn::ws_session);
    eprintln!("websocket future: {size} bytes");
    assert!(size <= 856, "{size} bytes");
    let task = task_of(session) + 48;
    eprintln!("websocket task: {task} bytes");
    assert!(task <= 1280, "{task} bytes");
    assert!(std::mem::size_of::<Reader>() <= 128);
    assert!(std::mem::size_of::<Writer>() <= 64);
}

/// The 101 for an accept head carrying `headers` (as the worker encodes it).
fn accept(headers: &[(&[u8], &[u8])], opts: encode::HeaderOptions) -> Result<Vec<u8>, String> {
    let up = Upgrade {
        key: "dGhlIHNhbXBsZSBub25jZQ==".into(),
        deflate: None,
    };
    let mut head = vec![0u8; 256];
    let n = uringapi_protocol::head::encode_response_head(101, headers.iter().copied(), &mut head)
        .unwrap();
    accept_response(&head[..n], &up, opts)
}

#[test]
fn the_apps_accept_head_becomes_the_101() {
    let headers: [(&[u8], &[u8]); 3] = [
        (b"sec-websocket-protocol", b"chat"),
        (b"x-a", b"1"),
        (b"connection", b"close"),
    ];
    assert_eq!(
        accept(&headers, OPTS).unwrap(),
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nSec-WebSocket-Protocol: chat\r\nx-a: 1\r\n\r\n"
    );
    // The front end's own fields come first; the app's own Server replaces the front
    // end's, which is sent when the app sets none.
    let opts = encode::HeaderOptions {
        server: true,
        date: false,
        extra: b"x-team: core\r\n",
    };
    let headers: [(&[u8], &[u8]); 2] = [(b"server", b"app"), (b"x-a", b"1")];
    assert_eq!(
        accept(&headers, opts).unwrap(),
        b"HTTP/1.1 101 Switching Protocols\r\nx-team: core\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nserver: app\r\nx-a: 1\r\n\r\n"
    );
    assert_eq!(
        accept(&headers[1..], opts).unwrap(),
        b"HTTP/1.1 101 Switching Protocols\r\nserver: uringapi\r\nx-team: core\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nx-a: 1\r\n\r\n"
    );
    assert!(accept(&[(b"x-a", b"1\r\nx-b: 2")], OPTS).is_err());
}
