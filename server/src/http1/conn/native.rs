//! Requests the front end answers itself: `--health-path` and `--static-mount` files
//! (which route and what it answers: `statics/`), sent over HTTP/1.1.

use super::*;
use crate::statics::{self, Native, Payload};

impl Conn {
    /// Whether a native route (`--health-path`, `--static-mount`) answers this request.
    pub(super) fn native_route(&self, head: &parse::Head<'_>) -> Option<Native> {
        let header = |name: &[u8]| {
            head.headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| *v)
        };
        statics::route(
            &self.cfg.mounts,
            self.cfg.health_path.as_deref(),
            head.method,
            head.path,
            header,
        )
    }

    pub(super) async fn answer_native(&mut self, native: Native, side: RequestSide) -> Next {
        // Refusals are ordinary responses: the connection stays open when the request
        // allows it (no unread body), and a HEAD gets the head alone.
        let Ok(reply) = statics::reply(native, self.hub.is_draining()) else {
            self.reply_error(500, side.minor).await;
            return Next::Close;
        };
        self.served.status = reply.status;
        let pairs: Vec<(&[u8], &[u8])> = reply
            .headers()
            .iter()
            .map(|(k, v)| (k.as_bytes(), v.as_bytes()))
            .collect();
        let mut prefix = std::mem::take(&mut self.scratch);
        prefix.clear();
        let encoded = match encode::response_head(
            reply.status,
            &pairs,
            side.closing_if(self.hub.is_draining()),
            Some(reply.len()),
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
            slow_reader: None,
        };
        let ok = match reply.payload {
            Payload::File(f, start, len) => self.send_file(&mut out, f, start, len).await,
            Payload::Memory(f) => self.send_piece(&mut out, None, f.body(), false).await,
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
