"""Test support shared by all test directories: private mount namespaces and skips."""

from tests.support.namespace import (
    NamespaceChildError,
    private_namespace,
    run_in_private_namespace,
)
from tests.support.skips import (
    has_tool,
    kernel_filesystems,
    requires_fs,
    requires_root,
    requires_tool,
)

__all__ = [
    "NamespaceChildError",
    "has_tool",
    "kernel_filesystems",
    "private_namespace",
    "requires_fs",
    "requires_root",
    "requires_tool",
    "run_in_private_namespace",
]
