//! The Mesos v1 scheduler API of outpost-bridge, driven by a small scheduler written here
//! (plain HTTP, no Mesos library) against the real bridge, a real agent, mosquitto and dockerd.

use std::time::Duration;

use serde_json::{Value, json};

use outpost_tests::agent::Agent;
use outpost_tests::bridge::Bridge;
use outpost_tests::mesos_client::{Subscription, call, framework_call, post};
use outpost_tests::mosquitto::Broker;
use outpost_tests::{http, image, wait};

const LONG: Duration = Duration::from_secs(60);

fn scalar(offer: &Value, name: &str) -> f64 {
    offer["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == name)
        .unwrap()["scalar"]["value"]
        .as_f64()
        .unwrap()
}

/// Subscribes again as framework `fid`, asks for implicit reconciliation, and returns the
/// subscription and the UPDATE it brought for `task`.
fn resubscribe_and_reconcile(
    port: u16,
    info: Value,
    fid: &str,
    task: &str,
) -> (Subscription, Value) {
    let mut sub = Subscription::open(port, info, Some(fid));
    assert_eq!(sub.framework_id, fid);
    let (code, _) = framework_call(
        port,
        &sub,
        json!({ "type": "RECONCILE", "reconcile": { "tasks": [] } }),
    );
    assert_eq!(code, 202);
    // The answer to the RECONCILE, not an update the agent re-sends because the framework
    // never acknowledged it (the agent keeps every unacknowledged update and re-sends it when
    // the bridge comes back, as a Mesos agent does).
    let rec = sub.next_event(
        |e| {
            e["update"]["status"]["task_id"]["value"] == task
                && e["update"]["status"]["reason"] == "REASON_RECONCILIATION"
        },
        LONG,
    );
    (sub, rec)
}

#[test]
fn a_v1_framework_gets_offers_launches_a_docker_task_and_manages_it() {
    image::ensure().unwrap();
    let broker = Broker::start().unwrap();
    // Heartbeats every second: the test uses them as a barrier on the stream.
    let bridge = Bridge::start(&broker.url(), "scheduler_heartbeat_seconds = 1").unwrap();
    let port = bridge.mesos_port();
    let agent_id = Agent::unique_id("fw");
    let _agent = Agent::start(&agent_id, &broker.url(), (21480, 21489), "").unwrap();
    wait::until("the agent at the bridge", LONG, || {
        bridge.mesos_get("/master/slaves").ok()?.json()["slaves"]
            .as_array()?
            .iter()
            .any(|s| s["id"] == agent_id.as_str())
            .then_some(())
    })
    .unwrap();
    let info = json!({ "user": "root", "name": "test-fw", "failover_timeout": 60.0, "capabilities": [{ "type": "PARTITION_AWARE" }] });
    let mut sub = Subscription::open(port, info.clone(), None);

    // An offer from the real agent: SCALAR cpus/mem/disk, RANGES ports.
    let offers = sub.next_event(|e| e["type"] == "OFFERS", LONG);
    let offer = offers["offers"]["offers"][0].clone();
    assert_eq!(offer["agent_id"]["value"], agent_id.as_str());
    assert!(
        scalar(&offer, "cpus") > 0.1 && scalar(&offer, "mem") > 32.0,
        "{offer}"
    );
    let ports = offer["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "ports")
        .unwrap()
        .clone();
    assert_eq!(ports["type"], "RANGES");
    let host_port = ports["ranges"]["range"][0]["begin"].as_u64().unwrap();
    assert!((21480..=21489).contains(&host_port));

    // Bad calls: no stream id, malformed, protobuf.
    let accept_body = |offer_id: &Value, task: &str, host_port: u64| {
        json!({
            "type": "ACCEPT",
            "accept": {
                "offer_ids": [offer_id],
                "operations": [{ "type": "LAUNCH", "launch": { "task_infos": [{
                    "name": task,
                    "task_id": { "value": task },
                    "agent_id": { "value": agent_id },
                    "resources": [
                        { "name": "cpus", "type": "SCALAR", "scalar": { "value": 0.1 } },
                        { "name": "mem", "type": "SCALAR", "scalar": { "value": 32 } },
                        { "name": "ports", "type": "RANGES", "ranges": { "range": [{ "begin": host_port, "end": host_port }] } }
                    ],
                    "command": { "shell": false },
                    "container": { "type": "DOCKER", "docker": {
                        "image": image::TEST_IMAGE, "network": "BRIDGE",
                        "port_mappings": [{ "host_port": host_port, "container_port": 80, "protocol": "tcp" }]
                    } },
                    "health_check": { "type": "HTTP", "http": { "port": 80, "path": "/health" },
                        "delay_seconds": 0, "interval_seconds": 1, "grace_period_seconds": 0,
                        "timeout_seconds": 2, "consecutive_failures": 3 }
                }] } }],
                "filters": { "refuse_seconds": 1 }
            }
        })
    };
    let mut no_stream = accept_body(&offer["id"], "fw-web-1", host_port);
    no_stream["framework_id"] = json!({ "value": sub.framework_id });
    let (status, msg) = call(port, None, "application/json", &no_stream.to_string());
    assert_eq!(status, 403, "{msg}");
    assert!(msg.contains("Mesos-Stream-Id"), "{msg}");
    let (status, msg) = call(port, Some(&sub.stream_id), "application/json", "{not json");
    assert_eq!(status, 400);
    assert!(msg.contains("parse"), "{msg}");
    let (status, msg) = call(
        port,
        Some(&sub.stream_id),
        "application/x-protobuf",
        "\u{8}\u{1}",
    );
    assert_eq!(status, 415, "{msg}");

    // ACCEPT with a Docker task: STARTING, RUNNING, healthy, each acknowledged.
    let (status, msg) =
        framework_call(port, &sub, accept_body(&offer["id"], "fw-web-1", host_port));
    assert_eq!(status, 202, "{msg}");
    let healthy = sub.next_event(
        |e| {
            e["type"] == "UPDATE"
                && e["update"]["status"]["state"] == "TASK_RUNNING"
                && e["update"]["status"]["healthy"] == true
        },
        LONG,
    );
    let states: Vec<String> = sub
        .updates("fw-web-1")
        .iter()
        .map(|s| s["state"].as_str().unwrap().to_string())
        .collect();
    assert!(states.contains(&"TASK_STARTING".to_string()), "{states:?}");
    let status = &healthy["update"]["status"];
    assert_eq!(status["agent_id"]["value"], agent_id.as_str());
    assert_eq!(status["source"], "SOURCE_EXECUTOR");
    assert!(
        status["container_status"]["network_infos"][0]["ip_addresses"][0]["ip_address"].is_string()
    );
    for u in sub.updates("fw-web-1") {
        let (code, msg) = framework_call(
            port,
            &sub,
            json!({ "type": "ACKNOWLEDGE", "acknowledge": {
            "agent_id": u["agent_id"], "task_id": u["task_id"], "uuid": u["uuid"] } }),
        );
        assert_eq!(code, 202, "{msg}");
    }
    assert!(
        http::get(&format!("http://127.0.0.1:{host_port}/"))
            .unwrap()
            .body
            .contains("outpost test page")
    );

    // An unknown offer: TASK_DROPPED with REASON_INVALID_OFFERS (partition-aware framework).
    let (code, _) = framework_call(
        port,
        &sub,
        accept_body(&json!({ "value": "bogus" }), "fw-web-2", host_port),
    );
    assert_eq!(code, 202);
    let dropped = sub.next_event(
        |e| e["update"]["status"]["task_id"]["value"] == "fw-web-2",
        LONG,
    );
    assert_eq!(dropped["update"]["status"]["state"], "TASK_DROPPED");
    assert_eq!(
        dropped["update"]["status"]["reason"],
        "REASON_INVALID_OFFERS"
    );

    // DECLINE with a long filter: no offer of that agent; REVIVE clears it. Every offer the
    // framework holds is declined (offers are rescinded after 10 s and made anew while the
    // task starts; one made between reading them and the DECLINE is declined on the next
    // round). The barrier: a second framework's SUBSCRIBE makes an offer pass over every
    // framework; it gets the agent only once the first holds nothing of it, and from then on
    // the first framework's stream carries its next HEARTBEAT after anything that pass sent it
    // (one stream is in order).
    sub.next_event(|e| e["type"] == "OFFERS", LONG);
    let mut barrier = None;
    let mut seen_offers = 0;
    for _round in 0..3 {
        let held = sub.offers_held();
        let (code, _) = framework_call(
            port,
            &sub,
            json!({ "type": "DECLINE", "decline": {
            "offer_ids": held, "filters": { "refuse_seconds": 3600 } } }),
        );
        assert_eq!(code, 202);
        sub.pump();
        seen_offers = sub.events.iter().filter(|e| e["type"] == "OFFERS").count();
        let mut other =
            Subscription::open(port, json!({ "user": "root", "name": "barrier" }), None);
        let got = wait::until("the barrier's offer", Duration::from_secs(5), || {
            other.pump();
            other.events.iter().find(|e| e["type"] == "OFFERS").cloned()
        });
        if let Ok(offer) = got {
            barrier = Some((other, offer));
            break;
        }
    }
    let (other, barrier) = barrier.expect("a second framework gets the declined agent");
    assert_eq!(
        barrier["offers"]["offers"][0]["agent_id"]["value"],
        agent_id.as_str()
    );
    drop(other);
    let heartbeats = sub
        .events
        .iter()
        .filter(|e| e["type"] == "HEARTBEAT")
        .count();
    wait::until("the next heartbeat", LONG, || {
        sub.pump();
        (sub.events
            .iter()
            .filter(|e| e["type"] == "HEARTBEAT")
            .count()
            > heartbeats)
            .then_some(())
    })
    .unwrap();
    assert_eq!(
        sub.events.iter().filter(|e| e["type"] == "OFFERS").count(),
        seen_offers,
        "an offer came despite the filter"
    );
    let (code, _) = framework_call(port, &sub, json!({ "type": "REVIVE" }));
    assert_eq!(code, 202);
    sub.next_event(|e| e["type"] == "OFFERS", Duration::from_secs(10));

    // Explicit reconcile.
    let (code, _) = framework_call(
        port,
        &sub,
        json!({ "type": "RECONCILE", "reconcile": { "tasks": [{ "task_id": { "value": "fw-web-1" } }] } }),
    );
    assert_eq!(code, 202);
    let rec = sub.next_event(
        |e| e["update"]["status"]["reason"] == "REASON_RECONCILIATION",
        LONG,
    );
    assert_eq!(rec["update"]["status"]["state"], "TASK_RUNNING");

    // Disconnect, re-subscribe with the framework id: the task is still there.
    let fid = sub.framework_id.clone();
    drop(sub);
    let (mut sub, rec) = resubscribe_and_reconcile(port, info, &fid, "fw-web-1");
    assert_eq!(rec["update"]["status"]["state"], "TASK_RUNNING");

    // KILL (no agent id), then the heartbeat, then TEARDOWN ends the stream.
    let (code, _) = framework_call(
        port,
        &sub,
        json!({ "type": "KILL", "kill": { "task_id": { "value": "fw-web-1" } } }),
    );
    assert_eq!(code, 202);
    sub.next_event(|e| e["update"]["status"]["state"] == "TASK_KILLED", LONG);
    sub.next_event(|e| e["type"] == "HEARTBEAT", LONG);
    let (code, _) = framework_call(port, &sub, json!({ "type": "TEARDOWN" }));
    assert_eq!(code, 202);
    wait::until("the stream to end", Duration::from_secs(10), || {
        (!sub.pump()).then_some(())
    })
    .unwrap();
    let (code, msg) = framework_call(port, &sub, json!({ "type": "REVIVE" }));
    assert_eq!(code, 403, "{msg}");
}

#[test]
fn a_framework_keeps_its_task_across_a_bridge_restart_and_a_teardown_sends_error() {
    image::ensure().unwrap();
    let broker = Broker::start().unwrap();
    let mut bridge = Bridge::start(&broker.url(), "").unwrap();
    let port = bridge.mesos_port();
    let agent_id = Agent::unique_id("fw-restart");
    let agent = Agent::start(&agent_id, &broker.url(), (21550, 21559), "").unwrap();
    let info = json!({ "user": "root", "name": "restart-fw", "failover_timeout": 120.0 });
    let mut sub = Subscription::open(port, info.clone(), None);
    let offers = sub.next_event(|e| e["type"] == "OFFERS", LONG);
    let offer = &offers["offers"]["offers"][0];
    let accept = json!({ "type": "ACCEPT", "accept": {
        "offer_ids": [offer["id"]],
        "operations": [{ "type": "LAUNCH", "launch": { "task_infos": [{
            "name": "keep", "task_id": { "value": "fw-keep-1" },
            "agent_id": { "value": agent_id },
            "resources": [
                { "name": "cpus", "type": "SCALAR", "scalar": { "value": 0.05 } },
                { "name": "mem", "type": "SCALAR", "scalar": { "value": 16 } }
            ],
            "container": { "type": "DOCKER", "docker": { "image": image::TEST_IMAGE, "network": "BRIDGE" } }
        }] } }] } });
    let (code, msg) = framework_call(port, &sub, accept);
    assert_eq!(code, 202, "{msg}");
    let running = sub.next_event(|e| e["update"]["status"]["state"] == "TASK_RUNNING", LONG);
    let (code, _) = framework_call(
        port,
        &sub,
        json!({ "type": "ACKNOWLEDGE", "acknowledge": {
            "agent_id": running["update"]["status"]["agent_id"],
            "task_id": running["update"]["status"]["task_id"],
            "uuid": running["update"]["status"]["uuid"] } }),
    );
    assert_eq!(code, 202);
    let containers = agent.containers().unwrap();
    assert_eq!(containers.len(), 1);
    let fid = sub.framework_id.clone();
    drop(sub);

    // The bridge dies and comes back: the framework and its task are still known, the task is
    // not killed as an orphan when the agent reports it, and the framework gets it back.
    bridge.restart().unwrap();
    let frameworks = bridge.mesos_get("/master/frameworks").unwrap().json();
    assert!(
        frameworks["frameworks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["id"] == fid.as_str()),
        "{frameworks}"
    );
    let (mut sub, rec) = resubscribe_and_reconcile(port, info, &fid, "fw-keep-1");
    assert_eq!(rec["update"]["status"]["state"], "TASK_RUNNING", "{rec}");
    wait::until("the agent back at the bridge", LONG, || {
        bridge.mesos_get("/master/slaves").ok()?.json()["slaves"]
            .as_array()?
            .iter()
            .any(|s| s["id"] == agent_id.as_str() && s["active"] == true)
            .then_some(())
    })
    .unwrap();
    let mut last = Value::Null;
    wait::until("the task in /master/tasks", LONG, || {
        last = bridge.mesos_get("/master/tasks").ok()?.json();
        last["tasks"]
            .as_array()?
            .iter()
            .any(|t| t["id"] == "fw-keep-1" && t["state"] == "TASK_RUNNING")
            .then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}: {last}"));
    assert_eq!(
        agent.containers().unwrap(),
        containers,
        "the same container"
    );

    // The operator tears it down: ERROR on its stream, the stream ends, the task is killed.
    let (code, msg) = post(
        port,
        "/master/teardown",
        None,
        "application/x-www-form-urlencoded",
        &format!("frameworkId={fid}"),
    );
    assert_eq!(code, 200, "{msg}");
    let error = sub.next_event(|e| e["type"] == "ERROR", LONG);
    assert_eq!(error["error"]["message"], "Framework has been removed");
    wait::until("the stream to end", Duration::from_secs(10), || {
        (!sub.pump()).then_some(())
    })
    .unwrap();
    wait::until("the task's container gone", LONG, || {
        let ids = agent.containers().ok()?;
        let running = ids.iter().any(|id| {
            outpost_tests::docker::docker(&["inspect", "-f", "{{.State.Running}}", id])
                .is_ok_and(|o| o.trim() == "true")
        });
        (!running).then_some(())
    })
    .unwrap();
    // Its id is refused from now on, with ERROR, also after another restart.
    bridge.restart().unwrap();
    let body = json!({ "type": "SUBSCRIBE", "framework_id": { "value": fid },
        "subscribe": { "framework_info": { "user": "root", "name": "restart-fw", "id": { "value": fid } } } });
    let (code, text) = call(port, None, "application/json", &body.to_string());
    assert_eq!(code, 200);
    assert!(
        text.contains("\"ERROR\"") && text.contains("Framework has been removed"),
        "{text}"
    );
    // An unknown framework id to tear down: 400 naming it.
    let (code, msg) = post(
        port,
        "/master/teardown",
        None,
        "application/x-www-form-urlencoded",
        "frameworkId=nope",
    );
    assert_eq!(code, 400);
    assert!(msg.contains("nope"), "{msg}");
}
