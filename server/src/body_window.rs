//! The request body window: how many body records of one request may be on their way to
//! the app at once.
//!
//! The protocol is ring.rs rule 7. The front end counts the `Body` records it sends for a
//! stream; the worker hands a `BodyCredit` record back as the app's `receive()` takes them
//! out of its buffer. With [`BODY_WINDOW`] records unreturned the connection stops reading
//! its socket, so TCP flow control pushes back on the client: an upload costs at most
//! `BODY_WINDOW` slots of body in the worker (copied into Python `bytes` as they arrive)
//! plus the connection's read buffer, whatever the body's size and however slowly the app
//! reads.
//!
//! The same counter, keyed by stream, is meant to carry the other flows that need a window
//! from the app back to the peer: WebSocket messages (one record per frame piece, credit
//! when the app's `receive()` takes a message) and HTTP/2 flow control, where a credit
//! returned by the worker becomes a WINDOW_UPDATE for the stream instead of a socket read.

/// Body records a request may have in flight between the front end and the app's
/// `receive()`. At the default 64 KiB slot this bounds an upload's body in the worker to
/// 256 KiB; four records keep the pipe full (the app reads one while the next ones arrive).
pub const BODY_WINDOW: u32 = 4;

/// One stream's window. All counts come from the front end itself except `credit`, which
/// is worker-written and checked against them.
#[derive(Debug, Default, Clone, Copy)]
pub struct Window {
    /// Body records sent and not yet returned by the worker.
    unreturned: u32,
}

/// The worker returned more body records than were sent on the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overcredit {
    pub credit: u32,
    pub unreturned: u32,
}

impl Window {
    /// A body record went out.
    pub fn sent(&mut self) {
        self.unreturned += 1;
    }

    /// The worker returned `credit` records (untrusted: at most what is unreturned).
    pub fn credit(&mut self, credit: u32) -> Result<(), Overcredit> {
        if credit > self.unreturned {
            return Err(Overcredit {
                credit,
                unreturned: self.unreturned,
            });
        }
        self.unreturned -= credit;
        Ok(())
    }

    /// Whether another body record may go out.
    pub fn open(&self) -> bool {
        self.open_for(BODY_WINDOW)
    }

    /// Whether another record may go out under a window of `window` records (WebSockets
    /// use `WS_WINDOW` of the protocol crate).
    pub fn open_for(&self, window: u32) -> bool {
        self.unreturned < window
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_closes_at_the_limit_and_reopens_on_credit() {
        let mut w = Window::default();
        for _ in 0..BODY_WINDOW {
            assert!(w.open());
            w.sent();
        }
        assert!(!w.open());
        w.credit(1).unwrap();
        assert!(w.open());
    }

    #[test]
    fn credit_past_what_was_sent_is_refused() {
        let mut w = Window::default();
        w.sent();
        assert_eq!(
            w.credit(2),
            Err(Overcredit {
                credit: 2,
                unreturned: 1
            })
        );
        w.credit(1).unwrap();
        assert_eq!(w.credit(1).unwrap_err().unreturned, 0);
    }
}
