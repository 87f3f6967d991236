//! The workspace's binaries, built on demand, for end-to-end tests to start.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;

use anyhow::{Context, Result};

use crate::process;

/// Builds `package`'s binary of the same name (debug profile) unless this process already
/// did, and returns its path. Cargo's own freshness check makes a repeat build instant.
///
/// `OUTPOST_AGENT_BIN` (or `OUTPOST_BRIDGE_BIN`) names a prebuilt binary instead, e.g. the
/// static release build for benchmarks.
pub fn path(package: &str) -> Result<PathBuf> {
    binary(package, package)
}

/// As [`path`], for binary `bin` of `package` (`outpost` of `outpost-cli`); its variable is
/// named after the binary (`OUTPOST_BIN`).
pub fn binary(package: &str, bin: &str) -> Result<PathBuf> {
    let var = format!("{}_BIN", bin.to_uppercase().replace('-', "_"));
    if let Some(p) = std::env::var_os(&var) {
        return Ok(PathBuf::from(p));
    }
    static BUILT: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let mut built = BUILT.lock().unwrap_or_else(|p| p.into_inner());
    let root = workspace_root();
    if !built.iter().any(|b| b == bin) {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        process::run(
            Command::new(cargo)
                .current_dir(&root)
                .args(["build", "--quiet", "-p", package, "--bin", bin]),
        )
        .with_context(|| format!("building {package}"))?;
        built.push(bin.to_string());
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    Ok(target.join("debug").join(bin))
}

/// The workspace root (the parent of this crate's directory).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default()
}

/// Builds the static release binaries with `packaging/build-static` (once per process) and
/// returns the path of `package`'s.
pub fn static_path(package: &str) -> Result<PathBuf> {
    static BUILT: Mutex<bool> = Mutex::new(false);
    let mut built = BUILT.lock().unwrap_or_else(|p| p.into_inner());
    let root = workspace_root();
    if !*built {
        process::run(Command::new(root.join("packaging/build-static")).current_dir(&root))
            .context("packaging/build-static")?;
        *built = true;
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    Ok(target
        .join("x86_64-unknown-linux-gnu")
        .join("release")
        .join(package))
}

/// The Python of the test virtualenv with the real clients (marathon-python, kazoo), which
/// `scripts/test` makes (`ensure_client_venv` in scripts/lib.sh); `OUTPOST_CLIENT_PYTHON`
/// points elsewhere. Panics naming the path when it is missing: a test that needs it cannot run.
pub fn client_python() -> PathBuf {
    if let Some(p) = std::env::var_os("OUTPOST_CLIENT_PYTHON") {
        return p.into();
    }
    let p = workspace_root().join("target/client-venv/bin/python");
    assert!(
        p.exists(),
        "{} is missing: scripts/test makes it (ensure_client_venv in scripts/lib.sh)",
        p.display()
    );
    p
}
