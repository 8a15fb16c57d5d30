//! A process the app forks from a worker must not use the worker's channel (see
//! [`leave_if_forked`]).

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Once;

use pyo3::prelude::*;

/// Marks every process forked from this one from now on (idempotent).
pub fn watch() {
    static AT_FORK: Once = Once::new();
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe, as a
    // handler run between fork(2) and the child's next step must be.
    AT_FORK.call_once(|| unsafe {
        libc::pthread_atfork(None, None, Some(after_fork_in_child));
    });
}

/// Set in a process forked from this one, right after fork(2) (`pthread_atfork`).
static FORKED: AtomicBool = AtomicBool::new(false);

extern "C" fn after_fork_in_child() {
    FORKED.store(true, Relaxed);
}

/// The channel is this process's alone. A process the app forks (`os.fork()` in a handler)
/// gets a copy of the worker's event loop and of this object; if it goes on to use them
/// (returns into the loop, answers the request it forked in, raises back into the
/// worker) it would take requests, doorbell rings and slots from under the worker and
/// corrupt the rings, and the front end would have to drop the worker with everything it
/// was serving. Such a process is ended here, at its first touch, with the reason logged.
/// Children that exec or end themselves (subprocess, multiprocessing) never get here.
pub fn leave_if_forked() {
    if !FORKED.load(Relaxed) {
        return;
    }
    let msg = format!(
        "process {} was forked from this worker (os.fork() in the app) and went on to use the worker's channel to the front end; it exits now (status 70) and the worker carries on. A process the app forks must exec or end itself (os._exit), as subprocess and multiprocessing do",
        std::process::id()
    );
    let logged = Python::attach(|py| {
        py.import("logging")
            .and_then(|logging| logging.call_method1("getLogger", ("uringapi.error",)))
            .and_then(|log| log.call_method1("error", (&msg,)))
            .is_ok()
    });
    if !logged {
        eprintln!("uringapi: {msg}");
    }
    // SAFETY: ends this process at once, without Python's exit handlers or finalizers:
    // they belong to the worker whose memory this process copied.
    unsafe { libc::_exit(70) }
}
