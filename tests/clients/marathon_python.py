"""Drives outpost-bridge with the real marathon-python 0.13.0 client, unchanged.

Usage: marathon_python.py BRIDGE_URL IMAGE
Prints one line per step; exits non-zero (with the traceback) on the first failure.
"""
import sys
import threading

from client_common import until  # before marathon: its Python 3.10+ shim

from marathon import MarathonClient  # noqa: E402
from marathon.models import MarathonApp, MarathonHealthCheck  # noqa: E402
from marathon.models.container import (  # noqa: E402
    MarathonContainer,
    MarathonContainerPortMapping,
    MarathonDockerContainer,
)

URL, IMAGE = sys.argv[1], sys.argv[2]
APP = "/py/web"
c = MarathonClient(URL)


def settled(n):
    def check():
        app = c.get_app(APP)
        return (
            app.tasks_healthy == n
            and len(app.tasks) == n
            and not app.deployments
            and not c.list_deployments()
        ) and app
    return until(f"{n} healthy tasks and no deployment", check)


print("info", c.get_info().name, c.get_info().version)
print("ping", c.ping())
print("leader", c.get_leader())
app = MarathonApp(
    id=APP,
    cpus=0.05,
    mem=32,
    instances=1,
    container=MarathonContainer(
        type="DOCKER",
        docker=MarathonDockerContainer(
            image=IMAGE,
            network="BRIDGE",
            port_mappings=[MarathonContainerPortMapping(container_port=80, host_port=0, protocol="tcp")],
        ),
    ),
    health_checks=[
        MarathonHealthCheck(
            protocol="MESOS_HTTP",
            path="/health",
            port_index=0,
            grace_period_seconds=0,
            interval_seconds=1,
            timeout_seconds=2,
            max_consecutive_failures=3,
        )
    ],
    task_kill_grace_period_seconds=1,
)
created = c.create_app(APP, app)
print("created", created.id, created.instances)
one = settled(1)
print("healthy", one.tasks[0].id, one.tasks[0].ports, one.tasks[0].started_at)
apps = c.list_apps(embed_tasks=True, embed_counts=True)
assert [a.id for a in apps] == [APP], apps
print("list_apps", len(apps), len(apps[0].tasks))

# The event stream, read while a scale runs.
seen = []


def stream():
    for event in c.event_stream(event_types=["event_stream_attached", "status_update_event"]):
        seen.append(event)
        if sum(1 for e in seen if e.event_type == "status_update_event") >= 2:
            return


t = threading.Thread(target=stream, daemon=True)
t.start()
# The scale's events must follow the attachment: wait for it, not for a fixed time.
until("the event stream attached", lambda: any(e.event_type == "event_stream_attached" for e in seen))
c.scale_app(APP, instances=2)
two = settled(2)
t.join(timeout=30)
updates = [e for e in seen if e.event_type == "status_update_event"]
assert len(updates) >= 2, seen
print("events", [type(e).__name__ for e in seen], updates[0].task_status)

tasks = c.list_tasks(APP)
assert len(tasks) == 2
c.kill_task(APP, tasks[0].id, scale=True)
until("scaled to 1 by the kill", lambda: c.get_app(APP).instances == 1)
settled(1)
print("kill_task scale")

print("queue", c.list_queue())
dep = c.restart_app(APP)
print("restart", dep["deploymentId"])
settled(1)
deleted = c.delete_app(APP, force=True)
print("delete", deleted["deploymentId"])
until("the app gone", lambda: APP not in [a.id for a in c.list_apps()])
print("marathon-python: ok")
