"""Run test code inside a private mount namespace, in a forked child.

Owns: ``run_in_private_namespace`` (fork, enter a private mount namespace, run
a function, ship its result or exception back through a pipe), the
``@private_namespace`` decorator and the ``private_namespace`` marker that run
a whole test body that way (see ``pytest_pyfunc_call`` in tests/conftest.py).
Must not know: what the tests mount.

Whatever the child mounts dies with its namespace: the host never sees it.
Processes the test leaves behind inside the namespace (a FUSE daemon, a
``sleep`` holding a mount busy) are killed before the child exits, because a
namespace lives as long as one of its processes does.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import pickle
import select
import signal
import subprocess
import tempfile
import time
import traceback
from collections.abc import Callable
from typing import Any, TypeVar, cast

import pytest

from lmi_mount.linux.namespace import enter_private_mount_namespace, libc
from lmi_mount.mounts.escaping import unescape_field
from tests.support.skips import requires_root

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_TIMEOUT = 60.0
MARKER = "private_namespace"
MARKER_HELP = (
    f"{MARKER}(timeout={DEFAULT_TIMEOUT:g}): run the test body in a forked child inside a "
    "private mount namespace (tests/support/namespace.py)"
)

# <linux/prctl.h>: orphans of the child's descendants (daemons) are re-parented
# to the child, which can then reap them instead of leaving zombies to init.
_PR_SET_CHILD_SUBREAPER = 36


class NamespaceChildError(Exception):
    """The child failed in a way that cannot be re-raised as the original exception."""


def run_in_private_namespace(
    fn: Callable[..., T], *args: Any, timeout: float = DEFAULT_TIMEOUT, **kwargs: Any
) -> T:
    """Call ``fn(*args, **kwargs)`` in a forked child inside a private mount namespace.

    Returns what ``fn`` returned (it must pickle). An exception raised by
    ``fn`` is re-raised here as the same type with the same message (an
    AssertionError keeps pytest's explanation), with the child's traceback
    attached as a note; an exception that does not survive pickling becomes a
    NamespaceChildError carrying its type, message and traceback. Arguments
    reach the child through fork, so they need not pickle.

    After ``timeout`` seconds the child and every process left in its
    namespace are killed and TimeoutError is raised.
    """
    read_fd, write_fd = os.pipe()
    host_namespace = _mount_namespace(os.getpid())
    pid = os.fork()
    if pid == 0:  # the child never returns from this branch
        os.close(read_fd)
        _child(write_fd, host_namespace, fn, args, kwargs)
    os.close(write_fd)
    try:
        data, finished = _read_all(read_fd, time.monotonic() + timeout)
    finally:
        os.close(read_fd)
    if not finished:
        _kill_namespace_of(pid)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        raise TimeoutError(f"{_name(fn)} did not finish within {timeout:g} s in its namespace")
    _, status = os.waitpid(pid, 0)
    if not data:
        raise NamespaceChildError(
            f"the namespace child running {_name(fn)} died without a result "
            f"({_describe_status(status)})"
        )
    outcome = pickle.loads(data)
    if outcome[0] == "ok":
        result: T = pickle.loads(outcome[1])
        return result
    _, exc_bytes, type_name, message, child_traceback = outcome
    note = f"raised in the private-namespace child:\n{child_traceback}"
    try:
        exc = pickle.loads(exc_bytes) if exc_bytes is not None else None
    except Exception:  # a class whose __init__ does not accept its own args
        exc = None
    if not isinstance(exc, BaseException):
        exc = NamespaceChildError(f"{type_name}: {message}")
    exc.add_note(note)
    raise exc


def private_namespace(fn: F) -> F:
    """Decorate a test so that its whole body (fixtures included as arguments) runs
    in a private mount namespace; it is marked ``root`` and skipped without root."""
    marked = requires_root(pytest.mark.root(pytest.mark.private_namespace(fn)))
    return cast(F, marked)


def pyfunc_call_in_namespace(item: pytest.Function) -> bool | None:
    """``pytest_pyfunc_call`` body: run a test marked ``private_namespace`` in a child.

    The marker may come from the test, its class or module, or from a
    parametrization (``pytest.param(..., marks=...)``), so a fixture can decide
    per parameter which runs go into a namespace.
    """
    __tracebackhide__ = True
    marker = item.get_closest_marker(MARKER)
    if marker is None:
        return None
    timeout = float(marker.kwargs.get("timeout", DEFAULT_TIMEOUT))
    names = inspect.signature(item.obj).parameters
    kwargs = {name: item.funcargs[name] for name in names if name in item.funcargs}
    run_in_private_namespace(item.obj, timeout=timeout, **kwargs)
    return True


def _child(
    write_fd: int, host_namespace: str | None, fn: Callable[..., Any], args: Any, kwargs: Any
) -> None:
    """Body of the forked child: never returns, never runs the parent's exit handlers."""
    code = 0
    try:
        try:
            libc().prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
            enter_private_mount_namespace()
            payload: tuple[Any, ...] = ("ok", pickle.dumps(fn(*args, **kwargs)))
        except BaseException as exc:
            payload = _error_payload(exc)
        finally:
            _end_namespace_processes(host_namespace)
        _write_all(write_fd, pickle.dumps(payload))
    except BaseException:
        code = 70  # EX_SOFTWARE: the parent reports the missing result
        traceback.print_exc()
    finally:
        os._exit(code)


def _error_payload(exc: BaseException) -> tuple[Any, ...]:
    text = "".join(traceback.format_exception(exc))
    try:
        exc_bytes: bytes | None = pickle.dumps(exc)
    except Exception:
        exc_bytes = None
    return ("error", exc_bytes, type(exc).__qualname__, str(exc), text)


def _end_namespace_processes(host_namespace: str | None, grace: float = 2.0) -> None:
    """Kill the processes left in this namespace and reap them (we are their subreaper).

    Only in a namespace of our own: should entering it have failed, this
    process still shares the host's, whose processes are not ours to end.
    """
    own = _mount_namespace(os.getpid())
    if own is None or host_namespace is None or own == host_namespace:
        return
    leftovers = [pid for pid in _pids() if pid != os.getpid() and _mount_namespace(pid) == own]
    for pid in leftovers:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        try:
            reaped, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if reaped == 0:
            time.sleep(0.01)


def _kill_namespace_of(pid: int) -> None:
    """Kill every process sharing the mount namespace of ``pid`` (a hung child's)."""
    namespace = _mount_namespace(pid)
    if namespace is None or namespace == _mount_namespace(os.getpid()):
        return
    for other in _pids():
        if other != pid and _mount_namespace(other) == namespace:
            with contextlib.suppress(ProcessLookupError):
                os.kill(other, signal.SIGKILL)


def _mount_namespace(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/mnt")
    except OSError:  # gone, a zombie, or not ours to see
        return None


def _pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def _read_all(fd: int, deadline: float) -> tuple[bytes, bool]:
    chunks: list[bytes] = []
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return b"".join(chunks), False
        ready, _, _ = select.select([fd], [], [], remaining)
        if not ready:
            continue
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            return b"".join(chunks), True
        chunks.append(chunk)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
    os.close(fd)


def _describe_status(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exit status {os.waitstatus_to_exitcode(status)}"


def _name(fn: Callable[..., Any]) -> str:
    return getattr(fn, "__qualname__", repr(fn))


#: Where tests make what they mount: a mount there in the host's namespace is a
#: test that mounted outside a private one.
_TEST_AREAS = (tempfile.gettempdir().rstrip("/") + "/", "/dev/shm/")


def host_mount_points() -> set[str]:
    """The mount points of this process's mount namespace under the tests' areas."""
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as stream:
        points = {unescape_field(line.split(" ", 5)[4]) for line in stream}
    return {point for point in points if point.startswith(_TEST_AREAS)}


def undo_host_mounts(points: set[str]) -> None:
    """Unmount ``points`` from this namespace (deepest first), as a leak's cleanup."""
    for point in sorted(points, key=len, reverse=True):
        subprocess.run(["umount", "-l", point], check=False, capture_output=True)
