//! The agent's probe engine at scale: the supervisor core and the real probe driver
//! (`outpost_agent::driver::probe::run`, a new connection per HTTP check as Marathon and Mesos
//! do) in one current-thread tokio runtime as the agent runs them (the state's fingerprint
//! taken after every event, as the main loop does; no MQTT, no state file), with N tasks whose HTTP
//! check (every 1 s) targets N local listeners served by a child process (no containers: the
//! core is told each task's container started). Reported: probes per second, the engine's CPU
//! per probe and share of one core, its RSS growth and the sockets it leaves in TIME_WAIT;
//! against baselines measured in the same run from the same kind of runtime, bare loops doing
//! the same number of HTTP GETs (a new connection each, no core, no timeouts): the floor, a
//! request written and one read on a raw tokio socket, reset as the probe driver resets it
//! (what one new loopback connection costs here); the same closed normally; and hyper's
//! client.
//!
//! `cargo run --release -p outpost-bench --bin probe-bench [TASKS] [SECONDS]` (default 1000, 20)

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use outpost_agent::core::{Action, Capacity, Event, Settings, Supervisor};
use outpost_protocol::codec::encode_to_vec;
use outpost_protocol::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const FIRST_PORT: u16 = 42000;

fn t<const N: usize>(s: &str) -> Text<N> {
    Text::new(s).unwrap_or_default()
}

/// CPU time (user + system, every thread) this process has used.
fn cpu() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

/// This process's resident set (KiB), from /proc.
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Sockets in TIME_WAIT to or from the listeners' ports (both ends are on this host), from
/// /proc/net/tcp.
fn time_wait(tasks: u16) -> i64 {
    let ports = FIRST_PORT..FIRST_PORT + tasks;
    let port = |addr: &str| {
        addr.rsplit(':')
            .next()
            .and_then(|p| u16::from_str_radix(p, 16).ok())
    };
    let text = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let count = text
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|f| f.len() > 3 && f[3] == "06")
        .filter(|f| {
            [f[1], f[2]]
                .iter()
                .any(|a| port(a).is_some_and(|p| ports.contains(&p)))
        })
        .count();
    count as i64
}

/// The listeners' process: one HTTP/1.1 responder per port (200, `Connection: close`).
fn serve(first: u16, count: u16) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        for port in first..first + count {
            let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
                .await
                .with_context(|| format!("binding 127.0.0.1:{port}"))?;
            tokio::spawn(async move {
                while let Ok((mut s, _)) = listener.accept().await {
                    tokio::spawn(async move {
                        let mut buf = [0u8; 1024];
                        let _ = s.read(&mut buf).await;
                        let _ = s
                            .write_all(
                                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                            )
                            .await;
                    });
                }
            });
        }
        println!("serving");
        std::future::pending::<Result<()>>().await
    })
}

fn settings(tasks: u16) -> Settings {
    Settings {
        agent_id: AgentId::new("probe-bench").unwrap_or_default(),
        hostname: Hostname::new("bench").unwrap_or_default(),
        advertise_ip: None,
        attributes: heapless::Vec::new(),
        port_range: PortRange {
            begin: FIRST_PORT,
            end: FIRST_PORT + tasks - 1,
        },
        capacity: Capacity {
            cpus: 10_000.0,
            mem_mib: 1e9,
            disk_mib: 1e9,
        },
        incarnation: 1,
        started_at_ms: 0,
        offer_interval_ms: 30_000,
        outbox_capacity: 100_000,
        trusted_keys: Vec::new(),
        replay_window_ms: 3_600_000,
        policy: Default::default(),
        log_size_mib: 10,
        log_files: 3,
    }
}

fn task(i: u16) -> TaskSpec {
    let mut spec = TaskSpec {
        task_id: t(&format!("probe.{i}")),
        image: t("bench:1"),
        cpus: 0.01,
        mem_mib: 8.0,
        network: NetworkMode::Bridge,
        kill_grace_period_s: 1,
        ..Default::default()
    };
    let _ = spec.port_mappings.push(PortMapping {
        container_port: 80,
        host_port: 0,
        protocol: PortProtocol::Tcp,
        name: None,
    });
    let _ = spec.health_checks.push(HealthCheck {
        protocol: HealthProtocol::Http,
        path: Some(t("/health")),
        port_index: 0,
        grace_period_s: 0,
        interval_s: 1,
        timeout_s: 5,
        max_consecutive_failures: 3,
        delay_s: 0,
        ..Default::default()
    });
    spec
}

fn boot_ms(start: Instant) -> u64 {
    start.elapsed().as_millis() as u64
}

/// Brings every task to RUNNING by answering the core's launch actions; returns the core and
/// the first probes it asked for on the way.
fn launched(tasks: u16, start: Instant) -> Result<(Supervisor, Vec<Action>)> {
    let mut sup = Supervisor::new(settings(tasks));
    let mut probes = Vec::new();
    for i in 0..tasks {
        let cmd = Command {
            version: PROTOCOL_VERSION,
            command_id: t(&format!("c-{i}")),
            issued_at_ms: 0,
            kind: CommandKind::Launch(task(i)),
            agent_id: None,
            signature: None,
            epoch: None,
        };
        let mut pending = vec![Event::CommandReceived(encode_to_vec(&cmd))];
        while let Some(event) = pending.pop() {
            for action in sup.handle(boot_ms(start), event) {
                match action {
                    Action::EnsureImage {
                        launch: Some((task_id, attempt)),
                        ..
                    } => pending.push(Event::ImageReady { task_id, attempt }),
                    Action::Create {
                        task_id, attempt, ..
                    } => pending.push(Event::ContainerCreated {
                        container_id: format!("ctr-{}", task_id.as_str()),
                        task_id,
                        attempt,
                    }),
                    Action::Start {
                        task_id, attempt, ..
                    } => pending.push(Event::ContainerStarted {
                        task_id,
                        attempt,
                        container_ip: None,
                    }),
                    Action::Publish {
                        kind: TopicKind::Reply,
                        payload,
                    } => {
                        let reply: CommandReply = decode(&payload)?;
                        if let Outcome::Rejected(r) = reply.outcome {
                            bail!("launch {i} refused: {}", r.message);
                        }
                    }
                    probe @ Action::Probe { .. } => probes.push(probe),
                    _ => {}
                }
            }
        }
    }
    let running = sup
        .tasks()
        .values()
        .filter(|t| matches!(t.phase, outpost_agent::core::Phase::Running { .. }))
        .count();
    if running != usize::from(tasks) {
        bail!("{running} of {tasks} tasks running");
    }
    Ok((sup, probes))
}

/// Runs the core and the probe driver for `window`; (probes done, healthy, CPU used).
async fn engine(tasks: u16, window: Duration) -> Result<(u64, u64, Duration)> {
    let start = Instant::now();
    let (mut sup, mut first) = launched(tasks, start)?;
    // HTTP probes never touch dockerd; the client only needs a socket path to exist.
    let docker = bollard::Docker::connect_with_unix(
        "/var/run/docker.sock",
        5,
        bollard::API_DEFAULT_VERSION,
    )?;
    let docker = std::sync::Arc::new(docker);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let (mut done, mut healthy, mut spawned) = (0u64, 0u64, 0u64);
    // One second of warm-up (every task's first probe is due at once), then the window.
    let warm_until = start + Duration::from_secs(2);
    let mut measuring: Option<(Instant, Duration, u64, u64)> = None;
    loop {
        let now = Instant::now();
        if measuring.is_none() && now >= warm_until {
            measuring = Some((now, cpu(), done, healthy));
        }
        if let Some((from, cpu0, done0, healthy0)) = measuring
            && now >= from + window
        {
            let measured = (done - done0, healthy - healthy0, cpu() - cpu0);
            // The probes still in flight finish here, outside the window, so that the next
            // phase is not charged for them.
            let settle = Instant::now();
            while done < spawned && settle.elapsed() < Duration::from_secs(5) {
                if let Ok(Some(_)) =
                    tokio::time::timeout(Duration::from_millis(100), rx.recv()).await
                {
                    done += 1;
                }
            }
            return Ok(measured);
        }
        let sleep = sup
            .next_deadline()
            .map_or(Duration::from_millis(100), |at| {
                Duration::from_millis(at.saturating_sub(boot_ms(start)))
            })
            .min(Duration::from_millis(100));
        let event = tokio::select! {
            Some(e) = rx.recv() => e,
            () = tokio::time::sleep(sleep) => Event::Tick,
        };
        if let Event::ProbeResult { healthy: h, .. } = &event {
            done += 1;
            healthy += u64::from(*h);
        }
        let actions = sup.handle(boot_ms(start), event);
        // As the agent's main loop does after every event: has the durable state changed?
        if sup.durable_may_have_changed() {
            std::hint::black_box(sup.durable_fingerprint());
        }
        for action in first.drain(..).chain(actions) {
            if let Action::Probe {
                task_id,
                attempt,
                check,
                target,
                timeout_ms,
            } = action
            {
                let (docker, tx) = (docker.clone(), tx.clone());
                spawned += 1;
                tokio::spawn(async move {
                    let ok = outpost_agent::driver::probe::run(
                        &docker,
                        &target,
                        Duration::from_millis(timeout_ms),
                    )
                    .await;
                    let _ = tx.send(Event::ProbeResult {
                        task_id,
                        attempt,
                        check,
                        healthy: ok,
                    });
                });
            }
        }
    }
}

/// How a baseline GETs.
#[derive(Clone, Copy)]
enum Baseline {
    /// hyper's client (what the probe driver used before).
    Hyper,
    /// A request written and the first read of the answer, on a tokio socket, and the
    /// connection reset as the probe driver resets it: the floor of one new loopback connection
    /// per check.
    Raw,
    /// The same with a normal close (FIN, and TIME_WAIT after it).
    RawClosed,
}

/// One GET on a new connection: the request written, one read, the connection reset (as the
/// probe driver does) if `reset`, else closed.
async fn raw_get(port: u16, reset: bool) -> bool {
    let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
        return false;
    };
    if reset && s.set_zero_linger().is_err() {
        return false;
    }
    let request = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    if s.write_all(request).await.is_err() {
        return false;
    }
    let mut buf = [0u8; 512];
    matches!(s.read(&mut buf).await, Ok(n) if buf[..n].starts_with(b"HTTP/1.1 200"))
}

/// The same number of GETs, a new connection each, paced over the window like the probes;
/// (GETs done, 200s, CPU used).
async fn baseline(kind: Baseline, tasks: u16, window: Duration) -> Result<(u64, u64, Duration)> {
    use http_body_util::{BodyExt, Empty};
    let client: hyper_util::client::legacy::Client<_, Empty<bytes::Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .pool_max_idle_per_host(0)
            .build_http();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<bool>();
    let cpu0 = cpu();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let (mut done, mut ok) = (0u64, 0u64);
    // Exactly one batch a second: a batch spawned after the window would run (and be charged)
    // in the next phase.
    for _ in 0..window.as_secs() {
        tick.tick().await;
        for i in 0..tasks {
            let (client, tx) = (client.clone(), tx.clone());
            tokio::spawn(async move {
                let port = FIRST_PORT + i;
                let good = match kind {
                    Baseline::Hyper => {
                        let uri = format!("http://127.0.0.1:{port}/health");
                        match client.get(uri.parse().unwrap()).await {
                            Ok(r) => {
                                let status = r.status().as_u16();
                                let _ = r.into_body().collect().await;
                                status == 200
                            }
                            Err(_) => false,
                        }
                    }
                    Baseline::Raw => raw_get(port, true).await,
                    Baseline::RawClosed => raw_get(port, false).await,
                };
                let _ = tx.send(good);
            });
        }
        while let Ok(good) = rx.try_recv() {
            done += 1;
            ok += u64::from(good);
        }
    }
    // The last second's GETs: every one is counted before the CPU is read.
    let settle = Instant::now();
    while done < u64::from(tasks) * window.as_secs() && settle.elapsed() < Duration::from_secs(5) {
        if let Ok(Some(good)) = tokio::time::timeout(Duration::from_millis(100), rx.recv()).await {
            done += 1;
            ok += u64::from(good);
        }
    }
    Ok((done, ok, cpu() - cpu0))
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--serve") {
        return serve(args[2].parse()?, args[3].parse()?);
    }
    let tasks: u16 = args.get(1).map_or(Ok(1000), |a| a.parse())?;
    let seconds: u64 = args.get(2).map_or(Ok(20), |a| a.parse())?;
    let window = Duration::from_secs(seconds);
    let mut server = std::process::Command::new(std::env::current_exe()?)
        .args(["--serve", &FIRST_PORT.to_string(), &tasks.to_string()])
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(server.stdout.take().context("listener stdout")?),
        &mut line,
    )?;
    if line.trim() != "serving" {
        let _ = server.kill();
        bail!("the listeners did not start: {line:?}");
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let rss0 = rss_kib();
    // The engine first, so that what it leaves in TIME_WAIT is its own (a socket stays there
    // 60 s); each phase prints the net change over its run (negative when an earlier run's
    // sockets expire during it).
    let with_time_wait = |r: (u64, u64, Duration), tw0: i64| (r, time_wait(tasks) - tw0);
    let result = rt.block_on(async {
        let tw = time_wait(tasks);
        let eng = with_time_wait(engine(tasks, window).await?, tw);
        let rss1 = rss_kib();
        let mut baselines = Vec::new();
        for kind in [Baseline::Raw, Baseline::RawClosed, Baseline::Hyper] {
            let tw = time_wait(tasks);
            baselines.push(with_time_wait(baseline(kind, tasks, window).await?, tw));
        }
        anyhow::Ok((eng, rss1, baselines))
    });
    let _ = server.kill();
    let _ = server.wait();
    let (eng, rss1, baselines) = result?;
    let [raw, closed, hyper] = baselines[..] else {
        bail!("three baselines were measured");
    };
    let per = |((done, _, cpu), _): ((u64, u64, Duration), i64)| {
        cpu.as_secs_f64() * 1e6 / done.max(1) as f64
    };
    let secs = window.as_secs_f64();
    println!("probe-bench: {tasks} tasks, HTTP check every 1 s, {seconds} s window");
    for (name, what, passed, phase) in [
        ("engine   (core + probe driver)", "probe", "healthy", eng),
        ("floor    (raw socket GET, reset)", "GET", "200", raw),
        ("floor    (raw socket GET, closed)", "GET", "200", closed),
        ("baseline (bare hyper GET loop)", "GET", "200", hyper),
    ] {
        let ((done, ok, cpu), tw) = phase;
        println!(
            "{name}: {:.1} {what}s/s ({ok} of {done} {passed}), {:.1} us CPU a {what}, {:.2} % of one core, TIME_WAIT sockets {tw:+}",
            done as f64 / secs,
            per(phase),
            cpu.as_secs_f64() * 100.0 / secs
        );
    }
    println!(
        "ratio: {:.2}x the floor's CPU a probe; the floor closed is {:.2}x the floor reset",
        per(eng) / per(raw),
        per(closed) / per(raw)
    );
    println!(
        "ratio: {:.2}x the hyper baseline's CPU a probe; RSS {rss0} KiB before, {rss1} KiB after the engine ({} KiB for {tasks} tasks and their probes)",
        per(eng) / per(hyper),
        rss1.saturating_sub(rss0)
    );
    Ok(())
}
