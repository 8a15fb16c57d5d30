//! What a connection is told: the per-listener settings every connection of a thread shares.

use std::time::Duration;

use super::WsConfig;
use crate::http1::encode::HeaderOptions;
use crate::http1::parse::HeadLimits;

/// Per-connection settings, shared by all connections of a thread.
#[derive(Debug, Clone)]
pub struct ConnConfig {
    pub limits: HeadLimits,
    pub headers: HeaderOptions,
    /// Largest request body accepted (413 past it); `None`: unlimited.
    pub max_body: Option<u64>,
    /// How long an idle keep-alive connection is kept.
    pub keep_alive: Duration,
    /// Deadline for a whole request head, from its first byte.
    pub header_read: Duration,
    /// Longest wait for the next piece of a request body.
    pub body_read: Duration,
    /// How long a response write may wait for a client that takes none of its bytes
    /// (`--timeout-body-read`, the pause allowed in a body either way); `None`: for ever.
    pub send_stall: Option<Duration>,
    /// Longest a request waits for a worker to accept it (503 past it).
    pub queue_timeout: Duration,
    /// Most requests waiting for a worker on this thread (503 at once past it).
    pub queue_limit: usize,
    /// Deadline for a whole response, from dispatch (504, or a closed connection once the
    /// response started; the app's task is cancelled either way). `None`: no deadline.
    pub request_timeout: Option<Duration>,
    /// Pass X-Request-ID to the app, generating one when the client sent none.
    pub request_id: bool,
    /// `--proxy-headers`: the peers whose X-Forwarded-For/-Proto are believed.
    pub proxies: Option<crate::proxy::Trusted>,
    /// Least average request body rate, bytes per second (0: no minimum).
    pub min_body_rate: u64,
    /// `--static-mount`s, answered by the front end itself.
    pub mounts: Vec<crate::statics::Mount>,
    /// `--health-path`: answered "ok" by the front end itself.
    pub health_path: Option<String>,
    /// TLS on this listener (`--ssl-certfile`/`--ssl-keyfile`); `None`: plain HTTP.
    pub tls: Option<crate::tls::Acceptor>,
    /// HTTP/2: `--http`, the `--h2-*` settings, and the limits above as HTTP/2 needs them.
    pub h2: std::sync::Arc<crate::h2::Settings>,
    /// WebSocket settings; `None` (`--ws off`): upgrade requests reach the app as http.
    pub ws: Option<WsConfig>,
}
