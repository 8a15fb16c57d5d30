//! The way back: draining the workers' response rings and handing each validated record to
//! its stream as an [`Event`]. A record that breaks the stream rules (another worker's
//! stream, a record after the last one, credit for body records never sent) makes its
//! worker a violator.

use std::rc::Rc;

use uringapi_protocol::{Incoming, Kind};

use super::streams::{Event, Stream, NO_WORKER};
use super::Hub;
use crate::zerocopy::SlotLease;

/// Most records taken from one worker's ring per poll round.
const DRAIN_BATCH: usize = 256;

#[derive(Debug, thiserror::Error)]
pub(super) enum RouteError {
    #[error("record for stream {0:#x}, which belongs to another worker")]
    ForeignStream(u64),
    #[error("record for stream {0:#x} after its last record")]
    AfterEnd(u64),
    #[error("body credit {1} for stream {0:#x}, which has {2} body records unreturned")]
    Overcredit(u64, u32, u32),
}

impl Hub {
    /// Drains every channel once; returns whether anything arrived.
    pub(super) fn poll_rings(self: &Rc<Self>) -> bool {
        let mut got = false;
        let n = self.inner.borrow().links.len();
        for worker in 0..n {
            let retried = match self.inner.borrow_mut().links.get_mut(worker) {
                Some(Some(link)) if !link.notices.is_empty() => link.retry_notices(),
                _ => false,
            };
            if retried {
                self.flush(worker);
            }
            let mut popped = false;
            // At most a batch per worker per round, so a worker that floods its ring (with
            // records for streams long gone, say) cannot starve the others or the sockets.
            for _ in 0..DRAIN_BATCH {
                let step = {
                    let mut inner = self.inner.borrow_mut();
                    let Some(link) = inner.links.get_mut(worker).and_then(Option::as_mut) else {
                        break;
                    };
                    link.chan
                        .recv()
                        .map(|inc| inc.map(|inc| (inc, link.generation)))
                };
                match step {
                    Ok(Some((inc, generation))) => {
                        got = true;
                        popped = true;
                        if let Err(e) = self.route(worker, generation, inc) {
                            self.violation(worker, &e);
                            break;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        self.violation(worker, &e);
                        break;
                    }
                }
            }
            if popped {
                // Popping made ring room: a worker blocked for room must hear of it
                // (ring.rs rule 4, applied to "wants space").
                if let Some(link) = self
                    .inner
                    .borrow()
                    .links
                    .get(worker)
                    .and_then(Option::as_ref)
                {
                    if link.chan.worker_wants_space() {
                        link.doorbell.ring();
                    }
                }
            }
        }
        got
    }

    /// Hands one validated response record to its stream.
    fn route(
        self: &Rc<Self>,
        worker: usize,
        generation: u64,
        inc: Incoming,
    ) -> Result<(), RouteError> {
        let mut head = Vec::new();
        let mut path = Vec::new();
        // Build the lease first so that every early return hands the slot back.
        let mut body = {
            let inner = self.inner.borrow();
            let chan = &inner.links[worker]
                .as_ref()
                .expect("link checked by caller")
                .chan;
            if matches!(inc.kind, Kind::Response | Kind::PathSend | Kind::WsAccept) {
                let (slot, len) = inc.slot.expect("these records carry a slot (validated)");
                chan.copy_out(slot, 0..inc.head_len, &mut head);
                if inc.kind == Kind::PathSend {
                    chan.copy_out(slot, inc.head_len..len, &mut path);
                }
            }
            inc.slot.map(|(slot, len)| {
                SlotLease::new(self.clone(), worker, generation, chan, slot, len)
            })
        };
        if matches!(inc.kind, Kind::Response | Kind::WsAccept) {
            body = body.map(|lease| lease.skip(inc.head_len));
        }
        if inc.kind == Kind::PathSend {
            // Head and path are copied out: the slot goes back now.
            body = None;
        }
        let mut body = body.filter(|b| !b.is_empty());
        if body.is_some()
            && self
                .inner
                .borrow_mut()
                .streams
                .get_mut(inc.stream)
                .is_some_and(|s| s.copy)
        {
            body = body.map(SlotLease::detach);
        }
        let mut inner = self.inner.borrow_mut();
        let Some(s) = inner.streams.get_mut(inc.stream) else {
            // The client left and the stream closed; the lease drops and frees the slot.
            return Ok(());
        };
        if inc.kind == Kind::BodyCredit {
            return route_credit(s, worker, inc);
        }
        if s.finished {
            return Err(RouteError::AfterEnd(inc.stream));
        }
        if s.worker != worker {
            return Err(RouteError::ForeignStream(inc.stream));
        }
        if inc.kind == Kind::Continue {
            s.deliver(Event::Continue);
            return Ok(());
        }
        if inc.credit > 0 {
            // A `WsSend` that carries the client-message credit (ring.rs rule 7).
            s.body
                .credit(inc.credit)
                .map_err(|o| RouteError::Overcredit(inc.stream, o.credit, o.unreturned))?;
        }
        let ev = match inc.kind {
            Kind::Response => Event::Head {
                head,
                body,
                more: inc.more,
            },
            Kind::ResponseBody => Event::Body {
                body,
                more: inc.more,
            },
            Kind::PathSend => Event::File {
                head: (!head.is_empty()).then_some(head),
                path,
            },
            Kind::WsAccept => Event::WsAccept { head },
            Kind::WsSend => Event::WsSend {
                data: body,
                text: inc.value == uringapi_protocol::record::WS_TEXT,
                more: inc.more,
            },
            Kind::WsClose => Event::WsClose {
                code: inc.value,
                reason: body,
            },
            _ => Event::Abort,
        };
        // A WebSocket's stream lasts until the app closes it (or the client leaves).
        s.finished = match inc.kind {
            Kind::WsAccept | Kind::WsSend => false,
            Kind::WsClose => true,
            _ => !inc.more || inc.kind == Kind::Abort,
        };
        let finished = s.finished;
        s.deliver(ev);
        if finished {
            self.load.get(worker).done(inc.kind != Kind::Abort);
            // The stream stays open until its connection task closes it; mark the worker's
            // side done so that close does not send a Disconnect nor count it twice.
            s.worker = NO_WORKER;
            let claim = std::mem::take(&mut s.claim);
            inner.completions += 1;
            let now = inner.completions;
            if let Some(link) = inner.links[worker].as_mut() {
                link.last_done = now;
                link.chan.free_claim(claim);
            }
            drop(inner);
            self.wake_queue();
        }
        Ok(())
    }
}

/// A `BodyCredit` from the worker: the app took body records; the connection may send
/// more. Late credit (the response is complete) is dropped.
fn route_credit(s: &mut Stream, worker: usize, inc: Incoming) -> Result<(), RouteError> {
    if s.finished || s.worker == NO_WORKER {
        return Ok(());
    }
    if s.worker != worker {
        return Err(RouteError::ForeignStream(inc.stream));
    }
    s.body
        .credit(inc.credit)
        .map_err(|o| RouteError::Overcredit(inc.stream, o.credit, o.unreturned))?;
    s.wake();
    Ok(())
}

#[cfg(test)]
mod tests {
    use uringapi_protocol::{Kind, Record};

    use super::super::mailbox::Report;
    use super::super::testkit::Rig;
    use super::*;

    /// The worker's side: answers `id` with a whole response (head `head`, body `body`).
    fn respond(rig: &Rig, worker: usize, id: u64, head: &[u8], body: &[u8], more: bool) {
        let mut wc = rig.worker_channel(worker);
        let slot = wc.take_slot().unwrap().expect("a free response slot");
        let buf = wc.slot_mut(slot);
        buf[..head.len()].copy_from_slice(head);
        buf[head.len()..head.len() + body.len()].copy_from_slice(body);
        let len = (head.len() + body.len()) as u32;
        let rec = Record::new(Kind::Response, id)
            .with_slot(slot.get(), len, head.len() as u32)
            .more(more);
        assert!(wc.send(rec).unwrap());
    }

    /// The worker's side: ends `id`'s response with a body record of `body`.
    fn last_body(rig: &Rig, worker: usize, id: u64, body: &[u8]) {
        let mut wc = rig.worker_channel(worker);
        let slot = wc.take_slot().unwrap().expect("a free response slot");
        wc.slot_mut(slot)[..body.len()].copy_from_slice(body);
        let rec = Record::new(Kind::ResponseBody, id).with_slot(slot.get(), body.len() as u32, 0);
        assert!(wc.send(rec).unwrap());
    }

    /// The bytes a lease would send, through the same frame the connection writes.
    fn lease_bytes(lease: SlotLease) -> Vec<u8> {
        crate::zerocopy::Frame::new(Vec::new(), Some(lease), b"")
            .pieces()
            .concat()
    }

    #[test]
    fn a_response_reaches_its_stream_as_head_and_body() {
        let rig = Rig::new(1);
        let (id, w) = rig.hub.open_stream(|| "GET /".into(), None).unwrap();
        respond(&rig, w, id, b"HEAD", b"hello", false);
        assert!(rig.hub.poll_rings());
        match rig.next_event(id) {
            Some(Event::Head { head, body, more }) => {
                assert_eq!(head, b"HEAD");
                assert_eq!(lease_bytes(body.unwrap()), b"hello");
                assert!(!more);
            }
            _ => panic!("expected the response head"),
        }
        assert_eq!(rig.load.get(w).in_flight(), 0);
        assert_eq!(rig.load.get(w).served(), 1);
        assert!(!rig.hub.poll_rings(), "nothing more");
    }

    #[test]
    fn a_record_after_the_last_one_is_a_violation() {
        let rig = Rig::new(1);
        let (id, w) = rig.hub.open_stream(|| "GET /".into(), None).unwrap();
        respond(&rig, w, id, b"H", b"", false);
        respond(&rig, w, id, b"H", b"", false);
        rig.hub.poll_rings();
        match rig.reports.try_recv() {
            Ok(Report::Violation { reason, .. }) => {
                assert!(reason.contains("after its last record"), "{reason}")
            }
            Err(e) => panic!("no report: {e}"),
        }
        assert!(matches!(rig.next_event(id), Some(Event::Head { .. })));
        assert!(
            rig.hub.open_stream(|| "GET /".into(), None).is_none(),
            "dropped"
        );
    }

    #[test]
    fn a_record_for_another_workers_stream_is_a_violation() {
        let rig = Rig::new(2);
        let (a, wa) = rig.hub.open_stream(|| "GET /a".into(), None).unwrap();
        let (_b, wb) = rig.hub.open_stream(|| "GET /b".into(), None).unwrap();
        assert_ne!(wa, wb);
        respond(&rig, wb, a, b"H", b"", false);
        rig.hub.poll_rings();
        match rig.reports.try_recv() {
            Ok(Report::Violation { worker, reason, .. }) => {
                assert_eq!(worker, wb);
                assert!(reason.contains("another worker"), "{reason}");
            }
            Err(e) => panic!("no report: {e}"),
        }
        assert!(
            rig.next_event(a).is_none(),
            "the owner's stream is untouched"
        );
    }

    /// How many response slots the worker can take now (given back at once).
    fn free_slots(rig: &Rig, w: usize) -> u32 {
        let mut wc = rig.worker_channel(w);
        let taken: Vec<_> = (0..rig.geometry().slots)
            .map_while(|_| wc.take_slot().unwrap())
            .collect();
        let n = taken.len() as u32;
        taken.into_iter().for_each(|s| wc.untake_slot(s));
        n
    }

    #[test]
    fn a_copying_streams_slot_goes_back_when_routed_and_its_bytes_stay() {
        let rig = Rig::new(1);
        let (held, w) = rig.hub.open_stream(|| "GET /held".into(), None).unwrap();
        let (copied, _) = rig.hub.open_stream(|| "GET /copied".into(), None).unwrap();
        rig.hub.copy_responses(copied);
        respond(&rig, w, held, b"H", b"zero-copy", true);
        respond(&rig, w, copied, b"HEAD", b"hello", true);
        assert!(rig.hub.poll_rings());
        let slots = rig.geometry().slots;
        assert_eq!(
            free_slots(&rig, w),
            slots - 1,
            "the copying stream's slot is back unread; the plain one's lease holds its own"
        );
        match rig.next_event(copied) {
            Some(Event::Head { head, body, more }) => {
                assert_eq!(head, b"HEAD");
                assert_eq!(body.unwrap().into_vec(), b"hello");
                assert!(more);
            }
            _ => panic!("expected the response head"),
        }
        let held_ev = rig.next_event(held);
        assert_eq!(free_slots(&rig, w), slots - 1);
        drop(held_ev);
        assert_eq!(free_slots(&rig, w), slots);
        // A body record of the copying stream: the bytes survive the slot's reuse.
        last_body(&rig, w, copied, b"world");
        assert!(rig.hub.poll_rings());
        assert_eq!(free_slots(&rig, w), slots);
        scribble(&rig, w);
        match rig.next_event(copied) {
            Some(Event::Body { body, more }) => {
                assert_eq!(lease_bytes(body.unwrap()), b"world");
                assert!(!more);
            }
            _ => panic!("expected the body"),
        }
        assert_eq!(
            rig.load.get(w).in_flight(),
            1,
            "only the plain stream is open"
        );
    }

    /// Every response slot of worker `w` filled with `x` (a worker reusing them).
    fn scribble(rig: &Rig, w: usize) {
        let mut wc = rig.worker_channel(w);
        let slots: Vec<_> = (0..rig.geometry().slots)
            .map_while(|_| wc.take_slot().unwrap())
            .collect();
        slots.iter().for_each(|&s| wc.slot_mut(s).fill(b'x'));
        slots.into_iter().for_each(|s| wc.untake_slot(s));
    }

    #[test]
    fn a_client_that_falls_behind_holds_no_slot() {
        // An HTTP/1.1 response whose client stops reading part way: the frame being
        // written and the records queued behind it give their slots back, and the bytes
        // still to go are the app's.
        let rig = Rig::new(1);
        let (id, w) = rig.hub.open_stream(|| "GET /".into(), None).unwrap();
        respond(&rig, w, id, b"HEAD", b"first", true);
        last_body(&rig, w, id, b"second");
        assert!(rig.hub.poll_rings());
        let slots = rig.geometry().slots;
        let Some(Event::Head { body, .. }) = rig.next_event(id) else {
            panic!("expected the response head");
        };
        let mut frame = crate::zerocopy::Frame::new(b"P".to_vec(), body, b"S");
        assert!(
            !frame.advance(3),
            "the socket took the prefix and two body bytes"
        );
        assert_eq!(free_slots(&rig, w), slots - 2);
        frame.detach_body();
        assert_eq!(free_slots(&rig, w), slots - 1, "the frame's slot is back");
        rig.hub.copy_responses(id);
        assert_eq!(free_slots(&rig, w), slots, "so is the queued record's");
        scribble(&rig, w);
        assert_eq!(frame.pieces().concat(), b"rstS");
        match rig.next_event(id) {
            Some(Event::Body { body, more }) => {
                assert_eq!(lease_bytes(body.unwrap()), b"second");
                assert!(!more);
            }
            _ => panic!("expected the body"),
        }
    }

    #[test]
    fn a_late_record_for_a_closed_stream_is_dropped_and_its_slot_returned() {
        let rig = Rig::new(1);
        let (id, w) = rig.hub.open_stream(|| "GET /".into(), None).unwrap();
        rig.hub.close_stream(id);
        respond(&rig, w, id, b"H", b"body", false);
        assert!(rig.hub.poll_rings());
        assert!(rig.reports.try_recv().is_err(), "not a violation");
        // The slot came back: the worker can take every slot again.
        let mut wc = rig.worker_channel(w);
        let slots = rig.geometry().slots;
        for _ in 0..slots {
            assert!(wc.take_slot().unwrap().is_some());
        }
    }
}
