//! The bridge's side of the MQTT protocol, played by a test: a real MQTT client (rumqttc)
//! against the real broker, sending commands and reading what agents publish. It records
//! everything, and acknowledges status updates unless told not to.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use rumqttc::{Client, Event, Packet, QoS};

use outpost_protocol::codec::encode_to_vec;
use outpost_protocol::{
    AgentState, Command, CommandId, CommandKind, CommandReply, Offer, PROTOCOL_VERSION, StatusAck,
    TaskState, TaskStatus, Topic, TopicKind, decode,
};

use crate::mosquitto::Broker;
use crate::wait;

/// What the simulated bridge has received.
#[derive(Debug, Default)]
pub struct Received {
    /// Status updates in arrival order, duplicates included.
    pub statuses: Vec<TaskStatus>,
    /// Command replies.
    pub replies: Vec<CommandReply>,
    /// Offers.
    pub offers: Vec<Offer>,
    /// Liveness messages.
    pub states: Vec<AgentState>,
    /// Payloads that did not decode, with their topic.
    pub garbage: Vec<String>,
}

/// A test's stand-in for the bridge on the MQTT side.
pub struct BridgeSim {
    client: Client,
    received: Arc<Mutex<Received>>,
    ack: Arc<Mutex<bool>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    next: u32,
}

impl BridgeSim {
    /// Connects to `broker` and subscribes to every agent's outgoing topics.
    pub fn connect(broker: &Broker) -> Result<Self> {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let id = format!("bridge-sim-{}-{n}", std::process::id());
        // With TLS, as the bridge (its certificate).
        let mut options = broker.mqtt_options(&id, "bridge")?;
        options.set_keep_alive(Duration::from_secs(10));
        options.set_max_packet_size(256 * 1024, 256 * 1024);
        let (client, mut connection) = Client::new(options, 1024);
        for kind in [
            TopicKind::Hello,
            TopicKind::Offer,
            TopicKind::State,
            TopicKind::Status,
            TopicKind::Reply,
        ] {
            client
                .subscribe(kind.all_agents_filter().to_string(), QoS::AtLeastOnce)
                .context("subscribing")?;
        }
        let received = Arc::new(Mutex::new(Received::default()));
        let ack = Arc::new(Mutex::new(true));
        let subscribed = Arc::new(Mutex::new(0u32));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        {
            let stop = stop.clone();
            let received = received.clone();
            let ack = ack.clone();
            let subscribed = subscribed.clone();
            let acker = client.clone();
            std::thread::spawn(move || {
                for event in connection.iter() {
                    if stop.load(std::sync::atomic::Ordering::Relaxed) {
                        return;
                    }
                    match event {
                        Ok(Event::Incoming(Packet::SubAck(_))) => {
                            *subscribed.lock().unwrap() += 1;
                        }
                        Ok(Event::Incoming(Packet::Publish(p))) => {
                            record(&received, &ack, &acker, &p.topic, &p.payload);
                        }
                        Ok(_) => {}
                        // The broker went away (a test stopped it): rumqttc reconnects on the
                        // next iteration; do not spin.
                        Err(_) => std::thread::sleep(Duration::from_millis(100)),
                    }
                }
            });
        }
        wait::until(
            "the simulated bridge's subscriptions",
            Duration::from_secs(10),
            || (*subscribed.lock().unwrap() >= 5).then_some(()),
        )?;
        Ok(Self {
            client,
            received,
            ack,
            stop,
            next: 0,
        })
    }

    /// Whether status updates are acknowledged (on by default).
    pub fn set_acknowledge(&self, on: bool) {
        *self.ack.lock().unwrap() = on;
    }

    /// Publishes raw bytes on `agent`'s command topic.
    pub fn send_raw(&self, agent: &str, payload: Vec<u8>) -> Result<()> {
        let topic = Topic::new(agent, TopicKind::Cmd).map_err(|e| anyhow::anyhow!("{e}"))?;
        self.client
            .publish(topic.to_string(), QoS::AtLeastOnce, false, payload)
            .context("publishing a command")
    }

    /// Sends a command to `agent`; returns its id.
    pub fn send(&mut self, agent: &str, kind: CommandKind) -> Result<String> {
        self.next += 1;
        let id = format!("sim-{}-{}", std::process::id(), self.next);
        let cmd = Command {
            version: PROTOCOL_VERSION,
            command_id: CommandId::new(&id)?,
            issued_at_ms: 0,
            kind,
            agent_id: None,
            signature: None,
            epoch: None,
        };
        self.send_raw(agent, encode_to_vec(&cmd))?;
        Ok(id)
    }

    /// Waits for the reply to `command_id`.
    pub fn reply(&self, command_id: &str, timeout: Duration) -> Result<CommandReply> {
        wait::until(&format!("the reply to {command_id}"), timeout, || {
            self.with(|r| {
                r.replies
                    .iter()
                    .find(|x| x.command_id == command_id)
                    .cloned()
            })
        })
    }

    /// Sends a command and waits for its reply.
    pub fn call(&mut self, agent: &str, kind: CommandKind) -> Result<CommandReply> {
        let id = self.send(agent, kind)?;
        self.reply(&id, Duration::from_secs(20))
    }

    /// Waits for a status update of `task` that satisfies `pred`; returns it.
    pub fn status(
        &self,
        task: &str,
        timeout: Duration,
        pred: impl Fn(&TaskStatus) -> bool,
    ) -> Result<TaskStatus> {
        wait::until(&format!("a matching status of {task}"), timeout, || {
            self.with(|r| {
                r.statuses
                    .iter()
                    .find(|s| s.task_id == task && pred(s))
                    .cloned()
            })
        })
    }

    /// Waits for `task` to report `state`.
    pub fn state(&self, task: &str, state: TaskState, timeout: Duration) -> Result<TaskStatus> {
        self.status(task, timeout, |s| s.state == state)
    }

    /// The states `task` reported, in order, re-sends dropped by uuid (as the bridge does).
    pub fn states(&self, task: &str) -> Vec<TaskState> {
        self.with(|r| {
            let mut seen = std::collections::HashSet::new();
            r.statuses
                .iter()
                .filter(|s| s.task_id == task && seen.insert(s.uuid))
                .map(|s| s.state)
                .collect()
        })
    }

    /// The latest offer of `agent`.
    pub fn offer(&self, agent: &str) -> Option<Offer> {
        self.with(|r| r.offers.iter().rfind(|o| o.agent_id == agent).cloned())
    }

    /// Runs `f` on what was received.
    pub fn with<T>(&self, f: impl FnOnce(&Received) -> T) -> T {
        f(&self.received.lock().unwrap())
    }
}

impl Drop for BridgeSim {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let _ = self.client.try_disconnect();
    }
}

fn record(
    received: &Mutex<Received>,
    ack: &Mutex<bool>,
    client: &Client,
    topic: &str,
    payload: &[u8],
) {
    let mut r = received.lock().unwrap();
    let Ok(t) = Topic::parse(topic) else {
        r.garbage.push(topic.to_string());
        return;
    };
    let ok = match t.kind {
        TopicKind::Status => decode::<TaskStatus>(payload).map(|s| {
            if *ack.lock().unwrap() {
                let a = StatusAck {
                    version: PROTOCOL_VERSION,
                    task_id: s.task_id.clone(),
                    uuid: s.uuid,
                };
                let ack_topic = Topic::new(&t.agent_id, TopicKind::Ack).map(|x| x.to_string());
                if let Ok(ack_topic) = ack_topic {
                    let _ =
                        client.try_publish(ack_topic, QoS::AtLeastOnce, false, encode_to_vec(&a));
                }
            }
            r.statuses.push(s);
        }),
        TopicKind::Reply => decode::<CommandReply>(payload).map(|x| r.replies.push(x)),
        TopicKind::Offer => decode::<Offer>(payload).map(|x| r.offers.push(x)),
        TopicKind::State => decode::<AgentState>(payload).map(|x| r.states.push(x)),
        _ => Ok(()),
    };
    if ok.is_err() {
        r.garbage.push(topic.to_string());
    }
}
