//! Worker CPU per request, without sockets.
//!
//! This process plays the front end of one channel. It creates a memfd segment and the
//! eventfd doorbells, starts `python -m uringapi.worker` from `.venv` the way the
//! supervisor's `spawn()` does (the same `URINGAPI_*` variables, the same inherited
//! descriptors), and keeps a window of requests in flight through the shared-memory channel:
//! `FrontChannel` for records and slots, ring.rs rule 4 for doorbells and sleep flags.
//! Around each measured stretch it reads the worker's utime+stime from `/proc/<pid>/stat`;
//! CPU-µs per request is their difference over the requests completed in between. Nothing
//! but the request path runs in the worker, so that is what one request costs on the Python
//! side: draining the record, building the scope, running the app, writing the response, and
//! the event loop's polling around them.
//!
//! Cases (apps in `benches/e2e/apps/`), each answer checked byte for byte:
//! - `noop`: `worker_cpu_apps:noop`, plain ASGI, `http.response.start` then `ok`.
//! - `scope`: `worker_cpu_apps:scope`, the same after reading the whole scope; its
//!   difference to `noop` is what using the scope costs.
//! - `fastapi`: `fastapi_app:app`, `GET /json`.
//!
//! ```text
//! cargo bench -p uringapi-benches --bench worker_cpu [-- CASE... --seconds S --rounds N --window W]
//! ```
//!
//! `--json PATH` also writes every round's raw figures there (`benches/e2e/tables.py
//! worker-cpu` runs the bench so and regenerates the README's worker CPU table from them).
//!
//! `--python target/conformance/venv312/bin/python` with `PYTHONPATH=$PWD/worker/python`
//! measures the working tree on another Python (the built `_native` is abi3); a relative
//! `--python` is taken from the workspace root.
//!
//! Needs the package built into `.venv` (`make setup`); without it the bench says so and
//! exits with status 2. Under `cargo test` (no `--bench` argument) it runs a short smoke
//! pass of `noop` instead, and skips with a note when `.venv` is missing.
//!
//! This process and the worker are pinned to the first two allowed CPUs, as `--pin-cpus`
//! pins the server's threads and workers (`--no-pin` leaves both to the scheduler).
//!
//! Columns: `CPU-µs/req` is the median over rounds (min..max after it) from utime+stime,
//! which count in clock ticks (10 ms), so a round lasts long enough for the ticks to be a
//! small error; `on-CPU` is the same from the scheduler's nanosecond counters
//! (`/proc/<pid>/task/*/schedstat`); `sleeps/kreq` counts the worker's voluntary context
//! switches (it blocked on its doorbell), `bells/kreq` the doorbells it rang to wake this
//! process. The worker's CPU does not depend on how fast this process is, except that a
//! worker waiting for requests spins (`SPIN_ROUNDS` in worker.py) before it sleeps; the
//! front end here busy-polls like the real one under load, so that spin stays rare.

use std::collections::HashMap;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use uringapi_protocol::doorbell::{rings_total, EventFd};
use uringapi_protocol::head::{RequestHead, ResponseView};
use uringapi_protocol::{FrontChannel, Geometry, Incoming, Kind, Record, Segment};

/// The server's channel shape before `--channel-slots` went to 128 (`--slot-size 65536
/// --channel-slots 64 --ring-capacity 256`) with one front-end thread; kept, so that the
/// figures in the README stay comparable.
const GEOMETRY: Geometry = Geometry {
    threads: 1,
    ring_capacity: 256,
    slots: 64,
    slot_size: 64 * 1024,
};
/// The supervisor's heartbeat period with the default `--stall-timeout 0.1`.
const HEARTBEAT: &str = "0.025";
/// How long a worker may take to import its app and report ready.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// A worker that completes no request for this long is reported as hung (a liveness
/// watchdog, not a speed limit: a healthy request takes microseconds).
const HANG_AFTER: Duration = Duration::from_secs(10);
/// Empty polls before this process sleeps on its doorbell.
const SPINS: u32 = 20_000;

struct Case {
    name: &'static str,
    app: &'static str,
    path: &'static [u8],
    body: &'static [u8],
}

const CASES: &[Case] = &[
    Case {
        name: "noop",
        app: "worker_cpu_apps:noop",
        path: b"/",
        body: b"ok",
    },
    Case {
        name: "scope",
        app: "worker_cpu_apps:scope",
        path: b"/",
        body: b"ok",
    },
    Case {
        name: "fastapi",
        app: "fastapi_app:app",
        path: b"/json",
        body: br#"{"message":"Hello, world!"}"#,
    },
];

/// A failure with a hint for the reader, printed as `error:`/`hint:`.
struct Failure {
    error: String,
    hint: &'static str,
}

impl Failure {
    fn new(error: impl Into<String>, hint: &'static str) -> Self {
        Self {
            error: error.into(),
            hint,
        }
    }
}

fn channel(e: uringapi_protocol::ChannelError) -> Failure {
    Failure::new(
        format!("the worker broke the channel contract: {e}"),
        "run the e2e suite; the worker wrote a record the front end refuses",
    )
}

struct Options {
    cases: Vec<&'static Case>,
    seconds: f64,
    warmup: f64,
    rounds: usize,
    window: usize,
    /// `cargo test`: one short pass, nothing to measure.
    smoke: bool,
    /// Another interpreter than `.venv`'s (one that has uringapi, uvloop and FastAPI).
    python: Option<PathBuf>,
    /// Pin this process and the worker to two different CPUs (when two are allowed).
    pin: bool,
    /// Where to write every round's raw figures as JSON.
    json: Option<PathBuf>,
}

fn options() -> Result<Options, Failure> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let smoke = !args.iter().any(|a| a == "--bench");
    let mut o = Options {
        cases: Vec::new(),
        seconds: 2.0,
        warmup: 1.0,
        rounds: 5,
        window: 64,
        smoke,
        python: None,
        pin: true,
        json: None,
    };
    let usage = "usage: worker_cpu [noop|scope|fastapi]... [--seconds S] [--warmup S] [--rounds N] [--window W] [--python PATH] [--no-pin] [--json PATH]";
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |what: &str| {
            it.next()
                .and_then(|v| v.parse::<f64>().ok())
                .filter(|v| *v > 0.0)
                .ok_or_else(|| Failure::new(format!("{what} needs a positive number"), usage))
        };
        match a.as_str() {
            "--bench" => {}
            "--seconds" => o.seconds = value("--seconds")?,
            "--warmup" => o.warmup = value("--warmup")?,
            "--rounds" => o.rounds = value("--rounds")? as usize,
            "--window" => o.window = value("--window")? as usize,
            "--no-pin" => o.pin = false,
            "--python" | "--json" => {
                let path = it
                    .next()
                    .ok_or_else(|| Failure::new(format!("{a} needs a path"), usage))?;
                if a == "--json" {
                    o.json = Some(path.into());
                } else {
                    o.python = Some(path.into());
                }
            }
            name => match CASES.iter().find(|c| c.name == name) {
                Some(c) => o.cases.push(c),
                None if smoke => {} // a test-name filter from `cargo test`
                None => return Err(Failure::new(format!("unknown case {name:?}"), usage)),
            },
        }
    }
    if o.window == 0 || o.window > GEOMETRY.slots as usize || o.rounds == 0 {
        return Err(Failure::new(
            format!(
                "--window must be 1..={}, --rounds at least 1",
                GEOMETRY.slots
            ),
            usage,
        ));
    }
    if o.smoke {
        o.cases = vec![&CASES[0]];
        o.seconds = 0.2;
        o.warmup = 0.1;
        o.rounds = 1;
    } else if o.cases.is_empty() {
        o.cases = CASES.iter().collect();
    }
    Ok(o)
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("benches/ sits in the workspace")
        .to_path_buf()
}

/// The `.venv` interpreter, if the built package and uvloop import in it.
fn python(chosen: Option<&Path>) -> Result<PathBuf, Failure> {
    // `cargo bench` runs this in `benches/`: a relative path means the workspace root.
    let python = workspace().join(chosen.unwrap_or(Path::new(".venv/bin/python")));
    let hint = "run `make setup` in the repository root (it builds .venv with the package)";
    if !python.exists() {
        return Err(Failure::new(
            format!("{} is missing", python.display()),
            hint,
        ));
    }
    let ok = Command::new(&python)
        .args(["-c", "import uringapi._native, uvloop"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        return Err(Failure::new(
            format!(
                "the uringapi package is not importable with {}",
                python.display()
            ),
            hint,
        ));
    }
    Ok(python)
}

// ---- the worker process ----

/// A worker started as the supervisor starts one, and this process's end of its channel.
struct Worker {
    child: Child,
    pid: u32,
    chan: FrontChannel,
    /// The worker's doorbell: rung when it sleeps and requests arrive (rule 4).
    bell: EventFd,
    /// This thread's doorbell: the worker rings it when we sleep and responses arrive.
    my_bell: EventFd,
    status: Option<std::io::PipeReader>,
}

impl Worker {
    fn spawn(python: &Path, app: &str, cpu: Option<usize>) -> Result<Self, Failure> {
        let segment = Segment::create(GEOMETRY, 1)
            .map_err(|e| Failure::new(format!("cannot create the segment: {e}"), "check memfd"))?;
        let eventfd = || EventFd::new().map_err(|e| Failure::new(e.to_string(), "ulimit -n"));
        let (bell, my_bell) = (eventfd()?, eventfd()?);
        let (reader, writer) =
            std::io::pipe().map_err(|e| Failure::new(e.to_string(), "ulimit -n"))?;
        let fds = [
            segment.fd(),
            bell.as_raw_fd(),
            writer.as_raw_fd(),
            my_bell.as_raw_fd(),
        ];
        let mut cmd = Command::new(python);
        cmd.args(["-m", "uringapi.worker"])
            .env("URINGAPI_APP", app)
            .env("URINGAPI_APP_DIR", workspace().join("benches/e2e/apps"))
            .env("URINGAPI_WORKER_INDEX", "0")
            .env("URINGAPI_SEGMENT_FD", segment.fd().to_string())
            .env("URINGAPI_DOORBELL_FD", bell.as_raw_fd().to_string())
            .env("URINGAPI_THREAD_FDS", my_bell.as_raw_fd().to_string())
            .env("URINGAPI_STATUS_FD", writer.as_raw_fd().to_string())
            .env("URINGAPI_LOG_LEVEL", "WARNING")
            .env("URINGAPI_LIFESPAN", "auto")
            .env("URINGAPI_ROOT_PATH", "")
            .env("URINGAPI_HEARTBEAT", HEARTBEAT)
            .env("URINGAPI_GRACEFUL", "5")
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        let set = cpu.map(cpu_set);
        // SAFETY: the closure runs in the forked child before exec and only calls
        // sched_setaffinity, fcntl and prctl, which are async-signal-safe; it allocates
        // nothing (`fds` is a copied array, the CPU set was built before the fork). As the
        // supervisor's `prepare_child`, it pins the worker when asked and lets it inherit the
        // descriptors that are close-on-exec here; unlike it, it also ends the worker with
        // this process.
        unsafe {
            cmd.pre_exec(move || {
                if let Some(set) = &set {
                    libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), set);
                }
                for fd in fds {
                    if libc::fcntl(fd, libc::F_SETFD, 0) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(|e| {
            Failure::new(
                format!("cannot start {}: {e}", python.display()),
                "run `make setup`",
            )
        })?;
        drop(writer);
        let segment = Arc::new(segment);
        Ok(Self {
            pid: child.id(),
            child,
            chan: FrontChannel::new(segment, 0),
            bell,
            my_bell,
            status: Some(reader),
        })
    }

    /// The worker's own account of why it exited, or its exit status.
    fn exited(&mut self) -> Option<String> {
        let status = self.child.try_wait().ok()??;
        let mut msg = String::new();
        if let Some(mut r) = self.status.take() {
            let _ = r.read_to_string(&mut msg);
        }
        Some(if msg.trim().is_empty() {
            format!("the worker exited ({status})")
        } else {
            format!("the worker exited ({status}): {}", msg.trim())
        })
    }

    fn wait_ready(&mut self) -> Result<(), Failure> {
        let start = Instant::now();
        while !self.chan.segment().is_ready() {
            if let Some(why) = self.exited() {
                return Err(Failure::new(why, "see the worker's log above"));
            }
            if start.elapsed() > READY_TIMEOUT {
                return Err(Failure::new(
                    "the worker did not become ready within 60 s",
                    "see the worker's log above",
                ));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(())
    }

    /// SIGTERM, as the supervisor stops a worker, then SIGKILL if it lingers.
    fn stop(mut self) {
        // SAFETY: plain syscall on our own child's pid.
        unsafe { libc::kill(self.pid as libc::pid_t, libc::SIGTERM) };
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

// ---- the front end's loop ----

/// Keeps `window` requests in flight and checks every answer.
struct Front {
    w: Worker,
    /// The encoded request head, written into each request slot.
    head: Vec<u8>,
    expect: &'static [u8],
    window: usize,
    sending: bool,
    next: u64,
    /// Body bytes received so far, per stream in flight.
    pending: HashMap<u64, Vec<u8>>,
    idle: u32,
    last_progress: Instant,
    scratch: Vec<u8>,
}

impl Front {
    fn new(w: Worker, case: &Case, window: usize) -> Self {
        let head = RequestHead {
            http_minor: 1,
            https: false,
            method: b"GET",
            path: case.path,
            query: b"",
            client: Some("127.0.0.1:50312".parse().expect("address")),
            server: Some("127.0.0.1:8000".parse().expect("address")),
            // What wrk sends.
            headers: vec![(b"Host", b"127.0.0.1:8000")],
        };
        let mut buf = vec![0; head.encoded_len()];
        head.encode(&mut buf).expect("a small head fits");
        Self {
            w,
            head: buf,
            expect: case.body,
            window,
            sending: true,
            next: 0,
            pending: HashMap::new(),
            idle: 0,
            last_progress: Instant::now(),
            scratch: Vec::new(),
        }
    }

    /// Sends what the window allows, takes every response that is there, and sleeps on the
    /// doorbell after a long idle stretch. Returns the requests completed.
    fn pump(&mut self) -> Result<u64, Failure> {
        let mut sent = false;
        while self.sending && self.pending.len() < self.window {
            let Some(slot) = self.w.chan.take_slot().map_err(channel)? else {
                break;
            };
            self.w.chan.write_slot(slot, 0, &self.head);
            let len = self.head.len() as u32;
            let rec = Record::new(Kind::Request, self.next).with_slot(slot.get(), len, len);
            if !self.w.chan.send(rec).map_err(channel)? {
                self.w.chan.untake_slot(slot);
                break;
            }
            self.pending.insert(self.next, Vec::new());
            self.next += 1;
            sent = true;
        }
        if sent && self.w.chan.worker_asleep() {
            self.w.bell.ring();
        }
        let mut done = 0;
        let mut got = false;
        while let Some(inc) = self.w.chan.recv().map_err(channel)? {
            got = true;
            done += self.take(inc)?;
        }
        if got && self.w.chan.worker_wants_space() {
            self.w.bell.ring();
        }
        if done > 0 {
            self.last_progress = Instant::now();
        }
        if got || sent {
            self.idle = 0;
        } else {
            self.idle += 1;
            if self.idle >= SPINS {
                self.idle = 0;
                self.sleep()?;
            } else {
                std::hint::spin_loop();
            }
        }
        Ok(done)
    }

    /// Checks one response record; returns 1 when it completed its request.
    fn take(&mut self, inc: Incoming) -> Result<u64, Failure> {
        let bad =
            |what: String| Failure::new(what, "the worker's answer is wrong; run the e2e suite");
        let Some(body) = self.pending.get_mut(&inc.stream) else {
            return Err(bad(format!("a record for unknown stream {}", inc.stream)));
        };
        if let Some((slot, len)) = inc.slot {
            self.scratch.clear();
            self.w.chan.copy_out(slot, 0..len, &mut self.scratch);
            self.w.chan.release(slot);
            let (head, rest) = self.scratch.split_at(inc.head_len);
            if inc.kind == Kind::Response {
                let view = ResponseView::decode(head)
                    .map_err(|e| bad(format!("a malformed response head: {e}")))?;
                if view.status != 200 {
                    return Err(bad(format!("status {} instead of 200", view.status)));
                }
            }
            body.extend_from_slice(rest);
        }
        let complete = match inc.kind {
            Kind::Response | Kind::ResponseBody => !inc.more,
            Kind::Continue => false,
            other => return Err(bad(format!("a {other:?} record"))),
        };
        if !complete {
            return Ok(0);
        }
        let body = self.pending.remove(&inc.stream).unwrap_or_default();
        if body != self.expect {
            return Err(bad(format!(
                "body {:?} instead of {:?}",
                String::from_utf8_lossy(&body),
                String::from_utf8_lossy(self.expect)
            )));
        }
        Ok(1)
    }

    /// Blocks on this thread's doorbell under rule 4, checking that the worker lives.
    fn sleep(&mut self) -> Result<(), Failure> {
        if let Some(why) = self.w.exited() {
            return Err(Failure::new(why, "see the worker's log above"));
        }
        if !self.pending.is_empty() && self.last_progress.elapsed() > HANG_AFTER {
            let seg = self.w.chan.segment();
            return Err(Failure::new(
                format!(
                    "the worker answered nothing for {} s with {} requests in flight \
                     (worker sleeping flag {}, wants-space flag {}, request ring {:.0}% full, \
                     last heartbeat {:?} ago)",
                    HANG_AFTER.as_secs(),
                    self.pending.len(),
                    seg.worker_sleeping().is_set(),
                    seg.worker_wants_space().is_set(),
                    seg.request_ring_occupancy() * 100.0,
                    seg.heartbeat_age().unwrap_or_default(),
                ),
                "see the worker's log above",
            ));
        }
        let flag = self.w.chan.my_sleep_flag();
        flag.prepare_sleep();
        if !self.w.chan.has_responses().map_err(channel)? {
            let mut pfd = libc::pollfd {
                fd: self.w.my_bell.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd, its count, a timeout; the result is not needed (a
            // timeout leads to the liveness checks above on the next idle stretch).
            unsafe { libc::poll(&mut pfd, 1, 200) };
            self.w.my_bell.drain();
        }
        self.w.chan.my_sleep_flag().awake();
        Ok(())
    }

    /// Runs for `seconds`; returns the requests completed.
    fn run_for(&mut self, seconds: f64) -> Result<u64, Failure> {
        let end = Instant::now() + Duration::from_secs_f64(seconds);
        let mut done = 0;
        while Instant::now() < end {
            done += self.pump()?;
        }
        Ok(done)
    }

    /// Stops sending and collects every answer still in flight.
    fn finish(&mut self) -> Result<(), Failure> {
        self.sending = false;
        while !self.pending.is_empty() {
            self.pump()?;
        }
        Ok(())
    }
}

// ---- CPU pinning ----

fn cpu_set(cpu: usize) -> libc::cpu_set_t {
    // SAFETY: an all-zero cpu_set_t is a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `cpu` comes from the allowed set, so it is below CPU_SETSIZE.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    set
}

fn allowed_cpus() -> Vec<usize> {
    // SAFETY: an all-zero cpu_set_t is a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid out-parameter of the size passed.
    let rc =
        unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if rc != 0 {
        return Vec::new();
    }
    // SAFETY: reads bits of a valid set; the index is below CPU_SETSIZE.
    (0..libc::CPU_SETSIZE as usize)
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .collect()
}

/// Pins the calling thread; a failure only leaves it unpinned.
fn pin_current_thread(cpu: usize) {
    let set = cpu_set(cpu);
    // SAFETY: a valid set of the size passed; affects only the calling thread.
    unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
}

// ---- what the kernel says about the worker ----

#[derive(Clone, Copy)]
struct Usage {
    /// utime + stime in clock ticks.
    ticks: u64,
    /// Nanoseconds on a CPU, over all threads (schedstat); 0 when the kernel lacks it.
    on_cpu_ns: u64,
    voluntary_switches: u64,
    worker_bells: u64,
}

fn usage(w: &Worker) -> Result<Usage, Failure> {
    let read = |p: String| {
        std::fs::read_to_string(&p)
            .map_err(|e| Failure::new(format!("cannot read {p}: {e}"), "the worker died?"))
    };
    let stat = read(format!("/proc/{}/stat", w.pid))?;
    // Fields after the command name (which may hold spaces), from field 3 (state) on:
    // utime and stime are fields 14 and 15.
    let after = stat.rsplit_once(')').map(|(_, s)| s).unwrap_or("");
    let fields: Vec<u64> = after
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    let ticks = fields.get(11).copied().unwrap_or(0) + fields.get(12).copied().unwrap_or(0);
    let mut on_cpu_ns = 0;
    let mut voluntary_switches = 0;
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{}/task", w.pid)) {
        for t in tasks.flatten() {
            let path = t.path();
            if let Ok(s) = std::fs::read_to_string(path.join("schedstat")) {
                on_cpu_ns += s
                    .split_whitespace()
                    .next()
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0);
            }
            if let Ok(s) = std::fs::read_to_string(path.join("status")) {
                voluntary_switches += s
                    .lines()
                    .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .unwrap_or(0);
            }
        }
    }
    Ok(Usage {
        ticks,
        on_cpu_ns,
        voluntary_switches,
        worker_bells: w.chan.segment().worker_doorbells(),
    })
}

fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf has no memory arguments.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 {
        hz as f64
    } else {
        100.0
    }
}

// ---- the measurement ----

struct Round {
    requests: u64,
    seconds: f64,
    cpu_us: f64,
    on_cpu_us: f64,
    sleeps: u64,
    bells: u64,
}

fn measure(python: &Path, case: &Case, o: &Options) -> Result<Vec<Round>, Failure> {
    // As `--pin-cpus` does for the server: the front end on one CPU, the worker on another,
    // so that neither is stacked on the other's CPU or migrated mid-round.
    let cpus = allowed_cpus();
    let pinned = o.pin && cpus.len() >= 2;
    if pinned {
        pin_current_thread(cpus[0]);
    }
    let mut w = Worker::spawn(python, case.app, pinned.then(|| cpus[1]))?;
    w.wait_ready()?;
    let mut front = Front::new(w, case, o.window);
    front.run_for(o.warmup)?;
    let hz = clock_ticks_per_second();
    let mut rounds = Vec::new();
    for _ in 0..o.rounds {
        let before = usage(&front.w)?;
        let start = Instant::now();
        let requests = front.run_for(o.seconds)?;
        let seconds = start.elapsed().as_secs_f64();
        let after = usage(&front.w)?;
        rounds.push(Round {
            requests,
            seconds,
            cpu_us: (after.ticks - before.ticks) as f64 / hz * 1e6,
            on_cpu_us: (after.on_cpu_ns - before.on_cpu_ns) as f64 / 1e3,
            sleeps: after.voluntary_switches - before.voluntary_switches,
            // The worker publishes its count with each heartbeat (every 25 ms).
            bells: after.worker_bells.saturating_sub(before.worker_bells),
        });
    }
    front.finish()?;
    front.w.stop();
    Ok(rounds)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn report(case: &Case, rounds: &[Round]) {
    let per = |f: fn(&Round) -> f64| -> Vec<f64> {
        rounds
            .iter()
            .map(|r| f(r) / r.requests.max(1) as f64)
            .collect()
    };
    let cpu = per(|r| r.cpu_us);
    let (lo, hi) = cpu
        .iter()
        .fold((f64::MAX, 0.0f64), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    let rate = median(
        rounds
            .iter()
            .map(|r| r.requests as f64 / r.seconds)
            .collect(),
    );
    println!(
        "{:<8} {:>24} {:>8.2} {:>8.0} {:>12.1} {:>11.1}",
        case.name,
        format!("{:.2} ({:.2}..{:.2})", median(cpu), lo, hi),
        median(per(|r| r.on_cpu_us)),
        rate,
        median(per(|r| r.sleeps as f64 * 1000.0)),
        median(per(|r| r.bells as f64 * 1000.0)),
    );
}

fn main() -> ExitCode {
    let o = match options() {
        Ok(o) => o,
        Err(f) => return fail(f),
    };
    let python = match python(o.python.as_deref()) {
        Ok(p) => p,
        Err(f) if o.smoke => {
            eprintln!("worker_cpu: skipped ({}; {})", f.error, f.hint);
            return ExitCode::SUCCESS;
        }
        Err(f) => return fail(f),
    };
    if !o.smoke {
        println!(
            "worker CPU per request: window {}, {} rounds of {} s after {} s warm-up, medians",
            o.window, o.rounds, o.seconds, o.warmup
        );
        println!(
            "{:<8} {:>24} {:>8} {:>8} {:>12} {:>11}",
            "case", "CPU-µs/req (min..max)", "on-CPU", "req/s", "sleeps/kreq", "bells/kreq"
        );
    }
    // Before `measure` pins this thread (after which one CPU is allowed here).
    let pinned = o.pin && allowed_cpus().len() >= 2;
    let bells_before = rings_total();
    let mut measured = Vec::new();
    for case in &o.cases {
        match measure(&python, case, &o) {
            Ok(rounds) if o.smoke => {
                let n: u64 = rounds.iter().map(|r| r.requests).sum();
                if n == 0 {
                    return fail(Failure::new("no request completed", "see the log above"));
                }
                println!(
                    "worker_cpu: smoke pass of {}: {n} requests answered",
                    case.name
                );
            }
            Ok(rounds) => {
                report(case, &rounds);
                measured.push((case, rounds));
            }
            Err(f) => return fail(f),
        }
    }
    if let (Some(path), false) = (&o.json, o.smoke) {
        if let Err(e) = std::fs::write(path, raw_json(&o, &python, pinned, &measured)) {
            return fail(Failure::new(
                format!("cannot write {}: {e}", path.display()),
                "pass a writable --json path",
            ));
        }
    }
    if !o.smoke {
        println!(
            "(this process rang the workers' doorbells {} times)",
            rings_total() - bells_before
        );
    }
    ExitCode::SUCCESS
}

/// Every round of every case, unrounded, for `benches/e2e/tables.py` (no serde here: the
/// values are numbers and names without quotes or backslashes).
fn raw_json(o: &Options, python: &Path, pinned: bool, measured: &[(&&Case, Vec<Round>)]) -> String {
    let cases: Vec<String> = measured
        .iter()
        .map(|(case, rounds)| {
            let rounds: Vec<String> = rounds
                .iter()
                .map(|r| {
                    format!(
                        "{{\"requests\": {}, \"seconds\": {}, \"cpu_us\": {}, \"on_cpu_us\": {}, \
                         \"sleeps\": {}, \"bells\": {}}}",
                        r.requests, r.seconds, r.cpu_us, r.on_cpu_us, r.sleeps, r.bells
                    )
                })
                .collect();
            format!(
                "{{\"name\": \"{}\", \"app\": \"{}\", \"rounds\": [{}]}}",
                case.name,
                case.app,
                rounds.join(", ")
            )
        })
        .collect();
    format!(
        "{{\"python\": {:?}, \"window\": {}, \"rounds\": {}, \"seconds\": {}, \"warmup_s\": {}, \
         \"pinned\": {pinned}, \"clock_ticks_per_second\": {}, \"cases\": [{}]}}\n",
        python.display().to_string(),
        o.window,
        o.rounds,
        o.seconds,
        o.warmup,
        clock_ticks_per_second(),
        cases.join(", ")
    )
}

fn fail(f: Failure) -> ExitCode {
    eprintln!("error: {}\nhint: {}", f.error, f.hint);
    ExitCode::from(2)
}
