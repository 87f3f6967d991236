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

/// A leadership's running parts: the owner of the core, the MQTT side and the ticker, and
/// the routers over them. One bridge without `[ha]` has one for its whole life; with `[ha]`,
/// one per time it is elected.
pub struct Term {
    /// The handle to the owner.
    pub shared: Arc<Shared>,
    marathon: axum::Router,
    mesos: axum::Router,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Term {
    /// Starts the owner over `core` and `store`, the MQTT side and the ticker.
    pub fn start(config: &Config, core: Core, store: Box<dyn StateStore>) -> Self {
        let (mqtt, eventloop) = AsyncClient::new(crate::mqtt::options(config, 0), 65536);
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
        let mut tasks = vec![
            tokio::spawn(crate::mqtt::run(shared.clone(), mqtt, eventloop)),
            tokio::spawn(ticker(shared.clone())),
        ];
        if config.http_callbacks {
            tasks.push(tokio::spawn(crate::callbacks::run(shared.clone())));
        }
        let (marathon, mesos) = routers(&shared);
        Self {
            shared,
            marathon,
            mesos,
            tasks,
        }
    }

    /// Stops acting at once: the broker connection and the ticker end, the owner refuses
    /// every job from now on.
    pub fn stop(self, why: &str) {
        for t in &self.tasks {
            t.abort();
        }
        self.shared.stop(why);
    }
}

/// Who answers a request: the routers of this bridge's leadership, or, on a bridge that does
/// not lead, the follower's answers ([`crate::ha::follower`]).
#[derive(Clone)]
enum Role {
    Leading {
        marathon: axum::Router,
        mesos: axum::Router,
    },
    Following(Option<crate::ha::election::LeaderInfo>),
}

/// The listeners' entry: hands each request to the current [`Role`].
struct Dispatch {
    role: crate::handle::Latest<Role>,
    /// This bridge's Marathon address (proxy loops are detected by it).
    me: String,
    /// With `api_tls`: how the leader's certificate is verified when a request is proxied.
    leader_tls: Option<Arc<rustls::ClientConfig>>,
}

impl Dispatch {
    fn role(&self) -> Role {
        self.role.get()
    }

    fn set(&self, role: Role) {
        self.role.set(role);
    }

    fn lead(&self, term: &Term) {
        self.set(Role::Leading {
            marathon: term.marathon.clone(),
            mesos: term.mesos.clone(),
        });
    }
}

type Req = axum::http::Request<axum::body::Body>;

async fn marathon_entry(
    axum::extract::State(d): axum::extract::State<Arc<Dispatch>>,
    req: Req,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    use tower::ServiceExt;
    match d.role() {
        Role::Leading { marathon, .. } => match marathon.oneshot(req).await {
            Ok(r) => r,
            Err(e) => match e {},
        },
        Role::Following(leader) => {
            crate::ha::follower::marathon(req, leader.as_ref(), &d.me, d.leader_tls.as_ref())
                .await
                .into_response()
        }
    }
}

async fn mesos_entry(
    axum::extract::State(d): axum::extract::State<Arc<Dispatch>>,
    req: Req,
) -> axum::response::Response {
    use tower::ServiceExt;
    match d.role() {
        Role::Leading { mesos, .. } => match mesos.oneshot(req).await {
            Ok(r) => r,
            Err(e) => match e {},
        },
        Role::Following(leader) => crate::ha::follower::mesos(&req, leader.as_ref()),
    }
}

/// Opens the store, restores the core, connects to the broker, and serves the APIs until
/// SIGINT or SIGTERM; with `[ha]`, takes part in the election and does so while it leads.
pub async fn run(config: Config) -> Result<(), String> {
    match &config.signer {
        Some(s) => tracing::info!(public_key = %s.public_base64(), "commands are signed"),
        None => {
            tracing::warn!("commands are not signed: set command_signing_key (docs/security.md)")
        }
    }
    let me = match &config.ha {
        Some(h) => h.marathon_address.clone(),
        None => format!("{}:{}", config.advertised_host, config.listen.port()),
    };
    let dispatch = Arc::new(Dispatch {
        role: crate::handle::Latest::new(Role::Following(None)),
        me,
        leader_tls: config.ha.as_ref().and_then(|h| h.leader_tls.clone()),
    });
    let _term = match &config.ha {
        None => {
            std::fs::create_dir_all(&config.state_dir)
                .map_err(|e| format!("state_dir = {:?}: {e}", config.state_dir))?;
            let path = config.state_dir.join("bridge.redb");
            let store = RedbStore::open(&path).map_err(|e| e.to_string())?;
            let core = restore(&config, &store, &path.display().to_string())?;
            let term = Term::start(&config, core, Box::new(store));
            dispatch.lead(&term);
            Some(term)
        }
        Some(_) => {
            tokio::spawn(elect(config.clone(), dispatch.clone()));
            None
        }
    };
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| format!("listen = \"{}\": {e}", config.listen))?;
    tracing::info!(listen = %config.listen, tls = config.api_tls.is_some(), auth = config.auth.enabled(), "Marathon API listening");
    let mesos_listener = tokio::net::TcpListener::bind(config.mesos_listen)
        .await
        .map_err(|e| format!("mesos_listen = \"{}\": {e}", config.mesos_listen))?;
    tracing::info!(listen = %config.mesos_listen, "Mesos operator endpoints listening");
    let app = axum::Router::new()
        .fallback(marathon_entry)
        .with_state(dispatch.clone());
    let mesos = axum::Router::new()
        .fallback(mesos_entry)
        .with_state(dispatch.clone());
    let tls = config.api_tls.clone();
    let mesos_tls = tls.clone();
    tokio::spawn(async move {
        if let Err(e) = serve(mesos_listener, mesos_tls, mesos, false).await {
            tracing::error!(error = %e, "the Mesos listener stopped");
        }
    });
    serve(listener, tls, app, true).await
}

/// The core as `store` holds it, set up for this run of the bridge.
fn restore(config: &Config, store: &dyn StateStore, place: &str) -> Result<Core, String> {
    let mut core = Core::load(now_ms(), store).map_err(|e| e.to_string())?;
    core.set_signer(config.signer.clone());
    // Ids must differ from one run of the bridge to the next (and between bridges).
    core.seed_ids(uuid::Uuid::new_v4().as_u128() as u64);
    core.set_task_launch_timeout_ms(config.task_launch_timeout_ms);
    core.set_max_versions(config.max_versions);
    tracing::info!(
        path = %place,
        apps = core.apps().count(),
        tasks = core.tasks(None).count(),
        frameworks = core.frameworks().count(),
        framework_tasks = core.framework_tasks().count(),
        "state loaded"
    );
    Ok(core)
}

/// How long a bridge waits before it tries ZooKeeper again, or joins again after it stepped
/// down (the others take over meanwhile).
const REJOIN: Duration = Duration::from_secs(1);

/// The election, for ever: a session, this bridge's node, then following the lowest node or,
/// being it, leading until the session is not connected, the store refuses a commit as
/// fenced, or `DELETE /v2/leader`. After leading it closes its session (its node goes with it)
/// and joins again with a new one: it never leads from a stale node, and a bridge that
/// stepped down joins behind the others.
async fn elect(config: Config, dispatch: Arc<Dispatch>) {
    let Some(ha) = config.ha.clone() else {
        return;
    };
    let id = uuid::Uuid::new_v4().to_string();
    let info = match crate::ha::election::master_info(&id, &ha) {
        Ok(i) => i,
        Err(e) => {
            tracing::error!(error = %e, "cannot take part in the election");
            return;
        }
    };
    loop {
        dispatch.set(Role::Following(None));
        let client = match crate::ha::connect(&ha.zk, ha.session_timeout).await {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(key = "ha.zk", error = %e, "no ZooKeeper session; retrying (this bridge does not lead without one)");
                tokio::time::sleep(REJOIN).await;
                continue;
            }
        };
        let me = match crate::ha::election::join(&client, &ha, &info).await {
            Ok(m) => m,
            Err(e) => {
                tracing::error!(error = %e, "cannot join the election; retrying");
                tokio::time::sleep(REJOIN).await;
                continue;
            }
        };
        tracing::info!(node = %me.path, "joined the election");
        follow_or_lead(&config, &ha, &client, &me, &dispatch).await;
        dispatch.set(Role::Following(None));
        // The node goes with the session: dropping the last handle closes it.
        let _ = client.delete(&me.path, None).await;
        drop(client);
        tokio::time::sleep(REJOIN).await;
    }
}

/// Follows the leader until this bridge leads, then leads; returns when it must join again.
async fn follow_or_lead(
    config: &Config,
    ha: &crate::ha::HaConfig,
    client: &zookeeper_client::Client,
    me: &crate::ha::election::Member,
    dispatch: &Arc<Dispatch>,
) {
    use zookeeper_client::SessionState;
    let mut states = client.state_watcher();
    loop {
        let (members, watcher) = match crate::ha::election::members(client, ha).await {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list the election's members");
                return;
            }
        };
        if !members.iter().any(|m| m.seq == me.seq) {
            tracing::warn!(node = %me.path, "this bridge's node is gone; joining again");
            return;
        }
        let leader = members[0].clone();
        if leader.seq == me.seq {
            lead(config, ha, client, &mut states, dispatch).await;
            return;
        }
        tracing::info!(leader = %leader.marathon, mesos = %leader.mesos, "following");
        dispatch.set(Role::Following(Some(leader)));
        let changed = watcher.changed();
        tokio::pin!(changed);
        loop {
            tokio::select! {
                _ = &mut changed => break,
                s = states.changed() => match s {
                    SessionState::SyncConnected | SessionState::ConnectedReadOnly => {}
                    SessionState::Disconnected => {
                        tracing::warn!("the ZooKeeper session is disconnected; following the last leader known");
                    }
                    other => {
                        tracing::warn!(state = ?other, "the ZooKeeper session ended; joining again");
                        return;
                    }
                },
            }
        }
    }
}

/// A change of the election's members to come.
type MembersChanged =
    std::pin::Pin<Box<dyn std::future::Future<Output = zookeeper_client::WatchedEvent> + Send>>;

/// Lists the election's members into the term's handle (what `/ui/bridges` shows); the change
/// to wait for next (`None` if they could not be listed: the session is away, and the next
/// state change lists them again).
async fn list_members(
    client: &zookeeper_client::Client,
    ha: &crate::ha::HaConfig,
    term: &Term,
) -> Option<MembersChanged> {
    match crate::ha::election::members(client, ha).await {
        Ok((list, watcher)) => {
            term.shared.bridges.set(list);
            Some(Box::pin(watcher.changed()))
        }
        Err(e) => {
            tracing::debug!(error = %e, "cannot list the election's members");
            None
        }
    }
}

/// Leads: takes the next epoch, loads the state from ZooKeeper, starts a [`Term`], and stops it
/// when the session has expired or stayed disconnected for the session timeout, the store is
/// fenced, or an abdication (while disconnected it acts not at all: its store refuses commits).
async fn lead(
    config: &Config,
    ha: &crate::ha::HaConfig,
    client: &zookeeper_client::Client,
    states: &mut zookeeper_client::StateWatcher,
    dispatch: &Arc<Dispatch>,
) {
    use zookeeper_client::SessionState;
    let epoch = match crate::ha::take_epoch(client, &ha.zk).await {
        Ok(e) => e,
        Err(e) => {
            tracing::error!(error = %e, "elected, but cannot take the next epoch");
            return;
        }
    };
    tracing::info!(
        epoch = epoch.number,
        "elected: loading the state from ZooKeeper"
    );
    let (c, url, cfg) = (client.clone(), ha.zk.clone(), config.clone());
    let runtime = tokio::runtime::Handle::current();
    let started = std::time::Instant::now();
    let loaded = tokio::task::spawn_blocking(move || {
        let store = crate::store::ZkStore::open(c, url.clone(), runtime, epoch)
            .map_err(|e| e.to_string())?;
        let mut core = restore(&cfg, &store, &url.to_string())?;
        core.set_epoch(Some(epoch.number));
        Ok::<_, String>((store, core))
    })
    .await;
    let (store, core) = match loaded {
        Ok(Ok(x)) => x,
        Ok(Err(e)) => {
            tracing::error!(error = %e, "elected, but cannot load the state");
            return;
        }
        Err(e) => {
            tracing::error!(error = %e, "elected, but the state's loader failed");
            return;
        }
    };
    let term = Term::start(config, core, Box::new(store));
    dispatch.lead(&term);
    tracing::info!(
        epoch = epoch.number,
        load_ms = started.elapsed().as_millis() as u64,
        "leading"
    );
    // Disconnected, the leader stops acting at once (its store refuses every commit, so nothing
    // is stored or sent) but keeps its node: back within the session timeout, nobody else can
    // have been elected, and it goes on. Longer, or Expired, it steps down.
    let mut disconnected: Option<tokio::time::Instant> = None;
    // The other members, for the UI: listed now and whenever they change.
    let mut members = list_members(client, ha, &term).await;
    let why = loop {
        let give_up = disconnected.map(|t| t + ha.session_timeout);
        // The watch lives across turns of the loop (a turn for another reason keeps it).
        let changed = async {
            match members.as_mut() {
                Some(w) => {
                    w.await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = changed => {
                members = list_members(client, ha, &term).await;
            }
            s = states.changed() => match s {
                SessionState::SyncConnected => {
                    if disconnected.take().is_some() {
                        tracing::info!(epoch = epoch.number, "the ZooKeeper session is connected again: leading on");
                    }
                    if members.is_none() {
                        members = list_members(client, ha, &term).await;
                    }
                }
                SessionState::Disconnected | SessionState::ConnectedReadOnly => {
                    if disconnected.is_none() {
                        tracing::warn!(epoch = epoch.number, "the ZooKeeper session is disconnected: nothing is stored or sent until it is back");
                        disconnected = Some(tokio::time::Instant::now());
                    }
                }
                other => break format!("the ZooKeeper session is {other:?}"),
            },
            _ = async {
                match give_up {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending().await,
                }
            } => break "the ZooKeeper session stayed disconnected for the session timeout".to_string(),
            why = term.shared.fenced() => break why,
            _ = term.shared.abdicate.notified() => break "asked to abdicate (DELETE /v2/leader)".to_string(),
        }
    };
    dispatch.set(Role::Following(None));
    term.stop(&why);
    tracing::error!(reason = %why, epoch = epoch.number, "stepped down: this bridge no longer leads");
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
