//! Ring micro-benchmarks: push+pop cost on one core, and a ping-pong round trip between two
//! threads busy-polling two rings (the shape of a request and its response).
//!
//! `cargo bench -p uringapi-benches --bench ring`

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use uringapi_protocol::record::{Kind, Record};
use uringapi_protocol::region::HeapRegion;
use uringapi_protocol::ring::{init, ring_bytes, Consumer, Producer};

const CAPACITY: usize = 1024;

fn ring() -> (HeapRegion, Producer<Record>, Consumer<Record>) {
    let region = HeapRegion::new(ring_bytes::<Record>(CAPACITY));
    // SAFETY: a fresh, aligned region of the right size; one producer and one consumer.
    unsafe {
        init::<Record>(region.base(), CAPACITY);
        let p = Producer::attach(region.base(), CAPACITY);
        let c = Consumer::attach(region.base(), CAPACITY);
        (region, p, c)
    }
}

fn push_pop(c: &mut Criterion) {
    let (_region, mut p, mut q) = ring();
    let mut g = c.benchmark_group("ring");
    g.throughput(Throughput::Elements(1));
    g.bench_function("push_pop_one", |b| {
        let mut n = 0u64;
        b.iter(|| {
            n += 1;
            p.try_push(Record::new(Kind::Request, n)).unwrap();
            black_box(q.pop().unwrap());
        })
    });
    g.throughput(Throughput::Elements(64));
    g.bench_function("push_pop_batch_64", |b| {
        b.iter(|| {
            for n in 0..64 {
                p.try_push(Record::new(Kind::Request, n)).unwrap();
            }
            while let Some(r) = q.pop().unwrap() {
                black_box(r);
            }
        })
    });
    g.finish();
}

/// Two threads, two rings: the echo thread pops a record and pushes it back.
fn round_trip(c: &mut Criterion) {
    let (r1, mut there, mut there_rx) = ring();
    let (r2, mut back_tx, mut back) = ring();
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let echo = std::thread::spawn(move || {
        let _keep = (r1, r2);
        while !stop2.load(Ordering::Relaxed) {
            if let Some(rec) = there_rx.pop().unwrap() {
                while back_tx.try_push(rec).is_err() {}
            } else {
                std::hint::spin_loop();
            }
        }
    });
    c.bench_function("ring/round_trip_two_threads_busy", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for n in 0..iters {
                there.try_push(Record::new(Kind::Request, n)).unwrap();
                loop {
                    if let Some(r) = back.pop().unwrap() {
                        black_box(r);
                        break;
                    }
                    std::hint::spin_loop();
                }
            }
            start.elapsed()
        })
    });
    stop.store(true, Ordering::Relaxed);
    let _ = echo.join();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = push_pop, round_trip
}
criterion_main!(benches);
