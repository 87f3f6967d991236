//! The HTTP layers in process: the Marathon and Mesos routers over a real owner of the core
//! and an in-memory store, requests sent with tower's `oneshot`. MQTT publishes go to a channel
//! the test reads; agents are their messages. API behaviour is tested here without the whole
//! stack; the end-to-end tests in `tests/` run the built bridge against real services.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc::Receiver;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode};
use futures_util::StreamExt;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

use outpost_bridge::config::Config;
use outpost_bridge::core::Core;
use outpost_bridge::handle::{Parts, Shared};
use outpost_bridge::store::{MemoryStore, StoreError, Table};
use outpost_protocol::{
    AgentId, AgentState, Hello, Liveness, Offer, PortRange, Resources, TaskState, TaskStatus, Text,
};

const NGINX: &str = include_str!("../../docs/examples/nginx.json");

struct Bridge {
    shared: Arc<Shared>,
    marathon: Router,
    mesos: Router,
    published: Receiver<(String, Vec<u8>)>,
    store: MemoryStore,
}

impl Bridge {
    fn start(event_buffer: usize) -> Self {
        let store = MemoryStore::new();
        let (tx, published) = std::sync::mpsc::channel();
        let config = Config::parse("", Path::new("bridge.toml")).unwrap();
        let shared = Shared::start(
            Parts {
                core: Core::default(),
                store: Box::new(store.clone()),
                publisher: Box::new(tx),
                clock: Box::new(outpost_bridge::time::now_ms),
                event_buffer,
            },
            config,
            outpost_bridge::time::now_ms(),
        );
        let (marathon, mesos) = outpost_bridge::server::routers(&shared);
        Self {
            shared,
            marathon,
            mesos,
            published,
            store,
        }
    }

    /// An online agent with room for a few tasks.
    async fn agent(&self, id: &str) {
        let id = id.to_string();
        self.shared
            .apply(move |core, now| {
                let agent_id = AgentId::new(&id).unwrap();
                core.on_hello(
                    now,
                    &Hello {
                        version: 1,
                        agent_id: agent_id.clone(),
                        hostname: Text::new(&format!("{id}.host")).unwrap(),
                        address: Some(Text::new("192.0.2.7").unwrap()),
                        ..Default::default()
                    },
                );
                let mut ports = heapless::Vec::new();
                let _ = ports.push(PortRange {
                    begin: 31000,
                    end: 31099,
                });
                core.on_offer(
                    now,
                    &Offer {
                        version: 1,
                        agent_id: agent_id.clone(),
                        seq: 1,
                        available: Resources {
                            cpus: 4.0,
                            mem_mib: 4096.0,
                            disk_mib: 1000.0,
                            ports,
                        },
                        ..Default::default()
                    },
                );
                core.on_state(
                    now,
                    &AgentState {
                        version: 1,
                        agent_id,
                        liveness: Liveness::Online,
                        started_at_ms: 1,
                    },
                );
            })
            .await
            .unwrap();
        self.drain_published();
    }

    fn drain_published(&self) -> Vec<String> {
        self.published.try_iter().map(|(topic, _)| topic).collect()
    }

    async fn send(
        &self,
        router: &Router,
        method: &str,
        uri: &str,
        body: Option<Value>,
    ) -> Response {
        let mut req = Request::builder().method(method).uri(uri);
        if body.is_some() {
            req = req.header("Content-Type", "application/json");
        }
        let mut req = req
            .body(body.map_or(Body::empty(), |b| Body::from(b.to_string())))
            .unwrap();
        req.extensions_mut()
            .insert(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 40000))));
        let r = router.clone().oneshot(req).await.unwrap();
        let status = r.status();
        let headers = r.headers().clone();
        let bytes = r.into_body().collect().await.unwrap().to_bytes();
        Response {
            status,
            headers,
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            text: String::from_utf8_lossy(&bytes).into_owned(),
        }
    }

    /// Creates app `/web` from `def` on agent a1 and reports its task RUNNING at 172.17.0.5
    /// with one check result (`healthy`, `message`); returns the task id.
    async fn running_web(
        &self,
        def: Value,
        healthy: bool,
        message: Option<&'static str>,
    ) -> String {
        let r = self.marathon("POST", "/v2/apps", Some(def)).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        let r = self.marathon("GET", "/v2/apps/web/tasks", None).await;
        let id = r.body["tasks"][0]["id"].as_str().unwrap().to_string();
        let task = id.clone();
        self.shared
            .apply(move |core, now| {
                let ports: Vec<u16> = core.task(&task).unwrap().fixed_ports.to_vec();
                core.on_status(
                    now,
                    &TaskStatus {
                        version: 1,
                        agent_id: AgentId::new("a1").unwrap(),
                        task_id: Text::new(&task).unwrap(),
                        uuid: [9; 16],
                        state: TaskState::Running,
                        healthy: Some(healthy),
                        message: message.map(|m| Text::new(m).unwrap()),
                        container_ip: Some(Text::new("172.17.0.5").unwrap()),
                        host_ports: ports.iter().copied().collect(),
                        timestamp_ms: 1_700_000_000_000,
                        ..Default::default()
                    },
                )
            })
            .await
            .unwrap();
        id
    }

    async fn marathon(&self, method: &str, uri: &str, body: Option<Value>) -> Response {
        self.send(&self.marathon, method, uri, body).await
    }
}

struct Response {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: Value,
    text: String,
}

fn app(id: &str) -> Value {
    let mut v: Value = serde_json::from_str(NGINX).unwrap();
    v["id"] = json!(id);
    v["instances"] = json!(1);
    v
}

#[tokio::test]
async fn a_failed_commit_sends_nothing_and_its_writes_are_stored_by_the_next() {
    let b = Bridge::start(64);
    b.agent("a1").await;
    let mut events = b.shared.events.subscribe();
    b.store.refuse(true);
    let r = b.marathon("POST", "/v2/apps", Some(app("/web"))).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text);
    assert!(r.text.contains("could not store"), "{}", r.text);
    // A status update while the disk is full: not acknowledged.
    let err = b
        .shared
        .apply(|core, now| {
            core.on_status(
                now,
                &TaskStatus {
                    version: 1,
                    agent_id: AgentId::new("a1").unwrap(),
                    task_id: Text::new("orphan.1").unwrap(),
                    uuid: [7; 16],
                    state: TaskState::Running,
                    ..Default::default()
                },
            )
        })
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Db(_)), "{err}");
    assert_eq!(
        b.drain_published(),
        Vec::<String>::new(),
        "no launch, no ack, no kill"
    );
    assert!(events.try_recv().is_err(), "no Marathon event");
    assert_eq!(b.store.count(Table::Apps), 0);
    // Healed: the next commit stores what the failed one held.
    b.store.refuse(false);
    b.shared.apply(|core, now| core.tick(now)).await.unwrap();
    assert_eq!(b.store.count(Table::Apps), 1);
}

#[tokio::test]
async fn a_fenced_store_stops_the_bridge_acting_for_good() {
    let b = Bridge::start(64);
    b.agent("a1").await;
    let before = b.store.commits();
    b.store.fence();
    let r = b.marathon("POST", "/v2/apps", Some(app("/web"))).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text);
    assert!(r.text.contains("may no longer write"), "{}", r.text);
    // Even a store that would take writes again gets none: a deposed bridge does not retry.
    let err = b
        .shared
        .apply(|core, now| core.tick(now))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Fenced(_)), "{err}");
    assert_eq!(b.drain_published(), Vec::<String>::new());
    assert_eq!(b.store.commits(), before);
}

#[tokio::test]
async fn concurrent_partial_puts_all_land() {
    let b = Bridge::start(64);
    b.agent("a1").await;
    let r = b.marathon("POST", "/v2/apps", Some(app("/web"))).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let patches = [
        json!({ "cpus": 0.2 }),
        json!({ "mem": 100 }),
        json!({ "disk": 10 }),
        json!({ "env": { "A": "1" } }),
        json!({ "labels": { "team": "edge" } }),
        json!({ "backoffSeconds": 7 }),
        json!({ "maxLaunchDelaySeconds": 700 }),
        json!({ "instances": 2 }),
    ];
    let puts = patches
        .iter()
        .map(|p| b.marathon("PUT", "/v2/apps/web?force=true", Some(p.clone())));
    for r in futures_util::future::join_all(puts).await {
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    }
    let r = b.marathon("GET", "/v2/apps/web", None).await;
    let a = &r.body["app"];
    assert_eq!(a["cpus"], 0.2);
    assert_eq!(a["mem"], 100.0);
    assert_eq!(a["disk"], 10.0);
    assert_eq!(a["env"]["A"], "1");
    assert_eq!(a["labels"]["team"], "edge");
    assert_eq!(a["backoffSeconds"], 7.0);
    assert_eq!(a["maxLaunchDelaySeconds"], 700.0);
    assert_eq!(a["instances"], 2);
}

#[tokio::test]
async fn a_slow_event_subscriber_is_cut_off_and_counted() {
    let b = Bridge::start(4);
    b.agent("a1").await;
    let mut req = Request::builder()
        .uri("/v2/events")
        .header("Accept", "text/event-stream")
        .body(Body::empty())
        .unwrap();
    req.extensions_mut()
        .insert(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 40001))));
    let r = b.marathon.clone().oneshot(req).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let mut body = r.into_body().into_data_stream();
    let first = body.next().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).contains("event_stream_attached"));
    // Far more events than the subscriber's buffer while it reads nothing.
    for i in 0..5 {
        let r = b
            .marathon("POST", "/v2/apps", Some(app(&format!("/web{i}"))))
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    }
    // It gets what was buffered, then the stream ends (it would otherwise wait for ever).
    let rest = tokio::time::timeout(Duration::from_secs(10), async {
        let mut n = 0;
        while let Some(chunk) = body.next().await {
            chunk.unwrap();
            n += 1;
        }
        n
    })
    .await
    .expect("the slow subscriber's stream ends");
    assert!(rest <= 8, "{rest} chunks");
    let r = b.marathon("GET", "/metrics", None).await;
    assert_eq!(
        r.body["counters"]["outpost.events.slow_subscribers_dropped"]["count"],
        1
    );
}

#[tokio::test]
async fn info_tells_the_port_the_api_listens_on() {
    let b = Bridge::start(64);
    let r = b.marathon("GET", "/v2/info", None).await;
    assert_eq!(r.body["http_config"]["http_port"], 8080, "{}", r.text);
    assert_eq!(r.body["http_config"]["https_port"], 0, "{}", r.text);
}

#[tokio::test]
async fn a_kill_with_scale_answers_with_the_deployment_it_started() {
    let b = Bridge::start(256);
    b.agent("a1").await;
    let mut two = app("/web");
    two["instances"] = json!(2);
    let mut events = b.shared.events.subscribe();
    assert_eq!(
        b.marathon("POST", "/v2/apps", Some(two)).await.status,
        StatusCode::CREATED
    );
    let r = b.marathon("GET", "/v2/apps/web/tasks", None).await;
    let task = r.body["tasks"][0]["id"].as_str().unwrap().to_string();
    let r = b
        .marathon(
            "DELETE",
            &format!("/v2/apps/web/tasks/{task}?scale=true"),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let id = r.body["deploymentId"].as_str().unwrap().to_string();
    assert_eq!(r.headers["Marathon-Deployment-Id"], id.as_str());
    let mut seen = false;
    while let Ok(e) = events.try_recv() {
        seen |= e["eventType"] == "deployment_info" && e["plan"]["id"] == id.as_str();
    }
    assert!(seen, "the answered deployment is a real one");
    let r = b.marathon("GET", "/v2/apps/web", None).await;
    assert_eq!(r.body["app"]["instances"], 1);
}

/// Subscribes a framework on the Mesos router; returns its id, stream id and event stream.
async fn subscribe(
    b: &Bridge,
) -> (
    String,
    String,
    impl futures_util::Stream<Item = Result<axum::body::Bytes, axum::Error>>,
) {
    let call = json!({ "type": "SUBSCRIBE", "subscribe": { "framework_info": {
        "user": "root", "name": "fw" } } });
    let req = Request::builder()
        .method("POST")
        .uri("/api/v1/scheduler")
        .header("Content-Type", "application/json")
        .body(Body::from(call.to_string()))
        .unwrap();
    let r = b.mesos.clone().oneshot(req).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let stream_id = r.headers()["Mesos-Stream-Id"].to_str().unwrap().to_string();
    let mut body = r.into_body().into_data_stream();
    let first = body.next().await.unwrap().unwrap();
    let text = String::from_utf8_lossy(&first).into_owned();
    let json = &text[text.find('\n').unwrap() + 1..];
    let v: Value = serde_json::from_str(json).unwrap();
    assert_eq!(v["type"], "SUBSCRIBED");
    let fid = v["subscribed"]["framework_id"]["value"]
        .as_str()
        .unwrap()
        .to_string();
    (fid, stream_id, body)
}

#[tokio::test]
async fn a_subscribed_framework_gets_its_offers_on_its_stream() {
    let b = Bridge::start(64);
    b.agent("a1").await;
    let (_, _, mut body) = subscribe(&b).await;
    let next = tokio::time::timeout(Duration::from_secs(10), body.next())
        .await
        .expect("an event")
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&next);
    assert!(text.contains("\"OFFERS\""), "{text}");
    assert!(text.contains("a1"), "{text}");
}

#[tokio::test]
async fn a_call_after_an_operator_teardown_is_refused_and_the_bridge_keeps_serving() {
    let b = Bridge::start(64);
    b.agent("a1").await;
    let (fid, stream_id, _body) = subscribe(&b).await;
    let req = Request::builder()
        .method("POST")
        .uri("/master/teardown")
        .body(Body::from(format!("frameworkId={fid}")))
        .unwrap();
    let r = b.mesos.clone().oneshot(req).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    for kind in ["REVIVE", "SUPPRESS"] {
        let req = Request::builder()
            .method("POST")
            .uri("/api/v1/scheduler")
            .header("Content-Type", "application/json")
            .header("Mesos-Stream-Id", &stream_id)
            .body(Body::from(
                json!({ "type": kind, "framework_id": { "value": fid } }).to_string(),
            ))
            .unwrap();
        let r = b.mesos.clone().oneshot(req).await.unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{kind}");
        let text = r.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&text[..], b"Framework has been removed");
    }
    let r = b.marathon("GET", "/ping", None).await;
    assert_eq!(r.text, "pong");
}

#[tokio::test]
async fn mesos_pids_carry_the_agent_s_ip_and_the_hostname_stays() {
    let b = Bridge::start(64);
    b.agent("a1").await;
    for path in ["/master/slaves", "/master/state"] {
        let r = b.send(&b.mesos, "GET", path, None).await;
        let slave = &r.body["slaves"][0];
        assert_eq!(slave["pid"], "slave(1)@192.0.2.7:5051", "{path}: {slave}");
        assert_eq!(slave["hostname"], "a1.host", "{path}");
    }
}

#[tokio::test]
async fn master_slaves_shows_what_a_staged_task_holds() {
    let b = Bridge::start(64);
    b.agent("a1").await;
    let mut fixed = app("/web");
    fixed["container"]["portMappings"] = json!([{ "containerPort": 80, "hostPort": 31050 }]);
    let r = b.marathon("POST", "/v2/apps", Some(fixed)).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let r = b.send(&b.mesos, "GET", "/master/slaves", None).await;
    let used = &r.body["slaves"][0]["used_resources"];
    assert_eq!(used["ports"], "[31050-31050]", "{used}");
    assert!(used["cpus"].as_f64().unwrap() > 0.0, "{used}");
}

#[tokio::test]
async fn big_reads_made_off_the_owner_see_every_committed_change() {
    let b = Bridge::start(64);
    b.agent("a1").await;
    let r = b.marathon("POST", "/v2/apps", Some(app("/web"))).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let r = b.marathon("GET", "/v2/apps?embed=apps.tasks", None).await;
    let tasks = r.body["apps"][0]["tasks"].as_array().unwrap().clone();
    assert_eq!(tasks.len(), 1, "{}", r.text);
    let r = b.send(&b.mesos, "GET", "/master/state", None).await;
    assert_eq!(
        r.body["frameworks"][0]["tasks"][0]["id"], tasks[0]["id"],
        "{}",
        r.text
    );
    let r = b.marathon("GET", "/v2/tasks", None).await;
    assert_eq!(r.body["tasks"][0]["id"], tasks[0]["id"]);
}

#[tokio::test]
async fn a_deploy_bigger_than_a_launch_chunk_is_launched_whole_without_another_request() {
    let b = Bridge::start(64);
    for i in 0..4 {
        b.agent(&format!("a{i}")).await;
    }
    let n = outpost_bridge::core::LAUNCH_CHUNK + 10;
    let mut many = app("/many");
    many["instances"] = json!(n);
    many["cpus"] = json!(0.001);
    many["mem"] = json!(4);
    many["container"]["docker"]["portMappings"] = json!([]);
    many["healthChecks"] = json!([]);
    let r = b.marathon("POST", "/v2/apps", Some(many)).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    // The owner runs the next chunk's step by itself: every launch is sent, and stored first.
    let mut launches = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while launches < n && std::time::Instant::now() < deadline {
        if let Ok((topic, _)) = b.published.recv_timeout(Duration::from_millis(100))
            && topic.ends_with("/cmd")
        {
            launches += 1;
        }
    }
    assert_eq!(launches, n, "every instance launched");
    assert_eq!(b.store.count(Table::Tasks), n, "every task stored");
    let r = b.marathon("GET", "/v2/apps/many", None).await;
    assert_eq!(r.body["app"]["tasksStaged"], json!(n), "{}", r.text);
}

#[tokio::test]
async fn big_reads_are_built_below_the_owner_s_priority() {
    let b = Bridge::start(64);
    // The owner's thread and the test's run at the process's nice value; a reader lower.
    let own = rustix::process::getpriority_process(None).unwrap();
    let reader = b
        .shared
        .read_snapshot(|_| rustix::process::getpriority_process(None).unwrap())
        .await
        .unwrap();
    assert!(
        reader >= outpost_bridge::handle::READER_NICE && reader > own,
        "reader at nice {reader}, the test at {own}"
    );
    let owner = b
        .shared
        .read(|_| rustix::process::getpriority_process(None).unwrap())
        .await
        .unwrap();
    assert_eq!(owner, own, "the owner keeps its priority");
}

#[tokio::test]
async fn an_embedded_task_is_marathon_s_task_written_from_its_record() {
    let b = Bridge::start(64);
    b.agent("a1").await;
    // RUNNING with an address and a failed check.
    let id = b
        .running_web(app("/web"), false, Some("connection refused"))
        .await;
    let embedded = b.marathon("GET", "/v2/apps?embed=apps.tasks", None).await;
    let task = &embedded.body["apps"][0]["tasks"][0];
    // The same as the task list, which builds it as a JSON value.
    let listed = b.marathon("GET", "/v2/apps/web/tasks", None).await;
    assert_eq!(*task, listed.body["tasks"][0], "{}", embedded.text);
    let keys: Vec<&str> = task
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.as_str())
        .collect();
    assert_eq!(
        keys,
        [
            "appId",
            "healthCheckResults",
            "host",
            "id",
            "ipAddresses",
            "ports",
            "servicePorts",
            "slaveId",
            "stagedAt",
            "startedAt",
            "state",
            "version"
        ],
        "{task}"
    );
    assert_eq!(task["appId"], "/web");
    assert_eq!(task["id"], id.as_str());
    assert_eq!(task["slaveId"], "a1");
    assert_eq!(task["state"], "TASK_RUNNING");
    assert_eq!(
        task["ipAddresses"],
        json!([{ "ipAddress": "172.17.0.5", "protocol": "IPv4" }])
    );
    assert!(
        task["startedAt"]
            .as_str()
            .unwrap()
            .starts_with("2023-11-14T"),
        "{task}"
    );
    assert_eq!(task["ports"].as_array().unwrap().len(), 1, "{task}");
    let health = &task["healthCheckResults"][0];
    assert_eq!(health["alive"], false);
    assert_eq!(health["consecutiveFailures"], 1);
    assert_eq!(health["lastFailureCause"], "connection refused");
    assert_eq!(health["firstSuccess"], Value::Null);
    assert_eq!(health["taskId"], id.as_str());
    // The app's own fields are there beside its tasks.
    assert_eq!(embedded.body["apps"][0]["id"], "/web");
    assert_eq!(embedded.body["apps"][0]["tasksRunning"], 1);
}

#[tokio::test]
async fn a_marathon_task_in_master_state_has_mesos_s_shape() {
    let b = Bridge::start(64);
    b.agent("a1").await;
    let mut web = app("/web");
    web["labels"] = json!({ "tier": "front" });
    let id = b.running_web(web, true, None).await;
    let state = b.send(&b.mesos, "GET", "/master/state", None).await;
    let t = &state.body["frameworks"][0]["tasks"][0];
    let port = t["discovery"]["ports"]["ports"][0]["number"]
        .as_u64()
        .unwrap();
    assert_eq!(
        *t,
        json!({
            "id": id,
            "name": "web",
            "framework_id": state.body["frameworks"][0]["id"],
            "executor_id": "",
            "slave_id": "a1",
            "state": "TASK_RUNNING",
            "resources": {
                "cpus": t["resources"]["cpus"],
                "mem": t["resources"]["mem"],
                "disk": t["resources"]["disk"],
                "ports": format!("[{port}-{port}]"),
            },
            "role": "*",
            "statuses": [{
                "state": "TASK_RUNNING",
                "timestamp": t["statuses"][0]["timestamp"],
                "healthy": true,
                "container_status": {
                    "network_infos": [{ "ip_addresses": [{ "ip_address": "172.17.0.5" }] }],
                },
            }],
            "labels": [{ "key": "tier", "value": "front" }],
            "discovery": {
                "visibility": "FRAMEWORK",
                "name": "web",
                "ports": { "ports": [{ "number": port, "protocol": "tcp" }] },
            },
            "container": {
                "type": "DOCKER",
                "docker": {
                    "image": "nginx:latest",
                    "network": "BRIDGE",
                    "port_mappings": [{ "host_port": port, "container_port": 80, "protocol": "tcp" }],
                },
            },
        }),
        "{t}"
    );
    assert!(t["resources"]["cpus"].as_f64().unwrap() > 0.0);
    // /master/tasks shows the same task.
    let tasks = b.send(&b.mesos, "GET", "/master/tasks", None).await;
    assert_eq!(tasks.body["tasks"][0], *t);
    // And the rest of the state is still there beside the frameworks.
    assert_eq!(state.body["slaves"][0]["id"], "a1");
    assert!(state.body["version"].is_string(), "{}", state.text);
}

#[tokio::test]
async fn an_agent_in_master_slaves_has_mesos_s_shape() {
    let b = Bridge::start(64);
    b.agent("a1").await;
    let id = b.running_web(app("/web"), true, None).await;
    let tasks = b.send(&b.marathon, "GET", "/v2/tasks", None).await;
    let task = tasks.body["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == id.as_str())
        .unwrap()
        .clone();
    let port = task["ports"][0].as_u64().unwrap();
    let slaves = b.send(&b.mesos, "GET", "/master/slaves", None).await;
    let s = &slaves.body["slaves"][0];
    let cpus = s["used_resources"]["cpus"].as_f64().unwrap();
    let mem = s["used_resources"]["mem"].as_f64().unwrap();
    let disk = s["used_resources"]["disk"].as_f64().unwrap();
    assert!(cpus > 0.0 && mem > 0.0, "{s}");
    // The whole of it, as Mesos's /master/slaves lists an agent.
    let used_ports = format!("[{port}-{port}]");
    let total = json!({ "cpus": 4.0, "mem": 4096.0, "disk": 1000.0, "ports": "[31000-31099]" });
    assert_eq!(
        *s,
        json!({
            "id": "a1",
            "hostname": "a1.host",
            "port": 5051,
            "attributes": {},
            "pid": "slave(1)@192.0.2.7:5051",
            "registered_time": s["registered_time"],
            "resources": total,
            "used_resources": { "cpus": cpus, "mem": mem, "disk": disk, "ports": used_ports },
            "offered_resources": { "cpus": 0.0, "mem": 0.0, "disk": 0.0, "ports": "[]" },
            "reserved_resources": {},
            "unreserved_resources": total,
            "active": true,
            "deactivated": false,
            "version": "1.11.0",
            "capabilities": ["MULTI_ROLE", "HIERARCHICAL_ROLE", "RESERVATION_REFINEMENT"],
        }),
        "{s}"
    );
    assert!(s["registered_time"].as_f64().unwrap() > 1e9, "{s}");
    assert_eq!(slaves.body["recovered_slaves"], json!([]));
    // /master/state lists the same agent, written the same way.
    let state = b.send(&b.mesos, "GET", "/master/state", None).await;
    assert_eq!(state.body["slaves"][0], *s);
}

#[tokio::test]
async fn a_single_bridge_leads_and_cannot_abdicate() {
    let b = Bridge::start(64);
    let l = b.send(&b.marathon, "GET", "/v2/leader", None).await;
    assert_eq!(l.status, 200);
    assert!(
        l.body["leader"].as_str().unwrap().contains(':'),
        "{}",
        l.text
    );
    let d = b.send(&b.marathon, "DELETE", "/v2/leader", None).await;
    assert_eq!(d.status, 400, "{}", d.text);
    assert!(
        d.body["message"].as_str().unwrap().contains("[ha]"),
        "{}",
        d.text
    );
    let info = b.send(&b.marathon, "GET", "/v2/info", None).await;
    assert_eq!(info.body["zookeeper_config"], json!({}));
    assert_eq!(info.body["leader"], l.body["leader"]);
}
