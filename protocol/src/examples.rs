//! One worked example of every message: the golden-bytes tests pin their encoding, and
//! `docs/protocol.md` shows them in CBOR diagnostic notation (`cargo run -p outpost-protocol
//! --example diag` prints them).

use heapless::Vec;

use crate::PROTOCOL_VERSION;
use crate::messages::*;
use crate::text::Text;

fn t<const N: usize>(s: &str) -> Text<N> {
    // Examples are short literals, far below every limit.
    Text::new(s).unwrap_or_default()
}

fn kv(name: &str, value: &str) -> KeyValue {
    KeyValue {
        name: t(name),
        value: t(value),
    }
}

fn list<T, const N: usize>(items: impl IntoIterator<Item = T>) -> Vec<T, N> {
    let mut v = Vec::new();
    for item in items {
        // Examples are below every limit.
        let _ = v.push(item);
    }
    v
}

/// The example status uuid.
pub const UUID: [u8; 16] = [
    0x6f, 0x1c, 0x2a, 0x4e, 0x91, 0x3b, 0x4d, 0x02, 0x8a, 0x55, 0x0c, 0x7e, 0x3d, 0x19, 0xb2, 0x40,
];

/// An agent's hello.
pub fn hello() -> Hello {
    Hello {
        version: PROTOCOL_VERSION,
        agent_id: t("edge-07"),
        hostname: t("edge-07.site-a"),
        agent_version: t("0.1.0"),
        attributes: list([kv("rack", "r2"), kv("zone", "north")]),
        started_at_ms: 1_764_000_000_000,
        address: Some(t("192.0.2.7")),
    }
}

/// An offer of a small host running the example task.
pub fn offer() -> Offer {
    Offer {
        version: PROTOCOL_VERSION,
        agent_id: t("edge-07"),
        seq: 42,
        available: Resources {
            cpus: 3.5,
            mem_mib: 7616.0,
            disk_mib: 51200.0,
            ports: list([
                PortRange {
                    begin: 31000,
                    end: 31004,
                },
                PortRange {
                    begin: 31006,
                    end: 32000,
                },
            ]),
        },
        used: Resources {
            cpus: 0.5,
            mem_mib: 64.0,
            disk_mib: 0.0,
            ports: list([PortRange {
                begin: 31005,
                end: 31005,
            }]),
        },
        attributes: list([kv("rack", "r2"), kv("zone", "north")]),
    }
}

/// The task spec of one instance of the README's `demo-nginx` app.
pub fn task_spec() -> TaskSpec {
    TaskSpec {
        task_id: t("demo-nginx.7d2c1f0e-4b1a-11ef-9a3c-0242ac110002"),
        app_id: Some(t("/demo-nginx")),
        image: t("nginx:latest"),
        force_pull: false,
        cmd: None,
        args: Vec::new(),
        env: list([kv("MARATHON_APP_ID", "/demo-nginx")]),
        labels: Vec::new(),
        cpus: 0.1,
        mem_mib: 64.0,
        disk_mib: 0.0,
        network: NetworkMode::Bridge,
        port_mappings: list([PortMapping {
            container_port: 80,
            host_port: 0,
            protocol: PortProtocol::Tcp,
            name: None,
        }]),
        volumes: Vec::new(),
        health_checks: list([HealthCheck {
            protocol: HealthProtocol::Http,
            path: Some(t("/")),
            port_index: 0,
            port: None,
            command: None,
            grace_period_s: 5,
            interval_s: 20,
            timeout_s: 20,
            max_consecutive_failures: 3,
            delay_s: 15,
        }]),
        kill_grace_period_s: 3,
        restart: RestartPolicy::default(),
        privileged: false,
        log_max_size_mib: None,
        log_max_files: None,
        readiness: None,
    }
}

/// A launch command for [`task_spec`].
pub fn launch() -> Command {
    Command {
        version: PROTOCOL_VERSION,
        command_id: t("c-000101"),
        issued_at_ms: 1_764_000_100_000,
        kind: CommandKind::Launch(task_spec()),
        agent_id: None,
        signature: None,
        epoch: None,
    }
}

/// A kill command with an explicit grace period.
pub fn kill() -> Command {
    Command {
        version: PROTOCOL_VERSION,
        command_id: t("c-000102"),
        issued_at_ms: 1_764_000_200_000,
        kind: CommandKind::Kill(KillTask {
            task_id: t("demo-nginx.7d2c1f0e-4b1a-11ef-9a3c-0242ac110002"),
            grace_period_s: Some(10),
        }),
        agent_id: None,
        signature: None,
        // From a leader elected through ZooKeeper (`[ha]`): its leadership epoch.
        epoch: Some(3),
    }
}

/// A forced pull.
pub fn pull() -> Command {
    Command {
        version: PROTOCOL_VERSION,
        command_id: t("c-000103"),
        issued_at_ms: 1_764_000_300_000,
        kind: CommandKind::Pull(PullImage {
            image: t("127.0.0.1:5000/outpost/web:1"),
            force: true,
        }),
        agent_id: None,
        signature: None,
        epoch: None,
    }
}

/// A drain that kills every task.
pub fn drain() -> Command {
    Command {
        version: PROTOCOL_VERSION,
        command_id: t("c-000104"),
        issued_at_ms: 1_764_000_400_000,
        kind: CommandKind::Drain(Drain {
            policy: DrainPolicy::KillAll,
        }),
        agent_id: None,
        signature: None,
        epoch: None,
    }
}

/// A reconcile of all tasks (empty list).
pub fn reconcile() -> Command {
    Command {
        version: PROTOCOL_VERSION,
        command_id: t("c-000105"),
        issued_at_ms: 1_764_000_500_000,
        kind: CommandKind::Reconcile(Reconcile::default()),
        agent_id: None,
        signature: None,
        epoch: None,
    }
}

/// An accepted command.
pub fn reply_accepted() -> CommandReply {
    CommandReply {
        version: PROTOCOL_VERSION,
        command_id: t("c-000101"),
        outcome: Outcome::Accepted,
    }
}

/// A rejected command.
pub fn reply_rejected() -> CommandReply {
    CommandReply {
        version: PROTOCOL_VERSION,
        command_id: t("c-000106"),
        outcome: Outcome::Rejected(Rejection {
            code: RejectCode::PortUnavailable,
            message: t("port_mappings[0].host_port: 31005 is in use by task web.1"),
        }),
    }
}

/// A RUNNING, healthy status with its host port and container IP.
pub fn status() -> TaskStatus {
    TaskStatus {
        version: PROTOCOL_VERSION,
        agent_id: t("edge-07"),
        task_id: t("demo-nginx.7d2c1f0e-4b1a-11ef-9a3c-0242ac110002"),
        uuid: UUID,
        state: TaskState::Running,
        reason: Some(Reason::HealthCheckStatusUpdated),
        message: None,
        healthy: Some(true),
        timestamp_ms: 1_764_000_105_250,
        exit_code: None,
        host_ports: list([31007]),
        container_ip: Some(t("172.17.0.3")),
        ready: None,
    }
}

/// The acknowledgement of [`status`].
pub fn ack() -> StatusAck {
    StatusAck {
        version: PROTOCOL_VERSION,
        task_id: t("demo-nginx.7d2c1f0e-4b1a-11ef-9a3c-0242ac110002"),
        uuid: UUID,
    }
}

/// The last will an agent registers: offline.
pub fn last_will() -> AgentState {
    AgentState {
        version: PROTOCOL_VERSION,
        agent_id: t("edge-07"),
        liveness: Liveness::Offline,
        started_at_ms: 1_764_000_000_000,
    }
}

/// The end of a drain.
pub fn undrain() -> Command {
    Command {
        version: PROTOCOL_VERSION,
        command_id: t("u-000109"),
        issued_at_ms: 1_764_000_800_000,
        kind: CommandKind::Undrain,
        agent_id: None,
        signature: None,
        epoch: None,
    }
}

/// A logs request: the last 100 lines of both streams, then new ones for a minute.
pub fn read_logs() -> Command {
    Command {
        version: PROTOCOL_VERSION,
        command_id: t("l-000107"),
        issued_at_ms: 1_764_000_600_000,
        kind: CommandKind::ReadLogs(ReadLogs {
            task_id: t("demo-nginx.7d2c1f0e-4b1a-11ef-9a3c-0242ac110002"),
            streams: LogStreams::Both,
            tail: Some(100),
            since_ms: None,
            follow_s: 60,
        }),
        agent_id: None,
        signature: None,
        epoch: None,
    }
}

/// The end of [`read_logs`]'s stream before its time.
pub fn stop_logs() -> Command {
    Command {
        version: PROTOCOL_VERSION,
        command_id: t("s-000108"),
        issued_at_ms: 1_764_000_610_000,
        kind: CommandKind::StopLogs(StopLogs {
            request_id: t("l-000107"),
        }),
        agent_id: None,
        signature: None,
        epoch: None,
    }
}

/// The first chunk answering [`read_logs`]: one line of standard output.
pub fn log_chunk() -> LogChunk {
    let mut data = LogBytes::default();
    // Far below MAX_LOG_CHUNK.
    let _ = data.0.extend_from_slice(b"GET / 200\n");
    LogChunk {
        version: PROTOCOL_VERSION,
        agent_id: t("edge-07"),
        request_id: t("l-000107"),
        seq: 0,
        stream: LogStream::Stdout,
        data,
        end: None,
    }
}

/// The last chunk of a stream: no data, why it ended.
pub fn log_end() -> LogChunk {
    LogChunk {
        version: PROTOCOL_VERSION,
        agent_id: t("edge-07"),
        request_id: t("l-000107"),
        seq: 1,
        stream: LogStream::Stdout,
        data: LogBytes::default(),
        end: Some(t("container stopped")),
    }
}

/// An agent's stats: one container, nothing unacknowledged, dockerd answering.
pub fn agent_stats() -> AgentStats {
    AgentStats {
        version: PROTOCOL_VERSION,
        agent_id: t("edge-07"),
        timestamp_ms: 1_764_000_700_000,
        outbox_depth: 0,
        restarts: 2,
        probe_latency_us: 850,
        containers: 1,
        rss_kib: 9_216,
        dockerd_reachable: true,
    }
}

/// A launch's pull under way: two of three layers in, 1.5 of 4 MiB.
pub fn pull_progress() -> PullProgress {
    PullProgress {
        version: PROTOCOL_VERSION,
        agent_id: t("edge-07"),
        image: t("127.0.0.1:5000/outpost/web:1"),
        app_id: Some(t("/demo-nginx")),
        task_id: Some(t("demo-nginx.7d2c1f0e-4b1a-11ef-9a3c-0242ac110002")),
        layers_done: 2,
        layers_total: 3,
        bytes_done: 1_572_864,
        bytes_total: 4_194_304,
        done: false,
        error: None,
    }
}

/// Every example, named, encoded.
#[cfg(feature = "std")]
pub fn all_encoded() -> std::vec::Vec<(&'static str, std::vec::Vec<u8>)> {
    use crate::codec::encode_to_vec as enc;
    std::vec![
        ("hello", enc(&hello())),
        ("offer", enc(&offer())),
        ("command: launch", enc(&launch())),
        ("command: kill", enc(&kill())),
        ("command: pull", enc(&pull())),
        ("command: drain", enc(&drain())),
        ("command: reconcile", enc(&reconcile())),
        ("reply: accepted", enc(&reply_accepted())),
        ("reply: rejected", enc(&reply_rejected())),
        ("status", enc(&status())),
        ("ack", enc(&ack())),
        ("state (last will)", enc(&last_will())),
        ("command: read_logs", enc(&read_logs())),
        ("command: stop_logs", enc(&stop_logs())),
        ("logs: chunk", enc(&log_chunk())),
        ("logs: end", enc(&log_end())),
        ("stats", enc(&agent_stats())),
        ("progress", enc(&pull_progress())),
        ("command: undrain", enc(&undrain())),
    ]
}
