"""The real marathon-python 0.13.0 client, unchanged, pointed at a group of bridges.

Usage:
  marathon_failover.py before APP URL...
      The leader and the app's one task, as the client sees them through the first URL.
  marathon_failover.py after APP TASK DEAD FOLLOWER
      After the leader died: the client, given the dead bridge first, moves on to a follower
      (which proxies to the new leader); TASK is still the app's task; a scale to two instances
      lands, and the event stream, asked of the follower (a 302 to the leader), shows the new
      task RUNNING.
Prints one line per step; exits non-zero (with the traceback) on the first failure.
"""
import sys
import threading

from client_common import until  # before marathon: its Python 3.10+ shim

from marathon import MarathonClient  # noqa: E402


phase, app_id = sys.argv[1], sys.argv[2]
if phase == "before":
    c = MarathonClient(sys.argv[3:])
    print("leader", c.get_leader()["leader"])
    app = c.get_app(app_id)
    assert app.tasks_running == 1 and len(app.tasks) == 1, app
    print("task", app.tasks[0].id)
elif phase == "after":
    task, dead, follower = sys.argv[3:6]
    c = MarathonClient([dead, follower])
    print("leader", c.get_leader()["leader"])
    app = c.get_app(app_id)
    assert [t.id for t in app.tasks] == [task], app.tasks
    print("task", app.tasks[0].id)

    # The stream from the follower alone: marathon-python follows its redirect to the leader.
    seen = []

    def stream():
        events = MarathonClient([follower]).event_stream(
            event_types=["event_stream_attached", "status_update_event"]
        )
        for event in events:
            seen.append(event)
            if any(
                e.event_type == "status_update_event"
                and e.task_status == "TASK_RUNNING"
                and e.task_id != task
                for e in seen
            ):
                return

    t = threading.Thread(target=stream, daemon=True)
    t.start()
    until("the event stream attached", lambda: any(e.event_type == "event_stream_attached" for e in seen))
    c.scale_app(app_id, instances=2)
    until("two tasks running", lambda: c.get_app(app_id).tasks_running == 2)
    t.join(timeout=60)
    new = [e.task_id for e in seen if e.event_type == "status_update_event" and e.task_id != task]
    assert new, [e.event_type for e in seen]
    print("scaled", 2, "new task", new[0])
    print("marathon-python: ok")
else:
    raise SystemExit(f"unknown phase {phase!r}")
