"""Drives outpost-bridge's groups and app versions with the real marathon-python 0.13.0 client,
unchanged: create_group, list_groups, get_group, scale_group, update_group, rollback_group, delete_group,
list_versions, get_version, rollback_app.

Usage: marathon_groups.py BRIDGE_URL IMAGE
Prints one line per step; exits non-zero (with the traceback) on the first failure.
"""
import sys

from client_common import until  # before marathon: its Python 3.10+ shim

from marathon import MarathonClient  # noqa: E402
from marathon.models import MarathonApp  # noqa: E402
from marathon.models.container import (  # noqa: E402
    MarathonContainer,
    MarathonContainerPortMapping,
    MarathonDockerContainer,
)
from marathon.models.group import MarathonGroup  # noqa: E402

URL, IMAGE = sys.argv[1], sys.argv[2]
c = MarathonClient(URL)


def app(app_id, env=None, dependencies=None):
    return MarathonApp(
        id=app_id,
        cpus=0.05,
        mem=32,
        instances=1,
        env=env or {},
        dependencies=dependencies or [],
        container=MarathonContainer(
            type="DOCKER",
            docker=MarathonDockerContainer(
                image=IMAGE,
                network="BRIDGE",
                port_mappings=[MarathonContainerPortMapping(container_port=80, host_port=0, protocol="tcp")],
            ),
        ),
        task_kill_grace_period_seconds=1,
    )


def running(app_id, n):
    def check():
        a = c.get_app(app_id)
        return a.tasks_running == n and len(a.tasks) == n and not a.deployments and a
    return until(f"{n} running tasks of {app_id}", check)


group = MarathonGroup(id="/pyg", apps=[app("db"), app("web", dependencies=["db"])])
created = c.create_group(group)
assert created["deploymentId"], created
print("create_group", created["version"])
web = running("/pyg/web", 1)
db = running("/pyg/db", 1)
assert web.dependencies == ["/pyg/db"], web.dependencies
groups = c.list_groups()
assert [g.id for g in groups] == ["/pyg"], groups
print("list_groups", [g.id for g in groups])
g = c.get_group("/pyg")
assert sorted(a.id for a in g.apps) == ["/pyg/db", "/pyg/web"], g.apps
print("get_group", g.id, len(g.apps))

scaled = c.scale_group("/pyg", 2)
assert scaled["deploymentId"], scaled
running("/pyg/web", 2)
running("/pyg/db", 2)
print("scale_group", 2)

update = MarathonGroup(id="/pyg", apps=[app("db"), app("web", env={"COLOR": "blue"}, dependencies=["db"])])
updated = c.update_group("/pyg", update)
assert updated["deploymentId"], updated
until("web at the new config", lambda: c.get_app("/pyg/web").env.get("COLOR") == "blue")
running("/pyg/web", 1)
running("/pyg/db", 1)
print("update_group", updated["version"])

back = c.rollback_group("/pyg", created["version"])
assert back["deploymentId"], back
until("the group back as created", lambda: "COLOR" not in c.get_app("/pyg/web").env)
running("/pyg/web", 1)
running("/pyg/db", 1)
print("rollback_group", back["version"])

versions = c.list_versions("/pyg/web")
assert len(versions) == 4, versions  # created, scaled, changed, rolled back
oldest = c.get_version("/pyg/web", versions[-1])
assert oldest.env == {} and oldest.instances == 1, oldest
blue = c.get_version("/pyg/web", versions[1])
assert blue.env == {"COLOR": "blue"}, blue.env
print("list_versions", len(versions), "get_version", oldest.version)
again = c.rollback_app("/pyg/web", versions[1])
assert again["deploymentId"], again
until("web at the blue version again", lambda: c.get_app("/pyg/web").env.get("COLOR") == "blue")
running("/pyg/web", 1)
print("rollback_app", again["version"])

deleted = c.delete_group("/pyg")
assert deleted["deploymentId"], deleted
until("the group gone", lambda: not c.list_groups() and not c.list_apps())
print("delete_group", deleted["version"])
print("marathon-python groups: ok")
