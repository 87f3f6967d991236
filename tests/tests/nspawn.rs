//! Both .debs under a real systemd: a debootstrapped Debian booted with `systemd-nspawn`
//! (`../shared/docs/systemd-nspawn.md`; the root is made once per machine by
//! `scripts/lib.sh ensure_nspawn_root` and each boot is a throw-away copy of it). The machine
//! shares the host's network (the test's mosquitto and the tasks' ports are on loopback) and
//! its dockerd socket. Checked: both units come up, the agent is READY with a `STATUS=` that
//! follows its tasks, the hardened unit still reaches the docker socket, its state directory
//! and its config, a task deployed through the bridge runs, `systemctl restart` re-adopts the
//! container, a hung agent (SIGSTOP) is killed by the watchdog and comes back, the journal has
//! the structured fields, an upgrade keeps the container running, and purge removes config
//! and state.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use outpost_tests::deb;
use outpost_tests::docker::docker;
use outpost_tests::image::{self, INDEX_BODY};
use outpost_tests::mosquitto::Broker;
use outpost_tests::net::free_port;
use outpost_tests::process::Guarded;
use outpost_tests::{http, wait};

const SHORT: Duration = Duration::from_secs(30);
const LONG: Duration = Duration::from_secs(90);

/// The Debian root `ensure_nspawn_root` made.
fn root() -> PathBuf {
    let root = std::env::var_os("OUTPOST_NSPAWN_ROOT").map_or_else(
        || PathBuf::from("/var/lib/outpost-test/bookworm"),
        PathBuf::from,
    );
    assert!(
        root.join(".outpost-complete").exists(),
        "no Debian root at {}: scripts/test makes it (scripts/lib.sh ensure_nspawn_root)",
        root.display()
    );
    root
}

/// A booted machine: systemd as its PID 1, commands run in it through `nsenter`. Powered off
/// (SIGTERM to nspawn) on drop.
struct Machine {
    nspawn: Guarded,
    leader: u32,
    log: PathBuf,
}

impl Machine {
    /// Boots a throw-away copy of `root` with `share` bound read-only at `/test`.
    fn boot(root: &Path, name: &str, share: &Path) -> Self {
        let log = share.join("nspawn.log");
        let out = std::fs::File::create(&log).unwrap();
        let nspawn = Guarded::spawn(
            "systemd-nspawn",
            Command::new("setsid")
                .args(["systemd-nspawn", "-b", "-q", "-x", "-D"])
                .arg(root)
                .args([
                    "--register=no",
                    "--keep-unit",
                    "--console=passive",
                    "-M",
                    name,
                ])
                .arg(format!("--bind-ro={}:/test", share.display()))
                .arg("--bind=/var/run/docker.sock")
                .stdout(out.try_clone().unwrap())
                .stderr(out),
        )
        .unwrap();
        let ns = nspawn.pid().unwrap().to_string();
        let leader = wait::until("the machine's systemd", SHORT, || {
            let out = Command::new("pgrep")
                .args(["-P", &ns, "-x", "systemd"])
                .output()
                .ok()?;
            String::from_utf8_lossy(&out.stdout).trim().parse().ok()
        })
        .unwrap_or_else(|e| panic!("{e}: {}", std::fs::read_to_string(&log).unwrap()));
        let m = Self {
            nspawn,
            leader,
            log,
        };
        wait::until("systemd to finish booting", SHORT, || {
            let (_, state) = m.run(&["systemctl", "is-system-running"]);
            matches!(state.trim(), "running" | "degraded").then_some(())
        })
        .unwrap();
        m
    }

    /// Runs `args` in the machine: (success, stdout + stderr).
    fn run(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new("nsenter")
            .args(["-t", &self.leader.to_string(), "-a"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }

    /// Runs a shell script in the machine; it must succeed. Its output.
    fn sh(&self, script: &str) -> String {
        let (ok, out) = self.run(&["sh", "-c", script]);
        assert!(ok, "in the machine: {script}\n{out}");
        out
    }

    /// `systemctl show -p PROPERTY --value UNIT`.
    fn show(&self, unit: &str, property: &str) -> String {
        self.sh(&format!("systemctl show -p {property} --value {unit}"))
            .trim()
            .to_string()
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        if let Some(pid) = self.nspawn.pid() {
            let _ = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
            let _ = wait::until("the machine to power off", SHORT, || {
                (!self.nspawn.is_running()).then_some(())
            });
        }
        if std::thread::panicking() {
            eprintln!(
                "---- systemd-nspawn ----\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
    }
}

/// Removes the containers of `agent_id` from the host's dockerd, whatever happened.
struct Containers(String);

impl Containers {
    fn ids(&self) -> Vec<String> {
        let filter = format!("label=outpost.agent-id={}", self.0);
        docker(&["ps", "-aq", "--no-trunc", "--filter", &filter])
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }
}

impl Drop for Containers {
    fn drop(&mut self) {
        for id in self.ids() {
            let _ = docker(&["rm", "-f", &id]);
        }
    }
}

/// `curl` against the bridge in the machine: (status, body).
fn curl(method: &str, url: &str, body: Option<&str>) -> (u16, String) {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "-m", "10", "-X", method, "-w", "\n%{http_code}"]);
    if let Some(b) = body {
        cmd.args(["-H", "Content-Type: application/json", "-d", b]);
    }
    let out = cmd.arg(url).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

#[test]
fn both_debs_under_a_real_systemd_run_a_task_survive_restart_watchdog_and_upgrade_and_purge_clean()
{
    let root = root();
    let img = image::ensure().unwrap();
    let share = tempfile::tempdir().unwrap();
    let v1 = deb::build("0.1.0~nspawn1", &share.path().join("v1"));
    let v2 = deb::build("0.1.0~nspawn2", &share.path().join("v2"));
    let broker = Broker::start().unwrap();
    let (api, mesos) = (free_port().unwrap(), free_port().unwrap());
    let agent_id = format!("nspawn-{}", std::process::id());
    let containers = Containers(agent_id.clone());
    // The configs are in place before the packages, so the services start on them (dpkg keeps
    // a conffile that is already there with --force-confold).
    std::fs::write(
        share.path().join("agent.toml"),
        format!(
            "agent_id = \"{agent_id}\"\nbrokers = [\"{}\"]\nport_range = \"21740-21749\"\n",
            broker.url()
        ),
    )
    .unwrap();
    std::fs::write(
        share.path().join("bridge.toml"),
        format!(
            "listen = \"127.0.0.1:{api}\"\nmesos_listen = \"127.0.0.1:{mesos}\"\nbrokers = [\"{}\"]\n",
            broker.url()
        ),
    )
    .unwrap();
    let name = format!("outpost-ci-{}", std::process::id());
    let m = Machine::boot(&root, &name, share.path());
    let in_machine = |p: &Path| {
        Path::new("/test")
            .join(p.strip_prefix(share.path()).unwrap())
            .display()
            .to_string()
    };
    m.sh("mkdir -p /etc/outpost && cp /test/agent.toml /test/bridge.toml /etc/outpost/");
    m.sh(&format!(
        "dpkg --force-depends --force-confold -i {} {}",
        in_machine(&v1[0]),
        in_machine(&v1[1])
    ));

    // Both units up; the agent READY (active, not activating) with its status line.
    wait::until("both units active", SHORT, || {
        let (ok, _) = m.run(&["systemctl", "is-active", "outpost-agent", "outpost-bridge"]);
        ok.then_some(())
    })
    .unwrap_or_else(|e| {
        panic!(
            "{e}: {}",
            m.sh("systemctl status outpost-agent outpost-bridge --no-pager || true")
        )
    });
    assert_eq!(
        m.show("outpost-agent", "StatusText"),
        "supervising 0 task(s)"
    );
    let bridge = format!("http://127.0.0.1:{api}");
    wait::until("the agent at the bridge", SHORT, || {
        let (code, body) = curl(
            "GET",
            &format!("http://127.0.0.1:{mesos}/master/slaves"),
            None,
        );
        (code == 200 && body.contains(&agent_id)).then_some(())
    })
    .unwrap();

    // A task deployed through the bridge runs on the host's dockerd and serves.
    let app = format!(
        r#"{{"id": "/nspawn", "instances": 1, "cpus": 0.1, "mem": 32,
            "container": {{"type": "DOCKER", "docker": {{"image": "{img}", "network": "BRIDGE"}},
                           "portMappings": [{{"containerPort": 80, "hostPort": 0}}]}}}}"#
    );
    let (code, body) = curl("POST", &format!("{bridge}/v2/apps"), Some(&app));
    assert_eq!(code, 201, "{body}");
    let port = wait::until("the task running", LONG, || {
        let (_, body) = curl("GET", &format!("{bridge}/v2/apps/nspawn/tasks"), None);
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        let task = v["tasks"].as_array()?.first()?.clone();
        (task["state"] == "TASK_RUNNING").then(|| task["ports"][0].as_u64())?
    })
    .unwrap();
    let page = wait::until("the task's page", SHORT, || {
        http::get(&format!("http://127.0.0.1:{port}/")).ok()
    })
    .unwrap();
    assert_eq!(page.body, INDEX_BODY);
    wait::until("STATUS= to follow the task", SHORT, || {
        (m.show("outpost-agent", "StatusText") == "supervising 1 task(s)").then_some(())
    })
    .unwrap();
    // The hardened unit wrote its state and read its config (the agent id came from it).
    m.sh("test -s /var/lib/outpost/agent-state && test -s /var/lib/outpost/images");
    let ids = containers.ids();
    assert_eq!(ids.len(), 1, "{ids:?}");
    let container = ids[0].clone();
    let started = docker(&["inspect", "-f", "{{.State.StartedAt}}", &container]).unwrap();

    // `systemctl restart` re-adopts the container.
    m.sh("systemctl restart outpost-agent");
    wait::until("the agent READY again", SHORT, || {
        (m.show("outpost-agent", "ActiveState") == "active"
            && m.show("outpost-agent", "StatusText") == "supervising 1 task(s)")
            .then_some(())
    })
    .unwrap();
    assert_eq!(containers.ids(), std::slice::from_ref(&container));

    // A hung agent is killed by the watchdog (WatchdogSec=30s) and comes back.
    let restarts: u32 = m.show("outpost-agent", "NRestarts").parse().unwrap();
    m.sh("systemctl kill -s SIGSTOP outpost-agent");
    wait::until("the watchdog to restart the agent", LONG, || {
        let n: u32 = m.show("outpost-agent", "NRestarts").parse().ok()?;
        (n > restarts && m.show("outpost-agent", "ActiveState") == "active").then_some(())
    })
    .unwrap();
    let journal = m.sh("journalctl -u outpost-agent --no-pager");
    assert!(journal.contains("Watchdog timeout"), "{journal}");
    assert_eq!(containers.ids(), std::slice::from_ref(&container));

    // The journal has the agent's structured fields.
    let json = m.sh("journalctl -u outpost-agent -o json --no-pager");
    assert!(
        json.contains(&format!("\"F_AGENT_ID\":\"{agent_id}\""))
            && json.contains("\"SYSLOG_IDENTIFIER\":\"outpost-agent\""),
        "{json}"
    );

    // An upgrade keeps the container running (the same one, never restarted).
    m.sh(&format!(
        "dpkg --force-depends --force-confold -i {} {}",
        in_machine(&v2[0]),
        in_machine(&v2[1])
    ));
    assert_eq!(
        m.sh("dpkg-query -W -f='${Version}' outpost-agent"),
        "0.1.0~nspawn2"
    );
    wait::until("both units active after the upgrade", SHORT, || {
        let (ok, _) = m.run(&["systemctl", "is-active", "outpost-agent", "outpost-bridge"]);
        ok.then_some(())
    })
    .unwrap();
    assert_eq!(containers.ids(), std::slice::from_ref(&container));
    assert_eq!(
        docker(&["inspect", "-f", "{{.State.StartedAt}}", &container]).unwrap(),
        started
    );
    assert_eq!(
        http::get(&format!("http://127.0.0.1:{port}/"))
            .map(|r| r.status)
            .ok(),
        Some(200)
    );

    // Purge removes config and state.
    m.sh("dpkg -P outpost-agent outpost-bridge");
    m.sh("test ! -e /etc/outpost/agent.toml && test ! -e /etc/outpost/bridge.toml");
    m.sh("test ! -e /var/lib/outpost && test ! -e /var/lib/outpost-bridge");
    drop(m);
    drop(broker);
}
