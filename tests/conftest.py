"""Shared helpers: the project's group data loaded exactly as pyinfra layers it."""

from __future__ import annotations

import runpy
import time
from pathlib import Path

import pytest

from tests.support import lanes

ROOT = Path(__file__).resolve().parent.parent


def group_data(*groups: str) -> dict:
    """all.py, then each group's file on top, as pyinfra does for a host in those groups."""
    data: dict = {}
    for group in ("all", *groups):
        values = runpy.run_path(str(ROOT / "group_data" / f"{group}.py"))
        data.update({k: v for k, v in values.items() if not k.startswith("_") and k.islower() and not callable(v) and k != "os"})
    return data


@pytest.fixture
def gpu_data() -> dict:
    return group_data("gpu")


@pytest.fixture
def local_data() -> dict:
    return group_data("local")


def pytest_sessionstart(session):
    """In CI the Docker-backed suites must run: a missing engine fails the run instead of skipping them."""
    from tests.support.docker_env import docker_engine_problem, in_ci, local_base_image

    if in_ci():
        problem = docker_engine_problem() or (None if local_base_image() else "no local base image (lorafleet/base)")
        if problem:
            pytest.exit(f"CI=true, and the e2e and bootstrap tests cannot run: {problem}", returncode=1)


def pytest_ignore_collect(collection_path, config):
    """tests/infra checks a deployed box: it runs only when asked for (the e2e scenario runs it too)."""
    if collection_path.name == "infra" and collection_path.parent == ROOT / "tests":
        asked = any(str(collection_path) in str(Path(arg.split("::")[0]).resolve()) for arg in config.args)
        return None if asked else True
    return None


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    # The fast suites before the e2e suite: their answer comes first, and on two workers (tests/support/lanes.py)
    # they run in the `own` lane before its e2e modules, so they are done before the fleet's module runs.
    items.sort(key=lambda item: lanes.E2E in item.nodeid)


def pytest_xdist_auto_num_workers(config):
    """pyproject's `-n auto`: two workers for a run that includes the e2e suite (tests/support/lanes.py)."""
    return lanes.workers_for(config.args, config.invocation_params.dir, lanes.cpus())


def pytest_xdist_make_scheduler(config, log):
    from xdist.scheduler import LoadScopeScheduling

    class Lanes(LoadScopeScheduling):
        """Each lane is one unit of work: all of its tests go to one worker, in collection order."""

        def _split_scope(self, nodeid: str) -> str:
            return lanes.lane(nodeid)

    return Lanes(config, log)


def pytest_sessionfinish(session):
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:  # a worker: its e2e report lines go to the controller
        workeroutput["e2e_report"] = list(lanes.REPORT)


def pytest_testnodedown(node, error):
    lanes.REPORT.extend(getattr(node, "workeroutput", {}).get("e2e_report", []))


# Where the time goes, printed at the end of every run (CI's log included): each module's time with its
# fixtures (a module-scoped stack's start is in its first test's setup), and the five slowest tests.
_SECONDS: dict[str, float] = {}


_STARTED = time.monotonic()
_LANES: dict[str, tuple[int, float]] = {}  # on two workers: each lane's tests so far, and when its last one ended


def pytest_runtest_logreport(report):
    _SECONDS[report.nodeid] = _SECONDS.get(report.nodeid, 0.0) + report.duration
    if hasattr(report, "node") and report.when == "teardown":  # a worker's (pytest-xdist), as it arrives
        lane = lanes.lane(report.nodeid)
        _LANES[lane] = (_LANES.get(lane, (0, 0.0))[0] + 1, time.monotonic() - _STARTED)


def pytest_terminal_summary(terminalreporter):
    if lanes.REPORT:
        terminalreporter.section("e2e scenario: phases and results")
        for line in lanes.REPORT:
            terminalreporter.write_line(line)
    if not _SECONDS:
        return
    modules: dict[str, list[float]] = {}
    for nodeid, seconds in _SECONDS.items():
        modules.setdefault(nodeid.split("::")[0], []).append(seconds)
    terminalreporter.section("time per module (setup, tests and teardown)")
    for module, times in sorted(modules.items(), key=lambda kv: -sum(kv[1])):
        terminalreporter.write_line(f"{sum(times):8.1f} s  {len(times):4d} tests  {module}")
    if _LANES:
        terminalreporter.section("the lanes, one worker each (tests/support/lanes.py)")
        for lane, (tests, ended) in sorted(_LANES.items(), key=lambda kv: kv[1][1]):
            terminalreporter.write_line(f"{ended:8.1f} s  {tests:4d} tests  {lane}: its last test ended")
    terminalreporter.section("the five slowest tests (setup, call and teardown together)")
    for nodeid, seconds in sorted(_SECONDS.items(), key=lambda kv: -kv[1])[:5]:
        terminalreporter.write_line(f"{seconds:8.1f} s  {nodeid}")
