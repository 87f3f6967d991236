//! `outpost-bridge lb`: service discovery to HAProxy, in the manner of marathon-lb and Bamboo.
//! It reads apps and tasks from a Marathon API (the bridge's own, or any Marathon), follows its
//! event stream, renders an HAProxy configuration from the apps' healthy tasks, validates it
//! with `haproxy -c`, puts it in place atomically and reloads HAProxy gracefully. A render that
//! fails (a bad template, a config HAProxy refuses) never replaces the config that serves.
//!
//! What is rendered, per app and port index `i` (labels as marathon-lb names them):
//! - a frontend on the port's service port (or `HAPROXY_{i}_PORT`), mode `HAPROXY_{i}_MODE`
//!   (`http` default, or `tcp`), a backend balanced by `HAPROXY_{i}_BALANCE` (`roundrobin`
//!   default, `leastconn`, `source`, `first`, `static-rr`);
//! - with `HAPROXY_{i}_VHOST` (and optionally `HAPROXY_{i}_PATH`): a rule in one shared HTTP
//!   frontend on `--http-port`;
//! - a server per task that is RUNNING and, if the app has health checks, alive in all of them;
//!   the rest are left out.
//!
//! The template is minijinja (Jinja syntax); `--template FILE` replaces the built-in one and is
//! read again at every render, so a fixed template takes effect without a restart.

use std::path::{Path, PathBuf};
use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use serde::Serialize;
use serde_json::Value;

/// The built-in template.
pub const BUILTIN_TEMPLATE: &str = include_str!("lb/haproxy.cfg.j2");

/// One task behind a service.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Server {
    /// A name HAProxy accepts (from the task id).
    pub name: String,
    /// The task's agent host.
    pub host: String,
    /// The task's host port for this service.
    pub port: u64,
}

/// One app port as a load-balanced service.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Service {
    /// The Marathon app id.
    pub app_id: String,
    /// The port index within the app.
    pub port_index: usize,
    /// A name HAProxy accepts: the app id's segments and the port index.
    pub name: String,
    /// The port the frontend binds (service port, or `HAPROXY_{i}_PORT`).
    pub bind_port: u64,
    /// `http` or `tcp`.
    pub mode: String,
    /// The balance algorithm.
    pub balance: String,
    /// Virtual host, if any.
    pub vhost: Option<String>,
    /// Path prefix with the virtual host, if any.
    pub path: Option<String>,
    /// Healthy tasks.
    pub servers: Vec<Server>,
}

/// A label value that may go into the config only if it is one safe token (no spaces, quotes,
/// newlines: a label must not be able to write HAProxy directives).
fn token(v: &str) -> Option<String> {
    (!v.is_empty()
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._/:*".contains(c)))
    .then(|| v.to_string())
}

fn name_of(s: &str) -> String {
    s.trim_start_matches('/')
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// Whether a task serves: RUNNING, and alive in every health check the app has.
fn serving(app: &Value, task: &Value) -> bool {
    if task["state"] != "TASK_RUNNING" {
        return false;
    }
    let checks = app["healthChecks"].as_array().map_or(0, Vec::len);
    if checks == 0 {
        return true;
    }
    let results = task["healthCheckResults"].as_array();
    results.is_some_and(|r| !r.is_empty() && r.iter().all(|x| x["alive"] == true))
}

/// The services of `/v2/apps?embed=apps.tasks` (Marathon's JSON); warnings for what is skipped.
pub fn services(apps: &Value) -> (Vec<Service>, Vec<String>) {
    let mut out = Vec::new();
    let mut warnings = Vec::new();
    for app in apps["apps"].as_array().into_iter().flatten() {
        let id = app["id"].as_str().unwrap_or_default();
        let ports: Vec<u64> = match app["container"]["portMappings"].as_array() {
            Some(pm) if !pm.is_empty() => pm
                .iter()
                .map(|p| p["servicePort"].as_u64().unwrap_or(0))
                .collect(),
            _ => app["portDefinitions"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| p["port"].as_u64().unwrap_or(0))
                .collect(),
        };
        let labels = &app["labels"];
        let label = |i: usize, k: &str| labels[format!("HAPROXY_{i}_{k}")].as_str();
        for (i, service_port) in ports.iter().enumerate() {
            let bind_port = match label(i, "PORT") {
                Some(p) => match p.parse::<u16>() {
                    Ok(p) if p > 0 => u64::from(p),
                    _ => {
                        warnings.push(format!(
                            "{id}: HAPROXY_{i}_PORT {p:?} is not a port; skipped"
                        ));
                        continue;
                    }
                },
                None => *service_port,
            };
            if bind_port == 0 {
                continue;
            }
            let mode = label(i, "MODE").unwrap_or("http");
            if mode != "http" && mode != "tcp" {
                warnings.push(format!(
                    "{id}: HAPROXY_{i}_MODE {mode:?} is not http or tcp; skipped"
                ));
                continue;
            }
            let balance = label(i, "BALANCE").unwrap_or("roundrobin");
            if !["roundrobin", "leastconn", "source", "first", "static-rr"].contains(&balance) {
                warnings.push(format!(
                    "{id}: HAPROXY_{i}_BALANCE {balance:?} is not an algorithm; skipped"
                ));
                continue;
            }
            let safe = |k: &str| {
                match label(i, k) {
                None => Ok(None),
                Some(v) => token(v).map(Some).ok_or(format!(
                    "{id}: HAPROXY_{i}_{k} {v:?} has characters HAProxy's config cannot take; skipped"
                )),
            }
            };
            let (vhost, path) = match (safe("VHOST"), safe("PATH")) {
                (Ok(v), Ok(p)) => (v, p),
                (Err(e), _) | (_, Err(e)) => {
                    warnings.push(e);
                    continue;
                }
            };
            let servers = app["tasks"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|t| serving(app, t))
                .filter_map(|t| {
                    Some(Server {
                        name: name_of(t["id"].as_str()?),
                        host: token(t["host"].as_str()?)?,
                        port: t["ports"].as_array()?.get(i)?.as_u64()?,
                    })
                })
                .collect();
            out.push(Service {
                app_id: id.to_string(),
                port_index: i,
                name: format!("{}_{i}", name_of(id)),
                bind_port,
                mode: mode.to_string(),
                balance: balance.to_string(),
                vhost,
                path,
                servers,
            });
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    (out, warnings)
}

/// Settings of the rendering that are not the apps.
#[derive(Debug, Clone, Serialize)]
pub struct RenderSettings {
    /// The address frontends bind.
    pub bind: String,
    /// The port of the shared virtual-host frontend.
    pub http_port: u16,
    /// Where the apps came from (a comment in the config).
    pub marathon: String,
}

/// Renders `template` (minijinja) with the services; the error names the template's problem.
pub fn render(
    template: &str,
    services: &[Service],
    settings: &RenderSettings,
) -> Result<String, String> {
    let mut env = minijinja::Environment::new();
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    env.add_template("haproxy.cfg", template)
        .map_err(|e| format!("template: {e}"))?;
    let vhosts: Vec<&Service> = services.iter().filter(|s| s.vhost.is_some()).collect();
    let ctx = minijinja::context! {
        services => services,
        vhosts => vhosts,
        bind => settings.bind,
        http_port => settings.http_port,
        marathon => settings.marathon,
    };
    env.get_template("haproxy.cfg")
        .and_then(|t| t.render(ctx))
        .map(|s| s.trim_start().to_string() + "\n")
        .map_err(|e| format!("template: {e}"))
}

/// What `lb` needs.
#[derive(Debug, Clone)]
pub struct LbOptions {
    /// The Marathon API, `http://host:port`.
    pub marathon: String,
    /// The config file HAProxy runs with.
    pub config: PathBuf,
    /// A template replacing the built-in one.
    pub template: Option<PathBuf>,
    /// `haproxy` to validate with (and to run, unless `reload_command` is set).
    pub haproxy: String,
    /// Run this (`sh -c`) to reload an HAProxy managed elsewhere (e.g. `systemctl reload
    /// haproxy`); without it, `lb` runs HAProxy itself in master-worker mode.
    pub reload_command: Option<String>,
    /// How rendering binds and names things.
    pub settings: RenderSettings,
}

/// `GET path` on the Marathon API (HTTP/1.1); returns status and body.
async fn get(
    base: &str,
    path: &str,
    accept: &str,
) -> Result<hyper::Response<hyper::body::Incoming>, String> {
    let authority = base
        .strip_prefix("http://")
        .ok_or_else(|| format!("--marathon {base:?}: must be http://host:port"))?
        .trim_end_matches('/');
    let stream = tokio::net::TcpStream::connect(authority)
        .await
        .map_err(|e| format!("{base}: {e}"))?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| format!("{base}: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let req = hyper::Request::get(path)
        .header(hyper::header::HOST, authority)
        .header(hyper::header::ACCEPT, accept)
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    sender
        .send_request(req)
        .await
        .map_err(|e| format!("{base}{path}: {e}"))
}

async fn fetch_apps(base: &str) -> Result<Value, String> {
    let resp = get(base, "/v2/apps?embed=apps.tasks", "application/json").await?;
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    if !status.is_success() {
        return Err(format!("{base}/v2/apps: HTTP {status}"));
    }
    serde_json::from_slice(&body).map_err(|e| format!("{base}/v2/apps: {e}"))
}

/// Follows `/v2/events`; pokes `changed` at every event that may move a task in or out.
async fn follow_events(base: String, changed: std::sync::Arc<tokio::sync::Notify>) {
    loop {
        if let Ok(resp) = get(&base, "/v2/events", "text/event-stream").await {
            let mut body = resp.into_body();
            let mut buf = String::new();
            while let Some(Ok(frame)) = body.frame().await {
                let Some(data) = frame.data_ref() else {
                    continue;
                };
                buf.push_str(&String::from_utf8_lossy(data));
                while let Some(end) = buf.find("\n\n") {
                    let event: String = buf.drain(..end + 2).collect();
                    let kind = event
                        .lines()
                        .find_map(|l| l.strip_prefix("event:"))
                        .map(str::trim)
                        .unwrap_or("");
                    if !matches!(kind, "event_stream_attached" | "") {
                        changed.notify_one();
                    }
                }
            }
        }
        // The stream ended (bridge restart): everything may have changed.
        changed.notify_one();
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// The template to render with: `--template`'s file, read now (so a fixed file takes effect at
/// the next render), or the built-in one.
fn template(opts: &LbOptions) -> Result<String, String> {
    match &opts.template {
        Some(p) => {
            std::fs::read_to_string(p).map_err(|e| format!("--template {}: {e}", p.display()))
        }
        None => Ok(BUILTIN_TEMPLATE.to_string()),
    }
}

/// Writes `text` to `path` atomically (a temp file beside it, then rename).
fn write_atomically(path: &Path, text: &str) -> Result<(), String> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))
}

/// `haproxy -c -f file`: Ok, or HAProxy's complaint.
fn validate(haproxy: &str, file: &Path) -> Result<(), String> {
    let out = std::process::Command::new(haproxy)
        .arg("-c")
        .arg("-q")
        .arg("-f")
        .arg(file)
        .output()
        .map_err(|e| format!("{haproxy}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "haproxy -c refused the rendered config: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// One render: Ok(true) if the config changed and is in place, Ok(false) if nothing changed.
async fn render_once(opts: &LbOptions) -> Result<bool, String> {
    let template = template(opts)?;
    let apps = fetch_apps(&opts.marathon).await?;
    let (services, warnings) = services(&apps);
    for w in warnings {
        tracing::warn!("{w}");
    }
    let text = render(&template, &services, &opts.settings)?;
    if std::fs::read_to_string(&opts.config).ok().as_deref() == Some(text.as_str()) {
        return Ok(false);
    }
    let candidate = opts.config.with_extension("candidate");
    std::fs::write(&candidate, &text).map_err(|e| format!("{}: {e}", candidate.display()))?;
    let checked = validate(&opts.haproxy, &candidate);
    let _ = std::fs::remove_file(&candidate);
    checked?;
    write_atomically(&opts.config, &text)?;
    let servers: usize = services.iter().map(|s| s.servers.len()).sum();
    tracing::info!(services = services.len(), servers, "HAProxy config updated");
    Ok(true)
}

/// Runs until SIGINT/SIGTERM: renders at start, on events and every 30 s; reloads on change.
pub async fn run(opts: LbOptions) -> Result<(), String> {
    let changed = std::sync::Arc::new(tokio::sync::Notify::new());
    tokio::spawn(follow_events(opts.marathon.clone(), changed.clone()));
    let mut haproxy: Option<tokio::process::Child> = None;
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| e.to_string())?;
    loop {
        match render_once(&opts).await {
            Ok(updated) => {
                if let Err(e) = reload(&opts, &mut haproxy, updated).await {
                    tracing::error!("{e}");
                }
            }
            // The config that serves stays as it is.
            Err(e) => tracing::error!("render failed, the running config is kept: {e}"),
        }
        tokio::select! {
            () = changed.notified() => {
                // Let a burst of events settle into one render.
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            () = tokio::time::sleep(Duration::from_secs(30)) => {}
            _ = tokio::signal::ctrl_c() => break,
            _ = sigterm.recv() => break,
        }
    }
    if let Some(mut h) = haproxy {
        let _ = h.kill().await;
    }
    Ok(())
}

/// Starts HAProxy (master-worker) once a config is in place, or reloads it gracefully
/// (SIGUSR2: new workers take the new config, old ones finish their connections).
async fn reload(
    opts: &LbOptions,
    haproxy: &mut Option<tokio::process::Child>,
    updated: bool,
) -> Result<(), String> {
    if let Some(cmd) = &opts.reload_command {
        if updated {
            let status = tokio::process::Command::new("sh")
                .arg("-c")
                .arg(cmd)
                .status()
                .await
                .map_err(|e| format!("--reload-command: {e}"))?;
            if !status.success() {
                return Err(format!("--reload-command {cmd:?} failed: {status}"));
            }
        }
        return Ok(());
    }
    let running = haproxy
        .as_mut()
        .is_some_and(|h| h.try_wait().ok().flatten().is_none());
    if !running {
        if !opts.config.exists() {
            return Ok(());
        }
        let child = tokio::process::Command::new(&opts.haproxy)
            .args(["-W", "-db", "-f"])
            .arg(&opts.config)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("{}: {e}", opts.haproxy))?;
        tracing::info!(pid = child.id(), "HAProxy started");
        *haproxy = Some(child);
        return Ok(());
    }
    if updated && let Some(pid) = haproxy.as_ref().and_then(|h| h.id()) {
        let pid = rustix::process::Pid::from_raw(pid as i32).ok_or("HAProxy has no pid")?;
        rustix::process::kill_process(pid, rustix::process::Signal::USR2)
            .map_err(|e| format!("reloading HAProxy: {e}"))?;
        tracing::info!("HAProxy reloaded");
    }
    Ok(())
}

/// The services for `--once`: renders and prints, validating nothing (for a look).
pub async fn render_to_string(opts: &LbOptions) -> Result<String, String> {
    let template = template(opts)?;
    let apps = fetch_apps(&opts.marathon).await?;
    render(&template, &services(&apps).0, &opts.settings)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn settings() -> RenderSettings {
        RenderSettings {
            bind: "127.0.0.1".into(),
            http_port: 8081,
            marathon: "http://127.0.0.1:8080".into(),
        }
    }

    fn apps() -> Value {
        json!({ "apps": [{
            "id": "/web/api",
            "container": { "portMappings": [{ "containerPort": 80, "servicePort": 10001 }] },
            "healthChecks": [{ "protocol": "HTTP" }],
            "labels": { "HAPROXY_0_VHOST": "api.example.com", "HAPROXY_0_BALANCE": "leastconn" },
            "tasks": [
                { "id": "web_api.1", "host": "h1", "ports": [31001], "state": "TASK_RUNNING",
                  "healthCheckResults": [{ "alive": true }] },
                { "id": "web_api.2", "host": "h2", "ports": [31002], "state": "TASK_RUNNING",
                  "healthCheckResults": [{ "alive": false }] },
                { "id": "web_api.3", "host": "h3", "ports": [31003], "state": "TASK_RUNNING" },
                { "id": "web_api.4", "host": "h4", "ports": [31004], "state": "TASK_STAGING" }
            ]
        }, {
            "id": "/db",
            "portDefinitions": [{ "port": 10002 }],
            "labels": { "HAPROXY_0_MODE": "tcp", "HAPROXY_0_PORT": "15432" },
            "tasks": [{ "id": "db.1", "host": "h5", "ports": [31005], "state": "TASK_RUNNING" }]
        }, {
            "id": "/evil",
            "portDefinitions": [{ "port": 10003 }],
            "labels": { "HAPROXY_0_VHOST": "x\n    bind :1" },
            "tasks": []
        }]})
    }

    #[test]
    fn only_healthy_running_tasks_serve_and_labels_shape_the_service() {
        let (s, warnings) = services(&apps());
        assert_eq!(s.len(), 2, "{s:?}");
        let api = s.iter().find(|x| x.app_id == "/web/api").unwrap();
        assert_eq!(api.name, "web_api_0");
        assert_eq!(api.balance, "leastconn");
        assert_eq!(api.vhost.as_deref(), Some("api.example.com"));
        assert_eq!(
            api.servers,
            vec![Server {
                name: "web_api_1".into(),
                host: "h1".into(),
                port: 31001
            }],
            "unhealthy, unchecked and staging tasks are left out"
        );
        let db = s.iter().find(|x| x.app_id == "/db").unwrap();
        assert_eq!((db.mode.as_str(), db.bind_port), ("tcp", 15432));
        assert_eq!(db.servers.len(), 1, "no health checks: running is enough");
        assert!(warnings.iter().any(|w| w.contains("/evil")), "{warnings:?}");
    }

    #[test]
    fn the_built_in_template_renders_frontends_backends_and_vhosts() {
        let (s, _) = services(&apps());
        let cfg = render(BUILTIN_TEMPLATE, &s, &settings()).unwrap();
        assert!(cfg.contains("bind 127.0.0.1:10001"), "{cfg}");
        assert!(cfg.contains("server web_api_1 h1:31001"), "{cfg}");
        assert!(!cfg.contains("h2:31002"), "{cfg}");
        assert!(cfg.contains("bind 127.0.0.1:15432"), "{cfg}");
        assert!(cfg.contains("hdr(host) -i api.example.com"), "{cfg}");
        assert!(cfg.contains("bind 127.0.0.1:8081"), "{cfg}");
        let e = render("{% for x in %}", &s, &settings()).unwrap_err();
        assert!(e.starts_with("template:"), "{e}");
    }
}
