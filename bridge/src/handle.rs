//! The one owner of the bridge's core, and the handle everything else reaches it through.
//!
//! A dedicated thread (not a tokio worker: it fsyncs) owns the [`Core`], the [`StateStore`],
//! the Mesos frameworks' event streams and the MQTT publisher. API requests, MQTT batches and
//! ticks arrive as jobs on one bounded channel. The owner runs every job that is waiting (up to
//! [`GROUP`]), lets the core settle, commits all their writes at once (group commit), and only
//! then publishes, broadcasts and answers (invariant 10). A failed commit sends nothing: its
//! writes are kept for the next commit, and every job of the group gets the error. A commit the
//! store refuses by its fence stops the owner from acting for good.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::Value;
use tokio::sync::{broadcast, mpsc, oneshot, watch};

use crate::config::Config;
use crate::core::{Core, Effect};
use crate::store::{StateStore, StoreError};
use crate::time::Millis;

/// Most jobs run before one commit.
pub const GROUP: usize = 1024;
/// Jobs that may wait for the owner before senders wait (the backpressure).
const QUEUE: usize = 4096;

/// Where MQTT publishes go: the broker client, or a test's channel.
pub trait Publisher: Send {
    /// Queues one QoS 1 publish; an error is logged (the agent's reconcile repairs a lost one).
    fn publish(&mut self, topic: String, payload: Vec<u8>) -> Result<(), String>;
}

/// The broker client as the owner's publisher. Its request queue is bounded (65,536): when a
/// group sends more (a deploy of 100,000 instances is 100,000 launches), the owner waits for
/// room instead of dropping the rest, so the queue is the owner's backpressure. While the
/// broker is away the queue does not drain: after one wait of [`PUBLISH_WAIT`] in vain the
/// publisher drops what does not fit (logged; agents' reconciles repair it) until the queue
/// takes a publish again, so the API keeps answering during an outage.
pub struct MqttPublisher {
    client: rumqttc::AsyncClient,
    runtime: tokio::runtime::Handle,
    draining: bool,
}

/// How long the owner waits for room in the broker client's queue.
pub const PUBLISH_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

impl MqttPublisher {
    /// Publishes through `client`; `runtime` drives the wait when its queue is full (the owner
    /// is a plain thread, not a task of it).
    pub fn new(client: rumqttc::AsyncClient, runtime: tokio::runtime::Handle) -> Self {
        Self {
            client,
            runtime,
            draining: true,
        }
    }
}

impl Publisher for MqttPublisher {
    fn publish(&mut self, topic: String, payload: Vec<u8>) -> Result<(), String> {
        use rumqttc::{ClientError, QoS, Request};
        let p = match self
            .client
            .try_publish(topic, QoS::AtLeastOnce, false, payload)
        {
            Ok(()) => {
                self.draining = true;
                return Ok(());
            }
            Err(ClientError::TryRequest(Request::Publish(p))) if self.draining => p,
            Err(e) => return Err(e.to_string()),
        };
        let client = &self.client;
        let sent = self.runtime.block_on(async {
            tokio::time::timeout(
                PUBLISH_WAIT,
                client.publish_bytes(p.topic, QoS::AtLeastOnce, false, p.payload),
            )
            .await
        });
        match sent {
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(_) => {
                self.draining = false;
                Err(format!(
                    "the broker client's queue did not drain within {PUBLISH_WAIT:?} (is the broker away?)"
                ))
            }
        }
    }
}

impl Publisher for std::sync::mpsc::Sender<(String, Vec<u8>)> {
    fn publish(&mut self, topic: String, payload: Vec<u8>) -> Result<(), String> {
        self.send((topic, payload)).map_err(|e| e.to_string())
    }
}

/// A Mesos framework's subscription stream: its id and where its events go.
type Stream = (String, mpsc::UnboundedSender<Value>);

/// What the owner thread holds.
pub struct Owner {
    /// The state and the decisions.
    pub core: Core,
    store: Box<dyn StateStore>,
    publisher: Box<dyn Publisher>,
    events: broadcast::Sender<Value>,
    /// Subscribed frameworks' streams: framework id -> (stream id, sender).
    streams: HashMap<String, Stream>,
    clock: Box<dyn Fn() -> Millis + Send>,
    /// Set once the store's fence refused a commit (or the bridge stepped down): nothing is
    /// done from then on.
    fenced: Option<String>,
    /// Tells [`Shared::fenced`]'s watchers why, once.
    fenced_tx: watch::Sender<Option<String>>,
    /// Where commit latencies and the core's latency observations go.
    metrics: Arc<crate::metrics::Metrics>,
}

impl Owner {
    /// Registers `framework_id`'s stream (in the same step as its SUBSCRIBE, so no effect of
    /// the subscription or of a later tick can miss it).
    pub fn open_stream(
        &mut self,
        framework_id: &str,
        stream_id: &str,
        tx: mpsc::UnboundedSender<Value>,
    ) {
        self.streams
            .insert(framework_id.to_string(), (stream_id.to_string(), tx));
    }

    /// Forgets `framework_id`'s stream if `stream_id` is still the current one.
    pub fn close_stream(&mut self, framework_id: &str, stream_id: &str) {
        if self
            .streams
            .get(framework_id)
            .is_some_and(|(sid, _)| sid == stream_id)
        {
            self.streams.remove(framework_id);
        }
    }

    /// Replaces the MQTT publisher (the MQTT loop moved to another broker).
    pub fn set_publisher(&mut self, p: Box<dyn Publisher>) {
        self.publisher = p;
    }

    fn run_effects(&mut self, effects: Vec<Effect>) {
        for effect in effects {
            match effect {
                Effect::Publish { topic, payload } => {
                    if let Err(e) = self.publisher.publish(topic, payload) {
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
                    if let Some((_, tx)) = self.streams.get(&framework_id) {
                        let _ = tx.send(event);
                    }
                }
                Effect::EndStream { framework_id } => {
                    self.streams.remove(&framework_id);
                }
            }
        }
    }

    /// Settles the core, commits what the group changed, then sends what it produced.
    fn commit(&mut self, now: Millis) -> Result<(), StoreError> {
        if let Some(why) = &self.fenced {
            // Whatever the jobs changed is dropped with the rest: a deposed bridge acts no more.
            let _ = self.core.take_writes();
            let _ = self.core.take_effects();
            return Err(StoreError::Fenced(why.clone()));
        }
        let t0 = std::time::Instant::now();
        self.core.settle(now);
        let t1 = std::time::Instant::now();
        let writes = self.core.take_writes();
        let effects = self.core.take_effects();
        let t2 = std::time::Instant::now();
        let committed = self.store.commit(&writes);
        self.metrics
            .commit_seconds
            .observe(t2.elapsed().as_secs_f64());
        self.metrics.observe(self.core.take_observations());
        match committed {
            Ok(()) => {
                let t3 = std::time::Instant::now();
                let n = effects.len();
                self.run_effects(effects);
                tracing::debug!(
                    writes = writes.len(),
                    effects = n,
                    settle_us = (t1 - t0).as_micros() as u64,
                    encode_us = (t2 - t1).as_micros() as u64,
                    commit_us = (t3 - t2).as_micros() as u64,
                    send_us = t3.elapsed().as_micros() as u64,
                    "group committed"
                );
                Ok(())
            }
            Err(StoreError::Fenced(why)) => {
                tracing::error!(reason = %why, "the store refused this bridge's commit: it stops acting");
                self.fenced = Some(why.clone());
                let _ = self.fenced_tx.send(Some(why.clone()));
                Err(StoreError::Fenced(why))
            }
            Err(e) => {
                tracing::error!(error = %e, writes = writes.len(), "could not store the bridge's state; nothing is sent, the writes are kept for the next commit");
                self.core.keep_writes(writes);
                Err(e)
            }
        }
    }
}

/// Called with the group's commit result once it is known.
type Reply = Box<dyn FnOnce(&Result<(), StoreError>) + Send>;
/// One unit of work for the owner.
type Job = Box<dyn FnOnce(&mut Owner, Millis) -> Option<Reply> + Send>;

/// The answer to a queued job ([`Shared::apply_queued`]), once its group is committed.
pub struct Pending<T>(oneshot::Receiver<Result<T, StoreError>>);

impl<T> Pending<T> {
    /// Waits for the job's group to be committed; the job's result or the commit's error.
    pub async fn wait(self) -> Result<T, StoreError> {
        self.0.await.map_err(|_| StoreError::Stopped)?
    }
}

/// Counters the HTTP layers keep.
#[derive(Debug, Default)]
pub struct Counters {
    /// `/v2/events` subscribers whose stream was closed because they fell behind.
    pub slow_event_subscribers: AtomicU64,
}

/// What the HTTP handlers and the MQTT loop share: the way to the owner, the Marathon event
/// broadcast, the configuration.
pub struct Shared {
    jobs: mpsc::Sender<Job>,
    /// Marathon events, for `/v2/events`.
    pub events: broadcast::Sender<Value>,
    /// The configuration.
    pub config: Config,
    /// When the bridge started.
    pub started_at_ms: u64,
    /// Counters.
    pub counters: Counters,
    /// Why the owner stopped acting, once it has ([`StoreError::Fenced`], a step-down).
    fenced: watch::Receiver<Option<String>>,
    /// Poked by `DELETE /v2/leader`: the election makes this bridge step down.
    pub abdicate: tokio::sync::Notify,
    /// The group's bridges as the election last listed them, leader first (`[ha]`; kept by
    /// the election while this bridge leads; empty without `[ha]`).
    pub bridges: Latest<Vec<crate::ha::election::LeaderInfo>>,
    /// The task logs streams under way (`GET /v2/tasks/{id}/logs`).
    pub logs: crate::logs::LogStreams,
    /// What `/metrics/prometheus` shows beside the core's state.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// The HTTP event callbacks' counters and nudge (`/v2/eventSubscriptions`).
    pub callbacks: crate::callbacks::Callbacks,
}

/// A value that is only ever replaced whole and read as a copy (a bridge's role, the list of
/// bridges). A writer cannot leave it half-written, so a lock poisoned by a panic elsewhere
/// still holds a whole value and is used as it is.
#[derive(Debug, Default)]
pub struct Latest<T>(std::sync::RwLock<T>);

impl<T: Clone> Latest<T> {
    /// Holding `value`.
    pub fn new(value: T) -> Self {
        Self(std::sync::RwLock::new(value))
    }

    /// A copy of the value.
    pub fn get(&self) -> T {
        match self.0.read() {
            Ok(v) => v.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Replaces the value.
    pub fn set(&self, value: T) {
        match self.0.write() {
            Ok(mut v) => *v = value,
            Err(poisoned) => *poisoned.into_inner() = value,
        }
    }
}

/// How to build the owner.
pub struct Parts {
    /// The core (restored from the store).
    pub core: Core,
    /// The store.
    pub store: Box<dyn StateStore>,
    /// Where MQTT publishes go.
    pub publisher: Box<dyn Publisher>,
    /// The wall clock (a test passes its own).
    pub clock: Box<dyn Fn() -> Millis + Send>,
    /// How many Marathon events a `/v2/events` subscriber may fall behind before its stream
    /// is closed.
    pub event_buffer: usize,
}

impl Shared {
    /// Starts the owner thread with `parts` and returns the handle to it.
    pub fn start(parts: Parts, config: Config, started_at_ms: u64) -> Arc<Self> {
        let (events, _) = broadcast::channel(parts.event_buffer.max(1));
        let (jobs, rx) = mpsc::channel(QUEUE);
        let (fenced_tx, fenced) = watch::channel(None);
        let metrics = Arc::new(crate::metrics::Metrics::default());
        let owner = Owner {
            fenced_tx,
            core: parts.core,
            store: parts.store,
            publisher: parts.publisher,
            events: events.clone(),
            streams: HashMap::new(),
            clock: parts.clock,
            fenced: None,
            metrics: metrics.clone(),
        };
        std::thread::Builder::new()
            .name("outpost-core".into())
            .spawn(move || run(owner, rx))
            .map_err(|e| tracing::error!(error = %e, "cannot start the core's thread"))
            .ok();
        Arc::new(Self {
            jobs,
            events,
            config,
            started_at_ms,
            counters: Counters::default(),
            fenced,
            abdicate: tokio::sync::Notify::new(),
            bridges: Latest::new(Vec::new()),
            logs: crate::logs::LogStreams::default(),
            metrics,
            callbacks: crate::callbacks::Callbacks::default(),
        })
    }

    /// Waits until the owner has stopped acting (its store refused a commit as fenced, or
    /// [`Shared::stop`]); why.
    pub async fn fenced(&self) -> String {
        let mut rx = self.fenced.clone();
        match rx.wait_for(Option::is_some).await {
            Ok(why) => why.clone().unwrap_or_default(),
            Err(_) => "the core's owner stopped".into(),
        }
    }

    /// Makes the owner stop acting (a bridge that steps down): every job after this one is
    /// refused as fenced, nothing more is committed or sent.
    pub fn stop(&self, why: &str) {
        let why = why.to_string();
        self.detach(move |o, _| {
            o.fenced = Some(why.clone());
            let _ = o.fenced_tx.send(Some(why));
        });
    }

    async fn submit<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Owner, Millis) -> T + Send + 'static,
        needs_commit: bool,
    ) -> Result<T, StoreError> {
        self.enqueue(f, needs_commit).await?.wait().await
    }

    /// Queues the job (waiting for room in the owner's queue) and returns its answer to come.
    async fn enqueue<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Owner, Millis) -> T + Send + 'static,
        needs_commit: bool,
    ) -> Result<Pending<T>, StoreError> {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |owner, now| {
            let out = f(owner, now);
            Some(Box::new(move |r: &Result<(), StoreError>| {
                let answer = match r {
                    Err(e) if needs_commit => Err(e.clone()),
                    _ => Ok(out),
                };
                let _ = tx.send(answer);
            }))
        });
        self.jobs.send(job).await.map_err(|_| StoreError::Stopped)?;
        Ok(Pending(rx))
    }

    /// Runs `f` on the core, commits its writes, then sends what it produced; answers once the
    /// commit is done. Nothing is sent unless the store committed first.
    pub async fn apply<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Core, Millis) -> T + Send + 'static,
    ) -> Result<T, StoreError> {
        self.submit(move |o, now| f(&mut o.core, now), true).await
    }

    /// As [`Shared::apply`] in two halves: returns once the job is queued (jobs queued one
    /// after another run in that order), with the answer to await. A caller can so keep
    /// several jobs in the owner's queue, which commits them together.
    pub async fn apply_queued<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Core, Millis) -> T + Send + 'static,
    ) -> Result<Pending<T>, StoreError> {
        self.enqueue(move |o, now| f(&mut o.core, now), true).await
    }

    /// As [`Shared::apply`], with the whole owner (its streams).
    pub async fn apply_owner<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Owner, Millis) -> T + Send + 'static,
    ) -> Result<T, StoreError> {
        self.submit(f, true).await
    }

    /// Reads the core (on the owner, between two groups of writes).
    pub async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Core) -> T + Send + 'static,
    ) -> Result<T, StoreError> {
        self.submit(
            move |o, _| {
                o.core.catch_up();
                f(&o.core)
            },
            false,
        )
        .await
    }

    /// Reads a copy of the core made by the owner ([`Core::snapshot`]), on a blocking thread
    /// that runs below the owner ([`READER_NICE`]): for answers that cost more to build than
    /// the copy does (lists of every app, task or agent), so the owner neither stalls on them
    /// nor, on a busy machine, loses the CPU to them.
    pub async fn read_snapshot<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Core) -> T + Send + 'static,
    ) -> Result<T, StoreError> {
        let snapshot = self
            .submit(
                |o, _| {
                    o.core.catch_up();
                    o.core.snapshot()
                },
                false,
            )
            .await?;
        tokio::task::spawn_blocking(move || {
            below_the_owner();
            f(&snapshot)
        })
        .await
        .map_err(|_| StoreError::Stopped)
    }

    /// [`Shared::read_snapshot`] for a JSON answer, serialized on the same thread (the text of
    /// a big answer costs about as much as its tree).
    pub async fn read_snapshot_json(
        &self,
        f: impl FnOnce(&Core) -> serde_json::Value + Send + 'static,
    ) -> Result<JsonBody, StoreError> {
        self.read_snapshot(move |core| JsonBody::of(&f(core))).await
    }

    /// Queues `f` without waiting for it (from places that cannot wait: a dropped stream).
    pub fn detach(&self, f: impl FnOnce(&mut Owner, Millis) + Send + 'static) {
        let job: Job = Box::new(move |owner, now| {
            f(owner, now);
            None
        });
        if let Err(mpsc::error::TrySendError::Full(job)) = self.jobs.try_send(job) {
            let jobs = self.jobs.clone();
            tokio::spawn(async move {
                let _ = jobs.send(job).await;
            });
        }
    }

    /// Jobs waiting for the owner.
    pub fn queued(&self) -> usize {
        QUEUE - self.jobs.capacity()
    }

    /// Counts a `/v2/events` subscriber dropped for falling behind.
    pub fn count_slow_subscriber(&self) {
        self.counters
            .slow_event_subscribers
            .fetch_add(1, Ordering::Relaxed);
    }
}

/// The owner's loop: a group of jobs, one commit, the answers.
///
/// A step normally starts with a job. While the core has more to launch than one step placed
/// ([`Core::more_to_launch`]) and the last commit worked, the next step starts at once, with
/// whatever jobs are waiting or none.
/// A JSON answer's text, made by [`Shared::read_snapshot_json`] or [`JsonBody::of`].
pub struct JsonBody(pub Vec<u8>);

impl JsonBody {
    /// `value` written out (our own types always serialize; `null` if one did not).
    pub fn of(value: &impl serde::Serialize) -> Self {
        Self(serde_json::to_vec(value).unwrap_or_else(|_| b"null".to_vec()))
    }
}

impl axum::response::IntoResponse for JsonBody {
    fn into_response(self) -> axum::response::Response {
        (
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            self.0,
        )
            .into_response()
    }
}

/// The nice value of the threads that build big reads ([`Shared::read_snapshot`]): with the
/// machine's cores full (a deploy of thousands: the owner, the broker, the agents' messages),
/// the scheduler gets them for a nice-0 thread about ten times as often, so a client polling
/// `/v2/apps?embed=apps.tasks` slows its own answers, not the deploy.
pub const READER_NICE: i32 = 10;

/// Lowers the calling thread to [`READER_NICE`] (on Linux a nice value is per thread). Tokio's
/// blocking threads run these reads; without privileges a nice value only goes up, so a
/// thread once lowered stays so, and lowering it again changes nothing.
fn below_the_owner() {
    match rustix::process::getpriority_process(None) {
        Ok(nice) if nice >= READER_NICE => {}
        _ => {
            if let Err(e) = rustix::process::setpriority_process(None, READER_NICE) {
                tracing::debug!(error = %e, "a reader's thread keeps its priority");
            }
        }
    }
}

fn run(mut owner: Owner, mut rx: mpsc::Receiver<Job>) {
    let mut continuing = false;
    let mut trim = crate::memory::Trim::default();
    loop {
        let first = if continuing {
            match rx.try_recv() {
                Ok(job) => Some(job),
                Err(mpsc::error::TryRecvError::Empty) => None,
                Err(mpsc::error::TryRecvError::Disconnected) => break,
            }
        } else {
            match rx.blocking_recv() {
                Some(job) => Some(job),
                None => break,
            }
        };
        let now = (owner.clock)();
        let started = std::time::Instant::now();
        owner
            .core
            .set_events_wanted(owner.events.receiver_count() > 0);
        let mut replies: Vec<Reply> = Vec::new();
        let mut ran = 0;
        if let Some(first) = first {
            replies.extend(first(&mut owner, now));
            ran = 1;
            while ran < GROUP {
                match rx.try_recv() {
                    Ok(job) => {
                        replies.extend(job(&mut owner, now));
                        ran += 1;
                    }
                    Err(_) => break,
                }
            }
        }
        let applied = std::time::Instant::now();
        let result = owner.commit(now);
        tracing::debug!(
            jobs = ran,
            apply_us = (applied - started).as_micros() as u64,
            "group ran"
        );
        continuing = result.is_ok() && owner.core.more_to_launch();
        for r in replies {
            r(&result);
        }
        trim.ran(ran);
        if trim.due(!continuing && rx.is_empty()) {
            let (before, t) = (crate::memory::rss_kib(), std::time::Instant::now());
            let released = crate::memory::release();
            tracing::debug!(
                released,
                rss_before_kib = before,
                rss_after_kib = crate::memory::rss_kib(),
                trim_us = t.elapsed().as_micros() as u64,
                "a burst is over: freed memory returned to the system"
            );
        }
    }
    tracing::info!("the core's owner stopped");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_broker_queue_is_waited_for_once_then_publishes_are_dropped_until_it_drains() {
        // A multi-threaded runtime, as the bridge's: its workers drive the timer while the
        // owner's thread waits in `Handle::block_on`.
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_time()
            .build()
            .unwrap();
        // A client whose event loop nobody polls: its queue of 2 never drains (a broker away).
        let (client, _eventloop) =
            rumqttc::AsyncClient::new(rumqttc::MqttOptions::new("t", "127.0.0.1", 1), 2);
        let mut p = MqttPublisher::new(client, rt.handle().clone());
        for _ in 0..2 {
            p.publish("t".into(), vec![1]).unwrap();
        }
        let t = std::time::Instant::now();
        let e = p.publish("t".into(), vec![1]).unwrap_err();
        assert!(t.elapsed() >= PUBLISH_WAIT, "it waited for room first");
        assert!(e.contains("did not drain"), "{e}");
        let t = std::time::Instant::now();
        assert!(p.publish("t".into(), vec![1]).is_err());
        assert!(
            t.elapsed() < PUBLISH_WAIT / 2,
            "then it drops without waiting"
        );
    }
}

#[cfg(test)]
mod latest_tests {
    use super::Latest;

    #[test]
    fn a_value_replaced_whole_is_read_and_written_after_a_panic_poisoned_its_lock() {
        let l = std::sync::Arc::new(Latest::new(vec![1]));
        let l2 = l.clone();
        let _ = std::thread::spawn(move || {
            let _guard = l2.0.write().unwrap();
            panic!("poisons the lock");
        })
        .join();
        assert!(l.0.is_poisoned());
        assert_eq!(l.get(), vec![1]);
        l.set(vec![2, 3]);
        assert_eq!(l.get(), vec![2, 3]);
    }
}
