"""mof/dmtf/extract.py: closure, dependency order, unchanged copies, and the committed result.

A small synthetic schema archive stands in for DMTF's (the real one is not on
a fresh machine); the last test checks that the committed mof/dmtf/ is still
exactly what the committed mof/lmi/ needs.
"""

from __future__ import annotations

import importlib.util
import io
import re
import sys
import tarfile
import zipfile
from pathlib import Path
from types import ModuleType

import pytest
from pywbem_mock import FakedWBEMConnection

MOF = Path(__file__).resolve().parents[2] / "mof"


def load_extract() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "lmi_mount_dmtf_extract", MOF / "dmtf" / "extract.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


extract = load_extract()

NOTICE = "// Copyright 2099 Distributed Management Task Force, Inc. (DMTF).\n// Test notice.\n"
QUALIFIERS = """\
Qualifier Association : boolean = false, Scope(association), Flavor(DisableOverride, ToSubclass);
Qualifier Description : string = null, Scope(any), Flavor(EnableOverride, ToSubclass, Translatable);
Qualifier EmbeddedInstance : string = null, Scope(property, method, parameter);
Qualifier Key : boolean = false, Scope(property, reference), Flavor(DisableOverride, ToSubclass);
Qualifier Override : string = null, Scope(property, reference, method), Flavor(EnableOverride, Restricted);
Qualifier Version : string = null, Scope(class, association, indication), Flavor(EnableOverride, Restricted, Translatable);
"""  # noqa: E501
OPTIONAL_QUALIFIERS = "Qualifier Expensive : boolean = false, Scope(any);\n"

# CIM_B needs CIM_A (superclass) and CIM_C (REF parameter); CIM_C needs CIM_D
# (EmbeddedInstance, and a description that mentions a fake "CIM_X REF y" and
# // comment that must not count). CIM_Unused is needed by nobody.
SCHEMA_CLASSES = {
    "Core/CIM_A.mof": (
        '// Copyright (c) 2099 DMTF.\n[Version ("1")]\nclass CIM_A {\n  [Key] string Id;\n};\n'
    ),
    "Core/CIM_B.mof": (
        "// Copyright (c) 2099 DMTF.\nclass CIM_B : CIM_A {\n"
        '  [Description ("CIM_X REF y // no")] uint32 Link(CIM_C REF Other);\n};\n'
    ),
    "Device/CIM_C.mof": (
        "// CIM_Unused REF Nope;\nclass CIM_C {\n"
        '  [Key] string Id;\n  [EmbeddedInstance ( "CIM_D" )] string Payload;\n};\n'
    ),
    "Device/CIM_D.mof": "class CIM_D {\n  [Key] string Id;\n};\n",
    "Core/CIM_Unused.mof": "class CIM_Unused {\n  [Key] string Id;\n};\n",
}  # fmt: skip


def make_zip(classes: dict[str, str], *, optional: str = OPTIONAL_QUALIFIERS) -> bytes:
    # The entry lists CIM_B before CIM_C on purpose: the output must reorder.
    order = ["qualifiers.mof", "qualifiers_optional.mof", *classes]
    entry = NOTICE + '#pragma locale ("en_US")\n'
    entry += "".join(f'#pragma include ("{p}")\n' for p in order)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("cim_schema_9.1.0.mof", entry)
        zf.writestr("qualifiers.mof", QUALIFIERS)
        zf.writestr("qualifiers_optional.mof", optional)
        zf.writestr("Core/", "")
        for path, text in classes.items():
            zf.writestr(path, text)
    return buf.getvalue()


def make_model(tmp_path: Path, *texts: str) -> Path:
    model = tmp_path / "lmi"
    model.mkdir()
    for n, text in enumerate(texts):
        (model / f"LMI_{n}.mof").write_text(text, encoding="utf-8")
    return model


@pytest.fixture
def archive(tmp_path: Path) -> Path:
    path = tmp_path / "schema.zip"
    path.write_bytes(make_zip(SCHEMA_CLASSES))
    return path


def includes(dmtf_mof: Path) -> list[str]:
    return re.findall(r'#pragma include \("([^"]+)"\)', dmtf_mof.read_text(encoding="utf-8"))


def test_closure_in_dependency_order_copied_unchanged(tmp_path: Path, archive: Path) -> None:
    model = make_model(tmp_path, "class LMI_Thing : CIM_B {\n};\n")
    out = tmp_path / "out"
    out.mkdir()
    written = extract.extract(archive, model, out, extra=())

    assert written == [
        "qualifiers.mof",
        "Core/CIM_A.mof",
        "Device/CIM_D.mof",
        "Device/CIM_C.mof",
        "Core/CIM_B.mof",
    ]
    assert includes(out / "dmtf.mof") == written
    for path in written[1:]:
        assert (out / path).read_text(encoding="utf-8") == SCHEMA_CLASSES[path]
    assert not (out / "Core" / "CIM_Unused.mof").exists()
    assert "Test notice." in (out / "LICENSE").read_text(encoding="utf-8")
    assert "// Test notice." in (out / "dmtf.mof").read_text(encoding="utf-8")

    # The result compiles on its own, with no search path to fall back on.
    (tmp_path / "entry.mof").write_text(
        '#pragma include ("out/dmtf.mof")\n#pragma include ("lmi/LMI_0.mof")\n', encoding="utf-8"
    )
    conn = FakedWBEMConnection()
    conn.compile_mof_file(str(tmp_path / "entry.mof"), namespace="root/cimv2")
    got = conn.EnumerateClassNames(namespace="root/cimv2", DeepInheritance=True)
    assert sorted(got) == ["CIM_A", "CIM_B", "CIM_C", "CIM_D", "LMI_Thing"]


def test_optional_qualifiers_only_when_used(tmp_path: Path, archive: Path) -> None:
    model = make_model(tmp_path, "[Expensive]\nclass LMI_Thing : CIM_A {\n};\n")
    written = extract.extract(archive, model, tmp_path, extra=())
    assert written == ["qualifiers.mof", "qualifiers_optional.mof", "Core/CIM_A.mof"]


def test_stale_files_of_a_previous_run_go(tmp_path: Path, archive: Path) -> None:
    out = tmp_path / "out"
    (out / "Old").mkdir(parents=True)
    (out / "Old" / "CIM_Old.mof").write_text("class CIM_Old { };\n", encoding="utf-8")
    (out / "extract.py").write_text("# kept\n", encoding="utf-8")
    model = make_model(tmp_path, "class LMI_Thing : CIM_D {\n};\n")
    extract.extract(archive, model, out, extra=())
    assert not (out / "Old").exists()
    assert (out / "extract.py").read_text(encoding="utf-8") == "# kept\n"
    assert (out / "Device" / "CIM_D.mof").is_file()


def test_reads_the_zip_inside_an_sdist(tmp_path: Path) -> None:
    sdist = tmp_path / "pywbem-9.9.9.tar.gz"
    data = make_zip(SCHEMA_CLASSES)
    with tarfile.open(sdist, "w:gz") as tar:
        info = tarfile.TarInfo("pywbem-9.9.9/tests/schema/cim_schema_9.1.0Final-MOFs.zip")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    model = make_model(tmp_path, "class LMI_Thing : CIM_D {\n};\n")
    assert extract.extract(sdist, model, tmp_path, extra=()) == [
        "qualifiers.mof", "Device/CIM_D.mof"]


@pytest.mark.parametrize(
    ("model_text", "classes", "message"),
    [
        pytest.param(
            "class LMI_Thing : CIM_Missing {\n};\n",
            SCHEMA_CLASSES,
            "'cim_missing' (needed by LMI_Thing) is not in the schema",
            id="missing-class",
        ),
        pytest.param(
            "class LMI_Thing : CIM_P {\n};\n",
            {
                "Core/CIM_P.mof": "class CIM_P {\n  CIM_Q REF Q;\n};\n",
                "Core/CIM_Q.mof": "class CIM_Q {\n  CIM_P REF P;\n};\n",
            },
            "dependency cycle: CIM_P -> CIM_Q -> CIM_P",
            id="cycle",
        ),
        pytest.param(
            "[Unheard]\nclass LMI_Thing : CIM_A {\n};\n",
            SCHEMA_CLASSES,
            "qualifiers used but declared nowhere: ['unheard']",
            id="undeclared-qualifier",
        ),
    ],
)
def test_inconsistent_inputs_are_named(
    tmp_path: Path, model_text: str, classes: dict[str, str], message: str
) -> None:
    path = tmp_path / "schema.zip"
    path.write_bytes(make_zip(classes))
    model = make_model(tmp_path, model_text)
    with pytest.raises(extract.ExtractError, match=re.escape(message)):
        extract.extract(path, model, tmp_path, extra=())


def test_main_reports_errors_without_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bogus = tmp_path / "not-an-archive"
    bogus.write_text("hello", encoding="utf-8")
    assert extract.main([str(bogus), "--out", str(tmp_path)]) == 1
    assert "neither a zip nor a tar archive" in capsys.readouterr().err


def test_committed_dmtf_files_are_exactly_what_the_model_needs(tmp_path: Path) -> None:
    # Rebuild a schema archive from the committed DMTF files, in the committed
    # order, and let extract.py recompute the closure of the committed model:
    # it must pick the same files in the same order. A model change that needs
    # another DMTF class fails here: rerun extract.py on pywbem's sdist.
    committed = includes(MOF / "dmtf" / "dmtf.mof")
    files = {p: (MOF / "dmtf" / p).read_text(encoding="utf-8") for p in committed}
    qualifiers = files.pop("qualifiers.mof")
    order = ["qualifiers.mof", "qualifiers_optional.mof", *files]
    entry = NOTICE + "".join(f'#pragma include ("{p}")\n' for p in order)
    path = tmp_path / "schema.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("cim_schema_2.49.0.mof", entry)
        zf.writestr("qualifiers.mof", qualifiers)
        zf.writestr("qualifiers_optional.mof", OPTIONAL_QUALIFIERS)
        for name, text in files.items():
            zf.writestr(name, text)
    out = tmp_path / "out"
    out.mkdir()
    assert extract.extract(path, MOF / "lmi", out) == committed
    assert "Distributed Management Task Force" in (MOF / "dmtf" / "LICENSE").read_text(
        encoding="utf-8"
    )
