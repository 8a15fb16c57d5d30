//! Noticing a front-end thread that dies after start-up.
//!
//! A front-end thread owns its listener and every connection it accepted; when it panics,
//! those connections are gone and nothing takes its place. Restarting it in place is not
//! proven safe (its channels to the workers hold records of streams nobody owns any more),
//! so the process says so: the supervisor logs the death, /readyz turns 503 (the board goes
//! not-ready), the others drain, and the process exits non-zero so that systemd or
//! Kubernetes start a fresh one.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Set by a front-end thread that unwinds; polled by the supervisor's loop.
#[derive(Clone, Default)]
pub struct Deaths(Arc<AtomicBool>);

impl Deaths {
    /// Whether a front-end thread has died.
    pub fn any(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    /// A guard for the thread's whole run: dropped while unwinding, it records the death.
    pub fn watch(&self, thread: usize) -> Watch {
        Watch {
            deaths: self.clone(),
            thread,
        }
    }
}

pub struct Watch {
    deaths: Deaths,
    thread: usize,
}

impl Drop for Watch {
    fn drop(&mut self) {
        if std::thread::panicking() {
            tracing::error!(
                thread = self.thread,
                "front-end thread panicked; its connections are lost: /readyz is 503 and the process exits non-zero for a restart"
            );
            self.deaths.0.store(true, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panicking_thread_is_recorded_and_a_clean_exit_is_not() {
        let deaths = Deaths::default();
        let d = deaths.clone();
        std::thread::spawn(move || {
            let _w = d.watch(0);
        })
        .join()
        .unwrap();
        assert!(!deaths.any());
        let d = deaths.clone();
        let r = std::thread::spawn(move || {
            let _w = d.watch(1);
            panic!("test: front-end thread dies");
        })
        .join();
        assert!(r.is_err());
        assert!(deaths.any());
    }
}
