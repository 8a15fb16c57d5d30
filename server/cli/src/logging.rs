//! The front end's log subscriber: tracing's formatter, filtered by `--log-level` (or
//! `URINGAPI_LOG`), writing to stderr through the library's non-blocking [`Sink`].

use std::sync::{Arc, OnceLock};

use uringapi_server::accesslog::{LogWriter, Sink};
use uringapi_server::config::LogLevel;

/// Sets up the front end's log lines. They go to stderr through a queue and a writer thread
/// of their own ([`Sink::for_log`]): the returned sink, for the caller to let drain before
/// the process exits. `None` if that thread could not start (stderr is then written
/// directly).
pub fn init(level: LogLevel, colors: Option<bool>) -> Option<Arc<Sink>> {
    // Once per process: `uringapi.run` called again keeps the first subscriber (and its
    // level), and its sink is the one to let drain.
    static INSTALLED: OnceLock<Option<Arc<Sink>>> = OnceLock::new();
    INSTALLED.get_or_init(|| install(level, colors)).clone()
}

fn install(level: LogLevel, colors: Option<bool>) -> Option<Arc<Sink>> {
    let filter = tracing_subscriber::EnvFilter::try_from_env("URINGAPI_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!(
            "{},monoio=warn,h2={}",
            level.filter(),
            h2_filter(level)
        ))
    });
    use std::io::IsTerminal;
    let ansi = colors.unwrap_or_else(|| std::io::stderr().is_terminal());
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(ansi);
    match Sink::for_log() {
        Ok(sink) => {
            let writer = LogWriter(sink.clone());
            let _ = fmt.with_writer(move || writer.clone()).try_init();
            Some(sink)
        }
        Err(_) => {
            let _ = fmt.with_writer(std::io::stderr).try_init();
            None
        }
    }
}

/// The h2 crate's own events: below `trace`, errors only. It warns once per frame a client
/// gets wrong in a way it shrugs off (a PING ack nobody asked for): a log line any client
/// could make us write per 17 bytes it sends. What clients do wrong is logged by us, once
/// per connection (h2/mod.rs); its per-frame debug events are for `--log-level trace`.
fn h2_filter(level: LogLevel) -> &'static str {
    match level {
        LogLevel::Trace => "trace",
        _ => "error",
    }
}
