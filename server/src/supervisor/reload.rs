//! `--reload`: a development aid. A watcher thread (inotify, through the `notify` crate)
//! follows the `--reload-dir` trees; when a file matching `--reload-include` and not
//! `--reload-exclude` changes, it logs what changed and raises the same flag SIGHUP raises,
//! so every worker is replaced one at a time by the rolling restart. The front end and its
//! listeners stay up: no connection is refused while the app reloads.
//!
//! With `--workers N` all N workers are replaced (granian's choice; uvicorn forces one
//! worker). Changes that arrive within [`SETTLE`] of each other (an editor writing a file in
//! several steps, a `git checkout`) make one restart.

use std::ffi::OsStr;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use globset::{Glob, GlobSet, GlobSetBuilder};
use notify::{RecursiveMode, Watcher};

use crate::config::ServeConfig;
use crate::failure::Failure;

/// Quiet time after a change before the restart starts.
const SETTLE: Duration = Duration::from_millis(200);

/// uvicorn's defaults: Python sources, but no hidden files, bytecode, or editor swap files.
pub const DEFAULT_INCLUDE: &[&str] = &["*.py"];
pub const DEFAULT_EXCLUDE: &[&str] = &[".*", "*.py[cod]", "*.sw.*", "~*"];
/// Directories whose files never trigger a restart, besides those an exclude pattern names
/// (`.*` among them: `.venv`, `.git`, `.mypy_cache`): caches and installed packages, which
/// `pip install` or a build rewrites by the thousand (watchfiles, granian's watcher, skips
/// them too).
pub const SKIPPED_DIRS: &[&str] = &["__pycache__", "node_modules", "site-packages"];

/// Keeps the watcher alive; dropping it stops watching.
pub(super) struct Reloader {
    _watcher: notify::RecommendedWatcher,
}

pub(super) fn start(
    args: &ServeConfig,
    app_dir: &Path,
    hup: Arc<AtomicBool>,
) -> Result<Option<Reloader>, Failure> {
    if !args.reload {
        return Ok(None);
    }
    let usage = |e: String| Failure {
        code: 2,
        ..Failure::new(
            e,
            "see --reload-dir, --reload-include and --reload-exclude in --help",
        )
    };
    let dirs: Vec<PathBuf> = if args.reload_dir.is_empty() {
        vec![app_dir.to_path_buf()]
    } else {
        args.reload_dir.clone()
    };
    // The paths events name are under these, as given: absolute, so that `relevant` can
    // tell the part below the watched directory (which may itself be a hidden one).
    let dirs: Vec<PathBuf> = dirs
        .iter()
        .map(|d| std::path::absolute(d).unwrap_or(d.clone()))
        .collect();
    let include = globs(if args.reload_include.is_empty() {
        DEFAULT_INCLUDE.iter().map(|s| s.to_string()).collect()
    } else {
        args.reload_include.clone()
    })
    .map_err(usage)?;
    let exclude = globs(
        DEFAULT_EXCLUDE
            .iter()
            .map(|s| s.to_string())
            .chain(args.reload_exclude.iter().cloned())
            .collect(),
    )
    .map_err(usage)?;
    let (tx, rx) = mpsc::channel();
    let mut watcher = notify::recommended_watcher(tx).map_err(|e| {
        Failure::new(
            format!("--reload: cannot watch files: {e}"),
            "raise fs.inotify.max_user_instances, or run without --reload",
        )
    })?;
    for dir in &dirs {
        watcher
            .watch(dir, RecursiveMode::Recursive)
            .map_err(|e| usage(format!("--reload-dir {}: {e}", dir.display())))?;
    }
    tracing::info!(dirs = ?dirs, "--reload: watching for changes; workers restart on each");
    let roots = dirs.clone();
    std::thread::Builder::new()
        .name("uringapi-reload".into())
        .spawn(move || watch(&rx, &roots, &include, &exclude, &hup))
        .map_err(|e| {
            Failure::new(
                format!("cannot start the reload thread: {e}"),
                "check ulimit -u",
            )
        })?;
    Ok(Some(Reloader { _watcher: watcher }))
}

fn globs(patterns: Vec<String>) -> Result<GlobSet, String> {
    let mut set = GlobSetBuilder::new();
    for p in &patterns {
        set.add(Glob::new(p).map_err(|e| format!("bad reload pattern {p:?}: {e}"))?);
    }
    set.build().map_err(|e| e.to_string())
}

/// Whether a changed path should restart the workers: its file name (or the path as a
/// whole) matches an include pattern and no exclude pattern, and no directory between the
/// watched one (in `roots`) and the file is excluded: named by an exclude pattern (`.*`:
/// `.venv`, `.git`) or one of [`SKIPPED_DIRS`].
pub fn relevant(path: &Path, roots: &[PathBuf], include: &GlobSet, exclude: &GlobSet) -> bool {
    let name = path.file_name().map(Path::new).unwrap_or(path);
    let any = |set: &GlobSet| set.is_match(name) || set.is_match(path);
    if !any(include) || any(exclude) {
        return false;
    }
    let below = roots
        .iter()
        .find_map(|r| path.strip_prefix(r).ok())
        .unwrap_or(path);
    let skipped = |dir: &OsStr| exclude.is_match(dir) || SKIPPED_DIRS.iter().any(|s| dir == *s);
    !below
        .parent()
        .into_iter()
        .flat_map(Path::components)
        .any(|c| matches!(c, Component::Normal(dir) if skipped(dir)))
}

fn watch(
    rx: &mpsc::Receiver<notify::Result<notify::Event>>,
    roots: &[PathBuf],
    include: &GlobSet,
    exclude: &GlobSet,
    hup: &AtomicBool,
) {
    while let Ok(first) = rx.recv() {
        let mut changed: Vec<PathBuf> = Vec::new();
        let mut take = |ev: notify::Result<notify::Event>| {
            if let Ok(ev) = ev {
                if matches!(ev.kind, notify::EventKind::Access(_)) {
                    return;
                }
                for p in ev.paths {
                    if relevant(&p, roots, include, exclude) && !changed.contains(&p) {
                        changed.push(p);
                    }
                }
            }
        };
        take(first);
        while let Ok(ev) = rx.recv_timeout(SETTLE) {
            take(ev);
        }
        if !changed.is_empty() {
            let list = changed
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ");
            tracing::info!("--reload: {list} changed; restarting the workers");
            hup.store(true, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_sources_count_and_bytecode_swap_and_hidden_files_do_not() {
        let inc = globs(vec!["*.py".into()]).unwrap();
        let exc = globs(DEFAULT_EXCLUDE.iter().map(|s| s.to_string()).collect()).unwrap();
        let roots = [PathBuf::from("/app")];
        assert!(relevant(Path::new("/app/main.py"), &roots, &inc, &exc));
        for p in [
            "/app/main.pyc",
            "/app/.main.py.swp",
            "/app/.hidden.py",
            "/app/~main.py",
            "/app/README.md",
        ] {
            assert!(!relevant(Path::new(p), &roots, &inc, &exc), "{p}");
        }
    }

    #[test]
    fn files_in_hidden_cache_and_package_directories_do_not_count() {
        let inc = globs(vec!["*.py".into()]).unwrap();
        let exc = globs(
            DEFAULT_EXCLUDE
                .iter()
                .map(|s| s.to_string())
                .chain(["tests".to_string()])
                .collect(),
        )
        .unwrap();
        // The watched directory may itself be hidden, or below a hidden one.
        let roots = [PathBuf::from("/home/me/.work/app")];
        assert!(relevant(
            Path::new("/home/me/.work/app/pkg/routes.py"),
            &roots,
            &inc,
            &exc
        ));
        for p in [
            "/home/me/.work/app/.venv/lib/python3.11/site-packages/x/y.py",
            "/home/me/.work/app/venv/lib/python3.11/site-packages/x/y.py",
            "/home/me/.work/app/web/node_modules/a/b.py",
            "/home/me/.work/app/pkg/__pycache__/gen.py",
            "/home/me/.work/app/.git/hooks/h.py",
            "/home/me/.work/app/tests/test_app.py",
        ] {
            assert!(!relevant(Path::new(p), &roots, &inc, &exc), "{p}");
        }
    }
}
