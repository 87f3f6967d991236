//! A simulated fleet for benchmarks: many agents speaking the real protocol through one MQTT
//! connection (no containers). Each joins with hello, offer (1 CPU, 1 GiB, ports 31000-32000)
//! and liveness, and answers every launch at once with an accepted reply, STARTING and RUNNING.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rumqttc::{Client, Event, MqttOptions, Packet, QoS};

use outpost_protocol::codec::{MAX_MESSAGE_BYTES, encode_to_vec};
use outpost_protocol::{
    AgentId, AgentState, Command, CommandKind, CommandReply, Hello, Liveness, Offer, Outcome,
    PROTOCOL_VERSION, PortRange, Resources, TaskState, TaskStatus, Text, Topic, TopicKind, decode,
};

use crate::mosquitto::Broker;

/// What the simulated fleet saw.
#[derive(Default)]
pub struct Seen {
    /// Launch arrival time per agent.
    pub launches: HashMap<String, Instant>,
    /// Messages of `bench/echo` received (the broker-only baseline).
    pub echoes: usize,
    /// Status acknowledgements received.
    pub acks: usize,
    uuid: u64,
}

/// Many simulated agents over one MQTT connection.
pub struct Fleet {
    client: Client,
    /// What it saw.
    pub seen: Arc<Mutex<Seen>>,
}

fn topic(agent: &str, kind: TopicKind) -> String {
    Topic::new(agent, kind).unwrap().to_string()
}

impl Fleet {
    /// Connects to `broker` and subscribes to every agent's commands and acks.
    pub fn connect(broker: &Broker) -> Result<Self> {
        let mut o = MqttOptions::new(
            format!("fleet-sim-{}", std::process::id()),
            "127.0.0.1",
            broker.port(),
        );
        o.set_keep_alive(Duration::from_secs(30));
        o.set_max_packet_size(MAX_MESSAGE_BYTES + 1024, MAX_MESSAGE_BYTES + 1024);
        o.set_inflight(1000);
        let (client, mut connection) = Client::new(o, 200_000);
        client.subscribe(
            TopicKind::Cmd.all_agents_filter().to_string(),
            QoS::AtLeastOnce,
        )?;
        client.subscribe("bench/echo", QoS::AtLeastOnce)?;
        client.subscribe(
            TopicKind::Ack.all_agents_filter().to_string(),
            QoS::AtLeastOnce,
        )?;
        let seen = Arc::new(Mutex::new(Seen::default()));
        let (s, c) = (seen.clone(), client.clone());
        std::thread::spawn(move || {
            for event in connection.iter() {
                match event {
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        on_publish(&c, &s, &p.topic, &p.payload)
                    }
                    Ok(_) => {}
                    Err(_) => std::thread::sleep(Duration::from_millis(50)),
                }
            }
        });
        Ok(Self { client, seen })
    }

    /// Publishes at QoS 1.
    pub fn publish(&self, topic: String, retain: bool, payload: Vec<u8>) -> Result<()> {
        self.client
            .publish(topic, QoS::AtLeastOnce, retain, payload)
            .context("publishing")
    }

    /// The offer agent `id` publishes: 1 CPU, 1 GiB memory and disk, ports 31000-32000.
    pub fn offer(id: &str) -> Offer {
        let mut ports = heapless::Vec::new();
        let _ = ports.push(PortRange {
            begin: 31000,
            end: 32000,
        });
        Offer {
            version: PROTOCOL_VERSION,
            agent_id: AgentId::new(id).unwrap(),
            seq: 1,
            available: Resources {
                cpus: 1.0,
                mem_mib: 1024.0,
                disk_mib: 1024.0,
                ports,
            },
            used: Resources::default(),
            attributes: heapless::Vec::new(),
        }
    }

    /// Hello, offer and liveness of agent `id`.
    pub fn join(&self, id: &str) -> Result<()> {
        let aid = AgentId::new(id).unwrap();
        let hello = Hello {
            version: PROTOCOL_VERSION,
            agent_id: aid.clone(),
            hostname: Text::new(id).unwrap(),
            agent_version: Text::new("sim").unwrap(),
            ..Default::default()
        };
        let offer = Self::offer(id);
        let state = AgentState {
            version: PROTOCOL_VERSION,
            agent_id: aid,
            liveness: Liveness::Online,
            started_at_ms: 1,
        };
        self.publish(topic(id, TopicKind::Hello), true, encode_to_vec(&hello))?;
        self.publish(topic(id, TopicKind::Offer), true, encode_to_vec(&offer))?;
        self.publish(topic(id, TopicKind::State), true, encode_to_vec(&state))
    }
}

fn on_publish(client: &Client, seen: &Mutex<Seen>, t: &str, payload: &[u8]) {
    if t == "bench/echo" {
        seen.lock().unwrap().echoes += 1;
        return;
    }
    let Ok(parsed) = Topic::parse(t) else { return };
    if parsed.kind == TopicKind::Ack {
        seen.lock().unwrap().acks += 1;
        return;
    }
    let Ok(cmd) = decode::<Command>(payload) else {
        return;
    };
    let agent = parsed.agent_id.to_string();
    let reply = CommandReply {
        version: PROTOCOL_VERSION,
        command_id: cmd.command_id.clone(),
        outcome: Outcome::Accepted,
    };
    let _ = client.try_publish(
        topic(&agent, TopicKind::Reply),
        QoS::AtLeastOnce,
        false,
        encode_to_vec(&reply),
    );
    let CommandKind::Launch(spec) = cmd.kind else {
        return;
    };
    let mut s = seen.lock().unwrap();
    s.launches.entry(agent.clone()).or_insert_with(Instant::now);
    for state in [TaskState::Starting, TaskState::Running] {
        s.uuid += 1;
        let mut uuid = [0u8; 16];
        uuid[..8].copy_from_slice(&s.uuid.to_be_bytes());
        let status = TaskStatus {
            version: PROTOCOL_VERSION,
            agent_id: AgentId::new(&agent).unwrap(),
            task_id: spec.task_id.clone(),
            uuid,
            state,
            ..Default::default()
        };
        let _ = client.try_publish(
            topic(&agent, TopicKind::Status),
            QoS::AtLeastOnce,
            false,
            encode_to_vec(&status),
        );
    }
}
