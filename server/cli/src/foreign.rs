//! Hints for the options of uvicorn, gunicorn and granian: a user moving a command line
//! over learns what uringapi calls the option, or that it has no counterpart and can go,
//! not only that it is unknown. Every entry here is still a usage error (exit 2): an
//! option that is taken silently would hide a setting the user thinks is in force.

use clap::error::ContextKind;

/// Options spelled differently here (or meaning nothing here for a reason worth saying),
/// and what to write instead: every flag of an entry gets its hint.
const RENAMED: &[(&[&str], &str)] = &[
    (&["-w"], "the number of workers is --workers N"),
    (&["--graceful-timeout"], "that is --timeout-graceful-shutdown here"),
    (&["--keep-alive"], "that is --timeout-keep-alive here"),
    (&["--max-requests"], "that is --limit-max-requests here"),
    (&["--access-logfile"], "that is --access-log-file here"),
    (&["--certfile", "--ssl-certificate"], "that is --ssl-certfile here"),
    (&["--keyfile"], "that is --ssl-keyfile here"),
    (&["--ca-certs", "--ssl-ca"], "that is --ssl-ca-certs here"),
    (&["--chdir", "--working-dir"], "that is --app-dir here (the folder the app module is imported from)"),
    (&["--limit-request-field_size"], "that is --limit-request-field-size here"),
    (&["--pid"], "that is --pid-file here"),
    (&["--ciphers"], "that is --ssl-ciphers here"),
    (&["--cert-reqs"], "that is --ssl-cert-reqs here"),
    (&["--worker-connections"], "that is --limit-connections here (per front-end thread)"),
    (&["-c", "--config"], "there is no config file: give the options on the command line or as their URINGAPI_* variables ('uringapi serve --help' names each)"),
    (&["-D", "--daemon"], "uringapi stays in the foreground: run it under systemd, in a container or under another supervisor"),
    (&["--user"], "start uringapi as the user it should run as (systemd's User=, a container's USER)"),
    (&["--group"], "start uringapi as the group it should run as (systemd's Group=)"),
    (&["--umask"], "set the umask where uringapi is started (systemd's UMask=); --uds-perms sets the socket file's mode"),
    (&["--error-logfile", "--log-file"], "the server's log goes to stderr: redirect it, or configure the workers' logging with --log-config (the access log: --access-log-file)"),
    (&["--logger-class"], "configure the workers' logging with --log-config"),
    (&["-e", "--env"], "set the variable where uringapi is started, or put it in an --env-file"),
    (&["--reuse-port"], "each front-end thread listens on a SO_REUSEPORT socket of its own already: leave it out"),
    (&["--statsd-host"], "metrics are served for Prometheus here: --metrics-port"),
    (&["--ssl-client-verify"], "client certificates are required with --ssl-cert-reqs 2 (1: asked for, optional)"),
    (&["--url-path-prefix"], "that is --root-path here"),
    (&["--uds-permissions"], "that is --uds-perms here"),
    (&["--env-files"], "that is --env-file here (one file)"),
    (&["--access-log-fmt"], "that is --access-log-format here: common, combined or json"),
    (&["--log"], "logging is always on here: set how much with --log-level"),
    (&["--metrics"], "metrics are served when --metrics-port is given (--metrics-host for the address)"),
    (&["--metrics-address"], "that is --metrics-host here (with --metrics-port)"),
    (&["--http1-keep-alive"], "keep-alive is --timeout-keep-alive here (0 turns it off)"),
    (&["--http1-header-read-timeout"], "that is --timeout-header-read here, in seconds"),
    (&["--http2-max-concurrent-streams"], "that is --h2-max-concurrent-streams here"),
    (&["--respawn-failed-workers"], "a worker that dies after it was ready is always replaced here: leave it out"),
    (&["--workers-kill-timeout"], "a stopping worker gets --timeout-graceful-shutdown, then 5 s more before SIGKILL: leave it out"),
    (&["--rss-samples", "--rss-sample-interval"], "--workers-max-rss recycles a worker past that many MiB, checked every second: leave it out"),
    (&["--reload-paths"], "that is --reload-dir here (repeatable)"),
    (&["--reload-ignore-dirs", "--reload-ignore-patterns", "--reload-ignore-paths"], "that is --reload-exclude GLOB here (repeatable)"),
    (&["--static-path-mount", "--static-path-route"], "that is --static-mount PREFIX=DIR here (the route and the folder in one value)"),
    (&["--loop"], "uringapi's workers always run uvloop: leave --loop out"),
    (&["--interface"], "uringapi serves ASGI 3 applications (FastAPI, Starlette, Litestar...): leave --interface out; a WSGI app needs an ASGI adapter"),
    (&["--http2"], "HTTP/2 needs no switch here: it is served by ALPN over TLS and by the client preface on plain connections (--http 2 serves HTTP/2 only)"),
    (&["--timeout-worker-healthcheck"], "the front end watches each worker's event-loop heartbeat instead: --timeout (60 s by default) replaces a worker silent that long"),
    (&["--reset-contextvars"], "each request already runs in a context of its own, and what the lifespan sets in its context is not seen by requests: leave it out"),
];

/// Options with nothing like them here.
const NO_COUNTERPART: &[&str] = &[
    "--ws-max-queue",
    "--h11-max-incomplete-event-size",
    "--timeout-notify",
    "--ssl-version",
    "--reload-delay",
    "--reload-tick",
    "--reload-ignore-worker-failure",
    "--runtime-mode",
    "--runtime-threads",
    "--runtime-blocking-threads",
    "--blocking-threads",
    "--blocking-threads-idle-timeout",
    "--backpressure",
    "--task-impl",
    "--preload",
    "--respawn-interval",
    "--ssl-crl",
    "--static-path-expires",
    "--static-path-dir-to-file",
    "--metrics-scrape-interval",
    "--process-name",
    "--http1-buffer-size",
    "--http1-pipeline-flush",
    "--http2-adaptive-window",
    "--http2-initial-connection-window-size",
    "--http2-initial-stream-window-size",
    "--http2-keep-alive-interval",
    "--http2-keep-alive-timeout",
    "--http2-max-frame-size",
    "--http2-max-headers-size",
    "--http2-max-send-buffer-size",
    "--capture-output",
    "--name",
    "--check-config",
    "--print-config",
    "--worker-tmp-dir",
    "--proxy-protocol",
    "--proxy-allow-from",
    "--do-handshake-on-connect",
    "--suppress-ragged-eofs",
    "--initgroups",
    "--paste",
    "--spew",
];

/// One text of a clap error's context: the argument, value or subcommand it is about.
pub(crate) fn context(e: &clap::Error, kind: clap::error::ContextKind) -> Option<&str> {
    match e.get(kind) {
        Some(clap::error::ContextValue::String(v)) => Some(v),
        _ => None,
    }
}

/// The hint for `e` when it is about another server's option or value.
pub(crate) fn hint(e: &clap::Error) -> Option<&'static str> {
    let text = |kind| context(e, kind);
    if let Some(sub) = text(ContextKind::InvalidSubcommand) {
        // uvicorn's `uvicorn main:app`.
        return sub.contains(':').then_some(
            "the app is served with 'uringapi serve MODULE:APP' (the serve subcommand first)",
        );
    }
    // "--loop", or "--http <HTTP>" for a bad value.
    let arg = text(ContextKind::InvalidArg)?.split([' ', '=']).next()?;
    Some(match (arg, text(ContextKind::InvalidValue)) {
        ("--http", Some("h11" | "httptools" | "zttp")) => {
            "the front end parses HTTP itself: leave the library out (--http here picks the versions served: auto, 1 or 2)"
        }
        ("--ws", Some("websockets" | "websockets-sansio" | "wsproto")) => {
            "the front end frames WebSockets itself: leave the library out (--ws here is auto or off)"
        }
        ("-b" | "--bind", _) => {
            "give the address as --host and --port (unix:PATH is --uds PATH, fd://N is --fd N)"
        }
        ("-k" | "--worker-class", _) => {
            "uringapi is the server and runs its own workers: leave the worker class out"
        }
        ("--max-requests-jitter" | "--limit-max-requests-jitter", _) => {
            "that is --recycle-jitter here (a fraction of each recycling threshold, 0.1 by default, not a number of requests)"
        }
        (flag, _) if NO_COUNTERPART.contains(&flag) => {
            "that option of uvicorn's, gunicorn's or granian's has no counterpart in uringapi: leave it out ('uringapi serve --help' lists what there is)"
        }
        (flag, _) => RENAMED.iter().find(|(theirs, _)| theirs.contains(&flag))?.1,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_option_is_listed_twice() {
        let mut all: Vec<&str> = RENAMED
            .iter()
            .flat_map(|(f, _)| f.iter().copied())
            .chain(NO_COUNTERPART.iter().copied())
            .collect();
        let n = all.len();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), n);
    }
}
