"""Plan steps survive their journal record exactly (the engine's transactions)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lmi_mount.mounts.fstab import FstabDocument, FstabEntry
from lmi_mount.mounts.holders import HeldMount
from lmi_mount.mounts.options import BOOLEAN_FIELDS, MountOptions, parse_options
from lmi_mount.mounts.plan import (
    FstabChange,
    HolderChange,
    KernelMount,
    KernelRemount,
    KernelUnmount,
    MountSpec,
    Step,
    step_from_record,
    step_record,
)

SPEC = MountSpec("/src dir\\x", "/mnt/a", None, parse_options("ro,nosuid"), recursive=True)
HELD = HeldMount("/mnt/a", "tmpfs", "tmpfs", "size=1m", True, 40, 1 << 33, ("alice", "bob"))
ENTRY = FstabEntry("UUID=1234", "/srv/data", "ext4", "noatime,x-systemd.automount", 0, 2)


def round_trip(step: Step) -> Step:
    return step_from_record(json.loads(json.dumps(step_record(step))))


@pytest.mark.parametrize("step", [
    pytest.param(KernelMount(SPEC), id="mount"),
    pytest.param(KernelRemount("/mnt/a", parse_options("ro"), parse_options("rw"), True),
                 id="remount"),
    pytest.param(KernelUnmount("/mnt/a", True, SPEC), id="unmount-with-undo"),
    pytest.param(KernelUnmount("/mnt/a", False, None), id="unmount-without-undo"),
    pytest.param(FstabChange("/srv/data", None, ENTRY), id="fstab-add"),
    pytest.param(FstabChange("/srv/data", ENTRY, None), id="fstab-remove"),
    pytest.param(FstabChange("/srv/data", ENTRY, None, was=(
        (3, "UUID=1234\t/srv/data  ext4 noatime,x-systemd.automount 0 2\r", "# data\r"),)),
        id="fstab-remove-with-its-raw-line"),
    pytest.param(HolderChange("/mnt/a", None, HELD, "alice acquires"), id="holders"),
])
def test_every_step_kind_round_trips(step: Step) -> None:
    assert round_trip(step) == step


@given(
    st.fixed_dictionaries({name: st.sampled_from([None, True, False]) for name in BOOLEAN_FIELDS}),
    st.lists(st.text(min_size=1, max_size=12), max_size=4),
)
def test_live_options_round_trip_even_when_they_would_not_validate(
    fields: dict[str, bool | None], others: list[str]
) -> None:
    # Live options (from mountinfo) may hold what a configured option may not:
    # the record keeps them field by field, never through an option string.
    options = MountOptions(**fields, other_options=tuple(others))
    step = KernelRemount("/m", options, options, False)
    assert round_trip(step) == step


def test_a_malformed_record_is_an_error_not_a_step() -> None:
    with pytest.raises(ValueError, match="unknown step kind"):
        step_from_record({"step": "explode"})
    with pytest.raises(KeyError):
        step_from_record({"step": "fstab"})


def test_an_undone_removal_puts_each_line_back_where_it_stood_as_it_was() -> None:
    # After a kill -9, recovery has only the step: the first build put the
    # lines back at the end of the file, respaced (an outside review).
    text = ("# head\n"
            "tmpfs   /mnt/a\ttmpfs size=1m 0 0\n"
            "tmpfs /srv/b tmpfs defaults 0 0\r\n"
            "tmpfs /mnt/a/ tmpfs size=2m 0 0\n"
            "tmpfs\t/srv/c tmpfs defaults 0 0\n")
    document = FstabDocument(text)
    lines = [line for line in document.entries() if line.entry.target.startswith("/mnt/a")]
    step = FstabChange("/mnt/a", lines[0].entry, None, (lines[1].entry,),
                       was=tuple((line.number, line.text, document.line(line.number - 1))
                                 for line in lines))
    removed = step.apply(document)
    assert removed.render() == ("# head\ntmpfs /srv/b tmpfs defaults 0 0\r\n"
                                "tmpfs\t/srv/c tmpfs defaults 0 0\n")
    undo = round_trip(step).undo()
    assert isinstance(undo, FstabChange)
    assert undo.apply(removed).render() == text
    # Lines the step does not describe exactly are rendered anew, not lost.
    stale = FstabChange("/mnt/a", None, lines[0].entry,
                        restore=((2, "tmpfs /mnt/x tmpfs x 0 0", "# head"),))
    assert stale.apply(FstabDocument("")).find_target("/mnt/a") == lines[0].entry


def test_a_line_goes_back_after_the_line_it_followed_whatever_moved_since() -> None:
    # Request A removes l3 and is killed; request B removes l1 and ends. By
    # its number alone, l3 came back after l4 (a review).
    text = "l1 /b t d 0 0\nl2 /x t d 0 0\nl3 /a t d 0 0\nl4 /y t d 0 0\n"
    document = FstabDocument(text)
    (l3,) = [line for line in document.entries() if line.entry.target == "/a"]
    remove_a = FstabChange("/a", l3.entry, None, was=((l3.number, l3.text, document.line(2)),))
    after_a = remove_a.apply(document)
    (l1,) = [line for line in after_a.entries() if line.entry.target == "/b"]
    after_b = FstabChange("/b", l1.entry, None).apply(after_a)
    undo = remove_a.undo()
    assert isinstance(undo, FstabChange)
    assert undo.apply(after_b).render() == "l2 /x t d 0 0\nl3 /a t d 0 0\nl4 /y t d 0 0\n"


def test_a_record_of_an_earlier_build_without_the_line_before_is_placed_by_number() -> None:
    # Records kept (number, text) pairs for a while: a journal left by a
    # kill -9 of that build must still be recovered, not left "unreadable".
    record = step_record(FstabChange("/a", FstabEntry("l3", "/a", "t", "d"), None))
    record["was"] = [[3, "l3 /a t d 0 0"]]
    undo = step_from_record(record).undo()
    assert isinstance(undo, FstabChange)
    document = FstabDocument("l1 /b t d 0 0\nl2 /x t d 0 0\nl4 /y t d 0 0\n")
    assert undo.apply(document).render().splitlines()[2] == "l3 /a t d 0 0"
