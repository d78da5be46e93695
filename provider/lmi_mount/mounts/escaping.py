"""Octal escapes and option lists of mount tables: one encoder, one decoder and one
splitter for fstab, mount data, mountinfo and statmount.

Owns: the ``\\NNN`` escaping that the kernel applies to mountinfo fields
(fs/proc_namespace.c, ``mangle()``: space, tab, newline and backslash) and that
fstab(5) and libmount use for the same characters; the split of an option list
on the commas outside double quotes (libmount's optstr.c), and a value's
quotes. Must not know: which file a field comes from.
"""

import re
from typing import Final

# The characters the kernel and libmount escape; '#' is added for fstab because
# an unescaped '#' at the start of a field reads as a comment (fstab(5)).
_ESCAPE_RE: Final = re.compile(r"[ \t\n\\#]")
_CONTROL_RE: Final = re.compile(r"[\x00-\x1f\x7f]")
_OCTAL_BYTES_RE: Final = re.compile(rb"\\([0-7]{3})")


def split_options(text: str) -> list[str]:
    """An option list split on the commas outside double quotes, each option as
    written, empty ones kept (libmount's optstr.c): ``context="a:s0:c1,c2"`` is
    one option, in fstab, in mount(2) data and as the kernel shows it in
    mountinfo (SELinux quotes a context that holds a comma). An unbalanced
    quote runs to the end."""
    if '"' not in text:
        return text.split(",")
    parts = []
    start = 0
    quoted = False
    for i, char in enumerate(text):
        if char == '"':
            quoted = not quoted
        elif char == "," and not quoted:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return parts


def nonempty_options(text: str) -> list[str]:
    """``split_options(text)`` without the empty ones, as libmount reads a list."""
    return [option for option in split_options(text) if option]


def unquoted(value: str) -> str:
    """An option's value without the double quotes around it, if it has them."""
    return value[1:-1] if len(value) >= 2 and value[0] == value[-1] == '"' else value


def escape_octal(value: str, characters: re.Pattern[str]) -> str:
    """``value`` with every (ASCII) character ``characters`` matches written as a
    three-digit octal escape, ``\\012`` for a newline."""
    return characters.sub(lambda m: f"\\{ord(m.group()):03o}", value)


def escape_field(value: str) -> str:
    """Return ``value`` with space, tab, newline, backslash and ``#`` octal-escaped."""
    return escape_octal(value, _ESCAPE_RE)


def escape_controls(text: str) -> str:
    """``text`` for a terminal: control characters octal-escaped, as mountinfo
    writes them (a name with a newline must not print as two lines)."""
    return escape_octal(text, _CONTROL_RE)


def unescape_field(field: str) -> str:
    """Decode every ``\\NNN`` octal escape as libmount does; any other backslash stays.

    As util-linux's ``unmangle_to_buffer`` (lib/mangle.c): an escape is a
    backslash and three digits 0-7, and it stands for one *byte*, the value
    modulo 256 (``\\351`` is the byte 0xE9, ``\\777`` is 0xFF); the bytes are
    then read as the text around them is, UTF-8 with ``surrogateescape``, so
    ``\\303\\251`` is "é" and a lone ``\\351`` is the undecodable byte it names.
    A byte 0 ends the field there, as it ends libmount's C string.
    """
    if "\\" not in field:
        return field
    raw = field.encode("utf-8", "surrogateescape")
    decoded = _OCTAL_BYTES_RE.sub(lambda m: bytes((int(m.group(1), 8) & 0xFF,)), raw)
    return decoded.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
