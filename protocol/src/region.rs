//! Memory that rings and arenas are laid out in: the [`Region`] trait, implemented by the
//! real memfd mapping (`segment::Segment`) and by [`HeapRegion`], zeroed heap memory that
//! stands in for shared memory in unit tests, loom models and benches.
//!
//! Its own module so that `ring` (whose tests run on a heap region) and `segment` (which
//! lays rings out) do not import each other.

/// A mapped region of memory that rings and arenas are laid out in.
pub trait Region {
    /// Start of the region, 4096-byte aligned.
    fn base(&self) -> *mut u8;
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Zeroed, page-aligned heap memory standing in for shared memory in tests.
pub struct HeapRegion {
    ptr: *mut u8,
    layout: std::alloc::Layout,
}

impl HeapRegion {
    pub fn new(len: usize) -> Self {
        let layout = std::alloc::Layout::from_size_align(len.max(64), 4096).expect("layout");
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        assert!(!ptr.is_null(), "out of memory");
        Self { ptr, layout }
    }

    pub fn base(&self) -> *mut u8 {
        self.ptr
    }
}

impl Region for HeapRegion {
    fn base(&self) -> *mut u8 {
        self.ptr
    }
    fn len(&self) -> usize {
        self.layout.size()
    }
}

impl Drop for HeapRegion {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout, freed once.
        unsafe { std::alloc::dealloc(self.ptr, self.layout) }
    }
}

// SAFETY: the region is plain memory; concurrent access is governed by the ring protocol.
unsafe impl Send for HeapRegion {}
// SAFETY: as above.
unsafe impl Sync for HeapRegion {}
