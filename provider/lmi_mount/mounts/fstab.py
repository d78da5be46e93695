"""A lossless fstab(5) document: parse, query, edit and render without losing a byte.

Owns: the line grammar of fstab (what is a comment, a blank line, an entry or an
unparsable line), the identity of an entry (its spec and its normalized mount
point), edits that touch exactly one line, and the problems a document carries
(unparsable lines, duplicate entries). Must not know: where the text comes from
or goes to (``lmi_mount.linux.files`` reads and writes it), what options mean
(``options``), or CIM.

The document is the text itself. ``FstabDocument.parse(text).render() == text``
for ANY string: comments, blank lines, unparsable lines, tabs or spaces,
trailing blanks, CRLF, NUL and a missing final newline all survive, because
rendering returns the stored text and every edit splices one line into it.

Grammar (util-linux libmount, ``libmount/src/tab_parse.c``, which mount(8) and
systemd-fstab-generator use):

* Lines end at ``\\n``; one ``\\r`` before it (or at the end of the text) is
  not part of the line's content (``mnt_table_parse_next`` strips it).
* Fields are separated by runs of blanks: space and tab only
  (``skip_separator``). Any other character, other whitespace included,
  belongs to a field.
* A line whose first non-blank character is ``#`` is a comment; a line of
  blanks only is blank (``is_comment_line``). A ``#`` later in a line is not
  a comment: it is part of a field.
* An entry has a spec, a mount point and a type, then optional options,
  freq and passno (``mnt_parse_table_line``): a 3-field line is an entry
  whose options are "" (mount(8)'s defaults), and anything after passno is
  ignored (``0 2 # data disk``). freq and passno are C ints as strtol reads
  them (a sign, leading C-locale white space; an overflow is an error only
  where text follows). Fewer than 3 fields, a number followed by anything
  but a blank, or a NUL byte in a newline-terminated line (libmount's line
  reader then misses the newline) make the line *unparsable*: it is kept
  verbatim and reported by ``problems()``. A last line without a newline
  is read up to a NUL, as libmount reads it.
* Fields carry octal escapes (``\\040`` space, ``\\011`` tab, ``\\012``
  newline, ``\\134`` backslash, ``\\043`` ``#``); ``FstabEntry`` holds the
  decoded text, decoded as libmount does (``escaping.unescape_field``: each
  escape is a byte). Rendering escapes blanks, newline, backslash, other
  control characters (``\\015`` for a carriage return, which would
  otherwise be stripped as part of a CRLF line end) and a ``#`` that begins
  a field, nothing else: systemd's fstab generator decodes only the
  kernel's escapes. NUL cannot be carried at all: an escape of it ends the
  field.

Identity: an entry is named by (spec, mount point). Specs compare exactly
(``UUID=...`` and ``/dev/sda1`` may name one device, but only the machine can
tell). Mount points compare after ``normalize_target``: runs of ``/`` collapse
to one and a trailing ``/`` is dropped (``/`` itself stays). That is pure
string normalization: ``.`` and ``..`` components and symbolic links are NOT
resolved, because only the file system knows where they lead.

Edits are immutable: ``add``, ``replace`` and ``remove`` return a new
document and leave the receiver unchanged, so a caller that must retry an
edit (``edit_file`` on a write conflict) can re-apply it to fresh text
without side effects. Every edit changes only its own line; ``add`` may also
give the previous last line the newline it lacked.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from itertools import pairwise
from typing import Final, Literal

from lmi_mount.mounts.escaping import escape_octal, unescape_field
from lmi_mount.text import is_decimal

MIN_FIELDS: Final = 3
MAX_FIELDS: Final = 6
# libmount parses freq and passno into C ints (next_s32 in tab_parse.c).
_INT_MAX: Final = 2**31 - 1
_TAB_WIDTH: Final = 8

_BLANKS: Final = " \t"
_FIELD_RE: Final = re.compile(r"[^ \t]+")
_SLASH_RUN_RE: Final = re.compile(r"/{2,}")

_TEXT_FIELDS: Final = ("spec", "target", "fstype", "options")
_ALL_FIELDS: Final = (*_TEXT_FIELDS, "freq", "passno")

ProblemKind = Literal["unparsable", "duplicate", "relative", "unreadable"]


class FstabError(ValueError):
    """An fstab value or edit is invalid; the message names the value.

    ``value`` is that value itself (a field, or the mount point of the entry
    an edit is about) for callers that report it apart from the message.
    """

    def __init__(self, message: str, *, value: object = None) -> None:
        super().__init__(message)
        self.value = value


class FstabConflict(FstabError):
    """The line an edit is about changed since the edit was planned."""


def normalize_target(target: str) -> str:
    """Return the mount point as entries are compared: ``//`` -> ``/``, no trailing ``/``.

    ``/mnt//data/`` and ``/mnt/data`` name one mount point; ``/`` stays ``/``;
    names without a slash (``none``, ``swap``) are returned unchanged. Pure
    string work: ``.``, ``..`` and symbolic links are not resolved.
    """
    if "//" in target:
        target = _SLASH_RUN_RE.sub("/", target)
    if len(target) > 1 and target.endswith("/"):
        target = target.rstrip("/") or "/"
    return target


@dataclass(frozen=True, slots=True)
class FstabEntry:
    """One fstab entry with decoded (unescaped) fields.

    ``options`` is the raw option string (``defaults,noatime``); its meaning
    belongs to ``lmi_mount.mounts.options``.
    """

    spec: str
    target: str
    fstype: str
    options: str
    freq: int = 0
    passno: int = 0

    def __post_init__(self) -> None:
        # One cheap test for the common, valid case; _reject finds the culprit.
        spec, target, fstype, options = self.spec, self.target, self.fstype, self.options
        freq, passno = self.freq, self.passno
        if not (
            type(spec) is str
            and type(target) is str
            and type(fstype) is str
            and type(options) is str
            and spec
            and target
            and fstype
            and options
            and type(freq) is int
            and type(passno) is int
            and 0 <= freq <= _INT_MAX
            and 0 <= passno <= _INT_MAX
            and "\0" not in spec + target + fstype + options
        ):
            self._reject()

    def _reject(self) -> None:
        for name in _TEXT_FIELDS:
            # Subclasses of str and int are accepted here; only the fast test
            # in __post_init__ insists on the exact types.
            value = getattr(self, name)
            if not isinstance(value, str):
                raise FstabError(
                    f"fstab field {name} must be a string, not {value!r}", value=value
                )
            if not value:
                raise FstabError(f"fstab field {name} is empty", value=value)
            if "\0" in value:
                # No escape carries it: libmount's C strings end at a NUL.
                raise FstabError(f"fstab field {name} {value!r} contains a NUL byte",
                                 value=value)
        for name in ("freq", "passno"):
            number = getattr(self, name)
            # bool is an int subclass; True as a dump frequency is a caller bug.
            if not isinstance(number, int) or isinstance(number, bool):
                raise FstabError(
                    f"fstab field {name} must be an integer, not {number!r}", value=number
                )
            if not 0 <= number <= _INT_MAX:
                raise FstabError(
                    f"fstab field {name} is out of range 0..{_INT_MAX}: {number}", value=number
                )

    @property
    def key(self) -> tuple[str, str]:
        """(spec, normalized mount point): what names this entry in a document."""
        return (self.spec, normalize_target(self.target))

    def field_values(self) -> tuple[str, str, str, str, int, int]:
        """The six fields in file order."""
        return (self.spec, self.target, self.fstype, self.options, self.freq, self.passno)

    def render(self) -> str:
        """The entry as one line (without newline), fields escaped and space separated."""
        return " ".join(_escaped_fields(self, MAX_FIELDS))

    @classmethod
    def read(cls, spec: str, target: str, fstype: str, options: str, freq: int,
             passno: int) -> FstabEntry:
        """An entry as a file has it, unchecked: libmount reads it, so it is one.

        A line may say what this class refuses to write (an escape that decodes
        to nothing, a negative pass number, no options: ``options`` is then
        ""); it is still an entry of the document, found, shown and edited.
        """
        entry = object.__new__(cls)
        for name, value in zip(_ALL_FIELDS, (spec, target, fstype, options, freq, passno),
                               strict=True):
            object.__setattr__(entry, name, value)
        return entry


@dataclass(frozen=True, slots=True)
class FstabLine:
    """An entry and where it sits: ``number`` is 1-based; ``text`` is the raw line."""

    number: int
    entry: FstabEntry
    text: str


@dataclass(frozen=True, slots=True)
class FstabProblem:
    """A line the document keeps but reports: unparsable, a duplicate entry, or an
    entry whose mount point is no absolute path (no mount point at all)."""

    line: int
    kind: ProblemKind
    text: str
    detail: str

    def __str__(self) -> str:
        if self.kind == "unreadable":
            return f"fstab: {self.detail}"
        return f"fstab line {self.line}: {self.detail}"


@dataclass(frozen=True, slots=True)
class _Span:
    """Where one line sits in the text: [start, end) without its ``\\n``."""

    start: int
    end: int


@dataclass(frozen=True, slots=True)
class _Unparsable:
    detail: str


def _body(segment: str) -> str:
    # libmount strips one '\r' before the newline (or at the end of the text).
    return segment[:-1] if segment.endswith("\r") else segment


# strtol(3) as next_s32 (tab_parse.c) calls it: leading white space of the C
# locale, a sign, ASCII digits; the number must end at a blank or the line end.
_C_INT_RE: Final = re.compile(r"[ \t\n\v\f\r]*([+-]?[0-9]+)")


def _c_int(text: str, position: int) -> tuple[int, int] | None:
    """The number next_s32 reads at ``position`` and where it ends, or None where
    libmount calls the line broken.

    strtol clamps to a C long on overflow, and the value is stored in an int
    (the low 32 bits, as GCC converts): libmount's own reading, kept rather
    than refused so both read the same line the same way. An overflow
    (ERANGE) is an error only where anything, blanks included, follows.
    """
    match = _C_INT_RE.match(text, position)
    if match is None:
        return None
    end = match.end()
    if end < len(text) and text[end] not in _BLANKS:
        return None
    value = int(match.group(1))
    if not -(2**63) <= value < 2**63:
        if end < len(text):
            return None
        value = max(-(2**63), min(2**63 - 1, value))
    return (value + 2**31) % 2**32 - 2**31, end


def _parse_body(body: str) -> FstabEntry | _Unparsable | None:
    """Classify one line's content as libmount does: None for a comment or blank line.

    mnt_parse_table_line (libmount/src/tab_parse.c): spec, mount point and
    type are required; the options may be missing (a 3-field line: options
    ""); freq and passno are optional C ints; anything after passno is
    ignored (``0 2 # data disk`` is an entry).
    """
    stripped = body.lstrip(_BLANKS)
    if not stripped or stripped[0] == "#":
        return None
    fields = list(_FIELD_RE.finditer(stripped))
    if len(fields) < 3:
        count = len(fields)
        return _Unparsable(
            f"{count} field{'s' if count != 1 else ''}; an entry needs at least a spec, "
            "a mount point and a type"
        )
    numbers = [0, 0]
    position = fields[3].end() if len(fields) > 3 else len(stripped)
    for index, name in enumerate(("freq", "passno")):
        while position < len(stripped) and stripped[position] in _BLANKS:
            position += 1
        if position == len(stripped):
            break
        read = _c_int(stripped, position)
        if read is None:
            raw = _FIELD_RE.match(stripped, position)
            shown = raw.group() if raw is not None else stripped[position:]
            return _Unparsable(f"{name} {shown!r} is not a decimal number")
        numbers[index], position = read
    return FstabEntry.read(
        unescape_field(fields[0].group()),
        unescape_field(fields[1].group()),
        unescape_field(fields[2].group()),
        unescape_field(fields[3].group()) if len(fields) > 3 else "",
        numbers[0],
        numbers[1],
    )


def _parse_segment(segment: str, *, terminated: bool) -> FstabEntry | _Unparsable | None:
    """Classify one line of the text (without its ``\\n``).

    A NUL byte ends libmount's C string: its line reader then misses the
    newline and calls the line broken, except on a last line without one,
    which is read up to the NUL (``mnt_table_parse_next``).
    """
    if "\0" in segment:
        if terminated:
            return _Unparsable("the line contains a NUL byte")
        segment = segment.split("\0", 1)[0]
    return _parse_body(_body(segment))


# What a field written to fstab escapes: the blanks that separate fields, a
# newline, a backslash (the kernel's mangle set, which systemd's fstab
# generator decodes too), other control characters (a raw CR that ends a
# line would be stripped as part of a CRLF line end; the engine refuses them
# in the lines it writes), and a "#" that begins a field, where it would
# start a comment; anywhere else "#" is part of the field.
_FSTAB_ESCAPE_RE: Final = re.compile(r"[ \t\n\\\x01-\x1f\x7f]|^#")


def _escape(value: str) -> str:
    return escape_octal(value, _FSTAB_ESCAPE_RE)


# systemd-fstab-generator decodes \040, \011, \012 and \134 only (the
# kernel's mangle set): other escapes reach its units undecoded. A tab is
# carried; a newline would end the unit's line.
_SYSTEMD_UNREADABLE_RE: Final = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")

#: The longest path the kernel takes (PATH_MAX, with its NUL), and name in it.
PATH_MAX: Final = 4096
NAME_MAX: Final = 255


def too_long(role: str, path: str, where: str = "") -> str:
    """The message for a ``path`` longer than PATH_MAX allows, shown shortened."""
    shown = f"{path[:40]!r}..." if len(path) > 40 else repr(path)
    return (f"{role} {shown}{where} is longer than PATH_MAX allows ({PATH_MAX} bytes with "
            "the closing NUL)")


def boot_problem(entry: FstabEntry) -> str | None:
    """Why mount(8) or systemd could not use the line ``entry`` at boot, or None.

    The checks that need no machine: a spec or mount point that begins with
    ``-`` (read as an option by the tools that get it as an argument), or is
    longer than PATH_MAX, and a mount point that is not absolute (swap lines
    aside). The type is checked against the machine by
    ``lmi_mount.linux.filesystems``; empty fields and NUL bytes cannot be
    made into an FstabEntry at all.
    """
    for role, value in (("spec", entry.spec), ("mount point", entry.target)):
        if value.startswith("-"):
            return (f"{role} {value!r} begins with '-': mount(8) and systemd would read it "
                    "as an option")
        if value.startswith("#"):
            # Escaped, it is no comment to libmount, but systemd's fstab
            # generator does not decode that escape.
            return f"{role} {value!r} begins with '#', which fstab reads as a comment"
        control = _SYSTEMD_UNREADABLE_RE.search(value)
        if control is not None:
            return (f"{role} {value!r} contains the control character {control.group()!r}: "
                    "systemd's fstab generator reads no escape of it back")
        if len(value.encode("utf-8", "surrogateescape")) >= PATH_MAX:
            return too_long(role, value)
        if value.startswith("/"):
            long = next((part for part in value.split("/")
                         if len(part.encode("utf-8", "surrogateescape")) > NAME_MAX), None)
            if long is not None:
                return (f"{role} {value[:40]!r}... has a name longer than NAME_MAX "
                        f"({NAME_MAX} bytes): {long[:20]!r}...")
    if entry.target != entry.target.rstrip(" \t"):
        return (f"mount point {entry.target!r} ends in a blank, which systemd strips from "
                "the unit it makes: the line would never mount at boot")
    if not entry.target.startswith("/") and entry.fstype != "swap":
        return f"mount point {entry.target!r} is not an absolute path"
    return None


def _field_count(entry: FstabEntry) -> int:
    """The fewest fields that say everything: 0 freq/passno may be omitted (fstab(5)),
    and so may the options of a line read without them."""
    if entry.passno:
        return 6
    if entry.freq:
        return 5
    return 4 if entry.options else 3


def _escaped_fields(entry: FstabEntry, count: int) -> list[str]:
    values = entry.field_values()
    # A line read without options has ""; where a field must follow, it is
    # "defaults", which means the same to mount(8).
    fields = [_escape(value or "defaults") for value in values[:4]][:count]
    fields.extend(str(number) for number in values[4:count])
    return fields


def _display_width(text: str, column: int = 0) -> int:
    """The column after ``text`` starting at ``column``, with tab stops every 8."""
    for char in text:
        column = (column // _TAB_WIDTH + 1) * _TAB_WIDTH if char == "\t" else column + 1
    return column


def _same_value(raw: str, value: str | int) -> bool:
    if isinstance(value, int):
        return is_decimal(raw) and int(raw) == value
    return unescape_field(raw) == value


def _layout(template: str, entry: FstabEntry, *, keep_ignored: bool = True) -> str:
    """Render ``entry`` in the shape of the entry line ``template`` (a line body).

    Kept from the template: leading and trailing blanks, each separator, and
    every raw field whose decoded value is unchanged (so ``\\040`` stays
    ``\\040`` and ``00`` stays ``00``). A separator of two or more spaces is
    alignment: it is resized so that the next field starts in the template's
    column when there is room (at least one space is always kept). A single
    space and any separator with a tab are kept as they are; tab stops align
    by themselves. Fields the template lacks (a 4-field line getting a
    passno) take the template's last separator when it is made of tabs, one
    space otherwise. Text after passno, which libmount ignores (``# data
    disk``), stays after it with ``keep_ignored`` (the line's own replacement)
    and is dropped otherwise (a new line shaped like it).
    """
    matches = list(_FIELD_RE.finditer(template))
    lead = template[: matches[0].start()]
    trail = template[matches[-1].end() :]
    if len(matches) > MAX_FIELDS:
        trail = template[matches[MAX_FIELDS - 1].end() :] if keep_ignored else ""
        matches = matches[:MAX_FIELDS]
    seps = [template[a.end() : b.start()] for a, b in pairwise(matches)]
    columns = [_display_width(template[: m.start()]) for m in matches]

    # A line without options (3 fields) has nothing after its type.
    count = 3 if _field_count(entry) == 3 else max(len(matches), _field_count(entry))
    values = entry.field_values()
    fresh = _escaped_fields(entry, count)
    out = [lead]
    column = _display_width(lead)
    for index in range(count):
        if index:
            if index - 1 < len(seps):
                sep = seps[index - 1]
                if len(sep) > 1 and sep.strip(" ") == "":
                    sep = " " * max(1, columns[index] - column)
            else:
                last = seps[-1] if seps else " "
                sep = last if last.strip("\t") == "" else " "
            out.append(sep)
            column = _display_width(sep, column)
        raw = matches[index].group() if index < len(matches) else ""
        field = raw if raw and _same_value(raw, values[index]) else fresh[index]
        out.append(field)
        column = _display_width(field, column)
    out.append(trail)
    return "".join(out)


class FstabDocument:
    """An fstab file's text with its entries; edits return new documents.

    Keyed operations (``find``, ``add``, ``replace``, ``remove``) look only at
    the lines that can match: lines that contain the spec literally, or any
    backslash (an escaped field can spell a spec in other bytes). So one edit
    of a 10k-line fstab does not parse 10k lines. ``entries()``,
    ``problems()`` and ``find_target()`` parse the whole text once and cache
    the result.
    """

    __slots__ = ("_analysis", "_text")

    def __init__(self, text: str = "") -> None:
        if not isinstance(text, str):
            raise FstabError(f"fstab text must be a string, not {type(text).__name__}", value=text)
        self._text = text
        self._analysis: tuple[list[FstabLine], list[FstabProblem]] | None = None

    @classmethod
    def parse(cls, text: str) -> FstabDocument:
        """Read ``text`` as fstab; never fails on content (bad lines are problems)."""
        return cls(text)

    @classmethod
    def unreadable(cls, detail: str) -> FstabDocument:
        """A document of no line for a file that could not be read (a directory, a
        FIFO, no permission), whose one problem (line 0) says why: reads go on
        with the mounts alone, and a Degraded service says what is wrong."""
        document = cls("")
        document._analysis = ([], [FstabProblem(0, "unreadable", "", detail)])
        return document

    def render(self) -> str:
        """The document's text: exactly what was parsed, plus the edits made."""
        return self._text

    def __repr__(self) -> str:
        lines = self._text.count("\n") + (0 if self._text.endswith("\n") else 1)
        return f"<FstabDocument {len(self._text)} chars, {lines if self._text else 0} lines>"

    # -- whole-document queries -------------------------------------------

    def entries(self) -> list[FstabLine]:
        """Every entry line, duplicates included, in file order."""
        return list(self._analyze()[0])

    def problems(self) -> list[FstabProblem]:
        """Unparsable lines and duplicate entries (each after the first), by line."""
        return list(self._analyze()[1])

    def find(self, spec: str, target: str) -> FstabEntry | None:
        """The first entry for (spec, target), or None; targets compare normalized."""
        matches = self._matches(spec, target)
        return matches[0][1] if matches else None

    def find_target(self, target: str) -> FstabEntry | None:
        """The first entry mounted on ``target`` (normalized), whatever its spec."""
        wanted = normalize_target(target)
        for _span, entry in self._candidates(_target_needle(wanted)):
            if normalize_target(entry.target) == wanted:
                return entry
        return None

    def line(self, number: int) -> str:
        """The raw text of line ``number`` (1-based), without its newline."""
        span = self._span_of(number)
        return self._text[span.start : span.end]

    # -- edits (each returns a new document) ------------------------------

    def add(self, entry: FstabEntry) -> FstabDocument:
        """Append ``entry`` as the last line; refuse a second (spec, target).

        The new line takes the layout of the last entry line (see
        ``_layout``), or single spaces in a document without entries. A
        previous last line without a final newline gets one; a document whose
        last line ends in CRLF gets a CRLF line.
        """
        existing = self._matches(entry.spec, entry.target)
        if existing:
            raise FstabError(
                f"fstab already has {entry.spec!r} on {entry.target!r} "
                f"(line {self._number(existing[0][0].start)})",
                value=entry.target,
            )
        return self.add_after(entry)

    def add_after(self, entry: FstabEntry) -> FstabDocument:
        """Append ``entry`` even if its (spec, mount point) is there already: a line
        of a mount point with several, put back by the undo of their removal."""
        template = self._last_entry_body()
        body = (_layout(template, entry, keep_ignored=False) if template is not None
                else entry.render())
        text = self._ended()
        eol = "\r\n" if text.endswith("\r\n") else "\n"
        return FstabDocument(text + body + eol)

    def replace(
        self, spec: str, target: str, entry: FstabEntry, *, line: int | None = None
    ) -> FstabDocument:
        """Put ``entry`` in place of the entry (spec, target); only that line changes.

        The line keeps its layout (separators, alignment, unchanged raw
        fields, its CRLF). When (spec, target) is on several lines, ``line``
        (1-based) says which one; without it the edit is refused rather than
        guessed. A new (spec, target) that another line already has is
        refused too.
        """
        span, _old = self._one_match(spec, target, line, "replace")
        if entry.key != (spec, normalize_target(target)):
            clash = [m for m in self._matches(entry.spec, entry.target) if m[0] != span]
            if clash:
                raise FstabError(
                    f"cannot replace line {self._number(span.start)} with {entry.spec!r} "
                    f"on {entry.target!r}: line {self._number(clash[0][0].start)} already "
                    "has it",
                    value=entry.target,
                )
        segment = self._text[span.start : span.end]
        body = _body(segment)
        new_line = _layout(body, entry) + segment[len(body) :]
        return FstabDocument(self._splice(span.start, span.end, new_line))

    def insert_line(self, number: int, text: str) -> FstabDocument:
        """Put the raw line ``text`` (without its newline) in as line ``number``
        (1-based), the lines from there on moving down; after the last line
        when the document has fewer. An undone removal puts a line back
        where it stood, as it was."""
        if number < 1 or "\n" in text:
            raise FstabError(f"cannot insert {text!r} as line {number}", value=number)
        body = self._text
        try:
            start = self._span_of(number).start
        except FstabError:  # past the last line
            return FstabDocument(self._ended() + text + "\n")
        return FstabDocument(body[:start] + text + "\n" + body[start:])

    def _ended(self) -> str:
        """The text with its last line ended by a newline, for a line to follow.

        A last line without one is read by libmount up to a NUL it holds; ended,
        the same line is a parse error, and its entry would be gone. Such a
        document is refused: only its administrator can say what the line
        should be."""
        text = self._text
        if not text or text.endswith("\n"):
            return text
        last = text[text.rfind("\n") + 1:]
        if "\0" in last:
            number = text.count("\n") + 1
            raise FstabError(
                f"fstab's last line ({number}) holds a NUL byte and ends without a newline: "
                "libmount reads it up to the NUL, but a line added after it would make it "
                "a parse error and lose its entry; mend it first (lmi-mount edit-fstab)",
                value=number)
        return text + "\n"

    def replace_line(self, number: int, text: str) -> FstabDocument:
        """Line ``number`` (1-based) replaced by the raw ``text``; its newline stays."""
        if "\n" in text:
            raise FstabError(f"a line cannot hold a newline: {text!r}", value=text)
        span = self._span_of(number)
        return FstabDocument(self._splice(span.start, span.end, text))

    def remove(self, spec: str, target: str, *, line: int | None = None) -> FstabDocument:
        """Delete the entry line (spec, target) and its newline; nothing else changes."""
        span, _old = self._one_match(spec, target, line, "remove")
        return FstabDocument(self._splice(span.start, span.end + 1, ""))

    def first_line(self, spec: str, target: str) -> int | None:
        """The number of the first entry line (spec, target): the one mount(8) uses."""
        matches = self._matches(spec, target)
        return self._number(matches[0][0].start) if matches else None

    # -- internals ---------------------------------------------------------

    def _analyze(self) -> tuple[list[FstabLine], list[FstabProblem]]:
        if self._analysis is None:
            entries: list[FstabLine] = []
            problems: list[FstabProblem] = []
            first_line: dict[str, int] = {}
            segments = self._text.split("\n")
            if segments[-1] == "":
                segments.pop()
            for number, segment in enumerate(segments, 1):
                parsed = _parse_segment(segment, terminated=number < len(segments)
                                        or self._text.endswith("\n"))
                if parsed is None:
                    continue
                if isinstance(parsed, _Unparsable):
                    problems.append(FstabProblem(number, "unparsable", segment, parsed.detail))
                    continue
                entries.append(FstabLine(number, parsed, segment))
                if not parsed.target.startswith("/"):
                    # Swap lines ("none" or "swap" as mount point) repeat by
                    # design; any other line's word is no mount point (findmnt
                    # --verify says so too), and no status would show the line.
                    if parsed.fstype != "swap":
                        problems.append(FstabProblem(
                            number, "relative", segment,
                            f"mount point {parsed.target!r} is not an absolute path"))
                    continue
                first = first_line.setdefault(normalize_target(parsed.target), number)
                if first != number:
                    problems.append(
                        FstabProblem(
                            number,
                            "duplicate",
                            segment,
                            f"mount point {parsed.target!r} is already on line {first}: "
                            f"mount -a mounts both, one over the other; systemd line "
                            f"{first} alone",
                        )
                    )
            self._analysis = (entries, problems)
        return self._analysis

    def _number(self, start: int) -> int:
        """The 1-based number of the line that starts at offset ``start``."""
        return self._text.count("\n", 0, start) + 1

    def _span_at(self, offset: int) -> _Span:
        text = self._text
        start = text.rfind("\n", 0, offset) + 1
        end = text.find("\n", offset)
        if end == -1:
            end = len(text)
        return _Span(start, end)

    def _splice(self, start: int, end: int, new: str) -> str:
        """The text with [start, end) replaced by ``new``.

        ``str.replace(old, new, 1)`` builds the result in one allocation
        where slicing and joining build three; it is used when the first
        occurrence of the old text is the one at ``start`` (nothing equal
        starts earlier), which ``find`` bounded by ``end`` proves.
        """
        text = self._text
        old = text[start:end]
        if old and text.find(old, 0, end) == start:
            return text.replace(old, new, 1)
        return "".join((text[:start], new, text[end:]))

    def _span_of(self, number: int) -> _Span:
        text = self._text
        start = 0
        for _ in range(number - 1):
            newline = text.find("\n", start)
            if newline == -1:
                break
            start = newline + 1
        else:
            # Line N exists when something (even just its newline) starts there.
            if number >= 1 and start < len(text):
                return self._span_at(start)
        raise FstabError(f"fstab has no line {number}", value=number)

    def _candidates(self, needle: str) -> list[tuple[_Span, FstabEntry]]:
        """Entry lines that contain ``needle`` or a backslash, in file order."""
        text = self._text
        starts: set[int] = set()
        for probe in {needle, "\\"}:
            position = text.find(probe)
            while position != -1:
                start = text.rfind("\n", 0, position) + 1
                starts.add(start)
                end = text.find("\n", position)
                if end == -1:
                    break
                position = text.find(probe, end + 1)
        found: list[tuple[_Span, FstabEntry]] = []
        for start in sorted(starts):
            end = text.find("\n", start)
            if end == -1:
                end = len(text)
            parsed = _parse_segment(text[start:end], terminated=end < len(text))
            if isinstance(parsed, FstabEntry):
                found.append((_Span(start, end), parsed))
        return found

    def _matches(self, spec: str, target: str) -> list[tuple[_Span, FstabEntry]]:
        if not spec or not target:
            raise FstabError(
                f"an fstab entry needs a spec and a target, got {spec!r}, {target!r}",
                value=target if spec else spec,
            )
        key = (spec, normalize_target(target))
        return [(span, entry) for span, entry in self._candidates(spec) if entry.key == key]

    def _one_match(
        self, spec: str, target: str, line: int | None, verb: str
    ) -> tuple[_Span, FstabEntry]:
        matches = self._matches(spec, target)
        if not matches:
            raise FstabError(
                f"cannot {verb}: fstab has no entry {spec!r} on {target!r}", value=target
            )
        if line is not None:
            for match in matches:
                if self._number(match[0].start) == line:
                    return match
            raise FstabError(
                f"cannot {verb}: line {line} is not an entry {spec!r} on {target!r}", value=line
            )
        if len(matches) > 1:
            numbers = ", ".join(str(self._number(span.start)) for span, _ in matches)
            raise FstabError(
                f"cannot {verb}: {spec!r} on {target!r} is on lines {numbers}; say which line",
                value=target,
            )
        return matches[0]

    def _last_entry_body(self) -> str | None:
        text = self._text
        end = len(text)
        if text.endswith("\n"):
            end -= 1
        while end >= 0:
            start = text.rfind("\n", 0, end) + 1
            body = _body(text[start:end])
            if "\0" not in body and isinstance(_parse_body(body), FstabEntry):
                return body
            if start == 0:
                return None
            end = start - 1
        return None


def _target_needle(normalized: str) -> str:
    """A substring every raw (unescaped) spelling of the mount point contains.

    A raw target without escapes normalizes to ``normalized`` only if it
    contains each of its components, so its last component will do; ``/``
    and slash-free names stand for themselves.
    """
    last = normalized.rsplit("/", 1)[-1]
    return last or normalized
