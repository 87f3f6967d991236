"""What the Python client scripts share: the shim marathon-python 0.13.0 needs on Python 3.10+
(import this before `marathon`), and waiting for a condition with a deadline."""
import collections
import collections.abc
import time

# marathon 0.13.0 still uses collections.Iterable, gone since Python 3.10 (its own bug; the
# shim is the documented workaround, not a change to the client).
collections.Iterable = collections.abc.Iterable


def until(what, check, timeout=60):
    """Polls `check` every 0.2 s until it returns something true (returned), or exits naming
    `what` after `timeout` seconds."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise SystemExit(f"timed out waiting for {what}")
