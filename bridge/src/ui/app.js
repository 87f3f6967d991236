// Outpost's fleet view: agents, apps and tasks from the bridge's own APIs (/ui/agents,
// /v2/apps, /v2/deployments), refreshed on every event of /v2/events. No build step.
"use strict";

const $ = (id) => document.getElementById(id);

function esc(s) {
  return String(s ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}

function ago(iso) {
  if (!iso) return "–";
  const s = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
  if (s < 60) return s + " s ago";
  if (s < 3600) return Math.round(s / 60) + " min ago";
  return Math.round(s / 3600) + " h ago";
}

function pill(text, kind) {
  return `<span class="pill ${kind}">${esc(text)}</span>`;
}

function usage(used, total, unit) {
  const pct = total > 0 ? Math.min(100, (100 * used) / total) : 0;
  const fmt = (x) => (unit === "MiB" ? Math.round(x) : Math.round(x * 100) / 100);
  return `${fmt(used)} / ${fmt(total)} ${unit}<div class="bar"><span style="width:${pct}%"></span></div>`;
}

function rows(tbody, html, cols, emptyText) {
  tbody.innerHTML = html.length ? html.join("") : `<tr class="empty"><td colspan="${cols}">${emptyText}</td></tr>`;
}

async function json(path) {
  const r = await fetch(path, { headers: { Accept: "application/json" } });
  if (!r.ok) throw new Error(path + ": HTTP " + r.status);
  return r.json();
}

async function refresh() {
  const [agents, apps, deployments, bridges] = await Promise.all([
    json("/ui/agents"),
    json("/v2/apps?embed=apps.tasks&embed=apps.lastTaskFailure&embed=apps.counts&embed=apps.deployments"),
    json("/v2/deployments"),
    json("/ui/bridges"),
  ]);

  // Which bridge leads, and the others of the group (several with [ha]).
  const others = bridges.bridges.filter((b) => !b.leader).map((b) => b.marathon);
  $("bridges").innerHTML = `leader <code>${esc(bridges.leader)}</code>` +
    (bridges.ha ? ` · ${bridges.bridges.length} bridge${bridges.bridges.length === 1 ? "" : "s"}` +
      (others.length ? ` <span class="muted">(${others.map(esc).join(", ")})</span>` : "") : "");

  const online = agents.agents.filter((a) => a.online).length;
  $("agents-online").textContent = online;
  $("agents-unreachable").textContent = agents.agents.filter((a) => a.liveness === "offline").length;
  $("apps-count").textContent = apps.apps.length;
  const tasks = apps.apps.flatMap((a) => (a.tasks || []).map((t) => ({ ...t, app: a })));
  $("tasks-running").textContent = tasks.filter((t) => t.state === "TASK_RUNNING").length;
  $("tasks-healthy").textContent = apps.apps.reduce((n, a) => n + (a.tasksHealthy || 0), 0);
  $("deployments-count").textContent = deployments.length;

  rows($("agents").tBodies[0], agents.agents.map((a) => {
    const state = a.online ? pill("online", "ok") : a.liveness === "offline" ? pill("unreachable", "bad") : pill(a.liveness, "warn");
    const attrs = Object.entries(a.attributes || {}).map(([k, v]) => `<code>${esc(k)}=${esc(v)}</code>`).join(" ");
    const o = a.offered, u = a.used;
    return `<tr data-agent="${esc(a.id)}"><td><b>${esc(a.id)}</b><div class="muted">${esc(a.hostname)}</div></td>
      <td>${state}${a.unreachable_since ? `<div class="muted">since ${esc(ago(a.unreachable_since))}</div>` : ""}</td>
      <td>${esc(ago(a.last_seen))}</td><td>${attrs || '<span class="muted">–</span>'}</td>
      <td class="num">${o ? usage(u.cpus, u.cpus + o.cpus, "CPUs") : "–"}</td>
      <td class="num">${o ? usage(u.mem, u.mem + o.mem, "MiB") : "–"}</td>
      <td class="num">${o ? Math.round(o.disk) + " MiB" : "–"}</td>
      <td class="num">${o ? o.ports : "–"}</td></tr>`;
  }), 8, "No agents yet: start outpost-agent on a host.");

  rows($("apps").tBodies[0], apps.apps.map((a) => {
    const healthyKind = a.healthChecks && a.healthChecks.length
      ? (a.tasksHealthy === a.instances ? "ok" : a.tasksUnhealthy > 0 ? "bad" : "warn") : "";
    const failure = a.lastTaskFailure
      ? `<div class="failure">${esc(a.lastTaskFailure.state)}: ${esc(a.lastTaskFailure.message)}</div><div class="muted">${esc(ago(a.lastTaskFailure.timestamp))}</div>` : '<span class="muted">–</span>';
    const dep = (a.deployments || []).length ? pill("deploying", "warn") : pill("stable", "ok");
    const image = a.container && a.container.docker ? a.container.docker.image : "";
    return `<tr data-app="${esc(a.id)}"><td><b>${esc(a.id)}</b></td><td class="num">${a.instances}</td>
      <td class="num">${a.tasksRunning}</td>
      <td class="num">${healthyKind ? pill(a.tasksHealthy + " / " + a.instances, healthyKind) : '<span class="muted">no checks</span>'}</td>
      <td><code>${esc(image)}</code></td><td>${dep}</td><td>${failure}</td></tr>`;
  }), 7, "No apps: POST one to /v2/apps.");

  rows($("tasks").tBodies[0], tasks.map((t) => {
    const results = t.healthCheckResults || [];
    const health = !t.app.healthChecks || !t.app.healthChecks.length ? '<span class="muted">–</span>'
      : results.length === 0 ? pill("unknown", "warn")
      : results.every((r) => r.alive) ? pill("healthy", "ok") : pill("unhealthy", "bad");
    const stateKind = t.state === "TASK_RUNNING" ? "ok" : /FAILED|LOST|ERROR|UNREACHABLE|KILLED/.test(t.state) ? "bad" : "warn";
    const cause = results.find((r) => !r.alive && r.lastFailureCause);
    return `<tr data-task="${esc(t.id)}"><td><code>${esc(t.id)}</code></td><td>${esc(t.slaveId)}<div class="muted">${esc(t.host)}</div></td>
      <td class="num">${(t.ports || []).join(", ") || "–"}</td><td>${pill(t.state.replace("TASK_", ""), stateKind)}</td>
      <td>${health}${cause ? `<div class="failure">${esc(cause.lastFailureCause)}</div>` : ""}</td><td>${esc(ago(t.startedAt))}</td></tr>`;
  }), 6, "No tasks.");

  $("updated").textContent = "updated " + new Date().toLocaleTimeString();
  document.body.dataset.loaded = "true";
}

let pending = null;
function soon() {
  if (pending) return;
  pending = setTimeout(() => { pending = null; refresh().catch(showError); }, 300);
}

function showError(e) {
  $("updated").textContent = String(e.message || e);
}

function live() {
  const es = new EventSource("/v2/events");
  // Every (re)connection re-reads everything: events missed while away are not replayed.
  es.onopen = () => {
    $("live").textContent = "live";
    $("live").classList.add("on");
    refresh().catch(showError);
  };
  es.onerror = () => { $("live").textContent = "reconnecting"; $("live").classList.remove("on"); };
  for (const kind of ["status_update_event", "health_status_changed_event", "deployment_info",
    "deployment_success", "deployment_failed", "api_post_event", "app_terminated_event"]) {
    es.addEventListener(kind, soon);
  }
}

live();
// If the event stream cannot open (a proxy that buffers it), show the fleet anyway.
setTimeout(() => { if (!document.body.dataset.loaded) refresh().catch(showError); }, 3000);
setInterval(soon, 10000); // "last seen" ages, agents' liveness
