"""JobManager: the synchronous window, how many callers may wait in it at once, and calls run
on their caller's thread and answered from another when their window ends first."""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable

import pytest
from pywbem import CIMError

from lmi_mount.cim.jobs import (
    BUSY_WINDOW_SECONDS,
    COMPLETED,
    RUNNING,
    TERMINATED,
    Job,
    JobManager,
    WorkResult,
    _Windows,
    answer_early,
)

WAIT = 10.0


def test_callers_beyond_max_waiting_wait_a_short_window_only() -> None:
    # The server's HTTP workers call run(): as many slow calls as there are
    # workers would hold all of them for the whole window, and reads with them.
    jobs = JobManager(synchronous_seconds=WAIT * 3, max_waiting=1, workers=4)
    release = threading.Event()

    def slow() -> WorkResult:
        release.wait(WAIT * 3)
        return 0, {}, None

    first: list[object] = []
    waiter = threading.Thread(target=lambda: first.append(
        jobs.run("CreateMount", slow, in_parameters={}, affected=[], owner=None)))
    waiter.start()
    try:
        waiter.join(timeout=0.2)
        assert waiter.is_alive(), "the first caller waits in the window"
        second = jobs.run("CreateMount", slow, in_parameters={}, affected=[], owner=None)
        assert second.published and not second.done, "the second gets its job soon"
        fast = jobs.run("CreateMount", lambda: (0, {}, None), in_parameters={}, affected=[],
                        owner=None)
        assert not fast.published and fast.done, "a fast call is still answered in time"
    finally:
        release.set()
        waiter.join(WAIT)
    [answered] = first
    assert not answered.published and answered.state == COMPLETED  # type: ignore[attr-defined]
    assert second.future is not None and second.future.result(WAIT)[0] == 0
    assert [job.number for job in jobs.jobs()] == [second.number]
    # The window is free again: the next fast call is answered in it.
    third = jobs.run("DeleteMount", lambda: (0, {}, None), in_parameters={}, affected=[],
                     owner=None)
    assert not third.published and third.done
    jobs.shutdown()


def test_shutdown_terminates_the_jobs_that_have_not_started() -> None:
    # SIGTERM waited for every queued call behind a hanging helper (review).
    jobs = JobManager(synchronous_seconds=0, workers=1)
    release = threading.Event()
    started: list[str] = []

    def work(name: str) -> WorkResult:
        started.append(name)
        release.wait(WAIT)
        return 0, {}, None

    running = jobs.run("CreateMount", lambda: work("running"), in_parameters={}, affected=[],
                       owner=None)
    queued = jobs.run("CreateMount", lambda: work("queued"), in_parameters={}, affected=[],
                      owner=None)
    while not started:
        time.sleep(0.01)
    stopper = threading.Thread(target=jobs.shutdown)
    stopper.start()
    release.set()
    stopper.join(WAIT)
    assert not stopper.is_alive()
    assert started == ["running"]
    assert running.state == COMPLETED and queued.state == TERMINATED


def test_a_call_cut_off_by_shutdown_is_a_cim_error() -> None:
    # Its caller was waiting in the window when shutdown cancelled the queued
    # job: concurrent.futures.CancelledError came out of run(); a call after
    # shutdown got a bare RuntimeError (second review).
    jobs = JobManager(synchronous_seconds=WAIT, workers=1)
    release = threading.Event()
    started = threading.Event()

    def blocking() -> WorkResult:
        started.set()
        release.wait(WAIT)
        return 0, {}, None

    first = threading.Thread(target=lambda: jobs.run(
        "CreateMount", blocking, in_parameters={}, affected=[], owner=None))
    first.start()
    assert started.wait(WAIT)
    outcome: list[BaseException] = []

    def queued() -> None:
        try:
            jobs.run("DeleteMount", lambda: (0, {}, None), in_parameters={}, affected=[],
                     owner=None)
        except BaseException as exc:  # the test looks at it
            outcome.append(exc)

    second = threading.Thread(target=queued)
    second.start()
    time.sleep(0.2)  # the second call waits in its window, its job queued
    stopper = threading.Thread(target=jobs.shutdown)
    stopper.start()
    second.join(WAIT)
    release.set()
    stopper.join(WAIT)
    first.join(WAIT)
    assert [type(exc).__name__ for exc in outcome] == ["CIMError"]
    assert "lmi-mountd is stopping: DeleteMount was not started" in str(outcome[0])
    with pytest.raises(CIMError, match="CreateMount was not started"):
        jobs.run("CreateMount", blocking, in_parameters={}, affected=[], owner=None)


def sleeping(seconds: float) -> Callable[[], WorkResult]:
    def work() -> WorkResult:
        time.sleep(seconds)
        return 0, {}, None
    return work


class Caller:
    """A server's caller of run(): it may be answered from another thread
    (``answer_early``) if it gets that right (``right``) when its work would start."""

    def __init__(self, right: bool = True) -> None:
        self.right = right
        self.asked = 0
        self.answers: list[tuple[object, dict[str, object], str]] = []
        self.answered = threading.Event()

    def may_answer_early(self) -> Callable[[object, dict[str, object]], bool] | None:
        self.asked += 1
        return self.answer if self.right else None

    def answer(self, rv: object, out: dict[str, object]) -> bool:
        self.answers.append((rv, out, threading.current_thread().name))
        self.answered.set()
        return True

    def run(self, jobs: JobManager, work: Callable[[], WorkResult]) -> Job:
        token = answer_early.set(self.may_answer_early)
        try:
            return jobs.run("CreateMount", work, in_parameters={}, affected=[], owner=None,
                            started=lambda job: (4096, {"Job": job.number}))
        finally:
            answer_early.reset(token)


def test_a_call_that_can_be_answered_early_runs_on_its_callers_thread() -> None:
    jobs = JobManager(synchronous_seconds=WAIT, workers=1)
    caller = Caller()
    ran_on: list[str] = []

    def work() -> WorkResult:
        ran_on.append(threading.current_thread().name)
        return 0, {}, None

    job = caller.run(jobs, work)
    assert ran_on == [threading.current_thread().name]
    assert job.done and not job.published and job.return_value == 0
    assert caller.answers == [] and jobs.jobs() == []
    jobs.shutdown()


def test_work_that_outlasts_its_window_is_answered_with_its_job_and_goes_on() -> None:
    jobs = JobManager(synchronous_seconds=0.2, workers=1)
    caller = Caller()
    release = threading.Event()
    outcome: list[Job] = []

    def slow() -> WorkResult:
        release.wait(WAIT)
        return 0, {"Done": True}, None

    worker = threading.Thread(target=lambda: outcome.append(caller.run(jobs, slow)),
                              name="http-worker")
    began = time.monotonic()
    worker.start()
    assert caller.answered.wait(WAIT)
    waited = time.monotonic() - began
    [(rv, out, thread)] = caller.answers
    # The job's answer, sent when the window ended while the work still runs here.
    assert rv == 4096 and thread == "lmi-mount-windows" and 0.15 < waited < WAIT
    [published] = jobs.jobs()
    assert published.number == out["Job"] and published.state == RUNNING
    assert worker.is_alive()
    release.set()
    worker.join(WAIT)
    [job] = outcome
    assert job is published and job.published and job.state == COMPLETED
    assert job.out_parameters == {"Done": True}
    jobs.shutdown()


def test_a_caller_without_the_right_waits_for_work_on_the_pool_as_before() -> None:
    # The server has as many calls running on after their answer as it may: this
    # one's work runs on a job thread, and it is answered with its job when its
    # window ends.
    jobs = JobManager(synchronous_seconds=0.1, workers=1)
    caller = Caller(right=False)
    ran_on: list[str] = []

    def work() -> WorkResult:
        ran_on.append(threading.current_thread().name)
        time.sleep(0.4)
        return 0, {}, None

    job = caller.run(jobs, work)
    assert caller.asked == 1 and caller.answers == []
    assert job.published and not job.done and ran_on[0].startswith("lmi-mount-job")
    assert job.future is not None and job.future.result(WAIT)[0] == 0
    jobs.shutdown()


def test_a_full_job_pool_does_not_hold_up_an_early_answer() -> None:
    # The early answers were sent from the job pool, which also runs the work of
    # calls without the right: with its threads busy, a call's 4096 waited for
    # that work, and its worker with it (second review).
    jobs = JobManager(synchronous_seconds=0.2, workers=1)
    release = threading.Event()

    def slow() -> WorkResult:
        release.wait(WAIT)
        return 0, {}, None

    try:
        pooled = Caller(right=False).run(jobs, slow)  # takes the one job thread
        assert pooled.published and not pooled.done
        caller = Caller()
        worker = threading.Thread(target=caller.run, args=(jobs, slow))
        worker.start()
        assert caller.answered.wait(WAIT), "the 4096 waited for the job pool"
        [(rv, _, thread)] = caller.answers
        assert rv == 4096 and thread == "lmi-mount-windows"
    finally:
        release.set()
    worker.join(WAIT)
    jobs.shutdown()


def test_the_right_is_asked_for_only_when_the_work_would_run_here() -> None:
    jobs = JobManager(synchronous_seconds=WAIT, workers=1)
    caller = Caller()
    token = answer_early.set(caller.may_answer_early)
    try:
        # No answer for a published job (``started``): nothing to send early.
        job = jobs.run("GetError", lambda: (0, {}, None), in_parameters={}, affected=[],
                       owner=None)
    finally:
        answer_early.reset(token)
    assert caller.asked == 0 and job.done
    jobs.shutdown()


def test_callers_beyond_max_waiting_run_here_with_a_short_window() -> None:
    jobs = JobManager(synchronous_seconds=WAIT * 3, max_waiting=1, workers=2)
    first, second = Caller(), Caller()
    release = threading.Event()

    def slow() -> WorkResult:
        release.wait(WAIT * 3)
        return 0, {}, None

    threads = [threading.Thread(target=first.run, args=(jobs, slow))]
    threads[0].start()
    time.sleep(0.2)  # the first holds the one whole window
    threads.append(threading.Thread(target=second.run, args=(jobs, slow)))
    began = time.monotonic()
    threads[1].start()
    assert second.answered.wait(WAIT)
    assert time.monotonic() - began < WAIT, "the short window, not the whole one"
    assert not first.answered.is_set(), "the first waits its whole window"
    release.set()
    for thread in threads:
        thread.join(WAIT)
    # The window is free again: a slow call now has the whole one.
    third = Caller()
    job = third.run(jobs, sleeping(BUSY_WINDOW_SECONDS + 0.2))
    assert third.answers == [] and not job.published
    jobs.shutdown()


def test_no_call_runs_here_once_shutdown_began() -> None:
    jobs = JobManager(synchronous_seconds=WAIT, workers=1)
    jobs.shutdown()
    with pytest.raises(CIMError, match="CreateMount was not started"):
        Caller().run(jobs, lambda: (0, {}, None))


def test_windows_end_once_each_and_cost_no_wake_up_per_call() -> None:
    windows = _Windows()
    looks = 0
    wait = windows._changed.wait

    def counted(timeout: float | None = None) -> bool:
        nonlocal looks
        looks += 1
        return wait(timeout)

    windows._changed.wait = counted  # type: ignore[method-assign]
    ended: list[int] = []
    # A steady load: every call opens a window and closes it in time, 200 calls
    # in 0.4 s with windows of 0.05 s. Looking at each window's end (a heap of
    # closed windows did) would be 200 looks; looking at the first open one,
    # about one per window length.
    began = time.monotonic()
    for number in range(200):
        windows.close(windows.open(0.05, functools.partial(ended.append, number)))
        time.sleep(0.002)
    time.sleep(0.2)
    # About one look per window length over the run (a loaded machine takes longer).
    bound = min(100, 2 * (time.monotonic() - began) / 0.05 + 5)
    assert looks <= bound, f"the windows' thread looked {looks} times for 200 calls"
    # One that ends first runs its function, once; a closed one never does.
    windows.open(0.1, functools.partial(ended.append, -1))
    windows.close(windows.open(0.1, functools.partial(ended.append, -2)))
    deadline = time.monotonic() + WAIT
    while not ended and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.2)
    assert ended == [-1] and windows.alive


def test_shutdown_stops_the_windows_thread() -> None:
    # Each JobManager left its thread running for ever (review).
    def windows_threads() -> int:
        return sum(t.name == "lmi-mount-windows" for t in threading.enumerate())

    before = windows_threads()
    jobs = JobManager(synchronous_seconds=WAIT, workers=1)
    Caller().run(jobs, lambda: (0, {}, None))
    assert windows_threads() == before + 1 and jobs.alive
    jobs.shutdown()
    assert windows_threads() == before and jobs.alive  # stopped on purpose: no failure
