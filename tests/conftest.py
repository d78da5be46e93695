"""Project-wide pytest hooks: the ``private_namespace`` marker and its runner.

Keep this file minimal: helpers belong in tests/support, fixtures of one test
directory in that directory's conftest.py.
"""

from __future__ import annotations

import glob
import os
import shutil
import time

import pytest

from tests.support.namespace import MARKER_HELP, pyfunc_call_in_namespace

# Engines' state directories live on /dev/shm (a tmpfs, as /run is), and a
# journal preallocates its files there; tests whose body runs in a forked
# namespace child make them where no fixture can remove them.
_STATE_DIRS = ("/dev/shm/lmi-test-state-*", "/dev/shm/lmi-cim-state-*")
_SESSION_START = time.time()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", MARKER_HELP)


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    return pyfunc_call_in_namespace(pyfuncitem)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Remove the state directories this session made on /dev/shm."""
    for pattern in _STATE_DIRS:
        for path in glob.glob(pattern):
            try:
                if os.stat(path).st_ctime >= _SESSION_START - 1:
                    shutil.rmtree(path, ignore_errors=True)
            except OSError:
                continue
