"""Mount options: setting fields <-> mount(8) option strings <-> MS_* flags, both ways.

Owns: ``MountOptions`` (the boolean settings of the OpenLMI Mounting Model
draft plus ``other_options``), the ARCHITECTURE.md "Setting <-> options"
table, the mount(8)/fstab(5) option syntax (parse and canonical render),
which options are fstab-only and never reach the kernel, the translation to a
mount(2) request (flags + data), the per-mount (VFS) / superblock split that a
remount needs, the live options mountinfo reports, and drift between a
configured and a live set.

Must not know: where option strings come from (fstab lines, CIM properties,
mountinfo records are all handed in as values), how the kernel is called, CIM.
The MS_* values and their mount(8) names come from ``flags``; nothing here
redefines them.

Conventions:

* A boolean field is ``None`` when it is not specified: the kernel or file
  system default applies and nothing is rendered. ``defaults`` means exactly
  that: libmount gives it no flag (libmount/src/optmap.c: ``{ "defaults", 0,
  0 }``), so ``ro,defaults`` stays read-only. It parses to "nothing
  specified" and the options with nothing specified render as ``defaults``.
* ``DEFAULTS`` is the draft's default setting, ``rw,suid,dev,exec,async``
  spelled out. Its other two defaults, ``auto`` and ``nouser``, are what an
  fstab line means when it says neither ``noauto`` nor ``user`` (mount(8),
  FILESYSTEM-INDEPENDENT MOUNT OPTIONS), so they take no element of
  ``other_options``; a line that spells them out keeps them there verbatim.
* ``synchronous_directory_updates=False`` has no mount(8) word: libmount has
  ``dirsync`` but no inverse, and ``nodirsync`` would reach the file system
  as data and fail (tmpfs: "Unknown parameter 'nodirsync'"). It asks the
  kernel for exactly what ``None`` asks, renders as nothing and therefore
  reads back as ``None``: the one value ``parse_options(render_options(o))``
  does not return unchanged.
"""

from __future__ import annotations

import functools
import operator
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any, ClassVar, Final

from lmi_mount.mounts.escaping import nonempty_options, split_options, unquoted
from lmi_mount.mounts.flags import (
    FLAG_OPTION_NAMES,
    MS_BIND,
    MS_DIRSYNC,
    MS_I_VERSION,
    MS_MANDLOCK,
    MS_NOATIME,
    MS_NODEV,
    MS_NODIRATIME,
    MS_NOEXEC,
    MS_NOSUID,
    MS_PRIVATE,
    MS_RDONLY,
    MS_REC,
    MS_RELATIME,
    MS_REMOUNT,
    MS_SHARED,
    MS_SILENT,
    MS_SLAVE,
    MS_STRICTATIME,
    MS_SYNCHRONOUS,
    MS_UNBINDABLE,
    PER_MOUNT_FLAGS,
)
from lmi_mount.text import is_decimal

__all__ = [
    "ATIME_FIELDS",
    "BOOLEAN_FIELDS",
    "DEFAULTS",
    "KernelOptions",
    "MountOptions",
    "OptionDrift",
    "OptionError",
    "atime_mode",
    "compare",
    "from_mountinfo",
    "fstab_options",
    "is_fstab_only",
    "is_propagation",
    "is_selinux_option",
    "kernel_request",
    "mount8_flags",
    "mount_point_mode",
    "parse_options",
    "remount_needs_superblock",
    "render_options",
    "same_meaning",
    "selinux_words",
    "split_flags",
    "validate",
    "with_defaults",
    "with_unnamed_at_defaults",
    "with_unnamed_from",
    "without_fs_options_in_effect",
    "without_propagation",
]


class OptionError(ValueError):
    """A mount option string or setting that cannot be used; ``value`` is the bad part."""

    def __init__(self, message: str, *, value: object) -> None:
        super().__init__(message)
        self.value = value


# -- the table -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Field:
    """One row of the "Setting <-> options" table (ARCHITECTURE.md)."""

    name: str
    flag: int
    inverted: bool  # the flag set means the field is False (MS_RDONLY: allow_write=False)
    superblock: bool  # a file system (superblock) flag rather than a per-mount one
    true_word: str
    false_word: str  # "" when mount(8) has no word for it


_NAMES_OF_FLAG: Final = {flag: (set_name, clear_name) for flag, set_name, clear_name
                         in FLAG_OPTION_NAMES}


def _row(name: str, flag: int, *, inverted: bool) -> _Field:
    set_name, clear_name = _NAMES_OF_FLAG[flag]
    return _Field(
        name=name,
        flag=flag,
        inverted=inverted,
        superblock=not flag & PER_MOUNT_FLAGS,
        true_word=clear_name if inverted else set_name,
        false_word=set_name if inverted else clear_name,
    )


# Table order is render order.
_FIELDS: Final = (
    _row("allow_write", MS_RDONLY, inverted=True),
    _row("allow_suid", MS_NOSUID, inverted=True),
    _row("interpret_devices", MS_NODEV, inverted=True),
    _row("allow_execution", MS_NOEXEC, inverted=True),
    _row("synchronous_io", MS_SYNCHRONOUS, inverted=False),
    _row("synchronous_directory_updates", MS_DIRSYNC, inverted=False),
    _row("update_access_times", MS_NOATIME, inverted=True),
    _row("update_relative_access_times", MS_RELATIME, inverted=False),
    _row("update_full_access_times", MS_STRICTATIME, inverted=False),
    _row("update_directory_access_times", MS_NODIRATIME, inverted=True),
    # The kernel accepts and still reports "mand" but enforces no mandatory lock
    # since Linux 5.15 (commit f7e33bdbd6d1, "fs: remove mandatory file locking
    # mechanism"). The value is kept as given and reported as the kernel shows
    # it; nothing here pretends it has an effect.
    _row("allow_mandatory_lock", MS_MANDLOCK, inverted=False),
    _row("silent", MS_SILENT, inverted=False),
)
_FIELD_BY_NAME: Final = {f.name: f for f in _FIELDS}
BOOLEAN_FIELDS: Final[tuple[str, ...]] = tuple(f.name for f in _FIELDS)

# word -> (field, value): "ro" -> ("allow_write", False).
_WORDS: Final = {
    word: (f.name, value)
    for f in _FIELDS
    for word, value in ((f.true_word, True), (f.false_word, False))
    if word
}

# Flags of the table in ``flags`` that no field carries: kept in other_options
# and still translated to flags, as mount(8) does (libmount optmap.c).
_FIELD_FLAGS: Final = frozenset(f.flag for f in _FIELDS)
_FLAG_WORDS: Final = {
    word: (flag, value)
    for flag, set_name, clear_name in FLAG_OPTION_NAMES
    if flag not in _FIELD_FLAGS
    for word, value in ((set_name, True), (clear_name, False))
    if word
}
_OPTION_FLAGS: Final = functools.reduce(operator.or_, (flag for flag, _, _ in FLAG_OPTION_NAMES))
# set name -> (set name, clear name) of those words, to spell a drift.
_FLAG_WORD_PAIRS: Final = {
    set_name: (set_name, clear_name)
    for flag, set_name, clear_name in FLAG_OPTION_NAMES
    if flag not in _FIELD_FLAGS
}

# libmount's optmap reads "iversion" as the MS_I_VERSION flag of mount(2), never a file
# system option (tmpfs and ext4 refuse the word as one: "Unknown parameter"). The
# kernel shows no trace of the flag in mountinfo (file systems that keep an
# i_version counter now turn it on themselves), and the fs context API has no such
# flag: only mount(2) is given it (``kernel_request``), and it is never drift.
_I_VERSION_WORDS: Final = {"iversion": (MS_I_VERSION, True), "noiversion": (MS_I_VERSION, False)}

# Operations that mount(8) accepts among options (libmount optmap.c): a bind and
# the propagation changes it applies with extra mount(2) calls. They may stand
# in an fstab line; they are not properties of a mount that drift.
_BIND_WORDS: Final = {"bind": MS_BIND, "rbind": MS_BIND | MS_REC}
_PROPAGATION_WORDS: Final = {
    "private": MS_PRIVATE,
    "shared": MS_SHARED,
    "slave": MS_SLAVE,
    "unbindable": MS_UNBINDABLE,
    **{"r" + word: flag | MS_REC for word, flag in (
        ("private", MS_PRIVATE), ("shared", MS_SHARED),
        ("slave", MS_SLAVE), ("unbindable", MS_UNBINDABLE),
    )},
}

# Options of mount(8) itself, of fstab and of systemd: they never reach the
# kernel (libmount optmap.c userspace_opts_map, systemd.mount(5)). Matched on
# the name before any "=".
_FSTAB_ONLY_NAMES: Final = frozenset({
    "defaults", "auto", "noauto", "user", "nouser", "users", "nousers",
    "owner", "noowner", "group", "nogroup", "_netdev", "comment", "nofail",
    "loop", "offset", "sizelimit", "encryption", "helper", "uhelper",
})
# x-* are kept in utab, X-* only in fstab; systemd's x-systemd.* and
# x-initrd.mount are among them; verity.* configure dm-verity in mount(8).
_FSTAB_ONLY_PREFIXES: Final = ("x-", "X-", "verity.")

# Words with which mount(8) sets the source up before it mounts: a loop device
# over part of it (losetup --offset, --sizelimit), the old cryptoloop, or
# dm-verity. The service attaches an image whole and mounts it as it is, so
# a live mount with one of them would mount other bytes than the line names,
# or skip the verification it asks for (``setup_words``).
_SETUP_NAMES: Final = frozenset({"offset", "sizelimit", "encryption"})
_SETUP_PREFIXES: Final = ("verity.",)

# "user" and "users" imply noexec,nosuid,nodev and "owner" and "group" imply
# nosuid,nodev, unless a later option says otherwise (mount(8), "user"); libmount
# applies this to root's mounts too (optlist: MS_SECURE / MS_OWNERSECURE
# inserted after the option). "user=NAME" is the utab record and implies nothing.
_SECURE: Final = ("allow_execution", "allow_suid", "interpret_devices")
_OWNER_SECURE: Final = ("allow_suid", "interpret_devices")
_IMPLYING: Final = {
    "user": _SECURE, "users": _SECURE, "owner": _OWNER_SECURE, "group": _OWNER_SECURE,
}


def is_fstab_only(option: str) -> bool:
    """True for an option of mount(8), fstab or systemd that never reaches the kernel.

    ``noauto``, ``nofail``, ``_netdev``, ``user``/``users``/``owner``/``group``
    and their ``no`` forms, ``comment=``, ``x-*``/``X-*`` (``x-systemd.*``),
    ``loop``/``offset=``/``sizelimit=`` (mount(8) sets up the loop device),
    ``helper=``, ``verity.*``, and ``defaults``.
    """
    return option.split("=", 1)[0] in _FSTAB_ONLY_NAMES or option.startswith(_FSTAB_ONLY_PREFIXES)


#: SELinux's mount options (libmount's context_mount.c and hook_selinux.c):
#: where SELinux is not enabled, mount(8) leaves them out, and the kernel
#: would refuse them (EINVAL), so that a line made for an SELinux host
#: mounts on any host.
SELINUX_OPTION_NAMES: Final = frozenset(
    ("context", "fscontext", "defcontext", "rootcontext", "seclabel"))


def is_selinux_option(option: str) -> bool:
    """True for ``context=...`` and the other SELinux options (SELINUX_OPTION_NAMES)."""
    return option.split("=", 1)[0] in SELINUX_OPTION_NAMES


def selinux_words(options: MountOptions) -> tuple[str, ...]:
    """The SELinux options among ``options``' others, in order."""
    return tuple(option for option in options.other_options if is_selinux_option(option))


def setup_words(options: MountOptions) -> tuple[str, ...]:
    """The other options of ``options`` that ask mount(8) to set the source up
    (a part of an image, cryptoloop, dm-verity); fstab-only words for the
    service, which mounts a source as it is."""
    return tuple(option for option in options.other_options
                 if option.split("=", 1)[0] in _SETUP_NAMES
                 or option.startswith(_SETUP_PREFIXES))


#: mount(8)'s X-mount.mkdir (x-mount.mkdir is its deprecated spelling): make the
#: mount point, and the directories above it, if missing; 0755 by default.
_MKDIR_NAMES: Final = ("X-mount.mkdir", "x-mount.mkdir")


def mount_point_mode(options: MountOptions) -> int | None:
    """The mode to make a missing mount point with (``X-mount.mkdir[=mode]``, the
    last one winning), or None when the options do not ask for it. Raises
    OptionError naming a mode that is no octal permission, as mount(8) refuses
    to parse it."""
    mode: int | None = None
    for option in options.other_options:
        name, sep, value = option.partition("=")
        if name not in _MKDIR_NAMES:
            continue
        if not sep:
            mode = 0o755
            continue
        if not value or len(value) > 5 or any(c not in "01234567" for c in value) \
                or int(value, 8) > 0o7777:
            raise OptionError(f"{option!r}: the mode of X-mount.mkdir must be an octal "
                              "permission such as 0755", value=option)
        mode = int(value, 8)
    return mode


# -- the value -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MountOptions:
    """The options of one mount: the draft's booleans plus everything else, in order.

    The plain constructor checks nothing: it also holds live options as the
    kernel reports them (``from_mountinfo``), whose values may contain what a
    configured option must not (a space in an overlay path). Options that come
    from outside go through ``from_fields`` (the CIM layer) or
    ``parse_options`` (fstab, mount(8) strings), which validate.
    """

    allow_write: bool | None = None
    allow_suid: bool | None = None
    interpret_devices: bool | None = None
    allow_execution: bool | None = None
    synchronous_io: bool | None = None
    synchronous_directory_updates: bool | None = None
    update_access_times: bool | None = None
    update_relative_access_times: bool | None = None
    update_full_access_times: bool | None = None
    update_directory_access_times: bool | None = None
    allow_mandatory_lock: bool | None = None
    silent: bool | None = None
    other_options: tuple[str, ...] = ()

    DEFAULTS: ClassVar[MountOptions]

    @classmethod
    def from_fields(
        cls,
        *,
        allow_write: bool | None = None,
        allow_suid: bool | None = None,
        interpret_devices: bool | None = None,
        allow_execution: bool | None = None,
        synchronous_io: bool | None = None,
        synchronous_directory_updates: bool | None = None,
        update_access_times: bool | None = None,
        update_relative_access_times: bool | None = None,
        update_full_access_times: bool | None = None,
        update_directory_access_times: bool | None = None,
        allow_mandatory_lock: bool | None = None,
        silent: bool | None = None,
        other_options: Iterable[str] | None = (),
        spelled: Callable[[str], str] = str,
    ) -> MountOptions:
        """Build and validate options from setting values (the CIM layer's path).

        ``other_options`` may be any iterable of strings, or None for none (a
        NULL array). Raises OptionError naming the first bad value (see
        ``validate``); ``spelled`` names a field in its message (the CIM
        layer's property names).
        """
        if other_options is None:
            others: tuple[str, ...] = ()
        elif isinstance(other_options, str):
            # A lone string would be split into characters; say what is wrong instead.
            raise OptionError(
                f"other options must be a list of strings, not the string {other_options!r}",
                value=other_options,
            )
        else:
            others = tuple(other_options)
        return validate(cls(
            allow_write=allow_write,
            allow_suid=allow_suid,
            interpret_devices=interpret_devices,
            allow_execution=allow_execution,
            synchronous_io=synchronous_io,
            synchronous_directory_updates=synchronous_directory_updates,
            update_access_times=update_access_times,
            update_relative_access_times=update_relative_access_times,
            update_full_access_times=update_full_access_times,
            update_directory_access_times=update_directory_access_times,
            allow_mandatory_lock=allow_mandatory_lock,
            silent=silent,
            other_options=others,
        ), spelled)


DEFAULTS: Final = MountOptions(
    allow_write=True,
    allow_suid=True,
    interpret_devices=True,
    allow_execution=True,
    synchronous_io=False,
)
MountOptions.DEFAULTS = DEFAULTS


def with_defaults(options: MountOptions) -> MountOptions:
    """``options`` with every unspecified field that ``DEFAULTS`` sets taken from it,
    but those an effective user/users/owner/group implies, which are False.

    What mount(8) asks the kernel for when a line says nothing about those
    fields; useful for a strict drift check of a ``defaults`` line. A file
    system may still refuse one of them (a read-only medium is mounted ``ro``
    by mount(8)'s retry).
    """
    # What user/users/owner/group imply comes first: mount(8) asks for it.
    implied = {name: False for name in _implied_fields(options.other_options)
               if getattr(options, name) is None}
    filled = {
        f.name: getattr(DEFAULTS, f.name)
        for f in _FIELDS
        if getattr(options, f.name) is None and f.name not in implied
        and getattr(DEFAULTS, f.name) is not None
    }
    filled.update(implied)
    return replace(options, **filled) if filled else options


# -- syntax and validation ---------------------------------------------------------

# Control characters have no place in an option, nor whitespace in its name
# ("rw, noatime" is a typo); \s also covers Unicode separators, the explicit
# ranges the C0/C1 controls that are not spaces. A value may hold a blank or
# a tab: fstab carries them escaped (\040, \011) and libmount reads them back
# (x-systemd.requires-mounts-for=/srv/a\040b); refused, such a line's option
# was lost by any edit of the line.
_FORBIDDEN_RE: Final = re.compile(r"[\s\x00-\x1f\x7f-\x9f]")
_FORBIDDEN_IN_VALUE_RE: Final = re.compile(r"[^\S \t]|[\x00-\x08\x0a-\x1f\x7f-\x9f]")
_QUOTED_RE: Final = re.compile(r'"[^"]*"')


def _check_element(element: str, spelled: Callable[[str], str] = str) -> None:
    """Raise OptionError unless ``element`` can stand as one other option."""
    if not element:
        raise OptionError("an option must not be empty", value=element)
    name, has_value, argument = element.partition("=")
    bad = _FORBIDDEN_RE.search(name) or _FORBIDDEN_IN_VALUE_RE.search(argument)
    if bad is not None:
        raise OptionError(
            f"option {element!r} contains whitespace or a control character ({bad.group()!r})",
            value=element,
        )
    if element.count('"') % 2:
        raise OptionError(f"option {element!r} has an unbalanced double quote", value=element)
    # mount(8) lets a double-quoted value hold commas (context="a,b");
    # anywhere else a comma would split the option in two.
    if "," in _QUOTED_RE.sub("", element):
        raise OptionError(
            f"option {element!r} contains a comma outside double quotes", value=element
        )
    if not name:
        raise OptionError(f"option {element!r} has no name", value=element)
    owner = _WORDS.get(name)
    if owner is not None:
        field, value = owner
        # "ro" in other options would contradict or duplicate allow_write.
        name = spelled(field)
        setting = f"{name}={value}" if not has_value else name
        raise OptionError(
            f"option {element!r} is the {name} setting: set {setting} instead of listing it",
            value=element,
        )
    if name == "defaults":
        raise OptionError(
            "option 'defaults' means no option at all: leave the settings unset instead",
            value=element,
        )
    if name == "remount":
        raise OptionError("'remount' is an operation, not a mount option", value=element)


def validate(options: MountOptions, spelled: Callable[[str], str] = str) -> MountOptions:
    """Return ``options`` if it may be rendered and requested, else raise OptionError
    (whose message names a field as ``spelled`` says).

    Every field is a bool or None; every other option is non-empty, has a
    name, contains no whitespace and no control character, no comma outside a
    double-quoted value and no unbalanced quote, and is not one of the
    boolean fields' words (``ro`` belongs in ``allow_write``) nor
    ``defaults`` or ``remount``.
    """
    for f in _FIELDS:
        value = getattr(options, f.name)
        if value is not None and not isinstance(value, bool):
            raise OptionError(f"{spelled(f.name)} must be true, false or unset, not {value!r}",
                              value=value)
    if not isinstance(options.other_options, tuple):
        raise OptionError(
            f"other options must be a tuple of strings, not {options.other_options!r}",
            value=options.other_options,
        )
    for element in options.other_options:
        if not isinstance(element, str):
            raise OptionError(f"other option {element!r} is not a string", value=element)
        _check_element(element, spelled)
    return options


def _split(text: str, *, strict: bool = True) -> list[str]:
    """Split an option string on commas outside double quotes (libmount optstr.c).

    Not ``strict``, it reads as libmount does: empty items are skipped and an
    unbalanced quote runs to the end of the string."""
    if not strict:
        return nonempty_options(text)
    if text == "":
        raise OptionError("the option string is empty (use 'defaults')", value=text)
    if text.count('"') % 2:
        raise OptionError(f"unbalanced double quote in options {text!r}", value=text)
    parts = split_options(text)
    for position, part in enumerate(parts, 1):
        if not part:
            raise OptionError(f"empty option (element {position}) in {text!r}", value=text)
    return parts


def _implied_fields(other_options: Iterable[str]) -> frozenset[str]:
    """The fields that a user/users/owner/group among ``other_options`` implies to be
    False. A later ``nouser`` does not take it back: libmount adds the flags
    where the word stands and ignores the ``no`` forms (mnt_optstr_get_flags)."""
    present = [element for element in other_options if element in _IMPLYING]
    return frozenset(name for word in present for name in _IMPLYING[word])


def parse_options(text: str, *, strict: bool = True) -> MountOptions:
    """Parse a mount(8) / fstab(5) option string (fields already unescaped).

    Comma separated; a double-quoted part may contain commas. A later option
    overrides an earlier one as in mount(8): ``ro,rw`` is read-write.
    ``defaults`` sets nothing (module docstring). Every other element is kept
    verbatim and in order in ``other_options``, duplicates included: the file
    system or mount(8) decides what a repeated one means. A ``user``,
    ``users``, ``owner`` or ``group`` that is in effect resets the fields it
    implies to unset, so that an explicit ``exec`` before ``user`` yields to it
    and one after it wins, as in mount(8).

    Raises OptionError for an empty string or element, an unbalanced quote,
    and any element ``validate`` refuses. Not ``strict`` (a line read from
    fstab, which libmount reads whatever it says), nothing is refused: empty
    elements are skipped and an element ``validate`` would refuse (``ro=1``,
    a space) is kept verbatim among the other options.
    """
    parts = _split(text, strict=strict)
    values: dict[str, bool | None] = {}
    other: list[str] = []
    implied = _implied_fields(parts)
    for element in parts:
        word = _WORDS.get(element)
        if word is not None:
            values[word[0]] = word[1]
            continue
        if element == "defaults":
            continue
        try:
            _check_element(element)
        except OptionError:
            if strict:
                raise
        for name in _IMPLYING.get(element, ()):
            if name in implied:
                values[name] = None
        other.append(element)
    return MountOptions(**_atime_as_the_kernel_reads(values), other_options=tuple(other))


def _atime_as_the_kernel_reads(values: dict[str, bool | None]) -> dict[str, bool | None]:
    """``values`` without the atime words that have no effect, so that the atime
    fields name the one mode mount(2) gives (fs/namespace.c path_mount()):
    MS_STRICTATIME clears noatime and relatime, MS_NOATIME beats relatime,
    and MS_RELATIME is the default, so ``norelatime`` alone changes nothing.
    mount(8) passes the words as flags; their order does not matter."""
    relative, full = "update_relative_access_times", "update_full_access_times"
    if values.get(full) is True:
        if values.get("update_access_times") is False:
            values.pop("update_access_times")
        if values.get(relative) is True:
            values.pop(relative)
    elif values.get("update_access_times") is False:
        if values.get(relative) is True:
            values.pop(relative)
    elif values.get(relative) is False:
        values.pop(relative)
    return values


def render_options(options: MountOptions) -> str:
    """The canonical option string of ``options``; ``defaults`` when nothing is specified.

    Booleans in table order, then other options in their order. One exception
    keeps the meaning for mount(8): when ``user``, ``users``, ``owner`` or
    ``group`` is in effect, the explicit values of the fields it implies come
    after the other options, because there the later option wins.
    ``synchronous_directory_updates=False`` has no word and renders as nothing.
    Raises OptionError for options ``validate`` refuses.
    """
    validate(options)
    implied = _implied_fields(options.other_options)
    words: list[str] = []
    after: list[str] = []
    for f in _FIELDS:
        value = getattr(options, f.name)
        if value is None:
            continue
        word = f.true_word if value else f.false_word
        if word:
            (after if f.name in implied else words).append(word)
    words.extend(options.other_options)
    words.extend(after)
    return ",".join(words) or "defaults"


# -- fstab words that keep their meaning ---------------------------------------------

# mount(8)'s reading of an option list into MS_* flags: libmount's Linux map
# (optmap.c) applied left to right by mnt_optstr_get_flags, where "user" and
# "users" add nosuid,nodev,noexec and "owner" and "group" nosuid,nodev at the
# place they stand. A word with a value ("ro=1", "user=bob") sets nothing.
_MOUNT8_WORDS: Final[Mapping[str, tuple[int, bool]]] = {
    **{word: (flag, value)
       for flag, set_name, clear_name in FLAG_OPTION_NAMES
       for word, value in ((set_name, True), (clear_name, False)) if word},
    **_I_VERSION_WORDS,
    **{word: (flag, True) for word, flag in _BIND_WORDS.items()},
    **{word: (flag, True) for word, flag in _PROPAGATION_WORDS.items()},
    "remount": (MS_REMOUNT, True),
    "user": (MS_NOSUID | MS_NODEV | MS_NOEXEC, True),
    "users": (MS_NOSUID | MS_NODEV | MS_NOEXEC, True),
    "owner": (MS_NOSUID | MS_NODEV, True),
    "group": (MS_NOSUID | MS_NODEV, True),
}


def mount8_flags(words: Iterable[str]) -> int:
    """The MS_* flags mount(8) derives from option ``words``, read left to right."""
    flags = 0
    for word in words:
        entry = _MOUNT8_WORDS.get(word)
        if entry is not None:
            flag, value = entry
            flags = flags | flag if value else flags & ~flag
    return flags


def _meaning(words: list[str]) -> tuple[int, tuple[str, ...]]:
    """What an option list means to mount(8): its flags and, in order, every word
    that is no boolean setting's (those reach the file system or mount(8) as
    they are: their order and repetitions count)."""
    return mount8_flags(words), tuple(w for w in words if w not in _WORDS and w != "defaults")


def same_meaning(first: MountOptions, second: MountOptions) -> bool:
    """Whether mount(8) asks for the same mount with either set of options."""
    return _meaning_of(first) == _meaning_of(second)


@functools.lru_cache(maxsize=1024)
def _meaning_of(options: MountOptions) -> tuple[int, tuple[str, ...]]:
    # Kept: every holder joining a mount compares its options with the ones
    # the mount was made with, the same few again and again.
    return _meaning(_split(render_options(options), strict=False))


def fstab_options(options: MountOptions, existing: str | None = None) -> str:
    """The option field of an fstab line that mount(8) reads back as ``options``.

    Starting from the canonical words (``render_options``), a setting's word
    is left out only where mount(8)'s flags are the same without it: ``rw``
    or ``exec`` alone say nothing, but after ``user`` they undo what it
    implies and stay (``user,noauto,exec``). With ``existing``, the option
    field of the line this one replaces, the administrator's words and order
    are kept where they mean the same, and only what differs is changed; an
    ``existing`` that already means ``options`` is returned as it is.
    Raises OptionError for options ``validate`` refuses.
    """
    fresh = _split(render_options(options))
    wanted = _meaning(fresh)
    words = [word for word in fresh if word != "defaults"]
    for word in list(words):
        if word in _WORDS:
            shorter = list(words)
            shorter.remove(word)
            if _meaning(shorter) == wanted:
                words = shorter
    minimal = ",".join(words) or "defaults"
    if existing is None:
        return minimal
    try:
        old = _split(existing) if existing else []
    except OptionError:
        return minimal
    if _meaning(old) == wanted:
        return existing or "defaults"
    merged = _merge_words(old, fresh, wanted)
    return ",".join(merged) or "defaults" if merged is not None else minimal


def _merge_words(old: list[str], fresh: list[str],
                 wanted: tuple[int, tuple[str, ...]]) -> list[str] | None:
    """``old`` changed as little as needed to mean ``wanted``, or None.

    A setting word of ``old`` is replaced in place by the request's word for
    the same setting; other words are kept where the request has them, in
    order, and the missing ones appended. Words of settings the request
    leaves unset stay unless they change the flags. Where the order of
    ``user`` and the words it implies still makes a difference, the
    request's words go at the end, where the last one wins.
    """
    goal = {_WORDS[word][0]: word for word in fresh if word in _WORDS}
    others = list(wanted[1])
    merged: list[str] = []
    for word in old:
        if word in _WORDS:
            merged.append(goal.get(_WORDS[word][0], word))
        elif word == "defaults":
            merged.append(word)
        elif others and word == others[0]:
            merged.append(others.pop(0))
    merged.extend(others)
    placed = {_WORDS[word][0] for word in merged if word in _WORDS}
    missing = [word for field, word in goal.items() if field not in placed]
    # New settings take the place of "defaults" when the line has it.
    at = merged.index("defaults") if "defaults" in merged else len(merged)
    merged[at:at] = missing
    for word in list(merged):
        if word in _WORDS and _WORDS[word][0] not in goal:
            flag, value = _MOUNT8_WORDS[word]
            if bool(wanted[0] & flag) != value:
                merged.remove(word)
    if _meaning(merged) != wanted:
        merged.extend(word for word in goal.values())
    if len(merged) > 1:
        merged = [word for word in merged if word != "defaults"]
    return merged if _meaning(merged) == wanted else None


# -- the kernel side -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KernelOptions:
    """What mount(2) takes: ``flags`` (MS_*) and ``data``, the file system's options.

    ``propagation`` is a propagation change asked for among the options
    (``private``, ``rshared``, ...: MS_PRIVATE etc., with MS_REC for the r-forms);
    mount(2) applies it in a separate call after the mount (mount(2),
    "Changing the propagation type of an existing mount"), so it is kept out of
    ``flags``. 0 when none is asked for.

    ``clear`` are the per-mount flags the options name as off (``rw``,
    ``suid``, ``exec``, ``dev``, ``diratime``, ``symfollow``): a new mount has
    them off anyway, but a bind copies its origin's flags, and these say
    which of them to drop (mount_setattr(2) ``attr_clr``).
    """

    flags: int
    data: str
    propagation: int = 0
    clear: int = 0


# Per-mount flags a bind can be asked to drop; the atime mode is replaced as a
# whole when named, never cleared flag by flag.
_CLEARABLE: Final = PER_MOUNT_FLAGS & ~(MS_NOATIME | MS_RELATIME | MS_STRICTATIME)


def effective_fields(options: MountOptions) -> dict[str, bool]:
    """The specified fields, plus the ones user/users/owner/group imply."""
    values = {f.name: getattr(options, f.name) for f in _FIELDS}
    for name in _implied_fields(options.other_options):
        if values[name] is None:
            values[name] = False
    return {name: value for name, value in values.items() if value is not None}


def _field_flags(values: dict[str, bool]) -> int:
    flags = 0
    for name, value in values.items():
        f = _FIELD_BY_NAME[name]
        if value != f.inverted:
            flags |= f.flag
    return flags


def kernel_request(options: MountOptions) -> KernelOptions:
    """The mount(2) flags and data string that ``options`` ask for.

    Fields become MS_* flags (a False ``allow_write`` is MS_RDONLY; unset
    fields add nothing, so the kernel default applies), including what an
    effective ``user``/``owner`` implies. Other options that are MS_* words of
    ``flags`` (``lazytime``, ``nosymfollow``, ...) set or clear their flag, the
    later one winning; ``bind``/``rbind`` add MS_BIND (and MS_REC);
    propagation words go to ``propagation``; fstab-only options are dropped;
    the rest, in order, is the comma-joined ``data``.
    Raises OptionError for options ``validate`` refuses.
    """
    validate(options)
    fields = effective_fields(options)
    flags = _field_flags(fields)
    # "atime" asks for the kernel's default mode (relatime), not merely for no
    # MS_NOATIME: without an atime flag a remount or a bind keeps noatime.
    if (fields.get("update_access_times") is True
            and fields.get("update_relative_access_times") is not False
            and not flags & (MS_NOATIME | MS_STRICTATIME)):
        flags |= MS_RELATIME
    clear = 0
    for name, value in fields.items():
        f = _FIELD_BY_NAME[name]
        if not f.superblock and f.flag & _CLEARABLE and value == f.inverted:
            clear |= f.flag
    propagation = 0
    data: list[str] = []
    for element in options.other_options:
        if is_fstab_only(element):
            continue
        flag_word = _FLAG_WORDS.get(element)
        if flag_word is not None:
            flag, value = flag_word
            flags = flags | flag if value else flags & ~flag
            clear = clear & ~flag if value else clear | (flag & _CLEARABLE)
        elif element in _I_VERSION_WORDS:
            flags = flags | MS_I_VERSION if _I_VERSION_WORDS[element][1] else flags & ~MS_I_VERSION
        elif element in _BIND_WORDS:
            flags |= _BIND_WORDS[element]
        elif element in _PROPAGATION_WORDS:
            propagation = _PROPAGATION_WORDS[element]
        else:
            data.append(element)
    return KernelOptions(flags=flags, data=",".join(data), propagation=propagation,
                         clear=clear & ~flags)


def with_unnamed_from(options: MountOptions, base: MountOptions, *,
                      per_mount_only: bool = False) -> MountOptions:
    """``options`` with each flag they leave unnamed as ``base`` has it: the atime
    mode as a whole, and the MS_* words without a field (``lazytime``,
    ``nosymfollow``) by their set or clear spelling. ``mand`` (the kernel
    ignores it) and ``dirsync`` (not in the remount mask) are left alone, and
    with ``per_mount_only`` (a bind) every superblock flag."""
    named = effective_fields(options)
    changes = {f.name: value for f in _FIELDS
               if f.name not in named and f.name not in ATIME_FIELDS
               and f.name not in _NOT_RESET and not (per_mount_only and f.superblock)
               and (value := getattr(base, f.name)) is not None}
    if not any(name in named for name in ATIME_FIELDS):
        changes.update({name: getattr(base, name) for name in ATIME_FIELDS})
    words = set(options.other_options)
    extra = tuple(
        set_name if set_name in base.other_options else clear_name
        for flag, set_name, clear_name in _FIELDLESS_FLAG_WORDS
        if not {set_name, clear_name} & words and not (per_mount_only
                                                       and not flag & PER_MOUNT_FLAGS))
    return replace(options, other_options=options.other_options + extra, **changes)


def with_unnamed_at_defaults(options: MountOptions) -> MountOptions:
    """``options`` with each flag they leave unnamed at what mount(8) gives a new
    mount of a file system: rw, suid, dev, exec, async, diratime, the kernel's
    atime mode (relatime), no lazytime, symlinks followed. That is the mount an
    fstab line of ``options`` makes at the next boot (a bind's differs: it takes
    its origin's flags, ``with_unnamed_from``)."""
    return with_unnamed_from(options, _NEW_MOUNT)


#: The three fields that are one kernel atime mode together.
ATIME_FIELDS: Final = ("update_access_times", "update_relative_access_times",
                             "update_full_access_times")
#: The atime modes in which each value of an atime field holds.
_ATIME_VALUE_HOLDS_IN: Final = {
    ("update_access_times", False): frozenset({"noatime"}),
    ("update_access_times", True): frozenset({"relatime", "strictatime"}),
    ("update_relative_access_times", True): frozenset({"relatime"}),
    ("update_relative_access_times", False): frozenset({"noatime", "strictatime"}),
    ("update_full_access_times", True): frozenset({"strictatime"}),
    ("update_full_access_times", False): frozenset({"noatime", "relatime"}),
}


def atime_mode(options: MountOptions, spelled: Callable[[str], str] = str) -> str | None:
    """The kernel atime mode (noatime, relatime, strictatime) that the atime fields
    of ``options``, written as option words, give; None when they name none
    (the kernel's default, relatime, applies).

    mount(2) reads the words as flags (fs/namespace.c path_mount()):
    strictatime beats noatime, which beats relatime, the default. Raises
    OptionError when a named value does not hold in that mode (``noatime``
    with full updates; "not relative" alone, which the kernel ignores): such
    requests were written to fstab as words that mean something else.
    ``parse_options`` gives only values that hold. ``spelled`` names a field
    in the message (a CIM property name).
    """
    named = {name: getattr(options, name) for name in ATIME_FIELDS
             if getattr(options, name) is not None}
    if not named:
        return None
    if named.get("update_full_access_times") is True:
        mode = "strictatime"
    elif named.get("update_access_times") is False:
        mode = "noatime"
    else:
        mode = "relatime"
    wrong = [name for name, value in named.items()
             if mode not in _ATIME_VALUE_HOLDS_IN[(name, value)]]
    if wrong:
        asked = ", ".join(f"{spelled(name)}={value}" for name, value in named.items())
        raise OptionError(
            f"the atime values {asked} make no one atime mode: the kernel would give "
            f"{mode}, where {', '.join(spelled(name) for name in wrong)} does not hold "
            f"(noatime: {spelled('update_access_times')}=False; strictatime: "
            f"{spelled('update_full_access_times')}=True; relatime otherwise)", value=asked)
    return mode


#: Flags a Mode 1 remount never resets: the kernel ignores ``mand`` (5.15) and
#: cannot change ``dirsync`` on a remount; ``silent`` is not a mount's state.
_NOT_RESET: Final = frozenset(("allow_mandatory_lock", "synchronous_directory_updates",
                               "silent"))
_FIELDLESS_FLAG_WORDS: Final = tuple(
    row for row in FLAG_OPTION_NAMES
    if row[2] and not any(f.flag == row[0] for f in _FIELDS))
#: A new mount's flags: the draft's defaults and the kernel's atime mode (relatime).
_NEW_MOUNT: Final = replace(
    DEFAULTS, update_access_times=True, update_relative_access_times=True,
    update_full_access_times=False, update_directory_access_times=True)


def is_propagation(word: str) -> bool:
    """Whether ``word`` is a propagation option (``shared``, ``rslave``, ...)."""
    return word in _PROPAGATION_WORDS


def propagation_asked(options: MountOptions) -> tuple[str, int] | None:
    """The propagation word ``options`` end with (the last one wins, as mount(8)
    applies them in turn) and its MS_* flags, or None."""
    words = [word for word in options.other_options if word in _PROPAGATION_WORDS]
    return (words[-1], _PROPAGATION_WORDS[words[-1]]) if words else None


def without_propagation(options: MountOptions) -> MountOptions:
    """``options`` without their propagation word (``shared``, ``rslave``, ...)."""
    others = tuple(o for o in options.other_options if not is_propagation(o))
    return options if others == options.other_options else replace(options, other_options=others)


#: The per-mount restrictions a field set True lifts (rw, suid, dev, exec).
_LIFTING_FIELDS: Final = ("allow_write", "allow_suid", "interpret_devices", "allow_execution")


def lifting_no_further_than(options: MountOptions, original: MountOptions) -> MountOptions:
    """``options`` for an rbind's copy of a mount whose own flags are ``original``:
    a restriction the original has (nodev, noexec on /dev/shm) is not lifted
    (the field left unnamed), one the copy was given since may be. No Goal for
    the top makes a copy more open than what it copies, as its creation gives
    it nothing it lifts (``Kernel.mount``)."""
    kept: dict[str, Any] = {name: None for name in _LIFTING_FIELDS
                            if getattr(options, name) is True
                            and getattr(original, name) is False}
    return replace(options, **kept) if kept else options


# File system options a remount cannot change: the kernel accepts and ignores
# them (shmem_reconfigure() leaves the root inode's mode and owner alone).
# Any other file system would be added here as a test against the kernel shows.
REMOUNT_IGNORED: Final[Mapping[str, frozenset[str]]] = {
    "tmpfs": frozenset({"mode", "uid", "gid"}),
}


def remount_refusal(fstype: str, options: MountOptions, live: MountOptions) -> str | None:
    """Why a remount of a ``fstype`` file system to ``options`` cannot do what it
    says (an option the kernel ignores on a remount, changed), or None."""
    # MS_DIRSYNC is not in the kernel's MS_RMT_MASK: mount(2) ignores it on a
    # remount, fsconfig(2) refuses the reconfiguration (EINVAL).
    wanted_dirsync = effective_fields(options).get("synchronous_directory_updates")
    if wanted_dirsync is not None and wanted_dirsync != bool(live.synchronous_directory_updates):
        word = "dirsync" if wanted_dirsync else "no dirsync"
        return (f"{word}: a file system takes dirsync when it is mounted only; a remount "
                "cannot change it (unmount and mount again)")
    ignored = REMOUNT_IGNORED.get(fstype, frozenset())
    live_fs = _fs_options(live)
    for name, element in _fs_options(options).items():
        if name in ignored and _same_fs_option(name, element, live_fs.get(name)) is not True:
            return (f"{element!r}: {fstype} takes {name}= when it is mounted only; a remount "
                    "ignores it (unmount and mount again)")
    return None


def bind_refusal(options: MountOptions) -> str | None:
    """Why a bind mount cannot do what ``options`` say, or None: a bind shares its
    origin's file system, so it has no file system options and no superblock
    flags of its own (mount(2): they are ignored with MS_BIND)."""
    request = kernel_request(options)
    if request.data:
        return (f"{request.data!r} are file system options; a bind mount shares its "
                "origin's file system and cannot set them")
    _, superblock = split_flags(request.flags)
    if superblock & ~MS_SILENT:
        words = [name for flag, name, _ in FLAG_OPTION_NAMES if superblock & flag]
        return (f"{','.join(words)} are file system flags; a bind mount shares its origin's "
                "file system and cannot set them")
    return None


def split_flags(flags: int) -> tuple[int, int]:
    """Split option flags into (per-mount, superblock) flags.

    Per-mount flags are ``PER_MOUNT_FLAGS`` (MS_RDONLY among them: the
    mount's own read-only flag; a new mount or a plain remount applies it to
    the superblock as well). Superblock flags are the other option flags:
    MS_SYNCHRONOUS, MS_DIRSYNC, MS_MANDLOCK, MS_SILENT, MS_LAZYTIME. Operation
    flags (MS_BIND, MS_REC, MS_REMOUNT, propagation) are in neither.
    """
    return flags & PER_MOUNT_FLAGS, flags & _OPTION_FLAGS & ~PER_MOUNT_FLAGS


def _is_fs_data(element: str) -> bool:
    """Whether ``element`` of other options is the file system's own (mount(2) data)."""
    return not (is_fstab_only(element) or element in _FLAG_WORDS or element in _I_VERSION_WORDS
                or element in _BIND_WORDS or element in _PROPAGATION_WORDS)


def _fs_options(options: MountOptions) -> dict[str, str]:
    """File system data options by name, the last of a name winning (it is the one in effect)."""
    return {element.split("=", 1)[0]: element
            for element in options.other_options if _is_fs_data(element)}


def without_fs_options_in_effect(options: MountOptions, live: MountOptions) -> MountOptions:
    """``options`` without the file system options ``live`` shows in effect already
    (as ``compare`` judges them): asking for those changes nothing, and a bind's
    own setting, which shows its origin's, may then be given back as a Goal."""
    live_fs = _fs_options(live)
    kept = tuple(element for element in options.other_options
                 if not _is_fs_data(element) or _same_fs_option(
                     name := element.split("=", 1)[0], element,
                     _shown(live_fs, name)) is not True)
    return options if kept == options.other_options else replace(options, other_options=kept)


def _flag_words_state(options: MountOptions) -> dict[int, bool]:
    """The MS_* flags other options set (True) or clear (False), the last word winning."""
    state: dict[int, bool] = {}
    for element in options.other_options:
        flag_word = _FLAG_WORDS.get(element)
        if flag_word is not None:
            state[flag_word[0]] = flag_word[1]
    return state


def remount_needs_superblock(
    old: MountOptions, new: MountOptions, *, superblock_read_only: bool | None = None
) -> bool:
    """True when going from ``old`` to ``new`` needs a file system remount (plain MS_REMOUNT).

    False means MS_REMOUNT|MS_BIND with the per-mount flags is enough: it
    changes this mount only and leaves the superblock, and so every other
    mount of the file system, alone (mount(2), "Remounting an existing mount").
    Only what ``new`` specifies counts: a field it leaves unset or a file
    system option it does not name is not a change. It is True when a
    superblock flag that ``new`` specifies differs from ``old`` (``sync``,
    ``dirsync``, ``mand``, ``lazytime``), or when a file system option of
    ``new`` is not shown equal in ``old`` (a value that cannot be compared is
    re-applied: that is harmless), or when ``new`` makes a read-only mount
    writable while the superblock is read-only: a bind remount cannot make the
    file system writable (writes then fail with EROFS). Pass
    ``superblock_read_only`` from mountinfo (``"ro"`` first in the super
    options); None (unknown) counts as read-only, the safe side.
    ``silent`` only matters while mounting and is never a reason.
    """
    new_fields = effective_fields(new)
    old_fields = effective_fields(old)
    for name, value in new_fields.items():
        f = _FIELD_BY_NAME[name]
        if f.superblock and name != "silent" and old_fields.get(name) != value:
            return True
    if (
        new_fields.get("allow_write") is True
        and old_fields.get("allow_write") is not True
        and superblock_read_only is not False
    ):
        return True
    old_flags = _flag_words_state(old)
    for flag, value in _flag_words_state(new).items():
        if not flag & PER_MOUNT_FLAGS and old_flags.get(flag, False) != value:
            return True
    old_fs = _fs_options(old)
    return any(
        _same_fs_option(name, element, old_fs.get(name)) is not True
        for name, element in _fs_options(new).items()
    )


# -- live options ------------------------------------------------------------------------

# The per-mount words mountinfo prints (fs/proc_namespace.c show_mnt_opts()) that
# fields carry. The atime mode is one of noatime, relatime or neither (strict).
_VFS_FIELD_WORDS: Final = frozenset({"rw", "ro", "nosuid", "nodev", "noexec", "noatime",
                                     "nodiratime", "relatime"})
# The superblock flags mountinfo prints (show_sb_opts()) that fields carry;
# "lazytime" has no field and stays an other option.
_SB_FIELD_WORDS: Final = {"sync": "synchronous_io", "dirsync": "synchronous_directory_updates",
                          "mand": "allow_mandatory_lock"}


def from_mountinfo(vfs_options: Iterable[str], super_options: Iterable[str]) -> MountOptions:
    """The live options of a mount, from its mountinfo option fields.

    Every field the kernel reports is explicit. ``allow_write`` is the
    mount's: the superblock's leading ``rw``/``ro`` is a different thing (a
    read-only bind of a writable file system shows ``ro`` and ``rw``) and is
    dropped. The atime fields follow the kernel's one atime mode: ``noatime``,
    ``relatime``, or neither, which is strictatime. ``silent`` is not reported
    by the kernel and stays None. Other per-mount words (``nosymfollow``) come
    first in ``other_options``, then the file system's options as shown
    (``size=10240k``, ``mode=755``, ``inode64``, ``lazytime``). The result is
    not validated: the kernel may show values a configured option may not hold.
    """
    return _from_fields(tuple(vfs_options), tuple(super_options))


@functools.lru_cache(maxsize=4096)
def _from_fields(vfs: tuple[str, ...], sup: tuple[str, ...]) -> MountOptions:
    """``from_mountinfo`` of two fields. Kept: a host's mounts share a few option
    strings, and a read of the whole state asks for every mount's options
    after each change (MountOptions is immutable, so sharing is safe)."""
    noatime = "noatime" in vfs
    relatime = "relatime" in vfs
    sb_words = set(sup)
    other = [word for word in vfs if word not in _VFS_FIELD_WORDS]
    sup_rest = sup[1:] if sup and sup[0] in ("rw", "ro") else sup
    other.extend(word for word in sup_rest if word not in _SB_FIELD_WORDS)
    return MountOptions(
        allow_write="ro" not in vfs,
        allow_suid="nosuid" not in vfs,
        interpret_devices="nodev" not in vfs,
        allow_execution="noexec" not in vfs,
        synchronous_io="sync" in sb_words,
        synchronous_directory_updates="dirsync" in sb_words,
        update_access_times=not noatime,
        update_relative_access_times=relatime and not noatime,
        update_full_access_times=not noatime and not relatime,
        update_directory_access_times="nodiratime" not in vfs,
        allow_mandatory_lock="mand" in sb_words,
        silent=None,
        other_options=tuple(other),
    )


# -- drift -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OptionDrift:
    """One option whose live value is not the configured one.

    ``name`` is a field name (``allow_write``), an MS_* word without a field
    (``lazytime``) or a file system option's name (``size``). ``configured``
    and ``live`` are booleans for the first two and whole option elements
    (``size=10m``) for the last; ``live`` is None when the kernel does not show
    it, ``configured`` when the configuration does not set a file system option
    the mount shows. ``comparable`` is False when the two may well be equal
    but that cannot be decided from the text (see ``compare``).
    """

    name: str
    configured: bool | str | None
    live: bool | str | None
    comparable: bool = True

    def __str__(self) -> str:
        configured = "(not set)" if self.configured is None else self._spell(self.configured)
        text = f"{self.name}: configured {configured}, live {self._spell(self.live)}"
        return text if self.comparable else text + " (not comparable)"

    def _spell(self, value: bool | str | None) -> str:
        if value is None:
            return "not shown"
        if isinstance(value, str):
            return value
        f = _FIELD_BY_NAME.get(self.name)
        if f is not None:
            return (f.true_word if value else f.false_word) or f"no {f.true_word}"
        set_name, clear_name = _FLAG_WORD_PAIRS.get(self.name, (self.name, ""))
        return set_name if value else (clear_name or f"no {set_name}")


# memparse() (lib/cmdline.c): a C number with base prefix, then an optional
# binary suffix; tmpfs adds "%" of RAM (mm/shmem.c shmem_parse_one()).
_MEMPARSE_RE: Final = re.compile(r"(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)([kKmMgGtTpPeE]?)")
_SUFFIX_SHIFT: Final = {"": 0, "k": 10, "m": 20, "g": 30, "t": 40, "p": 50, "e": 60}
# Keys whose values are memparse() sizes or counts, shown back normalized:
# tmpfs prints size= in KiB ("%luk") and nr_inodes= as a plain number.
# xfs prints logbsize= and allocsize= in KiB too ("logbsize=64k" for 65536).
_SIZE_KEYS: Final = frozenset({"size", "nr_blocks", "nr_inodes", "logbsize", "allocsize"})
# Options a file system shows under another name: ext4 prints noload as norecovery.
_SHOWN_AS: Final = {"noload": "norecovery"}
#: File systems that show only the options that differ from their defaults
#: (mm/shmem.c shmem_show_options(), fs/ramfs/inode.c ramfs_show_options()).
_SHOWS_ONLY_CHANGED: Final = frozenset({"tmpfs", "ramfs"})
# Values a file system leaves out of mountinfo when they are its default: set so,
# they are in effect. tmpfs shows mode= only when not 1777 and uid=/gid= when not
# 0 (mm/shmem.c shmem_show_options()), ramfs mode= when not 0755
# (fs/ramfs/inode.c), ext4 acl and user_xattr when not on (fs/ext4/super.c,
# the defaults of mkfs.ext4). None: a word without a value.
_DEFAULTS_NOT_SHOWN: Final[Mapping[str, Mapping[str, str | None]]] = {
    "tmpfs": {"mode": "1777", "uid": "0", "gid": "0"},
    "ramfs": {"mode": "755"},
    "ext4": {"acl": None, "user_xattr": None},
}
# btrfs shows a subvolume by its absolute path ("subvol=@home" as "subvol=/@home"),
# and compression as ALGORITHM:LEVEL with the default level added ("compress" alone
# is zlib's; fs/btrfs/super.c btrfs_show_options()).
_BTRFS_COMPRESS_KEYS: Final = frozenset({"compress", "compress-force"})
# btrfs rescue= aliases (Documentation/ch-mount-options.rst) by the names it shows;
# usebackuproot, a choice made while mounting, is never shown.
_BTRFS_RESCUE_NAMES: Final = {"ibadroots": "ignorebadroots", "idatacsums": "ignoredatacsums",
                              "imetacsums": "ignoremetacsums",
                              "isuperflags": "ignoresuperflags", "usebackuproot": ""}
# tmpfs rounds size= up to whole pages, and the page size is not in the text:
# up to 256 KiB (the largest Linux page size in use, powerpc 44x) above the
# configured size cannot be told from drift.
_MAX_PAGE: Final = 256 * 1024
# Octal permission values, shown as "%o" without a leading zero (mode=0755 -> 755).
_OCTAL_KEYS: Final = frozenset({"mode", "dmode", "fmode", "umask", "dmask", "fmask", "ptmxmode"})
# NFS shows the negotiated minor version (vers=4 -> vers=4.2).
_NFS_VERSION_KEYS: Final = frozenset({"vers", "nfsvers"})


def _memparse(text: str) -> int | None:
    m = _MEMPARSE_RE.fullmatch(text)
    if m is None:
        return None
    digits, suffix = m.groups()
    if digits.startswith(("0x", "0X")):
        number = int(digits, 16)
    elif digits.startswith("0"):
        number = int(digits, 8)
    else:
        number = int(digits)
    return number << _SUFFIX_SHIFT[suffix.lower()]


def _shown(live_fs: Mapping[str, str], name: str) -> str | None:
    """The option element the kernel shows for ``name``, under its own name or the
    one a file system shows it as (``_SHOWN_AS``)."""
    return live_fs.get(name, live_fs.get(_SHOWN_AS.get(name, name)))


def _same_fs_option(name: str, configured: str, live: str | None,
                    fstype: str | None = None) -> bool | None:
    """Whether a file system option is in effect as configured: True, False, or None
    (unknown); ``fstype``, where known, tells the defaults it does not show."""
    if live is None:
        defaults = _DEFAULTS_NOT_SHOWN.get(fstype or "", {})
        if name in defaults:
            default = defaults[name]
            # The default, as the kernel would show it, compared by the same rules.
            shown = name if default is None else f"{name}={default}"
            if _same_fs_option(name, configured, shown) is True:
                return True
        # File systems print only what differs from their defaults (tmpfs omits
        # size= at its default half of RAM, mm/shmem.c shmem_show_options();
        # ext4 prints non-default options only, fs/ext4/super.c), and some print
        # nothing at all: an option not shown may still be in effect.
        return None
    if configured == live:
        return True
    _, _, want = configured.partition("=")
    _, _, have = live.partition("=")
    if name in SELINUX_OPTION_NAMES:
        # Quoted or not, one context: mount(8) users quote it, the kernel
        # quotes only one that holds a comma.
        return unquoted(want) == unquoted(have)
    if name in _SIZE_KEYS:
        want_n, have_n = _memparse(want), _memparse(have)
        if want_n is None or have_n is None:
            return None  # "50%" of RAM, or a spelling the kernel would refuse
        if want_n == have_n:
            return True
        if name == "size" and 0 < have_n - want_n < _MAX_PAGE and have_n % 4096 == 0:
            return None
        return False
    if name in _OCTAL_KEYS:
        try:
            return int(want, 8) == int(have, 8)
        except ValueError:
            return None
    if name in ("uid", "gid"):
        if is_decimal(want) and is_decimal(have):
            return int(want) == int(have)
        return None  # a user or group name: resolving it is I/O
    if name in _NFS_VERSION_KEYS and have.startswith(want + "."):
        return None
    if _SHOWN_AS.get(name) == live:
        return True
    if name == "subvol":
        return _subvolume_path(want) == _subvolume_path(have)
    if name in _BTRFS_COMPRESS_KEYS:
        algorithm, _, level = (want or "zlib").partition(":")
        shown_algorithm, _, shown_level = have.partition(":")
        return algorithm == shown_algorithm and level in ("", shown_level)
    if name == "rescue":
        asked = {_BTRFS_RESCUE_NAMES.get(word, word) for word in want.split(":")} - {""}
        if "all" in asked:
            return None  # its expansion is the running kernel's list
        return asked == set(have.split(":"))
    return False


def _subvolume_path(text: str) -> str:
    """A btrfs subvolume path as btrfs shows it: absolute, no empty component."""
    return "/" + "/".join(part for part in text.split("/") if part)


def compare(configured: MountOptions, live: MountOptions, *,
            fstype: str | None = None, selinux: bool | None = None,
            unset_shown: bool = False) -> list[OptionDrift]:
    """The options whose live value differs from the configured one, one drift each.

    Fields the configuration leaves unset are not compared (the default
    applies, and may be the file system's); those an effective ``user`` or
    ``owner`` implies are. A field the kernel does not report (``silent``) is
    a drift that is not comparable. fstab-only options and the ``bind`` and
    propagation operations are not properties of a live mount and are skipped.
    MS_* words without a field (``lazytime``, ``nosymfollow``) compare as
    flags. Atime words without effect (``norelatime`` alone, ``noatime`` with
    ``strictatime``) are not fields of ``configured``: ``parse_options`` reads
    them as the kernel does.

    File system options compare by name, the last configured value of a name
    being the one in effect. The kernel shows some values normalized, so equal
    texts are not required where the rule is known: sizes and counts
    (``size``, ``nr_blocks``, ``nr_inodes``) compare as memparse() numbers
    (``size=10m`` equals ``size=10240k``); a size the kernel shows up to one
    page larger is page rounding or drift, which the text cannot tell, and a
    percentage of RAM cannot be computed here: both are not comparable. Octal
    permissions compare as numbers (``mode=0755`` equals ``mode=755``);
    numeric ``uid``/``gid`` as numbers, names are not comparable; NFS
    ``vers=4`` against a negotiated ``4.2`` is not comparable; xfs sizes
    (``logbsize``, ``allocsize``) compare as memparse() numbers; btrfs
    ``subvol`` as an absolute path, ``compress``/``compress-force`` with the
    level btrfs adds, ``rescue`` as a set (``all`` is not comparable); ext4's
    ``noload`` is shown as ``norecovery``. An option the kernel does not show
    is not comparable (file systems omit their defaults), unless ``fstype``
    is given and the option is its default that it is known to leave out
    (tmpfs ``mode=1777``, ``uid=0``; ext4 ``acl``). SELinux options (their
    values with or without quotes) are compared where ``selinux`` says SELinux
    is enabled on the host, and a missing one is drift (SELinux shows every
    context it applies); where it is not, never (mount(8) leaves them out);
    where ``selinux`` is None, only on a mount that shows one. Any other
    difference in value is drift. With ``unset_shown`` (a line against its
    mount), a file system option the mount shows and ``configured`` does not
    set is drift where ``fstype`` shows only what differs from its defaults
    (tmpfs, ramfs: the next boot gives the default).
    """
    drifts: list[OptionDrift] = []
    for name, value in effective_fields(configured).items():
        live_value = getattr(live, name)
        if live_value is None:
            drifts.append(OptionDrift(name, value, None, comparable=False))
        elif live_value != value:
            drifts.append(OptionDrift(name, value, live_value))
    live_flags = _flag_words_state(live)
    for flag, value in _flag_words_state(configured).items():
        if live_flags.get(flag, False) != value:
            drifts.append(OptionDrift(_NAMES_OF_FLAG[flag][0], value, not value))
    live_fs = _fs_options(live)
    # SELinux shows its options (and ``seclabel``) on every mount it labels;
    # a mount that shows none was made where SELinux is not enabled, and
    # mount(8) left them out there.
    labeled = not SELINUX_OPTION_NAMES.isdisjoint(live_fs) if selinux is None else selinux
    for name, element in _fs_options(configured).items():
        if name in SELINUX_OPTION_NAMES:
            if not labeled:
                continue
            if name not in live_fs:
                drifts.append(OptionDrift(name, element, None))
                continue
        live_element = _shown(live_fs, name)
        same = _same_fs_option(name, element, live_element, fstype)
        if same is not True:
            drifts.append(OptionDrift(name, element, live_element, comparable=same is not None))
    if unset_shown and fstype in _SHOWS_ONLY_CHANGED:
        wanted = _fs_options(configured)
        drifts.extend(OptionDrift(name, None, element) for name, element in live_fs.items()
                      if name not in wanted and name not in SELINUX_OPTION_NAMES)
    return drifts

