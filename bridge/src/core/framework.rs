//! Mesos frameworks on the v1 scheduler API: subscriptions, offers cut from the agents'
//! capacity (never the same resources as Marathon's tasks or another framework's offer),
//! ACCEPT/DECLINE/KILL/ACKNOWLEDGE/RECONCILE, and UPDATE events from agents' status updates.
//! A framework's task runs with restart policy Never: the framework decides.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};

use outpost_protocol::{
    self as wire, CommandKind, StatusAck, TaskState, TaskStatus, Topic, TopicKind,
    codec::encode_to_vec,
};

use super::calls::{self, Accept, Call, TaskInfo};
use super::{Core, Effect};
use crate::placement::Amount;
use crate::time::Millis;

/// DECLINE's and ACCEPT's default `refuse_seconds`.
const DEFAULT_REFUSE_S: f64 = 5.0;
/// How long a framework may hold an offer before it is rescinded (Mesos's `--offer_timeout`):
/// a framework sitting on offers must not starve Marathon's apps or other frameworks.
pub const OFFER_TIMEOUT_MS: Millis = 10_000;
/// The smallest offer worth sending.
const MIN_OFFER: Amount = Amount {
    cpus: 0.01,
    mem: 32.0,
    disk: 0.0,
};

/// An offer a framework holds.
#[derive(Debug, Clone)]
pub struct OfferHeld {
    /// The agent.
    pub agent_id: String,
    /// Its resources.
    pub amount: Amount,
    /// Its port ranges.
    pub ranges: Vec<(u16, u16)>,
    /// When it was made.
    pub made_at: Millis,
}

/// A subscribed framework.
#[derive(Debug, Clone)]
pub struct Framework {
    /// Its id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// PARTITION_AWARE capability.
    pub partition_aware: bool,
    /// How long it may stay away before its tasks are killed.
    pub failover_timeout_s: f64,
    /// The stream it is subscribed on, while connected.
    pub stream_id: Option<String>,
    /// When its stream went away.
    pub disconnected_at: Option<Millis>,
    /// SUPPRESS: no offers until REVIVE.
    pub suppressed: bool,
    /// No offers of an agent before this time (DECLINE filters).
    pub refused: HashMap<String, Millis>,
    /// Offers it holds.
    pub offers: HashMap<String, OfferHeld>,
    /// Updates sent and not yet acknowledged: uuid -> (agent, task).
    pub unacked: HashMap<[u8; 16], (String, String)>,
}

/// What of a framework survives a bridge restart (its offers, filters and unacknowledged
/// updates do not: offers are made afresh, and agents re-send what was not acknowledged).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FrameworkRecord {
    /// Its id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// PARTITION_AWARE capability.
    pub partition_aware: bool,
    /// Its failover timeout.
    pub failover_timeout_s: f64,
    /// When its stream went away (`None` while it was subscribed).
    pub disconnected_at: Option<Millis>,
    /// Torn down: a SUBSCRIBE with this id gets ERROR "Framework has been removed".
    pub removed: bool,
}

/// A framework's task.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FwTask {
    /// Its id.
    pub id: String,
    /// Its framework.
    pub framework_id: String,
    /// Its agent.
    pub agent_id: String,
    /// Mesos state.
    #[serde(with = "super::mesos_state")]
    pub state: TaskState,
    /// Resources it holds.
    pub amount: Amount,
    /// Host ports it holds.
    pub ports: Vec<u16>,
    /// Health, when reported.
    pub healthy: Option<bool>,
    /// Container IP.
    pub ip: Option<String>,
    /// The bridge asked for a kill.
    pub killing: bool,
    /// The agent's timestamp of the newest status applied: a re-sent older one (the agent
    /// repeats what the framework has not acknowledged) is forwarded but changes nothing.
    #[serde(default)]
    pub updated_ms: u64,
    /// When the framework's ACCEPT launched it (0: before this field, or already RUNNING
    /// once: the launch-to-running latency is measured once).
    #[serde(default)]
    pub launched_at_ms: Millis,
}

/// The message of the ERROR event a removed framework gets, as a Mesos master words it.
pub const REMOVED: &str = "Framework has been removed";

/// Why a call was refused: HTTP status and message.
#[derive(Debug, Clone, PartialEq)]
pub struct CallError {
    /// 400, 403, ...
    pub status: u16,
    /// For people.
    pub message: String,
}

impl CallError {
    /// The framework was torn down: a SUBSCRIBE gets an ERROR event, not an HTTP error.
    pub fn removed() -> Self {
        Self {
            status: 403,
            message: REMOVED.to_string(),
        }
    }

    /// Whether this is [`CallError::removed`].
    pub fn is_removed(&self) -> bool {
        self.status == 403 && self.message == REMOVED
    }
}

fn bad(message: impl Into<String>) -> CallError {
    CallError {
        status: 400,
        message: message.into(),
    }
}

fn resources_json(a: &Amount, ranges: &[(u16, u16)]) -> Value {
    let mut v = vec![
        json!({ "name": "cpus", "type": "SCALAR", "scalar": { "value": a.cpus }, "role": "*" }),
        json!({ "name": "mem", "type": "SCALAR", "scalar": { "value": a.mem }, "role": "*" }),
        json!({ "name": "disk", "type": "SCALAR", "scalar": { "value": a.disk }, "role": "*" }),
    ];
    if !ranges.is_empty() {
        let r: Vec<Value> = ranges
            .iter()
            .map(|(b, e)| json!({ "begin": b, "end": e }))
            .collect();
        v.push(json!({ "name": "ports", "type": "RANGES", "ranges": { "range": r }, "role": "*" }));
    }
    Value::Array(v)
}

impl Core {
    /// Marks framework `id` for the store (written, or deleted, at the next
    /// [`Core::take_writes`]).
    fn touch_framework(&mut self, id: &str) {
        self.dirty_records
            .insert((crate::store::Table::Frameworks, id.to_string()));
    }

    /// Marks framework task `id` for the store.
    fn touch_fw_task(&mut self, id: &str) {
        self.dirty_records
            .insert((crate::store::Table::FwTasks, id.to_string()));
    }

    /// The record of framework `id` as it stands (removed ones included).
    pub(super) fn framework_record(&self, id: &str) -> Option<FrameworkRecord> {
        if let Some(f) = self.frameworks.get(id) {
            return Some(FrameworkRecord {
                id: f.id.clone(),
                name: f.name.clone(),
                partition_aware: f.partition_aware,
                failover_timeout_s: f.failover_timeout_s,
                disconnected_at: f.disconnected_at,
                removed: false,
            });
        }
        self.removed_frameworks.get(id).cloned()
    }

    /// Frameworks and their tasks from the store: each comes back disconnected (its stream
    /// died with the old process), its failover timeout counting from when it went away or,
    /// if it was subscribed, from `now`.
    pub(super) fn restore_frameworks(
        &mut self,
        now: Millis,
        frameworks: Vec<FrameworkRecord>,
        tasks: Vec<FwTask>,
    ) {
        for r in frameworks {
            if r.removed {
                self.removed_frameworks.insert(r.id.clone(), r);
                continue;
            }
            self.frameworks.insert(
                r.id.clone(),
                Framework {
                    id: r.id.clone(),
                    name: r.name,
                    partition_aware: r.partition_aware,
                    failover_timeout_s: r.failover_timeout_s,
                    stream_id: None,
                    disconnected_at: Some(r.disconnected_at.unwrap_or(now)),
                    suppressed: false,
                    refused: HashMap::new(),
                    offers: HashMap::new(),
                    unacked: HashMap::new(),
                },
            );
        }
        for t in tasks {
            if self.frameworks.contains_key(&t.framework_id) {
                self.fw_tasks.insert(t.id.clone(), t);
            }
        }
    }

    /// Whether framework `id` was torn down (a SUBSCRIBE with it gets ERROR).
    pub fn framework_removed(&self, id: &str) -> bool {
        self.removed_frameworks.contains_key(id)
    }

    /// The operator's `/master/teardown`: the framework hears ERROR "Framework has been
    /// removed" on its stream, its tasks are killed, and it is forgotten.
    pub fn operator_teardown(&mut self, now: Millis, id: &str) -> Result<(), CallError> {
        if !self.frameworks.contains_key(id) {
            return Err(CallError {
                status: 400,
                message: format!("No framework found with specified ID: {id:?}"),
            });
        }
        self.fw_event(
            id,
            json!({ "type": "ERROR", "error": { "message": REMOVED } }),
        );
        self.teardown(now, id);
        Ok(())
    }

    fn fw_event(&mut self, framework_id: &str, event: Value) {
        self.effects.push(Effect::Framework {
            framework_id: framework_id.to_string(),
            event,
        });
    }

    /// SUBSCRIBE: a new framework, or one coming back with its id within its failover timeout
    /// (it keeps its tasks). Returns the framework id.
    pub fn subscribe(
        &mut self,
        now: Millis,
        call: &Call,
        stream_id: &str,
    ) -> Result<String, CallError> {
        let Call::Subscribe { subscribe, .. } = call else {
            return Err(bad("only a SUBSCRIBE call opens a stream"));
        };
        // A re-subscription drops the offers the framework held.
        self.capacity_freed(None);
        let info = &subscribe.framework_info;
        let wanted = call.framework_id().map(str::to_string);
        if let Some(id) = &wanted
            && self.removed_frameworks.contains_key(id)
        {
            return Err(CallError::removed());
        }
        let name = info.name.clone();
        let partition_aware = info.partition_aware();
        let failover_timeout_s = info.failover_timeout.unwrap_or(0.0);
        let id = match wanted {
            Some(id) if self.frameworks.contains_key(&id) => {
                tracing::info!(framework = %id, "framework re-subscribed; it keeps its tasks");
                id
            }
            Some(id) => id,
            None => format!("outpost-fw-{}", self.ids.uuid()),
        };
        let f = self
            .frameworks
            .entry(id.clone())
            .or_insert_with(|| Framework {
                id: id.clone(),
                name: name.clone(),
                partition_aware,
                failover_timeout_s,
                stream_id: None,
                disconnected_at: None,
                suppressed: false,
                refused: HashMap::new(),
                offers: HashMap::new(),
                unacked: HashMap::new(),
            });
        f.name = name;
        f.partition_aware = partition_aware;
        f.failover_timeout_s = failover_timeout_s;
        f.stream_id = Some(stream_id.to_string());
        f.disconnected_at = None;
        f.offers.clear();
        f.unacked.clear();
        let _ = now;
        self.touch_framework(&id);
        Ok(id)
    }

    /// The framework's stream went away: its offers are void; its tasks stay until its
    /// failover timeout ends.
    pub fn framework_disconnected(&mut self, now: Millis, id: &str, stream_id: &str) {
        self.capacity_freed(None);
        if let Some(f) = self.frameworks.get_mut(id)
            && f.stream_id.as_deref() == Some(stream_id)
        {
            tracing::info!(framework = %id, "framework disconnected");
            f.stream_id = None;
            f.disconnected_at = Some(now);
            f.offers.clear();
            self.touch_framework(id);
        }
    }

    /// Checks that `stream_id` is `framework_id`'s current subscription, as a Mesos master
    /// does before it runs a call: a removed framework is 403 "Framework has been removed", an
    /// unknown one 404, a disconnected one or another stream 403.
    pub fn check_stream(
        &self,
        framework_id: &str,
        stream_id: Option<&str>,
    ) -> Result<(), CallError> {
        if self.removed_frameworks.contains_key(framework_id) {
            return Err(CallError::removed());
        }
        match self.frameworks.get(framework_id) {
            Some(f) if f.stream_id.is_some() && f.stream_id.as_deref() == stream_id => Ok(()),
            Some(f) if f.stream_id.is_none() => Err(CallError {
                status: 403,
                message: format!("Framework {framework_id:?} is not subscribed"),
            }),
            Some(_) => Err(CallError {
                status: 403,
                message: match stream_id {
                    None => format!(
                        "The request has no Mesos-Stream-Id header: calls of framework ID {framework_id:?} carry the stream ID of its subscription"
                    ),
                    Some(sid) => format!(
                        "The Mesos-Stream-Id {sid:?} included in this request didn't match the stream ID currently associated with framework ID {framework_id:?}"
                    ),
                },
            }),
            None => Err(CallError {
                status: 404,
                message: format!("Framework {framework_id:?} cannot be found"),
            }),
        }
    }

    /// The framework a call is for, or the error a master answers when it is gone.
    fn framework_mut(&mut self, framework_id: &str) -> Result<&mut Framework, CallError> {
        self.frameworks
            .get_mut(framework_id)
            .ok_or_else(|| CallError {
                status: 404,
                message: format!("Framework {framework_id:?} cannot be found"),
            })
    }

    /// Sends offers to connected, unsuppressed frameworks for agents with free resources.
    pub(super) fn make_offers(&mut self, now: Millis) {
        let ids: Vec<String> = self
            .frameworks
            .values()
            .filter(|f| f.stream_id.is_some() && !f.suppressed)
            .map(|f| f.id.clone())
            .collect();
        if ids.is_empty() {
            return;
        }
        // One ledger for the pass: Marathon's tasks (staged ones with the ports they were
        // given), frameworks' tasks and the offers they hold; each offer made is held in it, so
        // the next framework is offered what is left.
        let mut ledger = super::Ledger::of(self);
        let agents: Vec<super::Name> = self
            .agents
            .values()
            .filter(|a| a.online() && a.offer.is_some())
            .map(|a| a.id.clone())
            .collect();
        for fid in ids {
            let mut offers = Vec::new();
            let Some(f) = self.frameworks.get(&fid) else {
                continue;
            };
            let offered: std::collections::HashSet<String> =
                f.offers.values().map(|o| o.agent_id.clone()).collect();
            let mut made: Vec<(String, OfferHeld)> = Vec::new();
            for agent_id in &agents {
                if offered.contains(&**agent_id)
                    || f.refused.get(&**agent_id).is_some_and(|t| *t > now)
                {
                    continue;
                }
                let Some(a) = self.agents.get(agent_id) else {
                    continue;
                };
                let Some(left) = ledger.free(a) else {
                    continue;
                };
                let free = Amount {
                    cpus: (left.amount.cpus * 1000.0).floor() / 1000.0,
                    mem: left.amount.mem.floor(),
                    disk: left.amount.disk.floor().max(0.0),
                };
                if !free.fits(&MIN_OFFER) {
                    continue;
                }
                let ranges = left.ranges;
                let offer_id = format!("outpost-offer-{}", self.ids.uuid());
                offers.push(json!({
                    "id": { "value": offer_id },
                    "framework_id": { "value": fid },
                    "agent_id": { "value": agent_id },
                    "hostname": a.hostname,
                    "resources": resources_json(&free, &ranges),
                    "attributes": a.attributes.iter().map(|(k, v)| json!({ "name": k, "type": "TEXT", "text": { "value": v } })).collect::<Vec<_>>(),
                    "executor_ids": [],
                    "allocation_info": { "role": "*" },
                }));
                ledger.hold_offer(agent_id, free, &ranges);
                made.push((
                    offer_id,
                    OfferHeld {
                        agent_id: agent_id.to_string(),
                        amount: free,
                        ranges,
                        made_at: now,
                    },
                ));
            }
            if let Some(f) = self.frameworks.get_mut(&fid) {
                f.offers.extend(made);
            }
            if !offers.is_empty() {
                self.fw_event(
                    &fid,
                    json!({ "type": "OFFERS", "offers": { "offers": offers } }),
                );
            }
        }
    }

    /// Sends offers now (a new subscription need not wait for the next tick).
    pub fn offer_now(&mut self, now: Millis) {
        self.make_offers(now);
    }

    /// Kills the tasks of frameworks gone longer than their failover timeout, and forgets them.
    pub(super) fn framework_timers(&mut self, now: Millis) {
        if self.frameworks.values().any(|f| !f.offers.is_empty()) {
            self.capacity_freed(None);
        }
        let mut rescinded: Vec<(String, String)> = Vec::new();
        for f in self.frameworks.values_mut() {
            let old: Vec<String> = f
                .offers
                .iter()
                .filter(|(_, o)| now >= o.made_at + OFFER_TIMEOUT_MS)
                .map(|(id, _)| id.clone())
                .collect();
            for id in old {
                f.offers.remove(&id);
                rescinded.push((f.id.clone(), id));
            }
        }
        for (fid, offer_id) in rescinded {
            self.fw_event(
                &fid,
                json!({ "type": "RESCIND", "rescind": { "offer_id": { "value": offer_id } } }),
            );
        }
        let gone: Vec<String> = self
            .frameworks
            .values()
            .filter(|f| {
                f.disconnected_at
                    .is_some_and(|t| now >= t + (f.failover_timeout_s * 1000.0) as u64)
            })
            .map(|f| f.id.clone())
            .collect();
        for id in gone {
            tracing::info!(framework = %id, "framework did not come back within its failover timeout: tearing it down");
            self.teardown(now, &id);
        }
    }

    fn teardown(&mut self, now: Millis, id: &str) {
        self.capacity_freed(None);
        let tasks: Vec<String> = self
            .fw_tasks
            .values()
            .filter(|t| t.framework_id == id)
            .map(|t| t.id.clone())
            .collect();
        for t in tasks {
            self.fw_kill(now, &t);
            self.fw_tasks.remove(&t);
            self.touch_fw_task(&t);
        }
        if let Some(mut r) = self.framework_record(id) {
            r.removed = true;
            self.removed_frameworks.insert(id.to_string(), r);
        }
        self.frameworks.remove(id);
        self.touch_framework(id);
        self.effects.push(Effect::EndStream {
            framework_id: id.to_string(),
        });
    }

    fn fw_kill(&mut self, now: Millis, task_id: &str) {
        let Some(t) = self.fw_tasks.get_mut(task_id) else {
            return;
        };
        t.killing = true;
        let agent = t.agent_id.clone();
        self.touch_fw_task(task_id);
        let Ok(id) = wire::TaskId::new(task_id) else {
            return;
        };
        self.kill_command(now, &agent, id, None);
    }

    // One UPDATE's fields, each a plain argument: a struct would only move the same list.
    #[allow(clippy::too_many_arguments)]
    fn update_json(
        &self,
        task_id: &str,
        agent_id: &str,
        state: TaskState,
        source: &str,
        reason: Option<&str>,
        message: &str,
        uuid: Option<[u8; 16]>,
        now: Millis,
    ) -> Value {
        let t = self.fw_tasks.get(task_id);
        let mut status = json!({
            "task_id": { "value": task_id },
            "state": state.mesos_name(),
            "source": source,
            "message": message,
            "agent_id": { "value": agent_id },
            "timestamp": now as f64 / 1000.0,
        });
        if let Some(r) = reason {
            status["reason"] = json!(r);
        }
        if let Some(u) = uuid {
            status["uuid"] = json!(B64.encode(u));
        }
        if let Some(t) = t {
            if let Some(h) = t.healthy {
                status["healthy"] = json!(h);
            }
            if let Some(ip) = &t.ip {
                status["container_status"] =
                    json!({ "network_infos": [{ "ip_addresses": [{ "ip_address": ip }] }] });
            }
        }
        json!({ "type": "UPDATE", "update": { "status": status } })
    }

    /// Whether `task` is a framework's (its status updates go to [`Core::on_framework_status`]).
    pub(super) fn is_framework_task(&self, task: &str) -> bool {
        self.fw_tasks.contains_key(task)
    }

    /// An agent's status update of a framework's task: forwarded as UPDATE; the agent is
    /// acknowledged only once the framework acknowledges.
    pub(super) fn on_framework_status(&mut self, now: Millis, s: &TaskStatus) {
        let tid = s.task_id.to_string();
        let Some(t) = self.fw_tasks.get_mut(&tid) else {
            return;
        };
        let newest = s.timestamp_ms >= t.updated_ms;
        let launched_at = if s.state == TaskState::Running {
            std::mem::take(&mut t.launched_at_ms)
        } else {
            0
        };
        if newest {
            t.updated_ms = s.timestamp_ms;
            t.state = s.state;
            if s.healthy.is_some() {
                t.healthy = s.healthy;
            }
            if let Some(ip) = &s.container_ip {
                t.ip = Some(ip.to_string());
            }
            if !s.host_ports.is_empty() {
                t.ports = s.host_ports.iter().copied().collect();
            }
        }
        let fid = t.framework_id.clone();
        self.touch_fw_task(&tid);
        self.observe(
            super::Latency::LaunchToRunning { framework: true },
            launched_at,
            now,
        );
        let connected = self
            .frameworks
            .get(&fid)
            .is_some_and(|f| f.stream_id.is_some());
        if !connected {
            // Held back: the agent re-sends until the framework is back to acknowledge.
            return;
        }
        let message = s
            .message
            .as_ref()
            .map(|m| m.to_string())
            .unwrap_or_default();
        let ev = self.update_json(
            &tid,
            &s.agent_id,
            s.state,
            "SOURCE_EXECUTOR",
            s.reason.map(|r| r.mesos_name()),
            &message,
            Some(s.uuid),
            s.timestamp_ms.max(now),
        );
        self.fw_event(&fid, ev);
        if let Some(f) = self.frameworks.get_mut(&fid) {
            f.unacked
                .insert(s.uuid, (s.agent_id.to_string(), tid.clone()));
        }
        if newest && s.state.is_terminal() {
            self.capacity_freed(Some(&s.agent_id));
            self.fw_tasks.remove(&tid);
            self.touch_fw_task(&tid);
        }
    }

    /// A framework's tasks on an agent that went away.
    pub(super) fn framework_agent_lost(&mut self, now: Millis, agent: &str) {
        // Every connected framework hears of the agent (FAILURE), and its offers of it are void.
        let connected: Vec<String> = self
            .frameworks
            .values()
            .filter(|f| f.stream_id.is_some())
            .map(|f| f.id.clone())
            .collect();
        for fid in connected {
            let f = self.frameworks.get_mut(&fid).expect("listed");
            let void: Vec<String> = f
                .offers
                .iter()
                .filter(|(_, o)| o.agent_id == agent)
                .map(|(id, _)| id.clone())
                .collect();
            for id in &void {
                f.offers.remove(id);
            }
            for id in void {
                self.fw_event(
                    &fid,
                    json!({ "type": "RESCIND", "rescind": { "offer_id": { "value": id } } }),
                );
            }
            self.fw_event(
                &fid,
                json!({ "type": "FAILURE", "failure": { "agent_id": { "value": agent } } }),
            );
        }
        let tasks: Vec<(String, String)> = self
            .fw_tasks
            .values()
            .filter(|t| t.agent_id == agent)
            .map(|t| (t.id.clone(), t.framework_id.clone()))
            .collect();
        for (tid, fid) in tasks {
            let aware = self.frameworks.get(&fid).is_some_and(|f| f.partition_aware);
            let state = if aware {
                TaskState::Unreachable
            } else {
                TaskState::Lost
            };
            let ev = self.update_json(
                &tid,
                agent,
                state,
                "SOURCE_MASTER",
                Some("REASON_SLAVE_REMOVED"),
                "agent unreachable",
                None,
                now,
            );
            self.fw_event(&fid, ev);
        }
    }

    /// A call other than SUBSCRIBE, on stream `stream_id` (the `Mesos-Stream-Id` header): the
    /// stream is checked here, in the same step as the call runs, so a framework torn down in
    /// between is an error, never a panic.
    pub fn call(
        &mut self,
        now: Millis,
        stream_id: Option<&str>,
        call: &Call,
    ) -> Result<(), CallError> {
        if matches!(call, Call::Subscribe { .. }) {
            return Err(bad("SUBSCRIBE is answered with the event stream"));
        }
        // A call may release offers or tasks: placements that found no room try again.
        self.capacity_freed(None);
        let framework_id = call.framework_id().unwrap_or_default().to_string();
        let framework_id = framework_id.as_str();
        self.check_stream(framework_id, stream_id)?;
        match call {
            Call::Subscribe { .. } => Ok(()),
            Call::Accept { accept, .. } => self.accept(now, framework_id, accept),
            Call::Decline { decline, .. } => {
                let ids: Vec<String> = decline.offer_ids.iter().map(|i| i.value.clone()).collect();
                let refuse = decline.filters.refuse_seconds.unwrap_or(DEFAULT_REFUSE_S);
                self.consume_offers(now, framework_id, &ids, refuse)?;
                Ok(())
            }
            Call::Revive { .. } => {
                let f = self.framework_mut(framework_id)?;
                f.suppressed = false;
                f.refused.clear();
                self.make_offers(now);
                Ok(())
            }
            Call::Suppress { .. } => {
                let f = self.framework_mut(framework_id)?;
                f.suppressed = true;
                f.offers.clear();
                Ok(())
            }
            Call::Kill { kill, .. } => {
                let tid = kill.task_id.value.as_str();
                match self.fw_tasks.get(tid) {
                    Some(t) if t.framework_id == framework_id => self.fw_kill(now, tid),
                    _ => {
                        let agent = kill.agent_id.as_ref().map_or("", |a| a.value.as_str());
                        let ev = self.update_json(
                            tid,
                            agent,
                            TaskState::Lost,
                            "SOURCE_MASTER",
                            Some("REASON_RECONCILIATION"),
                            "no such task",
                            None,
                            now,
                        );
                        self.fw_event(framework_id, ev);
                    }
                }
                Ok(())
            }
            Call::Acknowledge { acknowledge, .. } => {
                let uuid_text = &acknowledge.uuid;
                let bytes = B64.decode(uuid_text).map_err(|e| {
                    bad(format!("acknowledge.uuid {uuid_text:?} is not base64: {e}"))
                })?;
                let uuid: [u8; 16] = bytes
                    .try_into()
                    .map_err(|_| bad(format!("acknowledge.uuid {uuid_text:?} is not 16 bytes")))?;
                let f = self.framework_mut(framework_id)?;
                if let Some((agent, task)) = f.unacked.remove(&uuid) {
                    self.forward_ack(&agent, &task, uuid);
                }
                Ok(())
            }
            Call::Reconcile { reconcile, .. } => {
                let tasks: Vec<(String, String)> = if reconcile.tasks.is_empty() {
                    self.fw_tasks
                        .values()
                        .filter(|t| t.framework_id == framework_id)
                        .map(|t| (t.id.clone(), t.agent_id.clone()))
                        .collect()
                } else {
                    reconcile
                        .tasks
                        .iter()
                        .map(|t| {
                            let agent = t.agent_id.as_ref().map_or("", |a| a.value.as_str());
                            (t.task_id.value.clone(), agent.to_string())
                        })
                        .collect()
                };
                for (tid, agent) in tasks {
                    let ev = match self.fw_tasks.get(&tid) {
                        Some(t) if t.framework_id == framework_id => {
                            let unreachable = self
                                .agents
                                .get(t.agent_id.as_str())
                                .is_some_and(|a| a.liveness == super::AgentLiveness::Offline);
                            let state = if unreachable {
                                TaskState::Unreachable
                            } else {
                                t.state
                            };
                            self.update_json(
                                &tid,
                                &t.agent_id.clone(),
                                state,
                                "SOURCE_MASTER",
                                Some("REASON_RECONCILIATION"),
                                "",
                                None,
                                now,
                            )
                        }
                        _ => self.update_json(
                            &tid,
                            &agent,
                            TaskState::Lost,
                            "SOURCE_MASTER",
                            Some("REASON_RECONCILIATION"),
                            "unknown task",
                            None,
                            now,
                        ),
                    };
                    self.fw_event(framework_id, ev);
                }
                Ok(())
            }
            Call::Teardown { .. } => {
                self.teardown(now, framework_id);
                Ok(())
            }
            // Tasks run under the built-in command executor, which (as Mesos's does) ignores
            // framework messages and has nothing to shut down apart from its task: the calls
            // are checked as a master checks them (their fields are required by the parser),
            // then accepted.
            Call::Message { .. } | Call::Shutdown { .. } | Call::Request { .. } => Ok(()),
        }
    }

    fn forward_ack(&mut self, agent: &str, task: &str, uuid: [u8; 16]) {
        let Ok(topic) = Topic::new(agent, TopicKind::Ack) else {
            return;
        };
        let ack = StatusAck {
            version: wire::PROTOCOL_VERSION,
            task_id: wire::TaskId::new(task).unwrap_or_default(),
            uuid,
        };
        self.effects.push(Effect::Publish {
            topic: topic.to_string(),
            payload: encode_to_vec(&ack),
        });
    }

    fn consume_offers(
        &mut self,
        now: Millis,
        framework_id: &str,
        ids: &[String],
        refuse_s: f64,
    ) -> Result<Vec<OfferHeld>, CallError> {
        let f = self.framework_mut(framework_id)?;
        let mut used = Vec::new();
        for id in ids {
            if let Some(o) = f.offers.remove(id) {
                f.refused.insert(
                    o.agent_id.clone(),
                    now + (refuse_s.max(0.0) * 1000.0) as u64,
                );
                used.push(o);
            }
        }
        Ok(used)
    }

    fn accept(&mut self, now: Millis, framework_id: &str, a: &Accept) -> Result<(), CallError> {
        let ids: Vec<String> = a.offer_ids.iter().map(|i| i.value.clone()).collect();
        let refuse = a.filters.refuse_seconds.unwrap_or(DEFAULT_REFUSE_S);
        let (valid, aware) = {
            let f = self.framework_mut(framework_id)?;
            (
                !ids.is_empty() && ids.iter().all(|id| f.offers.contains_key(id)),
                f.partition_aware,
            )
        };
        let launches: Vec<&TaskInfo> = a.operations.iter().flat_map(|op| op.tasks()).collect();
        if !valid {
            let state = if aware {
                TaskState::Dropped
            } else {
                TaskState::Lost
            };
            for ti in &launches {
                let agent = ti.agent_id.as_ref().map_or("", |a| a.value.as_str());
                let ev = self.update_json(
                    &ti.task_id.value,
                    agent,
                    state,
                    "SOURCE_MASTER",
                    Some("REASON_INVALID_OFFERS"),
                    "the offer is unknown or was rescinded",
                    None,
                    now,
                );
                self.fw_event(framework_id, ev);
            }
            self.consume_offers(now, framework_id, &ids, refuse)?;
            return Ok(());
        }
        let offers = self.consume_offers(now, framework_id, &ids, refuse)?;
        for o in &offers {
            self.observe(super::Latency::OfferToAccept, o.made_at, now);
        }
        let Some(agent_id) = offers.first().map(|o| o.agent_id.clone()) else {
            return Ok(());
        };
        let mut left = offers.iter().fold(Amount::default(), |s, o| s + o.amount);
        let ranges: Vec<(u16, u16)> = offers
            .iter()
            .flat_map(|o| o.ranges.iter().copied())
            .collect();
        for ti in launches {
            let tid = ti.task_id.value.clone();
            let result = task_spec(ti, &ranges).and_then(|(spec, amount, ports)| {
                if !left.fits(&amount) {
                    return Err(format!("task {tid:?} asks for more than the offers hold"));
                }
                if self.fw_tasks.contains_key(&tid) || self.tasks.contains_key(tid.as_str()) {
                    return Err(format!("task id {tid:?} is already in use"));
                }
                Ok((spec, amount, ports))
            });
            match result {
                Ok((spec, amount, ports)) => {
                    left -= amount;
                    self.fw_tasks.insert(
                        tid.clone(),
                        FwTask {
                            id: tid.clone(),
                            framework_id: framework_id.to_string(),
                            agent_id: agent_id.clone(),
                            state: TaskState::Staging,
                            amount,
                            ports,
                            healthy: None,
                            ip: None,
                            killing: false,
                            updated_ms: 0,
                            launched_at_ms: now,
                        },
                    );
                    self.touch_fw_task(&tid);
                    let cid = format!("l-{}", self.ids.uuid().simple());
                    self.fw_by_command.insert(cid.clone(), tid.clone());
                    tracing::info!(framework = %framework_id, task = %tid, agent = %agent_id, "framework task launched");
                    self.command(now, &agent_id, &cid, CommandKind::Launch(spec));
                }
                Err(e) => {
                    let ev = self.update_json(
                        &tid,
                        &agent_id,
                        TaskState::Error,
                        "SOURCE_MASTER",
                        Some("REASON_TASK_INVALID"),
                        &e,
                        None,
                        now,
                    );
                    self.fw_event(framework_id, ev);
                }
            }
        }
        Ok(())
    }

    /// A rejected launch of a framework's task: TASK_ERROR (or FAILED) to the framework.
    pub(super) fn framework_launch_rejected(
        &mut self,
        now: Millis,
        command_id: &str,
        message: &str,
    ) -> bool {
        let Some(tid) = self.fw_by_command.remove(command_id) else {
            return false;
        };
        let agent = self.fw_tasks.get(&tid).map(|t| t.agent_id.clone());
        self.capacity_freed(agent.as_deref());
        if let Some(t) = self.fw_tasks.remove(&tid) {
            self.touch_fw_task(&tid);
            let ev = self.update_json(
                &tid,
                &t.agent_id,
                TaskState::Error,
                "SOURCE_MASTER",
                Some("REASON_TASK_INVALID"),
                message,
                None,
                now,
            );
            self.fw_event(&t.framework_id, ev);
        }
        true
    }

    /// The frameworks (for the operator endpoints).
    pub fn frameworks(&self) -> impl Iterator<Item = &Framework> {
        self.frameworks.values()
    }

    /// A framework's tasks (for the operator endpoints).
    pub fn framework_tasks(&self) -> impl Iterator<Item = &FwTask> {
        self.fw_tasks.values()
    }
}

/// A Mesos TaskInfo as the agent's task spec: DOCKER container, network, port mappings with
/// host ports from the offered ranges, env, health check, kill policy.
fn task_spec(
    ti: &TaskInfo,
    ranges: &[(u16, u16)],
) -> Result<(wire::TaskSpec, Amount, Vec<u16>), String> {
    fn text<const N: usize>(field: &str, s: &str) -> Result<wire::Text<N>, String> {
        wire::Text::new(s).map_err(|_| format!("{field}: {s:?} is longer than {N} bytes"))
    }
    let tid = ti.task_id.value.as_str();
    let amount = Amount {
        cpus: calls::scalar(&ti.resources, "cpus"),
        mem: calls::scalar(&ti.resources, "mem"),
        disk: calls::scalar(&ti.resources, "disk"),
    };
    let mut wanted_ports: Vec<u16> = Vec::new();
    for (b, e) in calls::ranges(&ti.resources, "ports") {
        if b > e || e > u64::from(u16::MAX) {
            return Err(format!("ports range {b}-{e} is not a range of ports"));
        }
        wanted_ports.extend(b as u16..=e as u16);
    }
    for p in &wanted_ports {
        if !ranges.iter().any(|&(b, e)| (b..=e).contains(p)) {
            return Err(format!("port {p} is not in the offer"));
        }
    }
    let docker = ti
        .container
        .as_ref()
        .and_then(|c| c.docker.as_ref())
        .ok_or("container.docker.image is required (Outpost runs Docker containers)")?;
    let network = match docker.network.as_deref().unwrap_or("HOST") {
        "BRIDGE" => wire::NetworkMode::Bridge,
        "HOST" => wire::NetworkMode::Host,
        "NONE" => wire::NetworkMode::None,
        other => {
            return Err(format!(
                "container.docker.network {other:?} is not supported"
            ));
        }
    };
    let mut spec = wire::TaskSpec {
        task_id: text("task_id", tid)?,
        image: text("container.docker.image", &docker.image)?,
        force_pull: docker.force_pull_image,
        privileged: docker.privileged,
        cpus: amount.cpus,
        mem_mib: amount.mem,
        disk_mib: amount.disk,
        network,
        kill_grace_period_s: ti
            .kill_policy
            .as_ref()
            .and_then(|k| k.grace_period.as_ref())
            .map(|g| (g.nanoseconds.max(0) / 1_000_000_000) as u32)
            .unwrap_or(3),
        restart: wire::RestartPolicy {
            mode: wire::RestartMode::Never,
            ..Default::default()
        },
        ..Default::default()
    };
    let cmd = &ti.command;
    if cmd.shell.unwrap_or(true) {
        if let Some(v) = cmd.value.as_deref().filter(|v| !v.is_empty()) {
            spec.cmd = Some(text("command.value", v)?);
        }
    } else {
        for a in &cmd.arguments {
            spec.args
                .push(text("command.arguments", a)?)
                .map_err(|_| "command.arguments: too many")?;
        }
    }
    for v in cmd.environment.iter().flat_map(|e| &e.variables) {
        let kv = wire::KeyValue {
            name: text("environment.name", &v.name)?,
            value: text("environment.value", &v.value)?,
        };
        spec.env.push(kv).map_err(|_| "environment: too many")?;
    }
    let mut ports = Vec::new();
    for (i, pm) in docker.port_mappings.iter().enumerate() {
        let host = pm.host_port.ok_or(format!(
            "container.docker.port_mappings[{i}].host_port is required"
        ))?;
        let host = u16::try_from(host)
            .ok()
            .filter(|h| wanted_ports.contains(h))
            .ok_or(format!(
                "container.docker.port_mappings[{i}].host_port {host} is not in the task's ports resource"
            ))?;
        ports.push(host);
        spec.port_mappings
            .push(wire::PortMapping {
                container_port: pm.container_port.min(u64::from(u16::MAX)) as u16,
                host_port: host,
                protocol: if pm.protocol.as_deref() == Some("udp") {
                    wire::PortProtocol::Udp
                } else {
                    wire::PortProtocol::Tcp
                },
                name: None,
            })
            .map_err(|_| "port_mappings: too many")?;
    }
    if let Some(hc) = &ti.health_check {
        let (protocol, port, path, command) = match hc.kind.as_deref().unwrap_or("COMMAND") {
            // Mesos's HTTP check with `scheme: "https"` is an HTTPS check.
            "HTTP" => {
                let http = hc.http.as_ref();
                (
                    if http.and_then(|h| h.scheme.as_deref()) == Some("https") {
                        wire::HealthProtocol::Https
                    } else {
                        wire::HealthProtocol::Http
                    },
                    http.and_then(|h| h.port),
                    http.and_then(|h| h.path.clone()),
                    None,
                )
            }
            "TCP" => (
                wire::HealthProtocol::Tcp,
                hc.tcp.as_ref().and_then(|t| t.port),
                None,
                None,
            ),
            "COMMAND" => (
                wire::HealthProtocol::Command,
                None,
                None,
                hc.command.as_ref().and_then(|c| c.value.clone()),
            ),
            other => return Err(format!("health_check.type {other:?} is not supported")),
        };
        // A health check names the container port; the agent probes the mapped host port.
        let port_index = port.and_then(|p| {
            spec.port_mappings
                .iter()
                .position(|m| u64::from(m.container_port) == p)
        });
        let secs = |v: Option<f64>, default: f64| v.unwrap_or(default).max(0.0) as u32;
        spec.health_checks
            .push(wire::HealthCheck {
                protocol,
                path: path
                    .map(|p| text("health_check.http.path", &p))
                    .transpose()?,
                port_index: port_index.unwrap_or(0) as u16,
                port: if port_index.is_none() {
                    port.map(|p| p.min(u64::from(u16::MAX)) as u16)
                } else {
                    None
                },
                command: command
                    .map(|c| text("health_check.command.value", &c))
                    .transpose()?,
                grace_period_s: secs(hc.grace_period_seconds, 10.0),
                interval_s: secs(hc.interval_seconds, 10.0).max(1),
                timeout_s: secs(hc.timeout_seconds, 20.0),
                max_consecutive_failures: hc
                    .consecutive_failures
                    .unwrap_or(3)
                    .min(u64::from(u32::MAX)) as u32,
                delay_s: secs(hc.delay_seconds, 15.0),
            })
            .map_err(|_| "health checks: too many")?;
    }
    Ok((spec, amount, ports))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_http_check_with_the_https_scheme_is_an_https_probe() {
        let ti = json!({ "task_id": { "value": "t" }, "agent_id": { "value": "a" },
            "resources": [{ "name": "cpus", "type": "SCALAR", "scalar": { "value": 0.1 } }],
            "container": { "type": "DOCKER", "docker": { "image": "x", "network": "HOST" } },
            "health_check": { "type": "HTTP", "http": { "scheme": "https", "port": 8443, "path": "/ok" } } });
        let info = |v: &Value| -> TaskInfo { serde_json::from_value(v.clone()).unwrap() };
        let (spec, _, _) = task_spec(&info(&ti), &[]).unwrap();
        assert_eq!(spec.health_checks[0].protocol, wire::HealthProtocol::Https);
        let mut plain = ti.clone();
        plain["health_check"]["http"]["scheme"] = json!("http");
        let (spec, _, _) = task_spec(&info(&plain), &[]).unwrap();
        assert_eq!(spec.health_checks[0].protocol, wire::HealthProtocol::Http);
    }
}
