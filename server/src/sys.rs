//! The few raw OS calls the front end needs outside the protocol crate.
#![allow(unsafe_code)]

use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::Command;

use uringapi_protocol::doorbell::EventFd;

/// Lets the child started by `cmd` inherit `fds` (they are close-on-exec in this process).
pub fn inherit_fds(cmd: &mut Command, fds: Vec<RawFd>) {
    // SAFETY: the closure runs in the forked child before exec and only calls fcntl, which
    // is async-signal-safe; it allocates nothing (the Vec was built before the fork).
    unsafe {
        cmd.pre_exec(move || {
            for &fd in &fds {
                if libc::fcntl(fd, libc::F_SETFD, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}

/// Wraps a duplicate of an eventfd in a type monoio can poll for readability on either
/// driver (io_uring PollAdd or epoll). Only `readable()` is ever called on it; the eventfd
/// itself is drained with a plain read.
pub fn pollable(efd: &EventFd) -> std::io::Result<monoio::net::UnixStream> {
    let dup = efd.try_clone()?;
    // SAFETY: `dup` is a fresh descriptor we own; ownership moves into the std type, and
    // monoio never issues socket calls on it because we only poll it.
    let std = unsafe { std::os::unix::net::UnixStream::from_raw_fd(dup.into_raw_fd()) };
    monoio::net::UnixStream::from_std(std)
}

/// Sends `sig` to `pid`. Errors (the process is already gone) are ignored.
pub fn kill(pid: u32, sig: i32) {
    // SAFETY: plain syscall with no memory arguments.
    unsafe { libc::kill(pid as libc::pid_t, sig) };
}

pub fn raw(fd: &impl AsRawFd) -> RawFd {
    fd.as_raw_fd()
}
