//! The capacity ledger: per agent, what the bridge has handed out of the agent's latest offer
//! (resources with arithmetic, and a set of host ports), from Marathon's tasks, Mesos
//! frameworks' tasks and the offers frameworks hold. The only place that computes what an
//! agent has left: placement, framework offers and `/master/slaves` all read it, so they can
//! never disagree (a port held by a staged task is neither placed twice nor offered).

use std::collections::{BTreeSet, HashMap};

use super::{AgentRecord, Core};
use crate::placement::Amount;

/// What is handed out on one agent.
#[derive(Debug, Clone, Default)]
pub struct Usage {
    /// Resources of tasks (Marathon's and frameworks').
    pub tasks: Amount,
    /// Resources on offer to frameworks.
    pub offered: Amount,
    /// Host ports of tasks: reported by the agent, or assigned at launch and not reported yet.
    pub task_ports: BTreeSet<u16>,
    /// Host ports on offer to frameworks.
    pub offered_ports: BTreeSet<u16>,
    /// How many tasks (Marathon's and frameworks').
    pub count: usize,
}

impl Usage {
    /// Everything held: tasks and offers.
    pub fn held(&self) -> Amount {
        self.tasks + self.offered
    }

    /// Whether `port` is held by a task or an offer.
    pub fn holds(&self, port: u16) -> bool {
        self.task_ports.contains(&port) || self.offered_ports.contains(&port)
    }
}

/// What an agent has left for a new task or offer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Free {
    /// Resources.
    pub amount: Amount,
    /// Host port ranges.
    pub ranges: Vec<(u16, u16)>,
}

impl Free {
    /// How many ports the ranges hold.
    pub fn port_count(&self) -> usize {
        self.ranges
            .iter()
            .map(|&(b, e)| usize::from(e - b) + 1)
            .sum()
    }

    /// Whether `port` is free.
    pub fn has_port(&self, port: u16) -> bool {
        self.ranges.iter().any(|&(b, e)| (b..=e).contains(&port))
    }
}

/// The ledger of every agent: built from the core in one pass over its tasks and offers
/// ([`Ledger::of`]), or, for a placement pass that looks at a few agents, from the frameworks'
/// holdings at once and each agent's Marathon tasks when it is first looked at
/// ([`Ledger::lazy`], then [`Ledger::load`]).
#[derive(Debug, Clone, Default)]
pub struct Ledger {
    agents: HashMap<String, Usage>,
    /// With [`Ledger::lazy`]: the agents whose Marathon tasks are counted in already.
    loaded: Option<std::collections::HashSet<String>>,
}

/// What a Marathon task holds: its resources and its ports (reported, else assigned).
fn task_holding(t: &super::TaskRecord) -> (Amount, &[u16]) {
    let ports = if t.host_ports.is_empty() {
        &t.fixed_ports
    } else {
        &t.host_ports
    };
    (
        Amount {
            cpus: t.cpus,
            mem: t.mem,
            disk: t.disk,
        },
        ports,
    )
}

impl Ledger {
    /// The ledger as the core stands.
    pub fn of(core: &Core) -> Self {
        let mut l = Self::default();
        for t in core.tasks.values() {
            let (amount, ports) = task_holding(t);
            l.hold_task(&t.agent_id, amount, ports.iter().copied());
        }
        l.hold_frameworks(core);
        l
    }

    /// A ledger with the frameworks' holdings only; an agent's Marathon tasks are counted in by
    /// [`Ledger::load`] before it is asked about.
    pub fn lazy(core: &Core) -> Self {
        let mut l = Self {
            loaded: Some(Default::default()),
            ..Self::default()
        };
        l.hold_frameworks(core);
        l
    }

    /// Counts `agent`'s Marathon tasks in (once; a no-op for a full ledger).
    pub fn load(&mut self, core: &Core, agent: &str) {
        let Some(loaded) = &mut self.loaded else {
            return;
        };
        if !loaded.insert(agent.to_string()) {
            return;
        }
        for id in core.by_agent.get(agent).into_iter().flatten() {
            if let Some(t) = core.tasks.get(id) {
                let (amount, ports) = task_holding(t);
                self.hold_task(agent, amount, ports.iter().copied());
            }
        }
    }

    /// How many tasks `agent` holds (without loading it: from the core's index).
    pub fn task_count(&self, core: &Core, agent: &str) -> usize {
        let marathon = match &self.loaded {
            Some(loaded) if !loaded.contains(agent) => {
                core.by_agent.get(agent).map_or(0, |s| s.len())
            }
            _ => 0,
        };
        marathon + self.count(agent)
    }

    fn hold_frameworks(&mut self, core: &Core) {
        let l = self;
        for t in core.fw_tasks.values() {
            l.hold_task(&t.agent_id, t.amount, t.ports.iter().copied());
        }
        for o in core.frameworks.values().flat_map(|f| f.offers.values()) {
            l.hold_offer(&o.agent_id, o.amount, &o.ranges);
        }
    }

    /// What `agent` has left in resources (ports not counted: see [`Ledger::free`]).
    pub fn free_amount(&self, agent: &AgentRecord) -> Option<Amount> {
        let offer = agent.offer.as_ref()?;
        let held = self
            .agents
            .get(&*agent.id)
            .map(Usage::held)
            .unwrap_or_default();
        Some(offer.available + offer.used - held)
    }

    /// How many tasks `agent` holds.
    pub fn count(&self, agent: &str) -> usize {
        self.agents.get(agent).map_or(0, |u| u.count)
    }

    /// What is handed out on `agent` (nothing if it has no entry).
    pub fn usage(&self, agent: &str) -> Usage {
        self.agents.get(agent).cloned().unwrap_or_default()
    }

    /// Records a task's resources and ports on `agent`.
    pub fn hold_task(&mut self, agent: &str, amount: Amount, ports: impl IntoIterator<Item = u16>) {
        let u = self.entry(agent);
        u.tasks += amount;
        u.task_ports.extend(ports);
        u.count += 1;
    }

    /// Records an offer's resources and port ranges on `agent`.
    pub fn hold_offer(&mut self, agent: &str, amount: Amount, ranges: &[(u16, u16)]) {
        let u = self.entry(agent);
        u.offered += amount;
        for &(b, e) in ranges {
            u.offered_ports.extend(b..=e);
        }
    }

    fn entry(&mut self, agent: &str) -> &mut Usage {
        if !self.agents.contains_key(agent) {
            self.agents.insert(agent.to_string(), Usage::default());
        }
        self.agents.get_mut(agent).expect("inserted above")
    }

    /// What `agent` has left: its capacity (free plus used in its latest offer) less what is
    /// held, and the ports its offer shows free less the ports held. `None` without an offer.
    pub fn free(&self, agent: &AgentRecord) -> Option<Free> {
        let offer = agent.offer.as_ref()?;
        let empty = Usage::default();
        let u = self.agents.get(&*agent.id).unwrap_or(&empty);
        let amount = offer.available + offer.used - u.held();
        let mut ranges = Vec::new();
        for &(b, e) in &offer.ranges {
            // Cost by held ports in the range, not by the range's size.
            let mut held: Vec<u16> = u
                .task_ports
                .range(b..=e)
                .chain(u.offered_ports.range(b..=e))
                .copied()
                .collect();
            held.sort_unstable();
            held.dedup();
            let mut start = u32::from(b);
            for p in held {
                if u32::from(p) > start {
                    ranges.push((start as u16, p - 1));
                }
                start = u32::from(p) + 1;
            }
            if start <= u32::from(e) {
                ranges.push((start as u16, e));
            }
        }
        Some(Free { amount, ranges })
    }
}

/// Host ports for a task's mappings (`0`: any) out of `free`, in the mappings' order: fixed
/// ones as asked, each `0` the next free port at or after `cursor`, wrapping (so a port just
/// freed is not given again at once, while dockerd may still release it). `None` if they do
/// not fit.
pub fn pick_ports(free: &Free, wanted: &[u16], cursor: u16) -> Option<Vec<u16>> {
    if wanted.is_empty() {
        return Some(Vec::new());
    }
    let mut taken: BTreeSet<u16> = BTreeSet::new();
    for &p in wanted.iter().filter(|&&p| p != 0) {
        if !free.has_port(p) || !taken.insert(p) {
            return None;
        }
    }
    let mut pool: Vec<u16> = free
        .ranges
        .iter()
        .flat_map(|&(b, e)| b..=e)
        .filter(|p| !taken.contains(p))
        .collect();
    let dynamic = wanted.iter().filter(|&&p| p == 0).count();
    if pool.len() < dynamic {
        return None;
    }
    let at = pool.partition_point(|&p| p < cursor);
    pool.rotate_left(at);
    let mut next = pool.into_iter();
    wanted
        .iter()
        .map(|&p| if p == 0 { next.next() } else { Some(p) })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_ranges_leave_out_every_held_port() {
        let agent = AgentRecord {
            id: "a1".into(),
            hostname: "a1".into(),
            attributes: Default::default(),
            liveness: super::super::AgentLiveness::Online,
            started_at_ms: 0,
            last_seen_ms: 0,
            unreachable_since_ms: None,
            address: None,
            port_cursor: 0,
            offer: Some(super::super::OfferView {
                available: Amount {
                    cpus: 2.0,
                    mem: 1024.0,
                    disk: 0.0,
                },
                ranges: smallvec::smallvec![(31000, 31009), (65530, 65535)],
                ..Default::default()
            }),
        };
        let mut l = Ledger::default();
        l.hold_task(
            "a1",
            Amount {
                cpus: 0.5,
                mem: 128.0,
                disk: 0.0,
            },
            [31000, 31004, 65535],
        );
        l.hold_offer(
            "a1",
            Amount {
                cpus: 1.0,
                mem: 0.0,
                disk: 0.0,
            },
            &[(31005, 31006)],
        );
        let f = l.free(&agent).unwrap();
        assert_eq!(
            f.ranges,
            vec![(31001, 31003), (31007, 31009), (65530, 65534)]
        );
        assert_eq!(f.port_count(), 11);
        assert!((f.amount.cpus - 0.5).abs() < 1e-9 && (f.amount.mem - 896.0).abs() < 1e-9);
    }

    #[test]
    fn ports_are_picked_in_order_from_the_cursor_around_held_ones() {
        let free = Free {
            amount: Amount::default(),
            ranges: vec![(31000, 31002), (31005, 31006)],
        };
        assert_eq!(
            pick_ports(&free, &[0, 31001, 0], 31001),
            Some(vec![31002, 31001, 31005])
        );
        // Wraps around.
        assert_eq!(pick_ports(&free, &[0, 0], 31006), Some(vec![31006, 31000]));
        // A fixed port that is not free, twice the same, or too many.
        assert_eq!(pick_ports(&free, &[31003], 0), None);
        assert_eq!(pick_ports(&free, &[31000, 31000], 0), None);
        assert_eq!(pick_ports(&free, &[0; 6], 0), None);
    }
}
