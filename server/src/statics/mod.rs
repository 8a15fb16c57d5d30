//! Native routes: `--static-mount PREFIX=DIR` files and the `--health-path` route, answered
//! by the front end without a trip through a Python worker, over HTTP/1.1 and HTTP/2 alike.
//!
//! This file decides *what* to send for a file (which file, which status, which headers);
//! `route.rs` picks the route and keeps the per-thread cache of small files; each protocol
//! sends the reply (HTTP/1.1: `http1/conn/native.rs`, HTTP/2: `h2/native.rs`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

mod route;

pub use route::{reply, route, CachedFile, Native, Payload, Reply};

/// One `--static-mount`: requests under `prefix` are files under `root`.
#[derive(Debug, Clone)]
pub struct Mount {
    /// URL path prefix, `/`-separated, without a trailing `/` (`/static`).
    pub prefix: String,
    /// The directory, made absolute and free of symlinks at start-up.
    pub root: PathBuf,
    /// The directory, opened once: files are opened beneath it.
    dir: Arc<std::fs::File>,
}

impl PartialEq for Mount {
    fn eq(&self, other: &Self) -> bool {
        self.prefix == other.prefix && self.root == other.root
    }
}

/// Parses `PREFIX=DIR` (`/static=./public`). The directory must exist.
pub fn parse_mount(s: &str) -> Result<Mount, String> {
    let (prefix, dir) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not PREFIX=DIR (e.g. /static=./public)"))?;
    if !prefix.starts_with('/') || prefix.contains(['?', '#', '%']) {
        return Err(format!(
            "mount prefix {prefix:?} must be a plain path starting with /"
        ));
    }
    let root = std::fs::canonicalize(dir)
        .map_err(|e| format!("cannot use {dir:?} as a static directory: {e}"))?;
    if !root.is_dir() {
        return Err(format!("{dir:?} is not a directory"));
    }
    let handle = std::fs::File::open(&root)
        .map_err(|e| format!("cannot open {dir:?} as a static directory: {e}"))?;
    Ok(Mount {
        prefix: prefix.trim_end_matches('/').to_string(),
        root,
        dir: Arc::new(handle),
    })
}

/// What a native route answers.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    /// Send `len` bytes of `path` from `start`, with `status` (200 or 206) and headers.
    File {
        path: PathBuf,
        status: u16,
        start: u64,
        len: u64,
        headers: Vec<(&'static str, String)>,
    },
    /// A body-less answer (304, 416) with these headers.
    Empty {
        status: u16,
        headers: Vec<(&'static str, String)>,
    },
}

/// The mount a raw request path falls under, and the rest of the path after its prefix.
pub fn find<'m, 'p>(mounts: &'m [Mount], path: &'p [u8]) -> Option<(&'m Mount, &'p [u8])> {
    mounts.iter().find_map(|m| {
        let rest = path.strip_prefix(m.prefix.as_bytes())?;
        (rest.is_empty() || rest.starts_with(b"/")).then_some((m, rest))
    })
}

/// Opens the file the rest of a request path names under the mount's root, refusing
/// anything that could leave it: `..` and `.` segments, encoded slashes and backslashes,
/// NUL, symlinks that resolve outside the root, and absolute symlinks (the kernel checks
/// those at open time).
/// Returns the file and its path relative to the root (for its content type). `None`: not
/// found (404, telling nothing).
pub fn open(mount: &Mount, rest: &[u8]) -> Option<(std::fs::File, PathBuf)> {
    let decoded = percent_decode(rest)?;
    let mut rel = Vec::with_capacity(decoded.len());
    for seg in decoded.split(|&b| b == b'/') {
        match seg {
            b"" => continue,
            b"." | b".." => return None,
            s if s.contains(&0) || s.contains(&b'\\') => return None,
            s => {
                if !rel.is_empty() {
                    rel.push(b'/');
                }
                rel.extend_from_slice(s);
            }
        }
    }
    if rel.is_empty() {
        return None;
    }
    let path = PathBuf::from(std::str::from_utf8(&rel).ok()?);
    let c = std::ffi::CString::new(rel).ok()?;
    match crate::sys::open_beneath(&*mount.dir, &c) {
        Ok(f) => Some((f, path)),
        // Kernels before 5.6: resolve by hand, following symlinks only inside the root.
        Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => {
            let real = std::fs::canonicalize(mount.root.join(&path)).ok()?;
            use std::os::unix::fs::OpenOptionsExt as _;
            let f = real.starts_with(&mount.root).then(|| {
                std::fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_NONBLOCK)
                    .open(&real)
                    .ok()
            })??;
            crate::sys::regular_file(&f).ok()?;
            Some((f, path))
        }
        Err(_) => None,
    }
}

/// `%XX` decoding of a path; `None` for a bad escape (RFC 3986 §2.1: `%` and exactly two
/// hex digits) or an encoded `/` (a segment must not hide a separator).
fn percent_decode(raw: &[u8]) -> Option<Vec<u8>> {
    for (i, _) in raw.iter().enumerate().filter(|&(_, &b)| b == b'%') {
        let hex = raw.get(i + 1..i + 3)?;
        if !hex.iter().all(u8::is_ascii_hexdigit) || hex.eq_ignore_ascii_case(b"2f") {
            return None;
        }
    }
    Some(percent_encoding::percent_decode(raw).collect())
}

/// What the request asks beyond the file itself.
#[derive(Debug, Default, Clone, Copy)]
pub struct Conditions<'a> {
    pub if_none_match: Option<&'a [u8]>,
    pub if_modified_since: Option<&'a [u8]>,
    pub range: Option<&'a [u8]>,
    pub if_range: Option<&'a [u8]>,
}

/// Decides the answer for a regular file of `size` bytes last modified at `mtime`.
pub fn answer(path: PathBuf, size: u64, mtime: SystemTime, cond: Conditions<'_>) -> Answer {
    let since_epoch = mtime.duration_since(UNIX_EPOCH).unwrap_or_default();
    // A strong validator from what changes when the file does (as Starlette's, in spirit).
    let etag = format!("\"{:x}-{:x}\"", since_epoch.as_nanos(), size);
    // RFC 9110 §5.6.7 IMF-fixdate, whole seconds.
    let last_modified =
        httpdate::fmt_http_date(UNIX_EPOCH + std::time::Duration::from_secs(since_epoch.as_secs()));
    let mut headers = vec![
        ("etag", etag.clone()),
        ("last-modified", last_modified.clone()),
        ("accept-ranges", "bytes".to_string()),
    ];
    // RFC 9110 §13.2.2: If-None-Match first; If-Modified-Since only without it. The date is
    // compared as the exact string we sent (what caches send back), not parsed.
    let not_modified = match (cond.if_none_match, cond.if_modified_since) {
        (Some(inm), _) => etag_list_matches(inm, &etag),
        (None, Some(ims)) => ims.trim_ascii() == last_modified.as_bytes(),
        (None, None) => false,
    };
    if not_modified {
        return Answer::Empty {
            status: 304,
            headers,
        };
    }
    headers.push(("content-type", content_type(&path).to_string()));
    // RFC 9110 §13.1.5: a Range with a stale If-Range gets the whole file.
    let range_ok = cond
        .if_range
        .is_none_or(|v| v.trim_ascii() == etag.as_bytes());
    if let (Some(range), true) = (cond.range, range_ok) {
        match parse_range(range, size) {
            Range::Whole => {}
            Range::Part(start, end) => {
                headers.push(("content-range", format!("bytes {start}-{end}/{size}")));
                return Answer::File {
                    path,
                    status: 206,
                    start,
                    len: end - start + 1,
                    headers,
                };
            }
            Range::Unsatisfiable => {
                headers.retain(|(k, _)| *k != "content-type");
                headers.push(("content-range", format!("bytes */{size}")));
                return Answer::Empty {
                    status: 416,
                    headers,
                };
            }
        }
    }
    Answer::File {
        path,
        status: 200,
        start: 0,
        len: size,
        headers,
    }
}

fn etag_list_matches(list: &[u8], etag: &str) -> bool {
    let list = list.trim_ascii();
    list == b"*"
        || list.split(|&b| b == b',').any(|t| {
            let t = t.trim_ascii();
            // Weak comparison (RFC 9110 §8.8.3.2) for If-None-Match.
            t.strip_prefix(b"W/").unwrap_or(t) == etag.as_bytes()
        })
}

#[derive(Debug, PartialEq, Eq)]
enum Range {
    /// No usable range (absent, several ranges, another unit): send the whole file.
    Whole,
    /// Inclusive byte positions.
    Part(u64, u64),
    /// RFC 9110 §15.5.17: 416.
    Unsatisfiable,
}

/// One `bytes=` range (RFC 9110 §14.1.2). Several ranges would need multipart/byteranges;
/// a server may ignore Range, so those get the whole file.
fn parse_range(value: &[u8], size: u64) -> Range {
    let Some(spec) = value.trim_ascii().strip_prefix(b"bytes=") else {
        return Range::Whole;
    };
    if spec.contains(&b',') {
        return Range::Whole;
    }
    let Ok(spec) = std::str::from_utf8(spec) else {
        return Range::Whole;
    };
    let Some((a, b)) = spec.trim().split_once('-') else {
        return Range::Whole;
    };
    let num = |s: &str| -> Option<u64> {
        (!s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    match (a.is_empty(), num(a), num(b)) {
        // bytes=-N: the last N bytes.
        (true, _, Some(n)) if n > 0 && size > 0 => Range::Part(size.saturating_sub(n), size - 1),
        (true, _, _) => Range::Unsatisfiable,
        (false, Some(start), end) if b.is_empty() || end.is_some() => {
            if start >= size {
                return Range::Unsatisfiable;
            }
            let end = end.unwrap_or(u64::MAX).min(size - 1);
            if end < start {
                return Range::Whole;
            }
            Range::Part(start, end)
        }
        _ => Range::Whole,
    }
}

/// Content-Type by extension, for the types a web app usually serves.
pub fn content_type(path: &Path) -> &'static str {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match ext.as_deref() {
        Some("html" | "htm") => "text/html; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("json" | "map") => "application/json",
        Some("txt") => "text/plain; charset=utf-8",
        Some("xml") => "application/xml",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("gif") => "image/gif",
        Some("webp") => "image/webp",
        Some("avif") => "image/avif",
        Some("ico") => "image/vnd.microsoft.icon",
        Some("woff") => "font/woff",
        Some("woff2") => "font/woff2",
        Some("wasm") => "application/wasm",
        Some("pdf") => "application/pdf",
        Some("mp4") => "video/mp4",
        Some("webm") => "video/webm",
        Some("mp3") => "audio/mpeg",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> (tempdir::Dir, Mount) {
        let d = tempdir::Dir::new();
        std::fs::create_dir(d.0.join("public")).unwrap();
        std::fs::write(d.0.join("public/a.txt"), b"hello").unwrap();
        std::fs::write(d.0.join("secret"), b"no").unwrap();
        std::os::unix::fs::symlink(d.0.join("secret"), d.0.join("public/out")).unwrap();
        std::os::unix::fs::symlink("a.txt", d.0.join("public/in")).unwrap();
        std::os::unix::fs::symlink(d.0.join("public/a.txt"), d.0.join("public/abs")).unwrap();
        let m = parse_mount(&format!("/static/={}", d.0.join("public").display())).unwrap();
        (d, m)
    }

    /// A throwaway directory (std only).
    mod tempdir {
        pub struct Dir(pub std::path::PathBuf);
        impl Dir {
            pub fn new() -> Self {
                use std::sync::atomic::{AtomicU32, Ordering};
                static N: AtomicU32 = AtomicU32::new(0);
                let p = std::env::temp_dir().join(format!(
                    "uringapi-static-{}-{}",
                    std::process::id(),
                    N.fetch_add(1, Ordering::Relaxed)
                ));
                std::fs::create_dir_all(&p).unwrap();
                Self(p)
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    #[test]
    fn percent_escapes_are_exactly_two_hex_digits_and_never_a_slash() {
        assert_eq!(
            percent_decode(b"/a%20b%e2%82%ac").as_deref(),
            Some("/a b€".as_bytes())
        );
        for bad in [&b"/%+F"[..], b"/%-1", b"/%2", b"/%zz", b"/%2F", b"/a%2fb"] {
            assert_eq!(
                percent_decode(bad),
                None,
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn mounts_match_whole_segments() {
        let (_d, m) = tree();
        assert_eq!(m.prefix, "/static");
        let mounts = [m];
        assert!(find(&mounts, b"/static/a.txt").is_some());
        assert!(find(&mounts, b"/static").is_some());
        assert!(find(&mounts, b"/staticky").is_none());
        assert!(find(&mounts, b"/api").is_none());
        assert!(parse_mount("static=.").is_err());
        assert!(parse_mount("/s=/no/such/dir").is_err());
    }

    #[test]
    fn paths_cannot_leave_the_root() {
        let (_d, m) = tree();
        assert!(open(&m, b"/a.txt").is_some());
        assert!(open(&m, b"/%61.txt").is_some(), "escapes are decoded");
        assert!(
            open(&m, b"/in").is_some(),
            "a relative symlink inside the root is fine"
        );
        for bad in [
            &b"/../secret"[..],
            b"/%2e%2e/secret",
            b"/..%2fsecret",
            b"/a.txt%00",
            b"/out",
            b"/abs", // absolute symlinks are refused, even to a file inside the root
            b"/..\\secret",
            b"/%zz",
            b"/missing",
        ] {
            assert!(open(&m, bad).is_none(), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn ranges() {
        assert_eq!(parse_range(b"bytes=0-4", 10), Range::Part(0, 4));
        assert_eq!(parse_range(b"bytes=5-", 10), Range::Part(5, 9));
        assert_eq!(parse_range(b"bytes=-3", 10), Range::Part(7, 9));
        assert_eq!(parse_range(b"bytes=-30", 10), Range::Part(0, 9));
        assert_eq!(parse_range(b"bytes=3-100", 10), Range::Part(3, 9));
        assert_eq!(parse_range(b"bytes=10-", 10), Range::Unsatisfiable);
        assert_eq!(parse_range(b"bytes=-0", 10), Range::Unsatisfiable);
        assert_eq!(parse_range(b"bytes=0-1,3-4", 10), Range::Whole);
        assert_eq!(parse_range(b"items=0-1", 10), Range::Whole);
        assert_eq!(parse_range(b"bytes=5-2", 10), Range::Whole);
        assert_eq!(parse_range(b"bytes=x-2", 10), Range::Whole);
    }

    #[test]
    fn conditional_answers() {
        let t = UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
        let path = PathBuf::from("/x/a.css");
        let full = answer(path.clone(), 10, t, Conditions::default());
        let Answer::File {
            status: 200,
            headers,
            len: 10,
            ..
        } = &full
        else {
            panic!("{full:?}")
        };
        let etag = headers
            .iter()
            .find(|(k, _)| *k == "etag")
            .unwrap()
            .1
            .clone();
        let lm = headers
            .iter()
            .find(|(k, _)| *k == "last-modified")
            .unwrap()
            .1
            .clone();
        assert_eq!(lm, "Tue, 14 Nov 2023 22:13:20 GMT");
        assert!(headers.contains(&("content-type", "text/css; charset=utf-8".into())));
        let inm = answer(
            path.clone(),
            10,
            t,
            Conditions {
                if_none_match: Some(format!("W/{etag}").as_bytes()),
                ..Default::default()
            },
        );
        assert!(matches!(inm, Answer::Empty { status: 304, .. }), "{inm:?}");
        let ims = answer(
            path.clone(),
            10,
            t,
            Conditions {
                if_modified_since: Some(lm.as_bytes()),
                ..Default::default()
            },
        );
        assert!(matches!(ims, Answer::Empty { status: 304, .. }));
        let part = answer(
            path.clone(),
            10,
            t,
            Conditions {
                range: Some(b"bytes=2-3"),
                ..Default::default()
            },
        );
        assert!(matches!(
            part,
            Answer::File {
                status: 206,
                start: 2,
                len: 2,
                ..
            }
        ));
        let stale = answer(
            path,
            10,
            t,
            Conditions {
                range: Some(b"bytes=2-3"),
                if_range: Some(b"\"other\""),
                ..Default::default()
            },
        );
        assert!(matches!(stale, Answer::File { status: 200, .. }));
    }
}
