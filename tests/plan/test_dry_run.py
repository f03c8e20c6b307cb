"""The CI dry-run: pyinfra plans the GPU deploy against the @fake connector."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HF_TOKEN = "hf_dryRunEXAMPLEtokenValue0123456789abcdef"
API_KEY = "dry-run-fake-api-key-7f3a9c"

# The GPU plan on a first-time box, in order.
EXPECTED_STEPS = [
    "Take the deploy lock",
    "Ensure folder /mnt/d/AI_Models/cache/huggingface",
    "Ensure folder /opt/lorafleet",
    "Ensure private folder /opt/lorafleet/secrets",
    "Upload adapter_check.py",
    "Upload check_image.py",
    "Upload entrypoint.py",
    "Upload sync_adapters.py",
    "Upload hub_fetch.sh",
    "Upload start.sh",
    "Upload the secrets env file (0600)",
    "Upload the hub token env file (0600)",
    "Stage the gateway's compose.yaml",
    "Stage the gateway's .env",
    "Pull the serving image vllm/vllm-openai:v0.32.0",
    "Check the GPU inside a container",
    "Download the base model google/functiongemma-270m-it@main",
    "Check that vllm/vllm-openai:v0.32.0 imports the plugins and renders the chat template",
    "Write the adapter manifest",
    "Render the serving compose project",
    "Start vLLM and wait for /health (rolls back on failure)",
    "Bring the served adapters to the manifest (no restart)",
    "Verify /v1/models lists the base model and every adapter",
    "Release the deploy lock",
]


def run_pyinfra(*args: str, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "HF_TOKEN": HF_TOKEN,
        "LORAFLEET_API_KEY": API_KEY,
        "LORAFLEET_STATE_DIR": str(tmp_path / "state"),
    }
    pyinfra = [sys.executable, "-m", "pyinfra"]
    return subprocess.run([*pyinfra, "inventories/dry_run.py", "deploy.py", "--dry", "-y", *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def plan_json(tmp_path_factory):
    result = run_pyinfra("--json", tmp_path=tmp_path_factory.mktemp("plan"))
    assert result.returncode == 0, result.stderr[-3000:]
    return result, json.loads(result.stdout)


def test_plan_lists_every_step_in_order(plan_json):
    _, plan = plan_json
    names = [op["name"] for op in plan["plan"]]
    positions = []
    for step in EXPECTED_STEPS:
        assert step in names, f"missing from the GPU plan: {step!r}; plan was {names}"
        positions.append(names.index(step))
    assert positions == sorted(positions), f"steps out of order: {names}"


def test_plan_never_recreates_the_gateway(plan_json):
    _, plan = plan_json
    assert not [op["name"] for op in plan["plan"] if "gateway" in op["name"].lower() and "Stage" not in op["name"]]


def test_no_secret_in_the_plan_output(plan_json):
    result, _ = plan_json
    for secret in (HF_TOKEN, API_KEY):
        assert secret not in result.stdout and secret not in result.stderr


def test_no_secret_at_the_highest_verbosity_with_diffs(tmp_path):
    result = run_pyinfra("-vvv", "--diff", tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    assert "Ready: deploy.py" in output
    assert "the endpoint is http://function-gemma-server:8000/v1" in output
    for secret in (HF_TOKEN, API_KEY):
        assert secret not in output


def test_the_plan_says_which_dtype_and_why(plan_json):
    result, _ = plan_json
    # A first-time box has no serving image yet to read the GPU with: bf16, checked right after the pull
    # ("Check the GPU inside a container", tests/unit/test_gpu.py).
    assert "dtype bfloat16: auto; the serving image is not pulled yet" in result.stdout + result.stderr
