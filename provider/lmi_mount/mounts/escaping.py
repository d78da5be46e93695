"""Octal escapes of mount tables: one encoder and one decoder for fstab and mountinfo.

Owns: the ``\\NNN`` escaping that the kernel applies to mountinfo fields
(fs/proc_namespace.c, ``mangle()``: space, tab, newline and backslash) and that
fstab(5) and libmount use for the same characters. Must not know: which file a
field comes from.
"""

import re
from typing import Final

# The characters the kernel and libmount escape; '#' is added for fstab because
# an unescaped '#' at the start of a field reads as a comment (fstab(5)).
_ESCAPED: Final = {" ": "\\040", "\t": "\\011", "\n": "\\012", "\\": "\\134", "#": "\\043"}
_ESCAPE_RE: Final = re.compile(r"[ \t\n\\#]")
_OCTAL_RE: Final = re.compile(r"\\([0-7]{3})")


def escape_field(value: str) -> str:
    """Return ``value`` with space, tab, newline, backslash and ``#`` octal-escaped."""
    return _ESCAPE_RE.sub(lambda m: _ESCAPED[m.group(0)], value)


def unescape_field(field: str) -> str:
    """Decode every ``\\NNN`` octal escape; any other backslash is kept as is.

    Escapes above 0o377 are not bytes and are left undecoded, as libmount does.
    """
    if "\\" not in field:
        return field

    def _decode(match: re.Match[str]) -> str:
        code = int(match.group(1), 8)
        return chr(code) if code <= 0o377 else match.group(0)

    return _OCTAL_RE.sub(_decode, field)
