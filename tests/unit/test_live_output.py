"""Long steps show their progress lines as they run, on a real pyinfra run against @local; never under --json."""

from __future__ import annotations

import subprocess
import sys


def run(tmp_path, *args: str) -> subprocess.CompletedProcess:
    deploy = tmp_path / "deploy_live.py"
    deploy.write_text(
        "from pyinfra.operations import server\n"
        "from lorafleet.deploy.ops import live\n"
        "server.shell(name='A long step', commands=[live('echo lorafleet: step 1/2; echo lorafleet: step 2/2')])\n"
    )
    return subprocess.run([sys.executable, "-m", "pyinfra", "@local", str(deploy), "-y", *args],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)


def test_progress_lines_show_while_the_step_runs(tmp_path):
    result = run(tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "lorafleet: step 1/2" in result.stderr and "lorafleet: step 2/2" in result.stderr


def test_json_output_stays_json_alone(tmp_path):
    result = run(tmp_path, "--json")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "lorafleet: step 1/2" not in result.stdout + result.stderr
