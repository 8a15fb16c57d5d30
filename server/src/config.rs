//! What `serve` and `native-ref` run with: plain structs with one field per option of
//! `uringapi serve` / `uringapi native-ref` (same names; the meaning of each is its `--help`
//! text in the `uringapi-cli` crate and the README's options table). The command line is
//! not this crate's business: the `uringapi-cli` crate parses the flags and their
//! `URINGAPI_*` variables and fills these in.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::accesslog::Format;
use crate::frontend::IoDriver;
use crate::h2::HttpMode;
use crate::proxy::Trusted;
use crate::tls::TlsConfig;

pub use crate::sys::Sched;

/// Everything `supervisor::serve` needs. Times are in seconds (as on the command line);
/// limits of 0 mean "no limit" where the option says so.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    // What to serve and from where.
    pub app: Option<String>,
    pub factory: bool,
    pub app_dir: Option<PathBuf>,
    pub env_file: Option<PathBuf>,
    pub python: Option<PathBuf>,
    pub log_config: Option<PathBuf>,
    pub log_level: LogLevel,
    pub lifespan: Lifespan,
    pub root_path: String,
    // Where to listen.
    pub host: String,
    pub port: u16,
    pub fd: Option<i32>,
    pub uds: Option<PathBuf>,
    pub uds_perms: Option<u32>,
    pub backlog: i32,
    pub pid_file: Option<PathBuf>,
    // Processes and threads.
    pub workers: u32,
    pub threads: u32,
    pub io_driver: IoDriver,
    pub pin_cpus: Option<CpuList>,
    pub sched: Sched,
    // Development reload.
    pub reload: bool,
    pub reload_dir: Vec<PathBuf>,
    pub reload_include: Vec<String>,
    pub reload_exclude: Vec<String>,
    // Shared-memory channels.
    pub slot_size: u32,
    pub channel_slots: u32,
    pub ring_capacity: u32,
    // HTTP limits and timeouts.
    pub limit_request_line: usize,
    pub limit_request_fields: usize,
    pub limit_request_field_size: usize,
    pub limit_request_body: u64,
    pub limit_connections: Option<usize>,
    pub timeout_keep_alive: f64,
    pub timeout_header_read: f64,
    pub timeout_body_read: f64,
    pub min_body_rate: u64,
    pub timeout_graceful_shutdown: f64,
    pub timeout_worker_startup: f64,
    pub timeout_request: f64,
    // Responses.
    pub header: Vec<(String, String)>,
    pub no_date_header: bool,
    pub no_server_header: bool,
    pub request_id: bool,
    pub static_mount: Vec<crate::statics::Mount>,
    pub health_path: Option<String>,
    // Worker health, queueing and recycling.
    pub timeout: f64,
    pub stall_timeout: f64,
    pub limit_concurrency: u32,
    pub limit_queue: usize,
    pub queue_timeout: f64,
    pub workers_max_rss: u64,
    pub workers_lifetime: f64,
    pub limit_max_requests: u64,
    pub recycle_jitter: f64,
    // WebSockets.
    pub ws: WsMode,
    pub ws_max_size: u64,
    pub ws_ping_interval: f64,
    pub ws_ping_timeout: f64,
    pub ws_per_message_deflate: bool,
    // Operations: metrics, access log, proxies.
    pub metrics_port: Option<u16>,
    pub metrics_host: IpAddr,
    pub access_log: bool,
    pub access_log_format: Format,
    pub access_log_file: Option<PathBuf>,
    pub no_proxy_headers: bool,
    pub forwarded_allow_ips: Trusted,
    // Protocols.
    pub http: HttpMode,
    pub h2_max_concurrent_streams: u32,
    pub tls: TlsConfig,
}

/// Everything `native::serve` (the front end alone, the benchmark ceiling) needs.
#[derive(Debug, Clone)]
pub struct NativeRefConfig {
    pub host: IpAddr,
    pub port: u16,
    pub threads: u32,
    pub io_driver: IoDriver,
}

/// The log level, in uvicorn's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    Critical,
    Error,
    Warning,
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    /// The `tracing` filter directive for the front end's own log.
    pub fn filter(self) -> &'static str {
        match self {
            Self::Critical | Self::Error => "error",
            Self::Warning => "warn",
            Self::Info => "info",
            Self::Debug => "debug",
            Self::Trace => "trace",
        }
    }

    /// The name Python's logging module uses.
    pub fn python(self) -> &'static str {
        match self {
            Self::Critical => "CRITICAL",
            Self::Error => "ERROR",
            Self::Warning => "WARNING",
            Self::Info => "INFO",
            Self::Debug | Self::Trace => "DEBUG",
        }
    }
}

/// Whether the workers run the ASGI lifespan protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifespan {
    Auto,
    On,
    Off,
}

impl Lifespan {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::On => "on",
            Self::Off => "off",
        }
    }
}

/// Whether upgrade requests become the ASGI websocket scope (`Auto`) or plain http (`Off`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WsMode {
    Auto,
    Off,
}

/// CPU numbers to pin to, each below 1024 (the size of a `cpu_set_t`; `sys.rs` relies on
/// it): made only by [`CpuList::parse`] or [`CpuList::new`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuList(Vec<usize>);

impl CpuList {
    /// The highest CPU number a list may hold.
    pub const MAX: usize = 1023;

    pub fn new(cpus: Vec<usize>) -> Result<Self, String> {
        match cpus.iter().find(|&&c| c > Self::MAX) {
            Some(c) => Err(format!("CPU {c} is out of range (at most {})", Self::MAX)),
            None => Ok(Self(cpus)),
        }
    }

    /// Parses `0-3,6,8-9` (the `--pin-cpus` syntax).
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut cpus = Vec::new();
        for part in s.split(',').map(str::trim) {
            let num = |x: &str| {
                x.trim()
                    .parse::<usize>()
                    .map_err(|_| format!("{x:?} is not a CPU number (expected e.g. 0-3,6)"))
            };
            match part.split_once('-') {
                Some((a, b)) => {
                    let (a, b) = (num(a)?, num(b)?);
                    if a > b {
                        return Err(format!("range {part:?} runs backwards"));
                    }
                    cpus.extend(a..=b);
                }
                None => cpus.push(num(part)?),
            }
        }
        Self::new(cpus)
    }

    pub fn cpus(&self) -> &[usize] {
        &self.0
    }
}

/// The longest any timeout runs: a year, as good as for ever, and far from the overflow of
/// `Instant + Duration` that a deadline of `Duration::MAX` would be (a panic).
pub const FOREVER: Duration = Duration::from_secs(365 * 24 * 3600);

/// Seconds from the command line as a `Duration`: negative (or NaN) is 0, anything past
/// [`FOREVER`] is `FOREVER`.
pub fn seconds(s: f64) -> Duration {
    Duration::try_from_secs_f64(s.max(0.0))
        .unwrap_or(FOREVER)
        .min(FOREVER)
}

/// Seconds for a limit that 0 turns off (it then never fires: [`FOREVER`]).
pub fn limit_seconds(s: f64) -> Duration {
    if s > 0.0 {
        seconds(s)
    } else {
        FOREVER
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_parse_and_stay_inside_a_cpu_set() {
        assert_eq!(CpuList::parse("0-3,6").unwrap().cpus(), [0, 1, 2, 3, 6]);
        assert_eq!(CpuList::parse("1023").unwrap().cpus(), [1023]);
        assert!(CpuList::parse("1024").is_err());
        assert!(CpuList::parse("0-2000").is_err());
        assert!(CpuList::parse("5-1").is_err());
        assert!(CpuList::parse("x").is_err());
        assert!(CpuList::new(vec![2048]).is_err());
    }

    #[test]
    fn seconds_clamp() {
        assert_eq!(seconds(-1.0), Duration::ZERO);
        assert_eq!(seconds(f64::NAN), Duration::ZERO);
        assert_eq!(seconds(f64::INFINITY), FOREVER);
        assert_eq!(seconds(1e300), FOREVER);
        assert_eq!(seconds(0.25), Duration::from_millis(250));
        assert_eq!(limit_seconds(0.0), FOREVER);
        assert_eq!(limit_seconds(2.0), Duration::from_secs(2));
        // Every deadline is now plus a timeout: never an overflow.
        let _ = std::time::Instant::now() + FOREVER;
    }
}
