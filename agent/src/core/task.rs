//! One task on this agent: its spec, where it is in its life, its ports and health.

use outpost_protocol::codec::{decode_part_into, encode_part_to_vec};
use outpost_protocol::{
    HealthCheck, HealthProtocol, IpText, MAX_PORTS, NetworkMode, ReadinessCheck, RestartMode,
    RestartPolicy, TaskId, TaskSpec, TaskState,
};

use super::health::CheckState;
use super::{Action, Millis, ProbeTarget};

/// What follows a kill.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum AfterKill {
    /// Restart after the backoff (a health kill).
    Restart,
    /// Drop the task (a kill command or a drain). Wins over `Restart`.
    Forget,
}

/// Where a task is in its life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for its image.
    Pulling,
    /// Its container is being created.
    Creating,
    /// Created, being started.
    Starting {
        /// Container.
        container_id: String,
    },
    /// Running.
    Running {
        /// Container.
        container_id: String,
        /// Since when.
        since: Millis,
    },
    /// Being stopped.
    Killing {
        /// Container.
        container_id: String,
        /// What follows.
        then: AfterKill,
        /// When to presume the container gone if no exit is reported.
        deadline: Millis,
    },
    /// Ended; waiting out the backoff before the next attempt.
    Backoff {
        /// When the next attempt starts.
        until: Millis,
    },
}

impl Phase {
    /// The phase's name, for people: `pulling its image`, `running`, `in backoff`, ...
    pub fn name(&self) -> &'static str {
        match self {
            Self::Pulling => "pulling its image",
            Self::Creating => "creating its container",
            Self::Starting { .. } => "starting",
            Self::Running { .. } => "running",
            Self::Killing { .. } => "being killed",
            Self::Backoff { .. } => "waiting out its restart backoff",
        }
    }

    /// The container of this phase, if one exists.
    pub fn container(&self) -> Option<&str> {
        match self {
            Self::Starting { container_id }
            | Self::Running { container_id, .. }
            | Self::Killing { container_id, .. } => Some(container_id),
            _ => None,
        }
    }
}

/// A task the agent has accepted.
///
/// Its spec is kept in wire form: a `TaskSpec` holds its bounded fields inline (~36 KiB), its
/// CBOR a few hundred bytes, and it is only needed whole to (re)create the container. What the
/// core reads all the time is kept decoded beside it.
#[derive(Debug, Clone)]
pub struct Task {
    /// The spec's CBOR; see [`Task::spec`].
    wire: Box<[u8]>,
    /// The task's id.
    pub task_id: TaskId,
    /// CPUs it uses.
    pub cpus: f64,
    /// Memory (MiB) it uses.
    pub mem_mib: f64,
    /// Disk (MiB) it uses.
    pub disk_mib: f64,
    /// Its health checks.
    pub health_checks: Vec<HealthCheck>,
    /// Its restart policy.
    pub restart: RestartPolicy,
    /// Seconds between SIGTERM and SIGKILL.
    pub kill_grace_period_s: u32,
    /// Its network mode.
    pub network: NetworkMode,
    /// The host port each mapping asked for (0: any).
    pub wanted_ports: Vec<u16>,
    /// Where it is.
    pub phase: Phase,
    /// Launch attempts so far (1 for the first); results of older attempts are ignored.
    pub attempt: u32,
    /// Restarts since the backoff was last reset (the backoff's exponent).
    pub restarts: u32,
    /// Host ports, one per port mapping, kept across restarts.
    pub host_ports: heapless::Vec<u16, MAX_PORTS>,
    /// The container's IP.
    pub container_ip: Option<IpText>,
    /// Health check states of the current container.
    pub checks: Vec<CheckState>,
    /// Overall health of the current container.
    pub healthy: Option<bool>,
    /// The last state reported.
    pub last_state: TaskState,
    /// A digest of the spec's wire form (it never changes): what the state's fingerprint
    /// hashes instead of the whole spec, per event.
    pub spec_digest: u64,
    /// Starts retried at once on other ports since the task last ran (a host port that
    /// turned out taken); bounded by [`PORT_RETRIES`].
    pub port_retries: u32,
    /// MiB per log file the task asked for (`None`: the host's default).
    pub log_size_mib: Option<u32>,
    /// Log files the task asked for (`None`: the host's default).
    pub log_files: Option<u32>,
    /// Marathon's readiness check, when the task has one.
    pub readiness: Option<ReadinessCheck>,
    /// While the current container is not yet ready: when its readiness is probed next, and
    /// whether a probe is out.
    pub ready_probe: Option<(Millis, bool)>,
    /// With a readiness check: whether the current container has passed it.
    pub ready: Option<bool>,
}

/// The check index a readiness probe reports under (health checks are `0..`).
pub const READINESS: usize = usize::MAX;

/// How many times in a row a start that failed on a taken host port is retried at once on
/// other ports (for `hostPort: 0` mappings) before the task fails.
pub const PORT_RETRIES: u32 = 3;

impl Task {
    /// A new task holding `host_ports`.
    pub fn new(spec: &TaskSpec, host_ports: Vec<u16>) -> Self {
        use std::hash::{Hash, Hasher};
        let wire = encode_part_to_vec(spec).into_boxed_slice();
        let mut digest = std::collections::hash_map::DefaultHasher::new();
        wire.hash(&mut digest);
        Self {
            spec_digest: digest.finish(),
            wire,
            task_id: spec.task_id.clone(),
            cpus: spec.cpus,
            mem_mib: spec.mem_mib,
            disk_mib: spec.disk_mib,
            health_checks: spec.health_checks.iter().cloned().collect(),
            restart: spec.restart.clone(),
            kill_grace_period_s: spec.kill_grace_period_s,
            network: spec.network,
            wanted_ports: spec.port_mappings.iter().map(|m| m.host_port).collect(),
            phase: Phase::Pulling,
            attempt: 0,
            restarts: 0,
            host_ports: host_ports.into_iter().collect(),
            container_ip: None,
            checks: Vec::new(),
            healthy: None,
            last_state: TaskState::Staging,
            port_retries: 0,
            log_size_mib: spec.log_max_size_mib,
            log_files: spec.log_max_files,
            readiness: spec.readiness.clone(),
            ready_probe: None,
            ready: None,
        }
    }

    /// The current container started (or was re-adopted) at `now`: its checks start afresh,
    /// and its readiness is probed until it passes.
    pub fn start_checks(&mut self, now: Millis) {
        self.checks = self
            .health_checks
            .iter()
            .map(|c| CheckState::new(c, now))
            .collect();
        self.healthy = None;
        self.ready_probe = self.readiness.as_ref().map(|_| (now, false));
        self.ready = self.readiness.as_ref().map(|_| false);
    }

    /// The current container is gone: no checks until the next one runs.
    pub fn stop_checks(&mut self) {
        self.checks.clear();
        self.healthy = None;
        self.ready_probe = None;
        self.ready = None;
    }

    /// The spec's wire form (CBOR), as stored in snapshots.
    pub fn wire(&self) -> &[u8] {
        &self.wire
    }

    /// The whole spec, decoded from its wire form.
    pub fn spec(&self) -> Box<TaskSpec> {
        let mut spec = Box::<TaskSpec>::default();
        // The bytes were encoded by `new` from a valid spec; decoding them back cannot fail.
        // Were it to, the empty spec's launch fails with a clear status instead of a panic.
        let _ = decode_part_into(&self.wire, spec.as_mut());
        spec
    }

    /// Whether the restart policy restarts a container that ended (`success`: exit 0).
    pub fn should_restart(&self, success: bool) -> bool {
        match self.restart.mode {
            RestartMode::Always => true,
            RestartMode::OnFailure => !success,
            RestartMode::Never => false,
        }
    }

    /// The delay before the next restart: `backoff * factor^restarts`, at most the maximum.
    pub fn backoff_delay_ms(&self) -> Millis {
        let r = &self.restart;
        let exp = i32::try_from(self.restarts).unwrap_or(i32::MAX);
        let secs = (r.backoff_s * r.backoff_factor.powi(exp)).min(r.max_delay_s);
        // Non-negative and bounded by max_delay_s: the cast does not wrap.
        (secs.max(0.0) * 1000.0) as Millis
    }

    /// The next time this task needs the clock.
    pub fn next_deadline(&self) -> Option<Millis> {
        match &self.phase {
            Phase::Backoff { until } => Some(*until),
            Phase::Killing { deadline, .. } => Some(*deadline),
            Phase::Running { since, .. } => {
                let ready = self
                    .ready_probe
                    .filter(|(_, in_flight)| !in_flight)
                    .map(|(at, _)| at);
                let probe = self
                    .checks
                    .iter()
                    .filter(|c| !c.in_flight)
                    .map(|c| c.next_probe_at)
                    .chain(ready)
                    .min();
                let reset = (self.restarts > 0).then_some(since + super::BACKOFF_RESET_MS);
                probe.into_iter().chain(reset).min()
            }
            _ => None,
        }
    }

    /// The probes due at `now`, marked as sent.
    pub fn due_probes(&mut self, now: Millis) -> Vec<Action> {
        let Phase::Running { container_id, .. } = &self.phase else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (i, (check, state)) in self
            .health_checks
            .iter()
            .zip(self.checks.iter_mut())
            .enumerate()
        {
            if !state.due(now) {
                continue;
            }
            let port = check.port.unwrap_or_else(|| {
                let idx = usize::from(check.port_index);
                match self.network {
                    // HOST: the task listens on its host port directly, as with BRIDGE's NAT.
                    NetworkMode::Bridge | NetworkMode::Host | NetworkMode::None => {
                        self.host_ports.get(idx).copied().unwrap_or(0)
                    }
                }
            });
            let target = match check.protocol {
                HealthProtocol::Http | HealthProtocol::Https => ProbeTarget::Http {
                    tls: check.protocol == HealthProtocol::Https,
                    port,
                    path: check.path.as_deref().unwrap_or("/").to_string(),
                    ready_statuses: Vec::new(),
                },
                HealthProtocol::Tcp => ProbeTarget::Tcp { port },
                HealthProtocol::Command => ProbeTarget::Command {
                    container_id: container_id.clone(),
                    command: check.command.as_deref().unwrap_or("true").to_string(),
                },
            };
            state.sent();
            out.push(Action::Probe {
                task_id: self.task_id.clone(),
                attempt: self.attempt,
                check: i,
                target,
                timeout_ms: u64::from(check.timeout_s.max(1)) * 1000,
            });
        }
        if let (Some(r), Some((at, in_flight))) = (&self.readiness, &mut self.ready_probe)
            && !*in_flight
            && now >= *at
        {
            *in_flight = true;
            let port = self
                .host_ports
                .get(usize::from(r.port_index))
                .copied()
                .unwrap_or(0);
            let mut ready_statuses: Vec<u16> = r.ready_statuses.iter().copied().collect();
            if ready_statuses.is_empty() {
                ready_statuses.push(200);
            }
            out.push(Action::Probe {
                task_id: self.task_id.clone(),
                attempt: self.attempt,
                check: READINESS,
                target: ProbeTarget::Http {
                    tls: r.tls,
                    port,
                    path: r.path.as_deref().unwrap_or("/").to_string(),
                    ready_statuses,
                },
                timeout_ms: u64::from(r.timeout_s.max(1)) * 1000,
            });
        }
        out
    }

    /// A readiness probe reported at `now`: whether the task just became ready.
    pub fn readiness_result(&mut self, now: Millis, ok: bool) -> bool {
        let (Some(r), Some((at, in_flight))) = (&self.readiness, &mut self.ready_probe) else {
            return false;
        };
        *in_flight = false;
        if ok {
            self.ready_probe = None;
            self.ready = Some(true);
            return true;
        }
        *at = now + u64::from(r.interval_s.max(1)) * 1000;
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_keeps_its_spec_compactly_and_gives_it_back_whole() {
        let spec = outpost_protocol::examples::task_spec();
        let task = Task::new(&spec, vec![31000]);
        assert_eq!(*task.spec(), spec);
        // The inline TaskSpec is ~36 KiB; the task with its CBOR stays a small fraction of it.
        let footprint = std::mem::size_of::<Task>()
            + task.wire.len()
            + task.health_checks.len() * std::mem::size_of::<HealthCheck>();
        assert!(
            footprint < std::mem::size_of::<TaskSpec>() / 8,
            "{footprint} bytes"
        );
    }
}
