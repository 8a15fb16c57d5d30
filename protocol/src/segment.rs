//! The segment: a sealed memfd mapping shared with one worker, laid out per `layout.rs`
//! (the heap stand-in for tests is `region::HeapRegion`). The segment header is versioned;
//! an opener refuses any mismatch with a typed error.
//!
//! # The worker control block (ordering rules, cited as `SYNC: segment rule N`)
//! The segment header's fixed part (magic, layout version, geometry) is written by the front
//! end before the memfd is handed to the worker; `fork`/`exec` orders those writes before
//! anything the worker reads. The front end keeps its own copy of the geometry and never
//! reads it back, so a worker that scribbles over it changes nothing. The words below are
//! written by the worker (untrusted) and read by the front end:
//! 1. Readiness: the worker stores `pid` (`Relaxed`), then `ready = 1` with `Release`; the
//!    front end loads `ready` with `Acquire` (pairs with the store) before it reads `pid` or
//!    sends work, so a ready worker's pid is the one it stored.
//! 2. Heartbeat, loop lag and the doorbell count are statistics: single words, each written
//!    only by the worker and read by the supervisor for liveness and metrics. `Relaxed`:
//!    nothing else is published through them, and a stale value only delays a verdict by one
//!    beat. Readers treat them as untrusted numbers (saturating arithmetic; 0 means "no beat
//!    yet"), never as sizes or indices.
//! 3. The sleeping and wants-space flags live here too but follow the ring's rule 4 (see
//!    `ring.rs` and `doorbell.rs`).
//! 4. Stopping: a worker that gets a SIGTERM the front end did not send (an operator's
//!    `kill`, a whole-group signal) stores `ready = 2` (`Release`): it asks to be replaced
//!    and goes on serving; the supervisor loads it (`Acquire`) and retires the worker. The
//!    front end stops a worker by storing `stop_requested = 1` (`Release`); a worker not yet
//!    ready also gets a SIGTERM after it (it may still be importing the app), a ready one
//!    only the store, which its heartbeat loads (`Acquire`) within one beat (so an app that
//!    resets SIGTERM's handler cannot turn the stop into a kill); the worker's SIGTERM
//!    handler loads it too, to tell the front end's SIGTERM (stop now) from the others.
//!    `stop_grace_ms`, how long the worker's requests in flight may still run, is
//!    stored (`Relaxed`) before that `Release` and so read after the `Acquire`. These two
//!    words are the ones the front end writes after the hand-over; the worker only reads
//!    them, and a worker that scribbles over them only changes how it stops itself.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use crate::doorbell::SleepFlag;
use crate::layout::{ChannelControl, Geometry, GeometryError, HEADER_BYTES, LAYOUT_VERSION, MAGIC};
use crate::record::Record;
use crate::region::Region;
use crate::ring::{self, Padded};
use crate::sync::{AtomicU32, AtomicU64, Ordering};

/// CLOCK_MONOTONIC in nanoseconds: the one clock the front end and its workers share.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The control block a worker writes: readiness, pid, its sleeping flag and its heartbeat.
#[repr(C)]
pub struct WorkerControl {
    /// The worker's doorbell flag (ring.rs rule 4): it consumes every request ring.
    pub sleeping: SleepFlag,
    /// The worker is blocked for response slots or ring space (same protocol as `sleeping`).
    pub wants_space: SleepFlag,
    /// Set to 1 by the worker once its app has started; 2 once it asks to be replaced
    /// (rule 4).
    pub ready: AtomicU32,
    pub pid: AtomicU32,
}

/// The first page of every segment.
#[repr(C)]
pub struct SegmentHeader {
    pub magic: u64,
    pub version: u32,
    pub threads: u32,
    pub ring_capacity: u32,
    pub slots: u32,
    pub slot_size: u32,
    pub _pad: u32,
    pub generation: u64,
    pub total_len: u64,
    pub worker: Padded<WorkerControl>,
    /// The worker's heartbeat: CLOCK_MONOTONIC nanoseconds of its event loop's last beat
    /// (0 before the first). The supervisor reads it to tell a stalled loop from a busy one.
    pub heartbeat: Padded<AtomicU64>,
    /// How late the last beat ran against its schedule, in microseconds: the event-loop lag.
    pub loop_lag_us: AtomicU64,
    /// Doorbells the worker process has rung so far (reported with each beat).
    pub worker_doorbells: AtomicU64,
    /// 1 once the front end has decided to stop the worker (rule 4).
    pub stop_requested: AtomicU32,
    /// What is left of the graceful timeout for the stopped worker's requests, in
    /// milliseconds (rule 4: published by `stop_requested`).
    pub stop_grace_ms: AtomicU32,
}

const _: () = assert!(std::mem::size_of::<SegmentHeader>() <= HEADER_BYTES);

/// Why a segment could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot inspect segment fd {fd}: {source}")]
    Stat { fd: RawFd, source: io::Error },
    #[error("cannot map segment: {0}")]
    Map(io::Error),
    #[error("segment too small: {len} bytes")]
    TooSmall { len: usize },
    #[error("not a uringapi segment (magic {0:#x})")]
    Magic(u64),
    #[error("segment layout version {found}, this build speaks {expected}")]
    Version { found: u32, expected: u32 },
    #[error("segment geometry invalid: {0}")]
    Geometry(#[from] GeometryError),
    #[error("segment is {actual} bytes but its geometry needs {expected}")]
    Length { actual: usize, expected: usize },
}

/// Why a segment could not be created.
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    #[error(transparent)]
    Geometry(#[from] GeometryError),
    #[error("memfd_create failed: {0}")]
    Memfd(io::Error),
    #[error("cannot size the segment to {len} bytes: {source}")]
    Truncate { len: usize, source: io::Error },
    #[error("cannot seal the segment: {0}")]
    Seal(io::Error),
    #[error("cannot map the segment: {0}")]
    Map(io::Error),
}

/// A worker's shared memory: a sealed memfd, mapped read-write.
pub struct Segment {
    fd: OwnedFd,
    base: *mut u8,
    len: usize,
    geometry: Geometry,
    generation: u64,
}

// SAFETY: the mapping is shared memory whose accesses follow the ring protocol; the struct
// only owns the fd and the mapping, both usable from any thread.
unsafe impl Send for Segment {}
// SAFETY: as above; `&Segment` exposes only raw pointers and atomics.
unsafe impl Sync for Segment {}

fn map(fd: RawFd, len: usize) -> io::Result<*mut u8> {
    // SAFETY: mapping a file descriptor we hold; the result is checked.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    Ok(p.cast())
}

impl Segment {
    /// Creates, sizes, seals and initialises a segment for `geometry`.
    ///
    /// The seals (`F_SEAL_SHRINK | F_SEAL_GROW`, then `F_SEAL_SEAL`) stop a worker from
    /// resizing the file under the front end, which would turn the next access into SIGBUS.
    pub fn create(geometry: Geometry, generation: u64) -> Result<Self, CreateError> {
        geometry.validate()?;
        let len = geometry.segment_bytes();
        let name = c"uringapi-channel";
        // SAFETY: valid C string; flags are constants; result checked.
        let raw = unsafe {
            libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING)
        };
        if raw < 0 {
            return Err(CreateError::Memfd(io::Error::last_os_error()));
        }
        // SAFETY: a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: plain syscalls on our own fd; results checked.
        unsafe {
            if libc::ftruncate(fd.as_raw_fd(), len as libc::off_t) != 0 {
                return Err(CreateError::Truncate {
                    len,
                    source: io::Error::last_os_error(),
                });
            }
            let seals = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW;
            if libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, seals) != 0
                || libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, libc::F_SEAL_SEAL) != 0
            {
                return Err(CreateError::Seal(io::Error::last_os_error()));
            }
        }
        let base = map(fd.as_raw_fd(), len).map_err(CreateError::Map)?;
        let seg = Self {
            fd,
            base,
            len,
            geometry,
            generation,
        };
        // SAFETY: a fresh, zeroed mapping of `len` bytes that nobody else has seen yet.
        unsafe { seg.init() };
        Ok(seg)
    }

    /// # Safety
    /// Only on a fresh mapping no other party accesses yet.
    unsafe fn init(&self) {
        let g = self.geometry;
        let header = SegmentHeader {
            magic: MAGIC,
            version: LAYOUT_VERSION,
            threads: g.threads,
            ring_capacity: g.ring_capacity,
            slots: g.slots,
            slot_size: g.slot_size,
            _pad: 0,
            generation: self.generation,
            total_len: self.len as u64,
            worker: Padded(WorkerControl {
                sleeping: SleepFlag::new(),
                wants_space: SleepFlag::new(),
                ready: AtomicU32::new(0),
                pid: AtomicU32::new(0),
            }),
            heartbeat: Padded(AtomicU64::new(0)),
            loop_lag_us: AtomicU64::new(0),
            worker_doorbells: AtomicU64::new(0),
            stop_requested: AtomicU32::new(0),
            stop_grace_ms: AtomicU32::new(0),
        };
        // SAFETY: (all writes below) offsets come from `Geometry::channel`, which keeps every
        // part inside `segment_bytes()` == `self.len`, each 64-byte aligned.
        unsafe {
            self.base.cast::<SegmentHeader>().write(header);
            for t in 0..g.threads {
                let c = g.channel(t);
                self.base
                    .add(c.control)
                    .cast::<ChannelControl>()
                    .write(ChannelControl {
                        front_sleeping: Padded(SleepFlag::new()),
                        front_wants_space: Padded(SleepFlag::new()),
                    });
                ring::init::<Record>(self.base.add(c.req_ring), g.ring_capacity as usize);
                ring::init::<u32>(self.base.add(c.req_free), g.free_capacity());
                ring::init::<Record>(self.base.add(c.resp_ring), g.ring_capacity as usize);
                ring::init::<u32>(self.base.add(c.resp_free), g.free_capacity());
            }
        }
    }

    /// Maps a segment inherited from the front end and checks its header.
    ///
    /// # Safety
    /// `fd` is an open descriptor that the caller gives up (it is closed with the segment).
    pub unsafe fn open(fd: RawFd) -> Result<Self, OpenError> {
        // SAFETY: ownership of `fd` passes to us (caller's contract).
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: zeroed stat is a valid out-parameter; result checked.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
            let source = io::Error::last_os_error();
            return Err(OpenError::Stat {
                fd: fd.as_raw_fd(),
                source,
            });
        }
        let len = st.st_size as usize;
        if len < HEADER_BYTES {
            return Err(OpenError::TooSmall { len });
        }
        let base = map(fd.as_raw_fd(), len).map_err(OpenError::Map)?;
        // SAFETY: the header lies within the first page of a mapping of at least one page;
        // these fields are written once by the creator before the worker is spawned.
        let h = unsafe { &*base.cast::<SegmentHeader>() };
        let geometry = Geometry {
            threads: h.threads,
            ring_capacity: h.ring_capacity,
            slots: h.slots,
            slot_size: h.slot_size,
        };
        let (magic, version, generation) = (h.magic, h.version, h.generation);
        let seg = Self {
            fd,
            base,
            len,
            geometry,
            generation,
        };
        if magic != MAGIC {
            return Err(OpenError::Magic(magic));
        }
        if version != LAYOUT_VERSION {
            return Err(OpenError::Version {
                found: version,
                expected: LAYOUT_VERSION,
            });
        }
        geometry.validate()?;
        if geometry.segment_bytes() != len {
            return Err(OpenError::Length {
                actual: len,
                expected: geometry.segment_bytes(),
            });
        }
        Ok(seg)
    }

    pub fn geometry(&self) -> Geometry {
        self.geometry
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// The worker control block. The worker writes it; the front end only reads it.
    pub fn header(&self) -> &SegmentHeader {
        // SAFETY: initialised by `create` (or checked by `open`) and mapped while we live.
        unsafe { &*self.base.cast::<SegmentHeader>() }
    }

    /// Channel `t`'s claim words (ring.rs rules 8 to 10), `ring_capacity` of them. Both
    /// sides write them; the front end trusts none of what it reads there (rule 10).
    pub fn claims(&self, t: u32) -> &[AtomicU64] {
        let g = self.geometry;
        let c = g.channel(t);
        // SAFETY: `Geometry::channel` keeps the claim words inside the mapping, 64-byte
        // aligned; a fresh segment is zeroed (a valid `AtomicU64` is any bit pattern), and
        // every access to them is atomic. The slice lives as long as `&self` (the mapping).
        unsafe {
            std::slice::from_raw_parts(
                self.base.add(c.claims).cast::<AtomicU64>(),
                g.ring_capacity as usize,
            )
        }
    }

    pub fn worker_sleeping(&self) -> &SleepFlag {
        &self.header().worker.0.sleeping
    }

    /// The worker's app has started (it may have asked to be replaced since).
    pub fn is_ready(&self) -> bool {
        // SYNC: segment rule 1, pairs with the Release store in `set_ready`.
        self.header().worker.0.ready.load(Ordering::Acquire) != 0
    }

    /// The worker got a SIGTERM that the front end did not send and asks to be replaced.
    pub fn wants_replacement(&self) -> bool {
        // SYNC: segment rule 4, pairs with the Release store in `ask_replacement`.
        self.header().worker.0.ready.load(Ordering::Acquire) == 2
    }

    /// Worker side of rule 4: ask the front end to replace this (ready) worker.
    pub fn ask_replacement(&self) {
        // SYNC: segment rule 4, pairs with the Acquire load in `wants_replacement`.
        self.header().worker.0.ready.store(2, Ordering::Release);
    }

    /// Front-end side of rule 4: stop, and the worker's requests in flight may run `grace`
    /// longer (whole milliseconds, at most `u32::MAX`).
    pub fn request_stop(&self, grace: std::time::Duration) {
        let ms = u32::try_from(grace.as_millis()).unwrap_or(u32::MAX);
        // SYNC: segment rule 4: published by the Release store below.
        self.header().stop_grace_ms.store(ms, Ordering::Relaxed);
        // SYNC: segment rule 4, pairs with the Acquire load in `stop_grace`.
        self.header().stop_requested.store(1, Ordering::Release);
    }

    /// Whether the front end has decided to stop this worker (rule 4).
    pub fn stop_requested(&self) -> bool {
        self.stop_grace().is_some()
    }

    /// Once the front end has decided to stop this worker (rule 4): how long its requests
    /// in flight may still run.
    pub fn stop_grace(&self) -> Option<std::time::Duration> {
        // SYNC: segment rule 4, pairs with the Release store in `request_stop`.
        let stopped = self.header().stop_requested.load(Ordering::Acquire) == 1;
        stopped.then(|| {
            let ms = self.header().stop_grace_ms.load(Ordering::Relaxed);
            std::time::Duration::from_millis(ms.into())
        })
    }

    pub fn set_ready(&self, pid: u32) {
        // SYNC: segment rule 1: the pid is published by the Release store of `ready` below.
        self.header().worker.0.pid.store(pid, Ordering::Relaxed);
        // SYNC: segment rule 1, pairs with the Acquire load in `is_ready`.
        self.header().worker.0.ready.store(1, Ordering::Release);
    }

    /// CLOCK_MONOTONIC nanoseconds of the worker's last beat; 0 before the first.
    pub fn heartbeat(&self) -> u64 {
        // SYNC: segment rule 2 (a statistic; nothing is published through it).
        self.header().heartbeat.0.load(Ordering::Relaxed)
    }

    /// How long ago the worker last beat; `None` before its first beat.
    pub fn heartbeat_age(&self) -> Option<std::time::Duration> {
        let last = self.heartbeat();
        (last != 0).then(|| std::time::Duration::from_nanos(monotonic_ns().saturating_sub(last)))
    }

    /// The event-loop lag the last beat measured.
    pub fn loop_lag(&self) -> std::time::Duration {
        // SYNC: segment rule 2 (a statistic).
        std::time::Duration::from_micros(self.header().loop_lag_us.load(Ordering::Relaxed))
    }

    /// Records a beat of a loop that means to beat every `interval`; the lag is how much
    /// later than that this beat came.
    pub fn beat(&self, interval: std::time::Duration) {
        // SYNC: segment rule 2 (statistics: the doorbell count, the beat, the lag).
        self.header()
            .worker_doorbells
            .store(crate::doorbell::rings_total(), Ordering::Relaxed);
        let now = monotonic_ns();
        // SYNC: segment rule 2.
        let last = self.header().heartbeat.0.swap(now, Ordering::Relaxed);
        if last != 0 {
            let lag = now
                .saturating_sub(last)
                .saturating_sub(interval.as_nanos() as u64);
            // SYNC: segment rule 2.
            self.header()
                .loop_lag_us
                .store(lag / 1000, Ordering::Relaxed);
        }
    }

    pub fn worker_wants_space(&self) -> &SleepFlag {
        &self.header().worker.0.wants_space
    }

    fn control(&self, t: u32) -> &ChannelControl {
        let c = self.geometry.channel(t);
        // SAFETY: initialised by `create`; inside the mapping (layout).
        unsafe { &*self.base.add(c.control).cast::<ChannelControl>() }
    }

    /// Thread `t`'s sleeping flag as stored in this segment.
    pub fn front_sleeping(&self, t: u32) -> &SleepFlag {
        &self.control(t).front_sleeping.0
    }

    /// Thread `t`'s "wants space" flag as stored in this segment.
    pub fn front_wants_space(&self, t: u32) -> &SleepFlag {
        &self.control(t).front_wants_space.0
    }

    /// The fullest request ring (front end → worker) over all threads, as a fraction of
    /// its capacity: how far the worker is behind. For metrics only.
    pub fn request_ring_occupancy(&self) -> f64 {
        let cap = u64::from(self.geometry.ring_capacity);
        let fullest = (0..self.geometry.threads)
            .map(|t| {
                let c = self.geometry.channel(t);
                // SAFETY: initialised by `create`; inside the mapping (layout).
                let ring = unsafe { &*self.base.add(c.req_ring).cast::<ring::RingHeader>() };
                ring.depth(cap)
            })
            .max()
            .unwrap_or(0);
        fullest as f64 / cap.max(1) as f64
    }

    /// Doorbells the worker has rung, as it last reported with its heartbeat.
    pub fn worker_doorbells(&self) -> u64 {
        // SYNC: segment rule 2 (a statistic).
        self.header().worker_doorbells.load(Ordering::Relaxed)
    }

    /// Start of the mapping, for the channel views.
    pub(crate) fn base(&self) -> *mut u8 {
        self.base
    }
}

impl Region for Segment {
    fn base(&self) -> *mut u8 {
        self.base
    }
    fn len(&self) -> usize {
        self.len
    }
}

impl Drop for Segment {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the mapping we created; nothing refers to it any more
        // (every view holds an `Arc<Segment>`).
        unsafe { libc::munmap(self.base.cast(), self.len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn geometry() -> Geometry {
        Geometry {
            threads: 2,
            ring_capacity: 64,
            slots: 8,
            slot_size: 4096,
        }
    }

    #[test]
    fn a_created_segment_opens_with_the_same_geometry() {
        let seg = Segment::create(geometry(), 7).unwrap();
        // SAFETY: dup gives us a descriptor of our own to hand over.
        let dup = unsafe { libc::dup(seg.fd()) };
        // SAFETY: `dup` is ours to give away.
        let other = unsafe { Segment::open(dup) }.unwrap();
        assert_eq!(other.geometry(), geometry());
        assert_eq!(other.generation(), 7);
        other.set_ready(42);
        assert!(seg.is_ready());
        assert!(!seg.wants_replacement() && !other.stop_requested());
        other.ask_replacement();
        assert!(seg.is_ready() && seg.wants_replacement());
        seg.request_stop(std::time::Duration::from_millis(2500));
        assert!(other.stop_requested());
        assert_eq!(
            other.stop_grace(),
            Some(std::time::Duration::from_millis(2500))
        );
    }

    #[test]
    fn a_sealed_segment_cannot_be_resized() {
        let seg = Segment::create(geometry(), 1).unwrap();
        // SAFETY: syscall on our fd.
        let r = unsafe { libc::ftruncate(seg.fd(), 1) };
        assert_eq!(r, -1);
        assert_eq!(io::Error::last_os_error().raw_os_error(), Some(libc::EPERM));
    }

    #[test]
    fn a_foreign_file_is_refused_by_magic() {
        let seg = Segment::create(geometry(), 1).unwrap();
        // SAFETY: first 8 bytes are the magic; we own the mapping.
        unsafe { seg.base().cast::<u64>().write(0xdead) };
        // SAFETY: dup is ours.
        let r = unsafe { Segment::open(libc::dup(seg.fd())) };
        assert!(matches!(r, Err(OpenError::Magic(0xdead))));
    }
}
