//! Requests the front end answers itself: `--health-path` and `--static-mount` files.

use super::*;

/// A request the front end answers without a worker.
pub(super) enum Native {
    Health,
    File(static_files::Answer, Option<std::fs::File>),
    NotFound,
    NotAllowed,
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
        let Some(path) = static_files::resolve(mount, rest) else {
            return Some(Native::NotFound);
        };
        // Opened here, on the front-end thread: a local file open is a page-cache hit;
        // the reads that follow go through io_uring.
        let file = std::fs::File::open(&path).ok();
        let meta = file.as_ref().and_then(|f| f.metadata().ok());
        let Some(meta) = meta.filter(|m| m.is_file()) else {
            return Some(Native::NotFound);
        };
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
        let modified = meta.modified().unwrap_or(std::time::UNIX_EPOCH);
        let answer = static_files::answer(path, meta.len(), modified, cond);
        Some(Native::File(answer, file))
    }

    pub(super) async fn answer_native(&mut self, native: Native, side: RequestSide) -> Next {
        let (status, headers, file) = match native {
            Native::NotFound => {
                self.reply_error(404, side.minor).await;
                return Next::Close;
            }
            Native::NotAllowed => {
                self.reply_error(405, side.minor).await;
                return Next::Close;
            }
            Native::Health => {
                let draining = self.hub.is_draining();
                let status = if draining { 503 } else { 200 };
                let body: &[u8] = if draining { b"draining\n" } else { b"ok\n" };
                let headers = vec![("content-type", "text/plain; charset=utf-8".to_string())];
                (status, headers, Err(body))
            }
            Native::File(static_files::Answer::Empty { status, headers }, _) => {
                (status, headers, Err(&b""[..]))
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
                Ok(f) => (status, headers, Ok((f, start, len))),
                Err(_) => {
                    self.reply_error(500, side.minor).await;
                    return Next::Close;
                }
            },
            Native::File(static_files::Answer::File { .. }, None) => {
                self.reply_error(404, side.minor).await;
                return Next::Close;
            }
        };
        self.served.status = status;
        let pairs: Vec<(&[u8], &[u8])> = headers
            .iter()
            .map(|(k, v)| (k.as_bytes(), v.as_bytes()))
            .collect();
        let complete = match &file {
            Ok((_, _, len)) => *len,
            Err(body) => body.len() as u64,
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
        let mut out = Body {
            framing: encoded.framing,
            sent: 0,
            prefix,
        };
        let ok = match file {
            Ok((f, start, len)) => self.send_file(&mut out, f, start, len).await,
            Err(body) => self.send_piece(&mut out, None, body, false).await,
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
