"""A fleet report with plain pywbem: every host's mounts, in parallel, one line per host.

Usage: ``python3 fleet_report.py [--ca-certs FILE] NAME=URL ...``; the user name
and password come from LMI_MOUNT_USERNAME and LMI_MOUNT_PASSWORD. One thread
per host (at most 32): a slow or dead host delays only its own line.
"""

from __future__ import annotations

import argparse
import os
import sys
from concurrent.futures import ThreadPoolExecutor

from pywbem import Error, WBEMConnection

NAMESPACE = "root/cimv2"


def report(url: str, creds: tuple[str, str], ca_certs: str | None) -> str:
    """One host's line: its mounts, those in fstab, those held, and those that drifted."""
    conn = WBEMConnection(url, creds, default_namespace=NAMESPACE, ca_certs=ca_certs,
                          timeout=30)
    if ca_certs is not None:
        # requests lets REQUESTS_CA_BUNDLE (or CURL_CA_BUNDLE) win over the
        # CA file given here (requests issue 3829): the one named counts.
        conn.session.trust_env = False
    try:
        mounts = conn.ExecQuery("WQL", "SELECT MountPointPath, Caption, ReferenceCount "
                                "FROM LMI_MountedFileSystem", NAMESPACE)
    except Error as exc:
        return f"unreachable ({exc})"
    finally:
        conn.close()
    in_fstab = sum("in fstab" in (m["Caption"] or "") for m in mounts)
    held = sum((m["ReferenceCount"] or 0) > 0 for m in mounts)
    drifted = sorted(m["MountPointPath"] for m in mounts if "drifted" in (m["Caption"] or ""))
    line = f"{len(mounts)} mounts, {in_fstab} in fstab, {held} held"
    return line + (f", drifted: {' '.join(drifted)}" if drifted else "")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ca-certs", help="CA certificates that verify the hosts")
    parser.add_argument("hosts", nargs="+", metavar="NAME=URL")
    args = parser.parse_args(argv)
    hosts = dict(host.split("=", 1) for host in args.hosts)
    creds = (os.environ["LMI_MOUNT_USERNAME"], os.environ["LMI_MOUNT_PASSWORD"])
    with ThreadPoolExecutor(max_workers=min(32, len(hosts))) as pool:
        lines = pool.map(lambda url: report(url, creds, args.ca_certs), hosts.values())
        for name, line in zip(hosts, lines, strict=True):
            print(f"{name}: {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
