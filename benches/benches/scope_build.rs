//! Building the ASGI `http` scope from a request head, as a worker does for each request.
//!
//! The bench embeds CPython (the interpreter `pyo3` finds at build time, whose libpython the
//! binary is linked against with an rpath) and times `ScopeBuilder::build` on a decoded
//! request head from a slot, then the scope's release: the part of a request's worker cost
//! that is the scope alone. `worker_cpu` measures the whole request path around it.
//!
//! ```text
//! cargo bench -p uringapi-benches --bench scope_build
//! ```
//!
//! Cases: `small` is the 3-header head wrk sends; `browser` has 10 headers, a query and a
//! percent-encoded path; `state` is `small` with a lifespan state of 4 keys, which each
//! scope gets a shallow copy of.

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::Duration;

use _native::scope::ScopeBuilder;
use criterion::{criterion_group, criterion_main, Criterion};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use uringapi_protocol::head::{RequestHead, RequestView, TlsSection, SCHEME_TLS_SECTION};

fn head<'a>(
    method: &'a [u8],
    path: &'a [u8],
    query: &'a [u8],
    headers: Vec<(&'a [u8], &'a [u8])>,
) -> Vec<u8> {
    let client: SocketAddr = "127.0.0.1:51234".parse().expect("address");
    let server: SocketAddr = "127.0.0.1:8000".parse().expect("address");
    let h = RequestHead {
        http_minor: 1,
        https: false,
        method,
        path,
        query,
        client: Some(client),
        server: Some(server),
        headers,
    };
    let mut buf = vec![0; h.encoded_len()];
    let n = h.encode(&mut buf).expect("the head fits its own length");
    buf.truncate(n);
    buf
}

fn small() -> Vec<u8> {
    head(
        b"GET",
        b"/json",
        b"",
        vec![
            (b"host", b"localhost:8000"),
            (b"user-agent", b"wrk"),
            (b"accept", b"*/*"),
        ],
    )
}

fn browser() -> Vec<u8> {
    head(
        b"GET",
        b"/api/items/caf%C3%A9",
        b"q=shoes&limit=10",
        vec![
            (b"host", b"shop.example.com"),
            (
                b"user-agent",
                b"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/120.0 Safari/537.36",
            ),
            (
                b"accept",
                b"text/html,application/xhtml+xml;q=0.9,*/*;q=0.8",
            ),
            (b"accept-language", b"en-US,en;q=0.9"),
            (b"accept-encoding", b"gzip, deflate, br"),
            (b"connection", b"keep-alive"),
            (b"cookie", b"session=abcdef0123456789; theme=dark"),
            (b"cache-control", b"max-age=0"),
            (b"x-request-id", b"5f0c6d1e-7a3b-4c2d-9e8f-0a1b2c3d4e5f"),
            (b"x-tenant", b"acme"),
        ],
    )
}

/// `small` over TLS: the section the front end appends to each request head on a TLS
/// connection, with a server certificate of 1 KiB (a typical RSA-2048 or ECDSA leaf).
fn tls() -> Vec<u8> {
    let cert: Vec<u8> = (0..1024u32).map(|i| (i * 7 + 3) as u8).collect();
    let section = TlsSection {
        version: 0x0304,
        cipher_suite: 0x1301,
        server_cert: &cert,
        client_name: b"",
        client_chain: Vec::new(),
    }
    .encode()
    .expect("the section fits");
    let mut encoded = small();
    encoded.extend_from_slice(&section);
    encoded[1] |= SCHEME_TLS_SECTION;
    encoded
}

fn scopes(c: &mut Criterion) {
    Python::attach(|py| {
        let mut g = c.benchmark_group("scope_build");
        for (name, encoded, with_state, path) in [
            ("small", small(), false, "/json"),
            ("browser", browser(), false, "/api/items/café"),
            ("state", small(), true, "/json"),
            ("tls", tls(), false, "/json"),
        ] {
            let mut builder =
                ScopeBuilder::new(py, String::new(), String::new()).expect("scope builder");
            if with_state {
                let state = PyDict::new(py);
                for (i, key) in ["db", "cache", "settings", "client"].iter().enumerate() {
                    state.set_item(key, i).expect("state item");
                }
                builder.set_state(py, state).expect("state");
            }
            let view = RequestView::decode(&encoded).expect("the encoded head decodes");
            // What a scope holds is checked once, so that the bench times a real scope.
            let scope = builder.build(py, &view).expect("scope");
            let seen: String = scope
                .get_item("path")
                .ok()
                .flatten()
                .and_then(|p| p.extract().ok())
                .expect("scope[\"path\"]");
            assert_eq!(seen, path);
            g.bench_function(name, |b| {
                b.iter(|| {
                    let view = RequestView::decode(black_box(&encoded)).expect("decode");
                    black_box(builder.build(py, &view).expect("scope"));
                })
            });
        }
        g.finish();
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = scopes
}
criterion_main!(benches);
