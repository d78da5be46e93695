"""Console entry points: ``lmi-mountd`` (the CIM-XML service) and ``lmi-mount``
(local administration on the host).

Owns: nothing but the names setup.cfg points at. The daemon lives in
``daemon``, the administration commands in ``admin``; importing them lazily
keeps ``lmi-mount --help`` from loading the server.
"""

from __future__ import annotations

from collections.abc import Sequence


def mountd_main(argv: Sequence[str] | None = None) -> int:
    from lmi_mount.daemon import main

    return main(argv)


def mount_main(argv: Sequence[str] | None = None) -> int:
    from lmi_mount.admin import main

    return main(argv)
