//! The `uringapi` binary.

fn main() -> std::process::ExitCode {
    std::process::ExitCode::from(uringapi_server::main_from_args(std::env::args_os()))
}
