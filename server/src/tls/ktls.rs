#![allow(unsafe_code)]
//! `--ktls`: the kernel takes over TLS records after the rustls handshake (HTTP/1.1 and
//! WebSocket connections over TCP).
//!
//! At start-up a probe attaches the "tls" upper layer protocol to a loopback socket; a
//! kernel built without CONFIG_TLS answers ENOENT, and one log line says rustls keeps the
//! records. Where the kernel has it, each connection, once its handshake is done and
//! everything rustls queued (TLS 1.3 session tickets) is written:
//! 1. attaches `TCP_ULP "tls"` (refused: rustls keeps the connection, logged once per process);
//! 2. takes the traffic secrets and record numbers from rustls (`dangerous_extract_secrets`);
//! 3. installs them with `setsockopt(SOL_TLS, TLS_TX / TLS_RX)` (`crypto_info`).
//!
//! From then on the socket carries plaintext for us: responses are plain `writev`s from
//! shared memory, files go out with `sendfile` as over plain TCP (no copy through user space), and a record
//! that is not application data (the client's close_notify or any other alert, a TLS 1.3
//! KeyUpdate) makes `recv` fail with EIO, which ends the connection as a clean close.
//! For the handshake not to read past its last record (bytes the kernel must decrypt),
//! a connection that may go to kTLS reads the handshake one record at a time
//! (`transport.rs`).

use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use super::crypto_info::{CryptoInfo, TLS_RX, TLS_SET_RECORD_TYPE, TLS_TX};
use crate::net::Socket;

/// The kernel's answer to attaching the "tls" ULP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    Available,
    Missing(String),
}

fn last_error(rc: libc::c_int) -> std::io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Attaches `TCP_ULP "tls"` to a connected TCP socket.
fn attach_ulp(fd: RawFd) -> std::io::Result<()> {
    let name = b"tls";
    // SAFETY: `fd` is an open socket for the duration of the call, and the option value
    // is a valid 3-byte buffer whose length is passed with it.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_TCP,
            libc::TCP_ULP,
            name.as_ptr().cast(),
            name.len() as libc::socklen_t,
        )
    };
    last_error(rc)
}

/// Hands one direction's keys to the kernel.
fn install(fd: RawFd, direction: libc::c_int, info: &CryptoInfo) -> std::io::Result<()> {
    let (value, len) = info.as_option();
    // SAFETY: `value` points at `info`, a `#[repr(C)]` struct of exactly `len` bytes that
    // lives across the call; the kernel copies it.
    let rc = unsafe { libc::setsockopt(fd, libc::SOL_TLS, direction, value, len) };
    last_error(rc)
}

/// Attaches `TCP_ULP "tls"` to a connected loopback socket and reports what the kernel said.
pub fn probe() -> Probe {
    let attempt = || -> std::io::Result<()> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        let client = TcpStream::connect(listener.local_addr()?)?;
        let _server = listener.accept()?;
        attach_ulp(client.as_raw_fd())
    };
    match attempt() {
        Ok(()) => Probe::Available,
        Err(e) => Probe::Missing(e.to_string()),
    }
}

static PROBED: OnceLock<Probe> = OnceLock::new();

/// The probe's answer, asked of the kernel once per process.
pub fn probed() -> &'static Probe {
    PROBED.get_or_init(probe)
}

/// Whether connections should try kTLS (`--ktls` and a kernel that has it).
pub fn available() -> bool {
    *probed() == Probe::Available
}

/// Logs the probe's outcome in one line at start-up.
pub fn announce() {
    match probed() {
        Probe::Missing(why) => tracing::warn!(
            reason = %why,
            "--ktls: this kernel has no kTLS (TCP_ULP \"tls\" refused); TLS records are encrypted by rustls"
        ),
        Probe::Available => tracing::info!(
            "--ktls: the kernel has kTLS; HTTP/1.1 connections over TCP hand their records to it after the handshake"
        ),
    }
}

/// Set once a connection was refused the ULP although the probe passed.
static REFUSED_LOGGED: AtomicBool = AtomicBool::new(false);

/// Step 1 of the module's list for one socket: `false` if it refused the ULP (the
/// connection keeps rustls, unchanged; logged once per process).
pub fn attach(sock: &Socket) -> bool {
    match attach_ulp(sock.as_raw_fd()) {
        Ok(()) => true,
        Err(e) => {
            if !REFUSED_LOGGED.swap(true, Ordering::Relaxed) {
                tracing::warn!(error = %e, "--ktls: a connection's socket refused TCP_ULP \"tls\"; such connections keep rustls (logged once)");
            }
            false
        }
    }
}

/// Step 3: both directions' keys. An error leaves a connection nobody can encrypt for
/// (rustls gave its keys up): the caller closes it.
pub fn install_keys(sock: &Socket, tx: &CryptoInfo, rx: &CryptoInfo) -> std::io::Result<()> {
    install(sock.as_raw_fd(), TLS_TX, tx)?;
    install(sock.as_raw_fd(), TLS_RX, rx)
}

/// Sends a close_notify alert through the kernel's record layer (best effort: a full
/// socket buffer drops it, as the connection ends anyway).
pub fn close_notify(sock: &Socket) {
    let alert = [1u8, 0]; // warning, close_notify (RFC 8446 §6.1)
    let mut iov = libc::iovec {
        iov_base: alert.as_ptr().cast_mut().cast(),
        iov_len: alert.len(),
    };
    // SAFETY: CMSG_SPACE only computes a size.
    let space = unsafe { libc::CMSG_SPACE(1) } as usize;
    let mut control = vec![0u8; space];
    // SAFETY: an all-zero msghdr is valid (null pointers, zero lengths).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    // SAFETY: (1) `msg` names `control`, which has room for one cmsg with a 1-byte payload
    // (CMSG_SPACE(1)), so CMSG_FIRSTHDR is non-null and in bounds; (2) the header and data
    // writes stay inside `control`; (3) `iov` and `alert` outlive the sendmsg call.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_TLS;
        (*cmsg).cmsg_type = TLS_SET_RECORD_TYPE;
        (*cmsg).cmsg_len = libc::CMSG_LEN(1) as _;
        *libc::CMSG_DATA(cmsg) = 21; // content type: alert
        libc::sendmsg(
            sock.as_raw_fd(),
            &msg,
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_answers_without_panicking_and_names_a_reason_when_missing() {
        match probe() {
            Probe::Available => {}
            Probe::Missing(why) => assert!(!why.is_empty()),
        }
    }

    #[test]
    fn probe_is_asked_once_and_agrees_with_a_fresh_one() {
        assert_eq!(probed(), &probe());
        assert!(std::ptr::eq(probed(), probed()));
        assert_eq!(available(), probe() == Probe::Available);
    }
}
