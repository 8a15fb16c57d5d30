#![allow(unsafe_code)]
//! `--ktls`: whether the kernel can take over TLS record encryption (`TCP_ULP "tls"`).
//!
//! What is done: the probe at start-up and the fallback. The probe attaches the "tls" upper
//! layer protocol to a connected loopback socket, exactly what a kTLS connection needs first;
//! a kernel built without CONFIG_TLS answers ENOENT. Either way connections keep using rustls
//! for records, and one log line says so. Not done: installing TLS_TX/TLS_RX keys from
//! `dangerous_extract_secrets` and sending files with sendfile over kTLS (README, "TLS").

use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;

/// The kernel's answer to attaching the "tls" ULP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    Available,
    Missing(String),
}

/// Attaches `TCP_ULP "tls"` to a connected loopback socket and reports what the kernel said.
pub fn probe() -> Probe {
    let attempt = || -> std::io::Result<()> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        let client = TcpStream::connect(listener.local_addr()?)?;
        let _server = listener.accept()?;
        let name = b"tls";
        // SAFETY: a valid fd and a valid 3-byte buffer for the option value.
        let rc = unsafe {
            libc::setsockopt(
                client.as_raw_fd(),
                libc::SOL_TCP,
                libc::TCP_ULP,
                name.as_ptr().cast(),
                name.len() as libc::socklen_t,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    };
    match attempt() {
        Ok(()) => Probe::Available,
        Err(e) => Probe::Missing(e.to_string()),
    }
}

/// Runs the probe once at start-up and logs the outcome in one line.
pub fn announce() {
    match probe() {
        Probe::Missing(why) => tracing::warn!(
            reason = %why,
            "--ktls: this kernel has no kTLS (TCP_ULP \"tls\" refused); TLS records are encrypted by rustls"
        ),
        Probe::Available => tracing::warn!(
            "--ktls: the kernel has kTLS, but handing keys to it is not implemented yet; TLS records are encrypted by rustls"
        ),
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
}
