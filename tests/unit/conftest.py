"""Fixtures shared by the unit tests."""

from __future__ import annotations

import pytest

from tests.unit.pki import Pki


@pytest.fixture(scope="module")
def pki() -> Pki:
    return Pki()
