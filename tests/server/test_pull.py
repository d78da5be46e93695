"""pull: enumeration contexts draw lazily, expire, stay bounded, and belong to their opener."""

from __future__ import annotations

from collections.abc import Generator, Iterator

import pytest
from pywbem import CIMError

from lmi_mount.server.pull import Batch, ContextTable, PullLimits


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Source:
    """An iterator that records how far it was drawn and whether it was closed."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.drawn = 0
        self.closed = False

    def __iter__(self) -> Iterator[int]:
        try:
            for i in range(self.count):
                self.drawn = i + 1
                yield i
        finally:
            self.closed = True


def context_id(batch: Batch) -> str:
    assert batch.context_id is not None
    return batch.context_id


def table(clock: Clock | None = None, **limits: int) -> ContextTable:
    return ContextTable(PullLimits(**limits), clock=clock or Clock())


def test_open_then_pull_to_the_end_drawing_lazily() -> None:
    contexts = table()
    source = Source(5)
    batch = contexts.open(iter(source), namespace="root/cimv2", kind="k", owner="u",
                          timeout=30, max_count=2)
    assert list(batch) == [0, 1]
    # One look-ahead, so that EndOfSequence can be true without an empty pull.
    assert source.drawn == 3 and not batch.end_of_sequence and batch.context_id
    second = contexts.pull(context_id(batch), namespace="ROOT/cimv2", kind="k", owner="u",
                           max_count=10)
    assert list(second) == [2, 3, 4]
    assert second.end_of_sequence and second.context_id is None
    assert source.closed and len(contexts) == 0


def test_open_with_zero_max_count_returns_nothing_yet() -> None:
    contexts = table()
    batch = contexts.open(iter(Source(3)), namespace="n", kind="k", owner=None, timeout=30,
                          max_count=0)
    assert list(batch) == [] and not batch.end_of_sequence
    assert len(contexts) == 1


def test_empty_enumeration_ends_at_open() -> None:
    contexts = table()
    batch = contexts.open(iter(Source(0)), namespace="n", kind="k", owner=None, timeout=30,
                          max_count=10)
    assert list(batch) == [] and batch.end_of_sequence and len(contexts) == 0


@pytest.mark.parametrize(("identifier", "namespace", "kind", "owner"), [
    pytest.param("made-up", "n", "k", "u", id="unknown"),
    pytest.param(None, "other", "k", "u", id="other-namespace"),
    pytest.param(None, "n", "k", "mallory", id="other-owner"),
    pytest.param(None, "n", "paths", "u", id="other-kind"),
])
def test_a_context_is_only_its_owners(identifier: str | None, namespace: str, kind: str,
                                      owner: str) -> None:
    contexts = table()
    batch = contexts.open(iter(Source(3)), namespace="n", kind="k", owner="u", timeout=30,
                          max_count=1)
    list(batch)
    with pytest.raises(CIMError) as caught:
        contexts.pull(identifier or context_id(batch), namespace=namespace, kind=kind,
                      owner=owner, max_count=1)
    assert caught.value.status_code_name == "CIM_ERR_INVALID_ENUMERATION_CONTEXT"
    # The failed attempt leaves the context usable by its owner.
    assert list(contexts.pull(context_id(batch), namespace="n", kind="k", owner="u",
                              max_count=5)) == [1, 2]


def test_a_context_in_use_cannot_be_pulled_twice() -> None:
    contexts = table()
    batch = contexts.open(iter(Source(10)), namespace="n", kind="k", owner="u", timeout=30,
                          max_count=1)
    list(batch)
    running = contexts.pull(context_id(batch), namespace="n", kind="k", owner="u", max_count=3)
    with pytest.raises(CIMError, match="in use by another request"):
        contexts.pull(context_id(batch), namespace="n", kind="k", owner="u", max_count=3)
    assert list(running) == [1, 2, 3]


def test_contexts_expire_after_their_timeout_and_are_closed() -> None:
    clock = Clock()
    contexts = table(clock)
    source = Source(10)
    batch = contexts.open(iter(source), namespace="n", kind="k", owner="u", timeout=30,
                          max_count=1)
    list(batch)
    clock.now += 29
    # A pull renews the timeout.
    list(contexts.pull(context_id(batch), namespace="n", kind="k", owner="u", max_count=1))
    clock.now += 29
    assert contexts.expire() == 0
    clock.now += 2
    assert contexts.expire() == 1 and source.closed
    with pytest.raises(CIMError, match="closed, expired"):
        contexts.pull(context_id(batch), namespace="n", kind="k", owner="u", max_count=1)


def test_a_batch_never_drawn_does_not_hold_its_context_forever() -> None:
    clock = Clock()
    contexts = table(clock, max_contexts=1)
    contexts.open(iter(Source(3)), namespace="n", kind="k", owner="u", timeout=10,
                  max_count=1)  # the response was never written
    with pytest.raises(CIMError) as caught:
        contexts.open(iter(Source(3)), namespace="n", kind="k", owner="u", timeout=10,
                      max_count=1)
    assert caught.value.status_code_name == "CIM_ERR_SERVER_LIMITS_EXCEEDED"
    clock.now += 21
    contexts.open(iter(Source(3)), namespace="n", kind="k", owner="u", timeout=10,
                  max_count=1)


def test_limits_server_wide_and_per_user() -> None:
    contexts = table(max_contexts=3, max_contexts_per_user=2)
    for owner in ("a", "a"):
        list(contexts.open(iter(Source(5)), namespace="n", kind="k", owner=owner, timeout=30,
                           max_count=1))
    rejected = Source(5)
    with pytest.raises(CIMError, match="user 'a' has 2 enumeration contexts open"):
        contexts.open(iter(rejected), namespace="n", kind="k", owner="a", timeout=30,
                      max_count=1)
    assert rejected.drawn == 0  # refused before anything was asked of the broker
    list(contexts.open(iter(Source(5)), namespace="n", kind="k", owner="b", timeout=30,
                       max_count=1))
    with pytest.raises(CIMError, match="3 enumeration contexts are open"):
        contexts.open(iter(Source(5)), namespace="n", kind="k", owner="c", timeout=30,
                      max_count=1)


def test_close_and_check() -> None:
    contexts = table()
    source = Source(5)
    batch = contexts.open(iter(source), namespace="n", kind="k", owner="u", timeout=30,
                          max_count=1)
    list(batch)
    contexts.check(context_id(batch), namespace="n", owner="u")
    contexts.close(context_id(batch), namespace="n", owner="u")
    assert source.closed and len(contexts) == 0
    with pytest.raises(CIMError):
        contexts.check(context_id(batch), namespace="n", owner="u")


def test_a_consumer_that_stops_early_drops_the_context() -> None:
    contexts = table()
    source = Source(5)
    batch = contexts.open(iter(source), namespace="n", kind="k", owner="u", timeout=30,
                          max_count=3)
    drawn = iter(batch)
    next(drawn)
    assert isinstance(drawn, Generator)
    drawn.close()  # the connection dropped while the response was written
    assert source.closed and len(contexts) == 0


@pytest.mark.parametrize(("value", "expected"), [
    pytest.param(None, 30, id="default"),
    pytest.param(60, 60, id="maximum"),
])
def test_operation_timeout(value: int | None, expected: int) -> None:
    assert table(default_timeout=30, max_timeout=60).timeout(value) == expected


@pytest.mark.parametrize("value", [0, 61])
def test_operation_timeout_out_of_range(value: int) -> None:
    with pytest.raises(CIMError) as caught:
        table(default_timeout=30, max_timeout=60).timeout(value)
    assert caught.value.status_code_name == "CIM_ERR_INVALID_OPERATION_TIMEOUT"


def test_max_object_count_and_continue_on_error() -> None:
    contexts = table(max_object_count=100)
    assert contexts.max_count(10**9, required=True) == 100
    assert contexts.max_count(None, required=False) == 0
    with pytest.raises(CIMError, match="MaxObjectCount is required"):
        contexts.max_count(None, required=True)
    with pytest.raises(CIMError) as caught:
        contexts.check_continue_on_error(True)
    assert caught.value.status_code_name == "CIM_ERR_CONTINUATION_ON_ERROR_NOT_SUPPORTED"
    contexts.check_continue_on_error(False)


def test_limits_are_checked() -> None:
    with pytest.raises(ValueError, match="default_timeout 90 exceeds max_timeout 60"):
        PullLimits(default_timeout=90, max_timeout=60)
    with pytest.raises(ValueError, match="max_contexts must be at least 1"):
        PullLimits(max_contexts=0)


def test_clear_closes_every_context() -> None:
    contexts = table()
    sources = [Source(5) for _ in range(3)]
    for source in sources:
        list(contexts.open(iter(source), namespace="n", kind="k", owner="u", timeout=30,
                           max_count=1))
    assert contexts.clear() == 3 and len(contexts) == 0
    assert all(source.closed for source in sources)
