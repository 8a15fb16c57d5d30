//! Requests the front end answers itself: `--health-path` and `--static-mount` files.
//!
//! Small static files are kept in memory per front-end thread for [`CACHE_TTL`], so a hot
//! file costs no syscall but the write; requests with validators or a Range take the
//! uncached path, which opens the file, checks it and reads it through io_uring.

use std::cell::RefCell;
use std::collections::HashMap;

use super::*;

/// A request the front end answers without a worker.
pub(super) enum Native {
    Health,
    File(static_files::Answer, Option<std::fs::File>),
    /// A small file from this thread's cache.
    Cached(Rc<CachedFile>),
    NotFound,
    NotAllowed,
}

/// A small file's whole 200 answer.
pub(super) struct CachedFile {
    loaded: Instant,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
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

/// What the answer's body comes from.
enum Payload {
    Memory(Rc<CachedFile>),
    Static(&'static [u8]),
    File(monoio::fs::File, u64, u64),
}

impl Conn {
    /// Whether a native route (`--health-path`, `--static-mount`) answers this request.
    pub(super) fn native_route(&self, head: &parse::Head<'_>) -> Option<Native> {
        let get_or_head = matches!(head.method, b"GET" | b"HEAD");
        if self
            .cfg
            .health_path
            .as_ref()
            .is_some_and(|p| p.as_bytes() == head.path)
        {
            return Some(if get_or_head {
                Native::Health
            } else {
                Native::NotAllowed
            });
        }
        let (mount, rest) = static_files::find(&self.cfg.mounts, head.path)?;
        if !get_or_head {
            return Some(Native::NotAllowed);
        }
        let header = |name: &[u8]| {
            head.headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| *v)
        };
        let cond = static_files::Conditions {
            if_none_match: header(b"if-none-match"),
            if_modified_since: header(b"if-modified-since"),
            range: header(b"range"),
            if_range: header(b"if-range"),
        };
        let plain = cond.if_none_match.is_none()
            && cond.if_modified_since.is_none()
            && cond.range.is_none();
        if plain {
            let hit = CACHE.with_borrow(|c| {
                c.get(head.path)
                    .filter(|f| f.loaded.elapsed() < CACHE_TTL)
                    .cloned()
            });
            if let Some(f) = hit {
                return Some(Native::Cached(f));
            }
        }
        // Opened here, on the front-end thread: a local file open is a page-cache hit.
        let Some((mut file, path)) = static_files::open(mount, rest) else {
            return Some(Native::NotFound);
        };
        let Some(meta) = file.metadata().ok().filter(|m| m.is_file()) else {
            return Some(Native::NotFound);
        };
        let modified = meta.modified().unwrap_or(std::time::UNIX_EPOCH);
        let answer = static_files::answer(path, meta.len(), modified, cond);
        if plain && meta.len() <= CACHE_MAX_FILE {
            if let static_files::Answer::File { headers, len, .. } = &answer {
                let mut body = Vec::with_capacity(*len as usize);
                use std::io::Read;
                if file.read_to_end(&mut body).is_ok() && body.len() as u64 == *len {
                    let cached = Rc::new(CachedFile {
                        loaded: Instant::now(),
                        headers: headers.clone(),
                        body,
                    });
                    CACHE.with_borrow_mut(|c| {
                        if c.len() >= CACHE_MAX_FILES {
                            c.clear();
                        }
                        c.insert(head.path.into(), cached.clone());
                    });
                    return Some(Native::Cached(cached));
                }
            }
        }
        Some(Native::File(answer, Some(file)))
    }

    pub(super) async fn answer_native(&mut self, native: Native, side: RequestSide) -> Next {
        let text = || vec![("content-type", "text/plain; charset=utf-8".to_string())];
        // Refusals are ordinary responses: the connection stays open when the request
        // allows it (no unread body), and a HEAD gets the head alone.
        let (status, owned, payload) = match native {
            Native::NotFound | Native::File(static_files::Answer::File { .. }, None) => {
                (404, text(), Payload::Static(b"404 Not Found\n"))
            }
            Native::NotAllowed => {
                let mut headers = text();
                // RFC 9110 §15.5.6: a 405 lists the methods the target supports.
                headers.push(("allow", "GET, HEAD".to_string()));
                (405, headers, Payload::Static(b"405 Method Not Allowed\n"))
            }
            Native::Health => {
                let draining = self.hub.is_draining();
                let status = if draining { 503 } else { 200 };
                let body: &'static [u8] = if draining { b"draining\n" } else { b"ok\n" };
                (status, text(), Payload::Static(body))
            }
            Native::Cached(f) => (200, Vec::new(), Payload::Memory(f)),
            Native::File(static_files::Answer::Empty { status, headers }, _) => {
                (status, headers, Payload::Static(b""))
            }
            Native::File(
                static_files::Answer::File {
                    status,
                    headers,
                    start,
                    len,
                    ..
                },
                Some(file),
            ) => match monoio::fs::File::from_std(file) {
                Ok(f) => (status, headers, Payload::File(f, start, len)),
                Err(_) => {
                    self.reply_error(500, side.minor).await;
                    return Next::Close;
                }
            },
        };
        self.served.status = status;
        let headers = match &payload {
            Payload::Memory(f) => &f.headers,
            _ => &owned,
        };
        let pairs: Vec<(&[u8], &[u8])> = headers
            .iter()
            .map(|(k, v)| (k.as_bytes(), v.as_bytes()))
            .collect();
        let complete = match &payload {
            Payload::File(_, _, len) => *len,
            Payload::Memory(f) => f.body.len() as u64,
            Payload::Static(b) => b.len() as u64,
        };
        let mut prefix = std::mem::take(&mut self.scratch);
        prefix.clear();
        let encoded = match encode::response_head(
            status,
            &pairs,
            side,
            Some(complete),
            self.cfg.headers,
            &mut prefix,
        ) {
            Ok(e) => e,
            Err(_) => {
                self.scratch = prefix;
                self.reply_error(500, side.minor).await;
                return Next::Close;
            }
        };
        drop(pairs);
        let mut out = Body {
            framing: encoded.framing,
            sent: 0,
            prefix,
        };
        let ok = match payload {
            Payload::File(f, start, len) => self.send_file(&mut out, f, start, len).await,
            Payload::Memory(f) => self.send_piece(&mut out, None, &f.body, false).await,
            Payload::Static(b) => self.send_piece(&mut out, None, b, false).await,
        };
        self.scratch = std::mem::take(&mut out.prefix);
        self.served.bytes = out.sent;
        if ok && encoded.keep_alive {
            Next::KeepAlive
        } else {
            Next::Close
        }
    }
}
