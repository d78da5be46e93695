"""Subscribing to lmi-mountd with pywbem: the example of docs/subscribing.rst, runnable.

Usage: ``python3 docs/examples/subscribe.py URL USER PASSWORD MOUNT_POINT``; it
listens on a free port of 127.0.0.1, subscribes to the lifecycle of mounts,
mounts a tmpfs on MOUNT_POINT through the service, prints the indications
that arrive, unmounts, and removes what it subscribed.
"""

from __future__ import annotations

import queue
import socket
import sys
from typing import Any

from pywbem import (
    Uint16,
    WBEMConnection,
    WBEMListener,
    WBEMServer,
    WBEMSubscriptionManager,
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main(url: str, user: str, password: str, mount_point: str) -> list[str]:
    """Run the example; return what it printed, line by line."""
    printed: list[str] = []

    # [listen]
    arrived: queue.Queue[Any] = queue.Queue()
    port = free_port()
    listener = WBEMListener("127.0.0.1", http_port=port, https_port=None)
    listener.add_callback(lambda indication, host: arrived.put(indication))
    listener.start()
    # [/listen]
    try:
        # [subscribe]
        conn = WBEMConnection(url, (user, password), default_namespace="root/cimv2")
        manager = WBEMSubscriptionManager("console")
        server_id = manager.add_server(WBEMServer(conn))
        destination = manager.add_destination(server_id, f"http://127.0.0.1:{port}",
                                              owned=True, destination_id="here")
        mounts = manager.add_filter(
            server_id, "root/cimv2",
            "SELECT * FROM CIM_InstIndication WHERE SourceInstance ISA LMI_MountedFileSystem",
            owned=True, filter_id="mounts")
        manager.add_subscriptions(server_id, mounts.path, [destination.path])
        # [/subscribe]

        # [changes]
        [service] = conn.EnumerateInstanceNames("LMI_MountConfigurationService")

        def told() -> None:
            indication = arrived.get(timeout=10)
            mount = indication["SourceInstance"]
            printed.append(f"{indication.classname}: {mount['FileSystemSpec']} on "
                           f"{mount['MountPointPath']}, holders {list(mount['Holders'])} "
                           f"(#{indication['SequenceNumber']})")

        _, out = conn.InvokeMethod("CreateMount", service, Mode=Uint16(32768),
                                   MountPoint=mount_point, FileSystemSpec="tmpfs",
                                   FileSystemType="tmpfs")
        # Told before the next change: a mount made and unmade between two
        # reads of the service is not seen (see "Changes that happen ...").
        told()
        conn.InvokeMethod("DeleteMount", service, Mode=Uint16(32769), Mount=out["Mount"])
        told()
        # [/changes]

        # [unsubscribe]
        manager.remove_server(server_id)  # its owned filter, destination and subscription
        # [/unsubscribe]
    finally:
        listener.stop()
    return printed


if __name__ == "__main__":
    for line in main(*sys.argv[1:5]):
        print(line)
