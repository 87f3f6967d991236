//! Marathon's app definition: parsing with Marathon's defaults, validation with Marathon's
//! error shape (`422 {message, details: [{path, errors}]}`), and the task spec each instance
//! runs as on an agent.
//!
//! The definition is kept as posted (normalised: absolute id, defaults filled in, legacy
//! `docker.portMappings` moved to `container.portMappings`, service ports assigned), and is
//! what `GET /v2/apps` shows back.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use outpost_protocol as wire;

/// One entry of a 422 answer: the JSON path of the bad field and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Violation {
    /// JSON path such as `/container/docker/image`.
    pub path: String,
    /// What is wrong, naming the value.
    pub errors: Vec<String>,
}

fn violation(path: impl Into<String>, error: impl Into<String>) -> Violation {
    Violation {
        path: path.into(),
        errors: vec![error.into()],
    }
}

/// The container log limits an app asks for through Docker parameters, when it asks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogLimits {
    /// `log-opt max-size`, in MiB (rounded up).
    pub max_size_mib: Option<u32>,
    /// `log-opt max-file`.
    pub max_files: Option<u32>,
}

/// Reads Marathon's `container.docker.parameters`: `log-opt` with `max-size=N[k|m|g]` or
/// `max-file=N` is the only parameter taken (the agent runs every container with dockerd's
/// rotating json-file log, bounded by its `[logs]` maximum); anything else is an error naming
/// the parameter's path and value.
pub fn log_limits(parameters: &[Value]) -> Result<LogLimits, (String, String)> {
    let mut limits = LogLimits::default();
    for (i, p) in parameters.iter().enumerate() {
        let at = |f: &str| format!("/container/docker/parameters({i}){f}");
        let key = p.get("key").and_then(Value::as_str);
        let value = p.get("value").and_then(Value::as_str);
        let (Some(key), Some(value)) = (key, value) else {
            return Err((
                at(""),
                format!("{p} must be {{\"key\": ..., \"value\": ...}} strings"),
            ));
        };
        if key != "log-opt" {
            return Err((
                at("/key"),
                format!("{key:?} is not supported (only log-opt max-size and max-file)"),
            ));
        }
        let bad = |why: &str| Err((at("/value"), format!("{value:?}: {why}")));
        match value.split_once('=') {
            Some(("max-size", size)) => {
                let (digits, unit) = size.split_at(
                    size.find(|c: char| !c.is_ascii_digit())
                        .unwrap_or(size.len()),
                );
                let bytes_per = match unit {
                    "" => 1u64,
                    "k" | "K" => 1 << 10,
                    "m" | "M" => 1 << 20,
                    "g" | "G" => 1 << 30,
                    _ => return bad("max-size takes a number with k, m or g"),
                };
                let Some(bytes) = digits
                    .parse::<u64>()
                    .ok()
                    .and_then(|n| n.checked_mul(bytes_per))
                    .filter(|&b| b > 0)
                else {
                    return bad("max-size takes a positive number with k, m or g");
                };
                let mib = bytes.div_ceil(1 << 20);
                limits.max_size_mib = Some(u32::try_from(mib).unwrap_or(u32::MAX));
            }
            Some(("max-file", n)) => match n.parse::<u32>() {
                Ok(n) if n > 0 => limits.max_files = Some(n),
                _ => return bad("max-file takes a positive whole number"),
            },
            _ => return bad("only max-size=SIZE and max-file=N are supported"),
        }
    }
    Ok(limits)
}

/// Marathon's app fields that Outpost accepts and shows back without acting on them.
const PASSIVE_KEYS: &[&str] = &[
    "gpus",
    "ports",
    "portDefinitions",
    "requirePorts",
    "uris",
    "fetch",
    "user",
    "executor",
    "storeUrls",
    "secrets",
    "residency",
    "role",
    "acceptedResourceRoles",
    "killSelection",
    "ipAddress",
];

/// Fields a client may send back from a GET; they are computed, so they are ignored.
const READ_ONLY_KEYS: &[&str] = &[
    "version",
    "versionInfo",
    "tasks",
    "tasksRunning",
    "tasksStaged",
    "tasksHealthy",
    "tasksUnhealthy",
    "deployments",
    "lastTaskFailure",
    "taskStats",
    "readinessCheckResults",
];

/// `upgradeStrategy`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpgradeStrategy {
    /// Share of instances that must stay healthy during a replacement (0..=1).
    #[serde(default = "one")]
    pub minimum_health_capacity: f64,
    /// Share of instances that may run on top of `instances` during a replacement (0..=1).
    #[serde(default = "one")]
    pub maximum_over_capacity: f64,
}

impl Default for UpgradeStrategy {
    fn default() -> Self {
        Self {
            minimum_health_capacity: 1.0,
            maximum_over_capacity: 1.0,
        }
    }
}

fn one() -> f64 {
    1.0
}

/// `unreachableStrategy`: when an unreachable instance is replaced, and when it is forgotten.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UnreachableStrategy {
    /// After this long unreachable, a replacement is launched.
    #[serde(default = "default_inactive")]
    pub inactive_after_seconds: u64,
    /// After this long unreachable, the instance is expunged (killed if it comes back).
    #[serde(default = "default_expunge")]
    pub expunge_after_seconds: u64,
}

fn default_inactive() -> u64 {
    300
}
fn default_expunge() -> u64 {
    600
}

impl Default for UnreachableStrategy {
    fn default() -> Self {
        Self {
            inactive_after_seconds: default_inactive(),
            expunge_after_seconds: default_expunge(),
        }
    }
}

/// One entry of `portMappings`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PortMapping {
    /// The port inside the container.
    #[serde(default)]
    pub container_port: u32,
    /// The host port; 0 means any free one of the agent's range.
    #[serde(default)]
    pub host_port: u32,
    /// The load balancer's port for this mapping; 0 on input means "assign one".
    #[serde(default)]
    pub service_port: u32,
    /// `tcp`, `udp` or `udp,tcp`.
    #[serde(default = "tcp")]
    pub protocol: String,
    /// Optional name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Labels of the mapping.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

fn tcp() -> String {
    "tcp".into()
}

/// One entry of `container.volumes`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VolumeDef {
    /// Path in the container.
    pub container_path: String,
    /// Path on the host.
    #[serde(default)]
    pub host_path: Option<String>,
    /// `RO` or `RW`.
    #[serde(default = "ro")]
    pub mode: String,
}

fn ro() -> String {
    "RO".into()
}

/// `container.docker`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DockerDef {
    /// The image.
    #[serde(default)]
    pub image: String,
    /// Legacy network mode: `BRIDGE`, `HOST`, `NONE` (`USER` is not supported).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// Legacy place of the port mappings (moved to `container.portMappings` on input).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_mappings: Option<Vec<PortMapping>>,
    /// Pull even if the image is present.
    #[serde(default)]
    pub force_pull_image: bool,
    /// Privileged containers are refused.
    #[serde(default)]
    pub privileged: bool,
    /// Extra `docker run` parameters (`{"key": "log-opt", "value": "max-size=5m"}`): only
    /// the log limits `log-opt max-size` and `max-file` are taken ([`log_limits`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parameters: Vec<Value>,
}

/// `container`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ContainerDef {
    /// `DOCKER` (or `MESOS` with a Docker image; both run through dockerd).
    #[serde(rename = "type", default = "docker_type")]
    pub kind: String,
    /// The Docker part.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker: Option<DockerDef>,
    /// Port mappings (BRIDGE networking).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_mappings: Option<Vec<PortMapping>>,
    /// Volumes.
    #[serde(default)]
    pub volumes: Vec<VolumeDef>,
}

fn docker_type() -> String {
    "DOCKER".into()
}

/// The `command` of a COMMAND health check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandDef {
    /// The shell command.
    pub value: String,
}

/// One entry of `healthChecks`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HealthCheckDef {
    /// HTTP, HTTPS, TCP, COMMAND, MESOS_HTTP, MESOS_HTTPS, MESOS_TCP.
    #[serde(default = "http")]
    pub protocol: String,
    /// The HTTP path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Index into the port mappings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_index: Option<u32>,
    /// A fixed port (wins over `portIndex`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u32>,
    /// The command of a COMMAND check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<CommandDef>,
    /// Failures are ignored this long after start, until the first success.
    #[serde(default = "grace")]
    pub grace_period_seconds: u32,
    /// Seconds between checks.
    #[serde(default = "interval")]
    pub interval_seconds: u32,
    /// Seconds before a check counts as failed.
    #[serde(default = "timeout")]
    pub timeout_seconds: u32,
    /// Failures in a row after which the task is killed (0: never).
    #[serde(default = "three")]
    pub max_consecutive_failures: u32,
    /// Seconds before the first check.
    #[serde(default = "delay")]
    pub delay_seconds: u32,
    /// Accepted for compatibility.
    #[serde(default)]
    pub ignore_http1xx: bool,
}

/// One entry of `readinessChecks` (Marathon allows one), with Marathon's defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReadinessCheckDef {
    /// Its name.
    #[serde(default = "readiness_name")]
    pub name: String,
    /// HTTP or HTTPS.
    #[serde(default = "http")]
    pub protocol: String,
    /// The path probed.
    #[serde(default = "slash")]
    pub path: String,
    /// The name of the port mapping probed.
    #[serde(default = "http_api")]
    pub port_name: String,
    /// Seconds between probes.
    #[serde(default = "thirty")]
    pub interval_seconds: u32,
    /// Seconds before a probe counts as failed.
    #[serde(default = "ten")]
    pub timeout_seconds: u32,
    /// The answers that mean ready.
    #[serde(default = "ok_200")]
    pub http_status_codes_for_ready: Vec<u16>,
    /// Accepted and shown back (the agent keeps no response).
    #[serde(default)]
    pub preserve_last_response: bool,
}

fn readiness_name() -> String {
    "readinessCheck".into()
}
fn slash() -> String {
    "/".into()
}
fn http_api() -> String {
    "http-api".into()
}
fn thirty() -> u32 {
    30
}
fn ten() -> u32 {
    10
}
fn ok_200() -> Vec<u16> {
    vec![200]
}

fn http() -> String {
    "HTTP".into()
}
fn grace() -> u32 {
    300
}
fn interval() -> u32 {
    60
}
fn timeout() -> u32 {
    20
}
fn three() -> u32 {
    3
}
fn delay() -> u32 {
    15
}

/// A Marathon app definition, with Marathon's defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppDefinition {
    /// The app's absolute id, e.g. `/web/frontend`.
    #[serde(default)]
    pub id: String,
    /// Shell command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<String>,
    /// Arguments after the image's entrypoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<String>>,
    /// CPU shares per instance.
    #[serde(default = "one")]
    pub cpus: f64,
    /// Memory in MiB per instance.
    #[serde(default = "mem")]
    pub mem: f64,
    /// Disk in MiB per instance.
    #[serde(default)]
    pub disk: f64,
    /// How many instances.
    #[serde(default = "instances")]
    pub instances: u32,
    /// The container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<ContainerDef>,
    /// Marathon 1.5 network list (`container/bridge`, `host`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub networks: Option<Vec<BTreeMap<String, Value>>>,
    /// Environment.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Placement constraints: `[field, operator, value?]`.
    #[serde(default)]
    pub constraints: Vec<Vec<String>>,
    /// Health checks.
    #[serde(default)]
    pub health_checks: Vec<HealthCheckDef>,
    /// Readiness checks (at most one): a rolling replacement waits for new tasks to pass it.
    #[serde(default)]
    pub readiness_checks: Vec<ReadinessCheckDef>,
    /// First launch delay after a failure.
    #[serde(default = "one")]
    pub backoff_seconds: f64,
    /// Growth of the delay per failure.
    #[serde(default = "backoff_factor")]
    pub backoff_factor: f64,
    /// Upper bound of the delay.
    #[serde(default = "max_launch_delay")]
    pub max_launch_delay_seconds: f64,
    /// Rolling replacement bounds.
    #[serde(default)]
    pub upgrade_strategy: UpgradeStrategy,
    /// Unreachable handling.
    #[serde(default)]
    pub unreachable_strategy: UnreachableStrategy,
    /// SIGTERM-to-SIGKILL grace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_kill_grace_period_seconds: Option<u32>,
    /// Apps and groups this app needs started (and healthy) before it, absolute once parsed
    /// (a relative path is resolved against the app's group): they order a deployment's steps.
    #[serde(default)]
    pub dependencies: Vec<String>,
    /// Marathon fields accepted and shown back, not acted on.
    #[serde(flatten)]
    pub passive: BTreeMap<String, Value>,
}

fn mem() -> f64 {
    128.0
}
fn instances() -> u32 {
    1
}
fn backoff_factor() -> f64 {
    1.15
}
fn max_launch_delay() -> f64 {
    300.0
}

/// Why a posted body is not an app.
#[derive(Debug, Clone, PartialEq)]
pub enum Invalid {
    /// Not JSON at all: Marathon answers 400.
    Syntax(String),
    /// JSON, but not a valid app: 422 with details.
    Violations(Vec<Violation>),
}

/// Collapses repeated slashes and makes the id absolute: `//web//a/` → `/web/a`.
pub fn normalize_id(id: &str) -> String {
    let parts: Vec<&str> = id.split('/').filter(|p| !p.is_empty()).collect();
    format!("/{}", parts.join("/"))
}

/// `path` resolved against group `base` as Marathon resolves ids in a group: an absolute path
/// as it is, a relative one under `base`; `.` and `..` segments are followed (`..` above the
/// root stays at the root).
pub fn resolve_id(base: &str, path: &str) -> String {
    let mut parts: Vec<&str> = if path.starts_with('/') {
        Vec::new()
    } else {
        base.split('/').filter(|p| !p.is_empty()).collect()
    };
    for seg in path.split('/').filter(|p| !p.is_empty()) {
        match seg {
            "." => {}
            ".." => {
                parts.pop();
            }
            s => parts.push(s),
        }
    }
    format!("/{}", parts.join("/"))
}

/// The group an app or group id is in: `/prod/web` → `/prod`, `/web` → `/`.
pub fn parent_id(id: &str) -> String {
    match id.trim_end_matches('/').rsplit_once('/') {
        Some(("", _)) | None => "/".into(),
        Some((parent, _)) => parent.into(),
    }
}

fn valid_segment(s: &str) -> bool {
    // Marathon: ^(([a-z0-9]|[a-z0-9][a-z0-9\-]*[a-z0-9])\.)*([a-z0-9]|[a-z0-9][a-z0-9\-]*[a-z0-9])$
    !s.is_empty()
        && s.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

impl AppDefinition {
    /// Parses a request body (already JSON) into an app, with `id` from the URL when given.
    pub fn from_value(mut v: Value, url_id: Option<&str>) -> Result<Self, Invalid> {
        let Some(obj) = v.as_object_mut() else {
            return Err(Invalid::Violations(vec![violation(
                "/",
                "error.expected.jsobject",
            )]));
        };
        for key in READ_ONLY_KEYS {
            obj.remove(*key);
        }
        if let Some(id) = url_id {
            obj.insert("id".into(), Value::String(id.into()));
        }
        let known = known_keys();
        let mut violations: Vec<Violation> = obj
            .keys()
            .filter(|k| !known.contains(&k.as_str()))
            .map(|k| violation(format!("/{k}"), format!("unknown field `{k}`")))
            .collect();
        if !violations.is_empty() {
            return Err(Invalid::Violations(violations));
        }
        let app: AppDefinition = serde_path_to_error::deserialize(v).map_err(|e| {
            let path = json_path(&e.path().to_string());
            Invalid::Violations(vec![violation(path, e.inner().to_string())])
        })?;
        let app = app.normalized();
        violations.extend(app.violations());
        if violations.is_empty() {
            Ok(app)
        } else {
            Err(Invalid::Violations(violations))
        }
    }

    /// Parses raw request bytes.
    pub fn parse(body: &[u8], url_id: Option<&str>) -> Result<Self, Invalid> {
        let v: Value = serde_json::from_slice(body)
            .map_err(|e| Invalid::Syntax(format!("Invalid JSON: {e}")))?;
        Self::from_value(v, url_id)
    }

    /// Id made absolute, legacy port mappings moved to `container.portMappings`.
    fn normalized(mut self) -> Self {
        self.id = normalize_id(&self.id);
        let group = parent_id(&self.id);
        for d in &mut self.dependencies {
            *d = resolve_id(&group, d);
        }
        if let Some(c) = &mut self.container
            && let Some(d) = &mut c.docker
            && let Some(legacy) = d.port_mappings.take()
            && c.port_mappings.is_none()
        {
            c.port_mappings = Some(legacy);
        }
        self
    }

    /// The container's port mappings (empty without a container).
    pub fn port_mappings(&self) -> &[PortMapping] {
        self.container
            .as_ref()
            .and_then(|c| c.port_mappings.as_deref())
            .unwrap_or(&[])
    }

    /// Mutable port mappings, for service port assignment.
    pub fn port_mappings_mut(&mut self) -> Option<&mut Vec<PortMapping>> {
        self.container
            .as_mut()
            .and_then(|c| c.port_mappings.as_mut())
    }

    /// The network mode the instances run with.
    pub fn network(&self) -> Result<wire::NetworkMode, String> {
        if let Some(nets) = &self.networks
            && let Some(first) = nets.first()
        {
            return match first.get("mode").and_then(Value::as_str) {
                Some("container/bridge") => Ok(wire::NetworkMode::Bridge),
                Some("host") => Ok(wire::NetworkMode::Host),
                other => Err(format!(
                    "network mode {other:?} is not supported (use container/bridge or host)"
                )),
            };
        }
        let legacy = self
            .container
            .as_ref()
            .and_then(|c| c.docker.as_ref())
            .and_then(|d| d.network.as_deref());
        match legacy {
            None | Some("HOST") => Ok(wire::NetworkMode::Host),
            Some("BRIDGE") => Ok(wire::NetworkMode::Bridge),
            Some("NONE") => Ok(wire::NetworkMode::None),
            Some(other) => Err(format!(
                "network {other:?} is not supported (BRIDGE, HOST or NONE)"
            )),
        }
    }

    /// The Docker image, if the app has one.
    pub fn image(&self) -> Option<&str> {
        self.container
            .as_ref()
            .and_then(|c| c.docker.as_ref())
            .map(|d| d.image.as_str())
            .filter(|s| !s.is_empty())
    }

    fn violations(&self) -> Vec<Violation> {
        let mut v = Vec::new();
        let segments: Vec<&str> = self.id.split('/').filter(|s| !s.is_empty()).collect();
        if segments.is_empty() {
            v.push(violation("/id", "id must not be empty"));
        } else if let Some(bad) = segments.iter().find(|s| !valid_segment(s)) {
            v.push(violation(
                "/id",
                format!(
                    "path segment {bad:?} of {:?} must match ^(([a-z0-9]|[a-z0-9][a-z0-9\\-]*[a-z0-9])\\.)*([a-z0-9]|[a-z0-9][a-z0-9\\-]*[a-z0-9])$",
                    self.id
                ),
            ));
        } else if self.id.len() > wire::AppId::LIMIT {
            v.push(violation(
                "/id",
                format!("{:?} is longer than {} bytes", self.id, wire::AppId::LIMIT),
            ));
        }
        if !(self.cpus.is_finite() && self.cpus >= 0.001) {
            v.push(violation(
                "/cpus",
                format!("{} must be at least 0.001", self.cpus),
            ));
        }
        if !(self.mem.is_finite() && self.mem >= 4.0) {
            v.push(violation(
                "/mem",
                format!("{} must be at least 4 (MiB)", self.mem),
            ));
        }
        if !(self.disk.is_finite() && self.disk >= 0.0) {
            v.push(violation(
                "/disk",
                format!("{} must be at least 0", self.disk),
            ));
        }
        if !(self.backoff_seconds.is_finite() && self.backoff_seconds >= 0.0) {
            v.push(violation(
                "/backoffSeconds",
                format!("{} must be at least 0", self.backoff_seconds),
            ));
        }
        if !(self.backoff_factor.is_finite() && self.backoff_factor >= 1.0) {
            v.push(violation(
                "/backoffFactor",
                format!("{} must be at least 1.0", self.backoff_factor),
            ));
        }
        if !(self.max_launch_delay_seconds.is_finite() && self.max_launch_delay_seconds >= 0.0) {
            v.push(violation(
                "/maxLaunchDelaySeconds",
                format!("{} must be at least 0", self.max_launch_delay_seconds),
            ));
        }
        let u = &self.upgrade_strategy;
        if !(0.0..=1.0).contains(&u.minimum_health_capacity) {
            v.push(violation(
                "/upgradeStrategy/minimumHealthCapacity",
                format!("{} must be between 0 and 1", u.minimum_health_capacity),
            ));
        }
        if !(0.0..=1.0).contains(&u.maximum_over_capacity) {
            v.push(violation(
                "/upgradeStrategy/maximumOverCapacity",
                format!("{} must be between 0 and 1", u.maximum_over_capacity),
            ));
        }
        let us = &self.unreachable_strategy;
        if us.expunge_after_seconds < us.inactive_after_seconds {
            v.push(violation(
                "/unreachableStrategy/expungeAfterSeconds",
                format!(
                    "{} must be at least inactiveAfterSeconds ({})",
                    us.expunge_after_seconds, us.inactive_after_seconds
                ),
            ));
        }
        match &self.container {
            None => v.push(violation(
                "/container",
                "a container with a Docker image is required: Outpost agents run Docker containers",
            )),
            Some(c) => {
                if c.kind != "DOCKER" && c.kind != "MESOS" {
                    v.push(violation(
                        "/container/type",
                        format!("{:?} is not supported (DOCKER)", c.kind),
                    ));
                }
                match &c.docker {
                    None => v.push(violation("/container/docker", "is required")),
                    Some(d) => {
                        if d.image.is_empty() {
                            v.push(violation("/container/docker/image", "must not be empty"));
                        } else if d.image.len() > wire::ImageRef::LIMIT {
                            v.push(violation(
                                "/container/docker/image",
                                format!(
                                    "{:?} is longer than {} bytes",
                                    d.image,
                                    wire::ImageRef::LIMIT
                                ),
                            ));
                        }
                        if let Err((path, e)) = log_limits(&d.parameters) {
                            v.push(violation(path, e));
                        }
                    }
                }
                for (i, vol) in c.volumes.iter().enumerate() {
                    if vol.host_path.as_deref().is_none_or(|p| !p.starts_with('/')) {
                        v.push(violation(
                            format!("/container/volumes({i})/hostPath"),
                            format!("{:?} must be an absolute host path", vol.host_path),
                        ));
                    }
                    if !vol.container_path.starts_with('/') {
                        v.push(violation(
                            format!("/container/volumes({i})/containerPath"),
                            format!("{:?} must be an absolute path", vol.container_path),
                        ));
                    }
                    if vol.mode != "RO" && vol.mode != "RW" {
                        v.push(violation(
                            format!("/container/volumes({i})/mode"),
                            format!("{:?} must be RO or RW", vol.mode),
                        ));
                    }
                }
            }
        }
        let network = self.network();
        if let Err(e) = &network {
            v.push(violation("/container/docker/network", e.clone()));
        }
        for (i, pm) in self.port_mappings().iter().enumerate() {
            let at = |f: &str| format!("/container/portMappings({i})/{f}");
            if pm.container_port > 65535 {
                v.push(violation(
                    at("containerPort"),
                    format!("{} must be at most 65535", pm.container_port),
                ));
            }
            if pm.host_port > 65535 {
                v.push(violation(
                    at("hostPort"),
                    format!("{} must be at most 65535", pm.host_port),
                ));
            }
            if pm.service_port > 65535 {
                v.push(violation(
                    at("servicePort"),
                    format!("{} must be at most 65535", pm.service_port),
                ));
            }
            if !matches!(pm.protocol.as_str(), "tcp" | "udp") {
                v.push(violation(
                    at("protocol"),
                    format!("{:?} must be tcp or udp", pm.protocol),
                ));
            }
            if network == Ok(wire::NetworkMode::Bridge) && pm.container_port == 0 {
                v.push(violation(
                    at("containerPort"),
                    "must be set for BRIDGE networking",
                ));
            }
        }
        if self.port_mappings().len() > wire::MAX_PORTS {
            v.push(violation(
                "/container/portMappings",
                format!(
                    "{} mappings exceed the limit of {}",
                    self.port_mappings().len(),
                    wire::MAX_PORTS
                ),
            ));
        }
        for (i, hc) in self.health_checks.iter().enumerate() {
            let at = |f: &str| format!("/healthChecks({i})/{f}");
            match hc.protocol.as_str() {
                "HTTP" | "MESOS_HTTP" | "HTTPS" | "MESOS_HTTPS" | "TCP" | "MESOS_TCP" => {
                    let idx = hc.port_index.unwrap_or(0) as usize;
                    if hc.port.is_none() && idx >= self.port_mappings().len() {
                        v.push(violation(
                            at("portIndex"),
                            format!(
                                "{idx} is out of range: the app has {} port mappings",
                                self.port_mappings().len()
                            ),
                        ));
                    }
                }
                "COMMAND" => {
                    if hc.command.is_none() {
                        v.push(violation(at("command"), "is required for COMMAND checks"));
                    }
                }
                other => v.push(violation(
                    at("protocol"),
                    format!(
                        "{other:?} is not one of HTTP, HTTPS, TCP, COMMAND, MESOS_HTTP, MESOS_HTTPS, MESOS_TCP"
                    ),
                )),
            }
            if hc.interval_seconds == 0 {
                v.push(violation(at("intervalSeconds"), "must be at least 1"));
            }
            if hc.port.is_some_and(|p| p == 0 || p > 65535) {
                v.push(violation(
                    at("port"),
                    format!("{:?} must be 1-65535", hc.port),
                ));
            }
        }
        if self.readiness_checks.len() > 1 {
            v.push(violation(
                "/readinessChecks",
                "only one readiness check is supported",
            ));
        }
        for (i, rc) in self.readiness_checks.iter().enumerate() {
            let at = |f: &str| format!("/readinessChecks({i})/{f}");
            if !matches!(rc.protocol.as_str(), "HTTP" | "HTTPS") {
                v.push(violation(
                    at("protocol"),
                    format!("{:?} is not one of HTTP, HTTPS", rc.protocol),
                ));
            }
            if self.readiness_port(rc).is_none() {
                let names: Vec<&str> = self
                    .port_mappings()
                    .iter()
                    .filter_map(|p| p.name.as_deref())
                    .collect();
                v.push(violation(
                    at("portName"),
                    format!(
                        "{:?} names no port mapping (named: {names:?})",
                        rc.port_name
                    ),
                ));
            }
            if rc.interval_seconds == 0 || rc.timeout_seconds >= rc.interval_seconds {
                v.push(violation(
                    at("timeoutSeconds"),
                    format!(
                        "{} must be below intervalSeconds ({}), which must be at least 1",
                        rc.timeout_seconds, rc.interval_seconds
                    ),
                ));
            }
            if rc.http_status_codes_for_ready.is_empty()
                || rc.http_status_codes_for_ready.len() > wire::MAX_READY_STATUSES
                || rc
                    .http_status_codes_for_ready
                    .iter()
                    .any(|c| !(100..=599).contains(c))
            {
                v.push(violation(
                    at("httpStatusCodesForReady"),
                    format!(
                        "{:?} must be 1 to {} HTTP statuses",
                        rc.http_status_codes_for_ready,
                        wire::MAX_READY_STATUSES
                    ),
                ));
            }
        }
        if self.health_checks.len() > wire::MAX_HEALTH_CHECKS {
            v.push(violation(
                "/healthChecks",
                format!("at most {} health checks", wire::MAX_HEALTH_CHECKS),
            ));
        }
        if self.env.len() > wire::MAX_ENV {
            v.push(violation(
                "/env",
                format!(
                    "{} variables exceed the limit of {}",
                    self.env.len(),
                    wire::MAX_ENV
                ),
            ));
        }
        if self.labels.len() > wire::MAX_LABELS {
            v.push(violation(
                "/labels",
                format!(
                    "{} labels exceed the limit of {}",
                    self.labels.len(),
                    wire::MAX_LABELS
                ),
            ));
        }
        if self.cmd.is_some() && self.args.is_some() {
            v.push(violation("/cmd", "cmd and args are mutually exclusive"));
        }
        for (i, c) in self.constraints.iter().enumerate() {
            if let Err(e) = crate::placement::Constraint::parse(c) {
                v.push(violation(format!("/constraints({i})"), e));
            }
        }
        v
    }

    /// The task spec one instance runs with.
    pub fn task_spec(&self, task_id: &str) -> Result<wire::TaskSpec, String> {
        fn text<const N: usize>(field: &str, s: &str) -> Result<wire::Text<N>, String> {
            wire::Text::new(s).map_err(|_| format!("{field}: {s:?} is longer than {N} bytes"))
        }
        fn kv(field: &str, k: &str, v: &str) -> Result<wire::KeyValue, String> {
            Ok(wire::KeyValue {
                name: text(field, k)?,
                value: text(field, v)?,
            })
        }
        let docker = self
            .container
            .as_ref()
            .and_then(|c| c.docker.as_ref())
            .ok_or("container.docker is required")?;
        let mut spec = wire::TaskSpec {
            task_id: text("task id", task_id)?,
            app_id: Some(text("id", &self.id)?),
            image: text("container.docker.image", &docker.image)?,
            force_pull: docker.force_pull_image,
            // Each agent's policy decides (refused by default, with a reason).
            privileged: docker.privileged,
            cmd: self.cmd.as_deref().map(|c| text("cmd", c)).transpose()?,
            cpus: self.cpus,
            mem_mib: self.mem,
            disk_mib: self.disk,
            network: self.network()?,
            kill_grace_period_s: self.task_kill_grace_period_seconds.unwrap_or(3),
            restart: wire::RestartPolicy {
                mode: wire::RestartMode::Always,
                backoff_s: self.backoff_seconds,
                backoff_factor: self.backoff_factor,
                max_delay_s: self.max_launch_delay_seconds,
            },
            ..Default::default()
        };
        let logs = log_limits(&docker.parameters).map_err(|(path, e)| format!("{path}: {e}"))?;
        (spec.log_max_size_mib, spec.log_max_files) = (logs.max_size_mib, logs.max_files);
        for a in self.args.iter().flatten() {
            spec.args
                .push(text("args", a)?)
                .map_err(|_| "args: too many")?;
        }
        for (k, v) in &self.env {
            spec.env
                .push(kv("env", k, v)?)
                .map_err(|_| "env: too many")?;
        }
        for (k, v) in &self.labels {
            spec.labels
                .push(kv("labels", k, v)?)
                .map_err(|_| "labels: too many")?;
        }
        for pm in self.port_mappings() {
            spec.port_mappings
                .push(wire::PortMapping {
                    container_port: pm.container_port as u16,
                    host_port: pm.host_port as u16,
                    protocol: if pm.protocol == "udp" {
                        wire::PortProtocol::Udp
                    } else {
                        wire::PortProtocol::Tcp
                    },
                    name: pm
                        .name
                        .as_deref()
                        .map(|n| text("portMappings.name", n))
                        .transpose()?,
                })
                .map_err(|_| "portMappings: too many")?;
        }
        for vol in self.container.iter().flat_map(|c| &c.volumes) {
            spec.volumes
                .push(wire::Volume {
                    host_path: text("volumes.hostPath", vol.host_path.as_deref().unwrap_or(""))?,
                    container_path: text("volumes.containerPath", &vol.container_path)?,
                    mode: if vol.mode == "RW" {
                        wire::VolumeMode::Rw
                    } else {
                        wire::VolumeMode::Ro
                    },
                })
                .map_err(|_| "volumes: too many")?;
        }
        if let Some(rc) = self.readiness_checks.first() {
            let port_index = self.readiness_port(rc).ok_or_else(|| {
                format!(
                    "readinessChecks.portName {:?} names no port mapping",
                    rc.port_name
                )
            })?;
            spec.readiness = Some(wire::ReadinessCheck {
                tls: rc.protocol == "HTTPS",
                path: Some(text("readinessChecks.path", &rc.path)?),
                port_index: port_index as u16,
                interval_s: rc.interval_seconds,
                timeout_s: rc.timeout_seconds,
                ready_statuses: rc
                    .http_status_codes_for_ready
                    .iter()
                    .copied()
                    .take(wire::MAX_READY_STATUSES)
                    .collect(),
            });
        }
        for hc in &self.health_checks {
            let protocol = match hc.protocol.as_str() {
                "HTTP" | "MESOS_HTTP" => wire::HealthProtocol::Http,
                "HTTPS" | "MESOS_HTTPS" => wire::HealthProtocol::Https,
                "TCP" | "MESOS_TCP" => wire::HealthProtocol::Tcp,
                "COMMAND" => wire::HealthProtocol::Command,
                other => return Err(format!("healthChecks.protocol {other:?} is not supported")),
            };
            spec.health_checks
                .push(wire::HealthCheck {
                    protocol,
                    path: match protocol {
                        wire::HealthProtocol::Http | wire::HealthProtocol::Https => Some(text(
                            "healthChecks.path",
                            hc.path.as_deref().unwrap_or("/"),
                        )?),
                        _ => None,
                    },
                    port_index: hc.port_index.unwrap_or(0) as u16,
                    port: hc.port.map(|p| p as u16),
                    command: hc
                        .command
                        .as_ref()
                        .map(|c| text("healthChecks.command.value", &c.value))
                        .transpose()?,
                    grace_period_s: hc.grace_period_seconds,
                    interval_s: hc.interval_seconds,
                    timeout_s: hc.timeout_seconds,
                    max_consecutive_failures: hc.max_consecutive_failures,
                    delay_s: hc.delay_seconds,
                })
                .map_err(|_| "healthChecks: too many")?;
        }
        Ok(spec)
    }

    /// The index of the port mapping a readiness check probes (by its `portName`).
    pub fn readiness_port(&self, rc: &ReadinessCheckDef) -> Option<usize> {
        self.port_mappings()
            .iter()
            .position(|p| p.name.as_deref() == Some(rc.port_name.as_str()))
    }

    /// Whether `other` differs in anything but `instances`: a config change that replaces
    /// the running tasks (Marathon's `lastConfigChangeAt`), not a scaling.
    pub fn config_differs(&self, other: &AppDefinition) -> bool {
        let mut a = self.clone();
        a.instances = other.instances;
        a != *other
    }
}

fn known_keys() -> Vec<&'static str> {
    let mut keys = vec![
        "id",
        "cmd",
        "args",
        "cpus",
        "mem",
        "disk",
        "instances",
        "container",
        "networks",
        "env",
        "labels",
        "constraints",
        "healthChecks",
        "backoffSeconds",
        "backoffFactor",
        "maxLaunchDelaySeconds",
        "upgradeStrategy",
        "unreachableStrategy",
        "taskKillGracePeriodSeconds",
        "dependencies",
        "readinessChecks",
    ];
    keys.extend_from_slice(PASSIVE_KEYS);
    keys
}

/// `serde_path_to_error`'s `container.portMappings[0].hostPort` as Marathon's
/// `/container/portMappings(0)/hostPort`.
fn json_path(p: &str) -> String {
    if p == "." || p.is_empty() {
        return "/".into();
    }
    let mut out = String::new();
    for part in p.split('.') {
        match part.split_once('[') {
            Some((name, rest)) => {
                out.push('/');
                out.push_str(name);
                for idx in rest.split('[') {
                    out.push('(');
                    out.push_str(idx.trim_end_matches(']'));
                    out.push(')');
                }
            }
            None => {
                out.push('/');
                out.push_str(part);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const NGINX: &str = include_str!("../../docs/examples/nginx.json");

    #[test]
    fn the_readme_example_parses_with_marathon_defaults() {
        let app = AppDefinition::parse(NGINX.as_bytes(), None).unwrap();
        assert_eq!(app.id, "/demo-nginx");
        assert_eq!(app.instances, 2);
        assert_eq!(app.network(), Ok(wire::NetworkMode::Bridge));
        assert_eq!(
            app.port_mappings().len(),
            1,
            "legacy docker.portMappings are moved"
        );
        assert_eq!(app.port_mappings()[0].container_port, 80);
        let hc = &app.health_checks[0];
        assert_eq!((hc.grace_period_seconds, hc.interval_seconds), (5, 20));
        assert_eq!(hc.timeout_seconds, 20, "Marathon's default");
        assert_eq!(app.backoff_factor, 1.15);
        assert_eq!(app.unreachable_strategy, UnreachableStrategy::default());
        let spec = app.task_spec("demo-nginx.1").unwrap();
        assert_eq!(spec.image, "nginx:latest");
        assert_eq!(spec.port_mappings[0].host_port, 0);
        assert_eq!(
            spec.health_checks[0].path.as_ref().map(|p| p.as_str()),
            Some("/")
        );
    }

    #[test]
    fn docker_log_opt_parameters_become_the_task_s_log_limits_and_others_are_refused() {
        let app = |params: &str| {
            let body = format!(
                r#"{{"id":"a","container":{{"type":"DOCKER","docker":{{"image":"x","parameters":{params}}}}}}}"#
            );
            AppDefinition::parse(body.as_bytes(), None)
        };
        let spec = app(
            r#"[{"key":"log-opt","value":"max-size=500k"},{"key":"log-opt","value":"max-file=5"}]"#,
        )
        .unwrap()
        .task_spec("a.1")
        .unwrap();
        assert_eq!(
            (spec.log_max_size_mib, spec.log_max_files),
            (Some(1), Some(5))
        );
        let spec = app(r#"[{"key":"log-opt","value":"max-size=2g"}]"#)
            .unwrap()
            .task_spec("a.1")
            .unwrap();
        assert_eq!(
            (spec.log_max_size_mib, spec.log_max_files),
            (Some(2048), None)
        );
        let spec = app("[]").unwrap().task_spec("a.1").unwrap();
        assert_eq!((spec.log_max_size_mib, spec.log_max_files), (None, None));
        for (params, path, message) in [
            (
                r#"[{"key":"cap-add","value":"NET_ADMIN"}]"#,
                "/container/docker/parameters(0)/key",
                "\"cap-add\" is not supported",
            ),
            (
                r#"[{"key":"log-opt","value":"max-size=10x"}]"#,
                "/container/docker/parameters(0)/value",
                "\"max-size=10x\": max-size takes",
            ),
            (
                r#"[{"key":"log-opt","value":"max-file=0"}]"#,
                "/container/docker/parameters(0)/value",
                "\"max-file=0\": max-file takes",
            ),
            (
                r#"[{"key":"log-opt","value":"mode=non-blocking"}]"#,
                "/container/docker/parameters(0)/value",
                "only max-size",
            ),
            (
                r#"[{"key":"log-opt"}]"#,
                "/container/docker/parameters(0)",
                "strings",
            ),
        ] {
            let err = app(params).unwrap_err();
            let Invalid::Violations(v) = err else {
                panic!("{params}: {err:?}");
            };
            let text = format!("{} {}", v[0].path, v[0].errors.join(" "));
            assert!(
                text.contains(path) && text.contains(message),
                "{params}: {text}"
            );
        }
    }

    #[test]
    fn https_health_checks_become_https_probes() {
        for protocol in ["HTTPS", "MESOS_HTTPS"] {
            let body = format!(
                r#"{{"id":"a","container":{{"type":"DOCKER","docker":{{"image":"x"}},"portMappings":[{{"containerPort":443}}]}},"healthChecks":[{{"protocol":"{protocol}","path":"/ok"}}]}}"#
            );
            let app = AppDefinition::parse(body.as_bytes(), None).unwrap();
            let spec = app.task_spec("a.1").unwrap();
            let hc = &spec.health_checks[0];
            assert_eq!(hc.protocol, wire::HealthProtocol::Https, "{protocol}");
            assert_eq!(hc.path.as_ref().map(|p| p.as_str()), Some("/ok"));
        }
        let v = violations(
            r#"{"id":"a","container":{"docker":{"image":"x"}},"healthChecks":[{"protocol":"GOPHER"}]}"#,
        );
        assert!(v[0].errors[0].contains("GOPHER"), "{v:?}");
    }

    #[test]
    fn ids_are_normalised() {
        assert_eq!(normalize_id("//web//a/"), "/web/a");
        assert_eq!(normalize_id("web"), "/web");
    }

    fn violations(body: &str) -> Vec<Violation> {
        match AppDefinition::parse(body.as_bytes(), None) {
            Err(Invalid::Violations(v)) => v,
            other => panic!("expected violations, got {other:?}"),
        }
    }

    #[test]
    fn type_errors_name_the_json_path() {
        let v = violations(
            r#"{"id":"a","container":{"docker":{"image":"x","portMappings":[{"containerPort":"eighty"}]}}}"#,
        );
        assert_eq!(v[0].path, "/container/docker/portMappings(0)/containerPort");
        assert!(v[0].errors[0].contains("eighty"), "{v:?}");
    }

    #[test]
    fn semantic_errors_list_every_field() {
        let v =
            violations(r#"{"id":"Bad_Id","cpus":-1,"mem":1,"container":{"docker":{"image":""}}}"#);
        let paths: Vec<&str> = v.iter().map(|x| x.path.as_str()).collect();
        assert_eq!(paths, ["/id", "/cpus", "/mem", "/container/docker/image"]);
        assert!(v[0].errors[0].contains("Bad_Id"));
    }

    #[test]
    fn unknown_fields_are_refused_by_name() {
        let v = violations(r#"{"id":"a","colour":"red"}"#);
        assert_eq!(v[0].path, "/colour");
    }

    #[test]
    fn syntax_errors_are_not_violations() {
        assert!(matches!(
            AppDefinition::parse(b"{", None),
            Err(Invalid::Syntax(_))
        ));
    }

    #[test]
    fn scaling_is_not_a_config_change() {
        let a = AppDefinition::parse(NGINX.as_bytes(), None).unwrap();
        let mut b = a.clone();
        b.instances = 5;
        assert!(!a.config_differs(&b));
        b.cpus = 0.2;
        assert!(a.config_differs(&b));
    }
}
