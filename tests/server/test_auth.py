"""auth: salted scrypt hashes, the users file, Basic credentials, the cache, and PAM."""

from __future__ import annotations

import base64
import ctypes.util
import io
import os
from pathlib import Path

import pytest

from lmi_mount.server import auth
from lmi_mount.server.auth import (
    Authenticator,
    AuthError,
    Identity,
    Pam,
    PamConfig,
    Role,
    UsersDatabase,
    UsersFile,
    UsersFileError,
)


def cheap_hash(password: str) -> str:
    """A fast hash: these tests check logic, not cost."""
    return auth.hash_password(password, n=2**4, r=1, p=1)


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_hash_round_trip_and_salt() -> None:
    first = cheap_hash("pässword")
    second = cheap_hash("pässword")
    assert first != second  # salted
    assert auth.verify_password("pässword", first)
    assert not auth.verify_password("password", first)
    assert not auth.verify_password("pässword", "scrypt$16$1$1$bad")


def test_default_cost_entry_verifies() -> None:
    line = auth.make_users_entry("alice", "admin", "s3cret")
    user, role, password_hash = line.split(":", 2)
    assert (user, role) == ("alice", "admin")
    assert password_hash.startswith(f"scrypt${auth.SCRYPT_N}$")
    assert auth.verify_password("s3cret", password_hash)


@pytest.mark.parametrize(("text", "message"), [
    pytest.param("alice:admin\n", "users:1: expected user:role:hash", id="two-fields"),
    pytest.param("alice:root:{h}\n", "role 'root' is not one of reader, admin", id="role"),
    pytest.param("alice:admin:md5$xyz\n", "not a scrypt$N$r$p$salt$hash", id="scheme"),
    pytest.param("alice:admin:scrypt$3$1$1$AAAA$AAAA\n", "out of range", id="cost"),
    pytest.param("# users\n\nalice:admin:{h}\nalice:reader:{h}\n",
                 "users:4: user 'alice' appears twice", id="duplicate"),
    pytest.param(":admin:{h}\n", "is empty", id="no-name"),
])
def test_users_file_errors_name_the_line(text: str, message: str) -> None:
    good_hash = cheap_hash("x")
    with pytest.raises(UsersFileError) as caught:
        auth.parse_users(text.replace("{h}", good_hash), "users")
    assert message in str(caught.value)


def write_users(path: Path, *lines: str) -> None:
    path.write_text("# lmi-mountd users\n" + "".join(f"{line}\n" for line in lines))
    path.chmod(0o600)


def test_users_file_is_read_again_when_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "users"
    write_users(path, f"alice:admin:{cheap_hash('a')}")
    users = UsersFile(path)
    assert users.get("alice") is not None and users.get("bob") is None
    write_users(path, f"alice:admin:{cheap_hash('a')}",
                f"bob:reader:{cheap_hash('b')}")
    os.utime(path, ns=(1, 1))  # a new stamp even within the same clock tick
    entry = users.get("bob")
    assert entry is not None and entry.role is Role.READER
    # A broken edit keeps the last good contents.
    path.write_text("garbage\n")
    assert users.get("bob") is not None


def test_users_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "users"
    write_users(path)
    path.chmod(0o644)
    with pytest.raises(UsersFileError, match="mode 644: others could read it; chmod o-rwx"):
        UsersFile(path)


def test_a_users_file_someone_else_owns_is_refused(tmp_path: Path) -> None:
    # A 0600 file owned by nobody was accepted: that user made himself admin.
    if os.geteuid() != 0:
        pytest.skip("needs root to give the file to another user")
    path = tmp_path / "users"
    write_users(path)
    path.chmod(0o600)
    os.chown(path, 65534, 65534)
    with pytest.raises(UsersFileError,
                       match=r"owned by uid 65534.*write a new one as root and mv it over"):
        UsersFile(path)


def test_a_users_file_that_is_a_symlink_is_refused(tmp_path: Path) -> None:
    real = tmp_path / "real"
    write_users(real)
    real.chmod(0o600)
    (tmp_path / "users").symlink_to(real)
    with pytest.raises(UsersFileError, match="is a symbolic link"):
        UsersFile(tmp_path / "users")


@pytest.mark.parametrize(("header", "message"), [
    pytest.param(None, "no Authorization header", id="missing"),
    pytest.param("Bearer abc", "scheme 'Bearer' is not Basic", id="scheme"),
    pytest.param("Basic !!!", "not base64", id="not-base64"),
    pytest.param("Basic " + base64.b64encode(b"\xff\xfe").decode(), "not base64 of UTF-8",
                 id="not-utf8"),
    pytest.param("Basic " + base64.b64encode(b"nocolon").decode(), "lack a user name or",
                 id="no-colon"),
    pytest.param("Basic " + base64.b64encode(b":pw").decode(), "lack a user name", id="no-user"),
    # Raw UTF-8 in the header (read as Latin-1): the first build answered 500.
    pytest.param("Basic " + "\u00e9t\u00e9".encode().decode("latin-1"), "not base64",
                 id="raw-utf8"),
])
def test_bad_basic_credentials(header: str | None, message: str) -> None:
    with pytest.raises(AuthError, match=message):
        auth.parse_basic(header)


def test_basic_password_may_hold_colons_and_unicode() -> None:
    assert auth.parse_basic(basic("bob", "a:b:ü")) == ("bob", "a:b:ü")


def _counting_authenticator(monkeypatch: pytest.MonkeyPatch
                            ) -> tuple[Authenticator, list[str], list[float]]:
    """An authenticator of alice (admin) and bob (reader) on a settable clock, and
    the passwords it has hashed."""
    database = UsersDatabase()
    database.add("alice", "admin", "a-pw")
    database.add("bob", "reader", "b-pw")
    calls: list[str] = []
    real_verify = auth.verify_password

    def counting(password: str, encoded: str) -> bool:
        calls.append(password)
        return real_verify(password, encoded)

    monkeypatch.setattr(auth, "verify_password", counting)
    clock = [0.0]
    return Authenticator([database], clock=lambda: clock[0]), calls, clock


def test_authenticator_roles_errors_and_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    authenticator, calls, clock = _counting_authenticator(monkeypatch)
    assert authenticator.authenticate(basic("alice", "a-pw")) == Identity("alice", Role.ADMIN)
    assert authenticator.authenticate(basic("alice", "a-pw")).may_write
    assert calls == ["a-pw"]  # the second time came from the cache
    bob = authenticator.authenticate(basic("bob", "b-pw"))
    assert bob.role is Role.READER and not bob.may_write
    with pytest.raises(AuthError, match="wrong password for 'alice'"):
        authenticator.authenticate(basic("alice", "b-pw"))
    with pytest.raises(AuthError, match="unknown user 'carol'"):
        authenticator.authenticate(basic("carol", "x"))
    clock[0] = 61.0
    authenticator.authenticate(basic("alice", "a-pw"))
    assert calls.count("a-pw") == 2  # the cached entry expired


def test_authenticator_needs_a_source() -> None:
    with pytest.raises(ValueError, match="no user source"):
        Authenticator([])


def test_main_prints_a_users_file_line(monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("pw from stdin\n"))
    assert auth.main(["dave", "reader"]) == 0
    line = capsys.readouterr().out.strip()
    users = auth.parse_users(line, "out")
    assert users["dave"].role is Role.READER
    assert auth.verify_password("pw from stdin", users["dave"].password_hash)


# -- PAM --------------------------------------------------------------------------------------

_PAM_EXEC = next((p for p in ("/usr/lib/x86_64-linux-gnu/security/pam_exec.so",
                              "/usr/lib64/security/pam_exec.so", "/lib/security/pam_exec.so",
                              "/usr/lib/security/pam_exec.so") if os.path.exists(p)), None)
needs_pam = pytest.mark.skipif(
    ctypes.util.find_library("pam") is None or _PAM_EXEC is None,
    reason="libpam or pam_exec.so is not installed",
)


@pytest.fixture
def pam_service(tmp_path: Path) -> PamConfig:
    """A PAM service in a private configuration directory: pam_exec checks the password."""
    script = tmp_path / "check"
    script.write_text('#!/bin/sh\nread -r pw\n[ "$PAM_USER" != bad ] && [ "$pw" = "right" ]\n')
    script.chmod(0o700)
    (tmp_path / "lmi-test").write_text(
        f"auth required {_PAM_EXEC} expose_authtok quiet {script}\n"
        "account required pam_permit.so\n")
    return PamConfig(service="lmi-test", confdir=tmp_path, admin_group="root",
                     reader_group=None)


@needs_pam
def test_pam_checks_the_password_through_the_conversation(pam_service: PamConfig) -> None:
    pam = Pam(pam_service)
    pam.check("alice", "right")
    with pytest.raises(AuthError, match="PAM refused 'alice'"):
        pam.check("alice", "wrong")
    with pytest.raises(AuthError, match="PAM refused 'bad'"):
        pam.check("bad", "right")


@needs_pam
def test_pam_roles_from_groups(pam_service: PamConfig) -> None:
    pam = Pam(pam_service)
    assert pam.role("root") is Role.ADMIN
    assert pam.role("no-such-user-here") is Role.READER
    strict = Pam(PamConfig(service="lmi-test", confdir=pam_service.confdir,
                           admin_group="root", reader_group="no-such-group-here"))
    assert strict.role("no-such-user-here") is None


@needs_pam
def test_authenticator_asks_pam_for_users_the_file_lacks(pam_service: PamConfig) -> None:
    database = UsersDatabase()
    database.add("alice", "reader", "file-pw")
    authenticator = Authenticator([database], Pam(pam_service))
    assert authenticator.authenticate(basic("root", "right")) == Identity("root", Role.ADMIN)
    # A user the file knows is never retried with PAM.
    with pytest.raises(AuthError, match="wrong password for 'alice'"):
        authenticator.authenticate(basic("alice", "right"))
    with pytest.raises(AuthError, match="PAM refused"):
        authenticator.authenticate(basic("carol", "wrong"))


def test_failed_logins_from_an_address_are_throttled(monkeypatch: pytest.MonkeyPatch) -> None:
    # ~50 wrong passwords a second reached the hash in the first build.
    authenticator, calls, clock = _counting_authenticator(monkeypatch)
    for second in range(10):  # 1,000 guesses a second for ten seconds
        for step in range(1000):
            clock[0] = second + step / 1000
            with pytest.raises(AuthError):
                authenticator.authenticate(basic("alice", f"guess{second}-{step}"), "10.0.0.9")
    guesses_hashed = len(calls)
    assert guesses_hashed <= 10 * 10, guesses_hashed
    # Another address is not held back, nor is a login known to be right.
    assert authenticator.authenticate(basic("alice", "a-pw"), "10.0.0.7").user == "alice"
    assert authenticator.authenticate(basic("alice", "a-pw"), "10.0.0.9").user == "alice"


def test_the_throttle_refuses_without_hashing_and_ends_with_a_success(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    authenticator, calls, clock = _counting_authenticator(monkeypatch)
    for _ in range(auth.THROTTLE_FREE):
        with pytest.raises(AuthError, match="wrong password"):
            authenticator.authenticate(basic("alice", "nope"), "10.0.0.9")
    with pytest.raises(AuthError, match="too many failed logins"):
        authenticator.authenticate(basic("alice", "a-pw"), "10.0.0.9")
    assert calls == ["nope"] * auth.THROTTLE_FREE, "refused before the hash"
    clock[0] += auth.THROTTLE_MAX_SECONDS
    assert authenticator.authenticate(basic("alice", "a-pw"), "10.0.0.9").user == "alice"
    clock[0] += 61  # past the cache: a new login, and no throttle left
    with pytest.raises(AuthError, match="wrong password"):
        authenticator.authenticate(basic("alice", "nope"), "10.0.0.9")
