"""Project-wide pytest hooks: the ``private_namespace`` marker and its runner.

Keep this file minimal: helpers belong in tests/support, fixtures of one test
directory in that directory's conftest.py.
"""

from __future__ import annotations

import pytest

from tests.support.namespace import MARKER_HELP, pyfunc_call_in_namespace


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", MARKER_HELP)


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    return pyfunc_call_in_namespace(pyfuncitem)
