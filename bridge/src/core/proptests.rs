//! A property test of the scheduler core: random apps (fixed and dynamic host ports), scales
//! and deletes, agents joining and leaving, status updates, Mesos frameworks subscribing,
//! accepting and declining, time passing. After every step, with the step's writes committed
//! to an in-memory store as the owner would:
//! - no host port is held twice on an agent (Marathon's tasks, frameworks' tasks and the offers
//!   frameworks hold, together);
//! - what is held on an agent never exceeds its capacity;
//! - an app never has more tasks of its current version than instances, and at most one live
//!   task per instance when no deployment is running;
//! - every launch sent is of a task the store already holds;
//! - the per-app tallies the scheduler decides by, and the per-app state counts `/v2/apps`
//!   shows, equal a count from scratch.
//!
//! A failing case prints its steps; proptest replays it from the seed it saves.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use serde_json::json;

use outpost_protocol::codec::decode;
use outpost_protocol::{
    AgentId, AgentState, Command, CommandKind, Hello, Liveness, Offer, PortRange, Resources,
    TaskState, TaskStatus, Text,
};

use super::calls::Call;
use super::{Core, Effect};
use crate::app::AppDefinition;
use crate::placement::Amount;
use crate::store::{MemoryStore, StateStore, Table};

const AGENTS: u8 = 3;
const CPUS: f64 = 2.0;
const MEM: f64 = 1024.0;
const PORTS: (u16, u16) = (31000, 31007);
/// The app with `hostname UNIQUE`.
const UNIQUE_APP: u8 = 2;

#[derive(Debug, Clone)]
enum Step {
    Join(u8),
    Leave(u8),
    App {
        app: u8,
        instances: u32,
        fixed_port: Option<u16>,
        cpus10: u8,
    },
    Scale {
        app: u8,
        instances: u32,
    },
    Delete(u8),
    /// A status for the `task`-th task the bridge knows (Marathon's and frameworks').
    Status {
        task: u8,
        state: u8,
    },
    Subscribe,
    /// The framework accepts its `offer`-th offer, launching one task on one offered port.
    Accept {
        offer: u8,
        cpus10: u8,
    },
    Decline(u8),
    Advance(u32),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (0..AGENTS).prop_map(Step::Join),
        (0..AGENTS).prop_map(Step::Leave),
        (
            0u8..3,
            0u32..5,
            proptest::option::of(PORTS.0..=PORTS.1),
            1u8..8
        )
            .prop_map(|(app, instances, fixed_port, cpus10)| Step::App {
                app,
                instances,
                fixed_port,
                cpus10
            }),
        (0u8..3, 0u32..5).prop_map(|(app, instances)| Step::Scale { app, instances }),
        (0u8..3).prop_map(Step::Delete),
        (0u8..12, 0u8..6).prop_map(|(task, state)| Step::Status { task, state }),
        Just(Step::Subscribe),
        (0u8..4, 1u8..8).prop_map(|(offer, cpus10)| Step::Accept { offer, cpus10 }),
        (0u8..4).prop_map(Step::Decline),
        (1u32..400_000).prop_map(Step::Advance),
    ]
}

struct World {
    core: Core,
    store: MemoryStore,
    now: u64,
    uuid: u64,
    framework: Option<String>,
    /// Ports each launch asked for, by task.
    launched_ports: BTreeMap<String, Vec<u16>>,
    fw_tasks: u32,
}

impl World {
    fn agent_id(n: u8) -> AgentId {
        AgentId::new(&format!("a{n}")).unwrap()
    }

    fn join(&mut self, n: u8) {
        let agent_id = Self::agent_id(n);
        self.core.on_hello(
            self.now,
            &Hello {
                version: 1,
                agent_id: agent_id.clone(),
                // Agents a1 and a2 share a host name (two agents on one host): hostname
                // constraints count per host name, not per agent.
                hostname: Text::new(&format!("a{}.host", n.min(1))).unwrap(),
                ..Default::default()
            },
        );
        let mut ports = heapless::Vec::new();
        let _ = ports.push(PortRange {
            begin: PORTS.0,
            end: PORTS.1,
        });
        self.core.on_offer(
            self.now,
            &Offer {
                version: 1,
                agent_id: agent_id.clone(),
                seq: 1,
                available: Resources {
                    cpus: CPUS,
                    mem_mib: MEM,
                    disk_mib: 0.0,
                    ports,
                },
                ..Default::default()
            },
        );
        self.liveness(n, Liveness::Online);
    }

    fn liveness(&mut self, n: u8, liveness: Liveness) {
        self.core.on_state(
            self.now,
            &AgentState {
                version: 1,
                agent_id: Self::agent_id(n),
                liveness,
                started_at_ms: 1,
            },
        );
    }

    fn app_json(app: u8, instances: u32, fixed_port: Option<u16>, cpus10: u8) -> String {
        // App 2 has one instance per host name at most.
        let constraints = if app == UNIQUE_APP {
            r#""constraints":[["hostname","UNIQUE"]],"#
        } else {
            ""
        };
        format!(
            r#"{{"id":"/app{app}","instances":{instances},"cpus":{},"mem":64,{constraints}
            "container":{{"type":"DOCKER","docker":{{"image":"busybox","network":"BRIDGE"}},
            "portMappings":[{{"containerPort":80,"hostPort":{}}}]}}}}"#,
            f64::from(cpus10) / 10.0,
            fixed_port.unwrap_or(0)
        )
    }

    fn apply(&mut self, s: &Step) {
        match s.clone() {
            Step::Join(n) => self.join(n),
            Step::Leave(n) => self.liveness(n, Liveness::Offline),
            Step::App {
                app,
                instances,
                fixed_port,
                cpus10,
            } => {
                let def = AppDefinition::parse(
                    Self::app_json(app, instances, fixed_port, cpus10).as_bytes(),
                    None,
                )
                .unwrap();
                let _ = self.core.update_app(self.now, def, true);
            }
            Step::Scale { app, instances } => {
                if let Some(a) = self.core.app(&format!("/app{app}")) {
                    let mut def = a.def.clone();
                    def.instances = instances;
                    let _ = self.core.update_app(self.now, def, true);
                }
            }
            Step::Delete(app) => {
                let _ = self.core.delete_app(self.now, &format!("/app{app}"), true);
            }
            Step::Status { task, state } => {
                let mut all: Vec<(String, String)> = self
                    .core
                    .tasks(None)
                    .map(|t| (t.id.to_string(), t.agent_id.to_string()))
                    .collect();
                all.extend(
                    self.core
                        .framework_tasks()
                        .map(|t| (t.id.clone(), t.agent_id.clone())),
                );
                let Some((tid, agent)) = all.get(usize::from(task) % all.len().max(1)).cloned()
                else {
                    return;
                };
                let state = [
                    TaskState::Starting,
                    TaskState::Running,
                    TaskState::Failed,
                    TaskState::Killed,
                    TaskState::Finished,
                    TaskState::Unknown,
                ][usize::from(state)];
                self.uuid += 1;
                let mut uuid = [0u8; 16];
                uuid[..8].copy_from_slice(&self.uuid.to_be_bytes());
                // The agent binds exactly the ports the launch asked for.
                let mut host_ports = heapless::Vec::new();
                for p in self.launched_ports.get(&tid).into_iter().flatten() {
                    let _ = host_ports.push(*p);
                }
                self.core.on_status(
                    self.now,
                    &TaskStatus {
                        version: 1,
                        agent_id: AgentId::new(&agent).unwrap(),
                        task_id: Text::new(&tid).unwrap(),
                        uuid,
                        state,
                        healthy: None,
                        timestamp_ms: self.now,
                        host_ports,
                        ..Default::default()
                    },
                );
            }
            Step::Subscribe => {
                if self.framework.is_none() {
                    let sub = json!({ "type": "SUBSCRIBE", "subscribe": { "framework_info": {
                        "user": "root", "name": "prop", "failover_timeout": 3600.0 } } });
                    self.framework = self
                        .core
                        .subscribe(
                            self.now,
                            &Call::parse(sub.to_string().as_bytes()).unwrap(),
                            "s",
                        )
                        .ok();
                    self.core.offer_now(self.now);
                }
            }
            Step::Accept { offer, cpus10 } => {
                let Some(fid) = self.framework.clone() else {
                    return;
                };
                let Some(f) = self.core.frameworks().find(|f| f.id == fid) else {
                    return;
                };
                let mut offers: Vec<(&String, &super::framework::OfferHeld)> =
                    f.offers.iter().collect();
                offers.sort_by_key(|(id, _)| (*id).clone());
                let Some((offer_id, held)) = offers.get(usize::from(offer) % offers.len().max(1))
                else {
                    return;
                };
                let (offer_id, held) = ((*offer_id).clone(), (*held).clone());
                let port = held.ranges.first().map(|r| r.0);
                self.fw_tasks += 1;
                let tid = format!("fw-{}", self.fw_tasks);
                let mut resources = vec![
                    json!({ "name": "cpus", "type": "SCALAR", "scalar": { "value": f64::from(cpus10) / 10.0 } }),
                    json!({ "name": "mem", "type": "SCALAR", "scalar": { "value": 32 } }),
                ];
                let mut mappings = vec![];
                if let Some(p) = port {
                    resources.push(json!({ "name": "ports", "type": "RANGES",
                        "ranges": { "range": [{ "begin": p, "end": p }] } }));
                    mappings.push(json!({ "host_port": p, "container_port": 80 }));
                }
                let accept = json!({ "type": "ACCEPT", "accept": { "offer_ids": [{ "value": offer_id }],
                    "operations": [{ "type": "LAUNCH", "launch": { "task_infos": [{
                        "task_id": { "value": tid }, "agent_id": { "value": held.agent_id },
                        "resources": resources,
                        "container": { "type": "DOCKER", "docker": { "image": "busybox",
                            "network": "BRIDGE", "port_mappings": mappings } } }] } }] } });
                let _ = self
                    .core
                    .call(self.now, Some("s"), &with_id(&fid, accept.clone()));
                if let Some(p) = port {
                    self.launched_ports.insert(tid, vec![p]);
                }
            }
            Step::Decline(offer) => {
                let Some(fid) = self.framework.clone() else {
                    return;
                };
                let Some(f) = self.core.frameworks().find(|f| f.id == fid) else {
                    return;
                };
                let mut ids: Vec<String> = f.offers.keys().cloned().collect();
                ids.sort();
                let Some(id) = ids.get(usize::from(offer) % ids.len().max(1)).cloned() else {
                    return;
                };
                let decline =
                    json!({ "type": "DECLINE", "decline": { "offer_ids": [{ "value": id }] } });
                let _ = self
                    .core
                    .call(self.now, Some("s"), &with_id(&fid, decline.clone()));
            }
            Step::Advance(ms) => {
                self.now += u64::from(ms);
                self.core.tick(self.now);
            }
        }
        self.core.settle(self.now);
    }

    /// Commits the step's writes, then checks that every launch it sends is of a stored task.
    fn commit_and_send(&mut self) -> Result<(), TestCaseError> {
        let writes = self.core.take_writes();
        self.store.commit(&writes).unwrap();
        for e in self.core.take_effects() {
            let Effect::Publish { topic, payload } = e else {
                continue;
            };
            if !topic.ends_with("/cmd") {
                continue;
            }
            let cmd: Command = decode(&payload).unwrap();
            if let CommandKind::Launch(spec) = cmd.kind {
                let id = spec.task_id.to_string();
                let stored = self.store.get(Table::Tasks, &id).is_some()
                    || self.store.get(Table::FwTasks, &id).is_some();
                prop_assert!(stored, "launch of {id} sent before the task was stored");
                if id.starts_with("app") {
                    self.launched_ports
                        .insert(id, spec.port_mappings.iter().map(|m| m.host_port).collect());
                }
            }
        }
        Ok(())
    }

    fn check(&mut self) -> Result<(), TestCaseError> {
        // The tallies kept as tasks change equal a count from scratch.
        let ids: Vec<String> = self.core.apps().map(|a| a.def.id.clone()).collect();
        for id in ids {
            let kept = self.core.tally(&id);
            let fresh = self.core.tally_from_scratch(&id);
            prop_assert_eq!(kept, fresh, "the tally of {} drifted", id);
            self.core.catch_up();
            let kept = self.core.state_counts(&id);
            let fresh = self.core.state_counts_from_scratch(&id);
            prop_assert_eq!(kept, fresh, "the state counts of {} drifted", id);
        }
        // hostname UNIQUE: no two live instances on one host name.
        let mut hosts = BTreeSet::new();
        for t in self.core.tasks(Some(&format!("/app{UNIQUE_APP}"))) {
            if !t.killing && !t.inactive {
                prop_assert!(
                    hosts.insert(t.host.clone()),
                    "two live instances of the UNIQUE app on {}",
                    t.host
                );
            }
        }
        let mut ports: BTreeMap<&str, Vec<u16>> = BTreeMap::new();
        let mut held: BTreeMap<&str, Amount> = BTreeMap::new();
        for t in self.core.tasks(None) {
            let p = if t.host_ports.is_empty() {
                &t.fixed_ports
            } else {
                &t.host_ports
            };
            ports.entry(&t.agent_id).or_default().extend(p);
            *held.entry(&t.agent_id).or_default() += Amount {
                cpus: t.cpus,
                mem: t.mem,
                disk: t.disk,
            };
        }
        for t in self.core.framework_tasks() {
            ports.entry(&t.agent_id).or_default().extend(&t.ports);
            *held.entry(&t.agent_id).or_default() += t.amount;
        }
        for o in self.core.frameworks().flat_map(|f| f.offers.values()) {
            ports
                .entry(&o.agent_id)
                .or_default()
                .extend(o.ranges.iter().flat_map(|&(b, e)| b..=e));
            *held.entry(&o.agent_id).or_default() += o.amount;
        }
        for (agent, mut p) in ports {
            let n = p.len();
            p.sort_unstable();
            p.dedup();
            prop_assert_eq!(n, p.len(), "a host port held twice on {}", agent);
        }
        let capacity = Amount {
            cpus: CPUS,
            mem: MEM,
            disk: 0.0,
        };
        for (agent, h) in held {
            prop_assert!(
                capacity.fits(&h),
                "{} holds {:?}, more than its capacity",
                agent,
                h
            );
        }
        for app in self.core.apps() {
            let live: Vec<_> = self
                .core
                .tasks(Some(&app.def.id))
                .filter(|t| !t.killing && !t.inactive)
                .collect();
            let n = app.def.instances as usize;
            let current = live
                .iter()
                .filter(|t| t.version == app.last_config_change_at)
                .count();
            prop_assert!(
                current <= n,
                "{} has {} current tasks for {} instances",
                app.def.id,
                current,
                n
            );
            if app.deployment.is_none() {
                prop_assert!(
                    live.len() <= n,
                    "{} has {} live tasks for {} instances with no deployment running",
                    app.def.id,
                    live.len(),
                    n
                );
            }
        }
        Ok(())
    }
}

/// A call of framework `fid`, parsed as the HTTP edge parses it.
fn with_id(fid: &str, mut v: serde_json::Value) -> Call {
    v["framework_id"] = json!({ "value": fid });
    Call::parse(v.to_string().as_bytes()).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn scheduler_invariants_hold_for_any_sequence_of_calls_and_messages(
        steps in proptest::collection::vec(step(), 1..60),
    ) {
        let mut w = World {
            core: Core::default(),
            store: MemoryStore::new(),
            now: 1_000_000,
            uuid: 0,
            framework: None,
            launched_ports: BTreeMap::new(),
            fw_tasks: 0,
        };
        w.core.set_task_launch_timeout_ms(300_000);
        for s in &steps {
            w.apply(s);
            w.commit_and_send()?;
            w.check()?;
        }
    }
}
