//! The bridge under a simulated fleet: N agents speak the real protocol through a real
//! mosquitto (multiplexed over one MQTT connection, no containers), the real `outpost-bridge`
//! places an app with one instance per agent, and the simulated agents answer every launch
//! with RUNNING at once.
//!
//! Prints, for each N given on the command line (default 100 1000):
//! - agents registered (hello, offer, liveness) until the bridge counts them all online;
//! - deploy-to-all-RUNNING of an app with N instances (`hostname UNIQUE`), against the
//!   baseline of the same messages through the broker alone: N launch-sized messages to the
//!   fleet, its N reply-sized and 2N status-sized answers, 2N acknowledgement-sized messages
//!   back (sizes as measured in the deploy), with a client that only answers where the bridge
//!   stands ([`EchoBridge`]); also the earlier baseline, N 64-byte messages the fleet echoes
//!   to itself;
//! - launch latency (POST to the launch arriving at the agent), p50 and p99;
//! - offer-to-launch latency: once every status of the deploy is acknowledged, 100 more
//!   instances are queued, then 100 new agents come online one at a time; time from each
//!   agent's liveness message to its launch, p50 and p99;
//! - the bridge's RSS (against the idle bridge) and its CPU time during the deploy.
//!
//! With `--read-load`, each N runs in pairs on fresh bridges, five pairs in turn: once as
//! above, once with a reader polling `GET /v2/apps?embed=apps.tasks` and `GET /master/state`
//! back to back for the whole deploy (bounded: at most 100,000 requests); it prints both
//! deploy times and their ratio for each pair, then the median ratio and the range.
//!
//! With `--zk`, each N runs twice: with the bridge's state in redb, then in a real three-server
//! ZooKeeper ensemble (`[ha]`, one bridge that elects itself); it prints both deploy times and
//! their ratio.
//!
//! `OUTPOST_BRIDGE_BIN` picks the binary (the static release build for the figures);
//! `OUTPOST_BENCH_LOGS=DIR` keeps each run's bridge log there (`bridge-N.log`).

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::json;

use outpost_bench::{ms, percentile};
use outpost_tests::bridge::Bridge;
use outpost_tests::fleet_sim::{EchoBridge, Fleet, Sizes};
use outpost_tests::mosquitto::Broker;
use outpost_tests::wait;
use outpost_tests::zookeeper::Ensemble;

/// A `/proc/PID/status` figure in KiB (`VmRSS`, `VmHWM`).
fn status_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmRSS")
}

fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // After "pid (comm)": state is field 0, utime field 11, stime field 12 (man 5 proc).
    let after = stat.rsplit_once(')').map(|x| x.1).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    (ticks(11) + ticks(12)) as f64 / 100.0
}

fn running(bridge: &Bridge, id: &str) -> u64 {
    bridge.json("/v2/apps")["apps"]
        .as_array()
        .and_then(|a| a.iter().find(|x| x["id"] == id))
        .and_then(|a| a["tasksRunning"].as_u64())
        .unwrap_or(0)
}

/// Reads the bridge's two biggest answers back to back until `stop`; returns how many.
fn read_load(bridge: &Bridge, stop: &std::sync::atomic::AtomicBool) -> usize {
    let mut n = 0;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) && n < 100_000 {
        let _ = bridge.get("/v2/apps?embed=apps.tasks");
        let _ = bridge.mesos_get("/master/state");
        n += 2;
    }
    n
}

fn run(n: usize, with_reads: bool) -> Result<Duration> {
    run_on(n, with_reads, None)
}

/// [`run`], with the bridge's state in ZooKeeper (`[ha]`, one bridge: it elects itself) when
/// `zk` is given.
fn run_on(n: usize, with_reads: bool, zk: Option<&Ensemble>) -> Result<Duration> {
    // Lift mosquitto's per-client limits (1000 queued, 20 in flight by default): the bridge's
    // and the fleet's sessions carry tens of thousands of QoS 1 messages.
    let broker = Broker::start_with_config("max_queued_messages 0\nmax_inflight_messages 0\n")?;
    // Logging as in production (the test harness's default is debug); OUTPOST_LOG overrides.
    let log = std::env::var("OUTPOST_LOG").unwrap_or_else(|_| "info".into());
    let ha = zk.map(|zk| {
        static RUN: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let k = RUN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        format!(
            "[ha]\nzk = \"{}\"\nmesos_path = \"/mesos-bench-{k}\"\nsession_timeout_ms = 4000\n",
            zk.url(&format!("/bench-{k}"))
        )
    });
    let bridge = Bridge::start_logging(&broker.url(), ha.as_deref().unwrap_or(""), &log)?;
    if ha.is_some() {
        wait::until("the bridge leading", Duration::from_secs(60), || {
            bridge.get("/v2/leader").ok().filter(|a| a.status == 200)
        })?;
    }
    let pid = bridge.pid().context("bridge pid")?;
    let idle_rss = rss_kib(pid);
    let idle_anon = status_kib(pid, "RssAnon");
    let fleet = Fleet::connect(&broker)?;
    let long = Duration::from_secs(600);

    // Baseline: n messages through the broker and back, nothing else.
    let t = Instant::now();
    for i in 0..n {
        fleet.publish("bench/echo".into(), false, vec![i as u8; 64])?;
    }
    wait::until("the echoes", long, || {
        (fleet.seen.lock().unwrap().echoes >= n).then_some(())
    })?;
    let echo = t.elapsed();

    let t = Instant::now();
    for i in 0..n {
        fleet.join(&format!("sim-{i:05}"))?;
    }
    wait::until("every agent online at the bridge", long, || {
        let m = bridge.json("/metrics");
        (m["gauges"]["outpost.agents.online.count"]["value"].as_u64()? as usize >= n).then_some(())
    })?;
    let register = t.elapsed();

    let app = json!({
        "id": "/fleet", "instances": n, "cpus": 0.1, "mem": 16,
        "constraints": [["hostname", "UNIQUE"]],
        "container": { "type": "DOCKER", "docker": { "image": "busybox", "network": "HOST" } }
    });
    let cpu0 = cpu_seconds(pid);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (deploy, posted, reads) = std::thread::scope(|scope| -> Result<_> {
        let reader = with_reads.then(|| scope.spawn(|| read_load(&bridge, &stop)));
        let posted = Instant::now();
        let a = bridge.request("POST", "/v2/apps", Some(&app.to_string()))?;
        anyhow::ensure!(a.status == 201, "POST: {} {}", a.status, a.text);
        let done = wait::until("every instance RUNNING", long, || {
            (running(&bridge, "/fleet") as usize >= n).then_some(())
        });
        let deploy = posted.elapsed();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let reads = reader.map(|r| r.join().unwrap_or(0)).unwrap_or(0);
        done?;
        Ok((deploy, posted, reads))
    })?;
    let cpu = cpu_seconds(pid) - cpu0;
    let launch: Vec<Duration> = fleet
        .seen
        .lock()
        .unwrap()
        .launches
        .values()
        .map(|t| t.duration_since(posted))
        .collect();
    let rss = rss_kib(pid);
    // The most the bridge was resident at, the deploy's bursts included.
    let peak = status_kib(pid, "VmHWM");
    // Without the program's own pages (file-backed): the code a deploy runs for the first time
    // is resident after it, whatever the fleet's size.
    let anon = status_kib(pid, "RssAnon");

    // Let the deploy's tail (acknowledgements of its 2n status updates) finish first, so the
    // next phase measures a settled bridge.
    wait::until("every status acknowledged", long, || {
        (fleet.seen.lock().unwrap().acks >= 2 * n).then_some(())
    })?;

    // Offer-to-launch: 100 more instances wait; agents join one at a time.
    let extra = 100;
    let a = bridge.request(
        "PUT",
        "/v2/apps/fleet?force=true",
        Some(&json!({ "instances": n + extra }).to_string()),
    )?;
    anyhow::ensure!(a.status == 200, "PUT: {} {}", a.status, a.text);
    let mut joined = Vec::new();
    for i in 0..extra {
        let id = format!("new-{i:05}");
        joined.push((id.clone(), Instant::now()));
        fleet.join(&id)?;
        std::thread::sleep(Duration::from_millis(20));
    }
    wait::until("the new agents' launches", long, || {
        let s = fleet.seen.lock().unwrap();
        joined
            .iter()
            .all(|(id, _)| s.launches.contains_key(id))
            .then_some(())
    })?;
    let offer_to_launch: Vec<Duration> = {
        let s = fleet.seen.lock().unwrap();
        joined
            .iter()
            .map(|(id, t)| s.launches[id].duration_since(*t))
            .collect()
    };

    // The baseline: the deploy's messages (as many, as big) through the same broker and the
    // same simulated fleet, with a client that only answers in the bridge's place.
    let sizes = fleet.seen.lock().unwrap().bytes;
    let echo_bridge = EchoBridge::connect(&broker, Sizes::mean(sizes.acks))?;
    let launch_bytes = Sizes::mean(sizes.launches);
    let t = Instant::now();
    for i in 0..n {
        echo_bridge.launch(&format!("sim-{i:05}"), launch_bytes)?;
    }
    wait::until("the same messages' answers", long, || {
        (*echo_bridge.answers.lock().unwrap() >= 3 * n).then_some(())
    })?;
    let same = t.elapsed();
    wait::until("the same messages' acknowledgements", long, || {
        (fleet.seen.lock().unwrap().echo_acks >= 2 * n).then_some(())
    })?;
    // What one big read costs a settled bridge of n tasks: wall time, size, the bridge's CPU.
    let idle_reads: Vec<(&str, Duration, usize, f64)> =
        ["/v2/apps?embed=apps.tasks", "/master/state"]
            .into_iter()
            .map(|path| {
                let cpu0 = cpu_seconds(pid);
                let t = Instant::now();
                let a = if path.starts_with("/master") {
                    bridge.mesos_get(path)
                } else {
                    bridge.get(path)
                };
                let took = t.elapsed();
                let bytes = a.map(|a| a.text.len()).unwrap_or(0);
                (path, took, bytes, cpu_seconds(pid) - cpu0)
            })
            .collect();
    if let Ok(dir) = std::env::var("OUTPOST_BENCH_LOGS") {
        let path = std::path::Path::new(&dir).join(format!("bridge-{n}.log"));
        std::fs::write(&path, bridge.log()).with_context(|| format!("{}", path.display()))?;
    }
    println!(
        "## {n} agents{}{}",
        if with_reads {
            format!(" (with {reads} reads during the deploy)")
        } else {
            String::new()
        },
        if zk.is_some() {
            " (state in ZooKeeper)"
        } else {
            ""
        }
    );
    println!("register {n} agents: {:.2} s", register.as_secs_f64());
    println!(
        "deploy to all RUNNING: {:.2} s; broker-only echo of the same messages: {:.2} s; ratio {:.1}x",
        deploy.as_secs_f64(),
        same.as_secs_f64(),
        deploy.as_secs_f64() / same.as_secs_f64().max(1e-6)
    );
    println!(
        "  the same messages: {n} launches of {launch_bytes} B, {n} replies of {} B, {} statuses of {} B, {} acks of {} B",
        Sizes::mean(sizes.replies),
        2 * n,
        Sizes::mean(sizes.statuses),
        2 * n,
        Sizes::mean(sizes.acks),
    );
    println!(
        "  (the earlier baseline, {n} messages of 64 B echoed by the fleet: {:.2} s; ratio {:.1}x)",
        echo.as_secs_f64(),
        deploy.as_secs_f64() / echo.as_secs_f64().max(1e-6)
    );
    println!(
        "launch latency after POST: p50 {} p99 {}",
        ms(percentile(launch.clone(), 0.5)),
        ms(percentile(launch, 0.99))
    );
    println!(
        "offer-to-launch ({extra} agents joining one by one): p50 {} p99 {}",
        ms(percentile(offer_to_launch.clone(), 0.5)),
        ms(percentile(offer_to_launch, 0.99))
    );
    println!(
        "bridge RSS: {rss} KiB (peak {peak} KiB); idle bridge: {idle_rss} KiB; ratio {:.1}x; \
         above idle per agent {:.2} KiB (peak {:.2} KiB)",
        rss as f64 / idle_rss.max(1) as f64,
        rss.saturating_sub(idle_rss) as f64 / n as f64,
        peak.saturating_sub(idle_rss) as f64 / n as f64,
    );
    println!(
        "bridge anonymous RSS: {anon} KiB; idle bridge: {idle_anon} KiB; above idle per agent {:.2} KiB",
        anon.saturating_sub(idle_anon) as f64 / n as f64,
    );
    println!(
        "bridge CPU during the deploy: {cpu:.2} s over {:.2} s wall ({:.0} %)",
        deploy.as_secs_f64(),
        100.0 * cpu / deploy.as_secs_f64()
    );
    for (path, took, bytes, cpu) in idle_reads {
        println!(
            "one {path} of the settled bridge: {} for {:.1} MB, bridge CPU {cpu:.2} s",
            ms(took),
            bytes as f64 / 1e6
        );
    }
    println!();
    Ok(deploy)
}

/// Deploys alone and under reads, in turn, for `--read-load`.
const READ_LOAD_PAIRS: usize = 5;

fn main() -> Result<()> {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let sizes = if sizes.is_empty() {
        vec![100, 1000]
    } else {
        sizes
    };
    let reads = std::env::args().any(|a| a == "--read-load");
    if std::env::args().any(|a| a == "--zk") {
        // The same deploy with the state in redb and in a real three-server ensemble.
        let zk = Ensemble::start(3)?;
        for n in sizes {
            let redb = run_on(n, false, None)?;
            let in_zk = run_on(n, false, Some(&zk))?;
            println!(
                "state store at {n} agents: deploy {:.2} s with redb, {:.2} s with ZooKeeper: {:.2}x",
                redb.as_secs_f64(),
                in_zk.as_secs_f64(),
                in_zk.as_secs_f64() / redb.as_secs_f64().max(1e-6)
            );
            println!();
        }
        return Ok(());
    }
    for n in sizes {
        if !reads {
            run(n, false)?;
            continue;
        }
        // One deploy alone and one under reads, READ_LOAD_PAIRS times in turn: on two shared
        // cores one pair's ratio varies by a fifth from run to run; the median of several
        // does not.
        let mut ratios = Vec::new();
        for pair in 1..=READ_LOAD_PAIRS {
            let alone = run(n, false)?;
            let loaded = run(n, true)?;
            let ratio = loaded.as_secs_f64() / alone.as_secs_f64().max(1e-6);
            println!(
                "read load at {n} agents, pair {pair}: deploy {:.2} s alone, {:.2} s under reads: {ratio:.2}x",
                alone.as_secs_f64(),
                loaded.as_secs_f64(),
            );
            println!();
            ratios.push(ratio);
        }
        ratios.sort_by(f64::total_cmp);
        println!(
            "read load at {n} agents: median {:.2}x over {} pairs (from {:.2}x to {:.2}x)",
            ratios[ratios.len() / 2],
            ratios.len(),
            ratios[0],
            ratios[ratios.len() - 1]
        );
        println!();
    }
    Ok(())
}
