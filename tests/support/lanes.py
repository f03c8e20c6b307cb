"""Two lanes for `pytest tests/` on two workers (pytest-xdist), and the e2e report lines they print.

One pytest process keeps one of this machine's two cores busy: the e2e suite mostly waits on vLLM starts,
SSH round trips and deploys, and the whole run averaged 52% of the CPUs. So a run that includes the e2e
suite runs in two lanes, one per worker, each in collection order:

- `shared-ssh`: the modules of the shared SSH stack (SHARED_STACK_MODULES), which must share one worker,
  as the stack is one per worker; the fleet's module is last in it.
- `own`: everything else: the fast suites first (tests/conftest.py orders them), then the e2e modules that
  bring stacks of their own.

The fleet's module has the machine to itself (`machine_share` in tests/e2e/conftest.py): its boxes take a
core each and it measures the router against one box.
"""

from __future__ import annotations

import os
from pathlib import Path

# The e2e modules that use the shared SSH stack (tests/e2e/conftest.py's SharedStack): a module that asks for
# it and is not listed here fails, naming this list, rather than starting a second stack in the other lane.
SHARED_STACK_MODULES = frozenset({
    "test_1_scenario.py", "test_1b_secrets.py", "test_2_operator_tools.py", "test_3_adapter_changes.py",
    "test_3b_image_upgrade.py", "test_4_deploy_lock.py", "test_5_typed_calls.py", "test_5c_adapter_metrics.py",
    "test_7_train_deploy_eval.py", "test_9_destroy.py", "test_9b_fleet.py",
})
E2E = "tests/e2e/"
ROOT = Path(__file__).resolve().parents[2]


def check_shared_stack_user(module: str) -> None:
    """A module that asks for the shared SSH stack must be in its lane: else the other worker would start a
    second one beside it."""
    if module not in SHARED_STACK_MODULES:
        raise AssertionError(f"{module} uses the shared SSH stack: add it to SHARED_STACK_MODULES in "
                             "tests/support/lanes.py, so that it runs in that stack's lane")


def lane(nodeid: str) -> str:
    path = nodeid.split("::")[0]
    if path.startswith(E2E) and Path(path).name in SHARED_STACK_MODULES:
        return "shared-ssh"
    return "own"


def workers_for(args: list[str], invoked_in: Path, cpus: int) -> int:
    """Two workers for a run that includes the e2e suite on a machine with two CPUs or more; else none
    (a run of the fast suites stays one process, as starting workers costs more than it saves).

    `args`: pytest's paths (config.args, testpaths when none was given), relative to `invoked_in`."""
    e2e = (ROOT / E2E).resolve()
    paths = [(invoked_in / arg.split("::")[0]).resolve() for arg in args] or [ROOT / "tests"]
    includes_e2e = any(p == e2e or p in e2e.parents or e2e in p.parents for p in paths)
    return 2 if includes_e2e and cpus >= 2 else 0


def cpus() -> int:
    return len(os.sched_getaffinity(0))


# The e2e's report lines (`[e2e ...]`): printed as they happen, and again in a section at the end of the run.
# A worker hands its lines to the controller when it stops (tests/conftest.py).
REPORT: list[str] = []
