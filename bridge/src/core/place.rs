//! Placement: which agents take an app's new instances, and with which host ports. Spread by
//! fewest instances of the app, then fewest tasks; constraints as Marathon reads them;
//! resources and ports from the capacity ledger.

#[allow(unused_imports)]
use super::*;

impl Core {
    /// Chooses agents for up to `count` instances of `app_id`, with the host ports each gets
    /// (fixed ones as asked, dynamic ones picked from what the agent has free). Resources and
    /// ports come from the capacity [`Ledger`], the same one framework offers are cut from.
    ///
    /// With `among`, only those agents are considered, and the app's instances are counted
    /// only on them and on the other agents of the same host names: for
    /// constraints that are [`Constraint::per_host`], the same choices as a pass over every
    /// agent would make among them.
    pub(super) fn place(
        &self,
        app_id: &str,
        count: usize,
        among: Option<&BTreeSet<Name>>,
    ) -> Vec<(String, Vec<u16>)> {
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
        fn candidate(a: &AgentRecord) -> Candidate<'_> {
            Candidate {
                agent_id: &a.id,
                hostname: &a.hostname,
                attributes: &a.attributes,
            }
        }
        let group_by = constraints
            .iter()
            .any(|c| matches!(c, Constraint::GroupBy(_)));
        // Every agent is a candidate value only for GROUP_BY (which balances over all values).
        let all: Vec<Candidate> = if group_by {
            self.agents.values().map(|a| candidate(a)).collect()
        } else {
            Vec::new()
        };
        // Only the agents this pass looks at get their tasks counted: a pass costs the agents
        // it considers, not the fleet's tasks.
        let mut ledger = Ledger::lazy(self);
        // The app's live instances the pass must count: per agent (the spread) and as peers
        // (the constraints' counts).
        let live = |t: &TaskRecord| *t.app_id == *app_id && !t.killing && !t.inactive;
        let mut same_app: HashMap<&str, usize, FixedHash> = HashMap::default();
        let mut peers: Vec<Candidate> = Vec::new();
        match among {
            None => {
                for t in self.app_tasks(app_id).filter(|t| live(t)) {
                    if let Some(a) = self.agents.get(&*t.agent_id) {
                        *same_app.entry(&*a.id).or_default() += 1;
                        peers.push(candidate(a));
                    }
                }
            }
            Some(among) => {
                let considered: Vec<&AgentRecord> = among
                    .iter()
                    .filter_map(|id| self.agents.get(&**id).map(|a| &**a))
                    .collect();
                for a in &considered {
                    let mine = self.by_agent.get(&a.id).into_iter().flatten();
                    for _ in mine
                        .filter_map(|tid| self.tasks.get(tid))
                        .filter(|t| live(t))
                    {
                        *same_app.entry(&*a.id).or_default() += 1;
                        peers.push(candidate(a));
                    }
                }
                // Per-host-name counts (UNIQUE, MAX_PER on hostname) also see the instances
                // on other agents of the same host names.
                let per_host_counts = constraints
                    .iter()
                    .any(|c| matches!(c, Constraint::Unique(_) | Constraint::MaxPer(..)));
                if per_host_counts {
                    let others: BTreeSet<&str> = considered
                        .iter()
                        .flat_map(|a| self.by_hostname.get(&a.hostname).into_iter().flatten())
                        .map(|id| &**id)
                        .filter(|id| !among.contains(*id))
                        .collect();
                    for a in others.into_iter().filter_map(|id| self.agents.get(id)) {
                        let theirs = self.by_agent.get(&a.id).into_iter().flatten();
                        for _ in theirs
                            .filter_map(|tid| self.tasks.get(tid))
                            .filter(|t| live(t))
                        {
                            peers.push(candidate(a));
                        }
                    }
                }
            }
        }
        let mut counts = placement::PeerCounts::new(&constraints, &peers, &all);
        // The ports an instance would get on `a`, if it fits there.
        let fit = |a: &AgentRecord, ledger: &mut Ledger, counts: &placement::PeerCounts| {
            if !placement::allowed(&constraints, &candidate(a), counts) {
                return None;
            }
            ledger.load(self, &a.id);
            if !ledger.free_amount(a)?.fits(&need) {
                return None;
            }
            if wanted.is_empty() {
                return Some(Vec::new());
            }
            ledger::pick_ports(&ledger.free(a)?, &wanted, a.port_cursor)
        };
        // Spread: fewest instances of this app, then fewest tasks, then agent id. An agent's
        // key only grows as it takes instances, and (without GROUP_BY, whose allowed values
        // move as groups fill) an agent refused once stays refused for the rest of the pass:
        // resources and per-value counts only grow. So a heap makes the same choices as a
        // scan of every agent, in n log m instead of n * m.
        let online: Vec<&AgentRecord> = match among {
            None => self.agents.values().map(|a| &**a).collect(),
            Some(ids) => ids
                .iter()
                .filter_map(|id| self.agents.get(&**id).map(|a| &**a))
                .collect(),
        };
        let online: Vec<&AgentRecord> = online
            .into_iter()
            .filter(|a| a.online() && a.offer.is_some())
            .collect();
        let key = |a: &str, ledger: &Ledger, same_app: &HashMap<&str, usize, FixedHash>| {
            (
                same_app.get(a).copied().unwrap_or(0),
                ledger.task_count(self, a),
            )
        };
        let mut heap: BinaryHeap<Reverse<(usize, usize, &str)>> = if group_by {
            BinaryHeap::new()
        } else {
            // An agent the constraints refuse now stays refused for the pass (without
            // GROUP_BY): it never enters the heap. Built at once (linear), not push by push.
            online
                .iter()
                .filter(|a| placement::allowed(&constraints, &candidate(a), &counts))
                .map(|a| {
                    let (n, t) = key(&a.id, &ledger, &same_app);
                    Reverse((n, t, &*a.id))
                })
                .collect::<Vec<_>>()
                .into()
        };
        let mut out = Vec::new();
        while out.len() < count {
            let pick = if group_by {
                // The best key so far, with the ports the instance would get there.
                type Best<'k> = Option<((usize, usize, &'k str), Vec<u16>)>;
                let mut best: Best = None;
                for a in &online {
                    let (n, t) = key(&a.id, &ledger, &same_app);
                    let k = (n, t, &*a.id);
                    if best.as_ref().is_none_or(|b| k < b.0)
                        && let Some(ports) = fit(a, &mut ledger, &counts)
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
                        && let Some(ports) = fit(a, &mut ledger, &counts)
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
            if let Some(a) = self.agents.get(agent_id) {
                counts.add(&candidate(a));
            }
            out.push((agent_id.to_string(), ports));
        }
        out
    }

    /// Marathon's `processedOffersSummary` for app `app_id` in `/v2/queue`, best effort: the
    /// agents' current offers (Outpost matches launches against what each agent last offered)
    /// run through Marathon's funnel of reasons, each counting the offers that reached it
    /// (`processed`) and those it turned away (`declined`). `lastUsedOfferAt` is the app's
    /// latest placement since the bridge started.
    pub fn offers_summary(&self, app_id: &str, now: Millis) -> Value {
        let Some(app) = self.apps.get(app_id) else {
            return Value::Null;
        };
        let def = &app.def;
        let constraints: Vec<Constraint> = def
            .constraints
            .iter()
            .filter_map(|c| Constraint::parse(c).ok())
            .collect();
        let peers: Vec<Candidate> = self
            .app_tasks(app_id)
            .filter(|t| !t.killing && !t.inactive)
            .filter_map(|t| self.agents.get(&*t.agent_id))
            .map(|a| Candidate {
                agent_id: &a.id,
                hostname: &a.hostname,
                attributes: &a.attributes,
            })
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
        let counts = placement::PeerCounts::new(&constraints, &peers, &all);
        let wanted: Vec<u16> = def
            .port_mappings()
            .iter()
            .map(|p| p.host_port as u16)
            .collect();
        let mut ledger = Ledger::lazy(self);
        let offered: Vec<&AgentRecord> = self
            .agents
            .values()
            .map(|a| &**a)
            .filter(|a| a.liveness.connected() && a.offer.is_some())
            .collect();
        // Marathon's reasons in its order; each filter sees what the ones before let through.
        const REASONS: [&str; 6] = [
            "AgentMaintenance",
            "UnfulfilledConstraint",
            "InsufficientCpus",
            "InsufficientMemory",
            "InsufficientDisk",
            "InsufficientPorts",
        ];
        let mut funnel = [(0u64, 0u64); 6];
        let mut used = 0u64;
        for a in &offered {
            ledger.load(self, &a.id);
            let free = ledger.free_amount(a).unwrap_or_default();
            let candidate = Candidate {
                agent_id: &a.id,
                hostname: &a.hostname,
                attributes: &a.attributes,
            };
            // The first reason that turns the offer away, if any.
            let declined_by = if !a.online() {
                Some(0)
            } else if !placement::allowed(&constraints, &candidate, &counts) {
                Some(1)
            } else if free.cpus + 1e-9 < def.cpus {
                Some(2)
            } else if free.mem + 1e-9 < def.mem {
                Some(3)
            } else if free.disk + 1e-9 < def.disk {
                Some(4)
            } else if !wanted.is_empty()
                && ledger
                    .free(a)
                    .and_then(|f| ledger::pick_ports(&f, &wanted, a.port_cursor))
                    .is_none()
            {
                Some(5)
            } else {
                None
            };
            let reached = declined_by.map_or(REASONS.len(), |i| i + 1);
            for stage in funnel.iter_mut().take(reached) {
                stage.0 += 1;
            }
            if let Some(i) = declined_by {
                funnel[i].1 += 1;
            }
            let passed = declined_by.is_none();
            used += u64::from(passed);
        }
        let reasons: Vec<Value> = REASONS
            .iter()
            .zip(funnel)
            .map(|(r, (processed, declined))| json!({ "reason": r, "processed": processed, "declined": declined }))
            .collect();
        let processed = offered.len() as u64;
        let last_launch = app.last_launch_ms;
        json!({
            "processedOffersCount": processed,
            "unusedOffersCount": processed - used,
            "lastUnusedOfferAt": (processed > used).then(|| rfc3339(now)),
            "lastUsedOfferAt": last_launch.map(rfc3339),
            "rejectSummaryLastOffers": reasons,
            "rejectSummaryLaunchAttempt": reasons,
        })
    }
}
