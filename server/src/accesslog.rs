//! The access log: one line per finished request, formatted by the front-end thread that
//! served it, batched per thread, and written to stderr or a file in whole batches.
//!
//! # Formats
//!
//! - `common`: Apache's common log format (`%h %l %u %t "%r" %>s %b`) exactly, then two
//!   fields of our own: the request id in quotes and the duration in microseconds.
//!   `127.0.0.1 - - [10/Oct/2000:13:55:36 +0000] "GET /x HTTP/1.1" 200 2326 "3f2a" 1234`
//! - `combined`: Apache's combined format (common plus `"%{Referer}i" "%{User-agent}i"`)
//!   exactly, then the same two fields.
//! - `json`: one object per line: `time` (RFC 3339, UTC, milliseconds), `peer`, `method`,
//!   `target`, `http_version` (`"1.1"`), `status`, `bytes`, `referer`, `user_agent`,
//!   `request_id` (those three `null` when absent), `duration_ms` (three decimals).
//!
//! The same rule holds for both text formats: the Apache fields come first, unchanged, so
//! any tool that reads Apache's formats by prefix (GoAccess, awk on field numbers, most log
//! shippers' patterns) keeps working, and our two fields always trail. A missing value is
//! `-` (Apache's convention, also for `%b` when no body bytes were sent); times are always
//! UTC (`+0000`); `bytes` counts body bytes only, like `%b`.
//!
//! # Escaping
//!
//! Method, target, referer, user agent and request id come from the client. Every byte of
//! them that is not printable ASCII (control bytes, DEL, and every byte ≥ 0x80, whether or
//! not it is part of valid UTF-8) is written as `\xHH`, a backslash as `\\`, and in the text
//! formats a double quote as `\"` (what Apache does). A line therefore never contains a raw
//! newline, quote or terminal escape from a client, and the escaped text maps back to the
//! exact bytes. In JSON the string values are that same escaped text, JSON-encoded: a target
//! `/a"b\<0xff>` is logged as `"/a\"b\\\\\\xff"`, which decodes to `/a"b\\\xff`. Raw UTF-8
//! is escaped too, so the log stays ASCII and a right-to-left override or a Unicode line
//! separator cannot disguise a line either; browsers percent-encode non-ASCII in targets,
//! so real traffic rarely shows it.
//!
//! # Writing
//!
//! Each front-end thread fills its own [`Buffer`]; once a batch passes [`FLUSH_AT`] (or on
//! [`Buffer::flush`]: a timer, shutdown, drop) the whole batch is handed to the shared
//! [`Sink`], whose own writer thread writes it in one `write`, so lines of different threads
//! never interleave and no io_uring thread ever waits on a disk or a pipe. The queue to the
//! writer holds at most [`QUEUE_BYTES`]; a batch past it is dropped and its lines counted
//! (`uringapi_access_log_dropped_lines_total`), logged once per run of drops. A file is
//! opened with `O_APPEND`. Write errors are counted and logged once per run of failures,
//! never fatal: a full disk must not take the server down. [`Sink::reopen`] (SIGUSR1) opens
//! the path again after logrotate moved the old file away.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{
    AtomicBool, AtomicU64, AtomicUsize, Ordering::Acquire, Ordering::Relaxed, Ordering::Release,
};
use std::sync::{mpsc, Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A batch is handed to the sink once it holds this many bytes.
pub const FLUSH_AT: usize = 32 * 1024;

/// `--access-log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Common,
    Combined,
    Json,
}

/// The HTTP version as a log line names it ("1.1", "2").
fn version(byte: u8) -> &'static str {
    match byte {
        0 => "1.0",
        uringapi_protocol::head::HTTP_2 => "2",
        _ => "1.1",
    }
}

/// One finished request, as the front end saw it.
#[derive(Debug, Clone, Copy)]
pub struct Entry<'a> {
    /// `None` on a Unix socket (logged as `-`, `null` in JSON).
    pub peer: Option<IpAddr>,
    pub method: &'a [u8],
    /// The request target as received (not decoded or normalised).
    pub target: &'a [u8],
    /// 0 for HTTP/1.0, 1 for HTTP/1.1, `HTTP_2` for HTTP/2.
    pub http_minor: u8,
    pub status: u16,
    /// Body bytes sent (not counting the head).
    pub bytes: u64,
    pub referer: Option<&'a [u8]>,
    pub user_agent: Option<&'a [u8]>,
    /// Empty when the request has no id (logged as `-` or `null`).
    pub request_id: &'a str,
    /// From the request head parsed to the response fully written.
    pub duration: Duration,
    /// When the request head was parsed (Apache's `%t` is the time the request arrived).
    pub time: SystemTime,
}

/// Appends one line for `e` in format `fmt`, ending in `\n`, to `out`.
pub fn format(fmt: Format, e: &Entry<'_>, out: &mut Vec<u8>) {
    match fmt {
        Format::Common => text(e, false, out),
        Format::Combined => text(e, true, out),
        Format::Json => json(e, out),
    }
}

fn text(e: &Entry<'_>, combined: bool, out: &mut Vec<u8>) {
    // Apache's `%t` from the IMF-fixdate `Sun, 06 Nov 1994 08:49:37 GMT` (RFC 9110 §5.6.7:
    // fixed width): `06/Nov/1994:08:49:37 +0000`.
    let imf = httpdate::fmt_http_date(logged_time(e.time));
    let (day, month, year, hms) = (&imf[5..7], &imf[8..11], &imf[12..16], &imf[17..25]);
    // Writing to a Vec cannot fail.
    match e.peer {
        Some(ip) => {
            let _ = write!(out, "{}", ip.to_canonical());
        }
        None => out.push(b'-'),
    }
    let _ = write!(out, " - - [{day}/{month}/{year}:{hms} +0000] \"");
    escape(e.method, Quoting::Text, out);
    out.push(b' ');
    escape(e.target, Quoting::Text, out);
    let _ = write!(out, " HTTP/{}\" {} ", version(e.http_minor), e.status);
    if e.bytes == 0 {
        out.push(b'-');
    } else {
        let _ = write!(out, "{}", e.bytes);
    }
    if combined {
        out.push(b' ');
        quoted_or_dash(e.referer, out);
        out.push(b' ');
        quoted_or_dash(e.user_agent, out);
    }
    out.push(b' ');
    quoted_or_dash(
        Some(e.request_id.as_bytes()).filter(|id| !id.is_empty()),
        out,
    );
    let _ = writeln!(out, " {}", e.duration.as_micros());
}

fn quoted_or_dash(v: Option<&[u8]>, out: &mut Vec<u8>) {
    match v {
        Some(v) => {
            out.push(b'"');
            escape(v, Quoting::Text, out);
            out.push(b'"');
        }
        None => out.extend_from_slice(b"\"-\""),
    }
}

fn json(e: &Entry<'_>, out: &mut Vec<u8>) {
    let _ = write!(
        out,
        "{{\"time\":\"{}\",\"peer\":",
        humantime::format_rfc3339_millis(logged_time(e.time)),
    );
    match e.peer {
        Some(ip) => {
            let _ = write!(out, "\"{}\"", ip.to_canonical());
        }
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"method\":");
    json_string(Some(e.method), out);
    out.extend_from_slice(b",\"target\":");
    json_string(Some(e.target), out);
    let _ = write!(
        out,
        ",\"http_version\":\"{}\",\"status\":{},\"bytes\":{},\"referer\":",
        version(e.http_minor),
        e.status,
        e.bytes
    );
    json_string(e.referer, out);
    out.extend_from_slice(b",\"user_agent\":");
    json_string(e.user_agent, out);
    out.extend_from_slice(b",\"request_id\":");
    json_string(
        Some(e.request_id.as_bytes()).filter(|id| !id.is_empty()),
        out,
    );
    // Milliseconds with three decimals from whole microseconds: exact, no float rounding.
    let us = e.duration.as_micros();
    let _ = writeln!(out, ",\"duration_ms\":{}.{:03}}}", us / 1000, us % 1000);
}

fn json_string(v: Option<&[u8]>, out: &mut Vec<u8>) {
    match v {
        Some(v) => {
            out.push(b'"');
            escape(v, Quoting::Json, out);
            out.push(b'"');
        }
        None => out.extend_from_slice(b"null"),
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Quoting {
    /// Inside `"…"` of a text format.
    Text,
    /// Inside a JSON string: the escaped text, JSON-encoded.
    Json,
}

/// Writes client bytes by the rule in the module doc.
fn escape(bytes: &[u8], q: Quoting, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    // The escaped text's own backslash, JSON-encoded once more where needed.
    let bs: &[u8] = if q == Quoting::Json { b"\\\\" } else { b"\\" };
    for &b in bytes {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => {
                out.extend_from_slice(bs);
                out.extend_from_slice(bs);
            }
            0x20..=0x7e => out.push(b),
            _ => {
                out.extend_from_slice(bs);
                out.extend_from_slice(&[b'x', HEX[usize::from(b >> 4)], HEX[usize::from(b & 0xf)]]);
            }
        }
    }
}

/// The time a line shows: a clock before 1970 is shown as 1970-01-01 00:00:00 (not worth a
/// branch in every caller, and the date crates refuse it).
fn logged_time(t: SystemTime) -> SystemTime {
    t.max(UNIX_EPOCH)
}

// ---- writing ------------------------------------------------------------------------------

/// Where the access log goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    Stderr,
    File(PathBuf),
}

enum Out {
    Stderr,
    File(File),
}

/// The log's destination, shared by all front-end threads. Threads hand it whole batches;
/// a writer thread of its own does the writing, so a slow disk or a full pipe never stalls
/// an io_uring thread.
pub struct Sink {
    path: Option<PathBuf>,
    tx: mpsc::Sender<Vec<u8>>,
    shared: Arc<Shared>,
    /// Most bytes waiting for the writer ([`QUEUE_BYTES`]).
    bound: usize,
}

/// What the writer thread and the submitting threads share.
struct Shared {
    /// A file opened by [`Sink::reopen`], for the writer to switch to before its next batch.
    swap: Mutex<Option<File>>,
    /// Bytes handed to the writer and not yet written: bounded by [`QUEUE_BYTES`].
    queued: AtomicUsize,
    /// Batches handed over, and batches the writer has finished (written or failed).
    sent: AtomicU64,
    done: AtomicU64,
    errors: AtomicU64,
    dropped_lines: AtomicU64,
    /// Set while writes fail, so a failing disk is reported once, not per batch.
    failing: AtomicBool,
    /// Set while batches are dropped, so a stuck destination is reported once per run.
    dropping: AtomicBool,
}

/// Most bytes waiting for the writer thread. Past it a batch is dropped and its lines
/// counted (`uringapi_access_log_dropped_lines_total`) rather than block a front-end thread
/// or grow without bound behind a destination that does not drain.
pub const QUEUE_BYTES: usize = 1 << 20;

impl Sink {
    /// Opens the destination (a file is created if needed and appended to) and starts the
    /// writer thread.
    pub fn open(dest: Destination) -> std::io::Result<Arc<Sink>> {
        Self::open_bounded(dest, QUEUE_BYTES)
    }

    /// [`Sink::open`] with a queue of at most `bound` bytes.
    fn open_bounded(dest: Destination, bound: usize) -> std::io::Result<Arc<Sink>> {
        let (path, out) = match dest {
            Destination::Stderr => (None, Out::Stderr),
            Destination::File(p) => {
                let f = open_append(&p)?;
                (Some(p), Out::File(f))
            }
        };
        let shared = Arc::new(Shared {
            swap: Mutex::new(None),
            queued: AtomicUsize::new(0),
            sent: AtomicU64::new(0),
            done: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            dropped_lines: AtomicU64::new(0),
            failing: AtomicBool::new(false),
            dropping: AtomicBool::new(false),
        });
        let (tx, rx) = mpsc::channel::<Vec<u8>>();
        let writer = shared.clone();
        let log_path = path.clone();
        std::thread::Builder::new()
            .name("uringapi-accesslog".into())
            .spawn(move || writer.run(rx, out, log_path))?;
        Ok(Arc::new(Sink {
            path,
            tx,
            shared,
            bound,
        }))
    }

    /// Hands a batch of whole lines to the writer thread; never blocks on the destination.
    /// A batch that would take the queue past [`QUEUE_BYTES`] is dropped and its lines
    /// counted ([`Sink::dropped_lines`]).
    pub fn write(&self, bytes: &[u8]) {
        if !bytes.is_empty() {
            self.submit(bytes.to_vec());
        }
    }

    fn submit(&self, batch: Vec<u8>) {
        let s = &self.shared;
        let len = batch.len();
        let room = s
            .queued
            .fetch_update(Relaxed, Relaxed, |q| {
                (q + len <= self.bound).then_some(q + len)
            })
            .is_ok();
        let batch = if room {
            s.sent.fetch_add(1, Relaxed);
            match self.tx.send(batch) {
                Ok(()) => {
                    s.dropping.store(false, Relaxed);
                    return;
                }
                // The writer thread is gone (it never exits while the sink lives): undo.
                Err(mpsc::SendError(batch)) => {
                    s.queued.fetch_sub(len, Relaxed);
                    s.done.fetch_add(1, Release);
                    batch
                }
            }
        } else {
            batch
        };
        let lines = batch.iter().filter(|&&b| b == b'\n').count() as u64;
        s.dropped_lines.fetch_add(lines, Relaxed);
        if !s.dropping.swap(true, Relaxed) {
            tracing::warn!(path = ?self.path, "the access log does not keep up (more than {} KiB waiting); dropping lines until it drains", self.bound >> 10);
        }
    }

    /// Opens the file's path again (after logrotate moved the old file away) and writes there
    /// from now on. On error the old file is kept. A no-op for stderr. Lines handed over
    /// before go to the old file, as long as the writer gets them out within a second.
    pub fn reopen(&self) -> std::io::Result<()> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let f = open_append(path)?;
        self.settle(Duration::from_secs(1));
        *self
            .shared
            .swap
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(f);
        Ok(())
    }

    /// Waits (at most `limit`) until the writer has finished every batch handed to it so
    /// far; whether it did. For shutdown and tests.
    pub fn settle(&self, limit: Duration) -> bool {
        let s = &self.shared;
        let deadline = std::time::Instant::now() + limit;
        loop {
            if s.done.load(Acquire) >= s.sent.load(Relaxed) {
                return true;
            }
            if std::time::Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Batches that could not be written since the sink was opened.
    pub fn errors(&self) -> u64 {
        self.shared.errors.load(Relaxed)
    }

    /// Lines dropped because the writer did not keep up.
    pub fn dropped_lines(&self) -> u64 {
        self.shared.dropped_lines.load(Relaxed)
    }
}

impl Shared {
    /// The writer thread: writes batches in order until the sink is dropped. Errors are
    /// counted ([`Sink::errors`]) and logged once per run of failures, never fatal.
    fn run(&self, rx: mpsc::Receiver<Vec<u8>>, mut out: Out, path: Option<PathBuf>) {
        for batch in rx {
            if let Some(f) = self
                .swap
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take()
            {
                out = Out::File(f);
            }
            let result = match &mut out {
                Out::Stderr => std::io::stderr().lock().write_all(&batch),
                Out::File(f) => f.write_all(&batch),
            };
            self.queued.fetch_sub(batch.len(), Relaxed);
            match result {
                Ok(()) => self.failing.store(false, Relaxed),
                Err(e) => {
                    self.errors.fetch_add(1, Relaxed);
                    if !self.failing.swap(true, Relaxed) {
                        tracing::warn!(error = %e, ?path, "cannot write the access log; lines are lost until it works again");
                    }
                }
            }
            // SYNC: Release pairs with `settle`'s Acquire: what this batch did (the error
            // count, the file's contents) is visible to whoever sees it done.
            self.done.fetch_add(1, Release);
        }
    }
}

fn open_append(path: &std::path::Path) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// One front-end thread's batch of lines. Flushes itself when dropped.
pub struct Buffer {
    sink: Arc<Sink>,
    buf: Vec<u8>,
}

impl Buffer {
    pub fn new(sink: Arc<Sink>) -> Self {
        Self {
            sink,
            buf: Vec::with_capacity(FLUSH_AT + 4096),
        }
    }

    /// Formats one line into the batch; hands the batch to the sink once it passes
    /// [`FLUSH_AT`].
    pub fn push(&mut self, fmt: Format, e: &Entry<'_>) {
        format(fmt, e, &mut self.buf);
        if self.buf.len() >= FLUSH_AT {
            self.flush();
        }
    }

    /// Hands whatever is batched to the sink (a periodic timer, shutdown).
    pub fn flush(&mut self) {
        if !self.buf.is_empty() {
            let batch = std::mem::replace(&mut self.buf, Vec::with_capacity(FLUSH_AT + 4096));
            self.sink.submit(batch);
        }
    }

    /// Bytes batched and not yet written.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        self.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};
    use std::path::Path;

    /// 2000-10-10 13:55:36.250 UTC, Apache's documentation example moved to UTC.
    fn example_time() -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(971_186_136_250)
    }

    fn entry() -> Entry<'static> {
        Entry {
            peer: Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7))),
            method: b"GET",
            target: b"/apache_pb.gif?a=1",
            http_minor: 1,
            status: 200,
            bytes: 2326,
            referer: Some(b"http://www.example.com/start.html"),
            user_agent: Some(b"Mozilla/4.08 [en] (Win98; I ;Nav)"),
            request_id: "5b1d3c0e9f2a4b7c",
            duration: Duration::from_micros(1_234_567),
            time: example_time(),
        }
    }

    fn line(fmt: Format, e: &Entry<'_>) -> String {
        let mut out = Vec::new();
        format(fmt, e, &mut out);
        String::from_utf8(out).expect("log lines are ASCII")
    }

    #[test]
    fn common_is_apache_clf_plus_request_id_and_microseconds() {
        assert_eq!(
            line(Format::Common, &entry()),
            "192.0.2.7 - - [10/Oct/2000:13:55:36 +0000] \"GET /apache_pb.gif?a=1 HTTP/1.1\" 200 2326 \"5b1d3c0e9f2a4b7c\" 1234567\n"
        );
    }

    #[test]
    fn combined_adds_referer_and_user_agent_before_our_fields() {
        assert_eq!(
            line(Format::Combined, &entry()),
            "192.0.2.7 - - [10/Oct/2000:13:55:36 +0000] \"GET /apache_pb.gif?a=1 HTTP/1.1\" 200 2326 \
             \"http://www.example.com/start.html\" \"Mozilla/4.08 [en] (Win98; I ;Nav)\" \"5b1d3c0e9f2a4b7c\" 1234567\n"
        );
    }

    #[test]
    fn json_has_every_key_in_order() {
        assert_eq!(
            line(Format::Json, &entry()),
            "{\"time\":\"2000-10-10T13:55:36.250Z\",\"peer\":\"192.0.2.7\",\"method\":\"GET\",\
             \"target\":\"/apache_pb.gif?a=1\",\"http_version\":\"1.1\",\"status\":200,\"bytes\":2326,\
             \"referer\":\"http://www.example.com/start.html\",\"user_agent\":\"Mozilla/4.08 [en] (Win98; I ;Nav)\",\
             \"request_id\":\"5b1d3c0e9f2a4b7c\",\"duration_ms\":1234.567}\n"
        );
    }

    #[test]
    fn missing_values_are_dashes_or_null() {
        let e = Entry {
            peer: Some(IpAddr::V6(Ipv6Addr::LOCALHOST)),
            method: b"HEAD",
            target: b"/",
            http_minor: 0,
            status: 304,
            bytes: 0,
            referer: None,
            user_agent: None,
            request_id: "",
            duration: Duration::from_nanos(999),
            time: UNIX_EPOCH,
        };
        assert_eq!(
            line(Format::Common, &e),
            "::1 - - [01/Jan/1970:00:00:00 +0000] \"HEAD / HTTP/1.0\" 304 - \"-\" 0\n"
        );
        assert_eq!(
            line(Format::Combined, &e),
            "::1 - - [01/Jan/1970:00:00:00 +0000] \"HEAD / HTTP/1.0\" 304 - \"-\" \"-\" \"-\" 0\n"
        );
        assert_eq!(
            line(Format::Json, &e),
            "{\"time\":\"1970-01-01T00:00:00.000Z\",\"peer\":\"::1\",\"method\":\"HEAD\",\"target\":\"/\",\
             \"http_version\":\"1.0\",\"status\":304,\"bytes\":0,\"referer\":null,\"user_agent\":null,\
             \"request_id\":null,\"duration_ms\":0.000}\n"
        );
    }

    #[test]
    fn ipv4_mapped_peers_are_shown_as_ipv4() {
        let e = Entry {
            peer: Some(IpAddr::V6(Ipv4Addr::new(10, 1, 2, 3).to_ipv6_mapped())),
            ..entry()
        };
        assert!(line(Format::Common, &e).starts_with("10.1.2.3 - - ["));
        assert!(line(Format::Json, &e).contains("\"peer\":\"10.1.2.3\""));
    }

    #[test]
    fn a_unix_socket_peer_is_a_dash_or_null() {
        let e = Entry {
            peer: None,
            ..entry()
        };
        assert!(line(Format::Common, &e).starts_with("- - - ["));
        assert!(line(Format::Json, &e).contains("\"peer\":null,\"method\""));
    }

    const HOSTILE_TARGET: &[u8] =
        b"/a\"b\\c\r\n127.0.0.1 - - [forged] \"GET /admin\x1b[2J\x7f\xff\xc3\xa9";

    #[test]
    fn hostile_bytes_cannot_forge_a_text_line() {
        let e = Entry {
            method: b"G\nET",
            target: HOSTILE_TARGET,
            referer: Some(b"\"-\" \"x"),
            user_agent: Some(b"ua\0\t"),
            request_id: "id\"\n",
            ..entry()
        };
        let l = line(Format::Combined, &e);
        assert_eq!(
            l,
            "192.0.2.7 - - [10/Oct/2000:13:55:36 +0000] \"G\\x0aET \
             /a\\\"b\\\\c\\x0d\\x0a127.0.0.1 - - [forged] \\\"GET /admin\\x1b[2J\\x7f\\xff\\xc3\\xa9 HTTP/1.1\" 200 2326 \
             \"\\\"-\\\" \\\"x\" \"ua\\x00\\x09\" \"id\\\"\\x0a\" 1234567\n"
        );
        // One line; every quote inside a field is escaped, so the fields split as Apache's.
        assert_eq!(l.matches('\n').count(), 1);
        assert!(l.bytes().all(|b| (0x20..0x7f).contains(&b) || b == b'\n'));
        let unescaped_quotes = l
            .as_bytes()
            .windows(2)
            .filter(|w| w[1] == b'"' && w[0] != b'\\')
            .count();
        assert_eq!(
            unescaped_quotes,
            2 * 4,
            "request, referer, agent, id: four quoted fields"
        );
    }

    /// Undoes `escape` for the JSON format, after JSON decoding: the text rule maps back to
    /// the exact bytes.
    fn unescape_text(s: &str) -> Vec<u8> {
        let b = s.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'\\' {
                match b[i + 1] {
                    b'\\' => {
                        out.push(b'\\');
                        i += 2;
                    }
                    b'x' => {
                        let hex = std::str::from_utf8(&b[i + 2..i + 4]).unwrap();
                        out.push(u8::from_str_radix(hex, 16).unwrap());
                        i += 4;
                    }
                    c => panic!("unexpected escape \\{}", c as char),
                }
            } else {
                out.push(b[i]);
                i += 1;
            }
        }
        out
    }

    /// A minimal JSON string decoder (the escapes JSON allows), to check what a JSON reader
    /// gets back.
    fn json_decode_string(s: &str) -> String {
        let mut out = String::new();
        let mut chars = s.chars();
        while let Some(c) = chars.next() {
            assert!(c >= ' ', "raw control character in a JSON string");
            if c != '\\' {
                out.push(c);
                continue;
            }
            match chars.next().unwrap() {
                '"' => out.push('"'),
                '\\' => out.push('\\'),
                '/' => out.push('/'),
                'n' => out.push('\n'),
                c => panic!("escape \\{c} not expected"),
            }
        }
        out
    }

    #[test]
    fn hostile_bytes_in_json_stay_inside_their_string_and_round_trip() {
        let e = Entry {
            target: HOSTILE_TARGET,
            user_agent: Some(b"x\",\"status\":1,\"y\":\""),
            ..entry()
        };
        let l = line(Format::Json, &e);
        assert_eq!(l.matches('\n').count(), 1);
        assert!(l.bytes().all(|b| (0x20..0x7f).contains(&b) || b == b'\n'));
        let target_json = l.split("\"target\":\"").nth(1).unwrap();
        // The string ends at the first quote not preceded by an odd run of backslashes.
        let bytes = target_json.as_bytes();
        let mut end = 0;
        let mut backslashes = 0;
        for (i, &b) in bytes.iter().enumerate() {
            if b == b'"' && backslashes % 2 == 0 {
                end = i;
                break;
            }
            backslashes = if b == b'\\' { backslashes + 1 } else { 0 };
        }
        let decoded = json_decode_string(&target_json[..end]);
        assert_eq!(unescape_text(&decoded), HOSTILE_TARGET);
        assert!(
            l.contains(",\"http_version\":\"1.1\",\"status\":200,"),
            "status not forged: {l}"
        );
        assert!(
            l.contains("\"user_agent\":\"x\\\",\\\"status\\\":1,\\\"y\\\":\\\"\""),
            "{l}"
        );
    }

    #[test]
    fn times_show_leap_days_millis_and_never_before_1970() {
        let leap = Entry {
            time: UNIX_EPOCH + Duration::from_millis(951_868_799_999),
            ..entry()
        };
        assert!(line(Format::Common, &leap).contains(" [29/Feb/2000:23:59:59 +0000] "));
        assert!(line(Format::Json, &leap).starts_with("{\"time\":\"2000-02-29T23:59:59.999Z\","));
        let early = Entry {
            time: UNIX_EPOCH - Duration::from_secs(5),
            ..entry()
        };
        assert!(line(Format::Common, &early).contains(" [01/Jan/1970:00:00:00 +0000] "));
        assert!(line(Format::Json, &early).starts_with("{\"time\":\"1970-01-01T00:00:00.000Z\","));
    }

    /// A fresh directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> Self {
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos();
            let p =
                std::env::temp_dir().join(format!("uringapi-{tag}-{}-{nanos}", std::process::id()));
            std::fs::create_dir(&p).unwrap();
            TempDir(p)
        }
        fn path(&self, name: &str) -> PathBuf {
            self.0.join(name)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn read(p: &Path) -> String {
        std::fs::read_to_string(p).unwrap()
    }

    #[test]
    fn reopen_after_rename_sends_new_lines_to_the_new_file() {
        let dir = TempDir::new("accesslog-reopen");
        let (log, rotated) = (dir.path("access.log"), dir.path("access.log.1"));
        std::fs::write(&log, "existing\n").unwrap();
        let sink = Sink::open(Destination::File(log.clone())).unwrap();
        let mut buf = Buffer::new(sink.clone());
        let e = entry();
        buf.push(
            Format::Common,
            &Entry {
                target: b"/one",
                ..e
            },
        );
        buf.flush();
        std::fs::rename(&log, &rotated).unwrap(); // logrotate's move
        buf.push(
            Format::Common,
            &Entry {
                target: b"/two",
                ..e
            },
        );
        buf.flush(); // still the old file: it is open
        sink.reopen().unwrap(); // SIGUSR1
        buf.push(
            Format::Common,
            &Entry {
                target: b"/three",
                ..e
            },
        );
        drop(buf); // flushes
        assert!(sink.settle(Duration::from_secs(60)));

        let old = read(&rotated);
        assert!(
            old.starts_with("existing\n"),
            "opened for append, not truncated"
        );
        assert!(old.contains("GET /one HTTP/1.1") && old.contains("GET /two HTTP/1.1"));
        assert!(!old.contains("/three"));
        let new = read(&log);
        assert_eq!(new.lines().count(), 1);
        assert!(new.contains("GET /three HTTP/1.1"), "{new}");
        assert_eq!(sink.errors(), 0);
    }

    #[test]
    fn reopen_on_stderr_is_a_no_op_and_a_failed_reopen_keeps_the_old_file() {
        Sink::open(Destination::Stderr).unwrap().reopen().unwrap();
        let dir = TempDir::new("accesslog-reopen-fail");
        let log = dir.path("access.log");
        let sink = Sink::open(Destination::File(log.clone())).unwrap();
        let moved = dir.path("elsewhere.log");
        std::fs::rename(&log, &moved).unwrap();
        std::fs::create_dir(&log).unwrap(); // the path is now a directory: cannot open it
        assert!(sink.reopen().is_err());
        sink.write(b"still here\n");
        assert!(sink.settle(Duration::from_secs(60)));
        assert_eq!(read(&moved), "still here\n");
    }

    #[test]
    fn open_fails_for_a_missing_directory() {
        let dir = TempDir::new("accesslog-missing");
        assert!(Sink::open(Destination::File(dir.path("no/such/dir/access.log"))).is_err());
    }

    #[test]
    fn buffers_flush_at_32_kib_and_threads_never_interleave_lines() {
        let dir = TempDir::new("accesslog-threads");
        let log = dir.path("access.log");
        // Unbounded here: this test is about batching, not about a slow destination.
        let sink = Sink::open_bounded(Destination::File(log.clone()), usize::MAX / 2).unwrap();
        let (threads, per_thread) = (4, 3000);
        std::thread::scope(|s| {
            for t in 0..threads {
                let sink = sink.clone();
                s.spawn(move || {
                    let mut buf = Buffer::new(sink);
                    let mut flushed_by_push = false;
                    for i in 0..per_thread {
                        let target = format!("/t{t}/{i}");
                        let before = buf.pending();
                        buf.push(
                            Format::Json,
                            &Entry {
                                target: target.as_bytes(),
                                ..entry()
                            },
                        );
                        assert!(
                            buf.pending() < FLUSH_AT,
                            "push leaves at most one batch's worth"
                        );
                        flushed_by_push |= buf.pending() < before;
                    }
                    assert!(flushed_by_push, "a batch past 32 KiB is written by push");
                });
            }
        });
        assert!(sink.settle(Duration::from_secs(60)));
        let text = read(&log);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), threads * per_thread);
        let template = line(
            Format::Json,
            &Entry {
                target: b"/T",
                ..entry()
            },
        );
        let (head, tail) = template.trim_end().split_once("/T").unwrap();
        for l in &lines {
            let mid = l.strip_prefix(head).and_then(|r| r.strip_suffix(tail));
            assert!(mid.is_some_and(|m| m.starts_with("/t")), "torn line {l:?}");
        }
    }

    #[test]
    fn write_errors_are_counted_not_fatal() {
        // /dev/full accepts the open and fails every write with ENOSPC.
        let sink = Sink::open(Destination::File(PathBuf::from("/dev/full"))).unwrap();
        let mut buf = Buffer::new(sink.clone());
        buf.push(Format::Common, &entry());
        buf.flush();
        buf.push(Format::Common, &entry());
        buf.flush();
        assert!(sink.settle(Duration::from_secs(60)));
        assert_eq!(sink.errors(), 2);
        assert_eq!(
            buf.pending(),
            0,
            "a failed batch is dropped, not retried forever"
        );
    }

    #[test]
    fn a_destination_that_does_not_drain_drops_lines_instead_of_blocking() {
        use std::os::unix::fs::OpenOptionsExt as _;
        let dir = TempDir::new("accesslog-fifo");
        let fifo = dir.path("access.fifo");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        // A reader that never reads: the pipe fills (64 KiB), then the writer blocks.
        let reader = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&fifo)
            .unwrap();
        let sink = Sink::open_bounded(Destination::File(fifo), 256 << 10).unwrap();
        let line = [b"x".repeat(1023), b"\n".to_vec()].concat();
        let batch = line.repeat(16); // 16 lines, 16 KiB
                                     // 100 batches (1.6 MiB) into a 64 KiB pipe plus a 256 KiB queue: every call
                                     // returns (a blocking write would hang this test), and the excess is counted.
        for _ in 0..100 {
            sink.write(&batch);
        }
        let dropped = sink.dropped_lines();
        // At most 4 batches fit the pipe and 16 the queue; leave room for a larger pipe.
        assert!(dropped >= 16 * 50, "dropped {dropped}");
        assert_eq!(dropped % 16, 0, "whole batches are dropped");
        drop(reader); // the writer gets EPIPE and moves on
        assert!(sink.settle(Duration::from_secs(60)));
    }
}
