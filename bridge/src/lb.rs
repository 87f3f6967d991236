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
#[derive(Debug)]
pub struct LbOptions {
    /// The Marathon APIs, `http://host:port` each: the bridges of a group (or Marathons), tried
    /// in turn as marathon-lb does.
    pub marathon: Marathons,
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

/// The Marathon APIs `lb` follows, tried in turn: a request goes to the one that answered last,
/// and on to the next when it cannot be reached or answers 5xx (a bridge without a leader
/// answers 503), as marathon-lb does with its list of `--marathon` URLs. A redirect (a
/// follower sends `/v2/events` to its leader with 302) is followed.
#[derive(Debug, Default)]
pub struct Marathons {
    urls: Vec<String>,
    current: std::sync::atomic::AtomicUsize,
}

/// Redirects followed for one request at most.
const MAX_REDIRECTS: usize = 3;

impl Marathons {
    /// The list, each `http://host:port`; the error names the first that is not.
    pub fn new(urls: &[String]) -> Result<Self, String> {
        if urls.is_empty() {
            return Err("--marathon: no URL given".into());
        }
        for u in urls {
            authority(u)?;
        }
        Ok(Self {
            urls: urls
                .iter()
                .map(|u| u.trim_end_matches('/').to_string())
                .collect(),
            current: 0.into(),
        })
    }

    /// The URLs, comma-separated (for the config's comment).
    pub fn joined(&self) -> String {
        self.urls.join(",")
    }

    /// `GET path` from the first Marathon that answers below 500, starting at the one that
    /// answered last; the error names what each said.
    async fn get(
        &self,
        path: &str,
        accept: &str,
    ) -> Result<hyper::Response<hyper::body::Incoming>, String> {
        use std::sync::atomic::Ordering;
        let first = self.current.load(Ordering::Relaxed);
        let mut failures = Vec::new();
        for i in 0..self.urls.len() {
            let at = (first + i) % self.urls.len();
            let base = &self.urls[at];
            match get_following(base, path, accept).await {
                Ok(r) if !r.status().is_server_error() => {
                    if at != first {
                        tracing::info!(marathon = %base, "following this Marathon API now");
                    }
                    self.current.store(at, Ordering::Relaxed);
                    return Ok(r);
                }
                Ok(r) => failures.push(format!("{base}{path}: HTTP {}", r.status())),
                Err(e) => failures.push(e),
            }
        }
        Err(failures.join("; "))
    }
}

/// `host:port` of an `http://host:port` URL.
fn authority(base: &str) -> Result<&str, String> {
    let a = base
        .strip_prefix("http://")
        .ok_or_else(|| format!("--marathon {base:?}: must be http://host:port"))?
        .trim_end_matches('/');
    if a.is_empty() || a.contains('/') {
        return Err(format!("--marathon {base:?}: must be http://host:port"));
    }
    Ok(a)
}

/// `GET base+path`, following up to [`MAX_REDIRECTS`] redirects to other `http://` URLs.
async fn get_following(
    base: &str,
    path: &str,
    accept: &str,
) -> Result<hyper::Response<hyper::body::Incoming>, String> {
    let mut url = format!("{base}{path}");
    for _ in 0..=MAX_REDIRECTS {
        let (origin, rest) = match url.strip_prefix("http://").and_then(|r| r.find('/')) {
            Some(i) => url.split_at("http://".len() + i),
            None => (url.as_str(), "/"),
        };
        let resp = get(origin, rest, accept).await?;
        if !resp.status().is_redirection() {
            return Ok(resp);
        }
        let to = resp
            .headers()
            .get(hyper::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| format!("{url}: HTTP {} without a Location", resp.status()))?;
        if !to.starts_with("http://") {
            return Err(format!("{url}: redirected to {to:?}, not an http:// URL"));
        }
        url = to.to_string();
    }
    Err(format!("{base}{path}: more than {MAX_REDIRECTS} redirects"))
}

/// `GET path` on one Marathon API (HTTP/1.1).
async fn get(
    base: &str,
    path: &str,
    accept: &str,
) -> Result<hyper::Response<hyper::body::Incoming>, String> {
    let authority = authority(base)?;
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

async fn fetch_apps(marathons: &Marathons) -> Result<Value, String> {
    let resp = marathons
        .get("/v2/apps?embed=apps.tasks", "application/json")
        .await?;
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    if !status.is_success() {
        return Err(format!("/v2/apps: HTTP {status}"));
    }
    serde_json::from_slice(&body).map_err(|e| format!("/v2/apps: {e}"))
}

/// Follows `/v2/events`; pokes `changed` at every event that may move a task in or out.
async fn follow_events(
    opts: std::sync::Arc<LbOptions>,
    changed: std::sync::Arc<tokio::sync::Notify>,
) {
    loop {
        match opts.marathon.get("/v2/events", "text/event-stream").await {
            Ok(resp) if resp.status().is_success() => {
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
            Ok(resp) => tracing::warn!("/v2/events: HTTP {}", resp.status()),
            Err(e) => tracing::warn!("/v2/events: {e}"),
        }
        // The stream ended (a bridge restarted, or lost its leadership): everything may have
        // changed.
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
    let opts = std::sync::Arc::new(opts);
    tokio::spawn(follow_events(opts.clone(), changed.clone()));
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

/// Makes `command`'s process receive SIGTERM when this process ends, even killed outright
/// (SIGKILL, a crash), which neither `kill_on_drop` nor the SIGTERM handler sees: a HAProxy left
/// behind would keep serving its last config beside the one a new `lb` starts on the same ports
/// (HAProxy binds with `SO_REUSEPORT`). The kernel sends the signal when the *thread* that
/// spawned the child ends; `lb` spawns from the runtime's main thread (`block_on` in main), which
/// lasts as long as the process. One of the workspace's three `unsafe` calls (ARCHITECTURE.md).
#[allow(unsafe_code)]
fn die_with_this_process(command: &mut tokio::process::Command) {
    let parent = rustix::process::getpid();
    // SAFETY: the closure runs in the forked child before exec and makes two system calls
    // (prctl, getppid), which are async-signal-safe; it allocates nothing and takes no lock
    // (an `Errno` becomes an `io::Error` without allocating).
    unsafe {
        command.pre_exec(move || {
            rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::TERM))?;
            // This process may have ended between the fork and the prctl: then no signal
            // will come, so the child must not run.
            if rustix::process::getppid() != Some(parent) {
                return Err(rustix::io::Errno::SRCH.into());
            }
            Ok(())
        });
    }
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
        let mut command = tokio::process::Command::new(&opts.haproxy);
        command
            .args(["-W", "-db", "-f"])
            .arg(&opts.config)
            .kill_on_drop(true);
        die_with_this_process(&mut command);
        let child = command
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

    #[test]
    fn a_list_of_marathons_names_the_url_that_is_not_one() {
        let urls = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let m = Marathons::new(&urls(&["http://a:8080/", "http://b:8080"])).unwrap();
        assert_eq!(m.joined(), "http://a:8080,http://b:8080");
        let e = Marathons::new(&urls(&["http://a:8080", "https://b:8443"])).unwrap_err();
        assert_eq!(
            e,
            r#"--marathon "https://b:8443": must be http://host:port"#
        );
        let e = Marathons::new(&urls(&["http://a:8080/v2"])).unwrap_err();
        assert!(e.contains(r#""http://a:8080/v2""#), "{e}");
        assert_eq!(Marathons::new(&[]).unwrap_err(), "--marathon: no URL given");
    }

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
