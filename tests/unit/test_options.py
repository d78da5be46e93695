"""mounts.options: the setting <-> option string <-> MS_* flag table, drift, remount scope.

The last test holds kernel_request() to mount(8): the same option string is
mounted once by mount(8) and once by mount(2) with our flags and data, in a
private mount namespace, and the kernel must report the same options.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lmi_mount.mounts import flags as ms
from lmi_mount.mounts.options import (
    BOOLEAN_FIELDS,
    DEFAULTS,
    KernelOptions,
    MountOptions,
    OptionDrift,
    OptionError,
    atime_mode,
    compare,
    from_mountinfo,
    is_fstab_only,
    kernel_request,
    parse_options,
    remount_needs_superblock,
    render_options,
    split_flags,
    validate,
    with_defaults,
)

# -- the table, written out independently of the module -----------------------------

# word, field, value, the flag kernel_request sets for it
WORDS = [
    ("rw", "allow_write", True, 0),
    ("ro", "allow_write", False, ms.MS_RDONLY),
    ("suid", "allow_suid", True, 0),
    ("nosuid", "allow_suid", False, ms.MS_NOSUID),
    ("dev", "interpret_devices", True, 0),
    ("nodev", "interpret_devices", False, ms.MS_NODEV),
    ("exec", "allow_execution", True, 0),
    ("noexec", "allow_execution", False, ms.MS_NOEXEC),
    ("sync", "synchronous_io", True, ms.MS_SYNCHRONOUS),
    ("async", "synchronous_io", False, 0),
    ("dirsync", "synchronous_directory_updates", True, ms.MS_DIRSYNC),
    ("atime", "update_access_times", True, 0),
    ("noatime", "update_access_times", False, ms.MS_NOATIME),
    ("relatime", "update_relative_access_times", True, ms.MS_RELATIME),
    ("strictatime", "update_full_access_times", True, ms.MS_STRICTATIME),
    ("nostrictatime", "update_full_access_times", False, 0),
    ("diratime", "update_directory_access_times", True, 0),
    ("nodiratime", "update_directory_access_times", False, ms.MS_NODIRATIME),
    ("mand", "allow_mandatory_lock", True, ms.MS_MANDLOCK),
    ("nomand", "allow_mandatory_lock", False, 0),
    ("silent", "silent", True, ms.MS_SILENT),
    ("loud", "silent", False, 0),
]


@pytest.mark.parametrize(("word", "field", "value", "flag"),
                         [pytest.param(*row, id=row[0]) for row in WORDS])
def test_word_field_flag(word: str, field: str, value: bool, flag: int) -> None:
    options = parse_options(word)
    assert options == MountOptions(**{field: value})
    assert render_options(options) == word
    # A word for a per-mount flag's "off" (rw, suid, ...) asks a bind to clear it.
    clearing = {"rw": ms.MS_RDONLY, "suid": ms.MS_NOSUID, "dev": ms.MS_NODEV,
                "exec": ms.MS_NOEXEC, "diratime": ms.MS_NODIRATIME}
    # "atime" asks for the default mode: relatime, so that a bind or a remount
    # of a noatime mount does not keep noatime.
    expected_flags = ms.MS_RELATIME if word == "atime" else flag
    assert kernel_request(options) == KernelOptions(flags=expected_flags, data="",
                                                    clear=clearing.get(word, 0))


@pytest.mark.parametrize(("text", "mode"), [
    ("norelatime", None), ("relatime,norelatime", None), ("norelatime,noatime", "noatime"),
    ("noatime,strictatime", "strictatime"), ("strictatime,noatime", "strictatime"),
    ("relatime,noatime", "noatime"), ("strictatime,relatime", "strictatime"),
    ("strictatime,norelatime", "strictatime"), ("atime", "relatime"),
])
def test_atime_words_read_as_the_kernel_applies_them(text: str, mode: str | None) -> None:
    # mount(2) takes them as flags, in no order: MS_STRICTATIME beats MS_NOATIME,
    # which beats MS_RELATIME, the default (norelatime alone changes nothing).
    # tests/differential/test_mount8.py holds this against mount(8).
    assert atime_mode(parse_options(text)) == mode


def test_boolean_fields_are_the_dataclass_fields_in_table_order() -> None:
    names = [f.name for f in dataclasses.fields(MountOptions)]
    assert names == [*BOOLEAN_FIELDS, "other_options"]
    assert list(dict.fromkeys(field for _, field, _, _ in WORDS)) == list(BOOLEAN_FIELDS)


def test_defaults() -> None:
    assert MountOptions.DEFAULTS is DEFAULTS
    assert render_options(DEFAULTS) == "rw,suid,dev,exec,async"
    assert parse_options("rw,suid,dev,exec,async") == DEFAULTS
    assert kernel_request(DEFAULTS) == KernelOptions(
        flags=0, data="", clear=ms.MS_RDONLY | ms.MS_NOSUID | ms.MS_NODEV | ms.MS_NOEXEC)
    assert with_defaults(parse_options("ro,noatime")) == dataclasses.replace(
        DEFAULTS, allow_write=False, update_access_times=False
    )
    assert with_defaults(DEFAULTS) is DEFAULTS


# -- parsing and rendering ------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected", "rendered"),
    [
        pytest.param("defaults", MountOptions(), "defaults", id="defaults-sets-nothing"),
        pytest.param("ro,defaults", MountOptions(allow_write=False), "ro",
                     id="defaults-does-not-reset-ro"),
        pytest.param("rw,ro", MountOptions(allow_write=False), "ro", id="later-wins"),
        pytest.param("ro,rw", MountOptions(allow_write=True), "rw", id="later-wins-back"),
        pytest.param("noexec,size=10m,ro", MountOptions(allow_write=False, allow_execution=False,
                                                        other_options=("size=10m",)),
                     "ro,noexec,size=10m", id="canonical-order"),
        pytest.param('context="system_u:object_r:tmp_t:s0:c127,c456",noexec',
                     MountOptions(allow_execution=False, other_options=(
                         'context="system_u:object_r:tmp_t:s0:c127,c456"',)),
                     'noexec,context="system_u:object_r:tmp_t:s0:c127,c456"',
                     id="quoted-comma"),
        pytest.param("noauto,nofail,_netdev,x-systemd.automount,comment=x,X-mount.mkdir",
                     MountOptions(other_options=("noauto", "nofail", "_netdev",
                                                 "x-systemd.automount", "comment=x",
                                                 "X-mount.mkdir")),
                     "noauto,nofail,_netdev,x-systemd.automount,comment=x,X-mount.mkdir",
                     id="fstab-only-kept-in-order"),
        pytest.param("size=1m,size=2m,auto", MountOptions(other_options=("size=1m", "size=2m",
                                                                         "auto")),
                     "size=1m,size=2m,auto", id="duplicates-kept"),
        pytest.param("exec,user", MountOptions(other_options=("user",)), "user",
                     id="user-after-exec-wins"),
        pytest.param("noauto,user,exec", MountOptions(allow_execution=True,
                                                      other_options=("noauto", "user")),
                     "noauto,user,exec", id="exec-after-user-wins-and-stays-after"),
        pytest.param("suid,owner,rw", MountOptions(allow_write=True, other_options=("owner",)),
                     "rw,owner", id="owner-implies-nosuid-nodev"),
        pytest.param("user,nouser,noexec", MountOptions(allow_execution=False,
                                                        other_options=("user", "nouser")),
                     "user,nouser,noexec", id="nouser-does-not-undo-user-as-in-libmount"),
        pytest.param("user=alice,exec", MountOptions(allow_execution=True,
                                                     other_options=("user=alice",)),
                     "exec,user=alice", id="user-with-name-implies-nothing"),
        pytest.param("lazytime,nosymfollow,bind,rprivate",
                     MountOptions(other_options=("lazytime", "nosymfollow", "bind", "rprivate")),
                     "lazytime,nosymfollow,bind,rprivate", id="flag-and-operation-words"),
    ],
)
def test_parse_and_render(text: str, expected: MountOptions, rendered: str) -> None:
    assert parse_options(text) == expected
    assert render_options(expected) == rendered
    assert parse_options(rendered) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param("", "option string is empty", id="empty-string"),
        pytest.param("rw,,ro", "empty option (element 2) in 'rw,,ro'", id="empty-element"),
        pytest.param("ro,", "empty option (element 2)", id="trailing-comma"),
        pytest.param('context="a,b', "unbalanced double quote in options 'context=\"a,b'",
                     id="unbalanced-quote"),
        pytest.param("ro=1", "option 'ro=1' is the allow_write setting", id="field-word-value"),
        pytest.param("rw, noatime", "option ' noatime' contains whitespace", id="space"),
        pytest.param("si\tze=1m", "contains whitespace or a control character",
                     id="tab-in-a-name"),
        pytest.param("a\x01b", "control character ('\\x01')", id="control"),
        pytest.param("=5", "option '=5' has no name", id="no-name"),
        pytest.param("remount,ro", "'remount' is an operation", id="remount"),
    ],
)
def test_parse_errors(text: str, message: str) -> None:
    with pytest.raises(OptionError) as caught:
        parse_options(text)
    assert message in str(caught.value)


def test_dirsync_false_has_no_word() -> None:
    off = MountOptions(synchronous_directory_updates=False)
    assert render_options(off) == "defaults"
    assert parse_options(render_options(off)) == MountOptions()
    assert kernel_request(off) == kernel_request(MountOptions())


# -- validation (the CIM layer's path) --------------------------------------------------


@pytest.mark.parametrize(
    ("other", "message"),
    [
        pytest.param(["ro"], "option 'ro' is the allow_write setting: set allow_write=False",
                     id="contradicts-a-boolean"),
        pytest.param(["noatime"], "update_access_times=False", id="atime-word"),
        pytest.param(["a,b"], "option 'a,b' contains a comma outside double quotes",
                     id="comma"),
        pytest.param(["si ze=1m"], "option 'si ze=1m' contains whitespace", id="space"),
        pytest.param(["a=b\u00a0c"], "whitespace", id="no-break-space-in-a-value"),
        pytest.param(["x\ny"], "control character", id="newline"),
        pytest.param(["x\u2028y"], "whitespace", id="unicode-line-separator"),
        pytest.param(["x\x85y"], "control character", id="c1-control"),
        pytest.param([""], "must not be empty", id="empty"),
        pytest.param(["defaults"], "'defaults' means no option at all", id="defaults"),
        pytest.param(['a="b'], "unbalanced double quote", id="quote"),
        pytest.param([5], "other option 5 is not a string", id="not-a-string"),
    ],
)
def test_from_fields_rejects(other: list[object], message: str) -> None:
    with pytest.raises(OptionError) as caught:
        MountOptions.from_fields(other_options=other)  # type: ignore[arg-type]
    assert message in str(caught.value)
    assert caught.value.value in (other[0], str(other[0]))


def test_from_fields_checks_types_and_accepts_cim_shapes() -> None:
    with pytest.raises(OptionError, match="allow_write must be true, false or unset, not 1"):
        MountOptions.from_fields(allow_write=1)  # type: ignore[arg-type]
    with pytest.raises(OptionError, match="not the string 'size=1m'"):
        MountOptions.from_fields(other_options="size=1m")
    assert MountOptions.from_fields(other_options=None) == MountOptions()
    assert MountOptions.from_fields(allow_write=False, other_options=["size=1m", "noauto"]) == (
        MountOptions(allow_write=False, other_options=("size=1m", "noauto"))
    )
    with pytest.raises(OptionError, match="must be a tuple"):
        validate(MountOptions(other_options=["x"]))  # type: ignore[arg-type]


# -- the kernel side ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "flags", "data", "propagation"),
    [
        pytest.param("ro,nosuid,size=10m,mode=0700", ms.MS_RDONLY | ms.MS_NOSUID,
                     "size=10m,mode=0700", 0, id="flags-and-data"),
        pytest.param("noauto,nofail,_netdev,x-systemd.automount,user=bob,comment=c,loop,"
                     "offset=512,X-mount.mkdir,verity.roothash=ab,size=1m",
                     0, "size=1m", 0, id="fstab-only-never-reach-the-kernel"),
        pytest.param("user", ms.MS_NOEXEC | ms.MS_NOSUID | ms.MS_NODEV, "", 0,
                     id="user-implies-secure"),
        pytest.param("user,exec", ms.MS_NOSUID | ms.MS_NODEV, "", 0, id="user-then-exec"),
        pytest.param("group", ms.MS_NOSUID | ms.MS_NODEV, "", 0, id="group-implies-owner-secure"),
        pytest.param("lazytime,nosymfollow", ms.MS_LAZYTIME | ms.MS_NOSYMFOLLOW, "", 0,
                     id="flag-words"),
        pytest.param("lazytime,nolazytime", 0, "", 0, id="flag-word-later-wins"),
        pytest.param("rbind,ro", ms.MS_BIND | ms.MS_REC | ms.MS_RDONLY, "", 0, id="rbind"),
        pytest.param("private,rshared", 0, "", ms.MS_SHARED | ms.MS_REC, id="propagation"),
        pytest.param('context="a,b",inode64', 0, 'context="a,b",inode64', 0, id="quoted-data"),
        # libmount's optmap: a flag, never a file system option (tmpfs and ext4
        # refuse the word "iversion" as one).
        pytest.param("iversion", ms.MS_I_VERSION, "", 0, id="iversion-is-a-flag"),
        pytest.param("iversion,noiversion,size=1m", 0, "size=1m", 0, id="noiversion-later-wins"),
    ],
)
def test_kernel_request(text: str, flags: int, data: str, propagation: int) -> None:
    request = kernel_request(parse_options(text))
    assert (request.flags, request.data, request.propagation) == (flags, data, propagation)
    assert not request.clear & request.flags


def test_kernel_request_clears_what_a_later_word_turns_off() -> None:
    # user implies noexec; a later exec wins and must clear a bind origin's noexec.
    request = kernel_request(parse_options("user,exec"))
    assert request.clear == ms.MS_NOEXEC
    assert kernel_request(parse_options("nosymfollow,symfollow")).clear == ms.MS_NOSYMFOLLOW


def test_kernel_request_refuses_invalid_options() -> None:
    with pytest.raises(OptionError, match="'ro'"):
        kernel_request(MountOptions(other_options=("ro",)))


@pytest.mark.parametrize(
    ("option", "fstab_only"),
    [
        *(pytest.param(word, True, id=word) for word in (
            "defaults", "auto", "noauto", "user", "user=alice", "nouser", "users", "owner",
            "group", "nogroup", "_netdev", "nofail", "comment=x", "x-systemd.automount",
            "x-initrd.mount", "X-mount.mkdir=0755", "loop", "loop=/dev/loop3", "offset=0",
            "sizelimit=1", "helper=udisks2", "verity.hashdevice=/dev/x")),
        *(pytest.param(word, False, id=word) for word in (
            "ro", "size=10m", "lazytime", "bind", "xattr", "users_quota", "discard")),
    ],
)
def test_is_fstab_only(option: str, fstab_only: bool) -> None:
    assert is_fstab_only(option) is fstab_only


@pytest.mark.parametrize(
    ("flags", "per_mount", "superblock"),
    [
        pytest.param(ms.MS_RDONLY | ms.MS_NOSUID | ms.MS_NOATIME,
                     ms.MS_RDONLY | ms.MS_NOSUID | ms.MS_NOATIME, 0, id="per-mount"),
        pytest.param(ms.MS_SYNCHRONOUS | ms.MS_DIRSYNC | ms.MS_LAZYTIME | ms.MS_MANDLOCK,
                     0, ms.MS_SYNCHRONOUS | ms.MS_DIRSYNC | ms.MS_LAZYTIME | ms.MS_MANDLOCK,
                     id="superblock"),
        pytest.param(ms.MS_REMOUNT | ms.MS_BIND | ms.MS_REC | ms.MS_SHARED | ms.MS_NODEV
                     | ms.MS_SILENT, ms.MS_NODEV, ms.MS_SILENT, id="operations-dropped"),
    ],
)
def test_split_flags(flags: int, per_mount: int, superblock: int) -> None:
    assert split_flags(flags) == (per_mount, superblock)


LIVE_TMPFS = from_mountinfo(("rw", "relatime"), ("rw", "size=10240k", "mode=755"))


@pytest.mark.parametrize(
    ("old", "new", "superblock_read_only", "needed"),
    [
        pytest.param(LIVE_TMPFS, "ro", False, False, id="ro-is-per-mount"),
        pytest.param(LIVE_TMPFS, "nosuid,nodev,noexec,noatime", False, False,
                     id="per-mount-flags"),
        pytest.param(LIVE_TMPFS, "size=10m,mode=0755", False, False,
                     id="fs-options-shown-equal"),
        pytest.param(LIVE_TMPFS, "size=20m", False, True, id="fs-option-changes"),
        pytest.param(LIVE_TMPFS, "nr_inodes=5", False, True, id="fs-option-not-shown"),
        pytest.param(LIVE_TMPFS, "sync", False, True, id="superblock-flag"),
        pytest.param(LIVE_TMPFS, "async", False, False, id="superblock-flag-unchanged"),
        pytest.param(LIVE_TMPFS, "lazytime", False, True, id="lazytime"),
        pytest.param(LIVE_TMPFS, "nosymfollow", False, False, id="nosymfollow-is-per-mount"),
        pytest.param(LIVE_TMPFS, "silent", False, False, id="silent-never"),
        pytest.param(parse_options("ro"), "rw", True, True, id="rw-on-read-only-superblock"),
        pytest.param(parse_options("ro"), "rw", None, True, id="rw-superblock-unknown"),
        pytest.param(parse_options("ro"), "rw", False, False, id="rw-on-writable-superblock"),
        pytest.param(parse_options("ro"), "defaults", None, False, id="nothing-asked"),
    ],
)
def test_remount_needs_superblock(
    old: MountOptions, new: str, superblock_read_only: bool | None, needed: bool
) -> None:
    assert remount_needs_superblock(
        old, parse_options(new), superblock_read_only=superblock_read_only
    ) is needed


# -- live options -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("vfs", "sup", "expected"),
    [
        pytest.param(
            "rw,relatime", "rw,size=10240k,nr_inodes=1024,mode=700",
            MountOptions(True, True, True, True, False, False, True, True, False, True, False,
                         None, ("size=10240k", "nr_inodes=1024", "mode=700")),
            id="golden-sized-tmpfs",
        ),
        pytest.param(
            "ro,relatime", "rw,size=65536k,mode=755",
            MountOptions(False, True, True, True, False, False, True, True, False, True, False,
                         None, ("size=65536k", "mode=755")),
            id="golden-read-only-bind-of-a-writable-fs",
        ),
        pytest.param(
            "rw,relatime", "ro,errors=continue",
            MountOptions(True, True, True, True, False, False, True, True, False, True, False,
                         None, ("errors=continue",)),
            id="golden-squashfs-superblock-ro-is-not-the-mounts",
        ),
        pytest.param(
            "rw,nosuid,nodev,noexec,noatime,nodiratime", "rw",
            MountOptions(True, False, False, False, False, False, False, False, False, False,
                         False, None, ()),
            id="noatime",
        ),
        pytest.param(
            "rw,nosymfollow", "rw,sync,dirsync,mand,lazytime,size=4k",
            MountOptions(True, True, True, True, True, True, True, False, True, True, True,
                         None, ("nosymfollow", "lazytime", "size=4k")),
            id="strictatime-and-superblock-flags",
        ),
        pytest.param(
            "rw,relatime,idmapped", "rw",
            MountOptions(True, True, True, True, False, False, True, True, False, True, False,
                         None, ("idmapped",)),
            id="unknown-vfs-word-kept",
        ),
    ],
)
def test_from_mountinfo(vfs: str, sup: str, expected: MountOptions) -> None:
    assert from_mountinfo(vfs.split(","), sup.split(",")) == expected


# -- drift -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("configured", "live", "drifts"),
    [
        pytest.param("defaults", ("ro,nosuid", "rw,size=1k"), [], id="nothing-configured"),
        pytest.param("rw,size=10m,mode=0755", ("rw,relatime", "rw,size=10240k,mode=755"), [],
                     id="kernel-normalized-values"),
        pytest.param("size=1g,nr_inodes=1k", ("rw", "rw,size=1048576k,nr_inodes=1024"), [],
                     id="memparse-suffixes"),
        pytest.param("size=0x100000", ("rw", "rw,size=1024k"), [], id="hex-size"),
        pytest.param("rw,nosuid", ("ro,relatime", "rw"),
                     [OptionDrift("allow_write", True, False),
                      OptionDrift("allow_suid", False, True)], id="booleans"),
        pytest.param("size=20m", ("rw", "rw,size=10240k"),
                     [OptionDrift("size", "size=20m", "size=10240k")], id="size-drift"),
        pytest.param("size=1000", ("rw", "rw,size=4k"),
                     [OptionDrift("size", "size=1000", "size=4k", comparable=False)],
                     id="page-rounding-not-comparable"),
        pytest.param("size=50%", ("rw", "rw"),
                     [OptionDrift("size", "size=50%", None, comparable=False)],
                     id="percent-of-ram-not-shown"),
        pytest.param("size=50%", ("rw", "rw,size=1024k"),
                     [OptionDrift("size", "size=50%", "size=1024k", comparable=False)],
                     id="percent-of-ram-not-computable"),
        pytest.param("mode=0700", ("rw", "rw,mode=755"),
                     [OptionDrift("mode", "mode=0700", "mode=755")], id="mode-drift"),
        pytest.param("uid=alice,gid=100", ("rw", "rw,uid=1000,gid=100"),
                     [OptionDrift("uid", "uid=alice", "uid=1000", comparable=False)],
                     id="user-names"),
        pytest.param("vers=4", ("rw", "rw,vers=4.2"),
                     [OptionDrift("vers", "vers=4", "vers=4.2", comparable=False)],
                     id="nfs-negotiated-version"),
        pytest.param("errors=remount-ro", ("rw", "rw,errors=continue"),
                     [OptionDrift("errors", "errors=remount-ro", "errors=continue")],
                     id="other-value-drift"),
        pytest.param("discard", ("rw", "rw"),
                     [OptionDrift("discard", "discard", None, comparable=False)],
                     id="not-shown"),
        pytest.param("noauto,nofail,x-systemd.automount,bind,rshared", ("rw", "rw"), [],
                     id="fstab-only-and-operations-ignored"),
        pytest.param("lazytime,symfollow", ("rw,nosymfollow", "rw"),
                     [OptionDrift("lazytime", True, False),
                      OptionDrift("nosymfollow", False, True)], id="flag-words"),
        pytest.param("silent", ("rw", "rw"),
                     [OptionDrift("silent", True, None, comparable=False)],
                     id="silent-not-reported"),
        # The kernel ignores it: the line means relatime, as the mount is.
        pytest.param("norelatime", ("rw,relatime", "rw"), [],
                     id="ineffective-norelatime-is-no-drift"),
        pytest.param("user", ("rw,nosuid,nodev,noexec", "rw"), [], id="user-implied-matches"),
        pytest.param("user", ("rw", "rw"),
                     [OptionDrift("allow_suid", False, True),
                      OptionDrift("interpret_devices", False, True),
                      OptionDrift("allow_execution", False, True)],
                     id="user-implied-drifts"),
        pytest.param("size=1m,size=2m", ("rw", "rw,size=2048k"), [], id="last-value-counts"),
        # Values file systems show rewritten (what mount(8) mounted with these
        # options read back on Linux 6.18): equal, not drift.
        pytest.param("subvol=@home", ("rw", "rw,subvolid=256,subvol=/@home"), [],
                     id="btrfs-subvol-shown-absolute"),
        pytest.param("subvol=sv1/", ("rw", "rw,subvol=/sv1"), [],
                     id="btrfs-subvol-trailing-slash"),
        pytest.param("subvol=sv1", ("rw", "rw,subvol=/sv2"),
                     [OptionDrift("subvol", "subvol=sv1", "subvol=/sv2")],
                     id="btrfs-subvol-drift"),
        pytest.param("compress", ("rw", "rw,compress=zlib:3"), [], id="btrfs-compress-default"),
        pytest.param("compress=zstd", ("rw", "rw,compress=zstd:3"), [],
                     id="btrfs-compress-level-added"),
        pytest.param("compress=zstd:9", ("rw", "rw,compress=zstd:3"),
                     [OptionDrift("compress", "compress=zstd:9", "compress=zstd:3")],
                     id="btrfs-compress-level-drift"),
        pytest.param("compress-force=zstd", ("rw", "rw,compress-force=zstd:3"), [],
                     id="btrfs-compress-force-level-added"),
        pytest.param("compress=zstd", ("rw", "rw,compress=lzo"),
                     [OptionDrift("compress", "compress=zstd", "compress=lzo")],
                     id="btrfs-compress-drift"),
        pytest.param("rescue=all", ("ro", "ro,rescue=nologreplay:usebackuproot"),
                     [OptionDrift("rescue", "rescue=all", "rescue=nologreplay:usebackuproot",
                                  comparable=False)], id="btrfs-rescue-all-not-comparable"),
        pytest.param("rescue=usebackuproot:ibadroots:nologreplay",
                     ("ro", "ro,rescue=nologreplay:ignorebadroots"), [], id="btrfs-rescue-set"),
        pytest.param("rescue=nologreplay", ("ro", "ro,rescue=ignorebadroots"),
                     [OptionDrift("rescue", "rescue=nologreplay", "rescue=ignorebadroots")],
                     id="btrfs-rescue-drift"),
        pytest.param("logbsize=65536,allocsize=1m", ("rw", "rw,logbsize=64k,allocsize=1024k"), [],
                     id="xfs-sizes"),
        pytest.param("noload", ("ro", "ro,norecovery"), [], id="ext4-noload-is-norecovery"),
    ],
)
def test_compare(configured: str, live: tuple[str, str], drifts: list[OptionDrift]) -> None:
    vfs, sup = live
    found = compare(parse_options(configured), from_mountinfo(vfs.split(","), sup.split(",")))
    assert sorted(found, key=str) == sorted(drifts, key=str)


@pytest.mark.parametrize(
    ("drift", "text"),
    [
        pytest.param(OptionDrift("allow_write", False, True),
                     "allow_write: configured ro, live rw", id="field"),
        pytest.param(OptionDrift("synchronous_directory_updates", False, True),
                     "synchronous_directory_updates: configured no dirsync, live dirsync",
                     id="field-without-false-word"),
        pytest.param(OptionDrift("nosymfollow", False, True),
                     "nosymfollow: configured symfollow, live nosymfollow", id="flag-word"),
        pytest.param(OptionDrift("size", "size=50%", None, comparable=False),
                     "size: configured size=50%, live not shown (not comparable)",
                     id="fs-option"),
    ],
)
def test_drift_text(drift: OptionDrift, text: str) -> None:
    assert str(drift) == text


# -- properties -------------------------------------------------------------------------------

_RESERVED = {word for word, _, _, _ in WORDS} | {"defaults", "remount"}
_NAME = st.builds(
    str.__add__, st.sampled_from("abrsux_"), st.text("aceimnorstx019_.-", max_size=8)
).filter(lambda name: name not in _RESERVED)
_VALUE = st.one_of(
    st.text("Az09_./:+%-", max_size=8),
    st.text("Az09_,:=.-", max_size=8).map(lambda v: f'"{v}"'),
)
_ELEMENT = st.one_of(
    _NAME,
    st.builds(lambda name, value: f"{name}={value}", _NAME, _VALUE),
    st.sampled_from([
        "user", "users", "owner", "group", "nouser", "nousers", "noowner", "nogroup", "user=bob",
        "auto", "noauto", "nofail", "_netdev", "x-systemd.automount", "lazytime", "nolazytime",
        "nosymfollow", "symfollow", "bind", "rbind", "rprivate", "shared", "size=10m",
        'context="a,b"', "comment=x",
    ]),
)
_OPTIONS = st.builds(
    MountOptions,
    *(st.one_of(st.none(), st.booleans()) for _ in BOOLEAN_FIELDS),
    other_options=st.lists(_ELEMENT, max_size=6).map(tuple),
)


def _spellable(options: MountOptions) -> MountOptions:
    """``options`` as an option string can say it (dirsync False has no word)."""
    if options.synchronous_directory_updates is False:
        return dataclasses.replace(options, synchronous_directory_updates=None)
    return options


def _one_atime_mode(options: MountOptions) -> bool:
    try:
        atime_mode(options)
    except OptionError:
        return False  # refused as a Goal; what its words mean is another mode
    return True


@given(_OPTIONS.filter(_one_atime_mode))
def test_render_parse_round_trip(options: MountOptions) -> None:
    text = render_options(options)
    assert not any(c.isspace() for c in text)
    assert parse_options(text) == _spellable(options)
    assert kernel_request(parse_options(text)) == kernel_request(options)


@given(_OPTIONS)
def test_from_fields_accepts_every_valid_value(options: MountOptions) -> None:
    fields = {f.name: getattr(options, f.name) for f in dataclasses.fields(MountOptions)}
    assert MountOptions.from_fields(**fields) == options


@given(_OPTIONS)
def test_fstab_only_never_reaches_the_kernel(options: MountOptions) -> None:
    data = kernel_request(options).data
    assert not any(is_fstab_only(part) for part in data.split(",") if part)


@given(_OPTIONS)
def test_options_agree_with_themselves_live(options: MountOptions) -> None:
    # A configured set never drifts from the same set (the comparison is reflexive
    # wherever the kernel would report every field).
    live = dataclasses.replace(_spellable(options), silent=None)
    assert all(not d.comparable or d.name == "silent" for d in compare(live, live))


@given(st.text())
def test_parse_raises_only_option_error(text: str) -> None:
    try:
        options = parse_options(text)
    except OptionError:
        return
    assert validate(options) is options


# -- the real kernel -----------------------------------------------------------------------

KERNEL_CASES = [
    "defaults", "ro", "ro,defaults", "nosuid,nodev,noexec", "noatime", "strictatime",
    "nodiratime,relatime", "sync,dirsync", "size=10m,mode=0700,nr_inodes=1k", "user",
    "user,exec", "exec,user", "owner", "noauto,nofail,x-systemd.automount,size=1m",
    "lazytime", "nosymfollow", "mand",
]

_CHILD = textwrap.dedent("""
    import ctypes, json, os, subprocess, sys
    from lmi_mount.mounts.options import kernel_request, parse_options
    libc = ctypes.CDLL(None, use_errno=True)
    base, cases = sys.argv[1], json.loads(sys.argv[2])
    out = {}
    for i, text in enumerate(cases):
        by_mount8, by_us = f"{base}/m{i}", f"{base}/k{i}"
        os.mkdir(by_mount8)
        os.mkdir(by_us)
        subprocess.run(["mount", "-t", "tmpfs", "-o", text, "t", by_mount8], check=True)
        request = kernel_request(parse_options(text))
        if libc.mount(b"t", by_us.encode(), b"tmpfs", request.flags,
                      request.data.encode() or None) != 0:
            raise OSError(ctypes.get_errno(), text)
        out[text] = {}
        for line in open("/proc/self/mountinfo"):
            f = line.split()
            if f[4] in (by_mount8, by_us):
                out[text]["mount8" if f[4] == by_mount8 else "ours"] = [f[5], f[-1]]
    print(json.dumps(out))
""")


@pytest.mark.root
@pytest.mark.kernel
def test_kernel_request_mounts_what_mount8_mounts(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to mount (in a private mount namespace)")
    if shutil.which("unshare") is None or shutil.which("mount") is None:
        pytest.skip("needs unshare(1) and mount(8) from util-linux")
    result = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", sys.executable, "-c", _CHILD,
         str(tmp_path), json.dumps(KERNEL_CASES)],
        check=True, capture_output=True, text=True,
    )
    seen = json.loads(result.stdout)
    for text in KERNEL_CASES:
        vfs, sup = seen[text]["ours"]
        assert seen[text]["ours"] == seen[text]["mount8"], text
        live = from_mountinfo(vfs.split(","), sup.split(","))
        # Nothing we asked for is missing, except what no kernel reports.
        assert [d for d in compare(parse_options(text), live) if d.comparable] == [], text


@pytest.mark.parametrize(("fstype", "configured", "drifts"), [
    pytest.param("tmpfs", "mode=01777,uid=0,gid=0", [], id="tmpfs-defaults"),
    pytest.param("tmpfs", "mode=0700", [OptionDrift("mode", "mode=0700", None, comparable=False)],
                 id="tmpfs-not-the-default-and-not-shown"),
    pytest.param("ramfs", "mode=1777", [OptionDrift("mode", "mode=1777", None, comparable=False)],
                 id="ramfs-default-is-another"),
    pytest.param("ext4", "acl,user_xattr", [], id="ext4-defaults"),
    pytest.param(None, "acl", [OptionDrift("acl", "acl", None, comparable=False)],
                 id="type-unknown"),
])
def test_compare_knows_the_defaults_a_file_system_leaves_out(
        fstype: str | None, configured: str, drifts: list[OptionDrift]) -> None:
    # A review: stock lines (tmpfs mode=1777, ext4 acl) showed as drifted.
    found = compare(parse_options(configured), from_mountinfo(["rw"], ["rw"]), fstype=fstype)
    assert found == drifts


@pytest.mark.parametrize(("super_options", "drifts"), [
    # No SELinux option shown: SELinux is not enabled there, and mount(8)
    # left the line's out (libmount); the mount is what the line means.
    (["rw", "size=1024k"], []),
    # SELinux labels the mount: its context is compared as any option.
    (["rw", "seclabel", "context=system_u:object_r:tmp_t:s0", "size=1024k"], []),
    (["rw", "seclabel", "context=system_u:object_r:etc_t:s0", "size=1024k"], ["context"]),
])
def test_selinux_options_are_compared_where_selinux_labels_the_mount(
        super_options: list[str], drifts: list[str]) -> None:
    configured = parse_options("size=1m,context=system_u:object_r:tmp_t:s0")
    live = from_mountinfo(["rw", "relatime"], super_options)
    assert [drift.name for drift in compare(configured, live, fstype="tmpfs")] == drifts


@pytest.mark.parametrize(("asked", "shown"), [
    ('context="system_u:object_r:tmp_t:s0"', "context=system_u:object_r:tmp_t:s0"),
    ("context=system_u:object_r:tmp_t:s0", 'context="system_u:object_r:tmp_t:s0"'),
    ('context="system_u:object_r:c_t:s0:c1,c2"', 'context="system_u:object_r:c_t:s0:c1,c2"'),
])
def test_a_quoted_selinux_context_is_the_same_context(asked: str, shown: str) -> None:
    # mount(8) users quote contexts; the kernel quotes only one holding a comma.
    live = from_mountinfo(["rw"], ["rw", "seclabel", shown])
    assert compare(parse_options(asked), live, fstype="nfs") == []


@pytest.mark.parametrize(("selinux", "drifts"), [
    (True, ["context"]),  # SELinux labels: a mount that shows no context has none
    (False, []),  # mount(8) leaves contexts out where SELinux is not enabled
    (None, []),  # not known: the mount shows no SELinux option, so it is not labeled
])
def test_where_selinux_is_known_a_missing_context_is_drift_on_an_selinux_host(
        selinux: bool | None, drifts: list[str]) -> None:
    # The review of the SELinux change: on an SELinux host an NFS mount made
    # without context= counted as one asking for it, and could be shared.
    configured = parse_options("vers=4.2,context=system_u:object_r:nfs_t:s0")
    live = from_mountinfo(["rw", "relatime"], ["rw", "vers=4.2"])
    assert [d.name for d in compare(configured, live, fstype="nfs", selinux=selinux)] == drifts
