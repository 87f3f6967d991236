//! The messages the agent and the bridge exchange, as plain Rust types.
//!
//! Every top-level message carries `version` ([`crate::PROTOCOL_VERSION`]). Lists and text are
//! bounded (the limits are the type aliases and `MAX_*` constants below), so a decoder never
//! allocates on behalf of a peer. Names follow Mesos and Marathon: offer, task, status update,
//! health check, reconcile.

use heapless::Vec;

use crate::text::Text;

/// An agent's id: `[A-Za-z0-9._-]`, at most 64 bytes (a topic level, so no `/`, `+` or `#`).
pub type AgentId = Text<64>;
/// A task's id (Marathon's `app.instance-uuid` style ids fit).
pub type TaskId = Text<128>;
/// A Marathon app id such as `/web/frontend`.
pub type AppId = Text<128>;
/// A command's id, unique per command; used for idempotency and to correlate the reply.
pub type CommandId = Text<64>;
/// A host name.
pub type Hostname = Text<253>;
/// A Docker image reference such as `registry:5000/team/app:1.2`.
pub type ImageRef = Text<255>;
/// A short name: attribute names, label and env keys, port names.
pub type Name = Text<64>;
/// A value of an attribute, label or environment variable.
pub type Value = Text<256>;
/// An absolute filesystem path on the host or in the container.
pub type FsPath = Text<256>;
/// A shell command (Marathon `cmd`, health-check command).
pub type Shell = Text<4096>;
/// One argument of Marathon `args`.
pub type Arg = Text<256>;
/// A human-readable message (status or rejection detail).
pub type Note = Text<512>;
/// The command of a COMMAND health check.
pub type CheckCommand = Text<1024>;
/// An IP address in text form (IPv4 or IPv6).
pub type IpText = Text<45>;
/// A version string such as `0.1.0`.
pub type VersionText = Text<32>;
/// An HTTP path for a health check.
pub type UrlPath = Text<256>;

/// Most attributes an agent reports.
pub const MAX_ATTRIBUTES: usize = 16;
/// Most port ranges in one offer.
pub const MAX_PORT_RANGES: usize = 16;
/// Most `args` of a task.
pub const MAX_ARGS: usize = 16;
/// Most environment variables of a task.
pub const MAX_ENV: usize = 32;
/// Most labels of a task.
pub const MAX_LABELS: usize = 16;
/// Most port mappings of a task (and host ports in a status).
pub const MAX_PORTS: usize = 16;
/// Most volumes of a task.
pub const MAX_VOLUMES: usize = 8;
/// Most health checks of a task.
pub const MAX_HEALTH_CHECKS: usize = 4;
/// HTTP statuses a readiness check may count as ready.
pub const MAX_READY_STATUSES: usize = 8;
/// Most task ids in one reconcile command.
pub const MAX_RECONCILE_TASKS: usize = 64;

/// A `name = value` pair: an agent attribute, a label or an environment variable.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct KeyValue {
    /// The key.
    pub name: Name,
    /// The value.
    pub value: Value,
}

/// An inclusive range of host ports, as Mesos `ranges`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    /// First port of the range.
    pub begin: u16,
    /// Last port of the range (inclusive).
    pub end: u16,
}

/// An amount of host resources: what is offered, or what is in use.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Resources {
    /// CPU shares, as Mesos `cpus`.
    pub cpus: f64,
    /// Memory in MiB, as Mesos `mem`.
    pub mem_mib: f64,
    /// Disk in MiB, as Mesos `disk`.
    pub disk_mib: f64,
    /// Host port ranges.
    pub ports: Vec<PortRange, MAX_PORT_RANGES>,
}

/// The first message of an agent after (re)connecting: who it is.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Hello {
    /// Protocol version.
    pub version: u16,
    /// The agent's id.
    pub agent_id: AgentId,
    /// The host's name.
    pub hostname: Hostname,
    /// The agent's build version.
    pub agent_version: VersionText,
    /// Agent attributes (rack, zone, ...), used by placement constraints.
    pub attributes: Vec<KeyValue, MAX_ATTRIBUTES>,
    /// When the agent process started, milliseconds since the Unix epoch.
    pub started_at_ms: u64,
    /// The IP address the agent is reached at (its `advertise_ip`, else the local address of
    /// its connection to the broker): Mesos pids and mesos-dns use it. Absent from agents
    /// older than this field.
    pub address: Option<IpText>,
}

/// What an agent can still run, and what it runs now.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Offer {
    /// Protocol version.
    pub version: u16,
    /// The offering agent.
    pub agent_id: AgentId,
    /// Grows with every offer of this agent; a receiver ignores an older one.
    pub seq: u64,
    /// Free resources: the host minus its reservation minus what tasks use.
    pub available: Resources,
    /// Resources used by running tasks.
    pub used: Resources,
    /// Agent attributes.
    pub attributes: Vec<KeyValue, MAX_ATTRIBUTES>,
}

/// A container network mode, as Docker and Marathon name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NetworkMode {
    /// Docker's bridge network with port NAT.
    #[default]
    Bridge,
    /// The host's network namespace.
    Host,
    /// No network.
    None,
}

/// A transport protocol of a port mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PortProtocol {
    /// TCP.
    #[default]
    Tcp,
    /// UDP.
    Udp,
}

/// One port published from the container to the host.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PortMapping {
    /// Port inside the container.
    pub container_port: u16,
    /// Port on the host; 0 means "pick one from the offered range".
    pub host_port: u16,
    /// Transport protocol.
    pub protocol: PortProtocol,
    /// Optional name (Marathon `portMappings[].name`).
    pub name: Option<Name>,
}

/// Whether a volume is mounted read-only or read-write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum VolumeMode {
    /// Read-only.
    #[default]
    Ro,
    /// Read-write.
    Rw,
}

/// A host path mounted into the container.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Volume {
    /// Path on the host.
    pub host_path: FsPath,
    /// Path inside the container.
    pub container_path: FsPath,
    /// RO or RW.
    pub mode: VolumeMode,
}

/// How a health check probes the task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HealthProtocol {
    /// HTTP GET, healthy on a 200-399 answer.
    #[default]
    Http,
    /// HTTPS GET, healthy on a 200-399 answer.
    Https,
    /// A TCP connect.
    Tcp,
    /// A command run inside the container; healthy on exit 0.
    Command,
}

/// A health check, with Marathon's semantics, run by the agent itself.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct HealthCheck {
    /// How to probe.
    pub protocol: HealthProtocol,
    /// HTTP(S) path.
    pub path: Option<UrlPath>,
    /// Index into the task's port mappings of the port to probe.
    pub port_index: u16,
    /// A fixed port to probe instead of `port_index`.
    pub port: Option<u16>,
    /// The command of a COMMAND check.
    pub command: Option<CheckCommand>,
    /// Failures are ignored for this long after start, until the first success.
    pub grace_period_s: u32,
    /// Seconds between probes.
    pub interval_s: u32,
    /// Seconds before a probe counts as failed.
    pub timeout_s: u32,
    /// Consecutive failures after which the task is killed (0: never).
    pub max_consecutive_failures: u32,
    /// Seconds to wait after start before the first probe.
    pub delay_s: u32,
}

/// Marathon's readiness check, run by the agent: an HTTP(S) GET every `interval_s` from the
/// task's start until one answers a status of `ready_statuses`; then the task is ready (a
/// status update with `ready`) and the check stops. A failure never kills the task.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ReadinessCheck {
    /// HTTPS instead of HTTP.
    pub tls: bool,
    /// The path (`/` when left out).
    pub path: Option<UrlPath>,
    /// Index into the task's port mappings of the port to probe.
    pub port_index: u16,
    /// Seconds between probes.
    pub interval_s: u32,
    /// Seconds before a probe counts as failed.
    pub timeout_s: u32,
    /// The answers that mean ready (Marathon's `httpStatusCodesForReady`; empty: 200).
    pub ready_statuses: Vec<u16, MAX_READY_STATUSES>,
}

/// When the agent restarts a task whose container ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RestartMode {
    /// Always (Marathon apps).
    #[default]
    Always,
    /// Only after a failure (non-zero exit or failed health).
    OnFailure,
    /// Never (Mesos tasks: the framework decides).
    Never,
}

/// The restart policy and its backoff, as Marathon's `backoffSeconds`, `backoffFactor` and
/// `maxLaunchDelaySeconds`.
#[derive(Debug, Clone, PartialEq)]
pub struct RestartPolicy {
    /// When to restart.
    pub mode: RestartMode,
    /// First delay in seconds.
    pub backoff_s: f64,
    /// Each further delay is the previous times this factor.
    pub backoff_factor: f64,
    /// Upper bound of the delay in seconds.
    pub max_delay_s: f64,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        Self {
            mode: RestartMode::Always,
            backoff_s: 1.0,
            backoff_factor: 1.15,
            max_delay_s: 300.0,
        }
    }
}

/// What one task asks of its container: the Marathon app or Mesos TaskInfo of one instance.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TaskSpec {
    /// The task's id.
    pub task_id: TaskId,
    /// The app it belongs to, if any.
    pub app_id: Option<AppId>,
    /// The image to run.
    pub image: ImageRef,
    /// Pull even if the image is present.
    pub force_pull: bool,
    /// Shell command (`sh -c`), as Marathon `cmd`.
    pub cmd: Option<Shell>,
    /// Arguments, as Marathon `args` (appended to the image's entrypoint).
    pub args: Vec<Arg, MAX_ARGS>,
    /// Environment variables.
    pub env: Vec<KeyValue, MAX_ENV>,
    /// Labels, put on the container.
    pub labels: Vec<KeyValue, MAX_LABELS>,
    /// CPU shares.
    pub cpus: f64,
    /// Memory limit in MiB.
    pub mem_mib: f64,
    /// Disk in MiB (accounted, not enforced).
    pub disk_mib: f64,
    /// Network mode.
    pub network: NetworkMode,
    /// Port mappings (BRIDGE) or ports to reserve (HOST).
    pub port_mappings: Vec<PortMapping, MAX_PORTS>,
    /// Volumes.
    pub volumes: Vec<Volume, MAX_VOLUMES>,
    /// Health checks.
    pub health_checks: Vec<HealthCheck, MAX_HEALTH_CHECKS>,
    /// Seconds between SIGTERM and SIGKILL on kill.
    pub kill_grace_period_s: u32,
    /// Restart policy and backoff.
    pub restart: RestartPolicy,
    /// Run the container privileged (Docker's `--privileged`); agents refuse it unless their
    /// policy allows it.
    pub privileged: bool,
    /// MiB per container log file (Docker's `log-opt max-size`), when the app asks for other
    /// than the agent's default; agents refuse more than their `[logs]` maximum.
    pub log_max_size_mib: Option<u32>,
    /// Container log files kept (`log-opt max-file`), when the app asks for other than the
    /// agent's default; agents refuse more than their `[logs]` maximum.
    pub log_max_files: Option<u32>,
    /// Marathon's readiness check, when the app has one.
    pub readiness: Option<ReadinessCheck>,
}

/// Which tasks a drain kills.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DrainPolicy {
    /// Stop accepting launches; leave running tasks alone.
    #[default]
    KeepTasks,
    /// Stop accepting launches and kill every task.
    KillAll,
}

/// Kill a task: SIGTERM, then SIGKILL after the grace period.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct KillTask {
    /// The task to kill.
    pub task_id: TaskId,
    /// Overrides the task's own grace period.
    pub grace_period_s: Option<u32>,
}

/// Pull an image ahead of a launch.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PullImage {
    /// The image.
    pub image: ImageRef,
    /// Pull even if the image is present.
    pub force: bool,
}

/// Stop accepting launches.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Drain {
    /// What happens to running tasks.
    pub policy: DrainPolicy,
}

/// Report the current status of the listed tasks, or of all when the list is empty.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Reconcile {
    /// Task ids; empty means all.
    pub task_ids: Vec<TaskId, MAX_RECONCILE_TASKS>,
}

/// Most bytes of container output in one [`LogChunk`]: with its envelope far under the
/// broker's 128 KiB packet limit, and small enough that a chunk is a few milliseconds of a
/// slow uplink.
pub const MAX_LOG_CHUNK: usize = 16 * 1024;
/// The longest a logs request may follow its container, in seconds; a reader that wants more
/// asks again with `since_ms`.
pub const MAX_FOLLOW_S: u32 = 3600;

/// One of a container's output streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogStream {
    /// Standard output.
    #[default]
    Stdout,
    /// Standard error.
    Stderr,
}

/// Which of a container's output streams a logs request wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogStreams {
    /// Both, interleaved as the container wrote them.
    #[default]
    Both,
    /// Standard output only.
    Stdout,
    /// Standard error only.
    Stderr,
}

/// Read what a task's container printed (`docker logs`). The agent answers with
/// [`LogChunk`]s on the request's own topic (`outpost/v1/agents/{agent}/logs/{command_id}`,
/// [`crate::topics::logs_topic`]), the last one carrying `end`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ReadLogs {
    /// The task.
    pub task_id: TaskId,
    /// Which streams.
    pub streams: LogStreams,
    /// Only the last this many lines (all when absent).
    pub tail: Option<u32>,
    /// Only lines written at or after this time, milliseconds since the Unix epoch.
    pub since_ms: Option<u64>,
    /// Keep sending new lines for this many seconds (0: what is there now, then end); at most
    /// [`MAX_FOLLOW_S`]. A follow also ends when the container stops.
    pub follow_s: u32,
}

/// End a logs stream early (its reader went away or fell behind).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StopLogs {
    /// The command id of the [`ReadLogs`] request.
    pub request_id: CommandId,
}

/// What a command asks the agent to do.
#[derive(Debug, Clone, PartialEq)]
pub enum CommandKind {
    /// Launch a task.
    Launch(TaskSpec),
    /// Kill a task.
    Kill(KillTask),
    /// Pull an image.
    Pull(PullImage),
    /// Stop accepting launches.
    Drain(Drain),
    /// Report task statuses.
    Reconcile(Reconcile),
    /// Send a task's container log.
    ReadLogs(ReadLogs),
    /// End a logs stream.
    StopLogs(StopLogs),
    /// End a drain: accept launches again.
    Undrain,
}

/// The starting value a decoder fills in; a harmless "reconcile all".
impl Default for CommandKind {
    fn default() -> Self {
        Self::Reconcile(Reconcile::default())
    }
}

/// A command from the bridge to one agent.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Command {
    /// Protocol version.
    pub version: u16,
    /// Unique id: a command seen twice is executed once.
    pub command_id: CommandId,
    /// When the bridge issued it, milliseconds since the Unix epoch.
    pub issued_at_ms: u64,
    /// What to do.
    pub kind: CommandKind,
    /// The agent it is for (a signed command names it, so it cannot be replayed to another).
    pub agent_id: Option<AgentId>,
    /// Ed25519 signature by the bridge over [`Command::signed_bytes`].
    pub signature: Option<Signature>,
    /// The leadership epoch of the bridge that sent it (bridges with `[ha]`; a number that
    /// grows with every election). An agent refuses a command whose epoch is older than the
    /// newest it has seen ([`RejectCode::StaleEpoch`]): a deposed leader commands no one.
    /// Absent from a bridge without `[ha]` and from older bridges.
    pub epoch: Option<u64>,
}

impl Command {
    /// What the signature covers: the command's canonical CBOR with the signature left out
    /// (every field this protocol version knows, keys in table order). Takes `&mut` only to
    /// lift the signature out while encoding, instead of copying a command that may hold a
    /// whole task spec; it is put back before this returns.
    #[cfg(feature = "std")]
    pub fn signed_bytes(&mut self) -> std::vec::Vec<u8> {
        let signature = self.signature.take();
        let bytes = crate::codec::encode_to_vec(self);
        self.signature = signature;
        bytes
    }
}

/// An Ed25519 signature (64 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Signature(pub [u8; 64]);

impl Default for Signature {
    fn default() -> Self {
        Self([0; 64])
    }
}

/// Why a command was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RejectCode {
    /// The payload was not a decodable command.
    #[default]
    Undecodable,
    /// A field was missing, malformed or out of range.
    InvalidField,
    /// A field was longer than its limit.
    FieldTooLong,
    /// A requested host port is taken or outside the offered range.
    PortUnavailable,
    /// The task asks for more than the agent offers.
    InsufficientResources,
    /// No such task.
    UnknownTask,
    /// A task with this id already runs.
    DuplicateTask,
    /// The agent is draining and accepts no launches.
    Draining,
    /// The agent could not persist the command (e.g. disk full).
    StorageFailure,
    /// The protocol version is not supported.
    UnsupportedVersion,
    /// The command's signature is missing or does not verify with a trusted key, or the
    /// command is for another agent.
    Unauthenticated,
    /// The command was seen before, or is older than the replay window: not executed again.
    Replay,
    /// The command comes from a bridge whose leadership epoch is older than the newest this
    /// agent has seen: another bridge leads now.
    StaleEpoch,
    /// The agent is at its limit of concurrent work of this kind (logs streams); try again
    /// later.
    Busy,
}

/// Why a command was rejected: a code for machines, a message for people.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Rejection {
    /// Machine-readable reason.
    pub code: RejectCode,
    /// Human-readable detail naming the field and the value.
    pub message: Note,
}

/// Whether a command was accepted.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Outcome {
    /// Accepted; its effects follow as status updates.
    #[default]
    Accepted,
    /// Rejected.
    Rejected(Rejection),
}

/// The agent's answer to one command.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CommandReply {
    /// Protocol version.
    pub version: u16,
    /// The command answered (empty when the command id itself could not be decoded).
    pub command_id: CommandId,
    /// Accepted or rejected.
    pub outcome: Outcome,
}

/// A Mesos task state; the numbers are Mesos's own `TaskState` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum TaskState {
    /// TASK_STAGING (6): accepted, not yet started (image pull).
    Staging,
    /// TASK_STARTING (0): container created, starting.
    Starting,
    /// TASK_RUNNING (1).
    Running,
    /// TASK_KILLING (8): kill requested, grace period running.
    Killing,
    /// TASK_FINISHED (2): exited 0.
    Finished,
    /// TASK_FAILED (3): exited non-zero or could not start.
    Failed,
    /// TASK_KILLED (4).
    Killed,
    /// TASK_ERROR (7): the task description was invalid.
    Error,
    /// TASK_LOST (5).
    Lost,
    /// TASK_DROPPED (9).
    Dropped,
    /// TASK_UNREACHABLE (10).
    Unreachable,
    /// TASK_GONE (11).
    Gone,
    /// TASK_GONE_BY_OPERATOR (12).
    GoneByOperator,
    /// TASK_UNKNOWN (13).
    #[default]
    Unknown,
}

impl TaskState {
    /// Every state, in declaration order.
    pub const ALL: [TaskState; 14] = [
        Self::Staging,
        Self::Starting,
        Self::Running,
        Self::Killing,
        Self::Finished,
        Self::Failed,
        Self::Killed,
        Self::Error,
        Self::Lost,
        Self::Dropped,
        Self::Unreachable,
        Self::Gone,
        Self::GoneByOperator,
        Self::Unknown,
    ];

    /// Mesos's numeric value of the state.
    pub fn mesos_number(self) -> u8 {
        match self {
            Self::Starting => 0,
            Self::Running => 1,
            Self::Finished => 2,
            Self::Failed => 3,
            Self::Killed => 4,
            Self::Lost => 5,
            Self::Staging => 6,
            Self::Error => 7,
            Self::Killing => 8,
            Self::Dropped => 9,
            Self::Unreachable => 10,
            Self::Gone => 11,
            Self::GoneByOperator => 12,
            Self::Unknown => 13,
        }
    }

    /// The state with Mesos's numeric value `n`.
    pub fn from_mesos_number(n: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.mesos_number() == n)
    }

    /// Mesos's name, e.g. `TASK_RUNNING`.
    pub fn mesos_name(self) -> &'static str {
        match self {
            Self::Staging => "TASK_STAGING",
            Self::Starting => "TASK_STARTING",
            Self::Running => "TASK_RUNNING",
            Self::Killing => "TASK_KILLING",
            Self::Finished => "TASK_FINISHED",
            Self::Failed => "TASK_FAILED",
            Self::Killed => "TASK_KILLED",
            Self::Error => "TASK_ERROR",
            Self::Lost => "TASK_LOST",
            Self::Dropped => "TASK_DROPPED",
            Self::Unreachable => "TASK_UNREACHABLE",
            Self::Gone => "TASK_GONE",
            Self::GoneByOperator => "TASK_GONE_BY_OPERATOR",
            Self::Unknown => "TASK_UNKNOWN",
        }
    }

    /// Whether the task can never run again in this state.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Self::Finished
                | Self::Failed
                | Self::Killed
                | Self::Error
                | Self::Lost
                | Self::Dropped
                | Self::Gone
                | Self::GoneByOperator
        )
    }
}

/// Why a status changed; each maps to a Mesos `REASON_*` name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// REASON_COMMAND_EXECUTOR_FAILED: the container exited non-zero.
    CommandExecutorFailed,
    /// REASON_CONTAINER_LAUNCH_FAILED: create/start failed.
    ContainerLaunchFailed,
    /// REASON_CONTAINER_LIMITATION_MEMORY: OOM-killed.
    ContainerLimitationMemory,
    /// REASON_TASK_HEALTH_CHECK_STATUS_UPDATED.
    HealthCheckStatusUpdated,
    /// REASON_TASK_UNHEALTHY_CHECK: killed after too many failed checks.
    TaskUnhealthyCheck,
    /// REASON_RECONCILIATION: a status sent in answer to reconcile.
    Reconciliation,
    /// REASON_TASK_INVALID.
    TaskInvalid,
    /// REASON_TASK_KILLED_DURING_LAUNCH.
    TaskKilledDuringLaunch,
    /// REASON_AGENT_RESTARTED: seen after an agent restart.
    AgentRestarted,
    /// REASON_IMAGE_PULL_FAILED (an Outpost-specific detail of CONTAINER_LAUNCH_FAILED).
    ImagePullFailed,
    /// REASON_EXECUTOR_TERMINATED: the container vanished.
    ExecutorTerminated,
}

impl Reason {
    /// Mesos's name of the reason.
    pub fn mesos_name(self) -> &'static str {
        match self {
            Self::CommandExecutorFailed => "REASON_COMMAND_EXECUTOR_FAILED",
            Self::ContainerLaunchFailed => "REASON_CONTAINER_LAUNCH_FAILED",
            Self::ContainerLimitationMemory => "REASON_CONTAINER_LIMITATION_MEMORY",
            Self::HealthCheckStatusUpdated => "REASON_TASK_HEALTH_CHECK_STATUS_UPDATED",
            Self::TaskUnhealthyCheck => "REASON_TASK_UNHEALTHY_CHECK",
            Self::Reconciliation => "REASON_RECONCILIATION",
            Self::TaskInvalid => "REASON_TASK_INVALID",
            Self::TaskKilledDuringLaunch => "REASON_TASK_KILLED_DURING_LAUNCH",
            Self::AgentRestarted => "REASON_AGENT_RESTARTED",
            Self::ImagePullFailed => "REASON_CONTAINER_LAUNCH_FAILED",
            Self::ExecutorTerminated => "REASON_EXECUTOR_TERMINATED",
        }
    }
}

/// A status update of one task.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TaskStatus {
    /// Protocol version.
    pub version: u16,
    /// The reporting agent.
    pub agent_id: AgentId,
    /// The task.
    pub task_id: TaskId,
    /// Unique per update; the bridge acknowledges it and drops duplicates by it.
    pub uuid: [u8; 16],
    /// The new state.
    pub state: TaskState,
    /// Why.
    pub reason: Option<Reason>,
    /// Detail for people.
    pub message: Option<Note>,
    /// Health, when the task has health checks and a result is known.
    pub healthy: Option<bool>,
    /// When the change happened, milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
    /// The container's exit code, once it ended.
    pub exit_code: Option<i32>,
    /// Host ports, in the order of the task's port mappings.
    pub host_ports: Vec<u16, MAX_PORTS>,
    /// The container's IP address on its network.
    pub container_ip: Option<IpText>,
    /// With a readiness check: whether it has passed since the task started (`Some(true)`
    /// from the first pass on).
    pub ready: Option<bool>,
}

/// The bridge has stored the status update with this uuid; the agent stops re-sending it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StatusAck {
    /// Protocol version.
    pub version: u16,
    /// The task the update was about.
    pub task_id: TaskId,
    /// The acknowledged update's uuid.
    pub uuid: [u8; 16],
}

/// An agent's liveness.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Liveness {
    /// Connected and accepting work.
    Online,
    /// Connected, draining: accepts no launches.
    Draining,
    /// Gone: published by the broker as the agent's last will, or by the agent on clean exit.
    #[default]
    Offline,
}

/// The retained liveness message of an agent (its MQTT last will says [`Liveness::Offline`]).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AgentState {
    /// Protocol version.
    pub version: u16,
    /// The agent.
    pub agent_id: AgentId,
    /// Online, draining or offline.
    pub liveness: Liveness,
    /// The agent's start time, telling one run of the agent from the next.
    pub started_at_ms: u64,
}

/// Bytes of container output: at most [`MAX_LOG_CHUNK`], not necessarily UTF-8 (a CBOR byte
/// string on the wire).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LogBytes(pub Vec<u8, MAX_LOG_CHUNK>);

/// A piece of a task's container log, answering a [`ReadLogs`] command on its own topic.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LogChunk {
    /// Protocol version.
    pub version: u16,
    /// The sending agent.
    pub agent_id: AgentId,
    /// The command id of the request.
    pub request_id: CommandId,
    /// 0, 1, 2, ... per request: a gap tells the reader that chunks were lost.
    pub seq: u32,
    /// Which stream `data` was written to.
    pub stream: LogStream,
    /// The output, whole lines where they fit.
    pub data: LogBytes,
    /// Set on the last chunk of the request: why it ends (`end of log`, `container stopped`,
    /// `follow time over`, `stopped by the bridge`, or an error from dockerd).
    pub end: Option<Note>,
}

/// An agent's health figures for the fleet's monitoring, sent at its offer interval: what the
/// bridge shows per agent at `/metrics/prometheus`, so a fleet behind NAT is watched from one
/// scrape target.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AgentStats {
    /// Protocol version.
    pub version: u16,
    /// The agent.
    pub agent_id: AgentId,
    /// When it was taken, milliseconds since the Unix epoch (the agent's clock).
    pub timestamp_ms: u64,
    /// Status updates held unacknowledged.
    pub outbox_depth: u32,
    /// Container restarts since the agent started.
    pub restarts: u32,
    /// Mean health probe time over the last interval, microseconds (0: no probe ran).
    pub probe_latency_us: u32,
    /// Containers the agent supervises.
    pub containers: u32,
    /// The agent process's resident memory, KiB.
    pub rss_kib: u64,
    /// Whether dockerd answered the agent's last call.
    pub dockerd_reachable: bool,
}

/// How far an image pull has come, sent by the agent while it pulls (a few times a second at
/// most) and once at the end (`done`, or `error`): the bridge relays it on its event stream.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PullProgress {
    /// Protocol version.
    pub version: u16,
    /// The pulling agent.
    pub agent_id: AgentId,
    /// The image.
    pub image: ImageRef,
    /// The app of the launch the pull is for (none for a pull command).
    pub app_id: Option<AppId>,
    /// The task of the launch the pull is for (none for a pull command).
    pub task_id: Option<TaskId>,
    /// Layers downloaded and extracted (or already present).
    pub layers_done: u32,
    /// Layers of the image seen so far.
    pub layers_total: u32,
    /// Bytes downloaded of the layers whose size is known.
    pub bytes_done: u64,
    /// Bytes to download of the layers whose size is known.
    pub bytes_total: u64,
    /// The pull is over (successfully unless `error` is set).
    pub done: bool,
    /// Why the pull failed.
    pub error: Option<Note>,
}
