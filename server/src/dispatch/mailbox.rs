//! The supervisor's side of a front-end thread: the commands it posts ([`Command`]), the
//! reports a thread sends back ([`Report`]), and the inbox between them ([`Mailbox`]).
//!
//! The only cross-thread part of dispatch: a mutex-guarded queue plus a `pending` flag the
//! thread's poller checks before it sleeps, and an eventfd that wakes it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use uringapi_protocol::doorbell::EventFd;
use uringapi_protocol::Segment;

/// Messages from the supervisor to a front-end thread.
pub enum Command {
    /// Start using worker `worker` (new, or a replacement under a new generation).
    Attach {
        worker: usize,
        segment: Arc<Segment>,
        doorbell: EventFd,
        pid: u32,
    },
    /// Worker `worker` is gone: fail its requests in flight with 502 and forget it.
    Detach { worker: usize, generation: u64 },
    /// Stop accepting connections; finish what is in flight.
    Drain,
    /// Stop now (a second SIGTERM/SIGINT during the drain): drop every connection.
    Force,
    /// Worker `worker`'s loop has not run for `silent`: log what this thread has in flight
    /// on it, so that the stuck request can be found.
    Stalled {
        worker: usize,
        silent: std::time::Duration,
    },
}

/// Messages from a front-end thread to the supervisor.
#[derive(Debug)]
pub enum Report {
    /// A worker broke the channel contract; the supervisor kills it.
    Violation {
        worker: usize,
        generation: u64,
        reason: String,
    },
}

/// A front-end thread's inbox. The supervisor pushes and rings the thread's doorbell.
pub struct Mailbox {
    pending: AtomicBool,
    queue: Mutex<Vec<Command>>,
    doorbell: EventFd,
}

impl Mailbox {
    pub fn new() -> std::io::Result<Self> {
        Ok(Self {
            pending: AtomicBool::new(false),
            queue: Mutex::new(Vec::new()),
            doorbell: EventFd::new()?,
        })
    }

    pub fn post(&self, cmd: Command) {
        self.queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(cmd);
        // Release: a thread that sees `pending` also sees the command pushed above.
        self.pending.store(true, Ordering::Release);
        self.doorbell.ring();
    }

    /// Every command posted since the last call, in posting order.
    pub(super) fn take(&self) -> Vec<Command> {
        if !self.pending.swap(false, Ordering::Acquire) {
            return Vec::new();
        }
        std::mem::take(&mut *self.queue.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Whether commands wait; the poller checks it after setting its sleeping flags.
    pub(super) fn pending(&self) -> bool {
        self.pending.load(Ordering::Acquire)
    }

    pub fn doorbell(&self) -> &EventFd {
        &self.doorbell
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn label(c: &Command) -> String {
        match c {
            Command::Attach { worker, .. } => format!("attach {worker}"),
            Command::Detach { worker, generation } => format!("detach {worker}/{generation}"),
            Command::Drain => "drain".into(),
            Command::Force => "force".into(),
            Command::Stalled { worker, .. } => format!("stalled {worker}"),
        }
    }

    #[test]
    fn commands_come_out_once_in_posting_order() {
        let m = Mailbox::new().unwrap();
        assert!(!m.pending());
        assert!(m.take().is_empty());
        m.post(Command::Detach {
            worker: 1,
            generation: 7,
        });
        m.post(Command::Stalled {
            worker: 0,
            silent: std::time::Duration::from_secs(1),
        });
        m.post(Command::Drain);
        assert!(m.pending());
        let got: Vec<_> = m.take().iter().map(label).collect();
        assert_eq!(got, ["detach 1/7", "stalled 0", "drain"]);
        assert!(!m.pending());
        assert!(m.take().is_empty(), "taken once");
    }

    #[test]
    fn posting_rings_the_doorbell_from_another_thread() {
        let m = Arc::new(Mailbox::new().unwrap());
        let poster = m.clone();
        std::thread::spawn(move || poster.post(Command::Drain))
            .join()
            .unwrap();
        // The eventfd counter is non-zero: a poller sleeping on it wakes.
        assert!(m.doorbell().drain(), "doorbell rung");
        assert_eq!(m.take().len(), 1);
    }
}
