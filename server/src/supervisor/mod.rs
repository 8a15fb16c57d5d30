//! The supervisor: binds the listeners, creates each worker's segment, spawns and watches the
//! worker processes, starts the front-end threads, and owns the signals.
//!
//! Start-up is all-or-nothing: if any worker dies before it reports ready (the app does not
//! import, or its lifespan startup fails), the server stops with that worker's error instead
//! of respawning it in a loop. After start-up, a worker that dies is replaced with backoff
//! and only its own requests in flight fail (502).

use std::collections::VecDeque;
use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use uringapi_protocol::doorbell::EventFd;
use uringapi_protocol::{Geometry, Segment};

use crate::accesslog::{Destination, Sink};
use crate::cli::{seconds, Failure, ServeArgs};
use crate::dispatch::{Command as ThreadCmd, Mailbox, Report};
use crate::frontend::{self, Started, ThreadSetup};
use crate::http1::conn::ConnConfig;
use crate::http1::encode::HeaderOptions;
use crate::http1::parse::HeadLimits;
use crate::load::LoadTable;
use crate::metrics::{Metrics, ProcessSnapshot, WorkerSnapshot};

mod board;
mod listen;
mod notify;
mod reload;
pub(crate) mod threadwatch;
mod watch;
mod worker;

use board::{Board, PUBLISH_EVERY};
use watch::Supervisor;
use worker::{rss_bytes, spawn, Recycling, Role, SpawnContext, Worker, Workers};

/// How often the supervisor looks at its workers and signals.
const TICK: Duration = Duration::from_millis(10);
/// Respawn backoff: doubles from the first value up to the second.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// A worker that stayed up this long resets its backoff.
const STABLE_AFTER: Duration = Duration::from_secs(30);

/// Binds one SO_REUSEPORT listener (each front-end thread gets its own).
pub fn bind(addr: SocketAddr, backlog: i32) -> Result<std::net::TcpListener, Failure> {
    use socket2::{Domain, Protocol, Socket, Type};
    let fail = |e: std::io::Error| {
        let hint = match e.raw_os_error() {
            Some(libc::EADDRINUSE) => format!(
                "another process is listening on port {}; stop it or pick another with --port",
                addr.port()
            ),
            Some(libc::EACCES) => {
                "ports below 1024 need root or CAP_NET_BIND_SERVICE; pick a port above 1024"
                    .to_string()
            }
            Some(libc::EADDRNOTAVAIL) => {
                "that address is not on this machine; use 127.0.0.1 or 0.0.0.0".to_string()
            }
            _ => "check --host and --port".to_string(),
        };
        Failure::new(format!("cannot listen on {addr}: {e}"), hint)
    };
    let s =
        Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP)).map_err(fail)?;
    s.set_reuse_address(true).map_err(fail)?;
    s.set_reuse_port(true).map_err(fail)?;
    s.set_nonblocking(true).map_err(fail)?;
    s.bind(&addr.into()).map_err(fail)?;
    s.listen(backlog).map_err(fail)?;
    Ok(s.into())
}

fn startup_failure(w: &mut Worker, status: std::process::ExitStatus) -> Failure {
    let msg = w.status_message();
    let line = |prefix: &str| {
        msg.lines()
            .find_map(|l| l.strip_prefix(prefix))
            .map(str::to_string)
    };
    let mut f = match (line("error: "), line("hint: ")) {
        (Some(e), Some(h)) => Failure::new(e, h),
        (Some(e), None) => Failure::new(e, "see the worker's output above"),
        _ => Failure::new(
            format!("worker {} exited ({status}) before it was ready", w.index),
            "see the worker's output above; check that the app imports with the same Python (--python)",
        ),
    };
    f.code = 1;
    f
}

fn default_python() -> PathBuf {
    std::env::var_os("URINGAPI_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("python3"))
}

pub fn serve(args: ServeArgs) -> Result<(), Failure> {
    // TLS files are read first: a bad one stops start-up before anything runs.
    let tls = if args.tls.enabled()? {
        let tls_args = crate::tls::TlsArgs {
            http: args.http,
            ..args.tls.clone()
        };
        let acceptor = crate::tls::Acceptor::new(&tls_args)?;
        if acceptor.ktls() {
            crate::tls::ktls::announce();
        }
        Some(acceptor)
    } else {
        None
    };
    let app = match &args.app {
        Some(app) => {
            let ok = app
                .split_once(':')
                .is_some_and(|(m, a)| !m.is_empty() && !a.is_empty());
            if !ok {
                return Err(Failure::new(
                    format!("app {app:?} is not of the form module:attribute"),
                    "name the app like uvicorn does, e.g. 'main:app' for the object app in main.py",
                ));
            }
            app.clone()
        }
        None => "uringapi.demo:app".to_string(),
    };
    let app_dir = match &args.app_dir {
        Some(d) if !d.is_dir() => {
            return Err(Failure::new(
                format!("--app-dir {} is not a directory", d.display()),
                "point --app-dir at the folder that holds your app module",
            ))
        }
        Some(d) => d.clone(),
        None => std::env::current_dir().unwrap_or_else(|_| PathBuf::from(".")),
    };
    let geometry = Geometry {
        threads: args.threads,
        ring_capacity: args.ring_capacity,
        slots: args.channel_slots,
        slot_size: args.slot_size,
    };
    geometry.validate().map_err(|e| {
        Failure::new(
            format!("invalid channel settings: {e}"),
            "see --slot-size, --channel-slots and --ring-capacity in --help",
        )
    })?;
    if args.stall_timeout <= 0.0 {
        return Err(Failure::new(
            "--stall-timeout must be above 0",
            "the default, 0.1 s, suits most apps; raise it for apps that block their loop on purpose",
        ));
    }
    if let Some(cpus) = &args.pin_cpus {
        let online = std::thread::available_parallelism().map_or(1, |n| n.get());
        if let Some(c) = cpus
            .0
            .iter()
            .find(|&&c| c >= online.max(1) && !cpu_online(c))
        {
            return Err(Failure::new(
                format!("--pin-cpus names CPU {c}, which this machine does not have"),
                format!("pick CPUs from 0 to {}", online.saturating_sub(1)),
            ));
        }
    }

    if let Some(path) = &args.env_file {
        // Before any worker starts: they inherit the variables. Ones already set win, as with
        // python-dotenv's default.
        dotenvy::from_path(path).map_err(|e| Failure {
            code: 2,
            ..Failure::new(
                format!("--env-file {}: {e}", path.display()),
                "point --env-file at a readable file of KEY=value lines",
            )
        })?;
    }
    if let Some(path) = &args.log_config {
        if !path.is_file() {
            return Err(Failure {
                code: 2,
                ..Failure::new(
                    format!("--log-config {} is not a file", path.display()),
                    "pass a JSON dictConfig file or an .ini fileConfig file",
                )
            });
        }
    }
    // Listeners first: a busy port should fail before any Python starts.
    let listen::Listeners {
        per_thread: listeners,
        addrs,
    } = listen::open(&args)?;
    let mailboxes: Vec<Arc<Mailbox>> = (0..args.threads)
        .map(|_| Mailbox::new().map(Arc::new))
        .collect::<Result<_, _>>()
        .map_err(|e| Failure::new(format!("cannot create an eventfd: {e}"), "check ulimit -n"))?;
    let stall = seconds(args.stall_timeout);
    let graceful = seconds(args.timeout_graceful_shutdown);
    let ctx = SpawnContext {
        python: args.python.clone().unwrap_or_else(default_python),
        app: app.clone(),
        app_dir,
        factory: args.factory,
        log_config: args.log_config.clone(),
        geometry,
        thread_doorbells: mailboxes
            .iter()
            .map(|m| crate::sys::raw(m.doorbell()))
            .collect(),
        log_level: args.log_level.python(),
        lifespan: args.lifespan.as_str(),
        root_path: args.root_path.clone(),
        heartbeat: (stall / 4).clamp(Duration::from_millis(5), Duration::from_secs(1)),
        graceful,
        cpus: args.pin_cpus.as_ref().map(|c| c.0.clone()),
        sched: args.sched,
        threads: args.threads as usize,
    };
    let recycling = Recycling {
        max_requests: args.limit_max_requests,
        lifetime: seconds(args.workers_lifetime),
        max_rss: args.workers_max_rss << 20,
        jitter: args.recycle_jitter,
    };

    let notify = notify::Notifier::from_env();
    let signals = Signals::install()?;
    let _reloader = reload::start(&args, &ctx.app_dir, signals.hup.clone())?;
    let load = Arc::new(LoadTable::default());
    let metrics = Metrics::new(args.threads as usize);
    let access_log = if args.access_log || args.access_log_file.is_some() {
        let dest = match &args.access_log_file {
            Some(p) => Destination::File(p.clone()),
            None => Destination::Stderr,
        };
        let sink = Sink::open(dest).map_err(|e| {
            Failure::new(
                format!("cannot open the access log: {e}"),
                "check that --access-log-file names a writable path",
            )
        })?;
        Some((sink, args.access_log_format))
    } else {
        None
    };
    let board = Arc::new(Board {
        metrics: metrics.clone(),
        load: load.clone(),
        workers: Mutex::default(),
        process: Mutex::default(),
        ready: AtomicBool::new(false),
    });
    if let Some(port) = args.metrics_port {
        let addr = SocketAddr::new(args.metrics_host, port);
        let (bound, _) = crate::metrics::spawn_endpoint(addr, board.clone()).map_err(|e| {
            Failure::new(
                format!("cannot serve metrics on {addr}: {e}"),
                "pick another --metrics-port, or leave it out",
            )
        })?;
        tracing::info!("metrics on http://{bound}/metrics (also /healthz and /readyz)");
    }
    let mut workers = Workers(Vec::new());
    for i in 0..args.workers as usize {
        workers.0.push(spawn(&ctx, i, 1, recycling.draw())?);
    }
    wait_ready(
        &mut workers,
        &signals.term,
        seconds(args.timeout_worker_startup),
    )?;
    if signals.term.load(Ordering::Relaxed) {
        return Ok(());
    }

    let conn = ConnConfig {
        limits: HeadLimits {
            request_line: args.limit_request_line,
            fields: args.limit_request_fields,
            field_size: args.limit_request_field_size,
            ..HeadLimits::default()
        },
        headers: HeaderOptions {
            date: !args.no_date_header,
            server: !args.no_server_header,
            extra: HeaderOptions::encode_extra(&args.header),
        },
        max_body: (args.limit_request_body > 0).then_some(args.limit_request_body),
        keep_alive: seconds(args.timeout_keep_alive),
        header_read: seconds(args.timeout_header_read),
        body_read: seconds(args.timeout_body_read),
        queue_timeout: seconds(args.queue_timeout),
        queue_limit: args.limit_queue,
        request_timeout: (args.timeout_request > 0.0).then(|| seconds(args.timeout_request)),
        request_id: args.request_id,
        proxies: (!args.no_proxy_headers).then(|| args.forwarded_allow_ips.clone()),
        min_body_rate: args.min_body_rate,
        mounts: args.static_mount.clone(),
        health_path: args.health_path.clone(),
        tls,
        h2: crate::h2::Settings {
            mode: args.http,
            max_streams: args.h2_max_concurrent_streams,
            ..crate::h2::Settings::default()
        },
    };
    let (report_tx, report_rx) = mpsc::channel::<Report>();
    let (started_tx, started_rx) = mpsc::channel::<Started>();
    let max_connections = connection_limit(&args);
    let mut threads = Vec::new();
    let deaths = threadwatch::Deaths::default();
    for (t, listeners) in listeners.into_iter().enumerate() {
        let setup = ThreadSetup {
            index: t as u32,
            listeners,
            mailbox: mailboxes[t].clone(),
            reports: report_tx.clone(),
            initial: workers
                .0
                .iter()
                .filter_map(Worker::attach_command)
                .collect(),
            conn: conn.clone(),
            driver: args.io_driver,
            graceful,
            max_connections,
            load: load.clone(),
            limit_concurrency: args.limit_concurrency,
            metrics: metrics.clone(),
            access_log: access_log.clone(),
            cpu: ctx
                .cpus
                .as_ref()
                .filter(|c| !c.is_empty())
                .map(|c| c[t % c.len()]),
            sched: args.sched,
        };
        let started = started_tx.clone();
        let watch = deaths.watch(t);
        let handle = std::thread::Builder::new()
            .name(format!("uringapi-io-{t}"))
            .spawn(move || {
                let _watch = watch;
                frontend::run(setup, started)
            })
            .map_err(|e| {
                Failure::new(
                    format!("cannot start a front-end thread: {e}"),
                    "check ulimit -u",
                )
            })?;
        threads.push(handle);
    }
    let mut driver = "";
    for _ in 0..args.threads {
        match started_rx.recv() {
            Ok(Started::Ok {
                driver: d,
                fallback,
            }) => {
                if let (Some(cause), true) = (fallback, driver.is_empty()) {
                    tracing::warn!("io_uring is unavailable ({cause}); falling back to epoll");
                }
                driver = d;
            }
            Ok(Started::Failed(e)) => {
                return Err(Failure::new(
                    e,
                    "use --io-driver epoll, or see tuning/check.sh for what blocks io_uring",
                ))
            }
            Err(_) => {
                return Err(Failure::new(
                    "a front-end thread died during start-up",
                    "run with --log-level debug and report the output",
                ))
            }
        }
    }
    let shm = geometry.segment_bytes() as u64 * u64::from(args.workers);
    let scheme = if conn.tls.is_some() { "https" } else { "http" };
    let urls = addrs
        .iter()
        .map(|a| format!("{scheme}://{a}"))
        .collect::<Vec<_>>()
        .join(", ");
    tracing::info!(
        "listening on {urls} (app: {app}, workers: {}, threads: {}, io driver: {driver}, shared memory: {} MiB)",
        args.workers,
        args.threads,
        shm >> 20
    );

    let mut sup = Supervisor {
        workers,
        ctx,
        mailboxes: mailboxes.clone(),
        load,
        stall,
        kill_after: (args.timeout > 0.0).then(|| seconds(args.timeout)),
        recycling,
        rolling: VecDeque::new(),
        recycle_pause_until: None,
        restarts: 0,
        stalls: 0,
        last_rss_check: Instant::now(),
        board,
        access_log: access_log.map(|(sink, _)| sink),
        last_publish: Instant::now(),
        notify,
        deaths: deaths.clone(),
        tls: conn.tls.clone(),
    };
    sup.notify.send("READY=1");
    sup.run(&report_rx, &signals);
    // Draining: load balancers should stop sending before connections are refused.
    sup.board.ready.store(false, Ordering::Relaxed);

    sup.notify.send("STOPPING=1");
    tracing::info!("shutting down: draining connections");
    for m in &mailboxes {
        m.post(ThreadCmd::Drain);
    }
    for t in threads {
        let _ = t.join();
    }
    stop_workers(&mut sup.workers, graceful);
    if let Some(sink) = &sup.access_log {
        // The threads' last batches are queued; give the writer a bounded moment (a log
        // whose destination does not drain must not hold the exit).
        sink.settle(Duration::from_secs(2));
    }
    if deaths.any() {
        return Err(Failure::new(
            "a front-end thread died (see the panic above); its connections were lost",
            "the process exits so that its supervisor (systemd, Kubernetes) starts a fresh one; please report the panic",
        ));
    }
    tracing::info!("stopped");
    Ok(())
}

/// `--limit-connections`, or by default what the fd limit allows (see `connlimit`).
fn connection_limit(args: &ServeArgs) -> Option<usize> {
    let nofile = crate::sys::raise_nofile();
    match args.limit_connections {
        Some(0) => None,
        Some(n) => Some(n),
        None => {
            let n = crate::connlimit::default_per_thread(nofile, args.threads);
            tracing::info!(
                "connection limit: {n} per front-end thread (fd limit {nofile}, {} kept in reserve; --limit-connections to change)",
                crate::connlimit::FD_RESERVE
            );
            Some(n)
        }
    }
}

fn cpu_online(cpu: usize) -> bool {
    std::path::Path::new(&format!("/sys/devices/system/cpu/cpu{cpu}")).exists()
}

/// The signals the supervisor acts on, as flags its loop polls.
struct Signals {
    /// SIGTERM or SIGINT: drain and stop.
    term: Arc<AtomicBool>,
    /// SIGHUP: replace every worker, one at a time.
    hup: Arc<AtomicBool>,
    /// SIGTTIN / SIGTTOU: one worker more / fewer.
    ttin: Arc<AtomicBool>,
    ttou: Arc<AtomicBool>,
    /// SIGUSR1: reopen the access log file.
    usr1: Arc<AtomicBool>,
}

impl Signals {
    fn install() -> Result<Self, Failure> {
        use signal_hook::consts::*;
        let s = Self {
            term: Arc::default(),
            hup: Arc::default(),
            ttin: Arc::default(),
            ttou: Arc::default(),
            usr1: Arc::default(),
        };
        let table = [
            (SIGTERM, &s.term),
            (SIGINT, &s.term),
            (SIGHUP, &s.hup),
            (SIGTTIN, &s.ttin),
            (SIGTTOU, &s.ttou),
            (SIGUSR1, &s.usr1),
        ];
        for (sig, flag) in table {
            signal_hook::flag::register(sig, flag.clone()).map_err(|e| {
                Failure::new(
                    format!("cannot install signal handlers: {e}"),
                    "this is a bug; please report it",
                )
            })?;
        }
        Ok(s)
    }
}

/// Waits until every worker reports ready; any that dies first ends start-up with its error.
fn wait_ready(workers: &mut Workers, term: &AtomicBool, limit: Duration) -> Result<(), Failure> {
    let start = Instant::now();
    loop {
        let mut all = true;
        for w in &mut workers.0 {
            if w.segment.is_ready() {
                w.ready = true;
                w.ever_ready = true;
                continue;
            }
            all = false;
            if let Some(status) = w.exited() {
                return Err(startup_failure(w, status));
            }
        }
        if all || term.load(Ordering::Relaxed) {
            return Ok(());
        }
        if start.elapsed() > limit {
            return Err(Failure::new(
                format!("workers did not become ready within {:.0} s", limit.as_secs_f64()),
                "the app's import or lifespan startup is slow or stuck; raise --timeout-worker-startup or fix the app",
            ));
        }
        std::thread::sleep(TICK);
    }
}

/// SIGTERM to every worker (it runs lifespan shutdown), SIGKILL after `grace`.
fn stop_workers(workers: &mut Workers, grace: Duration) {
    for w in &workers.0 {
        w.signal(libc::SIGTERM);
    }
    let deadline = Instant::now() + grace;
    loop {
        let mut alive = 0;
        for w in &mut workers.0 {
            if w.child.is_some() {
                match w.exited() {
                    Some(s) if !s.success() && s.code() != Some(0) => {
                        tracing::warn!(worker = w.index, pid = w.pid, status = %s, "worker exited uncleanly during shutdown");
                    }
                    Some(_) => {}
                    None => alive += 1,
                }
            }
        }
        if alive == 0 {
            return;
        }
        if Instant::now() >= deadline {
            tracing::warn!(
                alive,
                "workers still running after the graceful timeout; killing them"
            );
            for w in &workers.0 {
                w.signal(libc::SIGKILL);
            }
            return;
        }
        std::thread::sleep(TICK);
    }
}
