"""Managing mounts with pywbem: the examples of docs/cookbook-pywbem.rst, runnable.

Run as root: ``unshare --mount --propagation private python3 docs/examples/pywbem_cookbook.py``.
Everything happens in a private mount namespace with a scratch fstab under a
temporary directory; the tests run ``main`` the same way.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from pywbem import Uint16

from lmi_mount.cim.mock import mock_connection


def main(workdir: Path) -> list[str]:
    """Run every recipe under ``workdir``; return what they printed, line by line."""
    printed: list[str] = []

    def say(*parts: object) -> None:
        printed.append(" ".join(str(p) for p in parts))

    (workdir / "data").mkdir()
    (workdir / "mnt").mkdir()
    fstab = workdir / "fstab"
    fstab.write_text("# scratch fstab\n")

    # [connect]
    conn = mock_connection(fstab, workdir / "state", hold_seconds=0)
    [service] = conn.EnumerateInstanceNames("LMI_MountConfigurationService")
    [capabilities] = conn.EnumerateInstanceNames("LMI_MountedFileSystemCapabilities")
    # [/connect]

    # [goal]
    _, out = conn.InvokeMethod("CreateSetting", capabilities)
    goal = conn.GetInstance(out["MountSetting"])
    goal["AllowExecution"] = False  # noexec
    goal["OtherOptions"] = ["size=16m"]  # a tmpfs option, passed as is
    conn.ModifyInstance(goal)
    # [/goal]

    # [create]
    rv, out = conn.InvokeMethod(
        "CreateMount",
        service,
        Mode=Uint16(1),  # mount now and add the fstab line
        MountPoint=str(workdir / "mnt"),
        FileSystemSpec="tmpfs",
        FileSystemType="tmpfs",
        Goal=goal.path,
        Holder="backup-job",
    )
    if rv == 4096:  # outlasted the synchronous window: poll the job
        job = out["Job"]
        while conn.GetInstance(job)["JobState"] not in (7, 8, 10):
            time.sleep(0.1)
        out = dict(conn.GetInstance(job)["JobOutParameters"].items())
    mount = conn.GetInstance(out["Mount"])
    say(
        "mounted",
        mount["FileSystemSpec"],
        "on",
        mount["MountPointPath"],
        "references:",
        mount["ReferenceCount"],
    )
    # [/create]

    # [associations]
    for setting in conn.Associators(mount.path, ResultClass="LMI_MountedFileSystemSetting"):
        say(
            "setting",
            setting["InstanceID"].split(":")[-1],
            "noexec:",
            setting["AllowExecution"] is False,
        )
    [directory] = conn.Associators(mount.path, AssocClass="LMI_MountPoint")
    say("mount point directory", directory["Name"])
    # [/associations]

    # [share]
    rv, out = conn.InvokeMethod(
        "CreateMount",
        service,
        Mode=Uint16(32768),
        MountPoint=str(workdir / "mnt"),
        FileSystemSpec="tmpfs",
        FileSystemType="tmpfs",
        Goal=goal.path,
        Holder="report-job",
    )
    say("second holder shares it:", conn.GetInstance(out["Mount"])["Holders"])
    # [/share]

    # [dry-run]
    rv, out = conn.InvokeMethod(
        "DeleteMount", service, Mode=Uint16(4), Mount=mount.path, Holder="backup-job", DryRun=True
    )
    for step in out["Plan"]:
        say("plan:", step)
    # [/dry-run]

    # [delete]
    for holder in ("report-job", "backup-job"):
        rv, out = conn.InvokeMethod(
            "DeleteMount", service, Mode=Uint16(4), Mount=mount.path, Holder=holder
        )
        say("DeleteMount by", holder, "returned", rv)
    say("fstab now:", fstab.read_text().strip())
    conn.DeleteInstance(goal.path)
    conn.close()
    # [/delete]
    return printed


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as scratch:
        for line in main(Path(scratch)):
            print(line)
    sys.exit(0)
