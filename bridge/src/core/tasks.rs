//! Tasks: the status state machine (status updates, duplicates, acknowledgements, failures
//! and backoff, kills), rejected launches, and the timers that end tasks: the launch timeout
//! and the unreachable strategy.

#[allow(unused_imports)]
use super::*;

impl Core {
    /// A command reply: a rejected launch fails its task.
    pub fn on_reply(&mut self, now: Millis, r: &CommandReply) {
        let Outcome::Rejected(rej) = &r.outcome else {
            return;
        };
        tracing::warn!(command = %r.command_id, code = ?rej.code, message = %rej.message, "command rejected");
        *self
            .stats
            .commands_refused
            .entry(reject_code_name(rej.code))
            .or_default() += 1;
        if rej.code == wire::RejectCode::Replay {
            // A redelivered command the agent had carried out (its statuses tell the rest).
            return;
        }
        if self.framework_launch_rejected(now, &r.command_id, &rej.message) {
            return;
        }
        let Some(tid) = self.by_command.get(r.command_id.as_str()).cloned() else {
            return;
        };
        if rej.code == wire::RejectCode::DuplicateTask {
            return; // the agent already has it: a re-sent launch
        }
        let state = match rej.code {
            wire::RejectCode::InvalidField | wire::RejectCode::FieldTooLong => TaskState::Error,
            _ => TaskState::Failed,
        };
        self.task_ended(
            now,
            &tid,
            state,
            &format!("launch rejected: {}", rej.message),
            true,
        );
    }

    /// A status update; returns the acknowledgement to publish (after the writes are stored).
    pub fn on_status(&mut self, now: Millis, s: &TaskStatus) {
        self.status_updates += 1;
        if self.is_framework_task(&s.task_id) {
            // Acknowledged to the agent once the framework acknowledges.
            self.on_framework_status(now, s);
            return;
        }
        self.ack(s);
        let tid = s.task_id.to_string();
        let state = s.state;
        let Some(t) = self.tasks.get_mut(tid.as_str()).map(Arc::make_mut) else {
            if state == TaskState::Unknown || state.is_terminal() {
                return;
            }
            // A task no app owns (expunged, or from before a crash): kill it.
            tracing::warn!(task = %tid, agent = %s.agent_id, "killing an orphan task");
            self.kill_command(now, &s.agent_id, s.task_id.clone(), None);
            return;
        };
        if t.seen.contains(&s.uuid) {
            self.stats.statuses_duplicate += 1;
            return;
        }
        t.seen.push(s.uuid);
        if t.seen.len() > SEEN {
            t.seen.remove(0);
        }
        if *t.agent_id != *s.agent_id.as_str() {
            return;
        }
        if state == TaskState::Unknown {
            // Unknown to its agent: lost, unless the bridge was killing it anyway.
            let failure = !t.killing;
            self.task_ended(
                now,
                &tid,
                TaskState::Lost,
                "the agent does not know the task",
                failure,
            );
            return;
        }
        let was_unreachable = t.unreachable_since_ms.take().is_some();
        if t.inactive && !state.is_terminal() {
            // Replaced while unreachable: the stale one goes.
            self.kill(now, &tid, None);
            return;
        }
        if !s.host_ports.is_empty() {
            t.host_ports = s.host_ports.iter().copied().collect();
        }
        if let Some(ip) = &s.container_ip {
            t.ip = Some(ip.to_string());
        }
        if s.ready.is_some() && t.ready.is_some() {
            t.ready = s.ready;
        }
        let prev = t.state();
        t.state = state;
        let first_running = state == TaskState::Running && t.started_at_ms.is_none();
        if state == TaskState::Running && (prev != TaskState::Running || t.started_at_ms.is_none())
        {
            t.started_at_ms = Some(s.timestamp_ms.max(1));
        }
        let staged_at = t.staged_at_ms;
        let health_changed = match s.healthy {
            Some(h) => {
                let health = t.health.get_or_insert_with(Box::default);
                let changed = health.alive != Some(h);
                health.alive = Some(h);
                if h {
                    health.consecutive_failures = 0;
                    health.first_success_ms.get_or_insert(now);
                    health.last_success_ms = Some(now);
                } else {
                    health.consecutive_failures += 1;
                    health.last_failure_ms = Some(now);
                    health.last_failure_cause = s.message.as_ref().map(|m| m.to_string());
                }
                changed
            }
            None => false,
        };
        if state != TaskState::Running
            && let Some(health) = &mut t.health
        {
            health.alive = None;
        }
        let (app_id, version, killing) = (t.app_id.clone(), t.version.clone(), t.killing);
        let message = s
            .message
            .as_ref()
            .map(|m| m.to_string())
            .unwrap_or_default();
        if prev != state || was_unreachable {
            self.status_event(now, &tid, state, &message);
        }
        if first_running {
            self.observe(
                super::Latency::LaunchToRunning { framework: false },
                staged_at,
                now,
            );
        }
        if health_changed {
            self.event(
                now,
                "health_status_changed_event",
                json!({ "appId": app_id, "taskId": tid, "instanceId": tid, "version": version, "alive": s.healthy }),
            );
        }
        let draining = self
            .agents
            .get(s.agent_id.as_str())
            .is_some_and(|a| a.liveness == AgentLiveness::Draining);
        match state {
            TaskState::Running => {
                let ready = {
                    let has_checks = self
                        .apps
                        .get(&app_id)
                        .is_some_and(|a| !a.def.health_checks.is_empty());
                    self.tasks[tid.as_str()].ready(has_checks)
                };
                if ready
                    && let Some(app) = self.apps.get_mut(&app_id)
                    && app.failures > 0
                {
                    app.failures = 0;
                    app.delay_until_ms = 0;
                    self.save_app(&app_id);
                }
            }
            s if s.is_terminal() && (killing || draining) => {
                self.remove_task(now, &tid);
            }
            TaskState::Error
            | TaskState::Lost
            | TaskState::Dropped
            | TaskState::Gone
            | TaskState::GoneByOperator => {
                self.task_ended(now, &tid, state, &message, true);
                return;
            }
            TaskState::Failed | TaskState::Killed => {
                // The agent restarts the task itself (same id, its backoff): remember the
                // failure, keep the task.
                self.record_failure(now, &tid, state, &message);
            }
            _ => {}
        }
        if self.tasks.contains_key(tid.as_str()) {
            self.save_task(&tid);
        }
        // A task became ready or went away: the app's deployment may be done, or need more.
        if health_changed || (prev != state && (state == TaskState::Running || state.is_terminal()))
        {
            self.dirty.insert(app_id);
        }
    }

    pub(super) fn ack(&mut self, s: &TaskStatus) {
        let Ok(topic) = Topic::new(&s.agent_id, TopicKind::Ack) else {
            return;
        };
        self.stats.statuses_acknowledged += 1;
        let ack = StatusAck {
            version: PROTOCOL_VERSION,
            task_id: s.task_id.clone(),
            uuid: s.uuid,
        };
        self.effects.push(Effect::Publish {
            topic: topic.to_string(),
            payload: encode_to_vec(&ack),
        });
    }

    pub(super) fn status_event(&mut self, now: Millis, tid: &str, state: TaskState, message: &str) {
        if !self.events_wanted() {
            return;
        }
        let Some(t) = self.tasks.get(tid) else { return };
        let body = json!({
            "slaveId": t.agent_id,
            "taskId": t.id,
            "taskStatus": state.mesos_name(),
            "message": message,
            "appId": t.app_id,
            "host": t.host,
            "ports": t.host_ports,
            "ipAddresses": ip_addresses(t),
            "version": t.version,
        });
        self.event(now, "status_update_event", body);
    }

    pub(super) fn record_failure(
        &mut self,
        now: Millis,
        tid: &str,
        state: TaskState,
        message: &str,
    ) {
        let Some(t) = self.tasks.get(tid) else { return };
        let f = TaskFailure {
            task_id: t.id.to_string(),
            host: t.host.to_string(),
            agent_id: t.agent_id.to_string(),
            state: state.mesos_name().into(),
            message: message.into(),
            at_ms: now,
            version: t.version.to_string(),
        };
        let app_id = t.app_id.clone();
        if let Some(app) = self.apps.get_mut(&app_id) {
            app.last_failure = Some(f);
            self.save_app(&app_id);
        }
    }

    /// A task is gone for good: forget it; with `failure`, count it for the app's backoff.
    pub(super) fn task_ended(
        &mut self,
        now: Millis,
        tid: &str,
        state: TaskState,
        message: &str,
        failure: bool,
    ) {
        let Some(t) = self.tasks.get_mut(tid).map(Arc::make_mut) else {
            return;
        };
        t.state = state;
        self.status_event(now, tid, state, message);
        if failure {
            self.record_failure(now, tid, state, message);
            let app_id = self.tasks[tid].app_id.clone();
            if let Some(app) = self.apps.get_mut(&app_id) {
                app.failures += 1;
                let d = &app.def;
                let delay = (d.backoff_seconds * d.backoff_factor.powi(app.failures as i32 - 1))
                    .min(d.max_launch_delay_seconds);
                app.delay_until_ms = now + (delay * 1000.0) as u64;
                tracing::info!(app = %app_id, failures = app.failures, delay_s = delay, "launch backoff");
                self.save_app(&app_id);
            }
        }
        self.remove_task(now, tid);
    }

    pub(super) fn remove_task(&mut self, _now: Millis, tid: &str) {
        if self.drop_task(tid).is_some() {
            self.save_task(tid);
        }
    }

    pub(super) fn kill(&mut self, now: Millis, tid: &str, grace: Option<u32>) {
        let Some(t) = self.tasks.get_mut(tid).map(Arc::make_mut) else {
            return;
        };
        t.killing = true;
        let agent = t.agent_id.clone();
        let offline = self
            .agents
            .get(&agent)
            .is_none_or(|a| !a.liveness.connected());
        if offline {
            // Nobody to tell: forget it now; if its agent comes back, the task is an orphan
            // and is killed then.
            self.status_event(
                now,
                tid,
                TaskState::Killed,
                "killed while its agent was unreachable",
            );
            self.remove_task(now, tid);
            return;
        }
        self.send_kill(now, tid, grace);
        self.save_task(tid);
    }

    /// Sends the kill of task `tid` to its agent (the task's record is not changed).
    pub(super) fn send_kill(&mut self, now: Millis, tid: &str, grace: Option<u32>) {
        let (Some(t), Ok(task_id)) = (self.tasks.get(tid), wire::TaskId::new(tid)) else {
            return;
        };
        let agent = t.agent_id.clone();
        self.kill_command(now, &agent, task_id, grace);
    }

    /// Marathon's task launch timeout: a task still STAGING or STARTING that long after its
    /// launch (its launch was lost, its image never came, its agent never answered) is killed
    /// and replaced, and the reason goes into the app's `lastTaskFailure`. A task whose agent
    /// is unreachable follows the app's unreachable strategy instead.
    pub(super) fn launch_timeouts(&mut self, now: Millis) {
        let timeout = self.task_launch_timeout();
        let overdue: Vec<Name> = self
            .tasks
            .values()
            .filter(|t| {
                matches!(t.state(), TaskState::Staging | TaskState::Starting)
                    && !t.killing
                    && t.unreachable_since_ms.is_none()
                    && now >= t.staged_at_ms + timeout
            })
            .map(|t| t.id.clone())
            .collect();
        for tid in overdue {
            let message = format!(
                "task launch timeout: not RUNNING within {} s of its launch (task_launch_timeout)",
                timeout / 1000
            );
            tracing::warn!(task = %tid, "{message}: killing and replacing it");
            self.send_kill(now, &tid, None);
            self.task_ended(now, &tid, TaskState::Failed, &message, true);
        }
    }

    pub(super) fn unreachable_timers(&mut self, now: Millis) {
        let mut expunge = Vec::new();
        let mut inactivate = Vec::new();
        // Only agents that are away (or not heard from yet) have unreachable tasks.
        let away: Vec<Name> = self
            .agents
            .values()
            .filter(|a| !a.liveness.connected())
            .flat_map(|a| self.agent_task_ids(&a.id))
            .collect();
        for t in away.iter().filter_map(|id| self.tasks.get(id)) {
            let Some(since) = t.unreachable_since_ms else {
                continue;
            };
            let Some(app) = self.apps.get(&t.app_id) else {
                continue;
            };
            let s = &app.def.unreachable_strategy;
            if now >= since + s.expunge_after_seconds * 1000 {
                expunge.push(t.id.clone());
            } else if !t.inactive && now >= since + s.inactive_after_seconds * 1000 {
                inactivate.push(t.id.clone());
            }
        }
        for id in inactivate {
            tracing::info!(task = %id, "unreachable past inactiveAfterSeconds: replacing it");
            if let Some(t) = self.tasks.get_mut(&id).map(Arc::make_mut) {
                t.inactive = true;
                self.save_task(&id);
            }
        }
        for id in expunge {
            tracing::info!(task = %id, "unreachable past expungeAfterSeconds: expunged");
            self.status_event(
                now,
                &id,
                TaskState::Gone,
                "expunged after being unreachable",
            );
            self.remove_task(now, &id);
        }
    }
}

/// A rejection code's name, for metrics.
pub fn reject_code_name(code: wire::RejectCode) -> &'static str {
    use wire::RejectCode as C;
    match code {
        C::Undecodable => "undecodable",
        C::InvalidField => "invalid_field",
        C::FieldTooLong => "field_too_long",
        C::PortUnavailable => "port_unavailable",
        C::InsufficientResources => "insufficient_resources",
        C::UnknownTask => "unknown_task",
        C::DuplicateTask => "duplicate_task",
        C::Draining => "draining",
        C::StorageFailure => "storage_failure",
        C::UnsupportedVersion => "unsupported_version",
        C::Unauthenticated => "unauthenticated",
        C::Replay => "replay",
        C::StaleEpoch => "stale_epoch",
        C::Busy => "busy",
    }
}
