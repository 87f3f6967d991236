//! The test image, built locally with no network: a busybox-static root imported with
//! `docker import`. Its command serves `/www` with busybox httpd on port 80; `/health` answers
//! 200 until a test removes `/www/health` from outside (see [`fail_health`]).

use std::os::unix::fs::symlink;
use std::process::{Command, Stdio};
use std::sync::Mutex;

use anyhow::{Context, Result, bail};

use crate::docker::{self, docker};
use crate::process;

/// The local tag of the test image.
pub const TEST_IMAGE: &str = "outpost-test/web:1";

/// Bumped whenever the image's content changes, so a stale image under the same tag is rebuilt.
const IMAGE_VERSION: &str = "2";

/// The page `/` serves.
pub const INDEX_BODY: &str = "outpost test page\n";

/// The busybox applets the image links.
const APPLETS: &[&str] = &[
    "sh", "httpd", "nc", "ls", "cat", "rm", "sleep", "echo", "touch", "mkdir", "wget", "true",
    "false", "kill",
];

/// Builds [`TEST_IMAGE`] unless dockerd already has it; returns its tag.
pub fn ensure() -> Result<&'static str> {
    // One build at a time within a process; across processes `docker import` of identical
    // content under one tag is harmless.
    static BUILD: Mutex<()> = Mutex::new(());
    let _guard = BUILD.lock().unwrap_or_else(|p| p.into_inner());
    docker::ensure_dockerd()?;
    let current = docker(&[
        "image",
        "inspect",
        "--format",
        "{{index .Config.Labels \"outpost.test-image\"}}",
        TEST_IMAGE,
    ]);
    if current.is_ok_and(|v| v == IMAGE_VERSION) {
        return Ok(TEST_IMAGE);
    }
    build(TEST_IMAGE)?;
    Ok(TEST_IMAGE)
}

/// Builds the image under `tag` (also used by `scripts/demo` for its stand-in `nginx:latest`).
pub fn build(tag: &str) -> Result<()> {
    let busybox = which_busybox()?;
    let root = tempfile::tempdir()?;
    let p = root.path();
    for d in ["bin", "www", "tmp"] {
        std::fs::create_dir_all(p.join(d))?;
    }
    std::fs::copy(&busybox, p.join("bin/busybox")).context("copying busybox")?;
    for applet in APPLETS {
        symlink("busybox", p.join("bin").join(applet))?;
    }
    std::fs::write(p.join("www/index.html"), INDEX_BODY)?;
    std::fs::write(p.join("www/health"), "ok\n")?;
    let mut tar = Command::new("tar")
        .arg("-C")
        .arg(p)
        .args(["-c", "-f", "-", "."])
        .stdout(Stdio::piped())
        .spawn()
        .context("running tar")?;
    let tar_out = tar.stdout.take().context("tar's stdout")?;
    process::run(
        Command::new("docker")
            .args([
                "import",
                "-c",
                r#"CMD ["/bin/httpd", "-f", "-p", "80", "-h", "/www"]"#,
                "-c",
                "EXPOSE 80",
                "-c",
                &format!("LABEL outpost.test-image={IMAGE_VERSION}"),
                "-",
                tag,
            ])
            .stdin(tar_out),
    )
    .with_context(|| format!("docker import of {tag}"))?;
    let status = tar.wait().context("waiting for tar")?;
    if !status.success() {
        bail!("tar of the image root failed: {status}");
    }
    Ok(())
}

/// The static busybox from Debian's `busybox-static`.
fn which_busybox() -> Result<std::path::PathBuf> {
    for cand in ["/bin/busybox", "/usr/bin/busybox"] {
        let path = std::path::Path::new(cand);
        if path.exists() {
            let kind = process::stdout(Command::new("file").arg("-L").arg(path))?;
            if kind.contains("statically linked") || kind.contains("static-pie") {
                return Ok(path.to_path_buf());
            }
        }
    }
    bail!("no static busybox found: install Debian's busybox-static")
}

/// Makes the container's `/health` answer 404 (its file is removed via `docker exec`).
pub fn fail_health(container: &str) -> Result<()> {
    docker(&["exec", container, "rm", "-f", "/www/health"]).map(drop)
}

/// Makes the container's `/health` answer 200 again.
pub fn heal(container: &str) -> Result<()> {
    docker(&["exec", container, "sh", "-c", "echo ok > /www/health"]).map(drop)
}
