"""mounts.mountinfo: the proc(5) parser, the table's questions, and real captures.

Golden files come from tests/golden/mountinfo/capture.py, run on a real kernel
inside a private mount namespace; their expected values come from findmnt(8)
(an independent parser) and from what the capture script built.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import random
import re
import sys
import threading
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lmi_mount.mounts.escaping import escape_field, unescape_field
from lmi_mount.mounts.mountinfo import (
    MountinfoError,
    MountinfoParser,
    MountRecord,
    MountTable,
    parse_mountinfo,
)

GOLDEN = Path(__file__).resolve().parent.parent / "golden" / "mountinfo"


def record(
    mount_id: int,
    parent_id: int,
    target: str,
    *,
    device: tuple[int, int] = (0, 50),
    root: str = "/",
    fstype: str = "tmpfs",
    source: str = "tmpfs",
    optional: tuple[str, ...] = (),
    super_options: tuple[str, ...] = ("rw",),
) -> MountRecord:
    return MountRecord(mount_id, parent_id, device[0], device[1], root, target,
                       ("rw", "relatime"), optional, fstype, source, super_options)


# -- parsing single lines ------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        pytest.param(
            "36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue",
            MountRecord(36, 35, 98, 0, "/mnt1", "/mnt2", ("rw", "noatime"), ("master:1",),
                        "ext3", "/dev/root", ("rw", "errors=continue")),
            id="proc5-example",
        ),
        pytest.param(
            "22 27 0:21 / /proc rw,relatime - proc proc rw",
            MountRecord(22, 27, 0, 21, "/", "/proc", ("rw", "relatime"), (), "proc", "proc",
                        ("rw",)),
            id="no-optional-fields",
        ),
        pytest.param(
            "92 89 0:52 / /p/sub rw shared:4 master:3 propagate_from:2 unbindable - tmpfs t rw",
            MountRecord(92, 89, 0, 52, "/", "/p/sub", ("rw",),
                        ("shared:4", "master:3", "propagate_from:2", "unbindable"),
                        "tmpfs", "t", ("rw",)),
            id="four-optional-fields",
        ),
        pytest.param(
            "65 63 0:41 /a\\040b /we\\040ird\\011tab\\012nl\\134bs rw - tmpfs odd\\040src rw",
            MountRecord(65, 63, 0, 41, "/a b", "/we ird\ttab\nnl\\bs", ("rw",), (), "tmpfs",
                        "odd src", ("rw",)),
            id="octal-escapes-decoded",
        ),
        pytest.param(
            "70 1 0:60 / /m rw - fuse.my\\040fs host:/x rw,user_id=0",
            MountRecord(70, 1, 0, 60, "/", "/m", ("rw",), (), "fuse.my fs", "host:/x",
                        ("rw", "user_id=0")),
            id="escaped-fstype",
        ),
        pytest.param(
            "71 1 0:61 / /e rw - tmpfs  rw,size=4k",
            MountRecord(71, 1, 0, 61, "/", "/e", ("rw",), (), "tmpfs", "", ("rw", "size=4k")),
            id="empty-source",
        ),
        pytest.param(
            "80 63 0:43 / /o rw - overlay ovl rw,lowerdir=/l\\054x:/m\\040n,uuid=on",
            MountRecord(80, 63, 0, 43, "/", "/o", ("rw",), (), "overlay", "ovl",
                        ("rw", "lowerdir=/l,x:/m n", "uuid=on")),
            id="escaped-comma-inside-an-option",
        ),
        pytest.param(
            "72 1 0:62 / /cr\rlf rw - tmpfs t rw",
            MountRecord(72, 1, 0, 62, "/", "/cr\rlf", ("rw",), (), "tmpfs", "t", ("rw",)),
            id="raw-carriage-return-is-part-of-the-path",
        ),
        pytest.param(
            "73 1 0:63 /\\134040 /lit rw - tmpfs t rw",
            MountRecord(73, 1, 0, 63, "/\\040", "/lit", ("rw",), (), "tmpfs", "t", ("rw",)),
            id="escaped-backslash-before-digits",
        ),
        pytest.param(
            "74 1 0:64 / /f rw future:7 - tmpfs t rw",
            MountRecord(74, 1, 0, 64, "/", "/f", ("rw",), ("future:7",), "tmpfs", "t", ("rw",)),
            id="unknown-optional-field-kept",
        ),
        pytest.param(
            "75 1 0:65 / /dash rw -x - tmpfs - rw",
            MountRecord(75, 1, 0, 65, "/", "/dash", ("rw",), ("-x",), "tmpfs", "-", ("rw",)),
            id="dash-words-that-are-not-the-separator",
        ),
    ],
)
def test_parse_line(line: str, expected: MountRecord) -> None:
    assert parse_mountinfo(line + "\n") == [expected]


def test_parsed_records_are_true_frozen_records() -> None:
    (parsed,) = parse_mountinfo("22 27 0:21 / /proc rw,relatime - proc proc rw\n")
    assert type(parsed) is MountRecord
    with pytest.raises(dataclasses.FrozenInstanceError):
        parsed.target = "/elsewhere"  # type: ignore[misc]
    assert dataclasses.replace(parsed, target="/p").target == "/p"
    assert {parsed: 1}[MountRecord(22, 27, 0, 21, "/", "/proc", ("rw", "relatime"), (),
                                   "proc", "proc", ("rw",))] == 1


def test_blank_lines_and_missing_final_newline() -> None:
    text = "\n1 0 0:1 / / rw - rootfs rootfs rw\n\n2 1 0:2 / /a rw - tmpfs t rw"
    assert [r.mount_id for r in parse_mountinfo(text)] == [1, 2]
    assert parse_mountinfo("") == []


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        pytest.param("36 35 98:0 /mnt1 /mnt2 rw ext3 /dev/root rw", "no ' - ' separator",
                     id="no-separator"),
        pytest.param("36 35 98:0 /mnt1 /mnt2 rw - ext3 /dev/root", "expected 3 fields",
                     id="two-fields-after-separator"),
        pytest.param("36 35 98:0 / /m rw - ext3 /dev/root rw extra", "expected 3 fields",
                     id="four-fields-after-separator"),
        pytest.param("x 35 98:0 / /m rw - ext3 /dev/root rw", "mount id 'x'", id="bad-id"),
        pytest.param("36 \u0663 98:0 / /m rw - ext3 /dev/root rw", "parent id",
                     id="non-ascii-digit"),
        pytest.param("36 35 98-0 / /m rw - ext3 /dev/root rw", "device '98-0'",
                     id="bad-device"),
        pytest.param("36 35 98:0  /m rw - ext3 /dev/root rw", "malformed field",
                     id="empty-root"),
        pytest.param("1" * 21 + " 35 98:0 / /m rw - ext3 /dev/root rw", "malformed",
                     id="number-too-long"),
        pytest.param("36 35 98:0 / /m rw - ext3 /dev/root ", "malformed",
                     id="empty-super-options"),
    ],
)
def test_parse_errors_name_the_line(line: str, reason: str) -> None:
    text = "1 0 0:1 / / rw - rootfs rootfs rw\n\n" + line + "\n"
    with pytest.raises(MountinfoError) as caught:
        parse_mountinfo(text)
    assert caught.value.lineno == 3
    assert caught.value.line == line
    assert reason in str(caught.value)
    assert "line 3" in str(caught.value) and repr(line) in str(caught.value)


@pytest.mark.parametrize(
    ("optional", "propagation"),
    [
        pytest.param((), "private", id="none"),
        pytest.param(("shared:1",), "shared:1", id="shared"),
        pytest.param(("master:3",), "master:3", id="slave"),
        pytest.param(("shared:4", "master:3", "propagate_from:2"),
                     "shared:4 master:3 propagate_from:2", id="shared-slave"),
        pytest.param(("unbindable",), "unbindable", id="unbindable"),
        pytest.param(("future:9",), "private", id="unknown-tag-is-not-propagation"),
    ],
)
def test_propagation(optional: tuple[str, ...], propagation: str) -> None:
    assert record(1, 0, "/a", optional=optional).propagation == propagation


def test_device() -> None:
    assert record(1, 0, "/a", device=(259, 3)).device == "259:3"


# -- the table --------------------------------------------------------------------------

# /            1
# /a           2 (on 1), covered by 3 (on 2: a stack)
# /a/x         4 (on 2): hidden, its parent is covered
# /a/x         5 (on 3): visible
# /b           6 (on 1); /b/c/d 7 (on 6) covered by /b/c 8 (on 6, mounted later)
# /b/c/d       9 (on 8): visible
TREE = [
    record(1, 0, "/", device=(8, 1), fstype="ext4", source="/dev/sda1"),
    record(2, 1, "/a", device=(0, 2)),
    record(3, 2, "/a", device=(0, 3)),
    record(4, 2, "/a/x", device=(0, 4)),
    record(5, 3, "/a/x", device=(0, 5)),
    record(6, 1, "/b", device=(0, 6)),
    record(7, 6, "/b/c/d", device=(0, 7)),
    record(8, 6, "/b/c", device=(0, 8)),
    record(9, 8, "/b/c/d", device=(0, 9)),
    record(10, 1, "/bb", device=(0, 10)),
]


@pytest.mark.parametrize(
    ("target", "at", "stack"),
    [
        pytest.param("/", 1, [1], id="root"),
        pytest.param("/a", 3, [2, 3], id="stack-top-wins"),
        pytest.param("/a/", 3, [2, 3], id="trailing-slash"),
        pytest.param("/a/x", 5, [4, 5], id="hidden-chain-first"),
        pytest.param("/b/c/d", 9, [7, 9], id="covered-by-sibling-on-a-parent-directory"),
        pytest.param("/b/c", 8, [8], id="single"),
        pytest.param("/nothing", None, [], id="not-a-mount-point"),
    ],
)
def test_at_and_mounts_at(target: str, at: int | None, stack: list[int]) -> None:
    table = MountTable(TREE)
    found = table.at(target)
    assert (found.mount_id if found else None) == at
    assert [r.mount_id for r in table.mounts_at(target)] == stack


def test_visibility() -> None:
    table = MountTable(TREE)
    assert [r.mount_id for r in table.visible()] == [1, 3, 5, 6, 8, 9, 10]
    assert not table.is_visible(record(99, 1, "/x"))  # not in the table


def test_at_is_none_when_every_mount_there_is_hidden() -> None:
    hidden_only = MountTable(TREE[:4])  # /a/x hangs on 2, which 3 covers
    assert hidden_only.at("/a/x") is None
    assert [r.mount_id for r in hidden_only.mounts_at("/a/x")] == [4]


def test_children_under_by_id() -> None:
    table = MountTable(TREE)
    assert [r.mount_id for r in table.children(6)] == [7, 8]
    assert table.children(5) == []
    assert [r.mount_id for r in table.under("/b")] == [6, 7, 8, 9]
    assert [r.mount_id for r in table.under("/b/")] == [6, 7, 8, 9]
    assert [r.mount_id for r in table.under("/a/x")] == [4, 5]
    assert len(table.under("/")) == len(TREE)
    assert table.by_id[8].target == "/b/c"
    assert len(table) == len(TREE) and list(table) == TREE


def test_under_puts_a_moved_mount_after_its_new_parent() -> None:
    # mount --move of the older mount 2 under the newer mount 3: 2 is listed first.
    table = MountTable([record(1, 0, "/"), record(2, 3, "/new/moved"), record(3, 1, "/new"),
                        record(4, 1, "/other")])
    assert [r.mount_id for r in table.under("/")] == [1, 3, 2, 4]
    assert [r.mount_id for r in table.under("/new")] == [3, 2]


def test_self_parented_root_and_cycles_do_not_hang() -> None:
    table = MountTable([
        record(1, 1, "/"),
        record(2, 1, "/a"),
        record(3, 4, "/x"),
        record(4, 3, "/x"),
    ])
    assert [r.mount_id for r in table.visible()] == [1, 2]
    assert {r.mount_id for r in table.mounts_at("/x")} == {3, 4}
    assert table.at("/x") is None
    assert sorted(r.mount_id for r in table.under("/")) == [1, 2, 3, 4]


def test_deep_tree_is_not_recursive() -> None:
    depth = 5000
    records = [record(1, 0, "/")]
    path = ""
    for i in range(2, depth + 2):
        path += "/d"
        records.append(record(i, i - 1, path))
    table = MountTable(records)
    assert len(table.visible()) == depth + 1
    assert table.at(path) is records[-1]


# -- user sources -----------------------------------------------------------------------


LOOPS = {"/dev/loop0": "/srv/images/disk.img", "/dev/loop1": "/srv/images/gone.img"}


def _backing(calls: list[str]):  # type: ignore[no-untyped-def]
    def backing(device: str) -> str | None:
        calls.append(device)
        return LOOPS.get(device)
    return backing


@pytest.mark.parametrize(
    ("records", "subject", "expected", "looked_up"),
    [
        pytest.param(
            [record(1, 0, "/srv", device=(0, 40)),
             record(2, 0, "/mnt/b", device=(0, 40), root="/data/sub")],
            1, "/srv/data/sub", [], id="bind-of-a-directory",
        ),
        pytest.param(
            [record(1, 0, "/srv", device=(0, 40), root="/data"),
             record(2, 0, "/mnt/b", device=(0, 40), root="/data/sub/deeper")],
            1, "/srv/sub/deeper", [], id="longest-root-prefix",
        ),
        pytest.param(
            [record(1, 0, "/srv", device=(0, 40)),
             record(2, 0, "/other", device=(0, 40), root="/data"),
             record(3, 0, "/mnt/b", device=(0, 40), root="/datax")],
            2, "/srv/datax", [], id="prefix-is-path-wise-not-string-wise",
        ),
        pytest.param(
            [record(1, 0, "/first", device=(0, 40)),
             record(2, 0, "/second", device=(0, 40)),
             record(3, 0, "/mnt/b", device=(0, 40), root="/x")],
            2, "/first/x", [], id="earliest-of-equal-roots",
        ),
        pytest.param(
            [record(1, 0, "/mnt/b", device=(0, 40), root="/sub"),
             record(2, 0, "/mnt/c", device=(0, 40), root="/sub"),
             record(3, 0, "/srv", device=(0, 40))],
            0, "tmpfs", [], id="origin-must-be-listed-earlier",
        ),
        pytest.param(
            [record(1, 0, "/mnt/b", device=(0, 40), root="/sub"),
             record(2, 0, "/mnt/c", device=(0, 40), root="/sub")],
            1, "/mnt/b", [], id="bind-of-a-bind",
        ),
        pytest.param(
            [record(1, 0, "/srv", device=(0, 40)), record(2, 0, "/again", device=(0, 40))],
            1, "/srv", [], id="whole-fs-without-block-device-is-a-bind",
        ),
        pytest.param(
            [record(1, 0, "/proc", device=(0, 21), fstype="proc", source="proc"),
             record(2, 0, "/p2", device=(0, 21), fstype="proc", source="none")],
            1, "none", [], id="different-device-name-is-a-second-mount",
        ),
        pytest.param(
            [record(1, 0, "/proc", device=(0, 21), fstype="proc", source="proc"),
             record(2, 0, "/p2", device=(0, 21), fstype="proc", source="none"),
             record(3, 0, "/p3", device=(0, 21), fstype="proc", source="none")],
            2, "/p2", [], id="origin-has-the-same-device-name",
        ),
        pytest.param(
            [record(1, 0, "/data", device=(8, 17), fstype="ext4", source="/dev/sdb1"),
             record(2, 0, "/again", device=(8, 17), fstype="ext4", source="/dev/sdb1")],
            1, "/dev/sdb1", [], id="whole-block-device-is-a-second-mount",
        ),
        pytest.param(
            [record(1, 0, "/data", device=(8, 17), fstype="ext4", source="/dev/sdb1"),
             record(2, 0, "/b", device=(8, 17), root="/x", fstype="ext4", source="/dev/sdb1")],
            1, "/data/x", [], id="block-device-directory-bind",
        ),
        pytest.param(
            [record(1, 0, "/img", device=(7, 0), fstype="ext4", source="/dev/loop0")],
            0, "/srv/images/disk.img", ["/dev/loop0"], id="loop-backing-file",
        ),
        pytest.param(
            [record(1, 0, "/img", device=(7, 8), fstype="ext4", source="/dev/loop8")],
            0, "/dev/loop8", ["/dev/loop8"], id="loop-without-backing-file",
        ),
        pytest.param(
            [record(1, 0, "/img", device=(259, 0), fstype="ext4", source="/dev/loop0p1")],
            0, "/dev/loop0p1", [], id="loop-partition-is-not-the-file",
        ),
        pytest.param(
            [record(1, 0, "/img", device=(7, 0), fstype="ext4", source="/dev/loop0"),
             record(2, 0, "/b", device=(7, 0), root="/d", fstype="ext4", source="/dev/loop0")],
            1, "/img/d", [], id="bind-inside-a-loop-mount",
        ),
        pytest.param(
            [record(1, 0, "/b", device=(0, 40), root="/gone/sub")],
            0, "tmpfs", [], id="origin-unmounted-falls-back-to-source",
        ),
        pytest.param(
            [record(1, 0, "/", device=(0, 30), fstype="btrfs", source="/dev/vdb",
                    super_options=("rw", "subvolid=5", "subvol=/")),
             record(2, 0, "/home", device=(0, 30), root="/@home", fstype="btrfs",
                    source="/dev/vdb", super_options=("rw", "subvolid=256", "subvol=/@home"))],
            1, "/dev/vdb", [], id="btrfs-subvolume-is-not-a-bind",
        ),
        pytest.param(
            [record(1, 0, "/", device=(0, 30), fstype="btrfs", source="/dev/vdb",
                    super_options=("rw", "subvolid=5", "subvol=/")),
             record(2, 0, "/b", device=(0, 30), root="/@home/u", fstype="btrfs",
                    source="/dev/vdb", super_options=("rw", "subvolid=256", "subvol=/@home"))],
            1, "/@home/u", [], id="btrfs-directory-bind",
        ),
    ],
)
def test_user_source(
    records: list[MountRecord], subject: int, expected: str, looked_up: list[str]
) -> None:
    calls: list[str] = []
    table = MountTable(records)
    assert table.user_source(records[subject], _backing(calls)) == expected
    assert calls == looked_up


def test_bind_origin_of_a_record_from_elsewhere() -> None:
    table = MountTable([record(1, 0, "/srv", device=(0, 40))])
    stranger = record(7, 0, "/b", device=(0, 40), root="/x")
    origin = table.bind_origin(stranger)
    assert origin is not None and origin[0].mount_id == 1 and origin[1] == "/srv/x"
    assert table.bind_origin(table.by_id[1]) is None


# -- golden: a real scenario ---------------------------------------------------------------


@pytest.fixture(scope="module")
def scenario() -> tuple[MountTable, dict, dict]:  # type: ignore[type-arg]
    text = (GOLDEN / "scenario.mountinfo").read_text(encoding="utf-8")
    expected = json.loads((GOLDEN / "scenario.expected.json").read_text(encoding="utf-8"))
    loops = json.loads((GOLDEN / "scenario.loops.json").read_text(encoding="utf-8"))
    return MountTable(parse_mountinfo(text)), expected, loops


def test_golden_records_match_findmnt(scenario) -> None:  # type: ignore[no-untyped-def]
    table, expected, _ = scenario
    assert len(table) == len(expected["records"])
    for ours, theirs in zip(table, expected["records"], strict=True):
        assert {
            "id": ours.mount_id,
            "parent": ours.parent_id,
            "maj:min": ours.device,
            "fsroot": ours.root,
            "target": ours.target,
            "fstype": ours.fstype,
            "source": ours.source,
            "vfs-options": ",".join(ours.vfs_options),
            "fs-options": ",".join(ours.super_options),
            "opt-fields": " ".join(ours.optional_fields) or None,
        } == theirs


def test_golden_user_sources(scenario) -> None:  # type: ignore[no-untyped-def]
    table, expected, loops = scenario
    for target, source in expected["user_sources"].items():
        found = table.at(target)
        assert found is not None, target
        assert table.user_source(found, loops.get) == source, target


def test_golden_stacks_and_visibility(scenario) -> None:  # type: ignore[no-untyped-def]
    table, expected, _ = scenario
    for target, sources in expected["stacks"].items():
        assert [r.source for r in table.mounts_at(target)] == sources
        top = table.at(target)
        assert top is not None and top.source == sources[-1]
    base = expected["base"]
    # (The machine's own /dev/shm and /dev/pts are stacks too; only the scenario counts.)
    hidden = {r.source for r in table.under(base) if not table.is_visible(r)}
    assert hidden == set(expected["hidden"])
    assert len(table.under(base)) == sum(
        1 for r in expected["records"] if r["target"] == base or r["target"].startswith(base + "/")
    )


def test_golden_propagation(scenario) -> None:  # type: ignore[no-untyped-def]
    table, expected, _ = scenario
    for target, kinds in expected["propagation"].items():
        found = table.at(target)
        assert found is not None
        assert re.sub(r":\d+", "", found.propagation) == kinds


def test_golden_odd_path(scenario) -> None:  # type: ignore[no-untyped-def]
    table, expected, _ = scenario
    odd = table.at(expected["odd"])
    assert odd is not None and odd.source == "odd src"
    assert "\\040" in (GOLDEN / "scenario.mountinfo").read_text(encoding="utf-8")


# -- golden: 10k bind mounts --------------------------------------------------------------


def _unraw(field: str) -> str:
    """Undo findmnt --raw's \\xHH escapes."""
    return re.sub(r"\\x([0-9a-fA-F]{2})", lambda m: chr(int(m.group(1), 16)), field)


def test_golden_10k_bind_mounts() -> None:
    text = gzip.decompress((GOLDEN / "bind10k.mountinfo.gz").read_bytes()).decode("utf-8")
    findmnt = gzip.decompress((GOLDEN / "bind10k.findmnt.gz").read_bytes()).decode("utf-8")
    records = parse_mountinfo(text)
    assert len(records) == len(text.splitlines()) > 10_000
    theirs = [line.split(" ") for line in findmnt.splitlines()]
    assert [
        [str(r.mount_id), str(r.parent_id), r.device, r.root, r.target, r.fstype, r.source]
        for r in records
    ] == [[_unraw(f) for f in fields] for fields in theirs]

    table = MountTable(records)
    base = table.at("/tmp/lmi-golden")
    assert base is not None
    binds = table.children(base.mount_id)
    assert len(binds) == 10_000
    for r in binds:
        i = int(r.target.rsplit("/", 1)[1])
        # The capture made every tenth mount a bind of the previous bind mount,
        # itself a bind of s/: the source is named through the file system's
        # own mount (the canonical name), not through the intermediate bind.
        want = f"/tmp/lmi-golden/s/{i - 1:05d}" if i % 10 == 9 else f"/tmp/lmi-golden/s/{i:05d}"
        assert table.user_source(r, lambda device: None) == want
        assert table.at(r.target) is r


# -- properties ------------------------------------------------------------------------


@given(st.text().filter(lambda value: "\0" not in value))
def test_escape_round_trip(value: str) -> None:
    # No path or option holds a NUL; decoded as libmount does, one ends the field.
    assert unescape_field(escape_field(value)) == value


_FIELD_WORDS = st.sampled_from(
    ["1", "22", "0:5", "8:1", "/", "/a", "-", "rw", "ro,noatime", "shared:1", "", "x", "\\040",
     "tmpfs", "9" * 30, ":", "1:"]
)


@given(st.one_of(
    st.text(),
    st.lists(st.lists(_FIELD_WORDS, max_size=14).map(" ".join), max_size=4).map("\n".join),
))
def test_parse_raises_only_mountinfo_error(text: str) -> None:
    try:
        records = parse_mountinfo(text)
    except MountinfoError as exc:
        assert exc.lineno >= 1
    else:
        assert all(isinstance(r, MountRecord) for r in records)


_PATH = st.text(st.characters(exclude_characters="\x00", exclude_categories=("Cs",)),
                min_size=1).map(lambda s: "/" + s)
_WORD = st.text("az09_.:=", min_size=1, max_size=8)
_TAG = st.one_of(
    st.just("unbindable"),
    st.builds("{}:{}".format, st.sampled_from(["shared", "master", "propagate_from"]),
              st.integers(1, 999)),
)
_RECORDS = st.builds(
    MountRecord,
    st.integers(0, 2**31 - 1), st.integers(0, 2**31 - 1),
    st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1),
    _PATH, _PATH,
    st.lists(_WORD, min_size=1, max_size=4).map(tuple),
    st.lists(_TAG, max_size=3).map(tuple),
    st.text(st.characters(exclude_characters="\x00", exclude_categories=("Cs",)), min_size=1),
    st.text(st.characters(exclude_characters="\x00", exclude_categories=("Cs",))),
    st.lists(_WORD, min_size=1, max_size=4).map(tuple),
)


def _kernel_line(r: MountRecord) -> str:
    """Print ``r`` as show_mountinfo() would (fs/proc_namespace.c)."""
    return " ".join([
        str(r.mount_id), str(r.parent_id), r.device, escape_field(r.root), escape_field(r.target),
        ",".join(r.vfs_options), *r.optional_fields, "-", escape_field(r.fstype),
        escape_field(r.source), ",".join(r.super_options),
    ])


@given(st.lists(_RECORDS, max_size=5))
def test_printed_records_parse_back(records: list[MountRecord]) -> None:
    text = "".join(_kernel_line(r) + "\n" for r in records)
    assert parse_mountinfo(text) == records


# -- reads after a change: reused records, visibility asked for one mount -----------------


@given(st.lists(_RECORDS, max_size=6), st.lists(_RECORDS, max_size=6), st.data())
def test_a_parser_reads_each_table_as_a_fresh_parse_does(
        first: list[MountRecord], added: list[MountRecord], data: st.DataObject) -> None:
    # The second table keeps some lines of the first (a mount went, others came).
    kept = data.draw(st.lists(st.sampled_from(first), unique_by=id) if first else st.just([]))
    parser = MountinfoParser()
    before = "".join(_kernel_line(r) + "\n" for r in first)
    after = "".join(_kernel_line(r) + "\n" for r in [*kept, *added])
    read = parser.parse(before)
    assert read == parse_mountinfo(before)
    reread = parser.parse(after)
    assert reread == parse_mountinfo(after)
    # A line seen last time is not parsed again: its record is the same object
    # (the first time the line comes; a repeat is a record of its own).
    earlier = dict(zip(before.split("\n")[:-1], read, strict=True))
    placed: set[str] = set()
    for line, record in zip(after.split("\n")[:-1], reread, strict=True):
        if line not in placed:
            assert record is earlier.get(line, record)
        placed.add(line)
    assert len({id(record) for record in reread}) == len(reread)


def test_a_parser_refuses_a_bad_line_and_reads_on() -> None:
    parser = MountinfoParser()
    good = "1 0 0:50 / / rw - tmpfs tmpfs rw\n"
    first = parser.parse(good)
    with pytest.raises(MountinfoError):
        parser.parse(good + "2 1 0:51 / /x\n")
    assert parser.parse(good + "3 1 0:52 / /y rw - tmpfs t rw\n")[0] is first[0]


_TREE_PATHS = st.sampled_from(
    ["/", "/a", "/a/b", "/a/b/c", "/a/b/d", "/a-b", "/a-b/c", "/d", "/d/e"])


@st.composite
def _trees(draw: st.DrawFn) -> list[MountRecord]:
    """Mount tables with stacks, covered mount points, moved and orphaned mounts."""
    count = draw(st.integers(1, 12))
    records = []
    for mount_id in range(1, count + 1):
        parent = draw(st.integers(0, count))  # 0: a parent outside the table
        records.append(record(mount_id, parent, draw(_TREE_PATHS)))
    return records


@given(_trees(), st.randoms())
def test_visibility_does_not_depend_on_the_order_of_the_questions(
        records: list[MountRecord], rng: random.Random) -> None:
    whole = {r.mount_id for r in MountTable(records).visible()}
    asked = MountTable(records)
    order = list(records)
    rng.shuffle(order)
    assert {r.mount_id for r in order if asked.is_visible(r)} == whole
    for target in {r.target for r in records}:
        found = MountTable(records).at(target)
        assert found is None or found.mount_id in whole
        assert found == MountTable(records).at(target) == asked.at(target)


@given(_trees())
def test_a_mount_is_covered_exactly_when_a_sibling_sits_on_a_directory_above_it(
        records: list[MountRecord]) -> None:
    # The family's walk shares the directories of its kids (thousands of kids
    # in one family on a big host); against the definition, sibling by sibling.
    table = MountTable(records)
    for parent_id in {r.parent_id for r in records}:
        kids = [r for r in records if r.parent_id == parent_id and r.mount_id != parent_id]
        parent = table.by_id.get(parent_id)
        floor = len(parent.target) if parent is not None else 0
        covered = {kid.mount_id for kid in kids for sibling in kids
                   if sibling.target != "/" and len(sibling.target) > floor
                   and kid.target.startswith(sibling.target + "/")}
        stacked = parent is not None and any(kid.target == parent.target for kid in kids)
        assert table._family(parent_id) == (stacked, frozenset(covered))


def test_a_line_repeated_by_a_torn_read_is_read_as_a_fresh_parse_reads_it() -> None:
    # Two records of one line are two records, as in a fresh parse: bind_origin
    # takes only the record by_id holds (the later one) as an origin.
    root = "1 0 0:20 / / rw - ext4 /dev/sda1 rw\n"
    line = "10 1 0:50 / /a rw - tmpfs tmpfs rw\n"
    torn = root + line + line + "20 1 0:50 /sub /b rw - tmpfs tmpfs rw\n"
    parser = MountinfoParser()
    parser.parse(root + line)
    fresh, reread = MountTable(parse_mountinfo(torn)), MountTable(parser.parse(torn))
    assert reread.records == fresh.records
    for table in (fresh, reread):
        assert table.user_source(table.by_id[20], lambda device: None) == \
            fresh.user_source(fresh.by_id[20], lambda device: None)
    assert reread.records[1] is not reread.records[2]


def test_threads_sharing_a_table_get_one_bind_origin() -> None:
    # The engine shares a table between threads; bind_origin's index was
    # published empty and filled after, so a second thread read it half
    # made and took a bind for no bind (outside review: 30 of 30 rounds).
    lines = ["1 0 8:1 / / rw - ext4 /dev/sda1 rw"]
    lines += [f"{i} 1 0:{40 + i % 3} / /t{i} rw - tmpfs tmp{i % 3} rw" for i in range(2, 20_000)]
    lines += ["20000 1 0:999 / /late rw - tmpfs late rw",
              "20001 1 0:999 /sub /bind rw - tmpfs late rw"]
    records = parse_mountinfo("\n".join(lines))
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    try:
        for _ in range(5):
            table = MountTable(records)
            answers: list[object] = []
            start = threading.Barrier(4)

            def ask(table: MountTable = table, start: threading.Barrier = start,
                    answers: list[object] = answers) -> None:
                start.wait()
                origin = table.bind_origin(table.records[-1])
                answers.append(origin and (origin[0].mount_id, origin[1]))

            threads = [threading.Thread(target=ask) for _ in range(4)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            assert answers == [(20000, "/late/sub")] * 4
    finally:
        sys.setswitchinterval(switch)


def test_a_quoted_option_with_commas_is_one_option() -> None:
    # SELinux shows an MCS context with categories quoted (selinux_sb_show_options);
    # split on every comma it became two options that never matched the line's.
    context = 'context="system_u:object_r:container_file_t:s0:c1,c2"'
    line = (f"36 25 0:32 / /srv/c rw,relatime shared:1 - tmpfs tmpfs "
            f"rw,seclabel,{context},size=1024k\n")
    (record,) = parse_mountinfo(line)
    assert record.super_options == ("rw", "seclabel", context, "size=1024k")
