//! A front-end thread: its own io_uring (or epoll) runtime, its own SO_REUSEPORT listener,
//! its connections, and its hub of channels to every worker.

use std::rc::Rc;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use monoio::time::TimeDriver;
use monoio::{IoUringDriver, LegacyDriver, RuntimeBuilder};

use crate::dispatch::{Command, Hub, Mailbox, Report};
use crate::http1::conn::{self, ConnConfig};

/// `--io-driver`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoDriver {
    /// io_uring, falling back to epoll with a warning when the kernel refuses it.
    Auto,
    Uring,
    Epoll,
}

/// What a thread says once its runtime is up (or could not start).
#[derive(Debug)]
pub enum Started {
    Ok {
        driver: &'static str,
        fallback: Option<String>,
    },
    Failed(String),
}

/// Everything a thread needs.
pub struct ThreadSetup {
    pub index: u32,
    /// One listener per address the server listens on.
    pub listeners: Vec<crate::net::Listener>,
    pub mailbox: Arc<Mailbox>,
    pub reports: mpsc::Sender<Report>,
    pub initial: Vec<Command>,
    pub conn: ConnConfig,
    pub driver: IoDriver,
    pub graceful: Duration,
    pub max_connections: Option<usize>,
    pub load: Arc<crate::load::LoadTable>,
    pub limit_concurrency: u32,
    /// `--pin-cpus`: the CPU this thread runs on.
    pub cpu: Option<usize>,
    pub sched: crate::sys::Sched,
    pub metrics: Arc<crate::metrics::Metrics>,
    pub access_log: Option<(Arc<crate::accesslog::Sink>, crate::accesslog::Format)>,
}

/// How often a thread hands its batch of access log lines to the sink when traffic is light.
const ACCESS_LOG_FLUSH: Duration = Duration::from_millis(200);
static AFTER_BURST: std::sync::OnceLock<fn()> = std::sync::OnceLock::new();

/// Sets what a front-end thread calls once a burst of requests or handshakes has ended (its
/// channels just released the shared-memory pages the burst touched): the executable gives
/// its allocator's freed pages back there (server/cli/src/main.rs). Set once, before
/// serving; later calls are ignored.
pub fn set_after_burst(hook: fn()) {
    let _ = AFTER_BURST.set(hook);
}

/// How often each thread releases the request-slot pages a past burst touched, when the
/// load is light (`Hub::trim_slots`).
const TRIM_SLOTS_EVERY: Duration = Duration::from_millis(250);

const RING_ENTRIES: u32 = 1024;

pub fn run(setup: ThreadSetup, started: mpsc::Sender<Started>) {
    if let Err(e) = setup.sched.apply_to_current_thread() {
        tracing::warn!(thread = setup.index, sched = ?setup.sched, error = %e, "cannot set the front-end thread's scheduling policy; it keeps the default");
    }
    if let Some(cpu) = setup.cpu {
        if let Err(e) = crate::sys::pin_current_thread(cpu) {
            tracing::warn!(thread = setup.index, cpu, error = %e, "cannot pin the front-end thread; it runs unpinned");
        }
    }
    let mut fallback = None;
    if setup.driver != IoDriver::Epoll {
        match uring_runtime(true).or_else(|e| match e.raw_os_error() {
            // A kernel older than 6.0 refuses the setup flags: a plain ring still works.
            Some(libc::EINVAL) => uring_runtime(false),
            _ => Err(e),
        }) {
            Ok(mut rt) => {
                let _ = started.send(Started::Ok {
                    driver: "io_uring",
                    fallback: None,
                });
                rt.block_on(serve(setup));
                return;
            }
            Err(e) if setup.driver == IoDriver::Auto => fallback = Some(uring_refusal(&e)),
            Err(e) => {
                let _ = started.send(Started::Failed(format!(
                    "io_uring is not available: {}",
                    uring_refusal(&e)
                )));
                return;
            }
        }
    }
    match RuntimeBuilder::<LegacyDriver>::new().enable_timer().build() {
        Ok(mut rt) => {
            let _ = started.send(Started::Ok {
                driver: "epoll",
                fallback,
            });
            rt.block_on(serve(setup));
        }
        Err(e) => {
            let _ = started.send(Started::Failed(format!(
                "cannot start the epoll runtime: {e}"
            )));
        }
    }
}

/// This thread's io_uring runtime. With `tuned`, the ring is set up with
/// IORING_SETUP_COOP_TASKRUN (a completion does not interrupt the running thread with an
/// IPI; it is reaped at the thread's next syscall, and a monoio turn makes one) and
/// IORING_SETUP_SINGLE_ISSUER (only this thread submits, so the kernel skips the locking).
/// PERF: under hello the front end's CPU per request went from about 11.7 to 9.3 µs and
/// throughput rose by a fifth (A/B runs of `benches/e2e/run.py --servers uringapi --apps
/// hello,fastapi-json`, 4 rounds each, 2026-12-03).
fn uring_runtime(
    tuned: bool,
) -> std::io::Result<monoio::Runtime<monoio::time::TimeDriver<IoUringDriver>>> {
    let mut urb = io_uring::IoUring::builder();
    if tuned {
        urb.setup_coop_taskrun().setup_single_issuer();
    }
    RuntimeBuilder::<IoUringDriver>::new()
        .with_entries(RING_ENTRIES)
        .uring_builder(urb)
        .enable_timer()
        .build()
}

/// Names the likely cause of an io_uring refusal.
fn uring_refusal(e: &std::io::Error) -> String {
    let cause = match e.raw_os_error() {
        Some(libc::ENOSYS) => "the kernel has no io_uring (ENOSYS)",
        Some(libc::EPERM) => "io_uring is forbidden here (EPERM): kernel.io_uring_disabled or a seccomp profile such as Docker's default",
        Some(libc::ENOMEM) => "not enough locked memory for the ring (ENOMEM): raise the memlock ulimit",
        _ => "io_uring_setup failed",
    };
    format!("{cause}: {e}")
}

// Keep the timer-wrapped driver types named so a monoio upgrade that renames them fails here.
type _Drivers = (TimeDriver<IoUringDriver>, TimeDriver<LegacyDriver>);

async fn serve(setup: ThreadSetup) {
    let hub = Rc::new(Hub::new(
        setup.index,
        setup.mailbox.clone(),
        setup.reports.clone(),
        setup.load.clone(),
        setup.limit_concurrency,
        setup.metrics.clone(),
        setup.access_log.clone(),
    ));
    if hub.access_log_on() {
        let hub = hub.clone();
        monoio::spawn(async move {
            loop {
                monoio::time::sleep(ACCESS_LOG_FLUSH).await;
                hub.flush_access_log();
            }
        });
    }
    {
        // MEMORY: the shared-memory pages a burst touched go back once the load is light
        // (protocol's SlotPool::trim): about 1 MiB per worker after 10,000 WebSocket
        // handshakes (tests/e2e/test_idle_websockets.py). A trim that released something
        // marks the end of a burst: the allocator then gives back the pages the burst
        // freed (`set_after_burst`).
        let hub = hub.clone();
        monoio::spawn(async move {
            loop {
                monoio::time::sleep(TRIM_SLOTS_EVERY).await;
                if hub.trim_slots() > 0 {
                    if let Some(hook) = AFTER_BURST.get() {
                        hook();
                    }
                }
            }
        });
    }
    if setup.index == 0 {
        test_panic_hook();
    }
    for cmd in setup.initial {
        setup.mailbox.post(cmd);
    }
    match crate::sys::pollable(setup.mailbox.doorbell()) {
        Ok(doorbell) => {
            monoio::spawn(hub.clone().poller(doorbell));
        }
        Err(e) => {
            tracing::error!(thread = setup.index, error = %e, "cannot poll the thread doorbell");
            return;
        }
    }
    let cfg = Rc::new(setup.conn);
    let mut accepting = Vec::new();
    for listener in setup.listeners {
        let listener = match crate::net::Accepting::adopt(listener) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(thread = setup.index, error = %e, "cannot adopt the listener");
                return;
            }
        };
        accepting.push(monoio::spawn(accept_loop(
            hub.clone(),
            cfg.clone(),
            listener,
            setup.index,
            setup.max_connections,
        )));
    }
    // Each accept loop ends (and closes its listener) once the thread drains.
    for task in accepting {
        task.await;
    }
    // Open WebSockets get their close 1001 at the graceful timeout (http1/conn/websocket.rs);
    // a second more lets those frames go out. Told to stop now, the thread waits no more:
    // its connections close with the runtime.
    let deadline = Instant::now() + setup.graceful + WS_CLOSE_GRACE;
    while hub.connections.get() > 0 && Instant::now() < deadline && !hub.is_forced() {
        monoio::time::sleep(Duration::from_millis(10)).await;
    }
    if hub.is_forced() {
        tracing::info!(
            thread = setup.index,
            open = hub.connections.get(),
            "stopping now: closing connections"
        );
    } else if hub.connections.get() > 0 {
        tracing::warn!(
            thread = setup.index,
            open = hub.connections.get(),
            "graceful shutdown timed out; closing connections"
        );
    }
    hub.flush_access_log();
}

/// How long past the graceful timeout a draining thread waits for its WebSockets' close
/// frames.
const WS_CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Accepts connections on one listener until the thread drains; then serves the ones still
/// in its accept queue and closes it.
async fn accept_loop(
    hub: Rc<Hub>,
    cfg: Rc<ConnConfig>,
    listener: crate::net::Accepting,
    index: u32,
    max_connections: Option<usize>,
) {
    let mut refusals = crate::logthrottle::Throttle::default();
    let mut failures = crate::logthrottle::Throttle::default();
    let mut admit = |(sock, peer, local)| {
        if let Some(limit) = max_connections.filter(|&m| hub.connections.get() >= m) {
            // Over --limit-connections: refuse by closing at once, as gunicorn does.
            drop(sock);
            if let Some(refused) = refusals.count(Instant::now()) {
                tracing::warn!(
                    thread = index,
                    limit,
                    refused,
                    "--limit-connections reached; new connections are closed at once (this line at most every 10 s)"
                );
            }
            return;
        }
        monoio::spawn(conn::serve(hub.clone(), cfg.clone(), sock, peer, local));
    };
    let canceller = monoio::io::Canceller::new();
    let mut next = std::pin::pin!(listener.accept(canceller.handle()));
    loop {
        let accepted = monoio::select! {
            _ = hub.drained() => break,
            r = next.as_mut() => r,
        };
        next.set(listener.accept(canceller.handle()));
        match accepted {
            Ok(conn) => admit(conn),
            Err(e) => {
                // EMFILE/ENFILE and friends: back off a little instead of spinning. The
                // connection waits in the listen queue meanwhile. Clients can make this
                // happen a hundred times a second, so the log says so once per interval.
                if let Some(failed) = failures.count(Instant::now()) {
                    let hint = match e.raw_os_error() {
                        Some(libc::EMFILE | libc::ENFILE) => {
                            "the fd limit is reached: raise it (ulimit -n, LimitNOFILE=) or keep --limit-connections below it"
                        }
                        _ => "retrying every 10 ms",
                    };
                    tracing::warn!(
                        thread = index,
                        error = %e,
                        failed,
                        hint,
                        "accept failed; connections wait in the listen queue (this line at most every 10 s)"
                    );
                }
                monoio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    // The accept in flight is cancelled and awaited: it may have taken a connection first.
    let _ = canceller.cancel();
    if let Ok(conn) = next.await {
        admit(conn);
    }
    // Closing the listener resets the connections in its queue, whose clients may have sent
    // a request already: they are served (with `Connection: close`) like the open ones.
    // Measured with 100 clients reconnecting in a loop at SIGTERM (each request on a new
    // connection): 10 to 110 requests reset before (uvicorn: 35 to 50), none after.
    for conn in listener.queued(QUEUED_AT_DRAIN) {
        admit(conn);
    }
}

/// At most this many queued connections are taken at a drain (the kernel's default cap on a
/// listen backlog, `net.core.somaxconn`): a flood arriving meanwhile cannot keep it going.
const QUEUED_AT_DRAIN: usize = 4096;

/// Test-only hook: with `URINGAPI_TEST_PANIC_FILE=<path>` in the environment, front-end
/// thread 0 panics once that file exists (it looks every 50 ms). For the end-to-end test of
/// `supervisor::threadwatch`; never set it in production.
pub const TEST_PANIC_FILE: &str = "URINGAPI_TEST_PANIC_FILE";

/// Test-only (see [`TEST_PANIC_FILE`]): panics this thread once the
/// named file exists. Off unless that variable is set.
fn test_panic_hook() {
    let Some(path) = std::env::var_os(TEST_PANIC_FILE) else {
        return;
    };
    monoio::spawn(async move {
        loop {
            monoio::time::sleep(std::time::Duration::from_millis(50)).await;
            if std::path::Path::new(&path).exists() {
                panic!("{TEST_PANIC_FILE}: {path:?} exists; panicking as asked (test hook)");
            }
        }
    });
}
