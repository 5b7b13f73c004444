"""Fixtures shared by the unit tests."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, settings

from tests.unit.pki import Pki

# No property test is timed: hypothesis's default deadline (200 ms an example) and its
# "too slow" check are wall-clock assertions, which fail on a loaded machine, not on a
# wrong answer. Tests that set their own settings keep them.
settings.register_profile("untimed", deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("untimed")


@pytest.fixture(scope="module")
def pki() -> Pki:
    return Pki()
