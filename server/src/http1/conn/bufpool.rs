//! Read buffers, taken by a connection only while request bytes are in flight.
//!
//! An idle keep-alive connection waits for its socket to turn readable with no buffer at
//! all; once bytes come it takes a [`READ_CHUNK`] buffer from its thread's pool and gives it
//! back when the request is done and nothing of a next one is buffered. So ten thousand
//! idle connections cost no read buffers, and a busy thread reuses a handful of them
//! instead of going to the allocator per request.

use std::cell::RefCell;

/// Size of a read buffer (a read asks for what fits).
pub(super) const READ_CHUNK: usize = 16 * 1024;

/// A busy WebSocket's read buffer: a 64 KiB message (one slot) with its frame header fits
/// one read. Pooled apart, fewer of them.
pub(super) const WS_READ_CHUNK: usize = 64 * 1024 + 16;
const MAX_WS_POOLED: usize = 16;

/// Most buffers a thread keeps for reuse; more are freed (they were needed only at a peak).
const MAX_POOLED: usize = 64;

thread_local! {
    static POOL: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
    static WS_POOL: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// An empty buffer with room for [`WS_READ_CHUNK`] bytes.
pub(super) fn take_ws() -> Vec<u8> {
    WS_POOL
        .with(|p| p.borrow_mut().pop())
        .unwrap_or_else(|| Vec::with_capacity(WS_READ_CHUNK))
}

/// An empty buffer with room for [`READ_CHUNK`] bytes.
pub(super) fn take() -> Vec<u8> {
    POOL.with(|p| p.borrow_mut().pop())
        .unwrap_or_else(|| Vec::with_capacity(READ_CHUNK))
}

/// Gives a buffer back (emptied). Grown ones (a long head) are freed, not kept.
pub(super) fn put(mut buf: Vec<u8>) {
    let (pool, most) = match buf.capacity() {
        READ_CHUNK => (&POOL, MAX_POOLED),
        WS_READ_CHUNK => (&WS_POOL, MAX_WS_POOLED),
        _ => return,
    };
    buf.clear();
    pool.with(|p| {
        let mut p = p.borrow_mut();
        if p.len() < most {
            p.push(buf);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_reused_and_grown_ones_dropped() {
        let mut a = take();
        assert_eq!((a.len(), a.capacity()), (0, READ_CHUNK));
        a.extend_from_slice(b"abc");
        let ptr = a.as_ptr();
        put(a);
        let b = take();
        assert_eq!((b.len(), b.as_ptr()), (0, ptr));
        let mut big = Vec::with_capacity(READ_CHUNK);
        big.resize(READ_CHUNK + 1, 0);
        put(big);
        put(b);
        let c = take();
        assert_eq!(c.as_ptr(), ptr);
    }

    #[test]
    fn websocket_buffers_have_their_own_pool() {
        let w = take_ws();
        assert_eq!(w.capacity(), WS_READ_CHUNK);
        let ptr = w.as_ptr();
        put(w);
        let small = take();
        assert_ne!(
            small.as_ptr(),
            ptr,
            "a 16 KiB take must not get the WebSocket buffer"
        );
        let again = take_ws();
        assert_eq!(again.as_ptr(), ptr);
    }
}
