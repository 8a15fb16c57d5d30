//! `--pid-file`: the front end's process id in a file, for init scripts and for logrotate's
//! `postrotate` (`kill -USR1 $(cat PATH)` reopens the access log), as gunicorn's `--pid` and
//! granian's `--pid-file`. Written before the workers start; removed when `serve` returns,
//! whichever way (a start-up failure too), if it still names this process.

use std::path::{Path, PathBuf};

use crate::failure::Failure;
use crate::sys;

pub(super) struct PidFile {
    path: PathBuf,
    pid: u32,
}

impl Drop for PidFile {
    fn drop(&mut self) {
        if read_pid(&self.path) == Some(self.pid) {
            if let Err(e) = std::fs::remove_file(&self.path) {
                tracing::warn!(path = %self.path.display(), error = %e, "cannot remove the --pid-file");
            }
        }
    }
}

fn read_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Writes this process's id to `path` (through a temporary file and a rename, so a reader
/// never sees it half written). Refused while the file names another live process: a second
/// server started by mistake must not take over the file the first one is signalled by.
pub(super) fn write(path: &Path) -> Result<PidFile, Failure> {
    let pid = std::process::id();
    if let Some(other) = read_pid(path).filter(|&p| p != pid && sys::process_exists(p)) {
        return Err(Failure::new(
            format!("--pid-file {}: process {other}, named in it, is running", path.display()),
            "stop that server first, or delete the file if that process is not a uringapi server (a file naming a process that is gone is replaced)",
        ));
    }
    let fail = |e: std::io::Error| {
        Failure::new(
            format!("--pid-file {}: cannot write it: {e}", path.display()),
            "the folder must exist and be writable by this user: create it or pick another path",
        )
    };
    let name = path.file_name().ok_or_else(|| {
        Failure::new(
            format!("--pid-file {}: not a file path", path.display()),
            "give the path of a file, e.g. /run/uringapi/app.pid",
        )
    })?;
    let tmp = path.with_file_name(format!(".{}.{pid}.tmp", name.to_string_lossy()));
    std::fs::write(&tmp, format!("{pid}\n")).map_err(fail)?;
    if let Err(e) = std::fs::rename(&tmp, path) {
        let _ = std::fs::remove_file(&tmp);
        return Err(fail(e));
    }
    Ok(PidFile {
        path: path.to_path_buf(),
        pid,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_then_removed_and_a_live_owner_is_refused() {
        let dir = std::env::temp_dir().join(format!("uringapi-pidfile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("app.pid");
        let file = write(&path).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            format!("{}\n", std::process::id())
        );
        drop(file);
        assert!(!path.exists());
        // A live process (pid 1 always is) keeps its file; a dead one's is replaced.
        std::fs::write(&path, "1\n").unwrap();
        let e = write(&path).err().unwrap();
        assert!(
            e.error.contains("process 1, named in it, is running"),
            "{}",
            e.error
        );
        for dead in ["0", "not a pid", &format!("{}", u32::MAX - 1)] {
            std::fs::write(&path, dead).unwrap();
            drop(write(&path).unwrap());
        }
        let file = write(&path).unwrap();
        // Replaced by someone else meanwhile: left alone.
        std::fs::write(&path, "1\n").unwrap();
        drop(file);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "1\n");
        assert!(write(&dir.join("missing/app.pid"))
            .err()
            .unwrap()
            .error
            .contains("cannot write it"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
