"""CIM operations over HTTP (DSP0200 1.4's HTTP mapping): the glue between the server's layers.

Owns: the HTTP rules of DSP0200 for a CIM server: POST only (M-POST is 501
so that clients fall back to POST), the ``CIMOperation``, ``CIMMethod``,
``CIMObject``, ``CIMBatch`` and ``CIMProtocolVersion`` headers (percent-
decoded, checked against the body: ``CIMError: header-mismatch``), the
Content-Type, refusing Basic credentials over plain HTTP unless configured,
401 with ``WWW-Authenticate: Basic``, turning an authenticated user into the
broker's ``Caller``, the response headers, and ending a stream that fails
half way with the ``CIMStatusCode`` trailer; plus ``CimServer``, which puts
the layers together for a configuration and a broker.

Must not know: socket handling (``http``), XML (``cimxml``), what an
operation does (``dispatch``), mounts.
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import logging
import os
import socket
import ssl
import stat
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final, NamedTuple

from pywbem import CIMClassName, CIMError, CIMInstanceName

from lmi_mount import __version__
from lmi_mount.cim.broker import Caller
from lmi_mount.cim.jobs import JobManager
from lmi_mount.cim.names import INTEROP_NAMESPACE, KEPT_METHODS, MOUNT_CONFIGURATION_SERVICE
from lmi_mount.linux import files
from lmi_mount.server import cimxml
from lmi_mount.server.auth import (
    Authenticator,
    AuthError,
    Identity,
    LoginThrottled,
    Pam,
    PamConfig,
    UsersDatabase,
    UsersFile,
)
from lmi_mount.server.config import ConfigError, ServerConfig
from lmi_mount.server.dispatch import CimResult, Dispatcher, call_object
from lmi_mount.server.http import (
    BodyAborted,
    HttpServer,
    Listener,
    Request,
    RequestHead,
    Response,
    answer_elsewhere,
    give_up_turn,
    simple_response,
)
from lmi_mount.server.indications import IndicationService, indication_service
from lmi_mount.server.interop import InteropBroker, load_interop_classes
from lmi_mount.server.pull import ContextTable

log = logging.getLogger("lmi_mount.server")

_XML_TYPES: Final = ("application/xml", "text/xml")
_RESPONSE_TYPE: Final = 'application/xml; charset="utf-8"'
#: A log line shows this much of a call's object and of its error's description.
_LOGGED_CHARACTERS: Final = 300


def _cim_error(status: int, cim_error: str, message: str, *, close: bool = False) -> Response:
    """A DSP0200 protocol error: HTTP status with the ``CIMError`` header."""
    return simple_response(status, message, [("CIMError", cim_error)], close=close)


def _decode_header(value: str, name: str) -> str:
    # DSP0200 (CIMMethod and CIMObject headers): UTF-8, then percent-encoded.
    try:
        return urllib.parse.unquote(value, errors="strict")
    except UnicodeDecodeError:
        raise _Refused(_cim_error(400, "header-mismatch",
                                  f"{name} is not percent-encoded UTF-8")) from None


class _Refused(Exception):
    def __init__(self, response: Response) -> None:
        super().__init__(response.status)
        self.response = response


def _media_type(value: str | None) -> tuple[str, str | None]:
    """(media type, charset) of a Content-Type value (RFC 9110 8.3)."""
    if value is None:
        return "", None
    media, *params = value.split(";")
    charset = None
    for param in params:
        key, _, raw = param.partition("=")
        if key.strip().lower() == "charset":
            charset = raw.strip().strip('"').lower()
    return media.strip().lower(), charset


@functools.lru_cache(maxsize=256)
def _is_loopback(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address.split("%")[0])
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)
    return bool(ip.is_loopback or (mapped is not None and mapped.is_loopback))


def _same_namespace(a: str | None, b: str | None) -> bool:
    return (a or "").strip("/").lower() == (b or "").strip("/").lower()


class CimXmlApp:
    """The HTTP application of the CIM server (``http.Application``)."""

    def __init__(
        self,
        dispatcher: Dispatcher,
        authenticator: Authenticator,
        *,
        plain_http: str = "refuse",
        realm: str = "lmi-mountd",
    ) -> None:
        if plain_http not in ("refuse", "loopback", "allow"):
            raise ValueError(f"plain_http {plain_http!r} is not refuse, loopback or allow")
        self.dispatcher = dispatcher
        self.authenticator = authenticator
        self.plain_http = plain_http
        self.realm = realm
        self.kept_calls = cimxml.KeptCalls(_may_keep)

    # -- checks on the head, before the body is read ------------------------------------

    def early(self, head: RequestHead) -> Response | None:
        try:
            self._check_head(head)
        except _Refused as refused:
            return refused.response
        return None

    def _check_head(self, head: RequestHead) -> None:
        if head.method == "M-POST":
            # DSP0200 (M-POST): a server without it answers 501; clients retry with POST.
            raise _Refused(simple_response(501, "M-POST is not supported; use POST"))
        if head.method != "POST":
            raise _Refused(simple_response(405, f"{head.method} is not allowed; CIM-XML uses POST",
                                           [("Allow", "POST")]))
        if not head.tls and not self._plain_http_allowed(head.peer[0]):
            raise _Refused(simple_response(
                403, "Basic credentials are not accepted over plain HTTP here; use HTTPS"))
        headers = head.headers
        if "Authorization" not in headers:
            raise _Refused(self._unauthorized())
        operation = headers.get("CIMOperation")
        if operation is None:
            raise _Refused(_cim_error(400, "unsupported-operation",
                                      "the CIMOperation header is missing"))
        if operation.strip().lower() != "methodcall":
            # DSP0200 (CIMOperation header): any value but MethodCall is 400
            # unsupported-operation.
            raise _Refused(_cim_error(400, "unsupported-operation",
                                      f"CIMOperation {operation[:60]!r} is not MethodCall"))
        if "CIMBatch" in headers:
            raise _Refused(_cim_error(501, "multiple-requests-unsupported",
                                      "batched operations are not supported"))
        protocol = headers.get("CIMProtocolVersion")
        if protocol is not None and not protocol.strip().startswith("1."):
            raise _Refused(_cim_error(501, "unsupported-protocol-version",
                                      f"CIMProtocolVersion {protocol[:20]!r} is not 1.x"))
        media, charset = _media_type(headers.get("Content-Type"))
        if media not in _XML_TYPES or charset not in (None, "utf-8"):
            got = headers.get("Content-Type") or "nothing"
            raise _Refused(simple_response(
                415, f"Content-Type must be application/xml; charset=utf-8, not {got[:80]}"))
        for name in ("CIMMethod", "CIMObject"):
            value = headers.get(name)
            if value is None or not value.strip():
                raise _Refused(_cim_error(400, "header-mismatch",
                                          f"the {name} header is missing or empty"))

    def _plain_http_allowed(self, peer: str) -> bool:
        if self.plain_http == "allow":
            return True
        return self.plain_http == "loopback" and _is_loopback(peer)

    def _unauthorized(self) -> Response:
        challenge = f'Basic realm="{self.realm}", charset="UTF-8"'
        return simple_response(401, "authentication required", [("WWW-Authenticate", challenge)])

    # -- the request -----------------------------------------------------------------------

    def handle(self, request: Request) -> Response:
        started = time.monotonic()
        head = request.head
        authorization = head.headers.get("Authorization")
        try:
            identity = self.authenticator.cached(authorization)
            if identity is None:
                # A password hash (scrypt, in C without the GIL) or a PAM
                # conversation: other requests run meanwhile.
                give_up_turn()
                identity = self.authenticator.authenticate(authorization, head.peer[0])
        except AuthError as exc:
            # A throttled guess is one of thousands a second: not one line each.
            log.log(logging.DEBUG if isinstance(exc, LoginThrottled) else logging.WARNING,
                    "authentication from %s failed: %s", head.peer[0], exc)
            return self._unauthorized()
        try:
            call, keep = self.kept_calls.parse(request.body, identity.user)
            self._check_call_headers(head, call)
        except cimxml.RequestError as exc:
            log.info("request from %s (%s) refused: %s", head.peer[0], identity.user, exc)
            return _cim_error(exc.status, exc.cim_error, str(exc))
        except cimxml.CallRefused as refused:
            log.info("request from %s (%s) refused: %s", head.peer[0], identity.user, refused)
            return _cim_response(head, refused.body())
        except _Refused as refused:
            return refused.response
        caller = Caller(user=identity.user, may_write=identity.may_write)
        if isinstance(call, cimxml.IntrinsicCall):
            result = self.dispatcher.intrinsic(call, caller)
        else:
            def may_answer_early() -> Callable[[bytes], bool] | None:
                # Asked only when a method's work would start, on this worker.
                send = answer_elsewhere()
                return None if send is None else lambda body: send(_cim_response(head, body))

            result = self.dispatcher.extrinsic(call, caller, may_answer_early)
            if keep is not None and not result.status:
                keep()
        self._log(head, identity, call, result, started)
        return _cim_response(head, result.body)

    def _check_call_headers(self, head: RequestHead,
                            call: cimxml.IntrinsicCall | cimxml.ExtrinsicCall) -> None:
        """DSP0200 (CIMMethod, CIMObject headers): they must name what the body does."""
        method = _decode_header(head.headers.get("CIMMethod") or "", "CIMMethod").strip()
        if method.lower() != call.method.lower():
            raise _Refused(_cim_error(
                400, "header-mismatch",
                f"CIMMethod {method[:80]!r} does not match the request's {call.method!r}"))
        obj = _decode_header(head.headers.get("CIMObject") or "", "CIMObject").strip()
        if isinstance(call, cimxml.IntrinsicCall):
            if not _same_namespace(obj, call.namespace):
                raise _Refused(_cim_error(
                    400, "header-mismatch",
                    f"CIMObject {obj[:80]!r} does not match the namespace {call.namespace!r}"))
            return
        if not _object_matches(obj, call.target):
            raise _Refused(_cim_error(
                400, "header-mismatch",
                f"CIMObject {obj[:200]!r} does not match the request's object"))

    @staticmethod
    def _log(head: RequestHead, identity: Identity,
             call: cimxml.IntrinsicCall | cimxml.ExtrinsicCall, result: CimResult,
             started: float) -> None:
        # Successes at DEBUG: hundreds of calls a second must not flood the journal
        # (nor spend time on a line nobody writes).
        level = logging.INFO if result.status else logging.DEBUG
        if not log.isEnabledFor(level):
            return
        streamed = "" if isinstance(result.body, bytes) else " (streaming)"
        said = f" ({result.description[:_LOGGED_CHARACTERS]})" if result.description else ""
        log.log(level, "%s %s %s %s: %s%s in %.3f s%s", head.peer[0], identity.user,
                call.method, call_object(call)[:_LOGGED_CHARACTERS], result.status, said,
                time.monotonic() - started, streamed)


def _may_keep(call: cimxml.ExtrinsicCall) -> bool:
    """Whether a call may be kept parsed: one of the service's KEPT_METHODS."""
    return (call.method.lower() in KEPT_METHODS
            and call.target.classname.lower() == MOUNT_CONFIGURATION_SERVICE.lower())


def _cim_response(head: RequestHead, body: bytes | Iterator[bytes]) -> Response:
    """The HTTP response carrying the CIM-XML ``body`` answering ``head``'s request."""
    if _from_sblim(head):
        # sblim wbemcli cannot parse every attribute later DSP0201 versions
        # allow (cimxml.sblim_compatible); every other client gets them.
        body = (cimxml.sblim_compatible(body) if isinstance(body, bytes)
                else _sblim_stream(body))
    if not isinstance(body, bytes):
        body = _guard(body)
    return Response(200, [("Content-Type", _RESPONSE_TYPE),
                          ("CIMOperation", "MethodResponse")], body,
                    trailers=() if isinstance(body, bytes) else _STATUS_TRAILERS)


def _from_sblim(head: RequestHead) -> bool:
    """Whether the request comes from sblim-sfcc (wbemcli): it sends no User-Agent
    and lists TE in Connection (``Connection: Keep-Alive, TE``). A client that
    merely sends no User-Agent (http.client, an agent) is not it: a review found
    such clients given responses without their EmbeddedObject attributes."""
    if "User-Agent" in head.headers:
        return False
    tokens = (head.headers.get("Connection") or "").split(",")
    return any(token.strip().lower() == "te" for token in tokens)


def _object_matches(header: str, target: CIMInstanceName | CIMClassName) -> bool:
    """The CIMObject of a method call names the target's namespace, class and keys.

    Key values are not compared: clients type them differently in the URI
    (DSP0207) and in the body, and the body is what the server acts on.
    """
    parsed = _object_header(header, isinstance(target, CIMInstanceName))
    if parsed is None:
        return False
    namespace, classname, keys = parsed
    if not _same_namespace(namespace, target.namespace):
        return False
    if classname != target.classname.lower():
        return False
    if isinstance(target, CIMInstanceName):
        return keys == frozenset(k.lower() for k in target.keybindings)
    return True


@functools.lru_cache(maxsize=256)
def _object_header(header: str, instance: bool) -> tuple[str | None, str, frozenset[str]] | None:
    """A CIMObject header's namespace, class (lower case) and key names (lower case),
    or None if it is no WBEM URI. Cached: a client sends the same few again and
    again, and pywbem's URI parser costs more than the rest of the check."""
    try:
        if instance:
            name: Any = CIMInstanceName.from_wbem_uri(header)
            keys = frozenset(k.lower() for k in name.keybindings)
        else:
            name = CIMClassName.from_wbem_uri(header)
            keys = frozenset()
    except (ValueError, TypeError):
        return None
    return name.namespace, name.classname.lower(), keys


def _sblim_stream(body: Iterator[bytes]) -> Iterator[bytes]:
    try:
        for chunk in body:
            yield cimxml.sblim_compatible(chunk)
    finally:
        close = getattr(body, "close", None)
        if close is not None:
            close()


#: The DSP0200 trailers a streamed response ends with when it fails half way (_guard).
_STATUS_TRAILERS: Final = ("CIMStatusCode", "CIMStatusCodeDescription")


def _guard(body: Iterator[bytes]) -> Iterator[bytes]:
    """The streamed body; a CIM error half way ends it with the DSP0200 status trailers."""
    try:
        yield from body
    except CIMError as error:
        description = urllib.parse.quote(str(error.status_description or ""), safe=" /:,.'")
        raise BodyAborted(
            f"CIM error {error.status_code} while streaming: {error.status_description}",
            list(zip(_STATUS_TRAILERS, (str(int(error.status_code)), description), strict=True)),
        ) from None
    finally:
        close = getattr(body, "close", None)
        if close is not None:
            close()


# --------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------


def tls_context(certfile: Any, keyfile: Any) -> ssl.SSLContext:
    """A server TLS context (TLS 1.2 at least) with the certificate and key."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        # The private key (in the certificate file when no key file is named).
        files.check_trusted(keyfile or certfile, "TLS key", secret=True)
    except files.UntrustedFile as exc:
        raise ConfigError(str(exc)) from None
    if keyfile:
        # Public, so it may be a link (certbot's live/ names); but a FIFO there
        # would hold the start for ever.
        with contextlib.suppress(OSError):  # load_cert_chain says what is missing
            kind = os.stat(certfile).st_mode
            if not stat.S_ISREG(kind):
                raise ConfigError(f"TLS certificate {certfile} is a "
                                  f"{files.file_kind(kind)}, not a file")
    try:
        context.load_cert_chain(str(certfile), str(keyfile) if keyfile else None)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load the TLS certificate {certfile} and key {keyfile}: "
                          f"{exc}") from None
    return context


def build_authenticator(config: ServerConfig) -> Authenticator:
    sources: list[UsersFile | UsersDatabase] = []
    if config.users_file is not None:
        try:
            sources.append(UsersFile(config.users_file))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"users file {config.users_file}: {exc}") from None
    if config.users:
        database = UsersDatabase()
        for user, role, password in config.users:
            database.add(user, role, password)
        sources.append(database)
    pam = None
    if config.pam_service is not None:
        pam = Pam(PamConfig(service=config.pam_service, admin_group=config.pam_admin_group,
                            reader_group=config.pam_reader_group, confdir=config.pam_confdir))
    try:
        return Authenticator(sources, pam)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


class ServerCredentials(NamedTuple):
    """Who may call (the users file, PAM) and the HTTPS listeners' TLS context."""

    authenticator: Authenticator
    tls: ssl.SSLContext | None


def server_credentials(config: ServerConfig) -> ServerCredentials:
    """The files ``config`` names for authentication and TLS, loaded and checked;
    ConfigError names the one that cannot be used. The daemon loads them before
    it makes its state directory or starts its engine: a missing users file is
    the configuration's error (exit 2, not retried), and nothing is left behind."""
    tls = None
    if config.https_port is not None:
        if config.certfile is None:
            raise ConfigError("https_port is set but certfile is not")
        tls = tls_context(config.certfile, config.keyfile)
    return ServerCredentials(build_authenticator(config), tls)


class CimServer:
    """lmi-mountd's CIM-XML server: ``config``'s listeners in front of ``broker``.

    The broker is wrapped so that ``root/interop`` is served here
    (``interop.InteropBroker``). ``start()`` returns once the sockets listen;
    ``shutdown()`` stops accepting and lets running requests finish.
    """

    def __init__(self, config: ServerConfig, broker: Any, *,
                 subscriptions_file: Path | None = None,
                 credentials: ServerCredentials | None = None) -> None:
        self.config = config
        credentials = credentials or server_credentials(config)
        hostname = config.hostname or socket.getfqdn()
        classes = load_interop_classes(broker.model.mof_dir)
        # Indications need the model's engine (a Broker's context); a broker
        # without one (a test double) serves without them.
        self.indications: IndicationService | None = (
            indication_service(broker, config.indications, get_interop_class=classes.get,
                               interop_namespace=INTEROP_NAMESPACE,
                               subscriptions_file=subscriptions_file, system_name=hostname)
            if hasattr(broker, "context") else None)
        #: The method calls' jobs, whose windows' thread the supervisor watches.
        self.jobs: JobManager | None = broker.context.jobs if hasattr(broker, "context") else None
        self.broker = InteropBroker(
            broker, system_name=hostname, version=__version__, classes=classes,
            indications=self.indications)
        self.contexts = ContextTable(config.enumeration)
        self.dispatcher = Dispatcher(self.broker, self.contexts, host=hostname)
        self.app = CimXmlApp(self.dispatcher, credentials.authenticator,
                             plain_http=config.plain_http, realm=config.realm)
        listeners = []
        for address in config.listen:
            if config.http_port is not None:
                listeners.append(Listener(address, config.http_port))
            if config.https_port is not None:
                listeners.append(Listener(address, config.https_port, credentials.tls))
        self.http = HttpServer(listeners, self.app, config.http)
        self._sweeper: threading.Thread | None = None
        self._stop = threading.Event()

    @property
    def addresses(self) -> list[tuple[str, int, bool]]:
        """(host, port, tls) of each listening socket."""
        return self.http.addresses

    def start(self) -> None:
        if self.indications is not None:
            self.indications.start()
        self.http.start()
        # Expired enumeration contexts hold broker iterators: sweep them even
        # when no request comes to do it on the way.
        self._sweeper = threading.Thread(target=self._sweep, name="lmi-mountd-contexts",
                                         daemon=True)
        self._sweeper.start()
        for host, port, secure in self.addresses:
            log.info("listening on %s port %d (%s)", host, port, "HTTPS" if secure else "HTTP")

    def _sweep(self) -> None:
        while not self._stop.wait(5.0):
            self.contexts.expire()

    def alive(self, within: float) -> str | None:
        """What stopped: the I/O loop, or the indications' threads; None if nothing."""
        if not self.http.alive(within=within):
            return "the HTTP I/O loop stopped"
        if self.indications is not None and not self.indications.alive():
            return "an indication thread stopped"
        if self.jobs is not None and not self.jobs.alive:
            return "the thread that ends method calls' synchronous windows stopped"
        return None

    def shutdown(self, timeout: float = 30.0) -> None:
        self._stop.set()
        self.http.shutdown(timeout)
        if self.indications is not None:
            self.indications.close()
        # The broker's iterators held by open enumerations end with the server.
        self.contexts.clear()

    def __enter__(self) -> CimServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()


def serve(config: ServerConfig, broker: Any, stop: threading.Event | None = None) -> None:
    """Serve until ``stop`` is set (forever without one), then shut down gracefully."""
    server = CimServer(config, broker)
    server.start()
    try:
        (stop or threading.Event()).wait()
    finally:
        server.shutdown()
