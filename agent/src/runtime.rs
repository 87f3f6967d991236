//! The agent's main loop: feeds events and time to the core and hands each action to its
//! driver. Docker calls and probes run as their own tasks and report back as events, so the
//! loop never waits on I/O.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bollard::Docker;
use tokio::sync::mpsc::{UnboundedSender, unbounded_channel};

use outpost_protocol::{KeyValue, TaskStatus, TopicKind, decode};

use crate::config::Config;
use crate::core::{Action, Capacity, Event, Millis, Settings, Snapshot, Supervisor};
use crate::driver::state::StateFile;
use crate::driver::{Jitter, backoff, docker, host, images, logs, mqtt, probe, systemd};

/// How often the number of health probes run is logged.
const PROBE_REPORT_EVERY: Duration = Duration::from_secs(30);

/// Health probes completed since the last report.
#[derive(Debug, Default)]
struct ProbeCounter {
    done: u64,
    failed: u64,
}

impl ProbeCounter {
    fn count(&mut self, healthy: bool) {
        self.done += 1;
        self.failed += u64::from(!healthy);
    }

    fn report(&mut self) {
        if self.done > 0 {
            let per_s = self.done as f64 / PROBE_REPORT_EVERY.as_secs_f64();
            tracing::info!(
                probes = self.done,
                failed = self.failed,
                per_second = per_s,
                "health probes in the last 30 s"
            );
        }
        *self = Self::default();
    }
}

/// How often the host's resources are sampled (at most; as often as the image collection
/// checks the disk when that is more often).
const SAMPLE_EVERY: Duration = Duration::from_secs(30);
/// How often the ports other processes listen on are read (cheap: two small /proc files).
const LISTENERS_EVERY: Duration = Duration::from_secs(2);

/// Wall-clock milliseconds since the Unix epoch.
pub fn now_ms() -> Millis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as Millis)
}

/// Milliseconds of `CLOCK_BOOTTIME`: since boot, counting suspend, never stepped by NTP or by
/// hand. Every deadline of the core runs on it ([`crate::core::Clock`]).
pub fn boot_ms() -> Millis {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
    (t.tv_sec as Millis) * 1000 + (t.tv_nsec as Millis) / 1_000_000
}

/// Both of the core's clocks, now.
pub fn clock() -> crate::core::Clock {
    crate::core::Clock {
        mono: boot_ms(),
        wall: now_ms(),
    }
}

/// A random 64-bit number from the kernel (for status uuids), falling back to the clock.
fn incarnation() -> u64 {
    let mut buf = [0u8; 8];
    match std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut buf))
    {
        Ok(()) => u64::from_le_bytes(buf),
        Err(_) => now_ms() ^ u64::from(std::process::id()),
    }
}

fn settings(config: &Config, capacity: Capacity, started_at_ms: Millis) -> Settings {
    let attributes = config
        .attributes
        .iter()
        .filter_map(|(k, v)| {
            Some(KeyValue {
                name: outpost_protocol::Name::new(k).ok()?,
                value: outpost_protocol::Value::new(v).ok()?,
            })
        })
        .collect();
    Settings {
        agent_id: outpost_protocol::AgentId::new(&config.agent_id).unwrap_or_default(),
        hostname: outpost_protocol::Hostname::new(&crate::config::hostname()).unwrap_or_default(),
        advertise_ip: config
            .advertise_ip
            .and_then(|ip| outpost_protocol::IpText::new(&ip.to_string()).ok()),
        attributes,
        port_range: config.port_range,
        capacity,
        incarnation: incarnation(),
        started_at_ms,
        offer_interval_ms: config.offer_interval_s * 1000,
        outbox_capacity: config.outbox_capacity,
        trusted_keys: config.trusted_keys.clone(),
        replay_window_ms: config.replay_window_s * 1000,
        policy: config.policy.clone(),
        log_size_mib: u32::try_from(config.logs.max_size_mib).unwrap_or(u32::MAX),
        log_files: config.logs.max_files,
    }
}

/// Connects to dockerd, retrying with backoff until it answers (a cold boot may start the
/// agent before dockerd).
async fn connect_docker(config: &Config) -> Docker {
    let mut jitter = Jitter::new();
    let mut failures = 0;
    loop {
        match docker::connect(&config.docker).await {
            Ok(d) => return d,
            Err(e) => {
                // Waiting for dockerd is start-up, not a hang: keep systemd's watchdog fed.
                systemd::watchdog();
                if failures % 10 == 0 {
                    tracing::warn!(error = %e, "dockerd is not reachable yet; retrying");
                }
                tokio::time::sleep(backoff(failures, 250, 5_000, &mut jitter)).await;
                failures += 1;
            }
        }
    }
}

/// Everything an action's task needs.
struct Ctx {
    docker: Docker,
    config: Config,
    events: UnboundedSender<Event>,
    mqtt: UnboundedSender<mqtt::Outgoing>,
    /// The images this agent pulled or ran, for garbage collection.
    images: images::Record,
    /// Whether an image collection is under way (one at a time).
    collecting: std::sync::atomic::AtomicBool,
    /// How to stop each logs stream under way, by request id.
    log_stops:
        std::sync::Mutex<std::collections::HashMap<String, tokio::sync::oneshot::Sender<()>>>,
    /// The latest stats (for the local metrics listener, when `metrics_listen` is set).
    latest_stats: crate::driver::metrics::Latest,
    /// Health probe time since the last stats message: microseconds in all, and probes.
    probe_us: std::sync::atomic::AtomicU64,
    probes: std::sync::atomic::AtomicU64,
}

/// What the next stats message reports besides what the core knows.
#[derive(Debug, Default)]
struct StatsState {
    /// Containers started again (a launch attempt after the first) since the agent started.
    restarts: u32,
}

/// Sends an [`outpost_protocol::AgentStats`] (after asking dockerd whether it answers), unless
/// the broker is away: stats are for now, not for later.
fn send_stats(ctx: &Arc<Ctx>, sup: &Supervisor, state: &StatsState) {
    use std::sync::atomic::Ordering;
    let local = ctx.config.metrics_listen.is_some();
    if !sup.broker_up() && !local {
        return;
    }
    let broker_up = sup.broker_up();
    let probes = ctx.probes.swap(0, Ordering::Relaxed);
    let probe_us = ctx.probe_us.swap(0, Ordering::Relaxed);
    let mut stats = outpost_protocol::AgentStats {
        version: outpost_protocol::PROTOCOL_VERSION,
        agent_id: outpost_protocol::AgentId::new(&ctx.config.agent_id).unwrap_or_default(),
        timestamp_ms: now_ms(),
        outbox_depth: u32::try_from(sup.outbox().len()).unwrap_or(u32::MAX),
        restarts: state.restarts,
        probe_latency_us: u32::try_from(probe_us.checked_div(probes).unwrap_or(0))
            .unwrap_or(u32::MAX),
        containers: sup
            .tasks()
            .values()
            .filter(|t| t.phase.container().is_some())
            .count() as u32,
        rss_kib: host::rss_kib(),
        dockerd_reachable: false,
    };
    let ctx = ctx.clone();
    tokio::spawn(async move {
        let ping = tokio::time::timeout(Duration::from_secs(2), ctx.docker.ping()).await;
        stats.dockerd_reachable = matches!(ping, Ok(Ok(_)));
        if local {
            match ctx.latest_stats.lock() {
                Ok(mut l) => *l = Some(stats.clone()),
                Err(poisoned) => *poisoned.into_inner() = Some(stats.clone()),
            }
        }
        if !broker_up {
            return;
        }
        let payload = outpost_protocol::codec::encode_to_vec(&stats);
        let _ = ctx
            .mqtt
            .send(mqtt::Outgoing::Publish(TopicKind::Stats, payload));
    });
}

/// Runs the agent until SIGINT or SIGTERM.
pub async fn run(config: Config) -> std::io::Result<()> {
    let started_at_ms = now_ms();
    if config.trusted_keys.is_empty() {
        tracing::warn!(
            "commands are not authenticated: set [commands] trusted_keys to the bridge's public key (docs/security.md)"
        );
    }
    let docker = connect_docker(&config).await;
    tracing::info!(agent_id = %config.agent_id, "connected to dockerd");
    let (events_tx, mut events) = unbounded_channel();
    let capacity = host::sample(&config);
    let (mut store, mut sup) = load_state(&config, settings(&config, capacity, started_at_ms));
    let mut saved = sup.durable_fingerprint();
    let mut pending_acks: Vec<u64> = Vec::new();
    let (received_tx, mut received) = unbounded_channel();
    // The ports other processes hold are known before the first offer can go out.
    let listening = host::listening_ports();
    let _ = events_tx.send(Event::HostPortsListening(listening.clone()));
    let mqtt_tx = mqtt::spawn(&config, started_at_ms, events_tx.clone(), received_tx);
    tokio::spawn(docker::follow_events(
        docker.clone(),
        config.agent_id.clone(),
        events_tx.clone(),
    ));
    tokio::spawn(sample_host(config.clone(), capacity, events_tx.clone()));
    tokio::spawn(sample_listeners(listening, events_tx.clone()));
    let ctx = Arc::new(Ctx {
        docker,
        images: images::Record::open(&config.state_dir),
        collecting: std::sync::atomic::AtomicBool::new(false),
        log_stops: std::sync::Mutex::default(),
        latest_stats: crate::driver::metrics::Latest::default(),
        probe_us: std::sync::atomic::AtomicU64::new(0),
        probes: std::sync::atomic::AtomicU64::new(0),
        config,
        events: events_tx,
        mqtt: mqtt_tx,
    });
    if let Some(addr) = ctx.config.metrics_listen {
        tokio::spawn(crate::driver::metrics::serve(
            addr,
            ctx.latest_stats.clone(),
        ));
    }
    let mut image_gc = tokio::time::interval(Duration::from_secs(ctx.config.images.interval_s));
    let mut stats_timer =
        tokio::time::interval(Duration::from_secs(ctx.config.offer_interval_s.max(1)));
    let mut stats_state = StatsState::default();
    let mut ready = false;
    // The task count the last STATUS= line showed.
    let mut shown_tasks = 0usize;
    let mut watchdog =
        tokio::time::interval(systemd::watchdog_period().unwrap_or(Duration::from_secs(3600)));
    let mut logged = std::collections::HashSet::new();
    let mut probes = ProbeCounter::default();
    let mut probe_report = tokio::time::interval(PROBE_REPORT_EVERY);
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        // READY=1 once the loaded state's containers are re-adopted (or restarted); the
        // broker is not waited for: a host that boots offline runs its work regardless.
        if !ready && !sup.recovering() {
            let status = format!("supervising {} task(s)", sup.tasks().len());
            tracing::info!(tasks = sup.tasks().len(), "ready");
            systemd::ready(&status);
            ready = true;
            shown_tasks = sup.tasks().len();
        } else if ready && sup.tasks().len() != shown_tasks {
            // `systemctl status` follows the tasks as they come and go.
            shown_tasks = sup.tasks().len();
            systemd::status(&format!("supervising {shown_tasks} task(s)"));
        }
        let sleep = match sup.next_deadline() {
            Some(at) => Duration::from_millis(at.saturating_sub(boot_ms())),
            None => Duration::from_secs(3600),
        };
        let mut ack = None;
        let event = tokio::select! {
            Some(e) = events.recv() => e,
            Some((e, token)) = received.recv() => {
                ack = Some(token);
                e
            }
            () = tokio::time::sleep(sleep) => Event::Tick,
            _ = watchdog.tick() => {
                systemd::watchdog();
                continue;
            }
            _ = probe_report.tick() => {
                probes.report();
                continue;
            }
            _ = image_gc.tick() => {
                collect_images(&ctx, &sup);
                continue;
            }
            _ = stats_timer.tick() => {
                send_stats(&ctx, &sup, &stats_state);
                continue;
            }
            _ = tokio::signal::ctrl_c() => break,
            _ = sigterm.recv() => break,
        };
        match &event {
            Event::ProbeResult { healthy, .. } => probes.count(*healthy),
            Event::ContainerStarted { attempt, .. } if *attempt > 1 => {
                stats_state.restarts = stats_state.restarts.saturating_add(1);
            }
            _ => {}
        }
        let actions = sup.handle(clock(), event);
        // Persist before acting: nothing is replied, started or acknowledged that a crash
        // right after could forget.
        let fingerprint = if sup.durable_may_have_changed() {
            sup.durable_fingerprint()
        } else {
            saved
        };
        pending_acks.extend(ack);
        // While saves fail (a full disk), every event retries, so freed space is noticed.
        if (fingerprint != saved || sup.storage_failed()) && save_state(&mut store, &mut sup) {
            saved = fingerprint;
        }
        // Only now, with the state saved, may the broker forget the messages; while saves
        // fail they stay unacknowledged (and come again on the next session).
        if !sup.storage_failed() {
            for token in pending_acks.drain(..) {
                let _ = ctx.mqtt.send(mqtt::Outgoing::Ack(token));
            }
        }
        for action in actions {
            dispatch(&ctx, &mut logged, action);
        }
    }
    tracing::info!("stopping; containers keep running");
    Ok(())
}

/// Opens the state file and restores the supervisor from its newest valid generation. A
/// missing, corrupt or unreadable state never stops the agent: it says so and starts empty
/// (or from the previous generation).
fn load_state(config: &Config, settings: Settings) -> (Option<StateFile>, Supervisor) {
    let (store, loaded) = match StateFile::open(&config.state_dir) {
        Ok(x) => x,
        Err(e) => {
            tracing::error!(dir = %config.state_dir.display(), error = %e, "cannot open the state directory; running without durable state");
            return (None, Supervisor::new(settings));
        }
    };
    for (file, why) in &loaded.rejected {
        tracing::error!(file = %config.state_dir.join(file).display(), reason = %why, "state file unusable; skipping it");
    }
    let Some((generation, file, payload)) = loaded.payload else {
        if !loaded.rejected.is_empty() {
            tracing::error!("no usable state generation: starting with no tasks");
        }
        return (Some(store), Supervisor::new(settings));
    };
    let restored = Snapshot::from_bytes(&payload).and_then(|snap| {
        let n = snap.task_count();
        Supervisor::restore(settings.clone(), &snap).map(|s| (s, n))
    });
    match restored {
        Ok((sup, tasks)) => {
            if !loaded.rejected.is_empty() {
                tracing::warn!(generation, file = %file, "recovered from the last good state generation");
            }
            tracing::info!(generation, tasks, "state loaded; re-adopting containers");
            (Some(store), sup)
        }
        Err(e) => {
            tracing::error!(generation, file = %file, error = %e, "state generation unusable: starting with no tasks");
            (Some(store), Supervisor::new(settings))
        }
    }
}

/// Saves the supervisor's snapshot; whether it is stored. A failure (a full disk) makes the
/// core refuse launches until a save succeeds again.
fn save_state(store: &mut Option<StateFile>, sup: &mut Supervisor) -> bool {
    let Some(store) = store else { return true };
    match store.save(&sup.snapshot().to_bytes()) {
        Ok(()) => {
            sup.set_storage_failure(None);
            true
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot save the agent's state; new launches are refused until it can");
            sup.set_storage_failure(Some(e.to_string()));
            false
        }
    }
}

/// Reports the TCP ports other processes listen on whenever they change from `last` (what
/// was read at start).
async fn sample_listeners(mut last: Vec<u16>, events: UnboundedSender<Event>) {
    loop {
        tokio::time::sleep(LISTENERS_EVERY).await;
        if let Ok(now) = tokio::task::spawn_blocking(host::listening_ports).await
            && now != last
        {
            last = now.clone();
            if events.send(Event::HostPortsListening(now)).is_err() {
                return;
            }
        }
    }
}

async fn sample_host(config: Config, mut last: Capacity, events: UnboundedSender<Event>) {
    let every = SAMPLE_EVERY.min(Duration::from_secs(config.images.interval_s));
    loop {
        tokio::time::sleep(every).await;
        let cfg = config.clone();
        let Ok(now) = tokio::task::spawn_blocking(move || host::sample(&cfg)).await else {
            continue;
        };
        if host::changed(&last, &now) {
            last = now;
            if events.send(Event::CapacityChanged(now)).is_err() {
                return;
            }
        }
    }
}

/// Logs status updates (once each, not their re-sends) and rejected commands.
fn log_publish(logged: &mut std::collections::HashSet<[u8; 16]>, kind: TopicKind, payload: &[u8]) {
    match kind {
        TopicKind::Status => {
            if let Ok(s) = decode::<TaskStatus>(payload) {
                if logged.len() > 10_000 {
                    logged.clear();
                }
                if !logged.insert(s.uuid) {
                    return;
                }
                let uuid: String = s.uuid.iter().map(|b| format!("{b:02x}")).collect();
                tracing::info!(
                    task = %s.task_id,
                    state = s.state.mesos_name(),
                    healthy = ?s.healthy,
                    message = s.message.as_deref().unwrap_or(""),
                    uuid = %uuid,
                    "status update"
                );
            }
        }
        TopicKind::Reply => {
            if let Ok(r) = decode::<outpost_protocol::CommandReply>(payload)
                && let outpost_protocol::Outcome::Rejected(rej) = r.outcome
            {
                tracing::warn!(command = %r.command_id, code = ?rej.code, reason = %rej.message, "command rejected");
            }
        }
        _ => {}
    }
}

/// The map behind `m`, also when a panic elsewhere poisoned its lock: it holds only whole
/// entries (each insert and remove is one call).
fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Starts an image collection unless one is running; every task the core knows keeps its
/// image. The keep-list is taken now: a task accepted while the collection runs whose image
/// was a candidate may find it gone and pull it again on its launch retry (rare, and only
/// above the disk threshold).
fn collect_images(ctx: &Arc<Ctx>, sup: &Supervisor) {
    use std::sync::atomic::Ordering;
    if ctx.collecting.swap(true, Ordering::AcqRel) {
        return;
    }
    let keep = sup
        .tasks()
        .values()
        .map(|t| images::reference(&t.spec().image))
        .collect();
    let ctx = ctx.clone();
    tokio::spawn(async move {
        images::collect(&ctx.docker, &ctx.images, &ctx.config.images, &keep).await;
        ctx.collecting.store(false, Ordering::Release);
    });
}

fn dispatch(ctx: &Arc<Ctx>, logged: &mut std::collections::HashSet<[u8; 16]>, action: Action) {
    match action {
        Action::Publish { kind, payload } => {
            log_publish(logged, kind, &payload);
            let _ = ctx.mqtt.send(mqtt::Outgoing::Publish(kind, payload));
        }
        Action::EnsureImage {
            launch,
            app_id,
            image,
            force,
        } => {
            let ctx = ctx.clone();
            tokio::spawn(async move {
                let progress = |f: docker::PullFigures, done: bool, error: Option<&str>| {
                    let p = outpost_protocol::PullProgress {
                        version: outpost_protocol::PROTOCOL_VERSION,
                        agent_id: outpost_protocol::AgentId::new(&ctx.config.agent_id)
                            .unwrap_or_default(),
                        image: image.clone(),
                        app_id: app_id.clone(),
                        task_id: launch.as_ref().map(|(t, _)| t.clone()),
                        layers_done: f.layers_done,
                        layers_total: f.layers_total,
                        bytes_done: f.bytes_done,
                        bytes_total: f.bytes_total,
                        done,
                        error: error.map(|e| {
                            outpost_protocol::Note::new(logs::truncate(
                                e,
                                outpost_protocol::Note::LIMIT,
                            ))
                            .unwrap_or_default()
                        }),
                    };
                    let payload = outpost_protocol::codec::encode_to_vec(&p);
                    let _ = ctx
                        .mqtt
                        .send(mqtt::Outgoing::Publish(TopicKind::Progress, payload));
                };
                let result =
                    docker::ensure_image(&ctx.docker, &ctx.config, &image, force, progress).await;
                if result.is_ok() {
                    ctx.images.touch(&image, now_ms());
                }
                match (launch, result) {
                    (Some((task_id, attempt)), Ok(())) => {
                        let _ = ctx.events.send(Event::ImageReady { task_id, attempt });
                    }
                    (Some((task_id, attempt)), Err(message)) => {
                        let _ = ctx.events.send(Event::ImageFailed {
                            task_id,
                            attempt,
                            message,
                        });
                    }
                    (None, Ok(())) => tracing::info!(%image, "image pulled"),
                    (None, Err(e)) => tracing::warn!(%image, error = %e, "pull failed"),
                }
            });
        }
        Action::Create {
            task_id,
            attempt,
            spec,
            host_ports,
        } => {
            let ctx = ctx.clone();
            tokio::spawn(async move {
                let agent = ctx.config.agent_id.clone();
                let logs = ctx.config.logs;
                let event =
                    match docker::create(&ctx.docker, &agent, &spec, &host_ports, logs).await {
                        Ok(container_id) => Event::ContainerCreated {
                            task_id,
                            attempt,
                            container_id,
                        },
                        Err(message) => Event::LaunchFailed {
                            task_id,
                            attempt,
                            message,
                        },
                    };
                let _ = ctx.events.send(event);
            });
        }
        Action::Start {
            task_id,
            attempt,
            container_id,
        } => {
            let ctx = ctx.clone();
            tokio::spawn(async move {
                let event = match docker::start(&ctx.docker, &container_id).await {
                    Ok(container_ip) => Event::ContainerStarted {
                        task_id,
                        attempt,
                        container_ip,
                    },
                    Err(message) => Event::LaunchFailed {
                        task_id,
                        attempt,
                        message,
                    },
                };
                let _ = ctx.events.send(event);
            });
        }
        Action::Stop {
            container_id,
            grace_s,
        } => {
            let ctx = ctx.clone();
            tokio::spawn(async move {
                if let Err(e) = docker::stop(&ctx.docker, &container_id, grace_s).await {
                    tracing::warn!(error = %e, "stop failed");
                }
            });
        }
        Action::Remove { container_id } => {
            let ctx = ctx.clone();
            tokio::spawn(async move {
                match docker::remove(&ctx.docker, &container_id).await {
                    Ok(()) => {
                        let _ = ctx.events.send(Event::ContainerRemoved { container_id });
                    }
                    // Its ports stay held until a listing shows it gone.
                    Err(e) => tracing::warn!(error = %e, "remove failed"),
                }
            });
        }
        Action::Probe {
            task_id,
            attempt,
            check,
            target,
            timeout_ms,
        } => {
            let ctx = ctx.clone();
            tokio::spawn(async move {
                let started = std::time::Instant::now();
                let healthy =
                    probe::run(&ctx.docker, &target, Duration::from_millis(timeout_ms)).await;
                let us = started.elapsed().as_micros() as u64;
                ctx.probe_us
                    .fetch_add(us, std::sync::atomic::Ordering::Relaxed);
                ctx.probes
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let _ = ctx.events.send(Event::ProbeResult {
                    task_id,
                    attempt,
                    check,
                    healthy,
                });
            });
        }
        Action::StreamLogs {
            request_id,
            container_id,
            request,
        } => {
            let Ok(topic) = outpost_protocol::topics::logs_topic(&ctx.config.agent_id, &request_id)
            else {
                // The core accepts only ids fit for a topic level; nothing to answer on.
                let _ = ctx.events.send(Event::LogStreamEnded { request_id });
                return;
            };
            let (stop, stopped) = tokio::sync::oneshot::channel();
            lock(&ctx.log_stops).insert(request_id.clone(), stop);
            let ctx = ctx.clone();
            tokio::spawn(async move {
                let topic = topic.to_string();
                let publish = |payload| {
                    let _ = ctx
                        .mqtt
                        .send(mqtt::Outgoing::PublishLogs(topic.clone(), payload));
                };
                let agent = &ctx.config.agent_id;
                logs::stream(
                    &ctx.docker,
                    agent,
                    &request_id,
                    &container_id,
                    &request,
                    stopped,
                    publish,
                )
                .await;
                lock(&ctx.log_stops).remove(&request_id);
                let _ = ctx.events.send(Event::LogStreamEnded { request_id });
            });
        }
        Action::StopLogs { request_id } => {
            if let Some(stop) = lock(&ctx.log_stops).remove(&request_id) {
                let _ = stop.send(());
            }
        }
        Action::ListContainers => {
            let ctx = ctx.clone();
            tokio::spawn(async move {
                match docker::list(&ctx.docker, &ctx.config.agent_id).await {
                    Ok(list) => {
                        let _ = ctx.events.send(Event::ContainersListed(list));
                    }
                    Err(message) => {
                        let _ = ctx.events.send(Event::ContainerListFailed { message });
                    }
                }
            });
        }
    }
}
