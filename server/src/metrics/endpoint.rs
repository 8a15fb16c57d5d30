//! The metrics port: a small blocking HTTP/1.1 server on std threads, apart from the
//! io_uring front end, so that probes and scrapes still get answers when the front end or
//! every worker is busy. It serves `/metrics`, `/healthz` and `/readyz`, one request per
//! connection.

use std::fmt::Write as _;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What the endpoint serves: the rendered metrics and the readiness verdict.
pub trait Source: Send + Sync + 'static {
    fn metrics(&self) -> String;
    fn ready(&self) -> bool;
}

/// Connections served at once; one past it gets 503 straight away. Probes and a scraper need
/// two or three; the cap keeps a flood of idle connections from making threads without end.
const MAX_CONNECTIONS: usize = 8;
/// Longest request head read; longer gets 400.
const MAX_HEAD: usize = 8192;
/// A client must send its whole request head within this, or gets 408 and is closed.
const READ_DEADLINE: Duration = Duration::from_secs(5);
/// Time allowed to write a response (they are small; this only guards a client that never reads).
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// After answering, unread input is drained for at most this long, so that closing does not
/// turn into a reset that could destroy the response before the client read it.
const LINGER: Duration = Duration::from_millis(200);

/// Binds `addr` and serves, on a thread of its own:
/// `GET`/`HEAD` `/metrics` (text/plain; version=0.0.4), `/healthz` (200 "ok" while the
/// process lives) and `/readyz` (200 while `source.ready()`, else 503). Other paths get
/// 404, other methods 405, unparsable requests 400. One request per connection
/// (`Connection: close`); each connection is served on a short-lived thread, at most
/// 8 at once (one more gets 503), with 5 s to send the request head (else 408).
/// Returns the bound address (useful with port 0) and the accept thread's handle.
pub fn spawn_endpoint(
    addr: SocketAddr,
    source: Arc<dyn Source>,
) -> std::io::Result<(SocketAddr, JoinHandle<()>)> {
    let listener = TcpListener::bind(addr)?;
    let local = listener.local_addr()?;
    let handle = std::thread::Builder::new()
        .name("uringapi-metrics".into())
        .spawn(move || accept_loop(&listener, &source))?;
    Ok((local, handle))
}

fn accept_loop(listener: &TcpListener, source: &Arc<dyn Source>) {
    let active = Arc::new(AtomicUsize::new(0));
    loop {
        let stream = match listener.accept() {
            Ok((s, _)) => s,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning; the listener stays.
                if e.kind() != ErrorKind::Interrupted {
                    tracing::debug!(error = %e, "metrics endpoint: accept failed");
                    std::thread::sleep(Duration::from_millis(50));
                }
                continue;
            }
        };
        if active.fetch_add(1, Relaxed) >= MAX_CONNECTIONS {
            active.fetch_sub(1, Relaxed);
            busy(stream);
            continue;
        }
        let guard = Active(active.clone());
        let source = source.clone();
        let spawned = std::thread::Builder::new()
            .name("uringapi-metrics-conn".into())
            .spawn(move || {
                let _guard = guard;
                serve(stream, &*source);
            });
        if let Err(e) = spawned {
            // The closure (and with it the guard and the stream) is dropped.
            tracing::debug!(error = %e, "metrics endpoint: cannot start a connection thread");
        }
    }
}

/// Counts a connection thread; released when the thread ends.
struct Active(Arc<AtomicUsize>);

impl Drop for Active {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

/// Too many connections at once: answer 503 from the accept thread. The reply fits in any
/// fresh socket's send buffer, so this cannot block on the client.
fn busy(mut stream: TcpStream) {
    let _ = stream.set_write_timeout(Some(Duration::from_millis(100)));
    let _ = stream.write_all(&response(
        503,
        "text/plain; charset=utf-8",
        b"busy\n",
        false,
        &[],
    ));
}

fn serve(mut stream: TcpStream, source: &dyn Source) {
    let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
    let deadline = Instant::now() + READ_DEADLINE;
    let mut buf = vec![0u8; MAX_HEAD];
    let mut len = 0;
    let reply = loop {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf[..len]) {
            Ok(httparse::Status::Complete(_)) => {
                break route(req.method.unwrap_or(""), req.path.unwrap_or(""), source)
            }
            Ok(httparse::Status::Partial) if len < buf.len() => {}
            Ok(httparse::Status::Partial) | Err(_) => {
                break response(
                    400,
                    "text/plain; charset=utf-8",
                    b"bad request\n",
                    false,
                    &[],
                )
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            break response(
                408,
                "text/plain; charset=utf-8",
                b"request timeout\n",
                false,
                &[],
            );
        }
        match stream.read(&mut buf[len..]) {
            Ok(0) => return,
            Ok(n) => len += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                break response(
                    408,
                    "text/plain; charset=utf-8",
                    b"request timeout\n",
                    false,
                    &[],
                );
            }
            Err(_) => return,
        }
    };
    if stream.write_all(&reply).is_err() {
        return;
    }
    let _ = stream.shutdown(Shutdown::Write);
    linger(&mut stream);
}

/// Reads and drops what the client still sends (briefly), so the close is a FIN, not a RST.
fn linger(stream: &mut TcpStream) {
    let until = Instant::now() + LINGER;
    let mut scratch = [0u8; 4096];
    let mut drained = 0usize;
    while drained < 64 * 1024 {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            return;
        }
        match stream.read(&mut scratch) {
            Ok(0) | Err(_) => return,
            Ok(n) => drained += n,
        }
    }
}

fn route(method: &str, target: &str, source: &dyn Source) -> Vec<u8> {
    const TEXT: &str = "text/plain; charset=utf-8";
    let path = target.split_once('?').map_or(target, |(p, _)| p);
    if !matches!(path, "/metrics" | "/healthz" | "/readyz") {
        return response(404, TEXT, b"not found\n", false, &[]);
    }
    let head_only = match method {
        "GET" => false,
        "HEAD" => true,
        _ => {
            return response(
                405,
                TEXT,
                b"method not allowed\n",
                false,
                &[("Allow", "GET, HEAD")],
            )
        }
    };
    match path {
        "/metrics" => {
            let body = source.metrics();
            response(200, super::CONTENT_TYPE, body.as_bytes(), head_only, &[])
        }
        "/healthz" => response(200, TEXT, b"ok\n", head_only, &[]),
        _ if source.ready() => response(200, TEXT, b"ready\n", head_only, &[]),
        _ => response(503, TEXT, b"not ready\n", head_only, &[]),
    }
}

fn response(
    status: u16,
    content_type: &str,
    body: &[u8],
    head_only: bool,
    extra: &[(&str, &str)],
) -> Vec<u8> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        _ => "Service Unavailable",
    };
    let mut head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in extra {
        let _ = write!(head, "{k}: {v}\r\n");
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    if !head_only {
        out.extend_from_slice(body);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{Metrics, ProcessSnapshot, WorkerSnapshot};
    use std::sync::atomic::AtomicBool;

    struct TestSource {
        ready: AtomicBool,
        metrics: Arc<Metrics>,
    }

    impl Source for TestSource {
        fn metrics(&self) -> String {
            self.metrics
                .render(&[WorkerSnapshot::default()], &ProcessSnapshot::default())
        }
        fn ready(&self) -> bool {
            self.ready.load(Relaxed)
        }
    }

    fn start() -> (SocketAddr, Arc<TestSource>) {
        let source = Arc::new(TestSource {
            ready: AtomicBool::new(false),
            metrics: Metrics::new(1),
        });
        let (addr, _handle) =
            spawn_endpoint("127.0.0.1:0".parse().unwrap(), source.clone()).expect("bind");
        (addr, source)
    }

    /// Sends raw bytes, reads until the server closes; returns (status line, headers, body).
    fn exchange(addr: SocketAddr, request: &[u8]) -> (String, String, Vec<u8>) {
        let mut s = TcpStream::connect(addr).unwrap();
        // A bound so a broken server fails the test instead of hanging it (not a speed check).
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        s.write_all(request).unwrap();
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).unwrap();
        let split = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("no end of head");
        let head = String::from_utf8(raw[..split].to_vec()).unwrap();
        let (status, headers) = head.split_once("\r\n").unwrap_or((&head, ""));
        (
            status.to_string(),
            headers.to_string(),
            raw[split + 4..].to_vec(),
        )
    }

    #[test]
    fn endpoint_answers_each_path_over_tcp() {
        let (addr, source) = start();
        source
            .metrics
            .thread(0)
            .observe(b"GET", 200, Duration::from_millis(2));

        let (status, headers, body) = exchange(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(status, "HTTP/1.1 200 OK");
        assert!(
            headers.contains("Content-Type: text/plain; version=0.0.4; charset=utf-8"),
            "{headers}"
        );
        assert!(headers.contains("Connection: close"));
        assert!(headers.contains(&format!("Content-Length: {}", body.len())));
        let body = String::from_utf8(body).unwrap();
        assert_eq!(body, source.metrics(), "the rendered exposition, as is");
        assert!(body.contains("\nuringapi_requests_total{method=\"GET\",status=\"200\"} 1\n"));

        let (status, headers, body) = exchange(addr, b"HEAD /metrics?x=1 HTTP/1.0\r\n\r\n");
        assert_eq!(status, "HTTP/1.1 200 OK");
        assert!(body.is_empty(), "HEAD has no body");
        assert!(!headers.contains("Content-Length: 0"));

        let (status, _, body) = exchange(addr, b"GET /healthz HTTP/1.1\r\n\r\n");
        assert_eq!(
            (status.as_str(), body.as_slice()),
            ("HTTP/1.1 200 OK", &b"ok\n"[..])
        );

        let (status, _, body) = exchange(addr, b"GET /readyz HTTP/1.1\r\n\r\n");
        assert_eq!(
            (status.as_str(), body.as_slice()),
            ("HTTP/1.1 503 Service Unavailable", &b"not ready\n"[..])
        );
        source.ready.store(true, Relaxed);
        let (status, _, body) = exchange(addr, b"GET /readyz HTTP/1.1\r\n\r\n");
        assert_eq!(
            (status.as_str(), body.as_slice()),
            ("HTTP/1.1 200 OK", &b"ready\n"[..])
        );

        let (status, _, _) = exchange(addr, b"GET /nope HTTP/1.1\r\n\r\n");
        assert_eq!(status, "HTTP/1.1 404 Not Found");
        let (status, headers, _) =
            exchange(addr, b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(status, "HTTP/1.1 405 Method Not Allowed");
        assert!(headers.contains("Allow: GET, HEAD"));
        let (status, _, _) = exchange(addr, b"\x16\x03\x01\x02\x00garbage\r\n\r\n");
        assert_eq!(status, "HTTP/1.1 400 Bad Request");
        let (status, _, _) = exchange(addr, b"GET /metrics HTTP/1.1\r\nBad Header\r\n\r\n");
        assert_eq!(status, "HTTP/1.1 400 Bad Request");
        let mut huge = b"GET /metrics HTTP/1.1\r\nX: ".to_vec();
        huge.resize(MAX_HEAD + 100, b'a');
        let (status, _, _) = exchange(addr, &huge);
        assert_eq!(status, "HTTP/1.1 400 Bad Request");
    }

    #[test]
    fn a_silent_client_does_not_hold_up_others() {
        let (addr, _source) = start();
        // Connected, sends half a request line and then nothing.
        let mut idle = TcpStream::connect(addr).unwrap();
        idle.write_all(b"GET /hea").unwrap();
        let (status, _, body) = exchange(addr, b"GET /healthz HTTP/1.1\r\n\r\n");
        assert_eq!(
            (status.as_str(), body.as_slice()),
            ("HTTP/1.1 200 OK", &b"ok\n"[..])
        );
        drop(idle);
    }
}
