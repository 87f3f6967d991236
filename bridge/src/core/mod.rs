//! The bridge's state and decisions, without I/O: agents (from their hello, offer and liveness
//! messages), apps and their deployments, tasks (from status updates), and the scheduler that
//! places, replaces, scales and upgrades. Time comes in as an argument; what must happen goes
//! out as [`Effect`]s (MQTT publishes, Marathon events) and [`Write`]s to the store, which the
//! owner ([`crate::handle`]) commits before it sends anything.
//!
//! This file holds the records and the state; each concern is its own file: `agents.rs`
//! (hello, offers, liveness), `tasks.rs` (the status state machine, kills, timers),
//! `apps.rs` (the Marathon API's changes and deployments), `scheduler.rs` (what to launch and
//! kill), `place.rs` (which agent, which ports), `ledger.rs` (what each agent has left),
//! `framework.rs` (Mesos frameworks: subscriptions, offers, calls, updates).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap};
use std::sync::Arc;

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

/// An id or name that several records and indexes hold (a task's id in the task map, its
/// app's and its agent's index and the command index; an agent's id and host name in every task
/// on it): one allocation shared by all of them instead of a copy each. It reads, compares,
/// hashes and (de)serializes as the string it holds.
pub type Name = std::sync::Arc<str>;

/// A few names, the first inline (an agent's tasks, a host name's agents).
pub type Names = smallvec::SmallVec<[Name; 1]>;

/// The uuids of a task's latest status updates (up to [`SEEN`]): two inline, most tasks see
/// no more than STARTING and RUNNING.
pub type Seen = smallvec::SmallVec<[[u8; 16]; 2]>;

/// A task's or an offer's few ports (or port ranges): up to four inline, in the record, and
/// no allocation of their own (almost every task has one to three). Serializes as a list.
pub type Inline<T> = smallvec::SmallVec<[T; 4]>;

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
    pub id: Name,
    /// Host name.
    pub hostname: Name,
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
    pub ranges: Inline<(u16, u16)>,
    /// How many ports the ranges hold.
    pub port_count: usize,
    /// Port ranges in use by tasks.
    pub used_ranges: Inline<(u16, u16)>,
}

/// The health history of a task, as Marathon's `healthCheckResults`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
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
    pub id: Name,
    /// The app.
    pub app_id: Name,
    /// The agent.
    pub agent_id: Name,
    /// The agent's host name.
    pub host: Name,
    /// The app's config version the task runs.
    pub version: Name,
    /// Its Mesos state (stored as its Mesos number).
    #[serde(with = "mesos_state")]
    pub state: TaskState,
    /// The host ports the agent reported.
    pub host_ports: Inline<u16>,
    /// The host ports the task was launched with (fixed ones and those placement picked), held
    /// until the agent reports them.
    #[serde(default)]
    pub fixed_ports: Inline<u16>,
    /// Service ports of the app at launch.
    pub service_ports: Inline<u16>,
    /// Container IP.
    pub ip: Option<String>,
    /// When the launch was sent.
    pub staged_at_ms: Millis,
    /// When it last became RUNNING.
    pub started_at_ms: Option<Millis>,
    /// Health, once a check reported (most tasks have none: no 80 bytes each). Stored as
    /// the record, empty before the first result.
    #[serde(default, with = "boxed_health")]
    pub health: Option<Box<HealthRecord>>,
    /// Uuids of the latest status updates (duplicate detection), stored as hex.
    #[serde(with = "uuid_list")]
    pub seen: Seen,
    /// Since when its agent is unreachable.
    pub unreachable_since_ms: Option<Millis>,
    /// Unreachable longer than `inactiveAfterSeconds`: replaced, killed if it comes back.
    pub inactive: bool,
    /// The bridge asked the agent to kill it.
    pub killing: bool,
    /// The launch command's id.
    pub launch_command: Name,
    /// Resources it holds.
    pub cpus: f64,
    /// MiB of memory.
    pub mem: f64,
    /// MiB of disk.
    pub disk: f64,
    /// With a readiness check: whether the task passed it (`None`: its app has none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready: Option<bool>,
    /// How the task is counted in its app's [`Tally`]: (runs the current version, ready), or
    /// `None` while it is not live (killing, inactive) or not counted yet.
    #[serde(skip)]
    pub(crate) counted: Option<(bool, bool)>,
    /// How the task is counted in its app's [`StateCounts`] (a [`StateCounts::of`] mask).
    #[serde(skip)]
    pub(crate) shown: u8,
}

/// Per app, its tasks by state as `/v2/apps` shows them (`tasksStaged`, `tasksRunning`,
/// `tasksHealthy`, `tasksUnhealthy`), kept as tasks change like the [`Tally`]: a poll of
/// `/v2/apps` costs the apps, not their tasks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StateCounts {
    /// STAGING or STARTING.
    pub staged: usize,
    /// RUNNING.
    pub running: usize,
    /// RUNNING and its health checks pass.
    pub healthy: usize,
    /// RUNNING and a health check fails.
    pub unhealthy: usize,
}

impl StateCounts {
    const STAGED: u8 = 1;
    const RUNNING: u8 = 2;
    const HEALTHY: u8 = 4;
    const UNHEALTHY: u8 = 8;

    /// Where task `t` counts, as a mask.
    fn of(t: &TaskRecord) -> u8 {
        match t.state() {
            TaskState::Staging | TaskState::Starting => Self::STAGED,
            TaskState::Running => {
                Self::RUNNING
                    | match t.health().alive {
                        Some(true) => Self::HEALTHY,
                        Some(false) => Self::UNHEALTHY,
                        None => 0,
                    }
            }
            _ => 0,
        }
    }

    fn add(&mut self, mask: u8, sign: isize) {
        for (bit, n) in [
            (Self::STAGED, &mut self.staged),
            (Self::RUNNING, &mut self.running),
            (Self::HEALTHY, &mut self.healthy),
            (Self::UNHEALTHY, &mut self.unhealthy),
        ] {
            if mask & bit != 0 {
                *n = n.saturating_add_signed(sign);
            }
        }
    }
}

/// Per app, its live tasks (not killing, not inactive): how many run its current version and
/// how many of those are ready, and the same for older versions. Kept as tasks change (every
/// change of a task is saved, and a saved task is re-counted before the app is scheduled), so a
/// scheduling pass in the steady case costs what changed, not the app's tasks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    /// Live tasks of the current version.
    pub current: usize,
    /// Of those, ready.
    pub current_ready: usize,
    /// Live tasks of older versions.
    pub other: usize,
    /// Of those, ready.
    pub other_ready: usize,
}

impl Tally {
    fn add(&mut self, (current, ready): (bool, bool), sign: isize) {
        let bump = |n: &mut usize| *n = n.saturating_add_signed(sign);
        if current {
            bump(&mut self.current);
            if ready {
                bump(&mut self.current_ready);
            }
        } else {
            bump(&mut self.other);
            if ready {
                bump(&mut self.other_ready);
            }
        }
    }
}

/// A task's health before any check reported.
const NO_HEALTH: HealthRecord = HealthRecord {
    alive: None,
    consecutive_failures: 0,
    first_success_ms: None,
    last_success_ms: None,
    last_failure_ms: None,
    last_failure_cause: None,
};

impl TaskRecord {
    /// Its health history (empty before any check reported).
    pub fn health(&self) -> &HealthRecord {
        self.health.as_deref().unwrap_or(&NO_HEALTH)
    }

    /// Its Mesos state.
    pub fn state(&self) -> TaskState {
        self.state
    }

    /// RUNNING, and healthy if it has health checks.
    pub fn ready(&self, has_checks: bool) -> bool {
        self.state() == TaskState::Running
            && self.unreachable_since_ms.is_none()
            && (!has_checks || self.health().alive == Some(true))
            && self.ready != Some(false)
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

/// What a deployment of one app does, in Marathon's words (its plan's `action`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeploymentAction {
    /// A new app's first instances.
    StartApplication,
    /// More or fewer instances of the same definition.
    ScaleApplication,
    /// Every task replaced (a new definition, or a restart).
    RestartApplication,
    /// Every task killed, then the app removed.
    StopApplication,
}

/// A running deployment of one app.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Deployment {
    /// Id (a uuid).
    pub id: String,
    /// The app version it deploys.
    pub version: String,
    /// What it does.
    pub action: DeploymentAction,
    /// The definition before it, for a rollback.
    pub previous: Option<AppDefinition>,
    /// A deployment of several apps (a group, a batch `PUT /v2/apps`): its steps in order, each
    /// the apps it changes; every app of it holds the same id and waits for the apps of the
    /// steps before its own. Empty for a deployment of one app.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<Vec<PlanAction>>,
}

/// One action of a deployment plan, as Marathon shows it in `steps[].actions[]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanAction {
    /// What is done to the app.
    pub action: DeploymentAction,
    /// The app's id.
    pub app: String,
}

/// A group made through `/v2/groups` (it is kept while empty); groups under which apps'
/// ids lie exist without a record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupRecord {
    /// Absolute id (`/prod/db`).
    pub id: String,
    /// Absolute ids of the apps and groups every app in this group depends on.
    #[serde(default)]
    pub dependencies: Vec<String>,
    /// When it was last changed.
    pub version: String,
}

/// One earlier definition of an app (`Table::AppVersions`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VersionRecord {
    /// The version (the time of the change).
    pub version: String,
    /// The definition then.
    pub def: AppDefinition,
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
    pub last_config_change_at: Name,
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
    /// The last placement pass found no room for all of its instances: at which capacity
    /// epoch and when (a pass is not repeated before something could have made room).
    #[serde(skip)]
    pub no_room: Option<(u64, Millis)>,
    /// When an instance was last placed (an offer used), since the bridge started.
    #[serde(skip)]
    pub last_launch_ms: Option<Millis>,
}

impl AppRecord {
    /// The app's definition replaced by `def` at `version` (its backoff starts over, and its
    /// next placement looks at every agent again); returns the definition before and whether
    /// it was a config change (`lastConfigChangeAt`) rather than a scale (`lastScalingAt`).
    pub fn replace_def(&mut self, def: AppDefinition, version: String) -> (AppDefinition, bool) {
        let config_change = self.def.config_differs(&def);
        let previous = std::mem::replace(&mut self.def, def);
        self.version = version.clone();
        self.failures = 0;
        self.delay_until_ms = 0;
        self.no_room = None;
        if config_change {
            self.last_config_change_at = version.into();
        } else {
            self.last_scaling_at = version;
        }
        (previous, config_change)
    }

    /// A new app at `version`, with nothing run yet.
    pub fn new(def: AppDefinition, version: String) -> Self {
        Self {
            def,
            last_scaling_at: version.clone(),
            last_config_change_at: version.as_str().into(),
            version,
            deployment: None,
            last_failure: None,
            failures: 0,
            delay_until_ms: 0,
            deleting: false,
            no_room: None,
            last_launch_ms: None,
        }
    }
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
    /// Behind a pointer: a tree node holds eleven slots and is often half full; a slot is a
    /// pointer, not a 250-byte record. The key is the record's own `id`. Shared
    /// (copy-on-write, [`Arc::make_mut`]): a [`Core::snapshot`] copies pointers, and a record
    /// changed while a read still holds it is copied then, once.
    agents: BTreeMap<Name, Arc<AgentRecord>>,
    apps: BTreeMap<Name, AppRecord>,
    /// By id; hashed (a lookup per task of a pass must not cost a tree walk), with a fixed
    /// hasher so a core's iterations, and so its decisions, are the same on every run.
    /// Behind a shared pointer as `agents` are: the map's slots (a power of two, at most 7/8
    /// full) hold a pointer, not a 400-byte record.
    tasks: HashMap<Name, Arc<TaskRecord>, FixedHash>,
    by_command: HashMap<Name, Name, FixedHash>,
    /// Task ids by app and by agent (derived from `tasks`, kept by `insert_task` and
    /// `drop_task`): a pass over one app or one agent costs its tasks, not the fleet's.
    by_app: HashMap<Name, BTreeSet<Name>, FixedHash>,
    /// Per agent its tasks' ids, sorted (a few per agent: a vector, not a tree node each; one
    /// inline).
    by_agent: HashMap<Name, Names, FixedHash>,
    effects: Vec<Effect>,
    writes: BTreeMap<(Table, String), Option<Vec<u8>>>,
    /// Apps whose tasks changed since the last [`Core::settle`].
    dirty: BTreeSet<Name>,
    /// Mesos frameworks on the scheduler API.
    frameworks: BTreeMap<String, Framework>,
    /// Their tasks.
    fw_tasks: BTreeMap<String, FwTask>,
    /// Launch command id -> framework task.
    fw_by_command: HashMap<String, String>,
    /// Torn-down frameworks, kept so their ids are refused with ERROR.
    removed_frameworks: BTreeMap<String, FrameworkRecord>,
    /// Records changed since the last [`Core::take_writes`] (encoded then).
    dirty_records: BTreeSet<(Table, String)>,
    /// Status updates seen (metrics).
    pub status_updates: u64,
    /// What `/metrics/prometheus` counts of the core's work.
    pub stats: Stats,
    /// Signs every command, when the bridge has a key.
    signer: Option<crate::signing::Signer>,
    /// A task not RUNNING this long after its launch is killed and replaced (0: the default).
    task_launch_timeout_ms: Millis,
    /// Where every id the core makes comes from.
    ids: Ids,
    /// No Marathon event is built while nobody listens (the owner says so before each group).
    events_unwanted: bool,
    /// The leadership epoch every command carries (bridges with `[ha]`).
    epoch: Option<u64>,
    /// Per app, its live tasks by version and readiness.
    tallies: HashMap<Name, Tally, FixedHash>,
    /// Per app, its tasks by state for the API.
    state_counts: HashMap<Name, StateCounts, FixedHash>,
    /// Tasks changed (saved) since their app's tally last counted them.
    uncounted: Vec<Name>,
    /// Grows whenever room may have appeared on an agent (an agent online, an offer with more,
    /// a task or an offer released): a placement that found no room is retried only then, or
    /// after [`RETRY_NO_ROOM_MS`].
    capacity_epoch: u64,
    /// The latest capacity epochs, each with the agent it concerned (`None`: anywhere):
    /// a placement that found no room then looks only at the agents since ([`FREED_LOG`]).
    freed_log: std::collections::VecDeque<(u64, Option<Name>)>,
    /// Agent ids by host name, for a pass over a few agents with `hostname` constraints (two
    /// agents may share a host name). Almost always one agent: held inline.
    by_hostname: HashMap<Name, Names, FixedHash>,
    /// Apps that placed a whole launch chunk with more instances waiting: the next
    /// [`Core::settle`] places their next chunk ([`Core::more_to_launch`]).
    launch_next: BTreeSet<String>,
    /// Apps that placed a chunk in this step (until the end of its settle).
    chunked: BTreeSet<String>,
    /// Per app, its definitions by version, oldest first (at most `max_versions`; Marathon's
    /// app versions; the latest is the current one).
    versions: BTreeMap<Name, BTreeMap<String, Arc<AppDefinition>>>,
    /// Groups made through `/v2/groups`, by id.
    groups: BTreeMap<String, GroupRecord>,
    /// Versions kept per app (0: [`DEFAULT_MAX_VERSIONS`]).
    max_versions: usize,
    /// HTTP callback URLs (`/v2/eventSubscriptions`).
    callbacks: BTreeSet<String>,
}

/// Marathon's default `--max_versions`: the definitions kept per app.
pub const DEFAULT_MAX_VERSIONS: usize = 50;

/// How many capacity changes are remembered agent by agent: an app that found no room longer
/// ago than this many changes looks at every agent again.
const FREED_LOG: usize = 4096;

/// Fewest instances one scheduling pass of an app places (the chunk grows to an eighth of
/// the fleet for big fleets): a deploy of 100,000 is not one step of 100,000 launches.
pub const LAUNCH_CHUNK: usize = 2048;

/// How long a placement that found no room waits before it is tried again with nothing changed
/// (a safety net: every event that makes room also moves the capacity epoch).
pub const RETRY_NO_ROOM_MS: Millis = 10_000;

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
        // Another id sequence than a new core's (a test restoring one core from another must
        // not make its ids again); the owner seeds it afresh anyway.
        let mut core = Self {
            ids: Ids::seeded(now ^ 0x0005_EED0_F1D5),
            ..Self::default()
        };
        core.restore_frameworks(now, frameworks, fw_tasks);
        for a in apps {
            core.apps.insert(a.def.id.as_str().into(), a);
        }
        for mut a in agents {
            // Whether it is still there is for the broker to say (its retained liveness
            // arrives on subscribe); its first "online" then reconciles its tasks.
            if a.liveness != AgentLiveness::Offline {
                a.liveness = AgentLiveness::Unknown;
            }
            core.index_hostname(&a.id, None, &a.hostname);
            core.agents.insert(a.id.clone(), Arc::new(a));
        }
        // After the agents and the apps: a task shares their names.
        for t in tasks {
            core.insert_task(t);
        }
        let ids: Vec<Name> = core.apps.keys().cloned().collect();
        for id in ids {
            core.recount(&id);
        }
        core
    }

    /// A core with what `store` holds (see [`Core::restore_all`]).
    pub fn load(now: Millis, store: &dyn crate::store::StateStore) -> Result<Self, StoreError> {
        use crate::store::load;
        let mut core = Self::restore_all(
            now,
            load(store, Table::Apps)?,
            load(store, Table::Tasks)?,
            load(store, Table::Agents)?,
            load(store, Table::Frameworks)?,
            load(store, Table::FwTasks)?,
        );
        core.restore_versions(load(store, Table::AppVersions)?);
        for g in load::<GroupRecord>(store, Table::Groups)? {
            core.groups.insert(g.id.clone(), g);
        }
        core.callbacks = load::<String>(store, Table::EventSubscriptions)?
            .into_iter()
            .collect();
        Ok(core)
    }

    /// Keeps at most `n` definitions per app (Marathon's `--max_versions`).
    pub fn set_max_versions(&mut self, n: usize) {
        self.max_versions = n;
    }

    /// Makes the ids from now on from `seed` (the owner passes a random one; tests a number).
    pub fn seed_ids(&mut self, seed: u64) {
        self.ids = Ids::seeded(seed);
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
        // Records are encoded here, once per commit, however often they changed since, each
        // into one scratch buffer and copied out at its size (a commit may hold tens of
        // thousands: no 1 KiB buffer each).
        let mut scratch = Vec::with_capacity(4096);
        for (table, id) in std::mem::take(&mut self.dirty_records) {
            let mut enc = |r: &dyn erased::Record| encode_record(&mut scratch, table, &id, r);
            let v = match table {
                Table::Apps => self.apps.get(id.as_str()).map(|r| enc(r)),
                Table::Tasks => self.tasks.get(id.as_str()).map(|r| enc(&**r)),
                Table::Agents => self.agents.get(id.as_str()).map(|r| enc(&**r)),
                Table::Frameworks => self.framework_record(&id).map(|r| enc(&r)),
                Table::FwTasks => self.fw_tasks.get(&id).map(|r| enc(r)),
                Table::AppVersions => self.version_record(&id).map(|r| enc(&r)),
                Table::Groups => self.groups.get(&id).map(|r| enc(r)),
                Table::EventSubscriptions => self.callbacks.get(&id).map(|r| enc(r)),
            };
            self.writes.insert((table, id), v);
        }
        std::mem::take(&mut self.writes)
            .into_iter()
            .map(|((table, key), value)| Write { table, key, value })
            .collect()
    }

    /// A copy of what the HTTP reads look at (agents, apps, tasks and their app index,
    /// frameworks and their tasks), for a big read to work on away from the owner. Agents and
    /// tasks are shared, not copied (the owner copies one when it next changes it while the
    /// read holds it), so the copy costs the owner a fraction of building the answer.
    pub fn snapshot(&self) -> Core {
        Core {
            agents: self.agents.clone(),
            apps: self.apps.clone(),
            tasks: self.tasks.clone(),
            by_app: self.by_app.clone(),
            state_counts: self.state_counts.clone(),
            frameworks: self.frameworks.clone(),
            fw_tasks: self.fw_tasks.clone(),
            removed_frameworks: self.removed_frameworks.clone(),
            groups: self.groups.clone(),
            status_updates: self.status_updates,
            stats: Stats {
                observations: Vec::new(),
                ..self.stats.clone()
            },
            ..Core::default()
        }
    }

    /// Every command from now on carries `epoch`, this bridge's leadership epoch (`[ha]`): an
    /// agent that has seen a newer one refuses it.
    pub fn set_epoch(&mut self, epoch: Option<u64>) {
        self.epoch = epoch;
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
        self.agents.values().map(|a| &**a)
    }

    /// Apps.
    pub fn apps(&self) -> impl Iterator<Item = &AppRecord> {
        self.apps.values()
    }

    /// One app.
    pub fn app(&self, id: &str) -> Option<&AppRecord> {
        self.apps.get(id)
    }

    /// Tasks, optionally of one app (in task id order either way).
    pub fn tasks<'a>(
        &'a self,
        app: Option<&'a str>,
    ) -> Box<dyn Iterator<Item = &'a TaskRecord> + 'a> {
        match app {
            None => {
                let mut all: Vec<&TaskRecord> = self.tasks.values().map(|t| &**t).collect();
                all.sort_unstable_by(|a, b| a.id.cmp(&b.id));
                Box::new(all.into_iter())
            }
            Some(a) => Box::new(self.app_tasks(a)),
        }
    }

    /// The tasks of app `app`.
    fn app_tasks<'a>(&'a self, app: &str) -> impl Iterator<Item = &'a TaskRecord> + 'a {
        self.by_app
            .get(app)
            .into_iter()
            .flatten()
            .filter_map(|id| self.tasks.get(id).map(|t| &**t))
    }

    /// The ids of the tasks on agent `agent`.
    fn agent_task_ids(&self, agent: &str) -> Vec<Name> {
        self.by_agent
            .get(agent)
            .map(|s| s.to_vec())
            .unwrap_or_default()
    }

    /// How `t` counts in its app's tally now.
    fn contribution(&self, t: &TaskRecord) -> Option<(bool, bool)> {
        if t.killing || t.inactive {
            return None;
        }
        let app = self.apps.get(&t.app_id)?;
        Some((
            t.version == app.last_config_change_at,
            t.ready(!app.def.health_checks.is_empty()),
        ))
    }

    /// Re-counts the tasks changed since the last call in their apps' tallies.
    fn count_changes(&mut self) {
        for tid in std::mem::take(&mut self.uncounted) {
            let Some(t) = self.tasks.get(&tid) else {
                continue;
            };
            let now = self.contribution(t);
            let shown = StateCounts::of(t);
            let (before, shown_before) = (t.counted, t.shown);
            if now == before && shown == shown_before {
                continue;
            }
            let app = t.app_id.clone();
            if shown != shown_before {
                let counts = self.state_counts.entry(app.clone()).or_default();
                counts.add(shown_before, -1);
                counts.add(shown, 1);
            }
            if now != before {
                let tally = self.tallies.entry(app).or_default();
                if let Some(b) = before {
                    tally.add(b, -1);
                }
                if let Some(n) = now {
                    tally.add(n, 1);
                }
            }
            if let Some(t) = self.tasks.get_mut(&tid).map(Arc::make_mut) {
                t.counted = now;
                t.shown = shown;
            }
        }
    }

    /// Counts app `id`'s tasks from scratch (its version or its checks changed, or a restore).
    fn recount(&mut self, id: &str) {
        let mut tally = Tally::default();
        let ids: Vec<Name> = self
            .by_app
            .get(id)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default();
        for tid in ids {
            let Some(t) = self.tasks.get(&tid) else {
                continue;
            };
            let c = self.contribution(t);
            if let Some(c) = c {
                tally.add(c, 1);
            }
            if let Some(t) = self.tasks.get_mut(&tid).map(Arc::make_mut) {
                t.counted = c;
            }
        }
        self.tallies.insert(id.into(), tally);
    }

    /// App `id`'s tally, counted up to now.
    pub fn tally(&mut self, id: &str) -> Tally {
        self.count_changes();
        self.tallies.get(id).copied().unwrap_or_default()
    }

    /// Counts the tasks changed since the last count into their apps' tallies and
    /// [`StateCounts`]; the owner calls it before every read.
    pub fn catch_up(&mut self) {
        self.count_changes();
    }

    /// App `id`'s tasks by state, as of the last [`Core::catch_up`] (or scheduling pass).
    pub fn state_counts(&self, id: &str) -> StateCounts {
        self.state_counts.get(id).copied().unwrap_or_default()
    }

    /// App `id`'s tasks by state counted from scratch (what [`Core::state_counts`] must equal
    /// once caught up).
    pub fn state_counts_from_scratch(&self, id: &str) -> StateCounts {
        let mut counts = StateCounts::default();
        for t in self.app_tasks(id) {
            counts.add(StateCounts::of(t), 1);
        }
        counts
    }

    /// App `id`'s tally counted from scratch (what [`Core::tally`] must always equal).
    pub fn tally_from_scratch(&self, id: &str) -> Tally {
        let mut tally = Tally::default();
        for t in self.app_tasks(id) {
            if let Some(c) = self.contribution(t) {
                tally.add(c, 1);
            }
        }
        tally
    }

    /// Room may have appeared on `agent` (`None`: anywhere, e.g. a framework's offers went
    /// back): placements that found none try again, on that agent alone when they can
    /// ([`Core::freed_since`]).
    fn capacity_freed(&mut self, agent: Option<&str>) {
        self.capacity_epoch += 1;
        if self.freed_log.len() >= FREED_LOG {
            self.freed_log.pop_front();
        }
        // The agent's own name when it is known (no copy each).
        let agent = agent.map(|a| match self.agents.get_key_value(a) {
            Some((name, _)) => name.clone(),
            None => a.into(),
        });
        self.freed_log.push_back((self.capacity_epoch, agent));
    }

    /// The agents where room may have appeared since capacity epoch `epoch`, if every change
    /// since was on a known agent and the log still reaches back that far; `None` otherwise.
    pub(super) fn freed_since(&self, epoch: u64) -> Option<BTreeSet<Name>> {
        match self.freed_log.front() {
            Some(&(first, _)) if first <= epoch + 1 => {}
            _ => return None,
        }
        let mut agents = BTreeSet::new();
        for (e, a) in self.freed_log.iter().rev() {
            if *e <= epoch {
                break;
            }
            agents.insert(a.clone()?);
        }
        Some(agents)
    }

    /// Moves agent `id` in the host name index from `before` to `after`.
    fn index_hostname(&mut self, id: &Name, before: Option<&str>, after: &Name) {
        if let Some(before) = before
            && let Some(ids) = self.by_hostname.get_mut(before)
        {
            ids.retain(|x| x != id);
            if ids.is_empty() {
                self.by_hostname.remove(before);
            }
        }
        let ids = self.by_hostname.entry(after.clone()).or_default();
        if !ids.contains(id) {
            ids.push(id.clone());
        }
    }

    /// Adds a task with its indexes (it is saved by the caller).
    fn insert_task(&mut self, mut t: TaskRecord) {
        // One allocation per name: the agent's id and host name are its record's, the app's id
        // and (while it is the current one) its version the app's.
        if let Some(a) = self.agents.get(&*t.agent_id) {
            t.agent_id = a.id.clone();
            if a.hostname == t.host {
                t.host = a.hostname.clone();
            }
        }
        if let Some((id, app)) = self.apps.get_key_value(&*t.app_id) {
            t.app_id = id.clone();
            if app.last_config_change_at == t.version {
                t.version = app.last_config_change_at.clone();
            }
        }
        self.uncounted.push(t.id.clone());
        self.by_command
            .insert(t.launch_command.clone(), t.id.clone());
        self.by_app
            .entry(t.app_id.clone())
            .or_default()
            .insert(t.id.clone());
        let on_agent = self.by_agent.entry(t.agent_id.clone()).or_default();
        if let Err(i) = on_agent.binary_search(&t.id) {
            on_agent.insert(i, t.id.clone());
        }
        self.tasks.insert(t.id.clone(), Arc::new(t));
    }

    /// Removes a task and its indexes.
    fn drop_task(&mut self, tid: &str) -> Option<TaskRecord> {
        let t = self.tasks.remove(tid)?;
        self.capacity_freed(Some(&t.agent_id));
        if let Some(c) = t.counted
            && let Some(tally) = self.tallies.get_mut(&t.app_id)
        {
            tally.add(c, -1);
        }
        if let Some(counts) = self.state_counts.get_mut(&t.app_id) {
            counts.add(t.shown, -1);
        }
        self.by_command.remove(&t.launch_command);
        if let Some(set) = self.by_app.get_mut(&t.app_id) {
            set.remove(tid);
            if set.is_empty() {
                self.by_app.remove(&t.app_id);
            }
        }
        if let Some(ids) = self.by_agent.get_mut(&t.agent_id) {
            if let Ok(i) = ids.binary_search_by(|id| (**id).cmp(tid)) {
                ids.remove(i);
            }
            if ids.is_empty() {
                self.by_agent.remove(&t.agent_id);
            }
        }
        Some(Arc::unwrap_or_clone(t))
    }

    /// One task.
    pub fn task(&self, id: &str) -> Option<&TaskRecord> {
        self.tasks.get(id).map(|t| &**t)
    }

    /// Marks task `id` for the store (written, or deleted, at the next [`Core::take_writes`]).
    fn save_task(&mut self, id: &str) {
        self.dirty_records.insert((Table::Tasks, id.to_string()));
        if let Some((id, _)) = self.tasks.get_key_value(id) {
            self.uncounted.push(id.clone());
        }
    }

    /// Marks app `id` for the store.
    fn save_app(&mut self, id: &str) {
        self.dirty_records.insert((Table::Apps, id.to_string()));
    }

    /// Marks agent `id` for the store.
    fn save_agent(&mut self, id: &str) {
        self.dirty_records.insert((Table::Agents, id.to_string()));
    }

    /// Whether anybody listens to Marathon events (`/v2/events` subscribers): without one, the
    /// core builds none (a status update's event costs as much as the rest of it).
    pub fn set_events_wanted(&mut self, wanted: bool) {
        self.events_unwanted = !wanted;
    }

    /// Whether a Marathon event would reach anybody.
    fn events_wanted(&self) -> bool {
        !self.events_unwanted
    }

    fn event(&mut self, now: Millis, kind: &str, mut body: Value) {
        if self.events_unwanted {
            return;
        }
        body["eventType"] = json!(kind);
        body["timestamp"] = json!(rfc3339(now));
        self.effects.push(Effect::Event(body));
    }

    /// Sends `agent` the kill of `task_id` (Marathon's task, a framework's, or an orphan).
    fn kill_command(
        &mut self,
        now: Millis,
        agent: &str,
        task_id: wire::TaskId,
        grace: Option<u32>,
    ) {
        let cid = format!("k-{}", self.ids.uuid().simple());
        self.command(
            now,
            agent,
            &cid,
            CommandKind::Kill(KillTask {
                task_id,
                grace_period_s: grace,
            }),
        );
    }

    fn command(&mut self, now: Millis, agent: &str, command_id: &str, kind: CommandKind) {
        let Ok(topic) = Topic::new(agent, TopicKind::Cmd) else {
            tracing::warn!(agent, "no command topic for this agent id");
            return;
        };
        *self
            .stats
            .commands_sent
            .entry(command_kind_name(&kind))
            .or_default() += 1;
        let mut cmd = Command {
            version: PROTOCOL_VERSION,
            command_id: wire::CommandId::new(command_id).expect("command ids are short"),
            issued_at_ms: now,
            kind,
            agent_id: wire::AgentId::new(agent).ok(),
            signature: None,
            epoch: self.epoch,
        };
        if let Some(signer) = &self.signer {
            signer.sign(&mut cmd);
        }
        self.effects.push(Effect::Publish {
            topic: topic.to_string(),
            payload: encode_to_vec(&cmd),
        });
    }
}

/// Counts of the core's work, for `/metrics/prometheus`; not stored (they start at 0 with the
/// process, as Prometheus counters do).
#[derive(Debug, Clone, Default)]
pub struct Stats {
    /// Status updates acknowledged to agents (after they were stored).
    pub statuses_acknowledged: u64,
    /// Status updates seen before (by uuid): re-sends, dropped.
    pub statuses_duplicate: u64,
    /// Commands sent to agents, by kind.
    pub commands_sent: BTreeMap<&'static str, u64>,
    /// Commands agents refused, by reason.
    pub commands_refused: BTreeMap<&'static str, u64>,
    /// Latencies measured since the owner last took them ([`Core::take_observations`]).
    pub observations: Vec<(Latency, f64)>,
}

/// What a latency observation measured (seconds, on the bridge's clock).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Latency {
    /// From an offer made to a framework to its ACCEPT.
    OfferToAccept,
    /// From a launch sent (Marathon's task staged, or a framework's ACCEPT) to its first
    /// TASK_RUNNING.
    LaunchToRunning {
        /// A framework's task (else Marathon's).
        framework: bool,
    },
}

impl Core {
    /// The latencies measured since the last call (the owner feeds them to histograms).
    pub fn take_observations(&mut self) -> Vec<(Latency, f64)> {
        std::mem::take(&mut self.stats.observations)
    }

    pub(super) fn observe(&mut self, what: Latency, from: Millis, to: Millis) {
        if from > 0 && to >= from {
            self.stats
                .observations
                .push((what, (to - from) as f64 / 1000.0));
        }
    }
}

/// A command kind's name, for metrics and logs.
pub fn command_kind_name(kind: &CommandKind) -> &'static str {
    match kind {
        CommandKind::Launch(_) => "launch",
        CommandKind::Kill(_) => "kill",
        CommandKind::Pull(_) => "pull",
        CommandKind::Drain(_) => "drain",
        CommandKind::Reconcile(_) => "reconcile",
        CommandKind::ReadLogs(_) => "read_logs",
        CommandKind::StopLogs(_) => "stop_logs",
        CommandKind::Undrain => "undrain",
    }
}

/// A task state stored as its Mesos number.
pub(crate) mod mesos_state {
    use outpost_protocol::TaskState;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(s: &TaskState, ser: S) -> Result<S::Ok, S::Error> {
        ser.serialize_u8(s.mesos_number())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(de: D) -> Result<TaskState, D::Error> {
        let n = u8::deserialize(de)?;
        TaskState::from_mesos_number(n)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown Mesos task state {n}")))
    }
}

/// The hasher of the core's hash maps: FxHash (rustc's), unseeded, so iteration order is the
/// same on every run, and a few times faster than SipHash on the short ids a pass looks up
/// per task and per agent. Not flood-resistant: the keys are task ids the core makes and the
/// ids of agents the broker authenticated.
type FixedHash = rustc_hash::FxBuildHasher;

/// Status uuids as hex strings (32 characters each): a tenth of the JSON of arrays of numbers.
/// Arrays of 16 numbers (what stores before this wrote) still load.
/// A task's health as its record: stored whole (empty before the first result), held boxed
/// and only once there is something in it.
mod boxed_health {
    use super::HealthRecord;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(
        h: &Option<Box<HealthRecord>>,
        ser: S,
    ) -> Result<S::Ok, S::Error> {
        h.as_deref().unwrap_or(&super::NO_HEALTH).serialize(ser)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        de: D,
    ) -> Result<Option<Box<HealthRecord>>, D::Error> {
        let h = HealthRecord::deserialize(de)?;
        Ok((h != super::NO_HEALTH).then(|| Box::new(h)))
    }
}

mod uuid_list {
    use serde::{Deserialize, Deserializer, Serializer};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Stored {
        Hex(String),
        Bytes([u8; 16]),
    }

    /// One uuid as 32 hex digits, written on the stack.
    struct Hex([u8; 16]);

    impl serde::Serialize for Hex {
        fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
            const DIGITS: &[u8; 16] = b"0123456789abcdef";
            let mut out = [0u8; 32];
            for (i, b) in self.0.iter().enumerate() {
                out[2 * i] = DIGITS[usize::from(b >> 4)];
                out[2 * i + 1] = DIGITS[usize::from(b & 0xf)];
            }
            // Hex digits are ASCII.
            ser.serialize_str(std::str::from_utf8(&out).unwrap_or_default())
        }
    }

    pub fn serialize<S: Serializer>(list: &[[u8; 16]], ser: S) -> Result<S::Ok, S::Error> {
        ser.collect_seq(list.iter().map(|u| Hex(*u)))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(de: D) -> Result<super::Seen, D::Error> {
        let stored = Vec::<Stored>::deserialize(de)?;
        stored
            .into_iter()
            .map(|s| match s {
                Stored::Bytes(b) => Ok(b),
                Stored::Hex(h) => {
                    let mut out = [0u8; 16];
                    if h.len() != 32 {
                        return Err(serde::de::Error::custom(format!(
                            "status uuid {h:?} is not 32 hex digits"
                        )));
                    }
                    for (i, o) in out.iter_mut().enumerate() {
                        *o = u8::from_str_radix(&h[2 * i..2 * i + 2], 16).map_err(|_| {
                            serde::de::Error::custom(format!("status uuid {h:?} is not hex"))
                        })?;
                    }
                    Ok(out)
                }
            })
            .collect()
    }
}

/// The records the store holds, as one type (so one encoder serves them all).
mod erased {
    /// A stored record.
    pub(super) trait Record {
        /// Its JSON into `buf`.
        fn json(&self, buf: &mut Vec<u8>) -> serde_json::Result<()>;
    }

    impl<T: serde::Serialize> Record for T {
        fn json(&self, buf: &mut Vec<u8>) -> serde_json::Result<()> {
            serde_json::to_writer(buf, self)
        }
    }
}

/// A record's JSON for the store, built in `scratch` and returned at its size (our own types
/// always serialise; a failure is logged and stored as `null`, which a restore reports naming
/// the record).
fn encode_record(
    scratch: &mut Vec<u8>,
    table: Table,
    key: &str,
    value: &dyn erased::Record,
) -> Vec<u8> {
    scratch.clear();
    match value.json(scratch) {
        Ok(()) => scratch.as_slice().to_vec(),
        Err(e) => {
            tracing::error!(?table, key, error = %e, "a record did not serialise");
            b"null".to_vec()
        }
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

// The core, split by concern: each file is one more `impl Core` over the state above.
mod agents;
mod apps;
pub mod calls;
mod framework;
pub mod groups;
pub mod ids;
pub mod ledger;
pub mod logs;
mod place;
#[cfg(test)]
mod proptests;
mod scheduler;
mod subscriptions;
mod tasks;
#[cfg(test)]
mod tests;

pub use framework::{CallError, Framework, FrameworkRecord, FwTask, REMOVED};
pub use ids::Ids;
pub use ledger::Ledger;
