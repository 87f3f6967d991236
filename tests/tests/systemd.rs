//! The agent under systemd's protocols, with the test playing systemd: the notify socket
//! (`READY=1` once, after the state is loaded and the containers re-adopted, even with the
//! broker down; `WATCHDOG=1` at half of `WATCHDOG_USEC`) and the journal's native socket.
//! The real binary, real mosquitto and dockerd.

use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use outpost_protocol::*;
use outpost_tests::agent::Agent;
use outpost_tests::bridge_sim::BridgeSim;
use outpost_tests::mosquitto::Broker;
use outpost_tests::process::Guarded;
use outpost_tests::{bin_path, image, specs, wait};

const SHORT: Duration = Duration::from_secs(20);
const LONG: Duration = Duration::from_secs(60);

/// Datagrams received on `socket` until `done` says the list is complete or `timeout` passes;
/// each with the time it arrived.
fn collect(
    socket: &UnixDatagram,
    timeout: Duration,
    done: impl Fn(&[(Instant, String)]) -> bool,
) -> Vec<(Instant, String)> {
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let deadline = Instant::now() + timeout;
    let mut got = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    while Instant::now() < deadline && !done(&got) {
        if let Ok(n) = socket.recv(&mut buf) {
            got.push((
                Instant::now(),
                String::from_utf8_lossy(&buf[..n]).into_owned(),
            ));
        }
    }
    got
}

fn has_line(message: &str, line: &str) -> bool {
    message.lines().any(|l| l == line)
}

#[test]
fn ready_comes_once_after_re_adoption_with_the_broker_down_and_the_watchdog_is_fed() {
    image::ensure().unwrap();
    let mut broker = Broker::start().unwrap();
    let mut bridge = BridgeSim::connect(&broker).unwrap();
    let id = Agent::unique_id("notify");
    let mut agent = Agent::start(&id, &broker.url(), (21520, 21529), "").unwrap();
    wait::until("the agent's first offer", SHORT, || bridge.offer(&id)).unwrap();
    let mut spec = specs::web_task("notify.1", image::TEST_IMAGE);
    spec.cpus = 0.05;
    spec.kill_grace_period_s = 1;
    let reply = bridge.call(&id, CommandKind::Launch(spec)).unwrap();
    assert_eq!(reply.outcome, Outcome::Accepted);
    bridge.state("notify.1", TaskState::Running, LONG).unwrap();
    let before = agent.containers().unwrap();
    assert_eq!(before.len(), 1, "{before:?}");
    drop(bridge);

    // The host reboots into a network without the broker; systemd starts the agent.
    agent.kill();
    broker.stop();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify");
    let socket = UnixDatagram::bind(&path).unwrap();
    agent
        .restart_with_env(&[
            ("NOTIFY_SOCKET", path.to_str().unwrap()),
            ("WATCHDOG_USEC", "1000000"),
        ])
        .unwrap();
    let after_ready = |got: &[(Instant, String)]| {
        got.iter()
            .skip_while(|(_, m)| !has_line(m, "READY=1"))
            .filter(|(_, m)| has_line(m, "WATCHDOG=1"))
            .count()
    };
    let got = collect(&socket, LONG, |got| after_ready(got) >= 6);
    let ready: Vec<&String> = got
        .iter()
        .map(|(_, m)| m)
        .filter(|m| has_line(m, "READY=1"))
        .collect();
    assert_eq!(ready.len(), 1, "READY=1 exactly once: {got:?}");
    assert!(
        has_line(ready[0], "STATUS=supervising 1 task(s)"),
        "{}",
        ready[0]
    );
    assert!(
        after_ready(&got) >= 6,
        "watchdog pings after READY: {got:?}"
    );

    // READY came after the container was re-adopted (not replaced), with no broker.
    let log = agent.log();
    let adopted = log.find("re-adopted its running container").expect(&log);
    let ready_at = log.rfind("ready tasks=1").expect(&log);
    assert!(adopted < ready_at, "{log}");
    assert!(
        !log[adopted..].contains("connected to the broker host"),
        "{log}"
    );
    assert_eq!(agent.containers().unwrap(), before, "the same container");

    // WATCHDOG=1 every half interval (500 ms), from the main loop.
    let pings: Vec<Instant> = got
        .iter()
        .skip_while(|(_, m)| !has_line(m, "READY=1"))
        .filter(|(_, m)| has_line(m, "WATCHDOG=1"))
        .map(|(t, _)| *t)
        .collect();
    for pair in pings.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(
            gap >= Duration::from_millis(300) && gap <= Duration::from_millis(900),
            "a watchdog gap of {gap:?} (expected ~500 ms): {pings:?}"
        );
    }

    // A fresh start (no state) is ready at once, still without a broker.
    let mut fresh = Agent::start(
        &Agent::unique_id("notify-fresh"),
        &broker.url(),
        (21530, 21539),
        "",
    )
    .unwrap();
    let path = dir.path().join("notify-fresh");
    let socket = UnixDatagram::bind(&path).unwrap();
    fresh
        .restart_with_env(&[("NOTIFY_SOCKET", path.to_str().unwrap())])
        .unwrap();
    let got = collect(&socket, SHORT, |got| {
        got.iter().any(|(_, m)| has_line(m, "READY=1"))
    });
    assert!(
        got.iter()
            .any(|(_, m)| has_line(m, "READY=1") && has_line(m, "STATUS=supervising 0 task(s)")),
        "{got:?}"
    );
    // Without WATCHDOG_USEC there are no pings.
    assert!(
        !got.iter().any(|(_, m)| has_line(m, "WATCHDOG=1")),
        "{got:?}"
    );
}

/// The fields of one datagram of journald's native protocol: `KEY=value\n`, or for values
/// that may hold newlines `KEY\n`, a little-endian u64 length, the bytes, `\n`.
fn journal_fields(mut b: &[u8]) -> std::collections::HashMap<String, String> {
    let mut fields = std::collections::HashMap::new();
    while let Some(nl) = b.iter().position(|&c| c == b'\n') {
        let line = &b[..nl];
        if let Some(eq) = line.iter().position(|&c| c == b'=') {
            let key = String::from_utf8_lossy(&line[..eq]).into_owned();
            fields.insert(key, String::from_utf8_lossy(&line[eq + 1..]).into_owned());
            b = &b[nl + 1..];
        } else {
            let key = String::from_utf8_lossy(line).into_owned();
            let len = u64::from_le_bytes(b[nl + 1..nl + 9].try_into().unwrap()) as usize;
            let value = &b[nl + 9..nl + 9 + len];
            fields.insert(key, String::from_utf8_lossy(value).into_owned());
            b = &b[nl + 9 + len + 1..];
        }
    }
    fields
}

/// The agent started in a private mount namespace whose `/run/systemd` is `run_systemd`, so
/// `/run/systemd/journal/socket` is a socket the test owns (or nothing), with stderr going to
/// `stderr_file` and `JOURNAL_STREAM` naming that file, as systemd names the stream it gives.
fn agent_in_namespace(run_systemd: &Path, config: &Path, stderr_file: &Path) -> Guarded {
    let bin = bin_path::path("outpost-agent").unwrap();
    let stderr = std::fs::File::create(stderr_file).unwrap();
    let meta = stderr.metadata().unwrap();
    let script = "mount --bind \"$1\" /run/systemd && exec \"$2\" --config \"$3\"";
    Guarded::spawn(
        "outpost-agent (journal)",
        Command::new("unshare")
            .args([
                "--mount",
                "--propagation",
                "private",
                "sh",
                "-c",
                script,
                "sh",
            ])
            .arg(run_systemd)
            .arg(bin)
            .arg(config)
            .env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()))
            .stdout(Stdio::null())
            .stderr(stderr),
    )
    .unwrap()
}

#[test]
fn with_journal_stream_set_the_agent_writes_journal_fields_or_falls_back_to_stderr() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "agent_id = \"{}\"\nbrokers = [\"mqtt://127.0.0.1:1\"]\nstate_dir = \"{}\"\n\
             port_range = \"21540-21549\"\n",
            Agent::unique_id("journal"),
            dir.path().display()
        ),
    )
    .unwrap();

    // A journal: the native protocol's datagrams carry the message, priority and identifier.
    let run_systemd = dir.path().join("run-systemd");
    std::fs::create_dir_all(run_systemd.join("journal")).unwrap();
    let journal = UnixDatagram::bind(run_systemd.join("journal/socket")).unwrap();
    let stderr_file = dir.path().join("stderr");
    let mut agent = agent_in_namespace(&run_systemd, &config, &stderr_file);
    let got = collect(&journal, SHORT, |got| {
        got.iter().any(|(_, m)| m.contains("connected to dockerd"))
    });
    let entry = got
        .iter()
        .map(|(_, m)| journal_fields(m.as_bytes()))
        .find(|f| f.get("MESSAGE").map(String::as_str) == Some("connected to dockerd"))
        .unwrap_or_else(|| panic!("no journal entry: {got:?}"));
    assert_eq!(entry["PRIORITY"], "6", "info: {entry:?}");
    assert_eq!(entry["SYSLOG_IDENTIFIER"], "outpost-agent", "{entry:?}");
    assert!(
        entry["F_AGENT_ID"].starts_with("journal-"),
        "structured fields: {entry:?}"
    );
    agent.stop();
    let stderr = std::fs::read_to_string(&stderr_file).unwrap();
    assert!(!stderr.contains("connected to dockerd"), "{stderr}");

    // No journal listening: the agent says so once and logs to stderr.
    let empty = dir.path().join("run-systemd-empty");
    std::fs::create_dir_all(&empty).unwrap();
    let mut agent = agent_in_namespace(&empty, &config, &stderr_file);
    wait::until("logs on stderr", SHORT, || {
        let s = std::fs::read_to_string(&stderr_file).unwrap();
        (s.contains("the journal socket does not answer") && s.contains("connected to dockerd"))
            .then_some(())
    })
    .unwrap();
    agent.stop();
}

#[test]
fn the_status_line_follows_the_number_of_supervised_tasks() {
    image::ensure().unwrap();
    let broker = Broker::start().unwrap();
    let mut bridge = BridgeSim::connect(&broker).unwrap();
    let id = Agent::unique_id("status");
    let mut agent = Agent::start(&id, &broker.url(), (21540, 21549), "").unwrap();
    wait::until("the agent's first offer", SHORT, || bridge.offer(&id)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify");
    let socket = UnixDatagram::bind(&path).unwrap();
    agent
        .restart_with_env(&[("NOTIFY_SOCKET", path.to_str().unwrap())])
        .unwrap();
    let status = |n: usize| format!("STATUS=supervising {n} task(s)");
    let seen = |got: &[(Instant, String)], line: &str| got.iter().any(|(_, m)| has_line(m, line));
    let got = collect(&socket, SHORT, |got| seen(got, &status(0)));
    assert!(seen(&got, &status(0)), "{got:?}");

    let mut spec = specs::web_task("status.1", image::TEST_IMAGE);
    spec.cpus = 0.05;
    spec.kill_grace_period_s = 1;
    let reply = bridge.call(&id, CommandKind::Launch(spec)).unwrap();
    assert_eq!(reply.outcome, Outcome::Accepted);
    let got = collect(&socket, LONG, |got| seen(got, &status(1)));
    assert!(seen(&got, &status(1)), "a task started: {got:?}");

    let reply = bridge
        .call(
            &id,
            CommandKind::Kill(KillTask {
                task_id: Text::new("status.1").unwrap(),
                grace_period_s: Some(1),
            }),
        )
        .unwrap();
    assert_eq!(reply.outcome, Outcome::Accepted);
    let got = collect(&socket, LONG, |got| seen(got, &status(0)));
    assert!(seen(&got, &status(0)), "the task is gone: {got:?}");
}
