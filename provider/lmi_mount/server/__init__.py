"""CIM-XML over HTTP(S): moves bytes, knows no mount logic.

The entry point for ``lmi-mountd``: build a ``ServerConfig`` (or read one
with ``load_config``), then ``serve(config, broker, stop)`` or drive a
``CimServer`` (``start()``, ``addresses``, ``shutdown()``).

Layers, each in its module: ``http`` (sockets, TLS, HTTP/1.1 framing and
limits), ``app`` (DSP0200's HTTP rules, authentication, the server),
``auth`` (Basic credentials, users file, PAM, roles), ``cimxml`` (every byte
of XML), ``dispatch`` (operations to broker calls), ``pull`` (enumeration
contexts), ``wql`` (queries), ``interop`` (``root/interop``), ``config``.
"""

from lmi_mount.server.app import CimServer, serve
from lmi_mount.server.config import ConfigError, ServerConfig, from_ini, load_config

__all__ = ["CimServer", "ConfigError", "ServerConfig", "from_ini", "load_config", "serve"]
