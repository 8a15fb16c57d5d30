//! Closed-loop WebSocket echo client for the WebSocket cell (benches/e2e/benchkit/wsload.py).
//!
//! The Python client (`websockets` on uvloop) spent more CPU per message than the servers it
//! measured, so with 2 cores the figures were the client's. This one is std only, built with a
//! plain `rustc -O` like `fixed_rate.rs`, and the same binary drives every server.
//!
//! Model:
//! - `C` WebSockets over blocking connects and handshakes with TCP_NODELAY, then non-blocking
//!   on `--threads T` epoll event loops (default 1; connection `i` on loop `i % T`). Handshake
//!   with a fixed `Sec-WebSocket-Key` (RFC 6455's sample), no `Sec-WebSocket-Extensions`
//!   offered, so no server negotiates permessage-deflate: every server frames plain payloads.
//! - Each connection sends one masked binary frame of `--size` bytes and reads the echo (a
//!   whole message: continuation frames are joined; a ping is answered with a pong), checks
//!   that the bytes are the ones sent, and sends the next. The mask key is fixed per
//!   connection, so the masked frame is built once: the client's cost per message is a write
//!   and a read. A server still unmasks every frame (it cannot know the key is constant).
//! - An earlier version gave every WebSocket its own OS thread with blocking reads; it spent
//!   11-12 CPU-us per 64-byte echo, 8 of the 20 CPU-s of a run on 2 CPUs.
//! - Protocol with the parent: after every connection is open, one JSON line
//!   `{"connected": n, "errors": e}` on stdout; then the parent writes one line
//!   `START END` (Unix time, seconds, floats) on stdin. Round trips completing inside
//!   [START, END) count; at END every loop stops and the client prints one JSON line
//!   `{"messages": m, "errors": e, "cpu_s": c}` (c: this process's user+system CPU inside
//!   the window, from /proc/self/stat) and exits, dropping its sockets.
//!
//! Only loopback addresses are accepted. Exit code 2 on bad arguments.

use std::io::{BufRead, ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::process::ExitCode;
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

mod epoll;

const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
/// RFC 6455 §1.3: the accept value for `KEY`.
const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";
const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// Linux's USER_HZ (the unit of /proc/self/stat's times) on every architecture we run on.
const TICKS_PER_S: f64 = 100.0;

struct Config {
    addr: SocketAddr,
    path: String,
    connections: usize,
    threads: usize,
    size: usize,
}

fn parse_args() -> Result<Config, String> {
    let mut addr = None;
    let mut path = "/".to_string();
    let mut connections = 64usize;
    let mut size = 64usize;
    let mut threads = 1usize;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--addr" => {
                addr = Some(
                    value
                        .parse::<SocketAddr>()
                        .map_err(|e| format!("--addr {value}: {e}"))?,
                )
            }
            "--path" => path = value,
            "--connections" => {
                connections = value
                    .parse()
                    .map_err(|e| format!("--connections {value}: {e}"))?
            }
            "--size" => size = value.parse().map_err(|e| format!("--size {value}: {e}"))?,
            "--threads" => {
                threads = value
                    .parse()
                    .map_err(|e| format!("--threads {value}: {e}"))?
            }
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    let addr = addr.ok_or("--addr is required")?;
    let loopback = match addr.ip() {
        IpAddr::V4(ip) => ip.is_loopback(),
        IpAddr::V6(ip) => ip.is_loopback(),
    };
    if !loopback {
        return Err(format!("--addr {addr} is not a loopback address"));
    }
    if connections == 0 || size == 0 || threads == 0 {
        return Err("--connections, --size and --threads must be positive".into());
    }
    Ok(Config {
        addr,
        path,
        connections,
        threads: threads.min(connections),
        size,
    })
}

fn now_s() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn cpu_s() -> f64 {
    // Fields 14 and 15 (utime, stime) after the ")" that ends the command name.
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (tick(11) + tick(12)) / TICKS_PER_S
}

/// One WebSocket: blocking for the handshake, then non-blocking on an event loop.
struct Conn {
    sock: TcpStream,
    /// Read buffer (allocated and zeroed once, grown only for a larger frame); bytes read
    /// and not yet consumed are `buf[pos..len]`.
    buf: Vec<u8>,
    pos: usize,
    len: usize,
    /// Bytes to write: `out[out_pos..]` (a frame, and any pong queued behind it).
    out: Vec<u8>,
    out_pos: usize,
    /// The message being received (continuation frames joined).
    got: Vec<u8>,
    /// What this connection sends: its payload and the masked frame carrying it.
    payload: Vec<u8>,
    frame: Vec<u8>,
    /// EPOLLOUT is in the interest set (a short write waits for room).
    want_out: bool,
}

impl Conn {
    fn open(cfg: &Config, index: usize) -> Result<Conn, String> {
        let sock = TcpStream::connect_timeout(&cfg.addr, IO_TIMEOUT)
            .map_err(|e| format!("connect: {e}"))?;
        let _ = sock.set_nodelay(true);
        sock.set_read_timeout(Some(IO_TIMEOUT))
            .map_err(|e| format!("set_read_timeout: {e}"))?;
        let seed = (index as u32)
            .wrapping_mul(2_654_435_761)
            .wrapping_add(0x9e37_79b9);
        let payload: Vec<u8> = (0..cfg.size)
            .map(|j| (j as u32).wrapping_mul(seed).rotate_right(13) as u8)
            .collect();
        let frame = masked_frame(&payload, seed.to_be_bytes());
        let mut conn = Conn {
            sock,
            buf: Vec::with_capacity(64 * 1024),
            pos: 0,
            len: 0,
            out: Vec::with_capacity(frame.len() + 256),
            out_pos: 0,
            got: Vec::with_capacity(cfg.size),
            payload,
            frame,
            want_out: false,
        };
        conn.handshake(cfg)?;
        conn.sock
            .set_nonblocking(true)
            .map_err(|e| format!("set_nonblocking: {e}"))?;
        Ok(conn)
    }

    fn handshake(&mut self, cfg: &Config) -> Result<(), String> {
        let req = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n",
            cfg.path, cfg.addr
        );
        self.sock
            .write_all(req.as_bytes())
            .map_err(|e| format!("handshake write: {e}"))?;
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..end]).to_ascii_lowercase();
                // Anything after the head is the first frames; keep them.
                self.pos = end + 4;
                if !head.starts_with("http/1.1 101") {
                    return Err(format!("no 101: {}", head.lines().next().unwrap_or("")));
                }
                if !head.contains(&format!(
                    "sec-websocket-accept: {}",
                    ACCEPT.to_ascii_lowercase()
                )) {
                    return Err("wrong or missing Sec-WebSocket-Accept".into());
                }
                if head.contains("sec-websocket-extensions") {
                    return Err("the server answered with an extension none was offered".into());
                }
                // From here on `buf` is the fixed read buffer of `read_available`.
                self.len = self.buf.len();
                self.buf.resize(self.len.max(64 * 1024), 0);
                return Ok(());
            }
            if self.buf.len() > 16 * 1024 {
                return Err("handshake response head too large".into());
            }
            let n = self
                .sock
                .read(&mut chunk)
                .map_err(|e| format!("handshake read: {e}"))?;
            if n == 0 {
                return Err("handshake read: connection closed".into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Queues this connection's frame and writes what the socket takes.
    fn send_message(&mut self) -> std::io::Result<()> {
        self.out.extend_from_slice(&self.frame);
        self.flush()
    }

    /// Writes queued bytes until done or the socket is full.
    fn flush(&mut self) -> std::io::Result<()> {
        while self.out_pos < self.out.len() {
            match self.sock.write(&self.out[self.out_pos..]) {
                Ok(0) => return Err(ErrorKind::WriteZero.into()),
                Ok(n) => self.out_pos += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.out.clear();
        self.out_pos = 0;
        Ok(())
    }

    fn pending_out(&self) -> bool {
        self.out_pos < self.out.len()
    }

    /// Reads what the socket has; returns how many whole messages it completed (each the
    /// echo of one we sent). A message whose bytes differ from the payload sent is an error.
    fn read_available(&mut self) -> Result<usize, String> {
        let mut eof = false;
        loop {
            if self.len == self.buf.len() {
                // Full: move the unconsumed bytes to the front, or grow for a large frame.
                if self.pos > 0 {
                    self.buf.copy_within(self.pos..self.len, 0);
                    self.len -= self.pos;
                    self.pos = 0;
                } else {
                    self.buf.resize(self.buf.len() * 2, 0);
                }
            }
            match self.sock.read(&mut self.buf[self.len..]) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(n) => {
                    self.len += n;
                    // Room left: the socket is empty (level-triggered epoll reports what
                    // comes later), no second read just to see WouldBlock.
                    if self.len < self.buf.len() {
                        break;
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("read: {e}")),
            }
        }
        let mut messages = 0;
        while let Some(done) = self.next_frame()? {
            messages += usize::from(done);
        }
        if self.pos == self.len {
            self.pos = 0;
            self.len = 0;
        }
        if eof {
            return Err("the server closed the connection".into());
        }
        Ok(messages)
    }

    /// Consumes one whole frame from the buffer: None when it is not all there yet,
    /// Some(true) when it completed a message.
    fn next_frame(&mut self) -> Result<Option<bool>, String> {
        let b = &self.buf[self.pos..self.len];
        if b.len() < 2 {
            return Ok(None);
        }
        let (fin, opcode, masked, len7) =
            (b[0] & 0x80 != 0, b[0] & 0x0f, b[1] & 0x80 != 0, b[1] & 0x7f);
        if masked {
            return Err("masked frame from the server".into());
        }
        let (head, len) = match len7 {
            126 if b.len() >= 4 => (4, u16::from_be_bytes([b[2], b[3]]) as usize),
            127 if b.len() >= 10 => (
                10,
                u64::from_be_bytes(b[2..10].try_into().unwrap()) as usize,
            ),
            126 | 127 => return Ok(None),
            n => (2, n as usize),
        };
        if b.len() < head + len {
            return Ok(None);
        }
        let payload = &b[head..head + len];
        let mut completed = false;
        match opcode {
            0x0..=0x2 => {
                self.got.extend_from_slice(payload);
                if fin {
                    let same = self.got == self.payload;
                    self.got.clear();
                    if !same {
                        return Err("an echo differs from the message sent".into());
                    }
                    completed = true;
                }
            }
            0x9 => {
                self.out
                    .extend_from_slice(&[0x8a, 0x80 | len as u8, 0, 0, 0, 0]);
                self.out.extend_from_slice(payload);
            }
            0xa => {}
            0x8 => return Err("the server closed the connection".into()),
            op => return Err(format!("unexpected opcode {op:#x}")),
        }
        self.pos += head + len;
        Ok(Some(completed))
    }
}

/// One masked binary frame carrying `payload` under a fixed mask key.
fn masked_frame(payload: &[u8], key: [u8; 4]) -> Vec<u8> {
    let mut f = Vec::with_capacity(payload.len() + 14);
    f.push(0x82);
    match payload.len() {
        n if n < 126 => f.push(0x80 | n as u8),
        n if n <= 0xffff => {
            f.push(0x80 | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(0x80 | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    f.extend_from_slice(&key);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    f
}

/// Round trips counted and errors seen by one event loop.
#[derive(Default)]
struct Tally {
    messages: u64,
    errors: u64,
}

/// Takes connection `token` out of the loop after an error, counted once and logged.
fn stop(
    tally: &mut Tally,
    live: &mut [bool],
    epoll: &epoll::Epoll,
    conns: &[(usize, Conn)],
    token: usize,
    why: String,
) {
    eprintln!("connection {}: {why}", conns[token].0);
    tally.errors += 1;
    live[token] = false;
    epoll.delete(conns[token].1.sock.as_raw_fd());
}

/// Runs the closed loop on `conns` until `end`; counts round trips completed in
/// [start, end). A connection with an error stops; the others go on.
fn run_loop(mut conns: Vec<(usize, Conn)>, start: f64, end: f64) -> Tally {
    let mut tally = Tally::default();
    let epoll = match epoll::Epoll::new() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("epoll_create1: {e}");
            tally.errors += conns.len() as u64;
            return tally;
        }
    };
    let mut live = vec![true; conns.len()];
    for token in 0..conns.len() {
        let fd = conns[token].1.sock.as_raw_fd();
        let started = epoll
            .add(fd, epoll::IN, token as u64)
            .and_then(|()| conns[token].1.send_message());
        if let Err(e) = started {
            stop(
                &mut tally,
                &mut live,
                &epoll,
                &conns,
                token,
                format!("first send: {e}"),
            );
        }
    }
    let mut events = vec![epoll::Event { events: 0, data: 0 }; conns.len()];
    loop {
        let now = now_s();
        if now >= end || !live.iter().any(|&l| l) {
            break;
        }
        let wait = Duration::from_secs_f64((end - now).min(0.1));
        let ready = match epoll.wait(&mut events, Some(wait)) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("epoll_pwait2: {e}");
                tally.errors += 1;
                break;
            }
        };
        for ev in ready {
            let token = ev.data as usize;
            if !live[token] {
                continue;
            }
            let conn = &mut conns[token].1;
            let result = (|| -> Result<(), String> {
                if conn.pending_out() {
                    conn.flush().map_err(|e| format!("write: {e}"))?;
                }
                let n = conn.read_available()?;
                if n > 0 {
                    let now = now_s();
                    if now >= start && now < end {
                        tally.messages += n as u64;
                    }
                    // Closed loop: one message out per echo back.
                    for _ in 0..n {
                        conn.send_message().map_err(|e| format!("write: {e}"))?;
                    }
                } else if conn.pending_out() {
                    // A queued pong.
                    conn.flush().map_err(|e| format!("write: {e}"))?;
                }
                let want_out = conn.pending_out();
                if want_out != conn.want_out {
                    let mask = if want_out {
                        epoll::IN | epoll::OUT
                    } else {
                        epoll::IN
                    };
                    epoll
                        .modify(conn.sock.as_raw_fd(), mask, token as u64)
                        .map_err(|e| format!("epoll_ctl: {e}"))?;
                    conn.want_out = want_out;
                }
                Ok(())
            })();
            if let Err(why) = result {
                stop(&mut tally, &mut live, &epoll, &conns, token, why);
            }
        }
    }
    tally
}

fn main() -> ExitCode {
    let cfg = match parse_args() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}\nhint: ws_echo --addr 127.0.0.1:PORT [--path /] [--connections 64] [--size 64] [--threads 1]");
            return ExitCode::from(2);
        }
    };
    let mut groups: Vec<Vec<(usize, Conn)>> = (0..cfg.threads).map(|_| Vec::new()).collect();
    let (mut connected, mut errors) = (0u64, 0u64);
    for i in 0..cfg.connections {
        match Conn::open(&cfg, i) {
            Ok(conn) => {
                connected += 1;
                groups[i % cfg.threads].push((i, conn));
            }
            Err(e) => {
                eprintln!("connection {i}: {e}");
                errors += 1;
            }
        }
    }
    println!("{{\"connected\": {connected}, \"errors\": {errors}}}");
    let _ = std::io::stdout().flush();
    let mut line = String::new();
    if std::io::stdin().lock().read_line(&mut line).is_err() {
        return ExitCode::from(1);
    }
    let mut parts = line
        .split_whitespace()
        .filter_map(|v| v.parse::<f64>().ok());
    let (Some(start), Some(end)) = (parts.next(), parts.next()) else {
        eprintln!("error: expected `START END` on stdin, got {line:?}");
        return ExitCode::from(2);
    };
    let mut cpu = 0.0;
    let tallies = thread::scope(|scope| {
        let loops: Vec<_> = groups
            .into_iter()
            .map(|conns| scope.spawn(move || run_loop(conns, start, end)))
            .collect();
        thread::sleep(Duration::from_secs_f64((start - now_s()).max(0.0)));
        let cpu0 = cpu_s();
        thread::sleep(Duration::from_secs_f64((end - now_s()).max(0.0)));
        cpu = cpu_s() - cpu0;
        loops
            .into_iter()
            .map(|l| {
                l.join().unwrap_or(Tally {
                    messages: 0,
                    errors: 1,
                })
            })
            .collect::<Vec<_>>()
    });
    let messages: u64 = tallies.iter().map(|t| t.messages).sum();
    errors += tallies.iter().map(|t| t.errors).sum::<u64>();
    println!("{{\"messages\": {messages}, \"errors\": {errors}, \"cpu_s\": {cpu:.3}}}");
    ExitCode::SUCCESS
}
