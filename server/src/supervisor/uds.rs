//! `--uds PATH`: listening on a Unix domain socket, as uvicorn's `--uds` and gunicorn's
//! `unix:` bind do.
//!
//! - A socket file already at the path is a leftover of a crash if nobody accepts on it:
//!   connecting is refused (ECONNREFUSED), and it is removed before the bind. If a process
//!   does accept, start-up stops with an error instead of stealing its path. Anything that is
//!   not a socket is never removed.
//! - `--uds-perms` is applied with chmod right after the bind, before the first accept.
//! - The file is removed on exit, but only while it is still the one we created (same device,
//!   inode and change time: a file made later on the same freed inode has another change
//!   time): a second server that replaced it keeps its own.
//!
//! There is one socket: every front-end thread accepts from a `dup` of it (SO_REUSEPORT does
//! not spread Unix sockets over threads).

use std::io::ErrorKind;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use crate::failure::Failure;

/// The socket file we created; removed when dropped (after the threads stopped).
#[derive(Debug)]
pub(super) struct SocketFile {
    path: PathBuf,
    /// (device, inode, ctime seconds, ctime nanoseconds) once set up.
    id: (u64, u64, i64, i64),
}

fn identity(m: &std::fs::Metadata) -> (u64, u64, i64, i64) {
    (m.dev(), m.ino(), m.ctime(), m.ctime_nsec())
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        let ours = std::fs::symlink_metadata(&self.path).is_ok_and(|m| identity(&m) == self.id);
        if ours {
            if let Err(e) = std::fs::remove_file(&self.path) {
                tracing::warn!(path = %self.path.display(), error = %e, "cannot remove the --uds socket file");
            }
        }
    }
}

/// Binds the socket at `path` (replacing a stale one), applies `perms`, listens.
pub(super) fn bind(
    path: &Path,
    perms: Option<u32>,
    backlog: i32,
) -> Result<(UnixListener, SocketFile), Failure> {
    clear_stale(path)?;
    let fail = |what: &str, e: std::io::Error| {
        let hint = match e.kind() {
            ErrorKind::NotFound => "the folder must exist: create it or pick another path",
            ErrorKind::PermissionDenied => {
                "this user cannot create files in that folder: pick another path or fix its permissions"
            }
            _ if e.raw_os_error() == Some(libc::ENAMETOOLONG)
                || e.raw_os_error() == Some(libc::EINVAL) =>
            {
                "a Unix socket path must be shorter than 108 bytes: pick a shorter one"
            }
            _ => "check the --uds path",
        };
        Failure {
            code: 2,
            ..Failure::new(format!("--uds {}: {what}: {e}", path.display()), hint)
        }
    };
    let sock = socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM, None)
        .map_err(|e| fail("cannot create a socket", e))?;
    let addr = socket2::SockAddr::unix(path).map_err(|e| fail("not a socket path", e))?;
    sock.bind(&addr).map_err(|e| fail("cannot bind", e))?;
    let meta = std::fs::symlink_metadata(path).map_err(|e| fail("cannot stat the socket", e))?;
    // From here on the file is ours, and removed again if anything below fails.
    let mut file = SocketFile {
        path: path.to_path_buf(),
        id: identity(&meta),
    };
    if let Some(mode) = perms {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .map_err(|e| fail("cannot set --uds-perms", e))?;
        // chmod changed the change time.
        let meta =
            std::fs::symlink_metadata(path).map_err(|e| fail("cannot stat the socket", e))?;
        file.id = identity(&meta);
    }
    sock.listen(backlog).map_err(|e| fail("cannot listen", e))?;
    sock.set_nonblocking(true)
        .map_err(|e| fail("cannot listen", e))?;
    Ok((sock.into(), file))
}

/// Removes a socket file nobody accepts on; refuses to touch a live one or a non-socket.
fn clear_stale(path: &Path) -> Result<(), Failure> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(usage(
                format!("--uds {}: {e}", path.display()),
                "check the --uds path",
            ))
        }
    };
    if !meta.file_type().is_socket() {
        return Err(usage(
            format!(
                "--uds {}: a file that is not a socket is there",
                path.display()
            ),
            "pick another path, or remove that file if it is not needed",
        ));
    }
    match UnixStream::connect(path) {
        Ok(_) => Err(usage(
            format!(
                "--uds {}: another process is accepting connections on this socket",
                path.display()
            ),
            "stop that server first, or pick another path",
        )),
        Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
            tracing::info!(path = %path.display(), "removing a stale socket file (nobody accepts on it)");
            std::fs::remove_file(path).map_err(|e| {
                usage(
                    format!(
                        "--uds {}: cannot remove the stale socket: {e}",
                        path.display()
                    ),
                    "remove it by hand or pick another path",
                )
            })
        }
        Err(e) => Err(usage(
            format!(
                "--uds {}: cannot tell whether the socket there is in use: {e}",
                path.display()
            ),
            "remove it by hand if no server uses it, or pick another path",
        )),
    }
}

fn usage(error: String, hint: &str) -> Failure {
    Failure {
        code: 2,
        ..Failure::new(error, hint)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh folder for one test's socket, removed when the test ends.
    struct Tmp(PathBuf);

    impl Drop for Tmp {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn tmp(name: &str) -> (Tmp, PathBuf) {
        let dir = std::env::temp_dir().join(format!("uringapi-uds-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s.sock");
        (Tmp(dir), path)
    }

    #[test]
    fn binds_applies_perms_and_removes_the_file_when_dropped() {
        let (_dir, path) = tmp("bind");
        let (listener, file) = bind(&path, Some(0o600), 16).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        UnixStream::connect(&path).unwrap();
        drop(listener);
        drop(file);
        assert!(!path.exists());
    }

    #[test]
    fn a_stale_socket_is_replaced_and_a_live_one_refused() {
        let (_dir, path) = tmp("stale");
        // A listener that went away leaves its file: stale.
        drop(UnixListener::bind(&path).unwrap());
        assert!(path.exists());
        let (listener, file) = bind(&path, None, 16).unwrap();
        // Now someone accepts there: a second server must not take the path.
        let e = bind(&path, None, 16).unwrap_err();
        assert!(
            e.error.contains("another process is accepting"),
            "{}",
            e.error
        );
        assert_eq!(e.code, 2);
        assert!(path.exists(), "the live socket was removed");
        drop((listener, file));
    }

    #[test]
    fn a_regular_file_or_a_missing_folder_is_refused() {
        let (_dir, path) = tmp("file");
        std::fs::write(&path, b"keep me").unwrap();
        let e = bind(&path, None, 16).unwrap_err();
        assert!(e.error.contains("not a socket"), "{}", e.error);
        assert_eq!(std::fs::read(&path).unwrap(), b"keep me");
        let e = bind(&path.with_file_name("no/such/dir.sock"), None, 16).unwrap_err();
        assert!(e.hint.contains("folder must exist"), "{}", e.hint);
        assert_eq!(e.code, 2);
    }

    #[test]
    fn a_replaced_file_is_left_alone() {
        let (_dir, path) = tmp("replaced");
        let (listener, file) = bind(&path, None, 16).unwrap();
        // Replaced while we still listen, as in a real server: our bound socket holds its
        // inode, so the newcomer's file cannot reuse the number (after we stop listening it
        // could, on ext4; the change time in the identity then still tells them apart,
        // unless both files were made within one tick of the kernel's coarse clock).
        std::fs::remove_file(&path).unwrap();
        let other = UnixListener::bind(&path).unwrap();
        drop(listener);
        drop(file);
        assert!(path.exists(), "another server's socket was removed");
        drop(other);
    }
}
