//! What the metrics endpoint sees: the supervisor's latest view of its workers, plus the
//! load figures read live.

use super::*;

/// What the metrics endpoint reports, refreshed by the supervisor every [`PUBLISH_EVERY`];
/// the per-worker load figures are read live.
pub(super) struct Board {
    pub(super) metrics: Arc<Metrics>,
    pub(super) load: Arc<LoadTable>,
    pub(super) workers: Mutex<Vec<WorkerSnapshot>>,
    pub(super) process: Mutex<ProcessSnapshot>,
    /// Every active worker is ready and the server is not draining.
    pub(super) ready: AtomicBool,
}

impl crate::metrics::Source for Board {
    fn metrics(&self) -> String {
        let mut workers = self
            .workers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        for w in &mut workers {
            let load = self.load.get(w.index);
            w.in_flight = u64::from(load.in_flight());
            w.served = load.served();
            w.stalled = load.is_stalled();
        }
        let mut process = self
            .process
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        process.connections = self.load.connections.load(Ordering::Relaxed) as u64;
        let indices: Vec<usize> = workers.iter().map(|w| w.index).collect();
        let mut exposition = self.metrics.exposition(&workers, &process);
        crate::metrics::websocket::render(&mut exposition, &self.load, &indices);
        exposition.into_text()
    }

    fn ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }
}

/// How often the supervisor refreshes what the metrics endpoint reports.
pub(super) const PUBLISH_EVERY: Duration = Duration::from_millis(100);
