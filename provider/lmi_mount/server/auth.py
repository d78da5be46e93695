"""Who is calling: HTTP Basic credentials checked against a users file or PAM.

Owns: decoding the ``Authorization: Basic`` header (RFC 7617), the users
file (one ``user:role:hash`` line per user, the hash a salted scrypt, made
by ``make_users_entry`` or ``python -m lmi_mount.server.auth USER ROLE``),
PAM through libpam (ctypes) when configured, the two roles (``reader``:
reads and queries; ``admin``: methods and instance writes too), and a short
cache of verified credentials so that a client sending its password with
every request does not pay a key derivation each time.

Must not know: HTTP status codes, CIM, the broker. The caller turns an
``Identity`` into the broker's ``Caller`` and an ``AuthError`` into 401.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import ctypes
import ctypes.util
import enum
import getpass
import grp
import hashlib
import hmac
import pwd
import secrets
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from lmi_mount.linux import files

#: scrypt cost (RFC 7914): N=2^14, r=8, p=1 takes 16 MiB and about 0.1 s here.
SCRYPT_N: Final = 2**14
SCRYPT_R: Final = 8
SCRYPT_P: Final = 1
_SCRYPT_MAXMEM: Final = 64 * 1024 * 1024
_HASH_BYTES: Final = 32
_SCHEME: Final = "scrypt"


class Role(enum.Enum):
    READER = "reader"
    ADMIN = "admin"


@dataclass(frozen=True, slots=True)
class Identity:
    """An authenticated user and what it may do."""

    user: str
    role: Role

    @property
    def may_write(self) -> bool:
        return self.role is Role.ADMIN


class AuthError(Exception):
    """The credentials are missing, malformed or wrong (the message is for the log only)."""


class LoginThrottled(AuthError):
    """An attempt inside a throttling window, refused without a look at the password."""


class UsersFileError(ValueError):
    """A users file line that cannot be used (the message names the file and line)."""


# --------------------------------------------------------------------------
# Password hashes
# --------------------------------------------------------------------------


def hash_password(password: str, *, n: int = SCRYPT_N, r: int = SCRYPT_R, p: int = SCRYPT_P,
                  salt: bytes | None = None) -> str:
    """``scrypt$N$r$p$salt$hash`` (salt and hash in unpadded base64)."""
    salt = salt if salt is not None else secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p,
                            maxmem=_SCRYPT_MAXMEM, dklen=_HASH_BYTES)
    return "$".join((_SCHEME, str(n), str(r), str(p), _b64(salt), _b64(digest)))


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


def check_hash(encoded: str) -> tuple[int, int, int, bytes, bytes]:
    """The parameters of an encoded hash; ValueError says what is wrong with it."""
    parts = encoded.split("$")
    if len(parts) != 6 or parts[0] != _SCHEME:
        raise ValueError(f"not a {_SCHEME}$N$r$p$salt$hash password hash")
    try:
        n, r, p = int(parts[1]), int(parts[2]), int(parts[3])
        salt, digest = _unb64(parts[4]), _unb64(parts[5])
    except (ValueError, binascii.Error) as exc:
        raise ValueError(f"malformed password hash: {exc}") from None
    if n < 2 or n & (n - 1) or n > 2**20 or not 1 <= r <= 32 or not 1 <= p <= 16:
        raise ValueError(f"scrypt parameters N={n} r={r} p={p} are out of range")
    if not salt or len(digest) < 16:
        raise ValueError("the salt or the hash is too short")
    return n, r, p, salt, digest


def verify_password(password: str, encoded: str) -> bool:
    try:
        n, r, p, salt, digest = check_hash(encoded)
    except ValueError:
        return False
    candidate = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p,
                               maxmem=_SCRYPT_MAXMEM, dklen=len(digest))
    return hmac.compare_digest(candidate, digest)


def _check_user_name(user: str) -> None:
    if not user or ":" in user or any(ord(c) < 0x20 or c == "\x7f" for c in user):
        raise ValueError(f"user name {user!r} is empty or holds ':' or a control character")


def make_users_entry(user: str, role: Role | str, password: str) -> str:
    """A users file line (without the newline) for ``user`` with ``password``."""
    _check_user_name(user)
    role = Role(role)
    if not password:
        raise ValueError(f"user {user!r}: the password is empty")
    return f"{user}:{role.value}:{hash_password(password)}"


# --------------------------------------------------------------------------
# Users file
# --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UserEntry:
    role: Role
    password_hash: str


def parse_users(text: str, source: str) -> dict[str, UserEntry]:
    """The entries of a users file; comments (#) and blank lines are skipped."""
    users: dict[str, UserEntry] = {}
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        where = f"{source}:{number}"
        fields = stripped.split(":", 2)
        if len(fields) != 3:
            raise UsersFileError(f"{where}: expected user:role:hash")
        user, role, password_hash = fields
        if user in users:
            raise UsersFileError(f"{where}: user {user!r} appears twice")
        try:
            _check_user_name(user)
            check_hash(password_hash)
        except ValueError as exc:
            raise UsersFileError(f"{where}: {exc}") from None
        try:
            users[user] = UserEntry(Role(role), password_hash)
        except ValueError:
            raise UsersFileError(
                f"{where}: role {role!r} is not one of reader, admin"
            ) from None
    return users


class UsersFile:
    """A users file, read again when it changes (so ``make_users_entry`` lines need no restart)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._users: dict[str, UserEntry] = {}
        self._load()

    def _load(self) -> None:
        stat = self.path.stat()
        stamp = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
        if stamp == self._stamp:
            return
        # Hashes are not passwords, but nobody else needs to try them offline,
        # and whoever may write the file may make himself an admin.
        try:
            files.check_trusted(self.path, "users file", secret=True)
        except files.UntrustedFile as exc:
            raise UsersFileError(str(exc)) from None
        self._users = parse_users(self.path.read_text(encoding="utf-8"), str(self.path))
        self._stamp = stamp

    def get(self, user: str) -> UserEntry | None:
        with self._lock:
            # Keep serving the last good contents: a broken edit must not
            # lock everyone out (nor in).
            with contextlib.suppress(OSError, UsersFileError):
                self._load()
            return self._users.get(user)


class UsersDatabase:
    """Users held in memory (the sandbox user), with the same entries as a file."""

    def __init__(self) -> None:
        self._users: dict[str, UserEntry] = {}

    def add(self, user: str, role: Role | str, password: str) -> None:
        entry = make_users_entry(user, role, password)
        _, role_text, password_hash = entry.split(":", 2)
        self._users[user] = UserEntry(Role(role_text), password_hash)

    def get(self, user: str) -> UserEntry | None:
        return self._users.get(user)


# --------------------------------------------------------------------------
# PAM (libpam through ctypes)
# --------------------------------------------------------------------------

_PAM_SUCCESS: Final = 0
_PAM_PROMPT_ECHO_OFF: Final = 1
_PAM_PROMPT_ECHO_ON: Final = 2
_PAM_SILENT: Final = 0x8000
_PAM_DISALLOW_NULL_AUTHTOK: Final = 0x0001


class _PamMessage(ctypes.Structure):
    _fields_ = [("msg_style", ctypes.c_int), ("msg", ctypes.c_char_p)]


class _PamResponse(ctypes.Structure):
    _fields_ = [("resp", ctypes.c_void_p), ("resp_retcode", ctypes.c_int)]


_CONV_FUNC = ctypes.CFUNCTYPE(
    ctypes.c_int,
    ctypes.c_int,
    ctypes.POINTER(ctypes.POINTER(_PamMessage)),
    ctypes.POINTER(ctypes.POINTER(_PamResponse)),
    ctypes.c_void_p,
)


class _PamConv(ctypes.Structure):
    _fields_ = [("conv", _CONV_FUNC), ("appdata_ptr", ctypes.c_void_p)]


class PamUnavailable(RuntimeError):
    """libpam cannot be loaded (or lacks a function this code needs)."""


@dataclass(frozen=True)
class PamConfig:
    """How to ask PAM, and how its users map to roles."""

    service: str = "lmi-mountd"
    #: Members of this group (and uid 0) are admins.
    admin_group: str | None = "wheel"
    #: Members of this group are readers; None: every PAM-authenticated user is.
    reader_group: str | None = None
    #: A PAM configuration directory instead of /etc/pam.d (pam_start_confdir, Linux-PAM 1.4).
    confdir: Path | None = None


class Pam:
    """Password checks by libpam: pam_authenticate, then pam_acct_mgmt."""

    def __init__(self, config: PamConfig, library: str | None = None) -> None:
        self.config = config
        name = library or ctypes.util.find_library("pam") or "libpam.so.0"
        try:
            self._libpam = ctypes.CDLL(name)
            self._libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        except OSError as exc:
            raise PamUnavailable(f"cannot load libpam ({name}): {exc}") from None
        lib = self._libpam
        handle = ctypes.c_void_p
        lib.pam_start.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.POINTER(_PamConv),
                                  ctypes.POINTER(handle)]
        lib.pam_start.restype = ctypes.c_int
        if config.confdir is not None:
            if not hasattr(lib, "pam_start_confdir"):
                raise PamUnavailable("this libpam has no pam_start_confdir (Linux-PAM < 1.4)")
            lib.pam_start_confdir.argtypes = [ctypes.c_char_p, ctypes.c_char_p,
                                              ctypes.POINTER(_PamConv), ctypes.c_char_p,
                                              ctypes.POINTER(handle)]
            lib.pam_start_confdir.restype = ctypes.c_int
        for function in ("pam_authenticate", "pam_acct_mgmt"):
            getattr(lib, function).argtypes = [handle, ctypes.c_int]
            getattr(lib, function).restype = ctypes.c_int
        lib.pam_end.argtypes = [handle, ctypes.c_int]
        lib.pam_end.restype = ctypes.c_int
        lib.pam_strerror.argtypes = [handle, ctypes.c_int]
        lib.pam_strerror.restype = ctypes.c_char_p
        self._libc.calloc.argtypes = [ctypes.c_size_t, ctypes.c_size_t]
        self._libc.calloc.restype = ctypes.c_void_p
        self._libc.strdup.argtypes = [ctypes.c_char_p]
        self._libc.strdup.restype = ctypes.c_void_p

    def check(self, user: str, password: str) -> None:
        """Return if PAM accepts ``user`` with ``password``; raise AuthError otherwise."""
        secret = password.encode("utf-8")
        login = user.encode("utf-8")
        libc = self._libc

        def conversation(count: int, messages: Any, responses: Any, _data: Any) -> int:
            # Linux-PAM frees the answers with free(): allocate them with libc.
            array = libc.calloc(count, ctypes.sizeof(_PamResponse))
            if not array:
                return 5  # PAM_BUF_ERR
            answers = ctypes.cast(array, ctypes.POINTER(_PamResponse))
            for i in range(count):
                style = messages[i].contents.msg_style
                if style == _PAM_PROMPT_ECHO_OFF:
                    answers[i].resp = libc.strdup(secret)
                elif style == _PAM_PROMPT_ECHO_ON:
                    answers[i].resp = libc.strdup(login)
            responses[0] = answers
            return _PAM_SUCCESS

        conv = _PamConv(_CONV_FUNC(conversation), None)
        handle = ctypes.c_void_p()
        service = self.config.service.encode("utf-8")
        if self.config.confdir is not None:
            status = self._libpam.pam_start_confdir(
                service, login, ctypes.byref(conv), str(self.config.confdir).encode(),
                ctypes.byref(handle),
            )
        else:
            status = self._libpam.pam_start(service, login, ctypes.byref(conv),
                                            ctypes.byref(handle))
        if status != _PAM_SUCCESS:
            raise AuthError(f"PAM service {self.config.service!r}: pam_start failed ({status})")
        try:
            flags = _PAM_SILENT | _PAM_DISALLOW_NULL_AUTHTOK
            status = self._libpam.pam_authenticate(handle, flags)
            if status == _PAM_SUCCESS:
                status = self._libpam.pam_acct_mgmt(handle, _PAM_SILENT)
            if status != _PAM_SUCCESS:
                reason = self._libpam.pam_strerror(handle, status) or b"?"
                raise AuthError(f"PAM refused {user!r}: {reason.decode(errors='replace')}")
        finally:
            self._libpam.pam_end(handle, status)

    def role(self, user: str) -> Role | None:
        """The role of a PAM user from its groups; None if it has none."""
        groups = _groups_of(user)
        if _uid_of(user) == 0 or (
            self.config.admin_group is not None and self.config.admin_group in groups
        ):
            return Role.ADMIN
        if self.config.reader_group is None or self.config.reader_group in groups:
            return Role.READER
        return None


def _uid_of(user: str) -> int | None:
    try:
        return pwd.getpwnam(user).pw_uid
    except KeyError:
        return None


def _groups_of(user: str) -> set[str]:
    names = {g.gr_name for g in grp.getgrall() if user in g.gr_mem}
    with contextlib.suppress(KeyError):
        names.add(grp.getgrgid(pwd.getpwnam(user).pw_gid).gr_name)
    return names


# --------------------------------------------------------------------------
# The authenticator
# --------------------------------------------------------------------------


def parse_basic(authorization: str | None) -> tuple[str, str]:
    """(user, password) of an ``Authorization: Basic`` value (RFC 7617, UTF-8)."""
    if not authorization:
        raise AuthError("no Authorization header")
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "basic":
        raise AuthError(f"authorization scheme {scheme!r} is not Basic")
    try:
        decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
    except ValueError:  # binascii.Error, UnicodeDecodeError, and non-ASCII input
        raise AuthError("the Basic credentials are not base64 of UTF-8 text") from None
    user, colon, password = decoded.partition(":")
    if not colon or not user:
        raise AuthError("the Basic credentials lack a user name or the ':'")
    return user, password


class Authenticator:
    """Checks Basic credentials against the configured sources, in order.

    ``users`` are consulted first (users file, in-memory users); a user they
    do not know is asked of PAM when PAM is configured. A user they know with
    a wrong password is refused, never retried with PAM.
    """

    def __init__(
        self,
        users: Sequence[UsersFile | UsersDatabase] = (),
        pam: Pam | None = None,
        *,
        cache_seconds: float = 60.0,
        cache_size: int = 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not users and pam is None:
            raise ValueError("no user source: configure a users file, PAM, or both")
        self._users = list(users)
        self._pam = pam
        self._cache_seconds = cache_seconds
        self._cache_size = cache_size
        self._clock = clock
        # Verified credentials by (user, keyed digest of the password): the
        # password itself is never kept. Lost with the process, by design.
        self._key = secrets.token_bytes(32)
        self._cache: OrderedDict[tuple[str, bytes], tuple[Identity, float]] = OrderedDict()
        self._lock = threading.Lock()
        #: Throttling key -> (failed logins in a row, no attempt before this time).
        self._failures: OrderedDict[str, tuple[int, float]] = OrderedDict()

    def authenticate(self, authorization: str | None, peer: str | None = None) -> Identity:
        """The identity of ``authorization``'s credentials, sent from address ``peer``.

        Failed logins are throttled per source address and per (user,
        address): after THROTTLE_FREE failures, each further attempt waits
        for a window that doubles with each failure (up to THROTTLE_MAX_SECONDS)
        and is refused without hashing meanwhile, so guessing from many
        connections reaches the hash a few times a second at most. A success
        ends the throttling; credentials verified before are answered from
        the cache and never wait.
        """
        cached = self.cached(authorization)
        if cached is not None:
            return cached
        user, password = parse_basic(authorization)
        token = self._token(user, password)
        now = self._clock()
        keys = (f"address {peer}", f"user {user!r} from {peer}") if peer is not None else ()
        self._admit(keys, now)
        try:
            identity = self._verify(user, password)
        except AuthError:
            self._failed(keys, self._clock())
            raise
        with self._lock:
            for key in keys:
                self._failures.pop(key, None)
            self._cache[token] = (identity, now + self._cache_seconds)
            self._cache.move_to_end(token)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return identity

    def cached(self, authorization: str | None) -> Identity | None:
        """The identity of credentials verified within the cache's time, without
        a hash; None when ``authenticate`` must verify them (AuthError when they
        cannot be read)."""
        user, password = parse_basic(authorization)
        token = self._token(user, password)
        with self._lock:
            cached = self._cache.get(token)
            if cached is not None and cached[1] > self._clock():
                self._cache.move_to_end(token)
                return cached[0]
        return None

    def _token(self, user: str, password: str) -> tuple[str, bytes]:
        return user, hmac.new(self._key, password.encode("utf-8"), hashlib.sha256).digest()

    def _admit(self, keys: Sequence[str], now: float) -> None:
        """Refuse an attempt inside a throttling window; else take the slot (the
        window is reserved before the hash, so parallel guesses wait too)."""
        with self._lock:
            for key in keys:
                count, not_before = self._failures.get(key, (0, 0.0))
                if now < not_before:
                    raise LoginThrottled(f"too many failed logins ({key}): try again in "
                                    f"{not_before - now:.1f} s")
            for key in keys:
                count, _ = self._failures.get(key, (0, 0.0))
                self._failures[key] = (count, now + _throttle_delay(count))

    def _failed(self, keys: Sequence[str], now: float) -> None:
        with self._lock:
            for key in keys:
                count = self._failures.get(key, (0, 0.0))[0] + 1
                self._failures[key] = (count, now + _throttle_delay(count))
                self._failures.move_to_end(key)
            while len(self._failures) > THROTTLE_TABLE_SIZE:
                self._failures.popitem(last=False)

    def _verify(self, user: str, password: str) -> Identity:
        for source in self._users:
            entry = source.get(user)
            if entry is not None:
                if not verify_password(password, entry.password_hash):
                    raise AuthError(f"wrong password for {user!r}")
                return Identity(user, entry.role)
        if self._pam is None:
            # Spend the same time as for a known user: user names do not leak by timing.
            verify_password(password, _dummy_hash())
            raise AuthError(f"unknown user {user!r}")
        self._pam.check(user, password)
        role = self._pam.role(user)
        if role is None:
            raise AuthError(f"PAM user {user!r} is in neither the admin nor the reader group")
        return Identity(user, role)


#: Failed logins (per address, per user and address) that cost nothing; then
#: each attempt waits THROTTLE_BASE_SECONDS, doubled per failure, at most
#: THROTTLE_MAX_SECONDS. The table forgets its oldest keys beyond its size.
THROTTLE_FREE = 3
THROTTLE_BASE_SECONDS = 0.1
THROTTLE_MAX_SECONDS = 5.0
THROTTLE_TABLE_SIZE = 10_000


def _throttle_delay(failures: int) -> float:
    if failures < THROTTLE_FREE:
        return 0.0
    return min(THROTTLE_BASE_SECONDS * 2.0 ** (failures - THROTTLE_FREE), THROTTLE_MAX_SECONDS)


_dummy: list[str] = []


def _dummy_hash() -> str:
    if not _dummy:
        _dummy.append(hash_password(secrets.token_urlsafe(16)))
    return _dummy[0]


# --------------------------------------------------------------------------
# python -m lmi_mount.server.auth USER ROLE  (a users file line)
# --------------------------------------------------------------------------


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lmi_mount.server.auth",
        description="Print a users file line for lmi-mountd (the password is read from the "
        "terminal, or from standard input when it is not one).",
    )
    parser.add_argument("user")
    parser.add_argument("role", choices=[r.value for r in Role])
    args = parser.parse_args(list(argv) if argv is not None else None)
    if sys.stdin.isatty():
        password = getpass.getpass(f"password for {args.user}: ")
        if getpass.getpass("again: ") != password:
            print("the passwords differ", file=sys.stderr)
            return 1
    else:
        password = sys.stdin.readline().rstrip("\n")
    try:
        print(make_users_entry(args.user, args.role, password))
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

__all__ = [
    "AuthError",
    "Authenticator",
    "Identity",
    "Pam",
    "PamConfig",
    "PamUnavailable",
    "Role",
    "UsersDatabase",
    "UsersFile",
    "UsersFileError",
    "hash_password",
    "make_users_entry",
    "parse_basic",
    "parse_users",
    "verify_password",
]
