//! The supervisor's loop after start-up: respawning, stall verdicts and the --timeout
//! kill, rolling restarts and recycling, SIGTTIN/SIGTTOU, readiness and metrics.

use super::*;
use std::sync::atomic::Ordering;

/// How long a worker sent SIGABRT (or told to stop past the graceful timeout) has before SIGKILL.
pub(super) const KILL_GRACE: Duration = Duration::from_secs(5);

/// What a stopped worker's requests get of the graceful timeout once `spent` of it has
/// passed: the rest, but at least a second (never more than the timeout), so that an app
/// whose WebSocket was just closed with 1001, or whose client just went, sees that and can
/// clean up before its task is cancelled.
pub(super) fn grace_left(graceful: Duration, spent: Duration) -> Duration {
    let last_words = Duration::from_secs(1).min(graceful);
    graceful.saturating_sub(spent).max(last_words)
}
/// How long a retiring worker is left before it can count as idle (see `retire_idle`).
pub(super) const RETIRE_SETTLE: Duration = Duration::from_millis(50);
/// How often workers' RSS is read for --workers-max-rss.
pub(super) const RSS_EVERY: Duration = Duration::from_secs(1);
/// After a replacement failed to start, recycling waits this long before trying again.
pub(super) const RECYCLE_PAUSE: Duration = Duration::from_secs(30);

/// The supervisor's state after start-up.
pub(super) struct Supervisor {
    pub(super) workers: Workers,
    pub(super) ctx: SpawnContext,
    pub(super) mailboxes: Vec<Arc<Mailbox>>,
    pub(super) load: Arc<LoadTable>,
    pub(super) stall: Duration,
    pub(super) kill_after: Option<Duration>,
    pub(super) recycling: Recycling,
    /// Workers waiting to be replaced, one at a time (SIGHUP, recycling).
    pub(super) rolling: VecDeque<usize>,
    pub(super) recycle_pause_until: Option<Instant>,
    pub(super) restarts: u64,
    pub(super) stalls: u64,
    pub(super) last_rss_check: Instant,
    pub(super) board: Arc<Board>,
    pub(super) access_log: Option<Arc<Sink>>,
    pub(super) last_publish: Instant,
    pub(super) notify: super::notify::Notifier,
    /// Front-end threads that died after start-up: the process stops (exit non-zero).
    pub(super) deaths: super::threadwatch::Deaths,
    /// Whether this process is PID 1 (a container's entrypoint): then it reaps orphans.
    pub(super) pid1: bool,
    /// TLS config, reloaded from its files on SIGHUP.
    pub(super) tls: Option<crate::tls::Acceptor>,
}

impl Supervisor {
    /// Watches workers until a stop signal.
    pub(super) fn run(&mut self, reports: &mpsc::Receiver<Report>, signals: &Signals) {
        while !signals.term.load(Ordering::Relaxed) {
            self.notify.tick();
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
            // A group signal (Ctrl-C, `kill -TERM -PGID`) reaches the workers as well: they
            // may already have exited for it while we waited above. Those exits are the
            // shutdown, not crashes; leave before reaping them as such (no respawn).
            if signals.term.load(Ordering::Relaxed) {
                return;
            }
            if self.deaths.any() {
                // Not ready from now on (the caller drains and exits non-zero).
                self.board.ready.store(false, Ordering::Relaxed);
                return;
            }
            if signals.hup.swap(false, Ordering::Relaxed) {
                if let Some(tls) = &self.tls {
                    tls.reload();
                }
                let active: Vec<usize> = self
                    .workers
                    .0
                    .iter()
                    .filter(|w| w.is_active() && w.replaces.is_none())
                    .map(|w| w.index)
                    .collect();
                tracing::info!(
                    "rolling restart (SIGHUP or --reload): replacing {} workers one at a time",
                    active.len()
                );
                for i in active {
                    if !self.rolling.contains(&i) {
                        self.rolling.push_back(i);
                    }
                }
                self.recycle_pause_until = None;
            }
            for _ in 0..signals.ttin.swap(0, Ordering::Relaxed) {
                self.add_worker(None, "SIGTTIN");
            }
            for _ in 0..signals.ttou.swap(0, Ordering::Relaxed) {
                self.remove_worker();
            }
            self.reap();
            self.respawn_due();
            self.watch_ready();
            self.watch_outside_sigterms();
            self.watch_heartbeats();
            self.watch_slow_starts();
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
            if signals.usr2.swap(false, Ordering::Relaxed) {
                tracing::warn!("SIGUSR2 ignored: uringapi has no binary upgrade (gunicorn's SIGUSR2); SIGHUP replaces the workers one at a time, with the app imported afresh");
            }
            if self.last_publish.elapsed() >= PUBLISH_EVERY {
                self.last_publish = Instant::now();
                self.publish();
            }
        }
    }

    /// Refreshes the metrics board and the readiness verdict.
    pub(super) fn publish(&mut self) {
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
            access_log_dropped_lines: self.access_log.as_ref().map_or(0, |s| s.dropped_lines()),
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
    pub(super) fn add_worker(&mut self, replaces: Option<usize>, why: &str) -> bool {
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
    pub(super) fn remove_worker(&mut self) {
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
    pub(super) fn reap(&mut self) {
        let mut gone = Vec::new();
        for w in &mut self.workers.0 {
            let Some(status) = w.exited() else { continue };
            let (index, generation) = (w.index, w.generation);
            // Read before the threads hear of it: each closes its share with 1011.
            let websockets = self.load.get(index).ws.open.load(Ordering::Relaxed);
            for m in &self.mailboxes {
                m.post(ThreadCmd::Detach {
                    worker: index,
                    generation,
                });
            }
            // The worker's `error:`/`hint:` lines, kept on the log line's one line.
            let msg = w.status_message();
            let msg = match msg.trim() {
                "" => String::new(),
                m => format!(
                    ": {}",
                    m.lines().map(str::trim).collect::<Vec<_>>().join("; ")
                ),
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
            // One line for all its WebSockets (a line each would be 10,000 for 10,000).
            let ws = match websockets {
                0 => String::new(),
                n => format!("; its {n} open WebSocket(s) close with 1011"),
            };
            tracing::warn!(worker = index, pid = w.pid, %status, "worker exited{before}; respawning in {} ms{ws}{msg}", backoff.as_millis());
            w.ready = false;
            w.respawn_at = Some(Instant::now() + backoff);
        }
        self.workers.0.retain(|w| !gone.contains(&w.index));
        self.rolling.retain(|i| !gone.contains(i));
        // As a container's entrypoint we are PID 1: every orphan in the container becomes
        // our child (a process the app started in the background, whose parent is gone),
        // and would stay a zombie for as long as we ran, as under any PID 1 that does not
        // reap (the reason for `tini`).
        if self.pid1 {
            let ours = |pid: u32| {
                self.workers
                    .0
                    .iter()
                    .any(|w| w.child.is_some() && w.pid == pid)
            };
            let n = crate::sys::reap_adopted(ours);
            if n > 0 {
                tracing::debug!(n, "reaped processes re-parented to us (PID 1)");
            }
        }
    }

    pub(super) fn respawn_due(&mut self) {
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
    pub(super) fn watch_ready(&mut self) {
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
                    let open = self.load.get(old).ws.open.load(Ordering::Relaxed);
                    if open > 0 {
                        // WebSockets are pinned to their worker: they stay on the old one
                        // until they end, or until the graceful timeout stops it (its
                        // WebSockets then get close 1001 from the worker).
                        tracing::info!(
                            worker = old,
                            pid = w.pid,
                            websockets = open,
                            "open WebSockets stay on the retiring worker for up to --timeout-graceful-shutdown ({} s), then close 1001",
                            self.ctx.graceful.as_secs_f64()
                        );
                    }
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

    /// A worker that got a SIGTERM the front end did not send (an operator's `kill`, a
    /// whole-group signal) asks to be replaced and serves on (protocol segment rule 4): a
    /// replacement starts, and once it is ready the old one retires as in a rolling restart,
    /// finishing its requests. Not a crash: no failure count, no backoff, no request lost.
    pub(super) fn watch_outside_sigterms(&mut self) {
        let mut asking = Vec::new();
        for w in &mut self.workers.0 {
            if w.is_active()
                && w.ready
                && !w.asked_replacement
                && w.child.is_some()
                && w.segment.wants_replacement()
            {
                w.asked_replacement = true;
                asking.push((w.index, w.pid));
            }
        }
        for (index, pid) in asking {
            tracing::info!(
                worker = index,
                pid,
                "worker got a SIGTERM the front end did not send; replacing it (it serves until its replacement is ready, then finishes its requests)"
            );
            self.rolling.retain(|&i| i != index);
            if !self.workers.0.iter().any(|w| w.replaces == Some(index)) {
                self.add_worker(
                    Some(index),
                    &format!("replacing worker {index}, which got SIGTERM"),
                );
            }
        }
    }

    /// Stall verdicts (no new requests for a silent loop) and the --timeout kill.
    pub(super) fn watch_heartbeats(&mut self) {
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
                let past = self.kill_after.is_some_and(|limit| age > limit);
                if past || w.aborted_at.is_some() {
                    w.abort(now, |w| {
                        tracing::error!(worker = w.index, pid = w.pid, "worker silent for {:.1} s (--timeout); killing it (SIGABRT prints its Python stack)", age.as_secs_f64());
                    });
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

    /// A worker (a replacement, a respawn, one added) still not ready well past
    /// --timeout-worker-startup is stuck where it cannot keep the limit itself: in C code
    /// that holds the GIL, or before Python runs. It is killed as a silent one is (SIGABRT
    /// prints its Python stack, SIGKILL follows); its exit is then handled as any other
    /// before ready (a replacement's old worker serves on; others are respawned).
    pub(super) fn watch_slow_starts(&mut self) {
        let limit = self.ctx.startup.saturating_add(super::start::STARTUP_SLACK);
        let now = Instant::now();
        for w in &mut self.workers.0 {
            if w.ready || w.child.is_none() || !w.is_active() || now - w.spawned_at <= limit {
                continue;
            }
            w.abort(now, |w| {
                tracing::error!(worker = w.index, pid = w.pid, "worker not ready {:.0} s after it started (--timeout-worker-startup); killing it (SIGABRT prints its Python stack)", (now - w.spawned_at).as_secs_f64());
            });
        }
    }

    /// Queues workers past their recycling thresholds for replacement.
    pub(super) fn watch_recycling(&mut self) {
        if self.recycle_pause_until.is_some_and(|t| Instant::now() < t) {
            return;
        }
        let read_rss = self.last_rss_check.elapsed() >= RSS_EVERY;
        if read_rss {
            self.last_rss_check = Instant::now();
        }
        // A worker whose replacement is starting has left `rolling` but is still over its
        // threshold: it is not queued (nor logged) again.
        let replaced: Vec<usize> = self.workers.0.iter().filter_map(|w| w.replaces).collect();
        for w in &mut self.workers.0 {
            if !w.ready || !w.is_active() || w.child.is_none() || replaced.contains(&w.index) {
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
    pub(super) fn advance_rolling(&mut self) {
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

    /// Retiring workers with nothing in flight (or past the graceful timeout) are stopped;
    /// stopping ones past it get SIGKILL.
    pub(super) fn retire_idle(&mut self) {
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
                        // The retiring worker's requests have had `since` of the grace.
                        w.stop(grace_left(graceful, since.elapsed()));
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
