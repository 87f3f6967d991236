//! The MQTT side: one rumqttc client with a persistent session, subscribed to every agent's
//! topics; incoming messages go to the owner in batches, decoded there into core calls. The
//! client's publisher is handed to the owner, which publishes only after a commit.

use std::sync::Arc;
use std::time::Duration;

use rumqttc::{AsyncClient, Event as MqttEvent, MqttOptions, Packet, QoS};

use outpost_protocol::codec::MAX_MESSAGE_BYTES;
use outpost_protocol::topics::{LOGS_FILTER, parse_logs_topic};
use outpost_protocol::{
    AgentState, AgentStats, CommandReply, Hello, Offer, PullProgress, TaskStatus, Topic, TopicKind,
    decode,
};

use crate::config::Config;
use crate::core::Core;
use crate::handle::Shared;
use crate::time::Millis;

/// Most messages applied in one owner job.
const BATCH: usize = 1024;
/// Most batches queued for the owner and not yet committed.
const IN_FLIGHT: usize = 8;

/// The client options for broker `index` of the configuration.
pub fn options(config: &Config, index: usize) -> MqttOptions {
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

/// Polls the broker connection for ever: subscribes on every CONNACK, hands incoming
/// publishes to the batcher, moves to the next broker after three failures in a row.
pub async fn run(shared: Arc<Shared>, mut client: AsyncClient, mut eventloop: rumqttc::EventLoop) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(batcher(shared.clone(), rx));
    let mut failures = 0u32;
    let mut index = 0usize;
    loop {
        match eventloop.poll().await {
            Ok(MqttEvent::Incoming(Packet::ConnAck(_))) => {
                failures = 0;
                shared.metrics.connected();
                tracing::info!(broker = %shared.config.brokers[index].host, "connected to the broker");
                for kind in TopicKind::ALL.into_iter().filter(|k| k.from_agent()) {
                    let _ = client
                        .try_subscribe(kind.all_agents_filter().to_string(), QoS::AtLeastOnce);
                }
                let _ = client.try_subscribe(LOGS_FILTER, QoS::AtLeastOnce);
            }
            Ok(MqttEvent::Incoming(Packet::Publish(p))) => {
                // Logs answers go straight to the request that waits for them: they change
                // no state, so they neither wait for nor take a place in the owner's queue.
                if let Ok((_, request_id)) = parse_logs_topic(&p.topic) {
                    shared.logs.on_chunk(request_id, &p.payload);
                } else if p.topic.ends_with("/stats") {
                    agent_stats(&shared, &p.topic, &p.payload);
                } else if p.topic.ends_with("/progress") {
                    pull_progress(&shared, &p.topic, &p.payload);
                } else if !(p.topic.ends_with("/reply") && shared.logs.on_reply(&p.payload)) {
                    let _ = tx.send((p.topic, p.payload));
                }
            }
            Ok(_) => {}
            Err(e) => {
                failures += 1;
                tracing::warn!(error = %e, failures, "broker connection failed");
                if failures >= 3 && shared.config.brokers.len() > 1 {
                    index = (index + 1) % shared.config.brokers.len();
                    let (c, el) = AsyncClient::new(options(&shared.config, index), 65536);
                    let publisher = crate::handle::MqttPublisher::new(
                        c.clone(),
                        tokio::runtime::Handle::current(),
                    );
                    shared.detach(move |o, _| o.set_publisher(Box::new(publisher)));
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

/// An agent's stats message: kept for `/metrics/prometheus` when it names the agent of its
/// topic.
fn agent_stats(shared: &Shared, topic: &str, payload: &[u8]) {
    match (Topic::parse(topic), decode::<AgentStats>(payload)) {
        (Ok(t), Ok(stats)) if t.agent_id == stats.agent_id => shared.metrics.agent_reported(stats),
        (Ok(_), Ok(stats)) => {
            tracing::warn!(topic, agent = %stats.agent_id, "dropping stats that name another agent than their topic");
        }
        (_, Err(e)) => tracing::warn!(topic, error = %e, "dropping undecodable agent stats"),
        (Err(e), _) => {
            tracing::warn!(topic, error = %e, "dropping stats on a topic that is not Outpost's")
        }
    }
}

/// An agent's pull progress: relayed on `/v2/events` as `outpost_pull_progress` (to the
/// subscribers that ask for that type).
fn pull_progress(shared: &Shared, topic: &str, payload: &[u8]) {
    let p = match (Topic::parse(topic), decode::<PullProgress>(payload)) {
        (Ok(t), Ok(p)) if t.agent_id == p.agent_id => p,
        (_, Err(e)) => {
            tracing::warn!(topic, error = %e, "dropping undecodable pull progress");
            return;
        }
        _ => {
            tracing::warn!(
                topic,
                "dropping pull progress that names another agent than its topic"
            );
            return;
        }
    };
    let _ = shared.events.send(serde_json::json!({
        "eventType": "outpost_pull_progress",
        "timestamp": crate::time::rfc3339(crate::time::now_ms()),
        "agentId": p.agent_id.as_str(),
        "image": p.image.as_str(),
        "appId": p.app_id.as_deref(),
        "taskId": p.task_id.as_deref(),
        "layersDone": p.layers_done,
        "layersTotal": p.layers_total,
        "bytesDone": p.bytes_done,
        "bytesTotal": p.bytes_total,
        "done": p.done,
        "error": p.error.as_deref(),
    }));
}

/// Hands MQTT messages to the owner in batches: all the messages that arrived together are
/// one job, queued in arrival order. Up to [`IN_FLIGHT`] batches wait for their commit at
/// once, so the owner commits several together (one fsync) while the next ones arrive, and a
/// burst of status updates is not paced by the disk.
async fn batcher(
    shared: Arc<Shared>,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<(String, bytes::Bytes)>,
) {
    let in_flight = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
    loop {
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let Some(first) = rx.recv().await else { return };
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(m) => batch.push(m),
                Err(_) => break,
            }
        }
        let n = batch.len();
        let queued = shared
            .apply_queued(move |core, now| {
                for (topic, payload) in &batch {
                    dispatch(core, now, topic, payload);
                }
            })
            .await;
        tokio::spawn(async move {
            let result = match queued {
                Ok(answer) => answer.wait().await,
                Err(e) => Err(e),
            };
            drop(permit);
            if let Err(e) = result {
                tracing::error!(error = %e, messages = n, "messages not stored; nothing acknowledged");
            }
        });
    }
}

/// One MQTT message into the core: decoded by its topic's kind, an undecodable one logged and
/// dropped.
pub fn dispatch(core: &mut Core, now: Millis, topic: &str, payload: &[u8]) {
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
