//! The `scope_build` bench embeds CPython: link it with an rpath to the interpreter's
//! libpython, so that `cargo bench` and `cargo test --benches` run without LD_LIBRARY_PATH.

fn main() {
    pyo3_build_config::add_libpython_rpath_link_args();
}
