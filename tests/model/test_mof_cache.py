"""The compiled MOF cache gives what a compile gives, and trusts nothing it did not write.

Judges: a fresh compile of the repository's MOF (the cache must give the same
classes, qualifiers and embedded-object fix-ups), and an adversary who plants
entries (a pickle that runs a command, a link, another user's file, a
directory others may write) where the cache looks.
"""

from __future__ import annotations

import logging
import os
import pickle
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from pywbem import CIMClass, CIMProperty, CIMQualifierDeclaration, Uint16

from lmi_mount.cim import mof_cache
from lmi_mount.cim.model import _compile, compile_inputs, find_mof_dir
from lmi_mount.cim.mof_cache import CACHE_DIR_ENV, Compiled, cache_dir, cached
from tests.support.skips import requires_root

NOBODY = 65534


def small() -> Compiled:
    qualifier = CIMQualifierDeclaration("Key", "boolean", value=False)
    cls = CIMClass("LMI_Small", properties=[
        CIMProperty("Name", None, type="string", qualifiers={"Key": True}),
        CIMProperty("Count", Uint16(3)),
    ])
    return (qualifier,), (cls,)


class Compiler:
    """``small`` that counts its calls."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> Compiled:
        self.calls += 1
        return small()


@pytest.fixture
def inputs(tmp_path: Path) -> list[Path]:
    mof = tmp_path / "mof"
    mof.mkdir()
    (mof / "a.mof").write_text("class LMI_Small { [Key] string Name; uint16 Count; };\n")
    return [mof / "a.mof"]


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "cache"


def entries(cache: Path) -> list[Path]:
    return sorted(cache.glob(f"*{mof_cache.SUFFIX}"))


def test_the_repository_model_from_the_cache_is_the_compiled_model(cache: Path) -> None:
    mof_dir = find_mof_dir()
    inputs = compile_inputs(mof_dir, Path(mof_cache.__file__))
    fresh = _compile(mof_dir)
    stored = cached("model", inputs, lambda: fresh, cache)
    compiles = Compiler()
    loaded = cached("model", inputs, compiles, cache)  # type: ignore[arg-type]
    assert compiles.calls == 0
    assert loaded is not fresh and loaded == stored == fresh
    # The compiler's fix-up that CIM-XML and the mock depend on survives.
    embedded = [(c.classname, p.name, p.embedded_object)
                for c in loaded[1] for p in c.properties.values()]
    assert embedded == [(c.classname, p.name, p.embedded_object)
                        for c in fresh[1] for p in c.properties.values()]
    assert any(kind == "instance" for _, _, kind in embedded)


def test_a_second_load_reads_the_entry(inputs: list[Path], cache: Path) -> None:
    compiles = Compiler()
    first = cached("model", inputs, compiles, cache)
    second = cached("model", inputs, compiles, cache)
    assert compiles.calls == 1 and first == second == small()
    [entry] = entries(cache)
    assert (entry.stat().st_mode & 0o777, cache.stat().st_mode & 0o777) == (0o600, 0o700)


def test_changed_input_compiles_again_and_replaces_the_old_entry(
        inputs: list[Path], cache: Path) -> None:
    compiles = Compiler()
    cached("model", inputs, compiles, cache)
    cached("interop", inputs, compiles, cache)
    [old_model, interop] = sorted(entries(cache), key=lambda p: p.name.startswith("interop"))
    inputs[0].write_text(inputs[0].read_text() + "// changed\n")
    cached("model", inputs, compiles, cache)
    assert compiles.calls == 3
    assert not old_model.exists() and interop.exists() and len(entries(cache)) == 2


def plant(cache: Path, inputs: list[Path], data: bytes) -> Path:
    cache.mkdir(mode=0o700, exist_ok=True)
    entry = cache / f"model-{mof_cache.key(inputs)}{mof_cache.SUFFIX}"
    entry.write_bytes(data)
    entry.chmod(0o600)
    return entry


class RunsACommand:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Callable[..., object], tuple[str]]:
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("planted", ["command", "truncated", "other shape", "garbage"])
def test_a_planted_or_damaged_entry_runs_nothing_and_is_compiled_again(
        inputs: list[Path], cache: Path, tmp_path: Path, planted: str,
        caplog: pytest.LogCaptureFixture) -> None:
    marker = tmp_path / "ran"
    good = pickle.dumps(small())
    data = {
        "command": pickle.dumps(((), (RunsACommand(marker),))),
        "truncated": good[: len(good) // 2],
        "other shape": pickle.dumps(({"a": 1}, ())),
        "garbage": b"\x00" * 64,
    }[planted]
    entry = plant(cache, inputs, data)
    compiles = Compiler()
    with caplog.at_level(logging.WARNING, logger=mof_cache.__name__):
        assert cached("model", inputs, compiles, cache) == small()
    assert compiles.calls == 1 and not marker.exists()
    assert entry.read_bytes() == pickle.dumps(small(), protocol=pickle.HIGHEST_PROTOCOL)
    if planted in ("command", "truncated", "garbage"):
        assert str(entry) in caplog.text


def test_a_link_in_place_of_an_entry_is_not_followed(
        inputs: list[Path], cache: Path, tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_bytes(b"not a cache entry, and not to be overwritten")
    cache.mkdir(mode=0o700)
    entry = cache / f"model-{mof_cache.key(inputs)}{mof_cache.SUFFIX}"
    entry.symlink_to(target)
    compiles = Compiler()
    assert cached("model", inputs, compiles, cache) == small()
    assert compiles.calls == 1
    assert target.read_bytes() == b"not a cache entry, and not to be overwritten"
    assert not entry.is_symlink()  # the new entry replaced the link, not its target


@requires_root
def test_an_entry_another_user_owns_is_not_read(inputs: list[Path], cache: Path) -> None:
    entry = plant(cache, inputs, pickle.dumps(((), ())))  # loads, but is not ours
    os.chown(entry, NOBODY, NOBODY)
    compiles = Compiler()
    assert cached("model", inputs, compiles, cache) == small()
    assert compiles.calls == 1


@pytest.mark.parametrize("mode", [0o777, 0o770])
def test_a_directory_others_may_write_is_not_used(
        inputs: list[Path], cache: Path, mode: int, caplog: pytest.LogCaptureFixture) -> None:
    entry = plant(cache, inputs, pickle.dumps(((), ())))
    cache.chmod(mode)
    compiles = Compiler()
    with caplog.at_level(logging.WARNING, logger=mof_cache.__name__):
        assert cached("model", inputs, compiles, cache) == small()
        assert cached("model", inputs, compiles, cache) == small()
    assert compiles.calls == 2  # neither read nor written
    assert entry.read_bytes() == pickle.dumps(((), ()))
    assert f"{mode:o}" in caplog.text and "chmod go-w" in caplog.text


def test_a_cache_that_cannot_be_written_costs_only_time(
        inputs: list[Path], tmp_path: Path) -> None:
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    compiles = Compiler()
    assert cached("model", inputs, compiles, blocked / "cache") == small()
    assert cached("model", inputs, compiles, blocked / "cache") == small()
    assert compiles.calls == 2


@requires_root
def test_a_full_cache_file_system_costs_only_time(inputs: list[Path], tmp_path: Path) -> None:
    # A tmpfs of one page, filled, in a namespace of this test's own.
    script = f"""
set -e
mount --make-rprivate /
mkdir -p {tmp_path}/full && mount -t tmpfs -o size=4k tmpfs {tmp_path}/full
mkdir -m 0700 {tmp_path}/full/cache
head -c 8192 /dev/zero > {tmp_path}/full/cache/filler 2>/dev/null || true
{shutil.which("python3") or "python3"} - <<'EOF'
from pathlib import Path
from tests.model.test_mof_cache import Compiler, small
from lmi_mount.cim.mof_cache import cached
compiles = Compiler()
inputs = [Path("{inputs[0]}")]
assert cached("model", inputs, compiles, Path("{tmp_path}/full/cache")) == small()
assert compiles.calls == 1
print("ok", sorted(p.name for p in Path("{tmp_path}/full/cache").iterdir()))
EOF
"""
    done = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                          capture_output=True, text=True, timeout=60,
                          cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok ['filler']"  # no half-written entry left


def test_where_the_cache_is(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(CACHE_DIR_ENV, str(tmp_path / "named"))
    monkeypatch.setenv("CACHE_DIRECTORY", "/var/cache/unit:/var/cache/other")
    assert cache_dir() == tmp_path / "named"
    monkeypatch.setenv(CACHE_DIR_ENV, "")
    assert cache_dir() is None
    monkeypatch.delenv(CACHE_DIR_ENV)
    assert cache_dir() == Path("/var/cache/unit")
    monkeypatch.delenv("CACHE_DIRECTORY")
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert cache_dir() == Path("/var/cache/lmi-mount")
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "lmi-mount"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative")  # the XDG spec: ignore it
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "lmi-mount"


def test_no_cache_compiles_every_time(inputs: list[Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CACHE_DIR_ENV, "")
    compiles = Compiler()
    cached("model", inputs, compiles)
    cached("model", inputs, compiles)
    assert compiles.calls == 2
