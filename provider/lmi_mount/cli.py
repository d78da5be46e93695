"""Thin command-line entry points: ``lmi-mountd`` (the CIM-XML server) and
``lmi-mount`` (local administration on the host).

Owns: argument parsing and wiring of the layers below. Must not know: mount
logic (the engine), CIM (``cim``), or the wire format (``server``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from lmi_mount import __version__

_SERVER_PENDING = (
    "lmi-mountd is not available yet: the CIM-XML server is built by the issue "
    "'lmi-mountd: a standalone CIM-XML server'. Until then, use the pywbem_mock "
    "playground: pywbemcli --mock-server mock_repo/mock_server.py"
)


def _mountd_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lmi-mountd",
        description="CIM-XML server for the OpenLMI Mounting Model. " + _SERVER_PENDING,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "--sandbox", metavar="DIR", nargs="?", const="/tmp/lmi-mount-sandbox",
        help="run in a private mount namespace with fstab and state under DIR",
    )
    return parser


def mountd_main(argv: Sequence[str] | None = None) -> int:
    _mountd_parser().parse_args(argv)
    print(_SERVER_PENDING, file=sys.stderr)
    return 2


def mount_main(argv: Sequence[str] | None = None) -> int:
    from lmi_mount.admin import main

    return main(argv)
