//! The command line's names for the library's enums (`--io-driver uring`, `--http 2`), and the
//! parsers of values only the command line has (`--header`, `--uds-perms`).
//!
//! Each enum here mirrors one of `uringapi_server`'s, which knows nothing of clap; the two
//! `From`s are exhaustive matches, so a variant added on either side fails to compile until
//! the other has it too. Doc comments on variants are the `--help` text of the values.

use uringapi_server::accesslog::Format;
use uringapi_server::config::Sched;
use uringapi_server::config::{Lifespan, LogLevel, WsMode};
use uringapi_server::frontend::IoDriver;
use uringapi_server::h2::HttpMode;

/// Declares `$cli`, a `clap::ValueEnum` with the variants of the library's `$lib`, and the
/// conversions both ways.
macro_rules! mirror {
    ($(#[$meta:meta])* $cli:ident => $lib:ident { $($(#[$vmeta:meta])* $v:ident,)* }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
        pub enum $cli {
            $($(#[$vmeta])* $v,)*
        }

        impl From<$cli> for $lib {
            fn from(v: $cli) -> Self {
                match v {
                    $($cli::$v => $lib::$v,)*
                }
            }
        }

        impl From<$lib> for $cli {
            fn from(v: $lib) -> Self {
                match v {
                    $($lib::$v => $cli::$v,)*
                }
            }
        }
    };
}

mirror! {
    IoDriverArg => IoDriver {
        /// io_uring, falling back to epoll with a warning when the kernel refuses it.
        Auto,
        Uring,
        Epoll,
    }
}

mirror! {
    SchedArg => Sched {
        /// SCHED_BATCH: a thread that wakes up does not preempt the one running on its CPU; it
        /// runs when that one sleeps or its time slice ends, and finds more work waiting.
        Batch,
        /// SCHED_OTHER, the kernel's default: a thread that wakes up may preempt at once.
        Normal,
    }
}

mirror! {
    HttpModeArg => HttpMode {
        /// HTTP/1.1, and HTTP/2 by ALPN (TLS) or by the client preface (h2c prior knowledge).
        Auto,
        /// HTTP/1.1 only (TLS offers only http/1.1 by ALPN).
        #[value(name = "1")]
        One,
        /// HTTP/2 only: plain connections must start with the preface, TLS offers only h2.
        #[value(name = "2")]
        Two,
    }
}

mirror! {
    FormatArg => Format {
        Common,
        Combined,
        Json,
    }
}

mirror! {
    LogLevelArg => LogLevel {
        Critical,
        Error,
        Warning,
        Info,
        Debug,
        Trace,
    }
}

mirror! {
    LifespanArg => Lifespan {
        Auto,
        On,
        Off,
    }
}

mirror! {
    WsModeArg => WsMode {
        Auto,
        Off,
    }
}

/// Parses `--header NAME:VALUE`: the name must be an HTTP token (RFC 9110 §5.6.2), the
/// value printable without CR, LF or NUL.
pub fn parse_header(s: &str) -> Result<(String, String), String> {
    let (name, value) = s
        .split_once(':')
        .ok_or_else(|| format!("{s:?} is not NAME:VALUE"))?;
    let name = name.trim();
    let tchar = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if name.is_empty() || !name.bytes().all(tchar) {
        return Err(format!("{name:?} is not a valid header name"));
    }
    let value = value.trim();
    if value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
        return Err(format!("the value of {name:?} contains CR, LF or NUL"));
    }
    Ok((name.to_string(), value.to_string()))
}

/// Seconds (and `--recycle-jitter`'s fraction): a finite number from 0 up. `inf`, `nan` and
/// negative numbers, which `f64` parses, are refused here rather than meaning something odd.
pub fn parse_non_negative(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(format!(
            "{s:?} is not a finite number from 0 up (e.g. 30 or 0.5)"
        )),
    }
}

/// `--root-path`: empty, or a path that starts with `/` (`/api`), as the ASGI spec's
/// `root_path` is a prefix of `path`. `api` would make every path `api/...`, which no
/// router matches (uvicorn takes it and the app answers 404 to everything).
pub fn parse_root_path(s: &str) -> Result<String, String> {
    if !(s.is_empty() || s.starts_with('/')) {
        return Err(format!("{s:?} does not start with '/' (e.g. /{s})"));
    }
    if s.bytes()
        .any(|b| b.is_ascii_control() || b == b'?' || b == b'#')
    {
        return Err(format!(
            "{s:?} is not a path: it has a control character, '?' or '#'"
        ));
    }
    Ok(s.to_string())
}

/// `--health-path`: the raw path of a request line (compared byte for byte, no query):
/// `/` first, then no space, control character, `?` or `#`. `healthz` or `` would never
/// match a request, so the load balancer's check would reach the app and fail there.
pub fn parse_health_path(s: &str) -> Result<String, String> {
    if s.is_empty() {
        return Err("an empty path never matches a request (e.g. /healthz)".into());
    }
    if s.contains(' ') {
        return Err(format!(
            "{s:?} has a space, which no request line can carry"
        ));
    }
    parse_root_path(s)
}

/// `--uds-perms`: an octal file mode (`660`, `0660`, `0o660`), at most `777`.
pub fn parse_octal_mode(s: &str) -> Result<u32, String> {
    let digits = s.strip_prefix("0o").unwrap_or(s);
    match u32::from_str_radix(digits, 8) {
        Ok(mode) if mode <= 0o777 && !digits.is_empty() => Ok(mode),
        _ => Err(format!(
            "{s:?} is not an octal file mode from 000 to 777 (e.g. 660)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_finite_and_not_negative() {
        assert_eq!(parse_non_negative("30"), Ok(30.0));
        assert_eq!(parse_non_negative("0.5"), Ok(0.5));
        assert_eq!(parse_non_negative("0"), Ok(0.0));
        for bad in ["inf", "-inf", "nan", "NaN", "1e400", "-1", "", "soon"] {
            assert!(parse_non_negative(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn header_flags_are_checked() {
        assert_eq!(
            parse_header("X-Frame-Options: DENY"),
            Ok(("X-Frame-Options".into(), "DENY".into()))
        );
        assert!(parse_header("no colon").is_err());
        assert!(parse_header("bad name: x").is_err());
        assert!(parse_header("X-A: a\r\nInjected: 1").is_err());
    }

    #[test]
    fn health_paths_are_request_paths() {
        assert_eq!(parse_health_path("/healthz"), Ok("/healthz".into()));
        assert!(parse_health_path("healthz")
            .unwrap_err()
            .contains("(e.g. /healthz)"));
        for bad in ["", "/a b", "/h?x=1", "/h#x", "/h\x01"] {
            assert!(parse_health_path(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn root_paths_start_with_a_slash() {
        assert_eq!(parse_root_path(""), Ok(String::new()));
        assert_eq!(parse_root_path("/api/v1"), Ok("/api/v1".into()));
        let err = parse_root_path("api").unwrap_err();
        assert!(err.contains("(e.g. /api)"), "{err}");
        for bad in ["/api?x=1", "/a#b", "/a\nb", "/a\tb"] {
            assert!(parse_root_path(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn octal_modes_are_checked() {
        assert_eq!(parse_octal_mode("660"), Ok(0o660));
        assert_eq!(parse_octal_mode("0o600"), Ok(0o600));
        assert!(parse_octal_mode("999").is_err());
        assert!(parse_octal_mode("1000").is_err());
        assert!(parse_octal_mode("").is_err());
    }
}
