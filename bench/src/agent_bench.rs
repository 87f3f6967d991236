//! The agent's footprint and speed, each against a baseline measured in the same run:
//! - RSS idle and with 20 and 100 health-checked containers, against an idle `sleep` process;
//! - launch latency, command to RUNNING, against `docker run -d -p` of the same local image;
//! - health probes per second and the agent's CPU share while probing 100 containers.
//!
//! Run after `packaging/build-static`:
//! `OUTPOST_AGENT_BIN=target/x86_64-unknown-linux-gnu/release/outpost-agent cargo run --release -p outpost-bench --bin agent-bench`
//! Needs dockerd and mosquitto (as `scripts/test` installs them).

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use outpost_protocol::*;
use outpost_tests::agent::Agent;
use outpost_tests::bridge_sim::BridgeSim;
use outpost_tests::docker::{Scope, docker};
use outpost_tests::mosquitto::Broker;
use outpost_tests::{image, wait};

const LAUNCHES: usize = 10;

fn t<const N: usize>(s: &str) -> Text<N> {
    Text::new(s).unwrap_or_default()
}

fn task(id: &str, img: &str, check: bool) -> TaskSpec {
    let mut s = TaskSpec {
        task_id: t(id),
        image: t(img),
        cpus: 0.01,
        mem_mib: 16.0,
        network: NetworkMode::Bridge,
        kill_grace_period_s: 1,
        ..Default::default()
    };
    let _ = s.port_mappings.push(PortMapping {
        container_port: 80,
        ..Default::default()
    });
    if check {
        let _ = s.health_checks.push(HealthCheck {
            protocol: HealthProtocol::Http,
            path: Some(t("/health")),
            interval_s: 1,
            timeout_s: 1,
            max_consecutive_failures: 0,
            ..Default::default()
        });
    }
    s
}

/// Resident set size of `pid` in KiB.
fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .context("VmRSS")
}

/// CPU time (user + system) of `pid` in clock ticks.
fn cpu_ticks(pid: u32) -> Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after = stat.rsplit_once(')').context("stat")?.1;
    let f: Vec<&str> = after.split_whitespace().collect();
    Ok(f[11].parse::<u64>()? + f[12].parse::<u64>()?)
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Launches `n` checked tasks named `prefix.i` and waits until all are healthy.
fn launch_healthy(
    bridge: &mut BridgeSim,
    agent: &str,
    img: &str,
    prefix: &str,
    n: usize,
) -> Result<()> {
    for i in 0..n {
        bridge.send(
            agent,
            CommandKind::Launch(task(&format!("{prefix}.{i}"), img, true)),
        )?;
    }
    for i in 0..n {
        bridge.status(&format!("{prefix}.{i}"), Duration::from_secs(300), |s| {
            s.healthy == Some(true)
        })?;
    }
    Ok(())
}

fn main() -> Result<()> {
    let img = image::ensure()?;
    let broker = Broker::start()?;
    let mut bridge = BridgeSim::connect(&broker)?;
    let id = Agent::unique_id("bench");
    let agent = Agent::start(&id, &broker.url(), (22000, 22999), "")?;
    let result = measure(&mut bridge, &agent, &id, img);
    if result.is_err() {
        eprintln!("---- agent log ----\n{}", agent.log());
    }
    result
}

fn measure(bridge: &mut BridgeSim, agent: &Agent, id: &str, img: &str) -> Result<()> {
    let id = id.to_string();
    let pid = agent.pid().context("agent pid")?;
    wait::until("the agent's offer", Duration::from_secs(30), || {
        bridge.offer(&id)
    })?;
    let baseline = std::process::Command::new("sleep").arg("600").spawn()?;
    // Let both settle.
    let settle = Instant::now();
    wait::until("a settled idle agent", Duration::from_secs(10), || {
        (settle.elapsed() > Duration::from_secs(3)).then_some(())
    })?;
    let idle = rss_kib(pid)?;
    let sleep_rss = rss_kib(baseline.id())?;

    // Launch latency: one task at a time, command to RUNNING.
    let mut agent_times = Vec::new();
    for i in 0..LAUNCHES {
        let name = format!("lat.{i}");
        let sent_ms = now_ms();
        bridge.send(&id, CommandKind::Launch(task(&name, img, false)))?;
        // The agent's own timestamp of RUNNING (same host clock): the test's polling interval
        // is not part of the figure.
        let running = bridge.state(&name, TaskState::Running, Duration::from_secs(60))?;
        agent_times.push(Duration::from_millis(
            running.timestamp_ms.saturating_sub(sent_ms),
        ));
        bridge.call(
            &id,
            CommandKind::Kill(KillTask {
                task_id: t(&name),
                grace_period_s: Some(0),
            }),
        )?;
        bridge.state(&name, TaskState::Killed, Duration::from_secs(60))?;
        // Like the baseline's synchronous `docker rm -f`: the next launch starts on a quiet
        // dockerd, not while it still removes this container.
        wait::until(
            "the container to be removed",
            Duration::from_secs(30),
            || agent.containers().ok().filter(Vec::is_empty),
        )?;
    }
    if std::env::var_os("BENCH_SHOW_LOG").is_some() {
        eprintln!("{}", agent.log());
    }
    let scope = Scope::new()?;
    let mut docker_times = Vec::new();
    for _ in 0..LAUNCHES {
        let start = Instant::now();
        let ctr = scope.run_detached(&["-p", "127.0.0.1::80", "--memory", "16m", img])?;
        docker_times.push(start.elapsed());
        docker(&["rm", "-f", &ctr])?;
    }

    if std::env::var_os("BENCH_LAUNCH_ONLY").is_some() {
        println!(
            "launch medians: agent {:?}, docker {:?}",
            median(agent_times),
            median(docker_times)
        );
        return Ok(());
    }
    launch_healthy(bridge, &id, img, "h20", 20)?;
    let wait_rss = Instant::now();
    wait::until(
        "20 containers probed for 10 s",
        Duration::from_secs(20),
        || (wait_rss.elapsed() > Duration::from_secs(10)).then_some(()),
    )?;
    let rss20 = rss_kib(pid)?;
    launch_healthy(bridge, &id, img, "h80", 80)?;
    // CPU share and probe rate over a full 30 s probe report window.
    let log_before = agent
        .log()
        .matches("health probes in the last 30 s")
        .count();
    let ticks0 = cpu_ticks(pid)?;
    let t0 = Instant::now();
    let report = wait::until(
        "a probe report with 100 containers",
        Duration::from_secs(90),
        || {
            let log = agent.log();
            let reports: Vec<&str> = log
                .lines()
                .filter(|l| l.contains("health probes in the last 30 s"))
                .collect();
            (reports.len() >= log_before + 2).then(|| reports[reports.len() - 1].to_string())
        },
    )?;
    let cpu = (cpu_ticks(pid)? - ticks0) as f64 / 100.0 / t0.elapsed().as_secs_f64();
    let rss100 = rss_kib(pid)?;
    let per_second = report
        .split("per_second=")
        .nth(1)
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<f64>().ok())
        .map_or_else(|| "?".to_string(), |v| format!("{v:.1}"));
    drop(baseline);

    let a = median(agent_times);
    let d = median(docker_times);
    println!("| measure | outpost-agent | baseline (same run) | ratio |");
    println!("| --- | --- | --- | --- |");
    println!(
        "| RSS idle | {idle} KiB | idle `sleep`: {sleep_rss} KiB | {:.1}x |",
        idle as f64 / sleep_rss as f64
    );
    println!(
        "| RSS, 20 containers checked every 1 s | {rss20} KiB | idle agent: {idle} KiB | {:.2}x |",
        rss20 as f64 / idle as f64
    );
    println!(
        "| RSS, 100 containers checked every 1 s | {rss100} KiB | idle agent: {idle} KiB | {:.2}x |",
        rss100 as f64 / idle as f64
    );
    println!(
        "| launch, command to RUNNING (median of {LAUNCHES}) | {:.0} ms | `docker run -d -p`: {:.0} ms | {:.2}x |",
        a.as_secs_f64() * 1000.0,
        d.as_secs_f64() * 1000.0,
        a.as_secs_f64() / d.as_secs_f64()
    );
    println!("| health probes per second, 100 containers | {per_second} | scheduled: 100 | |");
    println!(
        "| agent CPU while probing 100 containers | {:.1} % of one core | | |",
        cpu * 100.0
    );
    Ok(())
}
