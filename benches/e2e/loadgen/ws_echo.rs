//! Closed-loop WebSocket echo client for the WebSocket cell (benches/e2e/benchkit/wsload.py).
//!
//! The Python client (`websockets` on uvloop) spent more CPU per message than the servers it
//! measured, so with 2 cores the figures were the client's. This one is std only, built with a
//! plain `rustc -O` like `fixed_rate.rs`, and the same binary drives every server.
//!
//! Model:
//! - `C` WebSockets, one OS thread each, blocking sockets with TCP_NODELAY. Handshake with a
//!   fixed `Sec-WebSocket-Key` (RFC 6455's sample), no `Sec-WebSocket-Extensions` offered, so
//!   no server negotiates permessage-deflate: every server frames plain payloads.
//! - Each thread sends one masked binary frame of `--size` bytes and reads the echo (a whole
//!   message: continuation frames are joined; a ping is answered with a pong), checks that
//!   the bytes are the ones sent, and repeats. The mask key is fixed per connection, so the
//!   masked frame is built once: the client's cost per message is a write and a read. A
//!   server still unmasks every frame (it cannot know the key is constant).
//! - Protocol with the parent: after every connection is open, one JSON line
//!   `{"connected": n, "errors": e}` on stdout; then the parent writes one line
//!   `START END` (Unix time, seconds, floats) on stdin. Round trips completing inside
//!   [START, END) count; at END every thread stops and the client prints one JSON line
//!   `{"messages": m, "errors": e, "cpu_s": c}` (c: this process's user+system CPU inside
//!   the window, from /proc/self/stat) and exits, dropping its sockets.
//!
//! Only loopback addresses are accepted. Exit code 2 on bad arguments.

use std::io::{BufRead, ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier, OnceLock};
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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
    size: usize,
}

fn parse_args() -> Result<Config, String> {
    let mut addr = None;
    let mut path = "/".to_string();
    let mut connections = 64usize;
    let mut size = 64usize;
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
    if connections == 0 || size == 0 {
        return Err("--connections and --size must be positive".into());
    }
    Ok(Config {
        addr,
        path,
        connections,
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

/// Reads into a growable buffer; `pos..len` holds bytes not yet consumed.
struct Conn {
    sock: TcpStream,
    buf: Vec<u8>,
    pos: usize,
    len: usize,
}

impl Conn {
    fn fill(&mut self, need: usize) -> std::io::Result<()> {
        while self.len - self.pos < need {
            if self.pos > 0 {
                self.buf.copy_within(self.pos..self.len, 0);
                self.len -= self.pos;
                self.pos = 0;
            }
            if self.buf.len() < need {
                self.buf.resize(need.max(64 * 1024), 0);
            }
            let n = self.sock.read(&mut self.buf[self.len..])?;
            if n == 0 {
                return Err(ErrorKind::UnexpectedEof.into());
            }
            self.len += n;
        }
        Ok(())
    }

    fn take(&mut self, n: usize) -> std::io::Result<&[u8]> {
        self.fill(n)?;
        let start = self.pos;
        self.pos += n;
        Ok(&self.buf[start..start + n])
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
        loop {
            if let Some(end) = self.buf[self.pos..self.len]
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
            {
                let head = String::from_utf8_lossy(&self.buf[self.pos..self.pos + end])
                    .to_ascii_lowercase();
                self.pos += end + 4;
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
                return Ok(());
            }
            let have = self.len - self.pos;
            if have > 16 * 1024 {
                return Err("handshake response head too large".into());
            }
            self.fill(have + 1)
                .map_err(|e| format!("handshake read: {e}"))?;
        }
    }

    /// Reads one whole message into `out`; answers pings. Err on close or a protocol error.
    fn read_message(&mut self, out: &mut Vec<u8>, pong: &mut Vec<u8>) -> Result<(), String> {
        out.clear();
        loop {
            let h = self.take(2).map_err(|e| format!("read: {e}"))?;
            let (fin, opcode, masked, len7) =
                (h[0] & 0x80 != 0, h[0] & 0x0f, h[1] & 0x80 != 0, h[1] & 0x7f);
            if masked {
                return Err("masked frame from the server".into());
            }
            let len = match len7 {
                126 => {
                    let b = self.take(2).map_err(|e| format!("read: {e}"))?;
                    u16::from_be_bytes([b[0], b[1]]) as usize
                }
                127 => {
                    let b = self.take(8).map_err(|e| format!("read: {e}"))?;
                    u64::from_be_bytes(b.try_into().unwrap()) as usize
                }
                n => n as usize,
            };
            let payload = self.take(len).map_err(|e| format!("read: {e}"))?;
            match opcode {
                0x0..=0x2 => {
                    out.extend_from_slice(payload);
                    if fin {
                        return Ok(());
                    }
                }
                0x9 => {
                    pong.clear();
                    pong.extend_from_slice(&[0x8a, 0x80 | len as u8, 0, 0, 0, 0]);
                    pong.extend_from_slice(payload);
                    self.sock
                        .write_all(pong)
                        .map_err(|e| format!("pong: {e}"))?;
                }
                0xa => {}
                0x8 => return Err("the server closed the connection".into()),
                op => return Err(format!("unexpected opcode {op:#x}")),
            }
        }
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

fn main() -> ExitCode {
    let cfg = match parse_args() {
        Ok(c) => Arc::new(c),
        Err(e) => {
            eprintln!("error: {e}\nhint: ws_echo --addr 127.0.0.1:PORT [--path /] [--connections 64] [--size 64]");
            return ExitCode::from(2);
        }
    };
    let window: Arc<OnceLock<(f64, f64)>> = Arc::new(OnceLock::new());
    let opened = Arc::new(Barrier::new(cfg.connections + 1));
    let go = Arc::new(Barrier::new(cfg.connections + 1));
    let messages = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let connected = Arc::new(AtomicU64::new(0));
    let mut threads = Vec::new();
    for i in 0..cfg.connections {
        let (cfg, window, opened, go) = (cfg.clone(), window.clone(), opened.clone(), go.clone());
        let (messages, errors, connected) = (messages.clone(), errors.clone(), connected.clone());
        let spawned = thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(move || {
                let conn = TcpStream::connect_timeout(&cfg.addr, IO_TIMEOUT)
                    .map_err(|e| format!("connect: {e}"));
                let mut conn = conn.and_then(|sock| {
                    let _ = sock.set_nodelay(true);
                    let _ = sock.set_read_timeout(Some(IO_TIMEOUT));
                    let mut c = Conn {
                        sock,
                        buf: vec![0; 64 * 1024],
                        pos: 0,
                        len: 0,
                    };
                    c.handshake(&cfg).map(|_| c)
                });
                match &conn {
                    Ok(_) => connected.fetch_add(1, Ordering::Relaxed),
                    Err(e) => {
                        eprintln!("connection {i}: {e}");
                        errors.fetch_add(1, Ordering::Relaxed)
                    }
                };
                opened.wait();
                go.wait();
                let (start, end) = *window.get().expect("window set before go");
                let Ok(conn) = conn.as_mut() else { return };
                let seed = (i as u32)
                    .wrapping_mul(2_654_435_761)
                    .wrapping_add(0x9e37_79b9);
                let payload: Vec<u8> = (0..cfg.size)
                    .map(|j| (j as u32).wrapping_mul(seed).rotate_right(13) as u8)
                    .collect();
                let frame = masked_frame(&payload, seed.to_be_bytes());
                let (mut got, mut pong) = (Vec::with_capacity(cfg.size), Vec::new());
                let mut counted = 0u64;
                loop {
                    if let Err(e) = conn.sock.write_all(&frame) {
                        eprintln!("connection {i}: write: {e}");
                        errors.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                    if let Err(e) = conn.read_message(&mut got, &mut pong) {
                        eprintln!("connection {i}: {e}");
                        errors.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                    let now = now_s();
                    if now >= end {
                        break;
                    }
                    if got != payload {
                        errors.fetch_add(1, Ordering::Relaxed);
                    } else if now >= start {
                        counted += 1;
                    }
                }
                messages.fetch_add(counted, Ordering::Relaxed);
            });
        match spawned {
            Ok(t) => threads.push(t),
            Err(e) => {
                eprintln!("error: cannot start thread {i}: {e}");
                return ExitCode::from(1);
            }
        }
    }
    opened.wait();
    println!(
        "{{\"connected\": {}, \"errors\": {}}}",
        connected.load(Ordering::Relaxed),
        errors.load(Ordering::Relaxed)
    );
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
    let _ = window.set((start, end));
    go.wait();
    thread::sleep(Duration::from_secs_f64((start - now_s()).max(0.0)));
    let cpu0 = cpu_s();
    thread::sleep(Duration::from_secs_f64((end - now_s()).max(0.0)));
    let cpu = cpu_s() - cpu0;
    for t in threads {
        let _ = t.join();
    }
    println!(
        "{{\"messages\": {}, \"errors\": {}, \"cpu_s\": {:.3}}}",
        messages.load(Ordering::Relaxed),
        errors.load(Ordering::Relaxed),
        cpu
    );
    ExitCode::SUCCESS
}
