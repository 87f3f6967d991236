//! Mesos v1 scheduler calls as typed values: the JSON a framework POSTs to
//! `/api/v1/scheduler`, parsed once at the HTTP edge ([`Call::parse`]) with serde, so the core
//! works on fields, not on `serde_json::Value`. Field names are Mesos's; fields Outpost does not
//! use are ignored, as a master ignores what it does not know.

use serde::Deserialize;

use super::CallError;

/// `{"value": "..."}`, Mesos's id wrapper.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Id {
    /// The id.
    pub value: String,
}

/// A scheduler call.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Call {
    /// Opens the event stream (a new framework, or one coming back with its id).
    Subscribe {
        /// The framework.
        subscribe: Subscribe,
        /// Set when re-subscribing.
        #[serde(default)]
        framework_id: Option<Id>,
    },
    /// Launches tasks on offered resources.
    Accept {
        /// The framework.
        framework_id: Id,
        /// What it accepts.
        accept: Accept,
    },
    /// Returns offers.
    Decline {
        /// The framework.
        framework_id: Id,
        /// What it declines.
        decline: Decline,
    },
    /// Offers again, filters cleared.
    Revive {
        /// The framework.
        framework_id: Id,
    },
    /// No offers until REVIVE.
    Suppress {
        /// The framework.
        framework_id: Id,
    },
    /// Kills a task.
    Kill {
        /// The framework.
        framework_id: Id,
        /// Which task.
        kill: Kill,
    },
    /// Acknowledges a status update.
    Acknowledge {
        /// The framework.
        framework_id: Id,
        /// Which update.
        acknowledge: Acknowledge,
    },
    /// Asks for the state of tasks (all of them when none is listed).
    Reconcile {
        /// The framework.
        framework_id: Id,
        /// Which tasks.
        #[serde(default)]
        reconcile: Reconcile,
    },
    /// The framework leaves: its tasks are killed.
    Teardown {
        /// The framework.
        framework_id: Id,
    },
    /// A message for an executor (the command executor ignores it).
    Message {
        /// The framework.
        framework_id: Id,
        /// The message.
        message: Message,
    },
    /// Shuts an executor down (the command executor has nothing to shut down).
    Shutdown {
        /// The framework.
        framework_id: Id,
        /// Which executor.
        shutdown: Shutdown,
    },
    /// Asks for resources (the allocator offers what there is anyway).
    Request {
        /// The framework.
        framework_id: Id,
    },
}

impl Call {
    /// Parses a call's JSON; an error names the path of the field that is wrong.
    pub fn parse(body: &[u8]) -> Result<Self, CallError> {
        let mut de = serde_json::Deserializer::from_slice(body);
        serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            let at = if path == "." || path.is_empty() {
                String::new()
            } else {
                format!(" at {path}")
            };
            CallError {
                status: 400,
                message: format!("Failed to validate scheduler::Call{at}: {inner}"),
            }
        })
    }

    /// The framework the call is for (`None` for a first SUBSCRIBE).
    pub fn framework_id(&self) -> Option<&str> {
        match self {
            Call::Subscribe {
                subscribe,
                framework_id,
            } => framework_id
                .as_ref()
                .or(subscribe.framework_info.id.as_ref())
                .map(|i| i.value.as_str()),
            Call::Accept { framework_id, .. }
            | Call::Decline { framework_id, .. }
            | Call::Revive { framework_id }
            | Call::Suppress { framework_id }
            | Call::Kill { framework_id, .. }
            | Call::Acknowledge { framework_id, .. }
            | Call::Reconcile { framework_id, .. }
            | Call::Teardown { framework_id }
            | Call::Message { framework_id, .. }
            | Call::Shutdown { framework_id, .. }
            | Call::Request { framework_id } => Some(&framework_id.value),
        }
    }
}

/// SUBSCRIBE's body.
#[derive(Debug, Clone, Deserialize)]
pub struct Subscribe {
    /// Who subscribes.
    pub framework_info: FrameworkInfo,
}

/// A framework's description.
#[derive(Debug, Clone, Deserialize)]
pub struct FrameworkInfo {
    /// Its name.
    #[serde(default)]
    pub name: String,
    /// Its id, when it re-subscribes.
    #[serde(default)]
    pub id: Option<Id>,
    /// How long its tasks outlive a lost connection, in seconds.
    #[serde(default)]
    pub failover_timeout: Option<f64>,
    /// PARTITION_AWARE and others.
    #[serde(default)]
    pub capabilities: Vec<Capability>,
}

impl FrameworkInfo {
    /// Whether it has the PARTITION_AWARE capability.
    pub fn partition_aware(&self) -> bool {
        self.capabilities
            .iter()
            .any(|c| c.kind == "PARTITION_AWARE")
    }
}

/// A framework capability.
#[derive(Debug, Clone, Deserialize)]
pub struct Capability {
    /// Its name.
    #[serde(rename = "type", default)]
    pub kind: String,
}

/// DECLINE's and ACCEPT's filters.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Filters {
    /// How long the agents of the offers are not offered again.
    #[serde(default)]
    pub refuse_seconds: Option<f64>,
}

/// ACCEPT's body.
#[derive(Debug, Clone, Deserialize)]
pub struct Accept {
    /// The offers used.
    pub offer_ids: Vec<Id>,
    /// What to do with them.
    #[serde(default)]
    pub operations: Vec<Operation>,
    /// Filters for what is left.
    #[serde(default)]
    pub filters: Filters,
}

/// One operation of an ACCEPT (LAUNCH and LAUNCH_GROUP are carried out; others are ignored).
#[derive(Debug, Clone, Deserialize)]
pub struct Operation {
    /// LAUNCH, LAUNCH_GROUP, ...
    #[serde(rename = "type")]
    pub kind: String,
    /// LAUNCH's tasks.
    #[serde(default)]
    pub launch: Option<Launch>,
    /// LAUNCH_GROUP's tasks.
    #[serde(default)]
    pub launch_group: Option<LaunchGroup>,
}

impl Operation {
    /// The tasks it launches.
    pub fn tasks(&self) -> &[TaskInfo] {
        match self.kind.as_str() {
            "LAUNCH" => self.launch.as_ref().map_or(&[], |l| &l.task_infos),
            "LAUNCH_GROUP" => self
                .launch_group
                .as_ref()
                .map_or(&[], |g| &g.task_group.tasks),
            _ => &[],
        }
    }
}

/// LAUNCH.
#[derive(Debug, Clone, Deserialize)]
pub struct Launch {
    /// The tasks.
    #[serde(default)]
    pub task_infos: Vec<TaskInfo>,
}

/// LAUNCH_GROUP.
#[derive(Debug, Clone, Deserialize)]
pub struct LaunchGroup {
    /// The group.
    pub task_group: TaskGroup,
}

/// A task group.
#[derive(Debug, Clone, Deserialize)]
pub struct TaskGroup {
    /// Its tasks.
    #[serde(default)]
    pub tasks: Vec<TaskInfo>,
}

/// A task to launch.
#[derive(Debug, Clone, Deserialize)]
pub struct TaskInfo {
    /// Its name.
    #[serde(default)]
    pub name: String,
    /// Its id.
    pub task_id: Id,
    /// The agent (the offers' agent is used).
    #[serde(default)]
    pub agent_id: Option<Id>,
    /// cpus, mem, disk, ports.
    #[serde(default)]
    pub resources: Vec<Resource>,
    /// What to run.
    #[serde(default)]
    pub command: CommandInfo,
    /// The container (Docker).
    #[serde(default)]
    pub container: Option<ContainerInfo>,
    /// Its health check.
    #[serde(default)]
    pub health_check: Option<HealthCheck>,
    /// How it is killed.
    #[serde(default)]
    pub kill_policy: Option<KillPolicy>,
}

/// A resource: a scalar or ranges.
#[derive(Debug, Clone, Deserialize)]
pub struct Resource {
    /// cpus, mem, disk, ports.
    pub name: String,
    /// A scalar's value.
    #[serde(default)]
    pub scalar: Option<Scalar>,
    /// Ranges.
    #[serde(default)]
    pub ranges: Option<Ranges>,
}

/// A scalar resource's value.
#[derive(Debug, Clone, Deserialize)]
pub struct Scalar {
    /// The value.
    pub value: f64,
}

/// A ranges resource.
#[derive(Debug, Clone, Deserialize)]
pub struct Ranges {
    /// The ranges.
    #[serde(default)]
    pub range: Vec<Range>,
}

/// One range, both ends included.
#[derive(Debug, Clone, Deserialize)]
pub struct Range {
    /// First.
    pub begin: u64,
    /// Last.
    pub end: u64,
}

/// Sum of the scalar resources named `name` (0 when there are none, never -0).
pub fn scalar(resources: &[Resource], name: &str) -> f64 {
    resources
        .iter()
        .filter(|r| r.name == name)
        .filter_map(|r| r.scalar.as_ref().map(|s| s.value))
        .fold(0.0, |a, b| a + b)
}

/// The ranges of the resources named `name`.
pub fn ranges(resources: &[Resource], name: &str) -> Vec<(u64, u64)> {
    resources
        .iter()
        .filter(|r| r.name == name)
        .flat_map(|r| r.ranges.iter().flat_map(|x| &x.range))
        .map(|r| (r.begin, r.end))
        .collect()
}

/// A command.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct CommandInfo {
    /// Run `value` with `/bin/sh -c` (default true), else `arguments`.
    #[serde(default)]
    pub shell: Option<bool>,
    /// The shell command.
    #[serde(default)]
    pub value: Option<String>,
    /// The arguments when not a shell command.
    #[serde(default)]
    pub arguments: Vec<String>,
    /// Environment variables.
    #[serde(default)]
    pub environment: Option<Environment>,
}

/// Environment variables.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Environment {
    /// The variables.
    #[serde(default)]
    pub variables: Vec<Variable>,
}

/// One variable.
#[derive(Debug, Clone, Deserialize)]
pub struct Variable {
    /// Name.
    #[serde(default)]
    pub name: String,
    /// Value.
    #[serde(default)]
    pub value: String,
}

/// A container.
#[derive(Debug, Clone, Deserialize)]
pub struct ContainerInfo {
    /// DOCKER (MESOS containers are not supported).
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    /// The Docker container.
    #[serde(default)]
    pub docker: Option<DockerInfo>,
}

/// A Docker container.
#[derive(Debug, Clone, Deserialize)]
pub struct DockerInfo {
    /// The image.
    pub image: String,
    /// HOST (default), BRIDGE or NONE.
    #[serde(default)]
    pub network: Option<String>,
    /// Privileged (the agent's policy decides).
    #[serde(default)]
    pub privileged: bool,
    /// Pull even when the image is present.
    #[serde(default)]
    pub force_pull_image: bool,
    /// BRIDGE port mappings.
    #[serde(default)]
    pub port_mappings: Vec<DockerPortMapping>,
}

/// A Docker port mapping.
#[derive(Debug, Clone, Deserialize)]
pub struct DockerPortMapping {
    /// Host port (from the offer's ports).
    #[serde(default)]
    pub host_port: Option<u64>,
    /// Container port.
    #[serde(default)]
    pub container_port: u64,
    /// tcp (default) or udp.
    #[serde(default)]
    pub protocol: Option<String>,
}

/// A Mesos health check.
#[derive(Debug, Clone, Deserialize)]
pub struct HealthCheck {
    /// HTTP, TCP or COMMAND (the default).
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    /// An HTTP check.
    #[serde(default)]
    pub http: Option<HttpCheck>,
    /// A TCP check.
    #[serde(default)]
    pub tcp: Option<TcpCheck>,
    /// A command check.
    #[serde(default)]
    pub command: Option<CommandInfo>,
    /// Before the first check.
    #[serde(default)]
    pub delay_seconds: Option<f64>,
    /// Between checks.
    #[serde(default)]
    pub interval_seconds: Option<f64>,
    /// For one check.
    #[serde(default)]
    pub timeout_seconds: Option<f64>,
    /// Failures in a row that make it unhealthy.
    #[serde(default)]
    pub consecutive_failures: Option<u64>,
    /// Failures not counted after the start.
    #[serde(default)]
    pub grace_period_seconds: Option<f64>,
}

/// An HTTP check.
#[derive(Debug, Clone, Deserialize)]
pub struct HttpCheck {
    /// The container port.
    #[serde(default)]
    pub port: Option<u64>,
    /// The path.
    #[serde(default)]
    pub path: Option<String>,
    /// http (default) or https.
    #[serde(default)]
    pub scheme: Option<String>,
}

/// A TCP check.
#[derive(Debug, Clone, Deserialize)]
pub struct TcpCheck {
    /// The container port.
    #[serde(default)]
    pub port: Option<u64>,
}

/// How a task is killed.
#[derive(Debug, Clone, Deserialize)]
pub struct KillPolicy {
    /// Between SIGTERM and SIGKILL.
    #[serde(default)]
    pub grace_period: Option<DurationInfo>,
}

/// A Mesos duration.
#[derive(Debug, Clone, Deserialize)]
pub struct DurationInfo {
    /// Nanoseconds.
    pub nanoseconds: i64,
}

/// DECLINE's body.
#[derive(Debug, Clone, Deserialize)]
pub struct Decline {
    /// The offers.
    pub offer_ids: Vec<Id>,
    /// Filters.
    #[serde(default)]
    pub filters: Filters,
}

/// KILL's body.
#[derive(Debug, Clone, Deserialize)]
pub struct Kill {
    /// The task.
    pub task_id: Id,
    /// Its agent, if the framework knows.
    #[serde(default)]
    pub agent_id: Option<Id>,
}

/// ACKNOWLEDGE's body.
#[derive(Debug, Clone, Deserialize)]
pub struct Acknowledge {
    /// The update's uuid, base64.
    pub uuid: String,
}

/// RECONCILE's body.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Reconcile {
    /// The tasks asked about (none: every task of the framework).
    #[serde(default)]
    pub tasks: Vec<ReconcileTask>,
}

/// A task RECONCILE asks about.
#[derive(Debug, Clone, Deserialize)]
pub struct ReconcileTask {
    /// The task.
    pub task_id: Id,
    /// Its agent.
    #[serde(default)]
    pub agent_id: Option<Id>,
}

/// MESSAGE's body.
#[derive(Debug, Clone, Deserialize)]
pub struct Message {
    /// The agent.
    pub agent_id: Id,
    /// The executor.
    pub executor_id: Id,
    /// The bytes, base64.
    pub data: String,
}

/// SHUTDOWN's body.
#[derive(Debug, Clone, Deserialize)]
pub struct Shutdown {
    /// The executor.
    pub executor_id: Id,
    /// Its agent.
    #[serde(default)]
    pub agent_id: Option<Id>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_call_names_the_field() {
        let e = Call::parse(br#"{"type":"MESSAGE","framework_id":{"value":"f"},"message":{}}"#)
            .unwrap_err();
        assert_eq!(e.status, 400);
        assert!(e.message.contains("agent_id"), "{}", e.message);
        let e = Call::parse(br#"{"type":"BOGUS"}"#).unwrap_err();
        assert!(e.message.contains("BOGUS"), "{}", e.message);
        let e = Call::parse(br#"{"framework_id":{"value":"f"}}"#).unwrap_err();
        assert!(e.message.contains("type"), "{}", e.message);
        let e = Call::parse(br#"{"type":"REVIVE"}"#).unwrap_err();
        assert!(e.message.contains("framework_id"), "{}", e.message);
    }

    #[test]
    fn fields_a_master_ignores_are_ignored() {
        let c = Call::parse(
            br#"{"type":"REVIVE","framework_id":{"value":"f"},"revive":{"roles":["*"]}}"#,
        )
        .unwrap();
        assert_eq!(c.framework_id(), Some("f"));
    }
}
