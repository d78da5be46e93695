"""LMI_MountJob lifecycle: work that outlasts the synchronous window becomes a job.

Owns: running a service method's work on a worker thread, answering within
the synchronous window when it finishes in time, otherwise handing out a job
(return 4096 + Job REF) that clients poll; job states (CIM_ConcreteJob.JobState),
OUT parameters and errors of finished jobs, termination of jobs that have not
started, and removal ``time_before_removal`` seconds after a job ends.

Must not know: what the work does (the service provider gives a callable),
the engine, XML.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from pywbem import CIM_ERR_FAILED, CIM_ERR_INVALID_PARAMETER, CIMError, CIMInstance

from lmi_mount.cim.errors import RV_FAILED, RV_INVALID_PARAMETER, cim_error_instance

log = logging.getLogger(__name__)

# CIM_ConcreteJob.JobState ValueMap.
NEW: Final = 2
STARTING: Final = 3
RUNNING: Final = 4
TERMINATED: Final = 8
COMPLETED: Final = 7
EXCEPTION: Final = 10

#: Method calls that run at once. The engine runs calls on different mount
#: points side by side, and a call waiting for a mount helper (up to its
#: 120 s timeout) holds its thread: a handful of threads would let a few slow
#: NFS mounts hold up every other call. Threads start only as calls need them.
DEFAULT_JOB_THREADS: Final = 64

#: The synchronous window of a call made while ``max_waiting`` others wait in
#: theirs: long enough for a call that needs no helper (milliseconds).
BUSY_WINDOW_SECONDS: Final = 0.25

# What the work returns: the method's return value, its OUT parameters, and a
# CIM_Error instance when it failed (None on success).
WorkResult = tuple[Any, dict[str, Any], CIMInstance | None]


@dataclass(slots=True)
class Job:
    """One asynchronous method call and what became of it."""

    number: int
    method: str
    in_parameters: dict[str, Any]
    affected: list[Any]
    submitted: datetime
    owner: str | None
    state: int = NEW
    started: datetime | None = None
    finished: datetime | None = None
    ended_at: float | None = None  # monotonic, for removal
    return_value: Any = None
    out_parameters: dict[str, Any] = field(default_factory=dict)
    error: CIMInstance | None = None
    #: A request error (bad argument) found while the work ran: a synchronous
    #: caller gets it raised; a job reports it through ``error``.
    cim_error: CIMError | None = None
    #: Handed out to the client (4096 + Job); else answered synchronously.
    published: bool = False
    future: Future[WorkResult] | None = None

    @property
    def instance_id(self) -> str:
        return f"LMI:LMI_MountJob:{self.number}"

    @property
    def done(self) -> bool:
        return self.state in (COMPLETED, TERMINATED, EXCEPTION)


class JobManager:
    """Runs method work and keeps the jobs of calls that did not finish in time."""

    def __init__(
        self,
        *,
        synchronous_seconds: float = 5.0,
        time_before_removal: float = 60.0,
        workers: int = DEFAULT_JOB_THREADS,
        max_waiting: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.synchronous_seconds = synchronous_seconds
        # Callers (the server's HTTP workers) that may wait the whole synchronous
        # window at once; the others wait BUSY_WINDOW_SECONDS (a fast call is
        # still answered in it). Without a bound, as many slow calls as the
        # server has workers would hold every one of them for the whole
        # window, and reads would wait behind them.
        self._waiting = (threading.BoundedSemaphore(max_waiting)
                         if max_waiting is not None else None)
        self.time_before_removal = time_before_removal
        self._clock = clock
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="lmi-mount-job")
        self._lock = threading.Lock()
        self._jobs: dict[int, Job] = {}
        self._numbers = itertools.count(1)
        #: Told (job, previous state) when a published job changes state, outside
        #: the lock, on the thread that changed it: they must not block.
        self.listeners: list[Callable[[Job, int], None]] = []

    def run(
        self,
        method: str,
        work: Callable[[], WorkResult],
        *,
        in_parameters: dict[str, Any],
        affected: list[Any],
        owner: str | None,
    ) -> Job:
        """Start ``work``; wait up to the synchronous window; return its job record.

        A job that ended within the window is not published: the caller
        answers with its result. Otherwise it is published (``job.published``)
        and the caller answers 4096 with the job. A window of 0 or less
        publishes every job, however fast its work. A call that finds
        ``max_waiting`` callers in the window already waits
        ``BUSY_WINDOW_SECONDS`` only.
        """
        job = Job(next(self._numbers), method, in_parameters, affected, _now(), owner)
        try:
            job.future = self._pool.submit(self._execute, job, work)
        except RuntimeError:  # the pool is shut down
            raise CIMError(CIM_ERR_FAILED, f"lmi-mountd is stopping: {method} was not "
                           "started") from None
        if self.synchronous_seconds > 0:
            whole = self._waiting is None or self._waiting.acquire(blocking=False)
            try:
                with contextlib.suppress(TimeoutError, CancelledError):
                    job.future.result(timeout=self.synchronous_seconds if whole else
                                      min(self.synchronous_seconds, BUSY_WINDOW_SECONDS))
            finally:
                if whole and self._waiting is not None:
                    self._waiting.release()
        if job.future.cancelled():
            # Cancelled by shutdown before it started, while its caller waited.
            with self._lock:
                self._end(job, TERMINATED)
            raise CIMError(CIM_ERR_FAILED, f"lmi-mountd is stopping: {method} was not started")
        with self._lock:
            if not job.done or self.synchronous_seconds <= 0:
                self._expire()
                self._jobs[job.number] = job
                job.published = True
        return job

    def _execute(self, job: Job, work: Callable[[], WorkResult]) -> WorkResult:
        with self._lock:
            if job.state == TERMINATED:
                return job.return_value, job.out_parameters, job.error
            job.state = RUNNING
            job.started = _now()
            published = job.published
        if published:
            self._tell(job, NEW)
        cim_error = None
        internal = False
        try:
            rv, out, error = work()
        except CIMError as exc:
            cim_error = exc
            rv = (
                RV_INVALID_PARAMETER if exc.status_code == CIM_ERR_INVALID_PARAMETER else RV_FAILED
            )
            error = cim_error_instance(exc.status_description, status=exc.status_code)
            out = {"Error": error}  # as a failure's: a job's client reads it there
        except Exception as exc:
            # The work translates domain errors itself; anything else is a bug
            # and must still end the job instead of leaving it running forever.
            # The synchronous reply carries the same CIM_Error a job would.
            log.exception("%s failed with an internal error", job.method)
            error = cim_error_instance(f"internal error: {exc!r}")
            rv, out = RV_FAILED, {"Error": error}
            internal = True
        if error is not None and not internal:
            # Every failure leaves a line in the log, not only in the job.
            log.warning("%s (job %d) ended with %d: %s", job.method, job.number, rv,
                        error["Message"])
        with self._lock:
            job.return_value, job.out_parameters, job.error = rv, out, error
            job.cim_error = cim_error
            self._end(job, COMPLETED if error is None else EXCEPTION)
            published = job.published
        if published:
            self._tell(job, RUNNING)
        return rv, out, error

    def get(self, number: int) -> Job | None:
        with self._lock:
            self._expire()
            return self._jobs.get(number)

    def jobs(self) -> list[Job]:
        with self._lock:
            self._expire()
            return sorted(self._jobs.values(), key=lambda j: j.number)

    def terminate(self, number: int) -> bool:
        """Terminate a job that has not started; False if it already runs or ended."""
        with self._lock:
            job = self._jobs.get(number)
            if job is None or job.state != NEW:
                return False
            self._end(job, TERMINATED)
        self._tell(job, NEW)
        return True

    def delete(self, number: int) -> bool:
        """Remove an ended job at once (DeleteInstance); False if it still runs."""
        with self._lock:
            job = self._jobs.get(number)
            if job is None or not job.done:
                return False
            del self._jobs[number]
            return True

    def shutdown(self, *, wait: bool = True) -> None:
        """Stop: jobs that have not started never will (TERMINATED); running ones
        finish (their mounts and journal records complete) if ``wait``."""
        with self._lock:
            ended = [job for job in self._jobs.values() if job.state == NEW]
            for job in ended:
                self._end(job, TERMINATED)
        for job in ended:
            self._tell(job, NEW)
        self._pool.shutdown(wait=wait, cancel_futures=True)

    def _tell(self, job: Job, previous: int) -> None:
        for listener in self.listeners:
            try:
                listener(job, previous)
            except Exception:
                log.exception("a listener of job %d failed", job.number)

    def _end(self, job: Job, state: int) -> None:
        """Set the state a job ended in, and when (under ``_lock``)."""
        job.state, job.finished, job.ended_at = state, _now(), self._clock()

    def _expire(self) -> None:
        now = self._clock()
        for number, job in list(self._jobs.items()):
            if job.ended_at is not None and now - job.ended_at >= self.time_before_removal:
                del self._jobs[number]


def _now() -> datetime:
    return datetime.now(UTC)
