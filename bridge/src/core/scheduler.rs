//! The scheduler: per app, how many tasks to launch and which to kill (scaling, rolling
//! replacement within the upgrade strategy, deletes), and launches onto the agents placement
//! chose. `settle` runs it for the apps that changed, `tick` for all of them and the timers.

#[allow(unused_imports)]
use super::*;

impl Core {
    // ---------------------------------------------------------------- the scheduler

    /// Schedules the apps whose tasks changed since the last call (a deployment may be done,
    /// an instance may be missing), and those with more to launch than one chunk placed. The
    /// owner calls it once per step (a group of jobs), so a burst of status updates costs one
    /// pass per app, not one per update.
    pub fn settle(&mut self, now: Millis) {
        let next = std::mem::take(&mut self.launch_next);
        self.dirty.extend(next.into_iter().map(Name::from));
        for id in std::mem::take(&mut self.dirty) {
            self.schedule_app(now, &id);
        }
        self.chunked.clear();
    }

    /// Whether the last [`Core::settle`] (or tick) left launches for the next step: a deploy
    /// bigger than one chunk ([`LAUNCH_CHUNK`]) placed a whole chunk and has more to place.
    /// The owner then runs another step (a settle and a commit) without waiting for a job.
    pub fn more_to_launch(&self) -> bool {
        !self.launch_next.is_empty()
    }

    /// Runs the scheduler: unreachable timers, launches, kills, deployments. Call after every
    /// change and every second or so.
    pub fn tick(&mut self, now: Millis) {
        self.unreachable_timers(now);
        self.launch_timeouts(now);
        self.framework_timers(now);
        let ids: Vec<Name> = self.apps.keys().cloned().collect();
        for id in ids {
            self.schedule_app(now, &id);
        }
        // Frameworks get what Marathon's apps left.
        self.make_offers(now);
    }

    /// One app's pass: how many to launch and which to kill, or the next step of its delete.
    pub(super) fn schedule_app(&mut self, now: Millis, id: &str) {
        if self.waits_for_earlier_step(id) {
            return;
        }
        if self.schedule_app_from_tally(now, id) {
            return;
        }
        let Some(app) = self.apps.get(id) else { return };
        let has_checks = !app.def.health_checks.is_empty();
        let live: Vec<&TaskRecord> = self
            .app_tasks(id)
            .filter(|t| !t.killing && !t.inactive)
            .collect();
        if app.deleting {
            let all: Vec<Name> = self
                .app_tasks(id)
                .filter(|t| !t.killing)
                .map(|t| t.id.clone())
                .collect();
            for t in all {
                self.kill(now, &t, None);
            }
            // A kill sent to an agent that went away since is recorded, and the stop is done
            // for the API: the agent's reconcile kills the task when it returns (no app owns it).
            let stranded: Vec<Name> = self
                .app_tasks(id)
                .filter(|t| t.killing)
                .filter(|t| {
                    t.unreachable_since_ms.is_some()
                        || self
                            .agents
                            .get(&t.agent_id)
                            .is_none_or(|a| !a.liveness.connected())
                })
                .map(|t| t.id.clone())
                .collect();
            for t in stranded {
                self.status_event(
                    now,
                    &t,
                    TaskState::Killed,
                    "killed while its agent was unreachable",
                );
                self.remove_task(now, &t);
            }
            if self.app_tasks(id).next().is_none() {
                let Some(app) = self.apps.remove(id) else {
                    return;
                };
                self.forget_versions(id);
                if let Some(d) = &app.deployment {
                    self.part_done(now, d, id);
                }
                self.event(now, "app_terminated_event", json!({ "appId": id }));
                self.save_app(id);
            }
            return;
        }
        let n = app.def.instances as usize;
        let current = app.last_config_change_at.clone();
        let (new, old): (Vec<&TaskRecord>, Vec<&TaskRecord>) =
            live.iter().partition(|t| t.version == current);
        let ready = |ts: &[&TaskRecord]| ts.iter().filter(|t| t.ready(has_checks)).count();
        let (ready_new, ready_old) = (ready(&new), ready(&old));
        let mut to_kill: Vec<Name> = Vec::new();
        let mut to_launch = 0usize;
        if old.is_empty() {
            if new.len() < n {
                to_launch = n - new.len();
            } else if new.len() > n {
                // Youngest first (Marathon's default killSelection).
                let mut by_age = new.clone();
                by_age.sort_by_key(|t| std::cmp::Reverse((t.staged_at_ms, t.id.clone())));
                to_kill.extend(by_age.iter().take(new.len() - n).map(|t| t.id.clone()));
            }
        } else {
            if new.len() > n {
                // Scaled down in the middle of a replacement: new tasks beyond the instances
                // go too, youngest first, as when nothing is being replaced.
                let mut by_age = new.clone();
                by_age.sort_by_key(|t| std::cmp::Reverse((t.staged_at_ms, t.id.clone())));
                to_kill.extend(by_age.iter().take(new.len() - n).map(|t| t.id.clone()));
            }
            let u = &app.def.upgrade_strategy;
            let max_total = n + (n as f64 * u.maximum_over_capacity).floor() as usize;
            let min_ready = (n as f64 * u.minimum_health_capacity).ceil() as usize;
            to_launch = n
                .saturating_sub(new.len())
                .min(max_total.saturating_sub(live.len()));
            let mut ready_left = ready_new + ready_old;
            // Not-ready old tasks first, then ready ones while enough stay ready.
            let mut victims = old.clone();
            victims.sort_by_key(|t| (t.ready(has_checks), t.staged_at_ms));
            for v in victims {
                let r = v.ready(has_checks);
                if !r || ready_left > min_ready || (ready_new >= n && new.len() >= n) {
                    to_kill.push(v.id.clone());
                    if r {
                        ready_left -= 1;
                    }
                }
            }
            if to_launch == 0 && to_kill.is_empty() && new.len() < n {
                // Both bounds at their limit (e.g. minimumHealthCapacity 1 and
                // maximumOverCapacity 0): make room by one.
                to_kill.push(old[0].id.clone());
            }
        }
        let done = old.is_empty() && new.len() == n && ready_new == n;
        for t in to_kill {
            self.kill(now, &t, None);
        }
        if to_launch > 0 && self.apps.get(id).is_some_and(|a| now >= a.delay_until_ms) {
            self.launch_many(now, id, to_launch);
        }
        if done {
            self.finish_deployment(now, id);
        }
    }

    /// The app has its instances, all of its current version and ready: its deployment (if one
    /// runs) is done.
    fn finish_deployment(&mut self, now: Millis, id: &str) {
        if let Some(d) = self.apps.get_mut(id).and_then(|a| a.deployment.take()) {
            tracing::info!(app = %id, deployment = %d.id, "deployment finished");
            self.part_done(now, &d, id);
            self.save_app(id);
        }
    }

    /// The steady cases from the app's tally alone, without looking at its tasks: nothing of an
    /// older version runs and there are no more tasks than instances (launch what is missing;
    /// finish the deployment once all are ready). Returns false for every other case (a delete,
    /// a scale-down, a rolling replacement), which the full pass handles.
    fn schedule_app_from_tally(&mut self, now: Millis, id: &str) -> bool {
        let tally = self.tally(id);
        let Some(app) = self.apps.get(id) else {
            return true;
        };
        let n = app.def.instances as usize;
        if app.deleting || tally.other > 0 || tally.current > n {
            return false;
        }
        if tally.current < n {
            if now >= app.delay_until_ms {
                self.launch_many(now, id, n - tally.current);
            }
            return true;
        }
        if tally.current_ready == n {
            self.finish_deployment(now, id);
        }
        true
    }

    /// Places up to `count` instances of `app_id` and launches them; returns how many were
    /// placed. Per-agent usage and the app's per-value instance counts are computed once and
    /// updated per placement, so a pass costs instances × agents.
    pub(super) fn launch_many(&mut self, now: Millis, app_id: &str, count: usize) -> usize {
        if self.chunked.contains(app_id) {
            // One chunk per app and step: the rest waits for the next step.
            self.launch_next.insert(app_id.to_string());
            return 0;
        }
        let epoch = self.capacity_epoch;
        let Some(app) = self.apps.get(app_id) else {
            return 0;
        };
        // After a pass that found no room, the next looks only at the agents where room may
        // have appeared since, when the constraints allow (no GROUP_BY, counts only per host
        // name): a waiting instance costs the agents that changed, not the fleet. A full pass
        // still runs every RETRY_NO_ROOM_MS.
        let mut among = None;
        let mut full_at = now;
        if let Some((at_epoch, at)) = app.no_room
            && now < at + RETRY_NO_ROOM_MS
        {
            if at_epoch == epoch {
                // Nothing has made room since the last pass found none.
                return 0;
            }
            let per_host = app
                .def
                .constraints
                .iter()
                .all(|c| Constraint::parse(c).is_ok_and(|c| c.per_host()));
            if per_host && let Some(agents) = self.freed_since(at_epoch) {
                among = Some(agents);
                full_at = at;
            }
        }
        // A big deploy launches in chunks, one per owner step: the first launches are stored
        // and sent while the rest are still to be placed, and status updates are taken in
        // between. A chunk is at least a few thousand, and at most eight passes for a fleet
        // (each pass costs the online agents).
        let chunk = count.min(LAUNCH_CHUNK.max(self.agents.len() / 8));
        let placements = self.place(app_id, chunk, among.as_ref());
        let n = placements.len();
        if let Some(app) = self.apps.get_mut(app_id) {
            app.no_room = (n < chunk).then_some((epoch, full_at));
        }
        for (agent_id, ports) in placements {
            self.launch_on(now, app_id, &agent_id, &ports);
        }
        if n == chunk && chunk < count {
            // A whole chunk found room: the next step places the next one.
            self.chunked.insert(app_id.to_string());
            self.launch_next.insert(app_id.to_string());
        }
        n
    }

    /// Launches one instance of `app_id` on `agent_id` with host `ports` (one per port mapping):
    /// stores the task, then sends the command.
    pub(super) fn launch_on(&mut self, now: Millis, app_id: &str, agent_id: &str, ports: &[u16]) {
        let (Some(app), Some(agent)) = (self.apps.get(app_id), self.agents.get(agent_id)) else {
            return;
        };
        let def = &app.def;
        let need = Amount {
            cpus: def.cpus,
            mem: def.mem,
            disk: def.disk,
        };
        let agent_id = agent_id.to_string();
        let task_id = format!("{}.{}", task_prefix(app_id), self.ids.uuid());
        let spec = match def.task_spec(&task_id) {
            Ok(mut s) => {
                // The ports placement picked, as Marathon sends Mesos the ports it took from
                // the offer: the agent binds exactly these.
                for (m, &p) in s.port_mappings.iter_mut().zip(ports) {
                    m.host_port = p;
                }
                s
            }
            Err(e) => {
                tracing::error!(app = %app_id, error = %e, "cannot build the task spec");
                return;
            }
        };
        let cid = format!("l-{}", self.ids.uuid().simple());
        tracing::debug!(app = %app_id, task = %task_id, agent = %agent_id, "placed (fewest of this app, then fewest tasks)");
        let t = TaskRecord {
            id: task_id.clone().into(),
            app_id: app_id.into(),
            agent_id: agent_id.clone().into(),
            host: agent.hostname.clone(),
            version: app.last_config_change_at.clone(),
            state: TaskState::Staging,
            host_ports: Inline::new(),
            fixed_ports: Inline::from_slice(ports),
            service_ports: def
                .port_mappings()
                .iter()
                .map(|p| p.service_port as u16)
                .collect(),
            ip: None,
            staged_at_ms: now,
            started_at_ms: None,
            health: None,
            seen: Seen::new(),
            unreachable_since_ms: None,
            inactive: false,
            killing: false,
            launch_command: cid.clone().into(),
            cpus: need.cpus,
            mem: need.mem,
            disk: need.disk,
            ready: def.readiness_checks.first().map(|_| false),
            counted: None,
            shown: 0,
        };
        if let Some(&last) = ports
            .iter()
            .zip(def.port_mappings())
            .filter(|(_, m)| m.host_port == 0)
            .map(|(p, _)| p)
            .next_back()
            && let Some(a) = self.agents.get_mut(agent_id.as_str()).map(Arc::make_mut)
        {
            a.port_cursor = last.wrapping_add(1);
        }
        self.insert_task(t);
        self.save_task(&task_id);
        if let Some(app) = self.apps.get_mut(app_id) {
            app.last_launch_ms = Some(now);
        }
        self.command(now, &agent_id, &cid, CommandKind::Launch(spec));
        self.status_event(now, &task_id, TaskState::Staging, "");
    }
}
