//! `handshake` and `into_transport` over real loopback sockets, with a rustls client on a
//! thread that sends its first request together with its last handshake flight.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::{ClientConfig, ClientConnection, SupportedCipherSuite};

use super::*;
use crate::tls::crypto_info::tests::{configs, suites, Kernel};
use crate::tls::crypto_info::CryptoInfo;

const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nhost: localhost\r\n\r\n";
const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nhi";

/// The client: queues REQUEST before the handshake (rustls sends it right behind its
/// Finished), then reads RESPONSE and what follows until the server closes.
fn client(addr: SocketAddr, config: ClientConfig) -> std::thread::JoinHandle<(Vec<u8>, bool)> {
    std::thread::spawn(move || {
        let mut sock = std::net::TcpStream::connect(addr).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut conn = handshaken(&mut sock, Arc::new(config), REQUEST);
        let mut got = vec![0; RESPONSE.len()];
        rustls::Stream::new(&mut conn, &mut sock)
            .read_exact(&mut got)
            .unwrap();
        // After the response: a clean close_notify, or the socket just closing.
        let mut rest = Vec::new();
        let clean = rustls::Stream::new(&mut conn, &mut sock)
            .read_to_end(&mut rest)
            .is_ok();
        (got, clean && rest.is_empty())
    })
}

/// A rustls client session on `sock`, handshaken, with `early` sent right behind its
/// Finished.
fn handshaken(
    sock: &mut std::net::TcpStream,
    config: Arc<ClientConfig>,
    early: &[u8],
) -> ClientConnection {
    let name = "localhost".try_into().unwrap();
    let mut conn = ClientConnection::new(config, name).unwrap();
    conn.writer().write_all(early).unwrap();
    while conn.is_handshaking() || conn.wants_write() {
        conn.complete_io(sock).unwrap();
    }
    conn
}

fn runtime() -> monoio::Runtime<monoio::time::TimeDriver<monoio::LegacyDriver>> {
    monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
        .enable_timer()
        .build()
        .unwrap()
}

/// Accepts one connection and runs our handshake on it, with `--ktls` asked for or not.
async fn accept_and_handshake(
    listener: std::net::TcpListener,
    suite: SupportedCipherSuite,
    ktls: bool,
) -> (Box<TlsStream>, Peer) {
    let (server_config, _) = configs(suite);
    let listener = monoio::net::TcpListener::from_std(listener).unwrap();
    let (tcp, addr) = listener.accept().await.unwrap();
    let loaded = Loaded {
        config: Arc::new(server_config),
        leaf: Arc::from(Vec::new()),
        ktls,
    };
    let peer = Peer(Some(addr));
    let stream = handshake(Socket::Tcp(tcp), loaded, Duration::from_secs(30), peer)
        .await
        .expect("the handshake completes");
    (Box::new(stream), peer)
}

fn listen() -> (std::net::TcpListener, SocketAddr) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.set_nonblocking(true).unwrap();
    let addr = l.local_addr().unwrap();
    (l, addr)
}

/// The whole kTLS path but the kernel: after our record-at-a-time handshake the request
/// record is still in the socket, and the keys rustls gives up open it and seal the answer
/// exactly as TLS_RX / TLS_TX would.
#[test]
fn a_ktls_handshake_leaves_the_first_request_in_the_socket_for_the_kernel() {
    for (suite, _) in suites() {
        let name = format!("{:?}", suite.suite());
        let (listener, addr) = listen();
        let peer_client = client(addr, configs(suite).1);
        runtime().block_on(async move {
            let (stream, _) = accept_and_handshake(listener, suite, true).await;
            assert_eq!(
                stream.plaintext, 0,
                "{name}: nothing decrypted past the handshake"
            );
            assert!(
                !stream.tls.wants_write(),
                "{name}: tickets and Finished were flushed"
            );
            let TlsStream { mut sock, tls, .. } = *stream;
            let version = tls.protocol_version().unwrap();
            let secrets = tls.dangerous_extract_secrets().unwrap();
            let rx = CryptoInfo::new(version, secrets.rx.0, &secrets.rx.1).unwrap();
            let tx = CryptoInfo::new(version, secrets.tx.0, &secrets.tx.1).unwrap();
            let (res, record) = read_one_record(&mut sock, Vec::new()).await;
            assert!(
                res.unwrap() > 5,
                "{name}: the request record is in the socket"
            );
            let opened = Kernel::from(&rx).open(&record);
            assert_eq!(opened.as_deref(), Some(REQUEST), "{name}");
            let (res, _) = sock.write_all(Kernel::from(&tx).seal(RESPONSE)).await;
            res.unwrap();
            sock.shutdown().await.unwrap();
        });
        let (response, _) = peer_client.join().unwrap();
        assert_eq!(response, RESPONSE, "{suite:?}");
    }
}

/// `into_transport` here: on a kernel without kTLS (this machine) the socket refuses the ULP
/// and rustls carries on; on one with it, the kernel does. Either way the client's request
/// and our answer go through, and the close is clean.
#[test]
fn into_transport_serves_the_connection_with_or_without_kernel_tls() {
    for (suite, _) in suites() {
        let (listener, addr) = listen();
        let peer_client = client(addr, configs(suite).1);
        runtime().block_on(async move {
            let (stream, peer) = accept_and_handshake(listener, suite, true).await;
            let mut transport = stream
                .into_transport(peer)
                .expect("kept or moved, not closed");
            assert_eq!(transport.is_ktls(), crate::tls::ktls::available());
            let mut request = Vec::with_capacity(4096);
            while request.len() < REQUEST.len() {
                let (res, buf) = transport.read(request).await;
                request = buf;
                assert!(res.unwrap() > 0, "{suite:?}: the request came whole");
            }
            assert_eq!(request, REQUEST);
            let (res, _) = transport.write_all(RESPONSE.to_vec()).await;
            res.unwrap();
            transport.shutdown().await.unwrap();
        });
        let (response, clean) = peer_client.join().unwrap();
        assert_eq!(response, RESPONSE, "{suite:?}");
        assert!(clean, "{suite:?}: close_notify, then the end");
    }
}

/// An idle keep-alive connection reads its records without a poll first (`idle_read`); a
/// wait that ends before the client sends (the keep-alive timer, a drain) drops that read in
/// flight, and the stream still reads what comes next.
#[test]
fn an_idle_read_dropped_in_flight_leaves_the_stream_readable() {
    let (suite, _) = suites()[0];
    let (listener, addr) = listen();
    let config = Arc::new(configs(suite).1);
    let (waited_tx, waited_rx) = std::sync::mpsc::channel::<()>();
    let peer_client = std::thread::spawn(move || {
        let mut sock = std::net::TcpStream::connect(addr).unwrap();
        let mut conn = handshaken(&mut sock, config, REQUEST);
        // Only once the server's short wait below has run out.
        waited_rx.recv().unwrap();
        let mut stream = rustls::Stream::new(&mut conn, &mut sock);
        stream.write_all(REQUEST).unwrap();
        let mut got = vec![0; RESPONSE.len()];
        stream.read_exact(&mut got).unwrap();
        got
    });
    runtime().block_on(async move {
        let (stream, _) = accept_and_handshake(listener, suite, false).await;
        let mut transport = Transport::Tls(stream);
        for round in 0..2 {
            if round == 1 {
                let waited =
                    monoio::time::timeout(Duration::from_millis(50), transport.idle_read()).await;
                assert!(waited.is_err(), "nothing came within the short wait");
                waited_tx.send(()).unwrap();
            }
            transport.idle_read().await.unwrap();
            assert!(
                transport.buffered(),
                "round {round}: decrypted before the read"
            );
            let (res, request) = transport.read(Vec::with_capacity(4096)).await;
            assert_eq!(res.unwrap(), REQUEST.len(), "round {round}");
            assert_eq!(request, REQUEST, "round {round}");
        }
        let (res, _) = transport.write_all(RESPONSE.to_vec()).await;
        res.unwrap();
        // The client may have gone once it had the response.
        let _ = transport.shutdown().await;
    });
    assert_eq!(peer_client.join().unwrap(), RESPONSE);
}

#[test]
fn read_one_record_stops_at_the_record_boundary() {
    let (listener, addr) = listen();
    let writer = std::thread::spawn(move || {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        // Two records and a stray byte, in one write.
        s.write_all(&[22, 3, 3, 0, 2, 0xaa, 0xbb, 23, 3, 3, 0, 1, 0xcc, 0xdd])
            .unwrap();
        std::thread::sleep(Duration::from_millis(200));
    });
    runtime().block_on(async move {
        let listener = monoio::net::TcpListener::from_std(listener).unwrap();
        let (tcp, _) = listener.accept().await.unwrap();
        let mut sock = Socket::Tcp(tcp);
        let (n, first) = read_one_record(&mut sock, Vec::new()).await;
        assert_eq!((n.unwrap(), first), (7, vec![22, 3, 3, 0, 2, 0xaa, 0xbb]));
        let (n, second) = read_one_record(&mut sock, Vec::new()).await;
        assert_eq!((n.unwrap(), second), (6, vec![23, 3, 3, 0, 1, 0xcc]));
        // The stray byte and then the end: a record cut short reads as the end.
        let (n, _) = read_one_record(&mut sock, Vec::new()).await;
        assert_eq!(n.unwrap(), 0);
    });
    writer.join().unwrap();
}

/// `--timeout-body-read` on a TLS response bounds each write of its records, as over plain
/// TCP, not the frame's whole encrypt-and-write: a client that reads steadily through small
/// socket buffers takes ~0.8 s over a 64 KiB frame and is never 300 ms without taking
/// bytes, so the write goes through. (It timed out when the stall bounded the frame.)
#[test]
fn a_slow_reader_that_keeps_reading_is_within_the_write_stall() {
    const LEN: usize = 64 << 10;
    let (suite, _) = suites()[0];
    let (listener, addr) = listen();
    // Accepted sockets inherit it: a small send buffer on our side.
    socket2::SockRef::from(&listener)
        .set_send_buffer_size(4096)
        .unwrap();
    let config = Arc::new(configs(suite).1);
    let peer_client = std::thread::spawn(move || {
        use socket2::{Domain, Socket as RawSocket, Type};
        let raw = RawSocket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        raw.set_recv_buffer_size(4096).unwrap(); // before connect: a small window
        raw.connect(&addr.into()).unwrap();
        let mut sock: std::net::TcpStream = raw.into();
        sock.set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut conn = handshaken(&mut sock, config, b"");
        let mut got = Vec::new();
        let mut buf = vec![0; 4096];
        while got.len() < LEN {
            std::thread::sleep(Duration::from_millis(50));
            let n = rustls::Stream::new(&mut conn, &mut sock)
                .read(&mut buf)
                .unwrap();
            assert!(n > 0, "closed after {} bytes", got.len());
            got.extend_from_slice(&buf[..n]);
        }
        got
    });
    let body: Vec<u8> = (0..LEN).map(|i| (i % 251) as u8).collect();
    let sent = body.clone();
    runtime().block_on(async move {
        let (stream, _) = accept_and_handshake(listener, suite, false).await;
        let mut transport = Transport::Tls(stream);
        let stall = Some(Duration::from_millis(300));
        let res = transport
            .write_frame(Frame::new(sent, None, b""), stall, &mut || {})
            .await;
        assert!(res.is_ok(), "{:?}", res.err());
    });
    assert_eq!(peer_client.join().unwrap(), body);
}

/// And a client that reads nothing is still dropped: the write fails with `TimedOut`.
#[test]
fn a_reader_that_takes_nothing_fails_the_write_after_the_stall() {
    let (suite, _) = suites()[0];
    let (listener, addr) = listen();
    let config = Arc::new(configs(suite).1);
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let peer_client = std::thread::spawn(move || {
        let mut sock = std::net::TcpStream::connect(addr).unwrap();
        let _conn = handshaken(&mut sock, config, b"");
        done_rx.recv().unwrap(); // reads nothing until the server gave up
    });
    runtime().block_on(async move {
        let (stream, _) = accept_and_handshake(listener, suite, false).await;
        let mut transport = Transport::Tls(stream);
        let frame = Frame::new(vec![7; 16 << 20], None, b"");
        let res = transport
            .write_frame(frame, Some(Duration::from_millis(200)), &mut || {})
            .await;
        assert_eq!(
            res.err().map(|e| e.kind()),
            Some(std::io::ErrorKind::TimedOut)
        );
    });
    done_tx.send(()).unwrap();
    peer_client.join().unwrap();
}
