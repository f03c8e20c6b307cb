"""The README's commands, run as written: the plan without a box needs no HF_TOKEN."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def readme_commands(prefix: str) -> list[str]:
    """Lines of the README's fenced shell blocks that start with `prefix`."""
    blocks = re.findall(r"```sh\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    return [line.strip() for block in blocks for line in block.splitlines() if line.strip().startswith(prefix)]


def test_the_readme_plan_command_plans_without_hf_token(tmp_path):
    [command] = readme_commands("pyinfra inventories/dry_run.py")
    argv = shlex.split(command.split("#")[0])
    env = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "LORAFLEET_API_KEY", "VLLM_API_KEY")}
    env.update(LORAFLEET_STATE_DIR=str(tmp_path / "state"), LORAFLEET_SECRETS_FILE=str(tmp_path / "none.env"))
    # As the user types it, through the venv's pyinfra (--dry exits before pyinfra's question).
    result = subprocess.run([str(Path(sys.executable).parent / argv[0]), *argv[1:]], cwd=ROOT, env=env,
                            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "Download the base model google/functiongemma-270m-it@main" in output
    assert "the real deploy will stop here" in output and "HF_TOKEN is not set" in output
