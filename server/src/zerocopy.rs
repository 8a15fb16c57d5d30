//! Sending response bytes straight from shared memory.
//!
//! A [`SlotLease`] keeps a worker's response slot out of the worker's hands (and the segment
//! mapped) until it is dropped; a [`Frame`] is one `writev`: a small prefix built by the
//! front end (status line and headers, or a chunk-size line), the slot's bytes as they lie,
//! and a small suffix. monoio owns the frame while the kernel reads it — also when the
//! connection task is dropped mid-write — so the slot goes back only after the kernel is done.
#![allow(unsafe_code)]

use std::rc::Rc;
use std::sync::Arc;

use monoio::buf::IoVecBuf;
use uringapi_protocol::arena::SlotIndex;
use uringapi_protocol::{FrontChannel, Segment};

/// Who takes a response slot back when its lease ends: the thread's dispatch hub. A trait
/// here, so that this module needs nothing from `dispatch` (which hands out the leases).
pub trait SlotOwner {
    fn release_slot(&self, worker: usize, generation: u64, slot: SlotIndex);
}

/// A held response slot: `len` bytes at `ptr`, returned to its worker on drop. A
/// [detached](SlotLease::detach) lease gave its slot back already and holds a copy.
pub struct SlotLease {
    /// Who takes the slot back; `None` once detached.
    owner: Option<Rc<dyn SlotOwner>>,
    worker: usize,
    generation: u64,
    slot: SlotIndex,
    ptr: *const u8,
    len: usize,
    /// Keeps the mapping alive even if the worker is replaced while the kernel still reads.
    _segment: Arc<Segment>,
    /// A detached lease's bytes (`ptr` points into them); empty while the slot is held.
    copy: Vec<u8>,
}

impl SlotLease {
    /// Leases a slot that `chan.recv()` handed out (validated, held, `len <= slot_size`).
    pub(crate) fn new(
        owner: Rc<dyn SlotOwner>,
        worker: usize,
        generation: u64,
        chan: &FrontChannel,
        slot: SlotIndex,
        len: usize,
    ) -> Self {
        assert!(len <= chan.slot_size(), "lease longer than its slot");
        let ptr = chan.slot_ptr(slot);
        Self {
            owner: Some(owner),
            worker,
            generation,
            slot,
            ptr,
            len,
            _segment: chan.segment().clone(),
            copy: Vec::new(),
        }
    }

    /// Copies the bytes out and gives the slot back to its worker now, instead of when the
    /// lease drops: for a consumer that copies them anyway (HTTP/2 builds DATA frames from
    /// owned bytes) and may run long after the record arrived.
    pub fn detach(mut self) -> Self {
        if let Some(owner) = self.owner.take() {
            let mut copy = Vec::new();
            self.copy_into(&mut copy);
            owner.release_slot(self.worker, self.generation, self.slot);
            self.ptr = copy.as_ptr();
            self.copy = copy;
        }
        self
    }

    /// The bytes as an owned buffer: a detached lease's copy as it is, else a fresh copy
    /// (the slot goes back when `self` drops here).
    pub fn into_vec(mut self) -> Vec<u8> {
        if self.owner.is_none() {
            let start = self.ptr as usize - self.copy.as_ptr() as usize;
            let mut v = std::mem::take(&mut self.copy);
            v.truncate(start + self.len);
            v.drain(..start);
            return v;
        }
        let mut v = Vec::with_capacity(self.len);
        self.copy_into(&mut v);
        v
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// Drops the first `n` bytes from the lease (they were the response head).
    pub fn skip(mut self, n: usize) -> Self {
        let n = n.min(self.len);
        // SAFETY: `n <= len`, so the new start stays within the leased bytes.
        self.ptr = unsafe { self.ptr.add(n) };
        self.len -= n;
        self
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends a copy of the leased bytes to `out` (for bytes the front end must look at or
    /// transform, such as a WebSocket message it compresses).
    pub fn copy_into(&self, out: &mut Vec<u8>) {
        out.reserve(self.len);
        // SAFETY: `ptr..ptr + len` lies inside a held slot of a mapped segment (see `new`);
        // `out` has room for `len` more bytes after `reserve`; the copy is raw, so a
        // misbehaving worker writing the slot meanwhile changes only the bytes we copy.
        unsafe {
            std::ptr::copy_nonoverlapping(self.ptr, out.as_mut_ptr().add(out.len()), self.len);
            out.set_len(out.len() + self.len);
        }
    }
}

impl Drop for SlotLease {
    fn drop(&mut self) {
        if let Some(owner) = &self.owner {
            owner.release_slot(self.worker, self.generation, self.slot);
        }
    }
}

/// One vectored write: prefix, optional shared-memory body, suffix.
pub struct Frame {
    prefix: Vec<u8>,
    body: Option<SlotLease>,
    suffix: &'static [u8],
    /// Boxed: monoio takes the iovec pointer before it moves the frame into the operation,
    /// so the array must not live inside the (movable) frame itself.
    iov: Box<[libc::iovec; 3]>,
    /// First iovec not fully written yet.
    start: usize,
    n: usize,
    /// Which iovec holds the body (`NO_BODY`: none).
    body_iov: usize,
}

const NO_BODY: usize = usize::MAX;

impl Frame {
    pub fn new(prefix: Vec<u8>, body: Option<SlotLease>, suffix: &'static [u8]) -> Self {
        let mut f = Self {
            prefix,
            body,
            suffix,
            iov: Box::new([empty(); 3]),
            start: 0,
            n: 0,
            body_iov: NO_BODY,
        };
        f.push(f.prefix.as_ptr(), f.prefix.len());
        if let Some((ptr, len)) = f.body.as_ref().map(|b| (b.ptr, b.len)) {
            if len > 0 {
                f.body_iov = f.n;
            }
            f.push(ptr, len);
        }
        f.push(f.suffix.as_ptr(), f.suffix.len());
        f
    }

    fn push(&mut self, p: *const u8, len: usize) {
        if len > 0 {
            self.iov[self.n] = libc::iovec {
                iov_base: p as *mut libc::c_void,
                iov_len: len,
            };
            self.n += 1;
        }
    }

    /// Bytes still to write.
    pub fn total_len(&self) -> usize {
        self.iov[self.start..self.n].iter().map(|v| v.iov_len).sum()
    }

    /// Marks `written` bytes as sent after a partial `writev`; true when nothing is left.
    ///
    /// We track progress ourselves rather than use monoio's `write_vectored_all`: in monoio
    /// 0.2.4 its iovec bookkeeping drops the pointer advance on a partial write
    /// (`iov_base.add(amt)` is computed and discarded), which resends bytes.
    pub fn advance(&mut self, mut written: usize) -> bool {
        while self.start < self.n && written > 0 {
            let v = &mut self.iov[self.start];
            if written >= v.iov_len {
                written -= v.iov_len;
                v.iov_len = 0;
                self.start += 1;
            } else {
                // SAFETY: `written < iov_len`, so the new base stays inside the same buffer.
                v.iov_base = unsafe { v.iov_base.cast::<u8>().add(written) }.cast();
                v.iov_len -= written;
                written = 0;
            }
        }
        while self.start < self.n && self.iov[self.start].iov_len == 0 {
            self.start += 1;
        }
        self.start == self.n
    }

    /// Gives the body's slot back to its worker now, keeping a copy of its bytes: for a
    /// write the client is slow to take, so that the slot does not wait on the client.
    /// Only between writes (while the kernel holds no pointer into the frame).
    pub fn detach_body(&mut self) {
        let Some(lease) = self.body.take() else {
            return;
        };
        let old = lease.ptr;
        let lease = lease.detach();
        if self.body_iov != NO_BODY {
            let v = &mut self.iov[self.body_iov];
            if v.iov_len > 0 {
                let offset = v.iov_base as usize - old as usize;
                // SAFETY: the iovec pointed `offset` bytes into the lease's `len` bytes;
                // the copy has the same bytes at the same offsets.
                v.iov_base = unsafe { lease.ptr.add(offset) } as *mut libc::c_void;
            }
        }
        self.body = Some(lease);
    }

    /// Marks every byte written and gives the body's slot back: for a transport that took
    /// a copy of them (TLS encrypted them into its own buffer).
    pub fn consumed(&mut self) {
        self.advance(self.total_len());
        self.body = None;
    }

    /// The bytes still to write, in order (TLS encrypts them from here).
    pub fn pieces(&self) -> Vec<&[u8]> {
        self.iov[self.start..self.n]
            .iter()
            .map(|v| {
                // SAFETY: each iovec points into the frame's prefix, its leased shared-memory
                // slot or its static suffix (see the `IoVecBuf` impl below), all alive and
                // unchanged while `self` is borrowed.
                unsafe { std::slice::from_raw_parts(v.iov_base.cast::<u8>(), v.iov_len) }
            })
            .collect()
    }

    /// Gives the prefix buffer back for reuse.
    pub fn into_prefix(self) -> Vec<u8> {
        self.prefix
    }
}

fn empty() -> libc::iovec {
    libc::iovec {
        iov_base: std::ptr::null_mut(),
        iov_len: 0,
    }
}

// SAFETY: the iovec array is boxed, so its address survives moves of the Frame; every
// iovec still to write points either into `prefix` (a Vec whose heap buffer does not move
// when the Frame moves and is not mutated while the Frame lives), into a leased
// shared-memory slot kept mapped and out of the worker's hands by the lease the Frame owns,
// into a detached lease's copy (a Vec the lease owns, re-pointed by `detach_body`), or into
// a `'static` suffix; after `consumed` none is left to write (`start == n`). So the pointers
// stay valid for as long as the runtime owns the Frame, which is what `IoVecBuf` requires.
unsafe impl IoVecBuf for Frame {
    fn read_iovec_ptr(&self) -> *const libc::iovec {
        self.iov[self.start..].as_ptr()
    }

    fn read_iovec_len(&self) -> usize {
        self.n - self.start
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(f: &Frame) -> Vec<u8> {
        let iov = &f.iov[f.start..f.n];
        iov.iter()
            .flat_map(|v| {
                // SAFETY: every iovec points into the frame's own prefix or static suffix.
                unsafe { std::slice::from_raw_parts(v.iov_base.cast::<u8>(), v.iov_len) }.to_vec()
            })
            .collect()
    }

    #[test]
    fn partial_writes_resume_where_they_stopped() {
        for step in 1..12 {
            let mut f = Frame::new(b"HEAD-".to_vec(), None, b"TAIL");
            let mut sent = Vec::new();
            loop {
                let rest = collect(&f);
                let n = step.min(rest.len());
                sent.extend_from_slice(&rest[..n]);
                if f.advance(n) {
                    break;
                }
            }
            assert_eq!(sent, b"HEAD-TAIL", "step {step}");
        }
    }
}
