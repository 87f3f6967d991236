//! The bridge's state and decisions, without I/O: agents (from their hello, offer and liveness
//! messages), apps and their deployments, tasks (from status updates), and the scheduler that
//! places, replaces, scales and upgrades. Time comes in as an argument; what must happen goes
//! out as [`Effect`]s (MQTT publishes, Marathon events) and [`Write`]s to the store, which the
//! runtime commits before it sends anything.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use outpost_protocol::codec::encode_to_vec;
use outpost_protocol::{
    self as wire, AgentState, Command, CommandKind, CommandReply, Hello, KillTask, Liveness, Offer,
    Outcome, PROTOCOL_VERSION, Reconcile, StatusAck, TaskState, TaskStatus, Topic, TopicKind,
};

use crate::app::AppDefinition;
use crate::placement::{self, Amount, Candidate, Constraint};
use crate::store::{StoreError, Table, Write};
use crate::time::{Millis, rfc3339};

/// Something the runtime must do after a core call.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Publish to MQTT (QoS 1).
    Publish {
        /// Topic.
        topic: String,
        /// CBOR payload.
        payload: Vec<u8>,
    },
    /// A Marathon event for `/v2/events` subscribers.
    Event(Value),
    /// An event for a Mesos framework's subscription stream.
    Framework {
        /// The framework.
        framework_id: String,
        /// The event (`{"type": ..., ...}`).
        event: Value,
    },
    /// The framework is gone (TEARDOWN, failover timeout): close its stream.
    EndStream {
        /// The framework.
        framework_id: String,
    },
}

/// Whether an agent is there, as its retained liveness message says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AgentLiveness {
    /// Not heard from since the bridge started (its retained liveness is on its way).
    Unknown,
    /// Connected; takes launches.
    Online,
    /// Connected; keeps no tasks and takes no launches.
    Draining,
    /// Its connection to the broker is gone (its last will): its tasks are UNREACHABLE.
    Offline,
}

impl AgentLiveness {
    /// Its name, as the UI and the logs show it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Unknown => "unknown",
            Self::Online => "online",
            Self::Draining => "draining",
            Self::Offline => "offline",
        }
    }

    /// Connected (online or draining): commands reach it.
    pub fn connected(self) -> bool {
        matches!(self, Self::Online | Self::Draining)
    }
}

/// An agent as the bridge knows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AgentRecord {
    /// Id.
    pub id: String,
    /// Host name.
    pub hostname: String,
    /// Attributes (for constraints).
    pub attributes: BTreeMap<String, String>,
    /// Online, draining or offline.
    pub liveness: AgentLiveness,
    /// The agent process's start time, telling one run from the next.
    pub started_at_ms: u64,
    /// Last message from it.
    pub last_seen_ms: Millis,
    /// Since when it is offline.
    pub unreachable_since_ms: Option<Millis>,
    /// The IP address it advertises (its hello), for Mesos pids (`slave(1)@IP:5051`).
    #[serde(default)]
    pub address: Option<String>,
    /// Its latest offer.
    #[serde(skip)]
    pub offer: Option<OfferView>,
    /// Where the search for the next dynamic host port starts (round-robin, as the agent
    /// itself hands ports out: a port just freed is not given again at once).
    #[serde(skip)]
    pub port_cursor: u16,
}

impl AgentRecord {
    /// Whether it takes launches.
    pub fn online(&self) -> bool {
        self.liveness == AgentLiveness::Online
    }
}

/// What the bridge keeps of an offer.
#[derive(Debug, Clone, Default)]
pub struct OfferView {
    /// Offer sequence number.
    pub seq: u64,
    /// Free resources.
    pub available: Amount,
    /// Resources used by tasks.
    pub used: Amount,
    /// Free port ranges.
    pub ranges: Vec<(u16, u16)>,
    /// How many ports the ranges hold.
    pub port_count: usize,
    /// Port ranges in use by tasks.
    pub used_ranges: Vec<(u16, u16)>,
}

/// The health history of a task, as Marathon's `healthCheckResults`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct HealthRecord {
    /// Latest result.
    pub alive: Option<bool>,
    /// Failed results in a row.
    pub consecutive_failures: u32,
    /// First success.
    pub first_success_ms: Option<Millis>,
    /// Latest success.
    pub last_success_ms: Option<Millis>,
    /// Latest failure.
    pub last_failure_ms: Option<Millis>,
    /// Why it failed last.
    pub last_failure_cause: Option<String>,
}

/// A task (one instance of an app on one agent).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskRecord {
    /// Task id, `app.uuid`.
    pub id: String,
    /// The app.
    pub app_id: String,
    /// The agent.
    pub agent_id: String,
    /// The agent's host name.
    pub host: String,
    /// The app's config version the task runs.
    pub version: String,
    /// Mesos state number.
    pub state: u8,
    /// The state before the agent went away (shown again if it comes back).
    pub host_ports: Vec<u16>,
    /// The host ports the task was launched with (fixed ones and those placement picked), held
    /// until the agent reports them.
    #[serde(default)]
    pub fixed_ports: Vec<u16>,
    /// Service ports of the app at launch.
    pub service_ports: Vec<u16>,
    /// Container IP.
    pub ip: Option<String>,
    /// When the launch was sent.
    pub staged_at_ms: Millis,
    /// When it last became RUNNING.
    pub started_at_ms: Option<Millis>,
    /// Health.
    pub health: HealthRecord,
    /// Uuids of the latest status updates (duplicate detection).
    pub seen: Vec<[u8; 16]>,
    /// Since when its agent is unreachable.
    pub unreachable_since_ms: Option<Millis>,
    /// Unreachable longer than `inactiveAfterSeconds`: replaced, killed if it comes back.
    pub inactive: bool,
    /// The bridge asked the agent to kill it.
    pub killing: bool,
    /// The launch command's id.
    pub launch_command: String,
    /// Resources it holds.
    pub cpus: f64,
    /// MiB of memory.
    pub mem: f64,
    /// MiB of disk.
    pub disk: f64,
}

impl TaskRecord {
    /// Its Mesos state.
    pub fn state(&self) -> TaskState {
        TaskState::from_mesos_number(self.state).unwrap_or(TaskState::Unknown)
    }

    /// RUNNING, and healthy if it has health checks.
    pub fn ready(&self, has_checks: bool) -> bool {
        self.state() == TaskState::Running
            && self.unreachable_since_ms.is_none()
            && (!has_checks || self.health.alive == Some(true))
    }
}

/// `lastTaskFailure`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskFailure {
    /// Task.
    pub task_id: String,
    /// Host.
    pub host: String,
    /// Agent.
    pub agent_id: String,
    /// Mesos state name.
    pub state: String,
    /// Message.
    pub message: String,
    /// When.
    pub at_ms: Millis,
    /// App version.
    pub version: String,
}

/// A running deployment of one app.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Deployment {
    /// Id (a uuid).
    pub id: String,
    /// The app version it deploys.
    pub version: String,
    /// Marathon's action name: StartApplication, ScaleApplication, RestartApplication,
    /// StopApplication.
    pub action: String,
    /// The definition before it, for a rollback.
    pub previous: Option<AppDefinition>,
}

/// An app with what Marathon computes about it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AppRecord {
    /// The definition.
    pub def: AppDefinition,
    /// Latest version (any change).
    pub version: String,
    /// Latest scaling.
    pub last_scaling_at: String,
    /// Latest config change; tasks of another version are replaced.
    pub last_config_change_at: String,
    /// The running deployment.
    pub deployment: Option<Deployment>,
    /// Latest failure.
    pub last_failure: Option<TaskFailure>,
    /// Failed launches in a row (backoff).
    pub failures: u32,
    /// No launch before this.
    pub delay_until_ms: Millis,
    /// Being deleted: every task is killed, then the app is removed.
    pub deleting: bool,
}

/// An API error with Marathon's status and body.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// HTTP status.
    pub status: u16,
    /// JSON body.
    pub body: Value,
}

impl ApiError {
    fn not_found(what: &str) -> Self {
        Self {
            status: 404,
            body: json!({ "message": format!("{what} does not exist") }),
        }
    }

    fn locked(deployment: &Deployment) -> Self {
        Self {
            status: 409,
            body: json!({
                "message": format!("App is locked by one or more deployments. Override with the option '?force=true'. View details at '/v2/deployments/{}'.", deployment.id),
                "deployments": [{ "id": deployment.id }],
            }),
        }
    }

    /// 422 with details.
    pub fn invalid(details: Value) -> Self {
        Self {
            status: 422,
            body: json!({ "message": "Object is not valid", "details": details }),
        }
    }
}

/// How many status uuids a task remembers for duplicate detection.
const SEEN: usize = 16;
/// Service ports Marathon assigns from.
const SERVICE_PORTS: std::ops::RangeInclusive<u16> = 10000..=20000;

/// The bridge's state.
#[derive(Default)]
pub struct Core {
    agents: BTreeMap<String, AgentRecord>,
    apps: BTreeMap<String, AppRecord>,
    tasks: BTreeMap<String, TaskRecord>,
    by_command: HashMap<String, String>,
    effects: Vec<Effect>,
    writes: BTreeMap<(Table, String), Option<Vec<u8>>>,
    /// Apps whose tasks changed since the last [`Core::settle`].
    dirty: BTreeSet<String>,
    /// Mesos frameworks on the scheduler API.
    frameworks: BTreeMap<String, Framework>,
    /// Their tasks.
    fw_tasks: BTreeMap<String, FwTask>,
    /// Launch command id -> framework task.
    fw_by_command: HashMap<String, String>,
    /// Torn-down frameworks, kept so their ids are refused with ERROR.
    removed_frameworks: BTreeMap<String, FrameworkRecord>,
    /// Frameworks and framework tasks changed since the last [`Core::take_writes`].
    fw_dirty: BTreeSet<(Table, String)>,
    /// Status updates seen (metrics).
    pub status_updates: u64,
    /// Signs every command, when the bridge has a key.
    signer: Option<crate::signing::Signer>,
    /// A task not RUNNING this long after its launch is killed and replaced (0: the default).
    task_launch_timeout_ms: Millis,
}

/// Marathon's default `--task_launch_timeout`: five minutes.
pub const DEFAULT_TASK_LAUNCH_TIMEOUT_MS: Millis = 300_000;

impl Core {
    /// A core with what the store held, Mesos frameworks and their tasks included (restored
    /// disconnected, their failover timeouts running from `now` at the latest).
    pub fn restore_all(
        now: Millis,
        apps: Vec<AppRecord>,
        tasks: Vec<TaskRecord>,
        agents: Vec<AgentRecord>,
        frameworks: Vec<FrameworkRecord>,
        fw_tasks: Vec<FwTask>,
    ) -> Self {
        let mut core = Self::default();
        core.restore_frameworks(now, frameworks, fw_tasks);
        for a in apps {
            core.apps.insert(a.def.id.clone(), a);
        }
        for t in tasks {
            core.by_command
                .insert(t.launch_command.clone(), t.id.clone());
            core.tasks.insert(t.id.clone(), t);
        }
        for mut a in agents {
            // Whether it is still there is for the broker to say (its retained liveness
            // arrives on subscribe); its first "online" then reconciles its tasks.
            if a.liveness != AgentLiveness::Offline {
                a.liveness = AgentLiveness::Unknown;
            }
            core.agents.insert(a.id.clone(), a);
        }
        core
    }

    /// A core with what `store` holds (see [`Core::restore_all`]).
    pub fn load(now: Millis, store: &dyn crate::store::StateStore) -> Result<Self, StoreError> {
        use crate::store::load;
        Ok(Self::restore_all(
            now,
            load(store, Table::Apps)?,
            load(store, Table::Tasks)?,
            load(store, Table::Agents)?,
            load(store, Table::Frameworks)?,
            load(store, Table::FwTasks)?,
        ))
    }

    /// Kills and replaces a Marathon task that is not RUNNING `ms` after its launch.
    pub fn set_task_launch_timeout_ms(&mut self, ms: Millis) {
        self.task_launch_timeout_ms = ms;
    }

    fn task_launch_timeout(&self) -> Millis {
        if self.task_launch_timeout_ms == 0 {
            DEFAULT_TASK_LAUNCH_TIMEOUT_MS
        } else {
            self.task_launch_timeout_ms
        }
    }

    /// Signs every command from now on with `signer`.
    pub fn set_signer(&mut self, signer: Option<crate::signing::Signer>) {
        self.signer = signer;
    }

    /// Takes the effects produced so far.
    pub fn take_effects(&mut self) -> Vec<Effect> {
        std::mem::take(&mut self.effects)
    }

    /// Takes the store writes produced so far (commit them before running the effects).
    pub fn take_writes(&mut self) -> Vec<Write> {
        for (table, id) in std::mem::take(&mut self.fw_dirty) {
            let v = match table {
                Table::Frameworks => self
                    .framework_record(&id)
                    .map(|r| serde_json::to_vec(&r).expect("framework serialises")),
                _ => self
                    .fw_tasks
                    .get(&id)
                    .map(|t| serde_json::to_vec(t).expect("framework task serialises")),
            };
            self.writes.insert((table, id), v);
        }
        std::mem::take(&mut self.writes)
            .into_iter()
            .map(|((table, key), value)| Write { table, key, value })
            .collect()
    }

    /// Puts back writes a failed commit did not store, under any newer write of the same
    /// record (which supersedes it), so the next commit stores them.
    pub fn keep_writes(&mut self, writes: Vec<Write>) {
        for w in writes {
            self.writes.entry((w.table, w.key)).or_insert(w.value);
        }
    }

    /// Agents.
    pub fn agents(&self) -> impl Iterator<Item = &AgentRecord> {
        self.agents.values()
    }

    /// Apps.
    pub fn apps(&self) -> impl Iterator<Item = &AppRecord> {
        self.apps.values()
    }

    /// One app.
    pub fn app(&self, id: &str) -> Option<&AppRecord> {
        self.apps.get(id)
    }

    /// Tasks, optionally of one app.
    pub fn tasks<'a>(&'a self, app: Option<&'a str>) -> impl Iterator<Item = &'a TaskRecord> + 'a {
        self.tasks
            .values()
            .filter(move |t| app.is_none_or(|a| t.app_id == a))
    }

    /// One task.
    pub fn task(&self, id: &str) -> Option<&TaskRecord> {
        self.tasks.get(id)
    }

    fn save_task(&mut self, id: &str) {
        let v = self
            .tasks
            .get(id)
            .map(|t| serde_json::to_vec(t).expect("task serialises"));
        self.writes.insert((Table::Tasks, id.to_string()), v);
    }

    fn save_app(&mut self, id: &str) {
        let v = self
            .apps
            .get(id)
            .map(|a| serde_json::to_vec(a).expect("app serialises"));
        self.writes.insert((Table::Apps, id.to_string()), v);
    }

    fn save_agent(&mut self, id: &str) {
        let v = self
            .agents
            .get(id)
            .map(|a| serde_json::to_vec(a).expect("agent serialises"));
        self.writes.insert((Table::Agents, id.to_string()), v);
    }

    fn event(&mut self, now: Millis, kind: &str, mut body: Value) {
        body["eventType"] = json!(kind);
        body["timestamp"] = json!(rfc3339(now));
        self.effects.push(Effect::Event(body));
    }

    fn command(&mut self, now: Millis, agent: &str, command_id: &str, kind: CommandKind) {
        let Ok(topic) = Topic::new(agent, TopicKind::Cmd) else {
            tracing::warn!(agent, "no command topic for this agent id");
            return;
        };
        let mut cmd = Command {
            version: PROTOCOL_VERSION,
            command_id: wire::CommandId::new(command_id).expect("command ids are short"),
            issued_at_ms: now,
            kind,
            agent_id: wire::AgentId::new(agent).ok(),
            signature: None,
        };
        if let Some(signer) = &self.signer {
            signer.sign(&mut cmd);
        }
        self.effects.push(Effect::Publish {
            topic: topic.to_string(),
            payload: encode_to_vec(&cmd),
        });
    }

    // ---------------------------------------------------------------- agents (MQTT side)

    fn agent_entry(&mut self, now: Millis, id: &str) -> &mut AgentRecord {
        self.agents
            .entry(id.to_string())
            .or_insert_with(|| AgentRecord {
                id: id.to_string(),
                hostname: id.to_string(),
                attributes: BTreeMap::new(),
                liveness: AgentLiveness::Unknown,
                address: None,
                started_at_ms: 0,
                last_seen_ms: now,
                unreachable_since_ms: None,
                offer: None,
                port_cursor: 0,
            })
    }

    /// An agent's hello (retained): its host name and attributes.
    pub fn on_hello(&mut self, now: Millis, h: &Hello) {
        let a = self.agent_entry(now, &h.agent_id);
        a.hostname = h.hostname.to_string();
        a.address = h.address.as_ref().map(|ip| ip.to_string());
        a.attributes = h
            .attributes
            .iter()
            .map(|kv| (kv.name.to_string(), kv.value.to_string()))
            .collect();
        a.last_seen_ms = now;
        let host = a.hostname.clone();
        for t in self
            .tasks
            .values_mut()
            .filter(|t| t.agent_id == *h.agent_id)
        {
            t.host = host.clone();
        }
        self.save_agent(&h.agent_id);
    }

    /// An agent's offer.
    pub fn on_offer(&mut self, now: Millis, o: &Offer) {
        let amount = |r: &wire::Resources| Amount {
            cpus: r.cpus,
            mem: r.mem_mib,
            disk: r.disk_mib,
        };
        let a = self.agent_entry(now, &o.agent_id);
        a.last_seen_ms = now;
        if a.attributes.is_empty() {
            a.attributes = o
                .attributes
                .iter()
                .map(|kv| (kv.name.to_string(), kv.value.to_string()))
                .collect();
        }
        a.offer = Some(OfferView {
            seq: o.seq,
            available: amount(&o.available),
            used: amount(&o.used),
            ranges: o.available.ports.iter().map(|r| (r.begin, r.end)).collect(),
            used_ranges: o.used.ports.iter().map(|r| (r.begin, r.end)).collect(),
            port_count: o
                .available
                .ports
                .iter()
                .map(|r| (r.end as usize + 1).saturating_sub(r.begin as usize))
                .sum(),
        });
    }

    /// An agent's liveness: online (reconcile its tasks) or offline (its tasks become
    /// UNREACHABLE).
    pub fn on_state(&mut self, now: Millis, s: &AgentState) {
        let id = s.agent_id.to_string();
        let a = self.agent_entry(now, &id);
        let was = a.liveness;
        let restarted = a.started_at_ms != s.started_at_ms;
        a.last_seen_ms = now;
        match s.liveness {
            Liveness::Offline => {
                a.liveness = AgentLiveness::Offline;
                if was == AgentLiveness::Offline {
                    return;
                }
                a.unreachable_since_ms = Some(now);
                tracing::warn!(agent = %id, "agent is unreachable; its tasks are UNREACHABLE");
                self.framework_agent_lost(now, &id);
                let ids: Vec<String> = self
                    .tasks
                    .values()
                    .filter(|t| t.agent_id == id && t.unreachable_since_ms.is_none())
                    .map(|t| t.id.clone())
                    .collect();
                for tid in ids {
                    let t = self.tasks.get_mut(&tid).expect("listed");
                    t.unreachable_since_ms = Some(now);
                    self.status_event(now, &tid, TaskState::Unreachable, "agent unreachable");
                    self.save_task(&tid);
                }
            }
            Liveness::Online | Liveness::Draining => {
                a.liveness = if s.liveness == Liveness::Online {
                    AgentLiveness::Online
                } else {
                    AgentLiveness::Draining
                };
                a.started_at_ms = s.started_at_ms;
                a.unreachable_since_ms = None;
                if was != a.liveness || restarted {
                    tracing::info!(agent = %id, "agent is {}; reconciling its tasks", a.liveness.name());
                    self.reconcile_agent(now, &id);
                    // New capacity: instances waiting for an agent are placed when this
                    // batch settles, not at the next tick.
                    let apps: Vec<String> = self.apps.keys().cloned().collect();
                    self.dirty.extend(apps);
                }
            }
        }
        self.save_agent(&id);
    }

    /// Asks `agent` for the state of every task it has (finds orphans) and of every task the
    /// bridge believes it has (finds lost ones: answered TASK_UNKNOWN).
    fn reconcile_agent(&mut self, now: Millis, agent: &str) {
        let cid = format!("r-{}", uuid::Uuid::new_v4().simple());
        self.command(
            now,
            agent,
            &cid,
            CommandKind::Reconcile(Reconcile::default()),
        );
        let ids: Vec<String> = self
            .tasks
            .values()
            .filter(|t| t.agent_id == agent)
            .map(|t| t.id.clone())
            .collect();
        for chunk in ids.chunks(wire::MAX_RECONCILE_TASKS) {
            let mut r = Reconcile::default();
            for id in chunk {
                let _ = r
                    .task_ids
                    .push(wire::TaskId::new(id).expect("task ids fit"));
            }
            let cid = format!("r-{}", uuid::Uuid::new_v4().simple());
            self.command(now, agent, &cid, CommandKind::Reconcile(r));
        }
    }

    /// A command reply: a rejected launch fails its task.
    pub fn on_reply(&mut self, now: Millis, r: &CommandReply) {
        let Outcome::Rejected(rej) = &r.outcome else {
            return;
        };
        tracing::warn!(command = %r.command_id, code = ?rej.code, message = %rej.message, "command rejected");
        if rej.code == wire::RejectCode::Replay {
            // A redelivered command the agent had carried out (its statuses tell the rest).
            return;
        }
        if self.framework_launch_rejected(now, &r.command_id, &rej.message) {
            return;
        }
        let Some(tid) = self.by_command.get(r.command_id.as_str()).cloned() else {
            return;
        };
        if rej.code == wire::RejectCode::DuplicateTask {
            return; // the agent already has it: a re-sent launch
        }
        let state = match rej.code {
            wire::RejectCode::InvalidField | wire::RejectCode::FieldTooLong => TaskState::Error,
            _ => TaskState::Failed,
        };
        self.task_ended(
            now,
            &tid,
            state,
            &format!("launch rejected: {}", rej.message),
            true,
        );
    }

    /// A status update; returns the acknowledgement to publish (after the writes are stored).
    pub fn on_status(&mut self, now: Millis, s: &TaskStatus) {
        self.status_updates += 1;
        if self.is_framework_task(&s.task_id) {
            // Acknowledged to the agent once the framework acknowledges.
            self.on_framework_status(now, s);
            return;
        }
        self.ack(s);
        let tid = s.task_id.to_string();
        let state = s.state;
        let Some(t) = self.tasks.get_mut(&tid) else {
            if state == TaskState::Unknown || state.is_terminal() {
                return;
            }
            // A task no app owns (expunged, or from before a crash): kill it.
            tracing::warn!(task = %tid, agent = %s.agent_id, "killing an orphan task");
            let cid = format!("k-{}", uuid::Uuid::new_v4().simple());
            self.command(
                now,
                &s.agent_id,
                &cid,
                CommandKind::Kill(KillTask {
                    task_id: s.task_id.clone(),
                    grace_period_s: None,
                }),
            );
            return;
        };
        if t.seen.contains(&s.uuid) {
            return;
        }
        t.seen.push(s.uuid);
        if t.seen.len() > SEEN {
            t.seen.remove(0);
        }
        if t.agent_id != *s.agent_id {
            return;
        }
        if state == TaskState::Unknown {
            // Unknown to its agent: lost, unless the bridge was killing it anyway.
            let failure = !t.killing;
            self.task_ended(
                now,
                &tid,
                TaskState::Lost,
                "the agent does not know the task",
                failure,
            );
            return;
        }
        let was_unreachable = t.unreachable_since_ms.take().is_some();
        if t.inactive && !state.is_terminal() {
            // Replaced while unreachable: the stale one goes.
            self.kill(now, &tid, None);
            return;
        }
        if !s.host_ports.is_empty() {
            t.host_ports = s.host_ports.iter().copied().collect();
        }
        if let Some(ip) = &s.container_ip {
            t.ip = Some(ip.to_string());
        }
        let prev = t.state();
        t.state = state.mesos_number();
        if state == TaskState::Running && (prev != TaskState::Running || t.started_at_ms.is_none())
        {
            t.started_at_ms = Some(s.timestamp_ms.max(1));
        }
        let health_changed = match s.healthy {
            Some(h) => {
                let changed = t.health.alive != Some(h);
                t.health.alive = Some(h);
                if h {
                    t.health.consecutive_failures = 0;
                    t.health.first_success_ms.get_or_insert(now);
                    t.health.last_success_ms = Some(now);
                } else {
                    t.health.consecutive_failures += 1;
                    t.health.last_failure_ms = Some(now);
                    t.health.last_failure_cause = s.message.as_ref().map(|m| m.to_string());
                }
                changed
            }
            None => false,
        };
        if state != TaskState::Running {
            t.health.alive = None;
        }
        let (app_id, version, killing) = (t.app_id.clone(), t.version.clone(), t.killing);
        let message = s
            .message
            .as_ref()
            .map(|m| m.to_string())
            .unwrap_or_default();
        if prev != state || was_unreachable {
            self.status_event(now, &tid, state, &message);
        }
        if health_changed {
            self.event(
                now,
                "health_status_changed_event",
                json!({ "appId": app_id, "taskId": tid, "instanceId": tid, "version": version, "alive": s.healthy }),
            );
        }
        let draining = self
            .agents
            .get(s.agent_id.as_str())
            .is_some_and(|a| a.liveness == AgentLiveness::Draining);
        match state {
            TaskState::Running => {
                let ready = {
                    let has_checks = self
                        .apps
                        .get(&app_id)
                        .is_some_and(|a| !a.def.health_checks.is_empty());
                    self.tasks[&tid].ready(has_checks)
                };
                if ready
                    && let Some(app) = self.apps.get_mut(&app_id)
                    && app.failures > 0
                {
                    app.failures = 0;
                    app.delay_until_ms = 0;
                    self.save_app(&app_id);
                }
            }
            s if s.is_terminal() && (killing || draining) => {
                self.remove_task(now, &tid);
            }
            TaskState::Error
            | TaskState::Lost
            | TaskState::Dropped
            | TaskState::Gone
            | TaskState::GoneByOperator => {
                self.task_ended(now, &tid, state, &message, true);
                return;
            }
            TaskState::Failed | TaskState::Killed => {
                // The agent restarts the task itself (same id, its backoff): remember the
                // failure, keep the task.
                self.record_failure(now, &tid, state, &message);
            }
            _ => {}
        }
        if self.tasks.contains_key(&tid) {
            self.save_task(&tid);
        }
        // A task became ready or went away: the app's deployment may be done, or need more.
        if health_changed || (prev != state && (state == TaskState::Running || state.is_terminal()))
        {
            self.dirty.insert(app_id);
        }
    }

    fn ack(&mut self, s: &TaskStatus) {
        let Ok(topic) = Topic::new(&s.agent_id, TopicKind::Ack) else {
            return;
        };
        let ack = StatusAck {
            version: PROTOCOL_VERSION,
            task_id: s.task_id.clone(),
            uuid: s.uuid,
        };
        self.effects.push(Effect::Publish {
            topic: topic.to_string(),
            payload: encode_to_vec(&ack),
        });
    }

    fn status_event(&mut self, now: Millis, tid: &str, state: TaskState, message: &str) {
        let Some(t) = self.tasks.get(tid) else { return };
        let body = json!({
            "slaveId": t.agent_id,
            "taskId": t.id,
            "taskStatus": state.mesos_name(),
            "message": message,
            "appId": t.app_id,
            "host": t.host,
            "ports": t.host_ports,
            "ipAddresses": ip_addresses(t),
            "version": t.version,
        });
        self.event(now, "status_update_event", body);
    }

    fn record_failure(&mut self, now: Millis, tid: &str, state: TaskState, message: &str) {
        let Some(t) = self.tasks.get(tid) else { return };
        let f = TaskFailure {
            task_id: t.id.clone(),
            host: t.host.clone(),
            agent_id: t.agent_id.clone(),
            state: state.mesos_name().into(),
            message: message.into(),
            at_ms: now,
            version: t.version.clone(),
        };
        let app_id = t.app_id.clone();
        if let Some(app) = self.apps.get_mut(&app_id) {
            app.last_failure = Some(f);
            self.save_app(&app_id);
        }
    }

    /// A task is gone for good: forget it; with `failure`, count it for the app's backoff.
    fn task_ended(
        &mut self,
        now: Millis,
        tid: &str,
        state: TaskState,
        message: &str,
        failure: bool,
    ) {
        let Some(t) = self.tasks.get_mut(tid) else {
            return;
        };
        t.state = state.mesos_number();
        self.status_event(now, tid, state, message);
        if failure {
            self.record_failure(now, tid, state, message);
            let app_id = self.tasks[tid].app_id.clone();
            if let Some(app) = self.apps.get_mut(&app_id) {
                app.failures += 1;
                let d = &app.def;
                let delay = (d.backoff_seconds * d.backoff_factor.powi(app.failures as i32 - 1))
                    .min(d.max_launch_delay_seconds);
                app.delay_until_ms = now + (delay * 1000.0) as u64;
                tracing::info!(app = %app_id, failures = app.failures, delay_s = delay, "launch backoff");
                self.save_app(&app_id);
            }
        }
        self.remove_task(now, tid);
    }

    fn remove_task(&mut self, _now: Millis, tid: &str) {
        if let Some(t) = self.tasks.remove(tid) {
            self.by_command.remove(&t.launch_command);
            self.save_task(tid);
        }
    }

    fn kill(&mut self, now: Millis, tid: &str, grace: Option<u32>) {
        let Some(t) = self.tasks.get_mut(tid) else {
            return;
        };
        t.killing = true;
        let agent = t.agent_id.clone();
        let offline = self
            .agents
            .get(&agent)
            .is_none_or(|a| !a.liveness.connected());
        if offline {
            // Nobody to tell: forget it now; if its agent comes back, the task is an orphan
            // and is killed then.
            self.status_event(
                now,
                tid,
                TaskState::Killed,
                "killed while its agent was unreachable",
            );
            self.remove_task(now, tid);
            return;
        }
        self.send_kill(now, tid, grace);
        self.save_task(tid);
    }

    /// Sends the kill of task `tid` to its agent (the task's record is not changed).
    fn send_kill(&mut self, now: Millis, tid: &str, grace: Option<u32>) {
        let (Some(t), Ok(task_id)) = (self.tasks.get(tid), wire::TaskId::new(tid)) else {
            return;
        };
        let agent = t.agent_id.clone();
        let cid = format!("k-{}", uuid::Uuid::new_v4().simple());
        self.command(
            now,
            &agent,
            &cid,
            CommandKind::Kill(KillTask {
                task_id,
                grace_period_s: grace,
            }),
        );
    }

    // ---------------------------------------------------------------- apps (API side)

    /// Marathon's `api_post_event`: an app was posted or updated through the API.
    pub fn api_post_event(&mut self, now: Millis, client_ip: &str, uri: &str, def: &AppDefinition) {
        let app = serde_json::to_value(def).expect("json");
        self.event(
            now,
            "api_post_event",
            json!({ "clientIp": client_ip, "uri": uri, "appDefinition": app }),
        );
    }

    fn assign_service_ports(&self, def: &mut AppDefinition) {
        let mut used: BTreeSet<u32> = self
            .apps
            .values()
            .filter(|a| a.def.id != def.id)
            .flat_map(|a| a.def.port_mappings().iter().map(|p| p.service_port))
            .collect();
        let mut next = *SERVICE_PORTS.start() as u32;
        if let Some(pms) = def.port_mappings_mut() {
            for pm in pms.iter_mut().filter(|p| p.service_port == 0) {
                while used.contains(&next) && next < *SERVICE_PORTS.end() as u32 {
                    next += 1;
                }
                pm.service_port = next;
                used.insert(next);
            }
        }
    }

    fn start_deployment(
        &mut self,
        now: Millis,
        app_id: &str,
        action: &str,
        previous: Option<AppDefinition>,
    ) -> Deployment {
        let Some(app) = self.apps.get_mut(app_id) else {
            // Callers start deployments of apps they hold; an id that is not there gets a
            // deployment nobody waits for rather than a panic.
            return Deployment {
                id: uuid::Uuid::new_v4().to_string(),
                version: rfc3339(now),
                action: action.into(),
                previous,
            };
        };
        let d = Deployment {
            id: uuid::Uuid::new_v4().to_string(),
            version: app.version.clone(),
            action: action.into(),
            previous,
        };
        app.deployment = Some(d.clone());
        let plan = deployment_json(&d, app_id);
        self.event(
            now,
            "deployment_info",
            json!({ "plan": plan, "currentStep": plan["steps"][0] }),
        );
        self.save_app(app_id);
        d
    }

    /// `POST /v2/apps`.
    pub fn create_app(
        &mut self,
        now: Millis,
        mut def: AppDefinition,
    ) -> Result<(AppRecord, Deployment), ApiError> {
        if let Some(app) = self.apps.get(&def.id) {
            // Being deleted (or deploying): locked, as Marathon says, with the deployment.
            if let Some(d) = &app.deployment {
                return Err(ApiError::locked(d));
            }
            return Err(ApiError {
                status: 409,
                body: json!({ "message": format!("An app with id [{}] already exists.", def.id) }),
            });
        }
        self.check_spec(&def)?;
        self.assign_service_ports(&mut def);
        let version = rfc3339(now);
        let id = def.id.clone();
        self.apps.insert(
            id.clone(),
            AppRecord {
                def,
                version: version.clone(),
                last_scaling_at: version.clone(),
                last_config_change_at: version,
                deployment: None,
                last_failure: None,
                failures: 0,
                delay_until_ms: 0,
                deleting: false,
            },
        );
        let d = self.start_deployment(now, &id, "StartApplication", None);
        self.tick(now);
        Ok((self.apps[&id].clone(), d))
    }

    fn check_spec(&self, def: &AppDefinition) -> Result<(), ApiError> {
        let probe_id = format!("{}.{}", task_prefix(&def.id), uuid::Uuid::nil());
        def.task_spec(&probe_id)
            .map(|_| ())
            .map_err(|e| ApiError::invalid(json!([{ "path": "/", "errors": [e] }])))
    }

    fn check_lock(&self, id: &str, force: bool) -> Result<(), ApiError> {
        match self.apps.get(id).and_then(|a| a.deployment.as_ref()) {
            Some(d) if !force => Err(ApiError::locked(d)),
            _ => Ok(()),
        }
    }

    /// `PUT /v2/apps/{id}`: a new definition (create it if missing). Scaling when only
    /// `instances` changed, a rolling replacement otherwise.
    pub fn update_app(
        &mut self,
        now: Millis,
        mut def: AppDefinition,
        force: bool,
    ) -> Result<Deployment, ApiError> {
        let id = def.id.clone();
        if !self.apps.contains_key(&id) {
            return self.create_app(now, def).map(|(_, d)| d);
        }
        self.check_lock(&id, force)?;
        self.check_spec(&def)?;
        self.assign_service_ports(&mut def);
        let version = rfc3339(now);
        let app = self.apps.get_mut(&id).expect("exists");
        if app.deleting {
            return Err(ApiError::not_found(&format!("App '{id}'")));
        }
        let previous = app.def.clone();
        let config_change = previous.config_differs(&def);
        app.def = def;
        app.version = version.clone();
        app.failures = 0;
        app.delay_until_ms = 0;
        let action = if config_change {
            app.last_config_change_at = version.clone();
            "RestartApplication"
        } else {
            app.last_scaling_at = version;
            "ScaleApplication"
        };
        let d = self.start_deployment(now, &id, action, Some(previous));
        self.tick(now);
        Ok(d)
    }

    /// `POST /v2/apps/{id}/restart`: replace every task (rolling).
    pub fn restart_app(
        &mut self,
        now: Millis,
        id: &str,
        force: bool,
    ) -> Result<Deployment, ApiError> {
        if !self.apps.contains_key(id) {
            return Err(ApiError::not_found(&format!("App '{id}'")));
        }
        self.check_lock(id, force)?;
        let version = rfc3339(now);
        let app = self.apps.get_mut(id).expect("exists");
        app.version = version.clone();
        app.last_config_change_at = version;
        let d = self.start_deployment(now, id, "RestartApplication", None);
        self.tick(now);
        Ok(d)
    }

    /// `DELETE /v2/apps/{id}`: kill every task, then forget the app.
    pub fn delete_app(
        &mut self,
        now: Millis,
        id: &str,
        force: bool,
    ) -> Result<Deployment, ApiError> {
        if self.apps.get(id).is_none_or(|a| a.deleting) {
            return Err(ApiError::not_found(&format!("App '{id}'")));
        }
        self.check_lock(id, force)?;
        let app = self.apps.get_mut(id).expect("exists");
        app.deleting = true;
        app.version = rfc3339(now);
        let d = self.start_deployment(now, id, "StopApplication", None);
        self.tick(now);
        Ok(d)
    }

    /// Kills tasks (`DELETE /v2/apps/{id}/tasks[/{task}]`, `POST /v2/tasks/delete`); with
    /// `scale`, the app's instances shrink by as many, as a deployment. Returns the tasks as
    /// they were, and the deployments of the scaled apps.
    pub fn kill_tasks(
        &mut self,
        now: Millis,
        ids: &[String],
        scale: bool,
        wipe: bool,
    ) -> Result<(Vec<TaskRecord>, Vec<Deployment>), ApiError> {
        let killed: Vec<TaskRecord> = ids
            .iter()
            .filter_map(|id| self.tasks.get(id).cloned())
            .collect();
        if killed.is_empty() && !ids.is_empty() {
            return Err(ApiError::not_found(&format!("Task '{}'", ids[0])));
        }
        let mut scaled: BTreeMap<String, AppDefinition> = BTreeMap::new();
        for t in &killed {
            if scale && let Some(app) = self.apps.get_mut(&t.app_id) {
                scaled
                    .entry(t.app_id.clone())
                    .or_insert_with(|| app.def.clone());
                app.def.instances = app.def.instances.saturating_sub(1);
                app.version = rfc3339(now);
                app.last_scaling_at = app.version.clone();
                self.save_app(&t.app_id);
            }
            if wipe {
                tracing::info!(task = %t.id, "wipe: the task's local volumes are not kept by Outpost");
            }
            self.kill(now, &t.id, None);
        }
        // A scaling kill is a deployment of the smaller app (Marathon answers with its id);
        // one already running goes on and covers it.
        let mut deployments = Vec::new();
        for (app_id, previous) in scaled {
            match self.apps.get(&app_id).and_then(|a| a.deployment.clone()) {
                Some(d) => deployments.push(d),
                None => deployments.push(self.start_deployment(
                    now,
                    &app_id,
                    "ScaleApplication",
                    Some(previous),
                )),
            }
        }
        self.tick(now);
        Ok((killed, deployments))
    }

    /// `DELETE /v2/deployments/{id}`: with `force`, stop it where it is; otherwise roll back
    /// (a new deployment to the previous definition).
    pub fn cancel_deployment(
        &mut self,
        now: Millis,
        deployment: &str,
        force: bool,
    ) -> Result<Option<Deployment>, ApiError> {
        let Some(app_id) = self
            .apps
            .values()
            .find(|a| a.deployment.as_ref().is_some_and(|d| d.id == deployment))
            .map(|a| a.def.id.clone())
        else {
            return Err(ApiError::not_found(&format!("DeploymentPlan {deployment}")));
        };
        let app = self.apps.get_mut(&app_id).expect("found");
        let d = app.deployment.take().expect("found");
        let plan = deployment_json(&d, &app_id);
        self.event(
            now,
            "deployment_failed",
            json!({ "id": d.id, "plan": plan }),
        );
        self.save_app(&app_id);
        if force {
            return Ok(None);
        }
        match d.previous {
            Some(prev) => self.update_app(now, prev, true).map(Some),
            None if d.action == "StartApplication" => self.delete_app(now, &app_id, true).map(Some),
            None => Ok(None),
        }
    }

    // ---------------------------------------------------------------- the scheduler

    /// Schedules the apps whose tasks changed since the last call (a deployment may be done,
    /// an instance may be missing). The runtime calls it once per batch of messages, so a
    /// burst of status updates costs one pass per app, not one per update.
    pub fn settle(&mut self, now: Millis) {
        for id in std::mem::take(&mut self.dirty) {
            self.schedule_app(now, &id);
        }
    }

    /// Runs the scheduler: unreachable timers, launches, kills, deployments. Call after every
    /// change and every second or so.
    pub fn tick(&mut self, now: Millis) {
        self.unreachable_timers(now);
        self.launch_timeouts(now);
        self.framework_timers(now);
        let ids: Vec<String> = self.apps.keys().cloned().collect();
        for id in ids {
            self.schedule_app(now, &id);
        }
        // Frameworks get what Marathon's apps left.
        self.make_offers(now);
    }

    /// Marathon's task launch timeout: a task still STAGING or STARTING that long after its
    /// launch (its launch was lost, its image never came, its agent never answered) is killed
    /// and replaced, and the reason goes into the app's `lastTaskFailure`. A task whose agent
    /// is unreachable follows the app's unreachable strategy instead.
    fn launch_timeouts(&mut self, now: Millis) {
        let timeout = self.task_launch_timeout();
        let overdue: Vec<String> = self
            .tasks
            .values()
            .filter(|t| {
                matches!(t.state(), TaskState::Staging | TaskState::Starting)
                    && !t.killing
                    && t.unreachable_since_ms.is_none()
                    && now >= t.staged_at_ms + timeout
            })
            .map(|t| t.id.clone())
            .collect();
        for tid in overdue {
            let message = format!(
                "task launch timeout: not RUNNING within {} s of its launch (task_launch_timeout)",
                timeout / 1000
            );
            tracing::warn!(task = %tid, "{message}: killing and replacing it");
            self.send_kill(now, &tid, None);
            self.task_ended(now, &tid, TaskState::Failed, &message, true);
        }
    }

    fn unreachable_timers(&mut self, now: Millis) {
        let mut expunge = Vec::new();
        let mut inactivate = Vec::new();
        for t in self.tasks.values() {
            let Some(since) = t.unreachable_since_ms else {
                continue;
            };
            let Some(app) = self.apps.get(&t.app_id) else {
                continue;
            };
            let s = &app.def.unreachable_strategy;
            if now >= since + s.expunge_after_seconds * 1000 {
                expunge.push(t.id.clone());
            } else if !t.inactive && now >= since + s.inactive_after_seconds * 1000 {
                inactivate.push(t.id.clone());
            }
        }
        for id in inactivate {
            tracing::info!(task = %id, "unreachable past inactiveAfterSeconds: replacing it");
            self.tasks.get_mut(&id).expect("listed").inactive = true;
            self.save_task(&id);
        }
        for id in expunge {
            tracing::info!(task = %id, "unreachable past expungeAfterSeconds: expunged");
            self.status_event(
                now,
                &id,
                TaskState::Gone,
                "expunged after being unreachable",
            );
            self.remove_task(now, &id);
        }
    }

    fn schedule_app(&mut self, now: Millis, id: &str) {
        let Some(app) = self.apps.get(id) else { return };
        let has_checks = !app.def.health_checks.is_empty();
        let live: Vec<&TaskRecord> = self
            .tasks
            .values()
            .filter(|t| t.app_id == id && !t.killing && !t.inactive)
            .collect();
        if app.deleting {
            let all: Vec<String> = self
                .tasks
                .values()
                .filter(|t| t.app_id == id && !t.killing)
                .map(|t| t.id.clone())
                .collect();
            for t in all {
                self.kill(now, &t, None);
            }
            // A kill sent to an agent that went away since is recorded, and the stop is done
            // for the API: the agent's reconcile kills the task when it returns (no app owns it).
            let stranded: Vec<String> = self
                .tasks
                .values()
                .filter(|t| t.app_id == id && t.killing)
                .filter(|t| {
                    t.unreachable_since_ms.is_some()
                        || self
                            .agents
                            .get(&t.agent_id)
                            .is_none_or(|a| !a.liveness.connected())
                })
                .map(|t| t.id.clone())
                .collect();
            for t in stranded {
                self.status_event(
                    now,
                    &t,
                    TaskState::Killed,
                    "killed while its agent was unreachable",
                );
                self.remove_task(now, &t);
            }
            if !self.tasks.values().any(|t| t.app_id == id) {
                let Some(app) = self.apps.remove(id) else {
                    return;
                };
                if let Some(d) = &app.deployment {
                    let plan = deployment_json(d, id);
                    self.event(
                        now,
                        "deployment_success",
                        json!({ "id": d.id, "plan": plan }),
                    );
                }
                self.event(now, "app_terminated_event", json!({ "appId": id }));
                self.save_app(id);
            }
            return;
        }
        let n = app.def.instances as usize;
        let current = app.last_config_change_at.clone();
        let (new, old): (Vec<&TaskRecord>, Vec<&TaskRecord>) =
            live.iter().partition(|t| t.version == current);
        let ready = |ts: &[&TaskRecord]| ts.iter().filter(|t| t.ready(has_checks)).count();
        let (ready_new, ready_old) = (ready(&new), ready(&old));
        let mut to_kill: Vec<String> = Vec::new();
        let mut to_launch = 0usize;
        if old.is_empty() {
            if new.len() < n {
                to_launch = n - new.len();
            } else if new.len() > n {
                // Youngest first (Marathon's default killSelection).
                let mut by_age = new.clone();
                by_age.sort_by_key(|t| std::cmp::Reverse((t.staged_at_ms, t.id.clone())));
                to_kill.extend(by_age.iter().take(new.len() - n).map(|t| t.id.clone()));
            }
        } else {
            let u = &app.def.upgrade_strategy;
            let max_total = n + (n as f64 * u.maximum_over_capacity).floor() as usize;
            let min_ready = (n as f64 * u.minimum_health_capacity).ceil() as usize;
            to_launch = n
                .saturating_sub(new.len())
                .min(max_total.saturating_sub(live.len()));
            let mut ready_left = ready_new + ready_old;
            // Not-ready old tasks first, then ready ones while enough stay ready.
            let mut victims = old.clone();
            victims.sort_by_key(|t| (t.ready(has_checks), t.staged_at_ms));
            for v in victims {
                let r = v.ready(has_checks);
                if !r || ready_left > min_ready || (ready_new >= n && new.len() >= n) {
                    to_kill.push(v.id.clone());
                    if r {
                        ready_left -= 1;
                    }
                }
            }
            if to_launch == 0 && to_kill.is_empty() && new.len() < n {
                // Both bounds at their limit (e.g. minimumHealthCapacity 1 and
                // maximumOverCapacity 0): make room by one.
                to_kill.push(old[0].id.clone());
            }
        }
        let done = old.is_empty() && new.len() == n && ready_new == n;
        for t in to_kill {
            self.kill(now, &t, None);
        }
        if to_launch > 0 && now >= self.apps[id].delay_until_ms {
            self.launch_many(now, id, to_launch);
        }
        if done && let Some(d) = self.apps.get_mut(id).and_then(|a| a.deployment.take()) {
            let plan = deployment_json(&d, id);
            tracing::info!(app = %id, deployment = %d.id, "deployment finished");
            self.event(
                now,
                "deployment_success",
                json!({ "id": d.id, "plan": plan }),
            );
            self.save_app(id);
        }
    }

    /// Places up to `count` instances of `app_id` and launches them; returns how many were
    /// placed. Per-agent usage and the app's per-value instance counts are computed once and
    /// updated per placement, so a pass costs instances × agents.
    fn launch_many(&mut self, now: Millis, app_id: &str, count: usize) -> usize {
        let placements = self.place(app_id, count);
        let n = placements.len();
        for (agent_id, ports) in placements {
            self.launch_on(now, app_id, &agent_id, &ports);
        }
        n
    }

    /// Chooses agents for up to `count` instances of `app_id`, with the host ports each gets
    /// (fixed ones as asked, dynamic ones picked from what the agent has free). Resources and
    /// ports come from the capacity [`Ledger`], the same one framework offers are cut from.
    fn place(&self, app_id: &str, count: usize) -> Vec<(String, Vec<u16>)> {
        let Some(app) = self.apps.get(app_id) else {
            return Vec::new();
        };
        let def = &app.def;
        let need = Amount {
            cpus: def.cpus,
            mem: def.mem,
            disk: def.disk,
        };
        let constraints: Vec<Constraint> = def
            .constraints
            .iter()
            .filter_map(|c| Constraint::parse(c).ok())
            .collect();
        let wanted: Vec<u16> = def
            .port_mappings()
            .iter()
            .map(|p| p.host_port as u16)
            .collect();
        let all: Vec<Candidate> = self
            .agents
            .values()
            .map(|a| Candidate {
                agent_id: &a.id,
                hostname: &a.hostname,
                attributes: &a.attributes,
            })
            .collect();
        let by_id: HashMap<&str, &Candidate> = all.iter().map(|c| (c.agent_id, c)).collect();
        let mut ledger = Ledger::of(self);
        let mut same_app: HashMap<&str, usize> = HashMap::new();
        let mut peers: Vec<Candidate> = Vec::new();
        for t in self.tasks.values() {
            if t.app_id == app_id && !t.killing && !t.inactive {
                *same_app.entry(t.agent_id.as_str()).or_default() += 1;
                if let Some(c) = by_id.get(t.agent_id.as_str()) {
                    peers.push((*c).clone());
                }
            }
        }
        let mut counts = placement::PeerCounts::new(&constraints, &peers, &all);
        // The ports an instance would get on `a`, if it fits there.
        let fit = |a: &AgentRecord, ledger: &Ledger, counts: &placement::PeerCounts| {
            let free = ledger.free(a)?;
            let allowed = by_id
                .get(a.id.as_str())
                .is_some_and(|c| placement::allowed(&constraints, c, counts));
            if !free.amount.fits(&need) || !allowed {
                return None;
            }
            ledger::pick_ports(&free, &wanted, a.port_cursor)
        };
        // Spread: fewest instances of this app, then fewest tasks, then agent id. An agent's
        // key only grows as it takes instances, and (without GROUP_BY, whose allowed values
        // move as groups fill) an agent refused once stays refused for the rest of the pass:
        // resources and per-value counts only grow. So a heap makes the same choices as a
        // scan of every agent, in n log m instead of n * m.
        let group_by = constraints
            .iter()
            .any(|c| matches!(c, Constraint::GroupBy(_)));
        let online: Vec<&AgentRecord> = self
            .agents
            .values()
            .filter(|a| a.online() && a.offer.is_some())
            .collect();
        let key = |a: &str, ledger: &Ledger, same_app: &HashMap<&str, usize>| {
            (same_app.get(a).copied().unwrap_or(0), ledger.count(a))
        };
        let mut heap: BinaryHeap<Reverse<(usize, usize, &str)>> = BinaryHeap::new();
        if !group_by {
            for a in &online {
                let (n, t) = key(&a.id, &ledger, &same_app);
                heap.push(Reverse((n, t, a.id.as_str())));
            }
        }
        let mut out = Vec::new();
        while out.len() < count {
            let pick = if group_by {
                // The best key so far, with the ports the instance would get there.
                type Best<'k> = Option<((usize, usize, &'k str), Vec<u16>)>;
                let mut best: Best = None;
                for a in &online {
                    let (n, t) = key(&a.id, &ledger, &same_app);
                    let k = (n, t, a.id.as_str());
                    if best.as_ref().is_none_or(|b| k < b.0)
                        && let Some(ports) = fit(a, &ledger, &counts)
                    {
                        best = Some((k, ports));
                    }
                }
                best.map(|(k, ports)| (k.2, ports))
            } else {
                loop {
                    let Some(Reverse((_, _, id))) = heap.pop() else {
                        break None;
                    };
                    if let Some(a) = self.agents.get(id)
                        && let Some(ports) = fit(a, &ledger, &counts)
                    {
                        break Some((id, ports));
                    }
                }
            };
            let Some((agent_id, ports)) = pick else {
                tracing::debug!(app = %app_id, placed = out.len(), wanted = count, "no agent fits");
                break;
            };
            ledger.hold_task(agent_id, need, ports.iter().copied());
            *same_app.entry(agent_id).or_default() += 1;
            if !group_by {
                let (n, t) = key(agent_id, &ledger, &same_app);
                heap.push(Reverse((n, t, agent_id)));
            }
            if let Some(c) = by_id.get(agent_id) {
                counts.add(c);
            }
            out.push((agent_id.to_string(), ports));
        }
        out
    }

    /// Launches one instance of `app_id` on `agent_id` with host `ports` (one per port mapping):
    /// stores the task, then sends the command.
    fn launch_on(&mut self, now: Millis, app_id: &str, agent_id: &str, ports: &[u16]) {
        let (Some(app), Some(agent)) = (self.apps.get(app_id), self.agents.get(agent_id)) else {
            return;
        };
        let def = &app.def;
        let need = Amount {
            cpus: def.cpus,
            mem: def.mem,
            disk: def.disk,
        };
        let agent_id = agent_id.to_string();
        let task_id = format!("{}.{}", task_prefix(app_id), uuid::Uuid::new_v4());
        let spec = match def.task_spec(&task_id) {
            Ok(mut s) => {
                // The ports placement picked, as Marathon sends Mesos the ports it took from
                // the offer: the agent binds exactly these.
                for (m, &p) in s.port_mappings.iter_mut().zip(ports) {
                    m.host_port = p;
                }
                s
            }
            Err(e) => {
                tracing::error!(app = %app_id, error = %e, "cannot build the task spec");
                return;
            }
        };
        let cid = format!("l-{}", uuid::Uuid::new_v4().simple());
        tracing::info!(app = %app_id, task = %task_id, agent = %agent_id, "placed (fewest of this app, then fewest tasks)");
        let t = TaskRecord {
            id: task_id.clone(),
            app_id: app_id.to_string(),
            agent_id: agent_id.clone(),
            host: agent.hostname.clone(),
            version: app.last_config_change_at.clone(),
            state: TaskState::Staging.mesos_number(),
            host_ports: Vec::new(),
            fixed_ports: ports.to_vec(),
            service_ports: def
                .port_mappings()
                .iter()
                .map(|p| p.service_port as u16)
                .collect(),
            ip: None,
            staged_at_ms: now,
            started_at_ms: None,
            health: HealthRecord::default(),
            seen: Vec::new(),
            unreachable_since_ms: None,
            inactive: false,
            killing: false,
            launch_command: cid.clone(),
            cpus: need.cpus,
            mem: need.mem,
            disk: need.disk,
        };
        if let Some(&last) = ports
            .iter()
            .zip(def.port_mappings())
            .filter(|(_, m)| m.host_port == 0)
            .map(|(p, _)| p)
            .next_back()
            && let Some(a) = self.agents.get_mut(&agent_id)
        {
            a.port_cursor = last.wrapping_add(1);
        }
        self.tasks.insert(task_id.clone(), t);
        self.by_command.insert(cid.clone(), task_id.clone());
        self.save_task(&task_id);
        self.command(now, &agent_id, &cid, CommandKind::Launch(spec));
        self.status_event(now, &task_id, TaskState::Staging, "");
    }
}

/// `/web/api` → `web_api`, the prefix of its task ids.
pub fn task_prefix(app_id: &str) -> String {
    app_id.trim_start_matches('/').replace('/', "_")
}

/// `ipAddresses` of a task.
pub fn ip_addresses(t: &TaskRecord) -> Value {
    match &t.ip {
        Some(ip) => {
            json!([{ "ipAddress": ip, "protocol": if ip.contains(':') { "IPv6" } else { "IPv4" } }])
        }
        None => json!([]),
    }
}

/// A deployment as `GET /v2/deployments` shows it.
pub fn deployment_json(d: &Deployment, app_id: &str) -> Value {
    let action = json!({ "action": d.action, "app": app_id });
    json!({
        "id": d.id,
        "version": d.version,
        "affectedApps": [app_id],
        "affectedPods": [],
        "steps": [{ "actions": [action] }],
        "currentActions": [{ "action": d.action, "app": app_id, "readinessCheckResults": [] }],
        "currentStep": 1,
        "totalSteps": 1,
    })
}

mod framework;
pub mod ledger;
pub use ledger::Ledger;
#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

pub use framework::{CallError, Framework, FrameworkRecord, FwTask, REMOVED};
