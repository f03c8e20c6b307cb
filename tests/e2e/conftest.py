"""Fixtures of the end-to-end scenario: real SSH, Docker engine, compose and vLLM on CPU."""

from __future__ import annotations

import pytest

from tests.support.scenario import API_KEY, Scenario, converged, docker_engine_problem

PROBLEM = docker_engine_problem()


def pytest_collection_modifyitems(config, items):
    # Speed, not correctness: the modules that need the shared SSH stack gone run after those that use it.
    items.sort(key=lambda item: "ssh_stack_gone" in getattr(item, "fixturenames", ()))
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


class SharedStack:
    """The gateway-shaped SSH target that the e2e modules share: converged when a module first asks for it,
    destroyed when a module needs the machine's two cores for itself (`ssh_stack_gone`) or at the session's end.

    A module after the destruction that asks for it again gets a new one: slower, never wrong, so no
    module's correctness depends on the order of the files.
    """

    def __init__(self, report):
        self.report = report
        self._context = None
        self.scenario: Scenario | None = None

    def get(self) -> Scenario:
        if self.scenario is None:
            # At the highest verbosity, with diffs: the secrets test reads this output.
            self._context = converged("ssh", "-vvv", "--diff", report=self.report)
            self.scenario = self._context.__enter__()
        return self.scenario

    def destroy(self) -> Scenario | None:
        """Destroy the stack if there is one; the destroyed scenario (for its leftovers), or None."""
        scenario, context = self.scenario, self._context
        self.scenario, self._context = None, None
        if context is not None:
            context.__exit__(None, None, None)
        return scenario


@pytest.fixture(scope="session")
def shared_ssh(report):
    shared = SharedStack(report)
    yield shared
    shared.destroy()


@pytest.fixture(scope="module")
def ssh_stack(shared_ssh) -> Scenario:
    """The shared SSH stack, converged (once, unless a module before destroyed it)."""
    return shared_ssh.get()


@pytest.fixture(scope="module")
def ssh_stack_gone(shared_ssh) -> Scenario | None:
    """For a module that runs stacks of its own: the shared SSH stack is destroyed first, and nothing of it is left."""
    destroyed = shared_ssh.destroy()
    if destroyed is not None:
        assert destroyed.leftovers() == [], "the shared SSH stack left things behind"
    return destroyed


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


@pytest.fixture(scope="module")
def served_endpoint(ssh_stack) -> Endpoint:
    """The running CPU stack of the e2e scenario, for tests of the operator tools."""
    return Endpoint(ssh_stack)
