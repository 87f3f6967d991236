//! Agents: their hello (host name, attributes, address), offers and liveness; an agent that
//! comes (back) online is reconciled. And what the API asks of one agent: a pull, a drain,
//! an undrain (each answering 404 or 503 alike when the agent is unknown or unreachable).

#[allow(unused_imports)]
use super::*;

impl Core {
    // ---------------------------------------------------------------- agents (MQTT side)

    pub(super) fn agent_entry(&mut self, now: Millis, id: &str) -> &mut AgentRecord {
        let name = match self.agents.get_key_value(id) {
            Some((name, _)) => name.clone(),
            None => {
                // A new agent's host name is its id until its hello says otherwise.
                let name: Name = id.into();
                self.index_hostname(&name, None, &name);
                name
            }
        };
        let a = self.agents.entry(name.clone()).or_insert_with(|| {
            Arc::new(AgentRecord {
                id: name.clone(),
                hostname: name,
                attributes: BTreeMap::new(),
                liveness: AgentLiveness::Unknown,
                address: None,
                started_at_ms: 0,
                last_seen_ms: now,
                unreachable_since_ms: None,
                offer: None,
                port_cursor: 0,
            })
        });
        Arc::make_mut(a)
    }

    /// An agent's hello (retained): its host name and attributes.
    pub fn on_hello(&mut self, now: Millis, h: &Hello) {
        let a = self.agent_entry(now, &h.agent_id);
        if *a.hostname != *h.hostname.as_str() {
            let (id, after): (Name, Name) = (a.id.clone(), h.hostname.as_str().into());
            let before = std::mem::replace(&mut a.hostname, after.clone());
            self.index_hostname(&id, Some(&before), &after);
        }
        let Some(a) = self.agents.get_mut(h.agent_id.as_str()).map(Arc::make_mut) else {
            return;
        };
        a.address = h.address.as_ref().map(|ip| ip.to_string());
        a.attributes = h
            .attributes
            .iter()
            .map(|kv| (kv.name.to_string(), kv.value.to_string()))
            .collect();
        a.last_seen_ms = now;
        let host = a.hostname.clone();
        for tid in self.agent_task_ids(&h.agent_id) {
            if let Some(t) = self.tasks.get_mut(&tid).map(Arc::make_mut) {
                t.host = host.clone();
            }
        }
        self.save_agent(&h.agent_id);
        // Its attributes may now satisfy an app's constraints.
        self.capacity_freed(Some(&h.agent_id));
    }

    /// An agent's offer.
    pub fn on_offer(&mut self, now: Millis, o: &Offer) {
        let amount = |r: &wire::Resources| Amount {
            cpus: r.cpus,
            mem: r.mem_mib,
            disk: r.disk_mib,
        };
        let a = self.agent_entry(now, &o.agent_id);
        a.last_seen_ms = now;
        if a.attributes.is_empty() {
            a.attributes = o
                .attributes
                .iter()
                .map(|kv| (kv.name.to_string(), kv.value.to_string()))
                .collect();
        }
        let before = a.offer.as_ref().map(|o| (o.available, o.port_count));
        a.offer = Some(OfferView {
            seq: o.seq,
            available: amount(&o.available),
            used: amount(&o.used),
            ranges: o.available.ports.iter().map(|r| (r.begin, r.end)).collect(),
            used_ranges: o.used.ports.iter().map(|r| (r.begin, r.end)).collect(),
            port_count: o
                .available
                .ports
                .iter()
                .map(|r| (r.end as usize + 1).saturating_sub(r.begin as usize))
                .sum(),
        });
        let after = a.offer.as_ref().map(|o| (o.available, o.port_count));
        let more = match (before, after) {
            (None, Some(_)) => true,
            (Some((b, bp)), Some((n, np))) => {
                n.cpus > b.cpus || n.mem > b.mem || n.disk > b.disk || np > bp
            }
            _ => false,
        };
        if more {
            self.capacity_freed(Some(&o.agent_id));
        }
    }

    /// An agent's liveness: online (reconcile its tasks) or offline (its tasks become
    /// UNREACHABLE).
    pub fn on_state(&mut self, now: Millis, s: &AgentState) {
        let id = s.agent_id.to_string();
        let a = self.agent_entry(now, &id);
        let was = a.liveness;
        let restarted = a.started_at_ms != s.started_at_ms;
        a.last_seen_ms = now;
        match s.liveness {
            Liveness::Offline => {
                a.liveness = AgentLiveness::Offline;
                if was == AgentLiveness::Offline {
                    return;
                }
                a.unreachable_since_ms = Some(now);
                tracing::warn!(agent = %id, "agent is unreachable; its tasks are UNREACHABLE");
                self.framework_agent_lost(now, &id);
                for tid in self.agent_task_ids(&id) {
                    let Some(t) = self.tasks.get_mut(&tid).map(Arc::make_mut) else {
                        continue;
                    };
                    if t.unreachable_since_ms.is_some() {
                        continue;
                    }
                    t.unreachable_since_ms = Some(now);
                    self.status_event(now, &tid, TaskState::Unreachable, "agent unreachable");
                    self.save_task(&tid);
                }
            }
            Liveness::Online | Liveness::Draining => {
                a.liveness = if s.liveness == Liveness::Online {
                    AgentLiveness::Online
                } else {
                    AgentLiveness::Draining
                };
                a.started_at_ms = s.started_at_ms;
                a.unreachable_since_ms = None;
                if was != a.liveness || restarted {
                    tracing::info!(agent = %id, "agent is {}; reconciling its tasks", a.liveness.name());
                    self.reconcile_agent(now, &id);
                    // New capacity: instances waiting for an agent are placed when this
                    // batch settles, not at the next tick.
                    self.capacity_freed(Some(&id));
                    let apps: Vec<Name> = self.apps.keys().cloned().collect();
                    self.dirty.extend(apps);
                }
            }
        }
        self.save_agent(&id);
    }

    /// Asks `agent` for the state of every task it has (finds orphans) and of every task the
    /// bridge believes it has (finds lost ones: answered TASK_UNKNOWN).
    pub(super) fn reconcile_agent(&mut self, now: Millis, agent: &str) {
        let cid = format!("r-{}", self.ids.uuid().simple());
        self.command(
            now,
            agent,
            &cid,
            CommandKind::Reconcile(Reconcile::default()),
        );
        let ids = self.agent_task_ids(agent);
        for chunk in ids.chunks(wire::MAX_RECONCILE_TASKS) {
            let mut r = Reconcile::default();
            for id in chunk {
                let _ = r
                    .task_ids
                    .push(wire::TaskId::new(id).expect("task ids fit"));
            }
            let cid = format!("r-{}", self.ids.uuid().simple());
            self.command(now, agent, &cid, CommandKind::Reconcile(r));
        }
    }

    /// `POST /v2/agents/{id}/drain`: the agent takes no more launches (its liveness is
    /// draining at once, so nothing is placed on it meanwhile) and every Marathon task on it is
    /// killed to be replaced elsewhere; frameworks' tasks stay (their frameworks decide).
    /// Answers the tasks it moved.
    pub fn drain_agent(&mut self, now: Millis, agent_id: &str) -> Result<Value, ApiError> {
        self.reachable_agent(agent_id, "it cannot be drained now")?;
        let cid = format!("d-{}", self.ids.uuid().simple());
        self.command(
            now,
            agent_id,
            &cid,
            CommandKind::Drain(wire::Drain {
                policy: wire::DrainPolicy::KeepTasks,
            }),
        );
        if let Some(a) = self.agents.get_mut(agent_id).map(Arc::make_mut) {
            a.liveness = AgentLiveness::Draining;
        }
        self.save_agent(agent_id);
        let moved: Vec<String> = self
            .agent_task_ids(agent_id)
            .into_iter()
            .filter(|t| {
                self.tasks
                    .get(t)
                    .is_some_and(|r| !r.killing && !r.state().is_terminal())
            })
            .map(|t| t.to_string())
            .collect();
        for t in &moved {
            tracing::info!(agent = agent_id, task = %t, "drain: killing the task to move it");
            self.kill(now, t, None);
        }
        Ok(json!({ "agentId": agent_id, "moved": moved }))
    }

    /// `POST /v2/agents/{id}/undrain`: the agent takes launches again.
    pub fn undrain_agent(&mut self, now: Millis, agent_id: &str) -> Result<Value, ApiError> {
        self.reachable_agent(agent_id, "it cannot be undrained now")?;
        let cid = format!("u-{}", self.ids.uuid().simple());
        self.command(now, agent_id, &cid, CommandKind::Undrain);
        if let Some(a) = self.agents.get_mut(agent_id).map(Arc::make_mut) {
            a.liveness = AgentLiveness::Online;
        }
        self.save_agent(agent_id);
        self.capacity_freed(Some(agent_id));
        let apps: Vec<Name> = self.apps.keys().cloned().collect();
        self.dirty.extend(apps);
        Ok(json!({ "agentId": agent_id }))
    }

    /// 404 for an unknown agent; 503 naming it and since when, when it is not connected.
    pub(super) fn reachable_agent(&self, agent_id: &str, what: &str) -> Result<(), ApiError> {
        let Some(agent) = self.agents.get(agent_id) else {
            return Err(ApiError::not_found(&format!("Agent '{agent_id}'")));
        };
        if matches!(
            agent.liveness,
            AgentLiveness::Online | AgentLiveness::Draining
        ) {
            return Ok(());
        }
        let since = agent.unreachable_since_ms.unwrap_or(agent.last_seen_ms);
        Err(ApiError {
            status: 503,
            body: json!({
                "message": format!("agent {agent_id} is unreachable (since {}): {what}", rfc3339(since)),
                "agentId": agent_id,
                "unreachableSince": agent.unreachable_since_ms.map(rfc3339),
            }),
        })
    }

    /// Sends `agent_id` a pull of `image`; answers what `POST /v2/agents/{id}/pull` shows.
    pub fn pull_command(
        &mut self,
        now: Millis,
        agent_id: &str,
        image: &str,
        force: bool,
    ) -> Result<serde_json::Value, ApiError> {
        self.reachable_agent(agent_id, "it cannot pull now")?;
        let Ok(reference) = wire::ImageRef::new(image) else {
            return Err(ApiError::invalid(
                json!([{ "path": "/image", "errors": [format!(
                "{} bytes; an image reference has at most {}", image.len(), wire::ImageRef::LIMIT
            )] }]),
            ));
        };
        if image.is_empty() || image.contains(char::is_whitespace) {
            return Err(ApiError::invalid(
                json!([{ "path": "/image", "errors": [format!(
                "{image:?} is not an image reference"
            )] }]),
            ));
        }
        let cid = format!("p-{}", self.ids.uuid().simple());
        self.command(
            now,
            agent_id,
            &cid,
            CommandKind::Pull(wire::PullImage {
                image: reference,
                force,
            }),
        );
        Ok(json!({ "agentId": agent_id, "image": image, "force": force, "commandId": cid }))
    }
}
