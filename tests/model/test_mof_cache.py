"""The compiled MOF cache gives what a compile gives, and trusts nothing it did not write.

Judges: a fresh compile of the repository's MOF (the cache must give the same
classes, qualifiers and embedded-object fix-ups), and an adversary who plants
entries (a pickle that runs a command, a link, another user's file, a
directory others may write) where the cache looks.
"""

from __future__ import annotations

import contextlib
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
Inputs = Callable[[], list[Path]]


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
def mof(tmp_path: Path) -> Path:
    mof = tmp_path / "mof"
    mof.mkdir()
    (mof / "a.mof").write_text("class LMI_Small { [Key] string Name; uint16 Count; };\n")
    return mof


@pytest.fixture
def inputs(mof: Path) -> Inputs:
    return lambda: compile_inputs(mof)


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "cache"


def entries(cache: Path) -> list[Path]:
    return sorted(cache.glob(f"*{mof_cache.SUFFIX}"))


def test_the_repository_model_from_the_cache_is_the_compiled_model(cache: Path) -> None:
    mof_dir = find_mof_dir()
    inputs = lambda: compile_inputs(mof_dir, Path(mof_cache.__file__))  # noqa: E731
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


def test_a_second_load_reads_the_entry(inputs: Inputs, cache: Path) -> None:
    compiles = Compiler()
    first = cached("model", inputs, compiles, cache)
    second = cached("model", inputs, compiles, cache)
    assert compiles.calls == 1 and first == second == small()
    [entry] = entries(cache)
    assert (entry.stat().st_mode & 0o777, cache.stat().st_mode & 0o777) == (0o600, 0o700)


def test_changed_input_compiles_again_and_replaces_the_old_entry(
        inputs: Inputs, cache: Path) -> None:
    compiles = Compiler()
    cached("model", inputs, compiles, cache)
    cached("interop", inputs, compiles, cache)
    [a] = inputs()
    a.write_text(a.read_text() + "// changed\n")
    cached("model", inputs, compiles, cache)
    assert compiles.calls == 3 and len(entries(cache)) == 3


def test_a_change_anywhere_in_the_tree_compiles_again(mof: Path, tmp_path: Path,
                                                       cache: Path) -> None:
    # A distribution may link a shared CIM schema in; a file of the same name
    # elsewhere in the tree is another input.
    shared = tmp_path / "shared-schema"
    shared.mkdir()
    (shared / "CIM_Thing.mof").write_text("class CIM_Thing { };\n")
    (mof / "dmtf").symlink_to(shared)
    (mof / "lmi").mkdir()
    (mof / "lmi" / "a.mof").write_text("// the same name as ../a.mof\n")
    compiles = Compiler()
    inputs = lambda: compile_inputs(mof)  # noqa: E731
    cached("model", inputs, compiles, cache)
    (shared / "CIM_Thing.mof").write_text("class CIM_Thing { string Planted; };\n")
    cached("model", inputs, compiles, cache)
    (mof / "lmi" / "a.mof").write_text("// changed\n")
    cached("model", inputs, compiles, cache)
    (mof / "lmi" / "b.MOF").write_text("// another MOF file\n")
    cached("model", inputs, compiles, cache)
    assert compiles.calls == 4


def test_what_the_compile_never_reads_is_not_read(mof: Path, cache: Path) -> None:
    # A 1 TB sparse dump, an editor's swap file nobody may read, a FIFO named
    # like a MOF file, a tree deeper than Python's recursion limit: a compile
    # needs none of them, and neither does the key (a review made each fail
    # the load or turn the cache off).
    with open(mof / "core.dump", "wb") as dump:
        dump.truncate(2**40)
    swap = mof / ".a.mof.swp"
    swap.write_text("")
    swap.chmod(0)
    os.mkfifo(mof / "pipe.mof")
    spelled = str(mof)
    try:
        for _ in range(1100):
            spelled += "/d"
            os.mkdir(spelled)
        deep = Path(spelled)
        (deep / "deep.mof").write_text("// far down\n")
        assert compile_inputs(mof) == [mof / "a.mof", deep / "deep.mof"]
        compiles = Compiler()
        cached("model", lambda: compile_inputs(mof), compiles, cache)
        cached("model", lambda: compile_inputs(mof), compiles, cache)
        assert compiles.calls == 1
    finally:
        # Deepest first: pytest's clean-up of old temporary directories (3.11's
        # recursive shutil.rmtree) cannot remove a tree this deep.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(spelled, "deep.mof"))
        while spelled != str(mof):
            with contextlib.suppress(FileNotFoundError):
                os.rmdir(spelled)
            spelled = os.path.dirname(spelled)


def test_a_link_loop_in_the_tree_ends(mof: Path, cache: Path) -> None:
    (mof / "loop").symlink_to(mof)
    assert compile_inputs(mof) == [mof / "a.mof"]


def test_a_compile_whose_input_changed_meanwhile_is_not_stored(
        inputs: Inputs, cache: Path) -> None:
    [a] = inputs()

    def compile_during_an_update() -> Compiled:
        a.write_text(a.read_text() + "// a package update meanwhile\n")
        return small()

    assert cached("model", inputs, compile_during_an_update, cache) == small()
    assert entries(cache) == []
    compiles = Compiler()
    cached("model", inputs, compiles, cache)
    cached("model", inputs, compiles, cache)
    assert compiles.calls == 1


def test_older_entries_beyond_the_newest_few_go_and_other_files_stay(
        inputs: Inputs, cache: Path) -> None:
    cache.mkdir(mode=0o700)
    theirs = [cache / "model-resnet50.pickle", cache / "notes.txt"]
    for path in theirs:
        path.write_text("not ours")
    [a] = inputs()
    keys = []
    for number in range(mof_cache.KEEP + 2):
        a.write_text(f"// version {number}\n")
        cached("model", inputs, Compiler(), cache)
        keys.append(mof_cache.key(inputs()))
        os.utime(cache / f"model-{keys[-1]}{mof_cache.SUFFIX}", (number, number))
    # Kept: the newest KEEP. A hit makes its entry the newest again.
    kept = keys[-mof_cache.KEEP:]
    a.write_text(f"// version {len(keys) - mof_cache.KEEP}\n")
    hits = Compiler()
    cached("model", inputs, hits, cache)
    assert hits.calls == 0
    a.write_text("// one more version\n")
    cached("model", inputs, Compiler(), cache)
    expected = {kept[0], *kept[2:], mof_cache.key(inputs())}  # kept[1] was the oldest
    left = {p.name for p in cache.iterdir()}
    assert left == {p.name for p in theirs} | {f"model-{k}{mof_cache.SUFFIX}" for k in expected}


def plant(cache: Path, inputs: Inputs, data: bytes) -> Path:
    cache.mkdir(mode=0o700, exist_ok=True)
    entry = cache / f"model-{mof_cache.key(inputs())}{mof_cache.SUFFIX}"
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
        inputs: Inputs, cache: Path, tmp_path: Path, planted: str,
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
        inputs: Inputs, cache: Path, tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_bytes(b"not a cache entry, and not to be overwritten")
    cache.mkdir(mode=0o700)
    entry = cache / f"model-{mof_cache.key(inputs())}{mof_cache.SUFFIX}"
    entry.symlink_to(target)
    compiles = Compiler()
    assert cached("model", inputs, compiles, cache) == small()
    assert compiles.calls == 1
    assert target.read_bytes() == b"not a cache entry, and not to be overwritten"
    assert not entry.is_symlink()  # the new entry replaced the link, not its target


@requires_root
def test_an_entry_another_user_owns_is_not_read(inputs: Inputs, cache: Path) -> None:
    entry = plant(cache, inputs, pickle.dumps(((), ())))  # loads, but is not ours
    os.chown(entry, NOBODY, NOBODY)
    compiles = Compiler()
    assert cached("model", inputs, compiles, cache) == small()
    assert compiles.calls == 1


@pytest.mark.parametrize("mode", [0o777, 0o770])
def test_a_directory_others_may_write_is_not_used(
        inputs: Inputs, cache: Path, mode: int, caplog: pytest.LogCaptureFixture) -> None:
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
        inputs: Inputs, tmp_path: Path) -> None:
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    compiles = Compiler()
    assert cached("model", inputs, compiles, blocked / "cache") == small()
    assert cached("model", inputs, compiles, blocked / "cache") == small()
    assert compiles.calls == 2


@requires_root
def test_a_full_cache_file_system_costs_only_time(inputs: Inputs, tmp_path: Path) -> None:
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
inputs = lambda: [Path("{inputs()[0]}")]
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
    monkeypatch.setenv("CACHE_DIRECTORY", "/var/cache/lmi-mount:/var/cache/other")
    assert cache_dir() == tmp_path / "named"
    monkeypatch.setenv(CACHE_DIR_ENV, "")
    assert cache_dir() is None
    monkeypatch.delenv(CACHE_DIR_ENV)
    assert cache_dir() == Path("/var/cache/lmi-mount")
    # Inherited from another unit (a script a service runs): that cache is not ours.
    monkeypatch.setenv("CACHE_DIRECTORY", "/var/cache/othersvc")
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert cache_dir() == Path("/var/cache/lmi-mount")
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "lmi-mount"
    monkeypatch.delenv("CACHE_DIRECTORY")
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert cache_dir() == Path("/var/cache/lmi-mount")
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "lmi-mount"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative")  # the XDG spec: ignore it
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "lmi-mount"


def test_no_cache_compiles_every_time(inputs: Inputs, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CACHE_DIR_ENV, "")
    compiles = Compiler()
    cached("model", inputs, compiles)
    cached("model", inputs, compiles)
    assert compiles.calls == 2


def test_what_a_killed_writer_left_goes_once_it_is_old(inputs: Inputs, cache: Path) -> None:
    cache.mkdir(mode=0o700)
    name = f".model-{'0' * 40}{mof_cache.SUFFIX}"
    stale, fresh = cache / f"{name}.4242.0badc0de", cache / f"{name}.4243.0badc0df"
    for scratch in (stale, fresh):
        scratch.write_bytes(b"half an entry")
    os.utime(stale, (0, 0))
    cached("model", inputs, Compiler(), cache)
    assert not stale.exists() and fresh.exists()
