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
//!   `request_id` (those three `null` when absent), `duration_ms` (a number, exact to the
//!   microsecond: `1234.567`, `1.5`, `0.0`). Written by serde_json from a borrowed struct
//!   into the thread's buffer: no allocation per line, and the JSON escaping is
//!   serde_json's.
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
//! opened with `O_APPEND`. Write errors are counted (their lines as dropped) and logged
//! once per run of failures, with the lines lost when writing works again, never fatal: a
//! full disk must not take the server down. [`Sink::reopen`] (SIGUSR1) opens
//! the path again after logrotate moved the old file away.

use std::fmt;
use std::io::Write as _;
use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Serialize, Serializer};

mod sink;

pub use sink::{settle_log, Buffer, Destination, LogWriter, Sink, QUEUE_BYTES};

/// A batch is handed to the sink once it holds this many bytes.
pub const FLUSH_AT: usize = 32 * 1024;

/// `--access-log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
    escape(e.method, out);
    out.push(b' ');
    escape(e.target, out);
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
            escape(v, out);
            out.push(b'"');
        }
        None => out.extend_from_slice(b"\"-\""),
    }
}

// PERF: 652 ns a line (criterion 622–684 ns) through serde_json against 568 ns (501–654 ns)
// for the hand-written writer it replaced: criterion finds no significant change (p = 0.58)
// while the untouched `common` line moved 8 % in the same pair of runs (`cargo bench -p
// uringapi-benches --bench access_log`, `--save-baseline` then `--baseline`, 2026-12-04,
// two processes one after the other on a 2-core machine shared with other builds).
fn json(e: &Entry<'_>, out: &mut Vec<u8>) {
    let id = Some(e.request_id.as_bytes()).filter(|id| !id.is_empty());
    let line = JsonLine {
        time: humantime::format_rfc3339_millis(logged_time(e.time)),
        peer: e.peer.map(|ip| ip.to_canonical()),
        method: Escaped(e.method),
        target: Escaped(e.target),
        http_version: version(e.http_minor),
        status: e.status,
        bytes: e.bytes,
        referer: e.referer.map(Escaped),
        user_agent: e.user_agent.map(Escaped),
        request_id: id.map(Escaped),
        // Whole microseconds over 1000: the nearest double to the exact decimal, which
        // serde_json writes back as that decimal (`1234.567`, `0.0`).
        duration_ms: e.duration.as_micros() as f64 / 1000.0,
    };
    // Writing to a Vec cannot fail, and every field serializes.
    let _ = serde_json::to_writer(&mut *out, &line);
    out.push(b'\n');
}

/// One JSON line: the keys in this order, `null` for a `None`.
#[derive(Serialize)]
struct JsonLine<'a> {
    #[serde(serialize_with = "display")]
    time: humantime::Rfc3339Timestamp,
    peer: Option<IpAddr>,
    method: Escaped<'a>,
    target: Escaped<'a>,
    http_version: &'static str,
    status: u16,
    bytes: u64,
    referer: Option<Escaped<'a>>,
    user_agent: Option<Escaped<'a>>,
    request_id: Option<Escaped<'a>>,
    duration_ms: f64,
}

fn display<T: fmt::Display, S: Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

/// Client bytes by the text rule in the module doc, except that a double quote stays as it
/// is: serde_json then JSON-encodes the quote and every backslash. Streamed into the line
/// (`collect_str`), never collected into a String.
struct Escaped<'a>(&'a [u8]);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0;
        while !rest.is_empty() {
            let plain = rest
                .iter()
                .position(|&b| b == b'\\' || !(0x20..=0x7e).contains(&b))
                .unwrap_or(rest.len());
            // Printable ASCII is UTF-8.
            f.write_str(std::str::from_utf8(&rest[..plain]).map_err(|_| fmt::Error)?)?;
            match rest.get(plain) {
                Some(b'\\') => f.write_str("\\\\")?,
                Some(b) => write!(f, "\\x{b:02x}")?,
                None => break,
            }
            rest = &rest[plain + 1..];
        }
        Ok(())
    }
}

impl Serialize for Escaped<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Writes client bytes by the rule in the module doc, inside `"…"` of a text format.
fn escape(bytes: &[u8], out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for &b in bytes {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            0x20..=0x7e => out.push(b),
            _ => {
                out.push(b'\\');
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    /// 2000-10-10 13:55:36.250 UTC, Apache's documentation example moved to UTC.
    pub(super) fn example_time() -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(971_186_136_250)
    }

    pub(super) fn entry() -> Entry<'static> {
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

    pub(super) fn line(fmt: Format, e: &Entry<'_>) -> String {
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
             \"request_id\":null,\"duration_ms\":0.0}\n"
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
        // What a JSON reader gets back maps to the exact bytes by the text rule.
        let v: serde_json::Value = serde_json::from_str(l.trim_end()).expect("valid JSON");
        assert_eq!(unescape_text(v["target"].as_str().unwrap()), HOSTILE_TARGET);
        assert_eq!(v["status"], 200, "status not forged");
        assert_eq!(v["user_agent"], "x\",\"status\":1,\"y\":\"");
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
    fn duration_ms_is_exact_to_the_microsecond() {
        for (us, shown) in [
            (0, "0.0"),
            (1, "0.001"),
            (999, "0.999"),
            (1_500, "1.5"),
            (2_000, "2.0"),
            (86_400_000_001, "86400000.001"),
        ] {
            let e = Entry {
                duration: Duration::from_micros(us),
                ..entry()
            };
            let l = line(Format::Json, &e);
            assert!(
                l.ends_with(&format!(",\"duration_ms\":{shown}}}\n")),
                "{us} µs: {l}"
            );
        }
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
}
