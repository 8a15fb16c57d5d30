//! Runs a parsed command line: `serve` (the supervisor) or `native-ref` (the reference
//! server), both from the `uringapi-server` library. Apart from `cli` so that the command
//! line's types do not depend on what runs them.

use std::ffi::OsString;
use std::time::Duration;

use crate::cli::{self, Cmd};
use crate::logging;

/// Runs the command line; returns the process exit code.
pub fn main_from_args(args: impl IntoIterator<Item = OsString>) -> u8 {
    let cli = match cli::parse(args) {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    let (result, log) = match cli.command {
        Cmd::Serve(args) => {
            let log = logging::init(args.log_level.into(), args.colors());
            (uringapi_server::supervisor::serve(args.into_config()), log)
        }
        Cmd::NativeRef(args) => {
            let log = logging::init(args.log_level.into(), None);
            (uringapi_server::native::serve(args.into_config()), log)
        }
    };
    if let Some(log) = log {
        // The last lines are queued: written before the error below and the exit, unless
        // stderr does not drain (then the exit waits no longer than this).
        log.settle(Duration::from_secs(2));
    }
    match result {
        Ok(()) => 0,
        Err(f) => {
            eprintln!("error: {}", f.error);
            eprintln!("hint: {}", f.hint);
            f.code
        }
    }
}
