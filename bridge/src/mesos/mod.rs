//! The Mesos operator endpoints (`/master/state`, `/master/slaves`, `/master/tasks`,
//! `/master/frameworks`, `/master/redirect`, `/master/health`, `/version`,
//! `/metrics/snapshot`) over the same agents
//! and tasks as the Marathon API, in the shapes Mesos tooling reads (v0 naming: `slaves`,
//! `slave_id`; resources flattened, ports as `"[31000-31005, 31010-32000]"`). Marathon's tasks
//! appear under one framework, as on a real cluster.

use std::sync::Arc;

use std::convert::Infallible;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::StreamExt;
use serde_json::{Value, json};

use outpost_protocol::TaskState;

use crate::core::calls::Call;
use crate::core::{AgentLiveness, AgentRecord, CallError, Core, Ledger, TaskRecord};
use crate::handle::{JsonBody, Shared};

type S = State<Arc<Shared>>;

/// The Mesos version these endpoints answer as (what pymesos and mesos-dns parse).
pub const MESOS_VERSION: &str = "1.11.0";
/// The framework Marathon's apps run under.
pub const MARATHON_FRAMEWORK_ID: &str = "outpost";
/// The port Mesos agents listen on, shown in agent pids (Outpost agents listen on none).
const AGENT_PORT: u16 = 5051;

/// The Mesos routes.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/master/state", get(state))
        .route("/master/state.json", get(state))
        .route("/master/slaves", get(slaves))
        .route("/master/tasks", get(tasks))
        .route("/master/frameworks", get(frameworks))
        .route("/master/redirect", get(redirect))
        .route("/master/teardown", axum::routing::post(teardown))
        .route("/master/health", get(|| async { StatusCode::OK }))
        .route("/version", get(version))
        .route("/metrics/snapshot", get(metrics_snapshot))
        .route("/api/v1/scheduler", axum::routing::post(scheduler))
        .fallback(|| async { (StatusCode::NOT_FOUND, "not found").into_response() })
        .with_state(shared)
}

fn secs(ms: u64) -> f64 {
    ms as f64 / 1000.0
}

/// `[31000-31005, 31010-32000]`, Mesos's flattened ranges.
pub fn ranges_text(ranges: &[(u16, u16)]) -> String {
    let mut r = ranges.to_vec();
    r.sort_unstable();
    let parts: Vec<String> = r.iter().map(|(b, e)| format!("{b}-{e}")).collect();
    format!("[{}]", parts.join(", "))
}

/// Single ports as ranges, adjacent ones merged.
fn port_ranges(ports: &[u16]) -> Vec<(u16, u16)> {
    let mut p = ports.to_vec();
    p.sort_unstable();
    p.dedup();
    let mut out: Vec<(u16, u16)> = Vec::new();
    for port in p {
        match out.last_mut() {
            Some((_, e)) if *e + 1 == port => *e = port,
            _ => out.push((port, port)),
        }
    }
    out
}

fn master_pid(shared: &Shared) -> String {
    let c = &shared.config;
    format!("master@{}:{}", c.advertised_host, c.mesos_listen.port())
}

/// An agent as `/master/slaves` shows it: its capacity from its latest offer, and what the
/// capacity ledger says is used by tasks and held by offers (the same numbers placement and
/// framework offers go by).
/// An agent as `/master/slaves` and `/master/state` list it, written straight from its record
/// and the ledger (no JSON tree per agent: at 10,000 agents the trees cost more than the rest of
/// `/master/state`). Fields in the order a JSON tree of them would have (sorted).
#[derive(serde::Serialize)]
struct MesosAgent<'a> {
    active: bool,
    attributes: &'a std::collections::BTreeMap<String, String>,
    capabilities: [&'static str; 3],
    deactivated: bool,
    hostname: &'a str,
    id: &'a str,
    offered_resources: AgentResources,
    pid: String,
    port: u16,
    registered_time: f64,
    reserved_resources: Empty,
    resources: AgentResources,
    unreserved_resources: AgentResources,
    used_resources: AgentResources,
    version: &'static str,
}

/// Flattened resources; `ports` only where the agent has an offer to count them against.
#[derive(Clone, serde::Serialize)]
struct AgentResources {
    cpus: f64,
    disk: f64,
    mem: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    ports: Option<String>,
}

impl AgentResources {
    fn of(x: &crate::placement::Amount, ports: Option<String>) -> Self {
        Self {
            cpus: x.cpus,
            disk: x.disk,
            mem: x.mem,
            ports,
        }
    }
}

/// `/master/slaves`.
#[derive(serde::Serialize)]
struct Slaves<'a> {
    slaves: Vec<MesosAgent<'a>>,
    recovered_slaves: [(); 0],
}

/// `{}`.
#[derive(serde::Serialize)]
struct Empty {}

impl<'a> MesosAgent<'a> {
    fn new(ledger: &Ledger, a: &'a AgentRecord) -> Self {
        let usage = ledger.usage(&a.id);
        let task_ports: Vec<u16> = usage.task_ports.iter().copied().collect();
        let offered_ports: Vec<u16> = usage.offered_ports.iter().copied().collect();
        let total = match &a.offer {
            Some(o) => {
                let mut all = o.ranges.to_vec();
                all.extend(o.used_ranges.iter().copied());
                AgentResources::of(&(o.available + o.used), Some(ranges_text(&merge(all))))
            }
            None => AgentResources::of(&crate::placement::Amount::default(), None),
        };
        let ip = a.address.as_deref().unwrap_or(&a.hostname);
        Self {
            active: a.liveness.connected(),
            attributes: &a.attributes,
            capabilities: ["MULTI_ROLE", "HIERARCHICAL_ROLE", "RESERVATION_REFINEMENT"],
            deactivated: a.liveness == AgentLiveness::Draining,
            hostname: &a.hostname,
            id: &a.id,
            offered_resources: AgentResources::of(
                &usage.offered,
                Some(ranges_text(&port_ranges(&offered_ports))),
            ),
            pid: format!("slave(1)@{ip}:{AGENT_PORT}"),
            port: AGENT_PORT,
            registered_time: secs(a.last_seen_ms),
            reserved_resources: Empty {},
            unreserved_resources: total.clone(),
            resources: total,
            used_resources: AgentResources::of(
                &usage.tasks,
                Some(ranges_text(&port_ranges(&task_ports))),
            ),
            version: MESOS_VERSION,
        }
    }
}

/// Adjacent or overlapping ranges merged.
fn merge(mut r: Vec<(u16, u16)>) -> Vec<(u16, u16)> {
    r.sort_unstable();
    let mut out: Vec<(u16, u16)> = Vec::new();
    for (b, e) in r {
        match out.last_mut() {
            Some((_, last)) if b <= last.saturating_add(1) => *last = (*last).max(e),
            _ => out.push((b, e)),
        }
    }
    out
}

fn task_state(t: &TaskRecord) -> &'static str {
    if t.unreachable_since_ms.is_some() {
        TaskState::Unreachable.mesos_name()
    } else {
        t.state().mesos_name()
    }
}

/// What a Marathon task's Mesos view takes from its app, worked out once per app for a list.
struct AppView<'a> {
    name: String,
    mappings: &'a [crate::app::PortMapping],
    network: &'static str,
    image: &'a str,
    labels: Vec<Label<'a>>,
}

impl<'a> AppView<'a> {
    fn of(app_id: &str, app: Option<&'a crate::core::AppRecord>) -> Self {
        Self {
            name: app_id.trim_start_matches('/').replace('/', "."),
            mappings: app.map(|a| a.def.port_mappings()).unwrap_or_default(),
            network: app
                .and_then(|a| a.def.network().ok())
                .map(|n| match n {
                    outpost_protocol::NetworkMode::Bridge => "BRIDGE",
                    outpost_protocol::NetworkMode::Host => "HOST",
                    outpost_protocol::NetworkMode::None => "NONE",
                })
                .unwrap_or("HOST"),
            image: app.and_then(|a| a.def.image()).unwrap_or(""),
            labels: app
                .map(|a| {
                    a.def
                        .labels
                        .iter()
                        .map(|(key, value)| Label { key, value })
                        .collect()
                })
                .unwrap_or_default(),
        }
    }
}

/// Marathon's tasks as Mesos shows them, their apps' parts worked out once each.
struct MesosTasks<'a> {
    core: &'a Core,
    apps: std::cell::RefCell<std::collections::HashMap<&'a str, std::rc::Rc<AppView<'a>>>>,
}

impl<'a> MesosTasks<'a> {
    fn new(core: &'a Core) -> Self {
        Self {
            core,
            apps: Default::default(),
        }
    }

    /// Task `t` as `/master/state` and `/master/tasks` show it.
    fn task(&self, t: &'a TaskRecord) -> MesosTask<'a> {
        let app = {
            let mut apps = self.apps.borrow_mut();
            apps.entry(&t.app_id)
                .or_insert_with(|| {
                    std::rc::Rc::new(AppView::of(&t.app_id, self.core.app(&t.app_id)))
                })
                .clone()
        };
        let state = task_state(t);
        MesosTask {
            id: &t.id,
            framework_id: MARATHON_FRAMEWORK_ID,
            executor_id: "",
            slave_id: &t.agent_id,
            state,
            resources: TaskResources {
                cpus: t.cpus,
                mem: t.mem,
                disk: t.disk,
                ports: ranges_text(&port_ranges(&t.host_ports)),
            },
            role: "*",
            statuses: [TaskStatusView {
                state,
                timestamp: secs(t.started_at_ms.unwrap_or(t.staged_at_ms)),
                container_status: ContainerStatus {
                    network_infos: [NetworkInfo {
                        ip_addresses: t.ip.iter().map(|ip| IpAddress { ip_address: ip }).collect(),
                    }],
                },
                healthy: t.health().alive,
            }],
            host_ports: &t.host_ports,
            app,
        }
    }
}

/// A Marathon task in Mesos's shape (`name`, `labels`, `discovery`, `container` from its app).
struct MesosTask<'a> {
    id: &'a str,
    framework_id: &'static str,
    executor_id: &'static str,
    slave_id: &'a str,
    state: &'static str,
    resources: TaskResources,
    role: &'static str,
    statuses: [TaskStatusView<'a>; 1],
    host_ports: &'a [u16],
    app: std::rc::Rc<AppView<'a>>,
}

impl serde::Serialize for MesosTask<'_> {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let app = &*self.app;
        let discovery_ports: Vec<DiscoveryPort> = self
            .host_ports
            .iter()
            .enumerate()
            .map(|(i, &number)| DiscoveryPort {
                number,
                protocol: app
                    .mappings
                    .get(i)
                    .map(|m| m.protocol.as_str())
                    .unwrap_or("tcp"),
            })
            .collect();
        let port_mappings: Vec<DockerPortMapping> = app
            .mappings
            .iter()
            .zip(self.host_ports.iter())
            .map(|(m, &host_port)| DockerPortMapping {
                host_port,
                container_port: m.container_port,
                protocol: &m.protocol,
            })
            .collect();
        // Keys in the order a JSON tree of them would have (sorted), as before.
        let mut m = ser.serialize_map(Some(12))?;
        m.serialize_entry(
            "container",
            &Container {
                kind: "DOCKER",
                docker: Docker {
                    image: app.image,
                    network: app.network,
                    port_mappings,
                },
            },
        )?;
        m.serialize_entry(
            "discovery",
            &Discovery {
                visibility: "FRAMEWORK",
                name: &app.name,
                ports: DiscoveryPorts {
                    ports: discovery_ports,
                },
            },
        )?;
        m.serialize_entry("executor_id", self.executor_id)?;
        m.serialize_entry("framework_id", self.framework_id)?;
        m.serialize_entry("id", self.id)?;
        m.serialize_entry("labels", &app.labels)?;
        m.serialize_entry("name", &app.name)?;
        m.serialize_entry("resources", &self.resources)?;
        m.serialize_entry("role", self.role)?;
        m.serialize_entry("slave_id", self.slave_id)?;
        m.serialize_entry("state", self.state)?;
        m.serialize_entry("statuses", &self.statuses)?;
        m.end()
    }
}

#[derive(serde::Serialize)]
struct Label<'a> {
    key: &'a str,
    value: &'a str,
}

#[derive(serde::Serialize)]
struct TaskResources {
    cpus: f64,
    disk: f64,
    mem: f64,
    ports: String,
}

#[derive(serde::Serialize)]
struct TaskStatusView<'a> {
    container_status: ContainerStatus<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    healthy: Option<bool>,
    state: &'static str,
    timestamp: f64,
}

#[derive(serde::Serialize)]
struct ContainerStatus<'a> {
    network_infos: [NetworkInfo<'a>; 1],
}

#[derive(serde::Serialize)]
struct NetworkInfo<'a> {
    ip_addresses: Vec<IpAddress<'a>>,
}

#[derive(serde::Serialize)]
struct IpAddress<'a> {
    ip_address: &'a str,
}

#[derive(serde::Serialize)]
struct Discovery<'a> {
    name: &'a str,
    ports: DiscoveryPorts<'a>,
    visibility: &'static str,
}

#[derive(serde::Serialize)]
struct DiscoveryPorts<'a> {
    ports: Vec<DiscoveryPort<'a>>,
}

#[derive(serde::Serialize)]
struct DiscoveryPort<'a> {
    number: u16,
    protocol: &'a str,
}

#[derive(serde::Serialize)]
struct Container<'a> {
    docker: Docker<'a>,
    #[serde(rename = "type")]
    kind: &'static str,
}

#[derive(serde::Serialize)]
struct Docker<'a> {
    image: &'a str,
    network: &'static str,
    port_mappings: Vec<DockerPortMapping<'a>>,
}

#[derive(serde::Serialize)]
struct DockerPortMapping<'a> {
    container_port: u32,
    host_port: u16,
    protocol: &'a str,
}

/// A Mesos framework's task as the operator endpoints show it.
fn fw_task_json(t: &crate::core::FwTask) -> Value {
    let mut status = json!({
        "state": t.state.mesos_name(),
        "container_status": {
            "network_infos": [{
                "ip_addresses": t.ip.iter().map(|ip| json!({ "ip_address": ip })).collect::<Vec<_>>(),
            }],
        },
    });
    if let Some(h) = t.healthy {
        status["healthy"] = json!(h);
    }
    json!({
        "id": t.id,
        "name": t.id,
        "framework_id": t.framework_id,
        "executor_id": "",
        "slave_id": t.agent_id,
        "state": t.state.mesos_name(),
        "resources": {
            "cpus": t.amount.cpus,
            "mem": t.amount.mem,
            "disk": t.amount.disk,
            "ports": ranges_text(&port_ranges(&t.ports)),
        },
        "role": "*",
        "statuses": [status],
        "labels": [],
    })
}

/// A framework of the scheduler API as the operator endpoints show it.
fn subscribed_framework_json(core: &Core, f: &crate::core::Framework) -> Value {
    let tasks: Vec<Value> = core
        .framework_tasks()
        .filter(|t| t.framework_id == f.id)
        .map(fw_task_json)
        .collect();
    json!({
        "id": f.id,
        "name": f.name,
        "hostname": "",
        "active": f.stream_id.is_some(),
        "connected": f.stream_id.is_some(),
        "recovered": false,
        "user": "",
        "failover_timeout": f.failover_timeout_s,
        "checkpoint": false,
        "role": "*",
        "roles": ["*"],
        "tasks": tasks,
        "unreachable_tasks": [],
        "completed_tasks": [],
        "offers": [],
        "executors": [],
        "labels": [],
        "capabilities": if f.partition_aware { json!(["PARTITION_AWARE"]) } else { json!([]) },
    })
}

/// A framework as the operator endpoints show it: Marathon's with its tasks written straight
/// through, or one of the scheduler API's.
#[derive(serde::Serialize)]
#[serde(untagged)]
enum FrameworkView<'a> {
    Marathon {
        #[serde(flatten)]
        rest: Value,
        tasks: Vec<MesosTask<'a>>,
        unreachable_tasks: Vec<MesosTask<'a>>,
    },
    Scheduler(Value),
}

/// Marathon's framework, then the scheduler API's.
fn all_frameworks<'a>(shared: &Shared, core: &'a Core) -> Vec<FrameworkView<'a>> {
    let mut v = vec![framework_json(shared, core)];
    v.extend(
        core.frameworks()
            .map(|f| FrameworkView::Scheduler(subscribed_framework_json(core, f))),
    );
    v
}

/// `{..., "frameworks": [...]}`: the frameworks written straight through after `rest`.
#[derive(serde::Serialize)]
struct WithFrameworks<'a> {
    #[serde(flatten)]
    rest: Value,
    /// The agents, in `/master/state` only.
    #[serde(skip_serializing_if = "Option::is_none")]
    slaves: Option<Vec<MesosAgent<'a>>>,
    frameworks: Vec<FrameworkView<'a>>,
}

fn framework_json<'a>(shared: &Shared, core: &'a Core) -> FrameworkView<'a> {
    let c = &shared.config;
    let (reachable, unreachable): (Vec<&TaskRecord>, Vec<&TaskRecord>) = core
        .tasks(None)
        .partition(|t| t.unreachable_since_ms.is_none());
    let used = reachable.iter().fold((0.0, 0.0, 0.0), |(c, m, d), t| {
        (c + t.cpus, m + t.mem, d + t.disk)
    });
    let tasks = MesosTasks::new(core);
    let rest = json!({
        "id": MARATHON_FRAMEWORK_ID,
        "name": "marathon",
        "pid": format!("scheduler-outpost@{}:{}", c.advertised_host, c.listen.port()),
        "hostname": c.advertised_host,
        "webui_url": format!("http://{}:{}", c.advertised_host, c.listen.port()),
        "active": true,
        "connected": true,
        "recovered": false,
        "user": "root",
        "failover_timeout": 604800.0,
        "checkpoint": true,
        "role": "*",
        "roles": ["*"],
        "registered_time": secs(shared.started_at_ms),
        "completed_tasks": [],
        "offers": [],
        "executors": [],
        "labels": [],
        "used_resources": { "cpus": used.0, "mem": used.1, "disk": used.2 },
        "offered_resources": { "cpus": 0.0, "mem": 0.0, "disk": 0.0 },
        "capabilities": ["PARTITION_AWARE", "TASK_KILLING_STATE"],
    });
    FrameworkView::Marathon {
        rest,
        tasks: reachable.into_iter().map(|t| tasks.task(t)).collect(),
        unreachable_tasks: unreachable.into_iter().map(|t| tasks.task(t)).collect(),
    }
}

fn stored(e: crate::store::StoreError) -> Response {
    text(503, format!("the bridge cannot answer: {e}"))
}

async fn state(State(s): S) -> Response {
    let pid = master_pid(&s);
    let shared = s.clone();
    let body = s.read_snapshot(move |core| {
        let s = &shared;
        let c = &s.config;
        let ledger = Ledger::of(core);
        let agents: Vec<&AgentRecord> = core.agents().collect();
        let rest = json!({
            "version": MESOS_VERSION,
            "git_sha": "",
            "git_tag": "",
            "build_date": "",
            "build_time": 0.0,
            "build_user": concat!("outpost-bridge ", env!("CARGO_PKG_VERSION")),
            "start_time": secs(s.started_at_ms),
            "elected_time": secs(s.started_at_ms),
            "id": "outpost-bridge",
            "pid": pid,
            "hostname": c.advertised_host,
            "activated_slaves": agents.iter().filter(|a| a.liveness.connected()).count(),
            "deactivated_slaves": 0,
            "unreachable_slaves": agents.iter().filter(|a| a.liveness == AgentLiveness::Offline).count(),
            "leader": pid,
            "leader_info": {
                "id": "outpost-bridge",
                "pid": pid,
                "port": c.mesos_listen.port(),
                "hostname": c.advertised_host,
            },
            "cluster": "outpost",
            "log_dir": "",
            "flags": {},
            "completed_frameworks": [],
            "orphan_tasks": [],
            "unregistered_frameworks": [],
        });
        JsonBody::of(&WithFrameworks {
            rest,
            slaves: Some(agents.iter().map(|a| MesosAgent::new(&ledger, a)).collect()),
            frameworks: all_frameworks(s, core),
        })
    });
    match body.await {
        Ok(body) => body.into_response(),
        Err(e) => stored(e),
    }
}

fn params(q: Option<String>) -> Vec<(String, String)> {
    form_urlencoded::parse(q.unwrap_or_default().as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn param<'a>(p: &'a [(String, String)], key: &str) -> Option<&'a str> {
    p.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

async fn slaves(State(s): S, RawQuery(q): RawQuery) -> Response {
    let p = params(q);
    let only = param(&p, "slave_id").map(str::to_string);
    let body = s.read_snapshot(move |core| {
        let ledger = Ledger::of(core);
        let list: Vec<MesosAgent> = core
            .agents()
            .filter(|a| only.as_deref().is_none_or(|id| *a.id == *id))
            .map(|a| MesosAgent::new(&ledger, a))
            .collect();
        JsonBody::of(&Slaves {
            slaves: list,
            recovered_slaves: [],
        })
    });
    match body.await {
        Ok(body) => body.into_response(),
        Err(e) => stored(e),
    }
}

async fn tasks(State(s): S, RawQuery(q): RawQuery) -> Response {
    let p = params(q);
    let bad = |k: &str, v: &str| {
        (
            StatusCode::BAD_REQUEST,
            format!("Failed to parse query parameter {k}={v:?}: not a number"),
        )
            .into_response()
    };
    let limit = match param(&p, "limit").map(|v| v.parse::<usize>().map_err(|_| v)) {
        None => 100,
        Some(Ok(n)) => n,
        Some(Err(v)) => return bad("limit", v),
    };
    let offset = match param(&p, "offset").map(|v| v.parse::<usize>().map_err(|_| v)) {
        None => 0,
        Some(Ok(n)) => n,
        Some(Err(v)) => return bad("offset", v),
    };
    let descending = param(&p, "order") == Some("desc");
    let framework = param(&p, "framework_id").map(str::to_string);
    let task = param(&p, "task_id").map(str::to_string);
    let body = s.read_snapshot_json(move |core| {
        let mut list: Vec<&TaskRecord> = core
            .tasks(None)
            .filter(|_| {
                framework
                    .as_deref()
                    .is_none_or(|f| f == MARATHON_FRAMEWORK_ID)
            })
            .filter(|t| task.as_deref().is_none_or(|id| *t.id == *id))
            .collect();
        list.sort_by_key(|t| (t.staged_at_ms, t.id.clone()));
        let tasks = MesosTasks::new(core);
        let mut all: Vec<Value> = list
            .into_iter()
            .map(|t| serde_json::to_value(tasks.task(t)).unwrap_or(Value::Null))
            .collect();
        // Then the scheduler API's frameworks' tasks.
        all.extend(
            core.framework_tasks()
                .filter(|t| framework.as_deref().is_none_or(|f| f == t.framework_id))
                .filter(|t| task.as_deref().is_none_or(|id| t.id == id))
                .map(fw_task_json),
        );
        if descending {
            all.reverse();
        }
        let page: Vec<Value> = all.into_iter().skip(offset).take(limit).collect();
        json!({ "tasks": page })
    });
    match body.await {
        Ok(body) => body.into_response(),
        Err(e) => stored(e),
    }
}

async fn frameworks(State(s): S) -> Response {
    let shared = s.clone();
    let body = s.read_snapshot(move |core| {
        JsonBody::of(&WithFrameworks {
            rest: json!({ "completed_frameworks": [], "unregistered_frameworks": [] }),
            slaves: None,
            frameworks: all_frameworks(&shared, core),
        })
    });
    match body.await {
        Ok(body) => body.into_response(),
        Err(e) => stored(e),
    }
}

async fn redirect(State(s): S) -> Response {
    let c = &s.config;
    let location = format!("//{}:{}", c.advertised_host, c.mesos_listen.port());
    (
        StatusCode::TEMPORARY_REDIRECT,
        [(header::LOCATION, location)],
    )
        .into_response()
}

/// `/metrics/snapshot`: the master's gauges Mesos dashboards read.
async fn metrics_snapshot(State(s): S) -> Response {
    let now = crate::time::now_ms();
    let started = s.started_at_ms;
    let body = s.read_snapshot_json(move |core| {
        let agents: Vec<&AgentRecord> = core.agents().collect();
        let active = agents.iter().filter(|a| a.liveness.connected()).count();
        let unreachable = agents
            .iter()
            .filter(|a| a.liveness == AgentLiveness::Offline)
            .count();
        let count = |st: TaskState| {
            core.tasks(None)
                .filter(|t| t.unreachable_since_ms.is_none() && t.state() == st)
                .count()
        };
        let unreachable_tasks = core
            .tasks(None)
            .filter(|t| t.unreachable_since_ms.is_some())
            .count();
        let (cpus, mem, disk, used_cpus, used_mem, used_disk) = agents
            .iter()
            .filter_map(|a| a.offer.as_ref())
            .fold((0.0, 0.0, 0.0, 0.0, 0.0, 0.0), |acc, o| {
                (
                    acc.0 + o.available.cpus + o.used.cpus,
                    acc.1 + o.available.mem + o.used.mem,
                    acc.2 + o.available.disk + o.used.disk,
                    acc.3 + o.used.cpus,
                    acc.4 + o.used.mem,
                    acc.5 + o.used.disk,
                )
            });
        json!({
            "master/elected": 1.0,
            "master/uptime_secs": secs(now.saturating_sub(started)),
            "master/slaves_active": active as f64,
            "master/slaves_connected": active as f64,
            "master/slaves_disconnected": (agents.len() - active) as f64,
            "master/slaves_inactive": 0.0,
            "master/slaves_unreachable": unreachable as f64,
            "master/frameworks_active": 1.0,
            "master/frameworks_connected": 1.0,
            "master/tasks_staging": count(TaskState::Staging) as f64,
            "master/tasks_starting": count(TaskState::Starting) as f64,
            "master/tasks_running": count(TaskState::Running) as f64,
            "master/tasks_killing": count(TaskState::Killing) as f64,
            "master/tasks_unreachable": unreachable_tasks as f64,
            "master/cpus_total": cpus,
            "master/cpus_used": used_cpus,
            "master/mem_total": mem,
            "master/mem_used": used_mem,
            "master/disk_total": disk,
            "master/disk_used": used_disk,
        })
    });
    match body.await {
        Ok(body) => body.into_response(),
        Err(e) => stored(e),
    }
}

fn text(status: u16, message: impl Into<String>) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        message.into(),
    )
        .into_response()
}

impl From<CallError> for Response {
    fn from(e: CallError) -> Self {
        text(e.status, e.message)
    }
}

/// One RecordIO record: `<length>\n<json>`.
fn record(v: &Value) -> Bytes {
    let json = v.to_string();
    Bytes::from(format!("{}\n{json}", json.len()))
}

/// Tells the core a framework's stream is gone when the response body is dropped.
struct StreamGuard {
    shared: Arc<Shared>,
    framework_id: String,
    stream_id: String,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        let (fid, sid) = (self.framework_id.clone(), self.stream_id.clone());
        self.shared.detach(move |o, now| {
            o.close_stream(&fid, &sid);
            o.core.framework_disconnected(now, &fid, &sid);
        });
    }
}

/// `POST /api/v1/scheduler`: SUBSCRIBE opens the event stream (RecordIO over a chunked 200);
/// every other call answers 202 on its own request.
async fn scheduler(State(s): S, headers: HeaderMap, body: Bytes) -> Response {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if content_type.contains("protobuf") {
        return text(
            415,
            "application/x-protobuf is not supported by this master: send application/json",
        );
    }
    if !content_type.contains("application/json") {
        return text(
            415,
            format!("Content-Type {content_type:?} is not supported: send application/json"),
        );
    }
    if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(&body) {
        return text(400, format!("Failed to parse body into Call: {e}"));
    }
    // Typed here, at the edge: the core gets fields, not JSON.
    let call = match Call::parse(&body) {
        Ok(c) => c,
        Err(e) => return e.into(),
    };
    if matches!(call, Call::Subscribe { .. }) {
        return subscribe(s, call).await;
    }
    let stream_id = headers
        .get("Mesos-Stream-Id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    // The stream is checked by the core in the same step that runs the call.
    match s
        .apply(move |c, now| c.call(now, stream_id.as_deref(), &call))
        .await
    {
        Err(e) => text(503, format!("the bridge could not store the change: {e}")),
        Ok(Err(e)) => e.into(),
        Ok(Ok(())) => StatusCode::ACCEPTED.into_response(),
    }
}

/// A stream of RecordIO events that ends after them, as a 200 (how a master answers a
/// SUBSCRIBE it refuses with ERROR).
fn closed_stream(events: Vec<Value>) -> Response {
    let body: Vec<u8> = events.iter().flat_map(|e| record(e).to_vec()).collect();
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

/// `POST /master/teardown` with `frameworkId=ID` (form-encoded, as Mesos takes it): the
/// framework gets ERROR on its stream, its tasks are killed, and its id is refused from then on.
async fn teardown(State(s): S, body: Bytes) -> Response {
    let id = form_urlencoded::parse(&body)
        .find(|(k, _)| k == "frameworkId")
        .map(|(_, v)| v.into_owned());
    let Some(id) = id else {
        return text(
            400,
            "Missing 'frameworkId' query parameter in the request body",
        );
    };
    match s.apply(move |c, now| c.operator_teardown(now, &id)).await {
        Err(e) => text(503, format!("the bridge could not store the change: {e}")),
        Ok(Err(e)) => e.into(),
        Ok(Ok(())) => StatusCode::OK.into_response(),
    }
}

async fn subscribe(s: Arc<Shared>, call: Call) -> Response {
    let stream_id = uuid::Uuid::new_v4().to_string();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Value>();
    // The stream's sender is registered in the same step as the subscription, before any
    // effect of it runs: offers a tick makes right after go to this stream, not nowhere.
    let sid = stream_id.clone();
    let framework_id = match s
        .apply_owner(move |o, now| {
            let id = o.core.subscribe(now, &call, &sid)?;
            o.open_stream(&id, &sid, tx);
            Ok::<_, CallError>(id)
        })
        .await
    {
        Err(e) => return text(503, format!("the bridge could not store the change: {e}")),
        Ok(Err(e)) if e.is_removed() => {
            return closed_stream(vec![
                json!({ "type": "ERROR", "error": { "message": crate::core::REMOVED } }),
            ]);
        }
        Ok(Err(e)) => return e.into(),
        Ok(Ok(id)) => id,
    };
    let c = &s.config;
    let subscribed = json!({
        "type": "SUBSCRIBED",
        "subscribed": {
            "framework_id": { "value": framework_id },
            "heartbeat_interval_seconds": c.scheduler_heartbeat.as_secs_f64(),
            "master_info": {
                "id": "outpost-bridge",
                "pid": master_pid(&s),
                "port": c.mesos_listen.port(),
                "hostname": c.advertised_host,
                "version": MESOS_VERSION,
            },
        },
    });
    // Offers right away, queued behind SUBSCRIBED; off the request's task, so the response
    // head goes out at once even when the fleet is large.
    s.detach(|o, now| o.core.offer_now(now));
    let guard = StreamGuard {
        shared: s.clone(),
        framework_id: framework_id.clone(),
        stream_id: stream_id.clone(),
    };
    // Events until the framework is torn down (its sender dropped), a HEARTBEAT every interval.
    let period = s.config.scheduler_heartbeat;
    let ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    let events = futures_util::stream::unfold((rx, ticks), |(mut rx, mut ticks)| async move {
        // Events already queued go before a heartbeat: a heartbeat tells a framework that
        // everything sent before it has arrived.
        tokio::select! {
            biased;
            ev = rx.recv() => ev.map(|v| (v, (rx, ticks))),
            _ = ticks.tick() => Some((json!({ "type": "HEARTBEAT" }), (rx, ticks))),
        }
    });
    let body = futures_util::stream::iter([subscribed])
        .chain(events)
        .map(move |v| {
            let _keep = &guard;
            Ok::<_, Infallible>(record(&v))
        });
    let mut r = Response::new(Body::from_stream(body));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    if let Ok(v) = header::HeaderValue::from_str(&stream_id) {
        r.headers_mut().insert("Mesos-Stream-Id", v);
    }
    r
}

async fn version() -> Response {
    axum::Json(json!({
        "version": MESOS_VERSION,
        "build_date": "",
        "build_time": 0.0,
        "build_user": concat!("outpost-bridge ", env!("CARGO_PKG_VERSION")),
        "git_sha": "",
        "git_tag": "",
    }))
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_flattened_as_mesos_writes_them() {
        assert_eq!(
            ranges_text(&[(31010, 32000), (31000, 31005)]),
            "[31000-31005, 31010-32000]"
        );
        assert_eq!(ranges_text(&[]), "[]");
        assert_eq!(
            port_ranges(&[31002, 31000, 31001, 31005]),
            vec![(31000, 31002), (31005, 31005)]
        );
        assert_eq!(
            merge(vec![(31003, 31009), (31000, 31002)]),
            vec![(31000, 31009)]
        );
    }
}
