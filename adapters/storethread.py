"""The store's own thread: durable writes leave the event loop (a ``StoreWriter``).

A durable store's write is a round trip and an fsync: 3-10 ms on this
project's test machine, during which an event loop that wrote in line would
serve nobody.  :class:`ThreadWriter` writes one batch at a time on a thread of
its own, then wakes the loop, whose next flush releases that batch's
JOB_CREATED (or its QUEUE_ERROR) and hands over the batch that formed
meanwhile.  What needs no store -- foreground jobs, workers, echo, admin --
never waits for the disk or the database, and batches grow with the load.

After a failed write, a batch that acknowledges nothing (only the deletes of
finished jobs, tried again) waits :attr:`ThreadWriter.retry_pause` before it
is written: during an outage with no new submissions, the loop and this
thread would otherwise retry it thousands of times a second.  A batch with
submissions goes at once (they are owed JOB_CREATED or QUEUE_ERROR), and so
does a paused one as soon as output waits behind it (:meth:`ThreadWriter.hurry`,
called by the hub) and the last one at :meth:`ThreadWriter.close`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from gearman_proto.broker import CommitTicket
from gearman_proto.store import StoreError

__all__ = ["ThreadWriter"]

log = logging.getLogger("gearman_proto")

Result = tuple[CommitTicket, StoreError | None]


class ThreadWriter:
    """Writes tickets with ``write`` on a daemon thread; calls ``wake`` after each.

    ``write`` is :meth:`JobServer.write` (it touches only the store);
    ``wake`` must be safe to call from another thread (``loop.call_soon_threadsafe``).
    """

    retry_pause = 0.1
    """Seconds a batch of deletes only waits after a failed write (see the module)."""

    def __init__(self, write: Callable[[CommitTicket], StoreError | None],
                 wake: Callable[[], object], retry_pause: float | None = None) -> None:
        if retry_pause is not None:
            self.retry_pause = retry_pause
        self._write = write
        self._wake = wake
        self._cond = threading.Condition()
        self._ticket: CommitTicket | None = None  # submitted, result not yet taken
        self._todo: CommitTicket | None = None  # submitted, not yet started
        self._done: Result | None = None
        self._stop = False
        self._closing = False
        self._hurry = False
        self._pausing = False
        self._failing = False
        self.writes = 0
        self._thread = threading.Thread(target=self._run, name="gearman-store", daemon=True)
        self._thread.start()

    @property
    def busy(self) -> bool:
        """True from :meth:`submit` until :meth:`result` has returned the outcome."""
        return self._ticket is not None

    def submit(self, ticket: CommitTicket) -> None:
        """Write ``ticket`` on the thread."""
        with self._cond:
            assert self._ticket is None, "one ticket at a time"
            self._ticket = self._todo = ticket
            self._cond.notify()

    def result(self) -> Result | None:
        """The finished ticket and its error, once; ``None`` while it is being written."""
        if self._done is None:
            return None
        with self._cond:
            done, self._done = self._done, None
            self._ticket = None
            return done

    def hurry(self) -> None:
        """Cut a retry pause short: output (a new submission's answer) waits behind it."""
        # Asked at nearly every flush under load: no lock unless the thread waits.
        # The pause checks the flag before it waits, so setting it first is enough.
        self._hurry = True
        if self._pausing:
            with self._cond:
                self._cond.notify_all()

    def close(self) -> Result | None:
        """Wait for the ticket in flight (if any), stop the thread; its outcome."""
        with self._cond:
            self._closing = True  # a paused retry goes now
            self._cond.notify_all()
            while self._ticket is not None and self._done is None:
                self._cond.wait()
            self._stop = True
            self._cond.notify()
        return self.result()

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._todo is None and not self._stop:
                    self._cond.wait()
                if self._stop:
                    return
                ticket = self._todo
                assert ticket is not None
                if self._failing and not ticket.batch.adds:
                    self._pausing = True
                    self._cond.wait_for(lambda: self._closing or self._hurry,
                                        self.retry_pause)
                    self._pausing = False
                self._todo = None
                self._hurry = False
            error = self._write(ticket)
            # One line when writes start failing and one when they work again,
            # not one per batch: an outage may last minutes under load.
            if error is not None and not self._failing:
                self._failing = True
                log.error("store write failed; durable submissions get QUEUE_ERROR until "
                          "it works again: %s", error)
            elif error is None and self._failing:
                self._failing = False
                log.warning("store writes work again")
            with self._cond:
                self._done = (ticket, error)
                self.writes += 1
                self._cond.notify_all()
            try:
                self._wake()
            except Exception:  # the loop has closed: close() collects the result
                log.debug("store thread: could not wake the loop", exc_info=True)
