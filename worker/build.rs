//! With the `bundle-frontend` feature (set by maturin, see `pyproject.toml`), build the
//! front-end binary `uringapi` (crate `uringapi-cli`, `server/cli/`) and place it at
//! `python/uringapi/_bin/uringapi`, where the wheel picks it up and the console script execs
//! it. The worker extension itself links only the protocol crate: the front end is a
//! separate program, not code inside `_native`.
//!
//! The nested `cargo build` uses its own target directory (`target/frontend`): the outer
//! cargo holds the lock on the main one for as long as this script runs.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=CARGO_FEATURE_BUNDLE_FRONTEND");
    if std::env::var_os("CARGO_FEATURE_BUNDLE_FRONTEND").is_none() {
        return;
    }
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let root = manifest
        .parent()
        .expect("the worker crate sits in the workspace");
    for dir in [
        "server/src",
        "server/Cargo.toml",
        "server/cli/src",
        "server/cli/Cargo.toml",
        "protocol/src",
        "protocol/Cargo.toml",
        "Cargo.lock",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(dir).display());
    }
    let profile = std::env::var("PROFILE").unwrap_or_else(|_| "release".into());
    let target_dir = root.join("target").join("frontend");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(root)
        .args([
            "build",
            "--locked",
            "-p",
            "uringapi-cli",
            "--bin",
            "uringapi",
        ])
        .arg("--target-dir")
        .arg(&target_dir);
    if profile == "release" {
        cmd.arg("--release");
    }
    // The outer build's flags are for a Python extension (and maturin's target); the front
    // end is an ordinary executable for this host.
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "CARGO_BUILD_TARGET",
        "CARGO_TARGET_DIR",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd.status().expect("run cargo for the front end");
    assert!(
        status.success(),
        "building the uringapi front end failed ({status})"
    );
    let built = target_dir.join(&profile).join("uringapi");
    let dest_dir = manifest.join("python").join("uringapi").join("_bin");
    std::fs::create_dir_all(&dest_dir).expect("create python/uringapi/_bin");
    copy_atomically(&built, &dest_dir.join("uringapi"));
}

/// Copies through a temporary name, so a running server's binary is never half-written.
fn copy_atomically(from: &Path, to: &Path) {
    let tmp = to.with_extension("tmp");
    std::fs::copy(from, &tmp).expect("copy the front-end binary");
    std::fs::rename(&tmp, to).expect("move the front-end binary into place");
}
