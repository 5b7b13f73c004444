"""What every test run holds to: nothing skipped (a skipped test is one that did not run)."""

from __future__ import annotations

import pytest


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """A run in which any test was skipped or expected to fail does not pass: the suite has
    none on purpose, so one is a test that cannot fail, and a green run would hide it."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    stats = getattr(reporter, "stats", {})
    if reporter is not None and exitstatus == pytest.ExitCode.OK and (
            stats.get("skipped") or stats.get("xfailed")):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
        reporter.write_sep("=", "tests were skipped or xfailed: the run fails "
                                "(tests/conftest.py)", red=True)
