//! Native routes over HTTP/2: `--health-path` and `--static-mount` files (which route and
//! what it answers: `statics/`), with the same status, fields and body as over HTTP/1.1,
//! the body sent under the client's flow-control window.

use bytes::Bytes;
use h2::server::SendResponse;
use h2::Reason;
use http::{HeaderName, HeaderValue, Response};

use super::respond::{front_end_fields, reply, Sender};
use super::stream::Outcome;
use super::Shared;
use crate::statics::{self, Native, Payload};

/// Answers a request a native route took; `head_method`: the head alone.
pub(super) async fn answer(
    sh: &Shared,
    native: Native,
    head_method: bool,
    respond: &mut SendResponse<Bytes>,
) -> Outcome {
    let reply_of = match statics::reply(native, sh.hub.is_draining()) {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(peer = %sh.peer, error = %e, "cannot hand a static file to io_uring; answering 500");
            return reply(sh, respond, 500, head_method);
        }
    };
    let status = reply_of.status;
    let len = reply_of.len();
    let mut resp = Response::new(());
    *resp.status_mut() = http::StatusCode::from_u16(status).unwrap_or_default();
    let map = resp.headers_mut();
    front_end_fields(map, &sh.cfg);
    for (name, value) in reply_of.headers() {
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) else {
            return reply(sh, respond, 500, head_method);
        };
        map.append(name, value);
    }
    // A 304 carries no body and no length (RFC 9110 §15.4.5), as over HTTP/1.1.
    let bodiless = status == 304;
    if !bodiless {
        map.insert(http::header::CONTENT_LENGTH, HeaderValue::from(len));
    }
    let empty = head_method || bodiless || len == 0;
    let Ok(mut out) = respond.send_response(resp, empty) else {
        return Outcome::gone(0);
    };
    if empty {
        return Outcome { status, bytes: 0 };
    }
    let mut sender = Sender {
        sh,
        out: &mut out,
        sent: 0,
        skip: false,
    };
    let ok = match &reply_of.payload {
        Payload::File(file, start, len) => sender.range(file, *start, *len).await,
        Payload::Memory(f) => sender.data(f.body().clone(), true).await,
        Payload::Static(b) => sender.data(Bytes::from_static(b), true).await,
    };
    let sent = sender.sent;
    if !ok {
        out.send_reset(Reason::INTERNAL_ERROR);
        return Outcome::gone(sent);
    }
    Outcome {
        status,
        bytes: sent,
    }
}
