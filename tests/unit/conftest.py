"""Fixtures shared by the unit tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings

from evc_operator import essential
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


@pytest.fixture(autouse=True)
def no_sigterm_to_the_tests(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """An operator loop that ends in a test (handlers started offline) fails that test,
    instead of sending the test run itself a SIGTERM (essential.py)."""
    stopped: list[str] = []
    monkeypatch.setattr(essential, "_terminate", lambda: stopped.append("stop"))
    yield stopped
    assert not stopped, "an operator loop ended: essential.py would have stopped the process"
