//! outpost-bridge end to end: the real bridge and agents, real mosquitto and dockerd; the test
//! is a Marathon client (HTTP + JSON) and reads the containers through docker.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::{Value, json};

use outpost_tests::agent::Agent;
use outpost_tests::bridge::Bridge;
use outpost_tests::docker::docker;
use outpost_tests::image::{self, INDEX_BODY};
use outpost_tests::mosquitto::Broker;
use outpost_tests::{http, wait};

const SHORT: Duration = Duration::from_secs(20);
const LONG: Duration = Duration::from_secs(90);

/// A broker, a bridge and agents on it.
struct Fleet {
    agents: Vec<Agent>,
    bridge: Bridge,
    broker: Broker,
}

impl Fleet {
    /// A bridge and one agent per port range.
    fn start(name: &str, ranges: &[(u16, u16)]) -> Self {
        let broker = Broker::start().unwrap();
        let bridge = Bridge::start(&broker.url(), "").unwrap();
        let mut fleet = Self {
            agents: Vec::new(),
            bridge,
            broker,
        };
        for (i, r) in ranges.iter().enumerate() {
            fleet.add_agent(&format!("{name}{i}"), *r);
        }
        fleet
    }

    fn add_agent(&mut self, name: &str, range: (u16, u16)) -> String {
        let id = Agent::unique_id(name);
        self.agents
            .push(Agent::start(&id, &self.broker.url(), range, "").unwrap());
        wait::until(&format!("agent {id} online at the bridge"), SHORT, || {
            let m = self.bridge.json("/metrics");
            let online = m["gauges"]["outpost.agents.online.count"]["value"].as_u64()?;
            (online as usize >= self.agents.len()).then_some(())
        })
        .unwrap();
        id
    }

    fn app(&self, id: &str) -> Value {
        self.bridge.json(&format!("/v2/apps{id}"))["app"].clone()
    }

    /// Waits until app `id` has `n` tasks, all RUNNING and healthy; returns them.
    fn healthy(&self, id: &str, n: usize, timeout: Duration) -> Vec<Value> {
        wait::until(&format!("{n} healthy tasks of {id}"), timeout, || {
            let app = self.app(id);
            let tasks = app["tasks"].as_array()?.clone();
            let ok = tasks.len() == n
                && app["tasksHealthy"] == json!(n)
                && tasks.iter().all(|t| t["state"] == "TASK_RUNNING");
            ok.then_some(tasks)
        })
        .unwrap()
    }

    fn post(&self, body: &Value) {
        let a = self
            .bridge
            .request("POST", "/v2/apps", Some(&body.to_string()))
            .unwrap();
        assert_eq!(a.status, 201, "{}", a.text);
    }
}

/// An app of the test image (httpd on port 80) with a fast HTTP check of `/health`.
fn web_app(id: &str, instances: u32, extra: Value) -> Value {
    let mut app = json!({
        "id": id,
        "cpus": 0.05,
        "mem": 32,
        "instances": instances,
        "container": {
            "type": "DOCKER",
            "docker": { "image": image::TEST_IMAGE, "network": "BRIDGE" },
            "portMappings": [{ "containerPort": 80, "hostPort": 0, "protocol": "tcp" }]
        },
        "healthChecks": [{
            "protocol": "MESOS_HTTP", "path": "/health", "portIndex": 0,
            "gracePeriodSeconds": 0, "intervalSeconds": 1, "timeoutSeconds": 2,
            "delaySeconds": 0, "maxConsecutiveFailures": 2
        }],
        "backoffSeconds": 1,
        "taskKillGracePeriodSeconds": 1
    });
    if let (Some(a), Some(e)) = (app.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            a.insert(k.clone(), v.clone());
        }
    }
    app
}

fn task_ids(tasks: &[Value]) -> Vec<String> {
    let mut ids: Vec<String> = tasks
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

fn page(port: u64) -> Option<String> {
    http::get(&format!("http://127.0.0.1:{port}/"))
        .ok()
        .filter(|r| r.status == 200)
        .map(|r| r.body)
}

fn containers_of(agent: &Agent) -> usize {
    let filter = format!("label=outpost.agent-id={}", agent.id());
    docker(&["ps", "-q", "--filter", &filter])
        .unwrap()
        .lines()
        .count()
}

#[test]
fn the_readme_example_deploys_two_healthy_tasks_with_one_curl() {
    // No internet: nginx:latest is the local stand-in scripts/demo builds, unless a real one
    // is already here (either serves `/`).
    if docker(&["image", "inspect", "nginx:latest"]).is_err() {
        image::build("nginx:latest").unwrap();
    }
    let fleet = Fleet::start("readme", &[(21200, 21219)]);
    let example = std::fs::read_to_string(
        outpost_tests::bin_path::workspace_root().join("docs/examples/nginx.json"),
    )
    .unwrap();
    // The README's command, verbatim.
    let out = std::process::Command::new("curl")
        .args([
            "-sS",
            "-i",
            "-X",
            "POST",
            "-H",
            "Accept: application/json",
            "-H",
            "Content-Type: application/json",
        ])
        .arg(fleet.bridge.url("/v2/apps"))
        .args(["-d", &example])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(text.starts_with("HTTP/1.1 201"), "{text}");
    let lower = text.to_ascii_lowercase();
    assert!(lower.contains("location: /v2/apps/demo-nginx"), "{text}");
    assert!(lower.contains("marathon-deployment-id: "), "{text}");
    let body: Value = serde_json::from_str(text.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(body["id"], "/demo-nginx");
    assert_eq!(body["tasksRunning"], 0);
    assert_eq!(body["deployments"].as_array().unwrap().len(), 1);
    assert_eq!(
        body["container"]["portMappings"][0]["containerPort"], 80,
        "legacy mappings moved"
    );

    let tasks = fleet.healthy("/demo-nginx", 2, LONG);
    let ports: Vec<u64> = tasks
        .iter()
        .map(|t| t["ports"][0].as_u64().unwrap())
        .collect();
    assert_ne!(ports[0], ports[1], "distinct NAT'ed host ports");
    for (t, port) in tasks.iter().zip(&ports) {
        assert!((21200..=21219).contains(port), "{t}");
        assert!(t["startedAt"].as_str().unwrap().ends_with('Z'), "{t}");
        assert!(t["stagedAt"].as_str().unwrap().ends_with('Z'), "{t}");
        assert_eq!(t["healthCheckResults"][0]["alive"], true, "{t}");
        assert!(page(*port).is_some(), "task on {port} answers");
    }
    let all = fleet.bridge.json("/v2/tasks");
    assert_eq!(task_ids(all["tasks"].as_array().unwrap()), task_ids(&tasks));
    // Marathon's text form, as haproxy-marathon-bridge reads it: app, service port, then the
    // running tasks' host:port, tab-separated and sorted.
    let service_port = fleet.app("/demo-nginx")["container"]["portMappings"][0]["servicePort"]
        .as_u64()
        .unwrap();
    let host = tasks[0]["host"].as_str().unwrap();
    let mut addresses: Vec<String> = ports.iter().map(|p| format!("{host}:{p}")).collect();
    addresses.sort();
    let want = format!("demo-nginx\t{service_port}\t{}\t\n", addresses.join("\t"));
    for path in ["/v2/tasks", "/v2/apps/demo-nginx/tasks"] {
        let out = std::process::Command::new("curl")
            .args(["-sS", "-H", "Accept: text/plain"])
            .arg(fleet.bridge.url(path))
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), want, "{path}");
    }
    wait::until("the deployment to finish", SHORT, || {
        (fleet.bridge.json("/v2/deployments") == json!([])).then_some(())
    })
    .unwrap();
    assert_eq!(fleet.bridge.json("/v2/queue"), json!({ "queue": [] }));
}

#[test]
fn scale_kill_and_replace_through_the_api_with_events_on_the_stream() {
    image::ensure().unwrap();
    let fleet = Fleet::start("scale", &[(21220, 21239)]);
    let mut stream = EventStream::open(fleet.bridge.port(), "");
    fleet.post(&web_app("/scale/web", 1, json!({})));
    let first = fleet.healthy("/scale/web", 1, LONG);

    // Scale up the way marathon-python does: PUT ?force=False {"instances": N}.
    let a = fleet
        .bridge
        .request(
            "PUT",
            "/v2/apps/scale/web?force=False",
            Some(r#"{"instances":3}"#),
        )
        .unwrap();
    assert_eq!(a.status, 200, "{}", a.text);
    assert!(a.json()["deploymentId"].is_string() && a.json()["version"].is_string());
    let three = fleet.healthy("/scale/web", 3, LONG);
    assert!(
        task_ids(&three).contains(&task_ids(&first)[0]),
        "scaling keeps the running task"
    );
    let app = fleet.app("/scale/web");
    assert_ne!(
        app["versionInfo"]["lastScalingAt"],
        app["versionInfo"]["lastConfigChangeAt"]
    );

    // Kill one task without scaling: it is replaced by a new one.
    let victim = task_ids(&three)[0].clone();
    let a = fleet
        .bridge
        .request(
            "DELETE",
            &format!("/v2/apps//scale//web/tasks/{victim}"),
            None,
        )
        .unwrap();
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.json()["task"]["id"], victim.as_str());
    let replaced = wait::until("the killed task replaced", LONG, || {
        let tasks = fleet.healthy("/scale/web", 3, LONG);
        (!task_ids(&tasks).contains(&victim)).then_some(tasks)
    })
    .unwrap();
    assert_eq!(replaced.len(), 3);

    // Kill with scale=true: the app shrinks.
    let body = json!({ "ids": [task_ids(&replaced)[0]] }).to_string();
    let a = fleet
        .bridge
        .request("POST", "/v2/tasks/delete?scale=true", Some(&body))
        .unwrap();
    assert_eq!(a.status, 200, "{}", a.text);
    fleet.healthy("/scale/web", 2, LONG);
    assert_eq!(fleet.app("/scale/web")["instances"], 2);
    // Scale down through PUT: the youngest goes.
    let a = fleet
        .bridge
        .request("PUT", "/v2/apps/scale/web", Some(r#"{"instances":1}"#))
        .unwrap();
    assert_eq!(a.status, 200, "{}", a.text);
    fleet.healthy("/scale/web", 1, LONG);
    wait::until("only one container left", SHORT, || {
        (containers_of(&fleet.agents[0]) == 1).then_some(())
    })
    .unwrap();

    // The event stream saw all of it, framed as server-sent events.
    let events = stream.read_until(SHORT, |e| {
        e.iter().filter(|(t, _)| t == "status_update_event").count() >= 8
    });
    assert_eq!(events[0].0, "event_stream_attached");
    let kinds: Vec<&str> = events.iter().map(|(t, _)| t.as_str()).collect();
    for k in [
        "api_post_event",
        "deployment_info",
        "deployment_success",
        "status_update_event",
        "health_status_changed_event",
    ] {
        assert!(kinds.contains(&k), "no {k} in {kinds:?}");
    }
    for (kind, data) in &events {
        assert_eq!(data["eventType"], kind.as_str());
        assert!(data["timestamp"].as_str().unwrap().ends_with('Z'));
    }
    let running = events
        .iter()
        .find(|(t, d)| t == "status_update_event" && d["taskStatus"] == "TASK_RUNNING")
        .unwrap();
    assert_eq!(running.1["appId"], "/scale/web");
    assert!(running.1["slaveId"].is_string() && running.1["host"].is_string());

    // A filtered stream gets only what it asked for; a stream without the Accept header none.
    let mut filtered = EventStream::open(fleet.bridge.port(), "?event_type=deployment_success");
    let a = fleet
        .bridge
        .request("PUT", "/v2/apps/scale/web", Some(r#"{"instances":2}"#))
        .unwrap();
    assert_eq!(a.status, 200);
    let got = filtered.read_until(LONG, |e| !e.is_empty());
    assert!(
        got.iter().all(|(t, _)| t == "deployment_success"),
        "{got:?}"
    );
    let plain = fleet.bridge.get("/v2/events").unwrap();
    assert_eq!(plain.status, 406);

    // Per-app task list, and a kill by host.
    let listed = fleet.bridge.json("/v2/apps/scale/web/tasks")["tasks"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(listed.len(), 2);
    let host = listed[0]["host"].as_str().unwrap().to_string();
    let a = fleet
        .bridge
        .request(
            "DELETE",
            "/v2/apps/scale/web/tasks?host=elsewhere&scale=true",
            None,
        )
        .unwrap();
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(
        fleet.app("/scale/web")["instances"],
        2,
        "no task on that host: nothing killed"
    );
    let a = fleet
        .bridge
        .request(
            "DELETE",
            &format!("/v2/apps/scale/web/tasks?host={host}&scale=true"),
            None,
        )
        .unwrap();
    assert_eq!(a.status, 200, "{}", a.text);
    wait::until("every task on the host killed", LONG, || {
        let app = fleet.app("/scale/web");
        (app["instances"] == 0 && app["tasks"] == json!([])).then_some(())
    })
    .unwrap();

    // The stream stays open with heartbeats while nothing happens.
    stream.wait_heartbeat(SHORT);
}

#[test]
fn a_changed_app_is_replaced_rolling_without_dropping_below_its_healthy_capacity() {
    image::ensure().unwrap();
    let fleet = Fleet::start("roll", &[(21300, 21319)]);
    fleet.post(&web_app("/roll", 2, json!({})));
    let before = task_ids(&fleet.healthy("/roll", 2, LONG));
    let v1 = fleet.app("/roll")["versionInfo"]["lastConfigChangeAt"].clone();
    // A config change (env): every task is replaced; the default upgradeStrategy
    // (minimumHealthCapacity 1, maximumOverCapacity 1) keeps 2 healthy all along.
    let a = fleet
        .bridge
        .request("PUT", "/v2/apps/roll", Some(r#"{"env":{"COLOUR":"blue"}}"#))
        .unwrap();
    assert_eq!(a.status, 200, "{}", a.text);
    let mut lowest = u64::MAX;
    let after = wait::until("every task replaced", LONG, || {
        let app = fleet.app("/roll");
        let healthy = app["tasksHealthy"].as_u64()?;
        lowest = lowest.min(healthy);
        let tasks = app["tasks"].as_array()?.clone();
        let replaced = tasks.len() == 2
            && healthy == 2
            && app["deployments"] == json!([])
            && task_ids(&tasks).iter().all(|t| !before.contains(t));
        replaced.then_some(app)
    })
    .unwrap();
    assert!(
        lowest >= 2,
        "healthy dropped to {lowest} during the upgrade"
    );
    assert_ne!(after["versionInfo"]["lastConfigChangeAt"], v1);
    assert_eq!(after["env"]["COLOUR"], "blue");
    for t in after["tasks"].as_array().unwrap() {
        assert_eq!(t["version"], after["versionInfo"]["lastConfigChangeAt"]);
    }
    // /restart replaces them again, with a new version.
    let a = fleet
        .bridge
        .request("POST", "/v2/apps/roll/restart", None)
        .unwrap();
    assert_eq!(a.status, 200, "{}", a.text);
    let ids = task_ids(after["tasks"].as_array().unwrap());
    wait::until("the restart done", LONG, || {
        let app = fleet.app("/roll");
        let tasks = app["tasks"].as_array()?.clone();
        (tasks.len() == 2
            && app["tasksHealthy"] == 2
            && app["deployments"] == json!([])
            && task_ids(&tasks).iter().all(|t| !ids.contains(t)))
        .then_some(())
    })
    .unwrap();
    wait::until("old containers removed", SHORT, || {
        (containers_of(&fleet.agents[0]) == 2).then_some(())
    })
    .unwrap();
}

#[test]
fn a_failing_health_check_restarts_the_task_and_is_reported() {
    image::ensure().unwrap();
    let fleet = Fleet::start("sick", &[(21240, 21249)]);
    fleet.post(&web_app("/sick", 1, json!({})));
    let before = fleet.healthy("/sick", 1, LONG).remove(0);
    let task = before["id"].as_str().unwrap().to_string();
    let filter = format!("label=outpost.task-id={task}");
    let ctr = docker(&["ps", "-q", "--filter", &filter]).unwrap();
    image::fail_health(ctr.trim()).unwrap();
    let app = wait::until("the failure reported", LONG, || {
        let app = fleet.app("/sick");
        app["lastTaskFailure"]["taskId"].is_string().then_some(app)
    })
    .unwrap();
    assert_eq!(app["lastTaskFailure"]["taskId"], task.as_str());
    assert!(
        app["lastTaskFailure"]["timestamp"]
            .as_str()
            .unwrap()
            .ends_with('Z')
    );
    // The agent restarted the container (a fresh one serves /health again): healthy again,
    // started later than before.
    let after = wait::until("healthy again after the restart", LONG, || {
        let t = fleet.healthy("/sick", 1, LONG).remove(0);
        (t["startedAt"] != before["startedAt"]).then_some(t)
    })
    .unwrap();
    assert!(after["healthCheckResults"][0]["alive"] == true);
}

#[test]
fn a_dead_agent_s_tasks_go_unreachable_then_are_replaced_elsewhere() {
    image::ensure().unwrap();
    let mut fleet = Fleet::start("dead", &[(21250, 21259)]);
    let app = web_app(
        "/dead",
        1,
        json!({ "unreachableStrategy": { "inactiveAfterSeconds": 3, "expungeAfterSeconds": 600 } }),
    );
    fleet.post(&app);
    let first = fleet.healthy("/dead", 1, LONG).remove(0);
    let second_agent = fleet.add_agent("dead-b", (21260, 21269));
    fleet.agents[0].kill(); // SIGKILL: the broker publishes its last will
    let unreachable = wait::until("the task UNREACHABLE", SHORT, || {
        let tasks = fleet.bridge.json("/v2/tasks")["tasks"].as_array()?.clone();
        tasks
            .iter()
            .find(|t| t["id"] == first["id"] && t["state"] == "TASK_UNREACHABLE")
            .cloned()
    })
    .unwrap();
    assert_eq!(unreachable["slaveId"], first["slaveId"]);
    let replacement = wait::until("a replacement on the other agent", LONG, || {
        let app = fleet.app("/dead");
        app["tasks"]
            .as_array()?
            .iter()
            .find(|t| t["slaveId"] == second_agent.as_str() && t["state"] == "TASK_RUNNING")
            .cloned()
    })
    .unwrap();
    assert_eq!(
        page(replacement["ports"][0].as_u64().unwrap()).as_deref(),
        Some(INDEX_BODY)
    );
    // The dead agent comes back: the stale task does not come back with it.
    fleet.agents[0].restart().unwrap();
    wait::until("only the replacement left", LONG, || {
        let tasks = fleet.bridge.json("/v2/tasks")["tasks"].as_array()?.clone();
        (tasks.len() == 1 && tasks[0]["id"] == replacement["id"]).then_some(())
    })
    .unwrap();
    wait::until("no container on the returned agent", LONG, || {
        (containers_of(&fleet.agents[0]) == 0).then_some(())
    })
    .unwrap();
}

#[test]
fn a_restarted_bridge_keeps_its_apps_and_tasks_without_duplicates() {
    image::ensure().unwrap();
    let mut fleet = Fleet::start("restart", &[(21270, 21289)]);
    fleet.post(&web_app("/keep", 2, json!({})));
    let before = task_ids(&fleet.healthy("/keep", 2, LONG));
    let reconciled = |log: String| log.matches("reconciling its tasks").count();
    let reconciled_before = reconciled(fleet.bridge.log());
    fleet.bridge.kill();
    fleet.bridge.restart().unwrap();
    let after = task_ids(&fleet.healthy("/keep", 2, LONG));
    assert_eq!(before, after);
    // Reconciliation after the restart launches nothing new and kills nothing.
    wait::until("the restarted bridge reconciled its agent", SHORT, || {
        (reconciled(fleet.bridge.log()) > reconciled_before).then_some(())
    })
    .unwrap();
    let again = task_ids(&fleet.healthy("/keep", 2, LONG));
    assert_eq!(before, again);
    assert_eq!(containers_of(&fleet.agents[0]), 2);
    let app = fleet.app("/keep");
    assert_eq!(app["instances"], 2);
    // Still in charge: a scale after the restart works.
    let a = fleet
        .bridge
        .request("PUT", "/v2/apps/keep", Some(r#"{"instances":1}"#))
        .unwrap();
    assert_eq!(a.status, 200, "{}", a.text);
    fleet.healthy("/keep", 1, LONG);
}

#[test]
fn bad_requests_get_marathon_errors_and_the_bridge_keeps_running() {
    let broker = Broker::start().unwrap();
    let bridge = Bridge::start(&broker.url(), "").unwrap();
    // Invalid app: 422 with the paths of the bad fields and the values.
    let a = bridge
        .request(
            "POST",
            "/v2/apps",
            Some(r#"{"id":"Bad_Id","cpus":-1,"container":{"docker":{"image":"x"}}}"#),
        )
        .unwrap();
    assert_eq!(a.status, 422, "{}", a.text);
    let body = a.json();
    assert_eq!(body["message"], "Object is not valid");
    let paths: Vec<&str> = body["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["path"].as_str().unwrap())
        .collect();
    assert!(
        paths.contains(&"/id") && paths.contains(&"/cpus"),
        "{paths:?}"
    );
    assert!(
        body["details"][0]["errors"][0]
            .as_str()
            .unwrap()
            .contains("Bad_Id")
    );
    // Wrong type: the path of the field.
    let a = bridge
        .request("POST", "/v2/apps", Some(r#"{"id":"a","instances":"two"}"#))
        .unwrap();
    assert_eq!(a.status, 422);
    assert_eq!(a.json()["details"][0]["path"], "/instances");
    // Not JSON at all: 400.
    let a = bridge
        .request("POST", "/v2/apps", Some("{not json"))
        .unwrap();
    assert_eq!(a.status, 400);
    assert_eq!(a.json()["message"], "Invalid JSON");
    // Unknown app: 404 with a message.
    let a = bridge.get("/v2/apps/nope").unwrap();
    assert_eq!(a.status, 404);
    assert!(a.json()["message"].as_str().unwrap().contains("/nope"));
    // A bad boolean names the parameter.
    let a = bridge
        .request("DELETE", "/v2/apps/nope?force=maybe", None)
        .unwrap();
    assert_eq!(a.status, 400);
    assert!(a.text.contains("force"));
    // A deployment in progress (no agent: it cannot finish) locks the app: 409, then force.
    let app = web_app("/locked", 1, json!({}));
    let a = bridge
        .request("POST", "/v2/apps", Some(&app.to_string()))
        .unwrap();
    assert_eq!(a.status, 201);
    let a = bridge
        .request("PUT", "/v2/apps/locked", Some(r#"{"instances":2}"#))
        .unwrap();
    assert_eq!(a.status, 409, "{}", a.text);
    assert!(a.json()["deployments"][0]["id"].is_string());
    let a = bridge
        .request(
            "PUT",
            "/v2/apps/locked?force=true",
            Some(r#"{"instances":2}"#),
        )
        .unwrap();
    assert_eq!(a.status, 200, "{}", a.text);
    // The same id twice: 409.
    let a = bridge
        .request("POST", "/v2/apps", Some(&app.to_string()))
        .unwrap();
    assert_eq!(a.status, 409);
    // The waiting instances are in the queue; the deployment is listed, and can be cancelled.
    let q = bridge.json("/v2/queue");
    assert_eq!(q["queue"][0]["count"], 2);
    assert_eq!(q["queue"][0]["app"]["id"], "/locked");
    let deployments = bridge.json("/v2/deployments");
    let d = deployments[0]["id"].as_str().unwrap().to_string();
    assert_eq!(deployments[0]["affectedApps"], json!(["/locked"]));
    let a = bridge
        .request("DELETE", &format!("/v2/deployments/{d}?force=true"), None)
        .unwrap();
    assert_eq!(a.status, 202);
    assert_eq!(bridge.json("/v2/deployments"), json!([]));
    // Double slashes in app ids collapse.
    assert_eq!(bridge.json("/v2/apps//locked")["app"]["id"], "/locked");
    // embed and filters.
    let apps = bridge.json("/v2/apps?embed=apps.tasks&embed=apps.lastTaskFailure&id=lock");
    assert_eq!(apps["apps"][0]["tasks"], json!([]));
    assert_eq!(bridge.json("/v2/apps?id=zzz")["apps"], json!([]));
    // The small endpoints.
    assert_eq!(bridge.get("/ping").unwrap().text, "pong");
    assert_eq!(bridge.json("/v2/info")["name"], "marathon");
    assert!(
        bridge.json("/v2/leader")["leader"]
            .as_str()
            .unwrap()
            .ends_with(&format!(":{}", bridge.port()))
    );
    assert!(
        bridge.json("/metrics")["gauges"]["service.mesosphere.marathon.app.count"]["value"]
            .is_u64()
    );
    // Delete the app: gone.
    let a = bridge
        .request("DELETE", "/v2/apps/locked?force=true", None)
        .unwrap();
    assert_eq!(a.status, 200, "{}", a.text);
    wait::until("the app removed", SHORT, || {
        (bridge.get("/v2/apps/locked").ok()?.status == 404).then_some(())
    })
    .unwrap();
}

#[test]
fn the_marathon_python_client_works_unchanged() {
    image::ensure().unwrap();
    let fleet = Fleet::start("py", &[(21290, 21299)]);
    run_client(&fleet, "marathon_python.py", "marathon-python: ok");
}

/// Runs the client script `tests/clients/{script}` (marathon-python, unchanged, in the test
/// venv) against the fleet's bridge; it must succeed and print `ok_line`.
fn run_client(fleet: &Fleet, script: &str, ok_line: &str) {
    let path = outpost_tests::bin_path::workspace_root()
        .join("tests/clients")
        .join(script);
    let out = std::process::Command::new(outpost_tests::bin_path::client_python())
        .arg(path)
        .arg(fleet.bridge.url(""))
        .arg(image::TEST_IMAGE)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains(ok_line), "{stdout}");
}

/// A `/v2/events` connection read line by line as server-sent events.
struct EventStream {
    reader: BufReader<TcpStream>,
    events: Vec<(String, Value)>,
    /// Comment lines (`:`), the stream's heartbeats.
    heartbeats: usize,
    /// The `event:` line last read.
    kind: String,
}

impl EventStream {
    fn open(port: u16, query: &str) -> Self {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        write!(
            s,
            "GET /v2/events{query} HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n"
        )
        .unwrap();
        s.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let mut reader = BufReader::new(s);
        let mut status = String::new();
        reader.read_line(&mut status).unwrap();
        assert!(status.starts_with("HTTP/1.1 200"), "{status}");
        let mut headers = String::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            if line == "\r\n" {
                break;
            }
            headers.push_str(&line.to_ascii_lowercase());
        }
        assert!(
            headers.contains("content-type: text/event-stream"),
            "{headers}"
        );
        Self {
            reader,
            events: Vec::new(),
            heartbeats: 0,
            kind: String::new(),
        }
    }

    /// Reads what has arrived (the socket has a short read timeout).
    fn pump(&mut self) {
        loop {
            let mut line = String::new();
            match self.reader.read_line(&mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            // Chunked transfer: chunk-size lines are hex digits and match nothing below.
            let l = line.trim_end();
            if l.starts_with(':') {
                self.heartbeats += 1;
            }
            if let Some(k) = l.strip_prefix("event: ").or(l.strip_prefix("event:")) {
                self.kind = k.trim().to_string();
            } else if let Some(d) = l.strip_prefix("data: ").or(l.strip_prefix("data:")) {
                self.events
                    .push((self.kind.clone(), serde_json::from_str(d.trim()).unwrap()));
            }
        }
    }

    /// Reads events until `done(events)` holds; returns all read so far.
    fn read_until(
        &mut self,
        timeout: Duration,
        done: impl Fn(&[(String, Value)]) -> bool,
    ) -> Vec<(String, Value)> {
        wait::until("events on the stream", timeout, || {
            self.pump();
            done(&self.events).then_some(())
        })
        .unwrap();
        self.events.clone()
    }

    /// Reads until one more heartbeat arrives.
    fn wait_heartbeat(&mut self, timeout: Duration) {
        let before = self.heartbeats;
        wait::until("a heartbeat on the stream", timeout, || {
            self.pump();
            (self.heartbeats > before).then_some(())
        })
        .unwrap();
    }
}

#[test]
fn a_queue_delay_reset_launches_a_crash_looping_app_at_once_and_pods_answer_unsupported() {
    image::ensure().unwrap();
    let fleet = Fleet::start("delay", &[(21240, 21249)]);
    // Every launch is refused by the agent (its policy allows no privileged container): the
    // bridge's own launch backoff, long here, keeps the app waiting in the queue. (A container
    // that exits is restarted by its agent, under the agent's backoff, not the queue's.)
    let app = json!({
        "id": "/crashy", "cpus": 0.05, "mem": 16, "instances": 1,
        "container": { "type": "DOCKER",
                       "docker": { "image": image::TEST_IMAGE, "privileged": true } },
        "backoffSeconds": 300, "maxLaunchDelaySeconds": 300
    });
    fleet.post(&app);
    let failure = |fleet: &Fleet| {
        let a = fleet.bridge.json("/v2/apps/crashy");
        a["app"]["lastTaskFailure"]["taskId"]
            .as_str()
            .map(str::to_string)
    };
    let first = wait::until("the first failure", LONG, || failure(&fleet))
        .unwrap_or_else(|e| panic!("{e}: {}", fleet.bridge.get("/v2/apps/crashy").unwrap().text));
    let waiting = wait::until("the app delayed in the queue", SHORT, || {
        let q = fleet.bridge.json("/v2/queue");
        let item = q["queue"].as_array()?.first()?.clone();
        (item["delay"]["timeLeftSeconds"].as_u64()? > 200).then_some(item)
    })
    .unwrap();
    assert_eq!(waiting["app"]["id"], "/crashy");
    assert_eq!(waiting["count"], 1);
    // The agent's offer fits (it is its policy that refuses): processed and used, best effort.
    let offers = &waiting["processedOffersSummary"];
    assert_eq!(offers["processedOffersCount"], 1, "{offers}");
    assert_eq!(offers["unusedOffersCount"], 0, "{offers}");
    assert!(offers["lastUsedOfferAt"].is_string(), "{offers}");
    assert_eq!(
        offers["rejectSummaryLastOffers"].as_array().unwrap().len(),
        6
    );

    let reset = fleet
        .bridge
        .request("DELETE", "/v2/queue/crashy/delay", None)
        .unwrap();
    assert_eq!(reset.status, 204, "{}", reset.text);
    // Launched again at once (not in 300 s): a new task fails, and the backoff starts over.
    let second = wait::until("a new task after the reset", SHORT, || {
        failure(&fleet).filter(|t| *t != first)
    })
    .unwrap();
    assert_ne!(second, first);

    // An app that waits for nothing is not in the queue: Marathon's 404.
    let mut steady = app.clone();
    steady["id"] = json!("/steady");
    steady["instances"] = json!(0);
    fleet.post(&steady);
    let r = fleet
        .bridge
        .request("DELETE", "/v2/queue/steady/delay", None)
        .unwrap();
    assert_eq!(r.status, 404);
    assert_eq!(
        r.json()["message"],
        "Application /steady not found in tasks queue."
    );

    // Pods: unsupported, as a Marathon client asks (HEAD) and as it would call.
    for method in [&["-I"][..], &["-X", "GET"], &["-X", "POST"]] {
        let out = std::process::Command::new("curl")
            .args([
                "-s",
                "--max-time",
                "10",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
            ])
            .args(method)
            .arg(fleet.bridge.url("/v2/pods"))
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "404", "{method:?}");
    }
    let pods = fleet.bridge.get("/v2/pods/web").unwrap();
    assert_eq!(pods.status, 404);
    assert!(
        pods.text.contains("pods are not supported"),
        "{}",
        pods.text
    );
}

/// A request that must answer `status`; its JSON.
fn expect(fleet: &Fleet, method: &str, path: &str, body: Option<Value>, status: u16) -> Value {
    let a = fleet
        .bridge
        .request(method, path, body.map(|b| b.to_string()).as_deref())
        .unwrap();
    assert_eq!(a.status, status, "{method} {path}: {}", a.text);
    serde_json::from_str(&a.text).unwrap_or(Value::Null)
}

/// Waits until no deployment runs.
fn no_deployments(fleet: &Fleet, timeout: Duration) {
    wait::until("no deployment running", timeout, || {
        (fleet.bridge.json("/v2/deployments") == json!([])).then_some(())
    })
    .unwrap();
}

#[test]
fn a_group_of_two_dependent_apps_deploys_in_order_scales_updates_whole_and_is_deleted_at_once() {
    image::ensure().unwrap();
    let fleet = Fleet::start("grp", &[(21740, 21759)]);
    let db = web_app("db", 1, json!({}));
    let web = web_app("web", 1, json!({ "dependencies": ["db"] }));
    let group = json!({ "id": "/shop", "apps": [web, db] });
    let created = expect(&fleet, "POST", "/v2/groups", Some(group.clone()), 201);
    let deployment = created["deploymentId"].as_str().unwrap().to_string();
    // One deployment of both apps, the dependency first.
    let plans = fleet.bridge.json("/v2/deployments");
    assert_eq!(plans.as_array().unwrap().len(), 1, "{plans}");
    assert_eq!(plans[0]["id"], json!(deployment));
    assert_eq!(plans[0]["affectedApps"], json!(["/shop/db", "/shop/web"]));
    assert_eq!(plans[0]["totalSteps"], json!(2));
    assert_eq!(plans[0]["steps"][0]["actions"][0]["app"], json!("/shop/db"));
    let again = fleet
        .bridge
        .request("POST", "/v2/groups", Some(&group.to_string()))
        .unwrap();
    assert_eq!(again.status, 409, "{}", again.text);
    let db_tasks = fleet.healthy("/shop/db", 1, LONG);
    let web_tasks = fleet.healthy("/shop/web", 1, LONG);
    // The dependant's task was staged after the dependency's first passed check.
    let db_healthy = db_tasks[0]["healthCheckResults"][0]["firstSuccess"]
        .as_str()
        .unwrap()
        .to_string();
    let web_staged = web_tasks[0]["stagedAt"].as_str().unwrap().to_string();
    assert!(
        web_staged >= db_healthy,
        "web staged {web_staged}, db healthy {db_healthy}"
    );
    assert_eq!(fleet.app("/shop/web")["dependencies"], json!(["/shop/db"]));
    no_deployments(&fleet, SHORT);
    // The tree, and Marathon's embeds.
    let root = fleet.bridge.json("/v2/groups");
    assert_eq!(root["id"], json!("/"));
    assert_eq!(root["groups"][0]["id"], json!("/shop"));
    assert_eq!(root["groups"][0]["apps"].as_array().unwrap().len(), 2);
    let shop = fleet
        .bridge
        .json("/v2/groups/shop?embed=group.apps&embed=group.apps.tasks&embed=group.apps.counts");
    assert!(shop.get("groups").is_none(), "not embedded: {shop}");
    let apps = shop["apps"].as_array().unwrap();
    assert!(
        apps.iter()
            .all(|a| a["tasks"].as_array().unwrap().len() == 1 && a["tasksHealthy"] == json!(1))
    );
    assert_eq!(
        expect(&fleet, "GET", "/v2/groups/nope", None, 404)["message"],
        json!("Group '/nope' does not exist")
    );
    // Scale by 2.
    expect(
        &fleet,
        "PUT",
        "/v2/groups/shop",
        Some(json!({ "scaleBy": 2 })),
        200,
    );
    fleet.healthy("/shop/db", 2, LONG);
    fleet.healthy("/shop/web", 2, LONG);
    no_deployments(&fleet, SHORT);
    // A dry run answers the plan and changes nothing.
    let changed_web = web_app(
        "web",
        1,
        json!({ "dependencies": ["db"], "env": { "COLOR": "blue" } }),
    );
    let whole = json!({ "apps": [web_app("db", 1, json!({})), changed_web] });
    let dry = expect(
        &fleet,
        "PUT",
        "/v2/groups/shop?dryRun=true",
        Some(whole.clone()),
        200,
    );
    let actions: Vec<Value> = dry["steps"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["actions"].as_array().unwrap().clone())
        .collect();
    assert!(
        actions.contains(&json!({ "action": "ScaleApplication", "app": "/shop/db" })),
        "{dry}"
    );
    assert!(
        actions.contains(&json!({ "action": "RestartApplication", "app": "/shop/web" })),
        "{dry}"
    );
    assert_eq!(fleet.app("/shop/web")["instances"], json!(2));
    assert_eq!(fleet.bridge.json("/v2/deployments"), json!([]));
    // The whole group updated: web replaced with the new env, db scaled back.
    let old_web = task_ids(&fleet.healthy("/shop/web", 2, SHORT));
    expect(&fleet, "PUT", "/v2/groups/shop", Some(whole), 200);
    let new_web = fleet.healthy("/shop/web", 1, LONG);
    assert!(!old_web.contains(&task_ids(&new_web)[0]), "replaced");
    assert_eq!(fleet.app("/shop/web")["env"]["COLOR"], json!("blue"));
    fleet.healthy("/shop/db", 1, LONG);
    no_deployments(&fleet, SHORT);
    // An app left out of a whole update goes.
    expect(
        &fleet,
        "PUT",
        "/v2/groups/shop",
        Some(json!({ "apps": [web_app("db", 1, json!({}))] })),
        200,
    );
    wait::until("web removed", LONG, || {
        (fleet.bridge.get("/v2/apps/shop/web").ok()?.status == 404).then_some(())
    })
    .unwrap();
    no_deployments(&fleet, LONG);
    // Bad ids and clashes are Marathon's 422 naming the field.
    let bad = expect(
        &fleet,
        "PUT",
        "/v2/groups/shop",
        Some(json!({ "apps": [web_app("/elsewhere/x", 1, json!({}))] })),
        422,
    );
    assert_eq!(bad["details"][0]["path"], json!("/apps(0)/id"), "{bad}");
    let clash = expect(
        &fleet,
        "POST",
        "/v2/groups",
        Some(json!({ "id": "/shop/db/sub" })),
        422,
    );
    assert!(
        clash
            .to_string()
            .contains("may not have the same identifier"),
        "{clash}"
    );
    // Deleted in one deployment: every container gone.
    expect(
        &fleet,
        "PUT",
        "/v2/groups/shop",
        Some(json!({ "scaleBy": 2 })),
        200,
    );
    fleet.healthy("/shop/db", 2, LONG);
    let gone = expect(&fleet, "DELETE", "/v2/groups/shop", None, 200);
    assert!(gone["deploymentId"].is_string());
    let plans = fleet.bridge.json("/v2/deployments");
    assert!(
        plans.as_array().unwrap().len() == 1,
        "one deployment: {plans}"
    );
    assert_eq!(plans[0]["affectedApps"], json!(["/shop/db"]));
    wait::until("the group's containers gone", LONG, || {
        (containers_of(&fleet.agents[0]) == 0
            && fleet.bridge.get("/v2/groups/shop").ok()?.status == 404)
            .then_some(())
    })
    .unwrap();
    assert_eq!(fleet.bridge.json("/v2/apps")["apps"], json!([]));
}

#[test]
fn versions_roll_back_batch_put_and_patch_change_apps_and_label_selectors_filter() {
    image::ensure().unwrap();
    let fleet = Fleet::start("ver", &[(21760, 21779)]);
    fleet.post(&web_app(
        "/ver/a",
        1,
        json!({ "env": { "COLOR": "red" }, "labels": { "tier": "front" } }),
    ));
    let first = fleet.healthy("/ver/a", 1, LONG);
    let v1 = fleet.app("/ver/a")["version"].as_str().unwrap().to_string();
    no_deployments(&fleet, SHORT);
    // PATCH: only the given fields change.
    expect(
        &fleet,
        "PATCH",
        "/v2/apps/ver/a",
        Some(json!({ "env": { "COLOR": "blue" } })),
        200,
    );
    let second = fleet.healthy("/ver/a", 1, LONG);
    assert_ne!(
        task_ids(&first),
        task_ids(&second),
        "a config change replaces the task"
    );
    let app = fleet.app("/ver/a");
    assert_eq!(app["env"]["COLOR"], json!("blue"));
    assert_eq!(app["labels"]["tier"], json!("front"), "kept");
    assert_eq!(app["versionInfo"]["lastConfigChangeAt"], app["version"]);
    no_deployments(&fleet, SHORT);
    let versions = fleet.bridge.json("/v2/apps/ver/a/versions")["versions"].clone();
    assert_eq!(versions.as_array().unwrap().len(), 2, "{versions}");
    assert_eq!(versions[1], json!(v1), "newest first");
    let old = fleet.bridge.json(&format!("/v2/apps/ver/a/versions/{v1}"));
    assert_eq!(old["env"]["COLOR"], json!("red"));
    assert_eq!(old["version"], json!(v1));
    // Back to the first version: its container runs with the old env.
    let back = expect(
        &fleet,
        "PUT",
        "/v2/apps/ver/a",
        Some(json!({ "version": v1 })),
        200,
    );
    assert!(back["deploymentId"].is_string());
    let third = wait::until("the rolled-back task", LONG, || {
        let tasks = fleet.healthy("/ver/a", 1, LONG);
        (!task_ids(&second).contains(&task_ids(&tasks)[0])).then_some(tasks)
    })
    .unwrap();
    assert_eq!(fleet.app("/ver/a")["env"]["COLOR"], json!("red"));
    let env = docker(&[
        "ps",
        "-q",
        "--filter",
        &format!("label=outpost.task-id={}", third[0]["id"].as_str().unwrap()),
    ])
    .unwrap();
    let inspect = docker(&["inspect", "--format", "{{json .Config.Env}}", env.trim()]).unwrap();
    assert!(inspect.contains("COLOR=red"), "{inspect}");
    let mixed = expect(
        &fleet,
        "PUT",
        "/v2/apps/ver/a",
        Some(json!({ "version": v1, "cpus": 1 })),
        422,
    );
    assert!(
        mixed
            .to_string()
            .contains("'version' field may only be combined"),
        "{mixed}"
    );
    expect(
        &fleet,
        "GET",
        "/v2/apps/ver/a/versions/2001-01-01T00:00:00.000Z",
        None,
        404,
    );
    no_deployments(&fleet, SHORT);
    // Batch PUT: one new app and a scale of the other, one deployment.
    let batch = json!([
        web_app("/ver/b", 1, json!({ "labels": { "tier": "back" } })),
        { "id": "/ver/a", "instances": 2 },
    ]);
    let d = expect(&fleet, "PUT", "/v2/apps", Some(batch), 200);
    let plans = fleet.bridge.json("/v2/deployments");
    assert_eq!(plans.as_array().unwrap().len(), 1, "{plans}");
    assert_eq!(plans[0]["id"], d["deploymentId"]);
    assert_eq!(plans[0]["affectedApps"], json!(["/ver/a", "/ver/b"]));
    fleet.healthy("/ver/a", 2, LONG);
    fleet.healthy("/ver/b", 1, LONG);
    no_deployments(&fleet, SHORT);
    // partialUpdate=false: the body is the whole app (labels left out are gone).
    let full = web_app("/ver/b", 1, json!({}));
    expect(
        &fleet,
        "PUT",
        "/v2/apps/ver/b?partialUpdate=false",
        Some(full),
        200,
    );
    wait::until("b without labels", SHORT, || {
        (fleet.app("/ver/b")["labels"] == json!({})).then_some(())
    })
    .unwrap();
    no_deployments(&fleet, LONG);
    expect(
        &fleet,
        "PATCH",
        "/v2/apps/ver/b",
        Some(json!({ "labels": { "tier": "back", "team": "x" } })),
        200,
    );
    // Label selectors.
    let ids = |q: &str| -> Vec<String> {
        let apps = fleet.bridge.json(&format!("/v2/apps?label={q}"))["apps"].clone();
        apps.as_array()
            .unwrap()
            .iter()
            .map(|a| a["id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(ids("tier==front"), vec!["/ver/a"]);
    assert_eq!(ids("tier!=front"), vec!["/ver/b"]);
    assert_eq!(ids("tier%20in%20(front,back)"), vec!["/ver/a", "/ver/b"]);
    assert_eq!(ids("tier%20notin%20(back)"), vec!["/ver/a"]);
    assert_eq!(ids("team"), vec!["/ver/b"]);
    assert_eq!(ids("tier==back,team"), vec!["/ver/b"]);
    let bad = expect(&fleet, "GET", "/v2/apps?label=tier%20in%20front", None, 400);
    assert!(bad["message"].as_str().unwrap().contains("label"), "{bad}");
    // taskStats.
    let stats = fleet.bridge.json("/v2/apps/ver/a?embed=app.taskStats")["app"]["taskStats"].clone();
    assert_eq!(
        stats["totalSummary"]["stats"]["counts"]["running"],
        json!(2),
        "{stats}"
    );
    assert!(
        stats["totalSummary"]["stats"]["lifeTime"]["averageSeconds"]
            .as_f64()
            .unwrap()
            >= 0.0
    );
}

#[test]
fn the_marathon_python_client_drives_groups_and_versions_unchanged() {
    image::ensure().unwrap();
    let fleet = Fleet::start("pyg", &[(21780, 21799)]);
    run_client(&fleet, "marathon_groups.py", "marathon-python groups: ok");
}

#[test]
fn http_callbacks_get_every_event_and_a_dead_one_is_dropped_after_its_limit() {
    image::ensure().unwrap();
    let fleet = Fleet::start("cb", &[(21800, 21809)]);
    let live = outpost_tests::callback::CallbackServer::start().unwrap();
    let url = live.url("/events");
    let sub = expect(
        &fleet,
        "POST",
        &format!("/v2/eventSubscriptions?callbackUrl={url}"),
        None,
        200,
    );
    assert_eq!(sub["eventType"], json!("subscribe_event"));
    assert_eq!(sub["callbackUrl"], json!(url));
    // Bad URLs are refused naming the value.
    for bad in ["ftp://127.0.0.1/x", "nonsense", "http:///nohost"] {
        let e = expect(
            &fleet,
            "POST",
            &format!("/v2/eventSubscriptions?callbackUrl={bad}"),
            None,
            422,
        );
        assert!(e.to_string().contains(bad), "{e}");
    }
    expect(&fleet, "POST", "/v2/eventSubscriptions", None, 400);
    // A subscriber nobody answers for.
    let dead = format!(
        "http://127.0.0.1:{}/gone",
        outpost_tests::net::free_port().unwrap()
    );
    expect(
        &fleet,
        "POST",
        &format!("/v2/eventSubscriptions?callbackUrl={dead}"),
        None,
        200,
    );
    // An https one whose certificate the bridge does not trust (system CAs only): every
    // delivery fails its handshake, so it is dropped too.
    let secure = outpost_tests::callback::CallbackServer::start_tls().unwrap();
    let untrusted = secure.url("/tls");
    expect(
        &fleet,
        "POST",
        &format!("/v2/eventSubscriptions?callbackUrl={untrusted}"),
        None,
        200,
    );
    let mut urls = vec![url.clone(), dead.clone(), untrusted.clone()];
    urls.sort();
    assert_eq!(
        fleet.bridge.json("/v2/eventSubscriptions"),
        json!({ "callbackUrls": urls })
    );
    // A deploy: its status updates reach the live callback as Marathon's events.
    fleet.post(&web_app("/cb/web", 1, json!({})));
    let task = fleet.healthy("/cb/web", 1, LONG)[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    wait::until("the task's TASK_RUNNING at the callback", SHORT, || {
        live.bodies()
            .iter()
            .any(|b| {
                b["eventType"] == "status_update_event"
                    && b["taskId"] == json!(task)
                    && b["taskStatus"] == "TASK_RUNNING"
                    && b["appId"] == "/cb/web"
            })
            .then_some(())
    })
    .unwrap();
    assert!(
        live.bodies()
            .iter()
            .all(|b| !b["eventType"].as_str().unwrap().starts_with("outpost_")),
        "Outpost's own events are not sent"
    );
    // The dead one fails event after event (each after its retries) and is dropped.
    wait::until("the dead callback dropped", LONG, || {
        (fleet.bridge.json("/v2/eventSubscriptions") == json!({ "callbackUrls": [url] }))
            .then_some(())
    })
    .unwrap();
    wait::until("its unsubscribe_event at the live one", SHORT, || {
        live.bodies()
            .iter()
            .any(|b| b["eventType"] == "unsubscribe_event" && b["callbackUrl"] == json!(dead))
            .then_some(())
    })
    .unwrap();
    assert!(
        secure.bodies().is_empty(),
        "nothing over an unverified handshake"
    );
    let scrape = fleet.bridge.get("/metrics/prometheus").unwrap().text;
    assert!(
        scrape.contains("outpost_event_callbacks_dropped_total 2"),
        "{scrape}"
    );
    assert!(
        !scrape.contains("outpost_event_callbacks_delivered_total 0\n"),
        "{scrape}"
    );
    // Kept across a restart of the bridge; unsubscribed by DELETE.
    let mut fleet = fleet;
    fleet.bridge.restart().unwrap();
    assert_eq!(
        fleet.bridge.json("/v2/eventSubscriptions"),
        json!({ "callbackUrls": [url] })
    );
    let gone = expect(
        &fleet,
        "DELETE",
        &format!("/v2/eventSubscriptions?callbackUrl={url}"),
        None,
        200,
    );
    assert_eq!(gone["eventType"], json!("unsubscribe_event"));
    assert_eq!(
        fleet.bridge.json("/v2/eventSubscriptions"),
        json!({ "callbackUrls": [] })
    );
    // https: verified against [callback_tls]'s CA.
    let ca = fleet.bridge.dir().join("callback-ca.pem");
    std::fs::write(&ca, secure.cert_pem()).unwrap();
    let broker = Broker::start().unwrap();
    let tls_bridge = Bridge::start(
        &broker.url(),
        &format!("[callback_tls]\nca_file = {:?}\n", ca.display().to_string()),
    )
    .unwrap();
    let a = tls_bridge
        .request(
            "POST",
            &format!("/v2/eventSubscriptions?callbackUrl={}", secure.url("/tls")),
            None,
        )
        .unwrap();
    assert_eq!(a.status, 200, "{}", a.text);
    let b = tls_bridge
        .request(
            "POST",
            &format!("/v2/eventSubscriptions?callbackUrl={url}"),
            None,
        )
        .unwrap();
    assert_eq!(b.status, 200, "{}", b.text);
    // The second subscribe_event reaches the https callback through a verified handshake.
    wait::until("an event at the https callback", SHORT, || {
        secure
            .bodies()
            .iter()
            .any(|b| b["eventType"] == "subscribe_event" && b["callbackUrl"] == json!(url))
            .then_some(())
    })
    .unwrap();
    // Switched off in the config: Marathon's answer without --event_subscriber.
    // (its own broker: a second bridge on the fleet's would reconcile the fleet's agents).
    let off = Bridge::start(&broker.url(), "http_callbacks = false").unwrap();
    let a = off
        .request(
            "POST",
            &format!("/v2/eventSubscriptions?callbackUrl={url}"),
            None,
        )
        .unwrap();
    assert_eq!(a.status, 400, "{}", a.text);
    assert!(a.text.contains("http_callback"), "{}", a.text);
}

/// The container of task `task`.
fn container_of(task: &Value) -> String {
    let filter = format!("label=outpost.task-id={}", task["id"].as_str().unwrap());
    docker(&["ps", "-q", "--filter", &filter])
        .unwrap()
        .trim()
        .to_string()
}

#[test]
fn readiness_gates_a_rolling_restart_and_shows_in_the_deployment() {
    image::ensure().unwrap();
    let fleet = Fleet::start("ready", &[(21810, 21819)]);
    let mut app = web_app(
        "/ready",
        1,
        json!({
            "readinessChecks": [{
                "protocol": "HTTP", "path": "/ready", "portName": "http",
                "intervalSeconds": 1, "timeoutSeconds": 0,
                "httpStatusCodesForReady": [200]
            }]
        }),
    );
    app["container"]["portMappings"][0]["name"] = json!("http");
    fleet.post(&app);
    // Healthy but not ready (the image has no /ready yet): the deployment waits, and shows why.
    let first = fleet.healthy("/ready", 1, LONG).remove(0);
    let plan = wait::until("the readiness result in the deployment", SHORT, || {
        let d = fleet.bridge.json("/v2/deployments");
        let r = d[0]["currentActions"][0]["readinessCheckResults"][0].clone();
        (r["taskId"] == first["id"]).then_some(r)
    })
    .unwrap();
    assert_eq!(plan["ready"], json!(false), "{plan}");
    docker(&["exec", &container_of(&first), "touch", "/www/ready"]).unwrap();
    no_deployments(&fleet, SHORT);
    let shown =
        fleet.bridge.json("/v2/apps/ready?embed=app.readiness")["app"]["readinessCheckResults"]
            .clone();
    assert_eq!(shown[0]["ready"], json!(true), "{shown}");
    // A restart: the new task gets healthy, but the old one stays until it is ready too.
    expect(&fleet, "POST", "/v2/apps/ready/restart", None, 200);
    let new = wait::until("the new task healthy", LONG, || {
        let tasks = fleet.app("/ready")["tasks"].as_array()?.clone();
        tasks
            .into_iter()
            .find(|t| t["id"] != first["id"] && t["healthCheckResults"][0]["alive"] == json!(true))
    })
    .unwrap();
    let old = first["id"].as_str().unwrap().to_string();
    wait::holds("the old task staying", Duration::from_secs(4), || {
        task_ids(fleet.app("/ready")["tasks"].as_array().unwrap()).contains(&old)
    })
    .unwrap();
    let d = fleet.bridge.json("/v2/deployments");
    assert_eq!(
        d[0]["currentActions"][0]["readinessCheckResults"][0]["taskId"], new["id"],
        "{d}"
    );
    assert_eq!(
        d[0]["currentActions"][0]["readinessCheckResults"][0]["ready"],
        json!(false),
        "{d}"
    );
    docker(&["exec", &container_of(&new), "touch", "/www/ready"]).unwrap();
    no_deployments(&fleet, LONG);
    let tasks = fleet.healthy("/ready", 1, SHORT);
    assert_eq!(tasks[0]["id"], new["id"], "the old one replaced");
}
