//! What a connection reads and writes through.
//!
//! A plain socket (TCP or Unix) passes every call straight to the socket: responses still go out with one
//! `writev` from shared memory, untouched by TLS. A TLS connection runs a
//! `rustls::ServerConnection` over the same socket: reads decrypt into the connection's read
//! buffer, and a response frame is encrypted straight from its shared-memory slice into one
//! record buffer that is written with one `write`. A kTLS connection (`--ktls`, `ktls.rs`)
//! is a plain socket again once the kernel has the keys: plaintext `writev` from shared
//! memory and `sendfile` for files, the kernel making the records.

use std::future::Future;
use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Duration;

use monoio::buf::{IoBuf, IoBufMut};
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
    Ktls(Box<KtlsStream>),
}

/// A TLS connection whose records the kernel makes and reads (`ktls.rs`).
pub struct KtlsStream {
    sock: Socket,
    /// The tls extension facts, taken from rustls before it gave its keys up.
    section: Option<Vec<u8>>,
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
    /// The handshake reads one record at a time and the session may go to the kernel
    /// (`--ktls` on a kernel that has it).
    ktls: bool,
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
        ktls: loaded.ktls,
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
        // TLS 1.3: all rustls queues after the client's Finished is session tickets, which
        // the client does not wait for; they go out with the first response. TLS 1.2's last
        // flight, and everything before kTLS or HTTP/2 takes the session, goes now.
        // PERF: https-hello-newconn (benches/e2e, 2 shared cores): one write fewer per
        // connection; with the three other changes of its commit (vectored writes, AES-128
        // first, no rustls logging) 272.7 -> 217.9 CPU-µs/req, not measured alone
        // (benches/results/https-2026-12-04{-before,}.json).
        let tls13 = self.tls.protocol_version() == Some(rustls::ProtocolVersion::TLSv1_3);
        if tls13 && !self.ktls && self.tls.alpn_protocol() != Some(b"h2") {
            return Ok(());
        }
        self.flush().await
    }

    /// Writes whatever ciphertext rustls has queued.
    async fn flush(&mut self) -> std::io::Result<()> {
        self.flush_noting(None, &mut || {}).await
    }

    /// [`flush`](Self::flush), calling `fell_behind` each time the socket takes only part
    /// of a write (the client reads slower than we write), before waiting for the rest.
    /// With `stall`, a socket write that takes nothing for that long fails with `TimedOut`.
    async fn flush_noting(
        &mut self,
        stall: Option<Duration>,
        fell_behind: &mut dyn FnMut(),
    ) -> std::io::Result<()> {
        while self.tls.wants_write() {
            let mut out = std::mem::take(&mut self.outgoing);
            out.clear();
            while self.tls.wants_write() {
                self.tls.write_tls(&mut out)?;
            }
            let mut written = 0;
            let mut res = Ok(());
            while written < out.len() {
                let (r, slice) = match within(stall, self.sock.write(out.slice(written..))).await {
                    Ok(done) => done,
                    Err(timed_out) => {
                        // The write was dropped in flight, and its buffer with it.
                        self.outgoing = Vec::new();
                        return Err(timed_out);
                    }
                };
                out = slice.into_inner();
                match r {
                    Ok(0) => res = Err(std::io::ErrorKind::WriteZero.into()),
                    Ok(n) => {
                        written += n;
                        if written < out.len() {
                            fell_behind();
                        }
                        continue;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => res = Err(e),
                }
                break;
            }
            self.outgoing = out;
            res?;
        }
        Ok(())
    }

    /// Reads one batch of ciphertext from the socket (one whole record while a kTLS
    /// handshake runs, so nothing after its last record is taken from the kernel) and lets
    /// rustls process it. On a protocol error the alert rustls queued is sent before the
    /// error is returned.
    async fn read_records(&mut self) -> std::io::Result<()> {
        let mut buf = std::mem::take(&mut self.incoming);
        buf.clear();
        // Empty after a read that was dropped in flight (its buffer went with it).
        buf.reserve(RECORD_READ);
        let (res, buf) = if self.ktls && self.tls.is_handshaking() {
            read_one_record(&mut self.sock, buf).await
        } else {
            let (res, slice) = self.sock.read(buf.slice_mut(0..RECORD_READ)).await;
            (res, slice.into_inner())
        };
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
            if let Some(res) = self.take_plaintext(&mut buf) {
                return (res, buf);
            }
            // What rustls queues while reading (tickets, a KeyUpdate answer) goes with the
            // next write; an alert for a bad record is sent by read_records itself.
            if let Err(e) = self.read_records().await {
                return (Err(e), buf);
            }
        }
    }

    /// What a read can return without touching the socket: decrypted bytes rustls holds
    /// (appended to `buf`, up to its capacity) or the end of the stream. `None`: records
    /// must be read first.
    fn take_plaintext(&mut self, buf: &mut Vec<u8>) -> Option<std::io::Result<usize>> {
        if self.plaintext == 0 {
            return self.closed.then_some(Ok(0));
        }
        if buf.len() == buf.capacity() {
            buf.reserve(self.plaintext);
        }
        let len = buf.len();
        let room = buf.capacity() - len;
        buf.resize(len + room.min(self.plaintext), 0);
        match self.tls.reader().read(&mut buf[len..]) {
            Ok(n) => {
                buf.truncate(len + n);
                self.plaintext -= n;
                Some(Ok(n))
            }
            Err(e) => {
                buf.truncate(len);
                Some(Err(e))
            }
        }
    }

    /// Waits for the client's next records on an idle connection and decrypts them, so
    /// that the next read needs no I/O. `Ok` once plaintext waits or the stream ended.
    async fn await_records(&mut self) -> std::io::Result<()> {
        while self.plaintext == 0 && !self.closed {
            self.read_records().await?;
        }
        Ok(())
    }

    /// Encrypts a response frame and writes the records out. Its pieces (head, body slot
    /// and suffix) go to rustls as one vectored write, so they share records.
    /// PERF: https-hello (benches/e2e, 2 shared cores): one record per response instead of
    /// one per piece (head, then body), one AEAD seal and one record buffer fewer; with the
    /// other changes of its commit 41.1 -> 26.4 CPU-µs/req, not measured alone
    /// (benches/results/https-2026-12-04{-before,}.json).
    ///
    /// The frame's slot goes back to the worker once rustls has the bytes, before the
    /// records are written; and at once, as a copy, if the socket falls behind while the
    /// frame is still being encrypted (`fell_behind` is called then as well).
    async fn send_frame(
        &mut self,
        frame: &mut Frame,
        stall: Option<Duration>,
        fell_behind: &mut dyn FnMut(),
    ) -> std::io::Result<usize> {
        let total = frame.total_len();
        let mut done = 0;
        while done < total {
            let n = self.encrypt(&frame.pieces(), done)?;
            if n == 0 {
                let mut behind = || {
                    frame.detach_body();
                    fell_behind();
                };
                self.flush_noting(stall, &mut behind).await?;
            }
            done += n;
        }
        frame.consumed();
        self.flush_noting(stall, fell_behind).await?;
        Ok(total)
    }

    /// Hands `pieces`, from byte `done` on, to rustls as one vectored write: the bytes it
    /// took (it buffers at most 64 KiB of records, then takes nothing until they are
    /// written out; 0 with nothing to write is an error).
    fn encrypt(&mut self, pieces: &[&[u8]], done: usize) -> std::io::Result<usize> {
        let mut skip = done;
        let mut slices = Vec::with_capacity(pieces.len());
        for piece in pieces {
            if skip >= piece.len() {
                skip -= piece.len();
                continue;
            }
            slices.push(std::io::IoSlice::new(&piece[skip..]));
            skip = 0;
        }
        let n = self.tls.writer().write_vectored(&slices)?;
        if n == 0 && !self.tls.wants_write() {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        Ok(n)
    }

    /// Hands the session's keys to the kernel when the connection asked for it
    /// (`ktls.rs`). `None`: the kernel took the ULP but not the keys, and the connection
    /// (whose rustls session is gone) is closed.
    pub fn into_transport(self: Box<Self>, peer: Peer) -> Option<Transport> {
        use super::crypto_info::CryptoInfo;
        // Only TCP has the ULP; a session holding bytes not yet read or written cannot
        // move (neither happens after a record-at-a-time handshake, flushed).
        let movable = self.ktls
            && matches!(self.sock, Socket::Tcp(_))
            && self.plaintext == 0
            && !self.closed
            && !self.tls.wants_write();
        if !movable {
            return Some(Transport::Tls(self));
        }
        if !super::ktls::attach(&self.sock) {
            return Some(Transport::Tls(self));
        }
        let section = self.section();
        let TlsStream { sock, tls, .. } = *self;
        let keys = || -> Result<(CryptoInfo, CryptoInfo), String> {
            let version = tls.protocol_version().ok_or("no protocol version")?;
            let s = tls.dangerous_extract_secrets().map_err(|e| e.to_string())?;
            let tx = CryptoInfo::new(version, s.tx.0, &s.tx.1).map_err(|e| e.to_string())?;
            let rx = CryptoInfo::new(version, s.rx.0, &s.rx.1).map_err(|e| e.to_string())?;
            Ok((tx, rx))
        };
        let installed = keys().and_then(|(tx, rx)| {
            super::ktls::install_keys(&sock, &tx, &rx).map_err(|e| e.to_string())
        });
        match installed {
            Ok(()) => Some(Transport::Ktls(Box::new(KtlsStream { sock, section }))),
            Err(e) => {
                tracing::warn!(%peer, error = %e, "--ktls: the keys could not go to the kernel; closing the connection");
                None
            }
        }
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
            Transport::Ktls(k) => &k.sock,
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
            Transport::Tls(t) => {
                let mut buf = buf;
                // Decrypted bytes already there (after `idle_read`): no I/O, no box.
                if let Some(res) = t.take_plaintext(&mut buf) {
                    return (res, buf);
                }
                Box::pin(t.read_into(buf)).await
            }
            Transport::Ktls(k) => {
                let (len, cap) = (buf.len(), buf.capacity());
                let (res, slice) = k.sock.read(buf.slice_mut(len..cap)).await;
                match res {
                    // A record that is not application data: the client's close_notify (or
                    // another alert, or a TLS 1.3 KeyUpdate the kernel cannot follow) ends
                    // the connection as a clean close.
                    Err(e) if e.raw_os_error() == Some(libc::EIO) => {
                        tracing::debug!(error = %e, "kTLS: a non-application record; closing");
                        (Ok(0), slice.into_inner())
                    }
                    res => (res, slice.into_inner()),
                }
            }
        }
    }

    pub async fn write_all(&mut self, bytes: Vec<u8>) -> (std::io::Result<usize>, Vec<u8>) {
        match self {
            Transport::Plain(sock) => sock.write_all(bytes).await,
            Transport::Ktls(k) => k.sock.write_all(bytes).await,
            Transport::Tls(t) => {
                let mut frame = Frame::new(bytes, None, b"");
                let res = Box::pin(t.send_frame(&mut frame, None, &mut || {})).await;
                (res, frame.into_prefix())
            }
        }
    }

    /// Writes all of a response frame and gives its prefix buffer back for reuse. Plain TCP
    /// and kTLS write it from shared memory as it is; TLS encrypts it and writes the records.
    ///
    /// When the socket takes only part of a write, the client reads slower than the app
    /// writes: the frame's body is copied out of its slot (`Frame::detach_body`) and
    /// `fell_behind` is called, so that the caller copies the rest of the response too and
    /// the worker's slots go back. With `stall`, a write the socket takes nothing of for
    /// that long fails with `TimedOut` (over TLS: each write of its records).
    pub async fn write_frame(
        &mut self,
        mut frame: Frame,
        stall: Option<Duration>,
        fell_behind: &mut dyn FnMut(),
    ) -> std::io::Result<Vec<u8>> {
        let sock = match self {
            Transport::Plain(sock) => sock,
            Transport::Ktls(k) => &mut k.sock,
            Transport::Tls(t) => {
                Box::pin(t.send_frame(&mut frame, stall, fell_behind)).await?;
                return Ok(frame.into_prefix());
            }
        };
        while frame.total_len() > 0 {
            let (res, f) = within(stall, sock.writev(frame)).await?;
            frame = f;
            match res {
                Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
                Ok(n) if !frame.advance(n) => {
                    frame.detach_body();
                    fell_behind();
                }
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(frame.into_prefix())
    }

    /// Waits until the client sent something (or left) while no read is pending. Bytes
    /// rustls already decrypted count as ready at once.
    pub async fn readable(&self) -> std::io::Result<()> {
        match self {
            Transport::Plain(sock) => sock.readable().await,
            Transport::Ktls(k) => k.sock.readable().await,
            Transport::Tls(t) if t.plaintext > 0 => Ok(()),
            Transport::Tls(t) => t.sock.readable().await,
        }
    }

    /// Waits until an idle connection has something for `read`: the client's data or its
    /// end. A plain or kTLS socket is polled, so that no buffer is held while it waits; a
    /// TLS connection holds its record buffer anyway and reads the records into it at once.
    /// PERF: over TLS a keep-alive request costs two io_uring operations (read, write)
    /// instead of three (poll, read, write).
    pub async fn idle_read(&mut self) -> std::io::Result<()> {
        match self {
            Transport::Plain(sock) => sock.readable().await,
            Transport::Ktls(k) => k.sock.readable().await,
            Transport::Tls(t) => Box::pin(t.await_records()).await,
        }
    }

    /// Whether the kernel makes the records.
    pub fn is_ktls(&self) -> bool {
        matches!(self, Transport::Ktls(_))
    }

    /// Whether `send_file` works: the kernel writes the socket's bytes (plain TCP, kTLS).
    pub fn can_send_file(&self) -> bool {
        !matches!(self, Transport::Tls(_))
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
            Transport::Ktls(k) => {
                super::ktls::close_notify(&k.sock);
                k.sock.shutdown().await
            }
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
            Transport::Ktls(k) => k.section.clone(),
        }
    }

    /// Sends `len` bytes of `file` from `offset` with `sendfile` where the kernel writes the
    /// socket's bytes (plain TCP, kTLS); `None` over rustls, which reads the file through a
    /// buffer. `stall` as for [`Self::write_frame`].
    pub async fn send_file(
        &mut self,
        file: &impl std::os::fd::AsRawFd,
        offset: u64,
        len: u64,
        stall: Option<Duration>,
    ) -> Option<std::io::Result<()>> {
        match self {
            Transport::Plain(sock) => Some(sock.send_file(file, offset, len, stall).await),
            Transport::Ktls(k) => Some(k.sock.send_file(file, offset, len, stall).await),
            Transport::Tls(_) => None,
        }
    }
}

/// Reads exactly one TLS record (5-byte header, then its length) into `buf`; `Ok(0)`: the
/// peer closed before a whole record came.
async fn read_one_record(sock: &mut Socket, buf: Vec<u8>) -> (std::io::Result<usize>, Vec<u8>) {
    let (res, buf) = fill(sock, buf, 5).await;
    match res {
        Ok(true) => {}
        Ok(false) => return (Ok(0), buf),
        Err(e) => return (Err(e), buf),
    }
    // A length past any legal record is rustls's to refuse: hand it the header alone.
    let len = usize::from(u16::from_be_bytes([buf[3], buf[4]]));
    if len > RECORD_READ - 5 {
        return (Ok(5), buf);
    }
    let (res, buf) = fill(sock, buf, 5 + len).await;
    match res {
        Ok(true) => (Ok(5 + len), buf),
        Ok(false) => (Ok(0), buf),
        Err(e) => (Err(e), buf),
    }
}

/// Reads until `buf` holds `want` bytes; `Ok(false)` at end of stream.
async fn fill(
    sock: &mut Socket,
    mut buf: Vec<u8>,
    want: usize,
) -> (std::io::Result<bool>, Vec<u8>) {
    buf.reserve(want.saturating_sub(buf.len()));
    while buf.len() < want {
        let len = buf.len();
        let (res, slice) = sock.read(buf.slice_mut(len..want)).await;
        buf = slice.into_inner();
        match res {
            Ok(0) => return (Ok(false), buf),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return (Err(e), buf),
        }
    }
    (Ok(true), buf)
}

/// `fut`'s output, or `TimedOut` if `stall` passes first.
async fn within<T>(stall: Option<Duration>, fut: impl Future<Output = T>) -> std::io::Result<T> {
    let Some(stall) = stall else {
        return Ok(fut.await);
    };
    monoio::select! {
        out = fut => Ok(out),
        _ = crate::deadline::after(stall) => {
            Err(std::io::ErrorKind::TimedOut.into())
        }
    }
}

#[cfg(test)]
#[path = "transport_tests.rs"]
mod tests;
