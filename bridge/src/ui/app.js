// Outpost's fleet view: agents, apps and tasks from the bridge's own APIs (/ui/agents,
// /v2/apps, /v2/deployments), refreshed on every event of /v2/events, and the actions an
// operator takes on them (deploy, scale, restart, suspend, destroy, kill, read a task's logs)
// through the same Marathon API. No build step.
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

// What the last refresh read: the agent panel shows from it.
let last = { agents: [], apps: [] };

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
  last = { agents: agents.agents, apps: apps.apps };

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
      <td><code>${esc(image)}</code></td><td>${dep}</td><td>${failure}</td>
      <td class="actions"><button data-action="scale" data-app="${esc(a.id)}" data-instances="${a.instances}">Scale</button><button data-action="restart" data-app="${esc(a.id)}">Restart</button><button data-action="suspend" data-app="${esc(a.id)}">Suspend</button><button data-action="destroy" data-app="${esc(a.id)}" class="danger">Destroy</button></td></tr>`;
  }), 8, "No apps: deploy one (the button above), or POST one to /v2/apps.");

  rows($("tasks").tBodies[0], tasks.map((t) => {
    const results = t.healthCheckResults || [];
    const health = !t.app.healthChecks || !t.app.healthChecks.length ? '<span class="muted">–</span>'
      : results.length === 0 ? pill("unknown", "warn")
      : results.every((r) => r.alive) ? pill("healthy", "ok") : pill("unhealthy", "bad");
    const stateKind = t.state === "TASK_RUNNING" ? "ok" : /FAILED|LOST|ERROR|UNREACHABLE|KILLED/.test(t.state) ? "bad" : "warn";
    const cause = results.find((r) => !r.alive && r.lastFailureCause);
    return `<tr data-task="${esc(t.id)}"><td><code>${esc(t.id)}</code></td><td>${esc(t.slaveId)}<div class="muted">${esc(t.host)}</div></td>
      <td class="num">${(t.ports || []).join(", ") || "–"}</td><td>${pill(t.state.replace("TASK_", ""), stateKind)}</td>
      <td>${health}${cause ? `<div class="failure">${esc(cause.lastFailureCause)}</div>` : ""}</td><td>${esc(ago(t.startedAt))}</td>
      <td class="actions"><button data-action="logs" data-task="${esc(t.id)}">Logs</button><button data-action="kill" data-task="${esc(t.id)}" data-app="${esc(t.appId)}" class="danger">Kill</button></td></tr>`;
  }), 7, "No tasks.");

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

// ---------------------------------------------------------------------------------------------
// Actions: each is one call of the Marathon API; what it answers (an error's message, a 403
// for a user without the admin role) is shown in the notice under the header.

async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const r = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  let v = null;
  try { v = await r.json(); } catch (_) { v = null; }
  if (!r.ok) {
    const e = new Error((v && v.message) || `${method} ${path}: HTTP ${r.status}`);
    e.status = r.status;
    e.body = v;
    throw e;
  }
  return v;
}

function notice(text, ok) {
  const n = $("notice");
  n.textContent = text;
  n.classList.toggle("ok", !!ok);
  n.hidden = !text;
}

function failed(what) {
  return (e) => notice(`${what}: ${e.message}${e.status === 403 ? " (this needs the admin role)" : ""}`);
}

// A question in a dialog of the page (not window.confirm, which blocks the page); resolves to
// true, the number entered, or null when cancelled.
function ask(title, text, number) {
  return new Promise((resolve) => {
    $("ask-title").textContent = title;
    $("ask-text").textContent = text;
    $("ask-number-label").hidden = number === undefined;
    if (number !== undefined) $("ask-number").value = number;
    const d = $("ask");
    const done = (v) => { d.close(); $("ask-ok").onclick = $("ask-cancel").onclick = null; resolve(v); };
    $("ask-ok").onclick = () => done(number === undefined ? true : Number($("ask-number").value));
    $("ask-cancel").onclick = () => done(null);
    d.showModal();
  });
}

const appPath = (id) => "/v2/apps" + (id.startsWith("/") ? id : "/" + id);

async function act(button) {
  const { action, app, task } = button.dataset;
  if (action === "scale") {
    const n = await ask(`Scale ${app}`, "How many instances?", Number(button.dataset.instances));
    if (n === null || !Number.isInteger(n) || n < 0) return;
    await api("PUT", appPath(app), { instances: n });
    notice(`${app}: scaling to ${n}`, true);
  } else if (action === "restart") {
    await api("POST", appPath(app) + "/restart");
    notice(`${app}: restarting its tasks`, true);
  } else if (action === "suspend") {
    if (!(await ask(`Suspend ${app}?`, "Every task is killed; the app stays, with 0 instances."))) return;
    await api("PUT", appPath(app), { instances: 0 });
    notice(`${app}: suspended`, true);
  } else if (action === "destroy") {
    if (!(await ask(`Destroy ${app}?`, "Every task is killed and the app is forgotten."))) return;
    await api("DELETE", appPath(app));
    notice(`${app}: destroyed`, true);
  } else if (action === "kill") {
    if (!(await ask(`Kill ${task}?`, "The task is killed; the app replaces it."))) return;
    await api("DELETE", appPath(app) + "/tasks/" + encodeURIComponent(task));
    notice(`${task}: killed`, true);
  } else if (action === "logs") {
    openLogs(task);
  } else if (action === "drain") {
    const agent = button.dataset.agent;
    if (!(await ask(`Drain ${agent}?`, "It takes no more launches; its apps' tasks are killed and replaced on other agents."))) return;
    const r = await api("POST", `/v2/agents/${encodeURIComponent(agent)}/drain`);
    $("agent").close();
    notice(`${agent}: draining; moving ${r.moved.length} task(s)${r.moved.length ? ": " + r.moved.join(", ") : ""}`, true);
  } else if (action === "undrain") {
    const agent = button.dataset.agent;
    await api("POST", `/v2/agents/${encodeURIComponent(agent)}/undrain`);
    $("agent").close();
    notice(`${agent}: taking launches again`, true);
  }
  soon();
}

document.addEventListener("click", (ev) => {
  const button = ev.target.closest("button[data-action]");
  if (button) act(button).catch(failed(`${button.dataset.action} ${button.dataset.app || button.dataset.task || button.dataset.agent}`));
  const agent = ev.target.closest("tr[data-agent] b");
  if (agent) openAgent(agent.closest("tr").dataset.agent);
});

// Deploy from JSON: Marathon's 422 lists every bad field with its path, shown under the text.
$("deploy-open").onclick = () => { $("deploy-errors").innerHTML = ""; $("deploy").showModal(); };
$("deploy-cancel").onclick = () => $("deploy").close();
$("deploy-submit").onclick = async () => {
  const errors = $("deploy-errors");
  errors.innerHTML = "";
  let def;
  try {
    def = JSON.parse($("deploy-json").value);
  } catch (e) {
    errors.innerHTML = `<li data-path="/"><code>JSON</code>: ${esc(e.message)}</li>`;
    return;
  }
  if (!def || typeof def.id !== "string" || !def.id) {
    errors.innerHTML = `<li data-path="/id"><code>/id</code>: an app needs an id</li>`;
    return;
  }
  try {
    await api("PUT", appPath(def.id), def);
    $("deploy").close();
    notice(`${def.id}: deploying`, true);
    soon();
  } catch (e) {
    const details = (e.body && e.body.details) || [];
    errors.innerHTML = details.length
      ? details.map((d) => `<li data-path="${esc(d.path)}"><code>${esc(d.path)}</code>: ${esc((d.errors || []).join("; "))}</li>`).join("")
      : `<li>${esc(e.message)}${e.status === 403 ? " (this needs the admin role)" : ""}</li>`;
  }
};

// A task's logs, read from its agent through the bridge; a follow streams until closed (the
// bridge then tells the agent to stop).
let logsAbort = null;
function openLogs(task) {
  $("logs-task").textContent = task;
  $("logs").dataset.task = task;
  $("logs").showModal();
  loadLogs();
}
async function loadLogs() {
  if (logsAbort) logsAbort.abort();
  const abort = new AbortController();
  logsAbort = abort;
  const task = $("logs").dataset.task;
  const follow = $("logs-follow").checked;
  const q = new URLSearchParams({ stream: $("logs-stream").value, tail: $("logs-tail").value || "200", follow: String(follow) });
  const text = $("logs-text"), status = $("logs-status");
  text.textContent = "";
  status.textContent = follow ? "following…" : "reading…";
  try {
    const r = await fetch(`/v2/tasks/${encodeURIComponent(task)}/logs?${q}`, { signal: abort.signal, headers: { Accept: "text/plain" } });
    if (!r.ok) {
      let m = "HTTP " + r.status;
      try { m = (await r.json()).message || m; } catch (_) { /* not JSON */ }
      status.textContent = m;
      return;
    }
    const reader = r.body.getReader();
    const decoder = new TextDecoder();
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      text.textContent += decoder.decode(value, { stream: true });
      text.scrollTop = text.scrollHeight;
    }
    status.textContent = "end of log";
  } catch (e) {
    if (e.name !== "AbortError") status.textContent = String(e.message || e);
  }
}
$("logs-reload").onclick = loadLogs;
$("logs-follow").onchange = loadLogs;
$("logs-close").onclick = () => { if (logsAbort) logsAbort.abort(); $("logs").close(); };

// An agent: its resources, attributes and tasks, from the last refresh.
function openAgent(id) {
  const a = last.agents.find((x) => x.id === id);
  if (!a) return;
  const tasks = last.apps.flatMap((app) => (app.tasks || []).filter((t) => t.slaveId === id));
  const o = a.offered, u = a.used;
  const attrs = Object.entries(a.attributes || {}).map(([k, v]) => `<code>${esc(k)}=${esc(v)}</code>`).join(" ") || "–";
  $("agent-id").textContent = id;
  $("agent-body").innerHTML = `<table><tbody>
    <tr><th>Host</th><td>${esc(a.hostname)}</td></tr>
    <tr><th>State</th><td>${esc(a.liveness)}${a.unreachable_since ? " since " + esc(ago(a.unreachable_since)) : ""}; last seen ${esc(ago(a.last_seen))}</td></tr>
    <tr><th>Attributes</th><td>${attrs}</td></tr>
    <tr><th>CPUs</th><td>${o ? usage(u.cpus, u.cpus + o.cpus, "CPUs") : "–"}</td></tr>
    <tr><th>Memory</th><td>${o ? usage(u.mem, u.mem + o.mem, "MiB") : "–"}</td></tr>
    <tr><th>Disk free</th><td>${o ? Math.round(o.disk) + " MiB" : "–"}</td></tr>
    <tr><th>Tasks</th><td>${tasks.length ? tasks.map((t) => `<div><code>${esc(t.id)}</code> ${esc(t.state.replace("TASK_", ""))} <button data-action="logs" data-task="${esc(t.id)}">Logs</button></div>`).join("") : "none"}</td></tr>
  </tbody></table>
  <div class="buttons left">${a.liveness === "draining"
    ? `<button data-action="undrain" data-agent="${esc(id)}">Undrain</button>`
    : `<button data-action="drain" data-agent="${esc(id)}" class="danger">Drain</button>`}</div>`;
  $("agent").showModal();
}
$("agent-close").onclick = () => $("agent").close();

live();
// If the event stream cannot open (a proxy that buffers it), show the fleet anyway.
setTimeout(() => { if (!document.body.dataset.loaded) refresh().catch(showError); }, 3000);
setInterval(soon, 10000); // "last seen" ages, agents' liveness
