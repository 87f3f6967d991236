//! `/metrics/prometheus` end to end: the real bridge, agent, mosquitto and dockerd; the
//! scrape is parsed by the Prometheus project's own Python parser (prometheus-client, in the
//! test virtualenv) and its values checked against what the test did: an app deployed and a
//! task killed (and replaced), an event subscriber attached, the broker restarted, and the
//! agent's own figures relayed from its stats messages.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::json;

use outpost_tests::agent::Agent;
use outpost_tests::bridge::Bridge;
use outpost_tests::image;
use outpost_tests::mosquitto::Broker;
use outpost_tests::{bin_path, wait};

const SHORT: Duration = Duration::from_secs(30);
const LONG: Duration = Duration::from_secs(90);

/// The parser: every sample as `[name, labels, value]`, in JSON.
const PARSE: &str = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = []
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        out.append([s.name, s.labels, s.value])
print(json.dumps(out))
"#;

/// One scrape, parsed: sample name with its labels (`name{k="v",...}`, labels sorted) to
/// value. Fails the test if the real parser refuses the text.
fn scrape(bridge: &Bridge) -> BTreeMap<String, f64> {
    let a = bridge.get("/metrics/prometheus").unwrap();
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(
        a.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let mut child = Command::new(bin_path::client_python())
        .args(["-c", PARSE])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), a.text.as_bytes()).unwrap();
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the Prometheus parser refused the scrape: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        a.text
    );
    let samples: Vec<(String, BTreeMap<String, String>, f64)> =
        serde_json::from_slice(&out.stdout).unwrap();
    samples
        .into_iter()
        .map(|(name, labels, value)| {
            let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
            let key = if labels.is_empty() {
                name
            } else {
                format!("{name}{{{}}}", labels.join(","))
            };
            (key, value)
        })
        .collect()
}

fn value(m: &BTreeMap<String, f64>, key: &str) -> f64 {
    *m.get(key)
        .unwrap_or_else(|| panic!("{key} is not in the scrape: {m:#?}"))
}

#[test]
fn the_prometheus_scrape_parses_and_counts_what_the_fleet_did() {
    image::ensure().unwrap();
    let mut broker = Broker::start().unwrap();
    let bridge = Bridge::start(&broker.url(), "").unwrap();
    let id = Agent::unique_id("prom");
    let _agent = Agent::start(&id, &broker.url(), (21420, 21429), "").unwrap();
    let app = json!({
        "id": "/prom/web",
        "cpus": 0.05, "mem": 32, "instances": 2,
        "container": {
            "type": "DOCKER",
            "docker": { "image": image::TEST_IMAGE, "network": "BRIDGE" },
            "portMappings": [{ "containerPort": 80, "hostPort": 0 }]
        },
        "healthChecks": [{ "protocol": "MESOS_HTTP", "path": "/health", "portIndex": 0,
                           "gracePeriodSeconds": 0, "intervalSeconds": 1, "timeoutSeconds": 2 }],
        "backoffSeconds": 1, "taskKillGracePeriodSeconds": 1
    });
    let a = bridge
        .request("POST", "/v2/apps", Some(&app.to_string()))
        .unwrap();
    assert_eq!(a.status, 201, "{}", a.text);
    let running = |n: usize| {
        wait::until(&format!("{n} healthy tasks"), LONG, || {
            let a = bridge.json("/v2/apps/prom/web")["app"].clone();
            let tasks = a["tasks"].as_array()?.clone();
            (tasks.len() == n && a["tasksHealthy"] == json!(n)).then_some(tasks)
        })
        .unwrap()
    };
    let tasks = running(2);
    // Kill one: it is replaced (a third launch).
    let victim = tasks[0]["id"].as_str().unwrap().to_string();
    let k = bridge
        .request("DELETE", &format!("/v2/apps/prom/web/tasks/{victim}"), None)
        .unwrap();
    assert_eq!(k.status, 200, "{}", k.text);
    wait::until("the killed task replaced", LONG, || {
        let tasks = running(2);
        tasks
            .iter()
            .all(|t| t["id"] != victim.as_str())
            .then_some(())
    })
    .unwrap();
    // An event subscriber, held open.
    let mut sse = Command::new("curl")
        .args(["-sS", "-N", "-H", "Accept: text/event-stream"])
        .arg(bridge.url("/v2/events"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // The broker restarted under the bridge: one reconnection.
    broker.restart().unwrap();

    let m = wait::until(
        "the scrape to show the reconnection, the subscriber and the agent's stats",
        SHORT,
        || {
            let m = scrape(&bridge);
            let ok = m.get("outpost_mqtt_reconnects_total") == Some(&1.0)
                && m.get("outpost_event_subscribers") == Some(&1.0)
                && m.get(&format!("outpost_agent_containers{{agent_id=\"{id}\"}}")) == Some(&2.0)
                && m.get(r#"outpost_agents{liveness="online"}"#) == Some(&1.0);
            ok.then_some(m)
        },
    )
    .unwrap();
    assert_eq!(value(&m, "outpost_apps"), 1.0);
    assert_eq!(value(&m, r#"outpost_tasks{state="TASK_RUNNING"}"#), 2.0);
    assert_eq!(
        value(&m, r#"outpost_commands_sent_total{kind="launch"}"#),
        3.0
    );
    assert!(value(&m, r#"outpost_commands_sent_total{kind="kill"}"#) >= 1.0);
    // Each of the three tasks went STAGING, STARTING, RUNNING, with health on top; the killed
    // one KILLING and KILLED: every update received was acknowledged.
    let received = value(&m, "outpost_status_updates_received_total");
    assert!(received >= 11.0, "{received}");
    assert_eq!(
        value(&m, "outpost_status_updates_acknowledged_total"),
        received - value(&m, "outpost_status_updates_duplicate_total")
    );
    assert_eq!(
        value(
            &m,
            r#"outpost_launch_to_running_seconds_count{kind="marathon"}"#
        ),
        3.0
    );
    let inf = value(
        &m,
        r#"outpost_launch_to_running_seconds_bucket{kind="marathon",le="+Inf"}"#,
    );
    assert_eq!(inf, 3.0);
    assert!(value(&m, "outpost_store_commit_seconds_count") > 0.0);
    assert_eq!(value(&m, "outpost_deployments"), 0.0);
    // The agent's figures, relayed from its stats messages.
    let agent = |name: &str| value(&m, &format!("outpost_agent_{name}{{agent_id=\"{id}\"}}"));
    assert_eq!(agent("dockerd_reachable"), 1.0);
    assert!(agent("rss_bytes") > 1_000_000.0, "{}", agent("rss_bytes"));
    assert!(agent("probe_latency_microseconds") > 0.0);
    assert_eq!(agent("outbox_depth"), 0.0);
    sse.kill().unwrap();
    sse.wait().unwrap();
}
