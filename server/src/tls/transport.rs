//! What a connection reads and writes through.
//!
//! A plain socket (TCP or Unix) passes every call straight to the socket: responses still go out with one
//! `writev` from shared memory, untouched by TLS. A TLS connection runs a
//! `rustls::ServerConnection` over the same socket: reads decrypt into the connection's read
//! buffer, and a response frame is encrypted straight from its shared-memory slice into one
//! record buffer that is written with one `write`.

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Duration;

use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};
use rustls::ServerConnection;

use super::config::Loaded;

use crate::net::{Peer, Socket};
use crate::zerocopy::Frame;

/// Ciphertext read per socket read: one full TLS record and its overhead.
const RECORD_READ: usize = 16 * 1024 + 512;

pub enum Transport {
    Plain(Socket),
    Tls(Box<TlsStream>),
}

pub struct TlsStream {
    sock: Socket,
    tls: ServerConnection,
    /// Ciphertext read from the socket and not yet handed to rustls.
    incoming: Vec<u8>,
    /// Ciphertext rustls produced, written out before anything else happens.
    outgoing: Vec<u8>,
    /// Decrypted bytes rustls holds for us.
    plaintext: usize,
    /// The peer closed (EOF on the socket or a close_notify).
    closed: bool,
    /// The leaf certificate this connection was served (DER).
    server_cert: Arc<[u8]>,
}

fn broken(e: rustls::Error) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, e)
}

/// Runs the TLS handshake on a freshly accepted socket, bounded by `limit`. `None`: it
/// failed (garbage, plain HTTP, a stall past the limit, a bad client certificate); the
/// socket is closed and the reason logged at debug level.
pub async fn handshake(
    sock: Socket,
    loaded: Loaded,
    limit: Duration,
    peer: Peer,
) -> Option<TlsStream> {
    let tls = match ServerConnection::new(loaded.config) {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(%peer, error = %e, "TLS session could not be set up");
            return None;
        }
    };
    let mut s = TlsStream {
        sock,
        tls,
        incoming: Vec::with_capacity(RECORD_READ),
        outgoing: Vec::new(),
        plaintext: 0,
        closed: false,
        server_cert: loaded.leaf,
    };
    let done = monoio::time::timeout(limit, s.complete_handshake()).await;
    match done {
        Ok(Ok(())) => Some(s),
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "TLS handshake failed; closing");
            let _ = s.sock.shutdown().await;
            None
        }
        Err(_) => {
            tracing::debug!(%peer, "TLS handshake took longer than --timeout-header-read; closing");
            let _ = s.sock.shutdown().await;
            None
        }
    }
}

impl TlsStream {
    async fn complete_handshake(&mut self) -> std::io::Result<()> {
        while self.tls.is_handshaking() {
            self.flush().await?;
            if self.closed {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            self.read_records().await?;
        }
        self.flush().await
    }

    /// Writes whatever ciphertext rustls has queued.
    async fn flush(&mut self) -> std::io::Result<()> {
        while self.tls.wants_write() {
            let mut out = std::mem::take(&mut self.outgoing);
            out.clear();
            while self.tls.wants_write() {
                self.tls.write_tls(&mut out)?;
            }
            let (res, out) = self.sock.write_all(out).await;
            self.outgoing = out;
            res?;
        }
        Ok(())
    }

    /// Reads one batch of ciphertext from the socket and lets rustls process it. On a
    /// protocol error the alert rustls queued is sent before the error is returned.
    async fn read_records(&mut self) -> std::io::Result<()> {
        let mut buf = std::mem::take(&mut self.incoming);
        buf.clear();
        let (res, slice) = self.sock.read(buf.slice_mut(0..RECORD_READ)).await;
        let buf = slice.into_inner();
        let n = match res {
            Ok(n) => n,
            Err(e) => {
                self.incoming = buf;
                return Err(e);
            }
        };
        if n == 0 {
            self.closed = true;
            self.incoming = buf;
            return Ok(());
        }
        let mut rest = &buf[..n];
        while !rest.is_empty() {
            self.tls.read_tls(&mut rest)?;
            match self.tls.process_new_packets() {
                Ok(state) => {
                    self.plaintext = state.plaintext_bytes_to_read();
                    if state.peer_has_closed() {
                        self.closed = true;
                    }
                }
                Err(e) => {
                    let _ = self.flush().await;
                    self.incoming = buf;
                    return Err(broken(e));
                }
            }
        }
        self.incoming = buf;
        Ok(())
    }

    /// Appends decrypted bytes to `buf` (up to its capacity); 0 at the end of the stream.
    async fn read_into(&mut self, mut buf: Vec<u8>) -> (std::io::Result<usize>, Vec<u8>) {
        loop {
            if self.plaintext > 0 {
                if buf.len() == buf.capacity() {
                    buf.reserve(self.plaintext);
                }
                let len = buf.len();
                let room = buf.capacity() - len;
                buf.resize(len + room.min(self.plaintext), 0);
                let got = self.tls.reader().read(&mut buf[len..]);
                let n = match got {
                    Ok(n) => n,
                    Err(e) => {
                        buf.truncate(len);
                        return (Err(e), buf);
                    }
                };
                buf.truncate(len + n);
                self.plaintext -= n;
                return (Ok(n), buf);
            }
            if self.closed {
                return (Ok(0), buf);
            }
            if let Err(e) = self.read_records().await {
                return (Err(e), buf);
            }
            if let Err(e) = self.flush().await {
                return (Err(e), buf);
            }
        }
    }

    /// Encrypts `pieces` and writes the records out.
    async fn send(&mut self, pieces: &[&[u8]]) -> std::io::Result<usize> {
        let mut total = 0;
        for piece in pieces {
            let mut rest = *piece;
            while !rest.is_empty() {
                // rustls buffers at most 64 KiB of records: past that it takes nothing
                // until they are written out.
                let n = self.tls.writer().write(rest)?;
                if n == 0 {
                    if !self.tls.wants_write() {
                        return Err(std::io::ErrorKind::WriteZero.into());
                    }
                    self.flush().await?;
                }
                rest = &rest[n..];
            }
            total += piece.len();
        }
        self.flush().await?;
        Ok(total)
    }

    /// Whether ALPN chose HTTP/2.
    pub fn alpn_h2(&self) -> bool {
        self.tls.alpn_protocol() == Some(b"h2")
    }

    /// The socket and the session, for HTTP/2 to drive itself (`h2::H2Io`). Nothing is
    /// lost: after the handshake, bytes read and not yet taken are inside the session.
    pub fn into_parts(self: Box<Self>) -> (Socket, Box<ServerConnection>) {
        let this = *self;
        (this.sock, Box::new(this.tls))
    }

    /// The connection's facts for the ASGI tls extension, encoded once for every request
    /// head of the connection (`uringapi_protocol::head::TlsSection`).
    pub fn section(&self) -> Option<Vec<u8>> {
        let chain: Vec<&[u8]> = self
            .tls
            .peer_certificates()
            .map(|c| c.iter().map(|d| d.as_ref()).collect())
            .unwrap_or_default();
        let name = chain
            .first()
            .map(|leaf| super::names::subject(leaf))
            .unwrap_or_default();
        let section = uringapi_protocol::head::TlsSection {
            version: self.tls.protocol_version().map_or(0, u16::from),
            cipher_suite: self
                .tls
                .negotiated_cipher_suite()
                .map_or(0, |s| u16::from(s.suite())),
            server_cert: &self.server_cert,
            client_name: name.as_bytes(),
            client_chain: chain,
        };
        // Too large only with a client chain past 255 certificates or 64 KiB each: the app
        // then sees no tls extension rather than a wrong one.
        section.encode().ok()
    }
}

impl Transport {
    /// The socket under the stream (for a peek).
    pub fn socket(&self) -> &Socket {
        match self {
            Transport::Plain(s) => s,
            Transport::Tls(t) => &t.sock,
        }
    }

    /// Appends what the client sent to `buf`, up to its capacity; `Ok(0)`: end of stream.
    pub async fn read(&mut self, buf: Vec<u8>) -> (std::io::Result<usize>, Vec<u8>) {
        match self {
            Transport::Plain(sock) => {
                let (len, cap) = (buf.len(), buf.capacity());
                let (res, slice) = sock.read(buf.slice_mut(len..cap)).await;
                (res, slice.into_inner())
            }
            // Boxed (here and below): a TLS call's state is large and would size the
            // task of every connection, plain ones included, idle ones included.
            // PERF: one allocation per TLS read or write, next to its crypto.
            Transport::Tls(t) => Box::pin(t.read_into(buf)).await,
        }
    }

    pub async fn write_all(&mut self, bytes: Vec<u8>) -> (std::io::Result<usize>, Vec<u8>) {
        match self {
            Transport::Plain(sock) => sock.write_all(bytes).await,
            Transport::Tls(t) => {
                let res = Box::pin(t.send(&[&bytes])).await;
                (res, bytes)
            }
        }
    }

    /// One vectored write of a response frame: plain TCP writes it from shared memory as it
    /// is (partial writes possible); TLS encrypts all of it and writes the records.
    pub async fn writev(&mut self, frame: Frame) -> (std::io::Result<usize>, Frame) {
        match self {
            Transport::Plain(sock) => sock.writev(frame).await,
            Transport::Tls(t) => {
                let res = Box::pin(t.send(&frame.pieces())).await;
                (res, frame)
            }
        }
    }

    /// Waits until the client sent something (or left) while no read is pending. Bytes
    /// rustls already decrypted count as ready at once.
    pub async fn readable(&self) -> std::io::Result<()> {
        match self {
            Transport::Plain(sock) => sock.readable().await,
            Transport::Tls(t) if t.plaintext > 0 => Ok(()),
            Transport::Tls(t) => t.sock.readable().await,
        }
    }

    /// Decrypted bytes waiting in rustls (a pipelined request the socket no longer shows).
    pub fn is_tls(&self) -> bool {
        matches!(self, Transport::Tls(_))
    }

    pub fn buffered(&self) -> bool {
        matches!(self, Transport::Tls(t) if t.plaintext > 0)
    }

    /// Ends the stream: TLS sends close_notify first.
    pub async fn shutdown(&mut self) -> std::io::Result<()> {
        match self {
            Transport::Plain(sock) => sock.shutdown().await,
            Transport::Tls(t) => {
                t.tls.send_close_notify();
                let _ = Box::pin(t.flush()).await;
                t.sock.shutdown().await
            }
        }
    }

    /// The encoded tls extension facts (`TlsStream::section`); `None` on plain TCP.
    pub fn tls_section(&self) -> Option<Vec<u8>> {
        match self {
            Transport::Plain(_) => None,
            Transport::Tls(t) => t.section(),
        }
    }
}
