"""The two lanes of `pytest tests/` (tests/support/lanes.py): which tests share a worker, and when there are two."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.support import lanes

ROOT = Path(__file__).resolve().parents[2]
SHARED_FIXTURES = ("ssh_stack", "served_endpoint", "adapters_restored", "shared_ssh", "ssh_stack_gone")


def test_every_module_that_names_a_shared_stack_fixture_is_in_its_lane():
    modules = {p.name: p.read_text() for p in (ROOT / "tests" / "e2e").glob("test_*.py")}
    naming = {name for name, text in modules.items() if any(re.search(rf"\b{f}\b", text) for f in SHARED_FIXTURES)}
    assert naming <= lanes.SHARED_STACK_MODULES, naming - lanes.SHARED_STACK_MODULES
    assert lanes.SHARED_STACK_MODULES <= set(modules), lanes.SHARED_STACK_MODULES - set(modules)


def test_a_module_that_asks_for_the_shared_stack_outside_its_lane_fails_naming_the_list():
    # The scenario module asks for the stack at run time (request.getfixturevalue), which no reading of the
    # source finds: the shared stack itself checks each module that asks (tests/e2e/conftest.py).
    lanes.check_shared_stack_user("test_1_scenario.py")
    with pytest.raises(AssertionError, match="add it to SHARED_STACK_MODULES in tests/support/lanes.py"):
        lanes.check_shared_stack_user("test_8_docker_desktop.py")


def test_the_shared_stack_modules_share_a_lane_and_everything_else_the_other():
    assert lanes.lane("tests/e2e/test_3_adapter_changes.py::test_add_an_adapter") == "shared-ssh"
    assert lanes.lane("tests/e2e/test_9b_fleet.py::test_a_second_converge_changes_nothing") == "shared-ssh"
    assert lanes.lane("tests/e2e/test_8_docker_desktop.py::test_x[a::b]") == "own"
    assert lanes.lane("tests/unit/test_3_adapter_changes.py::test_x") == "own", "only e2e modules"
    assert lanes.lane("tests/bootstrap/test_bootstrap.py::test_x") == "own"


def test_two_workers_only_for_a_run_that_includes_the_e2e_suite_on_two_cpus_or_more():
    assert lanes.workers_for([], ROOT, 2) == 2, "pytest with no path runs testpaths: tests/"
    assert lanes.workers_for(["tests/"], ROOT, 2) == 2
    assert lanes.workers_for([str(ROOT)], ROOT, 8) == 2
    assert lanes.workers_for(["tests/e2e/test_9b_fleet.py::test_x"], ROOT, 2) == 2
    assert lanes.workers_for(["tests/e2e"], ROOT, 1) == 0, "one CPU: one process"
    assert lanes.workers_for(["tests/unit", "tests/plan/test_dry_run.py"], ROOT, 2) == 0
    assert lanes.workers_for(["unit"], ROOT / "tests", 2) == 0, "paths are the invocation folder's"
