"""An admin client in python-gearman 2.0's documented style; only the import differs."""

import sys

from gearman_proto.adapters import compat as gearman  # was: import gearman

gm_admin_client = gearman.GearmanAdminClient([sys.argv[1]])

# Inspect server state
ping_time = gm_admin_client.ping_server()
print("ping", isinstance(ping_time, float) and ping_time >= 0)
status_response = gm_admin_client.get_status()
for row in status_response:
    if row["task"].startswith(sys.argv[2]):
        print("status", row["task"][len(sys.argv[2]):], row["queued"], row["running"],
              row["workers"])
version_response = gm_admin_client.get_version()
print("version", bool(version_response))
workers_response = gm_admin_client.get_workers()
for worker in workers_response:
    if worker["client_id"] == "python-worker":
        print("worker", sorted(t[len(sys.argv[2]):] for t in worker["tasks"]))
print("maxqueue", gm_admin_client.send_maxqueue(sys.argv[2] + "reverse", 10))
