//! Wiring: the core behind a mutex, the store it commits to, the MQTT client its effects go
//! out through, and the broadcast channel of Marathon events. Every change goes through
//! [`Shared::apply`]: run the core, commit its writes, then publish and broadcast.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rumqttc::{AsyncClient, Event as MqttEvent, MqttOptions, Packet, QoS};
use serde_json::Value;
use tokio::sync::broadcast;

use outpost_protocol::codec::MAX_MESSAGE_BYTES;
use outpost_protocol::{
    AgentState, CommandReply, Hello, Offer, TaskStatus, Topic, TopicKind, decode,
};

use crate::config::Config;
use crate::core::{Core, Effect};
use crate::store::{Store, StoreError, Table};
use crate::time::now_ms;

/// What the HTTP handlers and the MQTT loop share.
pub struct Shared {
    core: Mutex<Core>,
    store: Store,
    /// The MQTT client; replaced when the loop moves to the next broker URL.
    mqtt: Mutex<AsyncClient>,
    /// Marathon events, for `/v2/events`.
    pub events: broadcast::Sender<Value>,
    /// The configuration.
    pub config: Config,
    /// When the bridge started.
    pub started_at_ms: u64,
    /// Subscribed Mesos frameworks' streams: framework id -> (stream id, sender).
    pub streams: Mutex<
        std::collections::HashMap<String, (String, tokio::sync::mpsc::UnboundedSender<Value>)>,
    >,
}

impl Shared {
    /// Runs `f` on the core, stores what it changed, then sends what it produced. Nothing is
    /// sent (no acknowledgement, no command) unless the store committed first.
    pub fn apply<T>(&self, f: impl FnOnce(&mut Core, u64) -> T) -> Result<T, StoreError> {
        let mut core = self.core.lock().expect("core lock");
        let now = now_ms();
        let out = f(&mut core, now);
        core.settle(now);
        let writes = core.take_writes();
        let effects = core.take_effects();
        if let Err(e) = self.store.commit(&writes) {
            tracing::error!(error = %e, "could not store the bridge's state; nothing is sent");
            return Err(e);
        }
        let mqtt = self.mqtt.lock().expect("mqtt lock").clone();
        for effect in effects {
            match effect {
                Effect::Publish { topic, payload } => {
                    if let Err(e) = mqtt.try_publish(topic, QoS::AtLeastOnce, false, payload) {
                        tracing::warn!(error = %e, "could not queue an MQTT publish");
                    }
                }
                Effect::Event(v) => {
                    let _ = self.events.send(v);
                }
                Effect::Framework {
                    framework_id,
                    event,
                } => {
                    let streams = self.streams.lock().expect("streams lock");
                    if let Some((_, tx)) = streams.get(&framework_id) {
                        let _ = tx.send(event);
                    }
                }
                Effect::EndStream { framework_id } => {
                    self.streams
                        .lock()
                        .expect("streams lock")
                        .remove(&framework_id);
                }
            }
        }
        Ok(out)
    }

    /// Reads the core.
    pub fn read<T>(&self, f: impl FnOnce(&Core) -> T) -> T {
        f(&self.core.lock().expect("core lock"))
    }
}

/// Opens the store, restores the core, connects to the broker, and serves the API until
/// SIGINT or SIGTERM.
pub async fn run(config: Config) -> Result<(), String> {
    std::fs::create_dir_all(&config.state_dir)
        .map_err(|e| format!("state_dir = {:?}: {e}", config.state_dir))?;
    let path = config.state_dir.join("bridge.redb");
    let store = Store::open(&path).map_err(|e| e.to_string())?;
    let core = Core::restore_all(
        crate::time::now_ms(),
        store.load(Table::Apps).map_err(|e| e.to_string())?,
        store.load(Table::Tasks).map_err(|e| e.to_string())?,
        store.load(Table::Agents).map_err(|e| e.to_string())?,
        store.load(Table::Frameworks).map_err(|e| e.to_string())?,
        store.load(Table::FwTasks).map_err(|e| e.to_string())?,
    );
    let mut core = core;
    core.set_signer(config.signer.clone());
    match &config.signer {
        Some(s) => tracing::info!(public_key = %s.public_base64(), "commands are signed"),
        None => {
            tracing::warn!("commands are not signed: set command_signing_key (docs/security.md)")
        }
    }
    tracing::info!(
        path = %path.display(),
        apps = core.apps().count(),
        tasks = core.tasks(None).count(),
        frameworks = core.frameworks().count(),
        framework_tasks = core.framework_tasks().count(),
        "state loaded"
    );
    let (mqtt, eventloop) = AsyncClient::new(mqtt_options(&config, 0), 65536);
    let (events, _) = broadcast::channel(4096);
    let shared = Arc::new(Shared {
        core: Mutex::new(core),
        store,
        mqtt: Mutex::new(mqtt.clone()),
        events,
        config: config.clone(),
        started_at_ms: now_ms(),
        streams: Mutex::default(),
    });
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| format!("listen = \"{}\": {e}", config.listen))?;
    tracing::info!(listen = %config.listen, tls = config.api_tls.is_some(), auth = config.auth.enabled(), "Marathon API listening");
    tokio::spawn(mqtt_loop(shared.clone(), mqtt, eventloop));
    tokio::spawn(ticker(shared.clone()));
    let mesos_listener = tokio::net::TcpListener::bind(config.mesos_listen)
        .await
        .map_err(|e| format!("mesos_listen = \"{}\": {e}", config.mesos_listen))?;
    tracing::info!(listen = %config.mesos_listen, "Mesos operator endpoints listening");
    let auth = Arc::new(config.auth.clone());
    let guard = |router: axum::Router| {
        router
            .layer(axum::middleware::from_fn_with_state(
                auth.clone(),
                crate::auth::require,
            ))
            .layer(axum::middleware::from_fn(crate::auth::bounded))
            .layer(axum::extract::DefaultBodyLimit::max(
                crate::auth::MAX_BODY_BYTES,
            ))
    };
    let mesos = guard(crate::mesos::router(shared.clone()));
    let app = guard(crate::api::router(shared.clone()));
    let tls = config.api_tls.clone();
    let mesos_tls = tls.clone();
    tokio::spawn(async move {
        if let Err(e) = serve(mesos_listener, mesos_tls, mesos, false).await {
            tracing::error!(error = %e, "the Mesos listener stopped");
        }
    });
    serve(listener, tls, app, true).await
}

/// Serves `router` on `tcp`, over TLS when `tls` is set; until SIGINT/SIGTERM if `until_signal`.
async fn serve(
    tcp: tokio::net::TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    router: axum::Router,
    until_signal: bool,
) -> Result<(), String> {
    use crate::auth::{TlsListener, TlsPeer};
    let result = match tls {
        Some(config) => {
            let l = TlsListener::new(tcp, config).map_err(|e| e.to_string())?;
            let service = router
                .layer(axum::middleware::from_fn(crate::auth::peer_address))
                .into_make_service_with_connect_info::<TlsPeer>();
            if until_signal {
                axum::serve(l, service)
                    .with_graceful_shutdown(shutdown())
                    .await
            } else {
                axum::serve(l, service).await
            }
        }
        None => {
            let service = router.into_make_service_with_connect_info::<std::net::SocketAddr>();
            if until_signal {
                axum::serve(tcp, service)
                    .with_graceful_shutdown(shutdown())
                    .await
            } else {
                axum::serve(tcp, service).await
            }
        }
    };
    result.map_err(|e| e.to_string())
}

async fn shutdown() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("stopping");
}

async fn ticker(shared: Arc<Shared>) {
    let mut every = tokio::time::interval(Duration::from_secs(1));
    loop {
        every.tick().await;
        let _ = shared.apply(|core, now| core.tick(now));
    }
}

fn mqtt_options(config: &Config, index: usize) -> MqttOptions {
    let b = &config.brokers[index];
    let mut o = MqttOptions::new(config.client_id.clone(), b.host.clone(), b.port);
    o.set_keep_alive(Duration::from_secs(15));
    // A persistent session: statuses published while the bridge was down wait at the broker.
    o.set_clean_session(false);
    o.set_max_packet_size(MAX_MESSAGE_BYTES + 1024, MAX_MESSAGE_BYTES + 1024);
    if let Some(a) = &config.broker_auth {
        o.set_credentials(a.username.clone(), a.password.clone());
    }
    if b.tls
        && let Some(tls) = &config.broker_tls
    {
        o.set_transport(rumqttc::Transport::tls_with_config(
            rumqttc::TlsConfiguration::Rustls(tls.clone()),
        ));
    }
    o
}

async fn mqtt_loop(
    shared: Arc<Shared>,
    mut client: AsyncClient,
    mut eventloop: rumqttc::EventLoop,
) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(processor(shared.clone(), rx));
    let mut failures = 0u32;
    let mut index = 0usize;
    loop {
        match eventloop.poll().await {
            Ok(MqttEvent::Incoming(Packet::ConnAck(_))) => {
                failures = 0;
                tracing::info!(broker = %shared.config.brokers[index].host, "connected to the broker");
                for kind in TopicKind::ALL.into_iter().filter(|k| k.from_agent()) {
                    let _ = client
                        .try_subscribe(kind.all_agents_filter().to_string(), QoS::AtLeastOnce);
                }
            }
            Ok(MqttEvent::Incoming(Packet::Publish(p))) => {
                let _ = tx.send((p.topic, p.payload));
            }
            Ok(_) => {}
            Err(e) => {
                failures += 1;
                tracing::warn!(error = %e, failures, "broker connection failed");
                if failures >= 3 && shared.config.brokers.len() > 1 {
                    index = (index + 1) % shared.config.brokers.len();
                    let (c, el) = AsyncClient::new(mqtt_options(&shared.config, index), 65536);
                    *shared.mqtt.lock().expect("mqtt lock") = c.clone();
                    client = c;
                    eventloop = el;
                    failures = 0;
                }
                // 250 ms doubling to 5 s, plus up to half again at random: a healed broker is
                // found within seconds, and bridges restarted together do not knock in step.
                let base = (250u64 << failures.min(5)).min(5_000);
                let jitter = (uuid::Uuid::new_v4().as_u128() as u64) % (base / 2 + 1);
                tokio::time::sleep(Duration::from_millis(base + jitter)).await;
            }
        }
    }
}

/// Applies MQTT messages in batches: one store transaction (one fsync) for all the messages
/// that arrived together, so a burst of status updates is not paced by the disk.
async fn processor(
    shared: Arc<Shared>,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<(String, bytes::Bytes)>,
) {
    const BATCH: usize = 1024;
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(m) => batch.push(m),
                Err(_) => break,
            }
        }
        let result = shared.apply(|core, now| {
            for (topic, payload) in &batch {
                dispatch(core, now, topic, payload);
            }
        });
        if let Err(e) = result {
            tracing::error!(error = %e, messages = batch.len(), "messages not stored; nothing acknowledged");
        }
    }
}

fn dispatch(core: &mut Core, now: u64, topic: &str, payload: &[u8]) {
    let Ok(t) = Topic::parse(topic) else {
        tracing::warn!(topic, "a message on a topic that is not Outpost's");
        return;
    };
    if payload.is_empty() {
        return; // a cleared retained message
    }
    let result = match t.kind {
        TopicKind::Hello => decode::<Hello>(payload).map(|m| core.on_hello(now, &m)),
        TopicKind::Offer => decode::<Offer>(payload).map(|m| core.on_offer(now, &m)),
        TopicKind::State => decode::<AgentState>(payload).map(|m| core.on_state(now, &m)),
        TopicKind::Status => decode::<TaskStatus>(payload).map(|m| core.on_status(now, &m)),
        TopicKind::Reply => decode::<CommandReply>(payload).map(|m| core.on_reply(now, &m)),
        _ => return,
    };
    if let Err(e) = result {
        tracing::warn!(topic, error = %e, "dropping an undecodable message");
    }
}
