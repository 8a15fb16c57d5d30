//! Atomics and cells used by the shared-memory structures, swapped for `loom`'s under
//! `--cfg loom` so that the ring protocol can be model-checked.

#[cfg(loom)]
pub use loom::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};

#[cfg(not(loom))]
pub use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};

/// A slot of a ring: written by the producer, read by the consumer, never both at once.
#[cfg(not(loom))]
#[repr(transparent)]
pub struct Cell<T>(std::cell::UnsafeCell<T>);

#[cfg(not(loom))]
impl<T: Copy> Cell<T> {
    pub fn new(v: T) -> Self {
        Self(std::cell::UnsafeCell::new(v))
    }

    /// # Safety
    /// The caller has exclusive access to this cell under the ring protocol (ring.rs rule 1).
    pub unsafe fn write(&self, v: T) {
        // SAFETY: exclusive access is the caller's contract; the pointer is valid and aligned.
        unsafe { self.0.get().write_volatile(v) }
    }

    /// # Safety
    /// The caller owns this cell for reading under the ring protocol (ring.rs rule 2).
    pub unsafe fn read(&self) -> T {
        // SAFETY: as above; volatile because the peer is another process we do not trust.
        unsafe { self.0.get().read_volatile() }
    }
}

#[cfg(loom)]
pub struct Cell<T>(loom::cell::UnsafeCell<T>);

#[cfg(loom)]
impl<T: Copy> Cell<T> {
    pub fn new(v: T) -> Self {
        Self(loom::cell::UnsafeCell::new(v))
    }

    /// # Safety
    /// See the non-loom version.
    pub unsafe fn write(&self, v: T) {
        // SAFETY: loom checks the exclusivity we claim.
        self.0.with_mut(|p| unsafe { p.write(v) })
    }

    /// # Safety
    /// See the non-loom version.
    pub unsafe fn read(&self) -> T {
        // SAFETY: loom checks the exclusivity we claim.
        self.0.with(|p| unsafe { p.read() })
    }
}
