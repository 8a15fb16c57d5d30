//! Doorbells: an eventfd per consumer plus a "sleeping" flag in shared memory (ring.rs
//! rule 4). Producers ring only when the consumer said it is about to sleep.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};

use crate::sync::{fence, AtomicU32, Ordering};

/// The consumer's "I am going to sleep" flag. Lives in shared memory.
///
/// Bit 0 is the flag itself; the other bits count the consumer's sleeps, so that a producer
/// can tell "asleep, and I already rang for this sleep" (ring.rs rule 4) from a new sleep.
#[repr(C)]
pub struct SleepFlag(AtomicU32);

/// The sleeping bit of a [`SleepFlag`] value.
const ASLEEP: u32 = 1;

impl SleepFlag {
    pub fn new() -> Self {
        Self(AtomicU32::new(0))
    }

    /// The consumer's half of rule 4, step one: announce the sleep. The caller must then
    /// re-check every ring it consumes and only block if all are empty.
    pub fn prepare_sleep(&self) {
        // Only the consumer writes its flag, so this read-then-store is not a race: the
        // next sleep number, with the sleeping bit set.
        let v = self.0.load(Ordering::Relaxed);
        let next = ((v >> 1).wrapping_add(1) << 1) | ASLEEP;
        self.0.store(next, Ordering::Relaxed);
        // SYNC: rule 4, pairs with the fence in `Producer::consumer_sleeping`.
        fence(Ordering::SeqCst);
    }

    /// The consumer is awake again (woken, or found work on the re-check).
    pub fn awake(&self) {
        let v = self.0.load(Ordering::Relaxed);
        self.0.store(v & !ASLEEP, Ordering::Relaxed);
    }

    /// Read by producers after their SeqCst fence (rule 4).
    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::Relaxed) & ASLEEP != 0
    }

    /// Read by producers after their SeqCst fence (rule 4): `Some(sleep)` while the
    /// consumer is asleep (or about to be), naming which sleep it is.
    pub fn sleep_number(&self) -> Option<u32> {
        let v = self.0.load(Ordering::Relaxed);
        (v & ASLEEP != 0).then_some(v)
    }
}

impl Default for SleepFlag {
    fn default() -> Self {
        Self::new()
    }
}

/// A non-blocking eventfd used as a doorbell.
#[derive(Debug)]
pub struct EventFd(OwnedFd);

/// How many times doorbells were rung by this process, for metrics and benchmarks.
static RINGS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Doorbell writes this process has made so far.
pub fn rings_total() -> u64 {
    RINGS.load(std::sync::atomic::Ordering::Relaxed)
}

impl EventFd {
    /// A new eventfd, close-on-exec (the supervisor clears that flag for the one child that
    /// should inherit it).
    pub fn new() -> io::Result<Self> {
        // SAFETY: plain syscall; the result is checked before use.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor we own.
        Ok(Self(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Adopts an inherited descriptor.
    ///
    /// # Safety
    /// `fd` is an open eventfd that nothing else will close.
    pub unsafe fn from_raw(fd: RawFd) -> Self {
        // SAFETY: forwarded contract.
        Self(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    /// Wakes the consumer. An overflowing counter (EAGAIN) means a wake-up is pending anyway.
    pub fn ring(&self) {
        RINGS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a valid u64 to our own fd.
        let _ = unsafe { libc::write(self.0.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    /// Clears pending wake-ups; returns whether there were any.
    pub fn drain(&self) -> bool {
        let mut v: u64 = 0;
        // SAFETY: reads 8 bytes into a valid u64 from our own non-blocking fd.
        let n = unsafe { libc::read(self.0.as_raw_fd(), (&mut v as *mut u64).cast(), 8) };
        n == 8
    }

    pub fn try_clone(&self) -> io::Result<Self> {
        Ok(Self(self.0.try_clone()?))
    }

    pub fn into_raw_fd(self) -> RawFd {
        self.0.into_raw_fd()
    }
}

impl AsRawFd for EventFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn ring_then_drain_once() {
        let e = EventFd::new().unwrap();
        assert!(!e.drain());
        e.ring();
        e.ring();
        assert!(e.drain());
        assert!(!e.drain());
    }
}
