//! The `uringapi` command: `cli` parses the flags (and their `URINGAPI_*` variables) into the
//! `uringapi-server` library's config structs, `commands` runs `serve` or `native-ref` with
//! them and turns a failure into `error:` + `hint:` and the exit code.
#![deny(unsafe_code)]

mod cli;
mod commands;
mod tls;
mod values;

fn main() -> std::process::ExitCode {
    std::process::ExitCode::from(commands::main_from_args(std::env::args_os()))
}
