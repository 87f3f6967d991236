//! outpost-agent end to end: the real binary, real mosquitto, real dockerd and registry; the
//! test plays the bridge over MQTT.

use std::time::Duration;

use outpost_protocol::*;
use outpost_tests::agent::Agent;
use outpost_tests::bridge_sim::BridgeSim;
use outpost_tests::docker::{Scope, docker};
use outpost_tests::image::{self, INDEX_BODY};
use outpost_tests::mosquitto::Broker;
use outpost_tests::registry::Registry;
use outpost_tests::specs::{http_check, web_task};
use outpost_tests::{http, wait};

const SHORT: Duration = Duration::from_secs(20);
const LONG: Duration = Duration::from_secs(60);

fn t<const N: usize>(s: &str) -> Text<N> {
    Text::new(s).unwrap()
}

/// A broker, the simulated bridge, and an agent that has published its first offer.
struct Rig {
    bridge: BridgeSim,
    agent: Agent,
    id: String,
    // Dropped last: the agent and the bridge need it until then.
    _broker: Broker,
}

impl Rig {
    fn start(name: &str, ports: (u16, u16), extra_toml: &str) -> Self {
        let broker = Broker::start().unwrap();
        let bridge = BridgeSim::connect(&broker).unwrap();
        let id = Agent::unique_id(name);
        let agent = Agent::start(&id, &broker.url(), ports, extra_toml).unwrap();
        wait::until("the agent's first offer", SHORT, || bridge.offer(&id)).unwrap();
        Self {
            bridge,
            agent,
            id,
            _broker: broker,
        }
    }
}

fn page(port: u16, path: &str) -> Option<http::Reply> {
    http::get(&format!("http://127.0.0.1:{port}{path}")).ok()
}

fn rejected(reply: &CommandReply) -> (RejectCode, String) {
    match &reply.outcome {
        Outcome::Rejected(r) => (r.code, r.message.to_string()),
        Outcome::Accepted => panic!("accepted: {reply:?}"),
    }
}

#[test]
fn a_task_from_an_auth_registry_serves_its_page_through_a_nat_port() {
    let img = image::ensure().unwrap();
    let mut registry = Registry::start_with_auth("puller", "pa55word").unwrap();
    let remote = registry.push(img, "outpost/auth-web:1").unwrap();
    // Make the agent pull it: the pushed tag must not be present locally.
    docker(&["rmi", &remote]).unwrap();
    let broker = Broker::start().unwrap();
    let mut bridge = BridgeSim::connect(&broker).unwrap();
    let id = Agent::unique_id("auth");
    let creds = format!(
        "[[registries]]\nhost = \"{}\"\nusername = \"puller\"\npassword = \"pa55word\"",
        registry.host()
    );
    let _agent = Agent::start(&id, &broker.url(), (21000, 21009), &creds).unwrap();
    wait::until("the agent's first offer", SHORT, || bridge.offer(&id)).unwrap();

    let reply = bridge
        .call(&id, CommandKind::Launch(web_task("auth.1", &remote)))
        .unwrap();
    assert_eq!(reply.outcome, Outcome::Accepted);
    let running = bridge.state("auth.1", TaskState::Running, LONG).unwrap();
    assert_eq!(
        bridge.states("auth.1"),
        [TaskState::Staging, TaskState::Starting, TaskState::Running]
    );
    let port = running.host_ports[0];
    assert!((21000..=21009).contains(&port), "{port}");
    assert!(running.container_ip.is_some());
    let reply = wait::until("the page through the NAT'ed port", SHORT, || {
        page(port, "/").filter(|r| r.status == 200)
    })
    .unwrap();
    assert_eq!(reply.body, INDEX_BODY);
}

#[test]
fn a_pull_with_wrong_credentials_is_a_failed_status_naming_the_image() {
    let img = image::ensure().unwrap();
    let mut registry = Registry::start_with_auth("puller", "right").unwrap();
    let remote = registry.push(img, "outpost/locked:1").unwrap();
    docker(&["rmi", &remote]).unwrap();
    let broker = Broker::start().unwrap();
    let mut bridge = BridgeSim::connect(&broker).unwrap();
    let id = Agent::unique_id("badcreds");
    let creds = format!(
        "[[registries]]\nhost = \"{}\"\nusername = \"puller\"\npassword = \"wrong\"",
        registry.host()
    );
    let _agent = Agent::start(&id, &broker.url(), (21010, 21019), &creds).unwrap();
    wait::until("the agent's first offer", SHORT, || bridge.offer(&id)).unwrap();
    let reply = bridge
        .call(&id, CommandKind::Launch(web_task("locked.1", &remote)))
        .unwrap();
    assert_eq!(reply.outcome, Outcome::Accepted);
    let failed = bridge.state("locked.1", TaskState::Failed, LONG).unwrap();
    assert_eq!(failed.reason, Some(Reason::ImagePullFailed));
    let msg = failed.message.unwrap().to_string();
    assert!(msg.starts_with(&format!("pull {remote}")), "{msg}");
}

#[test]
fn two_tasks_asking_for_port_zero_get_different_ports_and_both_serve() {
    let img = image::ensure().unwrap();
    let mut rig = Rig::start("two", (21020, 21029), "");
    let Rig { bridge, id, .. } = &mut rig;
    for task in ["two.a", "two.b"] {
        let reply = bridge
            .call(id, CommandKind::Launch(web_task(task, img)))
            .unwrap();
        assert_eq!(reply.outcome, Outcome::Accepted);
    }
    let a = bridge
        .state("two.a", TaskState::Running, LONG)
        .unwrap()
        .host_ports[0];
    let b = bridge
        .state("two.b", TaskState::Running, LONG)
        .unwrap()
        .host_ports[0];
    assert_ne!(a, b);
    for port in [a, b] {
        wait::until("each task's page", SHORT, || {
            page(port, "/").filter(|r| r.status == 200)
        })
        .unwrap();
    }
}

#[test]
fn a_failing_health_check_makes_the_agent_kill_and_relaunch_the_task() {
    let img = image::ensure().unwrap();
    let mut rig = Rig::start("health", (21030, 21039), "");
    let Rig {
        bridge, agent, id, ..
    } = &mut rig;
    let mut spec = web_task("sick.1", img);
    spec.health_checks.push(http_check(2)).unwrap();
    bridge.call(id, CommandKind::Launch(spec)).unwrap();
    bridge
        .status("sick.1", LONG, |s| s.healthy == Some(true))
        .unwrap();
    let first = agent.containers().unwrap();
    assert_eq!(first.len(), 1);

    image::fail_health(&first[0]).unwrap();
    bridge
        .status("sick.1", LONG, |s| s.healthy == Some(false))
        .unwrap();
    let killed = bridge.state("sick.1", TaskState::Killed, LONG).unwrap();
    assert_eq!(killed.reason, Some(Reason::TaskUnhealthyCheck));
    // Relaunched with the same host port, healthy again (a fresh container has /health).
    bridge
        .status("sick.1", LONG, |s| {
            s.state == TaskState::Running
                && s.healthy == Some(true)
                && s.timestamp_ms > killed.timestamp_ms
        })
        .unwrap();
    assert_eq!(
        bridge.states("sick.1"),
        [
            TaskState::Staging,
            TaskState::Starting,
            TaskState::Running,
            TaskState::Running,
            TaskState::Running,
            TaskState::Killing,
            TaskState::Killed,
            TaskState::Starting,
            TaskState::Running,
            TaskState::Running,
        ]
    );
    let now = agent.containers().unwrap();
    assert_eq!(now.len(), 1, "one live container per task: {now:?}");
    assert_ne!(now, first);
}

#[test]
fn a_killed_task_frees_its_port_and_the_offer_grows_back() {
    let img = image::ensure().unwrap();
    let broker = Broker::start().unwrap();
    let mut bridge = BridgeSim::connect(&broker).unwrap();
    let id = Agent::unique_id("kill");
    let agent = Agent::start(&id, &broker.url(), (21040, 21049), "").unwrap();
    let empty = wait::until("the agent's first offer", SHORT, || bridge.offer(&id)).unwrap();
    let mut spec = web_task("kill.1", img);
    spec.port_mappings[0].host_port = 21045;
    bridge.call(&id, CommandKind::Launch(spec)).unwrap();
    bridge.state("kill.1", TaskState::Running, LONG).unwrap();
    let busy = wait::until("an offer without port 21045", SHORT, || {
        bridge.offer(&id).filter(|o| {
            o.used
                .ports
                .iter()
                .any(|r| r.begin <= 21045 && 21045 <= r.end)
        })
    })
    .unwrap();
    assert!(busy.available.cpus < empty.available.cpus);
    wait::until("port 21045 to serve", SHORT, || {
        page(21045, "/").filter(|r| r.status == 200)
    })
    .unwrap();

    let reply = bridge
        .call(
            &id,
            CommandKind::Kill(KillTask {
                task_id: t("kill.1"),
                grace_period_s: Some(1),
            }),
        )
        .unwrap();
    assert_eq!(reply.outcome, Outcome::Accepted);
    bridge.state("kill.1", TaskState::Killed, LONG).unwrap();
    assert_eq!(
        bridge.states("kill.1")[3..],
        [TaskState::Killing, TaskState::Killed]
    );
    let after = wait::until("the offer to grow back", SHORT, || {
        bridge
            .offer(&id)
            .filter(|o| o.used.ports.is_empty() && o.seq > busy.seq)
    })
    .unwrap();
    assert_eq!(after.available.cpus, empty.available.cpus);
    assert_eq!(after.available.ports, empty.available.ports);
    wait::until("the container to be removed", SHORT, || {
        agent.containers().ok().filter(Vec::is_empty)
    })
    .unwrap();
    wait::until("port 21045 to close", SHORT, || {
        page(21045, "/").is_none().then_some(())
    })
    .unwrap();
}

#[test]
fn bad_commands_are_rejected_with_their_reason_and_the_agent_keeps_running() {
    let img = image::ensure().unwrap();
    let mut rig = Rig::start("bad", (21050, 21059), "");
    let Rig {
        bridge, agent, id, ..
    } = &mut rig;

    // Undecodable CBOR.
    bridge.send_raw(id, b"\xff\xfe not cbor".to_vec()).unwrap();
    let r = wait::until("a reply to garbage", SHORT, || {
        bridge.with(|r| r.replies.iter().find(|x| x.command_id.is_empty()).cloned())
    })
    .unwrap();
    assert_eq!(rejected(&r).0, RejectCode::Undecodable);

    // Bad image reference syntax.
    let (code, msg) = rejected(
        &bridge
            .call(id, CommandKind::Launch(web_task("bad.1", "UPPER/Case:x y")))
            .unwrap(),
    );
    assert_eq!(code, RejectCode::InvalidField);
    assert!(msg.starts_with("image: \"UPPER/Case:x y\""), "{msg}");

    // More memory than the host has.
    let mut huge = web_task("bad.2", img);
    huge.mem_mib = 1e9;
    let (code, msg) = rejected(&bridge.call(id, CommandKind::Launch(huge)).unwrap());
    assert_eq!(code, RejectCode::InsufficientResources);
    assert!(msg.starts_with("mem: 1000000000 requested"), "{msg}");

    // A port that is taken.
    let mut a = web_task("bad.3", img);
    a.port_mappings[0].host_port = 21055;
    assert_eq!(
        bridge.call(id, CommandKind::Launch(a)).unwrap().outcome,
        Outcome::Accepted
    );
    let mut b = web_task("bad.4", img);
    b.port_mappings[0].host_port = 21055;
    let (code, msg) = rejected(&bridge.call(id, CommandKind::Launch(b)).unwrap());
    assert_eq!(code, RejectCode::PortUnavailable);
    assert_eq!(
        msg,
        "port_mappings[0].host_port: 21055 is in use by task \"bad.3\""
    );

    // An over-long field, built by hand past the encoder's limits.
    let mut bytes = Vec::new();
    let mut e = minicbor::Encoder::new(&mut bytes);
    e.map(4).unwrap();
    e.u8(0).unwrap().u8(1).unwrap();
    e.u8(1).unwrap().str("too-long-1").unwrap();
    e.u8(2).unwrap().u8(0).unwrap();
    e.u8(3).unwrap().array(2).unwrap().u8(1).unwrap();
    e.map(1)
        .unwrap()
        .u8(0)
        .unwrap()
        .str(&"x".repeat(300))
        .unwrap();
    bridge.send_raw(id, bytes).unwrap();
    let (code, msg) = rejected(&bridge.reply("too-long-1", SHORT).unwrap());
    assert_eq!(code, RejectCode::FieldTooLong);
    assert!(msg.contains("kind.kill.task_id"), "{msg}");

    // Kill of a task that does not exist.
    let (code, _) = rejected(
        &bridge
            .call(
                id,
                CommandKind::Kill(KillTask {
                    task_id: t("nope"),
                    grace_period_s: None,
                }),
            )
            .unwrap(),
    );
    assert_eq!(code, RejectCode::UnknownTask);

    // Still alive, and what it accepted still runs.
    assert!(agent.is_running());
    bridge.state("bad.3", TaskState::Running, LONG).unwrap();
}

#[test]
fn a_command_delivered_twice_runs_once() {
    let img = image::ensure().unwrap();
    let broker = Broker::start().unwrap();
    let bridge = BridgeSim::connect(&broker).unwrap();
    let id = Agent::unique_id("twice");
    let agent = Agent::start(&id, &broker.url(), (21060, 21069), "").unwrap();
    wait::until("the agent's first offer", SHORT, || bridge.offer(&id)).unwrap();
    let cmd = Command {
        version: PROTOCOL_VERSION,
        command_id: t("same-id"),
        issued_at_ms: 0,
        kind: CommandKind::Launch(web_task("twice.1", img)),
        agent_id: None,
        signature: None,
        epoch: None,
    };
    let bytes = codec::encode_to_vec(&cmd);
    bridge.send_raw(&id, bytes.clone()).unwrap();
    bridge.send_raw(&id, bytes).unwrap();
    bridge.state("twice.1", TaskState::Running, LONG).unwrap();
    wait::until("two replies", SHORT, || {
        bridge.with(|r| {
            (r.replies
                .iter()
                .filter(|x| x.command_id == "same-id")
                .count()
                == 2)
                .then_some(())
        })
    })
    .unwrap();
    assert_eq!(agent.containers().unwrap().len(), 1);
    assert_eq!(
        bridge.states("twice.1"),
        [TaskState::Staging, TaskState::Starting, TaskState::Running]
    );
}

#[test]
fn a_crashing_container_is_restarted_with_backoff_and_reports_its_exit_code() {
    let img = image::ensure().unwrap();
    let mut rig = Rig::start("crash", (21070, 21079), "");
    let Rig { bridge, id, .. } = &mut rig;
    let mut spec = web_task("crash.1", img);
    spec.port_mappings.clear();
    spec.cmd = Some(t("sleep 1; exit 3"));
    spec.restart.backoff_s = 0.5;
    bridge.call(id, CommandKind::Launch(spec)).unwrap();
    let failed = bridge.state("crash.1", TaskState::Failed, LONG).unwrap();
    assert_eq!(failed.exit_code, Some(3));
    assert_eq!(failed.reason, Some(Reason::CommandExecutorFailed));
    wait::until("a second failure after a restart", LONG, || {
        let n = bridge
            .states("crash.1")
            .iter()
            .filter(|s| **s == TaskState::Failed)
            .count();
        (n >= 2).then_some(())
    })
    .unwrap();
}

#[test]
fn the_agent_rides_out_a_broker_restart_and_reconnects() {
    let img = image::ensure().unwrap();
    let mut broker = Broker::start().unwrap();
    let bridge = BridgeSim::connect(&broker).unwrap();
    let id = Agent::unique_id("brk");
    let _agent = Agent::start(&id, &broker.url(), (21080, 21089), "").unwrap();
    wait::until("the agent's first offer", SHORT, || bridge.offer(&id)).unwrap();
    broker.stop();
    broker.restart().unwrap();
    drop(bridge);
    let mut bridge = BridgeSim::connect(&broker).unwrap();
    // The restarted broker kept nothing (no persistence): an offer means the agent is back.
    wait::until("the agent's offer on the new broker", SHORT, || {
        bridge.offer(&id)
    })
    .unwrap();
    let reply = bridge
        .call(&id, CommandKind::Launch(web_task("brk.1", img)))
        .unwrap();
    assert_eq!(reply.outcome, Outcome::Accepted);
    bridge.state("brk.1", TaskState::Running, LONG).unwrap();
}

#[test]
fn a_task_gets_its_volume_env_cmd_and_resource_limits() {
    let img = image::ensure().unwrap();
    let mut rig = Rig::start("shape", (21090, 21099), "");
    let Rig {
        bridge, agent, id, ..
    } = &mut rig;
    let data = tempfile::tempdir().unwrap();
    std::fs::write(data.path().join("in.txt"), "from the volume\n").unwrap();
    let mut spec = web_task("shape.1", img);
    spec.cpus = 0.25;
    spec.mem_mib = 48.0;
    spec.env
        .push(KeyValue {
            name: t("GREETING"),
            value: t("hello from env"),
        })
        .unwrap();
    spec.volumes
        .push(Volume {
            host_path: t(&data.path().display().to_string()),
            container_path: t("/data"),
            mode: VolumeMode::Ro,
        })
        .unwrap();
    spec.cmd = Some(t(
        "cat /data/in.txt > /www/index.html; echo \"$GREETING port $PORT0\" >> /www/index.html; \
         touch /data/written 2>/dev/null && echo rw >> /www/index.html; exec httpd -f -p 80 -h /www",
    ));
    bridge.call(id, CommandKind::Launch(spec)).unwrap();
    let running = bridge.state("shape.1", TaskState::Running, LONG).unwrap();
    let port = running.host_ports[0];
    let body = wait::until("the page", SHORT, || {
        page(port, "/").filter(|r| r.status == 200)
    })
    .unwrap()
    .body;
    assert_eq!(
        body,
        format!("from the volume\nhello from env port {port}\n"),
        "a RO volume was written"
    );
    let ctr = &agent.containers().unwrap()[0];
    let limits = docker(&[
        "inspect",
        "--format",
        "{{.HostConfig.Memory}} {{.HostConfig.CpuShares}} {{.HostConfig.NanoCpus}} [{{.HostConfig.RestartPolicy.Name}}]",
        ctr,
    ])
    .unwrap();
    // Memory is a hard limit; CPU is shares (1024 per CPU) without a CFS quota; Docker's
    // restart policy stays off ("" or "no"): the agent supervises.
    assert!(
        [
            format!("{} 256 0 []", 48 * 1024 * 1024),
            format!("{} 256 0 [no]", 48 * 1024 * 1024)
        ]
        .contains(&limits),
        "{limits}"
    );
    let labels = docker(&["inspect", "--format", "{{index .Config.Labels \"outpost.task-id\"}} {{index .Config.Labels \"outpost.agent-id\"}}", ctr]).unwrap();
    assert_eq!(labels, format!("shape.1 {id}"));
}

#[test]
fn tcp_and_command_health_checks_run_in_the_container_and_fail_from_outside() {
    let img = image::ensure().unwrap();
    let mut rig = Rig::start("checks", (21100, 21109), "");
    let Rig {
        bridge, agent, id, ..
    } = &mut rig;
    let mut spec = web_task("checks.1", img);
    spec.health_checks
        .push(HealthCheck {
            protocol: HealthProtocol::Tcp,
            interval_s: 1,
            timeout_s: 1,
            ..Default::default()
        })
        .unwrap();
    spec.health_checks
        .push(HealthCheck {
            protocol: HealthProtocol::Command,
            command: Some(t("test -f /www/health")),
            interval_s: 1,
            timeout_s: 2,
            max_consecutive_failures: 0,
            ..Default::default()
        })
        .unwrap();
    bridge.call(id, CommandKind::Launch(spec)).unwrap();
    bridge
        .status("checks.1", LONG, |s| s.healthy == Some(true))
        .unwrap();
    image::fail_health(&agent.containers().unwrap()[0]).unwrap();
    let sick = bridge
        .status("checks.1", LONG, |s| s.healthy == Some(false))
        .unwrap();
    assert_eq!(
        sick.state,
        TaskState::Running,
        "max_consecutive_failures 0 never kills"
    );
    image::heal(&agent.containers().unwrap()[0]).unwrap();
    bridge
        .status("checks.1", LONG, |s| {
            s.healthy == Some(true) && s.timestamp_ms > sick.timestamp_ms
        })
        .unwrap();
}

#[test]
fn a_hung_health_endpoint_does_not_delay_another_tasks_checks() {
    let img = image::ensure().unwrap();
    let mut rig = Rig::start("hung", (21110, 21119), "");
    let Rig {
        bridge, agent, id, ..
    } = &mut rig;
    // `nc -l` fed by a sleeping pipe accepts the probe and never answers: it hangs to its timeout.
    let mut hung = web_task("hung.1", img);
    hung.cmd = Some(t("sleep 3600 | nc -l -p 80"));
    let mut check = http_check(0);
    // Early refusals (before nc listens) fall in the grace period; then a probe hangs 30 s.
    check.grace_period_s = 120;
    check.timeout_s = 30;
    hung.health_checks.push(check).unwrap();
    bridge.call(id, CommandKind::Launch(hung)).unwrap();
    bridge.state("hung.1", TaskState::Running, LONG).unwrap();
    let ctr = agent.containers().unwrap()[0].clone();
    wait::until("a probe to hang in nc", SHORT, || {
        docker(&["logs", &ctr])
            .ok()
            .filter(|l| l.contains("GET /health"))
    })
    .unwrap();
    let mut fine = web_task("fine.1", img);
    fine.health_checks.push(http_check(3)).unwrap();
    let sent = std::time::Instant::now();
    bridge.call(id, CommandKind::Launch(fine)).unwrap();
    bridge
        .status("fine.1", SHORT, |s| s.healthy == Some(true))
        .unwrap();
    assert!(
        sent.elapsed() < Duration::from_secs(15),
        "took {:?}",
        sent.elapsed()
    );
    assert!(bridge.with(|r| {
        r.statuses
            .iter()
            .all(|s| s.task_id != "hung.1" || s.healthy.is_none())
    }));
}

#[test]
fn drain_kills_every_task_and_refuses_launches_and_reconcile_reports_tasks() {
    let img = image::ensure().unwrap();
    let mut rig = Rig::start("drain", (21120, 21129), "");
    let Rig {
        bridge, agent, id, ..
    } = &mut rig;
    bridge
        .call(id, CommandKind::Launch(web_task("drain.1", img)))
        .unwrap();
    bridge.state("drain.1", TaskState::Running, LONG).unwrap();
    let before = bridge.with(|r| r.statuses.len());
    bridge
        .call(id, CommandKind::Reconcile(Reconcile::default()))
        .unwrap();
    let answer = bridge
        .status("drain.1", SHORT, |s| {
            s.reason == Some(Reason::Reconciliation)
        })
        .unwrap();
    assert_eq!(answer.state, TaskState::Running);
    assert!(bridge.with(|r| r.statuses.len()) > before);

    let reply = bridge
        .call(
            id,
            CommandKind::Drain(Drain {
                policy: DrainPolicy::KillAll,
            }),
        )
        .unwrap();
    assert_eq!(reply.outcome, Outcome::Accepted);
    bridge.state("drain.1", TaskState::Killed, LONG).unwrap();
    wait::until("the draining state", SHORT, || {
        bridge.with(|r| {
            r.states
                .iter()
                .any(|s| s.liveness == Liveness::Draining)
                .then_some(())
        })
    })
    .unwrap();
    let (code, _) = rejected(
        &bridge
            .call(id, CommandKind::Launch(web_task("drain.2", img)))
            .unwrap(),
    );
    assert_eq!(code, RejectCode::Draining);
    wait::until("no containers left", SHORT, || {
        agent.containers().ok().filter(Vec::is_empty)
    })
    .unwrap();
}

#[test]
fn the_agent_rides_out_a_dockerd_restart_and_brings_its_task_back() {
    let img = image::ensure().unwrap();
    let mut dockerd = outpost_tests::docker::PrivateDockerd::start().unwrap();
    dockerd.load(img).unwrap();
    let broker = Broker::start().unwrap();
    let mut bridge = BridgeSim::connect(&broker).unwrap();
    let id = Agent::unique_id("dockerd");
    let docker_setting = format!("docker = \"{}\"", dockerd.url());
    let _agent = Agent::start(&id, &broker.url(), (21130, 21139), &docker_setting).unwrap();
    wait::until("the agent's first offer", SHORT, || bridge.offer(&id)).unwrap();
    // The private dockerd lives in its own network namespace: its ports are not on this
    // loopback, so the task is checked by a command.
    let mut spec = web_task("dockerd.1", img);
    spec.network = NetworkMode::Host;
    spec.port_mappings.clear();
    spec.cmd = Some(t("sleep 3600"));
    spec.restart.backoff_s = 0.2;
    spec.health_checks
        .push(HealthCheck {
            protocol: HealthProtocol::Command,
            command: Some(t("true")),
            interval_s: 1,
            timeout_s: 5,
            max_consecutive_failures: 3,
            ..Default::default()
        })
        .unwrap();
    bridge.call(&id, CommandKind::Launch(spec)).unwrap();
    let first = bridge
        .status("dockerd.1", LONG, |s| s.healthy == Some(true))
        .unwrap();

    dockerd.restart().unwrap();
    // Its container died with dockerd; the agent notices, restarts it, and checks it again.
    bridge.state("dockerd.1", TaskState::Failed, LONG).unwrap();
    bridge
        .status("dockerd.1", LONG, |s| {
            s.state == TaskState::Running
                && s.healthy == Some(true)
                && s.timestamp_ms > first.timestamp_ms
        })
        .unwrap();
    let running = dockerd
        .cli(&[
            "ps",
            "-q",
            "--filter",
            &format!("label=outpost.agent-id={id}"),
        ])
        .unwrap();
    assert_eq!(running.lines().count(), 1, "{running}");
}

#[test]
fn args_replace_the_image_command_and_network_none_has_no_network() {
    let img = image::ensure().unwrap();
    let mut rig = Rig::start("none", (21140, 21149), "");
    let Rig {
        bridge, agent, id, ..
    } = &mut rig;
    let mut spec = web_task("none.1", img);
    spec.network = NetworkMode::None;
    spec.port_mappings.clear();
    for a in ["sleep", "3600"] {
        spec.args.push(t(a)).unwrap();
    }
    bridge.call(id, CommandKind::Launch(spec)).unwrap();
    let running = bridge.state("none.1", TaskState::Running, LONG).unwrap();
    assert!(running.host_ports.is_empty());
    let ctr = &agent.containers().unwrap()[0];
    let shape = docker(&[
        "inspect",
        "--format",
        "{{.HostConfig.NetworkMode}} {{json .Config.Cmd}}",
        ctr,
    ])
    .unwrap();
    assert_eq!(shape, r#"none ["sleep","3600"]"#);
}

#[test]
fn the_agent_reaches_dockerd_over_tcp_too() {
    let img = image::ensure().unwrap();
    let proxy = outpost_tests::docker::TcpDockerProxy::start().unwrap();
    let setting = format!("docker = \"{}\"", proxy.url());
    let mut rig = Rig::start("tcpdocker", (21150, 21159), &setting);
    let Rig { bridge, id, .. } = &mut rig;
    bridge
        .call(id, CommandKind::Launch(web_task("tcpdocker.1", img)))
        .unwrap();
    let running = bridge
        .state("tcpdocker.1", TaskState::Running, LONG)
        .unwrap();
    let port = running.host_ports[0];
    wait::until("the page", SHORT, || {
        page(port, "/").filter(|r| r.status == 200)
    })
    .unwrap();
}

#[test]
fn an_https_check_talks_tls_without_verifying_the_certificate_and_fails_on_500() {
    // The busybox test image has no TLS server, so the task runs with host networking and this
    // test serves HTTPS (a self-signed certificate, as tasks often have) on the port the check
    // names: the agent probes 127.0.0.1:port over TLS either way.
    let img = image::ensure().unwrap();
    let server = outpost_tests::https::HttpsServer::start(21599).unwrap();
    let mut rig = Rig::start("https", (21590, 21598), "");
    let Rig { bridge, id, .. } = &mut rig;
    let mut spec = web_task("https.1", img);
    spec.network = NetworkMode::Host;
    spec.port_mappings.clear();
    spec.cmd = Some(t("sleep 3600"));
    spec.health_checks
        .push(HealthCheck {
            protocol: HealthProtocol::Https,
            path: Some(t("/health")),
            port: Some(server.port()),
            interval_s: 1,
            timeout_s: 2,
            max_consecutive_failures: 0,
            ..Default::default()
        })
        .unwrap();
    let reply = bridge.call(id, CommandKind::Launch(spec)).unwrap();
    assert_eq!(reply.outcome, Outcome::Accepted, "{reply:?}");
    bridge
        .status("https.1", LONG, |s| s.healthy == Some(true))
        .unwrap();
    assert!(server.served() > 0, "the check came over TLS");
    server.set_status(500);
    bridge
        .status("https.1", LONG, |s| s.healthy == Some(false))
        .unwrap();
}

#[test]
fn the_policy_refuses_privileged_and_root_mounts_unless_the_config_allows_them() {
    let img = image::ensure().unwrap();
    let mut rig = Rig::start("policy", (21630, 21639), "");
    let Rig { bridge, id, .. } = &mut rig;
    let mut spec = web_task("policy.1", img);
    spec.privileged = true;
    let reply = bridge.call(id, CommandKind::Launch(spec)).unwrap();
    let Outcome::Rejected(r) = reply.outcome else {
        panic!("a privileged task was accepted by default");
    };
    assert!(r.message.contains("allow_privileged"), "{}", r.message);
    let mut spec = web_task("policy.2", img);
    spec.volumes
        .push(Volume {
            host_path: t("/"),
            container_path: t("/host"),
            mode: VolumeMode::Ro,
        })
        .unwrap();
    let reply = bridge.call(id, CommandKind::Launch(spec)).unwrap();
    let Outcome::Rejected(r) = reply.outcome else {
        panic!("a / mount was accepted by default");
    };
    assert!(r.message.contains("volume_paths"), "{}", r.message);
    drop(rig);

    // Allowed by the config: dockerd is asked for a privileged container. (This machine's
    // dockerd runs nested and cannot start one, "unable to apply caps"; a host's can. What
    // the agent controls is the container it creates, so that is what is checked.)
    let mut rig = Rig::start(
        "policy-on",
        (21640, 21649),
        "[policy]\nallow_privileged = true\n",
    );
    let Rig { bridge, id, .. } = &mut rig;
    let mut spec = web_task("policy.3", img);
    spec.privileged = true;
    let reply = bridge.call(id, CommandKind::Launch(spec)).unwrap();
    assert_eq!(reply.outcome, Outcome::Accepted);
    wait::until("a privileged container of the task", LONG, || {
        let ids = docker(&["ps", "-aq", "--filter", "label=outpost.task-id=policy.3"]).ok()?;
        ids.lines().find_map(|c| {
            let p = docker(&["inspect", "-f", "{{.HostConfig.Privileged}}", c]).ok()?;
            (p.trim() == "true").then_some(())
        })
    })
    .unwrap();
}

#[test]
fn a_chatty_task_s_log_is_rotated_within_the_configured_limit() {
    let img = image::ensure().unwrap();
    let mut rig = Rig::start(
        "chatty",
        (21100, 21109),
        "[logs]\nmax_size_mib = 1\nmax_files = 2\napp_max_size_mib = 5\napp_max_files = 4\n",
    );
    let Rig {
        bridge, agent, id, ..
    } = &mut rig;
    let mut spec = web_task("chatty.1", img);
    // About 8 MB of output (16 MB of dockerd's JSON lines), then it serves quietly.
    spec.cmd = Some(t(
        "busybox yes 0123456789012345678901234567890123456789012345678901234567890123456789 \
         | busybox head -c 8000000; exec httpd -f -p 80 -h /www",
    ));
    bridge.call(id, CommandKind::Launch(spec)).unwrap();
    let running = bridge.state("chatty.1", TaskState::Running, LONG).unwrap();
    let ctr = agent.containers().unwrap()[0].clone();
    let config = docker(&[
        "inspect",
        "--format",
        "{{.HostConfig.LogConfig.Type}} {{index .HostConfig.LogConfig.Config \"max-size\"}} {{index .HostConfig.LogConfig.Config \"max-file\"}}",
        &ctr,
    ])
    .unwrap();
    assert_eq!(config, "json-file 1m 2");
    let log_path = docker(&["inspect", "--format", "{{.LogPath}}", &ctr]).unwrap();
    let log_path = std::path::PathBuf::from(log_path);
    let dir = log_path.parent().unwrap().to_path_buf();
    let name = log_path.file_name().unwrap().to_string_lossy().to_string();
    let files = || -> Vec<(String, u64)> {
        std::fs::read_dir(&dir)
            .map(|d| {
                d.filter_map(Result::ok)
                    .filter(|e| e.file_name().to_string_lossy().starts_with(&name))
                    .map(|e| {
                        let len = e.metadata().map(|m| m.len()).unwrap_or(0);
                        (e.file_name().to_string_lossy().to_string(), len)
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    // The output is done once the page is served.
    wait::until("the page after the output", LONG, || {
        page(running.host_ports[0], "/").filter(|r| r.status == 200)
    })
    .unwrap();
    let logs = files();
    assert!(
        logs.iter().any(|(f, _)| f.ends_with(".1")),
        "the log was rotated: {logs:?}"
    );
    let total: u64 = logs.iter().map(|(_, len)| len).sum();
    // Two files of at most 1 MiB (a file may pass the limit by the last line written).
    assert!(
        total <= 2 * 1024 * 1024 + 64 * 1024,
        "{total} bytes of logs kept: {logs:?}"
    );
    // An app's own limits (Docker's log-opt, through the bridge) within the host's maximum...
    let mut own = web_task("chatty.2", img);
    (own.log_max_size_mib, own.log_max_files) = (Some(5), Some(4));
    bridge.call(id, CommandKind::Launch(own)).unwrap();
    bridge.state("chatty.2", TaskState::Running, LONG).unwrap();
    let ctr = agent
        .containers()
        .unwrap()
        .into_iter()
        .find(|c| {
            docker(&[
                "inspect",
                "--format",
                "{{index .Config.Labels \"outpost.task-id\"}}",
                c,
            ])
            .is_ok_and(|t| t == "chatty.2")
        })
        .unwrap();
    let config = docker(&[
        "inspect",
        "--format",
        "{{index .HostConfig.LogConfig.Config \"max-size\"}} {{index .HostConfig.LogConfig.Config \"max-file\"}}",
        &ctr,
    ])
    .unwrap();
    assert_eq!(config, "5m 4");
    // ... and not above it.
    let mut greedy = web_task("chatty.3", img);
    greedy.log_max_size_mib = Some(6);
    let reply = bridge.call(id, CommandKind::Launch(greedy)).unwrap();
    let (code, message) = rejected(&reply);
    assert_eq!(code, RejectCode::InvalidField);
    assert!(
        message.contains("log_max_size_mib: 6 is above this agent's maximum of 5"),
        "{message}"
    );
}

#[test]
fn a_port_another_process_listens_on_is_not_offered_or_given() {
    let img = image::ensure().unwrap();
    // Something else on the host holds the first port of the agent's range, and a container
    // of an earlier life of this agent (the same id, a fresh state) the second.
    let _other = std::net::TcpListener::bind("127.0.0.1:21110").unwrap();
    let broker = Broker::start().unwrap();
    let mut bridge = BridgeSim::connect(&broker).unwrap();
    let id = Agent::unique_id("taken");
    let scope = Scope::new().unwrap();
    let old = scope
        .run_detached(&[
            "-p",
            "21111:80",
            "--label",
            &format!("outpost.agent-id={id}"),
            "--label",
            "outpost.task-id=taken.0",
            img,
        ])
        .unwrap();
    let agent = Agent::start(&id, &broker.url(), (21110, 21119), "").unwrap();
    let (bridge, id) = (&mut bridge, &id);
    let offer = wait::until("an offer", SHORT, || bridge.offer(id)).unwrap();
    // The agent removes the container no task of its owns; until then its port is not free.
    wait::until("the old container removed", SHORT, || {
        // The harness lists short ids.
        agent
            .containers()
            .ok()
            .filter(|c| !c.iter().any(|s| old.starts_with(s.as_str())))
    })
    .unwrap();
    let has = |o: &Offer, p: u16| {
        o.available
            .ports
            .iter()
            .any(|r| (r.begin..=r.end).contains(&p))
    };
    assert!(
        !has(&offer, 21110) && !has(&offer, 21111),
        "{:?}",
        offer.available.ports
    );
    // Gone: its port is offered again; the listener's never is.
    let offer = wait::until("21111 offered again", SHORT, || {
        bridge.offer(id).filter(|o| has(o, 21111))
    })
    .unwrap();
    assert!(!has(&offer, 21110), "{:?}", offer.available.ports);
    // A launch that lets the agent pick lands on a free port and serves there.
    bridge
        .call(id, CommandKind::Launch(web_task("taken.1", img)))
        .unwrap();
    let running = bridge.state("taken.1", TaskState::Running, LONG).unwrap();
    let port = running.host_ports[0];
    assert_ne!(port, 21110);
    wait::until("the page", SHORT, || {
        page(port, "/").filter(|r| r.status == 200)
    })
    .unwrap();
    // A launch that asks for the taken port is refused with the reason.
    let mut fixed = web_task("taken.2", img);
    fixed.port_mappings[0].host_port = 21110;
    let reply = bridge.call(id, CommandKind::Launch(fixed)).unwrap();
    let (code, message) = rejected(&reply);
    assert_eq!(code, RejectCode::PortUnavailable);
    assert!(
        message.contains("21110 is taken by another process"),
        "{message}"
    );
}

/// Removes the image tags a test made, whatever happened.
struct Tags(Vec<String>);

impl Drop for Tags {
    fn drop(&mut self) {
        for tag in &self.0 {
            let _ = docker(&["rmi", tag]);
        }
    }
}

#[test]
fn image_gc_removes_an_unused_image_past_the_threshold_keeps_a_used_one_and_the_offer_tells() {
    let img = image::ensure().unwrap();
    // The images' filesystem is a 16 MiB tmpfs: collection past 50 % used, down to 40 %.
    let disk = outpost_tests::disk::SmallDisk::mount("16m");
    let config = format!(
        "[images]\npath = {:?}\ngc_high_percent = 50\ngc_low_percent = 40\ngc_interval_seconds = 1\n\
         [logs]\nmax_size_mib = 1\nmax_files = 1\n",
        disk.dir.path()
    );
    let mut rig = Rig::start("gc", (21730, 21739), &config);
    let Rig {
        bridge, agent, id, ..
    } = &mut rig;
    // Two names of the test image, so removing one takes nothing from another test.
    let unused = format!("outpost-gc/unused:{id}");
    let used = format!("outpost-gc/used:{id}");
    let _tags = Tags(vec![unused.clone(), used.clone()]);
    for tag in [&unused, &used] {
        docker(&["tag", img, tag]).unwrap();
    }
    let present = |tag: &str| docker(&["image", "inspect", "--format", "{{.Id}}", tag]).is_ok();

    // One task ran the first image and was killed; another runs on the second.
    bridge
        .call(id, CommandKind::Launch(web_task("gc.1", &unused)))
        .unwrap();
    bridge.state("gc.1", TaskState::Running, LONG).unwrap();
    bridge
        .call(
            id,
            CommandKind::Kill(KillTask {
                task_id: t("gc.1"),
                grace_period_s: Some(1),
            }),
        )
        .unwrap();
    bridge.state("gc.1", TaskState::Killed, LONG).unwrap();
    wait::until("gc.1's container to be removed", SHORT, || {
        agent.containers().ok().filter(Vec::is_empty)
    })
    .unwrap();
    bridge
        .call(id, CommandKind::Launch(web_task("gc.2", &used)))
        .unwrap();
    bridge.state("gc.2", TaskState::Running, LONG).unwrap();
    let record = agent.state_dir().join("images");
    wait::until("both images in the agent's record", SHORT, || {
        let text = std::fs::read_to_string(&record).ok()?;
        (text.contains(&unused) && text.contains(&used)).then_some(())
    })
    .unwrap();
    // Below the threshold nothing is removed, and the offer's disk is what may be filled
    // before it: 8 MiB of the 16 (less the 1 MiB log of the running task).
    let offer = wait::until("an offer with gc.2's log budget", SHORT, || {
        bridge
            .offer(id)
            .filter(|o| o.used.ports.len() == 1 && o.available.disk_mib < 7.5)
    })
    .unwrap();
    assert!(
        (6.0..=7.0).contains(&offer.available.disk_mib),
        "{:?}",
        offer.available
    );
    assert!(present(&unused), "removed below the threshold");

    // Past it: the unused image goes, the used one stays, and the log says so.
    disk.fill_bytes(10 << 20);
    wait::until("the unused image to be removed", LONG, || {
        (!present(&unused)).then_some(())
    })
    .unwrap();
    assert!(present(&used), "the running task's image was removed");
    let log = agent.log();
    assert!(
        log.contains("image garbage collection removed an unused image")
            && log.contains(&unused)
            && log.contains("removed_since_start=1"),
        "{log}"
    );
    assert!(
        !std::fs::read_to_string(&record).unwrap().contains(&unused),
        "the record forgets what was removed"
    );
    // Nothing left to fill before the threshold: the offer says 0.
    wait::until("an offer of no disk", SHORT, || {
        bridge.offer(id).filter(|o| o.available.disk_mib == 0.0)
    })
    .unwrap();
    // The kept image still serves its task.
    let running = bridge.state("gc.2", TaskState::Running, SHORT).unwrap();
    assert_eq!(
        page(running.host_ports[0], "/").map(|r| r.status),
        Some(200)
    );
}

#[test]
fn the_optional_metrics_listener_serves_the_agent_s_figures_in_prometheus_text() {
    image::ensure().unwrap();
    let port = outpost_tests::net::free_port().unwrap();
    let mut rig = Rig::start(
        "metrics",
        (21830, 21839),
        &format!("metrics_listen = \"127.0.0.1:{port}\"\n"),
    );
    let spec = web_task("metrics-task", image::TEST_IMAGE);
    let reply = rig.bridge.call(&rig.id, CommandKind::Launch(spec)).unwrap();
    assert_eq!(reply.outcome, Outcome::Accepted, "{reply:?}");
    rig.bridge
        .state("metrics-task", TaskState::Running, LONG)
        .unwrap();
    let text = wait::until("the agent's figures with its container", LONG, || {
        let r = page(port, "/metrics")?;
        (r.status == 200 && r.body.contains("outpost_agent_containers 1\n")).then_some(r.body)
    })
    .unwrap();
    assert!(
        text.contains("# TYPE outpost_agent_rss_bytes gauge\n"),
        "{text}"
    );
    assert!(
        text.contains("outpost_agent_dockerd_reachable 1\n"),
        "{text}"
    );
    let rss: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("outpost_agent_rss_bytes "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(rss > 1 << 20, "{rss}");
    assert_eq!(page(port, "/other").unwrap().status, 404);
}
