"""config: the INI form of ServerConfig, with errors that name the file, section and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from lmi_mount.server.config import ConfigError, ServerConfig, load_config
from lmi_mount.server.http import HttpLimits
from lmi_mount.server.pull import PullLimits


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "lmi-mountd.conf"
    path.write_text(text)
    return path


def test_full_file(tmp_path: Path) -> None:
    path = write(tmp_path, """
[server]
listen = 127.0.0.1, ::1
http_port = off
https_port = 15989
certfile = /etc/lmi-mount/server.pem
keyfile = /etc/lmi-mount/server.key
hostname = host.example

[auth]
plain_http = loopback
users_file = /etc/lmi-mount/users
pam_service = lmi-mountd
pam_reader_group = lmi-readers

[http]
threads = 16
request_timeout = 2.5

[enumeration]
max_contexts = 10
default_timeout = 20

[engine]
fstab = /etc/fstab
""")
    config = load_config(path)
    assert config == ServerConfig(
        listen=("127.0.0.1", "::1"), http_port=None, https_port=15989,
        certfile=Path("/etc/lmi-mount/server.pem"), keyfile=Path("/etc/lmi-mount/server.key"),
        hostname="host.example", plain_http="loopback", users_file=Path("/etc/lmi-mount/users"),
        pam_service="lmi-mountd", pam_reader_group="lmi-readers",
        http=HttpLimits(threads=16, request_timeout=2.5),
        enumeration=PullLimits(max_contexts=10, default_timeout=20),
    )


def test_overrides_win(tmp_path: Path) -> None:
    path = write(tmp_path, "[auth]\nusers_file = /u\n[server]\nhttp_port = 1\n")
    assert load_config(path, http_port=2).http_port == 2


@pytest.mark.parametrize(("text", "message"), [
    pytest.param("[server]\nhttp_prot = 1\n", "[server] has no setting 'http_prot'",
                 id="unknown-key"),
    pytest.param("[server]\nhttp_port = many\n", "[server] http_port = 'many': expected a "
                 "whole number", id="not-a-number"),
    pytest.param("[http]\nthreads = 0\n", "[http]: threads must be positive", id="limit"),
    pytest.param("[http]\nthread = 2\n", "[http] has no setting 'thread'", id="limit-key"),
    pytest.param("[auth]\nplain_http = sometimes\n", "expected refuse, loopback or allow",
                 id="plain-http"),
    pytest.param("[server]\nhttp_port = 70000\n", "http_port = 70000: not a TCP port",
                 id="port"),
    pytest.param("[server]\nhttp_port = off\nhttps_port = off\n", "nothing to listen on",
                 id="no-port"),
    pytest.param("[server]\nlisten = 127.0.0.1\n", "no users", id="no-users"),
    pytest.param("[server\n", "File contains no section headers", id="syntax"),
])
def test_errors_name_the_setting(tmp_path: Path, text: str, message: str) -> None:
    if "users" not in message and "[auth]" not in text:
        text += "[auth]\nusers_file = /u\n"
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert message in str(caught.value)
    if "section headers" not in message:
        assert str(path) in str(caught.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot read .*nope\.conf: No such file"):
        load_config(tmp_path / "nope.conf")
