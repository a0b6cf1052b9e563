"""Load for the store tests: a background submitter that keeps going through server deaths."""

from __future__ import annotations

import threading
import time

from _support import Address, RawClient

from gearman_proto.events import Error, JobCreated, SubmitJob


class Submitter(threading.Thread):
    """Submits background jobs without pause, reconnecting when the server dies.

    ``acked`` holds every job id whose JOB_CREATED arrived (the jobs the server
    promised to keep), ``refused`` those answered ERROR (``codes`` counts the
    codes).  Up to ``window`` submissions are in flight at once; ``pause``
    between rounds slows it down.
    """

    def __init__(self, address: Address, fn: bytes, window: int = 32, prefix: bytes = b"b",
                 pause: float = 0.0) -> None:
        super().__init__(daemon=True)
        self.address = address
        self.fn = fn
        self.window = window
        self.prefix = prefix
        self.pause = pause
        self.acked: set[bytes] = set()
        self.refused: set[bytes] = set()
        self.codes: dict[bytes, int] = {}
        self.sent = 0
        self.stop = threading.Event()
        self.errors: list[BaseException] = []

    def run(self) -> None:
        n = 0
        while not self.stop.is_set():
            try:
                client = RawClient(self.address, timeout=2)
            except OSError:
                time.sleep(0.02)
                continue
            try:
                outstanding = 0
                while not self.stop.is_set():
                    batch = []
                    while outstanding + len(batch) < self.window:
                        job = self.prefix + b"%d" % n
                        batch.append(SubmitJob(self.fn, job, job, background=True))
                        n += 1
                    if batch:
                        client.send(*batch)
                        self.sent += len(batch)
                        outstanding += len(batch)
                    got = False
                    for event in client.events(timeout=0.5):
                        got = True
                        if isinstance(event, (JobCreated, Error)):
                            assert event.request is not None
                            unique = event.request.unique  # type: ignore[attr-defined]
                            if isinstance(event, JobCreated):
                                self.acked.add(unique)
                            else:
                                self.refused.add(unique)
                                self.codes[event.code] = self.codes.get(event.code, 0) + 1
                            outstanding -= 1
                        break
                    if not got or client.conn.state.value != "open":
                        break  # a silent or dead server: reconnect
                    if self.pause:
                        time.sleep(self.pause)
            except OSError:
                pass
            except Exception as exc:  # anything else is a test failure
                if not self.stop.is_set():
                    self.errors.append(exc)
            finally:
                client.close()
