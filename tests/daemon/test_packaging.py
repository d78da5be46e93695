"""dist/: the example configuration and the systemd unit stay in sync with the daemon.

The example is loaded with the daemon's own loaders (``server.config.load_config``
and ``daemon.settings``), must name every setting of every section, and must
state each default correctly on its ``# default:`` line. The unit must start
the daemon on its default configuration, keep the holder journal's directory
across restarts, and use no option that would move the service into a mount
namespace of its own (its mounts would never reach the host).
"""

from __future__ import annotations

import configparser
import dataclasses
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest

from lmi_mount import daemon
from lmi_mount.server.config import (
    IndicationSettings,
    ServerConfig,
    from_ini,
    load_config,
    read_section,
)
from lmi_mount.server.http import HttpLimits
from lmi_mount.server.pull import PullLimits
from tests.support.skips import requires_tool

DIST = Path(__file__).resolve().parents[2] / "dist"
EXAMPLE = DIST / "lmi-mountd.conf.example"
UNIT = DIST / "systemd" / "lmi-mountd.service"

# ServerConfig fields that have no INI key: in-memory users (the sandbox's),
# and the two limits dataclasses, which are sections of their own.
NOT_IN_INI = {"users", "http", "enumeration", "indications"}
SECTION_TYPES: dict[str, type[Any]] = {
    "http": HttpLimits,
    "enumeration": PullLimits,
    "indications": IndicationSettings,
    "engine": daemon.EngineSettings,
    "cim": daemon.CimSettings,
}
# Any of these gives the service a mount namespace of its own (systemd.exec(5),
# PrivateMounts= and MountFlags=), or closes the device cgroup (ProtectClock=,
# DevicePolicy=), and its mounts would not reach the host.
NAMESPACING = (
    "PrivateMounts", "MountFlags", "ProtectSystem", "ProtectHome", "ReadOnlyPaths",
    "ReadWritePaths", "InaccessiblePaths", "ExecPaths", "NoExecPaths", "TemporaryFileSystem",
    "BindPaths", "BindReadOnlyPaths", "PrivateTmp", "PrivateDevices", "ProtectKernelTunables",
    "ProtectKernelModules", "ProtectKernelLogs", "ProtectControlGroups", "ProtectProc",
    "ProcSubset", "MountAPIVFS", "RootDirectory", "RootImage", "DynamicUser", "PrivateUsers",
    "ProtectClock", "DevicePolicy", "DeviceAllow",
)


def example() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_string(EXAMPLE.read_text(encoding="utf-8"), str(EXAMPLE))
    return parser


def stated_defaults() -> configparser.ConfigParser:
    """The example with every key set to the value its ``# default:`` line states."""
    defaults = configparser.ConfigParser(interpolation=None)
    section, stated = None, None
    for number, line in enumerate(EXAMPLE.read_text(encoding="utf-8").splitlines(), 1):
        if match := re.fullmatch(r"\[(\w+)\]", line):
            section = match[1]
            defaults.add_section(section)
        elif match := re.fullmatch(r"# default: (.*)", line):
            stated = match[1]
        elif line and not line.startswith("#"):
            key = line.partition("=")[0].strip()
            assert section is not None and stated is not None, (
                f"{EXAMPLE.name}:{number}: {key} has no '# default:' line above it")
            defaults[section][key] = stated
            stated = None
    return defaults


def unit_directives() -> list[tuple[str, str, str]]:
    """(section, key, value) of each directive of the unit, repeated keys included."""
    directives, section = [], ""
    for line in UNIT.read_text(encoding="utf-8").splitlines():
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
        elif line and not line.startswith("#"):
            key, _, value = line.partition("=")
            directives.append((section, key.strip(), value.strip()))
    return directives


def unit_value(key: str) -> str:
    values = [v for _, k, v in unit_directives() if k == key]
    assert len(values) == 1, f"{UNIT.name}: {key}= appears {len(values)} times"
    return values[0]


def test_the_daemon_loads_the_example() -> None:
    server = load_config(EXAMPLE)
    assert (server.http_port, server.https_port, server.plain_http) == (None, 5989, "refuse")
    run = daemon.settings(daemon.parser().parse_args(["--config", str(EXAMPLE)]))
    assert run.server == server
    assert run.engine == daemon.EngineSettings()
    assert run.cim == daemon.CimSettings()
    assert run.sandbox is None


def test_the_example_names_every_setting() -> None:
    parser = example()
    server_keys = {f.name for f in dataclasses.fields(ServerConfig)} - NOT_IN_INI
    assert set(parser["server"]) | set(parser["auth"]) == server_keys
    for section, kind in SECTION_TYPES.items():
        assert set(parser[section]) == {f.name for f in dataclasses.fields(kind)}, section
    assert set(parser.sections()) == {"server", "auth", *SECTION_TYPES}


def test_the_example_states_every_default() -> None:
    defaults = stated_defaults()
    # ServerConfig insists on a source of users; the same one on both sides.
    users = (("someone", "reader", "secret"),)
    assert from_ini(defaults, str(EXAMPLE), users=users) == ServerConfig(users=users)
    for section in ("engine", "cim"):
        kind = SECTION_TYPES[section]
        assert read_section(defaults, section, kind, str(EXAMPLE)) == kind(), section


def test_the_unit_runs_the_daemon_on_its_default_configuration() -> None:
    command = unit_value("ExecStart").split()
    assert command == ["/usr/bin/lmi-mountd", "--config", str(daemon.DEFAULT_CONFIG)]
    assert unit_value("Type") == "notify"
    # Configuration errors exit 2 (daemon.main): no restart loop on them.
    assert unit_value("RestartPreventExitStatus") == "2"


def test_the_unit_keeps_the_holder_journal_across_restarts() -> None:
    state_dir = daemon.EngineSettings().state_dir
    assert state_dir == Path("/run") / unit_value("RuntimeDirectory")
    assert unit_value("RuntimeDirectoryPreserve") == "yes"


def test_the_unit_gives_the_compiled_model_a_cache_of_its_own() -> None:
    # systemd sets $CACHE_DIRECTORY to /var/cache/<CacheDirectory>, which
    # mof_cache.cache_dir() prefers; nobody else may write what is unpickled.
    assert unit_value("CacheDirectory") == "lmi-mount"
    assert unit_value("CacheDirectoryMode") == "0700"


def test_the_unit_stays_in_the_hosts_mount_namespace() -> None:
    used = {key for _, key, _ in unit_directives()}
    assert not used & set(NAMESPACING)
    # FUSE daemons started by mount(8) live in the unit's cgroup: they must
    # survive a stop of the service.
    assert unit_value("KillMode") == "process"


@requires_tool("systemd-analyze")
def test_systemd_accepts_the_unit(tmp_path: Path) -> None:
    # verify checks that ExecStart's program exists: point it at one that does.
    unit = tmp_path / UNIT.name
    unit.write_text(UNIT.read_text(encoding="utf-8").replace("/usr/bin/lmi-mountd",
                                                             sys.executable))
    analyze = shutil.which("systemd-analyze")
    assert analyze is not None
    done = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True,
                          timeout=60)
    complaints = [line for line in (done.stdout + done.stderr).splitlines()
                  if UNIT.name in line]
    assert done.returncode == 0 and not complaints, done.stdout + done.stderr


@pytest.mark.parametrize("section", ["server", "auth", *SECTION_TYPES])
def test_every_key_is_commented(section: str) -> None:
    """Each key has a comment besides its default: what it does."""
    text = EXAMPLE.read_text(encoding="utf-8")
    body = text.split(f"[{section}]\n", 1)[1].split("\n[", 1)[0]
    for block in body.strip().split("\n\n"):
        lines = block.splitlines()
        comments = [line for line in lines if line.startswith("#")
                    and not line.startswith("# default:")]
        assert comments, f"[{section}] {lines[-1]} has no comment"


def test_the_wheel_installs_the_man_pages_and_the_model(tmp_path: Path) -> None:
    # Built from a copy: setuptools leaves build/ and egg-info in the tree it builds.
    source = tmp_path / "source"
    shutil.copytree(Path(__file__).resolve().parents[2], source, ignore=shutil.ignore_patterns(
        ".git", "build", "*.egg-info", "_build", ".hypothesis", "__pycache__", ".*_cache"))
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation",
         "-q", "-w", str(tmp_path)],
        capture_output=True, text=True, timeout=300, check=False, stdin=subprocess.DEVNULL)
    assert built.returncode == 0, built.stderr
    [wheel] = tmp_path.glob("lmi_mount-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        data = {name.split(".data/data/", 1)[1] for name in archive.namelist()
                if ".data/data/" in name}
    assert {"share/man/man8/lmi-mountd.8", "share/man/man8/lmi-mount.8",
            "share/man/man5/lmi-mountd.conf.5", "share/lmi-mount/mof/lmi_mount.mof"} <= data
