//! Runs a parsed command line: `serve` (the supervisor) or `native-ref` (the reference
//! server), both from the `uringapi-server` library. Apart from `cli` so that the command
//! line's types do not depend on what runs them.

use std::ffi::OsString;

use crate::cli::{self, Cmd};

/// Runs the command line; returns the process exit code.
pub fn main_from_args(args: impl IntoIterator<Item = OsString>) -> u8 {
    let cli = match cli::parse(args) {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    let result = match cli.command {
        Cmd::Serve(args) => {
            cli::init_logging(args.log_level.into(), args.colors());
            uringapi_server::supervisor::serve(args.into_config())
        }
        Cmd::NativeRef(args) => {
            cli::init_logging(args.log_level.into(), None);
            uringapi_server::native::serve(args.into_config())
        }
    };
    match result {
        Ok(()) => 0,
        Err(f) => {
            eprintln!("error: {}", f.error);
            eprintln!("hint: {}", f.hint);
            f.code
        }
    }
}
