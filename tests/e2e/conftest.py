"""Fixtures of the end-to-end scenario: real SSH, Docker engine, compose and vLLM on CPU."""

from __future__ import annotations

import pytest

from tests.support.scenario import API_KEY, Scenario, converged, docker_engine_problem

PROBLEM = docker_engine_problem()


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "/tests/e2e/" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)
            if PROBLEM:
                item.add_marker(pytest.mark.skip(reason=PROBLEM))


REPORT: list[str] = []


@pytest.fixture(scope="session")
def report(pytestconfig):
    """Print a line now (past pytest's capture) and again in the summary at the end."""
    terminal = pytestconfig.pluginmanager.get_plugin("terminalreporter")
    capture = pytestconfig.pluginmanager.get_plugin("capturemanager")

    def write(line: str) -> None:
        REPORT.append(line)
        if terminal and capture:
            with capture.global_and_fixture_disabled():
                terminal.write_line(line)

    return write


def pytest_terminal_summary(terminalreporter):
    if REPORT:
        terminalreporter.section("e2e scenario: phases and results")
        for line in REPORT:
            terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def ssh_stack(report):
    """The gateway-shaped SSH target, converged once and shared by every e2e module; destroyed last."""
    # At the highest verbosity, with diffs: the secrets test reads this output.
    with converged("ssh", "-vvv", "--diff", report=report) as scenario:
        yield scenario


@pytest.fixture(scope="module")
def adapters_restored(ssh_stack):
    """The SSH stack for a module that changes its declared adapters; the declared set comes back after it."""
    ssh_stack.declared = [dict(a) for a in ssh_stack.data["adapters"]]
    yield ssh_stack
    ssh_stack.write_inventory(adapters=ssh_stack.declared)


class Endpoint:
    def __init__(self, scenario: Scenario):
        self.url = scenario.endpoint.removesuffix("/v1")
        self.api_key = API_KEY
        self.base_model = scenario.data["served_model_name"]
        self.adapters = [a["name"] for a in scenario.data["adapters"]]


@pytest.fixture(scope="session")
def served_endpoint(ssh_stack) -> Endpoint:
    """The running CPU stack of the e2e scenario, for tests of the operator tools."""
    return Endpoint(ssh_stack)
