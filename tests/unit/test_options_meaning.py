"""fstab option fields that mean what was asked, judged by libmount.

The first build dropped every word equal to a default: ``user,noauto,exec``
became ``user,noauto``, and ``user`` implies noexec, so the mount came up
noexec. Here libmount (mnt_optstr_get_flags, what mount(8) derives its
mount(2) flags from, left to right) reads both the canonical rendering of a
request and the field lmi-mount writes: the flags and every other word, in
order, must be the same, with or without an existing line to keep.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lmi_mount.mounts.options import (
    BOOLEAN_FIELDS,
    MountOptions,
    fstab_options,
    mount8_flags,
    parse_options,
    render_options,
)
from tests.support.libmount import mount_flags, requires_libmount

pytestmark = requires_libmount

SETTING_WORDS = ["ro", "rw", "exec", "noexec", "suid", "nosuid", "dev", "nodev", "sync",
                 "async", "dirsync", "atime", "noatime", "relatime", "norelatime",
                 "strictatime", "nostrictatime", "diratime", "nodiratime", "mand", "nomand",
                 "silent", "loud"]
OTHER_WORDS = ["user", "users", "owner", "group", "nouser", "noauto", "auto", "nofail",
               "size=1m", "mode=0755", "x-systemd.automount", "lazytime", "nolazytime",
               "nosymfollow", "iversion", "noiversion", "user=bob", "_netdev"]


def other_words(words: str) -> list[str]:
    return [w for w in words.split(",") if w not in SETTING_WORDS and w != "defaults"]


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from([*SETTING_WORDS, *OTHER_WORDS, "defaults", "bind", "rbind",
                                 "rshared", "private", "ro=1", "exec=0"]), min_size=1))
def test_our_reading_of_flags_is_libmounts(words: list[str]) -> None:
    assert mount8_flags(words) == mount_flags(",".join(words))


goals = st.builds(
    MountOptions,
    **{name: st.sampled_from([None, True, False]) for name in BOOLEAN_FIELDS},
    other_options=st.lists(st.sampled_from(OTHER_WORDS), max_size=4).map(tuple),
)
existing_fields = st.lists(st.sampled_from([*SETTING_WORDS, *OTHER_WORDS, "defaults"]),
                           min_size=1, max_size=6).map(",".join)


@settings(max_examples=500, deadline=None)
@given(goals, st.one_of(st.none(), existing_fields))
def test_the_written_field_means_the_request_to_mount8(goal: MountOptions,
                                                         existing: str | None) -> None:
    canonical = render_options(goal)
    written = fstab_options(goal, existing)
    assert mount_flags(written) == mount_flags(canonical), (canonical, existing, written)
    assert other_words(written) == other_words(canonical)
    if existing is not None and mount_flags(existing) == mount_flags(canonical) and (
            other_words(existing) == other_words(canonical)):
        assert written == existing, "a line that already means it is left alone"


@pytest.mark.parametrize(("options", "written"), [
    pytest.param("user,noauto,exec", "user,noauto,exec", id="user-then-exec-keeps-exec"),
    pytest.param("exec,user,noauto", "user,noauto", id="exec-then-user-is-noexec"),
    pytest.param("users,exec,dev,suid", "users,suid,dev,exec", id="users"),
    pytest.param("owner,dev,suid", "owner,suid,dev", id="owner"),
    pytest.param("group,dev,suid", "group,suid,dev", id="group"),
    pytest.param("rw,suid,dev,exec,async", "defaults", id="defaults-need-no-word"),
    pytest.param("ro,noatime", "ro,noatime", id="non-defaults-stay"),
])
def test_the_cases_of_the_issue(options: str, written: str) -> None:
    assert fstab_options(parse_options(options)) == written


def test_a_goal_of_the_draft_defaults_with_user_stays_executable() -> None:
    # The CIM Goal: AllowExecution etc. true (the draft's defaults), OtherOptions user.
    goal = MountOptions.from_fields(allow_write=True, allow_suid=True, interpret_devices=True,
                                    allow_execution=True, synchronous_io=False,
                                    other_options=["user", "noauto"])
    assert fstab_options(goal) == "user,noauto,suid,dev,exec"
    assert mount_flags("user,noauto,suid,dev,exec") == 0


def test_an_existing_line_keeps_its_spelling_and_changes_only_what_differs() -> None:
    assert fstab_options(parse_options("sync,hard"), "rw,sync,hard") == "rw,sync,hard"
    assert fstab_options(parse_options("ro,sync,hard"), "rw,sync,hard") == "ro,sync,hard"
    assert fstab_options(parse_options("noatime"), "defaults,noatime,nofail") == "noatime"


def test_a_quoted_value_holding_a_flag_word_keeps_the_flag() -> None:
    goal = parse_options('ro,context="a,ro,b"')
    written = fstab_options(goal)
    assert mount_flags(written) == mount_flags(render_options(goal)) == 1  # MS_RDONLY
    assert fstab_options(parse_options("defaults"), "ro") == "defaults"
