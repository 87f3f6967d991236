//! The Mesos v1 scheduler API of outpost-bridge, driven by a small scheduler written here
//! (plain HTTP, no Mesos library) against the real bridge, a real agent, mosquitto and dockerd.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::{Value, json};

use outpost_tests::agent::Agent;
use outpost_tests::bridge::Bridge;
use outpost_tests::mosquitto::Broker;
use outpost_tests::{http, image, wait};

const LONG: Duration = Duration::from_secs(60);

/// A SUBSCRIBE connection: reads the chunked RecordIO stream event by event.
struct Subscription {
    reader: BufReader<TcpStream>,
    stream_id: String,
    framework_id: String,
    /// Bytes of the RecordIO stream read so far and not yet parsed.
    buf: Vec<u8>,
    events: Vec<Value>,
}

impl Subscription {
    fn open(port: u16, framework_info: Value, framework_id: Option<&str>) -> Self {
        let mut body =
            json!({ "type": "SUBSCRIBE", "subscribe": { "framework_info": framework_info } });
        if let Some(id) = framework_id {
            body["framework_id"] = json!({ "value": id });
            body["subscribe"]["framework_info"]["id"] = json!({ "value": id });
        }
        let body = body.to_string();
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        write!(
            s,
            "POST /api/v1/scheduler HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nAccept: application/json\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        s.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let mut reader = BufReader::new(s);
        let mut status = String::new();
        reader.read_line(&mut status).unwrap();
        assert!(status.starts_with("HTTP/1.1 200"), "{status}");
        let mut stream_id = String::new();
        let mut chunked = false;
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            if line == "\r\n" {
                break;
            }
            let lower = line.to_ascii_lowercase();
            if let Some(v) = lower.strip_prefix("mesos-stream-id:") {
                stream_id = line[line.len() - v.len()..].trim().to_string();
            }
            chunked |= lower.starts_with("transfer-encoding: chunked");
        }
        assert!(chunked, "SUBSCRIBE answers chunked");
        assert!(!stream_id.is_empty(), "a Mesos-Stream-Id header");
        let mut sub = Self {
            reader,
            stream_id,
            framework_id: String::new(),
            buf: Vec::new(),
            events: Vec::new(),
        };
        let first = sub.next_event(|e| e["type"] == "SUBSCRIBED", Duration::from_secs(10));
        assert_eq!(sub.events[0]["type"], "SUBSCRIBED", "the first event");
        sub.framework_id = first["subscribed"]["framework_id"]["value"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(
            first["subscribed"]["heartbeat_interval_seconds"]
                .as_f64()
                .unwrap()
                > 0.0
        );
        sub
    }

    /// Reads chunks that have arrived and splits them into RecordIO records.
    fn pump(&mut self) -> bool {
        let mut open = true;
        loop {
            let mut size = String::new();
            match self.reader.read_line(&mut size) {
                Ok(0) => {
                    open = false;
                    break;
                }
                Err(_) => break,
                Ok(_) => {}
            }
            let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
                continue;
            };
            if n == 0 {
                open = false;
                break;
            }
            let mut chunk = vec![0u8; n + 2];
            self.reader
                .get_mut()
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            self.reader.read_exact(&mut chunk).unwrap();
            self.reader
                .get_mut()
                .set_read_timeout(Some(Duration::from_millis(300)))
                .unwrap();
            self.buf.extend_from_slice(&chunk[..n]);
        }
        // `<length>\n<json>` records, back to back.
        while let Some(nl) = self.buf.iter().position(|&b| b == b'\n') {
            let len: usize = std::str::from_utf8(&self.buf[..nl])
                .unwrap()
                .parse()
                .expect("RecordIO length");
            if self.buf.len() < nl + 1 + len {
                break;
            }
            let v: Value = serde_json::from_slice(&self.buf[nl + 1..nl + 1 + len]).unwrap();
            self.events.push(v);
            self.buf.drain(..nl + 1 + len);
        }
        open
    }

    /// The first event not yet returned that matches `pred`.
    fn next_event(&mut self, pred: impl Fn(&Value) -> bool, timeout: Duration) -> Value {
        let mut taken = 0;
        wait::until("an event on the scheduler stream", timeout, || {
            self.pump();
            let found = self
                .events
                .iter()
                .enumerate()
                .skip(taken)
                .find(|(_, e)| pred(e))
                .map(|(i, e)| (i, e.clone()));
            if let Some((i, _)) = &found {
                taken = *i;
            }
            found.map(|(_, e)| e)
        })
        .unwrap()
    }

    fn updates(&mut self, task: &str) -> Vec<Value> {
        self.pump();
        self.events
            .iter()
            .filter(|e| e["type"] == "UPDATE" && e["update"]["status"]["task_id"]["value"] == task)
            .map(|e| e["update"]["status"].clone())
            .collect()
    }
}

/// A scheduler call on its own connection; returns status and body.
fn call(port: u16, stream_id: Option<&str>, content_type: &str, body: &str) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    let mut req = agent
        .post(&format!("http://127.0.0.1:{port}/api/v1/scheduler"))
        .header("Content-Type", content_type);
    if let Some(id) = stream_id {
        req = req.header("Mesos-Stream-Id", id);
    }
    let mut resp = req.send(body).unwrap();
    let status = resp.status().as_u16();
    (status, resp.body_mut().read_to_string().unwrap_or_default())
}

fn framework_call(port: u16, sub: &Subscription, body: Value) -> (u16, String) {
    let mut body = body;
    body["framework_id"] = json!({ "value": sub.framework_id });
    call(
        port,
        Some(&sub.stream_id),
        "application/json",
        &body.to_string(),
    )
}

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

#[test]
fn a_v1_framework_gets_offers_launches_a_docker_task_and_manages_it() {
    image::ensure().unwrap();
    let broker = Broker::start().unwrap();
    let bridge = Bridge::start(&broker.url(), "").unwrap();
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

    // DECLINE with a long filter: no offer of that agent; REVIVE clears it.
    let offer2 = sub.next_event(|e| e["type"] == "OFFERS", LONG);
    let seen_offers = sub.events.iter().filter(|e| e["type"] == "OFFERS").count();
    let (code, _) = framework_call(
        port,
        &sub,
        json!({ "type": "DECLINE", "decline": {
        "offer_ids": [offer2["offers"]["offers"][0]["id"]], "filters": { "refuse_seconds": 3600 } } }),
    );
    assert_eq!(code, 202);
    let quiet = wait::until("three quiet seconds", Duration::from_secs(4), || {
        sub.pump();
        (sub.events.iter().filter(|e| e["type"] == "OFFERS").count() > seen_offers).then_some(())
    });
    assert!(quiet.is_err(), "an offer came despite the filter");
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
    let mut sub = Subscription::open(port, info, Some(&fid));
    assert_eq!(sub.framework_id, fid);
    let (code, _) = framework_call(
        port,
        &sub,
        json!({ "type": "RECONCILE", "reconcile": { "tasks": [] } }),
    );
    assert_eq!(code, 202);
    let rec = sub.next_event(
        |e| e["update"]["status"]["task_id"]["value"] == "fw-web-1",
        LONG,
    );
    assert_eq!(rec["update"]["status"]["state"], "TASK_RUNNING");

    // KILL (no agent id), then the heartbeat, then TEARDOWN ends the stream.
    let (code, _) = framework_call(
        port,
        &sub,
        json!({ "type": "KILL", "kill": { "task_id": { "value": "fw-web-1" } } }),
    );
    assert_eq!(code, 202);
    sub.next_event(|e| e["update"]["status"]["state"] == "TASK_KILLED", LONG);
    sub.next_event(|e| e["type"] == "HEARTBEAT", Duration::from_secs(20));
    let (code, _) = framework_call(port, &sub, json!({ "type": "TEARDOWN" }));
    assert_eq!(code, 202);
    wait::until("the stream to end", Duration::from_secs(10), || {
        (!sub.pump()).then_some(())
    })
    .unwrap();
    let (code, msg) = framework_call(port, &sub, json!({ "type": "REVIVE" }));
    assert_eq!(code, 403, "{msg}");
}
