"""A local user swaps the path while CreateMount runs: the mount lands where the reply says.

The first build checked the mount point with stat/realpath and mounted by path
string later: a directory swapped for a symlink in between made 61 of 300
tmpfs CreateMounts land elsewhere, untracked, while the reply named the
requested path. Now the path is opened once and mounted through the
descriptor; this test is the judge: the kernel's own table after each call.
Real kernel only (the fake has no concurrent file system), in a private
mount namespace.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

from lmi_mount.engine import MountManager
from lmi_mount.linux.kernel import LinuxKernel
from lmi_mount.mounts.errors import InUse, InvalidRequest, MountError
from lmi_mount.mounts.mountinfo import MountTable, parse_mountinfo
from lmi_mount.mounts.options import parse_options
from lmi_mount.mounts.plan import MountSpec
from tests.support.skips import requires_root

pytestmark = [pytest.mark.root, requires_root]

ROUNDS = 300
NOBODY = 65534


def _table() -> MountTable:
    return MountTable(parse_mountinfo(Path("/proc/self/mountinfo").read_text()))


def delete_while_racing(engine: MountManager, where: str) -> None:
    """DeleteMount of ``where``; a path lookup racing with umount2(2) holds the
    mount for an instant and the kernel answers EBUSY (InUse, reply 6, the
    holder kept): a client retries, so the test does, a bounded number of times."""
    for _ in range(50):
        try:
            engine.delete(where, holder="racer")
            return
        except InUse:
            time.sleep(0.01)
    raise AssertionError(f"{where} stayed busy")


class Swapper(threading.Thread):
    """Turns ``path`` into a symlink to ``decoy`` and back, as fast as it can."""

    def __init__(self, path: Path, decoy: Path) -> None:
        super().__init__(daemon=True)
        self.path, self.decoy = path, decoy
        self.parked = path.with_name(path.name + ".parked")
        self.stop = threading.Event()
        self.swaps = 0

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                os.rename(self.path, self.parked)
                os.symlink(self.decoy, self.path)
                os.unlink(self.path)
                os.rename(self.parked, self.path)
                self.swaps += 1
            except OSError:
                # A mount point cannot be renamed (EBUSY): put the directory
                # back once the engine has unmounted it, and go on.
                with contextlib.suppress(OSError):
                    if not os.path.lexists(self.path):
                        os.rename(self.parked, self.path)


class NobodySwapper:
    """The same swaps from another process, as the unprivileged user ``nobody``
    who owns the directory: a local user, not a thread of the service."""

    # A shell loop: the interpreter running the tests may not be one nobody
    # can execute (a Python under /root), coreutils always are.
    SCRIPT = (
        'n=0; while :; do '
        '[ -e "$1" ] || mv -T "$1.parked" "$1" 2>/dev/null; '
        'mv -T "$1" "$1.parked" 2>/dev/null && ln -s "$2" "$1" && rm "$1" '
        '&& mv -T "$1.parked" "$1" 2>/dev/null && n=$((n+1)) && echo $n > "$3"; '
        'done'
    )

    def __init__(self, path: Path, decoy: Path) -> None:
        self.parked = path.with_name(path.name + ".parked")
        os.chown(path.parent, NOBODY, NOBODY)
        os.chown(path, NOBODY, NOBODY)
        self.count = path.parent.with_name("swaps")
        self.count.write_text("0\n")
        self.seen = 0
        self.count.chmod(0o666)
        self.process = subprocess.Popen(
            ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
             "sh", "-c", self.SCRIPT, "swapper", str(path), str(decoy), str(self.count)],
            start_new_session=True)

    @property
    def swaps(self) -> int:
        # The shell truncates the file before it writes the count, and may have
        # been stopped in between: read until it holds one, else the last count
        # read. Read empty, it failed a CI run with an IndexError; and killed
        # (``finish``) between the two, another with "0 swaps" after the race
        # had waited for the first.
        for _ in range(100):
            parts = self.count.read_text().split()
            if parts:
                self.seen = max(self.seen, int(parts[0]))
                return self.seen
            time.sleep(0.001)
        return self.seen

    def start(self) -> None:
        pass

    def finish(self) -> None:
        # The whole group: an mv the shell started may otherwise still rename
        # a directory while the test looks at (or removes) the scene.
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()


@pytest.mark.private_namespace(timeout=120)
@pytest.mark.parametrize("kind", ["tmpfs", "bind"])
@pytest.mark.parametrize("api", ["new", "legacy"])
@pytest.mark.parametrize("racer", ["thread", "nobody"])
def test_every_reply_names_where_the_mount_is(
    tmp_path: Path, kind: str, api: str, racer: str
) -> None:
    if racer == "nobody" and shutil.which("setpriv") is None:
        pytest.skip("setpriv(1) from util-linux is needed to run as nobody")
    # nobody must reach the directory: pytest's own directories are root's, 0700.
    scene = Path(tempfile.mkdtemp(prefix="lmi-race-")) if racer == "nobody" else tmp_path
    scene.chmod(0o755)
    try:
        race(scene, tmp_path, kind, api, racer)
    finally:
        if scene != tmp_path:
            shutil.rmtree(scene)


def race(scene: Path, tmp_path: Path, kind: str, api: str, racer: str) -> None:
    parent = scene / "parent"
    parent.mkdir()
    target, decoy, source = parent / "target", scene / "decoy", scene / "source"
    for directory in (target, decoy, source):
        directory.mkdir()
    (tmp_path / "fstab").write_text("")
    engine = MountManager(LinuxKernel(mount_api=api),  # type: ignore[arg-type]
                          fstab_path=tmp_path / "fstab", state_dir=tmp_path / "state",
                          timers=False).start()
    swapper: Swapper | NobodySwapper = (
        Swapper(target, decoy) if racer == "thread" else NobodySwapper(target, decoy))
    swapper.start()
    # The race is only run once it runs: on a loaded machine the swapping shell
    # had not swapped once before the rounds were over (a clean-clone CI run).
    deadline = time.monotonic() + 30
    while swapper.swaps == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    landed: dict[str, int] = {}
    refused = 0
    reasons: set[str] = set()
    try:
        for _ in range(ROUNDS):
            if kind == "tmpfs":
                spec = MountSpec("tmpfs", str(target), "tmpfs", parse_options("noexec,size=1m"))
            else:
                spec = MountSpec(str(source), str(target), None, parse_options("ro"))
            try:
                outcome = engine.create(spec, holder="racer")
            except (InvalidRequest, MountError) as exc:
                refused += 1  # the path was a dangling name at that instant: said so
                reasons.add(str(exc).replace(str(scene), "SCENE")[:300])
                continue
            where = outcome.target
            assert where is not None
            record = _table().at(where)
            assert record is not None, f"the reply names {where}, where nothing is mounted"
            assert record.vfs_options[0] == ("rw" if kind == "tmpfs" else "ro")
            held = engine.held(where)
            assert held is not None and held.holders == ("racer",), held
            delete_while_racing(engine, where)  # the reference resolves
            landed[where] = landed.get(where, 0) + 1
    finally:
        if isinstance(swapper, Swapper):
            swapper.stop.set()
            swapper.join()
        else:
            swapper.finish()
        engine.close()
    print(f"\n{racer} {kind} {api}: {swapper.swaps} swaps, landed {landed}, refused {refused}")
    print("\n".join(sorted(reasons)))
    assert swapper.swaps > 0
    assert not [reason for reason in reasons if "NOT rolled back" in reason], reasons
    # Nothing was left mounted that lmi-mount does not track.
    assert [r.target for r in _table().under(str(scene))] == []
    assert sum(landed.values()) + refused == ROUNDS
    # Each is the directory the path named when it was opened, wherever the
    # swapper had moved it by the time the kernel mounted on it.
    assert set(landed) <= {str(target), str(decoy), str(swapper.parked)}
