//! Bytes on the wire: Outpost's CBOR offer and launch command against the Mesos v1 JSON of the
//! same offer and TaskInfo (what a Mesos master sends a framework, and what a framework sends
//! back), both built from `outpost_protocol::examples` in this run.
//!
//! Run: `cargo run --release -p outpost-bench --bin wire-size`

use outpost_protocol::codec::encode_to_vec;
use outpost_protocol::{Offer, TaskSpec, examples};
use serde_json::{Value, json};

fn scalar(name: &str, value: f64) -> Value {
    json!({"name": name, "type": "SCALAR", "scalar": {"value": value}, "role": "*"})
}

fn ranges(ranges: &[(u16, u16)]) -> Value {
    let range: Vec<Value> = ranges
        .iter()
        .map(|(b, e)| json!({"begin": b, "end": e}))
        .collect();
    json!({"name": "ports", "type": "RANGES", "ranges": {"range": range}, "role": "*"})
}

/// The Mesos v1 `Offer` a framework receives for the agent's offer.
fn mesos_offer(offer: &Offer, hostname: &str) -> Value {
    let ports: Vec<(u16, u16)> = offer
        .available
        .ports
        .iter()
        .map(|r| (r.begin, r.end))
        .collect();
    let attributes: Vec<Value> = offer
        .attributes
        .iter()
        .map(|a| json!({"name": a.name.as_str(), "type": "TEXT", "text": {"value": a.value.as_str()}}))
        .collect();
    json!({
        "id": {"value": format!("{}-O{}", offer.agent_id, offer.seq)},
        "framework_id": {"value": "b7a1c1d2-9f00-4a5e-8f51-6c1d7e0a4b11-0000"},
        "agent_id": {"value": offer.agent_id.as_str()},
        "hostname": hostname,
        "resources": [
            scalar("cpus", offer.available.cpus),
            scalar("mem", offer.available.mem_mib),
            scalar("disk", offer.available.disk_mib),
            ranges(&ports),
        ],
        "attributes": attributes,
        "allocation_info": {"role": "*"},
    })
}

/// The Mesos v1 `TaskInfo` (in an ACCEPT's LAUNCH) asking for the same task.
fn mesos_task_info(spec: &TaskSpec, agent_id: &str, host_port: u16) -> Value {
    let env: Vec<Value> = spec
        .env
        .iter()
        .map(|kv| json!({"name": kv.name.as_str(), "value": kv.value.as_str()}))
        .collect();
    let mappings: Vec<Value> = spec
        .port_mappings
        .iter()
        .map(|m| json!({"host_port": host_port, "container_port": m.container_port, "protocol": "tcp"}))
        .collect();
    let hc = &spec.health_checks[0];
    json!({
        "name": spec.app_id.as_ref().map(|a| a.trim_start_matches('/')).unwrap_or_default(),
        "task_id": {"value": spec.task_id.as_str()},
        "agent_id": {"value": agent_id},
        "resources": [
            scalar("cpus", spec.cpus),
            scalar("mem", spec.mem_mib),
            ranges(&[(host_port, host_port)]),
        ],
        "command": {"shell": false, "environment": {"variables": env}},
        "container": {
            "type": "DOCKER",
            "docker": {
                "image": spec.image.as_str(),
                "network": "BRIDGE",
                "port_mappings": mappings,
                "force_pull_image": spec.force_pull,
            },
        },
        "health_check": {
            "type": "HTTP",
            "http": {"port": host_port, "path": hc.path.as_ref().map(|p| p.as_str()).unwrap_or("/")},
            "delay_seconds": hc.delay_s,
            "interval_seconds": hc.interval_s,
            "timeout_seconds": hc.timeout_s,
            "consecutive_failures": hc.max_consecutive_failures,
            "grace_period_seconds": hc.grace_period_s,
        },
        "kill_policy": {"grace_period": {"nanoseconds": u64::from(spec.kill_grace_period_s) * 1_000_000_000}},
    })
}

fn row(what: &str, cbor: usize, json: usize) {
    // Lengths are small: the f64 conversion is exact.
    let ratio = cbor as f64 / json as f64;
    println!("| {what} | {cbor} | {json} | {ratio:.2} |");
}

fn main() {
    let offer = examples::offer();
    let hello = examples::hello();
    let launch = examples::launch();
    let spec = examples::task_spec();

    let offer_cbor = encode_to_vec(&offer).len();
    let offer_json =
        serde_json::to_vec(&mesos_offer(&offer, &hello.hostname)).map_or(0, |v| v.len());
    let launch_cbor = encode_to_vec(&launch).len();
    let launch_json =
        serde_json::to_vec(&mesos_task_info(&spec, &offer.agent_id, 31007)).map_or(0, |v| v.len());

    println!("| message | Outpost CBOR bytes | Mesos v1 JSON bytes (baseline) | CBOR / JSON |");
    println!("| --- | --- | --- | --- |");
    row("offer (examples::offer)", offer_cbor, offer_json);
    row(
        "launch command / TaskInfo (examples::launch)",
        launch_cbor,
        launch_json,
    );
}
