//! Placement: which agents take an app's new instances, and with which host ports. Spread by
//! fewest instances of the app, then fewest tasks; constraints as Marathon reads them;
//! resources and ports from the capacity ledger.

#[allow(unused_imports)]
use super::*;

impl Core {
    /// Chooses agents for up to `count` instances of `app_id`, with the host ports each gets
    /// (fixed ones as asked, dynamic ones picked from what the agent has free). Resources and
    /// ports come from the capacity [`Ledger`], the same one framework offers are cut from.
    pub(super) fn place(&self, app_id: &str, count: usize) -> Vec<(String, Vec<u16>)> {
        let Some(app) = self.apps.get(app_id) else {
            return Vec::new();
        };
        let def = &app.def;
        let need = Amount {
            cpus: def.cpus,
            mem: def.mem,
            disk: def.disk,
        };
        let constraints: Vec<Constraint> = def
            .constraints
            .iter()
            .filter_map(|c| Constraint::parse(c).ok())
            .collect();
        let wanted: Vec<u16> = def
            .port_mappings()
            .iter()
            .map(|p| p.host_port as u16)
            .collect();
        let all: Vec<Candidate> = self
            .agents
            .values()
            .map(|a| Candidate {
                agent_id: &a.id,
                hostname: &a.hostname,
                attributes: &a.attributes,
            })
            .collect();
        let by_id: HashMap<&str, &Candidate> = all.iter().map(|c| (c.agent_id, c)).collect();
        let mut ledger = Ledger::of(self);
        let mut same_app: HashMap<&str, usize> = HashMap::new();
        let mut peers: Vec<Candidate> = Vec::new();
        for t in self.app_tasks(app_id) {
            if !t.killing && !t.inactive {
                *same_app.entry(t.agent_id.as_str()).or_default() += 1;
                if let Some(c) = by_id.get(t.agent_id.as_str()) {
                    peers.push((*c).clone());
                }
            }
        }
        let mut counts = placement::PeerCounts::new(&constraints, &peers, &all);
        // The ports an instance would get on `a`, if it fits there.
        let fit = |a: &AgentRecord, ledger: &Ledger, counts: &placement::PeerCounts| {
            let free = ledger.free(a)?;
            let allowed = by_id
                .get(a.id.as_str())
                .is_some_and(|c| placement::allowed(&constraints, c, counts));
            if !free.amount.fits(&need) || !allowed {
                return None;
            }
            ledger::pick_ports(&free, &wanted, a.port_cursor)
        };
        // Spread: fewest instances of this app, then fewest tasks, then agent id. An agent's
        // key only grows as it takes instances, and (without GROUP_BY, whose allowed values
        // move as groups fill) an agent refused once stays refused for the rest of the pass:
        // resources and per-value counts only grow. So a heap makes the same choices as a
        // scan of every agent, in n log m instead of n * m.
        let group_by = constraints
            .iter()
            .any(|c| matches!(c, Constraint::GroupBy(_)));
        let online: Vec<&AgentRecord> = self
            .agents
            .values()
            .filter(|a| a.online() && a.offer.is_some())
            .collect();
        let key = |a: &str, ledger: &Ledger, same_app: &HashMap<&str, usize>| {
            (same_app.get(a).copied().unwrap_or(0), ledger.count(a))
        };
        let mut heap: BinaryHeap<Reverse<(usize, usize, &str)>> = BinaryHeap::new();
        if !group_by {
            for a in &online {
                let (n, t) = key(&a.id, &ledger, &same_app);
                heap.push(Reverse((n, t, a.id.as_str())));
            }
        }
        let mut out = Vec::new();
        while out.len() < count {
            let pick = if group_by {
                // The best key so far, with the ports the instance would get there.
                type Best<'k> = Option<((usize, usize, &'k str), Vec<u16>)>;
                let mut best: Best = None;
                for a in &online {
                    let (n, t) = key(&a.id, &ledger, &same_app);
                    let k = (n, t, a.id.as_str());
                    if best.as_ref().is_none_or(|b| k < b.0)
                        && let Some(ports) = fit(a, &ledger, &counts)
                    {
                        best = Some((k, ports));
                    }
                }
                best.map(|(k, ports)| (k.2, ports))
            } else {
                loop {
                    let Some(Reverse((_, _, id))) = heap.pop() else {
                        break None;
                    };
                    if let Some(a) = self.agents.get(id)
                        && let Some(ports) = fit(a, &ledger, &counts)
                    {
                        break Some((id, ports));
                    }
                }
            };
            let Some((agent_id, ports)) = pick else {
                tracing::debug!(app = %app_id, placed = out.len(), wanted = count, "no agent fits");
                break;
            };
            ledger.hold_task(agent_id, need, ports.iter().copied());
            *same_app.entry(agent_id).or_default() += 1;
            if !group_by {
                let (n, t) = key(agent_id, &ledger, &same_app);
                heap.push(Reverse((n, t, agent_id)));
            }
            if let Some(c) = by_id.get(agent_id) {
                counts.add(c);
            }
            out.push((agent_id.to_string(), ports));
        }
        out
    }
}
