"""The projection's fast construction is the same as pywbem's validating constructors."""

from __future__ import annotations

from lmi_mount.cim import names
from lmi_mount.cim.projection import Projector
from tests.cim.conftest import NS, CimWorld, call, create_tmpfs, finished_job


def test_fast_instances_equal_validated_ones_for_every_class(fake_world: CimWorld) -> None:
    target = fake_world.dir("drifted")
    fake_world.fstab.write_text(
        f"tmpfs {target} tmpfs noexec 0 2\n/dev/sdz1 /srv/absent ext4 defaults 1 2\n"
    )
    conn = fake_world.connect(synchronous_seconds=0)
    broker = conn.broker
    jobs = [
        create_tmpfs(conn, target, Holder="a")[1]["Job"],
        call(
            conn,
            "CreateMount",
            Mode=1,
            MountPoint=fake_world.dir("bind"),
            FileSystemSpec=fake_world.dir("source"),
        )[1]["Job"],
    ]
    for job in jobs:
        finished_job(conn, job)
    [capabilities] = conn.EnumerateInstanceNames(names.MOUNTED_FILE_SYSTEM_CAPABILITIES)
    conn.InvokeMethod("CreateSetting", capabilities)

    def everything() -> dict[str, list[object]]:
        return {c: list(broker.enumerate_instances(NS, c)) for c in names.LMI_CLASSES}

    context = broker.context
    # The same figures for both reads: a file system's free space changes with
    # whatever else writes to it meanwhile (a CI run beside it did).
    read, figures = context.volume_stats, {}
    context.volume_stats = lambda path: figures[path] if path in figures else \
        figures.setdefault(path, read(path))
    fast = everything()
    context.projector = Projector(context.projector.model, context.projector.host, validate=True)
    validated = everything()
    assert all(fast[c] for c in names.LMI_CLASSES), "every class has instances to compare"
    for classname in names.LMI_CLASSES:
        assert fast[classname] == validated[classname], classname
        assert [i.path for i in fast[classname]] == [i.path for i in validated[classname]]
