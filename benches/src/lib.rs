//! Criterion benchmarks live in `benches/benches/`; end-to-end harness in `benches/e2e/`.
