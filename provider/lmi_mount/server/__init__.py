"""CIM-XML over HTTP(S): moves bytes, knows no mount logic.

The entry point for ``lmi-mountd``: build a ``server.config.ServerConfig``
(or read one with ``load_config``), then ``server.app.serve(config, broker,
stop)`` or drive a ``server.app.CimServer`` (``start()``, ``addresses``,
``shutdown()``). Nothing is imported here: ``python -m
lmi_mount.server.auth`` must not find its own module already loaded.

Layers, each in its module: ``http`` (sockets, TLS, HTTP/1.1 framing and
limits), ``app`` (DSP0200's HTTP rules, authentication, the server),
``auth`` (Basic credentials, users file, PAM, roles), ``cimxml`` (every byte
of XML), ``dispatch`` (operations to broker calls), ``pull`` (enumeration
contexts), ``wql`` (queries), ``interop`` (``root/interop``), ``config``.
"""
