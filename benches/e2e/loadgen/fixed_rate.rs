//! Open-loop HTTP/1.1 load generator: a fixed request rate, latency measured
//! from the time each request *should* have been sent (wrk2's model).
//!
//! Debian ships no wrk2, so the e2e harness (`benches/e2e/run.py`) builds this
//! file with a plain `rustc -O` (std only, no Cargo) and uses it for the
//! "latency without saturation" figures.
//!
//! Model:
//! - `C` keep-alive connections. Connection `i` owns the send times
//!   `start + i/R + k*C/R` (k = 0, 1, ...), so the whole run sends evenly spaced
//!   requests at `R` per second, one at a time: each request goes out alone, at its
//!   own time, as independent clients would send them.
//! - A connection sends its next request at its next send time, reads the full
//!   response, and records `now - intended_send_time`. When the server is slow,
//!   later requests on that connection go out late and the wait is charged to
//!   them: no coordinated omission.
//! - The run stops scheduling at `start + duration`; requests in flight finish
//!   (bounded by the read timeout).
//! - With `--warmup W`, the schedule starts `W` seconds earlier: connections
//!   open and requests flow at the same rate, but nothing sent before the
//!   measured `duration` begins is counted. The harness uses this to have
//!   connections established and spread over a server's workers before a
//!   second load (the blocking-endpoint scenario) starts.
//!
//! Engine: `--threads T` event loops (default 1), connection `i` on loop `i % T`.
//! Each loop owns non-blocking sockets and one epoll instance, and sleeps in
//! `epoll_pwait2` with a nanosecond timeout until the next send time or the next
//! readable socket. An earlier version gave every connection its own OS thread with
//! blocking reads: at 46k req/s it spent about 22 CPU-us per request on thread
//! wake-ups, half of a 2-CPU machine, which left the servers at "half load" with no
//! idle CPU at all.
//!
//! Only loopback addresses are accepted: this tool exists to measure servers
//! on the same machine and refuses to send traffic anywhere else.
//!
//! Output: one JSON object on stdout. Exit code 2 on bad arguments.

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::process::ExitCode;
use std::thread;
use std::time::{Duration, Instant};

/// A send that leaves this long after its slot counts as "late" in the report.
const LATE_THRESHOLD: Duration = Duration::from_millis(1);
/// Largest response head we accept; a larger one is counted as an error.
const MAX_HEAD_BYTES: usize = 64 * 1024;

struct Config {
    addr: SocketAddr,
    path: String,
    rate: f64,
    connections: usize,
    threads: usize,
    duration: Duration,
    warmup: Duration,
    timeout: Duration,
}

#[derive(Default)]
struct ConnStats {
    latencies_us: Vec<u64>,
    sent: u64,
    completed: u64,
    non_2xx: u64,
    errors: u64,
    late_sends: u64,
}

impl ConnStats {
    fn merge(&mut self, other: ConnStats) {
        self.latencies_us.extend(other.latencies_us);
        self.sent += other.sent;
        self.completed += other.completed;
        self.non_2xx += other.non_2xx;
        self.errors += other.errors;
        self.late_sends += other.late_sends;
    }
}

fn usage() -> &'static str {
    "usage: fixed_rate --addr 127.0.0.1:PORT --rate REQ_PER_S [--path /] \
     [--connections 32] [--threads 1] [--duration SECONDS] [--warmup SECONDS] [--timeout SECONDS]"
}

fn parse_args(args: impl Iterator<Item = String>) -> Result<Config, String> {
    let mut addr = None;
    let mut path = String::from("/");
    let mut rate = None;
    let mut connections = 32usize;
    let mut threads = 1usize;
    let mut duration = 10.0f64;
    let mut warmup = 0.0f64;
    let mut timeout = 5.0f64;
    let mut args = args;
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let bad = |e: &dyn std::fmt::Display| format!("{flag} {value}: {e}");
        match flag.as_str() {
            "--addr" => addr = Some(value.parse::<SocketAddr>().map_err(|e| bad(&e))?),
            "--path" => path = value,
            "--rate" => rate = Some(value.parse::<f64>().map_err(|e| bad(&e))?),
            "--connections" => connections = value.parse().map_err(|e| bad(&e))?,
            "--threads" => threads = value.parse().map_err(|e| bad(&e))?,
            "--duration" => duration = value.parse().map_err(|e| bad(&e))?,
            "--warmup" => warmup = value.parse().map_err(|e| bad(&e))?,
            "--timeout" => timeout = value.parse().map_err(|e| bad(&e))?,
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    let addr = addr.ok_or("--addr is required")?;
    let rate = rate.ok_or("--rate is required")?;
    if !is_loopback(addr.ip()) {
        return Err(format!(
            "{addr} is not a loopback address; refusing to send traffic"
        ));
    }
    // Written so that NaN fails too.
    let positive = |x: f64| x > 0.0;
    if !positive(rate)
        || connections == 0
        || threads == 0
        || !positive(duration)
        || !positive(timeout)
    {
        return Err(
            "--rate, --connections, --threads, --duration and --timeout must be positive".into(),
        );
    }
    if warmup.is_nan() || warmup < 0.0 {
        return Err("--warmup must be zero or positive".into());
    }
    Ok(Config {
        addr,
        path,
        rate,
        connections,
        threads: threads.min(connections),
        duration: Duration::from_secs_f64(duration),
        warmup: Duration::from_secs_f64(warmup),
        timeout: Duration::from_secs_f64(timeout),
    })
}

fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

/// Ask the kernel for 1 µs timer slack on this thread (inherited by threads it
/// spawns). The default 50 µs slack would be charged to every request as latency.
fn tighten_timer_slack() {
    const PR_SET_TIMERSLACK: i32 = 29;
    extern "C" {
        fn prctl(option: i32, ...) -> i32;
    }
    // SAFETY: PR_SET_TIMERSLACK takes one unsigned long argument and touches no
    // memory of ours; a failure only leaves the default slack in place.
    unsafe {
        prctl(PR_SET_TIMERSLACK, 1000u64);
    }
}

mod epoll;

/// One keep-alive connection with a read buffer that survives between responses.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    /// Request bytes not yet written (a short write waits for EPOLLOUT).
    unsent: usize,
}

/// What a read found in the buffer.
enum Progress {
    /// The response is not complete yet.
    Partial,
    /// Status code and whether the connection can be reused.
    Done(u16, bool),
}

impl Conn {
    fn open(cfg: &Config) -> std::io::Result<Conn> {
        // Connecting blocks this loop briefly (loopback): it happens once per
        // connection at the start of the run, and again only after an error or a close.
        let stream = TcpStream::connect_timeout(&cfg.addr, cfg.timeout)?;
        stream.set_nodelay(true)?;
        stream.set_nonblocking(true)?;
        Ok(Conn {
            stream,
            buf: Vec::with_capacity(16 * 1024),
            unsent: 0,
        })
    }

    /// Writes what is left of `request`; true when all of it is out.
    fn flush(&mut self, request: &[u8]) -> std::io::Result<bool> {
        while self.unsent > 0 {
            let from = request.len() - self.unsent;
            match self.stream.write(&request[from..]) {
                Ok(0) => return Err(ErrorKind::WriteZero.into()),
                Ok(n) => self.unsent -= n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// Reads what the socket has and checks whether the response is complete.
    fn read_available(&mut self) -> std::io::Result<Progress> {
        let mut chunk = [0u8; 16 * 1024];
        let mut eof = false;
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        let progress = self.complete(eof)?;
        if eof && matches!(progress, Progress::Partial) {
            return Err(ErrorKind::UnexpectedEof.into());
        }
        Ok(progress)
    }

    /// Consumes one complete response from the buffer, if there is one.
    fn complete(&mut self, eof: bool) -> std::io::Result<Progress> {
        let Some(head_end) = find(&self.buf, b"\r\n\r\n").map(|i| i + 4) else {
            if self.buf.len() > MAX_HEAD_BYTES {
                return Err(invalid("response head too large"));
            }
            return Ok(Progress::Partial);
        };
        let head = Head::parse(&self.buf[..head_end])?;
        let body = &self.buf[head_end..];
        let (body_len, keep_alive) = match head.framing {
            Framing::Length(n) if body.len() >= n => (n, head.keep_alive),
            Framing::Chunked => match chunked_end(body) {
                Some(n) => (n, head.keep_alive),
                None => return Ok(Progress::Partial),
            },
            Framing::UntilClose if eof => (body.len(), false),
            Framing::Length(_) | Framing::UntilClose => return Ok(Progress::Partial),
        };
        self.buf.drain(..head_end + body_len);
        Ok(Progress::Done(head.status, keep_alive && !eof))
    }
}

enum Framing {
    Length(usize),
    Chunked,
    UntilClose,
}

struct Head {
    status: u16,
    framing: Framing,
    keep_alive: bool,
}

impl Head {
    fn parse(raw: &[u8]) -> std::io::Result<Head> {
        let text = std::str::from_utf8(raw).map_err(|_| invalid("non-UTF-8 response head"))?;
        let mut lines = text.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap_or_default();
        let status = parts
            .next()
            .and_then(|s| s.parse::<u16>().ok())
            .ok_or_else(|| invalid("bad status line"))?;
        let mut keep_alive = version == "HTTP/1.1";
        let mut framing = Framing::UntilClose;
        for line in lines.filter(|l| !l.is_empty()) {
            let (name, value) = line
                .split_once(':')
                .ok_or_else(|| invalid("bad header line"))?;
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                let n = value.parse().map_err(|_| invalid("bad content-length"))?;
                framing = Framing::Length(n);
            } else if name.eq_ignore_ascii_case("transfer-encoding")
                && value.to_ascii_lowercase().ends_with("chunked")
            {
                framing = Framing::Chunked;
            } else if name.eq_ignore_ascii_case("connection") {
                let value = value.to_ascii_lowercase();
                if value.contains("close") {
                    keep_alive = false;
                } else if value.contains("keep-alive") {
                    keep_alive = true;
                }
            }
        }
        Ok(Head {
            status,
            framing,
            keep_alive,
        })
    }
}

/// Length of a complete chunked body at the start of `buf`, trailers included.
fn chunked_end(buf: &[u8]) -> Option<usize> {
    let mut pos = 0;
    loop {
        let line_end = pos + find(&buf[pos..], b"\r\n")?;
        let size_text = std::str::from_utf8(&buf[pos..line_end]).ok()?;
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        // An unparsable size never completes; the read timeout ends the exchange.
        let size = usize::from_str_radix(size_text, 16).ok()?;
        pos = line_end + 2;
        if size == 0 {
            // Trailer section: header lines until an empty line.
            loop {
                let end = pos + find(&buf[pos..], b"\r\n")?;
                let empty = end == pos;
                pos = end + 2;
                if empty {
                    return Some(pos);
                }
            }
        }
        if buf.len() < pos + size + 2 {
            return None;
        }
        pos += size + 2;
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn invalid(msg: &str) -> std::io::Error {
    std::io::Error::new(ErrorKind::InvalidData, msg.to_owned())
}

/// One connection's place in its schedule.
struct Slot {
    index: usize,
    /// Schedule position of the next (or in-flight) request.
    k: u64,
    conn: Option<Conn>,
    /// Intended send time of the request in flight, if one is.
    in_flight: Option<Instant>,
    /// When the request in flight actually went out (its --timeout counts from here).
    sent_at: Instant,
    /// Past the end of the run.
    done: bool,
}

/// Where one event loop's connections fall in time.
struct Schedule<'a> {
    cfg: &'a Config,
    start: Instant,
    measured_from: Instant,
    end: Instant,
    period: f64,
}

impl Schedule<'_> {
    fn intended(&self, slot: &Slot) -> Instant {
        let offset = slot.index as f64 / self.cfg.rate;
        self.start + Duration::from_secs_f64(offset + slot.k as f64 * self.period)
    }
}

/// Counters for the measured window and, dropped at the end, for the warm-up.
struct Tallies {
    measured: ConnStats,
    warmup: ConnStats,
}

impl Tallies {
    fn for_send(&mut self, sched: &Schedule, intended: Instant) -> &mut ConnStats {
        if intended >= sched.measured_from {
            &mut self.measured
        } else {
            &mut self.warmup
        }
    }
}

/// Runs the schedules of `indices` on one thread; only sends scheduled at or after
/// `measured_from` are counted.
fn run_loop(
    cfg: &Config,
    indices: Vec<usize>,
    start: Instant,
    measured_from: Instant,
) -> ConnStats {
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: uringapi-fixed-rate\r\n\r\n",
        cfg.path, cfg.addr
    );
    let request = request.as_bytes();
    let sched = Schedule {
        cfg,
        start,
        measured_from,
        end: measured_from + cfg.duration,
        period: cfg.connections as f64 / cfg.rate,
    };
    let epoll = epoll::Epoll::new().expect("epoll_create1");
    let mut slots: Vec<Slot> = indices
        .into_iter()
        .map(|index| Slot {
            index,
            k: 0,
            conn: None,
            in_flight: None,
            sent_at: start,
            done: false,
        })
        .collect();
    let mut tallies = Tallies {
        measured: ConnStats::default(),
        warmup: ConnStats::default(),
    };
    let mut events = vec![epoll::Event { events: 0, data: 0 }; slots.len().max(1)];
    loop {
        let now = Instant::now();
        let mut next_wake: Option<Instant> = None;
        let mut live = false;
        for token in 0..slots.len() {
            let slot = &mut slots[token];
            if slot.done {
                continue;
            }
            if let Some(intended) = slot.in_flight {
                live = true;
                if now.saturating_duration_since(slot.sent_at) > cfg.timeout {
                    // No response within --timeout of the send: an error, and a
                    // fresh connection for the next request.
                    fail(&epoll, slot, &mut tallies, &sched, intended);
                }
                continue;
            }
            let intended = sched.intended(slot);
            if intended >= sched.end {
                slot.done = true;
                drop_conn(&epoll, slot);
                continue;
            }
            if now >= sched.end + cfg.timeout {
                // Still behind more than --timeout after the schedule's end (the server
                // is gone and every send is a refused connect, or this machine cannot
                // keep the rate): the rest of this connection's schedule is not sent, each
                // of those requests counts as an error of the measured window, and the run
                // ends on time instead of draining the schedule at whatever pace it can.
                let from = intended.max(sched.measured_from);
                let left = ((sched.end - from).as_secs_f64() / sched.period).ceil() as u64;
                tallies.measured.errors += left.max(1);
                slot.done = true;
                drop_conn(&epoll, slot);
                continue;
            }
            live = true;
            if intended > now {
                next_wake = Some(next_wake.map_or(intended, |w| w.min(intended)));
                continue;
            }
            let tally = tallies.for_send(&sched, intended);
            if now - intended > LATE_THRESHOLD {
                tally.late_sends += 1;
            }
            tally.sent += 1;
            slot.in_flight = Some(intended);
            slot.sent_at = now;
            if send(cfg, &epoll, token, slot, request).is_err() {
                fail(&epoll, slot, &mut tallies, &sched, intended);
            }
        }
        if !live {
            break;
        }
        // In-flight requests wake the loop by readiness; their timeout is checked
        // at least this often.
        let mut timeout = cfg.timeout.min(Duration::from_millis(100));
        if let Some(wake) = next_wake {
            timeout = timeout.min(wake.saturating_duration_since(Instant::now()));
        }
        let ready = epoll
            .wait(&mut events, Some(timeout))
            .expect("epoll_pwait2");
        for ev in ready {
            let (token, mask) = (ev.data as usize, ev.events);
            let slot = &mut slots[token];
            let Some(intended) = slot.in_flight else {
                // Readable while idle: the server closed the connection (or sent
                // something unasked). The next request opens a new one.
                drop_conn(&epoll, slot);
                continue;
            };
            let result = on_ready(&epoll, token, slot, mask, request);
            match result {
                Ok(Progress::Partial) => {}
                Ok(Progress::Done(status, keep_alive)) => {
                    let tally = tallies.for_send(&sched, intended);
                    tally.completed += 1;
                    tally.non_2xx += u64::from(!(200..300).contains(&status));
                    tally
                        .latencies_us
                        .push(intended.elapsed().as_micros() as u64);
                    slot.in_flight = None;
                    slot.k += 1;
                    if !keep_alive {
                        drop_conn(&epoll, slot);
                    }
                }
                Err(_) => fail(&epoll, slot, &mut tallies, &sched, intended),
            }
        }
    }
    tallies.measured
}

/// Starts the request on `slot`'s connection, opening one first if needed.
fn send(
    cfg: &Config,
    epoll: &epoll::Epoll,
    token: usize,
    slot: &mut Slot,
    request: &[u8],
) -> std::io::Result<()> {
    if slot.conn.is_none() {
        let conn = Conn::open(cfg)?;
        epoll.add(conn.stream.as_raw_fd(), epoll::IN, token as u64)?;
        slot.conn = Some(conn);
    }
    let conn = slot.conn.as_mut().expect("connection opened above");
    conn.unsent = request.len();
    if !conn.flush(request)? {
        epoll.modify(
            conn.stream.as_raw_fd(),
            epoll::IN | epoll::OUT,
            token as u64,
        )?;
    }
    Ok(())
}

/// Handles readiness on `slot`'s connection: the rest of a short write, then reads.
fn on_ready(
    epoll: &epoll::Epoll,
    token: usize,
    slot: &mut Slot,
    mask: u32,
    request: &[u8],
) -> std::io::Result<Progress> {
    let conn = slot.conn.as_mut().ok_or(ErrorKind::NotConnected)?;
    if conn.unsent > 0 && mask & epoll::OUT != 0 && conn.flush(request)? {
        epoll.modify(conn.stream.as_raw_fd(), epoll::IN, token as u64)?;
    }
    conn.read_available()
}

/// Counts the request in flight as an error and drops the connection; the next
/// request opens a new one.
fn fail(
    epoll: &epoll::Epoll,
    slot: &mut Slot,
    tallies: &mut Tallies,
    sched: &Schedule,
    intended: Instant,
) {
    tallies.for_send(sched, intended).errors += 1;
    slot.in_flight = None;
    slot.k += 1;
    drop_conn(epoll, slot);
}

fn drop_conn(epoll: &epoll::Epoll, slot: &mut Slot) {
    if let Some(conn) = slot.conn.take() {
        epoll.delete(conn.stream.as_raw_fd());
    }
}

/// Nearest-rank percentile of an ascending slice; 0 when empty.
fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn report(cfg: &Config, mut total: ConnStats, elapsed: Duration) -> String {
    total.latencies_us.sort_unstable();
    let lat = &total.latencies_us;
    let mean = if lat.is_empty() {
        0.0
    } else {
        lat.iter().sum::<u64>() as f64 / lat.len() as f64
    };
    format!(
        concat!(
            "{{\"target_rate\":{:.1},\"connections\":{},\"duration_s\":{:.3},",
            "\"sent\":{},\"completed\":{},\"non_2xx\":{},\"errors\":{},\"late_sends\":{},",
            "\"achieved_rate\":{:.1},\"latency_us\":{{\"p50\":{},\"p90\":{},\"p99\":{},",
            "\"p999\":{},\"max\":{},\"mean\":{:.1}}}}}"
        ),
        cfg.rate,
        cfg.connections,
        elapsed.as_secs_f64(),
        total.sent,
        total.completed,
        total.non_2xx,
        total.errors,
        total.late_sends,
        total.completed as f64 / cfg.duration.as_secs_f64(),
        percentile(lat, 50.0),
        percentile(lat, 90.0),
        percentile(lat, 99.0),
        percentile(lat, 99.9),
        lat.last().copied().unwrap_or(0),
        mean,
    )
}

fn main() -> ExitCode {
    let cfg = match parse_args(std::env::args().skip(1)) {
        Ok(cfg) => cfg,
        Err(msg) => {
            eprintln!("error: {msg}\nhint: {}", usage());
            return ExitCode::from(2);
        }
    };
    tighten_timer_slack();
    // Threads start a little in the future so that none begins behind schedule.
    let start = Instant::now() + Duration::from_millis(50);
    let measured_from = start + cfg.warmup;
    let total = thread::scope(|scope| {
        let handles: Vec<_> = (0..cfg.threads)
            .map(|t| {
                let cfg = &cfg;
                let indices = (t..cfg.connections).step_by(cfg.threads).collect();
                scope.spawn(move || run_loop(cfg, indices, start, measured_from))
            })
            .collect();
        let mut total = ConnStats::default();
        for handle in handles {
            total.merge(handle.join().expect("event loop panicked"));
        }
        total
    });
    println!("{}", report(&cfg, total, measured_from.elapsed()));
    ExitCode::SUCCESS
}
