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
    /// The worker's heartbeat period: a quarter of --stall-timeout, within bounds.
    heartbeat: Duration,
    graceful: Duration,
    /// CPUs to pin workers to (worker slot i gets `cpus[(threads + i) % len]`).
    cpus: Option<Vec<usize>>,
    threads: usize,
}

/// Where a worker is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Serving (or starting, or waiting to be respawned).
    Active,
    /// Gets no new requests; stopped once its requests in flight are done.
    Retiring { since: Instant },
    /// Sent SIGTERM: finishing, running lifespan shutdown, exiting. Not respawned.
    Stopping { since: Instant },
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
    role: Role,
    /// The worker this one replaces once it is ready (rolling restart, recycling).
    replaces: Option<usize>,
    /// When its loop was first seen silent past --stall-timeout.
    stalled_since: Option<Instant>,
    /// When it was sent SIGABRT for silence past --timeout.
    aborted_at: Option<Instant>,
    /// This worker's recycling thresholds, jitter included.
    recycle: Thresholds,
    rss: u64,
}

fn spawn(
    ctx: &SpawnContext,
    index: usize,
    generation: u64,
    recycle: Thresholds,
) -> Result<Worker, Failure> {
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
        .env(
            "URINGAPI_HEARTBEAT",
            ctx.heartbeat.as_secs_f64().to_string(),
        )
        .env("URINGAPI_GRACEFUL", ctx.graceful.as_secs_f64().to_string())
        .stdin(Stdio::null());
    let mut fds = vec![
        segment.fd(),
        crate::sys::raw(&doorbell),
        crate::sys::raw(&writer),
    ];
    fds.extend_from_slice(&ctx.thread_doorbells);
    let cpu = ctx
        .cpus
        .as_ref()
        .filter(|c| !c.is_empty())
        .map(|c| c[(ctx.threads + index) % c.len()]);
    crate::sys::prepare_child(&mut cmd, fds, cpu);
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
        role: Role::Active,
        replaces: None,
        stalled_since: None,
        aborted_at: None,
        recycle,
        rss: 0,
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

    fn is_active(&self) -> bool {
        self.role == Role::Active
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

impl Workers {
    /// The lowest worker slot no worker uses.
    fn free_index(&self) -> Option<usize> {
        (0..crate::load::MAX_SLOTS).find(|i| self.0.iter().all(|w| w.index != *i))
    }

    fn by_index(&mut self, index: usize) -> Option<&mut Worker> {
        self.0.iter_mut().find(|w| w.index == index)
    }
}

/// When a worker is recycled (`None`: never on that count).
#[derive(Debug, Clone, Copy, Default)]
struct Thresholds {
    requests: Option<u64>,
    lifetime: Option<Duration>,
    rss: Option<u64>,
}

/// The recycling flags, from which each worker draws its own jittered thresholds.
#[derive(Debug, Clone, Copy)]
struct Recycling {
    max_requests: u64,
    lifetime: Duration,
    max_rss: u64,
    jitter: f64,
}

impl Recycling {
    fn draw(&self) -> Thresholds {
        let j = || 1.0 + self.jitter.clamp(0.0, 10.0) * unit_random();
        Thresholds {
            requests: (self.max_requests > 0).then(|| (self.max_requests as f64 * j()) as u64),
            lifetime: (!self.lifetime.is_zero()).then(|| self.lifetime.mul_f64(j())),
            rss: (self.max_rss > 0).then(|| (self.max_rss as f64 * j()) as u64),
        }
    }
}

/// A random number in [0, 1) from the standard library's per-process hash seed.
fn unit_random() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0);
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
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
    let stall = seconds(args.stall_timeout);
    let graceful = seconds(args.timeout_graceful_shutdown);
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
        heartbeat: (stall / 4).clamp(Duration::from_millis(5), Duration::from_secs(1)),
        graceful,
        cpus: args.pin_cpus.as_ref().map(|c| c.0.clone()),
        threads: args.threads as usize,
    };
    let recycling = Recycling {
        max_requests: args.limit_max_requests,
        lifetime: seconds(args.workers_lifetime),
        max_rss: args.workers_max_rss << 20,
        jitter: args.recycle_jitter,
    };

    let signals = Signals::install()?;
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
        let addr = SocketAddr::new(args.metrics_host.unwrap_or(args.host), port);
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
            graceful,
            max_connections: (args.limit_connections > 0).then_some(args.limit_connections),
            load: load.clone(),
            limit_concurrency: args.limit_concurrency,
            metrics: metrics.clone(),
            access_log: access_log.clone(),
            cpu: ctx
                .cpus
                .as_ref()
                .filter(|c| !c.is_empty())
                .map(|c| c[t % c.len()]),
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
    };
    sup.run(&report_rx, &signals);
    // Draining: load balancers should stop sending before connections are refused.
    sup.board.ready.store(false, Ordering::Relaxed);

    tracing::info!("shutting down: draining connections");
    for m in &mailboxes {
        m.post(ThreadCmd::Drain);
    }
    for t in threads {
        let _ = t.join();
    }
    stop_workers(&mut sup.workers, graceful);
    tracing::info!("stopped");
    Ok(())
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

/// How long a worker sent SIGABRT (or SIGTERM past the graceful timeout) has before SIGKILL.
const KILL_GRACE: Duration = Duration::from_secs(5);
/// How long a retiring worker is left before it can count as idle (see `retire_idle`).
const RETIRE_SETTLE: Duration = Duration::from_millis(50);
/// How often workers' RSS is read for --workers-max-rss.
const RSS_EVERY: Duration = Duration::from_secs(1);
/// After a replacement failed to start, recycling waits this long before trying again.
const RECYCLE_PAUSE: Duration = Duration::from_secs(30);

/// The supervisor's state after start-up.
struct Supervisor {
    workers: Workers,
    ctx: SpawnContext,
    mailboxes: Vec<Arc<Mailbox>>,
    load: Arc<LoadTable>,
    stall: Duration,
    kill_after: Option<Duration>,
    recycling: Recycling,
    /// Workers waiting to be replaced, one at a time (SIGHUP, recycling).
    rolling: VecDeque<usize>,
    recycle_pause_until: Option<Instant>,
    restarts: u64,
    stalls: u64,
    last_rss_check: Instant,
    board: Arc<Board>,
    access_log: Option<Arc<Sink>>,
    last_publish: Instant,
}

/// What the metrics endpoint reports, refreshed by the supervisor every [`PUBLISH_EVERY`];
/// the per-worker load figures are read live.
struct Board {
    metrics: Arc<Metrics>,
    load: Arc<LoadTable>,
    workers: Mutex<Vec<WorkerSnapshot>>,
    process: Mutex<ProcessSnapshot>,
    /// Every active worker is ready and the server is not draining.
    ready: AtomicBool,
}

impl crate::metrics::Source for Board {
    fn metrics(&self) -> String {
        let mut workers = self
            .workers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        for w in &mut workers {
            let load = self.load.get(w.index);
            w.in_flight = u64::from(load.in_flight());
            w.served = load.served();
            w.stalled = load.is_stalled();
        }
        let mut process = self
            .process
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        process.connections = self.load.connections.load(Ordering::Relaxed) as u64;
        self.metrics.render(&workers, &process)
    }

    fn ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }
}

/// How often the supervisor refreshes what the metrics endpoint reports.
const PUBLISH_EVERY: Duration = Duration::from_millis(100);

impl Supervisor {
    /// Watches workers until a stop signal.
    fn run(&mut self, reports: &mpsc::Receiver<Report>, signals: &Signals) {
        while !signals.term.load(Ordering::Relaxed) {
            match reports.recv_timeout(TICK) {
                Ok(Report::Violation {
                    worker,
                    generation,
                    reason,
                }) => {
                    if let Some(w) = self.workers.0.iter().find(|w| {
                        w.index == worker && w.generation == generation && w.child.is_some()
                    }) {
                        tracing::error!(worker, pid = w.pid, %reason, "killing worker that broke the channel contract");
                        w.signal(libc::SIGKILL);
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            }
            if signals.hup.swap(false, Ordering::Relaxed) {
                let active: Vec<usize> = self
                    .workers
                    .0
                    .iter()
                    .filter(|w| w.is_active() && w.replaces.is_none())
                    .map(|w| w.index)
                    .collect();
                tracing::info!("SIGHUP: replacing {} workers one at a time", active.len());
                for i in active {
                    if !self.rolling.contains(&i) {
                        self.rolling.push_back(i);
                    }
                }
                self.recycle_pause_until = None;
            }
            if signals.ttin.swap(false, Ordering::Relaxed) {
                self.add_worker(None, "SIGTTIN");
            }
            if signals.ttou.swap(false, Ordering::Relaxed) {
                self.remove_worker();
            }
            self.reap();
            self.respawn_due();
            self.watch_ready();
            self.watch_heartbeats();
            self.watch_recycling();
            self.advance_rolling();
            self.retire_idle();
            if signals.usr1.swap(false, Ordering::Relaxed) {
                if let Some(sink) = &self.access_log {
                    match sink.reopen() {
                        Ok(()) => tracing::info!("SIGUSR1: access log reopened"),
                        Err(e) => {
                            tracing::error!(error = %e, "SIGUSR1: cannot reopen the access log")
                        }
                    }
                }
            }
            if self.last_publish.elapsed() >= PUBLISH_EVERY {
                self.last_publish = Instant::now();
                self.publish();
            }
        }
    }

    /// Refreshes the metrics board and the readiness verdict.
    fn publish(&mut self) {
        let mut worker_doorbells = 0;
        let snapshots = self
            .workers
            .0
            .iter()
            .filter(|w| w.child.is_some())
            .map(|w| {
                worker_doorbells += w.segment.worker_doorbells();
                WorkerSnapshot {
                    index: w.index,
                    pid: w.pid,
                    ready: w.ready,
                    stalled: w.stalled_since.is_some(),
                    in_flight: 0,
                    served: 0,
                    ring_occupancy: w.segment.request_ring_occupancy(),
                    loop_lag_seconds: w.segment.loop_lag().as_secs_f64(),
                    rss_bytes: w.rss,
                }
            })
            .collect();
        *self.board.workers.lock().unwrap_or_else(|p| p.into_inner()) = snapshots;
        *self.board.process.lock().unwrap_or_else(|p| p.into_inner()) = ProcessSnapshot {
            worker_restarts: self.restarts,
            worker_stalls: self.stalls,
            doorbells: uringapi_protocol::doorbell::rings_total() + worker_doorbells,
            connections: 0,
        };
        let ready = self
            .workers
            .0
            .iter()
            .filter(|w| w.is_active())
            .all(|w| w.ready && w.child.is_some());
        self.board.ready.store(ready, Ordering::Relaxed);
    }

    /// Starts a worker in a free slot; with `replaces`, it takes that worker's place once ready.
    fn add_worker(&mut self, replaces: Option<usize>, why: &str) -> bool {
        let Some(index) = self.workers.free_index() else {
            tracing::error!(
                "cannot add a worker ({why}): all {} worker slots are in use",
                crate::load::MAX_SLOTS
            );
            return false;
        };
        self.load.get(index).reset();
        match spawn(&self.ctx, index, 1, self.recycling.draw()) {
            Ok(mut w) => {
                w.replaces = replaces;
                tracing::info!(worker = index, pid = w.pid, "starting a worker ({why})");
                self.workers.0.push(w);
                true
            }
            Err(f) => {
                tracing::error!("cannot start a worker ({why}): {}", f.error);
                false
            }
        }
    }

    /// SIGTTOU: the newest active worker stops taking requests and leaves once idle.
    fn remove_worker(&mut self) {
        let active = self.workers.0.iter().filter(|w| w.is_active()).count();
        if active <= 1 {
            tracing::warn!("SIGTTOU ignored: at least one worker must stay");
            return;
        }
        if let Some(w) = self
            .workers
            .0
            .iter_mut()
            .filter(|w| w.is_active() && w.replaces.is_none())
            .max_by_key(|w| w.spawned_at)
        {
            tracing::info!(worker = w.index, pid = w.pid, "SIGTTOU: retiring a worker");
            w.role = Role::Retiring {
                since: Instant::now(),
            };
            self.load.get(w.index).set_retiring(true);
        }
    }

    /// Reaps exited workers: active ones are respawned with backoff; retired ones and
    /// replacements that never became ready are dropped.
    fn reap(&mut self) {
        let mut gone = Vec::new();
        for w in &mut self.workers.0 {
            let Some(status) = w.exited() else { continue };
            let (index, generation) = (w.index, w.generation);
            for m in &self.mailboxes {
                m.post(ThreadCmd::Detach {
                    worker: index,
                    generation,
                });
            }
            let msg = w.status_message();
            let msg = if msg.is_empty() {
                String::new()
            } else {
                format!(": {}", msg.trim())
            };
            w.stalled_since = None;
            w.aborted_at = None;
            self.load.get(index).set_stalled(false);
            if !w.is_active() {
                tracing::info!(worker = index, pid = w.pid, %status, "retired worker exited");
                gone.push(index);
                continue;
            }
            if let (Some(old), false) = (w.replaces, w.ready) {
                tracing::error!(worker = index, pid = w.pid, %status, "replacement for worker {old} exited before it was ready{msg}; keeping worker {old}");
                self.recycle_pause_until = Some(Instant::now() + RECYCLE_PAUSE);
                gone.push(index);
                continue;
            }
            if w.spawned_at.elapsed() > STABLE_AFTER {
                w.failures = 0;
            }
            let backoff = BACKOFF_MIN
                .saturating_mul(1 << w.failures.min(6))
                .min(BACKOFF_MAX);
            w.failures += 1;
            self.restarts += 1;
            let before = if w.ready { "" } else { " before it was ready" };
            tracing::warn!(worker = index, pid = w.pid, %status, "worker exited{before}; respawning in {} ms{msg}", backoff.as_millis());
            w.ready = false;
            w.respawn_at = Some(Instant::now() + backoff);
        }
        self.workers.0.retain(|w| !gone.contains(&w.index));
        self.rolling.retain(|i| !gone.contains(i));
    }

    fn respawn_due(&mut self) {
        for w in &mut self.workers.0 {
            if w.respawn_at.is_none_or(|t| Instant::now() < t) {
                continue;
            }
            w.respawn_at = None;
            self.load.get(w.index).reset();
            match spawn(&self.ctx, w.index, w.generation + 1, self.recycling.draw()) {
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
    }

    /// Attaches workers that became ready; a ready replacement retires the one it replaces.
    fn watch_ready(&mut self) {
        let mut retire = Vec::new();
        for w in &mut self.workers.0 {
            if w.ready || w.child.is_none() || !w.segment.is_ready() {
                continue;
            }
            w.ready = true;
            w.ever_ready = true;
            tracing::info!(
                worker = w.index,
                pid = w.pid,
                generation = w.generation,
                "worker ready"
            );
            let w = &*w;
            for m in &self.mailboxes {
                if let Some(c) = w.attach_command() {
                    m.post(c);
                }
            }
            if let Some(old) = w.replaces {
                retire.push(old);
            }
        }
        for old in retire {
            if let Some(w) = self.workers.by_index(old) {
                if w.is_active() {
                    tracing::info!(
                        worker = old,
                        pid = w.pid,
                        "replacement ready; retiring worker"
                    );
                    w.role = Role::Retiring {
                        since: Instant::now(),
                    };
                    self.load.get(old).set_retiring(true);
                }
            }
            for w in &mut self.workers.0 {
                if w.replaces == Some(old) {
                    w.replaces = None;
                }
            }
        }
    }

    /// Stall verdicts (no new requests for a silent loop) and the --timeout kill.
    fn watch_heartbeats(&mut self) {
        let now = Instant::now();
        for w in &mut self.workers.0 {
            if !w.ready || w.child.is_none() {
                continue;
            }
            let Some(age) = w.segment.heartbeat_age() else {
                continue;
            };
            let load = self.load.get(w.index);
            if age > self.stall {
                if w.stalled_since.is_none() {
                    w.stalled_since = Some(now);
                    self.stalls += 1;
                    load.set_stalled(true);
                    tracing::warn!(
                        worker = w.index,
                        pid = w.pid,
                        in_flight = load.in_flight(),
                        "worker stalled: its event loop made no progress for {} ms (--stall-timeout); it gets no new requests until it moves",
                        age.as_millis()
                    );
                    let (worker, silent) = (w.index, age);
                    for m in &self.mailboxes {
                        m.post(ThreadCmd::Stalled { worker, silent });
                    }
                }
                if let Some(limit) = self.kill_after {
                    if age > limit && w.aborted_at.is_none() {
                        tracing::error!(worker = w.index, pid = w.pid, "worker silent for {:.1} s (--timeout); killing it (SIGABRT prints its Python stack)", age.as_secs_f64());
                        w.signal(libc::SIGABRT);
                        w.aborted_at = Some(now);
                    }
                }
                if w.aborted_at.is_some_and(|t| now - t > KILL_GRACE) {
                    w.signal(libc::SIGKILL);
                }
            } else if let Some(since) = w.stalled_since.take() {
                load.set_stalled(false);
                tracing::info!(
                    worker = w.index,
                    pid = w.pid,
                    "worker moved again after a {} ms stall",
                    (now - since + self.stall).as_millis()
                );
            }
        }
    }

    /// Queues workers past their recycling thresholds for replacement.
    fn watch_recycling(&mut self) {
        if self.recycle_pause_until.is_some_and(|t| Instant::now() < t) {
            return;
        }
        let read_rss = self.last_rss_check.elapsed() >= RSS_EVERY;
        if read_rss {
            self.last_rss_check = Instant::now();
        }
        for w in &mut self.workers.0 {
            if !w.ready || !w.is_active() || w.child.is_none() {
                continue;
            }
            if read_rss {
                w.rss = rss_bytes(w.pid).unwrap_or(0);
            }
            let t = w.recycle;
            let served = self.load.get(w.index).served();
            let why = if t.requests.is_some_and(|n| served >= n) {
                Some(format!("served {served} requests (--limit-max-requests)"))
            } else if t.lifetime.is_some_and(|l| w.spawned_at.elapsed() >= l) {
                Some(format!(
                    "up for {:.0} s (--workers-lifetime)",
                    w.spawned_at.elapsed().as_secs_f64()
                ))
            } else if t.rss.is_some_and(|r| w.rss >= r) {
                Some(format!("RSS {} MiB (--workers-max-rss)", w.rss >> 20))
            } else {
                None
            };
            if let Some(why) = why {
                if !self.rolling.contains(&w.index) {
                    tracing::info!(worker = w.index, pid = w.pid, "recycling worker: {why}");
                    self.rolling.push_back(w.index);
                }
            }
        }
    }

    /// Starts the next replacement once the previous one is done.
    fn advance_rolling(&mut self) {
        if self.workers.0.iter().any(|w| w.replaces.is_some()) {
            return;
        }
        while let Some(old) = self.rolling.pop_front() {
            let live = self
                .workers
                .0
                .iter()
                .any(|w| w.index == old && w.is_active() && w.child.is_some());
            if live {
                self.add_worker(Some(old), &format!("replacing worker {old}"));
                return;
            }
        }
    }

    /// Retiring workers with nothing in flight (or past the graceful timeout) get SIGTERM;
    /// stopping ones past it get SIGKILL.
    fn retire_idle(&mut self) {
        let graceful = self.ctx.graceful;
        for w in &mut self.workers.0 {
            match w.role {
                Role::Retiring { since } => {
                    // RETIRE_SETTLE: a thread that picked this worker just before it saw the
                    // retiring flag has dispatched by now, so "idle" really means idle.
                    let idle =
                        self.load.get(w.index).in_flight() == 0 && since.elapsed() >= RETIRE_SETTLE;
                    if idle || since.elapsed() > graceful {
                        if !idle {
                            tracing::warn!(worker = w.index, pid = w.pid, "retiring worker still busy after the graceful timeout; stopping it");
                        }
                        w.signal(libc::SIGTERM);
                        w.role = Role::Stopping {
                            since: Instant::now(),
                        };
                    }
                }
                Role::Stopping { since } if since.elapsed() > graceful + KILL_GRACE => {
                    w.signal(libc::SIGKILL);
                }
                _ => {}
            }
        }
    }
}

/// A process's resident set size, from /proc.
fn rss_bytes(pid: u32) -> Option<u64> {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
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
