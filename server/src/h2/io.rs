//! The byte pipe the `h2` crate reads and writes: tokio's `AsyncRead`/`AsyncWrite` over a
//! monoio socket, plain or TLS (rustls driven here, record by record).
//!
//! monoio's operations own their buffers until the kernel is done with them; tokio's traits
//! lend a buffer for one poll. The two meet in owned buffers: a read operation fills a
//! `Vec` this pipe owns, which is then copied out to h2 (or handed to rustls to decrypt);
//! what h2 writes is appended to an outgoing `Vec` (encrypted into it under TLS) that one
//! `write_all` operation then owns until it is out. The socket is split into its read and
//! write halves so that a read can stay pending while writes go out: h2 polls both from
//! one task.
//!
//! PERF: one copy each way on top of the kernel's, and one boxed future per socket
//! operation (README, "HTTP/2": the adaptor's cost measured against plain HTTP/1.1).

use std::future::Future;
use std::io::{self, Read, Write};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use monoio::io::{
    AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt, OwnedReadHalf, OwnedWriteHalf, Splitable,
};
use monoio::net::{TcpStream, UnixStream};
use rustls::ServerConnection;
use tokio::io::ReadBuf;

use super::meter::{Meter, Trip};
use crate::net::Socket;

/// Bytes asked of the socket per read: one full TLS record and its overhead (a larger read
/// could decrypt to more plaintext than rustls buffers).
const READ_SIZE: usize = 16 * 1024 + 512;

/// Outgoing bytes queued past which a write from h2 waits for the socket instead of
/// queueing more: the memory bound of a connection whose client does not read.
const WRITE_HIGH: usize = 64 * 1024;

type Op<T> = Pin<Box<dyn Future<Output = T>>>;
type ReadDone = (io::Result<usize>, Vec<u8>, ReadHalf);
type WriteDone = (io::Result<usize>, Vec<u8>, WriteHalf);

enum ReadHalf {
    Tcp(OwnedReadHalf<TcpStream>),
    Unix(OwnedReadHalf<UnixStream>),
}

enum WriteHalf {
    Tcp(OwnedWriteHalf<TcpStream>),
    Unix(OwnedWriteHalf<UnixStream>),
}

fn split(sock: Socket) -> (ReadHalf, WriteHalf) {
    match sock {
        Socket::Tcp(s) => {
            let (r, w) = s.into_split();
            (ReadHalf::Tcp(r), WriteHalf::Tcp(w))
        }
        Socket::Unix(s) => {
            let (r, w) = s.into_split();
            (ReadHalf::Unix(r), WriteHalf::Unix(w))
        }
    }
}

pub struct H2Io {
    tls: Option<Box<ServerConnection>>,
    /// Follows the frames h2 is handed (meter.rs).
    meter: Meter,
    rd: Option<ReadHalf>,
    reading: Option<Op<ReadDone>>,
    /// Plain: bytes read and not yet handed to h2 (from `inpos`). TLS: the last read's
    /// ciphertext, already given to rustls.
    inbuf: Vec<u8>,
    inpos: usize,
    eof: bool,
    wr: Option<WriteHalf>,
    writing: Option<Op<WriteDone>>,
    closing: Option<Op<io::Result<()>>>,
    /// Bytes for the socket not yet handed to a write operation.
    out: Vec<u8>,
    /// The buffer of the last finished write, reused for the next one.
    spare: Vec<u8>,
}

async fn read_op(mut rd: ReadHalf, mut buf: Vec<u8>) -> ReadDone {
    buf.clear();
    buf.reserve(READ_SIZE);
    let (res, buf) = match &mut rd {
        ReadHalf::Tcp(h) => h.read(buf).await,
        ReadHalf::Unix(h) => h.read(buf).await,
    };
    (res, buf, rd)
}

async fn write_op(mut wr: WriteHalf, buf: Vec<u8>) -> WriteDone {
    let (res, buf) = match &mut wr {
        WriteHalf::Tcp(h) => h.write_all(buf).await,
        WriteHalf::Unix(h) => h.write_all(buf).await,
    };
    (res, buf, wr)
}

async fn shutdown_op(mut wr: WriteHalf) -> io::Result<()> {
    match &mut wr {
        WriteHalf::Tcp(h) => h.shutdown().await,
        WriteHalf::Unix(h) => h.shutdown().await,
    }
}

fn gone() -> io::Error {
    io::ErrorKind::NotConnected.into()
}

impl H2Io {
    /// A plain connection whose first bytes (`read`, the client preface and whatever came
    /// with it) were already read by the HTTP/1.1 side.
    pub fn plain(sock: Socket, read: Vec<u8>) -> Self {
        Self::new(sock, None, read)
    }

    /// A TLS connection after its handshake (rustls may already hold decrypted bytes).
    pub fn tls(sock: Socket, mut tls: Box<ServerConnection>) -> Self {
        // Everything written is drained into `out` at once; `WRITE_HIGH` bounds it there.
        tls.set_buffer_limit(None);
        Self::new(sock, Some(tls), Vec::new())
    }

    fn new(sock: Socket, tls: Option<Box<ServerConnection>>, read: Vec<u8>) -> Self {
        let (rd, wr) = split(sock);
        Self {
            tls,
            meter: Meter::new(),
            rd: Some(rd),
            reading: None,
            inbuf: read,
            inpos: 0,
            eof: false,
            wr: Some(wr),
            writing: None,
            closing: None,
            out: Vec::new(),
            spare: Vec::new(),
        }
    }

    /// What the connection driver watches to close an abusive connection.
    pub fn meter(&self) -> std::rc::Rc<Trip> {
        self.meter.trip()
    }

    /// Moves what rustls has to send into `out`.
    fn take_tls_out(&mut self) -> io::Result<()> {
        if let Some(tls) = &mut self.tls {
            while tls.wants_write() {
                tls.write_tls(&mut self.out)?;
            }
        }
        Ok(())
    }

    /// Writes `out` to the socket; ready when all of it is written.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            if let Some(op) = &mut self.writing {
                let (res, mut buf, wr) = ready!(op.as_mut().poll(cx));
                self.writing = None;
                self.wr = Some(wr);
                buf.clear();
                self.spare = buf;
                res?;
            }
            if self.out.is_empty() {
                return Poll::Ready(Ok(()));
            }
            let Some(wr) = self.wr.take() else {
                return Poll::Ready(Err(gone()));
            };
            let next = std::mem::replace(&mut self.out, std::mem::take(&mut self.spare));
            self.writing = Some(Box::pin(write_op(wr, next)));
        }
    }

    /// Bytes the meter released from a hold, which go first (meter.rs); `false`: none.
    fn take_pending(meter: &mut Meter, buf: &mut ReadBuf<'_>) -> bool {
        let pending = meter.pending();
        if pending.is_empty() {
            return false;
        }
        let n = pending.len().min(buf.remaining());
        buf.put_slice(&pending[..n]);
        meter.took_pending(n);
        true
    }

    /// Hands decrypted or buffered bytes to `buf`. `None`: nothing available. Bytes the
    /// meter holds back are not handed yet: it reads on instead of handing h2 nothing
    /// (which h2 would take for the end of the stream).
    fn take_in(&mut self, buf: &mut ReadBuf<'_>) -> Option<io::Result<()>> {
        match &mut self.tls {
            None => loop {
                if Self::take_pending(&mut self.meter, buf) {
                    return Some(Ok(()));
                }
                let avail = self.inbuf.get(self.inpos..).unwrap_or_default();
                if avail.is_empty() {
                    return None;
                }
                let n = avail.len().min(buf.remaining());
                let ok = self.meter.feed(&avail[..n]);
                buf.put_slice(&avail[..ok]);
                self.inpos += n;
                if ok > 0 || n == 0 || self.meter.tripped() {
                    return Some(Ok(()));
                }
                // All held back (or released into `pending`): go on.
            },
            Some(tls) => loop {
                if Self::take_pending(&mut self.meter, buf) {
                    return Some(Ok(()));
                }
                match tls.reader().read(buf.initialize_unfilled()) {
                    // Ok(0): the client closed with close_notify.
                    Ok(n) => {
                        // Bytes past a malformed frame are dropped (meter.rs).
                        let ok = self.meter.feed(&buf.initialize_unfilled()[..n]);
                        buf.advance(ok);
                        if ok == 0 && n > 0 && !self.meter.tripped() {
                            // All held back (or released into `pending`): read on.
                            continue;
                        }
                        return Some(Ok(()));
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Some(Err(e)),
                }
                // rustls holds at most 16 KiB of plaintext: ciphertext is handed over as
                // h2 takes what was decrypted, the rest waits in `inbuf`.
                let mut rest = self.inbuf.get(self.inpos..).unwrap_or_default();
                if rest.is_empty() {
                    return None;
                }
                let before = rest.len();
                if let Err(e) = tls.read_tls(&mut rest) {
                    return Some(Err(e));
                }
                if rest.len() == before {
                    // Nothing taken although no plaintext waits: never loop on it.
                    return Some(Err(io::Error::other("TLS records not taken")));
                }
                self.inpos += before - rest.len();
                let processed = tls.process_new_packets();
                // Alerts, KeyUpdate answers: sent with the next drain.
                while tls.wants_write() {
                    if let Err(e) = tls.write_tls(&mut self.out) {
                        return Some(Err(e));
                    }
                }
                if let Err(e) = processed {
                    self.inpos = self.inbuf.len();
                    return Some(Err(io::Error::new(io::ErrorKind::InvalidData, e)));
                }
            },
        }
    }
}

impl tokio::io::AsyncRead for H2Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.meter.tripped() {
            // h2 gets nothing more; the driver closes the connection (mod.rs).
            return Poll::Pending;
        }
        loop {
            let taken = this.take_in(buf);
            if !this.out.is_empty() && this.writing.is_none() {
                // What rustls had to say goes out without waiting for h2 to write.
                if let Poll::Ready(Err(e)) = this.poll_drain(cx) {
                    return Poll::Ready(Err(e));
                }
            }
            if let Some(done) = taken {
                return Poll::Ready(done);
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            if this.reading.is_none() {
                let Some(rd) = this.rd.take() else {
                    return Poll::Ready(Err(gone()));
                };
                let spare = std::mem::take(&mut this.inbuf);
                this.inpos = 0;
                this.reading = Some(Box::pin(read_op(rd, spare)));
            }
            let Some(op) = &mut this.reading else {
                continue;
            };
            let (res, data, rd) = ready!(op.as_mut().poll(cx));
            this.reading = None;
            this.rd = Some(rd);
            this.inbuf = data;
            this.inpos = 0;
            match res {
                Ok(0) => {
                    this.eof = true;
                    this.inbuf.clear();
                    if let Some(tls) = &mut this.tls {
                        // End of stream: rustls tells a clean close (close_notify) from a
                        // cut one.
                        let _ = tls.read_tls(&mut &[][..]);
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    this.inbuf.clear();
                    return Poll::Ready(Err(e));
                }
            }
        }
    }
}

impl tokio::io::AsyncWrite for H2Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.out.len() >= WRITE_HIGH {
            ready!(this.poll_drain(cx))?;
        }
        match &mut this.tls {
            None => this.out.extend_from_slice(data),
            Some(tls) => {
                let mut rest = data;
                while !rest.is_empty() {
                    let n = tls.writer().write(rest)?;
                    if n == 0 {
                        return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                    }
                    rest = &rest[n..];
                }
                this.take_tls_out()?;
            }
        }
        // Start writing now; h2 flushes (and so waits for the write) at the end of its turn.
        if let Poll::Ready(Err(e)) = this.poll_drain(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_drain(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.closing.is_none() {
            if let Some(tls) = &mut this.tls {
                tls.send_close_notify();
                this.take_tls_out()?;
            }
            ready!(this.poll_drain(cx))?;
            let Some(wr) = this.wr.take() else {
                return Poll::Ready(Ok(()));
            };
            this.closing = Some(Box::pin(shutdown_op(wr)));
        }
        match &mut this.closing {
            Some(op) => op.as_mut().poll(cx),
            None => Poll::Ready(Ok(())),
        }
    }
}
