//! The broker connection through rumqttc. Subscribes to this agent's `cmd` and `ack` topics at
//! QoS 1 with a persistent session (commands queued while the agent was away are delivered),
//! registers the offline state as its last will, reconnects with backoff and jitter, and moves
//! to the next broker URL after repeated failures.

use std::time::Duration;

use rumqttc::{AsyncClient, Event as MqttEvent, LastWill, MqttOptions, Packet, QoS};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

use outpost_protocol::codec::{MAX_MESSAGE_BYTES, encode_to_vec};
use outpost_protocol::{AgentState, Liveness, PROTOCOL_VERSION, Topic, TopicKind};

use super::{Jitter, backoff};
use crate::config::Config;
use crate::core::Event;

/// The longest pause between reconnect attempts (plus up to 50 % jitter). Short, so a healed
/// partition is noticed within seconds (the soak benchmark's target is convergence < 5 s);
/// a fleet of 10,000 agents retrying a down broker this often is ~3,000 connects/s, which
/// mosquitto takes.
const RECONNECT_MAX_MS: u64 = 3_000;

/// Failures on one broker before the next URL is tried.
const FAILURES_BEFORE_SWITCH: u32 = 3;

/// What the runtime asks of the broker connection.
#[derive(Debug)]
pub enum Outgoing {
    /// Publish on this agent's topic of `kind`.
    Publish(TopicKind, Vec<u8>),
    /// Publish a [`outpost_protocol::LogChunk`] on a logs request's own topic (QoS 1, not
    /// retained).
    PublishLogs(String, Vec<u8>),
    /// The received message with this token has been handled and the agent's state saved:
    /// acknowledge it to the broker now (QoS 1 manual acks, so a crash before the save gets
    /// the message redelivered instead of lost).
    Ack(u64),
}

/// A received command or status acknowledgement, with the token to acknowledge it by
/// ([`Outgoing::Ack`]) once handled.
pub type Received = (Event, u64);

/// Starts the connection task: connection events go to `events`, received messages to
/// `received`; returns the sender for outgoing messages.
pub fn spawn(
    config: &Config,
    started_at_ms: u64,
    events: UnboundedSender<Event>,
    received: UnboundedSender<Received>,
) -> UnboundedSender<Outgoing> {
    let (tx, rx) = unbounded_channel();
    let config = config.clone();
    tokio::spawn(async move { run(config, started_at_ms, events, received, rx).await });
    tx
}

fn topic(agent_id: &str, kind: TopicKind) -> String {
    Topic::new(agent_id, kind)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

fn qos(kind: TopicKind) -> QoS {
    match kind.qos() {
        0 => QoS::AtMostOnce,
        2 => QoS::ExactlyOnce,
        _ => QoS::AtLeastOnce,
    }
}

fn options(config: &Config, index: usize, started_at_ms: u64) -> MqttOptions {
    let broker = &config.brokers[index];
    let mut o = MqttOptions::new(
        format!("outpost-agent-{}", config.agent_id),
        broker.host.clone(),
        broker.port,
    );
    o.set_keep_alive(Duration::from_secs(15));
    // A persistent session: QoS 1 commands published while we are away wait at the broker.
    o.set_clean_session(false);
    // Acknowledge a command only once the agent has saved what it did with it.
    o.set_manual_acks(true);
    o.set_max_packet_size(MAX_MESSAGE_BYTES + 1024, MAX_MESSAGE_BYTES + 1024);
    if let Some(auth) = &config.broker_auth {
        o.set_credentials(auth.username.clone(), auth.password.clone());
    }
    if broker.tls
        && let Some(tls) = &config.broker_tls
    {
        o.set_transport(rumqttc::Transport::tls_with_config(
            rumqttc::TlsConfiguration::Rustls(tls.clone()),
        ));
    }
    let will = AgentState {
        version: PROTOCOL_VERSION,
        agent_id: outpost_protocol::AgentId::new(&config.agent_id).unwrap_or_default(),
        liveness: Liveness::Offline,
        started_at_ms,
    };
    o.set_last_will(LastWill::new(
        topic(&config.agent_id, TopicKind::State),
        encode_to_vec(&will),
        QoS::AtLeastOnce,
        true,
    ));
    o
}

async fn run(
    config: Config,
    started_at_ms: u64,
    events: UnboundedSender<Event>,
    received: UnboundedSender<Received>,
    mut outgoing: UnboundedReceiver<Outgoing>,
) {
    let mut jitter = Jitter::new();
    let mut next_token = 0u64;
    let cmd_topic = topic(&config.agent_id, TopicKind::Cmd);
    let ack_topic = topic(&config.agent_id, TopicKind::Ack);
    let mut index = 0usize;
    loop {
        let broker = &config.brokers[index];
        tracing::info!(host = %broker.host, port = broker.port, "connecting to the broker");
        let (client, mut eventloop) =
            AsyncClient::new(options(&config, index, started_at_ms), 1024);
        let mut failures = 0u32;
        let mut connected = false;
        // Received publishes waiting for the runtime to handle (and persist) them. Cleared
        // when the connection drops: the broker redelivers them on the next session.
        let mut unacked: std::collections::HashMap<u64, rumqttc::Publish> = Default::default();
        loop {
            tokio::select! {
                polled = eventloop.poll() => match polled {
                    Ok(MqttEvent::Incoming(Packet::ConnAck(_))) => {
                        failures = 0;
                        for t in [&cmd_topic, &ack_topic] {
                            let _ = client.try_subscribe(t.clone(), QoS::AtLeastOnce);
                        }
                    }
                    Ok(MqttEvent::Incoming(Packet::SubAck(_))) => {
                        // Both subscriptions are in one flight; the second SubAck is harmless.
                        if !connected {
                            connected = true;
                            tracing::info!(host = %broker.host, port = broker.port, "connected to the broker");
                            let local_ip = local_ip_towards(&broker.host, broker.port).await;
                            let _ = events.send(Event::BrokerConnected { local_ip });
                        }
                    }
                    Ok(MqttEvent::Incoming(Packet::Publish(p))) => {
                        let event = if p.topic == cmd_topic {
                            Event::CommandReceived(p.payload.to_vec())
                        } else if p.topic == ack_topic {
                            Event::AckReceived(p.payload.to_vec())
                        } else {
                            let _ = client.try_ack(&p);
                            continue;
                        };
                        next_token += 1;
                        unacked.insert(next_token, p);
                        if received.send((event, next_token)).is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        // Unacknowledged messages come again on the next session.
                        unacked.clear();
                        if connected {
                            connected = false;
                            let _ = events.send(Event::BrokerDisconnected);
                        }
                        failures += 1;
                        tracing::warn!(error = %e, host = %broker.host, port = broker.port, failures, "broker connection failed");
                        if failures >= FAILURES_BEFORE_SWITCH && config.brokers.len() > 1 {
                            index = (index + 1) % config.brokers.len();
                            break;
                        }
                        tokio::time::sleep(backoff(failures - 1, 250, RECONNECT_MAX_MS, &mut jitter)).await;
                    }
                },
                out = outgoing.recv() => match out {
                    Some(Outgoing::Publish(kind, payload)) => {
                        let t = topic(&config.agent_id, kind);
                        if let Err(e) = client.try_publish(t, qos(kind), kind.retain(), payload) {
                            tracing::warn!(error = %e, ?kind, "could not queue a publish");
                        }
                    }
                    Some(Outgoing::PublishLogs(t, payload)) => {
                        if let Err(e) = client.try_publish(t, QoS::AtLeastOnce, false, payload) {
                            tracing::warn!(error = %e, "could not queue a logs chunk");
                        }
                    }
                    Some(Outgoing::Ack(token)) => {
                        if let Some(p) = unacked.remove(&token) {
                            let _ = client.try_ack(&p);
                        }
                    }
                    None => {
                        let _ = client.try_disconnect();
                        return;
                    }
                },
            }
        }
    }
}

/// The local address this host uses to reach `host:port`: a UDP socket "connected" there
/// (which only picks the route, it sends nothing) tells it. `None` if the name does not resolve.
async fn local_ip_towards(host: &str, port: u16) -> Option<outpost_protocol::IpText> {
    let target = tokio::net::lookup_host((host, port)).await.ok()?.next()?;
    let any: std::net::SocketAddr = if target.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = std::net::UdpSocket::bind(any).ok()?;
    socket.connect(target).ok()?;
    let ip = socket.local_addr().ok()?.ip();
    outpost_protocol::IpText::new(&ip.to_string()).ok()
}
