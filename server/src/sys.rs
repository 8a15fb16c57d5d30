//! The few raw OS calls the front end needs outside the protocol crate.
#![allow(unsafe_code)]

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::Command;

use uringapi_protocol::doorbell::EventFd;

/// `--sched`: the Linux scheduling policy of the front-end threads and the workers.
///
/// PERF: batch is the default. A woken thread that does not preempt the running one finds
/// more requests waiting when it runs: the front end's context switches per request under
/// hello went from 0.27 to 0.03, and in a side-by-side run (`benches/e2e/run.py --servers
/// uringapi,granian --apps hello,fastapi-json`, 3 rounds of 5 s, 2026-12-03) uringapi went
/// from 1.55x to 1.68x granian's rate on hello (21.1 to 16.0 CPU-µs per request) and from
/// 0.82x to 1.22x on fastapi-json.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sched {
    /// SCHED_BATCH: a thread that wakes up does not preempt the one running on its CPU; it
    /// runs when that one sleeps or its time slice ends, and finds more work waiting.
    Batch,
    /// SCHED_OTHER, the kernel's default: a thread that wakes up may preempt at once.
    Normal,
}

impl Sched {
    fn policy(self) -> libc::c_int {
        match self {
            Self::Batch => libc::SCHED_BATCH,
            Self::Normal => libc::SCHED_OTHER,
        }
    }

    /// Applies the policy to the calling thread, unless an operator started the server
    /// under a real-time or idle policy (`chrt`): that choice is kept. Makes two syscalls
    /// and allocates nothing, so it may run between fork and exec.
    pub fn apply_to_current_thread(self) -> std::io::Result<()> {
        // SAFETY: plain syscall about the calling thread (0).
        let current = unsafe { libc::sched_getscheduler(0) };
        if current != libc::SCHED_OTHER && current != libc::SCHED_BATCH {
            return Ok(());
        }
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: plain syscall on the calling thread with a valid sched_param.
        if unsafe { libc::sched_setscheduler(0, self.policy(), &param) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }
}

/// Lets the child started by `cmd` inherit `fds` (they are close-on-exec in this process),
/// gives it the scheduling policy `sched` and, with `cpu`, pins it to that CPU.
pub fn prepare_child(cmd: &mut Command, fds: Vec<RawFd>, sched: Sched, cpu: Option<usize>) {
    let set = cpu.map(cpu_set);
    // SAFETY: the closure runs in the forked child before exec and only calls fcntl,
    // sched_getscheduler, sched_setscheduler and sched_setaffinity, which are
    // async-signal-safe; it allocates
    // nothing (the Vec and the CPU set were built before the fork).
    unsafe {
        cmd.pre_exec(move || {
            for &fd in &fds {
                if libc::fcntl(fd, libc::F_SETFD, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            // Neither call is fatal when refused (a seccomp profile, a CPU outside a
            // cgroup's cpuset): the worker then runs with the defaults, as it would without
            // --sched batch or --pin-cpus.
            let _ = sched.apply_to_current_thread();
            if let Some(set) = &set {
                libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), set);
            }
            Ok(())
        });
    }
}

fn cpu_set(cpu: usize) -> libc::cpu_set_t {
    // SAFETY: cpu_set_t is a plain bit array; all-zero is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `cpu` < 1024 (checked by `config::CpuList`), the size of the set, so the
    // bit index stays inside it.
    unsafe { libc::CPU_SET(cpu.min(1023), &mut set) };
    set
}

/// Pins the calling thread to `cpu`.
pub fn pin_current_thread(cpu: usize) -> std::io::Result<()> {
    let set = cpu_set(cpu);
    // SAFETY: a valid cpu_set_t of the size passed; 0 is the calling thread.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Wraps a duplicate of an eventfd in a type monoio can poll for readability on either
/// driver (io_uring PollAdd or epoll). Only `readable()` is ever called on it; the eventfd
/// itself is drained with a plain read.
pub fn pollable(efd: &EventFd) -> std::io::Result<monoio::net::UnixStream> {
    let dup = efd.try_clone()?;
    // SAFETY: `dup` is a fresh descriptor we own; ownership moves into the std type, and
    // monoio never issues socket calls on it because we only poll it.
    let std = unsafe { std::os::unix::net::UnixStream::from_raw_fd(dup.into_raw_fd()) };
    monoio::net::UnixStream::from_std(std)
}

/// An `int` socket option of `fd`.
pub fn getsockopt_int(
    fd: RawFd,
    level: libc::c_int,
    opt: libc::c_int,
) -> std::io::Result<libc::c_int> {
    let mut v: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `v` and `len` are valid for writes of the sizes passed; a bad fd is an error.
    let rc = unsafe { libc::getsockopt(fd, level, opt, (&raw mut v).cast(), &mut len) };
    if rc == 0 {
        Ok(v)
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Takes ownership of a descriptor this process inherited (`--fd`, LISTEN_FDS).
///
/// The caller has checked that `fd` is open (a socket option read succeeded); nothing else in
/// the process owns it, since it was passed to us across exec and no code here opened it.
pub fn adopt_inherited_fd(fd: RawFd) -> OwnedFd {
    // SAFETY: see above: an open descriptor with no other owner in this process.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// Takes the next connection from the accept queue of the non-blocking listener `fd`
/// without waiting: `Ok(None)` when the queue is empty. The socket is close-on-exec, and
/// non-blocking when `nonblocking` (what the epoll driver wants; io_uring's own accepts give
/// blocking sockets).
pub fn accept_queued(fd: &impl AsRawFd, nonblocking: bool) -> std::io::Result<Option<OwnedFd>> {
    let flags = libc::SOCK_CLOEXEC | if nonblocking { libc::SOCK_NONBLOCK } else { 0 };
    loop {
        // SAFETY: accept4 on an open fd; null address pointers ask for no address.
        let n = unsafe {
            libc::accept4(
                fd.as_raw_fd(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                flags,
            )
        };
        if n >= 0 {
            // SAFETY: accept4 just returned this new descriptor; nothing else owns it.
            return Ok(Some(unsafe { OwnedFd::from_raw_fd(n) }));
        }
        let e = std::io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EAGAIN) => return Ok(None),
            _ => return Err(e),
        }
    }
}

/// Sends `sig` to `pid`. Errors (the process is already gone) are ignored.
pub fn kill(pid: u32, sig: i32) {
    // SAFETY: plain syscall with no memory arguments.
    unsafe { libc::kill(pid as libc::pid_t, sig) };
}

/// Whether a process `pid` exists (one of another user's counts: signalling it is refused,
/// not unknown).
pub fn process_exists(pid: u32) -> bool {
    // 0 and past pid_t are no process (kill(0, ..) would mean this process group).
    let Ok(pid @ 1..) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: plain syscall with no memory arguments; signal 0 only checks.
    let sent = unsafe { libc::kill(pid, 0) } == 0;
    sent || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

pub fn raw(fd: &impl AsRawFd) -> RawFd {
    fd.as_raw_fd()
}

/// Opens `rel` for reading under the directory `dir`, refusing (EXDEV/ELOOP) any path that
/// resolves outside it, by `..`, an absolute symlink or a /proc magic link: openat2 with
/// RESOLVE_BENEATH (Linux 5.6). One syscall, checked by the kernel at open time, so a
/// symlink swapped in between a check and the open cannot win.
pub fn open_beneath(dir: &impl AsRawFd, rel: &std::ffi::CStr) -> std::io::Result<std::fs::File> {
    // SAFETY: open_how is plain integers; all-zero is valid and the fields are set below.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    // O_NONBLOCK: opening a FIFO would otherwise wait for a writer, with the thread.
    how.flags = (libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NOCTTY | libc::O_NONBLOCK) as u64;
    how.resolve = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_MAGICLINKS;
    // SAFETY: `rel` is a valid C string and `how` a valid open_how of the size passed; the
    // returned descriptor is checked, then owned by the File.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir.as_raw_fd(),
            rel.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor we own.
    let file = unsafe { std::fs::File::from_raw_fd(fd as RawFd) };
    regular_file(&file).map(|_| file)
}

/// Checks that a file opened with O_NONBLOCK (so that a FIFO could not hold the thread in
/// its open) is a regular file, then clears the flag: io_uring would take it to mean "do not
/// wait", and a read of pages not yet in memory would fail with EAGAIN instead of waiting.
/// Anything else (a FIFO, a device, a directory) is `InvalidInput`, "not a regular file".
/// Returns the file's length.
pub fn regular_file(file: &impl AsRawFd) -> std::io::Result<u64> {
    let fd = file.as_raw_fd();
    // SAFETY: fstat into a zeroed stat buffer of the right type, on an open fd.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::fstat(fd, &mut st) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    if st.st_mode & libc::S_IFMT != libc::S_IFREG {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    // SAFETY: F_GETFL/F_SETFL on an open fd; no memory is passed.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    // SAFETY: as above.
    if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(st.st_size as u64)
}

/// Looks at the next byte of a socket without taking it: `Ok(0)` means the peer closed its
/// side, `Ok(1)` that data waits, `WouldBlock` that nothing happened yet.
pub fn peek(sock: &impl AsRawFd) -> std::io::Result<usize> {
    let mut byte = 0u8;
    // SAFETY: a valid one-byte buffer; MSG_PEEK leaves the data in the socket, MSG_DONTWAIT
    // keeps the call from blocking the thread.
    let n = unsafe {
        libc::recv(
            sock.as_raw_fd(),
            (&mut byte as *mut u8).cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    if n < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// One `sendfile(2)` from `file` at `offset` (the file's own position is left alone) to
/// `sock`, without blocking: the bytes the kernel took, `WouldBlock` when the socket's
/// buffer is full. Pages not in the page cache are read from disk inside the call (see
/// [`in_page_cache`]).
///
/// monoio's io_uring driver leaves its sockets blocking (the ring polls for them), and a
/// blocking sendfile to a client that stopped reading would stop the whole front-end
/// thread. So the socket is O_NONBLOCK for this call only: no ring operation is in flight
/// on it meanwhile (the caller's connection task is here), and none sees the flag.
pub fn sendfile(
    sock: &impl AsRawFd,
    file: &impl AsRawFd,
    offset: u64,
    len: usize,
) -> std::io::Result<usize> {
    let fd = sock.as_raw_fd();
    let mut off = libc::off_t::try_from(offset)
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    let flags = set_nonblocking(fd)?;
    let toggle = flags & libc::O_NONBLOCK == 0;
    // SAFETY: both fds are open for the call; `off` is an off_t we own, which the kernel
    // advances.
    let n = unsafe { libc::sendfile(fd, file.as_raw_fd(), &mut off, len) };
    let res = if n < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(n as usize)
    };
    // SAFETY: F_SETFL on an open fd, the flags as they were; no memory is passed.
    if toggle && unsafe { libc::fcntl(fd, libc::F_SETFL, flags) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    res
}

/// Sets O_NONBLOCK on `fd`; the file status flags it had before, to restore them.
fn set_nonblocking(fd: RawFd) -> std::io::Result<libc::c_int> {
    // SAFETY: F_GETFL/F_SETFL on an open fd; no memory is passed.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(std::io::Error::last_os_error());
    }
    if flags & libc::O_NONBLOCK == 0 {
        // SAFETY: as above.
        if unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(flags)
}

/// What `reader` (a pipe) holds now, without waiting for every writer to close it. A
/// worker's status pipe is also held by any process its app forked (fork copies every fd,
/// close-on-exec or not), which may outlive the worker: read to the end, it stopped the
/// supervisor until that process exited. The worker writes before it exits, and this is
/// read once it has.
pub fn read_available(reader: &mut (impl std::io::Read + AsRawFd)) -> String {
    if set_nonblocking(reader.as_raw_fd()).is_err() {
        return String::new();
    }
    let mut buf = Vec::new();
    // Ends with WouldBlock once the pipe is empty (or at its end); what came is kept.
    let _ = reader.read_to_end(&mut buf);
    String::from_utf8_lossy(&buf).into_owned()
}

/// Reaps the children that have exited and for which `ours` is false (processes this one did
/// not start: as PID 1, orphans are re-parented to it); stops at the first exited child that
/// is `ours`, which its `Child` reaps. The number reaped.
pub fn reap_adopted(ours: impl Fn(u32) -> bool) -> usize {
    let mut reaped = 0;
    loop {
        // SAFETY: a plain C struct, all zeroes is a valid value.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: `info` is ours to fill; WNOWAIT leaves the child waitable.
        let rc = unsafe {
            libc::waitid(
                libc::P_ALL,
                0,
                &mut info,
                libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
            )
        };
        // SAFETY: filled in by waitid (0 when no child has exited).
        let pid = unsafe { info.si_pid() };
        if rc != 0 || pid <= 0 || ours(pid as u32) {
            return reaped;
        }
        // SAFETY: reaps exactly that child, which has exited.
        if unsafe { libc::waitpid(pid, std::ptr::null_mut(), libc::WNOHANG) } != pid {
            return reaped;
        }
        reaped += 1;
    }
}

/// `cachestat(2)` (Linux 6.5). New system calls have had one number on every architecture
/// since 424; the libc crate does not name this one for glibc targets yet.
const SYS_CACHESTAT: libc::c_long = 451;

/// Whether every page of `file` in `offset..offset + len` is in the page cache, so that a
/// [`sendfile`] of them cannot wait for the disk (and hold up the thread's other
/// connections). False for `len` 0, or when the kernel cannot tell (before 6.5, or a
/// seccomp filter that refuses the call).
pub fn in_page_cache(file: &impl AsRawFd, offset: u64, len: u64) -> bool {
    // include/uapi/linux/mman.h
    #[repr(C)]
    struct Range {
        off: u64,
        len: u64,
    }
    #[repr(C)]
    #[derive(Default)]
    struct Stat {
        nr_cache: u64,
        nr_dirty: u64,
        nr_writeback: u64,
        nr_evicted: u64,
        nr_recently_evicted: u64,
    }
    if len == 0 {
        return false;
    }
    let range = Range { off: offset, len };
    let mut stat = Stat::default();
    // SAFETY: both structs have the kernel's layout and outlive the call; flags must be 0.
    let r = unsafe {
        libc::syscall(
            SYS_CACHESTAT,
            file.as_raw_fd(),
            &range as *const Range,
            &mut stat as *mut Stat,
            0u32,
        )
    };
    let page = page_size();
    let pages = (offset + len - 1) / page - offset / page + 1;
    r == 0 && stat.nr_cache >= pages
}

/// The kernel's page size (what /proc counts in pages use), not an assumed 4 KiB.
pub fn page_size() -> u64 {
    // SAFETY: sysconf reads a constant of the running system; no memory is passed.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(n).ok().filter(|&n| n > 0).unwrap_or(4096)
}

/// Raises the soft RLIMIT_NOFILE to the hard one (every connection is an fd; Go and nginx
/// do the same) and returns the soft limit in force. A refusal keeps the old limit.
pub fn raise_nofile() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return 1024;
    }
    // The kernel refuses more than fs.nr_open (2^20 by default), and "unlimited" too.
    let want = lim.rlim_max.min(1 << 20);
    if lim.rlim_cur < want {
        let raised = libc::rlimit {
            rlim_cur: want,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: setrlimit reads one rlimit we own.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            return want;
        }
    }
    lim.rlim_cur
}

/// Counts each delivery of signal `sig` in `count` (a flag would merge several deliveries
/// that come between two looks at it into one).
pub fn count_signal(
    sig: libc::c_int,
    count: std::sync::Arc<std::sync::atomic::AtomicUsize>,
) -> std::io::Result<()> {
    // SAFETY: the handler only increments an atomic, which is async-signal-safe.
    unsafe {
        signal_hook::low_level::register(sig, move || {
            count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        })
    }
    .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn a_pipe_still_held_open_is_read_without_waiting_for_its_end() {
        let (mut reader, mut writer) = std::io::pipe().unwrap();
        writer.write_all(b"error: boom\nhint: fix it\n").unwrap();
        // `writer` stays open, as in a process the worker forked: this must not wait for it.
        assert_eq!(read_available(&mut reader), "error: boom\nhint: fix it\n");
        assert_eq!(read_available(&mut reader), "");
        drop(writer);
    }

    #[test]
    fn page_cache_residency_follows_reads_and_eviction() {
        let path = std::env::temp_dir().join(format!("uringapi-cachestat-{}", std::process::id()));
        let mut f = std::fs::File::create(&path).unwrap();
        f.write_all(&vec![7u8; 256 * 1024]).unwrap();
        f.sync_all().unwrap();
        let mut f = std::fs::File::open(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        assert!(!in_page_cache(&f, 0, 0), "an empty range is never 'cached'");
        // SAFETY: an open fd; advice only.
        unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        assert!(
            !in_page_cache(&f, 0, 256 * 1024),
            "evicted pages count as cached"
        );
        f.read_to_end(&mut Vec::new()).unwrap();
        // A kernel without cachestat (before 6.5) says no: sendfile is then never used.
        // SAFETY: a bad fd and null pointers: the kernel answers EBADF (or ENOSYS) at once.
        let r = unsafe { libc::syscall(SYS_CACHESTAT, -1, 0usize, 0usize, 0u32) };
        let known =
            !(r < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ENOSYS));
        assert_eq!(in_page_cache(&f, 0, 256 * 1024), known);
        assert_eq!(
            in_page_cache(&f, 4095, 2),
            known,
            "a range across a page boundary"
        );
    }
}
