"""The deploy lock: its script on a real shell, and when a holder counts as crashed."""

from __future__ import annotations

import subprocess
from datetime import datetime, timezone

from lorafleet.deploy.lock.deployer import LOCK_SCRIPT, is_stale, lock_command, owner_line

A = "ann@laptop-a pid 100 since 2026-11-27T00:00:00Z"
B = "bob@laptop-b pid 200 since 2026-11-27T00:00:05Z"


def lock(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(LOCK_SCRIPT), *args], capture_output=True, text=True, timeout=30)


def piped(action: str, path: str, owner: str, wait: int = 0) -> subprocess.CompletedProcess:
    """The script as the deploy's lock operation runs it: piped to bash, with the arguments quoted by pyinfra."""
    script = LOCK_SCRIPT.read_text()
    command = lock_command(action, path, owner, wait, script)
    assert command.connector_arguments["_stdin"] == script
    return subprocess.run(["sh", "-c", command.get_raw_value()], input=script, capture_output=True, text=True,
                          timeout=30)


def test_one_holder_at_a_time(tmp_path):
    path = str(tmp_path / "stack" / "deploy.lock")
    assert lock("acquire", path, "0", A).returncode == 0
    assert lock("acquire", path, "0", A).returncode == 0, "taking our own lock again is fine"
    second = lock("acquire", path, "0", B)
    assert second.returncode == 1
    assert f"held by {A}" in second.stderr and "break_deploy_lock=True" in second.stderr
    assert lock("release", path, B).returncode == 0
    assert lock("show", path).stdout.strip() == A, "only the holder releases it"
    assert lock("release", path, A).returncode == 0
    assert lock("show", path).stdout == ""
    assert lock("acquire", path, "0", B).returncode == 0


def test_a_waiting_deploy_gets_the_lock_when_it_is_released(tmp_path):
    path = str(tmp_path / "deploy.lock")
    lock("acquire", path, "0", A)
    waiting = subprocess.Popen(["bash", str(LOCK_SCRIPT), "acquire", path, "20", B], stderr=subprocess.PIPE, text=True)
    # Released only once B is seen waiting on A's lock: a lock that never waited would have failed B by now.
    assert waiting.stderr.readline().startswith(f"lorafleet: waiting up to 20s for the deploy lock, held by {A}")
    assert waiting.poll() is None, "B waits while A holds the lock"
    assert lock("show", path).stdout.strip() == A
    lock("release", path, A)
    assert waiting.wait(timeout=30) == 0
    assert lock("show", path).stdout.strip() == B


def test_break_removes_anyones_lock(tmp_path):
    path = str(tmp_path / "deploy.lock")
    lock("acquire", path, "0", A)
    broken = lock("break", path)
    assert broken.returncode == 0 and f"held by {A}" in broken.stderr
    assert lock("show", path).stdout == ""


def test_stale_only_when_taken_here_by_a_process_that_is_gone():
    assert is_stale(A, "laptop-a", pid_alive=lambda pid: False)
    assert not is_stale(A, "laptop-a", pid_alive=lambda pid: True)
    assert not is_stale(A, "laptop-b", pid_alive=lambda pid: False), "another laptop's lock is never guessed stale"
    assert not is_stale("garbage", "laptop-a", pid_alive=lambda pid: False)


def test_owner_line_round_trips_through_is_stale():
    line = owner_line("ann", "laptop-a", 100, datetime(2026, 11, 27, tzinfo=timezone.utc))
    assert line == A


def test_the_operations_command_takes_and_gives_back_the_lock(tmp_path):
    path = str(tmp_path / "stack dir" / "deploy.lock")  # a space: the arguments survive the shell
    assert piped("acquire", path, A).returncode == 0
    assert lock("show", path).stdout.strip() == A
    held = piped("acquire", path, B)
    assert held.returncode == 1 and f"held by {A}" in held.stderr, "the reason the operation fails with"
    assert piped("release", path, B).returncode == 0 and lock("show", path).stdout.strip() == A
    assert piped("release", path, A).returncode == 0 and lock("show", path).stdout == ""


LOCAL_DEPLOY = '''
from pyinfra.operations import server
from lorafleet.deploy.lock.deployer import deploy_lock
LOCK, OWNER, SEEN = {lock!r}, {owner!r}, {seen!r}
deploy_lock("acquire", LOCK, OWNER, {wait}, name="Take the deploy lock")
server.shell(name="Read the lock's owner", commands=[f"cat '{{LOCK}}/owner' > '{{SEEN}}'"])
deploy_lock("release", LOCK, OWNER, name="Release the deploy lock")
'''


def run_local_deploy(tmp_path, lock_dir: str, owner: str, wait: int = 0) -> tuple[subprocess.CompletedProcess, dict[str, str]]:
    """The lock operations in a real pyinfra run on @local: the script reaches bash through the connector's stdin."""
    import json
    import os
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    deploy = tmp_path / "lock_deploy.py"
    deploy.write_text(LOCAL_DEPLOY.format(lock=lock_dir, owner=owner, seen=str(tmp_path / "seen"), wait=wait))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-m", "pyinfra", "-y", "--json", "@local", str(deploy)], cwd=tmp_path,
                            env=env, capture_output=True, text=True, timeout=120)
    outcome = {}
    if result.stdout.strip():
        for op in json.loads(result.stdout)["results"]["operations"]:
            outcome[op["name"]] = "changed" if op["success"] else "error" if op["error"] else "no change"
    return result, outcome


def test_a_real_run_holds_the_lock_while_it_works_and_reports_no_change(tmp_path):
    path = str(tmp_path / "deploy.lock")
    result, outcome = run_local_deploy(tmp_path, path, A)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "seen").read_text().strip() == A, "the operations between ran under the lock"
    assert lock("show", path).stdout == "", "released at the end"
    assert outcome == {"Take the deploy lock": "no change", "Read the lock's owner": "changed",
                       "Release the deploy lock": "no change"}


def test_a_real_run_stops_at_a_lock_someone_else_holds(tmp_path):
    path = str(tmp_path / "deploy.lock")
    assert lock("acquire", path, "0", B).returncode == 0
    result, outcome = run_local_deploy(tmp_path, path, A)
    assert result.returncode != 0
    assert f"held by {B}" in result.stderr and "break_deploy_lock=True" in result.stderr
    assert not (tmp_path / "seen").exists(), "nothing ran after the refused lock"
    assert lock("show", path).stdout.strip() == B, "someone else's lock is left alone"


def test_a_real_run_waits_for_the_deploy_before_it(tmp_path):
    import threading

    path = str(tmp_path / "deploy.lock")
    assert lock("acquire", path, "0", B).returncode == 0
    threading.Timer(3.0, lambda: lock("release", path, B)).start()
    result, outcome = run_local_deploy(tmp_path, path, A, wait=60)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"waiting up to 60s for the deploy lock, held by {B}" in result.stderr, "the wait is said"
    assert (tmp_path / "seen").read_text().strip() == A
    assert outcome["Take the deploy lock"] == "no change"
