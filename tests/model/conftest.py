"""Fixtures of the model tests: the compiled model, shared by the whole session."""

from __future__ import annotations

import pytest

from lmi_mount.cim.model import Model, load_model


@pytest.fixture(scope="session")
def model() -> Model:
    return load_model()
