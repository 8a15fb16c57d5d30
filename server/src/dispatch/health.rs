//! Workers that misbehave, as one thread handles them: a contract violation (report it, stop
//! using the worker, fail its requests), a worker gone (fail its requests with
//! `WorkerLost`), and a stalled worker (log what is stuck on it, take back the requests it
//! has not started so that they run elsewhere).
//!
//! The verdicts themselves (stalled, retiring, dead) are the supervisor's; this is what a
//! thread does with them.

use super::mailbox::Report;
use super::streams::{Event, Stream, NO_WORKER};
use super::{Hub, Inner};

impl Hub {
    /// Fails every request in flight on `worker` with `Event::WorkerLost`.
    pub(super) fn fail_streams_of(&self, worker: usize) {
        let mut inner = self.inner.borrow_mut();
        let load = self.load.get(worker);
        for s in inner.streams.iter_mut() {
            if s.worker == worker && !s.finished {
                s.finished = true;
                load.done(false);
                s.worker = NO_WORKER;
                s.deliver(Event::WorkerLost);
            }
        }
    }

    /// A worker broke the contract: report it, stop using it, fail its requests.
    pub(super) fn violation(&self, worker: usize, err: &dyn std::fmt::Display) {
        let generation = match self
            .inner
            .borrow()
            .links
            .get(worker)
            .and_then(Option::as_ref)
        {
            Some(l) => l.generation,
            None => return,
        };
        let reason = err.to_string();
        tracing::error!(worker, generation, %reason, "worker broke the channel contract; it will be replaced");
        let _ = self.reports.send(Report::Violation {
            worker,
            generation,
            reason,
        });
        self.detach(worker, generation);
    }

    /// Takes back the requests of a stalled, stopping or exited worker that it has not
    /// started (ring.rs rule 9), so that their connections send them to another worker;
    /// returns how many. `whose` names the worker in the log line.
    pub(super) fn revoke_queued(&self, worker: usize, whose: &str) -> usize {
        let mut inner = self.inner.borrow_mut();
        let Inner { links, streams, .. } = &mut *inner;
        let Some(link) = links.get_mut(worker).and_then(Option::as_mut) else {
            return 0;
        };
        let load = self.load.get(worker);
        let mut revoked = 0;
        for s in streams.iter_mut() {
            if s.worker != worker || s.finished || s.claim == 0 || !s.inbox.is_empty() {
                continue;
            }
            // Anything but a clean QUEUED -> REVOKED leaves the request with the worker,
            // as without revocation (rule 10).
            if !link.chan.revoke_claim(s.claim) {
                continue;
            }
            link.chan.free_claim(std::mem::take(&mut s.claim));
            // The worker will not run it: no record of its may follow (one would be a
            // contract violation), and it no longer counts against the worker.
            s.worker = NO_WORKER;
            s.finished = true;
            load.done(false);
            s.deliver(Event::Revoked);
            revoked += 1;
        }
        drop(inner);
        if revoked > 0 {
            tracing::info!(
                worker,
                thread = self.thread,
                revoked,
                "took back requests {whose} had not started; sending them to another"
            );
            self.wake_queue();
        }
        revoked
    }

    /// Logs the requests in flight on a stalled worker, oldest first (at most five).
    pub(super) fn log_stalled(&self, worker: usize, silent: std::time::Duration) {
        let inner = self.inner.borrow();
        let pid = inner
            .links
            .get(worker)
            .and_then(Option::as_ref)
            .map_or(0, |l| l.pid);
        let stuck = stuck_on(inner.streams.iter(), worker);
        for s in stuck.iter().take(5) {
            tracing::warn!(
                worker,
                pid,
                thread = self.thread,
                "worker's loop silent for {} ms; in flight on it: {} (running {} ms)",
                silent.as_millis(),
                s.what,
                s.since.elapsed().as_millis()
            );
        }
        if stuck.len() > 5 {
            tracing::warn!(worker, pid, "... and {} more in flight", stuck.len() - 5);
        }
    }
}

/// The streams in flight on `worker`, oldest first: with one request in flight it is the
/// culprit; with several, the blocking one is usually the oldest.
fn stuck_on<'a>(streams: impl Iterator<Item = &'a Stream>, worker: usize) -> Vec<&'a Stream> {
    let mut stuck: Vec<&Stream> = streams.filter(|s| s.worker == worker).collect();
    stuck.sort_by_key(|s| s.since);
    stuck
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use uringapi_protocol::{Kind, Record};

    use super::super::testkit::{counting_waker, Rig};
    use super::*;

    #[test]
    fn stuck_requests_are_listed_oldest_first_and_only_the_workers() {
        let mut t = super::super::streams::StreamTable::default();
        let a = t.open(1, "GET /first".into());
        let _ = t.open(0, "GET /other".into());
        let b = t.open(1, "GET /second".into());
        // Make the later one older.
        t.get_mut(b).unwrap().since -= std::time::Duration::from_secs(5);
        let _ = a;
        let whats: Vec<_> = stuck_on(t.iter(), 1).iter().map(|s| &*s.what).collect();
        assert_eq!(whats, ["GET /second", "GET /first"]);
    }

    #[test]
    fn a_stalled_workers_unstarted_request_comes_back_as_revoked() {
        let rig = Rig::new(2);
        let (id, worker) = rig.hub.open_stream(|| "GET /slow".into(), None).unwrap();
        let extra = rig.hub.queue_claim(id, worker);
        assert_ne!(extra, 0, "a claim word was free");
        let mut rec = Record::new(Kind::Request, id);
        rec.extra = extra;
        assert_eq!(rig.hub.send(worker, rec), Ok(true));
        assert_eq!(rig.load.get(worker).in_flight(), 1);

        assert_eq!(rig.hub.revoke_queued(worker, "the stalled worker"), 1);
        assert_eq!(rig.load.get(worker).in_flight(), 0, "no longer counted");
        let ev = rig.next_event(id).expect("an event is queued");
        assert!(matches!(ev, Event::Revoked));
        // The worker finds the record but may not run it (rule 9).
        let mut wc = rig.worker_channel(worker);
        let (got, _) = wc.recv().unwrap().expect("the record is in the ring");
        assert!(!wc.claim(got.extra), "revoked: the worker must not run it");
    }

    #[test]
    fn a_disconnect_that_finds_the_ring_full_goes_out_once_there_is_room() {
        let rig = Rig::new(1);
        let (gone, worker) = rig
            .hub
            .open_stream(|| "GET /download".into(), None)
            .unwrap();
        let (other, _) = rig.hub.open_stream(|| "GET /other".into(), None).unwrap();
        let mut filled = 0;
        while rig.hub.send(worker, Record::new(Kind::Body, other)) == Ok(true) {
            filled += 1;
        }
        rig.hub.close_stream(gone);
        {
            let mut wc = rig.worker_channel(worker);
            for _ in 0..filled {
                assert_eq!(wc.recv().unwrap().unwrap().0.stream, other);
            }
            assert!(wc.recv().unwrap().is_none(), "the notice waits on our side");
        }
        rig.hub.poll_rings();
        let (notice, _) = rig
            .worker_channel(worker)
            .recv()
            .unwrap()
            .expect("sent now");
        assert_eq!((notice.kind, notice.stream), (Kind::Disconnect as u8, gone));
    }

    #[test]
    fn a_request_the_worker_claimed_stays_with_it() {
        let rig = Rig::new(1);
        let (id, worker) = rig.hub.open_stream(|| "GET /busy".into(), None).unwrap();
        let mut rec = Record::new(Kind::Request, id);
        rec.extra = rig.hub.queue_claim(id, worker);
        rig.hub.send(worker, rec).unwrap();
        let mut wc = rig.worker_channel(worker);
        let (got, _) = wc.recv().unwrap().unwrap();
        assert!(wc.claim(got.extra), "the worker started it first");

        assert_eq!(rig.hub.revoke_queued(worker, "the stalled worker"), 0);
        assert!(rig.next_event(id).is_none());
        assert_eq!(rig.load.get(worker).in_flight(), 1, "still the worker's");
    }

    #[test]
    fn a_detached_worker_fails_its_requests_and_only_its_own() {
        let rig = Rig::new(2);
        let (a, wa) = rig.hub.open_stream(|| "GET /a".into(), None).unwrap();
        let (b, wb) = rig.hub.open_stream(|| "GET /b".into(), None).unwrap();
        assert_ne!(wa, wb, "two idle workers take turns");
        let (count, waker) = counting_waker();
        rig.set_waker(a, waker);

        rig.hub.detach(wa, rig.generation(wa));
        assert_eq!(count.load(Ordering::SeqCst), 1, "the waiting task is woken");
        assert!(matches!(rig.next_event(a), Some(Event::WorkerLost)));
        assert!(
            rig.next_event(b).is_none(),
            "the other worker's request is untouched"
        );
        assert_eq!(rig.load.get(wa).in_flight(), 0);
        // New requests go to the worker that is left.
        let (_, w) = rig.hub.open_stream(|| "GET /c".into(), None).unwrap();
        assert_eq!(w, wb);
    }

    #[test]
    fn a_detach_for_an_older_generation_is_ignored() {
        let rig = Rig::new(1);
        let (a, w) = rig.hub.open_stream(|| "GET /a".into(), None).unwrap();
        rig.hub.detach(w, rig.generation(w) + 1);
        assert!(rig.next_event(a).is_none());
        assert!(rig.hub.open_stream(|| "GET /b".into(), None).is_some());
    }

    #[test]
    fn a_violation_is_reported_and_the_worker_dropped() {
        let rig = Rig::new(1);
        let (a, w) = rig.hub.open_stream(|| "GET /a".into(), None).unwrap();
        rig.hub.violation(w, &"slot 99 out of range");
        match rig.reports.try_recv() {
            Ok(Report::Violation {
                worker,
                generation,
                reason,
            }) => {
                assert_eq!((worker, generation), (w, rig.generation(w)));
                assert_eq!(reason, "slot 99 out of range");
            }
            Err(e) => panic!("no report: {e}"),
        }
        assert!(matches!(rig.next_event(a), Some(Event::WorkerLost)));
        assert!(
            rig.hub.open_stream(|| "GET /b".into(), None).is_none(),
            "no worker left"
        );
        // A second one for a worker already gone is not reported twice.
        rig.hub.violation(w, &"again");
        assert!(rig.reports.try_recv().is_err());
    }
}
