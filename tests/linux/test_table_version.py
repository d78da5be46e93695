"""The kernel's mount-table version: it moves with every change, also after fork and unshare."""

from __future__ import annotations

from pathlib import Path

from lmi_mount.linux.kernel import LinuxKernel
from lmi_mount.mounts.flags import MS_BIND
from tests.support.namespace import private_namespace, run_in_private_namespace


@private_namespace
def test_version_moves_with_mounts_and_stays_otherwise(tmp_path: Path) -> None:
    kernel = LinuxKernel()
    first = kernel.mount_table_version()
    assert first is not None and kernel.mount_table_version() == first
    kernel.mount(str(tmp_path), str(tmp_path), None, MS_BIND)
    second = kernel.mount_table_version()
    assert second != first
    assert kernel.mount_table_version() == second
    kernel.unmount(str(tmp_path))
    assert kernel.mount_table_version() != second


@private_namespace
def test_a_new_namespace_is_watched_afresh(tmp_path: Path) -> None:
    kernel = LinuxKernel()
    kernel.mount_table_version()  # the watch now points at this namespace

    def in_a_child_namespace() -> bool:
        # The kernel object crossed fork() and unshare(): a change in the new
        # namespace must still move the version.
        before = kernel.mount_table_version()
        kernel.mount(str(tmp_path), str(tmp_path), None, MS_BIND)
        return kernel.mount_table_version() != before

    assert run_in_private_namespace(in_a_child_namespace)
