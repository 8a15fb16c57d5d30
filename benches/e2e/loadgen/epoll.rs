//! Minimal epoll bindings for the load generators in this folder: std links libc but
//! exposes no epoll, and these files are built with plain `rustc`, without Cargo and so
//! without the `libc` crate. Included with `mod epoll;` (rustc finds this file beside
//! the one that names it).
use std::time::Duration;

pub const IN: u32 = 0x001;
pub const OUT: u32 = 0x004;
const CTL_ADD: i32 = 1;
const CTL_DEL: i32 = 2;
const CTL_MOD: i32 = 3;
const CLOEXEC: i32 = 0o2_000_000;
const EINTR: i32 = 4;

/// `struct epoll_event`; packed on x86-64 only, as the kernel's is.
#[cfg_attr(target_arch = "x86_64", repr(C, packed))]
#[cfg_attr(not(target_arch = "x86_64"), repr(C))]
#[derive(Clone, Copy)]
pub struct Event {
    pub events: u32,
    pub data: u64,
}

#[repr(C)]
struct Timespec {
    tv_sec: i64,
    tv_nsec: i64,
}

extern "C" {
    fn epoll_create1(flags: i32) -> i32;
    fn epoll_ctl(epfd: i32, op: i32, fd: i32, event: *mut Event) -> i32;
    fn epoll_pwait2(
        epfd: i32,
        events: *mut Event,
        maxevents: i32,
        timeout: *const Timespec,
        sigmask: *const u8,
    ) -> i32;
    fn close(fd: i32) -> i32;
}

pub struct Epoll(i32);

impl Epoll {
    pub fn new() -> std::io::Result<Epoll> {
        // SAFETY: plain syscall wrapper; the fd is owned by the returned value.
        let fd = unsafe { epoll_create1(CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Epoll(fd))
    }

    fn ctl(&self, op: i32, fd: i32, events: u32, token: u64) -> std::io::Result<()> {
        let mut ev = Event {
            events,
            data: token,
        };
        // SAFETY: `ev` lives across the call; the kernel copies it.
        if unsafe { epoll_ctl(self.0, op, fd, &mut ev) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    pub fn add(&self, fd: i32, events: u32, token: u64) -> std::io::Result<()> {
        self.ctl(CTL_ADD, fd, events, token)
    }

    pub fn modify(&self, fd: i32, events: u32, token: u64) -> std::io::Result<()> {
        self.ctl(CTL_MOD, fd, events, token)
    }

    pub fn delete(&self, fd: i32) {
        // A failure leaves nothing to undo: the fd is closed right after.
        let _ = self.ctl(CTL_DEL, fd, 0, 0);
    }

    /// Waits at most `timeout` (None: forever); returns the ready events.
    pub fn wait<'a>(
        &self,
        events: &'a mut [Event],
        timeout: Option<Duration>,
    ) -> std::io::Result<&'a [Event]> {
        let ts = timeout.map(|t| Timespec {
            tv_sec: t.as_secs() as i64,
            tv_nsec: i64::from(t.subsec_nanos()),
        });
        let ts_ptr = ts
            .as_ref()
            .map_or(std::ptr::null(), |t| t as *const Timespec);
        // SAFETY: `events` is writable for `len` entries; `ts` outlives the call.
        let n = unsafe {
            epoll_pwait2(
                self.0,
                events.as_mut_ptr(),
                events.len() as i32,
                ts_ptr,
                std::ptr::null(),
            )
        };
        if n < 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() == Some(EINTR) {
                return Ok(&events[..0]);
            }
            return Err(err);
        }
        Ok(&events[..n as usize])
    }
}

impl Drop for Epoll {
    fn drop(&mut self) {
        // SAFETY: we own the fd.
        unsafe { close(self.0) };
    }
}
