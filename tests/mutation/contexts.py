"""pytest plugin for the mutation run's map: which test ran each line of the deploy's code.

Each test's lines are recorded under its id, in this process (a coverage context switch) and in the
Python processes it starts (pyinfra runs, shipped scripts): they read the id from LF_MUTATION_TEST
through the coverage configuration's `context = ${LF_MUTATION_TEST-}`.
"""

from __future__ import annotations

import os

import coverage
import pytest


def test_id(nodeid: str) -> str:
    """A test's id without its parameters: every parametrized case runs when a mutant is tried."""
    return nodeid.split("[", 1)[0]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    test = test_id(item.nodeid)
    current = coverage.Coverage.current()
    os.environ["LF_MUTATION_TEST"] = test
    if current:
        current.switch_context(test)
    yield
    os.environ.pop("LF_MUTATION_TEST", None)
    if current:
        current.switch_context("")


_SECONDS: dict[str, float] = {}


def pytest_runtest_logreport(report):
    test = test_id(report.nodeid)
    _SECONDS[test] = _SECONDS.get(test, 0.0) + report.duration


def pytest_sessionfinish(session):
    """Each test's time, so the run can try the quickest tests first and size each mutant's timeout."""
    if os.environ.get("LF_MUTATION_DURATIONS"):
        import json

        with open(os.environ["LF_MUTATION_DURATIONS"], "w", encoding="utf-8") as f:
            json.dump(_SECONDS, f, indent=1, sort_keys=True)
