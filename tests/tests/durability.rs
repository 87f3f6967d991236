//! The agent survives its own death, a cold boot without a network and a corrupt state file:
//! the real binary, real mosquitto and dockerd; the test plays the bridge over MQTT.

use std::time::Duration;

use outpost_protocol::*;
use outpost_tests::agent::Agent;
use outpost_tests::bridge_sim::BridgeSim;
use outpost_tests::disk::SmallDisk;
use outpost_tests::docker::docker;
use outpost_tests::image;
use outpost_tests::mosquitto::Broker;
use outpost_tests::{specs, wait};

const SHORT: Duration = Duration::from_secs(20);
const LONG: Duration = Duration::from_secs(60);

/// The test image's httpd on a NAT'ed port, with a 1 s HTTP check of `/health`.
fn web_task(id: &str) -> TaskSpec {
    let mut spec = specs::web_task(id, image::TEST_IMAGE);
    spec.cpus = 0.05;
    spec.kill_grace_period_s = 1;
    spec.health_checks.push(specs::http_check(3)).unwrap();
    spec
}

/// Containers of `task`: (id, running).
fn containers(task: &str) -> Vec<(String, bool)> {
    let filter = format!("label=outpost.task-id={task}");
    docker(&[
        "ps",
        "-a",
        "--filter",
        &filter,
        "--format",
        "{{.ID}} {{.State}}",
    ])
    .unwrap()
    .lines()
    .map(|l| {
        let (id, state) = l.split_once(' ').unwrap();
        (id.to_string(), state == "running")
    })
    .collect()
}

/// A broker, the simulated bridge, and an agent running one healthy task; returns the task's
/// container id.
fn running_task(name: &str, ports: (u16, u16), task: &str) -> (Broker, BridgeSim, Agent, String) {
    image::ensure().unwrap();
    let broker = Broker::start().unwrap();
    let mut bridge = BridgeSim::connect(&broker).unwrap();
    let id = Agent::unique_id(name);
    let agent = Agent::start(&id, &broker.url(), ports, "").unwrap();
    wait::until("the agent's first offer", SHORT, || bridge.offer(&id)).unwrap();
    let reply = bridge
        .call(&id, CommandKind::Launch(web_task(task)))
        .unwrap();
    assert_eq!(reply.outcome, Outcome::Accepted);
    bridge
        .status(task, LONG, |s| s.healthy == Some(true))
        .unwrap();
    let list = containers(task);
    assert_eq!(list.len(), 1);
    (broker, bridge, agent, list[0].0.clone())
}

#[test]
fn a_sigkilled_agent_re_adopts_its_running_container_and_resumes_checks() {
    let (_broker, bridge, mut agent, ctr) = running_task("adopt", (21400, 21409), "adopt.1");
    let statuses_before = bridge.with(|r| r.statuses.len());
    agent.kill();
    agent.restart().unwrap();
    wait::until("the re-adoption logged", SHORT, || {
        agent
            .log()
            .contains("re-adopted its running container")
            .then_some(())
    })
    .unwrap();
    // The same container, the only one; its checks run again (a fresh healthy verdict).
    assert_eq!(containers("adopt.1"), vec![(ctr.clone(), true)]);
    wait::until("a new healthy report", SHORT, || {
        bridge.with(|r| {
            r.statuses[statuses_before..]
                .iter()
                .any(|s| s.task_id == "adopt.1" && s.healthy == Some(true))
                .then_some(())
        })
    })
    .unwrap();
    assert_eq!(containers("adopt.1"), vec![(ctr, true)]);
}

#[test]
fn a_cold_boot_without_the_broker_restarts_dead_work_and_reports_it_later() {
    let (mut broker, bridge, mut agent, ctr) = running_task("cold", (21410, 21419), "cold.1");
    drop(bridge);
    broker.stop();
    agent.kill();
    // The power cut killed the container too.
    docker(&["kill", &ctr]).unwrap();
    let connections = |a: &Agent| a.log().matches("connected to the broker host").count();
    let connected_before = connections(&agent);
    agent.restart().unwrap();
    // With no broker, the agent brings the task back by itself.
    let new = wait::until("a new running container for the task", LONG, || {
        let list = containers("cold.1");
        (list.len() == 1 && list[0].1 && list[0].0 != ctr).then(|| list[0].0.clone())
    })
    .unwrap();
    assert_eq!(connections(&agent), connected_before, "no broker yet");
    // The network comes back: the outbox drains, in order.
    broker.restart().unwrap();
    let bridge = BridgeSim::connect(&broker).unwrap();
    // Updates not acknowledged before the cut come again first; then the death and the
    // restart, in order.
    let states = wait::until("the death and the restart reported", LONG, || {
        let states = bridge.states("cold.1");
        let failed = states.iter().position(|s| *s == TaskState::Failed)?;
        let after = &states[failed..];
        (after.contains(&TaskState::Starting)
            && after.ends_with(&[TaskState::Running, TaskState::Running]))
        .then_some(states)
    })
    .unwrap();
    let failed = states.iter().position(|s| *s == TaskState::Failed).unwrap();
    assert_eq!(
        &states[failed..],
        [
            TaskState::Failed,
            TaskState::Starting,
            TaskState::Running,
            TaskState::Running
        ],
        "{states:?}"
    );
    assert_eq!(containers("cold.1"), vec![(new, true)]);
}

#[test]
fn a_corrupt_state_file_falls_back_to_the_previous_generation() {
    let (_broker, _bridge, mut agent, ctr) = running_task("corrupt", (21420, 21429), "corrupt.1");
    agent.kill();
    // The SIGKILL may have cut a save after its temp file was written: that newer generation
    // is a save that did not finish (as if the kill came a moment earlier). The newest one
    // that remains is `agent-state`, which the save keeps present at every instant; corrupt
    // it.
    let _ = std::fs::remove_file(agent.state_dir().join("agent-state.tmp"));
    let path = agent.state_dir().join("agent-state");
    let bytes = std::fs::read(&path).unwrap();
    // A new file under the name, not the old one truncated: a kill inside a save can leave
    // `agent-state` and `agent-state.prev` two links of one file (between the link and the
    // rename), and a torn save only ever tears the file it writes, never both names.
    std::fs::remove_file(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    agent.restart().unwrap();
    wait::until("the fallback logged", SHORT, || {
        let log = agent.log();
        (log.contains("state file unusable")
            && log.contains("recovered from the last good state generation"))
        .then_some(())
    })
    .unwrap();
    wait::until("the container re-adopted", SHORT, || {
        agent
            .log()
            .contains("re-adopted its running container")
            .then_some(())
    })
    .unwrap();
    assert_eq!(containers("corrupt.1"), vec![(ctr, true)]);
    // Garbage in every generation: the agent still starts (with no tasks) and says so. (As
    // above, a save the kill cut after its temp file was written is a save that did not
    // finish: its temp file goes too, or it would be a good generation.)
    agent.kill();
    let _ = std::fs::remove_file(agent.state_dir().join("agent-state.tmp"));
    for f in ["agent-state", "agent-state.prev"] {
        std::fs::write(agent.state_dir().join(f), b"garbage").unwrap();
    }
    agent.restart().unwrap();
    wait::until("the empty start logged", SHORT, || {
        agent
            .log()
            .contains("no usable state generation")
            .then_some(())
    })
    .unwrap();
    assert!(agent.is_running());
}

/// Containers of every task of `agent`: (task id, running).
fn agent_containers(agent: &Agent) -> Vec<(String, bool)> {
    let filter = format!("label=outpost.agent-id={}", agent.id());
    docker(&[
        "ps",
        "-a",
        "--filter",
        &filter,
        "--format",
        "{{.Label \"outpost.task-id\"}} {{.State}}",
    ])
    .unwrap()
    .lines()
    .map(|l| {
        let (task, state) = l.split_once(' ').unwrap();
        (task.to_string(), state == "running")
    })
    .collect()
}

#[test]
fn a_sigkill_at_any_step_of_a_launch_leaves_one_container_and_no_leaked_port() {
    image::ensure().unwrap();
    let broker = Broker::start().unwrap();
    let mut bridge = BridgeSim::connect(&broker).unwrap();
    let id = Agent::unique_id("chaos");
    let mut agent = Agent::start(&id, &broker.url(), (21430, 21439), "").unwrap();
    wait::until("the agent's first offer", SHORT, || bridge.offer(&id)).unwrap();
    // Where the kill lands: right after the command is accepted, as soon as dockerd has a
    // container for the task, and as soon as it runs (before RUNNING is reported).
    let points = ["accepted", "container exists", "container runs"];
    for (i, point) in points.iter().enumerate() {
        let task = format!("chaos.{i}");
        let cid = bridge
            .send(&id, CommandKind::Launch(web_task(&task)))
            .unwrap();
        match *point {
            "accepted" => {
                bridge.reply(&cid, SHORT).unwrap();
            }
            "container exists" => {
                wait::until("a container", SHORT, || {
                    (!containers(&task).is_empty()).then_some(())
                })
                .unwrap();
            }
            _ => {
                wait::until("a running container", SHORT, || {
                    containers(&task).iter().any(|c| c.1).then_some(())
                })
                .unwrap();
            }
        }
        agent.kill();
        agent.restart().unwrap();
        bridge
            .status(&task, LONG, |s| {
                s.state == TaskState::Running && s.healthy == Some(true)
            })
            .unwrap_or_else(|e| panic!("killed at {point}: {e}"));
        wait::until(
            &format!("one container per task after a kill at {point}"),
            SHORT,
            || {
                let all = agent_containers(&agent);
                let ok = (0..=i).all(|j| {
                    all.iter()
                        .filter(|(t, _)| *t == format!("chaos.{j}"))
                        .count()
                        == 1
                }) && all.len() == i + 1
                    && all.iter().all(|(_, running)| *running);
                ok.then_some(())
            },
        )
        .unwrap_or_else(|e| panic!("{e}: {:?}", agent_containers(&agent)));
        // Every port the tasks hold is taken in the offer; none is lost from the range. A port
        // a container from before the kill still held (its Docker proxy listening until the
        // agent removed it) is left out of the offer until the agent sees it free again.
        let count = |ranges: &[PortRange]| -> usize {
            ranges.iter().map(|r| (r.end - r.begin + 1) as usize).sum()
        };
        wait::until("an offer with every port accounted for", SHORT, || {
            bridge.offer(&id).filter(|o| {
                count(&o.used.ports) == i + 1 && count(&o.available.ports) == 10 - (i + 1)
            })
        })
        .unwrap_or_else(|e| panic!("killed at {point}: {e}: {:?}", bridge.offer(&id)));
    }
}

#[test]
fn every_status_made_during_a_partition_arrives_in_order_after_it_heals() {
    image::ensure().unwrap();
    let broker = Broker::start().unwrap();
    let proxy = outpost_tests::proxy::TcpProxy::start(broker.port()).unwrap();
    let mut bridge = BridgeSim::connect(&broker).unwrap();
    let id = Agent::unique_id("split");
    let agent = Agent::start(&id, &proxy.mqtt_url(), (21440, 21449), "").unwrap();
    wait::until("the agent's first offer", SHORT, || bridge.offer(&id)).unwrap();
    let mut spec = web_task("split.1");
    spec.health_checks[0].max_consecutive_failures = 2;
    bridge.call(&id, CommandKind::Launch(spec)).unwrap();
    bridge
        .status("split.1", LONG, |s| s.healthy == Some(true))
        .unwrap();
    let before = bridge.states("split.1").len();
    let ctr = containers("split.1")[0].0.clone();

    proxy.cut();
    // Partitioned: the container turns sick and the agent restarts it on its own.
    image::fail_health(&ctr).unwrap();
    wait::until(
        "a fresh container, running, while partitioned",
        LONG,
        || {
            let list = containers("split.1");
            (list.len() == 1 && list[0].0 != ctr && list[0].1).then_some(())
        },
    )
    .unwrap();
    wait::until("the restarted container's checks pass", LONG, || {
        let log = agent.log();
        let tail = &log[log.rfind("TASK_KILLED").unwrap_or(0)..];
        tail.contains("healthy=Some(true)").then_some(())
    })
    .unwrap();
    assert_eq!(
        bridge.states("split.1").len(),
        before,
        "nothing got through the cut"
    );

    proxy.heal();
    bridge
        .status("split.1", LONG, |s| {
            s.state == TaskState::Running && s.healthy == Some(true) && s.host_ports.len() == 1
        })
        .unwrap();
    let all = wait::until("every status after the heal", LONG, || {
        let states = bridge.states("split.1");
        let after = &states[before..];
        (after.len() >= 6 && *after.last()? == TaskState::Running).then(|| after.to_vec())
    })
    .unwrap();
    // unhealthy → killing → killed → starting → running → healthy, in order, each once.
    let healths: Vec<(TaskState, Option<bool>)> = bridge.with(|r| {
        let mut seen = std::collections::HashSet::new();
        r.statuses
            .iter()
            .filter(|s| s.task_id == "split.1" && seen.insert(s.uuid))
            .skip(before)
            .map(|s| (s.state, s.healthy))
            .collect()
    });
    assert_eq!(
        healths,
        vec![
            (TaskState::Running, Some(false)),
            (TaskState::Killing, Some(false)),
            (TaskState::Killed, Some(false)),
            (TaskState::Starting, None),
            (TaskState::Running, None),
            (TaskState::Running, Some(true)),
        ],
        "{all:?}"
    );
}

#[test]
fn a_full_disk_refuses_new_launches_and_keeps_the_running_task() {
    image::ensure().unwrap();
    let disk = SmallDisk::mount("512k");
    let broker = Broker::start().unwrap();
    let mut bridge = BridgeSim::connect(&broker).unwrap();
    let id = Agent::unique_id("full");
    let agent = Agent::start_with_state_dir(
        &id,
        &broker.url(),
        (21450, 21459),
        "",
        Some(disk.dir.path()),
    )
    .unwrap();
    wait::until("the agent's first offer", SHORT, || bridge.offer(&id)).unwrap();
    bridge
        .call(&id, CommandKind::Launch(web_task("full.1")))
        .unwrap();
    bridge
        .status("full.1", LONG, |s| s.healthy == Some(true))
        .unwrap();

    disk.fill();
    // Any command changes the saved state (its id is remembered): that save fails...
    bridge
        .call(&id, CommandKind::Reconcile(Reconcile::default()))
        .unwrap();
    wait::until("the failed save logged", SHORT, || {
        agent
            .log()
            .contains("cannot save the agent's state")
            .then_some(())
    })
    .unwrap();
    // ...and from then on launches are refused, naming the cause.
    let reply = bridge
        .call(&id, CommandKind::Launch(web_task("full.2")))
        .unwrap();
    match &reply.outcome {
        Outcome::Rejected(r) => {
            assert_eq!(r.code, RejectCode::StorageFailure);
            assert!(r.message.contains("No space left"), "{}", r.message);
        }
        Outcome::Accepted => panic!("accepted on a full disk"),
    }
    assert_eq!(containers("full.1").len(), 1, "the running task is kept");
    assert!(containers("full.1")[0].1);

    disk.free();
    bridge
        .call(&id, CommandKind::Reconcile(Reconcile::default()))
        .unwrap();
    let reply = bridge
        .call(&id, CommandKind::Launch(web_task("full.3")))
        .unwrap();
    assert_eq!(
        reply.outcome,
        Outcome::Accepted,
        "space again: launches again"
    );
}
