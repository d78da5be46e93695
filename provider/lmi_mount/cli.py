"""Console entry points: ``lmi-mountd`` (the CIM-XML service) and ``lmi-mount``
(local administration on the host).

Owns: nothing but the names setup.cfg points at. The daemon lives in
``daemon``, the administration commands in ``admin``; importing them lazily
keeps ``lmi-mount --help`` from loading the server.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Sequence


def mountd_main(argv: Sequence[str] | None = None) -> int:
    from lmi_mount.daemon import main

    return main(argv)


def mount_main(argv: Sequence[str] | None = None) -> int:
    from lmi_mount.admin import main

    try:
        code = main(argv)
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader went away (``lmi-mount status --json | head``): stop
        # quietly, as cat and findmnt do when SIGPIPE ends them, and with the
        # status a shell gives them (128 + SIGPIPE). Python ignores SIGPIPE, so
        # the write raised; the output still buffered must not raise again
        # when the interpreter flushes it at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE
    return code
