//! Sending a request again after it was taken back from a stalled worker (revocable
//! dispatch, protocol ring.rs rules 8 to 10).
//!
//! Only a request sent whole in its first record is revocable: its encoded head is still
//! in `scratch` (nothing else is written there before the response head arrives) and it
//! has no body bytes that were already handed over, so sending it again is sending
//! `scratch` again. The claim word guarantees that the stalled worker never runs it: it
//! claims a request as its task starts, and a revoked word makes that claim fail.

use super::*;

impl Conn {
    /// Opens a new stream on a worker that accepts work, sends the request's head again,
    /// and answers from there. The old stream (`old`) is closed by its guard as usual.
    pub(super) async fn redispatch(
        &mut self,
        old: StreamId,
        side: RequestSide,
        deadline: Option<Instant>,
    ) -> Next {
        let what = self.hub.stream_what(old);
        tracing::debug!(peer = %self.peer, request = %what, "request taken back from a stalled worker; sending it again");
        let (sid, worker) = match self.open_stream(|| what.clone(), 0).await {
            Opened::Stream(sid, worker) => {
                self.last_worker = Some(worker);
                (sid, worker)
            }
            Opened::Rejected => {
                self.reply_error(503, side.minor).await;
                return Next::Close;
            }
            Opened::ClientGone => {
                self.gone = true;
                return Next::Close;
            }
        };
        let hub = self.hub.clone();
        let _guard = StreamGuard(&hub, sid);
        let head_len = self.scratch.len();
        if self
            .hub
            .slot_size(worker)
            .map_or(true, |size| head_len > size)
        {
            self.reply_error(502, side.minor).await;
            return Next::Close;
        }
        let sent = async {
            let slot = self.take_slot(worker).await?;
            self.hub
                .write_slot(worker, slot, 0, &self.scratch)
                .map_err(|_| SendEnd::WorkerLost)?;
            let mut rec = Record::new(Kind::Request, sid)
                .with_slot(slot.get(), head_len as u32, head_len as u32)
                .with_response_window(self.hub.response_window(sid));
            rec.extra = self.hub.queue_claim(sid, worker);
            self.push(worker, rec).await?;
            self.hub.flush(worker);
            Ok::<(), SendEnd>(())
        };
        if sent.await.is_err() {
            self.reply_error(502, side.minor).await;
            return Next::Close;
        }
        self.respond(sid, side, deadline).await
    }
}
