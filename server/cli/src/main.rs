//! The `uringapi` command: `cli` parses the flags (and their `URINGAPI_*` variables) into the
//! `uringapi-server` library's config structs, `commands` runs `serve` or `native-ref` with
//! them and turns a failure into `error:` + `hint:` and the exit code.
#![deny(unsafe_code)]

mod cli;
mod commands;
mod tls;
mod values;

/// The front end allocates with jemalloc, not glibc's malloc. MEMORY: a connection's
/// long-lived states (a WebSocket's task, its timer, its stream) are allocated between the
/// short-lived ones of its handshake (request head, read buffer, the 101), and glibc keeps
/// the holes those leave resident: 10,000 idle WebSockets cost the front end 3.0 KiB each
/// under glibc, 2.2 KiB under jemalloc, whose size classes give the holes back to the next
/// allocations of their size (tests/e2e/test_idle_websockets.py, 2026-12-04; the idle
/// front end starts about 1 MiB larger). Only this executable: the workers are CPython's.
/// PERF: hello at saturation 1.12x req/s, 14.1 against 15.8 server CPU-us/req, FastAPI /json
/// within noise (`benches/e2e/ab.py --cells hello,fastapi-json --rounds 3` against glibc's
/// build, quiet machine: benches/results/ab-jemalloc-quiet-2026-12-04.json).
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    std::process::ExitCode::from(commands::main_from_args(std::env::args_os()))
}
