"""open_no_symlinks: no symbolic link in any component, by openat2(2) or by the walk.

Both ways are run on this kernel: openat2 with RESOLVE_NO_SYMLINKS (Linux
>= 5.6) and the component-by-component walk that older kernels get. The
judge is the kernel: the descriptor's /proc/self/fd link names the directory
actually opened.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from lmi_mount.linux import paths


@pytest.fixture(params=["openat2", "walk"])
def way(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setattr(paths, "USE_OPENAT2", request.param == "openat2")
    yield request.param


def opened(path: str, *, parent: bool = False) -> tuple[str, str]:
    fd, name = paths.open_no_symlinks(path, parent=parent)
    try:
        return os.readlink(f"/proc/self/fd/{fd}"), name
    finally:
        os.close(fd)


def test_a_plain_path_opens_where_it_names(tmp_path: Path, way: str) -> None:
    (tmp_path / "a/b").mkdir(parents=True)
    real = str(tmp_path.resolve())
    assert opened(f"{real}/a/b") == (f"{real}/a/b", "")
    assert opened(f"{real}/a/b", parent=True) == (f"{real}/a", "b")
    assert opened("/") == ("/", "")


@pytest.mark.parametrize("where", ["parent", "last"])
def test_a_symlink_anywhere_is_refused_with_eloop(tmp_path: Path, way: str, where: str) -> None:
    real = tmp_path.resolve()
    (real / "dir/sub").mkdir(parents=True)
    (real / "link").symlink_to(real / "dir")
    path = f"{real}/link/sub" if where == "parent" else f"{real}/link"
    with pytest.raises(OSError) as refused:
        opened(path)
    assert refused.value.errno == errno.ELOOP and path in str(refused.value)


def test_the_last_component_may_be_a_symlink_when_only_its_parent_is_opened(
    tmp_path: Path, way: str
) -> None:
    real = tmp_path.resolve()
    (real / "link").symlink_to("/")
    assert opened(f"{real}/link", parent=True) == (str(real), "link")


@pytest.mark.parametrize(("path", "code"), [
    ("relative/path", errno.EINVAL),
    ("/a/../b", errno.EINVAL),
    ("/no/such/directory/here", errno.ENOENT),
])
def test_bad_paths_are_refused_naming_the_path(way: str, path: str, code: int) -> None:
    with pytest.raises(OSError) as refused:
        opened(path)
    assert refused.value.errno == code and path in str(refused.value)


def test_a_path_longer_than_path_max_opens(tmp_path: Path, way: str) -> None:
    # A mount point may end up there after a parent rename; it must stay reachable.
    real = str(tmp_path.resolve())
    fd = os.open(real, os.O_PATH | os.O_DIRECTORY)
    path = real
    try:
        for _ in range(30):
            name = "d" * 200
            os.mkdir(name, dir_fd=fd)
            following = os.open(name, os.O_PATH | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd, path = following, f"{path}/{name}"
    finally:
        os.close(fd)
    assert len(path) > os.pathconf("/", "PC_PATH_MAX")
    opened_fd, _ = paths.open_no_symlinks(path)
    os.close(opened_fd)
