//! The static release binaries: they run with nothing around them (an image holding only the
//! binary), `ldd` calls them static, and the static agent still resolves broker names through
//! /etc/hosts (static glibc: files and DNS, no NSS modules).

use std::process::{Command, Stdio};
use std::time::Duration;

use outpost_tests::agent::Agent;
use outpost_tests::bin_path::static_path;
use outpost_tests::bridge_sim::BridgeSim;
use outpost_tests::docker::docker;
use outpost_tests::mosquitto::Broker;
use outpost_tests::{process, wait};

/// An image holding only `bin` at `/bin-under-test`, made with `docker import`; removed on drop.
struct EmptyImage(String);

impl EmptyImage {
    fn with(bin: &std::path::Path, tag: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(bin, dir.path().join("bin-under-test")).unwrap();
        let mut tar = Command::new("tar")
            .arg("-C")
            .arg(dir.path())
            .args(["-c", "."])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = tar.stdout.take().unwrap();
        process::run(
            Command::new("docker")
                .args(["import", "-", tag])
                .stdin(stdout),
        )
        .unwrap();
        assert!(tar.wait().unwrap().success(), "tar failed");
        Self(tag.to_string())
    }
}

impl Drop for EmptyImage {
    fn drop(&mut self) {
        let _ = docker(&["rmi", "-f", &self.0]);
    }
}

#[test]
fn the_static_binaries_run_in_an_empty_image_and_ldd_calls_them_static() {
    for package in ["outpost-agent", "outpost-bridge"] {
        let bin = static_path(package).unwrap();
        let ldd = Command::new("ldd").arg(&bin).output().unwrap();
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&ldd.stdout),
            String::from_utf8_lossy(&ldd.stderr)
        );
        assert!(
            said.contains("statically linked") || said.contains("not a dynamic executable"),
            "ldd {package}: {said}"
        );
        let tag = format!("outpost-empty-{package}:{}", std::process::id());
        let image = EmptyImage::with(&bin, &tag);
        let out = docker(&[
            "run",
            "--rm",
            "--network",
            "none",
            &image.0,
            "/bin-under-test",
            "--version",
        ])
        .unwrap();
        assert!(
            out.starts_with(&format!("{package} {}", env!("CARGO_PKG_VERSION"))),
            "{out}"
        );
    }
}

#[test]
fn the_static_agent_resolves_its_broker_by_name() {
    let bin = static_path("outpost-agent").unwrap();
    let broker = Broker::start().unwrap();
    let bridge = BridgeSim::connect(&broker).unwrap();
    let id = Agent::unique_id("static");
    let url = format!("mqtt://localhost:{}", broker.port());
    let _agent = Agent::start_binary(&bin, &id, &url, (21470, 21479), "", None).unwrap();
    wait::until(
        "an offer from the static agent via localhost",
        Duration::from_secs(30),
        || bridge.offer(&id),
    )
    .unwrap();
}
