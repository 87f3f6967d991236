//! `outpost`: the fleet from a terminal, over the bridge's HTTP API (the Marathon API and
//! Outpost's extensions). Tables for people, `--json` for scripts; changes (deploy, scale,
//! restart, destroy) follow their deployment live and exit 0 only when it completes.

mod client;
mod follow;
mod table;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{CommandFactory, Parser, Subcommand};
use serde_json::{Value, json};

use client::{Client, Failure, Settings};

/// The Outpost fleet from a terminal: agents, apps, tasks, deployments followed live, task
/// logs and events.
#[derive(Debug, Parser)]
#[command(name = "outpost", version, about, long_about = None)]
struct Cli {
    /// The bridge's Marathon API URL [env: OUTPOST_BRIDGE] [default: http://127.0.0.1:8080].
    #[arg(long, global = true)]
    bridge: Option<String>,
    /// An API token (the bridge's [[api_tokens]]) [env: OUTPOST_TOKEN].
    #[arg(long, global = true)]
    token: Option<String>,
    /// USER:PASSWORD for HTTP Basic (the bridge's [[api_users]]).
    #[arg(long, global = true)]
    user: Option<String>,
    /// PEM file of the CA the bridge's HTTPS certificate is signed by (the fleet CA).
    #[arg(long, global = true)]
    ca: Option<PathBuf>,
    /// The config file (bridge, token, user, ca) [default: ~/.config/outpost/cli.toml].
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Print the bridge's JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Cmd,
}

/// How a change is followed.
#[derive(Debug, clap::Args)]
struct FollowArgs {
    /// Override a deployment under way for the app (Marathon's ?force=true).
    #[arg(long)]
    force: bool,
    /// Return as soon as the bridge took the change; do not follow the deployment.
    #[arg(long)]
    detach: bool,
    /// Show each host's tasks in the progress.
    #[arg(long)]
    per_host: bool,
    /// Keep following when a task fails (it may succeed on a retry).
    #[arg(long)]
    tolerate_failures: bool,
    /// Give up following after this many seconds (the deployment goes on).
    #[arg(long, default_value_t = 600)]
    timeout: u64,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// The agents: state, last seen, resources used and offered, tasks.
    Agents,
    /// One agent: its attributes, resources and tasks.
    Agent {
        /// The agent id.
        id: String,
    },
    /// The apps: instances, running, healthy, image, deployment.
    Apps,
    /// One app: its definition's main fields and its tasks.
    App {
        /// The app id, e.g. /web.
        id: String,
    },
    /// The tasks, of every app or of one.
    Tasks {
        /// Only this app's.
        #[arg(long)]
        app: Option<String>,
    },
    /// Creates or updates an app from a Marathon app definition (JSON) and follows the
    /// deployment.
    Deploy {
        /// The app definition: a JSON file, or - for standard input.
        file: PathBuf,
        #[command(flatten)]
        follow: FollowArgs,
    },
    /// Sets an app's instances and follows the deployment.
    Scale {
        /// The app id.
        id: String,
        /// Instances wanted.
        instances: u32,
        #[command(flatten)]
        follow: FollowArgs,
    },
    /// Replaces every task of an app (rolling, by its upgrade strategy) and follows it.
    Restart {
        /// The app id.
        id: String,
        #[command(flatten)]
        follow: FollowArgs,
    },
    /// Kills every task of an app, forgets it, and follows that.
    Destroy {
        /// The app id.
        id: String,
        #[command(flatten)]
        follow: FollowArgs,
    },
    /// What a task's container printed (read from its agent, wherever it is).
    Logs {
        /// The task id.
        task: String,
        /// Keep printing new output until the container stops (or an hour passes).
        #[arg(short, long)]
        follow: bool,
        /// Only the last N lines.
        #[arg(long)]
        tail: Option<u32>,
        /// Only standard error.
        #[arg(long, conflicts_with = "stdout")]
        stderr: bool,
        /// Only standard output.
        #[arg(long)]
        stdout: bool,
        /// Only output since this time (RFC 3339, or milliseconds since the epoch).
        #[arg(long)]
        since: Option<String>,
    },
    /// Has an agent pull an image ahead of a launch, with its progress.
    Pull {
        /// The agent id.
        agent: String,
        /// The image reference, e.g. registry:5000/team/web:1.
        image: String,
        /// Pull even if the agent has the image.
        #[arg(long)]
        force: bool,
        /// Return as soon as the bridge sent the pull.
        #[arg(long)]
        detach: bool,
        /// Give up following after this many seconds (the pull goes on).
        #[arg(long, default_value_t = 600)]
        timeout: u64,
    },
    /// Stops launches on an agent and moves its apps' tasks elsewhere, following until they
    /// are replaced.
    Drain {
        /// The agent id.
        agent: String,
        /// Return once the bridge took the drain.
        #[arg(long)]
        detach: bool,
        /// Give up following after this many seconds.
        #[arg(long, default_value_t = 600)]
        timeout: u64,
    },
    /// Lets a drained agent take launches again.
    Undrain {
        /// The agent id.
        agent: String,
    },
    /// The bridge's event stream (Marathon's /v2/events), one event a line.
    Events {
        /// Only events of this type (repeatable), e.g. status_update_event.
        #[arg(long = "type")]
        types: Vec<String>,
    },
    /// Prints a shell completion script.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure(message)) => {
            let _ = std::io::stdout().flush();
            eprintln!("outpost: {message}");
            ExitCode::FAILURE
        }
    }
}

fn settings(cli: &Cli) -> Result<Settings, Failure> {
    let flags = Settings {
        bridge: cli.bridge.clone(),
        token: cli.token.clone(),
        user: cli.user.clone(),
        ca: cli.ca.clone(),
    };
    let env = Settings {
        bridge: std::env::var("OUTPOST_BRIDGE")
            .ok()
            .filter(|s| !s.is_empty()),
        token: std::env::var("OUTPOST_TOKEN")
            .ok()
            .filter(|s| !s.is_empty()),
        ..Default::default()
    };
    let file = match cli.config.clone().or_else(client::default_config_path) {
        Some(path) => Settings::load(&path).map_err(Failure)?,
        None => Settings::default(),
    };
    Ok(flags.or(env).or(file))
}

fn run(cli: Cli) -> Result<(), Failure> {
    if let Cmd::Completions { shell } = &cli.command {
        clap_complete::generate(
            *shell,
            &mut Cli::command(),
            "outpost",
            &mut std::io::stdout(),
        );
        return Ok(());
    }
    let client = Client::new(&settings(&cli)?)?;
    let json = cli.json;
    match cli.command {
        Cmd::Agents => agents(&client, json),
        Cmd::Agent { id } => agent(&client, &id, json),
        Cmd::Apps => apps(&client, json),
        Cmd::App { id } => app(&client, &app_id(&id), json),
        Cmd::Tasks { app } => tasks(&client, app.as_deref().map(app_id).as_deref(), json),
        Cmd::Deploy { file, follow } => deploy(&client, &file, &follow),
        Cmd::Scale {
            id,
            instances,
            follow,
        } => {
            let id = app_id(&id);
            change(&client, &id, "scale", &follow, || {
                client.send(
                    "PUT",
                    &format!("/v2/apps{id}"),
                    Some(&json!({ "instances": instances })),
                )
            })
        }
        Cmd::Restart { id, follow } => {
            let id = app_id(&id);
            let q = force_query(&follow);
            change(&client, &id, "restart", &follow, || {
                client.send("POST", &format!("/v2/apps{id}/restart{q}"), None)
            })
        }
        Cmd::Destroy { id, follow } => {
            let id = app_id(&id);
            let q = force_query(&follow);
            change(&client, &id, "destroy", &follow, || {
                client.send("DELETE", &format!("/v2/apps{id}{q}"), None)
            })
        }
        Cmd::Logs {
            task,
            follow,
            tail,
            stderr,
            stdout,
            since,
        } => logs(&client, &task, follow, tail, stderr, stdout, since),
        Cmd::Pull {
            agent,
            image,
            force,
            detach,
            timeout,
        } => {
            let events = if detach {
                None
            } else {
                Some(follow::subscribe(&client, &["outpost_pull_progress"])?)
            };
            let body = json!({ "image": image, "force": force });
            client.send("POST", &format!("/v2/agents/{agent}/pull"), Some(&body))?;
            match events {
                None => {
                    println!("pull {image} on {agent}: sent");
                    Ok(())
                }
                Some(events) => follow::pull(&events, &agent, &image, Duration::from_secs(timeout)),
            }
        }
        Cmd::Drain {
            agent,
            detach,
            timeout,
        } => drain(&client, &agent, detach, Duration::from_secs(timeout)),
        Cmd::Undrain { agent } => {
            client.send("POST", &format!("/v2/agents/{agent}/undrain"), None)?;
            println!("undrain {agent}: taking launches again");
            Ok(())
        }
        Cmd::Events { types } => events(&client, &types, json),
        Cmd::Completions { .. } => Ok(()),
    }
}

/// Marathon's app ids are absolute: `web` is `/web`.
fn app_id(id: &str) -> String {
    if id.starts_with('/') {
        id.to_string()
    } else {
        format!("/{id}")
    }
}

fn print_json(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

fn s(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `used/offered` of one resource.
fn resource(a: &Value, key: &str) -> String {
    let used = a["used"][key].as_f64();
    let offered = a["offered"][key].as_f64();
    match (used, offered) {
        (Some(u), Some(o)) => format!("{}/{}", trim(u), trim(u + o)),
        _ => "-".into(),
    }
}

fn trim(x: f64) -> String {
    let s = format!("{x:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

fn agents(client: &Client, json: bool) -> Result<(), Failure> {
    let agents = client.get("/ui/agents")?;
    let tasks = client.get("/v2/tasks")?;
    if json {
        print_json(&agents);
        return Ok(());
    }
    let count = |id: &Value| {
        tasks["tasks"]
            .as_array()
            .map_or(0, |t| t.iter().filter(|t| t["slaveId"] == *id).count())
    };
    let rows: Vec<Vec<String>> = agents["agents"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| {
            vec![
                s(&a["id"]),
                s(&a["hostname"]),
                s(&a["liveness"]),
                s(&a["last_seen"]),
                resource(a, "cpus"),
                resource(a, "mem"),
                count(&a["id"]).to_string(),
            ]
        })
        .collect();
    print!(
        "{}",
        table::render(
            &[
                "ID",
                "HOST",
                "STATE",
                "LAST SEEN",
                "CPUS",
                "MEM (MiB)",
                "TASKS"
            ],
            &rows
        )
    );
    Ok(())
}

fn agent(client: &Client, id: &str, json: bool) -> Result<(), Failure> {
    let agents = client.get("/ui/agents")?;
    let Some(a) = agents["agents"]
        .as_array()
        .and_then(|l| l.iter().find(|a| a["id"] == id))
        .cloned()
    else {
        return Err(Failure(format!(
            "no agent {id:?} at {} (`outpost agents` lists them)",
            client.base()
        )));
    };
    let tasks: Vec<Value> = client.get("/v2/tasks")?["tasks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|t| t["slaveId"] == id)
        .cloned()
        .collect();
    if json {
        print_json(&json!({ "agent": a, "tasks": tasks }));
        return Ok(());
    }
    let attrs: Vec<String> = a["attributes"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", s(v)))
        .collect();
    println!("id:          {}", s(&a["id"]));
    println!("host:        {}", s(&a["hostname"]));
    println!("state:       {}", s(&a["liveness"]));
    println!("last seen:   {}", s(&a["last_seen"]));
    if !a["unreachable_since"].is_null() {
        println!("unreachable: since {}", s(&a["unreachable_since"]));
    }
    println!(
        "attributes:  {}",
        if attrs.is_empty() {
            "-".into()
        } else {
            attrs.join(", ")
        }
    );
    println!("cpus:        {} used/total", resource(&a, "cpus"));
    println!("mem (MiB):   {} used/total", resource(&a, "mem"));
    println!("disk (MiB):  {} used/total", resource(&a, "disk"));
    println!("free ports:  {}", s(&a["offered"]["ports"]));
    println!("tasks:       {}", tasks.len());
    if !tasks.is_empty() {
        print!("\n{}", task_table(&tasks));
    }
    Ok(())
}

fn apps(client: &Client, json: bool) -> Result<(), Failure> {
    let v = client.get("/v2/apps?embed=apps.counts&embed=apps.deployments")?;
    if json {
        print_json(&v);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = v["apps"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| {
            let deployments = a["deployments"].as_array().map_or(0, Vec::len);
            vec![
                s(&a["id"]),
                s(&a["instances"]),
                s(&a["tasksRunning"]),
                s(&a["tasksHealthy"]),
                s(&a["container"]["docker"]["image"]),
                if deployments > 0 { "deploying" } else { "-" }.to_string(),
            ]
        })
        .collect();
    print!(
        "{}",
        table::render(
            &[
                "ID",
                "INSTANCES",
                "RUNNING",
                "HEALTHY",
                "IMAGE",
                "DEPLOYMENT"
            ],
            &rows
        )
    );
    Ok(())
}

fn app(client: &Client, id: &str, json: bool) -> Result<(), Failure> {
    let v = client.get(&format!("/v2/apps{id}"))?;
    if json {
        print_json(&v);
        return Ok(());
    }
    let a = &v["app"];
    println!("id:          {}", s(&a["id"]));
    println!("image:       {}", s(&a["container"]["docker"]["image"]));
    if !a["cmd"].is_null() {
        println!("cmd:         {}", s(&a["cmd"]));
    }
    println!("resources:   {} cpus, {} MiB", s(&a["cpus"]), s(&a["mem"]));
    println!(
        "instances:   {} ({} staged, {} running, {} healthy)",
        s(&a["instances"]),
        s(&a["tasksStaged"]),
        s(&a["tasksRunning"]),
        s(&a["tasksHealthy"])
    );
    println!("version:     {}", s(&a["version"]));
    let deployments: Vec<String> = a["deployments"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|d| s(&d["id"]))
        .collect();
    if !deployments.is_empty() {
        println!("deployment:  {}", deployments.join(", "));
    }
    if let Some(f) = a.get("lastTaskFailure").filter(|f| !f.is_null()) {
        println!(
            "last failure: {} {} at {}: {}",
            s(&f["taskId"]),
            s(&f["state"]),
            s(&f["timestamp"]),
            s(&f["message"])
        );
    }
    let tasks: Vec<Value> = a["tasks"].as_array().cloned().unwrap_or_default();
    if !tasks.is_empty() {
        print!("\n{}", task_table(&tasks));
    }
    Ok(())
}

fn health(t: &Value) -> String {
    match t["healthCheckResults"][0]["alive"].as_bool() {
        Some(true) => "healthy".into(),
        Some(false) => "unhealthy".into(),
        None => "-".into(),
    }
}

fn task_table(tasks: &[Value]) -> String {
    let rows: Vec<Vec<String>> = tasks
        .iter()
        .map(|t| {
            let ports: Vec<String> = t["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| p.to_string())
                .collect();
            vec![
                s(&t["id"]),
                s(&t["appId"]),
                s(&t["host"]),
                s(&t["state"]),
                if ports.is_empty() {
                    "-".into()
                } else {
                    ports.join(",")
                },
                health(t),
            ]
        })
        .collect();
    table::render(&["ID", "APP", "HOST", "STATE", "PORTS", "HEALTH"], &rows)
}

fn tasks(client: &Client, app: Option<&str>, json: bool) -> Result<(), Failure> {
    let v = match app {
        Some(id) => client.get(&format!("/v2/apps{id}/tasks"))?,
        None => client.get("/v2/tasks")?,
    };
    if json {
        print_json(&v);
        return Ok(());
    }
    let tasks = v["tasks"].as_array().cloned().unwrap_or_default();
    print!("{}", task_table(&tasks));
    Ok(())
}

fn force_query(f: &FollowArgs) -> &'static str {
    if f.force { "?force=true" } else { "" }
}

fn follow_opts(f: &FollowArgs) -> follow::Follow {
    follow::Follow {
        per_host: f.per_host,
        tolerate_failures: f.tolerate_failures,
        timeout: Duration::from_secs(f.timeout),
    }
}

/// Asks for a change of app `id` with `ask` and, unless detached, follows the deployment it
/// starts (subscribed to the events first, so none is missed).
fn change(
    client: &Client,
    id: &str,
    what: &str,
    f: &FollowArgs,
    ask: impl FnOnce() -> Result<(Value, Option<String>), Failure>,
) -> Result<(), Failure> {
    let events = if f.detach {
        None
    } else {
        Some(follow::subscribe(client, follow::FOLLOW_EVENTS)?)
    };
    let (answer, header) = ask()?;
    let deployment = answer["deploymentId"]
        .as_str()
        .map(str::to_string)
        .or_else(|| answer["deployments"][0]["id"].as_str().map(str::to_string))
        .or(header);
    let Some(deployment) = deployment else {
        println!("{what} {id}: nothing to do");
        return Ok(());
    };
    let Some(events) = events else {
        println!("{what} {id}: deployment {deployment} started");
        return Ok(());
    };
    follow::deployment(
        client,
        &events,
        &format!("{what} {id}"),
        id,
        &deployment,
        follow_opts(f),
    )
}

fn deploy(client: &Client, file: &PathBuf, f: &FollowArgs) -> Result<(), Failure> {
    let text = if file.as_os_str() == "-" {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
            .map_err(|e| Failure(format!("standard input: {e}")))?;
        s
    } else {
        std::fs::read_to_string(file).map_err(|e| Failure(format!("{}: {e}", file.display())))?
    };
    let def: Value = serde_json::from_str(&text)
        .map_err(|e| Failure(format!("{}: not JSON: {e}", file.display())))?;
    let Some(id) = def["id"].as_str().map(app_id) else {
        return Err(Failure(format!(
            "{}: the app definition has no \"id\"",
            file.display()
        )));
    };
    let query = force_query(f);
    // PUT creates a missing app and updates an existing one, as Marathon's does.
    change(client, &id, "deploy", f, || {
        client.send("PUT", &format!("/v2/apps{id}{query}"), Some(&def))
    })
}

#[allow(clippy::too_many_arguments)]
fn logs(
    client: &Client,
    task: &str,
    follow: bool,
    tail: Option<u32>,
    stderr: bool,
    stdout: bool,
    since: Option<String>,
) -> Result<(), Failure> {
    let mut q = vec![format!(
        "stream={}",
        if stderr {
            "stderr"
        } else if stdout {
            "stdout"
        } else {
            "both"
        }
    )];
    if let Some(n) = tail {
        q.push(format!("tail={n}"));
    }
    if let Some(t) = since {
        q.push(format!("since={}", t.replace('+', "%2B")));
    }
    if follow {
        q.push("follow=true".into());
    }
    let mut body = client.stream(
        &format!("/v2/tasks/{task}/logs?{}", q.join("&")),
        "text/plain",
    )?;
    let mut out = std::io::stdout().lock();
    let mut buf = [0u8; 16 * 1024];
    loop {
        match std::io::Read::read(&mut body, &mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => {
                // Each piece as it comes: a follow shows lines as they are written.
                if out.write_all(&buf[..n]).and_then(|()| out.flush()).is_err() {
                    return Ok(()); // the reader (a pipe to head) went away
                }
            }
            Err(e) => return Err(Failure(format!("the logs stream of {task} broke: {e}"))),
        }
    }
}

/// Drains `agent` and follows until every task it moved is gone from it and its app is back
/// at its instances.
fn drain(client: &Client, agent: &str, detach: bool, timeout: Duration) -> Result<(), Failure> {
    let (answer, _) = client.send("POST", &format!("/v2/agents/{agent}/drain"), None)?;
    let moved: Vec<String> = answer["moved"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t.as_str().map(str::to_string))
        .collect();
    println!("drain {agent}: moving {} task(s)", moved.len());
    for t in &moved {
        println!("drain {agent}: moving {t}");
    }
    if detach || moved.is_empty() {
        println!("drain {agent}: done");
        return Ok(());
    }
    let started = std::time::Instant::now();
    let mut last = String::new();
    loop {
        let apps = client.get("/v2/apps?embed=apps.tasks&embed=apps.counts")?;
        let list = apps["apps"].as_array().cloned().unwrap_or_default();
        let on_agent = list
            .iter()
            .flat_map(|a| a["tasks"].as_array().cloned().unwrap_or_default())
            .filter(|t| t["slaveId"] == agent && moved.iter().any(|m| t["id"] == m.as_str()))
            .count();
        let short: Vec<String> = list
            .iter()
            .filter(|a| a["tasksRunning"].as_u64() < a["instances"].as_u64())
            .filter_map(|a| a["id"].as_str().map(str::to_string))
            .collect();
        let line = format!(
            "{} of {} moved, {} app(s) below their instances",
            moved.len() - on_agent,
            moved.len(),
            short.len()
        );
        if line != last {
            println!("drain {agent}: {line}");
            last = line;
        }
        if on_agent == 0 && short.is_empty() {
            println!("drain {agent}: done");
            return Ok(());
        }
        if started.elapsed() > timeout {
            return Err(Failure(format!(
                "drain {agent}: the moved tasks are not all replaced after {} s (apps short: {})",
                timeout.as_secs(),
                short.join(", ")
            )));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn events(client: &Client, types: &[String], json: bool) -> Result<(), Failure> {
    let types: Vec<&str> = types.iter().map(String::as_str).collect();
    let rx = follow::subscribe(client, &types)?;
    let mut out = std::io::stdout().lock();
    for (name, v) in rx {
        let line = if json {
            v.to_string()
        } else {
            let kind = v["eventType"].as_str().unwrap_or(&name).to_string();
            let at = v["timestamp"].as_str().unwrap_or("").to_string();
            let mut rest = v.clone();
            if let Some(o) = rest.as_object_mut() {
                o.remove("eventType");
                o.remove("timestamp");
            }
            format!("{at} {kind} {rest}")
        };
        if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
            return Ok(());
        }
    }
    Err(Failure(format!(
        "the event stream from {} ended",
        client.base()
    )))
}
