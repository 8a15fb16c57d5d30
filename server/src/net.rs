//! The sockets a front-end thread serves: TCP (`--host/--port`, `--fd`, socket activation)
//! or a Unix stream socket (`--uds`). Everything above this file (TLS, HTTP/1.1) reads and
//! writes a [`Socket`] and does not care which it is; only the addresses differ: a Unix
//! socket's client has no address the ASGI scope can show (`client` is `None`, as uvicorn
//! gives it), and its `server` is the socket's path, which the workers know from start-up.
//! [`bind`] opens the TCP listeners (the supervisor's, and the `native-ref` server's).

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, RawFd};

use monoio::buf::{IoBuf, IoBufMut, IoVecBuf, IoVecBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRent};
use monoio::BufResult;

use crate::failure::Failure;

/// A listening socket handed to a front-end thread (std types: built before the runtime).
#[derive(Debug)]
pub enum Listener {
    Tcp(std::net::TcpListener),
    Unix(std::os::unix::net::UnixListener),
}

/// A listener adopted by a thread's runtime.
pub enum Accepting {
    Tcp(monoio::net::TcpListener),
    Unix(monoio::net::UnixListener),
}

impl Accepting {
    pub fn adopt(l: Listener) -> std::io::Result<Self> {
        Ok(match l {
            Listener::Tcp(l) => Self::Tcp(monoio::net::TcpListener::from_std(l)?),
            Listener::Unix(l) => Self::Unix(monoio::net::UnixListener::from_std(l)?),
        })
    }

    /// The next connection, with its peer and the local address (TCP only). Cancelled
    /// through `cancel`, it still ends with the connection if the kernel took one first,
    /// where dropping the future would leave that connection accepted and never closed.
    pub async fn accept(
        &self,
        cancel: monoio::io::CancelHandle,
    ) -> std::io::Result<(Socket, Peer, Option<SocketAddr>)> {
        match self {
            Self::Tcp(l) => {
                let (sock, peer) = l.cancelable_accept(cancel).await?;
                Ok(tcp(sock, peer))
            }
            Self::Unix(l) => {
                let (sock, _) = l.cancelable_accept(cancel).await?;
                Ok((Socket::Unix(sock), Peer(None), None))
            }
        }
    }

    /// The connections waiting in the accept queue, taken without waiting (at most `max`).
    /// A draining thread serves them before closing its listener: closing would reset them,
    /// and their clients have connected and may have sent a request. The listeners are
    /// non-blocking (`bind`, supervisor/listen.rs, supervisor/uds.rs), so an empty queue
    /// ends the loop at once. They are accepted outside the ring, in the mode the thread's
    /// driver gives its own accepts.
    pub fn queued(&self, max: usize) -> Vec<(Socket, Peer, Option<SocketAddr>)> {
        let nonblocking = monoio::utils::is_legacy();
        let mut taken = Vec::new();
        while taken.len() < max {
            let fd = match self {
                Self::Tcp(l) => crate::sys::accept_queued(l, nonblocking),
                Self::Unix(l) => crate::sys::accept_queued(l, nonblocking),
            };
            let fd = match fd {
                Ok(Some(fd)) => fd,
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!(error = %e, "taking the queued connections stopped");
                    break;
                }
            };
            // A client that has reset already fails here, and only it is skipped.
            match self.adopt_queued(fd) {
                Ok(conn) => taken.push(conn),
                Err(e) => tracing::debug!(error = %e, "a queued connection is gone"),
            }
        }
        taken
    }

    fn adopt_queued(
        &self,
        fd: std::os::fd::OwnedFd,
    ) -> std::io::Result<(Socket, Peer, Option<SocketAddr>)> {
        Ok(match self {
            Self::Tcp(_) => {
                let sock = std::net::TcpStream::from(fd);
                let peer = sock.peer_addr()?;
                tcp(monoio::net::TcpStream::from_std(sock)?, peer)
            }
            Self::Unix(_) => {
                let sock = monoio::net::UnixStream::from_std(fd.into())?;
                (Socket::Unix(sock), Peer(None), None)
            }
        })
    }
}

/// An accepted TCP connection as the threads serve it: no Nagle delay, with its local
/// address.
fn tcp(sock: monoio::net::TcpStream, peer: SocketAddr) -> (Socket, Peer, Option<SocketAddr>) {
    let local = sock.local_addr().unwrap_or(peer);
    let _ = sock.set_nodelay(true);
    (Socket::Tcp(sock), Peer(Some(peer)), Some(local))
}

/// Who is on the other end: an IP address, or `None` on a Unix socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer(pub Option<SocketAddr>);

impl Peer {
    pub fn addr(self) -> Option<SocketAddr> {
        self.0
    }

    pub fn ip(self) -> Option<IpAddr> {
        self.0.map(|a| a.ip())
    }
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(a) => a.fmt(f),
            None => f.write_str("unix-socket"),
        }
    }
}

/// A connected stream socket.
pub enum Socket {
    Tcp(monoio::net::TcpStream),
    Unix(monoio::net::UnixStream),
}

impl Socket {
    /// Waits until the socket is readable (data or EOF) while no read is pending.
    pub async fn readable(&self) -> std::io::Result<()> {
        match self {
            Self::Tcp(s) => s.readable(false).await,
            Self::Unix(s) => s.readable(false).await,
        }
    }

    /// Waits until the socket takes more bytes (for writes made outside the ring).
    pub async fn writable(&self) -> std::io::Result<()> {
        match self {
            Self::Tcp(s) => s.writable(false).await,
            Self::Unix(s) => s.writable(false).await,
        }
    }

    /// Sends `len` bytes of `file` from `offset` with `sendfile`, straight from the page
    /// cache (through the kernel's record layer under kTLS). Each call is non-blocking
    /// (`sys::sendfile`): a full buffer waits for writability on the ring, never blocks the
    /// thread. Pages not in the page cache would be read from disk inside the call: the
    /// caller checks (`sys::in_page_cache`). With `stall`, a socket that stays full that long
    /// (the client reads nothing) fails the send with `TimedOut`.
    pub async fn send_file(
        &self,
        file: &impl AsRawFd,
        mut offset: u64,
        len: u64,
        stall: Option<std::time::Duration>,
    ) -> std::io::Result<()> {
        let mut left = len;
        while left > 0 {
            let want = left.min(SENDFILE_MAX) as usize;
            match crate::sys::sendfile(self, file, offset, want) {
                Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => {
                    offset += n as u64;
                    left -= n as u64;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => match stall {
                    None => self.writable().await?,
                    Some(stall) => monoio::select! {
                        r = self.writable() => r?,
                        _ = crate::deadline::after(stall) => {
                            return Err(std::io::ErrorKind::TimedOut.into());
                        }
                    },
                },
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// Bytes handed to one `sendfile` call: under kTLS the kernel encrypts them inside the
/// call, so this bounds the time one connection holds the thread (the call also stops at a
/// full socket buffer).
pub const SENDFILE_MAX: u64 = 1 << 20;

impl AsRawFd for Socket {
    fn as_raw_fd(&self) -> RawFd {
        match self {
            Self::Tcp(s) => s.as_raw_fd(),
            Self::Unix(s) => s.as_raw_fd(),
        }
    }
}

// Plain delegation: both arms submit the same io_uring (or epoll) operation on their fd.
impl AsyncReadRent for Socket {
    async fn read<T: IoBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            Self::Tcp(s) => s.read(buf).await,
            Self::Unix(s) => s.read(buf).await,
        }
    }

    async fn readv<T: IoVecBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            Self::Tcp(s) => s.readv(buf).await,
            Self::Unix(s) => s.readv(buf).await,
        }
    }
}

impl AsyncWriteRent for Socket {
    async fn write<T: IoBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            Self::Tcp(s) => s.write(buf).await,
            Self::Unix(s) => s.write(buf).await,
        }
    }

    async fn writev<T: IoVecBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            Self::Tcp(s) => s.writev(buf).await,
            Self::Unix(s) => s.writev(buf).await,
        }
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Self::Tcp(s) => s.flush().await,
            Self::Unix(s) => s.flush().await,
        }
    }

    async fn shutdown(&mut self) -> std::io::Result<()> {
        match self {
            Self::Tcp(s) => s.shutdown().await,
            Self::Unix(s) => s.shutdown().await,
        }
    }
}

/// Binds one SO_REUSEPORT listener (each front-end thread gets its own).
pub fn bind(addr: SocketAddr, backlog: i32) -> Result<std::net::TcpListener, Failure> {
    use socket2::{Domain, Protocol, Socket, Type};
    let fail = |e| bind_failure(addr, e);
    let s =
        Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP)).map_err(fail)?;
    s.set_reuse_address(true).map_err(fail)?;
    s.set_reuse_port(true).map_err(fail)?;
    s.set_nonblocking(true).map_err(fail)?;
    s.bind(&addr.into()).map_err(fail)?;
    s.listen(backlog).map_err(fail)?;
    Ok(s.into())
}

/// Fails as a bind would when anything listens on `addr` already. SO_REUSEPORT lets a
/// second uringapi (or any program of the same user that sets it) bind the port beside the
/// first, and the kernel would then split the connections between the two: an old server
/// left running would silently take half the traffic. A socket without SO_REUSEPORT cannot
/// share the port, so binding one first tells (SO_REUSEADDR still ignores connections in
/// TIME_WAIT, as the listeners do). Port 0 is always free.
pub fn check_free(addr: SocketAddr) -> Result<(), Failure> {
    use socket2::{Domain, Protocol, Socket, Type};
    if addr.port() == 0 {
        return Ok(());
    }
    let fail = |e| bind_failure(addr, e);
    let s =
        Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP)).map_err(fail)?;
    s.set_reuse_address(true).map_err(fail)?;
    s.bind(&addr.into()).map_err(fail)
}

fn bind_failure(addr: SocketAddr, e: std::io::Error) -> Failure {
    let hint = match e.raw_os_error() {
        Some(libc::EADDRINUSE) => format!(
            "another process is listening on port {}; stop it or pick another with --port",
            addr.port()
        ),
        Some(libc::EACCES) => {
            "ports below 1024 need root or CAP_NET_BIND_SERVICE; pick a port above 1024".to_string()
        }
        Some(libc::EADDRNOTAVAIL) => {
            "that address is not on this machine; use 127.0.0.1 or 0.0.0.0".to_string()
        }
        _ => "check --host and --port".to_string(),
    };
    Failure::new(format!("cannot listen on {addr}: {e}"), hint)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_our_own_listeners_hold_is_not_free() {
        let l = bind("127.0.0.1:0".parse().unwrap(), 16).unwrap();
        let addr = l.local_addr().unwrap();
        let e = check_free(addr).unwrap_err();
        assert!(e.hint.contains(&addr.port().to_string()), "{}", e.hint);
        drop(l);
        check_free(addr).unwrap();
        check_free("127.0.0.1:0".parse().unwrap()).unwrap();
    }
}
