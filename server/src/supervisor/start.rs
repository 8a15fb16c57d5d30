//! The start-up steps `serve` runs in order, each failing with an `error:`/`hint:` before
//! the next one starts: check the arguments, make the shared state, start the workers (all
//! ready or none), start the front-end threads.

use std::net::SocketAddr;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use uringapi_protocol::Geometry;

use super::board::Board;
use super::threadwatch;
use super::worker::{spawn, Recycling, SpawnContext, Worker, Workers};
use super::TICK;
use crate::accesslog::{self, Destination, Sink};
use crate::config::{limit_seconds, seconds, ServeConfig};
use crate::dispatch::{Mailbox, Report};
use crate::failure::Failure;
use crate::frontend::{self, Started, ThreadSetup};
use crate::http1::conn::ConnConfig;
use crate::http1::encode::HeaderOptions;
use crate::http1::parse::HeadLimits;
use crate::load::LoadTable;
use crate::metrics::Metrics;

/// What the argument checks produced.
pub(super) struct Checked {
    pub tls: Option<crate::tls::Acceptor>,
    /// `module:attribute`.
    pub app: String,
    pub app_dir: PathBuf,
    pub geometry: Geometry,
}

/// Checks what a user can get wrong before anything runs. TLS files are read first: a bad
/// one stops start-up before anything else.
pub(super) fn check(args: &ServeConfig) -> Result<Checked, Failure> {
    let tls = tls_acceptor(args)?;
    let app = app_name(args.app.as_deref())?;
    let app_dir = app_dir(args.app_dir.as_ref())?;
    let geometry = geometry(args)?;
    if args.stall_timeout <= 0.0 {
        return Err(Failure::new(
            "--stall-timeout must be above 0",
            "the default, 0.1 s, suits most apps; raise it for apps that block their loop on purpose",
        ));
    }
    check_pin_cpus(args)?;
    Ok(Checked {
        tls,
        app,
        app_dir,
        geometry,
    })
}

fn tls_acceptor(args: &ServeConfig) -> Result<Option<crate::tls::Acceptor>, Failure> {
    if !args.tls.enabled()? {
        return Ok(None);
    }
    // ALPN offers what --http allows.
    let tls_args = crate::tls::TlsConfig {
        alpn: crate::h2::alpn(args.http),
        ..args.tls.clone()
    };
    let acceptor = crate::tls::Acceptor::new(&tls_args)?;
    if acceptor.ktls() {
        crate::tls::ktls::announce();
    }
    Ok(Some(acceptor))
}

/// The app to serve: `module:attribute`, or the built-in demo.
fn app_name(app: Option<&str>) -> Result<String, Failure> {
    let Some(app) = app else {
        return Ok("uringapi.demo:app".to_string());
    };
    let (module, attr) = app.split_once(':').unwrap_or((app, "app"));
    if module.ends_with(".py") || module.contains('/') {
        return Err(Failure::new(
            format!("app {app:?} names a file; the part before the colon is a Python module"),
            format!(
                "name the module, as under uvicorn: `uringapi serve {}`",
                module_for_file(module, attr)
            ),
        ));
    }
    let ok = app
        .split_once(':')
        .is_some_and(|(m, a)| !m.is_empty() && !a.is_empty());
    if !ok {
        return Err(Failure::new(
            format!("app {app:?} is not of the form module:attribute"),
            "name the app like uvicorn does, e.g. 'main:app' for the object app in main.py",
        ));
    }
    Ok(app.to_string())
}

/// How to name the app in file `path` (`main.py`, `src/api/main.py`, `/srv/app/main.py`)
/// as a module: dotted from the current folder when it is below it, else with --app-dir.
fn module_for_file(path: &str, attr: &str) -> String {
    let path = std::path::Path::new(path.trim_start_matches("./"));
    let stem = path.with_extension("");
    let parts: Vec<&str> = stem.iter().filter_map(|p| p.to_str()).collect();
    let below = path.is_relative() && !parts.is_empty() && parts.iter().all(|p| *p != "..");
    if below {
        return format!("{}:{attr}", parts.join("."));
    }
    let dir = path
        .parent()
        .map_or(".".into(), |d| d.display().to_string());
    let name = path.file_stem().and_then(|s| s.to_str()).unwrap_or("main");
    format!("{name}:{attr} --app-dir {dir}")
}

fn app_dir(dir: Option<&PathBuf>) -> Result<PathBuf, Failure> {
    match dir {
        Some(d) if !d.is_dir() => Err(Failure::new(
            format!("--app-dir {} is not a directory", d.display()),
            "point --app-dir at the folder that holds your app module",
        )),
        Some(d) => Ok(d.clone()),
        None => Ok(std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."))),
    }
}

fn geometry(args: &ServeConfig) -> Result<Geometry, Failure> {
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
    Ok(geometry)
}

fn check_pin_cpus(args: &ServeConfig) -> Result<(), Failure> {
    let Some(cpus) = &args.pin_cpus else {
        return Ok(());
    };
    let online = std::thread::available_parallelism().map_or(1, |n| n.get());
    if let Some(c) = cpus
        .cpus()
        .iter()
        .find(|&&c| c >= online.max(1) && !cpu_online(c))
    {
        return Err(Failure::new(
            format!("--pin-cpus names CPU {c}, which this machine does not have"),
            format!("pick CPUs from 0 to {}", online.saturating_sub(1)),
        ));
    }
    Ok(())
}

fn cpu_online(cpu: usize) -> bool {
    std::path::Path::new(&format!("/sys/devices/system/cpu/cpu{cpu}")).exists()
}

/// `--env-file`, loaded before any worker starts: they inherit the variables. Ones already
/// set win, as with python-dotenv's default.
pub(super) fn load_env_file(args: &ServeConfig) -> Result<(), Failure> {
    let Some(path) = &args.env_file else {
        return Ok(());
    };
    dotenvy::from_path(path).map_err(|e| Failure {
        code: 2,
        ..Failure::new(
            format!("--env-file {}: {e}", path.display()),
            "point --env-file at a readable file of KEY=value lines",
        )
    })
}

pub(super) fn check_log_config(args: &ServeConfig) -> Result<(), Failure> {
    match &args.log_config {
        Some(path) if !path.is_file() => Err(Failure {
            code: 2,
            ..Failure::new(
                format!("--log-config {} is not a file", path.display()),
                "pass a JSON dictConfig file or an .ini fileConfig file",
            )
        }),
        _ => Ok(()),
    }
}

/// One inbox per front-end thread.
pub(super) fn mailboxes(threads: u32) -> Result<Vec<Arc<Mailbox>>, Failure> {
    (0..threads)
        .map(|_| Mailbox::new().map(Arc::new))
        .collect::<Result<_, _>>()
        .map_err(|e| Failure::new(format!("cannot create an eventfd: {e}"), "check ulimit -n"))
}

fn default_python() -> PathBuf {
    std::env::var_os("URINGAPI_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("python3"))
}

/// What every worker spawn needs.
pub(super) fn spawn_context(
    args: &ServeConfig,
    checked: &Checked,
    mailboxes: &[Arc<Mailbox>],
) -> SpawnContext {
    let stall = seconds(args.stall_timeout);
    SpawnContext {
        python: args.python.clone().unwrap_or_else(default_python),
        app: checked.app.clone(),
        app_dir: checked.app_dir.clone(),
        factory: args.factory,
        log_config: args.log_config.clone(),
        geometry: checked.geometry,
        thread_doorbells: mailboxes
            .iter()
            .map(|m| crate::sys::raw(m.doorbell()))
            .collect(),
        log_level: args.log_level.python(),
        lifespan: args.lifespan.as_str(),
        root_path: args.root_path.clone(),
        uds: args.uds.clone(),
        heartbeat: (stall / 4).clamp(Duration::from_millis(5), Duration::from_secs(1)),
        graceful: seconds(args.timeout_graceful_shutdown),
        startup: limit_seconds(args.timeout_worker_startup),
        cpus: args.pin_cpus.as_ref().map(|c| c.cpus().to_vec()),
        sched: args.sched,
        threads: args.threads as usize,
    }
}

pub(super) fn recycling(args: &ServeConfig) -> Recycling {
    Recycling {
        max_requests: args.limit_max_requests,
        lifetime: seconds(args.workers_lifetime),
        max_rss: args.workers_max_rss << 20,
        jitter: args.recycle_jitter,
    }
}

/// State the supervisor and every front-end thread share.
pub(super) struct Shared {
    pub load: Arc<LoadTable>,
    pub metrics: Arc<Metrics>,
    pub access_log: Option<(Arc<Sink>, accesslog::Format)>,
    /// What /metrics, /healthz and /readyz read.
    pub board: Arc<Board>,
}

impl Shared {
    pub(super) fn new(args: &ServeConfig) -> Result<Self, Failure> {
        let load = Arc::new(LoadTable::default());
        let metrics = Metrics::new(args.threads as usize);
        let access_log = access_log(args)?;
        let board = Arc::new(Board {
            metrics: metrics.clone(),
            load: load.clone(),
            workers: Mutex::default(),
            process: Mutex::default(),
            ready: AtomicBool::new(false),
        });
        Ok(Self {
            load,
            metrics,
            access_log,
            board,
        })
    }
}

fn access_log(args: &ServeConfig) -> Result<Option<(Arc<Sink>, accesslog::Format)>, Failure> {
    if !args.access_log && args.access_log_file.is_none() {
        return Ok(None);
    }
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
    Ok(Some((sink, args.access_log_format)))
}

/// `--metrics-port`: the metrics endpoint on its own thread.
pub(super) fn serve_metrics(args: &ServeConfig, board: &Arc<Board>) -> Result<(), Failure> {
    let Some(port) = args.metrics_port else {
        return Ok(());
    };
    let addr = SocketAddr::new(args.metrics_host, port);
    let (bound, _) = crate::metrics::spawn_endpoint(addr, board.clone()).map_err(|e| {
        Failure::new(
            format!("cannot serve metrics on {addr}: {e}"),
            "pick another --metrics-port, or leave it out",
        )
    })?;
    tracing::info!("metrics on http://{bound}/metrics (also /healthz and /readyz)");
    Ok(())
}

/// Spawns `--workers` workers and waits until all are ready. `None`: a stop signal came
/// first.
pub(super) fn workers(
    args: &ServeConfig,
    ctx: &SpawnContext,
    recycling: &Recycling,
    term: &AtomicBool,
) -> Result<Option<Workers>, Failure> {
    let mut workers = Workers(Vec::new());
    for i in 0..args.workers as usize {
        workers.0.push(spawn(ctx, i, 1, recycling.draw())?);
    }
    wait_ready(&mut workers, term, ctx.startup)?;
    if term.swap(false, Ordering::Relaxed) {
        // The ready ones run lifespan shutdown (their startup opened what it closes); the
        // others, still importing the app or in lifespan startup, end at the SIGTERM. A
        // second stop signal kills them all (not the first one delivered twice, as in
        // `shut_down`).
        let ready = workers.0.iter().filter(|w| w.ready).count();
        tracing::info!(
            "stopping before serving: {ready} of {} workers were ready",
            workers.0.len()
        );
        let first = Instant::now();
        super::stop_workers(&mut workers, ctx.graceful, || {
            term.swap(false, Ordering::Relaxed) && first.elapsed() >= super::SAME_SIGNAL
        });
        tracing::info!("stopped");
        return Ok(None);
    }
    Ok(Some(workers))
}

/// When a start-up that is taking long is first reported, and how often after that.
const STARTUP_NOTE_AFTER: Duration = Duration::from_secs(5);
const STARTUP_NOTE_EVERY: Duration = Duration::from_secs(10);
/// How long past --timeout-worker-startup the front end waits for a worker to report its
/// own timeout (an `error:` saying where it was) before it gives up on it.
pub(super) const STARTUP_SLACK: Duration = Duration::from_secs(2);

/// Waits until every worker reports ready; any that dies first ends start-up with its error.
fn wait_ready(workers: &mut Workers, term: &AtomicBool, limit: Duration) -> Result<(), Failure> {
    let start = Instant::now();
    let mut note = STARTUP_NOTE_AFTER;
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
                // A SIGTERM to the whole group (systemd stopping the unit, `kill -TERM
                // -PGID`) ends a worker still starting and reaches this process too: a stop,
                // not a failed start. Its handler may run a moment after the worker died.
                if status.signal() == Some(libc::SIGTERM) && stop_signalled(term) {
                    return Ok(());
                }
                return Err(startup_failure(w, status));
            }
        }
        if all || term.load(Ordering::Relaxed) {
            return Ok(());
        }
        // The workers keep the limit themselves and fail with where they were: this is for
        // one that cannot (stuck in C code that holds the GIL).
        if start.elapsed() > limit.saturating_add(STARTUP_SLACK) {
            return Err(Failure::new(
                format!("workers did not become ready within {:.0} s", limit.as_secs_f64()),
                "the app's import or lifespan startup is slow or stuck; raise --timeout-worker-startup or fix the app",
            ));
        }
        if start.elapsed() >= note {
            // An app that loads a model or waits for its database: say what is going on.
            let limit = match limit {
                crate::config::FOREVER => "off".to_string(),
                l => format!("{:.0} s", l.as_secs_f64()),
            };
            tracing::info!(
                "waiting for the workers: {} of {} ready after {:.0} s (each imports the app and runs its lifespan startup; --timeout-worker-startup is {limit})",
                workers.0.iter().filter(|w| w.ready).count(),
                workers.0.len(),
                note.as_secs_f64(),
            );
            note += STARTUP_NOTE_EVERY;
        }
        std::thread::sleep(TICK);
    }
}

/// Whether a stop signal came, allowing a moment for its handler.
fn stop_signalled(term: &AtomicBool) -> bool {
    let deadline = Instant::now() + Duration::from_millis(200);
    while !term.load(Ordering::Relaxed) {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(TICK);
    }
    true
}

/// The worker's own `error:`/`hint:` lines when it printed them, else a generic failure.
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
        // Exit 1 with nothing reported: Python itself failed, most often at `-m
        // uringapi.worker` (not installed for it). Else the process ended, or was killed,
        // in the app's import or startup, where uringapi could not report it.
        _ if status.code() == Some(1) => Failure::new(
            format!("worker {} exited ({status}) before it was ready", w.index),
            "see the worker's output above; the workers' Python (--python) needs uringapi and the app's packages installed",
        ),
        _ => Failure::new(
            format!("worker {} exited ({status}) before it was ready", w.index),
            "see the worker's output above: the process ended while it imported the app or ran its startup (os._exit, a crash, a signal)",
        ),
    };
    f.code = 1;
    f
}

/// `--limit-request-line/-fields/-field-size`: 0 is no limit of its own (gunicorn's
/// meaning; a limit of 0 would refuse every request), the whole head's bound still applies.
fn head_limit(n: usize) -> usize {
    if n == 0 {
        usize::MAX
    } else {
        n
    }
}

/// How each connection is served: limits, timeouts, headers, proxies, static files, TLS.
pub(super) fn conn_config(args: &ServeConfig, tls: Option<crate::tls::Acceptor>) -> ConnConfig {
    ConnConfig {
        limits: HeadLimits {
            request_line: head_limit(args.limit_request_line),
            fields: head_limit(args.limit_request_fields),
            field_size: head_limit(args.limit_request_field_size),
            ..HeadLimits::default()
        },
        headers: HeaderOptions {
            date: !args.no_date_header,
            server: !args.no_server_header,
            extra: HeaderOptions::encode_extra(&args.header),
        },
        max_body: (args.limit_request_body > 0).then_some(args.limit_request_body),
        keep_alive: seconds(args.timeout_keep_alive),
        header_read: limit_seconds(args.timeout_header_read),
        body_read: limit_seconds(args.timeout_body_read),
        send_stall: (args.timeout_body_read > 0.0).then(|| seconds(args.timeout_body_read)),
        queue_timeout: seconds(args.queue_timeout),
        queue_limit: args.limit_queue,
        request_timeout: (args.timeout_request > 0.0).then(|| seconds(args.timeout_request)),
        request_id: args.request_id,
        proxies: (!args.no_proxy_headers).then(|| args.forwarded_allow_ips.clone()),
        min_body_rate: args.min_body_rate,
        mounts: args.static_mount.clone(),
        health_path: args.health_path.clone(),
        tls,
        h2: std::sync::Arc::new(crate::h2::Settings {
            mode: args.http,
            max_streams: args.h2_max_concurrent_streams,
            max_header_list: 64 * 1024,
            max_request_line: head_limit(args.limit_request_line),
            max_fields: head_limit(args.limit_request_fields),
            max_field_size: head_limit(args.limit_request_field_size),
            max_body: (args.limit_request_body > 0).then_some(args.limit_request_body),
            // No keep-alive (0) cannot close an HTTP/2 connection after "its" response: an
            // idle one gets as long as a request head would.
            keep_alive: match seconds(args.timeout_keep_alive) {
                d if d.is_zero() => limit_seconds(args.timeout_header_read),
                d => d,
            },
            header_read: limit_seconds(args.timeout_header_read),
            body_read: limit_seconds(args.timeout_body_read),
            queue_timeout: seconds(args.queue_timeout),
            queue_limit: args.limit_queue,
            request_timeout: (args.timeout_request > 0.0).then(|| seconds(args.timeout_request)),
            request_id: args.request_id,
            proxies: (!args.no_proxy_headers).then(|| args.forwarded_allow_ips.clone()),
            min_body_rate: args.min_body_rate,
            mounts: args.static_mount.clone(),
            health_path: args.health_path.clone(),
            date: !args.no_date_header,
            server: !args.no_server_header,
            extra: HeaderOptions::encode_extra(&args.header),
        }),
        ws: (args.ws == crate::config::WsMode::Auto).then(|| crate::http1::conn::WsConfig {
            max_size: usize::try_from(args.ws_max_size).unwrap_or(usize::MAX),
            ping_interval: (args.ws_ping_interval > 0.0).then(|| seconds(args.ws_ping_interval)),
            ping_timeout: (args.ws_ping_timeout > 0.0).then(|| seconds(args.ws_ping_timeout)),
            deflate: args.ws_per_message_deflate,
            graceful: seconds(args.timeout_graceful_shutdown),
        }),
    }
}

/// The running front-end threads.
pub(super) struct FrontEnds {
    pub threads: Vec<std::thread::JoinHandle<()>>,
    /// Their reports to the supervisor.
    pub reports: mpsc::Receiver<Report>,
    /// Which of them died after start-up.
    pub deaths: threadwatch::Deaths,
    /// The I/O driver they run on ("io_uring" or "epoll").
    pub driver: &'static str,
}

/// Starts one front-end thread per listener list, each attached to every worker, and waits
/// until each has its I/O driver running.
pub(super) fn front_ends(
    args: &ServeConfig,
    listeners: Vec<Vec<crate::net::Listener>>,
    mailboxes: &[Arc<Mailbox>],
    workers: &Workers,
    conn: &ConnConfig,
    shared: &Shared,
    ctx: &SpawnContext,
) -> Result<FrontEnds, Failure> {
    let (report_tx, reports) = mpsc::channel::<Report>();
    let (started_tx, started_rx) = mpsc::channel::<Started>();
    let max_connections = connection_limit(args);
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
            graceful: ctx.graceful,
            max_connections,
            load: shared.load.clone(),
            limit_concurrency: args.limit_concurrency,
            metrics: shared.metrics.clone(),
            access_log: shared.access_log.clone(),
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
    let driver = wait_started(&started_rx, args.threads)?;
    Ok(FrontEnds {
        threads,
        reports,
        deaths,
        driver,
    })
}

/// Waits for each thread's start-up report; warns once if io_uring fell back to epoll.
fn wait_started(started: &mpsc::Receiver<Started>, threads: u32) -> Result<&'static str, Failure> {
    let mut driver = "";
    for _ in 0..threads {
        match started.recv() {
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
    Ok(driver)
}

/// `--limit-connections`, or by default what the fd limit allows (see `connlimit`).
fn connection_limit(args: &ServeConfig) -> Option<usize> {
    let nofile = crate::sys::raise_nofile();
    match args.limit_connections {
        Some(0) => None,
        Some(n) => Some(n),
        None => {
            let n = crate::connlimit::default_per_thread(nofile, args.threads);
            let reserve = crate::connlimit::reserve(nofile);
            tracing::info!(
                "connection limit: {n} per front-end thread (fd limit {nofile}, {reserve} kept in reserve; --limit-connections to change)"
            );
            if nofile.saturating_sub(reserve) < crate::connlimit::FEW_CONNECTIONS {
                tracing::warn!(
                    hint = "raise it: `ulimit -n` in the shell, LimitNOFILE= under systemd, --ulimit nofile= under docker",
                    "the fd limit ({nofile}) leaves room for only {} connections",
                    nofile.saturating_sub(reserve)
                );
            }
            Some(n)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_app_needs_a_module_and_an_attribute() {
        assert_eq!(app_name(None).unwrap(), "uringapi.demo:app");
        assert_eq!(app_name(Some("main:app")).unwrap(), "main:app");
        for bad in ["main", "main:", ":app", ""] {
            let f = app_name(Some(bad)).unwrap_err();
            assert!(f.error.contains("module:attribute"), "{bad:?}: {}", f.error);
        }
    }

    #[test]
    fn a_file_path_for_the_app_gets_the_module_name_to_use() {
        for (given, hint) in [
            ("main.py", "main:app`"),
            ("main.py:api", "main:api`"),
            ("./main.py:app", "main:app`"),
            ("app/main.py:app", "app.main:app`"),
            ("/srv/site/main.py:app", "main:app --app-dir /srv/site`"),
            ("../other/main.py:app", "main:app --app-dir ../other`"),
        ] {
            let f = app_name(Some(given)).unwrap_err();
            assert!(f.error.contains("names a file"), "{given}: {}", f.error);
            assert!(f.hint.ends_with(hint), "{given}: {}", f.hint);
        }
    }

    #[test]
    fn app_dir_must_be_a_directory() {
        let file = std::env::current_exe().unwrap();
        assert!(app_dir(Some(&file)).is_err());
        let dir = std::env::temp_dir();
        assert_eq!(app_dir(Some(&dir)).unwrap(), dir);
    }
}
