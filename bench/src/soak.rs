//! Partition soak: N short network partitions between a live agent and its broker (a TCP
//! proxy cut and healed), each with a health failure the agent handles on its own while cut.
//!
//! Prints, at the end: status updates produced (unique uuids the agent sent, from its log),
//! delivered (unique uuids a subscriber received), lost (produced, never delivered),
//! duplicated (deliveries beyond the first per uuid, which the bridge drops), and the time
//! from each heal to the cycle's last update arriving (p50, p99, max).
//!
//! Usage: `soak [CYCLES]` (default 100). `OUTPOST_AGENT_BIN` picks the agent binary.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use anyhow::Result;

use outpost_protocol::*;
use outpost_tests::agent::Agent;
use outpost_tests::bridge_sim::BridgeSim;
use outpost_tests::docker::docker;
use outpost_tests::image;
use outpost_tests::mosquitto::Broker;
use outpost_tests::proxy::TcpProxy;
use outpost_tests::{specs, wait};

const TASKS: usize = 3;

/// The test image with a 1 s health check that kills on the first failure, and a short
/// restart backoff, so a cycle is quick.
fn task(id: &str) -> TaskSpec {
    let mut spec = specs::web_task(id, image::TEST_IMAGE);
    spec.cpus = 0.05;
    spec.kill_grace_period_s = 0;
    spec.restart.backoff_s = 0.2;
    spec.health_checks.push(specs::http_check(1)).unwrap();
    spec
}

fn container(task: &str) -> Option<String> {
    let filter = format!("label=outpost.task-id={task}");
    docker(&["ps", "-q", "--filter", &filter])
        .ok()?
        .lines()
        .next()
        .map(str::to_string)
}

fn healthy_after(bridge: &BridgeSim, task: &str, seen: usize) -> bool {
    bridge.with(|r| {
        r.statuses
            .iter()
            .skip(seen)
            .any(|s| s.task_id == task && s.state == TaskState::Running && s.healthy == Some(true))
    })
}

fn main() -> Result<()> {
    let cycles: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100);
    image::ensure()?;
    let broker = Broker::start()?;
    let proxy = TcpProxy::start(broker.port())?;
    let mut bridge = BridgeSim::connect(&broker)?;
    let id = Agent::unique_id("soak");
    let agent = Agent::start(&id, &proxy.mqtt_url(), (21500, 21519), "")?;
    let long = Duration::from_secs(120);
    wait::until("the agent's first offer", long, || bridge.offer(&id))?;
    let names: Vec<String> = (0..TASKS).map(|i| format!("soak.{i}")).collect();
    for n in &names {
        bridge.call(&id, CommandKind::Launch(task(n)))?;
    }
    for n in &names {
        bridge.status(n, long, |s| s.healthy == Some(true))?;
    }
    let mut converge = Vec::new();
    for c in 0..cycles {
        let victim = &names[c % TASKS];
        let seen = bridge.with(|r| r.statuses.len());
        let old = container(victim).unwrap_or_default();
        proxy.cut();
        image::fail_health(&old)?;
        // Cut until the agent has replaced the sick container on its own.
        wait::until("a replacement container while cut", long, || {
            container(victim).filter(|c| *c != old)
        })?;
        proxy.heal();
        let healed = Instant::now();
        wait::until("the cycle's updates delivered", long, || {
            healthy_after(&bridge, victim, seen).then_some(())
        })?;
        converge.push(healed.elapsed());
        if (c + 1) % 10 == 0 {
            eprintln!("{} cycles done", c + 1);
        }
    }
    // Let the last re-sends settle, then count.
    wait::until("the agent's outbox to drain", long, || {
        let produced = produced(&agent.log());
        let delivered: HashSet<String> = delivered(&bridge);
        produced.is_subset(&delivered).then_some(())
    })
    .ok();
    let produced = produced(&agent.log());
    let delivered = delivered(&bridge);
    let deliveries = bridge.with(|r| r.statuses.len());
    let lost = produced.difference(&delivered).count();
    converge.sort();
    let pct = |p: f64| {
        converge[((converge.len() as f64 * p).ceil() as usize).clamp(1, converge.len()) - 1]
    };
    println!(
        "partition cycles: {cycles} ({TASKS} health-checked tasks, one health failure per cut)"
    );
    println!("status updates produced: {}", produced.len());
    println!("delivered (unique): {}", delivered.len());
    println!("lost: {lost}");
    println!(
        "duplicated deliveries (dropped by uuid): {}",
        deliveries - delivered.len()
    );
    println!(
        "converged after heal: p50 {:.2} s, p99 {:.2} s, max {:.2} s",
        pct(0.5).as_secs_f64(),
        pct(0.99).as_secs_f64(),
        converge.last().unwrap().as_secs_f64()
    );
    Ok(())
}

/// Unique status uuids the agent sent, from its log (`uuid=...` of each "status update").
fn produced(log: &str) -> HashSet<String> {
    log.lines()
        .filter(|l| l.contains("status update"))
        .filter_map(|l| l.split("uuid=").nth(1))
        .map(|u| u.split_whitespace().next().unwrap_or("").to_string())
        .collect()
}

fn delivered(bridge: &BridgeSim) -> HashSet<String> {
    bridge.with(|r| {
        r.statuses
            .iter()
            .map(|s| s.uuid.iter().map(|b| format!("{b:02x}")).collect())
            .collect()
    })
}
