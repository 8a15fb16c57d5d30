//! systemd's readiness protocol (sd_notify(3)) for `Type=notify` units: `READY=1` once every
//! worker is ready and the listeners accept, `STOPPING=1` when draining starts, and
//! `WATCHDOG=1` every half `WATCHDOG_USEC` while the supervisor loop runs (a hung supervisor
//! stops the pings, and systemd restarts the unit).
//!
//! Without `NOTIFY_SOCKET` every call is a no-op. The variables are removed once read, so
//! workers do not talk to systemd in our name.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::{Duration, Instant};

pub(super) struct Notifier {
    target: Option<(UnixDatagram, SocketAddr)>,
    watchdog: Option<Duration>,
    last_ping: Instant,
}

impl Notifier {
    pub(super) fn from_env() -> Self {
        let target = std::env::var_os("NOTIFY_SOCKET").and_then(|path| {
            let path = path.to_str()?.to_string();
            // A leading '@' names a socket in the abstract namespace.
            let addr = match path.strip_prefix('@') {
                Some(name) => SocketAddr::from_abstract_name(name.as_bytes()),
                None => SocketAddr::from_pathname(&path),
            };
            match (UnixDatagram::unbound(), addr) {
                (Ok(sock), Ok(addr)) => Some((sock, addr)),
                (Err(e), _) | (_, Err(e)) => {
                    tracing::warn!(socket = %path, error = %e, "NOTIFY_SOCKET is set but unusable; not notifying systemd");
                    None
                }
            }
        });
        // WATCHDOG_PID, when set, must name us (sd_watchdog_enabled(3)).
        let for_us = std::env::var("WATCHDOG_PID")
            .map_or(true, |p| p.parse::<u32>().ok() == Some(std::process::id()));
        let watchdog = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|&us| us > 0 && for_us)
            .map(|us| Duration::from_micros(us) / 2);
        for var in ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"] {
            std::env::remove_var(var);
        }
        Self {
            target,
            watchdog,
            last_ping: Instant::now(),
        }
    }

    pub(super) fn send(&self, state: &str) {
        if let Some((sock, addr)) = &self.target {
            if let Err(e) = sock.send_to_addr(state.as_bytes(), addr) {
                tracing::debug!(error = %e, state, "sd_notify failed");
            }
        }
    }

    /// Pings the watchdog if half its interval has passed; called on every supervisor tick.
    pub(super) fn tick(&mut self) {
        if let Some(every) = self.watchdog {
            if self.last_ping.elapsed() >= every {
                self.send("WATCHDOG=1");
                self.last_ping = Instant::now();
            }
        }
    }
}
