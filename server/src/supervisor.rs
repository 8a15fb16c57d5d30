//! The supervisor: binds the listeners, creates each worker's segment, spawns and watches the
//! worker processes, starts the front-end threads, and owns the signals.
//!
//! Start-up is all-or-nothing: if any worker dies before it reports ready (the app does not
//! import, or its lifespan startup fails), the server stops with that worker's error instead
//! of respawning it in a loop. After start-up, a worker that dies is replaced with backoff
//! and only its own requests in flight fail (502).

use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use uringapi_protocol::doorbell::EventFd;
use uringapi_protocol::{Geometry, Segment};

use crate::cli::{seconds, Failure, ServeArgs};
use crate::dispatch::{Command as ThreadCmd, Mailbox, Report};
use crate::frontend::{self, Started, ThreadSetup};
use crate::http1::conn::ConnConfig;
use crate::http1::encode::HeaderOptions;
use crate::http1::parse::HeadLimits;

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

/// What every worker spawn needs.
struct SpawnContext {
    python: PathBuf,
    app: String,
    app_dir: PathBuf,
    geometry: Geometry,
    thread_doorbells: Vec<i32>,
    log_level: &'static str,
    lifespan: &'static str,
    root_path: String,
}

/// One worker process and its shared memory.
struct Worker {
    index: usize,
    child: Option<Child>,
    pid: u32,
    segment: Arc<Segment>,
    doorbell: EventFd,
    status: Option<std::io::PipeReader>,
    ready: bool,
    ever_ready: bool,
    generation: u64,
    spawned_at: Instant,
    failures: u32,
    respawn_at: Option<Instant>,
}

fn spawn(ctx: &SpawnContext, index: usize, generation: u64) -> Result<Worker, Failure> {
    let segment = Segment::create(ctx.geometry, generation).map_err(|e| {
        Failure::new(
            format!("cannot create shared memory for worker {index}: {e}"),
            "check that memfd works and memory is available",
        )
    })?;
    let doorbell = EventFd::new()
        .map_err(|e| Failure::new(format!("cannot create an eventfd: {e}"), "check ulimit -n"))?;
    let (reader, writer) = std::io::pipe()
        .map_err(|e| Failure::new(format!("cannot create a pipe: {e}"), "check ulimit -n"))?;
    let threads = ctx
        .thread_doorbells
        .iter()
        .map(i32::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let mut cmd = Command::new(&ctx.python);
    cmd.args(["-m", "uringapi.worker"])
        .env("URINGAPI_APP", &ctx.app)
        .env("URINGAPI_APP_DIR", &ctx.app_dir)
        .env("URINGAPI_WORKER_INDEX", index.to_string())
        .env("URINGAPI_SEGMENT_FD", segment.fd().to_string())
        .env(
            "URINGAPI_DOORBELL_FD",
            crate::sys::raw(&doorbell).to_string(),
        )
        .env("URINGAPI_THREAD_FDS", threads)
        .env("URINGAPI_STATUS_FD", crate::sys::raw(&writer).to_string())
        .env("URINGAPI_LOG_LEVEL", ctx.log_level)
        .env("URINGAPI_LIFESPAN", ctx.lifespan)
        .env("URINGAPI_ROOT_PATH", &ctx.root_path)
        .stdin(Stdio::null());
    let mut fds = vec![
        segment.fd(),
        crate::sys::raw(&doorbell),
        crate::sys::raw(&writer),
    ];
    fds.extend_from_slice(&ctx.thread_doorbells);
    crate::sys::inherit_fds(&mut cmd, fds);
    let child = cmd.spawn().map_err(|e| {
        Failure::new(
            format!("cannot start worker {index} with {}: {e}", ctx.python.display()),
            "install uringapi into the Python environment that should run the app, or name it with --python",
        )
    })?;
    drop(writer);
    let pid = child.id();
    tracing::debug!(worker = index, pid, generation, "worker spawned");
    Ok(Worker {
        index,
        child: Some(child),
        pid,
        segment: Arc::new(segment),
        doorbell,
        status: Some(reader),
        ready: false,
        ever_ready: false,
        generation,
        spawned_at: Instant::now(),
        failures: 0,
        respawn_at: None,
    })
}

impl Worker {
    /// The worker's own account of why it failed, if it wrote one.
    fn status_message(&mut self) -> String {
        let mut msg = String::new();
        if let Some(mut r) = self.status.take() {
            let _ = r.read_to_string(&mut msg);
        }
        msg
    }

    fn attach_command(&self) -> Option<ThreadCmd> {
        let doorbell = self.doorbell.try_clone().ok()?;
        Some(ThreadCmd::Attach {
            worker: self.index,
            segment: self.segment.clone(),
            doorbell,
            pid: self.pid,
        })
    }

    fn signal(&self, sig: i32) {
        if self.child.is_some() {
            crate::sys::kill(self.pid, sig);
        }
    }

    /// Reaps the process if it exited.
    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        let status = self.child.as_mut()?.try_wait().ok()??;
        self.child = None;
        Some(status)
    }
}

/// Kills any worker still running when the supervisor returns early.
struct Workers(Vec<Worker>);

impl Drop for Workers {
    fn drop(&mut self) {
        for w in &mut self.0 {
            if let Some(mut c) = w.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
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

    // Listeners first: a busy port should fail before any Python starts.
    let mut addr = SocketAddr::new(args.host, args.port);
    let mut listeners = Vec::new();
    for _ in 0..args.threads {
        let l = bind(addr, args.backlog)?;
        addr = l.local_addr().unwrap_or(addr);
        listeners.push(l);
    }
    let mailboxes: Vec<Arc<Mailbox>> = (0..args.threads)
        .map(|_| Mailbox::new().map(Arc::new))
        .collect::<Result<_, _>>()
        .map_err(|e| Failure::new(format!("cannot create an eventfd: {e}"), "check ulimit -n"))?;
    let ctx = SpawnContext {
        python: args.python.clone().unwrap_or_else(default_python),
        app: app.clone(),
        app_dir,
        geometry,
        thread_doorbells: mailboxes
            .iter()
            .map(|m| crate::sys::raw(m.doorbell()))
            .collect(),
        log_level: args.log_level.python(),
        lifespan: args.lifespan.as_str(),
        root_path: args.root_path.clone(),
    };

    let term = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, term.clone()).map_err(|e| {
            Failure::new(
                format!("cannot install signal handlers: {e}"),
                "this is a bug; please report it",
            )
        })?;
    }

    let mut workers = Workers(Vec::new());
    for i in 0..args.workers as usize {
        workers.0.push(spawn(&ctx, i, 1)?);
    }
    wait_ready(&mut workers, &term, seconds(args.timeout_worker_startup))?;
    if term.load(Ordering::Relaxed) {
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
        },
        max_body: (args.limit_request_body > 0).then_some(args.limit_request_body),
        keep_alive: seconds(args.timeout_keep_alive),
        header_read: seconds(args.timeout_header_read),
        body_read: seconds(args.timeout_body_read),
    };
    let (report_tx, report_rx) = mpsc::channel::<Report>();
    let (started_tx, started_rx) = mpsc::channel::<Started>();
    let mut threads = Vec::new();
    for (t, listener) in listeners.into_iter().enumerate() {
        let setup = ThreadSetup {
            index: t as u32,
            listener,
            mailbox: mailboxes[t].clone(),
            reports: report_tx.clone(),
            initial: workers
                .0
                .iter()
                .filter_map(Worker::attach_command)
                .collect(),
            conn: conn.clone(),
            driver: args.io_driver,
            graceful: seconds(args.timeout_graceful_shutdown),
            max_connections: (args.limit_connections > 0).then_some(args.limit_connections),
        };
        let started = started_tx.clone();
        let handle = std::thread::Builder::new()
            .name(format!("uringapi-io-{t}"))
            .spawn(move || frontend::run(setup, started))
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
    tracing::info!(
        "listening on http://{addr} (app: {app}, workers: {}, threads: {}, io driver: {driver}, shared memory: {} MiB)",
        args.workers,
        args.threads,
        shm >> 20
    );

    run(&mut workers, &ctx, &mailboxes, &report_rx, &term);

    tracing::info!("shutting down: draining connections");
    for m in &mailboxes {
        m.post(ThreadCmd::Drain);
    }
    for t in threads {
        let _ = t.join();
    }
    stop_workers(&mut workers, seconds(args.timeout_graceful_shutdown));
    tracing::info!("stopped");
    Ok(())
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

/// Watches workers until a stop signal: replaces the dead, attaches the newly ready.
fn run(
    workers: &mut Workers,
    ctx: &SpawnContext,
    mailboxes: &[Arc<Mailbox>],
    reports: &mpsc::Receiver<Report>,
    term: &AtomicBool,
) {
    let post_all = |cmd: &dyn Fn() -> Option<ThreadCmd>| {
        for m in mailboxes {
            if let Some(c) = cmd() {
                m.post(c);
            }
        }
    };
    while !term.load(Ordering::Relaxed) {
        match reports.recv_timeout(TICK) {
            Ok(Report::Violation {
                worker,
                generation,
                reason,
            }) => {
                if let Some(w) = workers
                    .0
                    .get(worker)
                    .filter(|w| w.generation == generation && w.child.is_some())
                {
                    tracing::error!(worker, pid = w.pid, %reason, "killing worker that broke the channel contract");
                    w.signal(libc::SIGKILL);
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        }
        for w in &mut workers.0 {
            if let Some(status) = w.exited() {
                let (index, generation) = (w.index, w.generation);
                post_all(&|| {
                    Some(ThreadCmd::Detach {
                        worker: index,
                        generation,
                    })
                });
                if w.spawned_at.elapsed() > STABLE_AFTER {
                    w.failures = 0;
                }
                let backoff = BACKOFF_MIN
                    .saturating_mul(1 << w.failures.min(6))
                    .min(BACKOFF_MAX);
                w.failures += 1;
                let before = if w.ready { "" } else { " before it was ready" };
                let msg = w.status_message();
                tracing::warn!(worker = index, pid = w.pid, %status, "worker exited{before}; respawning in {} ms{}", backoff.as_millis(), if msg.is_empty() { String::new() } else { format!(": {}", msg.trim()) });
                w.ready = false;
                w.respawn_at = Some(Instant::now() + backoff);
            }
            if w.respawn_at.is_some_and(|t| Instant::now() >= t) {
                w.respawn_at = None;
                match spawn(ctx, w.index, w.generation + 1) {
                    Ok(mut fresh) => {
                        fresh.failures = w.failures;
                        fresh.ever_ready = w.ever_ready;
                        *w = fresh;
                    }
                    Err(f) => {
                        tracing::error!(worker = w.index, "cannot respawn worker: {}", f.error);
                        w.respawn_at = Some(Instant::now() + BACKOFF_MAX);
                    }
                }
            }
            if !w.ready && w.child.is_some() && w.segment.is_ready() {
                w.ready = true;
                w.ever_ready = true;
                tracing::info!(
                    worker = w.index,
                    pid = w.pid,
                    generation = w.generation,
                    "worker ready"
                );
                let w = &*w;
                post_all(&|| w.attach_command());
            }
        }
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
