//! Failover of a group of bridges over ZooKeeper (`[ha]`): three real `outpost-bridge`
//! processes, a real three-server ZooKeeper ensemble (Debian's `zookeeper`, tickTime 200 ms),
//! a real mosquitto, and a simulated fleet of agents ([`Fleet`]: the real protocol, no
//! containers). Each run deploys an app with one instance per agent, kills the leader with
//! SIGKILL, and measures until a surviving bridge has accepted a scale-up (the new leader
//! committed it) and the new instance's launch reached its agent. It counts the launches
//! and kills the fleet received after the kill beyond that one launch: a task restarted by
//! the failover would show there.
//!
//! Prints each run, then p50 and max, beside the session timeout (the part of a failover
//! that is ZooKeeper noticing the leader is gone) measured in the same run as the time from
//! the kill until another bridge names itself the leader.
//!
//! First, unless `--no-load`: the state a newly elected bridge loads, 10,000 agents and 30,000
//! tasks, written to the ensemble and loaded back as a new leader does, beside redb.
//!
//! `cargo run --release -p outpost-bench --bin failover-bench -- [RUNS] [AGENTS]
//! [--session-timeout MS]` (default 10 runs, 20 agents, 4,000 ms). `OUTPOST_BRIDGE_BIN` picks the bridge binary.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::json;

use outpost_bench::{join, ms, percentile};
use outpost_bridge::app::AppDefinition;
use outpost_bridge::core::Core;
use outpost_bridge::ha::{self, ZkUrl};
use outpost_bridge::store::{RedbStore, StateStore, ZkStore};
use outpost_tests::bridge::Bridge;
use outpost_tests::fleet_sim::Fleet;
use outpost_tests::mosquitto::Broker;
use outpost_tests::wait;
use outpost_tests::zookeeper::Ensemble;

/// The session timeout the bridges ask for unless `--session-timeout MS` (the ensemble's
/// tickTime is set so that it is granted: 200 ms allows 0.4-4 s).
const SESSION_TIMEOUT_MS: u64 = 4000;

/// The bridge each running bridge names as leader, if they agree: its index.
fn leader(bridges: &[Option<Bridge>]) -> Option<usize> {
    let mut named = None;
    for b in bridges.iter().flatten() {
        let a = b.get("/v2/leader").ok().filter(|a| a.status == 200)?;
        let l = a.json()["leader"].as_str()?.to_string();
        if named.as_ref().is_some_and(|n| *n != l) {
            return None;
        }
        named = Some(l);
    }
    let named = named?;
    bridges.iter().position(|b| {
        b.as_ref()
            .is_some_and(|b| named == format!("127.0.0.1:{}", b.port()))
    })
}

fn running(b: &Bridge, id: &str) -> u64 {
    b.json(&format!("/v2/apps{id}"))["app"]["tasksRunning"]
        .as_u64()
        .unwrap_or(0)
}

struct Run {
    /// Kill to another bridge naming itself leader.
    elected: Duration,
    /// Kill to the scale-up accepted and its launch at the agent.
    failover: Duration,
    /// Launches and kills the fleet got after the kill beyond the scale-up's one launch.
    restarts: usize,
}

fn run(zk: &Ensemble, n: usize, i: usize, session_ms: u64) -> Result<Run> {
    let broker = Broker::start_with_config("max_queued_messages 0\nmax_inflight_messages 0\n")?;
    let group = format!(
        "client_id = \"failover-{}-{i}\"\n[ha]\nzk = \"{}\"\nmesos_path = \"/mesos-{i}\"\nsession_timeout_ms = {session_ms}\n",
        std::process::id(),
        zk.url(&format!("/failover-{i}"))
    );
    let log = std::env::var("OUTPOST_LOG").unwrap_or_else(|_| "info".into());
    let mut bridges: Vec<Option<Bridge>> = (0..3)
        .map(|_| Bridge::start_logging(&broker.url(), &group, &log).map(Some))
        .collect::<Result<_>>()?;
    let long = Duration::from_secs(120);
    let first = wait::until("a leader", long, || leader(&bridges))?;
    let fleet = Fleet::connect(&broker)?;
    for a in 0..n {
        fleet.join(&format!("fo-{i}-{a:03}"))?;
    }
    let b = bridges[first].as_ref().context("leader")?;
    let app = json!({
        "id": "/fleet", "instances": n, "cpus": 0.1, "mem": 16,
        "constraints": [["hostname", "UNIQUE"]],
        "container": { "type": "DOCKER", "docker": { "image": "busybox", "network": "HOST" } }
    });
    let a = b.request("POST", "/v2/apps", Some(&app.to_string()))?;
    anyhow::ensure!(a.status == 201, "POST: {} {}", a.status, a.text);
    wait::until("every instance RUNNING", long, || {
        (running(b, "/fleet") as usize >= n).then_some(())
    })?;
    // One more agent, with room for the scale-up's instance.
    fleet.join(&format!("fo-{i}-new"))?;
    let before = {
        let s = fleet.seen.lock().unwrap();
        (s.launch_commands, s.kills)
    };

    let killed = Instant::now();
    bridges[first].as_mut().context("leader")?.kill();
    bridges[first] = None;
    let second = wait::until("another leader", long, || leader(&bridges))?;
    let elected = killed.elapsed();
    let s = bridges[second].as_ref().context("new leader")?;
    wait::until("the scale-up accepted", long, || {
        let a = s
            .request(
                "PUT",
                "/v2/apps/fleet?force=true",
                Some(&json!({ "instances": n + 1 }).to_string()),
            )
            .ok()?;
        (a.status == 200).then_some(())
    })?;
    wait::until("the new instance's launch at its agent", long, || {
        let seen = fleet.seen.lock().unwrap();
        (seen.launch_commands > before.0).then_some(())
    })?;
    let failover = killed.elapsed();
    // Let the new leader's reconcile of every agent settle before counting.
    wait::until("n + 1 RUNNING at the new leader", long, || {
        (running(s, "/fleet") as usize > n).then_some(())
    })?;
    let after = {
        let seen = fleet.seen.lock().unwrap();
        (seen.launch_commands, seen.kills)
    };
    Ok(Run {
        elected,
        failover,
        restarts: (after.0 - before.0).saturating_sub(1) + (after.1 - before.1),
    })
}

/// What a newly elected bridge loads: `agents` agents and `per_agent` tasks on each, written
/// to ZooKeeper, then loaded as `lead` does (`ZkStore::open` learns which records exist,
/// `Core::load` reads them all), beside the same records from redb.
fn load(zk: &Ensemble, agents: usize, per_agent: usize) -> Result<()> {
    let now = 1_000_000u64;
    let mut core = Core::default();
    for i in 0..agents {
        join(&mut core, now, &format!("ld-{i:06}"));
    }
    for a in 0..per_agent {
        let app = format!(
            r#"{{"id":"/load-{a}","instances":{agents},"cpus":0.01,"mem":4,"constraints":[["hostname","UNIQUE"]],
            "container":{{"type":"DOCKER","docker":{{"image":"busybox","network":"HOST"}}}}}}"#
        );
        let def =
            AppDefinition::parse(app.as_bytes(), None).map_err(|e| anyhow::anyhow!("{e:?}"))?;
        core.create_app(now, def)
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        while core.more_to_launch() {
            core.settle(now);
        }
    }
    core.settle(now);
    let writes = core.take_writes();
    let _ = core.take_effects();
    let tasks = core.tasks(None).count();
    let bytes: usize = writes
        .iter()
        .map(|w| w.value.as_ref().map_or(0, Vec::len))
        .sum();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let url = ZkUrl::parse(&zk.url("/load")).map_err(anyhow::Error::msg)?;
    let session = || -> Result<_> {
        let c = rt.block_on(ha::connect(&url, Duration::from_secs(4)))?;
        let e = rt.block_on(ha::take_epoch(&c, &url))?;
        Ok((c, e))
    };
    let (client, epoch) = session()?;
    let mut store = ZkStore::open(client, url.clone(), rt.handle().clone(), epoch)?;
    let t = Instant::now();
    store.commit(&writes)?;
    let written = t.elapsed();
    drop(store);
    let (client, epoch) = session()?;
    let t = Instant::now();
    let store = ZkStore::open(client, url.clone(), rt.handle().clone(), epoch)?;
    let loaded = Core::load(now, &store).map_err(|e| anyhow::anyhow!("{e}"))?;
    let zk_load = t.elapsed();
    anyhow::ensure!(loaded.tasks(None).count() == tasks, "every task loaded");

    let dir = std::env::temp_dir().join(format!("failover-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let mut redb = RedbStore::open(&dir.join("bridge.redb"))?;
    redb.commit(&writes)?;
    let t = Instant::now();
    let from_redb = Core::load(now, &redb).map_err(|e| anyhow::anyhow!("{e}"))?;
    let redb_load = t.elapsed();
    anyhow::ensure!(from_redb.tasks(None).count() == tasks);
    drop(redb);
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "## state load: {agents} agents, {tasks} tasks ({} records, {:.1} MB)",
        writes.len(),
        bytes as f64 / 1e6
    );
    println!(
        "written to ZooKeeper in {:.2} s; loaded by a new leader in {:.2} s (redb, same records: {:.2} s; ratio {:.1}x)",
        written.as_secs_f64(),
        zk_load.as_secs_f64(),
        redb_load.as_secs_f64(),
        zk_load.as_secs_f64() / redb_load.as_secs_f64().max(1e-6)
    );
    println!();
    Ok(())
}

fn main() -> Result<()> {
    let mut session_ms = SESSION_TIMEOUT_MS;
    let mut args = Vec::new();
    let mut all = std::env::args().skip(1);
    while let Some(a) = all.next() {
        if a == "--session-timeout" {
            session_ms = all
                .next()
                .and_then(|v| v.parse().ok())
                .context("--session-timeout MS: a number of milliseconds")?;
        } else if let Ok(n) = a.parse::<usize>() {
            args.push(n);
        }
    }
    let runs = args.first().copied().unwrap_or(10);
    let agents = args.get(1).copied().unwrap_or(20);
    // Sessions are granted up to 20 ticks.
    let zk = Ensemble::start_with_tick(3, session_ms.div_ceil(20).max(200))?;
    if !std::env::args().any(|a| a == "--no-load") {
        load(&zk, 10_000, 3)?;
    }
    println!(
        "## failover: 3 bridges, 3 ZooKeeper servers, {agents} agents, session timeout {session_ms} ms"
    );
    let mut elected = Vec::new();
    let mut failover = Vec::new();
    let mut restarts = 0;
    for i in 0..runs {
        let r = run(&zk, agents, i, session_ms)?;
        println!(
            "run {}: another leader after {}, scale-up accepted and launched after {}, tasks restarted {}",
            i + 1,
            ms(r.elected),
            ms(r.failover),
            r.restarts
        );
        elected.push(r.elected);
        failover.push(r.failover);
        restarts += r.restarts;
    }
    let max = |v: &[Duration]| v.iter().max().copied().unwrap_or_default();
    println!(
        "another leader: p50 {} max {} (the session timeout is {session_ms} ms)",
        ms(percentile(elected.clone(), 0.5)),
        ms(max(&elected))
    );
    println!(
        "failover (kill -9 to a scale-up committed and launched): p50 {} max {}; tasks restarted in all runs: {restarts}",
        ms(percentile(failover.clone(), 0.5)),
        ms(max(&failover))
    );
    Ok(())
}
