//! Open-loop HTTP/1.1 load generator: a fixed request rate, latency measured
//! from the time each request *should* have been sent (wrk2's model).
//!
//! Debian ships no wrk2, so the e2e harness (`benches/e2e/run.py`) builds this
//! file with a plain `rustc -O` (std only, no Cargo) and uses it for the
//! "latency without saturation" figures.
//!
//! Model:
//! - `C` keep-alive connections, one OS thread each. Connection `i` owns the
//!   send times `start + i/R + k*C/R` (k = 0, 1, ...), so the whole run sends
//!   evenly spaced requests at `R` per second.
//! - A thread sleeps until its next send time, sends, reads the full response,
//!   and records `now - intended_send_time`. When the server is slow, later
//!   requests on that connection go out late and the wait is charged to them:
//!   no coordinated omission.
//! - The run stops scheduling at `start + duration`; requests in flight finish
//!   (bounded by the read timeout).
//! - With `--warmup W`, the schedule starts `W` seconds earlier: connections
//!   open and requests flow at the same rate, but nothing sent before the
//!   measured `duration` begins is counted. The harness uses this to have
//!   connections established and spread over a server's workers before a
//!   second load (the blocking-endpoint scenario) starts.
//!
//! Only loopback addresses are accepted: this tool exists to measure servers
//! on the same machine and refuses to send traffic anywhere else.
//!
//! Output: one JSON object on stdout. Exit code 2 on bad arguments.

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
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
     [--connections 32] [--duration SECONDS] [--warmup SECONDS] [--timeout SECONDS]"
}

fn parse_args(args: impl Iterator<Item = String>) -> Result<Config, String> {
    let mut addr = None;
    let mut path = String::from("/");
    let mut rate = None;
    let mut connections = 32usize;
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
    if !positive(rate) || connections == 0 || !positive(duration) || !positive(timeout) {
        return Err("--rate, --connections, --duration and --timeout must be positive".into());
    }
    if warmup.is_nan() || warmup < 0.0 {
        return Err("--warmup must be zero or positive".into());
    }
    Ok(Config {
        addr,
        path,
        rate,
        connections,
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

/// One keep-alive connection with a read buffer that survives between responses.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

enum Exchange {
    /// Status code; the connection can be reused.
    KeepAlive(u16),
    /// Status code; the server closes (or framed the body by closing).
    Close(u16),
}

impl Conn {
    fn open(cfg: &Config) -> std::io::Result<Conn> {
        let stream = TcpStream::connect_timeout(&cfg.addr, cfg.timeout)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(cfg.timeout))?;
        stream.set_write_timeout(Some(cfg.timeout))?;
        Ok(Conn {
            stream,
            buf: Vec::with_capacity(16 * 1024),
        })
    }

    fn exchange(&mut self, request: &[u8]) -> std::io::Result<Exchange> {
        self.stream.write_all(request)?;
        let head_end = self.fill_until(|buf| find(buf, b"\r\n\r\n").map(|i| i + 4))?;
        let head = Head::parse(&self.buf[..head_end])?;
        self.buf.drain(..head_end);
        let keep_alive = match head.framing {
            Framing::Length(n) => {
                self.fill_until(|buf| (buf.len() >= n).then_some(n))?;
                self.buf.drain(..n);
                head.keep_alive
            }
            Framing::Chunked => {
                let end = self.fill_until(chunked_end)?;
                self.buf.drain(..end);
                head.keep_alive
            }
            Framing::UntilClose => {
                self.read_to_close()?;
                false
            }
        };
        Ok(if keep_alive {
            Exchange::KeepAlive(head.status)
        } else {
            Exchange::Close(head.status)
        })
    }

    /// Reads until `done` finds a complete unit in the buffer; returns its length.
    fn fill_until(&mut self, done: impl Fn(&[u8]) -> Option<usize>) -> std::io::Result<usize> {
        let mut chunk = [0u8; 16 * 1024];
        loop {
            if let Some(n) = done(&self.buf) {
                return Ok(n);
            }
            if self.buf.len() > MAX_HEAD_BYTES && find(&self.buf, b"\r\n\r\n").is_none() {
                return Err(invalid("response head too large"));
            }
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                return Err(ErrorKind::UnexpectedEof.into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    fn read_to_close(&mut self) -> std::io::Result<()> {
        let mut sink = Vec::new();
        self.stream.read_to_end(&mut sink).map(|_| ())
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

/// Runs connection `index`'s schedule from `start`; only sends scheduled at or after
/// `measured_from` are counted.
fn run_connection(cfg: &Config, index: usize, start: Instant, measured_from: Instant) -> ConnStats {
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: uringapi-fixed-rate\r\n\r\n",
        cfg.path, cfg.addr
    );
    let period = cfg.connections as f64 / cfg.rate;
    let offset = index as f64 / cfg.rate;
    let end = measured_from + cfg.duration;
    let mut stats = ConnStats::default();
    // Sends before `measured_from` are tallied here and dropped.
    let mut warmup = ConnStats::default();
    let mut conn: Option<Conn> = None;
    for k in 0u64.. {
        let intended = start + Duration::from_secs_f64(offset + k as f64 * period);
        if intended >= end {
            break;
        }
        let tally = if intended >= measured_from {
            &mut stats
        } else {
            &mut warmup
        };
        let now = Instant::now();
        if intended > now {
            thread::sleep(intended - now);
        } else if now - intended > LATE_THRESHOLD {
            tally.late_sends += 1;
        }
        tally.sent += 1;
        match send_one(cfg, &mut conn, request.as_bytes()) {
            Ok(status) => {
                tally.completed += 1;
                tally.non_2xx += u64::from(!(200..300).contains(&status));
                tally
                    .latencies_us
                    .push(intended.elapsed().as_micros() as u64);
            }
            Err(_) => {
                tally.errors += 1;
                conn = None;
            }
        }
    }
    stats
}

/// Sends one request on `conn`, opening it first if needed; returns the status.
fn send_one(cfg: &Config, conn: &mut Option<Conn>, request: &[u8]) -> std::io::Result<u16> {
    if conn.is_none() {
        *conn = Some(Conn::open(cfg)?);
    }
    let live = conn.as_mut().expect("connection opened above");
    match live.exchange(request)? {
        Exchange::KeepAlive(status) => Ok(status),
        Exchange::Close(status) => {
            *conn = None;
            Ok(status)
        }
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
        let handles: Vec<_> = (0..cfg.connections)
            .map(|i| {
                let cfg = &cfg;
                scope.spawn(move || run_connection(cfg, i, start, measured_from))
            })
            .collect();
        let mut total = ConnStats::default();
        for handle in handles {
            total.merge(handle.join().expect("connection thread panicked"));
        }
        total
    });
    println!("{}", report(&cfg, total, measured_from.elapsed()));
    ExitCode::SUCCESS
}
