//! Writing the access log: per-thread [`Buffer`]s of whole lines, handed in batches to the
//! shared [`Sink`], whose writer thread does the only blocking `write`s (see the module doc
//! of `accesslog` for the rules: bounded queue, drops counted, errors never fatal, reopen).
//! The front end's own log lines take the same path ([`Sink::for_log`], [`LogWriter`]).

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{
    AtomicBool, AtomicU64, AtomicUsize, Ordering::Acquire, Ordering::Relaxed, Ordering::Release,
};
use std::sync::{mpsc, Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use super::{format, Entry, Format, FLUSH_AT};

/// Where the access log goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    Stderr,
    File(PathBuf),
}

/// Which lines a sink carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    AccessLog,
    /// The front end's own log lines: the sink's reports about itself join its own queue.
    Log,
}

impl Kind {
    /// The lines, as the sink's reports name them.
    fn what(self) -> &'static str {
        match self {
            Kind::AccessLog => "the access log",
            Kind::Log => "the log",
        }
    }
}

enum Out {
    Stderr,
    File(File),
}

/// The log's destination, shared by all front-end threads. Threads hand it whole batches;
/// a writer thread of its own does the writing, so a slow disk or a full pipe never stalls
/// an io_uring thread.
pub struct Sink {
    path: Option<PathBuf>,
    kind: Kind,
    tx: mpsc::Sender<Vec<u8>>,
    shared: Arc<Shared>,
    /// Most bytes waiting for the writer ([`QUEUE_BYTES`]).
    bound: usize,
}

/// What the writer thread and the submitting threads share.
struct Shared {
    /// A file opened by [`Sink::reopen`], for the writer to switch to before its next batch.
    swap: Mutex<Option<File>>,
    /// Bytes handed to the writer and not yet written: bounded by [`QUEUE_BYTES`].
    queued: AtomicUsize,
    /// Batches handed over, and batches the writer has finished (written or failed).
    sent: AtomicU64,
    done: AtomicU64,
    errors: AtomicU64,
    dropped_lines: AtomicU64,
    /// Of those, the lines dropped because the queue was full.
    overflowed: AtomicU64,
    /// Set while writes fail, so a failing disk is reported once, not per batch.
    failing: AtomicBool,
    /// Set while batches are dropped, so a stuck destination is reported once per run.
    dropping: AtomicBool,
}

/// Most bytes waiting for the writer thread. Past it a batch is dropped and its lines
/// counted (`uringapi_access_log_dropped_lines_total`) rather than block a front-end thread
/// or grow without bound behind a destination that does not drain.
pub const QUEUE_BYTES: usize = 1 << 20;

/// The sink of the front end's own log lines, once [`Sink::for_log`] has made it.
static LOG: OnceLock<Arc<Sink>> = OnceLock::new();

/// Waits (at most `limit`) until the front end's queued log lines are on stderr: before
/// something else writes there that must come after them (a worker's faulthandler dump
/// after the line that says why the worker was sent SIGABRT; written from the queue while
/// the dump is, the line landed in the middle of it).
pub fn settle_log(limit: Duration) {
    if let Some(sink) = LOG.get() {
        sink.settle(limit);
    }
}

impl Sink {
    /// Opens the destination (a file is created if needed and appended to) and starts the
    /// writer thread.
    pub fn open(dest: Destination) -> std::io::Result<Arc<Sink>> {
        Self::open_bounded(dest, Kind::AccessLog, QUEUE_BYTES)
    }

    /// The sink for the front end's own log lines (tracing's, through [`LogWriter`]): to
    /// stderr, so that a pipe nobody drains (a stalled log shipper, a parent that never
    /// reads) costs lines, counted and reported once it drains, and never stalls an io_uring
    /// thread or the supervisor on a log line.
    /// The first one made is also the one [`settle_log`] waits for.
    pub fn for_log() -> std::io::Result<Arc<Sink>> {
        let sink = Self::open_bounded(Destination::Stderr, Kind::Log, QUEUE_BYTES)?;
        let _ = LOG.set(sink.clone());
        Ok(sink)
    }

    /// [`Sink::open`] with a queue of at most `bound` bytes.
    fn open_bounded(dest: Destination, kind: Kind, bound: usize) -> std::io::Result<Arc<Sink>> {
        let (path, out) = match dest {
            Destination::Stderr => (None, Out::Stderr),
            Destination::File(p) => {
                let f = open_append(&p)?;
                (Some(p), Out::File(f))
            }
        };
        let shared = Arc::new(Shared {
            swap: Mutex::new(None),
            queued: AtomicUsize::new(0),
            sent: AtomicU64::new(0),
            done: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            dropped_lines: AtomicU64::new(0),
            overflowed: AtomicU64::new(0),
            failing: AtomicBool::new(false),
            dropping: AtomicBool::new(false),
        });
        let (tx, rx) = mpsc::channel::<Vec<u8>>();
        let writer = shared.clone();
        let log_path = path.clone();
        let name = match kind {
            Kind::AccessLog => "uringapi-accesslog",
            Kind::Log => "uringapi-log",
        };
        std::thread::Builder::new()
            .name(name.into())
            .spawn(move || writer.run(rx, out, log_path, kind.what()))?;
        Ok(Arc::new(Sink {
            path,
            kind,
            tx,
            shared,
            bound,
        }))
    }

    /// Hands a batch of whole lines to the writer thread; never blocks on the destination.
    /// A batch that would take the queue past [`QUEUE_BYTES`] is dropped and its lines
    /// counted ([`Sink::dropped_lines`]).
    pub fn write(&self, bytes: &[u8]) {
        if !bytes.is_empty() {
            self.submit(bytes.to_vec());
        }
    }

    fn submit(&self, batch: Vec<u8>) {
        let s = &self.shared;
        let len = batch.len();
        let room = s
            .queued
            .fetch_update(Relaxed, Relaxed, |q| {
                (q + len <= self.bound).then_some(q + len)
            })
            .is_ok();
        let batch = if room {
            s.sent.fetch_add(1, Relaxed);
            match self.tx.send(batch) {
                Ok(()) => {
                    s.dropping.store(false, Relaxed);
                    return;
                }
                // The writer thread is gone (it never exits while the sink lives): undo.
                Err(mpsc::SendError(batch)) => {
                    s.queued.fetch_sub(len, Relaxed);
                    s.done.fetch_add(1, Release);
                    batch
                }
            }
        } else {
            batch
        };
        let lines = batch.iter().filter(|&&b| b == b'\n').count() as u64;
        s.dropped_lines.fetch_add(lines, Relaxed);
        s.overflowed.fetch_add(lines, Relaxed);
        // The log's own sink cannot say so now: the line would join the full queue. Its
        // writer reports the count once lines get through again.
        if !s.dropping.swap(true, Relaxed) && self.kind == Kind::AccessLog {
            tracing::warn!(path = %shown(self.path.as_deref()), "the access log does not keep up (more than {} KiB waiting); dropping lines until it drains", self.bound >> 10);
        }
    }

    /// Opens the file's path again (after logrotate moved the old file away) and writes there
    /// from now on. On error the old file is kept. A no-op for stderr. Lines handed over
    /// before go to the old file, as long as the writer gets them out within a second.
    pub fn reopen(&self) -> std::io::Result<()> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let f = open_append(path)?;
        self.settle(Duration::from_secs(1));
        *self
            .shared
            .swap
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(f);
        Ok(())
    }

    /// Waits (at most `limit`) until the writer has finished every batch handed to it so
    /// far; whether it did. For shutdown and tests.
    pub fn settle(&self, limit: Duration) -> bool {
        let s = &self.shared;
        let deadline = std::time::Instant::now() + limit;
        loop {
            if s.done.load(Acquire) >= s.sent.load(Relaxed) {
                return true;
            }
            if std::time::Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Batches that could not be written since the sink was opened.
    pub fn errors(&self) -> u64 {
        self.shared.errors.load(Relaxed)
    }

    /// Lines lost: dropped because the writer did not keep up, or whose write failed.
    pub fn dropped_lines(&self) -> u64 {
        self.shared.dropped_lines.load(Relaxed)
    }
}

impl Shared {
    /// The writer thread: writes batches in order until the sink is dropped. Errors are
    /// counted ([`Sink::errors`]) and logged once per run of failures, never fatal.
    fn run(
        &self,
        rx: mpsc::Receiver<Vec<u8>>,
        mut out: Out,
        path: Option<PathBuf>,
        what: &'static str,
    ) {
        let target = shown(path.as_deref());
        // Lines lost since the current run of failures began.
        let mut lost = 0usize;
        // Lines dropped for a full queue that a log line has already counted.
        let mut told = 0u64;
        for batch in rx {
            if let Some(f) = self
                .swap
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take()
            {
                out = Out::File(f);
            }
            let result = match &mut out {
                Out::Stderr => std::io::stderr().lock().write_all(&batch),
                Out::File(f) => f.write_all(&batch),
            };
            self.queued.fetch_sub(batch.len(), Relaxed);
            match result {
                Ok(()) => {
                    if self.failing.swap(false, Relaxed) {
                        tracing::info!(path = %target, "{what} is written again; {lost} lines were lost");
                        lost = 0;
                    }
                    // A run of drops is over once the writer has caught up (nothing left
                    // queued): say how many lines it cost.
                    let overflowed = self.overflowed.load(Relaxed);
                    if overflowed > told && self.queued.load(Relaxed) == 0 {
                        tracing::warn!(path = %target, "{what} did not keep up; {} lines were dropped (its destination did not take them as fast as they came)", overflowed - told);
                        told = overflowed;
                    }
                }
                Err(e) => {
                    self.errors.fetch_add(1, Relaxed);
                    // Counted as dropped (a batch whose write failed part-way may have left
                    // some of its lines: counted all the same).
                    let lines = batch.iter().filter(|&&b| b == b'\n').count();
                    lost += lines;
                    self.dropped_lines.fetch_add(lines as u64, Relaxed);
                    if !self.failing.swap(true, Relaxed) {
                        tracing::warn!(error = %e, path = %target, "cannot write {what}; lines are lost until it works again");
                    }
                }
            }
            // SYNC: Release pairs with `settle`'s Acquire: what this batch did (the error
            // count, the file's contents) is visible to whoever sees it done.
            self.done.fetch_add(1, Release);
        }
    }
}

/// A [`Sink`] as an `io::Write` for tracing's formatter, which writes each event's whole
/// line in one `write_all`: the line is queued, never written on the calling thread.
#[derive(Clone)]
pub struct LogWriter(pub Arc<Sink>);

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The log's destination as a log line names it.
fn shown(path: Option<&std::path::Path>) -> String {
    path.map_or_else(|| "stderr".to_owned(), |p| p.display().to_string())
}

fn open_append(path: &std::path::Path) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// One front-end thread's batch of lines. Flushes itself when dropped.
pub struct Buffer {
    sink: Arc<Sink>,
    buf: Vec<u8>,
}

impl Buffer {
    pub fn new(sink: Arc<Sink>) -> Self {
        Self {
            sink,
            buf: Vec::with_capacity(FLUSH_AT + 4096),
        }
    }

    /// Formats one line into the batch; hands the batch to the sink once it passes
    /// [`FLUSH_AT`].
    pub fn push(&mut self, fmt: Format, e: &Entry<'_>) {
        format(fmt, e, &mut self.buf);
        if self.buf.len() >= FLUSH_AT {
            self.flush();
        }
    }

    /// Hands whatever is batched to the sink (a periodic timer, shutdown).
    pub fn flush(&mut self) {
        if !self.buf.is_empty() {
            let batch = std::mem::replace(&mut self.buf, Vec::with_capacity(FLUSH_AT + 4096));
            self.sink.submit(batch);
        }
    }

    /// Bytes batched and not yet written.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        self.flush();
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::{SystemTime, UNIX_EPOCH};

    use super::super::tests::{entry, line};
    use super::*;

    /// A fresh directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> Self {
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos();
            let p =
                std::env::temp_dir().join(format!("uringapi-{tag}-{}-{nanos}", std::process::id()));
            std::fs::create_dir(&p).unwrap();
            TempDir(p)
        }
        fn path(&self, name: &str) -> PathBuf {
            self.0.join(name)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn read(p: &Path) -> String {
        std::fs::read_to_string(p).unwrap()
    }

    #[test]
    fn reopen_after_rename_sends_new_lines_to_the_new_file() {
        let dir = TempDir::new("accesslog-reopen");
        let (log, rotated) = (dir.path("access.log"), dir.path("access.log.1"));
        std::fs::write(&log, "existing\n").unwrap();
        let sink = Sink::open(Destination::File(log.clone())).unwrap();
        let mut buf = Buffer::new(sink.clone());
        let e = entry();
        buf.push(
            Format::Common,
            &Entry {
                target: b"/one",
                ..e
            },
        );
        buf.flush();
        std::fs::rename(&log, &rotated).unwrap(); // logrotate's move
        buf.push(
            Format::Common,
            &Entry {
                target: b"/two",
                ..e
            },
        );
        buf.flush(); // still the old file: it is open
        sink.reopen().unwrap(); // SIGUSR1
        buf.push(
            Format::Common,
            &Entry {
                target: b"/three",
                ..e
            },
        );
        drop(buf); // flushes
        assert!(sink.settle(Duration::from_secs(60)));

        let old = read(&rotated);
        assert!(
            old.starts_with("existing\n"),
            "opened for append, not truncated"
        );
        assert!(old.contains("GET /one HTTP/1.1") && old.contains("GET /two HTTP/1.1"));
        assert!(!old.contains("/three"));
        let new = read(&log);
        assert_eq!(new.lines().count(), 1);
        assert!(new.contains("GET /three HTTP/1.1"), "{new}");
        assert_eq!(sink.errors(), 0);
    }

    #[test]
    fn reopen_on_stderr_is_a_no_op_and_a_failed_reopen_keeps_the_old_file() {
        Sink::open(Destination::Stderr).unwrap().reopen().unwrap();
        let dir = TempDir::new("accesslog-reopen-fail");
        let log = dir.path("access.log");
        let sink = Sink::open(Destination::File(log.clone())).unwrap();
        let moved = dir.path("elsewhere.log");
        std::fs::rename(&log, &moved).unwrap();
        std::fs::create_dir(&log).unwrap(); // the path is now a directory: cannot open it
        assert!(sink.reopen().is_err());
        sink.write(b"still here\n");
        assert!(sink.settle(Duration::from_secs(60)));
        assert_eq!(read(&moved), "still here\n");
    }

    #[test]
    fn failed_writes_count_their_lines_and_writing_resumes() {
        let dir = TempDir::new("accesslog-failing");
        let log = dir.path("access.log");
        let sink = Sink::open(Destination::File(log.clone())).unwrap();
        // As a full disk would: the writer's next batch goes to a file it cannot write.
        let read_only = File::open(&log).unwrap();
        *sink.shared.swap.lock().unwrap() = Some(read_only);
        sink.write(b"lost 1\nlost 2\n");
        sink.write(b"lost 3\n");
        assert!(sink.settle(Duration::from_secs(60)));
        assert_eq!((sink.errors(), sink.dropped_lines()), (2, 3));
        sink.reopen().unwrap();
        sink.write(b"kept\n");
        assert!(sink.settle(Duration::from_secs(60)));
        assert_eq!(read(&log), "kept\n");
        assert_eq!((sink.errors(), sink.dropped_lines()), (2, 3));
        assert!(
            !sink.shared.failing.load(Relaxed),
            "the run of failures ended"
        );
    }

    #[test]
    fn open_fails_for_a_missing_directory() {
        let dir = TempDir::new("accesslog-missing");
        assert!(Sink::open(Destination::File(dir.path("no/such/dir/access.log"))).is_err());
    }

    #[test]
    fn buffers_flush_at_32_kib_and_threads_never_interleave_lines() {
        let dir = TempDir::new("accesslog-threads");
        let log = dir.path("access.log");
        // Unbounded here: this test is about batching, not about a slow destination.
        let sink = Sink::open_bounded(
            Destination::File(log.clone()),
            Kind::AccessLog,
            usize::MAX / 2,
        )
        .unwrap();
        let (threads, per_thread) = (4, 3000);
        std::thread::scope(|s| {
            for t in 0..threads {
                let sink = sink.clone();
                s.spawn(move || {
                    let mut buf = Buffer::new(sink);
                    let mut flushed_by_push = false;
                    for i in 0..per_thread {
                        let target = format!("/t{t}/{i}");
                        let before = buf.pending();
                        buf.push(
                            Format::Json,
                            &Entry {
                                target: target.as_bytes(),
                                ..entry()
                            },
                        );
                        assert!(
                            buf.pending() < FLUSH_AT,
                            "push leaves at most one batch's worth"
                        );
                        flushed_by_push |= buf.pending() < before;
                    }
                    assert!(flushed_by_push, "a batch past 32 KiB is written by push");
                });
            }
        });
        assert!(sink.settle(Duration::from_secs(60)));
        let text = read(&log);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), threads * per_thread);
        let template = line(
            Format::Json,
            &Entry {
                target: b"/T",
                ..entry()
            },
        );
        let (head, tail) = template.trim_end().split_once("/T").unwrap();
        for l in &lines {
            let mid = l.strip_prefix(head).and_then(|r| r.strip_suffix(tail));
            assert!(mid.is_some_and(|m| m.starts_with("/t")), "torn line {l:?}");
        }
    }

    #[test]
    fn write_errors_are_counted_not_fatal() {
        // /dev/full accepts the open and fails every write with ENOSPC.
        let sink = Sink::open(Destination::File(PathBuf::from("/dev/full"))).unwrap();
        let mut buf = Buffer::new(sink.clone());
        buf.push(Format::Common, &entry());
        buf.flush();
        buf.push(Format::Common, &entry());
        buf.flush();
        assert!(sink.settle(Duration::from_secs(60)));
        assert_eq!(sink.errors(), 2);
        assert_eq!(
            buf.pending(),
            0,
            "a failed batch is dropped, not retried forever"
        );
    }

    #[test]
    fn a_destination_that_does_not_drain_drops_lines_instead_of_blocking() {
        use std::os::unix::fs::OpenOptionsExt as _;
        let dir = TempDir::new("accesslog-fifo");
        let fifo = dir.path("access.fifo");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        // A reader that never reads: the pipe fills (64 KiB), then the writer blocks.
        let reader = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&fifo)
            .unwrap();
        let sink = Sink::open_bounded(Destination::File(fifo), Kind::AccessLog, 256 << 10).unwrap();
        let line = [b"x".repeat(1023), b"\n".to_vec()].concat();
        let batch = line.repeat(16); // 16 lines, 16 KiB
                                     // 100 batches (1.6 MiB) into a 64 KiB pipe plus a 256 KiB queue: every call
                                     // returns (a blocking write would hang this test), and the excess is counted.
        for _ in 0..100 {
            sink.write(&batch);
        }
        let dropped = sink.dropped_lines();
        // At most 4 batches fit the pipe and 16 the queue; leave room for a larger pipe.
        assert!(dropped >= 16 * 50, "dropped {dropped}");
        assert_eq!(dropped % 16, 0, "whole batches are dropped");
        drop(reader); // the writer gets EPIPE and moves on
        assert!(sink.settle(Duration::from_secs(60)));
    }
}
