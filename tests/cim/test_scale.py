"""10k live mounts through pywbem: pull enumeration in chunks returns each exactly once."""

from __future__ import annotations

from pathlib import Path

from lmi_mount.mounts import flags as ms
from tests.cim.conftest import NS, CimWorld
from tests.support.namespace import private_namespace

MOUNTS = 10_000


@private_namespace
def test_pull_enumeration_of_10k_mounts_returns_each_once(tmp_path: Path) -> None:
    world = CimWorld("real", tmp_path)
    conn = world.connect()
    source = world.dir("source")
    base = tmp_path / "targets"
    base.mkdir()
    for n in range(MOUNTS):
        target = base / str(n)
        target.mkdir()
        world.kernel.mount(source, str(target), None, ms.MS_BIND)
    expected = {str(base / str(n)) for n in range(MOUNTS)}

    result = conn.OpenEnumerateInstancePaths(
        "LMI_MountedFileSystem", namespace=NS, MaxObjectCount=997
    )
    paths = list(result.paths)
    chunks = 1
    while not result.eos:
        result = conn.PullInstancePaths(result.context, MaxObjectCount=997)
        paths.extend(result.paths)
        chunks += 1
    targets = [p.keybindings["MountPointPath"] for p in paths]
    ours = [t for t in targets if t in expected]
    assert len(ours) == MOUNTS and set(ours) == expected, "each mount exactly once"
    assert len(targets) == len(set(targets)), "no mount twice"
    assert chunks >= MOUNTS // 997

    result = conn.OpenEnumerateInstances(
        "LMI_MountedFileSystem", namespace=NS, MaxObjectCount=2500
    )
    instances = list(result.instances)
    while not result.eos:
        result = conn.PullInstancesWithPath(result.context, MaxObjectCount=2500)
        instances.extend(result.instances)
    seen = [i["MountPointPath"] for i in instances if i["MountPointPath"] in expected]
    assert sorted(seen) == sorted(expected)
    specs = {i["FileSystemSpec"] for i in instances if i["MountPointPath"] in expected}
    assert specs == {source}, specs
    world.close()
