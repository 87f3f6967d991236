//! The Mesos v1 scheduler API under a simulated fleet: N agents through mosquitto (one MQTT
//! connection, no containers), one framework subscribed with a plain-HTTP client.
//!
//! Prints:
//! - offers delivered to the framework per second (until every agent has been offered);
//! - bytes of one agent's offer on the MQTT wire (CBOR) against the JSON offer the framework
//!   receives;
//! - ACCEPT-to-RUNNING latency (ACCEPT sent to the RUNNING update read), p50 and p99, against
//!   the baseline of one message's round trip through the broker, measured in the same run.
//!
//! Usage: `scheduler-bench [AGENTS]` (default 1000). `OUTPOST_BRIDGE_BIN` picks the bridge.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use anyhow::Result;
use serde_json::json;

use outpost_bench::{ms, percentile};
use outpost_protocol::codec::encode_to_vec;
use outpost_tests::bridge::Bridge;
use outpost_tests::fleet_sim::Fleet;
use outpost_tests::mesos_client::{Subscription, framework_call};
use outpost_tests::mosquitto::Broker;
use outpost_tests::wait;

fn main() -> Result<()> {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1000);
    let long = Duration::from_secs(300);
    let broker = Broker::start_with_config("max_queued_messages 0\nmax_inflight_messages 0\n")?;
    let bridge = Bridge::start(&broker.url(), "")?;
    let fleet = Fleet::connect(&broker)?;

    // Baseline: one message's round trip through the broker, 200 times.
    let mut echo = Vec::new();
    for i in 0..200 {
        let t = Instant::now();
        fleet.publish("bench/echo".into(), false, vec![i as u8; 64])?;
        wait::until("an echo", long, || {
            (fleet.seen.lock().unwrap().echoes > i).then_some(())
        })?;
        echo.push(t.elapsed());
    }

    for i in 0..n {
        fleet.join(&format!("sim-{i:05}"))?;
    }
    wait::until("every agent online", long, || {
        let m = bridge.json("/metrics");
        (m["gauges"]["outpost.agents.online.count"]["value"].as_u64()? as usize >= n).then_some(())
    })?;

    let info =
        json!({ "user": "root", "name": "bench", "capabilities": [{ "type": "PARTITION_AWARE" }] });
    let subscribed = Instant::now();
    let mut sub = Subscription::open(bridge.mesos_port(), info, None);
    sub.set_poll_timeout(Duration::from_millis(2));
    let mut offered: HashMap<String, serde_json::Value> = HashMap::new();
    wait::until("an offer of every agent", long, || {
        sub.pump();
        for e in sub.events.iter().filter(|e| e["type"] == "OFFERS") {
            for o in e["offers"]["offers"].as_array().into_iter().flatten() {
                offered
                    .entry(o["agent_id"]["value"].as_str().unwrap_or("").to_string())
                    .or_insert_with(|| o.clone());
            }
        }
        (offered.len() >= n).then_some(())
    })?;
    let offers_elapsed = subscribed.elapsed();
    let sample = offered.values().next().cloned().unwrap_or_default();
    let json_bytes = sample.to_string().len();
    let cbor_bytes = encode_to_vec(&Fleet::offer("sim-00000")).len();

    // ACCEPT one task on each of K offers; time each to its RUNNING update.
    let k = n.min(200);
    let mut accepted: HashMap<String, Instant> = HashMap::new();
    for (i, o) in offered.values().take(k).enumerate() {
        let task = format!("bench-{i}");
        let body = json!({ "type": "ACCEPT", "accept": {
            "offer_ids": [o["id"]],
            "operations": [{ "type": "LAUNCH", "launch": { "task_infos": [{
                "name": task, "task_id": { "value": task }, "agent_id": o["agent_id"],
                "resources": [
                    { "name": "cpus", "type": "SCALAR", "scalar": { "value": 0.1 } },
                    { "name": "mem", "type": "SCALAR", "scalar": { "value": 32 } }
                ],
                "container": { "type": "DOCKER", "docker": { "image": "busybox", "network": "HOST" } }
            }] } }] } });
        let sent = Instant::now();
        let (code, msg) = framework_call(bridge.mesos_port(), &sub, body);
        anyhow::ensure!(code == 202, "ACCEPT: {code} {msg}");
        accepted.insert(task, sent);
    }
    let mut latency: Vec<Duration> = Vec::new();
    let mut done: HashSet<String> = HashSet::new();
    let mut read = 0;
    wait::until("every accepted task RUNNING", long, || {
        sub.pump();
        let now = Instant::now();
        for e in &sub.events[read..] {
            let s = &e["update"]["status"];
            if e["type"] == "UPDATE" && s["state"] == "TASK_RUNNING" {
                let id = s["task_id"]["value"].as_str().unwrap_or("").to_string();
                if let Some(sent) = accepted.get(&id)
                    && done.insert(id)
                {
                    latency.push(now.duration_since(*sent));
                }
            }
        }
        read = sub.events.len();
        (done.len() >= k).then_some(())
    })?;

    let echo_p50 = percentile(echo, 0.5);
    let p50 = percentile(latency.clone(), 0.5);
    let p99 = percentile(latency, 0.99);
    println!("## {n} agents, one framework");
    println!(
        "offers: {n} agents offered in {:.2} s: {:.0} offers/s",
        offers_elapsed.as_secs_f64(),
        n as f64 / offers_elapsed.as_secs_f64()
    );
    println!(
        "one offer: {cbor_bytes} B CBOR on MQTT vs {json_bytes} B JSON to the framework ({:.2}x)",
        cbor_bytes as f64 / json_bytes as f64
    );
    println!(
        "ACCEPT-to-RUNNING ({k} tasks): p50 {} p99 {}; broker round trip p50 {} ({:.1}x)",
        ms(p50),
        ms(p99),
        ms(echo_p50),
        p50.as_secs_f64() / echo_p50.as_secs_f64().max(1e-9)
    );
    Ok(())
}
