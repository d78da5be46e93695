"""The server's configuration: ``ServerConfig`` and its INI form.

Owns: every setting of the CIM-XML server (listen addresses and ports, TLS
files, authentication sources, HTTP limits, enumeration limits, indication
delivery), their defaults, and reading them from the ``[server]``,
``[auth]``, ``[http]``, ``[enumeration]`` and ``[indications]`` sections of
an INI file (other sections belong to other
parts of lmi-mountd and are left alone). An unknown key or a value of the
wrong kind is a ConfigError naming the file, section and key.

Must not know: sockets, CIM, the broker.

Example::

    [server]
    listen = *
    http_port = 5988
    https_port = 5989
    certfile = /etc/lmi-mount/server.pem
    keyfile = /etc/lmi-mount/server.key

    [auth]
    plain_http = refuse
    users_file = /etc/lmi-mount/users
    pam_service = lmi-mountd
    pam_admin_group = wheel

    [http]
    threads = 8
    max_connections = 256

    [enumeration]
    max_contexts = 256

    [indications]
    max_queue = 1000
    retry_attempts = 3
    retry_interval = 20
    verify = yes
"""

from __future__ import annotations

import configparser
import dataclasses
import math
import ssl
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from lmi_mount.server.http import HttpLimits
from lmi_mount.server.pull import PullLimits

_D = typing.TypeVar("_D")

DEFAULT_HTTP_PORT: Final = 5988
DEFAULT_HTTPS_PORT: Final = 5989


class ConfigError(ValueError):
    """A setting that cannot be used (the message names it)."""


@dataclass(frozen=True)
class IndicationSettings:
    """The ``[indications]`` section."""

    #: Indications a destination may have waiting; beyond, the oldest are dropped.
    max_queue: int = 1000
    #: Sends of one indication after the first fails (DSP1054 DeliveryRetryAttempts).
    retry_attempts: int = 3
    #: Seconds between them (DeliveryRetryInterval).
    retry_interval: float = 20.0
    #: Seconds one send may take.
    timeout: float = 10.0
    #: Verify the certificate of https destinations.
    verify: bool = True
    #: CA certificates for that (default: the system's).
    ca_file: Path | None = None

    def __post_init__(self) -> None:
        if self.max_queue < 1:
            raise ValueError(f"max_queue = {self.max_queue}: at least 1")
        if self.retry_attempts < 0:
            raise ValueError(f"retry_attempts = {self.retry_attempts}: not negative")
        if not self.retry_interval >= 0:
            raise ValueError(f"retry_interval = {self.retry_interval}: not negative")
        if not self.timeout > 0:
            raise ValueError(f"timeout = {self.timeout}: more than 0")

    def ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(
            cafile=str(self.ca_file) if self.ca_file is not None else None)
        if not self.verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context


@dataclass(frozen=True)
class ServerConfig:
    """Everything the CIM-XML server needs to know; see the module docstring for the INI form."""

    #: Addresses to listen on; "*" or "" is every address (IPv6 and IPv4).
    listen: tuple[str, ...] = ("*",)
    #: Plain HTTP port (DSP0200: 5988); None: no plain HTTP.
    http_port: int | None = DEFAULT_HTTP_PORT
    #: HTTPS port (5989); None: no HTTPS.
    https_port: int | None = DEFAULT_HTTPS_PORT
    certfile: Path | None = None
    keyfile: Path | None = None
    #: Host name in instance paths and the interop namespace (default: the FQDN).
    hostname: str | None = None
    #: Basic credentials over plain HTTP: "refuse", "loopback" (from 127.0.0.1/::1 only), "allow".
    plain_http: str = "refuse"
    realm: str = "lmi-mountd"
    #: A users file (``user:role:scrypt-hash`` lines).
    users_file: Path | None = None
    #: Users held in memory: (user, role, password), e.g. the sandbox user.
    users: tuple[tuple[str, str, str], ...] = ()
    #: A PAM service to ask for users the users file does not know.
    pam_service: str | None = None
    pam_admin_group: str | None = "wheel"
    pam_reader_group: str | None = None
    pam_confdir: Path | None = None
    http: HttpLimits = field(default_factory=HttpLimits)
    enumeration: PullLimits = field(default_factory=PullLimits)
    indications: IndicationSettings = field(default_factory=IndicationSettings)

    def __post_init__(self) -> None:
        if self.plain_http not in ("refuse", "loopback", "allow"):
            raise ConfigError(
                f"plain_http = {self.plain_http!r}: expected refuse, loopback or allow"
            )
        for name in ("http_port", "https_port"):
            port = getattr(self, name)
            if port is not None and not 0 <= port <= 65535:
                raise ConfigError(f"{name} = {port}: not a TCP port")
        if self.http_port is None and self.https_port is None:
            raise ConfigError("neither http_port nor https_port is set: nothing to listen on")
        if not self.listen:
            raise ConfigError("listen is empty: nothing to listen on")
        if not self.users_file and not self.users and not self.pam_service:
            raise ConfigError("no users: set users_file or pam_service in [auth]")


# INI section -> the ServerConfig fields it holds (the limits sections map to
# the fields of HttpLimits and PullLimits).
_SECTIONS: Final = {
    "server": ("listen", "http_port", "https_port", "certfile", "keyfile", "hostname"),
    "auth": ("plain_http", "realm", "users_file", "pam_service", "pam_admin_group",
             "pam_reader_group", "pam_confdir"),
}


#: The longest time a setting may give (seconds).
MAX_SECONDS: Final = 365 * 24 * 3600.0


def _convert(raw: str, annotation: Any, where: str) -> Any:
    """An INI value as the type of the field it sets."""
    text = raw.strip()
    args = typing.get_args(annotation)
    origin = typing.get_origin(annotation)
    if origin in (types.UnionType, typing.Union) and type(None) in args:
        if text.lower() in ("", "none", "off", "no"):
            return None
        inner = next(a for a in args if a is not type(None))
        return _convert(raw, inner, where)
    if annotation is bool:
        lowered = text.lower()
        if lowered in ("1", "yes", "true", "on"):
            return True
        if lowered in ("0", "no", "false", "off"):
            return False
        raise ConfigError(f"{where} = {raw!r}: expected yes or no")
    if annotation is int:
        try:
            return int(text)
        except ValueError:
            raise ConfigError(f"{where} = {raw!r}: expected a whole number") from None
    if annotation is float:
        try:
            number = float(text)
        except ValueError:
            raise ConfigError(f"{where} = {raw!r}: expected a number") from None
        # float() takes inf and nan: no time is either (an infinite hold time
        # ended the hold timer's thread, a NaN one made it spin).
        if not math.isfinite(number):
            raise ConfigError(f"{where} = {raw!r}: expected a finite number")
        # Every float setting is a time in seconds: past a year, waits overflow
        # (a window of 1e10 s stopped the daemon), as do timedeltas and the
        # uint32 properties that show them (a second review).
        if number > MAX_SECONDS:
            raise ConfigError(f"{where} = {raw!r}: expected at most {MAX_SECONDS:.0f} seconds "
                              "(a year)")
        return number
    if annotation is Path:
        return Path(text)
    if annotation is str:
        return text
    if origin is tuple:
        return tuple(part for part in text.replace(",", " ").split() if part)
    raise ConfigError(f"{where}: cannot read a value of type {annotation}")


def from_ini(parser: configparser.ConfigParser, source: str = "<config>",
             **overrides: Any) -> ServerConfig:
    """A ServerConfig from the server's sections of ``parser``; ``overrides`` win."""
    hints = typing.get_type_hints(ServerConfig)
    values: dict[str, Any] = {}
    for section, names in _SECTIONS.items():
        if not parser.has_section(section):
            continue
        for key, raw in parser.items(section, raw=True):
            if key not in names:
                raise ConfigError(f"{source}: [{section}] has no setting {key!r}; "
                                  f"known: {', '.join(names)}")
            values[key] = _convert(raw, hints[key], f"{source}: [{section}] {key}")
    for section, limits_type in (("http", HttpLimits), ("enumeration", PullLimits),
                                 ("indications", IndicationSettings)):
        if parser.has_section(section):
            values[section] = read_section(parser, section, limits_type, source)
    values.update(overrides)
    try:
        return ServerConfig(**values)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def read_section(
    parser: configparser.ConfigParser, section: str, kind: type[_D], source: str = "<config>"
) -> _D:
    """The dataclass ``kind`` from ``[section]``: its defaults where the file is silent.

    An unknown key or a value of the wrong kind is a ConfigError naming the
    file, section and key. Other parts of lmi-mountd read their sections
    (``[engine]``, ``[cim]``) through this too.
    """
    if not parser.has_section(section):
        return kind()
    fields = {f.name for f in dataclasses.fields(kind)}  # type: ignore[arg-type]
    hints = typing.get_type_hints(kind)
    given = {}
    for key, raw in parser.items(section, raw=True):
        if key not in fields:
            raise ConfigError(f"{source}: [{section}] has no setting {key!r}; "
                              f"known: {', '.join(sorted(fields))}")
        given[key] = _convert(raw, hints[key], f"{source}: [{section}] {key}")
    try:
        return kind(**given)
    except ValueError as exc:
        raise ConfigError(f"{source}: [{section}]: {exc}") from None


def load_config(path: Path, **overrides: Any) -> ServerConfig:
    """The ServerConfig of the INI file at ``path``; ``overrides`` (command-line ports) win."""
    parser = configparser.ConfigParser(interpolation=None)
    try:
        with open(path, encoding="utf-8") as stream:
            parser.read_file(stream, str(path))
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    except configparser.Error as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return from_ini(parser, str(path), **overrides)
