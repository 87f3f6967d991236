//! Following a deployment live: the CLI subscribes to `/v2/events` before it asks for the
//! change, then reads the events of its app until its deployment succeeds (exit 0) or fails,
//! or one of its tasks fails (exit 1, with the task's message: a pull error, an exit code).
//! Progress is the app's counts (staged, running, healthy of its instances), redrawn as a bar
//! on a terminal and printed as a line per change otherwise.

use std::io::{BufRead, BufReader, IsTerminal, Read, Write};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::client::{Client, Failure};

/// One server-sent event: its `event:` name and its `data:` JSON.
pub type SseEvent = (String, Value);

/// Reads server-sent events from `body` until it ends, each sent on `tx`; returns when the
/// stream ends or nobody listens.
pub fn read_events(body: impl Read, tx: &mpsc::Sender<SseEvent>) {
    let mut name = String::new();
    let mut data = String::new();
    for line in BufReader::new(body).lines() {
        let Ok(line) = line else { return };
        if line.is_empty() {
            if !data.is_empty() {
                let v = serde_json::from_str(&data).unwrap_or(Value::String(data.clone()));
                if tx.send((std::mem::take(&mut name), v)).is_err() {
                    return;
                }
            }
            name.clear();
            data.clear();
        } else if let Some(n) = line.strip_prefix("event:") {
            name = n.trim().to_string();
        } else if let Some(d) = line.strip_prefix("data:") {
            if !data.is_empty() {
                data.push('\n');
            }
            data.push_str(d.strip_prefix(' ').unwrap_or(d));
        }
    }
}

/// Subscribes to `/v2/events` (of the given types) on a thread of its own.
pub fn subscribe(client: &Client, types: &[&str]) -> Result<mpsc::Receiver<SseEvent>, Failure> {
    let query: Vec<String> = types.iter().map(|t| format!("event_type={t}")).collect();
    let path = if query.is_empty() {
        "/v2/events".to_string()
    } else {
        format!("/v2/events?{}", query.join("&"))
    };
    let body = client.stream(&path, "text/event-stream")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || read_events(body, &tx));
    Ok(rx)
}

/// How far an app is: its counts as `/v2/apps/{id}` shows them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Progress {
    /// Instances wanted.
    pub instances: u64,
    /// Tasks staged (launched, not yet running).
    pub staged: u64,
    /// Tasks running.
    pub running: u64,
    /// Tasks passing their health checks.
    pub healthy: u64,
    /// Whether the app has health checks (else "ready" means running).
    pub checked: bool,
    /// Per host, tasks by state (`--per-host`).
    pub hosts: Vec<(String, String)>,
    /// The app is gone (a destroy).
    pub gone: bool,
    /// A pull of the app's image under way on an agent: what it says.
    pub pulling: Option<String>,
}

impl Progress {
    /// The app's progress from its `/v2/apps/{id}` answer.
    pub fn of(app: &Value) -> Self {
        let n = |k: &str| app[k].as_u64().unwrap_or(0);
        let mut hosts: std::collections::BTreeMap<String, Vec<String>> = Default::default();
        for t in app["tasks"].as_array().into_iter().flatten() {
            let host = t["host"].as_str().unwrap_or("?").to_string();
            let state = t["state"]
                .as_str()
                .unwrap_or("?")
                .trim_start_matches("TASK_");
            hosts
                .entry(host)
                .or_default()
                .push(state.to_ascii_lowercase());
        }
        Self {
            instances: n("instances"),
            staged: n("tasksStaged"),
            running: n("tasksRunning"),
            healthy: n("tasksHealthy"),
            checked: app["healthChecks"]
                .as_array()
                .is_some_and(|h| !h.is_empty()),
            hosts: hosts.into_iter().map(|(h, s)| (h, s.join(","))).collect(),
            gone: false,
            pulling: None,
        }
    }

    /// Tasks that count as done: healthy when the app has checks, else running.
    pub fn ready(&self) -> u64 {
        if self.checked {
            self.healthy
        } else {
            self.running
        }
    }

    /// One line for people: `2 staged, 1 running, 1 healthy of 3`.
    pub fn line(&self, per_host: bool) -> String {
        if self.gone {
            return "gone".to_string();
        }
        let mut s = format!(
            "{} staged, {} running, {} healthy of {}",
            self.staged, self.running, self.healthy, self.instances
        );
        if !self.checked {
            s = format!(
                "{} staged, {} running of {}",
                self.staged, self.running, self.instances
            );
        }
        if let Some(p) = &self.pulling {
            s.push_str(&format!(" · {p}"));
        }
        if per_host && !self.hosts.is_empty() {
            let hosts: Vec<String> = self
                .hosts
                .iter()
                .map(|(h, s)| format!("{h}: {s}"))
                .collect();
            s.push_str(&format!(" [{}]", hosts.join("; ")));
        }
        s
    }
}

/// How a follow ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The deployment succeeded.
    Done,
    /// It failed, or a task of the app failed: why.
    Failed(String),
}

/// What the follow reacts to, from one event.
pub fn judge(event: &SseEvent, app_id: &str, deployment: &str, tolerate: bool) -> Option<Outcome> {
    let (name, v) = event;
    let kind = v["eventType"].as_str().unwrap_or(name);
    match kind {
        "deployment_success" if v["id"] == deployment => Some(Outcome::Done),
        "deployment_failed" if v["id"] == deployment => Some(Outcome::Failed(format!(
            "deployment {deployment} failed (cancelled, or replaced by another)"
        ))),
        "status_update_event" if v["appId"] == app_id && !tolerate => {
            let state = v["taskStatus"].as_str().unwrap_or("");
            matches!(state, "TASK_FAILED" | "TASK_ERROR").then(|| {
                Outcome::Failed(format!(
                    "task {} on {} is {state}: {}",
                    v["taskId"].as_str().unwrap_or("?"),
                    v["host"].as_str().unwrap_or("?"),
                    v["message"].as_str().unwrap_or("no message")
                ))
            })
        }
        _ => None,
    }
}

/// The event types a follow needs.
pub const FOLLOW_EVENTS: &[&str] = &[
    "deployment_success",
    "deployment_failed",
    "status_update_event",
    "health_status_changed_event",
    "outpost_pull_progress",
];

/// A pull progress event in words: `pulling IMAGE on AGENT: 2/3 layers, 1.5/4.0 MiB`.
pub fn pull_line(v: &Value) -> String {
    let mib = |k: &str| v[k].as_f64().unwrap_or(0.0) / (1024.0 * 1024.0);
    format!(
        "pulling {} on {}: {}/{} layers, {:.1}/{:.1} MiB",
        v["image"].as_str().unwrap_or("?"),
        v["agentId"].as_str().unwrap_or("?"),
        v["layersDone"],
        v["layersTotal"],
        mib("bytesDone"),
        mib("bytesTotal")
    )
}

/// Options of a follow.
#[derive(Debug, Clone, Copy)]
pub struct Follow {
    /// Show each host's tasks.
    pub per_host: bool,
    /// Keep waiting when a task fails (the deployment may still succeed on a retry).
    pub tolerate_failures: bool,
    /// Give up after this long.
    pub timeout: Duration,
}

/// A progress bar on standard output when it is a terminal (`LABEL [=====>  ] COUNTS MSG`,
/// COUNTS an indicatif template such as `{pos}/{len}`); none on a pipe.
fn terminal_bar(label: &str, counts: &str) -> Option<indicatif::ProgressBar> {
    if !std::io::stdout().is_terminal() {
        return None;
    }
    let bar =
        indicatif::ProgressBar::with_draw_target(Some(0), indicatif::ProgressDrawTarget::stdout());
    let style =
        indicatif::ProgressStyle::with_template(&format!("{label} [{{bar:30}}] {counts} {{msg}}"))
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> ");
    bar.set_style(style);
    Some(bar)
}

/// Draws progress: a bar on a terminal, a line per change otherwise.
enum Display {
    Bar(indicatif::ProgressBar),
    Lines { last: String },
}

impl Display {
    fn new(label: &str) -> Self {
        if let Some(bar) = terminal_bar(label, "{pos}/{len}") {
            Self::Bar(bar)
        } else {
            Self::Lines {
                last: String::new(),
            }
        }
    }

    fn show(&mut self, label: &str, p: &Progress, per_host: bool) {
        match self {
            Self::Bar(bar) => {
                bar.set_length(p.instances);
                bar.set_position(p.ready().min(p.instances));
                bar.set_message(p.line(per_host));
            }
            Self::Lines { last } => {
                let line = p.line(per_host);
                if *last != line {
                    println!("{label}: {line}");
                    let _ = std::io::stdout().flush();
                    *last = line;
                }
            }
        }
    }

    fn finish(&mut self, label: &str, p: &Progress, per_host: bool, outcome: &str) {
        match self {
            Self::Bar(bar) => {
                bar.set_length(p.instances);
                bar.set_position(p.ready().min(p.instances));
                bar.finish_with_message(format!("{}: {outcome}", p.line(per_host)));
            }
            Self::Lines { .. } => {
                self.show(label, p, per_host);
                println!("{label}: {outcome}");
            }
        }
    }
}

/// Follows `deployment` of `app_id` until it ends; `events` was subscribed before the change
/// was asked for, so nothing is missed.
pub fn deployment(
    client: &Client,
    events: &mpsc::Receiver<SseEvent>,
    label: &str,
    app_id: &str,
    deployment: &str,
    opts: Follow,
) -> Result<(), Failure> {
    let started = Instant::now();
    let mut display = Display::new(label);
    let mut progress = Progress::default();
    let mut refreshed = Instant::now() - Duration::from_secs(1);
    let path = format!("/v2/apps{app_id}");
    let mut pulling: Option<String> = None;
    let refresh = |progress: &mut Progress, pulling: &Option<String>| match client.get(&path) {
        Ok(v) => {
            *progress = Progress::of(&v["app"]);
            progress.pulling = pulling.clone();
        }
        Err(e) if e.0.contains(": 404 ") => progress.gone = true,
        Err(_) => {}
    };
    // A deployment that ended before the stream saw it (it was quick) is done.
    let still_under_way = |client: &Client| {
        client
            .get("/v2/deployments")
            .ok()
            .and_then(|v| v.as_array().cloned())
            .is_none_or(|list| list.iter().any(|d| d["id"] == deployment))
    };
    loop {
        if refreshed.elapsed() >= Duration::from_millis(250) {
            refresh(&mut progress, &pulling);
            display.show(label, &progress, opts.per_host);
            refreshed = Instant::now();
        }
        if started.elapsed() > opts.timeout {
            return Err(Failure(format!(
                "deployment {deployment} is still under way after {} s ({}); it goes on at the bridge",
                opts.timeout.as_secs(),
                progress.line(false)
            )));
        }
        match events.recv_timeout(Duration::from_millis(250)) {
            Ok((_, v)) if v["eventType"] == "outpost_pull_progress" => {
                if v["appId"] == app_id {
                    pulling = (v["done"] != true).then(|| pull_line(&v));
                    progress.pulling = pulling.clone();
                    display.show(label, &progress, opts.per_host);
                }
            }
            Ok(event) => match judge(&event, app_id, deployment, opts.tolerate_failures) {
                Some(Outcome::Done) => {
                    refresh(&mut progress, &None);
                    display.finish(label, &progress, opts.per_host, "done");
                    return Ok(());
                }
                Some(Outcome::Failed(why)) => {
                    refresh(&mut progress, &None);
                    display.finish(label, &progress, opts.per_host, "failed");
                    return Err(Failure(format!(
                        "{why}\n(the deployment {deployment} goes on at the bridge; `outpost destroy --force {app_id}` removes the app)"
                    )));
                }
                None => {}
            },
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if !still_under_way(client) {
                    refresh(&mut progress, &None);
                    display.finish(label, &progress, opts.per_host, "done");
                    return Ok(());
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err(Failure(format!(
                    "the event stream from {} ended while deployment {deployment} was under way",
                    client.base()
                )));
            }
        }
    }
}

/// Follows the pull of `image` on `agent` (asked for after `events` was subscribed) until the
/// agent says it is over: a byte bar on a terminal, a line per report otherwise.
pub fn pull(
    events: &mpsc::Receiver<SseEvent>,
    agent: &str,
    image: &str,
    timeout: Duration,
) -> Result<(), Failure> {
    let started = Instant::now();
    let label = format!("pull {image} on {agent}");
    let bar = terminal_bar(&label, "{bytes}/{total_bytes}");
    loop {
        let left = timeout.saturating_sub(started.elapsed());
        let (_, v) = match events.recv_timeout(left) {
            Ok(e) => e,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                return Err(Failure(format!(
                    "{label}: no end reported within {} s (the agent goes on pulling)",
                    timeout.as_secs()
                )));
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err(Failure(format!("{label}: the event stream ended")));
            }
        };
        if v["agentId"] != agent || v["image"] != image || !v["taskId"].is_null() {
            continue;
        }
        let layers = format!("{}/{} layers", v["layersDone"], v["layersTotal"]);
        match &bar {
            Some(bar) => {
                bar.set_length(v["bytesTotal"].as_u64().unwrap_or(0));
                bar.set_position(v["bytesDone"].as_u64().unwrap_or(0));
                bar.set_message(layers.clone());
            }
            None => println!(
                "{label}: {}",
                pull_line(&v).split(": ").nth(1).unwrap_or("")
            ),
        }
        if v["done"] == true {
            if let Some(e) = v["error"].as_str() {
                if let Some(bar) = &bar {
                    bar.abandon_with_message(format!("{layers}: failed"));
                } else {
                    println!("{label}: failed");
                }
                return Err(Failure(format!("{label} failed: {e}")));
            }
            match &bar {
                Some(bar) => bar.finish_with_message(format!("{layers}: done")),
                None => println!("{label}: done"),
            }
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn server_sent_events_are_split_into_name_and_json() {
        let text = "event: event_stream_attached\ndata: {\"eventType\":\"event_stream_attached\"}\n\n:heartbeat\n\nevent: end\ndata: end of log\n\n";
        let (tx, rx) = mpsc::channel();
        read_events(text.as_bytes(), &tx);
        let got: Vec<SseEvent> = rx.try_iter().collect();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].0, "event_stream_attached");
        assert_eq!(got[0].1["eventType"], "event_stream_attached");
        assert_eq!(got[1], ("end".to_string(), json!("end of log")));
    }

    #[test]
    fn the_follow_ends_on_its_deployment_and_on_a_failed_task_of_its_app() {
        let ev = |v: Value| (v["eventType"].as_str().unwrap().to_string(), v);
        let done = ev(json!({ "eventType": "deployment_success", "id": "d1" }));
        assert_eq!(judge(&done, "/a", "d1", false), Some(Outcome::Done));
        assert_eq!(judge(&done, "/a", "d2", false), None, "another deployment");
        let failed = ev(json!({
            "eventType": "status_update_event", "appId": "/a", "taskId": "a.1", "host": "h",
            "taskStatus": "TASK_FAILED", "message": "pull: manifest unknown"
        }));
        let Some(Outcome::Failed(why)) = judge(&failed, "/a", "d1", false) else {
            panic!("not failed")
        };
        assert!(
            why.contains("a.1") && why.contains("pull: manifest unknown"),
            "{why}"
        );
        assert_eq!(judge(&failed, "/a", "d1", true), None, "tolerated");
        assert_eq!(judge(&failed, "/b", "d1", false), None, "another app");
        let killed = ev(
            json!({ "eventType": "status_update_event", "appId": "/a", "taskStatus": "TASK_KILLED" }),
        );
        assert_eq!(judge(&killed, "/a", "d1", false), None);
    }

    #[test]
    fn progress_reads_the_app_counts_and_says_them_in_a_line() {
        let app = json!({
            "instances": 3, "tasksStaged": 1, "tasksRunning": 2, "tasksHealthy": 1,
            "healthChecks": [{}],
            "tasks": [
                { "host": "edge-1", "state": "TASK_RUNNING" },
                { "host": "edge-1", "state": "TASK_STAGING" },
                { "host": "edge-2", "state": "TASK_RUNNING" }
            ]
        });
        let p = Progress::of(&app);
        assert_eq!(p.ready(), 1);
        assert_eq!(p.line(false), "1 staged, 2 running, 1 healthy of 3");
        assert_eq!(
            p.line(true),
            "1 staged, 2 running, 1 healthy of 3 [edge-1: running,staging; edge-2: running]"
        );
        let unchecked = Progress::of(&json!({ "instances": 2, "tasksRunning": 2 }));
        assert_eq!(unchecked.ready(), 2);
        assert_eq!(unchecked.line(false), "0 staged, 2 running of 2");
    }
}
