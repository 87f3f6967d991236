//! App versions (Marathon's `/v2/apps/{id}/versions` and rollback), groups (`/v2/groups`) and
//! deployments of several apps at once (a group, a batch `PUT /v2/apps`), ordered by the apps'
//! `dependencies` into steps.
//!
//! A group is a path: it exists while an app's id lies under it, or while a record made
//! through `/v2/groups` keeps it (an empty group, or one with `dependencies`). A deployment of
//! several apps is one [`Deployment`] id held by each of its apps, with the plan's steps in
//! every copy: an app waits while an app of an earlier step still holds the id
//! ([`Core::waits_for_earlier_step`]), and the deployment succeeds when the last one lets go.

#[allow(unused_imports)]
use super::*;

use crate::app::parent_id;

/// What a group change asks for, flattened: the apps the group should hold afterwards (by
/// absolute id) and the groups (with their dependencies) under it.
#[derive(Debug, Clone, Default)]
pub struct GroupChange {
    /// The group changed (absolute).
    pub id: String,
    /// Apps under the group after the change, when the change names them. `None`: the group's
    /// apps stay as they are (a `PUT` without `apps`).
    pub apps: Option<Vec<AppDefinition>>,
    /// Groups under (and including) the group, with their dependencies, when named.
    pub groups: Vec<GroupRecord>,
    /// Whether the group's own apps are replaced by those of `apps` directly in it (the body
    /// has `apps`): one left out is removed.
    pub replace_apps: bool,
    /// Whether the group's subgroups are replaced (the body has `groups`): an app under a
    /// subgroup that `apps` does not name is removed.
    pub replace_groups: bool,
    /// Multiply every instance count under the group by this (rounded up).
    pub scale_by: Option<f64>,
    /// Roll every app under the group back to its definition at this version (the latest
    /// kept at or before it); an app made after it is removed.
    pub rollback_to: Option<String>,
}

impl Core {
    // ---------------------------------------------------------------- versions

    fn max_versions(&self) -> usize {
        if self.max_versions == 0 {
            DEFAULT_MAX_VERSIONS
        } else {
            self.max_versions
        }
    }

    /// The stored form of version key `{app}@{version}`.
    pub(super) fn version_record(&self, key: &str) -> Option<VersionRecord> {
        let (app, version) = key.rsplit_once('@')?;
        let def = self.versions.get(app)?.get(version)?;
        Some(VersionRecord {
            version: version.to_string(),
            def: (**def).clone(),
        })
    }

    /// Puts back the stored versions; an app stored before versions were kept gets its current
    /// definition as its one version.
    pub(super) fn restore_versions(&mut self, list: Vec<VersionRecord>) {
        for r in list {
            if let Some((id, _)) = self.apps.get_key_value(r.def.id.as_str()) {
                let id = id.clone();
                self.versions
                    .entry(id)
                    .or_default()
                    .insert(r.version, Arc::new(r.def));
            }
        }
        for (id, app) in &self.apps {
            self.versions
                .entry(id.clone())
                .or_default()
                .entry(app.version.clone())
                .or_insert_with(|| Arc::new(app.def.clone()));
        }
    }

    /// Records app `id`'s current definition as its version `app.version`, dropping the oldest
    /// beyond `max_versions`.
    pub(super) fn record_version(&mut self, id: &str) {
        let max = self.max_versions();
        let Some((key, app)) = self.apps.get_key_value(id) else {
            return;
        };
        let (key, version, def) = (key.clone(), app.version.clone(), Arc::new(app.def.clone()));
        let versions = self.versions.entry(key).or_default();
        versions.insert(version.clone(), def);
        let mut dropped = Vec::new();
        while versions.len() > max {
            if let Some((v, _)) = versions.pop_first() {
                dropped.push(v);
            }
        }
        self.dirty_records
            .insert((Table::AppVersions, format!("{id}@{version}")));
        for v in dropped {
            self.dirty_records
                .remove(&(Table::AppVersions, format!("{id}@{v}")));
            self.writes
                .insert((Table::AppVersions, format!("{id}@{v}")), None);
        }
    }

    /// Forgets app `id`'s versions (it was removed).
    pub(super) fn forget_versions(&mut self, id: &str) {
        for (v, _) in self.versions.remove(id).unwrap_or_default() {
            let key = format!("{id}@{v}");
            self.dirty_records
                .remove(&(Table::AppVersions, key.clone()));
            self.writes.insert((Table::AppVersions, key), None);
        }
    }

    /// `GET /v2/apps/{id}/versions`: app `id`'s versions, newest first.
    pub fn app_versions(&self, id: &str) -> Option<Vec<String>> {
        self.apps.get(id).filter(|a| !a.deleting)?;
        Some(
            self.versions
                .get(id)
                .map(|v| v.keys().rev().cloned().collect())
                .unwrap_or_default(),
        )
    }

    /// `GET /v2/apps/{id}/versions/{version}`: app `id`'s definition at `version`.
    pub fn app_version(&self, id: &str, version: &str) -> Option<&AppDefinition> {
        self.apps.get(id).filter(|a| !a.deleting)?;
        self.versions.get(id)?.get(version).map(|d| &**d)
    }

    /// `PUT /v2/apps/{id}` with `{"version": ...}`: the app's definition at that version
    /// deployed again (a new version, like any change).
    pub fn rollback_app(
        &mut self,
        now: Millis,
        id: &str,
        version: &str,
        force: bool,
    ) -> Result<Deployment, ApiError> {
        if self.apps.get(id).is_none_or(|a| a.deleting) {
            return Err(ApiError::not_found(&format!("App '{id}'")));
        }
        let Some(def) = self.app_version(id, version).cloned() else {
            return Err(ApiError {
                status: 404,
                body: json!({ "message": format!("App '{id}' does not exist in version {version}") }),
            });
        };
        self.update_app(now, def, force)
    }

    // ---------------------------------------------------------------- groups

    /// Whether group `id` exists: the root, a group record, or a path an app lies under.
    pub fn group_exists(&self, id: &str) -> bool {
        id == "/"
            || self.groups.contains_key(id)
            || self.groups.keys().any(|g| is_under(g, id))
            || self
                .apps
                .values()
                .any(|a| !a.deleting && is_under(&a.def.id, id))
    }

    /// The group record of `id`, if one was made.
    pub fn group_record(&self, id: &str) -> Option<&GroupRecord> {
        self.groups.get(id)
    }

    /// The apps directly in group `id`.
    pub fn group_apps<'a>(&'a self, id: &'a str) -> impl Iterator<Item = &'a AppRecord> + 'a {
        self.apps
            .values()
            .filter(move |a| !a.deleting && parent_id(&a.def.id) == id)
    }

    /// The groups directly in group `id`, by id.
    pub fn subgroups(&self, id: &str) -> Vec<String> {
        let groups = self.groups.keys().map(|g| (g.as_str(), true));
        let apps = self
            .apps
            .values()
            .filter(|a| !a.deleting)
            .map(|a| (a.def.id.as_str(), false));
        let out: BTreeSet<String> = groups
            .chain(apps)
            .filter_map(|(p, is_group)| child_group(id, p, is_group))
            .collect();
        out.into_iter().collect()
    }

    /// A group's version: its latest change (its records', or any app's under it).
    pub fn group_version(&self, id: &str) -> String {
        let records = self
            .groups
            .values()
            .filter(|g| g.id == id || id == "/" || is_under(&g.id, id))
            .map(|g| g.version.as_str());
        let apps = self
            .apps
            .values()
            .filter(|a| !a.deleting && (id == "/" || is_under(&a.def.id, id)))
            .map(|a| a.version.as_str());
        records.chain(apps).max().unwrap_or_default().to_string()
    }

    /// `GET /v2/groups/{id}/versions`: the times anything under the group changed that are
    /// still known (the versions kept of its apps, and its groups' changes), newest first.
    pub fn group_versions(&self, id: &str) -> Vec<String> {
        let mut all: BTreeSet<String> = self
            .groups
            .values()
            .filter(|g| g.id == id || id == "/" || is_under(&g.id, id))
            .map(|g| g.version.clone())
            .collect();
        for (app, versions) in &self.versions {
            if id == "/" || is_under(app, id) {
                all.extend(versions.keys().cloned());
            }
        }
        all.into_iter().rev().collect()
    }

    /// All ids of apps under group `id` (any depth).
    fn apps_under(&self, id: &str) -> Vec<String> {
        self.apps
            .values()
            .filter(|a| !a.deleting && (id == "/" || is_under(&a.def.id, id)))
            .map(|a| a.def.id.clone())
            .collect()
    }

    /// `POST /v2/groups` (`create`) and `PUT /v2/groups/{id}`: the group made or changed as
    /// one deployment. With `dry_run`, nothing changes and the plan is answered.
    pub fn change_group(
        &mut self,
        now: Millis,
        change: GroupChange,
        create: bool,
        force: bool,
        dry_run: bool,
    ) -> Result<(Value, Option<Deployment>), ApiError> {
        let gid = change.id.clone();
        if create && self.group_exists(&gid) && gid != "/" {
            return Err(ApiError {
                status: 409,
                body: json!({ "message": format!("Group {gid} is already created. Use PUT to change this group.") }),
            });
        }
        // What the group's apps become.
        let mut desired: Vec<AppDefinition> = Vec::new();
        let mut removed: Vec<String> = Vec::new();
        let current = self.apps_under(&gid);
        if let Some(version) = &change.rollback_to {
            for id in &current {
                let then = self
                    .versions
                    .get(id.as_str())
                    .and_then(|v| v.range(..=version.clone()).next_back())
                    .map(|(_, def)| (**def).clone());
                match then {
                    Some(def) => desired.push(def),
                    None => removed.push(id.clone()),
                }
            }
        } else if let Some(factor) = change.scale_by {
            for id in &current {
                if let Some(a) = self.apps.get(id.as_str()) {
                    let mut def = a.def.clone();
                    def.instances = (def.instances as f64 * factor).ceil() as u32;
                    desired.push(def);
                }
            }
        } else if let Some(apps) = change.apps {
            let named: BTreeSet<&str> = apps.iter().map(|a| a.id.as_str()).collect();
            for id in &current {
                let in_scope = if parent_id(id) == gid {
                    change.replace_apps
                } else {
                    change.replace_groups
                };
                if in_scope && !named.contains(id.as_str()) {
                    removed.push(id.clone());
                }
            }
            desired = apps;
        }
        self.check_group_ids(&desired, &change.groups)?;
        // The plan: stops first (dependants before what they depend on), then the changes in
        // dependency order.
        let mut actions: Vec<(PlanAction, Option<AppDefinition>)> = Vec::new();
        for id in &removed {
            self.check_lock(id, force)?;
            actions.push((
                PlanAction {
                    action: DeploymentAction::StopApplication,
                    app: id.clone(),
                },
                None,
            ));
        }
        for def in desired {
            // An app given as it is stays out of the plan.
            if let Some(action) = self.plan_put(def, force, true)? {
                actions.push(action);
            }
        }
        let groups = change.groups;
        let steps = self.order_steps(&actions, &groups)?;
        let version = rfc3339(now);
        let preview = plan_preview(&steps, &version);
        if dry_run {
            return Ok((preview, None));
        }
        for mut g in groups {
            g.version = version.clone();
            self.dirty_records.insert((Table::Groups, g.id.clone()));
            self.groups.insert(g.id.clone(), g);
        }
        if change.replace_groups {
            // Records of subgroups the change left out go with them.
            let gone: Vec<String> = self
                .groups
                .values()
                .filter(|g| is_under(&g.id, &gid) && g.version != version)
                .map(|g| g.id.clone())
                .collect();
            for g in gone {
                self.remove_group_record(&g);
            }
        }
        let d = self.apply_plan(now, steps, actions)?;
        Ok((preview, d))
    }

    /// `DELETE /v2/groups/{id}`: every app under it stopped in one deployment (dependants
    /// first), and its group records removed.
    pub fn delete_group(
        &mut self,
        now: Millis,
        id: &str,
        force: bool,
    ) -> Result<Option<Deployment>, ApiError> {
        if !self.group_exists(id) {
            return Err(ApiError::not_found(&format!("Group '{id}'")));
        }
        let apps = self.apps_under(id);
        let mut actions = Vec::new();
        for a in apps {
            self.check_lock(&a, force)?;
            actions.push((
                PlanAction {
                    action: DeploymentAction::StopApplication,
                    app: a,
                },
                None,
            ));
        }
        let steps = self.order_steps(&actions, &[])?;
        let records: Vec<String> = self
            .groups
            .keys()
            .filter(|g| *g == id || id == "/" || is_under(g, id))
            .cloned()
            .collect();
        for g in records {
            self.remove_group_record(&g);
        }
        self.apply_plan(now, steps, actions)
    }

    fn remove_group_record(&mut self, id: &str) {
        self.groups.remove(id);
        self.dirty_records.remove(&(Table::Groups, id.to_string()));
        self.writes.insert((Table::Groups, id.to_string()), None);
    }

    /// `PUT /v2/apps` with a list: every app created or changed in one deployment.
    pub fn update_apps(
        &mut self,
        now: Millis,
        defs: Vec<AppDefinition>,
        force: bool,
    ) -> Result<Option<Deployment>, ApiError> {
        let mut actions = Vec::new();
        let mut seen = BTreeSet::new();
        for (i, def) in defs.into_iter().enumerate() {
            if !seen.insert(def.id.clone()) {
                return Err(ApiError::invalid(json!([{
                    "path": format!("({i})/id"),
                    "errors": [format!("app {} is given twice", def.id)],
                }])));
            }
            if let Some(action) = self.plan_put(def, force, false)? {
                actions.push(action);
            }
        }
        self.check_group_ids(
            &actions
                .iter()
                .filter_map(|(_, d)| d.clone())
                .collect::<Vec<_>>(),
            &[],
        )?;
        let steps = self.order_steps(&actions, &[])?;
        self.apply_plan(now, steps, actions)
    }

    /// Marathon's rule that an app and a group may not share an id.
    fn check_group_ids(
        &self,
        apps: &[AppDefinition],
        groups: &[GroupRecord],
    ) -> Result<(), ApiError> {
        let clash = |id: &str| {
            ApiError::invalid(json!([{
                "path": "/",
                "errors": [format!("Groups and Applications may not have the same identifier: {id}")],
            }]))
        };
        for a in apps {
            let is_group = self.groups.contains_key(&a.id)
                || groups.iter().any(|g| g.id == a.id)
                || self
                    .apps
                    .values()
                    .any(|x| !x.deleting && is_under(&x.def.id, &a.id))
                || apps.iter().any(|x| is_under(&x.id, &a.id));
            if is_group {
                return Err(clash(&a.id));
            }
        }
        for g in groups {
            // Neither the group nor a group it lies in may be an app.
            let mut at = g.id.clone();
            while at != "/" {
                if self.apps.get(at.as_str()).is_some_and(|a| !a.deleting)
                    || apps.iter().any(|a| a.id == at)
                {
                    return Err(clash(&at));
                }
                at = parent_id(&at);
            }
        }
        Ok(())
    }

    /// The apps each app of `actions` depends on, among `actions` (its own `dependencies` and
    /// its groups', a group meaning every app under it); a cycle is a 422 naming it.
    fn order_steps(
        &self,
        actions: &[(PlanAction, Option<AppDefinition>)],
        new_groups: &[GroupRecord],
    ) -> Result<Vec<Vec<PlanAction>>, ApiError> {
        let in_plan: Vec<&str> = actions.iter().map(|(a, _)| a.app.as_str()).collect();
        let group_deps = |id: &str| -> Vec<String> {
            let mut out = Vec::new();
            let mut g = parent_id(id);
            loop {
                let rec = new_groups
                    .iter()
                    .find(|r| r.id == g)
                    .or_else(|| self.groups.get(&g));
                if let Some(r) = rec {
                    out.extend(r.dependencies.iter().cloned());
                }
                if g == "/" {
                    break;
                }
                g = parent_id(&g);
            }
            out
        };
        // Edges: app -> the apps of the plan it depends on.
        let mut deps: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        for (a, def) in actions {
            let own: Vec<String> = match def {
                Some(d) => d.dependencies.clone(),
                None => self
                    .apps
                    .get(a.app.as_str())
                    .map(|x| x.def.dependencies.clone())
                    .unwrap_or_default(),
            };
            let mut set = BTreeSet::new();
            for dep in own.into_iter().chain(group_deps(&a.app)) {
                for other in &in_plan {
                    if *other != a.app && (*other == dep || is_under(other, &dep)) {
                        set.insert(*other);
                    }
                }
            }
            deps.insert(a.app.as_str(), set);
        }
        // Levels by depth of dependencies; a cycle never settles.
        let mut level: BTreeMap<&str, usize> = BTreeMap::new();
        for _ in 0..=in_plan.len() {
            let mut changed = false;
            for (app, ds) in &deps {
                let l = ds
                    .iter()
                    .map(|d| level.get(d).copied().unwrap_or(0) + 1)
                    .max()
                    .unwrap_or(0);
                if level.get(app) != Some(&l) {
                    level.insert(app, l);
                    changed = true;
                }
            }
            if !changed {
                return Ok(steps_by_level(actions, &level));
            }
        }
        let cyclic: Vec<&str> = level
            .iter()
            .filter(|(_, l)| **l >= in_plan.len())
            .map(|(a, _)| *a)
            .collect();
        Err(ApiError::invalid(json!([{
            "path": "/",
            "errors": [format!("Dependency graph has cyclic dependencies: {}", cyclic.join(", "))],
        }])))
    }

    /// The plan's action for `def` (created, scaled or replaced), checked: locked, being
    /// deleted or an invalid spec is the error. With `skip_unchanged`, a definition equal to
    /// the app's is no action. A servicePort of 0 keeps the app's.
    fn plan_put(
        &self,
        mut def: AppDefinition,
        force: bool,
        skip_unchanged: bool,
    ) -> Result<Option<(PlanAction, Option<AppDefinition>)>, ApiError> {
        self.keep_service_ports(&mut def);
        let action = match self.apps.get(def.id.as_str()) {
            Some(a) if a.deleting => return Err(ApiError::locked_or_gone(a, &def.id)),
            Some(a) if skip_unchanged && a.def == def => return Ok(None),
            Some(a) if a.def.config_differs(&def) => DeploymentAction::RestartApplication,
            Some(_) => DeploymentAction::ScaleApplication,
            None => DeploymentAction::StartApplication,
        };
        self.check_lock(&def.id, force)?;
        self.check_spec(&def)?;
        let app = def.id.clone();
        Ok(Some((PlanAction { action, app }, Some(def))))
    }

    /// Makes each change of `actions` and starts one deployment over `steps` (none when there
    /// is nothing to do).
    fn apply_plan(
        &mut self,
        now: Millis,
        steps: Vec<Vec<PlanAction>>,
        actions: Vec<(PlanAction, Option<AppDefinition>)>,
    ) -> Result<Option<Deployment>, ApiError> {
        if actions.is_empty() {
            return Ok(None);
        }
        let id = self.ids.uuid().to_string();
        let version = rfc3339(now);
        for (a, def) in actions {
            let previous = match def {
                Some(def) => self.put_app_def(now, def),
                None => {
                    if let Some(app) = self.apps.get_mut(a.app.as_str()) {
                        app.deleting = true;
                        app.version = version.clone();
                    }
                    None
                }
            };
            self.recount(&a.app);
            let Some(app) = self.apps.get_mut(a.app.as_str()) else {
                continue;
            };
            app.deployment = Some(Deployment {
                id: id.clone(),
                version: version.clone(),
                action: a.action,
                previous,
                steps: steps.clone(),
            });
            self.save_app(&a.app);
        }
        let first = steps
            .iter()
            .flatten()
            .next()
            .map(|a| a.app.clone())
            .unwrap_or_default();
        let d = self
            .apps
            .get(first.as_str())
            .and_then(|a| a.deployment.clone())
            .unwrap_or(Deployment {
                id,
                version,
                action: DeploymentAction::ScaleApplication,
                previous: None,
                steps,
            });
        let plan = self.plan_json(&d, &first);
        self.event(
            now,
            "deployment_info",
            json!({ "plan": plan, "currentStep": plan["steps"][0] }),
        );
        self.tick(now);
        Ok(Some(d))
    }

    /// Creates or changes one app of a plan (checked already); returns its definition before.
    fn put_app_def(&mut self, now: Millis, mut def: AppDefinition) -> Option<AppDefinition> {
        self.assign_service_ports(&mut def);
        let version = rfc3339(now);
        let id = def.id.clone();
        let previous = match self.apps.get_mut(id.as_str()) {
            Some(app) => Some(app.replace_def(def, version).0),
            None => {
                self.apps
                    .insert(id.clone().into(), AppRecord::new(def, version));
                None
            }
        };
        self.record_version(&id);
        previous
    }

    /// Whether app `id`'s deployment has an app of an earlier step still deploying: it waits
    /// (Marathon's dependency order: what it depends on is started and healthy first, and what
    /// depends on it is stopped first).
    pub(super) fn waits_for_earlier_step(&self, id: &str) -> bool {
        let Some(d) = self.apps.get(id).and_then(|a| a.deployment.as_ref()) else {
            return false;
        };
        for step in &d.steps {
            if step.iter().any(|a| a.app == id) {
                return false;
            }
            if step.iter().any(|a| self.holds(&a.app, &d.id)) {
                return true;
            }
        }
        false
    }

    /// Whether app `app` is still part of deployment `deployment`.
    fn holds(&self, app: &str, deployment: &str) -> bool {
        self.apps
            .get(app)
            .and_then(|x| x.deployment.as_ref())
            .is_some_and(|x| x.id == deployment)
    }

    /// App `app_id`'s part of deployment `d` is done (the app let go of it): the deployment's
    /// `deployment_success` when it was the last part, `deployment_step_success` when it ended
    /// a step; the apps of the next steps are scheduled again.
    pub(super) fn part_done(&mut self, now: Millis, d: &Deployment, app_id: &str) {
        let plan = self.plan_json(d, app_id);
        let left: Vec<String> = d
            .steps
            .iter()
            .flatten()
            .filter(|a| self.holds(&a.app, &d.id))
            .map(|a| a.app.clone())
            .collect();
        if left.is_empty() {
            self.event(
                now,
                "deployment_success",
                json!({ "id": d.id, "plan": plan }),
            );
            return;
        }
        let step_done = d
            .steps
            .iter()
            .find(|s| s.iter().any(|a| a.app == app_id))
            .is_some_and(|s| s.iter().all(|a| !self.holds(&a.app, &d.id)));
        if step_done {
            self.event(
                now,
                "deployment_step_success",
                json!({ "plan": plan, "currentStep": plan["currentActions"].clone() }),
            );
        }
        self.launch_next.extend(left);
    }

    /// Deployment `d` (held by app `app_id`) as `GET /v2/deployments` shows it: every app of
    /// its plan, its steps, and the step it is at.
    pub fn plan_json(&self, d: &Deployment, app_id: &str) -> Value {
        if d.steps.is_empty() {
            let mut plan = deployment_json(d, app_id);
            plan["currentActions"][0]["readinessCheckResults"] =
                json!(self.readiness_results(app_id));
            return plan;
        }
        let mut affected: Vec<&str> = d.steps.iter().flatten().map(|a| a.app.as_str()).collect();
        affected.sort_unstable();
        let at = d
            .steps
            .iter()
            .position(|s| s.iter().any(|a| self.holds(&a.app, &d.id)))
            .unwrap_or(d.steps.len().saturating_sub(1));
        let current: Vec<Value> = d.steps.get(at).map_or_else(Vec::new, |s| {
            s.iter()
                .map(|a| {
                    json!({
                        "action": a.action,
                        "app": a.app,
                        "readinessCheckResults": self.readiness_results(&a.app),
                    })
                })
                .collect()
        });
        json!({
            "id": d.id,
            "version": d.version,
            "affectedApps": affected,
            "affectedPods": [],
            "steps": d.steps.iter().map(|s| json!({ "actions": s })).collect::<Vec<_>>(),
            "currentActions": current,
            "currentStep": at + 1,
            "totalSteps": d.steps.len(),
        })
    }

    /// Marathon's `readinessCheckResults` of app `app_id`: one per live task of its current
    /// version that has a readiness check, whether it passed.
    pub fn readiness_results(&self, app_id: &str) -> Vec<Value> {
        let Some(app) = self.apps.get(app_id) else {
            return Vec::new();
        };
        let Some(check) = app.def.readiness_checks.first() else {
            return Vec::new();
        };
        self.tasks(Some(app_id))
            .filter(|t| !t.killing && t.version == app.last_config_change_at)
            .filter_map(|t| {
                t.ready.map(|ready| {
                    json!({ "name": check.name, "taskId": t.id, "ready": ready, "lastResponse": null })
                })
            })
            .collect()
    }

    /// Every running deployment once, as `GET /v2/deployments` lists them.
    pub fn deployments_json(&self) -> Vec<Value> {
        let mut seen = BTreeSet::new();
        self.apps
            .values()
            .filter_map(|a| a.deployment.as_ref().map(|d| (d, &a.def.id)))
            .filter(|(d, _)| seen.insert(d.id.clone()))
            .map(|(d, app)| self.plan_json(d, app))
            .collect()
    }
}

impl ApiError {
    /// A change to an app being deleted: locked by its delete's deployment.
    fn locked_or_gone(app: &AppRecord, id: &str) -> Self {
        match &app.deployment {
            Some(d) => Self::locked(d),
            None => Self::not_found(&format!("App '{id}'")),
        }
    }
}

/// Whether `path` lies strictly under group `group`.
pub fn is_under(path: &str, group: &str) -> bool {
    if group == "/" {
        return path != "/";
    }
    path.len() > group.len() && path.starts_with(group) && path.as_bytes()[group.len()] == b'/'
}

/// The group directly under `group` that `path` lies in (`/a`, `/a/b/c` → `/a/b`); with
/// `is_group` false (`path` is an app) only when the app is deeper than `group`'s own apps.
fn child_group(group: &str, path: &str, is_group: bool) -> Option<String> {
    if !is_under(path, group) {
        return None;
    }
    let rest = path[group.len()..].trim_start_matches('/');
    let (first, deeper) = match rest.split_once('/') {
        Some((first, _)) => (first, true),
        None => (rest, false),
    };
    (is_group || deeper).then(|| {
        if group == "/" {
            format!("/{first}")
        } else {
            format!("{group}/{first}")
        }
    })
}

/// The plan of a dry run (`PUT /v2/groups/{id}?dryRun=true`): its steps.
fn plan_preview(steps: &[Vec<PlanAction>], version: &str) -> Value {
    json!({
        "version": version,
        "steps": steps.iter().map(|s| json!({ "actions": s })).collect::<Vec<_>>(),
    })
}

/// `actions` grouped into steps: the stops first, deepest dependant first; then the changes,
/// what others depend on first.
fn steps_by_level(
    actions: &[(PlanAction, Option<AppDefinition>)],
    level: &BTreeMap<&str, usize>,
) -> Vec<Vec<PlanAction>> {
    let mut stops: BTreeMap<std::cmp::Reverse<usize>, Vec<PlanAction>> = BTreeMap::new();
    let mut starts: BTreeMap<usize, Vec<PlanAction>> = BTreeMap::new();
    for (a, _) in actions {
        let l = level.get(a.app.as_str()).copied().unwrap_or(0);
        if a.action == DeploymentAction::StopApplication {
            stops
                .entry(std::cmp::Reverse(l))
                .or_default()
                .push(a.clone());
        } else {
            starts.entry(l).or_default().push(a.clone());
        }
    }
    stops.into_values().chain(starts.into_values()).collect()
}
