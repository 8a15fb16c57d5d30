//! The `uringapi` command: `cli` parses the flags (and their `URINGAPI_*` variables) into the
//! `uringapi-server` library's config structs, `commands` runs `serve` or `native-ref` with
//! them and turns a failure into `error:` + `hint:` and the exit code; `logging` sets up the
//! log subscriber.
#![deny(unsafe_code)]

mod cli;
mod commands;
mod foreign;
mod logging;
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
    uringapi_server::frontend::set_after_burst(give_back_freed_pages);
    std::process::ExitCode::from(commands::main_from_args(std::env::args_os()))
}

/// After a burst (`set_after_burst`): the calling thread's cached frees go back to its
/// arena, and every arena's unused dirty pages to the kernel at once, instead of over
/// jemalloc's 10 s decay.
// MEMORY: 10,000 WebSocket handshakes leave 2-4 MiB of freed pages (request heads, read
// buffers, the 101s) resident in the front end; given back here, right after the burst,
// and not on every free (`dirty_decay_ms:0` cost hello 1.55x its CPU per request,
// benches/results/ab-jemalloc-decay-2026-12-04.json).
#[allow(unsafe_code)] // one FFI call, the allocator's own control interface
fn give_back_freed_pages() {
    for name in [c"thread.tcache.flush", c"arena.4096.purge"] {
        // SAFETY: both are void mallctls (no old or new value); 4096 is
        // MALLCTL_ARENAS_ALL. A failure leaves the pages where they were.
        unsafe {
            tikv_jemalloc_sys::mallctl(
                name.as_ptr(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                0,
            );
        }
    }
}
