//! Task logs end to end: `GET /v2/tasks/{id}/logs` on the real bridge reads what a container
//! printed through its agent (real mosquitto, real dockerd), as plain text and as server-sent
//! events; follow mode ends when the container stops; at most four streams per agent, and a
//! reader that goes away frees its place; an agent that is gone answers 503 naming it.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use outpost_tests::agent::Agent;
use outpost_tests::bridge::Bridge;
use outpost_tests::image;
use outpost_tests::mosquitto::Broker;
use outpost_tests::wait;

const SHORT: Duration = Duration::from_secs(20);
const LONG: Duration = Duration::from_secs(90);

/// An app of the test image whose container prints known lines on both streams, then (unless
/// `exit_after` is set) serves as usual.
fn chatty_app(id: &str, exit_after: Option<u32>) -> Value {
    let then = match exit_after {
        Some(s) => format!("sleep {s}; echo bye"),
        None => "exec httpd -f -p 80 -h /www".to_string(),
    };
    json!({
        "id": id,
        // The last line waits a moment: the two streams are separate pipes, so only time
        // orders a line of one after a line of the other in the log.
        "cmd": format!("echo out-1; echo err-1 >&2; echo out-2; echo err-2 >&2; echo out-3; sleep 0.5; echo err-3 >&2; {then}"),
        "cpus": 0.05,
        "mem": 32,
        "instances": 1,
        "container": {
            "type": "DOCKER",
            "docker": { "image": image::TEST_IMAGE, "network": "BRIDGE" },
            "portMappings": [{ "containerPort": 80, "hostPort": 0, "protocol": "tcp" }]
        },
        "backoffSeconds": 1,
        "taskKillGracePeriodSeconds": 1
    })
}

/// `curl` of the bridge: status and body (headers as extra `-H` arguments).
fn curl(bridge: &Bridge, path: &str, extra: &[&str]) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "60", "-w", "\n%{http_code}"])
        .args(extra)
        .arg(bridge.url(path))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap();
    (code.trim().parse().unwrap(), body.to_string())
}

/// A `curl -N` of a follow that runs in the background until killed.
fn follower(bridge: &Bridge, path: &str, out: &std::path::Path) -> Child {
    Command::new("curl")
        .args(["-sS", "-N", "--max-time", "120"])
        .arg(bridge.url(path))
        .stdout(std::fs::File::create(out).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn the_task(bridge: &Bridge, app: &str) -> String {
    wait::until(&format!("a running task of {app}"), LONG, || {
        let a = bridge.json(&format!("/v2/apps{app}"));
        let t = a["app"]["tasks"].as_array()?.first()?.clone();
        (t["state"] == "TASK_RUNNING").then(|| t["id"].as_str().unwrap().to_string())
    })
    .unwrap()
}

#[test]
fn a_task_s_log_is_read_through_the_bridge_as_text_and_events_and_a_follow_ends_with_the_container()
{
    image::ensure().unwrap();
    let broker = Broker::start().unwrap();
    let bridge = Bridge::start(&broker.url(), "").unwrap();
    let id = Agent::unique_id("logs");
    let mut agent = Agent::start(&id, &broker.url(), (21400, 21409), "").unwrap();
    for app in [
        chatty_app("/logs/serve", None),
        chatty_app("/logs/brief", Some(3)),
    ] {
        let a = bridge
            .request("POST", "/v2/apps", Some(&app.to_string()))
            .unwrap();
        assert_eq!(a.status, 201, "{}", a.text);
    }
    let task = the_task(&bridge, "/logs/serve");
    let path = format!("/v2/tasks/{task}/logs");

    // Both streams as plain text, in the order they were written (the container may not have
    // printed everything the moment it runs).
    let body = wait::until("all six lines in the log", SHORT, || {
        let (code, body) = curl(&bridge, &path, &[]);
        assert_eq!(code, 200, "{body}");
        body.contains("err-3").then_some(body)
    })
    .unwrap();
    let lines: Vec<&str> = body.lines().collect();
    assert_eq!(lines.last(), Some(&"err-3"), "{body:?}");
    for l in ["out-1", "err-1", "out-2", "err-2", "out-3"] {
        assert!(lines.contains(&l), "{l} in {body:?}");
    }
    // One stream, and the tail (dockerd counts the tail over both streams, then picks one).
    let (_, out) = curl(&bridge, &format!("{path}?stream=stdout"), &[]);
    assert_eq!(out.lines().collect::<Vec<_>>(), ["out-1", "out-2", "out-3"]);
    let (_, err) = curl(&bridge, &format!("{path}?stream=stderr&tail=1"), &[]);
    assert_eq!(err, "err-3\n");
    // Since a time after everything was written: nothing.
    let later = "2100-01-01T00:00:00Z";
    let (code, none) = curl(&bridge, &format!("{path}?since={later}"), &[]);
    assert_eq!((code, none.as_str()), (200, ""));

    // Server-sent events name the stream of each piece and end with why.
    let (code, events) = curl(&bridge, &path, &["-H", "Accept: text/event-stream"]);
    assert_eq!(code, 200);
    assert!(events.contains("event: stderr\ndata: err-1"), "{events}");
    assert!(events.contains("event: stdout\ndata: out-1"), "{events}");
    assert!(events.contains("event: end\ndata: end of log"), "{events}");

    // A follow of a container that exits ends when it does, with what it printed last.
    // (Between two runs of its container the task has none: 404, and the test asks again.)
    let brief = the_task(&bridge, "/logs/brief");
    let follow = format!("/v2/tasks/{brief}/logs?follow=true");
    let followed = wait::until("a follow that ends with the container", LONG, || {
        let started = std::time::Instant::now();
        let (code, body) = curl(&bridge, &follow, &[]);
        assert!(code == 200 || code == 404, "{code}: {body}");
        (code == 200 && body.ends_with("bye\n")).then_some((body, started.elapsed()))
    })
    .unwrap();
    assert!(followed.0.contains("out-1"), "{followed:?}");
    assert!(
        followed.1 < Duration::from_secs(30),
        "the follow ended with the container, not at its time limit: {followed:?}"
    );

    // Bad input names the parameter; an unknown task is Marathon's 404.
    let (code, bad) = curl(&bridge, &format!("{path}?tail=lots"), &[]);
    assert_eq!(code, 400);
    assert!(bad.contains("tail=\\\"lots\\\""), "{bad}");
    let (code, missing) = curl(&bridge, "/v2/tasks/nope.1/logs", &[]);
    assert_eq!(code, 404, "{missing}");
    assert!(missing.contains("nope.1"), "{missing}");

    // Four follows at once are the agent's most; a fifth is refused saying so. Readers that
    // go away (curl killed) stop their streams at the agent, which then takes new ones.
    let dir = tempfile::tempdir().unwrap();
    let mut followers: Vec<Child> = (0..4)
        .map(|i| {
            follower(
                &bridge,
                &format!("{path}?follow=100"),
                &dir.path().join(format!("f{i}")),
            )
        })
        .collect();
    wait::until("four follows under way", SHORT, || {
        (0..4)
            .all(|i| {
                std::fs::read_to_string(dir.path().join(format!("f{i}")))
                    .is_ok_and(|s| s.contains("out-3"))
            })
            .then_some(())
    })
    .unwrap();
    let (code, busy) = curl(&bridge, &path, &[]);
    assert_eq!(code, 503, "{busy}");
    assert!(busy.contains("4 logs streams"), "{busy}");
    for f in &mut followers {
        f.kill().unwrap();
        f.wait().unwrap();
    }
    wait::until("the agent to take logs requests again", SHORT, || {
        let (code, _) = curl(&bridge, &format!("{path}?tail=1"), &[]);
        (code == 200).then_some(())
    })
    .unwrap();

    // The agent gone: 503 naming it, and since when it is unreachable.
    agent.kill();
    let gone = wait::until("the bridge to see the agent offline", SHORT, || {
        let (code, body) = curl(&bridge, &path, &[]);
        (code == 503).then_some(body)
    })
    .unwrap();
    assert!(gone.contains(&id) && gone.contains("unreachable"), "{gone}");
    let v: Value = serde_json::from_str(&gone).unwrap();
    assert!(
        v["unreachableSince"].as_str().unwrap().ends_with('Z'),
        "{v}"
    );
}
