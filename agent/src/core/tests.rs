//! The supervisor under virtual time: every behaviour driven by events, checked by actions.

use outpost_protocol::codec::encode_to_vec;
use outpost_protocol::*;
use proptest::prelude::*;

use super::*;

const T0: Millis = 1_764_000_000_000;

fn settings() -> Settings {
    Settings {
        agent_id: AgentId::new("edge-1").unwrap(),
        hostname: Hostname::new("edge-1.test").unwrap(),
        advertise_ip: None,
        attributes: heapless::Vec::new(),
        port_range: PortRange {
            begin: 31000,
            end: 31009,
        },
        capacity: Capacity {
            cpus: 2.0,
            mem_mib: 1024.0,
            disk_mib: 10_000.0,
        },
        incarnation: 7,
        started_at_ms: T0,
        offer_interval_ms: 30_000,
        outbox_capacity: 1000,
        trusted_keys: Vec::new(),
        replay_window_ms: 3_600_000,
        policy: Default::default(),
        log_size_mib: 10,
        log_files: 3,
    }
}

/// A supervisor, a clock, and everything it published.
struct Sim {
    sup: Supervisor,
    /// The monotonic clock.
    now: Millis,
    /// How far the wall clock is from `now` (a step of the host's clock moves it).
    wall_step: i64,
    statuses: Vec<TaskStatus>,
    replies: Vec<CommandReply>,
    offers: Vec<Offer>,
    actions: Vec<Action>,
    next_cmd: u32,
}

impl Sim {
    fn new() -> Self {
        let mut sim = Self {
            sup: Supervisor::new(settings()),
            now: T0,
            wall_step: 0,
            statuses: Vec::new(),
            replies: Vec::new(),
            offers: Vec::new(),
            actions: Vec::new(),
            next_cmd: 0,
        };
        sim.ev(Event::BrokerConnected { local_ip: None });
        sim
    }

    fn ev(&mut self, e: Event) -> Vec<Action> {
        let before = self.sup.durable_fingerprint();
        let out = self.sup.handle(self.clock(), e);
        assert!(
            self.sup.deadline_index_is_exact(),
            "the deadline index missed a task's change"
        );
        // The main loop skips the fingerprint when the core says nothing durable changed.
        if !self.sup.durable_may_have_changed() {
            assert_eq!(
                before,
                self.sup.durable_fingerprint(),
                "the durable state changed on an event the core called harmless"
            );
        }
        let mut rest = Vec::new();
        for a in out {
            match &a {
                Action::Publish { kind, payload } => match kind {
                    TopicKind::Status => self.statuses.push(decode(payload).unwrap()),
                    TopicKind::Reply => self.replies.push(decode(payload).unwrap()),
                    TopicKind::Offer => self.offers.push(decode(payload).unwrap()),
                    _ => {}
                },
                _ => rest.push(a.clone()),
            }
        }
        self.actions.extend(rest.clone());
        rest
    }

    /// Both clocks now.
    fn clock(&self) -> Clock {
        Clock {
            mono: self.now,
            wall: self.now.saturating_add_signed(self.wall_step),
        }
    }

    fn advance(&mut self, ms: Millis) -> Vec<Action> {
        self.now += ms;
        self.ev(Event::Tick)
    }

    fn command(&mut self, kind: CommandKind) -> CommandReply {
        self.next_cmd += 1;
        let cmd = Command {
            version: PROTOCOL_VERSION,
            command_id: CommandId::new(&format!("c-{}", self.next_cmd)).unwrap(),
            issued_at_ms: self.now,
            kind,
            agent_id: None,
            signature: None,
            epoch: None,
        };
        self.ev(Event::CommandReceived(encode_to_vec(&cmd)));
        self.replies.last().cloned().unwrap()
    }

    /// Launches `spec` and answers the driver's actions until RUNNING; returns the container id.
    fn launch_running(&mut self, spec: TaskSpec) -> String {
        let id = spec.task_id.clone();
        let reply = self.command(CommandKind::Launch(spec));
        assert_eq!(reply.outcome, Outcome::Accepted, "{reply:?}");
        self.bring_up(&id)
    }

    /// Answers the image, create and start actions of the task's current attempt.
    fn bring_up(&mut self, id: &TaskId) -> String {
        let attempt = self.sup.tasks()[id].attempt;
        self.ev(Event::ImageReady {
            task_id: id.clone(),
            attempt,
        });
        let container_id = format!("ctr-{id}-{attempt}");
        self.ev(Event::ContainerCreated {
            task_id: id.clone(),
            attempt,
            container_id: container_id.clone(),
        });
        self.ev(Event::ContainerStarted {
            task_id: id.clone(),
            attempt,
            container_ip: Some("172.17.0.9".into()),
        });
        container_id
    }

    /// The states reported for task `id`, re-sends dropped by uuid (as the bridge does).
    fn states(&self, id: &str) -> Vec<TaskState> {
        let mut seen = std::collections::HashSet::new();
        self.statuses
            .iter()
            .filter(|s| s.task_id == id && seen.insert(s.uuid))
            .map(|s| s.state)
            .collect()
    }

    fn ack_all(&mut self) {
        let uuids: Vec<_> = self
            .statuses
            .iter()
            .map(|s| (s.task_id.clone(), s.uuid))
            .collect();
        for (task_id, uuid) in uuids {
            let ack = StatusAck {
                version: PROTOCOL_VERSION,
                task_id,
                uuid,
            };
            self.ev(Event::AckReceived(encode_to_vec(&ack)));
        }
    }
}

fn spec(id: &str) -> TaskSpec {
    TaskSpec {
        task_id: TaskId::new(id).unwrap(),
        image: ImageRef::new("127.0.0.1:5000/web:1").unwrap(),
        cpus: 0.1,
        mem_mib: 64.0,
        network: NetworkMode::Bridge,
        port_mappings: heapless::Vec::from_slice(&[PortMapping {
            container_port: 80,
            host_port: 0,
            protocol: PortProtocol::Tcp,
            name: None,
        }])
        .unwrap(),
        kill_grace_period_s: 3,
        restart: RestartPolicy::default(),
        ..Default::default()
    }
}

fn with_http_check(mut s: TaskSpec, grace: u32, max_failures: u32) -> TaskSpec {
    s.health_checks
        .push(HealthCheck {
            protocol: HealthProtocol::Http,
            path: Some(UrlPath::new("/health").unwrap()),
            port_index: 0,
            grace_period_s: grace,
            interval_s: 1,
            timeout_s: 1,
            max_consecutive_failures: max_failures,
            delay_s: 0,
            ..Default::default()
        })
        .unwrap();
    s
}

fn rejection(reply: &CommandReply) -> (RejectCode, String) {
    match &reply.outcome {
        Outcome::Rejected(r) => (r.code, r.message.to_string()),
        Outcome::Accepted => panic!("accepted: {reply:?}"),
    }
}

#[test]
fn a_launch_goes_staging_starting_running_with_its_host_port_and_ip() {
    let mut sim = Sim::new();
    let reply = sim.command(CommandKind::Launch(spec("web.1")));
    assert_eq!(reply.outcome, Outcome::Accepted);
    assert!(matches!(
        sim.actions.last(),
        Some(Action::EnsureImage { force: false, .. })
    ));
    sim.bring_up(&TaskId::new("web.1").unwrap());
    assert_eq!(
        sim.states("web.1"),
        [TaskState::Staging, TaskState::Starting, TaskState::Running]
    );
    let running = sim.statuses.last().unwrap();
    assert_eq!(running.host_ports.as_slice(), [31000]);
    assert_eq!(running.container_ip.as_deref(), Some("172.17.0.9"));
    let create = sim
        .actions
        .iter()
        .find_map(|a| match a {
            Action::Create { host_ports, .. } => Some(host_ports.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(create, vec![31000]);
    let offer = sim.offers.last().unwrap();
    assert_eq!(offer.available.cpus, 1.9);
    assert_eq!(
        offer.used.ports.as_slice(),
        [PortRange {
            begin: 31000,
            end: 31000
        }]
    );
}

#[test]
fn two_tasks_asking_for_port_zero_get_different_ports() {
    let mut sim = Sim::new();
    sim.launch_running(spec("a"));
    sim.launch_running(spec("b"));
    let a = sim.statuses.iter().rfind(|s| s.task_id == "a").unwrap();
    let b = sim.statuses.iter().rfind(|s| s.task_id == "b").unwrap();
    assert_ne!(a.host_ports, b.host_ports);
}

#[test]
fn a_fixed_host_port_in_use_is_refused_naming_the_field_port_and_holder() {
    let mut sim = Sim::new();
    let mut a = spec("a");
    a.port_mappings[0].host_port = 31005;
    sim.launch_running(a);
    let mut b = spec("b");
    b.port_mappings[0].host_port = 31005;
    let (code, msg) = rejection(&sim.command(CommandKind::Launch(b)));
    assert_eq!(code, RejectCode::PortUnavailable);
    assert_eq!(
        msg,
        r#"port_mappings[0].host_port: 31005 is in use by task "a""#
    );
    let mut c = spec("c");
    c.port_mappings[0].host_port = 8080;
    let (_, msg) = rejection(&sim.command(CommandKind::Launch(c)));
    assert!(
        msg.contains("8080 is outside the agent's range 31000-31009"),
        "{msg}"
    );
}

#[test]
fn a_launch_beyond_the_offer_is_refused_naming_the_resource() {
    let mut sim = Sim::new();
    let mut big = spec("big");
    big.mem_mib = 2048.0;
    let (code, msg) = rejection(&sim.command(CommandKind::Launch(big)));
    assert_eq!(code, RejectCode::InsufficientResources);
    assert_eq!(msg, "mem: 2048 requested, 1024 offered");
    assert!(sim.sup.tasks().is_empty());
}

#[test]
fn the_offered_disk_leaves_out_the_log_space_each_task_s_container_may_fill() {
    let mut sim = Sim::new();
    // 10,000 MiB free; the host's default log limit is 10 MiB x 3.
    assert_eq!(sim.sup.offer().available.disk_mib, 10_000.0);
    sim.command(CommandKind::Launch(spec("a")));
    let mut own = spec("b");
    (own.log_max_size_mib, own.log_max_files) = (Some(50), Some(4));
    own.disk_mib = 100.0;
    sim.command(CommandKind::Launch(own));
    let offer = sim.sup.offer();
    assert_eq!(offer.available.disk_mib, 10_000.0 - 100.0 - 30.0 - 200.0);
    assert_eq!(offer.used.disk_mib, 100.0, "used is what tasks declared");
    // A launch is checked against the same figure.
    let mut big = spec("c");
    big.disk_mib = 9_700.0;
    let (code, msg) = rejection(&sim.command(CommandKind::Launch(big)));
    assert_eq!(code, RejectCode::InsufficientResources);
    assert_eq!(msg, "disk: 9700 requested, 9670 offered");
}

#[test]
fn invalid_specs_are_refused_naming_the_field_and_value() {
    let mut sim = Sim::new();
    let mut bad = spec("x");
    bad.image = ImageRef::new("Not A Ref").unwrap();
    let (code, msg) = rejection(&sim.command(CommandKind::Launch(bad)));
    assert_eq!(code, RejectCode::InvalidField);
    assert!(
        msg.starts_with(r#"image: "Not A Ref" is not an image reference"#),
        "{msg}"
    );
    let mut bad = spec("x");
    bad.health_checks
        .push(HealthCheck {
            protocol: HealthProtocol::Tcp,
            port_index: 3,
            interval_s: 1,
            timeout_s: 1,
            ..Default::default()
        })
        .unwrap();
    let (_, msg) = rejection(&sim.command(CommandKind::Launch(bad)));
    assert_eq!(
        msg,
        "health_checks[0].port_index: 3 but the task has 1 port mappings"
    );
}

#[test]
fn undecodable_and_over_long_commands_are_refused_with_the_decoder_message() {
    let mut sim = Sim::new();
    sim.ev(Event::CommandReceived(vec![0xff, 0x00]));
    let (code, _) = rejection(sim.replies.last().unwrap());
    assert_eq!(code, RejectCode::Undecodable);
    // A kill whose task id is 200 bytes: the id of the command is still found and answered.
    let mut bytes = Vec::new();
    let mut e = minicbor::Encoder::new(&mut bytes);
    e.map(4).unwrap();
    e.u8(0).unwrap().u8(1).unwrap();
    e.u8(1).unwrap().str("c-long").unwrap();
    e.u8(2).unwrap().u8(0).unwrap();
    e.u8(3).unwrap().array(2).unwrap().u8(1).unwrap();
    e.map(1)
        .unwrap()
        .u8(0)
        .unwrap()
        .str(&"t".repeat(200))
        .unwrap();
    sim.ev(Event::CommandReceived(bytes));
    let reply = sim.replies.last().unwrap();
    assert_eq!(reply.command_id, "c-long");
    let (code, msg) = rejection(reply);
    assert_eq!(code, RejectCode::FieldTooLong);
    assert!(
        msg.starts_with("field `kind.kill.task_id`: length 200 exceeds the limit of 128"),
        "{msg}"
    );
}

#[test]
fn a_command_delivered_twice_is_executed_once_and_answered_twice() {
    let mut sim = Sim::new();
    let cmd = Command {
        version: PROTOCOL_VERSION,
        command_id: CommandId::new("dup-1").unwrap(),
        issued_at_ms: T0,
        kind: CommandKind::Launch(spec("once")),
        agent_id: None,
        signature: None,
        epoch: None,
    };
    let bytes = encode_to_vec(&cmd);
    sim.ev(Event::CommandReceived(bytes.clone()));
    let pulls_before = sim.actions.len();
    sim.ev(Event::CommandReceived(bytes));
    assert_eq!(sim.replies.len(), 2);
    assert_eq!(sim.replies[0], sim.replies[1]);
    assert_eq!(
        sim.actions.len(),
        pulls_before,
        "the second delivery did something"
    );
    assert_eq!(sim.states("once"), [TaskState::Staging]);
}

#[test]
fn a_kill_goes_killing_killed_removes_the_container_and_frees_the_port() {
    let mut sim = Sim::new();
    let ctr = sim.launch_running(spec("k"));
    let before = sim.offers.last().unwrap().available.ports.clone();
    let reply = sim.command(CommandKind::Kill(KillTask {
        task_id: TaskId::new("k").unwrap(),
        grace_period_s: Some(5),
    }));
    assert_eq!(reply.outcome, Outcome::Accepted);
    assert!(matches!(
        sim.actions.last(),
        Some(Action::Stop { grace_s: 5, .. })
    ));
    sim.ev(Event::ContainerExited {
        container_id: ctr.clone(),
        exit_code: 143,
        oom_killed: false,
    });
    assert_eq!(
        sim.states("k"),
        [
            TaskState::Staging,
            TaskState::Starting,
            TaskState::Running,
            TaskState::Killing,
            TaskState::Killed
        ]
    );
    assert!(
        sim.actions
            .iter()
            .any(|a| matches!(a, Action::Remove { container_id } if *container_id == ctr))
    );
    assert!(sim.sup.tasks().is_empty());
    assert_eq!(sim.sup.ports().free_count(), 10);
    let after = sim.offers.last().unwrap();
    assert_ne!(after.available.ports, before);
    assert_eq!(after.available.cpus, 2.0);
    let (code, _) = rejection(&sim.command(CommandKind::Kill(KillTask {
        task_id: TaskId::new("k").unwrap(),
        grace_period_s: None,
    })));
    assert_eq!(code, RejectCode::UnknownTask);
}

#[test]
fn a_failing_health_check_kills_and_relaunches_after_the_backoff() {
    let mut sim = Sim::new();
    let ctr = sim.launch_running(with_http_check(spec("h"), 0, 2));
    let id = TaskId::new("h").unwrap();
    // With no delay, the first probe goes out as soon as the container runs.
    assert!(matches!(
        sim.actions.last(),
        Some(Action::Probe {
            target: ProbeTarget::Http { port: 31000, .. },
            ..
        })
    ));
    sim.ev(Event::ProbeResult {
        task_id: id.clone(),
        attempt: 1,
        check: 0,
        healthy: true,
    });
    assert_eq!(sim.statuses.last().unwrap().healthy, Some(true));
    for _ in 0..2 {
        sim.advance(1_000);
        sim.ev(Event::ProbeResult {
            task_id: id.clone(),
            attempt: 1,
            check: 0,
            healthy: false,
        });
    }
    assert!(matches!(sim.actions.last(), Some(Action::Stop { .. })));
    sim.ev(Event::ContainerExited {
        container_id: ctr,
        exit_code: 137,
        oom_killed: false,
    });
    let killed = sim.statuses.last().unwrap();
    assert_eq!(killed.state, TaskState::Killed);
    assert_eq!(killed.reason, Some(Reason::TaskUnhealthyCheck));
    // The first backoff is 1 s: nothing before it, a new attempt at it.
    assert!(
        !sim.advance(999)
            .iter()
            .any(|a| matches!(a, Action::EnsureImage { .. }))
    );
    assert!(
        sim.advance(1)
            .iter()
            .any(|a| matches!(a, Action::EnsureImage { .. }))
    );
    sim.bring_up(&id);
    assert_eq!(
        sim.states("h"),
        [
            TaskState::Staging,
            TaskState::Starting,
            TaskState::Running,
            TaskState::Running,
            TaskState::Running,
            TaskState::Killing,
            TaskState::Killed,
            TaskState::Starting,
            TaskState::Running
        ]
    );
    // Same host port across the local restart.
    assert_eq!(sim.statuses.last().unwrap().host_ports.as_slice(), [31000]);
}

#[test]
fn health_failures_inside_the_grace_period_are_ignored() {
    let mut sim = Sim::new();
    sim.launch_running(with_http_check(spec("g"), 10, 1));
    let id = TaskId::new("g").unwrap();
    for _ in 0..5 {
        sim.advance(1_000);
        sim.ev(Event::ProbeResult {
            task_id: id.clone(),
            attempt: 1,
            check: 0,
            healthy: false,
        });
    }
    assert!(matches!(sim.sup.tasks()[&id].phase, Phase::Running { .. }));
    assert!(!sim.actions.iter().any(|a| matches!(a, Action::Stop { .. })));
}

#[test]
fn restarts_back_off_by_the_factor_up_to_the_maximum_and_reset_after_a_healthy_run() {
    let mut sim = Sim::new();
    let mut s = spec("r");
    s.restart = RestartPolicy {
        mode: RestartMode::Always,
        backoff_s: 1.0,
        backoff_factor: 2.0,
        max_delay_s: 5.0,
    };
    let mut ctr = sim.launch_running(s);
    let id = TaskId::new("r").unwrap();
    let mut delays = Vec::new();
    for _ in 0..5 {
        sim.ev(Event::ContainerExited {
            container_id: ctr.clone(),
            exit_code: 1,
            oom_killed: false,
        });
        let start = sim.now;
        let mut waited = 0;
        while !sim
            .advance(100)
            .iter()
            .any(|a| matches!(a, Action::EnsureImage { .. }))
        {
            waited += 100;
            assert!(waited < 10_000);
        }
        delays.push(sim.now - start);
        ctr = sim.bring_up(&id);
    }
    assert_eq!(delays, [1_000, 2_000, 4_000, 5_000, 5_000]);
    sim.advance(BACKOFF_RESET_MS);
    assert_eq!(sim.sup.tasks()[&id].restarts, 0);
    let failed = sim
        .statuses
        .iter()
        .find(|s| s.state == TaskState::Failed)
        .unwrap();
    assert_eq!(failed.exit_code, Some(1));
    assert_eq!(
        failed.message.as_deref(),
        Some("container exited with code 1")
    );
}

#[test]
fn a_task_that_must_not_restart_is_forgotten_after_it_finishes() {
    let mut sim = Sim::new();
    let mut s = spec("once");
    s.restart.mode = RestartMode::OnFailure;
    let ctr = sim.launch_running(s);
    sim.ev(Event::ContainerExited {
        container_id: ctr,
        exit_code: 0,
        oom_killed: false,
    });
    assert_eq!(sim.statuses.last().unwrap().state, TaskState::Finished);
    assert!(sim.sup.tasks().is_empty());
    assert_eq!(sim.sup.ports().free_count(), 10);
}

#[test]
fn statuses_wait_while_disconnected_and_are_resent_until_acknowledged() {
    let mut sim = Sim::new();
    sim.ev(Event::BrokerDisconnected);
    sim.launch_running(spec("w"));
    assert!(sim.statuses.is_empty(), "published while disconnected");
    assert_eq!(sim.sup.outbox().len(), 3);
    sim.ev(Event::BrokerConnected { local_ip: None });
    assert_eq!(
        sim.states("w"),
        [TaskState::Staging, TaskState::Starting, TaskState::Running]
    );
    sim.advance(1_000);
    assert_eq!(sim.statuses.len(), 6, "not re-sent after 1 s");
    sim.ack_all();
    assert!(sim.sup.outbox().is_empty());
    sim.advance(60_000);
    assert_eq!(sim.statuses.len(), 6);
}

#[test]
fn a_drain_refuses_launches_and_kill_all_kills_every_task() {
    let mut sim = Sim::new();
    let ctr = sim.launch_running(spec("d"));
    let reply = sim.command(CommandKind::Drain(Drain {
        policy: DrainPolicy::KillAll,
    }));
    assert_eq!(reply.outcome, Outcome::Accepted);
    assert!(sim.sup.draining());
    assert!(matches!(sim.actions.last(), Some(Action::Stop { .. })));
    sim.ev(Event::ContainerExited {
        container_id: ctr,
        exit_code: 0,
        oom_killed: false,
    });
    assert!(sim.sup.tasks().is_empty());
    let (code, _) = rejection(&sim.command(CommandKind::Launch(spec("e"))));
    assert_eq!(code, RejectCode::Draining);
    assert!(sim.offers.last().unwrap().available.ports.is_empty());
}

#[test]
fn after_dockerd_comes_back_vanished_containers_restart_and_orphans_are_removed() {
    let mut sim = Sim::new();
    let ctr = sim.launch_running(spec("v"));
    let acts = sim.ev(Event::DockerConnected);
    assert!(matches!(&acts[..], [Action::ListContainers]));
    sim.ev(Event::ContainersListed(vec![ObservedContainer {
        container_id: "stray".into(),
        task_id: "nobody".into(),
        running: true,
        exit_code: 0,
        host_ports: Vec::new(),
    }]));
    assert!(
        sim.actions
            .iter()
            .any(|a| matches!(a, Action::Remove { container_id } if container_id == "stray"))
    );
    assert!(
        sim.actions
            .iter()
            .any(|a| matches!(a, Action::Remove { container_id } if *container_id == ctr))
    );
    assert_eq!(sim.statuses.last().unwrap().state, TaskState::Failed);
    assert!(
        sim.advance(1_000)
            .iter()
            .any(|a| matches!(a, Action::EnsureImage { .. }))
    );
}

#[test]
fn a_container_created_after_its_task_was_killed_is_removed() {
    let mut sim = Sim::new();
    sim.command(CommandKind::Launch(spec("late")));
    let id = TaskId::new("late").unwrap();
    sim.ev(Event::ImageReady {
        task_id: id.clone(),
        attempt: 1,
    });
    sim.command(CommandKind::Kill(KillTask {
        task_id: id.clone(),
        grace_period_s: None,
    }));
    assert_eq!(
        sim.statuses.last().unwrap().reason,
        Some(Reason::TaskKilledDuringLaunch)
    );
    sim.ev(Event::ContainerCreated {
        task_id: id,
        attempt: 1,
        container_id: "late-ctr".into(),
    });
    assert!(
        matches!(sim.actions.last(), Some(Action::Remove { container_id }) if container_id == "late-ctr")
    );
}

#[test]
fn reconcile_reports_every_task_or_the_listed_ones_including_unknown() {
    let mut sim = Sim::new();
    sim.launch_running(spec("a"));
    sim.launch_running(spec("b"));
    let before = sim.statuses.len();
    sim.command(CommandKind::Reconcile(Reconcile::default()));
    let answers: Vec<_> = sim.statuses[before..]
        .iter()
        .map(|s| (s.task_id.to_string(), s.state, s.reason))
        .collect();
    assert_eq!(
        answers,
        [
            ("a".into(), TaskState::Running, Some(Reason::Reconciliation)),
            ("b".into(), TaskState::Running, Some(Reason::Reconciliation))
        ]
    );
    let before = sim.statuses.len();
    let ids = heapless::Vec::from_slice(&[TaskId::new("zz").unwrap()]).unwrap();
    sim.command(CommandKind::Reconcile(Reconcile { task_ids: ids }));
    assert_eq!(sim.statuses[before].state, TaskState::Unknown);
}

#[test]
fn a_launch_that_fails_moves_its_dynamic_port_for_the_next_attempt() {
    let mut sim = Sim::new();
    sim.command(CommandKind::Launch(spec("m")));
    let id = TaskId::new("m").unwrap();
    sim.ev(Event::ImageReady {
        task_id: id.clone(),
        attempt: 1,
    });
    sim.ev(Event::ContainerCreated {
        task_id: id.clone(),
        attempt: 1,
        container_id: "c1".into(),
    });
    sim.ev(Event::LaunchFailed {
        task_id: id.clone(),
        attempt: 1,
        message: "driver failed programming external connectivity: port is already allocated"
            .into(),
    });
    assert_eq!(sim.sup.tasks()[&id].host_ports.as_slice(), [31001]);
    assert_eq!(sim.sup.ports().holder(31000), None);
    sim.advance(1_000);
    let id2 = id.clone();
    sim.bring_up(&id2);
    assert_eq!(sim.statuses.last().unwrap().host_ports.as_slice(), [31001]);
}

#[test]
fn a_failed_pull_is_a_failed_status_with_the_message_then_a_retry() {
    let mut sim = Sim::new();
    sim.command(CommandKind::Launch(spec("p")));
    let id = TaskId::new("p").unwrap();
    sim.ev(Event::ImageFailed {
        task_id: id,
        attempt: 1,
        message: "pull 127.0.0.1:5000/web:1: unauthorized".into(),
    });
    let failed = sim.statuses.last().unwrap();
    assert_eq!(failed.state, TaskState::Failed);
    assert_eq!(failed.reason, Some(Reason::ImagePullFailed));
    assert_eq!(
        failed.message.as_deref(),
        Some("pull 127.0.0.1:5000/web:1: unauthorized")
    );
    assert!(
        sim.advance(1_000)
            .iter()
            .any(|a| matches!(a, Action::EnsureImage { .. }))
    );
}

// ---------------------------------------------------------------------------------------------
// Invariants under random event sequences, against a model of dockerd.

#[derive(Debug, Clone)]
enum Step {
    Launch {
        n: u8,
        fixed_port: Option<u16>,
        cpus10: u8,
    },
    Kill {
        n: u8,
    },
    Exit {
        n: u8,
        code: i64,
    },
    Probe {
        n: u8,
        ok: bool,
    },
    Wait {
        ms: u32,
    },
    Docker,
    Disconnect,
    Connect,
    /// The model dockerd's next action of this kind fails (or, for a stop, never reports
    /// the exit).
    Fault(Fault),
}

/// What the model dockerd can get wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    Pull,
    Create,
    Start,
    /// A stop that hangs: the container runs on, no exit comes (the kill's slack must end it).
    StopHangs,
    List,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (0u8..6, proptest::option::of(31000u16..31012), 1u8..12).prop_map(
            |(n, fixed_port, cpus10)| Step::Launch {
                n,
                fixed_port,
                cpus10
            }
        ),
        (0u8..6).prop_map(|n| Step::Kill { n }),
        (0u8..6, prop_oneof![Just(0i64), Just(1), Just(137)])
            .prop_map(|(n, code)| Step::Exit { n, code }),
        (0u8..6, any::<bool>()).prop_map(|(n, ok)| Step::Probe { n, ok }),
        (0u32..70_000).prop_map(|ms| Step::Wait { ms }),
        Just(Step::Docker),
        Just(Step::Disconnect),
        Just(Step::Connect),
        prop_oneof![
            Just(Fault::Pull),
            Just(Fault::Create),
            Just(Fault::Start),
            Just(Fault::StopHangs),
            Just(Fault::List),
        ]
        .prop_map(Step::Fault),
    ]
}

/// dockerd as a model: containers by id, each with its task, whether it runs and its exit
/// code; faults queued by the steps make its next pull, create, start or listing fail, or
/// lose a stop's exit event.
#[derive(Default)]
struct Dockerd {
    containers: Vec<(String, String, bool)>,
    next: u32,
    faults: Vec<Fault>,
}

impl Dockerd {
    /// Takes a queued fault of `kind`, if any.
    fn fault(&mut self, kind: Fault) -> bool {
        match self.faults.iter().position(|f| *f == kind) {
            Some(i) => {
                self.faults.remove(i);
                true
            }
            None => false,
        }
    }

    /// Carries out the actions, feeding results back until none are left.
    fn serve(&mut self, sim: &mut Sim, mut pending: Vec<Action>) {
        while let Some(a) = pending.pop() {
            let reply = match a {
                Action::EnsureImage {
                    launch: Some((task_id, attempt)),
                    ..
                } if self.fault(Fault::Pull) => Some(Event::ImageFailed {
                    task_id,
                    attempt,
                    message: "pull access denied".into(),
                }),
                Action::EnsureImage {
                    launch: Some((task_id, attempt)),
                    ..
                } => Some(Event::ImageReady { task_id, attempt }),
                Action::Create {
                    task_id, attempt, ..
                } if self.fault(Fault::Create) => Some(Event::LaunchFailed {
                    task_id,
                    attempt,
                    message: "create container: no space left on device".into(),
                }),
                Action::Start {
                    task_id, attempt, ..
                } if self.fault(Fault::Start) => Some(Event::LaunchFailed {
                    task_id,
                    attempt,
                    message: "start container: exec format error".into(),
                }),
                Action::Stop { .. } if self.fault(Fault::StopHangs) => {
                    // The stop hangs: the container runs on and no exit comes.
                    None
                }
                Action::ListContainers if self.fault(Fault::List) => {
                    Some(Event::ContainerListFailed {
                        message: "Cannot connect to the Docker daemon".into(),
                    })
                }
                Action::Create {
                    task_id, attempt, ..
                } => {
                    self.next += 1;
                    let id = format!("c{}", self.next);
                    self.containers
                        .push((id.clone(), task_id.to_string(), false));
                    Some(Event::ContainerCreated {
                        task_id,
                        attempt,
                        container_id: id,
                    })
                }
                Action::Start {
                    task_id,
                    attempt,
                    container_id,
                } => {
                    if let Some(c) = self.containers.iter_mut().find(|c| c.0 == container_id) {
                        c.2 = true;
                    }
                    Some(Event::ContainerStarted {
                        task_id,
                        attempt,
                        container_ip: None,
                    })
                }
                Action::Stop { container_id, .. } => self.exit(&container_id, 143),
                Action::Remove { container_id } => {
                    self.containers.retain(|c| c.0 != container_id);
                    None
                }
                Action::ListContainers => Some(Event::ContainersListed(
                    self.containers
                        .iter()
                        .map(|(id, task, running)| ObservedContainer {
                            container_id: id.clone(),
                            task_id: task.clone(),
                            running: *running,
                            exit_code: if *running { 0 } else { 137 },
                            host_ports: Vec::new(),
                        })
                        .collect(),
                )),
                _ => None,
            };
            if let Some(e) = reply {
                pending.extend(sim.ev(e));
            }
        }
    }

    fn exit(&mut self, container_id: &str, code: i64) -> Option<Event> {
        let c = self
            .containers
            .iter_mut()
            .find(|c| c.0 == container_id && c.2)?;
        c.2 = false;
        Some(Event::ContainerExited {
            container_id: container_id.into(),
            exit_code: code,
            oom_killed: false,
        })
    }
}

fn check_invariants(sim: &Sim, dockerd: &Dockerd) {
    let tasks = sim.sup.tasks();
    // A host port is never given to two tasks.
    let mut ports: Vec<u16> = tasks
        .values()
        .flat_map(|t| t.host_ports.iter().copied())
        .collect();
    let n = ports.len();
    ports.sort_unstable();
    ports.dedup();
    assert_eq!(ports.len(), n, "a host port is held twice");
    // Resources are never over-committed.
    let used = sim.sup.used();
    assert!(
        used.cpus <= 2.0 + 1e-9 && used.mem_mib <= 1024.0 + 1e-9,
        "over-committed: {used:?}"
    );
    // One live container per task.
    for id in tasks.keys() {
        let running = dockerd
            .containers
            .iter()
            .filter(|c| c.1 == id.as_str() && c.2)
            .count();
        assert!(running <= 1, "task {id} has {running} running containers");
    }
    // Every running container belongs to a task whose phase names it: none is leaked.
    for (ctr, task, running) in &dockerd.containers {
        if *running {
            let owned = tasks
                .values()
                .any(|t| t.phase.container() == Some(ctr.as_str()));
            assert!(owned, "container {ctr} of {task} runs and no task names it");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn invariants_hold_for_any_sequence_of_commands_and_events(steps in proptest::collection::vec(step(), 1..80)) {
        let mut sim = Sim::new();
        let mut dockerd = Dockerd::default();
        for s in steps {
            let name = |n: u8| TaskId::new(&format!("t{n}")).unwrap();
            let acts = match s {
                Step::Launch { n, fixed_port, cpus10 } => {
                    let mut sp = with_http_check(spec(&format!("t{n}")), 2, 2);
                    sp.cpus = f64::from(cpus10) / 10.0;
                    sp.mem_mib = 200.0;
                    if let Some(p) = fixed_port { sp.port_mappings[0].host_port = p; }
                    let before = sim.actions.len();
                    sim.command(CommandKind::Launch(sp));
                    sim.actions[before..].to_vec()
                }
                Step::Kill { n } => {
                    let before = sim.actions.len();
                    sim.command(CommandKind::Kill(KillTask { task_id: name(n), grace_period_s: None }));
                    sim.actions[before..].to_vec()
                }
                Step::Exit { n, code } => {
                    let ctr = sim.sup.tasks().get(&name(n)).and_then(|t| t.phase.container().map(str::to_string));
                    match ctr.and_then(|c| dockerd.exit(&c, code)) {
                        Some(e) => sim.ev(e),
                        None => Vec::new(),
                    }
                }
                Step::Probe { n, ok } => match sim.sup.tasks().get(&name(n)) {
                    Some(t) => {
                        let attempt = t.attempt;
                        sim.ev(Event::ProbeResult { task_id: name(n), attempt, check: 0, healthy: ok })
                    }
                    None => Vec::new(),
                },
                Step::Wait { ms } => sim.advance(u64::from(ms)),
                Step::Docker => sim.ev(Event::DockerConnected),
                Step::Disconnect => sim.ev(Event::BrokerDisconnected),
                Step::Connect => sim.ev(Event::BrokerConnected { local_ip: None }),
                Step::Fault(f) => {
                    dockerd.faults.push(f);
                    Vec::new()
                }
            };
            dockerd.serve(&mut sim, acts);
            check_invariants(&sim, &dockerd);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Durability: snapshot, restore, recovery against dockerd's listing.

/// A new process's supervisor restored from `sim`'s snapshot (through its bytes), not yet
/// connected to the broker.
fn restarted(sim: &Sim) -> Sim {
    let bytes = sim.sup.snapshot().to_bytes();
    let snap = Snapshot::from_bytes(&bytes).unwrap();
    let mut s = settings();
    s.incarnation = 8;
    let sup = Supervisor::restore(s, &snap).unwrap();
    assert!(
        sup.deadline_index_is_exact(),
        "a restore left the deadline index behind"
    );
    Sim {
        sup,
        now: sim.now + 5_000,
        wall_step: sim.wall_step,
        statuses: Vec::new(),
        replies: Vec::new(),
        offers: Vec::new(),
        actions: Vec::new(),
        next_cmd: 100,
    }
}

fn observed(container_id: &str, task_id: &str, running: bool) -> ObservedContainer {
    ObservedContainer {
        container_id: container_id.into(),
        task_id: task_id.into(),
        running,
        exit_code: if running { 0 } else { 137 },
        host_ports: Vec::new(),
    }
}

#[test]
fn the_ports_of_a_container_being_removed_are_neither_offered_nor_given_until_it_is_gone() {
    let mut sim = Sim::new();
    // A container of an earlier life of the agent (a fresh state) holds 31000 and 31001.
    let mut old = observed("old", "web.0", true);
    old.host_ports = vec![31000, 31001, 8080];
    let acts = sim.ev(Event::ContainersListed(vec![old]));
    assert!(
        acts.iter()
            .any(|a| matches!(a, Action::Remove { container_id } if container_id == "old"))
    );
    let offered = |sim: &Sim| sim.sup.offer().available.ports.to_vec();
    assert_eq!(
        offered(&sim),
        [PortRange {
            begin: 31002,
            end: 31009
        }]
    );
    // hostPort 0 lands on a free port; asking for a held one is refused naming the container.
    sim.launch_running(spec("web.1"));
    assert_eq!(
        sim.sup.tasks()[&TaskId::new("web.1").unwrap()].host_ports[..],
        [31002]
    );
    let mut fixed = spec("web.2");
    fixed.port_mappings[0].host_port = 31001;
    let (code, msg) = rejection(&sim.command(CommandKind::Launch(fixed.clone())));
    assert_eq!(code, RejectCode::PortUnavailable);
    assert_eq!(
        msg,
        "port_mappings[0].host_port: 31001 is still held by container old that the agent is removing"
    );
    // Removed: the ports are back.
    sim.ev(Event::ContainerRemoved {
        container_id: "old".into(),
    });
    assert_eq!(
        offered(&sim),
        [
            PortRange {
                begin: 31000,
                end: 31001
            },
            PortRange {
                begin: 31003,
                end: 31009
            }
        ]
    );
    assert_eq!(
        sim.command(CommandKind::Launch(fixed)).outcome,
        Outcome::Accepted
    );
}

#[test]
fn a_restored_agent_re_adopts_a_running_container_and_launches_nothing() {
    let mut sim = Sim::new();
    let ctr = sim.launch_running(with_http_check(spec("web.1"), 0, 3));
    let ports = sim.sup.tasks()[&TaskId::new("web.1").unwrap()]
        .host_ports
        .clone();
    assert!(
        !sim.sup.recovering(),
        "a fresh start has nothing to recover"
    );
    let mut after = restarted(&sim);
    // Parked until dockerd is listed: nothing launches on a tick, and not ready for systemd.
    assert!(after.advance(10_000).is_empty());
    assert!(after.sup.recovering());
    let actions = after.ev(Event::ContainersListed(vec![
        observed(&ctr, "web.1", true),
        observed("stray", "gone.9", true),
    ]));
    assert!(!after.sup.recovering(), "re-adopted: ready");
    let t = &after.sup.tasks()[&TaskId::new("web.1").unwrap()];
    assert_eq!(t.phase.container(), Some(ctr.as_str()));
    assert_eq!(t.host_ports, ports, "the same host ports");
    assert!(
        actions
            .iter()
            .all(|a| !matches!(a, Action::Create { .. } | Action::EnsureImage { .. }))
    );
    assert!(
        actions
            .iter()
            .any(|a| matches!(a, Action::Remove { container_id } if container_id == "stray"))
    );
    // Health checks resume on the adopted container at once (its check has no delay).
    assert!(
        actions.iter().any(|a| matches!(a, Action::Probe { .. })),
        "{actions:?}"
    );
}

#[test]
fn a_container_that_died_while_the_agent_was_down_is_restarted_and_reported() {
    let mut sim = Sim::new();
    let ctr = sim.launch_running(spec("web.1"));
    sim.ack_all();
    let mut after = restarted(&sim);
    let actions = after.ev(Event::ContainersListed(vec![observed(
        &ctr, "web.1", false,
    )]));
    assert!(
        actions
            .iter()
            .any(|a| matches!(a, Action::Remove { container_id } if *container_id == ctr))
    );
    assert!(
        actions
            .iter()
            .any(|a| matches!(a, Action::EnsureImage { .. })),
        "started again"
    );
    assert_eq!(
        after.states("web.1"),
        Vec::<TaskState>::new(),
        "not connected yet: queued, not sent"
    );
    after.ev(Event::BrokerConnected { local_ip: None });
    assert_eq!(after.states("web.1"), vec![TaskState::Failed]);
}

#[test]
fn unacknowledged_statuses_and_seen_commands_survive_a_restart() {
    let mut sim = Sim::new();
    sim.ev(Event::BrokerDisconnected);
    sim.launch_running(spec("web.1"));
    let queued: Vec<[u8; 16]> = sim.sup.outbox().statuses().map(|s| s.uuid).collect();
    assert_eq!(queued.len(), 3);
    let mut after = restarted(&sim);
    after.ev(Event::ContainersListed(vec![observed(
        "ctr-web.1-1",
        "web.1",
        true,
    )]));
    after.ev(Event::BrokerConnected { local_ip: None });
    let sent: Vec<[u8; 16]> = after.statuses.iter().map(|s| s.uuid).collect();
    assert_eq!(sent, queued, "the same updates, in order, with their uuids");
    // The launch command redelivered by the broker is answered again, not run again.
    let cmd = Command {
        version: PROTOCOL_VERSION,
        command_id: CommandId::new("c-1").unwrap(),
        issued_at_ms: 0,
        kind: CommandKind::Launch(spec("web.1")),
        agent_id: None,
        signature: None,
        epoch: None,
    };
    let actions = after.ev(Event::CommandReceived(encode_to_vec(&cmd)));
    assert!(actions.is_empty(), "{actions:?}");
    assert_eq!(after.replies.last().unwrap().outcome, Outcome::Accepted);
}

#[test]
fn a_crash_between_create_and_persist_leaves_one_container() {
    let mut sim = Sim::new();
    let id = TaskId::new("web.1").unwrap();
    sim.command(CommandKind::Launch(spec("web.1")));
    sim.ev(Event::ImageReady {
        task_id: id.clone(),
        attempt: 1,
    });
    // The snapshot says "launching"; dockerd has a created (not running) container for it.
    let mut after = restarted(&sim);
    let actions = after.ev(Event::ContainersListed(vec![observed(
        "half", "web.1", false,
    )]));
    assert!(
        actions
            .iter()
            .any(|a| matches!(a, Action::Remove { container_id } if container_id == "half"))
    );
    assert!(
        actions
            .iter()
            .any(|a| matches!(a, Action::EnsureImage { .. }))
    );
    // ...and had it been running, it would have been adopted instead.
    let mut again = restarted(&sim);
    again.ev(Event::ContainersListed(vec![observed(
        "early", "web.1", true,
    )]));
    assert_eq!(again.sup.tasks()[&id].phase.container(), Some("early"));
}

#[test]
fn a_kill_under_way_is_finished_after_a_restart() {
    let mut sim = Sim::new();
    let ctr = sim.launch_running(spec("web.1"));
    sim.command(CommandKind::Kill(KillTask {
        task_id: TaskId::new("web.1").unwrap(),
        grace_period_s: Some(1),
    }));
    let mut after = restarted(&sim);
    let actions = after.ev(Event::ContainersListed(vec![observed(&ctr, "web.1", true)]));
    assert!(
        actions
            .iter()
            .any(|a| matches!(a, Action::Remove { container_id } if *container_id == ctr))
    );
    assert!(after.sup.tasks().is_empty());
    assert_eq!(after.sup.ports().free_count(), 10, "its port is free again");
}

#[test]
fn the_fingerprint_changes_with_durable_state_only() {
    let mut sim = Sim::new();
    let f0 = sim.sup.durable_fingerprint();
    sim.launch_running(with_http_check(spec("web.1"), 0, 3));
    let f1 = sim.sup.durable_fingerprint();
    assert_ne!(f0, f1);
    // A passing probe changes nothing durable.
    let id = TaskId::new("web.1").unwrap();
    sim.advance(1_000);
    sim.ev(Event::ProbeResult {
        task_id: id.clone(),
        attempt: 1,
        check: 0,
        healthy: true,
    });
    let f2 = sim.sup.durable_fingerprint();
    // (The first success is a status update: the outbox changed.)
    sim.advance(1_000);
    sim.ev(Event::ProbeResult {
        task_id: id,
        attempt: 1,
        check: 0,
        healthy: true,
    });
    assert_ne!(f1, f2);
    assert_eq!(f2, sim.sup.durable_fingerprint());
}

#[test]
fn launches_are_refused_while_the_state_cannot_be_saved() {
    let mut sim = Sim::new();
    sim.launch_running(spec("web.1"));
    sim.sup
        .set_storage_failure(Some("No space left on device".into()));
    let reply = sim.command(CommandKind::Launch(spec("web.2")));
    let (code, msg) = rejection(&reply);
    assert_eq!(code, RejectCode::StorageFailure);
    assert!(msg.contains("No space left"), "{msg}");
    assert!(
        sim.sup.tasks().contains_key(&TaskId::new("web.1").unwrap()),
        "accepted work is kept"
    );
    sim.sup.set_storage_failure(None);
    assert_eq!(
        sim.command(CommandKind::Launch(spec("web.2"))).outcome,
        Outcome::Accepted
    );
}

#[test]
fn a_restored_agent_reports_only_after_its_containers_are_re_adopted() {
    let mut sim = Sim::new();
    let ctr = sim.launch_running(spec("web.1"));
    let mut after = restarted(&sim);
    let before = after.actions.len();
    after.ev(Event::BrokerConnected { local_ip: None });
    assert!(
        after.offers.is_empty() && after.statuses.is_empty(),
        "nothing before recovery"
    );
    assert_eq!(after.actions.len(), before);
    after.ev(Event::ContainersListed(vec![observed(&ctr, "web.1", true)]));
    assert_eq!(after.offers.len(), 1, "the offer follows recovery");
    assert_eq!(
        after.offers[0].used.ports.len(),
        1,
        "with the re-adopted task's port"
    );
}

// ---------------------------------------------------------------------------------------------
// Signed commands.

fn key(seed: u8) -> ring::signature::Ed25519KeyPair {
    ring::signature::Ed25519KeyPair::from_seed_unchecked(&[seed; 32]).unwrap()
}

fn public(k: &ring::signature::Ed25519KeyPair) -> [u8; 32] {
    use ring::signature::KeyPair;
    k.public_key().as_ref().try_into().unwrap()
}

/// A reconcile command `id` for `agent`, issued at `issued`, signed by `k` (or not).
fn signed(
    id: &str,
    agent: &str,
    issued: Millis,
    k: Option<&ring::signature::Ed25519KeyPair>,
) -> Vec<u8> {
    let mut cmd = Command {
        version: PROTOCOL_VERSION,
        command_id: CommandId::new(id).unwrap(),
        issued_at_ms: issued,
        kind: CommandKind::Reconcile(Default::default()),
        agent_id: Some(AgentId::new(agent).unwrap()),
        signature: None,
        epoch: None,
    };
    if let Some(k) = k {
        let sig = k.sign(&cmd.signed_bytes());
        cmd.signature = Some(Signature(sig.as_ref().try_into().unwrap()));
    }
    encode_to_vec(&cmd)
}

impl Sim {
    fn with_keys(keys: Vec<[u8; 32]>) -> Self {
        let mut s = settings();
        s.trusted_keys = keys;
        let mut sim = Sim::new();
        sim.sup = Supervisor::new(s);
        sim.ev(Event::BrokerConnected { local_ip: None });
        sim
    }

    fn send(&mut self, bytes: Vec<u8>) -> CommandReply {
        self.ev(Event::CommandReceived(bytes));
        self.replies.last().cloned().unwrap()
    }
}

fn code(r: &CommandReply) -> Option<RejectCode> {
    match &r.outcome {
        Outcome::Accepted => None,
        Outcome::Rejected(x) => Some(x.code),
    }
}

fn message(r: &CommandReply) -> String {
    match &r.outcome {
        Outcome::Accepted => String::new(),
        Outcome::Rejected(x) => x.message.to_string(),
    }
}

#[test]
fn only_commands_signed_by_a_trusted_key_for_this_agent_in_the_window_run() {
    let (k1, k2) = (key(1), key(2));
    let mut sim = Sim::with_keys(vec![public(&k1)]);
    let now = sim.now;
    let r = sim.send(signed("c1", "edge-1", now, None));
    assert_eq!(code(&r), Some(RejectCode::Unauthenticated));
    assert!(message(&r).contains("not signed"), "{r:?}");
    let r = sim.send(signed("c2", "edge-1", now, Some(&k2)));
    assert_eq!(code(&r), Some(RejectCode::Unauthenticated));
    assert!(message(&r).contains("does not verify"), "{r:?}");
    let r = sim.send(signed("c3", "edge-2", now, Some(&k1)));
    assert_eq!(code(&r), Some(RejectCode::Unauthenticated));
    assert!(message(&r).contains("for agent \"edge-2\""), "{r:?}");
    // A tampered command: signed, then changed.
    let mut bytes = signed("c4", "edge-1", now, Some(&k1));
    let mut cmd: Command = outpost_protocol::decode(&bytes).unwrap();
    cmd.kind = CommandKind::Drain(Default::default());
    bytes = encode_to_vec(&cmd);
    assert_eq!(code(&sim.send(bytes)), Some(RejectCode::Unauthenticated));
    assert!(!sim.sup.draining());
    // The real thing runs; the same bytes again are a replay.
    let good = signed("c5", "edge-1", now, Some(&k1));
    assert_eq!(code(&sim.send(good.clone())), None);
    let r = sim.send(good);
    assert_eq!(code(&r), Some(RejectCode::Replay));
    assert!(message(&r).contains("before"), "{r:?}");
    // Outside the window, either way.
    let r = sim.send(signed("c6", "edge-1", now - 3_600_001, Some(&k1)));
    assert_eq!(code(&r), Some(RejectCode::Replay), "{r:?}");
    let r = sim.send(signed("c7", "edge-1", now + 3_600_001, Some(&k1)));
    assert_eq!(code(&r), Some(RejectCode::Replay), "{r:?}");
}

#[test]
fn a_second_trusted_key_works_during_rotation() {
    let (old, new) = (key(1), key(2));
    let mut sim = Sim::with_keys(vec![public(&old), public(&new)]);
    let now = sim.now;
    assert_eq!(
        code(&sim.send(signed("a", "edge-1", now, Some(&old)))),
        None
    );
    assert_eq!(
        code(&sim.send(signed("b", "edge-1", now, Some(&new)))),
        None
    );
}

#[test]
fn the_replay_window_survives_a_restart_and_forgotten_ids_stay_refused() {
    let k = key(1);
    let mut sim = Sim::with_keys(vec![public(&k)]);
    let now = sim.now;
    let first = signed("first", "edge-1", now, Some(&k));
    assert_eq!(code(&sim.send(first.clone())), None);
    // Enough newer commands to push "first" out of the remembered ids.
    for i in 0..super::SEEN_COMMANDS {
        let r = sim.send(signed(
            &format!("n-{i}"),
            "edge-1",
            now + 1 + i as u64,
            Some(&k),
        ));
        assert_eq!(code(&r), None);
    }
    let r = sim.send(first);
    assert_eq!(code(&r), Some(RejectCode::Replay), "{r:?}");
    // Through a snapshot and a restore (a new process): still refused, the latest too.
    let bytes = sim.sup.snapshot().to_bytes();
    let snap = Snapshot::from_bytes(&bytes).unwrap();
    let mut s = settings();
    s.trusted_keys = vec![public(&k)];
    let mut after = Sim::new();
    after.sup = Supervisor::restore(s, &snap).unwrap();
    after.now = now + 10_000;
    let last = format!("n-{}", super::SEEN_COMMANDS - 1);
    let r = after.send(signed(
        &last,
        "edge-1",
        now + super::SEEN_COMMANDS as u64,
        Some(&k),
    ));
    assert_eq!(code(&r), Some(RejectCode::Replay), "{r:?}");
    let r = after.send(signed("n-0", "edge-1", now + 1, Some(&k)));
    assert_eq!(code(&r), Some(RejectCode::Replay), "{r:?}");
}

#[test]
fn without_trusted_keys_unsigned_commands_run_and_a_redelivery_is_answered_again() {
    let mut sim = Sim::new();
    let now = sim.now;
    let bytes = signed("u1", "edge-1", now, None);
    assert_eq!(code(&sim.send(bytes.clone())), None);
    assert_eq!(code(&sim.send(bytes)), None, "the stored reply, again");
}

/// The hello published for a connection that reports `local_ip`, with `advertise_ip` set.
fn hello_on_connect(advertise_ip: Option<&str>, local_ip: Option<&str>) -> Hello {
    let mut s = settings();
    s.advertise_ip = advertise_ip.map(|ip| IpText::new(ip).unwrap());
    let mut sup = Supervisor::new(s);
    let actions = sup.handle(
        T0,
        Event::BrokerConnected {
            local_ip: local_ip.map(|ip| IpText::new(ip).unwrap()),
        },
    );
    actions
        .iter()
        .find_map(|a| match a {
            Action::Publish {
                kind: TopicKind::Hello,
                payload,
            } => Some(decode::<Hello>(payload).unwrap()),
            _ => None,
        })
        .expect("a hello on connect")
}

#[test]
fn the_hello_advertises_the_configured_ip_else_the_connection_s_local_one() {
    let h = hello_on_connect(Some("10.9.8.7"), Some("127.0.0.1"));
    assert_eq!(h.address.as_deref(), Some("10.9.8.7"));
    let h = hello_on_connect(None, Some("127.0.0.1"));
    assert_eq!(h.address.as_deref(), Some("127.0.0.1"));
    let h = hello_on_connect(None, None);
    assert_eq!(h.address, None);
}

#[test]
fn recovery_acts_in_the_same_order_on_every_run() {
    let mut sim = Sim::new();
    let mut containers = Vec::new();
    for i in 0..8 {
        let mut s = spec(&format!("web.{i}"));
        s.port_mappings.clear();
        containers.push((format!("web.{i}"), sim.launch_running(s)));
    }
    sim.ack_all();
    // Half the containers died while the agent was down: restarts and statuses for them.
    let listed: Vec<ObservedContainer> = containers
        .iter()
        .enumerate()
        .map(|(i, (task, ctr))| observed(ctr, task, i % 2 == 0))
        .collect();
    let run = || {
        let mut after = restarted(&sim);
        let actions = after.ev(Event::ContainersListed(listed.clone()));
        // Queued while not connected: sent on connect, in the order they were made.
        after.ev(Event::BrokerConnected { local_ip: None });
        let statuses: Vec<(String, [u8; 16])> = after
            .statuses
            .iter()
            .map(|s| (s.task_id.to_string(), s.uuid))
            .collect();
        (format!("{actions:?}"), statuses)
    };
    let first = run();
    assert!(!first.1.is_empty(), "the dead ones are reported");
    for _ in 0..4 {
        assert_eq!(
            run(),
            first,
            "the same actions and statuses, in the same order"
        );
    }
}

#[test]
fn a_failed_container_listing_during_recovery_is_retried_with_backoff_until_it_works() {
    let mut sim = Sim::new();
    let ctr = sim.launch_running(spec("web.1"));
    sim.ack_all();
    let mut after = restarted(&sim);
    let lists = |a: &[Action]| {
        a.iter()
            .filter(|a| matches!(a, Action::ListContainers))
            .count()
    };
    assert_eq!(lists(&after.ev(Event::DockerConnected)), 1);
    let fail = |s: &mut Sim| {
        s.ev(Event::ContainerListFailed {
            message: "Error response from daemon: i/o timeout".into(),
        })
    };
    assert_eq!(lists(&fail(&mut after)), 0, "not again at once");
    assert_eq!(after.sup.next_deadline(), Some(after.now + LIST_RETRY_MS));
    assert_eq!(lists(&after.advance(LIST_RETRY_MS - 1)), 0);
    assert_eq!(lists(&after.advance(1)), 1, "again after the first wait");
    // A second failure waits twice as long; still recovering (not READY) meanwhile.
    fail(&mut after);
    assert_eq!(lists(&after.advance(2 * LIST_RETRY_MS - 1)), 0);
    assert_eq!(lists(&after.advance(1)), 1);
    assert!(after.sup.recovering());
    after.ev(Event::ContainersListed(vec![observed(&ctr, "web.1", true)]));
    assert!(!after.sup.recovering(), "re-adopted once a listing works");
    // The wait starts over after a listing that worked, and it is bounded.
    fail(&mut after);
    assert_eq!(lists(&after.advance(LIST_RETRY_MS)), 1);
    for _ in 0..8 {
        fail(&mut after);
        assert_eq!(
            lists(&after.advance(LIST_RETRY_MAX_MS)),
            1,
            "never longer than the longest wait"
        );
    }
}

/// Image, create, then a start that fails with dockerd's `message`, for the task's current
/// attempt; the actions of the failure.
fn start_fails(sim: &mut Sim, id: &TaskId, message: &str) -> Vec<Action> {
    let attempt = sim.sup.tasks()[id].attempt;
    sim.ev(Event::ImageReady {
        task_id: id.clone(),
        attempt,
    });
    sim.ev(Event::ContainerCreated {
        task_id: id.clone(),
        attempt,
        container_id: format!("ctr-{attempt}"),
    });
    sim.ev(Event::LaunchFailed {
        task_id: id.clone(),
        attempt,
        message: message.into(),
    })
}

#[test]
fn a_start_that_finds_its_picked_port_taken_is_retried_at_once_on_another_a_few_times() {
    let taken = "Bind for 0.0.0.0:31000 failed: port is already allocated";
    let mut sim = Sim::new();
    let reply = sim.command(CommandKind::Launch(spec("web.1")));
    assert_eq!(reply.outcome, Outcome::Accepted);
    let id = TaskId::new("web.1").unwrap();
    let mut ports = vec![sim.sup.tasks()[&id].host_ports[0]];
    for _ in 0..task::PORT_RETRIES {
        let actions = start_fails(&mut sim, &id, taken);
        assert!(
            actions.iter().any(|a| matches!(
                a,
                Action::EnsureImage {
                    launch: Some(_),
                    ..
                }
            )),
            "started again at once, no backoff: {actions:?}"
        );
        let port = sim.sup.tasks()[&id].host_ports[0];
        assert!(
            !ports.contains(&port),
            "another port: {port} after {ports:?}"
        );
        ports.push(port);
    }
    assert!(
        !sim.states("web.1").contains(&TaskState::Failed),
        "nothing reported while retrying"
    );
    // Bounded: the next one fails the task (which then restarts with its backoff).
    start_fails(&mut sim, &id, taken);
    assert_eq!(sim.states("web.1").last(), Some(&TaskState::Failed));

    // A fixed host port that is taken fails the task at once, with dockerd's reason.
    let mut fixed = spec("fixed.1");
    fixed.port_mappings[0].host_port = 31005;
    sim.command(CommandKind::Launch(fixed));
    let fid = TaskId::new("fixed.1").unwrap();
    start_fails(
        &mut sim,
        &fid,
        "Bind for 0.0.0.0:31005 failed: port is already allocated",
    );
    let last = sim
        .statuses
        .iter()
        .rfind(|s| s.task_id == "fixed.1")
        .unwrap();
    assert_eq!(last.state, TaskState::Failed);
    assert!(
        last.message
            .as_ref()
            .is_some_and(|m| m.contains("31005 failed: port is already allocated")),
        "{last:?}"
    );
}

#[test]
fn the_fingerprint_follows_every_field_of_the_snapshot_offer_seq_included() {
    let mut sim = Sim::new();
    sim.launch_running(spec("web.1"));
    sim.ack_all();
    let offers = sim.offers.len();
    let before = sim.sup.durable_fingerprint();
    // Only time passes until the agent re-offers: the offer's seq grows, and it is durable
    // (a restarted agent must not offer an older seq than the bridge has seen).
    let mut waited = 0;
    while sim.offers.len() == offers && waited < 3_600_000 {
        sim.advance(1_000);
        waited += 1_000;
    }
    assert!(sim.offers.len() > offers, "it re-offered");
    assert_ne!(before, sim.sup.durable_fingerprint());
    // What the digest stands for round-trips: a snapshot restored and taken again is the same.
    let restored = restarted(&sim);
    assert_eq!(
        restored.sup.snapshot().to_bytes(),
        sim.sup.snapshot().to_bytes()
    );
}

#[test]
fn after_recovery_the_containers_are_listed_once_more_and_a_late_orphan_is_removed() {
    let mut sim = Sim::new();
    let ctr = sim.launch_running(spec("web.1"));
    sim.ack_all();
    let mut after = restarted(&sim);
    after.ev(Event::DockerConnected);
    after.ev(Event::ContainersListed(vec![observed(&ctr, "web.1", true)]));
    assert!(!after.sup.recovering());
    let lists = |a: &[Action]| {
        a.iter()
            .filter(|a| matches!(a, Action::ListContainers))
            .count()
    };
    assert_eq!(lists(&after.advance(RELIST_AFTER_RECOVERY_MS - 1)), 0);
    assert_eq!(lists(&after.advance(1)), 1, "listed once more");
    // The killed process's last create landed after the first listing: removed now.
    let actions = after.ev(Event::ContainersListed(vec![
        observed(&ctr, "web.1", true),
        observed("late", "web.1", false),
    ]));
    assert!(
        actions
            .iter()
            .any(|a| matches!(a, Action::Remove { container_id } if container_id == "late")),
        "{actions:?}"
    );
    assert_eq!(
        after.sup.tasks()[&TaskId::new("web.1").unwrap()]
            .phase
            .container(),
        Some(ctr.as_str())
    );
    // Once: no further listings without a reason.
    assert_eq!(lists(&after.advance(60_000)), 0);
}

#[test]
fn a_command_from_an_older_leadership_epoch_is_refused_also_after_a_restart() {
    let mut sim = Sim::new();
    let epoch_cmd = |sim: &mut Sim, id: &str, epoch: Option<u64>| {
        let cmd = Command {
            version: PROTOCOL_VERSION,
            command_id: CommandId::new(id).unwrap(),
            issued_at_ms: sim.now,
            kind: CommandKind::Reconcile(Default::default()),
            agent_id: None,
            signature: None,
            epoch,
        };
        sim.send(encode_to_vec(&cmd))
    };
    assert_eq!(code(&epoch_cmd(&mut sim, "e-1", Some(4))), None);
    assert_eq!(
        code(&epoch_cmd(&mut sim, "e-2", Some(5))),
        None,
        "a newer leader"
    );
    let r = epoch_cmd(&mut sim, "e-3", Some(4));
    assert_eq!(code(&r), Some(RejectCode::StaleEpoch), "{r:?}");
    let m = message(&r);
    assert!(m.contains("epoch 4") && m.contains('5'), "{m}");
    assert_eq!(
        code(&epoch_cmd(&mut sim, "e-4", Some(5))),
        None,
        "the same leader"
    );
    // A bridge without [ha] sends none: not an election's, not refused.
    assert_eq!(code(&epoch_cmd(&mut sim, "e-5", None)), None);
    // The newest epoch is durable: a restarted agent still refuses the deposed leader.
    let snap = Snapshot::from_bytes(&sim.sup.snapshot().to_bytes()).unwrap();
    let mut after = Sim::new();
    after.sup = Supervisor::restore(settings(), &snap).unwrap();
    let r = epoch_cmd(&mut after, "e-6", Some(4));
    assert_eq!(code(&r), Some(RejectCode::StaleEpoch), "{r:?}");
}

const DAY: i64 = 86_400_000;
const HOUR: i64 = 3_600_000;

fn probes(actions: &[Action]) -> usize {
    actions
        .iter()
        .filter(|a| matches!(a, Action::Probe { .. }))
        .count()
}

#[test]
fn a_wall_clock_step_moves_no_probe_backoff_or_kill_deadline_and_timestamps_follow_it() {
    let mut sim = Sim::new();
    let ctr = sim.launch_running(with_http_check(spec("h"), 0, 2));
    let id = TaskId::new("h").unwrap();
    let healthy = |sim: &mut Sim, ok: bool| {
        sim.ev(Event::ProbeResult {
            task_id: id.clone(),
            attempt: sim.sup.tasks()[&id].attempt,
            check: 0,
            healthy: ok,
        })
    };
    healthy(&mut sim, true);

    // Probes every second: NTP steps the clock a day forward between two of them. The next
    // probe is neither early nor any more than once.
    sim.wall_step += DAY;
    assert_eq!(probes(&sim.advance(999)), 0, "not early");
    assert_eq!(probes(&sim.advance(1)), 1, "on time");
    healthy(&mut sim, true);
    // ...and an hour back: the next probe is not late.
    sim.wall_step -= HOUR;
    assert_eq!(probes(&sim.advance(999)), 0);
    assert_eq!(probes(&sim.advance(1)), 1, "on time after a step back");

    // Two failures: killed, then a 1 s backoff, through which the clock steps a day forward
    // and an hour back: the new attempt comes after exactly the backoff.
    healthy(&mut sim, false);
    sim.advance(1_000);
    healthy(&mut sim, false);
    assert!(matches!(sim.actions.last(), Some(Action::Stop { .. })));
    sim.ev(Event::ContainerExited {
        container_id: ctr,
        exit_code: 137,
        oom_killed: false,
    });
    let killed = sim.statuses.last().unwrap().clone();
    assert_eq!(killed.state, TaskState::Killed);
    // Status timestamps are the wall clock's, steps included.
    assert_eq!(
        killed.timestamp_ms,
        sim.now.saturating_add_signed(DAY - HOUR)
    );
    let starts = |a: &[Action]| a.iter().any(|a| matches!(a, Action::EnsureImage { .. }));
    sim.wall_step += DAY;
    assert!(!starts(&sim.advance(500)), "a forward step ends no backoff");
    sim.wall_step -= HOUR;
    assert!(!starts(&sim.advance(499)));
    assert!(starts(&sim.advance(1)), "a backward step stalls none");
    let ctr = sim.bring_up(&id);

    // A kill with a 3 s grace period: the clock steps a day forward at once. The container is
    // not presumed gone before the grace and slack have passed on the monotonic clock.
    sim.command(CommandKind::Kill(KillTask {
        task_id: id.clone(),
        grace_period_s: Some(3),
    }));
    sim.wall_step += DAY;
    sim.advance(3_000 + KILL_SLACK_MS - 1);
    assert_eq!(
        sim.states("h").last(),
        Some(&TaskState::Killing),
        "not cut short"
    );
    sim.advance(1);
    assert_eq!(
        sim.states("h").last(),
        Some(&TaskState::Killed),
        "{:?}",
        sim.states("h")
    );
    let _ = ctr;
}

#[test]
fn a_backoff_resumes_with_what_was_left_after_a_reboot_that_stepped_the_clock() {
    let mut sim = Sim::new();
    let mut s = spec("b");
    s.restart.backoff_s = 60.0;
    let ctr = sim.launch_running(s);
    sim.ev(Event::ContainerExited {
        container_id: ctr.clone(),
        exit_code: 1,
        oom_killed: false,
    });
    assert!(matches!(
        sim.sup.tasks()[&TaskId::new("b").unwrap()].phase,
        Phase::Backoff { .. }
    ));
    sim.advance(20_000);
    // Something durable changes 20 s into the backoff: the state is saved with 40 s left.
    sim.ack_all();
    let bytes = sim.sup.snapshot().to_bytes();

    // The host reboots: the monotonic clock starts again near zero, and the wall clock is
    // wrong by a year (no RTC) until NTP steps it.
    let snap = Snapshot::from_bytes(&bytes).unwrap();
    let mut set = settings();
    set.incarnation = 8;
    set.started_at_ms = T0 - 365 * DAY as u64;
    let mut after = Sim {
        sup: Supervisor::restore(set, &snap).unwrap(),
        now: 9_000,
        wall_step: (T0 - 365 * DAY as u64) as i64 - 9_000,
        statuses: Vec::new(),
        replies: Vec::new(),
        offers: Vec::new(),
        actions: Vec::new(),
        next_cmd: 100,
    };
    let starts = |a: &[Action]| a.iter().any(|a| matches!(a, Action::EnsureImage { .. }));
    let listed = after.ev(Event::ContainersListed(vec![observed(&ctr, "b", false)]));
    assert!(!starts(&listed), "the backoff is not over");
    after.wall_step += 365 * DAY;
    assert!(
        !starts(&after.advance(39_999)),
        "not early, though the clock jumped a year"
    );
    assert!(starts(&after.advance(1)), "after the 40 s that were left");
}

#[test]
fn a_signed_command_from_a_host_whose_clock_is_off_is_refused_naming_the_skew() {
    let k = key(1);
    let mut sim = Sim::with_keys(vec![public(&k)]);
    // The host booted at the last shutdown's time, two days behind the bridge.
    sim.wall_step = -2 * DAY;
    let r = sim.send(signed("c1", "edge-1", T0, Some(&k)));
    assert_eq!(code(&r), Some(RejectCode::Replay));
    let m = message(&r);
    assert!(
        m.contains("172800 s after this agent's clock") && m.contains("behind"),
        "{m}"
    );
    // NTP steps the clock: the same bridge's next command runs.
    sim.wall_step = 0;
    sim.advance(10);
    let r = sim.send(signed("c2", "edge-1", sim.now, Some(&k)));
    assert_eq!(r.outcome, Outcome::Accepted, "{r:?}");
    // A host two days ahead names that.
    sim.wall_step = 2 * DAY;
    let r = sim.send(signed("c3", "edge-1", sim.now, Some(&k)));
    let m = message(&r);
    assert!(
        m.contains("172800 s before this agent's clock") && m.contains("ahead"),
        "{m}"
    );
}

fn read_logs(task: &str, follow_s: u32) -> CommandKind {
    CommandKind::ReadLogs(outpost_protocol::ReadLogs {
        task_id: TaskId::new(task).unwrap(),
        tail: Some(10),
        follow_s,
        ..Default::default()
    })
}

#[test]
fn a_logs_request_streams_the_running_container_and_at_most_four_go_at_once() {
    let mut sim = Sim::new();
    let ctr = sim.launch_running(spec("chatty"));
    sim.actions.clear();
    for n in 1..=MAX_LOG_STREAMS {
        let reply = sim.command(read_logs("chatty", 60));
        assert_eq!(reply.outcome, Outcome::Accepted, "stream {n}");
    }
    let started: Vec<_> = sim
        .actions
        .iter()
        .filter_map(|a| match a {
            Action::StreamLogs {
                request_id,
                container_id,
                request,
            } => Some((request_id.clone(), container_id.clone(), request.follow_s)),
            _ => None,
        })
        .collect();
    assert_eq!(started.len(), MAX_LOG_STREAMS);
    assert!(started.iter().all(|(_, c, f)| *c == ctr && *f == 60));
    // A fifth is refused, saying why; one that ends makes room.
    let (code, message) = rejection(&sim.command(read_logs("chatty", 0)));
    assert_eq!(code, RejectCode::Busy);
    assert!(message.contains("4 logs streams"), "{message}");
    sim.ev(Event::LogStreamEnded {
        request_id: started[0].0.clone(),
    });
    assert_eq!(
        sim.command(read_logs("chatty", 0)).outcome,
        Outcome::Accepted
    );
    // The bridge stops one; an unknown (ended) request is no error.
    sim.actions.clear();
    let stop = |id: &str| {
        CommandKind::StopLogs(outpost_protocol::StopLogs {
            request_id: CommandId::new(id).unwrap(),
        })
    };
    assert_eq!(sim.command(stop(&started[1].0)).outcome, Outcome::Accepted);
    assert_eq!(sim.command(stop("c-999")).outcome, Outcome::Accepted);
    let stopped: Vec<_> = sim
        .actions
        .iter()
        .filter_map(|a| match a {
            Action::StopLogs { request_id } => Some(request_id.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(stopped, [started[1].0.clone()]);
    // A lost broker connection stops every stream left: their readers are beyond it.
    sim.actions.clear();
    sim.ev(Event::BrokerDisconnected);
    let stopped = sim
        .actions
        .iter()
        .filter(|a| matches!(a, Action::StopLogs { .. }))
        .count();
    assert_eq!(stopped, MAX_LOG_STREAMS - 1);
    assert!(sim.sup.log_streams().is_empty());
}

#[test]
fn a_logs_request_without_a_container_or_with_too_long_a_follow_is_refused_naming_why() {
    let mut sim = Sim::new();
    let (code, message) = rejection(&sim.command(read_logs("nope", 0)));
    assert_eq!(code, RejectCode::UnknownTask);
    assert!(message.contains("\"nope\""), "{message}");
    // Accepted but still pulling: no container to read yet.
    assert_eq!(
        sim.command(CommandKind::Launch(spec("slow"))).outcome,
        Outcome::Accepted
    );
    let (code, message) = rejection(&sim.command(read_logs("slow", 0)));
    assert_eq!(code, RejectCode::UnknownTask);
    assert!(message.contains("pulling its image"), "{message}");
    sim.bring_up(&TaskId::new("slow").unwrap());
    let (code, message) = rejection(&sim.command(read_logs("slow", MAX_FOLLOW_S + 1)));
    assert_eq!(code, RejectCode::InvalidField);
    assert!(message.contains("follow_s: 3601"), "{message}");
    assert!(
        !sim.actions
            .iter()
            .any(|a| matches!(a, Action::StreamLogs { .. })),
        "nothing streamed"
    );
}

#[test]
fn an_undrain_takes_launches_again_and_says_so_in_the_liveness_and_the_offer() {
    let mut sim = Sim::new();
    let reply = sim.command(CommandKind::Drain(Drain {
        policy: DrainPolicy::KeepTasks,
    }));
    assert_eq!(reply.outcome, Outcome::Accepted);
    let (code, _) = rejection(&sim.command(CommandKind::Launch(spec("after-drain"))));
    assert_eq!(code, RejectCode::Draining);
    let offers = sim.offers.len();
    assert_eq!(sim.command(CommandKind::Undrain).outcome, Outcome::Accepted);
    assert!(!sim.sup.draining());
    assert!(sim.offers.len() > offers, "a new offer");
    assert_eq!(
        sim.command(CommandKind::Launch(spec("after-drain")))
            .outcome,
        Outcome::Accepted
    );
    // Durable: a restart does not drain again.
    let restored = restarted(&sim);
    assert!(
        !restored.sup.draining(),
        "not draining after a restart either"
    );
}

#[test]
fn a_readiness_check_is_probed_until_it_passes_then_reported_and_stopped_and_never_kills() {
    let mut sim = Sim::new();
    let mut s = spec("r");
    s.readiness = Some(outpost_protocol::ReadinessCheck {
        path: Some(outpost_protocol::Text::new("/ready").unwrap()),
        interval_s: 2,
        timeout_s: 1,
        ..Default::default()
    });
    sim.launch_running(s);
    let id = TaskId::new("r").unwrap();
    let running = sim.statuses.last().unwrap().clone();
    assert_eq!(running.state, TaskState::Running);
    assert_eq!(
        running.ready,
        Some(false),
        "not ready until the check passes"
    );
    let probe = |actions: &[Action]| {
        actions.iter().any(|a| {
            matches!(a, Action::Probe { check: task::READINESS, target: ProbeTarget::Http { port: 31000, path, ready_statuses, .. }, .. }
                if path == "/ready" && ready_statuses == &[200])
        })
    };
    assert!(probe(&sim.actions), "probed at once: {:?}", sim.actions);
    let failed = |sim: &mut Sim| {
        sim.ev(Event::ProbeResult {
            task_id: TaskId::new("r").unwrap(),
            attempt: 1,
            check: task::READINESS,
            healthy: false,
        })
    };
    // Failures: probed again after the interval, nothing new reported (re-sends of the
    // unacknowledged RUNNING aside), never killed.
    let updates = |sim: &Sim| {
        let mut u: Vec<[u8; 16]> = sim.statuses.iter().map(|s| s.uuid).collect();
        u.sort();
        u.dedup();
        u.len()
    };
    for _ in 0..5 {
        let before = updates(&sim);
        failed(&mut sim);
        assert!(!probe(&sim.advance(1_999)), "not before the interval");
        assert!(probe(&sim.advance(1)), "again after the interval");
        assert_eq!(updates(&sim), before);
    }
    assert!(!sim.actions.iter().any(|a| matches!(a, Action::Stop { .. })));
    sim.ev(Event::ProbeResult {
        task_id: id.clone(),
        attempt: 1,
        check: task::READINESS,
        healthy: true,
    });
    let ready = sim.statuses.last().unwrap();
    assert_eq!((ready.state, ready.ready), (TaskState::Running, Some(true)));
    assert!(!probe(&sim.advance(60_000)), "no probe once ready");
    // A result of an older attempt is ignored.
    let n = updates(&sim);
    sim.ev(Event::ProbeResult {
        task_id: id,
        attempt: 0,
        check: task::READINESS,
        healthy: true,
    });
    assert_eq!(updates(&sim), n);
}
