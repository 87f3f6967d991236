//! Composition: opens the store, restores the core, starts its owner, the MQTT side and the
//! ticker, and serves the Marathon and Mesos routers (each behind the same auth and limits)
//! until SIGINT or SIGTERM. The only module that knows every other.

use std::sync::Arc;
use std::time::Duration;

use rumqttc::AsyncClient;

use crate::config::Config;
use crate::core::Core;
use crate::handle::{Parts, Shared};
use crate::store::{RedbStore, StateStore};
use crate::time::now_ms;

/// How many Marathon events a `/v2/events` subscriber may fall behind before its stream is
/// closed (it reconnects and re-reads, as with Marathon).
pub const EVENT_BUFFER: usize = 4096;

/// The Marathon router and the Mesos router over `shared`, each behind auth and the limits.
pub fn routers(shared: &Arc<Shared>) -> (axum::Router, axum::Router) {
    let auth = Arc::new(shared.config.auth.clone());
    let guard = |router: axum::Router| {
        router
            .layer(axum::middleware::from_fn_with_state(
                auth.clone(),
                crate::auth::require,
            ))
            .layer(axum::middleware::from_fn(crate::auth::read_body))
            .layer(axum::middleware::from_fn(crate::auth::bounded))
            .layer(axum::extract::DefaultBodyLimit::max(
                crate::auth::MAX_BODY_BYTES,
            ))
    };
    (
        guard(crate::marathon::router(shared.clone())),
        guard(crate::mesos::router(shared.clone())),
    )
}

/// Opens the store, restores the core, connects to the broker, and serves the APIs until
/// SIGINT or SIGTERM.
pub async fn run(config: Config) -> Result<(), String> {
    std::fs::create_dir_all(&config.state_dir)
        .map_err(|e| format!("state_dir = {:?}: {e}", config.state_dir))?;
    let path = config.state_dir.join("bridge.redb");
    let store = RedbStore::open(&path).map_err(|e| e.to_string())?;
    let mut core = Core::load(now_ms(), &store).map_err(|e| e.to_string())?;
    core.set_signer(config.signer.clone());
    // Ids must differ from one run of the bridge to the next (and between bridges).
    core.seed_ids(uuid::Uuid::new_v4().as_u128() as u64);
    core.set_task_launch_timeout_ms(config.task_launch_timeout_ms);
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
    let (mqtt, eventloop) = AsyncClient::new(crate::mqtt::options(&config, 0), 65536);
    let store: Box<dyn StateStore> = Box::new(store);
    let shared = Shared::start(
        Parts {
            core,
            store,
            publisher: Box::new(crate::handle::MqttPublisher::new(
                mqtt.clone(),
                tokio::runtime::Handle::current(),
            )),
            clock: Box::new(now_ms),
            event_buffer: EVENT_BUFFER,
        },
        config.clone(),
        now_ms(),
    );
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| format!("listen = \"{}\": {e}", config.listen))?;
    tracing::info!(listen = %config.listen, tls = config.api_tls.is_some(), auth = config.auth.enabled(), "Marathon API listening");
    tokio::spawn(crate::mqtt::run(shared.clone(), mqtt, eventloop));
    tokio::spawn(ticker(shared.clone()));
    let mesos_listener = tokio::net::TcpListener::bind(config.mesos_listen)
        .await
        .map_err(|e| format!("mesos_listen = \"{}\": {e}", config.mesos_listen))?;
    tracing::info!(listen = %config.mesos_listen, "Mesos operator endpoints listening");
    let (app, mesos) = routers(&shared);
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

/// The scheduler's heartbeat: a tick job every second (unreachable timers, launch timeouts,
/// offers). A tick that waits behind a busy owner is not doubled up.
async fn ticker(shared: Arc<Shared>) {
    let mut every = tokio::time::interval(Duration::from_secs(1));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let _ = shared.apply(|core, now| core.tick(now)).await;
    }
}
