"""LMI_MountJob lifecycle: work that outlasts the synchronous window becomes a job.

Owns: running a service method's work, answering within the synchronous
window when it finishes in time, otherwise handing out a job (return 4096 +
Job REF) that clients poll; job states (CIM_ConcreteJob.JobState), OUT
parameters and errors of finished jobs, termination of jobs that have not
started, and removal ``time_before_removal`` seconds after a job ends.

Where the work runs: on the caller's own thread when the server can answer
the call from another thread (``answer_early`` is set: an HTTP worker, and
it has the right to), so that a call that ends in its window costs no
thread hand-off (two of them, about 70 µs of CPU, were a twentieth of a
CreateMount's cost). When the window ends first, the job is published and
the call answered with it (``answer_early``'s function, which does not wait)
while the caller's thread goes on with the work, detached from the server's
count of workers. Elsewhere (pywbem_mock, a server without the right left)
the work runs on the job pool and the caller waits for the window.

Must not know: what the work does (the service provider gives a callable),
the engine, XML.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from contextvars import ContextVar
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

#: A method call's answer: its return value and OUT parameters.
Answer = tuple[Any, dict[str, Any]]

#: Whether the call the current thread serves can be answered before its work
#: ends: set by the server around a method call, and asked (on that thread) when
#: the work would start. It returns a function that sends an answer (a started
#: job's: 4096 and the Job) from any thread without waiting, False if the call
#: was answered already; or None: the server cannot (no right is left), and the
#: work runs on the job pool while the caller waits for the window, as it does
#: when this is unset.
answer_early: ContextVar[Callable[[], Callable[[Any, dict[str, Any]], bool] | None] | None] = (
    ContextVar("answer_early", default=None))


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
        self._windows = _Windows()
        self._stopping = False
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
        started: Callable[[Job], Answer] | None = None,
    ) -> Job:
        """Start ``work``; wait up to the synchronous window; return its job record.

        A job that ended within the window is not published: the caller
        answers with its result. Otherwise it is published (``job.published``)
        and the caller answers 4096 with the job. A window of 0 or less
        publishes every job, however fast its work. A call that finds
        ``max_waiting`` callers in the window already waits
        ``BUSY_WINDOW_SECONDS`` only.

        ``started`` is the answer of a call whose job was published (4096
        and the Job): with it, and ``answer_early`` granting it, the work runs
        on this thread, and that answer is sent when the window ends first;
        this thread then returns the published job when the work ends.
        """
        job = Job(next(self._numbers), method, in_parameters, affected, _now(), owner)
        may_answer_early = answer_early.get()
        if may_answer_early is not None and started is not None and self.synchronous_seconds > 0:
            early = may_answer_early()
            if early is not None:
                self._run_here(job, work, lambda: early(*started(job)))
                return job
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

    def _run_here(self, job: Job, work: Callable[[], WorkResult],
                  answer: Callable[[], bool]) -> None:
        """Run ``work`` on this thread; if its window ends first, publish the job and
        send ``answer`` (the job's, which does not wait) while the work goes on."""
        if self._stopping:
            raise CIMError(CIM_ERR_FAILED, f"lmi-mountd is stopping: {job.method} was not "
                           "started")
        # The window's length as for a caller waiting for the pool: a call that
        # finds ``max_waiting`` others in theirs has the short one.
        whole = self._waiting is None or self._waiting.acquire(blocking=False)
        seconds = (self.synchronous_seconds if whole
                   else min(self.synchronous_seconds, BUSY_WINDOW_SECONDS))
        waiting = [whole and self._waiting is not None]  # the semaphore, given back once

        def give_back() -> None:
            with self._lock:
                mine, waiting[0] = waiting[0], False
            if mine:
                assert self._waiting is not None
                self._waiting.release()

        def window_ended() -> None:
            with self._lock:
                if job.done or job.published:
                    return
                self._expire()
                self._jobs[job.number] = job
                job.published = True
            give_back()  # this thread no longer waits in a window: it works on
            # On the windows' thread: the answer does not wait (the server
            # writes it on a thread of its own). Not on the job pool, whose
            # threads may all run other calls' work meanwhile (second review).
            try:
                answer()  # False: the work ended meanwhile, and its caller answered
            except Exception:
                log.exception("answering %s with its job %d failed", job.method, job.number)

        window = self._windows.open(seconds, window_ended)
        try:
            result = self._execute(job, work)
        finally:
            self._windows.close(window)
            give_back()
        job.future = Future()
        job.future.set_result(result)

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

    @property
    def alive(self) -> bool:
        """Whether the thread that ends the synchronous windows runs (or has
        not been needed yet): without it, no slow call is answered early."""
        return self._windows.alive

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
        self._stopping = True
        self._windows.close_all()
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


class _Windows:
    """The synchronous windows of calls that run on their caller's thread: when one
    ends before its call, its function runs (on this class's thread).

    Made for a window opened and closed for every method call, a few hundred a
    second: neither costs a wake-up of the thread. Windows of one length end
    in the order they were opened (one queue per length); a closed one stays
    queued until the thread next looks, and the thread sleeps until the end
    of the first open one. With none open, it sleeps as long as the shortest
    window lasts before it sleeps for good: every window opened meanwhile
    ends after it looks again, and after that the next window wakes it,
    once."""

    def __init__(self) -> None:
        self._queues: dict[float, deque[list[Any]]] = {}  # [end, function or None]
        self._changed = threading.Condition(threading.Lock())
        self._thread: threading.Thread | None = None
        self._closing = False
        self._opened = False
        #: When the thread looks again at the latest; -inf while it looks.
        self._wakes_at = -math.inf

    def open(self, seconds: float, ended: Callable[[], None]) -> list[Any]:
        with self._changed:
            # The end taken under the lock: a window is never queued behind one
            # opened after it.
            window: list[Any] = [time.monotonic() + seconds, ended]
            self._queues.setdefault(seconds, deque()).append(window)
            self._opened = True
            if self._thread is not None:
                if window[0] < self._wakes_at:
                    self._changed.notify()
            elif not self._closing:  # once stopped, a call is answered at its end
                self._thread = threading.Thread(target=self._loop, name="lmi-mount-windows",
                                                daemon=True)
                self._thread.start()
        return window

    @staticmethod
    def close(window: list[Any]) -> None:
        """The call ended: its window's function does not run (one already
        running finds the job done)."""
        window[1] = None

    @property
    def alive(self) -> bool:
        thread = self._thread
        return thread is None or self._closing or thread.is_alive()

    def close_all(self) -> None:
        """Stop the thread (the windows still open never end: the calls in them
        are answered at their end)."""
        with self._changed:
            self._closing = True
            thread, self._thread = self._thread, None
            self._changed.notify()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)

    def _loop(self) -> None:
        while True:
            with self._changed:
                if self._closing:
                    return
                now = time.monotonic()
                ended = []
                first = math.inf
                for queue in self._queues.values():
                    while queue and (queue[0][1] is None or queue[0][0] <= now):
                        function = queue.popleft()[1]
                        if function is not None:
                            ended.append(function)
                    if queue:
                        first = min(first, queue[0][0])
                if not ended:
                    if first == math.inf and self._opened:
                        first = now + min(self._queues)
                    self._opened = False
                    self._wakes_at = first
                    self._changed.wait(None if first == math.inf else first - now)
                    self._wakes_at = -math.inf
                    continue
            for function in ended:
                try:
                    function()
                except Exception:  # the next windows must still end
                    log.exception("ending a method's synchronous window failed")
