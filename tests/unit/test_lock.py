"""The deploy lock: its script on a real shell, and when a holder counts as crashed."""

from __future__ import annotations

import subprocess
from datetime import datetime, timezone

from lorafleet.deploy.lock.deployer import LOCK_SCRIPT, is_stale, owner_line

A = "ann@laptop-a pid 100 since 2026-11-27T00:00:00Z"
B = "bob@laptop-b pid 200 since 2026-11-27T00:00:05Z"


def lock(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(LOCK_SCRIPT), *args], capture_output=True, text=True, timeout=30)


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
