//! HTTP/2 (RFC 9113) in the front end: the `h2` crate's framing, HPACK and flow control,
//! driven over a monoio socket, with every stream dispatched through the shared-memory
//! channel as a request of its own (README, "HTTP/2").
//!
//! - `preface`: telling h2c (prior knowledge) from HTTP/1.1 on a plain port.
//! - `io`: tokio's I/O traits over monoio's owned-buffer socket, plain or TLS.
//! - `meter`: the frame meter in the read path, bounding floods h2 does not bound itself.
//! - `hpack`: the meter's HPACK mirror (public for its bench, `benches/benches/h2_hpack.rs`).
//! - `stream`: one stream as one request: dispatch, body window, response, flow control.
//!
//! The connection task drives h2 (reads frames, writes what streams queued) and accepts
//! streams; each stream runs as its own task on the same thread, so a blocked handler
//! holds up only its own stream, and streams of one connection spread over the workers.

use std::cell::Cell;
use std::future::poll_fn;
use std::net::SocketAddr;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use h2::Reason;

use crate::dispatch::Hub;
use crate::metrics::h2::Defence;
use crate::net::Peer;
use std::sync::Arc;

pub mod hpack;
mod io;
mod meter;
mod native;
mod preface;
mod respond;
mod stream;

pub use io::H2Io;
pub use preface::{sniff, sniff_if, Sniff, PREFACE};

/// `--http`: which protocols a connection may speak (granian's spelling).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HttpMode {
    /// HTTP/1.1, and HTTP/2 by ALPN (TLS) or by the client preface (h2c prior knowledge).
    #[default]
    Auto,
    /// HTTP/1.1 only (TLS offers only http/1.1 by ALPN).
    One,
    /// HTTP/2 only: plain connections must start with the preface, TLS offers only h2.
    Two,
}

/// How HTTP/2 connections are served: `--http`, the `--h2-*` settings, and the limits,
/// timeouts and answers HTTP/1.1 connections get too (its own copy, so that this module
/// does not name the HTTP/1.1 one).
#[derive(Debug, Clone)]
pub struct Settings {
    pub mode: HttpMode,
    /// SETTINGS_MAX_CONCURRENT_STREAMS we announce (`--h2-max-concurrent-streams`).
    pub max_streams: u32,
    /// SETTINGS_MAX_HEADER_LIST_SIZE we announce: past it a stream is refused (431), past
    /// h2's abuse bound (several times this) the connection is closed.
    pub max_header_list: u32,
    /// `--limit-request-line`, `--limit-request-fields`, `--limit-request-field-size`,
    /// applied to a stream's head as to the HTTP/1.1 head it stands for: the request line
    /// `METHOD target HTTP/1.1` (414 past it), the fields with cookies joined (431), each
    /// field's name and value (431).
    pub max_request_line: usize,
    pub max_fields: usize,
    pub max_field_size: usize,
    /// Largest request body accepted (413 past it); `None`: unlimited.
    pub max_body: Option<u64>,
    /// How long a connection without streams is kept.
    pub keep_alive: Duration,
    /// Deadline for the connection preface and SETTINGS exchange.
    pub header_read: Duration,
    /// Longest a client may keep its flow-control window shut while a response waits.
    pub body_read: Duration,
    pub queue_timeout: Duration,
    pub queue_limit: usize,
    pub request_timeout: Option<Duration>,
    pub request_id: bool,
    /// `--proxy-headers`: the peers whose X-Forwarded-For/-Proto are believed.
    pub proxies: Option<crate::proxy::Trusted>,
    /// Least average request body rate, bytes per second (0: no minimum).
    pub min_body_rate: u64,
    /// `--static-mount`s, answered by the front end itself.
    pub mounts: Vec<crate::statics::Mount>,
    pub health_path: Option<String>,
    /// Date and Server response fields, and the `--header` lines (`name: value\r\n` each).
    pub date: bool,
    pub server: bool,
    pub extra: &'static [u8],
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            mode: HttpMode::Auto,
            max_streams: 200,
            max_header_list: 64 * 1024,
            max_request_line: 8190,
            max_fields: 100,
            max_field_size: 8190,
            max_body: None,
            keep_alive: Duration::from_secs(5),
            header_read: Duration::from_secs(10),
            body_read: Duration::from_secs(60),
            queue_timeout: Duration::from_secs(10),
            queue_limit: 1024,
            request_timeout: None,
            request_id: false,
            proxies: None,
            min_body_rate: 0,
            mounts: Vec::new(),
            health_path: None,
            date: true,
            server: true,
            extra: b"",
        }
    }
}

/// The ALPN protocols a TLS listener offers under `--http`, preferred first.
pub fn alpn(mode: HttpMode) -> Vec<Vec<u8>> {
    match mode {
        HttpMode::Auto => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
        HttpMode::One => vec![b"http/1.1".to_vec()],
        HttpMode::Two => vec![b"h2".to_vec()],
    }
}

/// A stream's flow-control window: the request body a client may send ahead of the app.
/// Four 64 KiB slots' worth, the HTTP/1.1 body window (body_window.rs) at the default slot.
const STREAM_WINDOW: u32 = 256 * 1024;

/// The connection's window: request body bytes held by the front end over all streams of
/// one connection, whatever their number.
const CONNECTION_WINDOW: u32 = 1024 * 1024;

/// Response bytes h2 may hold per stream beyond what the client's window lets out.
const SEND_BUFFER: usize = 64 * 1024;

/// Response records (ring.rs rule 7) that a connection's streams may have unacknowledged,
/// shared out as they open: each stream's wait in this front end's memory for the client's
/// flow-control window, so a client that opens 200 streams and reads none would otherwise
/// hold 200 full windows (8 records of up to a slot, 64 KiB by default: 100 MiB) per
/// connection. A lone stream gets the full window (a download runs at full speed); with 16
/// or more open, each new one gets 1 record.
// PERF: h2load -n 40 -c 1 -m M on h2_app's /download?n=16 MiB, 2 alternating runs each,
// MB/s before → after: M=1 289–349 → 273–329, M=4 688–740 → 555–694, M=20 610–647 →
// 658–788 (noise of this 2-CPU VM; no steady loss).
const RESPONSE_BUDGET: u32 = 16;

/// The response window for a stream opening while `active` streams run on its connection
/// (itself included).
fn response_window(active: usize) -> u32 {
    uringapi_protocol::record::response_window_share(RESPONSE_BUDGET, active)
}

/// What the streams of one connection share with its driver.
pub(crate) struct Shared {
    hub: Rc<Hub>,
    cfg: Arc<Settings>,
    peer: Peer,
    local: Option<SocketAddr>,
    tls_section: Option<Vec<u8>>,
    /// Streams running.
    active: Cell<usize>,
    /// A stream asks the driver to close the connection with this code.
    killed: Cell<Option<(Reason, Defence)>>,
    driver: Cell<Option<Waker>>,
    /// The worker of the connection's last stream: a new one goes there while it is idle
    /// (dispatch/policy.rs).
    last_worker: Cell<Option<usize>>,
}

impl Shared {
    fn wake_driver(&self) {
        if let Some(w) = self.driver.take() {
            w.wake();
        }
    }

    /// Closes the connection with GOAWAY `reason` (defence `why` fired).
    fn kill(&self, reason: Reason, why: Defence) {
        self.killed.set(Some((reason, why)));
        self.wake_driver();
    }
}

/// A stream the client opened, or how the connection ended.
type Accepted = Option<
    Result<
        (
            http::Request<h2::RecvStream>,
            h2::server::SendResponse<Bytes>,
        ),
        h2::Error,
    >,
>;

/// What the connection driver's wait gave. A temporary on the driver's stack, never
/// stored: its size is the accepted request's.
#[allow(clippy::large_enum_variant)]
enum Turn {
    Drain,
    Idle,
    /// Draining, and `GOAWAY_ACK_WAIT` has passed since the last turn.
    DrainTick,
    /// The GOAWAY code, and the defence that fired (`None`: a malformed frame).
    Killed(Reason, Option<Defence>),
    Stream(Accepted),
}

/// Serves an HTTP/2 connection until it closes. `tls_section`: the tls extension facts of
/// a TLS connection (`None`: plain h2c). Boxed here, in a plain function, so that the large
/// HTTP/2 state never sizes the HTTP/1.1 connection task that hands over to it (not even
/// as a temporary of the statement that awaits it).
pub fn serve(
    hub: Rc<Hub>,
    cfg: Arc<Settings>,
    io: H2Io,
    peer: Peer,
    local: Option<SocketAddr>,
    tls_section: Option<Vec<u8>>,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()>>> {
    Box::pin(drive(hub, cfg, io, peer, local, tls_section))
}

/// [`serve`] for a plain connection whose first bytes (`read`) were already read.
pub fn serve_plain(
    hub: Rc<Hub>,
    cfg: Arc<Settings>,
    sock: crate::net::Socket,
    read: Vec<u8>,
    peer: Peer,
    local: Option<SocketAddr>,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()>>> {
    serve(hub, cfg, H2Io::plain(sock, read), peer, local, None)
}

/// [`serve`] for a TLS connection whose ALPN chose h2.
pub fn serve_tls(
    hub: Rc<Hub>,
    cfg: Arc<Settings>,
    stream: Box<crate::tls::TlsStream>,
    peer: Peer,
    local: Option<SocketAddr>,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()>>> {
    let section = stream.section();
    let (sock, tls) = stream.into_parts();
    serve(hub, cfg, H2Io::tls(sock, tls), peer, local, section)
}

async fn drive(
    hub: Rc<Hub>,
    cfg: Arc<Settings>,
    io: H2Io,
    peer: Peer,
    local: Option<SocketAddr>,
    tls_section: Option<Vec<u8>>,
) {
    hub.metrics().h2.connection();
    let meter = io.meter();
    let mut builder = h2::server::Builder::new();
    builder
        .max_concurrent_streams(cfg.max_streams)
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_header_list_size(cfg.max_header_list)
        .max_send_buffer_size(SEND_BUFFER);
    let handshake = builder.handshake::<_, Bytes>(io);
    let mut conn = match monoio::time::timeout(cfg.header_read, handshake).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "HTTP/2 handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "HTTP/2 handshake took longer than --timeout-header-read");
            return;
        }
    };
    let sh = Rc::new(Shared {
        hub: hub.clone(),
        cfg: cfg.clone(),
        peer,
        local,
        tls_section,
        active: Cell::new(0),
        killed: Cell::new(None),
        driver: Cell::new(None),
        last_worker: Cell::new(None),
    });
    let mut draining = false;
    // The client's frame count when the drain began (its PING answer would add one).
    let mut frames_at_drain = 0;
    loop {
        let idle = sh.active.get() == 0 && !draining;
        let turn = monoio::select! {
            _ = hub.drained(), if !draining => Turn::Drain,
            _ = crate::deadline::after(cfg.keep_alive), if idle => Turn::Idle,
            _ = crate::deadline::after(GOAWAY_ACK_WAIT), if draining => Turn::DrainTick,
            (reason, why) = poll_fn(|cx| match sh
                .killed
                .get()
                .map(|(reason, why)| (reason, Some(why)))
                .or_else(|| meter.tripped())
            {
                Some(hit) => Poll::Ready(hit),
                None => {
                    sh.driver.set(Some(cx.waker().clone()));
                    meter.set_waker(cx.waker());
                    Poll::Pending
                }
            }) => Turn::Killed(reason, why),
            next = conn.accept() => Turn::Stream(next),
        };
        match turn {
            // GOAWAY: streams in flight finish; accept() ends once they have.
            Turn::Drain | Turn::Idle => {
                conn.graceful_shutdown();
                draining = true;
                frames_at_drain = meter.frames();
            }
            // h2's graceful shutdown sends its final GOAWAY, and then closes, once the client
            // has answered a PING. A client that never does (RFC 9113 §6.7 says it must)
            // held the connection, and a drain, for the whole graceful timeout, and an idle
            // one for ever. One that has sent nothing at all since (no answer, no window
            // update) while no stream is left gets the final GOAWAY without it. A client
            // that is still reading, and answering, is left to h2's close, which first
            // sends what h2 still holds for it.
            Turn::DrainTick if sh.active.get() == 0 && meter.frames() == frames_at_drain => {
                return go_away_now(&mut conn, Reason::NO_ERROR).await;
            }
            Turn::DrainTick => {}
            Turn::Killed(reason, why) => {
                if let Some(why) = why {
                    tracing::info!(%peer, defence = ?why, "HTTP/2 client past a defence's bound; closing the connection with GOAWAY {reason:?}");
                    hub.metrics().h2.defence(why);
                } else {
                    tracing::debug!(%peer, "HTTP/2 client sent a malformed frame; closing the connection with GOAWAY {reason:?}");
                }
                hub.metrics().h2.goaway(reason.into());
                return go_away_now(&mut conn, reason).await;
            }
            Turn::Stream(Some(Ok((req, mut respond)))) => {
                if edge_whitespace(req.headers()) {
                    // RFC 9113 §8.2.1: malformed, a stream error (§8.1.1); h2 lets it through.
                    tracing::debug!(%peer, "HTTP/2 request with a field value starting or ending with whitespace; stream reset");
                    respond.send_reset(Reason::PROTOCOL_ERROR);
                    continue;
                }
                monoio::spawn(stream::serve(sh.clone(), req, respond));
            }
            Turn::Stream(None) => return,
            Turn::Stream(Some(Err(e))) => {
                if e.is_go_away() && !e.is_remote() {
                    let code = e.reason().map_or(u32::MAX, u32::from);
                    hub.metrics().h2.goaway(code);
                    // A flood h2 cut off is worth a line at info, as ours are; any other
                    // protocol error is the client's, logged at debug as over HTTP/1.1.
                    if let Some(d) = meter::classify(&e, &meter) {
                        hub.metrics().h2.defence(d);
                        tracing::info!(%peer, defence = ?d, error = %e, "HTTP/2 client past a defence's bound; connection closed with GOAWAY");
                    } else {
                        tracing::debug!(%peer, error = %e, "HTTP/2 connection closed with GOAWAY");
                    }
                } else {
                    tracing::debug!(%peer, error = %e, "HTTP/2 connection ended");
                }
                return;
            }
        }
    }
}

/// Sends GOAWAY `reason` at once and lets h2 write it and close; bounded, as the client may
/// not read.
async fn go_away_now(conn: &mut h2::server::Connection<H2Io, Bytes>, reason: Reason) {
    conn.abrupt_shutdown(reason);
    let _ = monoio::time::timeout(Duration::from_secs(1), poll_fn(|cx| conn.poll_closed(cx))).await;
}

/// How long a draining connection with no stream left waits for h2's own close (which needs
/// the client's PING answer, one round trip) before sending the final GOAWAY without it.
const GOAWAY_ACK_WAIT: Duration = Duration::from_secs(2);

/// A field value that starts or ends with SP or HTAB, which RFC 9113 §8.2.1 makes
/// malformed (h2 checks the other characters it forbids).
fn edge_whitespace(headers: &http::HeaderMap) -> bool {
    headers.values().any(|v| {
        let b = v.as_bytes();
        matches!(b.first(), Some(b' ' | b'\t')) || matches!(b.last(), Some(b' ' | b'\t'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_values_with_whitespace_at_either_edge_are_found() {
        let cases: &[(&[u8], bool)] = &[
            (b"a b", false),
            (b"", false),
            (b" a", true),
            (b"a ", true),
            (b"\ta", true),
            (b"a\t", true),
        ];
        for (value, want) in cases {
            let mut h = http::HeaderMap::new();
            h.insert("x-a", http::HeaderValue::from_static("ok"));
            h.append("x-b", http::HeaderValue::from_bytes(value).unwrap());
            assert_eq!(edge_whitespace(&h), *want, "{value:?}");
        }
    }

    #[test]
    fn a_connections_streams_share_a_response_budget() {
        let windows: Vec<u32> = [0, 1, 2, 3, 4, 8, 16, 17, 200, usize::MAX]
            .iter()
            .map(|&n| response_window(n))
            .collect();
        assert_eq!(windows, [8, 8, 8, 5, 4, 2, 1, 1, 1, 1]);
    }
}
