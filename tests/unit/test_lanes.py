"""The two lanes of `pytest tests/` (tests/support/lanes.py): which tests share a worker, and when there are two."""

from __future__ import annotations

import re
from pathlib import Path

from tests.support import lanes

ROOT = Path(__file__).resolve().parents[2]
SHARED_FIXTURES = ("ssh_stack", "served_endpoint", "adapters_restored", "shared_ssh", "ssh_stack_gone")


def test_every_module_that_names_a_shared_stack_fixture_is_in_its_lane():
    modules = {p.name: p.read_text() for p in (ROOT / "tests" / "e2e").glob("test_*.py")}
    naming = {name for name, text in modules.items() if any(re.search(rf"\b{f}\b", text) for f in SHARED_FIXTURES)}
    assert naming <= lanes.SHARED_STACK_MODULES, naming - lanes.SHARED_STACK_MODULES
    assert lanes.SHARED_STACK_MODULES <= set(modules), lanes.SHARED_STACK_MODULES - set(modules)
    # The scenario module asks for it by name at run time (request.getfixturevalue): listed all the same.
    assert "test_1_scenario.py" in lanes.SHARED_STACK_MODULES - naming


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
