"""JobManager: the synchronous window, and how many callers may wait in it at once."""

from __future__ import annotations

import threading
import time

import pytest
from pywbem import CIMError

from lmi_mount.cim.jobs import COMPLETED, TERMINATED, JobManager, WorkResult

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
