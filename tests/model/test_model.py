"""The MOF compiles cleanly, and lmi_mount.cim.model finds, caches and installs it."""

from __future__ import annotations

import re
import shutil
import warnings
from pathlib import Path

import pytest
from pywbem import CIMClass, CIMProperty
from pywbem_mock import FakedWBEMConnection

from lmi_mount.cim import names
from lmi_mount.cim.model import (
    ENTRY_MOF,
    MOF_DIR_ENV,
    Model,
    ModelError,
    find_mof_dir,
    install_model,
    load_model,
)

REPO_MOF = Path(__file__).resolve().parents[2] / "mof"

# What pywbem's MOF compiler logs in verbose mode while everything goes to
# plan. Anything else (a class pulled from the search path because an include
# is missing or out of order, a class modified because it already existed, an
# error) is a finding.
COMPILER_PROGRESS = re.compile(
    r"^(Compiling file '[^']+'|Target namespace '[^']+'|Setting qualifier \S+|Creating class \S+)$"
)


def test_mof_compiles_with_no_warning_and_only_progress_messages(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # A fresh compile, not the cached model, in verbose mode so that the
    # compiler says what it does. No search path: the compiler cannot fetch a
    # class by file name, so this also fails if lmi_mount.mof or dmtf/dmtf.mof
    # lists a file before one it depends on.
    conn = FakedWBEMConnection()
    capsys.readouterr()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        conn.compile_mof_file(
            str(REPO_MOF / ENTRY_MOF), namespace=names.NAMESPACE, search_paths=None, verbose=True
        )
    assert [str(w.message) for w in caught] == []
    out = capsys.readouterr()
    assert out.err == ""
    lines = [line.strip() for line in out.out.splitlines() if line.strip()]
    unexpected = [line for line in lines if not COMPILER_PROGRESS.match(line)]
    assert unexpected == []
    created = [line.split()[-1] for line in lines if line.startswith("Creating class")]
    assert len(created) == len(set(created))
    assert {c.split(":")[-1] for c in created} >= set(names.LMI_CLASSES)


def test_model_holds_every_lmi_class_in_include_order(model: Model) -> None:
    assert model.lmi_classnames == names.LMI_CLASSES


def test_model_classes_come_after_their_superclasses(model: Model) -> None:
    seen: set[str] = set()
    for cls in model.classes:
        assert cls.superclass is None or cls.superclass.lower() in seen, cls.classname
        seen.add(cls.classname.lower())


def test_model_is_compiled_once_per_process(model: Model) -> None:
    assert load_model() is model
    assert load_model(REPO_MOF) is model


def embedded_elements(cls: CIMClass) -> list[tuple[str, CIMProperty]]:
    found = [(f"{cls.classname}.{p.name}", p) for p in cls.properties.values()]
    for method in cls.methods.values():
        found += [
            (f"{cls.classname}.{method.name}({p.name})", p) for p in method.parameters.values()
        ]
    return [(where, e) for where, e in found if "EmbeddedInstance" in e.qualifiers]


def test_embedded_instance_elements_say_instance(model: Model) -> None:
    # FIELD_NOTES: pywbem 1.9's compiler leaves embedded_object None, and the
    # mock then rejects a CIMInstance for such a parameter.
    elements = [e for cls in model.classes for e in embedded_elements(cls)]
    wrong = [where for where, element in elements if element.embedded_object != "instance"]
    assert wrong == []
    where = {w for w, _ in elements}
    assert {
        "LMI_MountConfigurationService.CreateMount(Error)",
        "LMI_MountConfigurationService.DeleteMount(Error)",
        "LMI_MountConfigurationService.ModifyMount(Error)",
        "LMI_MountJob.GetError(Error)",
        "LMI_MountJob.JobInParameters",
        "LMI_MountJob.JobOutParameters",
    } <= where


def test_install_model_adds_every_class_and_qualifier(model: Model) -> None:
    conn = FakedWBEMConnection()
    install_model(conn)
    got = conn.EnumerateClassNames(namespace=names.NAMESPACE, DeepInheritance=True)
    assert sorted(got) == sorted(c.classname for c in model.classes)
    quals = conn.EnumerateQualifiers(namespace=names.NAMESPACE)
    assert sorted(q.name for q in quals) == sorted(q.name for q in model.qualifiers)
    served = conn.GetClass(
        names.MOUNT_JOB,
        namespace=names.NAMESPACE,
        LocalOnly=False,
        IncludeQualifiers=True,
        IncludeClassOrigin=True,
    )
    served.path = None
    assert served == model.get_class(names.MOUNT_JOB)


def test_install_model_creates_the_namespace_and_is_idempotent(model: Model) -> None:
    conn = FakedWBEMConnection()
    install_model(conn, "root/elsewhere")
    install_model(conn, "root/elsewhere")
    assert "root/elsewhere" in conn.cimrepository.namespaces
    got = conn.EnumerateClassNames(namespace="root/elsewhere", DeepInheritance=True)
    assert len(got) == len(model.classes)


def test_install_model_refuses_a_different_class_and_adds_nothing(model: Model) -> None:
    conn = FakedWBEMConnection()
    conn.add_cimobjects(CIMClass("CIM_Error"), namespace=names.NAMESPACE)
    with pytest.raises(ModelError, match="CIM_Error"):
        install_model(conn)
    assert conn.EnumerateClassNames(namespace=names.NAMESPACE) == ["CIM_Error"]
    assert conn.EnumerateQualifiers(namespace=names.NAMESPACE) == []


def test_installed_classes_do_not_share_objects_with_the_model(model: Model) -> None:
    conn = FakedWBEMConnection()
    install_model(conn)
    store = conn.cimrepository.get_class_store(names.NAMESPACE)
    stored = store.get(names.MOUNTED_FILE_SYSTEM, copy=False)
    stored.properties["Holders"].qualifiers["Description"].value = "changed"
    assert (
        model.get_class(names.MOUNTED_FILE_SYSTEM)
        .properties["Holders"]
        .qualifiers["Description"]
        .value.startswith("lmi-mount extension.")
    )


def test_find_mof_dir_defaults_to_the_source_tree(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(MOF_DIR_ENV, raising=False)
    assert find_mof_dir().resolve() == REPO_MOF


def test_find_mof_dir_follows_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    copy = tmp_path / "mof"
    shutil.copytree(REPO_MOF, copy)
    monkeypatch.setenv(MOF_DIR_ENV, str(copy))
    assert find_mof_dir() == copy


def test_find_mof_dir_names_a_wrong_environment_value(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(MOF_DIR_ENV, str(tmp_path))
    with pytest.raises(ModelError, match=re.escape(str(tmp_path))):
        find_mof_dir()


def test_a_broken_mof_is_a_model_error_naming_the_file(tmp_path: Path) -> None:
    (tmp_path / ENTRY_MOF).write_text("class LMI_Broken : CIM_Missing { };\n", encoding="utf-8")
    with pytest.raises(ModelError, match=ENTRY_MOF):
        load_model(tmp_path)
