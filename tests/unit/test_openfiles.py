"""The soft limit of open files raised to the hard one at start (a connection per watch)."""

from __future__ import annotations

import logging
import resource

import pytest

from evc_operator import openfiles


class Limits:
    """getrlimit and setrlimit over given limits; `refuse`: setrlimit fails so."""

    def __init__(self, soft: int, hard: int, refuse: BaseException | None = None) -> None:
        self.limits = (soft, hard)
        self.refuse = refuse
        self.set: list[tuple[int, int]] = []

    def get(self, which: int) -> tuple[int, int]:
        assert which == resource.RLIMIT_NOFILE
        return self.limits

    def set_(self, which: int, limits: tuple[int, int]) -> None:
        assert which == resource.RLIMIT_NOFILE
        if self.refuse is not None:
            raise self.refuse
        self.set.append(limits)
        self.limits = limits


def test_the_soft_limit_is_raised_to_the_hard_one(caplog: pytest.LogCaptureFixture) -> None:
    limits = Limits(1024, 524_288)
    with caplog.at_level(logging.INFO):
        assert openfiles.raise_soft_limit(limits.get, limits.set_) == 524_288
    assert limits.set == [(524_288, 524_288)]
    assert "raised from 1024 to 524288" in caplog.text


def test_a_soft_limit_already_at_the_hard_one_is_left_alone() -> None:
    limits = Limits(65_536, 65_536)
    assert openfiles.raise_soft_limit(limits.get, limits.set_) == 65_536
    assert limits.set == []


def test_with_no_hard_limit_the_kernels_cap_is_asked_for() -> None:
    limits = Limits(1024, resource.RLIM_INFINITY)
    assert openfiles.raise_soft_limit(limits.get, limits.set_) == openfiles.NR_OPEN
    assert limits.set == [(openfiles.NR_OPEN, resource.RLIM_INFINITY)]
    unlimited = Limits(resource.RLIM_INFINITY, resource.RLIM_INFINITY)
    assert openfiles.raise_soft_limit(unlimited.get, unlimited.set_) == resource.RLIM_INFINITY
    assert unlimited.set == []


def test_a_refusal_keeps_the_limit_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    limits = Limits(1024, resource.RLIM_INFINITY, refuse=ValueError("not allowed"))
    assert openfiles.raise_soft_limit(limits.get, limits.set_) == 1024
    assert "could not raise the soft limit from 1024" in caplog.text
    assert "not allowed" in caplog.text
