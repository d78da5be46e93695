"""pywbemcli ``--mock-server`` startup script: the lmi-mount model in a mock WBEM server.

Owns: filling the mock's ``root/cimv2`` with the model's qualifier
declarations and classes (``lmi_mount.cim.model.install_model``), so that the
model can be browsed with pywbemcli without a server. It holds no instances
yet: live mounts come with the providers.

Must not know: how the model is compiled or where its MOF lives (the model
module finds it; ``LMI_MOUNT_MOF_DIR`` overrides).

Usage (see README.md next to this file)::

    pywbemcli --mock-server mock_repo/mock_server.py class enumerate --names-only
"""

from __future__ import annotations

from typing import Any

from lmi_mount.cim.model import install_model, load_model
from lmi_mount.cim.names import NAMESPACE


def setup(conn: Any, server: Any, verbose: bool) -> None:
    """Called by pywbemcli with its FakedWBEMConnection, its WBEMServer and --verbose."""
    model = load_model()
    install_model(conn, NAMESPACE, model)
    if verbose:
        print(
            f"lmi-mount: {len(model.classes)} classes ({len(model.lmi_classnames)} LMI) and "
            f"{len(model.qualifiers)} qualifier declarations from {model.mof_dir} "
            f"installed in {NAMESPACE}"
        )
