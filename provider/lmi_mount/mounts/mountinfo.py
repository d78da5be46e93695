"""The kernel's mount table: ``/proc/<pid>/mountinfo`` text -> records, and questions about it.

Owns: the proc(5) mountinfo line format (every field, any number of optional
fields, the kernel's octal escapes), the records it yields, and the questions
the engine asks of one snapshot of the table: which mount is visible at a
path, what is stacked there, what lies below a path, and what a user would
call a mount's source (the directory a bind mount was made from, the image
file behind a loop device).

Must not know: how the text was read or where sysfs is (the loop device
lookup is an injected callable), mount options' meaning (``options``), CIM.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, fields, make_dataclass
from typing import Final

from lmi_mount.mounts.escaping import split_options, unescape_field
from lmi_mount.mounts.flags import MS_PRIVATE, MS_SHARED, MS_SLAVE, MS_UNBINDABLE
from lmi_mount.text import is_decimal

__all__ = ["MountRecord", "MountTable", "MountinfoError", "MountinfoParser", "parse_mountinfo"]


class MountinfoError(ValueError):
    """A mountinfo line that does not follow proc(5); names the line number and the line."""

    def __init__(self, lineno: int, line: str, reason: str) -> None:
        super().__init__(f"mountinfo line {lineno}: {reason}: {line!r}")
        self.lineno = lineno
        self.line = line
        self.reason = reason


# Tagged optional fields the kernel prints (fs/proc_namespace.c, show_mountinfo();
# Documentation/filesystems/sharedsubtree.rst). Anything else is kept in
# ``optional_fields`` but is not propagation.
_PROPAGATION_TAGS: Final = ("shared:", "master:", "propagate_from:")


@dataclass(frozen=True, slots=True)
class MountRecord:
    """One line of mountinfo, fields in proc(5) order, escapes decoded.

    ``root`` is the directory of the file system that is mounted (``/`` for the
    whole file system, a subdirectory for a bind mount of it), ``target`` the
    mount point. ``vfs_options`` are the per-mount options (the mount's own
    ``ro``/``rw``), ``super_options`` the file system's (its ``ro``/``rw``
    first, then the superblock flags and the file system's own options).
    Options are split on commas and each element is decoded: the kernel
    escapes a comma inside an option value as ``\\054`` (seq_show_option()).
    """

    mount_id: int
    parent_id: int
    major: int
    minor: int
    root: str
    target: str
    vfs_options: tuple[str, ...]
    optional_fields: tuple[str, ...]
    fstype: str
    source: str
    super_options: tuple[str, ...]
    #: The never-reused mount id (Linux 6.8) where the record came from
    #: statmount(2); None from mountinfo, which does not show it. Not compared:
    #: the same mount read either way is the same record.
    unique_id: int | None = field(default=None, compare=False)

    @property
    def device(self) -> str:
        """``major:minor`` of the file system (st_dev of its files)."""
        return f"{self.major}:{self.minor}"

    @property
    def superblock_read_only(self) -> bool:
        """Whether the file system itself is read-only: the superblock's ro/rw is
        the first super option (proc(5)), whatever this mount's own flag says."""
        return self.super_options[:1] == ("ro",)

    @property
    def propagation(self) -> str:
        """The propagation tags, space separated (``shared:3 master:1``), or ``private``.

        A mount is private when the kernel prints no tag for it; a slave of a
        shared peer group shows both ``shared:N`` and ``master:M``.
        """
        tags = [
            field
            for field in self.optional_fields
            if field == "unbindable" or field.startswith(_PROPAGATION_TAGS)
        ]
        return " ".join(tags) if tags else "private"


# A frozen dataclass's generated __init__ must get past its own __setattr__, so
# it sets every field with a call to object.__setattr__: for a 10k-line table
# that was half the parse time. The parser builds records as this mutable twin
# instead, generated from MountRecord's own fields (the two cannot diverge),
# and then gives each its real class. The layouts are identical (the same
# slots, no __dict__), which is what __class__ assignment requires; the
# result is a true, frozen MountRecord.
_MutableRecord: Final = make_dataclass(
    "_MutableRecord",
    [(f.name, f.type) for f in fields(MountRecord)],
    slots=True,
    eq=False,
    repr=False,
    match_args=False,
)


# One line: "ID PARENT MAJ:MIN ROOT TARGET VFS-OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER".
# The kernel separates fields by exactly one space and escapes space, tab,
# newline and backslash inside them (mangle(), seq_path_root(), seq_dentry()),
# so a field never holds a raw space. The source may be empty (a mount made
# with an empty device name); nothing else may. Numbers are at most 20 ASCII
# digits: ids are printed with %i, the device with %u:%u (show_mountinfo()),
# and the bound keeps int() far from its digit limit on hostile input. The
# first field that is exactly "-" ends the optional fields (proc(5)).
_LINE_RE: Final = re.compile(
    r"(\d{1,20}) (\d{1,20}) (\d{1,20}):(\d{1,20})"
    r" ([^ ]+) ([^ ]+) ([^ ]+)((?: (?!- )[^ ]+)*)"
    r" - ([^ ]+) ([^ ]*) ([^ ]+)",
    re.ASCII,
)


def _diagnose(line: str) -> str:
    """Say why ``line`` is not a mountinfo line (slow path, errors only)."""
    words = line.split(" ")
    if "-" not in words[6:]:
        return "no ' - ' separator after the sixth field"
    sep = words.index("-", 6)
    if len(words) - sep != 4:
        return f"expected 3 fields after ' - ', found {len(words) - sep - 1}"
    for name, text in (("mount id", words[0]), ("parent id", words[1])):
        if not is_decimal(text):
            return f"{name} {text!r} is not a decimal number"
    major, colon, minor = words[2].partition(":")
    if not colon or not all(is_decimal(p) for p in (major, minor)):
        return f"device {words[2]!r} is not MAJOR:MINOR"
    return "an empty or malformed field"


def parse_mountinfo(text: str) -> list[MountRecord]:
    """Parse mountinfo ``text`` into records, in the kernel's order.

    The kernel lists a namespace's mounts in creation order (since Linux 6.8
    the namespace keeps them in a tree ordered by their 64-bit unique mount
    id; before, in the list order they were attached in, fs/namespace.c),
    and ``MountTable`` relies on it. Lines are split on ``\\n`` only: a carriage return or
    form feed in a path is not escaped by the kernel and belongs to the field.
    Empty lines are skipped; any other malformed line raises MountinfoError.
    """
    return _parse(text, {}, None)


def _parse(text: str, known: Mapping[str, MountRecord],
           keep: dict[str, MountRecord] | None) -> list[MountRecord]:
    """``parse_mountinfo``; a line in ``known`` is its record there (a record is
    a function of its line alone), and ``keep``, if given, gets every line's."""
    records: list[MountRecord] = []
    append = records.append
    reuse = known.get
    match = _LINE_RE.fullmatch
    # Options fields and small numbers repeat a lot (10k bind mounts of one
    # tmpfs share one parent, one device and two option strings): each
    # distinct text is split or converted once.
    options: dict[str, tuple[str, ...]] = {}
    numbers: dict[str, int] = {}
    for lineno, line in enumerate(text.split("\n"), 1):
        if not line:
            continue
        seen = reuse(line)
        # A line a torn read repeats is two records, as in a fresh parse
        # (``MountTable`` tells a table's own record of an id by identity).
        if seen is not None and (keep is None or line not in keep):
            append(seen)
            if keep is not None:
                keep[line] = seen
            continue
        m = match(line)
        if m is None:
            raise MountinfoError(lineno, line, _diagnose(line))
        mount_id, parent, major, minor, root, target, vfs, tagged, fstype, source, sup = m.groups()
        parent_id = numbers.get(parent)
        if parent_id is None:
            parent_id = numbers[parent] = int(parent)
        major_n = numbers.get(major)
        if major_n is None:
            major_n = numbers[major] = int(major)
        minor_n = numbers.get(minor)
        if minor_n is None:
            minor_n = numbers[minor] = int(minor)
        vfs_options = options.get(vfs)
        if vfs_options is None:
            vfs_options = options[vfs] = _split_options(vfs)
        super_options = options.get(sup)
        if super_options is None:
            super_options = options[sup] = _split_options(sup)
        if "\\" in line:
            root = unescape_field(root)
            target = unescape_field(target)
            fstype = unescape_field(fstype)
            source = unescape_field(source)
        built = _MutableRecord(
            int(mount_id),
            parent_id,
            major_n,
            minor_n,
            root,
            target,
            vfs_options,
            tuple(tagged[1:].split(" ")) if tagged else (),
            fstype,
            source,
            super_options,
            None,
        )
        built.__class__ = MountRecord
        append(built)
        if keep is not None:
            keep[line] = built
    return records


class MountinfoParser:
    """``parse_mountinfo`` that keeps the records of the table it read last.

    Between two reads of a namespace's table most lines are unchanged (a
    request mounts or unmounts one), so each read parses only the lines that
    are new (at 2,000 mounts a read after a change takes two thirds of the
    time of a fresh parse; most of the rest is the kernel formatting the
    text). Safe to share between threads: a parse reads the last map and
    replaces it whole.
    """

    def __init__(self) -> None:
        self._last: Mapping[str, MountRecord] = {}

    def parse(self, text: str) -> list[MountRecord]:
        """``parse_mountinfo(text)``, reusing the records of the last parse."""
        lines: dict[str, MountRecord] = {}
        records = _parse(text, self._last, lines)
        self._last = lines
        return records


def _split_options(text: str) -> tuple[str, ...]:
    options = split_options(text)
    if "\\" not in text:
        return tuple(options)
    return tuple(unescape_field(option) for option in options)


def _is_at_or_below(path: str, top: str) -> bool:
    """True when ``path`` is ``top`` or inside it (``top`` normalized, no trailing slash)."""
    return path == top or path.startswith(top + "/") or top == "/"


def _ancestors(path: str) -> Iterator[str]:
    """``path`` and its parent directories up to ``/`` (``/a/b``: ``/a/b``, ``/a``, ``/``)."""
    while True:
        yield path
        if path == "/" or "/" not in path:
            return
        path = path.rsplit("/", 1)[0] or "/"


#: The family of a mount nothing is mounted on.
_NO_FAMILY: Final = (False, frozenset[int]())


# /dev/loopN and nothing else: a partition of a loop device (/dev/loop0p1) is
# not its backing file, and the loop-control node is no block device.
_LOOP_DEVICE_RE: Final = re.compile(r"/dev/loop[0-9]+", re.ASCII)


class MountTable:
    """One snapshot of the mount table, indexed for the engine's questions.

    Records keep the order they were given in (the kernel's, creation order,
    see ``parse_mountinfo``). Mount ids are unique within one consistent read;
    should a torn read repeat an id, ``by_id`` holds the later record, and a
    mount's visibility is worked out along the parents ``by_id`` gives
    (whatever order the questions come in).
    """

    __slots__ = ("_by_id", "_by_target", "_children", "_families", "_origins", "_position",
                 "_reached_ids", "_records")

    def __init__(self, records: Iterable[MountRecord]) -> None:
        self._records: tuple[MountRecord, ...] = tuple(records)
        self._by_id: dict[int, MountRecord] = {}
        self._position: dict[int, int] = {}
        self._by_target: dict[str, list[MountRecord]] = {}
        self._children: dict[int, list[MountRecord]] = {}
        for position, record in enumerate(self._records):
            self._by_id[record.mount_id] = record
            self._position[record.mount_id] = position
            self._by_target.setdefault(record.target, []).append(record)
            if record.parent_id != record.mount_id:
                self._children.setdefault(record.parent_id, []).append(record)
        # Visibility, worked out as questions need it (``_family``, ``_reached``).
        self._families: dict[int, tuple[bool, frozenset[int]]] = {}
        self._reached_ids: dict[int, bool] = {}
        # (major, minor, source) -> root -> the first record with those.
        self._origins: dict[tuple[int, int, str], dict[str, MountRecord]] | None = None

    # -- plain access -----------------------------------------------------------

    def _holds(self, record: MountRecord) -> bool:
        """True when ``record`` is this table's record of its mount id (or equal to it)."""
        mine = self._by_id.get(record.mount_id)
        return mine is record or mine == record

    @property
    def by_id(self) -> Mapping[int, MountRecord]:
        return self._by_id

    @property
    def records(self) -> tuple[MountRecord, ...]:
        return self._records

    def __iter__(self) -> Iterator[MountRecord]:
        return iter(self._records)

    def __len__(self) -> int:
        return len(self._records)

    def children(self, mount_id: int) -> list[MountRecord]:
        """The mounts whose parent is ``mount_id``, in table order."""
        return list(self._children.get(mount_id, ()))

    def containing(self, path: str) -> MountRecord | None:
        """The visible mount whose directory holds ``path``: the one with the
        longest mount point that is ``path`` or above it."""
        best = None
        for record in self.visible():
            root = record.target.rstrip("/") + "/"
            if (path + "/").startswith(root) and (
                    best is None or len(record.target) > len(best.target)):
                best = record
        return best

    def descendants(self, top: MountRecord) -> list[MountRecord]:
        """The mounts on ``top`` and on them, parents first (by id, not by path: a
        mount hidden under the path or mounted before is not one of them)."""
        found: list[MountRecord] = []
        level = [top]
        while level:
            level = [child for record in level for child in self.children(record.mount_id)]
            found += level
        return found

    def under(self, path: str) -> list[MountRecord]:
        """Every mount at ``path`` or below it, hidden ones included, each after its parent.

        The order is the mount tree's, parents first and siblings in table
        order. Table order alone would not do: a mount moved (MS_MOVE) under a
        newer one is listed before its new parent. Unmounting the result in
        reverse therefore never meets a mount that still has mounts on it.
        """
        top = _normalize(path)
        inside = [r for r in self._records if _is_at_or_below(r.target, top)]
        ids = {r.mount_id for r in inside}
        ordered: list[MountRecord] = []
        placed: set[int] = set()
        starts = [r for r in inside if r.parent_id not in ids or r.parent_id == r.mount_id]
        # Anything not reached from a start hangs in a cycle (no consistent read
        # shows one); it still comes out, once, in table order.
        for start in [*starts, *inside]:
            pending = [start]
            while pending:
                current = pending.pop()
                if current.mount_id in placed:
                    continue
                placed.add(current.mount_id)
                ordered.append(current)
                kids = [k for k in self._children.get(current.mount_id, ()) if k.mount_id in ids]
                pending.extend(reversed(kids))
        return ordered

    # -- stacking and visibility --------------------------------------------------

    def is_visible(self, record: MountRecord) -> bool:
        """True when path lookup can reach ``record``.

        That takes its mount point reachable and nothing mounted on its root
        (a stack: the mount on top is the one lookup finds). A mount point is
        reachable when the directory it is in is: the parent mount must be
        visible and no sibling may be mounted on a directory above it (that
        sibling covers the directory). A mount stacked on its parent's root
        needs only the parent's mount point reachable: lookup follows a stack
        to its top.
        """
        if not self._holds(record):
            return False
        return self._reached(record) and not self._family(record.mount_id)[0]

    def visible(self) -> list[MountRecord]:
        """The mounts path lookup can reach, in table order."""
        return [r for r in self._records if self.is_visible(r)]

    def mounts_at(self, target: str) -> list[MountRecord]:
        """Every mount whose mount point is ``target``, bottom of the stack first.

        A stack is a chain of mounts each mounted on the root of the previous
        one. Mounts at the same path that are not in one chain (one left
        hidden under a covered parent, another visible on the mount that
        covers it) come as separate chains: hidden chains first, in table
        order, and the chain that ends with the visible mount last.
        """
        group = self._by_target.get(_normalize(target), [])
        if len(group) < 2:
            return list(group)
        in_group = {r.mount_id: r for r in group}
        above: dict[int, MountRecord] = {}
        for r in group:
            if r.parent_id in in_group and r.parent_id != r.mount_id:
                above.setdefault(r.parent_id, r)
        chains: list[list[MountRecord]] = []
        placed: set[int] = set()
        bottoms = [r for r in group if r.parent_id not in in_group or r.parent_id == r.mount_id]
        # Whatever is left after the chains from the bottoms is a cycle, which a
        # consistent read cannot show; it still comes out, once, in table order.
        for start in [*bottoms, *group]:
            chain: list[MountRecord] = []
            current: MountRecord | None = start
            while current is not None and current.mount_id not in placed:
                placed.add(current.mount_id)
                chain.append(current)
                current = above.get(current.mount_id)
            if chain:
                chains.append(chain)
        chains.sort(key=lambda chain: self.is_visible(chain[-1]))  # stable: table order kept
        return [r for chain in chains for r in chain]

    def at(self, target: str) -> MountRecord | None:
        """The mount path lookup finds at ``target`` (the top of its stack), or None.

        None also when every mount at ``target`` is hidden: lookup of the path
        then lands in whatever covers it, which is not mounted *at* it.
        """
        found = None
        for r in self._by_target.get(_normalize(target), ()):
            if self.is_visible(r):
                found = r  # two visible mounts at one path cannot happen; keep the later
        return found

    def _family(self, parent_id: int) -> tuple[bool, frozenset[int]]:
        """Of the mounts on ``parent_id``: whether one is stacked on its root, and
        which of them a sibling covers (one mounted on a directory above them).
        Worked out once per parent, when a question first needs it."""
        known = self._families.get(parent_id)
        if known is not None:
            return known
        kids = self._children.get(parent_id)
        if not kids:  # most mounts: a leaf of the tree
            known = self._families[parent_id] = _NO_FAMILY
            return known
        parent = self._by_id.get(parent_id)
        kid_targets = {k.target for k in kids}
        # Only directories below the parent's own mount point can hold siblings.
        floor = len(parent.target) if parent is not None else 0
        stacked = False
        shadowed: set[int] = set()
        # Whether a sibling is mounted on a directory or above it, below the
        # parent's mount point: kids share their directories (thousands in
        # one on a big host), each is walked once.
        covered: dict[str, bool] = {}
        for kid in kids:
            target = kid.target
            if parent is not None and target == parent.target:
                stacked = True
            if len(target) <= floor or target == "/" or "/" not in target:
                continue
            # The directories above the kid's mount point (``_ancestors``),
            # nearest first, until one is a sibling's or known.
            walked = []
            directory = target.rsplit("/", 1)[0] or "/"
            while True:
                if len(directory) <= floor or directory == "/":
                    answer = False
                    break
                known_here = covered.get(directory)
                if known_here is not None:
                    answer = known_here
                    break
                if directory in kid_targets:
                    answer = True
                    break
                walked.append(directory)
                if "/" not in directory:
                    answer = False
                    break
                directory = directory.rsplit("/", 1)[0] or "/"
            for directory in walked:
                covered[directory] = answer
            if answer:
                shadowed.add(kid.mount_id)
        known = self._families[parent_id] = (stacked, frozenset(shadowed))
        return known

    def _reached(self, record: MountRecord) -> bool:
        """Whether path lookup reaches the mount point of ``record``.

        It does when it reaches the directory in the parent it hangs on: that
        takes a visible parent, except for a mount on the parent's root (a
        stack), which lookup reaches wherever it reaches the parent's own
        mount point, then follows to the top (fs/namei.c follow_managed()/
        traverse_mounts()). Answers are kept: a question about one mount
        costs the depth of its chain, not the size of the table.
        """
        reached = self._reached_ids
        # Walk up to a root (a parent outside the table, or itself) or to an
        # answer already known, then settle the chain top-down. Iterative:
        # mount trees can be deeper than Python's recursion limit.
        chain: list[MountRecord] = []
        current: MountRecord | None = record
        seen: set[int] = set()
        answer = True
        while current is not None:
            known = reached.get(current.mount_id)
            if known is not None:
                answer = known
                break
            if current.mount_id in seen:  # a cycle: no root reaches it
                answer = False
                break
            seen.add(current.mount_id)
            chain.append(current)
            if current.parent_id == current.mount_id:
                break
            current = self._by_id.get(current.parent_id)
        for link in reversed(chain):
            parent = self._by_id.get(link.parent_id)
            stacked, shadowed = self._family(link.parent_id)
            if parent is not None and parent is not link and link.target != parent.target \
                    and stacked:
                answer = False
            answer = answer and link.mount_id not in shadowed
            reached[link.mount_id] = answer
        return answer

    # -- what the user calls the source ---------------------------------------------

    def bind_origin(self, record: MountRecord) -> tuple[MountRecord, str] | None:
        """The mount ``record`` was bind-mounted from and the source directory, or None.

        mountinfo does not record a bind mount's source: the kernel copies the
        origin's device name and shows the bound directory only as ``root``,
        relative to the file system (fs/namespace.c clone_mnt()). The origin is
        found as the mount of the same device and device name, listed before
        ``record`` (a bind is made after its source: table order is creation
        order; mount ids are reused and do not tell age), whose root is the
        longest path prefix of this record's root; among equal roots the
        earliest. The source directory is its target joined with the rest of
        this record's root.

        Which records are binds:

        * root is not ``/``: a directory of a file system mounted elsewhere,
          except a btrfs subvolume mounted by ``subvol=``, whose root is the
          subvolume's path (btrfs_show_options() prints it as ``subvol=``).
        * root is ``/``: a bind of a whole file system and a second mount of the
          same file system look the same: same device, same root, and the bind
          even copies the device name. They cannot be told apart from
          mountinfo, so the rule is chosen by what can be recreated. An earlier
          mount with another device name is no origin (a bind would have
          copied the name). A block device (major != 0) is reported as a second mount:
          mounting the device again returns the same superblock
          (fs/super.c get_tree_bdev()), so the device names this file system
          exactly and is what the user wrote. A file system without a block
          device (major 0: tmpfs, overlay, fuse, ...) gets a new superblock and
          a new device number on every mount, so a second record of its device
          is a bind (or a copy the kernel made by propagation, which is one);
          for the few that share a superblock by key (proc, sysfs, NFS with
          equal options) calling it a bind of the first mount names the same
          files and stays reproducible.
        """
        if record.root == "/":
            if record.major != 0:
                return None
        elif record.fstype == "btrfs" and f"subvol={record.root}" in record.super_options:
            return None
        origins = self._origins
        if origins is None:
            # Built whole, then published: threads share a table, and one that
            # found it half built would take a bind for none.
            origins = {}
            for r in self._records:
                origins.setdefault((r.major, r.minor, r.source), {}).setdefault(r.root, r)
            self._origins = origins
        roots = origins.get((record.major, record.minor, record.source))
        if not roots:
            return None
        if record.root == "/":
            # Only a mount of the whole file system listed earlier can be the
            # origin; the first one listed is most mounts' own record.
            first = roots.get("/")
            if first is None or first.mount_id == record.mount_id:
                return None
        # A record from elsewhere may be newer than anything listed here.
        position = self._position[record.mount_id] if self._holds(record) else len(self._records)
        candidates = [
            (root, origin)
            for root in _ancestors(record.root)
            if (origin := roots.get(root)) is not None
            and origin.mount_id != record.mount_id
            and self._position[origin.mount_id] < position
            and self._by_id.get(origin.mount_id) is origin
        ]
        # A bind of a bind names the same directory through either mount; the
        # name through the shallowest visible origin (the file system's own
        # mount, root "/") is the canonical one: it does not change when the
        # intermediate bind goes away, and it is what realpath-style
        # comparisons of a requested source see. Without a visible one, the
        # deepest origin still names the directory.
        visible = [pair for pair in reversed(candidates) if self.is_visible(pair[1])]
        for root, origin in visible[:1] or candidates[:1]:
            rest = record.root[len(root):].lstrip("/")
            directory = posixpath.join(origin.target, rest) if rest else origin.target
            return origin, directory
        return None

    def user_source(
        self, record: MountRecord, loop_backing: Callable[[str], str | None]
    ) -> str:
        """What a user calls the source of ``record``.

        A bind mount: its source directory (see ``bind_origin``). A loop device
        (``/dev/loopN``): its backing file, from ``loop_backing``, which is
        called with the device path as mountinfo shows it (``/dev/loop3``) and
        returns None when the device has no backing file any more (the linux
        layer reads ``/sys/block/loopN/loop/backing_file``). Anything else, or
        when those lookups give nothing: the source field as the kernel shows it.
        """
        origin = self.bind_origin(record)
        if origin is not None:
            return origin[1]
        if _LOOP_DEVICE_RE.fullmatch(record.source):
            backing = loop_backing(record.source)
            if backing:
                return backing
        return record.source


def propagation_holds(propagation: int, record: MountRecord) -> bool:
    """Whether ``record`` has the propagation type ``propagation`` asks (MS_SHARED,
    MS_PRIVATE, MS_SLAVE or MS_UNBINDABLE; MS_REC is for the caller to apply to
    the submounts): what asking for it again would not change."""
    tags = record.propagation.split()
    shared = any(tag.startswith("shared:") for tag in tags)
    kind = propagation & (MS_SHARED | MS_PRIVATE | MS_SLAVE | MS_UNBINDABLE)
    if kind == MS_SHARED:
        return shared
    if kind == MS_UNBINDABLE:
        return "unbindable" in tags
    if kind == MS_PRIVATE:
        return tags == ["private"]
    # A slave of a mount that is not shared has no master: it is private.
    return not shared


def _normalize(path: str) -> str:
    """``path`` without trailing slashes (mountinfo never has them), ``/`` kept."""
    stripped = path.rstrip("/")
    return stripped or ("/" if path.startswith("/") else path)
