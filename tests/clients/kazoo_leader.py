"""Finds the leading Mesos master in ZooKeeper as pymesos's detector does (kazoo, a chroot at
the Mesos path, the lexicographically smallest child other than log_replicas, its JSON's
address.ip and address.port). Prints `leader IP:PORT` and `members N`.

usage: kazoo_leader.py HOST:PORT[,HOST:PORT...] /mesos
"""

import json
import sys

from kazoo.client import KazooClient


def main():
    hosts, path = sys.argv[1], sys.argv[2]
    zk = KazooClient(hosts=hosts + path, timeout=10)
    zk.start(timeout=15)
    try:
        children = [c for c in zk.get_children("/") if c != "log_replicas"]
        members = [c for c in children if c.startswith("json.info_")]
        leader = min(children)
        data, _ = zk.get("/" + leader)
        info = json.loads(data.decode("utf-8"))
        address = info["address"]
        print("leader %s:%d" % (address["ip"], address["port"]))
        print("members %d" % len(members))
    finally:
        zk.stop()
        zk.close()


if __name__ == "__main__":
    main()
