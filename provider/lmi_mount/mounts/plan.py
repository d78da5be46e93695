"""Plans: a request plus the current state becomes a list of steps, each with its undo.

Owns: the decisions of mount management, as pure functions of a Snapshot —
when a mount is shared rather than made (same source and options only, never
stacked), when a release unmounts, when the hold timer runs, what a mode-1
transaction does and in which order, and how every step is undone. A dry run
is the description of the plan; executing it is the engine's job.

Must not know: the kernel API, files, clocks, threads or CIM. Paths arrive
already absolute and resolved by the engine (realpath is I/O).
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any, Final

from lmi_mount.mounts import flags as ms
from lmi_mount.mounts.errors import AlreadyExists, InUse, InvalidRequest, NotFound
from lmi_mount.mounts.fstab import FstabConflict, FstabDocument, FstabEntry
from lmi_mount.mounts.fstab import normalize_target as normalize_fstab_target
from lmi_mount.mounts.holders import HeldMount, HolderError, HolderTable, shown_holder
from lmi_mount.mounts.mountinfo import MountRecord, MountTable, propagation_holds
from lmi_mount.mounts.options import (
    ATIME_FIELDS,
    BOOLEAN_FIELDS,
    DEFAULTS,
    MountOptions,
    OptionDrift,
    OptionError,
    bind_refusal,
    compare,
    effective_fields,
    from_mountinfo,
    fstab_options,
    is_propagation,
    kernel_request,
    lifting_no_further_than,
    parse_options,
    remount_needs_superblock,
    remount_refusal,
    render_options,
    same_meaning,
    with_unnamed_at_defaults,
    with_unnamed_from,
    without_fs_options_in_effect,
    without_propagation,
)

# fstab spells a bind mount as type "none" with the "bind"/"rbind" option
# (mount(8), "Bind mount operation"); these two words are operations, not
# options, so they never reach MountOptions.
_BIND_WORDS = ("bind", "rbind")


@dataclass(frozen=True, slots=True)
class MountSpec:
    """A mount as the user asks for it.

    ``source`` is what the user calls it, verbatim, and what an fstab line
    says: a directory for a bind, an image file or device for a block file
    system (``UUID=...``, ``/dev/disk/by-id/...`` and symlinks included), a
    network spec (``//host/share``, ``host:/path``), any word ("tmpfs") for a
    virtual one. ``kernel_source`` is where it resolves now, for the kernel
    step only (a tag's device, a symlink's target, a bind's real directory);
    None where the source is the kernel's name already.
    ``fstype`` None is a bind mount (the draft: FileSystemType NULL = bind).
    ``dump`` and ``passno`` are fstab's 5th and 6th fields.
    """

    source: str
    target: str
    fstype: str | None
    options: MountOptions = field(default_factory=MountOptions)
    recursive: bool = False
    dump: int = 0
    passno: int = 0
    kernel_source: str | None = None

    def __post_init__(self) -> None:
        # ``bind``/``rbind`` among a bind's options (OtherOptions ["rbind"], as
        # mount(8) takes ``-o rbind``) say how it is made, as ``recursive``
        # does: taken out of the options, so that the kernel, the holder record
        # and the fstab line agree that an rbind is one.
        words = [w for w in self.options.other_options if w in _BIND_WORDS]
        if self.fstype is None and words:
            object.__setattr__(self, "recursive", self.recursive or "rbind" in words)
            object.__setattr__(self, "options", replace(self.options, other_options=tuple(
                w for w in self.options.other_options if w not in _BIND_WORDS)))

    @property
    def kernel_name(self) -> str:
        """The source as the kernel step names it."""
        return self.kernel_source if self.kernel_source is not None else self.source

    def describe(self) -> str:
        kind = ("rbind" if self.recursive else "bind") if self.fstype is None else self.fstype
        opts = render_options(self.options)
        suffix = "" if opts == "defaults" else f" ({opts})"
        return f"{kind} {self.source} on {self.target}{suffix}"

    def fstab_entry(self, existing: FstabEntry | None = None) -> FstabEntry:
        """The fstab line of this mount: its words mean these options to mount(8)
        (``fstab_options``), and the source and mount point are as spelled.

        With ``existing``, the line this one replaces, its option words, its
        type word of a bind and its spelling of the mount point are kept
        where they mean the same.
        """
        old_words = existing.options.split(",") if existing and existing.options else []
        old_bind = [word for word in old_words if word in _BIND_WORDS]
        rest = ",".join(word for word in old_words if word not in _BIND_WORDS)
        options = fstab_options(self.options, rest if existing is not None else None)
        fstype = self.fstype or "none"
        if self.fstype is None:
            word = "rbind" if self.recursive else "bind"
            if existing is not None and old_bind == [word] and options == rest:
                options, fstype = existing.options, existing.fstype
            else:
                options = word if options in ("defaults", "") else f"{word},{options}"
        same_target = existing is not None and normalize_fstab_target(
            existing.target) == normalize_fstab_target(self.target)
        return FstabEntry(
            spec=self.source,
            target=existing.target if existing is not None and same_target else self.target,
            fstype=fstype,
            options=options or "defaults",
            freq=self.dump,
            passno=self.passno,
        )

    def means(self, entry: FstabEntry) -> bool:
        """Whether the fstab line ``entry`` asks mount(8) for exactly this mount,
        whatever its spelling (``rw,sync,hard`` and ``sync,hard``)."""
        try:
            configured = MountSpec.from_fstab(entry)
            return (configured.source == self.source and configured.fstype == self.fstype
                    and configured.recursive == self.recursive
                    and normalize_fstab_target(configured.target)
                    == normalize_fstab_target(self.target)
                    and (configured.dump, configured.passno) == (self.dump, self.passno)
                    and same_meaning(configured.options, self.options))
        except OptionError:
            return False  # words this service would not write: not its line

    @classmethod
    def from_fstab(cls, entry: FstabEntry) -> MountSpec:
        """The spec an fstab line describes (``none`` + ``bind`` is a bind mount)."""
        words = entry.options.split(",") if entry.options else []
        bind = [w for w in words if w in _BIND_WORDS]
        rest = ",".join(w for w in words if w not in _BIND_WORDS)
        return cls(
            source=entry.spec,
            target=entry.target,
            fstype=None if bind else entry.fstype,
            # As libmount reads it: a line it accepts is never refused here.
            options=parse_options(rest, strict=False),
            recursive="rbind" in bind,
            dump=entry.freq,
            passno=entry.passno,
        )


# -- steps ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KernelMount:
    spec: MountSpec

    def describe(self) -> str:
        return f"mount {self.spec.describe()}"

    def undo(self) -> Step:
        return KernelUnmount(self.spec.target, lazy=False, remount=self.spec)

    def request(self) -> tuple[int, str, int]:
        """The mount(2) flags and data of this mount, and the per-mount flags a
        bind must clear (see ``KernelOptions.clear``)."""
        kernel = kernel_request(self.spec.options)
        flags = kernel.flags
        if self.spec.fstype is None:
            flags |= ms.MS_BIND | (ms.MS_REC if self.spec.recursive else 0)
        return flags, kernel.data, kernel.clear


@dataclass(frozen=True, slots=True)
class KernelRemount:
    """Change the options of a live mount; ``previous`` undoes it.

    ``mount_id`` is the mount the plan means (see KernelUnmount).
    """

    target: str
    options: MountOptions
    previous: MountOptions
    superblock: bool
    mount_id: int | None = None

    def describe(self) -> str:
        scope = "file system" if self.superblock else "mount"
        return f"remount {self.target} ({scope} options: {render_options(self.options)})"

    def undo(self) -> Step:
        return KernelRemount(self.target, self.previous, self.options, self.superblock,
                             self.mount_id)

    def request(self) -> tuple[int, str]:
        kernel = kernel_request(self.options)
        if self.superblock:
            return ms.MS_REMOUNT | kernel.flags, kernel.data
        # MS_REMOUNT|MS_BIND changes the per-mount flags only and sets ALL of
        # them (mount(2), "Remounting an existing mount"), so the full set is
        # passed, with no file system data.
        return ms.MS_REMOUNT | ms.MS_BIND | (kernel.flags & ms.PER_MOUNT_FLAGS), ""


@dataclass(frozen=True, slots=True)
class KernelUnmount:
    """Unmount ``target``; ``remount`` is how to mount it back (the undo).

    ``mount_id`` is the mount the plan means (mountinfo's id when planned):
    the kernel step refuses to unmount another one found at that path.
    ``recursive`` takes the mounts on it along first (an rbind of ours).
    """

    target: str
    lazy: bool
    remount: MountSpec | None
    mount_id: int | None = None
    recursive: bool = False

    def describe(self) -> str:
        return f"unmount {self.target}" + (" (lazy detach)" if self.lazy else "")

    def undo(self) -> Step | None:
        return KernelMount(self.remount) if self.remount is not None else None


#: A line as an fstab step read it: its number, its raw text, the raw line
#: before it (None for the first line; ``UNKNOWN_BEFORE`` in a record that
#: did not keep it).
RawLine = tuple[int, str, str | None]
#: No raw line holds a newline: this one stands for "not recorded".
UNKNOWN_BEFORE: Final = "\n"


@dataclass(frozen=True, slots=True)
class FstabChange:
    """Add, replace or remove the fstab line of one mount (a spec on a mount point).

    ``previous`` is the line before (None for an add), ``entry`` the line after
    (None for a remove). The undo swaps them. ``also`` are more lines of the
    mount that go with ``previous`` when it is removed (a removal takes every
    line of its source on its mount point, ``plan_delete``), or come back after
    ``entry`` in the undo of that removal, so that no line is lost either way.

    ``was`` says where the lines of ``previous`` and ``also`` stood and their
    text (line number, raw line, the raw line before it or None for the
    first), as the plan read them; the undo's ``restore`` puts them back
    there as they were, not rendered anew at the end: after a kill -9 the
    undo is all recovery has, and the order of lines is what ``mount -a``
    mounts first. A line goes back after the line it followed, wherever
    other edits have moved that one since; by its number if it is gone.
    """

    target: str
    previous: FstabEntry | None
    entry: FstabEntry | None
    also: tuple[FstabEntry, ...] = ()
    was: tuple[RawLine, ...] = ()
    restore: tuple[RawLine, ...] = ()

    @property
    def action(self) -> str:
        if self.previous is None:
            return "add"
        return "remove" if self.entry is None else "replace"

    def describe(self) -> str:
        # Lines as the file has them (escaped): a space inside a field would
        # otherwise read as a field separator. A replace names both lines so
        # that a client can show the change (Ansible's diff mode does).
        if self.previous is not None and self.entry is not None:
            return (f"fstab: replace line '{self.previous.render()}' "
                    f"with '{self.entry.render()}'")
        line = self.entry or self.previous
        assert line is not None
        more = "".join(f" and line '{other.render()}'" for other in self.also)
        return f"fstab: {self.action} line '{line.render()}'{more}"

    def undo(self) -> Step:
        return FstabChange(self.target, self.entry, self.previous, self.also,
                           was=self.restore, restore=self.was)

    def apply(self, document: FstabDocument) -> FstabDocument:
        """This change applied to ``document`` (pure).

        The plan was made from an earlier read: if the mount's line is no
        longer what it was then (an administrator's edit, another writer that
        came first), FstabConflict, rather than overwrite what they wrote. A
        new line (not one put back) needs a mount point without any line.
        """
        now = (document.find_target(self.target) if self.previous is None and not self.restore
               else self.line_now(document))
        if now != self.previous:
            was = "no line" if self.previous is None else f"{self.previous.render()!r}"
            found = "none" if now is None else f"{now.render()!r}"
            raise FstabConflict(
                f"the fstab line of {self.target} changed since this request read it "
                f"(it was {was}, it is {found}): not changed; try again",
                value=self.target)
        if self.previous is None:
            assert self.entry is not None
            if self._restorable((self.entry, *self.also)):
                for at, text, before in sorted(self.restore, key=lambda raw: raw[0]):
                    document = document.insert_line(_place(document, at, before), text)
                return document
            document = document.add(self.entry)
            for more in self.also:
                document = document.add_after(more)
            return document
        if self.entry is None:
            # The mount point's first line, and the others that went with it.
            for gone in (self.previous, *self.also):
                number = next((found.number for found in document.entries()
                               if found.entry == gone), None)
                if number is None:
                    raise FstabConflict(
                        f"the fstab line {gone.render()!r} of {self.target} changed since "
                        "this request read it: not removed; try again", value=self.target)
                document = document.remove(gone.spec, gone.target, line=number)
            return document
        # The line mount(8) uses, where the mount point has several.
        line = document.first_line(self.previous.spec, self.previous.target)
        if line is not None and self._restorable((self.entry,)):
            return document.replace_line(line, self.restore[0][1])
        return document.replace(self.previous.spec, self.previous.target, self.entry, line=line)

    def line_now(self, document: FstabDocument) -> FstabEntry | None:
        """The line of this change's mount in ``document``: the first on its mount
        point with its spec (the line after the change's, else the one before).
        A line of another spec there is another mount (mount -a stacks them)."""
        for line in (self.entry, self.previous):
            if line is not None:
                found = document.find(line.spec, self.target)
                if found is not None:
                    return found
        return None

    def _restorable(self, entries: tuple[FstabEntry, ...]) -> bool:
        """Whether ``restore`` holds exactly ``entries``' lines, each reading back as
        its entry (else they are rendered anew)."""
        if len(self.restore) != len(entries):
            return False
        for (_, text, _before), entry in zip(self.restore, entries, strict=True):
            read = FstabDocument(text + "\n").entries()
            if len(read) != 1 or read[0].entry != entry:
                return False
        return True


@dataclass(frozen=True, slots=True)
class HolderChange:
    """Move the holder state of one mount from ``before`` to ``after`` (None = untracked)."""

    target: str
    before: HeldMount | None
    after: HeldMount | None
    summary: str

    def describe(self) -> str:
        return f"holders: {self.summary}"

    def undo(self) -> Step:
        return HolderChange(self.target, self.after, self.before, f"undo {self.summary}")


Step = KernelMount | KernelRemount | KernelUnmount | FstabChange | HolderChange


@dataclass(frozen=True, slots=True)
class Plan:
    """The steps of one request, in execution order; empty means nothing to do."""

    operation: str
    steps: tuple[Step, ...] = ()
    #: What the client should know although nothing is refused (a type whose
    #: helper is not installed yet), shown after the steps.
    notes: tuple[str, ...] = ()

    def describe(self) -> list[str]:
        return [step.describe() for step in self.steps] + list(self.notes)

    def __bool__(self) -> bool:
        return bool(self.steps)


# -- the state a plan is made from ----------------------------------------------


class Snapshot:
    """Everything a plan depends on, read under the engine's lock.

    Every part is read only if a plan looks at it, at most once: the mount
    table (``table_reader``), the fstab document (``fstab_reader``), and the
    sources of live mounts (``source_of_table`` builds the resolver from the
    table: a bind's origin directory, a loop's backing file). ``live_reader``
    answers "what is mounted exactly at this path" without the whole table
    (statmount(2) on the path's mount); without it the table answers. A plain
    acquire or release of a mount of ours reads neither table nor fstab.
    ``same_directory`` tells whether two paths are one directory (the engine
    compares device and inode): a bind of a bind has two names for its source.
    ``same_source`` whether two fstab specs name one source, by their names as
    mount(8) resolves them: a path with a trailing slash or through a link, a
    device by its tag, a loop device and its image.
    """

    __slots__ = (
        "_find_mount",
        "_found",
        "_fstab",
        "_fstab_reader",
        "_live",
        "_live_reader",
        "_source_of",
        "_source_of_table",
        "_table",
        "_table_reader",
        "hold_seconds",
        "holders",
        "identity",
        "now",
        "same_directory",
        "same_source",
        "selinux",
        "uses_helper",
    )

    def __init__(
        self,
        *,
        table_reader: Callable[[], MountTable],
        fstab_reader: Callable[[], FstabDocument],
        holders: HolderTable,
        source_of_table: Callable[[MountTable], Callable[[MountRecord], str]],
        now: float,
        hold_seconds: float,
        same_directory: Callable[[str, str], bool] = lambda a, b: a == b,
        live_reader: Callable[[str], MountRecord | None] | None = None,
        identity: Callable[[str], tuple[int, int | None] | None] = lambda path: None,
        find_mount: Callable[[int | None, int | None], MountRecord | None] | None = None,
        uses_helper: Callable[[str | None], bool] = lambda fstype: False,
        selinux: bool | None = None,
        same_source: Callable[[str, str], bool] = lambda a, b: a == b,
    ) -> None:
        self.same_directory = same_directory
        self.same_source = same_source
        #: Whether SELinux is enabled on the host (Kernel.selinux_enabled); None:
        #: not known, judged by each mount's options (``compare``).
        self.selinux = selinux
        #: Whether mounts of a type are made by a mount(8) helper (Kernel.uses_helper).
        self.uses_helper = uses_helper
        self.holders = holders
        self.now = now
        self.hold_seconds = hold_seconds
        self._table_reader = table_reader
        self._table: MountTable | None = None
        self._source_of_table = source_of_table
        self._source_of: Callable[[MountRecord], str] | None = None
        self._live_reader = live_reader
        #: (mount id, never-reused unique id) of the mount at a path (statx).
        self.identity = identity
        self._find_mount = find_mount
        self._found: dict[tuple[int | None, int | None], MountRecord | None] = {}
        self._live: dict[str, MountRecord | None] = {}
        self._fstab_reader = fstab_reader
        self._fstab: FstabDocument | None = None

    @property
    def table(self) -> MountTable:
        if self._table is None:
            self._table = self._table_reader()
        return self._table

    @property
    def fstab(self) -> FstabDocument:
        if self._fstab is None:
            self._fstab = self._fstab_reader()
        return self._fstab

    def source_of(self, record: MountRecord) -> str:
        """``record``'s source as the user names it (see MountTable.user_source)."""
        if self._source_of is None:
            self._source_of = self._source_of_table(self.table)
        return self._source_of(record)

    def find(self, held: HeldMount) -> MountRecord | None:
        """The held mount where it is now, read afresh (``Kernel.find_mount``), once
        per snapshot (``_moved`` and ``_covered`` both ask): a renamed mount point
        is no mount event, so the table may show the old path."""
        if self._find_mount is None:
            return self.table.by_id.get(held.mount_id) if held.mount_id is not None else None
        key = (held.mount_id, held.unique_id)
        if key not in self._found:
            here = self._live.get(held.target)
            if (here is not None and held.unique_id is not None
                    and here.unique_id == held.unique_id and here.mount_id == held.mount_id):
                # Read at its mount point in this snapshot, by that unique id
                # (statmount): the usual case, where asking again tells nothing.
                self._found[key] = here
            else:
                self._found[key] = self._find_mount(held.mount_id, held.unique_id)
        return self._found[key]

    def live(self, target: str) -> MountRecord | None:
        if self._live_reader is not None and self._table is None:
            if target not in self._live:  # one read per target and snapshot
                self._live[target] = self._live_reader(target)
            return self._live[target]
        return self.table.at(target)


def normalize_target(path: str) -> str:
    """Check and normalize a mount point path: absolute, no NUL, no '..', no trailing
    slash."""
    if not path:
        raise InvalidRequest("the mount point must not be empty", value=path)
    if "\0" in path:
        raise InvalidRequest(f"mount point {path!r} contains a NUL character", value=path)
    if not path.startswith("/"):
        raise InvalidRequest(f"mount point {path!r} is not an absolute path", value=path)
    if ".." in path.split("/"):
        # The kernel takes ".." after whatever came before it, a symlink
        # included; as text it would name another directory ("link/.." is not
        # the directory the link is in).
        raise InvalidRequest(f"mount point {path!r} goes through '..': name the directory "
                             "without it", value=path)
    # posixpath.normpath keeps a leading '//' (POSIX allows it a meaning); Linux
    # gives it none, so fold it too. '.' names the directory it is in.
    normalized = posixpath.normpath(path)
    return "/" + normalized.lstrip("/")


#: fstab(5)'s tags: a source the kernel cannot look up by itself.
_FSTAB_TAGS: Final = ("UUID=", "LABEL=", "PARTUUID=", "PARTLABEL=", "ID=")


def _live_spec(record: MountRecord, snap: Snapshot) -> MountSpec:
    """The spec that would mount ``record`` again (used to undo an unmount)."""
    options = from_mountinfo(record.vfs_options, record.super_options)
    held = _holders_of(record, snap)
    if held is not None and held.made_by_us:
        # Ours: made from this source and type (no table needed to tell a bind).
        # The kernel is given what is mounted (the device, an image's file),
        # never a spelling it cannot look up: a LABEL= made again as asked
        # failed with ENOENT, and an undone release left it unmounted (a review).
        live = (snap.source_of(record) if held.source.startswith(_FSTAB_TAGS)
                and held.fstype is not None and not snap.uses_helper(held.fstype) else None)
        return MountSpec(held.source, record.target, held.fstype, options,
                         recursive=held.recursive,
                         kernel_source=live if live not in (None, held.source) else None)
    is_bind = snap.table.bind_origin(record) is not None
    return MountSpec(
        source=snap.source_of(record),
        target=record.target,
        fstype=None if is_bind else record.fstype,
        options=options,
    )


def _same_mount(spec: MountSpec, record: MountRecord, snap: Snapshot) -> list[str]:
    """How the live ``record`` differs from what ``spec`` asks; empty if it is the same."""
    differences = []
    held = _holders_of(record, snap)
    if (held is not None and held.made_by_us and held.fstype is not None
            and snap.uses_helper(held.fstype)):
        # Ours, made by a mount helper from this source and type: its mount
        # may show others in the table (ntfs-3g's type is fuseblk, a test's
        # helper mounts a tmpfs), and it is the same mount all the same.
        # (Any other mount is judged by what it shows: a spelling such as
        # UUID= or a symlink may name another file system by now.)
        if held.source not in (spec.source, spec.kernel_name):
            differences.append(f"source is {held.source!r}, not {spec.source!r}")
        if spec.fstype != held.fstype:
            differences.append(f"type is {held.fstype!r}, not {spec.fstype or 'a bind'!r}")
    else:
        # A bind that shows the asked directory is the same whatever path it
        # had then: two stats, where the name the table gives needs the table.
        if not (spec.fstype is None and snap.same_directory(spec.kernel_name, record.target)):
            live_source = snap.source_of(record)
            if live_source not in (spec.kernel_name, spec.source):
                differences.append(f"source is {live_source!r}, not {spec.source!r}")
        if spec.fstype is not None and record.fstype != spec.fstype:
            differences.append(f"type is {record.fstype!r}, not {spec.fstype!r}")
    live_options = from_mountinfo(record.vfs_options, record.super_options)
    for drift in option_drifts(spec.options, live_options, held, record.fstype,
                               snap.selinux):
        differences.append(str(drift))
    return differences


def option_drifts(options: MountOptions, live: MountOptions, held: HeldMount | None,
                  fstype: str | None = None, selinux: bool | None = None
                  ) -> list[OptionDrift]:
    """How the live options differ from ``options``, as far as that matters.

    An option the kernel does not show (tmpfs ``mode=``, ``huge=``; ext4
    ``commit=``) cannot be compared with the table. On a mount we hold
    whose record says it was asked with options of the same meaning, such an
    option is taken as it was asked: the kernel took the request. Anywhere
    else it still counts, as it cannot be ruled out. ``selinux``: whether the
    host has SELinux enabled (``compare``).
    """
    drifts = compare(options, live, fstype=fstype, selinux=selinux)
    if held is not None and same_meaning(parse_options(held.options, strict=False), options):
        drifts = [drift for drift in drifts if drift.comparable]
    return drifts


# -- planners ---------------------------------------------------------------------


def plan_create(
    spec: MountSpec, snap: Snapshot, *, current: bool, persist: bool, holder: str
) -> Plan:
    """CreateMount: mount (``current``) and/or add the fstab line (``persist``).

    A live mount at the target with the same source, type and options is
    shared: one more reference, no second kernel mount. Anything else at the
    target is refused as in use: mounts are never stacked.
    """
    steps: list[Step] = []
    if spec.fstype is None:
        refusal = bind_refusal(spec.options)
        if refusal is not None:
            raise InvalidRequest(refusal, value=render_options(spec.options))
    if current:
        record = snap.live(spec.target)
        held = snap.holders.get(spec.target)
        moved = _moved(held, snap) if held is not None else None
        if held is not None and moved is not None:
            raise InUse(
                f"the mount held as {spec.target!r} is now on {moved.target!r} (its mount "
                f"point was renamed): its holders ({', '.join(held.holders) or 'none'}) "
                "release it by its old name before anything is mounted there",
                value=spec.target,
            )
        covered = _covered(held, snap) if held is not None else None
        if covered is not None:
            raise _covered_error(covered[0].target, covered[1],
                                 "nothing is mounted or shared there until that one is unmounted")
        if record is None:
            assert held is None, (
                f"holder state for unmounted {spec.target!r} (engine must reconcile)"
            )
            steps.append(KernelMount(spec))
            steps.append(
                HolderChange(
                    spec.target,
                    None,
                    HeldMount(
                        spec.target,
                        spec.source,
                        spec.fstype,
                        render_options(spec.options),
                        made_by_us=True,
                        holders=(holder,),
                        recursive=spec.recursive,
                    ),
                    f"{shown_holder(holder)} acquires {spec.target} (first holder)",
                )
            )
        else:
            differences = _same_mount(spec, record, snap)
            if differences:
                raise InUse(
                    f"{spec.target!r} is already a mount point and it differs from the request: "
                    + "; ".join(differences),
                    value=spec.target,
                )
            if held is None:
                adopted = HeldMount(
                    spec.target,
                    spec.source,
                    spec.fstype,
                    render_options(spec.options),
                    made_by_us=False,
                    mount_id=record.mount_id,
                    holders=(holder,),
                )
                steps.append(
                    HolderChange(
                        spec.target,
                        None,
                        adopted,
                        f"{shown_holder(holder)} shares {spec.target} (mounted outside "
                        "lmi-mount)",
                    )
                )
            else:
                scratch = HolderTable({held.target: held})
                after = scratch.acquire(spec.target, holder)
                steps.append(
                    HolderChange(
                        spec.target,
                        held,
                        after,
                        f"{shown_holder(holder)} shares {spec.target} (reference "
                        f"{after.refcount})",
                    )
                )
    if persist:
        existing = snap.fstab.find_target(spec.target)
        if existing is None:
            _refuse_another_spelling(spec.target, snap)
            steps.append(FstabChange(spec.target, None, spec.fstab_entry()))
        elif not spec.means(existing):
            raise AlreadyExists(
                f"fstab already has a line for {spec.target!r} with spec {existing.spec!r}, "
                f"type {existing.fstype!r}, options {existing.options!r}",
                value=spec.target,
            )
    return Plan("create", tuple(steps))


def _refuse_another_spelling(target: str, snap: Snapshot) -> None:
    """AlreadyExists if a line names ``target``'s directory by another spelling (a
    symlink, ``./``): a second line would mount it twice at boot, as libmount
    reads both (findmnt --verify: "target specified more than once")."""
    for line in snap.fstab.entries():
        other = line.entry.target
        if (other.startswith("/") and normalize_fstab_target(other) != target
                and snap.same_directory(other, target)):
            raise AlreadyExists(
                f"fstab line {line.number} names {other!r}, the same directory as {target!r} "
                "by another spelling: a second line would mount it twice at boot; change "
                "that line instead", value=target)


def _named_line(snap: Snapshot, target: str, spec_name: str | None) -> FstabEntry | None:
    """The first fstab line of mount point ``target`` with the spec ``spec_name``
    (of any spec when None): a reference names its line by both keys, and the
    line of another spec on the same mount point is another mount."""
    if spec_name is None:
        return snap.fstab.find_target(target)
    return snap.fstab.find(spec_name, target) or next(
        (line.entry for line in snap.fstab.entries()
         if normalize_fstab_target(line.entry.target) == normalize_fstab_target(target)
         and snap.same_source(line.entry.spec, spec_name)), None)


def _resolve(
    target: str, spec_name: str | None, snap: Snapshot, *, persist: bool
) -> tuple[MountRecord | None, FstabEntry | None]:
    """The live mount and fstab line a (spec, mount point) reference names.

    The spec may be the fstab spec or the live source (as the user calls it,
    or as the kernel reports it). fstab is read only when the request edits
    it or there is no live mount to act on.
    """
    record = snap.live(target)
    if spec_name is not None and record is not None:
        held = _holders_of(record, snap)
        # Cheapest first: the kernel's source, then the holder record's, then
        # the name the user knows (a bind's origin needs the whole table).
        line = snap.fstab.find_target(target)
        named = (spec_name == record.source
                 or (held is not None and spec_name == held.source)
                 or (line is not None and spec_name == line.spec)
                 or spec_name == snap.source_of(record))
        if not named:
            record = None
    entry = _named_line(snap, target, spec_name) if persist or record is None else None
    if record is None and entry is None:
        what = f"{spec_name!r} on {target!r}" if spec_name else repr(target)
        raise NotFound(f"no mount and no fstab line for {what}", value=target)
    return record, entry


def plan_modify(
    target: str,
    spec_name: str | None,
    options: MountOptions | None,
    snap: Snapshot,
    *,
    current: bool,
    persist: bool,
    dump: int | None = None,
    passno: int | None = None,
) -> Plan:
    """ModifyMount: remount (``current``) and/or replace the fstab line (``persist``).

    ``options`` None is a Goal of NULL, the draft's "defaults": mount(8)'s for
    a file system's own mount; for a bind, no flag named (its origin's, as
    ``mount --bind``), so that a NULL Goal lifts no restriction of its origin.
    """
    if persist:
        numbers = [line.number for line in snap.fstab.entries()
                   if normalize_fstab_target(line.entry.target) == normalize_fstab_target(target)]
        if len(numbers) > 1:
            # Replacing one would leave the others to mean something else at
            # the next boot (mount -a mounts each), whichever the reference names.
            shown = ", ".join(map(str, numbers[:-1])) + f" and {numbers[-1]}"
            raise AlreadyExists(
                f"fstab has {len(numbers)} lines for {target!r} (lines {shown}): one cannot "
                "be replaced alone; remove them (a DeleteMount of the line removes every "
                "line of its spec) and add the one wanted", value=target)
    held = snap.holders.get(target)
    covered = _covered(held, snap) if held is not None else None
    names_held = (held is not None and covered is not None
                  and _names_held(spec_name, held, covered[0], snap))
    if names_held and current:
        assert covered is not None
        raise _covered_error(covered[0].target, covered[1],
                             "a remount by path would change that one")
    if covered is not None and not names_held:
        held = None  # the reference names the mount on top: nobody holds that one
    record, entry = _resolve(target, spec_name, snap, persist=persist)
    if names_held:
        assert covered is not None
        record = covered[0]  # its line alone: judged by the held mount, not the one on top
    steps: list[Step] = []
    # A bind shares its origin's file system: changing that file system's
    # options through it would change every mount of it (refused as at create).
    is_bind = (
        (record is not None and ((held is not None and held.fstype is None)
                                 or snap.table.bind_origin(record) is not None))
        or (persist and entry is not None and MountSpec.from_fstab(entry).fstype is None)
    )
    if options is None:
        options = MountOptions() if is_bind else DEFAULTS
    if is_bind and record is not None:
        # The origin's file system options a bind's own setting shows are no
        # request to change them: that setting is a Goal it takes (a review).
        options = without_fs_options_in_effect(
            options, from_mountinfo(record.vfs_options, record.super_options))
    if is_bind:
        refusal = bind_refusal(options)
        if refusal is not None:
            raise InvalidRequest(refusal, value=render_options(options))
    words = [w for w in options.other_options if w in _BIND_WORDS]
    if words:
        # Said of a bind, its own kind only: what a mount is made as cannot change.
        kind = "rbind" if is_bind and _is_rbind(target, snap, entry, record) else "bind"
        if not is_bind or any(w != kind for w in words):
            what = ("an rbind" if kind == "rbind" else "a bind") if is_bind else "not a bind mount"
            raise InvalidRequest(f"{target} is {what}: ModifyMount cannot make it "
                                 f"{' '.join(sorted(set(words)))}; delete it and create it "
                                 "again", value=",".join(words))
        options = replace(options, other_options=tuple(
            w for w in options.other_options if w not in _BIND_WORDS))
    if current:
        if record is None:
            # The mount point is known (its fstab line): what is wrong is the
            # Mode, which asks for a remount of something not mounted.
            raise InvalidRequest(f"{target!r} is not mounted (only its fstab line exists): "
                                 "nothing to remount; replace the line alone", value=target)
        # Mode 1 remounts to what the new line will mount at the next boot: a
        # file system's own mount is made afresh then, each flag the Goal leaves
        # unnamed at its default; a bind takes its origin's flags and the named
        # ones. A remount alone (32768) changes what the Goal names, and no more.
        goal = options
        if persist and not is_bind:
            goal = with_unnamed_at_defaults(options)
        elif persist:
            origin = _bind_source(target, record, snap)
            if origin is not None:
                goal = with_unnamed_from(options, from_mountinfo(
                    origin[0].vfs_options, origin[0].super_options), per_mount_only=True)
        live = as_it_is = from_mountinfo(record.vfs_options, record.super_options)
        superblock_read_only = record.superblock_read_only
        if superblock_read_only and goal.allow_write is True:
            # Writes through any mount of a read-only file system fail (EROFS),
            # whatever the mount's own flag says: a rw bind of it is not
            # writable, and asking for rw means making the file system writable.
            live = replace(live, allow_write=False)
        # Options already in effect need no remount: a client that states what
        # it wants (Ansible, every run) changes nothing the second time, not
        # even what no remount could change (tmpfs mode=). Any drift, or one
        # the kernel's text cannot rule out, remounts; so does a propagation
        # change, which compare() leaves to the kernel step.
        needed = bool(option_drifts(goal, live, held, record.fstype, snap.selinux)
                      or _propagation_pending(goal, record, snap))
        refusal = remount_refusal(record.fstype, goal, live) if needed else None
        if refusal is not None:
            raise InvalidRequest(refusal, value=target)
        wanted = merge_options(live, goal)
        # A bind remount to rw over a read-only superblock would leave writes failing.
        superblock = remount_needs_superblock(
            live, wanted, superblock_read_only=superblock_read_only
        )
        # mount(8) remounts a file system's own mount (not a bind of it) as a
        # whole: "remount,ro" makes the superblock read-only too.
        # (Whether it is a bind, its holder record says first: the table cannot
        # tell a bind of a whole block device's file system from its own mount.)
        if (goal.allow_write is not None and goal.allow_write != live.allow_write
                and not is_bind):
            superblock = True
        if needed:
            # Undone, the mount gets back its own flags as they are (the read-
            # only superblock made ``live`` say ro for the comparison alone: the
            # undo of a refused rw remount made the mount's own flag ro).
            steps.append(KernelRemount(target, wanted, as_it_is, superblock=superblock,
                                       mount_id=record.mount_id))
        # The copies get what the Goal names only: their flags are their own
        # (an rbind's creation gave them no more), not the top's origin's.
        steps += _submount_remounts(target, record, options, snap, entry)
        # The holder record changes with the mount only (one that changed
        # without a remount would say the mount is what the kernel does not
        # show), except in Mode 1: the mount is what the new line says then,
        # remounted or not, and so is the record.
        if needed or goal is not options:
            # Mode 1 asks for what the new line says; a remount alone for what
            # the mount was asked before, with what the Goal names.
            asked = (None if held is None else options if goal is not options
                     else asked_after_remount(parse_options(held.options, strict=False), goal))
            if held is not None and asked is not None and not same_meaning(
                    parse_options(held.options, strict=False), asked):
                after = replace(held, options=render_options(asked),
                                generation=held.generation + 1)
                steps.append(
                    HolderChange(target, held, after, f"{target} options now {after.options}")
                )
    if persist:
        if entry is None:
            raise InvalidRequest(f"fstab has no line for {target!r} (it is mounted only): "
                                 "nothing to replace; remount it alone, or add a line",
                                 value=target)
        old = MountSpec.from_fstab(entry)
        new = replace(
            old,
            options=options,
            # A Goal's Dump is a boolean: a line's 2 stays 2 while it is asked
            # to be dumped, not rewritten as 1. A number no line may be
            # written with (negative: libmount reads one) is not kept: the
            # Goal's, or 0 when it names none.
            dump=(old.dump if old.dump >= 0 and (dump is None or bool(dump) == bool(old.dump))
                  else dump if dump is not None else 0),
            passno=(passno if passno is not None
                    else old.passno if old.passno >= 0 else 0),
        )
        replacement = new.fstab_entry(existing=entry)
        if replacement != entry:
            steps.append(FstabChange(target, entry, replacement,
                                     was=_raw_of(snap.fstab, [entry])))
    return Plan("modify", tuple(steps))


def _propagation_pending(options: MountOptions, record: MountRecord, snap: Snapshot) -> bool:
    """Whether the propagation ``options`` name is not in effect on ``record`` (and,
    for ``rshared`` and the like, on every mount below it). mountinfo says it;
    the one-mount read (statmount) does not."""
    propagation = kernel_request(options).propagation
    if not propagation:
        return False
    shown = snap.table.by_id.get(record.mount_id)
    if shown is None:
        return True
    below = snap.table.descendants(shown) if propagation & ms.MS_REC else []
    return not all(propagation_holds(propagation, r) for r in [shown, *below])


def _is_rbind(target: str, snap: Snapshot, entry: FstabEntry | None,
              record: MountRecord | None) -> bool:
    """Whether the bind ``record`` on ``target`` is an rbind: one we made so, or,
    not ours, one whose fstab line says so (mountinfo cannot tell)."""
    held = _holders_of(record, snap) if record is not None else snap.holders.get(target)
    if held is not None:
        return held.recursive
    line = entry if entry is not None else snap.fstab.find_target(target)
    return line is not None and MountSpec.from_fstab(line).recursive


def _submount_remounts(target: str, record: MountRecord, options: MountOptions,
                       snap: Snapshot, entry: FstabEntry | None) -> list[Step]:
    """The remounts that give an rbind's submounts the per-mount flags ``options``
    name, as its creation did, lifting none beyond the mount each copies: each
    from its own flags, parents first, its file system left alone. Without them a read-only
    tree kept writable holes. Propagation is the top's to give (``rslave``
    reaches the submounts by itself)."""
    if not _is_rbind(target, snap, entry, record):
        return []
    # The copies are the mounts below it that stand where a mount of its
    # source stands, of the same file system and directory: a mount made
    # under the rbind since is someone else's. The lower mounts of a stack no
    # path reaches (nor this remount, which goes by path) are left as made.
    table = snap.table
    origin = _bind_source(target, record, snap)
    if origin is None:
        return []
    source = origin[1]
    originals = {(_below(r.target, source), r.major, r.minor, r.root): r
                 for r in table.under(source)}
    per_mount = without_propagation(options)
    steps: list[Step] = []
    for sub in table.descendants(record):
        original = originals.get((_below(sub.target, record.target), sub.major, sub.minor,
                                  sub.root))
        if (not table.is_visible(sub) or original is None
                # One with holders or a line of its own was mounted there since.
                or sub.target in snap.holders or snap.fstab.find_target(sub.target)):
            continue
        # What the Goal lifts goes no further than the mount it copies.
        wanted = lifting_no_further_than(per_mount, from_mountinfo(
            original.vfs_options, original.super_options))
        live = from_mountinfo(sub.vfs_options, sub.super_options)
        if option_drifts(wanted, live, None, sub.fstype, snap.selinux):
            steps.append(KernelRemount(sub.target, merge_options(live, wanted), live,
                                       superblock=False, mount_id=sub.mount_id))
    return steps


def _bind_source(target: str, record: MountRecord,
                 snap: Snapshot) -> tuple[MountRecord, str] | None:
    """The mount a bind on ``target`` was made from and the source directory: the
    holder record's source where we made it (the table's guess by device and
    root takes a bind of a whole memory file system for its first mount), else
    ``MountTable.bind_origin``."""
    held = _holders_of(record, snap)
    if held is not None and held.fstype is None and held.source.startswith("/"):
        source = normalize_target(held.source)
        found = snap.table.containing(source)
        if found is not None and (found.major, found.minor) == (record.major, record.minor):
            return found, source
    return snap.table.bind_origin(record)


def _below(path: str, top: str) -> str:
    """``path`` relative to ``top`` (``/sub`` of ``/a/sub`` below ``/a``)."""
    return path if top == "/" else path[len(top):]


def _place(document: FstabDocument, number: int, before: str | None) -> int:
    """Where a line that stood at ``number`` after the raw line ``before`` goes back
    in ``document``: after the copy of ``before`` nearest to where it was."""
    if before is None:
        return 1
    if before == UNKNOWN_BEFORE:
        return number
    lines = document.render().split("\n")
    found = [at for at, line in enumerate(lines, 1) if line == before]
    if not found:
        return number
    return min(found, key=lambda at: abs(at - (number - 1))) + 1


def _raw_of(document: FstabDocument, entries: list[FstabEntry]) -> tuple[RawLine, ...]:
    """Where ``entries`` stand in ``document``, their raw text and the raw line
    before each, in that order (the first line of each); () unless every one
    is found."""
    found: list[RawLine] = []
    lines = document.entries()
    for entry in entries:
        where = next((line for line in lines if line.entry == entry
                      and all(line.number != raw[0] for raw in found)), None)
        if where is None:
            return ()
        before = document.line(where.number - 1) if where.number > 1 else None
        found.append((where.number, where.text, before))
    return tuple(found)


def plan_delete(
    target: str,
    spec_name: str | None,
    snap: Snapshot,
    *,
    current: bool,
    persist: bool,
    holder: str,
    force: bool = False,
    lazy: bool = False,
    release_only: bool = False,
) -> Plan:
    """DeleteMount: release or unmount (``current``) and/or remove the fstab line (``persist``).

    A held mount loses one reference of ``holder``; the kernel unmount happens
    only when the last reference is gone and the hold time is 0 (otherwise the
    engine's timer does it later). ``force`` drops every holder and unmounts
    now. A mount lmi-mount did not make is never unmounted by a release, only
    by an explicit delete of an untracked mount or by ``force``.
    ``release_only``: the caller named ``holder`` and asks to release its
    reference, so a mount nobody holds is refused, not unmounted (it may
    have been made at the holders' mount point after their mount went).
    """
    held = snap.holders.get(target)
    moved = _moved(held, snap) if held is not None and current else None
    covered = _covered(held, snap) if held is not None and current else None
    record: MountRecord | None
    hidden = False
    hider: MountRecord | None = None
    if moved is not None:
        # A held mount whose mount point was renamed is still the holders':
        # their references (named by the old path) release it where it is,
        # whatever has been mounted on the old path since.
        record, entry = moved, (_named_line(snap, target, spec_name) if persist else None)
    elif held is not None and covered is not None and _names_held(spec_name, held,
                                                                   covered[0], snap):
        # Someone mounted over the held mount: the reference still names it,
        # under the mount on top, which is not ours to release.
        record, entry = covered[0], (_named_line(snap, target, spec_name) if persist else None)
        hidden, hider = True, covered[1]
    else:
        record, entry = _resolve(target, spec_name, snap, persist=persist)
        if covered is not None:
            held = None  # the reference names the mount on top: nobody holds that one
    steps: list[Step] = []
    if current:
        if record is None:
            if not persist:
                raise InvalidRequest(f"{target!r} is not mounted (only its fstab line "
                                     "exists): nothing to unmount; remove the line alone",
                                     value=target)
        else:
            if held is None and release_only and not force:
                raise InUse(f"{holder!r} holds no reference to {target!r}: nobody does (it "
                            "was mounted outside lmi-mount, or made there after its holders' "
                            "mount went); nothing done. Ask without naming a holder to "
                            "unmount it", value=holder)
            steps.extend(_release_steps(target, record, held, snap, holder=holder,
                                        force=force, lazy=lazy))
            if hidden and any(isinstance(s, KernelUnmount) for s in steps):
                raise _covered_error(record.target, hider)
    if persist:
        if entry is None:
            if not current:
                raise InvalidRequest(f"fstab has no line for {target!r} (it is mounted "
                                     "only): nothing to remove; unmount it alone",
                                     value=target)
        else:
            # The fstab edit goes before the unmount: a busy unmount then rolls
            # back by restoring the file, which cannot fail the way a remount can.
            position = next(
                (i for i, s in enumerate(steps) if isinstance(s, KernelUnmount)), len(steps)
            )
            # Every line of the named mount goes, whatever its spelling of the
            # mount point (another would mount it at boot), recorded so that an
            # undo puts every one back. A line of another spec there is
            # another mount (mount -a stacks them: an overlay on its own
            # lower directory): it stays, unless the reference named the
            # mount point alone.
            here = [line.entry for line in snap.fstab.entries()
                    if normalize_fstab_target(line.entry.target) == normalize_fstab_target(target)]
            lines = [line for line in here if spec_name is None or line.spec == entry.spec
                     or snap.same_source(line.spec, entry.spec)] or [entry]
            steps.insert(position, FstabChange(target, lines[0], None, tuple(lines[1:]),
                                               was=_raw_of(snap.fstab, lines)))
            notes = tuple(f"note: kept line '{line.render()}' (another source on this "
                          "mount point)" for line in here if line not in lines)
            return Plan("delete", tuple(steps), notes)
    return Plan("delete", tuple(steps))


def _release_steps(
    target: str, record: MountRecord, held: HeldMount | None, snap: Snapshot, *, holder: str,
    force: bool, lazy: bool,
) -> list[Step]:
    """Release ``holder``'s reference to the mount held as ``target`` (``record``
    is that mount, on ``target`` or, renamed, elsewhere; ``held`` its holder
    record, None for a mount nobody holds)."""
    # An rbind of ours brings submounts; releasing it takes them along
    # (umount -R), where any other mount is refused while something is on it.
    recursive = bool(held is not None and held.made_by_us and held.recursive)
    unmount = KernelUnmount(record.target, lazy=lazy, remount=_live_spec(record, snap),
                            mount_id=record.mount_id, recursive=recursive)
    if held is None:
        return [unmount]
    if force:
        return [
            HolderChange(target, held, None, f"force: drop all {held.refcount} holder(s)"),
            unmount,
        ]
    if not held.holders:
        # Every holder has gone and the hold timer will unmount it: a release
        # has nothing left to do (asking twice is not an error).
        return []
    scratch = HolderTable({held.target: held})
    try:
        after = scratch.release(target, holder, now=snap.now, hold_seconds=snap.hold_seconds)
    except HolderError as exc:
        raise InUse(str(exc), value=holder) from exc
    left = f"{after.refcount} left"
    if not after.holders and after.made_by_us and snap.hold_seconds > 0:
        left += (f"; the hold timer unmounts it in {snap.hold_seconds:g} s unless it is "
                 "taken again")
    steps: list[Step] = [HolderChange(target, held, after,
                                      f"{shown_holder(holder)} releases {target} ({left})")]
    if after.holders:
        return steps
    if not after.made_by_us:
        steps.append(
            HolderChange(
                target, after, None, f"stop tracking {target} (mounted outside lmi-mount: kept)"
            )
        )
    elif snap.hold_seconds <= 0:
        steps += [unmount, HolderChange(target, after, None, f"{target} released")]
    return steps


def _moved(held: HeldMount, snap: Snapshot) -> MountRecord | None:
    """Where the held mount is now if its mount point was renamed, else None.

    Found by its unique id (or its id: an id is not reused while its mount
    lives), checked against what was held.
    """
    if held.mount_id is None:
        return None
    now = snap.find(held)
    if now is None or now.target == held.target:
        return None
    if held.fstype is not None and now.fstype != held.fstype:
        return None
    if not _same_unique(held, now.target, snap.identity):
        return None  # the id was given to another mount since
    return now


def _covered(held: HeldMount,
             snap: Snapshot) -> tuple[MountRecord, MountRecord | None] | None:
    """(the held mount, the mount its path reaches instead) when another mount
    hides the held one: made over it, at its mount point or, renamed, where it
    is now (the mount on top), or over a directory above it (None: the path
    reaches no mount point). Else None.

    Hidden is not gone: the held mount lives on under the other, found by its
    unique id (by its id and type without unique ids, then only under a mount
    at its own mount point: an id alone may be a later mount's), and comes
    back when that one goes.
    """
    if held.mount_id is None:
        return None
    top = snap.live(held.target)
    if top is not None and top.mount_id == held.mount_id:
        return None  # on top where it was made: the usual case, one read
    if top is None and held.unique_id is None:
        return None
    now = snap.find(held)
    if now is None or (held.fstype is not None and now.fstype != held.fstype):
        return None
    if now.target != held.target:
        if held.unique_id is None:
            return None
        top = snap.live(now.target)  # renamed (``_moved``): hidden there?
    if top is not None and top.mount_id == now.mount_id:
        return None
    return now, top


def _names_held(spec_name: str | None, held: HeldMount, record: MountRecord,
                snap: Snapshot) -> bool:
    """Whether a reference by ``spec_name`` (None: any) names the held mount
    ``record``, as ``_resolve`` would if it were on top."""
    if spec_name is None or spec_name in (held.source, record.source):
        return True
    line = snap.fstab.find_target(held.target)
    return line is not None and spec_name == line.spec


def _covered_error(target: str, top: MountRecord | None,
                   why: str = "the mount under it cannot be unmounted until that one is") -> InUse:
    hider = ("is hidden by a mount made over a directory above it" if top is None else
             f"is covered by another mount ({top.source!r}, type {top.fstype}, mount id "
             f"{top.mount_id})")
    return InUse(f"{target!r} {hider}, that lmi-mount did not make, over the one its holders "
                 f"hold: {why}; nothing done", value=target)


def _holders_of(record: MountRecord, snap: Snapshot) -> HeldMount | None:
    """The holder record of the live ``record``: none when the one at its mount
    point is of another mount (one it covers)."""
    held = snap.holders.get(record.target)
    if held is None or held.mount_id not in (None, record.mount_id):
        return None
    return held


def _is_held_mount(held: HeldMount, record: MountRecord, snap: Snapshot) -> bool:
    """Whether the live ``record`` is the mount ``held`` describes (ids are reused
    at once: the unique id decides where the kernel has one)."""
    if held.mount_id is not None and record.mount_id != held.mount_id:
        return False
    if held.unique_id is not None and record.unique_id is not None:
        return record.unique_id == held.unique_id  # read by statmount: no lookup again
    return _same_unique(held, record.target, snap.identity)


def _same_unique(held: HeldMount, path: str,
                 identity: Callable[[str], tuple[int, int | None] | None]) -> bool:
    """Whether the mount at ``path`` is the held one by the kernel's never-reused id
    (mount ids are reused at once); True where either side does not know it."""
    if held.unique_id is None:
        return True
    found = identity(path)
    return found is None or found[1] is None or found[1] == held.unique_id


def plan_expire(target: str, generation: int, snap: Snapshot) -> Plan:
    """The hold timer of ``target`` (armed at ``generation``) fired: unmount if still due."""
    held = snap.holders.get(target)
    if (
        held is None
        or held.generation != generation
        or held.holders
        or not held.made_by_us
        or held.release_at is None
        or held.release_at > snap.now
    ):
        return Plan("expire")
    moved = _moved(held, snap)
    if moved is not None:
        # Its mount point was renamed: it is still ours, and still due.
        return Plan("expire", (
            KernelUnmount(moved.target, lazy=False, remount=None,
                          mount_id=moved.mount_id, recursive=held.recursive),
            HolderChange(target, held, None,
                         f"hold time of {target} ended (now on {moved.target})"),
        ))
    covered = _covered(held, snap)
    if covered is not None:
        raise _covered_error(covered[0].target, covered[1])  # the timer tries again later
    record = snap.live(target)
    if record is None or not _is_held_mount(held, record, snap):
        return Plan("expire", (HolderChange(target, held, None, f"{target} already unmounted"),))
    return Plan(
        "expire",
        (
            KernelUnmount(target, lazy=False, remount=_live_spec(record, snap),
                          mount_id=record.mount_id, recursive=held.recursive),
            HolderChange(target, held, None, f"hold time of {target} ended"),
        ),
    )


def plan_reconcile(snap: Snapshot, targets: Iterable[str] | None = None) -> Plan:
    """Forget held mounts whose kernel mount vanished or was replaced (WI6).

    ``targets`` limits the check to the mounts a request is about: a plan
    depends on its own target's state only, and the others are reconciled
    when a request or a read touches them.
    """
    steps: list[Step] = []
    if targets is None:
        checked = list(snap.holders)
    else:
        checked = [h for h in (snap.holders.get(t) for t in targets) if h is not None]
    for held in checked:
        record = snap.live(held.target)
        if _moved(held, snap) is not None or _covered(held, snap) is not None:
            # Renamed or covered, not gone: still tracked (its holders and
            # timer find it).
            continue
        if record is None:
            steps.append(HolderChange(held.target, held, None, f"{held.target} vanished"))
        elif not _is_held_mount(held, record, snap):
            steps.append(
                HolderChange(
                    held.target, held, None, f"{held.target} was replaced by another mount"
                )
            )
    return Plan("reconcile", tuple(steps))


def asked_after_remount(before: MountOptions, goal: MountOptions) -> MountOptions:
    """What a mount asked as ``before`` and remounted with ``goal`` is asked to be
    (its holder record): ``before`` with what ``goal`` names, as the remount
    changes the mount (``merge_options``). A flag the goal names replaces it;
    so does the atime mode; a file system option replaces the one of the same
    name, a propagation word the earlier one, a flag word both its spellings."""
    changes: dict[str, bool | None] = {
        name: value for name, value in effective_fields(goal).items()
        if name in BOOLEAN_FIELDS and name not in ATIME_FIELDS}
    if any(getattr(goal, name) is not None for name in ATIME_FIELDS):
        changes.update({name: getattr(goal, name) for name in ATIME_FIELDS})
    named = {option.partition("=")[0] for option in goal.other_options}
    propagation = any(is_propagation(option) for option in goal.other_options)
    kept = tuple(
        option for option in before.other_options
        if option.partition("=")[0] not in named
        and not (propagation and is_propagation(option))
        and not _FLAG_WORD_PAIRS.get(option, frozenset()) & named
    )
    return replace(before, other_options=kept + goal.other_options, **changes)


# Each MS_* option word and the pair it belongs to ("lazytime" -> both spellings).
_FLAG_WORD_PAIRS: Final = {
    word: frozenset({set_name, clear_name}) - {""}
    for _, set_name, clear_name in ms.FLAG_OPTION_NAMES
    for word in (set_name, clear_name)
    if word
}


_ATIME_MODES: Final = {
    "noatime": {"update_access_times": False, "update_relative_access_times": False,
                "update_full_access_times": False},
    "relatime": {"update_access_times": True, "update_relative_access_times": True,
                 "update_full_access_times": False},
    "strictatime": {"update_access_times": True, "update_relative_access_times": False,
                    "update_full_access_times": True},
}


def merge_options(live: MountOptions, goal: MountOptions) -> MountOptions:
    """``live`` with every field ``goal`` specifies; fs-specific options are the goal's.

    A remount passes only the requested file system options: the kernel keeps
    the others (mount(8), "remount"). Flags the live mount has as option
    words (``lazytime``, ``nosymfollow``) are kept unless the goal names
    them: a superblock remount resets every flag it is not given (mount(2)).
    """
    # The fields user/users/owner/group imply count as named (mount(8) reads
    # "user" as nosuid,nodev,noexec): a remount to "ro,user" must apply them.
    effective = effective_fields(goal)
    changes = {name: effective[name] for name in BOOLEAN_FIELDS if name in effective}
    # The three atime fields are one kernel mode: a remount that names one
    # changes the mode as path_mount() reads the flags (strictatime, else
    # noatime, else relatime), and one that names none keeps it. Merging them
    # field by field gave "noatime + relatime" asks that the kernel reads as
    # noatime (found by the mount(8) differential test).
    if goal.update_full_access_times is True:
        changes.update(_ATIME_MODES["strictatime"])
    elif goal.update_access_times is False:
        changes.update(_ATIME_MODES["noatime"])
    elif goal.update_relative_access_times is True:
        changes.update(_ATIME_MODES["relatime"])
    elif goal.update_access_times is True and live.update_access_times is False:
        changes.update(_ATIME_MODES["relatime"])  # "atime": the default mode, not noatime
    else:
        for name in _ATIME_MODES["relatime"]:
            changes.pop(name, None)
    named = set(goal.other_options)
    kept = tuple(
        option for option in live.other_options
        if option in _FLAG_WORD_PAIRS and not _FLAG_WORD_PAIRS[option] & named
    )
    return replace(live, other_options=kept + goal.other_options, **changes)


# -- steps as records ----------------------------------------------------------------
#
# A plan is journaled before its first step (the engine's transaction), so a
# restart after kill -9 can undo what it had done. Records are plain JSON
# values; every field round-trips exactly (options field by field, not as an
# option string, because live options need not be valid configured ones).


def _options_record(options: MountOptions) -> dict[str, Any]:
    record: dict[str, Any] = {name: getattr(options, name) for name in BOOLEAN_FIELDS}
    record["other_options"] = list(options.other_options)
    return record


def _options_from(record: dict[str, Any]) -> MountOptions:
    values = {name: record[name] for name in BOOLEAN_FIELDS}
    return MountOptions(**values, other_options=tuple(record["other_options"]))


def _spec_record(spec: MountSpec | None) -> dict[str, Any] | None:
    if spec is None:
        return None
    return {"source": spec.source, "target": spec.target, "fstype": spec.fstype,
            "options": _options_record(spec.options), "recursive": spec.recursive,
            "dump": spec.dump, "passno": spec.passno, "kernel_source": spec.kernel_source}


def _spec_from(record: dict[str, Any] | None) -> MountSpec | None:
    if record is None:
        return None
    return MountSpec(record["source"], record["target"], record["fstype"],
                     _options_from(record["options"]), record["recursive"], record["dump"],
                     record["passno"], record.get("kernel_source"))


def _entry_record(entry: FstabEntry | None) -> list[Any] | None:
    if entry is None:
        return None
    return [entry.spec, entry.target, entry.fstype, entry.options, entry.freq, entry.passno]


def _entry_from(record: list[Any] | None) -> FstabEntry | None:
    # As the line was read: one libmount accepts (no options, a negative
    # passno) is the journal's to replay too, not an unreadable record.
    return None if record is None else FstabEntry.read(*record)


def _held_record(held: HeldMount | None) -> dict[str, Any] | None:
    if held is None:
        return None
    return {"target": held.target, "source": held.source, "fstype": held.fstype,
            "options": held.options, "made_by_us": held.made_by_us,
            "mount_id": held.mount_id, "unique_id": held.unique_id,
            "holders": list(held.holders), "recursive": held.recursive}


def _held_from(record: dict[str, Any] | None) -> HeldMount | None:
    if record is None:
        return None
    return HeldMount(record["target"], record["source"], record["fstype"], record["options"],
                     record["made_by_us"], record["mount_id"], record["unique_id"],
                     tuple(record["holders"]), recursive=bool(record.get("recursive", False)))


def step_record(step: Step) -> dict[str, Any]:
    """``step`` as a JSON value (``step_from_record`` reads it back)."""
    if isinstance(step, KernelMount):
        return {"step": "mount", "spec": _spec_record(step.spec)}
    if isinstance(step, KernelRemount):
        return {"step": "remount", "target": step.target,
                "options": _options_record(step.options),
                "previous": _options_record(step.previous), "superblock": step.superblock,
                "mount_id": step.mount_id}
    if isinstance(step, KernelUnmount):
        return {"step": "unmount", "target": step.target, "lazy": step.lazy,
                "remount": _spec_record(step.remount), "mount_id": step.mount_id,
                "recursive": step.recursive}
    if isinstance(step, FstabChange):
        return {"step": "fstab", "target": step.target,
                "previous": _entry_record(step.previous), "entry": _entry_record(step.entry),
                "also": [_entry_record(line) for line in step.also],
                "was": [list(line) for line in step.was],
                "restore": [list(line) for line in step.restore]}
    return {"step": "holders", "target": step.target, "before": _held_record(step.before),
            "after": _held_record(step.after), "summary": step.summary}


def _raw_lines(value: Any) -> tuple[RawLine, ...]:
    """The (line number, raw text, raw line before) triples of a record;
    ValueError if malformed."""
    # An earlier record kept (number, text) pairs: placed by number then.
    lines = tuple((raw[0], raw[1], raw[2] if len(raw) == 3 else UNKNOWN_BEFORE)
                  for raw in value)
    if not all(type(n) is int and n >= 1 and isinstance(t, str) and "\n" not in t
               and (b is None or b == UNKNOWN_BEFORE or (isinstance(b, str) and "\n" not in b))
               for n, t, b in lines):
        raise ValueError(f"raw fstab lines {value!r} are not (number, text, before) triples")
    return lines


def step_from_record(record: dict[str, Any]) -> Step:
    """The step a ``step_record`` value describes; KeyError/TypeError/ValueError if malformed."""
    kind = record["step"]
    if kind == "mount":
        spec = _spec_from(record["spec"])
        if spec is None:
            raise ValueError("a mount step without a spec")
        return KernelMount(spec)
    if kind == "remount":
        return KernelRemount(record["target"], _options_from(record["options"]),
                             _options_from(record["previous"]), bool(record["superblock"]),
                             record.get("mount_id"))
    if kind == "unmount":
        return KernelUnmount(record["target"], bool(record["lazy"]),
                             _spec_from(record["remount"]), record.get("mount_id"),
                             bool(record.get("recursive", False)))
    if kind == "fstab":
        also = tuple(_entry_from(line) for line in record.get("also", ()))
        return FstabChange(record["target"], _entry_from(record["previous"]),
                           _entry_from(record["entry"]),
                           tuple(line for line in also if line is not None),
                           was=_raw_lines(record.get("was", ())),
                           restore=_raw_lines(record.get("restore", ())))
    if kind == "holders":
        return HolderChange(record["target"], _held_from(record["before"]),
                            _held_from(record["after"]), str(record["summary"]))
    raise ValueError(f"unknown step kind {kind!r}")
