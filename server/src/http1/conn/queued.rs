//! A request waiting for a worker: its name in log lines and its place in the queue gauge.

use crate::dispatch::Hub;

/// "METHOD target" for log lines, cut to a sane length.
pub(super) fn describe(method: &[u8], target: &[u8]) -> Box<str> {
    let target = &target[..target.len().min(200)];
    format!(
        "{} {}",
        String::from_utf8_lossy(method),
        String::from_utf8_lossy(target)
    )
    .into_boxed_str()
}

/// Counts a request in the thread's queue while it waits.
pub(super) struct Queued<'h>(&'h Hub);

impl<'h> Queued<'h> {
    pub(super) fn new(hub: &'h Hub) -> Self {
        hub.queued.set(hub.queued.get() + 1);
        hub.metrics().queue_enter();
        Self(hub)
    }
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.0.queued.set(self.0.queued.get() - 1);
        self.0.metrics().queue_leave();
    }
}
