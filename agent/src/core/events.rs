//! The core's vocabulary: the events the drivers feed in and the actions they carry out.

use outpost_protocol::{ImageRef, ReadLogs, TaskId, TaskSpec, TopicKind};

use super::Capacity;

/// Something that happened.
#[derive(Debug, Clone)]
pub enum Event {
    /// Time passed; the driver sends this at [`Supervisor::next_deadline`].
    Tick,
    /// The broker connection is up (subscriptions in place).
    BrokerConnected {
        /// The local address of the connection (what the hello advertises without an
        /// `advertise_ip`), if the driver could tell.
        local_ip: Option<outpost_protocol::IpText>,
    },
    /// The broker connection is down.
    BrokerDisconnected,
    /// A payload arrived on the command topic.
    CommandReceived(Vec<u8>),
    /// A payload arrived on the ack topic.
    AckReceived(Vec<u8>),
    /// A new sample of the host's capacity.
    CapacityChanged(Capacity),
    /// The image of a launch attempt is present.
    ImageReady {
        /// Task.
        task_id: TaskId,
        /// Launch attempt the result belongs to.
        attempt: u32,
    },
    /// The image could not be pulled.
    ImageFailed {
        /// Task.
        task_id: TaskId,
        /// Launch attempt.
        attempt: u32,
        /// Why.
        message: String,
    },
    /// The container of a launch attempt was created.
    ContainerCreated {
        /// Task.
        task_id: TaskId,
        /// Launch attempt.
        attempt: u32,
        /// Docker's container id.
        container_id: String,
    },
    /// The container of a launch attempt started.
    ContainerStarted {
        /// Task.
        task_id: TaskId,
        /// Launch attempt.
        attempt: u32,
        /// The container's IP on its network.
        container_ip: Option<String>,
    },
    /// Creating or starting the container failed.
    LaunchFailed {
        /// Task.
        task_id: TaskId,
        /// Launch attempt.
        attempt: u32,
        /// Why.
        message: String,
    },
    /// A container ended (Docker's `die`).
    ContainerExited {
        /// Docker's container id.
        container_id: String,
        /// Its exit code.
        exit_code: i64,
        /// Whether the kernel OOM-killed it.
        oom_killed: bool,
    },
    /// A health probe reported.
    ProbeResult {
        /// Task.
        task_id: TaskId,
        /// Launch attempt the probe was for.
        attempt: u32,
        /// Index of the check.
        check: usize,
        /// Whether it passed.
        healthy: bool,
    },
    /// dockerd is (again) reachable: its containers must be re-listed.
    DockerConnected,
    /// The Outpost-labelled containers dockerd has.
    ContainersListed(Vec<ObservedContainer>),
    /// The TCP ports other processes on the host listen on (the driver reads them every few
    /// seconds, and at start): not handed out or offered.
    HostPortsListening(Vec<u16>),
    /// A container the agent asked dockerd to remove is gone.
    ContainerRemoved {
        /// Docker's id.
        container_id: String,
    },
    /// Listing the containers failed (dockerd answered an error or went away mid-call): the
    /// core asks again after a backoff.
    ContainerListFailed {
        /// dockerd's message.
        message: String,
    },
    /// A logs stream sent its last chunk (or was stopped).
    LogStreamEnded {
        /// The request's command id.
        request_id: String,
    },
}

/// A container as dockerd reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedContainer {
    /// Docker's id.
    pub container_id: String,
    /// The task id from its label.
    pub task_id: String,
    /// Whether it runs.
    pub running: bool,
    /// Its exit code, when it does not run.
    pub exit_code: i64,
    /// The host ports dockerd publishes for it.
    pub host_ports: Vec<u16>,
}

/// What a probe connects to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeTarget {
    /// HTTP(S) GET `http(s)://127.0.0.1:port{path}`; 200-399 passes.
    Http {
        /// HTTPS instead of HTTP.
        tls: bool,
        /// Host port.
        port: u16,
        /// Path.
        path: String,
        /// The answers that pass (empty: any of 200-399, as health checks).
        ready_statuses: Vec<u16>,
    },
    /// TCP connect to 127.0.0.1:port.
    Tcp {
        /// Host port.
        port: u16,
    },
    /// `sh -c command` inside the container; exit 0 passes.
    Command {
        /// The container.
        container_id: String,
        /// The command.
        command: String,
    },
}

/// Something the drivers must do.
#[derive(Debug, Clone)]
pub enum Action {
    /// Publish `payload` on this agent's topic of `kind` (QoS and retain per kind).
    Publish {
        /// Topic kind.
        kind: TopicKind,
        /// CBOR message.
        payload: Vec<u8>,
    },
    /// Make sure the image is present (pull when missing, or always when `force`); answer
    /// with [`Event::ImageReady`] or [`Event::ImageFailed`]. Without a task: a pull command.
    EnsureImage {
        /// The launch it is for, if any.
        launch: Option<(TaskId, u32)>,
        /// The app of that launch (its pull progress names it).
        app_id: Option<outpost_protocol::AppId>,
        /// Image reference.
        image: ImageRef,
        /// Pull even if present.
        force: bool,
    },
    /// Create the container; answer with [`Event::ContainerCreated`] or
    /// [`Event::LaunchFailed`].
    Create {
        /// Task.
        task_id: TaskId,
        /// Launch attempt.
        attempt: u32,
        /// What to run.
        spec: Box<TaskSpec>,
        /// Host ports, one per port mapping.
        host_ports: Vec<u16>,
    },
    /// Start the created container; answer with [`Event::ContainerStarted`] or
    /// [`Event::LaunchFailed`].
    Start {
        /// Task.
        task_id: TaskId,
        /// Launch attempt.
        attempt: u32,
        /// Container.
        container_id: String,
    },
    /// SIGTERM, then SIGKILL after `grace_s`; the exit arrives as [`Event::ContainerExited`].
    Stop {
        /// Container.
        container_id: String,
        /// Seconds between SIGTERM and SIGKILL.
        grace_s: u32,
    },
    /// Remove the container (forced) and its anonymous volumes.
    Remove {
        /// Container.
        container_id: String,
    },
    /// Probe a task's health within `timeout_ms`; answer with [`Event::ProbeResult`].
    Probe {
        /// Task.
        task_id: TaskId,
        /// Launch attempt.
        attempt: u32,
        /// Check index.
        check: usize,
        /// What to probe.
        target: ProbeTarget,
        /// Deadline for the probe.
        timeout_ms: u64,
    },
    /// List the Outpost-labelled containers; answer with [`Event::ContainersListed`].
    ListContainers,
    /// Send the container's log as asked, in chunks on the request's logs topic, the last one
    /// saying why it ended; answer with [`Event::LogStreamEnded`].
    StreamLogs {
        /// The request's command id (its topic level).
        request_id: String,
        /// The task's current container.
        container_id: String,
        /// What to send.
        request: ReadLogs,
    },
    /// End the stream of this request now (its last chunk says so); it still answers with
    /// [`Event::LogStreamEnded`].
    StopLogs {
        /// The request's command id.
        request_id: String,
    },
}
