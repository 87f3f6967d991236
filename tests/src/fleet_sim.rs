//! A simulated fleet for benchmarks: many agents speaking the real protocol through one MQTT
//! connection (no containers). Each joins with hello, offer (1 CPU, 1 GiB, ports 31000-32000)
//! and liveness, and answers every launch at once with an accepted reply, STARTING and RUNNING.
//! [`EchoBridge`] is the baseline: the same messages with no bridge behind them.

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

/// The MQTT clients' request queues: room for three answers to each of 100,000 agents and
/// more (answers are queued from the connection's own thread, which cannot wait for room).
const QUEUE: usize = 1 << 20;

/// What the simulated fleet saw.
#[derive(Default)]
pub struct Seen {
    /// Launch arrival time per agent.
    pub launches: HashMap<String, Instant>,
    /// Launch commands received, every one counted (a task started again counts again).
    pub launch_commands: usize,
    /// Kill commands received.
    pub kills: usize,
    /// Messages of `bench/echo` received (the broker-only baseline).
    pub echoes: usize,
    /// Status acknowledgements received.
    pub acks: usize,
    /// Bytes of the deploy's messages, by kind (payloads), for the same-messages baseline.
    pub bytes: Sizes,
    /// Same-messages baseline: launch-sized messages received, acknowledgement-sized ones
    /// received.
    pub echo_downs: usize,
    /// See `echo_downs`.
    pub echo_acks: usize,
    uuid: u64,
}

/// Total payload bytes and counts of the messages of a deploy, by kind.
#[derive(Default, Clone, Copy, Debug)]
pub struct Sizes {
    /// Launch commands received (bridge to agent).
    pub launches: (usize, usize),
    /// Command replies sent (agent to bridge).
    pub replies: (usize, usize),
    /// Status updates sent (agent to bridge).
    pub statuses: (usize, usize),
    /// Acknowledgements received (bridge to agent).
    pub acks: (usize, usize),
}

impl Sizes {
    fn add(slot: &mut (usize, usize), bytes: usize) {
        slot.0 += 1;
        slot.1 += bytes;
    }

    /// The mean payload of `slot` (64 bytes if none was seen).
    pub fn mean(slot: (usize, usize)) -> usize {
        slot.1.checked_div(slot.0).unwrap_or(64)
    }
}

/// The baseline for a deploy: the same messages through the same broker with nothing behind
/// them. This client stands where the bridge stands: it sends N launch-sized messages (one per
/// agent, on `bench/v1/agents/ID/cmd`); the fleet answers each at once, as it answers a launch,
/// with a reply-sized and two status-sized messages; this client answers each status-sized one
/// with an acknowledgement-sized message. Done when all 3N answers have arrived (the moment
/// the bridge would count every instance RUNNING).
pub struct EchoBridge {
    client: Client,
    /// Answers received from the fleet.
    pub answers: Arc<Mutex<usize>>,
}

/// Tags the first payload byte of a same-messages answer: a reply or a status.
const TAG_REPLY: u8 = b'R';
const TAG_STATUS: u8 = b'S';

/// A client of `broker` named `name-PID` whose incoming publishes go to `on_publish` on a
/// thread of its own (reconnecting after errors, 50 ms apart).
fn client(
    broker: &Broker,
    name: &str,
    inflight: Option<u16>,
    on_publish: impl Fn(&Client, &str, &[u8]) + Send + 'static,
) -> Client {
    let mut o = MqttOptions::new(
        format!("{name}-{}", std::process::id()),
        "127.0.0.1",
        broker.port(),
    );
    o.set_keep_alive(Duration::from_secs(30));
    o.set_max_packet_size(MAX_MESSAGE_BYTES + 1024, MAX_MESSAGE_BYTES + 1024);
    if let Some(n) = inflight {
        o.set_inflight(n);
    }
    // Room for every answer of a run at once: they are queued from the connection's own
    // thread, which must not wait for room.
    let (client, mut connection) = Client::new(o, QUEUE);
    let c = client.clone();
    std::thread::spawn(move || {
        for event in connection.iter() {
            match event {
                Ok(Event::Incoming(Packet::Publish(p))) => on_publish(&c, &p.topic, &p.payload),
                Ok(_) => {}
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    });
    client
}

impl EchoBridge {
    /// Connects to `broker`; acknowledgements are `ack_bytes` long.
    pub fn connect(broker: &Broker, ack_bytes: usize) -> Result<Self> {
        let answers = Arc::new(Mutex::new(0usize));
        let a = answers.clone();
        let client = client(broker, "echo-bridge", None, move |c, topic, payload| {
            *a.lock().unwrap() += 1;
            if payload.first() == Some(&TAG_STATUS) {
                let agent = topic.split('/').nth(3).unwrap_or("");
                let _ = c.try_publish(
                    format!("bench/v1/agents/{agent}/ack"),
                    QoS::AtLeastOnce,
                    false,
                    vec![0u8; ack_bytes],
                );
            }
        });
        client.subscribe("bench/v1/agents/+/up", QoS::AtLeastOnce)?;
        // The broker takes the subscription before any launch this client sends after it.
        Ok(Self { client, answers })
    }

    /// Sends agent `agent` a launch-sized message of `bytes`.
    pub fn launch(&self, agent: &str, bytes: usize) -> Result<()> {
        self.client
            .publish(
                format!("bench/v1/agents/{agent}/cmd"),
                QoS::AtLeastOnce,
                false,
                vec![0u8; bytes],
            )
            .context("publishing")
    }
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
        let seen = Arc::new(Mutex::new(Seen::default()));
        let s = seen.clone();
        let client = client(broker, "fleet-sim", Some(1000), move |c, topic, payload| {
            on_publish(c, &s, topic, payload)
        });
        client.subscribe(
            TopicKind::Cmd.all_agents_filter().to_string(),
            QoS::AtLeastOnce,
        )?;
        client.subscribe("bench/echo", QoS::AtLeastOnce)?;
        client.subscribe("bench/v1/agents/+/cmd", QoS::AtLeastOnce)?;
        client.subscribe("bench/v1/agents/+/ack", QoS::AtLeastOnce)?;
        client.subscribe(
            TopicKind::Ack.all_agents_filter().to_string(),
            QoS::AtLeastOnce,
        )?;
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
    if let Some(rest) = t.strip_prefix("bench/v1/agents/") {
        same_messages(client, seen, rest);
        return;
    }
    let Ok(parsed) = Topic::parse(t) else { return };
    if parsed.kind == TopicKind::Ack {
        let mut s = seen.lock().unwrap();
        s.acks += 1;
        Sizes::add(&mut s.bytes.acks, payload.len());
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
    let reply = encode_to_vec(&reply);
    let reply_len = reply.len();
    let _ = client.try_publish(
        topic(&agent, TopicKind::Reply),
        QoS::AtLeastOnce,
        false,
        reply,
    );
    let spec = match cmd.kind {
        CommandKind::Launch(spec) => spec,
        CommandKind::Kill(_) => {
            seen.lock().unwrap().kills += 1;
            return;
        }
        _ => return,
    };
    let mut s = seen.lock().unwrap();
    s.launch_commands += 1;
    s.launches.entry(agent.clone()).or_insert_with(Instant::now);
    Sizes::add(&mut s.bytes.launches, payload.len());
    Sizes::add(&mut s.bytes.replies, reply_len);
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
        let status = encode_to_vec(&status);
        Sizes::add(&mut s.bytes.statuses, status.len());
        let _ = client.try_publish(
            topic(&agent, TopicKind::Status),
            QoS::AtLeastOnce,
            false,
            status,
        );
    }
}

/// The fleet's side of the same-messages baseline ([`EchoBridge`]): `rest` is `ID/cmd` or
/// `ID/ack`. A launch-sized message is answered as a launch is, with messages of the sizes the
/// deploy's replies and statuses had.
fn same_messages(client: &Client, seen: &Mutex<Seen>, rest: &str) {
    let Some((agent, kind)) = rest.split_once('/') else {
        return;
    };
    let mut s = seen.lock().unwrap();
    if kind == "ack" {
        s.echo_acks += 1;
        return;
    }
    s.echo_downs += 1;
    let sizes = s.bytes;
    drop(s);
    let up = format!("bench/v1/agents/{agent}/up");
    for (tag, len) in [
        (TAG_REPLY, Sizes::mean(sizes.replies)),
        (TAG_STATUS, Sizes::mean(sizes.statuses)),
        (TAG_STATUS, Sizes::mean(sizes.statuses)),
    ] {
        let mut payload = vec![0u8; len.max(1)];
        payload[0] = tag;
        let _ = client.try_publish(up.clone(), QoS::AtLeastOnce, false, payload);
    }
}
