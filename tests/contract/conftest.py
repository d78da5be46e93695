"""Fixtures of the kernel contract suite: the two kernels and the test directory.

The ``kernel`` fixture is parametrized: ``fake`` runs the test in this process
against FakeKernel; ``real`` runs the whole test body in a forked child inside
a private mount namespace (the ``private_namespace`` marker) against
LinuxKernel on the new mount API, ``no-statmount`` the same reading mounts back
from mountinfo (kernels 5.12 to 6.7), ``legacy`` on mount(2) (the path of
kernels older than 5.12), root only. Fixtures run in the parent: they only
make files.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from lmi_mount.linux.fake import FakeKernel
from lmi_mount.linux.kernel import Kernel, LinuxKernel, detect_mount_api
from tests.contract.helpers import wait_for_loops_released
from tests.support.skips import requires_root

REAL_MARKS = (pytest.mark.root, pytest.mark.kernel, pytest.mark.private_namespace, requires_root)


@pytest.fixture(params=[
    pytest.param("fake", id="fake"),
    pytest.param("real", id="real", marks=REAL_MARKS),
    pytest.param("no-statmount", id="no-statmount", marks=REAL_MARKS),
    pytest.param("legacy", id="legacy", marks=REAL_MARKS),
])
def kernel(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Kernel]:
    if request.param == "fake":
        yield FakeKernel()
        return
    if request.param != "legacy" and detect_mount_api() != "new":
        pytest.skip("this kernel lacks the new mount API (Linux 5.12)")
    yield LinuxKernel(mount_api="legacy" if request.param == "legacy" else "new",
                      use_statmount=request.param != "no-statmount")
    # After the child (and with it the namespace) is gone, no loop device may
    # still hold a file of this test: the kernel is shared with the host.
    leaked = wait_for_loops_released(LinuxKernel(), tmp_path.resolve())
    assert not leaked, f"loop devices leaked by the test: {leaked}"


@pytest.fixture
def base(tmp_path: Path) -> Path:
    """The test's directory, resolved as the kernel reports it."""
    return tmp_path.resolve()
