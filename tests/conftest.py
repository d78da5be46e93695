"""Project-wide pytest hooks: the ``private_namespace`` marker and its runner.

Keep this file minimal: helpers belong in tests/support, fixtures of one test
directory in that directory's conftest.py.
"""

from __future__ import annotations

import glob
import os
import shutil
import tempfile
import time
from collections.abc import Iterator

import pytest

from lmi_mount.cim.mof_cache import CACHE_DIR_ENV
from tests.support.namespace import (
    MARKER_HELP,
    host_mount_points,
    pyfunc_call_in_namespace,
    undo_host_mounts,
)

# Engines' state directories live on /dev/shm (a tmpfs, as /run is), and a
# journal preallocates its files there; tests whose body runs in a forked
# namespace child make them where no fixture can remove them.
_STATE_DIRS = ("/dev/shm/lmi-test-state-*", "/dev/shm/lmi-cim-state-*")
_SESSION_START = time.time()
_OWN_CACHE = pytest.StashKey[str]()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", MARKER_HELP)
    # One compile of the model for the whole session, daemons and client tools
    # included, in a cache of the session's own (never the machine's).
    if CACHE_DIR_ENV not in os.environ:
        os.environ[CACHE_DIR_ENV] = tempfile.mkdtemp(prefix="lmi-mount-test-cache-")
        config.stash[_OWN_CACHE] = os.environ[CACHE_DIR_ENV]


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    return pyfunc_call_in_namespace(pyfuncitem)


@pytest.fixture(autouse=True)
def _mounts_stay_in_private_namespaces() -> Iterator[None]:
    """Fail a test that mounted in the host's namespace (a parametrization that
    dropped the private_namespace mark once did), and take its mounts away."""
    before = host_mount_points()
    yield
    leaked = host_mount_points() - before
    if leaked:
        undo_host_mounts(leaked)
        pytest.fail(f"the test mounted in the host's mount namespace: {sorted(leaked)}")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Remove the state directories this session made on /dev/shm, and its MOF cache."""
    cache = session.config.stash.get(_OWN_CACHE, None)
    if cache is not None:
        shutil.rmtree(cache, ignore_errors=True)
    for pattern in _STATE_DIRS:
        for path in glob.glob(pattern):
            try:
                if os.stat(path).st_ctime >= _SESSION_START - 1:
                    shutil.rmtree(path, ignore_errors=True)
            except OSError:
                continue
