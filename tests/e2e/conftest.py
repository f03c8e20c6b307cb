"""Fixtures of the end-to-end scenario: real SSH, Docker engine, compose and vLLM on CPU."""

from __future__ import annotations

import fcntl
import sys
import time

import pytest

from tests.support import lanes
from tests.support.scenario import API_KEY, WORK, Scenario, converged, docker_engine_problem

PROBLEM = docker_engine_problem()


def pytest_collection_modifyitems(config, items):
    # Speed, not correctness: the modules that need the shared SSH stack gone run after those that use it.
    items.sort(key=lambda item: "ssh_stack_gone" in getattr(item, "fixturenames", ()))
    for item in items:
        if "/tests/e2e/" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)
            if PROBLEM:
                item.add_marker(pytest.mark.skip(reason=PROBLEM))


@pytest.fixture(scope="session")
def report(pytestconfig):
    """Print a line now (past pytest's capture) and again in the summary at the end (tests/conftest.py)."""
    terminal = pytestconfig.pluginmanager.get_plugin("terminalreporter")
    capture = pytestconfig.pluginmanager.get_plugin("capturemanager")
    worker = hasattr(pytestconfig, "workerinput")  # a worker's terminal is not shown: its stderr is

    def write(line: str) -> None:
        lanes.REPORT.append(line)
        if capture:
            with capture.global_and_fixture_disabled():
                if worker:
                    print(line, file=sys.stderr, flush=True)
                elif terminal:
                    terminal.write_line(line)

    return write


@pytest.fixture(scope="module", autouse=True)
def machine_share(request, report):
    """Every e2e module shares the machine, but one that needs it to itself (`ssh_stack_gone`: the fleet, whose
    boxes take a core each) waits until no other holds a share, and holds it alone. Matters on two workers
    (tests/support/lanes.py); alone, nothing waits."""
    alone = "ssh_stack_gone" in request.fixturenames
    WORK.mkdir(parents=True, exist_ok=True)
    with open(WORK / ".machine.lock", "a") as lock:
        started = time.monotonic()
        fcntl.flock(lock, fcntl.LOCK_EX if alone else fcntl.LOCK_SH)
        if alone and time.monotonic() - started > 1:
            report(f"[e2e machine] {request.module.__name__} waited {time.monotonic() - started:.0f} s for the machine")
        yield


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

    def get(self, module: str) -> Scenario:
        lanes.check_shared_stack_user(module)
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
def ssh_stack(shared_ssh, request) -> Scenario:
    """The shared SSH stack, converged (once, unless a module before destroyed it)."""
    return shared_ssh.get(request.path.name)


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
