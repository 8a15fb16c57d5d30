//! One worker process: how it is spawned, its life (active, retiring, stopping), and the
//! recycling thresholds it draws.

use super::*;
use uringapi_protocol::segment::CreateError;

/// How long the line that says why a worker is sent SIGABRT may take to reach stderr
/// before the signal goes anyway (a stderr that does not drain must not hold the kill).
const LOG_BEFORE_ABORT: Duration = Duration::from_millis(200);

/// What every worker spawn needs.
pub(super) struct SpawnContext {
    pub(super) python: PathBuf,
    pub(super) app: String,
    pub(super) app_dir: PathBuf,
    /// `--factory`: the worker calls the app attribute to get the app.
    pub(super) factory: bool,
    /// `--log-config`, applied by the worker after its own logging set-up.
    pub(super) log_config: Option<PathBuf>,
    pub(super) geometry: Geometry,
    pub(super) thread_doorbells: Vec<i32>,
    pub(super) log_level: &'static str,
    pub(super) lifespan: &'static str,
    pub(super) root_path: String,
    /// `--uds`: the path the app sees as its scope's `server`.
    pub(super) uds: Option<PathBuf>,
    /// The worker's heartbeat period: a quarter of --stall-timeout, within bounds.
    pub(super) heartbeat: Duration,
    pub(super) graceful: Duration,
    /// `--timeout-worker-startup` (FOREVER: none). The worker keeps it itself, so that a
    /// replacement stuck in its import or lifespan startup ends too, saying where it was.
    pub(super) startup: Duration,
    /// CPUs to pin workers to (worker slot i gets `cpus[(threads + i) % len]`).
    pub(super) cpus: Option<Vec<usize>>,
    pub(super) sched: crate::sys::Sched,
    pub(super) threads: usize,
}

/// Where a worker is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
    /// Serving (or starting, or waiting to be respawned).
    Active,
    /// Gets no new requests; stopped once its requests in flight are done.
    Retiring { since: Instant },
    /// Told to stop (`Worker::stop`): finishing, running lifespan shutdown, exiting. Not respawned.
    Stopping { since: Instant },
}

/// One worker process and its shared memory.
pub(super) struct Worker {
    pub(super) index: usize,
    pub(super) child: Option<Child>,
    pub(super) pid: u32,
    pub(super) segment: Arc<Segment>,
    pub(super) doorbell: EventFd,
    pub(super) status: Option<std::io::PipeReader>,
    pub(super) ready: bool,
    pub(super) ever_ready: bool,
    pub(super) generation: u64,
    pub(super) spawned_at: Instant,
    pub(super) failures: u32,
    pub(super) respawn_at: Option<Instant>,
    pub(super) role: Role,
    /// The worker this one replaces once it is ready (rolling restart, recycling).
    pub(super) replaces: Option<usize>,
    /// When its loop was first seen silent past --stall-timeout.
    pub(super) stalled_since: Option<Instant>,
    /// When it was sent SIGABRT (`abort`): silent past --timeout, or not ready past
    /// --timeout-worker-startup.
    pub(super) aborted_at: Option<Instant>,
    /// It got a SIGTERM from outside and asked to be replaced (seen once).
    pub(super) asked_replacement: bool,
    /// This worker's recycling thresholds, jitter included.
    pub(super) recycle: Thresholds,
    pub(super) rss: u64,
}

pub(super) fn spawn(
    ctx: &SpawnContext,
    index: usize,
    generation: u64,
    recycle: Thresholds,
) -> Result<Worker, Failure> {
    let segment = Segment::create(ctx.geometry, generation).map_err(|e| {
        // A memfd's size counts against RLIMIT_FSIZE: `ulimit -f` below it is EFBIG.
        let too_large = matches!(&e, CreateError::Truncate { source, .. }
            if source.raw_os_error() == Some(libc::EFBIG));
        Failure::new(
            format!("cannot create shared memory for worker {index}: {e}"),
            if too_large {
                "the file size limit (ulimit -f) is below the segment size: raise it (`ulimit -f unlimited`, LimitFSIZE=infinity under systemd), or lower --slot-size or --channel-slots"
            } else {
                "check that memfd works and memory is available"
            },
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
        .env("URINGAPI_FACTORY", if ctx.factory { "1" } else { "0" })
        .env(
            "URINGAPI_LOG_CONFIG",
            ctx.log_config
                .as_deref()
                .unwrap_or(std::path::Path::new("")),
        )
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
            "URINGAPI_UDS",
            ctx.uds.as_deref().unwrap_or(std::path::Path::new("")),
        )
        .env(
            "URINGAPI_HEARTBEAT",
            ctx.heartbeat.as_secs_f64().to_string(),
        )
        .env("URINGAPI_GRACEFUL", ctx.graceful.as_secs_f64().to_string())
        .env(
            "URINGAPI_STARTUP_TIMEOUT",
            match ctx.startup {
                crate::config::FOREVER => "0".to_string(),
                limit => limit.as_secs_f64().to_string(),
            },
        )
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
    crate::sys::prepare_child(&mut cmd, fds, ctx.sched, cpu);
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
        asked_replacement: false,
        recycle,
        rss: 0,
    })
}

impl Worker {
    /// The worker's own account of why it failed, if it wrote one.
    pub(super) fn status_message(&mut self) -> String {
        match self.status.take() {
            Some(mut r) => crate::sys::read_available(&mut r),
            None => String::new(),
        }
    }

    pub(super) fn attach_command(&self) -> Option<ThreadCmd> {
        let doorbell = self.doorbell.try_clone().ok()?;
        Some(ThreadCmd::Attach {
            worker: self.index,
            segment: self.segment.clone(),
            doorbell,
            pid: self.pid,
        })
    }

    pub(super) fn signal(&self, sig: i32) {
        if self.child.is_some() {
            crate::sys::kill(self.pid, sig);
        }
    }

    /// Kills a stuck worker in two steps: SIGABRT first, which prints its Python stack
    /// (faulthandler), with SIGCONT so that a stopped one acts on it; SIGKILL once
    /// `super::watch::KILL_GRACE` has passed since. Called again and again while it is
    /// stuck; the first time, `why` logs the reason, and that line is on stderr before
    /// the stack is.
    pub(super) fn abort(&mut self, now: Instant, why: impl FnOnce(&Self)) {
        match self.aborted_at {
            None => {
                why(self);
                crate::accesslog::settle_log(LOG_BEFORE_ABORT);
                self.signal(libc::SIGABRT);
                self.signal(libc::SIGCONT);
                self.aborted_at = Some(now);
            }
            Some(t) => {
                if now - t > super::watch::KILL_GRACE {
                    self.signal(libc::SIGKILL);
                }
            }
        }
    }

    /// Stops the worker (protocol segment rule 4); its requests in flight get `left` to
    /// finish. A ready worker reads the request from shared memory at its next heartbeat
    /// (25 ms): no signal, so an app that reset SIGTERM to its default action while serving
    /// (or installed its own handler) is not killed by it and still runs its lifespan
    /// shutdown. A worker still starting gets SIGTERM too, marked as ours, which ends
    /// an import or a lifespan startup (no handler yet) or reaches the handler added just
    /// before `ready`.
    pub(super) fn stop(&self, left: Duration) {
        self.segment.request_stop(left);
        if !self.segment.is_ready() {
            self.signal(libc::SIGTERM);
        }
    }

    /// Reaps the process if it exited.
    pub(super) fn exited(&mut self) -> Option<std::process::ExitStatus> {
        let status = self.child.as_mut()?.try_wait().ok()??;
        self.child = None;
        Some(status)
    }

    pub(super) fn is_active(&self) -> bool {
        self.role == Role::Active
    }
}

/// Kills any worker still running when the supervisor returns early.
pub(super) struct Workers(pub(super) Vec<Worker>);

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
    pub(super) fn free_index(&self) -> Option<usize> {
        (0..crate::load::MAX_SLOTS).find(|i| self.0.iter().all(|w| w.index != *i))
    }

    pub(super) fn by_index(&mut self, index: usize) -> Option<&mut Worker> {
        self.0.iter_mut().find(|w| w.index == index)
    }
}

/// When a worker is recycled (`None`: never on that count).
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Thresholds {
    pub(super) requests: Option<u64>,
    pub(super) lifetime: Option<Duration>,
    pub(super) rss: Option<u64>,
}

/// The recycling flags, from which each worker draws its own jittered thresholds.
#[derive(Debug, Clone, Copy)]
pub(super) struct Recycling {
    pub(super) max_requests: u64,
    pub(super) lifetime: Duration,
    pub(super) max_rss: u64,
    pub(super) jitter: f64,
}

impl Recycling {
    pub(super) fn draw(&self) -> Thresholds {
        let j = || 1.0 + self.jitter.clamp(0.0, 10.0) * unit_random();
        Thresholds {
            requests: (self.max_requests > 0).then(|| (self.max_requests as f64 * j()) as u64),
            lifetime: (!self.lifetime.is_zero()).then(|| self.lifetime.mul_f64(j())),
            rss: (self.max_rss > 0).then(|| (self.max_rss as f64 * j()) as u64),
        }
    }
}

/// A random number in [0, 1).
pub(super) fn unit_random() -> f64 {
    fastrand::f64()
}

/// A process's resident set size, from /proc.
pub(super) fn rss_bytes(pid: u32) -> Option<u64> {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * crate::sys::page_size())
}

#[cfg(test)]
mod rss_tests {
    /// statm counts pages of the kernel's size (4 KiB on x86-64, 16/64 KiB on some arm64
    /// and ppc64 kernels): the figure must match VmRSS, which the kernel gives in kB.
    #[test]
    fn rss_matches_vm_rss() {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap();
        let rss = super::rss_bytes(std::process::id()).unwrap();
        let vm = kb * 1024;
        // Both read the same (approximate, per-CPU batched) counters, and pages are touched
        // in between: allow a factor of 2. A wrong page size is off by 4 or more.
        assert!(
            rss <= vm * 2 && vm <= rss * 2,
            "statm {rss} B, VmRSS {vm} B"
        );
    }
}
