"""Reading numbers out of text that anyone may have written: one place for the hazard.

``str.isdigit()`` is true for '²' and other digits ``int()`` refuses, and
``int()`` accepts '+', '_', spaces and any Unicode digit; a header, a key
value or a file name must be plain ASCII digits. Every parser of the project
takes numbers from untrusted text through ``decimal`` or ``is_decimal``.
"""

from __future__ import annotations

from typing import Final

#: Past this many digits a number is refused before int() spends time on it
#: (CPython refuses 4300 and more digits by default, with ValueError).
MAX_DIGITS: Final = 64


def is_decimal(text: str) -> bool:
    """Whether ``text`` is one or more ASCII digits 0-9 and nothing else."""
    return text.isascii() and text.isdigit()


def decimal(text: str, *, maximum: int | None = None) -> int | None:
    """The value of ``text`` if it is ASCII digits only (at most MAX_DIGITS, and not
    above ``maximum``), else None."""
    if not is_decimal(text) or len(text) > MAX_DIGITS:
        return None
    value = int(text)
    if maximum is not None and value > maximum:
        return None
    return value
