"""The indications' model reads: a read patched from the last one (only the statuses
the engine made anew are projected, only their instances compared) against the
oracle of a fresh read and a diff of every instance, over random changes by hand."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lmi_mount.cim import events
from lmi_mount.cim.broker import Broker
from lmi_mount.engine import MountManager
from lmi_mount.linux.fake import FakeKernel
from lmi_mount.mounts.flags import MNT_DETACH, MS_NOEXEC, MS_NOSUID, MS_RDONLY

TARGETS = ("a", "b", "a/inner", "c")
#: fstab options, and the same as mount(2) flags and tmpfs data.
OPTIONS = (("defaults", 0, ""), ("ro", MS_RDONLY, ""),
           ("noexec,nosuid", MS_NOEXEC | MS_NOSUID, ""), ("size=1m", 0, "size=1m"))


def _described(found: list[Any]) -> list[tuple[str, Any, Any]]:
    return [(i.classname, i.get("SourceInstanceModelPath") or i.get("Message"),
             tuple(i.get("ChangedPropertyNames") or ())) for i in found]


class Host:
    """A fake kernel, an fstab and the broker the watcher reads through."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.fstab = root / "fstab"
        self.fstab.write_text("")
        self.state = Path(tempfile.mkdtemp(prefix="lmi-events-", dir="/dev/shm"))
        self.kernel = FakeKernel()
        for name in TARGETS:
            (root / name).mkdir(parents=True, exist_ok=True)
        self.engine = MountManager(self.kernel, fstab_path=self.fstab, state_dir=self.state,
                                   timers=False, after_fstab_edit=lambda: None)
        self.broker = Broker(self.engine, host="host.example")
        self.lines: dict[str, str] = {}

    def apply(self, step: tuple[Any, ...]) -> None:
        kind, name = step[0], str(self.root / TARGETS[step[1]])
        if kind == "mount":
            _, flags, data = OPTIONS[step[2]]
            self.kernel.mount(f"fs{step[2]}", name, "tmpfs", flags, data)
        elif kind == "umount":
            if self.engine.mount_table().at(name) is not None:  # else EINVAL: not mounted
                self.kernel.unmount(name, MNT_DETACH)  # with what is mounted below
        elif kind == "line":
            self.lines[name] = f"fs{step[2]} {name} tmpfs {OPTIONS[step[2]][0]} 0 0\n"
            self._write_fstab()
        else:
            self.lines.pop(name, None)
            self._write_fstab()

    def _write_fstab(self) -> None:
        # A new file each time: the engine knows fstab by inode, size and mtime.
        fresh = self.fstab.with_suffix(".new")
        fresh.write_text("".join(self.lines.values()))
        os.replace(fresh, self.fstab)

    def close(self) -> None:
        self.broker.close()
        self.engine.close()
        shutil.rmtree(self.state, ignore_errors=True)


STEP = st.one_of(
    st.tuples(st.just("mount"), st.integers(0, len(TARGETS) - 1),
              st.integers(0, len(OPTIONS) - 1)),
    st.tuples(st.just("umount"), st.integers(0, len(TARGETS) - 1)),
    st.tuples(st.just("line"), st.integers(0, len(TARGETS) - 1),
              st.integers(0, len(OPTIONS) - 1)),
    st.tuples(st.just("noline"), st.integers(0, len(TARGETS) - 1)),
)


@given(st.lists(st.lists(STEP, min_size=1, max_size=3), min_size=1, max_size=8))
@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_a_patched_read_and_its_diff_are_those_of_a_fresh_read(
        tmp_path_factory: pytest.TempPathFactory, batches: list[list[tuple[Any, ...]]]) -> None:
    # A host of its own per example (a function-scoped fixture would be shared).
    host = Host(tmp_path_factory.mktemp("host"))
    try:
        reader = events.ModelReader(host.broker.context)
        factory = events.IndicationFactory(host.broker.model, host.broker.context.projector)
        previous = reader.read()
        for batch in batches:
            for step in batch:
                host.apply(step)
            current = reader.read()
            fresh = events.ModelReader(host.broker.context).read()
            assert current.base == previous.serial
            assert set(current.instances) == set(fresh.instances)
            for key, instance in fresh.instances.items():
                assert current.instances[key] == instance, key
            assert current.drift == fresh.drift
            assert current.mounted == fresh.mounted
            # The same two reads, compared instance by instance (the diff of
            # a read that was not made from the other).
            # Deletions come first, in no order among themselves.
            unrelated = events.ModelRead(previous.instances, previous.drift, previous.mounted)
            patched = _described(list(events.changes(previous, current, factory)))
            whole = _described(list(events.changes(unrelated, current, factory)))
            deleted = sum(1 for found in whole if found[0] == events.INST_DELETION)
            assert sorted(patched[:deleted]) == sorted(whole[:deleted])
            assert patched[deleted:] == whole[deleted:]
            previous = current
    finally:
        host.close()
