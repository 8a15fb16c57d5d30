//! One access log line per request, in each format (the front-end thread formats it on the
//! request path when the access log is on).
//!
//! `cargo bench -p uringapi-benches --bench access_log`

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use criterion::{criterion_group, criterion_main, Criterion};
use uringapi_server::accesslog::{format, Entry, Format};

fn entry() -> Entry<'static> {
    Entry {
        peer: Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7))),
        method: b"GET",
        target: b"/api/items/42?q=shoes&limit=10",
        http_minor: 1,
        status: 200,
        bytes: 2326,
        referer: Some(b"https://shop.example.com/start.html"),
        user_agent: Some(b"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/120.0"),
        request_id: "5b1d3c0e9f2a4b7c5b1d3c0e9f2a4b7c",
        duration: Duration::from_micros(1_234_567),
        time: UNIX_EPOCH + Duration::from_millis(971_186_136_250),
    }
}

fn lines(c: &mut Criterion) {
    let e = entry();
    let now = SystemTime::now();
    let mut g = c.benchmark_group("access_log");
    for (name, fmt) in [
        ("common", Format::Common),
        ("combined", Format::Combined),
        ("json", Format::Json),
    ] {
        let mut out = Vec::with_capacity(64 * 1024);
        g.bench_function(name, |b| {
            b.iter(|| {
                out.clear();
                format(fmt, black_box(&Entry { time: now, ..e }), &mut out);
                black_box(out.len())
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = lines
}
criterion_main!(benches);
