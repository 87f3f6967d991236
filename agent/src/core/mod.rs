//! The supervisor core: all of the agent's decisions, with no I/O.
//!
//! State goes in at construction; [`Event`]s go in through [`Supervisor::handle`] together with
//! the current time; [`Action`]s come out. The core never reads a clock, a socket or a file, so
//! every behaviour is testable under virtual time (`core::tests`). The drivers in
//! `crate::driver` turn the world into events and actions into calls.

mod durable;
mod events;
mod health;
mod outbox;
mod ports;
mod task;
mod tasks;
pub mod validate;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap, VecDeque};

use outpost_protocol::codec::encode_to_vec;
use outpost_protocol::{
    AgentId, AgentState, Command, CommandKind, CommandReply, DrainPolicy, Hello, KeyValue,
    Liveness, MAX_ATTRIBUTES, MAX_FOLLOW_S, Offer, Outcome, PROTOCOL_VERSION, PortRange, ReadLogs,
    Reason, RejectCode, Rejection, Resources, StatusAck, TaskId, TaskSpec, TaskState, TaskStatus,
    TopicKind, VersionText, codec, decode,
};

pub use durable::{Snapshot, SnapshotError};
pub use events::{Action, Event, ObservedContainer, ProbeTarget};
pub use health::{CheckState, Verdict};
pub use outbox::Outbox;
pub use ports::{PortError, Ports};
pub use task::{AfterKill, Phase, Task};
pub use tasks::Tasks;
pub use validate::Policy;
use validate::reject;

/// Milliseconds: of the monotonic clock for deadlines, of the Unix epoch for what is shown.
pub type Millis = u64;

/// The time an event happens at, on two clocks. Every deadline (backoffs, kills, probes,
/// resends, offers) runs on `mono`, a clock that never steps (the driver reads
/// `CLOCK_BOOTTIME`, which also counts suspend); `wall` (the Unix epoch's) is used only for
/// what is shown or compared across hosts: status timestamps and the signed commands' replay
/// window. An edge host that boots in 1970 and steps its clock when NTP syncs moves `wall`
/// only, so no deadline fires early or late.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Clock {
    /// Milliseconds of a clock that only moves forward at a steady rate.
    pub mono: Millis,
    /// Milliseconds since the Unix epoch, as the host's clock says (it may step).
    pub wall: Millis,
}

impl From<Millis> for Clock {
    /// Both clocks at `t` (a host whose wall clock never steps, as in most core tests).
    fn from(t: Millis) -> Self {
        Self { mono: t, wall: t }
    }
}

/// How many command ids are remembered for exactly-once execution.
const SEEN_COMMANDS: usize = 4096;
/// A task that ran this long (healthy, when it has checks) starts its backoff afresh.
pub const BACKOFF_RESET_MS: Millis = 60_000;
/// How long past its grace period a kill may take before the container is presumed gone.
const KILL_SLACK_MS: Millis = 30_000;

/// Resources the host gives to tasks (its total minus the configured reservation).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Capacity {
    /// CPUs.
    pub cpus: f64,
    /// Memory in MiB.
    pub mem_mib: f64,
    /// Disk in MiB.
    pub disk_mib: f64,
}

/// What the core is told at start.
#[derive(Debug, Clone)]
pub struct Settings {
    /// This agent's id.
    pub agent_id: AgentId,
    /// The host's name.
    pub hostname: outpost_protocol::Hostname,
    /// The address the hello advertises (the config's `advertise_ip`); `None`: the local
    /// address of the broker connection, as the MQTT driver reports it.
    pub advertise_ip: Option<outpost_protocol::IpText>,
    /// Attributes for placement constraints.
    pub attributes: heapless::Vec<KeyValue, MAX_ATTRIBUTES>,
    /// The host port range tasks get their ports from.
    pub port_range: PortRange,
    /// Resources for tasks.
    pub capacity: Capacity,
    /// A random number drawn once per process; status uuids are made from it and a counter.
    pub incarnation: u64,
    /// When this process started.
    pub started_at_ms: Millis,
    /// How often to re-publish the offer without a change.
    pub offer_interval_ms: Millis,
    /// Most unacknowledged status updates kept.
    pub outbox_capacity: usize,
    /// Ed25519 public keys of the bridge whose signed commands are accepted; empty: commands
    /// are not authenticated (the broker's ACL is all that protects the agent).
    pub trusted_keys: Vec<[u8; 32]>,
    /// A signed command issued longer ago than this (or this far in the future) is a replay.
    pub replay_window_ms: Millis,
    /// What tasks may do on this host.
    pub policy: validate::Policy,
    /// MiB per container log file for a task that asks for no limit of its own (`[logs]`).
    pub log_size_mib: u32,
    /// Container log files kept for a task that asks for no limit of its own.
    pub log_files: u32,
}

/// The agent's decisions and state.
#[derive(Debug)]
pub struct Supervisor {
    settings: Settings,
    capacity: Capacity,
    tasks: Tasks,
    ports: Ports,
    outbox: Outbox,
    connected: bool,
    draining: bool,
    offer_seq: u64,
    next_offer_at: Millis,
    status_counter: u64,
    /// Command id -> (its reply, when it was issued).
    seen_commands: HashMap<String, (Vec<u8>, Millis)>,
    seen_order: VecDeque<String>,
    /// Signed commands issued at or before this are refused as replays: the newest issue time
    /// of any command forgotten from `seen_commands` (so a forgotten id cannot come again).
    replay_floor_ms: Millis,
    /// The newest leadership epoch a command carried (bridges with `[ha]`): a command with an
    /// older one comes from a bridge that no longer leads and is refused.
    leader_epoch: u64,
    actions: Vec<Action>,
    /// Restored tasks waiting for the first container listing (see `durable.rs`).
    recovering: HashMap<TaskId, durable::Recovering>,
    /// Restored from a snapshot and not yet reconciled with dockerd.
    awaiting_list: bool,
    /// Why the last save of the state failed, while it fails.
    storage_failure: Option<String>,
    /// The broker connection is up (`connected` also needs recovery to be done).
    broker_up: bool,
    /// The local address of the latest broker connection.
    local_ip: Option<outpost_protocol::IpText>,
    /// When to list the containers again: after a failed listing, and once after recovery.
    list_retry_at: Option<Millis>,
    /// The wait after the next failed listing (reset by one that works).
    list_retry_wait: Millis,
    /// The wall clock at the latest event (status timestamps, the replay window).
    wall_ms: Millis,
    /// The monotonic clock at the latest event (a snapshot stores deadlines relative to it).
    mono_ms: Millis,
    /// Whether the latest event may have changed what the snapshot holds; see
    /// [`Supervisor::durable_may_have_changed`].
    maybe_durable: bool,
    /// The logs streams under way, by request (command) id: not durable (a restarted agent
    /// has none; the reader asks again).
    log_streams: std::collections::BTreeSet<String>,
}

/// Most logs streams an agent sends at once: each is a docker call and MQTT traffic beside
/// the status updates, on what may be a thin uplink.
pub const MAX_LOG_STREAMS: usize = 4;

/// The first wait before a failed container listing is tried again; it doubles per failure up
/// to [`LIST_RETRY_MAX_MS`].
pub const LIST_RETRY_MS: Millis = 1_000;
/// After recovery, when the containers are listed once more (for containers a killed
/// process's last calls to dockerd made after the first listing).
pub const RELIST_AFTER_RECOVERY_MS: Millis = 5_000;
/// The longest wait between container listings that fail.
pub const LIST_RETRY_MAX_MS: Millis = 30_000;

impl Supervisor {
    /// A supervisor with no tasks.
    pub fn new(settings: Settings) -> Self {
        Self {
            capacity: settings.capacity,
            ports: Ports::new(settings.port_range),
            outbox: Outbox::new(settings.outbox_capacity),
            tasks: Tasks::default(),
            connected: false,
            draining: false,
            offer_seq: 0,
            next_offer_at: 0,
            status_counter: 0,
            seen_commands: HashMap::new(),
            seen_order: VecDeque::new(),
            replay_floor_ms: 0,
            leader_epoch: 0,
            actions: Vec::new(),
            recovering: HashMap::new(),
            awaiting_list: false,
            local_ip: None,
            list_retry_at: None,
            list_retry_wait: LIST_RETRY_MS,
            storage_failure: None,
            broker_up: false,
            wall_ms: settings.started_at_ms,
            mono_ms: 0,
            maybe_durable: true,
            log_streams: std::collections::BTreeSet::new(),
            settings,
        }
    }

    /// Whether the latest event may have changed the durable state. False only after a tick
    /// or a probe result that did nothing durable (probes sent, a check's counters, a status
    /// resent): the main loop then skips [`Supervisor::durable_fingerprint`], which encodes
    /// every task and at a thousand tasks probed every second cost more than the probes.
    /// Every core test checks that the fingerprint did not change when this says so.
    pub fn durable_may_have_changed(&self) -> bool {
        self.maybe_durable
    }

    /// Applies `event` at `now` (a [`Clock`], or one time for both clocks) and returns what to
    /// do. Deadlines it returns ([`Supervisor::next_deadline`]) are on the monotonic clock.
    pub fn handle(&mut self, now: impl Into<Clock>, event: Event) -> Vec<Action> {
        let clock = now.into();
        self.wall_ms = clock.wall;
        self.mono_ms = self.mono_ms.max(clock.mono);
        let now = clock.mono;
        self.maybe_durable = !matches!(
            event,
            Event::Tick | Event::ProbeResult { .. } | Event::LogStreamEnded { .. }
        );
        match event {
            Event::Tick => {}
            Event::BrokerConnected { local_ip } => {
                self.broker_up = true;
                if local_ip.is_some() {
                    self.local_ip = local_ip;
                }
                // A restored agent reports once its containers are re-adopted, not before.
                if !self.awaiting_list {
                    self.on_connected(now);
                }
            }
            Event::BrokerDisconnected => {
                self.broker_up = false;
                self.connected = false;
                // Their readers are on the other side of the broker: nothing would arrive.
                for request_id in std::mem::take(&mut self.log_streams) {
                    self.actions.push(Action::StopLogs { request_id });
                }
            }
            Event::LogStreamEnded { request_id } => {
                self.log_streams.remove(&request_id);
            }
            Event::CommandReceived(bytes) => self.on_command(now, &bytes),
            Event::AckReceived(bytes) => self.on_ack(&bytes),
            Event::CapacityChanged(c) => {
                if c != self.capacity {
                    self.capacity = c;
                    self.publish_offer(now);
                }
            }
            Event::ImageReady { task_id, attempt } => self.on_image_ready(&task_id, attempt),
            Event::ImageFailed {
                task_id,
                attempt,
                message,
            } => self.on_launch_failed(now, &task_id, attempt, Reason::ImagePullFailed, &message),
            Event::ContainerCreated {
                task_id,
                attempt,
                container_id,
            } => self.on_created(&task_id, attempt, container_id),
            Event::ContainerStarted {
                task_id,
                attempt,
                container_ip,
            } => self.on_started(now, &task_id, attempt, container_ip),
            Event::LaunchFailed {
                task_id,
                attempt,
                message,
            } => self.on_launch_failed(
                now,
                &task_id,
                attempt,
                Reason::ContainerLaunchFailed,
                &message,
            ),
            Event::ContainerExited {
                container_id,
                exit_code,
                oom_killed,
            } => self.on_exited(now, &container_id, exit_code, oom_killed),
            Event::ProbeResult {
                task_id,
                attempt,
                check,
                healthy,
            } => self.on_probe(now, &task_id, attempt, check, healthy),
            Event::DockerConnected => {
                self.list_retry_at = None;
                self.actions.push(Action::ListContainers);
            }
            Event::ContainersListed(observed) => {
                self.list_retry_at = None;
                self.list_retry_wait = LIST_RETRY_MS;
                if self.awaiting_list {
                    self.recover(now, &observed);
                } else {
                    self.on_listed(now, &observed);
                }
            }
            Event::ContainerRemoved { container_id } => {
                if self.ports.removed(|c| c != container_id) {
                    self.publish_offer(now);
                }
            }
            Event::HostPortsListening(ports) => {
                if self.ports.set_taken(ports) {
                    self.publish_offer(now);
                }
            }
            Event::ContainerListFailed { message } => {
                // Until a listing works a restored agent stays not ready (and silent to the
                // bridge): it must ask again, not wait for dockerd to reconnect.
                let wait = self.list_retry_wait;
                tracing::warn!(error = %message, retry_in_ms = wait, "listing containers failed");
                self.list_retry_at = Some(now + wait);
                self.list_retry_wait = (wait * 2).min(LIST_RETRY_MAX_MS);
            }
        }
        self.tasks.settle();
        self.on_time(now);
        self.tasks.settle();
        std::mem::take(&mut self.actions)
    }

    /// Tells the core whether the state could be saved: while it cannot (a full disk), new
    /// launches are refused; accepted work carries on.
    pub fn set_storage_failure(&mut self, failure: Option<String>) {
        self.storage_failure = failure;
    }

    /// Whether the last save of the state failed.
    pub fn storage_failed(&self) -> bool {
        self.storage_failure.is_some()
    }

    /// Whether the tasks of a restored state still wait for dockerd's container list to be
    /// re-adopted, restarted or finished ([`Supervisor::restore`]); false for a fresh start.
    /// The agent tells systemd it is ready once this is false.
    pub fn recovering(&self) -> bool {
        self.awaiting_list
    }

    /// When [`Event::Tick`] must come next at the latest.
    pub fn next_deadline(&self) -> Option<Millis> {
        let tasks = self.tasks.next_deadline();
        let outbox = self
            .connected
            .then(|| self.outbox.next_deadline())
            .flatten();
        let offer = self.connected.then_some(self.next_offer_at);
        let list = self.list_retry_at;
        tasks
            .into_iter()
            .chain(outbox)
            .chain(offer)
            .chain(list)
            .min()
    }

    /// The tasks, by id.
    pub fn tasks(&self) -> &BTreeMap<TaskId, Task> {
        &self.tasks
    }

    /// Whether the deadline index agrees with every task's own deadline (see `tasks.rs`);
    /// the core tests check it after every event.
    pub fn deadline_index_is_exact(&self) -> bool {
        self.tasks.index_is_exact()
    }

    /// The host ports.
    pub fn ports(&self) -> &Ports {
        &self.ports
    }

    /// The status updates not yet acknowledged.
    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    /// Whether the agent refuses launches.
    pub fn draining(&self) -> bool {
        self.draining
    }

    /// Resources the tasks use.
    pub fn used(&self) -> Capacity {
        self.tasks
            .values()
            .fold(Capacity::default(), |acc, t| Capacity {
                cpus: acc.cpus + t.cpus,
                mem_mib: acc.mem_mib + t.mem_mib,
                disk_mib: acc.disk_mib + t.disk_mib,
            })
    }

    /// The log space (MiB) the tasks' containers may take: each task's own limits, else the
    /// host's defaults, size × files.
    pub fn log_budget_mib(&self) -> f64 {
        let s = &self.settings;
        self.tasks
            .values()
            .map(|t| {
                let size = t.log_size_mib.unwrap_or(s.log_size_mib);
                let files = t.log_files.unwrap_or(s.log_files);
                f64::from(size) * f64::from(files)
            })
            .sum()
    }

    // -----------------------------------------------------------------------------------------
    // Broker and offers.

    fn on_connected(&mut self, now: Millis) {
        self.connected = true;
        let hello = Hello {
            version: PROTOCOL_VERSION,
            agent_id: self.settings.agent_id.clone(),
            hostname: self.settings.hostname.clone(),
            agent_version: VersionText::new(env!("CARGO_PKG_VERSION")).unwrap_or_default(),
            attributes: self.settings.attributes.clone(),
            started_at_ms: self.settings.started_at_ms,
            address: self
                .settings
                .advertise_ip
                .clone()
                .or_else(|| self.local_ip.clone()),
        };
        self.publish(TopicKind::Hello, encode_to_vec(&hello));
        self.publish_state();
        self.publish_offer(now);
        self.outbox.reset_backoff();
    }

    fn publish(&mut self, kind: TopicKind, payload: Vec<u8>) {
        self.actions.push(Action::Publish { kind, payload });
    }

    fn publish_state(&mut self) {
        let state = AgentState {
            version: PROTOCOL_VERSION,
            agent_id: self.settings.agent_id.clone(),
            liveness: if self.draining {
                Liveness::Draining
            } else {
                Liveness::Online
            },
            started_at_ms: self.settings.started_at_ms,
        };
        self.publish(TopicKind::State, encode_to_vec(&state));
    }

    /// The offer as it stands.
    pub fn offer(&self) -> Offer {
        let used = self.used();
        Offer {
            version: PROTOCOL_VERSION,
            agent_id: self.settings.agent_id.clone(),
            seq: self.offer_seq,
            available: Resources {
                cpus: round3((self.capacity.cpus - used.cpus).max(0.0)),
                mem_mib: round3((self.capacity.mem_mib - used.mem_mib).max(0.0)),
                // Less the log space every task's container may still fill: dockerd keeps up
                // to size × files of each, outside any task's declared disk.
                disk_mib: round3(
                    (self.capacity.disk_mib - used.disk_mib - self.log_budget_mib()).max(0.0),
                ),
                ports: if self.draining {
                    heapless::Vec::new()
                } else {
                    self.ports.free_ranges()
                },
            },
            used: Resources {
                cpus: round3(used.cpus),
                mem_mib: round3(used.mem_mib),
                disk_mib: round3(used.disk_mib),
                ports: self.ports.used_ranges(),
            },
            attributes: self.settings.attributes.clone(),
        }
    }

    fn publish_offer(&mut self, now: Millis) {
        self.next_offer_at = now + self.settings.offer_interval_ms;
        if !self.connected {
            return;
        }
        self.maybe_durable = true;
        self.offer_seq += 1;
        let offer = self.offer();
        self.publish(TopicKind::Offer, encode_to_vec(&offer));
    }

    // -----------------------------------------------------------------------------------------
    // Commands.

    fn on_command(&mut self, now: Millis, bytes: &[u8]) {
        let mut cmd = Box::<Command>::default();
        if let Err(e) = codec::decode_into(bytes, cmd.as_mut()) {
            let code = match e.kind() {
                outpost_protocol::DecodeErrorKind::TooLong { .. } => RejectCode::FieldTooLong,
                outpost_protocol::DecodeErrorKind::UnsupportedVersion { .. } => {
                    RejectCode::UnsupportedVersion
                }
                _ => RejectCode::Undecodable,
            };
            let id = codec::command_id_of(bytes).unwrap_or_default().to_string();
            self.reply(&id, Outcome::Rejected(reject(code, format_args!("{e}"))));
            return;
        }
        let id = cmd.command_id.to_string();
        if let Err(r) = self.authenticate(&mut cmd) {
            tracing::warn!(command = %id, code = ?r.code, reason = %r.message, "command refused");
            self.reply(&id, Outcome::Rejected(r));
            return;
        }
        if let Some((previous, _)) = self.seen_commands.get(&id) {
            // QoS 1 redelivery: answer again, do not execute again.
            let payload = previous.clone();
            self.publish(TopicKind::Reply, payload);
            return;
        }
        if let Some(epoch) = cmd.epoch {
            if epoch < self.leader_epoch {
                let r = reject(
                    RejectCode::StaleEpoch,
                    format_args!(
                        "command {id:?}: leadership epoch {epoch} is older than {}, the newest this agent has seen: it comes from a bridge that no longer leads",
                        self.leader_epoch
                    ),
                );
                tracing::warn!(command = %id, code = ?r.code, reason = %r.message, "command refused");
                self.reply(&id, Outcome::Rejected(r));
                return;
            }
            self.leader_epoch = epoch;
        }
        let issued_at_ms = cmd.issued_at_ms;
        let outcome = match std::mem::take(&mut cmd.kind) {
            CommandKind::Launch(spec) => self.launch(now, Box::new(spec)),
            CommandKind::Kill(k) => self.kill(now, &k.task_id, k.grace_period_s, AfterKill::Forget),
            CommandKind::Pull(p) => {
                self.actions.push(Action::EnsureImage {
                    launch: None,
                    app_id: None,
                    image: p.image,
                    force: p.force,
                });
                Ok(())
            }
            CommandKind::Drain(d) => {
                self.drain(now, d.policy);
                Ok(())
            }
            CommandKind::Reconcile(r) => {
                self.reconcile(&r.task_ids);
                Ok(())
            }
            CommandKind::ReadLogs(r) => self.read_logs(&id, r),
            CommandKind::Undrain => {
                self.undrain(now);
                Ok(())
            }
            CommandKind::StopLogs(s) => {
                // An unknown request has ended already: nothing to do, and nothing wrong.
                if self.log_streams.remove(s.request_id.as_str()) {
                    self.actions.push(Action::StopLogs {
                        request_id: s.request_id.to_string(),
                    });
                }
                Ok(())
            }
        };
        let outcome = match outcome {
            Ok(()) => Outcome::Accepted,
            Err(r) => Outcome::Rejected(r),
        };
        let payload = self.reply(&id, outcome);
        self.remember(id, payload, issued_at_ms);
    }

    /// Starts a logs stream of a task's current container, answered on the request's own
    /// topic; refused when the request id cannot be a topic level, the follow is too long, the
    /// task has no container, or [`MAX_LOG_STREAMS`] are under way.
    fn read_logs(&mut self, request_id: &str, r: ReadLogs) -> Result<(), Rejection> {
        if !outpost_protocol::topics::valid_agent_id(request_id) {
            return Err(reject(
                RejectCode::InvalidField,
                format_args!(
                    "command_id {request_id:?}: a logs request's id names its answer topic and must be 1-64 bytes of [A-Za-z0-9._-]"
                ),
            ));
        }
        if r.follow_s > MAX_FOLLOW_S {
            return Err(reject(
                RejectCode::InvalidField,
                format_args!(
                    "kind.read_logs.follow_s: {} is more than {MAX_FOLLOW_S} s; ask again with since_ms to follow longer",
                    r.follow_s
                ),
            ));
        }
        let id = r.task_id.as_str();
        let Some(task) = self.tasks.get(&r.task_id) else {
            return Err(reject(
                RejectCode::UnknownTask,
                format_args!("kind.read_logs.task_id: no task {id:?} on this agent"),
            ));
        };
        let Some(container_id) = task.phase.container() else {
            return Err(reject(
                RejectCode::UnknownTask,
                format_args!(
                    "kind.read_logs.task_id: task {id:?} has no container now ({}); ask again once it runs",
                    task.phase.name()
                ),
            ));
        };
        if self.log_streams.len() >= MAX_LOG_STREAMS {
            return Err(reject(
                RejectCode::Busy,
                format_args!(
                    "{MAX_LOG_STREAMS} logs streams are under way on this agent, the most it sends at once; try again when one ends"
                ),
            ));
        }
        self.log_streams.insert(request_id.to_string());
        self.actions.push(Action::StreamLogs {
            request_id: request_id.to_string(),
            container_id: container_id.to_string(),
            request: r,
        });
        Ok(())
    }

    /// Whether the broker connection is up.
    pub fn broker_up(&self) -> bool {
        self.broker_up
    }

    /// The logs streams under way, by request id.
    pub fn log_streams(&self) -> &std::collections::BTreeSet<String> {
        &self.log_streams
    }

    fn reply(&mut self, command_id: &str, outcome: Outcome) -> Vec<u8> {
        let reply = CommandReply {
            version: PROTOCOL_VERSION,
            command_id: outpost_protocol::CommandId::new(command_id).unwrap_or_default(),
            outcome,
        };
        let payload = encode_to_vec(&reply);
        self.publish(TopicKind::Reply, payload.clone());
        payload
    }

    fn remember(&mut self, id: String, reply: Vec<u8>, issued_at_ms: Millis) {
        if self.seen_order.len() >= SEEN_COMMANDS
            && let Some(old) = self.seen_order.pop_front()
            && let Some((_, issued)) = self.seen_commands.remove(&old)
        {
            self.replay_floor_ms = self.replay_floor_ms.max(issued);
        }
        self.seen_order.push_back(id.clone());
        self.seen_commands.insert(id, (reply, issued_at_ms));
    }

    /// With trusted keys configured, a command must be signed by one of them, name this agent,
    /// and be neither seen before nor outside the replay window. Without keys, every command
    /// passes (and a seen one is answered again, as a QoS 1 redelivery).
    fn authenticate(&self, cmd: &mut Command) -> Result<(), Rejection> {
        if self.settings.trusted_keys.is_empty() {
            return Ok(());
        }
        let message = cmd.signed_bytes();
        let cmd = &*cmd;
        let id = cmd.command_id.as_str();
        let me = self.settings.agent_id.as_str();
        let Some(signature) = &cmd.signature else {
            return Err(reject(
                RejectCode::Unauthenticated,
                format_args!(
                    "command {id:?} is not signed; this agent takes only commands signed by a trusted bridge key"
                ),
            ));
        };
        match &cmd.agent_id {
            Some(a) if a.as_str() == me => {}
            Some(a) => {
                return Err(reject(
                    RejectCode::Unauthenticated,
                    format_args!(
                        "command {id:?} is for agent {:?}, not this agent ({me:?})",
                        a.as_str()
                    ),
                ));
            }
            None => {
                return Err(reject(
                    RejectCode::Unauthenticated,
                    format_args!("command {id:?} names no agent_id; signed commands must"),
                ));
            }
        }
        let verified = self.settings.trusted_keys.iter().any(|key| {
            ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, key)
                .verify(&message, &signature.0)
                .is_ok()
        });
        if !verified {
            return Err(reject(
                RejectCode::Unauthenticated,
                format_args!("command {id:?}: the signature does not verify with any trusted key"),
            ));
        }
        if self.seen_commands.contains_key(id) {
            return Err(reject(
                RejectCode::Replay,
                format_args!("command {id:?} was carried out before; not again"),
            ));
        }
        // The window compares the bridge's clock with this host's wall clock: a host whose
        // clock is off by more than the window refuses every signed command, naming the skew.
        let window = self.settings.replay_window_ms;
        let issued = cmd.issued_at_ms;
        let wall = self.wall_ms;
        if issued <= self.replay_floor_ms {
            return Err(reject(
                RejectCode::Replay,
                format_args!(
                    "command {id:?}: issued_at_ms {issued} is not newer than a command this agent forgot; a replay"
                ),
            ));
        }
        if issued.saturating_add(window) < wall {
            return Err(reject(
                RejectCode::Replay,
                format_args!(
                    "command {id:?}: issued_at_ms {issued} is {} s before this agent's clock ({wall}), outside the replay window ({} s): a replay, or this host's clock is ahead",
                    (wall - issued) / 1000,
                    window / 1000
                ),
            ));
        }
        if issued > wall.saturating_add(window) {
            return Err(reject(
                RejectCode::Replay,
                format_args!(
                    "command {id:?}: issued_at_ms {issued} is {} s after this agent's clock ({wall}), more than the replay window ({} s): this host's clock is behind",
                    (issued - wall) / 1000,
                    window / 1000
                ),
            ));
        }
        Ok(())
    }

    fn launch(&mut self, now: Millis, spec: Box<TaskSpec>) -> Result<(), Rejection> {
        if let Some(why) = &self.storage_failure {
            return Err(reject(
                RejectCode::StorageFailure,
                format_args!(
                    "the agent cannot persist its state ({why}); launches are refused until it can"
                ),
            ));
        }
        if self.draining {
            return Err(reject(
                RejectCode::Draining,
                format_args!("the agent is draining and accepts no launches"),
            ));
        }
        validate::spec(&spec)?;
        validate::policy(&spec, &self.settings.policy)?;
        if self.tasks.contains_key(&spec.task_id) {
            return Err(reject(
                RejectCode::DuplicateTask,
                format_args!("task_id: {:?} already runs here", spec.task_id.as_str()),
            ));
        }
        let used = self.used();
        for (name, want, have) in [
            ("cpus", spec.cpus, self.capacity.cpus - used.cpus),
            ("mem", spec.mem_mib, self.capacity.mem_mib - used.mem_mib),
            (
                "disk",
                spec.disk_mib,
                self.capacity.disk_mib - used.disk_mib - self.log_budget_mib(),
            ),
        ] {
            if want > have + 1e-9 {
                return Err(reject(
                    RejectCode::InsufficientResources,
                    format_args!(
                        "{name}: {want} requested, {} offered",
                        round3(have.max(0.0))
                    ),
                ));
            }
        }
        let wanted: Vec<u16> = spec.port_mappings.iter().map(|m| m.host_port).collect();
        let host_ports = self.ports.allocate(&spec.task_id, &wanted).map_err(|e| {
            let i = |p: u16| wanted.iter().position(|&w| w == p).unwrap_or(0);
            match e {
                PortError::OutOfRange(p) => reject(
                    RejectCode::PortUnavailable,
                    format_args!(
                        "port_mappings[{}].host_port: {p} is outside the agent's range {}-{}",
                        i(p),
                        self.ports.range().begin,
                        self.ports.range().end
                    ),
                ),
                PortError::InUse(p, holder) => reject(
                    RejectCode::PortUnavailable,
                    format_args!(
                        "port_mappings[{}].host_port: {p} is in use by task {:?}",
                        i(p),
                        holder.as_str()
                    ),
                ),
                PortError::Taken(p) => reject(
                    RejectCode::PortUnavailable,
                    format_args!(
                        "port_mappings[{}].host_port: {p} is taken by another process on the host",
                        i(p)
                    ),
                ),
                PortError::Removing(p, container) => reject(
                    RejectCode::PortUnavailable,
                    format_args!(
                        "port_mappings[{}].host_port: {p} is still held by container {} that the agent is removing",
                        i(p),
                        &container[..container.len().min(12)]
                    ),
                ),
                PortError::Exhausted => reject(
                    RejectCode::PortUnavailable,
                    format_args!("port_mappings: no free host port left in the agent's range"),
                ),
            }
        })?;
        let task = Task::new(&spec, host_ports);
        let id = task.task_id.clone();
        self.tasks.insert(id.clone(), task);
        self.status(&id, TaskState::Staging, None, None);
        self.begin_attempt(&id);
        self.publish_offer(now);
        Ok(())
    }

    fn begin_attempt(&mut self, id: &TaskId) {
        let Some(t) = self.tasks.get_mut(id) else {
            return;
        };
        t.attempt += 1;
        t.phase = Phase::Pulling;
        t.container_ip = None;
        t.stop_checks();
        let spec = t.spec();
        self.actions.push(Action::EnsureImage {
            launch: Some((id.clone(), t.attempt)),
            app_id: spec.app_id.clone(),
            image: spec.image.clone(),
            force: spec.force_pull,
        });
    }

    fn kill(
        &mut self,
        now: Millis,
        id: &TaskId,
        grace: Option<u32>,
        after: AfterKill,
    ) -> Result<(), Rejection> {
        let Some(t) = self.tasks.get_mut(id) else {
            return Err(reject(
                RejectCode::UnknownTask,
                format_args!("task_id: no task {:?} on this agent", id.as_str()),
            ));
        };
        let grace_s = grace.unwrap_or(t.kill_grace_period_s);
        match t.phase.container().map(str::to_string) {
            Some(container_id) => {
                if matches!(t.phase, Phase::Killing { .. }) {
                    // Already on its way out; a second kill changes only what follows.
                    if let Phase::Killing { then, .. } = &mut t.phase {
                        *then = after.max(*then);
                    }
                    return Ok(());
                }
                t.phase = Phase::Killing {
                    container_id: container_id.clone(),
                    then: after,
                    deadline: now + u64::from(grace_s) * 1000 + KILL_SLACK_MS,
                };
                self.status(id, TaskState::Killing, None, None);
                self.actions.push(Action::Stop {
                    container_id,
                    grace_s,
                });
            }
            None => {
                // Nothing runs (pulling, creating, or waiting to restart): done at once. A
                // container created meanwhile is removed when its creation reports.
                let reason = matches!(t.phase, Phase::Pulling | Phase::Creating)
                    .then_some(Reason::TaskKilledDuringLaunch);
                self.status(id, TaskState::Killed, reason, None);
                self.forget(now, id);
            }
        }
        Ok(())
    }

    fn drain(&mut self, now: Millis, policy: DrainPolicy) {
        let was = self.draining;
        self.draining = true;
        if !was {
            self.publish_state();
        }
        if policy == DrainPolicy::KillAll {
            let ids: Vec<TaskId> = self.tasks.keys().cloned().collect();
            for id in ids {
                let _ = self.kill(now, &id, None, AfterKill::Forget);
            }
        }
        self.publish_offer(now);
    }

    /// Ends a drain: launches are accepted again, the offer and the liveness say so.
    fn undrain(&mut self, now: Millis) {
        if std::mem::take(&mut self.draining) {
            self.publish_state();
        }
        self.publish_offer(now);
    }

    fn reconcile(&mut self, ids: &[TaskId]) {
        let all: Vec<TaskId> = if ids.is_empty() {
            self.tasks.keys().cloned().collect()
        } else {
            ids.to_vec()
        };
        for id in all {
            let status = match self.tasks.get(&id) {
                Some(t) => self.make_status(&id, t.last_state, Some(Reason::Reconciliation), None),
                None => {
                    self.make_status(&id, TaskState::Unknown, Some(Reason::Reconciliation), None)
                }
            };
            // Reconciliation answers are not queued for acknowledgement (as in Mesos): the
            // bridge asks again if it missed them.
            self.publish(TopicKind::Status, encode_to_vec(&status));
        }
    }

    fn on_ack(&mut self, bytes: &[u8]) {
        // An undecodable ack is dropped: the status is re-sent and acknowledged again.
        if let Ok(ack) = decode::<StatusAck>(bytes) {
            self.outbox.ack(&ack.uuid);
        }
    }

    // -----------------------------------------------------------------------------------------
    // Status updates.

    fn make_status(
        &mut self,
        id: &TaskId,
        state: TaskState,
        reason: Option<Reason>,
        message: Option<&str>,
    ) -> TaskStatus {
        self.status_counter += 1;
        let mut uuid = [0u8; 16];
        uuid[..8].copy_from_slice(&self.settings.incarnation.to_be_bytes());
        uuid[8..].copy_from_slice(&self.status_counter.to_be_bytes());
        let task = self.tasks.get(id);
        TaskStatus {
            version: PROTOCOL_VERSION,
            agent_id: self.settings.agent_id.clone(),
            task_id: id.clone(),
            uuid,
            state,
            reason,
            message: message.map(validate::note),
            healthy: task.and_then(|t| t.healthy),
            ready: task.and_then(|t| t.ready),
            timestamp_ms: self.wall_ms,
            exit_code: None,
            host_ports: task
                .map(|t| t.host_ports.iter().copied().collect())
                .unwrap_or_default(),
            container_ip: task.and_then(|t| t.container_ip.clone()),
        }
    }

    /// Records and queues a status update of task `id`.
    fn status(
        &mut self,
        id: &TaskId,
        state: TaskState,
        reason: Option<Reason>,
        message: Option<&str>,
    ) {
        let s = self.make_status(id, state, reason, message);
        self.queue_status(s);
    }

    fn queue_status(&mut self, s: TaskStatus) {
        self.maybe_durable = true;
        if let Some(t) = self.tasks.get_mut(&s.task_id) {
            t.last_state = s.state;
        }
        self.outbox.push(s);
    }

    /// Drops a task for good: its ports and resources return to the offer.
    fn forget(&mut self, now: Millis, id: &TaskId) {
        self.tasks.remove(id);
        self.ports.release(id);
        self.publish_offer(now);
    }

    // -----------------------------------------------------------------------------------------
    // Launch progress.

    fn current(&mut self, id: &TaskId, attempt: u32) -> Option<&mut Task> {
        self.tasks.get_mut(id).filter(|t| t.attempt == attempt)
    }

    fn on_image_ready(&mut self, id: &TaskId, attempt: u32) {
        let Some(t) = self.current(id, attempt) else {
            return;
        };
        if t.phase != Phase::Pulling {
            return;
        }
        t.phase = Phase::Creating;
        let action = Action::Create {
            task_id: id.clone(),
            attempt,
            spec: t.spec(),
            host_ports: t.host_ports.to_vec(),
        };
        self.actions.push(action);
    }

    fn on_created(&mut self, id: &TaskId, attempt: u32, container_id: String) {
        let live = self
            .current(id, attempt)
            .filter(|t| t.phase == Phase::Creating);
        let Some(t) = live else {
            // The task was killed or moved on while its container was being created.
            self.actions.push(Action::Remove { container_id });
            return;
        };
        t.phase = Phase::Starting {
            container_id: container_id.clone(),
        };
        self.status(id, TaskState::Starting, None, None);
        self.actions.push(Action::Start {
            task_id: id.clone(),
            attempt,
            container_id,
        });
    }

    fn on_started(&mut self, now: Millis, id: &TaskId, attempt: u32, ip: Option<String>) {
        let Some(t) = self.current(id, attempt) else {
            return;
        };
        let Phase::Starting { container_id } = &t.phase else {
            return;
        };
        t.phase = Phase::Running {
            container_id: container_id.clone(),
            since: now,
        };
        t.container_ip = ip.and_then(|ip| outpost_protocol::IpText::new(&ip).ok());
        t.port_retries = 0;
        t.start_checks(now);
        self.status(id, TaskState::Running, None, None);
    }

    fn on_launch_failed(
        &mut self,
        now: Millis,
        id: &TaskId,
        attempt: u32,
        reason: Reason,
        msg: &str,
    ) {
        let Some(t) = self.current(id, attempt) else {
            return;
        };
        let container = t.phase.container().map(str::to_string);
        let dynamic = t.wanted_ports.contains(&0);
        let retries = t.port_retries;
        if let Some(container_id) = container {
            self.actions.push(Action::Remove { container_id });
        }
        // A host port something else took between the choice and the start ("port is already
        // allocated"): with ports the agent picks, another port and at once, a few times, and
        // nothing reported; a fixed port fails the task with dockerd's reason.
        let taken_port = reason == Reason::ContainerLaunchFailed
            && (msg.contains("port is already allocated")
                || msg.contains("address already in use"));
        if taken_port && dynamic && retries < task::PORT_RETRIES {
            if let Some(t) = self.tasks.get_mut(id) {
                t.port_retries += 1;
            }
            tracing::warn!(task = %id.as_str(), error = %msg, retry = retries + 1, "a host port was taken: starting again on another");
            self.move_dynamic_ports(id);
            self.begin_attempt(id);
            return;
        }
        self.status(id, TaskState::Failed, Some(reason), Some(msg));
        self.move_dynamic_ports(id);
        self.after_end(now, id, false);
    }

    /// After a failed launch, gives the task's host-port-0 mappings other ports: the failure
    /// may be a port something outside the agent holds, and the next attempt should not hit it
    /// again. Ports never seen running are nobody's promise yet.
    fn move_dynamic_ports(&mut self, id: &TaskId) {
        let Some(t) = self.tasks.get_mut(id) else {
            return;
        };
        for (i, &wanted) in t.wanted_ports.iter().enumerate() {
            if wanted != 0 {
                continue;
            }
            let Some(old) = t.host_ports.get(i).copied() else {
                continue;
            };
            // Round-robin: the new port is another one whenever the range has another free.
            if let Ok(new) = self.ports.allocate(id, &[0]) {
                self.ports.release_port(old);
                t.host_ports[i] = new[0];
            }
        }
    }

    fn on_exited(&mut self, now: Millis, container_id: &str, exit_code: i64, oom: bool) {
        let Some((id, t)) = self
            .tasks
            .find_mut(|t| t.phase.container() == Some(container_id))
        else {
            return;
        };
        let killing = match &t.phase {
            Phase::Killing { then, .. } => Some(*then),
            _ => None,
        };
        self.actions.push(Action::Remove {
            container_id: container_id.to_string(),
        });
        let code = i32::try_from(exit_code).unwrap_or(i32::MIN);
        let mut s = match killing {
            Some(then) => {
                let reason = (then == AfterKill::Restart).then_some(Reason::TaskUnhealthyCheck);
                self.make_status(&id, TaskState::Killed, reason, None)
            }
            None if exit_code == 0 => self.make_status(&id, TaskState::Finished, None, None),
            None => {
                let reason = if oom {
                    Reason::ContainerLimitationMemory
                } else {
                    Reason::CommandExecutorFailed
                };
                let msg = format!("container exited with code {exit_code}");
                self.make_status(&id, TaskState::Failed, Some(reason), Some(&msg))
            }
        };
        s.exit_code = Some(code);
        self.queue_status(s);
        match killing {
            Some(AfterKill::Forget) => self.forget(now, &id),
            Some(AfterKill::Restart) => self.after_end(now, &id, false),
            None => self.after_end(now, &id, exit_code == 0),
        }
    }

    /// After the container of `id` ended: restart it after its backoff, or forget it.
    fn after_end(&mut self, now: Millis, id: &TaskId, success: bool) {
        let Some(t) = self.tasks.get_mut(id) else {
            return;
        };
        if !t.should_restart(success) || self.draining {
            self.forget(now, id);
            return;
        }
        let delay = t.backoff_delay_ms();
        t.restarts += 1;
        t.phase = Phase::Backoff { until: now + delay };
        t.stop_checks();
    }

    fn on_probe(&mut self, now: Millis, id: &TaskId, attempt: u32, check: usize, ok: bool) {
        let Some(t) = self.current(id, attempt) else {
            return;
        };
        if check == task::READINESS {
            let running = matches!(t.phase, Phase::Running { .. });
            if t.readiness_result(now, ok && running) && running {
                self.status(id, TaskState::Running, None, Some("readiness check passed"));
            }
            return;
        }
        let (Some(spec), Some(state)) = (t.health_checks.get(check), t.checks.get_mut(check))
        else {
            return;
        };
        if !matches!(t.phase, Phase::Running { .. }) {
            state.in_flight = false;
            return;
        }
        match state.result(spec, now, ok) {
            Verdict::Unchanged => {}
            Verdict::Changed(_) => {
                let overall = health::overall(&t.checks);
                if overall != t.healthy {
                    t.healthy = overall;
                    self.status(
                        id,
                        TaskState::Running,
                        Some(Reason::HealthCheckStatusUpdated),
                        None,
                    );
                }
            }
            Verdict::Kill => {
                if t.healthy != Some(false) {
                    t.healthy = Some(false);
                    self.status(
                        id,
                        TaskState::Running,
                        Some(Reason::HealthCheckStatusUpdated),
                        None,
                    );
                }
                let _ = self.kill(now, id, None, AfterKill::Restart);
                self.maybe_durable = true;
            }
        }
    }

    fn on_listed(&mut self, now: Millis, observed: &[ObservedContainer]) {
        let known: Vec<(TaskId, String)> = self
            .tasks
            .iter()
            .filter_map(|(id, t)| t.phase.container().map(|c| (id.clone(), c.to_string())))
            .collect();
        for (_, container_id) in &known {
            match observed.iter().find(|o| &o.container_id == container_id) {
                Some(o) if o.running => {}
                Some(o) => self.on_exited(now, container_id, o.exit_code, false),
                // Gone without a trace (removed by hand, or dockerd lost it).
                None => self.on_exited(now, container_id, 137, false),
            }
        }
        // Labelled containers no task owns (e.g. left by a crash): remove them.
        for o in observed {
            let owned = known.iter().any(|(_, c)| c == &o.container_id);
            let creating = self
                .tasks
                .iter()
                .any(|(id, t)| id.as_str() == o.task_id && t.phase == Phase::Creating);
            if !owned && !creating {
                self.remove_unowned(o);
            }
        }
        if self
            .ports
            .removed(|c| observed.iter().any(|o| o.container_id == c))
        {
            self.publish_offer(now);
        }
    }

    /// Removes a labelled container no task owns, holding its host ports until it is gone.
    pub(super) fn remove_unowned(&mut self, o: &ObservedContainer) {
        self.ports.hold_for_removal(&o.container_id, &o.host_ports);
        self.actions.push(Action::Remove {
            container_id: o.container_id.clone(),
        });
    }

    // -----------------------------------------------------------------------------------------
    // Time.

    fn on_time(&mut self, now: Millis) {
        if self.list_retry_at.is_some_and(|at| now >= at) {
            self.list_retry_at = None;
            self.actions.push(Action::ListContainers);
        }
        // Only the tasks with something due, from the deadline index (this runs on every event).
        for id in self.tasks.due(now) {
            self.task_time(now, &id);
        }
        if self.connected {
            for s in self.outbox.due(now) {
                self.publish(TopicKind::Status, encode_to_vec(&s));
            }
            if now >= self.next_offer_at {
                self.publish_offer(now);
            }
        }
    }

    fn task_time(&mut self, now: Millis, id: &TaskId) {
        let Some(t) = self.tasks.get(id) else {
            return;
        };
        // Everything but sending probes changes durable state.
        let probes_only = match &t.phase {
            Phase::Running { since, .. } => !(t.restarts > 0 && now >= since + BACKOFF_RESET_MS),
            _ => false,
        };
        self.maybe_durable |= !probes_only;
        let Some(t) = self.tasks.get_mut(id) else {
            return;
        };
        match &t.phase {
            Phase::Backoff { until } if *until <= now => self.begin_attempt(id),
            Phase::Killing {
                container_id,
                deadline,
                ..
            } if *deadline <= now => {
                // The exit never came (dockerd lost it): presume the container gone.
                let container_id = container_id.clone();
                self.on_exited(now, &container_id, 137, false);
            }
            Phase::Running { since, .. } => {
                if now >= since + BACKOFF_RESET_MS && t.healthy != Some(false) {
                    t.restarts = 0;
                }
                let probes = t.due_probes(now);
                self.actions.extend(probes);
            }
            _ => {}
        }
    }
}

/// Rounds to 3 decimals, so offers do not show float noise such as 0.30000000000000004.
fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}
