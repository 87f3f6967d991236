//! `/v2/groups`: the group tree (`GET`, with Marathon's `embed`), a group made (`POST`),
//! changed as a whole or scaled (`PUT`, `dryRun`), removed (`DELETE`), and its versions.
//! Ids in a body are resolved against the group they are in, as Marathon resolves them.

use super::*;

use crate::app::{Violation, parent_id, resolve_id};
use crate::core::GroupRecord;
use crate::core::groups::{GroupChange, is_under};

/// What of a group to show (`embed=group.groups`, `group.apps`, `group.apps.tasks`, ...).
#[derive(Clone, Copy)]
struct GroupEmbed {
    groups: bool,
    apps: bool,
    app: Embed,
}

impl GroupEmbed {
    fn from(p: &Params) -> Self {
        let asked = p.all("embed");
        if asked.is_empty() {
            // Marathon's default: the subgroups and the apps, nothing of the apps' tasks.
            return Self {
                groups: true,
                apps: true,
                app: Embed::default(),
            };
        }
        let mut e = Self {
            groups: false,
            apps: false,
            app: Embed::default(),
        };
        for v in asked {
            match v {
                "group.groups" => e.groups = true,
                "group.apps" => e.apps = true,
                other => {
                    if let Some(rest) = other.strip_prefix("group.apps.") {
                        e.apps = true;
                        match rest {
                            "tasks" => e.app.tasks = true,
                            "counts" => e.app.counts = true,
                            "deployments" => e.app.deployments = true,
                            "lastTaskFailure" => e.app.last_task_failure = true,
                            "taskStats" => e.app.task_stats = true,
                            "readiness" => e.app.readiness = true,
                            _ => {}
                        }
                    }
                }
            }
        }
        e
    }
}

fn group_json(core: &Core, id: &str, embed: GroupEmbed) -> Value {
    let deps = core
        .group_record(id)
        .map(|g| g.dependencies.clone())
        .unwrap_or_default();
    let mut v = json!({
        "id": id,
        "dependencies": deps,
        "version": core.group_version(id),
        "pods": [],
    });
    if embed.apps {
        v["apps"] = json!(
            core.group_apps(id)
                .map(|a| app_json(core, a, embed.app))
                .collect::<Vec<_>>()
        );
    }
    if embed.groups {
        v["groups"] = json!(
            core.subgroups(id)
                .iter()
                .map(|g| group_json(core, g, embed))
                .collect::<Vec<_>>()
        );
    }
    v
}

/// `/v2/groups`: the root group.
pub(super) async fn groups(
    State(s): S,
    method: Method,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Response {
    group(s, method, "/".into(), Params::new(q), body).await
}

/// `/v2/groups/{id}` and `/v2/groups/{id}/versions`.
pub(super) async fn group_route(
    State(s): S,
    method: Method,
    Path(rest): Path<String>,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Response {
    let path = normalize_id(&rest);
    if let Some(id) = path
        .strip_suffix("/versions")
        .filter(|_| method == Method::GET)
    {
        let id = normalize_id(id);
        return s
            .read(move |core| {
                if !core.group_exists(&id) {
                    return missing_group(&id);
                }
                axum::Json(json!(core.group_versions(&id))).into_response()
            })
            .await
            .unwrap_or_else(stored);
    }
    if let Some((id, version)) = path.rsplit_once("/versions/") {
        // marathon-python's `rollback_group` PUTs here: the same as `{"version": ...}`.
        if method == Method::PUT {
            let body = json!({ "version": version }).to_string();
            return group(
                s,
                method,
                normalize_id(id),
                Params::new(q),
                Bytes::from(body),
            )
            .await;
        }
        return error(
            404,
            json!({ "message": format!("Group '{}' in version {version} is not kept: roll it back with PUT (its apps' kept versions)", normalize_id(id)) }),
        );
    }
    group(s, method, path, Params::new(q), body).await
}

fn missing_group(id: &str) -> Response {
    error(
        404,
        json!({ "message": format!("Group '{id}' does not exist") }),
    )
}

async fn group(s: Arc<Shared>, method: Method, id: String, p: Params, body: Bytes) -> Response {
    let (force, dry_run) = match (p.flag("force"), p.flag("dryRun")) {
        (Ok(f), Ok(d)) => (f, d),
        (Err(r), _) | (_, Err(r)) => return r,
    };
    match method {
        Method::GET => {
            let embed = GroupEmbed::from(&p);
            s.read_snapshot(move |core| {
                if !core.group_exists(&id) {
                    return missing_group(&id);
                }
                axum::Json(group_json(core, &id, embed)).into_response()
            })
            .await
            .unwrap_or_else(stored)
        }
        Method::POST | Method::PUT => {
            let create = method == Method::POST;
            let v = match parse_body(&body) {
                Ok(v) => v,
                Err(r) => return r,
            };
            let change = match parse_change(&v, &id, create) {
                Ok(c) => c,
                Err(violations) => {
                    return ApiError::invalid(json!(violations)).into_response();
                }
            };
            let gid = change.id.clone();
            let result = s
                .apply(move |c, now| c.change_group(now, change, create, force, dry_run))
                .await;
            match result {
                Err(e) => stored(e),
                Ok(Err(e)) => e.into_response(),
                Ok(Ok((plan, _))) if dry_run => {
                    axum::Json(json!({ "steps": plan["steps"] })).into_response()
                }
                Ok(Ok((plan, d))) => {
                    let (id, version) = match &d {
                        Some(d) => (d.id.clone(), d.version.clone()),
                        None => (
                            uuid::Uuid::new_v4().to_string(),
                            plan["version"].as_str().unwrap_or_default().to_string(),
                        ),
                    };
                    let status = if create {
                        StatusCode::CREATED
                    } else {
                        StatusCode::OK
                    };
                    let mut r = (
                        status,
                        axum::Json(json!({ "deploymentId": id, "version": version })),
                    )
                        .into_response();
                    let h = r.headers_mut();
                    if let Ok(v) = HeaderValue::from_str(&id) {
                        h.insert("Marathon-Deployment-Id", v);
                    }
                    if create && let Ok(v) = HeaderValue::from_str(&format!("/v2/groups{gid}")) {
                        h.insert(header::LOCATION, v);
                    }
                    r
                }
            }
        }
        Method::DELETE => {
            let result = s.apply(move |c, now| c.delete_group(now, &id, force)).await;
            match result {
                Err(e) => stored(e),
                Ok(Err(e)) => e.into_response(),
                Ok(Ok(Some(d))) => deployment_result(&d),
                Ok(Ok(None)) => axum::Json(json!({
                    "deploymentId": uuid::Uuid::new_v4().to_string(),
                    "version": rfc3339(crate::time::now_ms()),
                }))
                .into_response(),
            }
        }
        _ => error(
            405,
            json!({ "message": format!("{method} is not allowed on a group") }),
        ),
    }
}

/// The fields a group body may have.
const GROUP_KEYS: &[&str] = &[
    "id",
    "apps",
    "groups",
    "dependencies",
    "scaleBy",
    "version",
    "pods",
    "enforceRole",
];

/// A group body (`POST` or `PUT`) as a [`GroupChange`] under `url_id`: every id made absolute
/// and checked to lie directly in its group, every app parsed with Marathon's rules; the
/// errors name the field's path (`/groups(0)/apps(1)/mem`).
fn parse_change(v: &Value, url_id: &str, create: bool) -> Result<GroupChange, Vec<Violation>> {
    let bad = |path: &str, e: String| {
        vec![Violation {
            path: path.into(),
            errors: vec![e],
        }]
    };
    let Some(obj) = v.as_object() else {
        return Err(bad("/", "error.expected.jsobject".into()));
    };
    let id = match obj.get("id").and_then(Value::as_str) {
        // POST names the new group relative to the URL's; PUT's URL is the group.
        Some(body_id) if create => resolve_id(url_id, body_id),
        Some(body_id)
            if resolve_id(&parent_id(url_id), body_id) != url_id
                && normalize_id(body_id) != url_id =>
        {
            return Err(bad(
                "/id",
                format!("{body_id:?} is not the group of the URL ({url_id})"),
            ));
        }
        _ => url_id.to_string(),
    };
    if create && id == "/" {
        return Err(bad("/id", "a new group needs an id".into()));
    }
    let mut change = GroupChange {
        id: id.clone(),
        ..GroupChange::default()
    };
    if let Some(v) = obj.get("version") {
        let Some(v) = v.as_str() else {
            return Err(bad(
                "/version",
                format!("{v} is not a version (a timestamp string)"),
            ));
        };
        if let Some(other) = obj.keys().find(|k| *k != "version" && *k != "id") {
            return Err(bad(
                "/version",
                format!(
                    "The 'version' field may only be combined with the 'id' field (not {other:?})."
                ),
            ));
        }
        change.rollback_to = Some(v.to_string());
        return Ok(change);
    }
    if let Some(f) = obj.get("scaleBy") {
        let Some(f) = f.as_f64().filter(|f| *f > 0.0 && f.is_finite()) else {
            return Err(bad("/scaleBy", format!("{f} must be a positive number")));
        };
        if obj.contains_key("apps") || obj.contains_key("groups") {
            return Err(bad(
                "/scaleBy",
                "scaleBy may not be combined with apps or groups".into(),
            ));
        }
        change.scale_by = Some(f);
        return Ok(change);
    }
    change.replace_apps = obj.contains_key("apps");
    change.replace_groups = obj.contains_key("groups");
    let mut apps = Vec::new();
    let mut violations = Vec::new();
    walk_group(obj, &id, "", &mut apps, &mut change.groups, &mut violations);
    if !violations.is_empty() {
        return Err(violations);
    }
    if change.replace_apps || change.replace_groups {
        change.apps = Some(apps);
    }
    Ok(change)
}

/// One group of a body, and its subgroups: apps into `apps`, groups into `groups`.
fn walk_group(
    obj: &serde_json::Map<String, Value>,
    id: &str,
    at: &str,
    apps: &mut Vec<AppDefinition>,
    groups: &mut Vec<GroupRecord>,
    violations: &mut Vec<Violation>,
) {
    for k in obj.keys().filter(|k| !GROUP_KEYS.contains(&k.as_str())) {
        push(
            violations,
            format!("{at}/{k}"),
            format!("unknown field `{k}`"),
        );
    }
    if obj
        .get("pods")
        .and_then(Value::as_array)
        .is_some_and(|p| !p.is_empty())
    {
        push(
            violations,
            format!("{at}/pods"),
            "pods are not supported (Outpost runs apps)".into(),
        );
    }
    let mut deps = Vec::new();
    match obj.get("dependencies") {
        None | Some(Value::Null) => {}
        Some(Value::Array(list)) => {
            for (i, d) in list.iter().enumerate() {
                match d.as_str() {
                    Some(d) => deps.push(resolve_id(&parent_id(id), d)),
                    None => push(
                        violations,
                        format!("{at}/dependencies({i})"),
                        format!("{d} is not a path"),
                    ),
                }
            }
        }
        Some(other) => push(
            violations,
            format!("{at}/dependencies"),
            format!("{other} is not a list of paths"),
        ),
    }
    if id != "/" {
        groups.push(GroupRecord {
            id: id.to_string(),
            dependencies: deps,
            version: String::new(),
        });
    }
    match obj.get("apps") {
        None | Some(Value::Null) => {}
        Some(Value::Array(list)) => {
            for (i, a) in list.iter().enumerate() {
                let path = format!("{at}/apps({i})");
                let Some(app_id) = a.get("id").and_then(Value::as_str) else {
                    push(
                        violations,
                        format!("{path}/id"),
                        "an app needs an id".into(),
                    );
                    continue;
                };
                let abs = resolve_id(id, app_id);
                if parent_id(&abs) != id {
                    push(
                        violations,
                        format!("{path}/id"),
                        format!("app {abs} is not a direct child of group {id}"),
                    );
                    continue;
                }
                let mut a = a.clone();
                a["id"] = json!(abs);
                match AppDefinition::from_value(a, None) {
                    Ok(def) => apps.push(def),
                    Err(Invalid::Syntax(m)) => push(violations, path, m),
                    Err(Invalid::Violations(v)) => {
                        for x in v {
                            for e in x.errors {
                                push(violations, format!("{path}{}", x.path), e);
                            }
                        }
                    }
                }
            }
        }
        Some(other) => push(
            violations,
            format!("{at}/apps"),
            format!("{other} is not a list of apps"),
        ),
    }
    match obj.get("groups") {
        None | Some(Value::Null) => {}
        Some(Value::Array(list)) => {
            for (i, g) in list.iter().enumerate() {
                let path = format!("{at}/groups({i})");
                let Some(sub) = g.as_object() else {
                    push(violations, path, "error.expected.jsobject".into());
                    continue;
                };
                let Some(sub_id) = sub.get("id").and_then(Value::as_str) else {
                    push(
                        violations,
                        format!("{path}/id"),
                        "a group needs an id".into(),
                    );
                    continue;
                };
                let abs = resolve_id(id, sub_id);
                if !is_under(&abs, id) || parent_id(&abs) != id {
                    push(
                        violations,
                        format!("{path}/id"),
                        format!("group {abs} is not a direct child of group {id}"),
                    );
                    continue;
                }
                let mut nested = Vec::new();
                walk_group(sub, &abs, &path, apps, groups, &mut nested);
                violations.extend(nested);
            }
        }
        Some(other) => push(
            violations,
            format!("{at}/groups"),
            format!("{other} is not a list of groups"),
        ),
    }
}

fn push(violations: &mut Vec<Violation>, path: String, error: String) {
    violations.push(Violation {
        path,
        errors: vec![error],
    });
}
