//! A forked child process that runs a closure and reports back, plus the few raw syscalls the
//! two-process tests need. The child never unwinds into the parent's code: whatever the
//! closure does, it ends in `_exit`.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::panic::{catch_unwind, AssertUnwindSafe};

use uringapi_protocol::Segment;

/// A forked child. Dropping it unreaped kills it, so a failing parent never leaves a worker
/// spinning behind it.
pub struct Child {
    pid: libc::pid_t,
    /// Read end of the child's report pipe (non-blocking).
    report: OwnedFd,
    reaped: bool,
}

/// Exit codes of the child.
const EXIT_OK: i32 = 0;
const EXIT_ERROR: i32 = 1;
const EXIT_PANIC: i32 = 2;
const EXIT_ORPHANED: i32 = 3;

/// Reports from the child are written in one `write` of at most this many bytes, which
/// `PIPE_BUF` (4096 on Linux) makes atomic.
const MAX_REPORT: usize = 4000;

/// Forks; the child runs `body` and exits. `Ok(bytes)` from `body` is handed to
/// [`Child::wait`] as its success value, `Err(message)` or a panic as its failure.
///
/// Only the calling thread exists in the child. `body` may allocate (glibc's fork handlers
/// keep malloc usable), but should not print through std's locked streams or take locks
/// other threads of the test binary may have held at the fork.
pub fn fork(body: impl FnOnce() -> Result<Vec<u8>, String>) -> Child {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors; the result is checked.
    let r = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) };
    assert_eq!(r, 0, "pipe2: {}", io::Error::last_os_error());
    // SAFETY: both descriptors are fresh and ours.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: getpid cannot fail.
    let parent = unsafe { libc::getpid() };
    // SAFETY: fork has no preconditions; the child branch below never returns.
    match unsafe { libc::fork() } {
        -1 => panic!("fork: {}", io::Error::last_os_error()),
        0 => run_child(parent, write.as_raw_fd(), body),
        pid => {
            drop(write);
            Child {
                pid,
                report: read,
                reaped: false,
            }
        }
    }
}

fn run_child(
    parent: libc::pid_t,
    report: RawFd,
    body: impl FnOnce() -> Result<Vec<u8>, String>,
) -> ! {
    // SAFETY: plain syscalls. PDEATHSIG ends the child if the forking thread dies (a killed
    // test run); the getppid check closes the race with a parent that died before it.
    let orphaned = unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0
            || libc::getppid() != parent
    };
    if orphaned {
        // SAFETY: ends this process without running the parent's destructors.
        unsafe { libc::_exit(EXIT_ORPHANED) }
    }
    let (code, bytes) = match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(bytes)) => (EXIT_OK, bytes),
        Ok(Err(message)) => (EXIT_ERROR, message.into_bytes()),
        Err(payload) => {
            let text = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "non-string panic".into());
            (EXIT_PANIC, format!("panicked: {text}").into_bytes())
        }
    };
    let len = bytes.len().min(MAX_REPORT);
    // SAFETY: writes `len` initialised bytes to our pipe; a short or failed write only loses
    // the report, which the parent notices.
    unsafe {
        libc::write(report, bytes.as_ptr().cast(), len);
        libc::_exit(code)
    }
}

impl Child {
    pub fn pid(&self) -> libc::pid_t {
        self.pid
    }

    /// `Some` once the child has exited: its report, or why it failed.
    pub fn try_wait(&mut self) -> Option<Result<Vec<u8>, String>> {
        self.wait_with(libc::WNOHANG)
    }

    /// Blocks until the child exits: its report, or why it failed.
    pub fn wait(mut self) -> Result<Vec<u8>, String> {
        self.wait_with(0)
            .expect("blocking waitpid returned without a status")
    }

    fn wait_with(&mut self, flags: libc::c_int) -> Option<Result<Vec<u8>, String>> {
        assert!(!self.reaped, "child {} already reaped", self.pid);
        let mut status = 0;
        // SAFETY: waits for our own child; `status` is a valid out-parameter.
        let r = unsafe { libc::waitpid(self.pid, &mut status, flags) };
        match r {
            0 => return None,
            -1 => panic!("waitpid({}): {}", self.pid, io::Error::last_os_error()),
            _ => self.reaped = true,
        }
        let report = self.read_report();
        Some(
            if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == EXIT_OK {
                Ok(report)
            } else {
                let how = if libc::WIFEXITED(status) {
                    format!("exited with {}", libc::WEXITSTATUS(status))
                } else if libc::WIFSIGNALED(status) {
                    format!("killed by signal {}", libc::WTERMSIG(status))
                } else {
                    format!("ended with status {status:#x}")
                };
                Err(format!(
                    "child {} {how}: {}",
                    self.pid,
                    String::from_utf8_lossy(&report)
                ))
            },
        )
    }

    /// Everything the (exited) child wrote. Non-blocking: other children forked by tests
    /// running in parallel may hold copies of the write end, so EOF cannot be awaited.
    fn read_report(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let mut buf = [0u8; 1024];
        loop {
            // SAFETY: reads into a valid buffer of `buf.len()` bytes from our own fd.
            let n =
                unsafe { libc::read(self.report.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                return out;
            }
            out.extend_from_slice(&buf[..n as usize]);
        }
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if !self.reaped {
            // SAFETY: signals and reaps our own child, which has not been reaped yet.
            unsafe {
                libc::kill(self.pid, libc::SIGKILL);
                libc::waitpid(self.pid, std::ptr::null_mut(), 0);
            }
        }
    }
}

/// Maps the segment behind an inherited descriptor the way a worker does: on a `dup` of its
/// own, so the parent's descriptor stays untouched.
pub fn open_inherited(fd: RawFd) -> Result<Segment, String> {
    // SAFETY: plain syscall on a descriptor this process inherited; checked below.
    let dup = unsafe { libc::dup(fd) };
    if dup < 0 {
        return Err(format!("dup({fd}): {}", io::Error::last_os_error()));
    }
    // SAFETY: `dup` is a fresh descriptor that nothing else owns; `open` takes it over.
    unsafe { Segment::open(dup) }.map_err(|e| format!("Segment::open: {e}"))
}

/// Waits up to `timeout_ms` for `fd` to become readable. `Ok(false)` on timeout.
pub fn wait_readable(fd: &impl AsRawFd, timeout_ms: i32) -> io::Result<bool> {
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    loop {
        // SAFETY: one valid pollfd.
        let r = unsafe { libc::poll(&mut p, 1, timeout_ms) };
        match r {
            0 => return Ok(false),
            n if n > 0 => return Ok(true),
            _ => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
    }
}
