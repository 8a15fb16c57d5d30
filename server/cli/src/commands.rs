//! Runs a parsed command line: `serve` (the supervisor) or `native-ref` (the reference
//! server). Apart from `cli` so that the command line's types do not depend on what runs
//! them.

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
            cli::init_logging(args.log_level, args.colors());
            crate::supervisor::serve(*args)
        }
        Cmd::NativeRef(args) => {
            cli::init_logging(args.log_level, None);
            crate::native::serve(args)
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
