"""Server-side enumeration contexts of the pull operations (DSP0200 1.4: Open*, Pull*).

Owns: the table of open enumeration contexts: their opaque identifiers,
expiry (OperationTimeout after the last open or pull), the bound on how many
are open at once, who owns each, and handing out at most MaxObjectCount
results of a context's iterator per request. Results are never collected:
a context holds the broker's iterator, so memory stays bounded by the
number of contexts, not by the size of the enumerations.

Must not know: XML, HTTP, the broker, or what the iterated objects are.

A context is marked busy while a request draws its results, so two
concurrent pulls on one context cannot interleave: the second finds no
usable context (CIM_ERR_INVALID_ENUMERATION_CONTEXT). A request that never
draws its batch cannot hold a context forever: a busy context is forgotten
after twice its OperationTimeout.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from pywbem import (
    CIM_ERR_CONTINUATION_ON_ERROR_NOT_SUPPORTED,
    CIM_ERR_INVALID_ENUMERATION_CONTEXT,
    CIM_ERR_INVALID_OPERATION_TIMEOUT,
    CIM_ERR_INVALID_PARAMETER,
    CIM_ERR_SERVER_LIMITS_EXCEEDED,
    CIMError,
)

_END = object()


@dataclass(frozen=True)
class PullLimits:
    """Limits of the enumeration contexts (the ``[enumeration]`` section of the config)."""

    #: Open contexts at most, server-wide.
    max_contexts: int = 256
    #: Open contexts at most per user.
    max_contexts_per_user: int = 64
    #: OperationTimeout when the client gives none, in seconds.
    default_timeout: int = 30
    #: The longest OperationTimeout accepted, in seconds.
    max_timeout: int = 300
    #: Results per Open/Pull response at most, whatever MaxObjectCount asks.
    max_object_count: int = 10000

    def __post_init__(self) -> None:
        for name in ("max_contexts", "max_contexts_per_user", "default_timeout", "max_timeout",
                     "max_object_count"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, not {getattr(self, name)}")
        if self.default_timeout > self.max_timeout:
            raise ValueError(
                f"default_timeout {self.default_timeout} exceeds max_timeout {self.max_timeout}"
            )


@dataclass
class EnumerationContext:
    """One open enumeration: where it is, what it yields, and until when it lives."""

    identifier: str
    namespace: str
    kind: str
    owner: str | None
    timeout: float
    iterator: Iterator[Any]
    expires: float
    busy: bool = False
    lookahead: Any = field(default=_END)


class Batch:
    """At most ``count`` results of a context, drawn lazily while they are encoded.

    Iterate it once; ``end_of_sequence`` and ``context_id`` are known when the
    iteration is over (the context is put back, or dropped at its end).
    """

    def __init__(self, table: ContextTable, context: EnumerationContext, count: int) -> None:
        self._table = table
        self._context = context
        self._count = count
        self._done = False
        self.end_of_sequence = False
        self.context_id: str | None = None

    def __iter__(self) -> Iterator[Any]:
        if self._done:
            raise RuntimeError("a Batch is iterated once")
        self._done = True
        context = self._context
        finished = False
        try:
            for _ in range(self._count):
                item = self._next(context)
                if item is _END:
                    break
                yield item
            # DSP0200: EndOfSequence is true when no result is left; look one
            # ahead so that the client need not pull an empty batch.
            if context.lookahead is _END:
                context.lookahead = self._next(context)
            finished = True
        finally:
            if not finished:
                # The consumer stopped early (an error while encoding, a
                # dropped connection): the results are lost, so is the context.
                self._table.discard(context)
        if context.lookahead is _END:
            self.end_of_sequence = True
            self._table.discard(context)
        else:
            self.context_id = context.identifier
            self._table.put_back(context)

    @staticmethod
    def _next(context: EnumerationContext) -> Any:
        if context.lookahead is not _END:
            item, context.lookahead = context.lookahead, _END
            return item
        return next(context.iterator, _END)


class ContextTable:
    """The open enumeration contexts of one server."""

    def __init__(
        self, limits: PullLimits | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limits = limits or PullLimits()
        self._clock = clock
        self._lock = threading.Lock()
        # Contexts in use by a running request stay here (``busy``): they
        # still count against the limits.
        self._contexts: dict[str, EnumerationContext] = {}

    def __len__(self) -> int:
        with self._lock:
            return len(self._contexts)

    def timeout(self, operation_timeout: int | None) -> int:
        """The OperationTimeout to use, checked against the limits (DSP0200: NULL is the
        server's default; 0, no timeout at all, is refused here)."""
        if operation_timeout is None:
            return self.limits.default_timeout
        if operation_timeout == 0 or operation_timeout > self.limits.max_timeout:
            raise CIMError(
                CIM_ERR_INVALID_OPERATION_TIMEOUT,
                f"OperationTimeout {operation_timeout} is not within 1..{self.limits.max_timeout} "
                "seconds",
            )
        return operation_timeout

    @staticmethod
    def check_continue_on_error(continue_on_error: bool | None) -> None:
        if continue_on_error:
            raise CIMError(
                CIM_ERR_CONTINUATION_ON_ERROR_NOT_SUPPORTED,
                "ContinueOnError is not supported: an enumeration stops at its first error",
            )

    def max_count(self, max_object_count: int | None, *, required: bool) -> int:
        """MaxObjectCount, capped to the server's limit (DSP0200 lets a server return fewer)."""
        if max_object_count is None:
            if required:
                raise CIMError(CIM_ERR_INVALID_PARAMETER, "MaxObjectCount is required")
            return 0
        if max_object_count < 0:
            raise CIMError(
                CIM_ERR_INVALID_PARAMETER, f"MaxObjectCount {max_object_count} is negative"
            )
        return min(max_object_count, self.limits.max_object_count)

    def open(
        self,
        iterator: Iterator[Any],
        *,
        namespace: str,
        kind: str,
        owner: str | None,
        timeout: int,
        max_count: int,
    ) -> Batch:
        """A new context over ``iterator`` and its first batch of ``max_count`` results."""
        now = self._clock()
        context = EnumerationContext(
            identifier=secrets.token_urlsafe(18),
            namespace=namespace,
            kind=kind,
            owner=owner,
            timeout=float(timeout),
            iterator=iterator,
            expires=now + 2 * timeout,
            busy=True,
        )
        with self._lock:
            expired = self._expire(now)
            error = self._limit_error(owner)
            if error is None:
                self._contexts[context.identifier] = context
        # Closing a generator runs the broker's code: not under the lock.
        for old in expired:
            _close(old)
        if error is not None:
            _close(iterator)
            raise error
        return Batch(self, context, max_count)

    def _limit_error(self, owner: str | None) -> CIMError | None:
        if len(self._contexts) >= self.limits.max_contexts:
            return CIMError(
                CIM_ERR_SERVER_LIMITS_EXCEEDED,
                f"{self.limits.max_contexts} enumeration contexts are open; close some "
                "(CloseEnumeration) or let them expire",
            )
        mine = sum(1 for c in self._contexts.values() if c.owner == owner)
        if mine >= self.limits.max_contexts_per_user:
            return CIMError(
                CIM_ERR_SERVER_LIMITS_EXCEEDED,
                f"user {owner!r} has {mine} enumeration contexts open, the limit",
            )
        return None

    def pull(
        self, identifier: str, *, namespace: str, kind: str, owner: str | None, max_count: int
    ) -> Batch:
        """The next batch of the context ``identifier``."""
        return Batch(self, self._take(identifier, namespace, kind, owner), max_count)

    def check(self, identifier: str, *, namespace: str, owner: str | None) -> None:
        """Raise CIM_ERR_INVALID_ENUMERATION_CONTEXT unless the context is open and usable."""
        self.put_back(self._take(identifier, namespace, None, owner))

    def close(self, identifier: str, *, namespace: str, owner: str | None) -> None:
        self.discard(self._take(identifier, namespace, None, owner))

    def _take(
        self, identifier: str, namespace: str, kind: str | None, owner: str | None
    ) -> EnumerationContext:
        now = self._clock()
        with self._lock:
            expired = self._expire(now)
            context = self._contexts.get(identifier)
            # Another user's context is as unknown as a made-up one: its
            # identifier is not a capability that can be passed around.
            usable = (
                context is not None
                and not context.busy
                and context.owner == owner
                and context.namespace.lower() == namespace.lower()
            )
            if usable:
                assert context is not None
                if kind is not None and context.kind != kind:
                    usable = False
                else:
                    context.busy = True
                    # A request that never draws its batch must not hold the
                    # context forever: it is forgotten after twice its timeout.
                    context.expires = now + 2 * context.timeout
        for old in expired:
            _close(old)
        if not usable:
            if context is not None and kind is not None and context.kind != kind:
                raise CIMError(
                    CIM_ERR_INVALID_ENUMERATION_CONTEXT,
                    f"enumeration context {identifier!r} returns {context.kind}, not {kind}",
                )
            raise CIMError(
                CIM_ERR_INVALID_ENUMERATION_CONTEXT,
                f"no open enumeration context {identifier!r} in namespace {namespace!r} "
                "(closed, expired, in use by another request, or never opened)",
            )
        assert context is not None
        return context

    def put_back(self, context: EnumerationContext) -> None:
        with self._lock:
            context.busy = False
            context.expires = self._clock() + context.timeout
            # A context forgotten meanwhile (held past twice its timeout) comes back.
            self._contexts[context.identifier] = context

    def discard(self, context: EnumerationContext) -> None:
        with self._lock:
            self._contexts.pop(context.identifier, None)
        _close(context.iterator)

    def clear(self) -> int:
        """Drop every context (the server stops); return how many were open."""
        with self._lock:
            contexts = list(self._contexts.values())
            self._contexts.clear()
        for context in contexts:
            if not context.busy:
                _close(context.iterator)
        return len(contexts)

    def expire(self) -> int:
        """Drop the contexts whose time is over; return how many."""
        with self._lock:
            expired = self._expire(self._clock())
        for iterator in expired:
            _close(iterator)
        return len(expired)

    def _expire(self, now: float) -> list[Iterator[Any]]:
        """Remove expired contexts; return the iterators to close (outside the lock).

        A busy context past its time is forgotten but not closed: the request
        holding it may still be drawing from its iterator in another thread.
        """
        expired = [c for c in self._contexts.values() if c.expires <= now]
        for context in expired:
            del self._contexts[context.identifier]
        return [c.iterator for c in expired if not c.busy]


def _close(iterator: Iterator[Any]) -> None:
    # A generator holds its frame (and whatever it references) until closed.
    close = getattr(iterator, "close", None)
    if close is not None:
        close()
