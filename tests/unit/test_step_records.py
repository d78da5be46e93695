"""Plan steps survive their journal record exactly (the engine's transactions)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lmi_mount.mounts.fstab import FstabEntry
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
