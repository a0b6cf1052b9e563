"""python-gearman's API (``GearmanClient``, ``GearmanWorker``, ``GearmanAdminClient``) over
:mod:`gearman_proto.adapters.sync`.

A program written for python-gearman 2.0 runs with one changed line::

    from gearman_proto.adapters import compat as gearman

Every call goes through the blocking adapter's public ``Client``, ``Worker``
and ``AdminClient``: this module only translates names, request objects,
states and exceptions, and applies the ``data_encoder`` at the edge.  Where
python-gearman behaved badly we do otherwise (``docs/compat.md`` lists each):
a job submitted without ``unique`` gets a random unique id (python-gearman sent
none, and gearmand coalesced identical submissions by their data); many
requests are in flight on one connection instead of one at a time under a lock;
a job whose connection drops is resubmitted at most ``max_retries`` times.

Payloads are ``bytes`` (what Python 2's ``str`` was): the default
:class:`NoopEncoder` passes bytes through and encodes ``str`` as UTF-8.
Function names, handles and unique ids are given back as ``str``.
"""

from __future__ import annotations

import collections
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import Any, ClassVar

from gearman_proto.admin import AdminError
from gearman_proto.events import Priority, WorkData, WorkStatus, WorkWarning

from . import _common
from . import sync as _sync

__all__ = [
    "GearmanClient", "GearmanWorker", "GearmanAdminClient", "GearmanJob", "GearmanJobRequest",
    "DataEncoder", "NoopEncoder",
    "PRIORITY_NONE", "PRIORITY_LOW", "PRIORITY_HIGH",
    "JOB_UNKNOWN", "JOB_PENDING", "JOB_CREATED", "JOB_FAILED", "JOB_COMPLETE",
    "GearmanError", "ConnectionError", "ServerUnavailable", "ProtocolError",
    "UnknownCommandError", "ExceededConnectionAttempts", "InvalidClientState",
    "InvalidWorkerState", "InvalidAdminClientState",
]

PRIORITY_NONE = None
PRIORITY_LOW = "LOW"
PRIORITY_HIGH = "HIGH"

JOB_UNKNOWN = "UNKNOWN"
JOB_PENDING = "PENDING"
JOB_CREATED = "CREATED"
JOB_FAILED = "FAILED"
JOB_COMPLETE = "COMPLETE"

POLL_TIMEOUT_IN_SECONDS = 60.0

_PRIORITIES = {PRIORITY_NONE: Priority.NORMAL, PRIORITY_LOW: Priority.LOW,
               PRIORITY_HIGH: Priority.HIGH}


# -- exceptions: python-gearman's names, under our GearmanError ----------------------------


class GearmanError(_common.GearmanError):
    """Base of python-gearman's exceptions (also one of ``gearman_proto.adapters``'s)."""


class ConnectionError(GearmanError):  # python-gearman's name, shadowing the builtin
    """A connection to a job server failed."""


class ServerUnavailable(GearmanError):
    """No job server could be reached."""


class ProtocolError(GearmanError):
    """The job server answered with an ERROR packet, or broke the protocol."""


class UnknownCommandError(GearmanError):
    """A command python-gearman did not know (kept for ``except`` clauses)."""


class ExceededConnectionAttempts(GearmanError):
    """A request lost its connection more than ``max_retries`` times."""


class InvalidClientState(GearmanError):
    """A client method was called on a request it cannot apply to."""


class InvalidWorkerState(GearmanError):
    """A worker method was called out of turn (``send_job_*`` for a job not in hand)."""


class InvalidAdminClientState(GearmanError):
    """An admin command was refused by the server (``ERR``)."""


# -- data encoders -------------------------------------------------------------------------


class DataEncoder:
    """How payloads become bytes and back: subclass and set ``data_encoder`` on a client
    or worker class (``encode``/``decode`` are classmethods, as in python-gearman)."""

    @classmethod
    def encode(cls, encodable_object: Any) -> bytes | str:
        raise NotImplementedError

    @classmethod
    def decode(cls, decodable_string: bytes) -> Any:
        raise NotImplementedError


class NoopEncoder(DataEncoder):
    """The default: bytes pass as they are, ``str`` is sent as UTF-8."""

    @classmethod
    def encode(cls, encodable_object: Any) -> bytes | str:
        if not isinstance(encodable_object, (bytes, bytearray, str)):
            raise TypeError(f"expecting bytes or str, got {type(encodable_object)!r}")
        return encodable_object if isinstance(encodable_object, str) else bytes(encodable_object)

    @classmethod
    def decode(cls, decodable_string: bytes) -> Any:
        return decodable_string


def _text(value: bytes | None) -> str:
    return "" if value is None else value.decode("utf-8", "replace")


def _convert(exc: Exception) -> GearmanError:
    """Our adapter's exception as python-gearman's."""
    if isinstance(exc, GearmanError):
        return exc
    if isinstance(exc, _common.NoServerAvailable):
        return ServerUnavailable(str(exc))
    if isinstance(exc, _common.ConnectionLost):
        return ConnectionError(str(exc))
    if isinstance(exc, _common.ServerError):
        return ProtocolError(str(exc))
    return GearmanError(str(exc))


# -- the client ----------------------------------------------------------------------------


class GearmanJob:
    """One job: ``handle``, ``task``, ``unique`` and ``data`` (``connection`` is the
    server's address)."""

    def __init__(self, connection: Any, handle: str | None, task: str, unique: str | None,
                 data: Any) -> None:
        self.connection = connection
        self.handle = handle
        self.task = task
        self.unique = unique
        self.data = data

    def to_dict(self) -> dict[str, Any]:
        return {"task": self.task, "job_handle": self.handle, "unique": self.unique,
                "data": self.data}

    def __repr__(self) -> str:
        return (f"<GearmanJob connection/handle=({self.connection!r}, {self.handle!r}), "
                f"task={self.task!r}, unique={self.unique!r}, data={self.data!r}>")


class GearmanJobRequest:
    """A submitted job as the client follows it: ``state``, ``result``, ``exception``,
    ``timed_out``, ``complete``, the updates received and the last ``status``."""

    def __init__(self, gearman_job: GearmanJob, initial_priority: str | None = PRIORITY_NONE,
                 background: bool = False, max_attempts: int = 1) -> None:
        self.gearman_job = gearman_job
        self.priority = initial_priority
        self.background = background
        self.connection_attempts = 0
        self.max_connection_attempts = max_attempts
        self._job: _sync.Job | None = None
        self.initialize_request()

    def initialize_request(self) -> None:
        """Forget any earlier outcome (before a resubmission)."""
        self.state = JOB_UNKNOWN
        self.timed_out = False
        self.result: Any = None
        self.exception: Any = None
        self.warning_updates: collections.deque[Any] = collections.deque()
        self.data_updates: collections.deque[Any] = collections.deque()
        self.status: dict[str, Any] = {}
        self._job = None

    @property
    def job(self) -> GearmanJob:
        return self.gearman_job

    @property
    def unique(self) -> str | None:
        return self.gearman_job.unique

    @property
    def connection_failed(self) -> bool:
        """Never sent: every attempt to reach a server failed."""
        return self.state == JOB_UNKNOWN

    @property
    def complete(self) -> bool:
        """A background job is complete once accepted; a foreground one once it ended."""
        if self.background:
            return self.state == JOB_CREATED
        return self.state in (JOB_FAILED, JOB_COMPLETE)

    def __repr__(self) -> str:
        return (f"<GearmanJobRequest task={self.job.task!r}, unique={self.job.unique!r}, "
                f"priority={self.priority!r}, background={self.background!r}, "
                f"state={self.state!r}, timed_out={self.timed_out!r}>")


class GearmanClient:
    """python-gearman's client: ``submit_job`` and friends, over one blocking ``Client``."""

    data_encoder: ClassVar[type[DataEncoder]] = NoopEncoder
    job_class: ClassVar[type[GearmanJob]] = GearmanJob
    job_request_class: ClassVar[type[GearmanJobRequest]] = GearmanJobRequest

    def __init__(self, host_list: Sequence[Any] | None = None, random_unique_bytes: int = 16
                 ) -> None:
        self._client = _sync.Client(list(host_list or ["localhost:4730"]),
                                    connect_timeout=5.0, created_timeout=30.0)
        self.random_unique_bytes = random_unique_bytes

    def shutdown(self) -> None:
        """Close the connections."""
        self._client.close()

    def __enter__(self) -> GearmanClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    def submit_job(self, task: str, data: Any, unique: str | None = None,
                   priority: str | None = PRIORITY_NONE, background: bool = False,
                   wait_until_complete: bool = True, max_retries: int = 0,
                   poll_timeout: float | None = None) -> GearmanJobRequest:
        """Submit one job; wait for its end unless ``background`` or not ``wait_until_complete``."""
        request = self._create_request(task, data, unique, priority, background, max_retries)
        self.submit_multiple_requests([request], wait_until_complete, poll_timeout)
        return request

    def submit_multiple_jobs(self, jobs_to_submit: Iterable[dict[str, Any]],
                             background: bool = False, wait_until_complete: bool = True,
                             max_retries: int = 0, poll_timeout: float | None = None
                             ) -> list[GearmanJobRequest]:
        """Submit jobs given as dicts (``task``, ``data``, optional ``unique``,
        ``priority``); all are in flight at once."""
        requests = [self._create_request(j["task"], j["data"], j.get("unique"),
                                         j.get("priority", PRIORITY_NONE), background,
                                         max_retries) for j in jobs_to_submit]
        return self.submit_multiple_requests(requests, wait_until_complete, poll_timeout)

    def submit_multiple_requests(self, job_requests: list[GearmanJobRequest],
                                 wait_until_complete: bool = True,
                                 poll_timeout: float | None = None) -> list[GearmanJobRequest]:
        """Submit (or resubmit) request objects."""
        for request in job_requests:
            self._send(request)
        if wait_until_complete:
            self.wait_until_jobs_completed(job_requests, poll_timeout)
        return job_requests

    def wait_until_jobs_accepted(self, job_requests: list[GearmanJobRequest],
                                 poll_timeout: float | None = None) -> list[GearmanJobRequest]:
        """Submission already waits for JOB_CREATED: nothing is left to wait for."""
        return job_requests

    def wait_until_jobs_completed(self, job_requests: list[GearmanJobRequest],
                                  poll_timeout: float | None = None) -> list[GearmanJobRequest]:
        """Wait for every foreground request to end, at most ``poll_timeout`` seconds in all;
        those still running then have ``timed_out`` set."""
        deadline = None if poll_timeout is None else time.monotonic() + poll_timeout
        for request in job_requests:
            while not request.background and request.state == JOB_CREATED:
                if not self._follow(request, deadline):
                    break
        return job_requests

    def get_job_status(self, current_request: GearmanJobRequest,
                       poll_timeout: float | None = None) -> GearmanJobRequest:
        """Ask the server that holds the job for its status; fill ``status``."""
        return self.get_job_statuses([current_request], poll_timeout)[0]

    def get_job_statuses(self, job_requests: list[GearmanJobRequest],
                         poll_timeout: float | None = None) -> list[GearmanJobRequest]:
        for request in job_requests:
            if request.job.handle is None:
                raise InvalidClientState(f"{request!r} has no job handle yet")
            try:
                res = self._client.get_status(request.job.handle)
            except Exception as exc:
                if isinstance(exc, _common.JobTimeout):
                    request.timed_out = True
                    continue
                raise _convert(exc) from exc
            request.status = {"handle": request.job.handle, "known": res.known,
                              "running": res.running, "numerator": res.numerator,
                              "denominator": res.denominator, "time_received": time.time()}
            request.timed_out = False
        return job_requests

    # -- internals ------------------------------------------------------------------------

    def _create_request(self, task: str, data: Any, unique: str | None, priority: str | None,
                        background: bool, max_retries: int) -> GearmanJobRequest:
        if priority not in _PRIORITIES:
            raise ValueError(f"priority must be PRIORITY_NONE, PRIORITY_LOW or PRIORITY_HIGH, "
                             f"not {priority!r}")
        if unique is None:  # random, so identical submissions never coalesce by accident
            unique = uuid.uuid4().hex[:2 * self.random_unique_bytes]
        job = self.job_class(None, None, task, unique, data)
        return self.job_request_class(job, priority, background, max_retries + 1)

    def _send(self, request: GearmanJobRequest) -> None:
        """Submit ``request`` and wait for JOB_CREATED (raising what python-gearman raised)."""
        if request.connection_attempts >= request.max_connection_attempts:
            raise ExceededConnectionAttempts(
                f"exceeded {request.max_connection_attempts} connection attempt(s) :: "
                f"{request!r}")
        job = request.job
        request.initialize_request()
        request.connection_attempts += 1
        request.state = JOB_PENDING
        try:
            submitted = self._client.submit(
                job.task, self.data_encoder.encode(job.data), unique=job.unique,
                priority=_PRIORITIES[request.priority], background=request.background)
        except _common.ConnectionLost:
            request.state = JOB_UNKNOWN
            self._send(request)
            return
        except Exception as exc:
            request.state = JOB_UNKNOWN
            raise _convert(exc) from exc
        request._job = submitted
        job.handle = submitted.handle.decode("utf-8", "replace")
        job.connection = submitted.server
        request.state = JOB_CREATED

    def _follow(self, request: GearmanJobRequest, deadline: float | None) -> bool:
        """Collect the request's updates until it ends; False if the deadline passed."""
        job = request._job
        assert job is not None
        decode = self.data_encoder.decode

        def left() -> float | None:
            return None if deadline is None else max(0.0, deadline - time.monotonic())

        try:
            for update in job.updates(left()):
                if isinstance(update, WorkData):
                    request.data_updates.append(decode(update.data))
                elif isinstance(update, WorkWarning):
                    request.warning_updates.append(decode(update.data))
                elif isinstance(update, WorkStatus):
                    request.status = {"handle": request.job.handle, "known": True,
                                      "running": True, "numerator": update.numerator,
                                      "denominator": update.denominator,
                                      "time_received": time.time()}
            result = job.wait(left())
        except _common.JobTimeout:
            request.timed_out = True
            return False
        except _common.JobException as exc:
            request.exception = decode(exc.data)
            request.state = JOB_FAILED
        except _common.JobFailed:
            request.state = JOB_FAILED
        except _common.ConnectionLost:
            self._send(request)  # python-gearman resubmitted a request whose connection died
            return True
        else:
            request.result = decode(result or b"")
            request.state = JOB_COMPLETE
        return True


# -- the worker ----------------------------------------------------------------------------


class GearmanWorker:
    """python-gearman's worker: ``register_task(name, callback(worker, job))``, ``work()``.

    ``work(poll_timeout)`` runs a blocking ``Worker`` of ours (one job at a
    time, as python-gearman did) and calls :meth:`after_poll` in the calling
    thread after each job and after each ``poll_timeout`` seconds without one;
    when it returns False, ``work()`` returns.  Callbacks run in the worker's
    job thread.  A callback that raises sends WORK_EXCEPTION with its message
    (a client without the exceptions option gets WORK_FAIL).
    """

    data_encoder: ClassVar[type[DataEncoder]] = NoopEncoder
    job_class: ClassVar[type[GearmanJob]] = GearmanJob

    def __init__(self, host_list: Sequence[Any] | None = None) -> None:
        self.host_list = list(host_list or ["localhost:4730"])
        self.worker_client_id: str | None = None
        self.worker_abilities: dict[str, Callable[[GearmanWorker, GearmanJob], Any]] = {}
        self._worker: _sync.Worker | None = None
        self._activity = threading.Event()
        self._lock = threading.Lock()

    def set_client_id(self, client_id: str) -> None:
        self.worker_client_id = client_id

    def register_task(self, task: str, callback_function: Callable[[GearmanWorker, GearmanJob],
                                                                   Any]) -> str:
        """Run ``callback_function(worker, job)`` for ``task``; its return value is the result."""
        self.worker_abilities[task] = callback_function
        return task

    def unregister_task(self, task: str) -> str:
        self.worker_abilities.pop(task, None)
        return task

    def after_poll(self, any_activity: bool) -> bool:
        """Override to stop :meth:`work`: return False.  ``any_activity``: a job ran."""
        return True

    def shutdown(self) -> None:
        """Stop :meth:`work` (the job in hand finishes first)."""
        worker = self._worker
        if worker is not None:
            worker.stop()

    def work(self, poll_timeout: float = POLL_TIMEOUT_IN_SECONDS) -> None:
        """Serve jobs until :meth:`after_poll` returns False (or :meth:`shutdown`)."""
        worker = _sync.Worker(self.host_list, client_id=self.worker_client_id, max_jobs=1)
        for task in self.worker_abilities:
            worker.register(task, self._handler(task))
        self._worker = worker
        failure: list[BaseException] = []

        def run() -> None:
            try:
                worker.work()
            except BaseException as exc:  # raised again in the caller's thread
                failure.append(exc)
            finally:
                self._activity.set()

        thread = threading.Thread(target=run, name="gearman-compat-worker", daemon=True)
        thread.start()
        try:
            while thread.is_alive():
                any_activity = self._activity.wait(poll_timeout)
                self._activity.clear()
                if not thread.is_alive():
                    break
                if not self.after_poll(any_activity):
                    break
        finally:
            worker.stop()
            thread.join()
            self._worker = None
        if failure:
            raise _convert(failure[0]) if isinstance(failure[0], Exception) else failure[0]

    # -- reports from inside a callback ------------------------------------------------------

    def send_job_status(self, current_job: GearmanJob, numerator: int, denominator: int,
                        poll_timeout: float | None = None) -> None:
        self._in_hand(current_job).send_status(numerator, denominator)

    def send_job_data(self, current_job: GearmanJob, data: Any,
                      poll_timeout: float | None = None) -> None:
        self._in_hand(current_job).send_data(self.data_encoder.encode(data))

    def send_job_warning(self, current_job: GearmanJob, data: Any,
                         poll_timeout: float | None = None) -> None:
        self._in_hand(current_job).send_warning(self.data_encoder.encode(data))

    def send_job_complete(self, current_job: GearmanJob, data: Any,
                          poll_timeout: float | None = None) -> None:
        """Complete the job now with ``data`` (the callback's return value is then ignored)."""
        self._in_hand(current_job)
        current_job._outcome = ("complete", self.data_encoder.encode(data))  # type: ignore[attr-defined]

    def send_job_failure(self, current_job: GearmanJob, poll_timeout: float | None = None
                         ) -> None:
        """End the job with WORK_FAIL."""
        self._in_hand(current_job).fail()
        current_job._outcome = ("failed", b"")  # type: ignore[attr-defined]

    def send_job_exception(self, current_job: GearmanJob, data: Any,
                           poll_timeout: float | None = None) -> None:
        """End the job with WORK_EXCEPTION carrying ``data``."""
        self._in_hand(current_job)
        current_job._outcome = ("exception", self.data_encoder.encode(data))  # type: ignore[attr-defined]

    def _in_hand(self, current_job: GearmanJob) -> _sync.WorkerJob:
        job = getattr(current_job, "_job", None)
        if job is None or getattr(current_job, "_outcome", None) is not None:
            raise InvalidWorkerState(f"{current_job!r} is not a job in hand")
        return job  # type: ignore[no-any-return]

    # -- python-gearman's hooks, for subclasses ------------------------------------------------

    def on_job_execute(self, current_job: GearmanJob) -> bool:
        """Run the job's callback; hand its result or exception to the hooks below."""
        try:
            callback = self.worker_abilities[current_job.task]
            job_result = callback(self, current_job)
        except Exception:
            return self.on_job_exception(current_job, sys.exc_info())
        return self.on_job_complete(current_job, job_result)

    def on_job_exception(self, current_job: GearmanJob, exc_info: Any) -> bool:
        """The callback raised: send WORK_EXCEPTION with its message."""
        exc = exc_info[1]
        self.send_job_exception(current_job, str(exc) or type(exc).__name__)
        return True

    def on_job_complete(self, current_job: GearmanJob, job_result: Any) -> bool:
        """The callback returned: send WORK_COMPLETE with its return value."""
        self.send_job_complete(current_job, job_result)
        return True

    def _handler(self, task: str) -> Callable[[_sync.WorkerJob], bytes | str | None]:
        def handle(wjob: _sync.WorkerJob) -> bytes | str | None:
            job = self.job_class(None, wjob.handle.decode("utf-8", "replace"), task,
                                 wjob.unique.decode("utf-8", "replace"),
                                 self.data_encoder.decode(wjob.data))
            job._job = wjob  # type: ignore[attr-defined]
            job._outcome = None  # type: ignore[attr-defined]
            try:
                self.on_job_execute(job)
                kind, data = job._outcome or ("complete", b"")  # type: ignore[attr-defined]
                if kind == "exception":
                    wjob.send_exception(data)
                    return None
                return data if kind == "complete" else None  # failed: already sent
            finally:
                job._outcome = ("ended", b"")  # type: ignore[attr-defined]
                self._activity.set()
        return handle


# -- the admin client ----------------------------------------------------------------------


class GearmanAdminClient:
    """python-gearman's admin client: results as tuples of dicts, as it gave them."""

    def __init__(self, host_list: Sequence[Any] | None = None,
                 poll_timeout: float = 10.0) -> None:
        hosts = list(host_list or ["localhost:4730"])
        if len(hosts) != 1:
            raise InvalidAdminClientState("an admin client talks to exactly one server")
        self.host = hosts[0]
        self.poll_timeout = poll_timeout
        self._admin = _sync.AdminClient(self.host, timeout=poll_timeout)

    def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return fn(*args)
        except AdminError as exc:
            raise InvalidAdminClientState(str(exc)) from exc
        except Exception as exc:
            raise _convert(exc) from exc

    def ping_server(self) -> float:
        """Round-trip an ECHO_REQ; return the seconds it took."""
        with _sync.Client([self.host], created_timeout=self.poll_timeout) as client:
            start = time.monotonic()
            self._call(client.echo, b"ping")
            return time.monotonic() - start

    def get_status(self) -> tuple[dict[str, Any], ...]:
        """Per function: ``task``, ``queued`` (queued plus running), ``running``, ``workers``."""
        return tuple({"task": _text(r.function), "queued": r.total, "running": r.running,
                      "workers": r.available_workers} for r in self._call(self._admin.status))

    def get_workers(self) -> tuple[dict[str, Any], ...]:
        """Every connection: ``file_descriptor``, ``ip``, ``client_id``, ``tasks``."""
        return tuple({"file_descriptor": str(r.fd), "ip": _text(r.address),
                      "client_id": _text(r.client_id),
                      "tasks": tuple(_text(f) for f in r.functions)}
                     for r in self._call(self._admin.workers))

    def get_version(self) -> str:
        return str(self._call(self._admin.version))

    def send_maxqueue(self, task: str, max_size: int) -> str:
        self._call(self._admin.maxqueue, task, max_size)
        return "OK"

    def send_shutdown(self, graceful: bool = True) -> str:
        self._call(self._admin.shutdown, graceful)
        return "OK"

    def close(self) -> None:
        self._admin.close()
