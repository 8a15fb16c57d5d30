//! `uringapi native-ref`: a static response served by the front end alone, with the same
//! runtime, listener and parser as `serve`. The benchmark's ceiling for "no Python at all".

use std::net::SocketAddr;
use std::sync::mpsc;

use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::{IoUringDriver, LegacyDriver, RuntimeBuilder};

use crate::config::NativeRefConfig;
use crate::failure::Failure;
use crate::frontend::IoDriver;
use crate::http1::parse::{self, HeadLimits};
use crate::net::{bind, check_free};

const BODY: &[u8] = b"Hello, world!";

pub fn serve(args: NativeRefConfig) -> Result<(), Failure> {
    let addr = SocketAddr::new(args.host, args.port);
    let mut threads = Vec::new();
    let (tx, rx) = mpsc::channel();
    check_free(addr)?;
    let mut bound = addr;
    for t in 0..args.threads {
        let l = bind(bound, 2048)?;
        bound = l.local_addr().unwrap_or(bound);
        let (tx, driver) = (tx.clone(), args.io_driver);
        threads.push(
            std::thread::Builder::new()
                .name(format!("uringapi-io-{t}"))
                .spawn(move || run(l, driver, tx))
                .map_err(|e| {
                    Failure::new(format!("cannot start a thread: {e}"), "check ulimit -u")
                })?,
        );
    }
    let driver = rx.recv().unwrap_or("unknown");
    tracing::info!(
        "native reference listening on http://{bound} (threads: {}, io driver: {driver})",
        args.threads
    );
    for t in threads {
        let _ = t.join();
    }
    Ok(())
}

fn run(l: std::net::TcpListener, driver: IoDriver, tx: mpsc::Sender<&'static str>) {
    if driver != IoDriver::Epoll {
        if let Ok(mut rt) = RuntimeBuilder::<IoUringDriver>::new()
            .enable_timer()
            .build()
        {
            let _ = tx.send("io_uring");
            rt.block_on(accept(l));
            return;
        }
    }
    if let Ok(mut rt) = RuntimeBuilder::<LegacyDriver>::new().enable_timer().build() {
        let _ = tx.send("epoll");
        rt.block_on(accept(l));
    }
}

async fn accept(l: std::net::TcpListener) {
    let Ok(l) = monoio::net::TcpListener::from_std(l) else {
        return;
    };
    while let Ok((s, _)) = l.accept().await {
        monoio::spawn(conn(s));
    }
}

async fn conn(mut s: monoio::net::TcpStream) {
    let _ = s.set_nodelay(true);
    let limits = HeadLimits::default();
    let mut buf = Vec::with_capacity(8192);
    let mut out = Vec::with_capacity(256);
    loop {
        // Answer every complete head already buffered (pipelining), then read more.
        while let Ok(Some(end)) = parse::scan(&buf, &limits) {
            let keep = parse::parse_complete(&buf[..end], &limits)
                .map(|h| h.keep_alive)
                .unwrap_or(false);
            buf.drain(..end);
            out.extend_from_slice(b"HTTP/1.1 200 OK\r\nserver: uringapi\r\ncontent-type: text/plain\r\ncontent-length: 13\r\ndate: ");
            crate::http1::encode::with_date(|d| out.extend_from_slice(d));
            out.extend_from_slice(b"\r\n\r\n");
            out.extend_from_slice(BODY);
            if !keep {
                let _ = s.write_all(std::mem::take(&mut out)).await;
                return;
            }
        }
        if !out.is_empty() {
            let (res, o) = s.write_all(std::mem::take(&mut out)).await;
            out = o;
            out.clear();
            if res.is_err() {
                return;
            }
        }
        if buf.capacity() - buf.len() < 4096 {
            buf.reserve(8192);
        }
        let (len, cap) = (buf.len(), buf.capacity());
        let (res, slice) = s.read(buf.slice_mut(len..cap)).await;
        buf = slice.into_inner();
        match res {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}
