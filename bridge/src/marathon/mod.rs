//! The Marathon REST API over the core: routes, query parameters as Marathon reads them
//! (`force=True`, repeated `embed`), and the JSON shapes Marathon clients parse.

// Handlers return early with a ready `Response` on bad input; boxing it would only add noise.
#![allow(clippy::result_large_err)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::{Stream, StreamExt};
use serde_json::{Value, json};
use tokio_stream::wrappers::BroadcastStream;

use crate::app::{AppDefinition, Invalid, normalize_id};
use crate::core::{ApiError, AppRecord, Core, TaskRecord};
use crate::handle::{JsonBody, Shared};
use crate::time::rfc3339;

mod groups;
mod logs;

type S = State<Arc<Shared>>;

/// The version of Marathon whose API this is.
pub const MARATHON_VERSION: &str = "1.11.0";

// The web UI: three static files bundled into the binary (no build step), reading the APIs.
const UI_INDEX: &str = include_str!("../ui/index.html");
const UI_JS: &str = include_str!("../ui/app.js");
const UI_CSS: &str = include_str!("../ui/style.css");

async fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (axum::http::header::CONTENT_TYPE, content_type),
            (axum::http::header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// The agents as the UI shows them: liveness, last contact, attributes, offered and used.
async fn ui_agents(State(s): S) -> Response {
    let agents = s.read_snapshot(|core| {
        core.agents()
            .map(|a| {
                let offer = a.offer.as_ref();
                json!({
                    "id": a.id,
                    "hostname": a.hostname,
                    "liveness": a.liveness.name(),
                    "online": a.online(),
                    "last_seen": rfc3339(a.last_seen_ms),
                    "unreachable_since": a.unreachable_since_ms.map(rfc3339),
                    "attributes": a.attributes,
                    "offered": offer.map(|o| json!({
                        "cpus": o.available.cpus, "mem": o.available.mem,
                        "disk": o.available.disk, "ports": o.port_count,
                    })),
                    "used": offer.map(|o| json!({
                        "cpus": o.used.cpus, "mem": o.used.mem, "disk": o.used.disk,
                    })),
                })
            })
            .collect::<Vec<_>>()
    });
    match agents.await {
        Ok(agents) => axum::Json(json!({ "agents": agents })).into_response(),
        Err(e) => stored(e),
    }
}

/// Most task ids one `POST /v2/tasks/delete` may name.
pub const MAX_IDS_PER_REQUEST: usize = 10_000;

/// The Marathon API's routes.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route(
            "/v2/apps",
            get(list_apps)
                .post(create_app)
                .put(update_apps)
                .patch(update_apps),
        )
        .route(
            "/v2/apps/",
            get(list_apps)
                .post(create_app)
                .put(update_apps)
                .patch(update_apps),
        )
        .route("/v2/groups", axum::routing::any(groups::groups))
        .route("/v2/groups/", axum::routing::any(groups::groups))
        .route(
            "/v2/groups/{*rest}",
            axum::routing::any(groups::group_route),
        )
        .route("/v2/apps/{*rest}", axum::routing::any(app_route))
        .route("/v2/tasks", get(list_tasks))
        .route("/v2/tasks/delete", post(delete_tasks))
        .route("/v2/tasks/{id}/logs", get(logs::task_logs))
        .route("/v2/deployments", get(list_deployments))
        .route(
            "/v2/deployments/{id}",
            axum::routing::delete(cancel_deployment),
        )
        .route("/v2/queue", get(queue))
        .route("/v2/queue/{*rest}", axum::routing::delete(reset_delay))
        .route("/v2/pods", axum::routing::any(pods))
        .route("/v2/pods/{*rest}", axum::routing::any(pods))
        .route(
            "/v2/eventSubscriptions",
            get(list_subscriptions).post(subscribe).delete(unsubscribe),
        )
        .route("/v2/info", get(info))
        .route("/v2/leader", get(leader).delete(abdicate))
        .route("/v2/events", get(events))
        .route("/ping", get(|| async { "pong" }))
        .route(
            "/",
            get(|| async { axum::response::Redirect::temporary("/ui/") }),
        )
        .route(
            "/ui",
            get(|| async { axum::response::Redirect::temporary("/ui/") }),
        )
        .route("/ui/", get(|| asset("text/html; charset=utf-8", UI_INDEX)))
        .route(
            "/ui/app.js",
            get(|| asset("text/javascript; charset=utf-8", UI_JS)),
        )
        .route(
            "/ui/style.css",
            get(|| asset("text/css; charset=utf-8", UI_CSS)),
        )
        .route("/v2/agents/{id}/pull", post(pull_image))
        .route("/v2/agents/{id}/drain", post(drain_agent))
        .route("/v2/agents/{id}/undrain", post(undrain_agent))
        .route("/ui/agents", get(ui_agents))
        .route("/ui/bridges", get(ui_bridges))
        .route("/metrics", get(metrics))
        .route("/metrics/prometheus", get(prometheus))
        .fallback(|| async { error(404, json!({ "message": "not found" })) })
        .with_state(shared)
}

fn error(status: u16, body: Value) -> Response {
    (
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        axum::Json(body),
    )
        .into_response()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        error(self.status, self.body)
    }
}

fn stored(e: crate::store::StoreError) -> Response {
    error(
        503,
        json!({ "message": format!("the bridge could not store the change: {e}") }),
    )
}

/// Query parameters, repeated keys kept (`embed=a&embed=b`).
struct Params(Vec<(String, String)>);

impl Params {
    fn new(q: Option<String>) -> Self {
        Self(
            form_urlencoded::parse(q.unwrap_or_default().as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
    fn all(&self, key: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    }
    /// Marathon's boolean parameters: `true`, `True`, `1`.
    fn flag(&self, key: &str) -> Result<bool, Response> {
        match self.get(key).map(str::to_ascii_lowercase).as_deref() {
            None | Some("false") | Some("0") => Ok(false),
            Some("true") | Some("1") | Some("") => Ok(true),
            Some(other) => Err(error(
                400,
                json!({ "message": format!("query parameter {key}={other:?} is not a boolean (true or false)") }),
            )),
        }
    }
}

fn parse_body(body: &[u8]) -> Result<Value, Response> {
    serde_json::from_slice(body).map_err(|e| {
        error(
            400,
            json!({ "message": "Invalid JSON", "details": [{ "path": "/", "errors": [e.to_string()] }] }),
        )
    })
}

fn invalid(i: Invalid) -> Response {
    match i {
        Invalid::Syntax(m) => error(400, json!({ "message": m })),
        Invalid::Violations(v) => {
            ApiError::invalid(serde_json::to_value(v).expect("json")).into_response()
        }
    }
}

// ------------------------------------------------------------------ JSON shapes

/// What to embed in an app.
#[derive(Default, Clone, Copy)]
struct Embed {
    tasks: bool,
    counts: bool,
    deployments: bool,
    last_task_failure: bool,
    task_stats: bool,
    readiness: bool,
}

impl Embed {
    fn all() -> Self {
        Self {
            tasks: true,
            counts: true,
            deployments: true,
            last_task_failure: true,
            task_stats: false,
            readiness: false,
        }
    }
    fn from(params: &Params, prefix: &str) -> Self {
        let mut e = Self::default();
        for v in params.all("embed") {
            let v = v.strip_prefix(prefix).unwrap_or(v);
            match v {
                "tasks" => e.tasks = true,
                "counts" => e.counts = true,
                "deployments" => e.deployments = true,
                "lastTaskFailure" => e.last_task_failure = true,
                "taskStats" => e.task_stats = true,
                "readiness" => e.readiness = true,
                "failures" => {
                    e.tasks = true;
                    e.last_task_failure = true;
                }
                _ => {}
            }
        }
        e
    }
}

/// A task as Marathon shows it, written straight from its record (a list of every task is the
/// biggest answer the bridge gives: no JSON tree in between).
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MarathonTask<'a> {
    app_id: &'a str,
    id: &'a str,
    host: &'a str,
    ports: &'a [u16],
    service_ports: &'a [u16],
    slave_id: &'a str,
    state: &'static str,
    staged_at: String,
    started_at: Option<String>,
    version: &'a str,
    ip_addresses: Vec<IpAddress<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    health_check_results: Option<[HealthResult<'a>; 1]>,
}

/// One of `ipAddresses`.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct IpAddress<'a> {
    ip_address: &'a str,
    protocol: &'static str,
}

/// A task's `healthCheckResults` entry.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct HealthResult<'a> {
    alive: bool,
    consecutive_failures: u32,
    first_success: Option<String>,
    last_success: Option<String>,
    last_failure: Option<String>,
    last_failure_cause: &'a Option<String>,
    task_id: &'a str,
    instance_id: &'a str,
}

impl<'a> MarathonTask<'a> {
    /// Task `t` of `app` (its health shown when the app has checks and one reported).
    pub fn new(t: &'a TaskRecord, app: Option<&AppRecord>) -> Self {
        let state = if t.unreachable_since_ms.is_some() {
            "TASK_UNREACHABLE"
        } else {
            t.state().mesos_name()
        };
        let health = t.health();
        let checked =
            app.is_some_and(|a| !a.def.health_checks.is_empty()) && health.alive.is_some();
        Self {
            app_id: &t.app_id,
            id: &t.id,
            host: &t.host,
            ports: &t.host_ports,
            service_ports: &t.service_ports,
            slave_id: &t.agent_id,
            state,
            staged_at: rfc3339(t.staged_at_ms),
            started_at: t.started_at_ms.map(rfc3339),
            version: &t.version,
            ip_addresses: t
                .ip
                .iter()
                .map(|ip| IpAddress {
                    ip_address: ip,
                    protocol: if ip.contains(':') { "IPv6" } else { "IPv4" },
                })
                .collect(),
            health_check_results: checked.then(|| {
                [HealthResult {
                    alive: health.alive == Some(true),
                    consecutive_failures: health.consecutive_failures,
                    first_success: health.first_success_ms.map(rfc3339),
                    last_success: health.last_success_ms.map(rfc3339),
                    last_failure: health.last_failure_ms.map(rfc3339),
                    last_failure_cause: &health.last_failure_cause,
                    task_id: &t.id,
                    instance_id: &t.id,
                }]
            }),
        }
    }
}

/// A task as Marathon shows it, as a JSON value (for answers that add to it).
pub fn task_json(t: &TaskRecord, app: Option<&AppRecord>) -> Value {
    serde_json::to_value(MarathonTask::new(t, app)).unwrap_or(Value::Null)
}

/// `{"apps": [...]}`, written straight through.
#[derive(serde::Serialize)]
struct AppList<'a> {
    apps: Vec<AppWithTasks<'a>>,
}

/// An app with its tasks, each written straight from its record.
#[derive(serde::Serialize)]
struct AppWithTasks<'a> {
    #[serde(flatten)]
    app: Value,
    tasks: Vec<MarathonTask<'a>>,
}

fn app_json(core: &Core, app: &AppRecord, embed: Embed) -> Value {
    let mut v = serde_json::to_value(&app.def).expect("json");
    v["version"] = json!(app.version);
    v["versionInfo"] = json!({
        "lastScalingAt": app.last_scaling_at,
        "lastConfigChangeAt": app.last_config_change_at,
    });
    if embed.counts {
        // Kept as tasks change: counting costs the app, not its tasks.
        let c = core.state_counts(&app.def.id);
        v["tasksStaged"] = json!(c.staged);
        v["tasksRunning"] = json!(c.running);
        v["tasksHealthy"] = json!(c.healthy);
        v["tasksUnhealthy"] = json!(c.unhealthy);
    }
    if embed.deployments {
        v["deployments"] = json!(
            app.deployment
                .iter()
                .map(|d| json!({ "id": d.id }))
                .collect::<Vec<_>>()
        );
    }
    if embed.tasks {
        v["tasks"] = json!(
            core.tasks(Some(&app.def.id))
                .map(|t| task_json(t, Some(app)))
                .collect::<Vec<_>>()
        );
    }
    if embed.task_stats {
        v["taskStats"] = task_stats(core, app, crate::time::now_ms());
    }
    if embed.readiness {
        v["readinessCheckResults"] = json!(core.readiness_results(&app.def.id));
    }
    if embed.last_task_failure
        && let Some(f) = &app.last_failure
    {
        v["lastTaskFailure"] = json!({
            "appId": app.def.id,
            "host": f.host,
            "message": f.message,
            "state": f.state,
            "taskId": f.task_id,
            "timestamp": rfc3339(f.at_ms),
            "version": f.version,
            "slaveId": f.agent_id,
        });
    }
    v
}

/// Marathon's `taskStats` of an app: counts and lifetimes of its tasks in four sets (all,
/// started after the last scaling, of the latest config, of an outdated config); a set with
/// no task is left out, as Marathon leaves it out.
fn task_stats(core: &Core, app: &AppRecord, now: crate::time::Millis) -> Value {
    let has_checks = !app.def.health_checks.is_empty();
    let scaled_at = crate::time::parse_rfc3339(&app.last_scaling_at).unwrap_or(0);
    let stats = |keep: &dyn Fn(&TaskRecord) -> bool| -> Option<Value> {
        let tasks: Vec<&TaskRecord> = core.tasks(Some(&app.def.id)).filter(|t| keep(t)).collect();
        if tasks.is_empty() {
            return None;
        }
        let (mut staged, mut running, mut healthy, mut unhealthy) = (0, 0, 0, 0);
        let mut lives: Vec<f64> = Vec::new();
        for t in &tasks {
            match t.started_at_ms {
                Some(at) => {
                    running += 1;
                    lives.push(now.saturating_sub(at) as f64 / 1000.0);
                }
                None => staged += 1,
            }
            if has_checks {
                match t.health().alive {
                    Some(true) => healthy += 1,
                    Some(false) => unhealthy += 1,
                    None => {}
                }
            }
        }
        lives.sort_by(f64::total_cmp);
        let mut stats = json!({
            "counts": { "staged": staged, "running": running, "healthy": healthy, "unhealthy": unhealthy },
        });
        if !lives.is_empty() {
            let n = lives.len();
            let median = if n % 2 == 1 {
                lives[n / 2]
            } else {
                (lives[n / 2 - 1] + lives[n / 2]) / 2.0
            };
            stats["lifeTime"] = json!({
                "averageSeconds": lives.iter().sum::<f64>() / n as f64,
                "medianSeconds": median,
            });
        }
        Some(json!({ "stats": stats }))
    };
    let latest = &app.last_config_change_at;
    let mut out = serde_json::Map::new();
    type Keep<'a> = &'a dyn Fn(&TaskRecord) -> bool;
    let sets: [(&str, Keep); 4] = [
        ("startedAfterLastScaling", &|t| t.staged_at_ms >= scaled_at),
        ("withLatestConfig", &|t| t.version == *latest),
        ("withOutdatedConfig", &|t| t.version != *latest),
        ("totalSummary", &|_| true),
    ];
    for (name, keep) in sets {
        if let Some(v) = stats(keep) {
            out.insert(name.into(), v);
        }
    }
    Value::Object(out)
}

/// One term of Marathon's `label` selector.
#[derive(Debug, PartialEq)]
enum LabelTerm {
    /// `key`: the label is set.
    Exists(String),
    /// `key==value`.
    Is(String, String),
    /// `key!=value` (also true when the label is not set).
    IsNot(String, String),
    /// `key in (a, b)`.
    In(String, Vec<String>),
    /// `key notin (a, b)`.
    NotIn(String, Vec<String>),
}

impl LabelTerm {
    fn matches(&self, labels: &std::collections::BTreeMap<String, String>) -> bool {
        match self {
            Self::Exists(k) => labels.contains_key(k),
            Self::Is(k, v) => labels.get(k) == Some(v),
            Self::IsNot(k, v) => labels.get(k) != Some(v),
            Self::In(k, vs) => labels.get(k).is_some_and(|x| vs.contains(x)),
            Self::NotIn(k, vs) => labels.get(k).is_none_or(|x| !vs.contains(x)),
        }
    }
}

/// Parses Marathon's label selector: terms separated by commas (not those inside a set), all
/// of which must hold; a backslash takes the next character as it is. The error names the term.
fn parse_label_selector(s: &str) -> Result<Vec<LabelTerm>, String> {
    // Split at commas outside parentheses, unescaping as we go (escaped characters are kept
    // with a marker so that `\,` is not a separator).
    let mut terms: Vec<String> = Vec::new();
    let mut cur = String::new();
    let mut depth = 0;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                cur.push('\\');
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            '(' => {
                depth += 1;
                cur.push(c);
            }
            ')' => {
                depth -= 1;
                cur.push(c);
            }
            ',' if depth == 0 => terms.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    terms.push(cur);
    let unescape = |x: &str| -> String {
        let mut out = String::new();
        let mut it = x.trim().chars();
        while let Some(c) = it.next() {
            if c == '\\' {
                if let Some(n) = it.next() {
                    out.push(n);
                }
            } else {
                out.push(c);
            }
        }
        out
    };
    let set = |term: &str, rest: &str| -> Result<Vec<String>, String> {
        let inner = rest
            .trim()
            .strip_prefix('(')
            .and_then(|r| r.strip_suffix(')'))
            .ok_or_else(|| format!("{term:?}: a set is written (a, b)"))?;
        Ok(inner.split(',').map(unescape).collect())
    };
    let mut out = Vec::new();
    for t in terms {
        let term = t.trim();
        if term.is_empty() {
            return Err(format!("{s:?} has an empty term"));
        }
        let parsed = if let Some((k, v)) = term.split_once("==") {
            LabelTerm::Is(unescape(k), unescape(v))
        } else if let Some((k, v)) = term.split_once("!=") {
            LabelTerm::IsNot(unescape(k), unescape(v))
        } else if let Some((k, rest)) = term.split_once(" notin ") {
            LabelTerm::NotIn(unescape(k), set(term, rest)?)
        } else if let Some((k, rest)) = term.split_once(" in ") {
            LabelTerm::In(unescape(k), set(term, rest)?)
        } else if term.contains(['(', ')', '=', ' ']) {
            return Err(format!(
                "{term:?} is not a term (key, key==value, key!=value, key in (a,b), key notin (a,b))"
            ));
        } else {
            LabelTerm::Exists(unescape(term))
        };
        out.push(parsed);
    }
    Ok(out)
}

// ------------------------------------------------------------------ apps

async fn list_apps(State(s): S, RawQuery(q): RawQuery) -> Response {
    let p = Params::new(q);
    let mut embed = Embed::from(&p, "apps.");
    embed.counts = true;
    embed.deployments = true;
    let id_filter = p.get("id").map(str::to_string);
    let cmd_filter = p.get("cmd").map(str::to_string);
    let labels = match p.get("label").map(parse_label_selector).transpose() {
        Ok(l) => l.unwrap_or_default(),
        Err(e) => {
            return error(
                400,
                json!({ "message": format!("query parameter label: {e}") }),
            );
        }
    };
    let keep = move |a: &AppRecord| {
        !a.deleting
            && id_filter.as_deref().is_none_or(|f| a.def.id.contains(f))
            && cmd_filter
                .as_deref()
                .is_none_or(|f| a.def.cmd.as_deref().is_some_and(|c| c.contains(f)))
            && labels.iter().all(|t| t.matches(&a.def.labels))
    };
    // With every task embedded the answer costs more than a copy of the core: built and
    // written out off the owner, each task straight from its record. Without, it costs the
    // apps (their counts are kept): on the owner.
    let apps = if embed.tasks {
        let apps_only = Embed {
            tasks: false,
            ..embed
        };
        s.read_snapshot(move |core| {
            let apps: Vec<AppWithTasks> = core
                .apps()
                .filter(|a| keep(a))
                .map(|a| AppWithTasks {
                    app: app_json(core, a, apps_only),
                    tasks: core
                        .tasks(Some(&a.def.id))
                        .map(|t| MarathonTask::new(t, Some(a)))
                        .collect(),
                })
                .collect();
            JsonBody::of(&AppList { apps })
        })
        .await
        .map(IntoResponse::into_response)
    } else {
        s.read(move |core| {
            let apps: Vec<Value> = core
                .apps()
                .filter(|a| keep(a))
                .map(|a| app_json(core, a, embed))
                .collect();
            axum::Json(json!({ "apps": apps })).into_response()
        })
        .await
    };
    match apps {
        Ok(r) => r,
        Err(e) => stored(e),
    }
}

fn client_ip(headers: &HeaderMap, addr: Option<SocketAddr>) -> String {
    headers
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or(addr.map(|a| a.ip().to_string()))
        .unwrap_or_default()
}

async fn create_app(
    State(s): S,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let v = match parse_body(&body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let def = match AppDefinition::from_value(v, None) {
        Ok(d) => d,
        Err(i) => return invalid(i),
    };
    let ip = client_ip(&headers, Some(addr));
    let result = s
        .apply(move |core, now| {
            let r = core.create_app(now, def);
            if let Ok((app, _)) = &r {
                core.api_post_event(now, &ip, "/v2/apps", &app.def);
            }
            r.map(|(app, d)| (app_json(core, &app, Embed::all()), d, app.def.id.clone()))
        })
        .await;
    match result {
        Err(e) => stored(e),
        Ok(Err(e)) => e.into_response(),
        Ok(Ok((mut body, d, id))) => {
            body["deployments"] = json!([{ "id": d.id }]);
            let mut r = (StatusCode::CREATED, axum::Json(body)).into_response();
            let h = r.headers_mut();
            if let Ok(v) = HeaderValue::from_str(&format!("/v2/apps{id}")) {
                h.insert(header::LOCATION, v);
            }
            if let Ok(v) = HeaderValue::from_str(&d.id) {
                h.insert("Marathon-Deployment-Id", v);
            }
            r
        }
    }
}

/// `PUT` (or `PATCH`) `/v2/apps` with a list: each entry a partial update of the app it names
/// (or a new app), all in one deployment (`{deploymentId, version}`).
async fn update_apps(State(s): S, RawQuery(q): RawQuery, body: Bytes) -> Response {
    let p = Params::new(q);
    let force = match p.flag("force") {
        Ok(f) => f,
        Err(r) => return r,
    };
    let list = match parse_body(&body) {
        Ok(Value::Array(list)) => list,
        Ok(_) => {
            return invalid(Invalid::Violations(vec![crate::app::Violation {
                path: "/".into(),
                errors: vec!["error.expected.jsarray".into()],
            }]));
        }
        Err(r) => return r,
    };
    let mut patches = Vec::new();
    for (i, v) in list.into_iter().enumerate() {
        let id = v.get("id").and_then(Value::as_str).map(normalize_id);
        match (v, id) {
            (Value::Object(m), Some(id)) => patches.push((id, m)),
            _ => {
                return ApiError::invalid(json!([{ "path": format!("({i})/id"), "errors": ["every app of the list needs an id"] }]))
                    .into_response();
            }
        }
    }
    let result = s
        .apply(move |c, now| {
            let mut defs = Vec::new();
            for (i, (id, patch)) in patches.iter().enumerate() {
                let current = c.app(id).map(|a| a.def.clone());
                let def = merge_partial(current.as_ref(), patch, id).map_err(|e| match e {
                    Invalid::Violations(v) => {
                        let v: Vec<Value> = v
                            .into_iter()
                            .map(|x| json!({ "path": format!("({i}){}", x.path), "errors": x.errors }))
                            .collect();
                        ApiError::invalid(json!(v)).into_response()
                    }
                    other => invalid(other),
                })?;
                defs.push(def);
            }
            c.update_apps(now, defs, force)
                .map_err(IntoResponse::into_response)
        })
        .await;
    match result {
        Err(e) => stored(e),
        Ok(Err(r)) => r,
        Ok(Ok(Some(d))) => deployment_result(&d),
        Ok(Ok(None)) => {
            axum::Json(json!({ "deploymentId": null, "version": null })).into_response()
        }
    }
}

fn deployment_result(d: &crate::core::Deployment) -> Response {
    let mut r = axum::Json(json!({ "deploymentId": d.id, "version": d.version })).into_response();
    if let Ok(v) = HeaderValue::from_str(&d.id) {
        r.headers_mut().insert("Marathon-Deployment-Id", v);
    }
    r
}

/// `/v2/apps/{id}`, `/v2/apps/{id}/restart`, `/v2/apps/{id}/tasks[/{task}]`: app ids hold
/// slashes, so one route takes the rest of the path and picks the action.
async fn app_route(
    State(s): S,
    method: Method,
    Path(rest): Path<String>,
    RawQuery(q): RawQuery,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let p = Params::new(q);
    let path = normalize_id(&rest);
    if let Some(id) = path.strip_suffix("/restart") {
        if method != Method::POST {
            return error(405, json!({ "message": "use POST" }));
        }
        let force = match p.flag("force") {
            Ok(f) => f,
            Err(r) => return r,
        };
        let id = id.to_string();
        return match s.apply(move |c, now| c.restart_app(now, &id, force)).await {
            Err(e) => stored(e),
            Ok(Err(e)) => e.into_response(),
            Ok(Ok(d)) => deployment_result(&d),
        };
    }
    if let Some(id) = path.strip_suffix("/tasks") {
        if method == Method::GET && wants_text(&headers) {
            let id = normalize_id(id);
            return s
                .read(move |core| match core.app(&id).filter(|a| !a.deleting) {
                    Some(app) => text(endpoints_text(core, std::iter::once(app))),
                    None => error(
                        404,
                        json!({ "message": format!("App '{id}' does not exist") }),
                    ),
                })
                .await
                .unwrap_or_else(stored);
        }
        return app_tasks(s, method, normalize_id(id), None, p).await;
    }
    if let Some((id, task)) = path.rsplit_once("/tasks/") {
        return app_tasks(s, method, normalize_id(id), Some(task.to_string()), p).await;
    }
    if let Some(id) = path.strip_suffix("/versions") {
        return app_versions(s, method, normalize_id(id), None).await;
    }
    if let Some((id, version)) = path.rsplit_once("/versions/") {
        return app_versions(s, method, normalize_id(id), Some(version.to_string())).await;
    }
    let id = path;
    match method {
        Method::GET => {
            let embed = if p.all("embed").is_empty() {
                Embed::all()
            } else {
                let mut e = Embed::from(&p, "app.");
                e.counts = true;
                e.deployments = true;
                e
            };
            let answer = s
                .read(move |core| match core.app(&id).filter(|a| !a.deleting) {
                    Some(a) => {
                        axum::Json(json!({ "app": app_json(core, a, embed) })).into_response()
                    }
                    None => error(
                        404,
                        json!({ "message": format!("App '{id}' does not exist") }),
                    ),
                })
                .await;
            answer.unwrap_or_else(stored)
        }
        Method::PUT | Method::PATCH => {
            let (force, partial) = match (p.flag("force"), p.flag("partialUpdate")) {
                (Ok(f), Ok(partial)) => (f, partial || p.get("partialUpdate").is_none()),
                (Err(r), _) | (_, Err(r)) => return r,
            };
            // PATCH is always partial; PUT is unless `partialUpdate=false` (Marathon 1.6+).
            let partial = partial || method == Method::PATCH;
            let patch = match parse_body(&body) {
                Ok(v) => v,
                Err(r) => return r,
            };
            let Value::Object(patch) = patch else {
                return invalid(Invalid::Violations(vec![crate::app::Violation {
                    path: "/".into(),
                    errors: vec!["error.expected.jsobject".into()],
                }]));
            };
            if let Some(version) = patch.get("version") {
                return rollback(s, id, version.clone(), &patch, force).await;
            }
            let ip = client_ip(&headers, Some(addr));
            // Marathon's PUT is a partial update: the given fields over the current app. The
            // read, the merge and the update are one step of the owner, so two concurrent
            // partial updates both land.
            let result = s
                .apply(move |c, now| {
                    let current = c.app(&id).filter(|_| partial).map(|a| a.def.clone());
                    let def = merge_partial(current.as_ref(), &patch, &id).map_err(invalid)?;
                    let d = c
                        .update_app(now, def.clone(), force)
                        .map_err(IntoResponse::into_response)?;
                    c.api_post_event(now, &ip, &format!("/v2/apps{id}"), &def);
                    Ok::<_, Response>(d)
                })
                .await;
            match result {
                Err(e) => stored(e),
                Ok(Err(r)) => r,
                Ok(Ok(d)) => deployment_result(&d),
            }
        }
        Method::DELETE => {
            let force = match p.flag("force") {
                Ok(f) => f,
                Err(r) => return r,
            };
            match s.apply(move |c, now| c.delete_app(now, &id, force)).await {
                Err(e) => stored(e),
                Ok(Err(e)) => e.into_response(),
                Ok(Ok(d)) => deployment_result(&d),
            }
        }
        _ => error(
            405,
            json!({ "message": format!("{method} is not allowed on an app") }),
        ),
    }
}

/// `PUT /v2/apps/{id}` with `{"version": ...}`: back to the app's definition at that version
/// (Marathon allows only `id` beside it).
async fn rollback(
    s: Arc<Shared>,
    id: String,
    version: Value,
    body: &serde_json::Map<String, Value>,
    force: bool,
) -> Response {
    if let Some(other) = body.keys().find(|k| *k != "version" && *k != "id") {
        return ApiError::invalid(json!([{
            "path": "/",
            "errors": [format!("The 'version' field may only be combined with the 'id' field (not {other:?}).")],
        }]))
        .into_response();
    }
    let Some(version) = version.as_str().map(str::to_string) else {
        return ApiError::invalid(json!([{ "path": "/version", "errors": [format!("{version} is not a version (a timestamp string)")] }]))
            .into_response();
    };
    match s
        .apply(move |c, now| c.rollback_app(now, &id, &version, force))
        .await
    {
        Err(e) => stored(e),
        Ok(Err(e)) => e.into_response(),
        Ok(Ok(d)) => deployment_result(&d),
    }
}

/// `GET /v2/apps/{id}/versions` (`{"versions": [newest first]}`) and
/// `/v2/apps/{id}/versions/{version}` (the definition then).
async fn app_versions(
    s: Arc<Shared>,
    method: Method,
    id: String,
    version: Option<String>,
) -> Response {
    if method != Method::GET {
        return error(
            405,
            json!({ "message": format!("{method} is not allowed on versions") }),
        );
    }
    s.read(move |core| {
        let missing = || {
            error(
                404,
                json!({ "message": format!("App '{id}' does not exist") }),
            )
        };
        match &version {
            None => match core.app_versions(&id) {
                Some(v) => axum::Json(json!({ "versions": v })).into_response(),
                None => missing(),
            },
            Some(version) => match core.app_version(&id, version) {
                Some(def) => {
                    let mut v = serde_json::to_value(def).unwrap_or(Value::Null);
                    v["version"] = json!(version);
                    axum::Json(v).into_response()
                }
                None if core.app(&id).is_some_and(|a| !a.deleting) => error(
                    404,
                    json!({ "message": format!("App '{id}' does not exist in version {version}") }),
                ),
                None => missing(),
            },
        }
    })
    .await
    .unwrap_or_else(stored)
}

/// A partial `PUT` body over the current definition (none: the body alone), as Marathon merges
/// it: top-level fields replace, and new legacy `docker.portMappings` replace the current
/// mappings.
fn merge_partial(
    current: Option<&AppDefinition>,
    patch: &serde_json::Map<String, Value>,
    id: &str,
) -> Result<AppDefinition, Invalid> {
    let mut merged = match current {
        Some(def) => serde_json::to_value(def).map_err(|e| Invalid::Syntax(e.to_string()))?,
        None => json!({}),
    };
    for (k, v) in patch {
        merged[k] = v.clone();
    }
    if patch.contains_key("container")
        && let Some(c) = merged.get_mut("container").and_then(Value::as_object_mut)
        && c.get("docker")
            .and_then(|d| d.get("portMappings"))
            .is_some()
    {
        c.remove("portMappings");
    }
    AppDefinition::from_value(merged, Some(id))
}

/// `GET` and `DELETE` on `/v2/apps/{id}/tasks[/{task}]`; the check that the app exists, the
/// choice of tasks and the kill are one step of the owner.
async fn app_tasks(
    s: Arc<Shared>,
    method: Method,
    id: String,
    task: Option<String>,
    p: Params,
) -> Response {
    let missing_app = |id: &str| {
        error(
            404,
            json!({ "message": format!("App '{id}' does not exist") }),
        )
    };
    match method {
        Method::GET => s
            .read(move |core| {
                let Some(app) = core.app(&id).filter(|a| !a.deleting) else {
                    return missing_app(&id);
                };
                let tasks: Vec<Value> = core
                    .tasks(Some(&id))
                    .filter(|t| task.as_deref().is_none_or(|x| *t.id == *x))
                    .map(|t| task_json(t, Some(app)))
                    .collect();
                axum::Json(json!({ "tasks": tasks })).into_response()
            })
            .await
            .unwrap_or_else(stored),
        Method::DELETE => {
            let (scale, wipe) = match (p.flag("scale"), p.flag("wipe")) {
                (Ok(a), Ok(b)) => (a, b),
                (Err(r), _) | (_, Err(r)) => return r,
            };
            let host = p.get("host").map(str::to_string);
            s.apply(move |c, now| {
                if c.app(&id).is_none_or(|a| a.deleting) {
                    return missing_app(&id);
                }
                let ids: Vec<String> = c
                    .tasks(Some(&id))
                    .filter(|t| task.as_deref().is_none_or(|x| *t.id == *x))
                    .filter(|t| host.as_deref().is_none_or(|h| *t.host == *h))
                    .map(|t| t.id.to_string())
                    .collect();
                if let Some(tid) = &task
                    && ids.is_empty()
                {
                    return error(
                        404,
                        json!({ "message": format!("Task '{tid}' does not exist") }),
                    );
                }
                let (killed, deployments) = match c.kill_tasks(now, &ids, scale, wipe) {
                    Ok(k) => k,
                    Err(e) => return e.into_response(),
                };
                if let Some(d) = deployments.first() {
                    // Marathon answers a scaling kill with the deployment that scales the app.
                    return deployment_result(d);
                }
                let app = c.app(&id);
                let tasks: Vec<Value> = killed.iter().map(|t| task_json(t, app)).collect();
                if task.is_some() {
                    axum::Json(json!({ "task": tasks.first() })).into_response()
                } else {
                    axum::Json(json!({ "tasks": tasks })).into_response()
                }
            })
            .await
            .unwrap_or_else(stored)
        }
        _ => error(
            405,
            json!({ "message": format!("{method} is not allowed on tasks") }),
        ),
    }
}

// ------------------------------------------------------------------ tasks, deployments, queue

/// Whether the client asks for Marathon's text form (`Accept: text/plain`, and not JSON).
fn wants_text(headers: &HeaderMap) -> bool {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    accept.contains("text/plain") && !accept.contains("application/json")
}

/// Marathon's tab-separated task endpoints (`EndpointsHelper.appsToEndpointString`), the form
/// `haproxy-marathon-bridge` reads: per app and service port, `{app id with / as _}\t{service
/// port}\t{host}:{host port}\t...`, the addresses of RUNNING tasks sorted; an app without
/// service ports gets one line `{id}\t \t{host}\t...`.
pub fn endpoints_text<'a>(core: &Core, apps: impl Iterator<Item = &'a AppRecord>) -> String {
    let mut out = String::new();
    for app in apps {
        let clean = app.def.id.trim_start_matches('/').replace('/', "_");
        let running: Vec<&TaskRecord> = core
            .tasks(Some(&app.def.id))
            .filter(|t| t.state == outpost_protocol::TaskState::Running)
            .collect();
        let service_ports: Vec<u32> = app
            .def
            .port_mappings()
            .iter()
            .map(|m| m.service_port)
            .collect();
        if service_ports.is_empty() {
            let mut hosts: Vec<&str> = running.iter().map(|t| &*t.host).collect();
            hosts.sort_unstable();
            out.push_str(&clean);
            out.push_str("\t \t");
            for h in hosts {
                out.push_str(h);
                out.push('\t');
            }
            out.push('\n');
            continue;
        }
        for (i, port) in service_ports.iter().enumerate() {
            let mut addresses: Vec<String> = running
                .iter()
                .map(|t| format!("{}:{}", t.host, t.host_ports.get(i).copied().unwrap_or(0)))
                .collect();
            addresses.sort_unstable();
            out.push_str(&format!("{clean}\t{port}\t"));
            for a in addresses {
                out.push_str(&a);
                out.push('\t');
            }
            out.push('\n');
        }
    }
    out
}

fn text(body: String) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response()
}

async fn list_tasks(State(s): S, RawQuery(q): RawQuery, headers: HeaderMap) -> Response {
    if wants_text(&headers) {
        return s
            .read_snapshot(|core| endpoints_text(core, core.apps().filter(|a| !a.deleting)))
            .await
            .map_or_else(stored, text);
    }
    let p = Params::new(q);
    let wanted: Vec<String> = p
        .all("status")
        .iter()
        .map(|x| format!("TASK_{}", x.to_ascii_uppercase()))
        .collect();
    s.read_snapshot(move |core| {
        let tasks: Vec<Value> = core
            .tasks(None)
            .map(|t| task_json(t, core.app(&t.app_id)))
            .filter(|t| wanted.is_empty() || wanted.iter().any(|w| t["state"] == *w))
            .collect();
        axum::Json(json!({ "tasks": tasks })).into_response()
    })
    .await
    .unwrap_or_else(stored)
}

async fn delete_tasks(State(s): S, RawQuery(q): RawQuery, body: Bytes) -> Response {
    let p = Params::new(q);
    let (scale, wipe) = match (p.flag("scale"), p.flag("wipe")) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(r), _) | (_, Err(r)) => return r,
    };
    let v = match parse_body(&body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let Some(ids) = v.get("ids").and_then(Value::as_array) else {
        return ApiError::invalid(
            json!([{ "path": "/ids", "errors": ["a list of task ids is required"] }]),
        )
        .into_response();
    };
    if ids.len() > MAX_IDS_PER_REQUEST {
        return ApiError::invalid(json!([{ "path": "/ids", "errors": [format!(
            "{} task ids; at most {MAX_IDS_PER_REQUEST} per request",
            ids.len()
        )] }]))
        .into_response();
    }
    let Some(ids) = ids
        .iter()
        .map(|x| x.as_str().map(str::to_string))
        .collect::<Option<Vec<_>>>()
    else {
        return ApiError::invalid(json!([{ "path": "/ids", "errors": ["task ids are strings"] }]))
            .into_response();
    };
    match s
        .apply(move |c, now| c.kill_tasks(now, &ids, scale, wipe))
        .await
    {
        Err(e) => stored(e),
        Ok(Err(e)) => e.into_response(),
        // With scale, Marathon answers with the deployment.
        Ok(Ok((_, deployments))) => match deployments.first() {
            Some(d) => deployment_result(d),
            None => StatusCode::OK.into_response(),
        },
    }
}

async fn list_deployments(State(s): S) -> Response {
    s.read(|core| axum::Json(core.deployments_json()).into_response())
        .await
        .unwrap_or_else(stored)
}

async fn cancel_deployment(State(s): S, Path(id): Path<String>, RawQuery(q): RawQuery) -> Response {
    let force = match Params::new(q).flag("force") {
        Ok(f) => f,
        Err(r) => return r,
    };
    match s
        .apply(move |c, now| c.cancel_deployment(now, &id, force))
        .await
    {
        Err(e) => stored(e),
        Ok(Err(e)) => e.into_response(),
        Ok(Ok(None)) => StatusCode::ACCEPTED.into_response(),
        Ok(Ok(Some(d))) => deployment_result(&d),
    }
}

async fn queue(State(s): S) -> Response {
    let now = crate::time::now_ms();
    // On the owner: the offers summary reads the capacity ledger (the queue is short).
    s.read(move |core| {
        let items: Vec<Value> = core
            .apps()
            .filter(|a| !a.deleting)
            .filter_map(|a| {
                let live = core
                    .tasks(Some(&a.def.id))
                    .filter(|t| !t.killing && !t.inactive)
                    .count();
                let missing = (a.def.instances as usize).saturating_sub(live);
                (missing > 0).then(|| {
                    let left = a.delay_until_ms.saturating_sub(now);
                    json!({
                        "app": app_json(core, a, Embed::default()),
                        "count": missing,
                        "delay": { "timeLeftSeconds": left.div_ceil(1000), "overdue": left == 0 },
                        "since": a.version,
                        "processedOffersSummary": core.offers_summary(&a.def.id, now),
                    })
                })
            })
            .collect();
        axum::Json(json!({ "queue": items })).into_response()
    })
    .await
    .unwrap_or_else(stored)
}

/// `DELETE /v2/queue/{app id}/delay`: 204, or Marathon's 404 for an app not in the queue.
async fn reset_delay(State(s): S, Path(rest): Path<String>) -> Response {
    let Some(id) = rest.strip_suffix("/delay") else {
        return error(404, json!({ "message": "not found" }));
    };
    let id = normalize_id(id);
    match s.apply(move |core, _| core.reset_delay(&id)).await {
        Ok(Ok(())) => StatusCode::NO_CONTENT.into_response(),
        Ok(Err(e)) => e.into_response(),
        Err(e) => stored(e),
    }
}

/// Marathon's answer when HTTP callbacks are off (`http_callbacks = false`).
fn callbacks_off(s: &Shared) -> Option<Response> {
    (!s.config.http_callbacks).then(|| {
        error(
            400,
            json!({ "message": "http event callback system is not running on this Marathon instance. Please re-start this instance with \"--event_subscriber http_callback\" (in Outpost: http_callbacks = true)." }),
        )
    })
}

/// `GET /v2/eventSubscriptions`: `{"callbackUrls": [...]}`.
async fn list_subscriptions(State(s): S) -> Response {
    if let Some(r) = callbacks_off(&s) {
        return r;
    }
    s.read(|c| axum::Json(json!({ "callbackUrls": c.callback_urls() })).into_response())
        .await
        .unwrap_or_else(stored)
}

/// `POST /v2/eventSubscriptions?callbackUrl=URL`: Marathon's `subscribe_event` as the answer.
async fn subscribe(
    State(s): S,
    RawQuery(q): RawQuery,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    subscription(s, q, client_ip(&headers, Some(addr)), true).await
}

/// `DELETE /v2/eventSubscriptions?callbackUrl=URL`: `unsubscribe_event` as the answer.
async fn unsubscribe(
    State(s): S,
    RawQuery(q): RawQuery,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    subscription(s, q, client_ip(&headers, Some(addr)), false).await
}

async fn subscription(s: Arc<Shared>, q: Option<String>, ip: String, add: bool) -> Response {
    if let Some(r) = callbacks_off(&s) {
        return r;
    }
    let Some(url) = Params::new(q).get("callbackUrl").map(str::to_string) else {
        return error(
            400,
            json!({ "message": "query parameter callbackUrl is missing" }),
        );
    };
    if add && let Err(e) = crate::callbacks::check_url(&url, s.config.callback_tls.is_some()) {
        return ApiError::invalid(json!([{ "path": "/callbackUrl", "errors": [e] }]))
            .into_response();
    }
    let answer = s
        .apply(move |c, now| {
            if add {
                c.subscribe_callback(now, &url, &ip)
            } else {
                c.unsubscribe_callback(now, &url, &ip)
            }
        })
        .await;
    s.callbacks.changed.notify_one();
    match answer {
        Ok(v) => axum::Json(v).into_response(),
        Err(e) => stored(e),
    }
}

/// `/v2/pods`: Outpost runs apps, not pods. Marathon's clients ask `HEAD /v2/pods` whether pods
/// are supported and take a 404 as no (the DC/OS CLI does); every pods call answers that.
async fn pods() -> Response {
    error(
        404,
        json!({ "message": "pods are not supported by this Marathon API (Outpost runs apps: use /v2/apps)" }),
    )
}

// ------------------------------------------------------------------ info, metrics, events

async fn info(State(s): S) -> Response {
    let c = &s.config;
    let leader = my_address(c);
    let zookeeper_config = match &c.ha {
        Some(h) => json!({
            "zk": h.zk.to_string(),
            "zk_timeout": h.session_timeout.as_millis() as u64,
            "zk_session_timeout": h.session_timeout.as_millis() as u64,
            "zk_max_versions": 50,
        }),
        None => json!({}),
    };
    axum::Json(json!({
        "name": "marathon",
        "version": MARATHON_VERSION,
        "buildref": concat!("outpost-bridge ", env!("CARGO_PKG_VERSION")),
        "elected": true,
        "leader": leader,
        "frameworkId": "outpost",
        "marathon_config": {
            "master": c.brokers.iter().map(|b| format!("mqtt://{}:{}", b.host, b.port)).collect::<Vec<_>>().join(","),
            "hostname": c.advertised_host,
        },
        "zookeeper_config": zookeeper_config,
        "http_config": http_config(c),
        "event_subscriber": null,
    }))
    .into_response()
}

/// Marathon's `http_config`: the API's one listener is HTTPS when `api_tls` is set, plain HTTP
/// otherwise; the port that is not served is 0.
fn http_config(c: &crate::config::Config) -> Value {
    let port = c.listen.port();
    if c.api_tls.is_some() {
        json!({ "http_port": 0, "https_port": port })
    } else {
        json!({ "http_port": port, "https_port": 0 })
    }
}

/// `/ui/bridges` (an Outpost extension for the UI): the bridges of the group and which leads.
/// Answered by the leader (a follower proxies it there).
async fn ui_bridges(State(s): S) -> Response {
    let c = &s.config;
    let me = my_address(c);
    let bridges: Vec<Value> = match &c.ha {
        None => vec![json!({
            "marathon": me,
            "mesos": format!("{}:{}", c.advertised_host, c.mesos_listen.port()),
            "leader": true,
        })],
        Some(_) => {
            let list = s.bridges.get();
            list.iter()
                .enumerate()
                .map(|(i, b)| json!({ "marathon": b.marathon, "mesos": b.mesos, "leader": i == 0 }))
                .collect()
        }
    };
    axum::Json(json!({ "ha": c.ha.is_some(), "leader": me, "bridges": bridges })).into_response()
}

/// This bridge's Marathon address as other bridges and clients know it.
fn my_address(c: &crate::config::Config) -> String {
    match &c.ha {
        Some(h) => h.marathon_address.clone(),
        None => format!("{}:{}", c.advertised_host, c.listen.port()),
    }
}

/// Only the leader answers here (a follower proxies the request to it).
async fn leader(State(s): S) -> Response {
    axum::Json(json!({ "leader": my_address(&s.config) })).into_response()
}

/// `DELETE /v2/leader`: the leader steps down and another bridge is elected (with `[ha]`).
async fn abdicate(State(s): S) -> Response {
    if s.config.ha.is_none() {
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({
                "message": "high availability is off ([ha] is not set): no other bridge can lead"
            })),
        )
            .into_response();
    }
    s.abdicate.notify_one();
    axum::Json(json!({ "message": "Leadership abdicated" })).into_response()
}

async fn metrics(State(s): S) -> Response {
    let read = s.read(|c| {
        (
            c.apps().count(),
            c.tasks(None).count(),
            c.agents().count(),
            c.agents().filter(|a| a.online()).count(),
            c.status_updates,
        )
    });
    let (apps, tasks, agents, online, updates) = match read.await {
        Ok(r) => r,
        Err(e) => return stored(e),
    };
    let slow = s
        .counters
        .slow_event_subscribers
        .load(std::sync::atomic::Ordering::Relaxed);
    let uptime = crate::time::now_ms().saturating_sub(s.started_at_ms);
    let g = |v: u64| json!({ "value": v });
    axum::Json(json!({
        "version": "4.0.0",
        "gauges": {
            "service.mesosphere.marathon.app.count": g(apps as u64),
            "service.mesosphere.marathon.task.running.count": g(tasks as u64),
            "service.mesosphere.marathon.uptime": g(uptime),
            "outpost.agents.count": g(agents as u64),
            "outpost.agents.online.count": g(online as u64),
        },
        "counters": {
            "outpost.status_updates": { "count": updates },
            "outpost.events.slow_subscribers_dropped": { "count": slow },
        },
        "histograms": {},
        "meters": {},
        "timers": {},
    }))
    .into_response()
}

/// `POST /v2/agents/{id}/pull` `{"image", "force"}` (an Outpost extension): the agent pulls
/// the image ahead of a launch; its progress comes on `/v2/events` as `outpost_pull_progress`.
async fn pull_image(State(s): S, Path(agent): Path<String>, body: Bytes) -> Response {
    let v = match parse_body(&body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let Some(image) = v["image"].as_str().map(str::to_string) else {
        return ApiError::invalid(
            json!([{ "path": "/image", "errors": ["an image reference is required"] }]),
        )
        .into_response();
    };
    let force = v["force"].as_bool().unwrap_or(false);
    let a = agent.clone();
    let answer = s
        .apply(move |core, now| core.pull_command(now, &a, &image, force))
        .await;
    agent_answer(StatusCode::ACCEPTED, answer)
}

/// The answer of an agent action (pull, drain, undrain): its JSON with `ok`, its API error,
/// or the store's.
fn agent_answer(
    ok: StatusCode,
    answer: Result<Result<Value, ApiError>, crate::store::StoreError>,
) -> Response {
    match answer {
        Ok(Ok(v)) => (ok, axum::Json(v)).into_response(),
        Ok(Err(e)) => e.into_response(),
        Err(e) => stored(e),
    }
}

/// `POST /v2/agents/{id}/drain` (an Outpost extension): no more launches on the agent, its
/// Marathon tasks moved elsewhere; answers `{"agentId", "moved": [task ids]}`.
async fn drain_agent(State(s): S, Path(agent): Path<String>) -> Response {
    let answer = s
        .apply(move |core, now| core.drain_agent(now, &agent))
        .await;
    agent_answer(StatusCode::OK, answer)
}

/// `POST /v2/agents/{id}/undrain` (an Outpost extension): the agent takes launches again.
async fn undrain_agent(State(s): S, Path(agent): Path<String>) -> Response {
    let answer = s
        .apply(move |core, now| core.undrain_agent(now, &agent))
        .await;
    agent_answer(StatusCode::OK, answer)
}

/// `GET /metrics/prometheus`: the bridge in Prometheus's text format ([`crate::metrics`]).
async fn prometheus(State(s): S) -> Response {
    let read = s.read_snapshot(|c| {
        let mut agents: std::collections::BTreeMap<&'static str, u64> = Default::default();
        for a in c.agents() {
            *agents.entry(a.liveness.name()).or_default() += 1;
        }
        let mut tasks: std::collections::BTreeMap<&'static str, u64> = Default::default();
        for t in c.tasks(None) {
            *tasks.entry(t.state.mesos_name()).or_default() += 1;
        }
        let mut fw: std::collections::BTreeMap<&'static str, u64> = Default::default();
        for t in c.framework_tasks() {
            *fw.entry(t.state.mesos_name()).or_default() += 1;
        }
        crate::metrics::CoreFigures {
            agents: agents.into_iter().collect(),
            tasks: tasks.into_iter().collect(),
            framework_tasks: fw.into_iter().collect(),
            apps: c.apps().count() as u64,
            deployments: c.apps().filter(|a| a.deployment.is_some()).count() as u64,
            statuses_received: c.status_updates,
            stats: c.stats.clone(),
        }
    });
    let core = match read.await {
        Ok(r) => r,
        Err(e) => return stored(e),
    };
    let edge = crate::metrics::EdgeFigures {
        sse_subscribers: (s.events.receiver_count() as u64).saturating_sub(u64::from(
            s.callbacks
                .listening
                .load(std::sync::atomic::Ordering::Relaxed),
        )),
        callbacks_delivered: s
            .callbacks
            .delivered
            .load(std::sync::atomic::Ordering::Relaxed),
        callbacks_failed: s
            .callbacks
            .failed
            .load(std::sync::atomic::Ordering::Relaxed),
        callback_events_dropped: s
            .callbacks
            .dropped_events
            .load(std::sync::atomic::Ordering::Relaxed),
        callback_subscribers_dropped: s
            .callbacks
            .dropped_subscribers
            .load(std::sync::atomic::Ordering::Relaxed),
        sse_dropped: s
            .counters
            .slow_event_subscribers
            .load(std::sync::atomic::Ordering::Relaxed),
        log_streams: s.logs.len() as u64,
        log_readers_cut: s.logs.cut_slow.load(std::sync::atomic::Ordering::Relaxed),
        uptime_s: crate::time::now_ms().saturating_sub(s.started_at_ms) / 1000,
    };
    let text = crate::metrics::render(&s.metrics, &core, edge);
    ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text).into_response()
}

async fn events(
    State(s): S,
    RawQuery(q): RawQuery,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    let accepts = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/event-stream"));
    if !accepts {
        return error(
            406,
            json!({ "message": "the event stream needs the header Accept: text/event-stream" }),
        );
    }
    let p = Params::new(q);
    let filter: Vec<String> = p.all("event_type").iter().map(|s| s.to_string()).collect();
    let rx = s.events.subscribe();
    let attached = json!({
        "eventType": "event_stream_attached",
        "timestamp": rfc3339(crate::time::now_ms()),
        "remoteAddress": addr.ip().to_string(),
    });
    // Outpost's own event types (`outpost_*`) go only to a subscriber that names them:
    // Marathon clients refuse types they do not know (marathon-python raises).
    let wanted = move |v: &Value| {
        let t = v["eventType"].as_str().unwrap_or_default();
        if filter.is_empty() {
            !t.starts_with("outpost_")
        } else {
            filter.iter().any(|f| f == t)
        }
    };
    let first = wanted(&attached).then_some(attached);
    // A subscriber that falls more than the buffer behind is cut off (as Marathon closes a
    // slow subscriber's stream): it reconnects and re-reads, instead of silently missing events.
    let counted = s.clone();
    let live = BroadcastStream::new(rx)
        .take_while(move |r| {
            let lagged = r.is_err();
            if lagged {
                counted.count_slow_subscriber();
                tracing::warn!(remote = %addr, "an event subscriber fell behind: its stream is closed");
            }
            futures_util::future::ready(!lagged)
        })
        .filter_map(|r| async move { r.ok() });
    let stream = futures_util::stream::iter(first)
        .chain(live)
        .filter(move |v| futures_util::future::ready(wanted(v)))
        .map(|v| {
            let kind = v["eventType"].as_str().unwrap_or("event").to_string();
            Ok::<_, Infallible>(SseEvent::default().event(kind).data(v.to_string()))
        });
    sse(stream)
}

fn sse(stream: impl Stream<Item = Result<SseEvent, Infallible>> + Send + 'static) -> Response {
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}
