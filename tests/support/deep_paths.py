"""Paths longer than PATH_MAX, which no single system call takes."""

from __future__ import annotations

import os
from pathlib import Path


def longer_than_path_max(base: Path) -> str:
    """A directory under ``base`` whose path is longer than PATH_MAX (made a
    component at a time: mkdir(2) itself takes no such path)."""
    path = str(base.resolve())
    fd = os.open(path, os.O_PATH | os.O_DIRECTORY)
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
    return path
