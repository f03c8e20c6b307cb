"""The fleet's dry run: two @fake boxes and the router, planned by one command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
API_KEY = "sk-fleet-dry-run-key-2b7e"
ROUTER_STEPS = [
    "Upload the router's Dockerfile",
    "Build the router image lorafleet/router:",
    "Upload the router's ctl.py",
    "Write the router's configuration: every box and adapter (0600)",
    "Render the router's compose project",
    "Start the router and wait for its health",
]


def plan(tmp_path: Path, *args: str, key: str = API_KEY) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_TOKEN": "hf_fleetDryRunEXAMPLE0123456789abcdef", "LORAFLEET_API_KEY": key,
           "LORAFLEET_STATE_DIR": str(tmp_path / "state")}
    return subprocess.run([sys.executable, "-m", "pyinfra", "inventories/fleet_dry_run.py", "deploy.py", "--dry", "-y", *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def fleet_plan(tmp_path_factory):
    state = tmp_path_factory.mktemp("fleet")
    result = plan(state, "--json")
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout), result, state


def test_the_router_is_planned_after_the_boxes_serve(fleet_plan):
    payload, _, _ = fleet_plan
    names = [op["name"] for op in payload["plan"]]
    positions = [next((i for i, n in enumerate(names) if n.startswith(step)), -1) for step in ROUTER_STEPS]
    assert -1 not in positions and positions == sorted(positions), names
    assert names.index("Verify /v1/models lists the base model and every adapter") < positions[0]


def test_each_box_gets_its_own_key_and_none_is_printed(fleet_plan):
    _, result, state = fleet_plan
    keys = {p.name: p.read_text().strip() for p in (state / "state" / "box-keys").iterdir()}
    assert set(keys) == {"fake_gpu-box-1", "fake_gpu-box-2"} and len(set(keys.values())) == 2
    for secret in (*keys.values(), API_KEY):
        assert secret not in result.stdout + result.stderr
