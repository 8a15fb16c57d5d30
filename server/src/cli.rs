//! The `uringapi` command line. Flags mirror uvicorn's and gunicorn's where they exist.

use std::ffi::OsString;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::frontend::IoDriver;

/// uringapi: serve ASGI apps (FastAPI, Starlette, Litestar) from an io_uring front end and
/// separate uvloop worker processes joined by shared-memory rings.
#[derive(Debug, Parser)]
#[command(name = "uringapi", version, color = clap::ColorChoice::Never)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Cmd,
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Serve an ASGI app: `uringapi serve module:attr --workers N`.
    Serve(Box<ServeArgs>),
    /// Serve a static "Hello, world!" from the front end alone (the benchmark ceiling).
    NativeRef(NativeRefArgs),
}

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// The app as `module:attribute`, imported like uvicorn does. Without it, a built-in
    /// demo app is served.
    pub app: Option<String>,
    /// Address to bind.
    #[arg(long, default_value = "127.0.0.1", env = "URINGAPI_HOST")]
    pub host: IpAddr,
    /// Port to bind (0 picks a free one).
    #[arg(long, default_value_t = 8000, env = "URINGAPI_PORT")]
    pub port: u16,
    /// Python worker processes. Default: one per CPU this process may use.
    #[arg(long, default_value_t = default_workers(), env = "URINGAPI_WORKERS", value_parser = clap::value_parser!(u32).range(1..=256))]
    pub workers: u32,
    /// Front-end io_uring threads, each with its own listener. Default: one per 8 CPUs.
    #[arg(long, default_value_t = default_threads(), env = "URINGAPI_THREADS", value_parser = clap::value_parser!(u32).range(1..=256))]
    pub threads: u32,
    /// Directory the app is imported from (put first on sys.path). Default: the current one.
    #[arg(long, env = "URINGAPI_APP_DIR")]
    pub app_dir: Option<PathBuf>,
    /// Log level: critical, error, warning, info, debug, trace.
    #[arg(long, default_value = "info", env = "URINGAPI_LOG_LEVEL")]
    pub log_level: LogLevel,
    /// Python interpreter for the workers. Default: the one that runs `uringapi`, else python3.
    #[arg(long, env = "URINGAPI_PYTHON")]
    pub python: Option<PathBuf>,
    /// I/O driver: io_uring with fallback to epoll (auto), or one of them forced.
    #[arg(long, value_enum, default_value = "auto", env = "URINGAPI_IO_DRIVER")]
    pub io_driver: IoDriver,
    /// Listen backlog.
    #[arg(long, default_value_t = 2048)]
    pub backlog: i32,
    /// Run the ASGI lifespan protocol: auto (if the app supports it), on, off.
    #[arg(long, default_value = "auto")]
    pub lifespan: Lifespan,
    /// Bytes per shared-memory slot (request heads must fit in one; bodies stream through).
    #[arg(long, default_value_t = 64 * 1024)]
    pub slot_size: u32,
    /// Slots per channel direction.
    #[arg(long, default_value_t = 64)]
    pub channel_slots: u32,
    /// Records per ring (a power of two).
    #[arg(long, default_value_t = 256)]
    pub ring_capacity: u32,
    /// Longest request line in bytes, without its CRLF (414 past it).
    #[arg(long, default_value_t = 8190)]
    pub limit_request_line: usize,
    /// Most header fields in a request (431 past it).
    #[arg(long, default_value_t = 100)]
    pub limit_request_fields: usize,
    /// Longest header field, name plus value, in bytes (431 past it).
    #[arg(long, default_value_t = 8190)]
    pub limit_request_field_size: usize,
    /// Largest request body in bytes (413 past it); 0 means no limit.
    #[arg(long, default_value_t = 0)]
    pub limit_request_body: u64,
    /// Most open connections per front-end thread; 0 means no limit.
    #[arg(long, default_value_t = 0)]
    pub limit_connections: usize,
    /// Seconds an idle keep-alive connection is kept open.
    #[arg(long, default_value_t = 65.0)]
    pub timeout_keep_alive: f64,
    /// Seconds a client has to send a whole request head, from its first byte.
    #[arg(long, default_value_t = 30.0)]
    pub timeout_header_read: f64,
    /// Seconds a client may pause while sending a request body.
    #[arg(long, default_value_t = 60.0)]
    pub timeout_body_read: f64,
    /// Least average rate, in bytes per second, at which a request body must arrive after
    /// the first --timeout-body-read seconds (408 below it); 0 turns it off.
    #[arg(long, default_value_t = 500)]
    pub min_body_rate: u64,
    /// Seconds to let requests in flight finish on SIGTERM/SIGINT.
    #[arg(long, default_value_t = 30.0)]
    pub timeout_graceful_shutdown: f64,
    /// Seconds a worker has to import the app and finish lifespan startup.
    #[arg(long, default_value_t = 60.0)]
    pub timeout_worker_startup: f64,
    /// Do not send a Date header.
    #[arg(long)]
    pub no_date_header: bool,
    /// Do not send a Server header.
    #[arg(long)]
    pub no_server_header: bool,
    /// ASGI root_path, for apps mounted below a prefix by a proxy.
    #[arg(long, default_value = "")]
    pub root_path: String,
    /// Seconds a worker's event loop may stay silent before the worker is killed (SIGABRT,
    /// which prints its Python stack, then SIGKILL) and replaced; 0 turns it off.
    #[arg(long, default_value_t = 60.0)]
    pub timeout: f64,
    /// Seconds a worker's event loop may make no progress before it gets no new requests
    /// (until it moves again); the log names the requests in flight on it.
    #[arg(long, default_value_t = 0.1)]
    pub stall_timeout: f64,
    /// Most requests in flight per worker; past it requests wait in the queue. 0: no limit.
    #[arg(long, default_value_t = 0)]
    pub limit_concurrency: u32,
    /// Most requests waiting for a worker per front-end thread; past it, 503 at once.
    #[arg(long, default_value_t = 1024)]
    pub limit_queue: usize,
    /// Seconds a request may wait for a worker before it gets 503 with Retry-After.
    #[arg(long, default_value_t = 10.0)]
    pub queue_timeout: f64,
    /// Seconds a request may run before it gets 504 (or a closed connection once its
    /// response started) and its task is cancelled in the worker. 0: no limit.
    #[arg(long, default_value_t = 0.0)]
    pub timeout_request: f64,
    /// Recycle a worker once its RSS passes this many MiB (plus jitter). 0: never.
    #[arg(long, default_value_t = 0)]
    pub workers_max_rss: u64,
    /// Recycle a worker after this many seconds (plus jitter). 0: never.
    #[arg(long, default_value_t = 0.0)]
    pub workers_lifetime: f64,
    /// Recycle a worker after it served this many requests (plus jitter). 0: never.
    #[arg(long, default_value_t = 0)]
    pub limit_max_requests: u64,
    /// Each recycling threshold is raised by a random 0..this fraction per worker, so
    /// workers do not all recycle at once.
    #[arg(long, default_value_t = 0.1)]
    pub recycle_jitter: f64,
    /// Give every request an X-Request-ID: the client's if it sent one, else a generated one,
    /// passed to the app as a request header and written to the access log. Off by default
    /// so that apps see exactly the headers the client sent, as under uvicorn.
    #[arg(long)]
    pub request_id: bool,
    /// Serve the files under DIR at URL prefix PREFIX from the front end, without Python
    /// (`/static=./public`); GET and HEAD, with ETag, Last-Modified, 304 and Range.
    /// Repeatable.
    #[arg(long, value_name = "PREFIX=DIR", value_parser = crate::http1::static_files::parse_mount)]
    pub static_mount: Vec<crate::http1::static_files::Mount>,
    /// Answer GET PATH with 200 "ok" from the front end (503 while draining), e.g. for a
    /// load balancer's health check on the app port.
    #[arg(long, value_name = "PATH")]
    pub health_path: Option<String>,
    /// Serve Prometheus metrics at /metrics, and /healthz and /readyz, on this port.
    #[arg(long, env = "URINGAPI_METRICS_PORT")]
    pub metrics_port: Option<u16>,
    /// Address for --metrics-port. Default: --host.
    #[arg(long)]
    pub metrics_host: Option<IpAddr>,
    /// Write one access log line per request (off by default; written by the front end,
    /// not by the Python workers).
    #[arg(long)]
    pub access_log: bool,
    /// Access log format: common or combined (Apache's, plus request id and duration in
    /// microseconds), or json.
    #[arg(long, value_enum, default_value = "combined")]
    pub access_log_format: crate::accesslog::Format,
    /// Write the access log to this file instead of stderr (implies --access-log); SIGUSR1
    /// reopens it after log rotation.
    #[arg(long)]
    pub access_log_file: Option<PathBuf>,
    /// Do not take the client address and scheme from X-Forwarded-For / X-Forwarded-Proto
    /// (by default they are believed from the peers in --forwarded-allow-ips, as uvicorn).
    #[arg(long)]
    pub no_proxy_headers: bool,
    /// Accepted for uvicorn compatibility: proxy headers are on unless --no-proxy-headers.
    #[arg(long, hide = true)]
    pub proxy_headers: bool,
    /// Peers whose proxy headers are believed: IPs, CIDR networks, or `*`, comma-separated.
    #[arg(long, default_value = "127.0.0.1", env = "FORWARDED_ALLOW_IPS", value_parser = crate::proxy::Trusted::parse)]
    pub forwarded_allow_ips: crate::proxy::Trusted,
    /// Pin front-end threads and workers to these CPUs, e.g. `0-3` or `0,2,4,6`: thread t
    /// gets the t-th CPU, worker i the (threads + i)-th, wrapping around.
    #[arg(long, value_parser = parse_cpu_list)]
    pub pin_cpus: Option<CpuList>,
    /// Scheduling policy of the front-end threads and workers: batch (SCHED_BATCH, a thread
    /// that wakes does not preempt a running one, so each wakeup finds more requests waiting)
    /// or normal (SCHED_OTHER). A real-time or idle policy the server was started under
    /// (`chrt`) is kept.
    #[arg(long, value_enum, default_value = "batch")]
    pub sched: crate::sys::Sched,
    /// TLS: uvicorn's `--ssl-*` flags and `--ktls` (server/src/tls/).
    #[command(flatten)]
    pub tls: crate::tls::TlsArgs,
}

/// CPUs this process may run on (cgroup quotas and affinity included).
fn cpus() -> u32 {
    std::thread::available_parallelism().map_or(1, |n| n.get() as u32)
}

/// One worker per CPU: measured on 2 CPUs (`hello` and FastAPI `/json`, wrk on the same
/// machine), 2 workers served 1.9x (hello) and 1.6x (FastAPI) the requests of 1 worker
/// at the same CPU per request. Python work dominates a request, so the workers get the
/// cores; they sleep when idle. With `--sched batch`, 3 workers on 2 CPUs were level with
/// 2 (0.99x hello, 1.08x FastAPI over three runs of 2 rounds, inside the noise).
fn default_workers() -> u32 {
    cpus().clamp(1, 256)
}

/// One front-end thread per 8 CPUs: a thread spends ~9-13 CPU-µs per request against a
/// worker's ~5 (plain ASGI) to ~60 (FastAPI), and a second thread on 2 CPUs lowered
/// throughput by taking a core from the workers (0.8x hello and 0.77x FastAPI before the
/// scheduling changes of 2026-12-03; 0.84x and 0.97x after).
fn default_threads() -> u32 {
    cpus().div_ceil(8).clamp(1, 256)
}

/// A list of CPU numbers from `--pin-cpus`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuList(pub Vec<usize>);

/// Parses `0-3,6,8-9` into CPU numbers.
pub fn parse_cpu_list(s: &str) -> Result<CpuList, String> {
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
    if let Some(&c) = cpus.iter().find(|&&c| c >= 1024) {
        return Err(format!("CPU {c} is out of range (at most 1023)"));
    }
    Ok(CpuList(cpus))
}

#[derive(Debug, clap::Args)]
pub struct NativeRefArgs {
    #[arg(long, default_value = "127.0.0.1")]
    pub host: IpAddr,
    #[arg(long, default_value_t = 8000)]
    pub port: u16,
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub threads: u32,
    #[arg(long, value_enum, default_value = "auto")]
    pub io_driver: IoDriver,
    #[arg(long, default_value = "info")]
    pub log_level: LogLevel,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogLevel {
    Critical,
    Error,
    Warning,
    Info,
    Debug,
    Trace,
}

impl LogLevel {
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
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

/// A failure to report as `error: …` / `hint: …` with a non-zero exit code.
#[derive(Debug)]
pub struct Failure {
    pub error: String,
    pub hint: String,
    pub code: u8,
}

impl Failure {
    pub fn new(error: impl Into<String>, hint: impl Into<String>) -> Self {
        Self {
            error: error.into(),
            hint: hint.into(),
            code: 1,
        }
    }
}

pub fn seconds(s: f64) -> Duration {
    Duration::try_from_secs_f64(s.max(0.0)).unwrap_or(Duration::MAX)
}

fn init_logging(level: LogLevel) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("URINGAPI_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!("{},monoio=warn", level.filter()))
    });
    use std::io::IsTerminal;
    let ansi = std::io::stderr().is_terminal();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(ansi)
        .try_init();
}

/// Runs the command line; returns the process exit code.
pub fn main_from_args(args: impl IntoIterator<Item = OsString>) -> u8 {
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(
                e.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) {
                let _ = e.print();
                return if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                    2
                } else {
                    0
                };
            }
            let rendered = e.render().to_string();
            let first = rendered.lines().next().unwrap_or("invalid arguments");
            let first = first.strip_prefix("error: ").unwrap_or(first);
            eprintln!("error: {first}");
            eprintln!("hint: run 'uringapi serve --help' to see the options and their values");
            return 2;
        }
    };
    let result = match cli.command {
        Cmd::Serve(args) => {
            init_logging(args.log_level);
            crate::supervisor::serve(*args)
        }
        Cmd::NativeRef(args) => {
            init_logging(args.log_level);
            crate::native::serve(args)
        }
    };
    match result {
        Ok(()) => 0,
        Err(f) => {
            eprintln!("error: {}", f.error);
            eprintln!("hint: {}", f.hint);
            f.code
        }
    }
}
