//! The frame meter's HPACK mirror (server/src/h2/hpack.rs) on a browser-like request: the
//! first of a connection (every field a Huffman literal, most added to the dynamic table)
//! and the next one (indexed fields and one new `:path`), the walk every request's header
//! block gets before h2 decodes it again.
//!
//! `cargo bench -p uringapi-benches --bench h2_hpack`

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use uringapi_server::h2::hpack::Mirror;

/// GET https://shop.example.com/api/items/42?q=shoes&limit=10 with a Chrome user-agent,
/// accept, accept-encoding, accept-language, referer and two cookies, as Python's `hpack`
/// encodes it first on a connection (239 octets, Huffman on).
const FIRST: &str = "8287418c44e7ad72f91d35d055c87a7f44966075998324b4a18685fe7681139ca8f8a0d4\
9930041f7acbd07f66a281b0dae053fafc087ed4ce6aadf2a7979c89c6bfb521aeba0bc8b1e632586d975765c53f\
acd8f7e8cff4a506ea5531149d4ffda97a7b0f49580880b814dc394761986d975765cf53991d75d0620d263d4c74\
41eafa5125f2962ba066abe94f963e7f508d9bd9abfa5242cb40d25fa523b3518b2d4b70ddf45abefb4005df73999\
d29ad171861139eb5cbe474d7415721e961091d895e74d347609c4150831ea81b8c32324015f94436a3748dc6191\
9200afca21b51ba4f60884ce5a4b0483b3aff";

/// The same request to .../items/43 right after it (34 octets).
const NEXT: &str = "8287c644966075998324b4a18699ff3b4089ce547c506a4c98020fc5c4c3c2c1c0bf";

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn mirror(c: &mut Criterion) {
    let first = hex(FIRST);
    let next = hex(NEXT);
    let mut g = c.benchmark_group("h2_hpack");
    g.bench_function("first_request", |b| {
        b.iter_batched(
            Mirror::default,
            |mut m| black_box(m.decode(black_box(&first)).unwrap()),
            BatchSize::SmallInput,
        )
    });
    let mut m = Mirror::default();
    m.decode(&first).unwrap();
    g.bench_function("next_request", |b| {
        b.iter(|| black_box(m.decode(black_box(&next)).unwrap()))
    });
    g.finish();
}

criterion_group!(benches, mirror);
criterion_main!(benches);
