//! The `uringapi` command line. Flags mirror uvicorn's and gunicorn's where they exist; each
//! has its `URINGAPI_*` variable. Parsed arguments become the library's config structs
//! (`ServeArgs::into_config`), so `uringapi-server` does not know clap.

use std::ffi::OsString;
use std::net::IpAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use uringapi_server::config::{CpuList, NativeRefConfig, ServeConfig};
use uringapi_server::proxy::Trusted;
use uringapi_server::statics::{parse_mount, Mount};

use crate::foreign::{self, context};
use crate::tls::TlsArgs;
use crate::values::{
    parse_header, parse_health_path, parse_non_negative, parse_octal_mode, parse_root_path,
    FormatArg, HttpModeArg, IoDriverArg, LifespanArg, LogLevelArg, SchedArg, WsModeArg,
};

/// uringapi: serve ASGI apps (FastAPI, Starlette, Litestar) from an io_uring front end and
/// separate uvloop worker processes joined by shared-memory rings.
#[derive(Debug, Parser)]
#[command(name = "uringapi", version, propagate_version = true, color = clap::ColorChoice::Never)]
// A repeated option takes its last value, as under uvicorn and granian (click) and gunicorn
// (argparse): a command line that adds to a script's own options overrides them.
#[command(args_override_self = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Cmd,
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Serve an ASGI app: `uringapi serve module:attr --workers N`.
    // display_name: `serve --version` says `uringapi 0.1.0`, as `uringapi --version` does.
    #[command(display_name = "uringapi")]
    Serve(Box<ServeArgs>),
    /// Serve a static "Hello, world!" from the front end alone (the benchmark ceiling).
    #[command(display_name = "uringapi")]
    NativeRef(NativeRefArgs),
}

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// The app as `module:attribute`, imported like uvicorn does. Without it, a built-in
    /// demo app is served.
    #[arg(env = "URINGAPI_APP")]
    pub app: Option<String>,
    /// Address to bind: an IP literal (`::1`, `0.0.0.0`) or a host name; a name binds every
    /// address it resolves to (`localhost`: 127.0.0.1 and ::1).
    #[arg(long, default_value = "127.0.0.1", env = "URINGAPI_HOST")]
    pub host: String,
    /// Port to bind (0 picks a free one).
    #[arg(long, default_value_t = 8000, env = "URINGAPI_PORT")]
    pub port: u16,
    /// Python worker processes. Default: one per CPU this process may use.
    #[arg(long, default_value_t = default_workers(), env = "URINGAPI_WORKERS", value_parser = clap::value_parser!(u32).range(1..=256))]
    pub workers: u32,
    /// Front-end io_uring threads, each with its own listener. Default: one per 8 CPUs.
    #[arg(long, default_value_t = default_threads(), env = "URINGAPI_THREADS", value_parser = clap::value_parser!(u32).range(1..=256))]
    pub threads: u32,
    /// Treat the app as a factory: call `module:attribute()` without arguments and serve
    /// the ASGI app it returns.
    #[arg(long, env = "URINGAPI_FACTORY")]
    pub factory: bool,
    /// Load environment variables from this file (dotenv format: `KEY=value`, `export`,
    /// quotes, `#` comments) before the workers start; variables already set are kept.
    #[arg(long, value_name = "PATH", env = "URINGAPI_ENV_FILE")]
    pub env_file: Option<PathBuf>,
    /// Serve on an inherited, already listening TCP socket: file descriptor N (instead of
    /// --host/--port). Under systemd socket activation (LISTEN_FDS) this is automatic.
    #[arg(long, value_name = "N", env = "URINGAPI_FD")]
    pub fd: Option<i32>,
    /// Serve on a Unix domain socket at this path instead of TCP (behind nginx or another
    /// proxy on the same host). A stale socket file left by a crash is replaced; the file
    /// is removed on exit. Not with --host/--port/--fd.
    #[arg(long, value_name = "PATH", env = "URINGAPI_UDS", conflicts_with_all = ["host", "port", "fd"])]
    pub uds: Option<PathBuf>,
    /// Permissions of the --uds socket file, in octal (`660`, `0o600`). Default: what the
    /// umask leaves. Connecting needs write permission on the file.
    #[arg(long, value_name = "MODE", value_parser = parse_octal_mode, requires = "uds", env = "URINGAPI_UDS_PERMS")]
    pub uds_perms: Option<u32>,
    /// Write the front end's process id to this file (gunicorn's `--pid`, granian's
    /// `--pid-file`), for init scripts and logrotate (`kill -USR1 $(cat PATH)`); removed on
    /// exit. Refused while the file names another running process.
    #[arg(long, value_name = "PATH", env = "URINGAPI_PID_FILE")]
    pub pid_file: Option<PathBuf>,
    /// Add this header to every response, `NAME:VALUE` (repeatable). The app's own headers
    /// come first; a default header is sent as well even when the app set the same name.
    #[arg(long, value_name = "NAME:VALUE", value_parser = parse_header, env = "URINGAPI_HEADER")]
    pub header: Vec<(String, String)>,
    /// Python logging configuration for the workers: a JSON file (logging.config.dictConfig)
    /// or an .ini file (logging.config.fileConfig), applied after uringapi's own set-up.
    #[arg(long, value_name = "PATH", env = "URINGAPI_LOG_CONFIG")]
    pub log_config: Option<PathBuf>,
    /// Colour the front end's log lines (default: only when stderr is a terminal).
    #[arg(long, overrides_with = "no_use_colors", env = "URINGAPI_USE_COLORS")]
    pub use_colors: bool,
    /// Never colour the front end's log lines.
    #[arg(long, overrides_with = "use_colors", env = "URINGAPI_NO_USE_COLORS")]
    pub no_use_colors: bool,
    /// Development: restart the workers (not the front end; the listeners stay open) when a
    /// watched file changes. With --workers N, all N are replaced one at a time.
    #[arg(long, env = "URINGAPI_RELOAD")]
    pub reload: bool,
    /// A directory to watch with --reload (repeatable). Default: --app-dir.
    #[arg(long, value_name = "DIR", env = "URINGAPI_RELOAD_DIR")]
    pub reload_dir: Vec<PathBuf>,
    /// A glob of file names that trigger --reload (repeatable). Default: `*.py`.
    #[arg(long, value_name = "GLOB", env = "URINGAPI_RELOAD_INCLUDE")]
    pub reload_include: Vec<String>,
    /// A glob of file or directory names that never trigger --reload (repeatable), on top
    /// of the defaults `.*`, `*.py[cod]`, `*.sw.*`, `~*`; files in `__pycache__`,
    /// `node_modules` and `site-packages` never do either.
    #[arg(long, value_name = "GLOB", env = "URINGAPI_RELOAD_EXCLUDE")]
    pub reload_exclude: Vec<String>,
    /// Directory the app is imported from (put first on sys.path). Default: the current one.
    #[arg(long, env = "URINGAPI_APP_DIR")]
    pub app_dir: Option<PathBuf>,
    /// Log level: critical, error, warning, info, debug, trace (any case, as uvicorn's).
    #[arg(
        long,
        default_value = "info",
        ignore_case = true,
        env = "URINGAPI_LOG_LEVEL"
    )]
    pub log_level: LogLevelArg,
    /// Python interpreter for the workers. Default: the one that runs `uringapi`, else python3.
    #[arg(long, env = "URINGAPI_PYTHON")]
    pub python: Option<PathBuf>,
    /// I/O driver: io_uring with fallback to epoll (auto), or one of them forced.
    #[arg(long, value_enum, default_value = "auto", env = "URINGAPI_IO_DRIVER")]
    pub io_driver: IoDriverArg,
    /// Listen backlog.
    #[arg(long, default_value_t = 2048, env = "URINGAPI_BACKLOG")]
    pub backlog: i32,
    /// Run the ASGI lifespan protocol: auto (if the app supports it), on, off.
    #[arg(long, default_value = "auto", env = "URINGAPI_LIFESPAN")]
    pub lifespan: LifespanArg,
    /// Bytes per shared-memory slot (request heads must fit in one; bodies stream through).
    #[arg(long, default_value_t = 64 * 1024, env = "URINGAPI_SLOT_SIZE")]
    pub slot_size: u32,
    /// Slots per channel direction.
    // PERF: 128 rather than 64, so that many HTTP/2 streams in flight on one worker find
    // response slots (README, "HTTP/2": 8 x 100 streams 1.65x granian's req/s against
    // 1.43x with 64, shared machine); the shared memory a burst touches doubles.
    #[arg(long, default_value_t = 128, env = "URINGAPI_CHANNEL_SLOTS")]
    pub channel_slots: u32,
    /// Records per ring (a power of two).
    #[arg(long, default_value_t = 256, env = "URINGAPI_RING_CAPACITY")]
    pub ring_capacity: u32,
    /// Longest request line in bytes, without its CRLF (414 past it); 0: no limit of its
    /// own, as gunicorn's 0 (the whole head stays within 64 KiB).
    #[arg(long, default_value_t = 8190, env = "URINGAPI_LIMIT_REQUEST_LINE")]
    pub limit_request_line: usize,
    /// Most header fields in a request (431 past it); 0: no limit of its own (the whole
    /// head stays within 64 KiB).
    #[arg(long, default_value_t = 100, env = "URINGAPI_LIMIT_REQUEST_FIELDS")]
    pub limit_request_fields: usize,
    /// Longest header field, name plus value, in bytes (431 past it); 0: no limit of its
    /// own, as gunicorn's 0 (the whole head stays within 64 KiB).
    #[arg(
        long,
        default_value_t = 8190,
        env = "URINGAPI_LIMIT_REQUEST_FIELD_SIZE"
    )]
    pub limit_request_field_size: usize,
    /// Largest request body in bytes (413 past it); 0 means no limit.
    #[arg(long, default_value_t = 0, env = "URINGAPI_LIMIT_REQUEST_BODY")]
    pub limit_request_body: u64,
    /// Most open connections per front-end thread; 0 means no limit. Default: the fd
    /// limit (raised to its hard maximum at start-up) minus a reserve of 256 (a quarter of
    /// a limit under 1024), split over --threads.
    #[arg(long, env = "URINGAPI_LIMIT_CONNECTIONS")]
    pub limit_connections: Option<usize>,
    /// Seconds an idle keep-alive connection is kept open; 0: no keep-alive (each HTTP/1.1
    /// response closes its connection).
    #[arg(long, value_parser = parse_non_negative, default_value_t = 65.0, env = "URINGAPI_TIMEOUT_KEEP_ALIVE")]
    pub timeout_keep_alive: f64,
    /// Seconds a client has to send a whole request head, from its first byte; 0: no limit.
    #[arg(long, value_parser = parse_non_negative, default_value_t = 30.0, env = "URINGAPI_TIMEOUT_HEADER_READ")]
    pub timeout_header_read: f64,
    /// Seconds a client may pause while sending a request body (408), or take none of a
    /// response's bytes (the connection is closed); 0: no limit.
    #[arg(long, value_parser = parse_non_negative, default_value_t = 60.0, env = "URINGAPI_TIMEOUT_BODY_READ")]
    pub timeout_body_read: f64,
    /// Least average rate, in bytes per second, at which a request body must arrive after
    /// the first --timeout-body-read seconds (408 below it); 0 turns it off.
    #[arg(long, default_value_t = 500, env = "URINGAPI_MIN_BODY_RATE")]
    pub min_body_rate: u64,
    /// Seconds to let requests in flight finish on SIGTERM/SIGINT, counted from the signal
    /// (a second signal stops at once).
    #[arg(
        long,
        value_parser = parse_non_negative,
        default_value_t = 30.0,
        env = "URINGAPI_TIMEOUT_GRACEFUL_SHUTDOWN"
    )]
    pub timeout_graceful_shutdown: f64,
    /// Seconds a worker (a replacement too) has to import the app and finish lifespan
    /// startup; past it the worker logs where it was and ends with an error (0: no limit;
    /// a longer first start is logged after 5 s, then every 10 s).
    #[arg(long, value_parser = parse_non_negative, default_value_t = 60.0, env = "URINGAPI_TIMEOUT_WORKER_STARTUP")]
    pub timeout_worker_startup: f64,
    /// Do not send a Date header.
    #[arg(long, overrides_with = "date_header", env = "URINGAPI_NO_DATE_HEADER")]
    pub no_date_header: bool,
    /// Accepted for uvicorn compatibility: the Date header is sent unless --no-date-header.
    #[arg(
        long,
        hide = true,
        overrides_with = "no_date_header",
        env = "URINGAPI_DATE_HEADER"
    )]
    pub date_header: bool,
    /// Do not send a Server header.
    #[arg(
        long,
        overrides_with = "server_header",
        env = "URINGAPI_NO_SERVER_HEADER"
    )]
    pub no_server_header: bool,
    /// Accepted for uvicorn compatibility: the Server header is sent unless
    /// --no-server-header.
    #[arg(
        long,
        hide = true,
        overrides_with = "no_server_header",
        env = "URINGAPI_SERVER_HEADER"
    )]
    pub server_header: bool,
    /// ASGI root_path, for apps mounted below a prefix by a proxy: empty, or a path starting
    /// with / (`/api`).
    #[arg(long, default_value = "", value_parser = parse_root_path, env = "URINGAPI_ROOT_PATH")]
    pub root_path: String,
    /// Seconds a worker's event loop may stay silent before the worker is killed (SIGABRT,
    /// which prints its Python stack, then SIGKILL) and replaced; 0 turns it off.
    #[arg(long, value_parser = parse_non_negative, default_value_t = 60.0, env = "URINGAPI_TIMEOUT")]
    pub timeout: f64,
    /// Seconds a worker's event loop may make no progress before it gets no new requests
    /// (until it moves again); the log names the requests in flight on it.
    #[arg(long, value_parser = parse_non_negative, default_value_t = 0.1, env = "URINGAPI_STALL_TIMEOUT")]
    pub stall_timeout: f64,
    /// Most requests in flight per worker; past it requests wait in the queue. 0: no limit.
    #[arg(long, default_value_t = 0, env = "URINGAPI_LIMIT_CONCURRENCY")]
    pub limit_concurrency: u32,
    /// Most requests waiting for a worker per front-end thread; past it, 503 at once.
    #[arg(long, default_value_t = 1024, env = "URINGAPI_LIMIT_QUEUE")]
    pub limit_queue: usize,
    /// Seconds a request may wait for a worker before it gets 503 with Retry-After.
    #[arg(long, value_parser = parse_non_negative, default_value_t = 10.0, env = "URINGAPI_QUEUE_TIMEOUT")]
    pub queue_timeout: f64,
    /// Seconds a request may run before it gets 504 (or a closed connection once its
    /// response started) and its task is cancelled in the worker. 0: no limit.
    #[arg(long, value_parser = parse_non_negative, default_value_t = 0.0, env = "URINGAPI_TIMEOUT_REQUEST")]
    pub timeout_request: f64,
    /// Recycle a worker once its RSS passes this many MiB (plus jitter). 0: never.
    #[arg(long, default_value_t = 0, env = "URINGAPI_WORKERS_MAX_RSS")]
    pub workers_max_rss: u64,
    /// Recycle a worker after this many seconds (plus jitter). 0: never.
    #[arg(long, value_parser = parse_non_negative, default_value_t = 0.0, env = "URINGAPI_WORKERS_LIFETIME")]
    pub workers_lifetime: f64,
    /// Recycle a worker after it served this many requests (plus jitter). 0: never.
    #[arg(long, default_value_t = 0, env = "URINGAPI_LIMIT_MAX_REQUESTS")]
    pub limit_max_requests: u64,
    /// Each recycling threshold is raised by a random 0..this fraction per worker, so
    /// workers do not all recycle at once.
    #[arg(long, value_parser = parse_non_negative, default_value_t = 0.1, env = "URINGAPI_RECYCLE_JITTER")]
    pub recycle_jitter: f64,
    /// WebSockets: auto (upgrade requests become the ASGI websocket scope, framed by the
    /// front end), off (they reach the app as plain http requests).
    #[arg(long, value_enum, default_value = "auto", env = "URINGAPI_WS")]
    pub ws: WsModeArg,
    /// Largest WebSocket message in bytes, after decompression (close 1009 past it); at
    /// least 1 (0 would close every WebSocket on its first message).
    #[arg(long, default_value_t = 16 * 1024 * 1024, env = "URINGAPI_WS_MAX_SIZE", value_parser = clap::value_parser!(u64).range(1..))]
    pub ws_max_size: u64,
    /// Seconds between keep-alive pings on an open WebSocket (0: none).
    #[arg(long, value_parser = parse_non_negative, default_value_t = 20.0, env = "URINGAPI_WS_PING_INTERVAL")]
    pub ws_ping_interval: f64,
    /// Seconds a ping waits for its pong before the WebSocket is closed with 1011, and a
    /// write to a client that reads nothing waits before it is dropped (1011 to the app);
    /// 0: for ever.
    #[arg(long, value_parser = parse_non_negative, default_value_t = 20.0, env = "URINGAPI_WS_PING_TIMEOUT")]
    pub ws_ping_timeout: f64,
    /// Offer permessage-deflate (RFC 7692) to WebSocket clients that ask for it: true or
    /// false (or, as uvicorn takes them, yes/no, on/off, 1/0, t/f, y/n, in any case).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_parser = clap::builder::BoolishValueParser::new(), env = "URINGAPI_WS_PER_MESSAGE_DEFLATE")]
    pub ws_per_message_deflate: bool,
    /// Give every request an X-Request-ID: the client's if it sent one, else a generated one,
    /// passed to the app as a request header and written to the access log. Off by default
    /// so that apps see exactly the headers the client sent, as under uvicorn.
    #[arg(long, env = "URINGAPI_REQUEST_ID")]
    pub request_id: bool,
    /// Serve the files under DIR at URL prefix PREFIX from the front end, without Python
    /// (`/static=./public`); GET and HEAD, with ETag, Last-Modified, 304 and Range.
    /// Repeatable.
    #[arg(long, value_name = "PREFIX=DIR", value_parser = parse_mount, env = "URINGAPI_STATIC_MOUNT")]
    pub static_mount: Vec<Mount>,
    /// Answer GET PATH with 200 "ok" from the front end (503 while draining), e.g. for a
    /// load balancer's health check on the app port.
    #[arg(long, value_name = "PATH", value_parser = parse_health_path, env = "URINGAPI_HEALTH_PATH")]
    pub health_path: Option<String>,
    /// Serve Prometheus metrics at /metrics, and /healthz and /readyz, on this port.
    #[arg(long, env = "URINGAPI_METRICS_PORT")]
    pub metrics_port: Option<u16>,
    /// Address for --metrics-port. Loopback unless said otherwise, whatever --host is:
    /// metrics and health are for the operator, not for the app's clients.
    #[arg(long, env = "URINGAPI_METRICS_HOST", default_value = "127.0.0.1")]
    pub metrics_host: IpAddr,
    /// Write one access log line per request (off by default; written by the front end,
    /// not by the Python workers).
    #[arg(long, overrides_with = "no_access_log", env = "URINGAPI_ACCESS_LOG")]
    pub access_log: bool,
    /// No access log (the default; uvicorn's flag): overrides --access-log-file, and an
    /// --access-log before it or in URINGAPI_ACCESS_LOG.
    #[arg(long, overrides_with = "access_log", env = "URINGAPI_NO_ACCESS_LOG")]
    pub no_access_log: bool,
    /// Access log format: common or combined (Apache's, plus request id and duration in
    /// microseconds), or json.
    #[arg(
        long,
        value_enum,
        default_value = "combined",
        env = "URINGAPI_ACCESS_LOG_FORMAT"
    )]
    pub access_log_format: FormatArg,
    /// Write the access log to this file instead of stderr (implies --access-log); SIGUSR1
    /// reopens it after log rotation.
    #[arg(long, env = "URINGAPI_ACCESS_LOG_FILE")]
    pub access_log_file: Option<PathBuf>,
    /// Do not take the client address and scheme from X-Forwarded-For / X-Forwarded-Proto
    /// (by default they are believed from the peers in --forwarded-allow-ips, as uvicorn).
    #[arg(long, env = "URINGAPI_NO_PROXY_HEADERS")]
    pub no_proxy_headers: bool,
    /// Accepted for uvicorn compatibility: proxy headers are on unless --no-proxy-headers.
    #[arg(long, hide = true, env = "URINGAPI_PROXY_HEADERS")]
    pub proxy_headers: bool,
    /// Peers whose proxy headers are believed: IPs, CIDR networks, or `*`, comma-separated.
    #[arg(long, default_value = "127.0.0.1", env = "URINGAPI_FORWARDED_ALLOW_IPS", value_parser = Trusted::parse)]
    pub forwarded_allow_ips: Trusted,
    /// Pin front-end threads and workers to these CPUs, e.g. `0-3` or `0,2,4,6`: thread t
    /// gets the t-th CPU, worker i the (threads + i)-th, wrapping around.
    #[arg(long, value_parser = CpuList::parse, env = "URINGAPI_PIN_CPUS")]
    pub pin_cpus: Option<CpuList>,
    /// Scheduling policy of the front-end threads and workers: batch (SCHED_BATCH, a thread
    /// that wakes does not preempt a running one, so each wakeup finds more requests waiting)
    /// or normal (SCHED_OTHER). A real-time or idle policy the server was started under
    /// (`chrt`) is kept.
    #[arg(long, value_enum, default_value = "batch", env = "URINGAPI_SCHED")]
    pub sched: SchedArg,
    /// HTTP versions served: auto (HTTP/1.1, plus HTTP/2 chosen by ALPN on TLS or by the
    /// client preface on a plain port), 1 (HTTP/1.1 only) or 2 (HTTP/2 only).
    #[arg(long, value_enum, default_value = "auto", env = "URINGAPI_HTTP")]
    pub http: HttpModeArg,
    /// HTTP/2: most streams a client may have open at once on one connection
    /// (SETTINGS_MAX_CONCURRENT_STREAMS).
    #[arg(long, default_value_t = 200, env = "URINGAPI_H2_MAX_CONCURRENT_STREAMS", value_parser = clap::value_parser!(u32).range(1..))]
    pub h2_max_concurrent_streams: u32,
    /// TLS: uvicorn's `--ssl-*` flags and `--ktls` (server/src/tls/).
    #[command(flatten)]
    pub tls: TlsArgs,
}

impl ServeArgs {
    /// `--use-colors` / `--no-use-colors`; `None`: colour when stderr is a terminal.
    pub fn colors(&self) -> Option<bool> {
        if self.no_use_colors {
            Some(false)
        } else if self.use_colors {
            Some(true)
        } else {
            None
        }
    }

    /// The library's config: every option but the ones that only the command line has
    /// (the log colours, which `logging::init` takes, and uvicorn's no-op `--proxy-headers`).
    /// A field added on either side fails to compile here until the other has it.
    pub fn into_config(self) -> ServeConfig {
        let ServeArgs {
            app,
            host,
            port,
            workers,
            threads,
            factory,
            env_file,
            fd,
            uds,
            uds_perms,
            pid_file,
            header,
            log_config,
            use_colors: _,
            no_use_colors: _,
            reload,
            reload_dir,
            reload_include,
            reload_exclude,
            app_dir,
            log_level,
            python,
            io_driver,
            backlog,
            lifespan,
            slot_size,
            channel_slots,
            ring_capacity,
            limit_request_line,
            limit_request_fields,
            limit_request_field_size,
            limit_request_body,
            limit_connections,
            timeout_keep_alive,
            timeout_header_read,
            timeout_body_read,
            min_body_rate,
            timeout_graceful_shutdown,
            timeout_worker_startup,
            no_date_header,
            date_header,
            no_server_header,
            server_header,
            root_path,
            timeout,
            stall_timeout,
            limit_concurrency,
            limit_queue,
            queue_timeout,
            timeout_request,
            workers_max_rss,
            workers_lifetime,
            limit_max_requests,
            recycle_jitter,
            ws,
            ws_max_size,
            ws_ping_interval,
            ws_ping_timeout,
            ws_per_message_deflate,
            request_id,
            static_mount,
            health_path,
            metrics_port,
            metrics_host,
            access_log,
            no_access_log,
            access_log_format,
            access_log_file,
            no_proxy_headers,
            proxy_headers: _,
            forwarded_allow_ips,
            pin_cpus,
            sched,
            http,
            h2_max_concurrent_streams,
            tls,
        } = self;
        ServeConfig {
            app,
            host,
            port,
            workers,
            threads,
            factory,
            env_file,
            fd,
            uds,
            uds_perms,
            header,
            log_config,
            reload,
            reload_dir,
            reload_include,
            reload_exclude,
            app_dir,
            log_level: log_level.into(),
            python,
            io_driver: io_driver.into(),
            backlog,
            pid_file,
            lifespan: lifespan.into(),
            slot_size,
            channel_slots,
            ring_capacity,
            limit_request_line,
            limit_request_fields,
            limit_request_field_size,
            limit_request_body,
            limit_connections,
            timeout_keep_alive,
            timeout_header_read,
            timeout_body_read,
            min_body_rate,
            timeout_graceful_shutdown,
            timeout_worker_startup,
            no_date_header: no_date_header && !date_header,
            no_server_header: no_server_header && !server_header,
            root_path,
            timeout,
            stall_timeout,
            limit_concurrency,
            limit_queue,
            queue_timeout,
            timeout_request,
            workers_max_rss,
            workers_lifetime,
            limit_max_requests,
            recycle_jitter,
            ws: ws.into(),
            ws_max_size,
            ws_ping_interval,
            ws_ping_timeout,
            ws_per_message_deflate,
            request_id,
            static_mount,
            health_path,
            metrics_port,
            metrics_host,
            access_log: access_log && !no_access_log,
            access_log_format: access_log_format.into(),
            access_log_file: access_log_file.filter(|_| !no_access_log),
            no_proxy_headers,
            forwarded_allow_ips,
            pin_cpus,
            sched: sched.into(),
            http: http.into(),
            h2_max_concurrent_streams,
            tls: tls.into(),
        }
    }
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

#[derive(Debug, clap::Args)]
pub struct NativeRefArgs {
    #[arg(long, default_value = "127.0.0.1", env = "URINGAPI_HOST")]
    pub host: IpAddr,
    #[arg(long, default_value_t = 8000, env = "URINGAPI_PORT")]
    pub port: u16,
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=256), env = "URINGAPI_THREADS")]
    pub threads: u32,
    #[arg(long, value_enum, default_value = "auto", env = "URINGAPI_IO_DRIVER")]
    pub io_driver: IoDriverArg,
    #[arg(
        long,
        default_value = "info",
        ignore_case = true,
        env = "URINGAPI_LOG_LEVEL"
    )]
    pub log_level: LogLevelArg,
}

impl NativeRefArgs {
    /// The library's config (the log level is the command line's business).
    pub fn into_config(self) -> NativeRefConfig {
        let NativeRefArgs {
            host,
            port,
            threads,
            io_driver,
            log_level: _,
        } = self;
        NativeRefConfig {
            host,
            port,
            threads,
            io_driver: io_driver.into(),
        }
    }
}

/// The options uvicorn also reads from `UVICORN_<ID>` that have the same name and meaning
/// here (a container image's `ENV UVICORN_PORT=8000` carries over). Not borrowed: those
/// whose values mean other things here (`HTTP`, `WS`, `LOOP`), whose behaviour differs
/// (`LIMIT_CONCURRENCY` answers 503 under uvicorn and queues here; `PROXY_HEADERS` and the
/// other switches, whose defaults differ), and lists (`HEADER`).
const UVICORN_VARIABLES: &[&str] = &[
    "APP",
    "HOST",
    "PORT",
    "UDS",
    "FD",
    "WORKERS",
    "LOG_LEVEL",
    "LOG_CONFIG",
    "ENV_FILE",
    "APP_DIR",
    "ROOT_PATH",
    "BACKLOG",
    "LIFESPAN",
    "TIMEOUT_KEEP_ALIVE",
    "TIMEOUT_GRACEFUL_SHUTDOWN",
    "LIMIT_MAX_REQUESTS",
    "FORWARDED_ALLOW_IPS",
    "SSL_KEYFILE",
    "SSL_CERTFILE",
    "SSL_KEYFILE_PASSWORD",
    "SSL_CA_CERTS",
    "SSL_CERT_REQS",
    "SSL_CIPHERS",
    "WS_MAX_SIZE",
    "WS_PING_INTERVAL",
    "WS_PING_TIMEOUT",
    "WS_PER_MESSAGE_DEFLATE",
];

/// Parses the command line. `Err`: the exit code, once help, the version or an
/// `error:`/`hint:` pair for bad arguments is printed.
pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Cli, u8> {
    let args: Vec<OsString> = args.into_iter().collect();
    // Variables other servers read, honoured when ours is not set, in uvicorn's order:
    // its UVICORN_<OPTION> (click's auto_envvar_prefix) for the options that mean the same
    // here, then its spelling of --forwarded-allow-ips, and the worker count that uvicorn,
    // gunicorn and hosting platforms (Heroku, Render...) take from WEB_CONCURRENCY.
    let mut borrowed = Vec::new();
    let uvicorns = UVICORN_VARIABLES
        .iter()
        .map(|id| (format!("UVICORN_{id}"), *id));
    let others = [
        ("FORWARDED_ALLOW_IPS", "FORWARDED_ALLOW_IPS"),
        ("WEB_CONCURRENCY", "WORKERS"),
    ]
    .map(|(theirs, id)| (theirs.to_string(), id));
    for (theirs, id) in uvicorns.chain(others) {
        let ours = format!("URINGAPI_{id}");
        let flag = format!("--{}", id.to_lowercase().replace('_', "-"));
        if std::env::var_os(&ours).is_none() {
            if let Some(v) = std::env::var_os(&theirs) {
                std::env::set_var(&ours, v);
                borrowed.push((theirs, ours, flag));
            }
        }
    }
    let cli = match Cli::try_parse_from(&args) {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::{ContextKind, ErrorKind};
            if matches!(
                e.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) {
                let _ = e.print();
                return Err(
                    if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                        2
                    } else {
                        0
                    },
                );
            }
            let rendered = e.render().to_string();
            let mut lines = rendered.lines();
            let first = lines.next().unwrap_or("invalid arguments");
            let mut first = first.strip_prefix("error: ").unwrap_or(first).to_string();
            // "the following required arguments were not provided:" names them below.
            if first.ends_with(':') {
                let named: Vec<&str> = lines
                    .take_while(|l| l.starts_with("  "))
                    .map(str::trim)
                    .collect();
                first = format!("{first} {}", named.join(", "));
            }
            eprintln!("error: {first}");
            if e.kind() == ErrorKind::ArgumentConflict && first.contains("--uds") {
                eprintln!("hint: --uds serves on a Unix socket instead of TCP: pass either --uds or --host/--port/--fd (or their URINGAPI_* variables), not both");
            } else if let Some((theirs, ours, _)) = borrowed.iter().find(|(theirs, _, flag)| {
                let value = std::env::var(theirs).ok();
                first.contains(&format!("'{flag} "))
                    && context(&e, ContextKind::InvalidValue) == value.as_deref()
            }) {
                eprintln!("hint: the value is {theirs}'s (read when {ours} is not set): fix or unset it, or give the option on the command line");
            } else if let Some(ours) = from_our_variable(&e, &args) {
                let values = near_miss(&e).map(|h| format!("; {h}")).unwrap_or_default();
                eprintln!("hint: the value is {ours}'s: fix or unset it, or give the option on the command line{values}");
            } else if let Some(hint) = foreign::hint(&e) {
                eprintln!("hint: {hint}");
            } else if let Some(hint) = near_miss(&e) {
                eprintln!("hint: {hint}");
            } else {
                eprintln!("hint: run 'uringapi serve --help' to see the options and their values");
            }
            return Err(2);
        }
    };
    Ok(cli)
}

/// The `URINGAPI_<OPTION>` variable a bad value came from: the option is not on the command
/// line and the variable holds the value clap refused.
fn from_our_variable(e: &clap::Error, args: &[OsString]) -> Option<String> {
    use clap::error::ContextKind;
    let flag = context(e, ContextKind::InvalidArg)?
        .split([' ', '='])
        .next()?;
    let id = flag.strip_prefix("--")?.replace('-', "_").to_uppercase();
    let given = args.iter().filter_map(|a| a.to_str()).any(|a| {
        a.strip_prefix(flag)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('='))
    });
    let ours = format!("URINGAPI_{id}");
    let value = std::env::var(&ours).ok()?;
    (!given && context(e, ContextKind::InvalidValue) == Some(value.as_str())).then_some(ours)
}

/// What clap knows of the mistake: the values an option takes, and the option or value
/// nearest to a misspelt one. Its own message says so on lines of its own, which the one
/// `error:` line leaves out.
fn near_miss(e: &clap::Error) -> Option<String> {
    use clap::error::{ContextKind, ContextValue};
    if let Some(flag) = foreign::context(e, ContextKind::SuggestedArg) {
        return Some(format!(
            "did you mean {flag}? ('uringapi serve --help' lists the options)"
        ));
    }
    if let Some(ContextValue::Strings(subs)) = e.get(ContextKind::SuggestedSubcommand) {
        let sub = subs.first()?;
        return Some(format!(
            "did you mean 'uringapi {sub}'? ('uringapi --help' lists the commands)"
        ));
    }
    let Some(ContextValue::Strings(values)) = e.get(ContextKind::ValidValue) else {
        return None;
    };
    let arg = foreign::context(e, ContextKind::InvalidArg)?;
    let arg = arg.split([' ', '=']).next()?;
    let listed = values.join(", ");
    Some(match foreign::context(e, ContextKind::SuggestedValue) {
        Some(near) => format!("did you mean {arg} {near}? ({arg} takes one of: {listed})"),
        None => format!("{arg} takes one of: {listed}"),
    })
}

#[cfg(test)]
#[path = "cli_tests.rs"]
mod tests;
