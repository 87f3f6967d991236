//! The .deb packages on this machine, for real: `dpkg -i` installs the binaries, configs,
//! state directories, units and the bridge's user; an upgrade keeps a changed config; `dpkg -r`
//! keeps config and state; `dpkg -P` deletes them. These machines have no systemd as PID 1, so
//! the maintainer scripts must enable the units and start nothing, without failing. The units
//! pass `systemd-analyze verify` and keep their documented `systemd-analyze security` scores.
//!
//! One test, so nothing else touches dpkg's database meanwhile; it purges what it installed
//! even when it fails.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use outpost_tests::bin_path::workspace_root;
use outpost_tests::deb::{PACKAGES, build};

/// Runs `cmd`, returning (success, stdout + stderr).
fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn dpkg(args: &[&str]) -> String {
    let (ok, out) = run(Command::new("dpkg").args(args));
    assert!(ok, "dpkg {args:?} failed:\n{out}");
    out
}

/// `dpkg-query`'s status and version of `pkg` ("" if it never was installed).
fn status(pkg: &str) -> String {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f=${Status} ${Version}", pkg])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Purges both packages when dropped, so a failed run leaves the machine as it found it.
struct Purge;

impl Drop for Purge {
    fn drop(&mut self) {
        let _ = run(Command::new("dpkg").arg("-P").args(PACKAGES));
    }
}

fn install(debs: &[PathBuf]) -> String {
    let mut args = vec!["-i".to_string()];
    args.extend(debs.iter().map(|d| d.display().to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    dpkg(&args)
}

/// The exposure level `systemd-analyze security` gives the unit file at `path`.
fn exposure(path: &str) -> f64 {
    let (_, out) = run(Command::new("systemd-analyze").args([
        "security",
        "--offline=true",
        "--no-pager",
        path,
    ]));
    let line = out
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("no score: {out}"));
    let after = line.rsplit(':').next().unwrap().trim();
    after.split_whitespace().next().unwrap().parse().unwrap()
}

/// The exposure documented in docs/install.md for `unit`.
fn documented_exposure(unit: &str) -> f64 {
    let doc = std::fs::read_to_string(workspace_root().join("docs/install.md")).unwrap();
    let row = doc
        .lines()
        .find(|l| l.starts_with(&format!("| `{unit}.service` |")))
        .unwrap_or_else(|| panic!("{unit} has no row in docs/install.md"));
    row.split('|')
        .nth(2)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn the_debs_install_upgrade_keep_config_remove_and_purge_without_systemd() {
    let _purge = Purge;
    for p in PACKAGES {
        let _ = run(Command::new("dpkg").args(["-P", p]));
    }
    let dir = tempfile::tempdir().unwrap();
    let old = build("0.0.9-1", &dir.path().join("old"));
    let new = build(
        &format!("{}-1", env!("CARGO_PKG_VERSION")),
        &dir.path().join("new"),
    );

    // Install: no systemd here, and the maintainer scripts do not fail for it.
    let systemd_runs = Path::new("/run/systemd/system").exists();
    let out = install(&old);
    assert!(!out.contains("error"), "{out}");
    for p in PACKAGES {
        assert!(
            status(p).starts_with("install ok installed 0.0.9-1"),
            "{}",
            status(p)
        );
        let unit = format!("/usr/lib/systemd/system/{p}.service");
        assert!(Path::new(&unit).exists(), "{unit}");
        // Enabled even without systemd running (a later boot with systemd starts it).
        let wants = format!("/etc/systemd/system/multi-user.target.wants/{p}.service");
        assert!(Path::new(&wants).is_symlink(), "{wants} is not a symlink");
        assert!(Path::new(&format!("/usr/share/man/man8/{p}.8.gz")).exists());
        let (ok, version) = run(Command::new(format!("/usr/bin/{p}")).arg("--version"));
        assert!(ok && version.starts_with(p), "{version}");
        // The shipped config is valid as is.
        let config = format!("/etc/outpost/{}.toml", p.trim_start_matches("outpost-"));
        let (ok, out) =
            run(Command::new(format!("/usr/bin/{p}")).args(["--config", &config, "check-config"]));
        assert!(ok, "{p} check-config: {out}");
    }
    // The CLI comes with the bridge: binary, man page, completions.
    let (ok, version) = run(Command::new("/usr/bin/outpost").arg("--version"));
    assert!(ok && version.starts_with("outpost "), "{version}");
    for f in [
        "/usr/share/man/man1/outpost.1.gz",
        "/usr/share/bash-completion/completions/outpost",
        "/usr/share/zsh/vendor-completions/_outpost",
        "/usr/share/fish/vendor_completions.d/outpost.fish",
    ] {
        assert!(Path::new(f).exists(), "{f}");
    }
    if !systemd_runs {
        assert!(
            !out.contains("systemctl"),
            "nothing asked systemctl without systemd: {out}"
        );
    }
    let agent_state = std::fs::metadata("/var/lib/outpost").unwrap();
    assert!(agent_state.is_dir());
    assert_eq!(agent_state.permissions().mode() & 0o777, 0o700);
    let (ok, passwd) = run(Command::new("getent").args(["passwd", "outpost-bridge"]));
    assert!(ok, "the bridge's system user: {passwd}");
    let uid: u32 = passwd.split(':').nth(2).unwrap().parse().unwrap();
    assert!(uid < 1000, "a system uid: {passwd}");
    assert!(passwd.trim_end().ends_with("/usr/sbin/nologin"), "{passwd}");
    let bridge_state = std::fs::metadata("/var/lib/outpost-bridge").unwrap();
    assert_eq!(bridge_state.uid(), uid);
    let bridge_config = std::fs::metadata("/etc/outpost/bridge.toml").unwrap();
    assert_eq!(bridge_config.permissions().mode() & 0o777, 0o640);
    assert_eq!(bridge_config.uid(), 0);

    // The installed units: verify is clean; the hardening scores are the documented ones.
    for p in PACKAGES {
        let unit = format!("/usr/lib/systemd/system/{p}.service");
        let (ok, out) = run(Command::new("systemd-analyze").args(["verify", &unit]));
        let ours: Vec<&str> = out.lines().filter(|l| l.contains(p)).collect();
        assert!(
            ok && ours.is_empty(),
            "systemd-analyze verify {unit}:\n{out}"
        );
        let score = exposure(&unit);
        assert!(
            score <= documented_exposure(p),
            "{p}: exposure {score} is worse than docs/install.md says"
        );
    }

    // The operator changes the agent's config and the agent has state.
    let changed = "brokers = [\"mqtt://broker.example.net:1883\"]  # changed by the operator\n";
    std::fs::write("/etc/outpost/agent.toml", changed).unwrap();
    std::fs::write("/var/lib/outpost/agent-state", b"state").unwrap();
    std::fs::write("/var/lib/outpost-bridge/bridge.redb", b"state").unwrap();

    // Upgrade: the changed config and the state survive; the new version is installed.
    let out = install(&new);
    assert!(!out.contains("error"), "{out}");
    for p in PACKAGES {
        assert!(
            status(p).starts_with(&format!(
                "install ok installed {}-1",
                env!("CARGO_PKG_VERSION")
            )),
            "{}",
            status(p)
        );
    }
    assert_eq!(
        std::fs::read_to_string("/etc/outpost/agent.toml").unwrap(),
        changed
    );
    assert_eq!(
        std::fs::read("/var/lib/outpost/agent-state").unwrap(),
        b"state"
    );

    // Remove: binaries go, config and state stay.
    dpkg(&["-r", "outpost-agent", "outpost-bridge"]);
    for p in PACKAGES {
        assert!(
            status(p).starts_with("deinstall ok config-files"),
            "{}",
            status(p)
        );
        assert!(!Path::new(&format!("/usr/bin/{p}")).exists());
    }
    assert!(!Path::new("/usr/bin/outpost").exists());
    assert_eq!(
        std::fs::read_to_string("/etc/outpost/agent.toml").unwrap(),
        changed
    );
    assert!(Path::new("/etc/outpost/bridge.toml").exists());
    assert!(Path::new("/var/lib/outpost/agent-state").exists());
    assert!(Path::new("/var/lib/outpost-bridge/bridge.redb").exists());

    // Purge: config, state and the units' enablement go.
    dpkg(&["-P", "outpost-agent", "outpost-bridge"]);
    for path in [
        "/etc/outpost",
        "/var/lib/outpost",
        "/var/lib/outpost-bridge",
        "/etc/systemd/system/multi-user.target.wants/outpost-agent.service",
        "/etc/systemd/system/multi-user.target.wants/outpost-bridge.service",
    ] {
        assert!(!Path::new(path).exists(), "{path} survived the purge");
    }
    for p in PACKAGES {
        assert_eq!(status(p).trim(), "", "{p} is gone from dpkg's database");
    }
}
