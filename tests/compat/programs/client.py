"""A client in python-gearman 2.0's documented style; only the import differs."""
# ruff: noqa: UP031  (legacy python-gearman style, kept as such programs are written)
import json
import sys

from gearman_proto.adapters import compat as gearman  # was: import gearman

server, prefix = sys.argv[1], sys.argv[2]


def check_request_status(job_request):
    if job_request.complete:
        print("Job %s finished!  Result: %s - %r" % (job_request.job.unique, job_request.state,
                                                     job_request.result))
    elif job_request.timed_out:
        print("Job %s timed out!" % job_request.unique)
    elif job_request.state == gearman.JOB_UNKNOWN:
        print("Job %s connection failed!" % job_request.unique)


gm_client = gearman.GearmanClient([server])

# a single job
completed_job_request = gm_client.submit_job(prefix + "reverse", "Hello world!")
check_request_status(completed_job_request)
print("result", completed_job_request.result)

# several at once
list_of_jobs = [dict(task=prefix + "reverse", data="abc"),
                dict(task=prefix + "reverse", data="xyz", priority=gearman.PRIORITY_HIGH),
                dict(task=prefix + "reverse", data="123", priority=gearman.PRIORITY_LOW)]
submitted_requests = gm_client.submit_multiple_jobs(list_of_jobs, background=False,
                                                    wait_until_complete=False)
completed_requests = gm_client.wait_until_jobs_completed(submitted_requests, poll_timeout=10.0)
print("multiple", [r.result for r in completed_requests],
      all(r.complete for r in completed_requests))

# progress, data and warnings
request = gm_client.submit_job(prefix + "progress", "")
print("progress", request.result, list(request.data_updates), list(request.warning_updates),
      request.status["numerator"], request.status["denominator"])

# failures
request = gm_client.submit_job(prefix + "fail", "x")
print("fail", request.state, request.complete, request.result)
request = gm_client.submit_job(prefix + "explode", "this")
print("explode", request.state, request.exception)

# background, then its status
request = gm_client.submit_job(prefix + "reverse", "in the background", background=True)
print("background", request.state, request.complete, request.job.handle is not None)
status = gm_client.get_job_status(request)
print("status keys", sorted(status.status))

# nobody serves this: the wait times out
request = gm_client.submit_job(prefix + "nobody", "x", poll_timeout=0.3)
check_request_status(request)
print("timed out", request.timed_out, request.state)


# a data encoder
class JSONDataEncoder(gearman.DataEncoder):
    @classmethod
    def encode(cls, encodable_object):
        return json.dumps(encodable_object)

    @classmethod
    def decode(cls, decodable_string):
        return json.loads(decodable_string)


class JSONClient(gearman.GearmanClient):
    data_encoder = JSONDataEncoder


json_client = JSONClient([server])
request = json_client.submit_job(prefix + "sum", {"numbers": [1, 2, 3, 4]})
print("json", request.result)

try:
    gearman.GearmanClient(["127.0.0.1:1"]).submit_job(prefix + "reverse", "x")
except gearman.ServerUnavailable as exc:
    print("unavailable", type(exc).__name__, isinstance(exc, gearman.GearmanError))
