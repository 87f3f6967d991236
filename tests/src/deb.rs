//! The .deb packages as `scripts/package` builds them, for the tests that install them.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::bin_path::workspace_root;
use crate::process;

/// The packages `scripts/package` builds.
pub const PACKAGES: [&str; 2] = ["outpost-agent", "outpost-bridge"];

/// Builds both packages with `scripts/package` as `version` into `dir`; returns their paths
/// (agent, bridge).
pub fn build(version: &str, dir: &Path) -> Vec<PathBuf> {
    let root = workspace_root();
    process::run(
        Command::new(root.join("scripts/package"))
            .current_dir(&root)
            .args(["--deb-version", version, "--output"])
            .arg(dir),
    )
    .unwrap();
    PACKAGES
        .iter()
        .map(|p| dir.join(format!("{p}_{version}_amd64.deb")))
        .inspect(|p| assert!(p.exists(), "{} was not built", p.display()))
        .collect()
}
