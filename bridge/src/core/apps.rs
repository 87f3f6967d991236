//! Apps and their deployments, as the Marathon API changes them: create, update (a scale or a
//! rolling restart), restart, delete, kill tasks (with scale), cancel a deployment.

#[allow(unused_imports)]
use super::*;

impl Core {
    // ---------------------------------------------------------------- apps (API side)

    /// Marathon's `api_post_event`: an app was posted or updated through the API.
    pub fn api_post_event(&mut self, now: Millis, client_ip: &str, uri: &str, def: &AppDefinition) {
        let app = serde_json::to_value(def).expect("json");
        self.event(
            now,
            "api_post_event",
            json!({ "clientIp": client_ip, "uri": uri, "appDefinition": app }),
        );
    }

    /// A mapping that asks for any service port (0) keeps the one the app's same mapping
    /// already has, so a definition sent again whole is not a change.
    pub(super) fn keep_service_ports(&self, def: &mut AppDefinition) {
        let Some(current) = self.apps.get(def.id.as_str()) else {
            return;
        };
        let had = current.def.port_mappings().to_vec();
        if let Some(pms) = def.port_mappings_mut() {
            for (pm, old) in pms.iter_mut().zip(had) {
                if pm.service_port == 0 && pm.container_port == old.container_port {
                    pm.service_port = old.service_port;
                }
            }
        }
    }

    pub(super) fn assign_service_ports(&self, def: &mut AppDefinition) {
        let mut used: BTreeSet<u32> = self
            .apps
            .values()
            .filter(|a| a.def.id != def.id)
            .flat_map(|a| a.def.port_mappings().iter().map(|p| p.service_port))
            .collect();
        let mut next = *SERVICE_PORTS.start() as u32;
        if let Some(pms) = def.port_mappings_mut() {
            for pm in pms.iter_mut().filter(|p| p.service_port == 0) {
                while used.contains(&next) && next < *SERVICE_PORTS.end() as u32 {
                    next += 1;
                }
                pm.service_port = next;
                used.insert(next);
            }
        }
    }

    pub(super) fn start_deployment(
        &mut self,
        now: Millis,
        app_id: &str,
        action: DeploymentAction,
        previous: Option<AppDefinition>,
    ) -> Deployment {
        // Its version or its checks may have changed: every task counts anew.
        self.recount(app_id);
        let Some(app) = self.apps.get_mut(app_id) else {
            // Callers start deployments of apps they hold; an id that is not there gets a
            // deployment nobody waits for rather than a panic.
            return Deployment {
                id: self.ids.uuid().to_string(),
                version: rfc3339(now),
                action,
                previous,
                steps: Vec::new(),
            };
        };
        let d = Deployment {
            id: self.ids.uuid().to_string(),
            version: app.version.clone(),
            action,
            previous,
            steps: Vec::new(),
        };
        app.deployment = Some(d.clone());
        let plan = self.plan_json(&d, app_id);
        self.event(
            now,
            "deployment_info",
            json!({ "plan": plan, "currentStep": plan["steps"][0] }),
        );
        self.save_app(app_id);
        d
    }

    /// `POST /v2/apps`.
    pub fn create_app(
        &mut self,
        now: Millis,
        mut def: AppDefinition,
    ) -> Result<(AppRecord, Deployment), ApiError> {
        if let Some(app) = self.apps.get(def.id.as_str()) {
            // Being deleted (or deploying): locked, as Marathon says, with the deployment.
            if let Some(d) = &app.deployment {
                return Err(ApiError::locked(d));
            }
            return Err(ApiError {
                status: 409,
                body: json!({ "message": format!("An app with id [{}] already exists.", def.id) }),
            });
        }
        self.check_spec(&def)?;
        self.assign_service_ports(&mut def);
        let version = rfc3339(now);
        let id = def.id.clone();
        self.apps
            .insert(id.clone().into(), AppRecord::new(def, version));
        self.record_version(&id);
        let d = self.start_deployment(now, &id, DeploymentAction::StartApplication, None);
        self.tick(now);
        Ok((self.apps[id.as_str()].clone(), d))
    }

    pub(super) fn check_spec(&self, def: &AppDefinition) -> Result<(), ApiError> {
        let probe_id = format!("{}.{}", task_prefix(&def.id), uuid::Uuid::nil());
        def.task_spec(&probe_id)
            .map(|_| ())
            .map_err(|e| ApiError::invalid(json!([{ "path": "/", "errors": [e] }])))
    }

    pub(super) fn check_lock(&self, id: &str, force: bool) -> Result<(), ApiError> {
        match self.apps.get(id).and_then(|a| a.deployment.as_ref()) {
            Some(d) if !force => Err(ApiError::locked(d)),
            _ => Ok(()),
        }
    }

    /// `PUT /v2/apps/{id}`: a new definition (create it if missing). Scaling when only
    /// `instances` changed, a rolling replacement otherwise.
    pub fn update_app(
        &mut self,
        now: Millis,
        mut def: AppDefinition,
        force: bool,
    ) -> Result<Deployment, ApiError> {
        let id = def.id.clone();
        if !self.apps.contains_key(id.as_str()) {
            return self.create_app(now, def).map(|(_, d)| d);
        }
        self.check_lock(&id, force)?;
        self.check_spec(&def)?;
        self.keep_service_ports(&mut def);
        self.assign_service_ports(&mut def);
        let version = rfc3339(now);
        let Some(app) = self.apps.get_mut(id.as_str()) else {
            return Err(ApiError::not_found(&format!("App '{id}'")));
        };
        if app.deleting {
            return Err(ApiError::not_found(&format!("App '{id}'")));
        }
        let (previous, config_change) = app.replace_def(def, version);
        let action = if config_change {
            DeploymentAction::RestartApplication
        } else {
            DeploymentAction::ScaleApplication
        };
        self.record_version(&id);
        let d = self.start_deployment(now, &id, action, Some(previous));
        self.tick(now);
        Ok(d)
    }

    /// `POST /v2/apps/{id}/restart`: replace every task (rolling).
    pub fn restart_app(
        &mut self,
        now: Millis,
        id: &str,
        force: bool,
    ) -> Result<Deployment, ApiError> {
        if !self.apps.contains_key(id) {
            return Err(ApiError::not_found(&format!("App '{id}'")));
        }
        self.check_lock(id, force)?;
        let version = rfc3339(now);
        let Some(app) = self.apps.get_mut(id) else {
            return Err(ApiError::not_found(&format!("App '{id}'")));
        };
        app.version = version.clone();
        app.last_config_change_at = version.into();
        self.record_version(id);
        let d = self.start_deployment(now, id, DeploymentAction::RestartApplication, None);
        self.tick(now);
        Ok(d)
    }

    /// `DELETE /v2/apps/{id}`: kill every task, then forget the app.
    pub fn delete_app(
        &mut self,
        now: Millis,
        id: &str,
        force: bool,
    ) -> Result<Deployment, ApiError> {
        if self.apps.get(id).is_none_or(|a| a.deleting) {
            return Err(ApiError::not_found(&format!("App '{id}'")));
        }
        self.check_lock(id, force)?;
        let Some(app) = self.apps.get_mut(id) else {
            return Err(ApiError::not_found(&format!("App '{id}'")));
        };
        app.deleting = true;
        app.version = rfc3339(now);
        let d = self.start_deployment(now, id, DeploymentAction::StopApplication, None);
        self.tick(now);
        Ok(d)
    }

    /// Kills tasks (`DELETE /v2/apps/{id}/tasks[/{task}]`, `POST /v2/tasks/delete`); with
    /// `scale`, the app's instances shrink by as many, as a deployment. Returns the tasks as
    /// they were, and the deployments of the scaled apps.
    pub fn kill_tasks(
        &mut self,
        now: Millis,
        ids: &[String],
        scale: bool,
        wipe: bool,
    ) -> Result<(Vec<TaskRecord>, Vec<Deployment>), ApiError> {
        let killed: Vec<TaskRecord> = ids
            .iter()
            .filter_map(|id| self.tasks.get(id.as_str()).map(|t| (**t).clone()))
            .collect();
        if killed.is_empty() && !ids.is_empty() {
            return Err(ApiError::not_found(&format!("Task '{}'", ids[0])));
        }
        let mut scaled: BTreeMap<String, AppDefinition> = BTreeMap::new();
        for t in &killed {
            if scale && let Some(app) = self.apps.get_mut(&t.app_id) {
                scaled
                    .entry(t.app_id.to_string())
                    .or_insert_with(|| app.def.clone());
                app.def.instances = app.def.instances.saturating_sub(1);
                app.version = rfc3339(now);
                app.last_scaling_at = app.version.clone();
                self.record_version(&t.app_id);
                self.save_app(&t.app_id);
            }
            if wipe {
                tracing::info!(task = %t.id, "wipe: the task's local volumes are not kept by Outpost");
            }
            self.kill(now, &t.id, None);
        }
        // A scaling kill is a deployment of the smaller app (Marathon answers with its id);
        // one already running goes on and covers it.
        let mut deployments = Vec::new();
        for (app_id, previous) in scaled {
            match self
                .apps
                .get(app_id.as_str())
                .and_then(|a| a.deployment.clone())
            {
                Some(d) => deployments.push(d),
                None => deployments.push(self.start_deployment(
                    now,
                    &app_id,
                    DeploymentAction::ScaleApplication,
                    Some(previous),
                )),
            }
        }
        self.tick(now);
        Ok((killed, deployments))
    }

    /// `DELETE /v2/deployments/{id}`: with `force`, stop it where it is; otherwise roll back
    /// (each of its apps deployed again at its previous definition; a new app removed).
    pub fn cancel_deployment(
        &mut self,
        now: Millis,
        deployment: &str,
        force: bool,
    ) -> Result<Option<Deployment>, ApiError> {
        let app_ids: Vec<String> = self
            .apps
            .values()
            .filter(|a| a.deployment.as_ref().is_some_and(|d| d.id == deployment))
            .map(|a| a.def.id.clone())
            .collect();
        let Some(first) = app_ids.first() else {
            return Err(ApiError::not_found(&format!("DeploymentPlan {deployment}")));
        };
        let plan = match self
            .apps
            .get(first.as_str())
            .and_then(|a| a.deployment.as_ref())
        {
            Some(d) => self.plan_json(d, first),
            None => Value::Null,
        };
        let mut parts = Vec::new();
        for id in &app_ids {
            if let Some(d) = self
                .apps
                .get_mut(id.as_str())
                .and_then(|a| a.deployment.take())
            {
                parts.push((id.clone(), d));
            }
            self.save_app(id);
        }
        self.event(
            now,
            "deployment_failed",
            json!({ "id": deployment, "plan": plan }),
        );
        if force {
            return Ok(None);
        }
        let mut last = None;
        for (app_id, d) in parts {
            let rolled = match d.previous {
                Some(prev) => self.update_app(now, prev, true).map(Some),
                None if d.action == DeploymentAction::StartApplication => {
                    self.delete_app(now, &app_id, true).map(Some)
                }
                None => Ok(None),
            };
            if let Some(r) = rolled? {
                last = Some(r);
            }
        }
        Ok(last)
    }

    /// `DELETE /v2/queue/{id}/delay`: the app's launch backoff starts over, and what it waits
    /// to launch goes at once. 404 as Marathon answers when the app waits for nothing.
    pub fn reset_delay(&mut self, app_id: &str) -> Result<(), ApiError> {
        let live = self
            .tasks(Some(app_id))
            .filter(|t| !t.killing && !t.inactive)
            .count();
        let waiting = self
            .apps
            .get(app_id)
            .filter(|a| !a.deleting)
            .is_some_and(|a| (a.def.instances as usize) > live);
        let not_queued = || ApiError {
            status: 404,
            body: json!({ "message": format!("Application {app_id} not found in tasks queue.") }),
        };
        if !waiting {
            return Err(not_queued());
        }
        let Some(app) = self.apps.get_mut(app_id) else {
            return Err(not_queued());
        };
        app.failures = 0;
        app.delay_until_ms = 0;
        tracing::info!(app = app_id, "launch delay reset");
        self.save_app(app_id);
        self.dirty.insert(Name::from(app_id));
        Ok(())
    }
}
