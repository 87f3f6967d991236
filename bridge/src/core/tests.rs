//! Unit tests of the core under virtual time: agents are messages, time is a number.

use outpost_protocol::codec::decode;
use outpost_protocol::{
    AgentId, AgentState, Command, CommandKind, Hello, KeyValue, Liveness, Offer, PortRange,
    Resources, TaskState, TaskStatus, Text,
};

use super::*;
use crate::store::StateStore;

/// A Mesos call from its JSON, as the HTTP edge parses it.
fn mesos(v: &serde_json::Value) -> calls::Call {
    calls::Call::parse(v.to_string().as_bytes()).unwrap()
}

/// A call of framework `fid` from its JSON (the framework id filled in).
fn call_of(fid: &str, mut v: serde_json::Value) -> calls::Call {
    v["framework_id"] = serde_json::json!({ "value": fid });
    mesos(&v)
}

/// The stream id test frameworks subscribe on.
const STREAM: &str = "stream-1";

const NGINX: &str = include_str!("../../../docs/examples/nginx.json");

struct World {
    core: Core,
    now: Millis,
    uuid: u64,
}

impl World {
    fn new() -> Self {
        Self {
            core: Core::default(),
            now: 1_000_000,
            uuid: 0,
        }
    }

    fn agent(&mut self, id: &str, zone: &str) {
        let mut attributes = heapless::Vec::new();
        let _ = attributes.push(KeyValue {
            name: Text::new("zone").unwrap(),
            value: Text::new(zone).unwrap(),
        });
        let hello = Hello {
            version: 1,
            agent_id: AgentId::new(id).unwrap(),
            hostname: Text::new(&format!("{id}.host")).unwrap(),
            attributes: attributes.clone(),
            ..Default::default()
        };
        self.core.on_hello(self.now, &hello);
        let mut ports = heapless::Vec::new();
        let _ = ports.push(PortRange {
            begin: 31000,
            end: 31099,
        });
        let offer = Offer {
            version: 1,
            agent_id: AgentId::new(id).unwrap(),
            seq: 1,
            available: Resources {
                cpus: 2.0,
                mem_mib: 1024.0,
                disk_mib: 1000.0,
                ports,
            },
            used: Resources::default(),
            attributes,
        };
        self.core.on_offer(self.now, &offer);
        self.liveness(id, Liveness::Online, 1);
    }

    fn liveness(&mut self, id: &str, liveness: Liveness, started: u64) {
        let s = AgentState {
            version: 1,
            agent_id: AgentId::new(id).unwrap(),
            liveness,
            started_at_ms: started,
        };
        self.core.on_state(self.now, &s);
        self.core.settle(self.now);
    }

    fn advance(&mut self, ms: u64) {
        self.now += ms;
        self.core.tick(self.now);
    }

    /// Commands published since the last call, with their agent.
    fn commands(&mut self) -> Vec<(String, Command)> {
        self.core
            .take_effects()
            .into_iter()
            .filter_map(|e| match e {
                Effect::Publish { topic, payload } if topic.ends_with("/cmd") => {
                    let agent = topic.split('/').nth(3).unwrap().to_string();
                    Some((agent, decode::<Command>(&payload).unwrap()))
                }
                _ => None,
            })
            .collect()
    }

    fn launches(&mut self) -> Vec<(String, String)> {
        self.commands()
            .into_iter()
            .filter_map(|(a, c)| match c.kind {
                CommandKind::Launch(spec) => Some((a, spec.task_id.to_string())),
                _ => None,
            })
            .collect()
    }

    fn status(
        &mut self,
        agent: &str,
        task: &str,
        state: TaskState,
        healthy: Option<bool>,
    ) -> [u8; 16] {
        self.status_ready(agent, task, state, healthy, None)
    }

    /// [`World::status`] with a readiness result.
    fn status_ready(
        &mut self,
        agent: &str,
        task: &str,
        state: TaskState,
        healthy: Option<bool>,
        ready: Option<bool>,
    ) -> [u8; 16] {
        self.uuid += 1;
        let mut uuid = [0u8; 16];
        uuid[..8].copy_from_slice(&self.uuid.to_be_bytes());
        let mut host_ports = heapless::Vec::new();
        let _ = host_ports.push(31000 + self.uuid as u16);
        let s = TaskStatus {
            version: 1,
            agent_id: AgentId::new(agent).unwrap(),
            task_id: Text::new(task).unwrap(),
            uuid,
            state,
            healthy,
            timestamp_ms: self.now,
            host_ports,
            ready,
            ..Default::default()
        };
        self.core.on_status(self.now, &s);
        self.core.settle(self.now);
        uuid
    }

    fn create(&mut self, json: &str) {
        let def = AppDefinition::parse(json.as_bytes(), None).unwrap();
        self.core.create_app(self.now, def).unwrap();
    }

    fn run(&mut self, agent: &str, task: &str) {
        self.status(agent, task, TaskState::Starting, None);
        self.status(agent, task, TaskState::Running, None);
        self.status(agent, task, TaskState::Running, Some(true));
    }
}

fn simple_app(instances: u32) -> String {
    format!(
        r#"{{"id":"/web","instances":{instances},"cpus":0.5,"mem":64,
            "container":{{"type":"DOCKER","docker":{{"image":"busybox","network":"BRIDGE"}},
            "portMappings":[{{"containerPort":80,"hostPort":0}}]}},
            "unreachableStrategy":{{"inactiveAfterSeconds":60,"expungeAfterSeconds":120}}}}"#
    )
}

#[test]
fn the_readme_example_spreads_two_instances_and_its_deployment_finishes() {
    let mut w = World::new();
    w.agent("a1", "north");
    w.agent("a2", "south");
    w.create(NGINX);
    let launches = w.launches();
    assert_eq!(launches.len(), 2);
    assert_ne!(launches[0].0, launches[1].0, "spread over both agents");
    assert!(w.core.app("/demo-nginx").unwrap().deployment.is_some());
    for (agent, task) in &launches {
        w.run(agent, task);
    }
    w.advance(1000);
    assert!(
        w.core.app("/demo-nginx").unwrap().deployment.is_none(),
        "healthy: deployment done"
    );
    assert!(w.core.tasks(None).all(|t| t.ready(true)));
    assert!(w.core.task(&launches[0].1).unwrap().host_ports[0] > 31000);
}

#[test]
fn nothing_launches_where_it_does_not_fit() {
    let mut w = World::new();
    w.agent("a1", "north"); // 2 cpus
    w.create(&simple_app(5)); // 0.5 cpus each: 4 fit
    assert_eq!(w.launches().len(), 4);
    w.advance(1000);
    assert!(w.launches().is_empty(), "the fifth waits for room");
    w.agent("a2", "south");
    w.advance(1000);
    assert_eq!(
        w.launches(),
        vec![(
            "a2".to_string(),
            w.core
                .tasks(None)
                .find(|t| &*t.agent_id == "a2")
                .unwrap()
                .id
                .to_string()
        )]
    );
}

#[test]
fn constraints_limit_placement() {
    let mut w = World::new();
    w.agent("a1", "north");
    w.agent("a2", "south");
    let app = simple_app(2).replace(
        r#""instances":2"#,
        r#""instances":2,"constraints":[["zone","CLUSTER","south"]]"#,
    );
    w.create(&app);
    let l = w.launches();
    assert_eq!(l.len(), 2);
    assert!(l.iter().all(|(a, _)| a == "a2"));
}

#[test]
fn duplicate_statuses_are_acknowledged_and_dropped() {
    let mut w = World::new();
    w.agent("a1", "north");
    w.create(&simple_app(1));
    let (_, task) = w.launches().remove(0);
    let uuid = w.status("a1", &task, TaskState::Running, None);
    let events_before = w.core.take_effects();
    assert!(
        events_before
            .iter()
            .any(|e| matches!(e, Effect::Event(v) if v["taskStatus"] == "TASK_RUNNING"))
    );
    // The same update again (the agent re-sent it): acknowledged, no event.
    let s = TaskStatus {
        version: 1,
        agent_id: AgentId::new("a1").unwrap(),
        task_id: Text::new(&task).unwrap(),
        uuid,
        state: TaskState::Running,
        ..Default::default()
    };
    w.core.on_status(w.now, &s);
    let effects = w.core.take_effects();
    assert_eq!(effects.len(), 1, "{effects:?}");
    assert!(matches!(&effects[0], Effect::Publish { topic, .. } if topic.ends_with("/ack")));
}

#[test]
fn a_task_the_agent_does_not_know_is_replaced_after_backoff() {
    let mut w = World::new();
    w.agent("a1", "north");
    w.create(&simple_app(1));
    let (_, task) = w.launches().remove(0);
    w.status("a1", &task, TaskState::Unknown, None);
    assert!(w.core.task(&task).is_none());
    assert!(w.core.app("/web").unwrap().last_failure.is_some());
    w.core.tick(w.now);
    assert!(w.launches().is_empty(), "backoff: 1 s");
    w.advance(1000);
    assert_eq!(w.launches().len(), 1);
}

#[test]
fn unreachable_tasks_are_kept_then_replaced_and_the_stale_one_killed_on_return() {
    let mut w = World::new();
    w.agent("a1", "north");
    w.create(&simple_app(1));
    let (_, task) = w.launches().remove(0);
    w.run("a1", &task);
    w.agent("a2", "south");
    w.liveness("a1", Liveness::Offline, 1);
    assert!(w.core.task(&task).unwrap().unreachable_since_ms.is_some());
    w.advance(59_000);
    assert!(w.launches().is_empty(), "kept within inactiveAfterSeconds");
    w.advance(2_000);
    let l = w.launches();
    assert_eq!(l.len(), 1, "replaced after inactiveAfterSeconds");
    assert_eq!(l[0].0, "a2");
    // a1 comes back and reports the old task: it is killed.
    w.liveness("a1", Liveness::Online, 1);
    let reconciles = w.commands();
    assert!(
        reconciles
            .iter()
            .any(|(a, c)| a == "a1" && matches!(c.kind, CommandKind::Reconcile(_)))
    );
    w.status("a1", &task, TaskState::Running, Some(true));
    let kills = w.commands();
    assert!(
        kills.iter().any(|(a, c)| a == "a1"
            && matches!(&c.kind, CommandKind::Kill(k) if k.task_id == task.as_str()))
    );
}

#[test]
fn an_agent_back_within_inactive_after_keeps_its_tasks() {
    let mut w = World::new();
    w.agent("a1", "north");
    w.create(&simple_app(1));
    let (_, task) = w.launches().remove(0);
    w.run("a1", &task);
    w.liveness("a1", Liveness::Offline, 1);
    w.advance(30_000);
    w.liveness("a1", Liveness::Online, 1);
    w.status("a1", &task, TaskState::Running, Some(true));
    w.advance(60_000);
    assert!(w.launches().is_empty());
    let t = w.core.task(&task).unwrap();
    assert!(t.unreachable_since_ms.is_none() && !t.inactive && !t.killing);
}

#[test]
fn scaling_down_kills_the_youngest() {
    let mut w = World::new();
    w.agent("a1", "north");
    w.create(&simple_app(1));
    let (_, oldest) = w.launches().remove(0);
    w.run("a1", &oldest);
    // The second instance is launched later: it is the youngest.
    w.advance(5_000);
    let mut def = w.core.app("/web").unwrap().def.clone();
    def.instances = 2;
    w.core.update_app(w.now, def.clone(), true).unwrap();
    let (_, youngest) = w.launches().remove(0);
    w.run("a1", &youngest);
    w.advance(1000);
    def.instances = 1;
    let d = w.core.update_app(w.now, def, true).unwrap();
    assert_eq!(d.action, DeploymentAction::ScaleApplication);
    let kills: Vec<String> = w
        .commands()
        .into_iter()
        .filter_map(|(_, c)| match c.kind {
            CommandKind::Kill(k) => Some(k.task_id.to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(kills, vec![youngest]);
}

#[test]
fn a_config_change_replaces_tasks_within_the_upgrade_strategy() {
    let mut w = World::new();
    w.agent("a1", "north");
    w.create(&simple_app(2).replace(
        r#""instances":2"#,
        r#""instances":2,"upgradeStrategy":{"minimumHealthCapacity":0.5,"maximumOverCapacity":0}"#,
    ));
    let old = w.launches();
    for (a, t) in &old {
        w.run(a, t);
    }
    w.advance(1000);
    let mut def = w.core.app("/web").unwrap().def.clone();
    def.cmd = Some("sleep 1000".into());
    w.advance(1000);
    assert!(
        matches!(w.core.update_app(w.now, def.clone(), false), Ok(d) if d.action == DeploymentAction::RestartApplication)
    );
    // One old task goes first (min health 0.5 of 2 = 1 stays), no extra capacity.
    let cmds = w.commands();
    let kills = cmds
        .iter()
        .filter(|(_, c)| matches!(c.kind, CommandKind::Kill(_)))
        .count();
    let launches = cmds
        .iter()
        .filter(|(_, c)| matches!(c.kind, CommandKind::Launch(_)))
        .count();
    assert_eq!((kills, launches), (1, 0));
    // A second update while the deployment runs is refused without force.
    assert_eq!(
        w.core.update_app(w.now, def, false).unwrap_err().status,
        409
    );
}

#[test]
fn deleting_an_app_kills_its_tasks_then_forgets_it() {
    let mut w = World::new();
    w.agent("a1", "north");
    w.create(&simple_app(1));
    let (_, task) = w.launches().remove(0);
    w.run("a1", &task);
    w.advance(1000);
    w.core.delete_app(w.now, "/web", false).unwrap();
    assert!(w.core.app("/web").is_some(), "until its task is gone");
    w.status("a1", &task, TaskState::Killed, None);
    w.advance(1000);
    assert!(w.core.app("/web").is_none());
}

#[test]
fn writes_cover_every_change_so_a_restored_core_has_the_same_tasks() {
    let mut w = World::new();
    w.agent("a1", "north");
    w.create(&simple_app(2));
    for (a, t) in w.launches() {
        w.run(&a, &t);
    }
    let mut store = crate::store::MemoryStore::new();
    store.commit(&w.core.take_writes()).unwrap();
    let restored = Core::load(0, &store).unwrap();
    let ids = |c: &Core| {
        c.tasks(None)
            .map(|t| (t.id.clone(), t.state))
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(&restored), ids(&w.core));
    assert_eq!(
        restored.app("/web").unwrap().def,
        w.core.app("/web").unwrap().def
    );
}

#[test]
fn a_fixed_host_port_is_given_to_one_task_per_agent() {
    let mut w = World::new();
    w.agent("a1", "north");
    let app = simple_app(2).replace(r#""hostPort":0"#, r#""hostPort":31005"#);
    w.create(&app);
    assert_eq!(
        w.launches().len(),
        1,
        "the second instance would need 31005 again"
    );
    let fixed_out_of_range = simple_app(1)
        .replace(r#""hostPort":0"#, r#""hostPort":80"#)
        .replace("/web", "/low");
    w.create(&fixed_out_of_range);
    assert!(
        w.launches().is_empty(),
        "port 80 is not in the offered range"
    );
}

#[test]
fn instances_spread_evenly_and_group_by_balances_zones() {
    let mut w = World::new();
    for (id, zone) in [("a1", "north"), ("a2", "north"), ("a3", "south")] {
        w.agent(id, zone);
    }
    w.create(&simple_app(3).replace("\"cpus\":0.5", "\"cpus\":0.1"));
    let mut per_agent: BTreeMap<String, usize> = BTreeMap::new();
    for (a, _) in w.launches() {
        *per_agent.entry(a).or_default() += 1;
    }
    assert_eq!(per_agent.values().copied().collect::<Vec<_>>(), [1, 1, 1]);
    let grouped = simple_app(4)
        .replace("/web", "/zoned")
        .replace("\"cpus\":0.5", "\"cpus\":0.1")
        .replace(
            r#""instances":4"#,
            r#""instances":4,"constraints":[["zone","GROUP_BY"]]"#,
        );
    w.create(&grouped);
    let mut per_zone: BTreeMap<&str, usize> = BTreeMap::new();
    for (a, _) in w.launches() {
        *per_zone
            .entry(if a == "a3" { "south" } else { "north" })
            .or_default() += 1;
    }
    assert_eq!(per_zone, BTreeMap::from([("north", 2), ("south", 2)]));
}

#[test]
fn a_restored_core_reconciles_each_agent_on_its_first_liveness() {
    let mut w = World::new();
    w.agent("a1", "north");
    w.create(&simple_app(1));
    let (_, task) = w.launches().remove(0);
    w.run("a1", &task);
    let mut store = crate::store::MemoryStore::new();
    store.commit(&w.core.take_writes()).unwrap();
    let mut restored = Core::load(0, &store).unwrap();
    // The broker's retained liveness, unchanged since before the restart.
    let s = AgentState {
        version: 1,
        agent_id: AgentId::new("a1").unwrap(),
        liveness: Liveness::Online,
        started_at_ms: 1,
    };
    restored.on_state(w.now, &s);
    let asked: Vec<Command> = restored
        .take_effects()
        .into_iter()
        .filter_map(|e| match e {
            Effect::Publish { topic, payload } if topic.ends_with("/cmd") => {
                decode::<Command>(&payload).ok()
            }
            _ => None,
        })
        .collect();
    let explicit = asked.iter().any(|c| matches!(&c.kind, CommandKind::Reconcile(r) if r.task_ids.iter().any(|t| *t == task.as_str())));
    assert!(explicit, "{asked:?}");
}

#[test]
fn a_killed_task_its_agent_forgot_is_not_a_failure() {
    let mut w = World::new();
    w.agent("a1", "north");
    w.create(&simple_app(1));
    let (_, task) = w.launches().remove(0);
    w.run("a1", &task);
    w.core
        .kill_tasks(w.now, std::slice::from_ref(&task), true, false)
        .unwrap();
    w.status("a1", &task, TaskState::Unknown, None);
    assert!(w.core.task(&task).is_none());
    assert_eq!(w.core.app("/web").unwrap().failures, 0);
}

#[test]
fn a_framework_s_offer_is_not_given_to_marathon_and_invalid_offers_drop_tasks() {
    let mut w = World::new();
    w.agent("a1", "north");
    let sub = serde_json::json!({ "type": "SUBSCRIBE", "subscribe": { "framework_info": {
        "user": "root", "name": "fw", "capabilities": [{ "type": "PARTITION_AWARE" }] } } });
    let fid = w.core.subscribe(w.now, &mesos(&sub), STREAM).unwrap();
    w.core.offer_now(w.now);
    let offers: Vec<serde_json::Value> = w
        .core
        .take_effects()
        .into_iter()
        .filter_map(|e| match e {
            Effect::Framework { event, .. } if event["type"] == "OFFERS" => Some(event),
            _ => None,
        })
        .collect();
    assert_eq!(offers.len(), 1);
    // The whole agent is on offer to the framework: Marathon's app waits.
    w.create(&simple_app(1));
    assert!(
        w.launches().is_empty(),
        "the offered resources are the framework's"
    );
    // Accepting an offer that does not exist drops the task, as a master does.
    let accept = serde_json::json!({ "type": "ACCEPT", "accept": { "offer_ids": [{ "value": "nope" }],
        "operations": [{ "type": "LAUNCH", "launch": { "task_infos": [{ "task_id": { "value": "t1" },
            "agent_id": { "value": "a1" }, "resources": [] }] } }] } });
    w.core
        .call(w.now, Some(STREAM), &call_of(&fid, accept.clone()))
        .unwrap();
    let dropped = w.core.take_effects().into_iter().find_map(|e| match e {
        Effect::Framework { event, .. } if event["type"] == "UPDATE" => Some(event),
        _ => None,
    });
    let status = &dropped.expect("an UPDATE")["update"]["status"];
    assert_eq!(status["state"], "TASK_DROPPED");
    assert_eq!(status["reason"], "REASON_INVALID_OFFERS");
    // The framework declines: Marathon's app gets the agent.
    let offer_id = offers[0]["offers"]["offers"][0]["id"].clone();
    w.core
        .call(
            w.now,
            Some(STREAM),
            &call_of(
                &fid,
                serde_json::json!({ "type": "DECLINE", "decline": { "offer_ids": [offer_id] } }),
            ),
        )
        .unwrap();
    w.advance(1000);
    assert_eq!(w.launches().len(), 1);
}

#[test]
fn frameworks_hear_of_a_lost_agent_and_their_tasks_go_unreachable() {
    let mut w = World::new();
    w.agent("a1", "north");
    let sub = serde_json::json!({ "type": "SUBSCRIBE", "subscribe": { "framework_info": {
        "user": "root", "name": "fw", "capabilities": [{ "type": "PARTITION_AWARE" }] } } });
    let fid = w.core.subscribe(w.now, &mesos(&sub), STREAM).unwrap();
    w.core.offer_now(w.now);
    let offer = w.core.take_effects().into_iter().find_map(|e| match e {
        Effect::Framework { event, .. } if event["type"] == "OFFERS" => {
            Some(event["offers"]["offers"][0].clone())
        }
        _ => None,
    });
    let offer = offer.expect("an offer");
    let accept = serde_json::json!({ "type": "ACCEPT", "accept": { "offer_ids": [offer["id"]],
        "operations": [{ "type": "LAUNCH", "launch": { "task_infos": [{ "task_id": { "value": "t1" },
            "agent_id": { "value": "a1" },
            "resources": [{ "name": "cpus", "type": "SCALAR", "scalar": { "value": 0.1 } },
                          { "name": "mem", "type": "SCALAR", "scalar": { "value": 32 } }],
            "container": { "type": "DOCKER", "docker": { "image": "busybox" } } }] } }] } });
    w.core
        .call(w.now, Some(STREAM), &call_of(&fid, accept.clone()))
        .unwrap();
    assert!(w.commands().iter().any(|(a, c)| a == "a1" && matches!(&c.kind, CommandKind::Launch(s) if s.task_id == "t1" && s.restart.mode == outpost_protocol::RestartMode::Never)));
    w.liveness("a1", Liveness::Offline, 1);
    let events: Vec<serde_json::Value> = w
        .core
        .take_effects()
        .into_iter()
        .filter_map(|e| match e {
            Effect::Framework { event, .. } => Some(event),
            _ => None,
        })
        .collect();
    assert!(
        events
            .iter()
            .any(|e| e["type"] == "FAILURE" && e["failure"]["agent_id"]["value"] == "a1")
    );
    assert!(
        events
            .iter()
            .any(|e| e["type"] == "UPDATE" && e["update"]["status"]["state"] == "TASK_UNREACHABLE")
    );
}

/// `w` with a subscribed framework (`name`, failover timeout 60 s) running task `t1` on `a1`;
/// returns the framework id.
fn framework_with_a_task(w: &mut World) -> String {
    let sub = serde_json::json!({ "type": "SUBSCRIBE", "subscribe": { "framework_info": {
        "user": "root", "name": "fw", "failover_timeout": 60.0 } } });
    let fid = w.core.subscribe(w.now, &mesos(&sub), STREAM).unwrap();
    w.core.offer_now(w.now);
    let offer = w.core.take_effects().into_iter().find_map(|e| match e {
        Effect::Framework { event, .. } if event["type"] == "OFFERS" => {
            Some(event["offers"]["offers"][0].clone())
        }
        _ => None,
    });
    let accept = serde_json::json!({ "type": "ACCEPT", "accept": { "offer_ids": [offer.expect("an offer")["id"]],
        "operations": [{ "type": "LAUNCH", "launch": { "task_infos": [{ "task_id": { "value": "t1" },
            "agent_id": { "value": "a1" },
            "resources": [{ "name": "cpus", "type": "SCALAR", "scalar": { "value": 0.1 } },
                          { "name": "mem", "type": "SCALAR", "scalar": { "value": 32 } }],
            "container": { "type": "DOCKER", "docker": { "image": "busybox" } } }] } }] } });
    w.core
        .call(w.now, Some(STREAM), &call_of(&fid, accept.clone()))
        .unwrap();
    w.run("a1", "t1");
    fid
}

fn restore_from(store: &crate::store::MemoryStore, now: u64) -> Core {
    Core::load(now, store).unwrap()
}

#[test]
fn a_restored_bridge_keeps_frameworks_and_their_tasks_within_the_failover_timeout() {
    let mut w = World::new();
    w.agent("a1", "north");
    let fid = framework_with_a_task(&mut w);
    let mut store = crate::store::MemoryStore::new();
    store.commit(&w.core.take_writes()).unwrap();

    let mut restored = restore_from(&store, w.now);
    let f = restored.frameworks().next().expect("the framework");
    assert_eq!(f.id, fid);
    assert!(
        f.stream_id.is_none(),
        "its stream died with the old process"
    );
    let t = restored.framework_tasks().next().expect("its task");
    assert_eq!((t.id.as_str(), t.state), ("t1", TaskState::Running));
    // The task's status goes to the framework path, not the orphan killer.
    assert!(restored.is_framework_task("t1"));
    // Re-subscribing with its id keeps the task.
    let sub = serde_json::json!({ "type": "SUBSCRIBE", "framework_id": { "value": fid },
        "subscribe": { "framework_info": { "user": "root", "name": "fw", "failover_timeout": 60.0,
        "id": { "value": fid } } } });
    assert_eq!(
        restored
            .subscribe(w.now + 1000, &mesos(&sub), "s2")
            .unwrap(),
        fid
    );
    restored.framework_timers(w.now + 120_000);
    assert_eq!(restored.framework_tasks().count(), 1);

    // Not back within the failover timeout (counted from the restore): torn down, task killed.
    let mut late = restore_from(&store, w.now);
    late.framework_timers(w.now + 59_000);
    assert_eq!(late.framework_tasks().count(), 1);
    late.framework_timers(w.now + 61_000);
    assert_eq!(late.framework_tasks().count(), 0);
    assert!(late.framework_removed(&fid));
    let kills = late
        .take_effects()
        .into_iter()
        .filter(|e| matches!(e, Effect::Publish { topic, .. } if topic.contains("/cmd")))
        .count();
    assert_eq!(kills, 1, "the task is killed");
    // The removal is stored too: a later restore still refuses the id.
    store.commit(&late.take_writes()).unwrap();
    let again = restore_from(&store, w.now + 62_000);
    assert!(again.framework_removed(&fid));
    assert_eq!(again.frameworks().count(), 0);
    assert_eq!(again.framework_tasks().count(), 0);
}

#[test]
fn an_operator_teardown_sends_error_kills_the_tasks_and_refuses_the_id() {
    let mut w = World::new();
    w.agent("a1", "north");
    let fid = framework_with_a_task(&mut w);
    w.core.take_effects();
    let err = w.core.operator_teardown(w.now, "nope").unwrap_err();
    assert_eq!(err.status, 400);
    assert!(err.message.contains("nope"), "{}", err.message);
    w.core.operator_teardown(w.now, &fid).unwrap();
    let effects = w.core.take_effects();
    assert!(
        effects
            .iter()
            .any(|e| matches!(e, Effect::Framework { event, .. }
        if event["type"] == "ERROR" && event["error"]["message"] == REMOVED))
    );
    assert!(
        effects
            .iter()
            .any(|e| matches!(e, Effect::EndStream { .. }))
    );
    assert!(w.core.framework_removed(&fid));
    assert_eq!(w.core.framework_tasks().count(), 0);
}

#[test]
fn message_and_shutdown_calls_are_validated_like_a_master_does() {
    let mut w = World::new();
    w.agent("a1", "north");
    let sub = serde_json::json!({ "type": "SUBSCRIBE", "subscribe": { "framework_info": {
        "user": "root", "name": "fw" } } });
    let fid = w.core.subscribe(w.now, &mesos(&sub), STREAM).unwrap();
    let parse = |v: serde_json::Value| {
        let mut v = v;
        v["framework_id"] = serde_json::json!({ "value": fid });
        calls::Call::parse(v.to_string().as_bytes())
    };
    let bad = parse(serde_json::json!({ "type": "MESSAGE", "message": {} })).unwrap_err();
    assert_eq!(bad.status, 400);
    assert!(bad.message.contains("agent_id"), "{}", bad.message);
    let ok = serde_json::json!({ "type": "MESSAGE", "message": { "agent_id": { "value": "a1" },
        "executor_id": { "value": "t1" }, "data": "aGk=" } });
    w.core
        .call(w.now, Some(STREAM), &parse(ok).unwrap())
        .unwrap();
    let bad = parse(serde_json::json!({ "type": "SHUTDOWN", "shutdown": {} })).unwrap_err();
    assert!(bad.message.contains("executor_id"), "{}", bad.message);
}

#[test]
fn a_re_sent_older_status_of_a_framework_task_is_forwarded_but_does_not_regress_it() {
    let mut w = World::new();
    w.agent("a1", "north");
    framework_with_a_task(&mut w);
    w.core.take_effects();
    // The agent repeats STARTING (stamped before RUNNING): the framework had not acknowledged it.
    let starting = TaskStatus {
        version: 1,
        agent_id: AgentId::new("a1").unwrap(),
        task_id: Text::new("t1").unwrap(),
        uuid: [9; 16],
        state: TaskState::Starting,
        timestamp_ms: w.now - 1,
        ..Default::default()
    };
    w.now += 1000;
    w.core.on_status(w.now, &starting);
    let t = w.core.framework_tasks().next().unwrap();
    assert_eq!(t.state, TaskState::Running);
    assert!(
        w.core
            .take_effects()
            .iter()
            .any(|e| matches!(e, Effect::Framework { event, .. }
        if event["update"]["status"]["state"] == "TASK_STARTING"))
    );
}

#[test]
fn a_call_for_a_framework_torn_down_since_its_check_is_an_answer_not_a_panic() {
    let mut w = World::new();
    w.agent("a1", "north");
    let fid = framework_with_a_task(&mut w);
    // Torn down by the operator (or a failover timeout) between the request's arrival and its
    // call: every call is refused as a master refuses it.
    w.core.operator_teardown(w.now, &fid).unwrap();
    for kind in [
        "REVIVE",
        "SUPPRESS",
        "DECLINE",
        "ACCEPT",
        "ACKNOWLEDGE",
        "KILL",
    ] {
        let call = serde_json::json!({ "type": kind, "decline": { "offer_ids": [] },
            "accept": { "offer_ids": [] },
            "acknowledge": { "uuid": "AAAAAAAAAAAAAAAAAAAAAA==" }, "kill": { "task_id": { "value": "t1" } } });
        let e = w
            .core
            .call(w.now, Some(STREAM), &call_of(&fid, call.clone()))
            .unwrap_err();
        assert_eq!((e.status, e.message.as_str()), (403, REMOVED), "{kind}");
    }
    let e = w
        .core
        .call(
            w.now,
            Some(STREAM),
            &call_of("never-was", serde_json::json!({ "type": "REVIVE" })),
        )
        .unwrap_err();
    assert_eq!(e.status, 404);
    assert!(e.message.contains("never-was"), "{}", e.message);
    // A SUBSCRIBE with the removed id is refused too (the edge answers it with ERROR).
    let sub = serde_json::json!({ "type": "SUBSCRIBE", "framework_id": { "value": fid },
        "subscribe": { "framework_info": { "user": "root", "name": "fw", "id": { "value": fid } } } });
    assert!(
        w.core
            .subscribe(w.now, &mesos(&sub), "s2")
            .unwrap_err()
            .is_removed()
    );
}

#[test]
fn a_call_on_another_stream_is_refused() {
    let mut w = World::new();
    w.agent("a1", "north");
    let fid = framework_with_a_task(&mut w);
    let e = w
        .core
        .call(
            w.now,
            Some("other"),
            &call_of(&fid, serde_json::json!({ "type": "REVIVE" })),
        )
        .unwrap_err();
    assert_eq!(e.status, 403);
    let e = w
        .core
        .call(
            w.now,
            None,
            &call_of(&fid, serde_json::json!({ "type": "REVIVE" })),
        )
        .unwrap_err();
    assert_eq!(e.status, 403);
}

#[test]
fn a_task_not_running_within_the_launch_timeout_is_killed_replaced_and_reported() {
    let mut w = World::new();
    w.core.set_task_launch_timeout_ms(60_000);
    w.agent("a1", "north");
    w.create(&simple_app(1));
    // The launch went nowhere (its publish was lost): the task stays STAGING.
    let (_, stuck) = w.launches().remove(0);
    w.advance(59_000);
    assert!(w.launches().is_empty(), "not before the timeout");
    assert!(w.core.task(&stuck).is_some());
    w.advance(1_000);
    let commands = w.commands();
    assert!(
        commands
            .iter()
            .any(|(_, c)| matches!(&c.kind, CommandKind::Kill(k) if k.task_id.as_str() == stuck)),
        "the stuck task is killed on its agent"
    );
    assert!(w.core.task(&stuck).is_none(), "and forgotten by the bridge");
    let failure = w.core.app("/web").unwrap().last_failure.clone().unwrap();
    assert_eq!(failure.task_id, stuck);
    assert!(
        failure.message.contains("task launch timeout"),
        "{}",
        failure.message
    );
    // A replacement comes after the app's backoff (1 s by default).
    w.advance(1_000);
    w.advance(1_000);
    let l = w.launches();
    assert_eq!(l.len(), 1, "replaced");
    assert_ne!(l[0].1, stuck);
    // A task that does become RUNNING in time is left alone.
    w.run("a1", &l[0].1);
    w.advance(120_000);
    assert!(w.core.task(&l[0].1).is_some());
}

#[test]
fn deleting_an_app_whose_agent_went_away_during_the_kill_completes_and_frees_the_id() {
    let mut w = World::new();
    w.agent("a1", "north");
    w.create(&simple_app(1));
    let (_, task) = w.launches().remove(0);
    w.run("a1", &task);
    w.advance(1000);
    let d = w.core.delete_app(w.now, "/web", false).unwrap();
    assert_eq!(d.action, DeploymentAction::StopApplication);
    assert!(w.core.app("/web").is_some(), "waiting for the kill");
    // Locked while the stop runs: Marathon's words and the deployment id, not "exists".
    let def = AppDefinition::parse(simple_app(1).as_bytes(), None).unwrap();
    let e = w.core.create_app(w.now, def.clone()).unwrap_err();
    assert_eq!(e.status, 409);
    assert!(
        e.body["message"]
            .as_str()
            .unwrap()
            .starts_with("App is locked by one or more deployments"),
        "{}",
        e.body
    );
    assert_eq!(e.body["deployments"][0]["id"], d.id);
    // The agent goes away before it reports the kill.
    w.liveness("a1", Liveness::Offline, 1);
    w.advance(1000);
    assert!(w.core.app("/web").is_none(), "the stop is done for the API");
    assert!(w.core.apps().all(|a| a.deployment.is_none()));
    w.core.create_app(w.now, def).unwrap();
}

#[test]
fn a_scaling_kill_answers_with_a_real_deployment_that_completes() {
    let mut w = World::new();
    w.agent("a1", "north");
    w.create(&simple_app(2));
    for (a, t) in w.launches() {
        w.run(&a, &t);
    }
    w.advance(1000);
    assert!(w.core.app("/web").unwrap().deployment.is_none());
    let victim = w.core.tasks(Some("/web")).next().unwrap().id.to_string();
    w.core.take_effects();
    let (killed, deployments) = w
        .core
        .kill_tasks(w.now, std::slice::from_ref(&victim), true, false)
        .unwrap();
    assert_eq!(*killed[0].id, *victim);
    let [d] = deployments.as_slice() else {
        panic!("one deployment: {deployments:?}")
    };
    assert_eq!(d.action, DeploymentAction::ScaleApplication);
    assert_eq!(w.core.app("/web").unwrap().def.instances, 1);
    // One instance is left and it is ready: the deployment is done at once, and says so.
    let events: Vec<Value> = w
        .core
        .take_effects()
        .into_iter()
        .filter_map(|e| match e {
            Effect::Event(v) => Some(v),
            _ => None,
        })
        .collect();
    for kind in ["deployment_info", "deployment_success"] {
        assert!(
            events
                .iter()
                .any(|e| e["eventType"] == kind && (e["plan"]["id"] == d.id || e["id"] == d.id)),
            "{kind}: {events:?}"
        );
    }
}

#[test]
fn writes_a_failed_commit_kept_are_stored_by_the_next_without_undoing_newer_ones() {
    let mut w = World::new();
    w.agent("a1", "north");
    w.create(&simple_app(1));
    let (_, task) = w.launches().remove(0);
    let first = w.core.take_writes();
    assert!(
        first
            .iter()
            .any(|x| x.table == Table::Tasks && x.key == task)
    );
    // The commit failed: the writes go back; a newer write of the task supersedes its own.
    w.status("a1", &task, TaskState::Running, None);
    w.core.keep_writes(first.clone());
    let again = w.core.take_writes();
    let stored: Vec<&Write> = again.iter().filter(|x| x.key == task).collect();
    assert_eq!(stored.len(), 1);
    let t: TaskRecord = serde_json::from_slice(stored[0].value.as_ref().unwrap()).unwrap();
    assert_eq!(t.state(), TaskState::Running, "the newer record wins");
    for w0 in &first {
        assert!(
            again.iter().any(|x| x.table == w0.table && x.key == w0.key),
            "{} kept",
            w0.key
        );
    }
}

#[test]
fn a_staged_task_s_host_ports_are_neither_placed_again_nor_offered_to_a_framework() {
    let mut w = World::new();
    w.agent("a1", "north");
    let fixed = r#"{"id":"/fixed","instances":1,"cpus":0.1,"mem":32,
        "container":{"type":"DOCKER","docker":{"image":"busybox","network":"BRIDGE"},
        "portMappings":[{"containerPort":80,"hostPort":31050},{"containerPort":81,"hostPort":0}]}}"#;
    w.commands();
    w.create(fixed);
    let spec = w
        .commands()
        .into_iter()
        .find_map(|(_, c)| match c.kind {
            CommandKind::Launch(spec) => Some(spec),
            _ => None,
        })
        .expect("a launch");
    // The bridge picks the dynamic port itself (as Marathon does from an offer).
    let dynamic = spec.port_mappings[1].host_port;
    assert_eq!(spec.port_mappings[0].host_port, 31050);
    assert!(
        (31000..=31099).contains(&dynamic) && dynamic != 31050,
        "{dynamic}"
    );
    // Staged, not reported yet: a framework's offer leaves both ports out.
    let sub = serde_json::json!({ "type": "SUBSCRIBE", "subscribe": { "framework_info": {
        "user": "root", "name": "fw" } } });
    let fid = w.core.subscribe(w.now, &mesos(&sub), STREAM).unwrap();
    w.core.offer_now(w.now);
    let offer = w
        .core
        .take_effects()
        .into_iter()
        .find_map(|e| match e {
            Effect::Framework { event, .. } if event["type"] == "OFFERS" => {
                Some(event["offers"]["offers"][0].clone())
            }
            _ => None,
        })
        .expect("an offer");
    let ranges: Vec<(u64, u64)> = offer["resources"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["name"] == "ports")
        .flat_map(|r| r["ranges"]["range"].as_array().unwrap().clone())
        .map(|r| (r["begin"].as_u64().unwrap(), r["end"].as_u64().unwrap()))
        .collect();
    for p in [31050u64, u64::from(dynamic)] {
        assert!(
            !ranges.iter().any(|&(b, e)| (b..=e).contains(&p)),
            "port {p} offered: {ranges:?}"
        );
    }
    assert!(ranges.iter().any(|&(b, e)| (b..=e).contains(&31099)));
    // And a second app asking for the same fixed port does not get this agent (the offer
    // holds the rest, so decline it first).
    let offer_id = offer["id"].clone();
    w.core
        .call(
            w.now,
            Some(STREAM),
            &call_of(
                &fid,
                serde_json::json!({ "type": "DECLINE", "decline": { "offer_ids": [offer_id],
                "filters": { "refuse_seconds": 3600 } } }),
            ),
        )
        .unwrap();
    w.create(&fixed.replace("/fixed", "/fixed2"));
    assert!(w.launches().is_empty(), "31050 is held by the staged task");
}

#[test]
fn status_uuids_are_stored_as_hex_and_old_arrays_still_load() {
    let mut w = World::new();
    w.agent("a1", "north");
    w.create(&simple_app(1));
    let (_, task) = w.launches().remove(0);
    let uuid = w.status("a1", &task, TaskState::Running, None);
    let t = w.core.task(&task).unwrap().clone();
    let mut v = serde_json::to_value(&t).unwrap();
    let hex: String = uuid.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(v["seen"], serde_json::json!([hex]));
    let back: TaskRecord = serde_json::from_value(v.clone()).unwrap();
    assert_eq!(back.seen.as_slice(), [uuid]);
    // As stores before the hex form wrote it.
    v["seen"] = serde_json::json!([uuid.to_vec()]);
    let old: TaskRecord = serde_json::from_value(v).unwrap();
    assert_eq!(old.seen.as_slice(), [uuid]);
}

#[test]
fn a_placement_that_found_no_room_waits_for_room_and_an_agent_joining_gets_it_at_once() {
    let mut w = World::new();
    w.agent("a1", "north");
    let unique = r#"{"id":"/u","instances":2,"cpus":0.1,"mem":32,"constraints":[["hostname","UNIQUE"]],
        "container":{"type":"DOCKER","docker":{"image":"busybox","network":"HOST"}}}"#;
    w.create(unique);
    assert_eq!(w.launches().len(), 1, "one agent: one instance");
    let waiting = w.core.app("/u").unwrap().no_room;
    assert!(waiting.is_some(), "the pass found no room for the second");
    // Ticks with nothing changed do not search again.
    w.advance(1000);
    w.advance(1000);
    assert_eq!(w.core.app("/u").unwrap().no_room, waiting);
    assert!(w.launches().is_empty());
    // After the safety interval it searches again (and still finds nothing).
    w.advance(RETRY_NO_ROOM_MS);
    assert_ne!(w.core.app("/u").unwrap().no_room, waiting);
    assert!(w.launches().is_empty());
    // A new agent is room: placed when its liveness settles, not at a later tick.
    w.agent("a2", "south");
    let l = w.launches();
    assert_eq!(l.len(), 1);
    assert_eq!(l[0].0, "a2");
    assert!(w.core.app("/u").unwrap().no_room.is_none());
}

#[test]
fn a_deploy_bigger_than_a_chunk_launches_one_chunk_per_step() {
    let mut w = World::new();
    let n = LAUNCH_CHUNK + 100;
    // simple_app takes half a CPU: four instances per agent.
    for i in 0..n / 4 + 1 {
        w.agent(&format!("a{i:04}"), "north");
    }
    w.create(&simple_app(n as u32));
    // The owner settles every step before its commit: still the first step.
    w.core.settle(w.now);
    assert_eq!(
        w.launches().len(),
        LAUNCH_CHUNK,
        "the first step places one chunk"
    );
    assert!(w.core.more_to_launch(), "and says there is more");
    w.core.settle(w.now);
    assert_eq!(w.launches().len(), 100, "the next step places the rest");
    assert!(!w.core.more_to_launch());
    w.core.settle(w.now);
    assert!(w.launches().is_empty());
}

#[test]
fn a_snapshot_keeps_what_it_saw_while_the_owner_changes_shared_records() {
    let mut w = World::new();
    w.agent("a1", "north");
    w.create(&simple_app(1));
    let (agent, task) = w.launches().remove(0);
    w.status(&agent, &task, TaskState::Starting, None);
    let snapshot = w.core.snapshot();
    // The task and the agent are shared, not copied...
    assert!(std::ptr::eq(
        snapshot.task(&task).unwrap(),
        w.core.task(&task).unwrap()
    ));
    // ...until the owner changes them: then the owner has its own copy, and the read still
    // sees what it was given.
    w.status(&agent, &task, TaskState::Running, Some(true));
    w.liveness(&agent, Liveness::Offline, 1);
    assert_eq!(w.core.task(&task).unwrap().state(), TaskState::Running);
    assert_eq!(snapshot.task(&task).unwrap().state(), TaskState::Starting);
    let liveness = |c: &Core| c.agents().find(|a| *a.id == *agent).unwrap().liveness;
    assert_eq!(liveness(&snapshot), AgentLiveness::Online);
    assert_ne!(liveness(&w.core), AgentLiveness::Online);
    // A task the owner drops stays in the snapshot.
    w.core.delete_app(w.now, "/web", true).unwrap();
    w.advance(1000);
    assert!(snapshot.task(&task).is_some());
}

/// `simple_app` under another id, with `dependencies`.
fn app_with(id: &str, instances: u32, deps: &[&str]) -> AppDefinition {
    let mut v: serde_json::Value = serde_json::from_str(&simple_app(instances)).unwrap();
    v["id"] = json!(id);
    v["dependencies"] = json!(deps);
    AppDefinition::from_value(v, None).unwrap()
}

#[test]
fn every_change_is_a_version_kept_up_to_the_limit_stored_and_restored_and_a_rollback_deploys_it() {
    let mut w = World::new();
    w.agent("a1", "north");
    w.core.set_max_versions(3);
    w.create(&simple_app(1));
    let first = w.core.app("/web").unwrap().version.clone();
    let first_def = w.core.app("/web").unwrap().def.clone();
    for (i, mem) in [80.0, 96.0, 112.0].into_iter().enumerate() {
        w.advance(1000);
        let mut def = w.core.app("/web").unwrap().def.clone();
        def.mem = mem;
        w.core.update_app(w.now, def, true).unwrap();
        assert_eq!(
            w.core.app_versions("/web").unwrap().len(),
            (i + 2).min(3),
            "bounded by max_versions"
        );
    }
    let versions = w.core.app_versions("/web").unwrap();
    assert_eq!(
        versions[0],
        w.core.app("/web").unwrap().version,
        "newest first"
    );
    assert!(!versions.contains(&first), "the oldest went: {versions:?}");
    // A scale is a version, not a config change.
    w.advance(1000);
    let config_at = w.core.app("/web").unwrap().last_config_change_at.clone();
    let mut def = w.core.app("/web").unwrap().def.clone();
    def.instances = 2;
    w.core.update_app(w.now, def, true).unwrap();
    let app = w.core.app("/web").unwrap();
    assert_eq!(app.last_config_change_at, config_at);
    assert_eq!(app.last_scaling_at, app.version);
    // Stored and restored, the dropped ones deleted from the store.
    let mut store = crate::store::MemoryStore::new();
    store.commit(&w.core.take_writes()).unwrap();
    assert_eq!(store.count(Table::AppVersions), 3);
    let restored = Core::load(0, &store).unwrap();
    assert_eq!(restored.app_versions("/web"), w.core.app_versions("/web"));
    // Back to the 96 MiB version: a restart deployment of that definition, a new version.
    let v96 = versions
        .iter()
        .find(|v| w.core.app_version("/web", v).unwrap().mem == 96.0)
        .unwrap()
        .clone();
    w.advance(1000);
    let d = w.core.rollback_app(w.now, "/web", &v96, true).unwrap();
    assert_eq!(d.action, DeploymentAction::RestartApplication);
    let app = w.core.app("/web").unwrap();
    assert_eq!(app.def.mem, 96.0);
    assert_eq!(app.def.instances, 1, "the version's instances too");
    assert_ne!(app.version, v96, "a rollback is a new version");
    let e = w
        .core
        .rollback_app(w.now, "/web", &first, true)
        .unwrap_err();
    assert_eq!(e.status, 404);
    assert!(e.body["message"].as_str().unwrap().contains(&first));
    assert_ne!(first_def.mem, 96.0);
}

#[test]
fn a_group_deploys_in_dependency_order_and_is_deleted_dependants_first_in_one_deployment() {
    let mut w = World::new();
    w.agent("a1", "north");
    let change = groups::GroupChange {
        id: "/shop".into(),
        apps: Some(vec![
            app_with("/shop/web", 1, &["/shop/db"]),
            app_with("/shop/db", 1, &[]),
        ]),
        replace_apps: true,
        groups: vec![GroupRecord {
            id: "/shop".into(),
            dependencies: vec![],
            version: String::new(),
        }],
        ..Default::default()
    };
    let (plan, d) = w
        .core
        .change_group(w.now, change, true, false, false)
        .unwrap();
    let d = d.unwrap();
    assert_eq!(plan["steps"][0]["actions"][0]["app"], "/shop/db");
    assert_eq!(plan["steps"][1]["actions"][0]["app"], "/shop/web");
    assert_eq!(
        w.core
            .app("/shop/web")
            .unwrap()
            .deployment
            .as_ref()
            .unwrap()
            .id,
        d.id
    );
    assert_eq!(w.core.deployments_json().len(), 1, "one deployment");
    // Only the dependency launches; the dependant waits until it is healthy.
    let first = w.launches();
    assert_eq!(first.len(), 1);
    assert!(first[0].1.starts_with("shop_db."));
    w.status("a1", &first[0].1, TaskState::Starting, None);
    w.advance(1000);
    assert!(w.launches().is_empty(), "web waits for db's deployment");
    // No health checks: running is ready.
    w.status("a1", &first[0].1, TaskState::Running, None);
    w.advance(1000);
    let second = w.launches();
    assert_eq!(second.len(), 1);
    assert!(second[0].1.starts_with("shop_web."));
    assert!(w.core.app("/shop/db").unwrap().deployment.is_none());
    w.run("a1", &second[0].1);
    w.advance(1000);
    assert!(w.core.deployments_json().is_empty());
    // The tree.
    assert!(w.core.group_exists("/shop"));
    assert_eq!(w.core.subgroups("/"), vec!["/shop".to_string()]);
    assert_eq!(w.core.group_apps("/shop").count(), 2);
    // A cycle is refused, naming the apps.
    let cyclic = groups::GroupChange {
        id: "/loop".into(),
        apps: Some(vec![
            app_with("/loop/a", 1, &["/loop/b"]),
            app_with("/loop/b", 1, &["/loop/a"]),
        ]),
        replace_apps: true,
        ..Default::default()
    };
    let e = w
        .core
        .change_group(w.now, cyclic, true, false, false)
        .unwrap_err();
    assert_eq!(e.status, 422);
    assert!(e.body.to_string().contains("/loop/a"), "{}", e.body);
    assert!(w.core.app("/loop/a").is_none(), "nothing of it applied");
    // Scale by 2, then delete: web's kill comes before db's.
    let scale = groups::GroupChange {
        id: "/shop".into(),
        scale_by: Some(2.0),
        ..Default::default()
    };
    w.core
        .change_group(w.now, scale, false, false, false)
        .unwrap();
    assert_eq!(w.core.app("/shop/web").unwrap().def.instances, 2);
    assert_eq!(w.core.app("/shop/db").unwrap().def.instances, 2);
    w.core.delete_group(w.now, "/shop", true).unwrap();
    let kills: Vec<String> = w
        .commands()
        .into_iter()
        .filter_map(|(_, c)| match c.kind {
            CommandKind::Kill(k) => Some(k.task_id.to_string()),
            _ => None,
        })
        .collect();
    assert!(!kills.is_empty());
    assert!(
        kills.iter().all(|k| k.starts_with("shop_web.")),
        "dependants first: {kills:?}"
    );
    assert_eq!(w.core.deployments_json().len(), 1);
}

#[test]
fn a_rolling_restart_waits_for_the_new_task_s_readiness_before_killing_the_old_one() {
    let mut w = World::new();
    w.agent("a1", "north");
    let mut v: serde_json::Value = serde_json::from_str(&simple_app(1)).unwrap();
    v["container"]["portMappings"][0]["name"] = json!("http-api");
    v["readinessChecks"] = json!([{ "path": "/ready", "intervalSeconds": 2, "timeoutSeconds": 1 }]);
    let def = AppDefinition::from_value(v, None).unwrap();
    let spec = def.task_spec("web.x").unwrap();
    let r = spec.readiness.as_ref().unwrap();
    assert_eq!(
        (r.path.as_deref(), r.port_index, r.interval_s),
        (Some("/ready"), 0, 2)
    );
    assert_eq!(r.ready_statuses.as_slice(), &[200], "Marathon's default");
    w.core.create_app(w.now, def).unwrap();
    let ready_status = |w: &mut World, task: &str, ready: bool| {
        w.status_ready("a1", task, TaskState::Running, None, Some(ready));
    };
    let (_, old) = w.launches().remove(0);
    ready_status(&mut w, &old, false);
    assert!(
        w.core.app("/web").unwrap().deployment.is_some(),
        "not ready: not deployed"
    );
    let d = w.core.deployments_json();
    assert_eq!(
        d[0]["currentActions"][0]["readinessCheckResults"],
        json!([{ "name": "readinessCheck", "taskId": old, "ready": false, "lastResponse": null }])
    );
    ready_status(&mut w, &old, true);
    w.advance(1000);
    assert!(
        w.core.app("/web").unwrap().deployment.is_none(),
        "ready: deployed"
    );
    // A restart: the new task runs but is not ready, so the old one stays.
    w.core.restart_app(w.now, "/web", false).unwrap();
    let (_, new) = w.launches().remove(0);
    ready_status(&mut w, &new, false);
    w.advance(5000);
    let killed = |w: &mut World| {
        w.commands()
            .into_iter()
            .any(|(_, c)| matches!(c.kind, CommandKind::Kill(ref k) if k.task_id.as_str() == old))
    };
    assert!(
        !killed(&mut w),
        "the old task stays while the new one is not ready"
    );
    ready_status(&mut w, &new, true);
    w.advance(1000);
    assert!(killed(&mut w), "killed once the new one is ready");
    // Only one readiness check, naming a port mapping.
    let mut bad: serde_json::Value = serde_json::from_str(&simple_app(1)).unwrap();
    bad["readinessChecks"] = json!([{ "portName": "nope" }, {}]);
    let Err(crate::app::Invalid::Violations(v)) = AppDefinition::from_value(bad, None) else {
        panic!("accepted");
    };
    let paths: Vec<&str> = v.iter().map(|x| x.path.as_str()).collect();
    assert!(paths.contains(&"/readinessChecks"), "{v:?}");
    assert!(paths.contains(&"/readinessChecks(0)/portName"), "{v:?}");
}

#[test]
fn the_offers_summary_runs_each_agent_s_offer_through_marathon_s_funnel() {
    let mut w = World::new();
    w.agent("a1", "north");
    w.agent("a2", "south");
    // Fits nowhere on cpus (2 each); a2 is also ruled out by the constraint first.
    let mut v: serde_json::Value = serde_json::from_str(&simple_app(1)).unwrap();
    v["cpus"] = json!(3);
    v["constraints"] = json!([["zone", "LIKE", "north"]]);
    w.core
        .create_app(w.now, AppDefinition::from_value(v, None).unwrap())
        .unwrap();
    let s = w.core.offers_summary("/web", w.now);
    assert_eq!(s["processedOffersCount"], json!(2));
    assert_eq!(s["unusedOffersCount"], json!(2));
    let reason = |name: &str| {
        s["rejectSummaryLastOffers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["reason"] == name)
            .cloned()
            .unwrap()
    };
    assert_eq!(
        reason("UnfulfilledConstraint"),
        json!({ "reason": "UnfulfilledConstraint", "processed": 2, "declined": 1 })
    );
    assert_eq!(
        reason("InsufficientCpus"),
        json!({ "reason": "InsufficientCpus", "processed": 1, "declined": 1 })
    );
    assert_eq!(reason("InsufficientMemory")["processed"], json!(0));
    assert!(s["lastUsedOfferAt"].is_null(), "nothing launched");
}
