//! HTTP/1.1 request head parsing (httparse plus our RFC 9112 checks).
//!
//! `cargo bench -p uringapi-benches --bench http_parse`

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use uringapi_server::http1::parse::{parse, HeadLimits};

const SMALL: &[u8] =
    b"GET /json HTTP/1.1\r\nHost: localhost:8000\r\nUser-Agent: wrk\r\nAccept: */*\r\n\r\n";
const BROWSER: &[u8] = b"GET /api/items/42?q=shoes&limit=10 HTTP/1.1\r\nHost: shop.example.com\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36\r\n\
Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\nAccept-Language: en-US,en;q=0.9\r\n\
Accept-Encoding: gzip, deflate, br\r\nConnection: keep-alive\r\nCookie: session=abcdef0123456789; theme=dark\r\n\
Cache-Control: max-age=0\r\nX-Request-ID: 5f0c6d1e-7a3b-4c2d-9e8f-0a1b2c3d4e5f\r\n\r\n";

fn heads(c: &mut Criterion) {
    let limits = HeadLimits::default();
    let mut g = c.benchmark_group("http_parse");
    for (name, raw) in [("small", SMALL), ("browser", BROWSER)] {
        g.throughput(Throughput::Bytes(raw.len() as u64));
        g.bench_function(name, |b| {
            b.iter(|| black_box(parse(black_box(raw), &limits).unwrap().unwrap().len))
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = heads
}
criterion_main!(benches);
