"""A worker in python-gearman 2.0's documented style; only the import differs."""
# ruff: noqa: UP008  (legacy python-gearman style, kept as such programs are written)
import json
import sys

from gearman_proto.adapters import compat as gearman  # was: import gearman


class JSONDataEncoder(gearman.DataEncoder):
    @classmethod
    def encode(cls, encodable_object):
        return json.dumps(encodable_object)

    @classmethod
    def decode(cls, decodable_string):
        return json.loads(decodable_string)


class JSONWorker(gearman.GearmanWorker):
    data_encoder = JSONDataEncoder


class CustomGearmanWorker(gearman.GearmanWorker):
    def on_job_execute(self, current_job):
        print("Job started", current_job.task, flush=True)
        return super(CustomGearmanWorker, self).on_job_execute(current_job)

    def after_poll(self, any_activity):
        # Return True if you want to continue polling
        return True


def task_listener_reverse(gearman_worker, gearman_job):
    return gearman_job.data[::-1]


def task_listener_progress(gearman_worker, gearman_job):
    for i in range(1, 4):
        gearman_worker.send_job_status(gearman_job, i, 3)
        gearman_worker.send_job_data(gearman_job, b"chunk %d" % i)
    gearman_worker.send_job_warning(gearman_job, b"almost done")
    return b"done"


def task_listener_fail(gearman_worker, gearman_job):
    gearman_worker.send_job_failure(gearman_job)


def task_listener_explode(gearman_worker, gearman_job):
    raise ValueError("cannot handle " + gearman_job.data.decode())


def task_listener_sum(gearman_worker, gearman_job):
    return {"sum": sum(gearman_job.data["numbers"])}


kind = sys.argv[2] if len(sys.argv) > 2 else "plain"
if kind == "json":
    gm_worker = JSONWorker([sys.argv[1]])
    gm_worker.register_task(sys.argv[3], task_listener_sum)
else:
    gm_worker = CustomGearmanWorker([sys.argv[1]])
    # gm_worker.set_client_id is optional
    gm_worker.set_client_id("python-worker")
    for name, listener in [("reverse", task_listener_reverse),
                           ("progress", task_listener_progress),
                           ("fail", task_listener_fail), ("explode", task_listener_explode)]:
        gm_worker.register_task(sys.argv[3] + name, listener)

print("ready", flush=True)
# Enter our work loop and call gm_worker.after_poll() after each time we timeout/see activity
gm_worker.work(poll_timeout=0.5)
