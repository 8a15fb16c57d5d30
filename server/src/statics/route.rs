//! Which native route answers a request, and what it answers, whatever the protocol.
//!
//! Small static files are kept in memory per front-end thread for [`CACHE_TTL`], so a hot
//! file costs no syscall but the write; requests with validators or a Range take the
//! uncached path, which opens the file, checks it and reads it through io_uring.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use super::{Answer, Conditions, Mount};

/// A request the front end answers without a worker.
pub enum Native {
    Health,
    File(Answer, Option<std::fs::File>),
    /// A small file from this thread's cache.
    Cached(Rc<CachedFile>),
    NotFound,
    NotAllowed,
}

/// A small file's whole 200 answer.
pub struct CachedFile {
    loaded: Instant,
    headers: Vec<(&'static str, String)>,
    /// Shared, not copied, by each HTTP/2 response that sends it.
    body: bytes::Bytes,
}

/// Files up to this size are cached.
const CACHE_MAX_FILE: u64 = 64 * 1024;
/// Most cached files per thread; past it the cache starts over.
const CACHE_MAX_FILES: usize = 1024;
/// How long a cached file is served before it is read again: a file changed on disk is
/// seen at most this late.
/// PERF: `make bench` cell native-static (`--apps native`, noisy 2-core runs): without the
/// cache every request paid openat2, fstat, an io_uring read and close, 26.1 CPU-µs/req and
/// 0.59× native-ref's req/s; with it 12.9 CPU-µs/req and 1.01× (native-ref 13.2).
const CACHE_TTL: Duration = Duration::from_secs(1);

thread_local! {
    /// Keyed by the raw request path (prefix included): the same bytes always name the
    /// same file within a TTL.
    static CACHE: RefCell<HashMap<Box<[u8]>, Rc<CachedFile>>> = RefCell::new(HashMap::new());
}

/// Whether a native route (`--health-path`, `--static-mount`) answers a request for the
/// raw `path` (no query); `header` looks a request field up by its lower-case name.
pub fn route<'a>(
    mounts: &[Mount],
    health_path: Option<&str>,
    method: &[u8],
    path: &[u8],
    header: impl Fn(&[u8]) -> Option<&'a [u8]>,
) -> Option<Native> {
    let get_or_head = matches!(method, b"GET" | b"HEAD");
    if health_path.is_some_and(|p| p.as_bytes() == path) {
        return Some(if get_or_head {
            Native::Health
        } else {
            Native::NotAllowed
        });
    }
    let (mount, rest) = super::find(mounts, path)?;
    if !get_or_head {
        return Some(Native::NotAllowed);
    }
    let cond = Conditions {
        if_none_match: header(b"if-none-match"),
        if_modified_since: header(b"if-modified-since"),
        range: header(b"range"),
        if_range: header(b"if-range"),
    };
    let plain =
        cond.if_none_match.is_none() && cond.if_modified_since.is_none() && cond.range.is_none();
    if plain {
        let hit = CACHE.with_borrow(|c| {
            c.get(path)
                .filter(|f| f.loaded.elapsed() < CACHE_TTL)
                .cloned()
        });
        if let Some(f) = hit {
            return Some(Native::Cached(f));
        }
    }
    // Opened here, on the front-end thread: a local file open is a page-cache hit.
    let Some((mut file, rel)) = super::open(mount, rest) else {
        return Some(Native::NotFound);
    };
    let Some(meta) = file.metadata().ok().filter(|m| m.is_file()) else {
        return Some(Native::NotFound);
    };
    let modified = meta.modified().unwrap_or(std::time::UNIX_EPOCH);
    let answer = super::answer(rel, meta.len(), modified, cond);
    if plain && meta.len() <= CACHE_MAX_FILE {
        if let Answer::File { headers, len, .. } = &answer {
            let mut body = Vec::with_capacity(*len as usize);
            use std::io::Read;
            if file.read_to_end(&mut body).is_ok() && body.len() as u64 == *len {
                let cached = Rc::new(CachedFile {
                    loaded: Instant::now(),
                    headers: headers.clone(),
                    body: body.into(),
                });
                CACHE.with_borrow_mut(|c| {
                    if c.len() >= CACHE_MAX_FILES {
                        c.clear();
                    }
                    c.insert(path.into(), cached.clone());
                });
                return Some(Native::Cached(cached));
            }
        }
    }
    Some(Native::File(answer, Some(file)))
}

/// What a reply's body comes from.
pub enum Payload {
    Memory(Rc<CachedFile>),
    Static(&'static [u8]),
    /// `len` bytes of the file from `start`.
    File(monoio::fs::File, u64, u64),
}

/// A native route's whole answer: status, fields (framing, Date and Server are the
/// protocol's to add) and body.
pub struct Reply {
    pub status: u16,
    owned: Vec<(&'static str, String)>,
    pub payload: Payload,
}

impl Reply {
    pub fn headers(&self) -> &[(&'static str, String)] {
        match &self.payload {
            Payload::Memory(f) => &f.headers,
            _ => &self.owned,
        }
    }

    /// The body's length (the content-length a GET would get).
    pub fn len(&self) -> u64 {
        match &self.payload {
            Payload::File(_, _, len) => *len,
            Payload::Memory(f) => f.body.len() as u64,
            Payload::Static(b) => b.len() as u64,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl CachedFile {
    pub fn body(&self) -> &bytes::Bytes {
        &self.body
    }
}

/// The reply for a native route; `draining`: the health route says 503. `Err`: the file
/// cannot be handed to io_uring (answer 500).
pub fn reply(native: Native, draining: bool) -> Result<Reply, std::io::Error> {
    let text = || vec![("content-type", "text/plain; charset=utf-8".to_string())];
    // Refusals are ordinary responses: a HEAD gets the head alone.
    let (status, owned, payload) = match native {
        Native::NotFound | Native::File(Answer::File { .. }, None) => {
            (404, text(), Payload::Static(b"404 Not Found\n"))
        }
        Native::NotAllowed => {
            let mut headers = text();
            // RFC 9110 §15.5.6: a 405 lists the methods the target supports.
            headers.push(("allow", "GET, HEAD".to_string()));
            (405, headers, Payload::Static(b"405 Method Not Allowed\n"))
        }
        Native::Health => {
            let status = if draining { 503 } else { 200 };
            let body: &'static [u8] = if draining { b"draining\n" } else { b"ok\n" };
            (status, text(), Payload::Static(body))
        }
        Native::Cached(f) => (200, Vec::new(), Payload::Memory(f)),
        Native::File(Answer::Empty { status, headers }, _) => {
            (status, headers, Payload::Static(b""))
        }
        Native::File(
            Answer::File {
                status,
                headers,
                start,
                len,
                ..
            },
            Some(file),
        ) => (
            status,
            headers,
            Payload::File(monoio::fs::File::from_std(file)?, start, len),
        ),
    };
    Ok(Reply {
        status,
        owned,
        payload,
    })
}
