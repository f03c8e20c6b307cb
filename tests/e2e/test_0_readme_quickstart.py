"""The README's quick start, run as a newcomer types it: the local deploy, then `lorafleet check` and `status`,
then the README's way out, `remove.py`.

It deploys this machine's default local stack (compose project lorafleet-local on
port 8000), so it runs where that is ours to make: in CI, or when
LORAFLEET_README_QUICKSTART=1 says so. It removes the stack afterwards with the
README's command (and by hand if that failed); the image and the demo model stay,
as caches keyed by their inputs.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import group_data
from tests.support.docker_env import in_ci, sh

ROOT = Path(__file__).resolve().parents[2]
LOCAL = group_data("local")
PROJECT = LOCAL["compose_project"]

pytestmark = pytest.mark.skipif(
    not (in_ci() or os.environ.get("LORAFLEET_README_QUICKSTART") == "1"),
    reason="deploys this machine's default local stack (lorafleet-local, port 8000): "
           "runs in CI, or here with LORAFLEET_README_QUICKSTART=1",
)


def quick_start() -> list[str]:
    """The commands of the README's 'The two commands' section, in order, without their comments."""
    section = (ROOT / "README.md").read_text().split("## The two commands", 1)[1].split("\n## ", 1)[0]
    lines = [line.split("#", 1)[0].strip() for block in re.findall(r"```sh\n(.*?)```", section, re.S)
             for line in block.splitlines()]
    return [line for line in lines if line]


def run(command: str, **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(command, shell=True, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800, **kwargs)


def test_the_readme_quick_start_runs_as_written(report):
    commands = quick_start()
    assert commands[0].startswith("python3 -m venv .venv"), commands
    assert commands[1:] == ["pyinfra inventory.py deploy.py", "pytest tests/", "pyinfra inventory.py remove.py",
                            "lorafleet check", "lorafleet status"]
    deploy_line, _, remove_line, *tools = commands[1:]
    existing = sh("docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={PROJECT}").stdout
    assert not existing, f"a {PROJECT} stack exists already: this test would touch what it did not make"
    stack_dir = Path(LOCAL["stack_dir"])
    made_stack_dir = not stack_dir.exists()
    try:
        # The install line ran already (this is its venv); `pytest tests/` is what is running.
        deploy = run(deploy_line, input="\n")  # "Press enter to execute"
        report(f"[e2e readme] {deploy_line}: exit {deploy.returncode}")
        assert deploy.returncode == 0, deploy.stdout[-3000:] + deploy.stderr[-3000:]
        assert "lorafleet check --url http://127.0.0.1:8000/v1" in deploy.stdout + deploy.stderr
        pasted_curl_answers(deploy.stdout + deploy.stderr, report)
        for command in tools:
            result = run(command)
            report(f"[e2e readme] {command}: exit {result.returncode}")
            assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        removal = run(remove_line, input="\n")  # the way out, last: it stops what the commands above use
        report(f"[e2e readme] {remove_line}: exit {removal.returncode}")
        assert removal.returncode == 0, removal.stdout[-3000:] + removal.stderr[-3000:]
        left = sh("docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={PROJECT}").stdout
        assert not left, f"{remove_line} left containers of {PROJECT}: {left}"
    finally:
        sh("docker", "compose", "-p", PROJECT, "-f", str(stack_dir / "compose.yaml"), "down", "--remove-orphans",
           "--timeout", "5", check=False)
        if made_stack_dir:
            shutil.rmtree(stack_dir, ignore_errors=True)  # the stack folder holds the secrets env files


def pasted_curl_answers(output: str, report) -> None:
    """The curl line the deploy printed, pasted into a new shell (no LORAFLEET_* variables, another folder)."""
    [line] = [line[line.index("curl -s "):] for line in output.splitlines() if "curl -s " in line]
    if "$(" not in line:  # the key came from this environment only: the line says to set it first
        assert "set it in this shell first" in output or "export it in this shell first" in output, line
        return
    pasted = subprocess.run(["env", "-i", "PATH=/usr/bin:/bin", "sh", "-c", line], cwd="/", capture_output=True,
                            text=True, timeout=300)
    report(f"[e2e readme] the printed curl line, pasted: exit {pasted.returncode}")
    assert pasted.returncode == 0 and '"chat.completion"' in pasted.stdout.replace(" ", ""), pasted.stdout + pasted.stderr
