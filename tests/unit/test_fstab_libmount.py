"""fstab parsing against libmount, the parser of mount(8), findmnt and systemd.

Same bytes to both, same result: every entry libmount reads, lmi-mount reads
with the same fields (escapes of every octal value decoded to the same
bytes), and every line libmount calls broken, lmi-mount reports. The first
build missed trailing text after passno, 3-field lines and NUL bytes, and
decoded ``\\303\\251`` as "Ã©".
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lmi_mount.linux.files import ENCODING, ENCODING_ERRORS
from lmi_mount.mounts.fstab import FstabDocument, FstabEntry, FstabError
from tests.support.libmount import Entry, parse_fstab, requires_libmount

pytestmark = requires_libmount


def ours(data: bytes) -> tuple[list[Entry], list[int]]:
    """lmi-mount's reading of ``data``, in the oracle's terms (fields as bytes)."""
    document = FstabDocument.parse(data.decode(ENCODING, ENCODING_ERRORS))

    def raw(text: str) -> bytes:
        return text.encode(ENCODING, ENCODING_ERRORS)

    entries = [
        Entry(raw(line.entry.spec), raw(line.entry.target), raw(line.entry.fstype),
              raw(line.entry.options), line.entry.freq, line.entry.passno)
        for line in document.entries()
    ]
    broken = [problem.line for problem in document.problems() if problem.kind == "unparsable"]
    return entries, broken


def theirs(data: bytes) -> tuple[list[Entry], list[int]]:
    table = parse_fstab(data)
    # A line without options and one whose options decode to nothing both
    # mean mount(8)'s defaults; lmi-mount holds "" for either.
    entries = [Entry(e.source, e.target, e.fstype, e.options or b"", e.freq, e.passno)
               for e in table.entries]
    return entries, list(table.errors)


@pytest.mark.parametrize("data", [
    pytest.param(b"UUID=1 /data ext4 defaults 0 2 # data disk\n", id="text-after-passno"),
    pytest.param(b"/dev/sdb1 /data ext4\n", id="three-fields"),
    pytest.param(b"/srv/caf\\303\\251 /mnt/\\351t\\351 none bind\n", id="utf8-and-latin1-escapes"),
    pytest.param(b"/a /b\\000hidden t o\n/a /c\\400 t o\n/a /d\\777 t o\n",
                 id="nul-and-high-escapes"),
    pytest.param(b"/a /b t o\x00x\n/a /c t o\n", id="raw-nul"),
    pytest.param(b"/a /b t o 1 2\x00x", id="raw-nul-on-a-last-line-without-newline"),
    pytest.param(b"/a /b t o -1 +2\n/a /c t o 99999999999 0\n", id="signed-and-huge-numbers"),
    pytest.param(b"/a /b t o 1x\n/a /c t o 1 2x\n/a /d t o \x0b3\n", id="bad-numbers"),
    pytest.param(b"  /a\t/b \t t  o\r\n#c\r\n\t\r\n/a /e t\x0bo\n", id="blanks-crlf-comments"),
])
def test_known_cases_read_as_libmount_reads_them(data: bytes) -> None:
    assert ours(data) == theirs(data)


_OCTAL = st.integers(0, 0o777).map(lambda value: f"\\{value:03o}".encode())
_FIELD_PIECES = st.one_of(
    st.binary(min_size=1, max_size=4).filter(lambda b: not set(b) & {9, 10, 32}),
    _OCTAL,
    st.sampled_from([b"\\", b"\\0", b"\\12", b"#", b"=", b",", b'"', b"\r", b"\x0b",
                     b"\xc3\xa9", b"\xff", b"UUID=", b"//host/share", b"-"]),
)
_FIELDS = st.lists(_FIELD_PIECES, min_size=1, max_size=4).map(b"".join)
_NUMBERS = st.sampled_from([b"0", b"1", b"2", b"007", b"-1", b"+3", b"x", b"2147483648",
                            b"99999999999999999999", b"1#", b"\x0b4", b"\xb2"])
_SEPARATORS = st.sampled_from([b" ", b"\t", b"  ", b" \t ", b"\t\t"])


@st.composite
def _lines(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["entry", "entry", "entry", "comment", "blank", "junk"]))
    if kind == "comment":
        return draw(_SEPARATORS.map(lambda s: s[:1] if s else b"")) * draw(
            st.integers(0, 1)) + b"#" + draw(st.binary(max_size=10)).replace(b"\n", b"")
    if kind == "blank":
        return draw(st.sampled_from([b"", b" ", b"\t \t"]))
    if kind == "junk":
        return draw(st.binary(max_size=30)).replace(b"\n", b"")
    fields = draw(st.lists(_FIELDS, min_size=1, max_size=4))
    fields += draw(st.lists(_NUMBERS, max_size=3))
    if draw(st.booleans()):
        fields.append(draw(st.sampled_from([b"# comment", b"extra words", b"\x00nul"])))
    line = fields[0]
    for field in fields[1:]:
        line += draw(_SEPARATORS) + field
    return draw(st.sampled_from([b"", b" ", b"\t"])) + line + draw(
        st.sampled_from([b"", b" ", b"\r"]))


@st.composite
def fstab_bytes(draw: st.DrawFn) -> bytes:
    lines = draw(st.lists(_lines(), max_size=8))
    text = b"".join(line + draw(st.sampled_from([b"\n", b"\r\n"])) for line in lines)
    if text and draw(st.booleans()):
        text = text.rstrip(b"\n")  # no final newline
    return text


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fstab_bytes())
def test_any_fstab_reads_as_libmount_reads_it(data: bytes) -> None:
    assert ours(data) == theirs(data)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fstab_bytes())
def test_an_added_line_leaves_libmount_every_line_it_read(data: bytes) -> None:
    # A last line without a newline holding a NUL is an entry to libmount (it
    # reads up to the NUL); ended by the newline an added line brings, it was
    # a parse error, and the entry was gone (a review). An edit either keeps
    # what libmount read and adds the line, or is refused.
    document = FstabDocument.parse(data.decode(ENCODING, ENCODING_ERRORS))
    entry = FstabEntry("tmpfs", "/srv/lmi-added", "tmpfs", "size=1m")
    try:
        edited = document.add(entry)
    except FstabError as refused:
        assert "NUL" in str(refused)
        return
    before, _ = theirs(data)
    after, _ = theirs(edited.render().encode(ENCODING, ENCODING_ERRORS))
    assert after == [*before, Entry(b"tmpfs", b"/srv/lmi-added", b"tmpfs", b"size=1m", 0, 0)]


def test_an_added_line_after_a_last_line_with_a_nul_is_refused() -> None:
    document = FstabDocument.parse("# x\ntmpfs /a tmpfs size=1m\0 stale junk")
    with pytest.raises(FstabError, match=r"last line \(2\) holds a NUL byte"):
        document.add(FstabEntry("tmpfs", "/b", "tmpfs", "defaults"))
