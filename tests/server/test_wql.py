"""wql: the parser names bad tokens, the class check catches what cannot work, and the
evaluation follows SQL's three-valued logic."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pywbem import CIMError, CIMInstance, CIMInstanceName, CIMProperty, Uint32

from lmi_mount.cim.model import Model
from lmi_mount.server import wql

MOUNTS = "LMI_MountedFileSystem"


def mount(target: str, count: int | None, holders: list[str] | None = None,
          fstype: str | None = "ext4") -> CIMInstance:
    path = CIMInstanceName(MOUNTS, {"FileSystemSpec": "/dev/x", "MountPointPath": target})
    return CIMInstance(MOUNTS, path=path, properties=[
        CIMProperty("MountPointPath", target),
        CIMProperty("FileSystemType", fstype, type="string"),
        CIMProperty("ReferenceCount", None if count is None else Uint32(count), type="uint32"),
        CIMProperty("Holders", holders, type="string", is_array=True),
    ])


ROWS = [
    mount("/mnt/a", 1, ["root"]),
    mount("/mnt/b", 3, ["root", "bob"], fstype="xfs"),
    mount("/mnt/c", None, None, fstype=None),
]


def selected(query: str) -> list[str]:
    parsed = wql.parse(query)
    return [row["MountPointPath"] for row in parsed.select(ROWS)]


@pytest.mark.parametrize(("where", "expected"), [
    pytest.param('MountPointPath = "/mnt/a"', ["/mnt/a"], id="equal-double-quotes"),
    pytest.param("MountPointPath = '/mnt/b'", ["/mnt/b"], id="equal-single-quotes"),
    pytest.param('mountpointpath <> "/mnt/a"', ["/mnt/b", "/mnt/c"], id="not-equal-any-case"),
    pytest.param('MountPointPath != "/mnt/a"', ["/mnt/b", "/mnt/c"], id="bang-equal"),
    pytest.param("ReferenceCount > 1", ["/mnt/b"], id="greater"),
    pytest.param("ReferenceCount >= 1", ["/mnt/a", "/mnt/b"], id="null-is-unknown"),
    pytest.param("1 < ReferenceCount", ["/mnt/b"], id="literal-first"),
    pytest.param("ReferenceCount <= 0x3", ["/mnt/a", "/mnt/b"], id="hex"),
    pytest.param("FileSystemType IS NULL", ["/mnt/c"], id="is-null"),
    pytest.param("FileSystemType IS NOT NULL", ["/mnt/a", "/mnt/b"], id="is-not-null"),
    pytest.param("NOT ReferenceCount = 1", ["/mnt/b"], id="not-unknown-stays-unknown"),
    pytest.param('ReferenceCount = 1 OR FileSystemType = "xfs"', ["/mnt/a", "/mnt/b"],
                 id="or"),
    pytest.param('(ReferenceCount = 3 OR ReferenceCount = 1) AND FileSystemType = "ext4"',
                 ["/mnt/a"], id="parentheses"),
    pytest.param('FileSystemType = "ext4" OR ReferenceCount > 100', ["/mnt/a"],
                 id="or-with-unknown"),
    pytest.param("ReferenceCount = NULL", [], id="equal-null-is-unknown"),
])
def test_where(where: str, expected: list[str]) -> None:
    assert selected(f"SELECT * FROM {MOUNTS} WHERE {where}") == expected


def test_lmishell_query_and_projection() -> None:
    query = wql.parse(f'select MountPointPath, Holders from {MOUNTS} where '
                      'MountPointPath = "/mnt/b";')
    (row,) = list(query.select(ROWS))
    assert set(row.properties) == {"MountPointPath", "Holders"}
    assert row.path == ROWS[1].path
    assert query.property_list() == ["MountPointPath", "Holders"]


def test_property_list_adds_what_the_condition_reads() -> None:
    query = wql.parse(f"SELECT Holders FROM {MOUNTS} WHERE ReferenceCount > 1")
    assert query.property_list() == ["Holders", "referencecount"]
    assert wql.parse(f"SELECT * FROM {MOUNTS}").property_list() is None


@pytest.mark.parametrize(("query", "message"), [
    pytest.param(f"SELECT FROM {MOUNTS}", "expected a property name or *, found 'FROM' at "
                 "position 7", id="no-selection"),
    pytest.param("SELECT * FROM", "expected a class name, found the end of the query",
                 id="no-class"),
    pytest.param(f"SELECT * {MOUNTS}", f"expected FROM, found '{MOUNTS}' at position 9",
                 id="no-from"),
    pytest.param(f"SELECT * FROM {MOUNTS} WHERE", "expected a property or a value",
                 id="empty-where"),
    pytest.param(f"SELECT * FROM {MOUNTS} WHERE A == 1", "found '=' at position",
                 id="double-equal"),
    pytest.param(f"SELECT * FROM {MOUNTS} WHERE (A = 1", "expected ')' to close '('",
                 id="unclosed"),
    pytest.param(f"SELECT * FROM {MOUNTS} WHERE A = 1 B", "unexpected 'B'", id="trailing"),
    pytest.param(f"SELECT * FROM {MOUNTS} WHERE A = @", "unexpected character '@'",
                 id="bad-character"),
    pytest.param(f"SELECT * FROM {MOUNTS} WHERE 1 = 1", "names no property",
                 id="no-property"),
    pytest.param(f"SELECT * FROM {MOUNTS} WHERE A IS 1", "expected NULL", id="is-value"),
    pytest.param(f"SELECT * FROM {MOUNTS} WHERE " + "(" * 40 + "A = 1" + ")" * 40,
                 "nest deeper than 32", id="too-deep"),
    # int() refuses 4300 digits and more: the first build said "internal error".
    pytest.param(f"SELECT * FROM {MOUNTS} WHERE A = " + "9" * 4400,
                 "has 4400 characters", id="huge-number"),
])
def test_syntax_errors_name_the_token(query: str, message: str) -> None:
    with pytest.raises(CIMError) as caught:
        wql.parse(query)
    assert caught.value.status_code_name == "CIM_ERR_INVALID_QUERY"
    assert message in caught.value.status_description


@pytest.mark.parametrize(("query", "message"), [
    pytest.param(f"SELECT Nope FROM {MOUNTS}", "has no property 'Nope'", id="select-unknown"),
    pytest.param(f"SELECT * FROM {MOUNTS} WHERE Nope = 1", "has no property 'Nope'",
                 id="where-unknown"),
    pytest.param(f'SELECT * FROM {MOUNTS} WHERE ReferenceCount = "x"',
                 "cannot compare a number with a string", id="type-mismatch"),
    pytest.param(f"SELECT * FROM {MOUNTS} WHERE Holders = 'x'", "array property 'Holders'",
                 id="array"),
])
def test_class_check(model: Model, query: str, message: str) -> None:
    parsed = wql.parse(query)
    with pytest.raises(CIMError) as caught:
        parsed.check(model.get_class(MOUNTS))
    assert caught.value.status_code_name == "CIM_ERR_INVALID_QUERY"
    assert message in caught.value.status_description


def test_class_check_accepts_the_lmishell_query(model: Model) -> None:
    wql.parse(f'select * from {MOUNTS} where MountPointPath = "/mnt"').check(
        model.get_class(MOUNTS))
    setting = model.get_class("LMI_MountedFileSystemSetting")
    wql.parse("SELECT * FROM LMI_MountedFileSystemSetting WHERE AllowWrite = TRUE").check(
        setting)
    with pytest.raises(CIMError, match="booleans compare with = and <> only"):
        wql.parse("SELECT * FROM LMI_MountedFileSystemSetting WHERE AllowWrite > FALSE").check(
            setting)


@pytest.mark.parametrize("language", [None, "DMTF:CQL", "SQL", ""])
def test_only_wql(language: str | None) -> None:
    with pytest.raises(CIMError) as caught:
        wql.check_language(language)
    assert caught.value.status_code_name == "CIM_ERR_QUERY_LANGUAGE_NOT_SUPPORTED"
    wql.check_language("wql")


@given(st.text(max_size=120))
@settings(max_examples=300, deadline=None)
def test_any_text_parses_or_is_an_invalid_query(text: str) -> None:
    try:
        query = wql.parse(text)
    except CIMError as exc:
        assert exc.status_code_name == "CIM_ERR_INVALID_QUERY"
    else:
        assert query.classname
