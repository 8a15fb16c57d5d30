//! The supervisor: binds the listeners, creates each worker's segment, spawns and watches the
//! worker processes, starts the front-end threads, and owns the signals.
//!
//! Start-up is all-or-nothing: if any worker dies before it reports ready (the app does not
//! import, or its lifespan startup fails), the server stops with that worker's error instead
//! of respawning it in a loop. After start-up, a worker that dies is replaced with backoff
//! and only its own requests in flight fail (502).

use std::collections::VecDeque;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use uringapi_protocol::doorbell::EventFd;
use uringapi_protocol::{Geometry, Segment};

use crate::accesslog::Sink;
use crate::config::{seconds, ServeConfig};
use crate::dispatch::{Command as ThreadCmd, Mailbox, Report};
use crate::failure::Failure;
use crate::load::LoadTable;
use crate::metrics::{Metrics, ProcessSnapshot, WorkerSnapshot};

mod board;
mod listen;
mod notify;
mod pidfile;
mod reload;
mod start;
pub(crate) mod threadwatch;
mod uds;
mod watch;
mod worker;

use board::{Board, PUBLISH_EVERY};
use watch::Supervisor;
use worker::{rss_bytes, spawn, Recycling, Role, SpawnContext, Workers};

/// How often the supervisor looks at its workers and signals.
const TICK: Duration = Duration::from_millis(10);
/// Respawn backoff: doubles from the first value up to the second.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// A worker that stayed up this long resets its backoff.
const STABLE_AFTER: Duration = Duration::from_secs(30);

/// Runs the server until a stop signal. Start-up is a sequence of steps, each of which
/// fails with an `error:`/`hint:` before the next one runs (see start.rs); then the
/// supervisor's loop (watch.rs); then the drain.
pub fn serve(args: ServeConfig) -> Result<(), Failure> {
    let checked = start::check(&args)?;
    start::load_env_file(&args)?;
    start::check_log_config(&args)?;
    // Listeners first: a busy port should fail before any Python starts.
    let scheme = if checked.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let listen::Listeners {
        per_thread,
        urls,
        socket_file,
    } = listen::open(&args, scheme)?;
    // Dropped when serve returns, whichever way: the file goes with the process.
    let _pid_file = args.pid_file.as_deref().map(pidfile::write).transpose()?;
    let mailboxes = start::mailboxes(args.threads)?;
    let ctx = start::spawn_context(&args, &checked, &mailboxes);
    let recycling = start::recycling(&args);
    let notify = notify::Notifier::from_env();
    let signals = Signals::install()?;
    let _reloader = reload::start(&args, &ctx.app_dir, signals.hup.clone())?;
    let shared = start::Shared::new(&args)?;
    start::serve_metrics(&args, &shared.board)?;
    let Some(workers) = start::workers(&args, &ctx, &recycling, &signals.term)? else {
        return Ok(()); // stopped while the workers started
    };
    let conn = start::conn_config(&args, checked.tls);
    let fronts = start::front_ends(
        &args, per_thread, &mailboxes, &workers, &conn, &shared, &ctx,
    )?;
    announce(&args, &checked.app, checked.geometry, &urls, fronts.driver);

    let mut sup = Supervisor {
        workers,
        ctx,
        mailboxes: mailboxes.clone(),
        load: shared.load,
        stall: seconds(args.stall_timeout),
        kill_after: (args.timeout > 0.0).then(|| seconds(args.timeout)),
        recycling,
        rolling: VecDeque::new(),
        recycle_pause_until: None,
        restarts: 0,
        stalls: 0,
        last_rss_check: Instant::now(),
        board: shared.board,
        access_log: shared.access_log.map(|(sink, _)| sink),
        last_publish: Instant::now(),
        notify,
        deaths: fronts.deaths.clone(),
        pid1: std::process::id() == 1,
        tls: conn.tls.clone(),
    };
    sup.notify.send("READY=1");
    sup.run(&fronts.reports, &signals);
    shut_down(sup, &mailboxes, fronts, socket_file, &signals)
}

/// The start-up log line: where it listens and with what.
fn announce(args: &ServeConfig, app: &str, geometry: Geometry, urls: &[String], driver: &str) {
    let shm = geometry.segment_bytes() as u64 * u64::from(args.workers);
    let urls = urls.join(", ");
    // A small --slot-size/--channel-slots is under a MiB: not "0 MiB".
    let shm = if shm >= 1 << 20 {
        format!("{} MiB", shm >> 20)
    } else {
        format!("{} KiB", shm.div_ceil(1 << 10))
    };
    tracing::info!(
        "listening on {urls} (app: {app}, workers: {}, threads: {}, io driver: {driver}, shared memory: {shm})",
        args.workers,
        args.threads,
    );
}

/// The drain: not ready, threads finish their connections, workers run lifespan shutdown,
/// the access log settles. An error if a front-end thread died meanwhile.
///
/// The graceful timeout counts from the start of the drain: the workers get what the threads
/// left of it. A second SIGTERM/SIGINT (Ctrl-C again, as under uvicorn) stops now: the
/// threads drop their connections and the workers cancel what is running, then run lifespan
/// shutdown; one more while they do kills them. SIGQUIT (gunicorn's quick shutdown) stops
/// now from the start, or at once during a drain.
fn shut_down(
    mut sup: Supervisor,
    mailboxes: &[Arc<Mailbox>],
    fronts: start::FrontEnds,
    socket_file: Option<uds::SocketFile>,
    signals: &Signals,
) -> Result<(), Failure> {
    let started = Instant::now();
    // The signal that began the drain (none when a thread died): the next one stops now,
    // unless it is the same one delivered twice (Ctrl-C reaches the whole process group,
    // and `uringapi.run()` passes what reaches it on to us).
    let mut signalled = signals.term.swap(false, Ordering::Relaxed);
    let mut again = move || {
        if !signals.term.swap(false, Ordering::Relaxed) {
            return false;
        }
        if signals.quit.swap(false, Ordering::Relaxed) {
            signalled = true;
            return true;
        }
        if signalled && started.elapsed() < SAME_SIGNAL {
            return false;
        }
        let second = signalled;
        signalled = true;
        second
    };
    // Draining: load balancers should stop sending before connections are refused.
    sup.board.ready.store(false, Ordering::Relaxed);
    sup.notify.send("STOPPING=1");
    // SIGQUIT is gunicorn's quick shutdown: no drain, as if a second stop signal came at once.
    let mut forced = signals.quit.swap(false, Ordering::Relaxed);
    if forced {
        tracing::info!(
            "SIGQUIT: stopping now (requests in flight are cancelled, connections closed)"
        );
    } else {
        tracing::info!("shutting down: draining connections (SIGTERM or Ctrl-C again to stop now)");
        let websockets = sup.load.websockets_open();
        if websockets > 0 {
            tracing::info!(
                websockets,
                "open WebSockets get --timeout-graceful-shutdown ({} s), then close 1001",
                sup.ctx.graceful.as_secs_f64()
            );
        }
    }
    for m in mailboxes {
        m.post(if forced {
            ThreadCmd::Force
        } else {
            ThreadCmd::Drain
        });
    }
    while !fronts.threads.iter().all(|t| t.is_finished()) {
        if !forced && again() {
            forced = true;
            tracing::warn!("stop signal during the drain: stopping now (requests in flight are cancelled, connections closed)");
            for m in mailboxes {
                m.post(ThreadCmd::Force);
            }
        }
        std::thread::sleep(TICK);
    }
    for t in fronts.threads {
        let _ = t.join();
    }
    // A worker cancels what is still running once the rest of the graceful timeout has
    // passed, then runs lifespan shutdown: SIGKILL only a worker that has not exited
    // KILL_GRACE after that.
    let left = if forced {
        Duration::ZERO
    } else {
        watch::grace_left(sup.ctx.graceful, started.elapsed())
    };
    stop_workers(&mut sup.workers, left, again);
    // The threads closed their listeners: the socket file can go.
    drop(socket_file);
    if let Some(sink) = &sup.access_log {
        // The threads' last batches are queued; give the writer a bounded moment (a log
        // whose destination does not drain must not hold the exit).
        sink.settle(Duration::from_secs(2));
    }
    if fronts.deaths.any() {
        return Err(Failure::new(
            "a front-end thread died (see the panic above); its connections were lost",
            "the process exits so that its supervisor (systemd, Kubernetes) starts a fresh one; please report the panic",
        ));
    }
    tracing::info!("stopped");
    Ok(())
}

/// Stop signals this close to the one that began the drain are that one, delivered twice.
/// (The two copies usually land within one poll of the flag and merge; this covers a
/// forwarder that was slow to pass its copy on.)
const SAME_SIGNAL: Duration = Duration::from_millis(500);

/// The signals the supervisor acts on, as flags its loop polls.
struct Signals {
    /// SIGTERM, SIGINT or SIGQUIT: drain and stop.
    term: Arc<AtomicBool>,
    /// SIGQUIT (also sets `term`): stop without the drain.
    quit: Arc<AtomicBool>,
    /// SIGHUP: replace every worker, one at a time.
    hup: Arc<AtomicBool>,
    /// SIGTTIN / SIGTTOU: one worker more / fewer, each time (gunicorn's meaning: three
    /// `kill -TTIN` in a row are three workers, not one).
    ttin: Arc<AtomicUsize>,
    ttou: Arc<AtomicUsize>,
    /// SIGUSR1: reopen the access log file.
    usr1: Arc<AtomicBool>,
    /// SIGUSR2: nothing here, but said so (its default action would end the server, and
    /// gunicorn users send it for a binary upgrade).
    usr2: Arc<AtomicBool>,
}

impl Signals {
    fn install() -> Result<Self, Failure> {
        use signal_hook::consts::*;
        let s = Self {
            term: Arc::default(),
            quit: Arc::default(),
            hup: Arc::default(),
            ttin: Arc::default(),
            ttou: Arc::default(),
            usr1: Arc::default(),
            usr2: Arc::default(),
        };
        let table = [
            (SIGTERM, &s.term),
            (SIGINT, &s.term),
            (SIGQUIT, &s.term),
            (SIGQUIT, &s.quit),
            (SIGHUP, &s.hup),
            (SIGUSR1, &s.usr1),
            (SIGUSR2, &s.usr2),
        ];
        let failed = |e: std::io::Error| {
            Failure::new(
                format!("cannot install signal handlers: {e}"),
                "this is a bug; please report it",
            )
        };
        for (sig, flag) in table {
            signal_hook::flag::register(sig, flag.clone()).map_err(failed)?;
        }
        for (sig, count) in [(SIGTTIN, &s.ttin), (SIGTTOU, &s.ttou)] {
            crate::sys::count_signal(sig, count.clone()).map_err(failed)?;
        }
        Ok(s)
    }
}

/// Stops every worker (`Worker::stop`), whose requests get `left` to finish before it runs
/// lifespan shutdown; SIGKILL after `KILL_GRACE` more, or at once when `stop_now` says so.
fn stop_workers(workers: &mut Workers, left: Duration, mut stop_now: impl FnMut() -> bool) {
    for w in &workers.0 {
        w.stop(left);
    }
    let deadline = Instant::now() + left + watch::KILL_GRACE;
    loop {
        let mut alive = 0;
        for w in &mut workers.0 {
            if w.child.is_some() {
                match w.exited() {
                    // Still importing the app: it had no handler for SIGTERM yet.
                    Some(s) if !w.ever_ready && s.signal() == Some(libc::SIGTERM) => {
                        tracing::info!(
                            worker = w.index,
                            pid = w.pid,
                            "worker stopped while still starting"
                        );
                    }
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
        let now = stop_now();
        if now || Instant::now() >= deadline {
            if now {
                tracing::warn!(
                    alive,
                    "stop signal during the workers' shutdown: killing them"
                );
            } else {
                tracing::warn!(
                    alive,
                    "workers still running after the graceful timeout; killing them"
                );
            }
            for w in &workers.0 {
                w.signal(libc::SIGKILL);
            }
            return;
        }
        std::thread::sleep(TICK);
    }
}
