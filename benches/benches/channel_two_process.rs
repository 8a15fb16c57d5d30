//! The channel between two real processes: the bench process creates a memfd segment and
//! plays the front end ([`FrontChannel`]); a forked child maps the segment through the
//! inherited descriptor and plays the worker ([`WorkerChannel`]). Three shapes:
//!
//! - `throughput_batched`: the front end pushes request records as fast as the ring takes
//!   them, the worker drains whole batches and checks each record's sequence number.
//!   Reported as messages per second.
//! - `round_trip_busy`: one request (64 payload bytes in a request slot) out, one response
//!   (8-byte head plus the payload in a response slot) back, slots returned, both sides
//!   busy-polling. Reported as time per round trip.
//! - `round_trip_worker_asleep`: the same exchange, but the worker is asleep on its eventfd
//!   doorbell under ring.rs rule 4 each time a request arrives (the front end waits until
//!   the worker's sleeping flag is up and then a little longer before it sends; only the
//!   time from send to validated response is counted).
//!
//! `cargo bench -p uringapi-benches --bench channel_two_process`
//!
//! PERF: on the 2-vCPU development VM with the other CPU work idle, medians of 40 M
//! messages/s (25 ns each), 265 ns per busy round trip and 6.4 µs per round trip that
//! wakes the worker. With other work on the machine each figure moves by 2-3x.
//!
//! With two or more CPUs allowed, the front end is pinned to the first and the worker to the
//! second, as `--pin-cpus` does for the server: two busy-pollers that the scheduler stacks on
//! one CPU measure time slices, not the channel. On a machine shared with other work the
//! busy figures still move with that work; note the load average next to them.
//!
//! The child never outlives the bench: it dies with its parent (`PR_SET_PDEATHSIG`), a
//! panicking bench kills it on unwind (`Child::drop`), and a normal end asks it to exit.

use std::hint::black_box;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use uringapi_protocol::arena::SlotIndex;
use uringapi_protocol::doorbell::EventFd;
use uringapi_protocol::record::NO_SLOT;
use uringapi_protocol::{ChannelError, FrontChannel, Geometry, Kind, Record, Segment};
use uringapi_protocol::{Incoming, WorkerChannel};

/// The server's shape before `--channel-slots` went to 128 (`--ring-capacity 256
/// --channel-slots 64`; kept so the README's figures stay comparable), with small slots:
/// the payloads here are tiny and the slot size changes nothing but the mapping's length.
const GEOMETRY: Geometry = Geometry {
    threads: 1,
    ring_capacity: 256,
    slots: 64,
    slot_size: 4096,
};

/// Request payload bytes per round trip.
const PAYLOAD: usize = 64;
/// Response head bytes (the stream id, little endian) in front of the echoed payload.
const HEAD_LEN: usize = 8;

/// Bench-only meanings of the record kinds the front end sends. `Request` carries data;
/// these two are control messages the bench worker understands.
/// "Tell me once you have consumed everything up to stream N": answered by a slotless
/// `ResponseBody` naming N.
const SYNC: Kind = Kind::Cancel;
/// "Report and exit."
const STOP: Kind = Kind::Disconnect;

/// Idle spins between checks that the peer is still alive. A power of two (masked).
const SPINS_PER_CHECK: u32 = 1 << 16;
/// A side that waits this long for one answer reports a hang (a liveness watchdog, not a
/// speed limit: a healthy exchange takes microseconds).
const HANG_AFTER: Duration = Duration::from_secs(10);
/// How long the front end lets the worker settle into `poll` after its sleeping flag went up,
/// before the next request of `round_trip_worker_asleep` (not counted).
const SETTLE: Duration = Duration::from_micros(20);

// ---- the three benches ----

fn throughput_batched(c: &mut Criterion) {
    let mut w = Worker::spawn(Mode::Sink);
    let mut next = 0u64;
    let mut g = c.benchmark_group("channel_two_process");
    g.throughput(Throughput::Elements(1));
    g.bench_function("throughput_batched", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            let end = next + iters;
            let mut wait = Wait::new("ring space");
            while next < end {
                if w.ch.send(Record::new(Kind::Request, next)).expect("send") {
                    next += 1;
                    wait.progress();
                } else {
                    // Full: the worker is behind by a whole ring.
                    wait.spin(&mut w.child);
                }
            }
            w.sync(next);
            start.elapsed()
        })
    });
    g.finish();
    w.stop();
}

fn round_trip_busy(c: &mut Criterion) {
    let mut w = Worker::spawn(Mode::Echo);
    let mut stream = 0u64;
    let mut g = c.benchmark_group("channel_two_process");
    g.bench_function("round_trip_busy", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                w.round_trip(stream);
                stream += 1;
            }
            start.elapsed()
        })
    });
    g.finish();
    w.stop();
}

fn round_trip_worker_asleep(c: &mut Criterion) {
    let mut w = Worker::spawn(Mode::EchoSleeping);
    let mut stream = 0u64;
    let mut rung = 0u64;
    let mut g = c.benchmark_group("channel_two_process");
    g.bench_function("round_trip_worker_asleep", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                w.wait_until_worker_sleeps();
                let start = Instant::now();
                if w.round_trip(stream) {
                    rung += 1;
                }
                total += start.elapsed();
                stream += 1;
            }
            total
        })
    });
    g.finish();
    let report = w.stop();
    // Proof that the bench measured wake-ups: every request found the flag up and rang, and
    // the worker blocked in `poll` before each of them (and once more before the stop).
    eprintln!(
        "round_trip_worker_asleep: {stream} requests, {rung} doorbell rings, \
         worker blocked {} times",
        report[0]
    );
}

// ---- the front end (this process) ----

/// The forked worker and the front end's channel to it.
struct Worker {
    ch: FrontChannel,
    /// This process's CPU mask before the pinning, restored by `stop`.
    unpinned: Option<libc::cpu_set_t>,
    /// The worker's doorbell, when it sleeps on one.
    bell: Option<EventFd>,
    child: Child,
    response: Vec<u8>,
}

/// What the forked worker does.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Consumes slotless request records, checks their order, answers `SYNC`.
    Sink,
    /// Answers each request with its payload, busy-polling when idle.
    Echo,
    /// As `Echo`, but sleeps on its eventfd doorbell when idle (ring.rs rule 4).
    EchoSleeping,
}

impl Worker {
    fn spawn(mode: Mode) -> Self {
        let seg = Arc::new(Segment::create(GEOMETRY, 1).expect("create segment"));
        let seg_fd = seg.fd();
        // Created before the fork, so that both processes share it.
        let bell = (mode == Mode::EchoSleeping).then(|| EventFd::new().expect("eventfd"));
        let cpus = allowed_cpus();
        let child = fork(|| {
            if let Some(&cpu) = cpus.get(1) {
                pin_to(cpu).map_err(|e| format!("pin worker to CPU {cpu}: {e}"))?;
            }
            let seg = Arc::new(open_inherited(seg_fd)?);
            run_worker(seg, mode, bell.as_ref())
        });
        let unpinned = (cpus.len() >= 2).then(|| {
            let before = cpu_mask();
            pin_to(cpus[0]).expect("pin the front end");
            before
        });
        Self {
            ch: FrontChannel::new(seg, 0),
            unpinned,
            bell,
            child,
            response: Vec::with_capacity(HEAD_LEN + PAYLOAD),
        }
    }

    /// After a send: the front end's half of rule 4. Returns whether it rang.
    fn ring_if_asleep(&self) -> bool {
        match &self.bell {
            Some(bell) if self.ch.worker_asleep() => {
                bell.ring();
                true
            }
            _ => false,
        }
    }

    /// Sends request `stream` with its payload in a slot and busy-polls for the response;
    /// checks every byte of it and hands the slot back. Returns whether it rang the worker.
    fn round_trip(&mut self, stream: u64) -> bool {
        let mut wait = Wait::new("a request slot");
        let slot = loop {
            match self.ch.take_slot().expect("take request slot") {
                Some(slot) => break slot,
                None => wait.spin(&mut self.child),
            }
        };
        self.ch.write_slot(slot, 0, &payload(stream));
        let rec = Record::new(Kind::Request, stream).with_slot(slot.get(), PAYLOAD as u32, 0);
        assert!(
            self.ch.send(rec).expect("send request"),
            "request ring full"
        );
        let rang = self.ring_if_asleep();
        let inc = self.wait_for_response();
        let (slot, len) = match inc {
            Incoming {
                kind: Kind::Response,
                stream: s,
                more: false,
                slot: Some(slot),
                head_len: HEAD_LEN,
                ..
            } if s == stream => slot,
            other => panic!("expected the response to {stream}, got {other:?}"),
        };
        self.response.clear();
        self.ch.copy_out(slot, 0..len, &mut self.response);
        assert_eq!(&self.response[..HEAD_LEN], stream.to_le_bytes());
        assert_eq!(&self.response[HEAD_LEN..], payload(stream));
        self.ch.release(slot);
        black_box(&self.response);
        rang
    }

    fn wait_for_response(&mut self) -> Incoming {
        let mut wait = Wait::new("a response");
        loop {
            if let Some(inc) = self.ch.recv().expect("worker broke the channel contract") {
                return inc;
            }
            wait.spin(&mut self.child);
        }
    }

    /// Sends a control record, waiting for ring space.
    fn send_control(&mut self, rec: Record) {
        let mut wait = Wait::new("ring space");
        while !self.ch.send(rec).expect("send") {
            wait.spin(&mut self.child);
        }
        self.ring_if_asleep();
    }

    /// Waits until the worker has consumed every record up to `stream`.
    fn sync(&mut self, stream: u64) {
        self.send_control(Record::new(SYNC, stream));
        match self.wait_for_response() {
            Incoming {
                kind: Kind::ResponseBody,
                stream: s,
                slot: None,
                ..
            } if s == stream => {}
            other => panic!("expected the sync answer for {stream}, got {other:?}"),
        }
    }

    fn wait_until_worker_sleeps(&mut self) {
        let mut wait = Wait::new("the worker to sleep");
        while !self.ch.segment().worker_sleeping().is_set() {
            wait.spin(&mut self.child);
        }
        let settled = Instant::now() + SETTLE;
        while Instant::now() < settled {
            std::hint::spin_loop();
        }
    }

    /// Asks the worker to exit and returns its report (three counters).
    fn stop(mut self) -> [u64; 3] {
        self.send_control(Record::new(STOP, 0));
        let report = self
            .child
            .wait()
            .unwrap_or_else(|e| panic!("worker failed: {e}"));
        if let Some(mask) = self.unpinned.take() {
            set_cpu_mask(&mask).expect("restore the CPU mask");
        }
        assert_eq!(report.len(), 24, "worker report has {} bytes", report.len());
        let v = |i: usize| u64::from_le_bytes(report[i * 8..i * 8 + 8].try_into().unwrap());
        [v(0), v(1), v(2)]
    }
}

/// The front end's busy wait for one thing, checking now and then that the worker lives.
struct Wait {
    what: &'static str,
    spins: u32,
    since: Option<Instant>,
}

impl Wait {
    fn new(what: &'static str) -> Self {
        Self {
            what,
            spins: 0,
            since: None,
        }
    }

    fn progress(&mut self) {
        self.spins = 0;
        self.since = None;
    }

    fn spin(&mut self, child: &mut Child) {
        self.spins = self.spins.wrapping_add(1);
        if self.spins & (SPINS_PER_CHECK - 1) == 0 {
            if let Some(r) = child.try_wait() {
                panic!(
                    "worker ended while the front end waited for {}: {r:?}",
                    self.what
                );
            }
            let since = *self.since.get_or_insert_with(Instant::now);
            assert!(
                since.elapsed() < HANG_AFTER,
                "no progress for {HANG_AFTER:?} waiting for {}",
                self.what
            );
        }
        std::hint::spin_loop();
    }
}

/// The request payload of `stream`: its id repeated, so that a stale slot shows.
fn payload(stream: u64) -> [u8; PAYLOAD] {
    let mut out = [0u8; PAYLOAD];
    for chunk in out.chunks_mut(8) {
        chunk.copy_from_slice(&stream.to_le_bytes());
    }
    out
}

// ---- the worker (forked child) ----
//
// Everything here returns errors instead of panicking; `fork` turns a stray panic into a
// failed exit all the same.

fn run_worker(seg: Arc<Segment>, mode: Mode, bell: Option<&EventFd>) -> Result<Vec<u8>, String> {
    let channel = |e: ChannelError| format!("channel: {e}");
    let mut ch = WorkerChannel::new(seg.clone(), 0);
    let (mut next, mut sleeps, mut idle) = (0u64, 0u64, 0u32);
    loop {
        let Some((rec, slot)) = ch.recv().map_err(channel)? else {
            match bell {
                Some(bell) => {
                    if sleep(&mut ch, &seg, bell)? {
                        sleeps += 1;
                    }
                }
                None => {
                    idle = idle.wrapping_add(1);
                    if idle & (SPINS_PER_CHECK - 1) == 0 {
                        // SAFETY: getppid cannot fail.
                        if unsafe { libc::getppid() } == 1 {
                            return Err("orphaned".into());
                        }
                    }
                    std::hint::spin_loop();
                }
            }
            continue;
        };
        let kind = Kind::from_u8(rec.kind);
        if kind == Some(STOP) {
            break;
        }
        if kind == Some(SYNC) {
            if rec.stream != next {
                return Err(format!("sync at {} but consumed {next}", rec.stream));
            }
            let answer = Record::new(Kind::ResponseBody, rec.stream);
            if !ch.send(answer).map_err(channel)? {
                return Err("response ring full at a sync".into());
            }
            continue;
        }
        if kind != Some(Kind::Request) || rec.stream != next {
            return Err(format!("expected request {next}, got {rec:?}"));
        }
        next += 1;
        if let (Mode::Echo | Mode::EchoSleeping, Some(slot)) = (mode, slot) {
            echo(&mut ch, &rec, slot)?;
            if mode == Mode::EchoSleeping {
                // The front end busy-polls, so its flag stays down; the check is part of
                // every real response all the same.
                black_box(ch.front_asleep());
            }
        } else if slot.is_some() || rec.slot != NO_SLOT {
            return Err(format!("unexpected slot in {rec:?}"));
        }
    }
    Ok([sleeps, next, 0]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect())
}

/// Answers one request: head (the stream id) then the payload, in a response slot.
fn echo(ch: &mut WorkerChannel, rec: &Record, slot: SlotIndex) -> Result<(), String> {
    let channel = |e: ChannelError| format!("channel: {e}");
    let expected = payload(rec.stream);
    if ch.request_bytes(slot, rec.len as usize) != expected {
        return Err(format!("request {}: payload differs", rec.stream));
    }
    ch.free_request_slot(slot);
    // The front end releases every response before its next request, so a slot is free.
    let out = ch
        .take_slot()
        .map_err(channel)?
        .ok_or("no response slot free")?;
    let buf = ch.slot_mut(out);
    buf[..HEAD_LEN].copy_from_slice(&rec.stream.to_le_bytes());
    buf[HEAD_LEN..HEAD_LEN + PAYLOAD].copy_from_slice(&expected);
    let len = (HEAD_LEN + PAYLOAD) as u32;
    let answer = Record::new(Kind::Response, rec.stream).with_slot(out.get(), len, HEAD_LEN as u32);
    if !ch.send(answer).map_err(channel)? {
        return Err("response ring full".into());
    }
    Ok(())
}

/// Rule 4, consumer's half: raise the flag, re-check, and block on the doorbell only if the
/// request ring is still empty. Returns whether it blocked.
fn sleep(ch: &mut WorkerChannel, seg: &Segment, bell: &EventFd) -> Result<bool, String> {
    let flag = seg.worker_sleeping();
    flag.prepare_sleep();
    let blocked = !ch.has_requests().map_err(|e| format!("channel: {e}"))?;
    if blocked {
        while !wait_readable(bell, 1_000).map_err(|e| format!("poll doorbell: {e}"))? {
            // SAFETY: getppid cannot fail.
            if unsafe { libc::getppid() } == 1 {
                return Err("orphaned".into());
            }
        }
        bell.drain();
    }
    flag.awake();
    Ok(blocked)
}

// ---- processes ----

/// A forked child. Dropping it unreaped kills it, so a panicking bench never leaves a worker
/// spinning behind it.
struct Child {
    pid: libc::pid_t,
    /// Read end of the child's report pipe (non-blocking).
    report: OwnedFd,
    reaped: bool,
}

const EXIT_OK: i32 = 0;
const EXIT_ERROR: i32 = 1;
const EXIT_PANIC: i32 = 2;
const EXIT_ORPHANED: i32 = 3;

/// Forks; the child runs `body` and `_exit`s, never returning into criterion's code.
/// `Ok(bytes)` (at most `PIPE_BUF`) comes back through [`Child::wait`].
fn fork(body: impl FnOnce() -> Result<Vec<u8>, String>) -> Child {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors; the result is checked.
    let r = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) };
    assert_eq!(r, 0, "pipe2: {}", io::Error::last_os_error());
    // SAFETY: both descriptors are fresh and ours.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: getpid cannot fail.
    let parent = unsafe { libc::getpid() };
    // SAFETY: fork has no preconditions; the child branch below never returns.
    match unsafe { libc::fork() } {
        -1 => panic!("fork: {}", io::Error::last_os_error()),
        0 => run_child(parent, write.as_raw_fd(), body),
        pid => Child {
            pid,
            report: read,
            reaped: false,
        },
    }
}

fn run_child(
    parent: libc::pid_t,
    report: RawFd,
    body: impl FnOnce() -> Result<Vec<u8>, String>,
) -> ! {
    // SAFETY: plain syscalls. PDEATHSIG ends the child with the bench process; the getppid
    // check closes the race with a parent that died before the prctl.
    let orphaned = unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0
            || libc::getppid() != parent
    };
    if orphaned {
        // SAFETY: ends this process without running the parent's destructors.
        unsafe { libc::_exit(EXIT_ORPHANED) }
    }
    let (code, bytes) = match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(bytes)) => (EXIT_OK, bytes),
        Ok(Err(message)) => (EXIT_ERROR, message.into_bytes()),
        Err(_) => (EXIT_PANIC, b"panicked".to_vec()),
    };
    let len = bytes.len().min(4000);
    // SAFETY: writes `len` initialised bytes to our pipe (atomic under PIPE_BUF); a failed
    // write only loses the report, which the parent notices. Then ends the process.
    unsafe {
        libc::write(report, bytes.as_ptr().cast(), len);
        libc::_exit(code)
    }
}

impl Child {
    /// `Some` once the child has exited: its report, or why it failed.
    fn try_wait(&mut self) -> Option<Result<Vec<u8>, String>> {
        self.wait_with(libc::WNOHANG)
    }

    /// Waits for the child's exit; one that does not exit within `HANG_AFTER` is killed.
    fn wait(mut self) -> Result<Vec<u8>, String> {
        let deadline = Instant::now() + HANG_AFTER;
        loop {
            if let Some(r) = self.try_wait() {
                return r;
            }
            if Instant::now() > deadline {
                return Err(format!("child {} did not exit; killed", self.pid));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn wait_with(&mut self, flags: libc::c_int) -> Option<Result<Vec<u8>, String>> {
        let mut status = 0;
        // SAFETY: waits for our own, not yet reaped child; `status` is a valid out-parameter.
        let r = unsafe { libc::waitpid(self.pid, &mut status, flags) };
        match r {
            0 => return None,
            -1 => panic!("waitpid({}): {}", self.pid, io::Error::last_os_error()),
            _ => self.reaped = true,
        }
        let mut report = vec![0u8; 4096];
        // SAFETY: reads into a valid buffer of `report.len()` bytes from our own fd.
        let n = unsafe {
            libc::read(
                self.report.as_raw_fd(),
                report.as_mut_ptr().cast(),
                report.len(),
            )
        };
        report.truncate(n.max(0) as usize);
        Some(
            if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == EXIT_OK {
                Ok(report)
            } else {
                Err(format!(
                    "child {} ended with status {status:#x}: {}",
                    self.pid,
                    String::from_utf8_lossy(&report)
                ))
            },
        )
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if !self.reaped {
            // SAFETY: signals and reaps our own child, which has not been reaped yet.
            unsafe {
                libc::kill(self.pid, libc::SIGKILL);
                libc::waitpid(self.pid, std::ptr::null_mut(), 0);
            }
        }
    }
}

/// This process's allowed CPUs.
fn cpu_mask() -> libc::cpu_set_t {
    // SAFETY: an all-zero cpu_set_t is a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid out-parameter of the size passed.
    let rc =
        unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    assert_eq!(rc, 0, "sched_getaffinity: {}", io::Error::last_os_error());
    set
}

fn allowed_cpus() -> Vec<usize> {
    let set = cpu_mask();
    // SAFETY: reads bits of a valid set; the index is below CPU_SETSIZE.
    (0..libc::CPU_SETSIZE as usize)
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .collect()
}

fn set_cpu_mask(set: &libc::cpu_set_t) -> io::Result<()> {
    // SAFETY: a valid set of the size passed; affects only the calling thread.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), set) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn pin_to(cpu: usize) -> io::Result<()> {
    // SAFETY: an all-zero cpu_set_t is a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `cpu` comes from the allowed set, so it is below CPU_SETSIZE.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    set_cpu_mask(&set)
}

/// Maps the segment behind an inherited descriptor the way a worker does: on a `dup` of its
/// own.
fn open_inherited(fd: RawFd) -> Result<Segment, String> {
    // SAFETY: plain syscall on a descriptor this process inherited; checked below.
    let dup = unsafe { libc::dup(fd) };
    if dup < 0 {
        return Err(format!("dup({fd}): {}", io::Error::last_os_error()));
    }
    // SAFETY: `dup` is a fresh descriptor that nothing else owns; `open` takes it over.
    unsafe { Segment::open(dup) }.map_err(|e| format!("Segment::open: {e}"))
}

/// Waits up to `timeout_ms` for `fd` to become readable. `Ok(false)` on timeout.
fn wait_readable(fd: &impl AsRawFd, timeout_ms: i32) -> io::Result<bool> {
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    loop {
        // SAFETY: one valid pollfd.
        match unsafe { libc::poll(&mut p, 1, timeout_ms) } {
            0 => return Ok(false),
            n if n > 0 => return Ok(true),
            _ => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    targets = throughput_batched, round_trip_busy, round_trip_worker_asleep
}
criterion_main!(benches);
